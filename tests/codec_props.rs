//! Property tests of the codecs: WebSocket frames (client frames decoded whole and in
//! any split, server frames read back) and packets (protobuf round trips, and a packet
//! framed by `packet::frame` read back as a client would).

use bytes::Bytes;
use im_gateway::packet;
use im_gateway::proto::{Command, Header, Packet, PushMsg};
use im_gateway::ws::frame::{self, client_frame, Decoder, FrameError, Message};
use proptest::prelude::*;
use prost::Message as _;
use std::io::Cursor;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

const MAX: usize = 1 << 20;

/// A client message, as the test generates it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    /// A binary message sent in these fragments (one = unfragmented).
    Binary(Vec<Vec<u8>>),
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

/// What the decoder should report for it.
fn expected(m: &Sent) -> String {
    match m {
        Sent::Binary(parts) => format!("{:?}", Message::Binary(&parts.concat())),
        Sent::Text(_) => format!("{:?}", Message::Text),
        Sent::Ping(p) => format!("{:?}", Message::Ping(p)),
        Sent::Pong(_) => format!("{:?}", Message::Pong),
    }
}

fn encode(m: &Sent, mask: [u8; 4]) -> Vec<u8> {
    match m {
        Sent::Binary(parts) => {
            let last = parts.len() - 1;
            parts
                .iter()
                .enumerate()
                .flat_map(|(i, p)| client_frame(if i == 0 { 0x2 } else { 0x0 }, i == last, p, mask))
                .collect()
        }
        Sent::Text(p) => client_frame(0x1, true, p, mask),
        Sent::Ping(p) => client_frame(0x9, true, p, mask),
        Sent::Pong(p) => client_frame(0xA, true, p, mask),
    }
}

fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    // Mostly short, sometimes across the 125 / 65535 length-encoding boundaries.
    prop_oneof![
        12 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => proptest::collection::vec(any::<u8>(), 65_530..65_545),
    ]
    .prop_map(move |mut v| {
        v.truncate(max);
        v
    })
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        4 => proptest::collection::vec(payload(usize::MAX), 1..4).prop_map(Sent::Binary),
        1 => payload(200).prop_map(Sent::Text),
        1 => payload(125).prop_map(Sent::Ping),
        1 => payload(125).prop_map(Sent::Pong),
    ]
}

/// Feeds `wire` in pieces cut at `cuts` the way `conn.rs` does: decode what is there,
/// carry the undecoded tail over to the next read.
fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<Vec<String>, FrameError> {
    let mut dec = Decoder::default();
    let mut seen = Vec::new();
    let mut pending = Vec::new();
    let mut at = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(wire.len());
    for end in bounds {
        pending.extend_from_slice(&wire[at..end.max(at)]);
        at = end.max(at);
        let used = dec.decode(&mut pending, MAX, |m| {
            seen.push(format!("{m:?}"));
            Ok::<_, FrameError>(())
        })?;
        pending.drain(..used);
    }
    assert!(pending.is_empty(), "{} bytes left undecoded", pending.len());
    Ok(seen)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Encoded client messages decode to the same messages, whole or split anywhere.
    #[test]
    fn ws_client_frames_round_trip_in_any_split(
        messages in proptest::collection::vec(sent(), 1..6),
        mask in any::<[u8; 4]>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let wire: Vec<u8> = messages.iter().flat_map(|m| encode(m, mask)).collect();
        let want: Vec<String> = messages.iter().map(expected).collect();
        prop_assert_eq!(decode_in_pieces(&wire, &[]).unwrap(), want.clone());
        prop_assert_eq!(decode_in_pieces(&wire, &cuts).unwrap(), want);
    }

    /// Byte-at-a-time feeding, the worst split, on short streams.
    #[test]
    fn ws_client_frames_one_byte_at_a_time(
        messages in proptest::collection::vec(sent().prop_filter("short", |m| encode(m, [0; 4]).len() < 600), 1..4),
        mask in any::<[u8; 4]>(),
    ) {
        let wire: Vec<u8> = messages.iter().flat_map(|m| encode(m, mask)).collect();
        let cuts: Vec<usize> = (1..wire.len()).collect();
        let want: Vec<String> = messages.iter().map(expected).collect();
        prop_assert_eq!(decode_in_pieces(&wire, &cuts).unwrap(), want);
    }

    /// Server frames (binary, pong, close) read back with their payload, unmasked.
    #[test]
    fn ws_server_frames_read_back(body in payload(usize::MAX), code in 1000u16..5000, reason in ".{0,80}") {
        let f = frame::binary(body.len(), |out| out.extend_from_slice(&body));
        let (header, len, rest) = read_server_frame(&f);
        prop_assert_eq!(header.opcode, OpCode::Data(Data::Binary));
        prop_assert_eq!(len as usize, body.len());
        prop_assert_eq!(rest, &body[..]);

        let ping = &body[..body.len().min(125)];
        let pong = frame::pong(ping);
        let (header, _, rest) = read_server_frame(&pong);
        prop_assert_eq!(header.opcode, OpCode::Control(Control::Pong));
        prop_assert_eq!(rest, ping);

        let c = frame::close(code, &reason);
        let (header, len, rest) = read_server_frame(&c);
        prop_assert_eq!(header.opcode, OpCode::Control(Control::Close));
        prop_assert!(len <= 125);
        prop_assert_eq!(u16::from_be_bytes([rest[0], rest[1]]), code);
        let text = std::str::from_utf8(&rest[2..]).expect("close reason stays UTF-8");
        prop_assert!(reason.starts_with(text));
    }

    /// Packets survive a protobuf round trip.
    #[test]
    fn packets_round_trip(
        command in 0i32..8, version in any::<i32>(), client_id in ".{0,20}", seq in any::<i64>(),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let p = Packet { header: Some(Header { command, version, client_id, seq }), body: Bytes::from(body) };
        prop_assert_eq!(Packet::decode(&p.encode_to_vec()[..]).unwrap(), p);
    }

    /// A server packet framed once by `packet::frame` is one binary frame whose payload
    /// decodes to the same header and body.
    #[test]
    fn framed_packets_read_back(
        seq in any::<i64>(), msg_id in any::<i64>(), sender_id in any::<i64>(), receiver_id in any::<i64>(),
        group_id in any::<i64>(), kind in any::<i32>(), content in ".{0,400}", server_ts_us in any::<i64>(),
    ) {
        let msg = PushMsg { msg_id, sender_id, receiver_id, group_id, r#type: kind, content, server_ts_us, ..Default::default() };
        let f = packet::frame(Command::Push, seq, &msg);
        let (header, len, rest) = read_server_frame(&f);
        prop_assert_eq!(header.opcode, OpCode::Data(Data::Binary));
        prop_assert_eq!(len as usize, rest.len());
        let p = Packet::decode(rest).unwrap();
        let h = p.header.unwrap();
        prop_assert_eq!((h.command, h.seq), (Command::Push as i32, seq));
        prop_assert_eq!(PushMsg::decode(p.body).unwrap(), msg);
    }
}

/// Parses one unmasked frame that fills `f` exactly.
fn read_server_frame(f: &[u8]) -> (FrameHeader, u64, &[u8]) {
    let mut cursor = Cursor::new(f);
    let (header, len) = FrameHeader::parse(&mut cursor).unwrap().expect("a complete header");
    assert!(header.is_final && header.mask.is_none());
    let rest = &f[cursor.position() as usize..];
    assert_eq!(rest.len() as u64, len, "the frame is exactly header + payload");
    (header, len, rest)
}
