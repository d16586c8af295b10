//! One shard: the state a core owns and the services it runs.
//!
//! [`Node`] is what every shard and the control plane share (`Arc`, read-mostly:
//! config, token verifier, router, the process-wide connection count). [`Shard`] is
//! what one core owns (`Rc`, `RefCell`/`Cell`, no locks): its session table, metrics,
//! read scratch buffer. [`run`] starts the shard's services in dependency order —
//! ticker, accept loop ([`Listener`]), inbox — and on `Drain` stops them in reverse.

use crate::close::CloseReason;
use crate::config::Config;
use crate::conn;
use crate::directory::SessionLoc;
use crate::logs::{LogLimiter, Noisy};
use crate::metrics::{self, ShardMetrics};
use crate::router::{Router, ShardMsg};
use crate::session::{ConnHandle, Offer, QueueLimits, SessionTable};
use bytes::Bytes;
use glommio::net::TcpListener;
use glommio::timer::Timer;
use std::cell::{Cell, RefCell};
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Size of each shard's read scratch buffer: every socket read lands here first, so an
/// idle connection needs no read buffer of its own.
const SCRATCH_BYTES: usize = 64 << 10;

/// Period of the stall probe: a timer that measures how late the event loop wakes it
/// (see [`stall_probe`]).
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// Shared by every shard and the control plane.
#[derive(Debug)]
pub struct Node {
    /// The configuration the node started with.
    pub config: Config,
    /// Token checks.
    pub verifier: crate::auth::Verifier,
    /// Routing facade (directory + shard inboxes).
    pub router: Router,
    /// Connections open in the process (upgraded or upgrading), for `max_connections`.
    pub open: AtomicUsize,
    /// Effective `max_connections`.
    pub max_connections: usize,
    /// Set when the node drains: new upgrades get 503.
    pub draining: AtomicBool,
    /// Random per start, part of every session id string.
    pub boot_nonce: u32,
    /// Where users are beyond this node (embedded, or Redis in cluster mode). Shards
    /// only hand it session changes and UPSTREAMs; it never blocks them.
    pub registry: Arc<dyn crate::registry::Registry>,
    /// Connections per client address, for `server.max_connections_per_ip`.
    pub per_ip: crate::admit::IpTable,
}

impl Node {
    /// This node's id.
    pub fn gateway_id(&self) -> &str {
        &self.config.server.gateway_id
    }

    /// The string form of a session id (unique across nodes and restarts; it also
    /// names the session in the cluster registry, see [`crate::registry::SessionName`]).
    pub fn session_string(&self, id: u64, platform: i32) -> String {
        crate::registry::SessionName { nonce: self.boot_nonce, id, platform }.to_string()
    }

    /// A node without listeners, executors or control plane, whose shard inboxes nobody
    /// serves (a message to another shard is dropped as if that shard had stopped):
    /// for driving a [`Shard`] made with [`Shard::new`] by hand, as the fuzz targets in
    /// `fuzz/` do. [`Gateway::start`](crate::Gateway::start) builds the real one.
    pub fn standalone(config: Config) -> Result<Arc<Self>, crate::auth::KeyError> {
        let verifier = crate::auth::Verifier::from_config(&config.auth)?;
        let mesh = shards::Mesh::<ShardMsg>::new(config.shard_count(), 1);
        Ok(Arc::new(Self {
            verifier,
            router: Router::new(Arc::new(crate::directory::Directory::new()), mesh.sender),
            open: AtomicUsize::new(0),
            // 0 means "from the open-file limit" in a real node; a hand-driven shard
            // opens no sockets, so no limit.
            max_connections: match config.connection.max_connections {
                0 => usize::MAX,
                n => n,
            },
            draining: AtomicBool::new(false),
            boot_nonce: 0,
            // Single node: the hand-driven shard never reaches a cluster.
            registry: Arc::new(crate::registry::Embedded),
            per_ip: crate::admit::IpTable::new(config.server.max_connections_per_ip),
            config,
        }))
    }
}

