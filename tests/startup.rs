//! Start-up of the real binary: a port somebody listens on and a bad config value stop
//! it with a non-zero exit and one clear line; `im-gateway token` mints a token the
//! gateway accepts.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_port_in_use() {
    let gw = start(|_| {});
    let ws = gw.ws_addr().to_string();
    let admin = format!("127.0.0.1:{}", free_port());
    let out = run_to_end(binary(&["--listen", &ws, "--admin", &admin, "--shards", "2"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a port in use:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("in use")).collect();
    assert_eq!(lines.len(), 1, "one line says the port is in use:\n{stderr}");
    assert!(lines[0].contains(&ws), "and names it: {}", lines[0]);
    // The gateway that holds the port still serves.
    let (c, r) = Client::login(gw.ws_addr(), &token(&gw, 5, Some(1))).await;
    assert_eq!(r.user_id, 5);
    drop(c);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_value_names_the_key() {
    for (var, value, key) in [
        ("IMGW_CONNECTION_MAX_FRAME_BYTES", "5", "connection.max_frame_bytes"),
        ("IMGW_CONNECTION_OUTBOUND_QUEUE", "lots", "connection.outbound_queue"),
        ("IMGW_CONNECTION_OUTBOUND_QUEUE", "-1", "connection.outbound_queue"),
        ("IMGW_SERVER_LISTEN", "nowhere", "server.listen"),
        ("IMGW_SESSIONS_MULTI_LOGIN", "sometimes", "sessions.multi_login"),
    ] {
        let mut cmd = binary(&[]);
        cmd.env(var, value);
        let out = run_to_end(cmd).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} started:\n{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{var}={value}: one line:\n{stderr}");
        assert!(lines[0].contains(key), "{var}={value}: names {key}: {}", lines[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_subcommand_mints_an_accepted_token() {
    let out = run_to_end(binary(&["token", "--user", "1001", "--platform", "3"])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let minted = stdout.trim();
    assert_eq!(minted.lines().count(), 1, "{stdout}");
    assert_eq!(minted.split('.').count(), 3, "a JWT: {minted}");

    // The in-process gateway runs with the same built-in default key.
    let gw = start(|_| {});
    let (c, r) = Client::login(gw.ws_addr(), minted).await;
    assert_eq!(r.user_id, 1001);
    let (_, v) = get_json(&gw, "/v1/online?user_ids=1001").await;
    assert_eq!(v["users"][0]["sessions"][0]["platform"], 3, "platform claim: {v}");
    drop(c);
    gw.stop();

    // A bad user id is refused.
    let out = run_to_end(binary(&["token", "--user", "0"])).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}
