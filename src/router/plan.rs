//! The one planning function every request passes through on its way to the shards:
//! one pass over the directory turns a request into the messages each shard must get,
//! and, for a push, says which named users are online on this node.

use super::{Router, ShardMsg};
use crate::directory::SessionLoc;
use crate::session::SessionId;
use bytes::Bytes;

/// What the router is asked to do on this node.
pub(super) enum Request<'a> {
    /// `frame` to every session of `users`.
    Push { users: &'a [i64], frame: Bytes },
    /// `frame` to every authenticated session.
    Broadcast { frame: Bytes },
    /// Kick the sessions `who` names, with `reason`.
    Kick { who: Kick<'a>, reason: &'a str },
    /// `frame` to one session (an answer to its request).
    Reply { session: SessionId, frame: Bytes },
}

/// Whom a kick is for.
pub(super) enum Kick<'a> {
    /// Every session of `user` on this node, or those on `platform`.
    User { user: i64, platform: Option<i32> },
    /// Those of `ids` that are still `user`'s sessions on this node.
    Sessions { user: i64, ids: &'a [SessionId] },
    /// One session the directory has already let go of (displaced by a newer login).
    Displaced(SessionLoc),
}

/// A planned request.
pub(super) struct Plan {
    /// Each message and the shard it is for, at most one `Push` per shard.
    pub(super) sends: Vec<(usize, ShardMsg)>,
    /// For a push: per named user (same order), whether they are online here.
    pub(super) here: Vec<bool>,
}

impl Router {
    /// Plans `req`: one directory pass (none for a broadcast, a reply or a displaced
    /// session). A push's messages are stamped ([`crate::metrics::stamp`]) here, once.
    pub(super) fn plan(&self, req: Request<'_>) -> Plan {
        match req {
            Request::Push { users, frame } => self.plan_push(users, frame),
            Request::Broadcast { frame } => {
                let at = crate::metrics::stamp();
                let sends = (0..self.shards()).map(|s| (s, ShardMsg::Broadcast { frame: frame.clone(), at })).collect();
                Plan { sends, here: Vec::new() }
            }
            Request::Kick { who, reason } => {
                let kick =
                    |loc: &SessionLoc| (loc.shard(), ShardMsg::Kick { session: loc.session, reason: reason.into() });
                let sends = match who {
                    Kick::User { user, platform } => self
                        .directory
                        .with_sessions(user, |s| {
                            s.iter().filter(|l| platform.is_none_or(|p| p == l.platform)).map(kick).collect()
                        })
                        .unwrap_or_default(),
                    Kick::Sessions { user, ids } => self
                        .directory
                        .with_sessions(user, |s| s.iter().filter(|l| ids.contains(&l.session)).map(kick).collect())
                        .unwrap_or_default(),
                    Kick::Displaced(loc) => vec![kick(&loc)],
                };
                Plan { sends, here: Vec::new() }
            }
            Request::Reply { session, frame } => {
                Plan { sends: vec![(session.shard(), ShardMsg::Reply { session, frame })], here: Vec::new() }
            }
        }
    }

    /// Splits `users` by holding shard: one `Push` per shard that holds any, listing
    /// the users it must serve (each once, however many sessions they have there).
    fn plan_push(&self, users: &[i64], frame: Bytes) -> Plan {
        let at = crate::metrics::stamp();
        let mut per_shard: Vec<Vec<i64>> = vec![Vec::new(); self.shards()];
        let mut here = Vec::with_capacity(users.len());
        for &user in users {
            let found = self.directory.with_sessions(user, |sessions| {
                for loc in sessions {
                    if let Some(list) = per_shard.get_mut(loc.shard()) {
                        // A user with two sessions on one shard is listed once for it.
                        if list.last() != Some(&user) {
                            list.push(user);
                        }
                    }
                }
            });
            here.push(found.is_some());
        }
        let sends = per_shard
            .into_iter()
            .enumerate()
            .filter(|(_, u)| !u.is_empty())
            .map(|(shard, users)| (shard, ShardMsg::Push { users, frame: frame.clone(), at }))
            .collect();
        Plan { sends, here }
    }
}
