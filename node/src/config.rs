//! Command-line flags; each also reads from `LOCKER_<FLAG>` for containers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// One node of a Locker cluster: a Raft replica of the lock table with an
/// HTTP/JSON API. With no flags it is a ready single-node cluster on
/// 127.0.0.1:7070 with its data in ./data.
#[derive(Debug, Clone, Parser)]
#[command(name = "locker-node", version, about, long_about = None)]
pub struct Cli {
    /// A one-shot subcommand instead of running a node.
    #[command(subcommand)]
    pub command: Option<Subcommand_>,
    /// How to run the node (also read by `healthcheck` for the address).
    #[command(flatten)]
    pub node: NodeConfig,
}

/// `locker-node SUBCOMMAND`: tools that ship in the same binary, so a
/// container image needs nothing else.
#[derive(Debug, Clone, Subcommand)]
pub enum Subcommand_ {
    /// Exit 0 if the node at --client-addr answers /healthz (for container
    /// health checks, which have no shell or curl).
    Healthcheck {
        /// How long to wait for the answer, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Take a consistent backup of the lock table from a running cluster
    /// (`GET /v1/backup`), or check one with --verify.
    Backup(crate::backup_tools::BackupArgs),
    /// Check a backup file: magic, format, checksum, contents; prints counts.
    VerifyBackup {
        /// The backup file.
        file: PathBuf,
    },
    /// Seed an empty data directory of a new cluster from a backup (every
    /// member from the same file), then start the nodes as usual.
    Restore(crate::backup_tools::RestoreArgs),
}

/// Everything a running node is configured with: flags, each with a
/// `LOCKER_*` environment twin so containers need no command line.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeConfig {
    /// This node's id: unique in the cluster and never reused for a wiped node.
    #[arg(long, env = "LOCKER_ID", default_value_t = 1)]
    pub id: u64,

    /// Where the Raft log and the lock table are kept (created if missing).
    #[arg(long, env = "LOCKER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Address of the HTTP/JSON client API.
    #[arg(long, env = "LOCKER_CLIENT_ADDR", default_value = "127.0.0.1:7070")]
    pub client_addr: SocketAddr,

    /// Address for Raft traffic between nodes (needs the cluster secret).
    #[arg(long, env = "LOCKER_PEER_ADDR", default_value = "127.0.0.1:7080")]
    pub peer_addr: SocketAddr,

    /// The address other nodes and forwarded clients should use to reach this
    /// node's client API, when it differs from --client-addr (e.g. 0.0.0.0 in a
    /// container).
    #[arg(long, env = "LOCKER_ADVERTISE_CLIENT_ADDR")]
    pub advertise_client_addr: Option<String>,

    /// The address other nodes should use for Raft traffic, when it differs
    /// from --peer-addr.
    #[arg(long, env = "LOCKER_ADVERTISE_PEER_ADDR")]
    pub advertise_peer_addr: Option<String>,

    /// The first members, as ID=PEER_ADDR,... including this node. Used only
    /// on the first start: the cluster forms once a majority of the members is
    /// up; the others join through replication. Ignored once the node is
    /// initialized. Empty: a single-node cluster.
    #[arg(long, env = "LOCKER_INITIAL_CLUSTER", value_parser = parse_initial_cluster, default_value = "")]
    pub initial_cluster: InitialCluster,

    /// Start empty and wait to be added by `POST /v1/cluster/members` on the
    /// leader, instead of bootstrapping a single-node cluster.
    #[arg(long, env = "LOCKER_JOIN")]
    pub join: bool,

