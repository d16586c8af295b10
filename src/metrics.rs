//! Per-shard figures: plain `Cell`s bumped by the shard that owns them (no locks, no
//! atomics on the hot path), copied into a [`ShardStats`] snapshot when somebody asks
//! (`/v1/stats`, `/metrics`) and merged on read.
//!
//! Latencies (handshake, push delivery, event-loop stalls) are hdrhistograms owned by
//! the shard the same way ([`LatencyHist`] in a `RefCell`): a record is a few array
//! writes. Each keeps a rolling window (the last 5-10 s, what the dashboard plots) and a
//! running total (what Prometheus scrapes as buckets); both are summarised into the
//! snapshot, so nothing but plain numbers crosses to the control plane.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

/// Close codes counted per shard (`0` = the peer vanished without a close handshake).
pub const CLOSE_CODES: [u16; 11] = [0, 1000, 1001, 1009, 4001, 4002, 4003, 4004, 4005, 4008, 4009];

/// A shard's live counters. Owned by the shard (`Rc<Shard>`), never shared. Gauges
/// (connections, users, queued frames) are not kept here: they are read off the
/// shard's session table when a snapshot is taken, so nothing has to move them.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Upgrades completed.
    pub handshakes: Cell<u64>,
    /// Upgrades refused, by HTTP status.
    pub rejected: RejectCounters,
    /// Tokens refused (at the upgrade or in AUTH).
    pub auth_failures: Cell<u64>,
    /// The same, by reason (index into [`AUTH_FAILURE_REASONS`]).
    pub auth_failure_reasons: [Cell<u64>; AUTH_FAILURE_REASONS.len()],
    /// Connections closed, by close code (index into [`CLOSE_CODES`]).
    pub closes: [Cell<u64>; CLOSE_CODES.len()],
    /// Pushes and broadcasts that reached this shard (one per routed message, whatever
    /// the number of recipients).
    pub pushes_in: Cell<u64>,
    /// PUSH frames queued to connections of this shard.
    pub pushes_queued: Cell<u64>,
    /// PUSH frames written whole to sockets.
    pub pushes_out: Cell<u64>,
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
    /// Accepted socket to the 101 written (reading the request and checking the token
    /// included), microseconds.
    pub handshake_latency: RefCell<LatencyHist>,
    /// Router enqueue to the PUSH frame written to the socket, microseconds.
    pub push_latency: RefCell<LatencyHist>,
    /// How late the shard's stall probe woke, microseconds: the time the event loop
    /// spent on other work (one long task poll, or a long queue of them).
    pub loop_stall: RefCell<LatencyHist>,
}

/// Why a token was refused, as counted (`/v1/stats` keys, Prometheus `reason` label).
pub const AUTH_FAILURE_REASONS: [&str; 4] = ["missing", "expired", "bad_subject", "invalid"];

/// Process-wide origin of [`stamp`]s: every thread reads the same monotonic clock.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Now, as nanoseconds since the process's metrics epoch, plus one (0 means "no
/// stamp"). Taken when the router enqueues a push and carried with the queued frame,
/// so the writer can time the delivery without any per-recipient state.
pub fn stamp() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_nanos() as u64 + 1
}

/// Microseconds from stamp `from` to stamp `to` (0 when `to` is earlier).
pub fn micros_between(from: u64, to: u64) -> u64 {
    to.saturating_sub(from) / 1000
}

/// Length of one latency window: the "recent" figures cover the last one to two.
pub const WINDOW_MS: u64 = 5_000;

/// Largest latency tracked, microseconds (larger values count as this).
const MAX_US: u64 = 60_000_000;

/// Prometheus bucket bounds for every latency histogram, seconds.
pub const BUCKETS_S: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One latency distribution of one shard: the current window, the previous one, and
/// everything older folded into `total`.
#[derive(Debug)]
pub struct LatencyHist {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    older: Histogram<u64>,
    /// Shard clock (ms) when `current` started.
    window_start_ms: u64,
}

fn histogram() -> Histogram<u64> {
    // Two significant digits (1 %) from 1 us to 60 s: ~20 KB per histogram.
    Histogram::new_with_bounds(1, MAX_US, 2).expect("static histogram bounds")
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self { current: histogram(), previous: histogram(), older: histogram(), window_start_ms: 0 }
    }
}

impl LatencyHist {
    /// Records one value, microseconds.
    pub fn record(&mut self, us: u64) {
        self.current.saturating_record(us.clamp(1, MAX_US));
    }

    /// Starts a new window when the current one is [`WINDOW_MS`] old.
    pub fn rotate(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.window_start_ms) < WINDOW_MS {
            return;
        }
        // Same bounds on both sides: addition cannot fail.
        let _ = self.older.add(&self.previous);
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.reset();
        self.window_start_ms = now_ms;
    }

    /// Summaries of the recent window and of everything, and Prometheus buckets.
    pub fn snapshot(&self) -> LatencyStats {
        let mut recent = self.previous.clone();
        let _ = recent.add(&self.current);
        let mut total = self.older.clone();
        let _ = total.add(&recent);
        let mut buckets = vec![0u64; BUCKETS_S.len() + 1];
        for v in total.iter_recorded() {
            // A recorded value stands for a 1 % range; file it by the range's low end,
            // so a value right at a bucket bound counts in that bucket.
            let s = total.lowest_equivalent(v.value_iterated_to()) as f64 / 1e6;
            let i = BUCKETS_S.iter().position(|&b| s <= b).unwrap_or(BUCKETS_S.len());
            buckets[i] += v.count_since_last_iteration();
        }
        LatencyStats {
            recent: Summary::of(&recent),
            total: Summary::of(&total),
            sum_us: (total.mean() * total.len() as f64) as u64,
            buckets,
        }
    }
}

