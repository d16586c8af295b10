//! The delivery facade: the one way a push, a broadcast, a kick or an answer reaches the
//! shards, whatever its source — the admin API, a `Downstream` or `KickNotice` from
//! another node (through the registry), or a shard itself (an embedded-mode UPSTREAM,
//! a multi-login displacement).
//!
//! Every request is planned by one function, `Router::plan` (`plan.rs`: one pass over
//! the [`Directory`] yields both the per-shard messages and, for a push, which named users
//! are online here), and the plan is handed to the shards in one of two ways:
//! - from the control plane ([`Router::push`], [`Router::broadcast`], [`Router::kick`],
//!   ...): it waits for room in each inbox (backpressure to the HTTP caller);
//! - from a shard ([`Router::push_now`], [`Router::bind`]): it never waits. The calling
//!   shard's own messages are applied in place ([`LocalShard`]; a shard cannot send to
//!   itself), others are `try_send`; a full inbox hands the wait to a background task
//!   and is counted.
//!
//! A push's frame is encoded once here and shared (`Bytes`) by every recipient. After
//! this node's shards, a cluster-wide request ([`Scope::Cluster`]) goes to the
//! [`Registry`] for the users on other nodes. The router owns the directory (who is
//! where on this node) and the shard inboxes; no other room touches either.

mod plan;

use crate::config::MultiLogin;
use crate::directory::{Directory, SessionLoc};
use crate::metrics::ShardStats;
use crate::packet;
use crate::proto::{Command, PushMsg};
use crate::registry::{Registry, RegistryError, RemotePush};
use crate::session::SessionId;
use bytes::Bytes;
use plan::{Kick, Request};
use shards::{MeshSender, SendError};
use std::sync::Arc;
use tracing::debug;

/// Messages a shard's inbox carries. Only owned `Send` data: ids and shared frames.
#[derive(Debug)]
pub enum ShardMsg {
    /// Deliver `frame` to every connection of `users` held by the receiving shard.
    /// `at`: when the router planned it ([`crate::metrics::stamp`]), for the push
    /// delivery latency.
    Push { users: Vec<i64>, frame: Bytes, at: u64 },
    /// Deliver `frame` to every authenticated connection of the receiving shard
    /// (`at` as for `Push`).
    Broadcast { frame: Bytes, at: u64 },
    /// Kick one session: a KICK packet carrying `reason`, then close 4003.
    Kick { session: SessionId, reason: String },
    /// Queue `frame` (an answer that came back from the control plane, e.g. to an
    /// UPSTREAM handed to Redis) to `session`, if it is still there.
    Reply { session: SessionId, frame: Bytes },
    /// Answer with this shard's figures.
    Stats { reply: flume::Sender<(usize, ShardStats)> },
    /// Stop accepting, close every client with 1001, and stop.
    Drain(Drain),
}

/// A drain order: close every client with 1001 (retry hint spread over `window_ms`)
/// and stop by `deadline_ms` from now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drain {
    /// The clients' retry hints are spread over this window (`server.drain_window_ms`).
    pub window_ms: u64,
    /// Connections still open this long after the order are dropped
    /// (`server.shutdown_timeout_ms`).
    pub deadline_ms: u64,
}

/// The shard a data-plane call comes from. Its own messages are applied in place, never
/// through its inbox (see the module docs).
pub trait LocalShard {
    /// The shard's index.
    fn id(&self) -> usize;
    /// Applies a message addressed to this shard, as if it had come through the inbox.
    fn apply(&self, msg: ShardMsg);
    /// Counts a message that found a peer's inbox full (its wait went to a background
    /// task).
    fn backpressured(&self);
}

/// How far a control-plane request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This node's shards only (what another node sent us; its registry did the rest).
    Node,
    /// This node's shards, then the registry for the other nodes.
    Cluster,
}

/// What a push reached.
#[derive(Debug)]
pub struct Pushed {
    /// Per named user (same order): at least one session on this node.
    pub here: Vec<bool>,
    /// Shards the push was handed to.
    pub shards: usize,
    /// The other nodes' part; `None` when the request was for this node only.
    pub remote: Option<Result<RemotePush, RegistryError>>,
}

impl Pushed {
    /// Named users with at least one session on this node.
    pub fn local_users(&self) -> usize {
        self.here.iter().filter(|&&h| h).count()
    }

