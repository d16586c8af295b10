//! What one core owns ([`Shard`]: its session table, metrics, log limiter, read scratch
//! buffer, handshake bucket; `Rc`, `RefCell`/`Cell`, no locks) and what it does with it:
//! binds sessions, applies what its inbox brings (pushes, broadcasts, kicks, answers,
//! stats requests) to its connections, and enforces their deadlines (the ticker).
//!
//! The shard's services (accept loop, ticker, stall probe, inbox) and its drain are
//! [`crate::service`]; one connection is [`crate::conn`]; the shared node is
//! [`crate::node`]. Everything that leaves the shard goes through the router
//! ([`Shard::push`], [`Shard::bind_session`]), to which the shard is the
//! [`LocalShard`]: its own messages come back to [`LocalShard::apply`] in place.

use crate::admit::HandshakeBucket;
use crate::close::CloseReason;
use crate::config::Config;
use crate::directory::SessionLoc;
use crate::logs::{LogLimiter, Noisy};
use crate::metrics::{self, ShardMetrics, ShardStats};
use crate::node::Node;
use crate::packet;
use crate::proto::PushMsg;
use crate::router::{Drain, LocalShard, Pushed, Router, ShardMsg};
use crate::session::{id, ConnHandle, Offer, QueueLimits, SessionId, SessionTable};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Size of each shard's read scratch buffer: every socket read lands here first, so an
/// idle connection needs no read buffer of its own.
const SCRATCH_BYTES: usize = 64 << 10;

/// What one core owns.
pub struct Shard {
    /// Index of this shard.
    id: usize,
    /// Shared node state.
    node: Arc<Node>,
    /// Connections and sessions of this shard.
    sessions: RefCell<SessionTable>,
    /// Counters, merged on read.
    metrics: ShardMetrics,
    /// Keeps misbehaving clients from flooding the log.
    log_limit: LogLimiter,
    /// Every read lands here; see [`SCRATCH_BYTES`].
    scratch: RefCell<Box<[u8]>>,
    /// Outbound queue bounds.
    limits: QueueLimits,
    /// Shard clock origin.
    epoch: Instant,
    /// Next connection counter.
    next_conn: Cell<u64>,
    /// Next message id for embedded upstream delivery.
    next_msg: Cell<u64>,
    /// `server.handshake_rate_per_s` / `handshake_burst`: upgrades above it get 503.
    handshake_bucket: HandshakeBucket,
}

impl Shard {
    /// Shard `id`'s state, empty. [`service::run`](crate::service::run) makes it on the
    /// shard's own executor; fuzz targets make one by hand (with
    /// [`Node::standalone`]) to feed it commands.
    pub fn new(id: usize, node: Arc<Node>) -> Self {
        let c = &node.config.connection;
        let limits = QueueLimits { frames: c.outbound_queue, bytes: c.outbound_queue_bytes };
        let log_limit = LogLimiter::new(node.config.log.warn_per_second);
        let s = &node.config.server;
        let handshake_bucket = HandshakeBucket::new(s.handshake_rate_per_s, s.handshake_burst);
        Self {
            id,
            node,
            sessions: RefCell::new(SessionTable::default()),
            metrics: ShardMetrics::default(),
            log_limit,
            scratch: RefCell::new(vec![0u8; SCRATCH_BYTES].into_boxed_slice()),
            limits,
            epoch: Instant::now(),
            next_conn: Cell::new(1),
            next_msg: Cell::new(1),
            handshake_bucket,
        }
    }

    /// Index of this shard.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The shared node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The delivery facade.
    pub fn router(&self) -> &Router {
        self.node.router()
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.node.config
    }

    /// Connections and sessions of this shard.
    pub fn sessions(&self) -> &RefCell<SessionTable> {
        &self.sessions
    }

    /// This shard's counters.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// This shard's log limiter.
    pub fn log_limit(&self) -> &LogLimiter {
        &self.log_limit
    }

