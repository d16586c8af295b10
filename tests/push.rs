//! Admin push and broadcast: every connection of the named users gets the PUSH, on
//! whichever shard it lives; broadcast reaches every connection on every shard.

mod common;
use common::*;
use im_gateway::proto::PushMsg;

fn push_body(users: &[i64], msg_id: i64, content: &str) -> String {
    serde_json::json!({
        "user_ids": users,
        "msg": { "msg_id": msg_id, "sender_id": 9, "group_id": 0, "type": 1, "content": content }
    })
    .to_string()
}

fn check(p: &PushMsg, msg_id: i64, content: &str) {
    assert_eq!(p.msg_id, msg_id);
    assert_eq!(p.sender_id, 9);
    assert_eq!(p.r#type, 1);
    assert_eq!(p.content, content);
    assert!(p.server_ts_us > 0, "server_ts_us is stamped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reaches_every_device_of_the_user() {
    let gw = start(|_| {});
    let (mut phone, _) = Client::login(gw.ws_addr(), &token(&gw, 501, Some(1))).await;
    let (mut desktop, _) = Client::login(gw.ws_addr(), &token(&gw, 501, Some(2))).await;
    wait_online(&gw, 501, 2).await;
    let (status, v) = post_json(&gw, "/v1/push", &push_body(&[501], 77, "hello")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["online_users"], 1, "{v}");
    for c in [&mut phone, &mut desktop] {
        let p = c.push().await;
        check(&p, 77, "hello");
        assert_eq!(p.receiver_id, 501);
    }
    // Pushes to one user arrive in the order they were sent.
    for i in 0..20 {
        let (status, _) = post_json(&gw, "/v1/push", &push_body(&[501], 1000 + i, &format!("n{i}"))).await;
        assert_eq!(status, 200);
    }
    for c in [&mut phone, &mut desktop] {
        for i in 0..20 {
            check(&c.push().await, 1000 + i, &format!("n{i}"));
        }
    }
    drop((phone, desktop));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_list_reaches_users_on_both_shards() {
    let gw = start(|_| {});
    let (mut a, ra) = Client::login_on_shard(&gw, 601, Some(1), 0).await;
    let (mut b, rb) = Client::login_on_shard(&gw, 602, Some(1), 1).await;
    assert_eq!((ra.shard, rb.shard), (0, 1));
    // 603 is offline: counted in `users`, not in `online_users`.
    let (status, v) = post_json(&gw, "/v1/push", &push_body(&[601, 602, 603], 88, "to all three")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["online_users"], 2, "{v}");
    assert_eq!(v["users"], 3, "{v}");
    for c in [&mut a, &mut b] {
        check(&c.push().await, 88, "to all three");
    }
    // Nobody online: still 200, online_users 0, and nothing arrives at the others
    // (the next frame each gets is the answer to its heartbeat).
    let (status, v) = post_json(&gw, "/v1/push", &push_body(&[603, 604], 89, "nobody")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["online_users"], 0, "{v}");
    a.heartbeat(1).await;
    b.heartbeat(1).await;
    drop((a, b));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_connection() {
    let gw = start(|_| {});
    let (a, _) = Client::login_on_shard(&gw, 701, Some(1), 0).await;
    let (b, _) = Client::login_on_shard(&gw, 702, Some(1), 1).await;
    let (c, _) = Client::login(gw.ws_addr(), &token(&gw, 703, Some(1))).await;
    let (d, _) = Client::login(gw.ws_addr(), &token(&gw, 703, Some(2))).await;
    let mut clients = [a, b, c, d];
    wait_online(&gw, 703, 2).await;
    let body =
        serde_json::json!({ "msg": { "msg_id": 5, "sender_id": 9, "type": 1, "content": "maintenance at noon" } });
    let (status, v) = post_json(&gw, "/v1/broadcast", &body.to_string()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["online_users"], 3, "{v}");
    for c in &mut clients {
        check(&c.push().await, 5, "maintenance at noon");
    }
    drop(clients);
    gw.stop();
}
