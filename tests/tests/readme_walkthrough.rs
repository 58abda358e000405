//! The README's curl walkthrough, run verbatim: every ```bash block of the
//! README against a node started as the README says (no flags, port 7070).

use std::process::{Command, Stdio};
use std::time::Duration;

use locker_tests::{bin, eventually, get};

fn blocks(readme: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = readme;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").unwrap_or(body.len());
        out.push(body[..end].to_string());
        rest = &body[end..];
    }
    out
}

fn run(script: &str) -> String {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("bash");
    assert!(out.status.success(), "walkthrough block failed:\n{script}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_readme_walkthrough_works_verbatim() {
    if std::net::TcpStream::connect("127.0.0.1:7070").is_ok() {
        panic!("port 7070 is taken: stop the local locker-node before running this test");
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README");
    let bash = blocks(&readme, "bash");
    assert!(bash.len() >= 3, "expected the walkthrough's bash blocks");

    // "cargo run --release -p locker-node" with no flags, in a scratch directory.
    let dir = tempfile::tempdir().expect("dir");
    let mut single = Command::new(bin("locker-node"))
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .expect("node");
    eventually(Duration::from_secs(20), "the single node", || {
        (get("http://127.0.0.1:7070/readyz").code == 200).then_some(())
    });
    let locks = run(&bash[0]);
    assert_eq!(
        locks.matches("\"status\":\"SUCCESS\"").count(),
        2,
        "{locks}"
    );
    assert!(
        locks.contains("SOMEONE_ELSE_HOLDS_LOCK") && locks.contains("\"locked\":true"),
        "{locks}"
    );
    let process = run(&bash[1]);
    assert!(process.contains("\"locked\":false"), "{process}");
    assert!(process.contains("NO_RUNNING_PROCESS"), "{process}");
    assert!(dir.path().join("data").is_dir(), "data goes to ./data");
    let _ = single.kill();
    let _ = single.wait();

    // The 3-node cluster block, with the debug binary in place of the release one.
    let shell = blocks(&readme, "shell");
    let start = shell
        .iter()
        .find(|b| b.contains("--initial-cluster"))
        .expect("cluster block");
    let start = start
        .replace("cargo build --release -p locker-node", "true")
        .replace(
            "./target/release/locker-node",
            &bin("locker-node").display().to_string(),
        )
        .replace(" &\n", " >/dev/null 2>&1 & echo $! >> pids\n");
    run(&format!("cd {} && {start}", dir.path().display()));
    let pids = std::fs::read_to_string(dir.path().join("pids")).unwrap_or_default();
    let result = std::panic::catch_unwind(|| {
        eventually(Duration::from_secs(30), "the 3-node cluster", || {
            (1..=3)
                .all(|i| get(&format!("http://127.0.0.1:707{i}/readyz")).code == 200)
                .then_some(())
        });
        let cluster = run(&bash[2]);
        assert!(
            cluster.contains("\"node_id\":2") && cluster.contains("\"status\":\"SUCCESS\""),
            "{cluster}"
        );
    });
    for pid in pids.split_whitespace() {
        let _ = Command::new("kill").arg("-9").arg(pid).status();
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
