//! Packet decoding and command dispatch: what a client's binary WebSocket messages do
//! to a shard. Input: one mode byte (bit 0: the connection is authenticated already,
//! as user 1; the other bits: its platform), then messages, each a 2-byte
//! little-endian length and that many bytes, dispatched in order to one connection
//! until one of them closes it. User 2 is online on the same shard, so UPSTREAMs to it
//! are delivered (embedded mode).

#![no_main]

use im_gateway::auth::Identity;
use im_gateway::cmd;
use im_gateway::config::Config;
use im_gateway::session::ConnHandle;
use im_gateway::node::Node;
use im_gateway::shard::Shard;
use libfuzzer_sys::fuzz_target;
use std::rc::Rc;

fn connect(shard: &Rc<Shard>) -> Rc<ConnHandle> {
    let conn = Rc::new(ConnHandle::new(shard.next_conn_id(), shard.now_ms()));
    shard.sessions().borrow_mut().insert(conn.clone());
    conn
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let mut config = Config::default();
    config.server.shards = 1;
    let node = Node::standalone(config).expect("default config has a key");
    let shard = Rc::new(Shard::new(0, node));
    let peer = connect(&shard);
    cmd::auth::establish(&shard, &peer, Identity { user_id: 2, platform: Some(1) }, 1, 0);
    let conn = connect(&shard);
    if mode & 1 == 1 {
        let platform = i32::from(mode >> 1);
        cmd::auth::establish(&shard, &conn, Identity { user_id: 1, platform: Some(platform) }, platform, 0);
    }
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let (message, tail) = rest[2..].split_at(len.min(rest.len() - 2));
        rest = tail;
        if cmd::dispatch(&shard, &conn, message).is_err() {
            break;
        }
    }
});
