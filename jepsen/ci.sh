#!/usr/bin/env bash
# The CI form of the fault-injection suite (issues 5, 9 and 14), about 6 minutes:
#
#  (a) a short real run: 3 nodes, kill + pause + partition, workloads
#      mutex,set,takeover (HTTP and Rust client); it must be valid;
#  (b) the negative control, in its own run: the unfenced twin of the
#      protected set must lose acknowledged writes under client pauses (and
#      the fenced set, under the same faults, must not). If the unfenced set
#      survives, the faults did not bite, and that fails the suite too;
#  (c) `locker run` jobs (workload run) with a client cut off from the
#      cluster (client-cut) and holders killed with SIGKILL: no two jobs of
#      a key alive at once, takeovers in bound; it must be valid, and its
#      unlocked twin (run-unlocked) must be judged invalid;
#  (d) crash points armed on random nodes: valid, with at least one crash;
#  (e) one mutation run (no-takeover-shift under clock-leader-ahead): the
#      lease checker must judge it invalid;
#  (f) rolling restarts (SIGTERM, start, /readyz; the leader last): valid,
#      every stop exit 0, with at least one round done.
#
# Usage: jepsen/ci.sh [NODE_BIN [JEPSEN_BIN [LOCKER_BIN]]]
#   defaults: target/debug/locker-node target/debug/locker-jepsen
#   target/debug/locker (from the repository root). Output under
#   ${JEPSEN_OUT:-target/jepsen-ci}/{short,control,run}.
# Network namespaces are used when running as root with `ip netns` and
# iptables working; otherwise plain 127.0.0.1 processes (`--hosts local`),
# where partitions are skipped (JEPSEN_HOSTS=local forces that mode).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
# Relative arguments are taken relative to where we were called from, the
# defaults relative to the repository root.
node_bin="$(abs "${1:-$root/target/debug/locker-node}")"
jepsen_bin="$(abs "${2:-$root/target/debug/locker-jepsen}")"
locker_bin="$(abs "${3:-$root/target/debug/locker}")"
out_base="$(abs "${JEPSEN_OUT:-$root/target/jepsen-ci}")"

