//! The dashboard at `/ui`: its files and headers, the routes it reads
//! (`/v1/processes`, `/v1/cluster/nodes`), and the page itself in a real
//! headless Chromium driven through chromedriver (WebDriver). Chromium and
//! chromedriver are Debian's `chromium` and `chromium-driver`, installed by
//! scripts/test.sh; without them the browser tests fail, they never skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use locker_proto::{NodesAnswer, ProcessListAnswer};
use locker_tests::{api, eventually, free_port, get, http, Cluster, Reaped};
use serde_json::{json, Value};

// ---------- the files and the data routes (no browser) ----------

#[test]
fn ui_files_are_served_with_a_csp_their_types_and_validators() {
    let c = Cluster::start(1);
    let base = c.url(1);
    let page = http().get(format!("{base}/ui")).send().expect("GET /ui");
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    let hv = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(hv("content-type"), "text/html; charset=utf-8");
    assert!(
        hv("content-security-policy").starts_with("default-src 'self'"),
        "CSP: {}",
        hv("content-security-policy")
    );
    assert_eq!(hv("cache-control"), "no-cache");
    assert_eq!(hv("x-content-type-options"), "nosniff");
    let etag = hv("etag");
    assert!(etag.starts_with('"') && etag.len() > 2, "etag {etag:?}");
    let html = page.text().expect("page text");
    assert!(html.contains("ui/app.js") && html.contains("ui/style.css"));
    // Nothing from elsewhere: every URL of the page is relative.
    assert!(!html.contains("http:") && !html.contains("https:") && !html.contains("//cdn"));
    assert!(
        !html.contains("style=") && !html.contains("<script>"),
        "inline code breaks the CSP"
    );

    let again = http()
        .get(format!("{base}/ui"))
        .header("if-none-match", &etag)
        .send()
        .expect("GET /ui again");
    assert_eq!(again.status(), 304, "an unchanged page costs a 304");

    for (file, ctype) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let r = http()
            .get(format!("{base}/ui/{file}"))
            .send()
            .expect("asset");
        assert_eq!(r.status(), 200, "{file}");
        let get_h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(get_h("content-type").as_deref(), Some(ctype), "{file}");
        assert_eq!(
            get_h("cache-control").as_deref(),
            Some("no-cache"),
            "{file}"
        );
        assert!(get_h("etag").is_some(), "{file}");
        assert!(get_h("content-security-policy").is_some(), "{file}");
    }
    let missing = get(&format!("{base}/ui/nope.js"));
    assert_eq!((missing.code, missing.error_code()), (404, "NOT_FOUND"));
    let slash = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{base}/ui/"))
        .send()
        .expect("GET /ui/");
    assert_eq!(slash.status(), 308);
}

#[test]
fn processes_are_listed_with_their_time_to_live() {
    let c = Cluster::start(1);
    let base = c.url(1);
    let a = "web-1/100.5";
    let b = "web-2/200.7";
    let put = |p: &str, ttl: u64, info: Value| {
        locker_tests::put(
            &format!("{base}/v1/processes/{}", locker_tests::enc(p)),
            json!({"ttl_ms": ttl, "info": info}),
        )
    };
    assert_eq!(put(a, 60_000, json!({"cmd": "report"})).code, 200);
    assert_eq!(put(b, 30_000, Value::Null).code, 200);
    for stale in ["", "&stale=true"] {
        let all: ProcessListAnswer = get(&format!("{base}/v1/processes?limit=10{stale}")).json();
        let hashes: Vec<_> = all
            .processes
            .iter()
            .map(|p| p.process_hash.as_str())
            .collect();
        assert_eq!(hashes, [a, b]);
        let pa = &all.processes[0];
        assert_eq!(pa.ttl_ms, 60_000);
        assert_eq!(pa.info, Some(json!({"cmd": "report"})));
        assert!(pa.alive_until > all.at && pa.alive_until <= all.at + 60_000);
        assert!(pa.since <= all.at);
    }
    let some: ProcessListAnswer = get(&format!("{base}/v1/processes?prefix=web-2")).json();
    assert_eq!(some.processes.len(), 1);
    assert_eq!(some.processes[0].process_hash, b);
    assert_eq!(api::end_process(&base, a).code, 200);
    let left: ProcessListAnswer = get(&format!("{base}/v1/processes")).json();
    assert_eq!(left.processes.len(), 1, "an ended process is not listed");
    let bad = get(&format!("{base}/v1/processes?limit=0"));
    assert_eq!((bad.code, bad.error_code()), (400, "INVALID_LIMIT"));
    let bad = get(&format!("{base}/v1/processes?colour=red"));
    assert_eq!((bad.code, bad.error_code()), (400, "INVALID_QUERY"));
}

// ---------- the browser ----------

