//! RFC 6455 framing for the server side.
//!
//! Header parsing and formatting are tungstenite's ([`FrameHeader`]); what is ours is the
//! buffer discipline: the decoder unmasks payloads in place in the caller's buffer and
//! hands out borrowed slices, keeping bytes only for a message split over several
//! frames. Outbound frames are built once as [`Bytes`] (server frames are not masked),
//! so one encoded PUSH is shared by every recipient of a fan-out.

use bytes::{BufMut, Bytes, BytesMut};
use std::io::Cursor;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// One complete inbound message.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A binary message (all fragments joined).
    Binary(&'a [u8]),
    /// A text message: not part of our protocol, the caller closes with 4005.
    Text,
    /// Ping with its payload, to be answered with a pong.
    Ping(&'a [u8]),
    /// Pong: counts as activity only.
    Pong,
    /// Close with the peer's code, if it sent one.
    Close(Option<u16>),
}

/// A frame that breaks the rules.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A message longer than the limit (close 1009).
    #[error("message of {0} bytes is over the limit")]
    TooBig(u64),
    /// Anything else malformed (close 4005).
    #[error("{0}")]
    Protocol(&'static str),
}

/// Per-connection decoder state: nothing but a fragment buffer that is empty (and
/// unallocated) unless a fragmented message is in flight.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Payload of a fragmented message so far.
    partial: Vec<u8>,
    /// Opcode of the fragmented message in flight.
    partial_op: Option<Data>,
}

impl Decoder {
    /// Decodes every complete frame at the front of `buf`, calling `on_message` for each
    /// complete message, and returns how many bytes were consumed. A frame whose
    /// declared length exceeds `max` fails before its payload is read.
    pub fn decode<E: From<FrameError>>(
        &mut self,
        buf: &mut [u8],
        max: usize,
        mut on_message: impl FnMut(Message<'_>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut pos = 0;
        loop {
            let mut cursor = Cursor::new(&buf[pos..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(pos),
                Err(_) => return Err(FrameError::Protocol("malformed frame header").into()),
            };
            let header_len = cursor.position() as usize;
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(FrameError::Protocol("reserved bits set").into());
            }
            let Some(mask) = header.mask else {
                return Err(FrameError::Protocol("client frame not masked").into());
            };
            if len.saturating_add(self.partial.len() as u64) > max as u64 {
                return Err(FrameError::TooBig(len).into());
            }
            let len = len as usize;
            if buf.len() - pos - header_len < len {
                return Ok(pos);
            }
            let start = pos + header_len;
            pos = start + len;
            let payload = &mut buf[start..pos];
            unmask(payload, mask);
            match header.opcode {
                OpCode::Control(ctl) => {
                    if !header.is_final || len > 125 {
                        return Err(FrameError::Protocol("bad control frame").into());
                    }
                    match ctl {
                        Control::Ping => on_message(Message::Ping(payload))?,
                        Control::Pong => on_message(Message::Pong)?,
                        Control::Close => {
                            let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                            on_message(Message::Close(code))?;
                            return Ok(pos);
                        }
                        Control::Reserved(_) => return Err(FrameError::Protocol("reserved opcode").into()),
                    }
                }
                OpCode::Data(Data::Continue) => {
                    let Some(op) = self.partial_op else {
                        return Err(FrameError::Protocol("continuation without a message").into());
                    };
                    self.partial.extend_from_slice(payload);
                    if header.is_final {
                        let whole = std::mem::take(&mut self.partial);
                        self.partial_op = None;
                        match op {
                            Data::Binary => on_message(Message::Binary(&whole))?,
                            _ => on_message(Message::Text)?,
                        }
                    }
                }
                OpCode::Data(op @ (Data::Binary | Data::Text)) => {
                    if self.partial_op.is_some() {
                        return Err(FrameError::Protocol("new message inside a fragmented one").into());
                    }
                    if !header.is_final {
                        self.partial_op = Some(op);
                        self.partial.extend_from_slice(payload);
                    } else if op == Data::Binary {
                        on_message(Message::Binary(payload))?;
                    } else {
                        on_message(Message::Text)?;
                    }
                }
                OpCode::Data(Data::Reserved(_)) => return Err(FrameError::Protocol("reserved opcode").into()),
            }
        }
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Size of a server (unmasked) frame header for a payload of `len` bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

fn put_header(out: &mut BytesMut, opcode: OpCode, len: usize) {
    let header = FrameHeader { is_final: true, rsv1: false, rsv2: false, rsv3: false, opcode, mask: None };
    let mut w = out.writer();
    // Writing into a BytesMut cannot fail.
    header.format(len as u64, &mut w).expect("format into memory");
}

/// A binary frame whose payload `write` produces (`len` bytes exactly).
pub fn binary(len: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(len) + len);
    put_header(&mut out, OpCode::Data(Data::Binary), len);
    write(&mut out);
    out.freeze()
}

/// A pong echoing `payload`.
pub fn pong(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + payload.len());
    put_header(&mut out, OpCode::Control(Control::Pong), payload.len());
    out.extend_from_slice(payload);
    out.freeze()
}

/// A close frame with `code` and `reason` (the reason is cut to fit 125 bytes).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut reason = &reason.as_bytes()[..reason.len().min(123)];
    while std::str::from_utf8(reason).is_err() {
        reason = &reason[..reason.len() - 1];
    }
    let len = 2 + reason.len();
    let mut out = BytesMut::with_capacity(2 + len);
    put_header(&mut out, OpCode::Control(Control::Close), len);
    out.put_u16(u16::from(CloseCode::from(code)));
    out.extend_from_slice(reason);
    out.freeze()
}

