#!/bin/sh
# tests/check_tlsprod_samples.sh: serving TLS in production (issue 13) with foreign clients.
# samples/echo-server with two SNI identities (alpha.test with its own ALPN list h2, and
# *.wild.test) and a default one, checked with `openssl s_client -servername`,
# `curl --resolve`, `gnutls-cli --sni-hostname` and samples/echo-client: the right
# certificate and protocol per name, the unknown-name policy (alert 112), OCSP stapling seen by
# `s_client -status` (a response made with `openssl ocsp`), a key log holding the connection's
# secrets, pinning (right key accepted, another refused), and SIGHUP reload under load (a
# client loop running through it: zero failed handshakes, and every handshake started after
# "reloaded" gets the new certificate) and a failed reload that leaves service unchanged.
# samples/https-hello with two reactor threads (SO_REUSEPORT) reloads the same way on SIGHUP.
# samples/acme-tls-alpn answers acme-tls/1 (RFC 8737) with the challenge certificate, seen by
# `openssl s_client -alpn acme-tls/1 -servername NAME`; other clients get the real one.
#
# Uses $WEFT_BUILDDIR (set by `make check`) or the current directory to find samples/.
# Every wait is bounded. Exit status: 0 pass, 1 fail, 77 skip (openssl, curl or gnutls-cli
# absent: `./autogen.sh --install-deps` installs them).

set -u
builddir=${WEFT_BUILDDIR:-.}
samples=$builddir/samples
for p in openssl curl gnutls-cli; do
  command -v "$p" >/dev/null 2>&1 || { echo "SKIP: $p is not installed"; exit 77; }
done
if grep -q '^#define WEFT_DISABLE_ALPN' "$builddir/config.h" 2>/dev/null; then
  echo "SKIP: this build has no ALPN"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_tlsprod.XXXXXX") || exit 1
