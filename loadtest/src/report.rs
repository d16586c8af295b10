//! `report`: folds the JSON reports of one `scripts/bench.sh` run into
//! `report.json` with fixed keys, and prints the results against the targets.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::Path;

fn load(dir: &Path, name: &str) -> Result<Value> {
    let path = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    // A report is the last JSON line of the file (anything before is log noise).
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .with_context(|| format!("no JSON report in {}", path.display()))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Builds the report; `params` is the run's parameters as JSON.
pub fn build(dir: &Path, params: Value) -> Result<Value> {
    let floor = load(dir, "floor")?;
    let hold = load(dir, "hold")?;
    let storm = load(dir, "storm")?;
    let push = load(dir, "push")?;
    let fanout = load(dir, "fanout")?;
    let sat = &push["saturation"];
    let open = &push["open_loop"];
    let lost = push["saturation"]["lost"].as_u64().unwrap_or(0)
        + push["open_loop"]["lost"].as_u64().unwrap_or(0)
        + fanout["lost"].as_u64().unwrap_or(0);
    let per_shard_push: Vec<Value> = open["per_shard"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| json!({ "shard": s["shard"], "received": s["count"], "p50_us": s["p50_us"], "p99_us": s["p99_us"], "p999_us": s["p999_us"], "max_us": s["max_us"] }))
        .collect();
    let handshake = f(&storm["rate_per_s"]);
    let accept = f(&floor["raw_tcp_accept_rate_per_s"]);
    let push_rate = f(&sat["rate_per_s"]);
    let push_floor = f(&floor["raw_push_floor_per_s"]);
    let report = json!({
        "idle_rss_per_conn_bytes": hold["idle_rss_per_conn_bytes"],
        "handshake_rate_per_s": handshake,
        "raw_tcp_accept_rate_per_s": accept,
        "push_rate_per_s": push_rate,
        "raw_push_floor_per_s": push_floor,
        "push_p50_us": open["latency"]["p50_us"],
        "push_p99_us": open["latency"]["p99_us"],
        "push_p999_us": open["latency"]["p999_us"],
        "push_latency_rate_per_s": open["rate_per_s"],
        "fanout_all_ms": fanout["fanout_all_ms"],
        "fanout_list_ms": fanout["fanout_list_ms"],
        "raw_fanout_floor_ms": floor["raw_fanout_floor_ms"],
        "pushes_lost": lost,
        "gateway_cpu_us_per_push": sat["gateway_cpu_us_per_push"],
        "gateway_cpu_us_per_handshake": storm["gateway_cpu_us_per_handshake"],
        "raw_accept_server_cpu_us_per_conn": floor["raw_accept_server_cpu_us_per_conn"],
        "ratios": {
            "handshake_vs_accept": handshake / accept.max(1e-9),
            "push_vs_floor": push_rate / push_floor.max(1e-9),
        },
        "per_shard": {
            "push_open_loop": per_shard_push,
            "push_shard_cpu_s": open["gateway_shard_cpu_s"],
            "storm_up": storm["per_shard_up"],
            "storm_shard_cpu_s": storm["gateway_shard_cpu_s_storm"],
            "hold_up": hold["per_shard_up"],
        },
        "storm": {
            "up": storm["up"], "failed": storm["failed"], "failures": storm["failures"],
            "connect_latency": storm["connect_latency"], "upgrade_latency": storm["upgrade_latency"],
            "auth_latency": storm["auth_latency"],
        },
        "hold": {
            "up": hold["up"], "dropped": hold["dropped_during_hold"], "hold_s": hold["hold_s"],
            "rss_before_bytes": hold["gateway_rss_before_bytes"], "rss_after_bytes": hold["gateway_rss_after_hold_bytes"],
        },
        "params": params,
    });
    Ok(report)
}

/// The results against the targets (issue: load tester and benchmarks).
pub fn print(r: &Value) {
    let mark = |ok: bool| if ok { "yes" } else { "NO" };
    let rss = f(&r["idle_rss_per_conn_bytes"]);
    let hs = f(&r["ratios"]["handshake_vs_accept"]);
    let pr = f(&r["ratios"]["push_vs_floor"]);
    let p99 = f(&r["push_p99_us"]);
    let p999 = f(&r["push_p999_us"]);
    let fan = f(&r["fanout_all_ms"]);
    let lost = r["pushes_lost"].as_u64().unwrap_or(0);
    println!("{:<44} {:>14} {:>18} {:>5}", "figure", "measured", "target", "met");
    println!("{:<44} {:>14.0} {:>18} {:>5}", "idle RSS per connection (B)", rss, "<= 1536", mark(rss <= 1536.0));
    println!(
        "{:<44} {:>14.0} {:>18} {:>5}",
        "handshakes/s (raw accept floor)",
        f(&r["handshake_rate_per_s"]),
        format!(">= 0.9 x {:.0}", f(&r["raw_tcp_accept_rate_per_s"])),
        mark(hs >= 0.9)
    );
    println!(
        "{:<44} {:>14.0} {:>18} {:>5}",
        "pushes/s (raw push floor)",
        f(&r["push_rate_per_s"]),
        format!(">= 0.7 x {:.0}", f(&r["raw_push_floor_per_s"])),
        mark(pr >= 0.7)
    );
    println!(
        "{:<44} {:>14} {:>18} {:>5}",
        format!("push p99 / p999 at {:.0}/s (us)", f(&r["push_latency_rate_per_s"])),
        format!("{p99:.0} / {p999:.0}"),
        "<= 2000 / 10000",
        mark(p99 <= 2000.0 && p999 <= 10000.0)
    );
    println!(
        "{:<44} {:>14.2} {:>18} {:>5}",
        format!("broadcast, last receipt (ms; floor {:.1})", f(&r["raw_fanout_floor_ms"])),
        fan,
        "<= 20",
        mark(fan <= 20.0)
    );
    println!("{:<44} {:>14} {:>18} {:>5}", "pushes lost", lost, "0", mark(lost == 0));
    println!(
        "gateway CPU: {:.2} us per push (saturated), {:.1} us per handshake (raw accept server: {:.1} us per connection)",
        f(&r["gateway_cpu_us_per_push"]),
        f(&r["gateway_cpu_us_per_handshake"]),
        f(&r["raw_accept_server_cpu_us_per_conn"])
    );
}
