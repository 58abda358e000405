//! The HTTP server loop of both ports, with limits a stranger cannot get
//! around: at most `max_connections` open connections, and a connection
//! that does not send a whole request header in time is closed.
//!
//! axum's own `serve` has neither: 1,100 idle sockets used up a node's 1,024
//! file descriptors and `/healthz`, peers and every write stopped with it.
//!
//! With TLS configured, the accepted stream goes through rustls first
//! (`tokio-rustls`), under the same limits.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::tls::ServerTls;

/// What one port tolerates.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Open connections at most; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A connection that has not sent a complete request header this long
    /// after it opened, or after its previous answer (keep-alive), is closed.
    pub idle_timeout: Duration,
    /// At the limit, a new connection is accepted anyway and the oldest
    /// connection that has not proved itself ([`prove_connection`]: on the
    /// peer port, a request with the cluster secret) is closed to make room.
    /// Without it, strangers holding every slot (silent sockets, reopened
    /// as soon as the idle timeout closes them) would keep the peers'
    /// own new connections waiting in the kernel's queue for good.
    pub evict_unproven: bool,
}

/// One open connection, as the accept loop and its requests see it.
#[derive(Debug, Default)]
struct Conn {
    /// Set by [`prove_connection`]: never closed to make room.
    proven: AtomicBool,
    /// Notified to close the connection (it had not proved itself).
    evict: Notify,
}

/// The connections open on one port, oldest first.
#[derive(Debug, Default)]
struct Conns {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
}

impl Conns {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> (u64, Arc<Conn>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        self.map().insert(id, conn.clone());
        (id, conn)
    }

    fn close(&self, id: u64) {
        self.map().remove(&id);
    }

    /// Closes the oldest connection not proven; false if all are.
    fn evict_oldest_unproven(&self) -> bool {
        let mut map = self.map();
        let oldest = map
            .iter()
            .find(|(_, c)| !c.proven.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| map.remove(&id)) {
            Some(conn) => {
                conn.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Marks the connection `req` came on as proven (see
/// [`ServeLimits::evict_unproven`]): it is no longer closed to make room.
pub fn prove_connection(req: &axum::extract::Request) {
    if let Some(ConnProof(conn)) = req.extensions().get::<ConnProof>() {
        conn.proven.store(true, Ordering::Relaxed);
    }
}

/// Request extension naming the connection a request came on.
#[derive(Debug, Clone)]
struct ConnProof(Arc<Conn>);

/// Serves `app` on `listener` within `limits` until `shutdown` completes,
/// then lets in-flight requests finish (the caller bounds how long).
/// Handlers see the peer's address as `ConnectInfo<SocketAddr>`.
///
/// With `tls`, every connection is a TLS one (the configuration current when
/// it was accepted): a client that speaks plain HTTP, or cannot complete the
/// handshake within the idle timeout, is dropped without an answer.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let conns = Arc::new(Conns::default());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let spawn = |permit, stream: TcpStream, peer| {
        let _ = stream.set_nodelay(true);
        let (id, conn) = conns.open();
        let proof = ConnProof(conn.clone());
        let svc = app
            .clone()
            .map_request(move |mut req: axum::extract::Request| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(proof.clone());
                req
            });
        let watcher = graceful.watcher();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        let conns = conns.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = handle(stream, acceptor, svc, limits, watcher, peer) => {}
                () = conn.evict.notified() => {
                    tracing::debug!(%peer, "connection closed to make room: it never proved itself");
                }
            }
            conns.close(id);
            drop(permit);
        });
    };
    loop {
        let (permit, stream, peer) = tokio::select! {
            next = next_connection(&listener, &permits, &conns, limits) => match next {
                Some(n) => n,
                None => break, // the semaphore is never closed
            },
            () = &mut shutdown => break,
        };
        spawn(Some(permit), stream, peer);
    }
    // Connections the kernel completed but we never accepted would be reset
    // when the listener closes, after their clients had sent a request they
    // cannot safely retry. Stop the kernel from completing new ones, then
    // serve every one already queued (past the limit: there are few).
    refuse_new_handshakes(&listener);
    tokio::time::sleep(HANDSHAKES_SETTLE).await;
    for (stream, peer) in drain_queue(listener) {
        spawn(permits.clone().try_acquire_owned().ok(), stream, peer);
    }
    // A connection accepted a moment ago whose request is still on its way
    // counts as idle to hyper's graceful shutdown, which would close it
    // unanswered: a client then sees the connection closed after it sent
    // its request, which it cannot safely retry (seen in
    // tests/rolling_restart.rs as an acquire failing with "connection
    // closed before message completed"). Let such requests arrive first;
    // new connections are already refused.
    tokio::time::sleep(FIRST_REQUEST_GRACE).await;
    graceful.shutdown().await;
}

