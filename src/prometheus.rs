//! `/metrics`: the shards' snapshots in Prometheus text format, every series labelled
//! with `gateway_id` and `shard`. Exposition is prometheus-client's; we only map our
//! snapshot fields to families.
//!
//! Latencies are exported twice: as histograms (`imgw_*_seconds_bucket`, cumulative
//! since start, from the shard's hdrhistogram; aggregate across shards and nodes with
//! `histogram_quantile(q, sum by (le) (rate(..)))`) and as gauges of the recent
//! window's quantiles (`imgw_*_recent_seconds{quantile="0.5|0.9|0.99|0.999|1"}`, what
//! the dashboard shows, per shard).

use crate::metrics::{LatencyStats, ShardStats, AUTH_FAILURE_REASONS, BUCKETS_S};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    gateway_id: String,
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    gateway_id: String,
    shard: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    gateway_id: String,
    shard: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    gateway_id: String,
    shard: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuantileLabels {
    gateway_id: String,
    shard: String,
    quantile: String,
}

type CounterFn = fn(&ShardStats) -> u64;
type LatencyFn = fn(&ShardStats) -> &LatencyStats;

/// A histogram already counted elsewhere (a shard's hdrhistogram folded into
/// [`BUCKETS_S`]), handed to prometheus-client's encoder as it is.
#[derive(Debug, Default)]
struct Folded {
    sum_s: f64,
    count: u64,
    /// (upper bound in seconds, count in that bucket alone); the last bound is +Inf.
    buckets: Vec<(f64, u64)>,
}

impl Folded {
    fn of(l: &LatencyStats) -> Self {
        let bounds = BUCKETS_S.iter().copied().chain(std::iter::once(f64::INFINITY));
        let mut buckets: Vec<(f64, u64)> = bounds.zip(l.buckets.iter().copied().chain(std::iter::repeat(0))).collect();
        buckets.truncate(BUCKETS_S.len() + 1);
        Self { sum_s: l.sum_us as f64 / 1e6, count: l.total.count, buckets }
    }
}

/// One [`Folded`] histogram per shard: a family whose members are built whole rather
/// than observed (prometheus-client's `Family` only hands out shared references).
#[derive(Debug, Default)]
struct FoldedFamily(Vec<(ShardLabels, Folded)>);

