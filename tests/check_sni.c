/* tests/check_sni.c: serving TLS in production (issue 13), in process.
 *
 *  - several identities on one listener, chosen by SNI (exact, one-label wildcard, case), each
 *    with its own ALPN list (or the listener's) and no-overlap policy; unknown names get the
 *    default identity or alert 112; a ClientHello without SNI gets the default;
 *  - a selector that sees the ALPN offer (acme-tls/1 gets the challenge certificate) or refuses;
 *  - reload of a live listener: new handshakes get the new certificate at once, an open
 *    connection keeps working, a failed reload changes nothing and says why;
 *  - key log (callback and file) holding the connection's client random; SPKI pins and the
 *    verify callback; a client that requires a protocol; OCSP stapling made and required;
 *    the TLS 1.3 ticket count.
 *
 * Real sockets on 127.0.0.1, real handshakes, certificates and OCSP responses made in the test;
 * no sleeps. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "testutil.h"
#include "tlsutil.h"

#include "tls_options-internal.h" /* weft__tls_cached_sessions */

#define WAIT 20.0

typedef struct world {
  weft_reactor *r;
  tu_pki pki;
  tu_factory server;
  weft_cert_options *opts[24];
  int nopts;
  weft_tls_identity *ids[8];
  int nids;
  X509 *certs[8];
  int ncerts;
  int fds;
  long allocs;
} world;

static void world_init(world *w) {
  memset(w, 0, sizeof *w);
  w->fds = tu_count_fds();
  w->allocs = weft_allocations_outstanding();
  w->r = tu_reactor_new();
  tu_pki_init(&w->pki);
  tu_factory_init(&w->server);
  w->server.conn_config.echo = 1;
}

static weft_cert_options *keep(world *w, weft_cert_options *o) {
  ck_assert_int_lt(w->nopts, 24);
  w->opts[w->nopts++] = o;
  return o;
}

static weft_cert_options *empty_options(world *w) {
  weft_cert_options *o = NULL;
  ck_assert_int_eq(weft_cert_options_new(&o), 0);
  return keep(w, o);
}

static X509 *keep_cert(world *w, X509 *x) {
  ck_assert_int_lt(w->ncerts, 8);
  w->certs[w->ncerts++] = x;
  return x;
}

static void world_free(world *w) {
  tu_factory_check(&w->server);
  weft_reactor_free(w->r);
  tu_factory_check(&w->server);
  tu_factory_cleanup(&w->server);
  for (int i = 0; i < w->nopts; i++)
    weft_cert_options_unref(w->opts[i]);
  for (int i = 0; i < w->nids; i++)
    weft_tls_identity_unref(w->ids[i]);
  for (int i = 0; i < w->ncerts; i++)
    X509_free(w->certs[i]);
  tu_pki_free(&w->pki);
  ck_assert_int_eq(weft_allocations_outstanding(), w->allocs);
  ck_assert_int_eq(tu_count_fds(), w->fds);
}

/* A CA-signed identity (the PKI's server key) with CN and one DNS name; PROTOS (may be NULL) its
 * own protocol list. */
static weft_tls_identity *identity(world *w, const char *cn, const char *dns,
                                   const char *const *protos, size_t nprotos) {
  weft_tls_identity *id = NULL;
  ck_assert_int_eq(weft_tls_identity_new(&id), 0);
  ck_assert_int_lt(w->nids, 8);
  w->ids[w->nids++] = id;
  X509 *cert = keep_cert(
      w, tu_make_cert(w->pki.server_key, w->pki.ca_key, w->pki.ca_cert, cn, dns, NULL, 0, 0));
  ck_assert_msg(weft_tls_identity_set_private_key(id, w->pki.server_key) == 0 &&
                    weft_tls_identity_set_certificate(id, cert) == 0,
                "%s", weft_tls_identity_last_error(id));
  if (protos != NULL)
    ck_assert_int_eq(weft_tls_identity_set_next_protocols(id, protos, nprotos), 0);
  return id;
}

static void protocols(weft_cert_options *o, const char *a, const char *b) {
  const char *names[2] = {a, b};
  tu_check_opt(o, weft_cert_options_set_next_protocols(o, names, b != NULL ? 2 : 1));
}

static weft_listener *listen_local(world *w, weft_cert_options *o, int *port) {
  return tu_listen_ssl_local(w->r, &w->server, o, port);
}

/* What one client connection saw. */
typedef struct outcome {
  int made;
  char subject[256];
  char proto[260];
  tu_reason failed;
  char client_random[80]; /* hex */
  int reused;             /* the handshake resumed a session */
} outcome;

static int made_or_failed(void *arg) {
  tu_factory *f = arg;
  return f->made > 0 || f->failed > 0;
}

