//! Per-shard observability: what `/v1/stats` and `/metrics` say after real traffic
//! (handshakes, pushes to clients on both shards, refused tokens), latencies included.

mod common;
use common::*;
use im_gateway::auth::{Claims, Minter};

fn claims(sub: &str, exp: u64) -> Claims {
    Claims { sub: sub.into(), exp, platform: None, iss: None, aud: None, iat: None }
}

/// Waits until `/v1/stats` satisfies `done`, and returns it.
async fn wait_stats(
    gw: &im_gateway::Gateway,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let v = stats(gw).await;
        if done(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {v}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_handshakes_and_auth_failures_are_counted_per_shard() {
    let gw = start(|_| {});
    let (mut a, _) = Client::login_on_shard(&gw, 21, Some(1), 0).await;
    let (mut b, _) = Client::login_on_shard(&gw, 22, Some(1), 1).await;
    wait_connections(&gw, 2).await;

    // Three pushes to both users: one routed message per shard each, one frame out per
    // client each.
    for id in 1..=3 {
        let body = format!(r#"{{"user_ids":[21,22],"msg":{{"msg_id":{id},"content":"hi"}}}}"#);
        let (status, v) = post_json(&gw, "/v1/push", &body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(a.push().await.msg_id, id);
        assert_eq!(b.push().await.msg_id, id);
    }
    let v = wait_stats(&gw, "3 pushes out per shard", |v| {
        v["shards"].as_array().unwrap().iter().all(|s| s["pushes_out"] == 3)
    })
    .await;
    for s in v["shards"].as_array().unwrap() {
        assert_eq!(s["pushes_in"], 3, "{s}");
        assert_eq!(s["pushes_queued"], 3, "{s}");
        let push = &s["push_latency_us"];
        assert_eq!(push["recent"]["count"], 3, "one latency sample per delivered push: {s}");
        assert_eq!(push["total"]["count"], 3, "{s}");
        assert!(push["recent"]["p50"].as_u64().unwrap() >= 1, "{s}");
        assert!(push["recent"]["p999"].as_u64() >= push["recent"]["p50"].as_u64(), "{s}");
        let handshakes = s["handshakes"].as_u64().unwrap();
        assert!(handshakes >= 1, "{s}");
        assert_eq!(s["handshake_latency_us"]["total"]["count"].as_u64(), Some(handshakes), "{s}");
        assert!(s["outbound_queued_max"].is_u64(), "{s}");
    }
    assert_eq!(v["total"]["pushes_out"], 6, "{v}");
    assert!(v["now_ms"].as_u64().unwrap() > 1_600_000_000_000, "{v}");
    // The stall probe runs on every shard whether or not there is traffic.
    wait_stats(&gw, "stall samples on every shard", |v| {
        v["shards"].as_array().unwrap().iter().all(|s| s["loop_stall_us"]["recent"]["count"].as_u64() > Some(0))
    })
    .await;

    // Refused tokens are counted by reason.
    let minter = Minter::from_config(&gw.node().config.auth).unwrap();
    let expired = minter.sign(&claims("5", 1_000_000));
    let bad_subject = minter.sign(&claims("not-a-user", 9_999_999_999));
    for t in [expired.as_str(), bad_subject.as_str(), "abc.def.ghi"] {
        assert!(matches!(Client::dial(gw.ws_addr(), Some(t)).await, Dial::Refused { status: 401, .. }), "{t}");
    }
    let v = wait_stats(&gw, "3 auth failures", |v| {
        v["shards"].as_array().unwrap().iter().map(|s| s["auth_failures"].as_u64().unwrap()).sum::<u64>() == 3
    })
    .await;
    let by_reason = |r: &str| {
        v["shards"].as_array().unwrap().iter().map(|s| s["auth_failure_reasons"][r].as_u64().unwrap()).sum::<u64>()
    };
    assert_eq!(
        (by_reason("expired"), by_reason("bad_subject"), by_reason("invalid"), by_reason("missing")),
        (1, 1, 1, 0),
        "{v}"
    );

    // The same in Prometheus text: histograms and recent quantiles per shard.
    let (status, text) = http(gw.admin_addr(), "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    for shard in ["0", "1"] {
        let labels = format!("gateway_id=\"gw-test\",shard=\"{shard}\"");
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix) && l.contains(&labels))
                .unwrap_or_else(|| panic!("no {prefix} for shard {shard}:\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(line("imgw_push_latency_seconds_count{"), "3");
        assert_eq!(line("imgw_push_latency_seconds_bucket{le=\"+Inf\""), "3");
        assert_eq!(line("imgw_pushes_out_total{"), "3");
        let p99: f64 = line("imgw_push_latency_recent_seconds{").parse().unwrap();
        assert!(p99 > 0.0, "{text}");
        assert!(text.contains(&format!("imgw_loop_stall_seconds_count{{{labels}}}")), "{text}");
        assert!(
            text.contains(&format!("imgw_handshake_latency_recent_seconds{{{labels},quantile=\"0.999\"}}")),
            "{text}"
        );
    }
    assert!(text.contains("# TYPE imgw_push_latency_seconds histogram"), "{text}");
    assert!(text.contains("reason=\"expired\"} 1"), "{text}");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_page_is_served_self_contained() {
    let gw = start(|cfg| cfg.admin.token = Some("dash-secret".into()));
    let (status, body) = http(gw.admin_addr(), "GET", "/dashboard", None, None).await;
    assert_eq!(status, 200, "the page itself needs no token: {body}");
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert!(body.contains("/v1/stats"));
    // Its data still does.
    assert_eq!(http(gw.admin_addr(), "GET", "/v1/stats", None, None).await.0, 401);
    assert_eq!(http(gw.admin_addr(), "POST", "/dashboard", Some("{}"), None).await.0, 405);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_queries_only_exported_series() {
    let gw = start(|_| {});
    let (status, text) = http(gw.admin_addr(), "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana/im-gateway.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().map_or(&[][..], Vec::as_slice) {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("imgw_") {
                let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + name.len()..];
                names.push(name);
            }
        }
    }
    assert!(names.len() > 15, "{names:?}");
    for name in names {
        let exported = text.lines().any(|l| l.starts_with(&format!("{name}{{")));
        assert!(exported, "the Grafana dashboard queries {name}, which /metrics does not export");
    }
    let scrape = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/prometheus.yml")).unwrap();
    assert!(scrape.contains("metrics_path: /metrics"), "{scrape}");
    gw.stop();
}
