//! Merge-on-read: ask every shard for a snapshot and collect the answers in shard order.
//!
//! Shards keep their figures in plain `Cell`s; nothing is shared while they work. A
//! reader sends each shard a request carrying a reply sender and awaits one answer per
//! shard. A shard that has stopped simply does not answer; its slot stays `None`.

use crate::mesh::MeshSender;

/// Sends `make(shard, reply)` to every shard and awaits the replies.
///
/// `make` builds the shard's request message around the reply sender; the shard answers
/// with `reply.send(value)`. Returns one entry per shard, `None` for a shard that is
/// gone.
pub async fn gather<M, T, F>(mesh: &MeshSender<M>, mut make: F) -> Vec<Option<T>>
where
    F: FnMut(usize, flume::Sender<(usize, T)>) -> M,
{
    let shards = mesh.shards();
    let (tx, rx) = flume::bounded(shards.max(1));
    let mut asked = 0;
    for shard in 0..shards {
        if mesh.send_async(shard, make(shard, tx.clone())).await.is_ok() {
            asked += 1;
        }
    }
    drop(tx);
    let mut out: Vec<Option<T>> = (0..shards).map(|_| None).collect();
    for _ in 0..asked {
        match rx.recv_async().await {
            Ok((shard, value)) if shard < shards => out[shard] = Some(value),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    out
}
