//! Process limits: raise `RLIMIT_NOFILE`'s soft limit to the hard limit at start (logged),
//! and derive the connection cap from it.

use tracing::{info, warn};

/// File descriptors kept back for listeners, the admin API, logs and Redis.
pub const RESERVED_FDS: u64 = 64;

/// The open-file limits after raising: `(soft_before, soft_now, hard)`.
pub fn raise_nofile() -> (u64, u64, u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            warn!("getrlimit(RLIMIT_NOFILE) failed; assuming 1024");
            return (1024, 1024, 1024);
        }
        let before = lim.rlim_cur;
        let hard = lim.rlim_max;
        if lim.rlim_cur < hard {
            lim.rlim_cur = hard;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                warn!(soft = before, hard, "could not raise the open-file soft limit");
                return (before, before, hard);
            }
        }
        info!(soft_before = before, soft = hard, hard, "open-file limit");
        (before, hard, hard)
    }
}

/// `connection.max_connections`, or the open-file limit less [`RESERVED_FDS`] when 0; never
/// above that.
pub fn effective_max_connections(configured: usize, nofile: u64) -> usize {
    let ceiling = nofile.saturating_sub(RESERVED_FDS).max(1) as usize;
    match configured {
        0 => ceiling,
        n if n > ceiling => {
            warn!(configured = n, ceiling, "connection.max_connections is above the open-file limit; capping");
            ceiling
        }
        n => n,
    }
}