    /// Shared secret every peer request and membership change must carry.
    /// Set the same value on all nodes of a cluster. Prefer
    /// --cluster-secret-file or the environment to this flag: a command line
    /// is visible to every user of the machine (`ps`). The built-in default
    /// is only fit for a single node; a multi-node cluster refuses it.
    #[arg(
        long,
        env = "LOCKER_CLUSTER_SECRET",
        default_value = DEFAULT_CLUSTER_SECRET,
        hide_default_value = true,
        hide_env_values = true,
        conflicts_with = "cluster_secret_file"
    )]
    pub cluster_secret: String,

    /// Read the cluster secret from this file (its first line; surrounding
    /// whitespace is ignored) instead of --cluster-secret.
    #[arg(long, env = "LOCKER_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,

    /// LOCAL DEVELOPMENT ONLY: let a multi-node cluster start with the
    /// built-in, an empty or a short (under 16 bytes) cluster secret.
    #[arg(long, env = "LOCKER_INSECURE_DEV")]
    pub insecure_dev: bool,

    /// Open connections at most on the client port (more wait in the
    /// kernel's queue). Lowered at start to fit the open files limit, so a
    /// flood of connections cannot take the descriptors peers and storage
    /// need.
    #[arg(long, env = "LOCKER_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// A connection that has not sent a complete request header this long
    /// after it opened, or after its previous answer, is closed (both
    /// ports), in milliseconds. Above the 30 s the Locker clients keep an
    /// idle connection, so they close theirs first.
    #[arg(long, env = "LOCKER_IDLE_TIMEOUT_MS", default_value_t = 40_000)]
    pub idle_timeout_ms: u64,

    /// Host names the client port answers to (the `Host` header, port
    /// ignored), comma-separated, besides `localhost`, IP addresses and this
    /// node's advertised client address. Empty: that default set when the
    /// client address is loopback, any host otherwise. Closes DNS rebinding:
    /// a web page whose own name resolves to the node's address.
    #[arg(long, env = "LOCKER_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Serve the client port over HTTPS only, with this PEM certificate
    /// chain (this node's certificate first). Read again on SIGHUP.
    #[arg(long, env = "LOCKER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "LOCKER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Also require a client certificate signed by a CA in this PEM file on
    /// the client port (mutual TLS).
    #[arg(long, env = "LOCKER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Mutual TLS between nodes: this node's PEM certificate chain, served on
    /// the peer port and presented to the peers and client ports it calls.
    /// Needs --peer-tls-key and --peer-tls-ca; peer addresses are then
    /// reached over https. Read again on SIGHUP.
    #[arg(long, env = "LOCKER_PEER_TLS_CERT", requires_all = ["peer_tls_key", "peer_tls_ca"])]
    pub peer_tls_cert: Option<PathBuf>,

    /// The PEM private key of --peer-tls-cert.
    #[arg(long, env = "LOCKER_PEER_TLS_KEY", requires = "peer_tls_cert")]
    pub peer_tls_key: Option<PathBuf>,

    /// The PEM CA certificates peers' certificates must be signed by; also
    /// what the client ports of other nodes are verified against when this
    /// node forwards a request to them.
    #[arg(long, env = "LOCKER_PEER_TLS_CA", requires = "peer_tls_cert")]
    pub peer_tls_ca: Option<PathBuf>,

    /// Turn authentication on: a JSON file of tokens, each with the
    /// SHA-256 of its secret, its key prefixes, its roles (read, write,
    /// admin) and optional "max_locks" and "rate_per_s" (see README,
    /// Security). Requests then need `Authorization: Bearer <secret>`.
    /// SIGHUP reloads it. Without it the client API is open to anyone who
    /// can reach it.
    #[arg(long, env = "LOCKER_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Lock records this node's table may hold (live, or ended and not yet
    /// swept); an acquire past it is refused with 429 LIMIT_EXCEEDED. 0: no
    /// limit. Judged by the leader's value, in the replicated log.
    #[arg(long, env = "LOCKER_MAX_LOCKS", default_value_t = 1_000_000)]
    pub max_locks: u64,

    /// Process records the table may hold; a keep-alive of a new process
    /// past it is refused with 429 LIMIT_EXCEEDED. 0: no limit.
    #[arg(long, env = "LOCKER_MAX_PROCESSES", default_value_t = 100_000)]
    pub max_processes: u64,

    /// Blocking acquires (`wait_ms`) waiting on this node at once; one
    /// more is refused with 429 LIMIT_EXCEEDED. 0: no limit.
    #[arg(long, env = "LOCKER_MAX_WAITERS", default_value_t = 10_000)]
    pub max_waiters: usize,

    /// Raft heartbeat interval, in milliseconds.
    #[arg(long, env = "LOCKER_HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,

    /// Minimum election timeout, in milliseconds (the maximum is twice this).
    /// A leader is replaced within about this long after it dies.
    #[arg(long, env = "LOCKER_ELECTION_TIMEOUT_MS", default_value_t = 1000)]
    pub election_timeout_ms: u64,

    /// Build a snapshot after this many log entries since the last one.
    #[arg(long, env = "LOCKER_SNAPSHOT_EVERY", default_value_t = 20000)]
    pub snapshot_every: u64,

    /// Log entries kept behind a snapshot for slow followers.
    #[arg(long, env = "LOCKER_KEEP_LOGS", default_value_t = 2000)]
    pub keep_logs: u64,

    /// How often the leader looks for expired records to sweep, in milliseconds.
    #[arg(long, env = "LOCKER_SWEEP_MS", default_value_t = 1000)]
    pub sweep_ms: u64,

    /// How long a request waits for a leader (election, partition) before the
    /// retryable 503, in milliseconds.
    #[arg(long, env = "LOCKER_LEADER_WAIT_MS", default_value_t = 3000)]
    pub leader_wait_ms: u64,

    /// How long a write waits to be committed before a retryable 503 TIMEOUT.
    #[arg(long, env = "LOCKER_WRITE_TIMEOUT_MS", default_value_t = 5000)]
    pub write_timeout_ms: u64,

    /// sled page cache size, in MiB.
    #[arg(long, env = "LOCKER_CACHE_MB", default_value_t = 64)]
    pub cache_mb: u64,

    /// Watch events this node keeps in memory for resuming streams (the
    /// oldest are dropped first; a resume before them answers 410).
    #[arg(long, env = "LOCKER_WATCH_HISTORY", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_history: u64,

    /// Memory the watch history may use at most, in MiB (whichever of this
    /// and --watch-history is reached first).
    #[arg(long, env = "LOCKER_WATCH_HISTORY_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_history_mb: u64,

    /// Open watch streams at most; more are refused until one closes.
    #[arg(long, env = "LOCKER_MAX_WATCHERS", default_value_t = 1000)]
    pub max_watchers: u64,

    /// How often an idle watch stream gets a `: keep-alive` comment, in
    /// milliseconds.
    #[arg(long, env = "LOCKER_WATCH_HEARTBEAT_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub watch_heartbeat_ms: u64,

    /// Log format: `text` or `json`. The level comes from RUST_LOG (default info).
    #[arg(long, env = "LOCKER_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// TEST ONLY: offset this node's wall clock by this many milliseconds
    /// (negative = behind), to inject clock skew.
    #[arg(
        long,
        env = "LOCKER_TEST_CLOCK_OFFSET_MS",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    pub test_clock_offset_ms: i64,

    /// TEST ONLY: run this node's clock at this rate (1.0 = real time), to
    /// inject clock drift.
    #[arg(long, env = "LOCKER_TEST_CLOCK_RATE", default_value_t = 1.0)]
    pub test_clock_rate: f64,
}