say() { printf '[jepsen-ci %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

for b in "$node_bin" "$jepsen_bin" "$locker_bin"; do
  if [ ! -x "$b" ]; then
    say "missing binary $b (cargo build -p locker-node -p locker-jepsen -p locker-client)"
    exit 3
  fi
done

# Namespaces if we can make one (and run iptables inside it); it is removed
# again at once. JEPSEN_HOSTS=local forces plain processes.
hosts=local
if [ "${JEPSEN_HOSTS:-auto}" != local ] && [ "$(id -u)" = 0 ] &&
  command -v ip >/dev/null && command -v iptables >/dev/null; then
  probe="lkjci$$-probe"
  if ip netns add "$probe" 2>/dev/null; then
    if ip netns exec "$probe" iptables -w 5 -L INPUT -n >/dev/null 2>&1; then
      hosts=netns
    fi
    ip netns del "$probe" 2>/dev/null || true
  fi
fi
if [ "$hosts" = netns ]; then
  short_nemesis="kill,pause,partition"
  run_nemesis="client-cut"
  say "hosts: network namespaces"
else
  short_nemesis="kill,pause"
  run_nemesis="none"
  say "NOTE: not root or no working 'ip netns'/iptables: running on 127.0.0.1 (--hosts local);"
  say "NOTE: the partition and client-cut nemeses are skipped in this mode"
fi

mkdir -p "$out_base"
short="$out_base/short"
control="$out_base/control"
runs="$out_base/run"
rm -rf "$short" "$control" "$runs"

# Prints the one-line verdicts of a run.
verdicts() {
  local dir="$1"
  if [ -f "$dir/results.json" ]; then
    grep -E '^  "verdict"' "$dir/results.json" |
      sed -E "s/^  \"verdict\": \"(.*)\",?\$/[$(basename "$dir")] \1/"
  else
    say "$(basename "$dir"): no results.json"
  fi
}

# Runs one test, bounded in time; SIGINT lets the harness tear down cleanly.
run() {
  local dir="$1"
  shift
  local rc=0
  mkdir -p "$dir"
  timeout -s INT -k 30 240 "$jepsen_bin" test --node-bin "$node_bin" --hosts "$hosts" \
    --out "$dir" "$@" >"$dir/run.log" 2>&1 || rc=$?
  sed 's/^/    /' "$dir/run.log"
  return "$rc"
}

failed=0
started=$SECONDS

say "(a) short run: 3 nodes, nemesis $short_nemesis, workloads mutex,set,takeover, 60 s + 15 s recovery"
rc=0
run "$short" --nodes 3 --nemesis "$short_nemesis" --workload mutex,set,takeover \
  --time-limit 60 --recovery 15 --seed 7 || rc=$?
verdicts "$short"
if [ "$rc" -eq 0 ]; then
  say "(a) VALID"
else
  say "(a) FAILED (exit $rc: 1 invalid, 2 unknown, 3 harness error); see $short/report.html and $short/nodes/*/node.log"
  failed=1
fi

# Client pauses (a set client stalls 3x its lease inside its critical
# section) are what the unfenced set cannot survive; only the two set
# workloads run, so every stall lands in one of them, and faults come every
# 1-2 s for 5-6 s: about five client pauses in 40 s with this seed.
say "(b) negative control: 3 nodes, nemesis client-pause,pause-leader, workloads set-unfenced,set, 40 s + 5 s recovery"
rc=0
run "$control" --nodes 3 --nemesis client-pause,pause-leader --workload set-unfenced,set \
  --time-limit 40 --recovery 5 --interval 1,2 --fault-duration 5,6 --seed 3 \
  --require-negative-control-failure || rc=$?
verdicts "$control"
bit=no
if [ -f "$control/results.json" ] && grep -qE '^  "negative_control_failed": true' "$control/results.json"; then
  bit=yes
fi
if [ "$rc" -eq 0 ] && [ "$bit" = yes ]; then
  say "(b) the unfenced twin lost acknowledged writes as expected and the fenced set did not: the faults bite"
else
  if [ "$bit" != yes ]; then
    say "(b) FAILED: the unfenced twin did not lose writes: the pause nemesis did not bite"
  else
    say "(b) FAILED (exit $rc): the fenced checkers did not all pass under the same faults"
  fi
  say "    see $control/report.html"
  failed=1
fi

# `locker run` jobs on 3 keys x 3 runners, each runner in its own network
# namespace; the nemesis cuts one runner (preferably the one whose job is
# running) off from every node for 5-8 s, and runners kill holders with
# SIGKILL now and then. The unlocked twin runs beside it and must overlap.
say "(c) run workload: 3 nodes, nemesis $run_nemesis, workloads run,run-unlocked, 60 s + 10 s recovery"
rc=0
run "$runs" --nodes 3 --nemesis "$run_nemesis" --workload run,run-unlocked --locker-bin "$locker_bin" \
  --time-limit 60 --recovery 10 --interval 3,5 --fault-duration 5,8 --seed 5 \
  --require-negative-control-failure || rc=$?
verdicts "$runs"
if [ "$rc" -eq 0 ]; then
  say "(c) VALID: never two jobs of a key at once, takeovers in bound; the unlocked twin overlapped"
else
  say "(c) FAILED (exit $rc): see $runs/results.json (one-job-at-a-time) and $runs/jobs/"
  failed=1
fi

# (d) crash points (node built with --features locker-node/failpoints): a
# random failpoint armed on a random node aborts it at a durable step, and it
# restarts without failpoints; the run must stay valid (replicas agree too),
# and at least one node must actually have crashed, else the fault did not bite.
crash="$out_base/crash"
rm -rf "$crash"
say "(d) crash points: 3 nodes, nemesis crash-point, workloads mutex,set, 40 s + 5 s recovery"
rc=0
run "$crash" --nodes 3 --nemesis crash-point --workload mutex,set \
  --time-limit 40 --recovery 5 --interval 1,2 --fault-duration 3,4 --seed 11 || rc=$?
verdicts "$crash"
crashes=0
if [ -f "$crash/results.json" ]; then
  crashes=$(grep -c 'start crash-point .*\\"crashed\\":true' "$crash/results.json" || true)
fi
if [ "$rc" -eq 0 ] && [ "$crashes" -gt 0 ]; then
  say "(d) VALID with $crashes node crash(es) at crash points"
else
  say "(d) FAILED (exit $rc, $crashes crashes; 0 crashes: node built without failpoints?); see $crash/run.log"
  failed=1
fi

# (e) a mutation run (node built with --features locker-node/mutations): the
# node without the takeover marker's deadline shift, with a clock well ahead
# put in charge, must be judged invalid by the lease checker.
mut="$out_base/mutations"
rm -rf "$mut"
say "(e) mutation no-takeover-shift: nemesis clock-leader-ahead, 35 s + 5 s recovery; must be INVALID"
rc=0
timeout -s INT -k 30 300 "$jepsen_bin" mutations --short --only no-takeover-shift \
  --node-bin "$node_bin" --hosts "$hosts" --out "$mut" >"$mut.log" 2>&1 || rc=$?
sed 's/^/    /' "$mut.log"
if [ "$rc" -eq 0 ]; then
  say "(e) the mutated node was caught by the lease checker"
else
  say "(e) FAILED (exit $rc): see $mut/mutations.json and $mut/no-takeover-shift/"
  failed=1
fi

# (f) rolling restarts, as an operator makes them: each member in turn (the
# leader last) gets SIGTERM, must exit 0, is started again and must answer
# /readyz before the next; about two rounds in 15 s (~25 s in all).
roll="$out_base/rolling"
rm -rf "$roll"
say "(f) rolling restarts: 3 nodes, nemesis rolling-restart, workloads mutex,set, 15 s + 5 s recovery"
rc=0
run "$roll" --nodes 3 --nemesis rolling-restart --workload mutex,set \
  --time-limit 15 --recovery 5 --interval 1,2 --fault-duration 1,2 --seed 13 || rc=$?
verdicts "$roll"
rounds=0
if [ -f "$roll/results.json" ]; then
  rounds=$(grep -c 'start rolling-restart .*\\"complete\\":true' "$roll/results.json" || true)
fi
if [ "$rc" -eq 0 ] && [ "$rounds" -gt 0 ]; then
  say "(f) VALID with $rounds complete rolling restart(s), every SIGTERM ended in exit 0"
else
  say "(f) FAILED (exit $rc, $rounds complete rounds); see $roll/run.log (FINDING lines) and clean-restarts in $roll/results.json"
  failed=1
fi

say "done in $((SECONDS - started)) s; output in $out_base"
if [ "$failed" -ne 0 ]; then
  say "JEPSEN CI: FAILED"
  exit 1
fi
say "JEPSEN CI: PASSED"
