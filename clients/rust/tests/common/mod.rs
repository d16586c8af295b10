//! Shared helpers for the client's tests: the real gateway in-process on free ports,
//! tokens signed with its key, its admin API over plain HTTP/1.1, and waits for
//! client events. The timeouts only stop a broken build from hanging CI.

#![allow(dead_code)]

use im_gateway::config::Config as GwConfig;
use im_gateway::Gateway;
use im_gateway_client::{Client, Event, Events};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on any single wait.
pub const HANG: Duration = Duration::from_secs(20);

/// A gateway: loopback, one shard, `listen` (port 0: any), config changed by `f`.
pub fn gateway(listen: SocketAddr, f: impl FnOnce(&mut GwConfig)) -> Gateway {
    let mut c = GwConfig::default();
    c.server.listen = listen;
    c.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    c.server.shards = 1;
    c.server.pin_cores = false;
    c.server.gateway_id = "gw-rust".into();
    c.server.shutdown_timeout_ms = 5000;
    c.server.drain_window_ms = 800;
    f(&mut c);
    c.validate().expect("test config validates");
    Gateway::start(c).expect("gateway starts")
}

pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn url(gw: &Gateway) -> String {
    format!("ws://{}/ws", gw.ws_addr())
}

/// A token for `user` signed with the gateway's key.
pub fn token(gw: &Gateway, user: i64) -> String {
    im_gateway::auth::Minter::from_config(&gw.node().config.auth).unwrap().mint(user, None, 3600)
}

/// One HTTP/1.1 request to the admin API; (status, JSON body).
pub async fn admin(gw: &Gateway, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(gw.admin_addr()).await.unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(HANG, s.read_to_end(&mut out)).await.expect("admin answers").unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text[9..12].parse().unwrap();
    let json =
        text.split_once("\r\n\r\n").map(|(_, b)| serde_json::from_str(b).unwrap_or_default()).unwrap_or_default();
    (status, json)
}

/// Waits until `user` has `n` sessions (the gateway's own view).
pub async fn wait_online(gw: &Gateway, user: i64, n: usize) {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let (_, v) = admin(gw, "GET", &format!("/v1/online?user_ids={user}"), None).await;
        let got = v["users"][0]["sessions"].as_array().map_or(0, Vec::len);
        if got == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "user {user} never had {n} sessions (has {got})");
        tokio::task::yield_now().await;
    }
}

/// Every event of a client with the time it came out of the client: a task reads the
/// events as they come (so the times are the client's, not the test's), the test reads
/// them from here.
pub struct Recorder {
    rx: tokio::sync::mpsc::UnboundedReceiver<(tokio::time::Instant, Event)>,
    pub seen: Vec<(tokio::time::Instant, Event)>,
}

impl Recorder {
    pub fn new(mut events: Events) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if tx.send((tokio::time::Instant::now(), e)).is_err() {
                    return;
                }
            }
        });
        Self { rx, seen: Vec::new() }
    }

    /// Reads events until one matches; returns its index in `seen`.
    pub async fn until(&mut self, what: &str, f: impl Fn(&Event) -> bool) -> usize {
        loop {
            let (at, e) = tokio::time::timeout(HANG, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} in time; events: {:?}", self.names()))
                .unwrap_or_else(|| panic!("events ended before {what}: {:?}", self.seen));
            let hit = f(&e);
            self.seen.push((at, e));
            if hit {
                return self.seen.len() - 1;
            }
        }
    }

    /// True when the client's event stream ends with no further event.
    pub async fn ended(&mut self) -> bool {
        tokio::time::timeout(HANG, self.rx.recv()).await.expect("the event stream ends in time").is_none()
    }

    pub fn names(&self) -> Vec<String> {
        self.seen.iter().map(|(_, e)| format!("{e:?}").split([' ', '(', '{']).next().unwrap().to_string()).collect()
    }

    pub fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.seen.iter().filter(|(_, e)| f(e)).count()
    }
}

/// Starts a client and waits for `Connected`.
pub async fn connected(config: im_gateway_client::Config) -> (Client, Recorder, im_gateway_client::AuthResult) {
    let (c, events) = Client::connect(config);
    let mut rec = Recorder::new(events);
    let at = rec.until("Connected", |e| matches!(e, Event::Connected(_))).await;
    let Event::Connected(s) = &rec.seen[at].1 else { unreachable!() };
    let s = s.clone();
    (c, rec, s)
}
