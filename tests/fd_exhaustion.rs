//! Out of file descriptors: the accept loop backs off (one warning per episode) instead
//! of spinning or dying, and serves again once descriptors come back. The gateway runs
//! as its own process under a small `ulimit -n` so the test process keeps its fds.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

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
        .env("IMGW_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn gateway");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |needle: &str| loop {
        let line = rx.recv_timeout(HANG).unwrap_or_else(|_| panic!("no log line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    };
    wait_for("im-gateway started");

    // Silent connections: each takes a descriptor until the handshake timeout, so the
    // gateway runs out of them.
    let mut held = Vec::new();
    for _ in 0..150 {
        held.push(tokio::net::TcpStream::connect(ws.as_str()).await.unwrap());
    }
    let warning = wait_for("accept failed; backing off");
    assert!(warning.contains("WARN"), "{warning}");

    // Descriptors come back: the gateway serves a real client again.
    drop(held);
    let addr: std::net::SocketAddr = ws.parse().unwrap();
    let (c, r) = Client::login(addr, &default_token(4242, Some(1))).await;
    assert_eq!(r.user_id, 4242);
    drop(c);

    // SAFETY: plain kill(2) of the child we spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}
