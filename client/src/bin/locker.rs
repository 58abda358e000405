//! `locker`: the command-line client of a Locker cluster.
//!
//! `locker run KEY -- CMD ARGS...` runs a command while holding a lock, like
//! `consul lock` and `etcdctl lock`; the other subcommands inspect and
//! manipulate locks directly.

use clap::{Args, Parser, Subcommand};
use locker_client::{
    parse_endpoints, safety_margin_ms, AcquireOptions, AcquireRequest, AcquireResult, BearerToken,
    Client, ClientOptions, ClusterInfo, Error, ListAnswer, LockData, LockResponse, LockStatus,
    Locker, LockerOptions, ReadAnswer, TlsOptions, DEFAULT_ENDPOINT,
};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exit code: some other owner holds the lock (or a wait timed out).
const EXIT_HELD: u8 = 3;
/// Exit code: no such lock (extend/release of a lock that is gone).
const EXIT_NO_KEY: u8 = 4;
/// Exit code: `run` lost its lock and stopped the command.
const EXIT_LOST: u8 = 5;
/// Exit code: any other failure (cluster unreachable, bad answer).
const EXIT_ERROR: u8 = 1;

const AFTER_HELP: &str = "\
Exit codes:
  0    success (for `run`: the command's own exit code is passed on)
  1    error: cluster unreachable, refused request, bad answer
  2    usage error
  3    someone else holds the lock (the holder is named on stderr)
  4    no such lock (extend/release of a lock that is gone)
  5    `run` lost its lock and stopped the command
  126  `run`: the command cannot be executed
  127  `run`: the command was not found
  128+N `run`: the command was killed by signal N

Examples:
  locker run nightly-report -- ./report.sh --full
  locker --endpoints http://10.0.0.1:7070,http://10.0.0.2:7070 run --wait-ms 60000 db-migrate -- make migrate
  OWNER=$(locker acquire --ttl-ms 60000 deploy) && ... && locker release deploy \"$OWNER\"
  locker --json show nightly-report";

const RUN_AFTER_HELP: &str = "\
Timing (all on this machine's monotonic clock; margin = --safety-margin-ms,
default a tenth of each ttl, at most 5000):
  process deadline = send time of the last confirmed keep-alive
                     + --report-ttl-ms - margin
  lock deadline    = send time of the last confirmed acquire/extend
                     + --ttl-ms - margin
  deadline         = the earlier of the two
  The cluster counts each ttl from when it applied the request, which is
  after it was sent, so it cannot free the lock before the deadline + margin.
  When nothing is confirmed (the cluster unreachable, every packet lost),
  locker sends SIGTERM at deadline - --grace-ms and SIGKILL at the deadline,
  and reaps the command: it is dead a margin before the lock can be freed.
  No wait (network call, grace) runs past the deadline. If less than the
  grace is left when the command would start (a slow acquire, a pause),
  it is not started (exit 5). With the defaults
  (process ttl 10000, write every 2000, grace 5000, margin 1000) a cut-off
  command gets SIGTERM 4 s and SIGKILL 9 s after the last keep-alive that
  got through was sent; the lock is free for others 10 s after it.
  Refused (exit 2): --safety-margin-ms 0, and for each ttl and its margin:
    grace + margin >= ttl               (the stop would start before the start)
    write/extend interval + grace + margin >= ttl
                                        (each renewal would come too late)

