//! `loadtest`: the connection-storm load tester for im-gateway.
//!
//! Speaks the gateway's real protocol (WebSocket + protobuf packets, tokens minted with
//! the configured key; there is no auth shortcut). Subcommands, each printing a table,
//! or with `--json` one JSON report:
//! - `storm`: open N authenticated connections at a target rate; achieved rate,
//!   connect / upgrade / AUTH latency, failures by cause.
//! - `hold`: the same, then keep them idle with heartbeats while the gateway's RSS and
//!   CPU are sampled: the per-connection memory figure.
//! - `push`: pushes through the admin API, saturated and then open-loop at a fixed
//!   rate; latency from `server_ts_us` to receipt per shard; sent, received, lost.
//! - `fanout`: one broadcast and one push to the list of all users; time to the last
//!   receipt.
//! - `reconnect-storm`: drop everyone at once (SIGTERM drain or SIGKILL) and bring them
//!   back honouring `retry_after_ms`.
//! - `heartbeat`: HEARTBEAT round trips, one in flight per connection; the gateway's
//!   CPU per round trip.
//! - `echo`: the same round trips against any raw TCP echo server at `--target`
//!   (spikes, other servers), its CPU from `--gateway-pid`.
//! - `floor`: the machine's own floors, with no gateway: TCP accept, push, fan-out, and
//!   a raw epoll echo server's CPU per round trip (the same client as `heartbeat`).
//! - `report`: folds a `scripts/bench.sh` run into `report.json`.
//!
//! `storm` and `hold` spread over `--procs` client processes (one process holds at most
//! ~19,900 sockets here); `--target` takes several gateways (cluster mode).

mod client;
mod floor;
mod heartbeat;
mod hist;
mod push;
mod reconnect;
mod report;
mod rtt;
mod storm;
mod sys;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "loadtest", about = "Connection-storm load tester for im-gateway")]
struct Cli {
    /// Gateway config (for the JWT key). Default: config/gateway.toml when present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Gateway WebSocket address(es), comma-separated; connections go round robin.
    #[arg(long, global = true, value_delimiter = ',', default_value = "127.0.0.1:8080")]
    target: Vec<SocketAddr>,
    /// Gateway admin API address.
    #[arg(long, global = true, default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// Admin bearer token, when the gateway has one.
    #[arg(long, global = true, env = "IMGW_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Gateway process id: RSS and CPU are sampled from /proc/PID.
    #[arg(long, global = true)]
    gateway_pid: Option<u32>,
    /// Print a JSON report instead of the table.
    #[arg(long, global = true)]
    json: bool,
    /// `perf stat|record --control` fifos (`CTL[,ACK]`, repeat for several perf
    /// processes): the measured windows of `storm`, `heartbeat`, `echo` and the echo
    /// floor are bracketed with `enable` / `disable` (start perf with `--delay=-1`), so
    /// perf counts exactly what a report divides by.
    #[arg(long, global = true)]
    perf_ctl: Vec<String>,
    /// Internal: run slice K of P of a spread run (`K/P`).
    #[arg(long, global = true, hide = true)]
    worker: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// How connections are opened (every subcommand that connects).
#[derive(Args, Debug, Clone)]
struct ConnArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: u64,
    /// Connection attempts per second (0: as fast as --concurrency allows).
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// Attempts in flight at most (per process).
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Give up on one attempt after this long, ms.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Source addresses 127.0.0.2 ..= 127.0.0.(1+N), round robin.
    #[arg(long, default_value_t = 16)]
    source_ips: u8,
    /// Connection i authenticates as user first_user + i.
    #[arg(long, default_value_t = 1_000_000)]
    first_user: i64,
    /// Platform claim in the tokens.
    #[arg(long, default_value_t = 1)]
    platform: i32,
    /// Heartbeat interval while connected, seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat: u64,
}

/// Round-trip phases (`heartbeat`, `echo`): one request in flight per connection.
#[derive(Args, Debug, Clone)]
struct RtArgs {
    /// Connections driven in each phase, one phase per entry (default: all).
    #[arg(long, value_delimiter = ',')]
    steps: Vec<usize>,
    /// Seconds measured per phase.
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Seconds of round trips before each phase's measured window.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
}

