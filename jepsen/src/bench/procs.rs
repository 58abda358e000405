//! The peers' server processes (a 3-node etcd cluster, one Redis with
//! `appendfsync always`) and what the benchmark reads about every server
//! process from /proc: CPU time and peak resident memory.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Finds a peer's binary: the flag, else `$PATH`. A missing one is an error
/// that says how to install it (CI must not silently skip a peer).
pub fn find_bin(flag: Option<&Path>, name: &str, package: &str) -> Result<PathBuf> {
    if let Some(p) = flag {
        if !p.is_file() {
            bail!("{} not found (--{name}-bin)", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "`{name}` is not installed: `apt-get install {package}` (or leave it out with --systems)"
            )
        })
}

/// First line of `BIN --version`, for the report.
pub fn version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// True if nothing listens on `port` of 127.0.0.1 now.
pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A group of server processes of one system, killed on drop.
pub struct Servers {
    pub children: Vec<Child>,
}

impl Servers {
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|c| c.id()).collect()
    }

    pub async fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
        }
        self.children.clear();
    }
}

fn spawn(bin: &Path, args: &[String], dir: &Path, log: &str) -> Result<Child> {
    std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let out = std::fs::File::create(dir.join(log)).context(log.to_string())?;
    let err = out.try_clone().context(log.to_string())?;
    Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))
}

/// Client and peer ports of etcd member `i` (0-based).
pub fn etcd_ports(base: u16, i: u16) -> (u16, u16) {
    (base + 4 + i, base + 14 + i)
}

pub fn redis_port(base: u16) -> u16 {
    base + 7
}

/// Starts a 3-member etcd cluster on 127.0.0.1 with its defaults (fsync of
/// the WAL on every commit, 100 ms heartbeat, 1 s election timeout).
pub fn start_etcd(bin: &Path, dir: &Path, base: u16, n: u16) -> Result<Servers> {
    let initial: Vec<String> = (0..n)
        .map(|i| format!("e{i}=http://127.0.0.1:{}", etcd_ports(base, i).1))
        .collect();
    let mut children = Vec::new();
    for i in 0..n {
        let (cp, pp) = etcd_ports(base, i);
        let d = dir.join(format!("e{i}"));
        let args: Vec<String> = vec![
            format!("--name=e{i}"),
            format!("--data-dir={}", d.join("data").display()),
            format!("--listen-client-urls=http://127.0.0.1:{cp}"),
            format!("--advertise-client-urls=http://127.0.0.1:{cp}"),
            format!("--listen-peer-urls=http://127.0.0.1:{pp}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{pp}"),
            format!("--initial-cluster={}", initial.join(",")),
            "--initial-cluster-state=new".into(),
            "--initial-cluster-token=locker-bench".into(),
            "--logger=zap".into(),
            "--log-level=warn".into(),
        ];
        children.push(spawn(bin, &args, &d, "etcd.log")?);
    }
    Ok(Servers { children })
}

/// Starts one Redis on 127.0.0.1 that fsyncs its append-only file before
/// answering each write (`appendfsync always`), with RDB snapshots off.
pub fn start_redis(bin: &Path, dir: &Path, base: u16) -> Result<Servers> {
    let d = dir.join("redis");
    let args: Vec<String> = [
        "--port",
        &redis_port(base).to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &d.display().to_string(),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--daemonize",
        "no",
        "--maxclients",
        "4096",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Ok(Servers {
        children: vec![spawn(bin, &args, &d, "redis.log")?],
    })
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&s).map(|ticks| ticks as f64 / clock_ticks())
}

/// utime + stime from a /proc/PID/stat line (fields 14 and 15, counted after
/// the command name, which may itself contain spaces and parentheses).
pub fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3, so utime (14) is index 11, stime index 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A `/proc/PID/status` memory field (VmHWM: peak resident, VmRSS: now) in
/// bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&s, field).map(|kb| kb * 1024)
}

pub fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// True while `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Total CPU seconds of a set of processes (gone ones count as 0).
pub fn cpu_total(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_seconds(p)).sum()
}

/// Largest VmHWM among a set of processes, in bytes.
pub fn peak_rss(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| status_bytes(p, "VmHWM"))
        .max()
        .unwrap_or(0)
}

/// Size of the files under a directory, in bytes.
pub fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_parse() {
        let stat = "42 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20";
        assert_eq!(parse_stat_cpu(stat), Some(300));
        assert_eq!(parse_stat_cpu("garbage"), None);
        let st = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kb(st, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kb(st, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kb(st, "VmSwap"), None);
        // Our own process is readable and has used some CPU and memory.
        let me = std::process::id();
        assert!(status_bytes(me, "VmHWM").is_some_and(|b| b > 0));
        assert!(cpu_seconds(me).is_some());
        assert!(alive(me) && !alive(u32::MAX));
        assert!(find_bin(None, "definitely-not-a-bench-peer", "x")
            .is_err_and(|e| e.to_string().contains("apt-get install x")));
    }
}
