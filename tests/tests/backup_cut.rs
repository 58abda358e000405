//! A backup stream cut mid-way (a proxy, a load balancer or the network
//! giving up) must fail the `backup` tool loudly and leave nothing behind:
//! no file under the final name, no `FILE.partial`, and no other file
//! touched (an unrelated `b.partial` beside `b.json` once was: the partial
//! name replaced the extension instead of adding to it). The same proxy,
//! not cutting, passes a good backup through: the failures come from the
//! cut, not from the proxy.

use std::path::Path;
use std::process::Output;

use locker_tests::proxy::Proxy;
use locker_tests::{api, node_tool, output_text, Cluster};
use serde_json::json;

/// `locker-node backup --from FROM --out OUT`.
fn backup(from: &str, out: &Path) -> Output {
    let out = out.to_str().expect("a UTF-8 temp path");
    node_tool(&["backup", "--from", from, "--out", out])
}

/// Enough locks that the backup is streamed in many chunks.
fn populate(url: &str) {
    for i in 0..300 {
        let key = format!("cut/{i:04}/{}", "x".repeat(40));
        let r = api::acquire(
            url,
            &key,
            json!({"owner_hash": format!("{key}@h/200.1.{}", i + 1), "ttl_ms": 600_000}),
        );
        assert_eq!(r.status(), "SUCCESS", "{key}: {:?}", r.body);
    }
}

#[test]
fn a_cut_backup_stream_fails_and_leaves_no_file_behind() {
    let c = Cluster::start(1);
    let url = c.url(1);
    populate(&url);
    let dir = tempfile::tempdir().expect("temp dir");

    // Positive control: straight from the node, and through the proxy.
    let direct = dir.path().join("direct.json");
    let o = backup(&url, &direct);
    assert!(o.status.success(), "direct backup: {}", output_text(&o));
    let size = std::fs::metadata(&direct).expect("direct backup").len();
    assert!(
        size > 20_000,
        "backup too small to cut mid-way: {size} bytes"
    );
    let addr = url.trim_start_matches("http://");
    let proxy = Proxy::start(addr);
    let through = dir.path().join("through.json");
    let o = backup(&proxy.url(), &through);
    assert!(
        o.status.success(),
        "backup through the proxy: {}",
        output_text(&o)
    );
    assert_eq!(
        std::fs::read(&through).expect("read"),
        std::fs::read(&direct).expect("read"),
        "the proxy changed the backup"
    );

    // An unrelated file that shares the name's stem must survive.
    let out = dir.path().join("b.json");
    let bystander = dir.path().join("b.partial");
    std::fs::write(&bystander, b"not the backup's").expect("write bystander");
    for cut in [size / 2, size] {
        proxy.cut_answers_after(cut);
        let o = backup(&proxy.url(), &out);
        assert!(
            !o.status.success(),
            "a backup cut after {cut} of its {size}+ bytes succeeded: {}",
            output_text(&o)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("cut short"),
            "cut at {cut}: {}",
            output_text(&o)
        );
        assert!(!out.exists(), "cut at {cut}: a file under the final name");
        assert!(
            !dir.path().join("b.json.partial").exists(),
            "cut at {cut}: the partial file was left behind"
        );
        assert_eq!(
            std::fs::read(&bystander).ok().as_deref(),
            Some(&b"not the backup's"[..]),
            "cut at {cut}: an unrelated b.partial was overwritten or removed"
        );
    }
    // The node is unharmed: the same backup again, straight from it.
    let again = dir.path().join("again.json");
    let o = backup(&url, &again);
    assert!(
        o.status.success(),
        "backup after the cuts: {}",
        output_text(&o)
    );
}
