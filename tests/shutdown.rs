//! Graceful shutdown: draining closes every client with 1001 and a `retry_after_ms`
//! within the drain window, refuses new connections, and ends; SIGTERM does the same
//! for the real binary, which then exits successfully.

mod common;
use common::*;
use std::io::BufRead;
use std::process::Stdio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_everyone_with_1001_and_refuses_newcomers() {
    let gw = start(|cfg| cfg.server.drain_window_ms = 3000);
    let (a, _) = Client::login_on_shard(&gw, 1, Some(1), 0).await;
    let (b, _) = Client::login_on_shard(&gw, 2, Some(1), 1).await;
    let Dial::Ok(unauthed) = Client::dial(gw.ws_addr(), None).await else { panic!("upgrade without token refused") };
    let mut clients = [a, b, unauthed];
    wait_connections(&gw, 3).await;

    gw.shutdown();
    // Draining is visible at once: not ready any more.
    let (status, body) = http(gw.admin_addr(), "GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "{body}");

    for c in &mut clients {
        let (code, reason) = c.closed().await;
        assert_eq!(code, 1001, "{reason}");
        let retry = retry_after_ms(&reason);
        assert!(retry <= 3000, "retry_after_ms={retry} outside the drain window");
    }

    // A newcomer is refused: 503 with Retry-After while the shard still answers, or no
    // connection at all once its listener is closed.
    let url = format!("ws://{}/ws?token={}", gw.ws_addr(), token(&gw, 3, Some(1)));
    match tokio::time::timeout(HANG, tokio_tungstenite::connect_async(url)).await.expect("dial hung") {
        Ok(_) => panic!("upgraded during drain"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503);
            assert!(resp.headers().contains_key("retry-after"));
        }
        Err(_) => {} // refused or reset: the listener is gone.
    }

    drop(clients);
    tokio::time::timeout(HANG, tokio::task::spawn_blocking(move || gw.wait()))
        .await
        .expect("gateway did not stop")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_successfully() {
    let (ws_port, admin_port) = (free_port(), free_port());
    let ws = format!("127.0.0.1:{ws_port}");
    let admin = format!("127.0.0.1:{admin_port}");
    let mut cmd = binary(&["--listen", &ws, "--admin", &admin, "--shards", "2"]);
    cmd.env("IMGW_SERVER_DRAIN_WINDOW_MS", "1000");
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn im-gateway");
    let pid = child.id() as libc::pid_t;
    let kill_guard = KillOnDrop(pid);

    // Follow the log until the gateway says it runs.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    loop {
        let line = tokio::time::timeout(HANG, lines.recv())
            .await
            .expect("no start-up line")
            .unwrap_or_else(|| panic!("im-gateway exited during start-up:\n{}", log.join("\n")));
        let started = line.contains("im-gateway started");
        log.push(line);
        if started {
            break;
        }
    }
    let admin_addr = admin.parse().unwrap();
    assert_eq!(http(admin_addr, "GET", "/healthz", None, None).await.0, 200);

    let (mut c, r) = Client::login(ws.parse().unwrap(), &default_token(1001, Some(3))).await;
    assert_eq!(r.user_id, 1001);
    c.heartbeat(1).await;

    // SAFETY: plain kill(2) of the child we spawned.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (code, reason) = c.closed().await;
    assert_eq!(code, 1001, "{reason}");
    assert!(retry_after_ms(&reason) <= 1000, "{reason}");
    drop(c);

    let status = tokio::time::timeout(HANG, tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("im-gateway did not exit after SIGTERM")
        .unwrap()
        .unwrap();
    std::mem::forget(kill_guard);
    assert!(status.success(), "exit status {status}");
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(libc::pid_t);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of the child we spawned.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}
