//! `locker-node`: one node of a Locker cluster.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use locker_node::config::{Cli, NodeConfig, Subcommand_};
use locker_node::network::{peer_router, PeerState};
use locker_node::node::Node;
use locker_node::serve::{serve, ServeLimits};
use locker_node::tls::{NodeTls, ServerTls};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc. A profile of the leader under 64
/// clients spent about 13% of its samples in glibc's allocator
/// (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`): every request
/// allocates and frees many small buffers across tokio's worker threads,
/// which glibc's arenas serve slowly. Measured with callgrind on one node
/// under 16 clients (scripts/callgrind_ops.sh): about a quarter fewer
/// instructions per acquire+release and per keep-alive (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs the leader's proposer; should it ever end, the node exits (70,
/// EX_SOFTWARE): a leader whose readiness still holds while no client write
/// can be proposed would answer every write 503 for good, and clients and
/// followers would keep sending writes to it.
async fn run_proposer_or_exit(node: Arc<Node>) {
    node.run_proposer().await;
    tracing::error!("the proposer of client writes stopped; exiting");
    std::process::exit(70);
}

fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    match cli.command.take() {
        Some(Subcommand_::Healthcheck { timeout_ms }) => return healthcheck(&cli.node, timeout_ms),
        Some(tool) => return backup_tool(tool),
        None => {}
    }
    if let Err(e) = cli
        .node
        .load_secret_file()
        .and_then(|()| cli.node.validate())
    {
        eprintln!("locker-node: {e}");
        return std::process::ExitCode::from(2);
    }
    let tls = match locker_node::tls::NodeTls::load(&cli.node) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("locker-node: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_tracing(&cli.node.log_format);
    let open_files = raise_open_files_limit();
    locker_node::mutation::announce();
    #[cfg(feature = "failpoints")]
    let _crash_points = match locker_node::store::crash::setup() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("locker-node: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("locker-node: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.node, tls, open_files)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "locker-node stopped");
            eprintln!("locker-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `backup`, `verify-backup`, `restore`: the result on stdout (exit 0), or
/// the reason on stderr (exit 1).
fn backup_tool(tool: Subcommand_) -> std::process::ExitCode {
    use locker_node::backup_tools as tools;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("locker-node: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let done = match tool {
        Subcommand_::Backup(a) => match &a.verify {
            Some(file) => tools::verify(file),
            None => runtime.block_on(tools::take(&a)),
        },
        Subcommand_::VerifyBackup { file } => tools::verify(&file),
        Subcommand_::Restore(a) => runtime.block_on(tools::restore(&a)),
        Subcommand_::Healthcheck { .. } => Err("not a backup tool".into()),
    };
    match done {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("locker-node: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,sled=warn"));
    // Colour codes only for a person at a terminal: a log file, journald or a
    // collector gets plain text (they were escape sequences in every line).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Raises the soft limit on open files to the hard limit.
///
/// Every client connection holds a descriptor, a blocking acquire for up to
/// its `wait_ms`. Under the usual soft limit (1024 with systemd and recent
/// container runtimes, whose hard limit is far higher) a few hundred waiters
/// used up the node's descriptors: it accepted nothing more, peers included.
fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    let before = lim.rlim_cur;
    // An unlimited hard limit is not a valid soft one for open files.
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        1 << 20
    } else {
        lim.rlim_max
    };
    if before >= target {
        return Some(before);
    }
    lim.rlim_cur = target;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        tracing::info!(from = before, to = target, "raised the open files limit");
        Some(target)
    } else {
        tracing::warn!(
            limit = before,
            error = %std::io::Error::last_os_error(),
            "cannot raise the open files limit; each waiting acquire holds one"
        );
        Some(before)
    }
}

