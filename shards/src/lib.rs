//! The thread-per-core substrate im-gateway runs on, with nothing IM-specific in it.
//!
//! Layout:
//! - [`listener`]: one `SO_REUSEPORT` TCP listener per shard, built with socket2 and handed
//!   to the shard as a raw fd (glommio's own `bind` hard-codes `listen(1024)`), after a
//!   probe that refuses to join a port somebody already listens on.
//! - [`pool`]: one pinned glommio executor per shard; start-up failures surface here,
//!   not as a silently missing shard.
//! - [`mesh`]: bounded, runtime-agnostic (flume) inboxes, one per shard, that any thread
//!   may send to; a full inbox hands the message back.
//! - [`gather`]: ask every shard for a snapshot and merge on read.
//!
//! Entry points: [`listener::bind_reuseport`], [`pool::Pool::start`], [`mesh::Mesh::new`].

pub mod gather;
pub mod listener;
pub mod mesh;
pub mod pool;

pub use gather::gather;
pub use listener::{bind_reuseport, ListenError, Listeners};
pub use mesh::{Mesh, MeshSender, SendError};
pub use pool::{online_cores, Pool, PoolConfig, PoolError};
