//! A flood of bad clients cannot flood the log: each shard lets a few warnings of a kind
//! through per second and reports the rest as one "N similar warnings suppressed" line.
//! Runs the real binary with JSON logs (`[log] format = "json"`) and reads its stderr.

mod common;
use common::*;

/// Bad upgrades sent.
const BAD: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_get_rate_limited_warnings() {
    let ws = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut cmd = binary(&["--listen", &ws, "--admin", &admin, "--shards", "1"]);
    cmd.env("IMGW_LOG_FORMAT", "json").env("IMGW_LOG_WARN_PER_SECOND", "5");
    let mut gw = Running::start(cmd).await;

    // Bad tokens, as fast as we can: every one is refused with 401.
    let addr: std::net::SocketAddr = ws.parse().unwrap();
    for _ in 0..BAD {
        assert!(matches!(Client::dial(addr, Some("not.a.token")).await, Dial::Refused { status: 401, .. }));
    }

    // Every refusal is accounted for: logged, or counted in a suppression report.
    let (mut logged, mut suppressed, mut reports) = (0u64, 0u64, 0u64);
    while logged + suppressed < BAD {
        let line = gw.next_line("every refusal logged or counted").await;
        let line: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let fields = &line["fields"];
        let message = fields["message"].as_str().unwrap_or("");
        if message == "upgrade refused" {
            assert_eq!(line["level"], "WARN", "{line}");
            assert_eq!(fields["status"], 401, "{line}");
            logged += 1;
        } else if message.ends_with("similar warnings suppressed in the last second") {
            assert_eq!(fields["kind"], "bad_upgrade", "{line}");
            let n = fields["suppressed"].as_u64().expect("suppressed count");
            assert!(message.starts_with(&format!("{n} ")), "{line}");
            suppressed += n;
            reports += 1;
        }
    }
    assert_eq!(logged + suppressed, BAD, "logged {logged}, suppressed {suppressed}");
    assert!(suppressed > 0 && reports >= 1, "a flood of {BAD} bad clients was limited");
    assert!(logged < BAD / 2, "logged {logged} of {BAD}");

    gw.terminate();
    let (status, log) = gw.exit().await;
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
}
