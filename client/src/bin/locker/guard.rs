//! The guard: `locker __guard FD GRACE_MS DEADLINE_MS CMD_FD`, re-executed
//! by `locker run` (the command comes in the file CMD_FD, see read_command)
//! between itself and the command, so that no process of the job outlives
//! the lock.
//!
//! * The command runs as the leader of its own process group; every signal
//!   goes to the whole group.
//! * The guard is a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphans of the
//!   job, even ones that left the group with `setsid`, are reparented to it
//!   instead of init, so it can find (by parent pid) and kill them.
//! * It dies with `locker`: `locker` holds the write end of the control pipe
//!   `FD`; end of file (locker gone, even by SIGKILL) or SIGTERM (the guard's
//!   parent-death signal) makes the guard SIGKILL the group and every process
//!   reparented to it, reap them, and exit.
//! * Control messages are [`MSG_LEN`] bytes: a tag and a little-endian u64.
//!   [`TAG_SIGNAL`]: a signal number to send to the group (SIGKILL means
//!   "stop everything now", group and escapees). [`TAG_DEADLINE`]: the local
//!   deadline, in [`mono_now_ms`] milliseconds.
//! * The guard keeps the deadline itself (watchdog): SIGTERM to the group at
//!   deadline - grace, everything SIGKILLed at the deadline, even if `locker`
//!   never says so. `locker` paused (SIGSTOP, a stall) or stuck must not
//!   keep the job running past the point the cluster may free the lock.
//! * When the main command exits, whatever it left behind is SIGKILLed too;
//!   the guard exits with the command's code (128+N for signal N).
//!
//! If the guard itself is SIGKILLed, the main command dies with it
//! (parent-death signal) but its other processes are not found any more.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The hidden subcommand `locker run` re-executes itself with.
pub const SUBCOMMAND: &str = "__guard";

/// Length of one control message: a tag byte and a little-endian u64.
pub const MSG_LEN: usize = 9;
/// Control message: send the signal in the value to the command's group.
pub const TAG_SIGNAL: u8 = 1;
/// Control message: the local deadline moved to the value ([`mono_now_ms`]).
pub const TAG_DEADLINE: u8 = 2;

/// CLOCK_MONOTONIC in milliseconds: one clock for `locker` and the guard
/// (a per-machine clock; `Instant` reads the same one on Linux).
pub fn mono_now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec.max(0) as u64)
        .saturating_mul(1_000)
        .saturating_add(ts.tv_nsec.max(0) as u64 / 1_000_000)
}

/// One control message.
pub fn encode(tag: u8, value: u64) -> [u8; MSG_LEN] {
    let mut m = [0u8; MSG_LEN];
    m[0] = tag;
    m[1..].copy_from_slice(&value.to_le_bytes());
    m
}

/// A SIGTERM this soon after the last one to the group is the same stop.
const DUP_TERM_MS: u64 = 200;

/// Set by SIGTERM: our parent-death signal (locker died: kill everything,
/// exit), or a SIGTERM sent to locker's whole group (systemd's stop,
/// `kill -TERM -PGID`) while locker lives: then it is passed on like one
/// from locker, so the job gets its grace period.
static DIE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    DIE.store(true, Ordering::SeqCst);
}

/// Only interrupts `poll` (SIGCHLD: a child changed state; SIGINT, SIGQUIT,
/// SIGHUP from a terminal: `locker` forwards what the job should get).
extern "C" fn on_wake(_: libc::c_int) {}

fn install_handlers() {
    for (sig, handler) in [
        (libc::SIGTERM, on_term as extern "C" fn(libc::c_int)),
        (libc::SIGCHLD, on_wake),
        (libc::SIGINT, on_wake),
        (libc::SIGQUIT, on_wake),
        (libc::SIGHUP, on_wake),
    ] {
        // SAFETY: plain sigaction with a handler that only touches an atomic;
        // no SA_RESTART so poll(2) returns on every signal. Handlers (unlike
        // ignored signals) are reset to the default by exec, so the command
        // starts with default dispositions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Runs the guard; returns its exit code. `args` follow the subcommand.
pub fn main(args: &[OsString]) -> u8 {
    let (ctl, command) = match parse(args) {
        Some(p) => p,
        None => {
            eprintln!(
                "locker: usage: locker {SUBCOMMAND} FD GRACE_MS DEADLINE_MS CMD_FD (internal)"
            );
            return 2;
        }
    };
    // SAFETY: getppid cannot fail. locker checked before exec that it is
    // our parent; if it died since, the control pipe is closed already.
    let locker_pid = unsafe { libc::getppid() };
    // The lock may have run out while locker was slow or paused between the
    // acquire and starting us: then the command must not start at all.
    if mono_now_ms() >= ctl.deadline_ms.saturating_sub(ctl.grace_ms) {
        eprintln!("locker: guard: the lock's local deadline is (nearly) past; not starting");
        return 1;
    }
    install_handlers();
    // SAFETY: prctl/fcntl on our own process and descriptor.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // The command must not hold the control pipe open.
        libc::fcntl(ctl.fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    // SAFETY: getpgid of our parent (locker); -1 if it is gone already.
    let locker_group = unsafe { libc::getpgid(locker_pid) };
    let main_pid = match spawn(&command, Terminal::is_foreground(locker_group)) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("locker: cannot run {:?}: {e}", command[0]);
            return match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                _ => 126,
            };
        }
    };
    let tty = Terminal::hand_to(main_pid, locker_group);
    let code = Supervisor::new(ctl, main_pid, locker_pid).run();
    tty.take_back();
    code
}