Processes:
  locker -> guard (`locker __guard`, internal) -> CMD. CMD leads its own
  process group; the guard is a child subreaper, so processes of the job
  whose parent dies are reparented to the guard, not to init. The guard's
  own command line does not hold CMD, so `pkill -9 -f CMD` (which hits
  locker and CMD) spares it, and it kills the rest of the job.
  Signals to locker: TERM and INT go to the whole group, and SIGKILL follows
  after --grace-ms if it is still running; HUP, QUIT, USR1, USR2 go to the
  group. A SIGTERM to every process (systemd's stop) reaches the guard
  too, which passes it on (once) instead of killing the job. The guard leads
  its own process group, so signals to locker's group (kill -STOP -PGID)
  do not reach it. TERM and
  INT are followed by CONT, so a stopped job acts on them in its grace. The lock is released only once the group is dead.
  When CMD exits, whatever it left running (background children) is
  SIGKILLed before the lock is released; locker exits with CMD's code.
  If locker dies, even by SIGKILL, the guard SIGKILLs the group (control
  pipe closed, parent-death signal) long before the process ttl frees the
  lock. The guard keeps the deadline itself: if locker is paused
  (SIGSTOP) or stuck, the guard sends SIGTERM at deadline - grace and
  SIGKILLs everything at the deadline; locker then exits with 5.
  A process that leaves the group with setsid (own session and group)
  is still the guard's once its parent dies: on every stop the guard kills
  the group, then every process reparented to it, until none is left.
  If the guard itself is SIGKILLed, the main command dies with it and
  locker (a child subreaper too) kills what is left before releasing.
  Not covered: processes the job has others start for it (systemd-run, a
  container engine, ssh: not its descendants).
  On a terminal, CMD's group becomes the foreground group, so Ctrl-C and
  terminal input reach it directly.";

/// Command-line client of a Locker cluster: run a command under a
/// cluster-wide lock, or inspect and change locks.
#[derive(Parser, Debug)]
#[command(name = "locker", version, after_help = AFTER_HELP)]
struct Cli {
    /// Comma-separated node URLs; the client fails over between them.
    #[arg(
        long,
        global = true,
        env = "LOCKER_ENDPOINTS",
        default_value = DEFAULT_ENDPOINT,
        value_name = "URLS"
    )]
    endpoints: String,

    /// The secret of a token of the nodes' --tokens-file, sent as
    /// `Authorization: Bearer` (prefer the environment: a command line is
    /// visible to every user of the machine).
    #[arg(
        long,
        global = true,
        env = "LOCKER_TOKEN",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    token: Option<String>,

    /// Print answers as JSON (one document on stdout) instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// How long one request may keep failing over between nodes before
    /// giving up.
    #[arg(long, global = true, default_value_t = 10_000, value_name = "MS")]
    timeout_ms: u64,

    /// PEM CA certificates that https:// endpoints' certificates must be
    /// signed by (default: the system's trusted roots).
    #[arg(long, global = true, env = "LOCKER_CA_CERT", value_name = "PATH")]
    ca_cert: Option<PathBuf>,

    /// PEM client certificate for nodes that require one (mutual TLS).
    #[arg(
        long,
        global = true,
        env = "LOCKER_CLIENT_CERT",
        value_name = "PATH",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,

    /// The PEM private key of --client-cert.
    #[arg(
        long,
        global = true,
        env = "LOCKER_CLIENT_KEY",
        value_name = "PATH",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command while holding KEY: the lock lives as long as this
    /// `locker` process (keep-alives every --report-write-ms), is released
    /// when the command exits (passing on its exit code), and if the lock is
    /// lost the command gets SIGTERM, then SIGKILL after --grace-ms, and
    /// locker exits with 5. The command runs as its own process group under
    /// a guard process; every signal goes to the whole group, and nothing of
    /// the job outlives locker (see "Processes" below).
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Acquire KEY without binding it to a process (it lives by its ttl
    /// alone): prints the owner hash, which extend and release need.
    Acquire(AcquireArgs),
    /// Extend a lock held by OWNER_HASH by its ttl.
    Extend {
        /// The lock key.
        key: String,
        /// The owner hash printed by `acquire`.
        owner_hash: String,
        /// New ttl from now (server default: 300000).
        #[arg(long, value_name = "MS")]
        ttl_ms: Option<u64>,
    },
    /// Release a lock held by OWNER_HASH.
    Release {
        /// The lock key.
        key: String,
        /// The owner hash printed by `acquire`.
        owner_hash: String,
    },
    /// Show who holds KEY.
    Show {
        /// The lock key.
        key: String,
    },
    /// List live locks in key order.
    List {
        /// Only keys starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// At most this many (server default 1000, at most 10000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show whether the run named by OWNER_HASH is running (RUNNING,
    /// SOMEONE_ELSE_HOLDS_LOCK, NO_KEY, NO_RUNNING_PROCESS,
    /// MALFORMED_OWNER_HASH).
    Owner {
        /// An owner hash, `{key}@{host}/{pid}.{nanos}.{seq}[#trace]`.
        owner_hash: String,
    },
    /// Print every change to locks and processes under PREFIX as it
    /// happens, one line per event (`--json`: one JSON object per line),
    /// until interrupted; resumes on its own across reconnects and node
    /// failover.
    Watch {
        /// Only keys (and processes) starting with this; default: all.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Return (exit 0) once KEY is free: at once if it is, else when its
    /// holder releases it, it expires or its process dies.
    Wait {
        /// The lock key.
        key: String,
        /// Give up after this long and exit 3 (default: wait for ever).
        /// The global --timeout-ms is the failover budget of each request.
        #[arg(long = "wait-ms", value_name = "MS")]
        wait_ms: Option<u64>,
    },
    /// Show the cluster (members, leader, term, log indexes), or change
    /// its membership: `locker cluster add|remove|promote` (these need the
    /// cluster secret, from LOCKER_CLUSTER_SECRET or --cluster-secret).
    Cluster(cluster::ClusterArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The lock key.
    key: String,
    /// The lock's own ttl (it is extended every --extend-ms while the
    /// command runs).
    #[arg(long, default_value_t = 300_000, value_name = "MS")]
    ttl_ms: u64,
    /// If the lock is held, wait up to this long for it (FIFO) instead of
    /// exiting with code 3 at once.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    wait_ms: u64,
    /// Stop sequence: SIGTERM, then SIGKILL after this long. On a cut-off
    /// (no keep-alive or extend confirmed) SIGTERM goes out this long before
    /// the local deadline, so SIGKILL lands at it (see "Timing" below).
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    grace_ms: u64,
    /// Subtracted from both ttls for the local deadlines (default: a tenth of
    /// the ttl, at most 5000): room for SIGKILL delivery, reaping and clock
    /// rate differences before the cluster could free the lock.
    #[arg(long, value_name = "MS")]
    safety_margin_ms: Option<u64>,
    /// Recheck the lock at least this often (default: min(5000, extend)).
    #[arg(long, value_name = "MS")]
    recheck_ms: Option<u64>,
    /// Extend the lock this often (default: min(60000, ttl/3)).
    #[arg(long, value_name = "MS")]
    extend_ms: Option<u64>,
    /// How often to write this process's keep-alive.
    #[arg(long, default_value_t = 2_000, value_name = "MS")]
    report_write_ms: u64,
    /// The process ttl: if locker dies, the lock is free after this long.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    report_ttl_ms: u64,
    /// A trace to keep in the lock record and the owner hash.
    #[arg(long)]
    trace: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Args, Debug)]
struct AcquireArgs {
    /// The lock key.
    key: String,
    /// The lock ttl (server default 300000).
    #[arg(long, value_name = "MS")]
    ttl_ms: Option<u64>,
    /// If the lock is held, wait up to this long for it (FIFO).
    #[arg(long, value_name = "MS")]
    wait_ms: Option<u64>,
    /// Use this owner hash (default: a new one for this invocation).
    #[arg(long)]
    owner_hash: Option<String>,
    /// Bind the lock to an existing process record (it dies with it).
    #[arg(long)]
    process_hash: Option<String>,
    /// A trace to keep in the lock record.
    #[arg(long)]
    trace: Option<String>,
}

// Not src/bin/guard.rs: cargo would take that for a second binary.
#[path = "locker/cluster.rs"]
mod cluster;
#[path = "locker/guard.rs"]
mod guard;
#[path = "locker/watch.rs"]
mod watch;

fn main() -> ExitCode {
    // `locker run` re-executes itself as the guard between it and the
    // command: plain, synchronous code, no runtime, no argument parser.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == guard::SUBCOMMAND) {
        return ExitCode::from(guard::main(&argv[2..]));
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOCKER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    // A current-thread runtime on the main thread: the child of `run` is
    // forked from this thread, and PR_SET_PDEATHSIG fires when the forking
    // *thread* exits, so it must be one that lives as long as the process.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("locker: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let code = rt.block_on(real_main(cli));
    ExitCode::from(code)
}

impl Cli {
    /// The TLS files for https:// endpoints.
    fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_cert: self.ca_cert.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

async fn real_main(cli: Cli) -> u8 {
    let endpoints = match parse_endpoints(&cli.endpoints) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("locker: {e}");
            return 2;
        }
    };
    let tls = cli.tls();
    let token = cli.token.as_deref().map(BearerToken::from);
    let client_opts = ClientOptions {
        endpoints: endpoints.clone(),
        failover_timeout_ms: cli.timeout_ms,
        tls: tls.clone(),
        token: token.clone(),
        ..Default::default()
    };
    let Ok(client) = Client::new(client_opts).map_err(|e| eprintln!("locker: {e}")) else {
        return EXIT_ERROR;
    };
    let json = cli.json;
    let res = match cli.command {
        Command::Run(args) => return run(args, endpoints, token, cli.timeout_ms, tls).await,
        Command::Acquire(a) => cmd_acquire(&client, a, json).await,
        Command::Extend {
            key,
            owner_hash,
            ttl_ms,
        } => client
            .extend(&key, &owner_hash, ttl_ms)
            .await
            .map(|r| report_lock_op("extend", &key, &r, json)),
        Command::Release { key, owner_hash } => client
            .release(&key, &owner_hash)
            .await
            .map(|r| report_lock_op("release", &key, &r, json)),
        Command::Show { key } => cmd_show(&client, &key, json).await,
        Command::List { prefix, limit } => cmd_list(&client, prefix.as_deref(), limit, json).await,
        Command::Owner { owner_hash } => cmd_owner(&client, &owner_hash, json).await,
        Command::Watch { prefix } => watch::watch(&client, &prefix, json).await,
        Command::Wait { key, wait_ms } => watch::wait(&client, &key, wait_ms, EXIT_HELD).await,
        Command::Cluster(cluster::ClusterArgs {
            action: Some(action),
        }) => {
            return cluster::run(action, &client, json)
                .await
                .unwrap_or_else(|e| {
                    eprintln!("locker: {e}");
                    EXIT_ERROR
                })
        }
        Command::Cluster(_) => client.cluster().await.map(|v| {
            if json {
                print_json(&v);
            } else {
                print_cluster(&v);
            }
            0
        }),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("locker: {e}");
            EXIT_ERROR
        }
    }
}

