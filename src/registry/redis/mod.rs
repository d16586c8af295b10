//! The Redis registry: the contract's "Cluster mode" keys and channels (redis-rs on the
//! control plane's tokio runtime; nothing here runs on a shard).
//!
//! Keys (`{p}` = `cluster.key_prefix`, default `im:`; named in `keys.rs`):
//! - `{p}location:{uid}` HASH session name -> gateway id, TTL `location_ttl_s`;
//! - `{p}gateway:{gw}:users` SET of this node's users, TTL 3 x `location_ttl_s`;
//! - `{p}gateways` ZSET gateway id -> last heartbeat (ms since the epoch);
//! - `{p}push:{gw}`, `{p}push:all` pub/sub channels carrying `Downstream`;
//! - `{p}kick:{gw}` pub/sub channel carrying `KickNotice` (gateway to gateway);
//! - `{p}upstream` STREAM fed by `XADD .. MAXLEN ~ upstream_maxlen`.
//!
//! [`RedisRegistry::run`](super::Registry::run) owns the connection (this file): it
//! connects (retrying with back-off, `/readyz` not ready meanwhile), subscribes, and
//! serves two things in one task until Redis is lost or the node stops:
//! - `writer.rs`: reconciles this node's entries with the local directory (which also
//!   clears what a previous run of the same `gateway_id` left), then applies batches of
//!   session changes from the shards (one MULTI per batch: a login's HSET and HGETALL
//!   are atomic, so of two logins racing on two nodes the second always sees the first
//!   and kicks it) and runs the periodic sweep (TTL renewal, re-filing, heartbeat,
//!   reaping dead nodes);
//! - `delivery.rs`: pub/sub messages for this node (pushes, broadcasts, cross-node
//!   kicks), handed to the [`LocalNode`](super::LocalNode); and, for the router (on
//!   behalf of the admin API), the publishing side.
//!
//! Losing the subscription means losing Redis: it reconnects and reconciles again. A
//! second task, `upstream.rs`, pipelines UPSTREAMs into `XADD` and answers each on its
//! session's shard. On stop the node's entries are removed.

mod delivery;
mod keys;
mod upstream;
mod writer;

use super::{BoxFuture, LocalNode, NodeSummary, RegistryError, RemotePush, RemoteSession, UpstreamError, UpstreamJob};
use crate::config::{Config, MultiLogin};
use crate::directory::SessionLoc;
use crate::proto::PushMsg;
use crate::session::SessionName;
use keys::Keys;
use redis::aio::MultiplexedConnection;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use writer::Op;

/// First reconnect delay; doubles up to `cluster.reconnect_max_ms`.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Bound on the clean-up a stopping node does.
const STOP_CLEANUP: Duration = Duration::from_secs(2);

/// What the registry shares between the shards (senders, flags) and its tasks.
#[derive(Debug)]
struct Inner {
    client: redis::Client,
    keys: Keys,
    /// This run's session-name nonce.
    nonce: u32,
    policy: MultiLogin,
    ttl_s: u64,
    sweep: Duration,
    maxlen: u64,
    timeout: Duration,
    backoff_max: Duration,
    /// Set while connected and subscribed (`/readyz`).
    connected: AtomicBool,
    /// The live connection, cloned by control-plane callers; `None` while down. A std
    /// mutex held for a clone only, never on a shard.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Shards -> the write loop (`writer.rs`): session changes.
    ops_tx: flume::Sender<Op>,
    /// Shards -> the upstream task (`upstream.rs`): UPSTREAMs.
    up_tx: flume::Sender<UpstreamJob>,
    /// The receiving ends, taken once by `run`.
    receivers: Mutex<Option<(flume::Receiver<Op>, flume::Receiver<UpstreamJob>)>>,
    /// A session change was dropped (queue full): reconcile at the next sweep.
    resync: AtomicBool,
    /// Session changes dropped, for the log.
    dropped: AtomicU64,
}

/// The Redis-backed registry.
#[derive(Debug, Clone)]
pub struct RedisRegistry {
    inner: Arc<Inner>,
}

