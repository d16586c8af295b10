//! Configuration: one serde struct, layered `flags > env > file > defaults`.
//!
//! Owns the meaning, default and unit of every key (mirrored, commented, in
//! `config/gateway.toml`) and [`Config::validate`], which names the bad key. The CLI
//! (clap, in `main.rs`) turns its flags into [`Overrides`]; [`Config::load`] does the
//! layering. Environment keys are `IMGW_<SECTION>_<KEY>`, e.g. `IMGW_AUTH_JWT_SECRET`.
//!
//! One file on purpose, though longer than the others: the sections, their defaults,
//! the layering, `validate` and the tests of defaults and rejections are one thing (a
//! key's meaning, default and check are read together), like pingora's `ServerConf`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration that could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file, an env variable or a flag does not fit the schema.
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    /// A value is out of range.
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Everything the gateway reads at start-up.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners, shards, node identity.
    pub server: ServerConfig,
    /// Token verification.
    pub auth: AuthConfig,
    /// Per-connection limits and timers.
    pub connection: ConnectionConfig,
    /// Multi-device policy.
    pub sessions: SessionsConfig,
    /// Admin HTTP API.
    pub admin: AdminConfig,
    /// Redis cluster mode (off when `redis_url` is unset).
    pub cluster: ClusterConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Client WebSocket listener. Default `127.0.0.1:8080` (loopback: a development
    /// start reaches no network); production names its public address.
    pub listen: SocketAddr,
    /// Admin HTTP listener. Default `127.0.0.1:9090` (keep it private). A non-loopback
    /// address needs `admin.token` (or `admin.insecure = true`).
    pub admin_listen: SocketAddr,
    /// Number of shards (one executor per core). `0` = every online core. Default 0.
    pub shards: usize,
    /// This node's id in AuthResult, the admin API and cluster keys. Default `gw-<hostname>`.
    pub gateway_id: String,
    /// `listen(2)` backlog of each shard's listener. Default 4096.
    pub backlog: u32,
    /// Pin shard i to CPU i. Default true.
    pub pin_cores: bool,
    /// glommio io_memory per shard, KiB; each shard locks about 3x this. Default 64.
    pub io_memory_kib: usize,
    /// io_uring ring depth per shard (each of glommio's three rings). Idle sockets keep
    /// a readiness poll in the ring, and the kernel's cancel lookup among them scales
    /// with the ring's size: keep it large. Default 4096.
    pub ring_depth: usize,
    /// Capacity of each shard's cross-shard inbox, messages. Default 8192.
    pub shard_inbox: usize,
    /// Time a client has to complete the HTTP upgrade, ms. Default 5000.
    pub handshake_timeout_ms: u64,
    /// Largest HTTP upgrade request accepted, bytes. Default 8192.
    pub max_handshake_bytes: usize,
    /// On SIGTERM/SIGINT, clients are told to come back after a random delay spread over
    /// this window, ms (`retry_after_ms` in the 1001 close reason). Default 5000.
    pub drain_window_ms: u64,
    /// Hard deadline for a graceful shutdown, ms. Default 10000.
    pub shutdown_timeout_ms: u64,
    /// Join an existing SO_REUSEPORT group on `listen` instead of refusing to start
    /// (zero-downtime hand-over). Default false.
    pub reuse_port_join: bool,
    /// Handshakes each shard admits per second (token bucket refill); above it the
    /// upgrade gets 503 + Retry-After. 0 = no limit. Default 0.
    pub handshake_rate_per_s: u32,
    /// Handshake bucket size per shard (burst); 0 = one second's worth. Default 0.
    pub handshake_burst: u32,
    /// Connections one client IP address may hold in this process; above it the
    /// upgrade gets 503 + Retry-After. 0 = no limit. Default 0.
    pub max_connections_per_ip: u32,
    /// Browser origins (`scheme://host[:port]`) allowed to open a WebSocket; an upgrade
    /// whose `Origin` is not listed gets 403 (cross-site WebSocket hijacking). Upgrades
    /// without `Origin` (native apps) are not affected. Empty = any origin. Env:
    /// comma-separated. Default empty.
    pub allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            admin_listen: "127.0.0.1:9090".parse().expect("literal address"),
            shards: 0,
            gateway_id: default_gateway_id(),
            backlog: 4096,
            pin_cores: true,
            io_memory_kib: 64,
            ring_depth: 4096,
            shard_inbox: 8192,
            handshake_timeout_ms: 5000,
            max_handshake_bytes: 8192,
            drain_window_ms: 5000,
            shutdown_timeout_ms: 10_000,
            reuse_port_join: false,
            handshake_rate_per_s: 0,
            handshake_burst: 0,
            max_connections_per_ip: 0,
            allowed_origins: Vec::new(),
        }
    }
}

