//! A connection's outbound queue ([`Outbox`]): the frames waiting for its socket, with
//! the bookkeeping a vectored writer needs (the unsent part of the front frame, the
//! push stamps of completed frames). Held by [`ConnHandle`](super::ConnHandle); the
//! limits are checked there.

use bytes::Bytes;
use std::collections::VecDeque;

/// A connection's outbound queue: shared frames waiting for the socket. Empty and
/// unallocated while the connection is idle.
///
/// Each frame carries the [`stamp`](crate::metrics::stamp) of its push's router enqueue
/// (0 for replies, pongs, close frames), so the writer can time push delivery: 8 bytes
/// in the queue's slot, nothing allocated per recipient.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: VecDeque<(Bytes, u64)>,
    /// Bytes queued, including the unsent part of the front frame.
    bytes: usize,
    /// How much of the front frame is already on the wire.
    head_sent: usize,
}

impl Outbox {
    /// The unsent part of the front frame.
    pub fn head(&self) -> Option<&[u8]> {
        self.frames.front().map(|(f, _)| &f[self.head_sent..])
    }

    /// Marks `n` bytes of the head as written. When a whole frame completed, returns its
    /// stamp (0 when it was not a push).
    pub fn advance(&mut self, n: usize) -> Option<u64> {
        self.head_sent += n;
        self.bytes -= n;
        if self.frames.front().is_some_and(|(f, _)| self.head_sent >= f.len()) {
            let stamp = self.frames.pop_front().map_or(0, |(_, s)| s);
            self.head_sent = 0;
            if self.frames.is_empty() {
                // Give the ring's memory back: an idle connection holds no buffer.
                self.frames = VecDeque::new();
            }
            return Some(stamp);
        }
        None
    }

    /// The unsent bytes of up to `out.len()` frames from the front, as slices for one
    /// vectored write; returns how many were filled.
    pub fn slices<'a>(&'a self, out: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, (f, _)) in self.frames.iter().take(out.len()).enumerate() {
            out[i] = std::io::IoSlice::new(if i == 0 { &f[self.head_sent..] } else { f });
            n += 1;
        }
        n
    }

    /// Marks `n` bytes from the front as written, across frames, calling `done` with
    /// the stamp of each frame that completed (see [`Outbox::advance`]); returns how
    /// many completed.
    pub fn advance_by(&mut self, mut n: usize, mut done: impl FnMut(u64)) -> usize {
        let mut count = 0;
        while n > 0 {
            let Some((front, _)) = self.frames.front() else { break };
            let step = n.min(front.len() - self.head_sent);
            n -= step;
            if let Some(stamp) = self.advance(step) {
                done(stamp);
                count += 1;
            }
        }
        count
    }

    /// Puts `frame` before everything queued (the rest of the upgrade response, which
    /// must reach the peer first).
    pub fn push_front(&mut self, frame: Bytes) {
        debug_assert_eq!(self.head_sent, 0);
        self.bytes += frame.len();
        self.frames.push_front((frame, 0));
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes queued, including the unsent part of the front frame.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queues `frame` at the back (the caller checked the limits).
    pub(super) fn push(&mut self, frame: Bytes, stamp: u64) {
        self.bytes += frame.len();
        self.frames.push_back((frame, stamp));
    }

    /// Drops every frame not yet started; returns how many.
    pub(super) fn drop_unsent(&mut self) -> usize {
        let keep = usize::from(self.head_sent > 0);
        let dropped = self.frames.len() - keep;
        for (f, _) in self.frames.drain(keep..) {
            self.bytes -= f.len();
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectored_writes_advance_across_frames() {
        let mut ob = Outbox::default();
        for (f, stamp) in [(&b"abc"[..], 7), (b"de", 0), (b"fghi", 9)] {
            ob.push(Bytes::copy_from_slice(f), stamp);
        }
        let mut slices = [std::io::IoSlice::new(&[]); 2];
        assert_eq!(ob.slices(&mut slices), 2);
        assert_eq!((&*slices[0], &*slices[1]), (&b"abc"[..], &b"de"[..]));
        // 4 bytes: the first frame and one byte of the second.
        let mut stamps = Vec::new();
        assert_eq!(ob.advance_by(4, |s| stamps.push(s)), 1);
        assert_eq!(stamps, [7]);
        assert_eq!(ob.head(), Some(&b"e"[..]));
        let mut slices = [std::io::IoSlice::new(&[]); 8];
        assert_eq!(ob.slices(&mut slices), 2);
        assert_eq!(&*slices[0], b"e");
        assert_eq!(ob.advance_by(5, |s| stamps.push(s)), 2);
        assert_eq!(stamps, [7, 0, 9]);
        assert!(ob.is_empty());
        ob.push(Bytes::from_static(b"x"), 3);
        ob.push_front(Bytes::from_static(b"HTTP"));
        assert_eq!(ob.head(), Some(&b"HTTP"[..]));
        assert_eq!(ob.advance_by(5, |s| stamps.push(s)), 2);
        assert_eq!(stamps, [7, 0, 9, 0, 3]);
    }
}
