//! The `backup`, `verify-backup` and `restore` subcommands of `locker-node`.
//!
//! Restore seeds an empty data directory with the backup as an installed
//! Raft snapshot at the backup's index, whose membership is the new
//! cluster's (`--initial-cluster`, or this node alone). Every member of the
//! new cluster is restored from the same file, so they start with the same
//! snapshot and elect a leader as after a restart:
//!
//! * Fencing tokens keep rising: the snapshot covers log indexes up to the
//!   backup's index, every token in it is at most that index, and a token
//!   is the log index of its grant, so every new grant gets a larger one.
//! * Leases: the table keeps the backup's log time. The new cluster's first
//!   leader commits its takeover marker, which shifts every lease live at
//!   that log time by the time since (as after any leaderless spell): each
//!   lock and process keeps the remaining time it had when the backup was
//!   taken, counted from the new cluster's first leader. No lock is freed
//!   earlier than its holder's deadline as of the backup; one may stay held
//!   up to that remaining time after its holder gave up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{Membership, RaftTypeConfig};

use crate::backup::{self, Backup};
use crate::types::{LogId, NodeId, PeerNode, SnapshotMeta, StoredMembership, TypeConfig};

/// `locker-node backup`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// A node's client URL (any node: a follower forwards to the leader).
    #[arg(long, value_name = "URL", required_unless_present_any = ["verify", "data_dir"], conflicts_with = "data_dir")]
    pub from: Option<String>,
    /// Disaster recovery: instead of asking a running cluster, read the
    /// lock table as applied in the data directory of a STOPPED node
    /// (without a quorum, the only copy left). It holds what that node
    /// applied, which may miss the last writes the cluster acknowledged.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where to write the backup (written to FILE.partial, then renamed).
    #[arg(long, value_name = "FILE", required_unless_present = "verify")]
    pub out: Option<PathBuf>,
    /// Instead of taking a backup, check FILE (as `verify-backup FILE`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from", "out", "data_dir"])]
    pub verify: Option<PathBuf>,
    /// A token with the admin role, when the nodes have --tokens-file.
    #[arg(long, env = "LOCKER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify an https node with.
    #[arg(long, env = "LOCKER_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM), for nodes with --tls-client-ca.
    #[arg(
        long,
        env = "LOCKER_CLIENT_CERT",
        value_name = "PATH",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(
        long,
        env = "LOCKER_CLIENT_KEY",
        value_name = "PATH",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Give up after this long.
    #[arg(long, default_value_t = 60_000, value_name = "MS")]
    pub timeout_ms: u64,
}

/// `locker-node restore`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// The id of the node whose data directory this is.
    #[arg(long)]
    pub id: NodeId,
    /// The data directory to seed: must not exist yet, or be empty.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The new cluster's members, ID=PEER_ADDR,... (this node included), the
    /// same on every member; the nodes are then started with the same flag.
    /// Empty: a single-node cluster.
    #[arg(long, value_parser = crate::config::parse_initial_cluster, default_value = "")]
    pub initial_cluster: crate::config::InitialCluster,
}

/// Reads and checks a backup file.
pub fn read_backup(path: &Path) -> Result<Backup, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    backup::decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// `verify-backup FILE`: prints the counts; `Err` names what is wrong.
pub fn verify(path: &Path) -> Result<String, String> {
    let b = read_backup(path)?;
    Ok(format!("{}: OK\n{}", path.display(), b.summary()))
}

fn http_client(a: &BackupArgs) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_millis(a.timeout_ms));
    if let Some(ca) = &a.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| format!("--ca-cert {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-cert {}: {e}", ca.display()))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&a.client_cert, &a.client_key) {
        let mut pem =
            std::fs::read(cert).map_err(|e| format!("--client-cert {}: {e}", cert.display()))?;
        pem.extend(std::fs::read(key).map_err(|e| format!("--client-key {}: {e}", key.display()))?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| format!("--client-cert: {e}"))?;
        b = b.identity(id);
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// `backup --from URL --out FILE`: streams the file to `FILE.partial` as it
/// arrives, syncs and checks it, then renames it (a partial or bad file is
/// never left under the final name, and is removed).
pub async fn take(a: &BackupArgs) -> Result<String, String> {
    if let (Some(dir), Some(out)) = (&a.data_dir, &a.out) {
        return take_offline(dir, out);
    }
    let (Some(from), Some(out)) = (&a.from, &a.out) else {
        return Err("--from and --out are required".into());
    };
    let url = format!("{}/v1/backup", from.trim_end_matches('/'));
    let mut req = http_client(a)?.get(&url);
    if let Some(t) = &a.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.bytes().await.unwrap_or_default();
        return Err(format!(
            "{url}: HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&body)
        ));
    }
    let partial = partial_path(out);
    let received = receive(resp, &partial).await.and_then(|bytes| {
        let b = read_backup(&partial).map_err(|e| format!("the backup received is bad: {e}"))?;
        Ok((bytes, b))
    });
    let (bytes, b) = match received {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(format!("{url}: {e}"));
        }
    };
    publish(&partial, out)?;
    Ok(format!("{}: {bytes} bytes\n{}", out.display(), b.summary()))
}

