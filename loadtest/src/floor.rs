//! `floor`: what this machine does with no gateway in the way, measured the same way
//! the gateway is, in the same run:
//! - accept floor: a plain TCP server (one SO_REUSEPORT listener and one blocking
//!   accept thread per core, answering one byte per accepted socket) and the same
//!   client as `storm` (same rate, sources and cap on attempts in flight), each
//!   connection counted when that byte arrives;
//! - push floor: the same number of loopback sockets, the server side writing payloads
//!   of the push frame's size round-robin (one `write` per payload, as the gateway
//!   writes one frame per recipient; `--push-rounds` to each socket, so little is in
//!   flight per socket, as for a gateway whose clients keep up), the client side
//!   reading; payloads read per second.
//! - fan-out floor: one payload to each socket, once; time until every one is read
//!   (the bound under the gateway's broadcast figure on the same box).
//! - echo floor: a raw TCP echo server, one level-triggered epoll loop per core (each
//!   socket registered once; one `recv` and one `send` per message, no framing), driven
//!   by the round-trip client of [`crate::rtt`] with messages the size of a HEARTBEAT
//!   request: its CPU per round trip is what the gateway's CPU per HEARTBEAT round trip
//!   (`loadtest heartbeat`, same client) is held against.
//!
//! The servers are child processes (`loadtest floor-server`, `loadtest
//! floor-echo-server`) so each side has its own open-file limit, as gateway and load
//! tester do, and the server's CPU is read from /proc of its own pid.

use crate::client;
use crate::storm::Plan;
use anyhow::{anyhow, bail, Context, Result};
use im_gateway::proto::{Command, PushMsg};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Size of the WebSocket frame the gateway sends for a push with `content_bytes` of
/// content (the payload size of the push floor).
pub fn push_frame_len(content_bytes: usize) -> usize {
    let msg = PushMsg {
        msg_id: 1 << 40,
        sender_id: 1,
        receiver_id: 0,
        group_id: 0,
        r#type: 1,
        content: "x".repeat(content_bytes),
        server_ts_us: client::now_us(),
        ..Default::default()
    };
    im_gateway::packet::frame(Command::Push, 0, &msg).len()
}

/// The floor server: prints `LISTEN addr`, accepts on `threads` listeners, and on a
/// stdin line `push SIZE ROUNDS` writes ROUNDS payloads of SIZE bytes to every accepted
/// socket, round-robin (one `write` each), then prints `DONE bytes`.
pub fn server(threads: usize, backlog: i32) -> Result<()> {
    let threads = threads.max(1);
    let (listeners, addr) = listeners(threads, backlog)?;
    let groups: Vec<Arc<Mutex<Vec<TcpStream>>>> = (0..threads).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    for (l, group) in listeners.into_iter().zip(&groups) {
        let group = group.clone();
        std::thread::spawn(move || loop {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nodelay(true);
                    if s.write_all(b"!").is_ok() {
                        group.lock().unwrap().push(s);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => {}
            }
        });
    }
    println!("LISTEN {addr}");
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        if words.next() != Some("push") {
            continue;
        }
        let size: usize = words.next().and_then(|w| w.parse().ok()).context("push SIZE ROUNDS")?;
        let rounds: usize = words.next().and_then(|w| w.parse().ok()).context("push SIZE ROUNDS")?;
        let blasters: Vec<_> = groups
            .iter()
            .map(|group| {
                let group = group.clone();
                std::thread::spawn(move || blast(&mut group.lock().unwrap(), size, rounds))
            })
            .collect();
        let bytes: u64 = blasters.into_iter().map(|b| b.join().unwrap_or(0)).sum();
        println!("DONE {bytes}");
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// Binds `threads` SO_REUSEPORT listeners on one free loopback port.
fn listeners(threads: usize, backlog: i32) -> Result<(Vec<TcpListener>, SocketAddr)> {
    let mut listeners: Vec<TcpListener> = Vec::new();
    let mut addr: SocketAddr = "127.0.0.1:0".parse()?;
    for _ in 0..threads.max(1) {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.set_reuse_port(true)?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(backlog)?;
        let l: TcpListener = s.into();
        addr = l.local_addr()?;
        listeners.push(l);
    }
    Ok((listeners, addr))
}

/// The echo floor's server: prints `LISTEN addr`, runs one epoll loop per listener
/// (thread) until stdin closes.
pub fn echo_server(threads: usize, backlog: i32) -> Result<()> {
    let (listeners, addr) = listeners(threads, backlog)?;
    for l in listeners {
        l.set_nonblocking(true)?;
        std::thread::spawn(move || {
            if let Err(e) = echo_loop(&l) {
                eprintln!("floor-echo-server: {e}");
                std::process::exit(1);
            }
        });
    }
    println!("LISTEN {addr}");
    std::io::stdout().flush()?;
    // Runs until the parent closes stdin (or kills us).
    for line in std::io::stdin().lock().lines() {
        line?;
    }
    Ok(())
}

/// What an epoll floor server does with the fewest syscalls the kernel allows: one
/// `epoll_wait` for every batch of ready sockets, then per ready socket one `recv` and
/// one `send` of what it read. Sockets are registered once, level-triggered, so there
/// is nothing to re-arm after a read (the shape uWebSockets has).
fn echo_loop(listener: &TcpListener) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let lfd = listener.as_raw_fd();
    // SAFETY: plain syscalls on fds this thread owns; buffers outlive each call and
    // their lengths are passed with them.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if ep < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let add = |fd: i32| {
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev)
        };
        if add(lfd) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1);
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events[..n as usize] {
                let fd = ev.u64 as i32;
                if fd == lfd {
                    loop {
                        let c = libc::accept4(
                            lfd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        );
                        if c < 0 {
                            let e = std::io::Error::last_os_error().raw_os_error();
                            if e == Some(libc::EMFILE) || e == Some(libc::ENFILE) {
                                // Level-triggered: the listener stays ready; do not spin.
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            break;
                        }
                        let one: libc::c_int = 1;
                        libc::setsockopt(
                            c,
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            (&one as *const libc::c_int).cast(),
                            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                        );
                        if add(c) < 0 {
                            libc::close(c);
                        }
                    }
                    continue;
                }
                let r = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if r > 0 {
                    let mut off = 0;
                    while off < r as usize {
                        let w = libc::send(fd, buf.as_ptr().add(off).cast(), r as usize - off, libc::MSG_NOSIGNAL);
                        if w > 0 {
                            off += w as usize;
                        } else if w < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
                            // Never with one small message in flight; wait rather than spin.
                            let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                            libc::poll(&mut p, 1, 1000);
                        } else {
                            break;
                        }
                    }
                } else if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
                    // Closing removes it from the epoll set (no other fd refers to it).
                    libc::close(fd);
                }
            }
        }
    }
}

