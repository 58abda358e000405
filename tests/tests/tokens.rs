//! Authentication by tokens (`--tokens-file`), attacked over HTTP against
//! real nodes: strangers, tokens outside their prefixes or roles, and a
//! token hijacking another's process are refused and change nothing.

use std::time::Duration;

use locker_tests::auth::{
    call, default_entries, entry, start_with_tokens, write_tokens, ADMIN, BILLING, LATE, OPS,
    READER,
};
use locker_tests::{enc, eventually, Answer, Cluster};
use serde_json::{json, Value};

fn tokens_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("tokens.json");
    write_tokens(&path, &default_entries());
    (dir, path)
}

fn acquire(base: &str, key: &str, token: Option<&str>, body: Value) -> Answer {
    let url = format!("{base}/v1/locks/{}/acquire", enc(key));
    call("POST", &url, token, Some(body))
}

fn read(base: &str, key: &str, token: &str) -> Answer {
    call(
        "GET",
        &format!("{base}/v1/locks/{}", enc(key)),
        Some(token),
        None,
    )
}

fn list_keys(base: &str, token: &str, prefix: &str) -> Vec<String> {
    let a = call(
        "GET",
        &format!("{base}/v1/locks?prefix={}", enc(prefix)),
        Some(token),
        None,
    );
    assert_eq!(a.code, 200, "{:?}", a.body);
    a.body["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .filter_map(|l| l["key"].as_str().map(str::to_string))
        .collect()
}

fn error_code(a: &Answer) -> &str {
    a.body["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn strangers_and_unknown_tokens_get_401_and_change_nothing() {
    let (_d, path) = tokens_dir();
    let c = start_with_tokens(1, &path, &[]);
    let u = c.url(1);
    for token in [None, Some("wrong-secret"), Some("")] {
        let a = acquire(&u, "billing/a", token, json!({}));
        assert_eq!(
            (a.code, error_code(&a)),
            (401, "UNAUTHENTICATED"),
            "{token:?}"
        );
        let url = format!("{u}/v1/processes/{}", enc("h/1.2"));
        let a = call("PUT", &url, token, Some(json!({"ttl_ms": 60000})));
        assert_eq!(a.code, 401, "{token:?}");
        assert_eq!(call("GET", &format!("{u}/v1/locks"), token, None).code, 401);
        assert_eq!(
            call("GET", &format!("{u}/v1/cluster"), token, None).code,
            401
        );
    }
    // Nothing was taken, and the probes stay open.
    assert!(list_keys(&u, ADMIN.secret, "").is_empty());
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            call("GET", &format!("{u}{probe}"), None, None).code,
            200,
            "{probe}"
        );
    }
    let log = c.node(1).log_text();
    assert!(
        log.contains("WARN") && log.contains("authentication failed"),
        "{log}"
    );
}

#[test]
fn a_token_acts_only_under_its_prefixes_and_roles() {
    let (_d, path) = tokens_dir();
    let c = start_with_tokens(1, &path, &[]);
    let u = c.url(1);
    let got = acquire(&u, "billing/a", Some(BILLING.secret), json!({}));
    assert_eq!(got.code, 200, "{:?}", got.body);
    let owner = got.body["lock"]["owner_hash"]
        .as_str()
        .expect("owner")
        .to_string();
    assert_eq!(acquire(&u, "ops/a", Some(OPS.secret), json!({})).code, 200);
    // Another team's token, with the right owner hash, cannot release,
    // extend or take billing's lock.
    for op in ["release", "extend"] {
        let url = format!("{u}/v1/locks/{}/{op}", enc("billing/a"));
        let a = call(
            "POST",
            &url,
            Some(OPS.secret),
            Some(json!({"owner_hash": owner})),
        );
        assert_eq!(
            (a.code, error_code(&a)),
            (403, "FORBIDDEN"),
            "{op}: {:?}",
            a.body
        );
    }
    let a = acquire(&u, "billing/b", Some(OPS.secret), json!({}));
    assert_eq!(a.code, 403);
    // A read-only token reads everything and writes nothing.
    let a = acquire(&u, "billing/c", Some(READER.secret), json!({}));
    assert_eq!((a.code, error_code(&a)), (403, "FORBIDDEN"));
    assert_eq!(read(&u, "billing/a", READER.secret).body["locked"], true);
    assert_eq!(read(&u, "billing/a", OPS.secret).code, 403);
    let held = read(&u, "billing/a", BILLING.secret);
    assert_eq!(held.body["lock"]["owner_hash"], owner.as_str());
    assert_eq!(read(&u, "billing/b", ADMIN.secret).body["locked"], false);
    // Lists show only the token's keys.
    assert_eq!(list_keys(&u, BILLING.secret, ""), vec!["billing/a"]);
    assert_eq!(list_keys(&u, OPS.secret, ""), vec!["ops/a"]);
    assert!(list_keys(&u, OPS.secret, "billing/").is_empty());
    assert_eq!(list_keys(&u, READER.secret, "").len(), 2);
    // Membership is for admins: 403 for a writer, even with the secret.
    let body = json!({"id": 9, "peer_addr": "127.0.0.1:1"});
    let url = format!("{u}/v1/cluster/members");
    let a = call("POST", &url, Some(BILLING.secret), Some(body.clone()));
    assert_eq!((a.code, error_code(&a)), (403, "FORBIDDEN"));
    let a = call("DELETE", &format!("{url}/1"), Some(OPS.secret), None);
    assert_eq!(a.code, 403);
    let a = call(
        "POST",
        &format!("{u}/v1/cluster/leader"),
        Some(READER.secret),
        Some(json!({"id": 1})),
    );
    assert_eq!(a.code, 403);
    let members = call("GET", &format!("{u}/v1/cluster"), Some(READER.secret), None);
    assert_eq!(members.body["members"].as_array().map(Vec::len), Some(1));
}

