#!/usr/bin/env bash
# ci/abi.sh: weft's ABI check, with libabigail (Debian package: abigail-tools).
#
#   ci/abi.sh check [BUILD-TREE]     compares BUILD-TREE's libweft.so (default tree: .) with the
#                                    baseline abi/libweft.abi; `make abi-check` runs it
#   ci/abi.sh baseline [BUILD-TREE]  rewrites abi/libweft.abi and debian/libweftN.symbols from
#                                    BUILD-TREE's libweft.so; `make abi-baseline` runs it
#   ci/abi.sh compare OLD NEW [SUPPRESSIONS]
#                                    the verdict alone, on two ABI descriptions (abidw XML)
#   ci/abi.sh dump LIB OUT [HEADERS-DIR]
#                                    writes LIB's ABI description as check does (public types:
#                                    those of HEADERS-DIR, default include/weft)
# tests/check_abi.sh drives compare and dump on small fixture libraries and on the baseline.
#
# The verdict (compare, and check after it):
#   - no change, or only additions (new functions or variables): passes; additions are reported,
#     since a release that has them bumps libtool's current and age (doc/guide.md);
#   - anything else abidiff reports (a removed symbol, a changed function or variable: a
#     parameter or return type, the layout of a public struct a caller allocates) is
#     incompatible: it fails, unless the soname changed too (the release is then a new ABI,
#     and its baseline is written with `make abi-baseline`).
# Only what the public headers (include/weft/*.h) declare counts as types: abidw runs with
# --headers-dir and --drop-private-types, so the private layout of an opaque type
# (weft_transport, weft_reactor, ...) may change freely. abi/libweft.suppr lists the exported
# symbols that are not API (none once the library exports only documented weft_* functions).
#
# check also verifies the Debian packaging against the soname libweft.so.N: the runtime package
# is libweftN in debian/control, and debian/libweftN.symbols names the soname, lists every
# exported symbol, and lists none that is gone.
# Exit status: 0 compatible, 1 incompatible (or inconsistent packaging), 2 usage or tool error.
set -euo pipefail
exec </dev/null

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASELINE=$ROOT/abi/libweft.abi
SUPPRESSIONS=$ROOT/abi/libweft.suppr
HEADERS=$ROOT/include/weft

die() {
  echo "abi: $*" >&2
  exit 2
}

need_tools() {
  if ! command -v abidw >/dev/null 2>&1 || ! command -v abidiff >/dev/null 2>&1; then
    die "abidw and abidiff not found (apt-get install abigail-tools)"
  fi
}

# dump LIB OUT [HEADERS-DIR]: the ABI description of LIB (a shared library built with -g), with
# the types declared in HEADERS-DIR (default: include/weft) only.
dump() {
  local lib=$1 out=$2 headers=${3:-$HEADERS}
  # (grep reads all of readelf's output: with pipefail, grep -q could fail it on SIGPIPE)
  readelf -S "$lib" 2>/dev/null | grep -c '\.debug_info' >/dev/null ||
    die "$lib has no debug information: build it with -g (configure's default CFLAGS have it)"
  abidw --headers-dir "$headers" --drop-private-types --no-corpus-path --no-comp-dir-path \
    --no-show-locs --type-id-style hash --out-file "$out" "$lib" || die "abidw $lib failed"
}

# soname FILE: the soname of an abidw XML file or of a shared library.
soname() {
  case $1 in
    *.so | *.so.*) readelf -d "$1" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p' ;;
    *) sed -n "s/^<abi-corpus [^>]*soname='\([^']*\)'.*/\1/p" "$1" | head -n 1 ;;
  esac
}

