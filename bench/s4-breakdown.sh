#!/usr/bin/env bash
# bench/s4-breakdown.sh: builds bench/s4-breakdown.c and runs it (issue #7, scenario S4).
#
#   bench/s4-breakdown.sh [-n N] [--tree DIR] [--all] [-- extra s4-breakdown options]
#
# Builds weft in DIR (default: this tree; `make -j2`, nothing else), then links s4-breakdown
# statically against DIR/lib/.libs/libweft.a, libevent and OpenSSL (so addr2line names even
# libevent's static functions) and builds bench/idleclient.c, all into $S4_OUT (default
# /tmp/s4-breakdown; nothing is written under bench/). Then runs, for N connections (default
# 2000): the instrumented breakdown, and the plain (no hooks) RSS figure. --all also runs
# each application-side experiment (session cache off, tickets off, num_tickets 0/1,
# SSL_free_buffers, read-ahead off) in plain mode. Output: Markdown on stdout.
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
TREE=$(dirname "$BENCH")
N=2000
ALL=0
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
        -n) N=$2; shift ;;
        --tree) TREE=$(cd "$2" && pwd); shift ;;
        --all) ALL=1 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) sed -n '2,12p' "$0"; exit 2 ;;
    esac
    shift
done
OUT=${S4_OUT:-/tmp/s4-breakdown}
mkdir -p "$OUT"
make -C "$TREE" -j2 >/dev/null
cc -g -O2 -std=gnu11 -Wall -I"$TREE/include" "$BENCH/s4-breakdown.c" -o "$OUT/s4-breakdown" \
    "$TREE/lib/.libs/libweft.a" -Wl,-Bstatic -levent_openssl -levent -lssl -lcrypto \
    -Wl,-Bdynamic -lpthread -ldl -lm
cc -O2 -std=gnu11 "$BENCH/idleclient.c" -o "$OUT/idleclient" -lssl -lcrypto -lpthread
ulimit -n "$(ulimit -Hn)"
run() { "$OUT/s4-breakdown" --client "$OUT/idleclient" -n "$N" "$@"; echo; }
run "${EXTRA[@]}"
run --plain "${EXTRA[@]}"
if [ "$ALL" = 1 ]; then
    for x in --no-cache --no-tickets "--num-tickets 1" "--num-tickets 0" --free-buffers \
             --no-read-ahead "--no-cache --num-tickets 1 --free-buffers"; do
        # shellcheck disable=SC2086
        run --plain $x | grep -E '^mode|VmRSS|sess_number|^#'
    done
fi
