//! The client: one logical connection that survives disconnects, run by a driver task
//! on the caller's tokio runtime. The application holds a [`Client`] (cloneable: send,
//! close, state, position) and reads [`Event`]s from [`Events`].
//!
//! The driver owns everything about the socket: the token (fresh from the callback at
//! every attempt), the open (bounded by `connect_timeout`), heartbeats at the server's
//! interval (and a dead connection noticed when nothing comes back for two and a half
//! intervals), requests matched to answers by `seq`, the resume position (last
//! `PushMsg.seq` and epoch, sent again at every reconnect), batched cumulative ACKs,
//! and when to try again ([`crate::backoff`]). Every queue is bounded: the event queue
//! (`event_queue`; an application that stops reading stops the driver reading the
//! socket), the command queue, and the requests in flight.

use crate::backoff::{close, Backoff, BackoffConfig, Cause, Ending, Next};
use crate::conn::{Closed, ConnectOptions, Connection, Incoming, TokenTransport};
use crate::error::{ClientError, ConnectError, RequestError};
use crate::proto::{AuthResult, PushMsg, UpstreamMsg, UpstreamResult};
use crate::Position;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// A token, or a function that returns a fresh one (called before every attempt).
#[derive(Clone)]
pub enum Token {
    Fixed(String),
    Refresh(Arc<dyn Fn() -> TokenFuture + Send + Sync>),
}

impl Token {
    /// A token callback, e.g. `Token::refresh(|| async { Ok(fetch_token().await?) })`.
    pub fn refresh<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        Token::Refresh(Arc::new(move || Box::pin(f())))
    }

    async fn get(&self) -> Result<String, String> {
        let t = match self {
            Token::Fixed(t) => t.clone(),
            Token::Refresh(f) => f().await?,
        };
        if t.is_empty() {
            return Err("empty token".into());
        }
        Ok(t)
    }
}

impl From<String> for Token {
    fn from(t: String) -> Self {
        Token::Fixed(t)
    }
}

impl From<&str> for Token {
    fn from(t: &str) -> Self {
        Token::Fixed(t.to_string())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Token::Fixed(_) => "Token::Fixed(..)",
            Token::Refresh(_) => "Token::Refresh(..)",
        })
    }
}

/// Client settings; [`Config::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ws://host:port/ws`.
    pub url: String,
    pub token: Token,
    /// In the AUTH packet (default) or the upgrade query.
    pub transport: TokenTransport,
    /// Platform (1 iOS, 2 Android, 3 web, ...); the token's claim wins. 0: none.
    pub platform: i32,
    pub device_id: String,
    /// `Header.client_id` on every packet.
    pub client_id: String,
    /// Reconnect after a lost connection (default true). Never after 4001 or 4003.
    pub reconnect: bool,
    pub backoff: BackoffConfig,
    /// The upgrade plus the AUTH result must take no longer (default 10 s).
    pub connect_timeout: Duration,
    /// An UPSTREAM unanswered this long fails (default 10 s).
    pub request_timeout: Duration,
    /// Where a previous run stopped: pushes after it are replayed (reliable delivery).
    pub resume: Option<Position>,
    /// Acknowledge pushes that carry a `seq` with cumulative ACKs (default true) ...
    pub auto_ack: bool,
    /// ... this long after the first unacknowledged one (default 500 ms) ...
    pub ack_delay: Duration,
    /// ... or at once when this many are unacknowledged (default 64).
    pub ack_every: u32,
    /// Events the application has not read yet (default 1024); when full, the client
    /// stops reading the socket until there is room.
    pub event_queue: usize,
    /// Requests in flight (default 1024); beyond, `send` fails at once.
    pub max_in_flight: usize,
    /// tungstenite's buffers and limits.
    pub ws_config: WebSocketConfig,
}

impl Config {
    pub fn new(url: impl Into<String>, token: impl Into<Token>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            transport: TokenTransport::Auth,
            platform: 0,
            device_id: String::new(),
            client_id: "im-gateway-rust".into(),
            reconnect: true,
            backoff: BackoffConfig::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            resume: None,
            auto_ack: true,
            ack_delay: Duration::from_millis(500),
            ack_every: 64,
            event_queue: 1024,
            max_in_flight: 1024,
            ws_config: crate::conn::default_ws_config(),
        }
    }
}

/// Where the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connecting,
    Connected,
    Reconnecting,
    /// For good: closed by the application, 4001, 4003, or `reconnect: false`.
    Closed,
}

