/* check_tls_options.c: unit tests of the TLS code (options, SSL_CTX building, keys and
 * certificates, ALPN/NPN selection, failure classification). No sockets: handshakes run over
 * an in-memory BIO pair, so every test is deterministic and needs no reactor.
 *
 * Tests that need a negotiation mechanism this build lacks print "SKIP: ..." and return (Check
 * 0.15 has no skip). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <weft/tls.h>

#include "negotiation-internal.h"
#include "tls_options-internal.h"
#include "tls_ssl-internal.h"

/* --- Helpers ------------------------------------------------------------------------------ */

/* Check names the test functions NAME_fn: print NAME. */
static int test_name_len(const char *fn) {
  size_t n = strlen(fn);
  return (int)(n > 3 && strcmp(fn + n - 3, "_fn") == 0 ? n - 3 : n);
}

static int have(unsigned mech, const char *test) {
  if ((weft_protocol_negotiation_mechanisms() & mech) == mech)
    return 1;
  printf("SKIP: %.*s needs %s%s%s because weft was configured with --disable-alpn/--disable-npn "
         "(or OpenSSL lacks it)\n",
         test_name_len(test), test, (mech & WEFT_MECH_ALPN) ? "ALPN" : "", mech == 3 ? " and " : "",
         (mech & WEFT_MECH_NPN) ? "NPN" : "");
  return 0;
}
#define NEED(mech)                                                                                 \
  do {                                                                                             \
    if (!have((mech), __func__))                                                                   \
      return;                                                                                      \
  } while (0)

/* At least one mechanism (what setting a non-empty list needs). */
#define NEED_ANY()                                                                                 \
  do {                                                                                             \
    if (weft_protocol_negotiation_mechanisms() == 0) {                                             \
      printf("SKIP: %.*s needs ALPN or NPN because weft was configured with "                      \
             "--disable-alpn/--disable-npn\n",                                                     \
             test_name_len(__func__), __func__);                                                   \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

static const char *const H2_HTTP[] = {"h2", "http/1.1"};
static const char *const HTTP_H2[] = {"http/1.1", "h2"};

static weft_cert_options *new_options(void) {
  weft_cert_options *o = NULL;
  ck_assert_int_eq(weft_cert_options_new(&o), 0);
  ck_assert_ptr_nonnull(o);
  return o;
}

/* A certificate for KEY; self-signed unless ISSUER_KEY/ISSUER are given. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *dns, const char *ip, int is_ca,
                       EVP_PKEY *issuer_key, X509 *issuer) {
  weft_cert_spec spec = {0};
  spec.common_name = cn;
  spec.organization = "weft tests";
  spec.dns_names = dns != NULL ? &dns : NULL;
  spec.dns_count = dns != NULL;
  spec.ip_addresses = ip != NULL ? &ip : NULL;
  spec.ip_count = ip != NULL;
  spec.is_ca = is_ca;
  X509 *cert = NULL;
  ck_assert_int_eq(weft_cert_generate(&spec, key, issuer_key, issuer, &cert), 0);
  return cert;
}

static EVP_PKEY *make_key(void) {
  EVP_PKEY *key = NULL;
  ck_assert_int_eq(weft_key_generate(WEFT_KEY_EC_P256, 0, &key), 0);
  return key;
}

/* An identity: key and self-signed certificate for "localhost" and 127.0.0.1. */
typedef struct identity {
  EVP_PKEY *key;
  X509 *cert;
} identity;

static identity make_identity(const char *cn) {
  identity id;
  id.key = make_key();
  id.cert = make_cert(id.key, cn, "localhost", "127.0.0.1", 0, NULL, NULL);
  return id;
}

static void free_identity(identity *id) {
  EVP_PKEY_free(id->key);
  X509_free(id->cert);
}

static void set_identity(weft_cert_options *o, const identity *id) {
  ck_assert_int_eq(weft_cert_options_set_private_key(o, id->key), 0);
  ck_assert_int_eq(weft_cert_options_set_certificate(o, id->cert), 0);
}

static void set_protocols(weft_cert_options *o, const char *const *names, size_t n) {
  int rc = weft_cert_options_set_next_protocols(o, names, n);
  ck_assert_msg(rc == 0, "set_next_protocols: %s", weft_cert_options_last_error(o));
}

/* --- In-memory handshakes ----------------------------------------------------------------- */

typedef struct side {
  SSL *ssl;
  weft__tls_conn conn;
  unsigned long errs[32];
  size_t nerrs;
  int done;   /* handshake completed */
  int failed; /* a fatal error */
  int closed; /* close_notify received */
} side;

static void side_new(side *s, weft_cert_options *o, weft_tls_role role, const char *name) {
  memset(s, 0, sizeof *s);
  s->conn.options = o; /* conn.server_name stays NULL: the TLS code must not need it */
  weft__reason_buf err;
  int rc = weft__tls_new_ssl(o, role, name, &s->conn, 1, &s->ssl, &err);
  ck_assert_msg(rc == 0, "weft__tls_new_ssl: %s", err.msg);
  ck_assert_int_eq(s->conn.alert_received, -1);
  ck_assert_int_eq(s->conn.alert_sent, -1);
}

static void side_collect(side *s) {
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    if (s->nerrs < sizeof s->errs / sizeof s->errs[0])
      s->errs[s->nerrs++] = e;
  }
}

/* One move: the handshake until it is done, then reads (post-handshake messages, alerts). */
static void side_step(side *s) {
  if (s->failed || s->closed)
    return;
  ERR_clear_error();
  int r;
  if (!s->done) {
    r = SSL_do_handshake(s->ssl);
    if (r == 1) {
      s->done = 1;
      return;
    }
  } else {
    char buf[256];
    r = SSL_read(s->ssl, buf, sizeof buf);
    if (r > 0)
      return;
  }
  switch (SSL_get_error(s->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      break;
    case SSL_ERROR_ZERO_RETURN:
      s->closed = 1;
      break;
    default:
      s->failed = 1;
  }
  side_collect(s);
}

static void pump(side *c, side *s) {
  for (int i = 0; i < 40; i++) {
    side_step(c);
    side_step(s);
  }
}

/* Connects client and server over a BIO pair and runs the handshake (and what follows). */
static void handshake(side *c, side *s) {
  BIO *bc = NULL, *bs = NULL;
  ck_assert_int_eq(BIO_new_bio_pair(&bc, 0, &bs, 0), 1);
  SSL_set_bio(c->ssl, bc, bc);
  SSL_set_bio(s->ssl, bs, bs);
  pump(c, s);
}

static void side_free(side *s) {
  SSL_free(s->ssl);
  s->ssl = NULL;
}

static weft__reason_buf classify(side *s, int eof_seen) {
  weft__reason_buf r;
  weft__tls_classify(s->ssl, &s->conn, s->errs, s->nerrs, 0, eof_seen, &r);
  if (getenv("WEFT_TEST_VERBOSE") != NULL) /* to read the messages users will see */
    printf("  %s %s: %s\n", SSL_is_server(s->ssl) ? "server" : "client",
           weft_err_name(r.reason.code), r.msg);
  return r;
}

/* The negotiated protocol as a NUL-terminated string ("" for none) and its mechanism. */
static const char *negotiated(side *s, weft_negotiation_mechanism *mech, char *buf, size_t size) {
  const uint8_t *p = NULL;
  size_t len = 99;
  weft__tls_negotiated(s->ssl, &s->conn, &p, &len, mech);
  if (p == NULL) {
    ck_assert_uint_eq(len, 0);
    buf[0] = '\0';
  } else {
    snprintf(buf, size, "%.*s", (int)len, (const char *)p);
  }
  return buf;
}

#define ASSERT_NEGOTIATED(sidep, name, mechanism)                                                  \
  do {                                                                                             \
    char buf_[300];                                                                                \
    weft_negotiation_mechanism m_;                                                                 \
    ck_assert_str_eq(negotiated((sidep), &m_, buf_, sizeof buf_), (name));                         \
    ck_assert_int_eq(m_, (mechanism));                                                             \
  } while (0)

/* A server (identity ID) and a client that does not verify, both with default settings. */
typedef struct pair {
  identity id;
  weft_cert_options *server;
  weft_cert_options *client;
  side c, s;
} pair;

static void pair_init(pair *p) {
  memset(p, 0, sizeof *p);
  p->id = make_identity("server");
  p->server = new_options();
  set_identity(p->server, &p->id);
  p->client = new_options();
  ck_assert_int_eq(weft_cert_options_set_verify(p->client, 0), 0);
}

static void pair_versions(pair *p, int min, int max) {
  ck_assert_int_eq(weft_cert_options_set_tls_versions(p->server, min, max), 0);
  ck_assert_int_eq(weft_cert_options_set_tls_versions(p->client, min, max), 0);
}

static void pair_run(pair *p, const char *server_name) {
  side_new(&p->s, p->server, WEFT_TLS_SERVER, NULL);
  side_new(&p->c, p->client, WEFT_TLS_CLIENT, server_name);
  handshake(&p->c, &p->s);
}

static void pair_free(pair *p) {
  side_free(&p->c);
  side_free(&p->s);
  weft_cert_options_unref(p->server);
  weft_cert_options_unref(p->client);
  free_identity(&p->id);
}

static void assert_success(pair *p) {
  ck_assert_msg(p->c.done && !p->c.failed, "client failed: %s", classify(&p->c, 0).msg);
  ck_assert_msg(p->s.done && !p->s.failed, "server failed: %s", classify(&p->s, 0).msg);
}

/* --- Mechanisms --------------------------------------------------------------------------- */

START_TEST(test_mechanisms_mask) {
  unsigned expected = 0;
#if defined(HAVE_SSL_CTX_SET_ALPN_SELECT_CB) && !defined(WEFT_DISABLE_ALPN)
  expected |= WEFT_MECH_ALPN;
#endif
#if !defined(OPENSSL_NO_NEXTPROTONEG) && defined(HAVE_SSL_CTX_SET_NEXT_PROTO_SELECT_CB) &&         \
    !defined(WEFT_DISABLE_NPN)
  expected |= WEFT_MECH_NPN;
#endif
  ck_assert_uint_eq(weft_protocol_negotiation_mechanisms(), expected);
  ck_assert_uint_eq(weft_protocol_negotiation_mechanisms() & ~3u, 0);
}
END_TEST

START_TEST(test_unsupported_when_no_mechanism) {
  if (weft_protocol_negotiation_mechanisms() != 0) {
    printf("SKIP: %.*s: this build supports ALPN or NPN (the test is for builds configured "
           "with --disable-alpn --disable-npn)\n",
           test_name_len(__func__), __func__);
    return;
  }
  weft_cert_options *o = new_options();
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, H2_HTTP, 2), WEFT_ENOTSUP);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "neither ALPN nor NPN"));
  static const uint8_t wire[] = {2, 'h', '2'};
  ck_assert_int_eq(weft_cert_options_set_next_protocols_wire(o, wire, sizeof wire), WEFT_ENOTSUP);
  ck_assert_int_eq(weft_cert_options_set_negotiation_mechanisms(o, WEFT_MECH_ALPN), WEFT_ENOTSUP);
  ck_assert_int_eq(weft_cert_options_set_negotiation_mechanisms(o, WEFT_MECH_NPN), WEFT_ENOTSUP);
  /* an empty list is still fine: it negotiates nothing */
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, NULL, 0), 0);
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_CLIENT), 0);
  weft_cert_options_unref(o);
}
END_TEST

