//! `report`: folds the JSON reports of one `scripts/bench.sh` run into
//! `report.json` with fixed keys, and prints the results against the targets: the
//! load-test issue's absolute ones, and the performance issue's ratios to the floors
//! measured in the same run ([`Ratios`]).

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

/// `a / b`, or null when either is missing (a floor that was not measured gives no
/// ratio rather than a made-up one).
fn ratio(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    }
}

/// Builds the report; `params` is the run's parameters as JSON.
pub fn build(dir: &Path, params: Value) -> Result<Value> {
    let floor = load(dir, "floor")?;
    let hold = load(dir, "hold")?;
    let storm = load(dir, "storm")?;
    let push = load(dir, "push")?;
    let fanout = load(dir, "fanout")?;
    let heartbeat = load(dir, "heartbeat")?;
    let sat = &push["saturation"];
    let open = &push["open_loop"];
    let fixed = &push["fixed_rate"];
    let lost =
        ["saturation", "open_loop", "fixed_rate"].iter().map(|p| push[p]["lost"].as_u64().unwrap_or(0)).sum::<u64>()
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
    // Round trips: the echo floor and the gateway's HEARTBEAT, phase by phase (same
    // connection counts, same client).
    let round_trips: Vec<Value> = heartbeat["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|gw| {
            let n = &gw["connections"];
            let echo = floor["echo"]["phases"].as_array().into_iter().flatten().find(|e| e["connections"] == *n);
            let floor_cpu = echo.map_or(Value::Null, |e| e["server_cpu_us_per_rt"].clone());
            json!({
                "connections": n,
                "raw_echo_floor_cpu_us_per_rt": floor_cpu,
                "gateway_cpu_us_per_heartbeat_rt": gw["server_cpu_us_per_rt"],
                "ratio": ratio(&gw["server_cpu_us_per_rt"], &floor_cpu),
                "raw_echo_floor": echo.map_or(Value::Null, |e| json!({
                    "rate_per_s": e["rate_per_s"], "server_us_per_rt": e["server_us_per_rt"],
                    "client_us_per_rt": e["client_us_per_rt"], "latency": e["latency"],
                })),
                "gateway": {
                    "rate_per_s": gw["rate_per_s"], "server_us_per_rt": gw["server_us_per_rt"],
                    "client_us_per_rt": gw["client_us_per_rt"], "latency": gw["latency"],
                    "errors": gw["errors"], "unexpected_replies": gw["unexpected_replies"],
                },
            })
        })
        .collect();
    let first_rt = round_trips.first().cloned().unwrap_or(Value::Null);
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
        "raw_echo_floor_cpu_us_per_rt": first_rt["raw_echo_floor_cpu_us_per_rt"],
        "gateway_cpu_us_per_heartbeat_rt": first_rt["gateway_cpu_us_per_heartbeat_rt"],
        "round_trip_connections": first_rt["connections"],
        "push_fixed_rate_per_s": fixed["rate_per_s"],
        "push_fixed_target_rate_per_s": fixed["target_rate_per_s"],
        "push_fixed_p50_us": fixed["latency"]["p50_us"],
        "push_fixed_p99_us": fixed["latency"]["p99_us"],
        "push_fixed_p999_us": fixed["latency"]["p999_us"],
        "ratios": {
            "handshake_vs_accept": handshake / accept.max(1e-9),
            "push_vs_floor": push_rate / push_floor.max(1e-9),
            "heartbeat_rt_cpu_vs_echo_floor": first_rt["ratio"],
            "handshake_cpu_vs_accept_cpu": ratio(&storm["gateway_cpu_us_per_handshake"], &floor["raw_accept_server_cpu_us_per_conn"]),
            "broadcast_vs_fanout_floor": ratio(&fanout["fanout_all_ms"], &floor["raw_fanout_floor_ms"]),
        },
        "round_trips": round_trips,
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

/// One row of the table against the floors.
#[derive(Debug)]
pub struct Target {
    pub figure: String,
    pub measured: String,
    pub target: String,
    /// `None` when the figure or its floor is missing from the run.
    pub met: Option<bool>,
}

