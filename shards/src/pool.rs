//! One pinned glommio executor per shard.
//!
//! [`Pool::start`] spawns the executors and waits until each has actually started
//! running its future: `LocalExecutorBuilder::spawn` returns `Ok` even when the
//! executor then fails to come up (io_uring set-up, locked memory), so a shard that
//! never reports in is joined and its error surfaces here instead of as a silently
//! missing shard.

use glommio::{LocalExecutorBuilder, Placement};
use std::future::Future;
use std::time::Duration;

/// How to build the executors.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Number of shards (executors).
    pub shards: usize,
    /// Bytes of io_uring registered buffer memory per executor. Each executor locks about
    /// three times this, and the locked-memory limit is shared by the process.
    pub io_memory: usize,
    /// io_uring submission depth of each of the executor's rings. Every idle socket
    /// keeps a readiness poll in the main ring, and the kernel files those in a cancel
    /// hash sized from the ring (`ilog2(cq_entries) - 5` bits, 8 at most): at glommio's
    /// default of 128 that is 4 buckets, and every cancellation (glommio re-arms its
    /// preemption timer on each reactor pass) walks a bucket. 4096 gives the full 256.
    pub ring_depth: usize,
    /// Pin shard `i` to CPU `i % online_cores()`.
    pub pin: bool,
    /// Thread name prefix; shard `i` is called `{name}-{i}`.
    pub name: String,
}

/// A shard failed to start.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// glommio refused to build the executor.
    #[error("shard {shard}: executor could not be spawned: {reason}")]
    Spawn { shard: usize, reason: String },
    /// The executor thread died before running its future.
    #[error("shard {shard}: executor failed to start: {reason}")]
    Start { shard: usize, reason: String },
}

/// The running executors; [`Pool::join`] waits for all of them.
pub struct Pool<T: Send + 'static> {
    handles: Vec<glommio::ExecutorJoinHandle<T>>,
}

/// CPUs this process may run on.
pub fn online_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl<T: Send + 'static> Pool<T> {
    /// Starts `config.shards` executors; executor `i` runs `make(i)`.
    ///
    /// Returns once every executor has entered its future.
    pub fn start<F, Fut>(config: &PoolConfig, make: F) -> Result<Self, PoolError>
    where
        F: Fn(usize) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let cores = online_cores();
        let mut handles = Vec::with_capacity(config.shards);
        let mut started = Vec::with_capacity(config.shards);
        for shard in 0..config.shards {
            let placement = if config.pin { Placement::Fixed(shard % cores) } else { Placement::Unbound };
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<()>(1);
            let make = make.clone();
            let handle = LocalExecutorBuilder::new(placement)
                .name(&format!("{}-{shard}", config.name))
                .io_memory(config.io_memory)
                .ring_depth(config.ring_depth.max(1))
                .spawn(move || {
                    let _ = ready_tx.send(());
                    drop(ready_tx);
                    make(shard)
                })
                .map_err(|e| PoolError::Spawn { shard, reason: e.to_string() })?;
            handles.push(handle);
            started.push(ready_rx);
        }
        for (shard, ready) in started.into_iter().enumerate() {
            // The sender lives in the executor's closure: it is dropped without a send
            // only when the executor died before running it.
            match ready.recv_timeout(Duration::from_secs(30)) {
                Ok(()) => {}
                Err(_) => {
                    let handle = handles.remove(shard);
                    let reason = match handle.join() {
                        Ok(_) => "exited before starting".to_string(),
                        Err(e) => e.to_string(),
                    };
                    return Err(PoolError::Start { shard, reason });
                }
            }
        }
        Ok(Self { handles })
    }

    /// Number of executors.
    pub fn shards(&self) -> usize {
        self.handles.len()
    }

    /// Waits for every executor to finish; one entry per shard.
    pub fn join(self) -> Vec<Result<T, String>> {
        self.handles.into_iter().map(|h| h.join().map_err(|e| e.to_string())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_one_future_per_shard_and_returns_results_in_order() {
        let config =
            PoolConfig { shards: 2, io_memory: 64 << 10, ring_depth: 128, pin: false, name: "pool-test".into() };
        let pool = Pool::start(&config, |shard| async move { shard * 10 }).unwrap();
        let out: Vec<usize> = pool.join().into_iter().map(Result::unwrap).collect();
        assert_eq!(out, vec![0, 10]);
    }
}
