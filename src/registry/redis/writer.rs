//! The write side of the Redis registry: session changes from the shards, applied in
//! batches (one MULTI each, which also orders cross-node logins), the periodic sweep
//! (heartbeat, summary, re-filing with TTL renewal, reaping dead nodes), and the
//! reconcile that makes Redis agree with the local directory after a reconnect or a
//! lost change. All of it runs in one task, awaiting each pipeline before the next, so
//! a sweep can never re-file a session whose removal it already applied.

use super::{Inner, Keys};
use crate::config::MultiLogin;
use crate::directory::SessionLoc;
use crate::packet;
use crate::proto::KickNotice;
use crate::registry::{LocalNode, RegistryError};
use crate::session::SessionName;
use prost::Message;
use redis::aio::MultiplexedConnection;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Session changes applied in one MULTI.
const OP_BATCH: usize = 1024;
/// Users per sweep or clean-up pipeline.
const CHUNK: usize = 512;

/// A session change, from a shard.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    /// `user`'s session `loc` was bound on this node.
    Opened { user: i64, loc: SessionLoc },
    /// It ended, or a newer login displaced it.
    Closed { user: i64, loc: SessionLoc },
}

/// A location hash's fields one clean-up pass removes, and whether the user leaves
/// the node's user set.
struct Prune<'a> {
    /// Location fields (session names) to HDEL.
    fields: Vec<&'a String>,
    /// SREM the user from the node's user set (no session of it is left there).
    forget_user: bool,
}

impl Inner {
    /// Data plane: queues a session change without ever blocking the shard.
    pub(super) fn send_op(&self, op: Op) {
        if self.ops_tx.try_send(op).is_err() {
            // Full (Redis slow or down) or stopped: the directory still has the truth;
            // the next sweep reconciles Redis with it.
            self.resync.store(true, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies session changes in batches and sweeps, until `stop` (`Ok`) or a Redis
    /// error.
    pub(super) async fn write_loop(
        &self,
        local: &dyn LocalNode,
        conn: &mut MultiplexedConnection,
        ops: &flume::Receiver<Op>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), RegistryError> {
        let mut sweep = tokio::time::interval(self.sweep);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.tick().await; // the first tick is immediate; the reconcile just swept
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
                    self.apply(local, conn, &batch).await?;
                }
                _ = sweep.tick() => {
                    let dropped = self.dropped.swap(0, Ordering::Relaxed);
                    if self.resync.swap(false, Ordering::Relaxed) {
                        warn!(dropped, "session changes were dropped (queue full); reconciling the registry");
                        self.reconcile(local, conn).await?;
                    } else {
                        self.sweep(local, conn).await?;
                    }
                }
            }
        }
    }

