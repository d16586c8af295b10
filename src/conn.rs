//! One client connection, from accept to close: the upgrade ([`serve`]), then the
//! connection state machine ([`Connection`]) that moves bytes between the socket and
//! the command handlers.
//!
//! Buffers: a read lands in the shard's scratch buffer and is decoded there; only the
//! tail of a frame split across reads is copied into the connection's own `inbuf`,
//! which is freed as soon as it is consumed. Outbound frames are shared `Bytes` in the
//! connection's [`Outbox`](crate::session::Outbox). An idle connection holds no buffer.
//!
//! One task per connection waits on three things at once: the socket turning readable,
//! room to write queued frames, and its [`ConnHandle`] being poked (a push, a kick, a
//! deadline from the shard's ticker).

use crate::auth::Identity;
use crate::close::CloseReason;
use crate::cmd;
use crate::logs::Noisy;
use crate::metrics;
use crate::session::ConnHandle;
use crate::shard::{Admission, Shard};
use crate::ws::frame::{self, Decoder, FrameError, Message};
use crate::ws::handshake::{self, Upgrade};
use crate::ws::origin;
use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use std::future::Future;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tracing::{debug, info_span, warn, Span};

/// Serves one accepted socket until it closes: the future of the connection's task.
pub fn serve(shard: Rc<Shard>, stream: TcpStream) -> Serve {
    Serve::Upgrading(Box::pin(accept(shard, stream)))
}

/// The connection's task. glommio allocates the whole future for as long as the task
/// lives, so its size is what every idle connection pays. The upgrade (request bytes,
/// parsed headers, token) is a boxed future of its own, freed when it completes; what
/// stays is the [`Connection`]. (One `async fn` for both phases would be the size of
/// the largest state across its await points, the upgrade's included: 1.7 KB.)
// The large variant is the point: the connection lives inline in the task's allocation.
// Boxing it, as the lint suggests, would only add a second allocation per connection.
#[allow(clippy::large_enum_variant)]
pub enum Serve {
    /// Reading and answering the HTTP upgrade.
    Upgrading(Pin<Box<dyn Future<Output = Option<Connection>>>>),
    /// Upgraded: serving WebSocket frames.
    Open(Connection),
    /// Over.
    Done,
}

impl Future for Serve {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this {
                Serve::Upgrading(upgrading) => match upgrading.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(connection)) => *this = Serve::Open(connection),
                    Poll::Ready(None) => *this = Serve::Done,
                },
                Serve::Open(connection) => {
                    if connection.poll_run(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *this = Serve::Done;
                }
                Serve::Done => return Poll::Ready(()),
            }
        }
    }
}

/// The upgrade phase: answers the HTTP upgrade and opens the connection, or refuses.
async fn accept(shard: Rc<Shard>, mut stream: TcpStream) -> Option<Connection> {
    let upgraded = upgrade(&shard, &mut stream).await?;
    let id = shard.next_conn_id();
    // The peer's address is not kept (32 B per connection); it is logged once here, and
    // only looked up when this event is enabled.
    debug!(shard = shard.id, conn = id, peer = ?stream.peer_addr().ok(), "upgraded");
    Some(Connection::open(shard, id, stream, upgraded))
}

