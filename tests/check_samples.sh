#!/bin/sh
# tests/check_samples.sh: runs the samples the way a user, or another tool, drives them, and
# checks their fixed interface (see DESIGN.md section 6): flags, output lines, exit statuses.
#
# Uses $WEFT_BUILDDIR (set by `make check`) or the current directory to find samples/.
# Exit status: 0 pass, 1 fail, 77 skip (only when curl, needed for https-hello, is absent;
# everything else still runs first, and a failure there is still a failure).

set -u
builddir=${WEFT_BUILDDIR:-.}
samples=$builddir/samples
# The samples negotiate next protocols. A build configured with --disable-alpn --disable-npn
# (CI builds one to test the WEFT_ENOTSUP paths) refuses protocol lists, so they are tested in
# the normal build only.
if grep -q '^#define WEFT_DISABLE_ALPN' "$builddir/config.h" 2>/dev/null &&
  grep -q '^#define WEFT_DISABLE_NPN' "$builddir/config.h" 2>/dev/null; then
  echo "SKIP: this build has neither ALPN nor NPN; the samples are tested in a normal build"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_samples.XXXXXX") || exit 1
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

# start NAME ARGS...: runs samples/NAME ARGS in the background, stdout to $tmp/NAME.out and
# stderr to $tmp/NAME.err; waits (at most 10 s) for its "listening on HOST:PORT" line and
# sets $pid and $port.
start() {
  name=$1
  shift
  # Empty the output first: a previous run of NAME left its own "listening on" line there,
  # which wait_for would otherwise take for this one's.
  : >"$tmp/$name.out"
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

# stop PID NAME: SIGTERM, then expects the process to exit with status 0 within 10 s.
stop() {
  kill -TERM "$1" || fail "$2 is not running"
  i=0
  while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  kill -0 "$1" 2>/dev/null && fail "$2 did not exit within 10 s of SIGTERM"
  wait "$1"
  status=$?
  [ $status -eq 0 ] || fail "$2 exited with status $status on SIGTERM (want 0)"
}

for s in echo-server echo-client https-hello negotiate-demo; do
  [ -x "$samples/$s" ] || fail "$samples/$s not built"
  "$samples/$s" --help >"$tmp/help.out" 2>&1 || fail "$s --help exited non-zero"
  grep -q usage "$tmp/help.out" || fail "$s --help printed no usage"
done
pass "--help"

# --- echo-server and echo-client over TLS, with ALPN ------------------------------------------

start echo-server --listen 127.0.0.1:0 --tls --protocols h2,http/1.1
server=$pid
server_port=$port

printf 'ping\n' | timeout 20 "$samples/echo-client" --connect "127.0.0.1:$port" --tls --insecure \
  --protocols h2 >"$tmp/client.out" 2>"$tmp/client.err" || fail "echo-client exited non-zero"
printf 'protocol: h2\nping\n' | cmp -s - "$tmp/client.out" ||
  fail "echo-client printed '$(cat "$tmp/client.out")', want 'protocol: h2' then 'ping'"
grep -q '^connected peer=127\.0\.0\.1:[0-9][0-9]* protocol=h2$' "$tmp/echo-server.out" ||
  fail "echo-server did not print 'connected peer=127.0.0.1:PORT protocol=h2'"
pass "echo over TLS, ALPN h2"

# A megabyte from a regular file (blocking reads, paced by write_drained), echoed intact.
head -c 1000000 /dev/urandom >"$tmp/megabyte"
timeout 30 "$samples/echo-client" --connect "127.0.0.1:$port" --tls --insecure \
  <"$tmp/megabyte" >"$tmp/client.out" 2>"$tmp/client.err" || fail "echo-client (file) failed"
[ "$(head -n 1 "$tmp/client.out")" = "protocol: none" ] || fail "no 'protocol: none' line"
tail -c +16 "$tmp/client.out" | cmp -s - "$tmp/megabyte" || fail "1 MB echo differs"
pass "1 MB echo from a regular file, no protocol offered"

# The server refuses what is not TLS... and a client that verifies rejects a self-signed cert.
printf 'x' | timeout 20 "$samples/echo-client" --connect "127.0.0.1:$port" --tls \
  >"$tmp/client.out" 2>"$tmp/client.err" && fail "echo-client accepted an unverified certificate"
grep -q '^error: ' "$tmp/client.err" || fail "verification failure printed no 'error:' line"
pass "verification failure reported"

stop "$server" echo-server
pass "echo-server exits 0 on SIGTERM"

# --- Error paths --------------------------------------------------------------------------------

# The port the stopped server used is now (almost certainly) closed.
printf 'x' | timeout 20 "$samples/echo-client" --connect "127.0.0.1:$server_port" \
  >"$tmp/client.out" 2>"$tmp/client.err" && fail "echo-client to a closed port exited 0"
grep -q '^error: ' "$tmp/client.err" || fail "refused connection printed no 'error:' line"
pass "refused connection"

start echo-server --listen 127.0.0.1:0
server=$pid
timeout 10 "$samples/echo-server" --listen "127.0.0.1:$port" >"$tmp/second.out" \
  2>"$tmp/second.err" && fail "a second echo-server on port $port exited 0"
grep -q '^error: ' "$tmp/second.err" || fail "port in use printed no 'error:' line"
# Plain TCP echo, IPv4, while we have a plain server.
printf 'plain\n' | timeout 20 "$samples/echo-client" --connect "127.0.0.1:$port" \
  >"$tmp/client.out" 2>"$tmp/client.err" || fail "plain echo-client failed"
printf 'protocol: none\nplain\n' | cmp -s - "$tmp/client.out" || fail "plain echo differs"
stop "$server" echo-server
pass "port in use; plain TCP echo"

timeout 10 "$samples/echo-server" --listen 127.0.0.1:0 --tls --cert /nonexistent \
  --key /nonexistent >"$tmp/bad.out" 2>"$tmp/bad.err" &&
  fail "echo-server --cert /nonexistent exited 0"
grep -q '^error: ' "$tmp/bad.err" || fail "unreadable certificate printed no 'error:' line"
timeout 10 "$samples/echo-server" --listen 127.0.0.1:0 --bogus >/dev/null 2>"$tmp/bad.err" &&
  fail "echo-server --bogus exited 0"
grep -q '^error: ' "$tmp/bad.err" || fail "bad flag printed no 'error:' line"
pass "unreadable certificate, bad flag"

# --- negotiate-demo -----------------------------------------------------------------------------

timeout 60 "$samples/negotiate-demo" >"$tmp/demo.out" 2>"$tmp/demo.err" ||
  fail "negotiate-demo exited non-zero: $(tail -n 1 "$tmp/demo.out")"
grep -q '^all 8 cases as expected$' "$tmp/demo.out" || fail "negotiate-demo: no 'all 8 cases'"
pass "negotiate-demo"

# --- https-hello, driven by curl ------------------------------------------------------------------

if ! command -v curl >/dev/null 2>&1; then
  echo "SKIP: curl not found, https-hello not tested"
  exit 77
fi
start https-hello --listen 127.0.0.1:0
hello=$pid
url=https://127.0.0.1:$port
curl -sk --http1.1 --max-time 20 "$url/" >"$tmp/curl.out" || fail "curl GET / failed"
[ "$(cat "$tmp/curl.out")" = "Hello, World!" ] || fail "GET / body: $(cat "$tmp/curl.out")"
[ "$(wc -c <"$tmp/curl.out")" -eq 13 ] || fail "GET / body is not 13 bytes"
curl -sk --http1.1 --max-time 20 "$url/bytes/100000" >"$tmp/curl.out" || fail "GET /bytes failed"
[ "$(wc -c <"$tmp/curl.out")" -eq 100000 ] ||
  fail "GET /bytes/100000: $(wc -c <"$tmp/curl.out") bytes"
curl -skv --http1.1 --max-time 20 "$url/" >/dev/null 2>"$tmp/curl.err" || fail "curl -v failed"
grep -qi 'ALPN.*accepted.*http/1.1' "$tmp/curl.err" || fail "ALPN did not select http/1.1"
status=$(curl -sk --http1.1 --max-time 20 -o /dev/null -w '%{http_code}' "$url/nope")
[ "$status" = 404 ] || fail "GET /nope answered $status, want 404"
# Two requests on one connection (keep-alive), the second with Connection: close.
curl -skv --http1.1 --max-time 20 "$url/" --next -skv --http1.1 --max-time 20 \
  -H 'Connection: close' "$url/bytes/3" >"$tmp/curl.out" 2>"$tmp/curl.err" ||
  fail "curl keep-alive failed"
[ "$(cat "$tmp/curl.out")" = "Hello, World!xxx" ] ||
  fail "keep-alive bodies: $(cat "$tmp/curl.out")"
grep -qi 're-using existing connection' "$tmp/curl.err" || fail "the connection was not reused"
pass "https-hello: /, /bytes/100000, ALPN http/1.1, 404, keep-alive"

# Pipelined requests in one write, answered in order, then closed (Connection: close).
if command -v openssl >/dev/null 2>&1; then
  printf 'GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /bytes/5 HTTP/1.1\r\nConnection: close\r\n\r\n' |
    timeout 20 openssl s_client -quiet -ign_eof -connect "127.0.0.1:$port" \
      >"$tmp/pipe.out" 2>/dev/null
  [ "$(grep -o 'HTTP/1.1 200 OK' "$tmp/pipe.out" | wc -l)" -eq 2 ] ||
    fail "pipelined: $(cat "$tmp/pipe.out")"
  tail -c 5 "$tmp/pipe.out" | grep -qx xxxxx || fail "pipelined: second body missing"
  printf 'garbage\r\n\r\n' | timeout 20 openssl s_client -quiet -ign_eof \
    -connect "127.0.0.1:$port" >"$tmp/pipe.out" 2>/dev/null
  grep -q '^HTTP/1.1 400' "$tmp/pipe.out" || fail "garbage did not get 400: $(cat "$tmp/pipe.out")"
  pass "https-hello: pipelining, 400"
fi

timeout 10 "$samples/https-hello" --listen 127.0.0.1:0 --threads 0 >/dev/null 2>"$tmp/bad.err"
[ $? -eq 2 ] || fail "https-hello --threads 0 should exit 2"
stop "$hello" https-hello
pass "https-hello exits 0 on SIGTERM"

# --- https-hello --idle-timeout, --write-timeout, --max-connections --------------------------------
for bad in "--idle-timeout -1" "--idle-timeout 1x" "--write-timeout 2e6" "--write-timeout nan" \
  "--max-connections -1" "--max-connections 4294967296" "--max-connections ''"; do
  eval "set -- $bad"
  timeout 10 "$samples/https-hello" --listen 127.0.0.1:0 "$@" >/dev/null 2>"$tmp/bad.err"
  status=$?
  [ $status -eq 2 ] || fail "https-hello $bad exited $status, want 2"
  grep -q "^error: $1 needs a number" "$tmp/bad.err" || fail "https-hello $bad: $(cat "$tmp/bad.err")"
done
start https-hello --listen 127.0.0.1:0 --idle-timeout 1 --write-timeout 30 --max-connections 100
hello=$pid
curl -sk --http1.1 --max-time 20 "https://127.0.0.1:$port/" >"$tmp/curl.out" ||
  fail "curl GET / failed (with the limits)"
[ "$(cat "$tmp/curl.out")" = "Hello, World!" ] || fail "GET / body (with the limits): $(cat "$tmp/curl.out")"
# A connection that sends nothing after its handshake is closed by the server after 1 s: s_client
# (-quiet implies -ign_eof) then ends by itself, long before timeout's 15 s.
if command -v openssl >/dev/null 2>&1; then
  timeout 15 openssl s_client -quiet -connect "127.0.0.1:$port" </dev/null >/dev/null 2>&1
  [ $? -ne 124 ] || fail "https-hello --idle-timeout 1 did not close an idle connection in 15 s"
fi
stop "$hello" https-hello
pass "https-hello --idle-timeout, --write-timeout, --max-connections: bad values exit 2, idle closed"
exit 0
