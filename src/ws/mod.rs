//! WebSocket on the wire, server side: the HTTP upgrade ([`handshake`]), the browser
//! origins it admits ([`origin`]) and the frame codec ([`frame`]). None knows about
//! packets, sessions or sockets: they turn bytes into requests and messages and back.

pub mod frame;
pub mod handshake;
pub mod origin;
