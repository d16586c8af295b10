//! Rate-limited logging of what clients do wrong.
//!
//! A flood of bad clients (garbage upgrades, bad tokens, undecodable frames, slow
//! readers, login storms that kick each other) must not flood the log. Each shard owns a
//! [`LogLimiter`] (`Cell`s, no locks): per [`Noisy`] kind, at most `log.warn_per_second`
//! lines a second get through; the rest are counted and reported by the shard's ticker
//! as one line, `N similar warnings suppressed in the last second`, with the kind's name.
//!
//! Call sites ask first and log themselves, so each keeps its own level and structured
//! fields: `if shard.log_limit.allow(Noisy::AuthFailed, now_ms) { warn!(...) }`.

use std::cell::Cell;
use tracing::warn;

/// Lines of one kind let through per shard per second by a default limiter (the
/// default of `log.warn_per_second`).
pub const PER_SECOND: u32 = 10;

/// Length of a limiter window, ms.
const WINDOW_MS: u64 = 1000;

/// The kinds of client misbehaviour that are logged, each limited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noisy {
    /// An upgrade refused for the client's fault (4xx: bad request, bad token, timeout).
    BadUpgrade,
    /// A token refused in an AUTH packet (close 4001).
    AuthFailed,
    /// A connection closed for what it sent (4004, 4005, 1009).
    BadFrames,
    /// A connection cut because it did not read its pushes (4009).
    SlowConsumer,
    /// A session kicked (multi-login or admin).
    Kick,
}

impl Noisy {
    const ALL: [Noisy; 5] = [Noisy::BadUpgrade, Noisy::AuthFailed, Noisy::BadFrames, Noisy::SlowConsumer, Noisy::Kick];

    /// The kind's name in the suppression line (`kind` field).
    pub fn name(self) -> &'static str {
        match self {
            Noisy::BadUpgrade => "bad_upgrade",
            Noisy::AuthFailed => "auth_failed",
            Noisy::BadFrames => "bad_frames",
            Noisy::SlowConsumer => "slow_consumer",
            Noisy::Kick => "kick",
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// Shard clock (ms) when the current window started.
    window_ms: Cell<u64>,
    /// Lines let through in the current window.
    emitted: Cell<u32>,
    /// Lines held back since the last report.
    suppressed: Cell<u64>,
}

/// One shard's limiter. Owned by the shard (`Rc<Shard>`), never shared.
#[derive(Debug)]
pub struct LogLimiter {
    /// Lines of one kind let through per window; 0 lets everything through.
    per_second: u32,
    slots: [Slot; Noisy::ALL.len()],
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(PER_SECOND)
    }
}

impl LogLimiter {
    /// A limiter letting `per_second` lines of each kind through (0: no limit).
    pub fn new(per_second: u32) -> Self {
        Self { per_second, slots: Default::default() }
    }

    /// True when a line of `kind` may be logged now; otherwise it is counted.
    pub fn allow(&self, kind: Noisy, now_ms: u64) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let slot = &self.slots[kind as usize];
        if now_ms.saturating_sub(slot.window_ms.get()) >= WINDOW_MS {
            slot.window_ms.set(now_ms);
            slot.emitted.set(0);
        }
        if slot.emitted.get() < self.per_second {
            slot.emitted.set(slot.emitted.get() + 1);
            true
        } else {
            slot.suppressed.set(slot.suppressed.get() + 1);
            false
        }
    }

    /// Reports, as one line per kind, what was held back in windows that are over.
    /// Called by the shard's ticker; returns how many lines were held back.
    pub fn flush(&self, shard: usize, now_ms: u64) -> u64 {
        let mut total = 0;
        for kind in Noisy::ALL {
            let slot = &self.slots[kind as usize];
            let suppressed = slot.suppressed.get();
            if suppressed == 0 || now_ms.saturating_sub(slot.window_ms.get()) < WINDOW_MS {
                continue;
            }
            slot.suppressed.set(0);
            total += suppressed;
            warn!(shard, kind = kind.name(), suppressed, "{suppressed} similar warnings suppressed in the last second");
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_few_through_per_second_and_counts_the_rest() {
        let l = LogLimiter::default();
        let through = (0..100).filter(|_| l.allow(Noisy::AuthFailed, 5)).count();
        assert_eq!(through, PER_SECOND as usize);
        assert!(l.allow(Noisy::BadFrames, 5), "kinds are limited separately");
        assert_eq!(l.flush(0, 500), 0, "nothing is reported before the window is over");
        assert_eq!(l.flush(0, 1005), 90);
        assert_eq!(l.flush(0, 3000), 0, "reported once");
        assert!(l.allow(Noisy::AuthFailed, 1006), "a new window lets lines through again");
    }

    #[test]
    fn zero_means_no_limit() {
        let l = LogLimiter::new(0);
        assert!((0..1000).all(|_| l.allow(Noisy::Kick, 5)));
        assert_eq!(l.flush(0, 5000), 0);
    }
}
