//! The Redis registry: the contract's "Cluster mode" keys and channels (redis-rs on the
//! control plane's tokio runtime; nothing here runs on a shard).
//!
//! Keys (`{p}` = `cluster.key_prefix`, default `im:`):
//! - `{p}location:{uid}` HASH session name -> gateway id, TTL `location_ttl_s`;
//! - `{p}gateway:{gw}:users` SET of this node's users, TTL 3 x `location_ttl_s`;
//! - `{p}gateways` ZSET gateway id -> last heartbeat (ms since the epoch);
//! - `{p}push:{gw}`, `{p}push:all` pub/sub channels carrying `Downstream`;
//! - `{p}kick:{gw}` pub/sub channel carrying `KickNotice` (gateway to gateway);
//! - `{p}upstream` STREAM fed by `XADD .. MAXLEN ~ upstream_maxlen`.
//!
//! [`RedisRegistry::run`] owns the connection. It connects (retrying with back-off,
//! `/readyz` not ready meanwhile), subscribes, reconciles this node's entries with the
//! local directory (which also clears what a previous run of the same `gateway_id`
//! left), then serves three things in one task: batches of session changes from the
//! shards (one MULTI per batch: a login's HSET and HGETALL are atomic, so of two logins
//! racing on two nodes the second always sees the first and kicks it), the periodic
//! sweep (TTL renewal, re-filing, heartbeat), and pub/sub messages. Losing the
//! subscription means losing Redis: it reconnects and reconciles again. A second task
//! pipelines UPSTREAMs into `XADD` and answers each on its session's shard. On stop it
//! removes this node's entries.

use super::{BoxFuture, NodeSummary, RegistryError, RemotePush, RemoteSession, SessionName, UpstreamJob};
use crate::config::{Config, MultiLogin};
use crate::directory::SessionLoc;
use crate::packet::{self, error_code};
use crate::proto::{Command, Downstream, KickNotice, PushMsg, UpstreamResult};
use crate::router::ShardMsg;
use crate::shard::Node;
use futures_lite::StreamExt;
use prost::Message;
use redis::aio::MultiplexedConnection;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Session changes applied in one MULTI.
const OP_BATCH: usize = 1024;
/// UPSTREAMs pipelined in one round trip.
const UPSTREAM_BATCH: usize = 256;
/// Users per sweep or reconcile pipeline.
const SWEEP_CHUNK: usize = 512;
/// First reconnect delay; doubles up to `cluster.reconnect_max_ms`.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Bound on the clean-up a stopping node does.
const STOP_CLEANUP: Duration = Duration::from_secs(2);

/// A session change, from a shard.
#[derive(Debug, Clone, Copy)]
enum Op {
    Opened { user: i64, loc: SessionLoc },
    Closed { user: i64, loc: SessionLoc },
}

/// Key and channel names.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
    gateway_id: String,
}

