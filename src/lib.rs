//! im-gateway: a thread-per-core WebSocket connection gateway for instant messaging.
//!
//! Layout (data plane first, then control plane; each room uses only those below it,
//! see docs/ARCHITECTURE.md):
//! - [`server`]: starts and stops a whole gateway (`Gateway::start`, `shutdown`, `wait`).
//! - [`service`]: one shard as a running service: its accept loop, ticker, stall probe
//!   and inbox, started in dependency order and drained in reverse.
//! - [`conn`]: one connection: the upgrade, then the state machine between socket and
//!   command handlers.
//! - [`cmd`]: one file per inbound command (AUTH, HEARTBEAT, ACK, UPSTREAM).
//! - [`shard`]: what one core owns ([`shard::Shard`]: session table, metrics, scratch
//!   buffer) and does with it: binds sessions, applies its inbox to its connections.
//! - [`node`]: what every shard and the control plane share ([`node::Node`]: config,
//!   verifier, router, the drain [`node::Phase`]) and a connection's admission slot.
//! - [`router`]: the delivery facade: every push, broadcast, kick and answer, from any
//!   source, is planned there in one directory pass and handed to the shards (the
//!   local one in place), then to the registry for other nodes; and the messages
//!   shards exchange.
//! - [`directory`]: the lock-free user -> sessions map, the only cross-shard structure,
//!   which also orders racing logins (owned by the router).
//! - [`registry`]: where users are beyond this node: the `Registry` trait, embedded
//!   (single node) or Redis (cluster mode: keys, write loop, pub/sub delivery, upstream
//!   bus), driven from the control-plane thread; it sees the node as a `LocalNode`.
//! - [`session`]: a connection's shared face (outbound queue, close request), the
//!   shard's session table, and how sessions are named (`SessionId`, `SessionName`).
//! - [`ws`]: the WebSocket wire: HTTP upgrade parsing, allowed origins and the frame codec.
//! - [`admin`], [`prometheus`], [`dashboard`], [`demo`]: the admin HTTP API on the
//!   control-plane thread, its Prometheus exposition, its embedded per-core dashboard
//!   page and the example chat page (`/demo/`, on the JavaScript client).
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
pub mod demo;
pub mod directory;
pub mod host;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod packet;
pub mod prometheus;
pub mod proto;
pub mod registry;
pub mod router;
pub mod server;
pub mod service;
pub mod session;
pub mod shard;
pub mod ws;

pub use config::Config;
pub use server::Gateway;