/// The performance issue's targets, each a ratio to a floor of the same run (or, for
/// memory, latency and loss, an absolute figure).
pub fn floor_targets(r: &Value) -> Vec<Target> {
    let mut out = Vec::new();
    let row =
        |figure: String, measured: String, target: String, met: Option<bool>| Target { figure, measured, target, met };
    for rt in r["round_trips"].as_array().into_iter().flatten() {
        let x = rt["ratio"].as_f64();
        out.push(row(
            format!("CPU per HEARTBEAT RT, {} conns (us)", rt["connections"]),
            format!("{:.2} ({})", f(&rt["gateway_cpu_us_per_heartbeat_rt"]), fmt_x(x)),
            format!("<= 1.3 x {:.2}", f(&rt["raw_echo_floor_cpu_us_per_rt"])),
            x.map(|x| x <= 1.3),
        ));
    }
    let x = r["ratios"]["handshake_cpu_vs_accept_cpu"].as_f64();
    out.push(row(
        "CPU per handshake (us)".into(),
        format!("{:.1} ({})", f(&r["gateway_cpu_us_per_handshake"]), fmt_x(x)),
        format!("<= 2.0 x {:.1}", f(&r["raw_accept_server_cpu_us_per_conn"])),
        x.map(|x| x <= 2.0),
    ));
    let rss = r["idle_rss_per_conn_bytes"].as_f64();
    out.push(row(
        "idle RSS per connection (B)".into(),
        rss.map_or("?".into(), |v| format!("{v:.0}")),
        "<= 1024 (then 512)".into(),
        rss.map(|v| v <= 1024.0),
    ));
    let x = r["ratios"]["broadcast_vs_fanout_floor"].as_f64();
    out.push(row(
        "broadcast, last receipt (ms)".into(),
        format!("{:.1} ({})", f(&r["fanout_all_ms"]), fmt_x(x)),
        format!("<= 1.1 x {:.1}", f(&r["raw_fanout_floor_ms"])),
        x.map(|x| x <= 1.1),
    ));
    let x = r["ratios"]["push_vs_floor"].as_f64().filter(|_| f(&r["raw_push_floor_per_s"]) > 0.0);
    out.push(row(
        "pushes/s (saturated)".into(),
        format!("{:.0} ({})", f(&r["push_rate_per_s"]), fmt_x(x)),
        format!(">= 0.9 x {:.0}", f(&r["raw_push_floor_per_s"])),
        x.map(|x| x >= 0.9),
    ));
    let (p99, p999) = (r["push_fixed_p99_us"].as_f64(), r["push_fixed_p999_us"].as_f64());
    out.push(row(
        format!("push p99 / p999 at {:.0}/s (us)", f(&r["push_fixed_rate_per_s"])),
        format!("{:.0} / {:.0}", p99.unwrap_or(0.0), p999.unwrap_or(0.0)),
        "<= 2000 / 10000".into(),
        p99.zip(p999).map(|(a, b)| a <= 2000.0 && b <= 10000.0),
    ));
    let lost = r["pushes_lost"].as_u64();
    out.push(row(
        "pushes lost (every phase)".into(),
        lost.map_or("?".into(), |v| v.to_string()),
        "0".into(),
        lost.map(|v| v == 0),
    ));
    out
}

fn fmt_x(x: Option<f64>) -> String {
    x.map_or("no floor".into(), |x| format!("{x:.2}x"))
}

/// The results against the targets (issue: load tester and benchmarks), then against
/// the floors (performance issue).
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
    println!();
    println!("against the floors of this run (performance issue):");
    println!("{:<44} {:>20} {:>20} {:>5}", "figure", "measured", "target", "met");
    for t in floor_targets(r) {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "?",
        };
        println!("{:<44} {:>20} {:>20} {:>5}", t.figure, t.measured, t.target, met);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_null_without_a_floor() {
        assert_eq!(ratio(&json!(3.0), &json!(2.0)), json!(1.5));
        assert_eq!(ratio(&json!(3.0), &Value::Null), Value::Null);
        assert_eq!(ratio(&json!(3.0), &json!(0.0)), Value::Null);
    }

    /// A run folded from step reports: every new key and ratio is there and each
    /// target row judges its own figure.
    #[test]
    fn a_run_is_folded_and_judged_against_its_floors() {
        let dir = std::env::temp_dir().join(format!("loadtest-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write =
            |name: &str, v: Value| std::fs::write(dir.join(format!("{name}.json")), format!("noise\n{v}\n")).unwrap();
        let rt = |n: u64, cpu: f64| json!({ "connections": n, "server_cpu_us_per_rt": cpu, "rate_per_s": 1000.0 });
        write(
            "floor",
            json!({
                "raw_tcp_accept_rate_per_s": 20000.0, "raw_push_floor_per_s": 100000.0, "raw_fanout_floor_ms": 100.0,
                "raw_accept_server_cpu_us_per_conn": 15.0,
                "echo": { "phases": [rt(100, 5.0), rt(1000, 6.0)] },
            }),
        );
        write("hold", json!({ "idle_rss_per_conn_bytes": 1000.0 }));
        write("storm", json!({ "rate_per_s": 10000.0, "gateway_cpu_us_per_handshake": 45.0 }));
        write("heartbeat", json!({ "phases": [rt(100, 6.0), rt(1000, 9.0)] }));
        let phase = |lost: u64, p99: u64| json!({ "lost": lost, "rate_per_s": 20000.0, "latency": { "p99_us": p99, "p999_us": 5000 } });
        let mut push = json!({ "saturation": phase(0, 0), "open_loop": phase(0, 9000), "fixed_rate": phase(2, 1500) });
        push["saturation"]["rate_per_s"] = json!(95000.0);
        write("push", push);
        write("fanout", json!({ "fanout_all_ms": 105.0, "lost": 0 }));
        let r = build(&dir, json!({})).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(r["raw_echo_floor_cpu_us_per_rt"], json!(5.0));
        assert_eq!(r["gateway_cpu_us_per_heartbeat_rt"], json!(6.0));
        assert_eq!(r["push_fixed_rate_per_s"], json!(20000.0));
        assert_eq!(r["push_fixed_p99_us"], json!(1500));
        assert_eq!(r["push_fixed_p999_us"], json!(5000));
        assert_eq!(r["pushes_lost"], json!(2), "the fixed-rate phase's losses count");
        assert_eq!(r["ratios"]["heartbeat_rt_cpu_vs_echo_floor"], json!(1.2));
        assert_eq!(r["ratios"]["handshake_cpu_vs_accept_cpu"], json!(3.0));
        assert_eq!(r["round_trips"][1]["ratio"], json!(1.5));

        let met: Vec<(String, Option<bool>)> = floor_targets(&r).into_iter().map(|t| (t.figure, t.met)).collect();
        let expect = [true, false, false, true, true, true, true, false];
        assert_eq!(met.len(), expect.len(), "{met:?}");
        for ((figure, met), want) in met.iter().zip(expect) {
            assert_eq!(*met, Some(want), "{figure}");
        }
    }
}
