#!/usr/bin/env bash
# Makes what the hardened docker-compose cluster (docker-compose.secure.yml)
# needs, in DIR (default deploy/secure/, never committed; the compose file
# reads LOCKER_SECURE_DIR for another place):
#   ca.pem, ca-key.pem          a private CA (keep ca-key.pem offline in real use)
#   node1..3.pem, -key.pem      each node's certificate: DNS nodeN (peers and
#                               forwarding), localhost and 127.0.0.1 (the host)
#   client.pem, client-key.pem  a client certificate (the nodes require one)
#   tokens.json                 an `admin` token (every prefix) and a `jobs`
#                               token (read and write under jobs/)
#   admin.token, jobs.token     their secrets (give each to its user only)
#   compose.env                 LOCKER_CLUSTER_SECRET for `--env-file`
# Files are 0600 (the directory 0700) and, when run as root, owned by uid 10001
# (the image's user).
# Refuses to overwrite an existing DIR.
#
#   deploy/secure-init.sh [DIR]
#   docker-compose --env-file deploy/secure/compose.env \
#     -f docker-compose.yml -f docker-compose.secure.yml up -d
set -euo pipefail
dir="${1:-$(dirname "$0")/secure}"
[ -e "$dir" ] && { echo "$dir exists: remove it to make new keys" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl is needed" >&2; exit 1; }
umask 077
mkdir -p "$dir"
cd "$dir"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
  -subj "/CN=Locker compose CA" -keyout ca-key.pem -out ca.pem 2>/dev/null

# cert NAME SAN: a key and a certificate signed by the CA, for TLS servers
# and clients alike (a node presents its certificate on both sides).
cert() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$1" -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$2" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
    -days 825 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
for n in 1 2 3; do
  cert "node$n" "DNS:node$n,DNS:localhost,IP:127.0.0.1"
done
cert client "DNS:client"

secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=' ; }
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
admin="$(secret)"
jobs="$(secret)"
printf %s "$admin" >admin.token
printf %s "$jobs" >jobs.token
cat >tokens.json <<JSON
{"tokens":[
  {"name":"admin","sha256":"$(sha "$admin")","prefixes":[""],"roles":["read","write","admin"]},
  {"name":"jobs","sha256":"$(sha "$jobs")","prefixes":["jobs/"],"roles":["read","write"],"max_locks":10000,"rate_per_s":200}
]}
JSON
printf 'LOCKER_CLUSTER_SECRET=%s\n' "$(secret)$(secret)" >compose.env
rm -f ca.srl

if [ "$(id -u)" = 0 ]; then
  chown 10001:10001 . ./*
fi
echo "made $dir: CA, node and client certificates, tokens (admin.token, jobs.token)"
