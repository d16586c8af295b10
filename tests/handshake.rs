//! The upgrade: token at the upgrade (query or Bearer), 401 for bad tokens, 404 for
//! other paths, garbage answered and closed.

mod common;
use common::*;
use im_gateway::proto::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_query_gets_auth_result_first() {
    let gw = start(|_| {});
    let (c, r) = Client::login(gw.ws_addr(), &token(&gw, 1001, Some(3))).await;
    assert_eq!(r.user_id, 1001);
    assert_eq!(r.gateway_id, "gw-test");
    assert!(r.shard < 2);
    assert_eq!(r.heartbeat_interval_s, 30);
    assert!(!r.session_id.is_empty());
    drop(c); // a client that leaves first lets the drain end at once
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_header_works() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let gw = start(|_| {});
    let mut req = format!("ws://{}/ws", gw.ws_addr()).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", token(&gw, 7, None)).parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut c = Client { ws };
    let p = c.recv().await;
    assert_eq!(p.header.unwrap().command, Command::Auth as i32);
    drop(c);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401_before_upgrade() {
    let gw = start(|_| {});
    let mut other = gw.node().config.auth.clone();
    other.jwt_secret = "a-completely-different-secret".into();
    let wrong_key = im_gateway::auth::Minter::from_config(&other).unwrap().mint(5, None, 3600);
    let expired =
        im_gateway::auth::Minter::from_config(&gw.node().config.auth).unwrap().sign(&im_gateway::auth::Claims {
            sub: "5".into(),
            exp: 1_000_000,
            platform: None,
            iss: None,
            aud: None,
            iat: None,
        });
    // alg:none with a valid-looking payload: header {"alg":"none"} and {"sub":"5","exp":9999999999}.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI1IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
    for (what, t) in [("wrong key", wrong_key.as_str()), ("garbage", "abc.def.ghi"), ("alg none", none)] {
        match Client::dial(gw.ws_addr(), Some(t)).await {
            Dial::Refused { status, body, .. } => {
                assert_eq!(status, 401, "{what}");
                assert!(body.contains("error"), "{what}: {body}");
            }
            Dial::Ok(_) => panic!("{what}: upgraded"),
        }
    }
    match Client::dial(gw.ws_addr(), Some(&expired)).await {
        Dial::Refused { status, body, .. } => {
            assert_eq!(status, 401);
            assert!(body.contains("expired"), "{body}");
        }
        Dial::Ok(_) => panic!("expired token upgraded"),
    }
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_paths_are_404_and_garbage_is_400() {
    let gw = start(|_| {});
    match Client::dial_url(&format!("ws://{}/chat", gw.ws_addr())).await {
        Dial::Refused { status, .. } => assert_eq!(status, 404),
        Dial::Ok(_) => panic!("upgraded on /chat"),
    }
    for garbage in [&b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage-tls-hello\r\n\r\n"[..], b"HELLO\r\n\r\n"] {
        let mut s = tokio::net::TcpStream::connect(gw.ws_addr()).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(garbage).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(HANG, s.read_to_end(&mut out)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    }
    // The gateway still serves after garbage.
    let (c, r) = Client::login(gw.ws_addr(), &token(&gw, 9, None)).await;
    assert_eq!(r.user_id, 9);
    drop(c);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_never_completes_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = start(|c| c.server.handshake_timeout_ms = 200);
    let mut s = tokio::net::TcpStream::connect(gw.ws_addr()).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(HANG, s.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    gw.stop();
}
