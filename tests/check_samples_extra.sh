#!/bin/sh
# tests/check_samples_extra.sh: drives samples/alpn-dispatch, samples/starttls-line,
# samples/embedded-loop, samples/reconnecting-client and samples/https-hello --threads (several
# reactors sharing a port) the way a user would, and checks their output lines and exit
# statuses.
#
# Uses $WEFT_BUILDDIR (set by `make check`) or the current directory to find samples/.
# Every wait is bounded (polling with short sleeps, at most about 10 s each).
# Exit status: 0 pass, 1 fail, 77 skip (only when openssl or curl, needed for alpn-dispatch and
# https-hello, is absent; the other samples are tested first, and a failure there is still a
# failure).

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
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_samples_extra.XXXXXX") || exit 1
pids=

# shellcheck disable=SC2317 # (called by the trap)
cleanup() {
  exec 3>&- 2>/dev/null
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

# wait_for FILE PATTERN [PID]: waits (at most 10 s) until FILE has a line matching the grep
# PATTERN; fails if PID (when given) exits first.
wait_for() {
  i=0
  while [ $i -lt 100 ]; do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    if [ $# -ge 3 ] && ! kill -0 "$3" 2>/dev/null; then
      grep -q -- "$2" "$1" 2>/dev/null && return 0
      fail "process $3 exited before '$2' appeared in $1"
    fi
    sleep 0.1
    i=$((i + 1))
  done
  fail "'$2' did not appear in $1 within 10 s"
}

# start NAME ARGS...: runs samples/NAME ARGS in the background (stdout to $tmp/NAME.out, stderr
# to $tmp/NAME.err), waits for its "listening on HOST:PORT" line and sets $pid and $port.
start() {
  name=$1
  shift
  # Empty the output first: a previous run of NAME left its own "listening on" line there,
  # which wait_for would otherwise take for this one's.
  : >"$tmp/$name.out"
  "$samples/$name" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pid=$!
  pids="$pids $pid"
  wait_for "$tmp/$name.out" '^listening on .*:[0-9][0-9]*$' "$pid"
  line=$(head -n 1 "$tmp/$name.out")
  case $line in
    "listening on "*:*) port=${line##*:} ;;
    *) fail "$name: first line is '$line', want 'listening on HOST:PORT'" ;;
  esac
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

for s in alpn-dispatch starttls-line embedded-loop; do
  [ -x "$samples/$s" ] || fail "$samples/$s not built"
  "$samples/$s" --help >"$tmp/help.out" 2>&1 || fail "$s --help exited non-zero"
  grep -q usage "$tmp/help.out" || fail "$s --help printed no usage"
  "$samples/$s" --bogus >/dev/null 2>"$tmp/bad.err" && fail "$s --bogus exited 0"
  grep -q '^error: ' "$tmp/bad.err" || fail "$s --bogus printed no 'error:' line"
done
pass "--help, bad flag"

# --- embedded-loop ------------------------------------------------------------------------------

timeout 20 "$samples/embedded-loop" >"$tmp/embedded.out" 2>"$tmp/embedded.err" ||
  fail "embedded-loop exited non-zero"
grep -qx 'echo: ping' "$tmp/embedded.out" || fail "embedded-loop printed no 'echo: ping'"
ticks=$(grep -c '^app tick [0-9][0-9]*$' "$tmp/embedded.out")
[ "$ticks" -ge 3 ] || fail "embedded-loop printed $ticks 'app tick' lines, want at least 3"
pass "embedded-loop: echo: ping, $ticks ticks, exit 0"

# --- reconnecting-client -------------------------------------------------------------------------

# Against a server: it connects (and would reconnect); stop it once it said so.
start echo-server --listen 127.0.0.1:0
echo_pid=$pid
"$samples/reconnecting-client" --connect "127.0.0.1:$port" >"$tmp/reconnect.out" \
  2>"$tmp/reconnect.err" &
rc_pid=$!
pids="$pids $rc_pid"
wait_for "$tmp/reconnect.out" '^connected' "$rc_pid"
kill "$rc_pid" 2>/dev/null
wait "$rc_pid" 2>/dev/null
stop "$echo_pid" echo-server
# Against a closed port: one retry after the back-off, then it gives up with status 1.
timeout 20 "$samples/reconnecting-client" --connect "127.0.0.1:$port" --max-retries 1 \
  >"$tmp/giveup.out" 2>"$tmp/giveup.err"
status=$?
[ "$status" -eq 1 ] || fail "reconnecting-client exited $status against a closed port, want 1"
grep -q '^retrying in [0-9.]* s' "$tmp/giveup.out" "$tmp/giveup.err" ||
  fail "reconnecting-client printed no 'retrying in' line"
grep -q '^giving up: .*refused' "$tmp/giveup.out" "$tmp/giveup.err" ||
  fail "reconnecting-client printed no 'giving up: ... refused' line"
pass "reconnecting-client: connected; against a closed port retried once and gave up"

# --- starttls-line ------------------------------------------------------------------------------

start starttls-line --listen 127.0.0.1:0 --write-cert "$tmp/server.pem"
server=$pid
for trust in "--insecure" "--ca $tmp/server.pem"; do
  # shellcheck disable=SC2086 # $trust is two words on purpose
  timeout 20 "$samples/starttls-line" --connect "127.0.0.1:$port" $trust >"$tmp/client.out" \
    2>"$tmp/client.err" || fail "starttls-line client ($trust) exited non-zero"
  printf 'HELLO plain\nGO\ntls: TLSv1.3\nSECRET over TLSv1.3\n' | cmp -s - "$tmp/client.out" ||
    fail "starttls-line client ($trust) printed '$(cat "$tmp/client.out")'"
done
# Without --insecure or --ca the client verifies against the system store, and must refuse.
timeout 20 "$samples/starttls-line" --connect "127.0.0.1:$port" >"$tmp/client.out" \
  2>"$tmp/client.err" && fail "starttls-line client accepted an unverified certificate"
grep -q '^error: .*verif' "$tmp/client.err" || fail "verification failure printed no 'error:' line"
wait_for "$tmp/starttls-line.out" '^tls: TLSv1.3$' "$server"
[ "$(grep -c '^tls: TLSv1.3$' "$tmp/starttls-line.out")" -eq 2 ] ||
  fail "starttls-line server did not print 'tls: TLSv1.3' twice"
stop "$server" starttls-line
pass "starttls-line: HELLO plain, STARTTLS, SECRET over TLSv1.3 (--insecure and --ca); exit 0"

# STARTTLS injection (CVE-2011-0411): a hostile peer pipelines clear text after the switch. The
# sample must never take those bytes as protected. A python3 peer plays the other side.
if ! command -v python3 >/dev/null 2>&1; then
  echo "SKIP: python3 not found, STARTTLS injection not tested"
else
  cat >"$tmp/peer.py" <<'PEER'
import socket, sys

def read_line(sock, buf):
    while b"\n" not in buf[0]:
        data = sock.recv(4096)
        if not data:
            raise SystemExit("peer: connection closed while waiting for a line")
        buf[0] += data
    line, buf[0] = buf[0].split(b"\n", 1)
    return line.rstrip(b"\r")

def drain(sock):
    """Reads until EOF or reset (at most 60 s); returns what came."""
    got = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            got += data
    except (ConnectionResetError, socket.timeout):
        pass
    return got

mode = sys.argv[1]
if mode in ("inject", "after-hello"):
    # A hostile server: the sample's client connects to it.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(60)
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    conn.settimeout(60)
    buf = [b""]
    assert read_line(conn, buf) == b"HELLO"
    conn.sendall(b"HELLO plain\r\n")
    assert read_line(conn, buf) == b"STARTTLS"
    if mode == "inject":
        # GO and a forged protected line in one segment, as a man in the middle would.
        conn.sendall(b"GO\r\nSECRET over TLSv1.3\r\n")
        try:
            conn.recv(65536)  # the client's ClientHello (old sample) or its abort
        except (ConnectionResetError, socket.timeout):
            pass
    else:
        # GO alone; once the client's ClientHello is here, the forged line in clear text.
        conn.sendall(b"GO\r\n")
        conn.recv(65536)
        try:
            conn.sendall(b"SECRET over TLSv1.3\r\n")
        except OSError:
            pass
        drain(conn)
    conn.close()
else:
    # A hostile client against the sample's server: STARTTLS and a protected command pipelined.
    port = int(sys.argv[2])
    conn = socket.create_connection(("127.0.0.1", port), timeout=60)
    conn.sendall(b"HELLO\r\nSTARTTLS\r\nSECRET\r\n")
    sys.stdout.buffer.write(drain(conn))
    conn.close()
PEER
  for mode in inject after-hello; do
    # A fresh file: the background job truncates it only once it runs, and wait_for must not
    # find the previous mode's port in it.
    rm -f "$tmp/peer.out"
    python3 "$tmp/peer.py" $mode >"$tmp/peer.out" 2>"$tmp/peer.err" &
    peer=$!
    pids="$pids $peer"
    wait_for "$tmp/peer.out" '^[0-9][0-9]*$' "$peer"
    peer_port=$(head -n 1 "$tmp/peer.out")
    timeout 60 "$samples/starttls-line" --connect "127.0.0.1:$peer_port" --insecure \
      >"$tmp/client.out" 2>"$tmp/client.err"
    status=$?
    wait "$peer" || fail "starttls-line ($mode): the python3 peer failed: $(cat "$tmp/peer.err")"
    if [ "$status" -eq 0 ] || [ "$status" -eq 124 ]; then
      fail "starttls-line client exited $status on clear text after GO ($mode), want an error"
    fi
    grep -q 'SECRET' "$tmp/client.out" &&
      fail "starttls-line client accepted a clear-text line after GO as protected ($mode)"
    grep -q '^error: ' "$tmp/client.err" || fail "starttls-line client ($mode): no 'error:' line"
  done
  pass "starttls-line client: clear text after GO (same segment or later) refused, exit non-zero"

  start starttls-line --listen 127.0.0.1:0
  server=$pid
  timeout 60 python3 "$tmp/peer.py" pipeline "$port" >"$tmp/pipeline.out" 2>"$tmp/pipeline.err" ||
    fail "starttls-line server: the python3 client failed: $(cat "$tmp/pipeline.err")"
  grep -q -e 'SECRET' -e '^GO' "$tmp/pipeline.out" &&
    fail "starttls-line server answered a command pipelined after STARTTLS"
  wait_for "$tmp/starttls-line.err" '^refused: .*pipelined' "$server"
  stop "$server" starttls-line
  pass "starttls-line server: SECRET pipelined after STARTTLS refused, connection closed"
fi

# --- alpn-dispatch, driven by openssl s_client and curl -----------------------------------------

if ! command -v openssl >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  echo "SKIP: openssl or curl not found, alpn-dispatch not tested"
  exit 77
fi
start alpn-dispatch --listen 127.0.0.1:0
server=$pid

# h2 (the toy line protocol): s_client reads a FIFO we keep open, so it stays connected until
# the answer is there; then it is killed.
mkfifo "$tmp/h2.in" || fail "mkfifo"
timeout 20 openssl s_client -connect "127.0.0.1:$port" -alpn h2 -quiet <"$tmp/h2.in" \
  >"$tmp/h2.out" 2>"$tmp/h2.err" &
client=$!
pids="$pids $client"
exec 3>"$tmp/h2.in"
printf 'hello dispatch\n' >&3
wait_for "$tmp/h2.out" '^h2-handler: hello dispatch$' "$client"
exec 3>&-
kill "$client" 2>/dev/null
wait "$client" 2>/dev/null
pass "alpn-dispatch: ALPN h2 -> h2-handler"

curl -sk --http1.1 --max-time 20 "https://127.0.0.1:$port/" >"$tmp/curl.out" 2>"$tmp/curl.err" ||
  fail "curl failed"
[ "$(cat "$tmp/curl.out")" = "http/1.1-handler" ] || fail "curl got '$(cat "$tmp/curl.out")'"
pass "alpn-dispatch: ALPN http/1.1 (curl) -> http/1.1-handler"

# No ALPN: the fallback answers and closes, so s_client ends by itself.
timeout 20 openssl s_client -connect "127.0.0.1:$port" -quiet </dev/null >"$tmp/none.out" \
  2>"$tmp/none.err"
grep -qx 'fallback-handler' "$tmp/none.out" || fail "no ALPN got '$(cat "$tmp/none.out")'"
pass "alpn-dispatch: no ALPN -> fallback-handler"

peer='127\.0\.0\.1:[0-9][0-9]*'
out=$tmp/alpn-dispatch.out
wait_for "$out" "^dispatched peer=$peer protocol=h2 handler=h2-handler\$" "$server"
wait_for "$out" "^dispatched peer=$peer protocol=http/1.1 handler=http/1.1-handler\$" "$server"
wait_for "$out" "^dispatched peer=$peer protocol=none handler=fallback-handler\$" "$server"
[ "$(grep -c '^dispatched ' "$out")" -eq 3 ] || fail "alpn-dispatch: not 3 'dispatched' lines"
stop "$server" alpn-dispatch
pass "alpn-dispatch: three 'dispatched' lines; exit 0 on SIGTERM"

# --- https-hello --threads 2: two reactors, one port (SO_REUSEPORT) ----------------------------

for bad in 0 65 x; do
  "$samples/https-hello" --listen 127.0.0.1:0 --threads $bad >/dev/null 2>"$tmp/bad.err" &&
    fail "https-hello --threads $bad exited 0"
  grep -q '^error: ' "$tmp/bad.err" || fail "https-hello --threads $bad printed no 'error:' line"
done
start https-hello --listen 127.0.0.1:0 --threads 2
server=$pid
# Each curl is a new connection from a new ephemeral port; the kernel hashes the 4-tuple to
# pick a listener, so the two threads get about half each.
requests=40
i=0
while [ $i -lt $requests ]; do
  body=$(curl -sk --http1.1 --max-time 20 "https://127.0.0.1:$port/") ||
    fail "https-hello: curl request $i failed"
  [ "$body" = "Hello, World!" ] || fail "https-hello: request $i got '$body'"
  i=$((i + 1))
done
stop "$server" https-hello
# One line per thread on stderr: "thread I: C connections, R requests". Each thread must have
# served at least a quarter of its fair share (requests / 8 = 5: for an even hash, a 2e-7
# chance of falling below), and the counts must add up to the requests made.
err=$tmp/https-hello.err
lines=$(grep -c '^thread [0-9][0-9]*: [0-9][0-9]* connections, [0-9][0-9]* requests$' "$err")
[ "$lines" -eq 2 ] || fail "https-hello --threads 2 printed $lines 'thread I:' lines, want 2"
for t in 0 1; do
  grep -q "^thread $t: " "$err" || fail "https-hello printed no line for thread $t"
done
# shellcheck disable=SC2046 # word splitting wanted: connections, requests, the minimum
set -- $(awk '/^thread [0-9]+: / { tc += $3; tr += $5; if (n++ == 0 || $3 < min) min = $3 }
  END { print tc + 0, tr + 0, min + 0 }' "$err")
[ "$1" -eq $requests ] || fail "https-hello: connections add up to $1, want $requests"
[ "$2" -eq $requests ] || fail "https-hello: requests add up to $2, want $requests"
[ "$3" -ge $((requests / 8)) ] ||
  fail "https-hello: a thread served $3 of $requests connections, want at least $((requests / 8))"
spread=$(awk '/^thread [0-9]+: / { printf "%s%s", sep, $3; sep = "+" }' "$err")
pass "https-hello --threads 2: $requests connections served $spread by the threads; exit 0"
exit 0