    /// Whether the push reached named user `i` here or on another node.
    pub fn delivered(&self, i: usize) -> bool {
        self.here[i] || matches!(&self.remote, Some(Ok(r)) if r.taken[i])
    }
}

/// What a broadcast reached.
#[derive(Debug)]
pub struct Broadcasted {
    /// Users online on this node.
    pub users: usize,
    /// Shards the broadcast was handed to.
    pub shards: usize,
    /// Other nodes that took it; `None` when the request was for this node only.
    pub remote: Option<Result<usize, RegistryError>>,
}

/// What a kick reached.
#[derive(Debug)]
pub struct Kicked {
    /// Sessions on this node handed to their shards.
    pub here: usize,
    /// Sessions on other nodes handed to a live node; `None` when the request was for
    /// this node only.
    pub remote: Option<Result<usize, RegistryError>>,
}

/// Shared by every shard and the control plane (inside the `Arc<Node>`).
#[derive(Debug)]
pub struct Router {
    /// Where users are on this node.
    directory: Directory,
    /// Every shard's inbox; the receiving ends are the shards' lifecycles
    /// ([`crate::service`]).
    mesh: MeshSender<ShardMsg>,
    /// Where users are beyond this node.
    registry: Arc<dyn Registry>,
    /// `sessions.multi_login`.
    policy: MultiLogin,
}

impl Router {
    /// A router over the inboxes of `mesh`, with an empty directory.
    pub fn new(mesh: MeshSender<ShardMsg>, registry: Arc<dyn Registry>, policy: MultiLogin) -> Self {
        Self { directory: Directory::new(), mesh, registry, policy }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.mesh.shards()
    }

    /// The cluster registry.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    // ---- Control plane: waits for room in the inboxes.

    /// Delivers `msg` to every session of `users` (this node, then the others when
    /// `scope` says so).
    pub async fn push(&self, users: &[i64], msg: &PushMsg, scope: Scope) -> Pushed {
        let frame = packet::frame(Command::Push, 0, msg);
        let plan = self.plan(Request::Push { users, frame });
        let shards = self.send(plan.sends).await;
        let remote = match scope {
            Scope::Node => None,
            Scope::Cluster => Some(self.registry.push(users, msg).await),
        };
        Pushed { here: plan.here, shards, remote }
    }

    /// Delivers `msg` to every authenticated session (this node, then the others when
    /// `scope` says so).
    pub async fn broadcast(&self, msg: &PushMsg, scope: Scope) -> Broadcasted {
        let frame = packet::frame(Command::Push, 0, msg);
        let plan = self.plan(Request::Broadcast { frame });
        let shards = self.send(plan.sends).await;
        let remote = match scope {
            Scope::Node => None,
            Scope::Cluster => Some(self.registry.broadcast(msg).await),
        };
        Broadcasted { users: self.directory.users(), shards, remote }
    }

    /// Kicks `user`'s sessions (those on `platform` only, when given), here and, with
    /// [`Scope::Cluster`], on other nodes.
    pub async fn kick(&self, user: i64, platform: Option<i32>, reason: &str, scope: Scope) -> Kicked {
        let plan = self.plan(Request::Kick { who: Kick::User { user, platform }, reason });
        let here = self.send(plan.sends).await;
        let remote = match scope {
            Scope::Node => None,
            Scope::Cluster => Some(self.registry.kick(user, platform, reason).await),
        };
        Kicked { here, remote }
    }

    /// Kicks those of `sessions` that are still `user`'s sessions on this node (a
    /// cross-node kick: another node's login displaced them).
    pub async fn kick_sessions(&self, user: i64, sessions: &[SessionId], reason: &str) -> Kicked {
        let plan = self.plan(Request::Kick { who: Kick::Sessions { user, ids: sessions }, reason });
        Kicked { here: self.send(plan.sends).await, remote: None }
    }

    /// Queues `frame` to `session` on its shard (an answer from the control plane).
    pub async fn reply(&self, session: SessionId, frame: Bytes) -> bool {
        self.send(self.plan(Request::Reply { session, frame }).sends).await > 0
    }

