//! The admin token through the real binary: without it or with a wrong one every admin
//! request but the health checks is 401, with it 200; from `admin.token` (env) and from
//! `admin.token_file`, which also lets the API listen beyond loopback.

mod common;
use common::*;
use std::net::SocketAddr;

/// Every guarded request is refused without the right token and served with it.
async fn guarded_by(admin: SocketAddr, token: &str) {
    let mut wrong = vec!["wrong".to_string(), String::new(), format!("{token}x"), token[..token.len() - 1].to_string()];
    // Same length, last byte different: the constant-time path must still say no.
    let mut flipped = token.as_bytes().to_vec();
    *flipped.last_mut().unwrap() ^= 1;
    wrong.push(String::from_utf8(flipped).unwrap());
    for path in ["/v1/stats", "/metrics", "/v1/online?user_ids=1"] {
        let (status, body) = http(admin, "GET", path, None, None).await;
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(body.contains("error"), "{body}");
        for w in &wrong {
            assert_eq!(http(admin, "GET", path, None, Some(w)).await.0, 401, "{path} with {w:?}");
        }
        assert_eq!(http(admin, "GET", path, None, Some(token)).await.0, 200, "{path} with the token");
    }
    let kick = r#"{"user_id":1}"#;
    assert_eq!(http(admin, "POST", "/v1/kick", Some(kick), None).await.0, 401);
    assert_eq!(http(admin, "POST", "/v1/kick", Some(kick), Some(&wrong[4])).await.0, 401);
    assert_eq!(http(admin, "POST", "/v1/kick", Some(kick), Some(token)).await.0, 200);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http(admin, "GET", path, None, None).await.0, 200, "{path} stays open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_env() {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ws = format!("127.0.0.1:{}", free_port());
    let mut cmd = binary(&["--listen", &ws, "--admin", &admin.to_string(), "--shards", "1"]);
    cmd.env("IMGW_ADMIN_TOKEN", "env-admin-token-0123");
    let gw = Running::start(cmd).await;
    guarded_by(admin, "env-admin-token-0123").await;
    gw.terminate();
    let (status, log) = gw.exit().await;
    assert!(status.success(), "{status}\n{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_a_file_on_a_public_address() {
    let dir = std::env::temp_dir().join(format!("imgw-admin-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("admin_token");
    // Written as `echo` or a secret manager would: with a trailing newline.
    std::fs::write(&file, "file-admin-token-4567\n").unwrap();
    let port = free_port();
    let ws = format!("127.0.0.1:{}", free_port());
    let mut cmd = binary(&["--listen", &ws, "--admin", &format!("0.0.0.0:{port}"), "--shards", "1"]);
    cmd.env("IMGW_ADMIN_TOKEN_FILE", &file);
    let gw = Running::start(cmd).await;
    guarded_by(format!("127.0.0.1:{port}").parse().unwrap(), "file-admin-token-4567").await;
    gw.terminate();
    let (status, log) = gw.exit().await;
    assert!(status.success(), "{status}\n{}", log.join("\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}
