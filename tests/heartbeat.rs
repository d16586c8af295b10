//! Heartbeats: HEARTBEAT is answered with HEARTBEAT and the same `seq`; a WebSocket
//! ping is answered with a pong carrying the same payload.

mod common;
use common::*;
use futures_util::StreamExt;
use im_gateway::proto::Command;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_is_answered_with_the_same_seq() {
    let gw = start(|_| {});
    let (mut c, _) = Client::login(gw.ws_addr(), &token(&gw, 100, Some(1))).await;
    for seq in [1, 42, 0, -7, i64::MAX] {
        c.heartbeat(seq).await;
    }
    // Several in flight at once are answered in order.
    for seq in 1000..1010 {
        c.send(Command::Heartbeat, seq, &()).await;
    }
    for seq in 1000..1010 {
        let h = c.recv().await.header.unwrap();
        assert_eq!((h.command, h.seq), (Command::Heartbeat as i32, seq));
    }
    // Also over the AUTH-packet path.
    let Dial::Ok(mut d) = Client::dial(gw.ws_addr(), None).await else { panic!("upgrade refused") };
    d.auth(&token(&gw, 101, Some(1)), 1, 1).await;
    d.heartbeat(2).await;
    drop((c, d));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_with_pong() {
    let gw = start(|_| {});
    let (mut c, _) = Client::login(gw.ws_addr(), &token(&gw, 102, Some(1))).await;
    for payload in [&b"hello"[..], b"", &[7u8; 125]] {
        c.send_raw(Message::Ping(payload.to_vec().into())).await;
        let m =
            tokio::time::timeout(HANG, c.ws.next()).await.expect("no pong").expect("stream ended").expect("ws error");
        match m {
            Message::Pong(p) => assert_eq!(&p[..], payload),
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    // The connection is still a normal session afterwards.
    c.heartbeat(3).await;
    drop(c);
    gw.stop();
}
