#!/usr/bin/env bash
# ci/consumers.sh: builds tests/consumer/hello.c outside the tree against an installed weft, with
# pkg-config and with CMake (find_package(weft MAJOR.MINOR) + weft::weft), and runs both.
#
#   ci/consumers.sh tree [BUILD-TREE]   `make install DESTDIR=STAGE` from BUILD-TREE (configured
#                                       and built; default .), then both consumers against the
#                                       staging directory (pkg-config with PKG_CONFIG_SYSROOT_DIR,
#                                       CMake with CMAKE_PREFIX_PATH: the installed CMake files
#                                       are relocatable), run on the staged libweft
#   ci/consumers.sh system              both consumers against the weft installed in the system
#                                       (the Debian packages: ci/packages.sh), with no search path
#                                       given; they must load the system's libweft
#
# Both modes also check that find_package(weft NEXT-MAJOR.0) is refused, and (tree) that the
# CMake files, the guide and, when configure built it, the HTML reference were installed.
# Prints "consumers (MODE): ok", or "consumers (MODE): FAILED: WHY" with the output explaining
# it, and exits 1. CC (default cc) is the compiler; pkg-config must be installed, cmake is
# installed with apt-get when missing.
set -euo pipefail
exec </dev/null

MODE=${1:-}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CC=${CC:-cc}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/weft-consumers.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

fail() {
  local why=$1 f
  shift
  echo "consumers ($MODE): FAILED: $why" >&2
  for f in "$@"; do
    if [[ -s $f ]]; then
      echo "----- ${f#"$WORK"/}" >&2
      tail -n 40 "$f" >&2
    fi
  done
  exit 1
}

case $MODE in
  tree | system) ;;
  *) echo "usage: $0 tree [BUILD-TREE] | system" >&2; exit 2 ;;
esac
if ! command -v cmake >/dev/null 2>&1; then
  as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake \
    >/dev/null
fi
for tool in pkg-config cmake "$CC"; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (apt-get install pkg-config cmake)"
done

PC_ENV=()  # environment for pkg-config
CMAKE_ARGS=()
RUN_ENV=() # environment to run the programs
if [[ $MODE == tree ]]; then
  TREE=$(cd "${2:-.}" && pwd)
  [[ -f $TREE/Makefile && -f $TREE/lib/libweft.la ]] ||
    fail "$TREE is not a configured and built weft tree"
  cat >"$WORK/dirs.mk" <<'MK'
consumers-dirs:
	@echo 'prefix=$(prefix)'
	@echo 'libdir=$(libdir)'
	@echo 'pkgconfigdir=$(pkgconfigdir)'
	@echo 'docdir=$(docdir)'
	@echo 'htmldir=$(htmldir)'
	@echo 'doc=$(WEFT_DOC_TARGET)'
MK
  make -s -C "$TREE" --no-print-directory -f Makefile -f "$WORK/dirs.mk" consumers-dirs \
    >"$WORK/dirs" 2>&1 || fail "cannot read the directories from $TREE/Makefile" "$WORK/dirs"
  value() { sed -n "s|^$1=||p" "$WORK/dirs"; }
  prefix=$(value prefix) libdir=$(value libdir) pkgconfigdir=$(value pkgconfigdir)
  docdir=$(value docdir) htmldir=$(value htmldir)
  STAGE=$WORK/stage
  timeout 300 make -C "$TREE" install DESTDIR="$STAGE" >"$WORK/install.log" 2>&1 ||
    fail "make install DESTDIR=$STAGE failed" "$WORK/install.log"
  expected=("$libdir/cmake/weft/weftConfig.cmake" "$libdir/cmake/weft/weftConfigVersion.cmake"
    "$docdir/guide.md" "$pkgconfigdir/weft.pc")
  [[ -n $(value doc) ]] && expected+=("$htmldir/html/index.html")
  for f in "${expected[@]}"; do
    [[ -f $STAGE$f ]] || fail "make install did not install $f" "$WORK/install.log"
  done
  PC_ENV=(PKG_CONFIG_PATH="$STAGE$pkgconfigdir" PKG_CONFIG_SYSROOT_DIR="$STAGE")
  CMAKE_ARGS=(-DCMAKE_PREFIX_PATH="$STAGE$prefix")
  RUN_ENV=(LD_LIBRARY_PATH="$STAGE$libdir")
  LIBDIR_EXPECTED=$STAGE$libdir
