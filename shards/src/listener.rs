//! `SO_REUSEPORT` listener groups: one socket per shard on one port, so the kernel
//! spreads connections over shards and pins each to one shard for its life.
//!
//! Joining a reuse-port group is a decision, not an accident: a stale process bound to
//! the same port would silently take half the connections. [`bind_reuseport`] first
//! binds a plain probe socket (no `SO_REUSEPORT`) to the address; the kernel refuses it
//! when anybody listens there, reuse-port group or not, and we refuse to start.
//! Deliberate hand-over (zero-downtime restart) passes `join_existing = true`.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};

/// Why a listener group could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Something already listens on the address (maybe a stale process in a
    /// `SO_REUSEPORT` group).
    #[error("{addr} is already in use (another process listens there, maybe a stale im-gateway in the same SO_REUSEPORT group)")]
    InUse { addr: SocketAddr },
    /// Any other socket error, with the step that failed.
    #[error("{step} on {addr}: {source}")]
    Io {
        step: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The sockets of one group: raw fds, each to be adopted by exactly one shard with
/// `glommio::net::TcpListener::from_raw_fd`. Fds not taken are closed on drop.
#[derive(Debug)]
pub struct Listeners {
    /// The bound address (with the real port when the caller asked for port 0).
    pub local_addr: SocketAddr,
    fds: Vec<Option<RawFd>>,
}

impl Listeners {
    /// Takes shard `i`'s fd; the caller owns it from now on. `None` if taken already.
    pub fn take(&mut self, i: usize) -> Option<RawFd> {
        self.fds.get_mut(i).and_then(Option::take)
    }

    /// How many sockets the group has.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// True when the group has no sockets.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for fd in self.fds.iter_mut().filter_map(Option::take) {
            // SAFETY: we own every fd still in the vector; nobody else closes it.
            unsafe { libc::close(fd) };
        }
    }
}

/// Binds `count` listening sockets with `SO_REUSEPORT` on `addr` (port 0 picks one free
/// port for the whole group) with the given `backlog`.
///
/// Unless `join_existing`, refuses with [`ListenError::InUse`] when anything listens on
/// `addr` already.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
    join_existing: bool,
) -> Result<Listeners, ListenError> {
    let io = |step: &'static str, addr: SocketAddr| move |source| ListenError::Io { step, addr, source };
    if addr.port() != 0 && !join_existing {
        probe_free(addr)?;
    }
    let mut bound = addr;
    let mut group = Listeners { local_addr: addr, fds: Vec::new() };
    for _ in 0..count.max(1) {
        let socket =
            Socket::new(Domain::for_address(bound), Type::STREAM, Some(Protocol::TCP)).map_err(io("socket", bound))?;
        socket.set_reuse_address(true).map_err(io("SO_REUSEADDR", bound))?;
        socket.set_reuse_port(true).map_err(io("SO_REUSEPORT", bound))?;
        socket.set_nonblocking(true).map_err(io("O_NONBLOCK", bound))?;
        socket.set_tcp_nodelay(true).map_err(io("TCP_NODELAY", bound))?;
        socket.bind(&bound.into()).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                ListenError::InUse { addr: bound }
            } else {
                ListenError::Io { step: "bind", addr: bound, source }
            }
        })?;
        socket.listen(backlog).map_err(io("listen", bound))?;
        if bound.port() == 0 {
            bound = socket.local_addr().map_err(io("getsockname", bound))?.as_socket().unwrap_or(bound);
        }
        // Pushed at once so that a later failure closes it in `Drop`.
        group.fds.push(Some(socket.into_raw_fd()));
    }
    group.local_addr = bound;
    Ok(group)
}

/// Binds (without listening) a socket that does not ask for `SO_REUSEPORT`: the kernel
/// refuses it while any socket, reuse-port or not, is bound to the address.
fn probe_free(addr: SocketAddr) -> Result<(), ListenError> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|source| ListenError::Io { step: "socket", addr, source })?;
    // SO_REUSEADDR lets us ignore TIME_WAIT leftovers of a previous run, but not a
    // live listener.
    socket.set_reuse_address(true).map_err(|source| ListenError::Io { step: "SO_REUSEADDR", addr, source })?;
    match socket.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ListenError::InUse { addr }),
        Err(source) => Err(ListenError::Io { step: "bind", addr, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_shares_one_port_and_refuses_a_second_group() {
        let first = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2, 128, false).unwrap();
        assert_eq!(first.len(), 2);
        let port = first.local_addr.port();
        assert_ne!(port, 0);
        let again = bind_reuseport(first.local_addr, 2, 128, false);
        assert!(matches!(again, Err(ListenError::InUse { .. })), "{again:?}");
        let joined = bind_reuseport(first.local_addr, 1, 128, true).unwrap();
        assert_eq!(joined.local_addr.port(), port);
    }
}
