//! The cluster registry: where users are beyond this node, and how to reach them.
//!
//! [`Registry`] is one trait with two implementations, chosen by `cluster.redis_url`:
//! [`Embedded`] (the default: single node, the local [`Directory`](crate::directory)
//! is the whole truth, nothing to do) and [`redis::RedisRegistry`] (the Redis keys and
//! channels of the contract's "Cluster mode").
//!
//! Two sides, two rules. The data-plane methods ([`Registry::opened`],
//! [`Registry::closed`], [`Registry::upstream`]) are called on a shard: they never block
//! and never touch Redis, they hand an owned message to the control plane over a bounded
//! flume queue. The control-plane methods (`locate`, `push`, `broadcast`, `kick`, `run`)
//! are async and run on the control-plane thread's tokio runtime, next to the admin API.
//!
//! Sessions are named in the registry by [`SessionName`]:
//! `{boot_nonce:08x}-{id:x}-{platform}`, so any node can tell a remote session's shard
//! and platform from its name (for `/v1/online` and cross-node multi-login) without
//! asking its node.

pub mod redis;

use crate::config::Config;
use crate::directory::SessionLoc;
use crate::proto::PushMsg;
use crate::shard::Node;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed `Send` future (the trait is used as `Arc<dyn Registry>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a control-plane registry call could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not connected to Redis (down, or reconnecting).
    #[error("registry unavailable (Redis not connected)")]
    Unavailable,
    /// Redis answered with an error, or not within `cluster.command_timeout_ms`.
    #[error("redis: {0}")]
    Redis(String),
}

/// A session's name in the registry: `{nonce:08x}-{id:x}-{platform}`. The nonce is the
/// node run's `boot_nonce`, `id` the process-unique session id (`shard << 48 | n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionName {
    /// The node run that owns the session.
    pub nonce: u32,
    /// Session id within that run.
    pub id: u64,
    /// Client platform.
    pub platform: i32,
}

impl SessionName {
    /// Parses a name; `None` for anything that is not one of ours (never panics).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, '-');
        let nonce = parts.next().filter(|p| p.len() == 8)?;
        let nonce = u32::from_str_radix(nonce, 16).ok()?;
        let id = u64::from_str_radix(parts.next()?, 16).ok()?;
        let platform = parts.next()?.parse().ok()?;
        Some(Self { nonce, id, platform })
    }

    /// The shard that owns the session.
    pub fn shard(&self) -> u16 {
        (self.id >> 48) as u16
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{:x}-{}", self.nonce, self.id, self.platform)
    }
}

/// A session on another node, as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSession {
    /// The node holding it.
    pub gateway_id: String,
    /// Its name (the location hash field).
    pub session_id: String,
    /// Platform and shard, when the name parses (it always does when a gateway wrote it).
    pub name: Option<SessionName>,
}

/// Another node's summary, as its last sweep filed it (`{p}gateway:{id}:stats`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeSummary {
    pub gateway_id: String,
    pub connections: u64,
    pub users: u64,
    pub shards: u64,
    /// Its last heartbeat in `{p}gateways`, Unix ms.
    pub last_seen_ms: i64,
}

/// What a push to other nodes reached.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemotePush {
    /// Per named user: at least one other node holding them took the push (PUBLISH
    /// reached a subscriber). A user listed on a node that is gone counts as not taken.
    pub taken: Vec<bool>,
    /// Other nodes the push was published to and received by.
    pub nodes: usize,
}

/// An UPSTREAM on its way to the upstream bus, and how to answer it.
#[derive(Debug, Clone)]
pub struct UpstreamJob {
    /// Sender.
    pub user: i64,
    /// Sender's session (process-unique id); the answer goes to it.
    pub session: u64,
    /// Sender's platform.
    pub platform: i32,
    /// Shard of the sender's connection.
    pub shard: usize,
    /// The request's `seq`, echoed in the answer.
    pub seq: i64,
    /// The `UpstreamMsg` bytes.
    pub body: Vec<u8>,
}

/// The cluster registry. See the module docs for which side calls what.
pub trait Registry: Send + Sync + fmt::Debug {
    /// `embedded` or `redis`.
    fn kind(&self) -> &'static str;

    /// Ready to serve the cluster (always true for the embedded registry).
    fn connected(&self) -> bool;

    /// Data plane: a session was bound on this node (after the local directory took it).
    fn opened(&self, user: i64, loc: SessionLoc);

    /// Data plane: a session ended or was displaced.
    fn closed(&self, user: i64, loc: SessionLoc);

