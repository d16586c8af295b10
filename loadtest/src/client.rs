//! One load-test client: a real WebSocket connection to the gateway, authenticated with a
//! token minted from the gateway's own key (at the upgrade, as `?token=`), from a chosen
//! 127.0.0.x source address. The protocol (upgrade, AUTH, packets) is the Rust client's
//! (`clients/rust`, its `Connection` layer); this file adds the source address, the
//! timings and the receipt bookkeeping a load test needs, and the raw HEARTBEAT frames
//! of the round-trip phases (byte-level, below any client).

use crate::hist::Hist;
use im_gateway::proto::{Command, Header, Packet};
use im_gateway_client::{ConnectError, ConnectOptions, Connection, Incoming, PushMsg, TokenTransport};
use prost::Message as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// An open, authenticated connection.
pub type Ws = Connection;

/// Why an attempt failed, as the storm report counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// TCP connect refused or reset.
    Refused,
    /// The upgrade was answered with this HTTP status (401, 503, ...).
    Status(u16),
    /// No answer within the timeout.
    Timeout,
    /// The socket closed before the AUTH result.
    Closed,
    /// Source address or ephemeral ports exhausted, or anything else local.
    Local,
}

impl Failure {
    /// Report key.
    pub fn key(self) -> String {
        match self {
            Failure::Refused => "refused".into(),
            Failure::Status(s) => format!("http_{s}"),
            Failure::Timeout => "timeout".into(),
            Failure::Closed => "closed".into(),
            Failure::Local => "local".into(),
        }
    }
}

/// A refused attempt, with the server's Retry-After (ms) when it sent one.
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    pub failure: Failure,
    pub retry_after_ms: Option<u64>,
}

impl From<Failure> for Refusal {
    fn from(failure: Failure) -> Self {
        Refusal { failure, retry_after_ms: None }
    }
}

/// Latencies of one successful open, microseconds from the start of the attempt.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub connect_us: u64,
    pub upgrade_us: u64,
    pub auth_us: u64,
}

/// Source address `i` of `n`: 127.0.0.2 ..= 127.0.0.(1+n).
pub fn source(i: u64, n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % u64::from(n.max(1))) as u8))
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: the load tester holds tens of thousands of connections too.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 << 10)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// A TCP connection from `source` to `target`. The source port is picked at connect
/// time (IP_BIND_ADDRESS_NO_PORT), so one source address serves every target.
pub async fn tcp(target: SocketAddr, source: IpAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option of the right size.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket.bind(&SocketAddr::new(source, 0).into())?;
    let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    socket.connect(target).await
}

/// Opens one connection and waits for its AUTH result. Returns the socket, the shard
/// that holds it and the latencies.
pub async fn open(
    target: SocketAddr,
    source: IpAddr,
    token: &str,
    timeout: Duration,
) -> Result<(Ws, u32, Timings), Refusal> {
    let start = Instant::now();
    let attempt = async {
        let stream = tcp(target, source).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset => Failure::Refused,
            _ => Failure::Local,
        })?;
        let _ = stream.set_nodelay(true);
        let connect_us = start.elapsed().as_micros() as u64;
        let mut o = ConnectOptions::new(format!("ws://{target}/ws"), token);
        o.transport = TokenTransport::Query;
        o.ws_config = ws_config();
        let (ws, auth, at) = Connection::open_on(stream, &o).await.map_err(|e| match e {
            ConnectError::Refused { status, retry_after } => {
                Refusal { failure: Failure::Status(status), retry_after_ms: retry_after.map(|d| d.as_millis() as u64) }
            }
            ConnectError::Io(_) | ConnectError::Closed(_) | ConnectError::Protocol(_) => Failure::Closed.into(),
            _ => Failure::Local.into(),
        })?;
        let upgrade_us = (at.upgraded - start).as_micros() as u64;
        let auth_us = (at.authed - start).as_micros() as u64;
        Ok((ws, auth.shard, Timings { connect_us, upgrade_us, auth_us }))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Timeout.into()),
    }
}

/// An encoded client packet with an empty body.
pub fn packet(command: Command, seq: i64) -> Vec<u8> {
    Packet {
        header: Some(Header { command: command as i32, version: 1, client_id: String::new(), seq }),
        body: Default::default(),
    }
    .encode_to_vec()
}

/// The HEARTBEAT request of the round-trip phases, as a client sends it on the wire: a
/// masked binary frame around a packet with `seq` 1 (the same bytes every time, so the
/// reply is the same every time too). The echo floor sends requests of this size.
pub fn heartbeat_request() -> Vec<u8> {
    im_gateway::ws::frame::client_frame(0x2, true, &packet(Command::Heartbeat, 1), [0x1f, 0x2e, 0x3d, 0x4c])
}