async fn cmd_show(client: &Client, key: &str, json: bool) -> Result<u8, Error> {
    let l = client.read_lock(key).await?;
    if json {
        print_json(&ReadAnswer {
            locked: l.is_some(),
            lock: l.clone(),
        });
    } else {
        match l {
            Some(lock) => print_lock(&lock),
            None => println!("{key}: unlocked"),
        }
    }
    Ok(0)
}

async fn cmd_list(
    client: &Client,
    prefix: Option<&str>,
    limit: Option<u32>,
    json: bool,
) -> Result<u8, Error> {
    let ls = client.list_locks(prefix, limit).await?;
    if json {
        print_json(&ListAnswer { locks: ls.clone() });
    } else if ls.is_empty() {
        println!("no locks");
    } else {
        for l in &ls {
            println!(
                "{}\t{}\ttoken={}\t{}",
                l.key,
                l.owner_hash,
                l.fencing_token,
                expires_in(l.expires_at)
            );
        }
    }
    Ok(0)
}

async fn cmd_owner(client: &Client, owner_hash: &str, json: bool) -> Result<u8, Error> {
    let r = client.owner_status(owner_hash).await?;
    if json {
        print_json(&r);
    } else {
        println!("{}", r.status);
        if let Some(k) = &r.key {
            println!("key: {k}");
        }
        if let Some(l) = &r.lock {
            println!("lock:");
            print_lock(l);
        }
    }
    Ok(0)
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("locker: cannot print JSON: {e}"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Log time is the leader's clock, close to ours in practice; good enough
/// for a human-readable hint.
fn expires_in(expires_at: u64) -> String {
    let now = now_ms();
    if expires_at >= now {
        format!("expires in {:.1} s", (expires_at - now) as f64 / 1000.0)
    } else {
        format!("expired {:.1} s ago", (now - expires_at) as f64 / 1000.0)
    }
}

fn print_lock(l: &LockData) {
    println!("key:           {}", l.key);
    println!("owner_hash:    {}", l.owner_hash);
    println!(
        "process_hash:  {}",
        l.process_hash
            .as_deref()
            .unwrap_or("(none: lives by its ttl)")
    );
    if let Some(t) = &l.trace {
        println!("trace:         {t}");
    }
    println!("fencing_token: {}", l.fencing_token);
    println!("acquired_at:   {}", l.acquired_at);
    println!("extended_at:   {}", l.extended_at);
    println!(
        "expires_at:    {} ({})",
        l.expires_at,
        expires_in(l.expires_at)
    );
    println!("ttl_ms:        {}", l.ttl_ms);
}

fn print_cluster(v: &ClusterInfo) {
    let show = |i: Option<u64>| i.map_or_else(|| "none".to_string(), |i| i.to_string());
    println!(
        "node {} answering ({}); leader {}; term {}; last_log_index {}; last_applied_index {}; committed_index {}",
        v.node_id,
        v.state,
        show(v.leader_id),
        v.term,
        show(v.last_log_index),
        show(v.last_applied_index),
        show(v.committed_index),
    );
    for m in &v.members {
        let mark = if Some(m.id) == v.leader_id {
            " (leader)"
        } else {
            ""
        };
        println!(
            "  {}{}\tclient {}\tpeer {}\t{}",
            m.id,
            mark,
            m.client_addr,
            m.peer_addr,
            if m.voter { "voter" } else { "learner" }
        );
    }
}

fn holder_text(l: &LockData) -> String {
    let mut s = format!("{} (fencing token {}", l.owner_hash, l.fencing_token);
    if let Some(p) = &l.process_hash {
        s.push_str(&format!(", process {p}"));
    }
    if let Some(t) = &l.trace {
        s.push_str(&format!(", trace {t}"));
    }
    s.push_str(&format!(", {})", expires_in(l.expires_at)));
    s
}

fn report_lock_op(op: &str, key: &str, r: &LockResponse, json: bool) -> u8 {
    if json {
        print_json(r);
    }
    match r.status {
        LockStatus::Success => {
            if !json {
                match (op, &r.lock) {
                    ("release", _) | (_, None) => println!("{op}: {key}: SUCCESS"),
                    (_, Some(l)) => println!(
                        "{op}: {key}: SUCCESS, fencing token {}, {}",
                        l.fencing_token,
                        expires_in(l.expires_at)
                    ),
                }
            }
            0
        }
        LockStatus::SomeoneElseHoldsLock => {
            match &r.lock {
                Some(l) => eprintln!("locker: {op}: lock \"{key}\" is held by {}", holder_text(l)),
                None => eprintln!("locker: {op}: lock \"{key}\" is held by someone else"),
            }
            EXIT_HELD
        }
        LockStatus::NoKey => {
            eprintln!("locker: {op}: no live lock \"{key}\" (NO_KEY)");
            EXIT_NO_KEY
        }
        LockStatus::NoRunningProcess => {
            eprintln!("locker: {op}: the named process is not running (NO_RUNNING_PROCESS)");
            EXIT_HELD
        }
    }
}

async fn cmd_acquire(client: &Client, a: AcquireArgs, json: bool) -> Result<u8, Error> {
    // Without --owner-hash, Client::acquire makes the owner hash (not the
    // server), so a retried request is a re-acquire, not a second owner.
    let r = client
        .acquire(
            &a.key,
            &AcquireRequest {
                owner_hash: a.owner_hash.clone(),
                process_hash: a.process_hash.clone(),
                trace: a.trace.clone(),
                ttl_ms: a.ttl_ms,
                wait_ms: a.wait_ms,
            },
        )
        .await?;
    if r.status == LockStatus::Success && !json {
        if let Some(l) = &r.lock {
            // stdout: just the owner hash, for OWNER=$(locker acquire KEY).
            println!("{}", l.owner_hash);
            eprintln!(
                "acquired \"{}\": fencing token {}, {}",
                l.key,
                l.fencing_token,
                expires_in(l.expires_at)
            );
        }
        return Ok(0);
    }
    Ok(report_lock_op("acquire", &a.key, &r, json))
}

/// Refuses timings under which the stop sequence cannot end before the
/// cluster may free the lock (see RUN_AFTER_HELP).
fn check_run_timings(args: &RunArgs, extend_ms: u64) -> Result<(), String> {
    if args.safety_margin_ms == Some(0) {
        // SIGKILL would land exactly when the cluster may free the lock (if
        // it applied our last renewal the instant we sent it): no room for
        // its delivery, the reaping, or a leader clock running faster.
        return Err("unsafe timing: --safety-margin-ms must be positive".to_string());
    }
    for (what, ttl_flag, ttl, renew_flag, renew) in [
        (
            "process",
            "--report-ttl-ms",
            args.report_ttl_ms,
            "--report-write-ms",
            args.report_write_ms,
        ),
        ("lock", "--ttl-ms", args.ttl_ms, "--extend-ms", extend_ms),
    ] {
        if ttl == 0 || renew == 0 {
            return Err(format!("{ttl_flag} and {renew_flag} must be positive"));
        }
        let margin = safety_margin_ms(ttl, args.safety_margin_ms);
        let g = args.grace_ms;
        if g.saturating_add(margin) >= ttl {
            return Err(format!(
                "unsafe timing: --grace-ms ({g}) + safety margin ({margin}) must be below \
                 {ttl_flag} ({ttl}): the {what} deadline would pass before the command could \
                 be stopped"
            ));
        }
        if renew.saturating_add(g).saturating_add(margin) >= ttl {
            return Err(format!(
                "unsafe timing: {renew_flag} ({renew}) + --grace-ms ({g}) + safety margin \
                 ({margin}) must be below {ttl_flag} ({ttl}): every {what} renewal would come \
                 after the command had to start stopping"
            ));
        }
    }
    Ok(())
}

async fn run(
    args: RunArgs,
    endpoints: Vec<String>,
    token: Option<BearerToken>,
    timeout_ms: u64,
    tls: TlsOptions,
) -> u8 {
    let extend_ms = args.extend_ms.unwrap_or((args.ttl_ms / 3).clamp(1, 60_000));
    let recheck_ms = args.recheck_ms.unwrap_or(extend_ms.min(5_000));
    if let Err(e) = check_run_timings(&args, extend_ms) {
        eprintln!("locker: {e} (see `locker run --help`, \"Timing\")");
        return 2;
    }
    let timing = (timeout_ms, extend_ms, recheck_ms);
    let locker = match run_locker(&args, endpoints, token, timing, tls) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("locker: {e}");
            return EXIT_ERROR;
        }
    };
    let acq = match acquire_for_run(&locker, &args).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    let hb = acq.heartbeater();
    // If the guard itself is killed (SIGKILL), the job's processes come to
    // us instead of init, and are killed before the lock is released
    // (guard::kill_orphans).
    // SAFETY: prctl on our own process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    tracing::info!(key = %args.key, owner_hash = %acq.owner_hash(), "lock acquired; starting the command");
    let (child, ctl, acq) = match start_command(&args, acq, &hb, &locker).await {
        Ok(started) => started,
        Err(code) => return code,
    };
    match supervise(&args, child, &ctl, &hb, &locker, acq).await {
        Supervised::Stopped(code) => code,
        Supervised::Exited(status, acq) => finish_run(&args, status, &hb, acq, &locker).await,
    }
}