/* Connects with OPTS to PORT presenting NAME, records what happened, closes. */
static void connect_once(world *w, int port, weft_cert_options *opts, const char *name,
                         outcome *out) {
  memset(out, 0, sizeof *out);
  tu_factory f;
  tu_factory_init(&f);
  tu_connect_ssl_local(w->r, &f, port, opts, name);
  tu_run_until(w->r, made_or_failed, &f, WAIT);
  if (f.made > 0) {
    tu_conn *c = tu_factory_conn(&f, 0);
    out->made = 1;
    out->reused = weft_transport_tls_session_reused(c->transport);
    weft_transport_peer_subject(c->transport, out->subject, sizeof out->subject);
    snprintf(out->proto, sizeof out->proto, "%s",
             c->proto_made.present ? c->proto_made.name : "none");
    const SSL *ssl = weft_transport_ssl(c->transport);
    unsigned char rnd[32];
    size_t n = SSL_get_client_random(ssl, rnd, sizeof rnd);
    for (size_t i = 0; i < n; i++)
      sprintf(out->client_random + 2 * i, "%02x", rnd[i]);
    /* an echo round trip: the connection really carries data (and TLS 1.3 tickets arrive) */
    tu_conn_write_str(c, "ping");
    tu_wait_size(w->r, &c->rx_total, 4, WAIT);
    ck_assert(tu_conn_rx_equals(c, "ping", 4));
    weft_transport_lose_connection(c->transport);
    tu_wait_int(w->r, &f.lost, 1, WAIT);
  } else {
    out->failed = f.last_failed;
  }
  tu_factory_check(&f);
  tu_factory_cleanup(&f);
}

static void expect_identity(world *w, int port, weft_cert_options *opts, const char *name,
                            const char *cn, const char *proto) {
  outcome o;
  connect_once(w, port, opts, name, &o);
  ck_assert_msg(o.made, "%s: connection failed: %s", name, o.failed.message);
  char want[64];
  snprintf(want, sizeof want, "CN=%s", cn);
  ck_assert_msg(strstr(o.subject, want) != NULL, "%s: got certificate %s, want %s", name, o.subject,
                want);
  ck_assert_msg(strcmp(o.proto, proto) == 0, "%s: protocol %s, want %s", name, o.proto, proto);
}

static void expect_failure(world *w, int port, weft_cert_options *opts, const char *name, int code,
                           int alert) {
  outcome o;
  connect_once(w, port, opts, name, &o);
  ck_assert_msg(!o.made, "%s: connected (certificate %s), want a failure", name, o.subject);
  ck_assert_msg(o.failed.code == code, "%s: failed with %s (%s), want %s", name,
                weft_err_name(o.failed.code), o.failed.message, weft_err_name(code));
  if (alert >= 0)
    ck_assert_msg(o.failed.tls_alert == alert, "%s: alert %d, want %d (%s)", name,
                  o.failed.tls_alert, alert, o.failed.message);
}

/* Server: the PKI's server (CN server) as default with http/1.1; alpha.test with its own list
 * [h2]; *.wild.test inheriting the listener's list. */
static weft_cert_options *sni_server(world *w) {
  weft_cert_options *o = keep(w, tu_server_options(&w->pki));
  protocols(o, "http/1.1", NULL);
  const char *h2[] = {"h2"};
  const char *alpha_names[] = {"Alpha.TEST"};
  const char *wild_names[] = {"*.wild.test"};
  tu_check_opt(o, weft_cert_options_add_identity(o, alpha_names, 1,
                                                 identity(w, "alpha", "alpha.test", h2, 1)));
  tu_check_opt(o, weft_cert_options_add_identity(o, wild_names, 1,
                                                 identity(w, "wild", "*.wild.test", NULL, 0)));
  return o;
}

START_TEST(test_identities_by_name) {
  TU_REQUIRE_ALPN();
  world w;
  world_init(&w);
  int port;
  weft_listener *l = listen_local(&w, sni_server(&w), &port);
  weft_cert_options *c = keep(&w, tu_client_options(&w.pki));
  protocols(c, "h2", "http/1.1");
  expect_identity(&w, port, c, "alpha.TEST", "alpha", "h2");
  expect_identity(&w, port, c, "x.wild.test", "wild", "http/1.1");
  expect_identity(&w, port, c, "localhost", "server", "http/1.1");
  /* no SNI at all (an IP literal): the default identity */
  expect_identity(&w, port, c, "127.0.0.1", "server", "http/1.1");
  /* a wildcard covers one label only; unknown names get the default identity */
  weft_cert_options *any = keep(&w, tu_client_options(&w.pki));
  tu_check_opt(any, weft_cert_options_set_verify_identity(any, 0));
  protocols(any, "h2", "http/1.1");
  expect_identity(&w, port, any, "a.b.wild.test", "server", "http/1.1");
  expect_identity(&w, port, any, "wild.test", "server", "http/1.1");
  expect_identity(&w, port, any, "nomatch.test", "server", "http/1.1");
  /* each identity's list with the listener's no-overlap policy (fail): alpha offers h2 only */
  weft_cert_options *h11 = keep(&w, tu_client_options(&w.pki));
  protocols(h11, "http/1.1", NULL);
  expect_failure(&w, port, h11, "alpha.test", WEFT_ENOPROTOCOL, 120);
  expect_identity(&w, port, h11, "y.wild.test", "wild", "http/1.1");
  weft_listener_stop(l);
  world_free(&w);
}
END_TEST