/// A connection (or an attempt) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The server's close code; 1006 when there was none (a failed attempt, a lost
    /// socket); 1000 when the application closed.
    pub code: u16,
    pub reason: String,
    /// The connection had been authenticated (false: a failed attempt).
    pub was_connected: bool,
    pub will_reconnect: bool,
    /// HTTP status of a refused upgrade.
    pub status: Option<u16>,
}

/// What the client reports, in order.
#[derive(Debug)]
pub enum Event {
    Connecting {
        /// Attempts since the client started.
        attempt: u64,
    },
    /// Authenticated: the server's AuthResult. `recovered` (after a resume) false means
    /// pushes were lost: resync from your backend.
    Connected(AuthResult),
    Disconnected(Disconnect),
    Reconnecting {
        delay: Duration,
        /// Failed attempts since the last stable connection.
        attempt: u32,
        cause: Cause,
    },
    Push(PushMsg),
    Kick {
        reason: String,
    },
    Heartbeat {
        rtt: Duration,
    },
    Error(ClientError),
}

/// An UPSTREAM message.
pub type Outgoing = UpstreamMsg;

enum Cmd {
    Upstream { msg: UpstreamMsg, reply: oneshot::Sender<Result<UpstreamResult, RequestError>> },
    Close,
}

#[derive(Debug, Clone)]
struct Snapshot {
    state: State,
    position: Position,
}

/// The application's handle (cheap to clone). Dropping every handle closes the client.
#[derive(Debug, Clone)]
pub struct Client {
    cmds: mpsc::Sender<Cmd>,
    snapshot: watch::Receiver<Snapshot>,
    request_timeout: Duration,
}

/// The event stream of one client.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client is closed and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Client {
    /// Starts the client on the current tokio runtime; it connects at once.
    pub fn connect(config: Config) -> (Client, Events) {
        let (cmd_tx, cmds) = mpsc::channel(64);
        let (events_tx, rx) = mpsc::channel(config.event_queue.max(1));
        let position = config.resume.clone().unwrap_or_default();
        let (snap_tx, snapshot) = watch::channel(Snapshot { state: State::Connecting, position: position.clone() });
        let request_timeout = config.request_timeout;
        let driver = Driver {
            backoff: Backoff::new(config.backoff.clone()),
            config,
            cmds,
            events: events_tx,
            snapshot: snap_tx,
            position,
        };
        tokio::spawn(driver.run());
        (Client { cmds: cmd_tx, snapshot, request_timeout }, Events { rx })
    }

    pub fn state(&self) -> State {
        self.snapshot.borrow().state
    }

    /// The resume position: keep it to resume in a later run ([`Config::resume`]).
    pub fn position(&self) -> Position {
        self.snapshot.borrow().position.clone()
    }

    /// Sends an UPSTREAM message; the server's UpstreamResult, or why not.
    pub async fn send(&self, msg: Outgoing) -> Result<UpstreamResult, RequestError> {
        if self.state() != State::Connected {
            return Err(RequestError::NotConnected);
        }
        let (reply, answer) = oneshot::channel();
        self.cmds.send(Cmd::Upstream { msg, reply }).await.map_err(|_| RequestError::Closed)?;
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RequestError::Closed),
            Err(_) => Err(RequestError::Timeout(self.request_timeout)),
        }
    }

    /// Closes for good (no reconnect); the event stream ends after `Disconnected`.
    pub async fn close(&self) {
        let _ = self.cmds.send(Cmd::Close).await;
    }
}

/// How one attempt ended.
enum AttemptEnd {
    /// The application closed the client (or dropped it, or its events).
    Stop,
    Ended {
        ending: Ending,
        was_connected: bool,
        lived: Duration,
    },
}

struct Driver {
    config: Config,
    backoff: Backoff,
    cmds: mpsc::Receiver<Cmd>,
    events: mpsc::Sender<Event>,
    snapshot: watch::Sender<Snapshot>,
    position: Position,
}

