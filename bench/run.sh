#!/usr/bin/env bash
# bench/run.sh: compares weft's samples/https-hello with a hand-written libevent
# bufferevent_openssl server (bench/baseline.c) and nginx, by SERVER CPU time per unit of work.
#
#   bench/run.sh [--quick] [--reps N] [--servers weft,weft-limits,baseline,nginx]
#                [--weft-threads N] [--no-build]   (--no-build: use the weft already built)
#
# Installs what is missing (apt-get), builds weft, the baseline and the load clients, makes an
# ECDSA P-256 certificate, then runs scenarios S1..S5 (S1 and S3 with h2load and with wrk)
# interleaved (weft, weft-limits, baseline, nginx, weft, ...), the server pinned to CPU 0 and
# the load generator to CPU 1. weft-limits is https-hello with --idle-timeout 60
# --write-timeout 30 --max-connections 20000. Prints a Markdown table with issue #17's
# targets and writes bench/results/latest.md and bench/results/latest.csv. See bench/README.md.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
BENCH_TAG=bench BENCH_NAME=run.sh HELP_LINES=2,12 # usage: lines 2-12 of this file
# shellcheck source=bench/common.sh
. "$BENCH/common.sh" # ROOT BIN RESULTS; log, die, build, start_server, ...

REPS=3
QUICK=0
SERVERS=weft,weft-limits,baseline,nginx
LIMIT_FLAGS=(--idle-timeout 60 --write-timeout 30 --max-connections 20000) # weft-limits
WEFT_THREADS=
NO_BUILD=0
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1; REPS=1 ;;
        --reps) REPS=${2:?--reps needs a number}; shift ;;
        --servers) SERVERS=${2:?--servers needs a list}; shift ;;
        --weft-threads) WEFT_THREADS=${2:?--weft-threads needs a number}; shift ;;
        --no-build) NO_BUILD=1 ;;
        -h|--help) usage 0 ;;
        *) echo "$BENCH_NAME: unknown option $1" >&2; usage ;;
    esac
    shift
done
case $REPS in ''|*[!0-9]*|0) echo "run.sh: --reps needs a number >= 1" >&2; exit 2 ;; esac

# Work sizes: full run, then --quick.
if [ "$QUICK" = 1 ]; then
    S1_N=30000;  S1_WARM=3000
    WRK_SECS=1;  WRK_WARM=1 # S1 and S3 with wrk: seconds of load
    S2_N=600;    S2_WARM=100
    S3_N=300;    S3_WARM=10 # 60 MiB was 3-5 clock ticks: one tick = 20 % of the figure
    S4_N=5000
    S5_SECS=3;   S5_WARM=1
else
    S1_N=300000; S1_WARM=20000
    WRK_SECS=4;  WRK_WARM=1
    S2_N=4000;   S2_WARM=300
    S3_N=1000;   S3_WARM=50
    S4_N=5000
    S5_SECS=10;  S5_WARM=2
fi
S5_RATE=2000
S5_CONNS=20

# --- 1. Dependencies ---------------------------------------------------------------------------
missing=()
have nginx || missing+=(nginx)
have h2load || missing+=(nghttp2-client)
have wrk || missing+=(wrk)
have gcc && have make || missing+=(build-essential)
have pkg-config || missing+=(pkg-config)
have openssl || missing+=(openssl)
have taskset || missing+=(util-linux)
if have pkg-config; then
    pkg-config --exists libevent_openssl || missing+=(libevent-dev)
    pkg-config --exists openssl || missing+=(libssl-dev)
else
    missing+=(libevent-dev libssl-dev)
fi
if [ ! -x "$ROOT/configure" ] && ! { have autoreconf && have libtoolize && have automake; }; then
    missing+=(autoconf automake libtool)
fi
install_missing "${missing[@]}"
# Debian's nginx package starts the system service on :80 when installed; stop that one (only
# if we installed it just now): it is not ours and would only sit on the CPUs.
if [ $INSTALLED_NGINX = 1 ] && [ -s /run/nginx.pid ]; then
    log "stopping the nginx service that the package started"
    service nginx stop >/dev/null 2>&1 || kill "$(cat /run/nginx.pid)" 2>/dev/null || true
fi

# --- 2. Build ---------------------------------------------------------------------------------
build_weft "$NO_BUILD"
build baseline "libevent_openssl libevent openssl"
build hsclient openssl -pthread
build idleclient openssl -pthread
build latclient openssl

