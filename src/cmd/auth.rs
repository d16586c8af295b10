//! AUTH: authenticate a connection that upgraded without a token, and the session set-up
//! shared with the token-at-upgrade path ([`establish`]).

use super::{decode_body, Ctx};
use crate::auth::Identity;
use crate::close::CloseReason;
use crate::packet::{self, error_code};
use crate::proto::{AuthRequest, AuthResult, Command};
use crate::session::ConnHandle;
use crate::shard::Shard;
use std::rc::Rc;
use tracing::debug;

/// Decodes the body.
pub fn parse(body: &[u8]) -> Result<AuthRequest, CloseReason> {
    decode_body(body, "AUTH")
}

/// Verifies the token; a bad one closes with 4001.
pub fn apply(ctx: &Ctx<'_>, req: AuthRequest) -> Result<(), CloseReason> {
    if ctx.conn.is_authed() {
        ctx.conn.reply(packet::error(ctx.seq, error_code::ALREADY_AUTHENTICATED, "already authenticated"));
        return Ok(());
    }
    let identity = ctx.shard.node().verifier().verify(&req.token).map_err(|e| {
        ctx.shard.metrics().auth_failed(&e);
        debug!(shard = ctx.shard.id(), conn = ctx.conn.id.raw(), cause = %e, "AUTH refused");
        CloseReason::AuthFailed(e.to_string())
    })?;
    let platform = identity.platform.unwrap_or(req.platform);
    establish(ctx.shard, ctx.conn, identity, platform, ctx.seq);
    Ok(())
}

/// Makes `conn` a session of `identity`: session table, directory, multi-login kicks,
/// then the AUTH reply with `seq` (0 for a token given at the upgrade).
pub fn establish(shard: &Rc<Shard>, conn: &Rc<ConnHandle>, identity: Identity, platform: i32, seq: i64) {
    conn.user_id.set(identity.user_id);
    conn.platform.set(platform);
    tracing::Span::current().record("user_id", identity.user_id);
    shard.bind_session(conn);
    let node = shard.node();
    let result = AuthResult {
        user_id: identity.user_id,
        session_id: node.session_name(conn.id, platform).to_string(),
        gateway_id: node.gateway_id().to_string(),
        shard: shard.id() as u32,
        heartbeat_interval_s: node.config.connection.heartbeat_interval_s as u32,
        // `recovered`, `last_seq`, `epoch`: resume comes with reliable delivery.
        ..Default::default()
    };
    conn.reply(packet::frame(Command::Auth, seq, &result));
    debug!(shard = shard.id(), conn = conn.id.raw(), user_id = identity.user_id, platform, "authenticated");
}
