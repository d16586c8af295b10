//! Cluster-mode helpers: a real redis-server (the suite's shared one, or one a test
//! starts and stops itself), gateway nodes pointed at it, and direct Redis reads to
//! check the contract's keys. Every test uses its own key prefix, so tests sharing one
//! redis-server never see each other's keys.

use super::*;
use std::io::{Read, Write};
use std::process::{Child, Stdio};

/// A redis-server for a test.
pub struct Redis {
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
    /// Its port.
    pub port: u16,
    /// The process, when this test started it (stopped on drop).
    child: Option<Child>,
}

impl Redis {
    /// The suite's server (`IM_GATEWAY_TEST_REDIS_URL`, started by `scripts/test.sh`), or one
    /// of this test's own when the variable is unset.
    pub fn shared() -> Self {
        match std::env::var("IM_GATEWAY_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => {
                let port = url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).unwrap_or(6379);
                Self { url, port, child: None }
            }
            _ => Self::own(),
        }
    }

    /// No server (yet) on `port`: a node pointed here finds Redis down.
    pub fn absent(port: u16) -> Self {
        Self { url: format!("redis://127.0.0.1:{port}/"), port, child: None }
    }

    /// A fresh redis-server of this test's own on a free port.
    pub fn own() -> Self {
        Self::start_on(free_port())
    }

    /// Starts redis-server on `port` (no persistence) and waits until it answers PING.
    pub fn start_on(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server could not start ({e}); scripts/test.sh installs it"));
        let r = Self { url: format!("redis://127.0.0.1:{port}/"), port, child: Some(child) };
        let deadline = std::time::Instant::now() + HANG;
        while !r.pings() {
            assert!(std::time::Instant::now() < deadline, "redis-server on {port} never answered PING");
            std::thread::yield_now();
        }
        r
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Kills the server this test started (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A synchronous connection for checking keys.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str()).unwrap().get_connection().unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A key prefix of this test's own.
pub fn prefix(test: &str) -> String {
    format!("imt-{}-{test}:", std::process::id())
}

/// Starts node `id` in cluster mode on `redis` with `prefix` (one shard, short sweep),
/// changed by `f`. Does not wait for Redis: see [`wait_ready`].
pub fn node(redis: &Redis, prefix: &str, id: &str, f: impl FnOnce(&mut Config)) -> Gateway {
    start(|c| {
        c.server.gateway_id = id.into();
        c.server.shards = 1;
        c.cluster.redis_url = Some(redis.url.clone());
        c.cluster.key_prefix = prefix.into();
        c.cluster.location_ttl_s = 30;
        c.cluster.sweep_interval_s = 1;
        c.cluster.reconnect_max_ms = 200;
        f(c);
    })
}

/// Starts node `id` and waits until it is connected to Redis.
pub async fn ready_node(redis: &Redis, prefix: &str, id: &str) -> Gateway {
    let gw = node(redis, prefix, id, |_| {});
    wait_ready(&gw).await;
    gw
}

/// Waits until `/readyz` says 200.
pub async fn wait_ready(gw: &Gateway) {
    wait_for(gw, "/readyz to turn ready", |status, _| status == 200, "/readyz").await;
}

/// Polls admin GET `path` until `ok(status, json)`; fails after [`HANG`].
pub async fn wait_for(
    gw: &Gateway,
    what: &str,
    mut ok: impl FnMut(u16, &serde_json::Value) -> bool,
    path: &str,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let (status, v) = get_json(gw, path).await;
        if ok(status, &v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw {what}: last {status} {v}");
        tokio::task::yield_now().await;
    }
}

/// `user`'s sessions as `gw`'s `/v1/online` lists them.
pub async fn sessions_of(gw: &Gateway, user: i64) -> Vec<serde_json::Value> {
    let (status, v) = get_json(gw, &format!("/v1/online?user_ids={user}")).await;
    assert_eq!(status, 200, "{v}");
    v["users"][0]["sessions"].as_array().cloned().unwrap_or_default()
}

/// Waits until `gw` lists exactly the gateways `expected` (sorted) for `user`.
pub async fn wait_sessions_on(gw: &Gateway, user: i64, expected: &[&str]) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let sessions = sessions_of(gw, user).await;
        let mut on: Vec<String> = sessions.iter().map(|s| s["gateway_id"].as_str().unwrap_or("").to_string()).collect();
        on.sort();
        if on == expected {
            return sessions;
        }
        assert!(tokio::time::Instant::now() < deadline, "user {user}: sessions on {on:?}, expected {expected:?}");
        tokio::task::yield_now().await;
    }
}

/// Polls `check` against Redis until it holds; fails after [`HANG`].
pub async fn wait_redis(redis: &Redis, what: &str, mut check: impl FnMut(&mut redis::Connection) -> bool) {
    let deadline = tokio::time::Instant::now() + HANG;
    let mut conn = redis.conn();
    loop {
        if check(&mut conn) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw {what} in redis");
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval, not a wait stand-in
    }
}

/// Admin push of `content` to `users` through `gw`; returns the JSON answer.
pub async fn push_to(gw: &Gateway, users: &[i64], content: &str) -> serde_json::Value {
    let body = serde_json::json!({ "user_ids": users, "msg": { "msg_id": 1, "type": 1, "content": content } });
    let (status, v) = post_json(gw, "/v1/push", &body.to_string()).await;
    assert_eq!(status, 200, "{v}");
    v
}
