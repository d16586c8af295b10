//! One connection: the upgrade, the AUTH exchange, and packets both ways. No reconnects
//! and no timers here: [`crate::Client`] adds those. Load tests that want one socket
//! per measurement (`loadtest`) use this layer directly, on a TCP stream they made
//! themselves ([`Connection::open_on`]).

use crate::error::ConnectError;
use crate::proto::{
    Ack, AuthRequest, AuthResult, Command, Error as ErrorMsg, Header, Kick, Packet, PushMsg, UpstreamMsg,
    UpstreamResult,
};
use crate::Position;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, http::Uri, Message};
use tokio_tungstenite::WebSocketStream;

/// How the token travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenTransport {
    /// In the first AUTH packet (default): out of URLs and logs, and a refused token is
    /// a 4001 close.
    #[default]
    Auth,
    /// As `?token=` at the upgrade: a refused token is an HTTP 401.
    Query,
}

/// What one attempt needs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `ws://host:port/path`.
    pub url: String,
    pub token: String,
    pub transport: TokenTransport,
    /// Platform (1 iOS, 2 Android, 3 web, ...); the token's claim wins. 0: none.
    pub platform: i32,
    pub device_id: String,
    /// `Header.client_id` on every packet.
    pub client_id: String,
    /// Resume from here (reliable delivery); `None` or seq 0: no replay.
    pub resume: Option<Position>,
    /// tungstenite's buffers and limits.
    pub ws_config: WebSocketConfig,
}

impl ConnectOptions {
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            transport: TokenTransport::default(),
            platform: 0,
            device_id: String::new(),
            client_id: "im-gateway-rust".into(),
            resume: None,
            ws_config: default_ws_config(),
        }
    }

    /// The upgrade URL: the token, platform, device and position in the query when the
    /// token travels there.
    fn request_url(&self) -> String {
        if self.transport == TokenTransport::Auth {
            return self.url.clone();
        }
        let mut url = self.url.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        let mut add = |k: &str, v: &str| {
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.push_str(&encode(v));
            sep = '&';
        };
        add("token", &self.token);
        if self.platform != 0 {
            add("platform", &self.platform.to_string());
        }
        if !self.device_id.is_empty() {
            add("device_id", &self.device_id);
        }
        if let Some(p) = self.resume.as_ref().filter(|p| p.last_seq > 0) {
            add("last_seq", &p.last_seq.to_string());
            add("epoch", &p.epoch);
        }
        url
    }
}

/// Small buffers: a client holds one connection, a load test tens of thousands.
pub fn default_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Percent-encodes a query value (unreserved characters pass).
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `host:port` of a `ws://` URL.
pub fn authority(url: &str) -> Result<(String, u16), ConnectError> {
    let uri: Uri = url.parse().map_err(|e| ConnectError::Url(format!("{url}: {e}")))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => return Err(ConnectError::Url(format!("{url}: wss is not supported yet"))),
        _ => return Err(ConnectError::Url(format!("{url}: not a ws:// URL"))),
    }
    let host = uri.host().ok_or_else(|| ConnectError::Url(format!("{url}: no host")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok((host, uri.port_u16().unwrap_or(80)))
}

/// A packet from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Push(PushMsg),
    /// The answer to our HEARTBEAT `seq`.
    Heartbeat {
        seq: i64,
    },
    /// The answer to our UPSTREAM `seq`.
    Upstream {
        seq: i64,
        result: UpstreamResult,
    },
    /// ERROR, answering our request `seq` (0: not an answer).
    Error {
        seq: i64,
        error: ErrorMsg,
    },
    Kick {
        reason: String,
    },
    /// AUTH after the first (not sent by the gateway today).
    Auth(AuthResult),
    /// A command this client does not know (a later protocol version).
    Other {
        command: i32,
    },
}

/// How a connection ended, seen from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The server's close code; 1006 when the socket went without one.
    pub code: u16,
    pub reason: String,
    /// What went wrong locally, when it was not a clean close: a socket error, a frame
    /// that is not a packet, a text frame.
    pub error: Option<String>,
}

impl Closed {
    fn abnormal(error: impl Into<String>) -> Self {
        Self { code: crate::backoff::close::ABNORMAL, reason: String::new(), error: Some(error.into()) }
    }
}

/// When the steps of an open finished.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    /// The upgrade (101) arrived.
    pub upgraded: Instant,
    /// The AUTH result arrived.
    pub authed: Instant,
}

/// An authenticated connection.
pub struct Connection {
    ws: WebSocketStream<TcpStream>,
    next_seq: i64,
    client_id: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("next_seq", &self.next_seq).finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects over TCP, upgrades and authenticates (no timeout: wrap it in one).
    pub async fn open(o: &ConnectOptions) -> Result<(Self, AuthResult, Opened), ConnectError> {
        let (host, port) = authority(&o.url)?;
        let stream = TcpStream::connect((host.as_str(), port)).await.map_err(ConnectError::Io)?;
        let _ = stream.set_nodelay(true);
        Self::open_on(stream, o).await
    }

