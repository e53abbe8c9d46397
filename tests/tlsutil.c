/* tests/tlsutil.c: see tlsutil.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"
#include "tlsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* --- Keys and certificates -------------------------------------------------------------- */

EVP_PKEY *tu_make_key(void) {
  EVP_PKEY *key = NULL;
  int rc = weft_key_generate(WEFT_KEY_EC_P256, 0, &key);
  ck_assert_msg(rc == 0, "weft_key_generate(EC P-256): %s", weft_err_name(rc));
  ck_assert_ptr_nonnull(key);
  return key;
}

X509 *tu_make_cert(EVP_PKEY *key, EVP_PKEY *issuer_key, X509 *issuer_cert, const char *cn,
                   const char *dns, const char *ip, long not_before, long not_after) {
  weft_cert_spec spec;
  memset(&spec, 0, sizeof spec);
  spec.common_name = cn;
  spec.dns_names = &dns;
  spec.dns_count = dns ? 1 : 0;
  spec.ip_addresses = &ip;
  spec.ip_count = ip ? 1 : 0;
  spec.not_before = not_before;
  spec.not_after = not_after;
  X509 *cert = NULL;
  int rc = weft_cert_generate(&spec, key, issuer_key, issuer_cert, &cert);
  ck_assert_msg(rc == 0, "weft_cert_generate(CN=%s): %s", cn ? cn : "(none)", weft_err_name(rc));
  ck_assert_ptr_nonnull(cert);
  return cert;
}

static X509 *make_ca(EVP_PKEY *key, const char *cn) {
  weft_cert_spec spec;
  memset(&spec, 0, sizeof spec);
  spec.common_name = cn;
  spec.organization = "weft tests";
  spec.is_ca = 1;
  X509 *cert = NULL;
  int rc = weft_cert_generate(&spec, key, NULL, NULL, &cert);
  ck_assert_msg(rc == 0, "weft_cert_generate(CA %s): %s", cn, weft_err_name(rc));
  ck_assert_ptr_nonnull(cert);
  return cert;
}

void tu_pki_init(tu_pki *pki) {
  static const char *const server_dns[] = {"localhost", "a.example", "b.example"};
  static const char *const server_ips[] = {"127.0.0.1", "::1"};
  memset(pki, 0, sizeof *pki);

  pki->ca_key = tu_make_key();
  pki->ca_cert = make_ca(pki->ca_key, "weft test CA");
  pki->other_ca_key = tu_make_key();
  pki->other_ca_cert = make_ca(pki->other_ca_key, "weft other CA");

  weft_cert_spec spec;
  memset(&spec, 0, sizeof spec);
  spec.common_name = "server";
  spec.dns_names = server_dns;
  spec.dns_count = sizeof server_dns / sizeof server_dns[0];
  spec.ip_addresses = server_ips;
  spec.ip_count = sizeof server_ips / sizeof server_ips[0];
  pki->server_key = tu_make_key();
  int rc = weft_cert_generate(&spec, pki->server_key, pki->ca_key, pki->ca_cert, &pki->server_cert);
  ck_assert_msg(rc == 0, "weft_cert_generate(server): %s", weft_err_name(rc));

  pki->client_key = tu_make_key();
  pki->client_cert =
      tu_make_cert(pki->client_key, pki->ca_key, pki->ca_cert, "client", NULL, NULL, 0, 0);
}

void tu_pki_free(tu_pki *pki) {
  EVP_PKEY_free(pki->ca_key);
  X509_free(pki->ca_cert);
  EVP_PKEY_free(pki->other_ca_key);
  X509_free(pki->other_ca_cert);
  EVP_PKEY_free(pki->server_key);
  X509_free(pki->server_cert);
  EVP_PKEY_free(pki->client_key);
  X509_free(pki->client_cert);
  memset(pki, 0, sizeof *pki);
}

/* --- Options ---------------------------------------------------------------------------- */

void tu_check_opt_at(const char *file, int line, weft_cert_options *opts, int rc) {
  if (rc != 0)
    ck_abort_msg("%s:%d: options call failed: %s (%s)", file, line, weft_err_name(rc),
                 opts ? weft_cert_options_last_error(opts) : "no options");
}

static weft_cert_options *new_options(void) {
  weft_cert_options *opts = NULL;
  int rc = weft_cert_options_new(&opts);
  ck_assert_msg(rc == 0, "weft_cert_options_new: %s", weft_err_name(rc));
  ck_assert_ptr_nonnull(opts);
  return opts;
}

weft_cert_options *tu_options_with_identity(EVP_PKEY *key, X509 *cert) {
  weft_cert_options *opts = new_options();
  tu_check_opt(opts, weft_cert_options_set_private_key(opts, key));
  tu_check_opt(opts, weft_cert_options_set_certificate(opts, cert));
  return opts;
}

weft_cert_options *tu_server_options(const tu_pki *pki) {
  return tu_options_with_identity(pki->server_key, pki->server_cert);
}