/// A slot counted in [`Node::open`] and, when the per-IP cap is on, in
/// [`Node::per_ip`]; released on drop.
pub struct Admission(Arc<Node>, u64);

impl Admission {
    /// Takes a slot, or `None` when the node is full.
    pub fn try_take(node: &Arc<Node>) -> Option<Self> {
        let prev = node.open.fetch_add(1, Ordering::AcqRel);
        if prev >= node.max_connections {
            node.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(node.clone(), 0))
    }

    /// Also counts the connection against its address `ip`; false when that address is
    /// at `server.max_connections_per_ip` (the node slot is kept: dropping `self`
    /// releases it). A no-op when the cap is off.
    pub fn count_ip(&mut self, ip: std::net::IpAddr) -> bool {
        let table = &self.0.per_ip;
        if !table.enabled() || self.1 != 0 {
            return true;
        }
        let key = table.key(ip);
        if !table.try_add(key) {
            return false;
        }
        self.1 = key;
        true
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        if self.1 != 0 {
            self.0.per_ip.remove(self.1);
        }
    }
}

/// What one core owns.
pub struct Shard {
    /// Index of this shard.
    pub id: usize,
    /// Shared node state.
    pub node: Arc<Node>,
    /// Connections and sessions of this shard.
    pub sessions: RefCell<SessionTable>,
    /// Counters, merged on read.
    pub metrics: ShardMetrics,
    /// Keeps misbehaving clients from flooding the log.
    pub log_limit: LogLimiter,
    /// Every read lands here; see [`SCRATCH_BYTES`].
    pub scratch: RefCell<Box<[u8]>>,
    /// Outbound queue bounds.
    pub limits: QueueLimits,
    /// Shard clock origin.
    epoch: Instant,
    /// Next connection counter.
    next_conn: Cell<u64>,
    /// Next message id for embedded upstream delivery.
    next_msg: Cell<u64>,
    /// Set when draining: the accept loop stops, new upgrades get 503.
    pub draining: Cell<bool>,
    /// `server.handshake_rate_per_s` / `handshake_burst`: upgrades above it get 503.
    pub handshake_bucket: crate::admit::HandshakeBucket,
}