/// Writes `rounds` payloads of `size` bytes to each socket, round-robin; returns bytes
/// written. What is in flight per socket stays small (rounds x size), as it does for a
/// gateway whose clients keep up, so the kernel never enters memory pressure.
fn blast(socks: &mut [TcpStream], size: usize, rounds: usize) -> u64 {
    let payload = vec![0x5a_u8; size];
    let mut written = 0;
    for s in socks.iter() {
        let _ = s.set_nonblocking(false);
    }
    for _ in 0..rounds {
        for s in socks.iter_mut() {
            if s.write_all(&payload).is_ok() {
                written += size as u64;
            }
        }
    }
    written
}

/// What `floor` measures.
#[derive(Debug, Clone)]
pub struct FloorArgs {
    /// Server threads (as many as the gateway has shards).
    pub threads: usize,
    /// Push content bytes (the payload is a push frame of that content).
    pub content_bytes: usize,
    /// Payloads to each socket in the push floor.
    pub push_rounds: usize,
    /// Rounds of the fan-out floor.
    pub rounds: usize,
    /// The echo floor's phases (connections each, one message in flight per connection).
    pub echo: Vec<crate::rtt::Phase>,
    /// Only the echo floor (profiling runs).
    pub echo_only: bool,
}

/// A floor server child: the process, its stdin (commands; closing it ends the server),
/// its stdout lines and the address it listens on.
struct Child {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    addr: SocketAddr,
}

async fn spawn_server(subcommand: &str, threads: usize) -> Result<Child> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .arg(subcommand)
        .arg("--threads")
        .arg(threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {subcommand}"))?;
    let stdin = child.stdin.take().context("stdin")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let first = lines.next_line().await?.ok_or_else(|| anyhow!("{subcommand} exited"))?;
    let addr = first.strip_prefix("LISTEN ").with_context(|| format!("{subcommand} said no LISTEN"))?.parse()?;
    Ok(Child { child, stdin, lines, addr })
}

/// All the floors: accept, push and fan-out (one server), then echo (another).
pub async fn run(plan: &Plan, a: &FloorArgs) -> Result<Value> {
    let mut report = if a.echo_only { json!({}) } else { accept_push_fanout(plan, a).await? };
    if !a.echo.is_empty() {
        let echo = echo(plan, a).await?;
        report["raw_echo_floor_cpu_us_per_rt"] = echo["phases"][0]["server_cpu_us_per_rt"].clone();
        report["echo"] = echo;
    }
    Ok(report)
}