START_TEST(test_mechanisms_setter) {
  weft_cert_options *o = new_options();
  ck_assert_int_eq(weft_cert_options_set_negotiation_mechanisms(o, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_negotiation_mechanisms(o, 4), WEFT_EINVAL);
  ck_assert_str_ne(weft_cert_options_last_error(o), "");
  unsigned have_mask = weft_protocol_negotiation_mechanisms();
  for (unsigned m = 1; m <= 3; m++) {
    int rc = weft_cert_options_set_negotiation_mechanisms(o, m);
    ck_assert_int_eq(rc, (m & ~have_mask) ? WEFT_ENOTSUP : 0);
  }
  int selector_rc = weft_cert_options_set_protocol_selector(o, (weft_protocol_selector)1, NULL);
  ck_assert_int_eq(selector_rc, (have_mask & WEFT_MECH_ALPN) ? 0 : WEFT_ENOTSUP);
  ck_assert_int_eq(weft_cert_options_set_protocol_selector(o, NULL, NULL), 0);
  ck_assert_int_eq(weft_cert_options_set_no_overlap_policy(o, (weft_no_overlap_policy)7),
                   WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_no_overlap_policy(o, WEFT_NO_OVERLAP_CONTINUE), 0);
  weft_cert_options_unref(o);
}
END_TEST

/* --- Protocol names ----------------------------------------------------------------------- */

START_TEST(test_names_valid_and_clear) {
  NEED_ANY();
  weft_cert_options *o = new_options();
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, H2_HTTP, 2), 0);
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, NULL, 0), 0);
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, H2_HTTP, 0), 0);
  weft_cert_options_unref(o);
}
END_TEST

START_TEST(test_names_rejected) {
  NEED_ANY();
  weft_cert_options *o = new_options();
  const char *empty[] = {"h2", ""};
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, empty, 2), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "#1"));
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "empty"));

  const char *null_name[] = {NULL, "h2"};
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, null_name, 2), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "NULL"));
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, NULL, 1), WEFT_EINVAL);

  char long_name[257];
  memset(long_name, 'a', 256);
  long_name[256] = '\0';
  const char *too_long[] = {long_name};
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, too_long, 1), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "256 bytes"));
  long_name[255] = '\0'; /* 255 bytes: the maximum */
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, too_long, 1), 0);
  weft_cert_options_unref(o);
}
END_TEST

START_TEST(test_names_total_length) {
  NEED_ANY();
  weft_cert_options *o = new_options();
  /* 255 names of 255 bytes and one of 254: exactly 65535 bytes encoded */
  static char big[255][256];
  static char last[255];
  const char *names[257];
  for (int i = 0; i < 255; i++) {
    memset(big[i], 'a' + i % 26, 255);
    big[i][255] = '\0';
    big[i][0] = (char)('A' + i % 26);
    names[i] = big[i];
  }
  memset(last, 'z', 254);
  last[254] = '\0';
  names[255] = last;
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, names, 256), 0);
  names[256] = "x"; /* 65537 bytes */
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, names, 257), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "65535"));

  /* the same limits through the wire form */
  uint8_t *wire = NULL;
  size_t len = 0;
  weft__reason_buf err;
  ck_assert_int_eq(weft__nego_encode(names, 256, &wire, &len, &err), 0);
  ck_assert_uint_eq(len, 65535);
  ck_assert_int_eq(weft_cert_options_set_next_protocols_wire(o, wire, len), 0);
  uint8_t *bigger = malloc(len + 2);
  ck_assert_ptr_nonnull(bigger);
  memcpy(bigger, wire, len);
  bigger[len] = 1;
  bigger[len + 1] = 'x';
  ck_assert_int_eq(weft_cert_options_set_next_protocols_wire(o, bigger, len + 2), WEFT_EINVAL);
  free(bigger);
  free(wire);
  weft_cert_options_unref(o);
}
END_TEST

START_TEST(test_wire_validation) {
  weft__reason_buf err;
  static const uint8_t good[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  static const uint8_t zero[] = {2, 'h', '2', 0};
  static const uint8_t overrun[] = {2, 'h', '2', 9, 'h', 't', 't', 'p'};
  ck_assert_int_eq(weft__nego_validate_wire(good, sizeof good, &err), 0);
  ck_assert_int_eq(weft__nego_validate_wire(NULL, 0, &err), 0);
  ck_assert_int_eq(weft__nego_validate_wire(NULL, 3, &err), WEFT_EINVAL);
  ck_assert_int_eq(weft__nego_validate_wire(zero, sizeof zero, &err), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "empty"));
  ck_assert_int_eq(weft__nego_validate_wire(overrun, sizeof overrun, &err), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "#1"));
  ck_assert_int_eq(weft__nego_validate_wire(overrun, sizeof overrun, NULL), WEFT_EINVAL);

  NEED_ANY();
  weft_cert_options *o = new_options();
  ck_assert_int_eq(weft_cert_options_set_next_protocols_wire(o, good, sizeof good), 0);
  ck_assert_int_eq(weft_cert_options_set_next_protocols_wire(o, overrun, sizeof overrun),
                   WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_next_protocols_wire(o, zero, sizeof zero), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_next_protocols_wire(o, NULL, 0), 0);
  weft_cert_options_unref(o);
}
END_TEST

START_TEST(test_select_preference) {
  static const uint8_t a[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1', 2, 'h', '2'};
  static const uint8_t b[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  static const uint8_t c[] = {6, 's', 'p', 'd', 'y', '/', '3'};
  static const uint8_t bad[] = {2, 'h', '2', 7, 'h', 't'};
  const uint8_t *out = NULL;
  uint8_t len = 0;
  /* the first argument's order wins */
  ck_assert_int_eq(weft__nego_select(a, sizeof a, b, sizeof b, &out, &len), 1);
  ck_assert_uint_eq(len, 8);
  ck_assert_int_eq(memcmp(out, "http/1.1", 8), 0);
  ck_assert_ptr_eq(out, b + 4); /* points into the other list */
  ck_assert_int_eq(weft__nego_select(b, sizeof b, a, sizeof a, &out, &len), 1);
  ck_assert_uint_eq(len, 2);
  ck_assert_int_eq(memcmp(out, "h2", 2), 0);
  ck_assert_ptr_eq(out, a + 10);
  /* no overlap, empty lists, malformed peer list */
  ck_assert_int_eq(weft__nego_select(a, sizeof a, c, sizeof c, &out, &len), 0);
  ck_assert_int_eq(weft__nego_select(a, sizeof a, NULL, 0, &out, &len), 0);
  ck_assert_int_eq(weft__nego_select(NULL, 0, a, sizeof a, &out, &len), 0);
  ck_assert_int_eq(weft__nego_select(b, sizeof b, bad, sizeof bad, &out, &len), 0);
  /* a prefix is not a match */
  static const uint8_t h[] = {1, 'h'};
  ck_assert_int_eq(weft__nego_select(h, sizeof h, b, sizeof b, &out, &len), 0);

  ck_assert_int_eq(weft__nego_contains(a, sizeof a, (const uint8_t *)"h2", 2), 1);
  ck_assert_int_eq(weft__nego_contains(a, sizeof a, (const uint8_t *)"h", 1), 0);
  ck_assert_int_eq(weft__nego_contains(a, sizeof a, (const uint8_t *)"spdy/3", 6), 0);
  ck_assert_int_eq(weft__nego_contains(bad, sizeof bad, (const uint8_t *)"h2", 2), 0);
}
END_TEST

START_TEST(test_encode) {
  uint8_t *wire = NULL;
  size_t len = 1;
  weft__reason_buf err;
  ck_assert_int_eq(weft__nego_encode(H2_HTTP, 2, &wire, &len, &err), 0);
  ck_assert_uint_eq(len, 12);
  ck_assert_int_eq(memcmp(wire, "\x02h2\x08http/1.1", 12), 0);
  free(wire);
  ck_assert_int_eq(weft__nego_encode(NULL, 0, &wire, &len, &err), 0);
  ck_assert_ptr_null(wire);
  ck_assert_uint_eq(len, 0);
}
END_TEST

/* --- Options life and errors ------------------------------------------------------------- */

START_TEST(test_defaults_and_refcount) {
  weft_cert_options *o = new_options();
  ck_assert_str_eq(weft_cert_options_last_error(o), "");
  ck_assert_double_eq(weft__tls_handshake_timeout(o), 30.0);
  ck_assert_double_eq(weft__tls_close_timeout(o), 5.0);
  ck_assert_ptr_null(weft__tls_options_server_name(o));
  ck_assert_ptr_eq(weft_cert_options_ref(o), o);
  ck_assert_ptr_eq(weft_cert_options_ref(o), o);
  weft_cert_options_unref(o);
  weft_cert_options_unref(o);
  ck_assert_int_eq(weft_cert_options_set_verify_depth(o, 3), 0); /* still alive */
  weft_cert_options_unref(o);                                    /* the last one frees */
  ck_assert_ptr_null(weft_cert_options_ref(NULL));
  weft_cert_options_unref(NULL);
  ck_assert_str_eq(weft_cert_options_last_error(NULL), "");
  ck_assert_int_eq(weft_cert_options_new(NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_verify(NULL, 1), WEFT_EINVAL);
}
END_TEST

START_TEST(test_frozen_after_prepare) {
  identity id = make_identity("server");
  weft_cert_options *o = new_options();
  set_identity(o, &id);
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_SERVER), 0);
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_SERVER), 0); /* again: 0 */
  SSL_CTX *a = NULL, *b = NULL;
  ck_assert_int_eq(weft__tls_ctx(o, WEFT_TLS_SERVER, &a), 0);
  ck_assert_int_eq(weft__tls_ctx(o, WEFT_TLS_SERVER, &b), 0);
  ck_assert_ptr_eq(a, b);
  /* the other role is still built on demand, separately */
  ck_assert_int_eq(weft__tls_ctx(o, WEFT_TLS_CLIENT, &b), 0);
  ck_assert_ptr_ne(a, b);
  ck_assert_int_eq(weft__tls_ctx(o, (weft_tls_role)5, &b), WEFT_EINVAL);

  ck_assert_int_eq(weft_cert_options_set_verify(o, 0), WEFT_EFROZEN);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "can no longer change"));
  ck_assert_int_eq(weft_cert_options_set_private_key(o, id.key), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_certificate(o, id.cert), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_add_chain_certificate(o, id.cert), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_add_ca_certificate(o, id.cert), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_require_certificate(o, 1), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_tls_versions(o, WEFT_TLS1_3, WEFT_TLS1_3), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_cipher_list(o, "HIGH"), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_groups(o, "X25519"), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_session_tickets(o, 0), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_handshake_timeout(o, 1), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_server_name(o, "x"), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_next_protocols(o, NULL, 0), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_no_overlap_policy(o, WEFT_NO_OVERLAP_CONTINUE),
                   WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_load_ca_file(o, "/nonexistent"), WEFT_EFROZEN);
  weft_cert_options_unref(o);
  free_identity(&id);
}
END_TEST

