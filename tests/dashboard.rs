//! The dashboard in a real browser: headless Chromium loads `/dashboard` of a gateway
//! under traffic (clients on both shards, a steady trickle of pushes) and the rendered
//! DOM must show each shard's figures as `/v1/stats` has them. A screenshot lands in
//! `target/dashboard.png`.
//!
//! Chromium is Debian's `chromium` (scripts/test.sh installs it when missing). Without it
//! this test fails: it never skips.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long one Chromium run may take before the test calls it hung.
const BROWSER_HANG: Duration = Duration::from_secs(90);

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "chromium not found on PATH (nor $CHROMIUM): the dashboard test needs a real browser. \
         scripts/test.sh installs it: apt-get update && apt-get install -y chromium"
    );
}

/// Runs headless Chromium on `url` with `extra` flags; returns its stdout.
async fn browse(url: &str, extra: &[&str]) -> String {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let profile = std::env::temp_dir().join(format!(
        "imgw-chromium-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {:?}: {e}", chromium()));
    let pid = child.id() as libc::pid_t;
    let waited =
        tokio::time::timeout(BROWSER_HANG, tokio::task::spawn_blocking(move || child.wait_with_output())).await;
    let _ = std::fs::remove_dir_all(&profile);
    let out = match waited {
        Ok(out) => out.unwrap().unwrap(),
        Err(_) => {
            // SAFETY: plain kill(2) of the child we spawned.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("chromium did not finish within {BROWSER_HANG:?}");
        }
    };
    assert!(out.status.success(), "chromium failed: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in a dumped DOM.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').expect("tag closes") + 1;
    let end = rest[start..].find('<').expect("text ends");
    &rest[start..start + end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_per_shard_figures_in_chromium() {
    let browser = chromium(); // fail first and loudly when there is no browser
    let gw = start(|_| {});
    // Clients on both shards (two on shard 0, one on shard 1), each read by its own task.
    let mut clients = vec![
        Client::login_on_shard(&gw, 31, Some(1), 0).await.0,
        Client::login_on_shard(&gw, 32, Some(1), 1).await.0,
        Client::login_on_shard(&gw, 33, Some(1), 0).await.0,
    ];
    wait_connections(&gw, 3).await;
    let received = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = clients
        .drain(..)
        .map(|mut c| {
            let received = received.clone();
            tokio::spawn(async move {
                while c.recv_or_close().await.is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Traffic for as long as the browser looks: a push to every user every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (stop, admin) = (stop.clone(), gw.admin_addr());
        tokio::spawn(async move {
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let body = format!(r#"{{"user_ids":[31,32,33],"msg":{{"msg_id":{id},"content":"dash"}}}}"#);
                let (status, _) = http(admin, "POST", "/v1/push", Some(&body), None).await;
                assert_eq!(status, 200);
                tokio::time::sleep(Duration::from_millis(20)).await; // pacing, not a wait
            }
        })
    };
    // Wait until both shards have push latencies to show.
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let v = stats(&gw).await;
        if v["shards"].as_array().unwrap().iter().all(|s| s["push_latency_us"]["recent"]["count"].as_u64() >= Some(3)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "pushes never delivered on both shards: {v}");
        tokio::task::yield_now().await;
    }

    let url = format!("http://{}/dashboard", gw.admin_addr());
    let dom = browse(&url, &["--dump-dom"]).await;
    let v = stats(&gw).await;
    assert!(text_of(&dom, "status").starts_with("live"), "the page got /v1/stats: {}", text_of(&dom, "status"));
    assert_eq!(text_of(&dom, "gateway"), "gw-test");
    assert_eq!(text_of(&dom, "shard-count"), "2");
    assert_eq!(text_of(&dom, "total-connections"), "3");
    for (i, s) in v["shards"].as_array().unwrap().iter().enumerate() {
        assert!(dom.contains(&format!("id=\"row-{i}\"")), "a row for shard {i}");
        let connections = s["connections"].as_u64().unwrap().to_string();
        assert_eq!(text_of(&dom, &format!("s{i}-connections")), connections, "shard {i} connections");
        assert_eq!(text_of(&dom, &format!("s{i}-users")), s["users"].as_u64().unwrap().to_string());
        let duration = |s: &str| s.ends_with("µs") || s.ends_with("ms") || s.ends_with(" s");
        // Pushes flow and the stall probe ticks while the browser looks: these have
        // recent values.
        for k in ["push-p50", "push-p99", "push-p999", "stall-max"] {
            let shown = text_of(&dom, &format!("s{i}-{k}"));
            assert!(duration(shown), "shard {i} {k}: {shown:?}");
        }
        // The handshakes were at the start: by now they may have left the recent window.
        let shown = text_of(&dom, &format!("s{i}-handshake-p99"));
        assert!(duration(shown) || shown == "–", "shard {i} handshake-p99: {shown:?}");
        assert!(dom.contains(&format!("id=\"chart-push-latency-{i}\"")), "a latency chart for shard {i}");
    }
    assert_eq!(&v["shards"][0]["connections"], 2, "{v}");
    assert_eq!(text_of(&dom, "nodes-body"), "single node (cluster mode off)");

    // The screenshot, for people.
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("dashboard.png");
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&png);
    browse(&url, &[&format!("--screenshot={}", png.display()), "--window-size=1280,900", "--hide-scrollbars"]).await;
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{} is not a real screenshot", png.display());

    stop.store(true, Ordering::Relaxed);
    pusher.await.unwrap();
    assert!(received.load(Ordering::Relaxed) >= 9, "clients read their pushes");
    gw.stop();
    for r in readers {
        r.await.unwrap();
    }
    let _ = browser;
}