# compare OLD NEW [SUPPRESSIONS]: prints abidiff's report and the verdict; returns 0 or 1.
compare() {
  local old=$1 new=$2 suppr=${3:-} rc=0 report line removed=0 changed=0 added=0
  local old_soname new_soname args=()
  [[ -n $suppr ]] && args+=(--suppressions "$suppr")
  report=$(abidiff "${args[@]}" "$old" "$new" 2>&1) || rc=$?
  if ((rc & 3)); then
    printf '%s\n' "$report" >&2
    die "abidiff $old $new failed (status $rc)"
  fi
  # "Functions changes summary: 0 Removed, 1 Changed (2 filtered out), 3 Added functions", and
  # the same for variables and for symbols without debug information.
  while IFS= read -r line; do
    if [[ $line =~ ([0-9]+)\ Removed,\ ([0-9]+)\ Changed.*\ ([0-9]+)\ Added ]]; then
      removed=$((removed + BASH_REMATCH[1]))
      changed=$((changed + BASH_REMATCH[2]))
      added=$((added + BASH_REMATCH[3]))
    elif [[ $line =~ ([0-9]+)\ Removed,\ ([0-9]+)\ Added ]]; then
      removed=$((removed + BASH_REMATCH[1]))
      added=$((added + BASH_REMATCH[2]))
    fi
  done < <(grep 'changes summary:' <<<"$report" || true)
  old_soname=$(soname "$old")
  new_soname=$(soname "$new")
  [[ -n $old_soname && -n $new_soname ]] || die "no soname in $old or $new"
  if ((rc == 0)); then
    echo "abi: no ABI change ($new_soname)"
    return 0
  fi
  printf '%s\n' "$report"
  if ((rc & 8 || removed > 0 || changed > 0)); then
    if [[ $old_soname != "$new_soname" ]]; then
      echo "abi: incompatible changes ($removed removed, $changed changed), and the soname" \
        "changed from $old_soname to $new_soname: allowed; write the new baseline with" \
        "make abi-baseline"
      return 0
    fi
    echo "abi: FAILED: incompatible changes ($removed removed, $changed changed) and the soname" \
      "is still $new_soname. Keep the ABI, or bump the soname (libtool -version-info" \
      "CURRENT+1:0:0) and write a new baseline (make abi-baseline); see doc/guide.md," \
      "\"Packaging and ABI versions\""
    return 1
  fi
  echo "abi: compatible: $added addition(s), nothing removed or changed ($new_soname). The" \
    "release that ships them bumps libtool's current and age (-version-info CURRENT+1:0:AGE+1);" \
    "then make abi-baseline records them"
  return 0
}

# The shared library of a build tree (the real file, not the libtool wrapper).
built_library() {
  local tree=$1 lib
  lib=$(readlink -f "$tree/lib/.libs/libweft.so" 2>/dev/null || true)
  [[ -n $lib && -f $lib ]] || die "$tree/lib/.libs/libweft.so not found: configure and make there"
  printf '%s\n' "$lib"
}

# The exported (defined, global) dynamic symbols of a library, sorted.
exports() {
  nm -D --defined-only --extern-only "$1" | awk '{ print $NF }' | sort -u
}

# The upstream version, from include/weft/version.h (as configure reads it).
upstream_version() {
  sed -n -e 's/^#define WEFT_VERSION_MAJOR //p' -e 's/^#define WEFT_VERSION_MINOR //p' \
    -e 's/^#define WEFT_VERSION_PATCH //p' "$HEADERS/version.h" | paste -sd. -
}

