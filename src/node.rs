//! What every shard and the control plane share: [`Node`] (`Arc`, read-mostly: config,
//! token verifier, the delivery facade, the node's admission state and its [`Phase`]),
//! and [`Admission`], a connection's slot under `max_connections` (and the per-IP cap),
//! released when the connection goes.
//!
//! The node is built once by [`Gateway::start`](crate::Gateway::start) (or
//! [`Node::standalone`] for a shard driven by hand) and never changes shape; its
//! interior state is atomics and lock-free maps only. The registry sees the node only
//! as a [`LocalNode`].

use crate::admit::IpTable;
use crate::auth::{KeyError, Verifier};
use crate::config::Config;
use crate::directory::SessionLoc;
use crate::proto::PushMsg;
use crate::registry::{self, BoxFuture, Figures, LocalNode, Registry};
use crate::router::{Router, Scope, ShardMsg};
use crate::session::{SessionId, SessionName};
use bytes::Bytes;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

/// Where the node is in its life; one value for the whole node, read by the upgrade
/// (503 once draining), the accept loops and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Accepting and serving.
    Serving = 0,
    /// [`Gateway::shutdown`](crate::Gateway::shutdown) was called: the listeners are
    /// shut, new upgrades get 503, every shard closes its clients with 1001 and stops.
    Draining = 1,
}

/// Shared by every shard and the control plane.
#[derive(Debug)]
pub struct Node {
    /// The configuration the node started with (read-only, like the whole node).
    pub config: Config,
    /// Token checks.
    verifier: Verifier,
    /// The delivery facade: directory, shard inboxes, registry.
    router: Router,
    /// Connections open in the process (upgraded or upgrading), for `max_connections`;
    /// moved by [`Admission`] only.
    open: AtomicUsize,
    /// Effective `max_connections`.
    max_connections: usize,
    /// A [`Phase`].
    phase: AtomicU8,
    /// Random per start, part of every session name.
    boot_nonce: u32,
    /// Connections per client address, for `server.max_connections_per_ip`; counted by
    /// [`Admission`] only (its counting methods are crate-private).
    pub per_ip: IpTable,
}

impl Node {
    /// A node serving `config` over the shard inboxes of `mesh`, reaching other nodes
    /// through `registry`.
    pub fn new(
        config: Config,
        verifier: Verifier,
        registry: Arc<dyn Registry>,
        mesh: shards::MeshSender<ShardMsg>,
        max_connections: usize,
        boot_nonce: u32,
    ) -> Self {
        Self {
            verifier,
            router: Router::new(mesh, registry, config.sessions.multi_login),
            open: AtomicUsize::new(0),
            max_connections,
            phase: AtomicU8::new(Phase::Serving as u8),
            boot_nonce,
            per_ip: IpTable::new(config.server.max_connections_per_ip),
            config,
        }
    }

    /// A node without listeners, executors or control plane, whose shard inboxes nobody
    /// serves (a message to another shard is dropped as if that shard had stopped):
    /// for driving a [`Shard`](crate::shard::Shard) made with
    /// [`Shard::new`](crate::shard::Shard::new) by hand, as the fuzz targets in `fuzz/`
    /// do. [`Gateway::start`](crate::Gateway::start) builds the real one.
    pub fn standalone(config: Config) -> Result<Arc<Self>, KeyError> {
        let verifier = Verifier::from_config(&config.auth)?;
        let mesh = shards::Mesh::<ShardMsg>::new(config.shard_count(), 1);
        // 0 means "from the open-file limit" in a real node; a hand-driven shard opens
        // no sockets, so no limit.
        let max_connections = match config.connection.max_connections {
            0 => usize::MAX,
            n => n,
        };
        // Single node: the hand-driven shard never reaches a cluster.
        let registry = Arc::new(registry::Embedded);
        Ok(Arc::new(Self::new(config, verifier, registry, mesh.sender, max_connections, 0)))
    }

    /// This node's id.
    pub fn gateway_id(&self) -> &str {
        &self.config.server.gateway_id
    }

    /// Token checks.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The delivery facade.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Where users are beyond this node.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        self.router.registry()
    }

    /// A session's name across the cluster (also `AuthResult.session_id`).
    pub fn session_name(&self, id: SessionId, platform: i32) -> SessionName {
        SessionName { nonce: self.boot_nonce, id, platform }
    }

    /// Connections open now (upgraded or upgrading).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Effective `max_connections`.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Where the node is in its life.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Serving,
            _ => Phase::Draining,
        }
    }

    /// Enters [`Phase::Draining`]; false when the node was draining already.
    pub fn begin_drain(&self) -> bool {
        self.phase.swap(Phase::Draining as u8, Ordering::AcqRel) == Phase::Serving as u8
    }
}

/// The registry's view of this node: the router's answers and deliveries (this node
/// only: whatever the registry hands here came from another node), and the figures.
impl LocalNode for Node {
    fn sessions(&self, user: i64) -> Vec<SessionLoc> {
        self.router.with_sessions(user, <[SessionLoc]>::to_vec).unwrap_or_default()
    }

    fn is_online(&self, user: i64) -> bool {
        self.router.is_online(user)
    }

    fn snapshot(&self) -> Vec<(i64, Vec<SessionLoc>)> {
        self.router.snapshot()
    }

    fn figures(&self) -> Figures {
        Figures {
            connections: self.open_connections() as u64,
            users: self.router.users() as u64,
            shards: self.router.shards() as u64,
        }
    }

    fn push<'a>(&'a self, users: &'a [i64], msg: &'a PushMsg) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.router.push(users, msg, Scope::Node).await;
        })
    }

    fn broadcast<'a>(&'a self, msg: &'a PushMsg) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.router.broadcast(msg, Scope::Node).await;
        })
    }

    fn kick<'a>(&'a self, user: i64, sessions: &'a [SessionId], reason: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.router.kick_sessions(user, sessions, reason).await;
        })
    }

    fn reply(&self, session: SessionId, frame: Bytes) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.router.reply(session, frame).await;
        })
    }
}

/// A slot counted in the node's open connections and, when the per-IP cap is on, in
/// [`Node::per_ip`]; released on drop. Held by the connection for its whole life.
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
