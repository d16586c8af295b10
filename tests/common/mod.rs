//! Shared helpers for the integration tests: a real gateway in-process on free ports,
//! a real WebSocket client (tokio-tungstenite) speaking our protobuf packets, and a
//! plain HTTP/1.1 client for the admin API. Waits are for events (a frame, a close, a
//! response); the timeouts here only stop a broken build from hanging CI.

#![allow(dead_code)]

pub mod cluster;

use futures_util::{SinkExt, StreamExt};
use im_gateway::config::Config;
use im_gateway::proto::{self, Command, Header, Packet};
use im_gateway::Gateway;
use prost::Message as _;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound on any single wait, so a broken gateway fails the test instead of hanging.
pub const HANG: Duration = Duration::from_secs(20);

/// A test config: loopback, port 0, two unpinned shards.
pub fn config() -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    c.server.shards = 2;
    c.server.pin_cores = false;
    c.server.gateway_id = "gw-test".into();
    c.server.shutdown_timeout_ms = 5000;
    c.server.drain_window_ms = 2000;
    c
}

/// Starts a gateway with the test config changed by `f`.
pub fn start(f: impl FnOnce(&mut Config)) -> Gateway {
    let mut c = config();
    f(&mut c);
    c.validate().expect("test config validates");
    Gateway::start(c).expect("gateway starts")
}