impl Keys {
    fn location(&self, user: i64) -> String {
        format!("{}location:{user}", self.prefix)
    }
    fn users(&self) -> String {
        format!("{}gateway:{}:users", self.prefix, self.gateway_id)
    }
    fn gateways(&self) -> String {
        format!("{}gateways", self.prefix)
    }
    fn stats(&self, gateway: &str) -> String {
        format!("{}gateway:{gateway}:stats", self.prefix)
    }
    fn push(&self, gateway: &str) -> String {
        format!("{}push:{gateway}", self.prefix)
    }
    fn push_all(&self) -> String {
        format!("{}push:all", self.prefix)
    }
    fn kick(&self, gateway: &str) -> String {
        format!("{}kick:{gateway}", self.prefix)
    }
    fn upstream(&self) -> String {
        format!("{}upstream", self.prefix)
    }
}

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
    /// Shards -> [`RedisRegistry::run`]: session changes.
    ops_tx: flume::Sender<Op>,
    /// Shards -> the upstream task: UPSTREAMs.
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
        let client = redis::Client::open(url).map_err(|e| RegistryError::Redis(format!("cluster.redis_url: {e}")))?;
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

    fn name(&self, loc: SessionLoc) -> String {
        SessionName { nonce: self.nonce, id: loc.session, platform: loc.platform }.to_string()
    }

    fn send_op(&self, op: Op) {
        if self.ops_tx.try_send(op).is_err() {
            // Full (Redis slow or down) or stopped: the directory still has the truth;
            // the next sweep reconciles Redis with it.
            self.resync.store(true, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn conn(&self) -> Result<MultiplexedConnection, RegistryError> {
        if !self.connected.load(Ordering::Acquire) {
            return Err(RegistryError::Unavailable);
        }
        self.conn.lock().ok().and_then(|c| c.clone()).ok_or(RegistryError::Unavailable)
    }

    /// Runs `pipe` with the command timeout.
    async fn query<T: redis::FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        pipe: &redis::Pipeline,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(self.timeout, pipe.query_async::<T>(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RegistryError::Redis(e.to_string())),
            Err(_) => Err(RegistryError::Redis(format!("no answer within {} ms", self.timeout.as_millis()))),
        }
    }

    async fn connect(&self) -> Result<(MultiplexedConnection, redis::aio::PubSubStream), RegistryError> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let redis_err = |e: redis::RedisError| RegistryError::Redis(e.to_string());
        let conn = self.client.get_multiplexed_async_connection_with_config(&cfg).await.map_err(redis_err)?;
        let mut pubsub = tokio::time::timeout(self.timeout, self.client.get_async_pubsub())
            .await
            .map_err(|_| RegistryError::Redis("pub/sub connection timed out".into()))?
            .map_err(redis_err)?;
        let gw = self.gateway_id();
        let channels = [self.keys.push(gw), self.keys.push_all(), self.keys.kick(gw)];
        tokio::time::timeout(self.timeout, pubsub.subscribe(&channels[..]))
            .await
            .map_err(|_| RegistryError::Redis("SUBSCRIBE timed out".into()))?
            .map_err(redis_err)?;
        Ok((conn, pubsub.into_on_message()))
    }

    /// Makes Redis agree with the local directory: removes this gateway's entries that
    /// are not local sessions any more (a previous run's, or changes lost while Redis
    /// was away), then files every local session (see [`Inner::sweep`]).
    async fn reconcile(&self, node: &Node, conn: &mut MultiplexedConnection) -> Result<(), RegistryError> {
        let gw = self.gateway_id();
        let members: Vec<String> =
            self.query(conn, redis::pipe().smembers(self.keys.users())).await.map(|(m,): (Vec<String>,)| m)?;
        let users: Vec<i64> = members.iter().filter_map(|m| m.parse().ok()).collect();
        for chunk in users.chunks(SWEEP_CHUNK) {
            let mut pipe = redis::pipe();
            for &u in chunk {
                pipe.hgetall(self.keys.location(u));
            }
            let maps: Vec<HashMap<String, String>> = self.query(conn, &pipe).await?;
            let mut pipe = redis::pipe();
            for (&u, map) in chunk.iter().zip(&maps) {
                let local: HashSet<u64> = node
                    .router
                    .directory
                    .with_sessions(u, |s| s.iter().map(|l| l.session).collect())
                    .unwrap_or_default();
                let stale: Vec<&String> = map
                    .iter()
                    .filter(|(field, owner)| {
                        owner.as_str() == gw
                            && !SessionName::parse(field)
                                .is_some_and(|n| n.nonce == self.nonce && local.contains(&n.id))
                    })
                    .map(|(field, _)| field)
                    .collect();
                if !stale.is_empty() {
                    pipe.hdel(self.keys.location(u), stale).ignore();
                }
                if local.is_empty() {
                    pipe.srem(self.keys.users(), u).ignore();
                }
            }
            self.query::<()>(conn, &pipe).await?;
        }
        self.sweep(node, conn).await
    }

    /// Heartbeat, then files every local session again and renews the TTLs of its
    /// location and of this node's user set: one pass over the directory, pipelined.
    /// Then reaps nodes whose heartbeat is older than `location_ttl_s`.
    async fn sweep(&self, node: &Node, conn: &mut MultiplexedConnection) -> Result<(), RegistryError> {
        let gw = self.gateway_id();
        let now_ms = packet::now_us() / 1000;
        let stats = self.keys.stats(gw);
        let summary = [
            ("connections", node.open.load(std::sync::atomic::Ordering::Relaxed) as u64),
            ("users", node.router.directory.users() as u64),
            ("shards", node.router.shards() as u64),
        ];
        self.query::<()>(
            conn,
            redis::pipe()
                .zadd(self.keys.gateways(), gw, now_ms)
                .ignore()
                .hset_multiple(&stats, &summary)
                .ignore()
                .expire(&stats, 3 * self.ttl_s as i64)
                .ignore(),
        )
        .await?;
        self.reap(conn, now_ms).await?;
        let snapshot = node.router.directory.snapshot();
        for chunk in snapshot.chunks(SWEEP_CHUNK) {
            let mut pipe = redis::pipe();
            let mut users = Vec::with_capacity(chunk.len());
            for (user, sessions) in chunk {
                let key = self.keys.location(*user);
                let fields: Vec<(String, &str)> = sessions.iter().map(|l| (self.name(*l), gw)).collect();
                pipe.hset_multiple(&key, &fields).ignore().expire(&key, self.ttl_s as i64).ignore();
                users.push(*user);
            }
            if !users.is_empty() {
                pipe.sadd(self.keys.users(), users).ignore();
            }
            self.query::<()>(conn, &pipe).await?;
        }
        // The set outlives the locations (3 x TTL) so that the reaper of a dead node can
        // still read it; it is gone in any case soon after.
        self.query::<()>(conn, redis::pipe().expire(self.keys.users(), 3 * self.ttl_s as i64).ignore()).await?;
        Ok(())
    }

    /// Removes the entries of nodes that stopped beating `location_ttl_s` ago (killed
    /// without draining). A location whose user is still online elsewhere is renewed by
    /// that node's sweep, so TTL alone would keep a dead node's field in it; this removes
    /// it. Idempotent: every node may reap the same dead node.
    async fn reap(&self, conn: &mut MultiplexedConnection, now_ms: i64) -> Result<(), RegistryError> {
        let cutoff = now_ms - 1000 * self.ttl_s as i64;
        let (dead,): (Vec<String>,) =
            self.query(conn, redis::pipe().zrangebyscore(self.keys.gateways(), "-inf", cutoff)).await?;
        for gone in dead.iter().filter(|g| g.as_str() != self.gateway_id()) {
            let keys = Keys { prefix: self.keys.prefix.clone(), gateway_id: gone.clone() };
            self.remove_gateway(conn, &keys).await?;
            info!(gateway_id = %gone, "reaped a node that stopped beating");
        }
        Ok(())
    }

    /// Applies a batch of session changes in one MULTI, then kicks what the logins in
    /// it displace on other nodes.
    async fn apply(&self, node: &Node, conn: &mut MultiplexedConnection, ops: &[Op]) -> Result<(), RegistryError> {
        let gw = self.gateway_id();
        let ttl = self.ttl_s as i64;
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut logins = Vec::new();
        for op in ops {
            match *op {
                Op::Opened { user, loc } => {
                    let key = self.keys.location(user);
                    pipe.hset(&key, self.name(loc), gw)
                        .ignore()
                        .expire(&key, ttl)
                        .ignore()
                        .sadd(self.keys.users(), user)
                        .ignore()
                        .hgetall(&key);
                    logins.push((user, loc));
                }
                Op::Closed { user, loc } => {
                    pipe.hdel(self.keys.location(user), self.name(loc)).ignore();
                    if node.router.directory.with_sessions(user, |_| ()).is_none() {
                        pipe.srem(self.keys.users(), user).ignore();
                    }
                }
            }
        }
        let seen: Vec<HashMap<String, String>> = self.query(conn, &pipe).await?;
        if self.policy == MultiLogin::Allow {
            return Ok(());
        }
        // Each login saw every session filed before it (MULTI is atomic). Sessions of
        // the same user on other nodes that the policy displaces are kicked there, and
        // removed here at once (their node may be dead).
        let mut notices: HashMap<&str, Vec<KickNotice>> = HashMap::new();
        let mut pipe = redis::pipe();
        for ((user, loc), map) in logins.iter().zip(&seen) {
            let mut by_node: HashMap<&str, Vec<String>> = HashMap::new();
            for (field, owner) in map {
                if owner == gw {
                    continue; // this node's sessions: the local directory decided
                }
                let displaced = match self.policy {
                    MultiLogin::Allow => false,
                    MultiLogin::Single => true,
                    MultiLogin::KickSamePlatform => {
                        SessionName::parse(field).is_some_and(|n| n.platform == loc.platform)
                    }
                };
                if displaced {
                    by_node.entry(owner.as_str()).or_default().push(field.clone());
                }
            }
            for (owner, sessions) in by_node {
                pipe.hdel(self.keys.location(*user), &sessions).ignore();
                notices.entry(owner).or_default().push(KickNotice {
                    user_id: *user,
                    session_ids: sessions,
                    reason: "replaced by a newer login".into(),
                });
            }
        }
        if notices.is_empty() {
            return Ok(());
        }
        for (owner, list) in &notices {
            for n in list {
                pipe.publish(self.keys.kick(owner), n.encode_to_vec()).ignore();
                debug!(user_id = n.user_id, gateway = owner, sessions = n.session_ids.len(), "cross-node kick");
            }
        }
        self.query::<()>(conn, &pipe).await
    }

    /// Handles one pub/sub message. Bad payloads are logged and dropped.
    async fn on_message(&self, node: &Node, msg: redis::Msg) {
        let channel = msg.get_channel_name();
        let gw = self.gateway_id();
        if channel == self.keys.kick(gw) {
            let Ok(notice) = KickNotice::decode(msg.get_payload_bytes()) else {
                warn!(channel, "KickNotice does not decode; dropped");
                return;
            };
            let reason = if notice.reason.is_empty() { "kicked".to_string() } else { notice.reason };
            for name in notice.session_ids.iter().filter_map(|s| SessionName::parse(s)) {
                let here = name.nonce == self.nonce
                    && node
                        .router
                        .directory
                        .with_sessions(notice.user_id, |s| s.iter().any(|l| l.session == name.id))
                        .unwrap_or(false);
                if here {
                    node.router.kick_session(usize::from(name.shard()), name.id, &reason).await;
                }
            }
            return;
        }
        let Ok(down) = Downstream::decode(msg.get_payload_bytes()) else {
            warn!(channel, "Downstream does not decode; dropped");
            return;
        };
        if down.origin_gateway == gw {
            return; // our own broadcast: delivered locally already
        }
        let Some(mut push) = down.msg else {
            warn!(channel, "Downstream without msg; dropped");
            return;
        };
        if push.server_ts_us == 0 {
            push.server_ts_us = packet::now_us();
        }
        let frame = packet::frame(Command::Push, 0, &push);
        if down.all {
            node.router.broadcast(frame).await;
        } else {
            node.router.push(&down.user_ids, frame).await;
        }
    }

    /// Removes this node's entries (stop, drain): its sessions' location fields, its
    /// user set and its heartbeat.
    async fn remove_all(&self, conn: &mut MultiplexedConnection) -> Result<(), RegistryError> {
        self.remove_gateway(conn, &self.keys.clone()).await
    }

    /// Removes the entries of the node `keys` names.
    async fn remove_gateway(&self, conn: &mut MultiplexedConnection, keys: &Keys) -> Result<(), RegistryError> {
        let gw = keys.gateway_id.as_str();
        let (members,): (Vec<String>,) = self.query(conn, redis::pipe().smembers(keys.users())).await?;
        let users: Vec<i64> = members.iter().filter_map(|m| m.parse().ok()).collect();
        for chunk in users.chunks(SWEEP_CHUNK) {
            let mut pipe = redis::pipe();
            for &u in chunk {
                pipe.hgetall(keys.location(u));
            }
            let maps: Vec<HashMap<String, String>> = self.query(conn, &pipe).await?;
            let mut pipe = redis::pipe();
            for (&u, map) in chunk.iter().zip(&maps) {
                let ours: Vec<&String> = map.iter().filter(|(_, o)| o.as_str() == gw).map(|(f, _)| f).collect();
                if !ours.is_empty() {
                    pipe.hdel(keys.location(u), ours).ignore();
                }
            }
            self.query::<()>(conn, &pipe).await?;
        }
        self.query::<()>(
            conn,
            redis::pipe().del(keys.users()).ignore().del(keys.stats(gw)).ignore().zrem(keys.gateways(), gw).ignore(),
        )
        .await
    }

    /// Connected: reconcile, then serve session changes, sweeps and pub/sub until Redis
    /// is lost (`Err`) or `stop` (`Ok`).
    async fn serve(
        &self,
        node: &Node,
        mut conn: MultiplexedConnection,
        mut messages: redis::aio::PubSubStream,
        ops: &flume::Receiver<Op>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), RegistryError> {
        // Changes queued before now are in the directory already: the reconcile below
        // files them. (A login made while Redis was away is not checked against other
        // nodes: both sessions stay.)
        let stale = ops.drain().count();
        self.resync.store(false, Ordering::Relaxed);
        self.reconcile(node, &mut conn).await?;
        if let Ok(mut slot) = self.conn.lock() {
            *slot = Some(conn.clone());
        }
        self.connected.store(true, Ordering::Release);
        info!(
            gateway_id = self.gateway_id(),
            users = node.router.directory.users(),
            skipped = stale,
            "registry connected"
        );
        let mut sweep = tokio::time::interval(self.sweep);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.tick().await; // the first tick is immediate; we just swept
                            // Deliveries from pub/sub run beside the registry writes, not between them: a
                            // backlog of session changes (right after a login storm) must not hold pushes
                            // for this node's users. Both are polled by this one task.
        let deliveries = async {
            while let Some(m) = messages.next().await {
                self.on_message(node, m).await;
            }
            Err(RegistryError::Redis("subscription connection lost".into()))
        };
        tokio::select! {
            r = deliveries => r,
            r = self.write_loop(node, &mut conn, ops, stop, sweep) => r,
        }
    }

    /// Applies session changes in batches and sweeps, until `stop` (`Ok`) or a Redis
    /// error.
    async fn write_loop(
        &self,
        node: &Node,
        conn: &mut MultiplexedConnection,
        ops: &flume::Receiver<Op>,
        stop: &mut watch::Receiver<bool>,
        mut sweep: tokio::time::Interval,
    ) -> Result<(), RegistryError> {
        let mut batch = Vec::with_capacity(OP_BATCH);
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return Ok(());
                    }
                }
                op = ops.recv_async() => {
                    let Ok(op) = op else { return Ok(()) };
                    batch.clear();
                    batch.push(op);
                    batch.extend(ops.try_iter().take(OP_BATCH - 1));
                    self.apply(node, conn, &batch).await?;
                }
                _ = sweep.tick() => {
                    let dropped = self.dropped.swap(0, Ordering::Relaxed);
                    if self.resync.swap(false, Ordering::Relaxed) {
                        warn!(dropped, "session changes were dropped (queue full); reconciling the registry");
                        self.reconcile(node, conn).await?;
                    } else {
                        self.sweep(node, conn).await?;
                    }
                }
            }
        }
    }

    fn disconnected(&self) {
        self.connected.store(false, Ordering::Release);
        if let Ok(mut slot) = self.conn.lock() {
            *slot = None;
        }
    }

    async fn run(self: Arc<Self>, node: Arc<Node>, mut stop: watch::Receiver<bool>) {
        let Some((ops, ups)) = self.receivers.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let upstream = tokio::spawn(self.clone().upstream_loop(node.clone(), ups));
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
                    self.serve(&node, conn, messages, &ops, &mut stop).await
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
            let cfg = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout));
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map_err(|e| RegistryError::Redis(e.to_string()))?;
            self.remove_all(&mut conn).await
        };
        match tokio::time::timeout(STOP_CLEANUP, cleanup).await {
            Ok(Ok(())) => info!(gateway_id = self.gateway_id(), "removed this node from the registry"),
            Ok(Err(e)) => warn!(cause = %e, "could not remove this node from the registry; its entries expire by TTL"),
            Err(_) => warn!("registry clean-up timed out; this node's entries expire by TTL"),
        }
    }

    /// Pipelines UPSTREAMs into `XADD {p}upstream` and answers each on its shard:
    /// UPSTREAM with the stream id as `bus_id`, or ERROR 3 when Redis did not take it.
    async fn upstream_loop(self: Arc<Self>, node: Arc<Node>, ups: flume::Receiver<UpstreamJob>) {
        let key = self.keys.upstream();
        let gw = self.gateway_id().to_string();
        let mut batch = Vec::with_capacity(UPSTREAM_BATCH);
        while let Ok(job) = ups.recv_async().await {
            batch.clear();
            batch.push(job);
            batch.extend(ups.try_iter().take(UPSTREAM_BATCH - 1));
            let result = match self.conn() {
                Ok(mut conn) => {
                    let mut pipe = redis::pipe();
                    for job in &batch {
                        let name = SessionName { nonce: self.nonce, id: job.session, platform: job.platform };
                        let cmd = pipe.cmd("XADD").arg(&key);
                        if self.maxlen > 0 {
                            cmd.arg("MAXLEN").arg("~").arg(self.maxlen);
                        }
                        cmd.arg("*")
                            .arg("uid")
                            .arg(job.user)
                            .arg("gateway")
                            .arg(&gw)
                            .arg("session")
                            .arg(name.to_string())
                            .arg("platform")
                            .arg(job.platform)
                            .arg("packet")
                            .arg(&job.body[..]);
                    }
                    self.query::<Vec<String>>(&mut conn, &pipe).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(ids) if ids.len() == batch.len() => {
                    for (job, bus_id) in batch.drain(..).zip(ids) {
                        let frame = packet::frame(Command::Upstream, job.seq, &UpstreamResult { bus_id });
                        answer(&node, &job, frame).await;
                    }
                }
                other => {
                    let why = match other {
                        Err(e) => e.to_string(),
                        Ok(_) => "unexpected XADD reply".to_string(),
                    };
                    warn!(cause = %why, count = batch.len(), "UPSTREAM not taken by redis; answering ERROR 3");
                    for job in batch.drain(..) {
                        let frame = packet::error(
                            job.seq,
                            error_code::UPSTREAM_UNAVAILABLE,
                            "upstream bus unavailable: message not accepted, retry later",
                        );
                        answer(&node, &job, frame).await;
                    }
                }
            }
        }
    }
}

