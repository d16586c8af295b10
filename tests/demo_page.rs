//! The example chat page (`/demo/`, examples/web/) in a real browser: one headless
//! Chromium, two tabs (users 61 and 62), driven over the DevTools protocol. Each tab
//! connects with the JavaScript client and a demo token, and a message typed in one
//! arrives in the other, both ways, through UPSTREAM in embedded mode. A screenshot
//! lands in `target/demo.png`.
//!
//! Chromium is Debian's `chromium` (scripts/test.sh installs it when missing). Without it
//! this test fails: it never skips.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tokio_tungstenite::tungstenite::Message;

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
    panic!("chromium not found on PATH (nor $CHROMIUM); scripts/test.sh installs it: apt-get install -y chromium");
}

/// A headless Chromium with the DevTools protocol on a free port; killed on drop.
struct Browser {
    child: std::process::Child,
    profile: PathBuf,
    devtools: String,
}

impl Browser {
    fn start() -> Self {
        let profile = std::env::temp_dir().join(format!("imgw-demo-chromium-{}", std::process::id()));
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=900,700",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", chromium()));
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr.
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let devtools = rx.recv_timeout(HANG).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("chromium never said where its DevTools listen");
        });
        Browser { child, profile, devtools }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A DevTools-protocol session over one WebSocket (browser-level, with page sessions
/// addressed by `sessionId`).
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Cdp {
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(HANG, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("devtools open")
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab; returns the tab's session id.
    async fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({ "url": url })).await["targetId"].clone();
        let attached = self.call(None, "Target.attachToTarget", json!({ "targetId": target, "flatten": true })).await;
        attached["sessionId"].as_str().unwrap().to_string()
    }

    /// Evaluates `expr` in a tab, awaiting a promise; returns its value (JSON).
    async fn eval(&mut self, session: &str, expr: &str) -> Value {
        let r = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_chat_through_the_gateway() {
    let browser = Browser::start();
    // The shipped development secret (the test config's default): /demo/token mints.
    let gw = start(|_| {});
    let (ws, _) = tokio_tungstenite::connect_async(browser.devtools.as_str()).await.expect("devtools");
    let mut cdp = Cdp { ws, next_id: 0 };
    let page =
        |me: i64, to: i64| format!("http://{}/demo/?user={me}&to={to}&ws=ws://{}/ws", gw.admin_addr(), gw.ws_addr());
    let a = cdp.open(&page(61, 62)).await;
    let b = cdp.open(&page(62, 61)).await;
    // Each tab's client connects (window.demoReady resolves with the AuthResult); the
    // page may still be loading when we first ask, so ask until it exists.
    for (tab, user) in [(&a, 61), (&b, 62)] {
        let deadline = tokio::time::Instant::now() + HANG;
        let who = loop {
            let v = cdp.eval(tab, "window.demoReady ? window.demoReady.then((s) => String(s.userId)) : null").await;
            if !v.is_null() {
                break v;
            }
            assert!(tokio::time::Instant::now() < deadline, "the page never started its client");
            tokio::task::yield_now().await;
        };
        assert_eq!(who, json!(user.to_string()));
    }
    wait_online(&gw, 61, 1).await;
    wait_online(&gw, 62, 1).await;

    // A types, B receives; then B answers.
    let bus = cdp.eval(&a, "demo.send('hello from 61')").await;
    assert!(bus.as_str().unwrap().starts_with("local-"), "{bus}");
    let got = cdp.eval(&b, "demo.waitFor('hello from 61')").await;
    assert_eq!(got["from"], json!("61"));
    cdp.eval(
        &b,
        "document.getElementById('text').value = 'hi 61, 62 here'; document.getElementById('send').click(); true",
    )
    .await;
    let got = cdp.eval(&a, "demo.waitFor('hi 61, 62 here')").await;
    assert_eq!(got["from"], json!("62"));
    // What a person sees: both lines in A's log, and the state badge.
    let text = cdp.eval(&a, "document.getElementById('log').textContent").await;
    let text = text.as_str().unwrap();
    assert!(text.contains("hello from 61") && text.contains("62: hi 61, 62 here"), "{text}");
    let state = cdp.eval(&a, "document.getElementById('state').className").await;
    assert_eq!(state, json!("connected"));

    // The screenshot, for people.
    let shot = cdp.call(Some(&a), "Page.captureScreenshot", json!({ "format": "png" })).await;
    let png = decode_base64(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG"));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("demo.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();

    let _ = cdp.call(None, "Browser.close", json!({})).await;
    drop(browser);
    gw.stop();
}

/// Standard base64 (what DevTools returns screenshots in).
fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    bytes
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().enumerate().fold(0u32, |n, (i, &v)| n | (u32::from(v) << (18 - 6 * i)));
            let b = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            b.into_iter().take(c.len() - 1)
        })
        .collect()
}