impl EncodeMetric for FoldedFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            encoder.encode_family(labels)?.encode_histogram::<NoLabelSet>(h.sum_s, h.count, &h.buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Renders the snapshots of every shard.
pub fn render(gateway_id: &str, shards: &[ShardStats]) -> String {
    let mut registry = Registry::with_prefix("imgw");
    let gateway_id = gateway_id.to_string();
    let labels = |s: &ShardStats| ShardLabels { gateway_id: gateway_id.clone(), shard: s.shard.to_string() };

    let gauges: [(&str, &str, CounterFn); 4] = [
        ("connections", "WebSocket connections open", |s| s.connections),
        ("users", "Users with a session on the shard", |s| s.users),
        ("outbound_queued_frames", "Frames waiting in outbound queues", |s| s.outbound_queued),
        ("outbound_queue_max_frames", "Frames waiting in the shard's deepest outbound queue", |s| {
            s.outbound_queued_max
        }),
    ];
    for (name, help, get) in gauges {
        let family = Family::<ShardLabels, Gauge>::default();
        for s in shards {
            family.get_or_create(&labels(s)).set(get(s) as i64);
        }
        registry.register(name, help, family);
    }

    let counters: [(&str, &str, CounterFn); 15] = [
        ("handshakes", "WebSocket upgrades completed", |s| s.handshakes),
        ("auth_failures", "Tokens refused", |s| s.auth_failures),
        ("pushes_in", "Pushes and broadcasts routed to the shard", |s| s.pushes_in),
        ("pushes_queued", "PUSH frames queued to connections", |s| s.pushes_queued),
        ("pushes_out", "PUSH frames written to sockets", |s| s.pushes_out),
        ("accept_backoffs", "Accept errors that made the shard back off", |s| s.accept_backoffs),
        ("frames_out", "Frames written to sockets", |s| s.frames_out),
        ("drops", "Frames dropped (queue overflow or closing connection)", |s| s.drops),
        ("slow_cuts", "Connections closed with 4009", |s| s.slow_cuts),
        ("router_hops", "Messages received from the router or other shards", |s| s.router_hops),
        ("router_backpressure", "Cross-shard sends that found the inbox full", |s| s.router_backpressure),
        ("kicks", "Sessions kicked", |s| s.kicks),
        ("upstream", "UPSTREAM packets received", |s| s.upstream),
        ("acks", "Message ids acknowledged", |s| s.acks),
        ("heartbeats", "Heartbeats answered", |s| s.heartbeats),
    ];
    for (name, help, get) in counters {
        let family = Family::<ShardLabels, Counter>::default();
        for s in shards {
            family.get_or_create(&labels(s)).inc_by(get(s));
        }
        registry.register(name, help, family);
    }

    let closes = Family::<CodeLabels, Counter>::default();
    let rejected = Family::<StatusLabels, Counter>::default();
    for s in shards {
        for (code, n) in &s.closes {
            closes
                .get_or_create(&CodeLabels {
                    gateway_id: gateway_id.clone(),
                    shard: s.shard.to_string(),
                    code: code.clone(),
                })
                .inc_by(*n);
        }
        for (status, n) in &s.rejected {
            rejected
                .get_or_create(&StatusLabels {
                    gateway_id: gateway_id.clone(),
                    shard: s.shard.to_string(),
                    status: status.clone(),
                })
                .inc_by(*n);
        }
    }
    registry.register("closes", "Connections closed, by close code (gone = no close handshake)", closes);
    registry.register("upgrades_rejected", "Upgrades refused, by HTTP status", rejected);

    let reasons = Family::<ReasonLabels, Counter>::default();
    for s in shards {
        for reason in AUTH_FAILURE_REASONS {
            reasons
                .get_or_create(&ReasonLabels {
                    gateway_id: gateway_id.clone(),
                    shard: s.shard.to_string(),
                    reason: reason.to_string(),
                })
                .inc_by(s.auth_failure_reasons.get(reason).copied().unwrap_or(0));
        }
    }
    registry.register("auth_failures_by_reason", "Tokens refused, by reason", reasons);

    let latencies: [(&str, &str, LatencyFn); 3] = [
        ("handshake_latency", "WebSocket upgrade latency: accepted socket to the 101 written", |s| {
            &s.handshake_latency_us
        }),
        ("push_latency", "Push delivery latency: router enqueue to the frame written to the socket", |s| {
            &s.push_latency_us
        }),
        ("loop_stall", "Event-loop stalls: lateness of the shard's 10 ms probe timer", |s| &s.loop_stall_us),
    ];
    for (name, help, get) in latencies {
        let mut histograms = FoldedFamily::default();
        let recent = Family::<QuantileLabels, Gauge<f64, AtomicU64>>::default();
        for s in shards {
            let l = get(s);
            histograms.0.push((labels(s), Folded::of(l)));
            let r = &l.recent;
            for (q, us) in [("0.5", r.p50), ("0.9", r.p90), ("0.99", r.p99), ("0.999", r.p999), ("1", r.max)] {
                let key =
                    QuantileLabels { gateway_id: gateway_id.clone(), shard: s.shard.to_string(), quantile: q.into() };
                recent.get_or_create(&key).set(us as f64 / 1e6);
            }
        }
        registry.register(format!("{name}_seconds"), format!("{help} (since start)"), histograms);
        registry.register(format!("{name}_recent_seconds"), format!("{help} (last 5-10 s, quantiles)"), recent);
    }

    let mut out = String::new();
    // Writing into a String cannot fail.
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode into String");
    out
}