START_TEST(test_unknown_name_rejected) {
  TU_REQUIRE_ALPN();
  world w;
  world_init(&w);
  int port;
  weft_cert_options *s = sni_server(&w);
  tu_check_opt(s, weft_cert_options_set_sni_unknown_policy(s, WEFT_SNI_UNKNOWN_REJECT));
  weft_listener *l = listen_local(&w, s, &port);
  weft_cert_options *any = keep(&w, tu_client_options(&w.pki));
  tu_check_opt(any, weft_cert_options_set_verify_identity(any, 0));
  expect_failure(&w, port, any, "nomatch.test", WEFT_ETLSALERT, 112);
  expect_failure(&w, port, any, "a.b.wild.test", WEFT_ETLSALERT, 112);
  expect_identity(&w, port, any, "alpha.test", "alpha", "none");
  expect_identity(&w, port, any, "127.0.0.1", "server", "none"); /* no SNI: default */
  ck_assert_int_eq(weft_cert_options_set_sni_unknown_policy(s, 7), WEFT_EFROZEN);
  weft_listener_stop(l);
  world_free(&w);
}
END_TEST

/* --- acme-tls/1: a selector that sees the ALPN offer ------------------------------------- */

typedef struct acme {
  weft_tls_identity *challenge;
  int calls;
  char last_name[64];
} acme;

static int offers(const uint8_t *offer, size_t len, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < len; i += 1 + offer[i]) {
    if (offer[i] == n && i + 1 + n <= len && memcmp(offer + i + 1, name, n) == 0)
      return 1;
  }
  return 0;
}

static int acme_selector(void *arg, const char *server_name, const uint8_t *offer, size_t offer_len,
                         weft_tls_identity **out) {
  acme *a = arg;
  a->calls++;
  snprintf(a->last_name, sizeof a->last_name, "%s", server_name ? server_name : "(none)");
  if (server_name != NULL && strcmp(server_name, "refuse.test") == 0)
    return -1;
  if (offers(offer, offer_len, "acme-tls/1")) {
    *out = a->challenge;
    return 1;
  }
  return 0;
}

START_TEST(test_acme_selector) {
  TU_REQUIRE_ALPN();
  world w;
  world_init(&w);
  acme a = {0};
  const char *acme_proto[] = {"acme-tls/1"};
  /* the challenge certificate: self-signed, for the name being validated */
  EVP_PKEY *k = tu_make_key();
  X509 *self =
      keep_cert(&w, tu_make_cert(k, NULL, NULL, "acme-challenge", "alpha.test", NULL, 0, 0));
  ck_assert_int_eq(weft_tls_identity_new(&a.challenge), 0);
  w.ids[w.nids++] = a.challenge;
  ck_assert_int_eq(weft_tls_identity_set_private_key(a.challenge, k), 0);
  ck_assert_int_eq(weft_tls_identity_set_certificate(a.challenge, self), 0);
  ck_assert_int_eq(weft_tls_identity_set_next_protocols(a.challenge, acme_proto, 1), 0);
  EVP_PKEY_free(k);
  weft_cert_options *s = sni_server(&w);
  tu_check_opt(s, weft_cert_options_add_identity(s, NULL, 0, a.challenge));
  tu_check_opt(s, weft_cert_options_set_identity_selector(s, acme_selector, &a));
  int port;
  weft_listener *l = listen_local(&w, s, &port);

  weft_cert_options *validator = keep(&w, tu_client_options(&w.pki));
  tu_check_opt(validator, weft_cert_options_set_verify(validator, 0)); /* RFC 8737 checks */
  protocols(validator, "acme-tls/1", NULL);
  expect_identity(&w, port, validator, "alpha.test", "acme-challenge", "acme-tls/1");
  ck_assert_str_eq(a.last_name, "alpha.test");
  weft_cert_options *browser = keep(&w, tu_client_options(&w.pki));
  protocols(browser, "h2", "http/1.1");
  expect_identity(&w, port, browser, "alpha.test", "alpha", "h2");
  expect_failure(&w, port, browser, "refuse.test", WEFT_ETLSALERT, 112);
  ck_assert_int_eq(a.calls, 3);
  weft_listener_stop(l);
  world_free(&w);
}
END_TEST

