//! What can go wrong: opening a connection ([`ConnectError`]), a request
//! ([`RequestError`]), and the client's reports of both ([`ClientError`]).

use crate::conn::Closed;
use std::time::Duration;

/// Why an attempt to connect failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("bad url: {0}")]
    Url(String),
    #[error("token: {0}")]
    Token(String),
    /// TCP connect or the socket failed (refused, reset, no route, local limits).
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The upgrade was answered with an HTTP status.
    #[error("upgrade refused: HTTP {status}")]
    Refused { status: u16, retry_after: Option<Duration> },
    /// The upgrade failed otherwise (an answer that is not HTTP, a bad accept key ...).
    #[error("upgrade failed: {0}")]
    Upgrade(String),
    /// The server closed before the AUTH result (4001: the token was refused).
    #[error("closed {} before the AUTH result{}", .0.code, if .0.reason.is_empty() { String::new() } else { format!(" ({})", .0.reason) })]
    Closed(Box<Closed>),
    /// What came was not a packet, or the socket failed mid-way.
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("no upgrade and AUTH result within {0:?}")]
    Timeout(Duration),
}

/// Why a request (`Client::send`) failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// The server answered with ERROR (codes: docs/PROTOCOL.md).
    #[error("server error {code}: {message}")]
    Server { code: i32, message: String },
    #[error("not connected")]
    NotConnected,
    /// The connection went before the answer: the message may or may not have arrived
    /// (give it a `client_msg_id` so the backend can dedupe).
    #[error("disconnected before the answer")]
    Disconnected,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The client is closed.
    #[error("client closed")]
    Closed,
}

/// An `Event::Error`: something went wrong; the client backs off and tries again
/// unless the matching `Disconnected` says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An attempt failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// An established connection's socket failed, or the server sent something that is
    /// not a packet.
    #[error("connection failed: {0}")]
    Socket(String),
    /// Nothing came from the server for this long (heartbeats unanswered).
    #[error("nothing from the server for {0:?}")]
    Dead(Duration),
    /// The server sent ERROR that answers no request of ours.
    #[error("server error {code}: {message}")]
    Server { code: i32, message: String },
}
