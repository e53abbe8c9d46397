#!/usr/bin/env bash
# ci/load.sh BUILDDIR: runs weft's load tests (`make check-load`) in an already configured and
# built tree, and prints their figures. Not part of `make check`: 10,000 concurrent TLS
# connections and 100,000 short TLS handshakes take a few minutes of CPU.
#
#   WEFT_LOAD_CONCURRENT  concurrent connections (default 10000)
#   WEFT_LOAD_HANDSHAKES  sequential handshakes (default 100000)
#
# Exit status: that of `make check-load` (non-zero when a check failed).
set -euo pipefail
exec </dev/null

if (($# != 1)) || [[ ! -f $1/Makefile ]]; then
  echo "usage: $0 BUILDDIR (a configured and built weft tree)" >&2
  exit 2
fi

start=$SECONDS
log=$(mktemp "${TMPDIR:-/tmp}/weft-load.XXXXXX")
trap 'rm -f "$log"' EXIT
rc=0
make -C "$1" check-load 2>&1 | tee "$log" || rc=$?
echo "=== load figures"
grep -E '^(concurrent|handshakes|load):' "$log" || echo "(no figures: the load tests did not get that far)"
echo "=== load: $( ((rc == 0)) && echo ok || echo FAILED) in $((SECONDS - start)) s"
exit "$rc"