    /// The read scratch buffer (borrowed inside one poll only, never across an await).
    pub fn scratch(&self) -> &RefCell<Box<[u8]>> {
        &self.scratch
    }

    /// Takes a token from the shard's handshake bucket; false when over the rate.
    pub fn admit_handshake(&self) -> bool {
        self.handshake_bucket.try_take(self.now_ms())
    }

    /// Milliseconds since the shard started.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How long a closing connection may linger, ms.
    pub fn linger_ms(&self) -> u64 {
        self.node.config.connection.close_linger_ms
    }

    /// A fresh process-unique connection (= session) id.
    pub fn next_conn_id(&self) -> SessionId {
        let n = self.next_conn.get();
        self.next_conn.set(n + 1);
        SessionId::new(self.id, n)
    }

    /// A fresh node-unique message id for embedded upstream delivery.
    pub fn next_msg_id(&self) -> i64 {
        let n = self.next_msg.get();
        self.next_msg.set(n + 1);
        id::shard_scoped(self.id, n) as i64
    }

    /// Binds an authenticated connection to its user: files it in the session table,
    /// then hands it to the router (directory, registry, and a kick for whatever the
    /// multi-login policy displaces).
    pub fn bind_session(&self, conn: &Rc<ConnHandle>) {
        self.sessions.borrow_mut().bind_user(conn);
        let loc = SessionLoc { session: conn.id, platform: conn.platform.get() };
        self.router().bind(self, conn.user_id.get(), loc);
    }

    /// Takes a session out of the directory and the registry (a no-op when it is not
    /// there any more).
    pub fn unbind_session(&self, user: i64, session: SessionId) {
        self.router().unbind(user, session);
    }

    /// Delivers `msg` to every session of `users` on this node (embedded-mode
    /// UPSTREAM); says which are online here.
    pub fn push(&self, users: &[i64], msg: &PushMsg) -> Pushed {
        self.router().push_now(self, users, msg)
    }

    /// A message from the inbox: counted, then applied; a drain order is handed back to
    /// the shard's lifecycle.
    pub fn handle(&self, msg: ShardMsg) -> Option<Drain> {
        metrics::inc(&self.metrics.router_hops);
        match msg {
            ShardMsg::Drain(order) => Some(order),
            msg => {
                self.apply(msg);
                None
            }
        }
    }

    fn kick_local(&self, session: SessionId, reason: &str) {
        let conn = self.sessions.borrow().get(session).cloned();
        let Some(conn) = conn else { return };
        if conn.is_closing() {
            return;
        }
        metrics::inc(&self.metrics.kicks);
        if self.log_limit.allow(Noisy::Kick, self.now_ms()) {
            info!(shard = self.id, conn = session.raw(), user_id = conn.user_id.get(), reason, "session kicked");
        }
        let kicked = CloseReason::Kicked(reason.to_string());
        conn.close(kicked, Some(packet::kick(reason)), self.now_ms(), self.linger_ms());
        // A kicked session is over now, not when its client gets round to closing the
        // socket: take it out of the directory (a no-op when a newer login displaced it
        // there already).
        self.unbind_session(conn.user_id.get(), session);
    }

    /// Queues `frame` to every local connection of `users`; every recipient's queue
    /// slot carries the one stamp `at` of the push.
    fn deliver(&self, users: &[i64], frame: &Bytes, at: u64) {
        let now = self.now_ms();
        let sessions = self.sessions.borrow();
        for &user in users {
            for conn in sessions.of_user(user) {
                self.offer(conn, frame.clone(), at, now);
            }
        }
    }

    fn broadcast(&self, frame: &Bytes, at: u64) {
        let now = self.now_ms();
        let sessions = self.sessions.borrow();
        for conn in sessions.authed() {
            self.offer(conn, frame.clone(), at, now);
        }
    }

