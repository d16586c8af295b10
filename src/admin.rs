//! The admin HTTP API (hyper, on the control-plane thread's tokio runtime).
//!
//! Backends push, broadcast, kick and look users up here; operators read `/v1/stats`,
//! `/metrics`, `/healthz`, `/readyz` and watch `/dashboard` (`/demo/` is the example chat
//! page, [`crate::demo`]). Handlers decode and check the request, hand it to the
//! delivery facade ([`Router`](crate::router::Router)) or the registry, and shape the
//! answer; nothing here touches a shard, the directory or a connection. Every bad
//! request is a 4xx with a JSON `{"error": ".."}`.

use crate::metrics::ShardStats;
use crate::node::{Node, Phase};
use crate::packet;
use crate::proto::{Command, PushMsg};
use crate::router::Scope;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use std::sync::Arc;
use tracing::{debug, warn};

/// Largest request body accepted, bytes.
const MAX_BODY: usize = 1 << 20;
/// Most user ids in one push or lookup.
const MAX_USERS: usize = 100_000;

type Reply = Response<Full<Bytes>>;

/// Serves the admin API on `listener` until `stop` turns true.
pub async fn serve(listener: tokio::net::TcpListener, node: Arc<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(cause = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let node = node.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&node, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                debug!(cause = %e, "admin connection ended");
            }
        });
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("static response parts")
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json(status, serde_json::json!({ "error": message.into() }))
}

async fn route(node: &Arc<Node>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    // The dashboard page holds no data (it fetches /v1/stats with the token itself);
    // nor do the demo page and its script (the demo token is behind the admin token).
    let open = matches!(path.as_str(), "/healthz" | "/readyz" | "/dashboard" | "/demo/" | "/demo/im-gateway.js");
    if let (Some(token), false) = (&node.config.admin.token, open) {
        if !bearer_matches(&req, token) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong admin bearer token");
        }
    }
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::POST, "/v1/push") => match body::<PushRequest>(req).await {
            Ok(r) => push(node, r).await,
            Err(e) => e,
        },
        (Method::POST, "/v1/broadcast") => match body::<BroadcastRequest>(req).await {
            Ok(r) => broadcast(node, r).await,
            Err(e) => e,
        },
        (Method::POST, "/v1/kick") => match body::<KickRequest>(req).await {
            Ok(r) => kick(node, r).await,
            Err(e) => e,
        },
        (Method::GET, "/v1/online") => online(node, req.uri().query().unwrap_or("")).await,
        (Method::GET, "/v1/stats") => {
            let shards = node.router().stats().await;
            let mut stats = stats_json(node, &shards);
            // Cluster mode: the other nodes' summaries (as their last sweep filed them).
            match node.registry().nodes().await {
                Ok(Some(nodes)) => stats["nodes"] = serde_json::json!(nodes),
                Ok(None) => {}
                Err(e) => {
                    stats["nodes"] = serde_json::json!([]);
                    stats["registry_error"] = serde_json::json!(e.to_string());
                }
            }
            json(StatusCode::OK, stats)
        }
        (Method::GET, "/metrics") => {
            let shards = node.router().stats().await;
            Response::builder()
                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                .body(Full::new(Bytes::from(crate::prometheus::render(node.gateway_id(), &shards))))
                .expect("static response parts")
        }
        (Method::GET, "/dashboard") => Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .header("content-security-policy", crate::dashboard::CSP)
            .header("cache-control", "no-cache")
            .body(Full::new(Bytes::from_static(crate::dashboard::PAGE.as_bytes())))
            .expect("static response parts"),
        (Method::GET, "/demo" | "/demo/index.html") => Response::builder()
            .status(StatusCode::MOVED_PERMANENTLY)
            .header("location", "/demo/")
            .body(Full::new(Bytes::new()))
            .expect("static response parts"),
        (Method::GET, "/demo/") => Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .header("content-security-policy", crate::demo::CSP)
            .header("cache-control", "no-cache")
            .body(Full::new(Bytes::from_static(crate::demo::PAGE.as_bytes())))
            .expect("static response parts"),
        (Method::GET, "/demo/im-gateway.js") => Response::builder()
            .header("content-type", "text/javascript; charset=utf-8")
            .header("cache-control", "no-cache")
            .body(Full::new(Bytes::from_static(crate::demo::CLIENT_JS.as_bytes())))
            .expect("static response parts"),
        (Method::GET, "/demo/token") => match crate::demo::token(&node.config.auth, req.uri().query().unwrap_or("")) {
            Ok(token) => json(StatusCode::OK, serde_json::json!({ "token": token })),
            Err(e @ crate::demo::DemoTokenError::BadUser) => error(StatusCode::BAD_REQUEST, e.to_string()),
            Err(e) => error(StatusCode::FORBIDDEN, e.to_string()),
        },
        (Method::GET, "/healthz") => json(StatusCode::OK, serde_json::json!({ "status": "ok" })),
        (Method::GET, "/readyz") => {
            if node.phase() == Phase::Draining {
                json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "ready": false, "reason": "draining" }))
            } else if !node.registry().connected() {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "ready": false, "reason": "registry unavailable (redis not connected)" }),
                )
            } else {
                json(StatusCode::OK, serde_json::json!({ "ready": true }))
            }
        }
        (
            _,
            "/v1/push"
            | "/v1/broadcast"
            | "/v1/kick"
            | "/v1/online"
            | "/v1/stats"
            | "/metrics"
            | "/healthz"
            | "/readyz"
            | "/dashboard"
            | "/demo/"
            | "/demo/im-gateway.js"
            | "/demo/token",
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// Whether the request carries `Authorization: Bearer <token>`. The comparison takes
/// the same time wherever the first wrong byte is, so response timing does not reveal
/// the token byte by byte (only whether the length matches, which a random token of a
/// fixed size gives away anyway).
fn bearer_matches(req: &Request<Incoming>, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    let given = req.headers().get("authorization").and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    given.is_some_and(|given| bool::from(given.ct_eq(token.as_bytes())))
}

/// Reads and decodes a JSON body; any failure is a ready 4xx reply.
async fn body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Reply> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(error(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {MAX_BODY} bytes"))),
    };
    serde_json::from_slice(&bytes).map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))
}

