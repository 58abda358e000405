#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need,
# checks formatting and lints, builds the binaries, runs every test.
# Usage: ./scripts/test.sh            (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # iproute2 + iptables: network namespaces and partitions for the fault tests;
  # curl: the README walkthrough test; procps: pgrep/pkill; prometheus:
  # `promtool check metrics` on a node's /metrics page (tests/api_metrics.rs);
  # etcd-server + redis-server: the peers of the side-by-side benchmark;
  # jq: checks the benchmark's bench.json; gcc + libc6-dev: the power-loss
  # shim (tests/powerloss/powerloss.c), which tests/power_loss.rs and the
  # power-loss nemesis compile on first use; openssl: the certificates of the
  # hardened docker-compose variant (deploy/secure-init.sh).
  # chromium + chromium-driver: the dashboard's browser test
  # (tests/dashboard.rs drives headless Chromium through chromedriver).
  need=()
  for pkg in iproute2 iptables curl procps prometheus etcd-server redis-server jq gcc libc6-dev openssl chromium chromium-driver; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy
# cargo fuzz (libFuzzer): the toolchain here is stable, so the fuzz build
# runs with RUSTC_BOOTSTRAP=1 for the sanitizer flags it passes.
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

# The test build of the node carries crash points (`failpoints`) and the
# deliberate safety breaks the fault suite must catch (`mutations`); both are
# inert unless armed, and release images never enable them.
features=(--features locker-node/failpoints,locker-node/mutations)

step "formatting"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets "${features[@]}" -- -D warnings
# The default (release-image) feature set must lint clean too.
cargo clippy --workspace --all-targets -- -D warnings

step "building binaries"
cargo build --workspace --bins "${features[@]}"

step "tests"
# Integration tests start real clusters; two test threads keep this 2-core
# machine from starving elections.
cargo test --workspace "${features[@]}" -- --test-threads=2

step "fault injection (short form): jepsen/ci.sh"
# A ~60 s run under kill, pause and partition that must be valid, and the
# unfenced negative control that must be caught losing writes.
./jepsen/ci.sh target/debug/locker-node target/debug/locker-jepsen

step "benchmark (quick form): locker-jepsen bench --quick"
# Locker, etcd and Redis side by side for about a minute. No timing
# assertions: every output file must exist, and every system must have
# completed operations in every workload and level (the command also exits 1
# otherwise). A missing etcd or redis-server is an error, never a skip.
bench_out=target/bench-quick
rm -rf "$bench_out"
target/debug/locker-jepsen bench --quick --out "$bench_out"
for f in bench.json bench.md uncontended.svg contended.svg extend.svg keepalive.svg read.svg; do
  [ -s "$bench_out/$f" ] || { echo "benchmark: $bench_out/$f is missing or empty"; exit 1; }
done
jq -e '(.results | length) == 10
  and all(.results[]; (.systems | keys) == ["etcd", "locker", "redis"])
  and all(.results[].systems[]; .ops_per_s > 0)
  and .memory.serves_after_restart == true' "$bench_out/bench.json" >/dev/null ||
  { echo "benchmark: a system produced no throughput (see $bench_out/bench.md)"; exit 1; }

step "fuzzing (short form): cargo fuzz, 20 s per target"
# fuzz/ is a workspace of its own: request input, peer messages, stored
# records. A panic, a failed assertion or a leak is a failure.
(cd fuzz && for t in request_input peer_message stored_record; do
  RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$t" -- -max_total_time=20 -rss_limit_mb=2048
done)

if [ -x tests/docker/compose_test.sh ]; then
  step "docker compose cluster"
  ./tests/docker/compose_test.sh
fi

echo
echo "all tests passed"