fn default_gateway_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_string());
    format!("gw-{host}")
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 shared secret (used when `jwt_public_key` is unset). Default is the
    /// development secret [`DEV_JWT_SECRET`], refused on a non-loopback client listener
    /// unless `allow_dev_secret`.
    pub jwt_secret: String,
    /// File holding the HS256 secret (its content, trimmed), e.g. a systemd credential
    /// or a Kubernetes secret; when set it takes the place of `jwt_secret`. Read by
    /// [`Config::load`].
    pub jwt_secret_file: Option<PathBuf>,
    /// The secret being rotated out: tokens signed with it are still accepted (HS256
    /// only), so users keep their tokens while the issuer switches to `jwt_secret`.
    /// Remove it once every token signed with it has expired.
    pub jwt_secret_previous: Option<String>,
    /// File holding `jwt_secret_previous` (content, trimmed); takes its place when set.
    pub jwt_secret_previous_file: Option<PathBuf>,
    /// Accept the development secret on a non-loopback client listener (a lab only:
    /// anyone can mint a token for any user). Logged as a warning at every start.
    /// Default false.
    pub allow_dev_secret: bool,
    /// PEM file with an RSA or EC public key: tokens must then be RS256 or ES256.
    pub jwt_public_key: Option<PathBuf>,
    /// PEM private key matching `jwt_public_key`, only for `im-gateway token`.
    pub jwt_private_key: Option<PathBuf>,
    /// Required `iss` claim, when set.
    pub issuer: Option<String>,
    /// Required `aud` claim, when set.
    pub audience: Option<String>,
    /// Time an unauthenticated connection has to send AUTH, ms. Default 5000.
    pub auth_timeout_ms: u64,
    /// Clock skew tolerated on `exp`, s. Default 0.
    pub leeway_s: u64,
}

/// The development secret the default config ships with.
pub const DEV_JWT_SECRET: &str = "im-gateway-dev-secret-change-me";

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: DEV_JWT_SECRET.to_string(),
            jwt_secret_file: None,
            jwt_secret_previous: None,
            jwt_secret_previous_file: None,
            allow_dev_secret: false,
            jwt_public_key: None,
            jwt_private_key: None,
            issuer: None,
            audience: None,
            auth_timeout_ms: 5000,
            leeway_s: 0,
        }
    }
}

/// `[connection]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionConfig {
    /// Heartbeat interval announced to clients in AuthResult, s. Default 30.
    pub heartbeat_interval_s: u64,
    /// No inbound frame for this long closes with 4008, s. Default 90.
    pub idle_timeout_s: u64,
    /// Largest inbound WebSocket message, bytes; larger closes with 1009. Default 65536.
    pub max_frame_bytes: usize,
    /// Connections per process; 0 = the open-file limit less 64 reserved fds. Above it,
    /// upgrades get 503 + Retry-After. Default 0.
    pub max_connections: usize,
    /// Outbound queue per connection, frames; overflow closes with 4009. Default 256.
    pub outbound_queue: usize,
    /// Outbound queue per connection, bytes; overflow closes with 4009. Default 1048576.
    pub outbound_queue_bytes: usize,
    /// After a close frame is queued, how long the client has to read it before the
    /// socket is dropped, ms. Default 2000.
    pub close_linger_ms: u64,
    /// UPSTREAM packets per second a connection may send (token bucket refill). Default 50.
    pub upstream_rate_per_s: u32,
    /// UPSTREAM burst (token bucket size). Default 100.
    pub upstream_burst: u32,
    /// UPSTREAMs refused for rate in a row before the connection is closed with 4004.
    /// Default 20.
    pub rate_limit_strikes: u32,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_s: 30,
            idle_timeout_s: 90,
            max_frame_bytes: 65_536,
            max_connections: 0,
            outbound_queue: 256,
            outbound_queue_bytes: 1 << 20,
            close_linger_ms: 2000,
            upstream_rate_per_s: 50,
            upstream_burst: 100,
            rate_limit_strikes: 20,
        }
    }
}