/// The built-in cluster secret: the same for everyone, so it protects
/// nothing; accepted only for a single node (or with --insecure-dev).
pub const DEFAULT_CLUSTER_SECRET: &str = "locker-dev-secret";

/// The shortest cluster secret a multi-node cluster accepts: a one-letter
/// secret was guessed by a fuzzer within minutes.
pub const MIN_CLUSTER_SECRET_BYTES: usize = 16;

/// `--initial-cluster`: node id → peer address of every founding member, in
/// id order.
pub type InitialCluster = BTreeMap<u64, String>;

pub(crate) fn parse_initial_cluster(s: &str) -> Result<InitialCluster, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} is not a node id (a positive integer)"))?;
        if id == 0 {
            return Err("node id 0 is reserved".into());
        }
        if out.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node id {id} appears twice"));
        }
    }
    Ok(out)
}

impl NodeConfig {
    /// The client address peers and clients are told (what it listens on,
    /// unless a different reachable one is advertised, e.g. behind NAT).
    pub fn advertised_client_addr(&self) -> String {
        self.advertise_client_addr
            .clone()
            .unwrap_or_else(|| self.client_addr.to_string())
    }

    /// The peer address other members dial, as with the client address.
    pub fn advertised_peer_addr(&self) -> String {
        self.advertise_peer_addr
            .clone()
            .unwrap_or_else(|| self.peer_addr.to_string())
    }

