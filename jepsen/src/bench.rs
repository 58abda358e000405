//! `locker-jepsen bench`: acquire+release cycles per second at several client
//! concurrencies (each client on its own keys, so the number measures the
//! Raft write path, not contention), with latency percentiles, written as
//! bench.json and an SVG report.

use crate::api::{Api, Call};
use crate::cluster::{enter_netns, Cluster, HostKind, Hosts, NodeFlags};
use crate::history::OpType;
use crate::report::{esc, page};
use crate::rng::Rng;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct BenchOpts {
    pub nodes: u64,
    pub hosts: HostKind,
    pub node_bin: PathBuf,
    /// Use an existing cluster instead of starting one.
    pub endpoints: Vec<String>,
    pub concurrency: Vec<usize>,
    pub duration_s: u64,
    pub out: PathBuf,
    pub seed: u64,
}

/// Cap on cycles per client per level, in case the duration check is starved.
const MAX_CYCLES: u64 = 1_000_000;

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run_bench(o: BenchOpts) -> Result<Value, String> {
    std::fs::create_dir_all(&o.out).map_err(|e| format!("create {}: {e}", o.out.display()))?;
    let mut rng = Rng::new(o.seed);
    let hosts = Hosts::new(o.hosts, &mut rng);
    let own_cluster = o.endpoints.is_empty();
    if own_cluster {
        hosts.setup(o.nodes)?;
    }
    let h2 = hosts.clone();
    let joined = std::thread::Builder::new()
        .name("bench".into())
        .spawn(move || -> Result<Value, String> {
            if own_cluster && h2.kind == HostKind::Netns {
                enter_netns(&h2.harness_ns())?;
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            rt.block_on(bench_async(o, h2))
        })
        .map_err(|e| format!("spawn bench thread: {e}"))
        .and_then(|h| h.join().map_err(|_| "the benchmark panicked".to_string()));
    if own_cluster {
        hosts.teardown();
    }
    joined?
}

async fn bench_async(o: BenchOpts, hosts: Hosts) -> Result<Value, String> {
    let api = Api::new(Duration::from_millis(5_000))?;
    let mut cluster = None;
    let urls = if o.endpoints.is_empty() {
        let mut c = Cluster::new(
            hosts,
            o.node_bin.clone(),
            o.out.join("nodes"),
            o.nodes,
            "bench".into(),
        );
        for id in 1..=o.nodes {
            c.start(id, NodeFlags::default())?;
        }
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let mut ok = 0;
            for u in c.urls() {
                if let Some((200, _)) = api.get_json(&format!("{u}/readyz")).await {
                    ok += 1;
                }
            }
            if ok == c.urls().len() {
                break;
            }
            if Instant::now() > end {
                c.stop_all().await;
                return Err("cluster not ready after 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let u = c.urls();
        cluster = Some(c);
        u
    } else {
        o.endpoints.clone()
    };
    let mut levels = Vec::new();
    let interrupted = tokio::select! {
        _ = async {
            for &c in &o.concurrency {
                levels.push(level(&api, &urls, c, o.duration_s).await);
            }
        } => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    if let Some(mut c) = cluster {
        c.stop_all().await;
    }
    let result = json!({"nodes": urls.len(), "duration_s": o.duration_s, "levels": levels,
        "interrupted": interrupted});
    std::fs::write(
        o.out.join("bench.json"),
        serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("write bench.json: {e}"))?;
    std::fs::write(o.out.join("bench.html"), render(&result))
        .map_err(|e| format!("write bench.html: {e}"))?;
    Ok(result)
}

async fn level(api: &Api, urls: &[String], clients: usize, secs: u64) -> Value {
    let end = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let urls = Arc::new(urls.to_vec());
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let api = api.clone();
        let urls = urls.clone();
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut node = c % urls.len().max(1);
            for i in 0..MAX_CYCLES {
                if Instant::now() >= end {
                    break;
                }
                let base = urls.get(node).cloned().unwrap_or_default();
                let key = format!("bench/c{clients}/{c}/{}", i % 16);
                let owner = format!("{key}@bench{c}/{}.{}.{i}", std::process::id(), clients);
                let t0 = Instant::now();
                let a = api
                    .exec(
                        &base,
                        &key,
                        &Call::Acquire {
                            owner: owner.clone(),
                            ttl_ms: 30_000,
                            process_hash: None,
                        },
                    )
                    .await;
                if a.kind != OpType::Ok {
                    errors += 1;
                    node = (node + 1) % urls.len().max(1);
                    continue;
                }
                let r = api.exec(&base, &key, &Call::Release { owner }).await;
                if r.kind != OpType::Ok {
                    errors += 1;
                    continue;
                }
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            (lat, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        if let Ok((l, e)) = r {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    all.sort_by(|a, b| a.total_cmp(b));
    let n = all.len();
    json!({
        "clients": clients,
        "cycles": n,
        "errors": errors,
        "cycles_per_s": n as f64 / elapsed,
        "latency_ms": {
            "p50": percentile(&all, 0.5), "p90": percentile(&all, 0.9),
            "p99": percentile(&all, 0.99), "max": all.last().copied().unwrap_or(0.0),
        },
    })
}

pub fn render(r: &Value) -> String {
    let levels = r["levels"].as_array().cloned().unwrap_or_default();
    let mut b = String::from("<h1>Locker benchmark</h1><p>acquire+release cycles (one cycle = two Raft writes) per second, each client on its own keys.</p>");
    b.push_str("<table><tr><th>clients</th><th>cycles/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>errors</th></tr>");
    for l in &levels {
        let lm = &l["latency_ms"];
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>",
            l["clients"],
            l["cycles_per_s"].as_f64().unwrap_or(0.0),
            lm["p50"].as_f64().unwrap_or(0.0),
            lm["p90"].as_f64().unwrap_or(0.0),
            lm["p99"].as_f64().unwrap_or(0.0),
            lm["max"].as_f64().unwrap_or(0.0),
            l["errors"]
        );
    }
    b.push_str("</table>");
    // Bars: throughput, and p50/p99 latency, per level.
    let max_t = levels
        .iter()
        .filter_map(|l| l["cycles_per_s"].as_f64())
        .fold(1.0, f64::max);
    let max_l = levels
        .iter()
        .filter_map(|l| l["latency_ms"]["p99"].as_f64())
        .fold(1.0, f64::max);
    let w = 160.0 * levels.len().max(1) as f64 + 60.0;
    let _ = write!(
        b,
        r##"<h2>Throughput and latency</h2><svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="260" font-family="sans-serif">"##
    );
    for (i, l) in levels.iter().enumerate() {
        let x = 40.0 + i as f64 * 160.0;
        let t = l["cycles_per_s"].as_f64().unwrap_or(0.0);
        let p50 = l["latency_ms"]["p50"].as_f64().unwrap_or(0.0);
        let p99 = l["latency_ms"]["p99"].as_f64().unwrap_or(0.0);
        let bar = |v: f64, m: f64| 200.0 * v / m;
        let _ = write!(
            b,
            r##"<rect x="{x}" y="{:.1}" width="40" height="{:.1}" fill="#48c"><title>{t:.1} cycles/s</title></rect><text x="{x}" y="{:.1}" font-size="10">{t:.0}/s</text>"##,
            220.0 - bar(t, max_t),
            bar(t, max_t),
            215.0 - bar(t, max_t)
        );
        let _ = write!(
            b,
            r##"<rect x="{:.1}" y="{:.1}" width="30" height="{:.1}" fill="#9c6"><title>p50 {p50:.2} ms</title></rect><rect x="{:.1}" y="{:.1}" width="30" height="{:.1}" fill="#e96"><title>p99 {p99:.2} ms</title></rect>"##,
            x + 45.0,
            220.0 - bar(p50, max_l),
            bar(p50, max_l),
            x + 80.0,
            220.0 - bar(p99, max_l),
            bar(p99, max_l)
        );
        let _ = write!(
            b,
            r##"<text x="{x}" y="238" font-size="11">{} clients</text>"##,
            esc(&l["clients"].to_string())
        );
    }
    b.push_str(r##"<text x="10" y="255" font-size="10">blue: cycles/s; green: p50 latency; orange: p99 latency (scaled to the largest p99)</text></svg>"##);
    page("Locker benchmark", &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_render() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        let r = json!({"levels":[{"clients":1,"cycles":10,"errors":0,"cycles_per_s":100.0,
            "latency_ms":{"p50":1.0,"p90":2.0,"p99":3.0,"max":4.0}}]});
        let html = render(&r);
        assert!(html.contains("<svg") && html.contains("100.0"));
    }
}
