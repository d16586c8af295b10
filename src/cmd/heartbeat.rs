//! HEARTBEAT: the client says it is alive; we answer with the same `seq`. The activity
//! itself was recorded when the frame arrived.

use super::Ctx;
use crate::close::CloseReason;
use crate::metrics;
use crate::packet;
use crate::proto::Command;

/// Answers HEARTBEAT with the same `seq`.
pub fn apply(ctx: &Ctx<'_>) -> Result<(), CloseReason> {
    metrics::inc(&ctx.shard.metrics().heartbeats);
    ctx.conn.reply(packet::empty(Command::Heartbeat, ctx.seq));
    Ok(())
}