/// A process record remembers its token, on every replica: through any
/// node, another token cannot keep it alive (its ttl), end it or refresh
/// it, and the locks bound to it stay held.
#[test]
fn a_process_belongs_to_the_token_that_registered_it() {
    let (_d, path) = tokens_dir();
    let c = start_with_tokens(3, &path, &[]);
    let leader = leader_of(&c);
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let (f1, f2) = (c.url(followers[0]), c.url(followers[1]));
    let ph = "billing-host/77.1700000000000000000";
    let purl = |base: &str| format!("{base}/v1/processes/{}", enc(ph));
    let a = call(
        "PUT",
        &purl(&f1),
        Some(BILLING.secret),
        Some(json!({"ttl_ms": 60000})),
    );
    assert_eq!(a.code, 200, "{:?}", a.body);
    let alive_until = a.body["alive_until"].as_u64().expect("alive_until");
    let lock = acquire(
        &f1,
        "billing/job",
        Some(BILLING.secret),
        json!({"process_hash": ph}),
    );
    assert_eq!(lock.code, 200, "{:?}", lock.body);
    for base in [&f2, &c.url(leader)] {
        let a = call(
            "PUT",
            &purl(base),
            Some(OPS.secret),
            Some(json!({"ttl_ms": 100})),
        );
        assert_eq!((a.code, error_code(&a)), (403, "FORBIDDEN"), "{:?}", a.body);
        let a = call("DELETE", &purl(base), Some(OPS.secret), None);
        assert_eq!((a.code, error_code(&a)), (403, "FORBIDDEN"), "{:?}", a.body);
        // A forged forwarding mark changes nothing.
        let a = locker_tests::http()
            .delete(purl(base))
            .bearer_auth(OPS.secret)
            .header("x-locker-forwarded-by", "1:00")
            .send()
            .expect("send");
        assert_eq!(a.status().as_u16(), 403);
    }
    std::thread::sleep(Duration::from_millis(400));
    let held = read(&f2, "billing/job", ADMIN.secret);
    assert_eq!(held.body["locked"], true, "{:?}", held.body);
    // The owner still keeps it alive, and its deadline never went down.
    let a = call(
        "PUT",
        &purl(&f2),
        Some(BILLING.secret),
        Some(json!({"ttl_ms": 60000})),
    );
    assert_eq!(a.code, 200);
    assert!(a.body["alive_until"].as_u64().expect("until") >= alive_until);
    replicas_agree(&c);
    // A leader change keeps the owner: the record is replicated state.
    let to = followers[0];
    let moved = locker_tests::http()
        .post(format!("{}/v1/cluster/leader", c.url(leader)))
        .bearer_auth(ADMIN.secret)
        .header("x-locker-cluster-secret", locker_tests::SECRET)
        .json(&json!({"id": to}))
        .send()
        .expect("transfer");
    assert_eq!(moved.status().as_u16(), 200);
    let a = call("DELETE", &purl(&c.url(to)), Some(OPS.secret), None);
    assert_eq!(a.code, 403, "{:?}", a.body);
    let a = call("DELETE", &purl(&c.url(to)), Some(BILLING.secret), None);
    assert_eq!(a.code, 200, "{:?}", a.body);
    assert_eq!(read(&f2, "billing/job", ADMIN.secret).body["locked"], false);
}

