//! `storm` and `hold`: open N authenticated connections at a target rate (jittered
//! starts, many 127.0.0.x sources, a cap on attempts in flight), report the achieved
//! rate, per-phase latency and failures by cause; then keep them idle with heartbeats
//! (`hold`) while the gateway's RSS and CPU are sampled.
//!
//! A run is split into slices; with `--procs P` each slice is a client process of its
//! own (the open-file limit caps one process at ~19,900 sockets), coordinated over its
//! stdin/stdout by [`coordinate`].

use crate::client::{self, Ended, Ws};
use crate::hist::Hist;
use crate::sys::{self, Sample, Worker};
use crate::Common;
use anyhow::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// What one run opens.
#[derive(Debug, Clone)]
pub struct Plan {
    pub targets: Vec<SocketAddr>,
    pub connections: u64,
    /// Attempts per second over the whole run (0: as fast as `concurrency` allows).
    pub rate: f64,
    /// Attempts in flight at most, per process.
    pub concurrency: usize,
    pub timeout: Duration,
    pub source_ips: u8,
    pub first_user: i64,
    pub platform: Option<i32>,
    pub heartbeat: Duration,
}

/// The result of opening one slice.
pub struct Opened {
    pub conns: Vec<(Ws, u32)>,
    pub report: Value,
}

