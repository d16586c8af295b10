//! Close codes of the contract, each provoked over a real socket: 4001 (bad token in an
//! AUTH packet), 4002 (no AUTH in time), 4005 (protocol errors), 1009 (too big), 4008
//! (idle), 4004 (rate limited); and the AUTH-packet login that upgrades without a token.

mod common;
use common::*;
use im_gateway::proto::{self, Command};
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;

/// Upgrades without a token (no AUTH packet arrives first).
async fn unauthed(gw: &im_gateway::Gateway) -> Client {
    match Client::dial(gw.ws_addr(), None).await {
        Dial::Ok(c) => c,
        Dial::Refused { status, body, .. } => {
            panic!("upgrade without token refused: {status} {body}")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_packet_logs_in_with_the_same_seq() {
    let gw = start(|_| {});
    let mut c = unauthed(&gw).await;
    let r = c.auth(&token(&gw, 4242, Some(2)), 2, 5).await;
    assert_eq!(r.user_id, 4242);
    assert_eq!(r.gateway_id, "gw-test");
    assert!(r.shard < 2);
    assert!(!r.session_id.is_empty());
    // The session is live: heartbeats are answered and the directory knows it.
    c.heartbeat(6).await;
    wait_online(&gw, 4242, 1).await;
    // A second AUTH on the same connection is an ERROR (ALREADY_AUTHENTICATED), not a
    // close.
    c.send(
        Command::Auth,
        7,
        &proto::AuthRequest { token: token(&gw, 4242, Some(2)), platform: 2, ..Default::default() },
    )
    .await;
    let p = c.recv().await;
    assert_eq!(p.header.as_ref().unwrap().command, Command::Error as i32);
    assert_eq!(p.header.as_ref().unwrap().seq, 7);
    assert_eq!(proto::Error::decode(p.body).unwrap().code, 2);
    c.heartbeat(8).await;
    drop(c);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_in_auth_packet_closes_4001() {
    let gw = start(|_| {});
    let mut other = gw.node().config.auth.clone();
    other.jwt_secret = "another-secret-of-enough-length".into();
    let wrong_key = im_gateway::auth::Minter::from_config(&other).unwrap().mint(5, None, 3600);
    for bad in ["not-a-jwt", wrong_key.as_str()] {
        let mut c = unauthed(&gw).await;
        c.send(Command::Auth, 1, &proto::AuthRequest { token: bad.into(), platform: 1, ..Default::default() }).await;
        let (code, reason) = c.expect_close().await;
        assert_eq!(code, 4001, "{bad}: {reason}");
    }
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_in_time_closes_4002() {
    let gw = start(|cfg| cfg.auth.auth_timeout_ms = 200);
    let mut c = unauthed(&gw).await;
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 4002, "{reason}");
    drop(c);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_close_4005() {
    let gw = start(|_| {});
    let login = |user| {
        let addr = gw.ws_addr();
        let t = token(&gw, user, Some(1));
        async move { Client::login(addr, &t).await.0 }
    };
    let header = |command: i32| proto::Header { command, version: 1, client_id: "test".into(), seq: 3 };

    // A text frame. (Each case reassigns `c`, which drops the finished connection.)
    let mut c = login(11).await;
    c.send_raw(Message::text("hello")).await;
    assert_eq!(c.expect_close().await.0, 4005, "text frame");

    // A binary message that is not a Packet (0xff: field 31 with wire type 7).
    c = login(12).await;
    c.send_raw(Message::binary(vec![0xff, 0xff, 0xff, 0xff])).await;
    assert_eq!(c.expect_close().await.0, 4005, "garbage binary");

    // A packet without a header.
    c = login(13).await;
    c.send_raw(Message::binary(proto::Packet::default().encode_to_vec())).await;
    assert_eq!(c.expect_close().await.0, 4005, "packet without header");

    // HEARTBEAT before AUTH.
    c = unauthed(&gw).await;
    c.send(Command::Heartbeat, 1, &()).await;
    assert_eq!(c.expect_close().await.0, 4005, "HEARTBEAT before AUTH");

    // UPSTREAM before AUTH.
    c = unauthed(&gw).await;
    let up = proto::UpstreamMsg { receiver_id: 1, content: "x".into(), ..Default::default() };
    c.send(Command::Upstream, 1, &up).await;
    assert_eq!(c.expect_close().await.0, 4005, "UPSTREAM before AUTH");

    // Server-only commands sent by a client, and an unknown command number.
    for (what, command) in [
        ("PUSH", Command::Push as i32),
        ("KICK", Command::Kick as i32),
        ("ERROR", Command::Error as i32),
        ("unknown 99", 99),
    ] {
        let mut c = login(14).await;
        let packet =
            proto::Packet { header: Some(header(command)), body: proto::PushMsg::default().encode_to_vec().into() };
        c.send_raw(Message::binary(packet.encode_to_vec())).await;
        let (code, reason) = c.expect_close().await;
        assert_eq!(code, 4005, "{what}: {reason}");
    }

    // A body that does not decode as the command's message.
    c = login(15).await;
    let packet = proto::Packet { header: Some(header(Command::Upstream as i32)), body: vec![0xff, 0xff].into() };
    c.send_raw(Message::binary(packet.encode_to_vec())).await;
    assert_eq!(c.expect_close().await.0, 4005, "bad UPSTREAM body");
    drop(c);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_max_frame_bytes_closes_1009() {
    let gw = start(|cfg| cfg.connection.max_frame_bytes = 1024);
    let (mut c, _) = Client::login(gw.ws_addr(), &token(&gw, 21, Some(1))).await;
    // Just under the limit passes the size check: it fails later, as a packet (4005)...
    let (mut small, _) = Client::login(gw.ws_addr(), &token(&gw, 22, Some(1))).await;
    small.send_raw(Message::binary(vec![0xffu8; 1000])).await;
    assert_eq!(small.expect_close().await.0, 4005);
    // ...over it is 1009.
    c.send_raw(Message::binary(vec![0u8; 2000])).await;
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 1009, "{reason}");
    drop((c, small));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_closes_4008() {
    let gw = start(|cfg| {
        cfg.connection.heartbeat_interval_s = 1;
        cfg.connection.idle_timeout_s = 2;
    });
    let (mut c, r) = Client::login(gw.ws_addr(), &token(&gw, 31, Some(1))).await;
    assert_eq!(r.heartbeat_interval_s, 1, "AuthResult announces the configured interval");
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 4008, "{reason}");
    drop(c);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_flood_gets_rate_limited_then_4004() {
    let gw = start(|cfg| {
        cfg.connection.upstream_rate_per_s = 1;
        cfg.connection.upstream_burst = 1;
        cfg.connection.rate_limit_strikes = 3;
    });
    let (mut c, _) = Client::login(gw.ws_addr(), &token(&gw, 41, Some(1))).await;
    let msg = proto::UpstreamMsg {
        receiver_id: 999_999, // offline
        content: "spam".into(),
        ..Default::default()
    };
    for seq in 1..=10 {
        c.send(Command::Upstream, seq, &msg).await;
    }
    // The first fits the bucket: it is processed (the receiver is offline).
    let p = c.recv().await;
    let h = p.header.as_ref().unwrap();
    assert_eq!((h.command, h.seq), (Command::Error as i32, 1));
    assert_eq!(proto::Error::decode(p.body).unwrap().code, 5, "RECEIVER_OFFLINE");
    // The next ones are refused with RATE_LIMITED and their own seq, then the
    // connection is closed 4004.
    let mut limited = Vec::new();
    let code = loop {
        match c.recv_or_close().await {
            Ok(p) => {
                let h = p.header.clone().unwrap();
                assert_eq!(h.command, Command::Error as i32, "{p:?}");
                let e = proto::Error::decode(p.body).unwrap();
                assert_eq!(e.code, 4, "RATE_LIMITED: {e:?}");
                limited.push(h.seq);
            }
            Err((code, _)) => break code,
        }
    };
    assert!(!limited.is_empty(), "RATE_LIMITED errors come before the close");
    assert_eq!(limited, (2..2 + limited.len() as i64).collect::<Vec<_>>(), "each error carries its request's seq");
    assert_eq!(code, 4004);
    drop(c);
    gw.stop();
}