/// A token for `user` signed with the gateway's key.
pub fn token(gw: &Gateway, user: i64, platform: Option<i32>) -> String {
    im_gateway::auth::Minter::from_config(&gw.node().config.auth).unwrap().mint(user, platform, 3600)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Encodes a client packet.
pub fn packet(command: Command, seq: i64, body: &impl prost::Message) -> Vec<u8> {
    Packet {
        header: Some(Header { command: command as i32, version: 1, client_id: "test".into(), seq }),
        body: body.encode_to_vec().into(),
    }
    .encode_to_vec()
}

/// A WebSocket client.
#[derive(Debug)]
pub struct Client {
    pub ws: Ws,
}

/// How a connection attempt ended.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // short-lived test values; boxing buys nothing
pub enum Dial {
    Ok(Client),
    /// HTTP status instead of an upgrade, with headers and body.
    Refused {
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
}

impl Client {
    /// Connects to `/ws`, with `?token=` when given.
    pub async fn dial(addr: SocketAddr, token: Option<&str>) -> Dial {
        let url = match token {
            Some(t) => format!("ws://{addr}/ws?token={t}"),
            None => format!("ws://{addr}/ws"),
        };
        Self::dial_url(&url).await
    }

    /// Connects to `/ws` (with `?token=` when given) carrying `Origin: origin`, as a
    /// browser page on that origin would.
    pub async fn dial_from_origin(addr: SocketAddr, token: Option<&str>, origin: &str) -> Dial {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = match token {
            Some(t) => format!("ws://{addr}/ws?token={t}"),
            None => format!("ws://{addr}/ws"),
        };
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("origin", origin.parse().unwrap());
        Self::dial_request(request).await
    }

    /// Connects to any URL.
    pub async fn dial_url(url: &str) -> Dial {
        Self::dial_request(url).await
    }

    async fn dial_request(
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin + std::fmt::Debug,
    ) -> Dial {
        use tokio_tungstenite::tungstenite::Error;
        let url = format!("{request:?}");
        match tokio::time::timeout(HANG, tokio_tungstenite::connect_async(request)).await.expect("dial hung") {
            Ok((ws, _)) => Dial::Ok(Client { ws }),
            Err(Error::Http(resp)) => Dial::Refused {
                status: resp.status().as_u16(),
                retry_after: resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()),
                body: resp.body().as_ref().map(|b| String::from_utf8_lossy(b).to_string()).unwrap_or_default(),
            },
            Err(e) => panic!("dial {url}: {e}"),
        }
    }

    /// Connects with a token and returns the client and its AuthResult.
    pub async fn login(addr: SocketAddr, token: &str) -> (Client, proto::AuthResult) {
        let Dial::Ok(mut c) = Self::dial(addr, Some(token)).await else { panic!("login refused") };
        let p = c.recv().await;
        assert_eq!(p.header.as_ref().unwrap().command, Command::Auth as i32, "first frame is AUTH");
        assert_eq!(p.header.as_ref().unwrap().seq, 0);
        let r = proto::AuthResult::decode(p.body).unwrap();
        (c, r)
    }

    /// Logs in until the connection lands on `shard` (the kernel picks the shard).
    pub async fn login_on_shard(
        gw: &Gateway,
        user: i64,
        platform: Option<i32>,
        shard: u32,
    ) -> (Client, proto::AuthResult) {
        for _ in 0..500 {
            let t = token(gw, user, platform);
            let (mut c, r) = Self::login(gw.ws_addr(), &t).await;
            if r.shard == shard {
                return (c, r);
            }
            // Wrong shard: leave cleanly (with platform-less multi-login this could
            // otherwise kick the session we keep) and wait for the server to drop it.
            c.ws.close(None).await.ok();
            while let Some(Ok(_)) = c.ws.next().await {}
        }
        panic!("never landed on shard {shard}");
    }

    /// Sends a packet.
    pub async fn send(&mut self, command: Command, seq: i64, body: &impl prost::Message) {
        self.ws.send(Message::binary(packet(command, seq, body))).await.unwrap();
    }

    /// Sends a raw message.
    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// Next packet (skipping pings/pongs); panics on close.
    pub async fn recv(&mut self) -> Packet {
        loop {
            let m = tokio::time::timeout(HANG, self.ws.next())
                .await
                .expect("no frame within the hang guard")
                .expect("stream ended")
                .expect("ws error");
            match m {
                Message::Binary(b) => return Packet::decode(b).expect("server packet decodes"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a packet, got {other:?}"),
            }
        }
    }

    /// Next packet, or the close that came instead.
    pub async fn recv_or_close(&mut self) -> Result<Packet, (u16, String)> {
        loop {
            let m = tokio::time::timeout(HANG, self.ws.next()).await.expect("no frame within the hang guard");
            match m {
                Some(Ok(Message::Binary(b))) => return Ok(Packet::decode(b).expect("server packet decodes")),
                Some(Ok(Message::Close(Some(f)))) => return Err((u16::from(f.code), f.reason.to_string())),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return Err((0, String::new())),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Reads until the server's close frame and returns its code and reason, skipping
    /// packets.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.recv_or_close().await {
                Ok(_) => continue,
                Err(c) => return c,
            }
        }
    }

    /// Next PUSH body.
    pub async fn push(&mut self) -> proto::PushMsg {
        let p = self.recv().await;
        assert_eq!(p.header.as_ref().unwrap().command, Command::Push as i32, "{p:?}");
        proto::PushMsg::decode(p.body).unwrap()
    }

    /// The next thing the server sends must be a close frame: returns code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        match self.recv_or_close().await {
            Err(c) => c,
            Ok(p) => panic!("expected a close, got a packet: {p:?}"),
        }
    }

    /// Authenticates an upgraded connection with an AUTH packet and returns the
    /// AuthResult, which must answer with the same `seq`.
    pub async fn auth(&mut self, token: &str, platform: i32, seq: i64) -> proto::AuthResult {
        let req =
            proto::AuthRequest { token: token.into(), platform, device_id: "test-device".into(), ..Default::default() };
        self.send(Command::Auth, seq, &req).await;
        let p = self.recv().await;
        let h = p.header.as_ref().unwrap();
        assert_eq!(h.command, Command::Auth as i32, "{p:?}");
        assert_eq!(h.seq, seq);
        proto::AuthResult::decode(p.body).unwrap()
    }

    /// A HEARTBEAT round trip: the answer is a HEARTBEAT with the same `seq`.
    pub async fn heartbeat(&mut self, seq: i64) {
        self.send(Command::Heartbeat, seq, &()).await;
        let p = self.recv().await;
        let h = p.header.unwrap();
        assert_eq!(h.command, Command::Heartbeat as i32, "answer to HEARTBEAT {seq}");
        assert_eq!(h.seq, seq);
    }

    /// Expects a KICK packet then close 4003; returns the kick reason.
    pub async fn kicked(&mut self) -> String {
        let p = self.recv_or_close().await.expect("a KICK packet before the close");
        assert_eq!(p.header.as_ref().unwrap().command, Command::Kick as i32, "{p:?}");
        let kick = proto::Kick::decode(p.body).unwrap();
        let (code, _) = self.expect_close().await;
        assert_eq!(code, 4003, "KICK is followed by close 4003");
        kick.reason
    }
}

