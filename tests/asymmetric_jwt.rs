//! RS256 and ES256 tokens with PEM keys (test-only keys in tests/fixtures), and
//! algorithm confusion: an HS256 token "signed" with the public key is refused.

mod common;
use common::*;
use im_gateway::auth::Minter;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

async fn accepts_own_and_refuses_confused(alg: &str) {
    let gw = start(|c| {
        c.auth.jwt_public_key = Some(fixture(&format!("{alg}.pub.pem")));
        c.auth.jwt_private_key = Some(fixture(&format!("{alg}.key.pem")));
    });
    let (_c, r) = Client::login(gw.ws_addr(), &token(&gw, 77, Some(2))).await;
    assert_eq!(r.user_id, 77);

    // Algorithm confusion: HS256 keyed with the public key's PEM bytes.
    let mut confused = gw.node().config.auth.clone();
    confused.jwt_public_key = None;
    confused.jwt_secret = std::fs::read_to_string(fixture(&format!("{alg}.pub.pem"))).unwrap();
    let forged = Minter::from_config(&confused).unwrap().mint(77, None, 3600);
    match Client::dial(gw.ws_addr(), Some(&forged)).await {
        Dial::Refused { status, .. } => assert_eq!(status, 401, "{alg}"),
        Dial::Ok(_) => panic!("{alg}: HS256 token forged with the public key was accepted"),
    }
    // A token from the other asymmetric family is refused too.
    let other = if alg == "rs256" { "es256" } else { "rs256" };
    let mut foreign = gw.node().config.auth.clone();
    foreign.jwt_public_key = Some(fixture(&format!("{other}.pub.pem")));
    foreign.jwt_private_key = Some(fixture(&format!("{other}.key.pem")));
    let wrong = Minter::from_config(&foreign).unwrap().mint(77, None, 3600);
    match Client::dial(gw.ws_addr(), Some(&wrong)).await {
        Dial::Refused { status, .. } => assert_eq!(status, 401, "{alg} vs {other}"),
        Dial::Ok(_) => panic!("{alg}: {other} token accepted"),
    }
    drop(_c);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_with_pem_key() {
    accepts_own_and_refuses_confused("rs256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_with_pem_key() {
    accepts_own_and_refuses_confused("es256").await;
}