/// The library's `Locker` for one `locker run`.
fn run_locker(
    args: &RunArgs,
    endpoints: Vec<String>,
    token: Option<BearerToken>,
    (timeout_ms, extend_ms, recheck_ms): (u64, u64, u64),
    tls: TlsOptions,
) -> Result<Locker, Error> {
    Locker::new(LockerOptions {
        endpoints,
        token,
        report_write_ms: args.report_write_ms,
        report_ttl_ms: args.report_ttl_ms,
        lock_ttl_ms: args.ttl_ms,
        lock_extend_ms: extend_ms,
        lock_recheck_ms: recheck_ms,
        safety_margin_ms: args.safety_margin_ms,
        // The library reports the loss a grace period before the local
        // deadline, so SIGKILL can land at the deadline at the latest.
        stop_grace_ms: args.grace_ms,
        failover_timeout_ms: timeout_ms,
        tls,
        process_info: Some(json!({
            "tool": "locker run",
            "command": args.command,
        })),
        ..Default::default()
    })
}

/// Takes the lock (waiting up to `--wait-ms`), or says why not and gives
/// the exit code.
async fn acquire_for_run(locker: &Locker, args: &RunArgs) -> Result<locker_client::Acquired, u8> {
    let r = locker
        .acquire_with(
            &args.key,
            AcquireOptions {
                trace: args.trace.clone(),
                wait_ms: (args.wait_ms > 0).then_some(args.wait_ms),
            },
        )
        .await;
    match r {
        Ok(AcquireResult::Success(a)) => Ok(a),
        Ok(AcquireResult::SomeoneElseHoldsLock(holder)) => {
            eprintln!(
                "locker: lock \"{}\" is held by {}",
                args.key,
                holder_text(&holder)
            );
            locker.terminate().await;
            Err(EXIT_HELD)
        }
        Err(e) => {
            eprintln!("locker: cannot acquire \"{}\": {e}", args.key);
            locker.terminate().await;
            Err(EXIT_ERROR)
        }
    }
}

