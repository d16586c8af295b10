//! `reconnect-storm`: N connected clients lose the gateway at once (it drains on SIGTERM,
//! or dies on SIGKILL) and come back by the Rust client's reconnect policy
//! (`im_gateway_client::Backoff`, the same as the JavaScript client's): after the
//! `retry_after_ms` of the 1001 close, or the Retry-After of a 503 plus up to a second,
//! else with full-jitter exponential back-off. Reports the time until all are back and
//! the failures on the way.

use crate::client::{self, Failure};
use crate::storm::{self, Plan};
use crate::Common;
use anyhow::{bail, Context, Result};
use im_gateway_client::backoff::{retry_after_ms, Backoff, BackoffConfig, Ending, Next};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ReconnectArgs {
    /// `term` (drain) or `kill`.
    pub signal: String,
    /// Shell command that starts the replacement gateway (in the background).
    pub restart: Option<String>,
    /// Give up on a client after this long.
    pub give_up: Duration,
}

struct Tally {
    back: AtomicU64,
    attempts: AtomicU64,
    hinted: AtomicU64,
    codes: Mutex<BTreeMap<u16, u64>>,
    failures: Mutex<BTreeMap<String, u64>>,
    last_back_us: AtomicU64,
}

pub async fn run(common: &Common, plan: &Plan, a: &ReconnectArgs) -> Result<Value> {
    let Some(pid) = common.gateway_pid else { bail!("reconnect-storm needs --gateway-pid") };
    if plan.connections > 19_000 {
        bail!("reconnect-storm runs in one process: at most 19,000 connections");
    }
    let minter = Arc::new(common.minter()?);
    let opened = storm::open_slice(common, plan, 0, plan.connections, plan.rate).await?;
    let up = opened.conns.len() as u64;
    let tally = Arc::new(Tally {
        back: AtomicU64::new(0),
        attempts: AtomicU64::new(0),
        hinted: AtomicU64::new(0),
        codes: Mutex::new(BTreeMap::new()),
        failures: Mutex::new(BTreeMap::new()),
        last_back_us: AtomicU64::new(0),
    });
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let t0 = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = Vec::new();
    for (i, (ws, shard)) in opened.conns.into_iter().enumerate() {
        let (tally, stop, minter, plan, t0) = (tally.clone(), stop.clone(), minter.clone(), plan.clone(), t0.clone());
        let give_up = a.give_up;
        tasks.push(tokio::spawn(async move {
            let ended = client::live(ws, shard, plan.heartbeat, None, stop.clone()).await;
            if ended.by_us {
                return;
            }
            *tally.codes.lock().unwrap().entry(ended.code).or_default() += 1;
            let mut policy = Backoff::new(BackoffConfig::default());
            if retry_after_ms(&ended.reason).is_some() {
                tally.hinted.fetch_add(1, Ordering::Relaxed);
            }
            let mut ending = Ending::Closed { code: ended.code, reason: ended.reason };
            let user = plan.first_user + i as i64;
            let target = plan.targets[i % plan.targets.len()];
            let deadline = Instant::now() + give_up;
            loop {
                // The connection before the storm was long-lived: the policy starts afresh.
                let lived = if matches!(ending, Ending::Closed { .. }) { give_up } else { Duration::ZERO };
                let Next::After { delay, .. } = policy.decide(&ending, lived, false) else { return };
                tokio::time::sleep(delay).await;
                if Instant::now() > deadline {
                    return;
                }
                tally.attempts.fetch_add(1, Ordering::Relaxed);
                let token = minter.mint(user, plan.platform, 3600);
                match client::open(target, client::source(i as u64, plan.source_ips), &token, plan.timeout).await {
                    Ok((ws, shard, _)) => {
                        tally.back.fetch_add(1, Ordering::Relaxed);
                        let since = t0.get().map_or(0, |t| t.elapsed().as_micros() as u64);
                        tally.last_back_us.fetch_max(since, Ordering::Relaxed);
                        client::live(ws, shard, plan.heartbeat, None, stop).await;
                        return;
                    }
                    Err(r) => {
                        *tally.failures.lock().unwrap().entry(r.failure.key()).or_default() += 1;
                        ending = match r.failure {
                            Failure::Status(status) => {
                                Ending::Refused { status, retry_after: r.retry_after_ms.map(Duration::from_millis) }
                            }
                            _ => Ending::Failed,
                        };
                    }
                }
            }
        }));
    }
    let sig = match a.signal.as_str() {
        "term" => libc::SIGTERM,
        "kill" => libc::SIGKILL,
        other => bail!("--signal must be term or kill, not {other}"),
    };
    let _ = t0.set(Instant::now());
    // SAFETY: kill(2) with a pid and a signal number has no memory preconditions.
    if unsafe { libc::kill(pid as i32, sig) } != 0 {
        bail!("kill {pid}: {}", std::io::Error::last_os_error());
    }
    if let Some(cmd) = &a.restart {
        tokio::process::Command::new("sh").arg("-c").arg(cmd).spawn().context("start the restart command")?;
    }
    let started = Instant::now();
    while tally.back.load(Ordering::SeqCst) < up && started.elapsed() < a.give_up + Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = tally.back.load(Ordering::SeqCst);
    let all_back_s = tally.last_back_us.load(Ordering::SeqCst) as f64 / 1e6;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let codes = tally.codes.lock().unwrap().clone();
    let failures = tally.failures.lock().unwrap().clone();
    Ok(json!({
        "connections": up,
        "signal": a.signal,
        "back": back,
        "not_back": up - back,
        "all_back_s": all_back_s,
        "close_codes": codes,
        "with_retry_hint": tally.hinted.load(Ordering::SeqCst),
        "reconnect_attempts": tally.attempts.load(Ordering::SeqCst),
        "failures": failures,
    }))
}

pub fn print(r: &Value) {
    println!(
        "reconnect-storm ({}): {}/{} back, the last after {:.2}s; {} attempts, failures {}; close codes {} ({} with retry_after_ms)",
        r["signal"],
        r["back"],
        r["connections"],
        r["all_back_s"].as_f64().unwrap_or(0.0),
        r["reconnect_attempts"],
        r["failures"],
        r["close_codes"],
        r["with_retry_hint"]
    );
}
