#!/usr/bin/env bash
# ci/chaos.sh BUILDDIR: the big run of the chaos peer (tests/check_chaos) in an already
# configured and built tree; .ci/run gives it the ASan + UBSan tree of its sanitizers stage, so
# that a sanitizer report fails it. `make check` (and so ci/valgrind.sh and ci/tsan.sh) runs
# the same suite with 200 connections per server.
#
#   WEFT_CHAOS_CONNECTIONS  connections per server, TLS and STARTTLS (default 10000 here)
#   WEFT_CHAOS_CONCURRENCY  chaos connections at once (default 64 here)
#   WEFT_CHAOS_SEED         replays a run (each run prints its seed)
#
# On 2 cores: about 10 s in a gcc build, 30 s under ASan + UBSan.
# Exit status: 0 when both tests passed with no sanitizer report, non-zero otherwise.
set -euo pipefail
exec </dev/null

if (($# != 1)) || [[ ! -f $1/Makefile ]]; then
  echo "usage: $0 BUILDDIR (a configured and built weft tree)" >&2
  exit 2
fi
cd "$1"
start=$SECONDS
make -s tests/check_chaos >/dev/null
export WEFT_CHAOS_CONNECTIONS=${WEFT_CHAOS_CONNECTIONS:-10000}
export WEFT_CHAOS_CONCURRENCY=${WEFT_CHAOS_CONCURRENCY:-64}
export WEFT_BUILDDIR=$PWD
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export CK_VERBOSITY=${CK_VERBOSITY:-normal}
echo "chaos: $WEFT_CHAOS_CONNECTIONS connections per server, $WEFT_CHAOS_CONCURRENCY at a time"
rc=0
./tests/check_chaos 2>&1 || rc=$?
echo "chaos: $( ((rc == 0)) && echo ok || echo "FAILED (exit status $rc)") in $((SECONDS - start)) s"
exit "$rc"
