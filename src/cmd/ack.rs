//! ACK: the client confirms delivery of pushes. The gateway keeps no message store, so
//! acknowledgements are counted (metrics) and otherwise left to the backend.

use super::{decode_body, Ctx};
use crate::close::CloseReason;
use crate::metrics;
use crate::proto::Ack;

/// Decodes the body.
pub fn parse(body: &[u8]) -> Result<Ack, CloseReason> {
    decode_body(body, "ACK")
}

/// Counts the acknowledged ids.
pub fn apply(ctx: &Ctx<'_>, ack: Ack) -> Result<(), CloseReason> {
    metrics::add(&ctx.shard.metrics().acks, ack.msg_ids.len() as u64);
    Ok(())
}