    /// Replaces the secret with the content of --cluster-secret-file, if
    /// given. The message names the file, never its content.
    pub fn load_secret_file(&mut self) -> Result<(), String> {
        let Some(path) = &self.cluster_secret_file else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --cluster-secret-file {}: {e}", path.display()))?;
        self.cluster_secret = text.lines().next().unwrap_or("").trim().to_string();
        Ok(())
    }

    /// The URL of `path` on another node's client address: https when this
    /// node serves its client port over TLS (all members of a cluster serve
    /// theirs the same way).
    pub fn client_url(&self, client_addr: &str, path: &str) -> String {
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{client_addr}{path}")
    }

    /// The scheme of peer addresses (https with peer TLS).
    pub fn peer_scheme(&self) -> &'static str {
        if self.peer_tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Whether this node is (or joins) a cluster of more than one member.
    pub fn multi_node(&self) -> bool {
        self.join || self.initial_cluster.len() > 1
    }

    /// A multi-node cluster with a guessable secret is open to anyone who
    /// can reach a port: forged votes, membership changes. Refused unless
    /// --insecure-dev says this is a local experiment.
    fn check_secret(&self) -> Result<(), String> {
        if !self.multi_node() || self.insecure_dev {
            return Ok(());
        }
        let why = if self.cluster_secret == DEFAULT_CLUSTER_SECRET {
            "is the built-in default".to_string()
        } else if self.cluster_secret.is_empty() {
            "is empty".to_string()
        } else if self.cluster_secret.len() < MIN_CLUSTER_SECRET_BYTES {
            format!("is shorter than {MIN_CLUSTER_SECRET_BYTES} bytes")
        } else {
            return Ok(());
        };
        Err(format!(
            "the cluster secret {why}: a multi-node cluster needs its own secret of at least \
             {MIN_CLUSTER_SECRET_BYTES} bytes (--cluster-secret-file, LOCKER_CLUSTER_SECRET), \
             or --insecure-dev for a local experiment"
        ))
    }

    /// Checks the flags against each other; the message names the problem.
    pub fn validate(&self) -> Result<(), String> {
        self.check_secret()?;
        if self.id == 0 {
            return Err("--id must be a positive integer".into());
        }
        if !self.initial_cluster.is_empty() {
            match self.initial_cluster.get(&self.id) {
                None => return Err(format!("--initial-cluster does not name this node's id {}", self.id)),
                Some(a) if *a != self.advertised_peer_addr() => {
                    return Err(format!(
                        "--initial-cluster gives node {} the peer address {a}, but this node's peer address is {}",
                        self.id,
                        self.advertised_peer_addr()
                    ))
                }
                Some(_) => {}
            }
            if self.join {
                return Err("--join and --initial-cluster exclude each other".into());
            }
        }
        if self.tls_cert.is_some() && self.multi_node() && self.peer_tls_cert.is_none() {
            return Err(
                "--tls-cert in a multi-node cluster needs peer TLS (--peer-tls-cert, \
                 --peer-tls-key, --peer-tls-ca): nodes forward requests to each other's \
                 client port over HTTPS and verify it against --peer-tls-ca"
                    .into(),
            );
        }
        if self.max_connections == 0 || self.idle_timeout_ms == 0 {
            return Err("--max-connections and --idle-timeout-ms must be positive".into());
        }
        if !(self.test_clock_rate > 0.0 && self.test_clock_rate.is_finite()) {
            return Err("--test-clock-rate must be a positive number".into());
        }
        if self.heartbeat_ms == 0 || self.election_timeout_ms <= self.heartbeat_ms * 2 {
            return Err("--election-timeout-ms must be more than twice --heartbeat-ms".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_initial_cluster() {
        let c = parse_initial_cluster("1=127.0.0.1:7081, 2=127.0.0.1:7082").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[&2], "127.0.0.1:7082");
        assert!(parse_initial_cluster("").unwrap().is_empty());
        assert!(parse_initial_cluster("x=1").is_err());
        assert!(parse_initial_cluster("1=a,1=b").is_err());
        assert!(parse_initial_cluster("0=a").is_err());
        assert!(parse_initial_cluster("1").is_err());
    }
}
