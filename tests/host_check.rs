//! The start-up host check: the binary logs one warning per kernel setting below the
//! recommendation, and none for a setting that meets it. Recommendations are moved
//! relative to this host's real values (read from /proc/sys) with the test-only
//! `IM_GATEWAY_HOST_RECOMMEND` hook, so the test does not depend on how the host is tuned.

mod common;
use common::*;

fn sysctl(key: &str) -> u64 {
    im_gateway::host::read_sysctl(key).expect("readable sysctl").trim().parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_warns_once_per_setting_below_recommendation() {
    let nr_open = sysctl("fs.nr_open");
    let somaxconn = sysctl("net.core.somaxconn");
    let (ws_port, admin_port) = (free_port(), free_port());
    let mut cmd = binary(&[
        "--listen",
        &format!("127.0.0.1:{ws_port}"),
        "--admin",
        &format!("127.0.0.1:{admin_port}"),
        "--shards",
        "1",
    ]);
    cmd.env("IMGW_LOG_FORMAT", "json")
        .env(im_gateway::host::OVERRIDE_ENV, format!("fs.nr_open={},net.core.somaxconn={somaxconn}", nr_open + 1));
    let running = Running::start(cmd).await;
    running.terminate();
    let (status, log) = running.exit().await;
    assert!(status.success(), "{status}");

    let warnings: Vec<serde_json::Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "WARN" && v["fields"]["setting"].is_string())
        .collect();
    let about = |key: &str| warnings.iter().filter(|v| v["fields"]["setting"] == key).collect::<Vec<_>>();
    let nr = about("fs.nr_open");
    assert_eq!(nr.len(), 1, "one warning for fs.nr_open:\n{}", log.join("\n"));
    assert_eq!(nr[0]["fields"]["current"], nr_open.to_string());
    assert_eq!(nr[0]["fields"]["recommended"], (nr_open + 1).to_string());
    assert!(about("net.core.somaxconn").is_empty(), "somaxconn meets its recommendation:\n{}", log.join("\n"));
    // Every warning names a distinct setting.
    let mut keys: Vec<&str> = warnings.iter().map(|v| v["fields"]["setting"].as_str().unwrap()).collect();
    let n = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), n, "one warning per setting");
}

/// `scripts/tune-host.sh --check` prints every setting of the sysctl file with the host's
/// value, the recommendation and a verdict, and its exit code says whether any falls
/// short (the same verdicts as the binary's check).
#[test]
fn tune_host_check_prints_current_against_recommended() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/tune-host.sh"))
        .arg("--check")
        .output()
        .expect("run tune-host.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let recs = im_gateway::host::parse_recommendations(im_gateway::host::RECOMMENDED);
    let short = im_gateway::host::check(&recs, im_gateway::host::read_sysctl);
    for (key, recommended) in &recs {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key.as_str()))
            .unwrap_or_else(|| panic!("no line for {key}:\n{text}"));
        assert!(line.contains(recommended.as_str()), "{line}");
        let says_short = line.trim_end().ends_with("SHORT");
        assert_eq!(says_short, short.iter().any(|s| &s.key == key), "script and binary disagree on {key}: {line}");
    }
    assert_eq!(out.status.code(), Some(if short.is_empty() { 0 } else { 1 }), "{text}");
    let usage = std::process::Command::new("bash").arg(root.join("scripts/tune-host.sh")).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}
