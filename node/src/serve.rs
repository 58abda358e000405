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
    loop {
        let (permit, stream, peer) = tokio::select! {
            next = next_connection(&listener, &permits, &conns, limits) => match next {
                Some(n) => n,
                None => break, // the semaphore is never closed
            },
            () = &mut shutdown => break,
        };
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
    }
    drop(listener);
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
