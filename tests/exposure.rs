//! Secure by default, at start-up of the real binary: an admin API off loopback without
//! a token, and the shipped development secret on a client listener off loopback, stop
//! it with a non-zero exit and one line naming the key; each opt-out starts and warns;
//! a default (loopback) start prints no warning about either.

mod common;
use common::*;

/// Runs the binary to its end and returns its one stderr line; it must have refused to
/// start.
async fn refused(cmd: std::process::Command) -> String {
    let out = run_to_end(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "started:\n{stderr}");
    assert!(out.stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    lines[0].to_string()
}

/// The JSON log lines at WARN level that came before "im-gateway started".
fn warnings(log: &[String]) -> Vec<serde_json::Value> {
    log.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "WARN")
        .collect()
}

fn loopback() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn everywhere() -> (String, std::net::SocketAddr) {
    let port = free_port();
    (format!("0.0.0.0:{port}"), format!("127.0.0.1:{port}").parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_admin_api_is_refused_from_flag_env_and_file() {
    let (admin, _) = everywhere();
    let line = refused(binary(&["--listen", &loopback(), "--admin", &admin, "--shards", "1"])).await;
    assert!(line.contains("admin.token") && line.contains("server.admin_listen"), "{line}");
    assert!(line.contains(&admin) && line.contains("admin.insecure"), "names the address and the opt-out: {line}");

    let mut cmd = binary(&["--listen", &loopback(), "--shards", "1"]);
    cmd.env("IMGW_SERVER_ADMIN_LISTEN", &admin);
    assert!(refused(cmd).await.contains("admin.token"));

    let dir = std::env::temp_dir().join(format!("imgw-exposure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    std::fs::write(&file, format!("[server]\nlisten = \"{}\"\nadmin_listen = \"{admin}\"\n", loopback())).unwrap();
    let line = refused(binary(&["--config", file.to_str().unwrap(), "--shards", "1"])).await;
    assert!(line.contains("admin.token"), "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_insecure_starts_open_and_warns() {
    let (admin, admin_addr) = everywhere();
    let mut cmd = binary(&["--listen", &loopback(), "--admin", &admin, "--shards", "1"]);
    cmd.env("IMGW_ADMIN_INSECURE", "true").env("IMGW_LOG_FORMAT", "json");
    let gw = Running::start(cmd).await;
    let warned: Vec<_> = warnings(&gw.log).into_iter().filter(|w| w["fields"]["key"] == "admin.insecure").collect();
    assert_eq!(warned.len(), 1, "one warning naming admin.insecure:\n{}", gw.log.join("\n"));
    assert!(warned[0]["fields"]["message"].as_str().unwrap().contains(&admin), "{}", warned[0]);
    // What was opted into: the API answers without a token.
    let (status, body) = http(admin_addr, "GET", "/v1/stats", None, None).await;
    assert_eq!(status, 200, "{body}");
    gw.terminate();
    let (status, log) = gw.exit().await;
    assert!(status.success(), "{status}\n{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_secret_off_loopback_is_refused() {
    let (ws, _) = everywhere();
    let line = refused(binary(&["--listen", &ws, "--admin", &loopback(), "--shards", "1"])).await;
    assert!(line.contains("auth.jwt_secret") && line.contains("server.listen") && line.contains(&ws), "{line}");
    assert!(line.contains("auth.allow_dev_secret"), "names the opt-out: {line}");

    // Also as the previous secret of a rotation.
    let mut cmd = binary(&["--listen", &ws, "--admin", &loopback(), "--shards", "1"]);
    cmd.env("IMGW_AUTH_JWT_SECRET", "a-production-secret-0123")
        .env("IMGW_AUTH_JWT_SECRET_PREVIOUS", im_gateway::config::DEV_JWT_SECRET);
    let line = refused(cmd).await;
    assert!(line.contains("auth.jwt_secret_previous"), "{line}");

    // `im-gateway token` loads the same config, so it refuses too.
    let mut cmd = binary(&["token", "--user", "1"]);
    cmd.env("IMGW_SERVER_LISTEN", &ws);
    assert!(refused(cmd).await.contains("auth.jwt_secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_dev_secret_starts_and_warns() {
    let (ws, ws_addr) = everywhere();
    let mut cmd = binary(&["--listen", &ws, "--admin", &loopback(), "--shards", "1"]);
    cmd.env("IMGW_AUTH_ALLOW_DEV_SECRET", "true").env("IMGW_LOG_FORMAT", "json");
    let gw = Running::start(cmd).await;
    let warned: Vec<_> =
        warnings(&gw.log).into_iter().filter(|w| w["fields"]["key"] == "auth.allow_dev_secret").collect();
    assert_eq!(warned.len(), 1, "one warning naming auth.allow_dev_secret:\n{}", gw.log.join("\n"));
    assert!(warned[0]["fields"]["message"].as_str().unwrap().contains(&ws), "{}", warned[0]);
    // What was opted into: a token signed with the development secret logs in.
    let (c, r) = Client::login(ws_addr, &default_token(31, Some(1))).await;
    assert_eq!(r.user_id, 31);
    drop(c);
    gw.terminate();
    let (status, log) = gw.exit().await;
    assert!(status.success(), "{status}\n{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_secret_from_a_file_serves_every_address_without_warning() {
    let dir = std::env::temp_dir().join(format!("imgw-own-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("jwt_secret");
    std::fs::write(&secret_file, "a-secret-only-in-a-file-0123\n").unwrap();
    let (ws, ws_addr) = everywhere();
    let mut cmd = binary(&["--listen", &ws, "--admin", &loopback(), "--shards", "1"]);
    cmd.env("IMGW_AUTH_JWT_SECRET_FILE", &secret_file).env("IMGW_LOG_FORMAT", "json");
    let gw = Running::start(cmd).await;
    let about_security: Vec<_> = warnings(&gw.log).into_iter().filter(|w| w["fields"]["key"].is_string()).collect();
    assert!(about_security.is_empty(), "{about_security:?}");

    let token = token_signed_with("a-secret-only-in-a-file-0123", 41, Some(1));
    let (c, r) = Client::login(ws_addr, &token).await;
    assert_eq!(r.user_id, 41);
    drop(c);
    let refused = Client::dial(ws_addr, Some(&default_token(42, None))).await;
    assert!(matches!(refused, Dial::Refused { status: 401, .. }), "the development secret is not accepted");
    gw.terminate();
    let (status, log) = gw.exit().await;
    assert!(status.success(), "{status}\n{}", log.join("\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The shipped config as a developer runs it (only the ports moved off 8080/9090 so the
/// test can run beside anything): nothing it logs asks for action about the secret, the
/// admin API or the listeners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_start_prints_no_security_warning() {
    let mut cmd = binary(&["--shards", "1"]);
    cmd.env("IMGW_SERVER_LISTEN", loopback())
        .env("IMGW_SERVER_ADMIN_LISTEN", loopback())
        .env("IMGW_LOG_FORMAT", "json");
    let gw = Running::start(cmd).await;
    let keys = ["auth.", "admin.", "jwt_secret", "server.listen", "server.admin_listen", "allowed_origins"];
    let about_security: Vec<_> =
        warnings(&gw.log).into_iter().filter(|w| keys.iter().any(|k| w.to_string().contains(k))).collect();
    assert!(about_security.is_empty(), "{about_security:?}");
    gw.terminate();
    let (status, log) = gw.exit().await;
    assert!(status.success(), "{status}\n{}", log.join("\n"));
}
