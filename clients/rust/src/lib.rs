//! im-gateway-client: the Rust client of im-gateway, on tokio and tokio-tungstenite.
//!
//! Layout:
//! - [`client`]: [`Client`] and [`Events`]: one logical connection that reconnects by
//!   itself (back-off and the server's hints), heartbeats, matches requests to answers,
//!   keeps the resume position and acknowledges pushes. What applications use.
//! - [`conn`]: [`Connection`]: one socket, upgraded and authenticated, packets both
//!   ways, no timers. What load tests use to measure one open at a time.
//! - [`backoff`]: the reconnect policy (full-jitter exponential back-off, `retry_after_ms`
//!   of a 1001 close, `Retry-After` of a 503, which endings are final).
//! - [`error`]: what can go wrong; [`proto`]: the wire types from `proto/im.proto`.
//!
//! ```no_run
//! use im_gateway_client::{Client, Config, Event, UpstreamMsg};
//! # async fn demo(token: String) {
//! let (client, mut events) = Client::connect(Config::new("ws://127.0.0.1:8080/ws", token));
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Connected(s) => println!("connected as {} on {}", s.user_id, s.gateway_id),
//!         Event::Push(p) => println!("push {} from {}: {}", p.msg_id, p.sender_id, p.content),
//!         Event::Disconnected(d) if !d.will_reconnect => break,
//!         _ => {}
//!     }
//! }
//! # let _ = client.send(UpstreamMsg { receiver_id: 2, content: "hi".into(), ..Default::default() }).await;
//! # }
//! ```

pub mod backoff;
pub mod client;
pub mod conn;
pub mod error;
pub mod proto;

pub use backoff::{Backoff, BackoffConfig, Cause};
pub use client::{Client, Config, Disconnect, Event, Events, State, Token};
pub use conn::{ConnectOptions, Connection, Incoming, TokenTransport};
pub use error::{ClientError, ConnectError, RequestError};
pub use proto::{AuthResult, PushMsg, UpstreamMsg, UpstreamResult};

/// Where a client stands in its user's push sequence (reliable delivery): the last
/// `PushMsg.seq` it received and the epoch that seq belongs to. Sent at every reconnect
/// so the gateway replays what came meanwhile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    pub last_seq: i64,
    pub epoch: String,
}