/// What `locker` passes on the command line.
struct Ctl {
    /// Read end of the control pipe.
    fd: libc::c_int,
    grace_ms: u64,
    /// Initial local deadline ([`mono_now_ms`]).
    deadline_ms: u64,
}

fn parse(args: &[OsString]) -> Option<(Ctl, Vec<OsString>)> {
    let num = |i: usize| args.get(i)?.to_str()?.parse::<u64>().ok();
    let ctl = Ctl {
        fd: args.first()?.to_str()?.parse().ok()?,
        grace_ms: num(1)?,
        deadline_ms: num(2)?,
    };
    if args.len() != 4 {
        return None;
    }
    let command = read_command(args[3].to_str()?.parse().ok()?)?;
    Some((ctl, command))
}

/// The command, from the file `locker` passes (NUL-terminated arguments):
/// not on our own command line, so `pkill -f CMD` does not kill the guard
/// with the command and leave the rest of the job to init. The file is
/// closed here, so the command does not inherit it.
fn read_command(fd: libc::c_int) -> Option<Vec<OsString>> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStringExt;
    if fd < 0 {
        return None;
    }
    // SAFETY: the descriptor locker left open for us, owned from here on.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    // The offset is shared with locker's write: read from the start.
    f.seek(SeekFrom::Start(0)).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    let body = bytes.strip_suffix(&[0])?;
    let command: Vec<OsString> = body
        .split(|b| *b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    Some(command)
}

/// Starts the command as the leader of a new group; with `foreground` the
/// child makes its group the terminal's foreground itself before exec (as
/// shells do), so the command never runs a moment in the background.
fn spawn(command: &[OsString], foreground: bool) -> std::io::Result<libc::pid_t> {
    let guard = std::process::id() as libc::pid_t;
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    // SAFETY: between fork and exec only async-signal-safe calls (setpgid,
    // prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            // Its own process group, so the group can be signalled as one.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if foreground {
                set_foreground(libc::getpid());
            }
            // If the guard dies, even by SIGKILL, the main command dies too.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != guard {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    // Also from this side, so no signal can reach a group that does not exist
    // yet (EACCES once the child has exec'ed: it did it itself).
    // SAFETY: setpgid on our own child.
    unsafe { libc::setpgid(pid, pid) };
    // The Child is dropped without waiting: we reap with waitpid(-1) below.
    drop(child);
    Ok(pid)
}

/// Waits for the main command, passing control messages on to its group
/// and enforcing the local deadline; returns the command's exit code once
/// it and everything it left are dead.
struct Supervisor {
    ctl: Ctl,
    main_pid: libc::pid_t,
    main_status: Option<u8>,
    /// Bytes of a control message not read in full yet.
    pending: Vec<u8>,
    /// When a SIGTERM last went to the group (watchdog or `locker`).
    term_sent_at: Option<u64>,
    /// Whether the watchdog sent its own SIGTERM.
    watchdog_termed: bool,
    /// Our parent; once it is not, locker is gone (reparented to a reaper).
    locker_pid: libc::pid_t,
}

impl Supervisor {
    fn new(ctl: Ctl, main_pid: libc::pid_t, locker_pid: libc::pid_t) -> Supervisor {
        Supervisor {
            ctl,
            main_pid,
            main_status: None,
            pending: Vec::new(),
            term_sent_at: None,
            watchdog_termed: false,
            locker_pid,
        }
    }

