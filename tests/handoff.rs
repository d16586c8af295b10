//! Zero-downtime restart by SO_REUSEPORT hand-over, with two real gateway binaries: a
//! new process joins the old one's port (`server.reuse_port_join`), the old one drains
//! after SIGTERM, the new one accepts on the same port meanwhile, and a client that
//! reconnects after its 1001 lands on the new process.

mod common;
use common::*;
use std::net::SocketAddr;

fn gateway(ws: SocketAddr, admin: SocketAddr, id: &str) -> std::process::Command {
    let (ws, admin) = (ws.to_string(), admin.to_string());
    binary(&["--listen", &ws, "--admin", &admin, "--shards", "2", "--gateway-id", id])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_process_takes_over_the_port_while_the_old_one_drains() {
    let ws: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let old_admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let new_admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();

    let mut old_cmd = gateway(ws, old_admin, "gw-old");
    // The old process keeps draining as long as a client holds on (up to a minute), so
    // the test decides when it ends.
    old_cmd
        .env("IMGW_SERVER_DRAIN_WINDOW_MS", "1000")
        .env("IMGW_CONNECTION_CLOSE_LINGER_MS", "60000")
        .env("IMGW_SERVER_SHUTDOWN_TIMEOUT_MS", "60000");
    let mut old = Running::start(old_cmd).await;
    let (mut a, r) = Client::login(ws, &default_token(1, Some(1))).await;
    assert_eq!(r.gateway_id, "gw-old");
    // A client that will not read its close frame: it keeps the old process draining.
    let (stubborn, r) = Client::login(ws, &default_token(2, Some(1))).await;
    assert_eq!(r.gateway_id, "gw-old");

    // Without the flag a second process refuses the port; with it, it joins.
    let refused = run_to_end(gateway(ws, new_admin, "gw-new")).await;
    assert!(!refused.status.success(), "a second process took the port without reuse_port_join");
    let mut new_cmd = gateway(ws, new_admin, "gw-new");
    new_cmd.env("IMGW_SERVER_REUSE_PORT_JOIN", "true");
    let new = Running::start(new_cmd).await;

    old.terminate();
    old.wait_for_line("draining").await;
    let (code, reason) = a.closed().await;
    assert_eq!(code, 1001, "{reason}");
    assert!(retry_after_ms(&reason) <= 1000, "{reason}");
    drop(a);

    // The old process has left the group before it sent any 1001: whoever comes now,
    // the reconnecting client included, lands on the new one.
    let (mut back, r) = Client::login(ws, &default_token(1, Some(1))).await;
    assert_eq!(r.gateway_id, "gw-new", "the reconnect landed on the draining process");
    back.heartbeat(1).await;
    let mut others = Vec::new();
    for user in 10..30 {
        let (c, r) = Client::login(ws, &default_token(user, Some(1))).await;
        assert_eq!(r.gateway_id, "gw-new", "user {user} landed on the draining process");
        others.push(c);
    }
    assert!(old.alive(), "the old process was still draining while the new one accepted");
    let (status, _) = http(old_admin, "GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "the draining process says it is not ready");

    // The last client of the old process leaves: it finishes and exits cleanly.
    drop(stubborn);
    let (status, log) = old.exit().await;
    assert!(status.success(), "old process: {status}\n{}", log.join("\n"));

    // The new process serves on.
    back.heartbeat(2).await;
    let (c, r) = Client::login(ws, &default_token(99, Some(1))).await;
    assert_eq!(r.gateway_id, "gw-new");
    drop((back, c, others));
    new.terminate();
    let (status, log) = new.exit().await;
    assert!(status.success(), "new process: {status}\n{}", log.join("\n"));
}
