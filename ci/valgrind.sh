#!/usr/bin/env bash
# ci/valgrind.sh: runs the Check suites of a built tree under valgrind's memcheck.
#
#   ci/valgrind.sh [BUILD_DIR]      (default: .; configured and built with `make`)
#
# Each suite runs in one process (CK_FORK=no, so memcheck sees every test) as
#   CK_FORK=no ./libtool --mode=execute valgrind --leak-check=full \
#     --errors-for-leak-kinds=definite,indirect --error-exitcode=1 tests/check_SUITE
# A suite passes when Check reports no failure and memcheck no error (invalid reads or writes,
# uninitialised values, bad frees, definitely or indirectly lost memory). Still-reachable
# blocks (libevent's and OpenSSL's one-time globals) are not errors with these leak kinds, so
# no suppression file is needed; ci/valgrind.supp is used if it exists.
#
# The suites are Makefile.am's WEFT_SUITES (so a new suite is picked up), built here if needed,
# run NPROC at a time, minus SKIP below. It prints one line per suite:
#   valgrind SUITE: ok (N s)        or        valgrind SUITE: FAILED (N s): why
# then which suites ran and which were skipped and why. Exit status 0 when all that ran passed.
set -euo pipefail
exec </dev/null

BUILD=$(cd "${1:-.}" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS=${VALGRIND_JOBS:-$(nproc 2>/dev/null || echo 2)}
SUITE_TIMEOUT=${VALGRIND_SUITE_TIMEOUT:-600}
start=$SECONDS

# Suites not run under valgrind, with the reason (measured on 2 cores; keep the stage under
# about 8 minutes). Format: "tests/check_NAME: reason".
SKIP=(
)

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

if ! command -v valgrind >/dev/null 2>&1; then
  if ! apt-cache policy valgrind 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    as_root apt-get update
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind
fi

cd "$BUILD"
if [[ ! -f Makefile || ! -x libtool ]]; then
  echo "valgrind: $BUILD is not a configured build tree (no Makefile or libtool)" >&2
  exit 1
fi

# The suites, as Makefile.am lists them (make evaluates its own variable).
# shellcheck disable=SC2016 # $(WEFT_SUITES) is for make
read -r -a SUITES <<<"$(make -s --no-print-directory \
  --eval='weft-print-suites: ; @echo $(WEFT_SUITES)' weft-print-suites)"
if ((${#SUITES[@]} == 0)); then
  echo "valgrind: no suite found in WEFT_SUITES" >&2
  exit 1
fi
make -s -j"$JOBS" "${SUITES[@]}" >/dev/null

skip_reason() {
  local entry
  for entry in "${SKIP[@]}"; do
    if [[ ${entry%%:*} == "$1" ]]; then
      printf '%s' "${entry#*: }"
      return 0
    fi
  done
  return 1
}

VALGRIND=(valgrind --leak-check=full "--errors-for-leak-kinds=definite,indirect"
  --error-exitcode=1 --num-callers=30)
if [[ -f $ROOT/ci/valgrind.supp ]]; then
  VALGRIND+=("--suppressions=$ROOT/ci/valgrind.supp")
fi

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/weft-valgrind.XXXXXX")
RESULTS=$LOGS/results
: >"$RESULTS"

# run_suite SUITE: runs it under memcheck and appends "SUITE|ok|SECONDS|why" to RESULTS.
run_suite() {
  local suite=$1 name log t0 rc=0 verdict=ok why="" errors summary
  name=$(basename "$suite")
  log=$LOGS/$name.log
  t0=$(date +%s)
  # The test environment of Makefile.am's AM_TESTS_ENVIRONMENT; CK_FORK=no disables Check's
  # timeouts, so `timeout` bounds the suite instead.
  CK_FORK=no CK_VERBOSITY=normal WEFT_BUILDDIR="$BUILD" WEFT_SRCDIR="$ROOT" \
    timeout -k 10 "$SUITE_TIMEOUT" ./libtool --mode=execute "${VALGRIND[@]}" "./$suite" \
    >"$log" 2>&1 || rc=$?
  errors=$(sed -n 's/^==[0-9]*== ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -n 1)
  summary=$(grep -E '^[0-9]+%: Checks: ' "$log" | tail -n 1 || true)
  if ((rc == 124 || rc == 137)); then
    verdict=FAILED why="time limit of $SUITE_TIMEOUT s reached"
  elif [[ -z $summary ]]; then
    verdict=FAILED why="no Check summary (exit status $rc)"
  elif [[ ${errors:-0} != 0 ]]; then
    verdict=FAILED why="$errors memcheck error(s); $summary"
  elif [[ $summary != 100%* || $rc != 0 ]]; then
    verdict=FAILED why="$summary (exit status $rc)"
  fi
  echo "$suite|$verdict|$(($(date +%s) - t0))|$why" >>"$RESULTS"
}

RAN=()
SKIPPED=()
running=0
for suite in "${SUITES[@]}"; do
  if reason=$(skip_reason "$suite"); then
    SKIPPED+=("$suite ($reason)")
    continue
  fi
  RAN+=("$suite")
  run_suite "$suite" &
  running=$((running + 1))
  if ((running >= JOBS)); then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

failed=0
for suite in "${RAN[@]}"; do
  line=$(grep -F "$suite|" "$RESULTS" | head -n 1 || true)
  IFS='|' read -r _ verdict seconds why <<<"$line"
  if [[ $verdict == ok ]]; then
    echo "valgrind $suite: ok ($seconds s)"
  else
    failed=$((failed + 1))
    echo "valgrind $suite: FAILED (${seconds:-?} s): ${why:-no result}"
    log=$LOGS/$(basename "$suite").log
    echo "----- $log: memcheck errors and failed checks"
    grep -E '^==[0-9]+== (Invalid|Conditional|Use of|Syscall|Mismatched|Source and|Argument|[0-9,]+ (\(|bytes).*(definitely|indirectly) lost)' \
      -A 25 "$log" | head -n 200 || true
    grep -E ':[FE]:' "$log" | head -n 20 || true
    tail -n 15 "$log"
  fi
done

echo "valgrind: ran ${#RAN[@]} suite(s): ${RAN[*]:-none}"
if ((${#SKIPPED[@]} > 0)); then
  echo "valgrind: skipped ${#SKIPPED[@]}:"
  printf '  %s\n' "${SKIPPED[@]}"
else
  echo "valgrind: skipped none"
fi
if ((failed > 0)); then
  echo "valgrind: FAILED: $failed suite(s), in $((SECONDS - start)) s; logs in $LOGS"
  exit 1
fi
rm -rf "$LOGS"
echo "valgrind: ok in $((SECONDS - start)) s ($JOBS at a time)"
