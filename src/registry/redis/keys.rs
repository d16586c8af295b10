//! The names of the Redis keys and channels of one gateway (`{p}` = `cluster.key_prefix`),
//! as the contract's "Cluster mode" lists them.

/// Key and channel names, as seen from gateway `gateway_id`.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// `cluster.key_prefix`.
    pub(super) prefix: String,
    /// The gateway whose keys these are.
    pub(super) gateway_id: String,
}

impl Keys {
    /// The same names, as seen from another gateway (to clean up after it).
    pub(super) fn of(&self, gateway: &str) -> Keys {
        Keys { prefix: self.prefix.clone(), gateway_id: gateway.to_string() }
    }

    /// `{p}location:{uid}` HASH session name -> gateway id.
    pub(super) fn location(&self, user: i64) -> String {
        format!("{}location:{user}", self.prefix)
    }

    /// `{p}gateway:{gw}:users` SET of the gateway's users.
    pub(super) fn users(&self) -> String {
        format!("{}gateway:{}:users", self.prefix, self.gateway_id)
    }

    /// `{p}gateways` ZSET gateway id -> last heartbeat (ms since the epoch).
    pub(super) fn gateways(&self) -> String {
        format!("{}gateways", self.prefix)
    }

    /// `{p}gateway:{gw}:stats` HASH, a gateway's summary.
    pub(super) fn stats(&self, gateway: &str) -> String {
        format!("{}gateway:{gateway}:stats", self.prefix)
    }

    /// `{p}push:{gw}` channel of `Downstream`s for one gateway.
    pub(super) fn push(&self, gateway: &str) -> String {
        format!("{}push:{gateway}", self.prefix)
    }

    /// `{p}push:all` broadcast channel.
    pub(super) fn push_all(&self) -> String {
        format!("{}push:all", self.prefix)
    }

    /// `{p}kick:{gw}` channel of `KickNotice`s for one gateway.
    pub(super) fn kick(&self, gateway: &str) -> String {
        format!("{}kick:{gateway}", self.prefix)
    }

    /// `{p}upstream` STREAM.
    pub(super) fn upstream(&self) -> String {
        format!("{}upstream", self.prefix)
    }
}