    fn run(mut self) -> u8 {
        loop {
            if DIE.swap(false, Ordering::SeqCst) {
                // SAFETY: getppid cannot fail.
                if unsafe { libc::getppid() } != self.locker_pid {
                    kill_all(self.main_pid, &mut self.main_status);
                    return 128 + libc::SIGTERM as u8;
                }
                self.apply(TAG_SIGNAL, libc::SIGTERM as u64);
            }
            if self.watchdog() {
                // Kill first: stderr may be a full pipe nobody reads.
                kill_all(self.main_pid, &mut self.main_status);
                eprintln!(
                    "locker: guard: the lock's local deadline passed without word from \
                     locker (paused or stuck?); the job was killed"
                );
                return 128 + libc::SIGKILL as u8;
            }
            reap(self.main_pid, &mut self.main_status);
            if let Some(code) = self.main_status {
                // Nothing of the job may run on once the lock is released.
                kill_all(self.main_pid, &mut self.main_status);
                return code;
            }
            if !self.read_control() {
                // locker is gone: so must the job be, before its lock is freed.
                kill_all(self.main_pid, &mut self.main_status);
                return 128 + libc::SIGKILL as u8;
            }
        }
    }

    /// SIGTERM at deadline - grace (once), true at the deadline.
    fn watchdog(&mut self) -> bool {
        let now = mono_now_ms();
        if now >= self.ctl.deadline_ms {
            return true;
        }
        let term_at = self.ctl.deadline_ms.saturating_sub(self.ctl.grace_ms);
        if now >= term_at && !self.watchdog_termed {
            self.watchdog_termed = true;
            // `locker` (if it runs) sends its own SIGTERM at the same moment:
            // one is enough.
            if self.term_sent_at.is_none() {
                self.term_group(now);
            }
        }
        false
    }

    fn term_group(&mut self, now: u64) {
        self.term_sent_at = Some(now);
        // SAFETY: kill(2) of our command's process group.
        unsafe { libc::kill(-self.main_pid, libc::SIGTERM) };
        continue_group(self.main_pid);
    }

    /// Waits (bounded by the next watchdog moment) for control messages and
    /// acts on them; false once `locker` is gone.
    fn read_control(&mut self) -> bool {
        let now = mono_now_ms();
        let next = if self.watchdog_termed {
            self.ctl.deadline_ms
        } else {
            self.ctl.deadline_ms.saturating_sub(self.ctl.grace_ms)
        };
        let timeout = next.saturating_sub(now).clamp(1, 200) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd: self.ctl.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if n <= 0 {
            return true; // timeout or EINTR (a signal): look again
        }
        let mut buf = [0u8; 16 * MSG_LEN];
        // SAFETY: read into a local buffer of the given length.
        let got = unsafe { libc::read(self.ctl.fd, buf.as_mut_ptr().cast(), buf.len()) };
        if got == 0 || (got < 0 && !interrupted()) {
            return false;
        }
        self.pending.extend_from_slice(&buf[..got.max(0) as usize]);
        let whole = self.pending.len() / MSG_LEN * MSG_LEN;
        let msgs: Vec<u8> = self.pending.drain(..whole).collect();
        for m in msgs.chunks_exact(MSG_LEN) {
            let mut v = [0u8; 8];
            v.copy_from_slice(&m[1..]);
            self.apply(m[0], u64::from_le_bytes(v));
        }
        true
    }

    fn apply(&mut self, tag: u8, value: u64) {
        match tag {
            TAG_DEADLINE => self.ctl.deadline_ms = value,
            TAG_SIGNAL => {
                let sig = i32::try_from(value).unwrap_or(libc::SIGKILL);
                let now = mono_now_ms();
                if sig == libc::SIGKILL {
                    kill_all(self.main_pid, &mut self.main_status);
                } else if sig == libc::SIGTERM {
                    // The same stop from two sides (the watchdog and locker,
                    // or a group SIGTERM to locker and us): one SIGTERM.
                    let window = if self.watchdog_termed {
                        self.ctl.grace_ms.max(DUP_TERM_MS)
                    } else {
                        DUP_TERM_MS
                    };
                    let recent = self
                        .term_sent_at
                        .is_some_and(|t| now.saturating_sub(t) < window);
                    if !recent {
                        self.term_group(now);
                    }
                } else {
                    // SAFETY: kill(2) of our command's process group.
                    unsafe { libc::kill(-self.main_pid, sig) };
                    if sig == libc::SIGINT {
                        continue_group(self.main_pid);
                    }
                }
            }
            // Unknown: a newer locker? Not ours (same binary), ignore.
            _ => {}
        }
    }
}