/// Starts the command under its guard, unless a slow acquire (or a pause)
/// used up the time: a command that would have to be stopped at once is
/// not started (the guard checks too). On failure the lock is released.
async fn start_command(
    args: &RunArgs,
    acq: locker_client::Acquired,
    hb: &locker_client::Heartbeater,
    locker: &Locker,
) -> Result<(tokio::process::Child, GuardCtl, locker_client::Acquired), u8> {
    if hb.is_lost() || hb.time_left_ms().unwrap_or(0) <= args.grace_ms {
        eprintln!(
            "locker: the local deadline of \"{}\" is (nearly) past already; not starting \
             the command",
            args.key
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), acq.release()).await;
        locker.terminate().await;
        return Err(EXIT_LOST);
    }
    match spawn_guard(args, &acq.lock_data, guard_deadline(hb)) {
        Ok((child, ctl)) => Ok((child, ctl, acq)),
        Err(e) => {
            eprintln!("locker: cannot start the command's guard: {e}");
            let _ = acq.release().await;
            locker.terminate().await;
            Err(EXIT_ERROR)
        }
    }
}

/// How watching the command ended.
enum Supervised {
    /// The guard exited: the command ended (or was stopped on a signal).
    Exited(
        std::io::Result<std::process::ExitStatus>,
        locker_client::Acquired,
    ),
    /// The lock was lost; the command was stopped; exit with this code.
    Stopped(u8),
}

