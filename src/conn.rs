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
use crate::metrics;
use crate::session::ConnHandle;
use crate::shard::{Admission, Shard};
use crate::ws::frame::{self, Decoder, FrameError, Message};
use crate::ws::handshake::{self, Upgrade};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::{debug, info_span, Span};

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
            metrics::inc(&shard.metrics.auth_failures);
            refuse(shard, stream, 401, &e.to_string(), None).await;
            return None;
        }
    };
    if stream.write_all(&handshake::accept_response(&upgrade.key)).await.is_err() {
        return None;
    }
    metrics::inc(&shard.metrics.handshakes);
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
    debug!(shard = shard.id, status, reason, "upgrade refused");
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
        connection
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
        // Write what is queued, as far as the socket takes it.
        loop {
            let mut outbox = self.conn.outbox();
            let Some(head) = outbox.head() else { break };
            match Pin::new(&mut self.stream).poll_write(cx, head) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Event::Failed),
                Poll::Ready(Ok(n)) => {
                    if outbox.advance(n) {
                        metrics::inc(&self.shard.metrics.frames_out);
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
            debug!(shard = shard.id, conn = conn.id, %reason, "closing");
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
            shard.node.router.directory.unregister(user, self.conn.id);
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
