//! Admission control beyond `max_connections`: the per-shard handshake token bucket and
//! the per-IP connection cap, both answered with HTTP 503 + `Retry-After` and no
//! WebSocket. Client addresses vary over 127.0.0.x (all local on Linux).

mod common;
use common::*;
use std::net::{IpAddr, SocketAddr};

/// Connects from source address `from` and upgrades (with a token when given).
async fn dial_from(from: IpAddr, addr: SocketAddr, token: Option<&str>) -> Dial {
    use tokio_tungstenite::tungstenite::Error;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = tokio::time::timeout(HANG, socket.connect(addr)).await.expect("connect hung").unwrap();
    let url = match token {
        Some(t) => format!("ws://{addr}/ws?token={t}"),
        None => format!("ws://{addr}/ws"),
    };
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    match tokio::time::timeout(HANG, tokio_tungstenite::client_async(url, stream)).await.expect("upgrade hung") {
        Ok((ws, _)) => Dial::Ok(Client { ws }),
        Err(Error::Http(resp)) => Dial::Refused {
            status: resp.status().as_u16(),
            retry_after: resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()),
            body: resp.body().as_ref().map(|b| String::from_utf8_lossy(b).to_string()).unwrap_or_default(),
        },
        Err(e) => panic!("dial from {from}: {e}"),
    }
}

/// Asserts a 503 with a Retry-After of at least one second whose body contains `why`.
fn assert_503(dial: Dial, why: &str) {
    match dial {
        Dial::Refused { status, retry_after, body } => {
            assert_eq!(status, 503, "{body}");
            let retry: u64 = retry_after.expect("Retry-After header").trim().parse().expect("Retry-After in seconds");
            assert!(retry >= 1, "{retry}");
            assert!(body.contains(why), "{body}");
        }
        Dial::Ok(_) => panic!("upgraded; expected 503 ({why})"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_cap_counts_across_shards_and_frees_on_close() {
    let gw = start(|c| c.server.max_connections_per_ip = 2);
    let addr = gw.ws_addr();
    let (a, b) = (ip("127.0.0.1"), ip("127.0.0.2"));
    // Two from each address, whichever shards the kernel picks; unauthenticated
    // connections count too.
    let Dial::Ok(a1) = dial_from(a, addr, Some(&token(&gw, 1, Some(1)))).await else { panic!("a1 refused") };
    let Dial::Ok(a2) = dial_from(a, addr, None).await else { panic!("a2 refused") };
    let Dial::Ok(b1) = dial_from(b, addr, None).await else { panic!("b1 refused") };
    // The third from `a` is refused on every attempt, whichever shard it lands on (the
    // source port, and so the shard, changes each time).
    for _ in 0..6 {
        assert_503(dial_from(a, addr, Some(&token(&gw, 2, Some(1)))).await, "too many connections from this address");
    }
    // Another address still gets in up to the cap.
    let Dial::Ok(b2) = dial_from(b, addr, None).await else { panic!("b2 refused") };
    assert_503(dial_from(b, addr, None).await, "too many connections from this address");
    assert_eq!(gw.node().per_ip.count(a), 2);
    wait_connections(&gw, 4).await;

    // A slot frees when a client of that address leaves.
    drop(a2);
    wait_connections(&gw, 3).await;
    assert_eq!(gw.node().per_ip.count(a), 1);
    let (a3, r) = match dial_from(a, addr, Some(&token(&gw, 3, Some(1)))).await {
        Dial::Ok(mut c) => {
            let p = c.recv().await;
            (c, p)
        }
        Dial::Refused { status, body, .. } => panic!("a3 refused after a slot freed: {status} {body}"),
    };
    assert_eq!(r.header.unwrap().command, im_gateway::proto::Command::Auth as i32);
    drop((a1, a3, b1, b2));
    wait_connections(&gw, 0).await;
    assert_eq!(gw.node().per_ip.addresses(), 0, "entries of addresses without connections are removed");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_bucket_answers_503_after_the_burst() {
    let gw = start(|c| {
        c.server.shards = 1;
        c.server.handshake_rate_per_s = 1;
        c.server.handshake_burst = 3;
    });
    let addr = gw.ws_addr();
    // The bucket starts full: the burst is admitted whatever the clock says.
    let mut kept = Vec::new();
    for _ in 0..3 {
        let Dial::Ok(c) = Client::dial(addr, None).await else { panic!("handshake within the burst refused") };
        kept.push(c);
    }
    // After that only one handshake a second gets through: back-to-back attempts hit
    // an empty bucket (a bounded number of tries, not a timing threshold: 100 upgrades
    // on loopback take far less than the 100 s they would need to all be admitted).
    let mut refused = None;
    for _ in 0..100 {
        match Client::dial(addr, None).await {
            Dial::Ok(c) => kept.push(c),
            r @ Dial::Refused { .. } => {
                refused = Some(r);
                break;
            }
        }
    }
    assert_503(refused.expect("the handshake bucket never refused"), "handshake rate");
    let v = stats(&gw).await;
    assert!(v["shards"][0]["rejected"]["503"].as_u64().unwrap() >= 1, "{v}");
    drop(kept);
    gw.stop();
}