/* --- Reload ------------------------------------------------------------------------------- */

START_TEST(test_reload) {
  TU_REQUIRE_ALPN();
  world w;
  world_init(&w);
  int port;
  weft_cert_options *v1 = keep(&w, tu_server_options(&w.pki));
  weft_listener *l = listen_local(&w, v1, &port);
  weft_cert_options *c = keep(&w, tu_client_options(&w.pki));
  expect_identity(&w, port, c, "localhost", "server", "none");

  /* a connection open across the reload */
  tu_factory f;
  tu_factory_init(&f);
  tu_connect_ssl_local(w.r, &f, port, c, "localhost");
  tu_conn *open = tu_wait_conn(w.r, &f, 0, WAIT);
  tu_wait_int(w.r, &w.server.made, 2, WAIT);

  /* renewed certificate and a protocol list */
  X509 *renewed = keep_cert(&w, tu_make_cert(w.pki.server_key, w.pki.ca_key, w.pki.ca_cert,
                                             "renewed", "localhost", NULL, 0, 0));
  weft_cert_options *v2 = keep(&w, tu_options_with_identity(w.pki.server_key, renewed));
  protocols(v2, "h2", NULL);
  ck_assert_int_eq(weft_listener_set_options(l, v2), 0);
  weft_cert_options *c2 = keep(&w, tu_client_options(&w.pki));
  protocols(c2, "h2", NULL);
  expect_identity(&w, port, c2, "localhost", "renewed", "h2");

  /* a reload that fails: a certificate without its key */
  weft_cert_options *bad = empty_options(&w);
  tu_check_opt(bad, weft_cert_options_set_certificate(bad, w.pki.server_cert));
  ck_assert_int_eq(weft_listener_set_options(l, bad), WEFT_EINVAL);
  ck_assert_msg(strstr(weft_cert_options_last_error(bad), "private key") != NULL, "%s",
                weft_cert_options_last_error(bad));
  expect_identity(&w, port, c2, "localhost", "renewed", "h2");

  /* the connection made before the reloads still carries data, with its old certificate */
  char subject[256];
  weft_transport_peer_subject(open->transport, subject, sizeof subject);
  ck_assert_msg(strstr(subject, "CN=server") != NULL, "%s", subject);
  tu_conn_write_str(open, "still here");
  tu_wait_size(w.r, &open->rx_total, 10, WAIT);
  ck_assert(tu_conn_rx_equals(open, "still here", 10));
  weft_transport_lose_connection(open->transport);
  tu_wait_int(w.r, &f.lost, 1, WAIT);
  ck_assert_int_eq(open->lost_reason.code, WEFT_OK);
  tu_factory_check(&f);
  tu_factory_cleanup(&f);
  ck_assert_int_eq(weft_listener_set_options(l, NULL), WEFT_EINVAL);
  weft_listener_stop(l);
  world_free(&w);
}
END_TEST

/* --- Key log ------------------------------------------------------------------------------ */

typedef struct keylines {
  char text[8192];
  size_t len;
  int lines;
} keylines;

static void on_keylog(void *arg, const char *line) {
  keylines *k = arg;
  k->lines++;
  int n = snprintf(k->text + k->len, sizeof k->text - k->len, "%s\n", line);
  if (n > 0 && (size_t)n < sizeof k->text - k->len)
    k->len += (size_t)n;
}

static void check_keylog(const char *text, const char *random, int tls13) {
  const char *labels13[] = {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                            "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"};
  const char *labels12[] = {"CLIENT_RANDOM"};
  const char *const *labels = tls13 ? labels13 : labels12;
  size_t n = tls13 ? 4 : 1;
  for (size_t i = 0; i < n; i++) {
    char want[160];
    snprintf(want, sizeof want, "%s %s ", labels[i], random);
    ck_assert_msg(strstr(text, want) != NULL, "key log lacks '%s':\n%s", want, text);
  }
}

