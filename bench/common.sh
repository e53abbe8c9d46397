# shellcheck shell=bash disable=SC2034 # (variables set here are read by the sourcing script)
# bench/common.sh: what bench/run.sh and bench/breakdown.sh share. Sourced, not run.
#
# The sourcing script sets `set -euo pipefail`, BENCH (this directory), BENCH_TAG (the prefix of
# its log lines), BENCH_NAME (its name in messages) and HELP_LINES (the lines of its header
# comment that usage prints, as "2,12") first. Sourcing only defines ROOT, BIN, RESULTS, CFLAGS,
# TICK_US, the PID variables and functions; the script calls them in this order:
#   install_missing PKG...      apt-get what is missing (sets NGINX, INSTALLED_NGINX)
#   build_weft; build NAME ...  weft (sets HELLO), then bench/NAME.c into bench/bin/
#   start_tmp PREFIX            $TMP, and the traps that kill what the script started
#   make_cert; snapshot_weft    $TMP/cert.pem and key.pem; HELLO becomes the copy in $TMP/weft
#   nginx_prefix                $TMP/nginx, for nginx_conf
#   start_server / stop_server, measure, cpu_ticks, h2load_run (NEXT_PORT set by the script)

ROOT=$(dirname "$BENCH")
BIN=$BENCH/bin
RESULTS=$BENCH/results

log() { echo "[$BENCH_TAG $(date +%T)] $*" >&2; }
die() { echo "$BENCH_NAME: error: $*" >&2; exit 1; }
usage() { # [STATUS]: prints the script's header comment (lines HELP_LINES), exits STATUS (2)
    sed -n "${HELP_LINES}p" "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

# --- Dependencies and build ----------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

install_missing() { # PKG...: installs them with apt-get (as root), if any
    INSTALLED_NGINX=0
    if [ $# -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "missing packages ($*); run as root to install them"
        log "installing: $*"
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
        case " $* " in *" nginx "*) INSTALLED_NGINX=1 ;; esac
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

build_weft() { # NO_BUILD (1: use the https-hello already built): sets HELLO
    HELLO=$ROOT/samples/https-hello
    if [ ! -f "$ROOT/Makefile" ]; then
        log "building weft (autogen, configure, make)"
        (cd "$ROOT" && { [ -x configure ] || ./autogen.sh; } && ./configure >&2 && make -j2 >&2) ||
            die "weft does not build"
    elif [ "$1" = 1 ] && [ -x "$HELLO" ]; then
        log "--no-build: using the samples/https-hello already built"
    elif ! (cd "$ROOT" && make -j2 >/dev/null 2>"$BENCH/.make.err"); then
        [ -x "$HELLO" ] || { cat "$BENCH/.make.err" >&2; die "weft does not build"; }
        log "WARNING: 'make' failed (someone mid-edit?); using the samples/https-hello already built"
        tail -5 "$BENCH/.make.err" >&2
    fi
    rm -f "$BENCH/.make.err"
    [ -x "$HELLO" ] || die "samples/https-hello was not built"
    mkdir -p "$BIN" "$RESULTS"
}

CFLAGS="-std=c11 -O2 -g -Wall -Wextra -Werror"
build() { # NAME PKGS [EXTRA...]: bench/NAME.c -> bench/bin/NAME, if out of date
    local name=$1 pkgs=$2
    shift 2
    if [ ! -x "$BIN/$name" ] || [ "$BENCH/$name.c" -nt "$BIN/$name" ] ||
        [ "$BENCH/benchcommon.h" -nt "$BIN/$name" ]; then
        # shellcheck disable=SC2046,SC2086
        gcc $CFLAGS $(pkg-config --cflags $pkgs) "$@" -o "$BIN/$name" "$BENCH/$name.c" \
            $(pkg-config --libs $pkgs) || die "cannot build bench/$name.c"
    fi
}

# --- Temporary directory, clean-up, certificate, weft snapshot ------------------------------------
SERVER_MAIN= # PID we started (nginx: the master)
SERVER_PID=  # the process whose CPU and memory we read (nginx: the worker)
CLIENT_PID=  # a load client running in the background
PERF_PID=    # perf record
PORT=
CLEANUP_FILE= # one more file to remove on exit
cleanup() {
    if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true; fi
    if [ -n "$CLIENT_PID" ]; then kill "$CLIENT_PID" 2>/dev/null || true; fi
    if [ -n "$SERVER_MAIN" ]; then # TERM, not KILL: nginx's master then stops its worker
        kill "$SERVER_MAIN" 2>/dev/null || true
        wait "$SERVER_MAIN" 2>/dev/null || true
    fi
    rm -rf "$TMP" ${CLEANUP_FILE:+"$CLEANUP_FILE"}
}

start_tmp() { # PREFIX: TMP=/tmp/PREFIX.XXXXXX; on EXIT, INT and TERM kills what we started
    TMP=$(mktemp -d "/tmp/$1.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

make_cert() { # an ECDSA P-256 self-signed certificate: $TMP/cert.pem, $TMP/key.pem
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null || die "openssl req failed"
}

# Snapshot the weft build: every run then uses the same binary and library, even if someone
# rebuilds the tree meanwhile (samples/https-hello is a libtool wrapper around .libs/).
snapshot_weft() {
    mkdir -p "$TMP/weft"
    if [ -x "$ROOT/samples/.libs/https-hello" ]; then
        cp "$ROOT/samples/.libs/https-hello" "$TMP/weft/https-hello"
        cp -P "$ROOT"/lib/.libs/libweft.so* "$TMP/weft/" 2>/dev/null || true
    else
        cp "$HELLO" "$TMP/weft/https-hello"
    fi
    HELLO=$TMP/weft/https-hello
    LD_LIBRARY_PATH=$TMP/weft "$HELLO" --help >/dev/null 2>&1 || die "the weft snapshot does not run (${HELLO})"
}

# --- nginx ---------------------------------------------------------------------------------------
nginx_prefix() { # $TMP/nginx: logs, temporary files, the 1 MiB file
    mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
    head -c 1048576 /dev/zero | tr '\0' x >"$TMP/nginx/bytes-1m"
}
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
        listen 127.0.0.1:$1 ssl;    # no "http2": HTTP/1.1 only, ALPN http/1.1
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        location = / { return 200 "Hello, World!"; }
        location = /bytes/1048576 { alias $TMP/nginx/bytes-1m; }
    }
}
EOF
}

# --- Server control and measurement ----------------------------------------------------------------
TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_ticks() { # utime + stime (fields 14, 15) of PID, in clock ticks
    local s
    s=$(cat "/proc/$1/stat") || return 1
    s=${s##*') '}
    awk '{print $12 + $13}' <<<"$s"
}

stop_server() {
    if [ -n "$SERVER_MAIN" ]; then
        kill -TERM "$SERVER_MAIN" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_MAIN" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_MAIN" 2>/dev/null || true
        wait "$SERVER_MAIN" 2>/dev/null || true
    fi
    SERVER_MAIN= SERVER_PID=
}

# NAME (weft, weft-limits, baseline, nginx): sets PORT (the next of NEXT_PORT), SERVER_MAIN,
# SERVER_PID; returns 1 if it would not start. weft: with --threads WEFT_THREADS if set;
# weft-limits: also with LIMIT_FLAGS.
start_server() {
    local name=$1 out=$TMP/$1.out
    PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1)) # a fresh port each start: no TIME_WAIT games
    case $name in
        weft|weft-limits)
            local extra=()
            [ -n "${WEFT_THREADS:-}" ] && extra=(--threads "$WEFT_THREADS")
            [ "$name" = weft-limits ] && extra+=("${LIMIT_FLAGS[@]}")
            LD_LIBRARY_PATH=$TMP/weft taskset -c 0 "$HELLO" --listen "127.0.0.1:$PORT" --cert "$TMP/cert.pem" \
                --key "$TMP/key.pem" "${extra[@]}" >"$out" 2>&1 &
            ;;
        baseline)
            taskset -c 0 "$BIN/baseline" --listen "127.0.0.1:$PORT" --cert "$TMP/cert.pem" \
                --key "$TMP/key.pem" >"$out" 2>&1 &
            ;;
        nginx)
            [ -x "$NGINX" ] || return 1
            nginx_conf "$PORT" >"$TMP/nginx/nginx.conf"
            taskset -c 0 "$NGINX" -e "$TMP/nginx/logs/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" >"$out" 2>&1 &
            ;;
    esac
    SERVER_MAIN=$!
    local i
    for i in $(seq 100); do
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
    log "$name did not start in 10 s: $(tail -3 "$out" | tr '\n' ' ')"
    stop_server
    return 1
}