/// What a completed upgrade hands to the connection.
struct Upgraded {
    /// The parsed request.
    upgrade: Upgrade,
    /// `Some` when a valid token came with the upgrade (verified once, in [`upgrade`]).
    identity: Option<Identity>,
    /// Our slot under `max_connections`.
    admission: Admission,
    /// Bytes the client sent after the request (early frames); usually empty.
    leftover: Vec<u8>,
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
    let node = &shard.node;
    if shard.draining.get() || node.draining.load(Ordering::Relaxed) {
        let retry = 1 + fastrand::u64(0..=cfg.server.drain_window_ms / 1000);
        refuse(shard, stream, 503, "draining", Some(retry)).await;
        return None;
    }
    // Cheapest check first: the shard's handshake bucket, before anything is counted
    // or verified.
    if !shard.handshake_bucket.try_take(shard.now_ms()) {
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
    let identity = match upgrade.token.as_deref().map(|t| node.verifier.verify(t)) {
        None => None,
        Some(Ok(identity)) => Some(identity),
        Some(Err(e)) => {
            shard.metrics.auth_failed(&e);
            refuse(shard, stream, 401, &e.to_string(), None).await;
            return None;
        }
    };
    // The 101 is not written here: `Connection::open` sends it together with the AUTH
    // result (one send, one wake-up of the client, instead of two).
    metrics::inc(&shard.metrics.handshakes);
    shard.metrics.handshake_latency.borrow_mut().record(started.elapsed().as_micros() as u64);
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
            let mut scratch = shard.scratch.borrow_mut();
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
    shard.metrics.reject(status);
    // 503 is our own decision (capacity, drain) and comes in storms: debug only. The
    // rest is the client's fault: worth a warning, rate limited.
    if status != 503 && shard.log_limit.allow(Noisy::BadUpgrade, shard.now_ms()) {
        warn!(shard = shard.id, status, reason, "upgrade refused");
    } else {
        debug!(shard = shard.id, status, reason, "upgrade refused");
    }
    let _ = stream.write_all(&handshake::error_response(status, reason, retry_after_s)).await;
    let _ = stream.close().await;
}

/// What woke the connection task.
enum Event {
    /// `n` bytes are in the shard's scratch buffer.
    Read(usize),
    /// The peer closed its side.
    Eof,
    /// Drop the socket now (close deadline passed, or shutdown).
    Abort,
    /// The socket failed.
    Failed,
}

/// A live WebSocket connection.
pub struct Connection {
    /// The owning shard.
    pub shard: Rc<Shard>,
    /// The face other code sees.
    pub conn: Rc<ConnHandle>,
    stream: TcpStream,
    decoder: Decoder,
    /// Bytes of a frame split across reads; empty (unallocated) otherwise.
    inbuf: Vec<u8>,
    /// Our write side is shut (after the close frame went out).
    half_closed: bool,
    /// The outbox's front frame is the rest of the 101 response (not counted as a
    /// frame out).
    greeting: bool,
    /// Our slot under `max_connections`.
    _admission: Admission,
}

impl Connection {
    /// Makes the upgraded socket a connection: files it in the session table, binds the
    /// session when the upgrade carried a token, and handles any early bytes. Consumes
    /// the upgrade, so nothing of it outlives this call.
    fn open(shard: Rc<Shard>, id: u64, stream: TcpStream, upgraded: Upgraded) -> Self {
        let Upgraded { upgrade, identity, admission, leftover } = upgraded;
        let conn = Rc::new(ConnHandle::new(id, shard.now_ms()));
        let mut connection = Connection {
            shard,
            conn,
            stream,
            decoder: Decoder::default(),
            inbuf: Vec::new(),
            half_closed: false,
            greeting: false,
            _admission: admission,
        };
        let _span = connection.span().entered();
        let shard = &connection.shard;
        shard.sessions.borrow_mut().insert(connection.conn.clone());
        metrics::inc(&shard.metrics.connections);
        if let Some(identity) = identity {
            let platform = identity.platform.or(upgrade.platform).unwrap_or(0);
            cmd::auth::establish(shard, &connection.conn, identity, platform, 0);
        }
        if !leftover.is_empty() {
            let mut early = leftover;
            connection.on_bytes(&mut early);
        }
        connection.greet(&handshake::accept_response(&upgrade.key));
        connection
    }

    /// Sends the 101 response and whatever the connection queued while opening (the
    /// AUTH result when the token came with the upgrade) in one vectored send. What
    /// the socket does not take stays queued, the rest of the 101 first.
    fn greet(&mut self, response: &[u8]) {
        let mut outbox = self.conn.outbox();
        let written = {
            let mut slices = [IoSlice::new(&[]); 16];
            slices[0] = IoSlice::new(response);
            let n = 1 + outbox.slices(&mut slices[1..]);
            send_vectored(self.stream.as_raw_fd(), &slices[..n])
        };
        // A failed send shows again on the first poll, as `Event::Failed`.
        let written = match written {
            Ok(Some(n)) => n,
            Ok(None) | Err(_) => 0,
        };
        if written < response.len() {
            outbox.push_front(Bytes::copy_from_slice(&response[written..]));
            self.greeting = true;
        } else {
            let mut written_at = 0;
            let greeting = &mut self.greeting;
            outbox.advance_by(written - response.len(), |stamp| {
                frame_done(&self.shard, greeting, &mut written_at, stamp)
            });
        }
    }

