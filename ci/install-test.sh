#!/usr/bin/env bash
# ci/install-test.sh [BUILD-TREE]: checks that an installed weft serves a program built outside
# the tree. BUILD-TREE (default .) must be configured and built; it may be a VPATH build tree.
#
#   1. `make install DESTDIR=$STAGE` into a temporary staging directory (under the prefix
#      configure was given, /usr/local by default);
#   2. compiles samples/echo-server.c in a directory of its own with nothing but
#      cc $(pkg-config --cflags --libs weft), pkg-config reading the staged weft.pc
#      (PKG_CONFIG_PATH=$STAGE$pkgconfigdir, PKG_CONFIG_SYSROOT_DIR=$STAGE);
#   3. runs it on the staged libweft (LD_LIBRARY_PATH=$STAGE$libdir) as a TLS echo server on a
#      free port, and sends a line through it with the tree's samples/echo-client --tls
#      --insecure, which must get the line back;
#   4. stops the server with SIGTERM and expects exit status 0.
# Prints "install-test: ok", or "install-test: FAILED: WHY" and the output that explains it, and
# exits 1. Every wait is bounded. CC (default cc) is the compiler. Nothing is left behind.
set -euo pipefail

TREE=${1:-.}
CC=${CC:-cc}
WORK=
SERVER_PID=