    /// Upgrades and authenticates on a TCP stream the caller connected.
    pub async fn open_on(stream: TcpStream, o: &ConnectOptions) -> Result<(Self, AuthResult, Opened), ConnectError> {
        let (ws, _) = tokio_tungstenite::client_async_with_config(o.request_url(), stream, Some(o.ws_config))
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(resp) => ConnectError::Refused {
                    status: resp.status().as_u16(),
                    retry_after: resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(crate::backoff::retry_after_header),
                },
                tungstenite::Error::Io(e) => ConnectError::Io(e),
                other => ConnectError::Upgrade(other.to_string()),
            })?;
        let upgraded = Instant::now();
        let mut conn = Connection { ws, next_seq: 1, client_id: o.client_id.clone() };
        if o.transport == TokenTransport::Auth {
            let (last_seq, epoch) = match &o.resume {
                Some(p) if p.last_seq > 0 => (p.last_seq, p.epoch.clone()),
                _ => (0, String::new()),
            };
            let req = AuthRequest {
                token: o.token.clone(),
                platform: o.platform,
                device_id: o.device_id.clone(),
                last_seq,
                epoch,
            };
            let seq = conn.take_seq();
            conn.write(Command::Auth, seq, &req).await.map_err(|c| ConnectError::Closed(Box::new(c)))?;
        }
        loop {
            match conn.recv_packet().await {
                Ok((Command::Auth, _, body)) => {
                    let result = AuthResult::decode(body)
                        .map_err(|e| ConnectError::Protocol(format!("undecodable AuthResult: {e}")))?;
                    return Ok((conn, result, Opened { upgraded, authed: Instant::now() }));
                }
                Ok(_) => {} // nothing else comes before the AUTH result
                Err(closed) => {
                    return Err(match closed.error {
                        Some(e) if closed.code == crate::backoff::close::ABNORMAL => ConnectError::Protocol(e),
                        _ => ConnectError::Closed(Box::new(closed)),
                    })
                }
            }
        }
    }

    fn take_seq(&mut self) -> i64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// The next packet (pings are answered by tungstenite); `Err` when the connection
    /// is over. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn recv(&mut self) -> Result<Incoming, Closed> {
        let (command, seq, body) = self.recv_packet().await?;
        let bad = |what: &str, e: prost::DecodeError| Closed::abnormal(format!("undecodable {what}: {e}"));
        Ok(match command {
            Command::Push => Incoming::Push(PushMsg::decode(body).map_err(|e| bad("PushMsg", e))?),
            Command::Heartbeat => Incoming::Heartbeat { seq },
            Command::Upstream => {
                Incoming::Upstream { seq, result: UpstreamResult::decode(body).map_err(|e| bad("UpstreamResult", e))? }
            }
            Command::Error => Incoming::Error { seq, error: ErrorMsg::decode(body).map_err(|e| bad("Error", e))? },
            Command::Kick => Incoming::Kick { reason: Kick::decode(body).map_err(|e| bad("Kick", e))?.reason },
            Command::Auth => Incoming::Auth(AuthResult::decode(body).map_err(|e| bad("AuthResult", e))?),
            other => Incoming::Other { command: other as i32 },
        })
    }

    /// The next binary frame as (command, seq, body).
    async fn recv_packet(&mut self) -> Result<(Command, i64, Bytes), Closed> {
        loop {
            let msg = match self.ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(Closed::abnormal(e.to_string())),
                None => return Err(Closed::abnormal("connection closed")),
            };
            match msg {
                Message::Binary(b) => {
                    let packet = Packet::decode(b).map_err(|e| Closed::abnormal(format!("undecodable packet: {e}")))?;
                    let header = packet.header.ok_or_else(|| Closed::abnormal("packet without a header"))?;
                    let command = Command::try_from(header.command).unwrap_or(Command::Unspecified);
                    if command == Command::Unspecified {
                        // A command of a later protocol version: skip it.
                        continue;
                    }
                    return Ok((command, header.seq, packet.body));
                }
                Message::Text(_) => {
                    let _ = self.ws.close(Some(close_frame(crate::backoff::close::PROTOCOL_ERROR, "text frame"))).await;
                    return Err(Closed::abnormal("text frame from the server (expected one binary protobuf Packet)"));
                }
                Message::Close(frame) => {
                    let (code, reason) =
                        frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    return Err(Closed { code, reason, error: None });
                }
                _ => {} // ping, pong (answered by tungstenite), raw frames
            }
        }
    }

    async fn write(&mut self, command: Command, seq: i64, body: &impl prost::Message) -> Result<(), Closed> {
        let packet = Packet {
            header: Some(Header { command: command as i32, version: 1, client_id: self.client_id.clone(), seq }),
            body: body.encode_to_vec().into(),
        };
        self.ws.send(Message::binary(packet.encode_to_vec())).await.map_err(|e| Closed::abnormal(e.to_string()))
    }

    /// Sends HEARTBEAT; returns its seq (the server answers with the same).
    pub async fn heartbeat(&mut self) -> Result<i64, Closed> {
        let seq = self.take_seq();
        self.write(Command::Heartbeat, seq, &()).await?;
        Ok(seq)
    }

    /// Sends UPSTREAM; returns its seq (the answer, UPSTREAM or ERROR, has the same).
    pub async fn upstream(&mut self, msg: &UpstreamMsg) -> Result<i64, Closed> {
        let seq = self.take_seq();
        self.write(Command::Upstream, seq, msg).await?;
        Ok(seq)
    }

    /// Sends a cumulative ACK (everything up to `up_to_seq`).
    pub async fn ack(&mut self, up_to_seq: i64) -> Result<(), Closed> {
        let seq = self.take_seq();
        self.write(Command::Ack, seq, &Ack { up_to_seq, ..Default::default() }).await
    }

    /// The TCP stream under the WebSocket, for byte-level work past the handshake (a
    /// load test's raw round trips). Bytes tungstenite had read but not yet returned are
    /// lost: take it between exchanges.
    pub fn into_inner(self) -> TcpStream {
        self.ws.into_inner()
    }

    /// Sends a close frame with `code` (the server's answer is not awaited; `recv`
    /// returns it).
    pub async fn close(&mut self, code: u16, reason: &str) {
        let _ = self.ws.close(Some(close_frame(code, reason))).await;
    }
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame { code: CloseCode::from(code), reason: reason.to_string().into() }
}