/// Keeps the lock alive while the command runs, passes signals on, keeps
/// the guard's deadline current, and stops the command if the lock is lost.
async fn supervise(
    args: &RunArgs,
    mut child: tokio::process::Child,
    ctl: &GuardCtl,
    hb: &locker_client::Heartbeater,
    locker: &Locker,
    acq: locker_client::Acquired,
) -> Supervised {
    let mut sig_rx = watch_signals();
    // keep_alive() extends and rechecks; lost() fires at the local deadline
    // minus the grace even while a network call is still hanging.
    let keep = hb.keep_alive();
    tokio::pin!(keep);
    let lost = hb.lost();
    tokio::pin!(lost);
    // After SIGTERM/SIGINT to locker the group gets SIGKILL after the grace.
    let mut kill_at: Option<tokio::time::Instant> = None;
    // The guard enforces the deadline on its own (locker may be paused), so
    // it must hear at once when a keep-alive or extend moves it.
    let mut sent_deadline = guard_deadline(hb);
    let mut tick = tokio::time::interval(Duration::from_millis(GUARD_UPDATE_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let status = loop {
        let escalate = async {
            match kill_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            st = child.wait() => break st,
            err = &mut keep => {
                return Supervised::Stopped(stop_after_loss(args, child, ctl, err, locker, acq).await);
            }
            e = &mut lost => {
                let err = Error::Lost(e);
                return Supervised::Stopped(stop_after_loss(args, child, ctl, err, locker, acq).await);
            }
            Some(n) = sig_rx.recv() => {
                ctl.signal(n);
                if (n == libc::SIGTERM || n == libc::SIGINT) && kill_at.is_none() {
                    kill_at = Some(tokio::time::Instant::now() + Duration::from_millis(args.grace_ms));
                }
            }
            _ = tick.tick() => {
                let d = guard_deadline(hb);
                if d != sent_deadline {
                    ctl.deadline(d);
                    sent_deadline = d;
                }
            }
            _ = escalate => {
                eprintln!(
                    "locker: the command did not stop within {} ms of the signal; sending SIGKILL",
                    args.grace_ms
                );
                break kill_now(&mut child, ctl).await;
            }
        }
    };
    Supervised::Exited(status, acq)
}

/// After the guard exited: kills what a killed guard left, and releases the
/// lock unless its local deadline passed first. The exit code.
async fn finish_run(
    args: &RunArgs,
    status: std::io::Result<std::process::ExitStatus>,
    hb: &locker_client::Heartbeater,
    acq: locker_client::Acquired,
    locker: &Locker,
) -> u8 {
    // Normally nothing: the guard kills and reaps the whole job before it
    // exits. A guard that was killed leaves its job to us.
    if matches!(&status, Ok(st) if guard_was_killed(*st)) {
        eprintln!("locker: the guard was killed; killing what is left of the command");
    }
    guard::kill_orphans();
    if hb.time_left_ms() == Some(0) {
        // The guard's watchdog stopped the job at the deadline (locker was
        // paused or stuck), or it ended just then: the lock may be gone.
        eprintln!(
            "locker: the local deadline of \"{}\" passed before the command ended; \
             it was stopped (was locker paused?)",
            args.key
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), acq.release()).await;
        locker.terminate().await;
        return EXIT_LOST;
    }
    let code = match status {
        Ok(st) => exit_code_of(st),
        Err(e) => {
            eprintln!("locker: waiting for the command failed: {e}");
            EXIT_ERROR
        }
    };
    if let Err(e) = acq.release().await {
        eprintln!(
            "locker: the command finished but releasing \"{}\" failed: {e} (it expires with this process)",
            args.key
        );
    }
    locker.terminate().await;
    code
}

/// Signals sent to locker, to pass on to the command's process group.
/// Locker keeps holding the lock until the group is dead; registering them
/// (SIGINT included) keeps them from killing locker first.
fn watch_signals() -> tokio::sync::mpsc::UnboundedReceiver<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let (sig_tx, sig_rx) = tokio::sync::mpsc::unbounded_channel::<i32>();
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
        SignalKind::quit(),
        SignalKind::user_defined1(),
        SignalKind::user_defined2(),
    ] {
        match signal(kind) {
            Ok(mut s) => {
                let tx = sig_tx.clone();
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        if tx.send(kind.as_raw_value()).is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => eprintln!("locker: cannot watch signal {}: {e}", kind.as_raw_value()),
        }
    }
    sig_rx
}