/// `msg` of a push or broadcast request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MsgSpec {
    msg_id: i64,
    sender_id: i64,
    receiver_id: i64,
    group_id: i64,
    #[serde(rename = "type")]
    kind: i32,
    content: String,
}

impl MsgSpec {
    fn into_push(self, receiver_id: i64) -> PushMsg {
        PushMsg {
            msg_id: self.msg_id,
            sender_id: self.sender_id,
            receiver_id: if self.receiver_id != 0 { self.receiver_id } else { receiver_id },
            group_id: self.group_id,
            r#type: self.kind,
            content: self.content,
            server_ts_us: packet::now_us(),
            // `seq`: per-user sequence numbers come with reliable delivery; 0 until then.
            ..Default::default()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushRequest {
    user_ids: Vec<i64>,
    msg: MsgSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastRequest {
    msg: MsgSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KickRequest {
    user_id: i64,
    #[serde(default)]
    platform: Option<i32>,
    #[serde(default)]
    reason: Option<String>,
}

impl PushRequest {
    /// The checks a push passes before it is routed.
    fn check(&self) -> Result<(), String> {
        if self.user_ids.is_empty() || self.user_ids.len() > MAX_USERS {
            return Err(format!("user_ids must list 1 to {MAX_USERS} users"));
        }
        if self.user_ids.iter().any(|&u| u <= 0) {
            return Err("user_ids must be positive".into());
        }
        Ok(())
    }

    /// The PUSH message (takes `msg`); its frame is encoded once for every recipient.
    fn message(&mut self) -> PushMsg {
        // receiver_id is the user when the push names exactly one; the frame is encoded
        // once for every recipient, so a list push carries msg.receiver_id (default 0).
        let receiver = if self.user_ids.len() == 1 { self.user_ids[0] } else { 0 };
        std::mem::take(&mut self.msg).into_push(receiver)
    }
}

async fn push(node: &Arc<Node>, mut req: PushRequest) -> Reply {
    if let Err(e) = req.check() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let msg = req.message();
    // Users on this node first, straight to their shards (no Redis involved), then
    // their sessions on other nodes, through each node's channel.
    let pushed = node.router().push(&req.user_ids, &msg, Scope::Cluster).await;
    let not_delivered: Vec<i64> =
        req.user_ids.iter().enumerate().filter(|&(i, _)| !pushed.delivered(i)).map(|(_, &u)| u).collect();
    let mut body = serde_json::json!({
        "users": req.user_ids.len(),
        "online_users": req.user_ids.len() - not_delivered.len(),
        "local_users": pushed.local_users(),
        "shards": pushed.shards,
        "nodes": 0,
        "not_delivered": not_delivered,
    });
    match pushed.remote {
        Some(Ok(r)) => body["nodes"] = r.nodes.into(),
        Some(Err(e)) => body["registry_error"] = e.to_string().into(),
        None => {}
    }
    json(StatusCode::OK, body)
}

async fn broadcast(node: &Arc<Node>, req: BroadcastRequest) -> Reply {
    let msg = req.msg.into_push(0);
    let sent = node.router().broadcast(&msg, Scope::Cluster).await;
    let mut body = serde_json::json!({ "online_users": sent.users, "shards": sent.shards });
    match sent.remote {
        Some(Ok(nodes)) => body["nodes"] = nodes.into(),
        Some(Err(e)) => body["registry_error"] = e.to_string().into(),
        None => {}
    }
    json(StatusCode::OK, body)
}

impl KickRequest {
    /// The checks a kick passes before it is routed.
    fn check(&self) -> Result<(), String> {
        if self.user_id <= 0 {
            return Err("user_id must be positive".into());
        }
        Ok(())
    }
}

async fn kick(node: &Arc<Node>, req: KickRequest) -> Reply {
    if let Err(e) = req.check() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let reason = req.reason.unwrap_or_else(|| "kicked by admin".to_string());
    let kicked = node.router().kick(req.user_id, req.platform, &reason, Scope::Cluster).await;
    let mut body = serde_json::json!({ "user_id": req.user_id, "kicked": kicked.here });
    match kicked.remote {
        Some(Ok(remote)) => body["kicked"] = (kicked.here + remote).into(),
        Some(Err(e)) => body["registry_error"] = e.to_string().into(),
        None => {}
    }
    json(StatusCode::OK, body)
}

async fn online(node: &Arc<Node>, query: &str) -> Reply {
    let raw = query.split('&').find_map(|kv| kv.strip_prefix("user_ids=")).unwrap_or("");
    let mut ids = Vec::new();
    for part in raw.split(',').filter(|p| !p.is_empty()) {
        match part.trim().parse::<i64>() {
            Ok(id) if id > 0 => ids.push(id),
            _ => return error(StatusCode::BAD_REQUEST, format!("user_ids: `{part}` is not a user id")),
        }
    }
    if ids.is_empty() || ids.len() > MAX_USERS {
        return error(StatusCode::BAD_REQUEST, "user_ids=1,2,... is required");
    }
    let gateway = node.gateway_id();
    let (remote, registry_error) = match node.registry().locate(&ids).await {
        Ok(r) => (r, None),
        Err(e) => (vec![Vec::new(); ids.len()], Some(e.to_string())),
    };
    let users: Vec<serde_json::Value> = ids
        .iter()
        .zip(remote)
        .map(|(&id, remote)| {
            let mut sessions: Vec<serde_json::Value> = node
                .router()
                .with_sessions(id, |s| {
                    s.iter()
                        .map(|l| {
                            serde_json::json!({
                                "platform": l.platform,
                                "gateway_id": gateway,
                                "shard": l.shard(),
                                "session_id": node.session_name(l.session, l.platform).to_string(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            // Sessions on other nodes: platform and shard come from the session name.
            sessions.extend(remote.into_iter().map(|r| {
                serde_json::json!({
                    "platform": r.name.map(|n| n.platform),
                    "gateway_id": r.gateway_id,
                    "shard": r.name.map(|n| n.shard()),
                    "session_id": r.session_id,
                })
            }));
            serde_json::json!({ "user_id": id, "online": !sessions.is_empty(), "sessions": sessions })
        })
        .collect();
    let mut body = serde_json::json!({ "users": users });
    if let Some(e) = registry_error {
        body["registry_error"] = e.into();
    }
    json(StatusCode::OK, body)
}

fn stats_json(node: &Arc<Node>, shards: &[ShardStats]) -> serde_json::Value {
    let total = |f: fn(&ShardStats) -> u64| shards.iter().map(f).sum::<u64>();
    serde_json::json!({
        "gateway_id": node.gateway_id(),
        "shards": shards,
        "total": {
            "connections": total(|s| s.connections),
            "users": node.router().users(),
            "handshakes": total(|s| s.handshakes),
            "pushes_in": total(|s| s.pushes_in),
            "pushes_queued": total(|s| s.pushes_queued),
            "pushes_out": total(|s| s.pushes_out),
            "frames_out": total(|s| s.frames_out),
            "drops": total(|s| s.drops),
            "slow_cuts": total(|s| s.slow_cuts),
            "kicks": total(|s| s.kicks),
        },
        "max_connections": node.max_connections(),
        "open_connections": node.open_connections(),
        "draining": node.phase() == Phase::Draining,
        "cluster": { "registry": node.registry().kind(), "connected": node.registry().connected() },
        // Wall clock of this answer (Unix ms): the dashboard's rates divide by it.
        "now_ms": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
    })
}

/// Decodes and checks the JSON body of a POST endpoint (`path`) exactly as its handler
/// does before it routes anything, and builds the PUSH frame a push or broadcast would
/// send. Acts on nothing; `Err` is the message a 400 would carry. The entry of the admin
/// fuzz target (`fuzz/fuzz_targets/admin_json.rs`).
pub fn check_body(path: &str, body: &[u8]) -> Result<(), String> {
    fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
        serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))
    }
    match path {
        "/v1/push" => {
            let mut req: PushRequest = decode(body)?;
            req.check()?;
            packet::frame(Command::Push, 0, &req.message());
        }
        "/v1/broadcast" => {
            let req: BroadcastRequest = decode(body)?;
            packet::frame(Command::Push, 0, &req.msg.into_push(0));
        }
        "/v1/kick" => decode::<KickRequest>(body)?.check()?,
        _ => return Err(format!("no such endpoint: {path}")),
    }
    Ok(())
}