/// Whether `frame` (one whole server frame) is the HEARTBEAT reply to
/// [`heartbeat_request`].
pub fn is_heartbeat_reply(frame: &[u8]) -> bool {
    // A final binary frame, unmasked (a server frame), the length in the header.
    let (Some(&0x82), Some(&len)) = (frame.first(), frame.get(1)) else { return false };
    let header = match len {
        126 => 4,
        127 => 10,
        0..=125 => 2,
        _ => return false,
    };
    let Some(payload) = frame.get(header..) else { return false };
    Packet::decode(payload)
        .ok()
        .and_then(|p| p.header)
        .is_some_and(|h| h.command == Command::Heartbeat as i32 && h.seq == 1)
}

/// Microseconds since the Unix epoch (the clock `server_ts_us` uses).
pub fn now_us() -> i64 {
    im_gateway::packet::now_us()
}

/// Where receipts of PUSH frames are counted: per shard, a latency histogram
/// (`server_ts_us` to receipt) and a count; plus the wall clock of the last receipt of
/// each tracked message.
pub struct Receipts {
    pub per_shard: Vec<Mutex<Hist>>,
    pub received: AtomicU64,
    /// Only messages with `msg_id >= track_from` are recorded (earlier phases' stragglers
    /// are ignored).
    pub track_from: AtomicU64,
    /// Latest receipt wall clock (us) of a tracked message.
    pub last_receipt_us: AtomicU64,
}

impl Receipts {
    pub fn new(shards: usize) -> Arc<Self> {
        Arc::new(Receipts {
            per_shard: (0..shards.max(1)).map(|_| Mutex::new(Hist::new())).collect(),
            received: AtomicU64::new(0),
            track_from: AtomicU64::new(0),
            last_receipt_us: AtomicU64::new(0),
        })
    }

    /// Starts a new phase: messages from `msg_id` on count; histograms are cleared.
    pub fn reset(&self, msg_id: u64) {
        for h in &self.per_shard {
            *h.lock().unwrap() = Hist::new();
        }
        self.received.store(0, Ordering::SeqCst);
        self.last_receipt_us.store(0, Ordering::SeqCst);
        self.track_from.store(msg_id, Ordering::SeqCst);
    }

    fn record(&self, shard: u32, push: &PushMsg) {
        if (push.msg_id as u64) < self.track_from.load(Ordering::Relaxed) {
            return;
        }
        let now = now_us();
        let latency = (now - push.server_ts_us).max(0) as u64;
        let slot = (shard as usize).min(self.per_shard.len() - 1);
        self.per_shard[slot].lock().unwrap().record(latency);
        self.received.fetch_add(1, Ordering::Relaxed);
        self.last_receipt_us.fetch_max(now as u64, Ordering::Relaxed);
    }

    /// All shards merged.
    pub fn merged(&self) -> Hist {
        let mut all = Hist::new();
        for h in &self.per_shard {
            all.add(&h.lock().unwrap());
        }
        all
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Default)]
pub struct Ended {
    /// Close code from the server (1006: none, the socket just went).
    pub code: u16,
    /// The close reason (a 1001 carries `retry_after_ms=N`).
    pub reason: String,
    /// We ended it (stop signal).
    pub by_us: bool,
}

/// Keeps an open connection alive: heartbeats every `heartbeat` (first one at a random
/// point of the interval), records PUSH receipts, until `stop` flips or the server
/// closes.
pub async fn live(
    mut ws: Ws,
    shard: u32,
    heartbeat: Duration,
    receipts: Option<Arc<Receipts>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Ended {
    let mut next = tokio::time::Instant::now() + heartbeat.mul_f64(fastrand::f64());
    loop {
        tokio::select! {
            _ = stop.changed() => {
                ws.close(1000, "").await;
                return Ended { by_us: true, ..Default::default() };
            }
            _ = tokio::time::sleep_until(next) => {
                if let Err(c) = ws.heartbeat().await {
                    return Ended { code: c.code, reason: c.reason, by_us: false };
                }
                next += heartbeat;
            }
            m = ws.recv() => match m {
                Ok(Incoming::Push(push)) => {
                    if let Some(receipts) = &receipts {
                        receipts.record(shard, &push);
                    }
                }
                Ok(_) => {}
                Err(c) => return Ended { code: c.code, reason: c.reason, by_us: false },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_heartbeat_reply_is_recognised() {
        let reply = im_gateway::packet::empty(im_gateway::proto::Command::Heartbeat, 1);
        assert!(super::is_heartbeat_reply(&reply));
        let other = im_gateway::packet::empty(im_gateway::proto::Command::Heartbeat, 2);
        assert!(!super::is_heartbeat_reply(&other));
        assert!(!super::is_heartbeat_reply(&super::heartbeat_request()));
        assert!(!super::is_heartbeat_reply(&[0x82]));
    }
}
