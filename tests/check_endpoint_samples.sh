#!/bin/sh
# tests/check_endpoint_samples.sh: echo-server and echo-client driven with --endpoint
# DESCRIPTION (DESIGN.md section 6, "Additions (1.0 round)"): tcp: and ssl:/tls: descriptions,
# the other flags applied on top, parse errors, and a clean exit on SIGINT and SIGTERM.
#
# Uses $WEFT_BUILDDIR (set by `make check`) or the current directory to find samples/.
# Exit status: 0 pass, 1 fail, 77 skip (no openssl to make the certificate, or a build with
# neither ALPN nor NPN).

set -u
builddir=${WEFT_BUILDDIR:-.}
samples=$builddir/samples
if grep -q '^#define WEFT_DISABLE_ALPN' "$builddir/config.h" 2>/dev/null &&
  grep -q '^#define WEFT_DISABLE_NPN' "$builddir/config.h" 2>/dev/null; then
  echo "SKIP: this build has neither ALPN nor NPN; the samples are tested in a normal build"
  exit 77
fi
command -v openssl >/dev/null 2>&1 || { echo "SKIP: openssl not found"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_endpoint_samples.XXXXXX") || exit 1
pids=

# shellcheck disable=SC2317 # (called by the trap)
cleanup() {
  for pid in $pids; do kill "$pid" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

fail() {
  echo "FAIL: $*" >&2
  for f in "$tmp"/*.out "$tmp"/*.err; do
    [ -s "$f" ] && { echo "--- $f" >&2; head -n 20 "$f" >&2; }
  done
  exit 1
}
pass() { echo "ok: $*"; }

# start NAME ARGS...: runs samples/NAME ARGS in the background (stdout to $tmp/NAME.out, stderr
# to $tmp/NAME.err), waits at most 10 s for "listening on HOST:PORT", sets $pid and $port.
start() {
  name=$1
  shift
  : >"$tmp/$name.out" # now: the child's own truncation may come after the first read below
  "$samples/$name" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pid=$!
  pids="$pids $pid"
  i=0
  while [ $i -lt 100 ]; do
    line=$(head -n 1 "$tmp/$name.out")
    case $line in
      "listening on "*:*) port=${line##*:}; return 0 ;;
    esac
    kill -0 "$pid" 2>/dev/null || fail "$name $* exited before listening"
    sleep 0.1
    i=$((i + 1))
  done
  fail "$name $* did not print 'listening on HOST:PORT' within 10 s"
}

# stop PID NAME SIGNAL: sends SIGNAL, expects exit status 0 within 10 s.
stop() {
  kill "-$3" "$1" || fail "$2 is not running"
  i=0
  while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  kill -0 "$1" 2>/dev/null && fail "$2 did not exit within 10 s of SIG$3"
  wait "$1"
  status=$?
  [ $status -eq 0 ] || fail "$2 exited with status $status on SIG$3 (want 0)"
}

# A self-signed certificate for localhost and 127.0.0.1, which the client trusts as its root.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 || fail "openssl req failed"

# --- tcp: ------------------------------------------------------------------------------------------

start echo-server --endpoint tcp:0:interface=127.0.0.1
server=$pid
[ "$(head -n 1 "$tmp/echo-server.out")" = "listening on 127.0.0.1:$port" ] ||
  fail "first line: $(head -n 1 "$tmp/echo-server.out")"
printf 'plain\n' | timeout 20 "$samples/echo-client" --endpoint "tcp:host=127.0.0.1:port=$port" \
  >"$tmp/client.out" 2>"$tmp/client.err" || fail "echo-client --endpoint tcp: failed"
printf 'protocol: none\nplain\n' | cmp -s - "$tmp/client.out" ||
  fail "tcp echo: '$(cat "$tmp/client.out")'"
grep -q '^connected peer=127\.0\.0\.1:[0-9][0-9]* protocol=none$' "$tmp/echo-server.out" ||
  fail "echo-server did not print 'connected peer=127.0.0.1:PORT protocol=none'"
printf 'positional\n' | timeout 20 "$samples/echo-client" --endpoint "tcp:127.0.0.1:$port" \
  >"$tmp/client.out" 2>"$tmp/client.err" || fail "echo-client --endpoint tcp:H:P failed"
printf 'protocol: none\npositional\n' | cmp -s - "$tmp/client.out" || fail "tcp:H:P echo differs"
stop "$server" echo-server INT
pass "tcp: server and client, exit 0 on SIGINT"

# --- ssl: server, tls: client, ALPN --------------------------------------------------------------

start echo-server --endpoint \
  "ssl:0:interface=127.0.0.1:privateKey=$tmp/key.pem:certKey=$tmp/cert.pem:alpn=h2,http/1.1"
server=$pid
printf 'ping\n' | timeout 20 "$samples/echo-client" \
  --endpoint "tls:127.0.0.1:$port:trustRoots=$tmp/cert.pem:alpn=h2" \
  >"$tmp/client.out" 2>"$tmp/client.err" || fail "echo-client --endpoint tls: failed"
printf 'protocol: h2\nping\n' | cmp -s - "$tmp/client.out" ||
  fail "tls echo: '$(cat "$tmp/client.out")', want 'protocol: h2' then 'ping'"
grep -q '^connected peer=127\.0\.0\.1:[0-9][0-9]* protocol=h2$' "$tmp/echo-server.out" ||
  fail "echo-server did not print 'connected peer=127.0.0.1:PORT protocol=h2'"
# Flags on top of the description: --protocols replaces the description's alpn list.
printf 'pong\n' | timeout 20 "$samples/echo-client" --protocols http/1.1 \
  --endpoint "tls:host=localhost:port=$port:trustRoots=$tmp/cert.pem:alpn=h2" \
  >"$tmp/client.out" 2>"$tmp/client.err" || fail "echo-client --endpoint --protocols failed"
printf 'protocol: http/1.1\npong\n' | cmp -s - "$tmp/client.out" ||
  fail "--protocols on top: '$(cat "$tmp/client.out")'"
# Without trustRoots the system store is used, which does not know this certificate.
printf 'x' | timeout 20 "$samples/echo-client" --endpoint "tls:127.0.0.1:$port" \
  >"$tmp/client.out" 2>"$tmp/client.err" && fail "echo-client trusted an unknown certificate"
grep -q '^error: ' "$tmp/client.err" || fail "verification failure printed no 'error:' line"
stop "$server" echo-server TERM
pass "ssl: server, tls: client, ALPN h2, --protocols on top, verification, exit 0 on SIGTERM"

# The server's own flags on top: --protocols and --no-overlap continue.
start echo-server --protocols http/1.1 --no-overlap continue --endpoint \
  "ssl:0:interface=127.0.0.1:privateKey=$tmp/key.pem:certKey=$tmp/cert.pem:alpn=h2"
server=$pid
printf 'x\n' | timeout 20 "$samples/echo-client" \
  --endpoint "tls:127.0.0.1:$port:trustRoots=$tmp/cert.pem:alpn=h2" \
  >"$tmp/client.out" 2>"$tmp/client.err" || fail "no-overlap continue: client failed"
[ "$(head -n 1 "$tmp/client.out")" = "protocol: none" ] ||
  fail "server --protocols on top: '$(head -n 1 "$tmp/client.out")', want 'protocol: none'"
stop "$server" echo-server TERM
pass "server flags on top of the description"

# --- Errors ------------------------------------------------------------------------------------------

expect_error() { # STATUS PATTERN SAMPLE ARGS...: exits with STATUS, stderr matches PATTERN
  want=$1 pattern=$2 sample=$3
  shift 3
  timeout 10 "$samples/$sample" "$@" </dev/null >"$tmp/bad.out" 2>"$tmp/bad.err"
  got=$?
  [ $got -eq "$want" ] || fail "$sample $*: status $got, want $want"
  grep -q "$pattern" "$tmp/bad.err" || fail "$sample $*: stderr '$(cat "$tmp/bad.err")'"
}
expect_error 2 "^error: bad --endpoint: port: not a number 'x'" echo-server --endpoint tcp:x
expect_error 2 '^error: bad --endpoint: domain: not INET, INET6 or UNIX' \
  echo-server --endpoint systemd:domain=IPX:index=0
expect_error 2 '^error: --endpoint replaces' echo-server --endpoint tcp:0 --listen 127.0.0.1:0
expect_error 2 '^error: TLS options need an ssl: endpoint' echo-server --endpoint tcp:0 \
  --protocols h2
expect_error 1 '^error: bad --endpoint: privateKey: .*nonexistent' echo-server \
  --endpoint ssl:0:privateKey=/nonexistent/key.pem
expect_error 2 '^error: bad --endpoint: port: required for tcp client' echo-client \
  --endpoint tcp:host=127.0.0.1
expect_error 2 "^error: bad --endpoint: 'bogus': unknown key" echo-client \
  --endpoint tcp:127.0.0.1:1:bogus=1
expect_error 2 '^error: --endpoint replaces' echo-client --endpoint tcp:127.0.0.1:1 --tls
pass "parse errors name the key; conflicting flags refused"
exit 0
