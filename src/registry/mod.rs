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
//! The registry is handed a [`LocalNode`] (this node as it needs it: the directory's
//! answers, a way to deliver what other nodes send), never the node itself, so nothing
//! here depends on shards or the router. Sessions are named in the registry by
//! [`SessionName`].

pub mod redis;

use crate::config::Config;
use crate::directory::SessionLoc;
use crate::proto::PushMsg;
use crate::session::{SessionId, SessionName};
use bytes::Bytes;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed `Send` future (the traits are used as `Arc<dyn ..>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a control-plane registry call could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not connected to Redis (down, or reconnecting).
    #[error("registry unavailable (Redis not connected)")]
    Unavailable,
    /// `cluster.redis_url` does not parse (a start-up error).
    #[error("cluster.redis_url: {0}")]
    Url(#[source] ::redis::RedisError),
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis did not answer `what` within `cluster.command_timeout_ms`.
    #[error("redis: {what}: no answer within {ms} ms")]
    Timeout { what: &'static str, ms: u128 },
    /// The pub/sub connection ended: Redis is taken as lost.
    #[error("redis: subscription connection lost")]
    SubscriptionLost,
    /// Redis answered the command named with a reply of the wrong shape.
    #[error("redis: unexpected reply to {0}")]
    Unexpected(&'static str),
}

/// Why an UPSTREAM was refused at once (the client gets ERROR 3 with this text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Embedded mode: there is no bus (UPSTREAM is delivered on this node instead).
    #[error("no upstream bus in embedded mode")]
    NoBus,
    /// Redis is down or reconnecting.
    #[error("upstream bus unavailable: redis not connected, retry later")]
    Disconnected,
    /// The queue to the bus is full.
    #[error("upstream bus busy: message not accepted, retry later")]
    Busy,
}

/// This node as a registry sees it: what the registry reads (the local directory, the
/// node's figures for its summary) and what it hands back (deliveries and kicks other
/// nodes send here, answers to UPSTREAMs). Implemented by [`Node`](crate::node::Node),
/// which passes deliveries to its router; the registry sees nothing else of the node.
pub trait LocalNode: Send + Sync {
    /// `user`'s sessions on this node (empty when offline here).
    fn sessions(&self, user: i64) -> Vec<SessionLoc>;

    /// Whether `user` has a session on this node.
    fn is_online(&self, user: i64) -> bool;

    /// Every local user with their sessions, at about this moment.
    fn snapshot(&self) -> Vec<(i64, Vec<SessionLoc>)>;

    /// The node's figures, for its summary in the registry.
    fn figures(&self) -> Figures;

    /// Delivers `msg` to `users`' sessions on this node (a `Downstream` from pub/sub).
    fn push<'a>(&'a self, users: &'a [i64], msg: &'a PushMsg) -> BoxFuture<'a, ()>;

    /// Delivers `msg` to every session on this node.
    fn broadcast<'a>(&'a self, msg: &'a PushMsg) -> BoxFuture<'a, ()>;

    /// Kicks those of `sessions` that are still `user`'s sessions here.
    fn kick<'a>(&'a self, user: i64, sessions: &'a [SessionId], reason: &'a str) -> BoxFuture<'a, ()>;

    /// Queues `frame` to `session` (an answer to its request), if it is still there.
    fn reply(&self, session: SessionId, frame: Bytes) -> BoxFuture<'_, ()>;
}

/// A node's figures as its summary in the registry carries them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Connections open (upgraded or upgrading).
    pub connections: u64,
    /// Users with a session.
    pub users: u64,
    /// Shards.
    pub shards: u64,
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
    /// Sender's session; the answer goes to it (on the shard its id names).
    pub session: SessionId,
    /// Sender's platform.
    pub platform: i32,
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
    fn upstream(&self, job: UpstreamJob) -> Result<(), UpstreamError>;

    /// Control plane: the registry's background work (connection, subscriptions,
    /// batched writes, sweeps) for `local`, until `stop` turns true; then it removes
    /// this node's entries.
    fn run(&self, local: Arc<dyn LocalNode>, stop: tokio::sync::watch::Receiver<bool>) -> BoxFuture<'static, ()>;

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

    fn upstream(&self, _: UpstreamJob) -> Result<(), UpstreamError> {
        Err(UpstreamError::NoBus)
    }

    fn run(&self, _: Arc<dyn LocalNode>, _: tokio::sync::watch::Receiver<bool>) -> BoxFuture<'static, ()> {
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
