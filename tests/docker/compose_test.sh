#!/usr/bin/env bash
# The docker-compose cluster, end to end: builds the image with no registry
# (node/docker/build-offline), starts docker-compose.yml under its own project
# name, waits for health, takes a lock through node 1 and sees it through nodes
# 2 and 3, stops the leader's container and still acquires and releases
# through the others, restarts it and checks that it caught up. Everything the
# project created (containers, volumes, network) is removed at the end, also
# when a step fails.
#
# Skips (exit 0) only when no Docker engine answers.
#
#   tests/docker/compose_test.sh
#
# Environment: LOCKER_IMAGE (default locker:local), LOCKER_TEST_PROJECT
# (compose project, default lockercomposetest), LOCKER_TEST_SKIP_BUILD=1 to
# reuse an existing image.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"

export LOCKER_IMAGE="${LOCKER_IMAGE:-locker:local}"
# docker-compose.yml has no default secret: a cluster refuses a weak one.
export LOCKER_CLUSTER_SECRET="${LOCKER_CLUSTER_SECRET:-compose-test-secret-$RANDOM$RANDOM}"
project="${LOCKER_TEST_PROJECT:-lockercomposetest}"
started=$SECONDS

say() { printf '[compose-test +%03ds] %s\n' "$((SECONDS - started))" "$*"; }
fail() {
  say "FAIL: $*"
  exit 1
}

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  say "SKIP: no Docker engine answers ('docker info' failed): the docker-compose test did not run"
  exit 0
fi
if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_cmd=(docker-compose)
else
  fail "a Docker engine answers but neither 'docker compose' nor 'docker-compose' is installed"
fi
compose() { "${compose_cmd[@]}" -p "$project" -f "$root/docker-compose.yml" "$@"; }
command -v curl >/dev/null 2>&1 || fail "curl is needed"

leftovers() {
  {
    docker ps -aq --filter "label=com.docker.compose.project=$project"
    docker volume ls -q --filter "label=com.docker.compose.project=$project"
    docker network ls -q --filter "label=com.docker.compose.project=$project"
  } | sort -u
}

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ "$rc" -ne 0 ]; then
    say "a step failed: container states and recent logs follow"
    compose ps
    compose logs --no-color --tail=40
  fi
  say "tearing down (${compose_cmd[*]} -p $project down -v)"
  compose down -v --remove-orphans -t 5 >/dev/null 2>&1
  [ -z "${secure_root:-}" ] || rm -rf "$secure_root"
  if [ -n "$(leftovers)" ]; then
    say "teardown left something behind:"
    leftovers
    rc=1
  fi
  if [ "$rc" -eq 0 ]; then
    say "PASS in $((SECONDS - started))s"
  else
    say "FAILED (exit $rc) after $((SECONDS - started))s"
  fi
  exit "$rc"
}

