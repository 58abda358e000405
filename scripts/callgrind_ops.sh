#!/usr/bin/env bash
# Instructions per operation of one node, counted by callgrind: a repeatable
# measure of the node's CPU cost per request on a shared, noisy machine
# (wall-clock figures swing with the load; instruction counts do not: two
# runs of the same build agree within 1%).
#
#   scripts/callgrind_ops.sh NODE_BIN JEPSEN_BIN [WORKLOAD] [CLIENTS]
#
# Starts NODE_BIN as a single-node cluster under valgrind, warms it up for
# 5 s with `JEPSEN_BIN bench --endpoints` (WORKLOAD, default uncontended;
# CLIENTS, default 16), zeroes the counters, runs the workload for 20 s and
# prints the instructions executed by the node divided by the operations the
# benchmark completed. Needs valgrind (apt-get install valgrind).
set -euo pipefail
node_bin=$1
jepsen_bin=$2
workload=${3:-uncontended}
clients=${4:-16}
dir=$(mktemp -d)
trap 'kill "$vg" 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$((20000 + RANDOM % 5000))
valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$node_bin" \
  --id 1 --data-dir "$dir/data" --client-addr "127.0.0.1:$port" \
  --peer-addr "127.0.0.1:$((port + 5000))" >"$dir/node.log" 2>&1 &
vg=$!
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 1
done
run() {
  "$jepsen_bin" bench --endpoints "http://127.0.0.1:$port" --systems locker \
    --workloads "$workload" --concurrency "$clients" --duration "$1" \
    --processes 500 --out "$dir/$2"
}
echo "warming up (5 s)" >&2
run 5 warm >"$dir/warm.log" 2>&1
callgrind_control -z "$vg" >/dev/null
echo "measuring (20 s)" >&2
run 20 run >"$dir/run.log" 2>&1
callgrind_control -d "$vg" >/dev/null
sleep 2
ops_per_s=$(grep -m1 "clients locker" "$dir/run.log" | awk '{print $5}')
ir=$(callgrind_annotate "$dir/cg.out.1" 2>/dev/null | grep -m1 "PROGRAM TOTALS" |
  awk '{gsub(",", "", $1); print $1}')
python3 -c "import sys; ops=float(sys.argv[1])*20; ir=float(sys.argv[2]); \
print('%s %s clients: %.0f ops in 20 s under valgrind, %.3g instructions, %.0f per op' \
% (sys.argv[3], sys.argv[4], ops, ir, ir/ops))" "$ops_per_s" "$ir" "$workload" "$clients"