impl Driver {
    async fn run(mut self) {
        let mut attempts = 0u64;
        loop {
            attempts += 1;
            self.set_state(State::Connecting);
            if !self.emit(Event::Connecting { attempt: attempts }).await {
                break;
            }
            let (ending, was_connected, lived) = match self.attempt().await {
                AttemptEnd::Stop => break,
                AttemptEnd::Ended { ending, was_connected, lived } => (ending, was_connected, lived),
            };
            let next = match self.config.reconnect {
                true => self.backoff.decide(&ending, lived, matches!(self.config.token, Token::Fixed(_))),
                false => Next::Stop,
            };
            let (code, reason, status) = match &ending {
                Ending::Closed { code, reason } => (*code, reason.clone(), None),
                Ending::Refused { status, .. } => (close::ABNORMAL, String::new(), Some(*status)),
                Ending::Failed => (close::ABNORMAL, String::new(), None),
            };
            let will_reconnect = next != Next::Stop;
            let d = Disconnect { code, reason, was_connected, will_reconnect, status };
            if !self.emit(Event::Disconnected(d)).await {
                break;
            }
            let Next::After { delay, cause } = next else { break };
            self.set_state(State::Reconnecting);
            let attempt = self.backoff.attempt();
            if !self.emit(Event::Reconnecting { delay, attempt, cause }).await {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.closed_while_offline() => {
                    self.closed_by_app(false).await;
                    break;
                }
            }
        }
        self.set_state(State::Closed);
    }

    /// One attempt, and the session if it succeeds.
    async fn attempt(&mut self) -> AttemptEnd {
        let token = match self.config.token.get().await {
            Ok(t) => t,
            Err(e) => return self.failed(ConnectError::Token(e), Ending::Failed).await,
        };
        let o = ConnectOptions {
            url: self.config.url.clone(),
            token,
            transport: self.config.transport,
            platform: self.config.platform,
            device_id: self.config.device_id.clone(),
            client_id: self.config.client_id.clone(),
            resume: Some(self.position.clone()),
            ws_config: self.config.ws_config,
        };
        let timeout = self.config.connect_timeout;
        let opened = tokio::select! {
            r = tokio::time::timeout(timeout, Connection::open(&o)) => r,
            _ = self.closed_while_offline() => {
                self.closed_by_app(false).await;
                return AttemptEnd::Stop;
            }
        };
        match opened {
            Err(_) => self.failed(ConnectError::Timeout(timeout), Ending::Failed).await,
            Ok(Err(e)) => {
                let ending = match &e {
                    ConnectError::Refused { status, retry_after } => {
                        Ending::Refused { status: *status, retry_after: *retry_after }
                    }
                    ConnectError::Closed(c) => Ending::Closed { code: c.code, reason: c.reason.clone() },
                    _ => Ending::Failed,
                };
                self.failed(e, ending).await
            }
            Ok(Ok((conn, auth, _))) => self.session(conn, auth).await,
        }
    }

    async fn failed(&mut self, e: ConnectError, ending: Ending) -> AttemptEnd {
        if !self.emit(Event::Error(ClientError::Connect(e))).await {
            return AttemptEnd::Stop;
        }
        AttemptEnd::Ended { ending, was_connected: false, lived: Duration::ZERO }
    }

    /// Serves commands while there is no connection: requests fail at once; resolves
    /// when the application closes (or drops every handle).
    async fn closed_while_offline(&mut self) {
        loop {
            match self.cmds.recv().await {
                Some(Cmd::Upstream { reply, .. }) => {
                    let _ = reply.send(Err(RequestError::NotConnected));
                }
                Some(Cmd::Close) | None => return,
            }
        }
    }

    async fn closed_by_app(&mut self, was_connected: bool) {
        let d = Disconnect {
            code: close::NORMAL,
            reason: "client closed".into(),
            was_connected,
            will_reconnect: false,
            status: None,
        };
        self.set_state(State::Closed);
        self.emit(Event::Disconnected(d)).await;
    }

