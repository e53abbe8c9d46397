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
BENCH_TAG=breakdown BENCH_NAME=breakdown.sh HELP_LINES=2,15 # usage: lines 2-15 of this file
# shellcheck source=bench/common.sh
. "$BENCH/common.sh" # ROOT BIN RESULTS; log, die, build, start_server, ... (shared with run.sh)

QUICK=0
SERVERS=weft,baseline,nginx
NO_BUILD=0
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --servers) SERVERS=${2:?--servers needs a list}; shift ;;
        --no-build) NO_BUILD=1 ;;
        -h|--help) usage 0 ;;
        *) echo "$BENCH_NAME: unknown option $1" >&2; usage ;;
    esac
    shift
done

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
have perf || missing+=(linux-perf)
have nginx || missing+=(nginx)
have h2load || missing+=(nghttp2-client)
have gcc && have make || missing+=(build-essential)
have pkg-config || missing+=(pkg-config)
have taskset || missing+=(util-linux)
install_missing "${missing[@]}"
PERF=$(command -v perf)

build_weft "$NO_BUILD"
build baseline "libevent_openssl libevent openssl"

# --- 2. Temporary directory, certificate, weft snapshot, nginx configuration ---------------------
start_tmp weft-breakdown

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

make_cert
snapshot_weft
nginx_prefix

IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
for s in "${SERVER_LIST[@]}"; do
    case $s in weft|baseline|nginx) ;; *) die "unknown server '$s' (weft, baseline, nginx)" ;; esac
done

# --- 3. Servers, loads, profiles --------------------------------------------------------------------
NEXT_PORT=22000

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
        S1) h2load_run "$S1_WARM" 50 / >/dev/null || true ;;
        S3) h2load_run "$S3_WARM" 10 /bytes/1048576 >/dev/null || true ;;
    esac
    local data=$TMP/$sc-$name.data
    taskset -c 1 "$PERF" record -e cpu-clock -F $FREQ -p "$SERVER_PID" -o "$data" >"$TMP/perf.out" 2>&1 &
    PERF_PID=$!
    sleep 0.5 # perf attaches
    measure h2load_run "$n" "$conns" "$path"
    local st=$ST ticks=$TICKS
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
    stop_server
    local total
    total=$(awk -v t=$ticks -v w="$n" -v u="$TICK_US" 'BEGIN { printf "%.1f", t * u / w }')
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
    echo "$line ${samples:-?} $ticks $st" >>"$ROWS"
    log "$sc $name: $total µs/$unit ($ticks ticks, ${samples:-?} samples)"
    {
        echo "### $sc $name: DSOs ($total µs CPU per $unit, $ticks ticks, ${samples:-?} samples)"
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