impl RtArgs {
    /// The phases, over all `connections` when no steps were given.
    fn phases(&self, connections: u64) -> Vec<rtt::Phase> {
        let all = [connections as usize];
        let steps = if self.steps.is_empty() { &all[..] } else { &self.steps[..] };
        rt_phases(steps, self.warmup, self.duration)
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Open N connections at a target rate; handshake rate, latency, failures.
    Storm {
        #[command(flatten)]
        conn: ConnArgs,
        /// Client processes (default: one per 18,000 connections).
        #[arg(long)]
        procs: Option<usize>,
    },
    /// Hold N idle authenticated connections and measure the gateway's RSS and CPU.
    Hold {
        #[command(flatten)]
        conn: ConnArgs,
        /// Client processes (default: one per 18,000 connections).
        #[arg(long)]
        procs: Option<usize>,
        /// Seconds to hold once all are up.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Push rate (saturated) and latency per shard at a fixed open-loop rate.
    Push {
        #[command(flatten)]
        conn: ConnArgs,
        /// Users per push request (the frame is encoded once for all of them).
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Seconds per phase.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Open-loop deliveries per second (default: half the saturated rate).
        #[arg(long, default_value_t = 0.0)]
        push_rate: f64,
        /// Skip the saturation phase (then --push-rate is needed).
        #[arg(long)]
        no_saturate: bool,
        /// A third phase, open loop at this many deliveries per second (0: none).
        #[arg(long, default_value_t = 0.0)]
        fixed_rate: f64,
        /// Push requests in flight during saturation.
        #[arg(long, default_value_t = 8)]
        requests: usize,
        /// Deliveries sent but not yet received, at most, during saturation.
        #[arg(long, default_value_t = 50_000)]
        window: u64,
        /// Bytes of content per push.
        #[arg(long, default_value_t = 64)]
        content_bytes: usize,
    },
    /// Broadcast (and push to the list of all users); time to the last receipt.
    Fanout {
        #[command(flatten)]
        conn: ConnArgs,
        /// Rounds (the report gives the median).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Bytes of content per push.
        #[arg(long, default_value_t = 64)]
        content_bytes: usize,
    },
    /// HEARTBEAT round trips, one in flight per connection: the gateway's CPU per round
    /// trip (against the echo floor of `floor`).
    Heartbeat {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        rt: RtArgs,
    },
    /// Round trips against any raw TCP echo server at --target (the echo floor's client;
    /// the server's CPU from --gateway-pid): spikes and other servers.
    Echo {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        rt: RtArgs,
    },
    /// Drop all N at once and bring them back honouring retry_after_ms.
    ReconnectStorm {
        #[command(flatten)]
        conn: ConnArgs,
        /// `term` (the gateway drains) or `kill`.
        #[arg(long, default_value = "term")]
        signal: String,
        /// Shell command starting the replacement gateway (run in the background).
        #[arg(long)]
        restart: Option<String>,
        /// Give up on a client after this many seconds.
        #[arg(long, default_value_t = 60)]
        give_up_s: u64,
    },
    /// The machine's own floors (no gateway): TCP accept, push, fan-out, echo.
    Floor {
        #[command(flatten)]
        conn: ConnArgs,
        /// Server threads (as many as the gateway has shards).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Bytes of push content (the payload is a push frame of that content).
        #[arg(long, default_value_t = 64)]
        content_bytes: usize,
        /// Payloads to each socket in the push floor.
        #[arg(long, default_value_t = 20)]
        push_rounds: usize,
        /// Rounds of the fan-out floor (the report gives the median).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Echo floor: connections driven in each phase (one message in flight each);
        /// 0: no echo floor.
        #[arg(long, value_delimiter = ',', default_value = "100,1000")]
        echo_connections: Vec<usize>,
        /// Echo floor: seconds measured per phase.
        #[arg(long, default_value_t = 4.0)]
        echo_s: f64,
        /// Only the echo floor.
        #[arg(long)]
        echo_only: bool,
    },
    /// Fold the reports of a `scripts/bench.sh` run (DIR/{floor,hold,storm,push,fanout}.json)
    /// into DIR/report.json and print the figures against the targets.
    Report {
        /// The run's directory.
        #[arg(long, default_value = "target/bench")]
        dir: PathBuf,
        /// The run's parameters (JSON object), copied into the report.
        #[arg(long, default_value = "{}")]
        params: String,
    },
    /// Internal: the plain TCP server of `floor`.
    #[command(hide = true)]
    FloorServer {
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 65_535)]
        backlog: i32,
    },
    /// Internal: the epoll echo server of `floor`.
    #[command(hide = true)]
    FloorEchoServer {
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 65_535)]
        backlog: i32,
    },
}

/// What every subcommand shares.
pub struct Common {
    pub config: Option<PathBuf>,
    pub admin: SocketAddr,
    pub admin_token: Option<String>,
    pub gateway_pid: Option<u32>,
}

impl Common {
    /// A token minter with the gateway's configured key.
    pub fn minter(&self) -> Result<im_gateway::auth::Minter> {
        let config = im_gateway::Config::load(self.config.as_deref(), std::env::vars(), &Default::default())?;
        Ok(im_gateway::auth::Minter::from_config(&config.auth)?)
    }
}

fn plan(targets: &[SocketAddr], c: &ConnArgs) -> storm::Plan {
    storm::Plan {
        targets: targets.to_vec(),
        connections: c.connections,
        rate: c.rate,
        concurrency: c.concurrency,
        timeout: Duration::from_millis(c.timeout_ms),
        source_ips: c.source_ips,
        first_user: c.first_user,
        platform: Some(c.platform),
        heartbeat: Duration::from_secs(c.heartbeat.max(1)),
    }
}