    async fn session(&mut self, mut conn: Connection, auth: AuthResult) -> AttemptEnd {
        if !auth.epoch.is_empty() && auth.epoch != self.position.epoch {
            // A new history lineage: positions of the old one mean nothing here.
            if !self.position.epoch.is_empty() {
                self.position.last_seq = 0;
            }
            self.position.epoch = auth.epoch.clone();
            self.publish_position();
        }
        let mut acked = self.position.last_seq;
        let interval = Duration::from_secs(match auth.heartbeat_interval_s {
            0 => 30,
            s => u64::from(s),
        });
        self.set_state(State::Connected);
        if !self.emit(Event::Connected(auth)).await {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(close::NORMAL, "client closed")).await;
            return AttemptEnd::Stop;
        }
        let connected_at = Instant::now();
        let mut last_rx = Instant::now();
        let mut next_beat = Instant::now() + interval;
        let mut beat: Option<(i64, Instant)> = None;
        let mut pending: HashMap<i64, oneshot::Sender<Result<UpstreamResult, RequestError>>> = HashMap::new();
        let mut ack_at: Option<Instant> = None;
        let mut unacked = 0u32;
        let closed: Closed = loop {
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(Cmd::Upstream { msg, reply }) => {
                        if pending.len() >= self.config.max_in_flight {
                            let _ = reply.send(Err(RequestError::Server { code: 0, message: "too many requests in flight".into() }));
                            continue;
                        }
                        match conn.upstream(&msg).await {
                            Ok(seq) => {
                                pending.insert(seq, reply);
                            }
                            Err(c) => {
                                let _ = reply.send(Err(RequestError::Disconnected));
                                break c;
                            }
                        }
                    }
                    Some(Cmd::Close) | None => {
                        if self.position.last_seq > acked {
                            let _ = conn.ack(self.position.last_seq).await;
                        }
                        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(close::NORMAL, "client closed")).await;
                        for (_, reply) in pending.drain() {
                            let _ = reply.send(Err(RequestError::Closed));
                        }
                        self.closed_by_app(true).await;
                        return AttemptEnd::Stop;
                    }
                },
                r = conn.recv() => {
                    let incoming = match r {
                        Ok(i) => i,
                        Err(c) => break c,
                    };
                    last_rx = Instant::now();
                    let event = match incoming {
                        Incoming::Push(p) => {
                            if p.seq > 0 {
                                // Within one epoch the server never sends a seq twice; a
                                // duplicate could only come from an overlapping replay.
                                if p.seq <= self.position.last_seq {
                                    continue;
                                }
                                self.position.last_seq = p.seq;
                                self.publish_position();
                                if self.config.auto_ack {
                                    unacked += 1;
                                    ack_at.get_or_insert(Instant::now() + self.config.ack_delay);
                                    if unacked >= self.config.ack_every {
                                        ack_at = Some(Instant::now());
                                    }
                                }
                            }
                            Event::Push(p)
                        }
                        Incoming::Heartbeat { seq } => match beat.take() {
                            Some((s, at)) if s == seq => Event::Heartbeat { rtt: at.elapsed() },
                            other => {
                                beat = other;
                                continue;
                            }
                        },
                        Incoming::Upstream { seq, result } => {
                            if let Some(reply) = pending.remove(&seq) {
                                let _ = reply.send(Ok(result));
                            }
                            continue;
                        }
                        Incoming::Error { seq, error } => match pending.remove(&seq) {
                            Some(reply) => {
                                let _ = reply.send(Err(RequestError::Server { code: error.code, message: error.message }));
                                continue;
                            }
                            None => Event::Error(ClientError::Server { code: error.code, message: error.message }),
                        },
                        Incoming::Kick { reason } => Event::Kick { reason },
                        Incoming::Auth(_) | Incoming::Other { .. } => continue,
                    };
                    if !self.emit(event).await {
                        return AttemptEnd::Stop;
                    }
                },
                _ = tokio::time::sleep_until(next_beat) => {
                    let silent = last_rx.elapsed();
                    if silent > interval.mul_f64(2.5) {
                        if !self.emit(Event::Error(ClientError::Dead(silent))).await {
                            return AttemptEnd::Stop;
                        }
                        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(close::NORMAL, "dead")).await;
                        break Closed { code: close::ABNORMAL, reason: String::new(), error: None };
                    }
                    match conn.heartbeat().await {
                        Ok(seq) => beat = Some((seq, Instant::now())),
                        Err(c) => break c,
                    }
                    next_beat += interval;
                },
                _ = tokio::time::sleep_until(ack_at.unwrap_or(next_beat)), if ack_at.is_some() => {
                    ack_at = None;
                    unacked = 0;
                    acked = self.position.last_seq;
                    if let Err(c) = conn.ack(acked).await {
                        break c;
                    }
                },
            }
        };
        for (_, reply) in pending.drain() {
            let _ = reply.send(Err(RequestError::Disconnected));
        }
        if let Some(e) = closed.error {
            if !self.emit(Event::Error(ClientError::Socket(e))).await {
                return AttemptEnd::Stop;
            }
        }
        AttemptEnd::Ended {
            ending: Ending::Closed { code: closed.code, reason: closed.reason },
            was_connected: true,
            lived: connected_at.elapsed(),
        }
    }

    /// Queues an event; false when the application dropped its `Events` (then the
    /// client stops).
    async fn emit(&self, event: Event) -> bool {
        self.events.send(event).await.is_ok()
    }

    fn set_state(&self, state: State) {
        self.snapshot.send_modify(|s| s.state = state);
    }

    fn publish_position(&self) {
        let p = self.position.clone();
        self.snapshot.send_modify(|s| s.position = p);
    }
}
