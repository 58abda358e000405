//! The HTTP server loop of both ports, with limits a stranger cannot get
//! around: at most `max_connections` open connections, and a connection
//! that does not send a whole request header in time is closed.
//!
//! axum's own `serve` has neither: 1,100 idle sockets used up a node's 1,024
//! file descriptors and `/healthz`, peers and every write stopped with it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

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
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
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
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.idle_timeout)
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(svc.map_request(to_axum_body)),
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Errors here are the client's (reset, timed out, bad HTTP).
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