    /// Applies a batch of session changes in one MULTI, then kicks what the logins in
    /// it displace on other nodes.
    async fn apply(
        &self,
        local: &dyn LocalNode,
        conn: &mut MultiplexedConnection,
        ops: &[Op],
    ) -> Result<(), RegistryError> {
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
                    if !local.is_online(user) {
                        pipe.srem(self.keys.users(), user).ignore();
                    }
                }
            }
        }
        let seen: Vec<HashMap<String, String>> = self.query(conn, &pipe).await?;
        // Each login saw every session filed before it (MULTI is atomic). Sessions of
        // the same user on other nodes that the policy displaces are kicked there, and
        // removed here at once (their node may be dead). This node's own sessions were
        // decided by the local directory.
        let mut notices: HashMap<&str, Vec<KickNotice>> = HashMap::new();
        let mut pipe = redis::pipe();
        for ((user, loc), map) in logins.iter().zip(&seen) {
            let mut by_node: HashMap<&str, Vec<String>> = HashMap::new();
            for (field, owner) in map.iter().filter(|(_, owner)| owner.as_str() != gw) {
                // A name that does not parse is not a gateway's session: left alone.
                let displaced =
                    SessionName::parse(field).is_some_and(|old| self.policy.displaces(old.platform, loc.platform));
                if displaced {
                    by_node.entry(owner.as_str()).or_default().push(field.clone());
                }
            }
            for (owner, sessions) in by_node {
                pipe.hdel(self.keys.location(*user), &sessions).ignore();
                notices.entry(owner).or_default().push(KickNotice {
                    user_id: *user,
                    session_ids: sessions,
                    reason: MultiLogin::KICK_REASON.into(),
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

    /// Makes Redis agree with the local directory: removes this gateway's entries that
    /// are not local sessions any more (a previous run's, or changes lost while Redis
    /// was away), then files every local session (see [`Inner::sweep`]).
    pub(super) async fn reconcile(
        &self,
        local: &dyn LocalNode,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), RegistryError> {
        let gw = self.gateway_id();
        self.prune(conn, &self.keys, |user, map| {
            let here: HashSet<_> = local.sessions(user).iter().map(|l| l.session).collect();
            let ours_now =
                |field: &str| SessionName::parse(field).is_some_and(|n| n.nonce == self.nonce && here.contains(&n.id));
            Prune {
                fields: map.iter().filter(|(f, owner)| owner.as_str() == gw && !ours_now(f)).map(|(f, _)| f).collect(),
                forget_user: here.is_empty(),
            }
        })
        .await?;
        self.sweep(local, conn).await
    }

    /// Removes the entries of the node `keys` names: its sessions' location fields, its
    /// user set, its summary and its heartbeat (this node's when it stops, a dead
    /// node's when it is reaped).
    pub(super) async fn remove_gateway(
        &self,
        conn: &mut MultiplexedConnection,
        keys: &Keys,
    ) -> Result<(), RegistryError> {
        let gw = keys.gateway_id.as_str();
        self.prune(conn, keys, |_, map| Prune {
            fields: map.iter().filter(|(_, owner)| owner.as_str() == gw).map(|(f, _)| f).collect(),
            forget_user: false,
        })
        .await?;
        self.query::<()>(
            conn,
            redis::pipe().del(keys.users()).ignore().del(keys.stats(gw)).ignore().zrem(keys.gateways(), gw).ignore(),
        )
        .await
    }

    /// The one clean-up loop: walks the users in the user set of the node `keys` names,
    /// reads their locations a chunk at a time (pipelined HGETALL) and removes what
    /// `pick` says (pipelined HDEL, SREM).
    async fn prune(
        &self,
        conn: &mut MultiplexedConnection,
        keys: &Keys,
        pick: impl for<'m> Fn(i64, &'m HashMap<String, String>) -> Prune<'m>,
    ) -> Result<(), RegistryError> {
        let (members,): (Vec<String>,) = self.query(conn, redis::pipe().smembers(keys.users())).await?;
        let users: Vec<i64> = members.iter().filter_map(|m| m.parse().ok()).collect();
        for chunk in users.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for &u in chunk {
                pipe.hgetall(keys.location(u));
            }
            let maps: Vec<HashMap<String, String>> = self.query(conn, &pipe).await?;
            let mut pipe = redis::pipe();
            for (&u, map) in chunk.iter().zip(&maps) {
                let prune = pick(u, map);
                if !prune.fields.is_empty() {
                    pipe.hdel(keys.location(u), prune.fields).ignore();
                }
                if prune.forget_user {
                    pipe.srem(keys.users(), u).ignore();
                }
            }
            self.query::<()>(conn, &pipe).await?;
        }
        Ok(())
    }

    /// Heartbeat and summary, then files every local session again and renews the TTLs
    /// of its location and of this node's user set: one pass over the directory,
    /// pipelined. Then reaps nodes whose heartbeat is older than `location_ttl_s`.
    async fn sweep(&self, local: &dyn LocalNode, conn: &mut MultiplexedConnection) -> Result<(), RegistryError> {
        let gw = self.gateway_id();
        let now_ms = packet::now_us() / 1000;
        let stats = self.keys.stats(gw);
        let figures = local.figures();
        let summary = [("connections", figures.connections), ("users", figures.users), ("shards", figures.shards)];
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
        let snapshot = local.snapshot();
        for chunk in snapshot.chunks(CHUNK) {
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
            self.remove_gateway(conn, &self.keys.of(gone)).await?;
            info!(gateway_id = %gone, "reaped a node that stopped beating");
        }
        Ok(())
    }
}
