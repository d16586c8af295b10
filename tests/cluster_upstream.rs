//! UPSTREAM in cluster mode on a real Redis: `XADD {p}upstream` with the contract's
//! fields, the stream id returned as `bus_id` with the request's `seq`, the stream kept
//! near `cluster.upstream_maxlen`; and when Redis cannot take it, ERROR 3
//! (UPSTREAM_UNAVAILABLE) with the request's `seq`.

mod common;
use common::cluster::*;
use common::*;
use im_gateway::proto::{self, Command, UpstreamMsg};
use prost::Message as _;
use redis::Commands;

fn msg(content: &str) -> UpstreamMsg {
    UpstreamMsg { receiver_id: 0, group_id: 77, r#type: 1, content: content.into(), client_msg_id: "c-1".into() }
}

/// Sends UPSTREAM `seq` and returns the answer's (command, body).
async fn upstream(c: &mut Client, seq: i64, m: &UpstreamMsg) -> (i32, bytes::Bytes) {
    c.send(Command::Upstream, seq, m).await;
    let p = c.recv().await;
    let h = p.header.unwrap();
    assert_eq!(h.seq, seq, "answer carries the request's seq");
    (h.command, p.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_goes_to_the_stream_and_the_stream_id_comes_back() {
    let redis = Redis::shared();
    let p = prefix("up");
    let a = node(&redis, &p, "A", |c| {
        c.cluster.upstream_maxlen = 10;
        c.connection.upstream_burst = 1000;
        c.connection.upstream_rate_per_s = 1000;
    });
    wait_ready(&a).await;
    let (mut c, r) = Client::login(a.ws_addr(), &token(&a, 4001, Some(3))).await;
    let sent = msg("to the bus");
    let (command, body) = upstream(&mut c, 11, &sent).await;
    assert_eq!(command, Command::Upstream as i32);
    let bus_id = proto::UpstreamResult::decode(body).unwrap().bus_id;

    let mut conn = redis.conn();
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(format!("{p}upstream")).unwrap();
    let entry = &entries.ids[0];
    assert_eq!(entry.id, bus_id);
    let field = |k: &str| -> Vec<u8> { redis::from_redis_value(entry.map[k].clone()).unwrap() };
    assert_eq!(field("uid"), b"4001");
    assert_eq!(field("gateway"), b"A");
    assert_eq!(field("session"), r.session_id.as_bytes());
    assert_eq!(field("platform"), b"3");
    assert_eq!(UpstreamMsg::decode(&field("packet")[..]).unwrap(), sent);

    // MAXLEN ~ 10 trims whole stream nodes: far fewer than we add remain.
    for seq in 100..400 {
        let (command, _) = upstream(&mut c, seq, &msg("more")).await;
        assert_eq!(command, Command::Upstream as i32);
    }
    let len: usize = conn.xlen(format!("{p}upstream")).unwrap();
    assert!(len < 300, "stream capped near upstream_maxlen: {len}");
    drop(c);
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_upstream_gets_error_3_with_its_seq() {
    let mut redis = Redis::own();
    let p = prefix("updown");
    let a = ready_node(&redis, &p, "A").await;
    let (mut c, _) = Client::login(a.ws_addr(), &token(&a, 4002, Some(1))).await;
    let (command, _) = upstream(&mut c, 1, &msg("before")).await;
    assert_eq!(command, Command::Upstream as i32);
    redis.kill();
    // Whether the node has noticed yet or the XADD fails on the dead connection, the
    // answer is ERROR 3 with the same seq; nothing is dropped silently.
    for seq in 2..5 {
        let (command, body) = upstream(&mut c, seq, &msg("lost?")).await;
        assert_eq!(command, Command::Error as i32);
        assert_eq!(proto::Error::decode(body).unwrap().code, 3);
    }
    c.heartbeat(9).await;
    drop(c);
    a.stop();
}
