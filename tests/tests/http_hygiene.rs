//! HTTP hygiene on the wire, with raw TCP (an HTTP library would fix the
//! very requests under test): every 4xx has the JSON error shape, including
//! hyper's own refusals; `Content-Length` with `Transfer-Encoding` is
//! refused; paths are never normalised; metric labels stay a fixed set
//! whatever methods and paths arrive.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use locker_tests::{api, get, Cluster};

/// One answer read off the wire.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n\n{}", self.head, self.body))
    }

    /// Asserts the status and the error code of a JSON error body.
    fn assert_error(&self, status: u16, code: &str, what: &str) {
        assert_eq!(
            self.status, status,
            "{what}:\n{}\n\n{}",
            self.head, self.body
        );
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{what}: a JSON content type\n{}",
            self.head
        );
        assert_eq!(self.json()["error"]["code"], code, "{what}: {}", self.body);
        assert!(self.json()["error"]["message"].is_string(), "{what}");
    }
}

/// Sends `request` as is to `addr` and reads the first answer (the node
/// closes after it: every request here says `Connection: close` or is
/// refused with the connection closed).
fn raw(addr: &str, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The node may answer and close before it read everything we send.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Raw {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn addr(c: &Cluster) -> String {
    c.node(1).client_addr.clone()
}

/// `METHOD PATH` with `Connection: close` and no body.
fn simple(method: &str, path: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

#[test]
fn content_length_with_transfer_encoding_is_refused_and_smuggles_nothing() {
    let c = Cluster::start(1);
    let a = addr(&c);
    // The chunked body ends at once; the Content-Length covers a second,
    // smuggled acquire that a front proxy trusting Content-Length would
    // not see as a request of its own.
    let smuggled =
        "POST /v1/locks/smuggled/acquire HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n";
    let chunked_end = "0\r\n\r\n";
    let body = format!("{chunked_end}{smuggled}");
    for (first, second) in [
        (
            "Transfer-Encoding: chunked".to_string(),
            format!("Content-Length: {}", body.len()),
        ),
        (
            format!("Content-Length: {}", body.len()),
            "Transfer-Encoding: chunked".to_string(),
        ),
    ] {
        let req = format!(
            "POST /v1/locks/front/acquire HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{first}\r\n{second}\r\n\r\n{body}"
        );
        let r = raw(&a, req.as_bytes());
        r.assert_error(400, "MALFORMED_REQUEST", &format!("{first} then {second}"));
        assert!(
            r.head.to_ascii_lowercase().contains("connection: close"),
            "{}",
            r.head
        );
    }
    // A chunked body alone is refused the same way.
    let chunked = "POST /v1/locks/front/acquire HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    raw(&a, chunked.as_bytes()).assert_error(400, "MALFORMED_REQUEST", "chunked");
    let url = c.url(1);
    for key in ["front", "smuggled"] {
        assert!(
            !api::read(&url, key).read().locked,
            "{key}: nothing was done"
        );
    }
    // Content-Length alone is how bodies come.
    let ok = "POST /v1/locks/front/acquire HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    assert_eq!(raw(&a, ok.as_bytes()).status, 200);
}

#[test]
fn refusals_of_the_http_layer_have_json_bodies() {
    let c = Cluster::start(1);
    let a = addr(&c);
    raw(&a, b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n").assert_error(
        400,
        "MALFORMED_REQUEST",
        "a header name with a space",
    );
    raw(&a, b"GET /healthz HTP/9\r\n\r\n").assert_error(400, "MALFORMED_REQUEST", "no version");
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "x".repeat(600_000)
    );
    raw(&a, huge.as_bytes()).assert_error(431, "HEADERS_TOO_LARGE", "a 600 KB header");
    let long = simple("GET", &format!("/v1/locks/{}", "k".repeat(70_000)));
    raw(&a, &long).assert_error(414, "URI_TOO_LONG", "a 70 KB request target");
    // And the ones axum and the handlers make.
    raw(&a, &simple("GET", "/v2/nothing")).assert_error(404, "NOT_FOUND", "unknown route");
    raw(&a, &simple("DELETE", "/v1/locks/a/acquire")).assert_error(
        405,
        "METHOD_NOT_ALLOWED",
        "wrong method",
    );
    raw(&a, &simple("GET", "/v1/locks?limit=many")).assert_error(
        400,
        "INVALID_QUERY",
        "a query that does not parse",
    );
    let remove = format!("DELETE /v1/cluster/members/not-a-number HTTP/1.1\r\nHost: localhost\r\nx-locker-cluster-secret: {}\r\nConnection: close\r\n\r\n", locker_tests::SECRET);
    raw(&a, remove.as_bytes()).assert_error(
        400,
        "INVALID_NODE",
        "a path parameter that does not parse",
    );
    let bad_json = "POST /v1/locks/a/acquire HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{nope";
    raw(&a, bad_json.as_bytes()).assert_error(400, "INVALID_JSON", "malformed JSON");
    let too_big = "POST /v1/locks/a/acquire HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n";
    raw(&a, too_big.as_bytes()).assert_error(413, "PAYLOAD_TOO_LARGE", "a 10 MB body");
    raw(&a, &simple("OPTIONS", "*")).assert_error(404, "NOT_FOUND", "OPTIONS *");
}

#[test]
fn paths_are_never_normalised() {
    let c = Cluster::start(1);
    let a = addr(&c);
    for path in [
        "/v1/locks/../cluster",
        "/v1/locks/..",
        "/v1/locks/%2e%2E",
        "/v1/locks/./x",
        "/v1/locks/%zz",
        "/v1/locks/a%2",
    ] {
        raw(&a, &simple("GET", path)).assert_error(400, "INVALID_PATH", path);
        let acquire = format!("{path}/acquire");
        raw(&a, &simple("POST", &acquire)).assert_error(400, "INVALID_PATH", &acquire);
    }
    for path in ["//v1/locks", "/v1/locks/", "/v1//locks", "/v1/locks/a/b"] {
        raw(&a, &simple("GET", path)).assert_error(404, "NOT_FOUND", path);
    }
    // %2F is a slash of the key, never a separator; %25 a percent sign.
    for (sent, key) in [("a%2Fb", "a/b"), ("a%2F..%2Fb", "a/../b"), ("%25zz", "%zz")] {
        let r = raw(&a, &simple("POST", &format!("/v1/locks/{sent}/acquire")));
        assert_eq!(r.status, 200, "{sent}: {}", r.body);
        assert_eq!(r.json()["lock"]["key"], key, "{sent}");
        let read = raw(&a, &simple("GET", &format!("/v1/locks/{sent}")));
        assert_eq!(read.json()["lock"]["key"], key, "{sent}");
    }
    let url = c.url(1);
    let list = get(&format!("{url}/v1/locks")).body;
    let keys: BTreeSet<&str> = list["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .filter_map(|l| l["key"].as_str())
        .collect();
    assert_eq!(keys, BTreeSet::from(["%zz", "a/../b", "a/b"]), "{list}");
}

/// A small xorshift: reproducible from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A word of `min..min + spread` letters of `alphabet`.
    fn word(&mut self, alphabet: &[u8], min: usize, spread: u64) -> String {
        let len = min + (self.next() % spread.max(1)) as usize;
        (0..len)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char)
            .collect()
    }
}

/// The label sets of `locker_http_*` series on the node's /metrics page.
fn http_series(url: &str) -> (BTreeSet<String>, usize) {
    let page = reqwest::blocking::get(format!("{url}/metrics"))
        .and_then(reqwest::blocking::Response::text)
        .expect("/metrics");
    let series = page
        .lines()
        .filter(|l| l.starts_with("locker_http_"))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
        .collect();
    (series, page.len())
}

/// Random requests: unknown methods on known and unknown paths.
fn random_requests(a: &str, rng: &mut Rng, n: usize) {
    let upper = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let lower = b"abcdefghijklmnopqrstuvwxyz0123456789-_";
    for i in 0..n {
        let method = rng.word(upper, 200, 2000);
        let path = match i % 3 {
            0 => format!("/{}", rng.word(lower, 100, 2000)),
            1 => format!("/v1/locks/{}", rng.word(lower, 1, 500)),
            _ => format!("/v1/{}/{}", rng.word(lower, 50, 1), rng.word(lower, 50, 1)),
        };
        let r = raw(a, &simple(&method, &path));
        assert!(
            matches!(r.status, 404 | 405),
            "{method:.20}.. {path:.40}..: {}",
            r.status
        );
        r.json();
    }
}

#[test]
fn random_methods_and_paths_do_not_grow_the_metrics_page() {
    let c = Cluster::start(1);
    let (a, url) = (addr(&c), c.url(1));
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    // Every kind of request once, so each series exists (the scrape too).
    random_requests(&a, &mut rng, 12);
    http_series(&url);
    let (before, size_before) = http_series(&url);
    random_requests(&a, &mut rng, 100);
    let (after, size_after) = http_series(&url);
    assert_eq!(
        after.difference(&before).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "100 requests with random methods and paths added series (seed {seed})"
    );
    // Counts gain digits; nothing else grows.
    assert!(
        size_after < size_before + 400,
        "/metrics grew from {size_before} to {size_after} bytes (seed {seed})"
    );
    assert!(
        after
            .iter()
            .any(|s| s.contains("method=\"other\",route=\"other\",status=\"404\"")),
        "an unknown method on an unknown path is counted as other/other: {after:?}"
    );
}
