/* fuzz_tls_server: the server side of a weft TLS connection, fed arbitrary bytes as if a client
 * had sent them.
 *
 * Once: server options with a generated P-256 key and self-signed certificate, next protocols
 * [h2, http/1.1], prepared for WEFT_TLS_SERVER. Per input: an SSL from weft__tls_new_ssl (so
 * weft's info, ALPN and NPN callbacks run), memory BIOs, the input written into the read BIO,
 * SSL_do_handshake; once the input is used up, the peer "closes" (end of file) and the
 * handshake is driven again; after a (so far unreachable) successful handshake, SSL_read. Then
 * the failure is classified as lib/transport.c does (OpenSSL's error queue, oldest first, into
 * weft__tls_classify) and the negotiated protocol is read with weft__tls_negotiated.
 *
 * Checked: the reason has a code from weft's table, a non-empty NUL-terminated message in its
 * own buffer, the TLS alert weft recorded, WEFT_OK only after a close_notify; a negotiated
 * protocol is one of ours and comes with its mechanism. With conn NULL, classify still gives a
 * message. ASan and UBSan check the rest.
 *
 * Seeds: WEFT_FUZZ_WRITE_SEEDS=DIR ./fuzz_tls_server writes the seed corpus (ClientHellos from
 * an in-memory OpenSSL client) into DIR and exits; see fuzz/README.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <weft/tls.h>

#include "negotiation-internal.h"
#include "tls_ssl-internal.h"

static weft_cert_options *options;
static int verbose; /* WEFT_FUZZ_VERBOSE=1: print each reason and negotiated protocol */

static __attribute__((noreturn)) void fail(const char *what) {
  fprintf(stderr, "fuzz_tls_server: %s\n", what);
  abort();
}

/* --- Seeds -------------------------------------------------------------------------------- */

#ifndef OPENSSL_NO_NEXTPROTONEG
static int npn_pick_first(SSL *ssl, unsigned char **out, unsigned char *out_len,
                          const unsigned char *in, unsigned int in_len, void *arg) {
  (void)ssl;
  (void)arg;
  if (in_len == 0)
    return SSL_TLSEXT_ERR_NOACK;
  *out = (unsigned char *)in + 1;
  *out_len = in[0];
  return SSL_TLSEXT_ERR_OK;
}
#endif

/* The first flight of an in-memory OpenSSL client (its ClientHello) into BUF; returns its
 * length. ALPN is the wire list (NULL: none); MAX_VERSION 0 means TLS 1.3. */
static size_t client_hello(const char *alpn, size_t alpn_len, int max_version, int npn,
                           const char *sni, uint8_t *buf, size_t size) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == NULL)
    fail("SSL_CTX_new (client)");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, max_version != 0 ? max_version : TLS1_3_VERSION);
  if (alpn != NULL &&
      SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)alpn, (unsigned int)alpn_len) != 0)
    fail("SSL_CTX_set_alpn_protos");
#ifndef OPENSSL_NO_NEXTPROTONEG
  if (npn)
    SSL_CTX_set_next_proto_select_cb(ctx, npn_pick_first, NULL);
#else
  (void)npn;
#endif
  SSL *ssl = SSL_new(ctx);
  BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
  if (ssl == NULL || in == NULL || out == NULL)
    fail("SSL_new / BIO_new (client)");
  SSL_set_bio(ssl, in, out);
  if (sni != NULL)
    SSL_set_tlsext_host_name(ssl, sni);
  SSL_set_connect_state(ssl);
  if (SSL_do_handshake(ssl) != -1)
    fail("the client's handshake did not stop for the server's answer");
  int n = BIO_read(out, buf, (int)size);
  if (n <= 0)
    fail("the client wrote no ClientHello");
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return (size_t)n;
}

static void write_seed(const char *dir, const char *name, const uint8_t *data, size_t len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0)
    fail("cannot write a seed file");
  printf("%s (%zu bytes)\n", path, len);
}

#define WIRE_H2_HTTP11 "\x02h2\x08http/1.1"

static void write_seeds(const char *dir) {
  uint8_t buf[4096];
  size_t n;
  n = client_hello(WIRE_H2_HTTP11, 12, 0, 0, "localhost", buf, sizeof buf);
  write_seed(dir, "clienthello-tls13-alpn-h2-http11", buf, n);
  n = client_hello(WIRE_H2_HTTP11, 12, TLS1_2_VERSION, 1, "localhost", buf, sizeof buf);
  write_seed(dir, "clienthello-tls12-alpn-npn", buf, n);
  n = client_hello("\x08spdy/3.1\x04xmpp", 14, 0, 0, NULL, buf, sizeof buf);
  write_seed(dir, "clienthello-tls13-alpn-no-overlap", buf, n);
  n = client_hello(NULL, 0, TLS1_2_VERSION, 1, NULL, buf, sizeof buf);
  write_seed(dir, "clienthello-tls12-npn-only", buf, n);
  /* a ClientHello, then a fatal handshake_failure alert (40) from the client */
  n = client_hello(WIRE_H2_HTTP11, 12, 0, 0, NULL, buf, sizeof buf);
  memcpy(buf + n, "\x15\x03\x03\x00\x02\x02\x28", 7);
  write_seed(dir, "clienthello-then-alert", buf, n + 7);
  static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  write_seed(dir, "not-tls-http-request", (const uint8_t *)http, sizeof http - 1);
}

