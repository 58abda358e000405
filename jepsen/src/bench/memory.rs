//! The memory part: one Locker node (a single-node cluster) filled with N
//! live locks (16-character keys), its resident memory before and after,
//! and again after a restart, which must come back and serve.

use super::procs;
use crate::cluster::{Cluster, NodeFlags};
use anyhow::{anyhow, bail, Context, Result};
use locker_proto::{AcquireRequest, ReadAnswer};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Locks outlive the measurement by far.
const TTL_MS: u64 = 86_400_000;

pub fn key(i: usize) -> String {
    format!("m/{i:014}")
}

async fn ready(http: &reqwest::Client, url: &str, secs: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await {
            if r.status().as_u16() == 200 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn mb(b: u64) -> f64 {
    b as f64 / 1048576.0
}

/// Runs the part; any failure is reported inside the returned value.
pub async fn run(mut c: Cluster, http: reqwest::Client, n: usize) -> Value {
    let mut out = json!({"locks": n});
    if let Err(e) = measure(&mut c, &http, n, &mut out).await {
        out["error"] = json!(format!("{e:#}"));
    }
    c.stop_all().await;
    out
}

/// The node of this part: no limit on lock records. The default
/// `--max-locks` is 1,000,000, so after a million locks the check's fresh
/// acquire was refused (429 LIMIT_EXCEEDED) and counted as "does not serve".
fn flags() -> NodeFlags {
    NodeFlags {
        env: vec![("LOCKER_MAX_LOCKS".into(), "0".into())],
        ..NodeFlags::default()
    }
}

async fn measure(c: &mut Cluster, http: &reqwest::Client, n: usize, out: &mut Value) -> Result<()> {
    c.start(1, flags())?;
    let url = c.urls().first().cloned().context("no node")?;
    if !ready(http, &url, 60).await {
        bail!("node not ready after 60 s");
    }
    let pid = c.nodes.get(&1).map(|p| p.pid).unwrap_or(0);
    let empty = procs::status_bytes(pid, "VmRSS").unwrap_or(0);
    let t0 = Instant::now();
    load(http, &url, n).await?;
    out["load_per_s"] = json!(n as f64 / t0.elapsed().as_secs_f64().max(1e-9));
    // Let the node settle (flushes, a snapshot in flight) before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let loaded = procs::status_bytes(pid, "VmRSS").unwrap_or(0);
    out["rss_empty_mb"] = json!(mb(empty));
    out["rss_loaded_mb"] = json!(mb(loaded));
    out["peak_rss_mb"] = json!(mb(procs::status_bytes(pid, "VmHWM").unwrap_or(0)));
    out["bytes_per_lock"] = json!(loaded.saturating_sub(empty) as f64 / n.max(1) as f64);
    out["data_dir_mb"] = json!(mb(procs::dir_size(&c.dir)));
    let t1 = Instant::now();
    c.restart(1, flags()).await?;
    if !ready(http, &url, 600).await {
        bail!("node not ready within 600 s of its restart");
    }
    out["restart_ready_s"] = json!(t1.elapsed().as_secs_f64());
    let pid = c.nodes.get(&1).map(|p| p.pid).unwrap_or(0);
    // Resident when ready, before the first requests add to it.
    let ready_rss = procs::status_bytes(pid, "VmRSS").unwrap_or(0);
    out["rss_ready_mb"] = json!(mb(ready_rss));
    let serves = serves(http, &url, n, out).await;
    let restarted = procs::status_bytes(pid, "VmRSS").unwrap_or(0);
    out["rss_restarted_mb"] = json!(mb(restarted));
    out["bytes_per_lock_restarted"] =
        json!(restarted.saturating_sub(empty) as f64 / n.max(1) as f64);
    out["serves_after_restart"] = json!(serves);
    Ok(())
}

/// After the restart the last loaded lock is still held and a new key can
/// be taken. Each answer's status (or error) and time go into `out`
/// (`first_read`, `first_acquire`): a "no" needs to say why.
async fn serves(http: &reqwest::Client, url: &str, n: usize, out: &mut Value) -> bool {
    let last = key(n.saturating_sub(1));
    let t = Instant::now();
    let read = http
        .get(format!("{url}/v1/locks/{}", crate::api::enc(&last)))
        .send()
        .await;
    let (held, what) = match read {
        Ok(r) => {
            let code = r.status().as_u16();
            let held = r.json::<ReadAnswer>().await.is_ok_and(|a| a.locked);
            (held, json!(code))
        }
        Err(e) => (false, json!(e.to_string())),
    };
    out["first_read"] = json!({"answer": what, "ms": t.elapsed().as_millis() as u64});
    let fresh = key(n + 1);
    let body = acquire_body(&fresh);
    let t = Instant::now();
    let took = http
        .post(format!(
            "{url}/v1/locks/{}/acquire",
            crate::api::enc(&fresh)
        ))
        .json(&body)
        .send()
        .await;
    let (took, what) = match took {
        Ok(r) => (r.status().as_u16() == 200, json!(r.status().as_u16())),
        Err(e) => (false, json!(e.to_string())),
    };
    out["first_acquire"] = json!({"answer": what, "ms": t.elapsed().as_millis() as u64});
    held && took
}

/// The acquire of key `k` by this process, with the long ttl.
fn acquire_body(k: &str) -> AcquireRequest {
    AcquireRequest {
        owner_hash: Some(format!("{k}@bench/{}.1.1", std::process::id())),
        ttl_ms: Some(TTL_MS),
        ..AcquireRequest::default()
    }
}

/// Takes locks 0..n with 64 clients, printing progress every 10%.
async fn load(http: &reqwest::Client, url: &str, n: usize) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..64 {
        let (http, url, next) = (http.clone(), url.to_string(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                if n >= 10 && i % (n / 10) == 0 {
                    println!("memory: {i} of {n} locks");
                }
                acquire_retrying(&http, &url, &key(i)).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("load task")??;
    }
    Ok(())
}

async fn acquire_retrying(http: &reqwest::Client, url: &str, k: &str) -> Result<()> {
    let body = acquire_body(k);
    let u = format!("{url}/v1/locks/{}/acquire", crate::api::enc(k));
    let mut last = String::new();
    // A slow snapshot can time a write out; the same owner may retry (an
    // acquire by the holder is a re-acquire and succeeds).
    for _ in 0..5 {
        match http.post(&u).json(&body).send().await {
            Ok(r) if r.status().as_u16() == 200 => return Ok(()),
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(anyhow!("acquire {k}: {last}"))
}