pids=
cleanup() {
  for pid in $pids; do kill "$pid" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

fail() {
  echo "FAIL: $*" >&2
  for f in "$tmp"/*.out "$tmp"/*.err; do
    [ -s "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
  done
  exit 1
}

# Waits (at most about 10 s) until file $1 holds a line matching $2.
wait_line() {
  n=0
  while ! grep -q "$2" "$1" 2>/dev/null; do
    n=$((n + 1))
    [ $n -gt 200 ] && fail "timed out waiting for '$2' in $1"
    sleep 0.05
  done
}

# --- A small PKI: a CA, leaf certificates, an OCSP responder's answer ---------------------
cd "$tmp" || exit 1
ossl() { openssl "$@" >>"$tmp/openssl.err" 2>&1 || fail "openssl $*"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -subj /CN=test-ca -days 2 -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign
leaf() { # NAME CN SAN
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" \
    -subj "/CN=$2"
  printf 'subjectAltName=%s\n' "$3" >"$1.ext"
  ossl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" \
    -days 2 -extfile "$1.ext"
}
leaf default default DNS:localhost,IP:127.0.0.1
leaf alpha alpha DNS:alpha.test
leaf wild wild 'DNS:*.wild.test'
leaf renewed renewed DNS:alpha.test
leaf renewed-local renewed-local DNS:localhost,IP:127.0.0.1
: >index.txt
ossl ocsp -issuer ca.pem -cert default.pem -req_text -reqout req.der
ossl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -reqin req.der \
  -respout good.der -ndays 1
openssl ocsp -respin good.der -CAfile ca.pem -issuer ca.pem -cert default.pem >ocsp.check 2>&1
# an empty index knows no certificate: the responder says "unknown", not "good"; make a
# "valid" index line for default.pem so that the response says good
serial=$(openssl x509 -in default.pem -noout -serial | sed 's/serial=//')
printf 'V\t301231000000Z\t\t%s\tunknown\t/CN=default\n' "$serial" >index.txt
ossl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -reqin req.der \
  -respout good.der -ndays 1

cp alpha.pem live-alpha.pem
cp alpha.key live-alpha.key

# --- The server --------------------------------------------------------------------------
"$samples/echo-server" --listen 127.0.0.1:0 --tls --cert default.pem --key default.key \
  --protocols http/1.1 --sni alpha.test=live-alpha.pem,live-alpha.key \
  --sni-protocols alpha.test=h2 --sni '*.wild.test=wild.pem,wild.key' \
  --keylog keylog.txt --ocsp-response good.der >server.out 2>server.err &
server=$!
pids="$pids $server"
wait_line server.out '^listening on '
port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' server.out)
[ -n "$port" ] || fail "no port in the listening line"

# s_client: prints "subject=CN = NAME" (OpenSSL 3) and "ALPN protocol: P"
sclient() { # NAME [extra args]
  name=$1
  shift
  echo Q | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername "$name" \
    -CAfile ca.pem -alpn h2,http/1.1 "$@" 2>&1
}
check_sclient() { # NAME CN PROTO
  out=$(sclient "$1")
  echo "$out" | grep -q "^subject=.*CN *= *$2\$" || fail "s_client $1: not CN $2: $out"
  echo "$out" | grep -q "^ALPN protocol: $3\$" || fail "s_client $1: not ALPN $3"
}
check_sclient alpha.test alpha h2
check_sclient ALPHA.Test alpha h2
check_sclient x.wild.test wild http/1.1
check_sclient nomatch.test default http/1.1
check_sclient a.b.wild.test default http/1.1

# curl --resolve: the right certificate per name (verified against the CA) and protocol
for case in "alpha.test h2" "x.wild.test http/1.1"; do
  set -- $case
  # the echo server answers no HTTP: curl fails after the handshake; its verbose log shows it
  timeout 10 curl -sv --max-time 5 --cacert ca.pem --resolve "$1:$port:127.0.0.1" \
    "https://$1:$port/" >curl.out 2>&1
  grep -q "ALPN.*server accepted.*$2\|ALPN, server accepted to use $2" curl.out ||
    fail "curl $1: no ALPN $2"
  grep -q "SSL certificate verify ok" curl.out || fail "curl $1: certificate not verified"
done

# gnutls-cli --sni-hostname
# (it prints "- Application protocol: P": the identity's own list decides P)
for case in "alpha.test alpha h2" "x.wild.test wild http/1.1"; do
  set -- $case
  echo | timeout 10 gnutls-cli --x509cafile=ca.pem --sni-hostname="$1" --verify-hostname="$1" \
    --alpn=h2 --alpn=http/1.1 -p "$port" 127.0.0.1 >gnutls.out 2>&1 ||
    fail "gnutls-cli $1 failed"
  grep -q "CN=$2" gnutls.out || fail "gnutls-cli $1: not CN $2"
  grep -q "Application protocol: $3\$" gnutls.out || fail "gnutls-cli $1: not ALPN $3"
done

# weft's own client: the identity's protocol, required; pinning
pin() { openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform der |
  openssl dgst -sha256 -binary | openssl base64; }
echo hello | timeout 10 "$samples/echo-client" --connect "127.0.0.1:$port" --tls --ca ca.pem \
  --servername alpha.test --protocols h2,http/1.1 --require-protocol \
  --pin "sha256//$(pin alpha.pem)" >client.out 2>client.err || fail "echo-client alpha"
grep -qx 'protocol: h2' client.out || fail "echo-client alpha: not h2"
if echo hello | timeout 10 "$samples/echo-client" --connect "127.0.0.1:$port" --tls --ca ca.pem \
  --servername alpha.test --pin "sha256//$(pin wild.pem)" >client.out 2>client.err; then
  fail "echo-client accepted a key that is not pinned"
fi
grep -q 'pinned' client.err || fail "echo-client: the pin refusal does not say so"
# --require-protocol against a name whose list has nothing in common fails
if echo hello | timeout 10 "$samples/echo-client" --connect "127.0.0.1:$port" --tls --ca ca.pem \
  --servername localhost --protocols h2 --no-overlap fail --require-protocol \
  >client.out 2>client.err; then
  fail "echo-client --require-protocol connected without a protocol"
fi

# OCSP stapling, seen by s_client -status
sclient localhost -status >status.out
grep -q 'OCSP Response Status: successful' status.out || fail "no OCSP response stapled"
grep -q 'Cert Status: good' status.out || fail "the stapled response does not say good"

# the key log holds this connection's secrets: s_client's own key log must match the server's
sclient alpha.test -keylogfile client-keylog.txt >/dev/null
line=$(grep '^CLIENT_TRAFFIC_SECRET_0 ' client-keylog.txt | head -n 1)
[ -n "$line" ] || fail "s_client wrote no key log"
grep -qF "$line" keylog.txt || fail "the server's key log lacks the connection's secret"

# --- The unknown-name policy: reject -------------------------------------------------------
"$samples/echo-server" --listen 127.0.0.1:0 --tls --cert default.pem --key default.key \
  --sni alpha.test=alpha.pem,alpha.key --sni-unknown reject >reject.out 2>reject.err &
pids="$pids $!"
wait_line reject.out '^listening on '
rport=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' reject.out)
echo Q | timeout 10 openssl s_client -connect "127.0.0.1:$rport" -servername nomatch.test \
  >reject.sclient 2>&1
grep -q 'alert unrecognized name\|alert number 112' reject.sclient ||
  fail "unknown name not refused with alert 112: $(cat reject.sclient)"
echo Q | timeout 10 openssl s_client -connect "127.0.0.1:$rport" -servername alpha.test \
  -CAfile ca.pem 2>&1 | grep -q 'CN *= *alpha' || fail "reject policy: alpha.test not served"

# --- acme-tls/1 (RFC 8737): the identity selector sees the ALPN offer ----------------------
# the challenge certificate as an ACME client makes it: self-signed, the name validated, and
# the critical acmeIdentifier extension (SHA-256 of the key authorization)
digest=$(printf 'token.thumbprint' | openssl dgst -sha256 -hex | sed 's/^.*= *//')
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout challenge.key \
  -out challenge.pem -subj /CN=acme-challenge -days 1 -addext subjectAltName=DNS:alpha.test \
  -addext "1.3.6.1.5.5.7.1.31=critical,DER:04:20:$digest"
"$samples/acme-tls-alpn" --listen 127.0.0.1:0 --cert alpha.pem --key alpha.key \
  --protocols h2,http/1.1 --challenge alpha.test=challenge.pem,challenge.key \
  >acme.out 2>acme.err &
acme=$!
pids="$pids $acme"
wait_line acme.out '^listening on '
aport=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' acme.out)
[ -n "$aport" ] || fail "acme-tls-alpn: no port in the listening line"
acme_sclient() { # NAME ALPN
  echo Q | timeout 10 openssl s_client -connect "127.0.0.1:$aport" -servername "$1" \
    -alpn "$2" 2>&1
}
out=$(acme_sclient alpha.test acme-tls/1)
echo "$out" | grep -q '^subject=.*CN *= *acme-challenge$' ||
  fail "acme-tls/1: not the challenge certificate: $out"
echo "$out" | grep -q '^ALPN protocol: acme-tls/1$' || fail "acme-tls/1 not negotiated: $out"
for alpn in h2,http/1.1 acme-tls/1,http/1.1; do
  out=$(acme_sclient alpha.test "$alpn")
  echo "$out" | grep -q '^subject=.*CN *= *alpha$' || fail "ALPN $alpn: not the real certificate"
done
out=$(acme_sclient alpha.test h2,http/1.1)
echo "$out" | grep -q '^ALPN protocol: h2$' || fail "ALPN h2,http/1.1: not h2 on the real identity"
# acme-tls/1 for a name without a challenge: refused with alert 112
out=$(acme_sclient other.test acme-tls/1)
echo "$out" | grep -q 'alert unrecognized name\|alert number 112' ||
  fail "acme-tls/1 for a name without a challenge was not refused with alert 112: $out"
grep -q '^connected peer=127\.0\.0\.1:[0-9]* protocol=acme-tls/1$' acme.out ||
  fail "acme-tls-alpn did not report the acme-tls/1 connection"
kill "$acme"
wait "$acme" || fail "acme-tls-alpn did not exit cleanly on SIGTERM"

# --- Reload under load ----------------------------------------------------------------------
# The loop tags each handshake "before" or "after" by whether the reload was seen (marker file)
# before the handshake started; every "after" handshake must show the renewed certificate.
loop() { # PORT NAME
  i=0
  while [ $i -lt 60 ] && [ ! -e stop ]; do
    tag=before
    [ -e reloaded.mark ] && tag=after
    subj=$(echo Q | timeout 10 openssl s_client -connect "127.0.0.1:$1" \
      -servername "$2" -CAfile ca.pem -verify_return_error 2>/dev/null |
      sed -n 's/^subject=.*CN *= *//p')
    echo "$tag ${subj:-FAILED}" >>load.out
    i=$((i + 1))
  done
}
loop "$port" alpha.test &
loader=$!
pids="$pids $loader"
wait_line load.out 'before'
# replace the files the way a renewal does, then SIGHUP
cp renewed.pem live-alpha.pem.new && mv live-alpha.pem.new live-alpha.pem
cp renewed.key live-alpha.key.new && mv live-alpha.key.new live-alpha.key
kill -HUP "$server"
wait_line server.out '^reloaded$'
: >reloaded.mark
# a failed reload (the key no longer matches): refused, service unchanged
cp wild.key live-alpha.key.new && mv live-alpha.key.new live-alpha.key
kill -HUP "$server"
wait_line server.err '^error: reload failed: '
wait_line load.out 'after'
n=0
while [ "$(grep -c after load.out)" -lt 10 ] && kill -0 "$loader" 2>/dev/null; do
  n=$((n + 1)); [ $n -gt 400 ] && break; sleep 0.05
done
: >stop
wait "$loader"
total=$(wc -l <load.out)
failed=$(grep -c FAILED load.out)
before=$(grep -c '^before' load.out)
after=$(grep -c '^after' load.out)
stale=$(grep -c '^after alpha$' load.out)
echo "reload under load: $total handshakes ($before before the reload, $after after), $failed failed, $stale stale after the reload"
[ "$failed" -eq 0 ] || fail "$failed handshakes failed during the reload"
[ "$after" -gt 0 ] || fail "no handshake after the reload"
[ "$stale" -eq 0 ] || fail "$stale handshakes after the reload got the old certificate"
grep -q '^after renewed$' load.out || fail "the renewed certificate was never served"
check_sclient alpha.test renewed h2 # the failed reload changed nothing

kill "$server"
wait "$server" || fail "echo-server did not exit cleanly on SIGTERM"

# --- https-hello: SIGHUP reload under load, two reactor threads -----------------------------
# Both threads' listeners must take the new certificate: the kernel spreads the loop's
# handshakes over them (SO_REUSEPORT), and no handshake after "reloaded" may see the old one.
cp default.pem live-local.pem
cp default.key live-local.key
"$samples/https-hello" --listen 127.0.0.1:0 --cert live-local.pem --key live-local.key \
  --threads 2 >hello.out 2>hello.err &
hello=$!
pids="$pids $hello"
wait_line hello.out '^listening on '
hport=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' hello.out)
[ -n "$hport" ] || fail "https-hello: no port in the listening line"
rm -f stop reloaded.mark load.out
loop "$hport" localhost &
loader=$!
pids="$pids $loader"
wait_line load.out 'before'
cp renewed-local.pem live-local.pem.new && mv live-local.pem.new live-local.pem
cp renewed-local.key live-local.key.new && mv live-local.key.new live-local.key
kill -HUP "$hello"
wait_line hello.out '^reloaded$'
: >reloaded.mark
# a failed reload (a key that does not match the certificate): refused, service unchanged
cp wild.key live-local.key.new && mv live-local.key.new live-local.key
kill -HUP "$hello"
wait_line hello.err '^error: reload failed: '
wait_line load.out 'after'
n=0
while [ "$(grep -c after load.out)" -lt 10 ] && kill -0 "$loader" 2>/dev/null; do
  n=$((n + 1)); [ $n -gt 400 ] && break; sleep 0.05
done
: >stop
wait "$loader"
total=$(wc -l <load.out)
failed=$(grep -c FAILED load.out)
after=$(grep -c '^after' load.out)
stale=$(grep -c '^after default$' load.out)
echo "https-hello reload under load: $total handshakes ($after after the reload), $failed failed, $stale stale after the reload"
[ "$failed" -eq 0 ] || fail "https-hello: $failed handshakes failed during the reload"
[ "$after" -gt 0 ] || fail "https-hello: no handshake after the reload"
[ "$stale" -eq 0 ] || fail "https-hello: $stale handshakes after the reload got the old certificate"
grep -q '^after renewed-local$' load.out || fail "https-hello: the renewed certificate never served"
# HTTP still answers, with the renewed certificate verified by name
body=$(timeout 10 curl -s --max-time 5 --cacert ca.pem --resolve "localhost:$hport:127.0.0.1" \
  "https://localhost:$hport/") || fail "https-hello: curl after the reloads failed"
[ "$body" = "Hello, World!" ] || fail "https-hello: unexpected body: $body"
kill "$hello"
wait "$hello" || fail "https-hello did not exit cleanly on SIGTERM"
echo "PASS"
