//! Reconnects against the real gateway: a drain (close 1001 with `retry_after_ms`) and
//! a full gateway (HTTP 503 with `Retry-After`).

mod common;
use common::*;
use im_gateway_client::{backoff::retry_after_ms, BackoffConfig, Cause, Client, Config, Event, Token};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_then_back_after_the_hint_on_the_next_gateway() {
    let gw = gateway(any_port(), |c| c.server.gateway_id = "gw-a".into());
    let addr = gw.ws_addr();
    let tokens = Arc::new(AtomicU32::new(0));
    let token = token(&gw, 201);
    let mut config = Config::new(url(&gw), {
        let tokens = tokens.clone();
        Token::refresh(move || {
            tokens.fetch_add(1, Ordering::SeqCst);
            let t = token.clone();
            async move { Ok(t) }
        })
    });
    // Should the next gateway not be up when the hint expires: short back-off.
    config.backoff =
        BackoffConfig { initial: Duration::from_millis(50), max: Duration::from_millis(200), ..Default::default() };
    let (c, mut rec, s) = connected(config).await;
    assert_eq!(s.gateway_id, "gw-a");

    // Nothing of the drain can happen before this instant: every time below is later.
    let before_drain = tokio::time::Instant::now();
    gw.shutdown();
    let at = rec.until("Disconnected", |e| matches!(e, Event::Disconnected(_))).await;
    let Event::Disconnected(d) = &rec.seen[at].1 else { unreachable!() };
    assert_eq!((d.code, d.will_reconnect), (1001, true));
    let hint = Duration::from_millis(retry_after_ms(&d.reason).expect("a retry_after_ms in the reason"));
    let at = rec.until("Reconnecting", |e| matches!(e, Event::Reconnecting { .. })).await;
    let (waiting_at, Event::Reconnecting { delay, cause, .. }) = &rec.seen[at] else { unreachable!() };
    assert_eq!((*delay, *cause), (hint, Cause::RetryAfterMs));
    let waiting_at = *waiting_at;
    assert!(waiting_at >= before_drain);

    tokio::task::spawn_blocking(move || gw.wait()).await.unwrap();
    let gw = gateway(addr, |c| c.server.gateway_id = "gw-b".into());
    let at = rec.until("Connected to gw-b", |e| matches!(e, Event::Connected(s) if s.gateway_id == "gw-b")).await;
    // The first attempt after the drain came no sooner than the hint said (measured
    // from before the drain began, which the 1001 and the hint can only follow).
    let first = rec.seen[..at].iter().find(|(t, e)| *t >= waiting_at && matches!(e, Event::Connecting { .. })).unwrap();
    assert!(
        first.0 - before_drain >= hint,
        "attempt {:?} after the drain began, hint {hint:?}",
        first.0 - before_drain
    );
    assert!(tokens.load(Ordering::SeqCst) >= 2, "a fresh token for the new connection");
    c.close().await;
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_capacity_503_honours_retry_after() {
    let gw = gateway(any_port(), |c| c.connection.max_connections = 1);
    let (first, _first_rec, _) = connected(Config::new(url(&gw), token(&gw, 301))).await;

    let mut config = Config::new(url(&gw), token(&gw, 302));
    config.backoff.initial = Duration::from_secs(10);
    let before = tokio::time::Instant::now();
    let (second, events) = Client::connect(config);
    let mut rec = Recorder::new(events);
    let at = rec.until("Disconnected", |e| matches!(e, Event::Disconnected(_))).await;
    let Event::Disconnected(d) = &rec.seen[at].1 else { unreachable!() };
    assert_eq!((d.status, d.will_reconnect), (Some(503), true));
    assert!(matches!(&rec.seen[at - 1].1, Event::Error(e) if e.to_string().contains("503")), "{:?}", rec.names());
    let at = rec.until("Reconnecting", |e| matches!(e, Event::Reconnecting { .. })).await;
    let Event::Reconnecting { delay, cause, .. } = rec.seen[at].1 else { unreachable!() };
    assert_eq!(cause, Cause::RetryAfter);
    // The gateway says 1 to 5 s; the client spreads over the second after it.
    assert!(delay >= Duration::from_secs(1) && delay < Duration::from_secs(7), "{delay:?}");

    first.close().await;
    wait_online(&gw, 301, 0).await;
    let at = rec.until("Connected", |e| matches!(e, Event::Connected(_))).await;
    let connecting: Vec<_> =
        rec.seen[..at].iter().filter(|(_, e)| matches!(e, Event::Connecting { .. })).map(|(t, _)| *t).collect();
    assert_eq!(connecting.len(), 2, "one refused attempt, one that got in");
    // The second attempt follows the Reconnecting, which follows the start.
    assert!(connecting[1] - before >= delay, "{:?} after the start, delay {delay:?}", connecting[1] - before);
    second.close().await;
    gw.stop();
}
