//! What the load tester reads off the gateway process (/proc) and how it spreads one run
//! over several client processes.

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// `perf stat|record --control fifo:CTL,ACK` fifos, when `--perf-ctl` gave them:
/// measured windows are bracketed with `enable` / `disable`, so perf counts exactly the
/// window a report's figures are divided by.
type Fifos = Vec<(std::path::PathBuf, Option<std::path::PathBuf>)>;
static PERF_CTL: std::sync::OnceLock<Fifos> = std::sync::OnceLock::new();

/// Sets the perf control fifos (each `CTL[,ACK]`, one per perf process).
pub fn set_perf_ctl(specs: &[String]) {
    let fifos = specs
        .iter()
        .map(|spec| match spec.split_once(',') {
            Some((c, a)) => (c.into(), Some(a.into())),
            None => (spec.into(), None),
        })
        .collect();
    let _ = PERF_CTL.set(fifos);
}

/// Tells every perf to `enable` or `disable` its counters (no-op without
/// `--perf-ctl`); waits for each ack when there is an ack fifo.
pub fn perf_ctl(command: &str) {
    use std::io::{Read, Write};
    for (ctl, ack) in PERF_CTL.get().into_iter().flatten() {
        let sent = std::fs::OpenOptions::new()
            .write(true)
            .open(ctl)
            .and_then(|mut f| f.write_all(format!("{command}\n").as_bytes()));
        if let Err(e) = sent {
            eprintln!("perf control {}: {e}", ctl.display());
            continue;
        }
        if let Some(ack) = ack {
            let mut buf = [0u8; 4];
            let _ = std::fs::File::open(ack).and_then(|mut f| f.read(&mut buf));
        }
    }
}

/// Resident set size of `pid`, bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read /proc/PID/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("VmRSS not found")?;
    Ok(kb * 1024)
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime and stime of a /proc stat line, seconds.
fn stat_user_sys_s(stat: &str) -> Option<(f64, f64)> {
    // The command name may hold spaces: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime / ticks_per_s(), stime / ticks_per_s()))
}

/// utime + stime of a /proc stat line, seconds.
fn stat_cpu_s(stat: &str) -> Option<f64> {
    stat_user_sys_s(stat).map(|(u, s)| u + s)
}

/// CPU seconds the process has used in user space and in the kernel.
pub fn cpu_user_sys_s(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("read /proc/PID/stat")?;
    stat_user_sys_s(&stat).ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))
}

/// CPU seconds per thread name (`imgw-shard-0-1`, ...).
pub fn thread_cpu_s(pid: u32) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in dir.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default().trim().to_string();
        if let Some(cpu) = std::fs::read_to_string(path.join("stat")).ok().as_deref().and_then(stat_cpu_s) {
            // Threads may share a name (glommio's helper thread takes its executor's):
            // summed per name.
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 += cpu,
                None => out.push((name, cpu)),
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A sample of the gateway process, when its pid is known.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub rss: Option<u64>,
    pub cpu_s: Option<f64>,
    /// The same CPU, user space and kernel apart.
    pub user_sys_s: Option<(f64, f64)>,
    pub threads: Vec<(String, f64)>,
}

impl Sample {
    pub fn take(pid: Option<u32>) -> Sample {
        let Some(pid) = pid else { return Sample::default() };
        let user_sys_s = cpu_user_sys_s(pid).ok();
        Sample {
            rss: rss_bytes(pid).ok(),
            cpu_s: user_sys_s.map(|(u, s)| u + s),
            user_sys_s,
            threads: thread_cpu_s(pid),
        }
    }

    /// CPU seconds per shard thread between `self` (earlier) and `later`.
    pub fn shard_cpu_s(&self, later: &Sample) -> Value {
        let mut out = serde_json::Map::new();
        for (name, after) in &later.threads {
            if !name.contains("shard") {
                continue;
            }
            let before = self.threads.iter().find(|(n, _)| n == name).map_or(0.0, |t| t.1);
            out.insert(name.clone(), serde_json::json!(after - before));
        }
        Value::Object(out)
    }
}

/// A client process running one slice of a run (`--worker K/P`). It prints one JSON
/// line when its connections are up, waits for a line on stdin, then prints its final
/// JSON line and exits.
pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    /// Starts this same binary with `args` plus `--worker k/p`.
    pub fn spawn(args: &[String], k: usize, p: usize) -> Result<Worker> {
        let exe = std::env::current_exe().context("current_exe")?;
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .arg("--worker")
            .arg(format!("{k}/{p}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawn worker")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("worker stdout")?;
        Ok(Worker { child, stdin, lines: BufReader::new(stdout).lines() })
    }

    /// The next JSON line the worker prints.
    pub async fn next(&mut self) -> Result<Value> {
        loop {
            let line = self.lines.next_line().await?.ok_or_else(|| anyhow!("worker exited early"))?;
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                return Ok(v);
            }
        }
    }

    /// Tells the worker to finish.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"stop\n").await?;
        }
        Ok(())
    }

    pub async fn wait(mut self) -> Result<()> {
        let status = self.child.wait().await?;
        anyhow::ensure!(status.success(), "worker failed: {status}");
        Ok(())
    }
}

/// The arguments this process was started with, minus the program name.
pub fn own_args() -> Vec<String> {
    std::env::args().skip(1).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_cpu_counts_fields_after_the_command_name() {
        let line = "42 (imgw shard) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 1000 0 0";
        let cpu = super::stat_cpu_s(line).unwrap();
        assert!((cpu - 400.0 / super::ticks_per_s()).abs() < 1e-9);
        let (user, sys) = super::stat_user_sys_s(line).unwrap();
        assert!((user - 250.0 / super::ticks_per_s()).abs() < 1e-9);
        assert!((sys - 150.0 / super::ticks_per_s()).abs() < 1e-9);
    }
}
