//! When to try again: full-jitter exponential back-off, the server's hints, and the
//! rule for which endings are final. The one policy of this crate's [`Client`] (and of
//! `loadtest reconnect-storm`, which measures it).
//!
//! Full jitter (a delay uniform in `[0, min(max, initial * 2^attempt))`) spreads a crowd
//! of clients that lost the same gateway over the whole window instead of sending them
//! back in waves. The server's hints win when it gives them: `retry_after_ms=N` in the
//! reason of a 1001 close (drain), `Retry-After` on an HTTP 503 (over capacity).
//! Never again after 4001 (auth failed), 4003 (kicked), or an HTTP 401 with a token
//! that cannot change.
//!
//! [`Client`]: crate::Client

use std::time::Duration;

/// Close codes of the gateway (docs/PROTOCOL.md).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    /// No close frame: the socket just went (or the attempt failed).
    pub const ABNORMAL: u16 = 1006;
    pub const TOO_BIG: u16 = 1009;
    pub const AUTH_FAILED: u16 = 4001;
    pub const AUTH_TIMEOUT: u16 = 4002;
    pub const KICKED: u16 = 4003;
    pub const RATE_LIMITED: u16 = 4004;
    pub const PROTOCOL_ERROR: u16 = 4005;
    pub const IDLE_TIMEOUT: u16 = 4008;
    pub const TOO_SLOW: u16 = 4009;
}

/// Back-off settings.
#[derive(Debug, Clone)]
pub struct BackoffConfig {
    /// First window (default 1 s).
    pub initial: Duration,
    /// Largest window (default 30 s).
    pub max: Duration,
    /// A connection that lived this long resets the back-off (default 10 s); one that is
    /// accepted and dropped sooner keeps backing off.
    pub stable_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self { initial: Duration::from_secs(1), max: Duration::from_secs(30), stable_after: Duration::from_secs(10) }
    }
}

/// How a connection (or an attempt) ended, as far as the policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The server closed the WebSocket with this code and reason (1006: no close frame).
    Closed { code: u16, reason: String },
    /// The upgrade was answered with an HTTP status (and maybe Retry-After).
    Refused { status: u16, retry_after: Option<Duration> },
    /// Anything else: refused TCP, timeout, garbage, a socket error.
    Failed,
}

/// What set a delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Backoff,
    /// `retry_after_ms` of a 1001 close.
    RetryAfterMs,
    /// `Retry-After` of a 503.
    RetryAfter,
}

/// The decision after an ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Do not reconnect.
    Stop,
    After {
        delay: Duration,
        cause: Cause,
    },
}

/// The back-off state of one client.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    /// Failed attempts since the last stable connection.
    attempt: u32,
    /// Random source in [0, 1); tests pin it.
    random: fn() -> f64,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0, random: fastrand::f64 }
    }

    /// The same policy with a fixed random source (tests).
    pub fn with_random(config: BackoffConfig, random: fn() -> f64) -> Self {
        Self { config, attempt: 0, random }
    }

    /// Failed attempts since the last stable connection.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The window of the current attempt.
    pub fn window(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.config.initial.saturating_mul(factor).min(self.config.max).max(self.config.initial.min(self.config.max))
    }

    /// The next back-off delay (full jitter); counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.window().mul_f64((self.random)());
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(d.as_millis() as u64)
    }

    /// A server hint plus up to `spread` of jitter; counts the attempt too, so a server
    /// that keeps refusing still moves the back-off on.
    pub fn hinted(&mut self, hint: Duration, spread: Duration) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        hint + Duration::from_millis(spread.mul_f64((self.random)()).as_millis() as u64)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Decides what follows `ending`. `lived`: how long the connection had been
    /// authenticated (zero for a failed attempt); `token_fixed`: the token cannot
    /// change between attempts (so an HTTP 401 is final).
    pub fn decide(&mut self, ending: &Ending, lived: Duration, token_fixed: bool) -> Next {
        match ending {
            Ending::Closed { code: close::AUTH_FAILED | close::KICKED, .. } => return Next::Stop,
            Ending::Refused { status: 401, .. } if token_fixed => return Next::Stop,
            _ => {}
        }
        if lived >= self.config.stable_after {
            self.reset();
        }
        match ending {
            Ending::Closed { code: close::GOING_AWAY, reason } => match retry_after_ms(reason) {
                // The server spread its clients over the drain window already.
                Some(ms) => Next::After {
                    delay: self.hinted(Duration::from_millis(ms), Duration::ZERO),
                    cause: Cause::RetryAfterMs,
                },
                None => Next::After { delay: self.next_delay(), cause: Cause::Backoff },
            },
            // Retry-After has a resolution of seconds: spread over the second after it.
            Ending::Refused { status: 503, retry_after: Some(after) } => {
                Next::After { delay: self.hinted(*after, Duration::from_secs(1)), cause: Cause::RetryAfter }
            }
            _ => Next::After { delay: self.next_delay(), cause: Cause::Backoff },
        }
    }
}

/// `retry_after_ms=N` in a close reason (the gateway's drain hint).
pub fn retry_after_ms(reason: &str) -> Option<u64> {
    let at = reason.find("retry_after_ms=")? + "retry_after_ms=".len();
    reason[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// An HTTP `Retry-After` header in delta-seconds (the form the gateway sends).
pub fn retry_after_header(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            stable_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn full_jitter_windows_double_up_to_the_cap() {
        let mut b = Backoff::with_random(config(), || 0.999_999);
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [99, 199, 399, 799, 999, 999]);
        let mut b = Backoff::with_random(config(), || 0.0);
        assert_eq!(b.next_delay(), Duration::ZERO);
    }

    #[test]
    fn endings_decide_the_next_step() {
        let mut b = Backoff::with_random(config(), || 0.5);
        let closed = |code, reason: &str| Ending::Closed { code, reason: reason.into() };
        assert_eq!(b.decide(&closed(4001, ""), Duration::ZERO, false), Next::Stop);
        assert_eq!(b.decide(&closed(4003, "kicked"), Duration::from_secs(60), false), Next::Stop);
        assert_eq!(b.decide(&Ending::Refused { status: 401, retry_after: None }, Duration::ZERO, true), Next::Stop);
        assert!(matches!(
            b.decide(&Ending::Refused { status: 401, retry_after: None }, Duration::ZERO, false),
            Next::After { cause: Cause::Backoff, .. }
        ));
        assert_eq!(
            b.decide(&closed(1001, "going away; retry_after_ms=1234"), Duration::ZERO, true),
            Next::After { delay: Duration::from_millis(1234), cause: Cause::RetryAfterMs }
        );
        assert_eq!(
            b.decide(&Ending::Refused { status: 503, retry_after: Some(Duration::from_secs(2)) }, Duration::ZERO, true),
            Next::After { delay: Duration::from_millis(2500), cause: Cause::RetryAfter }
        );
        // Three attempts counted so far (the hints too; not the final endings).
        assert_eq!(b.attempt(), 3);
        // A stable connection resets it.
        assert_eq!(
            b.decide(&closed(1006, ""), Duration::from_secs(11), true),
            Next::After { delay: Duration::from_millis(50), cause: Cause::Backoff }
        );
    }

    #[test]
    fn hints_are_parsed() {
        assert_eq!(retry_after_ms("going away; retry_after_ms=1234"), Some(1234));
        assert_eq!(retry_after_ms("going away"), None);
        assert_eq!(retry_after_header(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(retry_after_header("soon"), None);
    }
}
