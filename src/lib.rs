//! im-gateway: a thread-per-core WebSocket connection gateway for instant messaging.
//!
//! Layout (data plane first, then control plane):
//! - [`server`]: starts and stops a whole gateway (`Gateway::start`, `shutdown`, `wait`).
//! - [`shard`]: what one core owns ([`shard::Shard`]: session table, metrics, scratch
//!   buffer) and runs (accept loop, ticker, inbox); [`shard::Node`] is what all share.
//! - [`conn`]: one connection: the upgrade, then the state machine between socket and
//!   command handlers.
//! - [`ws`]: the WebSocket wire: HTTP upgrade parsing, allowed origins and the frame codec.
//! - [`cmd`]: one file per inbound command (AUTH, HEARTBEAT, ACK, UPSTREAM).
//! - [`session`]: a connection's shared face (outbound queue, close request) and the
//!   shard's session table.
//! - [`directory`]: the lock-free user -> sessions map, the only cross-shard structure,
//!   which also orders racing logins.
//! - [`router`]: the routing facade and the messages shards exchange.
//! - [`registry`]: where users are beyond this node: the `Registry` trait, embedded
//!   (single node) or Redis (cluster mode), driven from the control-plane thread.
//! - [`admin`], [`prometheus`], [`dashboard`]: the admin HTTP API on the control-plane
//!   thread, its Prometheus exposition and its embedded per-core dashboard page.
//! - [`admit`]: admission control beyond `max_connections`: the per-shard handshake
//!   token bucket and the per-IP connection count.
//! - [`auth`], [`config`], [`close`], [`packet`], [`proto`], [`metrics`], [`limits`]:
//!   tokens, configuration, close codes, packet building, wire types, counters and
//!   latency histograms, rlimits.
//! - [`logs`]: the per-shard limiter that keeps misbehaving clients from flooding the log.
//! - [`host`]: the start-up check of kernel settings against the deploy kit's sysctl file.
//!
//! The generic thread-per-core substrate (executors, SO_REUSEPORT listeners, mesh,
//! gather) is the `shards` crate.

pub mod admin;
pub mod admit;
pub mod auth;
pub mod close;
pub mod cmd;
pub mod config;
pub mod conn;
pub mod dashboard;
pub mod directory;
pub mod host;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod packet;
pub mod prometheus;
pub mod proto;
pub mod registry;
pub mod router;
pub mod server;
pub mod session;
pub mod shard;
pub mod ws;

pub use config::Config;
pub use server::Gateway;