fn leader_of(c: &Cluster) -> u64 {
    let a = call(
        "GET",
        &format!("{}/v1/cluster", c.url(1)),
        Some(ADMIN.secret),
        None,
    );
    a.body["leader_id"].as_u64().expect("leader")
}

/// Every replica at the same applied index has the same digest (it covers
/// the tokens of processes and locks).
fn replicas_agree(c: &Cluster) {
    eventually(Duration::from_secs(10), "replicas to agree", || {
        let all: Vec<(u64, String)> = c
            .nodes
            .iter()
            .map(|n| {
                let a = call(
                    "GET",
                    &format!("{}/v1/digest", n.url()),
                    Some(READER.secret),
                    None,
                );
                let idx = a.body["applied_index"].as_u64().unwrap_or(0);
                (idx, a.body["digest"].as_str().unwrap_or("").to_string())
            })
            .collect();
        all.windows(2).all(|w| w[0] == w[1]).then_some(())
    });
}

#[test]
fn sighup_reloads_the_tokens_file_and_keeps_it_if_the_new_one_is_bad() {
    let (_d, path) = tokens_dir();
    let c = start_with_tokens(1, &path, &[]);
    let u = c.url(1);
    assert_eq!(
        acquire(&u, "late/a", Some(LATE.secret), json!({})).code,
        401
    );
    let mut entries = default_entries();
    entries.retain(|e| e["name"] != OPS.name);
    entries.push(entry(LATE, &["late/"], &["write"], json!({})));
    write_tokens(&path, &entries);
    let pid = c.node(1).pid().expect("pid") as i32;
    // SAFETY: kill(2) on the node this test started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    eventually(Duration::from_secs(5), "the new token", || {
        (acquire(&u, "late/a", Some(LATE.secret), json!({})).code == 200).then_some(())
    });
    assert_eq!(acquire(&u, "ops/a", Some(OPS.secret), json!({})).code, 401);
    std::fs::write(&path, "{ not json").expect("write");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    eventually(Duration::from_secs(5), "the reload error", || {
        c.node(1)
            .log_text()
            .contains("tokens file not reloaded")
            .then_some(())
    });
    assert_eq!(
        acquire(&u, "late/b", Some(LATE.secret), json!({})).code,
        200
    );
    assert_eq!(acquire(&u, "ops/b", Some(OPS.secret), json!({})).code, 401);
    assert!(c.node(1).pid().is_some(), "the node still runs");
}

#[test]
fn a_bad_tokens_file_stops_the_node_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("tokens.json");
    std::fs::write(
        &path,
        r#"{"tokens":[{"name":"a","sha256":"abc","prefixes":[],"roles":["read"]}]}"#,
    )
    .expect("write");
    let out = std::process::Command::new(locker_tests::bin("locker-node"))
        .args(["--data-dir", &dir.path().join("d").display().to_string()])
        .args([
            "--client-addr",
            &format!("127.0.0.1:{}", locker_tests::free_port()),
        ])
        .args([
            "--peer-addr",
            &format!("127.0.0.1:{}", locker_tests::free_port()),
        ])
        .args(["--tokens-file", &path.display().to_string()])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("64 hex digits"), "{err}");
}