START_TEST(test_keylog) {
  world w;
  world_init(&w);
  for (int v = 0; v < 2; v++) {
    keylines server_lines = {0};
    weft_cert_options *s = keep(&w, tu_server_options(&w.pki));
    tu_check_opt(s, weft_cert_options_set_keylog_callback(s, on_keylog, &server_lines));
    char path[] = "/tmp/weft-keylog-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    weft_cert_options *c = keep(&w, tu_client_options(&w.pki));
    int version = v == 0 ? WEFT_TLS1_2 : WEFT_TLS1_3;
    tu_check_opt(c, weft_cert_options_set_tls_versions(c, version, version));
    tu_check_opt(c, weft_cert_options_set_keylog_file(c, path));
    int port;
    weft_listener *l = listen_local(&w, s, &port);
    outcome o;
    connect_once(&w, port, c, "localhost", &o);
    ck_assert(o.made);
    check_keylog(server_lines.text, o.client_random, v == 1);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char text[8192];
    size_t got = fread(text, 1, sizeof text - 1, f);
    text[got] = '\0';
    fclose(f);
    check_keylog(text, o.client_random, v == 1);
    /* both ends logged the same secret for this connection */
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s %s ", v == 1 ? "CLIENT_TRAFFIC_SECRET_0" : "CLIENT_RANDOM",
             o.client_random);
    const char *a = strstr(text, prefix), *b = strstr(server_lines.text, prefix);
    ck_assert(a != NULL && b != NULL);
    ck_assert_msg(strncmp(a, b, strcspn(a, "\n")) == 0, "server and client key logs differ");
    unlink(path);
    weft_listener_stop(l);
  }
  weft_cert_options *o = keep(&w, tu_client_options(&w.pki));
  ck_assert_int_eq(weft_cert_options_set_keylog_file(o, "/nonexistent-dir/keylog"), WEFT_EIO);
  world_free(&w);
}
END_TEST

/* --- Verification hooks ------------------------------------------------------------------- */

static void pin_of(X509 *cert, char out[64]) {
  unsigned char *der = NULL;
  int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  ck_assert_int_gt(n, 0);
  unsigned char digest[32];
  unsigned int len = 0;
  ck_assert(EVP_Digest(der, (size_t)n, digest, &len, EVP_sha256(), NULL) == 1);
  OPENSSL_free(der);
  memcpy(out, "sha256//", 8);
  EVP_EncodeBlock((unsigned char *)out + 8, digest, 32);
}

START_TEST(test_pins) {
  world w;
  world_init(&w);
  int port;
  weft_listener *l = listen_local(&w, keep(&w, tu_server_options(&w.pki)), &port);
  char right[64], wrong[64];
  pin_of(w.pki.server_cert, right);
  pin_of(w.pki.client_cert, wrong); /* another key */
  weft_cert_options *ok = keep(&w, tu_client_options(&w.pki));
  tu_check_opt(ok, weft_cert_options_add_pin_sha256(ok, wrong));
  tu_check_opt(ok, weft_cert_options_add_pin_sha256(ok, right));
  expect_identity(&w, port, ok, "localhost", "server", "none");
  weft_cert_options *bad = keep(&w, tu_client_options(&w.pki));
  tu_check_opt(bad, weft_cert_options_add_pin_sha256(bad, wrong));
  expect_failure(&w, port, bad, "localhost", WEFT_ECERTVERIFY, -1);
  /* verification off: the pin alone decides */
  weft_cert_options *pinned_only = empty_options(&w);
  tu_check_opt(pinned_only, weft_cert_options_set_verify(pinned_only, 0));
  tu_check_opt(pinned_only, weft_cert_options_add_pin_sha256(pinned_only, right + 8));
  expect_identity(&w, port, pinned_only, "whatever.test", "server", "none");
  weft_cert_options *wrong_only = empty_options(&w);
  tu_check_opt(wrong_only, weft_cert_options_set_verify(wrong_only, 0));
  tu_check_opt(wrong_only, weft_cert_options_add_pin_sha256(wrong_only, wrong));
  outcome o;
  connect_once(&w, port, wrong_only, "localhost", &o);
  ck_assert(!o.made);
  ck_assert_int_eq(o.failed.code, WEFT_ECERTVERIFY);
  ck_assert_msg(strstr(o.failed.message, "pinned") != NULL, "%s", o.failed.message);
  ck_assert_int_eq(weft_cert_options_add_pin_sha256(wrong_only, "sha256//short"), WEFT_EFROZEN);
  weft_cert_options *fresh = keep(&w, tu_client_options(&w.pki));
  ck_assert_int_eq(weft_cert_options_add_pin_sha256(fresh, "sha256//short="), WEFT_EINVAL);
  weft_listener_stop(l);
  world_free(&w);
}
END_TEST

typedef struct verdicts {
  int calls;
  long verdict;
  size_t count;
  int answer;
} verdicts;

static int on_verify(void *arg, long verdict, X509 *const *chain, size_t count) {
  verdicts *v = arg;
  v->calls++;
  v->verdict = verdict;
  v->count = count;
  ck_assert_ptr_nonnull(chain[0]);
  return v->answer;
}

