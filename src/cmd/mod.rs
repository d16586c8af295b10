//! Inbound commands, one file each (`parse` the body, `apply` it). [`dispatch`] decodes
//! the packet, enforces "AUTH first", and routes by command. Handlers never touch
//! sockets or bytes on the wire: they queue replies on the connection and return
//! `Err(CloseReason)` when the connection must end.

pub mod ack;
pub mod auth;
pub mod heartbeat;
pub mod upstream;

use crate::close::CloseReason;
use crate::proto::{Command, Packet};
use crate::session::ConnHandle;
use crate::shard::Shard;
use prost::Message;
use std::rc::Rc;

/// What a handler gets.
pub struct Ctx<'a> {
    /// The shard the connection lives on.
    pub shard: &'a Rc<Shard>,
    /// The connection.
    pub conn: &'a Rc<ConnHandle>,
    /// The request's `seq`, echoed in replies.
    pub seq: i64,
}

/// Decodes one binary message as a `Packet` and applies it.
pub fn dispatch(shard: &Rc<Shard>, conn: &Rc<ConnHandle>, payload: &[u8]) -> Result<(), CloseReason> {
    let packet = Packet::decode(payload).map_err(|_| CloseReason::Protocol("packet does not decode".into()))?;
    let header = packet.header.ok_or_else(|| CloseReason::Protocol("packet without header".into()))?;
    let command = Command::try_from(header.command)
        .map_err(|_| CloseReason::Protocol(format!("unknown command {}", header.command)))?;
    let ctx = Ctx { shard, conn, seq: header.seq };
    if !conn.is_authed() && command != Command::Auth {
        return Err(CloseReason::Protocol(format!("{} before AUTH", command.as_str_name())));
    }
    let body = &packet.body[..];
    match command {
        Command::Auth => auth::apply(&ctx, auth::parse(body)?),
        Command::Heartbeat => heartbeat::apply(&ctx),
        Command::Ack => ack::apply(&ctx, ack::parse(body)?),
        Command::Upstream => upstream::apply(&ctx, upstream::parse(body)?),
        Command::Push | Command::Kick | Command::Error | Command::Unspecified => {
            Err(CloseReason::Protocol(format!("{} is not a client command", command.as_str_name())))
        }
    }
}

/// Decodes a command body, mapping failure to 4005.
fn decode_body<M: Message + Default>(body: &[u8], what: &str) -> Result<M, CloseReason> {
    M::decode(body).map_err(|_| CloseReason::Protocol(format!("{what} body does not decode")))
}
