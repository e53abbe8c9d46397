#!/bin/sh
# tests/check_guide_examples.sh: the documentation matches the headers.
#
# 1. Every ```c block of doc/guide.md and README.md compiles against include/weft/ with the
#    build's compiler ($WEFT_CC, set by `make check`; else $CC or cc):
#      $CC -std=c11 -Wall -Wextra -Werror $WEFT_OPENSSL_CFLAGS $WEFT_LIBEVENT_CFLAGS -c
#    The marker on the line right before the opening fence (blank lines between are allowed)
#    says how a block is compiled:
#      (no marker)                      a whole translation unit, compiled as it stands; it
#                                       must include what it uses (<weft/weft.h> at least);
#      <!-- fragment: PARAMETERS -->    statements: compiled as the body of
#                                       `void fragment(PARAMETERS) { ... }` after a prelude
#                                       that includes <assert.h>, <stdint.h>, <stdio.h>,
#                                       <stdlib.h>, <string.h> and <weft/weft.h>; PARAMETERS
#                                       declares what the block uses but does not define
#                                       (`void` when nothing), e.g.
#                                       <!-- fragment: weft_cert_options *opts -->
#      <!-- no-compile: REASON -->      not compiled (REASON must be given).
#    A block with no marker and no #include line fails: a fragment must say it is one.
#    Other fences (```sh, ```cmake, ...) are not C and are left alone.
# 2. Every weft_* and WEFT_* identifier that doc/guide.md and README.md name is declared in a
#    public header include/weft/*.h (a name ending in `_`, as in `weft_endpoint_set_...`, is a
#    prefix of some declared name), except the names 1.0 removed, listed in REMOVED below, each
#    of which must appear in the guide's "Migrating from 0.x" table (and `weft__`, the prefix of
#    the internal names, which the guide names to say they are not API).
# Exit status: 0 pass, 1 fail, 77 skip (no compiler).

set -u
srcdir=${WEFT_SRCDIR:-.}
builddir=${WEFT_BUILDDIR:-.}
cc=${WEFT_CC:-${CC:-cc}}
guide="$srcdir/doc/guide.md"
readme="$srcdir/README.md"
# shellcheck disable=SC2086 # (WEFT_CC may hold a command with arguments, e.g. "gcc -m32")
if ! command -v ${cc%% *} >/dev/null 2>&1; then
  echo "SKIP: no C compiler ($cc)"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_guide.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# --- 1. The C blocks ---------------------------------------------------------------------------

# extract FILE PREFIX NAME: writes each ```c block of FILE to $tmp/PREFIX-LINE.c (LINE: the line of
# its opening fence) as a whole file or wrapped as a fragment, or to PREFIX-LINE.skip, or to
# PREFIX-LINE.bad (a marker without its argument, or no #include in a block without a marker).
# A #line directive makes the compiler report NAME (the file's name in the tree) and its lines.
extract() {
  awk -v dir="$tmp" -v prefix="$2" -v name="$3" '
    function flush_marker() { kind = ""; arg = "" }
    BEGIN { inblock = 0; flush_marker() }
    inblock && /^```[ \t]*$/ {
      inblock = 0
      if (kind == "no-compile") {
        print arg > (base ".skip")
      } else if (kind == "bad") {
        print "a <!-- fragment: --> or <!-- no-compile: --> marker without its argument" > (base ".bad")
      } else if (kind == "fragment") {
        out = base ".c"
        print "#include <assert.h>" > out
        print "#include <stdint.h>" > out
        print "#include <stdio.h>" > out
        print "#include <stdlib.h>" > out
        print "#include <string.h>" > out
        print "#include <weft/weft.h>" > out
        print "void fragment(" arg ");" > out
        print "void fragment(" arg ") {" > out
        printf "#line %d \"%s\"\n%s", start + 1, name, body > out
        print "}" > out
      } else if (body !~ /(^|\n)[ \t]*#[ \t]*include/) {
        print "a block with no #include and no <!-- fragment: ... --> marker" > (base ".bad")
      } else {
        printf "#line %d \"%s\"\n%s", start + 1, name, body > (base ".c")
      }
      close(base ".c"); close(base ".skip"); close(base ".bad")
      flush_marker()
      next
    }
    inblock { body = body $0 "\n"; next }
    /^```c[ \t]*$/ {
      inblock = 1; body = ""; base = dir "/" prefix "-" NR; start = NR
      next
    }
    /^[ \t]*<!--[ \t]*fragment:/ {
      kind = "fragment"; arg = $0
      sub(/^[ \t]*<!--[ \t]*fragment:[ \t]*/, "", arg); sub(/[ \t]*-->[ \t]*$/, "", arg)
      if (arg == "") kind = "bad"
      next
    }
    /^[ \t]*<!--[ \t]*no-compile:/ {
      kind = "no-compile"; arg = $0
      sub(/^[ \t]*<!--[ \t]*no-compile:[ \t]*/, "", arg); sub(/[ \t]*-->[ \t]*$/, "", arg)
      if (arg == "") kind = "bad"
      next
    }
    /^[ \t]*$/ { next }
    { flush_marker() }
  ' "$1"
}

