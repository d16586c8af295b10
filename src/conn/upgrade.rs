//! The upgrade phase of a connection: read the HTTP request (into the shard's scratch
//! buffer), run admission (drain, handshake rate, `max_connections`, per-IP cap), check
//! a token given at the upgrade, and hand the result to [`Connection::open`], or refuse
//! with an HTTP error. Lives in a boxed future of its own, freed once it completes (see
//! [`super::Serve`]).

use super::Connection;
use crate::auth::Identity;
use crate::logs::Noisy;
use crate::metrics;
use crate::node::{Admission, Phase};
use crate::shard::Shard;
use crate::ws::handshake::{self, Upgrade};
use crate::ws::origin;
use futures_lite::{AsyncRead, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// The upgrade phase: answers the HTTP upgrade and opens the connection, or refuses.
pub(super) async fn accept(shard: Rc<Shard>, mut stream: TcpStream) -> Option<Connection> {
    let upgraded = upgrade(&shard, &mut stream).await?;
    let id = shard.next_conn_id();
    // The peer's address is not kept (32 B per connection); it is logged once here, and
    // only looked up when this event is enabled.
    debug!(shard = shard.id(), conn = id.raw(), peer = ?stream.peer_addr().ok(), "upgraded");
    Some(Connection::open(shard, id, stream, upgraded))
}

/// What a completed upgrade hands to the connection.
pub(super) struct Upgraded {
    /// The parsed request.
    pub(super) upgrade: Upgrade,
    /// `Some` when a valid token came with the upgrade (verified once, in [`upgrade`]).
    pub(super) identity: Option<Identity>,
    /// Our slot under `max_connections`.
    pub(super) admission: Admission,
    /// Bytes the client sent after the request (early frames); usually empty.
    pub(super) leftover: Vec<u8>,
}

/// Reads and answers the HTTP upgrade. Returns `None` when the request was refused (the
/// answer is written) or the client vanished.
async fn upgrade(shard: &Rc<Shard>, stream: &mut TcpStream) -> Option<Upgraded> {
    let started = Instant::now();
    let cfg = shard.config();
    let timeout = Duration::from_millis(cfg.server.handshake_timeout_ms);
    let max = cfg.server.max_handshake_bytes;
    let request = futures_lite::future::or(read_request(shard, stream, max), async {
        Timer::new(timeout).await;
        Err(handshake::Reject { status: 408, reason: "handshake timeout" })
    })
    .await;
    let (upgrade, leftover) = match request {
        Ok(Some(ok)) => ok,
        Ok(None) => return None,
        Err(reject) => {
            refuse(shard, stream, reject.status, reject.reason, None).await;
            return None;
        }
    };
    // A browser page from a site not in `server.allowed_origins`: the client's fault,
    // refused before anything is counted against the limits below.
    if !origin::allows(&cfg.server.allowed_origins, upgrade.origin.as_deref()) {
        refuse(shard, stream, 403, "origin not allowed", None).await;
        return None;
    }
    let node = shard.node();
    if node.phase() == Phase::Draining {
        let retry = 1 + fastrand::u64(0..=cfg.server.drain_window_ms / 1000);
        refuse(shard, stream, 503, "draining", Some(retry)).await;
        return None;
    }
    // Cheapest check first: the shard's handshake bucket, before anything is counted
    // or verified.
    if !shard.admit_handshake() {
        refuse(shard, stream, 503, "handshake rate over the limit", Some(1 + fastrand::u64(0..3))).await;
        return None;
    }
    let Some(mut admission) = Admission::try_take(node) else {
        refuse(shard, stream, 503, "over capacity", Some(1 + fastrand::u64(0..5))).await;
        return None;
    };
    if node.per_ip.enabled() {
        // getpeername(2) only when the cap is on; the address is not kept.
        let counted = stream.peer_addr().map(|peer| admission.count_ip(peer.ip()));
        if !matches!(counted, Ok(true)) {
            drop(admission);
            refuse(shard, stream, 503, "too many connections from this address", Some(1 + fastrand::u64(0..5))).await;
            return None;
        }
    }
    // A token at the upgrade is checked before we switch protocols: a bad one is 401.
    let identity = match upgrade.token.as_deref().map(|t| node.verifier().verify(t)) {
        None => None,
        Some(Ok(identity)) => Some(identity),
        Some(Err(e)) => {
            shard.metrics().auth_failed(&e);
            refuse(shard, stream, 401, &e.to_string(), None).await;
            return None;
        }
    };
    // The 101 is not written here: `Connection::open` sends it together with the AUTH
    // result (one send, one wake-up of the client, instead of two).
    metrics::inc(&shard.metrics().handshakes);
    shard.metrics().handshake_latency.borrow_mut().record(started.elapsed().as_micros() as u64);
    Some(Upgraded { upgrade, identity, admission, leftover })
}

/// Reads until the request is complete. `Ok(None)`: the peer closed first.
///
/// Each read lands in the shard's scratch buffer (borrowed only inside one poll, never
/// across an await), and only the request's own bytes are copied out.
async fn read_request(
    shard: &Shard,
    stream: &mut TcpStream,
    max: usize,
) -> Result<Option<(Upgrade, Vec<u8>)>, handshake::Reject> {
    let mut buf = Vec::new();
    loop {
        let read = std::future::poll_fn(|cx| {
            let mut scratch = shard.scratch().borrow_mut();
            match Pin::new(&mut *stream).poll_read(cx, &mut scratch[..]) {
                Poll::Ready(Ok(n)) => {
                    buf.extend_from_slice(&scratch[..n]);
                    Poll::Ready(Ok(n))
                }
                other => other,
            }
        })
        .await;
        match read {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
        if let Some((upgrade, used)) = handshake::parse(&buf, max)? {
            buf.drain(..used);
            buf.shrink_to_fit();
            return Ok(Some((upgrade, buf)));
        }
    }
}

async fn refuse(shard: &Shard, stream: &mut TcpStream, status: u16, reason: &str, retry_after_s: Option<u64>) {
    shard.metrics().reject(status);
    // 503 is our own decision (capacity, drain) and comes in storms: debug only. The
    // rest is the client's fault: worth a warning, rate limited.
    if status != 503 && shard.log_limit().allow(Noisy::BadUpgrade, shard.now_ms()) {
        warn!(shard = shard.id(), status, reason, "upgrade refused");
    } else {
        debug!(shard = shard.id(), status, reason, "upgrade refused");
    }
    let _ = stream.write_all(&handshake::error_response(status, reason, retry_after_s)).await;
    let _ = stream.close().await;
}
