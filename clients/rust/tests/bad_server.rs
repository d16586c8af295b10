//! A server that misbehaves (a raw TCP peer written here: the real gateway never does
//! these things): garbage instead of an upgrade, an upgrade never answered, a close in
//! the middle of a frame, frames that are not packets. Each time the client must report
//! an error and back off by its policy: never panic, never retry faster than the delay
//! it announced.

mod common;
use common::*;
use im_gateway_client::{BackoffConfig, Cause, Client, Config, Event};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the bad server does with each connection after reading the request head.
type Behave = fn(TcpStream, String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

struct BadServer {
    url: String,
    attempts: Arc<Mutex<Vec<Instant>>>,
    arrived: Arc<Notify>,
}

async fn bad_server(behave: Behave) -> BadServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let arrived = Arc::new(Notify::new());
    let (a, n) = (attempts.clone(), arrived.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (a, n) = (a.clone(), n.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                a.lock().unwrap().push(Instant::now());
                n.notify_one();
                behave(sock, String::from_utf8_lossy(&head).into_owned()).await;
            });
        }
    });
    BadServer { url, attempts, arrived }
}

/// The 101 answer to an upgrade request.
fn accept(head: &str) -> String {
    let key = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().starts_with("sec-websocket-key:").then(|| l[18..].trim().to_string()))
        .unwrap();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
}

/// Runs a client against `behave` until the server has seen `attempts` attempts; checks
/// an error per failed attempt (whose text contains `error_has`), only back-off delays
/// (full jitter, pinned to the top of each window), and gaps between attempts no
/// shorter than the announced delays.
async fn expect_backoff(behave: Behave, error_has: &str, attempts: usize, connect_timeout: Duration) {
    let server = bad_server(behave).await;
    let mut config = Config::new(server.url.clone(), "t");
    config.connect_timeout = connect_timeout;
    config.backoff =
        BackoffConfig { initial: Duration::from_millis(40), max: Duration::from_millis(300), ..Default::default() };
    let (c, events) = Client::connect(config);
    // The policy with its random source pinned: full jitter at the top of each window.
    let mut policy = im_gateway_client::Backoff::with_random(
        BackoffConfig { initial: Duration::from_millis(40), max: Duration::from_millis(300), ..Default::default() },
        || 0.999,
    );
    let windows: Vec<Duration> = (0..attempts)
        .map(|_| {
            let w = policy.window();
            policy.next_delay();
            w
        })
        .collect();
    let mut rec = Recorder::new(events);
    let mut delays = Vec::new();
    while delays.len() < attempts - 1 {
        let at = rec.until("Reconnecting", |e| matches!(e, Event::Reconnecting { .. })).await;
        let Event::Reconnecting { delay, cause, .. } = rec.seen[at].1 else { unreachable!() };
        assert_eq!(cause, Cause::Backoff);
        delays.push(delay);
    }
    while server.attempts.lock().unwrap().len() < attempts {
        tokio::time::timeout(HANG, server.arrived.notified()).await.expect("another attempt");
    }
    c.close().await;
    for (i, d) in delays.iter().enumerate() {
        assert!(*d <= windows[i], "delay {i} {d:?} within its window {:?}", windows[i]);
    }
    let errors: Vec<String> =
        rec.seen.iter().filter_map(|(_, e)| if let Event::Error(e) = e { Some(e.to_string()) } else { None }).collect();
    assert!(errors.len() >= attempts - 1, "an error per attempt: {:?}", rec.names());
    for e in &errors {
        assert!(e.contains(error_has), "{e:?} should say {error_has:?}");
    }
    let seen = server.attempts.lock().unwrap().clone();
    for i in 1..attempts {
        let gap = seen[i] - seen[i - 1];
        assert!(
            gap >= delays[i - 1],
            "attempt {} came {gap:?} after the previous one; the delay was {:?}",
            i + 1,
            delays[i - 1]
        );
    }
}

const SLOW: Duration = Duration::from_secs(10);

#[tokio::test]
async fn garbage_instead_of_http() {
    expect_backoff(
        |mut s, _| {
            Box::pin(async move {
                let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
            })
        },
        "upgrade",
        4,
        SLOW,
    )
    .await;
}

#[tokio::test]
async fn an_http_error_instead_of_the_upgrade() {
    expect_backoff(
        |mut s, _| {
            Box::pin(async move {
                let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n").await;
            })
        },
        "HTTP 502",
        4,
        SLOW,
    )
    .await;
}

#[tokio::test]
async fn an_upgrade_never_answered() {
    expect_backoff(
        |s, _| {
            Box::pin(async move {
                tokio::time::sleep(HANG).await; // holds the socket open, never answers
                drop(s);
            })
        },
        "no upgrade and AUTH result",
        3,
        Duration::from_millis(150),
    )
    .await;
}

#[tokio::test]
async fn a_close_in_the_middle_of_a_frame() {
    expect_backoff(
        |mut s, head| {
            Box::pin(async move {
                let _ = s.write_all(accept(&head).as_bytes()).await;
                let _ = s.write_all(&[0x82, 0x7e, 0x01]).await; // binary, 16-bit length, one byte of it
            })
        },
        "protocol",
        4,
        SLOW,
    )
    .await;
}

#[tokio::test]
async fn an_invalid_frame() {
    expect_backoff(
        |mut s, head| {
            Box::pin(async move {
                let _ = s.write_all(accept(&head).as_bytes()).await;
                let _ = s.write_all(&[0x83, 0x00]).await; // reserved opcode
                tokio::time::sleep(HANG).await;
            })
        },
        "protocol",
        4,
        SLOW,
    )
    .await;
}

#[tokio::test]
async fn a_binary_frame_that_is_not_a_packet() {
    expect_backoff(
        |mut s, head| {
            Box::pin(async move {
                let _ = s.write_all(accept(&head).as_bytes()).await;
                let _ = s.write_all(&[0x82, 0x05, 0xff, 0xff, 0xff, 0xff, 0x0f]).await;
                tokio::time::sleep(HANG).await;
            })
        },
        "undecodable packet",
        4,
        SLOW,
    )
    .await;
}

#[tokio::test]
async fn a_text_frame() {
    expect_backoff(
        |mut s, head| {
            Box::pin(async move {
                let _ = s.write_all(accept(&head).as_bytes()).await;
                let _ = s.write_all(&[0x81, 0x06, b'h', b'e', b'l', b'l', b'o', b'?']).await;
                tokio::time::sleep(HANG).await;
            })
        },
        "text frame",
        4,
        SLOW,
    )
    .await;
}
