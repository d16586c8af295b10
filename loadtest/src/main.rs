//! `loadtest`: the connection-storm load tester for im-gateway.
//!
//! Speaks the gateway's real protocol (WebSocket + protobuf packets, tokens minted with
//! the configured key; there is no auth shortcut). Subcommands:
//! - `hold`: open N authenticated connections at a target rate over many 127.0.0.x
//!   source addresses, keep them idle with heartbeats for a duration, and sample the
//!   gateway's RSS from /proc before and after: the per-connection memory figure.
//! - `storm`, `push`, `fanout`, `reconnect-storm`, `floor`: the benchmark suite, tracked
//!   by the load-test issue; they exit with an error saying so until they land.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use im_gateway::proto::{Command, Header, Packet};
use prost::Message as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
#[command(name = "loadtest", about = "Connection-storm load tester for im-gateway")]
struct Cli {
    /// Gateway config (for the JWT key). Default: config/gateway.toml when present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Gateway WebSocket address.
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    target: SocketAddr,
    /// Print a JSON report instead of the table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Hold N idle authenticated connections and measure the gateway's RSS.
    Hold {
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: u32,
        /// Connection attempts per second.
        #[arg(long, default_value_t = 2_000)]
        rate: u32,
        /// How long to hold them once all are up, seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Heartbeat interval, seconds.
        #[arg(long, default_value_t = 30)]
        heartbeat: u64,
        /// Gateway process id, for RSS samples from /proc/PID/status.
        #[arg(long)]
        gateway_pid: Option<u32>,
        /// Source addresses 127.0.0.2 .. 127.0.0.(1+N) are used round robin.
        #[arg(long, default_value_t = 8)]
        source_ips: u8,
        /// First user id; connection i authenticates as user first_user + i.
        #[arg(long, default_value_t = 1_000_000)]
        first_user: i64,
    },
    /// Open N connections at a target rate and report handshake latency (load-test issue).
    Storm,
    /// Open-loop push rate and latency per shard (load-test issue).
    Push,
    /// Broadcast to all N, time to last receipt (load-test issue).
    Fanout,
    /// Drop all N and bring them back honouring retry_after_ms (load-test issue).
    ReconnectStorm,
    /// The machine's own TCP accept and push floors (load-test issue).
    Floor,
}

fn packet(command: Command, seq: i64) -> Vec<u8> {
    Packet {
        header: Some(Header { command: command as i32, version: 1, client_id: String::new(), seq }),
        body: Default::default(),
    }
    .encode_to_vec()
}

/// Resident set size of `pid`, bytes.
fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read /proc/PID/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("VmRSS not found")?;
    Ok(kb * 1024)
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: the load tester must fit tens of thousands of connections too.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 << 10)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

struct HoldStats {
    up: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    heartbeats: AtomicU64,
}

async fn hold_one(
    target: SocketAddr,
    source: IpAddr,
    token: String,
    heartbeat: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    stats: Arc<HoldStats>,
) {
    let connect = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(target).await?;
        let url = format!("ws://{target}/ws?token={token}");
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
            .await
            .map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(ws)
    };
    let mut ws = match connect.await {
        Ok(ws) => ws,
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    // First frame is the AUTH result.
    match ws.next().await {
        Some(Ok(Message::Binary(_))) => {}
        _ => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    stats.up.fetch_add(1, Ordering::Relaxed);
    let mut seq = 1;
    // Spread heartbeats so they do not all fire at once.
    let mut next = tokio::time::Instant::now() + heartbeat.mul_f64(fastrand::f64());
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(next) => {
                if ws.send(Message::binary(packet(Command::Heartbeat, seq))).await.is_err() {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                seq += 1;
                next += heartbeat;
            }
            m = ws.next() => match m {
                Some(Ok(Message::Binary(_))) => { stats.heartbeats.fetch_add(1, Ordering::Relaxed); }
                Some(Ok(_)) => {}
                _ => { stats.dropped.fetch_add(1, Ordering::Relaxed); return; }
            },
        }
    }
    let _ = ws.close(None).await;
}

#[allow(clippy::too_many_arguments)]
async fn hold(
    cli: &Cli,
    connections: u32,
    rate: u32,
    duration: u64,
    heartbeat: u64,
    gateway_pid: Option<u32>,
    source_ips: u8,
    first_user: i64,
) -> Result<()> {
    let config = im_gateway::Config::load(cli.config.as_deref(), std::env::vars(), &Default::default())?;
    let minter = im_gateway::auth::Minter::from_config(&config.auth)?;
    let rss_before = gateway_pid.map(rss_bytes).transpose()?;
    let stats = Arc::new(HoldStats {
        up: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        heartbeats: AtomicU64::new(0),
    });
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tasks = Vec::with_capacity(connections as usize);
    let mut tick = tokio::time::interval(gap);
    for i in 0..connections {
        tick.tick().await;
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % u32::from(source_ips.max(1))) as u8));
        let token = minter.mint(first_user + i64::from(i), Some(1), 3600 + duration);
        tasks.push(tokio::spawn(hold_one(
            cli.target,
            source,
            token,
            Duration::from_secs(heartbeat.max(1)),
            stop.clone(),
            stats.clone(),
        )));
    }
    // Wait until every attempt has either come up or failed.
    while stats.up.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed) < u64::from(connections) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp = started.elapsed();
    let rss_up = gateway_pid.map(rss_bytes).transpose()?;
    tokio::time::sleep(Duration::from_secs(duration)).await;
    let rss_after = gateway_pid.map(rss_bytes).transpose()?;
    let up = stats.up.load(Ordering::Relaxed);
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if up > 0 => Some((a.saturating_sub(b)) as f64 / up as f64),
        _ => None,
    };
    // Print before tearing down: the figure is what matters.
    let report = serde_json::json!({
        "connections": connections,
        "up": up,
        "failed": stats.failed.load(Ordering::Relaxed),
        "dropped": stats.dropped.load(Ordering::Relaxed),
        "heartbeat_replies": stats.heartbeats.load(Ordering::Relaxed),
        "ramp_s": ramp.as_secs_f64(),
        "gateway_rss_before_bytes": rss_before,
        "gateway_rss_all_up_bytes": rss_up,
        "gateway_rss_after_hold_bytes": rss_after,
        "idle_rss_per_conn_bytes": per_conn,
        "hold_s": duration,
    });
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if cli.json {
        println!("{report}");
    } else {
        println!(
            "hold: {up}/{connections} up ({} failed, {} dropped) in {:.1}s",
            report["failed"],
            report["dropped"],
            ramp.as_secs_f64()
        );
        if let (Some(b), Some(a)) = (rss_before, rss_after) {
            println!(
                "gateway RSS: {:.1} MiB before, {:.1} MiB after {duration}s hold",
                b as f64 / 1048576.0,
                a as f64 / 1048576.0
            );
        }
        if let Some(p) = per_conn {
            println!("idle RSS per connection: {p:.0} bytes");
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.cmd {
        Cmd::Hold { connections, rate, duration, heartbeat, gateway_pid, source_ips, first_user } => {
            rt.block_on(hold(&cli, connections, rate, duration, heartbeat, gateway_pid, source_ips, first_user))
        }
        Cmd::Storm | Cmd::Push | Cmd::Fanout | Cmd::ReconnectStorm | Cmd::Floor => {
            bail!("this subcommand is not built yet (tracked by the load-test issue); `hold` is available")
        }
    }
}