START_TEST(test_key_mismatch_both_orders) {
  identity a = make_identity("a");
  identity b = make_identity("b");
  weft_cert_options *o = new_options();
  ck_assert_int_eq(weft_cert_options_set_private_key(o, a.key), 0);
  ck_assert_int_eq(weft_cert_options_set_certificate(o, b.cert), WEFT_EKEYMISMATCH);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "does not match"));
  ck_assert_int_eq(ERR_peek_error(), 0); /* no stale error left behind */
  ck_assert_int_eq(weft_cert_options_set_certificate(o, a.cert), 0);
  weft_cert_options_unref(o);

  o = new_options();
  ck_assert_int_eq(weft_cert_options_set_certificate(o, a.cert), 0);
  ck_assert_int_eq(weft_cert_options_set_private_key(o, b.key), WEFT_EKEYMISMATCH);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "CN=a"));
  ck_assert_int_eq(weft_cert_options_set_private_key(o, a.key), 0);
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_SERVER), 0);
  weft_cert_options_unref(o);

  /* through PEM too */
  char *pem = NULL;
  size_t len = 0;
  ck_assert_int_eq(weft_key_to_pem(b.key, &pem, &len), 0);
  o = new_options();
  ck_assert_int_eq(weft_cert_options_set_certificate(o, a.cert), 0);
  ck_assert_int_eq(weft_cert_options_load_private_key_pem(o, pem, len), WEFT_EKEYMISMATCH);
  weft_cert_options_unref(o);
  free(pem);
  free_identity(&a);
  free_identity(&b);
}
END_TEST

START_TEST(test_malformed_pem) {
  weft_cert_options *o = new_options();
  const char *junk = "this is not PEM\n";
  ck_assert_int_eq(weft_cert_options_load_private_key_pem(o, junk, strlen(junk)), WEFT_EPEM);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "private key"));
  const char *bad_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  ck_assert_int_eq(weft_cert_options_load_certificate_chain_pem(o, bad_cert, strlen(bad_cert)),
                   WEFT_EPEM);
  ck_assert_str_ne(weft_cert_options_last_error(o), "");
  ck_assert_int_eq(weft_cert_options_load_certificate_chain_pem(o, junk, strlen(junk)), WEFT_EPEM);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "no PEM certificate"));
  ck_assert_int_eq(weft_cert_options_load_private_key_pem(o, junk, 0), WEFT_EPEM);
  ck_assert_int_eq(weft_cert_options_load_private_key_pem(o, NULL, 3), WEFT_EINVAL);

  ck_assert_int_eq(weft_cert_options_load_private_key_file(o, "/nonexistent/key.pem"), WEFT_EPEM);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "/nonexistent/key.pem"));
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "No such file"));
  ck_assert_int_eq(weft_cert_options_load_certificate_chain_file(o, "/nonexistent/c.pem"),
                   WEFT_EPEM);
  ck_assert_int_eq(weft_cert_options_load_ca_file(o, "/nonexistent/ca.pem"), WEFT_EPEM);
  ck_assert_int_eq(weft_cert_options_load_ca_dir(o, "/nonexistent/dir"), WEFT_EPEM);
  ck_assert_int_eq(weft_cert_options_load_ca_dir(o, "/etc/hostname"), WEFT_EPEM);
  ck_assert_int_eq(weft_cert_options_load_ca_dir(o, "/tmp"), 0);
  ck_assert_int_eq(weft_cert_options_load_private_key_file(o, "/tmp"), WEFT_EPEM);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "directory"));
  ck_assert_int_eq(ERR_peek_error(), 0);

  /* an encrypted key is refused, without prompting for a passphrase */
  EVP_PKEY *key0 = make_key();
  BIO *mem = BIO_new(BIO_s_mem());
  ck_assert_int_eq(
      PEM_write_bio_PrivateKey(mem, key0, EVP_aes_256_cbc(), NULL, 0, NULL, (void *)"secret"), 1);
  char *enc = NULL;
  long enc_len = BIO_get_mem_data(mem, &enc);
  ck_assert_int_eq(weft_cert_options_load_private_key_pem(o, enc, (size_t)enc_len), WEFT_EPEM);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "encrypted"));
  BIO_free(mem);
  EVP_PKEY_free(key0);

  EVP_PKEY *key = (void *)1;
  ck_assert_int_eq(weft_key_from_pem(junk, strlen(junk), &key), WEFT_EPEM);
  ck_assert_ptr_null(key);
  X509 *cert = (void *)1;
  ck_assert_int_eq(weft_cert_from_pem(bad_cert, strlen(bad_cert), &cert), WEFT_EPEM);
  ck_assert_ptr_null(cert);
  ck_assert_int_eq(weft_cert_from_pem(NULL, 1, &cert), WEFT_EINVAL);
  ck_assert_int_eq(ERR_peek_error(), 0);
  weft_cert_options_unref(o);
}
END_TEST

/* Writes TEXT to a new temporary file; returns its path in BUF. */
static const char *temp_file(char *buf, size_t size, const char *text) {
  snprintf(buf, size, "/tmp/weft-check-XXXXXX");
  int fd = mkstemp(buf);
  ck_assert_int_ge(fd, 0);
  size_t len = strlen(text);
  ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
  close(fd);
  return buf;
}

START_TEST(test_load_files_and_chain) {
  EVP_PKEY *ca_key = make_key();
  X509 *ca = make_cert(ca_key, "Test CA", NULL, NULL, 1, NULL, NULL);
  EVP_PKEY *key = make_key();
  X509 *leaf = make_cert(key, "leaf", "localhost", NULL, 0, ca_key, ca);
  char *key_pem, *leaf_pem, *ca_pem;
  ck_assert_int_eq(weft_key_to_pem(key, &key_pem, NULL), 0);
  ck_assert_int_eq(weft_cert_to_pem(leaf, &leaf_pem, NULL), 0);
  ck_assert_int_eq(weft_cert_to_pem(ca, &ca_pem, NULL), 0);
  char chain_text[8192];
  snprintf(chain_text, sizeof chain_text, "%s%s", leaf_pem, ca_pem);
  char key_path[64], chain_path[64], ca_path[64];
  temp_file(key_path, sizeof key_path, key_pem);
  temp_file(chain_path, sizeof chain_path, chain_text);
  temp_file(ca_path, sizeof ca_path, ca_pem);

  weft_cert_options *o = new_options();
  ck_assert_int_eq(weft_cert_options_load_certificate_chain_file(o, chain_path), 0);
  ck_assert_int_eq(weft_cert_options_load_private_key_file(o, key_path), 0);
  ck_assert_int_eq(weft_cert_options_load_ca_file(o, ca_path), 0);
  ck_assert_int_eq(weft_cert_options_set_require_certificate(o, 1), 0);
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_SERVER), 0);
  SSL_CTX *ctx;
  ck_assert_int_eq(weft__tls_ctx(o, WEFT_TLS_SERVER, &ctx), 0);
  STACK_OF(X509) *chain = NULL;
  ck_assert_int_eq(SSL_CTX_get0_chain_certs(ctx, &chain), 1);
  ck_assert_int_eq(sk_X509_num(chain), 1);
  ck_assert_int_eq(X509_cmp(sk_X509_value(chain, 0), ca), 0);
  ck_assert_int_eq(X509_cmp(SSL_CTX_get0_certificate(ctx), leaf), 0);
  /* the CA is announced to clients in the CertificateRequest */
  ck_assert_int_eq(sk_X509_NAME_num(SSL_CTX_get_client_CA_list(ctx)), 1);
  ck_assert_int_eq(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
  weft_cert_options_unref(o);

  /* the same from memory */
  o = new_options();
  ck_assert_int_eq(weft_cert_options_load_certificate_chain_pem(o, chain_text, strlen(chain_text)),
                   0);
  ck_assert_int_eq(weft_cert_options_load_private_key_pem(o, key_pem, strlen(key_pem)), 0);
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_SERVER), 0);
  weft_cert_options_unref(o);

  unlink(key_path);
  unlink(chain_path);
  unlink(ca_path);
  free(key_pem);
  free(leaf_pem);
  free(ca_pem);
  X509_free(leaf);
  X509_free(ca);
  EVP_PKEY_free(key);
  EVP_PKEY_free(ca_key);
}
END_TEST

START_TEST(test_algorithms_rejected) {
  weft_cert_options *o = new_options();
  ck_assert_int_eq(weft_cert_options_set_cipher_list(o, "NO-SUCH-CIPHER"), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "NO-SUCH-CIPHER"));
  /* OpenSSL alone would accept this (one name matches); weft refuses the unknown one */
  ck_assert_int_eq(weft_cert_options_set_cipher_list(o, "ECDHE-RSA-AES128-GCM-SHA256:BOGUS"),
                   WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_cipher_list(o, ""), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_cipher_list(o, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_cipher_list(o, "ECDHE+AESGCM:!aNULL:@STRENGTH"), 0);
  ck_assert_int_eq(weft_cert_options_set_ciphersuites(o, "TLS_NO_SUCH_SUITE"), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_ciphersuites(o, "TLS_AES_128_GCM_SHA256:TLS_BOGUS"),
                   WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_ciphersuites(o, "TLS_AES_256_GCM_SHA384"), 0);
  ck_assert_int_eq(weft_cert_options_set_groups(o, "X25519:no-such-group"), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "no-such-group"));
  ck_assert_int_eq(weft_cert_options_set_groups(o, ""), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_groups(o, "X25519:P-256"), 0);
  ck_assert_int_eq(ERR_peek_error(), 0);
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_CLIENT), 0);
  weft_cert_options_unref(o);
}
END_TEST

START_TEST(test_versions) {
  weft_cert_options *o = new_options();
  ck_assert_int_eq(weft_cert_options_set_tls_versions(o, WEFT_TLS1_3, WEFT_TLS1_2), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "empty TLS version range"));
  ck_assert_int_eq(weft_cert_options_set_tls_versions(o, 0x0301, WEFT_TLS1_3), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_tls_versions(o, WEFT_TLS1_2, 0x0305), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_tls_versions(o, WEFT_TLS1_3, WEFT_TLS1_3), 0);
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_CLIENT), 0);
  SSL_CTX *ctx;
  ck_assert_int_eq(weft__tls_ctx(o, WEFT_TLS_CLIENT, &ctx), 0);
  ck_assert_int_eq(SSL_CTX_get_min_proto_version(ctx), TLS1_3_VERSION);
  ck_assert_int_eq(SSL_CTX_get_max_proto_version(ctx), TLS1_3_VERSION);
  weft_cert_options_unref(o);
}
END_TEST