/* --- The target --------------------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  verbose = getenv("WEFT_FUZZ_VERBOSE") != NULL;
  const char *seed_dir = getenv("WEFT_FUZZ_WRITE_SEEDS");
  if (seed_dir != NULL && seed_dir[0] != '\0') {
    write_seeds(seed_dir);
    exit(0);
  }
  static const char *const protocols[] = {"h2", "http/1.1"};
  const char *const names[] = {"localhost"};
  weft_cert_spec spec = {.common_name = "localhost", .dns_names = names, .dns_count = 1};
  EVP_PKEY *key;
  X509 *cert;
  if (weft_key_generate(WEFT_KEY_EC_P256, 0, &key) != 0 ||
      weft_cert_generate(&spec, key, NULL, NULL, &cert) != 0 ||
      weft_cert_options_new(&options) != 0 ||
      weft_cert_options_set_private_key(options, key) != 0 ||
      weft_cert_options_set_certificate(options, cert) != 0)
    fail("cannot build the server options");
  EVP_PKEY_free(key);
  X509_free(cert);
  if (weft_protocol_negotiation_mechanisms() != 0 &&
      weft_cert_options_set_next_protocols(options, protocols, 2) != 0)
    fail("cannot set the next protocols");
  if (weft_cert_options_prepare(options, WEFT_TLS_SERVER) != 0)
    fail(weft_cert_options_last_error(options));
  ERR_clear_error();
  return 0;
}

/* What every reason must look like. */
static void check_reason(const weft__reason_buf *why, SSL *ssl, const weft__tls_conn *conn) {
  if (why->reason.message != why->msg)
    fail("the reason's message does not point at its buffer");
  if (memchr(why->msg, '\0', sizeof why->msg) == NULL)
    fail("the reason's message is not NUL-terminated");
  if (why->msg[0] == '\0')
    fail("the reason's message is empty");
  if (why->reason.code > 0 || strcmp(weft_err_name(why->reason.code), "WEFT_UNKNOWN") == 0)
    fail("the reason's code is not in weft's table");
  if (why->reason.code == WEFT_OK && !(SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN))
    fail("a clean close was reported without a close_notify from the peer");
  if (conn == NULL)
    return;
  if (conn->alert_received >= 0) {
    if (why->reason.tls_alert != conn->alert_received || why->reason.alert_sent != 0)
      fail("the reason does not carry the alert received");
  } else if (conn->alert_sent >= 0) {
    if (why->reason.tls_alert != conn->alert_sent || why->reason.alert_sent != 1)
      fail("the reason does not carry the alert sent");
  }
}

/* Classifies the connection as lib/transport.c's classify_tls does: OpenSSL's error codes,
 * oldest first, at most 16. Empties the error queue. */
static void classify(SSL *ssl, const weft__tls_conn *conn, int eof_seen) {
  unsigned long errs[16];
  size_t n = 0;
  unsigned long e;
  while ((e = ERR_get_error()) != 0)
    if (n < sizeof errs / sizeof errs[0])
      errs[n++] = e;
  weft__reason_buf why;
  memset(&why, 0x5a, sizeof why); /* no NUL anywhere: classify must write one */
  weft__tls_classify(ssl, conn, errs, n, 0, eof_seen, &why);
  check_reason(&why, ssl, conn);
  if (verbose)
    fprintf(stderr, "%s %s: %s (alert %d%s)\n", eof_seen ? "at eof" : "open",
            weft_err_name(why.reason.code), why.msg, why.reason.tls_alert,
            why.reason.alert_sent ? " sent" : "");
  memset(&why, 0x5a, sizeof why);
  weft__tls_classify(ssl, NULL, errs, n, 0, eof_seen, &why);
  check_reason(&why, ssl, NULL);
}

static void check_negotiated(SSL *ssl, const weft__tls_conn *conn) {
  const uint8_t *proto;
  size_t len;
  weft_negotiation_mechanism mechanism;
  weft__tls_negotiated(ssl, conn, &proto, &len, &mechanism);
  if ((proto == NULL) != (mechanism == WEFT_NEGOTIATED_NONE))
    fail("a protocol without a mechanism, or a mechanism without a protocol");
  if (proto != NULL && !(len == 2 && memcmp(proto, "h2", 2) == 0) &&
      !(len == 8 && memcmp(proto, "http/1.1", 8) == 0))
    fail("the server negotiated a protocol it does not list");
  if (verbose)
    fprintf(stderr, "negotiated: %.*s\n", proto ? (int)len : 4,
            proto ? (const char *)proto : "none");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > INT32_MAX)
    return 0;
  weft__tls_conn conn;
  memset(&conn, 0, sizeof conn);
  conn.alert_received = conn.alert_sent = -1;
  conn.options = options;
  SSL *ssl;
  weft__reason_buf err;
  if (weft__tls_new_ssl(options, WEFT_TLS_SERVER, NULL, &conn, 1, &ssl, &err) != 0)
    fail(err.msg);
  BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
  if (rbio == NULL || wbio == NULL)
    fail("BIO_new");
  SSL_set_bio(ssl, rbio, wbio);
  if (size > 0 && BIO_write(rbio, data, (int)size) != (int)size)
    fail("BIO_write");

  int eof_seen = 0;
  int rc = SSL_do_handshake(ssl);
  if (rc <= 0 && SSL_get_error(ssl, rc) == SSL_ERROR_WANT_READ) {
    /* the input is used up and the connection still open: classify this state too, then the
     * peer closes */
    classify(ssl, &conn, 0);
    BIO_set_mem_eof_return(rbio, 0);
    eof_seen = 1;
    rc = SSL_do_handshake(ssl);
  }
  if (rc == 1) {
    uint8_t buf[4096];
    while (SSL_read(ssl, buf, sizeof buf) > 0) {
    }
  }
  classify(ssl, &conn, eof_seen);
  check_negotiated(ssl, &conn);
  SSL_free(ssl); /* frees both BIOs */
  ERR_clear_error();
  return 0;
}
