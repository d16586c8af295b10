//! Start and stop a whole gateway: listeners, shards, control plane.
//!
//! [`Gateway::start`] brings services up in dependency order — limits, client
//! listeners (refusing a port somebody listens on), the location directory and shard
//! inboxes, the shards, then the control-plane thread (admin API and the cluster
//! registry's connection, which keeps retrying if Redis is down) — and returns once
//! all of them run. [`Gateway::shutdown`] drains in reverse: the node stops admitting,
//! every shard stops accepting and closes its clients with 1001 and a jittered
//! `retry_after_ms`, the shards stop, then the control plane. Tests start a real
//! gateway in-process on port 0 the same way `main` does.

use crate::auth::Verifier;
use crate::config::Config;
use crate::node::Node;
use crate::router::{Drain, ShardMsg};
use crate::service;
use shards::{Mesh, Pool, PoolConfig};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::info;

/// Why the gateway could not start. One line, naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Key material.
    #[error(transparent)]
    Key(#[from] crate::auth::KeyError),
    /// Client listener.
    #[error("server.listen: {0}")]
    Listen(#[from] shards::ListenError),
    /// Admin listener.
    #[error("server.admin_listen {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A shard.
    #[error(transparent)]
    Pool(#[from] shards::PoolError),
    /// The control-plane thread could not be started (thread, runtime or admin socket).
    #[error("control plane: {0}")]
    Control(#[source] std::io::Error),
    /// The control-plane thread ended before it was ready.
    #[error("control plane: the thread ended during start-up")]
    ControlGone,
    /// The cluster registry (e.g. a `cluster.redis_url` that does not parse). Redis
    /// being down is not a start-up error: the node starts and keeps retrying.
    #[error("{0}")]
    Registry(#[from] crate::registry::RegistryError),
}

/// A running gateway.
pub struct Gateway {
    node: Arc<Node>,
    ws_addr: SocketAddr,
    admin_addr: SocketAddr,
    pool: Option<Pool<()>>,
    /// The shards' listening sockets (owned by the shards until they stop), so that
    /// [`Gateway::shutdown`] can take every one out of the `SO_REUSEPORT` group at once.
    listener_fds: Vec<RawFd>,
    control: Option<std::thread::JoinHandle<()>>,
    stop_control: tokio::sync::watch::Sender<bool>,
}

impl Gateway {
    /// Starts a gateway with `config`; returns when every shard and the admin API run.
    pub fn start(config: Config) -> Result<Self, StartError> {
        let verifier = Verifier::from_config(&config.auth)?;
        let (_, nofile, _) = crate::limits::raise_nofile();
        crate::host::warn_below_recommendations();
        let max_connections = crate::limits::effective_max_connections(config.connection.max_connections, nofile);
        let shard_count = config.shard_count();

        let mut listeners = shards::bind_reuseport(
            config.server.listen,
            shard_count,
            i32::try_from(config.server.backlog).unwrap_or(i32::MAX),
            config.server.reuse_port_join,
        )?;
        let ws_addr = listeners.local_addr;
        let admin = std::net::TcpListener::bind(config.server.admin_listen)
            .map_err(|source| StartError::Admin { addr: config.server.admin_listen, source })?;
        let admin_addr =
            admin.local_addr().map_err(|source| StartError::Admin { addr: config.server.admin_listen, source })?;
        admin.set_nonblocking(true).map_err(|source| StartError::Admin { addr: admin_addr, source })?;

        let mesh = Mesh::<ShardMsg>::new(shard_count, config.server.shard_inbox);
        let boot_nonce = fastrand::u32(..);
        let registry = crate::registry::from_config(&config, boot_nonce)?;
        let node = Arc::new(Node::new(config, verifier, registry, mesh.sender, max_connections, boot_nonce));

        // Each shard takes its own listener fd and inbox exactly once.
        type Slot = Option<(RawFd, flume::Receiver<ShardMsg>)>;
        let slots: Vec<Slot> =
            mesh.receivers.into_iter().enumerate().map(|(i, rx)| listeners.take(i).map(|fd| (fd, rx))).collect();
        let listener_fds: Vec<RawFd> = slots.iter().flatten().map(|(fd, _)| *fd).collect();
        let slots = Arc::new(Mutex::new(slots));
        let pool_config = PoolConfig {
            shards: shard_count,
            io_memory: node.config.server.io_memory_kib << 10,
            ring_depth: node.config.server.ring_depth,
            pin: node.config.server.pin_cores,
            name: "imgw-shard".into(),
        };
        let pool = {
            let node = node.clone();
            Pool::start(&pool_config, move |id| {
                let node = node.clone();
                let slot = slots.lock().ok().and_then(|mut s| s.get_mut(id).and_then(Option::take));
                async move {
                    if let Some((fd, inbox)) = slot {
                        service::run(id, node, fd, inbox).await;
                    }
                }
            })?
        };

        let (stop_control, stop_rx) = tokio::sync::watch::channel(false);
        let control = {
            let node = node.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
            let handle = std::thread::Builder::new()
                .name("imgw-control".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    rt.block_on(async move {
                        let listener = match tokio::net::TcpListener::from_std(admin) {
                            Ok(l) => l,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        };
                        let _ = ready_tx.send(Ok(()));
                        // The registry sees the node only as its `LocalNode`.
                        let registry = node.registry().run(node.clone(), stop_rx.clone());
                        tokio::join!(crate::admin::serve(listener, node, stop_rx), registry);
                    });
                })
                .map_err(StartError::Control)?;
            ready_rx.recv().map_err(|_| StartError::ControlGone)?.map_err(StartError::Control)?;
            handle
        };
        info!(
            listen = %ws_addr,
            admin = %admin_addr,
            shards = shard_count,
            gateway_id = node.gateway_id(),
            max_connections,
            "im-gateway started"
        );
        Ok(Self { node, ws_addr, admin_addr, pool: Some(pool), listener_fds, control: Some(control), stop_control })
    }

    /// Address of the client WebSocket listener.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// Address of the admin API.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Shared node state (config, router, admission).
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Starts draining: no new upgrades, every client closed with 1001 and a jittered
    /// retry hint. Returns at once; [`Gateway::wait`] waits for the end.
    pub fn shutdown(&self) {
        if !self.node.begin_drain() {
            return;
        }
        let s = &self.node.config.server;
        info!(window_ms = s.drain_window_ms, deadline_ms = s.shutdown_timeout_ms, "draining");
        // Leave the SO_REUSEPORT group on every shard at once, before any shard tells
        // its clients to come back: a client reconnecting after its 1001 must reach a
        // process that stays (the new one of a hand-over), not a sibling shard of ours
        // that has not handled its Drain yet. Each shard's accept loop ends on it.
        for &fd in &self.listener_fds {
            // SAFETY: shutdown(2) on a listening socket a shard owns and keeps open
            // until it has handled the Drain sent below.
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
        self.node.router().drain(Drain { window_ms: s.drain_window_ms, deadline_ms: s.shutdown_timeout_ms });
    }

    /// Waits until every shard and the control plane have stopped.
    pub fn wait(mut self) {
        self.join();
    }

    fn join(&mut self) {
        if let Some(pool) = self.pool.take() {
            for (shard, result) in pool.join().into_iter().enumerate() {
                if let Err(e) = result {
                    tracing::error!(shard, cause = %e, "shard ended with an error");
                }
            }
        }
        let _ = self.stop_control.send(true);
        if let Some(control) = self.control.take() {
            let _ = control.join();
        }
        info!("im-gateway stopped");
    }

    /// Drains and waits, bounded by `server.shutdown_timeout_ms` per shard.
    pub fn stop(self) {
        self.shutdown();
        self.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.pool.is_some() {
            self.shutdown();
            self.join();
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment [`Signals::install`] returns (for `main`).
///
/// Installed before the gateway starts, so a signal that arrives between "im-gateway
/// started" and the wait is held for [`Signals::wait`] rather than killing the process
/// with the default action (no drain).
pub struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (term, int) = rt.block_on(async {
            Ok::<_, std::io::Error>((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
        })?;
        Ok(Self { rt, term, int })
    }

    /// Waits for the first SIGTERM or SIGINT since [`Signals::install`] and names it.
    pub fn wait(mut self) -> &'static str {
        let (term, int) = (&mut self.term, &mut self.int);
        self.rt.block_on(async {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        })
    }
}

/// How long `main` waits for a drain before giving up, beyond the configured deadline.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);
