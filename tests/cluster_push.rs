//! Cluster-mode delivery on a real Redis: an admin push on one node reaches the user's
//! sessions on other nodes (through `{p}push:{gateway_id}`), a broadcast reaches every
//! node's users exactly once (`{p}push:all`), and a backend publishing a `Downstream`
//! itself gets it delivered; a payload that does not decode is dropped, not fatal.

mod common;
use common::cluster::*;
use common::*;
use im_gateway::proto::{Downstream, PushMsg};
use prost::Message as _;
use redis::Commands;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaches_the_user_on_every_node() {
    let redis = Redis::shared();
    let p = prefix("push");
    let a = ready_node(&redis, &p, "A").await;
    let b = ready_node(&redis, &p, "B").await;
    let (mut on_a, _) = Client::login(a.ws_addr(), &token(&a, 3501, Some(1))).await;
    let (mut on_b, _) = Client::login(b.ws_addr(), &token(&b, 3501, Some(2))).await;
    let (mut other, _) = Client::login(a.ws_addr(), &token(&a, 3502, Some(1))).await;
    wait_sessions_on(&b, 3502, &["A"]).await;
    wait_sessions_on(&a, 3501, &["A", "B"]).await;

    let v = push_to(&b, &[3501, 3502, 3599], "across").await;
    assert_eq!(v["online_users"], 2, "{v}");
    assert_eq!(v["not_delivered"], serde_json::json!([3599]), "{v}");
    for c in [&mut on_a, &mut on_b, &mut other] {
        assert_eq!(c.push().await.content, "across");
    }
    // Exactly once each: the next thing each client sees is the next push.
    let v = push_to(&a, &[3501], "second").await;
    assert_eq!(v["not_delivered"], serde_json::json!([]), "{v}");
    for c in [&mut on_a, &mut on_b] {
        let m = c.push().await;
        assert_eq!((m.content.as_str(), m.receiver_id), ("second", 3501));
    }
    drop((on_a, on_b, other));
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_node_once() {
    let redis = Redis::shared();
    let p = prefix("bcast");
    let a = ready_node(&redis, &p, "A").await;
    let b = ready_node(&redis, &p, "B").await;
    let (mut ca, _) = Client::login(a.ws_addr(), &token(&a, 3601, None)).await;
    let (mut cb, _) = Client::login(b.ws_addr(), &token(&b, 3602, None)).await;
    let body = serde_json::json!({ "msg": { "msg_id": 7, "content": "everyone" } }).to_string();
    let (status, v) = post_json(&a, "/v1/broadcast", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["nodes"], 1, "{v}");
    assert_eq!(ca.push().await.content, "everyone");
    assert_eq!(cb.push().await.content, "everyone");
    wait_sessions_on(&a, 3601, &["A"]).await;
    push_to(&a, &[3601], "after").await;
    assert_eq!(ca.push().await.content, "after", "the broadcast was not delivered twice on its own node");
    drop((ca, cb));
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_can_publish_downstream_itself() {
    let redis = Redis::shared();
    let p = prefix("backend");
    let a = ready_node(&redis, &p, "A").await;
    let b = ready_node(&redis, &p, "B").await;
    let (mut ca, _) = Client::login(a.ws_addr(), &token(&a, 3701, None)).await;
    let (mut cb, _) = Client::login(b.ws_addr(), &token(&b, 3702, None)).await;
    let mut conn = redis.conn();
    let msg = |content: &str| PushMsg { msg_id: 42, sender_id: 9, content: content.into(), ..Default::default() };

    // Garbage first: the node logs and drops it, and keeps serving.
    let _: i64 = conn.publish(format!("{p}push:A"), b"\xff\xff not protobuf").unwrap();
    let targeted = Downstream { user_ids: vec![3701, 3702], msg: Some(msg("to A")), ..Default::default() };
    let n: i64 = conn.publish(format!("{p}push:A"), targeted.encode_to_vec()).unwrap();
    assert_eq!(n, 1, "node A subscribes to its own channel");
    let m = ca.push().await;
    assert_eq!((m.content.as_str(), m.msg_id, m.sender_id), ("to A", 42, 9));
    assert!(m.server_ts_us > 0, "stamped on arrival");

    let all = Downstream { all: true, msg: Some(msg("to all")), ..Default::default() };
    let n: i64 = conn.publish(format!("{p}push:all"), all.encode_to_vec()).unwrap();
    assert_eq!(n, 2);
    assert_eq!(ca.push().await.content, "to all");
    // B never got the push for A's channel: its first packet is the broadcast.
    assert_eq!(cb.push().await.content, "to all");
    drop((ca, cb));
    a.stop();
    b.stop();
}
