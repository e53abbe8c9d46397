#!/usr/bin/env bash
# bench/breakdown.sh: where the server's CPU goes in S1 (keep-alive GET /) and S3 (1 MiB
# bodies), by shared object, from perf, for weft, the baseline and nginx.
#
#   bench/breakdown.sh [--quick] [--servers weft,baseline,nginx] [--no-build]
#
# Same loads, sizes and pinning as bench/run.sh's h2load runs (server on CPU 0, h2load and perf
# on CPU 1), one repetition per (scenario, server). During the measured load only,
# `perf record -e cpu-clock -F 4999 -p SERVERPID` samples the server (cpu-clock: this VM has no
# PMU, only software events); `perf report --sort dso` gives each DSO's share of the samples,
# and each share times the server's CPU per unit of work (utime + stime from /proc/PID/stat
# before and after the load, as in run.sh) gives µs per request or per MiB for each class:
# kernel, OpenSSL crypto (libcrypto), OpenSSL rest (libssl), libevent, weft (libweft and the
# https-hello binary), libc (libc, ld.so), other. Also lists the top 15 symbols of weft's S1
# and S3 profiles. Writes bench/results/breakdown.md and prints it. See bench/README.md.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH")
BIN=$BENCH/bin
RESULTS=$BENCH/results

QUICK=0
SERVERS=weft,baseline,nginx
NO_BUILD=0
usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --servers) SERVERS=${2:?--servers needs a list}; shift ;;
        --no-build) NO_BUILD=1 ;;
        -h|--help) usage 0 ;;
        *) echo "breakdown.sh: unknown option $1" >&2; usage ;;
    esac
    shift
done

log() { echo "[breakdown $(date +%T)] $*" >&2; }
die() { echo "breakdown.sh: error: $*" >&2; exit 1; }

# Work sizes: those of run.sh's full run; --quick: smaller, but not run.sh's quick sizes (60 MiB
# is 4 clock ticks in S3: too few to split), about 1 s of server CPU per run.
if [ "$QUICK" = 1 ]; then
    S1_N=100000; S1_WARM=3000
    S3_N=400;    S3_WARM=10
else
    S1_N=300000; S1_WARM=20000
    S3_N=1000;   S3_WARM=50
fi
FREQ=4999

# --- 1. Dependencies and build -------------------------------------------------------------------
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have perf || missing+=(linux-perf)
have nginx || missing+=(nginx)
have h2load || missing+=(nghttp2-client)
have gcc && have make || missing+=(build-essential)
have pkg-config || missing+=(pkg-config)
have taskset || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); run as root to install them"
    log "installing: ${missing[*]}"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
PERF=$(command -v perf)

HELLO=$ROOT/samples/https-hello
if [ ! -f "$ROOT/Makefile" ]; then
    log "building weft (autogen, configure, make)"
    (cd "$ROOT" && { [ -x configure ] || ./autogen.sh; } && ./configure >&2 && make -j2 >&2) ||
        die "weft does not build"
elif [ $NO_BUILD = 0 ] && ! (cd "$ROOT" && make -j2 >/dev/null 2>&1); then
    log "WARNING: 'make' failed; using the samples/https-hello already built"
fi
[ -x "$HELLO" ] || die "samples/https-hello was not built"
mkdir -p "$BIN" "$RESULTS"
if [ ! -x "$BIN/baseline" ] || [ "$BENCH/baseline.c" -nt "$BIN/baseline" ]; then
    # shellcheck disable=SC2046
    gcc -std=c11 -O2 -g -Wall -Wextra -Werror $(pkg-config --cflags libevent_openssl libevent openssl) \
        -o "$BIN/baseline" "$BENCH/baseline.c" $(pkg-config --libs libevent_openssl libevent openssl) ||
        die "cannot build bench/baseline.c"
fi