extract "$guide" guide "$guide"
extract "$readme" README "$readme"
blocks=0
for f in "$tmp"/*.c "$tmp"/*.skip "$tmp"/*.bad; do
  test -e "$f" || continue
  blocks=$((blocks + 1))
  name=${f##*/}
  base=${name%.*}
  file=${base%%-*}
  line=${base#*-}
  case $file in guide) where="doc/guide.md:$line" ;; *) where="README.md:$line" ;; esac
  case $name in
  *.skip) pass "$where not compiled: $(cat "$f")"; continue ;;
  *.bad) fail "$where: $(cat "$f")"; continue ;;
  esac
  # shellcheck disable=SC2086 # ($cc and the flags are word lists on purpose)
  if $cc -std=c11 -Wall -Wextra -Werror ${WEFT_OPENSSL_CFLAGS:-} ${WEFT_LIBEVENT_CFLAGS:-} \
    -I"$builddir/include" -I"$srcdir/include" -c -o "$tmp/$base.o" "$f" >"$tmp/$base.log" 2>&1
  then
    pass "$where compiles"
  else
    fail "$where does not compile:"
    cat "$tmp/$base.log" >&2
  fi
done
if [ "$blocks" -lt 20 ]; then
  fail "only $blocks C blocks found in the guide and README (the extraction is broken?)"
fi

# --- 2. The names --------------------------------------------------------------------------------

# Removed in 1.0; the guide names them only in the "Migrating from 0.x" table.
REMOVED="weft_listen_tcp_ex weft_listen_ssl_ex WEFT_LISTEN_REUSEPORT"

# The headers, and the WEFT_E* codes that error.h declares through its X-macro table.
cat "$srcdir"/include/weft/*.h >"$tmp/headers"
sed -n 's/^ *X(\(E[A-Z0-9_]*\),.*/WEFT_\1/p' "$srcdir/include/weft/error.h" >>"$tmp/headers"
sed -n '/^### Migrating from 0\.x/,/^#/p' "$guide" >"$tmp/migration"
for name in $REMOVED; do
  if grep -qw -- "$name" "$tmp/headers"; then
    fail "$name is in REMOVED but still declared in include/weft/: take it off the list"
  elif ! grep -qw -- "$name" "$tmp/migration"; then
    fail "$name is in REMOVED but not in the guide's \"Migrating from 0.x\" table"
  fi
done
# The identifiers: weft_ or WEFT_ at the start of a word (so libweft_core.la and the like are not
# names of the API).
for doc in "$guide" "$readme"; do
  grep -oE '(^|[^A-Za-z0-9_.])(weft|WEFT)_[A-Za-z0-9_]+' "$doc" | sed 's/^[^A-Za-z]//'
done | sort -u >"$tmp/names"
unknown=0
while read -r name; do
  case " $REMOVED weft__ " in *" $name "*) continue ;; esac # weft__: "internal, not API"
  case $name in
  *_) # a prefix (`weft_endpoint_set_...`, `weft__*`): some name in the headers starts with it
    if grep -q -- "${name}[A-Za-z0-9]" "$tmp/headers"; then continue; fi ;;
  esac
  if ! grep -qw -- "$name" "$tmp/headers"; then
    fail "$name is named in the guide or README but declared in no include/weft/*.h"
    unknown=$((unknown + 1))
  fi
done <"$tmp/names"
if [ "$unknown" -eq 0 ]; then
  pass "all $(wc -l <"$tmp/names") weft_*/WEFT_* names of the guide and README are declared"
fi

[ "$failures" -eq 0 ] || exit 1
exit 0
