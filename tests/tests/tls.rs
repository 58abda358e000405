//! TLS on both ports, against real nodes: a CA, node and client
//! certificates made at test time (rcgen); HTTPS through the `locker` CLI and
//! the Rust library; plain HTTP, unverified servers, missing or foreign
//! client certificates and foreign peers refused; SIGHUP reloads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use locker_client::{AcquireRequest, Client, ClientOptions, LockStatus, TlsOptions};
use locker_proto::{ClusterAnswer, DigestAnswer, LockAnswer};
use locker_tests::{bin, eventually, Cluster, NodeProc, SECRET};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    /// A certificate for 127.0.0.1 and localhost, good for serving and as
    /// a client certificate: (certificate PEM, key PEM, certificate DER).
    fn issue(&self, name: &str, serial: u64) -> (String, String, Vec<u8>) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
            .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// The files of one test: a CA, a node certificate, a client certificate,
/// and a second, unrelated CA with a certificate of its own.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    node_der: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("dir");
        let ca = Ca::new("locker test CA");
        let other = Ca::new("another CA");
        let (node, node_key, node_der) = ca.issue("node", 1);
        let (client, client_key, _) = ca.issue("client", 2);
        let (stranger, stranger_key, _) = other.issue("stranger", 3);
        let pki = Pki { dir, ca, node_der };
        for (name, pem) in [
            ("ca.pem", pki.ca.cert.pem()),
            ("node.pem", node),
            ("node-key.pem", node_key),
            ("client.pem", client),
            ("client-key.pem", client_key),
            ("other-ca.pem", other.cert.pem()),
            ("stranger.pem", stranger),
            ("stranger-key.pem", stranger_key),
        ] {
            std::fs::write(pki.path(name), pem).expect("write");
        }
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Client port TLS (`client_ca`: also require client certificates) and
    /// peer mutual TLS, all with this PKI's node certificate.
    fn node_flags(&self, client_ca: bool) -> Vec<String> {
        let mut flags = vec![
            "--tls-cert".to_string(),
            self.arg("node.pem"),
            "--tls-key".into(),
            self.arg("node-key.pem"),
            "--peer-tls-cert".into(),
            self.arg("node.pem"),
            "--peer-tls-key".into(),
            self.arg("node-key.pem"),
            "--peer-tls-ca".into(),
            self.arg("ca.pem"),
        ];
        if client_ca {
            flags.extend(["--tls-client-ca".to_string(), self.arg("ca.pem")]);
        }
        flags
    }

    /// An HTTPS client trusting `ca` (none: no root at all), presenting
    /// the certificate `identity` (file name prefix) if given.
    fn https(&self, ca: Option<&str>, identity: Option<&str>) -> reqwest::blocking::Client {
        let mut b = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .tls_built_in_root_certs(false);
        if let Some(ca) = ca {
            let pem = std::fs::read(self.path(ca)).expect("ca");
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("ca pem"));
        }
        if let Some(id) = identity {
            let mut pem = std::fs::read(self.path(&format!("{id}.pem"))).expect("cert");
            pem.extend(std::fs::read(self.path(&format!("{id}-key.pem"))).expect("key"));
            b = b.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
        }
        b.build().expect("client")
    }

    /// The CLI with this PKI's CA and client certificate.
    fn locker(&self, endpoint: &str) -> Command {
        let mut cmd = Command::new(bin("locker"));
        cmd.args(["--endpoints", endpoint, "--timeout-ms", "5000"])
            .env("LOCKER_CA_CERT", self.path("ca.pem"))
            .env("LOCKER_CLIENT_CERT", self.path("client.pem"))
            .env("LOCKER_CLIENT_KEY", self.path("client-key.pem"));
        cmd
    }

    /// The library's client for `endpoint` with these TLS files.
    fn library(&self, endpoint: &str, tls: TlsOptions) -> Client {
        Client::new(ClientOptions {
            endpoints: vec![endpoint.to_string()],
            failover_timeout_ms: 3_000,
            tls,
            ..Default::default()
        })
        .expect("client")
    }

    fn library_tls(&self) -> TlsOptions {
        TlsOptions {
            ca_cert: Some(self.path("ca.pem")),
            client_cert: Some(self.path("client.pem")),
            client_key: Some(self.path("client-key.pem")),
        }
    }
}

