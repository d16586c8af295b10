//! One shard as a running service: [`run`] makes the [`Shard`] on its executor and
//! starts its services in dependency order — ticker, stall probe, accept loop
//! ([`listener`]) — then serves its inbox; on a drain order it stops them in reverse:
//! no new connections, every client closed with 1001, the remaining ones dropped at the
//! deadline, then the ticker and the probe.
//!
//! What the shard does with a message or a connection is [`crate::shard`] and
//! [`crate::conn`]; this room only starts, feeds and stops.

mod listener;

use crate::node::Node;
use crate::router::{Drain, ShardMsg};
use crate::shard::Shard;
use glommio::net::TcpListener;
use glommio::timer::Timer;
use listener::Listener;
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Period of the stall probe: a timer that measures how late the event loop wakes it
/// (see [`stall_probe`]).
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// Runs shard `id` until it is drained: adopts the listener fd, starts the ticker, the
/// stall probe and the accept loop, and serves the inbox.
pub async fn run(id: usize, node: Arc<Node>, listener_fd: RawFd, inbox: flume::Receiver<ShardMsg>) {
    let shard = Rc::new(Shard::new(id, node));
    // SAFETY: the fd was made for this shard by `shards::bind_reuseport` and handed over
    // exactly once; the listener owns it from here.
    let listener = unsafe { TcpListener::from_raw_fd(listener_fd) };

    let ticker = {
        let shard = shard.clone();
        let every = shard.tick_interval();
        glommio::spawn_local(async move {
            loop {
                Timer::new(every).await;
                shard.tick();
            }
        })
    };
    let probe = glommio::spawn_local(stall_probe(shard.clone()));
    let accept = glommio::spawn_local(Listener { shard: shard.clone(), listener }.run());
    debug!(shard = id, "shard running");

    let mut drain = Drain::default();
    while let Ok(msg) = inbox.recv_async().await {
        if let Some(order) = shard.handle(msg) {
            drain = order;
            break;
        }
    }
    // Stop in reverse order: no new connections, then close the ones we have.
    // Shut the listening socket before the accept loop goes: the shut socket leaves the
    // SO_REUSEPORT group at once, so a connection arriving now is refused (or goes to a
    // shard still listening) instead of waiting in a backlog, or in an io_uring accept
    // being cancelled, that nobody will serve. (`Gateway::shutdown` shut it already;
    // again is harmless.) Then cancel the loop, which closes the fd.
    // SAFETY: shutdown(2) on the fd the `Listener` task still owns and keeps open.
    unsafe { libc::shutdown(listener_fd, libc::SHUT_RD) };
    accept.cancel().await;
    stop(&shard, &inbox, drain).await;
    ticker.cancel().await;
    probe.cancel().await;
    info!(shard = id, "shard stopped");
}

/// The drain itself: closes every client with 1001, keeps serving the inbox (stats;
/// late pushes are dropped by closing connections) while clients read their close
/// frames, and drops whatever is left at the deadline. The ticker aborts connections
/// whose close lingers meanwhile.
async fn stop(shard: &Shard, inbox: &flume::Receiver<ShardMsg>, drain: Drain) {
    shard.close_all_going_away(drain.window_ms);
    let deadline = shard.now_ms() + drain.deadline_ms;
    while !shard.sessions().borrow().is_empty() && shard.now_ms() < deadline {
        let wait = Timer::new(Duration::from_millis(10));
        futures_lite::future::or(
            async {
                if let Ok(msg) = inbox.recv_async().await {
                    let _ = shard.handle(msg);
                }
            },
            async {
                wait.await;
            },
        )
        .await;
    }
    let left = shard.sessions().borrow().len();
    if left > 0 {
        for conn in shard.sessions().borrow().all() {
            conn.abort();
        }
        warn!(shard = shard.id(), left, "shutdown deadline reached; dropping the remaining connections");
    }
}

/// Measures event-loop stalls: sleeps [`PROBE_EVERY`] again and again and records how
/// late each wake-up comes. A task that holds the core for 30 ms (one long poll, or a
/// burst of work queued ahead of the timer) shows as a ~30 ms sample; an idle or
/// well-behaved shard shows the timer's own slack (tens of microseconds). Costs one
/// timer wake-up per period and nothing on the push path. Also rolls the shard's
/// latency windows.
async fn stall_probe(shard: Rc<Shard>) {
    loop {
        let asked = Instant::now();
        Timer::new(PROBE_EVERY).await;
        let late = asked.elapsed().saturating_sub(PROBE_EVERY);
        shard.metrics().loop_stall.borrow_mut().record(late.as_micros() as u64);
        shard.metrics().rotate(shard.now_ms());
    }
}