START_TEST(test_verify_callback) {
  world w;
  world_init(&w);
  int port;
  weft_listener *l = listen_local(&w, keep(&w, tu_server_options(&w.pki)), &port);
  verdicts v = {0, -1, 0, 0};
  weft_cert_options *refuse = keep(&w, tu_client_options(&w.pki));
  tu_check_opt(refuse, weft_cert_options_set_verify_callback(refuse, on_verify, &v));
  expect_failure(&w, port, refuse, "localhost", WEFT_ECERTVERIFY, -1);
  ck_assert_int_eq(v.calls, 1);
  ck_assert_int_eq(v.verdict, X509_V_OK);
  ck_assert_uint_eq(v.count, 2); /* leaf and CA */
  /* accepting what OpenSSL refused: a name the certificate does not carry */
  verdicts v2 = {0, -1, 0, 1};
  weft_cert_options *accept = keep(&w, tu_client_options(&w.pki));
  tu_check_opt(accept, weft_cert_options_set_verify_callback(accept, on_verify, &v2));
  expect_identity(&w, port, accept, "other.test", "server", "none");
  ck_assert_int_eq(v2.verdict, X509_V_ERR_HOSTNAME_MISMATCH);
  weft_listener_stop(l);
  world_free(&w);
}
END_TEST

/* --- A client that requires a protocol ------------------------------------------------------ */

START_TEST(test_require_protocol) {
  TU_REQUIRE_ALPN();
  world w;
  world_init(&w);
  int port;
  weft_listener *l = listen_local(&w, keep(&w, tu_server_options(&w.pki)), &port);
  weft_cert_options *lax = keep(&w, tu_client_options(&w.pki));
  protocols(lax, "h2", NULL);
  expect_identity(&w, port, lax, "localhost", "server", "none");
  weft_cert_options *strict = keep(&w, tu_client_options(&w.pki));
  protocols(strict, "h2", NULL);
  tu_check_opt(strict, weft_cert_options_set_require_protocol(strict, 1));
  int made = w.server.made;
  expect_failure(&w, port, strict, "localhost", WEFT_ENOPROTOCOL, -1);
  tu_settle(w.r, 0.05);
  ck_assert_int_le(w.server.made, made + 1); /* the client refused before build_protocol */
  weft_listener_stop(l);
  world_free(&w);
}
END_TEST

/* --- OCSP --------------------------------------------------------------------------------- */

/* A DER OCSP response about LEAF signed by the PKI's CA: good or revoked. */
static uint8_t *make_ocsp(world *w, X509 *leaf, int good, size_t *len) {
  OCSP_BASICRESP *bs = OCSP_BASICRESP_new();
  OCSP_CERTID *id = OCSP_cert_to_id(NULL, leaf, w->pki.ca_cert);
  ASN1_TIME *now = X509_gmtime_adj(NULL, -60);
  ASN1_TIME *next = X509_gmtime_adj(NULL, 3600);
  ck_assert(bs != NULL && id != NULL && now != NULL && next != NULL);
  ck_assert_ptr_nonnull(OCSP_basic_add1_status(
      bs, id, good ? V_OCSP_CERTSTATUS_GOOD : V_OCSP_CERTSTATUS_REVOKED,
      good ? -1 : OCSP_REVOKED_STATUS_KEYCOMPROMISE, good ? NULL : now, now, next));
  ck_assert_int_eq(OCSP_basic_sign(bs, w->pki.ca_cert, w->pki.ca_key, EVP_sha256(), NULL, 0), 1);
  OCSP_RESPONSE *resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
  unsigned char *der = NULL;
  int n = i2d_OCSP_RESPONSE(resp, &der);
  ck_assert_int_gt(n, 0);
  uint8_t *copy = malloc((size_t)n);
  memcpy(copy, der, (size_t)n);
  *len = (size_t)n;
  OPENSSL_free(der);
  OCSP_RESPONSE_free(resp);
  OCSP_BASICRESP_free(bs);
  OCSP_CERTID_free(id);
  ASN1_TIME_free(now);
  ASN1_TIME_free(next);
  return copy;
}

