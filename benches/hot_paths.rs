//! Per-operation CPU of the gateway's hot paths, in user space (criterion):
//! what one handshake and one push cost before the kernel's share.
//!
//! `cargo bench --bench hot_paths`; figures and the date in BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use im_gateway::auth::{Minter, Verifier};
use im_gateway::config::AuthConfig;
use im_gateway::packet;
use im_gateway::proto::{Command, Header, Packet, PushMsg};
use im_gateway::ws::frame::{self, Decoder, FrameError, Message};
use im_gateway::ws::handshake;
use prost::Message as _;
use std::hint::black_box;

fn push_msg() -> PushMsg {
    PushMsg {
        msg_id: 1 << 40,
        sender_id: 42,
        receiver_id: 0,
        group_id: 0,
        r#type: 1,
        content: "x".repeat(64),
        server_ts_us: packet::now_us(),
        ..Default::default()
    }
}

fn handshake_path(c: &mut Criterion) {
    let auth = AuthConfig::default();
    let verifier = Verifier::from_config(&auth).expect("default key");
    let token = Minter::from_config(&auth).expect("default key").mint(1_000_001, Some(1), 3600);
    let request = format!(
        "GET /ws?token={token}&platform=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    c.bench_function("handshake/parse_upgrade_request", |b| {
        b.iter(|| black_box(handshake::parse(black_box(request.as_bytes()), 8192).ok()))
    });
    c.bench_function("handshake/verify_hs256_token", |b| b.iter(|| black_box(verifier.verify(black_box(&token)).ok())));
    c.bench_function("handshake/accept_response", |b| {
        b.iter(|| black_box(handshake::accept_response(black_box("dGhlIHNhbXBsZSBub25jZQ=="))))
    });
}

fn push_path(c: &mut Criterion) {
    let msg = push_msg();
    c.bench_function("push/encode_frame_once", |b| {
        b.iter(|| black_box(packet::frame(Command::Push, 0, black_box(&msg))))
    });
    let frame = packet::frame(Command::Push, 0, &msg);
    c.bench_function("push/share_frame_per_recipient", |b| b.iter(|| black_box(black_box(&frame).clone())));
}

fn inbound_path(c: &mut Criterion) {
    let heartbeat = Packet {
        header: Some(Header { command: Command::Heartbeat as i32, version: 1, client_id: String::new(), seq: 7 }),
        body: Default::default(),
    }
    .encode_to_vec();
    let wire = frame::client_frame(0x2, true, &heartbeat, [0x12, 0x34, 0x56, 0x78]);
    c.bench_function("inbound/decode_ws_frame_and_packet", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut buf| {
                let mut decoder = Decoder::default();
                decoder.decode(&mut buf, 1 << 20, |m| {
                    if let Message::Binary(p) = m {
                        black_box(Packet::decode(p).ok());
                    }
                    Ok::<(), FrameError>(())
                })
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, handshake_path, push_path, inbound_path);
criterion_main!(benches);
