//! A tiny scripted HTTP/1.1 server for unit tests (no cluster needed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub(crate) struct FakeRequest {
    pub method: String,
    pub path: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub(crate) struct FakeReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    delay_ms: u64,
}

impl FakeReply {
    pub fn json(status: u16, body: &str) -> FakeReply {
        FakeReply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
            delay_ms: 0,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> FakeReply {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn delayed(mut self, ms: u64) -> FakeReply {
        self.delay_ms = ms;
        self
    }
}

type Handler = dyn Fn(&FakeRequest) -> FakeReply + Send + Sync + 'static;

pub(crate) struct FakeServer {
    url: String,
    hits: Arc<AtomicUsize>,
    paths: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// A URL on which nothing listens (connection refused).
    pub async fn dead_url() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        format!("http://{addr}")
    }

    /// A node that accepts connections and never answers (a paused process,
    /// a black-holed route): the accepted sockets are held open, unread.
    pub async fn hung_url() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = l.accept().await {
                held.push(sock);
            }
        });
        format!("http://{addr}")
    }

    pub async fn start<F>(handler: F) -> FakeServer
    where
        F: Fn(&FakeRequest) -> FakeReply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (h2, p2) = (hits.clone(), paths.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (handler, hits, paths) = (handler.clone(), h2.clone(), p2.clone());
                tokio::spawn(async move {
                    let mut r = BufReader::new(sock);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let mut parts = line.split_whitespace();
                        let method = parts.next().unwrap_or("").to_string();
                        let path = parts.next().unwrap_or("").to_string();
                        let mut len = 0usize;
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    len = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0u8; len];
                        if r.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let req = FakeRequest {
                            method,
                            path: path.clone(),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        };
                        hits.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut p) = paths.lock() {
                            *p.entry(format!("{} {}", req.method, path)).or_insert(0) += 1;
                        }
                        let reply = handler(&req);
                        if reply.delay_ms > 0 {
                            tokio::time::sleep(std::time::Duration::from_millis(reply.delay_ms))
                                .await;
                        }
                        let mut out = format!(
                            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
                            reply.status,
                            reply.body.len()
                        );
                        for (k, v) in &reply.headers {
                            out.push_str(&format!("{k}: {v}\r\n"));
                        }
                        out.push_str("\r\n");
                        out.push_str(&reply.body);
                        if r.get_mut().write_all(out.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeServer {
            url: format!("http://{addr}"),
            hits,
            paths,
            task,
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// How many requests had this "METHOD /path" (path without query).
    pub fn hits_of(&self, method_path: &str) -> usize {
        self.paths
            .lock()
            .map(|p| {
                p.iter()
                    .filter(|(k, _)| k.split('?').next() == Some(method_path))
                    .map(|(_, v)| *v)
                    .sum()
            })
            .unwrap_or(0)
    }
}
