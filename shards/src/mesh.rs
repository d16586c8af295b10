//! A bounded inbox per shard that any thread may send to.
//!
//! flume is runtime-agnostic: the same channel is awaited by a glommio shard and fed
//! from a tokio control-plane thread or another shard. Every inbox is bounded; a full
//! inbox hands the message back ([`SendError::Full`]) so the caller decides whether to
//! wait ([`MeshSender::send_async`]), drop and count, or fail the request.
//! Sending to yourself is allowed but pointless: callers short-circuit the local shard.

/// Why a message could not be sent; both variants hand the message back.
#[derive(Debug)]
pub enum SendError<T> {
    /// The shard's inbox is full.
    Full(T),
    /// The shard has stopped (or the index is out of range).
    Closed(T),
}

impl<T> SendError<T> {
    /// Gives the message back.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(m) | SendError::Closed(m) => m,
        }
    }
}

/// The sending half of every shard's inbox: cheap to clone, `Send + Sync`.
#[derive(Debug)]
pub struct MeshSender<T> {
    inboxes: Vec<flume::Sender<T>>,
}

impl<T> Clone for MeshSender<T> {
    fn clone(&self) -> Self {
        Self { inboxes: self.inboxes.clone() }
    }
}

impl<T> MeshSender<T> {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Sends without waiting; a full or closed inbox hands the message back.
    pub fn try_send(&self, shard: usize, msg: T) -> Result<(), SendError<T>> {
        let Some(inbox) = self.inboxes.get(shard) else {
            return Err(SendError::Closed(msg));
        };
        inbox.try_send(msg).map_err(|e| match e {
            flume::TrySendError::Full(m) => SendError::Full(m),
            flume::TrySendError::Disconnected(m) => SendError::Closed(m),
        })
    }

    /// Sends, waiting for room in the inbox (from any async runtime).
    pub async fn send_async(&self, shard: usize, msg: T) -> Result<(), SendError<T>> {
        let Some(inbox) = self.inboxes.get(shard) else {
            return Err(SendError::Closed(msg));
        };
        inbox.send_async(msg).await.map_err(|e| SendError::Closed(e.into_inner()))
    }

    /// Sends from a plain thread, blocking until there is room.
    pub fn send_blocking(&self, shard: usize, msg: T) -> Result<(), SendError<T>> {
        let Some(inbox) = self.inboxes.get(shard) else {
            return Err(SendError::Closed(msg));
        };
        inbox.send(msg).map_err(|e| SendError::Closed(e.into_inner()))
    }

    /// Messages waiting in `shard`'s inbox right now.
    pub fn queued(&self, shard: usize) -> usize {
        self.inboxes.get(shard).map_or(0, flume::Sender::len)
    }
}

/// The whole mesh right after creation: the shared sender and one receiver per shard,
/// to be moved into that shard.
pub struct Mesh<T> {
    /// Handed to whoever sends (control plane, router, every shard).
    pub sender: MeshSender<T>,
    /// `receivers[i]` is shard `i`'s inbox; shard `i` is its only reader.
    pub receivers: Vec<flume::Receiver<T>>,
}

impl<T> Mesh<T> {
    /// One inbox of `capacity` messages for each of `shards` shards.
    pub fn new(shards: usize, capacity: usize) -> Self {
        let (inboxes, receivers) = (0..shards).map(|_| flume::bounded(capacity.max(1))).unzip();
        Self { sender: MeshSender { inboxes }, receivers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_inbox_hands_the_message_back() {
        let mesh = Mesh::<u32>::new(2, 1);
        mesh.sender.try_send(1, 7).unwrap();
        match mesh.sender.try_send(1, 8) {
            Err(SendError::Full(8)) => {}
            other => panic!("expected Full(8), got {other:?}"),
        }
        assert!(matches!(mesh.sender.try_send(5, 9), Err(SendError::Closed(9))));
        assert_eq!(mesh.receivers[1].try_recv().unwrap(), 7);
        assert_eq!(mesh.sender.queued(1), 0);
    }
}
