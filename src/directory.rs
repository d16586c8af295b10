//! The location directory: user id -> the sessions that user has on this node, with the
//! shard each lives on. The only structure shared between shards, and lock-free
//! (papaya's concurrent map; every update is a compare-and-swap of the user's entry).
//!
//! It is also where multi-login is decided: [`Directory::register`] swaps the user's
//! entry in one atomic step and returns the sessions the policy displaces, so two
//! logins of the same user and platform racing on two shards are ordered by the map,
//! and exactly one survives. Shards own the sessions themselves; the directory only
//! says where they are.

use crate::config::MultiLogin;
use crate::session::SessionId;

/// Where one session lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLoc {
    /// Process-unique session id (see [`SessionId`]); it names the owning shard.
    pub session: SessionId,
    /// Client platform.
    pub platform: i32,
}

impl SessionLoc {
    /// The shard that owns the connection.
    pub fn shard(&self) -> usize {
        self.session.shard()
    }
}

/// Concurrent map user -> sessions. Owned by the [`Router`](crate::router::Router),
/// which every shard and the control plane share; nothing else reads it.
#[derive(Debug, Default)]
pub struct Directory {
    users: papaya::HashMap<i64, Vec<SessionLoc>>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `loc` for `user` and returns the older sessions `policy` displaces; the
    /// displaced ones are already removed from the directory. Their shards must kick
    /// them.
    pub fn register(&self, user: i64, loc: SessionLoc, policy: MultiLogin) -> Vec<SessionLoc> {
        let keeps = |old: &SessionLoc| !policy.displaces(old.platform, loc.platform);
        let users = self.users.pin();
        let result = users.compute(user, |entry| {
            let mut next: Vec<SessionLoc> = entry
                .map(|(_, old)| old.iter().filter(|o| keeps(o) && o.session != loc.session).copied().collect())
                .unwrap_or_default();
            next.push(loc);
            papaya::Operation::<_, ()>::Insert(next)
        });
        match result {
            papaya::Compute::Updated { old: (_, old), .. } => {
                old.iter().filter(|o| !keeps(o) && o.session != loc.session).copied().collect()
            }
            _ => Vec::new(),
        }
    }

    /// Removes `session` from `user`'s entry (no-op if it is not there any more, e.g.
    /// because a newer login displaced it). Returns what was removed.
    pub fn unregister(&self, user: i64, session: SessionId) -> Option<SessionLoc> {
        let users = self.users.pin();
        let result = users.compute(user, |entry| match entry {
            Some((_, old)) if old.iter().any(|o| o.session == session) => {
                let next: Vec<SessionLoc> = old.iter().filter(|o| o.session != session).copied().collect();
                if next.is_empty() {
                    papaya::Operation::Remove
                } else {
                    papaya::Operation::Insert(next)
                }
            }
            _ => papaya::Operation::Abort(()),
        });
        match result {
            papaya::Compute::Updated { old: (_, old), .. } | papaya::Compute::Removed(_, old) => {
                old.iter().find(|o| o.session == session).copied()
            }
            _ => None,
        }
    }

    /// Every user with their sessions, at about this moment (the cluster registry's
    /// sweep walks it on the control plane; never on a shard's hot path).
    pub fn snapshot(&self) -> Vec<(i64, Vec<SessionLoc>)> {
        let users = self.users.pin();
        users.iter().map(|(u, s)| (*u, s.clone())).collect()
    }

    /// Calls `f` with `user`'s sessions, if the user is online here.
    pub fn with_sessions<R>(&self, user: i64, f: impl FnOnce(&[SessionLoc]) -> R) -> Option<R> {
        let users = self.users.pin();
        users.get(&user).map(|s| f(s))
    }

    /// Users online on this node.
    pub fn users(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(n: u64, platform: i32, shard: usize) -> SessionLoc {
        SessionLoc { session: SessionId::new(shard, n), platform }
    }

    #[test]
    fn policies_displace_the_right_sessions() {
        let d = Directory::new();
        assert!(d.register(1, loc(1, 3, 0), MultiLogin::KickSamePlatform).is_empty());
        assert!(d.register(1, loc(2, 1, 1), MultiLogin::KickSamePlatform).is_empty());
        assert_eq!(d.register(1, loc(3, 3, 1), MultiLogin::KickSamePlatform), vec![loc(1, 3, 0)]);
        assert_eq!(d.with_sessions(1, |s| s.iter().map(SessionLoc::shard).collect::<Vec<_>>()), Some(vec![1, 1]));
        let mut kicked = d.register(1, loc(4, 5, 0), MultiLogin::Single);
        kicked.sort_by_key(|l| l.session);
        assert_eq!(kicked, vec![loc(2, 1, 1), loc(3, 3, 1)]);
        assert!(d.register(1, loc(5, 5, 1), MultiLogin::Allow).is_empty());
        assert_eq!(d.unregister(1, loc(4, 5, 0).session), Some(loc(4, 5, 0)));
        assert_eq!(d.unregister(1, loc(4, 5, 0).session), None);
        assert_eq!(d.snapshot(), vec![(1, vec![loc(5, 5, 1)])]);
        assert_eq!(d.with_sessions(1, <[SessionLoc]>::to_vec), Some(vec![loc(5, 5, 1)]));
        d.unregister(1, loc(5, 5, 1).session);
        assert_eq!(d.users(), 0);
    }

    #[test]
    fn racing_logins_leave_exactly_one() {
        for round in 0..200u64 {
            let d = std::sync::Arc::new(Directory::new());
            let kicked: Vec<Vec<SessionLoc>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..2u64)
                    .map(|i| {
                        let d = d.clone();
                        s.spawn(move || d.register(7, loc(round * 2 + i, 1, i as usize), MultiLogin::KickSamePlatform))
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let total: usize = kicked.iter().map(Vec::len).sum();
            assert_eq!(total, 1, "round {round}: {kicked:?}");
            assert_eq!(d.with_sessions(7, |s| s.len()), Some(1));
        }
    }
}