    /// Whether UPSTREAM goes to a bus ([`Registry::upstream`]) rather than being
    /// delivered on this node (embedded mode).
    fn has_bus(&self) -> bool;

    /// Data plane: hands an UPSTREAM to the bus. The answer (UPSTREAM or ERROR 3) comes
    /// back to the session's shard later; `Err` means it was refused now.
    fn upstream(&self, job: UpstreamJob) -> Result<(), &'static str>;

    /// Control plane: the registry's background work (connection, subscriptions,
    /// batched writes, sweeps), until `stop` turns true; then it removes this node's
    /// entries.
    fn run(&self, node: Arc<Node>, stop: tokio::sync::watch::Receiver<bool>) -> BoxFuture<'static, ()>;

    /// Control plane: the other nodes' summaries; `None` for a single node.
    fn nodes(&self) -> BoxFuture<'_, Result<Option<Vec<NodeSummary>>, RegistryError>> {
        Box::pin(async { Ok(None) })
    }

    /// Control plane: each user's sessions on other nodes.
    fn locate<'a>(&'a self, users: &'a [i64]) -> BoxFuture<'a, Result<Vec<Vec<RemoteSession>>, RegistryError>>;

    /// Control plane: delivers `msg` to `users`' sessions on other nodes.
    fn push<'a>(&'a self, users: &'a [i64], msg: &'a PushMsg) -> BoxFuture<'a, Result<RemotePush, RegistryError>>;

    /// Control plane: delivers `msg` to every other node's users; returns how many
    /// other nodes took it.
    fn broadcast<'a>(&'a self, msg: &'a PushMsg) -> BoxFuture<'a, Result<usize, RegistryError>>;

    /// Control plane: kicks `user`'s sessions on other nodes (on `platform` only, when
    /// given); returns how many sessions were handed to a live node.
    fn kick<'a>(
        &'a self,
        user: i64,
        platform: Option<i32>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<usize, RegistryError>>;
}

/// The registry for `config`: Redis when `cluster.redis_url` is set, else embedded.
pub fn from_config(config: &Config, boot_nonce: u32) -> Result<Arc<dyn Registry>, RegistryError> {
    match &config.cluster.redis_url {
        Some(url) => Ok(Arc::new(redis::RedisRegistry::new(url, config, boot_nonce)?)),
        None => Ok(Arc::new(Embedded)),
    }
}

/// Single node: the local directory is the registry; there are no other nodes.
#[derive(Debug, Default)]
pub struct Embedded;

impl Registry for Embedded {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn connected(&self) -> bool {
        true
    }

    fn opened(&self, _: i64, _: SessionLoc) {}

    fn closed(&self, _: i64, _: SessionLoc) {}

    fn has_bus(&self) -> bool {
        false
    }

    fn upstream(&self, _: UpstreamJob) -> Result<(), &'static str> {
        Err("no upstream bus in embedded mode")
    }

    fn run(&self, _: Arc<Node>, _: tokio::sync::watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    fn locate<'a>(&'a self, users: &'a [i64]) -> BoxFuture<'a, Result<Vec<Vec<RemoteSession>>, RegistryError>> {
        Box::pin(async move { Ok(vec![Vec::new(); users.len()]) })
    }

    fn push<'a>(&'a self, users: &'a [i64], _: &'a PushMsg) -> BoxFuture<'a, Result<RemotePush, RegistryError>> {
        Box::pin(async move { Ok(RemotePush { taken: vec![false; users.len()], nodes: 0 }) })
    }

    fn broadcast<'a>(&'a self, _: &'a PushMsg) -> BoxFuture<'a, Result<usize, RegistryError>> {
        Box::pin(async { Ok(0) })
    }

    fn kick<'a>(&'a self, _: i64, _: Option<i32>, _: &'a str) -> BoxFuture<'a, Result<usize, RegistryError>> {
        Box::pin(async { Ok(0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_round_trip_and_garbage_is_none() {
        for (nonce, id, platform) in [(0, 1, 0), (0xdead_beef, (3u64 << 48) | 77, -5), (u32::MAX, u64::MAX, i32::MAX)] {
            let n = SessionName { nonce, id, platform };
            assert_eq!(SessionName::parse(&n.to_string()), Some(n));
        }
        assert_eq!(SessionName::parse("0000000a-3000000000001-2").map(|n| n.shard()), Some(3));
        for bad in ["", "x", "0000000a", "0000000a-zz-1", "0000000a-1-", "a-1-1", "0000000a-1-1-1", "é"] {
            assert_eq!(SessionName::parse(bad), None, "{bad:?}");
        }
    }
}
