//! A shard's connections and sessions: [`ConnHandle`] (the part of a connection other
//! code may touch: its queue, its close request), [`SessionTable`] (every connection of
//! the shard, and user -> connections for the authenticated ones), the outbound queue
//! ([`outbox`]) and how sessions are named ([`id`]).
//!
//! Owned by one shard (`RefCell` inside `Rc<Shard>`), never shared: other shards and the
//! control plane reach a session only through the shard's inbox.

pub mod id;
pub mod outbox;

pub use id::{SessionId, SessionName};
pub use outbox::Outbox;

use crate::close::CloseReason;
use crate::ws::frame;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::task::Waker;

/// Bounds of every outbound queue (from `[connection]`).
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Frames.
    pub frames: usize,
    /// Bytes.
    pub bytes: usize,
}

/// What happened to a frame offered to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued.
    Queued,
    /// The connection is closing; the frame was dropped.
    Closing,
    /// The queue overflowed: the frame was dropped and the connection is being cut
    /// with 4009.
    Overflow,
}

/// The shared face of one connection. The connection task and its shard hold it
/// (`Rc`); everything else reaches it through the shard.
pub struct ConnHandle {
    /// Process-unique id, also the session id.
    pub id: SessionId,
    /// Authenticated user, 0 before AUTH.
    pub user_id: Cell<i64>,
    /// Platform of the session (0 when unknown).
    pub platform: Cell<i32>,
    /// Shard clock (ms) when the upgrade completed.
    pub opened_ms: u64,
    /// Shard clock (ms) of the last inbound frame.
    pub last_seen_ms: Cell<u64>,
    /// UPSTREAM token bucket: tokens left, in thousandths.
    bucket_milli: Cell<u32>,
    /// Shard clock (ms) of the bucket's last refill.
    bucket_ms: Cell<u64>,
    /// UPSTREAMs refused for rate in a row.
    strikes: Cell<u32>,
    /// Frames waiting for the socket.
    outbox: RefCell<Outbox>,
    /// Set once a close frame is queued: why.
    closing: RefCell<Option<CloseReason>>,
    /// Shard clock (ms) after which a closing connection is dropped even if the peer
    /// has not read its close frame.
    close_deadline_ms: Cell<u64>,
    /// Ask the connection task to drop the socket now.
    abort: Cell<bool>,
    /// The connection task's waker, set whenever it waits.
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnHandle")
            .field("id", &self.id)
            .field("user_id", &self.user_id.get())
            .field("closing", &self.close_code())
            .finish_non_exhaustive()
    }
}

impl ConnHandle {
    /// A new, unauthenticated connection.
    pub fn new(id: SessionId, now_ms: u64) -> Self {
        Self {
            id,
            user_id: Cell::new(0),
            platform: Cell::new(0),
            opened_ms: now_ms,
            last_seen_ms: Cell::new(now_ms),
            bucket_milli: Cell::new(u32::MAX),
            bucket_ms: Cell::new(now_ms),
            strikes: Cell::new(0),
            outbox: RefCell::new(Outbox::default()),
            closing: RefCell::new(None),
            close_deadline_ms: Cell::new(u64::MAX),
            abort: Cell::new(false),
            waker: Cell::new(None),
        }
    }

    /// Takes one token from the UPSTREAM bucket (`rate` per second, `burst` deep).
    /// `Ok` when allowed; `Err(strikes)` with the refusals in a row otherwise.
    pub fn take_token(&self, now_ms: u64, rate: u32, burst: u32) -> Result<(), u32> {
        let cap = u64::from(burst) * 1000;
        let elapsed = now_ms.saturating_sub(self.bucket_ms.get());
        let level = (u64::from(self.bucket_milli.get()) + elapsed * u64::from(rate)).min(cap);
        self.bucket_ms.set(now_ms);
        if level >= 1000 {
            self.bucket_milli.set((level - 1000) as u32);
            self.strikes.set(0);
            Ok(())
        } else {
            self.bucket_milli.set(level as u32);
            let strikes = self.strikes.get() + 1;
            self.strikes.set(strikes);
            Err(strikes)
        }
    }

    /// True once AUTH succeeded.
    pub fn is_authed(&self) -> bool {
        self.user_id.get() != 0
    }

    /// Queues `frame` within `limits`. On overflow the queue's unsent frames are
    /// dropped and the connection is closed with 4009 (the caller counts).
    pub fn offer(&self, frame: Bytes, limits: QueueLimits, now_ms: u64, linger_ms: u64) -> Offer {
        self.offer_stamped(frame, 0, limits, now_ms, linger_ms)
    }

    /// [`offer`](Self::offer) of a push frame enqueued by the router at `stamp`.
    pub fn offer_stamped(&self, frame: Bytes, stamp: u64, limits: QueueLimits, now_ms: u64, linger_ms: u64) -> Offer {
        if self.is_closing() {
            return Offer::Closing;
        }
        let overflow = {
            let ob = self.outbox.borrow();
            ob.len() >= limits.frames || ob.bytes() + frame.len() > limits.bytes
        };
        if overflow {
            self.close(CloseReason::TooSlow, None, now_ms, linger_ms);
            return Offer::Overflow;
        }
        self.outbox.borrow_mut().push(frame, stamp);
        self.wake();
        Offer::Queued
    }

