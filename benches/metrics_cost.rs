//! What the push-path metrics add per delivered push, measured in isolation (the
//! end-to-end push benchmark on a shared 2-core box is too noisy to resolve it; see
//! BENCHMARKS.md, "Metrics cost on the push path").
//!
//! Per push the router takes one stamp; per write batch the writer takes one stamp,
//! bumps two counters and records one hdrhistogram value. Run:
//! `cargo bench --bench metrics_cost`.

use im_gateway::metrics::{self, ShardMetrics};
use std::hint::black_box;
use std::time::Instant;

const N: u64 = 5_000_000;

fn ns_per(f: impl Fn()) -> f64 {
    for _ in 0..N / 10 {
        f(); // warm up
    }
    let t = Instant::now();
    for _ in 0..N {
        f();
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

fn main() {
    let m = ShardMetrics::default();
    let stamp = ns_per(|| {
        black_box(metrics::stamp());
    });
    let record = ns_per(|| {
        m.push_latency.borrow_mut().record(black_box(137));
    });
    let push = ns_per(|| {
        let at = black_box(metrics::stamp()); // the router, once per push
        let written = metrics::stamp(); // the writer, once per write batch
        metrics::inc(&m.frames_out);
        metrics::inc(&m.pushes_out);
        m.push_latency.borrow_mut().record(metrics::micros_between(at, written));
    });
    println!("metrics::stamp()                     {stamp:6.1} ns");
    println!("LatencyHist::record()                {record:6.1} ns");
    println!("per push, one recipient (all of it)  {push:6.1} ns");
}
