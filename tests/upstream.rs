//! Embedded upstream (no Redis): an UPSTREAM with `receiver_id` is delivered to that
//! user's connections as a PUSH, on any shard, and answered with an `UpstreamResult`
//! carrying the request's `seq`; an offline receiver and a missing receiver are ERRORs
//! with the request's `seq`.

mod common;
use common::*;
use im_gateway::proto::{self, Command, UpstreamMsg};
use prost::Message as _;

fn msg(receiver_id: i64, content: &str) -> UpstreamMsg {
    UpstreamMsg { receiver_id, group_id: 0, r#type: 1, content: content.into(), client_msg_id: "c-1".into() }
}

/// Sends UPSTREAM with `seq` and returns the bus id of the UPSTREAM reply.
async fn send_ok(c: &mut Client, seq: i64, m: &UpstreamMsg) -> String {
    c.send(Command::Upstream, seq, m).await;
    let p = c.recv().await;
    let h = p.header.as_ref().unwrap();
    assert_eq!((h.command, h.seq), (Command::Upstream as i32, seq), "{p:?}");
    proto::UpstreamResult::decode(p.body).unwrap().bus_id
}

/// Sends UPSTREAM with `seq` and returns the code of the ERROR reply.
async fn send_err(c: &mut Client, seq: i64, m: &UpstreamMsg) -> i32 {
    c.send(Command::Upstream, seq, m).await;
    let p = c.recv().await;
    let h = p.header.as_ref().unwrap();
    assert_eq!((h.command, h.seq), (Command::Error as i32, seq), "{p:?}");
    proto::Error::decode(p.body).unwrap().code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_is_delivered_across_shards() {
    let gw = start(|_| {});
    let (mut a, _) = Client::login_on_shard(&gw, 801, Some(1), 0).await;
    let (mut b, _) = Client::login_on_shard(&gw, 802, Some(1), 1).await;
    let bus_id = send_ok(&mut a, 9, &msg(802, "hi B")).await;
    assert!(!bus_id.is_empty());
    let p = b.push().await;
    assert_eq!(p.sender_id, 801);
    assert_eq!(p.receiver_id, 802);
    assert_eq!(p.content, "hi B");
    assert_eq!(p.r#type, 1);
    assert!(p.msg_id != 0 && p.server_ts_us > 0, "{p:?}");

    // And back, B -> A, with distinct ids.
    let back = send_ok(&mut b, 10, &msg(801, "hi A")).await;
    assert!(!back.is_empty() && back != bus_id, "{back} vs {bus_id}");
    let q = a.push().await;
    assert_eq!((q.sender_id, q.receiver_id, q.content.as_str()), (802, 801, "hi A"));
    assert_ne!(q.msg_id, p.msg_id);
    drop((a, b));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_is_delivered_on_the_same_shard_and_to_every_device() {
    let gw = start(|_| {});
    let (mut a, _) = Client::login_on_shard(&gw, 811, Some(1), 0).await;
    let (mut b1, _) = Client::login_on_shard(&gw, 812, Some(1), 0).await;
    let (mut b2, _) = Client::login_on_shard(&gw, 812, Some(2), 1).await;
    wait_online(&gw, 812, 2).await;
    send_ok(&mut a, 1, &msg(812, "to both devices")).await;
    for b in [&mut b1, &mut b2] {
        let p = b.push().await;
        assert_eq!((p.sender_id, p.content.as_str()), (811, "to both devices"));
    }
    drop((a, b1, b2));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_or_missing_receiver_is_an_error_with_the_seq() {
    let gw = start(|_| {});
    let (mut a, _) = Client::login(gw.ws_addr(), &token(&gw, 821, Some(1))).await;
    assert_eq!(send_err(&mut a, 11, &msg(822, "anyone?")).await, 5, "RECEIVER_OFFLINE");
    assert_eq!(send_err(&mut a, 12, &msg(0, "to whom?")).await, 1, "BAD_REQUEST");
    assert_eq!(send_err(&mut a, 13, &msg(-3, "to whom?")).await, 1, "BAD_REQUEST");
    // Errors do not end the session.
    a.heartbeat(14).await;
    // Once the receiver is online the same request goes through.
    let (mut b, _) = Client::login(gw.ws_addr(), &token(&gw, 822, Some(1))).await;
    send_ok(&mut a, 15, &msg(822, "now?")).await;
    assert_eq!(b.push().await.content, "now?");
    drop((a, b));
    gw.stop();
}
