//! UPSTREAM: a client sends a message. In cluster mode it goes to the upstream bus
//! (`XADD {prefix}upstream`, on the control plane); the answer, UPSTREAM with the stream
//! id as `bus_id` or ERROR UPSTREAM_UNAVAILABLE, both with the request's `seq`, comes
//! back through the shard's inbox. Embedded mode (no Redis) delivers it straight to
//! `receiver_id`'s connections on this node as a PUSH with `sender_id` = the sender,
//! and answers with an `UpstreamResult` whose `bus_id` is `local-<msg_id>`. A receiver
//! that is not online gets nothing, and the sender an ERROR (RECEIVER_OFFLINE): nothing
//! is dropped silently. Each connection has a token bucket (`upstream_rate_per_s`,
//! `upstream_burst`): over it, ERROR RATE_LIMITED with the request's `seq`; after
//! `rate_limit_strikes` refusals in a row, close 4004.

use super::{decode_body, Ctx};
use crate::close::CloseReason;
use crate::metrics;
use crate::packet::{self, error_code};
use crate::proto::{Command, PushMsg, UpstreamMsg, UpstreamResult};

/// Decodes the body.
pub fn parse(body: &[u8]) -> Result<UpstreamMsg, CloseReason> {
    decode_body(body, "UPSTREAM")
}

/// Delivers the message (embedded mode) and answers the sender.
pub fn apply(ctx: &Ctx<'_>, msg: UpstreamMsg) -> Result<(), CloseReason> {
    metrics::inc(&ctx.shard.metrics().upstream);
    let c = &ctx.shard.config().connection;
    if let Err(strikes) = ctx.conn.take_token(ctx.shard.now_ms(), c.upstream_rate_per_s, c.upstream_burst) {
        if strikes >= c.rate_limit_strikes {
            return Err(CloseReason::RateLimited);
        }
        ctx.conn.reply(packet::error(ctx.seq, error_code::RATE_LIMITED, "rate limited: slow down"));
        return Ok(());
    }
    let registry = ctx.shard.node().registry();
    if registry.has_bus() {
        let job = crate::registry::UpstreamJob {
            user: ctx.conn.user_id.get(),
            session: ctx.conn.id,
            platform: ctx.conn.platform.get(),
            seq: ctx.seq,
            body: prost::Message::encode_to_vec(&msg),
        };
        if let Err(why) = registry.upstream(job) {
            metrics::inc(&ctx.shard.metrics().drops);
            ctx.conn.reply(packet::error(ctx.seq, error_code::UPSTREAM_UNAVAILABLE, &why.to_string()));
        }
        return Ok(());
    }
    if msg.receiver_id <= 0 {
        ctx.conn.reply(packet::error(
            ctx.seq,
            error_code::BAD_REQUEST,
            "receiver_id required: this node has no upstream bus (embedded mode)",
        ));
        return Ok(());
    }
    let msg_id = ctx.shard.next_msg_id();
    let push = PushMsg {
        msg_id,
        sender_id: ctx.conn.user_id.get(),
        receiver_id: msg.receiver_id,
        group_id: msg.group_id,
        r#type: msg.r#type,
        content: msg.content,
        server_ts_us: packet::now_us(),
        // `seq`: per-user sequence numbers come with reliable delivery; 0 until then.
        ..Default::default()
    };
    if !ctx.shard.push(&[msg.receiver_id], &push).here[0] {
        ctx.conn.reply(packet::error(
            ctx.seq,
            error_code::RECEIVER_OFFLINE,
            "receiver is not online; nothing was delivered",
        ));
        return Ok(());
    }
    let result = UpstreamResult { bus_id: format!("local-{msg_id}") };
    ctx.conn.reply(packet::frame(Command::Upstream, ctx.seq, &result));
    Ok(())
}