impl Shard {
    /// Shard `id`'s state, empty. [`run`] makes it on the shard's own executor; fuzz
    /// targets make one by hand (with [`Node::standalone`]) to feed it commands.
    pub fn new(id: usize, node: Arc<Node>) -> Self {
        let c = &node.config.connection;
        let limits = QueueLimits { frames: c.outbound_queue, bytes: c.outbound_queue_bytes };
        let log_limit = LogLimiter::new(node.config.log.warn_per_second);
        let s = &node.config.server;
        let handshake_bucket = crate::admit::HandshakeBucket::new(s.handshake_rate_per_s, s.handshake_burst);
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
            draining: Cell::new(false),
            handshake_bucket,
        }
    }

    /// Milliseconds since the shard started.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.node.config
    }

    /// How long a closing connection may linger, ms.
    pub fn linger_ms(&self) -> u64 {
        self.node.config.connection.close_linger_ms
    }

    /// A fresh process-unique connection (= session) id.
    pub fn next_conn_id(&self) -> u64 {
        let n = self.next_conn.get();
        self.next_conn.set(n + 1);
        ((self.id as u64) << 48) | (n & ((1 << 48) - 1))
    }

    /// A fresh node-unique message id for embedded upstream delivery.
    pub fn next_msg_id(&self) -> i64 {
        let n = self.next_msg.get();
        self.next_msg.set(n + 1);
        (((self.id as u64) << 48) | n) as i64
    }

    /// Binds an authenticated connection to its user: files it in the session table and
    /// the directory, and kicks whatever the multi-login policy displaces.
    pub fn bind_session(&self, conn: &Rc<ConnHandle>) {
        self.sessions.borrow_mut().bind_user(conn);
        let loc = SessionLoc { session: conn.id, platform: conn.platform.get(), shard: self.id as u16 };
        let policy = self.node.config.sessions.multi_login;
        let user = conn.user_id.get();
        let displaced = self.node.router.directory.register(user, loc, policy);
        let registry = &self.node.registry;
        registry.opened(user, loc);
        if displaced.is_empty() {
            return;
        }
        let reason = "replaced by a newer login";
        let frame = crate::router::kick_frame(reason);
        for old in displaced {
            // Out of the directory already: tell the registry here, the kick will not.
            registry.closed(user, old);
            self.kick(old, reason, frame.clone());
        }
    }

    /// Takes a session out of the directory and the registry (a no-op when it is not
    /// there any more).
    pub fn unbind_session(&self, user: i64, session: u64) {
        if let Some(loc) = self.node.router.directory.unregister(user, session) {
            self.node.registry.closed(user, loc);
        }
    }

    /// Kicks one session wherever it lives on this node.
    pub fn kick(&self, loc: SessionLoc, reason: &str, frame: Bytes) {
        let shard = usize::from(loc.shard);
        if shard == self.id {
            self.kick_local(loc.session, reason, frame);
            return;
        }
        self.send_or_wait(shard, ShardMsg::Kick { session: loc.session, reason: reason.to_string(), frame });
    }

    fn kick_local(&self, session: u64, reason: &str, frame: Bytes) {
        let conn = self.sessions.borrow().get(session).cloned();
        if let Some(conn) = conn {
            if !conn.is_closing() {
                metrics::inc(&self.metrics.kicks);
                if self.log_limit.allow(Noisy::Kick, self.now_ms()) {
                    info!(shard = self.id, conn = session, user_id = conn.user_id.get(), reason, "session kicked");
                }
                conn.close(CloseReason::Kicked(reason.to_string()), Some(frame), self.now_ms(), self.linger_ms());
                // A kicked session is over now, not when its client gets round to
                // closing the socket: take it out of the directory (a no-op when a newer
                // login displaced it there already).
                self.unbind_session(conn.user_id.get(), session);
            }
        }
    }

    /// Delivers `frame` to every connection of `users`: local holders directly, other
    /// shards through their inboxes. Returns how many users are online on this node.
    pub fn push(&self, users: &[i64], frame: Bytes) -> usize {
        let at = metrics::stamp();
        let (plan, online) = self.node.router.plan(users);
        for (shard, users) in plan.into_iter().enumerate().filter(|(_, u)| !u.is_empty()) {
            if shard == self.id {
                metrics::inc(&self.metrics.pushes_in);
                self.deliver_at(&users, &frame, at);
            } else {
                self.send_or_wait(shard, ShardMsg::Push { users, frame: frame.clone(), at });
            }
        }
        online
    }

    /// Sends to another shard without ever blocking this one: a full inbox hands the
    /// wait to a background task (order per destination is kept by flume's fairness
    /// only loosely; pushes carry their own ids).
    fn send_or_wait(&self, shard: usize, msg: ShardMsg) {
        match self.node.router.mesh.try_send(shard, msg) {
            Ok(()) => {}
            Err(shards::SendError::Full(msg)) => {
                metrics::inc(&self.metrics.router_backpressure);
                let mesh = self.node.router.mesh.clone();
                glommio::spawn_local(async move {
                    let _ = mesh.send_async(shard, msg).await;
                })
                .detach();
            }
            Err(shards::SendError::Closed(_)) => {
                debug!(shard = self.id, to = shard, "peer shard stopped; message dropped");
            }
        }
    }

    /// Queues `frame` to every local connection of `users`.
    pub fn deliver(&self, users: &[i64], frame: &Bytes) {
        self.deliver_at(users, frame, metrics::stamp());
    }

    /// [`deliver`](Self::deliver) of a push the router enqueued at `at` (a
    /// [`metrics::stamp`]): every recipient's queue slot carries that one stamp.
    pub fn deliver_at(&self, users: &[i64], frame: &Bytes, at: u64) {
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
                        conn = conn.id,
                        user_id = conn.user_id.get(),
                        "outbound queue overflow; closing 4009"
                    );
                }
            }
        }
    }

    fn handle(&self, msg: ShardMsg) -> Option<(u64, u64)> {
        metrics::inc(&self.metrics.router_hops);
        match msg {
            ShardMsg::Push { users, frame, at } => {
                metrics::inc(&self.metrics.pushes_in);
                self.deliver_at(&users, &frame, at);
            }
            ShardMsg::Broadcast { frame, at } => {
                metrics::inc(&self.metrics.pushes_in);
                self.broadcast(&frame, at);
            }
            ShardMsg::Kick { session, reason, frame } => self.kick_local(session, &reason, frame),
            ShardMsg::Reply { session, frame } => {
                if let Some(conn) = self.sessions.borrow().get(session) {
                    conn.reply(frame);
                }
            }
            ShardMsg::Stats { reply } => {
                let sessions = self.sessions.borrow();
                let (queued, deepest) =
                    sessions.all().map(|c| c.queued() as u64).fold((0, 0), |(sum, max), q| (sum + q, max.max(q)));
                let mut stats = self.metrics.snapshot(self.id, sessions.users(), queued);
                stats.outbound_queued_max = deepest;
                let _ = reply.try_send((self.id, stats));
            }
            ShardMsg::Drain { window_ms, deadline_ms } => return Some((window_ms, deadline_ms)),
        }
        None
    }

    /// Closes every connection with 1001 and a retry hint spread over `window_ms`.
    fn close_all_going_away(&self, window_ms: u64) {
        let now = self.now_ms();
        let sessions = self.sessions.borrow();
        for conn in sessions.all() {
            let retry_after_ms = window_ms / 10 + fastrand::u64(0..=window_ms - window_ms / 10);
            conn.close(CloseReason::GoingAway { retry_after_ms }, None, now, self.linger_ms());
        }
    }

    /// Enforces auth, idle and close deadlines on every connection.
    fn tick(&self) {
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

    fn tick_interval(&self) -> Duration {
        let c = &self.node.config;
        let shortest =
            c.auth.auth_timeout_ms.min(c.connection.idle_timeout_s * 1000).min(c.connection.close_linger_ms.max(1));
        Duration::from_millis((shortest / 4).clamp(5, 1000))
    }
}

