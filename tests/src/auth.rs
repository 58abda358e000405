//! Nodes with tokens (`--tokens-file`): a tokens file of fixed test
//! secrets, authenticated calls, and a cluster started with them (the
//! plain [`Cluster::start`] waits with anonymous requests, which such a
//! node refuses).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{answer, eventually, http, Answer, Cluster};

/// A token of the test tokens file: its name, secret and the SHA-256 of
/// the secret (precomputed, so the harness needs no hashing crate).
#[derive(Debug, Clone, Copy)]
pub struct TestToken {
    /// Its name in the file.
    pub name: &'static str,
    /// What a client sends as `Authorization: Bearer`.
    pub secret: &'static str,
    sha256: &'static str,
}

/// Admin: every route, every prefix.
pub const ADMIN: TestToken = TestToken {
    name: "admin",
    secret: "admin-secret-0001",
    sha256: "1106897dcbd392bcf7b9ca38c6043d6878e6244f10062ba8702618cd0a7d57c5",
};
/// Read and write under `billing/`.
pub const BILLING: TestToken = TestToken {
    name: "billing",
    secret: "billing-secret-01",
    sha256: "8c704400b2cc20ea98e44e07ef7a4a3d71a50f9ec40c217a521fbe6725c4f590",
};
/// Read and write under `ops/`.
pub const OPS: TestToken = TestToken {
    name: "ops",
    secret: "ops-secret-00001",
    sha256: "2a8b0458d765ece658325b5584e8e2a807384a6e607c9e42149d03ad157a605e",
};
/// Read only, every key.
pub const READER: TestToken = TestToken {
    name: "reader",
    secret: "reader-secret-001",
    sha256: "6d7d0b427eab775d07f19eb6a61954e7fae6770f770457292a439cbd015bfa10",
};
/// Not in the default file: added by reload tests.
pub const LATE: TestToken = TestToken {
    name: "late",
    secret: "late-secret-0001",
    sha256: "bcf1f38b71caee34b402dd6042b58e39e115669ef56f578ce638ec3d247546e1",
};

/// One entry of a tokens file: `extra` adds fields (`max_locks`, `rate_per_s`).
pub fn entry(t: TestToken, prefixes: &[&str], roles: &[&str], extra: Value) -> Value {
    let mut v = json!({"name": t.name, "sha256": t.sha256, "prefixes": prefixes, "roles": roles});
    if let (Some(o), Value::Object(more)) = (v.as_object_mut(), extra) {
        o.extend(more);
    }
    v
}

/// The default entries: admin, billing, ops, reader.
pub fn default_entries() -> Vec<Value> {
    vec![
        entry(ADMIN, &[], &["admin"], json!({})),
        entry(BILLING, &["billing/"], &["read", "write"], json!({})),
        entry(OPS, &["ops/"], &["read", "write"], json!({})),
        entry(READER, &[""], &["read"], json!({})),
    ]
}

/// Writes a tokens file with these entries.
pub fn write_tokens(path: &Path, entries: &[Value]) {
    let text = serde_json::to_string_pretty(&json!({ "tokens": entries })).expect("json");
    std::fs::write(path, text).expect("write tokens file");
}

/// A request with `token`'s secret (none: anonymous) and an optional JSON body.
pub fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    answer(req.send())
}

/// A cluster of `n` nodes sharing the tokens file `tokens` (plus `extra`
/// flags), ready: every node answers /readyz and the leader a read with
/// the admin token.
pub fn start_with_tokens(n: usize, tokens: &Path, extra: &[&str]) -> Cluster {
    let path = tokens.display().to_string();
    let mut flags = vec!["--tokens-file", path.as_str()];
    flags.extend_from_slice(extra);
    let mut c = Cluster::configure(n, &flags);
    for id in 1..=n as u64 {
        c.restart(id);
    }
    let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(
            Duration::from_secs(30),
            "a ready cluster with tokens",
            || {
                let all_ready = c
                    .nodes
                    .iter()
                    .all(|p| call("GET", &format!("{}/readyz", p.url()), None, None).code == 200);
                let leader = c.nodes.iter().find_map(|p| {
                    let a = call(
                        "GET",
                        &format!("{}/v1/cluster", p.url()),
                        Some(ADMIN.secret),
                        None,
                    );
                    a.body.get("leader_id").and_then(Value::as_u64)
                })?;
                let probe = format!("{}/v1/locks/__ready_probe", c.url(leader));
                (all_ready && call("GET", &probe, Some(ADMIN.secret), None).code == 200)
                    .then_some(())
            },
        )
    }));
    if let Err(e) = ready {
        c.print_log_tails();
        std::panic::resume_unwind(e);
    }
    c
}