async fn stop_after_loss(
    args: &RunArgs,
    mut child: tokio::process::Child,
    ctl: &GuardCtl,
    err: Error,
    locker: &Locker,
    acq: locker_client::Acquired,
) -> u8 {
    // SIGKILL lands at the local deadline at the latest, even when the loss
    // was noticed late (the grace is then shorter).
    let grace = acq
        .heartbeater()
        .time_left_ms()
        .map_or(args.grace_ms, |left| left.min(args.grace_ms));
    // `err` is a LockError naming the key, our owner hash and the new holder.
    eprintln!("locker: {err}; stopping the command (SIGTERM, SIGKILL after {grace} ms)");
    ctl.signal(libc::SIGTERM);
    match tokio::time::timeout(Duration::from_millis(grace), child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            eprintln!("locker: the command did not stop within {grace} ms; sending SIGKILL");
            let _ = kill_now(&mut child, ctl).await;
        }
    }
    guard::kill_orphans();
    // Frees the lock if the cluster still has it under our name (e.g. when
    // we self-fenced while it was unreachable); skipped when taken over.
    let _ = tokio::time::timeout(Duration::from_secs(5), acq.release()).await;
    locker.terminate().await;
    EXIT_LOST
}

/// How long the guard may take to kill the job once told to, before locker
/// kills the guard itself: well within the smallest safety margin.
const GUARD_KILL_WAIT_MS: u64 = 50;

