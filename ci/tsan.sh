#!/usr/bin/env bash
# ci/tsan.sh: ThreadSanitizer stage. Copies the source tree (tracked and untracked files, not
# build products) to a temporary directory, builds it with clang and
# --enable-sanitizers=thread, and runs `make check` there with every TSan report fatal
# (halt_on_error=1). tests/check_threads is the suite written for it (reactors in threads,
# cross-thread calls, stops from other threads); the others catch races in what they share.
#
#   ci/tsan.sh [WORKDIR]
#
# WORKDIR (default: a new temporary directory) receives the copy; it is kept when the stage
# fails, so the logs can be read, and removed when it passes (unless WORKDIR was given).
# Every test of `make check` runs: the Check suites and the sample scripts (whose servers and
# clients are TSan-built too, and exit with status 66 on a report). On 2 cores: the build
# about 40 s, the tests about 45 s (both 2 to 3 times longer on a loaded machine).
# TSAN_TESTS="tests/check_threads tests/check_reactor" in the environment runs only those.
# Exit status: 0 when every suite passed with no TSan report, non-zero otherwise.
#
# OpenSSL and libevent are not built with TSan: reports whose frames are all inside them would
# be false positives, and ci/tsan.supp is where such a suppression goes (libcrypto, libssl,
# libevent frames only, each with the reason). weft frames are never suppressed.
set -euo pipefail
exec </dev/null

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS=$(nproc 2>/dev/null || echo 2)
TSAN_TESTS=${TSAN_TESTS:-}

if [[ $# -ge 1 ]]; then
  WORK=$1
  KEEP=1
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/weft-tsan.XXXXXX")
  KEEP=0
fi
start=$SECONDS

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# The same copy as .ci/run's copy_tree: what git knows about (or the distributed files).
copy_tree() {
  local dest=$1
  mkdir -p "$dest"
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$ROOT" &&
      git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do
        if [[ -e $f || -L $f ]]; then printf '%s\0' "$f"; fi
      done |
      tar --null -T - -cf -) | tar -xf - -C "$dest"
  else
    make -C "$ROOT" distdir distdir="$dest"
  fi
}

if ! command -v clang >/dev/null 2>&1; then
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang
fi

echo "tsan: copying $ROOT to $WORK/tree"
copy_tree "$WORK/tree"
cd "$WORK/tree"

# Kernels with 32 bits of mmap randomisation break TSan's fixed memory layout ("unexpected
# memory mapping"); running without address randomisation avoids it where setarch allows it.
NORAND=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
  NORAND=(setarch "$(uname -m)" -R)
fi

rc=0
build_start=$SECONDS
{
  ./autogen.sh
  ./configure --enable-sanitizers=thread CC=clang
  make -j"$JOBS"
} >"$WORK/build.log" 2>&1 || rc=$?
if ((rc != 0)); then
  tail -n 60 "$WORK/build.log"
  echo "tsan: build FAILED (log: $WORK/build.log)"
  exit 1
fi
echo "tsan: built with clang -fsanitize=thread in $((SECONDS - build_start)) s"

TSAN_OPTS="halt_on_error=1 second_deadlock_stack=1"
if [[ -f $ROOT/ci/tsan.supp ]]; then
  TSAN_OPTS="$TSAN_OPTS suppressions=$ROOT/ci/tsan.supp"
fi
echo "tsan: TSAN_OPTIONS=$TSAN_OPTS"
echo "tsan: tests: ${TSAN_TESTS:-all of make check}"

# Check forks each test by default, so a report in a test fails that test, and the suite.
# CK_TIMEOUT_MULTIPLIER: TSan makes everything 5 to 15 times slower.
check_start=$SECONDS
TESTS_ARG=()
if [[ -n $TSAN_TESTS ]]; then TESTS_ARG=("TESTS=$TSAN_TESTS"); fi
TSAN_OPTIONS="$TSAN_OPTS" CK_TIMEOUT_MULTIPLIER=4 \
  "${NORAND[@]}" make -j"$JOBS" check "${TESTS_ARG[@]}" >"$WORK/check.log" 2>&1 || rc=$?
echo "tsan: make check ran in $((SECONDS - check_start)) s"

# One line per test, with its Check summary; then the TSan reports, if any.
reports=0
failed=()
for trs in tests/*.trs; do
  [[ -f $trs ]] || continue
  suite=${trs%.trs}
  log=$suite.log
  result=$(sed -n 's/^:test-result: //p' "$trs" | head -n 1)
  summary=$(grep -E '^[0-9]+%: Checks: ' "$log" 2>/dev/null | tail -n 1 || true)
  n=$(grep -c '^WARNING: ThreadSanitizer:' "$log" 2>/dev/null || true)
  n=${n:-0}
  reports=$((reports + n))
  line="tsan $suite: ${result:-NO RESULT}"
  [[ -n $summary ]] && line="$line ($summary)"
  ((n > 0)) && line="$line, $n TSan report(s)"
  echo "$line"
  if ((n > 0)); then
    echo "----- TSan reports in $log"
    awk '/^WARNING: ThreadSanitizer:/,/^SUMMARY: ThreadSanitizer/' "$log" | head -n 300
  fi
  case $result in PASS | SKIP | XFAIL) ;; *) failed+=("$suite") ;; esac
done

if ((rc != 0 || reports > 0 || ${#failed[@]} > 0)); then
  ((rc != 0)) && tail -n 30 "$WORK/check.log"
  for suite in "${failed[@]}"; do
    echo "----- $suite.log (last 80 lines)"
    tail -n 80 "$suite.log"
  done
  echo "tsan: FAILED ($reports ThreadSanitizer report(s), failed: ${failed[*]:-none}) in $((SECONDS - start)) s; tree kept in $WORK"
  exit 1
fi
echo "tsan: ok, no ThreadSanitizer report, in $((SECONDS - start)) s"
if ((KEEP == 0)); then
  cd /
  rm -rf "$WORK"
fi
