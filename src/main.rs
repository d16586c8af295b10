//! The `im-gateway` binary: parse flags, load config, start the gateway, drain on
//! SIGTERM/SIGINT; or mint a token (`im-gateway token`).

use clap::{Parser, Subcommand};
use im_gateway::config::{Config, LogFormat, Overrides};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "im-gateway", version, about = "Thread-per-core WebSocket gateway for instant messaging")]
struct Cli {
    /// Config file (TOML). Default: config/gateway.toml when present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Client WebSocket listener (server.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin HTTP listener (server.admin_listen).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Number of shards, 0 = all cores (server.shards).
    #[arg(long)]
    shards: Option<usize>,
    /// Node id (server.gateway_id).
    #[arg(long)]
    gateway_id: Option<String>,
    /// Redis URL: turns on cluster mode (cluster.redis_url).
    #[arg(long)]
    redis: Option<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print a JWT for a user, signed with the configured key.
    Token {
        /// User id (the `sub` claim).
        #[arg(long)]
        user: i64,
        /// Platform claim.
        #[arg(long)]
        platform: Option<i32>,
        /// Validity, seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen,
        admin_listen: cli.admin,
        shards: cli.shards,
        gateway_id: cli.gateway_id.clone(),
        redis_url: cli.redis.clone(),
    };
    let config = match Config::load(cli.config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("im-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Cmd::Token { user, platform, ttl }) = cli.command {
        if user <= 0 {
            eprintln!("im-gateway: --user must be a positive user id");
            return ExitCode::from(2);
        }
        return match im_gateway::auth::Minter::from_config(&config.auth) {
            Ok(m) => {
                println!("{}", m.mint(user, platform, ttl));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("im-gateway: {e}");
                ExitCode::from(2)
            }
        };
    }
    init_logs(&config);
    // `validate` refused every unsafe exposure that was not opted into; what was opted
    // into is said at every start. A default (loopback) start says nothing here.
    for (key, what) in config.opt_outs() {
        tracing::warn!(key, "{key} = true: {what}");
    }
    let deadline = std::time::Duration::from_millis(config.server.shutdown_timeout_ms) + im_gateway::server::EXIT_GRACE;
    // Catch SIGTERM/SIGINT before anything runs: one that arrives during start-up is
    // then a drain, not the default action's abrupt exit.
    let signals = match im_gateway::server::Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("im-gateway: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let gateway = match im_gateway::Gateway::start(config) {
        Ok(g) => g,
        Err(e) => {
            // One line, once: not also through the logger, which writes to stderr too.
            eprintln!("im-gateway: {e}");
            return ExitCode::from(1);
        }
    };
    let sig = signals.wait();
    tracing::info!(signal = sig, "shutting down");
    gateway.shutdown();
    // Bound the whole drain: a stuck shard must not keep the process alive.
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!("im-gateway: shutdown deadline passed; exiting");
        std::process::exit(1);
    });
    gateway.wait();
    ExitCode::SUCCESS
}
