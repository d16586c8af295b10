//! Per-shard figures: plain `Cell`s bumped by the shard that owns them (no locks, no
//! atomics on the hot path), copied into a [`ShardStats`] snapshot when somebody asks
//! (`/v1/stats`, `/metrics`) and merged on read.

use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::BTreeMap;

/// Close codes counted per shard (`0` = the peer vanished without a close handshake).
pub const CLOSE_CODES: [u16; 11] = [0, 1000, 1001, 1009, 4001, 4002, 4003, 4004, 4005, 4008, 4009];

/// A shard's live counters. Owned by the shard (`Rc<Shard>`), never shared.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// WebSocket connections open now.
    pub connections: Cell<u64>,
    /// Upgrades completed.
    pub handshakes: Cell<u64>,
    /// Upgrades refused, by HTTP status.
    pub rejected: RejectCounters,
    /// Tokens refused (at the upgrade or in AUTH).
    pub auth_failures: Cell<u64>,
    /// Connections closed, by close code (index into [`CLOSE_CODES`]).
    pub closes: [Cell<u64>; CLOSE_CODES.len()],
    /// PUSH frames queued to connections of this shard.
    pub pushes_queued: Cell<u64>,
    /// Frames written to sockets (all kinds).
    pub frames_out: Cell<u64>,
    /// Frames dropped because a connection's queue overflowed.
    pub drops: Cell<u64>,
    /// Connections cut with 4009.
    pub slow_cuts: Cell<u64>,
    /// Messages received from the router or other shards.
    pub router_hops: Cell<u64>,
    /// Messages this shard had to wait to hand to a full peer inbox.
    pub router_backpressure: Cell<u64>,
    /// Sessions kicked on this shard.
    pub kicks: Cell<u64>,
    /// UPSTREAM packets received.
    pub upstream: Cell<u64>,
    /// Message ids acknowledged by clients.
    pub acks: Cell<u64>,
    /// Heartbeats answered.
    pub heartbeats: Cell<u64>,
    /// Accept errors that made the shard back off (EMFILE and friends).
    pub accept_backoffs: Cell<u64>,
}

/// Refused upgrades by status.
#[derive(Debug, Default)]
pub struct RejectCounters {
    pub s400: Cell<u64>,
    pub s401: Cell<u64>,
    pub s404: Cell<u64>,
    pub s408: Cell<u64>,
    pub s503: Cell<u64>,
    pub other: Cell<u64>,
}

/// Adds one to a counter.
pub fn inc(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Adds `n` to a counter.
pub fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

impl ShardMetrics {
    /// Counts a refused upgrade.
    pub fn reject(&self, status: u16) {
        let r = &self.rejected;
        inc(match status {
            400 | 405 | 426 | 431 => &r.s400,
            401 => &r.s401,
            404 => &r.s404,
            408 => &r.s408,
            503 => &r.s503,
            _ => &r.other,
        });
    }

    /// Counts a close by code.
    pub fn closed(&self, code: u16) {
        let i = CLOSE_CODES.iter().position(|&c| c == code).unwrap_or(0);
        inc(&self.closes[i]);
    }

    /// Copies the counters out.
    pub fn snapshot(&self, shard: usize, users: usize, queued: u64) -> ShardStats {
        let r = &self.rejected;
        ShardStats {
            shard,
            connections: self.connections.get(),
            users: users as u64,
            handshakes: self.handshakes.get(),
            rejected: BTreeMap::from([
                ("400".to_string(), r.s400.get()),
                ("401".to_string(), r.s401.get()),
                ("404".to_string(), r.s404.get()),
                ("408".to_string(), r.s408.get()),
                ("503".to_string(), r.s503.get()),
                ("other".to_string(), r.other.get()),
            ]),
            auth_failures: self.auth_failures.get(),
            closes: CLOSE_CODES
                .iter()
                .zip(&self.closes)
                .map(|(code, n)| (if *code == 0 { "gone".to_string() } else { code.to_string() }, n.get()))
                .collect(),
            pushes_queued: self.pushes_queued.get(),
            frames_out: self.frames_out.get(),
            drops: self.drops.get(),
            slow_cuts: self.slow_cuts.get(),
            router_hops: self.router_hops.get(),
            router_backpressure: self.router_backpressure.get(),
            kicks: self.kicks.get(),
            upstream: self.upstream.get(),
            acks: self.acks.get(),
            heartbeats: self.heartbeats.get(),
            accept_backoffs: self.accept_backoffs.get(),
            outbound_queued: queued,
        }
    }
}

/// One shard's figures at one moment, as served by `/v1/stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ShardStats {
    pub shard: usize,
    pub connections: u64,
    pub users: u64,
    pub handshakes: u64,
    pub rejected: BTreeMap<String, u64>,
    pub auth_failures: u64,
    pub closes: BTreeMap<String, u64>,
    pub pushes_queued: u64,
    pub frames_out: u64,
    pub drops: u64,
    pub slow_cuts: u64,
    pub router_hops: u64,
    pub router_backpressure: u64,
    pub kicks: u64,
    pub upstream: u64,
    pub acks: u64,
    pub heartbeats: u64,
    pub accept_backoffs: u64,
    /// Frames waiting in this shard's outbound queues right now.
    pub outbound_queued: u64,
}