/// `[sessions]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// `allow` | `kick_same_platform` | `single`. Default `kick_same_platform`.
    pub multi_login: MultiLogin,
}

/// What a new login does to the user's older sessions.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MultiLogin {
    /// Every session stays.
    Allow,
    /// A session on the same platform is kicked.
    #[default]
    KickSamePlatform,
    /// Every older session is kicked.
    Single,
}

impl MultiLogin {
    /// The reason a displaced session is given (KICK packet and close 4003), on this
    /// node and across nodes.
    pub const KICK_REASON: &'static str = "replaced by a newer login";

    /// The multi-login rule, in one place: whether a new login on `new_platform`
    /// displaces (kicks) an older session of the same user on `old_platform`. The
    /// directory applies it on this node, the Redis registry across nodes.
    pub fn displaces(self, old_platform: i32, new_platform: i32) -> bool {
        match self {
            MultiLogin::Allow => false,
            MultiLogin::KickSamePlatform => old_platform == new_platform,
            MultiLogin::Single => true,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// When set, every admin request needs `Authorization: Bearer <token>`
    /// (`/healthz`, `/readyz` and the `/dashboard` page excepted), compared in constant
    /// time. Required when `server.admin_listen` is not a loopback address.
    pub token: Option<String>,
    /// File holding the token (its content, trimmed); takes the place of `token` when
    /// set. Read by [`Config::load`].
    pub token_file: Option<PathBuf>,
    /// Serve the admin API on a non-loopback address without a token (a lab only:
    /// anyone who reaches it can push to, broadcast to and kick every user). Logged as a
    /// warning at every start. Default false.
    pub insecure: bool,
}

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://host:port/db`; unset = embedded single-node registry.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel. Default `im:`.
    pub key_prefix: String,
    /// TTL of `{prefix}location:{uid}` and of this node's user set, s: a node that dies
    /// without draining vanishes from the registry this long after its last sweep.
    /// Default 60.
    pub location_ttl_s: u64,
    /// Every this often the node renews the TTLs of its users' locations, re-files any
    /// that are missing, and beats in `{prefix}gateways`, s. Must be below
    /// `location_ttl_s`. Default 20.
    pub sweep_interval_s: u64,
    /// `MAXLEN ~` of `XADD {prefix}upstream`; 0 = no cap. Default 1000000.
    pub upstream_maxlen: u64,
    /// A Redis command (or pipeline) not answered within this is failed (an UPSTREAM
    /// then gets ERROR 3), ms. Default 2000.
    pub command_timeout_ms: u64,
    /// Reconnect back-off cap while Redis is unreachable, ms (starts at 100, doubles).
    /// Default 1000.
    pub reconnect_max_ms: u64,
    /// Capacity of each queue from the shards to the Redis client (session changes,
    /// UPSTREAMs), entries. A full queue refuses an UPSTREAM (ERROR 3) and schedules a
    /// full re-sync of the registry. Default 65536.
    pub queue: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            key_prefix: "im:".to_string(),
            location_ttl_s: 60,
            sweep_interval_s: 20,
            upstream_maxlen: 1_000_000,
            command_timeout_ms: 2000,
            reconnect_max_ms: 1000,
            queue: 65_536,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` | `json`. Default `pretty`.
    pub format: LogFormat,
    /// tracing filter (`RUST_LOG` syntax), overridden by `RUST_LOG`. Default `info`.
    pub level: String,
    /// Lines per second, per shard and per kind, about misbehaving clients (refused
    /// upgrades and tokens, protocol errors, 4009 cuts, kicks); the rest are counted
    /// and reported once a second in one line. 0: no limit. Default 10.
    pub warn_per_second: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Pretty, level: "info".to_string(), warn_per_second: 10 }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Values given on the command line; they beat env and file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub shards: Option<usize>,
    pub gateway_id: Option<String>,
    pub redis_url: Option<String>,
}

const SECTIONS: &[&str] = &["server", "auth", "connection", "sessions", "admin", "cluster", "log"];

impl Config {
    /// Loads `defaults <- file <- env <- flags` and validates.
    ///
    /// `path` = None reads `config/gateway.toml` when it exists. `env` is the process
    /// environment (a parameter so tests need not mutate it).
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let default_path = Path::new("config/gateway.toml");
        let path = path.or_else(|| default_path.exists().then_some(default_path));
        let mut tree = toml::Table::new();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
            tree = text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
                origin: path.display().to_string(),
                message: one_line(&e, Some(&text)),
            })?;
            // Check the file alone first so its errors name the file.
            Self::from_tree(tree.clone(), &path.display().to_string())?;
        }
        apply_env(&mut tree, env)?;
        let mut config = Self::from_tree(tree, "environment")?;
        let s = &mut config.server;
        if let Some(v) = overrides.listen {
            s.listen = v;
        }
        if let Some(v) = overrides.admin_listen {
            s.admin_listen = v;
        }
        if let Some(v) = overrides.shards {
            s.shards = v;
        }
        if let Some(v) = &overrides.gateway_id {
            s.gateway_id = v.clone();
        }
        if let Some(v) = &overrides.redis_url {
            config.cluster.redis_url = Some(v.clone());
        }
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Replaces each secret that has a `*_file` key with that file's content, trimmed
    /// (so `validate` and the rest of the gateway only ever see `jwt_secret`,
    /// `jwt_secret_previous` and `token`).
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        fn read(key: &'static str, path: &Path) -> Result<String, ConfigError> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Invalid { key, message: format!("{}: {e}", path.display()) })?;
            let secret = text.trim();
            if secret.is_empty() {
                return Err(ConfigError::Invalid { key, message: format!("{} is empty", path.display()) });
            }
            Ok(secret.to_string())
        }
        let (a, admin) = (&mut self.auth, &mut self.admin);
        if let Some(path) = &a.jwt_secret_file {
            a.jwt_secret = read("auth.jwt_secret_file", path)?;
        }
        if let Some(path) = &a.jwt_secret_previous_file {
            a.jwt_secret_previous = Some(read("auth.jwt_secret_previous_file", path)?);
        }
        if let Some(path) = &admin.token_file {
            admin.token = Some(read("admin.token_file", path)?);
        }
        Ok(())
    }

    /// The listeners clients reach, by key. Every one of them is held to the
    /// development-secret rule ([`Config::validate`]); a new client endpoint (the raw
    /// TCP `server.tcp_listen`) belongs in this list.
    pub fn client_listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        vec![("server.listen", self.server.listen)]
    }

    /// A client listener beyond loopback while a development secret signs or verifies
    /// tokens: the secret's key, the listener's key and address.
    fn dev_secret_exposed(&self) -> Option<(&'static str, &'static str, SocketAddr)> {
        let a = &self.auth;
        if a.jwt_public_key.is_some() {
            return None;
        }
        let secret = if a.jwt_secret == DEV_JWT_SECRET {
            "auth.jwt_secret"
        } else if a.jwt_secret_previous.as_deref() == Some(DEV_JWT_SECRET) {
            "auth.jwt_secret_previous"
        } else {
            return None;
        };
        let (listener, addr) = self.client_listeners().into_iter().find(|(_, addr)| !is_loopback(*addr))?;
        Some((secret, listener, addr))
    }

    /// The admin API listens beyond loopback and takes requests without a token.
    fn admin_exposed(&self) -> Option<SocketAddr> {
        let addr = self.server.admin_listen;
        (self.admin.token.is_none() && !is_loopback(addr)).then_some(addr)
    }

    /// The insecure settings this config opted into and that are in effect
    /// (`admin.insecure`, `auth.allow_dev_secret`), as `(key, what it allows)`: `main`
    /// logs each as a warning at every start. Empty for a secure config, and for a
    /// default (loopback) one.
    pub fn opt_outs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let (Some(addr), true) = (self.admin_exposed(), self.admin.insecure) {
            out.push((
                "admin.insecure",
                format!(
                    "the admin API on {addr} takes requests without a token: anyone who reaches it can push to, \
                     broadcast to and kick every user; set admin.token or admin.token_file"
                ),
            ));
        }
        if let (Some((secret, listener, addr)), true) = (self.dev_secret_exposed(), self.auth.allow_dev_secret) {
            out.push((
                "auth.allow_dev_secret",
                format!(
                    "{secret} is the shipped development secret and {listener} ({addr}) is not loopback: anyone \
                     can mint a token for any user; set auth.jwt_secret or auth.jwt_secret_file"
                ),
            ));
        }
        out
    }

    fn from_tree(tree: toml::Table, origin: &str) -> Result<Self, ConfigError> {
        Self::deserialize(toml::Value::Table(tree))
            .map_err(|e| ConfigError::Parse { origin: origin.to_string(), message: one_line(&e, None) })
    }

    /// Checks ranges and cross-key rules; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, message: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid { key, message: message.into() })
        }
        let (s, a, c) = (&self.server, &self.auth, &self.connection);
        if s.gateway_id.is_empty() || s.gateway_id.contains(char::is_whitespace) {
            return bad("server.gateway_id", "must be non-empty and contain no whitespace");
        }
        if s.shards > 256 {
            return bad("server.shards", format!("at most 256 (got {})", s.shards));
        }
        if s.backlog == 0 {
            return bad("server.backlog", "must be at least 1");
        }
        if !(s.ring_depth.is_power_of_two() && (64..=32768).contains(&s.ring_depth)) {
            return bad("server.ring_depth", format!("a power of two from 64 to 32768 (got {})", s.ring_depth));
        }
        if !(64..=2048).contains(&s.io_memory_kib) {
            return bad("server.io_memory_kib", format!("between 64 and 2048 (got {})", s.io_memory_kib));
        }
        if s.shard_inbox == 0 {
            return bad("server.shard_inbox", "must be at least 1");
        }
        if s.handshake_timeout_ms == 0 {
            return bad("server.handshake_timeout_ms", "must be at least 1");
        }
        if s.max_handshake_bytes < 256 {
            return bad("server.max_handshake_bytes", "must be at least 256");
        }
        if s.shutdown_timeout_ms == 0 {
            return bad("server.shutdown_timeout_ms", "must be at least 1");
        }
        if a.jwt_public_key.is_none() && a.jwt_secret.len() < 16 {
            return bad("auth.jwt_secret", "must be at least 16 bytes (or set auth.jwt_public_key)");
        }
        if let Some(previous) = &a.jwt_secret_previous {
            if a.jwt_public_key.is_some() {
                return bad("auth.jwt_secret_previous", "only for HS256 secrets: auth.jwt_public_key is set");
            }
            if previous.len() < 16 {
                return bad("auth.jwt_secret_previous", "must be at least 16 bytes");
            }
            if *previous == a.jwt_secret {
                return bad("auth.jwt_secret_previous", "is the same as auth.jwt_secret");
            }
        }
        if let (Some((secret, listener, addr)), false) = (self.dev_secret_exposed(), a.allow_dev_secret) {
            return bad(
                secret,
                format!(
                    "is the shipped development secret and {listener} ({addr}) is not a loopback address: anyone \
                     could mint a token for any user; set auth.jwt_secret or auth.jwt_secret_file \
                     (or auth.allow_dev_secret = true for a lab)"
                ),
            );
        }
        if self.admin.token.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return bad("admin.token", "must not be empty (unset it for no token)");
        }
        if let (Some(addr), false) = (self.admin_exposed(), self.admin.insecure) {
            return bad(
                "admin.token",
                format!(
                    "required when server.admin_listen ({addr}) is not a loopback address: anyone who reaches it \
                     could push to, broadcast to and kick every user; set admin.token or admin.token_file \
                     (or admin.insecure = true for a lab)"
                ),
            );
        }
        if let Some(bad_origin) = s.allowed_origins.iter().find_map(|o| crate::ws::origin::check_entry(o).err()) {
            return bad("server.allowed_origins", bad_origin);
        }
        if a.auth_timeout_ms == 0 {
            return bad("auth.auth_timeout_ms", "must be at least 1");
        }
        if c.heartbeat_interval_s == 0 {
            return bad("connection.heartbeat_interval_s", "must be at least 1");
        }
        if c.idle_timeout_s <= c.heartbeat_interval_s {
            return bad(
                "connection.idle_timeout_s",
                format!("must exceed heartbeat_interval_s ({} <= {})", c.idle_timeout_s, c.heartbeat_interval_s),
            );
        }
        if !(128..=16 << 20).contains(&c.max_frame_bytes) {
            return bad("connection.max_frame_bytes", format!("between 128 and 16777216 (got {})", c.max_frame_bytes));
        }
        if c.outbound_queue == 0 {
            return bad("connection.outbound_queue", "must be at least 1");
        }
        if c.outbound_queue_bytes < 1024 {
            return bad("connection.outbound_queue_bytes", "must be at least 1024");
        }
        if c.upstream_rate_per_s == 0 {
            return bad("connection.upstream_rate_per_s", "must be at least 1");
        }
        if c.upstream_burst == 0 {
            return bad("connection.upstream_burst", "must be at least 1");
        }
        if c.rate_limit_strikes == 0 {
            return bad("connection.rate_limit_strikes", "must be at least 1");
        }
        if self.cluster.key_prefix.is_empty() {
            return bad("cluster.key_prefix", "must not be empty");
        }
        let k = &self.cluster;
        if k.sweep_interval_s == 0 {
            return bad("cluster.sweep_interval_s", "must be at least 1");
        }
        if k.location_ttl_s <= k.sweep_interval_s {
            return bad(
                "cluster.location_ttl_s",
                format!("must exceed sweep_interval_s ({} <= {})", k.location_ttl_s, k.sweep_interval_s),
            );
        }
        if k.command_timeout_ms == 0 {
            return bad("cluster.command_timeout_ms", "must be at least 1");
        }
        if k.reconnect_max_ms < 100 {
            return bad("cluster.reconnect_max_ms", "must be at least 100");
        }
        if k.queue == 0 {
            return bad("cluster.queue", "must be at least 1");
        }
        if let Some(url) = &self.cluster.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis+unix://")) {
                return bad("cluster.redis_url", format!("must start with redis:// (got {url:?})"));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return bad("log.level", format!("not a tracing filter: {:?}", self.log.level));
        }
        Ok(())
    }

    /// Shards to run: `server.shards`, or every online core when 0.
    pub fn shard_count(&self) -> usize {
        match self.server.shards {
            0 => shards::online_cores(),
            n => n,
        }
    }
}

/// Loopback addresses (`127.0.0.0/8`, `::1`, and `::ffff:127.x` written as IPv6) reach
/// no other host; the unspecified address (`0.0.0.0`, `::`) reaches every interface.
fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// A TOML error as one line that starts with where it is: `section.key: message` for a
/// value that does not fit the schema, `line L, column C: message` for bad syntax.
/// (toml's own rendering spans several lines.)
fn one_line(e: &toml::de::Error, input: Option<&str>) -> String {
    let message = e.message().trim().replace('\n', "; ");
    if let (Some(input), Some(span)) = (input, e.span()) {
        let before = input.get(..span.start).unwrap_or(input);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        return format!("line {line}, column {column}: {message}");
    }
    // Without a position, toml names the key in a last line "in `section.key`".
    let rendered = e.to_string();
    let key =
        rendered.trim_end().rsplit('\n').next().and_then(|l| l.strip_prefix("in `")).and_then(|l| l.strip_suffix('`'));
    match key {
        Some(key) => format!("{key}: {message}"),
        None => message,
    }
}

/// Folds `IMGW_<SECTION>_<KEY>=value` into the tree. A value keeps the type the key has
/// by default (so `IMGW_SERVER_GATEWAY_ID=42` stays a string); an unknown section or
/// key is reported by the schema check with its env name.
fn apply_env(tree: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config::default())
        .map_err(|e| ConfigError::Parse { origin: "defaults".into(), message: e.to_string() })?;
    let mut vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with("IMGW_")).collect();
    vars.sort();
    for (name, raw) in vars {
        let rest = name["IMGW_".len()..].to_ascii_lowercase();
        let Some((section, key)) = rest.split_once('_') else {
            return Err(ConfigError::Parse {
                origin: format!("env {name}"),
                message: "expected IMGW_<SECTION>_<KEY>".into(),
            });
        };
        if !SECTIONS.contains(&section) {
            return Err(ConfigError::Parse {
                origin: format!("env {name}"),
                message: format!("unknown section `{section}`, expected one of {SECTIONS:?}"),
            });
        }
        let default = defaults.get(section).and_then(|s| s.get(key));
        let value = match default {
            // String keys, and optional keys (all strings or paths), stay strings.
            Some(toml::Value::String(_)) | None => toml::Value::String(raw),
            // Lists (of strings) are comma-separated.
            Some(toml::Value::Array(_)) => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| toml::Value::String(v.into()))
                    .collect(),
            ),
            Some(_) => {
                format!("v = {raw}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v")).ok_or_else(|| {
                    ConfigError::Parse {
                        origin: format!("env {name}"),
                        message: format!("`{raw}` is not a valid value for {section}.{key}"),
                    }
                })?
            }
        };
        let table = tree.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(table) = table.as_table_mut() else {
            return Err(ConfigError::Parse {
                origin: format!("env {name}"),
                message: format!("`{section}` is not a table"),
            });
        };
        table.insert(key.to_string(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
        assert_eq!(Config::default().sessions.multi_login, MultiLogin::KickSamePlatform);
    }

    #[test]
    fn shipped_file_matches_defaults_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
        let loaded = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap();
        let mut expected = Config::default();
        expected.server.gateway_id = loaded.server.gateway_id.clone();
        assert_eq!(loaded, expected);
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = std::env::temp_dir().join(format!("imgw-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("g.toml");
        std::fs::write(&file, "[server]\nshards = 3\ngateway_id = \"file\"\n[connection]\nidle_timeout_s = 100\n")
            .unwrap();
        let cfg = Config::load(
            Some(&file),
            env(&[
                ("IMGW_SERVER_SHARDS", "5"),
                ("IMGW_SERVER_GATEWAY_ID", "42"),
                ("IMGW_SESSIONS_MULTI_LOGIN", "single"),
            ]),
            &Overrides { shards: Some(7), ..Default::default() },
        )
        .unwrap();
        assert_eq!(cfg.server.shards, 7);
        assert_eq!(cfg.server.gateway_id, "42");
        assert_eq!(cfg.connection.idle_timeout_s, 100);
        assert_eq!(cfg.sessions.multi_login, MultiLogin::Single);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Config::load(None::<&Path>, env(&[("IMGW_CONNECTION_MAX_FRAME_BYTES", "5")]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("connection.max_frame_bytes"), "{err}");
        let err =
            Config::load(None::<&Path>, env(&[("IMGW_CONNECTION_OUTBOUND_QUEUE", "lots")]), &Overrides::default())
                .unwrap_err()
                .to_string();
        assert!(err.contains("connection.outbound_queue"), "{err}");
        let err = Config::load(None::<&Path>, env(&[("IMGW_AUTH_NO_SUCH_KEY", "1")]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_key"), "{err}");
        let err =
            Config::load(None::<&Path>, env(&[("IMGW_SESSIONS_MULTI_LOGIN", "sometimes")]), &Overrides::default())
                .unwrap_err()
                .to_string();
        assert!(err.contains("sometimes") && err.contains("sessions.multi_login"), "{err}");
        let err = Config::load(None::<&Path>, env(&[("IMGW_CLUSTER_LOCATION_TTL_S", "5")]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster.location_ttl_s"), "TTL must exceed the sweep interval: {err}");
        let ok = Config::load(
            None::<&Path>,
            env(&[("IMGW_CLUSTER_REDIS_URL", "redis://127.0.0.1:6379/"), ("IMGW_CLUSTER_KEY_PREFIX", "x:")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            (ok.cluster.redis_url.as_deref(), ok.cluster.key_prefix.as_str()),
            (Some("redis://127.0.0.1:6379/"), "x:")
        );
        assert!(!err.contains('\n'), "one line: {err}");
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Config, String> {
        Config::load(None::<&Path>, env(pairs), &Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn exposure_needs_a_secret_or_an_opt_out() {
        let default = Config::default();
        assert!(is_loopback(default.server.listen) && is_loopback(default.server.admin_listen));
        assert!(default.opt_outs().is_empty(), "a default start opts out of nothing");

        let err = load_env(&[("IMGW_SERVER_ADMIN_LISTEN", "0.0.0.0:9390")]).unwrap_err();
        assert!(err.starts_with("config key admin.token:") && err.contains("0.0.0.0:9390"), "{err}");
        let ok = load_env(&[("IMGW_SERVER_ADMIN_LISTEN", "0.0.0.0:9390"), ("IMGW_ADMIN_INSECURE", "true")]).unwrap();
        assert_eq!(ok.opt_outs().iter().map(|o| o.0).collect::<Vec<_>>(), ["admin.insecure"]);
        let ok = load_env(&[("IMGW_SERVER_ADMIN_LISTEN", "[::]:9390"), ("IMGW_ADMIN_TOKEN", "t0ken")]).unwrap();
        assert!(ok.opt_outs().is_empty());
        load_env(&[("IMGW_SERVER_ADMIN_LISTEN", "[::1]:9390")]).unwrap();
        let err = load_env(&[("IMGW_ADMIN_TOKEN", " ")]).unwrap_err();
        assert!(err.starts_with("config key admin.token:"), "{err}");

        let err = load_env(&[("IMGW_SERVER_LISTEN", "0.0.0.0:8080")]).unwrap_err();
        assert!(err.starts_with("config key auth.jwt_secret:") && err.contains("server.listen"), "{err}");
        let ok = load_env(&[("IMGW_SERVER_LISTEN", "0.0.0.0:8080"), ("IMGW_AUTH_ALLOW_DEV_SECRET", "true")]).unwrap();
        assert_eq!(ok.opt_outs().iter().map(|o| o.0).collect::<Vec<_>>(), ["auth.allow_dev_secret"]);
        let own = [("IMGW_SERVER_LISTEN", "10.0.0.1:8080"), ("IMGW_AUTH_JWT_SECRET", "a-production-secret-0123")];
        assert!(load_env(&own).unwrap().opt_outs().is_empty());
        let err = load_env(&[own[0], own[1], ("IMGW_AUTH_JWT_SECRET_PREVIOUS", DEV_JWT_SECRET)]).unwrap_err();
        assert!(err.starts_with("config key auth.jwt_secret_previous:"), "{err}");
        let err = load_env(&[own[1], ("IMGW_AUTH_JWT_SECRET_PREVIOUS", "a-production-secret-0123")]).unwrap_err();
        assert!(err.contains("same as auth.jwt_secret"), "{err}");
        // A public key replaces the secret: the development secret is not in use then.
        let mut c = Config::default();
        c.server.listen = "0.0.0.0:8080".parse().unwrap();
        c.auth.jwt_public_key = Some("/etc/im-gateway/jwt.pub.pem".into());
        c.validate().unwrap();
    }

    #[test]
    fn allowed_origins_from_env_and_file() {
        let c = load_env(&[("IMGW_SERVER_ALLOWED_ORIGINS", "https://a.example, http://localhost:3000,")]).unwrap();
        assert_eq!(c.server.allowed_origins, ["https://a.example", "http://localhost:3000"]);
        assert!(load_env(&[("IMGW_SERVER_ALLOWED_ORIGINS", "")]).unwrap().server.allowed_origins.is_empty());
        let err = load_env(&[("IMGW_SERVER_ALLOWED_ORIGINS", "https://a.example/app")]).unwrap_err();
        assert!(err.starts_with("config key server.allowed_origins:"), "{err}");
        let err = load_env(&[("IMGW_SERVER_ALLOWED_ORIGINS", "*")]).unwrap_err();
        assert!(err.contains("leave the list empty"), "{err}");
    }

    #[test]
    fn secrets_come_from_files_trimmed() {
        let dir = std::env::temp_dir().join(format!("imgw-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (secret, previous, token, empty) =
            (dir.join("jwt"), dir.join("jwt-previous"), dir.join("admin"), dir.join("empty"));
        std::fs::write(&secret, "  a-secret-from-a-file-0123\n").unwrap();
        std::fs::write(&previous, "the-previous-secret-0123\n").unwrap();
        std::fs::write(&token, "admin-token-from-a-file\n").unwrap();
        std::fs::write(&empty, "\n").unwrap();
        let path = |p: &Path| p.display().to_string();
        let c = load_env(&[
            ("IMGW_AUTH_JWT_SECRET", "overridden-by-the-file"),
            ("IMGW_AUTH_JWT_SECRET_FILE", &path(&secret)),
            ("IMGW_AUTH_JWT_SECRET_PREVIOUS_FILE", &path(&previous)),
            ("IMGW_ADMIN_TOKEN_FILE", &path(&token)),
            ("IMGW_SERVER_LISTEN", "0.0.0.0:8080"),
            ("IMGW_SERVER_ADMIN_LISTEN", "0.0.0.0:9090"),
        ])
        .unwrap();
        assert_eq!(c.auth.jwt_secret, "a-secret-from-a-file-0123");
        assert_eq!(c.auth.jwt_secret_previous.as_deref(), Some("the-previous-secret-0123"));
        assert_eq!(c.admin.token.as_deref(), Some("admin-token-from-a-file"));
        assert!(c.opt_outs().is_empty());
        let err = load_env(&[("IMGW_ADMIN_TOKEN_FILE", &path(&empty))]).unwrap_err();
        assert!(err.starts_with("config key admin.token_file:") && err.contains("empty"), "{err}");
        let err = load_env(&[("IMGW_AUTH_JWT_SECRET_FILE", &path(&dir.join("missing")))]).unwrap_err();
        assert!(err.starts_with("config key auth.jwt_secret_file:") && err.contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