/// After a stop request (SIGTERM, SIGINT): a stopped process (SIGSTOP,
/// Ctrl-Z) acts on it only once continued, so it gets SIGCONT, as systemd
/// does; otherwise its grace period would pass unused and SIGKILL end it.
fn continue_group(main_pid: libc::pid_t) {
    // SAFETY: kill(2) of our command's process group.
    unsafe { libc::kill(-main_pid, libc::SIGCONT) };
}

fn interrupted() -> bool {
    std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
}

/// Reaps every child that has exited, recording the main command's code.
/// Returns false once there is no child left at all.
fn reap(main_pid: libc::pid_t, main_status: &mut Option<u8>) -> bool {
    loop {
        let mut st = 0;
        // SAFETY: waitpid on any child of ours, non-blocking.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid == 0 {
            return true;
        }
        if pid < 0 {
            return !matches!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ECHILD)
            );
        }
        if pid == main_pid {
            *main_status = Some(code_of(st));
        }
    }
}

fn code_of(st: libc::c_int) -> u8 {
    if libc::WIFEXITED(st) {
        (libc::WEXITSTATUS(st) & 0xff) as u8
    } else if libc::WIFSIGNALED(st) {
        (128 + libc::WTERMSIG(st)).clamp(0, 255) as u8
    } else {
        1
    }
}

/// SIGKILLs the command's group and every process reparented to us (job
/// processes that left the group, e.g. with `setsid`), again and again as
/// killing a parent hands its orphans to us, until we have no child left;
/// all of them reaped.
fn kill_all(main_pid: libc::pid_t, main_status: &mut Option<u8>) {
    loop {
        // SAFETY: kill(2) of the command's group and of our own children.
        unsafe { libc::kill(-main_pid, libc::SIGKILL) };
        for pid in children_of(std::process::id() as libc::pid_t) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if !reap(main_pid, main_status) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// For `locker` itself (a child subreaper too) once the guard is gone: if
/// the guard was killed (SIGKILL), the job's processes are reparented to
/// `locker`; SIGKILL them all, again as their orphans come to us, and reap
/// them, until no child is left.
pub fn kill_orphans() {
    let me = std::process::id() as libc::pid_t;
    loop {
        for pid in children_of(me) {
            // SAFETY: kill(2) of our own (reparented) children.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Reap what died; 0 means children are left, -1 (ECHILD) none.
        let left = loop {
            let mut st = 0;
            // SAFETY: waitpid on any child of ours, non-blocking.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                break pid == 0;
            }
        };
        if !left {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Pids whose parent is `parent`, from /proc.
fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain anything, so split after
    // the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The controlling terminal on stdin, when we were in its foreground: the
/// command's new group takes the foreground (so it can read the terminal
/// and gets Ctrl-C directly), and gets it back when it ends.
struct Terminal {
    ours: Option<libc::pid_t>,
}

impl Terminal {
    /// `ours`: locker's group. The guard leads a group of its own (so a
    /// stop of locker's group does not stop it), so it hands over the
    /// terminal from the background, with SIGTTOU blocked.
    /// Whether locker's group `ours` is the foreground of a terminal on fd 0.
    fn is_foreground(ours: libc::pid_t) -> bool {
        // SAFETY: isatty/tcgetpgrp on fd 0.
        unsafe { ours > 0 && libc::isatty(0) == 1 && libc::tcgetpgrp(0) == ours }
    }

    fn hand_to(group: libc::pid_t, ours: libc::pid_t) -> Terminal {
        // SAFETY: tcgetpgrp/kill on fd 0 and our own child's group.
        unsafe {
            // The child took the foreground itself (see spawn); this covers
            // a failure there, and remembers what to give back.
            let theirs = libc::isatty(0) == 1 && libc::tcgetpgrp(0) == group;
            if !theirs && !Terminal::is_foreground(ours) {
                return Terminal { ours: None };
            }
            if !set_foreground(group) {
                return Terminal { ours: None };
            }
            // It may have touched the terminal before it was its foreground
            // and been stopped for it.
            libc::kill(-group, libc::SIGCONT);
            Terminal { ours: Some(ours) }
        }
    }

    fn take_back(self) {
        let Some(ours) = self.ours else { return };
        set_foreground(ours);
    }
}

/// tcsetpgrp on fd 0 from a background group: it raises SIGTTOU unless it
/// is blocked, so block it around the call (and restore the mask: it is
/// inherited across exec). Async-signal-safe: also used between fork and
/// exec.
fn set_foreground(group: libc::pid_t) -> bool {
    // SAFETY: signal mask and tcsetpgrp calls on our own process and fd 0.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTTOU);
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        let ok = libc::tcsetpgrp(0, group) == 0;
        libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        ok
    }
}
