//! `push` and `fanout`: pushes through the gateway's admin API to connected clients,
//! each receipt timed from the message's `server_ts_us` (stamped when the gateway took
//! the request) and counted per shard; every push is counted sent and received.
//!
//! `push` runs two phases over the same connections: a saturation phase (as many
//! deliveries per second as the gateway takes, with a cap on deliveries in flight so no
//! client queue overflows) and an open-loop phase at a fixed rate (half the measured
//! maximum unless `--rate` says otherwise), where the next request goes out on
//! schedule whatever happened to the last one, so latency is not hidden by waiting.
//! With `--fixed-rate R`, a third phase runs open loop at exactly R deliveries per
//! second (the latency target is stated at a fixed rate, not relative to the
//! saturated one).

use crate::client::Receipts;
use crate::hist::Hist;
use crate::storm::{self, Plan};
use crate::sys::Sample;
use crate::Common;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The admin API over pooled keep-alive connections.
#[derive(Clone)]
pub struct Admin {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

impl Admin {
    pub fn new(common: &Common) -> Admin {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        Admin { client, base: format!("http://{}", common.admin), token: common.admin_token.clone() }
    }

    /// POSTs JSON; returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let mut req = hyper::Request::post(format!("{}{path}", self.base)).header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let resp = self.client.request(req).await.context("admin request")?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }
}

/// Parameters of a push run.
#[derive(Debug, Clone)]
pub struct PushArgs {
    /// Users per request (one frame, encoded once, to each of them).
    pub batch: usize,
    /// Seconds per phase.
    pub duration: f64,
    /// Open-loop deliveries per second; 0: half of the measured maximum.
    pub rate: f64,
    /// Skip the saturation phase (needs `rate`).
    pub no_saturate: bool,
    /// A third phase, open loop at this many deliveries per second; 0: none.
    pub fixed_rate: f64,
    /// Requests in flight at most during saturation.
    pub concurrency: usize,
    /// Deliveries in flight (sent, not yet received) at most during saturation.
    pub window: u64,
    /// Size of `content` in each push.
    pub content_bytes: usize,
}

struct Counters {
    expected: AtomicU64,
    request_errors: AtomicU64,
    requests: AtomicU64,
}

fn msg(msg_id: u64, content: &str) -> Value {
    json!({ "msg_id": msg_id, "sender_id": 1, "group_id": 0, "type": 1, "content": content })
}

/// Sends one push to `users`; counts what the gateway reports delivered.
async fn send(admin: &Admin, users: Vec<i64>, msg_id: u64, content: &str, c: &Counters) {
    c.requests.fetch_add(1, Ordering::Relaxed);
    match admin.post("/v1/push", &json!({ "user_ids": users, "msg": msg(msg_id, content) })).await {
        Ok((200, v)) => {
            c.expected.fetch_add(v["online_users"].as_u64().unwrap_or(0), Ordering::Relaxed);
        }
        _ => {
            c.request_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits until every expected delivery arrived, or nothing arrived for `quiet`.
async fn drain(receipts: &Receipts, expected: u64, quiet: Duration) -> u64 {
    let mut last = receipts.received.load(Ordering::SeqCst);
    let mut since = Instant::now();
    loop {
        let now = receipts.received.load(Ordering::SeqCst);
        if now >= expected {
            return now;
        }
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() > quiet {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn phase_report(receipts: &Receipts, c: &Counters, received: u64, elapsed: f64, cpu: Option<f64>) -> Value {
    let all = receipts.merged();
    let expected = c.expected.load(Ordering::SeqCst);
    let per_shard: Vec<Value> = receipts
        .per_shard
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut s = h.lock().unwrap().summary();
            s["shard"] = json!(i);
            s
        })
        .collect();
    json!({
        "requests": c.requests.load(Ordering::SeqCst),
        "request_errors": c.request_errors.load(Ordering::SeqCst),
        "sent": expected,
        "received": received,
        "lost": expected.saturating_sub(received),
        "elapsed_s": elapsed,
        "rate_per_s": received as f64 / elapsed.max(1e-9),
        "latency": all.summary(),
        "per_shard": per_shard,
        "gateway_cpu_us_per_push": cpu.filter(|_| received > 0).map(|s| s * 1e6 / received as f64),
    })
}

fn counters() -> Counters {
    Counters { expected: AtomicU64::new(0), request_errors: AtomicU64::new(0), requests: AtomicU64::new(0) }
}

/// Round-robin batches over the connected users.
struct Batches {
    users: Vec<i64>,
    next: usize,
    batch: usize,
}

impl Batches {
    fn take(&mut self) -> Vec<i64> {
        let n = self.batch.min(self.users.len());
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.users[self.next]);
            self.next = (self.next + 1) % self.users.len();
        }
        out
    }
}

/// What both push phases work with.
struct Run<'a> {
    common: &'a Common,
    admin: Admin,
    receipts: Arc<Receipts>,
    users: Vec<i64>,
    a: &'a PushArgs,
    content: Arc<str>,
}

/// As many deliveries per second as the gateway takes, for `duration`.
async fn saturate(run: &Run<'_>, base_id: u64) -> Value {
    let Run { common, admin, receipts, users, a, content } = run;
    receipts.reset(base_id);
    let c = Arc::new(counters());
    let before = Sample::take(common.gateway_pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.duration);
    let batches = Arc::new(std::sync::Mutex::new(Batches { users: users.to_vec(), next: 0, batch: a.batch }));
    let next_id = Arc::new(AtomicU64::new(base_id));
    let mut workers = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (admin, receipts, c, batches, next_id, content) =
            (admin.clone(), receipts.clone(), c.clone(), batches.clone(), next_id.clone(), content.clone());
        let window = a.window;
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let in_flight =
                    c.expected.load(Ordering::Relaxed).saturating_sub(receipts.received.load(Ordering::Relaxed));
                if in_flight > window {
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                let users = batches.lock().unwrap().take();
                send(&admin, users, next_id.fetch_add(1, Ordering::Relaxed), &content, &c).await;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    // The rate counts what arrived while the phase ran; the tail is then drained so the
    // count of lost pushes is exact.
    let in_phase = receipts.received.load(Ordering::SeqCst);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_end = Sample::take(common.gateway_pid);
    let received = drain(receipts, c.expected.load(Ordering::SeqCst), Duration::from_secs(3)).await;
    let cpu = before.cpu_s.zip(cpu_end.cpu_s).map(|(b, a)| a - b);
    let mut r =
        phase_report(receipts, &c, received, elapsed, cpu.map(|s| s * received as f64 / in_phase.max(1) as f64));
    r["rate_per_s"] = json!(in_phase as f64 / elapsed.max(1e-9));
    r["gateway_shard_cpu_s"] = before.shard_cpu_s(&cpu_end);
    r
}

/// Deliveries at a fixed rate, on schedule (open loop), for `duration`.
async fn open_loop(run: &Run<'_>, rate: f64, base_id: u64) -> Value {
    let Run { common, admin, receipts, users, a, content } = run;
    receipts.reset(base_id);
    let c = Arc::new(counters());
    let before = Sample::take(common.gateway_pid);
    let requests_per_s = rate / a.batch as f64;
    let total = (requests_per_s * a.duration).round().max(1.0) as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / requests_per_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut batches = Batches { users: users.to_vec(), next: 0, batch: a.batch };
    let started = Instant::now();
    // The gateway's RSS through the phase (the soak figure: flat or growing).
    let (stop_rss, rss_task) = rss_sampler(common.gateway_pid, Duration::from_secs_f64((a.duration / 60.0).max(1.0)));
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tick.tick().await;
        let (admin, c, content) = (admin.clone(), c.clone(), content.clone());
        let users = batches.take();
        tasks.push(tokio::spawn(async move { send(&admin, users, base_id + i, &content, &c).await }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = stop_rss.send(true);
    let rss = rss_task.await.unwrap_or_default();
    let received = drain(receipts, c.expected.load(Ordering::SeqCst), Duration::from_secs(3)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = Sample::take(common.gateway_pid);
    let cpu = before.cpu_s.zip(after.cpu_s).map(|(b, a)| a - b);
    let mut r = phase_report(receipts, &c, received, elapsed, cpu);
    r["target_rate_per_s"] = json!(rate);
    r["gateway_rss_drift_pct"] = json!(rss_drift_pct(&rss));
    r["gateway_rss_samples"] = json!(rss);
    r["gateway_shard_cpu_s"] = before.shard_cpu_s(&after);
    r
}

/// Samples the gateway's RSS every `every` until told to stop: `[[seconds, bytes], ..]`.
fn rss_sampler(
    pid: Option<u32>,
    every: Duration,
) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<Vec<(f64, u64)>>) {
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut out = Vec::new();
        let Some(pid) = pid else { return out };
        let t0 = Instant::now();
        loop {
            if let Ok(rss) = crate::sys::rss_bytes(pid) {
                out.push((t0.elapsed().as_secs_f64(), rss));
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return out,
            }
        }
    });
    (stop_tx, task)
}

/// Spread of the RSS samples after the first tenth of the phase (warm-up), as a
/// percentage of the smallest: how far from flat the gateway's memory stayed.
fn rss_drift_pct(samples: &[(f64, u64)]) -> Option<f64> {
    let end = samples.last()?.0;
    let steady: Vec<u64> = samples.iter().filter(|(t, _)| *t >= end / 10.0).map(|s| s.1).collect();
    let (min, max) = (*steady.iter().min()?, *steady.iter().max()?);
    Some((max - min) as f64 * 100.0 / min.max(1) as f64)
}

/// Opens the connections of `plan` in this process and keeps them, recording receipts.
async fn connect(
    common: &Common,
    plan: &Plan,
) -> Result<(
    Arc<Receipts>,
    Vec<i64>,
    Value,
    (tokio::sync::watch::Sender<bool>, Vec<tokio::task::JoinHandle<crate::client::Ended>>),
)> {
    if plan.connections > 19_000 {
        bail!("push and fanout run in one process: at most 19,000 connections (the open-file limit)");
    }
    let opened = storm::open_slice(common, plan, 0, plan.connections, plan.rate).await?;
    let shards = opened.conns.iter().map(|c| c.1 as usize + 1).max().unwrap_or(1);
    let receipts = Receipts::new(shards);
    let mut users = Vec::new();
    // Users that came up: connection i is user first_user + i, but failures leave gaps;
    // the gateway's `online_users` answer keeps the expected count exact either way.
    for i in 0..plan.connections {
        users.push(plan.first_user + i as i64);
    }
    let report = json!({ "up": opened.report["up"], "failures": opened.report["failures"], "per_shard_up": opened.report["per_shard_up"] });
    let kept = storm::keep(opened.conns, plan.heartbeat, Some(receipts.clone()));
    Ok((receipts, users, report, kept))
}

pub async fn push(common: &Common, plan: &Plan, a: &PushArgs) -> Result<Value> {
    let (receipts, users, opened, kept) = connect(common, plan).await?;
    let content: Arc<str> = "x".repeat(a.content_bytes).into();
    let run = Run { common, admin: Admin::new(common), receipts, users, a, content };
    let mut report =
        json!({ "connections": opened, "batch": a.batch, "content_bytes": a.content_bytes, "phase_s": a.duration });
    let mut rate = a.rate;
    if !a.no_saturate {
        let sat = saturate(&run, 1 << 40).await;
        if rate <= 0.0 {
            rate = sat["rate_per_s"].as_f64().unwrap_or(0.0) / 2.0;
        }
        report["saturation"] = sat;
    }
    if rate <= 0.0 {
        bail!("no rate for the open-loop phase: give --rate or let the saturation phase measure one");
    }
    report["open_loop"] = open_loop(&run, rate, 2 << 40).await;
    if a.fixed_rate > 0.0 {
        report["fixed_rate"] = open_loop(&run, a.fixed_rate, 4 << 40).await;
    }
    storm::release(kept.0, kept.1).await;
    Ok(report)
}

/// Parameters of a fan-out run.
#[derive(Debug, Clone)]
pub struct FanoutArgs {
    pub rounds: usize,
    pub content_bytes: usize,
}

pub async fn fanout(common: &Common, plan: &Plan, a: &FanoutArgs) -> Result<Value> {
    let admin = Admin::new(common);
    let (receipts, users, opened, kept) = connect(common, plan).await?;
    let up = opened["up"].as_u64().unwrap_or(0);
    let content = "x".repeat(a.content_bytes);
    let mut rounds = Vec::new();
    for r in 0..a.rounds as u64 {
        let mut round = json!({ "round": r });
        for (kind, path) in [("broadcast", "/v1/broadcast"), ("list", "/v1/push")] {
            let id = (3 << 40) + r * 2 + u64::from(kind == "list");
            receipts.reset(id);
            let body = if kind == "list" {
                json!({ "user_ids": users, "msg": msg(id, &content) })
            } else {
                json!({ "msg": msg(id, &content) })
            };
            let sent_us = crate::client::now_us() as u64;
            let (status, answer) = admin.post(path, &body).await?;
            if status != 200 {
                bail!("{path} answered {status}: {answer}");
            }
            let received = drain(&receipts, up, Duration::from_secs(5)).await;
            let last = receipts.last_receipt_us.load(Ordering::SeqCst);
            round[kind] = json!({
                "received": received,
                "lost": up.saturating_sub(received),
                "all_ms": last.saturating_sub(sent_us) as f64 / 1000.0,
                "latency": receipts.merged().summary(),
            });
        }
        rounds.push(round);
    }
    storm::release(kept.0, kept.1).await;
    let median = |kind: &str| {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[kind]["all_ms"].as_f64().unwrap_or(0.0)).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let lost: u64 = rounds
        .iter()
        .map(|r| r["broadcast"]["lost"].as_u64().unwrap_or(0) + r["list"]["lost"].as_u64().unwrap_or(0))
        .sum();
    Ok(json!({
        "connections": opened,
        "fanout_all_ms": median("broadcast"),
        "fanout_list_ms": median("list"),
        "lost": lost,
        "rounds": rounds,
    }))
}

pub fn print_push(r: &Value) {
    println!("connections: {}", r["connections"]);
    for phase in ["saturation", "open_loop", "fixed_rate"] {
        let p = &r[phase];
        if p.is_null() {
            continue;
        }
        println!(
            "{phase}: {:.0} pushes/s delivered, sent {} received {} lost {} ({} request errors), gateway CPU {} us/push",
            p["rate_per_s"].as_f64().unwrap_or(0.0),
            p["sent"],
            p["received"],
            p["lost"],
            p["request_errors"],
            p["gateway_cpu_us_per_push"].as_f64().map_or("?".into(), |v| format!("{v:.2}"))
        );
        if let Some(d) = p["gateway_rss_drift_pct"].as_f64() {
            let s = p["gateway_rss_samples"].as_array().map_or(0, Vec::len);
            println!("  gateway RSS: {d:.2} % spread over {s} samples after warm-up");
        }
        println!(
            "  {:<8} {:>8} {:>8} {:>8} {:>8}  (ms, server_ts_us -> receipt)",
            "shard", "p50", "p99", "p999", "max"
        );
        println!("  {:<8} {}", "all", Hist::cell(&p["latency"]));
        for s in p["per_shard"].as_array().into_iter().flatten() {
            println!("  {:<8} {}", s["shard"], Hist::cell(s));
        }
    }
}

pub fn print_fanout(r: &Value) {
    println!("connections: {}", r["connections"]);
    println!(
        "broadcast: last receipt after {:.2} ms (median of rounds); push to the list of all users: {:.2} ms; lost {}",
        r["fanout_all_ms"].as_f64().unwrap_or(0.0),
        r["fanout_list_ms"].as_f64().unwrap_or(0.0),
        r["lost"]
    );
}
