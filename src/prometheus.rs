//! `/metrics`: the shards' snapshots in Prometheus text format, every series labelled
//! with `gateway_id` and `shard`. Exposition is prometheus-client's; we only map our
//! snapshot fields to families.

use crate::metrics::ShardStats;
use crate::shard::Node;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

type CounterFn = fn(&ShardStats) -> u64;

/// Renders the snapshots of every shard.
pub fn render(node: &Node, shards: &[ShardStats]) -> String {
    let mut registry = Registry::with_prefix("imgw");
    let gateway_id = node.gateway_id().to_string();
    let labels = |s: &ShardStats| ShardLabels { gateway_id: gateway_id.clone(), shard: s.shard.to_string() };

    let gauges: [(&str, &str, CounterFn); 3] = [
        ("connections", "WebSocket connections open", |s| s.connections),
        ("users", "Users with a session on the shard", |s| s.users),
        ("outbound_queued_frames", "Frames waiting in outbound queues", |s| s.outbound_queued),
    ];
    for (name, help, get) in gauges {
        let family = Family::<ShardLabels, Gauge>::default();
        for s in shards {
            family.get_or_create(&labels(s)).set(get(s) as i64);
        }
        registry.register(name, help, family);
    }

    let counters: [(&str, &str, CounterFn); 12] = [
        ("handshakes", "WebSocket upgrades completed", |s| s.handshakes),
        ("auth_failures", "Tokens refused", |s| s.auth_failures),
        ("pushes_queued", "PUSH frames queued to connections", |s| s.pushes_queued),
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

    let mut out = String::new();
    // Writing into a String cannot fail.
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode into String");
    out
}
