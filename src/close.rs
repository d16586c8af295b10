//! Why a connection ends, and the one mapping from reason to WebSocket close code.
//!
//! Everything that ends a client connection becomes a [`CloseReason`]; the connection
//! writes the matching close frame. Codes are pinned by the public contract.

use std::fmt;

/// The reasons a server closes a client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// 4001: the token in an AUTH packet was rejected.
    AuthFailed(String),
    /// 4002: no AUTH within `auth.auth_timeout_ms`.
    AuthTimeout,
    /// 4003: replaced by another login, or kicked by an admin.
    Kicked(String),
    /// 4004: rate limited.
    RateLimited,
    /// 4005: undecodable packet, text frame, or a command before AUTH.
    Protocol(String),
    /// 4008: no inbound frame for `connection.idle_timeout_s`.
    IdleTimeout,
    /// 4009: the client's outbound queue overflowed.
    TooSlow,
    /// 1001: drain or shutdown; the client should come back after `retry_after_ms`.
    GoingAway { retry_after_ms: u64 },
    /// 1009: a message over `connection.max_frame_bytes`.
    TooBig,
    /// 1000: the client closed, we answer in kind.
    Normal,
}

impl CloseReason {
    /// The WebSocket close code.
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::AuthFailed(_) => 4001,
            CloseReason::AuthTimeout => 4002,
            CloseReason::Kicked(_) => 4003,
            CloseReason::RateLimited => 4004,
            CloseReason::Protocol(_) => 4005,
            CloseReason::IdleTimeout => 4008,
            CloseReason::TooSlow => 4009,
            CloseReason::GoingAway { .. } => 1001,
            CloseReason::TooBig => 1009,
            CloseReason::Normal => 1000,
        }
    }

    /// The close frame's reason text (at most 123 bytes, as the RFC allows).
    pub fn text(&self) -> String {
        let mut text = match self {
            CloseReason::AuthFailed(why) => format!("auth failed: {why}"),
            CloseReason::AuthTimeout => "auth timeout".into(),
            CloseReason::Kicked(why) => format!("kicked: {why}"),
            CloseReason::RateLimited => "rate limited".into(),
            CloseReason::Protocol(why) => format!("protocol error: {why}"),
            CloseReason::IdleTimeout => "idle timeout".into(),
            CloseReason::TooSlow => "too slow: outbound queue overflow".into(),
            CloseReason::GoingAway { retry_after_ms } => format!("going away; retry_after_ms={retry_after_ms}"),
            CloseReason::TooBig => "message too big".into(),
            CloseReason::Normal => String::new(),
        };
        if text.len() > 123 {
            let mut cut = 123;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        text
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_contract() {
        let cases = [
            (CloseReason::AuthFailed("x".into()), 4001),
            (CloseReason::AuthTimeout, 4002),
            (CloseReason::Kicked("x".into()), 4003),
            (CloseReason::RateLimited, 4004),
            (CloseReason::Protocol("x".into()), 4005),
            (CloseReason::IdleTimeout, 4008),
            (CloseReason::TooSlow, 4009),
            (CloseReason::GoingAway { retry_after_ms: 5 }, 1001),
            (CloseReason::TooBig, 1009),
        ];
        for (reason, code) in cases {
            assert_eq!(reason.code(), code, "{reason:?}");
        }
        assert!(CloseReason::GoingAway { retry_after_ms: 1234 }.text().contains("retry_after_ms=1234"));
        assert!(CloseReason::Kicked("é".repeat(100)).text().len() <= 123);
    }
}