# --- 3. Certificate, nginx prefix ---------------------------------------------------------------
start_tmp weft-bench
CLEANUP_FILE=$RESULTS/latest.csv.tmp
make_cert
snapshot_weft
WEFT_BUILT=$(date -u -r "$ROOT/samples/https-hello" '+%Y-%m-%d %H:%M UTC')
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true # S4 holds 5,000 connections: servers inherit it

nginx_prefix

IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
for s in "${SERVER_LIST[@]}"; do
    case $s in weft|weft-limits|baseline|nginx) ;;
        *) die "unknown server '$s' (weft, weft-limits, baseline, nginx)" ;;
    esac
done
if [[ ",$SERVERS," == *,nginx,* ]] && [ ! -x "$NGINX" ]; then
    log "WARNING: nginx is not installed: its column will be n/a"
fi

# --- 4. Server control and measurement ------------------------------------------------------------
NEXT_PORT=21000
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

CSV=$RESULTS/latest.csv.tmp
echo "scenario,rep,server,value,unit,server_cpu_ticks,work,work_unit,client_rate_per_s,status,detail" >"$CSV"
record() { # SCENARIO REP SERVER VALUE UNIT TICKS WORK WORK_UNIT RATE STATUS DETAIL
    echo "$1,$2,$3,$4,$5,$6,$7,$8,$9,${10},\"${11}\"" >>"$CSV"
    log "$1 rep $2 $3: $4 $5 (status ${10}; ${11})"
}
us_per() { awk -v t="$1" -v w="$2" -v u="$TICK_US" 'BEGIN { if (w > 0) printf "%.1f", t * u / w; else print "NA" }'; }
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2" | head -1; } # KEY=value from a RESULT line
per_s() { awk -v n="$1" -v s="$2" -v f="$3" 'BEGIN { if (s > 0) printf f, n / s; else print 0 }'; } # N SECS FORMAT
client() { load "$BIN/$1" --port "$PORT" "${@:2}" 2>&1; } # NAME ARGS...: bench/bin/NAME on CPU 1

# Each scenario function: NAME REP; the server is running (SERVER_PID, PORT).
scenario_s1() {
    h2load_run "$S1_WARM" 50 / >/dev/null || true
    measure h2load_run "$S1_N" 50 /
    local n=${OUT% *} secs=${OUT#* }
    record S1-h2load "$2" "$1" "$(us_per $TICKS "$n")" us_cpu/req $TICKS "$n" requests \
        "$(per_s "$n" "$secs" %.0f)" $ST "h2load --h1 -c 50 -n $S1_N GET /"
}

wrk_bytes() { # "23.36MB" -> bytes (wrk's units are binary: KB = 1024 B)
    awk -v v="$1" 'BEGIN { m = 1; u = v; sub(/^[0-9.]+/, "", u); n = substr(v, 1, length(v) - length(u))
        if (u == "KB") m = 1024; else if (u == "MB") m = 1048576; else if (u == "GB") m = 1073741824
        else if (u == "TB") m = 1099511627776; else if (u != "B" && u != "") m = -1
        printf "%.0f", (m < 0) ? -1 : n * m }'
}

wrk_run() { # SECONDS CONNS PATH -> prints "requests elapsed bytes errors"; 1 on any error
    local out
    out=$(load wrk -t 1 -c "$2" -d "${1}s" "https://127.0.0.1:$PORT$3" 2>&1) || true
    local n secs bytes sockerr non2xx
    n=$(sed -n 's/^ *\([0-9]*\) requests in \([0-9.]*\)\(m\{0,1\}s\), \([0-9.]*[KMGT]\{0,1\}B\) read.*/\1/p' <<<"$out")
    secs=$(sed -n 's/^ *[0-9]* requests in \([0-9.]*\)\(m\{0,1\}s\),.*/\1 \2/p' <<<"$out" |
        awk '{print ($2 == "ms") ? $1 / 1000 : $1}')
    bytes=$(wrk_bytes "$(sed -n 's/^ *[0-9]* requests in .*, \([0-9.]*[KMGT]\{0,1\}B\) read.*/\1/p' <<<"$out")")
    # "Socket errors: connect A, read B, write C, timeout D" and "Non-2xx or 3xx responses: N"
    # appear only when there were some.
    sockerr=$(sed -n 's/^ *Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' <<<"$out" |
        awk '{print $1 + $2 + $3 + $4}')
    non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: \([0-9]*\).*/\1/p' <<<"$out")
    echo "${n:-0} ${secs:-0} ${bytes:--1} socket_errors=${sockerr:-0} non2xx=${non2xx:-0}"
    [ "${n:-0}" -gt 0 ] && [ "${sockerr:-0}" = 0 ] && [ "${non2xx:-0}" = 0 ] && [ "${bytes:--1}" -gt 0 ]
}