# --- 2. Temporary directory, certificate, weft snapshot, nginx configuration ---------------------
TMP=$(mktemp -d /tmp/weft-breakdown.XXXXXX)
SERVER_MAIN= PERF_PID=
cleanup() {
    if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true; fi
    if [ -n "$SERVER_MAIN" ]; then
        kill "$SERVER_MAIN" 2>/dev/null || true
        wait "$SERVER_MAIN" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# perf may be refused by perf_event_paranoid (root normally is not): lower it then, and say so.
PARANOID_NOTE=
if ! "$PERF" record -e cpu-clock -o "$TMP/probe.data" -- true >/dev/null 2>&1; then
    old=$(cat /proc/sys/kernel/perf_event_paranoid)
    [ "$(id -u)" = 0 ] || die "perf record is refused (perf_event_paranoid=$old) and we are not root"
    echo -1 >/proc/sys/kernel/perf_event_paranoid
    PARANOID_NOTE="perf record was refused: /proc/sys/kernel/perf_event_paranoid set from $old to -1."
    log "$PARANOID_NOTE"
    "$PERF" record -e cpu-clock -o "$TMP/probe.data" -- true >/dev/null 2>&1 || die "perf record does not work"
fi
rm -f "$TMP/probe.data"
PMU_NOTE="hardware PMU: none (perf has software events only: cpu-clock)"
if ls /sys/bus/event_source/devices/ 2>/dev/null | grep -qx cpu; then
    PMU_NOTE="hardware PMU: present (cpu-clock used anyway, as without one)"
fi

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null || die "openssl req failed"
mkdir -p "$TMP/weft"
if [ -x "$ROOT/samples/.libs/https-hello" ]; then
    cp "$ROOT/samples/.libs/https-hello" "$TMP/weft/https-hello"
    cp -P "$ROOT"/lib/.libs/libweft.so* "$TMP/weft/" 2>/dev/null || true
else
    cp "$HELLO" "$TMP/weft/https-hello"
fi
HELLO=$TMP/weft/https-hello

# The nginx configuration of run.sh (keep the two in step).
mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
head -c 1048576 /dev/zero | tr '\0' x >"$TMP/nginx/bytes-1m"
CIPHERS="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
nginx_conf() { # PORT
    cat <<EOF
worker_processes 1;
master_process on;
daemon off;
user root;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
    access_log off;
    server_tokens off;
    etag off;
    types { }
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path $TMP/nginx/tmp/body;
    proxy_temp_path $TMP/nginx/tmp/proxy;
    fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
    scgi_temp_path $TMP/nginx/tmp/scgi;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers $CIPHERS;
    ssl_prefer_server_ciphers on;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    server {
        listen 127.0.0.1:$1 ssl;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        location = / { return 200 "Hello, World!"; }
        location = /bytes/1048576 { alias $TMP/nginx/bytes-1m; }
    }
}
EOF
}

IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
for s in "${SERVER_LIST[@]}"; do
    case $s in weft|baseline|nginx) ;; *) die "unknown server '$s' (weft, baseline, nginx)" ;; esac
done

# --- 3. Servers, loads, profiles --------------------------------------------------------------------
NEXT_PORT=22000
PORT= SERVER_PID=
cpu_ticks() { local s; s=$(cat "/proc/$1/stat") || return 1; s=${s##*') '}; awk '{print $12 + $13}' <<<"$s"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

stop_server() {
    if [ -n "$SERVER_MAIN" ]; then
        kill -TERM "$SERVER_MAIN" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_MAIN" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_MAIN" 2>/dev/null || true
        wait "$SERVER_MAIN" 2>/dev/null || true
    fi
    SERVER_MAIN= SERVER_PID=
}

start_server() { # NAME: sets PORT, SERVER_MAIN, SERVER_PID; returns 1 if it would not start
    local name=$1 out=$TMP/$1.out
    PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
    case $name in
        weft) LD_LIBRARY_PATH=$TMP/weft taskset -c 0 "$HELLO" --listen "127.0.0.1:$PORT" \
                  --cert "$TMP/cert.pem" --key "$TMP/key.pem" >"$out" 2>&1 & ;;
        baseline) taskset -c 0 "$BIN/baseline" --listen "127.0.0.1:$PORT" --cert "$TMP/cert.pem" \
                      --key "$TMP/key.pem" >"$out" 2>&1 & ;;
        nginx)
            [ -x "$NGINX" ] || return 1
            nginx_conf "$PORT" >"$TMP/nginx/nginx.conf"
            taskset -c 0 "$NGINX" -e "$TMP/nginx/logs/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" >"$out" 2>&1 &
            ;;
    esac
    SERVER_MAIN=$!
    for _ in $(seq 100); do
        if ! kill -0 "$SERVER_MAIN" 2>/dev/null; then
            log "$name exited at start: $(tail -3 "$out" | tr '\n' ' ')"
            wait "$SERVER_MAIN" 2>/dev/null || true
            SERVER_MAIN=
            return 1
        fi
        if [ "$name" = nginx ]; then
            SERVER_PID=$(pgrep -P "$SERVER_MAIN" | head -1 || true)
            [ -n "$SERVER_PID" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
        elif grep -q "^listening on" "$out"; then
            SERVER_PID=$SERVER_MAIN
            return 0
        fi
        sleep 0.1
    done
    log "$name did not start in 10 s"
    stop_server
    return 1
}