/// The accept loop: owns the shard's listener.
struct Listener {
    shard: Rc<Shard>,
    listener: TcpListener,
}

impl Listener {
    async fn run(self) {
        let mut backing_off = false;
        loop {
            match self.listener.accept().await {
                Ok(stream) => {
                    backing_off = false;
                    let shard = self.shard.clone();
                    glommio::spawn_local(conn::serve(shard, stream)).detach();
                }
                Err(_) if self.shard.draining.get() => return, // the listener was shut
                Err(_) if self.shard.node.draining.load(Ordering::Acquire) => {
                    // `Gateway::shutdown` shut every shard's listener at once; this
                    // shard's Drain is on its way. Keep the listener (and so its fd)
                    // open until then: `run` shuts that fd again, and a closed fd's
                    // number may by then belong to another socket.
                    Timer::new(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    let err = std::io::Error::from(e);
                    match err.raw_os_error() {
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                            // Out of descriptors or memory: accepting again at once would
                            // spin. Wait for connections to go away.
                            metrics::inc(&self.shard.metrics.accept_backoffs);
                            if !backing_off {
                                warn!(shard = self.shard.id, cause = %err, "accept failed; backing off");
                                backing_off = true;
                            }
                            Timer::new(Duration::from_millis(100)).await;
                        }
                        _ => debug!(shard = self.shard.id, cause = %err, "accept error"),
                    }
                }
            }
        }
    }
}