START_TEST(test_ocsp) {
  world w;
  world_init(&w);
  size_t good_len, revoked_len;
  uint8_t *good = make_ocsp(&w, w.pki.server_cert, 1, &good_len);
  uint8_t *revoked = make_ocsp(&w, w.pki.server_cert, 0, &revoked_len);
  weft_cert_options *stapled = keep(&w, tu_server_options(&w.pki));
  ck_assert_int_eq(weft_cert_options_set_ocsp_response(stapled, (const uint8_t *)"junk", 4),
                   WEFT_EINVAL);
  char *path = tu_write_temp_file(good, good_len);
  tu_check_opt(stapled, weft_cert_options_load_ocsp_response_file(stapled, path));
  tu_remove_file(path);
  weft_cert_options *bad = keep(&w, tu_server_options(&w.pki));
  tu_check_opt(bad, weft_cert_options_set_ocsp_response(bad, revoked, revoked_len));
  weft_cert_options *plain = keep(&w, tu_server_options(&w.pki));
  int p_good, p_bad, p_plain;
  weft_listener *l1 = listen_local(&w, stapled, &p_good);
  weft_listener *l2 = listen_local(&w, bad, &p_bad);
  weft_listener *l3 = listen_local(&w, plain, &p_plain);
  weft_cert_options *strict = keep(&w, tu_client_options(&w.pki));
  tu_check_opt(strict, weft_cert_options_set_require_ocsp(strict, 1));
  expect_identity(&w, p_good, strict, "localhost", "server", "none");
  expect_failure(&w, p_bad, strict, "localhost", WEFT_ECERTVERIFY, -1);
  expect_failure(&w, p_plain, strict, "localhost", WEFT_ECERTVERIFY, -1);
  weft_cert_options *lax = keep(&w, tu_client_options(&w.pki));
  expect_identity(&w, p_plain, lax, "localhost", "server", "none");
  free(good);
  free(revoked);
  weft_listener_stop(l1);
  weft_listener_stop(l2);
  weft_listener_stop(l3);
  world_free(&w);
}
END_TEST

/* --- Resumption across identities ---------------------------------------------------------- */

/* A selector that serves whichever identity the test names, whatever the SNI name: so one
 * client (one session cache entry, for one name) offers its ticket to several identities. */
static int pick_selector(void *arg, const char *server_name, const uint8_t *offer, size_t offer_len,
                         weft_tls_identity **out) {
  (void)server_name, (void)offer, (void)offer_len;
  *out = *(weft_tls_identity **)arg;
  return 1;
}

static void expect_resumption(world *w, int port, weft_cert_options *c, const char *cn,
                              int reused) {
  outcome o;
  connect_once(w, port, c, "alpha.test", &o);
  ck_assert_msg(o.made, "connection failed: %s", o.failed.message);
  char want[64];
  snprintf(want, sizeof want, "CN=%s", cn);
  ck_assert_msg(strstr(o.subject, want) != NULL, "got %s, want %s", o.subject, want);
  ck_assert_msg(o.reused == reused, "%s: %s, want %s", cn, o.reused ? "resumed" : "full",
                reused ? "resumed" : "a full handshake");
}

/* A ticket (TLS 1.3) or session (1.2) made under identity A is not resumed under identity B,
 * although both seal tickets with the listener's keys; A resumes its own. */
START_TEST(test_resumption_per_identity) {
  world w;
  world_init(&w);
  for (int v = 0; v < 2; v++) {
    weft_tls_identity *chosen = NULL;
    weft_cert_options *s = keep(&w, tu_server_options(&w.pki));
    weft_tls_identity *a = identity(&w, v ? "alpha13" : "alpha12", "alpha.test", NULL, 0);
    weft_tls_identity *b = identity(&w, v ? "beta13" : "beta12", "alpha.test", NULL, 0);
    const char *an[] = {"alpha.test"}, *bn[] = {"beta.test"};
    tu_check_opt(s, weft_cert_options_add_identity(s, an, 1, a));
    tu_check_opt(s, weft_cert_options_add_identity(s, bn, 1, b));
    tu_check_opt(s, weft_cert_options_set_identity_selector(s, pick_selector, &chosen));
    weft_cert_options *c = keep(&w, tu_client_options(&w.pki));
    int version = v == 0 ? WEFT_TLS1_2 : WEFT_TLS1_3;
    tu_check_opt(c, weft_cert_options_set_tls_versions(c, version, version));
    int port;
    weft_listener *l = listen_local(&w, s, &port);
    chosen = a;
    expect_resumption(&w, port, c, v ? "alpha13" : "alpha12", 0); /* first: full */
    expect_resumption(&w, port, c, v ? "alpha13" : "alpha12", 1); /* A resumes its own */
    chosen = b; /* the client offers A's session (same name, same cache entry) */
    expect_resumption(&w, port, c, v ? "beta13" : "beta12", 0);
    expect_resumption(&w, port, c, v ? "beta13" : "beta12", 1); /* B then resumes its own */
    chosen = a; /* B's session is not resumed under A either */
    expect_resumption(&w, port, c, v ? "alpha13" : "alpha12", 0);
    weft_listener_stop(l);
  }
  world_free(&w);
}
END_TEST

/* Ticket keys, as documented: an identity with its own ticket key file keeps resuming across a
 * reload that reads the same file, while an identity that inherits the listener's automatic
 * keys gets new keys with the new options, so its old tickets get a full handshake. */