h2load_run() { # N CONNS PATH; 1 unless all N succeeded
    local out done fail
    out=$(taskset -c 1 h2load --h1 -t 1 -c "$2" -n "$1" "https://127.0.0.1:$PORT$3" 2>&1) || true
    done=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' <<<"$out")
    fail=$(sed -n 's/^requests: .* \([0-9]*\) failed.*/\1/p' <<<"$out")
    [ "${done:-0}" = "$1" ] && [ "${fail:-1}" = 0 ]
}

# class DSO -> one of: kernel crypto ssl libevent weft libc other
CLASSES="kernel crypto ssl libevent weft libc other"
classify() {
    case $1 in
        '[kernel.kallsyms]'|'[kernel.'*|'['*']') echo kernel ;; # modules show as [name]
        libcrypto*) echo crypto ;;
        libssl*) echo ssl ;;
        libevent*) echo libevent ;;
        libweft*|https-hello) echo weft ;;
        libc.so*|libc-*|ld-*|ld-linux*) echo libc ;;
        *) echo other ;;
    esac
}

ROWS=$TMP/rows.txt # scenario server unit total_us kernel crypto ssl libevent weft libc other samples
DETAILS=$TMP/details.md
: >"$ROWS"
: >"$DETAILS"

profile() { # SCENARIO SERVER
    local sc=$1 name=$2 n conns path unit
    case $sc in
        S1) n=$S1_N conns=50 path=/ unit=req ;;
        S3) n=$S3_N conns=10 path=/bytes/1048576 unit=MiB ;;
    esac
    if ! start_server "$name"; then
        echo "$sc $name $unit n/a" >>"$ROWS"
        return
    fi
    case $sc in
        S1) h2load_run "$S1_WARM" 50 / || true ;;
        S3) h2load_run "$S3_WARM" 10 /bytes/1048576 || true ;;
    esac
    local data=$TMP/$sc-$name.data st=ok c0 c1
    taskset -c 1 "$PERF" record -e cpu-clock -F $FREQ -p "$SERVER_PID" -o "$data" >"$TMP/perf.out" 2>&1 &
    PERF_PID=$!
    sleep 0.5 # perf attaches
    c0=$(cpu_ticks "$SERVER_PID")
    h2load_run "$n" "$conns" "$path" || st=error
    c1=$(cpu_ticks "$SERVER_PID")
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
    stop_server
    local total
    total=$(awk -v t=$((c1 - c0)) -v w="$n" -v u="$TICK_US" 'BEGIN { printf "%.1f", t * u / w }')
    [ "$st" = ok ] || log "$sc $name: h2load reported failed requests"
    # DSO shares and sample counts: "  12.34%  1234  libcrypto.so.3"
    "$PERF" report -i "$data" --stdio --sort dso -n -q --percent-limit 0 2>/dev/null |
        awk 'NF >= 3 && $1 ~ /%$/ { p = $1; sub(/%/, "", p); n = $2; $1 = $2 = ""; sub(/^ +/, "")
                                    print p "\t" $0 "\t" n }' >"$TMP/$sc-$name.dso"
    local samples
    samples=$(awk -F'\t' '{ s += $3 } END { print s + 0 }' "$TMP/$sc-$name.dso")
    local -A share=()
    local c
    for c in $CLASSES; do share[$c]=0; done
    while IFS=$'\t' read -r pct dso _; do
        c=$(classify "$dso")
        share[$c]=$(awk -v a="${share[$c]}" -v b="$pct" 'BEGIN { print a + b }')
    done <"$TMP/$sc-$name.dso"
    local line="$sc $name $unit $total"
    for c in $CLASSES; do
        line="$line $(awk -v s="${share[$c]}" -v t="$total" 'BEGIN { printf "%.1f", s * t / 100 }')"
    done
    echo "$line ${samples:-?} $((c1 - c0)) $st" >>"$ROWS"
    log "$sc $name: $total µs/$unit ($((c1 - c0)) ticks, ${samples:-?} samples)"
    {
        echo "### $sc $name: DSOs ($total µs CPU per $unit, $((c1 - c0)) ticks, ${samples:-?} samples)"
        echo
        echo '```'
        awk -F'\t' 'NR <= 20 { printf "%7.2f%%  %s\n", $1, $2 }' "$TMP/$sc-$name.dso"
        echo '```'
        echo
        if [ "$name" = weft ]; then
            echo "### $sc weft: top 15 symbols (perf report --sort dso,sym)"
            echo
            echo '```'
            # (into a file first: head closing the pipe early would fail it under pipefail)
            "$PERF" report -i "$data" --stdio --sort dso,sym -q --percent-limit 0 \
                >"$TMP/syms.txt" 2>/dev/null || true
            grep -v '^$' "$TMP/syms.txt" | sed -n 1,15p
            echo '```'
            echo
        fi
    } >>"$DETAILS"
    rm -f "$data"
}