START_TEST(test_prepare_requires_identity) {
  weft_cert_options *o = new_options();
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_SERVER), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "private key and a certificate"));
  /* a failed prepare does not freeze: fix it and try again */
  identity id = make_identity("server");
  ck_assert_int_eq(weft_cert_options_set_private_key(o, id.key), 0);
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_SERVER), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "no certificate"));
  /* a client with a key but no certificate is refused too */
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_CLIENT), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_certificate(o, id.cert), 0);
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_SERVER), 0);
  ck_assert_int_eq(weft_cert_options_prepare(NULL, WEFT_TLS_SERVER), WEFT_EINVAL);
  weft_cert_options_unref(o);
  free_identity(&id);
}
END_TEST

START_TEST(test_ctx_defaults) {
  identity id = make_identity("server");
  weft_cert_options *o = new_options();
  set_identity(o, &id);
  SSL_CTX *server, *client;
  ck_assert_int_eq(weft__tls_ctx(o, WEFT_TLS_SERVER, &server), 0);
  ck_assert_int_eq(weft__tls_ctx(o, WEFT_TLS_CLIENT, &client), 0);
  SSL_CTX *both[] = {server, client};
  for (int i = 0; i < 2; i++) {
    SSL_CTX *ctx = both[i];
    uint64_t opts = SSL_CTX_get_options(ctx);
    ck_assert(opts & SSL_OP_CIPHER_SERVER_PREFERENCE);
    ck_assert(opts & SSL_OP_NO_COMPRESSION);
    ck_assert(opts & SSL_OP_NO_RENEGOTIATION);
    ck_assert(!(opts & SSL_OP_IGNORE_UNEXPECTED_EOF));
    long mode = SSL_CTX_get_mode(ctx);
    ck_assert(mode & SSL_MODE_RELEASE_BUFFERS);
    ck_assert(mode & SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    ck_assert(mode & SSL_MODE_ENABLE_PARTIAL_WRITE);
    ck_assert_int_eq(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    ck_assert_int_eq(SSL_CTX_get_max_proto_version(ctx), TLS1_3_VERSION);
    ck_assert_int_eq(SSL_CTX_get_verify_depth(ctx), 9);
    /* TLS 1.2 ciphers: forward-secret AEAD only */
    STACK_OF(SSL_CIPHER) *ciphers = SSL_CTX_get_ciphers(ctx);
    int tls12 = 0;
    for (int k = 0; k < sk_SSL_CIPHER_num(ciphers); k++) {
      const SSL_CIPHER *c = sk_SSL_CIPHER_value(ciphers, k);
      if (SSL_CIPHER_get_kx_nid(c) == NID_kx_any)
        continue; /* TLS 1.3 */
      tls12++;
      ck_assert_int_eq(SSL_CIPHER_get_kx_nid(c), NID_kx_ecdhe);
      ck_assert(SSL_CIPHER_is_aead(c));
    }
    ck_assert_int_eq(tls12, 6);
  }
  ck_assert_int_eq(SSL_CTX_get_verify_mode(server), SSL_VERIFY_NONE);
  ck_assert_int_eq(SSL_CTX_get_verify_mode(client), SSL_VERIFY_PEER);
  ck_assert_int_eq(SSL_CTX_get_session_cache_mode(server), SSL_SESS_CACHE_SERVER);
  ck_assert(!(SSL_CTX_get_options(server) & SSL_OP_NO_TICKET));
  weft_cert_options_unref(o);
  free_identity(&id);
}
END_TEST

START_TEST(test_server_verify_modes) {
  identity id = make_identity("server");
  struct {
    int verify, require, ca;
    int mode;
  } cases[] = {
      {1, 0, 0, SSL_VERIFY_NONE},
      {1, 0, 1, SSL_VERIFY_PEER},
      {0, 0, 1, SSL_VERIFY_NONE},
      {1, 1, 1, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT},
      {0, 1, 0, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    weft_cert_options *o = new_options();
    set_identity(o, &id);
    ck_assert_int_eq(weft_cert_options_set_verify(o, cases[i].verify), 0);
    ck_assert_int_eq(weft_cert_options_set_require_certificate(o, cases[i].require), 0);
    if (cases[i].ca)
      ck_assert_int_eq(weft_cert_options_add_ca_certificate(o, id.cert), 0);
    SSL_CTX *ctx;
    ck_assert_int_eq(weft__tls_ctx(o, WEFT_TLS_SERVER, &ctx), 0);
    ck_assert_msg(SSL_CTX_get_verify_mode(ctx) == cases[i].mode, "case %zu: mode %d", i,
                  SSL_CTX_get_verify_mode(ctx));
    weft_cert_options_unref(o);
  }
  free_identity(&id);
}
END_TEST

START_TEST(test_sessions_off) {
  identity id = make_identity("server");
  weft_cert_options *o = new_options();
  set_identity(o, &id);
  ck_assert_int_eq(weft_cert_options_set_session_cache(o, 0), 0);
  ck_assert_int_eq(weft_cert_options_set_session_tickets(o, 0), 0);
  SSL_CTX *ctx;
  ck_assert_int_eq(weft__tls_ctx(o, WEFT_TLS_SERVER, &ctx), 0);
  ck_assert_int_eq(SSL_CTX_get_session_cache_mode(ctx), SSL_SESS_CACHE_OFF);
  ck_assert(SSL_CTX_get_options(ctx) & SSL_OP_NO_TICKET);
  ck_assert_uint_eq(SSL_CTX_get_num_tickets(ctx), 0);
  weft_cert_options_unref(o);
  free_identity(&id);
}
END_TEST

START_TEST(test_timeouts_and_limits) {
  weft_cert_options *o = new_options();
  ck_assert_int_eq(weft_cert_options_set_handshake_timeout(o, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_handshake_timeout(o, -1), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_handshake_timeout(o, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_handshake_timeout(o, INFINITY), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_handshake_timeout(o, 2.5), 0);
  ck_assert_double_eq(weft__tls_handshake_timeout(o), 2.5);
  ck_assert_int_eq(weft_cert_options_set_close_timeout(o, -0.5), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_close_timeout(o, 0), 0);
  ck_assert_double_eq(weft__tls_close_timeout(o), 0);
  ck_assert_int_eq(weft_cert_options_set_verify_depth(o, -1), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_verify_depth(o, 101), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_verify_depth(o, 100), 0);
  ck_assert_int_eq(weft_cert_options_set_server_name(o, ""), WEFT_EINVAL);
  ck_assert_str_ne(weft_cert_options_last_error(o), "");
  ck_assert_int_eq(weft_cert_options_set_server_name(o, "example.org"), 0);
  ck_assert_str_eq(weft__tls_options_server_name(o), "example.org");
  ck_assert_int_eq(weft_cert_options_set_server_name(o, NULL), 0);
  ck_assert_ptr_null(weft__tls_options_server_name(o));
  ck_assert_int_eq(weft_cert_options_set_private_key(o, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_certificate(o, NULL), WEFT_EINVAL);
  weft_cert_options_unref(o);
}
END_TEST

START_TEST(test_new_ssl_names) {
  weft_cert_options *o = new_options();
  ck_assert_int_eq(weft_cert_options_set_server_name(o, "default.example"), 0);
  weft__tls_conn conn;
  memset(&conn, 0, sizeof conn);
  SSL *ssl = NULL;
  weft__reason_buf err;

  /* a DNS name: SNI and host check */
  ck_assert_int_eq(weft__tls_new_ssl(o, WEFT_TLS_CLIENT, "www.example.org", &conn, 1, &ssl, &err), 0);
  ck_assert_str_eq(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), "www.example.org");
  ck_assert_str_eq(SSL_get0_peername(ssl) ? SSL_get0_peername(ssl) : "", "");
  ck_assert_str_eq(X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0), "www.example.org");
  ck_assert_ptr_eq(SSL_get_ex_data(ssl, weft__tls_ex_index()), &conn);
  ck_assert_int_eq(conn.alert_received, -1);
  ck_assert_int_eq(conn.role, WEFT_TLS_CLIENT);
  SSL_free(ssl);

  /* IP literals: no SNI, an IP check */
  const char *ips[] = {"127.0.0.1", "::1", "[::1]"};
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(weft__tls_new_ssl(o, WEFT_TLS_CLIENT, ips[i], &conn, 1, &ssl, &err), 0);
    ck_assert_ptr_null(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    ck_assert_ptr_null(X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0));
    char *ip = X509_VERIFY_PARAM_get1_ip_asc(SSL_get0_param(ssl));
    ck_assert_ptr_nonnull(ip);
    OPENSSL_free(ip);
    SSL_free(ssl);
  }

  /* NULL: the options' name */
  ck_assert_int_eq(weft__tls_new_ssl(o, WEFT_TLS_CLIENT, NULL, &conn, 1, &ssl, &err), 0);
  ck_assert_str_eq(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), "default.example");
  SSL_free(ssl);
  ck_assert_int_eq(weft__tls_new_ssl(o, WEFT_TLS_CLIENT, "", &conn, 1, &ssl, &err), WEFT_EINVAL);
  ck_assert_ptr_null(ssl);
  ck_assert_int_eq(weft__tls_new_ssl(o, WEFT_TLS_CLIENT, NULL, NULL, 1, &ssl, &err), WEFT_EINVAL);
  weft_cert_options_unref(o);

  /* verification off: SNI still, but no name check */
  o = new_options();
  ck_assert_int_eq(weft_cert_options_set_verify(o, 0), 0);
  ck_assert_int_eq(weft__tls_new_ssl(o, WEFT_TLS_CLIENT, "www.example.org", &conn, 1, &ssl, &err), 0);
  ck_assert_str_eq(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), "www.example.org");
  ck_assert_ptr_null(X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0));
  SSL_free(ssl);
  /* a server without a certificate cannot make an SSL: the reason says why */
  ck_assert_int_eq(weft__tls_new_ssl(o, WEFT_TLS_SERVER, NULL, &conn, 1, &ssl, &err), WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "certificate"));
  weft_cert_options_unref(o);
}
END_TEST

/* --- Keys and certificates --------------------------------------------------------------- */