/// Quantiles of one histogram, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Summary {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let q = |q| h.highest_equivalent(h.value_at_quantile(q));
        Self { count: h.len(), p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: h.max() }
    }
}

/// A latency distribution as served: `recent` (the last 5-10 s) and `total` (since
/// start), in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyStats {
    pub recent: Summary,
    pub total: Summary,
    /// Sum of every value since start (Prometheus `_sum`), microseconds.
    #[serde(skip)]
    pub sum_us: u64,
    /// Counts per [`BUCKETS_S`] bucket (not cumulative; the last is `+Inf`).
    #[serde(skip)]
    pub buckets: Vec<u64>,
}

/// Refused upgrades by status.
#[derive(Debug, Default)]
pub struct RejectCounters {
    pub s400: Cell<u64>,
    pub s401: Cell<u64>,
    pub s403: Cell<u64>,
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
            403 => &r.s403,
            404 => &r.s404,
            408 => &r.s408,
            503 => &r.s503,
            _ => &r.other,
        });
    }

    /// Counts a refused token.
    pub fn auth_failed(&self, err: &crate::auth::AuthError) {
        use crate::auth::AuthError;
        inc(&self.auth_failures);
        let i = match err {
            AuthError::Missing => 0,
            AuthError::Expired => 1,
            AuthError::BadSubject => 2,
            AuthError::Invalid(_) => 3,
        };
        inc(&self.auth_failure_reasons[i]);
    }

    /// Starts new latency windows when theirs are over (called by the shard's probe).
    pub fn rotate(&self, now_ms: u64) {
        self.handshake_latency.borrow_mut().rotate(now_ms);
        self.push_latency.borrow_mut().rotate(now_ms);
        self.loop_stall.borrow_mut().rotate(now_ms);
    }

    /// Counts a close by code.
    pub fn closed(&self, code: u16) {
        let i = CLOSE_CODES.iter().position(|&c| c == code).unwrap_or(0);
        inc(&self.closes[i]);
    }

    /// Copies the counters out, with the gauges read off the session table.
    pub fn snapshot(&self, shard: usize, connections: usize, users: usize, queued: u64) -> ShardStats {
        let r = &self.rejected;
        ShardStats {
            shard,
            connections: connections as u64,
            users: users as u64,
            handshakes: self.handshakes.get(),
            rejected: BTreeMap::from([
                ("400".to_string(), r.s400.get()),
                ("401".to_string(), r.s401.get()),
                ("403".to_string(), r.s403.get()),
                ("404".to_string(), r.s404.get()),
                ("408".to_string(), r.s408.get()),
                ("503".to_string(), r.s503.get()),
                ("other".to_string(), r.other.get()),
            ]),
            auth_failures: self.auth_failures.get(),
            auth_failure_reasons: AUTH_FAILURE_REASONS
                .iter()
                .zip(&self.auth_failure_reasons)
                .map(|(r, n)| (r.to_string(), n.get()))
                .collect(),
            closes: CLOSE_CODES
                .iter()
                .zip(&self.closes)
                .map(|(code, n)| (if *code == 0 { "gone".to_string() } else { code.to_string() }, n.get()))
                .collect(),
            pushes_in: self.pushes_in.get(),
            pushes_queued: self.pushes_queued.get(),
            pushes_out: self.pushes_out.get(),
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
            outbound_queued_max: 0,
            handshake_latency_us: self.handshake_latency.borrow().snapshot(),
            push_latency_us: self.push_latency.borrow().snapshot(),
            loop_stall_us: self.loop_stall.borrow().snapshot(),
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
    pub auth_failure_reasons: BTreeMap<String, u64>,
    pub closes: BTreeMap<String, u64>,
    pub pushes_in: u64,
    pub pushes_queued: u64,
    pub pushes_out: u64,
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
    /// The deepest single outbound queue of this shard right now, frames.
    pub outbound_queued_max: u64,
    /// Upgrade latency (accepted socket to the 101 written).
    pub handshake_latency_us: LatencyStats,
    /// Push delivery latency (router enqueue to the frame written to the socket).
    pub push_latency_us: LatencyStats,
    /// Event-loop stalls (lateness of the shard's 10 ms probe timer).
    pub loop_stall_us: LatencyStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_roll_and_totals_keep_everything() {
        let mut h = LatencyHist::default();
        for us in 1..=1000 {
            h.record(us);
        }
        let s = h.snapshot();
        assert_eq!(s.recent.count, 1000);
        assert!((495..=505).contains(&s.recent.p50), "{s:?}");
        assert!(s.recent.p999 >= 990 && s.recent.max >= 1000, "{s:?}");
        assert_eq!(s.buckets.iter().sum::<u64>(), 1000);
        // 1..=50 us fall in the first bucket (50 us), the rest by 1 ms.
        assert_eq!(s.buckets[0], 50, "{:?}", s.buckets);
        assert_eq!(s.buckets[..5].iter().sum::<u64>(), 1000, "{:?}", s.buckets);

        h.rotate(WINDOW_MS);
        h.record(7);
        assert_eq!(h.snapshot().recent.count, 1001, "the previous window is still recent");
        h.rotate(2 * WINDOW_MS);
        let s = h.snapshot();
        assert_eq!((s.recent.count, s.recent.max), (1, 7), "{s:?}");
        assert_eq!(s.total.count, 1001);
        h.record(MAX_US * 10);
        assert_eq!(h.snapshot().recent.count, 2, "out of range values saturate, never panic");
    }

    #[test]
    fn stamps_are_monotonic_and_nonzero() {
        let a = stamp();
        let b = stamp();
        assert!(a > 0 && b >= a);
        assert_eq!(micros_between(b, a), 0);
    }
}
