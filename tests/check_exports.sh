#!/bin/sh
# tests/check_exports.sh: the shared library exports exactly the documented API.
#
# The library is compiled with -fvisibility=hidden and every public function is declared with
# WEFT_EXTERN in include/weft/*.h. This test compares the dynamic symbol table of
# lib/.libs/libweft.so (`nm -D --defined-only`) with the names declared WEFT_EXTERN, and fails
# when the library exports a symbol that no header declares WEFT_EXTERN (for example an internal
# weft__* function, or a helper that lost its `static`), when a declared function is missing
# from the library, or when any weft__* symbol is exported at all.
# Exit status: 0 pass, 1 fail, 77 skip (no shared library, e.g. --disable-shared, or no nm).

set -u
srcdir=${WEFT_SRCDIR:-.}
builddir=${WEFT_BUILDDIR:-.}
so="$builddir/lib/.libs/libweft.so"
if ! test -f "$so"; then
  echo "SKIP: no shared library at $so"
  exit 77
fi
nm=${NM:-nm}
if ! command -v "$nm" >/dev/null 2>&1; then
  echo "SKIP: no nm"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_exports.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# Exported: the defined dynamic symbols of text (T), data (D, B, R) or weak (W, V) type.
# Version nodes and the like (A) and libtool/linker artefacts (_init, _fini) are left out.
"$nm" -D --defined-only "$so" >"$tmp/nm.out" || { echo "FAIL: $nm -D $so"; exit 1; }
awk '$2 ~ /^[TDBRWVi]$/ && $3 != "_init" && $3 != "_fini" { sub(/@.*/, "", $3); print $3 }' \
  "$tmp/nm.out" | sort -u >"$tmp/exported"

# Declared: every `WEFT_EXTERN ... name(` in the public headers (a declaration starts on the line
# that holds WEFT_EXTERN; the name is the identifier right before the first parenthesis).
for h in "$srcdir"/include/weft/*.h; do
  sed -n 's/^WEFT_EXTERN [^(]*[ *]\([A-Za-z_][A-Za-z0-9_]*\)(.*/\1/p' "$h"
done | sort -u >"$tmp/declared"

# A WEFT_EXTERN line whose name this cannot read would hide a declaration: refuse it.
n_lines=$(cat "$srcdir"/include/weft/*.h | grep -c '^WEFT_EXTERN ')
n_names=$(for h in "$srcdir"/include/weft/*.h; do
  sed -n 's/^WEFT_EXTERN [^(]*[ *]\([A-Za-z_][A-Za-z0-9_]*\)(.*/\1/p' "$h"; done | wc -l)
if test "$n_lines" -ne "$n_names"; then
  echo "FAIL: $((n_lines - n_names)) WEFT_EXTERN line(s) without 'name(' on the same line:"
  grep -n '^WEFT_EXTERN ' "$srcdir"/include/weft/*.h | grep -v '(' | sed 's/^/  /'
  exit 1
fi

n_exported=$(wc -l <"$tmp/exported")
n_declared=$(wc -l <"$tmp/declared")
echo "exported: $n_exported, declared WEFT_EXTERN: $n_declared"
if test "$n_declared" -eq 0; then
  echo "FAIL: no WEFT_EXTERN declaration found in $srcdir/include/weft"
  exit 1
fi

status=0
extra=$(comm -23 "$tmp/exported" "$tmp/declared")
if test -n "$extra"; then
  echo "FAIL: exported but not declared WEFT_EXTERN in include/weft/*.h:"
  printf '  %s\n' $extra
  status=1
fi
missing=$(comm -13 "$tmp/exported" "$tmp/declared")
if test -n "$missing"; then
  echo "FAIL: declared WEFT_EXTERN but not exported:"
  printf '  %s\n' $missing
  status=1
fi
internal=$(grep '^weft__' "$tmp/exported")
if test -n "$internal"; then
  echo "FAIL: internal weft__* symbols exported:"
  printf '  %s\n' $internal
  status=1
fi
test $status -eq 0 && echo "ok: the shared library exports exactly the $n_declared declared functions"
exit $status
