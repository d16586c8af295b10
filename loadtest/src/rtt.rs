//! Round trips with one message in flight per connection: the driver behind the echo
//! floor (`floor`, a raw TCP echo server) and `heartbeat` (HEARTBEAT through the
//! gateway).
//!
//! Both use this one client (a plain tokio socket that writes a fixed request and reads
//! the whole reply, then the next), so the servers are compared on equal terms: each
//! server's CPU (user and kernel, from /proc of its pid) over a window after a warm-up,
//! divided by the round trips completed in that window. The client's own CPU per round
//! trip is reported too: on this box client and server share two cores, so the rate is
//! bounded by both, while CPU per round trip is the server's own figure.

use crate::hist::Hist;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a reply is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The request comes back byte for byte (the echo floor: no framing).
    Echo,
    /// One WebSocket frame (server frames are unmasked).
    WsFrame,
}

impl Reply {
    /// The length of the reply starting at `buf[0]`, once enough of it is there to
    /// tell; `request` is what was sent.
    fn len(self, buf: &[u8], request: usize) -> Option<usize> {
        match self {
            Reply::Echo => Some(request),
            Reply::WsFrame => ws_frame_len(buf),
        }
    }
}

/// Total length of the (unmasked) WebSocket frame at the start of `buf`, once its
/// header is complete.
pub fn ws_frame_len(buf: &[u8]) -> Option<usize> {
    let b1 = *buf.get(1)?;
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    let (header, len) = match b1 & 0x7f {
        126 => (4, u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize),
        127 => (10, u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize),
        n => (2, n as usize),
    };
    Some(header + mask + len)
}

/// One phase: `connections` of the sockets, each with one request in flight.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub connections: usize,
    /// Round trips before the measured window (connections settle, caches warm).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
}

/// Checks a connection's first reply (the rest must equal it byte for byte).
pub type FirstReplyCheck = fn(&[u8]) -> bool;

/// What every connection task shares.
struct Shared {
    request: Vec<u8>,
    reply: Reply,
    check: FirstReplyCheck,
    done: AtomicU64,
    measuring: AtomicBool,
    stop: AtomicBool,
    errors: AtomicU64,
    unexpected: AtomicU64,
}

/// Reads one reply into `buf[..]`; returns its length. Bytes past it (none, with one
/// request in flight) would be kept at the front of `buf` for the next one.
async fn read_reply(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    have: &mut usize,
    reply: Reply,
    request: usize,
) -> Result<usize> {
    loop {
        if let Some(len) = reply.len(&buf[..*have], request) {
            if len > buf.len() {
                buf.resize(len, 0);
            }
            if *have >= len {
                return Ok(len);
            }
        }
        let n = s.read(&mut buf[*have..]).await?;
        if n == 0 {
            bail!("closed");
        }
        *have += n;
    }
}

