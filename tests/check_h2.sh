#!/bin/sh
# tests/check_h2.sh: drives samples/h2-server (HTTP/2 and HTTP/1.1 over TLS, chosen by ALPN
# through the dispatch factory) with curl --http2, curl --http1.1, openssl s_client and
# h2load, on 127.0.0.1, and prints h2load's figures.
#
# Uses $WEFT_BUILDDIR (set by `make check`) or the current directory to find samples/.
# Every wait is bounded. Exit status: 0 pass, 1 fail, 77 skip: samples/h2-server not built
# (configure found no libnghttp2), curl without HTTP/2, or no openssl; or h2load absent (after
# the curl checks passed). ./autogen.sh --install-deps installs all of them.

set -u
builddir=${WEFT_BUILDDIR:-.}
server_bin=$builddir/samples/h2-server
if [ ! -x "$server_bin" ]; then
  echo "SKIP: samples/h2-server was not built (configure found no libnghttp2)"
  exit 77
fi
if grep -q '^#define WEFT_DISABLE_ALPN' "$builddir/config.h" 2>/dev/null; then
  echo "SKIP: this build has no ALPN; h2-server is tested in a normal build"
  exit 77
fi
command -v openssl >/dev/null 2>&1 || { echo "SKIP: no openssl"; exit 77; }
command -v curl >/dev/null 2>&1 || { echo "SKIP: no curl"; exit 77; }
curl -V | grep -q 'HTTP2' || { echo "SKIP: this curl has no HTTP/2"; exit 77; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_h2.XXXXXX") || exit 1
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

# --- flags -------------------------------------------------------------------------------------
"$server_bin" --help >"$tmp/help.out" 2>&1 || fail "--help exited non-zero"
grep -q usage "$tmp/help.out" || fail "--help printed no usage"
"$server_bin" --bogus >/dev/null 2>"$tmp/bad.err" && fail "--bogus exited 0"
grep -q '^error: ' "$tmp/bad.err" || fail "--bogus printed no 'error:' line"
rm -f "$tmp/help.out" "$tmp/bad.err"
pass "--help, bad flag"

# --- start, with a certificate of our own (so that curl verifies it) ----------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost' \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 || fail "openssl req failed"
"$server_bin" --listen 127.0.0.1:0 --cert "$tmp/cert.pem" --key "$tmp/key.pem" \
  >"$tmp/server.out" 2>"$tmp/server.err" &
server=$!
pids="$pids $server"
i=0
while ! grep -q '^listening on 127.0.0.1:[0-9][0-9]*$' "$tmp/server.out" 2>/dev/null; do
  kill -0 "$server" 2>/dev/null || fail "h2-server exited before 'listening on'"
  [ $i -lt 100 ] || fail "no 'listening on' line within 10 s"
  sleep 0.1
  i=$((i + 1))
done
port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/server.out")
url=https://127.0.0.1:$port
CURL="curl -s --max-time 20 --cacert $tmp/cert.pem"

# --- both protocols, chosen by ALPN -------------------------------------------------------------
for proto in http2 http1.1; do
  want=$([ $proto = http2 ] && echo 2 || echo 1.1)
  # GET /: 200, the 13-byte body, in the protocol asked for.
  w=$($CURL --$proto -o "$tmp/body" -w '%{http_code} %{http_version} %{size_download}' "$url/")
  [ "$w" = "200 $want 13" ] || fail "$proto GET /: got '$w', want '200 $want 13'"
  [ "$(cat "$tmp/body")" = "Hello, World!" ] || fail "$proto GET /: body '$(cat "$tmp/body")'"
  # GET /bytes/N: N bytes, all 'x' (streamed under back-pressure).
  n=3000017
  w=$($CURL --$proto -o "$tmp/body" -w '%{http_code} %{http_version} %{size_download}' \
    "$url/bytes/$n")
  [ "$w" = "200 $want $n" ] || fail "$proto GET /bytes/$n: got '$w', want '200 $want $n'"
  [ "$(tr -d x <"$tmp/body" | wc -c)" -eq 0 ] || fail "$proto /bytes/$n: bytes other than 'x'"
  # HEAD: the headers of GET (Content-Length included), no body.
  w=$($CURL --$proto -I -D "$tmp/head" -o /dev/null -w '%{http_code} %{size_download}' \
    "$url/bytes/12345")
  [ "$w" = "200 0" ] || fail "$proto HEAD: got '$w', want '200 0' (no body)"
  grep -qi '^content-length: 12345' "$tmp/head" || fail "$proto HEAD: no content-length 12345"
  # Unknown path: 404.
  w=$($CURL --$proto -o /dev/null -w '%{http_code} %{http_version}' "$url/nope")
  [ "$w" = "404 $want" ] || fail "$proto GET /nope: got '$w', want '404 $want'"
  # Several requests on one connection (HTTP/1.1 keep-alive; HTTP/2 streams).
  w=$($CURL --$proto -o /dev/null -o /dev/null -o /dev/null -w '%{num_connects}' \
    "$url/" "$url/bytes/70000" "$url/")
  [ "$w" = "100" ] || fail "$proto: 3 requests took connections '$w', want '100' (reuse)"
  pass "$proto: GET /, GET /bytes/$n, HEAD, 404, 3 requests on one connection"
done

# HTTP/1.1: Connection: close is honoured.
$CURL --http1.1 -H 'Connection: close' -D "$tmp/head" -o /dev/null "$url/" || fail "close"
grep -qi '^connection: close' "$tmp/head" || fail "http1.1: Connection: close not echoed"
# HTTP/1.1 without ALPN (the dispatch factory's fallback) still works.
w=$($CURL --http1.1 --no-alpn -o /dev/null -w '%{http_code} %{http_version}' "$url/")
[ "$w" = "200 1.1" ] || fail "no ALPN: got '$w', want '200 1.1'"
pass "http1.1: Connection: close; no ALPN falls back to HTTP/1.1"

# HTTP/1.1 pipelining behind a streaming body: the second request (sent in the same write as
# the first) is answered after the whole body, in order.
n=300000
printf 'GET /bytes/%s HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' \
  $n | timeout 20 openssl s_client -quiet -alpn http/1.1 -connect "127.0.0.1:$port" \
  >"$tmp/pipe" 2>/dev/null
[ "$(grep -ao 'HTTP/1.1 200 OK' "$tmp/pipe" | wc -l)" -eq 2 ] || fail "pipelined: not two 200 responses"
[ "$(tail -c 13 "$tmp/pipe")" = "Hello, World!" ] || fail "pipelined: the second answer is not last"
# ("text/plain" in each of the two heads holds an 'x' too.)
[ "$(tr -cd x <"$tmp/pipe" | wc -c)" -eq $((n + 2)) ] || fail "pipelined: the body is not $n bytes"
pass "http1.1: a request pipelined behind a $n-byte body is answered after it"

# --- back-pressure: a slow reader of a huge body does not grow the server ------------------------
rss() { sed -n 's/^VmRSS:[^0-9]*\([0-9]*\).*/\1/p' "/proc/$server/status" 2>/dev/null; }
if [ -r "/proc/$server/status" ]; then
  before=$(rss)
  for proto in http2 http1.1; do
    $CURL --$proto --limit-rate 500K --max-time 2 -o /dev/null "$url/bytes/100000000000" &
    slow=$!
    max=0
    i=0
    while kill -0 $slow 2>/dev/null && [ $i -lt 50 ]; do
      r=$(rss)
      [ "${r:-0}" -gt $max ] && max=$r
      sleep 0.1
      i=$((i + 1))
    done
    wait $slow
    grown=$((max - before))
    # Without back-pressure the server would queue gigabytes; the marks keep it to ~ 256 KiB.
    [ $grown -lt 65536 ] || fail "$proto slow reader: the server grew by $grown KiB"
    pass "$proto slow reader of a 100 GB body: the server grew by $grown KiB at most"
  done
fi

# --- h2load -------------------------------------------------------------------------------------
skip_h2load=0
if command -v h2load >/dev/null 2>&1; then
  # run_h2load WHAT ARGS...: runs h2load, prints its figures, requires 0 failed requests.
  run_h2load() {
    what=$1
    shift
    timeout 60 h2load "$@" >"$tmp/h2load.out" 2>&1 || fail "h2load $what exited non-zero"
    total=$(sed -n 's/^requests: \([0-9]*\) total.*/\1/p' "$tmp/h2load.out")
    ok=$(sed -n 's/^requests: .* \([0-9]*\) succeeded, \([0-9]*\) failed.*/\1 \2/p' \
      "$tmp/h2load.out")
    grep -E '^(Application protocol|finished in|requests:|status codes:)' "$tmp/h2load.out" |
      sed "s|^|  h2load $what: |"
    [ "$ok" = "$total 0" ] || fail "h2load $what: '$ok' succeeded/failed of $total"
    grep -q "^Application protocol: $proto" "$tmp/h2load.out" ||
      fail "h2load $what: the protocol is not $proto"
    pass "h2load $what: $total requests, 0 failed"
  }
  proto=h2
  run_h2load "h2 GET / -n 2000 -c 10" -n 2000 -c 10 "$url/"
  run_h2load "h2 GET / -n 2000 -c 10 -m 10" -n 2000 -c 10 -m 10 "$url/"
  run_h2load "h2 GET /bytes/1000000 -n 100 -c 4 -m 4" -n 100 -c 4 -m 4 "$url/bytes/1000000"
  proto=http/1.1
  run_h2load "http/1.1 GET / -n 2000 -c 10" --h1 -n 2000 -c 10 "$url/"
else
  skip_h2load=1
fi

# --- SIGTERM: exit 0, with the counts ---------------------------------------------------------
kill -TERM "$server"
i=0
while kill -0 "$server" 2>/dev/null && [ $i -lt 100 ]; do
  sleep 0.1
  i=$((i + 1))
done
kill -0 "$server" 2>/dev/null && fail "h2-server did not exit within 10 s of SIGTERM"
wait "$server"
status=$?
[ $status -eq 0 ] || fail "h2-server exited with status $status on SIGTERM (want 0)"
grep -q '^h2: [1-9][0-9]* connections, [1-9][0-9]* requests$' "$tmp/server.err" ||
  fail "no 'h2: C connections, R requests' line"
grep -q '^http/1.1: [1-9][0-9]* connections, [1-9][0-9]* requests$' "$tmp/server.err" ||
  fail "no 'http/1.1: C connections, R requests' line"
sed 's/^/  /' "$tmp/server.err"
pass "SIGTERM: exit 0"

if [ $skip_h2load -eq 1 ]; then
  echo "SKIP: h2load not found (Debian package nghttp2-client); the curl checks passed"
  exit 77
fi
exit 0