/// A client frame: `opcode` (with FIN when `fin`), masked with `mask`, as a client
/// sends it. The gateway never sends one; tests, benchmarks and fuzz seeds build their
/// input with it.
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut v = vec![opcode | if fin { 0x80 } else { 0 }];
    match payload.len() {
        n @ 0..=125 => v.push(0x80 | n as u8),
        n @ 126..=65535 => {
            v.push(0x80 | 126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            v.push(0x80 | 127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    v.extend_from_slice(&mask);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        super::client_frame(opcode, fin, payload, [1, 2, 3, 4])
    }

    fn collect(dec: &mut Decoder, buf: &mut [u8], max: usize) -> (Result<usize, FrameError>, Vec<String>) {
        let mut seen = Vec::new();
        let r = dec.decode(buf, max, |m| {
            seen.push(format!("{m:?}"));
            Ok::<(), FrameError>(())
        });
        (r, seen)
    }

    #[test]
    fn decodes_split_fragmented_and_control_frames() {
        let mut dec = Decoder::default();
        let mut wire = client_frame(0x2, false, b"hel");
        wire.extend(client_frame(0x9, true, b"p"));
        wire.extend(client_frame(0x0, true, b"lo"));
        wire.extend(client_frame(0x2, true, &[7; 300]));
        let split = wire.len() - 100;
        let (r, seen) = collect(&mut dec, &mut wire[..split], 1000);
        let used = r.unwrap();
        assert_eq!(seen, vec!["Ping([112])".to_string(), format!("Binary({:?})", b"hello")]);
        let mut rest = wire[used..].to_vec();
        let (r, seen) = collect(&mut dec, &mut rest, 1000);
        assert_eq!(r.unwrap(), rest.len());
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn rejects_oversize_unmasked_and_text() {
        let mut big = client_frame(0x2, true, &[0; 2000]);
        assert_eq!(collect(&mut Decoder::default(), &mut big[..20], 1000).0, Err(FrameError::TooBig(2000)));
        let mut unmasked = vec![0x82, 1, 0];
        assert!(matches!(collect(&mut Decoder::default(), &mut unmasked, 1000).0, Err(FrameError::Protocol(_))));
        let mut text = client_frame(0x1, true, b"hi");
        assert_eq!(collect(&mut Decoder::default(), &mut text, 1000).1, vec!["Text".to_string()]);
    }

    #[test]
    fn server_frames_are_unmasked_with_the_right_length() {
        let f = binary(300, |b| b.extend_from_slice(&[9; 300]));
        assert_eq!(&f[..4], &[0x82, 126, 1, 44]);
        assert_eq!(f.len(), 304);
        let c = close(4003, "kicked");
        assert_eq!(&c[..4], &[0x88, 8, 0x0f, 0xa3]);
    }
}
