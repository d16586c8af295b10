//! Admission control beyond `max_connections`: the per-shard handshake token bucket
//! ([`HandshakeBucket`]) and the per-process, per-IP connection count ([`IpTable`]).
//!
//! Both are consulted by the upgrade (`conn::upgrade`) once the HTTP request is read,
//! before the token is verified, so a flood of handshakes is turned away before it
//! costs a signature check or a connection slot. Refusals are HTTP 503 with a jittered
//! `Retry-After` (see docs/PROTOCOL.md).
//!
//! Why the per-IP count is one process-wide map and not per shard: the kernel spreads
//! one client's connections over every shard's `SO_REUSEPORT` socket (the hash is over
//! the 4-tuple, so the source port decides), so a per-shard count would either allow
//! `shards x cap` or refuse early on a lopsided spread. The map (papaya, lock-free, a
//! compare-and-swap of one entry) is touched twice per connection — when it is admitted
//! and when it ends — never on the message path, and only when the cap is on. Keys are
//! a keyed hash of the address (8 B kept per connection instead of a 17 B `IpAddr`);
//! with SipHash and a random key per process, an attacker cannot aim collisions at
//! somebody else's address.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;

/// A per-shard token bucket for handshakes: `rate` per second, `burst` deep. Owned by
/// one shard (`Cell`s, no atomics); the shard clock is passed in by the caller.
#[derive(Debug)]
pub struct HandshakeBucket {
    /// Refill, tokens per second; 0 = no limit.
    rate: u64,
    /// Capacity, in thousandths of a token.
    cap_milli: u64,
    /// Tokens left, in thousandths.
    level_milli: Cell<u64>,
    /// Shard clock (ms) of the last refill.
    last_ms: Cell<u64>,
}

impl HandshakeBucket {
    /// A full bucket; `rate` 0 turns the limit off, `burst` 0 means one second's worth.
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = if burst == 0 { rate } else { burst };
        let cap_milli = u64::from(burst) * 1000;
        Self { rate: u64::from(rate), cap_milli, level_milli: Cell::new(cap_milli), last_ms: Cell::new(0) }
    }

    /// Takes a token at shard time `now_ms`; false when the bucket is empty.
    pub fn try_take(&self, now_ms: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now_ms.saturating_sub(self.last_ms.get());
        self.last_ms.set(now_ms.max(self.last_ms.get()));
        let level = self.level_milli.get().saturating_add(elapsed.saturating_mul(self.rate)).min(self.cap_milli);
        if level >= 1000 {
            self.level_milli.set(level - 1000);
            true
        } else {
            self.level_milli.set(level);
            false
        }
    }
}

/// Open connections per client address, for the whole process. Shared through
/// [`Node`](crate::node::Node); see the module doc for why it is one map.
#[derive(Debug)]
pub struct IpTable {
    /// Most connections one address may hold; 0 = no limit.
    cap: u32,
    /// Keyed hash of the address -> connections open from it. An entry is removed when
    /// its count drops to zero, so the map holds only addresses with connections.
    counts: papaya::HashMap<u64, u32>,
    /// Random per process.
    hasher: RandomState,
}

impl IpTable {
    /// A table enforcing `cap` connections per address (0 = off).
    pub fn new(cap: u32) -> Self {
        Self { cap, counts: papaya::HashMap::new(), hasher: RandomState::new() }
    }

    /// True when the cap is on.
    pub fn enabled(&self) -> bool {
        self.cap > 0
    }

    /// The key of an address (never 0, which means "not counted"). IPv4-mapped IPv6
    /// addresses count as their IPv4 address.
    pub fn key(&self, ip: IpAddr) -> u64 {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.hasher.hash_one(ip) | 1
    }

    /// Counts one more connection from `key`; false (and nothing counted) at the cap.
    pub(crate) fn try_add(&self, key: u64) -> bool {
        let cap = self.cap;
        let counts = self.counts.pin();
        let result = counts.compute(key, |entry| match entry {
            Some((_, &n)) if n >= cap => papaya::Operation::Abort(()),
            Some((_, &n)) => papaya::Operation::Insert(n + 1),
            None => papaya::Operation::Insert(1),
        });
        !matches!(result, papaya::Compute::Aborted(()))
    }

    /// Counts one connection from `key` less.
    pub(crate) fn remove(&self, key: u64) {
        let counts = self.counts.pin();
        counts.compute(key, |entry| match entry {
            Some((_, &n)) if n > 1 => papaya::Operation::Insert(n - 1),
            Some(_) => papaya::Operation::Remove,
            None => papaya::Operation::Abort(()),
        });
    }

    /// Connections counted for `ip` (for tests and stats).
    pub fn count(&self, ip: IpAddr) -> u32 {
        self.counts.pin().get(&self.key(ip)).copied().unwrap_or(0)
    }

    /// Addresses with at least one connection.
    pub fn addresses(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let b = HandshakeBucket::new(10, 3);
        assert!((0..3).all(|_| b.try_take(0)));
        assert!(!b.try_take(0));
        assert!(!b.try_take(99)); // 0.99 tokens
        assert!(b.try_take(100));
        assert!(!b.try_take(100));
        // A long pause refills to the burst, not beyond.
        assert!((0..3).all(|_| b.try_take(60_000)));
        assert!(!b.try_take(60_000));
        // A clock that goes backwards takes nothing and gives nothing.
        assert!(!b.try_take(10));
    }

    #[test]
    fn bucket_off_and_default_burst() {
        let off = HandshakeBucket::new(0, 0);
        assert!((0..10_000).all(|_| off.try_take(0)));
        let b = HandshakeBucket::new(2, 0);
        assert!(b.try_take(0) && b.try_take(0) && !b.try_take(0));
    }

    #[test]
    fn ip_table_caps_per_address_and_forgets_empty_ones() {
        let t = IpTable::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let a6: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(t.key(a), t.key(a6));
        assert!(t.try_add(t.key(a)) && t.try_add(t.key(a6)));
        assert!(!t.try_add(t.key(a)));
        assert!(t.try_add(t.key(b)));
        assert_eq!((t.count(a), t.count(b), t.addresses()), (2, 1, 2));
        t.remove(t.key(a));
        assert!(t.try_add(t.key(a)));
        for _ in 0..2 {
            t.remove(t.key(a));
        }
        t.remove(t.key(b));
        t.remove(t.key(b)); // an extra release is harmless
        assert_eq!(t.addresses(), 0);
    }
}
