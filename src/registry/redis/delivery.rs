//! Pub/sub delivery between nodes. Outbound (for the router, on behalf of the admin
//! API): look the named users up, group them by the node holding them, and publish one
//! `Downstream` (push) or `KickNotice` (kick) per node, or a broadcast on `{p}push:all`.
//! Inbound: the messages on this node's channels, decoded and handed to the
//! [`LocalNode`], which delivers them on this node only. Bad payloads are logged and
//! dropped.

use super::Inner;
use crate::packet;
use crate::proto::{Downstream, KickNotice, PushMsg};
use crate::registry::{LocalNode, RegistryError, RemotePush, RemoteSession};
use crate::session::{SessionId, SessionName};
use futures_lite::StreamExt;
use prost::Message;
use std::collections::HashMap;
use tracing::warn;

/// Users per lookup pipeline.
const LOOKUP_CHUNK: usize = 512;

impl Inner {
    /// Serves the subscription until it ends (which is taken as losing Redis).
    pub(super) async fn deliveries(
        &self,
        local: &dyn LocalNode,
        mut messages: redis::aio::PubSubStream,
    ) -> Result<(), RegistryError> {
        while let Some(m) = messages.next().await {
            self.on_message(local, m).await;
        }
        Err(RegistryError::SubscriptionLost)
    }

    /// Handles one pub/sub message.
    async fn on_message(&self, local: &dyn LocalNode, msg: redis::Msg) {
        let channel = msg.get_channel_name();
        let gw = self.gateway_id();
        if channel == self.keys.kick(gw) {
            let Ok(notice) = KickNotice::decode(msg.get_payload_bytes()) else {
                warn!(channel, "KickNotice does not decode; dropped");
                return;
            };
            let reason = if notice.reason.is_empty() { "kicked" } else { notice.reason.as_str() };
            // Names of another run of this gateway id are not ours (nor are their ids).
            let ours: Vec<SessionId> = notice
                .session_ids
                .iter()
                .filter_map(|s| SessionName::parse(s))
                .filter(|n| n.nonce == self.nonce)
                .map(|n| n.id)
                .collect();
            if !ours.is_empty() {
                local.kick(notice.user_id, &ours, reason).await;
            }
            return;
        }
        let Ok(down) = Downstream::decode(msg.get_payload_bytes()) else {
            warn!(channel, "Downstream does not decode; dropped");
            return;
        };
        if down.origin_gateway == gw {
            return; // our own broadcast: delivered locally already
        }
        let Some(mut push) = down.msg else {
            warn!(channel, "Downstream without msg; dropped");
            return;
        };
        if push.server_ts_us == 0 {
            push.server_ts_us = packet::now_us();
        }
        if down.all {
            local.broadcast(&push).await;
        } else {
            local.push(&down.user_ids, &push).await;
        }
    }

    /// Each user's sessions on other nodes.
    pub(super) async fn locate(&self, users: &[i64]) -> Result<Vec<Vec<RemoteSession>>, RegistryError> {
        let mut conn = self.conn()?;
        let mut out = Vec::with_capacity(users.len());
        for chunk in users.chunks(LOOKUP_CHUNK) {
            let mut pipe = redis::pipe();
            for &u in chunk {
                pipe.hgetall(self.keys.location(u));
            }
            let maps: Vec<HashMap<String, String>> = self.query(&mut conn, &pipe).await?;
            for map in maps {
                let mut sessions: Vec<RemoteSession> = map
                    .into_iter()
                    .filter(|(_, owner)| owner != self.gateway_id())
                    .map(|(field, owner)| RemoteSession {
                        name: SessionName::parse(&field),
                        gateway_id: owner,
                        session_id: field,
                    })
                    .collect();
                sessions.sort_by(|a, b| (&a.gateway_id, &a.session_id).cmp(&(&b.gateway_id, &b.session_id)));
                out.push(sessions);
            }
        }
        Ok(out)
    }