scenario_s1_wrk() {
    wrk_run "$WRK_WARM" 50 / >/dev/null || true
    measure wrk_run "$WRK_SECS" 50 /
    local n secs bytes errs
    read -r n secs bytes errs <<<"$OUT"
    record S1-wrk "$2" "$1" "$(us_per $TICKS "$n")" us_cpu/req $TICKS "$n" requests \
        "$(per_s "$n" "$secs" %.0f)" $ST "wrk -t 1 -c 50 -d ${WRK_SECS}s GET /; read ${bytes} B; $errs"
}

scenario_s3_wrk() {
    wrk_run "$WRK_WARM" 10 /bytes/1048576 >/dev/null || true
    measure wrk_run "$WRK_SECS" 10 /bytes/1048576
    local n secs bytes errs check
    read -r n secs bytes errs <<<"$OUT"
    # Work: completed responses x 1 MiB. wrk's own byte count (rounded to 3 digits) must agree:
    # at least 0.99 x that (headers come on top), at most what 10 more responses in flight at
    # the end would add.
    check=$(awk -v n="$n" -v b="$bytes" 'BEGIN { m = 1048576; r = (n > 0) ? b / (n * m) : 0
        ok = (n > 0 && b >= 0.99 * n * m && b <= (n + 10) * (m + 1024) * 1.01)
        printf "%s %.3f", ok ? "ok" : "bad", r }')
    [ "${check% *}" = ok ] || ST=error
    record S3-wrk "$2" "$1" "$(us_per $TICKS "$n")" us_cpu/MiB $TICKS "$n" MiB \
        "$(per_s "$n" "$secs" %.1f)" $ST "wrk -t 1 -c 10 -d ${WRK_SECS}s GET /bytes/1048576 (rate in MiB/s); read ${bytes} B = ${check#* } x requests x 1 MiB; $errs"
}

scenario_s2() { # resume: "" or --resume
    local resume=$3 sc=S2
    [ -n "$resume" ] && sc=S2r
    client hsclient -n "$S2_WARM" -c 4 $resume >/dev/null || true
    measure client hsclient -n "$S2_N" -c 4 $resume
    local line ok
    line=$(grep '^RESULT' <<<"$OUT" || echo "RESULT ok=0")
    ok=$(field ok "$line")
    [ "$ST" = ok ] || log "hsclient: $(grep -v '^RESULT' <<<"$OUT" | tr '\n' ' ')"
    record $sc "$2" "$1" "$(us_per $TICKS "$ok")" us_cpu/conn $TICKS "$ok" connections \
        "$(field rate "$line")" $ST \
        "hsclient -c 4 TLS1.3 $resume resumed=$(field resumed "$line")/$(field resumable "$line") failed=$(field failed "$line") tickets=$(field tickets "$line") tickets_per_conn=$(field tickets_per_conn "$line") tickets_min=$(field tickets_min "$line") tickets_max=$(field tickets_max "$line")"
}