impl RedisRegistry {
    /// A registry for `url`; connects only when [`super::Registry::run`] runs.
    pub fn new(url: &str, config: &Config, nonce: u32) -> Result<Self, RegistryError> {
        let client = redis::Client::open(url).map_err(RegistryError::Url)?;
        let c = &config.cluster;
        let (ops_tx, ops_rx) = flume::bounded(c.queue);
        let (up_tx, up_rx) = flume::bounded(c.queue);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                keys: Keys { prefix: c.key_prefix.clone(), gateway_id: config.server.gateway_id.clone() },
                nonce,
                policy: config.sessions.multi_login,
                ttl_s: c.location_ttl_s,
                sweep: Duration::from_secs(c.sweep_interval_s),
                maxlen: c.upstream_maxlen,
                timeout: Duration::from_millis(c.command_timeout_ms),
                backoff_max: Duration::from_millis(c.reconnect_max_ms),
                connected: AtomicBool::new(false),
                conn: Mutex::new(None),
                ops_tx,
                up_tx,
                receivers: Mutex::new(Some((ops_rx, up_rx))),
                resync: AtomicBool::new(false),
                dropped: AtomicU64::new(0),
            }),
        })
    }
}

impl Inner {
    fn gateway_id(&self) -> &str {
        &self.keys.gateway_id
    }

    /// The registry name of a session of this node.
    fn name(&self, loc: SessionLoc) -> String {
        SessionName { nonce: self.nonce, id: loc.session, platform: loc.platform }.to_string()
    }

    /// The live connection, for a control-plane caller.
    fn conn(&self) -> Result<MultiplexedConnection, RegistryError> {
        if !self.connected.load(Ordering::Acquire) {
            return Err(RegistryError::Unavailable);
        }
        self.conn.lock().ok().and_then(|c| c.clone()).ok_or(RegistryError::Unavailable)
    }

    /// `fut` within the command timeout; `what` names it when it does not answer.
    async fn timed<T, E>(&self, what: &'static str, fut: impl Future<Output = Result<T, E>>) -> Result<T, RegistryError>
    where
        RegistryError: From<E>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(RegistryError::from),
            Err(_) => Err(RegistryError::Timeout { what, ms: self.timeout.as_millis() }),
        }
    }

    /// Runs `pipe` with the command timeout.
    async fn query<T: redis::FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        pipe: &redis::Pipeline,
    ) -> Result<T, RegistryError> {
        self.timed("pipeline", pipe.query_async::<T>(conn)).await
    }

    /// A new multiplexed connection (the command timeout bounds connecting and every
    /// answer).
    async fn open(&self) -> Result<MultiplexedConnection, RegistryError> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        Ok(self.client.get_multiplexed_async_connection_with_config(&cfg).await?)
    }

    /// Connects and subscribes to this node's channels.
    async fn connect(&self) -> Result<(MultiplexedConnection, redis::aio::PubSubStream), RegistryError> {
        let conn = self.open().await?;
        let mut pubsub = self.timed("pub/sub connection", self.client.get_async_pubsub()).await?;
        let gw = self.gateway_id();
        let channels = [self.keys.push(gw), self.keys.push_all(), self.keys.kick(gw)];
        self.timed("SUBSCRIBE", pubsub.subscribe(&channels[..])).await?;
        Ok((conn, pubsub.into_on_message()))
    }

    fn disconnected(&self) {
        self.connected.store(false, Ordering::Release);
        if let Ok(mut slot) = self.conn.lock() {
            *slot = None;
        }
    }

    /// Connected: reconcile, then serve session changes, sweeps and pub/sub until Redis
    /// is lost (`Err`) or `stop` (`Ok`).
    async fn serve(
        &self,
        local: &dyn LocalNode,
        mut conn: MultiplexedConnection,
        messages: redis::aio::PubSubStream,
        ops: &flume::Receiver<Op>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), RegistryError> {
        // Changes queued before now are in the directory already: the reconcile below
        // files them. (A login made while Redis was away is not checked against other
        // nodes: both sessions stay.)
        let stale = ops.drain().count();
        self.resync.store(false, Ordering::Relaxed);
        self.reconcile(local, &mut conn).await?;
        if let Ok(mut slot) = self.conn.lock() {
            *slot = Some(conn.clone());
        }
        self.connected.store(true, Ordering::Release);
        info!(gateway_id = self.gateway_id(), users = local.figures().users, skipped = stale, "registry connected");
        // Deliveries from pub/sub run beside the registry writes, not between them: a
        // backlog of session changes (right after a login storm) must not hold pushes
        // for this node's users. Both are polled by this one task.
        tokio::select! {
            r = self.deliveries(local, messages) => r,
            r = self.write_loop(local, &mut conn, ops, stop) => r,
        }
    }

    async fn run(self: Arc<Self>, local: Arc<dyn LocalNode>, mut stop: watch::Receiver<bool>) {
        let Some((ops, ups)) = self.receivers.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let upstream = tokio::spawn(self.clone().upstream_loop(local.clone(), ups));
        let mut backoff = BACKOFF_START;
        let mut failing = false;
        while !*stop.borrow() {
            let attempt = tokio::select! {
                c = self.connect() => c,
                _ = stop.changed() => break,
            };
            let result = match attempt {
                Ok((conn, messages)) => {
                    backoff = BACKOFF_START;
                    if failing {
                        info!("redis reachable again");
                    }
                    failing = false;
                    self.serve(&*local, conn, messages, &ops, &mut stop).await
                }
                Err(e) => Err(e),
            };
            self.disconnected();
            match result {
                Ok(()) => break,
                Err(e) => {
                    if failing {
                        debug!(cause = %e, retry_ms = backoff.as_millis() as u64, "redis still unreachable");
                    } else {
                        warn!(cause = %e, retry_ms = backoff.as_millis() as u64, "redis unavailable; retrying");
                        failing = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break,
                    }
                    backoff = (backoff * 2).min(self.backoff_max);
                }
            }
        }
        upstream.abort();
        // Stopping (the shards are gone): take this node out of the registry.
        let cleanup = async {
            let mut conn = self.open().await?;
            self.remove_gateway(&mut conn, &self.keys).await
        };
        match tokio::time::timeout(STOP_CLEANUP, cleanup).await {
            Ok(Ok(())) => info!(gateway_id = self.gateway_id(), "removed this node from the registry"),
            Ok(Err(e)) => warn!(cause = %e, "could not remove this node from the registry; its entries expire by TTL"),
            Err(_) => warn!("registry clean-up timed out; this node's entries expire by TTL"),
        }
    }
}

