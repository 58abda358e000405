//! The HTTP server loop of both ports, with limits a stranger cannot get
//! around: at most `max_connections` open connections, and a connection
//! that does not send a whole request header in time is closed.
//!
//! axum's own `serve` has neither: 1,100 idle sockets used up a node's 1,024
//! file descriptors and `/healthz`, peers and every write stopped with it.
//!
//! With TLS configured, the accepted stream goes through rustls first
//! (`tokio-rustls`), under the same limits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
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
}

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
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A permit first: at the limit, connections stay in the kernel's
        // queue instead of costing us a descriptor each.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = app
            .clone()
            .map_request(move |mut req: axum::extract::Request| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let watcher = graceful.watcher();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(stream, svc, limits, watcher, peer).await,
                Some(acceptor) => {
                    // The handshake is bounded like a request header: a
                    // connection that sends nothing does not keep its permit.
                    match tokio::time::timeout(limits.idle_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, svc, limits, watcher, peer).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
            TokioIo::new(io),
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
