#!/usr/bin/env bash
# A rolling upgrade from an older release to this tree, with clients at work:
# builds REV's locker-node, then runs the ignored test
# `a_rolling_upgrade_from_the_previous_release_...` of
# tests/tests/rolling_restart.rs with LOCKER_OLD_NODE_BIN pointing at it.
#
#   scripts/mixed_version.sh [REV] [-- TEST ARGS]
#
# REV defaults to a7a0d81, the last release (the main head of the stop that
# landed with CI passing before this one; see docs/operations.md, "Rolling
# restart and upgrade"). It is built once, in a detached worktree removed
# afterwards, with a target directory kept for the next run
# ($LOCKER_OLD_TARGET_DIR, default target/mixed-version); the binary is kept
# as target/mixed-version/locker-node-<commit>, and not built again.
# This tree's binaries are built in $CARGO_TARGET_DIR (default target/).
# Not part of CI: it costs a second full build. Set CARGO_BUILD_JOBS to
# bound the builds' parallelism.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REV=a7a0d81
if [ $# -gt 0 ] && [ "$1" != -- ]; then
  REV=$1
  shift
fi
[ "${1:-}" = -- ] && shift

SHA=$(git -C "$ROOT" rev-parse --verify "$REV^{commit}")
CACHE=$ROOT/target/mixed-version
OLD_TARGET=${LOCKER_OLD_TARGET_DIR:-$CACHE}
OLD_BIN=$CACHE/locker-node-$SHA
mkdir -p "$CACHE"

if [ ! -x "$OLD_BIN" ]; then
  SRC=$(mktemp -d "${TMPDIR:-/tmp}/locker-old-XXXXXX")
  rmdir "$SRC"
  trap 'git -C "$ROOT" worktree remove --force "$SRC" 2>/dev/null || rm -rf "$SRC"' EXIT
  echo "==> building locker-node of $REV ($SHA) in $SRC"
  git -C "$ROOT" worktree add --detach "$SRC" "$SHA" >/dev/null
  (cd "$SRC" && CARGO_TARGET_DIR=$OLD_TARGET cargo build --bins -p locker-node)
  cp "$OLD_TARGET/debug/locker-node" "$OLD_BIN.tmp"
  mv "$OLD_BIN.tmp" "$OLD_BIN"
fi
echo "==> old release: $OLD_BIN ($REV, $(git -C "$ROOT" log -1 --format='%h %cs' "$SHA"))"

echo "==> building this tree's locker-node and locker"
cd "$ROOT"
cargo build --bins -p locker-node -p locker-client

echo "==> rolling upgrade test"
LOCKER_OLD_NODE_BIN=$OLD_BIN cargo test -p locker-tests --test rolling_restart -- \
  --ignored --exact \
  a_rolling_upgrade_from_the_previous_release_without_a_failed_call_a_lost_lock_or_an_interrupted_job \
  --nocapture "$@"