/// Runs shard `id` until it is drained: adopts the listener fd, starts the ticker and
/// the accept loop, and serves the inbox.
pub async fn run(id: usize, node: Arc<Node>, listener_fd: RawFd, inbox: flume::Receiver<ShardMsg>) {
    let shard = Rc::new(Shard::new(id, node));
    // SAFETY: the fd was made for this shard by `shards::bind_reuseport` and handed over
    // exactly once; the listener owns it from here.
    let listener = unsafe { TcpListener::from_raw_fd(listener_fd) };

    let ticker = {
        let shard = shard.clone();
        let every = shard.tick_interval();
        glommio::spawn_local(async move {
            loop {
                Timer::new(every).await;
                shard.tick();
            }
        })
    };
    let probe = glommio::spawn_local(stall_probe(shard.clone()));
    let accept = glommio::spawn_local(Listener { shard: shard.clone(), listener }.run());
    debug!(shard = id, "shard running");

    let mut drain = None;
    while let Ok(msg) = inbox.recv_async().await {
        if let Some(d) = shard.handle(msg) {
            drain = Some(d);
            break;
        }
    }
    // Stop in reverse order: no new connections, then close the ones we have.
    shard.draining.set(true);
    // Shut the listening socket rather than only cancelling the accept task: the shut
    // socket leaves the SO_REUSEPORT group at once, so a connection arriving now is
    // refused (or goes to a shard still listening) instead of waiting in a backlog, or
    // in an io_uring accept being cancelled, that nobody will serve. The pending accept
    // fails and the loop ends by itself (see `Listener::run`); dropping the task (which
    // cancels it) after a second is only a backstop.
    // SAFETY: shutdown(2) on the fd the `Listener` task still owns and keeps open.
    unsafe { libc::shutdown(listener_fd, libc::SHUT_RD) };
    futures_lite::future::or(
        async {
            accept.await;
        },
        async {
            Timer::new(Duration::from_secs(1)).await;
        },
    )
    .await;
    let (window_ms, deadline_ms) = drain.unwrap_or((0, 0));
    shard.close_all_going_away(window_ms);
    let deadline = shard.now_ms() + deadline_ms;
    // Keep serving the inbox (stats, late pushes are dropped by closing conns) while
    // clients read their close frames; the ticker aborts the ones that linger.
    while !shard.sessions.borrow().is_empty() && shard.now_ms() < deadline {
        let wait = Timer::new(Duration::from_millis(10));
        futures_lite::future::or(
            async {
                if let Ok(msg) = inbox.recv_async().await {
                    let _ = shard.handle(msg);
                }
            },
            async {
                wait.await;
            },
        )
        .await;
    }
    let left = shard.sessions.borrow().len();
    if left > 0 {
        for conn in shard.sessions.borrow().all() {
            conn.abort();
        }
        warn!(shard = id, left, "shutdown deadline reached; dropping the remaining connections");
    }
    ticker.cancel().await;
    probe.cancel().await;
    info!(shard = id, "shard stopped");
}

/// Measures event-loop stalls: sleeps [`PROBE_EVERY`] again and again and records how
/// late each wake-up comes. A task that holds the core for 30 ms (one long poll, or a
/// burst of work queued ahead of the timer) shows as a ~30 ms sample; an idle or
/// well-behaved shard shows the timer's own slack (tens of microseconds). Costs one
/// timer wake-up per period and nothing on the push path. Also rolls the shard's
/// latency windows.
async fn stall_probe(shard: Rc<Shard>) {
    loop {
        let asked = Instant::now();
        Timer::new(PROBE_EVERY).await;
        let late = asked.elapsed().saturating_sub(PROBE_EVERY);
        shard.metrics.loop_stall.borrow_mut().record(late.as_micros() as u64);
        shard.metrics.rotate(shard.now_ms());
    }
}