cleanup() {
  if [[ -n $SERVER_PID ]]; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
  if [[ -n $WORK ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# fail WHY [FILE...]: reports WHY, then the last lines of each FILE that is not empty.
fail() {
  local why=$1 f
  shift
  echo "install-test: FAILED: $why" >&2
  for f in "$@"; do
    if [[ -s $f ]]; then
      echo "----- ${f#"$WORK"/}" >&2
      tail -n 40 "$f" >&2
    fi
  done
  exit 1
}

[[ -f $TREE/Makefile ]] || fail "$TREE is not a configured weft build tree (no Makefile)"
TREE=$(cd "$TREE" && pwd)
[[ -f $TREE/lib/libweft.la && -x $TREE/samples/echo-client ]] ||
  fail "$TREE is not built: run make there first (lib/libweft.la, samples/echo-client)"
command -v pkg-config >/dev/null 2>&1 || fail "pkg-config not found (apt-get install pkg-config)"
command -v "$CC" >/dev/null 2>&1 || fail "compiler '$CC' not found"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/weft-install-test.XXXXXX")
STAGE=$WORK/stage
mkdir -p "$STAGE" "$WORK/app"

# The installation directories, as configure set them (expanded by make).
cat >"$WORK/dirs.mk" <<'EOF'
install-test-dirs:
	@echo 'libdir=$(libdir)'
	@echo 'includedir=$(includedir)'
	@echo 'pkgconfigdir=$(pkgconfigdir)'
	@echo 'srcdir=$(abs_top_srcdir)'
EOF
timeout 120 make -s -C "$TREE" --no-print-directory -f Makefile -f "$WORK/dirs.mk" \
  install-test-dirs >"$WORK/dirs" 2>"$WORK/dirs.err" ||
  fail "cannot read the directories from $TREE/Makefile" "$WORK/dirs.err"
value() { sed -n "s|^$1=||p" "$WORK/dirs"; }
libdir=$(value libdir) includedir=$(value includedir) pkgconfigdir=$(value pkgconfigdir)
srcdir=$(value srcdir)
[[ $libdir == /* && $includedir == /* && $pkgconfigdir == /* && -d $srcdir ]] ||
  fail "unexpected directories from $TREE/Makefile" "$WORK/dirs"

# --- 1. Install into the staging directory ----------------------------------------------------

timeout 600 make -C "$TREE" install DESTDIR="$STAGE" >"$WORK/install.log" 2>&1 ||
  fail "make install DESTDIR=$STAGE failed (or took over 600 s)" "$WORK/install.log"
for f in "$libdir/libweft.so" "$includedir/weft/weft.h" "$pkgconfigdir/weft.pc"; do
  [[ -e $STAGE$f ]] || fail "make install did not install $f"
done

# --- 2. Build the sample out of tree, with pkg-config's flags only ----------------------------

if ! FLAGS=$(PKG_CONFIG_PATH="$STAGE$pkgconfigdir" PKG_CONFIG_SYSROOT_DIR="$STAGE" \
  pkg-config --cflags --libs weft 2>"$WORK/pkg-config.err"); then
  fail "pkg-config --cflags --libs weft failed on the staged weft.pc" "$WORK/pkg-config.err" \
    "$STAGE$pkgconfigdir/weft.pc"
fi
[[ " $FLAGS " == *" -I$STAGE$includedir "* || $includedir == /usr/include ]] ||
  fail "pkg-config's flags do not point into the staging directory: $FLAGS"
[[ " $FLAGS " == *" -L$STAGE$libdir "* ]] ||
  fail "pkg-config's flags do not point into the staging directory: $FLAGS"

cp "$srcdir/samples/echo-server.c" "$WORK/app/"
# shellcheck disable=SC2086 # FLAGS is a list of flags
if ! (cd "$WORK/app" && timeout 120 "$CC" -o echo-server echo-server.c $FLAGS) \
  >"$WORK/cc.log" 2>&1; then
  fail "out-of-tree build failed: $CC -o echo-server echo-server.c $FLAGS" "$WORK/cc.log"
fi

# The program must run on the staged library, not on the build tree's or a system one.
LD_LIBRARY_PATH="$STAGE$libdir" ldd "$WORK/app/echo-server" >"$WORK/ldd.log" 2>&1 || true
grep -q "libweft\.so.* => $STAGE$libdir/" "$WORK/ldd.log" ||
  fail "echo-server does not load libweft from $STAGE$libdir" "$WORK/ldd.log"

# --- 3. Run it and echo a line through it -----------------------------------------------------

LD_LIBRARY_PATH="$STAGE$libdir" "$WORK/app/echo-server" --listen 127.0.0.1:0 --tls \
  >"$WORK/server.out" 2>"$WORK/server.err" </dev/null &
SERVER_PID=$!
port=
for _ in $(seq 100); do # 10 s
  line=$(head -n 1 "$WORK/server.out")
  if [[ $line =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]]; then
    port=${BASH_REMATCH[1]}
    break
  fi
  kill -0 "$SERVER_PID" 2>/dev/null ||
    fail "echo-server exited before listening" "$WORK/server.out" "$WORK/server.err"
  sleep 0.1
done
[[ -n $port ]] ||
  fail "echo-server did not print 'listening on 127.0.0.1:PORT' within 10 s" \
    "$WORK/server.out" "$WORK/server.err"

MESSAGE="weft install-test $$"
if ! printf '%s\n' "$MESSAGE" |
  timeout 20 "$TREE/samples/echo-client" --connect "127.0.0.1:$port" --tls --insecure \
    >"$WORK/client.out" 2>"$WORK/client.err"; then
  fail "echo-client through the installed echo-server failed (or took over 20 s)" \
    "$WORK/client.out" "$WORK/client.err" "$WORK/server.out" "$WORK/server.err"
fi
grep -qxF "$MESSAGE" "$WORK/client.out" ||
  fail "echo-client did not get '$MESSAGE' back" "$WORK/client.out" "$WORK/client.err" \
    "$WORK/server.err"
grep -q '^connected peer=127\.0\.0\.1:[0-9]* protocol=none$' "$WORK/server.out" ||
  fail "echo-server did not report the connection" "$WORK/server.out" "$WORK/server.err"

# --- 4. SIGTERM: exit status 0 ------------------------------------------------------------------

kill -TERM "$SERVER_PID"
for _ in $(seq 100); do # 10 s
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$SERVER_PID" 2>/dev/null &&
  fail "echo-server did not exit within 10 s of SIGTERM" "$WORK/server.out" "$WORK/server.err"
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=
((status == 0)) ||
  fail "echo-server exited with status $status on SIGTERM (want 0)" "$WORK/server.err"

echo "install-test: ok"
