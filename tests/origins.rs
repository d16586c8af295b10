//! `server.allowed_origins` through the real binary (env, comma-separated): a browser
//! upgrade from a listed origin goes through, one from any other origin gets 403 (and is
//! counted with the other refusals), an upgrade without `Origin` is not affected; an
//! empty list lets any origin in.

mod common;
use common::*;
use std::net::SocketAddr;

/// Starts the binary on loopback ports with `allowed_origins` (env) when given.
async fn gateway(allowed: Option<&str>) -> (Running, SocketAddr, SocketAddr) {
    let ws: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = binary(&["--listen", &ws.to_string(), "--admin", &admin.to_string(), "--shards", "1"]);
    if let Some(list) = allowed {
        cmd.env("IMGW_SERVER_ALLOWED_ORIGINS", list);
    }
    (Running::start(cmd).await, ws, admin)
}

async fn logs_in(ws: SocketAddr, user: i64, origin: &str) {
    let token = default_token(user, Some(3));
    let Dial::Ok(mut c) = Client::dial_from_origin(ws, Some(&token), origin).await else { panic!("{origin} refused") };
    let p = c.recv().await;
    assert_eq!(p.header.unwrap().command, im_gateway::proto::Command::Auth as i32, "{origin}: AUTH result first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_only() {
    let (gw, ws, admin) = gateway(Some("https://chat.example.com, http://localhost:3000")).await;
    logs_in(ws, 1, "https://chat.example.com").await;
    logs_in(ws, 2, "HTTPS://Chat.Example.COM").await;
    logs_in(ws, 3, "https://chat.example.com:443").await;
    logs_in(ws, 4, "http://localhost:3000").await;

    let refused = [
        "https://evil.example",
        "http://chat.example.com",
        "https://chat.example.com:8443",
        "https://chat.example.com.evil.example",
        "http://localhost:3001",
        "null",
    ];
    for origin in refused {
        match Client::dial_from_origin(ws, Some(&default_token(5, None)), origin).await {
            Dial::Refused { status, body, .. } => {
                assert_eq!(status, 403, "{origin}: {body}");
                assert!(body.contains("origin not allowed"), "{origin}: {body}");
            }
            Dial::Ok(_) => panic!("{origin} was let in"),
        }
    }
    // Native clients send no Origin.
    let (_c, r) = Client::login(ws, &default_token(6, None)).await;
    assert_eq!(r.user_id, 6);

    let (status, body) = http(admin, "GET", "/v1/stats", None, None).await;
    assert_eq!(status, 200, "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    let counted: u64 = stats["shards"].as_array().unwrap().iter().map(|s| s["rejected"]["403"].as_u64().unwrap()).sum();
    assert_eq!(counted, refused.len() as u64, "{stats}");
    gw.terminate();
    let (status, log) = gw.exit().await;
    assert!(status.success(), "{status}\n{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_list_allows_any_origin() {
    let (gw, ws, _) = gateway(None).await;
    logs_in(ws, 1, "https://anywhere.example").await;
    logs_in(ws, 2, "null").await;
    gw.terminate();
    let (status, log) = gw.exit().await;
    assert!(status.success(), "{status}\n{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_entry_names_the_key() {
    let mut cmd = binary(&["--listen", &format!("127.0.0.1:{}", free_port()), "--shards", "1"]);
    cmd.env("IMGW_SERVER_ALLOWED_ORIGINS", "https://chat.example.com/app");
    let out = run_to_end(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("server.allowed_origins"), "{stderr}");
}
