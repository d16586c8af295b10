//! The routing facade: who holds a user, and how a message reaches them.
//!
//! A push names users; the router looks each up in the [`Directory`] and sends one
//! message per holding shard, carrying the frame encoded once (`Bytes`, shared by every
//! recipient). Shards call it through `Shard::push`, which delivers to local holders
//! directly and only sends the rest over the mesh; the control plane (admin API) calls
//! the async methods here. Every inbox is bounded: the control plane waits for room,
//! a shard never does (it hands the wait to a background task and counts it).

use crate::directory::{Directory, SessionLoc};
use crate::metrics::ShardStats;
use bytes::Bytes;
use shards::MeshSender;
use std::sync::Arc;

/// Messages a shard's inbox carries. Only owned `Send` data: ids and shared frames.
#[derive(Debug)]
pub enum ShardMsg {
    /// Deliver `frame` to every connection of `users` held by the receiving shard.
    /// `at`: when the router enqueued it ([`crate::metrics::stamp`]), for the push
    /// delivery latency.
    Push { users: Vec<i64>, frame: Bytes, at: u64 },
    /// Deliver `frame` to every authenticated connection of the receiving shard
    /// (`at` as for `Push`).
    Broadcast { frame: Bytes, at: u64 },
    /// Kick one session: send `frame` (a KICK packet), then close 4003.
    Kick { session: u64, reason: String, frame: Bytes },
    /// Queue `frame` (an answer that came back from the control plane, e.g. to an
    /// UPSTREAM handed to Redis) to `session`, if it is still there.
    Reply { session: u64, frame: Bytes },
    /// Answer with this shard's figures.
    Stats { reply: flume::Sender<(usize, ShardStats)> },
    /// Stop accepting, close every client with 1001 (retry hint spread over
    /// `window_ms`), and stop by `deadline_ms` from now.
    Drain { window_ms: u64, deadline_ms: u64 },
}

/// What a push reached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PushReport {
    /// Named users with at least one session on this node.
    pub online_users: usize,
    /// Shards the push was handed to.
    pub shards: usize,
}

/// Shared by every shard and the control plane (`Arc<Router>`).
#[derive(Debug)]
pub struct Router {
    /// Where users are.
    pub directory: Arc<Directory>,
    /// Every shard's inbox.
    pub mesh: MeshSender<ShardMsg>,
}

impl Router {
    /// A router over `mesh`, reading `directory`.
    pub fn new(directory: Arc<Directory>, mesh: MeshSender<ShardMsg>) -> Self {
        Self { directory, mesh }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.mesh.shards()
    }

    /// Splits `users` by holding shard: `plan[i]` lists the users shard i must serve.
    /// Returns the plan and how many users are online.
    pub fn plan(&self, users: &[i64]) -> (Vec<Vec<i64>>, usize) {
        let mut plan: Vec<Vec<i64>> = vec![Vec::new(); self.shards()];
        let mut online = 0;
        for &user in users {
            let found = self.directory.with_sessions(user, |sessions| {
                let mut seen = 0u64;
                for loc in sessions {
                    let shard = usize::from(loc.shard);
                    // A user with two sessions on one shard is listed once for it.
                    if shard < 64 && seen & (1 << shard) != 0 {
                        continue;
                    }
                    seen |= 1u64 << shard.min(63);
                    if let Some(list) = plan.get_mut(shard) {
                        if list.last() != Some(&user) {
                            list.push(user);
                        }
                    }
                }
            });
            online += usize::from(found.is_some());
        }
        (plan, online)
    }

    /// Delivers `frame` to every connection of `users` (from the control plane).
    pub async fn push(&self, users: &[i64], frame: Bytes) -> PushReport {
        let at = crate::metrics::stamp();
        let (plan, online_users) = self.plan(users);
        let mut shards = 0;
        for (shard, users) in plan.into_iter().enumerate().filter(|(_, u)| !u.is_empty()) {
            let msg = ShardMsg::Push { users, frame: frame.clone(), at };
            if self.mesh.send_async(shard, msg).await.is_ok() {
                shards += 1;
            }
        }
        PushReport { online_users, shards }
    }

    /// Delivers `frame` to every authenticated connection on this node.
    pub async fn broadcast(&self, frame: Bytes) -> PushReport {
        let at = crate::metrics::stamp();
        let mut shards = 0;
        for shard in 0..self.shards() {
            let msg = ShardMsg::Broadcast { frame: frame.clone(), at };
            if self.mesh.send_async(shard, msg).await.is_ok() {
                shards += 1;
            }
        }
        PushReport { online_users: self.directory.users(), shards }
    }

    /// Kicks `user`'s sessions (those on `platform` only, when given); returns how many.
    pub async fn kick(&self, user: i64, platform: Option<i32>, reason: &str) -> usize {
        let targets: Vec<SessionLoc> = self
            .directory
            .with_sessions(user, |s| s.iter().filter(|l| platform.is_none_or(|p| p == l.platform)).copied().collect())
            .unwrap_or_default();
        let frame = kick_frame(reason);
        let mut kicked = 0;
        for loc in targets {
            let msg = ShardMsg::Kick { session: loc.session, reason: reason.to_string(), frame: frame.clone() };
            if self.mesh.send_async(usize::from(loc.shard), msg).await.is_ok() {
                kicked += 1;
            }
        }
        kicked
    }
}

impl Router {
    /// Kicks one session of this node on `shard` (a cross-node kick).
    pub async fn kick_session(&self, shard: usize, session: u64, reason: &str) -> bool {
        let msg = ShardMsg::Kick { session, reason: reason.to_string(), frame: kick_frame(reason) };
        self.mesh.send_async(shard, msg).await.is_ok()
    }
}

/// The KICK packet sent before a 4003 close.
pub fn kick_frame(reason: &str) -> Bytes {
    crate::packet::frame(crate::proto::Command::Kick, 0, &crate::proto::Kick { reason: reason.to_string() })
}
