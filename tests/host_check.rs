//! The start-up host check: the binary logs one warning naming every kernel setting below
//! the recommendation (and pointing at `scripts/tune-host.sh --check`), each of them with
//! its values at debug, and says nothing of a setting that meets it. Recommendations are
//! moved relative to this host's real values (read from /proc/sys) with the test-only
//! `IM_GATEWAY_HOST_RECOMMEND` hook, so the test does not depend on how the host is tuned.

mod common;
use common::*;

fn sysctl(key: &str) -> u64 {
    im_gateway::host::read_sysctl(key).expect("readable sysctl").trim().parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_names_the_settings_below_recommendation_in_one_warning() {
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
        .env("IMGW_LOG_LEVEL", "info,im_gateway::host=debug")
        .env(im_gateway::host::OVERRIDE_ENV, format!("fs.nr_open={},net.core.somaxconn={somaxconn}", nr_open + 1));
    let running = Running::start(cmd).await;
    running.terminate();
    let (status, log) = running.exit().await;
    assert!(status.success(), "{status}");
    let lines: Vec<serde_json::Value> =
        log.iter().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).collect();
    let all = || log.join("\n");

    // One warning, whatever the number of settings that fall short.
    let warnings: Vec<&serde_json::Value> =
        lines.iter().filter(|v| v["level"] == "WARN" && v["fields"]["settings"].is_string()).collect();
    assert_eq!(warnings.len(), 1, "one warning for the host settings:\n{}", all());
    let fields = &warnings[0]["fields"];
    assert!(fields["message"].as_str().unwrap().contains("scripts/tune-host.sh --check"), "{fields}");
    let named: Vec<&str> = fields["settings"].as_str().unwrap().split(", ").collect();
    assert!(named.contains(&"fs.nr_open"), "{fields}");
    assert!(!named.contains(&"net.core.somaxconn"), "somaxconn meets its recommendation: {fields}");
    assert_eq!(fields["count"], named.len(), "{fields}");
    assert!(
        !lines.iter().any(|v| v["level"] == "WARN" && v["fields"]["setting"].is_string()),
        "no warning per setting:\n{}",
        all()
    );

    // The details, at debug: one line per setting the warning names, with both values.
    let details: Vec<&serde_json::Value> =
        lines.iter().filter(|v| v["level"] == "DEBUG" && v["fields"]["setting"].is_string()).collect();
    let about = |key: &str| details.iter().filter(|v| v["fields"]["setting"] == key).collect::<Vec<_>>();
    let nr = about("fs.nr_open");
    assert_eq!(nr.len(), 1, "one detail line for fs.nr_open:\n{}", all());
    assert_eq!(nr[0]["fields"]["current"], nr_open.to_string());
    assert_eq!(nr[0]["fields"]["recommended"], (nr_open + 1).to_string());
    assert!(about("net.core.somaxconn").is_empty(), "somaxconn meets its recommendation:\n{}", all());
    let mut keys: Vec<&str> = details.iter().map(|v| v["fields"]["setting"].as_str().unwrap()).collect();
    keys.sort_unstable();
    let mut listed = named.clone();
    listed.sort_unstable();
    assert_eq!(keys, listed, "one detail line per setting the warning names");
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