START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
for sc in S1 S3; do
    for s in "${SERVER_LIST[@]}"; do
        profile "$sc" "$s"
    done
done

# --- 4. Table ------------------------------------------------------------------------------------
OUT=$RESULTS/breakdown.md
{
    echo "# weft bench: server CPU breakdown (perf)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(uname -r)); weft $REV; quick: $QUICK;"
    echo "run took $(($(date +%s) - START))s; load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "perf record -e cpu-clock -F $FREQ -p SERVERPID during the measured h2load run only; $PMU_NOTE."
    [ -n "$PARANOID_NOTE" ] && echo "$PARANOID_NOTE"
    echo "Loads: S1 h2load --h1 -c 50 -n $S1_N GET / (µs per request); S3 h2load --h1 -c 10 -n $S3_N"
    echo "GET /bytes/1048576 (µs per MiB). Server on CPU 0, h2load and perf on CPU 1. Each class is"
    echo "its share of the samples times the server's measured CPU per unit (utime + stime); the"
    echo "sampling itself adds a little to that CPU. One run each: indicative, not medians."
    echo
    echo "| scenario | server | total µs/unit | kernel | OpenSSL crypto | OpenSSL rest | libevent | weft | libc | other | samples |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    while read -r sc name unit total kernel crypto ssl libevent weft libc other samples ticks st; do
        if [ "$total" = n/a ]; then
            echo "| $sc | $name | n/a (did not start) | | | | | | | | |"
            continue
        fi
        [ "$st" = ok ] || name="$name (**h2load errors**)"
        echo "| $sc (µs/$unit) | $name | $total | $kernel | $crypto | $ssl | $libevent | $weft | $libc | $other | $samples |"
    done <"$ROWS"
    echo
    echo "Classes: kernel = [kernel.kallsyms] and modules; OpenSSL crypto = libcrypto; OpenSSL rest ="
    echo "libssl; weft = libweft and the https-hello binary; libc = libc and ld.so; other = the rest"
    echo "(the baseline's and nginx's own executables, [vdso], unknown)."
    echo
    echo "## Details"
    echo
    cat "$DETAILS"
} >"$OUT"
cat "$OUT"