# --- HTTP helpers: the body on stdout, the status code in $code -------------
code=
# `scheme` and `curl_opts` are read dynamically: `shttp` sets them locally.
scheme=http
curl_opts=()
http() { # METHOD PORT PATH [BODY]
  local out
  out="$(curl -sS -m 10 -o - -w '\n%{http_code}' "${curl_opts[@]}" -X "$1" "$scheme://127.0.0.1:$2$3" \
    ${4:+-H 'content-type: application/json' -d "$4"} 2>&1)" || {
    code=000
    body="$out"
    return 0
  }
  code="${out##*$'\n'}"
  body="${out%$'\n'*}"
}
# Retry a request while it answers 000 (unreachable) or 503 (no leader yet).
http_retry() { # SECONDS METHOD PORT PATH [BODY]
  local deadline=$((SECONDS + $1))
  shift
  while :; do
    http "$@"
    case "$code" in 000 | 503) ;; *) return 0 ;; esac
    [ "$SECONDS" -lt "$deadline" ] || return 0
    sleep 0.5
  done
}
expect() { # CODE SUBSTRING WHAT
  [ "$code" = "$1" ] && [[ "$body" == *"$2"* ]] ||
    fail "$3: expected HTTP $1 with $2, got HTTP $code: $body"
  say "ok: $3"
}
leader_of() { # PORT -> leader id on stdout (empty if none)
  http GET "$1" /v1/cluster
  [ "$code" = 200 ] || return 0
  sed -n 's/.*"leader_id":\([0-9][0-9]*\).*/\1/p' <<<"$body"
}
wait_healthy() { # SERVICE...
  local s id state deadline=$((SECONDS + 90))
  for s in "$@"; do
    while :; do
      id="$(compose ps -q "$s" 2>/dev/null || true)"
      state="$( [ -n "$id" ] && docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null || echo missing)"
      [ "$state" = running/healthy ] && break
      [ "$SECONDS" -lt "$deadline" ] || fail "$s is not healthy after 90s (state: $state)"
      sleep 1
    done
    say "$s is healthy"
  done
}
wait_ready() { # PORT...
  local p deadline=$((SECONDS + 60))
  for p in "$@"; do
    while http GET "$p" /readyz; [ "$code" != 200 ]; do
      [ "$SECONDS" -lt "$deadline" ] || fail "node on port $p is not ready after 60s: HTTP $code $body"
      sleep 0.5
    done
  done
  say "ready: ports $*"
}

# --- 0. a clean slate ---------------------------------------------------------
say "using ${compose_cmd[*]}, project $project, image $LOCKER_IMAGE"
say "removing leftovers of an earlier run of project $project, if any"
compose down -v --remove-orphans -t 2 >/dev/null 2>&1 || true
for p in 7071 7072 7073; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    holder="$(docker ps --filter "publish=$p" --format '{{.Names}}' | head -1)"
    fail "port $p on 127.0.0.1 is taken${holder:+ by container $holder} (a local locker-node or another compose project?): free it and rerun"
  fi
done
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. the image, without a registry ----------------------------------------
if [ "${LOCKER_TEST_SKIP_BUILD:-}" = 1 ] && docker image inspect "$LOCKER_IMAGE" >/dev/null 2>&1; then
  say "reusing image $LOCKER_IMAGE (LOCKER_TEST_SKIP_BUILD=1)"
else
  say "building $LOCKER_IMAGE with node/docker/build-offline"
  node/docker/build-offline "$LOCKER_IMAGE"
fi
static_dir="${CARGO_TARGET_DIR:-$root/target}/static/$(rustc -vV | sed -n 's/^host: //p')/release"
locker_cli="$static_dir/locker"

# --- 2. the cluster ----------------------------------------------------------
say "starting the 3-node cluster"
compose up -d --no-build
wait_healthy node1 node2 node3
wait_ready 7071 7072 7073
leader=
deadline=$((SECONDS + 30))
while :; do
  l1="$(leader_of 7071)" l2="$(leader_of 7072)" l3="$(leader_of 7073)"
  if [ -n "$l1" ] && [ "$l1" = "$l2" ] && [ "$l2" = "$l3" ]; then leader=$l1; break; fi
  [ "$SECONDS" -lt "$deadline" ] || fail "the nodes do not agree on a leader: '$l1' '$l2' '$l3'"
  sleep 0.5
done
say "all three nodes see leader node$leader"
http GET 7071 /v1/cluster
for i in 1 2 3; do
  [[ "$body" == *"\"client_addr\":\"node$i:7070\""* ]] || fail "node$i is not a member as node$i:7070: $body"
done
say "ok: members advertise node1..node3"

# --- 3. a lock through node 1, seen through nodes 2 and 3 --------------------
owner_a='compose-test-a@ci/1.1700000000000000000.1'
owner_b='compose-test-b@ci/1.1700000000000000000.2'
owner_c='compose-test-c@ci/1.1700000000000000000.3'
http_retry 15 POST 7071 /v1/locks/compose-test-a/acquire "{\"owner_hash\":\"$owner_a\",\"ttl_ms\":120000}"
expect 200 '"status":"SUCCESS"' "acquire compose-test-a through node1"
for p in 7072 7073; do
  http GET "$p" /v1/locks/compose-test-a
  expect 200 "\"owner_hash\":\"$owner_a\"" "compose-test-a held as seen through port $p"
