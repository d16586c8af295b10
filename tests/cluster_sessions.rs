//! Multi-login across nodes on a real Redis: the older session on another node is
//! kicked (KICK, 4003); other platforms stay; two logins of one user and platform on two
//! nodes at the same moment leave exactly one; an admin kick on one node reaches a
//! session on another.

mod common;
use common::cluster::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_another_node_kicks_the_older_session() {
    let redis = Redis::shared();
    let p = prefix("kick");
    let a = ready_node(&redis, &p, "A").await;
    let b = ready_node(&redis, &p, "B").await;
    let (mut old, _) = Client::login(a.ws_addr(), &token(&a, 3801, Some(1))).await;
    let (mut phone, _) = Client::login(a.ws_addr(), &token(&a, 3801, Some(2))).await;
    wait_sessions_on(&b, 3801, &["A", "A"]).await;
    let (mut new, r) = Client::login(b.ws_addr(), &token(&b, 3801, Some(1))).await;
    assert!(!old.kicked().await.is_empty());
    new.heartbeat(1).await;
    phone.heartbeat(1).await;
    let sessions = wait_sessions_on(&a, 3801, &["A", "B"]).await;
    assert!(sessions.iter().any(|s| s["session_id"].as_str() == Some(r.session_id.as_str())));
    drop((new, phone));
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_logins_on_two_nodes_leave_exactly_one() {
    let redis = Redis::shared();
    let p = prefix("race");
    let a = ready_node(&redis, &p, "A").await;
    let b = ready_node(&redis, &p, "B").await;
    let mut winners = [0, 0];
    for round in 0..8i64 {
        let user = 3900 + round;
        let (ta, tb) = (token(&a, user, Some(1)), token(&b, user, Some(1)));
        let ((mut ca, ra), (mut cb, rb)) =
            tokio::join!(Client::login(a.ws_addr(), &ta), Client::login(b.ws_addr(), &tb));
        // Both logins were accepted; now exactly one of them is kicked.
        let a_lost = tokio::select! {
            p = ca.recv_or_close() => { assert!(p.is_ok(), "round {round}: A closed without a KICK"); true }
            p = cb.recv_or_close() => { assert!(p.is_ok(), "round {round}: B closed without a KICK"); false }
        };
        let (mut loser, mut winner, winner_id, winner_gw) =
            if a_lost { (ca, cb, rb.session_id, "B") } else { (cb, ca, ra.session_id, "A") };
        winners[usize::from(!a_lost)] += 1;
        assert_eq!(loser.expect_close().await.0, 4003, "round {round}");
        winner.heartbeat(1).await;
        for gw in [&a, &b] {
            let listed = wait_sessions_on(gw, user, &[winner_gw]).await;
            assert_eq!(listed[0]["session_id"].as_str(), Some(winner_id.as_str()), "round {round}");
        }
        winner.heartbeat(2).await;
        drop(winner);
    }
    eprintln!("race winners: A {} B {}", winners[1], winners[0]);
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_kick_reaches_another_node() {
    let redis = Redis::shared();
    let p = prefix("adminkick");
    let a = ready_node(&redis, &p, "A").await;
    let b = ready_node(&redis, &p, "B").await;
    let (mut c1, _) = Client::login(a.ws_addr(), &token(&a, 3951, Some(1))).await;
    let (mut c2, _) = Client::login(a.ws_addr(), &token(&a, 3951, Some(2))).await;
    wait_sessions_on(&b, 3951, &["A", "A"]).await;
    let body = serde_json::json!({ "user_id": 3951, "platform": 2, "reason": "bye" }).to_string();
    let (status, v) = post_json(&b, "/v1/kick", &body).await;
    assert_eq!((status, v["kicked"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(c2.kicked().await, "bye");
    c1.heartbeat(1).await;
    wait_sessions_on(&b, 3951, &["A"]).await;
    drop(c1);
    a.stop();
    b.stop();
}