    /// Publishes `msg` to the nodes holding `users` (one `Downstream` per node).
    pub(super) async fn push(&self, users: &[i64], msg: &PushMsg) -> Result<RemotePush, RegistryError> {
        let located = self.locate(users).await?;
        // gateway -> indexes (into `users`) of the users it holds
        let mut by_node: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, sessions) in located.iter().enumerate() {
            let mut last = None;
            for s in sessions {
                if last != Some(s.gateway_id.as_str()) {
                    by_node.entry(s.gateway_id.as_str()).or_default().push(i);
                    last = Some(s.gateway_id.as_str());
                }
            }
        }
        let mut taken = vec![false; users.len()];
        if by_node.is_empty() {
            return Ok(RemotePush { taken, nodes: 0 });
        }
        let nodes: Vec<(&str, Vec<usize>)> = by_node.into_iter().collect();
        let mut pipe = redis::pipe();
        for (gateway, idx) in &nodes {
            let down = Downstream {
                user_ids: idx.iter().map(|&i| users[i]).collect(),
                all: false,
                msg: Some(msg.clone()),
                origin_gateway: self.gateway_id().to_string(),
            };
            pipe.publish(self.keys.push(gateway), down.encode_to_vec());
        }
        let mut conn = self.conn()?;
        let receivers: Vec<i64> = self.query(&mut conn, &pipe).await?;
        let mut reached = 0;
        for ((_, idx), n) in nodes.iter().zip(receivers) {
            if n > 0 {
                reached += 1;
                for &i in idx {
                    taken[i] = true;
                }
            }
        }
        Ok(RemotePush { taken, nodes: reached })
    }

    /// Publishes `msg` on the broadcast channel; returns how many other nodes took it.
    pub(super) async fn broadcast(&self, msg: &PushMsg) -> Result<usize, RegistryError> {
        let down = Downstream {
            user_ids: Vec::new(),
            all: true,
            msg: Some(msg.clone()),
            origin_gateway: self.gateway_id().to_string(),
        };
        let mut conn = self.conn()?;
        let (n,): (i64,) =
            self.query(&mut conn, redis::pipe().publish(self.keys.push_all(), down.encode_to_vec())).await?;
        // We are subscribed too (and skip our own).
        Ok(usize::try_from(n - 1).unwrap_or(0))
    }

    /// Kicks `user`'s sessions on other nodes (on `platform` only, when given): one
    /// `KickNotice` per node, and the sessions leave the registry at once.
    pub(super) async fn kick(&self, user: i64, platform: Option<i32>, reason: &str) -> Result<usize, RegistryError> {
        let located = self.locate(&[user]).await?;
        let mut by_node: HashMap<&str, Vec<String>> = HashMap::new();
        for s in located.iter().flatten() {
            let matches = match platform {
                None => true,
                Some(p) => s.name.is_some_and(|n| n.platform == p),
            };
            if matches {
                by_node.entry(s.gateway_id.as_str()).or_default().push(s.session_id.clone());
            }
        }
        if by_node.is_empty() {
            return Ok(0);
        }
        let nodes: Vec<(&str, Vec<String>)> = by_node.into_iter().collect();
        let mut pipe = redis::pipe();
        for (gateway, sessions) in &nodes {
            let notice = KickNotice { user_id: user, session_ids: sessions.clone(), reason: reason.to_string() };
            pipe.publish(self.keys.kick(gateway), notice.encode_to_vec());
        }
        let mut conn = self.conn()?;
        let receivers: Vec<i64> = self.query(&mut conn, &pipe).await?;
        // Kicked sessions leave the registry now, whether or not their node is alive.
        let mut pipe = redis::pipe();
        for (_, sessions) in &nodes {
            pipe.hdel(self.keys.location(user), sessions).ignore();
        }
        self.query::<()>(&mut conn, &pipe).await?;
        Ok(nodes.iter().zip(receivers).filter(|(_, n)| *n > 0).map(|((_, s), _)| s.len()).sum())
    }
}