else
  # The multiarch directory Debian's packages install into.
  LIBDIR_EXPECTED=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
fi

# --- pkg-config ---------------------------------------------------------------------------------

version=$(env "${PC_ENV[@]}" pkg-config --modversion weft 2>"$WORK/pc.err") ||
  fail "pkg-config does not find weft" "$WORK/pc.err"
[[ $version =~ ^([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || fail "weft.pc has an odd version: $version"
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
flags=$(env "${PC_ENV[@]}" pkg-config --cflags --libs weft 2>"$WORK/pc.err") ||
  fail "pkg-config --cflags --libs weft failed" "$WORK/pc.err"
mkdir -p "$WORK/pc"
cp "$ROOT/tests/consumer/hello.c" "$WORK/pc/"
# shellcheck disable=SC2086 # flags is a list of flags
(cd "$WORK/pc" && timeout 120 "$CC" -std=c11 -Wall -Wextra -Werror -o hello hello.c $flags) \
  >"$WORK/pc.log" 2>&1 || fail "cc hello.c \$(pkg-config --cflags --libs weft) failed: $flags" \
  "$WORK/pc.log"

# --- CMake ----------------------------------------------------------------------------------------

mkdir -p "$WORK/cmake-src"
cp "$ROOT/tests/consumer/hello.c" "$ROOT/tests/consumer/CMakeLists.txt" "$WORK/cmake-src/"
timeout 120 cmake -S "$WORK/cmake-src" -B "$WORK/cmake-build" "${CMAKE_ARGS[@]}" \
  -DWEFT_REQUIRED_VERSION="$major.$minor" -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" \
  >"$WORK/cmake.log" 2>&1 || fail "cmake (find_package(weft $major.$minor)) failed" "$WORK/cmake.log"
timeout 120 cmake --build "$WORK/cmake-build" >>"$WORK/cmake.log" 2>&1 ||
  fail "cmake --build failed" "$WORK/cmake.log"

# The next major version is not compatible: find_package must refuse it.
if timeout 120 cmake -S "$WORK/cmake-src" -B "$WORK/cmake-next" "${CMAKE_ARGS[@]}" \
  -DWEFT_REQUIRED_VERSION="$((major + 1)).0" >"$WORK/cmake-next.log" 2>&1; then
  fail "find_package(weft $((major + 1)).0) accepted weft $version" "$WORK/cmake-next.log"
fi
grep -q 'considered but not accepted' "$WORK/cmake-next.log" ||
  fail "find_package(weft $((major + 1)).0) failed, but not on the version" "$WORK/cmake-next.log"

# --- Run both: on the expected libweft ------------------------------------------------------------

for prog in "$WORK/pc/hello" "$WORK/cmake-build/hello"; do
  env "${RUN_ENV[@]}" ldd "$prog" >"$WORK/ldd.log" 2>&1 || true
  # (compared as real paths: with a merged /usr, /lib/ARCH is /usr/lib/ARCH)
  loaded=$(sed -n 's|^[[:space:]]*libweft\.so\.[0-9]* => \(/[^ ]*\) .*|\1|p' "$WORK/ldd.log")
  [[ -n $loaded && $(dirname "$(readlink -f "$loaded")") == "$(readlink -f "$LIBDIR_EXPECTED")" ]] ||
    fail "${prog#"$WORK"/} does not load libweft from $LIBDIR_EXPECTED" "$WORK/ldd.log"
  out=$(env "${RUN_ENV[@]}" timeout 20 "$prog" 2>"$WORK/run.err") ||
    fail "${prog#"$WORK"/} failed" "$WORK/run.err"
  [[ $out == "hello: weft $version, libevent "* ]] ||
    fail "${prog#"$WORK"/} printed '$out'" "$WORK/run.err"
  echo "consumers ($MODE): ${prog#"$WORK"/}: $out"
done

echo "consumers ($MODE): ok (pkg-config and CMake, weft $version)"
