//! Cluster-mode faults against real processes: Redis down when a node starts (it
//! starts, serves its own users, is not ready, and joins once Redis comes); Redis
//! restarting mid-run (every node re-subscribes and re-registers its users); a node
//! killed with SIGKILL (pushes to its users report not delivered; its entries expire by
//! TTL, and a live node reaps its fields in locations that the live node keeps renewing).

mod common;
use common::cluster::*;
use common::*;
use im_gateway::proto::{self, Command, UpstreamMsg};
use prost::Message as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_then_up() {
    let port = free_port();
    let p = prefix("downstart");
    let absent = Redis::absent(port);
    let a = node(&absent, &p, "A", |_| {});
    let (status, v) = get_json(&a, "/readyz").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(get_json(&a, "/healthz").await.0, 200);

    // Its own users are served without Redis.
    let (mut c, _) = Client::login(a.ws_addr(), &token(&a, 4101, Some(1))).await;
    wait_online(&a, 4101, 1).await;
    let v = push_to(&a, &[4101], "local").await;
    assert_eq!(v["online_users"], 1, "{v}");
    assert!(v["registry_error"].is_string(), "{v}");
    assert_eq!(c.push().await.content, "local");
    let m = UpstreamMsg { content: "x".into(), ..Default::default() };
    c.send(Command::Upstream, 5, &m).await;
    let reply = c.recv().await;
    assert_eq!(reply.header.as_ref().map(|h| (h.command, h.seq)), Some((Command::Error as i32, 5)));
    assert_eq!(proto::Error::decode(reply.body).unwrap().code, 3);

    // Redis arrives: the node connects (it keeps retrying), files its user, is ready.
    let redis = Redis::start_on(port);
    wait_ready(&a).await;
    let b = ready_node(&redis, &p, "B").await;
    wait_sessions_on(&b, 4101, &["A"]).await;
    c.heartbeat(1).await;
    drop(c);
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_resubscribes_and_reregisters() {
    let mut redis = Redis::own();
    let p = prefix("restart");
    let a = ready_node(&redis, &p, "A").await;
    let b = ready_node(&redis, &p, "B").await;
    let (mut c, _) = Client::login(a.ws_addr(), &token(&a, 4201, Some(1))).await;
    wait_sessions_on(&b, 4201, &["A"]).await;

    redis.kill();
    let port = redis.port;
    wait_for(&a, "A not ready", |s, _| s == 503, "/readyz").await;
    let restarted = std::time::Instant::now();
    let redis = Redis::start_on(port); // empty: no persistence
    wait_sessions_on(&b, 4201, &["A"]).await;
    eprintln!("user re-registered {:?} after redis came back", restarted.elapsed());
    wait_ready(&b).await;
    let v = push_to(&b, &[4201], "after restart").await;
    assert_eq!(v["not_delivered"], serde_json::json!([]), "{v}");
    assert_eq!(c.push().await.content, "after restart");
    drop(c);
    a.stop();
    b.stop();
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_reports_not_delivered_and_expires() {
    let redis = Redis::shared();
    let p = prefix("sigkill");
    let a = node(&redis, &p, "A", |c| c.cluster.location_ttl_s = 2);
    wait_ready(&a).await;
    let (ws, admin) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("imgw-test-{}-node-k.log", std::process::id()));
    let mut killed = binary(&[
        "--listen",
        &format!("127.0.0.1:{ws}"),
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--shards",
        "1",
        "--gateway-id",
        "K",
        "--redis",
        &redis.url,
    ])
    .env("IMGW_CLUSTER_KEY_PREFIX", &p)
    .env("IMGW_CLUSTER_LOCATION_TTL_S", "2")
    .env("IMGW_CLUSTER_SWEEP_INTERVAL_S", "1")
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .expect("spawn im-gateway");
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let ready = tokio::net::TcpStream::connect(admin_addr).await.is_ok()
            && http(admin_addr, "GET", "/readyz", None, None).await.0 == 200;
        if ready {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node K never ready; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::task::yield_now().await;
    }
    let ws_addr = format!("127.0.0.1:{ws}").parse().unwrap();
    let (c, _) = Client::login(ws_addr, &default_token(4301, Some(1))).await;
    // 4302 is on both nodes: A keeps renewing its location key.
    let (c2, _) = Client::login(ws_addr, &default_token(4302, Some(1))).await;
    let (mut on_a, _) = Client::login(a.ws_addr(), &token(&a, 4302, Some(2))).await;
    wait_sessions_on(&a, 4301, &["K"]).await;
    wait_sessions_on(&a, 4302, &["A", "K"]).await;
    assert_eq!(push_to(&a, &[4301], "alive").await["not_delivered"], serde_json::json!([]));

    killed.kill().expect("SIGKILL node K");
    killed.wait().unwrap();
    drop((c, c2));
    // Until its entries expire, a push to its user is reported as not delivered.
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let v = push_to(&a, &[4301], "into the void").await;
        if v["not_delivered"] == serde_json::json!([4301]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "push to a dead node's user still reported delivered: {v}");
        tokio::task::yield_now().await;
    }
    // Then its location expires by TTL: the user is offline.
    wait_sessions_on(&a, 4301, &[]).await;
    // ... and the dead node's field in a location A renews is reaped.
    wait_sessions_on(&a, 4302, &["A"]).await;
    on_a.heartbeat(1).await;
    drop(on_a);
    let _ = std::fs::remove_file(&log);
    a.stop();
}
