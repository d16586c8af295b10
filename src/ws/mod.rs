//! WebSocket on the wire, server side: the HTTP upgrade ([`handshake`]) and the frame
//! codec ([`frame`]). Neither knows about packets, sessions or sockets: they turn bytes
//! into requests and messages and back.

pub mod frame;
pub mod handshake;
