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
