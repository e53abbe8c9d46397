#!/usr/bin/env bash
# ci/packages.sh: the CI "packages" stage. Builds the Debian packages from a copy of the tree,
# runs lintian on them, installs them into this machine with `apt-get install ./*.deb`, builds
# and runs tests/consumer/hello.c against them (pkg-config and CMake: ci/consumers.sh system),
# then removes them again, so that later stages use the tree.
#
#   ci/packages.sh WORKDIR
#
# WORKDIR must not exist or be empty; the copy is WORKDIR/src, the packages land in WORKDIR.
# Runs as root (CI's throwaway machine) or with sudo. Installs the build tools it needs
# (dpkg-dev, debhelper, lintian, cmake) and the Build-Depends (dpkg-checkbuilddeps's list).
# DEB_BUILD_OPTIONS=nocheck by default: the test suite already ran in several stages; set
# WEFT_DEB_CHECK=1 to run it in dh_auto_test as a distribution build does (about a minute).
# lintian: any error fails the stage; warnings are printed (the accepted ones are overridden in
# debian/*.lintian-overrides, each with its reason). Refuses to run when a weft package is
# already installed (it would remove it).
set -euo pipefail
exec </dev/null
export DEBIAN_FRONTEND=noninteractive

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:?usage: $0 WORKDIR}
JOBS=$(nproc 2>/dev/null || echo 2)
PACKAGES=(libweft0 libweft-dev libweft-doc libweft0-dbgsym)

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -c 'ok installed' >/dev/null; }

for p in "${PACKAGES[@]}"; do
  if installed "$p"; then
    echo "packages: $p is already installed; remove it first (this stage installs and removes it)" >&2
    exit 1
  fi
done

tools=()
for p in dpkg-dev debhelper lintian cmake fakeroot; do installed "$p" || tools+=("$p"); done
if ((${#tools[@]} > 0)); then
  as_root apt-get update
  as_root apt-get install -y --no-install-recommends "${tools[@]}"
fi

# --- Copy the tree (dpkg-buildpackage builds in the source tree) ------------------------------

mkdir -p "$WORK/src"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$ROOT" &&
    git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do
      if [[ -e $f || -L $f ]]; then printf '%s\0' "$f"; fi
    done |
    tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
else
  cp -a "$ROOT/." "$WORK/src/"
fi
cd "$WORK/src"
[[ -f debian/control ]] || { echo "packages: no debian/ in the tree" >&2; exit 1; }

# The upstream version in debian/changelog must be the one the tree builds.
upstream=$(sed -n -e 's/^#define WEFT_VERSION_MAJOR //p' -e 's/^#define WEFT_VERSION_MINOR //p' \
  -e 's/^#define WEFT_VERSION_PATCH //p' include/weft/version.h | paste -sd. -)
deb_version=$(dpkg-parsechangelog -S Version)
if [[ ${deb_version%-*} != "$upstream" ]]; then
  echo "packages: FAILED: debian/changelog's version $deb_version is not for upstream $upstream" \
    "(include/weft/version.h): add a changelog entry (dch -v $upstream-1)" >&2
  exit 1
fi

# Build-Depends: what dpkg-checkbuilddeps says is missing, installed with apt-get.
if ! missing=$(dpkg-checkbuilddeps 2>&1); then
  deps=$(sed -n 's/.*Unmet build dependencies: //p' <<<"$missing" | sed 's/([^)]*)//g')
  echo "packages: installing the Build-Depends: $deps"
  as_root apt-get update
  # shellcheck disable=SC2086 # a list of packages
  as_root apt-get install -y --no-install-recommends $deps
fi

# --- Build ------------------------------------------------------------------------------------

if [[ ${WEFT_DEB_CHECK:-0} == 1 ]]; then
  opts=${DEB_BUILD_OPTIONS:-}
else
  opts="nocheck ${DEB_BUILD_OPTIONS:-}"
fi
start=$SECONDS
# A distribution's build: without CI's ci/config.site (--enable-werror), with Debian's flags.
if ! env -u CONFIG_SITE DEB_BUILD_OPTIONS="$opts parallel=$JOBS" dpkg-buildpackage -us -uc -b \
  >"$WORK/build.log" 2>&1; then
  tail -n 80 "$WORK/build.log"
  echo "packages: FAILED: dpkg-buildpackage -us -uc -b (log: $WORK/build.log)" >&2
  exit 1
fi
echo "packages: dpkg-buildpackage -us -uc -b (DEB_BUILD_OPTIONS=$opts) in $((SECONDS - start)) s"
grep -E '^dpkg-gensymbols: warning' "$WORK/build.log" || true
cd "$WORK"
changes=$(ls ./*.changes)
for deb in ./*.deb; do
  echo "----- $deb"
  dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { $1 = $2 = $3 = $4 = $5 = ""; sub(/^ +/, ""); print "  " $0 }' |
    awk '/\/html\/./ { html++; next } { print } END { if (html) print "  (and " html " files of the HTML reference under html/)" }'
done

# --- lintian: no error; warnings shown ---------------------------------------------------------

start=$SECONDS
lintian --info --display-info --fail-on error "$changes" >"$WORK/lintian.log" 2>&1 || {
  cat "$WORK/lintian.log"
  echo "packages: FAILED: lintian reports errors" >&2
  exit 1
}
echo "packages: lintian (no error) in $((SECONDS - start)) s:"
sed 's/^/  /' "$WORK/lintian.log"
if grep -q '^W: ' "$WORK/lintian.log"; then
  echo "packages: lintian warnings above: each must be fixed or overridden with its reason"
  exit 1
fi

# --- Install, build the consumers against the packages, remove ----------------------------------

remove_packages() {
  as_root apt-get purge -y "${PACKAGES[@]}" >"$WORK/remove.log" 2>&1 || {
    cat "$WORK/remove.log"
    echo "packages: FAILED: could not remove ${PACKAGES[*]}" >&2
    return 1
  }
  echo "packages: removed ${PACKAGES[*]}"
}
trap 'remove_packages || true' EXIT
as_root apt-get install -y --no-install-recommends ./*.deb >"$WORK/install.log" 2>&1 || {
  cat "$WORK/install.log"
  echo "packages: FAILED: apt-get install ./*.deb" >&2
  exit 1
}
debs=(./*.deb)
echo "packages: installed ${debs[*]#./}"
[[ -f /usr/share/doc/libweft-doc/html/index.html ]] ||
  { echo "packages: FAILED: libweft-doc has no html/index.html" >&2; exit 1; }
bash "$ROOT/ci/consumers.sh" system
trap - EXIT
remove_packages
for p in "${PACKAGES[@]}"; do
  if installed "$p"; then echo "packages: FAILED: $p still installed" >&2; exit 1; fi
done
echo "packages: ok"
