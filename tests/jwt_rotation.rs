//! Rotating the JWT secret without refusing users, through the real binary: during the
//! window (`auth.jwt_secret` = new, `auth.jwt_secret_previous` = old) tokens signed with
//! either secret log in, on the upgrade and in an AUTH packet; after it (restarted
//! without the previous secret) only the new one does.

mod common;
use common::*;
use std::net::SocketAddr;

const OLD: &str = "the-secret-being-rotated-out";
const NEW: &str = "the-secret-rotated-in-0123";

async fn gateway(previous: Option<&str>) -> (Running, SocketAddr) {
    let ws: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut cmd = binary(&["--listen", &ws.to_string(), "--admin", &admin, "--shards", "1"]);
    cmd.env("IMGW_AUTH_JWT_SECRET", NEW);
    if let Some(previous) = previous {
        cmd.env("IMGW_AUTH_JWT_SECRET_PREVIOUS", previous);
    }
    (Running::start(cmd).await, ws)
}

async fn stop(gw: Running) {
    gw.terminate();
    let (status, log) = gw.exit().await;
    assert!(status.success(), "{status}\n{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_secrets_during_the_window_then_only_the_new_one() {
    let stranger = token_signed_with("a-secret-nobody-configured", 9, Some(1));

    let (gw, ws) = gateway(Some(OLD)).await;
    let (a, r) = Client::login(ws, &token_signed_with(OLD, 1, Some(1))).await;
    assert_eq!(r.user_id, 1, "old secret, on the upgrade");
    let (b, r) = Client::login(ws, &token_signed_with(NEW, 2, Some(1))).await;
    assert_eq!(r.user_id, 2, "new secret, on the upgrade");
    let Dial::Ok(mut c) = Client::dial(ws, None).await else { panic!("upgrade without a token refused") };
    assert_eq!(c.auth(&token_signed_with(OLD, 3, Some(1)), 1, 7).await.user_id, 3, "old secret, in AUTH");
    assert!(matches!(Client::dial(ws, Some(&stranger)).await, Dial::Refused { status: 401, .. }));
    drop((a, b, c));
    stop(gw).await;

    let (gw, ws) = gateway(None).await;
    let (b, r) = Client::login(ws, &token_signed_with(NEW, 2, Some(1))).await;
    assert_eq!(r.user_id, 2, "new secret after the window");
    match Client::dial(ws, Some(&token_signed_with(OLD, 1, Some(1)))).await {
        Dial::Refused { status, body, .. } => assert_eq!(status, 401, "{body}"),
        Dial::Ok(_) => panic!("a token signed with the old secret was accepted after the window"),
    }
    let Dial::Ok(mut c) = Client::dial(ws, None).await else { panic!("upgrade without a token refused") };
    c.send(
        im_gateway::proto::Command::Auth,
        1,
        &im_gateway::proto::AuthRequest { token: token_signed_with(OLD, 3, Some(1)), ..Default::default() },
    )
    .await;
    assert_eq!(c.expect_close().await.0, 4001, "old secret in AUTH after the window");
    drop((b, c));
    stop(gw).await;
}