    /// Queues a frame the connection owes its peer (replies, pongs), outside the
    /// limits: it answers the client's own request.
    pub fn reply(&self, frame: Bytes) {
        if !self.is_closing() {
            self.outbox.borrow_mut().push(frame, 0);
            self.wake();
        }
    }

    /// Starts closing with `reason`: queues `last` (e.g. a KICK packet) and the close
    /// frame. A 4009 first drops everything not yet started (the client is not reading
    /// it anyway). Later calls are ignored.
    pub fn close(&self, reason: CloseReason, last: Option<Bytes>, now_ms: u64, linger_ms: u64) {
        if self.is_closing() {
            return;
        }
        {
            let mut ob = self.outbox.borrow_mut();
            if reason == CloseReason::TooSlow {
                ob.drop_unsent();
            }
            if let Some(last) = last {
                ob.push(last, 0);
            }
            ob.push(frame::close(reason.code(), &reason.text()), 0);
        }
        *self.closing.borrow_mut() = Some(reason);
        self.close_deadline_ms.set(now_ms.saturating_add(linger_ms));
        self.wake();
    }

    /// True once a close frame is queued.
    pub fn is_closing(&self) -> bool {
        self.closing.borrow().is_some()
    }

    /// The close code queued, if closing.
    pub fn close_code(&self) -> Option<u16> {
        self.closing.borrow().as_ref().map(CloseReason::code)
    }

    /// Deadline for a closing connection (ms, shard clock).
    pub fn close_deadline_ms(&self) -> u64 {
        self.close_deadline_ms.get()
    }

    /// Drops the socket at the next poll.
    pub fn abort(&self) {
        self.abort.set(true);
        self.wake();
    }

    /// True when the socket should be dropped now.
    pub fn aborted(&self) -> bool {
        self.abort.get()
    }

    /// Access to the queue for the connection task's writer.
    pub fn outbox(&self) -> std::cell::RefMut<'_, Outbox> {
        self.outbox.borrow_mut()
    }

    /// Frames waiting.
    pub fn queued(&self) -> usize {
        self.outbox.borrow().len()
    }

    /// Remembers the task to wake.
    pub fn set_waker(&self, waker: &Waker) {
        let old = self.waker.take();
        match old {
            Some(w) if w.will_wake(waker) => self.waker.set(Some(w)),
            _ => self.waker.set(Some(waker.clone())),
        }
    }

    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Every connection of a shard, and user -> connections for the authenticated ones.
#[derive(Debug, Default)]
pub struct SessionTable {
    conns: HashMap<SessionId, Rc<ConnHandle>>,
    users: HashMap<i64, Vec<Rc<ConnHandle>>>,
}

impl SessionTable {
    /// Adds a connection (at the upgrade).
    pub fn insert(&mut self, conn: Rc<ConnHandle>) {
        self.conns.insert(conn.id, conn);
    }

    /// Files an authenticated connection under its user.
    pub fn bind_user(&mut self, conn: &Rc<ConnHandle>) {
        self.users.entry(conn.user_id.get()).or_default().push(conn.clone());
    }

    /// Removes a connection (when its task ends).
    pub fn remove(&mut self, id: SessionId) -> Option<Rc<ConnHandle>> {
        let conn = self.conns.remove(&id)?;
        let user = conn.user_id.get();
        if user != 0 {
            if let Some(list) = self.users.get_mut(&user) {
                list.retain(|c| c.id != id);
                if list.is_empty() {
                    self.users.remove(&user);
                }
            }
        }
        Some(conn)
    }

    /// A connection by id.
    pub fn get(&self, id: SessionId) -> Option<&Rc<ConnHandle>> {
        self.conns.get(&id)
    }

    /// The user's connections on this shard.
    pub fn of_user(&self, user: i64) -> &[Rc<ConnHandle>] {
        self.users.get(&user).map_or(&[], Vec::as_slice)
    }

    /// Every connection, authenticated or not.
    pub fn all(&self) -> impl Iterator<Item = &Rc<ConnHandle>> {
        self.conns.values()
    }

    /// Authenticated connections.
    pub fn authed(&self) -> impl Iterator<Item = &Rc<ConnHandle>> {
        self.users.values().flatten()
    }

    /// Number of connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// No connections.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Number of users with at least one connection here.
    pub fn users(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_cuts_with_4009_and_keeps_the_frame_in_flight() {
        let c = ConnHandle::new(SessionId::new(0, 1), 0);
        let limits = QueueLimits { frames: 2, bytes: 1 << 20 };
        assert_eq!(c.offer_stamped(Bytes::from_static(b"aaaa"), 42, limits, 0, 10), Offer::Queued);
        assert_eq!(c.outbox().advance(2), None);
        assert_eq!(c.offer(Bytes::from_static(b"bb"), limits, 0, 10), Offer::Queued);
        assert_eq!(c.offer(Bytes::from_static(b"cc"), limits, 0, 10), Offer::Overflow);
        assert_eq!(c.close_code(), Some(4009));
        let mut ob = c.outbox();
        assert_eq!(ob.head(), Some(&b"aa"[..]));
        assert_eq!(ob.advance(2), Some(42), "a completed frame gives back its stamp");
        assert_eq!(ob.head().map(|h| &h[..2]), Some(&[0x88u8, 35][..]));
        drop(ob);
        assert_eq!(c.offer(Bytes::from_static(b"dd"), limits, 0, 10), Offer::Closing);
    }
}