START_TEST(test_resumption_ticket_keys) {
  world w;
  world_init(&w);
  char path[] = "/tmp/weft-ticketkey-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  uint8_t key[WEFT_TICKET_KEY_SIZE];
  for (size_t i = 0; i < sizeof key; i++)
    key[i] = (uint8_t)(i * 7 + 3);
  ck_assert_int_eq(write(fd, key, sizeof key), (ssize_t)sizeof key);
  close(fd);
  weft_tls_identity *chosen = NULL;
  weft_tls_identity *own[2], *inherit[2];
  weft_cert_options *s[2];
  for (int i = 0; i < 2; i++) { /* the options at start, and those of the reload */
    s[i] = keep(&w, tu_server_options(&w.pki));
    own[i] = identity(&w, "own", "alpha.test", NULL, 0);
    ck_assert_int_eq(weft_tls_identity_add_ticket_key_file(own[i], path), 0);
    inherit[i] = identity(&w, "inherit", "alpha.test", NULL, 0);
    const char *on[] = {"own.test"}, *in[] = {"inherit.test"};
    tu_check_opt(s[i], weft_cert_options_add_identity(s[i], on, 1, own[i]));
    tu_check_opt(s[i], weft_cert_options_add_identity(s[i], in, 1, inherit[i]));
    tu_check_opt(s[i], weft_cert_options_set_identity_selector(s[i], pick_selector, &chosen));
  }
  /* two clients (two session caches): one talks to each identity */
  weft_cert_options *c_own = keep(&w, tu_client_options(&w.pki));
  weft_cert_options *c_inherit = keep(&w, tu_client_options(&w.pki));
  int port;
  weft_listener *l = listen_local(&w, s[0], &port);
  chosen = own[0];
  expect_resumption(&w, port, c_own, "own", 0);
  expect_resumption(&w, port, c_own, "own", 1);
  chosen = inherit[0];
  expect_resumption(&w, port, c_inherit, "inherit", 0);
  expect_resumption(&w, port, c_inherit, "inherit", 1);
  ck_assert_int_eq(weft_listener_set_options(l, s[1]), 0);
  chosen = own[1]; /* same key file: the ticket issued before the reload still opens */
  expect_resumption(&w, port, c_own, "own", 1);
  chosen = inherit[1]; /* new automatic keys: a full handshake, then resumption again */
  expect_resumption(&w, port, c_inherit, "inherit", 0);
  expect_resumption(&w, port, c_inherit, "inherit", 1);
  weft_listener_stop(l);
  unlink(path);
  world_free(&w);
}
END_TEST

/* --- TLS 1.3 ticket count ----------------------------------------------------------------- */

START_TEST(test_tls13_tickets) {
  world w;
  world_init(&w);
  uint64_t stored[2];
  for (int i = 0; i < 2; i++) {
    weft_cert_options *s = keep(&w, tu_server_options(&w.pki));
    tu_check_opt(s, weft_cert_options_set_tls13_tickets(s, (unsigned)(i == 0 ? 0 : 3)));
    weft_cert_options *c = keep(&w, tu_client_options(&w.pki));
    tu_check_opt(c, weft_cert_options_set_tls_versions(c, WEFT_TLS1_3, WEFT_TLS1_3));
    int port;
    weft_listener *l = listen_local(&w, s, &port);
    expect_identity(&w, port, c, "localhost", "server", "none");
    weft__tls_cached_sessions(c, &stored[i]);
    weft_listener_stop(l);
  }
  ck_assert_uint_eq(stored[0], 0); /* no ticket sent */
  ck_assert_uint_eq(stored[1], 3); /* three tickets, each stored in turn */
  weft_cert_options *o = keep(&w, tu_server_options(&w.pki));
  ck_assert_int_eq(weft_cert_options_set_tls13_tickets(o, 17), WEFT_EINVAL);
  world_free(&w);
}
END_TEST

static Suite *sni_suite(void) {
  Suite *s = suite_create("sni");
  TCase *tc = tcase_create("serving");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_identities_by_name);
  tcase_add_test(tc, test_unknown_name_rejected);
  tcase_add_test(tc, test_acme_selector);
  tcase_add_test(tc, test_reload);
  tcase_add_test(tc, test_keylog);
  tcase_add_test(tc, test_pins);
  tcase_add_test(tc, test_verify_callback);
  tcase_add_test(tc, test_require_protocol);
  tcase_add_test(tc, test_ocsp);
  tcase_add_test(tc, test_tls13_tickets);
  tcase_add_test(tc, test_resumption_per_identity);
  tcase_add_test(tc, test_resumption_ticket_keys);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(sni_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
