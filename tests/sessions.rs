//! Multi-login policies across shards (`kick_same_platform`, `single`, `allow`), admin
//! kicks, and the login race: two logins of one user and platform at the same moment,
//! on the same or on different shards, leave exactly one session.

mod common;
use common::*;
use im_gateway::config::MultiLogin;
use im_gateway::Gateway;

/// Logs `user` in on `shard` with `platform` without any throw-away login of that user
/// (which could displace a session the test keeps).
async fn login_fresh_on_shard(gw: &Gateway, user: i64, platform: i32, shard: u32) -> Client {
    let mut c = open_on_shard(gw, shard as usize).await;
    let r = c.auth(&token(gw, user, Some(platform)), platform, 1).await;
    assert_eq!((r.user_id, r.shard), (user, shard));
    c
}

/// Platforms of `user`'s sessions as `/v1/online` lists them, sorted.
async fn online_platforms(gw: &Gateway, user: i64) -> Vec<i64> {
    let (status, v) = get_json(gw, &format!("/v1/online?user_ids={user}")).await;
    assert_eq!(status, 200, "{v}");
    let mut p: Vec<i64> =
        v["users"][0]["sessions"].as_array().unwrap().iter().map(|s| s["platform"].as_i64().unwrap()).collect();
    p.sort_unstable();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_platform_on_another_shard_kicks_the_older_session() {
    let gw = start(|_| {});
    let mut old = login_fresh_on_shard(&gw, 901, 1, 0).await;
    let mut new = login_fresh_on_shard(&gw, 901, 1, 1).await;
    let reason = old.kicked().await;
    assert!(!reason.is_empty());
    new.heartbeat(2).await;
    assert_eq!(online_platforms(&gw, 901).await, vec![1]);
    drop((old, new));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_platform_on_the_same_shard_kicks_the_older_session() {
    let gw = start(|_| {});
    let mut old = login_fresh_on_shard(&gw, 902, 1, 0).await;
    let mut new = login_fresh_on_shard(&gw, 902, 1, 0).await;
    old.kicked().await;
    new.heartbeat(2).await;
    assert_eq!(online_platforms(&gw, 902).await, vec![1]);
    drop((old, new));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_platforms_both_stay() {
    let gw = start(|_| {});
    let mut phone = login_fresh_on_shard(&gw, 903, 1, 0).await;
    let mut desktop = login_fresh_on_shard(&gw, 903, 2, 1).await;
    // Displacement is decided when the newer session registers, before its AuthResult
    // is sent: both are still listed, and both answer.
    assert_eq!(online_platforms(&gw, 903).await, vec![1, 2]);
    phone.heartbeat(2).await;
    desktop.heartbeat(2).await;
    drop((phone, desktop));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_policy_kicks_other_platforms_too() {
    let gw = start(|cfg| cfg.sessions.multi_login = MultiLogin::Single);
    let mut phone = login_fresh_on_shard(&gw, 904, 1, 0).await;
    let mut desktop = login_fresh_on_shard(&gw, 904, 2, 1).await;
    phone.kicked().await;
    desktop.heartbeat(2).await;
    assert_eq!(online_platforms(&gw, 904).await, vec![2]);
    drop((phone, desktop));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_policy_keeps_every_session() {
    let gw = start(|cfg| cfg.sessions.multi_login = MultiLogin::Allow);
    let mut a = login_fresh_on_shard(&gw, 905, 1, 0).await;
    let mut b = login_fresh_on_shard(&gw, 905, 1, 1).await;
    let mut c = login_fresh_on_shard(&gw, 905, 1, 0).await;
    assert_eq!(online_platforms(&gw, 905).await, vec![1, 1, 1]);
    for (i, x) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
        x.heartbeat(i as i64).await;
    }
    // A push reaches all three.
    let body = r#"{"user_ids":[905],"msg":{"msg_id":1,"content":"x"}}"#;
    assert_eq!(post_json(&gw, "/v1/push", body).await.0, 200);
    for x in [&mut a, &mut b, &mut c] {
        assert_eq!(x.push().await.content, "x");
    }
    drop((a, b, c));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_kick_by_platform_and_by_user() {
    let gw = start(|_| {});
    let mut phone = login_fresh_on_shard(&gw, 906, 1, 0).await;
    let mut desktop = login_fresh_on_shard(&gw, 906, 2, 1).await;

    let (status, v) = post_json(&gw, "/v1/kick", r#"{"user_id":906,"platform":1,"reason":"password changed"}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["kicked"], 1, "{v}");
    assert_eq!(phone.kicked().await, "password changed");
    desktop.heartbeat(1).await;
    // The kicked session is no longer listed, even though its client has not closed
    // the socket yet.
    assert_eq!(online_platforms(&gw, 906).await, vec![2]);

    // Without a platform: every session of the user (here the one on the other shard).
    let (status, v) = post_json(&gw, "/v1/kick", r#"{"user_id":906}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["kicked"], 1, "{v}");
    assert!(!desktop.kicked().await.is_empty());
    let (_, v) = get_json(&gw, "/v1/online?user_ids=906").await;
    assert_eq!(v["users"][0]["online"], false, "{v}");

    // Nobody left to kick.
    let (status, v) = post_json(&gw, "/v1/kick", r#"{"user_id":906}"#).await;
    assert_eq!((status, v["kicked"].as_i64()), (200, Some(0)), "{v}");
    drop((phone, desktop));
    gw.stop();
}

/// Two logins of the same user and platform at once: whichever the directory orders
/// second wins, the other gets KICK and 4003, and exactly one session is listed. Over
/// the rounds the kernel spreads the pairs so that both same-shard and cross-shard
/// races happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_logins_leave_exactly_one_session() {
    let gw = start(|_| {});
    let addr = gw.ws_addr();
    let mut cross_shard = 0;
    let mut same_shard = 0;
    for round in 0..60i64 {
        let user = 10_000 + round;
        let t = token(&gw, user, Some(1));
        let ((mut c1, r1), (mut c2, r2)) = tokio::join!(Client::login(addr, &t), Client::login(addr, &t));
        if r1.shard == r2.shard {
            same_shard += 1;
        } else {
            cross_shard += 1;
        }
        // Both logins have registered (each AuthResult is sent after registering): the
        // directory holds exactly one of them.
        let (_, v) = get_json(&gw, &format!("/v1/online?user_ids={user}")).await;
        let sessions = v["users"][0]["sessions"].as_array().expect("sessions").clone();
        assert_eq!(sessions.len(), 1, "round {round}: {v}");
        let survivor = sessions[0]["session_id"].as_str().expect("session_id").to_string();
        let (winner, loser) = if survivor == r1.session_id {
            (&mut c1, &mut c2)
        } else {
            assert_eq!(survivor, r2.session_id, "round {round}: listed session is one of ours");
            (&mut c2, &mut c1)
        };
        loser.kicked().await;
        winner.heartbeat(round).await;
        wait_online(&gw, user, 1).await;
        drop((c1, c2));
    }
    assert!(cross_shard > 0, "no cross-shard race in 60 rounds ({same_shard} same-shard)");
    gw.stop();
}
