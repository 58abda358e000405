//! `locker-jepsen job-beat`: the job the `run` workload runs under
//! `locker run`. It appends one line per heartbeat to a shared record (one
//! file for every job of the run, `O_APPEND`, one `write` per line) with a
//! CLOCK_MONOTONIC timestamp, the clock the history uses, so the checker can
//! compare jobs of different processes at the nanosecond.
//!
//! Record lines (JSON): `{"k": key, "j": job, "t": ns, "e": event}` with
//! event `s` (started; also `pid` and `pgid`), `b` (beat), `t` (SIGTERM
//! received), `x` (finished by itself). A job is alive from its first line to
//! its last: whatever it writes is proof it was running at that instant.
//!
//! On SIGTERM the job does what `--on-term` says: `exit` (die at once, the
//! default action), `linger:MS` (keep beating MS more, then exit: a job that
//! cleans up) or `ignore` (keep beating until SIGKILL or the end of its run).

use crate::history::monotonic_ns;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a job does on SIGTERM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTerm {
    Exit,
    Linger(u64),
    Ignore,
}

impl OnTerm {
    pub fn parse(s: &str) -> anyhow::Result<OnTerm> {
        match s {
            "exit" => Ok(OnTerm::Exit),
            "ignore" => Ok(OnTerm::Ignore),
            _ => match s.strip_prefix("linger:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms <= 60_000 => Ok(OnTerm::Linger(ms)),
                _ => Err(anyhow::anyhow!(
                    "--on-term {s:?}: expected exit, ignore or linger:MS (MS <= 60000)"
                )),
            },
        }
    }

    pub fn arg(self) -> String {
        match self {
            OnTerm::Exit => "exit".into(),
            OnTerm::Linger(ms) => format!("linger:{ms}"),
            OnTerm::Ignore => "ignore".into(),
        }
    }
}

/// The longest a job works (`--run-ms` is capped at this).
pub const MAX_RUN_MS: u64 = 600_000;

/// The flags every job of the run workloads takes (`job-beat` and
/// `lib-job`): its record, key and name, how long and how often it beats.
#[derive(clap::Args, Debug, Clone)]
pub struct JobArgs {
    /// The shared record the job appends its lines to.
    #[arg(long)]
    pub file: PathBuf,
    #[arg(long)]
    pub key: String,
    /// The job's name in the record.
    #[arg(long)]
    pub job: String,
    /// How long the job works before finishing by itself (at most 600000).
    #[arg(long, default_value_t = 1_000)]
    pub run_ms: u64,
    /// Milliseconds between heartbeats (1 to 1000).
    #[arg(long, default_value_t = 30)]
    pub interval_ms: u64,
}

/// `locker-jepsen job-beat` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BeatArgs {
    #[command(flatten)]
    pub run: JobArgs,
    /// exit, ignore or linger:MS
    #[arg(long, default_value = "exit", value_parser = OnTerm::parse)]
    pub on_term: OnTerm,
}

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    TERM.store(true, Ordering::SeqCst);
}

fn install(on_term: OnTerm) -> anyhow::Result<()> {
    let handler = match on_term {
        // The default action: the kernel ends the process at once.
        OnTerm::Exit => return Ok(()),
        OnTerm::Ignore => libc::SIG_IGN,
        OnTerm::Linger(_) => on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
    };
    // SAFETY: installing a handler that only stores to an atomic, or SIG_IGN.
    let prev = unsafe { libc::signal(libc::SIGTERM, handler) };
    if prev == libc::SIG_ERR {
        return Err(anyhow::anyhow!(
            "signal: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// One record line, written with a single `write` so lines of concurrent
/// jobs never interleave (O_APPEND makes each write land at the end).
pub(crate) fn beat_line(
    f: &mut std::fs::File,
    key: &str,
    job: &str,
    ev: &str,
    extra: &str,
) -> anyhow::Result<()> {
    let l = format!(
        "{{\"k\":{},\"j\":{},\"t\":{},\"e\":\"{ev}\"{extra}}}\n",
        serde_json::Value::from(key),
        serde_json::Value::from(job),
        monotonic_ns()
    );
    f.write_all(l.as_bytes())
        .map_err(|e| anyhow::anyhow!("write beat: {e}"))
}

pub fn job_beat_main(args: BeatArgs) -> anyhow::Result<()> {
    let (a, on_term) = (args.run, args.on_term);
    install(on_term)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.file)
        .map_err(|e| anyhow::anyhow!("open {}: {e}", a.file.display()))?;
    // SAFETY: getpid/getpgid(0) only read our own ids.
    let (pid, pgid) = unsafe { (libc::getpid(), libc::getpgid(0)) };
    beat_line(
        &mut f,
        &a.key,
        &a.job,
        "s",
        &format!(",\"pid\":{pid},\"pgid\":{pgid}"),
    )?;
    // Tell the runner (through locker's stdout) that the job runs.
    println!("STARTED {pid} {pgid}");
    let _ = std::io::stdout().flush();
    let interval = Duration::from_millis(a.interval_ms.clamp(1, 1_000));
    let start = std::time::Instant::now();
    let end = start + Duration::from_millis(a.run_ms.min(MAX_RUN_MS));
    let mut term_seen: Option<std::time::Instant> = None;
    loop {
        std::thread::sleep(interval);
        let now = std::time::Instant::now();
        if TERM.load(Ordering::SeqCst) && term_seen.is_none() {
            term_seen = Some(now);
            beat_line(&mut f, &a.key, &a.job, "t", "")?;
        }
        if let (Some(t), OnTerm::Linger(ms)) = (term_seen, on_term) {
            if now >= t + Duration::from_millis(ms) {
                beat_line(&mut f, &a.key, &a.job, "x", ",\"after_term\":true")?;
                return Ok(());
            }
        }
        if now >= end {
            beat_line(&mut f, &a.key, &a.job, "x", "")?;
            return Ok(());
        }
        beat_line(&mut f, &a.key, &a.job, "b", "")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_term_parses() {
        assert_eq!(OnTerm::parse("exit").ok(), Some(OnTerm::Exit));
        assert_eq!(OnTerm::parse("ignore").ok(), Some(OnTerm::Ignore));
        assert_eq!(OnTerm::parse("linger:150").ok(), Some(OnTerm::Linger(150)));
        assert!(OnTerm::parse("linger:x").is_err());
        assert!(OnTerm::parse("linger:999999").is_err());
        assert!(OnTerm::parse("nap").is_err());
        for t in [OnTerm::Exit, OnTerm::Ignore, OnTerm::Linger(7)] {
            assert_eq!(OnTerm::parse(&t.arg()).ok(), Some(t));
        }
    }
}
