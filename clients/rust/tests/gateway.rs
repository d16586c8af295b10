//! The client against the real gateway: connect, heartbeats, pushes from the admin API,
//! UPSTREAM between two users (embedded mode), ERROR answers, kick, refused tokens.

mod common;
use common::*;
use im_gateway_client::{Client, Config, Event, RequestError, State, Token, TokenTransport, UpstreamMsg};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_heartbeats_and_closes() {
    // Heartbeats every second, idle timeout 3 s: a client that did not heartbeat would
    // be closed with 4008 within the test.
    let gw = gateway(any_port(), |c| {
        c.connection.heartbeat_interval_s = 1;
        c.connection.idle_timeout_s = 3;
    });
    let mut config = Config::new(url(&gw), token(&gw, 101));
    config.platform = 3;
    let (c, mut rec, s) = connected(config).await;
    assert_eq!((s.user_id, s.gateway_id.as_str(), s.heartbeat_interval_s), (101, "gw-rust", 1));
    assert_eq!(c.state(), State::Connected);
    for _ in 0..4 {
        rec.until("Heartbeat", |e| matches!(e, Event::Heartbeat { .. })).await;
    }
    assert_eq!(rec.count(|e| matches!(e, Event::Disconnected(_))), 0, "{:?}", rec.names());
    wait_online(&gw, 101, 1).await;
    c.close().await;
    let at = rec.until("Disconnected", |e| matches!(e, Event::Disconnected(_))).await;
    let Event::Disconnected(d) = &rec.seen[at].1 else { unreachable!() };
    assert_eq!((d.code, d.was_connected, d.will_reconnect), (1000, true, false));
    assert!(rec.ended().await, "the event stream ends");
    assert_eq!(c.state(), State::Closed);
    wait_online(&gw, 101, 0).await;
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_upstream_and_server_errors() {
    let gw = gateway(any_port(), |_| {});
    let calls = Arc::new(AtomicU32::new(0));
    let mut config = Config::new(url(&gw), {
        let (calls, t) = (calls.clone(), token(&gw, 104));
        Token::refresh(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            let t = t.clone();
            async move { Ok(t) }
        })
    });
    config.transport = TokenTransport::Query;
    let (alice, _alice_rec, _) = connected(config).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let (bob, mut bob_rec, _) = connected(Config::new(url(&gw), token(&gw, 105))).await;

    // Admin push.
    let (status, _) = admin(
        &gw,
        "POST",
        "/v1/push",
        Some(r#"{"user_ids":[105],"msg":{"msg_id":7001,"sender_id":9,"type":2,"content":"from the backend"}}"#),
    )
    .await;
    assert_eq!(status, 200);
    let at = bob_rec.until("Push", |e| matches!(e, Event::Push(_))).await;
    let Event::Push(p) = &bob_rec.seen[at].1 else { unreachable!() };
    assert_eq!((p.msg_id, p.sender_id, p.r#type, p.content.as_str()), (7001, 9, 2, "from the backend"));

    // UPSTREAM to another user.
    let msg = UpstreamMsg {
        receiver_id: 105,
        r#type: 1,
        content: "hi bob".into(),
        client_msg_id: "m-1".into(),
        ..Default::default()
    };
    let result = alice.send(msg).await.expect("an UpstreamResult");
    assert!(result.bus_id.starts_with("local-"), "{}", result.bus_id);
    let at = bob_rec.until("Push", |e| matches!(e, Event::Push(_))).await;
    let Event::Push(p) = &bob_rec.seen[at].1 else { unreachable!() };
    assert_eq!((p.sender_id, p.receiver_id, p.content.as_str()), (104, 105, "hi bob"));
    assert_eq!(format!("local-{}", p.msg_id), result.bus_id);

    // ERROR answers fail the request, and the connection carries on.
    let offline = UpstreamMsg { receiver_id: 999_999, content: "anyone?".into(), ..Default::default() };
    match alice.send(offline).await {
        Err(RequestError::Server { code, .. }) => assert_eq!(code, 5, "RECEIVER_OFFLINE"),
        other => panic!("{other:?}"),
    }
    match alice.send(UpstreamMsg { content: "no receiver".into(), ..Default::default() }).await {
        Err(RequestError::Server { code, .. }) => assert_eq!(code, 1, "BAD_REQUEST"),
        other => panic!("{other:?}"),
    }
    assert_eq!(alice.state(), State::Connected);
    alice.close().await;
    bob.close().await;
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_is_final() {
    let gw = gateway(any_port(), |_| {});
    let (c, mut rec, _) = connected(Config::new(url(&gw), token(&gw, 108))).await;
    wait_online(&gw, 108, 1).await;
    let (status, _) = admin(&gw, "POST", "/v1/kick", Some(r#"{"user_id":108,"reason":"admin says bye"}"#)).await;
    assert_eq!(status, 200);
    let at = rec.until("Kick", |e| matches!(e, Event::Kick { .. })).await;
    assert!(matches!(&rec.seen[at].1, Event::Kick { reason } if reason == "admin says bye"));
    let at = rec.until("Disconnected", |e| matches!(e, Event::Disconnected(_))).await;
    let Event::Disconnected(d) = &rec.seen[at].1 else { unreachable!() };
    assert_eq!((d.code, d.will_reconnect), (4003, false));
    assert!(rec.ended().await, "no reconnect: the event stream ends");
    assert_eq!(c.state(), State::Closed);
    assert!(matches!(c.send(UpstreamMsg::default()).await, Err(RequestError::NotConnected)));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_are_final() {
    let gw = gateway(any_port(), |_| {});
    // In the AUTH packet: close 4001.
    let (c, events) = Client::connect(Config::new(url(&gw), "not.a.jwt"));
    let mut rec = Recorder::new(events);
    let at = rec.until("Disconnected", |e| matches!(e, Event::Disconnected(_))).await;
    let Event::Disconnected(d) = &rec.seen[at].1 else { unreachable!() };
    assert_eq!((d.code, d.was_connected, d.will_reconnect), (4001, false, false));
    assert!(matches!(rec.seen[at - 1].1, Event::Error(_)), "{:?}", rec.names());
    assert!(rec.ended().await);
    assert_eq!(c.state(), State::Closed);

    // In the query: HTTP 401, final with a fixed token.
    let mut config = Config::new(url(&gw), "not.a.jwt");
    config.transport = TokenTransport::Query;
    let (_c, events) = Client::connect(config);
    let mut rec = Recorder::new(events);
    let at = rec.until("Disconnected", |e| matches!(e, Event::Disconnected(_))).await;
    let Event::Disconnected(d) = &rec.seen[at].1 else { unreachable!() };
    assert_eq!((d.status, d.will_reconnect), (Some(401), false));
    gw.stop();
}
