#!/bin/sh
# tests/check_types.sh: the public headers give OpenSSL's handles their types. Keys are
# struct evp_pkey_st * (EVP_PKEY *), certificates struct x509_st * (X509 *), the connection's
# SSL struct ssl_st * (SSL *), forward-declared so that <weft/weft.h> needs no OpenSSL header.
# So a program that passes a key where a certificate belongs must not compile.
#
# Compiles small programs with the build's compiler ($WEFT_CC, set by `make check`; else $CC or
# cc) and -Werror against the headers ($WEFT_SRCDIR/include and $WEFT_BUILDDIR/include):
#   - a correct program (OpenSSL's own EVP_PKEY *, X509 *, SSL * passed without casts) compiles;
#   - a program that includes only <weft/weft.h> compiles and sees no OpenSSL header;
#   - the correct program with one line changed fails, for each misuse: a key as a certificate,
#     a certificate as a key, the SSL as a key, a certificate as a trust anchor's key type, and
#     the out-parameters of generation and PEM reading swapped.
# Each failure must be the compiler's type error (its message names the struct types), not
# some other error. Exit status: 0 pass, 1 fail, 77 skip (no compiler).

set -u
srcdir=${WEFT_SRCDIR:-.}
builddir=${WEFT_BUILDDIR:-.}
cc=${WEFT_CC:-${CC:-cc}}
# shellcheck disable=SC2086 # (WEFT_CC may hold a command with arguments, e.g. "gcc -m32")
if ! command -v ${cc%% *} >/dev/null 2>&1; then
  echo "SKIP: no C compiler ($cc)"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_types.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# compile NAME: compiles $tmp/NAME.c into an object; the diagnostics go to $tmp/NAME.log.
compile() {
  # shellcheck disable=SC2086 # ($cc and the OpenSSL flags are word lists on purpose)
  $cc -std=c11 -Wall -Wextra -Werror ${WEFT_OPENSSL_CFLAGS:-} -I"$builddir/include" \
    -I"$srcdir/include" -c -o "$tmp/$1.o" "$tmp/$1.c" >"$tmp/$1.log" 2>&1
}

# The correct program. The line marked MISUSE is the one the failing variants replace.
cat >"$tmp/template.c" <<'EOF'
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <weft/weft.h>

int use(weft_cert_options *options, weft_transport *transport, const char *pem, size_t len);
int use(weft_cert_options *options, weft_transport *transport, const char *pem, size_t len) {
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  SSL *ssl = weft_transport_ssl(transport);
  X509 *peer = weft_transport_peer_certificate(transport);
  int rc = weft_key_generate(WEFT_KEY_EC_P256, 0, &key);
  rc |= weft_cert_generate(NULL, key, NULL, NULL, &cert);
  rc |= weft_key_from_pem(pem, len, &key);
  rc |= weft_cert_from_pem(pem, len, &cert);
  rc |= weft_cert_options_set_private_key(options, key);
  rc |= weft_cert_options_set_certificate(options, cert);
  rc |= weft_cert_options_add_chain_certificate(options, cert);
  rc |= weft_cert_options_add_ca_certificate(options, peer);
  rc |= MISUSE;
  EVP_PKEY_free(key);
  X509_free(cert);
  return rc + (ssl != NULL);
}
EOF

# variant NAME LINE: the template with MISUSE replaced by LINE.
variant() {
  sed "s#MISUSE#$2#" "$tmp/template.c" >"$tmp/$1.c"
}

variant correct "weft_cert_to_pem(cert, NULL, NULL) | weft_key_to_pem(key, NULL, NULL)"
if compile correct; then
  pass "a program using EVP_PKEY *, X509 * and SSL * compiles without casts"
else
  fail "the correct program does not compile:"
  cat "$tmp/correct.log" >&2
fi

cat >"$tmp/alone.c" <<'EOF'
#include <weft/weft.h>
#if defined(OPENSSL_EVP_H) || defined(OPENSSL_X509_H) || defined(OPENSSL_SSL_H) || \
    defined(HEADER_X509_H) || defined(HEADER_SSL_H)
#error "weft/weft.h pulled in an OpenSSL header"
#endif
int use(weft_cert_options *options, weft_transport *transport);
int use(weft_cert_options *options, weft_transport *transport) {
  struct evp_pkey_st *key = NULL;
  struct x509_st *cert = weft_transport_peer_certificate(transport);
  return weft_key_generate(WEFT_KEY_EC_P256, 0, &key) |
         weft_cert_options_set_private_key(options, key) |
         weft_cert_options_set_certificate(options, cert) | (weft_transport_ssl(transport) != 0);
}
EOF
if compile alone; then
  pass "<weft/weft.h> alone compiles and includes no OpenSSL header"
else
  fail "<weft/weft.h> alone does not compile, or pulls in OpenSSL:"
  cat "$tmp/alone.log" >&2
fi

# must_fail NAME WHAT LINE: the template with LINE must not compile, with a type error on that
# very line (so that nothing else in the program can be what fails).
misuse_line=$(grep -n MISUSE "$tmp/template.c" | cut -d: -f1)
must_fail() {
  variant "$1" "$3"
  if compile "$1"; then
    fail "$2 compiles: $3"
  elif grep -q "$1\.c:$misuse_line:[0-9]*: error: .*incompatible" "$tmp/$1.log" &&
    grep -q -e 'evp_pkey_st' -e 'x509_st' -e 'ssl_st' "$tmp/$1.log"; then
    pass "$2 does not compile"
  else
    fail "$2 does not fail with a type error on its line $misuse_line:"
    cat "$tmp/$1.log" >&2
  fi
}

must_fail key_as_cert "a key passed as the certificate" \
  "weft_cert_options_set_certificate(options, key)"
must_fail cert_as_key "a certificate passed as the private key" \
  "weft_cert_options_set_private_key(options, cert)"
must_fail ssl_as_key "the SSL passed as the private key" \
  "weft_cert_options_set_private_key(options, ssl)"
must_fail key_as_ca "a key passed as a CA certificate" \
  "weft_cert_options_add_ca_certificate(options, key)"
must_fail key_as_chain "a key passed as a chain certificate" \
  "weft_cert_options_add_chain_certificate(options, key)"
must_fail cert_as_issuer_key "the issuer's certificate passed as its key" \
  "weft_cert_generate(NULL, key, cert, cert, NULL)"
must_fail cert_out_as_key "a certificate variable given to weft_key_generate" \
  "weft_key_generate(WEFT_KEY_EC_P256, 0, \\&cert)"
must_fail key_out_as_cert "a key variable given to weft_cert_from_pem" \
  "weft_cert_from_pem(pem, len, \\&key)"
must_fail key_to_cert_pem "a key given to weft_cert_to_pem" \
  "weft_cert_to_pem(key, NULL, NULL)"
must_fail peer_as_ssl "the peer certificate taken as the SSL" \
  "(SSL_get_error(weft_transport_peer_certificate(transport), 0) != 0)"

[ "$failures" -eq 0 ] || exit 1
exit 0
