//! How sessions are named: [`SessionId`] inside a node (the shard in the top 16 bits, a
//! per-shard counter below) and [`SessionName`] across nodes (the registry's field name,
//! which also carries the platform). The one place that encodes or decodes either.

use std::fmt;

/// Bits below the shard number in a shard-scoped id.
const SHARD_SHIFT: u32 = 48;
/// The counter's part of a shard-scoped id.
const COUNTER_MASK: u64 = (1 << SHARD_SHIFT) - 1;

/// A node-unique id made by one shard: `shard << 48 | counter`. Shared by session ids
/// and the message ids of embedded-mode UPSTREAM deliveries, so either tells which shard
/// made it.
pub fn shard_scoped(shard: usize, counter: u64) -> u64 {
    ((shard as u64) << SHARD_SHIFT) | (counter & COUNTER_MASK)
}

/// A session's process-unique id (= its connection's id): the owning shard and a
/// counter of that shard. Copy, 8 bytes; the shard is read from it, never stored beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// The `counter`th session of `shard`.
    pub fn new(shard: usize, counter: u64) -> Self {
        Self(shard_scoped(shard, counter))
    }

    /// The id as a number (logs show it so; the session name carries it in hex).
    pub fn raw(self) -> u64 {
        self.0
    }

    /// An id read back from [`SessionId::raw`].
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The shard that owns the session.
    pub fn shard(self) -> usize {
        (self.0 >> SHARD_SHIFT) as usize
    }
}

/// A session's name across the cluster: `{nonce:08x}-{id:x}-{platform}`. The nonce is
/// the node run's `boot_nonce` (random per start), so a name is unique across nodes and
/// restarts, and any node can tell a remote session's shard and platform from its name
/// (for `/v1/online` and cross-node multi-login) without asking its node. Clients see it
/// as `AuthResult.session_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionName {
    /// The node run that owns the session.
    pub nonce: u32,
    /// Session id within that run.
    pub id: SessionId,
    /// Client platform.
    pub platform: i32,
}

impl SessionName {
    /// Parses a name; `None` for anything that is not one of ours (never panics).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, '-');
        let nonce = parts.next().filter(|p| p.len() == 8)?;
        let nonce = u32::from_str_radix(nonce, 16).ok()?;
        let id = SessionId(u64::from_str_radix(parts.next()?, 16).ok()?);
        let platform = parts.next()?.parse().ok()?;
        Some(Self { nonce, id, platform })
    }

    /// The shard that owns the session.
    pub fn shard(&self) -> usize {
        self.id.shard()
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{:x}-{}", self.nonce, self.id.0, self.platform)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_shard_and_counter_apart() {
        let id = SessionId::new(3, 77);
        assert_eq!((id.shard(), id.raw() & COUNTER_MASK), (3, 77));
        assert_eq!(SessionId::from_raw(id.raw()), id);
        assert_eq!(SessionId::new(1, COUNTER_MASK + 5).shard(), 1, "a wrapped counter never spills into the shard");
        assert_eq!(shard_scoped(2, 9) >> SHARD_SHIFT, 2);
    }

    #[test]
    fn session_names_round_trip_and_garbage_is_none() {
        for (nonce, id, platform) in [(0, 1, 0), (0xdead_beef, (3u64 << 48) | 77, -5), (u32::MAX, u64::MAX, i32::MAX)] {
            let n = SessionName { nonce, id: SessionId::from_raw(id), platform };
            assert_eq!(SessionName::parse(&n.to_string()), Some(n));
        }
        assert_eq!(SessionName::parse("0000000a-3000000000001-2").map(|n| n.shard()), Some(3));
        for bad in ["", "x", "0000000a", "0000000a-zz-1", "0000000a-1-", "a-1-1", "0000000a-1-1-1", "é"] {
            assert_eq!(SessionName::parse(bad), None, "{bad:?}");
        }
    }
}