START_TEST(test_key_generate) {
  EVP_PKEY *key = NULL;
  ck_assert_int_eq(weft_key_generate(WEFT_KEY_EC_P256, 0, &key), 0);
  ck_assert_int_eq(EVP_PKEY_get_base_id(key), EVP_PKEY_EC);
  ck_assert_int_eq(EVP_PKEY_get_bits(key), 256);
  EVP_PKEY_free(key);
  ck_assert_int_eq(weft_key_generate(WEFT_KEY_ED25519, 0, &key), 0);
  ck_assert_int_eq(EVP_PKEY_get_base_id(key), EVP_PKEY_ED25519);
  EVP_PKEY_free(key);
  ck_assert_int_eq(weft_key_generate(WEFT_KEY_RSA, 0, &key), 0);
  ck_assert_int_eq(EVP_PKEY_get_base_id(key), EVP_PKEY_RSA);
  ck_assert_int_eq(EVP_PKEY_get_bits(key), 2048);
  /* an RSA certificate gets keyEncipherment */
  X509 *cert = make_cert(key, "rsa", "rsa.test", NULL, 0, NULL, NULL);
  ck_assert(X509_get_key_usage(cert) & KU_KEY_ENCIPHERMENT);
  ck_assert_int_eq(X509_verify(cert, key), 1);
  X509_free(cert);
  EVP_PKEY_free(key);

  key = (void *)1;
  ck_assert_int_eq(weft_key_generate(WEFT_KEY_RSA, 1024, &key), WEFT_EINVAL);
  ck_assert_ptr_null(key);
  ck_assert_int_eq(weft_key_generate((weft_key_type)9, 0, &key), WEFT_EINVAL);
  ck_assert_int_eq(weft_key_generate(WEFT_KEY_EC_P256, 0, NULL), WEFT_EINVAL);
}
END_TEST

static int has_san(X509 *cert, int type, const void *value, size_t len) {
  GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
  int found = 0;
  for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
    GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
    int t;
    ASN1_STRING *s = GENERAL_NAME_get0_value(g, &t);
    if (t == type && (size_t)ASN1_STRING_length(s) == len &&
        memcmp(ASN1_STRING_get0_data(s), value, len) == 0)
      found = 1;
  }
  GENERAL_NAMES_free(names);
  return found;
}

START_TEST(test_cert_self_signed) {
  EVP_PKEY *key = make_key();
  const char *dns[] = {"localhost", "*.example.test"};
  const char *ips[] = {"127.0.0.1", "::1"};
  weft_cert_spec spec = {.common_name = "server",
                         .organization = "Server Test Certificate",
                         .dns_names = dns,
                         .dns_count = 2,
                         .ip_addresses = ips,
                         .ip_count = 2};
  X509 *out = NULL;
  ck_assert_int_eq(weft_cert_generate(&spec, key, NULL, NULL, &out), 0);
  X509 *cert = out;
  ck_assert_int_eq(X509_get_version(cert), 2);
  ck_assert_int_eq(X509_verify(cert, key), 1);
  ck_assert_int_eq(X509_check_private_key(cert, key), 1);
  ck_assert_int_eq(X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)), 0);
  char cn[64];
  ck_assert_int_gt(
      X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn), 0);
  ck_assert_str_eq(cn, "server");
  ck_assert_int_gt(
      X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_organizationName, cn, sizeof cn),
      0);
  ck_assert_str_eq(cn, "Server Test Certificate");
  ck_assert(has_san(cert, GEN_DNS, "localhost", 9));
  ck_assert(has_san(cert, GEN_DNS, "*.example.test", 14));
  ck_assert(has_san(cert, GEN_IPADD, "\x7f\0\0\1", 4));
  ck_assert(has_san(cert, GEN_IPADD, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1", 16));
  ck_assert_int_eq(X509_check_host(cert, "localhost", 0, 0, NULL), 1);
  ck_assert_int_eq(X509_check_ip_asc(cert, "::1", 0), 1);
  /* not a CA; a server and client certificate */
  ck_assert_int_eq(X509_check_ca(cert), 0);
  ck_assert(X509_get_extended_key_usage(cert) & XKU_SSL_SERVER);
  ck_assert(X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT);
  ck_assert(X509_get_key_usage(cert) & KU_DIGITAL_SIGNATURE);
  ck_assert_ptr_nonnull(X509_get0_subject_key_id(cert));
  ck_assert_ptr_nonnull(X509_get0_authority_key_id(cert));
  /* random serial, not zero; validity from a minute ago to a year from now */
  const ASN1_INTEGER *serial = X509_get0_serialNumber(cert);
  BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
  ck_assert(!BN_is_zero(bn) && !BN_is_negative(bn));
  BN_free(bn);
  int day, sec;
  ck_assert_int_eq(ASN1_TIME_diff(&day, &sec, NULL, X509_get0_notBefore(cert)), 1);
  ck_assert_int_eq(day, 0);
  ck_assert(sec <= -55 && sec >= -65);
  ck_assert_int_eq(ASN1_TIME_diff(&day, &sec, NULL, X509_get0_notAfter(cert)), 1);
  ck_assert(day == 365 || (day == 364 && sec > 86000));
  X509_free(cert);

  /* an explicit serial; NULL spec means defaults */
  spec.serial = 4242;
  ck_assert_int_eq(weft_cert_generate(&spec, key, NULL, NULL, &out), 0);
  ck_assert_int_eq(ASN1_INTEGER_get(X509_get0_serialNumber(out)), 4242);
  X509_free(out);
  ck_assert_int_eq(weft_cert_generate(NULL, key, NULL, NULL, &out), 0);
  X509_free(out);
  EVP_PKEY_free(key);
}
END_TEST

START_TEST(test_cert_ca_signed) {
  /* an Ed25519 CA (signs with no digest) and an EC P-256 one */
  weft_key_type ca_types[] = {WEFT_KEY_EC_P256, WEFT_KEY_ED25519};
  for (int t = 0; t < 2; t++) {
    EVP_PKEY *ca_key = NULL;
    ck_assert_int_eq(weft_key_generate(ca_types[t], 0, &ca_key), 0);
    X509 *ca = make_cert(ca_key, "Test CA", NULL, NULL, 1, NULL, NULL);
    ck_assert_int_eq(X509_check_ca(ca), 1);
    ck_assert(X509_get_key_usage(ca) & KU_KEY_CERT_SIGN);
    int bc = X509_get_ext_by_NID(ca, NID_basic_constraints, -1);
    ck_assert_int_ge(bc, 0);
    ck_assert_int_eq(X509_EXTENSION_get_critical(X509_get_ext(ca, bc)), 1);

    EVP_PKEY *key = make_key();
    X509 *leaf = make_cert(key, "leaf", "leaf.test", "10.1.2.3", 0, ca_key, ca);
    ck_assert_int_eq(X509_verify(leaf, ca_key), 1);
    ck_assert_int_ne(X509_verify(leaf, key), 1);
    ERR_clear_error();
    ck_assert_int_eq(X509_NAME_cmp(X509_get_issuer_name(leaf), X509_get_subject_name(ca)), 0);
    ck_assert_int_eq(X509_check_issued(ca, leaf), X509_V_OK);
    ck_assert_int_eq(
        ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf), X509_get0_subject_key_id(ca)), 0);
    ck_assert(has_san(leaf, GEN_IPADD, "\x0a\x01\x02\x03", 4));

    /* and the chain verifies with the CA as the only trust anchor */
    X509_STORE *store = X509_STORE_new();
    X509_STORE_add_cert(store, ca);
    X509_STORE_CTX *sctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(sctx, store, leaf, NULL);
    int ok = X509_verify_cert(sctx);
    ck_assert_msg(ok == 1, "chain: %s",
                  X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx)));
    X509_STORE_CTX_free(sctx);
    X509_STORE_free(store);

    X509_free(leaf);
    EVP_PKEY_free(key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
  }
}
END_TEST

START_TEST(test_cert_errors) {
  EVP_PKEY *key = make_key();
  EVP_PKEY *other = make_key();
  X509 *ca = make_cert(key, "CA", NULL, NULL, 1, NULL, NULL);
  X509 *out = (void *)1;
  const char *bad_ips[] = {"999.1.1.1"};
  weft_cert_spec spec = {.common_name = "x", .ip_addresses = bad_ips, .ip_count = 1};
  ck_assert_int_eq(weft_cert_generate(&spec, key, NULL, NULL, &out), WEFT_EINVAL);
  ck_assert_ptr_null(out);
  const char *bad_ip6[] = {"::g"};
  spec.ip_addresses = bad_ip6;
  ck_assert_int_eq(weft_cert_generate(&spec, key, NULL, NULL, &out), WEFT_EINVAL);
  const char *bad_dns[] = {""};
  weft_cert_spec spec2 = {.dns_names = bad_dns, .dns_count = 1};
  ck_assert_int_eq(weft_cert_generate(&spec2, key, NULL, NULL, &out), WEFT_EINVAL);
  weft_cert_spec plain = {.common_name = "x"};
  /* only one of the issuer pair, or a pair that does not match */
  ck_assert_int_eq(weft_cert_generate(&plain, key, key, NULL, &out), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_generate(&plain, key, NULL, ca, &out), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_generate(&plain, key, other, ca, &out), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_generate(&plain, NULL, NULL, NULL, &out), WEFT_EINVAL);
  /* an empty validity window */
  weft_cert_spec window = {.not_before = 100, .not_after = 50};
  ck_assert_int_eq(weft_cert_generate(&window, key, NULL, NULL, &out), WEFT_EINVAL);
  weft_cert_spec neg = {.serial = -5};
  ck_assert_int_eq(weft_cert_generate(&neg, key, NULL, NULL, &out), WEFT_EINVAL);
  ck_assert_int_eq(ERR_peek_error(), 0);
  X509_free(ca);
  EVP_PKEY_free(key);
  EVP_PKEY_free(other);
}
END_TEST

START_TEST(test_pem_round_trip) {
  weft_key_type types[] = {WEFT_KEY_EC_P256, WEFT_KEY_ED25519};
  for (int t = 0; t < 2; t++) {
    EVP_PKEY *key = NULL;
    ck_assert_int_eq(weft_key_generate(types[t], 0, &key), 0);
    X509 *cert = make_cert(key, "round trip", "rt.test", NULL, 0, NULL, NULL);
    char *pem = NULL;
    size_t len = 0;
    ck_assert_int_eq(weft_key_to_pem(key, &pem, &len), 0);
    ck_assert_uint_eq(strlen(pem), len);
    ck_assert_ptr_nonnull(strstr(pem, "BEGIN PRIVATE KEY"));
    EVP_PKEY *back = NULL;
    ck_assert_int_eq(weft_key_from_pem(pem, len, &back), 0);
    ck_assert_int_eq(EVP_PKEY_eq(key, back), 1);
    EVP_PKEY_free(back);
    free(pem);

    ck_assert_int_eq(weft_cert_to_pem(cert, &pem, NULL), 0);
    ck_assert_ptr_nonnull(strstr(pem, "BEGIN CERTIFICATE"));
    X509 *back_cert = NULL;
    ck_assert_int_eq(weft_cert_from_pem(pem, strlen(pem), &back_cert), 0);
    ck_assert_int_eq(X509_cmp(cert, back_cert), 0);
    X509_free(back_cert);
    free(pem);
    X509_free(cert);
    EVP_PKEY_free(key);
  }
  char *pem = (char *)1;
  ck_assert_int_eq(weft_key_to_pem(NULL, &pem, NULL), WEFT_EINVAL);
  ck_assert_ptr_null(pem);
  ck_assert_int_eq(weft_cert_to_pem(NULL, NULL, NULL), WEFT_EINVAL);
}
END_TEST