impl super::Registry for RedisRegistry {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    fn opened(&self, user: i64, loc: SessionLoc) {
        self.inner.send_op(Op::Opened { user, loc });
    }

    fn closed(&self, user: i64, loc: SessionLoc) {
        self.inner.send_op(Op::Closed { user, loc });
    }

    fn has_bus(&self) -> bool {
        true
    }

    fn upstream(&self, job: UpstreamJob) -> Result<(), UpstreamError> {
        if !self.connected() {
            return Err(UpstreamError::Disconnected);
        }
        self.inner.up_tx.try_send(job).map_err(|_| UpstreamError::Busy)
    }

    fn run(&self, local: Arc<dyn LocalNode>, stop: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(self.inner.clone().run(local, stop))
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Option<Vec<NodeSummary>>, RegistryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut conn = inner.conn()?;
            let (beats,): (Vec<(String, i64)>,) =
                inner.query(&mut conn, redis::pipe().zrange_withscores(inner.keys.gateways(), 0, -1)).await?;
            let others: Vec<(String, i64)> = beats.into_iter().filter(|(g, _)| g != inner.gateway_id()).collect();
            let mut pipe = redis::pipe();
            for (g, _) in &others {
                pipe.hgetall(inner.keys.stats(g));
            }
            let stats: Vec<HashMap<String, u64>> =
                if others.is_empty() { Vec::new() } else { inner.query(&mut conn, &pipe).await? };
            Ok(Some(
                others
                    .into_iter()
                    .zip(stats)
                    .map(|((gateway_id, last_seen_ms), s)| NodeSummary {
                        gateway_id,
                        connections: s.get("connections").copied().unwrap_or(0),
                        users: s.get("users").copied().unwrap_or(0),
                        shards: s.get("shards").copied().unwrap_or(0),
                        last_seen_ms,
                    })
                    .collect(),
            ))
        })
    }

    fn locate<'a>(&'a self, users: &'a [i64]) -> BoxFuture<'a, Result<Vec<Vec<RemoteSession>>, RegistryError>> {
        Box::pin(self.inner.locate(users))
    }

    fn push<'a>(&'a self, users: &'a [i64], msg: &'a PushMsg) -> BoxFuture<'a, Result<RemotePush, RegistryError>> {
        Box::pin(self.inner.push(users, msg))
    }

    fn broadcast<'a>(&'a self, msg: &'a PushMsg) -> BoxFuture<'a, Result<usize, RegistryError>> {
        Box::pin(self.inner.broadcast(msg))
    }

    fn kick<'a>(
        &'a self,
        user: i64,
        platform: Option<i32>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<usize, RegistryError>> {
        Box::pin(self.inner.kick(user, platform, reason))
    }
}