done
http POST 7073 /v1/locks/compose-test-a/acquire '{"owner_hash":"compose-test-a@other/2.1700000000000000000.1"}'
expect 409 SOMEONE_ELSE_HOLDS_LOCK "a second owner is refused through node3"

# --- 4. stop the leader; the other two carry on ------------------------------
survivors=()
for i in 1 2 3; do [ "$i" = "$leader" ] || survivors+=("$i"); done
pa="707${survivors[0]}" pb="707${survivors[1]}"
say "stopping the leader's container (node$leader)"
compose stop -t 10 "node$leader" >/dev/null 2>&1
[ -z "$(docker ps -q --filter "id=$(compose ps -q "node$leader")")" ] || fail "node$leader still runs"
deadline=$((SECONDS + 30))
while :; do
  l="$(leader_of "$pa")"
  if [ -n "$l" ] && [ "$l" != "$leader" ] && [ "$(leader_of "$pb")" = "$l" ]; then break; fi
  [ "$SECONDS" -lt "$deadline" ] || fail "no new leader 30s after stopping node$leader (node${survivors[0]} sees '$l')"
  sleep 0.5
done
say "node${survivors[0]} and node${survivors[1]} elected node$l"
http_retry 15 GET "$pa" /v1/locks/compose-test-a
expect 200 "\"owner_hash\":\"$owner_a\"" "compose-test-a survived the leader (through port $pa)"
http_retry 15 POST "$pa" /v1/locks/compose-test-b/acquire "{\"owner_hash\":\"$owner_b\",\"ttl_ms\":120000}"
expect 200 '"status":"SUCCESS"' "acquire compose-test-b through port $pa"
http GET "$pb" /v1/locks/compose-test-b
expect 200 "\"owner_hash\":\"$owner_b\"" "compose-test-b seen through port $pb"
http POST "$pb" /v1/locks/compose-test-b/release "{\"owner_hash\":\"$owner_b\"}"
expect 200 '"status":"SUCCESS"' "release compose-test-b through port $pb"
http POST "$pa" /v1/locks/compose-test-a/release "{\"owner_hash\":\"$owner_a\"}"
expect 200 '"status":"SUCCESS"' "release compose-test-a (taken before the failure) through port $pa"
http POST "$pb" /v1/locks/compose-test-c/acquire "{\"owner_hash\":\"$owner_c\",\"ttl_ms\":120000}"
expect 200 '"status":"SUCCESS"' "acquire compose-test-c through port $pb while node$leader is down"
if [ -x "$locker_cli" ]; then
  out="$(LOCKER_ENDPOINTS="http://127.0.0.1:707$leader,http://127.0.0.1:$pa,http://127.0.0.1:$pb" \
    "$locker_cli" run compose-test-cli --ttl-ms 10000 -- echo ran-under-lock 2>&1)" ||
    fail "locker run through the survivors: $out"
  [[ "$out" == *ran-under-lock* ]] || fail "locker run did not run the command: $out"
  say "ok: locker run (endpoints include the stopped node) ran its command"
fi

# --- 5. restart it; it catches up --------------------------------------------
say "restarting node$leader"
compose start "node$leader" >/dev/null 2>&1
wait_healthy "node$leader"
wait_ready "707$leader"
deadline=$((SECONDS + 30))
while :; do
  http GET "707$leader" "/v1/locks/compose-test-c?stale=true"
  [ "$code" = 200 ] && [[ "$body" == *"\"owner_hash\":\"$owner_c\""* ]] && break
  [ "$SECONDS" -lt "$deadline" ] || fail "node$leader did not catch up: its own replica says HTTP $code $body for compose-test-c"
  sleep 0.5
