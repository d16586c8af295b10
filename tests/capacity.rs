//! `max_connections`: an upgrade over capacity gets HTTP 503 with `Retry-After` and no
//! WebSocket; a slot freed by a disconnect is usable again.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_capacity_is_503_with_retry_after() {
    let gw = start(|cfg| cfg.connection.max_connections = 2);
    let (a, _) = Client::login(gw.ws_addr(), &token(&gw, 1, Some(1))).await;
    // Unauthenticated connections count too.
    let Dial::Ok(b) = Client::dial(gw.ws_addr(), None).await else { panic!("second connection refused") };
    for _ in 0..3 {
        match Client::dial(gw.ws_addr(), Some(&token(&gw, 3, Some(1)))).await {
            Dial::Refused { status, retry_after, body } => {
                assert_eq!(status, 503, "{body}");
                let retry: u64 =
                    retry_after.expect("Retry-After header").trim().parse().expect("Retry-After in seconds");
                assert!(retry >= 1, "{retry}");
                assert!(body.contains("error"), "{body}");
            }
            Dial::Ok(_) => panic!("third connection upgraded with max_connections = 2"),
        }
    }
    let v = stats(&gw).await;
    assert_eq!(v["max_connections"], 2, "{v}");
    assert!(
        v["shards"].as_array().unwrap().iter().map(|s| s["rejected"]["503"].as_u64().unwrap()).sum::<u64>() >= 3,
        "{v}"
    );

    // A slot frees when a client leaves.
    drop(b);
    wait_connections(&gw, 1).await;
    let (c, r) = Client::login(gw.ws_addr(), &token(&gw, 3, Some(1))).await;
    assert_eq!(r.user_id, 3);
    drop((a, c));
    gw.stop();
}
