#!/bin/sh
# The dependencies between the library's files run one way (shared/DESIGN.md, "The house"):
# for each lib/*.c, the files whose functions or data it uses are read from the built objects
# (what `nm -u` of one object leaves undefined and `nm` of another defines), and the resulting
# graph must have no cycle. On a cycle it prints the loop tsort found and the symbols behind
# each of its edges. The graph is printed on success too (in tests/check_layers.sh.log).
#
# Runs from `make check` (WEFT_BUILDDIR, WEFT_SRCDIR) or by hand from a built tree:
#   WEFT_BUILDDIR=. WEFT_SRCDIR=. sh tests/check_layers.sh
# Exit 0: no cycle; 1: a cycle (or an object is missing); 77: skipped (no nm or tsort).

builddir=${WEFT_BUILDDIR:-.}
srcdir=${WEFT_SRCDIR:-.}
NM=${NM:-nm}

for tool in "$NM" tsort; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "SKIP: $tool not found"
    exit 77
  fi
done

tmp=${TMPDIR:-/tmp}/check_layers.$$
mkdir "$tmp" || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

# One object per source file: libtool's PIC object if there is one, else the plain one (the
# library's sources are built as the convenience library libweft_core.la, whose objects carry
# its prefix).
: >"$tmp/defined"
: >"$tmp/undefined"
count=0
for src in "$srcdir"/lib/*.c; do
  name=$(basename "$src" .c)
  obj=
  for candidate in "$builddir/lib/.libs/libweft_core_la-$name.o" \
    "$builddir/lib/libweft_core_la-$name.o"; do
    if test -f "$candidate"; then
      obj=$candidate
      break
    fi
  done
  if test -z "$obj"; then
    echo "FAIL: no object for lib/$name.c under $builddir/lib (build the library first)"
    exit 1
  fi
  # "FILE SYMBOL" lines. Defined: global symbols only (static functions are the file's own).
  "$NM" -g --defined-only "$obj" | awk -v f="$name.c" 'NF >= 3 { print f, $3 }' >>"$tmp/defined" ||
    exit 1
  "$NM" -u "$obj" | awk -v f="$name.c" 'NF >= 2 { print f, $2 }' >>"$tmp/undefined" || exit 1
  count=$((count + 1))
done
if test "$count" -lt 2; then
  echo "FAIL: found $count source files under $srcdir/lib"
  exit 1
fi

# "USER DEFINER SYMBOL" for every symbol one file uses and another defines.
awk 'NR == FNR { definer[$2] = $1; next }
     ($2 in definer) && definer[$2] != $1 { print $1, definer[$2], $2 }' \
  "$tmp/defined" "$tmp/undefined" | sort -u >"$tmp/uses"

echo "lib/ dependency graph ($count files; FILE -> the files it calls):"
awk '{ if ($1 != last) { if (last != "") print line; line = $1 " ->"; last = $1 }
       if (!seen[$1 " " $2]++) line = line " " $2 }
     END { if (last != "") print line }' "$tmp/uses"

# tsort fails on a cycle and names its members on stderr.
awk '{ print $1, $2 }' "$tmp/uses" | sort -u >"$tmp/edges"
if tsort "$tmp/edges" >/dev/null 2>"$tmp/tsort.err"; then
  echo "PASS: no cycle among the files of lib/"
  exit 0
fi
echo "FAIL: the files of lib/ depend on each other in a cycle:"
cat "$tmp/tsort.err"
# The symbols behind each edge between two members of the loop.
sed -n 's/^tsort: //p' "$tmp/tsort.err" | grep -v ':' >"$tmp/loop"
awk 'NR == FNR { member[$1] = 1; next }
     ($1 in member) && ($2 in member) { print "  " $1 " uses " $3 " of " $2 }' \
  "$tmp/loop" "$tmp/uses"
exit 1