done
say "ok: node$leader's own replica has compose-test-c, taken while it was down"
http GET "707$leader" "/v1/locks/compose-test-a?stale=true"
expect 200 '"locked":false' "node$leader's own replica has the release of compose-test-a"
http POST "707$leader" /v1/locks/compose-test-c/release "{\"owner_hash\":\"$owner_c\"}"
expect 200 '"status":"SUCCESS"' "release compose-test-c through the restarted node$leader"
for p in 7071 7072 7073; do
  http GET "$p" /v1/locks/compose-test-c
  expect 200 '"locked":false' "compose-test-c free as seen through port $p"
done

# --- 6. the hardened variant: tokens, HTTPS with client certificates, mTLS --
say "replacing the cluster with the hardened variant (docker-compose.secure.yml)"
compose down -v --remove-orphans -t 5 >/dev/null 2>&1
secure_root="$(mktemp -d)"
secure_dir="$secure_root/secure"
deploy/secure-init.sh "$secure_dir" >/dev/null
export LOCKER_SECURE_DIR="$secure_dir"
"${compose_cmd[@]}" -p "$project" -f "$root/docker-compose.yml" -f "$root/docker-compose.secure.yml" \
  up -d --no-build
wait_healthy node1 node2 node3
jobs_token="$(cat "$secure_dir/jobs.token")"
shttp() { # TOKEN METHOD PORT PATH [BODY]: `http` over HTTPS with the CA, the client certificate and TOKEN
  local scheme=https
  local curl_opts=(--cacert "$secure_dir/ca.pem" --cert "$secure_dir/client.pem" --key "$secure_dir/client-key.pem")
  [ -z "$1" ] || curl_opts+=(-H "Authorization: Bearer $1")
  shift
  http "$@"
}
deadline=$((SECONDS + 60))
while shttp "" GET 7071 /readyz; [ "$code" != 200 ]; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the hardened node1 is not ready over HTTPS after 60s: HTTP $code $body"
  sleep 0.5
done
say "ok: the hardened cluster is ready over HTTPS (open probe, no token)"
owner_s='jobs/secure@ci/1.1700000000000000000.1'
shttp "" POST 7071 /v1/locks/jobs%2Fsecure/acquire "{\"owner_hash\":\"$owner_s\"}"
expect 401 UNAUTHENTICATED "an acquire without a token is refused"
deadline=$((SECONDS + 30))
while shttp "$jobs_token" POST 7072 /v1/locks/jobs%2Fsecure/acquire "{\"owner_hash\":\"$owner_s\",\"ttl_ms\":60000}"; [ "$code" = 503 ]; do
  [ "$SECONDS" -lt "$deadline" ] || break
  sleep 0.5
done
expect 200 '"status":"SUCCESS"' "the jobs token acquires jobs/secure through node2 (forwarded over TLS if a follower)"
shttp "$jobs_token" GET 7073 /v1/locks/jobs%2Fsecure
expect 200 "\"owner_hash\":\"$owner_s\"" "jobs/secure seen through node3"
shttp "$jobs_token" POST 7071 /v1/locks/billing%2Fx/acquire '{"owner_hash":"billing/x@ci/1.1700000000000000000.1"}'
expect 403 FORBIDDEN "the jobs token is refused outside jobs/"
http GET 7071 /readyz
[ "$code" != 200 ] || fail "plain HTTP to the hardened client port answered 200"
say "ok: plain HTTP to the hardened client port gets no answer (HTTP $code)"
code="$(curl -s -m 10 -o /dev/null -w '%{http_code}' --cacert "$secure_dir/ca.pem" https://127.0.0.1:7071/readyz || true)"
[ "$code" != 200 ] || fail "a client without a certificate was served"
say "ok: a client without a certificate is refused (HTTP $code)"
# teardown (trap) removes containers, volumes and the network, then checks.