fn require(path: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} is missing: the dashboard's browser tests need Debian's `{package}` \
         (apt-get install chromium chromium-driver; scripts/test.sh installs both)"
    );
    p
}

/// chromedriver on a free port, stopped with the test.
fn start_chromedriver() -> (Reaped, u16) {
    let driver = require("/usr/bin/chromedriver", "chromium-driver");
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let reaped = Reaped(child);
    eventually(Duration::from_secs(10), "chromedriver to listen", || {
        let s = get(&format!("http://127.0.0.1:{port}/status"));
        s.body["value"]["ready"].as_bool().filter(|r| *r)
    });
    (reaped, port)
}

async fn browser(port: u16) -> Client {
    let chromium = require("/usr/bin/chromium", "chromium");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_string(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1440,1100",
                     "--force-device-scale-factor=1"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session through chromedriver")
}

/// Runs `script` in the page until it returns something other than null
/// or false.
async fn until(c: &Client, timeout: Duration, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    loop {
        if let Ok(v) = c.execute(script, vec![]).await {
            if !(v.is_null() || v == Value::Bool(false)) {
                return v;
            }
            last = v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for the dashboard to show {what} (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const MEMBERS: &str = "const rows = [...document.querySelectorAll('#members tbody tr')]; \
    return rows.length === 3 && rows.every(r => r.cells[1].textContent === 'healthy') \
    ? rows.map(r => r.dataset.id) : null;";

fn lock_row(key: &str) -> String {
    format!(
        "const r = [...document.querySelectorAll('#locks tbody tr')].find(r => r.dataset.key === {key:?}); \
         return r && !r.classList.contains('gone') \
         ? {{holder: r.querySelector('.holder').textContent, token: r.querySelector('.token').textContent, \
             left: r.querySelector('.t').textContent}} : null;"
    )
}

fn leader_shown(not: u64) -> String {
    format!(
        "const t = document.getElementById('c-leader').textContent; \
         return t.startsWith('node ') && t !== 'node {not}' ? Number(t.slice(5)) : null;"
    )
}

/// A browser page and the runtime its WebDriver calls run on (the test's
/// cluster helpers are blocking, so they run outside it).
struct Page {
    rt: tokio::runtime::Runtime,
    b: Client,
}

impl Page {
    fn open(port: u16, url: &str) -> Page {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let b = rt.block_on(browser(port));
        rt.block_on(b.goto(url)).expect("open the dashboard");
        Page { rt, b }
    }

    fn until(&self, secs: u64, what: &str, script: &str) -> Value {
        self.rt
            .block_on(until(&self.b, Duration::from_secs(secs), what, script))
    }

    fn screenshot(&self, path: &Path) {
        let png = self.rt.block_on(self.b.screenshot()).expect("screenshot");
        std::fs::write(path, png).expect("write the screenshot");
    }

    fn close(self) {
        self.rt.block_on(self.b.close()).expect("close the browser");
    }
}

#[test]
fn the_dashboard_shows_members_locks_and_a_leader_change() {
    let started = Instant::now();
    let (_driver, port) = start_chromedriver();
    let mut c = Cluster::start(3);
    let leader = c.wait_ready(Duration::from_secs(20));
    let here = c.followers()[0];
    let page = Page::open(port, &format!("{}/ui", c.url(here)));
    assert_eq!(
        page.until(10, "3 healthy members", MEMBERS),
        json!(["1", "2", "3"])
    );
    assert_eq!(page.until(5, "the leader", &leader_shown(0)), json!(leader));

    the_stream_is_followed_if_the_node_has_one(&page, &c.url(here), None);
    a_lock_comes_and_goes(&page, &c.url(leader));

    // The leader dies: the page (on a survivor) names the new one and marks the old one down.
    c.kill(leader);
    let new = page.until(20, "a new leader", &leader_shown(leader));
    assert_ne!(new, json!(leader));
    page.until(
        6,
        "the old leader down",
        &format!(
            "const r = document.querySelector('#members tbody tr[data-id=\"{leader}\"]'); \
             return r && r.cells[1].textContent === 'down';"
        ),
    );
    // The nodes route agrees with the page.
    let nodes: NodesAnswer = get(&format!("{}/v1/cluster/nodes", c.url(here))).json();
    let dead = nodes
        .nodes
        .iter()
        .find(|n| n.id == leader)
        .expect("the old leader listed");
    assert!(!dead.reachable && dead.cluster.is_none() && dead.error.is_some());
    assert_eq!(nodes.nodes.iter().filter(|n| n.reachable).count(), 2);
    page.close();
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}

/// The page follows the watch stream when the node serves one (`live`),
/// and says it polls when it does not.
fn the_stream_is_followed_if_the_node_has_one(page: &Page, base: &str, token: Option<&str>) {
    let mut req = http()
        .get(format!("{base}/v1/watch"))
        .timeout(Duration::from_secs(3));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let watch = req.send().expect("GET /v1/watch");
    let want = if watch.status() == 404 {
        "polling"
    } else {
        "live"
    };
    drop(watch);
    let state = page.until(
        5,
        "the connection state",
        &format!("const s = document.getElementById('conn').dataset.state; return s === {want:?} ? s : null;"),
    );
    assert_eq!(state, json!(want));
}

/// A lock taken through the API (on another node) appears with its holder,
/// token and a countdown, and its process with it; released, the row goes.
fn a_lock_comes_and_goes(page: &Page, leader: &str) {
    let process = "batch-7/4242.1";
    assert_eq!(api::keepalive(leader, process, 30_000).code, 200);
    let got = api::acquire(
        leader,
        "jobs/report",
        json!({"process_hash": process, "ttl_ms": 120_000}),
    );
    let lock = got.lock().expect("acquired");
    let row = page.until(5, "the new lock", &lock_row("jobs/report"));
    assert_eq!(row["holder"], json!(lock.owner_hash));
    assert_eq!(row["token"], json!(lock.fencing_token.to_string()));
    assert!(
        row["left"].as_str().is_some_and(|t| t.ends_with('s')),
        "a countdown: {row}"
    );
    let procs = page.until(5, "the process", &format!(
        "return [...document.querySelectorAll('#procs tbody tr')].some(r => r.dataset.proc === {process:?}) || null;"
    ));
    assert_eq!(procs, json!(true));
    assert_eq!(
        api::release(leader, "jobs/report", &lock.owner_hash).code,
        200
    );
    page.until(6, "the lock gone", &format!(
        "return ![...document.querySelectorAll('#locks tbody tr')].some(r => r.dataset.key === {:?});",
        "jobs/report"
    ));
}

// ---------- screenshots for the README ----------

const SHOT_PROCESSES: [&str; 3] = [
    "worker-a/3121.1733051",
    "worker-b/877.1733112",
    "cron-1/42.1733190",
];

/// A few processes and locks, as a small fleet would have them.
fn populate(lead: &str) {
    let infos = [
        json!({"service": "billing", "version": "2.4.1"}),
        json!({"service": "reports"}),
        json!({"service": "cron"}),
    ];
    for (p, info) in SHOT_PROCESSES.iter().zip(infos) {
        let r = locker_tests::put(
            &format!("{lead}/v1/processes/{}", locker_tests::enc(p)),
            json!({"ttl_ms": 10_000, "info": info}),
        );
        assert_eq!(r.code, 200);
    }
    let locks = [
        ("billing/invoices-eu", Some(SHOT_PROCESSES[0]), 300_000),
        ("billing/invoices-us", Some(SHOT_PROCESSES[0]), 300_000),
        ("jobs/nightly-report", Some(SHOT_PROCESSES[1]), 600_000),
        ("jobs/search-reindex", Some(SHOT_PROCESSES[2]), 90_000),
        ("migrations/2024-06-orders", None, 45_000),
    ];
    for (k, p, ttl) in locks {
        let body = match p {
            Some(p) => json!({"process_hash": p, "ttl_ms": ttl}),
            None => json!({"ttl_ms": ttl, "trace": "deploy-8812"}),
        };
        assert_eq!(api::acquire(lead, k, body).code, 200, "{k}");
    }
}

/// Writes docs/img/dashboard.png and docs/img/dashboard-no-leader.png:
/// `cargo test -p locker-tests --test dashboard -- --ignored screenshots`.
#[test]
#[ignore = "writes the README's screenshots; run by hand"]
fn screenshots() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/img");
    std::fs::create_dir_all(&out).expect("docs/img");
    let (_driver, port) = start_chromedriver();
    let mut c = Cluster::start(3);
    let leader = c.wait_ready(Duration::from_secs(20));
    let lead = c.url(leader);
    populate(&lead);
    let survivor = c.followers()[0];
    let page = Page::open(port, &format!("{}/ui", c.url(survivor)));
    page.until(10, "members", MEMBERS);
    page.until(10, "locks", &lock_row("jobs/nightly-report"));
    // Keep the processes alive and make some events.
    for p in SHOT_PROCESSES {
        assert_eq!(api::keepalive(&lead, p, 10_000).code, 200);
    }
    let l = api::acquire(&lead, "jobs/cache-warmup", json!({"ttl_ms": 20_000}))
        .lock()
        .expect("lock");
    assert_eq!(
        api::extend(&lead, "jobs/cache-warmup", &l.owner_hash, Some(30_000)).code,
        200
    );
    assert_eq!(
        api::release(&lead, "jobs/cache-warmup", &l.owner_hash).code,
        200
    );
    std::thread::sleep(Duration::from_millis(2500));
    page.screenshot(&out.join("dashboard.png"));

    // Without a quorum: the survivor knows of no leader.
    for id in [1, 2, 3] {
        if id != survivor {
            c.kill(id);
        }
    }
    page.until(
        30,
        "no leader",
        "return document.getElementById('c-leader').textContent === 'none';",
    );
    std::thread::sleep(Duration::from_millis(1500));
    page.screenshot(&out.join("dashboard-no-leader.png"));
    page.close();
}

// ---------- with tokens ----------

/// With `--tokens-file`, the page loads without a token (it holds no data)
/// and its data routes need one: processes show the token's own (admin:
/// all), the members' views are asked with the caller's token, and the
/// page, given a token, shows the cluster and a lock under it.
#[test]
fn with_tokens_the_page_is_open_and_its_data_needs_a_token() {
    use locker_tests::auth::{call, default_entries, start_with_tokens, write_tokens};
    use locker_tests::auth::{ADMIN, BILLING, OPS, READER};
    let (_driver, port) = start_chromedriver();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tokens.json");
    write_tokens(&file, &default_entries());
    let c = start_with_tokens(3, &file, &[]);
    let base = c.url(1);
    assert_eq!(
        get(&format!("{base}/ui")).code,
        200,
        "the page needs no token"
    );
    let procs = format!("{base}/v1/processes");
    assert_eq!(call("GET", &procs, None, None).code, 401);
    let keepalive = |p: &str, t: &str| {
        let url = format!("{base}/v1/processes/{}", locker_tests::enc(p));
        call("PUT", &url, Some(t), Some(json!({"ttl_ms": 30_000}))).code
    };
    assert_eq!(keepalive("billing-1/10.1", BILLING.secret), 200);
    assert_eq!(keepalive("ops-1/20.1", OPS.secret), 200);
    let seen = |t: &str| -> Vec<String> {
        let a: ProcessListAnswer = call("GET", &procs, Some(t), None).json();
        a.processes.into_iter().map(|p| p.process_hash).collect()
    };
    assert_eq!(seen(BILLING.secret), ["billing-1/10.1"]);
    assert_eq!(seen(ADMIN.secret), ["billing-1/10.1", "ops-1/20.1"]);
    let nodes: NodesAnswer = call(
        "GET",
        &format!("{base}/v1/cluster/nodes"),
        Some(READER.secret),
        None,
    )
    .json();
    assert!(nodes.nodes.iter().all(|n| n.reachable), "{nodes:?}");

    let page = Page::open(port, &format!("{base}/ui"));
    page.until(
        10,
        "the token banner",
        "return !document.getElementById('banner-auth').hidden;",
    );
    let set = format!(
        "sessionStorage.setItem('locker.token', {:?}); location.reload(); return true;",
        READER.secret
    );
    page.rt
        .block_on(page.b.execute(&set, vec![]))
        .expect("set the token");
    assert_eq!(
        page.until(10, "3 healthy members", MEMBERS),
        json!(["1", "2", "3"])
    );
    // EventSource cannot send the token: the page reads the stream with fetch.
    the_stream_is_followed_if_the_node_has_one(&page, &base, Some(READER.secret));
    let got = call(
        "POST",
        &format!("{base}/v1/locks/billing%2Fpayouts/acquire"),
        Some(BILLING.secret),
        Some(json!({"ttl_ms": 60_000})),
    );
    let lock = got.lock().expect("acquired");
    let row = page.until(6, "the lock", &lock_row("billing/payouts"));
    assert_eq!(row["holder"], json!(lock.owner_hash));
    page.close();
}

/// The node that served the page goes away: a red banner and `offline`;
/// it comes back: the page reconnects on its own, follows the stream
/// again and shows what changed meanwhile.
#[test]
fn a_lost_node_shows_a_banner_and_the_page_recovers_on_its_own() {
    let (_driver, port) = start_chromedriver();
    let mut c = Cluster::start(1);
    let base = c.url(1);
    let page = Page::open(port, &format!("{base}/ui"));
    page.until(
        10,
        "the member",
        "return document.querySelectorAll('#members tbody tr').length === 1;",
    );
    c.kill(1);
    page.until(
        8,
        "the lost-connection banner",
        "return !document.getElementById('banner-lost').hidden \
         && document.getElementById('conn').dataset.state === 'offline';",
    );
    c.restart(1);
    c.wait_ready(Duration::from_secs(20));
    let lock = api::acquire(&base, "jobs/after-restart", json!({"ttl_ms": 60_000}))
        .lock()
        .expect("acquired");
    let row = page.until(
        20,
        "the lock taken after the restart",
        &lock_row("jobs/after-restart"),
    );
    assert_eq!(row["token"], json!(lock.fencing_token.to_string()));
    page.until(
        10,
        "the banner gone and the stream live",
        "return document.getElementById('banner-lost').hidden \
         && document.getElementById('conn').dataset.state === 'live';",
    );
    page.close();
}