/* --- Negotiation over in-memory handshakes ------------------------------------------------ */

START_TEST(test_alpn_server_preference) {
  NEED(WEFT_MECH_ALPN);
  pair p;
  pair_init(&p);
  set_protocols(p.server, HTTP_H2, 2);
  set_protocols(p.client, H2_HTTP, 2);
  pair_run(&p, "localhost");
  assert_success(&p);
  ASSERT_NEGOTIATED(&p.c, "http/1.1", WEFT_NEGOTIATED_ALPN);
  ASSERT_NEGOTIATED(&p.s, "http/1.1", WEFT_NEGOTIATED_ALPN);
  pair_free(&p);
}
END_TEST

START_TEST(test_npn_client_preference) {
  NEED(WEFT_MECH_NPN);
  pair p;
  pair_init(&p);
  pair_versions(&p, WEFT_TLS1_2, WEFT_TLS1_2);
  set_protocols(p.server, HTTP_H2, 2);
  set_protocols(p.client, H2_HTTP, 2);
  ck_assert_int_eq(weft_cert_options_set_negotiation_mechanisms(p.client, WEFT_MECH_NPN), 0);
  pair_run(&p, "localhost");
  assert_success(&p);
  ASSERT_NEGOTIATED(&p.c, "h2", WEFT_NEGOTIATED_NPN);
  ASSERT_NEGOTIATED(&p.s, "h2", WEFT_NEGOTIATED_NPN);
  pair_free(&p);
}
END_TEST

START_TEST(test_both_mechanisms_report_alpn) {
  NEED(WEFT_MECH_ALPN | WEFT_MECH_NPN);
  int versions[] = {WEFT_TLS1_2, WEFT_TLS1_3};
  for (int v = 0; v < 2; v++) {
    pair p;
    pair_init(&p);
    pair_versions(&p, versions[v], versions[v]);
    static const char *const server_list[] = {"h2", "http/1.1", "spdy/2"};
    static const char *const client_list[] = {"spdy/3", "http/1.1"};
    set_protocols(p.server, server_list, 3);
    set_protocols(p.client, client_list, 2);
    pair_run(&p, "localhost");
    assert_success(&p);
    ASSERT_NEGOTIATED(&p.c, "http/1.1", WEFT_NEGOTIATED_ALPN);
    ASSERT_NEGOTIATED(&p.s, "http/1.1", WEFT_NEGOTIATED_ALPN);
    pair_free(&p);
  }
}
END_TEST

START_TEST(test_empty_list_negotiates_nothing) {
  /* runs on every build: no list anywhere, or a list on one side only */
  int versions[] = {WEFT_TLS1_2, WEFT_TLS1_3};
  for (int v = 0; v < 2; v++) {
    for (int which = 0; which < 3; which++) {
      if (which > 0 && weft_protocol_negotiation_mechanisms() == 0)
        continue;
      pair p;
      pair_init(&p);
      pair_versions(&p, versions[v], versions[v]);
      if (which == 1)
        set_protocols(p.server, H2_HTTP, 2);
      if (which == 2)
        set_protocols(p.client, H2_HTTP, 2);
      pair_run(&p, "localhost");
      assert_success(&p);
      ASSERT_NEGOTIATED(&p.c, "", WEFT_NEGOTIATED_NONE);
      ASSERT_NEGOTIATED(&p.s, "", WEFT_NEGOTIATED_NONE);
      ck_assert_int_eq(p.c.conn.no_overlap, 0);
      ck_assert_int_eq(p.s.conn.no_overlap, 0);
      pair_free(&p);
    }
  }
}
END_TEST

START_TEST(test_no_overlap_fail_alpn) {
  NEED(WEFT_MECH_ALPN);
  pair p;
  pair_init(&p);
  static const char *const other[] = {"spdy/3"};
  set_protocols(p.server, H2_HTTP, 2);
  set_protocols(p.client, other, 1);
  pair_run(&p, "localhost");
  ck_assert(p.s.failed);
  ck_assert(p.c.failed);
  weft__reason_buf rc = classify(&p.c, 0), rs = classify(&p.s, 0);
  ck_assert_int_eq(rc.reason.code, WEFT_ENOPROTOCOL);
  ck_assert_int_eq(rc.reason.tls_alert, 120);
  ck_assert_int_eq(rc.reason.alert_sent, 0);
  ck_assert_ptr_nonnull(strstr(rc.msg, "alert 120 no_application_protocol"));
  ck_assert_int_eq(rs.reason.code, WEFT_ENOPROTOCOL);
  ck_assert_int_eq(rs.reason.tls_alert, 120);
  ck_assert_int_eq(rs.reason.alert_sent, 1);
  ck_assert_int_eq(p.s.conn.no_overlap, 1);
  pair_free(&p);
}
END_TEST

START_TEST(test_no_overlap_continue) {
  NEED(WEFT_MECH_ALPN | WEFT_MECH_NPN);
  int versions[] = {WEFT_TLS1_2, WEFT_TLS1_3};
  for (int v = 0; v < 2; v++) {
    pair p;
    pair_init(&p);
    pair_versions(&p, versions[v], versions[v]);
    static const char *const other[] = {"spdy/3", "spdy/2"};
    set_protocols(p.server, H2_HTTP, 2);
    set_protocols(p.client, other, 2);
    ck_assert_int_eq(weft_cert_options_set_no_overlap_policy(p.server, WEFT_NO_OVERLAP_CONTINUE),
                     0);
    ck_assert_int_eq(weft_cert_options_set_no_overlap_policy(p.client, WEFT_NO_OVERLAP_CONTINUE),
                     0);
    pair_run(&p, "localhost");
    assert_success(&p);
    ASSERT_NEGOTIATED(&p.c, "", WEFT_NEGOTIATED_NONE);
    ASSERT_NEGOTIATED(&p.s, "", WEFT_NEGOTIATED_NONE);
    if (versions[v] == WEFT_TLS1_2) /* NPN ran: the client had to send something */
      ck_assert_int_eq(p.c.conn.npn_selected_by_client_fallback, 1);
    pair_free(&p);
  }
}
END_TEST

START_TEST(test_no_overlap_fail_npn) {
  NEED(WEFT_MECH_NPN);
  pair p;
  pair_init(&p);
  pair_versions(&p, WEFT_TLS1_2, WEFT_TLS1_2);
  static const char *const other[] = {"spdy/3"};
  set_protocols(p.server, H2_HTTP, 2);
  set_protocols(p.client, other, 1);
  ck_assert_int_eq(weft_cert_options_set_negotiation_mechanisms(p.client, WEFT_MECH_NPN), 0);
  pair_run(&p, "localhost");
  ck_assert(p.c.failed);
  ck_assert(p.s.failed);
  weft__reason_buf rc = classify(&p.c, 0);
  ck_assert_int_eq(rc.reason.code, WEFT_ENOPROTOCOL);
  ck_assert_ptr_nonnull(strstr(rc.msg, "NPN"));
  ck_assert_int_eq(classify(&p.s, 0).reason.code, WEFT_ETLSALERT);
  pair_free(&p);
}
END_TEST

START_TEST(test_npn_absent_in_tls13) {
  NEED(WEFT_MECH_NPN);
  pair p;
  pair_init(&p);
  pair_versions(&p, WEFT_TLS1_3, WEFT_TLS1_3);
  set_protocols(p.server, H2_HTTP, 2);
  set_protocols(p.client, H2_HTTP, 2);
  ck_assert_int_eq(weft_cert_options_set_negotiation_mechanisms(p.client, WEFT_MECH_NPN), 0);
  pair_run(&p, "localhost");
  assert_success(&p);
  ASSERT_NEGOTIATED(&p.c, "", WEFT_NEGOTIATED_NONE);
  ASSERT_NEGOTIATED(&p.s, "", WEFT_NEGOTIATED_NONE);
  pair_free(&p);
}
END_TEST

typedef struct selector_state {
  int answer;
  int calls;
  char server_name[64];
  size_t offer_len;
} selector_state;

static int test_selector(void *arg, const uint8_t *offer, size_t offer_len,
                         const char *server_name) {
  selector_state *st = arg;
  st->calls++;
  st->offer_len = offer_len;
  snprintf(st->server_name, sizeof st->server_name, "%s", server_name ? server_name : "(null)");
  ck_assert_int_eq(weft__nego_validate_wire(offer, offer_len, NULL), 0);
  return st->answer;
}

START_TEST(test_protocol_selector) {
  NEED(WEFT_MECH_ALPN);
  struct {
    int answer;
    int policy;
    const char *expect; /* NULL: the handshake fails */
  } cases[] = {
      {1, WEFT_NO_OVERLAP_FAIL, "spdy/3"},
      {0, WEFT_NO_OVERLAP_FAIL, "h2"},
      {-1, WEFT_NO_OVERLAP_CONTINUE, ""},
      {-1, WEFT_NO_OVERLAP_FAIL, NULL},
      {-2, WEFT_NO_OVERLAP_CONTINUE, NULL},
      {7, WEFT_NO_OVERLAP_CONTINUE, NULL}, /* out of range: a bug, fails loudly */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    pair p;
    pair_init(&p);
    pair_versions(&p, WEFT_TLS1_3, WEFT_TLS1_3);
    static const char *const offer[] = {"h2", "spdy/3", "http/1.1"};
    static const char *const mine[] = {"x"}; /* the selector may pick outside the list */
    set_protocols(p.server, mine, 1);
    set_protocols(p.client, offer, 3);
    selector_state st = {.answer = cases[i].answer};
    ck_assert_int_eq(weft_cert_options_set_protocol_selector(p.server, test_selector, &st), 0);
    ck_assert_int_eq(weft_cert_options_set_no_overlap_policy(p.server, cases[i].policy), 0);
    pair_run(&p, "sni.example");
    ck_assert_int_eq(st.calls, 1);
    ck_assert_str_eq(st.server_name, "sni.example");
    ck_assert_uint_eq(st.offer_len, 19);
    if (cases[i].expect != NULL) {
      assert_success(&p);
      ASSERT_NEGOTIATED(&p.c, cases[i].expect,
                        cases[i].expect[0] ? WEFT_NEGOTIATED_ALPN : WEFT_NEGOTIATED_NONE);
    } else {
      ck_assert_msg(p.c.failed, "case %zu", i);
      ck_assert_int_eq(classify(&p.s, 0).reason.code, WEFT_ENOPROTOCOL);
      ck_assert_int_eq(classify(&p.c, 0).reason.code, WEFT_ENOPROTOCOL);
    }
    pair_free(&p);
  }
}
END_TEST

/* The seed's scenario: both sides verify, the server requires a client certificate, each trusts
 * the other's self-signed certificate, and both list protocols. */
