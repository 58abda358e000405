//! Looking at processes through /proc (Linux), for tests that must prove a
//! job's processes are gone.

/// 'R', 'S', 'Z'... from /proc, or `None` once the process is gone (reaped).
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesized command name.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
}

/// Gone from /proc: dead and reaped.
pub fn is_gone(pid: i32) -> bool {
    state(pid).is_none()
}

/// Dead: reaped, or a zombie nobody reaped yet.
pub fn is_dead(pid: i32) -> bool {
    matches!(state(pid), None | Some('Z') | Some('X'))
}

/// Live (not zombie) processes whose argv is exactly `argv`.
pub fn find_by_argv(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0u8])).collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want) && !is_dead(*pid)
        })
        .collect()
}

/// Nanoseconds of CLOCK_REALTIME, the clock `date +%s%N` prints: the one
/// clock jobs and tests on this machine share for their records.
pub fn wall_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Live (not zombie) children of `parent`, from /proc.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) == Some(parent)
                && !is_dead(*pid)
        })
        .collect()
}

/// Live processes whose command line (arguments joined by spaces) contains
/// `part`, as `pkill -f` matches them.
pub fn find_by_cmdline_part(part: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let line: Vec<u8> = c.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
                String::from_utf8_lossy(&line).contains(part)
            }) && !is_dead(*pid)
        })
        .collect()
}

/// `sleep` processes whose argument is `secs`: how the `locker run` tests find
/// their jobs' grandchildren.
pub fn sleepers(secs: &str) -> Vec<i32> {
    find_by_argv(&["sleep", secs])
}

/// A sleep duration no other process on the machine uses; `base` (seconds)
/// keeps test binaries apart.
pub fn unique_sleep(base: u32) -> String {
    format!(
        "{}.{}",
        base + std::process::id() % 1_000,
        wall_ns() % 1_000_000_000
    )
}

/// `locker run KEY -- sh -c SCRIPT` against `url` with the given process ttl,
/// keep-alives every 300 ms and a 1 s grace.
pub fn spawn_locker_run(
    url: &str,
    key: &str,
    script: &str,
    process_ttl_ms: u64,
) -> std::process::Child {
    std::process::Command::new(crate::bin("locker"))
        .env_remove("LOCKER_ENDPOINTS")
        .arg("--endpoints")
        .arg(url)
        .args([
            "run",
            "--report-ttl-ms",
            &process_ttl_ms.to_string(),
            "--report-write-ms",
            "300",
            "--grace-ms",
            "1000",
            key,
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn locker run")
}

/// Whether a linearizable read of `key` through `url` says it is held.
pub fn is_locked(url: &str, key: &str) -> bool {
    crate::api::read(url, key)
        .try_json::<locker_proto::ReadAnswer>()
        .is_some_and(|a| a.locked)
}
