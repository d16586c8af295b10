//! Building outbound packets: a `Packet` around a body, encoded once straight into a
//! WebSocket frame (`Bytes`), ready to be shared by every recipient.

use crate::proto::{Command, Header, Packet};
use crate::ws::frame;
use bytes::Bytes;
use prost::Message;

/// Error codes carried in ERROR packets (`Error.code`), documented in docs/PROTOCOL.md.
pub mod error_code {
    /// The request's body did not make sense (e.g. UPSTREAM without a receiver).
    pub const BAD_REQUEST: i32 = 1;
    /// AUTH on a connection that is authenticated already.
    pub const ALREADY_AUTHENTICATED: i32 = 2;
    /// UPSTREAM could not be handed to the upstream bus (Redis unavailable).
    pub const UPSTREAM_UNAVAILABLE: i32 = 3;
    /// Too many requests; sustained abuse closes with 4004.
    pub const RATE_LIMITED: i32 = 4;
    /// Embedded mode: the receiver of an UPSTREAM is not online, nothing was delivered.
    pub const RECEIVER_OFFLINE: i32 = 5;
}

/// Encodes `body` as the body of a packet with `command` and `seq`, framed for the wire.
pub fn frame(command: Command, seq: i64, body: &impl Message) -> Bytes {
    let packet = Packet {
        header: Some(Header { command: command as i32, version: 1, client_id: String::new(), seq }),
        body: Bytes::from(body.encode_to_vec()),
    };
    let len = packet.encoded_len();
    frame::binary(len, |out| {
        // The buffer was sized with encoded_len: encoding cannot run out of room.
        packet.encode(out).expect("buffer sized by encoded_len");
    })
}

/// A packet with an empty body (HEARTBEAT replies).
pub fn empty(command: Command, seq: i64) -> Bytes {
    frame(command, seq, &())
}

/// An ERROR packet answering request `seq`.
pub fn error(seq: i64, code: i32, message: &str) -> Bytes {
    frame(Command::Error, seq, &crate::proto::Error { code, message: message.to_string() })
}

/// The KICK packet sent before a 4003 close.
pub fn kick(reason: &str) -> Bytes {
    frame(Command::Kick, 0, &crate::proto::Kick { reason: reason.to_string() })
}

/// Microseconds since the Unix epoch (`server_ts_us`).
pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}
