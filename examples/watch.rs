//! A tiny client for demos (`scripts/cluster-demo.sh`): logs in as a user, prints every
//! packet it receives (AUTH result, PUSH, KICK) and the close code, and exits on close.
//!
//! `cargo run --example watch -- ADDR USER [PLATFORM] [LABEL]`; the token is minted with
//! the key of `config/gateway.toml` (or the built-in development default).

use futures_util::StreamExt;
use im_gateway::config::{Config, Overrides};
use im_gateway::proto::{AuthResult, Command, Kick, Packet, PushMsg};
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;

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
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await?;
    while let Some(m) = ws.next().await {
        match m? {
            Message::Binary(b) => {
                let p = Packet::decode(b)?;
                let command = p.header.as_ref().map_or(0, |h| h.command);
                match Command::try_from(command) {
                    Ok(Command::Auth) => {
                        let r = AuthResult::decode(p.body)?;
                        println!(
                            "[{label}] logged in on {} shard {} (session {})",
                            r.gateway_id, r.shard, r.session_id
                        );
                    }
                    Ok(Command::Push) => {
                        let m = PushMsg::decode(p.body)?;
                        println!("[{label}] PUSH msg_id={} from={} content={:?}", m.msg_id, m.sender_id, m.content);
                    }
                    Ok(Command::Kick) => println!("[{label}] KICK reason={:?}", Kick::decode(p.body)?.reason),
                    _ => println!("[{label}] packet command={command}"),
                }
            }
            Message::Close(f) => {
                let (code, reason) = f.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or_default();
                println!("[{label}] closed {code} {reason}");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