load() { taskset -c 1 "$@"; } # load generators on CPU 1

h2load_run() { # N CONNS PATH -> prints "done elapsed"; 1 unless all N succeeded
    local out
    out=$(load h2load --h1 -t 1 -c "$2" -n "$1" "https://127.0.0.1:$PORT$3" 2>&1) || true
    local done fail secs
    done=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' <<<"$out")
    fail=$(sed -n 's/^requests: .* \([0-9]*\) failed.*/\1/p' <<<"$out")
    secs=$(sed -n 's/^finished in \([0-9.]*\)\(m\{0,1\}s\).*/\1 \2/p' <<<"$out" |
        awk '{print ($2 == "ms") ? $1 / 1000 : $1}')
    echo "${done:-0} ${secs:-0}"
    [ "${done:-0}" = "$1" ] && [ "${fail:-1}" = 0 ]
}

# measure CMD...: runs CMD (a measured load) with the server's CPU ticks read just before and
# just after it. Sets OUT (CMD's output), TICKS (the server's CPU ticks during it) and ST (ok, or
# error when CMD failed).
measure() {
    local c0 c1
    ST=ok
    c0=$(cpu_ticks "$SERVER_PID")
    OUT=$("$@") || ST=error
    c1=$(cpu_ticks "$SERVER_PID")
    TICKS=$((c1 - c0))
}