    /// Every shard's figures, in shard order (merge on read; a stopped shard's are
    /// zero).
    pub async fn stats(&self) -> Vec<ShardStats> {
        shards::gather(&self.mesh, |_, reply| ShardMsg::Stats { reply })
            .await
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.unwrap_or(ShardStats { shard: i, ..Default::default() }))
            .collect()
    }

    /// Tells every shard to drain (from a thread outside any runtime: blocks until each
    /// inbox takes it).
    pub fn drain(&self, order: Drain) {
        for shard in 0..self.shards() {
            let _ = self.mesh.send_blocking(shard, ShardMsg::Drain(order));
        }
    }

    /// Hands the messages of a plan to their shards, waiting for room in each inbox.
    /// Returns how many were taken (a stopped shard takes none).
    async fn send(&self, sends: Vec<(usize, ShardMsg)>) -> usize {
        let mut taken = 0;
        for (shard, msg) in sends {
            if self.mesh.send_async(shard, msg).await.is_ok() {
                taken += 1;
            }
        }
        taken
    }

    // ---- Data plane: called on a shard, never waits.

    /// Delivers `msg` to every session of `users` on this node, from shard `from`.
    pub fn push_now(&self, from: &dyn LocalShard, users: &[i64], msg: &PushMsg) -> Pushed {
        let frame = packet::frame(Command::Push, 0, msg);
        let plan = self.plan(Request::Push { users, frame });
        let shards = self.send_now(from, plan.sends);
        Pushed { here: plan.here, shards, remote: None }
    }

    /// Files a session just authenticated on shard `from`: the directory (which applies
    /// the multi-login policy), the registry, and a kick for every session of the user
    /// on this node that the policy displaces.
    pub fn bind(&self, from: &dyn LocalShard, user: i64, loc: SessionLoc) {
        let displaced = self.directory.register(user, loc, self.policy);
        self.registry.opened(user, loc);
        for old in displaced {
            // Out of the directory already: tell the registry here, the kick will not.
            self.registry.closed(user, old);
            let plan = self.plan(Request::Kick { who: Kick::Displaced(old), reason: MultiLogin::KICK_REASON });
            self.send_now(from, plan.sends);
        }
    }

    /// Takes a session out of the directory and the registry (a no-op when it is not
    /// there any more, e.g. because a newer login displaced it).
    pub fn unbind(&self, user: i64, session: SessionId) {
        if let Some(loc) = self.directory.unregister(user, session) {
            self.registry.closed(user, loc);
        }
    }

    /// Hands the messages of a plan to their shards without waiting: `from`'s own are
    /// applied in place, a full inbox hands the wait to a background task on `from`
    /// (counted). Returns how many were handed (a stopped shard takes none).
    fn send_now(&self, from: &dyn LocalShard, sends: Vec<(usize, ShardMsg)>) -> usize {
        let mut handed = 0;
        for (shard, msg) in sends {
            if shard == from.id() {
                from.apply(msg);
                handed += 1;
                continue;
            }
            match self.mesh.try_send(shard, msg) {
                Ok(()) => handed += 1,
                Err(SendError::Full(msg)) => {
                    // Order per destination is kept by flume's fairness only loosely;
                    // pushes carry their own ids.
                    from.backpressured();
                    let mesh = self.mesh.clone();
                    glommio::spawn_local(async move {
                        let _ = mesh.send_async(shard, msg).await;
                    })
                    .detach();
                    handed += 1;
                }
                Err(SendError::Closed(_)) => {
                    debug!(shard = from.id(), to = shard, "peer shard stopped; message dropped");
                }
            }
        }
        handed
    }

    // ---- Reads of the directory.

    /// Calls `f` with `user`'s sessions on this node, if the user is online here.
    pub fn with_sessions<R>(&self, user: i64, f: impl FnOnce(&[SessionLoc]) -> R) -> Option<R> {
        self.directory.with_sessions(user, f)
    }

    /// Whether `user` has a session on this node.
    pub fn is_online(&self, user: i64) -> bool {
        self.directory.with_sessions(user, |_| ()).is_some()
    }

    /// Every user with their sessions on this node, at about this moment (for the
    /// registry's sweep; never on a shard's hot path).
    pub fn snapshot(&self) -> Vec<(i64, Vec<SessionLoc>)> {
        self.directory.snapshot()
    }

    /// Users online on this node.
    pub fn users(&self) -> usize {
        self.directory.users()
    }
}
