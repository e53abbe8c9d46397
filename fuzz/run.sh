#!/usr/bin/env bash
# fuzz/run.sh SECONDS [TARGET...]: builds weft's libFuzzer targets (`make fuzz`) and runs each
# for SECONDS seconds, one after the other, each on a copy of its corpus fuzz/corpus/TARGET/
# (so that the inputs libFuzzer finds do not grow the repository). The corpus holds the seeds
# and the regression inputs of past crashes: libFuzzer runs them all first.
#
# Run it from anywhere, in a tree where ./configure has run (or set WEFT_BUILDDIR to the build
# tree of a VPATH build). Prints one line per target:
#   fuzz NAME: N executions in S s (E exec/s), C crashes
# and exits non-zero if any target crashed, leaked, timed out or ran out of memory, after
# printing the end of its log and where the crashing input was saved (fuzz/bin/crashes/).
set -euo pipefail

usage() {
  echo "usage: fuzz/run.sh SECONDS [fuzz_nego_wire|fuzz_nego_select|fuzz_tls_server|fuzz_framing|fuzz_proxy|fuzz_endpoint_parse...]" >&2
  exit 2
}
[[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
secs=$1
shift
targets=("$@")
((${#targets[@]} > 0)) || targets=(fuzz_nego_wire fuzz_nego_select fuzz_tls_server fuzz_framing fuzz_proxy fuzz_endpoint_parse)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${WEFT_BUILDDIR:-$ROOT}
if [[ ! -f $BUILD/Makefile ]]; then
  echo "fuzz/run.sh: no Makefile in $BUILD: run ./autogen.sh && ./configure first" >&2
  exit 2
fi

make -C "$BUILD" -j"$(nproc 2>/dev/null || echo 2)" fuzz

WORK=$(mktemp -d "${TMPDIR:-/tmp}/weft-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CRASHES=$BUILD/fuzz/bin/crashes
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=0
for t in "${targets[@]}"; do
  bin=$BUILD/fuzz/bin/$t
  [[ -x $bin ]] || { echo "fuzz/run.sh: unknown target $t" >&2; exit 2; }
  mkdir -p "$WORK/$t/corpus" "$WORK/$t/artifacts"
  if [[ -d $ROOT/fuzz/corpus/$t ]]; then
    cp -R "$ROOT/fuzz/corpus/$t/." "$WORK/$t/corpus/"
    chmod -R u+w "$WORK/$t/corpus" # a distributed tree may be read-only
  fi
  log=$WORK/$t/log
  start=$SECONDS
  rc=0
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$WORK/$t/artifacts/" "$WORK/$t/corpus" >"$log" 2>&1 || rc=$?
  wall=$((SECONDS - start))

  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
  # slow-unit-* files only report slow inputs; everything else libFuzzer saves is a failure
  mapfile -t found < <(find "$WORK/$t/artifacts" -type f ! -name 'slow-unit-*' | sort)
  crashes=${#found[@]}
  ((rc == 0 || crashes > 0)) || crashes=1 # died without saving an input
  echo "fuzz $t: ${execs:-?} executions in ${took:-$wall} s (${rate:-?} exec/s), $crashes crashes"

  if ((rc != 0 || crashes > 0)); then
    failed=1
    echo "----- end of the $t log (exit status $rc)"
    tail -n 80 "$log"
    echo "----- end of the $t log"
    if ((${#found[@]} > 0)); then
      mkdir -p "$CRASHES/$t"
      for f in "${found[@]}"; do
        cp "$f" "$CRASHES/$t/"
        echo "fuzz $t: crashing input saved as $CRASHES/$t/$(basename "$f")"
        echo "  reproduce: $bin $CRASHES/$t/$(basename "$f")"
      done
    fi
  fi
done
exit "$failed"