    /// Serves events until the connection ends, then takes it out of the shard.
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.poll_event(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Event::Read(n)) => {
                    let _span = self.span().entered();
                    let shard = self.shard.clone();
                    let mut scratch = shard.scratch.borrow_mut();
                    self.on_bytes(&mut scratch[..n]);
                }
                Poll::Ready(Event::Eof | Event::Failed | Event::Abort) => {
                    let _span = self.span().entered();
                    // The close code sent (0 when the peer vanished without one).
                    let code = self.conn.close_code().unwrap_or(0);
                    self.finish(code);
                    return Poll::Ready(());
                }
            }
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if self.conn.aborted() {
            return Poll::Ready(Event::Abort);
        }
        // Write what is queued, as far as the socket takes it: several frames in one
        // vectored send, a single one (or a full socket) through glommio, which arms
        // the writability wake-up. A completed push frame is timed from its router
        // enqueue; the clock is read once per batch.
        let mut written_at = 0;
        loop {
            let mut outbox = self.conn.outbox();
            if outbox.len() > 1 {
                let sent = {
                    let mut slices = [IoSlice::new(&[]); 64];
                    let n = outbox.slices(&mut slices);
                    send_vectored(self.stream.as_raw_fd(), &slices[..n])
                };
                match sent {
                    Ok(Some(0)) | Err(_) => return Poll::Ready(Event::Failed),
                    Ok(Some(n)) => {
                        outbox
                            .advance_by(n, |stamp| frame_done(&self.shard, &mut self.greeting, &mut written_at, stamp));
                        continue;
                    }
                    Ok(None) => {}
                }
            }
            let Some(head) = outbox.head() else { break };
            match Pin::new(&mut self.stream).poll_write(cx, head) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Event::Failed),
                Poll::Ready(Ok(n)) => {
                    if let Some(stamp) = outbox.advance(n) {
                        frame_done(&self.shard, &mut self.greeting, &mut written_at, stamp);
                    }
                }
                Poll::Pending => break,
            }
        }
        let flushed = self.conn.outbox().is_empty();
        if flushed && self.conn.is_closing() && !self.half_closed {
            self.half_closed = true;
            // Our close frame is out: half-close, then wait for the peer's EOF (or the
            // close deadline) so it can read everything before the socket goes.
            let _ = Pin::new(&mut self.stream).poll_close(cx);
        }
        let read = {
            let mut scratch = self.shard.scratch.borrow_mut();
            Pin::new(&mut self.stream).poll_read(cx, &mut scratch[..])
        };
        match read {
            Poll::Ready(Ok(0)) => return Poll::Ready(Event::Eof),
            Poll::Ready(Ok(n)) => return Poll::Ready(Event::Read(n)),
            Poll::Ready(Err(_)) => return Poll::Ready(Event::Failed),
            Poll::Pending => {}
        }
        self.conn.set_waker(cx.waker());
        Poll::Pending
    }

    /// The connection's span: `shard`, `conn` (the session id) and `user_id` once
    /// authenticated, around everything the connection handles (its reads and the
    /// commands they carry, its opening and its end).
    ///
    /// Made afresh for each of those and dropped after it, from fields the connection
    /// holds anyway, rather than one span kept for the connection's life: a live span
    /// costs ~570 B per connection in the subscriber's registry (its slot and formatted
    /// fields), which an idle connection would pay for nothing. Writes of queued frames
    /// run outside it, so a fan-out creates no span per recipient. When `info` is
    /// disabled the macro is a cached callsite check.
    fn span(&self) -> Span {
        let user = self.conn.user_id.get();
        info_span!("conn", shard = self.shard.id, conn = self.conn.id, user_id = (user != 0).then_some(user))
    }

    /// Handles freshly read bytes (in the scratch buffer, or the early bytes that came
    /// with the upgrade request).
    fn on_bytes(&mut self, data: &mut [u8]) {
        if self.conn.is_closing() {
            return; // We are closing: what the peer sends now is ignored.
        }
        self.conn.last_seen_ms.set(self.shard.now_ms());
        let max = self.shard.config().connection.max_frame_bytes;
        let shard = &self.shard;
        let conn = &self.conn;
        let decoder = &mut self.decoder;
        let on_message = |m: Message<'_>| on_message(shard, conn, m);
        let result = if self.inbuf.is_empty() {
            decoder.decode(data, max, on_message).map(|used| {
                if used < data.len() {
                    self.inbuf.extend_from_slice(&data[used..]);
                }
            })
        } else {
            self.inbuf.extend_from_slice(data);
            decoder.decode(&mut self.inbuf, max, on_message).map(|used| {
                self.inbuf.drain(..used);
                if self.inbuf.is_empty() {
                    self.inbuf = Vec::new();
                }
            })
        };
        if let Err(reason) = result {
            self.inbuf = Vec::new();
            let clients_fault =
                matches!(reason, CloseReason::Protocol(_) | CloseReason::TooBig | CloseReason::RateLimited);
            if clients_fault && shard.log_limit.allow(Noisy::BadFrames, shard.now_ms()) {
                warn!(shard = shard.id, conn = conn.id, code = reason.code(), %reason, "closing a misbehaving client");
            } else if let CloseReason::AuthFailed(why) = &reason {
                if shard.log_limit.allow(Noisy::AuthFailed, shard.now_ms()) {
                    warn!(shard = shard.id, conn = conn.id, cause = %why, "AUTH refused; closing 4001");
                }
            } else {
                debug!(shard = shard.id, conn = conn.id, %reason, "closing");
            }
            conn.close(reason, None, shard.now_ms(), shard.linger_ms());
        }
    }

    fn finish(&mut self, code: u16) {
        let shard = &self.shard;
        shard.metrics.closed(code);
        shard.metrics.connections.set(shard.metrics.connections.get().saturating_sub(1));
        shard.sessions.borrow_mut().remove(self.conn.id);
        let user = self.conn.user_id.get();
        if user != 0 {
            shard.unbind_session(user, self.conn.id);
        }
        debug!(shard = shard.id, conn = self.conn.id, user_id = user, code, "connection closed");
    }
}

