#!/bin/sh
# tests/check_proxy_samples.sh: echo-server behind a PROXY protocol sender (DESIGN.md section 6,
# "Additions (1.0 round)"): with --endpoint haproxy:tcp:... and haproxy:ssl:..., the
# "connected peer=" line shows the address the header carried (v1 and v2), the header's bytes
# are not echoed, a client without a header is refused, and SIGTERM still exits 0. Also
# --endpoint unix:PATH (plain and TLS) on both samples: "listening on unix:PATH",
# "connected peer=unix:", the socket file removed on exit.
#
# Uses $WEFT_BUILDDIR (set by `make check`) or the current directory to find samples/.
# Exit status: 0 pass, 1 fail, 77 skip (no python3 or openssl).

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
command -v python3 >/dev/null 2>&1 || { echo "SKIP: python3 not found"; exit 77; }
command -v openssl >/dev/null 2>&1 || { echo "SKIP: openssl not found"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_proxy_samples.XXXXXX") || exit 1
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

start() {
  name=$1
  shift
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

# wait_line FILE PATTERN: waits at most 10 s for a line of FILE matching the grep PATTERN.
wait_line() {
  i=0
  while [ $i -lt 100 ]; do
    grep -q "$2" "$1" && return 0
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

# send VERSION TLS PORT: connects, sends a PROXY header of VERSION for 203.0.113.9:4000+VERSION
# and "ping" in one segment (for TLS, the header first, then a TLS client over the socket),
# prints what comes back.
cat >"$tmp/send.py" <<'PY'
import socket, ssl, struct, sys
version, tls, port = int(sys.argv[1]), sys.argv[2] == "tls", int(sys.argv[3])
sport = 4000 + version
if version == 1:
    header = ("PROXY TCP4 203.0.113.9 127.0.0.1 %d %d\r\n" % (sport, port)).encode()
elif version == 2:
    body = socket.inet_aton("203.0.113.9") + socket.inet_aton("127.0.0.1") + struct.pack("!HH", sport, port)
    header = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + struct.pack("!H", len(body)) + body
else:
    header = b""
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if tls:
    s.sendall(header)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(s, server_hostname="localhost")
    s.sendall(b"ping")
else:
    s.sendall(header + b"ping")
got = b""
try:
    while len(got) < 4:
        d = s.recv(4 - len(got))
        if not d:
            break
        got += d
except OSError:
    pass
sys.stdout.write(got.decode("latin-1"))
PY

for v in 1 2; do
  start echo-server --endpoint haproxy:tcp:0:interface=127.0.0.1:proxySources=127.0.0.1
  got=$(python3 "$tmp/send.py" $v tcp "$port")
  [ "$got" = ping ] || fail "tcp v$v: echo '$got', want 'ping'"
  wait_line "$tmp/echo-server.out" "^connected peer=203.0.113.9:400$v protocol=none$" ||
    fail "tcp v$v: no 'connected peer=203.0.113.9:400$v' line"
  pass "haproxy:tcp: PROXY v$v header: peer=203.0.113.9:400$v, echo without the header"
  got=$(python3 "$tmp/send.py" 0 tcp "$port")
  [ -z "$got" ] || fail "tcp: a client without a header got '$got'"
  wait_line "$tmp/echo-server.err" "handshake failed peer=127.0.0.1:[0-9]*: .*PROXY" ||
    fail "tcp: no 'handshake failed' line for a client without a header"
  pass "haproxy:tcp: a client without a header is refused"
  stop "$pid" echo-server TERM
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 || fail "openssl req"
start echo-server --endpoint "haproxy:ssl:0:interface=127.0.0.1:privateKey=$tmp/key.pem:certKey=$tmp/cert.pem"
for v in 1 2; do
  got=$(python3 "$tmp/send.py" $v tls "$port")
  [ "$got" = ping ] || fail "tls v$v: echo '$got', want 'ping'"
  wait_line "$tmp/echo-server.out" "^connected peer=203.0.113.9:400$v protocol=" ||
    fail "tls v$v: no 'connected peer=203.0.113.9:400$v' line"
  pass "haproxy:ssl: PROXY v$v header, then TLS: peer=203.0.113.9:400$v"
done
stop "$pid" echo-server TERM

sock=$tmp/echo.sock
start echo-server --endpoint "unix:$sock:mode=0600"
[ "$line" = "listening on unix:$sock" ] || fail "unix: first line '$line'"
got=$(echo unix-ping | "$samples/echo-client" --endpoint "unix:path=$sock" 2>"$tmp/client.err")
[ "$got" = "protocol: none
unix-ping" ] || fail "unix: echo-client printed '$got'"
wait_line "$tmp/echo-server.out" "^connected peer=unix: protocol=none$" || fail "unix: no peer line"
stop "$pid" echo-server TERM
[ -e "$sock" ] && fail "unix: the socket file is still there after exit"
pass "unix:PATH with echo-server and echo-client; the file goes on exit"

start echo-server --endpoint "unix:$sock:privateKey=$tmp/key.pem:certKey=$tmp/cert.pem:alpn=h2"
got=$(echo tls-ping | "$samples/echo-client" \
  --endpoint "unix:path=$sock:tls=yes:trustRoots=$tmp/cert.pem:alpn=h2" 2>"$tmp/client.err")
[ "$got" = "protocol: h2
tls-ping" ] || fail "unix TLS: echo-client printed '$got'"
wait_line "$tmp/echo-server.out" "^connected peer=unix: protocol=h2$" || fail "unix TLS: no peer line"
stop "$pid" echo-server TERM
pass "TLS over unix:PATH (tls=yes on the client), ALPN h2"
exit 0
