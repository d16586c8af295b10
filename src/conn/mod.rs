//! One client connection, from accept to close: the upgrade ([`upgrade`]), then the
//! connection state machine ([`Connection`]) that moves bytes between the socket and
//! the command handlers. [`serve`] is the connection's task.
//!
//! Buffers: a read lands in the shard's scratch buffer and is decoded there; only the
//! tail of a frame split across reads is copied into the connection's own `inbuf`,
//! which is freed as soon as it is consumed. Outbound frames are shared `Bytes` in the
//! connection's [`Outbox`](crate::session::Outbox). An idle connection holds no buffer.
//!
//! One task per connection waits on three things at once: the socket turning readable,
//! room to write queued frames, and its [`ConnHandle`] being poked (a push, a kick, a
//! deadline from the shard's ticker).

mod upgrade;

use crate::close::CloseReason;
use crate::cmd;
use crate::logs::Noisy;
use crate::metrics;
use crate::node::Admission;
use crate::session::{ConnHandle, SessionId};
use crate::shard::Shard;
use crate::ws::frame::{self, Decoder, FrameError, Message};
use crate::ws::handshake;
use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use std::future::Future;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use tracing::{debug, info_span, warn, Span};
use upgrade::Upgraded;

/// Serves one accepted socket until it closes: the future of the connection's task.
pub fn serve(shard: Rc<Shard>, stream: TcpStream) -> Serve {
    Serve::Upgrading(Box::pin(upgrade::accept(shard, stream)))
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

/// A live WebSocket connection. Filed in its shard's session table for exactly as
/// long as it lives: [`Connection::open`] files it, dropping it takes it out (table,
/// directory, registry) however it ends; the shard's connection gauge is that table.
pub struct Connection {
    /// The owning shard.
    shard: Rc<Shard>,
    /// The face other code sees.
    conn: Rc<ConnHandle>,
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
    fn open(shard: Rc<Shard>, id: SessionId, stream: TcpStream, upgraded: Upgraded) -> Self {
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
        shard.sessions().borrow_mut().insert(connection.conn.clone());
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

    /// Serves events until the connection ends (dropping it then takes it out of the
    /// shard).
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.poll_event(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Event::Read(n)) => {
                    let _span = self.span().entered();
                    let shard = self.shard.clone();
                    let mut scratch = shard.scratch().borrow_mut();
                    self.on_bytes(&mut scratch[..n]);
                }
                Poll::Ready(Event::Eof | Event::Failed | Event::Abort) => return Poll::Ready(()),
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
            let mut scratch = self.shard.scratch().borrow_mut();
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
        info_span!("conn", shard = self.shard.id(), conn = self.conn.id.raw(), user_id = (user != 0).then_some(user))
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
            if clients_fault && shard.log_limit().allow(Noisy::BadFrames, shard.now_ms()) {
                warn!(shard = shard.id(), conn = conn.id.raw(), code = reason.code(), %reason, "closing a misbehaving client");
            } else if let CloseReason::AuthFailed(why) = &reason {
                if shard.log_limit().allow(Noisy::AuthFailed, shard.now_ms()) {
                    warn!(shard = shard.id(), conn = conn.id.raw(), cause = %why, "AUTH refused; closing 4001");
                }
            } else {
                debug!(shard = shard.id(), conn = conn.id.raw(), %reason, "closing");
            }
            conn.close(reason, None, shard.now_ms(), shard.linger_ms());
        }
    }
}

impl Drop for Connection {
    /// Takes the connection out of its shard, however it ended (its task finished, or
    /// was dropped with the executor): the close is counted by its code (0 when the
    /// peer vanished without one), the session leaves the table, the directory and the
    /// registry. Runs before the socket closes and the admission slot is released.
    fn drop(&mut self) {
        let _span = self.span().entered();
        let shard = &self.shard;
        let code = self.conn.close_code().unwrap_or(0);
        shard.metrics().closed(code);
        shard.sessions().borrow_mut().remove(self.conn.id);
        let user = self.conn.user_id.get();
        if user != 0 {
            shard.unbind_session(user, self.conn.id);
        }
        debug!(shard = shard.id(), conn = self.conn.id.raw(), user_id = user, code, "connection closed");
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
    let m = shard.metrics();
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
