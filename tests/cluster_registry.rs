//! Cluster mode's registry keys on a real Redis: locations follow sessions (with the
//! configured key prefix and a TTL), each node beats in `{p}gateways`, a starting node
//! clears what a previous run of its `gateway_id` left, a draining node removes its
//! entries, and `/v1/online` answers for users on any node.

mod common;
use common::cluster::*;
use common::*;
use redis::Commands;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_follow_sessions_under_the_key_prefix() {
    let redis = Redis::shared();
    let p = prefix("loc");
    let a = ready_node(&redis, &p, "A").await;
    let (c, r) = Client::login(a.ws_addr(), &token(&a, 3101, Some(2))).await;
    let key = format!("{p}location:3101");
    let users = format!("{p}gateway:A:users");
    let session = r.session_id.clone();
    wait_redis(&redis, "the session's location", |r| {
        r.hget::<_, _, Option<String>>(&key, &session).unwrap().as_deref() == Some("A")
    })
    .await;
    let mut conn = redis.conn();
    let ttl: i64 = conn.ttl(&key).unwrap();
    assert!(ttl > 0, "location has a TTL ({ttl})");
    assert!(conn.sismember::<_, _, bool>(&users, 3101).unwrap());
    let beat: Option<f64> = conn.zscore(format!("{p}gateways"), "A").unwrap();
    assert!(beat.is_some_and(|ms| ms > 1.0e12), "heartbeat in ms: {beat:?}");
    // Nothing under the default prefix comes from this node.
    let foreign: Vec<String> = conn.keys("im:location:3101").unwrap();
    assert!(foreign.is_empty(), "{foreign:?}");

    drop(c);
    wait_redis(&redis, "the location removed on disconnect", |r| !r.exists::<_, bool>(&key).unwrap()).await;
    wait_redis(&redis, "the user out of the node's set", |r| !r.sismember::<_, _, bool>(&users, 3101).unwrap()).await;
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_node_clears_what_its_previous_run_left() {
    let redis = Redis::shared();
    let p = prefix("restart");
    let mut conn = redis.conn();
    // A previous run of "A" died holding user 3201; "B" holds the same user.
    let key = format!("{p}location:3201");
    let _: () = conn.hset(&key, "00000001-1-1", "A").unwrap();
    let _: () = conn.hset(&key, "00000002-1-1", "B").unwrap();
    let _: () = conn.sadd(format!("{p}gateway:A:users"), 3201).unwrap();
    let a = ready_node(&redis, &p, "A").await;
    let left: std::collections::HashMap<String, String> = conn.hgetall(&key).unwrap();
    assert_eq!(left.into_iter().collect::<Vec<_>>(), vec![("00000002-1-1".to_string(), "B".to_string())]);
    assert!(!conn.sismember::<_, _, bool>(format!("{p}gateway:A:users"), 3201).unwrap());
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_removes_its_entries() {
    let redis = Redis::shared();
    let p = prefix("drain");
    let a = ready_node(&redis, &p, "A").await;
    let mut clients = Vec::new();
    for user in 3301..3304 {
        clients.push(Client::login(a.ws_addr(), &token(&a, user, Some(1))).await.0);
    }
    let users = format!("{p}gateway:A:users");
    wait_redis(&redis, "three users filed", |r| r.scard::<_, usize>(&users).unwrap() == 3).await;
    a.shutdown();
    for c in &mut clients {
        assert_eq!(c.closed().await.0, 1001);
    }
    a.wait();
    let mut conn = redis.conn();
    for user in 3301..3304 {
        assert!(!conn.exists::<_, bool>(format!("{p}location:{user}")).unwrap(), "user {user}");
    }
    assert!(!conn.exists::<_, bool>(&users).unwrap());
    assert_eq!(conn.zscore::<_, _, Option<f64>>(format!("{p}gateways"), "A").unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_answers_for_users_on_any_node() {
    let redis = Redis::shared();
    let p = prefix("online");
    let a = ready_node(&redis, &p, "A").await;
    let b = ready_node(&redis, &p, "B").await;
    let (ca, ra) = Client::login(a.ws_addr(), &token(&a, 3401, Some(3))).await;
    let (cb, rb) = Client::login(b.ws_addr(), &token(&b, 3401, Some(5))).await;
    for gw in [&a, &b] {
        let sessions = wait_sessions_on(gw, 3401, &["A", "B"]).await;
        for s in &sessions {
            let (want_platform, want_id) =
                if s["gateway_id"] == "A" { (3, &ra.session_id) } else { (5, &rb.session_id) };
            assert_eq!(s["platform"], want_platform, "{s}");
            assert_eq!(s["shard"], 0, "{s}");
            assert_eq!(s["session_id"].as_str(), Some(want_id.as_str()), "{s}");
        }
    }
    let (_, v) = get_json(&b, "/v1/online?user_ids=3401,3402").await;
    assert_eq!(v["users"][1]["online"], false, "{v}");
    drop((ca, cb));
    wait_sessions_on(&a, 3401, &[]).await;
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_list_the_other_nodes_summaries() {
    let redis = Redis::shared();
    let p = prefix("nodes");
    let a = ready_node(&redis, &p, "A").await;
    let b = ready_node(&redis, &p, "B").await;
    let (_c, _) = Client::login(b.ws_addr(), &token(&b, 3701, Some(1))).await;
    // B files its summary with each sweep (every second in these tests).
    let stats = wait_for(
        &a,
        "node B's summary with its one connection",
        |status, v| {
            status == 200
                && v["nodes"].as_array().is_some_and(|n| {
                    n.iter().any(|n| n["gateway_id"] == "B" && n["connections"] == 1 && n["users"] == 1)
                })
        },
        "/v1/stats",
    )
    .await;
    let nodes = stats["nodes"].as_array().unwrap();
    assert!(nodes.iter().all(|n| n["gateway_id"] != "A"), "a node does not list itself: {stats}");
    let b_summary = nodes.iter().find(|n| n["gateway_id"] == "B").unwrap();
    assert_eq!(b_summary["shards"], 1);
    assert!(b_summary["last_seen_ms"].as_i64().is_some_and(|ms| ms > 1_000_000_000_000), "{b_summary}");
    // A single node has no `nodes` key at all.
    let solo = start(|_| {});
    let (status, v) = get_json(&solo, "/v1/stats").await;
    assert_eq!(status, 200);
    assert!(v.get("nodes").is_none(), "{v}");
    b.stop();
    a.stop();
}