impl From<FrameError> for CloseReason {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooBig(_) => CloseReason::TooBig,
            FrameError::Protocol(why) => CloseReason::Protocol(why.to_string()),
        }
    }
}

fn on_message(shard: &Rc<Shard>, conn: &Rc<ConnHandle>, message: Message<'_>) -> Result<(), CloseReason> {
    match message {
        Message::Binary(payload) => cmd::dispatch(shard, conn, payload),
        Message::Text => Err(CloseReason::Protocol("text frames are not supported".into())),
        Message::Ping(payload) => {
            conn.reply(frame::pong(payload));
            Ok(())
        }
        Message::Pong => Ok(()),
        Message::Close(_) => Err(CloseReason::Normal),
    }
}

/// Accounts for one frame written whole: a frame out, and for a push (`stamp` != 0)
/// a push out and its latency from the router's enqueue (`written_at` is read from the
/// clock once per batch). The rest of a 101 response that did not fit in the first
/// send (`greeting`) is not a frame.
fn frame_done(shard: &Shard, greeting: &mut bool, written_at: &mut u64, stamp: u64) {
    if std::mem::take(greeting) {
        return;
    }
    let m = &shard.metrics;
    metrics::inc(&m.frames_out);
    if stamp != 0 {
        metrics::inc(&m.pushes_out);
        if *written_at == 0 {
            *written_at = metrics::stamp();
        }
        m.push_latency.borrow_mut().record(metrics::micros_between(stamp, *written_at));
    }
}

/// One non-blocking vectored send (`sendmsg` with `MSG_DONTWAIT`). `Ok(None)`: the
/// socket's buffer is full.
fn send_vectored(fd: RawFd, slices: &[IoSlice<'_>]) -> std::io::Result<Option<usize>> {
    // SAFETY: a zeroed msghdr is valid (no name, no control data); `IoSlice` is
    // ABI-compatible with `iovec` on Unix, and the slices outlive the call.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = slices.len() as _;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection task's future lives as long as the connection: keep it small.
    #[test]
    fn connection_task_stays_small() {
        let size = std::mem::size_of::<Serve>();
        let connection = std::mem::size_of::<Connection>();
        assert!(size <= connection + 16, "the task's future is {size} B for a {connection} B connection");
    }
}