/// The echo floor: connections to the epoll echo server, driven by [`crate::rtt`].
async fn echo(plan: &Plan, a: &FloorArgs) -> Result<Value> {
    let server = spawn_server("floor-echo-server", a.threads).await?;
    let plan = Plan { targets: vec![server.addr], ..plan.clone() };
    let mut report = echo_at(&plan, server.child.id(), &a.echo).await?;
    report["server_threads"] = json!(a.threads);
    drop(server.stdin);
    let mut child = server.child;
    let _ = child.kill().await;
    Ok(report)
}

/// Round trips against the echo server at the plan's first target (whose CPU is read
/// from `server_pid`): the HEARTBEAT-sized request comes back byte for byte.
pub async fn echo_at(plan: &Plan, server_pid: Option<u32>, phases: &[crate::rtt::Phase]) -> Result<Value> {
    let target = *plan.targets.first().context("no target")?;
    let n = phases.iter().map(|p| p.connections).max().unwrap_or(0) as u64;
    let rss_before = server_pid.and_then(|p| crate::sys::rss_bytes(p).ok());
    let mut socks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let s = client::tcp(target, client::source(i, plan.source_ips)).await?;
        s.set_nodelay(true)?;
        socks.push(s);
    }
    let request = client::heartbeat_request();
    let (socks, phases) = crate::rtt::run(
        socks,
        request.clone(),
        crate::rtt::Reply::Echo,
        |r| r == client::heartbeat_request(),
        phases,
        server_pid,
    )
    .await?;
    // Every connection has served at least one round trip when the last phase drove
    // them all: the server's memory per connection, held open (the echo floor holds
    // none in user space; a spike's figure is its own).
    let rss_after = server_pid.and_then(|p| crate::sys::rss_bytes(p).ok());
    let rss_per_conn = rss_before
        .zip(rss_after)
        .filter(|_| phases.last().and_then(|p| p["connections"].as_u64()) == Some(n))
        .map(|(b, a)| a.saturating_sub(b) as f64 / n.max(1) as f64);
    drop(socks);
    Ok(json!({ "phases": phases, "message_bytes": request.len(), "server_rss_per_conn_bytes": rss_per_conn }))
}