scenario_s3() {
    h2load_run "$S3_WARM" 10 /bytes/1048576 >/dev/null || true
    measure h2load_run "$S3_N" 10 /bytes/1048576
    local n=${OUT% *} secs=${OUT#* }
    # work unit: MiB of body sent (each response is exactly 1 MiB)
    record S3-h2load "$2" "$1" "$(us_per $TICKS "$n")" us_cpu/MiB $TICKS "$n" MiB \
        "$(per_s "$n" "$secs" %.1f)" $ST "h2load --h1 -c 10 -n $S3_N GET /bytes/1048576 (rate in MiB/s)"
}

scenario_s4() {
    client hsclient -n 50 -c 1 >/dev/null || true # warm-up
    sleep 0.5
    local r0 r1 out=$TMP/idle.out st=ok line
    r0=$(rss_kib "$SERVER_PID")
    # taskset itself, not the load function: in the background a function runs in a subshell,
    # and $! would be that subshell, not idleclient (which a kill would then leave running)
    taskset -c 1 "$BIN/idleclient" --port "$PORT" -n "$S4_N" -c 4 --hold 120 >"$out" 2>&1 &
    CLIENT_PID=$!
    for _ in $(seq 1200); do
        grep -q '^READY' "$out" && break
        kill -0 "$CLIENT_PID" 2>/dev/null || break
        sleep 0.1
    done
    sleep 1 # let the server settle
    r1=$(rss_kib "$SERVER_PID")
    line=$(grep '^READY' "$out" || echo "READY open=0 failed=$S4_N")
    kill -TERM "$CLIENT_PID" 2>/dev/null || true
    wait "$CLIENT_PID" 2>/dev/null || true
    CLIENT_PID=
    local open
    open=$(field open "$line")
    [ "$(field failed "$line")" = 0 ] && [ "$open" = "$S4_N" ] || st=error
    record S4 "$2" "$1" \
        "$(awk -v a="$r0" -v b="$r1" -v n="$open" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "NA" }')" \
        KiB_rss/conn 0 "$open" connections 0 $st \
        "rss ${r0}KiB->${r1}KiB; $line"
}

scenario_s5() {
    client latclient --rate "$S5_RATE" -c "$S5_CONNS" --duration "$S5_WARM" >/dev/null || true
    measure client latclient --rate "$S5_RATE" -c "$S5_CONNS" --duration "$S5_SECS"
    local line
    line=$(grep '^RESULT' <<<"$OUT" || echo "RESULT done=0")
    record S5 "$2" "$1" "$(field p99_us "$line")" us_p99 $TICKS "$(field done "$line")" requests \
        "$(field rate "$line")" $ST \
        "latclient ${S5_RATE}/s x ${S5_SECS}s over $S5_CONNS conns: p50=$(field p50_us "$line") p90=$(field p90_us "$line") max=$(field max_us "$line") errors=$(field errors "$line") cpu_us/req=$(us_per $TICKS "$(field done "$line")")"
}

run_one() { # SCENARIO REP SERVER
    if ! start_server "$3"; then
        record "$1" "$2" "$3" NA - 0 0 - 0 no_server "server did not start"
        return
    fi
    case $1 in
        S1-h2load) scenario_s1 "$3" "$2" ;;
        S1-wrk) scenario_s1_wrk "$3" "$2" ;;
        S2) scenario_s2 "$3" "$2" "" ;;
        S2r) scenario_s2 "$3" "$2" --resume ;;
        S3-h2load) scenario_s3 "$3" "$2" ;;
        S3-wrk) scenario_s3_wrk "$3" "$2" ;;
        S4) scenario_s4 "$3" "$2" ;;
        S5) scenario_s5 "$3" "$2" ;;
    esac
    stop_server
}

# --- 5. Run ------------------------------------------------------------------------------------
START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$ROOT" && git status --porcelain --untracked-files=no -- lib include samples 2>/dev/null | wc -l)
log "servers: ${SERVER_LIST[*]}; reps: $REPS; quick: $QUICK; weft at $REV ($DIRTY modified files in lib/include/samples)"
SCENARIOS="S1-h2load S1-wrk S2 S2r S3-h2load S3-wrk S4 S5"
for sc in $SCENARIOS; do
    for rep in $(seq "$REPS"); do
        for s in "${SERVER_LIST[@]}"; do
            run_one "$sc" "$rep" "$s"
        done
    done
done
mv "$CSV" "$RESULTS/latest.csv"
CSV=$RESULTS/latest.csv