/// `/v1/stats` as JSON.
pub async fn stats(gw: &Gateway) -> serde_json::Value {
    let (status, v) = get_json(gw, "/v1/stats").await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Open connections per shard, from `/v1/stats`.
pub async fn shard_connections(gw: &Gateway) -> Vec<u64> {
    stats(gw).await["shards"]
        .as_array()
        .expect("stats has a shards array")
        .iter()
        .map(|s| s["connections"].as_u64().unwrap())
        .collect()
}

/// Waits until `/v1/stats` counts `n` open connections in total.
pub async fn wait_connections(gw: &Gateway, n: u64) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let per_shard = shard_connections(gw).await;
        if per_shard.iter().sum::<u64>() == n {
            return per_shard;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {n} connections (have {per_shard:?})");
        tokio::task::yield_now().await;
    }
}

/// An upgraded but unauthenticated connection that landed on `shard`, found by
/// watching the per-shard connection counts (the gateway must have no other
/// connections coming or going meanwhile). Useful to log in on a chosen shard without
/// a throw-away login displacing a session the test keeps.
pub async fn open_on_shard(gw: &Gateway, shard: usize) -> Client {
    for _ in 0..500 {
        let before = shard_connections(gw).await;
        let total: u64 = before.iter().sum();
        let Dial::Ok(c) = Client::dial(gw.ws_addr(), None).await else { panic!("upgrade without token refused") };
        let after = wait_connections(gw, total + 1).await;
        if after[shard] == before[shard] + 1 {
            return c;
        }
        drop(c);
        wait_connections(gw, total).await;
    }
    panic!("never landed on shard {shard}");
}

/// A port that was free a moment ago (bind 127.0.0.1:0 and let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Close code as a number.
pub fn code(c: CloseCode) -> u16 {
    u16::from(c)
}

/// A minimal HTTP/1.1 exchange with the admin API: returns status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    bearer: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(HANG, s.read_to_end(&mut out)).await.expect("admin hung").unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Admin GET returning JSON.
pub async fn get_json(gw: &Gateway, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http(gw.admin_addr(), "GET", path, None, None).await;
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// Admin POST of JSON.
pub async fn post_json(gw: &Gateway, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, body) = http(gw.admin_addr(), "POST", path, Some(body), None).await;
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// Waits until `/v1/online` shows `user` with `n` sessions (events reach the directory
/// through the shards; the admin API is how an outsider observes them).
pub async fn wait_online(gw: &Gateway, user: i64, n: usize) {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let (_, v) = get_json(gw, &format!("/v1/online?user_ids={user}")).await;
        let got = v["users"][0]["sessions"].as_array().map_or(0, Vec::len);
        if got == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "user {user} never had {n} sessions (has {got})");
        tokio::task::yield_now().await;
    }
}

/// The `im-gateway` binary, run from the crate root (so it reads the shipped
/// `config/gateway.toml`), unpinned, logging at `info` whatever the caller's env says.
pub fn binary(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_im-gateway"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env("IMGW_SERVER_PIN_CORES", "false")
        .env("IMGW_LOG_LEVEL", "info");
    cmd
}