/// The accept, push and fan-out floors over one set of sockets.
async fn accept_push_fanout(plan: &Plan, a: &FloorArgs) -> Result<Value> {
    let (threads, content_bytes, push_rounds, rounds) = (a.threads, a.content_bytes, a.push_rounds, a.rounds);
    let Child { mut child, mut stdin, mut lines, addr: target } = spawn_server("floor-server", threads).await?;

    // Accept floor. The server's CPU per accepted connection is the figure to hold the
    // gateway's CPU per handshake against (the client is the same for both only up to
    // the upgrade, and on a shared box the rate is bounded by client + server together).
    let server_pid = child.id();
    let cpu_before = server_pid.and_then(|p| crate::sys::cpu_user_sys_s(p).ok());
    let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let gap = if plan.rate > 0.0 { Duration::from_secs_f64(1.0 / plan.rate) } else { Duration::ZERO };
    let started = Instant::now();
    let n = plan.connections;
    let source_ips = plan.source_ips;
    let timeout = plan.timeout;
    tokio::spawn(async move {
        let mut tick = (!gap.is_zero()).then(|| {
            let mut t = tokio::time::interval(gap);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            t
        });
        for i in 0..n {
            if let Some(t) = tick.as_mut() {
                t.tick().await;
            }
            let permit = gate.clone().acquire_owned().await.expect("semaphore open");
            let done = done_tx.clone();
            let jitter = gap.mul_f64(fastrand::f64());
            tokio::spawn(async move {
                if !jitter.is_zero() {
                    tokio::time::sleep(jitter).await;
                }
                let attempt = async {
                    let mut s = client::tcp(target, client::source(i, source_ips)).await?;
                    let mut one = [0u8; 1];
                    s.read_exact(&mut one).await?;
                    Ok::<_, std::io::Error>(s)
                };
                let r = tokio::time::timeout(timeout, attempt).await;
                drop(permit);
                let _ = done.send(r.ok().and_then(|r| r.ok()));
            });
        }
    });
    let mut socks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        match done_rx.recv().await {
            Some(Some(s)) => socks.push(s),
            Some(None) => {}
            None => break,
        }
    }
    let accept_elapsed = started.elapsed().as_secs_f64();
    let accepted = socks.len() as u64;
    let cpu_after = server_pid.and_then(|p| crate::sys::cpu_user_sys_s(p).ok());
    let per_conn = 1e6 / accepted.max(1) as f64;
    let accept_us =
        cpu_before.zip(cpu_after).map(|((bu, bs), (au, as_))| ((au - bu) * per_conn, (as_ - bs) * per_conn));
    let accept_cpu_us = accept_us.map(|(u, s)| u + s);
    if accepted == 0 {
        bail!("the floor server accepted nothing");
    }

    // Push floor: readers count bytes while the server writes.
    let size = push_frame_len(content_bytes);
    let read = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::with_capacity(socks.len());
    for mut s in socks {
        let read = read.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 16 << 10];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                read.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
    }
    // Push floor: `push_rounds` payloads to every socket; time until all are read.
    let t0 = Instant::now();
    let written = round_trip(&mut stdin, &mut lines, &read, size, push_rounds, accepted).await?;
    let push_elapsed = t0.elapsed().as_secs_f64();
    let payloads_read = written / size as u64;

    // Fan-out floor: one payload to every socket; time until all of it is read.
    let mut fanout_ms = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = Instant::now();
        round_trip(&mut stdin, &mut lines, &read, size, 1, accepted).await?;
        fanout_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    fanout_ms.sort_by(f64::total_cmp);
    drop(stdin);
    let _ = child.kill().await;
    for r in readers {
        r.abort();
    }
    Ok(json!({
        "connections": accepted,
        "attempted": n,
        "raw_tcp_accept_rate_per_s": accepted as f64 / accept_elapsed,
        "accept_elapsed_s": accept_elapsed,
        "raw_accept_server_cpu_us_per_conn": accept_cpu_us,
        "raw_accept_server_us_per_conn": accept_us.map(|(user, sys)| json!({ "user": user, "sys": sys })),
        "payload_bytes": size,
        "push_s": push_elapsed,
        "push_rounds": push_rounds,
        "payloads_read": payloads_read,
        "raw_push_floor_per_s": payloads_read as f64 / push_elapsed,
        "raw_fanout_floor_ms": fanout_ms.get(fanout_ms.len() / 2).copied(),
        "raw_fanout_rounds_ms": fanout_ms,
        "server_threads": threads,
    }))
}

/// Asks the server for `rounds` payloads to each of `sockets` and waits until the
/// readers have them all; returns the bytes read.
async fn round_trip(
    stdin: &mut tokio::process::ChildStdin,
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    read: &AtomicU64,
    size: usize,
    rounds: usize,
    sockets: u64,
) -> Result<u64> {
    let before = read.load(Ordering::SeqCst);
    let want = sockets * (size * rounds) as u64;
    stdin.write_all(format!("push {size} {rounds}\n").as_bytes()).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Sleep-poll (1 ms timer granularity): spinning here would take the CPU the
    // readers need.
    while read.load(Ordering::SeqCst) - before < want {
        if Instant::now() > deadline {
            bail!("the floor's readers did not get everything within 60 s");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    lines.next_line().await?.context("floor-server exited")?;
    Ok(read.load(Ordering::SeqCst) - before)
}

pub fn print(r: &Value) {
    if !r["connections"].is_null() {
        print_accept_push_fanout(r);
    }
    if !r["echo"].is_null() {
        crate::rtt::print("raw epoll echo floor", &r["echo"]["phases"]);
    }
}

fn print_accept_push_fanout(r: &Value) {
    println!(
        "raw TCP accept floor: {:.0} connections/s ({} of {} in {:.2}s)",
        r["raw_tcp_accept_rate_per_s"].as_f64().unwrap_or(0.0),
        r["connections"],
        r["attempted"],
        r["accept_elapsed_s"].as_f64().unwrap_or(0.0)
    );
    if let Some(cpu) = r["raw_accept_server_cpu_us_per_conn"].as_f64() {
        println!("raw accept server CPU: {cpu:.1} us per connection");
    }
    println!(
        "raw push floor: {:.0} payloads/s of {} bytes over {} sockets",
        r["raw_push_floor_per_s"].as_f64().unwrap_or(0.0),
        r["payload_bytes"],
        r["connections"]
    );
    println!(
        "raw fan-out floor: one payload to each of {} sockets, all read after {:.2} ms (median)",
        r["connections"],
        r["raw_fanout_floor_ms"].as_f64().unwrap_or(0.0)
    );
}
