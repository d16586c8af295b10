//! `heartbeat`: HEARTBEAT round trips through the gateway, one in flight per
//! connection, driven by the same client as the echo floor ([`crate::rtt`]): the
//! gateway's CPU per round trip (from /proc of `--gateway-pid`), to hold against the
//! raw epoll echo server's in the same run.
//!
//! The connections open and authenticate as in `storm` (token at the upgrade, AUTH
//! result awaited); then each WebSocket client hands over its socket and the round
//! trips are raw bytes: a masked HEARTBEAT frame out, one frame back.

use crate::rtt::{self, Phase};
use crate::storm::{self, Plan};
use crate::{client, Common};
use anyhow::{bail, Result};
use serde_json::{json, Value};

pub async fn run(common: &Common, plan: &Plan, phases: &[Phase]) -> Result<Value> {
    let opened = storm::open_slice(common, plan, 0, plan.connections, plan.rate).await?;
    let up = opened.conns.len();
    if up == 0 {
        bail!("no connection came up: {}", opened.report["failures"]);
    }
    // Nothing is buffered in the client past the AUTH result: the gateway sends
    // nothing else until it is asked.
    let socks = opened.conns.into_iter().map(|(ws, _)| ws.into_inner()).collect();
    let (socks, reports) = rtt::run(
        socks,
        client::heartbeat_request(),
        rtt::Reply::WsFrame,
        client::is_heartbeat_reply,
        phases,
        common.gateway_pid,
    )
    .await?;
    drop(socks);
    Ok(json!({
        "connections": { "attempted": opened.report["attempted"], "up": up, "failures": opened.report["failures"] },
        "phases": reports,
        "gateway_cpu_us_per_heartbeat_rt": reports[0]["server_cpu_us_per_rt"],
    }))
}

pub fn print(r: &Value) {
    println!("connections: {}", r["connections"]);
    rtt::print("HEARTBEAT through the gateway", &r["phases"]);
}