/// The CLI sends `--token` / `LOCKER_TOKEN` on every command, `locker run`
/// (keep-alives, extends, release) included.
#[test]
fn the_cli_works_with_a_token_and_fails_without_one() {
    let (_d, path) = tokens_dir();
    let c = start_with_tokens(1, &path, &[]);
    let u = c.url(1);
    let locker = |token: Option<&str>, args: &[&str]| {
        let mut cmd = std::process::Command::new(locker_tests::bin("locker"));
        cmd.env_remove("LOCKER_TOKEN")
            .args(["--endpoints", &u])
            .args(args);
        if let Some(t) = token {
            cmd.env("LOCKER_TOKEN", t);
        }
        cmd.output().expect("locker")
    };
    let out = locker(None, &["acquire", "billing/cli"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"),
        "{out:?}"
    );
    let out = locker(Some(BILLING.secret), &["--json", "acquire", "billing/cli"]);
    assert!(out.status.success(), "{out:?}");
    let out = locker(
        Some(BILLING.secret),
        &["run", "billing/run", "--", "sh", "-c", "sleep 2.5; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = std::process::Command::new(locker_tests::bin("locker"))
        .args([
            "--endpoints",
            &u,
            "--token",
            OPS.secret,
            "acquire",
            "billing/cli2",
        ])
        .output()
        .expect("locker");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FORBIDDEN"),
        "{out:?}"
    );
    assert_eq!(read(&u, "billing/run", ADMIN.secret).body["locked"], false);
    assert_eq!(read(&u, "billing/cli", ADMIN.secret).body["locked"], true);
}

/// `GET /v1/backup` holds every tenant's keys: only the admin role may take
/// one, through a follower (forwarded to the leader) as well. A refused
/// `locker-node backup` leaves no file behind.
#[test]
fn only_an_admin_token_takes_a_backup() {
    let (dir, path) = tokens_dir();
    let c = start_with_tokens(3, &path, &[]);
    let leader = leader_of(&c);
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let u = c.url(follower);
    let held = acquire(&u, "billing/backed-up", Some(BILLING.secret), json!({}));
    assert_eq!(held.body["status"], "SUCCESS", "{:?}", held.body);
    let backup = format!("{u}/v1/backup");
    assert_eq!(call("GET", &backup, None, None).code, 401);
    for t in [BILLING, OPS, READER] {
        let a = call("GET", &backup, Some(t.secret), None);
        assert_eq!((a.code, error_code(&a)), (403, "FORBIDDEN"), "{}", t.name);
    }
    let file = dir.path().join("locker.backup");
    let file_s = file.display().to_string();
    let tool = |token: &str, args: &[&str]| {
        std::process::Command::new(locker_tests::bin("locker-node"))
            .env("LOCKER_TOKEN", token)
            .args(args)
            .output()
            .expect("locker-node")
    };
    let refused = tool(BILLING.secret, &["backup", "--from", &u, "--out", &file_s]);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("FORBIDDEN"),
        "{refused:?}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| n.to_string_lossy().starts_with("locker.backup"))
        .collect();
    assert!(left.is_empty(), "a refused backup left {left:?}");
    let out = tool(ADMIN.secret, &["backup", "--from", &u, "--out", &file_s]);
    assert!(out.status.success(), "{out:?}");
    let v = tool("", &["verify-backup", &file_s]);
    let text = String::from_utf8_lossy(&v.stdout).to_string() + &String::from_utf8_lossy(&v.stderr);
    assert!(v.status.success() && text.contains("locks: 1 ("), "{text}");
}

/// A watch stream opened with a token ends (`closed`, reason
/// `unauthorized`) when a reload of the tokens file removes that token; the
/// reconnect is refused. A stream of a token the reload kept goes on. (A
/// removed token's stream used to go on streaming for good.)
#[test]
fn a_reload_that_removes_a_token_ends_its_watch_streams() {
    let (_d, path) = tokens_dir();
    let c = start_with_tokens(1, &path, &[]);
    let u = c.url(1);
    let mut billing = WatchReader::open(&u, "billing/", BILLING.secret);
    let mut reader = WatchReader::open(&u, "billing/", READER.secret);
    let mut entries = default_entries();
    entries.retain(|e| e["name"] != BILLING.name);
    write_tokens(&path, &entries);
    let pid = c.node(1).pid().expect("pid") as i32;
    // SAFETY: kill(2) on the node this test started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let closed = billing.until("\"reason\":", Duration::from_secs(10));
    assert!(closed.contains("\"reason\":\"unauthorized\""), "{closed}");
    let again = call("GET", &format!("{u}/v1/watch"), Some(BILLING.secret), None);
    assert_eq!(again.code, 401, "{:?}", again.body);
    // The reader's token was kept: it still gets events.
    let a = acquire(&u, "billing/after", Some(ADMIN.secret), json!({}));
    assert_eq!(a.code, 200, "{:?}", a.body);
    let seen = reader.until("billing/after", Duration::from_secs(10));
    assert!(!seen.contains("event: closed"), "{seen}");
}

/// An SSE stream read line by line on a thread (blocking reads).
struct WatchReader {
    lines: std::sync::mpsc::Receiver<String>,
}

impl WatchReader {
    fn open(base: &str, prefix: &str, token: &str) -> WatchReader {
        let url = format!("{base}/v1/watch?prefix={}", enc(prefix));
        let resp = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .expect("client")
            .get(url)
            .bearer_auth(token)
            .send()
            .expect("watch");
        assert_eq!(resp.status().as_u16(), 200);
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(resp).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        WatchReader { lines }
    }

    /// Everything read until a line containing `needle`; panics after `limit`.
    fn until(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        let mut seen = String::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains(needle) {
                        return seen;
                    }
                }
                Err(e) => panic!("no {needle:?} within {limit:?} ({e}); read:\n{seen}"),
            }
        }
    }
}
