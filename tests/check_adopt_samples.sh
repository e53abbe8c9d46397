#!/bin/sh
# tests/check_adopt_samples.sh: socket activation for real. systemd-socket-activate listens,
# then starts samples/echo-server --endpoint systemd:... with the socket (LISTEN_FDS): TCP by
# index, TLS, a Unix socket, and a named descriptor (--fdname / name=); echo-client talks to
# it; SIGTERM exits 0.
#
# Uses $WEFT_BUILDDIR (set by `make check`) or the current directory to find samples/.
# Exit status: 0 pass, 1 fail, 77 skip (no systemd-socket-activate, python3 or openssl).

set -u
# The samples negotiate next protocols. A build configured with --disable-alpn --disable-npn
# (CI builds one to test the WEFT_ENOTSUP paths) refuses protocol lists, so they are tested in
# the normal build only.
if grep -q '^#define WEFT_DISABLE_ALPN' "${WEFT_BUILDDIR:-.}/config.h" 2>/dev/null &&
  grep -q '^#define WEFT_DISABLE_NPN' "${WEFT_BUILDDIR:-.}/config.h" 2>/dev/null; then
  echo "SKIP: this build has neither ALPN nor NPN; the samples are tested in a normal build"
  exit 77
fi
builddir=${WEFT_BUILDDIR:-.}
samples=$builddir/samples
activate=$(command -v systemd-socket-activate || true)
[ -n "$activate" ] || { echo "SKIP: systemd-socket-activate not found (apt-get install systemd)"; exit 77; }
command -v python3 >/dev/null 2>&1 || { echo "SKIP: python3 not found"; exit 77; }
command -v openssl >/dev/null 2>&1 || { echo "SKIP: openssl not found"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_adopt_samples.XXXXXX") || exit 1
pid=

# shellcheck disable=SC2317 # (called by the trap)
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
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

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# activate LISTEN ARGS...: systemd-socket-activate -l LISTEN ARGS... in the background.
activate() {
  listen=$1
  shift
  : >"$tmp/server.out"
  "$activate" -l "$listen" "$@" >"$tmp/server.out" 2>"$tmp/server.err" &
  pid=$!
}

# client EXPECTED-PROTOCOL ARGS...: echo-client ARGS with "ping", retried while the activator
# is not listening yet (at most 10 s); the output must be the protocol line and the echo.
client() {
  want=$1
  shift
  i=0
  while [ $i -lt 100 ]; do
    got=$(echo ping | "$samples/echo-client" "$@" 2>"$tmp/client.err") && break
    sleep 0.1
    i=$((i + 1))
  done
  [ "$got" = "protocol: $want
ping" ] || fail "echo-client $*: '$got'"
}

stop() {
  kill -TERM "$pid" || fail "echo-server is not running"
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  kill -0 "$pid" 2>/dev/null && fail "echo-server did not exit within 10 s of SIGTERM"
  wait "$pid"
  status=$?
  pid=
  [ $status -eq 0 ] || fail "echo-server exited with status $status on SIGTERM (want 0)"
}

port=$(free_port)
activate "127.0.0.1:$port" "$samples/echo-server" --endpoint systemd:domain=INET:index=0
client none --connect "127.0.0.1:$port"
[ "$(head -n 1 "$tmp/server.out")" = "listening on 127.0.0.1:$port" ] ||
  fail "systemd INET: first line '$(head -n 1 "$tmp/server.out")'"
grep -q "^connected peer=127.0.0.1:[0-9]* protocol=none$" "$tmp/server.out" ||
  fail "systemd INET: no connected line"
client none --connect "127.0.0.1:$port" # a second connection on the same socket
stop
pass "systemd:domain=INET:index=0 under systemd-socket-activate"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 || fail "openssl req"
port=$(free_port)
activate "127.0.0.1:$port" --fdname=web "$samples/echo-server" \
  --endpoint "systemd:domain=INET:name=web:privateKey=$tmp/key.pem:certKey=$tmp/cert.pem:alpn=h2"
client h2 --endpoint "tls:127.0.0.1:$port:trustRoots=$tmp/cert.pem:alpn=h2"
stop
pass "systemd:domain=INET:name=web (--fdname) with TLS and ALPN"

sock=$tmp/activated.sock
activate "$sock" "$samples/echo-server" --endpoint systemd:domain=UNIX:index=0
client none --endpoint "unix:path=$sock"
[ "$(head -n 1 "$tmp/server.out")" = "listening on unix:$sock" ] ||
  fail "systemd UNIX: first line '$(head -n 1 "$tmp/server.out")'"
stop
pass "systemd:domain=UNIX:index=0"

port=$(free_port)
activate "127.0.0.1:$port" "$samples/echo-server" --endpoint systemd:domain=INET6:index=0
i=0
while [ $i -lt 100 ] && ! grep -q "handshake\|error" "$tmp/server.err"; do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=1)" \
    2>/dev/null && break
  sleep 0.1
  i=$((i + 1))
done
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
  sleep 0.1
  i=$((i + 1))
done
wait "$pid"
status=$?
pid=
[ $status -ne 0 ] || fail "systemd INET6 on an IPv4 socket: exit status 0"
grep -q "error:" "$tmp/server.err" || fail "systemd INET6 on an IPv4 socket: no error line"
pass "systemd:domain=INET6 given an IPv4 socket: refused (status $status)"
exit 0