/// Runs `cmd` to its end (bounded by [`HANG`]; a process still running then is killed
/// and the test fails) and returns its output.
pub async fn run_to_end(mut cmd: std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn im-gateway");
    let pid = child.id() as libc::pid_t;
    let waited = tokio::time::timeout(HANG, tokio::task::spawn_blocking(move || child.wait_with_output())).await;
    match waited {
        Ok(out) => out.unwrap().unwrap(),
        Err(_) => {
            // SAFETY: plain kill(2) of the child we spawned.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("im-gateway did not exit");
        }
    }
}

/// Mints a token with the built-in default key (what the binary uses with the shipped
/// config).
pub fn default_token(user: i64, platform: Option<i32>) -> String {
    im_gateway::auth::Minter::from_config(&Config::default().auth).unwrap().mint(user, platform, 3600)
}

/// Mints a token with an HS256 `secret` of our choosing (a configured secret, a rotated
/// one, or one nobody configured).
pub fn token_signed_with(secret: &str, user: i64, platform: Option<i32>) -> String {
    let auth = im_gateway::config::AuthConfig { jwt_secret: secret.into(), ..Default::default() };
    im_gateway::auth::Minter::from_config(&auth).unwrap().mint(user, platform, 3600)
}

/// Parses the `retry_after_ms=N` of a 1001 close reason.
pub fn retry_after_ms(reason: &str) -> u64 {
    let (_, rest) = reason.split_once("retry_after_ms=").unwrap_or_else(|| panic!("no retry_after_ms in {reason:?}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no number after retry_after_ms= in {reason:?}"))
}

/// A gateway binary running in the background, its stderr followed line by line.
/// Killed (SIGKILL) on drop unless it has exited.
pub struct Running {
    pub child: std::process::Child,
    pub pid: libc::pid_t,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Every stderr line read so far.
    pub log: Vec<String>,
}

impl Running {
    /// Spawns `cmd` with stderr piped and waits for its "im-gateway started" line.
    pub async fn start(mut cmd: std::process::Command) -> Self {
        use std::io::BufRead;
        let mut child =
            cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
        let pid = child.id() as libc::pid_t;
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut running = Self { child, pid, lines, log: Vec::new() };
        running.wait_for_line("im-gateway started").await;
        running
    }

    /// Reads stderr until a line contains `text`; panics (with the log) if the process
    /// ends first.
    pub async fn wait_for_line(&mut self, text: &str) -> String {
        loop {
            let line = self.next_line(text).await;
            if line.contains(text) {
                return line;
            }
        }
    }

    /// The next stderr line; panics (with the log, saying it was `waiting_for`) if none
    /// comes in time or the process ends.
    pub async fn next_line(&mut self, waiting_for: &str) -> String {
        let line = tokio::time::timeout(HANG, self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no line with {waiting_for:?} in time:\n{}", self.log.join("\n")));
        let Some(line) = line else { panic!("im-gateway ended before {waiting_for:?}:\n{}", self.log.join("\n")) };
        self.log.push(line.clone());
        line
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: plain kill(2) of the child we spawned.
        assert_eq!(unsafe { libc::kill(self.pid, libc::SIGTERM) }, 0);
    }

    /// True while the process has not exited.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the exit (bounded by [`HANG`]) and returns the status and the whole
    /// log. The end of stderr is the event: it closes when the process exits.
    pub async fn exit(mut self) -> (std::process::ExitStatus, Vec<String>) {
        loop {
            let line = tokio::time::timeout(HANG, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("did not exit:\n{}", self.log.join("\n")));
            match line {
                Some(line) => self.log.push(line),
                None => break,
            }
        }
        let status = self.child.wait().expect("wait");
        (status, std::mem::take(&mut self.log))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: plain kill(2) of the child we spawned.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}