# --- 6. Table ----------------------------------------------------------------------------------
median() { # SCENARIO SERVER -> median of the ok values, or n/a
    awk -F, -v sc="$1" -v sv="$2" 'NR > 1 && $1 == sc && $3 == sv && $10 == "ok" && $4 != "NA" { v[n++] = $4 }
        END { if (!n) { print "n/a"; exit }
              for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
              m = (n % 2) ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
              printf (m >= 100 ? "%.0f" : "%.1f"), m }' "$CSV"
}
errors() { awk -F, -v sc="$1" 'NR > 1 && $1 == sc && $10 != "ok" { n++ } END { print n + 0 }' "$CSV"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a") print "n/a"; else print (a <= b) ? "yes" : "no" }'; }
want() { # SCENARIO SERVER: median only if SERVER was selected
    [[ ",$SERVERS," == *",$2,"* ]] && median "$1" "$2" || echo n/a
}

TABLE=$TMP/table.md
best_of() { # A B -> the lower of two medians (n/a ignored), or n/a
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a") print b; else if (b == "n/a") print a
        else print (a + 0 <= b + 0) ? a : b }'
}
plus() { awk -v a="$1" -v d="$2" 'BEGIN { if (a == "n/a") print "n/a"; else printf "%.2f", a + d }'; }
MET=0 TOTAL=0
{
    echo "| scenario | unit | weft | weft-limits | baseline | nginx | best peer | weft/best | weft-limits/best | target | met |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
    for sc in $SCENARIOS; do
        w=$(want $sc weft) l=$(want $sc weft-limits) b=$(want $sc baseline) n=$(want $sc nginx)
        best=$(best_of "$b" "$n")
        rw=$(ratio "$w" "$best") rl=$(ratio "$l" "$best")
        case $sc in
            S1-h2load) name="S1 keep-alive GET /, 50 conns (h2load)"; unit="µs CPU/req" ;;
            S1-wrk) name="S1 keep-alive GET /, 50 conns (wrk)"; unit="µs CPU/req" ;;
            S2) name="S2 full TLS 1.3 handshake/conn"; unit="µs CPU/conn" ;;
            S2r) name="S2r resumed TLS 1.3/conn"; unit="µs CPU/conn" ;;
            S3-h2load) name="S3 GET 1 MiB, 10 conns (h2load)"; unit="µs CPU/MiB" ;;
            S3-wrk) name="S3 GET 1 MiB, 10 conns (wrk)"; unit="µs CPU/MiB" ;;
            S4) name="S4 $S4_N idle TLS conns"; unit="KiB RSS/conn" ;;
            S5) name="S5 p99 at ${S5_RATE} req/s"; unit="µs p99" ;;
        esac
        # Targets of issue #17, for weft and for weft-limits alike.
        case $sc in
            S1-*) target="<= 0.85 x best peer"; mw=$(le "$rw" 0.85) ml=$(le "$rl" 0.85) ;;
            S2|S2r) target="<= 1.0 x best peer"; mw=$(le "$rw" 1.0) ml=$(le "$rl" 1.0) ;;
            S3-*) target="<= 0.9 x best peer"; mw=$(le "$rw" 0.9) ml=$(le "$rl" 0.9) ;;
            S4) lim=$(plus "$b" 0.3)
                target="<= baseline + 0.3 KiB ($lim)"; mw=$(le "$w" "$lim") ml=$(le "$l" "$lim") ;;
            S5) target="<= best peer's p99"; mw=$(le "$w" "$best") ml=$(le "$l" "$best") ;;
        esac
        # met: yes when every weft server that ran meets it; "no (weft-limits)" names the one
        # that does not when they differ.
        if [ "$mw" = n/a ] && [ "$ml" = n/a ]; then met=n/a
        elif [ "$mw" != no ] && [ "$ml" != no ]; then met=yes
        elif [ "$mw" = no ] && [ "$ml" = no ]; then met=no
        elif [ "$mw" = no ]; then met="no (weft)"
        else met="no (weft-limits)"; fi
        if [ "$met" != n/a ]; then
            TOTAL=$((TOTAL + 1))
            [ "$met" = yes ] && MET=$((MET + 1))
        fi
        e=$(errors $sc)
        [ "$e" != 0 ] && name="$name (**$e failed runs**)"
        echo "| $name | $unit | $w | $l | $b | $n | $best | $rw | $rl | $target | $met |"
    done
    echo
    echo "targets met: $MET of $TOTAL"
} >"$TABLE"

ELAPSED=$(($(date +%s) - START))
{
    echo "# weft bench: latest results"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(uname -r)); weft $REV ($DIRTY files modified in lib/include/samples; samples/https-hello built $WEFT_BUILT);"
    echo "reps: $REPS (median shown); quick: $QUICK; servers: $SERVERS${WEFT_THREADS:+; weft --threads $WEFT_THREADS}; run took ${ELAPSED}s."
    echo "nginx: $("$NGINX" -v 2>&1 | sed 's/.*version: //' || echo none); OpenSSL: $(openssl version | cut -d' ' -f2); libevent: $(pkg-config --modversion libevent)."
    echo "Load average (1/5/15 min) at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg) (above ~1.5, other jobs shared the 2 CPUs)."
    echo "Server on CPU 0, load generator on CPU 1. Lower is better everywhere. Best peer: the lower of"
    echo "baseline and nginx. weft-limits: https-hello ${LIMIT_FLAGS[*]}. Raw runs: latest.csv."
    echo
    cat "$TABLE"
} >"$RESULTS/latest.md"
cat "$RESULTS/latest.md"