/// Opens connections `[from, to)` of the plan, at `rate` per second.
pub async fn open_slice(common: &Common, plan: &Plan, from: u64, to: u64, rate: f64) -> Result<Opened> {
    let minter = Arc::new(common.minter()?);
    let count = to - from;
    let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let gap = if rate > 0.0 { Duration::from_secs_f64(1.0 / rate) } else { Duration::ZERO };
    let mut tick = (rate > 0.0).then(|| {
        let mut t = tokio::time::interval(gap);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let spawner = {
        let plan = plan.clone();
        tokio::spawn(async move {
            for i in from..to {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let permit = gate.clone().acquire_owned().await.expect("semaphore open");
                let target = plan.targets[(i % plan.targets.len() as u64) as usize];
                let source = client::source(i, plan.source_ips);
                let user = plan.first_user + i as i64;
                let token = minter.mint(user, plan.platform, 24 * 3600);
                let done = done_tx.clone();
                let jitter = gap.mul_f64(fastrand::f64());
                tokio::spawn(async move {
                    if !jitter.is_zero() {
                        tokio::time::sleep(jitter).await;
                    }
                    let r = client::open(target, source, &token, plan.timeout).await;
                    drop(permit);
                    let _ = done.send(r);
                });
            }
        })
    };
    let mut conns = Vec::with_capacity(count as usize);
    let (mut connect, mut upgrade, mut auth) = (Hist::new(), Hist::new(), Hist::new());
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_shard: BTreeMap<u32, u64> = BTreeMap::new();
    for _ in 0..count {
        let Some(r) = done_rx.recv().await else { break };
        match r {
            Ok((ws, shard, t)) => {
                connect.record(t.connect_us);
                upgrade.record(t.upgrade_us);
                auth.record(t.auth_us);
                *per_shard.entry(shard).or_default() += 1;
                conns.push((ws, shard));
            }
            Err(refusal) => *failures.entry(refusal.failure.key()).or_default() += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = spawner.await;
    let up = conns.len() as u64;
    let report = json!({
        "attempted": count,
        "up": up,
        "failed": count - up,
        "failures": failures,
        "elapsed_s": elapsed,
        "rate_per_s": up as f64 / elapsed.max(1e-9),
        "per_shard_up": per_shard,
        "connect": connect.buckets(),
        "upgrade": upgrade.buckets(),
        "auth": auth.buckets(),
    });
    Ok(Opened { conns, report })
}

/// Keeps opened connections alive with heartbeats; returns a stop switch and the tasks.
pub fn keep(
    conns: Vec<(Ws, u32)>,
    heartbeat: Duration,
    receipts: Option<Arc<client::Receipts>>,
) -> (watch::Sender<bool>, Vec<tokio::task::JoinHandle<Ended>>) {
    let (stop_tx, stop) = watch::channel(false);
    let tasks = conns
        .into_iter()
        .map(|(ws, shard)| tokio::spawn(client::live(ws, shard, heartbeat, receipts.clone(), stop.clone())))
        .collect();
    (stop_tx, tasks)
}

/// Stops kept connections; returns how many had ended on their own before (dropped).
pub async fn release(stop: watch::Sender<bool>, tasks: Vec<tokio::task::JoinHandle<Ended>>) -> u64 {
    let _ = stop.send(true);
    let mut dropped = 0;
    for t in tasks {
        if let Ok(ended) = t.await {
            dropped += u64::from(!ended.by_us);
        }
    }
    dropped
}

/// Slice `k` of `p` of `n` items: `[from, to)`.
pub fn slice(n: u64, k: usize, p: usize) -> (u64, u64) {
    let (k, p) = (k as u64, p.max(1) as u64);
    (n * k / p, n * (k + 1) / p)
}

/// Runs in a worker process: open slice `k/p`, print the open report, keep the
/// connections until stdin says stop, print how many dropped.
pub async fn worker(common: &Common, plan: &Plan, k: usize, p: usize) -> Result<()> {
    let (from, to) = slice(plan.connections, k, p);
    let opened = open_slice(common, plan, from, to, plan.rate / p as f64).await?;
    println!("{}", opened.report);
    let (stop, tasks) = keep(opened.conns, plan.heartbeat, None);
    let mut line = String::new();
    let _ = tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(tokio::io::stdin()), &mut line).await;
    let dropped = release(stop, tasks).await;
    println!("{}", json!({ "dropped": dropped }));
    Ok(())
}

/// Merges slice reports into the run's report.
fn merge(reports: &[Value]) -> Value {
    let sum = |key: &str| reports.iter().map(|r| r[key].as_u64().unwrap_or(0)).sum::<u64>();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_shard: BTreeMap<String, u64> = BTreeMap::new();
    let (mut connect, mut upgrade, mut auth) = (Hist::new(), Hist::new(), Hist::new());
    for r in reports {
        for (k, v) in r["failures"].as_object().into_iter().flatten() {
            *failures.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
        for (k, v) in r["per_shard_up"].as_object().into_iter().flatten() {
            *per_shard.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
        connect.add(&Hist::from_buckets(&r["connect"]));
        upgrade.add(&Hist::from_buckets(&r["upgrade"]));
        auth.add(&Hist::from_buckets(&r["auth"]));
    }
    let elapsed = reports.iter().map(|r| r["elapsed_s"].as_f64().unwrap_or(0.0)).fold(0.0, f64::max);
    let up = sum("up");
    json!({
        "attempted": sum("attempted"),
        "up": up,
        "failed": sum("failed"),
        "failures": failures,
        "elapsed_s": elapsed,
        "rate_per_s": up as f64 / elapsed.max(1e-9),
        "per_shard_up": per_shard,
        "connect_latency": connect.summary(),
        "upgrade_latency": upgrade.summary(),
        "auth_latency": auth.summary(),
        "processes": reports.len(),
    })
}

/// Runs a storm (hold = 0) or a hold over `procs` client processes (in this process
/// when 1), sampling the gateway around it.
pub async fn coordinate(common: &Common, plan: &Plan, procs: usize, hold: Duration) -> Result<Value> {
    sys::perf_ctl("enable");
    let before = Sample::take(common.gateway_pid);
    let (opens, kept) = if procs <= 1 {
        let opened = open_slice(common, plan, 0, plan.connections, plan.rate).await?;
        let report = opened.report;
        (vec![report], Kept::Local(keep(opened.conns, plan.heartbeat, None)))
    } else {
        let args = sys::own_args();
        let mut workers = Vec::new();
        for k in 0..procs {
            workers.push(Worker::spawn(&args, k, procs)?);
        }
        let mut opens = Vec::new();
        for w in &mut workers {
            opens.push(w.next().await?);
        }
        (opens, Kept::Workers(workers))
    };
    let all_up = Sample::take(common.gateway_pid);
    sys::perf_ctl("disable");
    tokio::time::sleep(hold).await;
    let after = Sample::take(common.gateway_pid);
    let dropped = match kept {
        Kept::Local((stop, tasks)) => release(stop, tasks).await,
        Kept::Workers(mut workers) => {
            let mut dropped = 0;
            for w in &mut workers {
                w.stop().await?;
            }
            for mut w in workers {
                dropped += w.next().await?["dropped"].as_u64().unwrap_or(0);
                w.wait().await?;
            }
            dropped
        }
    };
    let mut report = merge(&opens);
    let up = report["up"].as_u64().unwrap_or(0);
    report["dropped_during_hold"] = json!(dropped);
    report["hold_s"] = json!(hold.as_secs_f64());
    report["gateway_rss_before_bytes"] = json!(before.rss);
    report["gateway_rss_all_up_bytes"] = json!(all_up.rss);
    report["gateway_rss_after_hold_bytes"] = json!(after.rss);
    if let (Some(b), Some(a)) = (before.rss, after.rss) {
        if up > 0 {
            report["idle_rss_per_conn_bytes"] = json!((a.saturating_sub(b)) as f64 / up as f64);
        }
    }
    if let (Some(b), Some(u), Some(a)) = (before.cpu_s, all_up.cpu_s, after.cpu_s) {
        report["gateway_cpu_s_storm"] = json!(u - b);
        report["gateway_cpu_s_hold"] = json!(a - u);
        if up > 0 {
            report["gateway_cpu_us_per_handshake"] = json!((u - b) * 1e6 / up as f64);
            if let (Some((bu, bs)), Some((uu, us))) = (before.user_sys_s, all_up.user_sys_s) {
                let k = 1e6 / up as f64;
                report["gateway_us_per_handshake"] = json!({ "user": (uu - bu) * k, "sys": (us - bs) * k });
            }
        }
        report["gateway_shard_cpu_s_storm"] = before.shard_cpu_s(&all_up);
    }
    Ok(report)
}

enum Kept {
    Local((watch::Sender<bool>, Vec<tokio::task::JoinHandle<Ended>>)),
    Workers(Vec<Worker>),
}

/// The human table.
pub fn print(report: &Value, hold: bool) {
    let lat = |k: &str| Hist::cell(&report[k]);
    println!(
        "connections: {}/{} up, {} failed {} in {:.2}s = {:.0}/s ({} process(es))",
        report["up"],
        report["attempted"],
        report["failed"],
        report["failures"],
        report["elapsed_s"].as_f64().unwrap_or(0.0),
        report["rate_per_s"].as_f64().unwrap_or(0.0),
        report["processes"]
    );
    println!("per shard: {}", report["per_shard_up"]);
    println!("{:<10} {:>8} {:>8} {:>8} {:>8}  (ms)", "phase", "p50", "p99", "p999", "max");
    for (name, key) in [("connect", "connect_latency"), ("upgrade", "upgrade_latency"), ("auth", "auth_latency")] {
        println!("{name:<10} {}", lat(key));
    }
    if let Some(cpu) = report["gateway_cpu_us_per_handshake"].as_f64() {
        let split = &report["gateway_us_per_handshake"];
        println!(
            "gateway CPU per handshake: {cpu:.1} us ({:.1} user + {:.1} kernel)",
            split["user"].as_f64().unwrap_or(0.0),
            split["sys"].as_f64().unwrap_or(0.0)
        );
    }
    if hold {
        println!("dropped during hold: {}", report["dropped_during_hold"]);
        if let (Some(b), Some(a)) =
            (report["gateway_rss_before_bytes"].as_u64(), report["gateway_rss_after_hold_bytes"].as_u64())
        {
            println!(
                "gateway RSS: {:.1} MiB before, {:.1} MiB after the hold",
                b as f64 / 1048576.0,
                a as f64 / 1048576.0
            );
        }
        if let Some(p) = report["idle_rss_per_conn_bytes"].as_f64() {
            println!("idle RSS per connection: {p:.0} bytes");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slices_cover_the_range_once() {
        let n = 18_001;
        let mut next = 0;
        for k in 0..4 {
            let (from, to) = super::slice(n, k, 4);
            assert_eq!(from, next);
            next = to;
        }
        assert_eq!(next, n);
    }
}
