//! A tiny client for demos (`scripts/cluster-demo.sh`), on the Rust client
//! (`clients/rust`): logs in as a user, prints what happens (login, PUSH, KICK, close,
//! reconnects after a drain) and exits once the connection is closed for good.
//!
//! `cargo run --example watch -- ADDR USER [PLATFORM] [LABEL]`; the token is minted with
//! the key of `config/gateway.toml` (or the built-in development default).

use im_gateway::config::{Config, Overrides};
use im_gateway_client::{Client, Config as ClientConfig, Event};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(user)) = (args.first(), args.get(1).and_then(|u| u.parse::<i64>().ok())) else {
        eprintln!("usage: watch ADDR USER [PLATFORM] [LABEL]");
        std::process::exit(2);
    };
    let platform = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(1);
    let label = args.get(3).cloned().unwrap_or_else(|| format!("user {user}"));
    let config = Config::load(None, std::env::vars(), &Overrides::default())?;
    let token = im_gateway::auth::Minter::from_config(&config.auth)?.mint(user, Some(platform), 3600);
    let mut client = ClientConfig::new(format!("ws://{addr}/ws"), token);
    client.platform = platform;
    let (_client, mut events) = Client::connect(client);
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected(r) => {
                println!("[{label}] logged in on {} shard {} (session {})", r.gateway_id, r.shard, r.session_id)
            }
            Event::Push(m) => {
                println!("[{label}] PUSH msg_id={} from={} content={:?}", m.msg_id, m.sender_id, m.content)
            }
            Event::Kick { reason } => println!("[{label}] KICK reason={reason:?}"),
            Event::Disconnected(d) => {
                println!("[{label}] closed {} {}", d.code, d.reason);
                if !d.will_reconnect {
                    break;
                }
            }
            Event::Reconnecting { delay, cause, .. } => println!("[{label}] reconnecting in {delay:?} ({cause:?})"),
            Event::Error(e) => println!("[{label}] error: {e}"),
            Event::Connecting { .. } | Event::Heartbeat { .. } => {}
        }
    }
    Ok(())
}
