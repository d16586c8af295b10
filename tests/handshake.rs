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

/// A TLS 1.3-style ClientHello (record header, handshake header, random, suites, SNI),
/// as a client configured for `wss://` sends to a plain port.
fn tls_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x03];
    hello.extend((0u8..32).map(|i| i.wrapping_mul(37))); // random
    hello.push(32);
    hello.extend([0xab; 32]); // legacy session id
    hello.extend([0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03]); // cipher suites
    hello.extend([0x01, 0x00]); // compression: null
    let sni = b"chat.example.com";
    let mut ext = vec![0x00, 0x00];
    ext.extend(((sni.len() + 5) as u16).to_be_bytes());
    ext.extend(((sni.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend((sni.len() as u16).to_be_bytes());
    ext.extend(sni);
    hello.extend((ext.len() as u16).to_be_bytes());
    hello.extend(ext);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend((hello.len() as u16).to_be_bytes());
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_hello_and_binary_garbage_get_400_and_a_closed_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = start(|_| {});
    let inputs: Vec<(&str, Vec<u8>, &str)> = vec![
        ("TLS ClientHello", tls_client_hello(), "HTTP/1.1 400"),
        ("binary", (0..=255u8).rev().cycle().take(1500).collect(), "HTTP/1.1 400"),
        ("NUL bytes", vec![0; 64], "HTTP/1.1 400"),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("bad header line", b"GET /ws HTTP/1.1\r\nHo st: x\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("POST", b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), "HTTP/1.1 405"),
        ("SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(), "HTTP/1.1 400"),
    ];
    for (what, bytes, expect) in &inputs {
        let mut s = tokio::net::TcpStream::connect(gw.ws_addr()).await.unwrap();
        s.write_all(bytes).await.unwrap();
        // The answer comes, then the server closes: read_to_end ends (EOF or reset
        // after the answer), it does not wait for the handshake timeout.
        let mut out = Vec::new();
        let _ = tokio::time::timeout(HANG, s.read_to_end(&mut out)).await.unwrap_or_else(|_| panic!("{what}: hung"));
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with(expect), "{what}: {text}");
        assert!(text.contains("Connection: close") && text.contains("{\"error\""), "{what}: {text}");
    }
    let v = stats(&gw).await;
    let shards = v["shards"].as_array().unwrap();
    let refused: u64 = shards.iter().map(|s| s["rejected"]["400"].as_u64().unwrap()).sum();
    assert_eq!(refused, 7, "{v}");
    assert_eq!(shards.iter().map(|s| s["connections"].as_u64().unwrap()).sum::<u64>(), 0, "{v}");
    // Unharmed: a real client still gets in.
    let (c, r) = Client::login(gw.ws_addr(), &token(&gw, 9, None)).await;
    assert_eq!(r.user_id, 9);
    drop(c);
    gw.stop();
}