    fn offer(&self, conn: &ConnHandle, frame: Bytes, at: u64, now: u64) {
        match conn.offer_stamped(frame, at, self.limits, now, self.linger_ms()) {
            Offer::Queued => metrics::inc(&self.metrics.pushes_queued),
            Offer::Closing => metrics::inc(&self.metrics.drops),
            Offer::Overflow => {
                metrics::inc(&self.metrics.drops);
                metrics::inc(&self.metrics.slow_cuts);
                if self.log_limit.allow(Noisy::SlowConsumer, now) {
                    warn!(
                        shard = self.id,
                        conn = conn.id.raw(),
                        user_id = conn.user_id.get(),
                        "outbound queue overflow; closing 4009"
                    );
                }
            }
        }
    }

    fn stats(&self) -> ShardStats {
        let sessions = self.sessions.borrow();
        let (queued, deepest) =
            sessions.all().map(|c| c.queued() as u64).fold((0, 0), |(sum, max), q| (sum + q, max.max(q)));
        let mut stats = self.metrics.snapshot(self.id, sessions.len(), sessions.users(), queued);
        stats.outbound_queued_max = deepest;
        stats
    }

    /// Closes every connection with 1001 and a retry hint spread over `window_ms`.
    pub fn close_all_going_away(&self, window_ms: u64) {
        let now = self.now_ms();
        let sessions = self.sessions.borrow();
        for conn in sessions.all() {
            let retry_after_ms = window_ms / 10 + fastrand::u64(0..=window_ms - window_ms / 10);
            conn.close(CloseReason::GoingAway { retry_after_ms }, None, now, self.linger_ms());
        }
    }

    /// Enforces auth, idle and close deadlines on every connection.
    pub fn tick(&self) {
        let now = self.now_ms();
        self.log_limit.flush(self.id, now);
        let c = &self.node.config;
        let auth_ms = c.auth.auth_timeout_ms;
        let idle_ms = c.connection.idle_timeout_s * 1000;
        let sessions = self.sessions.borrow();
        for conn in sessions.all() {
            if conn.is_closing() {
                if now >= conn.close_deadline_ms() {
                    conn.abort();
                }
            } else if !conn.is_authed() {
                if now.saturating_sub(conn.opened_ms) >= auth_ms {
                    conn.close(CloseReason::AuthTimeout, None, now, self.linger_ms());
                }
            } else if now.saturating_sub(conn.last_seen_ms.get()) >= idle_ms {
                conn.close(CloseReason::IdleTimeout, None, now, self.linger_ms());
            }
        }
    }

    /// How often [`Shard::tick`] must run: a quarter of the shortest deadline.
    pub fn tick_interval(&self) -> Duration {
        let c = &self.node.config;
        let shortest =
            c.auth.auth_timeout_ms.min(c.connection.idle_timeout_s * 1000).min(c.connection.close_linger_ms.max(1));
        Duration::from_millis((shortest / 4).clamp(5, 1000))
    }
}

impl LocalShard for Shard {
    fn id(&self) -> usize {
        self.id
    }

    fn apply(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Push { users, frame, at } => {
                metrics::inc(&self.metrics.pushes_in);
                self.deliver(&users, &frame, at);
            }
            ShardMsg::Broadcast { frame, at } => {
                metrics::inc(&self.metrics.pushes_in);
                self.broadcast(&frame, at);
            }
            ShardMsg::Kick { session, reason } => self.kick_local(session, &reason),
            ShardMsg::Reply { session, frame } => {
                if let Some(conn) = self.sessions.borrow().get(session) {
                    conn.reply(frame);
                }
            }
            ShardMsg::Stats { reply } => {
                let _ = reply.try_send((self.id, self.stats()));
            }
            // Taken by `handle`: drain orders come through the inbox only.
            ShardMsg::Drain(_) => {}
        }
    }

    fn backpressured(&self) {
        metrics::inc(&self.metrics.router_backpressure);
    }
}