/// SIGKILL for the whole job, now. The guard does it (group first, then
/// escapees) when told; a guard that does not act at once (stopped with
/// SIGSTOP by mistake) is SIGKILLed itself: the
/// main command dies with it (parent-death signal) and the rest of the job
/// is reparented to locker, for guard::kill_orphans.
async fn kill_now(
    child: &mut tokio::process::Child,
    ctl: &GuardCtl,
) -> std::io::Result<std::process::ExitStatus> {
    ctl.signal(libc::SIGKILL);
    let wait = Duration::from_millis(GUARD_KILL_WAIT_MS);
    if let Ok(st) = tokio::time::timeout(wait, child.wait()).await {
        return st;
    }
    eprintln!("locker: the guard did not act on SIGKILL; killing it");
    // SIGKILL works on a stopped process.
    let _ = child.start_kill();
    let st = child.wait().await;
    guard::kill_orphans();
    st
}

/// The guard exits with a code (the command's); only a signal it did not
/// catch (SIGKILL) ends it by a signal.
fn guard_was_killed(st: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    st.signal().is_some()
}

fn exit_code_of(st: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(c) = st.code() {
        return (c & 0xff) as u8;
    }
    match st.signal() {
        Some(sig) => (128 + sig).clamp(0, 255) as u8,
        None => EXIT_ERROR,
    }
}

/// How often `locker` tells the guard the current deadline (if it moved).
const GUARD_UPDATE_MS: u64 = 50;

/// The local deadline on the guard's clock. The clock is read before the
/// time left, so the result is never later than the true deadline.
fn guard_deadline(hb: &locker_client::Heartbeater) -> u64 {
    let now = guard::mono_now_ms();
    now.saturating_add(hb.time_left_ms().unwrap_or(0))
}

/// The write end of the guard's control pipe (see guard.rs for the
/// messages). Dropping it (or locker dying) tells the guard to kill
/// everything.
struct GuardCtl {
    pipe: std::fs::File,
}

impl GuardCtl {
    fn signal(&self, sig: i32) {
        self.send(guard::TAG_SIGNAL, sig.max(0) as u64);
    }

    fn deadline(&self, mono_ms: u64) {
        self.send(guard::TAG_DEADLINE, mono_ms);
    }

    fn send(&self, tag: u8, value: u64) {
        use std::io::Write;
        // A guard that is gone has nothing left to signal (EPIPE: Rust
        // ignores SIGPIPE, so this is an error, not a death). The pipe is
        // non-blocking: a stopped guard must not block locker; a message
        // (< PIPE_BUF, so all or nothing) lost to a full pipe only makes the
        // guard's deadline earlier.
        let _ = (&self.pipe).write_all(&guard::encode(tag, value));
    }
}

/// The command's arguments, each followed by a NUL byte, in an anonymous
/// close-on-exec memory file (for the guard, see guard::read_command).
fn command_file(command: &[String]) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor is
    // owned by the File from here on.
    let fd = unsafe { libc::memfd_create(c"locker-guard-command".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor, owned by nobody else.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    for a in command {
        f.write_all(a.as_bytes())?;
        f.write_all(&[0])?;
    }
    Ok(f)
}

/// Starts `locker __guard FD GRACE_MS DEADLINE_MS CMD_FD` (this very binary): it runs the
/// command as its own process group, as a child subreaper, and dies with us.
fn spawn_guard(
    args: &RunArgs,
    lock: &LockData,
    deadline_ms: u64,
) -> std::io::Result<(tokio::process::Child, GuardCtl)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two descriptors, both close-on-exec.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from pipe2, owned from here on.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let read_fd = read.as_raw_fd();
    // The command goes to the guard in a memfd, not its argv, so that
    // `pkill -f CMD` (which hits locker and the command) spares the guard,
    // which then kills the rest of the job.
    let argv = command_file(&args.command)?;
    let argv_fd = argv.as_raw_fd();
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg0("locker")
        .arg(guard::SUBCOMMAND)
        .arg(read_fd.to_string())
        .arg(args.grace_ms.to_string())
        .arg(deadline_ms.to_string())
        .arg(argv_fd.to_string())
        .env("LOCKER_KEY", &lock.key)
        .env("LOCKER_OWNER_HASH", &lock.owner_hash)
        .env("LOCKER_FENCING_TOKEN", lock.fencing_token.to_string())
        .kill_on_drop(false);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (prctl, getppid, fcntl, _exit).
    unsafe {
        cmd.pre_exec(move || {
            // If locker dies, even by SIGKILL, the guard gets SIGTERM and
            // kills the job (it also sees the control pipe close).
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            // A group of its own: a SIGSTOP (or any signal) to locker's
            // group must not stop the guard too, or nobody is left to
            // stop the job (in its own group) when the lock runs out.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The read end and the command file (only) survive exec into
            // the guard.
            for fd in [read_fd, argv_fd] {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(read);
    drop(argv);
    // SAFETY: fcntl on our own descriptor.
    unsafe {
        let fl = libc::fcntl(write.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(write.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    Ok((
        child,
        GuardCtl {
            pipe: std::fs::File::from(write),
        },
    ))
}