/// One connection's loop; hands the socket back with its latencies.
async fn drive_one(mut s: TcpStream, shared: Arc<Shared>) -> (TcpStream, Hist) {
    let mut hist = Hist::new();
    let mut buf = vec![0u8; 256];
    let mut have = 0;
    let mut first: Option<Vec<u8>> = None;
    let timeout = Duration::from_secs(5);
    while !shared.stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let round = async {
            s.write_all(&shared.request).await?;
            read_reply(&mut s, &mut buf, &mut have, shared.reply, shared.request.len()).await
        };
        let len = match tokio::time::timeout(timeout, round).await {
            Ok(Ok(len)) => len,
            _ => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        let ok = match &first {
            Some(expected) => expected[..] == buf[..len],
            None => {
                let ok = (shared.check)(&buf[..len]);
                first = Some(buf[..len].to_vec());
                ok
            }
        };
        if !ok {
            shared.unexpected.fetch_add(1, Ordering::Relaxed);
        }
        buf.copy_within(len..have, 0);
        have -= len;
        if shared.measuring.load(Ordering::Relaxed) {
            hist.record(t0.elapsed().as_micros() as u64);
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    (s, hist)
}

/// CPU of the server and of this process at one instant.
struct Cpu {
    server: Option<(f64, f64)>,
    client: Option<(f64, f64)>,
    at: Instant,
    done: u64,
}

impl Cpu {
    fn take(server_pid: Option<u32>, done: &AtomicU64) -> Cpu {
        Cpu {
            server: server_pid.and_then(|p| crate::sys::cpu_user_sys_s(p).ok()),
            client: crate::sys::cpu_user_sys_s(std::process::id()).ok(),
            at: Instant::now(),
            done: done.load(Ordering::SeqCst),
        }
    }
}

/// Runs the phases one after another over the first `connections` of `socks` each, and
/// hands the sockets back. `check` judges each connection's first reply.
pub async fn run(
    mut socks: Vec<TcpStream>,
    request: Vec<u8>,
    reply: Reply,
    check: FirstReplyCheck,
    phases: &[Phase],
    server_pid: Option<u32>,
) -> Result<(Vec<TcpStream>, Vec<Value>)> {
    let mut reports = Vec::new();
    for phase in phases {
        let n = phase.connections.min(socks.len());
        if n == 0 {
            bail!("no connection to drive");
        }
        let shared = Arc::new(Shared {
            request: request.clone(),
            reply,
            check,
            done: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
        });
        let rest = socks.split_off(n);
        let tasks: Vec<_> = socks.drain(..).map(|s| tokio::spawn(drive_one(s, shared.clone()))).collect();
        tokio::time::sleep(phase.warmup).await;
        crate::sys::perf_ctl("enable");
        let before = Cpu::take(server_pid, &shared.done);
        shared.measuring.store(true, Ordering::SeqCst);
        tokio::time::sleep(phase.duration).await;
        let after = Cpu::take(server_pid, &shared.done);
        crate::sys::perf_ctl("disable");
        shared.stop.store(true, Ordering::SeqCst);
        let mut hist = Hist::new();
        for t in tasks {
            let (s, h) = t.await?;
            hist.add(&h);
            socks.push(s);
        }
        socks.extend(rest);
        reports.push(report(phase, &shared, &before, &after, &hist));
    }
    Ok((socks, reports))
}

/// Microseconds per round trip of a CPU difference (user, kernel, total).
fn per_rt(before: Option<(f64, f64)>, after: Option<(f64, f64)>, rts: u64) -> Value {
    match before.zip(after) {
        Some(((bu, bs), (au, as_))) if rts > 0 => {
            let k = 1e6 / rts as f64;
            json!({ "user": (au - bu) * k, "sys": (as_ - bs) * k, "total": (au - bu + as_ - bs) * k })
        }
        _ => Value::Null,
    }
}

fn report(phase: &Phase, shared: &Shared, before: &Cpu, after: &Cpu, hist: &Hist) -> Value {
    let rts = after.done - before.done;
    let elapsed = (after.at - before.at).as_secs_f64();
    let server = per_rt(before.server, after.server, rts);
    json!({
        "connections": phase.connections,
        "round_trips": rts,
        "round_trips_total": shared.done.load(Ordering::SeqCst),
        "window_s": elapsed,
        "rate_per_s": rts as f64 / elapsed.max(1e-9),
        "server_cpu_us_per_rt": server["total"],
        "server_us_per_rt": server,
        "client_us_per_rt": per_rt(before.client, after.client, rts),
        "latency": hist.summary(),
        "request_bytes": shared.request.len(),
        "errors": shared.errors.load(Ordering::SeqCst),
        "unexpected_replies": shared.unexpected.load(Ordering::SeqCst),
    })
}

/// One table line per phase.
pub fn print(what: &str, phases: &Value) {
    for p in phases.as_array().into_iter().flatten() {
        let us = |k: &str| p["server_us_per_rt"][k].as_f64().map_or("?".into(), |v| format!("{v:.2}"));
        println!(
            "{what}, {} connections: {:.0} round trips/s; server CPU {} us per round trip ({} user + {} kernel); client {} us; p50/p99 {:.3}/{:.3} ms; errors {} unexpected {}",
            p["connections"],
            p["rate_per_s"].as_f64().unwrap_or(0.0),
            us("total"),
            us("user"),
            us("sys"),
            p["client_us_per_rt"]["total"].as_f64().map_or("?".into(), |v| format!("{v:.2}")),
            p["latency"]["p50_us"].as_f64().unwrap_or(0.0) / 1000.0,
            p["latency"]["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
            p["errors"],
            p["unexpected_replies"],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_frame_lengths_follow_the_header() {
        assert_eq!(ws_frame_len(&[0x82]), None);
        assert_eq!(ws_frame_len(&[0x82, 9]), Some(11));
        assert_eq!(ws_frame_len(&[0x82, 126, 1]), None);
        assert_eq!(ws_frame_len(&[0x82, 126, 1, 44]), Some(4 + 300));
        assert_eq!(ws_frame_len(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]), Some(10 + 65536));
        // A masked (client) frame carries 4 mask bytes after the header.
        assert_eq!(ws_frame_len(&[0x82, 0x80 | 9]), Some(15));
    }

    /// The driver against a real echo socket: every round trip counted, replies
    /// checked, sockets handed back.
    #[tokio::test]
    async fn drives_round_trips_and_hands_the_sockets_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let mut socks = Vec::new();
        for _ in 0..3 {
            socks.push(TcpStream::connect(addr).await.unwrap());
        }
        let phases = [
            Phase { connections: 2, warmup: Duration::from_millis(20), duration: Duration::from_millis(100) },
            Phase { connections: 3, warmup: Duration::from_millis(20), duration: Duration::from_millis(100) },
        ];
        let (socks, reports) =
            run(socks, b"ping".to_vec(), Reply::Echo, |r| r == b"ping", &phases, Some(std::process::id()))
                .await
                .unwrap();
        assert_eq!(socks.len(), 3);
        for (r, p) in reports.iter().zip(&phases) {
            assert_eq!(r["connections"], p.connections);
            assert!(r["round_trips"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["errors"], 0);
            assert_eq!(r["unexpected_replies"], 0);
        }
    }
}