fn https_url(n: &NodeProc) -> String {
    format!("https://{}", n.client_addr)
}

/// Waits until every running node answers /readyz over HTTPS and the leader
/// serves a read; returns the leader.
fn wait_ready_https(c: &Cluster, http: &reqwest::blocking::Client, ids: &[u64]) -> u64 {
    let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(Duration::from_secs(30), "a ready TLS cluster", || {
            for id in ids {
                let url = format!("{}/readyz", https_url(c.node(*id)));
                if http.get(url).send().ok()?.status() != 200 {
                    return None;
                }
            }
            let url = format!("{}/v1/cluster", https_url(c.node(ids[0])));
            let leader = http
                .get(url)
                .send()
                .ok()?
                .json::<ClusterAnswer>()
                .ok()?
                .leader_id?;
            let probe = format!("{}/v1/locks/__ready_probe", https_url(c.node(leader)));
            (http.get(probe).send().ok()?.status() == 200).then_some(leader)
        })
    }));
    match ready {
        Ok(leader) => leader,
        Err(e) => {
            c.print_log_tails();
            std::panic::resume_unwind(e);
        }
    }
}

/// Opens a TLS connection to `addr` trusting `ca` and presenting `identity`
/// (file name prefix) if given, and sends `GET /healthz`. Returns the
/// server's certificate and the answer's status line, or the TLS or IO
/// error.
fn raw_tls(
    pki: &Pki,
    addr: &str,
    ca: &str,
    identity: Option<&str>,
) -> Result<(Vec<u8>, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path(ca)).expect("ca") {
        roots.add(cert.expect("ca pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let certs = CertificateDer::pem_file_iter(pki.path(&format!("{id}.pem")))
                .expect("cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("cert pem");
            let key =
                PrivateKeyDer::from_pem_file(pki.path(&format!("{id}-key.pem"))).expect("key");
            builder.with_client_auth_cert(certs, key).expect("identity")
        }
    };
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("connection");
    let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match tls.read(&mut buf) {
            Ok(0) => return Err("closed without an answer".into()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
    let cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&answer);
    Ok((cert, text.lines().next().unwrap_or("").to_string()))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn args(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// Three nodes with HTTPS on the client port (client certificates
/// required) and mutual TLS between them form a cluster and serve locks
/// through the CLI and the library, followers forwarding over TLS.
#[test]
fn a_tls_cluster_serves_locks_over_https_through_the_cli_and_the_library() {
    let pki = Pki::new();
    let flags = pki.node_flags(true);
    let mut c = Cluster::configure(3, &args(&flags));
    for id in 1..=3 {
        c.restart(id);
    }
    let http = pki.https(Some("ca.pem"), Some("client"));
    let leader = wait_ready_https(&c, &http, &[1, 2, 3]);
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let other = (1..=3)
        .find(|id| *id != leader && *id != follower)
        .expect("a third");

    // The CLI through a follower: forwarded to the leader over TLS.
    let out = pki
        .locker(&https_url(c.node(follower)))
        .args(["--json", "acquire", "cli-key", "--ttl-ms", "60000"])
        .output()
        .expect("locker");
    assert!(
        out.status.success(),
        "locker acquire: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: LockAnswer = serde_json::from_slice(&out.stdout).expect("json answer");
    assert_eq!(got.status, LockStatus::Success);

    // `locker run` (the library's Locker, its reporter thread included).
    let out = pki
        .locker(&https_url(c.node(other)))
        .args([
            "run",
            "run-key",
            "--",
            "sh",
            "-c",
            "echo ran under the lock",
        ])
        .output()
        .expect("locker run");
    assert!(
        out.status.success(),
        "locker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ran under the lock"));

    // The library's Client through the third node.
    let client = pki.library(&https_url(c.node(other)), pki.library_tls());
    let rt = runtime();
    let req = AcquireRequest {
        ttl_ms: Some(60_000),
        ..Default::default()
    };
    let got = rt
        .block_on(client.acquire("lib-key", &req))
        .expect("library acquire");
    assert_eq!(got.status, LockStatus::Success);
    let held = rt
        .block_on(client.read_lock("cli-key"))
        .expect("library read");
    assert!(
        held.is_some(),
        "the CLI's lock is visible through the library"
    );
    assert_replicas_agree(&c, &http);
}

/// The peer port takes no TLS connection without a certificate from the
/// peer CA: a node with another CA's certificate (trusting the right CA
/// itself) cannot join or replicate, while the two others form the cluster;
/// a raw connection without a client certificate, or with a foreign one,
/// gets no answer.
#[test]
fn a_peer_without_a_certificate_from_the_peer_ca_cannot_join() {
    let pki = Pki::new();
    let flags = pki.node_flags(false);
    let mut c = Cluster::configure(3, &args(&flags));
    {
        let n3 = c.node_mut(3);
        n3.set_flag("--peer-tls-cert", Some(&pki.arg("stranger.pem")));
        n3.set_flag("--peer-tls-key", Some(&pki.arg("stranger-key.pem")));
    }
    for id in 1..=3 {
        c.restart(id);
    }
    let http = pki.https(Some("ca.pem"), None);
    let leader = wait_ready_https(&c, &http, &[1, 2]);
    let base = https_url(c.node(leader));
    for i in 0..5 {
        let r = http
            .post(format!("{base}/v1/locks/k{i}/acquire"))
            .json(&serde_json::json!({"ttl_ms": 60_000}))
            .send()
            .expect("acquire");
        assert_eq!(r.status(), 200);
    }
    let view = |id: u64| -> ClusterAnswer {
        let url = format!("{}/v1/cluster", https_url(c.node(id)));
        http.get(url)
            .send()
            .expect("cluster")
            .json()
            .expect("cluster json")
    };
    let committed = view(leader).committed_index.unwrap_or(0);
    assert!(
        committed >= 5,
        "the two good nodes commit writes ({committed})"
    );
    std::thread::sleep(Duration::from_secs(3));
    let stranger = view(3);
    assert_eq!(stranger.leader_id, None, "node 3 never hears from a leader");
    assert!(
        stranger.last_log_index.unwrap_or(0) == 0,
        "node 3 got no entries: {stranger:?}"
    );
    let ready = http
        .get(format!("{}/readyz", https_url(c.node(3))))
        .send()
        .expect("readyz");
    assert_eq!(ready.status(), 503, "node 3 is not a ready member");

    let peer = c.node(leader).peer_addr.clone();
    let no_cert = raw_tls(&pki, &peer, "ca.pem", None).map(|a| a.1);
    assert!(no_cert.is_err(), "no client certificate: {no_cert:?}");
    let foreign = raw_tls(&pki, &peer, "ca.pem", Some("stranger")).map(|a| a.1);
    assert!(foreign.is_err(), "a foreign certificate: {foreign:?}");
    let good = raw_tls(&pki, &peer, "ca.pem", Some("client")).expect("a peer CA certificate");
    assert!(good.1.starts_with("HTTP/1.1 "), "{good:?}");
}

/// The client port with --tls-client-ca: HTTPS only, the server verified
/// against the CA, and only clients with a certificate from that CA served.
#[test]
fn the_client_port_refuses_plain_http_unverified_servers_and_foreign_clients() {
    let pki = Pki::new();
    let flags = pki.node_flags(true);
    let mut c = Cluster::configure(1, &args(&flags));
    c.restart(1);
    let good = pki.https(Some("ca.pem"), Some("client"));
    wait_ready_https(&c, &good, &[1]);
    let n = c.node(1);
    let url = format!("{}/v1/locks/k", https_url(n));

    let plain = locker_tests::http()
        .get(format!("http://{}/healthz", n.client_addr))
        .send();
    assert!(plain.is_err(), "plain HTTP is not answered: {plain:?}");

    let no_ca = pki.https(None, Some("client")).get(&url).send();
    let e = no_ca.expect_err("a client without the CA");
    assert!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
    let out = Command::new(bin("locker"))
        .args([
            "--endpoints",
            &https_url(n),
            "--timeout-ms",
            "1000",
            "show",
            "k",
        ])
        .env_remove("LOCKER_CA_CERT")
        .env("LOCKER_CLIENT_CERT", pki.path("client.pem"))
        .env("LOCKER_CLIENT_KEY", pki.path("client-key.pem"))
        .output()
        .expect("locker");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UnknownIssuer"),
        "the CLI names the cause: {stderr}"
    );

    let no_cert = pki.https(Some("ca.pem"), None).get(&url).send();
    assert!(
        no_cert.is_err(),
        "a client without a certificate: {no_cert:?}"
    );
    let foreign = pki.https(Some("ca.pem"), Some("stranger")).get(&url).send();
    assert!(
        foreign.is_err(),
        "a certificate from another CA: {foreign:?}"
    );
    let rt = runtime();
    let no_cert_lib = pki.library(
        &https_url(n),
        TlsOptions {
            ca_cert: Some(pki.path("ca.pem")),
            ..Default::default()
        },
    );
    assert!(rt.block_on(no_cert_lib.read_lock("k")).is_err());

    let ok = good.get(&url).send().expect("a verified client");
    assert_eq!(ok.status(), 200);
    let lib = pki.library(&https_url(n), pki.library_tls());
    assert_eq!(rt.block_on(lib.read_lock("k")).expect("library read"), None);
    assert_healthcheck_speaks_tls(&pki, n, &flags);
}

/// The container health check speaks TLS with the node's own flags, and
/// accepts no other certificate than the node's.
fn assert_healthcheck_speaks_tls(pki: &Pki, n: &NodeProc, flags: &[String]) {
    let healthcheck = |flags: &[String]| {
        Command::new(bin("locker-node"))
            .args(["--client-addr", &n.client_addr])
            .args(flags)
            .arg("healthcheck")
            .status()
            .expect("healthcheck")
            .success()
    };
    assert!(healthcheck(flags), "healthcheck over TLS");
    let mut other_cert = flags.to_vec();
    other_cert[1] = pki.arg("stranger.pem");
    other_cert[3] = pki.arg("stranger-key.pem");
    assert!(
        !healthcheck(&other_cert),
        "healthcheck accepted another certificate"
    );
}

/// SIGHUP: new connections get the renewed certificate on both ports; a
/// broken file on a later reload keeps the renewed one and logs an error.
#[test]
fn sighup_serves_a_renewed_certificate_to_new_connections() {
    let pki = Pki::new();
    let flags = pki.node_flags(false);
    let mut c = Cluster::configure(1, &args(&flags));
    c.restart(1);
    let http = pki.https(Some("ca.pem"), None);
    wait_ready_https(&c, &http, &[1]);
    let (client_addr, peer_addr) = (c.node(1).client_addr.clone(), c.node(1).peer_addr.clone());
    let served = |addr: &str| {
        raw_tls(&pki, addr, "ca.pem", Some("client"))
            .expect("TLS")
            .0
    };
    assert_eq!(served(&client_addr), pki.node_der);
    assert_eq!(served(&peer_addr), pki.node_der);

    let (renewed, renewed_key, renewed_der) = pki.ca.issue("node renewed", 10);
    std::fs::write(pki.path("node.pem"), renewed).expect("write");
    std::fs::write(pki.path("node-key.pem"), renewed_key).expect("write");
    hangup(c.node(1));
    eventually(Duration::from_secs(10), "the renewed certificate", || {
        (served(&client_addr) == renewed_der && served(&peer_addr) == renewed_der).then_some(())
    });
    let ok = http
        .get(format!("https://{client_addr}/healthz"))
        .send()
        .expect("healthz");
    assert_eq!(ok.status(), 200);

    std::fs::write(pki.path("node.pem"), "not a certificate").expect("write");
    hangup(c.node(1));
    eventually(
        Duration::from_secs(10),
        "the reload error in the log",
        || {
            c.node(1)
                .log_text()
                .contains("cannot reload TLS certificates")
                .then_some(())
        },
    );
    assert_eq!(
        served(&client_addr),
        renewed_der,
        "the broken file changed nothing"
    );
    assert_eq!(served(&peer_addr), renewed_der);
}

fn hangup(n: &NodeProc) {
    let pid = n.pid().expect("running") as i32;
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    unsafe {
        libc::kill(pid, libc::SIGHUP);
    }
}

/// Replica digests over HTTPS (the harness's own comparison speaks plain
/// HTTP): every node reaches the same applied index with the same digest.
fn assert_replicas_agree(c: &Cluster, http: &reqwest::blocking::Client) {
    let digest = |n: &NodeProc| -> Option<DigestAnswer> {
        let url = format!("{}/v1/digest", https_url(n));
        http.get(url).send().ok()?.json().ok()
    };
    eventually(Duration::from_secs(10), "replicas to agree", || {
        let all: Vec<DigestAnswer> = c.nodes.iter().map(digest).collect::<Option<_>>()?;
        let first = all.first()?;
        all.iter()
            .all(|d| (d.applied_index, &d.digest) == (first.applied_index, &first.digest))
            .then_some(())
    });
}

/// The idle timeout covers the TLS handshake: connections that never start
/// one are closed, so they cannot hold the client port's connection slots.
#[test]
fn connections_that_never_complete_a_handshake_are_closed() {
    let pki = Pki::new();
    let mut flags = pki.node_flags(false);
    flags.extend(["--idle-timeout-ms", "1000", "--max-connections", "4"].map(String::from));
    let mut c = Cluster::configure(1, &args(&flags));
    c.restart(1);
    let http = pki.https(Some("ca.pem"), None);
    wait_ready_https(&c, &http, &[1]);
    let addr = c.node(1).client_addr.clone();
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        // Closed or reset by the node; a read timeout means it stayed open.
        let read = s.read(&mut buf);
        let closed = matches!(&read, Ok(0))
            || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(
            closed,
            "a silent connection stays open past the idle timeout: {read:?}"
        );
    }
    let ok = http
        .get(format!("https://{addr}/healthz"))
        .send()
        .expect("healthz");
    assert_eq!(ok.status(), 200, "the slots are free again");
}

/// TLS files and flags are checked at start: exit 2 with a message naming
/// the flag at fault, before anything is served.
#[test]
fn bad_tls_files_and_flags_are_refused_at_start() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("dir");
    let start = |extra: &[String]| {
        let client = format!("127.0.0.1:{}", locker_tests::free_port());
        let peer = format!("127.0.0.1:{}", locker_tests::free_port());
        let out = Command::new(bin("locker-node"))
            .args(["--data-dir", &data.path().display().to_string()])
            .args(["--client-addr", &client, "--peer-addr", &peer])
            .args(extra)
            .output()
            .expect("locker-node");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let flags = |cert: &str, key: &str| -> Vec<String> {
        vec![
            "--tls-cert".into(),
            pki.arg(cert),
            "--tls-key".into(),
            pki.arg(key),
        ]
    };
    let (code, err) = start(&flags("missing.pem", "node-key.pem"));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--tls-cert") && err.contains("missing.pem"),
        "{err}"
    );
    let (code, err) = start(&flags("node.pem", "client-key.pem"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is not the key of --tls-cert"), "{err}");
    let (code, err) = start(&flags("node.pem", "ca.pem"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-key"), "{err}");

    // Client TLS in a multi-node cluster without peer TLS: followers could
    // not verify the leader's client port when forwarding.
    let mut multi = flags("node.pem", "node-key.pem");
    multi.extend(["--join", "--cluster-secret", SECRET].map(String::from));
    let (code, err) = start(&multi);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("needs peer TLS"), "{err}");
    assert!(
        std::fs::read_dir(data.path()).map_or(0, |d| d.count()) == 0,
        "nothing was written before the refusal"
    );
}
