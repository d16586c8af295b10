//! A client that stops reading is cut with 4009 once its outbound queue overflows,
//! while healthy clients on the same shard and on the other shard keep receiving every
//! push, in order.

mod common;
use common::*;
use im_gateway::proto::{self, Command};
use prost::Message as _;
use tokio_tungstenite::MaybeTlsStream;

/// Number of pushes and their size: several MB in total, far more than the socket
/// buffers between the gateway and a client that does not read can hold.
const PUSHES: i64 = 300;
const CONTENT: usize = 32 << 10;

/// Logs in over a socket with a small receive buffer (so the kernel absorbs little of
/// what the gateway sends to a client that does not read).
async fn login_small_window(gw: &im_gateway::Gateway, user: i64) -> (Client, proto::AuthResult) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(gw.ws_addr()).await.unwrap();
    let url = format!("ws://{}/ws?token={}", gw.ws_addr(), token(gw, user, Some(1)));
    let (ws, _) = tokio::time::timeout(HANG, tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)))
        .await
        .expect("upgrade hung")
        .expect("upgrade");
    let mut c = Client { ws };
    let p = c.recv().await;
    assert_eq!(p.header.as_ref().unwrap().command, Command::Auth as i32);
    (c, proto::AuthResult::decode(p.body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_cut_with_4009_and_others_lose_nothing() {
    let gw = start(|cfg| {
        cfg.connection.outbound_queue = 8;
        // The slow client reads its close frame only after all pushes went out; give it
        // the time (the close frame waits behind the unread data in the socket).
        cfg.connection.close_linger_ms = 15_000;
    });
    let (mut slow, rs) = login_small_window(&gw, 1).await;
    let (mut same, _) = Client::login_on_shard(&gw, 2, Some(1), rs.shard).await;
    let (mut other, _) = Client::login_on_shard(&gw, 3, Some(1), 1 - rs.shard).await;

    let content = "x".repeat(CONTENT);
    for i in 0..PUSHES {
        let body = serde_json::json!({
            "user_ids": [1, 2, 3],
            "msg": { "msg_id": i, "sender_id": 9, "type": 1, "content": content }
        });
        let (status, v) = post_json(&gw, "/v1/push", &body.to_string()).await;
        assert_eq!(status, 200, "{v}");
        // The healthy clients read as they go and get every push, in order. The one on
        // the slow client's shard getting push i also means the shard has offered push
        // i to the slow client.
        for c in [&mut same, &mut other] {
            let p = c.push().await;
            assert_eq!(p.msg_id, i);
            assert_eq!(p.content.len(), CONTENT);
        }
    }

    let v = stats(&gw).await;
    assert!(v["total"]["slow_cuts"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["total"]["drops"].as_u64().unwrap() >= 1, "{v}");

    // The slow client finally reads: a prefix of the pushes, in order, then 4009.
    let mut got = 0;
    let (code, reason) = loop {
        match slow.recv_or_close().await {
            Ok(p) => {
                assert_eq!(p.header.as_ref().unwrap().command, Command::Push as i32);
                assert_eq!(proto::PushMsg::decode(p.body).unwrap().msg_id, got, "in order, no gaps");
                got += 1;
            }
            Err(c) => break c,
        }
    };
    assert_eq!(code, 4009, "{reason}");
    assert!(got < PUSHES, "the slow client cannot have received everything");

    // The healthy ones are unaffected.
    same.heartbeat(1).await;
    other.heartbeat(1).await;
    drop((slow, same, other));
    gw.stop();
}
