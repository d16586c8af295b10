//! The accept loop ([`Listener`]): owns the shard's listening socket and spawns one
//! connection task ([`conn::serve`]) per accepted socket.

use crate::conn;
use crate::metrics;
use crate::node::Phase;
use crate::shard::Shard;
use glommio::net::TcpListener;
use glommio::timer::Timer;
use std::rc::Rc;
use std::time::Duration;
use tracing::{debug, warn};

/// The accept loop: owns the shard's listener (and so its fd) until the shard's
/// lifecycle cancels it.
pub(super) struct Listener {
    pub(super) shard: Rc<Shard>,
    pub(super) listener: TcpListener,
}

impl Listener {
    /// Accepts until cancelled. Never ends by itself: while the node drains it keeps the
    /// listener, and so its fd, open until the shard's lifecycle has shut and cancelled
    /// it (a closed fd's number may by then belong to another socket).
    pub(super) async fn run(self) {
        let mut backing_off = false;
        loop {
            match self.listener.accept().await {
                Ok(stream) => {
                    backing_off = false;
                    let shard = self.shard.clone();
                    glommio::spawn_local(conn::serve(shard, stream)).detach();
                }
                Err(_) if self.shard.node().phase() == Phase::Draining => {
                    // `Gateway::shutdown` shut every shard's listener at once; this
                    // shard's lifecycle cancels the loop once it has its drain order.
                    Timer::new(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    let err = std::io::Error::from(e);
                    match err.raw_os_error() {
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                            // Out of descriptors or memory: accepting again at once would
                            // spin. Wait for connections to go away.
                            metrics::inc(&self.shard.metrics().accept_backoffs);
                            if !backing_off {
                                warn!(shard = self.shard.id(), cause = %err, "accept failed; backing off");
                                backing_off = true;
                            }
                            Timer::new(Duration::from_millis(100)).await;
                        }
                        _ => debug!(shard = self.shard.id(), cause = %err, "accept error"),
                    }
                }
            }
        }
    }
}