async fn answer(node: &Node, job: &UpstreamJob, frame: bytes::Bytes) {
    let _ = node.router.mesh.send_async(job.shard, ShardMsg::Reply { session: job.session, frame }).await;
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

    fn upstream(&self, job: UpstreamJob) -> Result<(), &'static str> {
        if !self.connected() {
            return Err("upstream bus unavailable: redis not connected, retry later");
        }
        self.inner.up_tx.try_send(job).map_err(|_| "upstream bus busy: message not accepted, retry later")
    }

    fn run(&self, node: Arc<Node>, stop: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(self.inner.clone().run(node, stop))
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
        Box::pin(async move {
            let inner = &self.inner;
            let mut conn = inner.conn()?;
            let mut out = Vec::with_capacity(users.len());
            for chunk in users.chunks(SWEEP_CHUNK) {
                let mut pipe = redis::pipe();
                for &u in chunk {
                    pipe.hgetall(inner.keys.location(u));
                }
                let maps: Vec<HashMap<String, String>> = inner.query(&mut conn, &pipe).await?;
                for map in maps {
                    let mut sessions: Vec<RemoteSession> = map
                        .into_iter()
                        .filter(|(_, owner)| owner != inner.gateway_id())
                        .map(|(field, owner)| RemoteSession {
                            name: SessionName::parse(&field),
                            gateway_id: owner,
                            session_id: field,
                        })
                        .collect();
                    sessions.sort_by(|a, b| (&a.gateway_id, &a.session_id).cmp(&(&b.gateway_id, &b.session_id)));
                    out.push(sessions);
                }
            }
            Ok(out)
        })
    }

    fn push<'a>(&'a self, users: &'a [i64], msg: &'a PushMsg) -> BoxFuture<'a, Result<RemotePush, RegistryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let located = self.locate(users).await?;
            // gateway -> indexes (into `users`) of the users it holds
            let mut by_node: HashMap<&str, Vec<usize>> = HashMap::new();
            for (i, sessions) in located.iter().enumerate() {
                let mut last = None;
                for s in sessions {
                    if last != Some(s.gateway_id.as_str()) {
                        by_node.entry(s.gateway_id.as_str()).or_default().push(i);
                        last = Some(s.gateway_id.as_str());
                    }
                }
            }
            let mut taken = vec![false; users.len()];
            if by_node.is_empty() {
                return Ok(RemotePush { taken, nodes: 0 });
            }
            let nodes: Vec<(&str, Vec<usize>)> = by_node.into_iter().collect();
            let mut pipe = redis::pipe();
            for (gateway, idx) in &nodes {
                let down = Downstream {
                    user_ids: idx.iter().map(|&i| users[i]).collect(),
                    all: false,
                    msg: Some(msg.clone()),
                    origin_gateway: inner.gateway_id().to_string(),
                };
                pipe.publish(inner.keys.push(gateway), down.encode_to_vec());
            }
            let mut conn = inner.conn()?;
            let receivers: Vec<i64> = inner.query(&mut conn, &pipe).await?;
            let mut reached = 0;
            for ((_, idx), n) in nodes.iter().zip(receivers) {
                if n > 0 {
                    reached += 1;
                    for &i in idx {
                        taken[i] = true;
                    }
                }
            }
            Ok(RemotePush { taken, nodes: reached })
        })
    }

    fn broadcast<'a>(&'a self, msg: &'a PushMsg) -> BoxFuture<'a, Result<usize, RegistryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let down = Downstream {
                user_ids: Vec::new(),
                all: true,
                msg: Some(msg.clone()),
                origin_gateway: inner.gateway_id().to_string(),
            };
            let mut conn = inner.conn()?;
            let (n,): (i64,) =
                inner.query(&mut conn, redis::pipe().publish(inner.keys.push_all(), down.encode_to_vec())).await?;
            // We are subscribed too (and skip our own).
            Ok(usize::try_from(n - 1).unwrap_or(0))
        })
    }

    fn kick<'a>(
        &'a self,
        user: i64,
        platform: Option<i32>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<usize, RegistryError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let located = self.locate(&[user]).await?;
            let mut by_node: HashMap<&str, Vec<String>> = HashMap::new();
            for s in located.iter().flatten() {
                let matches = match platform {
                    None => true,
                    Some(p) => s.name.is_some_and(|n| n.platform == p),
                };
                if matches {
                    by_node.entry(s.gateway_id.as_str()).or_default().push(s.session_id.clone());
                }
            }
            if by_node.is_empty() {
                return Ok(0);
            }
            let nodes: Vec<(&str, Vec<String>)> = by_node.into_iter().collect();
            let mut pipe = redis::pipe();
            for (gateway, sessions) in &nodes {
                let notice = KickNotice { user_id: user, session_ids: sessions.clone(), reason: reason.to_string() };
                pipe.publish(inner.keys.kick(gateway), notice.encode_to_vec());
            }
            let mut conn = inner.conn()?;
            let receivers: Vec<i64> = inner.query(&mut conn, &pipe).await?;
            // Kicked sessions leave the registry now, whether or not their node is alive.
            let mut pipe = redis::pipe();
            for (_, sessions) in &nodes {
                pipe.hdel(inner.keys.location(user), sessions).ignore();
            }
            inner.query::<()>(&mut conn, &pipe).await?;
            Ok(nodes.iter().zip(receivers).filter(|(_, n)| *n > 0).map(|((_, s), _)| s.len()).sum())
        })
    }
}
