#!/bin/sh
# Regenerates the build system (configure, Makefile.in, ...) from configure.ac and Makefile.am.
#
#   ./autogen.sh                  autoreconf -fi
#   ./autogen.sh --install-deps   first installs the Debian packages that are missing (as root,
#                                 or through sudo), then autoreconf -fi
set -eu

# The Debian 12 packages needed to build weft, run its tests (openssl, curl, gnutls-bin and
# python3 are peers in the interop tests; libnghttp2-dev builds samples/h2-server, which
# tests/check_h2.sh drives with curl and nghttp2-client's h2load; systemd gives
# systemd-socket-activate and iproute2 the network namespace of the Happy Eyeballs test) and
# build its API reference (doxygen: `make` builds it when doxygen is installed, `make doc`
# always): the one list of them.
WEFT_DEBIAN_PACKAGES="build-essential autoconf automake libtool pkg-config libevent-dev libssl-dev check openssl curl gnutls-bin python3 doxygen libnghttp2-dev nghttp2-client systemd iproute2"

usage() {
    echo "usage: $0 [--install-deps]" >&2
    exit 2
}

install_deps() {
    missing=
    for pkg in $WEFT_DEBIAN_PACKAGES; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        case $status in
            *" ok installed") ;;
            *) missing="$missing $pkg" ;;
        esac
    done
    if [ -z "$missing" ]; then
        echo "autogen.sh: all build dependencies are installed"
        return 0
    fi
    echo "autogen.sh: installing missing packages:$missing"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=
    elif command -v sudo >/dev/null 2>&1; then
        sudo=sudo
    else
        echo "autogen.sh: not root and no sudo; install as root:$missing" >&2
        exit 1
    fi
    # $sudo and $missing are word lists on purpose.
    # shellcheck disable=SC2086
    $sudo apt-get update
    # shellcheck disable=SC2086
    $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends $missing
}

cd "$(dirname "$0")"

case ${1-} in
    "") ;;
    --install-deps)
        command -v dpkg-query >/dev/null 2>&1 || {
            echo "autogen.sh: --install-deps needs a Debian system (dpkg-query)" >&2
            exit 1
        }
        install_deps
        ;;
    *) usage ;;
esac
[ $# -le 1 ] || usage

# The aux and macro directories may be absent in a fresh clone (they hold generated files).
mkdir -p build-aux m4
autoreconf -fi
