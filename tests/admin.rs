//! The admin HTTP API: health, online lookup, per-shard stats and Prometheus metrics,
//! JSON errors for bad requests, and the optional bearer token.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let gw = start(|_| {});
    for path in ["/healthz", "/readyz"] {
        let (status, body) = http(gw.admin_addr(), "GET", path, None, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_lists_sessions_per_contract() {
    let gw = start(|_| {});
    let (c, r) = Client::login(gw.ws_addr(), &token(&gw, 1, Some(3))).await;
    let (status, v) = get_json(&gw, "/v1/online?user_ids=1,2").await;
    assert_eq!(status, 200, "{v}");
    let users = v["users"].as_array().expect("users array");
    assert_eq!(users.len(), 2, "{v}");
    assert_eq!(users[0]["user_id"], 1);
    assert_eq!(users[0]["online"], true);
    let sessions = users[0]["sessions"].as_array().expect("sessions array");
    assert_eq!(sessions.len(), 1, "{v}");
    assert_eq!(sessions[0]["platform"], 3);
    assert_eq!(sessions[0]["gateway_id"], "gw-test");
    assert_eq!(sessions[0]["shard"], r.shard);
    assert_eq!(users[1]["user_id"], 2);
    assert_eq!(users[1]["online"], false);
    assert_eq!(users[1]["sessions"].as_array().map(Vec::len), Some(0), "{v}");

    // Going offline is seen too.
    drop(c);
    wait_online(&gw, 1, 0).await;
    let (_, v) = get_json(&gw, "/v1/online?user_ids=1").await;
    assert_eq!(v["users"][0]["online"], false, "{v}");

    for bad in ["/v1/online", "/v1/online?user_ids=", "/v1/online?user_ids=abc", "/v1/online?user_ids=1,-2"] {
        let (status, v) = get_json(&gw, bad).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].is_string(), "{bad}: {v}");
    }
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_metrics_are_per_shard() {
    let gw = start(|_| {});
    let (a, _) = Client::login_on_shard(&gw, 11, Some(1), 0).await;
    let (b, _) = Client::login_on_shard(&gw, 12, Some(1), 1).await;
    let (c, _) = Client::login(gw.ws_addr(), &token(&gw, 13, Some(1))).await;
    // login_on_shard may leave throw-away connections closing; wait for them to go.
    let per_shard = wait_connections(&gw, 3).await;
    assert!(per_shard[0] >= 1 && per_shard[1] >= 1, "{per_shard:?}");

    let v = stats(&gw).await;
    let shards = v["shards"].as_array().expect("shards array");
    assert_eq!(shards.len(), 2, "{v}");
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(s["shard"], i, "{v}");
        assert!(s["handshakes"].as_u64().unwrap() >= 1, "{v}");
    }
    assert_eq!(v["total"]["connections"], 3, "{v}");
    assert_eq!(v["total"]["users"], 3, "{v}");

    let (status, text) = http(gw.admin_addr(), "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(text.contains("shard=\"0\"") && text.contains("shard=\"1\""), "{text}");
    let connections: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("imgw_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(connections.len(), 2, "one imgw_connections series per shard:\n{text}");
    assert_eq!(connections.iter().sum::<u64>(), 3, "{text}");

    drop((a, b));
    let per_shard = wait_connections(&gw, 1).await;
    assert_eq!(per_shard.iter().sum::<u64>(), 1);
    drop(c);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_json_errors() {
    let gw = start(|_| {});
    let cases = [
        ("/v1/push", "{not json", "bad JSON"),
        ("/v1/push", r#"{"user_ids":[1],"msg":{"content":"x"},"extra":1}"#, "unknown field"),
        ("/v1/push", r#"{"user_ids":[1],"msg":{"content":"x","colour":"red"}}"#, "unknown msg field"),
        ("/v1/push", r#"{"user_ids":"1","msg":{"content":"x"}}"#, "wrong type"),
        ("/v1/push", r#"{"user_ids":[1],"msg":{"content":5}}"#, "wrong msg type"),
        ("/v1/push", r#"{"msg":{"content":"x"}}"#, "missing user_ids"),
        ("/v1/push", r#"{"user_ids":[],"msg":{"content":"x"}}"#, "no users"),
        ("/v1/broadcast", "[]", "wrong shape"),
        ("/v1/kick", r#"{"user_id":"x"}"#, "wrong type"),
        ("/v1/kick", r#"{"user_id":1,"why":"x"}"#, "unknown field"),
        ("/v1/kick", "", "empty body"),
    ];
    for (path, body, what) in cases {
        let (status, v) = post_json(&gw, path, body).await;
        assert_eq!(status, 400, "{what}: {path} {body} -> {v}");
        assert!(v["error"].is_string(), "{what}: {v}");
    }
    let (status, v) = get_json(&gw, "/v1/nope").await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].is_string(), "{v}");
    let (status, v) = get_json(&gw, "/v1/push").await;
    assert_eq!(status, 405, "{v}");
    // Still serving.
    assert_eq!(http(gw.admin_addr(), "GET", "/healthz", None, None).await.0, 200);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_everything_but_health() {
    let gw = start(|cfg| cfg.admin.token = Some("s3cret-admin".into()));
    let admin = gw.admin_addr();
    for path in ["/v1/stats", "/metrics", "/v1/online?user_ids=1"] {
        let (status, body) = http(admin, "GET", path, None, None).await;
        assert_eq!(status, 401, "{path} without token: {body}");
        assert!(body.contains("error"), "{body}");
        assert_eq!(http(admin, "GET", path, None, Some("wrong")).await.0, 401, "{path} wrong token");
        assert_eq!(http(admin, "GET", path, None, Some("s3cret-admin")).await.0, 200, "{path} with token");
    }
    let push = r#"{"user_ids":[1],"msg":{"content":"x"}}"#;
    assert_eq!(http(admin, "POST", "/v1/push", Some(push), None).await.0, 401);
    assert_eq!(http(admin, "POST", "/v1/push", Some(push), Some("s3cret-admin")).await.0, 200);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http(admin, "GET", path, None, None).await.0, 200, "{path} stays open");
    }
    gw.stop();
}
