//! [`Client::watch`]: the lock table's changes as a [`Stream`] of typed
//! events that resumes on its own across reconnects and node failover.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use locker_proto::{CompactedAnswer, ErrorAnswer, EventId, WatchClosed, WatchEvent, WatchStart};
use tokio::sync::mpsc;

use crate::client::{encode_segment, Client};
use crate::types::LockData;
use crate::Error;

/// One item of a [`Watch`].
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    /// A change, in log order; never one twice, none missed.
    Event(Box<WatchEvent>),
    /// The node no longer had the events after the last one seen (its
    /// bounded history moved on, it restarted, or it installed a snapshot):
    /// here is the current state instead. Replace what you hold with
    /// `locks`; the events that follow start after log index `index`, and
    /// the first of them may already be reflected in `locks` (each event
    /// carries the record after its change, so applying them in order
    /// converges).
    Resync {
        /// The live locks under the prefix, read after `index`.
        locks: Vec<LockData>,
        /// The position the stream continues after.
        index: u64,
    },
}

/// The stream returned by [`Client::watch`]. Dropping it stops watching.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<Result<WatchItem, Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream for Watch {
    type Item = Result<WatchItem, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Watch {
    /// The next item; `None` once the stream ended (after a fatal error).
    pub async fn next(&mut self) -> Option<Result<WatchItem, Error>> {
        self.rx.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Items buffered between the connection and the reader: a reader that
/// falls further behind stops the reading of the socket, and the node then
/// closes the stream (`too_slow`); the watch resumes, or resyncs.
const BUFFER: usize = 256;

/// A stream that sends nothing (not even a keep-alive comment) this long is
/// given up and resumed elsewhere.
const SILENCE: Duration = Duration::from_secs(45);

impl Client {
    /// Watches every change to locks and processes under `prefix`, from
    /// now on. Must be called inside a Tokio runtime.
    pub fn watch(&self, prefix: &str) -> Watch {
        self.watch_from(prefix, None)
    }

    /// Watches from after event `since` (an id a previous watch gave).
    pub fn watch_from(&self, prefix: &str, since: Option<EventId>) -> Watch {
        let (tx, rx) = mpsc::channel(BUFFER);
        let w = Watcher {
            client: self.clone(),
            prefix: prefix.to_string(),
            cursor: since,
            tx,
        };
        Watch {
            rx,
            task: tokio::spawn(w.run()),
        }
    }
}

struct Watcher {
    client: Client,
    prefix: String,
    /// The last position seen (event, or a stream's start).
    cursor: Option<EventId>,
    tx: mpsc::Sender<Result<WatchItem, Error>>,
}

/// How one connection ended.
enum Ended {
    /// Try again, here first (the node closed the stream) or elsewhere.
    Retry { next_endpoint: bool, why: String },
    /// The node no longer has our position: resync.
    Gone,
    /// The reader went away.
    Stop,
}

impl Watcher {
    async fn run(mut self) {
        let n = self.client.endpoints().len();
        let mut idx = 0usize;
        let mut failures = 0u32;
        loop {
            let endpoint = self.client.endpoints()[idx % n].clone();
            match self.connect(&endpoint).await {
                Ok(Ended::Stop) => return,
                Ok(Ended::Gone) => {
                    if self.resync(&endpoint).await.is_err() {
                        return;
                    }
                    failures = 0;
                }
                Ok(Ended::Retry { next_endpoint, why }) => {
                    tracing::debug!(%endpoint, %why, "watch stream ended; resuming");
                    if next_endpoint {
                        idx += 1;
                        failures += 1;
                    } else {
                        failures = 0;
                    }
                }
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
            }
            if failures > 0 && failures.is_multiple_of(u32::try_from(n).unwrap_or(1)) {
                let pause = 100u64 << (failures / u32::try_from(n).unwrap_or(1)).min(4);
                tokio::time::sleep(Duration::from_millis(pause.min(1_000))).await;
            }
        }
    }

    fn url(&self, endpoint: &str, since: Option<EventId>) -> String {
        let mut url = format!(
            "{endpoint}/v1/watch?prefix={}",
            encode_segment(&self.prefix)
        );
        if let Some(s) = since {
            url.push_str(&format!("&since={s}"));
        }
        url
    }

    /// One stream from one node: `Err` only for a refusal that retrying
    /// cannot fix (a 4xx other than 410).
    async fn connect(&mut self, endpoint: &str) -> Result<Ended, Error> {
        let url = self.url(endpoint, self.cursor);
        let resp = match self.client.get_stream(&url).await {
            Ok(r) => r,
            Err(why) => {
                return Ok(Ended::Retry {
                    next_endpoint: true,
                    why,
                })
            }
        };
        let status = resp.status().as_u16();
        if status == 410 {
            let body: Option<CompactedAnswer> = resp.json().await.ok();
            tracing::debug!(%endpoint, oldest = ?body.map(|b| b.oldest_index), "watch position compacted");
            return Ok(Ended::Gone);
        }
        if status != 200 {
            let body: Option<ErrorAnswer> = resp.json().await.ok();
            let why = format!("HTTP {status}: {body:?}");
            if (400..500).contains(&status) && status != 429 {
                return Err(api_error(endpoint, status, body));
            }
            return Ok(Ended::Retry {
                next_endpoint: true,
                why,
            });
        }
        self.read(endpoint, resp).await
    }

    async fn read(&mut self, endpoint: &str, mut resp: reqwest::Response) -> Result<Ended, Error> {
        let mut buf = String::new();
        loop {
            // The node sends a comment at least every 15 s: silence for
            // longer means a dead node or a cut connection.
            let next = tokio::time::timeout(SILENCE, resp.chunk()).await;
            let chunk = match next {
                Err(_) => {
                    return Ok(Ended::Retry {
                        next_endpoint: true,
                        why: format!("nothing received for {SILENCE:?}"),
                    })
                }
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => {
                    return Ok(Ended::Retry {
                        next_endpoint: true,
                        why: "the stream ended".into(),
                    })
                }
                Ok(Err(e)) => {
                    return Ok(Ended::Retry {
                        next_endpoint: true,
                        why: e.to_string(),
                    })
                }
            };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                if let Some(ended) = self.frame(endpoint, &frame).await? {
                    return Ok(ended);
                }
            }
        }
    }

    /// Handles one SSE frame; `Some` when the stream is over.
    async fn frame(&mut self, endpoint: &str, frame: &str) -> Result<Option<Ended>, Error> {
        let (mut event, mut data) = ("", "");
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = v;
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = v;
            }
        }
        let protocol = |detail: String| Error::Protocol {
            endpoint: endpoint.to_string(),
            detail,
        };
        match event {
            "" => Ok(None),
            "start" => {
                let s: WatchStart = serde_json::from_str(data)
                    .map_err(|e| protocol(format!("watch start {data:?}: {e}")))?;
                self.cursor.get_or_insert(s.id);
                Ok(None)
            }
            "closed" => {
                let c: Option<WatchClosed> = serde_json::from_str(data).ok();
                Ok(Some(Ended::Retry {
                    next_endpoint: false,
                    why: format!("closed by the node: {c:?}"),
                }))
            }
            _ => {
                let e: WatchEvent = match serde_json::from_str(data) {
                    Ok(e) => e,
                    // A kind this client does not know: skip it.
                    Err(err) => {
                        tracing::debug!(%event, %err, "unknown watch event skipped");
                        return Ok(None);
                    }
                };
                if self.cursor.is_some_and(|c| e.id <= c) {
                    return Ok(None);
                }
                self.cursor = Some(e.id);
                if self
                    .tx
                    .send(Ok(WatchItem::Event(Box::new(e))))
                    .await
                    .is_err()
                {
                    return Ok(Some(Ended::Stop));
                }
                Ok(None)
            }
        }
    }

    /// After a 410: start from now on `endpoint`, read the state after that
    /// start, hand it over, and go on from the start.
    async fn resync(&mut self, endpoint: &str) -> Result<(), ()> {
        loop {
            let url = self.url(endpoint, None);
            let start = match self.client.get_stream(&url).await {
                Ok(r) if r.status().as_u16() == 200 => first_start(r).await,
                _ => None,
            };
            if let Some(s) = start {
                match self
                    .client
                    .list_locks(Some(&self.prefix), Some(10_000))
                    .await
                {
                    Ok(locks) => {
                        self.cursor = Some(s.id);
                        let item = WatchItem::Resync {
                            locks,
                            index: s.id.index,
                        };
                        return self.tx.send(Ok(item)).await.map_err(|_| ());
                    }
                    Err(e) => tracing::debug!(%e, "resync read failed; retrying"),
                }
            }
            if self.tx.is_closed() {
                return Err(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The `start` event of a stream (its first frame).
async fn first_start(mut resp: reqwest::Response) -> Option<WatchStart> {
    let mut buf = String::new();
    while !buf.contains("\n\n") {
        buf.push_str(&String::from_utf8_lossy(&resp.chunk().await.ok()??));
    }
    let data = buf.lines().find_map(|l| l.strip_prefix("data: "))?;
    serde_json::from_str(data).ok()
}

fn api_error(endpoint: &str, status: u16, body: Option<ErrorAnswer>) -> Error {
    match body {
        Some(b) => Error::Api {
            http_status: status,
            code: b.error.code,
            message: b.error.message,
        },
        None => Error::Protocol {
            endpoint: endpoint.to_string(),
            detail: format!("watch answered HTTP {status}"),
        },
    }
}
