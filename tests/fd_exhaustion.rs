//! Out of file descriptors: the accept loop backs off (one warning per episode) instead
//! of spinning or dying, and serves again once descriptors come back. The gateway runs
//! as its own process under a small `ulimit -n` so the test process keeps its fds.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emfile_backs_off_and_recovers() {
    let ws = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let gateway = env!("CARGO_BIN_EXE_im-gateway");
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-c", &format!("ulimit -n 100 && exec {gateway} --listen {ws} --admin {admin} --shards 1")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env("IMGW_SERVER_PIN_CORES", "false")
        .env("IMGW_LOG_FORMAT", "json");
    let mut gw = Running::start(cmd).await;

    // Silent connections: each takes a descriptor until the handshake timeout, so the
    // gateway runs out of them.
    let mut held = Vec::new();
    for _ in 0..150 {
        held.push(tokio::net::TcpStream::connect(ws.as_str()).await.unwrap());
    }
    let warning = gw.wait_for_line("accept failed; backing off").await;
    assert!(warning.contains("WARN"), "{warning}");

    // Descriptors come back: the gateway serves a real client again.
    drop(held);
    let addr: std::net::SocketAddr = ws.parse().unwrap();
    let (c, r) = Client::login(addr, &default_token(4242, Some(1))).await;
    assert_eq!(r.user_id, 4242);
    drop(c);

    gw.terminate();
    let (status, log) = gw.exit().await;
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
}