/// `locker-node healthcheck`: for container health checks without a shell.
fn healthcheck(cfg: &NodeConfig, timeout_ms: u64) -> std::process::ExitCode {
    use std::io::{Read, Write};
    let mut addr = cfg.client_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = Duration::from_millis(timeout_ms);
    let tls = match cfg
        .tls_cert
        .is_some()
        .then(|| locker_node::tls::healthcheck_config(cfg))
    {
        None => None,
        Some(Ok(c)) => Some(Arc::new(c)),
        Some(Err(e)) => {
            eprintln!("unhealthy: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let ok = (|| -> std::io::Result<bool> {
        let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        let mut buf = Vec::new();
        match tls {
            None => {
                let mut s = s;
                s.write_all(request)?;
                s.read_to_end(&mut buf)?;
            }
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let conn =
                    rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
                let mut s = rustls::StreamOwned::new(conn, s);
                s.write_all(request)?;
                // The node may close without a TLS close_notify: what
                // arrived before counts.
                if let Err(e) = s.read_to_end(&mut buf) {
                    if buf.is_empty() {
                        return Err(e);
                    }
                }
            }
        }
        Ok(buf.starts_with(b"HTTP/1.1 200"))
    })();
    match ok {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("unhealthy: /healthz did not answer 200");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The peer port: Raft RPCs behind the cluster secret, its failures logged.
fn spawn_peer_server(
    cfg: &NodeConfig,
    node: &Arc<Node>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ServerTls>>,
) -> tokio::task::JoinHandle<()> {
    let peer_state = Arc::new(PeerState {
        raft: node.raft.clone(),
        node_id: node.id,
        secret: cfg.cluster_secret.clone(),
        info: node.peer_info(),
        admitted: node.admitted(),
        marker: node.marker.clone(),
    });
    let peer_app = peer_router(peer_state).layer(axum::middleware::from_fn(
        locker_node::guard::peer_auth_failures,
    ));
    let peer_limits = ServeLimits {
        max_connections: PEER_MAX_CONNECTIONS,
        idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
        // A stranger's silent sockets make room for the peers' own.
        evict_unproven: true,
    };
    tokio::spawn(serve(
        listener,
        peer_app,
        peer_limits,
        tls,
        std::future::pending(),
    ))
}

/// Peers keep a few pooled connections each: this is plenty for any
/// cluster, and keeps a flood on the peer port from taking descriptors.
const PEER_MAX_CONNECTIONS: usize = 256;

/// Descriptors kept for everything that is not a client connection: the
/// peer port's connections, storage files, outgoing peer connections.
const RESERVED_FILES: u64 = 512;

/// The client port's limits: --max-connections, lowered to fit the open
/// files limit (a connection past it would fail to accept, and so would
/// every file and peer connection the node opens).
fn client_limits(cfg: &NodeConfig, open_files: Option<u64>) -> ServeLimits {
    let fit = open_files.map_or(u64::MAX, |n| n.saturating_sub(RESERVED_FILES).max(16));
    let max = cfg
        .max_connections
        .min(usize::try_from(fit).unwrap_or(usize::MAX));
    if max < cfg.max_connections {
        tracing::info!(
            max_connections = max,
            open_files_limit = open_files,
            "--max-connections lowered to fit the open files limit"
        );
    }
    ServeLimits {
        max_connections: max,
        idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
        evict_unproven: false,
    }
}

/// Connections the kernel completes before the node accepts them: a burst of
/// new clients past this waits for SYN retries (1 s, then 3 s...). The
/// kernel caps it at `net.core.somaxconn` (4096 on current kernels); the
/// standard library's 128 was filled by 129 clients connecting at once.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As the standard library does: a restarted node can listen again at
    // once, with connections of its previous life still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn run(cfg: NodeConfig, tls: NodeTls, open_files: Option<u64>) -> anyhow::Result<()> {
    tracing::info!(id = cfg.id, client = %cfg.client_addr, peer = %cfg.peer_addr, data = %cfg.data_dir.display(), "starting");
    let peer_listener = listen(cfg.peer_addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on peer address {}: {e}", cfg.peer_addr))?;
    let client_listener = listen(cfg.client_addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on client address {}: {e}", cfg.client_addr))?;
    let node = Node::start(cfg.clone(), &tls).await?;

    let peer_server = spawn_peer_server(&cfg, &node, peer_listener, tls.peer_port.clone());
    tokio::spawn(tls.clone().reload_on_sighup());

    // Raft stopped by a storage error or a panic: exit, never linger.
    tokio::spawn(locker_node::store::exit_when_raft_stops(
        node.raft.clone(),
        node.stopping(),
    ));
    tokio::spawn(node.clone().watch_leadership());
    tokio::spawn(node.clone().sweep_loop());
    tokio::spawn(run_proposer_or_exit(node.clone()));
    tokio::spawn(node.clone().wake_waiters());
    node.tokens.reload_on_sighup();
    warn_if_open(&cfg);
    // A node that cannot safely form or join the cluster stops (non-zero).
    let (refused_tx, refused_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let boot = node.clone();
    tokio::spawn(async move {
        if let Err(e) = boot.bootstrap().await {
            let _ = refused_tx.send(e);
        }
    });

    let app = locker_node::api::router(node.clone());
    let limits = client_limits(&cfg, open_files);
    tracing::info!(addr = %cfg.client_addr, max_connections = limits.max_connections, tls = tls.client_port.is_some(), "serving the client API");
    let signalled = node.clone();
    let server = serve(
        client_listener,
        app,
        limits,
        tls.client_port.clone(),
        async move {
            shutdown_signal().await;
            // Blocked acquires answer 503 now instead of waiting out wait_ms.
            signalled.begin_shutdown();
        },
    );
    // In-flight requests get a bounded grace: a write's timeout and a second.
    let grace = Duration::from_millis(cfg.write_timeout_ms + 1000);
    let mut stopping = node.stopping();
    let bounded = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = server => {}
        _ = bounded => tracing::warn!(?grace, "requests still in flight; stopping without them"),
        Ok(e) = refused_rx => {
            peer_server.abort();
            let _ = node.raft.shutdown().await;
            return Err(e.context("cannot form the cluster"));
        }
    }

    // Before Raft stops (peers are still served): the others lead at once
    // instead of after an election timeout.
    node.hand_over_leadership().await;
    tracing::info!("shutting down: stopping Raft and flushing");
    peer_server.abort();
    let _ = node.raft.shutdown().await;
    node.flusher.flush().await?;
    // The identity file's high-water mark reaches the last flushed entry.
    node.marker.sync()?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// A node reachable beyond this machine without tokens lets anyone who
/// can reach it take, release and read every lock.
fn warn_if_open(cfg: &NodeConfig) {
    if cfg.tokens_file.is_none() && !cfg.client_addr.ip().is_loopback() {
        tracing::warn!(
            addr = %cfg.client_addr,
            "NO AUTHENTICATION: the client API listens beyond loopback without --tokens-file; \
             anyone who can reach it can take, release and read every lock"
        );
    } else if let Some(set) = node_tokens_summary(cfg) {
        tracing::info!("{set}");
    }
}

fn node_tokens_summary(cfg: &NodeConfig) -> Option<String> {
    let path = cfg.tokens_file.as_ref()?;
    Some(format!("authentication on: tokens from {}", path.display()))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}