/// Round-trip phases: one per entry of `connections`.
fn rt_phases(connections: &[usize], warmup: f64, duration: f64) -> Vec<rtt::Phase> {
    connections
        .iter()
        .filter(|n| **n > 0)
        .map(|n| rtt::Phase {
            connections: *n,
            warmup: Duration::from_secs_f64(warmup.max(0.0)),
            duration: Duration::from_secs_f64(duration.max(0.1)),
        })
        .collect()
}

fn procs(explicit: Option<usize>, connections: u64) -> usize {
    explicit.unwrap_or_else(|| connections.div_ceil(18_000) as usize).max(1)
}

fn parse_worker(w: &str) -> Result<(usize, usize)> {
    let (k, p) = w.split_once('/').context("--worker K/P")?;
    Ok((k.parse()?, p.parse()?))
}

fn emit(json: bool, report: &serde_json::Value, table: impl FnOnce(&serde_json::Value)) {
    if json {
        println!("{report}");
    } else {
        table(report);
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    sys::set_perf_ctl(&cli.perf_ctl);
    if let Cmd::FloorServer { threads, backlog } = cli.cmd {
        return floor::server(threads, backlog);
    }
    if let Cmd::FloorEchoServer { threads, backlog } = cli.cmd {
        return floor::echo_server(threads, backlog);
    }
    if let Cmd::Report { dir, params } = &cli.cmd {
        let params: serde_json::Value = serde_json::from_str(params).context("--params is not JSON")?;
        let report = report::build(dir, params)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
        emit(cli.json, &report, report::print);
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let common = Common {
        config: cli.config.clone(),
        admin: cli.admin,
        admin_token: cli.admin_token.clone(),
        gateway_pid: cli.gateway_pid,
    };
    rt.block_on(async {
        match &cli.cmd {
            Cmd::Storm { conn, procs: p } | Cmd::Hold { conn, procs: p, .. } => {
                let plan = plan(&cli.target, conn);
                if let Some(w) = &cli.worker {
                    let (k, p) = parse_worker(w)?;
                    return storm::worker(&common, &plan, k, p).await;
                }
                let hold = match &cli.cmd {
                    Cmd::Hold { duration, .. } => Duration::from_secs_f64(*duration),
                    _ => Duration::ZERO,
                };
                let report = storm::coordinate(&common, &plan, procs(*p, conn.connections), hold).await?;
                emit(cli.json, &report, |r| storm::print(r, !hold.is_zero()));
            }
            Cmd::Push {
                conn,
                batch,
                duration,
                push_rate,
                no_saturate,
                fixed_rate,
                requests,
                window,
                content_bytes,
            } => {
                let args = push::PushArgs {
                    batch: (*batch).max(1),
                    duration: *duration,
                    rate: *push_rate,
                    no_saturate: *no_saturate,
                    fixed_rate: *fixed_rate,
                    concurrency: *requests,
                    window: *window,
                    content_bytes: *content_bytes,
                };
                let report = push::push(&common, &plan(&cli.target, conn), &args).await?;
                emit(cli.json, &report, push::print_push);
            }
            Cmd::Fanout { conn, rounds, content_bytes } => {
                let args = push::FanoutArgs { rounds: (*rounds).max(1), content_bytes: *content_bytes };
                let report = push::fanout(&common, &plan(&cli.target, conn), &args).await?;
                emit(cli.json, &report, push::print_fanout);
            }
            Cmd::ReconnectStorm { conn, signal, restart, give_up_s } => {
                let args = reconnect::ReconnectArgs {
                    signal: signal.clone(),
                    restart: restart.clone(),
                    give_up: Duration::from_secs(*give_up_s),
                };
                let report = reconnect::run(&common, &plan(&cli.target, conn), &args).await?;
                emit(cli.json, &report, reconnect::print);
            }
            Cmd::Heartbeat { conn, rt } => {
                let report = heartbeat::run(&common, &plan(&cli.target, conn), &rt.phases(conn.connections)).await?;
                emit(cli.json, &report, heartbeat::print);
            }
            Cmd::Echo { conn, rt } => {
                let phases = rt.phases(conn.connections);
                let report = floor::echo_at(&plan(&cli.target, conn), cli.gateway_pid, &phases).await?;
                emit(cli.json, &report, |r| rtt::print("echo", &r["phases"]));
            }
            Cmd::Floor { conn, threads, content_bytes, push_rounds, rounds, echo_connections, echo_s, echo_only } => {
                let args = floor::FloorArgs {
                    threads: *threads,
                    content_bytes: *content_bytes,
                    push_rounds: (*push_rounds).max(1),
                    rounds: (*rounds).max(1),
                    echo: rt_phases(echo_connections, 0.5, *echo_s),
                    echo_only: *echo_only,
                };
                let report = floor::run(&plan(&cli.target, conn), &args).await?;
                emit(cli.json, &report, floor::print);
            }
            Cmd::FloorServer { .. } | Cmd::FloorEchoServer { .. } | Cmd::Report { .. } => {
                unreachable!("handled above")
            }
        }
        Ok(())
    })
}