/// Writes the response body to `path` chunk by chunk, then syncs it.
async fn receive(mut resp: reqwest::Response, path: &Path) -> Result<u64, String> {
    use std::io::Write;
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::File::create(path).map_err(at)?;
    let mut bytes = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("the backup was cut short after {bytes} bytes: {e}"))?
    {
        f.write_all(&chunk).map_err(at)?;
        bytes += chunk.len() as u64;
    }
    f.sync_all().map_err(at)?;
    Ok(bytes)
}

/// `backup --data-dir DIR --out FILE`: the table as applied in a stopped
/// node's data directory (sled refuses a directory a running node holds).
fn take_offline(dir: &Path, out: &Path) -> Result<String, String> {
    if !dir.join("sled").is_dir() {
        return Err(format!("{} holds no Locker data directory", dir.display()));
    }
    let (_log, _sm, replica, _flusher) = crate::store::open(dir, 64 << 20).map_err(|e| {
        format!(
            "data directory {} (is its node stopped?): {e}",
            dir.display()
        )
    })?;
    let (index, image) = {
        let r = replica.read();
        (
            r.last_applied.as_ref().map_or(0, |l| l.index),
            r.table.to_image(),
        )
    };
    let bytes = backup::encode(index, &image).map_err(|e| e.to_string())?;
    // The counts of what was just encoded (no second checksum and decoding).
    let b = Backup {
        index,
        log_time_ms: image.now,
        image,
    };
    let partial = partial_path(out);
    write_synced(&partial, &bytes).map_err(|e| format!("{}: {e}", partial.display()))?;
    publish(&partial, out)?;
    Ok(format!(
        "{}: {} bytes, from the applied state of {}\n{}",
        out.display(),
        bytes.len(),
        dir.display(),
        b.summary()
    ))
}

/// `FILE.partial`, as the help says: the whole name and a suffix, never the
/// name with its extension replaced (`b.json` must not write, and on failure
/// delete, an unrelated `b.partial`).
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Gives the checked, synced `partial` its final name, then syncs the
/// directory: until the directory is on disk a power cut can undo the
/// rename, and a backup reported as written would be gone.
fn publish(partial: &Path, out: &Path) -> Result<(), String> {
    std::fs::rename(partial, out).map_err(|e| format!("{}: {e}", out.display()))?;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| {
            format!(
                "{} is written and checked, but syncing its directory {} failed ({e}): \
                 a power cut could still lose it",
                out.display(),
                dir.display()
            )
        })
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Refuses a data directory that holds anything.
fn check_empty(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("data directory {}: {e}", dir.display())),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(format!(
                "data directory {} is not empty: restore only seeds a new, empty data directory (nothing was changed)",
                dir.display()
            )),
        },
    }
}

/// The new cluster's membership: the `--initial-cluster` voters with their
/// peer addresses and no client addresses (as a first start records them),
/// or this node alone.
fn membership(a: &RestoreArgs) -> Result<BTreeMap<NodeId, PeerNode>, String> {
    if a.id == 0 {
        return Err("--id must be a positive integer".into());
    }
    if a.initial_cluster.is_empty() {
        return Ok(BTreeMap::from([(a.id, PeerNode::default())]));
    }
    if !a.initial_cluster.contains_key(&a.id) {
        return Err(format!("--initial-cluster does not list --id {}", a.id));
    }
    Ok(a.initial_cluster
        .iter()
        .map(|(&id, addr)| {
            let node = PeerNode {
                peer_addr: addr.clone(),
                client_addr: String::new(),
            };
            (id, node)
        })
        .collect())
}

/// The log id of the restored snapshot: the backup's index, in term 0 (the
/// term of a cluster's first entry), the same on every member.
fn snapshot_log_id(index: u64) -> LogId {
    type LeaderId = <TypeConfig as RaftTypeConfig>::LeaderId;
    LogId::new(
        <LeaderId as openraft::vote::RaftLeaderIdExt>::new_committed(0, 0),
        index,
    )
}

/// `restore`: seeds `--data-dir` from the backup; `Err` changes nothing
/// (checks come before the directory is created).
pub async fn restore(a: &RestoreArgs) -> Result<String, String> {
    check_empty(&a.data_dir)?;
    let b = read_backup(&a.input)?;
    let nodes = membership(a)?;
    if b.index == 0 {
        return Err("the backup is at log index 0: nothing to restore".into());
    }
    let voters: BTreeSet<NodeId> = nodes.keys().copied().collect();
    let log_id = snapshot_log_id(b.index);
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(
            Some(log_id),
            Membership::new(vec![voters], nodes).map_err(|e| e.to_string())?,
        ),
    };
    let data = crate::store::format::encode_snapshot(&b.image).map_err(|e| e.to_string())?;
    // As the node opens it: mode 0700 and the identity file (node id).
    let owner = crate::store::Owner {
        node_id: a.id,
        initial_cluster: &a.initial_cluster,
    };
    let (_log, mut sm, _replica, flusher, _marker) =
        crate::store::open_node(&a.data_dir, 64 << 20, owner)
            .map_err(|e| format!("data directory {}: {e}", a.data_dir.display()))?;
    sm.install_snapshot(&meta, data)
        .await
        .map_err(|e| format!("cannot install the backup: {e}"))?;
    flusher
        .flush()
        .await
        .map_err(|e| format!("cannot flush {}: {e}", a.data_dir.display()))?;
    Ok(format!(
        "restored {} into {} as node {}\n{}",
        a.input.display(),
        a.data_dir.display(),
        a.id,
        b.summary()
    ))
}