START_TEST(test_mutual_auth_seed_scenario) {
  pair p;
  pair_init(&p);
  identity client_id = make_identity("client");
  set_identity(p.client, &client_id);
  ck_assert_int_eq(weft_cert_options_set_verify(p.client, 1), 0);
  ck_assert_int_eq(weft_cert_options_add_ca_certificate(p.client, p.id.cert), 0);
  ck_assert_int_eq(weft_cert_options_set_verify(p.server, 1), 0);
  ck_assert_int_eq(weft_cert_options_set_require_certificate(p.server, 1), 0);
  ck_assert_int_eq(weft_cert_options_add_ca_certificate(p.server, client_id.cert), 0);
  int nego = weft_protocol_negotiation_mechanisms() != 0;
  if (nego) {
    set_protocols(p.server, H2_HTTP, 2);
    set_protocols(p.client, H2_HTTP, 2);
  }
  pair_run(&p, "localhost");
  assert_success(&p);
  ck_assert_ptr_nonnull(SSL_get0_peer_certificate(p.s.ssl));
  ck_assert_int_eq(SSL_get_verify_result(p.s.ssl), X509_V_OK);
  ck_assert_int_eq(SSL_get_verify_result(p.c.ssl), X509_V_OK);
  /* TLS 1.3 (the default maximum) has no NPN: an NPN-only build negotiates nothing */
  if (weft_protocol_negotiation_mechanisms() & WEFT_MECH_ALPN) {
    ASSERT_NEGOTIATED(&p.c, "h2", WEFT_NEGOTIATED_ALPN);
    ASSERT_NEGOTIATED(&p.s, "h2", WEFT_NEGOTIATED_ALPN);
  } else {
    ASSERT_NEGOTIATED(&p.c, "", WEFT_NEGOTIATED_NONE);
  }
  pair_free(&p);
  free_identity(&client_id);
}
END_TEST

/* --- Classification ----------------------------------------------------------------------- */

START_TEST(test_classify_untrusted) {
  /* trusting another CA only, then the system store (the default: no CA given) */
  for (int system_store = 0; system_store < 2; system_store++) {
    pair p;
    pair_init(&p);
    ck_assert_int_eq(weft_cert_options_set_verify(p.client, 1), 0);
    identity stranger = make_identity("stranger");
    if (!system_store)
      ck_assert_int_eq(weft_cert_options_add_ca_certificate(p.client, stranger.cert), 0);
    pair_run(&p, "localhost");
    ck_assert(p.c.failed);
    weft__reason_buf rc = classify(&p.c, 0);
    ck_assert_int_eq(rc.reason.code, WEFT_ECERTVERIFY);
    ck_assert_int_ne(rc.reason.verify_result, X509_V_OK);
    ck_assert_ptr_nonnull(strstr(rc.msg, X509_verify_cert_error_string(rc.reason.verify_result)));
    ck_assert_ptr_nonnull(strstr(rc.msg, "CN=server"));
    ck_assert_int_eq(rc.reason.alert_sent, 1);
    weft__reason_buf rs = classify(&p.s, 0);
    ck_assert_int_eq(rs.reason.code, WEFT_ECERTVERIFY);
    ck_assert_ptr_nonnull(strstr(rs.msg, "peer rejected our certificate"));
    ck_assert_int_ge(rs.reason.tls_alert, 42);
    ck_assert_int_le(rs.reason.tls_alert, 49);
    ck_assert_int_eq(rs.reason.alert_sent, 0);
    pair_free(&p);
    free_identity(&stranger);
  }
}
END_TEST

/* Trust anchors from a hashed directory (load_ca_dir) replace the system store too. */
START_TEST(test_ca_dir_trust) {
  pair p;
  pair_init(&p);
  char dir[] = "/tmp/weft-cadir-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char path[128];
  snprintf(path, sizeof path, "%s/%08lx.0", dir, X509_subject_name_hash(p.id.cert));
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(PEM_write_X509(f, p.id.cert), 1);
  fclose(f);
  ck_assert_int_eq(weft_cert_options_set_verify(p.client, 1), 0);
  ck_assert_int_eq(weft_cert_options_load_ca_dir(p.client, dir), 0);
  pair_run(&p, "localhost");
  assert_success(&p);
  ck_assert_int_eq(SSL_get_verify_result(p.c.ssl), X509_V_OK);
  pair_free(&p);
  unlink(path);
  rmdir(dir);
}
END_TEST

START_TEST(test_classify_hostname) {
  const char *names[] = {"wrong.example", "10.9.9.9"};
  for (int i = 0; i < 2; i++) {
    pair p;
    pair_init(&p);
    ck_assert_int_eq(weft_cert_options_set_verify(p.client, 1), 0);
    ck_assert_int_eq(weft_cert_options_add_ca_certificate(p.client, p.id.cert), 0);
    pair_run(&p, names[i]);
    ck_assert(p.c.failed);
    weft__reason_buf rc = classify(&p.c, 0);
    ck_assert_int_eq(rc.reason.code, WEFT_EHOSTNAME);
    ck_assert_ptr_nonnull(strstr(rc.msg, names[i]));
    ck_assert(rc.reason.verify_result == X509_V_ERR_HOSTNAME_MISMATCH ||
              rc.reason.verify_result == X509_V_ERR_IP_ADDRESS_MISMATCH);
    pair_free(&p);
  }
  /* and the matching names succeed: DNS, IP */
  const char *good[] = {"localhost", "127.0.0.1"};
  for (int i = 0; i < 2; i++) {
    pair p;
    pair_init(&p);
    ck_assert_int_eq(weft_cert_options_set_verify(p.client, 1), 0);
    ck_assert_int_eq(weft_cert_options_add_ca_certificate(p.client, p.id.cert), 0);
    pair_run(&p, good[i]);
    assert_success(&p);
    pair_free(&p);
  }
}
END_TEST

START_TEST(test_classify_no_client_cert) {
  int versions[] = {WEFT_TLS1_2, WEFT_TLS1_3};
  for (int v = 0; v < 2; v++) {
    pair p;
    pair_init(&p);
    pair_versions(&p, versions[v], versions[v]);
    ck_assert_int_eq(weft_cert_options_set_require_certificate(p.server, 1), 0);
    ck_assert_int_eq(weft_cert_options_add_ca_certificate(p.server, p.id.cert), 0);
    pair_run(&p, "localhost");
    ck_assert(p.s.failed);
    ck_assert(p.c.failed);
    weft__reason_buf rs = classify(&p.s, 0);
    ck_assert_msg(rs.reason.code == WEFT_ENOPEERCERT, "server: %s", rs.msg);
    weft__reason_buf rc = classify(&p.c, 0);
    ck_assert_msg(rc.reason.code == WEFT_ENOPEERCERT, "client (v%x): %s", versions[v], rc.msg);
    ck_assert_int_eq(rc.reason.alert_sent, 0);
    ck_assert_int_eq(p.c.conn.cert_requested, 1);
    pair_free(&p);
  }
}
END_TEST

START_TEST(test_classify_version_mismatch) {
  pair p;
  pair_init(&p);
  ck_assert_int_eq(weft_cert_options_set_tls_versions(p.server, WEFT_TLS1_3, WEFT_TLS1_3), 0);
  ck_assert_int_eq(weft_cert_options_set_tls_versions(p.client, WEFT_TLS1_2, WEFT_TLS1_2), 0);
  pair_run(&p, "localhost");
  ck_assert(p.c.failed && p.s.failed);
  weft__reason_buf rc = classify(&p.c, 0), rs = classify(&p.s, 0);
  ck_assert_msg(rc.reason.code == WEFT_ETLSVERSION, "client: %s", rc.msg);
  ck_assert_msg(rs.reason.code == WEFT_ETLSVERSION, "server: %s", rs.msg);
  ck_assert_ptr_nonnull(strstr(rs.msg, "TLS 1.3 to TLS 1.3"));
  pair_free(&p);
}
END_TEST

/* A handshake_failure alert without a certificate request is not "no certificate". */
START_TEST(test_classify_no_shared_cipher) {
  pair p;
  pair_init(&p);
  pair_versions(&p, WEFT_TLS1_2, WEFT_TLS1_2);
  ck_assert_int_eq(weft_cert_options_set_cipher_list(p.server, "ECDHE-ECDSA-AES128-GCM-SHA256"), 0);
  ck_assert_int_eq(weft_cert_options_set_cipher_list(p.client, "ECDHE-ECDSA-AES256-GCM-SHA384"), 0);
  pair_run(&p, "localhost");
  ck_assert(p.c.failed && p.s.failed);
  weft__reason_buf rc = classify(&p.c, 0), rs = classify(&p.s, 0);
  ck_assert_msg(rc.reason.code == WEFT_ETLSALERT, "client: %s", rc.msg);
  ck_assert_int_eq(rc.reason.tls_alert, SSL_AD_HANDSHAKE_FAILURE);
  ck_assert_ptr_nonnull(strstr(rc.msg, "handshake failure"));
  ck_assert_msg(rs.reason.code == WEFT_ETLS, "server: %s", rs.msg);
  ck_assert_ptr_nonnull(strstr(rs.msg, "no shared cipher"));
  ck_assert_int_eq(rs.reason.alert_sent, 1);
  ck_assert_ptr_null(strstr(rs.msg, "error:")); /* no raw packed codes */
  pair_free(&p);
}
END_TEST

START_TEST(test_classify_clean_close_and_truncation) {
  for (int truncate = 0; truncate < 2; truncate++) {
    pair p;
    pair_init(&p);
    /* the client does not verify: its verify result is an error, yet the close is clean */
    pair_run(&p, "localhost");
    assert_success(&p);
    ck_assert_int_ne(SSL_get_verify_result(p.c.ssl), X509_V_OK);
    ck_assert_int_eq(p.s.conn.handshake_done, 1);
    if (truncate) {
      BIO_shutdown_wr(SSL_get_wbio(p.c.ssl)); /* TCP FIN without close_notify */
    } else {
      ck_assert_int_ge(SSL_shutdown(p.c.ssl), 0); /* sends close_notify */
    }
    pump(&p.c, &p.s);
    weft__reason_buf rs = classify(&p.s, 1);
    if (truncate) {
      ck_assert_msg(rs.reason.code == WEFT_ETRUNCATED, "server: %s", rs.msg);
      ck_assert_ptr_nonnull(strstr(rs.msg, "close_notify"));
      /* the same from libevent's view: only an EOF, no OpenSSL error */
      weft__reason_buf r2;
      weft__tls_classify(p.s.ssl, &p.s.conn, NULL, 0, 0, 1, &r2);
      ck_assert_int_eq(r2.reason.code, WEFT_ETRUNCATED);
    } else {
      ck_assert(p.s.closed);
      ck_assert_msg(rs.reason.code == WEFT_OK, "server: %s", rs.msg);
      ck_assert_str_eq(rs.msg, "clean TLS close (close_notify received)");
      ck_assert_int_eq(rs.reason.tls_alert, -1);
    }
    pair_free(&p);
  }
}
END_TEST