# package_name SONAME: libweft.so.0 -> libweft0 (Debian's rule for library package names).
package_name() {
  local major=${1##*.so.}
  [[ $major =~ ^[0-9]+$ ]] || die "unexpected soname $1"
  if [[ ${1%%.so.*} =~ [0-9]$ ]]; then echo "${1%%.so.*}-$major"; else echo "${1%%.so.*}$major"; fi
}

# write_symbols LIB OUT: the Debian symbols file of LIB; symbols already in OUT keep their
# version, new ones get the upstream version.
write_symbols() {
  local lib=$1 out=$2 so pkg version sym ver
  so=$(soname "$lib")
  pkg=$(package_name "$so")
  version=$(upstream_version)
  declare -A known=()
  if [[ -f $out ]]; then
    while read -r sym ver; do
      known[${sym%@Base}]=$ver
    done < <(grep '^ [^ ]*@Base ' "$out" || true)
  fi
  {
    echo "$so $pkg #MINVER#"
    echo "* Build-Depends-Package: libweft-dev"
    while read -r sym; do
      echo " $sym@Base ${known[$sym]:-$version}"
    done < <(exports "$lib")
  } >"$out.tmp"
  mv "$out.tmp" "$out"
}

# check_packaging LIB: debian/ agrees with LIB's soname and exports.
check_packaging() {
  local lib=$1 so pkg symbols missing extra bad=0
  [[ -d $ROOT/debian ]] || return 0
  so=$(soname "$lib")
  pkg=$(package_name "$so")
  symbols=$ROOT/debian/$pkg.symbols
  if ! grep -qx "Package: $pkg" "$ROOT/debian/control"; then
    echo "abi: FAILED: the soname is $so, so the runtime package must be $pkg (debian/control)"
    bad=1
  fi
  if [[ ! -f $symbols ]]; then
    echo "abi: FAILED: $symbols is missing (make abi-baseline writes it)"
    return 1
  fi
  if [[ $(head -n 1 "$symbols") != "$so $pkg #MINVER#" ]]; then
    echo "abi: FAILED: $symbols does not start with '$so $pkg #MINVER#'"
    bad=1
  fi
  missing=$(comm -13 <(sed -n 's/^ \([^ ]*\)@Base .*/\1/p' "$symbols" | sort -u) \
    <(exports "$lib"))
  extra=$(comm -23 <(sed -n 's/^ \([^ ]*\)@Base .*/\1/p' "$symbols" | sort -u) \
    <(exports "$lib"))
  if [[ -n $extra ]]; then
    echo "abi: FAILED: symbols in ${symbols#"$ROOT"/} that the library no longer exports:" "${extra//$'\n'/ }"
    bad=1
  fi
  if [[ -n $missing ]]; then
    echo "abi: new exported symbols, not yet in ${symbols#"$ROOT"/} (make abi-baseline at the" \
      "release):" "${missing//$'\n'/ }"
  fi
  return $bad
}

cmd=${1:-}
case $cmd in
  compare)
    [[ $# -ge 3 && $# -le 4 ]] || die "usage: $0 compare OLD NEW [SUPPRESSIONS]"
    need_tools
    compare "$2" "$3" "${4:-}"
    ;;
  dump)
    [[ $# -ge 3 && $# -le 4 ]] || die "usage: $0 dump LIB OUT [HEADERS-DIR]"
    need_tools
    dump "$2" "$3" "${4:-}"
    ;;
  check)
    need_tools
    lib=$(built_library "${2:-.}")
    [[ -f $BASELINE ]] || die "no baseline $BASELINE: write it with make abi-baseline"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-abi.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    dump "$lib" "$tmp/libweft.abi"
    echo "abi: $(basename "$lib") ($(soname "$lib"), $(exports "$lib" | wc -l) exported" \
      "symbols) against ${BASELINE#"$ROOT"/} ($(soname "$BASELINE"))"
    rc=0
    compare "$BASELINE" "$tmp/libweft.abi" "$SUPPRESSIONS" || rc=1
    check_packaging "$lib" || rc=1
    ((rc == 0)) && echo "abi: ok"
    exit $rc
    ;;
  baseline)
    need_tools
    lib=$(built_library "${2:-.}")
    dump "$lib" "$BASELINE.tmp"
    mv "$BASELINE.tmp" "$BASELINE"
    echo "abi: wrote ${BASELINE#"$ROOT"/} from $lib ($(soname "$lib"))"
    if [[ -d $ROOT/debian ]]; then
      pkg=$(package_name "$(soname "$lib")")
      write_symbols "$lib" "$ROOT/debian/$pkg.symbols"
      echo "abi: wrote debian/$pkg.symbols ($(exports "$lib" | wc -l) symbols)"
      grep -qx "Package: $pkg" "$ROOT/debian/control" ||
        echo "abi: the soname changed: rename the runtime package to $pkg in debian/control" \
          "(and its .install file), and remove the old symbols file"
    fi
    ;;
  *)
    die "usage: $0 check [BUILD-TREE] | baseline [BUILD-TREE] | compare OLD NEW [SUPPRESSIONS] | dump LIB OUT [HEADERS-DIR]"
    ;;
esac
