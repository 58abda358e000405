//! Attacks a stranger on the network could try, run against real nodes: weak cluster secrets refused
//! at start, secrets kept out of `--help`, authentication failures logged.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use locker_tests::{
    assert_answers_200, bin, eventually, free_port, get, http, limit_open_files, Reaped,
};

/// `locker-node` with `args` and `env`, in `dir`, stderr to `dir/node.log`.
fn node_cmd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let log = std::fs::File::create(dir.join("node.log")).expect("log");
    let mut cmd = Command::new(bin("locker-node"));
    cmd.current_dir(dir)
        .args(args)
        .env_remove("LOCKER_CLUSTER_SECRET")
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    cmd
}

/// Waits up to 10 s for the node to exit; `None` if it is still running.
fn exit_code(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn two_member_flags(client: &str, peer: &str) -> Vec<String> {
    let other = free_port();
    ["--id", "1", "--client-addr", client, "--peer-addr", peer]
        .iter()
        .map(ToString::to_string)
        .chain([
            "--initial-cluster".to_string(),
            format!("1={peer},2=127.0.0.1:{other}"),
        ])
        .collect()
}

/// Starts node 1 of a 2-member cluster with `extra` flags and `env`; returns
/// its exit code (None: still running after 10 s) and its log.
fn start_member(extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("dir");
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let mut args = two_member_flags(&client, &peer);
    args.extend(extra.iter().map(ToString::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = Reaped(
        node_cmd(dir.path(), &args, env)
            .spawn()
            .expect("spawn locker-node"),
    );
    let code = exit_code(&mut child.0);
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
    (code, log)
}

/// A refused start: exit code 2, a message about the secret, no value.
fn assert_refused(what: &str, (code, log): (Option<i32>, String)) {
    assert_eq!(
        code,
        Some(2),
        "{what} secret: the node must refuse to start\n{log}"
    );
    assert!(
        log.contains("cluster secret"),
        "{what}: the message names the secret\n{log}"
    );
    assert!(
        !log.contains("fifteen-bytes!!"),
        "{what}: the value is never printed\n{log}"
    );
}

#[test]
fn a_multi_node_cluster_refuses_a_weak_cluster_secret() {
    assert_refused("the built-in default", start_member(&[], &[]));
    assert_refused("an empty", start_member(&["--cluster-secret", ""], &[]));
    let short = [("LOCKER_CLUSTER_SECRET", "fifteen-bytes!!")];
    assert_refused("a short", start_member(&[], &short));
    // --join (which excludes --initial-cluster) with the default.
    let dir = tempfile::tempdir().expect("dir");
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let args = ["--client-addr", &client, "--peer-addr", &peer, "--join"];
    let mut child = Reaped(node_cmd(dir.path(), &args, &[]).spawn().expect("spawn"));
    let code = exit_code(&mut child.0);
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
    assert_refused("a joining node's default", (code, log));
    // --insecure-dev lets a local experiment use the default: still running
    // (waiting for its peer) after the 10 s the refusals took at most.
    let (code, log) = start_member(&["--insecure-dev"], &[]);
    assert_eq!(
        code, None,
        "--insecure-dev accepts the default secret\n{log}"
    );
}

#[test]
fn help_never_shows_the_secret_from_the_environment() {
    let out: Output = Command::new(bin("locker-node"))
        .arg("--help")
        .env("LOCKER_CLUSTER_SECRET", "do-not-print-me-0123456789")
        .output()
        .expect("locker-node --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(help.contains("--cluster-secret-file"), "{help}");
    assert!(
        !help.contains("do-not-print-me"),
        "--help printed the secret:\n{help}"
    );
}

/// A node with its secret from a file; wrong secrets on both ports are
/// refused and logged at warn once per source and port, not once per try.
#[test]
fn secret_from_a_file_and_auth_failures_logged_at_warn_once_per_source() {
    let dir = tempfile::tempdir().expect("dir");
    let secret = "file-secret-0123456789abcdef";
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{secret}\n")).expect("secret file");
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let file_arg = file.display().to_string();
    let args = [
        "--client-addr",
        &client,
        "--peer-addr",
        &peer,
        "--cluster-secret-file",
        &file_arg,
    ];
    let mut cmd = node_cmd(dir.path(), &args, &[]);
    let _node = Reaped(cmd.spawn().expect("spawn"));
    let url = format!("http://{client}");
    eventually(Duration::from_secs(20), "the node ready", || {
        (get(&format!("{url}/readyz")).code == 200).then_some(())
    });
    let transfer = |s: &str| {
        http()
            .post(format!("{url}/v1/cluster/leader"))
            .header("x-locker-cluster-secret", s)
            .json(&serde_json::json!({"id": 1}))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(
        transfer(secret),
        200,
        "the file's secret is the cluster secret"
    );
    for _ in 0..5 {
        assert_eq!(transfer("locker-dev-secret"), 401);
        let peer_info = http()
            .get(format!("http://{peer}/peer/info"))
            .header("x-locker-cluster-secret", "wrong-secret-but-long-enough")
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(peer_info, 401);
    }
    let log = eventually(Duration::from_secs(5), "the warnings in the log", || {
        let log = std::fs::read_to_string(dir.path().join("node.log")).ok()?;
        (log.matches("authentication failed").count() >= 2).then_some(log)
    });
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authentication failed"))
        .collect();
    assert_eq!(
        warned.len(),
        2,
        "one warning per port, not one per try:\n{log}"
    );
    assert!(
        warned
            .iter()
            .all(|l| l.contains("WARN") && l.contains("127.0.0.1")),
        "{log}"
    );
    // One from each port (the log may carry colour codes around `=`).
    assert!(warned.iter().any(|l| l.contains("\"peer\"")), "{log}");
    assert!(warned.iter().any(|l| l.contains("\"client\"")), "{log}");
    assert!(!log.contains(secret), "the secret is never logged:\n{log}");
}

/// 1,100 idle sockets against a node limited to 1,024 open files used to
/// take all its descriptors for good: `/healthz`, peers and writes stopped.
/// Now connections past the limit wait in the kernel's queue and idle ones
/// are closed after --idle-timeout-ms, so `/healthz` answers.
#[test]
fn a_flood_of_idle_connections_does_not_stop_healthz() {
    let dir = tempfile::tempdir().expect("dir");
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let args = ["--client-addr", &client, "--peer-addr", &peer];
    // Through the environment, so a node without the flag runs this too.
    let mut cmd = node_cmd(dir.path(), &args, &[("LOCKER_IDLE_TIMEOUT_MS", "2000")]);
    limit_open_files(&mut cmd, 1024, 1024);
    let _node = Reaped(cmd.spawn().expect("spawn"));
    let url = format!("http://{client}");
    eventually(Duration::from_secs(20), "the node ready", || {
        (get(&format!("{url}/readyz")).code == 200).then_some(())
    });
    let idle: Vec<std::net::TcpStream> = (0..1100)
        .filter_map(|_| std::net::TcpStream::connect(&client).ok())
        .collect();
    assert_eq!(idle.len(), 1100, "the flood's sockets all connect");
    assert_answers_200(
        http()
            .get(format!("{url}/healthz"))
            .timeout(Duration::from_secs(20)),
        "with 1,100 idle sockets open, /healthz",
    );
    drop(idle);
}

/// A browser page can POST `text/plain` or a form to 127.0.0.1:7070 without
/// asking first (CSRF): such bodies are refused with 415 and change nothing.
#[test]
fn a_write_without_a_json_content_type_is_refused_and_changes_nothing() {
    let c = locker_tests::Cluster::start(1);
    let url = c.url(1);
    let send = |method: reqwest::Method, path: &str, ct: Option<&str>, body: &str| {
        let mut req = http().request(method, format!("{url}{path}"));
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.body(body.to_string()).send().expect("send");
        let code = r.status().as_u16();
        (code, r.json::<serde_json::Value>().unwrap_or_default())
    };
    let acquire = "/v1/locks/csrf%2Fk/acquire";
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let (code, body) = send(reqwest::Method::POST, acquire, ct, "{}");
        assert_eq!(code, 415, "{ct:?}: {body}");
        assert_eq!(
            body["error"]["code"], "UNSUPPORTED_MEDIA_TYPE",
            "{ct:?}: {body}"
        );
    }
    let process = "/v1/processes/h%2F1.2";
    let (code, body) = send(reqwest::Method::PUT, process, Some("text/plain"), "{}");
    assert_eq!(
        (code, &body["error"]["code"]),
        (415, &"UNSUPPORTED_MEDIA_TYPE".into())
    );
    assert!(!locker_tests::api::read(&url, "csrf/k").read().locked);
    // JSON (with parameters, any case) and a body-less POST still work.
    let json = Some("Application/JSON; charset=utf-8");
    assert_eq!(send(reqwest::Method::POST, acquire, json, "{}").0, 200);
    assert_eq!(
        send(
            reqwest::Method::POST,
            "/v1/locks/csrf%2Fe/acquire",
            None,
            ""
        )
        .0,
        200
    );
}

/// DNS rebinding: a page on `evil.example` that resolves to 127.0.0.1 sends
/// its own name as Host. A loopback node answers only names it knows.
#[test]
fn a_loopback_node_refuses_an_unknown_host_name() {
    let c = locker_tests::Cluster::start_with(1, &["--allowed-hosts", "locker.internal"]);
    let url = c.url(1);
    let with_host = |path: &str, host: &str| {
        let r = http()
            .post(format!("{url}{path}"))
            .header("host", host)
            .json(&serde_json::json!({}))
            .send()
            .expect("send");
        let code = r.status().as_u16();
        (code, r.json::<serde_json::Value>().unwrap_or_default())
    };
    let (code, body) = with_host("/v1/locks/dns%2Fk/acquire", "evil.example:7070");
    assert_eq!(
        (code, &body["error"]["code"]),
        (421, &"HOST_NOT_ALLOWED".into()),
        "{body}"
    );
    assert!(
        !locker_tests::api::read(&url, "dns/k").read().locked,
        "nothing changed"
    );
    for host in [
        "localhost:1",
        "127.0.0.1",
        "[::1]:7070",
        "LOCKER.internal:80",
    ] {
        let (code, body) = with_host(&format!("/v1/locks/dns%2F{}/acquire", host.len()), host);
        assert_eq!(code, 200, "{host}: {body}");
    }
    let probe = http()
        .get(format!("{url}/healthz"))
        .header("host", "evil.example")
        .send();
    assert_eq!(
        probe.map(|r| r.status().as_u16()).ok(),
        Some(200),
        "probes stay open"
    );
}

/// The cluster id a node reports on its peer port, once it knows it.
fn cluster_id_of(peer_addr: &str) -> String {
    eventually(Duration::from_secs(10), "the node's cluster id", || {
        let r = http()
            .get(format!("http://{peer_addr}/peer/info"))
            .header("x-locker-cluster-secret", locker_tests::SECRET)
            .send()
            .ok()?;
        let v: serde_json::Value = r.json().ok()?;
        v["cluster_id"].as_str().map(str::to_string)
    })
}

/// A Raft vote request to `peer_addr` claiming to come from `cluster`.
fn vote_from(peer_addr: &str, cluster: &str) -> u16 {
    http()
        .post(format!("http://{peer_addr}/raft/vote"))
        .header("x-locker-cluster-secret", locker_tests::SECRET)
        .header("x-locker-target-id", "1")
        .header("x-locker-cluster-id", cluster)
        .header("content-type", "application/octet-stream")
        .body(vec![0xffu8; 16])
        .send()
        .expect("vote request")
        .status()
        .as_u16()
}

/// Two clusters that share a secret (a reused address, a wrong `cluster
/// add`): adding a node of the other cluster is refused and changes nothing
/// (it used to rewrite the address of the member with that id, this node
/// itself), and a Raft request from the other cluster is refused with 409.
#[test]
fn a_node_of_another_cluster_is_neither_added_nor_obeyed() {
    let a = locker_tests::Cluster::start(1);
    let b = locker_tests::Cluster::start(1);
    let (peer_a, peer_b) = (a.node(1).peer_addr.clone(), b.node(1).peer_addr.clone());
    let held = locker_tests::api::acquire(&b.url(1), "other/held", serde_json::json!({}));
    assert_eq!(held.status(), "SUCCESS", "{:?}", held.body);
    let (id_a, id_b) = (cluster_id_of(&peer_a), cluster_id_of(&peer_b));
    assert_ne!(id_a, id_b);
    let r = http()
        .post(format!("{}/v1/cluster/members", a.url(1)))
        .header("x-locker-cluster-secret", locker_tests::SECRET)
        .json(&serde_json::json!({"id": 1, "peer_addr": peer_b}))
        .send()
        .expect("add member");
    let code = r.status().as_u16();
    let body: serde_json::Value = r.json().unwrap_or_default();
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (400, Some("INVALID_NODE")),
        "{body}"
    );
    assert!(body.to_string().contains(&id_b), "{body}");
    let members = get(&format!("{}/v1/cluster", a.url(1)));
    assert!(
        members.body.to_string().contains(&peer_a),
        "{:?}",
        members.body
    );
    assert!(
        !members.body.to_string().contains(&peer_b),
        "{:?}",
        members.body
    );
    assert_eq!(
        vote_from(&peer_b, &id_a),
        409,
        "a vote from another cluster"
    );
    // Its own cluster's id passes the check (the junk body is then refused).
    assert_eq!(vote_from(&peer_b, &id_b), 400);
    let still = locker_tests::api::read(&b.url(1), "other/held");
    assert_eq!(still.body["locked"], true, "{:?}", still.body);
}
