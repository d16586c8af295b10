//! The upstream bus: the UPSTREAMs shards queued
//! ([`Registry::upstream`](crate::registry::Registry::upstream)) are pipelined into
//! `XADD {p}upstream` in batches, and each is answered on its session's shard: UPSTREAM
//! with the stream id as `bus_id`, or ERROR 3 when Redis did not take it.

use super::Inner;
use crate::packet::{self, error_code};
use crate::proto::{Command, UpstreamResult};
use crate::registry::{LocalNode, RegistryError, UpstreamJob};
use crate::session::SessionName;
use std::sync::Arc;
use tracing::warn;

/// UPSTREAMs pipelined in one round trip.
const UPSTREAM_BATCH: usize = 256;

impl Inner {
    /// Serves the upstream queue until the registry stops.
    pub(super) async fn upstream_loop(self: Arc<Self>, local: Arc<dyn LocalNode>, ups: flume::Receiver<UpstreamJob>) {
        let mut batch = Vec::with_capacity(UPSTREAM_BATCH);
        while let Ok(job) = ups.recv_async().await {
            batch.clear();
            batch.push(job);
            batch.extend(ups.try_iter().take(UPSTREAM_BATCH - 1));
            match self.xadd(&batch).await {
                Ok(ids) => {
                    for (job, bus_id) in batch.drain(..).zip(ids) {
                        let frame = packet::frame(Command::Upstream, job.seq, &UpstreamResult { bus_id });
                        local.reply(job.session, frame).await;
                    }
                }
                Err(e) => {
                    warn!(cause = %e, count = batch.len(), "UPSTREAM not taken by redis; answering ERROR 3");
                    for job in batch.drain(..) {
                        let frame = packet::error(
                            job.seq,
                            error_code::UPSTREAM_UNAVAILABLE,
                            "upstream bus unavailable: message not accepted, retry later",
                        );
                        local.reply(job.session, frame).await;
                    }
                }
            }
        }
    }

    /// One pipelined `XADD` per job; the stream ids, one per job.
    async fn xadd(&self, batch: &[UpstreamJob]) -> Result<Vec<String>, RegistryError> {
        let key = self.keys.upstream();
        let mut conn = self.conn()?;
        let mut pipe = redis::pipe();
        for job in batch {
            let name = SessionName { nonce: self.nonce, id: job.session, platform: job.platform };
            let cmd = pipe.cmd("XADD").arg(&key);
            if self.maxlen > 0 {
                cmd.arg("MAXLEN").arg("~").arg(self.maxlen);
            }
            cmd.arg("*")
                .arg("uid")
                .arg(job.user)
                .arg("gateway")
                .arg(self.gateway_id())
                .arg("session")
                .arg(name.to_string())
                .arg("platform")
                .arg(job.platform)
                .arg("packet")
                .arg(&job.body[..]);
        }
        let ids: Vec<String> = self.query(&mut conn, &pipe).await?;
        if ids.len() != batch.len() {
            return Err(RegistryError::Unexpected("XADD"));
        }
        Ok(ids)
    }
}