weft_cert_options *tu_server_options_mutual(const tu_pki *pki) {
  weft_cert_options *opts = tu_server_options(pki);
  tu_check_opt(opts, weft_cert_options_add_ca_certificate(opts, pki->ca_cert));
  tu_check_opt(opts, weft_cert_options_set_require_certificate(opts, 1));
  return opts;
}

weft_cert_options *tu_client_options(const tu_pki *pki) {
  weft_cert_options *opts = new_options();
  tu_check_opt(opts, weft_cert_options_add_ca_certificate(opts, pki->ca_cert));
  return opts;
}

weft_cert_options *tu_client_options_mutual(const tu_pki *pki) {
  weft_cert_options *opts = tu_client_options(pki);
  tu_check_opt(opts, weft_cert_options_set_private_key(opts, pki->client_key));
  tu_check_opt(opts, weft_cert_options_set_certificate(opts, pki->client_cert));
  return opts;
}

/* --- Endpoints -------------------------------------------------------------------------- */

weft_connector *tu_connect_ssl_local(weft_reactor *reactor, tu_factory *f, int port,
                                     weft_cert_options *options, const char *server_name) {
  weft_connector *connector = NULL;
  int rc =
      tu_connect(reactor, "127.0.0.1", port, &f->base, options, server_name, 0, NULL, &connector);
  ck_assert_msg(rc == 0, "weft_connect_ssl(127.0.0.1:%d, %s): %s (%s)", port,
                server_name ? server_name : "NULL", weft_err_name(rc),
                weft_cert_options_last_error(options));
  ck_assert_ptr_nonnull(connector);
  return connector;
}

weft_listener *tu_listen_ssl_local(weft_reactor *reactor, tu_factory *f, weft_cert_options *options,
                                   int *port) {
  weft_listener *listener = NULL;
  int rc = weft_listen_ssl(reactor, "127.0.0.1", 0, &f->base, options, &listener);
  ck_assert_msg(rc == 0, "weft_listen_ssl(127.0.0.1, 0): %s (%s)", weft_err_name(rc),
                weft_cert_options_last_error(options));
  ck_assert_ptr_nonnull(listener);
  int p = weft_listener_port(listener);
  ck_assert_int_gt(p, 0);
  if (port)
    *port = p;
  return listener;
}

/* --- Programs and files ----------------------------------------------------------------- */

const char *tu_find_program(const char *name) {
  static char found[4096];
  const char *path = getenv("PATH");
  if (!name || !*name)
    return NULL;
  if (strchr(name, '/'))
    return access(name, X_OK) == 0 ? name : NULL;
  if (!path || !*path)
    path = "/usr/local/bin:/usr/bin:/bin";
  while (*path) {
    const char *end = strchr(path, ':');
    size_t len = end ? (size_t)(end - path) : strlen(path);
    const char *dir = len ? path : ".";
    int dir_len = len ? (int)len : 1;
    int n = snprintf(found, sizeof found, "%.*s/%s", dir_len, dir, name);
    struct stat st;
    if (n > 0 && (size_t)n < sizeof found && stat(found, &st) == 0 && S_ISREG(st.st_mode) &&
        access(found, X_OK) == 0)
      return found;
    if (!end)
      break;
    path = end + 1;
  }
  return NULL;
}

char *tu_write_temp_file(const void *data, size_t len) {
  const char *dir = getenv("TMPDIR");
  if (!dir || !*dir)
    dir = "/tmp";
  size_t size = strlen(dir) + sizeof "/weft-tls-XXXXXX";
  char *path = malloc(size);
  ck_assert_ptr_nonnull(path);
  snprintf(path, size, "%s/weft-tls-XXXXXX", dir);
  int fd = mkstemp(path);
  ck_assert_msg(fd >= 0, "mkstemp(%s) failed", path);
  const char *p = data;
  size_t left = len;
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    ck_assert_msg(n > 0, "writing %s failed", path);
    p += n;
    left -= (size_t)n;
  }
  ck_assert_int_eq(close(fd), 0);
  return path;
}

char *tu_write_key_pem(EVP_PKEY *key) {
  char *pem = NULL;
  size_t len = 0;
  int rc = weft_key_to_pem(key, &pem, &len);
  ck_assert_msg(rc == 0, "weft_key_to_pem: %s", weft_err_name(rc));
  char *path = tu_write_temp_file(pem, len);
  free(pem);
  return path;
}

char *tu_write_cert_pem(X509 *cert) {
  char *pem = NULL;
  size_t len = 0;
  int rc = weft_cert_to_pem(cert, &pem, &len);
  ck_assert_msg(rc == 0, "weft_cert_to_pem: %s", weft_err_name(rc));
  char *path = tu_write_temp_file(pem, len);
  free(pem);
  return path;
}

void tu_remove_file(char *path) {
  if (!path)
    return;
  unlink(path);
  free(path);
}
