#!/bin/sh
# tests/check_abi.sh: shows that ci/abi.sh (the CI "abi" stage, `make abi-check`) passes
# compatible changes and fails incompatible ones unless the soname changed.
#
# 1. Fixture libraries: a tiny library (public header with an opaque type, a struct the caller
#    allocates, functions; an internal fix__ helper) is built in several versions with gcc -g,
#    and each is described with `ci/abi.sh dump` (as the stage describes libweft) and compared
#    with version 1 by `ci/abi.sh compare`, whose exit status must be the expected one:
#      same code / added function / private layout of the opaque type / suppressed internal
#      helper                                                 -> 0 (compatible)
#      removed function / changed parameter type / grown public struct (same soname) -> 1
#      removed function with the soname bumped               -> 0
# 2. The real baseline: abi/libweft.abi against itself passes; a copy with weft_strerror removed
#    fails; the same copy with the soname bumped to libweft.so.1 passes.
# Not part of `make check` (it needs abigail-tools): the CI abi stage runs it, then checks the
# built library. Exit status: 0 pass, 1 fail, 77 skip (no abidw/abidiff or gcc).
set -u
srcdir=${WEFT_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
abi="$srcdir/ci/abi.sh"
CC=${CC:-gcc}
for tool in abidw abidiff "$CC" bash; do
  command -v "$tool" >/dev/null 2>&1 || { echo "SKIP: $tool not found"; exit 77; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_abi.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
failures=0
cases=0

# expect STATUS NAME OLD NEW [SUPPRESSIONS]: ci/abi.sh compare OLD NEW must exit with STATUS.
expect() {
  want=$1 name=$2
  shift 2
  cases=$((cases + 1))
  bash "$abi" compare "$@" >"$tmp/out" 2>&1
  got=$?
  if [ "$got" -eq "$want" ]; then
    echo "ok: $name: exit $got ($(tail -n 1 "$tmp/out" | cut -c1-100))"
  else
    failures=$((failures + 1))
    echo "FAIL: $name: ci/abi.sh compare exited $got, want $want; its output:"
    sed 's/^/  | /' "$tmp/out"
  fi
}

# --- 1. Fixture libraries -------------------------------------------------------------------------

mkdir -p "$tmp/include"
cat >"$tmp/include/fix.h" <<'H'
typedef struct fix_obj fix_obj; /* opaque: the library allocates it */
typedef struct fix_opts { int flags; int timeout; } fix_opts; /* the caller allocates it */
int fix_new(fix_obj **out, const fix_opts *opts);
int fix_get(const fix_obj *o, int key);
void fix_free(fix_obj *o);
H
cat >"$tmp/v1.c" <<'C'
#include <stdlib.h>
#include "fix.h"
struct fix_obj { int x; };
int fix__helper(int x);
int fix__helper(int x) { return x + 1; }
int fix_new(fix_obj **out, const fix_opts *opts) {
  *out = calloc(1, sizeof **out);
  if (*out) (*out)->x = opts->flags;
  return *out ? 0 : -1;
}
int fix_get(const fix_obj *o, int key) { return o->x + fix__helper(key); }
void fix_free(fix_obj *o) { free(o); }
C

# build NAME SONAME [HEADER-SED [SOURCE-SED]]: version NAME of the fixture, described in NAME.abi.
build() {
  name=$1 soname=$2 hsed=${3:-} csed=${4:-}
  mkdir -p "$tmp/$name"
  sed -e "$hsed" "$tmp/include/fix.h" >"$tmp/$name/fix.h"
  sed -e "$csed" "$tmp/v1.c" >"$tmp/$name/fix.c"
  if ! "$CC" -g -O0 -shared -fPIC -I"$tmp/$name" -Wl,-soname,"$soname" -o "$tmp/$name/libfix.so" \
    "$tmp/$name/fix.c" >"$tmp/$name/cc.log" 2>&1; then
    echo "FAIL: cannot build fixture $name"; cat "$tmp/$name/cc.log"; exit 1
  fi
  bash "$abi" dump "$tmp/$name/libfix.so" "$tmp/$name.abi" "$tmp/$name" >"$tmp/$name/dump.log" 2>&1 ||
    { echo "FAIL: ci/abi.sh dump $name"; cat "$tmp/$name/dump.log"; exit 1; }
}

build v1 libfix.so.1
build same libfix.so.1
build added libfix.so.1 's/^void fix_free.*/&\nint fix_count(const fix_obj *o);/' \
  's/^void fix_free.*/&\nint fix_count(const fix_obj *o) { return o->x; }/'
build private libfix.so.1 '' 's/^struct fix_obj { int x; };/struct fix_obj { long pad[4]; int x; };/'
build helper libfix.so.1 '' 's/int x) { return x + 1; }/long x) { return (int)x + 1; }/; s/^int fix__helper(int x);/int fix__helper(long x);/'
build removed libfix.so.1 '/^int fix_get/d' 's/^int fix_get(/static int fix_get_gone(/; s/^void fix_free(fix_obj \*o) { free(o); }/void fix_free(fix_obj *o) { (void)fix_get_gone(o, 0); free(o); }/'
build param libfix.so.1 's/int fix_get(const fix_obj \*o, int key)/int fix_get(const fix_obj *o, long long key)/' \
  's/int fix_get(const fix_obj \*o, int key) { return o->x + fix__helper(key); }/int fix_get(const fix_obj *o, long long key) { return o->x + fix__helper((int)key); }/'
build grown libfix.so.1 's/int timeout; }/int timeout; int retries; }/'
build bumped libfix.so.2 '/^int fix_get/d' 's/^int fix_get(/static int fix_get_gone(/; s/^void fix_free(fix_obj \*o) { free(o); }/void fix_free(fix_obj *o) { (void)fix_get_gone(o, 0); free(o); }/'
printf '[suppress_function]\n  symbol_name_regexp = ^fix__\n' >"$tmp/fix.suppr"

expect 0 "same code" "$tmp/v1.abi" "$tmp/same.abi"
expect 0 "a function added" "$tmp/v1.abi" "$tmp/added.abi"
expect 0 "private layout of the opaque type changed" "$tmp/v1.abi" "$tmp/private.abi"
expect 0 "internal helper changed, suppressed" "$tmp/v1.abi" "$tmp/helper.abi" "$tmp/fix.suppr"
expect 1 "internal helper changed, not suppressed" "$tmp/v1.abi" "$tmp/helper.abi"
expect 1 "a function removed, same soname" "$tmp/v1.abi" "$tmp/removed.abi"
expect 1 "a parameter type changed, same soname" "$tmp/v1.abi" "$tmp/param.abi"
expect 1 "a caller-allocated struct grew, same soname" "$tmp/v1.abi" "$tmp/grown.abi"
expect 0 "a function removed, soname bumped" "$tmp/v1.abi" "$tmp/bumped.abi"

# --- 2. The real baseline ---------------------------------------------------------------------------

baseline=$srcdir/abi/libweft.abi
suppr=$srcdir/abi/libweft.suppr
if [ ! -f "$baseline" ]; then
  echo "FAIL: $baseline is missing"
  exit 1
fi
# weft_strerror removed: its ELF symbol and its declaration.
awk '/<elf-symbol name=.weft_strerror./ { next }
     /<function-decl name=.weft_strerror./ { skip = 1 }
     skip { if (/<\/function-decl>/) skip = 0; next }
     { print }' "$baseline" >"$tmp/no-strerror.abi"
if cmp -s "$baseline" "$tmp/no-strerror.abi"; then
  echo "FAIL: weft_strerror not found in $baseline"
  exit 1
fi
sed "1s/soname='libweft\.so\.[0-9]*'/soname='libweft.so.999'/" "$tmp/no-strerror.abi" >"$tmp/no-strerror-bumped.abi"
expect 0 "libweft baseline against itself" "$baseline" "$baseline" "$suppr"
expect 1 "libweft without weft_strerror, same soname" "$baseline" "$tmp/no-strerror.abi" "$suppr"
expect 0 "libweft without weft_strerror, soname bumped" "$baseline" "$tmp/no-strerror-bumped.abi" "$suppr"

if [ "$failures" -ne 0 ]; then
  echo "check_abi: FAILED: $failures of $cases case(s)"
  exit 1
fi
echo "check_abi: ok, $cases cases"