/// How long a stopping server keeps serving connections it accepted before
/// it asks them to close: enough for a request sent right after connecting.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(300);

/// Time for handshakes the kernel was completing when the listener stopped
/// taking new ones to reach its accept queue, so the drain finds them.
const HANDSHAKES_SETTLE: Duration = Duration::from_millis(20);

/// `SO_ATTACH_FILTER`: the same number on every Linux architecture we build.
#[cfg(target_os = "linux")]
const SO_ATTACH_FILTER: libc::c_int = 26;

/// Makes the kernel drop every packet addressed to the listening socket: a
/// new SYN, and the last ACK of a handshake, so no connection completes
/// after this. A client whose SYN is dropped retries it (after 1 s) and, the
/// listener closed by then, gets a refused connection, which it can safely
/// send elsewhere. Connections already queued are separate sockets and keep
/// working. Best effort: without it the drain below still serves the queue.
#[cfg(target_os = "linux")]
fn refuse_new_handshakes(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // One classic BPF instruction: return 0, keep none of the packet.
    let mut drop_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: drop_all.as_mut_ptr(),
    };
    // SAFETY: setsockopt reads `prog` (and the one instruction it points
    // to, alive for this call) and copies it into the kernel.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            std::ptr::addr_of!(prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "cannot stop new handshakes before closing the listener");
    }
}

#[cfg(not(target_os = "linux"))]
fn refuse_new_handshakes(_listener: &TcpListener) {}

/// Every connection in the listener's accept queue, then the listener is
/// closed. Accepted by the socket itself, not through the runtime, whose
/// task budget would end the drain after 128 with the rest still queued.
fn drain_queue(listener: TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let Ok(listener) = listener.into_std() else {
        return Vec::new();
    };
    let mut queued = Vec::new();
    // The std listener is still non-blocking: WouldBlock when it is empty.
    while let Ok((stream, peer)) = listener.accept() {
        // An accepted socket does not inherit the listener's O_NONBLOCK.
        match stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream))
        {
            Ok(s) => queued.push((s, peer)),
            Err(e) => tracing::warn!(%peer, error = %e, "cannot serve a queued connection"),
        }
    }
    queued
}

/// The next connection and the permit it holds. A permit first, so that at
/// the limit connections stay in the kernel's queue instead of costing us a
/// descriptor each; with [`ServeLimits::evict_unproven`], the connection
/// first (one descriptor more at most), then room made for it.
async fn next_connection(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    conns: &Conns,
    limits: ServeLimits,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    if !limits.evict_unproven {
        let permit = permits.clone().acquire_owned().await.ok()?;
        let (stream, peer) = accept(listener).await;
        return Some((permit, stream, peer));
    }
    let (stream, peer) = accept(listener).await;
    let permit = match permits.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            conns.evict_oldest_unproven();
            permits.clone().acquire_owned().await.ok()?
        }
    };
    Some((permit, stream, peer))
}

async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(a) => return a,
            Err(e) => accept_failed(&e).await,
        }
    }
}

/// One accepted connection: the TLS handshake if any, then HTTP/1.
async fn handle<S>(
    stream: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    svc: S,
    limits: ServeLimits,
    watcher: Watcher,
    peer: SocketAddr,
) where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Some(acceptor) = acceptor else {
        return serve_connection(stream, svc, limits, watcher, peer).await;
    };
    // The handshake is bounded like a request header: a connection that
    // sends nothing does not keep its permit.
    match tokio::time::timeout(limits.idle_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_connection(tls, svc, limits, watcher, peer).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// HTTP/1 on one accepted connection (plain or TLS) until it closes.
async fn serve_connection<I, S>(
    io: I,
    svc: S,
    limits: ServeLimits,
    watcher: Watcher,
    peer: SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .serve_connection(
            // hyper's own refusals (unparsable requests) get JSON bodies.
            TokioIo::new(crate::wire_errors::JsonRefusals::new(io)),
            TowerToHyperService::new(svc.map_request(to_axum_body)),
        );
    // Errors here are the client's (reset, timed out, bad HTTP).
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

fn to_axum_body(req: hyper::Request<hyper::body::Incoming>) -> axum::extract::Request {
    req.map(axum::body::Body::new)
}

/// Out of descriptors (or another transient accept error): wait a little
/// instead of spinning; connections being closed free descriptors.
async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The peer address as [`serve`] records it, for handlers and middleware.
pub fn peer_of(req: &axum::extract::Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}