START_TEST(test_classify_ignores_pseudo_codes) {
  /* libevent pushes SSL_get_error values (1, 5), raw errno values and -1 */
  unsigned long junk[] = {SSL_ERROR_SSL, SSL_ERROR_SYSCALL, ECONNRESET, 0xffffffffUL,
                          (unsigned long)-1};
  weft__reason_buf r;
  weft__tls_classify(NULL, NULL, junk, 5, 0, 0, &r);
  ck_assert_int_eq(r.reason.code, WEFT_ETLS);
  ck_assert_ptr_null(strstr(r.msg, "error:"));
  ck_assert_ptr_nonnull(strstr(r.msg, "no reason"));
  ck_assert_int_eq(r.reason.tls_alert, -1);

  weft__tls_classify(NULL, NULL, junk, 5, ECONNRESET, 0, &r);
  ck_assert_int_eq(r.reason.code, WEFT_ECONNRESET);
  ck_assert_int_eq(r.reason.sys_errno, ECONNRESET);
  weft__tls_classify(NULL, NULL, NULL, 0, EPIPE, 0, &r);
  ck_assert_int_eq(r.reason.code, WEFT_ECONNRESET);

  /* a system error packed by OpenSSL gives its errno */
  unsigned long sys[] = {(unsigned long)ERR_SYSTEM_FLAG | ECONNRESET};
  weft__tls_classify(NULL, NULL, sys, 1, 0, 0, &r);
  ck_assert_int_eq(r.reason.code, WEFT_ECONNRESET);
  ck_assert_int_eq(r.reason.sys_errno, ECONNRESET);

  /* a real OpenSSL error gives OpenSSL's text */
  unsigned long real[] = {SSL_ERROR_SSL, ERR_PACK(ERR_LIB_SSL, 0, SSL_R_NO_SHARED_CIPHER)};
  weft__tls_classify(NULL, NULL, real, 2, 0, 0, &r);
  ck_assert_int_eq(r.reason.code, WEFT_ETLS);
  ck_assert_ptr_nonnull(strstr(r.msg, "no shared cipher"));

  unsigned long eof[] = {ERR_PACK(ERR_LIB_SSL, 0, SSL_R_UNEXPECTED_EOF_WHILE_READING)};
  weft__tls_classify(NULL, NULL, eof, 1, 0, 0, &r);
  ck_assert_int_eq(r.reason.code, WEFT_ETRUNCATED);

  /* alerts recorded on the connection */
  weft__tls_conn conn = {.alert_received = 80, .alert_sent = -1, .handshake_done = 1};
  weft__tls_classify(NULL, &conn, NULL, 0, 0, 0, &r);
  ck_assert_int_eq(r.reason.code, WEFT_ETLSALERT);
  ck_assert_int_eq(r.reason.tls_alert, 80);
  ck_assert_ptr_nonnull(strstr(r.msg, "internal error"));
  conn.alert_received = 116;
  weft__tls_classify(NULL, &conn, NULL, 0, 0, 0, &r);
  ck_assert_int_eq(r.reason.code, WEFT_ENOPEERCERT);
  ck_assert_ptr_nonnull(strstr(r.msg, "certificate required"));
  conn.alert_received = 70;
  weft__tls_classify(NULL, &conn, NULL, 0, 0, 0, &r);
  ck_assert_int_eq(r.reason.code, WEFT_ETLSVERSION);
  conn.alert_received = 48;
  weft__tls_classify(NULL, &conn, NULL, 0, 0, 0, &r);
  ck_assert_int_eq(r.reason.code, WEFT_ECERTVERIFY);
  ck_assert_ptr_nonnull(strstr(r.msg, "unknown CA"));
  conn.alert_received = -1;
  conn.alert_sent = 120;
  weft__tls_classify(NULL, &conn, NULL, 0, 0, 0, &r);
  ck_assert_int_eq(r.reason.code, WEFT_ENOPROTOCOL);
  ck_assert_int_eq(r.reason.alert_sent, 1);
  ck_assert_int_eq(ERR_peek_error(), 0);
}
END_TEST

START_TEST(test_renegotiation_detected) {
  pair p;
  pair_init(&p);
  pair_versions(&p, WEFT_TLS1_2, WEFT_TLS1_2);
  pair_run(&p, "localhost");
  assert_success(&p);
  ck_assert_int_eq(p.s.conn.renegotiation_attempt, 0);
  /* a peer that renegotiates anyway (weft's own clients never do) */
  SSL_clear_options(p.c.ssl, SSL_OP_NO_RENEGOTIATION);
  ck_assert_int_eq(SSL_renegotiate(p.c.ssl), 1);
  p.c.done = 0;
  pump(&p.c, &p.s);
  ck_assert_int_eq(p.s.conn.renegotiation_attempt, 1);
  pair_free(&p);
}
END_TEST

START_TEST(test_tls13_post_handshake_is_not_renegotiation) {
  pair p;
  pair_init(&p);
  pair_versions(&p, WEFT_TLS1_3, WEFT_TLS1_3);
  pair_run(&p, "localhost");
  assert_success(&p);
  ck_assert_int_eq(SSL_key_update(p.c.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
  ck_assert_int_eq(SSL_write(p.c.ssl, "x", 1), 1);
  pump(&p.c, &p.s);
  ck_assert(!p.c.failed && !p.s.failed);
  ck_assert_int_eq(p.s.conn.renegotiation_attempt, 0);
  ck_assert_int_eq(p.c.conn.renegotiation_attempt, 0);
  pair_free(&p);
}
END_TEST

/* Resumption works with client verification on (it needs the session id context), with
 * tickets and with the server's session cache. */
START_TEST(test_session_resumption_with_client_auth) {
  struct {
    int version, tickets;
  } cases[] = {{WEFT_TLS1_2, 1}, {WEFT_TLS1_2, 0}, {WEFT_TLS1_3, 1}, {WEFT_TLS1_3, 0}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    pair p;
    pair_init(&p);
    pair_versions(&p, cases[i].version, cases[i].version);
    ck_assert_int_eq(weft_cert_options_set_session_tickets(p.server, cases[i].tickets), 0);
    identity client_id = make_identity("client");
    set_identity(p.client, &client_id);
    ck_assert_int_eq(weft_cert_options_set_require_certificate(p.server, 1), 0);
    ck_assert_int_eq(weft_cert_options_add_ca_certificate(p.server, client_id.cert), 0);
    pair_run(&p, "localhost");
    assert_success(&p);
    SSL_SESSION *session = SSL_get1_session(p.c.ssl);
    ck_assert_ptr_nonnull(session);
    /* OpenSSL drops the session of a connection freed without close_notify: close cleanly */
    SSL_shutdown(p.c.ssl);
    pump(&p.c, &p.s);
    SSL_shutdown(p.s.ssl);
    side_free(&p.c);
    side_free(&p.s);

    side_new(&p.s, p.server, WEFT_TLS_SERVER, NULL);
    side_new(&p.c, p.client, WEFT_TLS_CLIENT, "localhost");
    ck_assert_int_eq(SSL_set_session(p.c.ssl, session), 1);
    SSL_SESSION_free(session);
    handshake(&p.c, &p.s);
    assert_success(&p);
    ck_assert_msg(SSL_session_reused(p.c.ssl) == 1, "case %zu: not resumed", i);
    ck_assert_ptr_nonnull(SSL_get0_peer_certificate(p.s.ssl));
    pair_free(&p);
    free_identity(&client_id);
  }
}
END_TEST

/* --- Suite -------------------------------------------------------------------------------- */

static Suite *tls_options_suite(void) {
  Suite *s = suite_create("tls_options");

  TCase *tc = tcase_create("negotiation_config");
  tcase_add_test(tc, test_mechanisms_mask);
  tcase_add_test(tc, test_unsupported_when_no_mechanism);
  tcase_add_test(tc, test_mechanisms_setter);
  tcase_add_test(tc, test_names_valid_and_clear);
  tcase_add_test(tc, test_names_rejected);
  tcase_add_test(tc, test_names_total_length);
  tcase_add_test(tc, test_wire_validation);
  tcase_add_test(tc, test_select_preference);
  tcase_add_test(tc, test_encode);
  suite_add_tcase(s, tc);

  tc = tcase_create("options");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_defaults_and_refcount);
  tcase_add_test(tc, test_frozen_after_prepare);
  tcase_add_test(tc, test_key_mismatch_both_orders);
  tcase_add_test(tc, test_malformed_pem);
  tcase_add_test(tc, test_load_files_and_chain);
  tcase_add_test(tc, test_algorithms_rejected);
  tcase_add_test(tc, test_versions);
  tcase_add_test(tc, test_prepare_requires_identity);
  tcase_add_test(tc, test_ctx_defaults);
  tcase_add_test(tc, test_server_verify_modes);
  tcase_add_test(tc, test_sessions_off);
  tcase_add_test(tc, test_timeouts_and_limits);
  tcase_add_test(tc, test_new_ssl_names);
  suite_add_tcase(s, tc);

  tc = tcase_create("keys");
  tcase_set_timeout(tc, 120); /* RSA key generation under valgrind */
  tcase_add_test(tc, test_key_generate);
  tcase_add_test(tc, test_cert_self_signed);
  tcase_add_test(tc, test_cert_ca_signed);
  tcase_add_test(tc, test_cert_errors);
  tcase_add_test(tc, test_pem_round_trip);
  suite_add_tcase(s, tc);

  tc = tcase_create("negotiation");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_alpn_server_preference);
  tcase_add_test(tc, test_npn_client_preference);
  tcase_add_test(tc, test_both_mechanisms_report_alpn);
  tcase_add_test(tc, test_empty_list_negotiates_nothing);
  tcase_add_test(tc, test_no_overlap_fail_alpn);
  tcase_add_test(tc, test_no_overlap_continue);
  tcase_add_test(tc, test_no_overlap_fail_npn);
  tcase_add_test(tc, test_npn_absent_in_tls13);
  tcase_add_test(tc, test_protocol_selector);
  tcase_add_test(tc, test_mutual_auth_seed_scenario);
  suite_add_tcase(s, tc);

  tc = tcase_create("classify");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_classify_untrusted);
  tcase_add_test(tc, test_ca_dir_trust);
  tcase_add_test(tc, test_classify_hostname);
  tcase_add_test(tc, test_classify_no_client_cert);
  tcase_add_test(tc, test_classify_version_mismatch);
  tcase_add_test(tc, test_classify_no_shared_cipher);
  tcase_add_test(tc, test_classify_clean_close_and_truncation);
  tcase_add_test(tc, test_classify_ignores_pseudo_codes);
  tcase_add_test(tc, test_renegotiation_detected);
  tcase_add_test(tc, test_tls13_post_handshake_is_not_renegotiation);
  tcase_add_test(tc, test_session_resumption_with_client_auth);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(tls_options_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
