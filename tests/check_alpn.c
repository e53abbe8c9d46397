/* tests/check_alpn.c: next-protocol negotiation (ALPN and NPN), end to end.
 *
 * The first six tests port Twisted's ALPN/NPN patch (the seed) one for one: NPNAndALPNTest
 * (test_NPNAndALPNSuccess, test_NPNAndALPNDifferent, test_NPNAndALPNFailure,
 * test_NPNRespectsClientPreference), ALPNTest (test_ALPNRespectsServerPreference) and
 * NPNAndALPNAbsentTest (test_NPNAndALPNNotImplemented). Like the seed, every connection is
 * mutual TLS with verification on: server and client each have a self-signed certificate made
 * here, each trusts exactly the other's, and both require the peer's certificate. The client
 * connects to 127.0.0.1 with no server name, so the server certificate carries the IP
 * subjectAltName 127.0.0.1 and the client checks it.
 *
 * The rest covers what DESIGN.md section 4 adds: empty lists, the no-overlap policy (alert 120),
 * NPN without overlap, name limits, TLS 1.2 / 1.3, a shared options object, STARTTLS, the
 * per-connection selector with SNI, the dispatch factory (compiled only when the headers define
 * WEFT_HAVE_DISPATCH), mechanism reporting, and interoperability with `openssl s_client` /
 * `openssl s_server` (skipped, with a message, only when no openssl binary is on PATH).
 *
 * Every connection is real: TCP on 127.0.0.1, ephemeral ports, full handshakes. Nothing sleeps:
 * the reactor runs until a condition holds or a deadline passes. The negotiated protocol is read
 * on both sides in build_protocol, connection_made and connection_lost (tu_conn records it).
 *
 * Builds configured with --disable-alpn / --disable-npn: each test checks
 * weft_protocol_negotiation_mechanisms() first and, if a mechanism it needs is absent, prints
 * "SKIP: <test>: needs ..." and returns (Check 0.15 has no skip). test_NPNAndALPNNotImplemented
 * runs only where both are absent, and prints "SKIP: ALPN/NPN are present in this build"
 * elsewhere.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <weft/weft.h>

#include "testutil.h"

#define WAIT 20.0 /* seconds any single wait may take before the test fails */

/* --- Skipping what this build lacks --------------------------------------------------- */

/* What configure decided (config.h is force-included by Makefile.am), so the reported mask can
 * be checked against the build and not just against itself. */
static unsigned expected_mechanisms(void) {
  unsigned m = 0;
#if defined(HAVE_SSL_CTX_SET_ALPN_SELECT_CB) && !defined(WEFT_DISABLE_ALPN)
  m |= WEFT_MECH_ALPN;
#endif
#if defined(HAVE_SSL_CTX_SET_NEXT_PROTO_SELECT_CB) && !defined(WEFT_DISABLE_NPN) &&                \
    !defined(OPENSSL_NO_NEXTPROTONEG)
  m |= WEFT_MECH_NPN;
#endif
  return m;
}

/* Returns 1 if this build has every mechanism in NEED (NEED 0: at least one mechanism);
 * otherwise prints the skip line. */
static int have_mechanisms(unsigned need, const char *func) {
  unsigned have = weft_protocol_negotiation_mechanisms();
  if (need == 0 ? have != 0 : (have & need) == need)
    return 1;
  /* START_TEST(name) defines name_fn: print the test's own name */
  int n = (int)strlen(func);
  if (n > 3 && strcmp(func + n - 3, "_fn") == 0)
    n -= 3;
  printf("SKIP: %.*s: needs %s, this build was configured with --disable-alpn/--disable-npn\n", n,
         func,
         need == (WEFT_MECH_ALPN | WEFT_MECH_NPN) ? "ALPN and NPN"
         : need == WEFT_MECH_ALPN                 ? "ALPN"
         : need == WEFT_MECH_NPN                  ? "NPN"
                                                  : "ALPN or NPN");
  fflush(stdout);
  return 0;
}

#define NEED(mask)                                                                                 \
  do {                                                                                             \
    if (!have_mechanisms((mask), __func__))                                                        \
      return;                                                                                      \
  } while (0)

#define ALPN WEFT_MECH_ALPN
#define NPN WEFT_MECH_NPN
#define ANY 0u

/* --- Certificates, as the seed's setUp makes them ------------------------------------- */

typedef struct certs {
  EVP_PKEY *skey; /* CN server, O Server Test Certificate, IP SAN 127.0.0.1 */
  X509 *scert;
  EVP_PKEY *ckey; /* CN client, O Client Test Certificate */
  X509 *ccert;
  EVP_PKEY *ca1_key; /* CN ca1, O CA Test Certificate 1 (a real CA: signs the SNI cert) */
  X509 *ca1;
  EVP_PKEY *ca2_key; /* CN ca2, O CA Test Certificate */
  X509 *ca2;
} certs;

static EVP_PKEY *make_key(void) {
  EVP_PKEY *key = NULL;
  int rc = weft_key_generate(WEFT_KEY_EC_P256, 0, &key);
  ck_assert_msg(rc == 0 && key != NULL, "weft_key_generate: %s", weft_err_name(rc));
  return key;
}

static X509 *make_cert(const weft_cert_spec *spec, EVP_PKEY *key, EVP_PKEY *issuer_key,
                       X509 *issuer_cert) {
  X509 *cert = NULL;
  int rc = weft_cert_generate(spec, key, issuer_key, issuer_cert, &cert);
  ck_assert_msg(rc == 0 && cert != NULL, "weft_cert_generate(CN %s): %s", spec->common_name,
                weft_err_name(rc));
  return cert;
}

static void certs_init(certs *k) {
  static const char *const localhost_ip[] = {"127.0.0.1"};
  memset(k, 0, sizeof *k);
  k->skey = make_key();
  k->scert = make_cert(&(weft_cert_spec){.common_name = "server",
                                         .organization = "Server Test Certificate",
                                         .ip_addresses = localhost_ip,
                                         .ip_count = 1},
                       k->skey, NULL, NULL);
  k->ckey = make_key();
  k->ccert = make_cert(
      &(weft_cert_spec){.common_name = "client", .organization = "Client Test Certificate"},
      k->ckey, NULL, NULL);
  k->ca1_key = make_key();
  k->ca1 = make_cert(
      &(weft_cert_spec){.common_name = "ca1", .organization = "CA Test Certificate 1", .is_ca = 1},
      k->ca1_key, NULL, NULL);
  k->ca2_key = make_key();
  k->ca2 = make_cert(
      &(weft_cert_spec){.common_name = "ca2", .organization = "CA Test Certificate", .is_ca = 1},
      k->ca2_key, NULL, NULL);
}

static void certs_free(certs *k) {
  EVP_PKEY_free(k->skey);
  EVP_PKEY_free(k->ckey);
  EVP_PKEY_free(k->ca1_key);
  EVP_PKEY_free(k->ca2_key);
  X509_free(k->scert);
  X509_free(k->ccert);
  X509_free(k->ca1);
  X509_free(k->ca2);
  memset(k, 0, sizeof *k);
}

/* --- Options ------------------------------------------------------------------------ */

/* Fails the test with the options' own explanation when EXPR does not return 0. */
#define OPT_OK(opts, expr)                                                                         \
  do {                                                                                             \
    int rc_ = (expr);                                                                              \
    ck_assert_msg(rc_ == 0, "%s:%d: %s: %s (%s)", __FILE__, __LINE__, #expr, weft_err_name(rc_),   \
                  weft_cert_options_last_error(opts));                                             \
  } while (0)

/* Expects EXPR to fail with CODE and to leave an explanation in last_error. */
#define OPT_FAILS(opts, expr, code)                                                                \
  do {                                                                                             \
    int rc_ = (expr);                                                                              \
    ck_assert_msg(rc_ == (code), "%s:%d: %s returned %s, expected %s", __FILE__, __LINE__, #expr,  \
                  weft_err_name(rc_), weft_err_name(code));                                        \
    ck_assert_msg(weft_cert_options_last_error(opts)[0] != '\0',                                   \
                  "%s:%d: %s failed with an empty last_error", __FILE__, __LINE__, #expr);         \
  } while (0)

/* A protocol list literal: LIST("h2", "http/1.1") expands to the array and its count. */
#define LIST(...)                                                                                  \
  (const char *const[]){__VA_ARGS__},                                                              \
      sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)
#define EMPTY NULL, 0

/* Options with KEY/CERT, verification on, the peer's certificate required, trusting CA only,
 * and the next-protocol list NAMES (COUNT 0: the empty list, set explicitly as the seed
 * does with nextProtocols=[]). */
static weft_cert_options *mutual_options(EVP_PKEY *key, X509 *cert, X509 *ca,
                                         const char *const *names, size_t count) {
  weft_cert_options *o = NULL;
  int rc = weft_cert_options_new(&o);
  ck_assert_msg(rc == 0 && o != NULL, "weft_cert_options_new: %s", weft_err_name(rc));
  OPT_OK(o, weft_cert_options_set_private_key(o, key));
  OPT_OK(o, weft_cert_options_set_certificate(o, cert));
  OPT_OK(o, weft_cert_options_set_verify(o, 1));
  OPT_OK(o, weft_cert_options_set_require_certificate(o, 1));
  OPT_OK(o, weft_cert_options_add_ca_certificate(o, ca));
  OPT_OK(o, weft_cert_options_set_next_protocols(o, names, count));
  return o;
}

static weft_cert_options *server_options(const certs *k, const char *const *names, size_t count) {
  return mutual_options(k->skey, k->scert, k->ccert, names, count);
}

static weft_cert_options *client_options(const certs *k, const char *const *names, size_t count) {
  return mutual_options(k->ckey, k->ccert, k->scert, names, count);
}

/* The seed's NPNOnlyOptions / ALPNOnlyOptions. */
static void only(weft_cert_options *o, unsigned mechanism) {
  OPT_OK(o, weft_cert_options_set_negotiation_mechanisms(o, mechanism));
}

static void versions(weft_cert_options *o, int min, int max) {
  OPT_OK(o, weft_cert_options_set_tls_versions(o, min, max));
}

static void policy(weft_cert_options *o, weft_no_overlap_policy p) {
  OPT_OK(o, weft_cert_options_set_no_overlap_policy(o, p));
}

/* --- A loopback: one TLS listener and client connections to it ---------------------- */

typedef struct pair {
  weft_reactor *reactor;
  tu_factory server;            /* the listener's factory */
  tu_factory client;            /* every client connection's factory */
  weft_factory *listen_factory; /* what the listener uses: &server.base unless replaced */
  weft_listener *listener;
  int port;
  int attempts; /* client connections started */
} pair;

static void pair_init(pair *p) {
  memset(p, 0, sizeof *p);
  p->reactor = tu_reactor_new();
  tu_factory_init(&p->server);
  tu_factory_init(&p->client);
  p->listen_factory = &p->server.base;
}

static void pair_listen(pair *p, weft_cert_options *server_opts) {
  int rc =
      weft_listen_ssl(p->reactor, "127.0.0.1", 0, p->listen_factory, server_opts, &p->listener);
  ck_assert_msg(rc == 0, "weft_listen_ssl: %s (%s)", weft_err_name(rc),
                weft_cert_options_last_error(server_opts));
  p->port = weft_listener_port(p->listener);
  ck_assert_int_gt(p->port, 0);
}

/* Starts a client connection to the listener with CLIENT_OPTS and SERVER_NAME. */
static void pair_connect(pair *p, weft_cert_options *client_opts, const char *server_name) {
  int rc = tu_connect(p->reactor, "127.0.0.1", p->port, &p->client.base, client_opts, server_name,
                      10.0, NULL, NULL);
  ck_assert_msg(rc == 0, "weft_connect_ssl: %s (%s)", weft_err_name(rc),
                weft_cert_options_last_error(client_opts));
  p->attempts++;
}

/* Both ends of every attempt so far have an outcome: the client was made or failed, and the
 * server was made, refused or failed its handshake. */
static int pair_settled(void *arg) {
  pair *p = arg;
  return p->client.made + p->client.failed >= p->attempts &&
         p->server.built + p->server.handshake_failed >= p->attempts;
}

static void pair_wait_settled(pair *p) {
  tu_run_until(p->reactor, pair_settled, p, WAIT);
}

/* Connects and expects the connection to succeed on both sides. */
static void pair_connect_ok(pair *p, weft_cert_options *client_opts, const char *server_name) {
  int failed = p->client.failed, hs_failed = p->server.handshake_failed;
  pair_connect(p, client_opts, server_name);
  pair_wait_settled(p);
  ck_assert_msg(p->client.failed == failed, "the client connection failed: %s (%s)",
                weft_err_name(p->client.last_failed.code), p->client.last_failed.message);
  ck_assert_msg(p->server.handshake_failed == hs_failed, "the server handshake failed: %s (%s)",
                weft_err_name(p->server.last_handshake_failed.code),
                p->server.last_handshake_failed.message);
  ck_assert_int_eq(p->client.made, p->attempts);
  ck_assert_int_eq(p->server.made, p->attempts);
}

/* Connects and expects the handshake to fail on both sides, with nothing built anywhere. */
static void pair_connect_fails(pair *p, weft_cert_options *client_opts, const char *server_name) {
  int built_c = p->client.built, built_s = p->server.built;
  pair_connect(p, client_opts, server_name);
  pair_wait_settled(p);
  /* let a wrong late callback (a build after the failure) show itself */
  tu_settle(p->reactor, 0.1);
  ck_assert_msg(p->client.built == built_c, "the client built a protocol (%s)",
                p->client.conns_tail ? p->client.conns_tail->proto_made.name : "?");
  ck_assert_msg(p->server.built == built_s, "the server built a protocol (%s)",
                p->server.conns_tail ? p->server.conns_tail->proto_made.name : "?");
  ck_assert_int_ge(p->client.failed, 1);
  ck_assert_int_ge(p->server.handshake_failed, 1);
}

static int all_lost(void *arg) {
  pair *p = arg;
  return p->client.lost == p->client.made && p->server.lost == p->server.made;
}

/* Closes every live client connection gracefully, waits until both sides saw the end, and
 * checks that it was a clean TLS close on both sides (close_notify both ways): a peer that
 * disliked anything in the handshake would have said so with an alert instead. */
static void pair_close_all(pair *p) {
  tu_conn *live[64];
  size_t n = 0;
  for (int side = 0; side < 2; side++)
    for (tu_conn *c = side ? p->client.conns : p->server.conns; c; c = c->next)
      if (c->transport && n < sizeof live / sizeof live[0])
        live[n++] = c;
  for (tu_conn *c = p->client.conns; c; c = c->next)
    if (c->transport)
      ck_assert_int_eq(weft_transport_lose_connection(c->transport), 0);
  tu_run_until(p->reactor, all_lost, p, WAIT);
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(live[i]->lost_reason.code == WEFT_OK,
                  "%s connection %d ended with %s (%s), not a clean close",
                  live[i]->factory == &p->client ? "client" : "server", live[i]->index,
                  weft_err_name(live[i]->lost_reason.code), live[i]->lost_reason.message);
}

static void pair_free(pair *p) {
  tu_factory_check(&p->server);
  tu_factory_check(&p->client);
  weft_listener_stop(p->listener);
  p->listener = NULL;
  weft_reactor_free(p->reactor); /* delivers connection_lost to anything still open */
  p->reactor = NULL;
  tu_factory_cleanup(&p->server);
  tu_factory_cleanup(&p->client);
}

/* --- Checking the negotiated protocol -------------------------------------------------- */

static const char *mechanism_name(weft_negotiation_mechanism m) {
  return m == WEFT_NEGOTIATED_ALPN ? "ALPN" : m == WEFT_NEGOTIATED_NPN ? "NPN" : "none";
}

/* P (read WHERE) is NAME via MECH, or nothing at all when NAME is NULL. */
static void check_proto_at(int line, const tu_proto *p, const char *where, const char *name,
                           size_t name_len, weft_negotiation_mechanism mech) {
  ck_assert_msg(p->set, "line %d: the protocol was never read in %s", line, where);
  if (name == NULL) {
    ck_assert_msg(!p->present && p->len == 0 && p->mechanism == WEFT_NEGOTIATED_NONE,
                  "line %d: %s: expected no protocol, got \"%s\" (len %zu, via %s)", line, where,
                  p->name, p->len, mechanism_name(p->mechanism));
    return;
  }
  ck_assert_msg(p->present, "line %d: %s: expected \"%.40s\" via %s, got no protocol", line, where,
                name, mechanism_name(mech));
  ck_assert_msg(p->len == name_len && memcmp(p->name, name, name_len) == 0,
                "line %d: %s: expected \"%.40s\" (len %zu), got \"%.40s\" (len %zu)", line, where,
                name, name_len, p->name, p->len);
  ck_assert_msg(p->mechanism == mech, "line %d: %s: \"%.40s\" came via %s, expected %s", line,
                where, name, mechanism_name(p->mechanism), mechanism_name(mech));
}

/* Connection C saw NAME via MECH in build_protocol and connection_made (so it was final
 * there), and in connection_lost if it is over. */
static void check_conn_at(int line, const tu_conn *c, const char *side, const char *name,
                          size_t name_len, weft_negotiation_mechanism mech) {
  char where[64];
  ck_assert_msg(c != NULL, "line %d: no %s connection", line, side);
  snprintf(where, sizeof where, "%s build_protocol", side);
  check_proto_at(line, &c->proto_build, where, name, name_len, mech);
  snprintf(where, sizeof where, "%s connection_made", side);
  check_proto_at(line, &c->proto_made, where, name, name_len, mech);
  if (c->lost) {
    snprintf(where, sizeof where, "%s connection_lost", side);
    check_proto_at(line, &c->proto_lost, where, name, name_len, mech);
  }
}

static size_t opt_strlen(const char *s) {
  return s ? strlen(s) : 0;
}

#define check_conn(c, side, name, mech)                                                            \
  check_conn_at(__LINE__, (c), (side), (name), opt_strlen(name), (mech))

/* The last connection of both sides negotiated NAME via MECH (NULL: nothing). */
static void check_both_at(int line, pair *p, const char *name, weft_negotiation_mechanism mech) {
  check_conn_at(line, p->server.conns_tail, "server", name, opt_strlen(name), mech);
  check_conn_at(line, p->client.conns_tail, "client", name, opt_strlen(name), mech);
}

#define check_both(p, name, mech) check_both_at(__LINE__, (p), (name), (mech))

/* One whole loopback over a real TCP socket, the seed's loopback(): listen with SOPTS, connect
 * with COPTS, expect success, close, and check that both sides negotiated NAME via MECH from
 * build_protocol to connection_lost. Drops the caller's references to both options. */
#define loopback_expect_socket(sopts, copts, name, mech)                                           \
  loopback_expect_socket_at(__LINE__, (sopts), (copts), (name), (mech))
static void loopback_expect_socket_at(int line, weft_cert_options *sopts, weft_cert_options *copts,
                                      const char *name, weft_negotiation_mechanism mech) {
  pair p;
  pair_init(&p);
  pair_listen(&p, sopts);
  pair_connect_ok(&p, copts, NULL);
  check_both_at(line, &p, name, mech); /* as seen in build_protocol and connection_made */
  pair_close_all(&p);
  check_both_at(line, &p, name, mech); /* and still in connection_lost */
  pair_free(&p);
  weft_cert_options_unref(sopts);
  weft_cert_options_unref(copts);
}

/* The same exchange without a port, where negotiation (not the socket) is the point: a
 * weft_testing_pair (weft/testing.h) runs the real OpenSSL handshake over memory, pumped step
 * by step; the client verifies the server as 127.0.0.1, the name its certificate carries. */
#define loopback_expect(sopts, copts, name, mech)                                                  \
  loopback_expect_at(__LINE__, (sopts), (copts), (name), (mech))
static void loopback_expect_at(int line, weft_cert_options *sopts, weft_cert_options *copts,
                               const char *name, weft_negotiation_mechanism mech) {
  weft_reactor *r = NULL;
  ck_assert_int_eq(weft_testing_reactor_new(&r), 0);
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  weft_testing_pair *tp = NULL;
  int rc = weft_testing_pair_new(r, &client.base, &server.base, copts, sopts, "127.0.0.1", &tp);
  ck_assert_msg(rc == 0, "line %d: weft_testing_pair_new: %s (%s / %s)", line, weft_err_name(rc),
                weft_cert_options_last_error(copts), weft_cert_options_last_error(sopts));
  ck_assert_int_eq(weft_testing_pump(r), 0); /* the whole handshake */
  ck_assert_msg(client.failed == 0, "line %d: the client connection failed: %s (%s)", line,
                weft_err_name(client.last_failed.code), client.last_failed.message);
  ck_assert_msg(server.handshake_failed == 0, "line %d: the server handshake failed: %s (%s)", line,
                weft_err_name(server.last_handshake_failed.code),
                server.last_handshake_failed.message);
  ck_assert_int_eq(client.made, 1);
  ck_assert_int_eq(server.made, 1);
  check_conn_at(line, server.conns_tail, "server", name, opt_strlen(name), mech);
  check_conn_at(line, client.conns_tail, "client", name, opt_strlen(name), mech);
  /* A clean close both ways (close_notify): a side that disliked the handshake would have sent
   * an alert instead. */
  weft_transport *ct = weft_testing_pair_transport(tp, WEFT_TLS_CLIENT);
  ck_assert_ptr_nonnull(ct);
  ck_assert_int_eq(weft_transport_lose_connection(ct), 0);
  ck_assert_int_eq(weft_testing_pump(r), 0);
  int code = 1;
  ck_assert_int_eq(weft_testing_pair_ended(tp, WEFT_TLS_CLIENT, &code), 1);
  ck_assert_msg(code == WEFT_OK, "line %d: client ended with %s", line, weft_err_name(code));
  ck_assert_int_eq(weft_testing_pair_ended(tp, WEFT_TLS_SERVER, &code), 1);
  ck_assert_msg(code == WEFT_OK, "line %d: server ended with %s", line, weft_err_name(code));
  ck_assert_int_eq(client.lost, 1);
  ck_assert_int_eq(server.lost, 1);
  check_conn_at(line, server.conns_tail, "server", name, opt_strlen(name), mech);
  check_conn_at(line, client.conns_tail, "client", name, opt_strlen(name), mech);
  weft_testing_pair_free(tp);
  weft_reactor_free(r);
  tu_factory_check(&server);
  tu_factory_check(&client);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
  weft_cert_options_unref(sopts);
  weft_cert_options_unref(copts);
}

static void expect_failure_reason(const tu_reason *r, const char *who, int code, int alert,
                                  int alert_sent) {
  ck_assert_msg(r->set, "%s: no reason recorded", who);
  ck_assert_msg(r->code == code, "%s: %s (%s), expected %s", who, weft_err_name(r->code),
                r->message, weft_err_name(code));
  ck_assert_msg(r->message[0] != '\0', "%s: empty message", who);
  if (alert >= 0)
    ck_assert_msg(r->tls_alert == alert && r->alert_sent == alert_sent,
                  "%s: tls_alert %d (alert_sent %d), expected %d (alert_sent %d); message: %s", who,
                  r->tls_alert, r->alert_sent, alert, alert_sent, r->message);
}

/* ===================================================================================== */
/* The seed: NPNAndALPNTest                                                                */
/* ===================================================================================== */

/* Both sides [h2, http/1.1], both mechanisms: the first protocol, via ALPN. */
START_TEST(test_NPNAndALPNSuccess) {
  NEED(ALPN);
  certs k;
  certs_init(&k);
  /* over a real socket once (the listener's and connector's TLS path), then without one */
  loopback_expect_socket(server_options(&k, LIST("h2", "http/1.1")),
                         client_options(&k, LIST("h2", "http/1.1")), "h2", WEFT_NEGOTIATED_ALPN);
  loopback_expect(server_options(&k, LIST("h2", "http/1.1")),
                  client_options(&k, LIST("h2", "http/1.1")), "h2", WEFT_NEGOTIATED_ALPN);
  /* at TLS 1.2 both mechanisms are in play: the ALPN result is the one reported */
  weft_cert_options *s = server_options(&k, LIST("h2", "http/1.1"));
  weft_cert_options *c = client_options(&k, LIST("h2", "http/1.1"));
  versions(c, WEFT_TLS1_2, WEFT_TLS1_2);
  loopback_expect(s, c, "h2", WEFT_NEGOTIATED_ALPN);
  certs_free(&k);
}
END_TEST

/* Different lists: only the common element is chosen. */
START_TEST(test_NPNAndALPNDifferent) {
  NEED(ALPN);
  certs k;
  certs_init(&k);
  loopback_expect(server_options(&k, LIST("h2", "http/1.1", "spdy/2")),
                  client_options(&k, LIST("spdy/3", "http/1.1")), "http/1.1", WEFT_NEGOTIATED_ALPN);
  certs_free(&k);
}
END_TEST

/* The client lists nothing: nothing is negotiated, and the connection succeeds. */
START_TEST(test_NPNAndALPNFailure) {
  NEED(ANY);
  certs k;
  certs_init(&k);
  loopback_expect(server_options(&k, LIST("h2", "http/1.1")), client_options(&k, EMPTY), NULL,
                  WEFT_NEGOTIATED_NONE);
  certs_free(&k);
}
END_TEST

/* NPN: the client's order wins. */
START_TEST(test_NPNRespectsClientPreference) {
  NEED(NPN);
  certs k;
  certs_init(&k);
  weft_cert_options *s = server_options(&k, LIST("http/1.1", "h2"));
  weft_cert_options *c = client_options(&k, LIST("h2", "http/1.1"));
  only(c, NPN);
  versions(c, WEFT_TLS1_2, WEFT_TLS1_2); /* NPN does not exist in TLS 1.3 */
  loopback_expect(s, c, "h2", WEFT_NEGOTIATED_NPN);
  certs_free(&k);
}
END_TEST

/* ===================================================================================== */
/* The seed: ALPNTest                                                                     */
/* ===================================================================================== */

/* ALPN: the server's order wins. */
START_TEST(test_ALPNRespectsServerPreference) {
  NEED(ALPN);
  certs k;
  certs_init(&k);
  weft_cert_options *s = server_options(&k, LIST("http/1.1", "h2"));
  weft_cert_options *c = client_options(&k, LIST("h2", "http/1.1"));
  only(c, ALPN);
  loopback_expect(s, c, "http/1.1", WEFT_NEGOTIATED_ALPN);
  /* the same at TLS 1.2 */
  s = server_options(&k, LIST("http/1.1", "h2"));
  c = client_options(&k, LIST("h2", "http/1.1"));
  only(c, ALPN);
  versions(c, WEFT_TLS1_2, WEFT_TLS1_2);
  loopback_expect(s, c, "http/1.1", WEFT_NEGOTIATED_ALPN);
  certs_free(&k);
}
END_TEST

/* ===================================================================================== */
/* The seed: NPNAndALPNAbsentTest                                                         */
/* ===================================================================================== */

/* Without both mechanisms, setting a list is refused at configuration time with
 * WEFT_ENOTSUP (the seed's NotImplementedError), on server and client options alike. */
START_TEST(test_NPNAndALPNNotImplemented) {
  if (weft_protocol_negotiation_mechanisms() != 0) {
    printf("SKIP: ALPN/NPN are present in this build\n");
    fflush(stdout);
    return;
  }
  certs k;
  certs_init(&k);
  weft_cert_options *s = server_options(&k, EMPTY);
  weft_cert_options *c = client_options(&k, EMPTY);
  OPT_FAILS(s, weft_cert_options_set_next_protocols(s, LIST("h2", "http/1.1")), WEFT_ENOTSUP);
  OPT_FAILS(c, weft_cert_options_set_next_protocols(c, LIST("h2", "http/1.1")), WEFT_ENOTSUP);
  static const uint8_t wire[] = "\x02h2\x08http/1.1";
  OPT_FAILS(s, weft_cert_options_set_next_protocols_wire(s, wire, sizeof wire - 1), WEFT_ENOTSUP);
  OPT_FAILS(c, weft_cert_options_set_next_protocols_wire(c, wire, sizeof wire - 1), WEFT_ENOTSUP);
  OPT_FAILS(c, weft_cert_options_set_negotiation_mechanisms(c, WEFT_MECH_ALPN), WEFT_ENOTSUP);
  OPT_FAILS(c, weft_cert_options_set_negotiation_mechanisms(c, WEFT_MECH_NPN), WEFT_ENOTSUP);
  /* an empty list is not a request for negotiation: still fine */
  OPT_OK(s, weft_cert_options_set_next_protocols(s, EMPTY));
  OPT_OK(c, weft_cert_options_set_next_protocols_wire(c, NULL, 0));
  /* and the options still make a working mutual-TLS connection, with no protocol */
  loopback_expect(s, c, NULL, WEFT_NEGOTIATED_NONE);
  certs_free(&k);
}
END_TEST

/* ===================================================================================== */
/* Empty lists and the no-overlap policy                                                  */
/* ===================================================================================== */

/* One side lists nothing: no protocol, the connection succeeds, the policy is not consulted
 * (both sides keep the default FAIL policy here). At TLS 1.3 and at TLS 1.2 (both
 * mechanisms). */
START_TEST(test_empty_list_either_side) {
  NEED(ALPN | NPN);
  certs k;
  certs_init(&k);
  for (int v = 0; v < 2; v++) {
    int version = v == 0 ? WEFT_TLS1_3 : WEFT_TLS1_2;
    weft_cert_options *s = server_options(&k, EMPTY);
    weft_cert_options *c = client_options(&k, LIST("h2"));
    versions(c, version, version);
    loopback_expect(s, c, NULL, WEFT_NEGOTIATED_NONE);

    s = server_options(&k, LIST("h2"));
    c = client_options(&k, EMPTY);
    versions(c, version, version);
    loopback_expect(s, c, NULL, WEFT_NEGOTIATED_NONE);

    /* never set at all (rather than set empty) is the same */
    weft_cert_options *bare = NULL;
    OPT_OK(bare, weft_cert_options_new(&bare));
    OPT_OK(bare, weft_cert_options_set_private_key(bare, k.ckey));
    OPT_OK(bare, weft_cert_options_set_certificate(bare, k.ccert));
    OPT_OK(bare, weft_cert_options_add_ca_certificate(bare, k.scert));
    versions(bare, version, version);
    loopback_expect(server_options(&k, LIST("h2")), bare, NULL, WEFT_NEGOTIATED_NONE);
  }
  certs_free(&k);
}
END_TEST

/* No overlap, server policy FAIL (the default): the server sends no_application_protocol (120);
 * the client gets connection_failed and the server handshake_failed, both WEFT_ENOPROTOCOL;
 * nobody builds a protocol. At TLS 1.3 and 1.2. */
START_TEST(test_no_overlap_fail) {
  NEED(ALPN);
  certs k;
  certs_init(&k);
  for (int v = 0; v < 2; v++) {
    int version = v == 0 ? WEFT_TLS1_3 : WEFT_TLS1_2;
    weft_cert_options *s = server_options(&k, LIST("h2"));
    weft_cert_options *c = client_options(&k, LIST("http/1.1"));
    versions(c, version, version);
    pair p;
    pair_init(&p);
    pair_listen(&p, s);
    pair_connect_fails(&p, c, NULL);
    ck_assert_int_eq(p.client.failed, 1);
    ck_assert_int_eq(p.server.handshake_failed, 1);
    ck_assert_int_eq(p.client.built, 0);
    ck_assert_int_eq(p.server.built, 0);
    expect_failure_reason(&p.client.last_failed, "client connection_failed", WEFT_ENOPROTOCOL, 120,
                          0);
    expect_failure_reason(&p.server.last_handshake_failed, "server handshake_failed",
                          WEFT_ENOPROTOCOL, 120, 1);
    ck_assert_uint_eq(weft_reactor_connection_count(p.reactor), 0);
    pair_free(&p);
    weft_cert_options_unref(s);
    weft_cert_options_unref(c);
  }
  certs_free(&k);
}
END_TEST

/* No overlap, server policy CONTINUE: the connection succeeds with no protocol on both sides.
 * At TLS 1.2 with both mechanisms the server also advertises over NPN and the client, now the
 * selecting side, applies its own policy (DESIGN.md section 4, doc/guide.md): FAIL by default,
 * so "continue in every case" needs CONTINUE on both sides. */
START_TEST(test_no_overlap_continue) {
  NEED(ALPN | NPN);
  certs k;
  certs_init(&k);
  /* TLS 1.3: only ALPN, only the server's policy */
  weft_cert_options *s = server_options(&k, LIST("h2"));
  weft_cert_options *c = client_options(&k, LIST("http/1.1"));
  policy(s, WEFT_NO_OVERLAP_CONTINUE);
  loopback_expect(s, c, NULL, WEFT_NEGOTIATED_NONE);

  /* TLS 1.2, CONTINUE on both sides: none on both */
  s = server_options(&k, LIST("h2"));
  c = client_options(&k, LIST("http/1.1"));
  policy(s, WEFT_NO_OVERLAP_CONTINUE);
  policy(c, WEFT_NO_OVERLAP_CONTINUE);
  versions(c, WEFT_TLS1_2, WEFT_TLS1_2);
  loopback_expect(s, c, NULL, WEFT_NEGOTIATED_NONE);

  /* TLS 1.2, CONTINUE on the server only: the client's NPN selection fails the handshake */
  s = server_options(&k, LIST("h2"));
  c = client_options(&k, LIST("http/1.1"));
  policy(s, WEFT_NO_OVERLAP_CONTINUE);
  versions(c, WEFT_TLS1_2, WEFT_TLS1_2);
  pair p;
  pair_init(&p);
  pair_listen(&p, s);
  pair_connect_fails(&p, c, NULL);
  expect_failure_reason(&p.client.last_failed, "client connection_failed", WEFT_ENOPROTOCOL, -1, 0);
  pair_free(&p);
  weft_cert_options_unref(s);
  weft_cert_options_unref(c);
  certs_free(&k);
}
END_TEST

/* NPN without overlap, TLS 1.2, NPN on both ends: the client selects, so its policy decides.
 * FAIL: the handshake fails and the client says WEFT_ENOPROTOCOL (OpenSSL 3.0 sends
 * handshake_failure (40) for a failed NPN selection: RFC 7301's alert 120 is ALPN's).
 * CONTINUE: NPN has no "nothing" answer, so the client puts a protocol on the wire, but both
 * sides report none. */
static int client_ended(void *arg) {
  pair *p = arg;
  return p->client.failed + p->client.lost >= 1;
}

START_TEST(test_npn_no_overlap) {
  NEED(NPN);
  certs k;
  certs_init(&k);
  weft_cert_options *s = server_options(&k, LIST("h2"));
  weft_cert_options *c = client_options(&k, LIST("http/1.1"));
  only(s, NPN);
  only(c, NPN);
  versions(c, WEFT_TLS1_2, WEFT_TLS1_2);
  pair p;
  pair_init(&p);
  pair_listen(&p, s);
  pair_connect_fails(&p, c, NULL);
  ck_assert_int_eq(p.client.failed, 1);
  ck_assert_int_eq(p.server.handshake_failed, 1);
  expect_failure_reason(&p.client.last_failed, "client connection_failed", WEFT_ENOPROTOCOL, 40, 1);
  /* the server only hears an alert; it must not be mistaken for success */
  ck_assert_int_lt(p.server.last_handshake_failed.code, 0);
  ck_assert_int_eq(p.server.last_handshake_failed.tls_alert, 40);
  ck_assert_int_eq(p.server.last_handshake_failed.alert_sent, 0);
  pair_free(&p);
  weft_cert_options_unref(c);

  /* client policy CONTINUE, same server (options are shared by a new listener): the client
   * goes on and selects its own first protocol, which the server never advertised; under the
   * server's policy FAIL the server refuses it once the handshake ends (issue 11, item 12) */
  c = client_options(&k, LIST("http/1.1"));
  only(c, NPN);
  versions(c, WEFT_TLS1_2, WEFT_TLS1_2);
  policy(c, WEFT_NO_OVERLAP_CONTINUE);
  pair_init(&p);
  pair_listen(&p, s);
  pair_connect(&p, c, NULL);
  tu_wait_int(p.reactor, &p.server.handshake_failed, 1, WAIT);
  /* the client may have finished its side of the handshake first: then it loses the
   * connection, else the handshake fails */
  tu_run_until(p.reactor, client_ended, &p, WAIT);
  ck_assert_int_eq(p.server.built, 0);
  ck_assert_msg(p.server.last_handshake_failed.code == WEFT_ENOPROTOCOL, "server: %s (%s)",
                weft_err_name(p.server.last_handshake_failed.code),
                p.server.last_handshake_failed.message);
  pair_free(&p);
  weft_cert_options_unref(c);
  weft_cert_options_unref(s);

  /* both policies CONTINUE: connected with no protocol */
  s = server_options(&k, LIST("h2"));
  only(s, NPN);
  policy(s, WEFT_NO_OVERLAP_CONTINUE);
  c = client_options(&k, LIST("http/1.1"));
  only(c, NPN);
  versions(c, WEFT_TLS1_2, WEFT_TLS1_2);
  policy(c, WEFT_NO_OVERLAP_CONTINUE);
  loopback_expect(s, c, NULL, WEFT_NEGOTIATED_NONE);
  certs_free(&k);
}
END_TEST

/* ===================================================================================== */
/* Names                                                                                  */
/* ===================================================================================== */

/* A 255-byte name (the maximum) negotiates over ALPN and over NPN and arrives intact; the
 * limits are enforced when the list is set. */
START_TEST(test_protocol_name_limits) {
  NEED(ALPN | NPN);
  char name255[256], name256[257];
  for (int i = 0; i < 255; i++)
    name255[i] = (char)('a' + i % 26);
  name255[255] = '\0';
  memcpy(name256, name255, 255);
  name256[255] = 'Z';
  name256[256] = '\0';

  certs k;
  certs_init(&k);
  const char *const list255[] = {name255, "h2"};
  const char *const list255_client[] = {name255};
  loopback_expect(server_options(&k, list255, 2), client_options(&k, list255_client, 1), name255,
                  WEFT_NEGOTIATED_ALPN);
  weft_cert_options *s = server_options(&k, list255, 2);
  weft_cert_options *c = client_options(&k, list255_client, 1);
  only(c, NPN);
  versions(c, WEFT_TLS1_2, WEFT_TLS1_2);
  loopback_expect(s, c, name255, WEFT_NEGOTIATED_NPN);

  weft_cert_options *o = NULL;
  OPT_OK(o, weft_cert_options_new(&o));
  /* the valid list stays in place when a bad one is refused */
  OPT_OK(o, weft_cert_options_set_next_protocols(o, LIST("h2")));
  OPT_FAILS(o, weft_cert_options_set_next_protocols(o, LIST("h2", name256)), WEFT_EINVAL);
  OPT_FAILS(o, weft_cert_options_set_next_protocols(o, LIST("h2", "")), WEFT_EINVAL);
  OPT_FAILS(o, weft_cert_options_set_next_protocols(o, LIST("h2", NULL)), WEFT_EINVAL);
  OPT_FAILS(o, weft_cert_options_set_next_protocols(o, NULL, 2), WEFT_EINVAL);

  /* wire form: the one encoding of [h2, http/1.1] is accepted; malformed ones are not */
  OPT_OK(o,
         weft_cert_options_set_next_protocols_wire(o, (const uint8_t *)"\x02h2\x08http/1.1", 12));
  OPT_FAILS(o, weft_cert_options_set_next_protocols_wire(o, (const uint8_t *)"\x03h2", 3),
            WEFT_EINVAL); /* claims 3 bytes, has 2 */
  OPT_FAILS(o, weft_cert_options_set_next_protocols_wire(o, (const uint8_t *)"\x02h2\x00", 4),
            WEFT_EINVAL); /* an empty name */
  OPT_FAILS(o, weft_cert_options_set_next_protocols_wire(o, (const uint8_t *)"\x02h2\x08http", 7),
            WEFT_EINVAL); /* truncated last name */
  OPT_FAILS(o, weft_cert_options_set_next_protocols_wire(o, NULL, 4), WEFT_EINVAL);

  /* the 65535-byte limit on the encoded list: 255 names of 255 bytes and one of 254 make
   * exactly 65535 bytes (accepted); one byte more is refused */
  size_t count = 256;
  char **names = calloc(count, sizeof *names);
  ck_assert_ptr_nonnull(names);
  for (size_t i = 0; i < count; i++) {
    names[i] = malloc(256);
    ck_assert_ptr_nonnull(names[i]);
    memset(names[i], 'a', 255);
    names[i][0] = (char)('A' + i % 26); /* distinct enough; duplicates are allowed anyway */
    names[i][1] = (char)('A' + i / 26);
    names[i][255] = '\0';
  }
  names[count - 1][254] = '\0'; /* the last one is 254 bytes: 255*256 + 255 = 65535 */
  OPT_OK(o, weft_cert_options_set_next_protocols(o, (const char *const *)names, count));
  names[count - 1][254] = 'a'; /* 65536 */
  OPT_FAILS(o, weft_cert_options_set_next_protocols(o, (const char *const *)names, count),
            WEFT_EINVAL);
  /* the same in wire form */
  size_t wire_len = 65536;
  uint8_t *wire = malloc(wire_len);
  ck_assert_ptr_nonnull(wire);
  size_t at = 0;
  for (size_t i = 0; i < count; i++) {
    size_t n = strlen(names[i]);
    wire[at++] = (uint8_t)n;
    memcpy(wire + at, names[i], n);
    at += n;
  }
  ck_assert_uint_eq(at, 65536);
  OPT_FAILS(o, weft_cert_options_set_next_protocols_wire(o, wire, 65536), WEFT_EINVAL);
  wire[65536 - 256] = 254; /* shorten the last name: 65535 bytes, well formed */
  OPT_OK(o, weft_cert_options_set_next_protocols_wire(o, wire, 65535));
  free(wire);
  for (size_t i = 0; i < count; i++)
    free(names[i]);
  free(names);
  weft_cert_options_unref(o);
  certs_free(&k);
}
END_TEST

/* A name is bytes, not text: the wire form carries a NUL inside a name, and the result is
 * those bytes with their length. */
START_TEST(test_protocol_name_binary) {
  NEED(ALPN);
  static const uint8_t wire[] = "\x04x\0y\xff\x02h2";
  certs k;
  certs_init(&k);
  weft_cert_options *s = server_options(&k, EMPTY);
  weft_cert_options *c = client_options(&k, EMPTY);
  OPT_OK(s, weft_cert_options_set_next_protocols_wire(s, wire, sizeof wire - 1));
  OPT_OK(c, weft_cert_options_set_next_protocols_wire(c, wire, 5)); /* only the first name */
  pair p;
  pair_init(&p);
  pair_listen(&p, s);
  pair_connect_ok(&p, c, NULL);
  pair_close_all(&p);
  check_conn_at(__LINE__, p.server.conns_tail, "server", "x\0y\xff", 4, WEFT_NEGOTIATED_ALPN);
  check_conn_at(__LINE__, p.client.conns_tail, "client", "x\0y\xff", 4, WEFT_NEGOTIATED_ALPN);
  pair_free(&p);
  weft_cert_options_unref(s);
  weft_cert_options_unref(c);
  certs_free(&k);
}
END_TEST

/* ===================================================================================== */
/* TLS versions                                                                           */
/* ===================================================================================== */

static void check_version(pair *p, const char *want) {
  for (int side = 0; side < 2; side++) {
    tu_conn *c = side == 0 ? p->server.conns_tail : p->client.conns_tail;
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_nonnull(c->transport);
    const char *v = weft_transport_tls_version(c->transport);
    ck_assert_msg(v != NULL && strcmp(v, want) == 0, "%s negotiated %s, expected %s",
                  side == 0 ? "server" : "client", v ? v : "(null)", want);
  }
}

/* ALPN gives its result at TLS 1.2 and at TLS 1.3; an NPN-only client at TLS 1.3 gets nothing
 * (NPN does not exist there) and the connection still succeeds. */
START_TEST(test_tls_versions) {
  NEED(ALPN | NPN);
  certs k;
  certs_init(&k);
  static const struct {
    int version;
    unsigned mech;
    const char *tls;
    const char *expect;
    weft_negotiation_mechanism via;
  } cases[] = {
      {WEFT_TLS1_2, ALPN, "TLSv1.2", "h2", WEFT_NEGOTIATED_ALPN},
      {WEFT_TLS1_3, ALPN, "TLSv1.3", "h2", WEFT_NEGOTIATED_ALPN},
      {WEFT_TLS1_2, NPN, "TLSv1.2", "h2", WEFT_NEGOTIATED_NPN},
      {WEFT_TLS1_3, NPN, "TLSv1.3", NULL, WEFT_NEGOTIATED_NONE},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    weft_cert_options *s = server_options(&k, LIST("h2", "http/1.1"));
    weft_cert_options *c = client_options(&k, LIST("h2", "http/1.1"));
    only(c, cases[i].mech);
    versions(c, cases[i].version, cases[i].version);
    pair p;
    pair_init(&p);
    pair_listen(&p, s);
    pair_connect_ok(&p, c, NULL);
    check_version(&p, cases[i].tls);
    check_both(&p, cases[i].expect, cases[i].via);
    pair_close_all(&p);
    check_both(&p, cases[i].expect, cases[i].via);
    pair_free(&p);
    weft_cert_options_unref(s);
    weft_cert_options_unref(c);
  }
  certs_free(&k);
}
END_TEST

/* ===================================================================================== */
/* A shared options object                                                                */
/* ===================================================================================== */

/* One client options object (and one server options object) for five sequential connections:
 * every one, the first included, negotiates h2. (Twisted's bug: the first connection of an
 * options object negotiated nothing.) Once over TLS 1.3 (ALPN), once over TLS 1.2 with an
 * NPN-only client. */
START_TEST(test_shared_options_first_connection) {
  NEED(ALPN | NPN);
  certs k;
  certs_init(&k);
  for (int round = 0; round < 2; round++) {
    weft_cert_options *s = server_options(&k, LIST("h2", "http/1.1"));
    weft_cert_options *c = client_options(&k, LIST("h2", "http/1.1"));
    weft_negotiation_mechanism via = WEFT_NEGOTIATED_ALPN;
    if (round == 1) {
      only(c, NPN);
      versions(c, WEFT_TLS1_2, WEFT_TLS1_2);
      via = WEFT_NEGOTIATED_NPN;
    }
    pair p;
    pair_init(&p);
    pair_listen(&p, s);
    for (int i = 0; i < 5; i++) {
      pair_connect_ok(&p, c, NULL);
      check_both(&p, "h2", via);
      pair_close_all(&p);
      check_both(&p, "h2", via);
      ck_assert_int_eq(p.client.conns_tail->index, i);
    }
    /* the options are frozen by use: a setter now fails */
    OPT_FAILS(c, weft_cert_options_set_next_protocols(c, LIST("http/1.1")), WEFT_EFROZEN);
    pair_free(&p);
    weft_cert_options_unref(s);
    weft_cert_options_unref(c);
  }
  certs_free(&k);
}
END_TEST

/* ===================================================================================== */
/* STARTTLS                                                                               */
/* ===================================================================================== */

/* One side of a STARTTLS connection: upgrades in connection_made, records the protocol in
 * tls_started. */
typedef struct starttls_side {
  weft_cert_options *options;
  weft_tls_role role;
  int start_rc;
  int started;
  int status;
  tu_proto at_started;
} starttls_side;

static void starttls_on_made(tu_conn *c, weft_transport *t) {
  starttls_side *side = c->factory->user;
  side->start_rc = weft_transport_start_tls(t, side->options, side->role, NULL);
}

static void starttls_on_started(tu_conn *c, weft_transport *t, int status) {
  starttls_side *side = c->factory->user;
  side->started++;
  side->status = status;
  tu_proto_read(&side->at_started, t);
}

/* A plain TCP connection upgraded in place on both sides: nothing is negotiated before, the
 * result is final in tls_started and still there in connection_lost. */
START_TEST(test_starttls_negotiates) {
  NEED(ALPN);
  certs k;
  certs_init(&k);
  starttls_side server_side = {.options = server_options(&k, LIST("http/1.1", "h2")),
                               .role = WEFT_TLS_SERVER};
  starttls_side client_side = {.options = client_options(&k, LIST("h2", "http/1.1")),
                               .role = WEFT_TLS_CLIENT};
  pair p;
  pair_init(&p);
  p.server.user = &server_side;
  p.client.user = &client_side;
  p.server.conn_config.on_made = p.client.conn_config.on_made = starttls_on_made;
  p.server.conn_config.on_tls_started = p.client.conn_config.on_tls_started = starttls_on_started;
  p.listener = tu_listen_tcp_local(p.reactor, &p.server, &p.port);
  tu_connect_tcp_local(p.reactor, &p.client, p.port);
  tu_wait_int(p.reactor, &server_side.started, 1, WAIT);
  tu_wait_int(p.reactor, &client_side.started, 1, WAIT);
  ck_assert_int_eq(server_side.start_rc, 0);
  ck_assert_int_eq(client_side.start_rc, 0);
  ck_assert_msg(server_side.status == 0 && client_side.status == 0,
                "tls_started: server %s, client %s", weft_err_name(server_side.status),
                weft_err_name(client_side.status));
  check_proto_at(__LINE__, &server_side.at_started, "server tls_started", "http/1.1", 8,
                 WEFT_NEGOTIATED_ALPN);
  check_proto_at(__LINE__, &client_side.at_started, "client tls_started", "http/1.1", 8,
                 WEFT_NEGOTIATED_ALPN);
  /* before the upgrade there was nothing to negotiate */
  check_proto_at(__LINE__, &p.server.conns->proto_made, "server connection_made (TCP)", NULL, 0,
                 WEFT_NEGOTIATED_NONE);
  check_proto_at(__LINE__, &p.client.conns->proto_made, "client connection_made (TCP)", NULL, 0,
                 WEFT_NEGOTIATED_NONE);
  ck_assert_int_eq(weft_transport_is_tls(p.client.conns->transport), 1);
  pair_close_all(&p);
  check_proto_at(__LINE__, &p.server.conns->proto_lost, "server connection_lost", "http/1.1", 8,
                 WEFT_NEGOTIATED_ALPN);
  check_proto_at(__LINE__, &p.client.conns->proto_lost, "client connection_lost", "http/1.1", 8,
                 WEFT_NEGOTIATED_ALPN);
  pair_free(&p);
  weft_cert_options_unref(server_side.options);
  weft_cert_options_unref(client_side.options);
  certs_free(&k);
}
END_TEST

/* ===================================================================================== */
/* The per-connection selector                                                            */
/* ===================================================================================== */

typedef struct selector_log {
  int calls;
  uint8_t offer[64];
  size_t offer_len;
  char sni[64];
  int sni_null;
} selector_log;

/* Index of NAME in a wire-form OFFER, or -1. */
static int wire_index(const uint8_t *offer, size_t len, const char *name) {
  size_t n = strlen(name);
  int index = 0;
  for (size_t i = 0; i < len; i += 1 + (size_t)offer[i], index++)
    if (offer[i] == n && i + 1 + n <= len && memcmp(offer + i + 1, name, n) == 0)
      return index;
  return -1;
}

/* Picks by SNI: a.example gets http/1.1 (against the server list's order), b.example gets h2,
 * fail.example gets -2, anything else -1. */
static int sni_selector(void *arg, const uint8_t *offer, size_t offer_len,
                        const char *server_name) {
  selector_log *log = arg;
  log->calls++;
  log->offer_len = offer_len;
  memcpy(log->offer, offer, offer_len < sizeof log->offer ? offer_len : sizeof log->offer);
  log->sni_null = server_name == NULL;
  snprintf(log->sni, sizeof log->sni, "%s", server_name ? server_name : "");
  if (server_name == NULL)
    return -1;
  if (strcmp(server_name, "a.example") == 0)
    return wire_index(offer, offer_len, "http/1.1");
  if (strcmp(server_name, "b.example") == 0)
    return wire_index(offer, offer_len, "h2");
  if (strcmp(server_name, "fail.example") == 0)
    return -2;
  return -1;
}

/* Server options with a certificate for a.example, b.example, none.example and fail.example
 * signed by ca1, the list [h2, http/1.1] and the SNI selector. */
static weft_cert_options *sni_server_options(const certs *k, X509 *sni_cert, selector_log *log) {
  weft_cert_options *s = mutual_options(k->skey, sni_cert, k->ccert, LIST("h2", "http/1.1"));
  OPT_OK(s, weft_cert_options_set_protocol_selector(s, sni_selector, log));
  return s;
}

static void check_offer(const selector_log *log, const char *sni) {
  static const uint8_t offer[] = "\x02h2\x08http/1.1";
  ck_assert_msg(
      log->offer_len == sizeof offer - 1 && memcmp(log->offer, offer, sizeof offer - 1) == 0,
      "the selector got an offer of %zu bytes, not the client's list in wire form", log->offer_len);
  ck_assert_msg(!log->sni_null && strcmp(log->sni, sni) == 0,
                "the selector got server name \"%s\"%s, expected \"%s\"", log->sni,
                log->sni_null ? " (NULL)" : "", sni);
}

START_TEST(test_protocol_selector_sni) {
  NEED(ALPN);
  certs k;
  certs_init(&k);
  static const char *const names[] = {"a.example", "b.example", "none.example", "fail.example"};
  X509 *sni_cert = make_cert(&(weft_cert_spec){.common_name = "server",
                                               .organization = "Server Test Certificate",
                                               .dns_names = names,
                                               .dns_count = 4},
                             k.skey, k.ca1_key, k.ca1);
  /* the client trusts the two CAs of the seed; only ca1 signed anything */
  weft_cert_options *c = mutual_options(k.ckey, k.ccert, k.ca1, LIST("h2", "http/1.1"));
  OPT_OK(c, weft_cert_options_add_ca_certificate(c, k.ca2));

  selector_log log;
  memset(&log, 0, sizeof log);
  weft_cert_options *s = sni_server_options(&k, sni_cert, &log);
  pair p;
  pair_init(&p);
  pair_listen(&p, s);

  /* a.example: the selector overrides the server list's order */
  pair_connect_ok(&p, c, "a.example");
  ck_assert_int_eq(log.calls, 1);
  check_offer(&log, "a.example");
  check_both(&p, "http/1.1", WEFT_NEGOTIATED_ALPN);
  pair_close_all(&p);
  check_both(&p, "http/1.1", WEFT_NEGOTIATED_ALPN);

  /* b.example */
  pair_connect_ok(&p, c, "b.example");
  ck_assert_int_eq(log.calls, 2);
  check_offer(&log, "b.example");
  check_both(&p, "h2", WEFT_NEGOTIATED_ALPN);
  pair_close_all(&p);

  /* -1 with the default policy FAIL: no_application_protocol */
  pair_connect_fails(&p, c, "none.example");
  ck_assert_int_eq(log.calls, 3);
  check_offer(&log, "none.example");
  expect_failure_reason(&p.client.last_failed, "client connection_failed", WEFT_ENOPROTOCOL, 120,
                        0);
  expect_failure_reason(&p.server.last_handshake_failed, "server handshake_failed",
                        WEFT_ENOPROTOCOL, 120, 1);

  /* -2 fails the same way */
  pair_connect_fails(&p, c, "fail.example");
  ck_assert_int_eq(log.calls, 4);
  expect_failure_reason(&p.client.last_failed, "client connection_failed", WEFT_ENOPROTOCOL, 120,
                        0);
  expect_failure_reason(&p.server.last_handshake_failed, "server handshake_failed",
                        WEFT_ENOPROTOCOL, 120, 1);
  pair_free(&p);
  weft_cert_options_unref(s);

  /* with policy CONTINUE: -1 goes on with no protocol, -2 still fails */
  memset(&log, 0, sizeof log);
  s = sni_server_options(&k, sni_cert, &log);
  policy(s, WEFT_NO_OVERLAP_CONTINUE);
  pair_init(&p);
  pair_listen(&p, s);
  pair_connect_ok(&p, c, "none.example");
  ck_assert_int_eq(log.calls, 1);
  check_both(&p, NULL, WEFT_NEGOTIATED_NONE);
  pair_close_all(&p);
  check_both(&p, NULL, WEFT_NEGOTIATED_NONE);
  pair_connect_fails(&p, c, "fail.example");
  ck_assert_int_eq(log.calls, 2);
  check_offer(&log, "fail.example");
  expect_failure_reason(&p.client.last_failed, "client connection_failed", WEFT_ENOPROTOCOL, 120,
                        0);
  expect_failure_reason(&p.server.last_handshake_failed, "server handshake_failed",
                        WEFT_ENOPROTOCOL, 120, 1);
  pair_free(&p);
  weft_cert_options_unref(s);
  weft_cert_options_unref(c);
  X509_free(sni_cert);
  certs_free(&k);
}
END_TEST

/* ===================================================================================== */
/* The dispatch factory                                                                   */
/* ===================================================================================== */

#ifdef WEFT_HAVE_DISPATCH
typedef struct dispatch_fixture {
  tu_factory h2, h1, fallback;
} dispatch_fixture;

/* Starts a client connection listing CLIENT_LIST (COUNT N) with its own options. */
static void dispatch_connect(pair *p, const certs *k, const char *const *client_list, size_t n) {
  weft_cert_options *c = client_options(k, client_list, n);
  pair_connect(p, c, NULL);
  weft_cert_options_unref(c);
}

static int dispatch_total(const dispatch_fixture *d) {
  return d->h2.built + d->h1.built + d->fallback.built;
}

typedef struct dispatch_wait {
  pair *p;
  dispatch_fixture *d;
  int builds;
} dispatch_wait;

static int dispatch_reached(void *arg) {
  dispatch_wait *w = arg;
  return dispatch_total(w->d) >= w->builds &&
         w->p->client.made + w->p->client.failed >= w->p->attempts;
}

START_TEST(test_dispatch_factory) {
  NEED(ALPN);
  certs k;
  certs_init(&k);
  dispatch_fixture d;
  tu_factory_init(&d.h2);
  tu_factory_init(&d.h1);
  tu_factory_init(&d.fallback);

  /* construction errors */
  weft_factory *df = (weft_factory *)&d; /* any non-NULL value, to see it reset */
  ck_assert_int_eq(weft_dispatch_factory_new(NULL, 1, NULL, &df), WEFT_EINVAL);
  ck_assert_ptr_null(df);
  weft_dispatch_entry bad[] = {{"h2", NULL}};
  ck_assert_int_eq(weft_dispatch_factory_new(bad, 1, NULL, &df), WEFT_EINVAL);
  weft_dispatch_entry empty_name[] = {{"", &d.h2.base}};
  ck_assert_int_eq(weft_dispatch_factory_new(empty_name, 1, NULL, &df), WEFT_EINVAL);
  ck_assert_int_eq(weft_dispatch_factory_new(NULL, 0, NULL, NULL), WEFT_EINVAL);

  /* h2 and http/1.1 have routes; h2c (a prefix trap for "h2") and spdy/3 do not */
  weft_dispatch_entry routes[] = {{"h2", &d.h2.base}, {"http/1.1", &d.h1.base}};
  ck_assert_int_eq(weft_dispatch_factory_new(routes, 2, &d.fallback.base, &df), 0);
  ck_assert_ptr_nonnull(df);
  weft_cert_options *s = server_options(&k, LIST("h2", "http/1.1", "h2c", "spdy/3"));
  policy(s, WEFT_NO_OVERLAP_CONTINUE);
  pair p;
  pair_init(&p);
  p.listen_factory = df;
  pair_listen(&p, s);

  static const struct {
    const char *offer; /* NULL: an empty list */
    int route;         /* 0 h2, 1 http/1.1, 2 fallback */
    const char *expect;
  } cases[] = {
      {"h2", 0, "h2"},         {"http/1.1", 1, "http/1.1"}, {NULL, 2, NULL},
      {"spdy/3", 2, "spdy/3"}, {"h2c", 2, "h2c"},           {"quic", 2, NULL},
  };
  tu_factory *targets[] = {&d.h2, &d.h1, &d.fallback};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int before[3] = {d.h2.built, d.h1.built, d.fallback.built};
    if (cases[i].offer)
      dispatch_connect(&p, &k, (const char *const[]){cases[i].offer}, 1);
    else
      dispatch_connect(&p, &k, NULL, 0);
    dispatch_wait w = {&p, &d, dispatch_total(&d) + 1};
    tu_run_until(p.reactor, dispatch_reached, &w, WAIT);
    for (int t = 0; t < 3; t++)
      ck_assert_msg(targets[t]->built == before[t] + (t == cases[i].route),
                    "offer %s: factory %d built %d (before %d), expected route %d",
                    cases[i].offer ? cases[i].offer : "(none)", t, targets[t]->built, before[t],
                    cases[i].route);
    tu_conn *sc = targets[cases[i].route]->conns_tail;
    check_conn(sc, "server", cases[i].expect,
               cases[i].expect ? WEFT_NEGOTIATED_ALPN : WEFT_NEGOTIATED_NONE);
    check_conn(p.client.conns_tail, "client", cases[i].expect,
               cases[i].expect ? WEFT_NEGOTIATED_ALPN : WEFT_NEGOTIATED_NONE);
    ck_assert_int_eq(weft_transport_lose_connection(p.client.conns_tail->transport), 0);
    tu_wait_int(p.reactor, &sc->lost, 1, WAIT);
    tu_wait_int(p.reactor, &p.client.conns_tail->lost, 1, WAIT);
  }
  weft_listener_stop(p.listener);
  p.listener = NULL;

  /* handshake failures are passed to the fallback: a server policy FAIL listener */
  weft_cert_options *s_fail = server_options(&k, LIST("h2"));
  pair_listen(&p, s_fail);
  dispatch_connect(&p, &k, LIST("http/1.1"));
  tu_wait_int(p.reactor, &d.fallback.handshake_failed, 1, WAIT);
  tu_wait_int(p.reactor, &p.client.failed, 1, WAIT);
  expect_failure_reason(&d.fallback.last_handshake_failed, "fallback handshake_failed",
                        WEFT_ENOPROTOCOL, 120, 1);
  weft_listener_stop(p.listener);
  p.listener = NULL;

  /* no fallback: what has no route is refused (the client sees a connection that ends) */
  weft_factory *strict = NULL;
  ck_assert_int_eq(weft_dispatch_factory_new(routes, 2, NULL, &strict), 0);
  p.listen_factory = strict;
  pair_listen(&p, s);
  int h2_before = d.h2.built, h1_before = d.h1.built, fb_before = d.fallback.built;
  int lost_before = p.client.lost;
  dispatch_connect(&p, &k, LIST("spdy/3"));
  tu_wait_int(p.reactor, &p.client.lost, lost_before + 1, WAIT);
  check_conn(p.client.conns_tail, "client", "spdy/3", WEFT_NEGOTIATED_ALPN);
  dispatch_connect(&p, &k, EMPTY);
  tu_wait_int(p.reactor, &p.client.lost, lost_before + 2, WAIT);
  check_conn(p.client.conns_tail, "client", NULL, WEFT_NEGOTIATED_NONE);
  /* and a routed protocol still goes through */
  dispatch_connect(&p, &k, LIST("h2"));
  dispatch_wait w = {&p, &d, dispatch_total(&d) + 1};
  tu_run_until(p.reactor, dispatch_reached, &w, WAIT);
  ck_assert_int_eq(d.h2.built, h2_before + 1);
  ck_assert_int_eq(d.h1.built, h1_before);
  ck_assert_int_eq(d.fallback.built, fb_before);
  ck_assert_int_eq(weft_transport_lose_connection(p.client.conns_tail->transport), 0);
  tu_wait_int(p.reactor, &d.h2.conns_tail->lost, 1, WAIT);

  tu_factory_check(&d.h2);
  tu_factory_check(&d.h1);
  tu_factory_check(&d.fallback);
  tu_factory_check(&p.client);
  weft_listener_stop(p.listener);
  p.listener = NULL;
  weft_reactor_free(p.reactor);
  p.reactor = NULL;
  tu_factory_cleanup(&p.client);
  tu_factory_cleanup(&d.h2);
  tu_factory_cleanup(&d.h1);
  tu_factory_cleanup(&d.fallback);
  weft_dispatch_factory_free(df);
  weft_dispatch_factory_free(strict);
  weft_dispatch_factory_free(NULL);
  weft_cert_options_unref(s);
  weft_cert_options_unref(s_fail);
  certs_free(&k);
}
END_TEST
#endif /* WEFT_HAVE_DISPATCH */

/* ===================================================================================== */
/* Mechanism reporting                                                                    */
/* ===================================================================================== */

START_TEST(test_mechanisms_reporting) {
  unsigned have = weft_protocol_negotiation_mechanisms();
  ck_assert_msg(have == expected_mechanisms(),
                "weft_protocol_negotiation_mechanisms() = 0x%x, but this build was configured "
                "for 0x%x",
                have, expected_mechanisms());
#if !defined(WEFT_DISABLE_ALPN) && !defined(WEFT_DISABLE_NPN)
  /* the normal build on Debian 12's OpenSSL 3.0 has both */
  ck_assert_uint_eq(have, WEFT_MECH_ALPN | WEFT_MECH_NPN);
#endif
  weft_cert_options *o = NULL;
  OPT_OK(o, weft_cert_options_new(&o));
  OPT_FAILS(o, weft_cert_options_set_negotiation_mechanisms(o, 0), WEFT_EINVAL);
  OPT_FAILS(o, weft_cert_options_set_negotiation_mechanisms(o, 0x4), WEFT_EINVAL);
  OPT_FAILS(o, weft_cert_options_set_negotiation_mechanisms(o, WEFT_MECH_ALPN | 0x80000000u),
            WEFT_EINVAL);
  OPT_FAILS(o, weft_cert_options_set_no_overlap_policy(o, (weft_no_overlap_policy)7), WEFT_EINVAL);
  for (unsigned mask = 1; mask <= 3; mask++) {
    int rc = weft_cert_options_set_negotiation_mechanisms(o, mask);
    if ((have & mask) == mask)
      ck_assert_msg(rc == 0, "mechanisms 0x%x: %s (%s)", mask, weft_err_name(rc),
                    weft_cert_options_last_error(o));
    else
      OPT_FAILS(o, weft_cert_options_set_negotiation_mechanisms(o, mask), WEFT_ENOTSUP);
  }
  weft_cert_options_unref(o);
}
END_TEST

/* ===================================================================================== */
/* Interoperability with openssl s_client / s_server                                      */
/* ===================================================================================== */

/* The path of PROGRAM on PATH, or NULL. Static buffer. */
static const char *find_program(const char *program) {
  static char path[4096];
  const char *env = getenv("PATH");
  if (env == NULL)
    env = "/usr/bin:/bin";
  while (*env) {
    size_t n = strcspn(env, ":");
    if (n > 0 && n + strlen(program) + 2 < sizeof path) {
      snprintf(path, sizeof path, "%.*s/%s", (int)n, env, program);
      if (access(path, X_OK) == 0)
        return path;
    }
    env += n;
    if (*env == ':')
      env++;
  }
  return NULL;
}

/* A PEM file for openssl. Returns the malloc'd path; the caller unlinks and frees it. */
static char *write_pem(void *object, int is_key) {
  char *pem = NULL;
  size_t len = 0;
  int rc = is_key ? weft_key_to_pem(object, &pem, &len) : weft_cert_to_pem(object, &pem, &len);
  ck_assert_msg(rc == 0, "PEM encoding: %s", weft_err_name(rc));
  const char *dir = getenv("TMPDIR");
  char *path = NULL;
  ck_assert_int_ge(asprintf(&path, "%s/weft-alpn-XXXXXX", dir && *dir ? dir : "/tmp"), 0);
  int fd = mkstemp(path);
  ck_assert_msg(fd >= 0, "mkstemp(%s): %s", path, strerror(errno));
  ck_assert_msg(write(fd, pem, len) == (ssize_t)len, "writing %s: %s", path, strerror(errno));
  close(fd);
  free(pem);
  return path;
}

static void remove_file(char *path) {
  if (path) {
    unlink(path);
    free(path);
  }
}

/* A child process whose stdout and stderr are read by the reactor into OUT. */
typedef struct child {
  pid_t pid;
  int in_fd;  /* the child's stdin (write end), -1 once closed */
  int out_fd; /* the child's stdout+stderr (read end) */
  struct event *ev;
  char out[65536];
  size_t out_len;
  int eof;
} child;

static void child_on_output(evutil_socket_t fd, short what, void *arg) {
  child *c = arg;
  (void)what;
  for (;;) {
    size_t room = sizeof c->out - 1 - c->out_len;
    char scratch[4096];
    ssize_t n = read(fd, room ? c->out + c->out_len : scratch, room ? room : sizeof scratch);
    if (n > 0) {
      if (room)
        c->out_len += (size_t)n;
      c->out[c->out_len] = '\0';
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      c->eof = 1;
      event_del(c->ev);
    }
    return;
  }
}

/* Starts ARGV (argv[0] a full path) with stdin, stdout and stderr on pipes. */
static void child_start(child *c, weft_reactor *reactor, char *const argv[]) {
  int in[2], out[2];
  memset(c, 0, sizeof *c);
  ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    /* die with the test, even if it fails before it could kill us */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_DFL); /* the reactor ignores it; openssl should not inherit that */
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    execv(argv[0], argv);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  c->pid = pid;
  c->in_fd = in[1];
  c->out_fd = out[0];
  evutil_make_socket_nonblocking(c->out_fd);
  c->ev = event_new(weft_reactor_event_base(reactor), c->out_fd, EV_READ | EV_PERSIST,
                    child_on_output, c);
  ck_assert_ptr_nonnull(c->ev);
  ck_assert_int_eq(event_add(c->ev, NULL), 0);
}

static void child_close_stdin(child *c) {
  if (c->in_fd >= 0)
    close(c->in_fd);
  c->in_fd = -1;
}

/* Kills the child if it still runs and reaps it (SIGKILL cannot be ignored, so the blocking
 * waitpid is bounded). Returns its wait status. */
static int child_end(child *c) {
  int status = 0;
  child_close_stdin(c);
  if (c->ev) {
    event_free(c->ev);
    c->ev = NULL;
  }
  if (c->out_fd >= 0)
    close(c->out_fd);
  c->out_fd = -1;
  if (c->pid > 0) {
    kill(c->pid, SIGKILL);
    while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
      ;
    c->pid = 0;
  }
  return status;
}

typedef struct output_wait {
  child *c;
  const char *text;
} output_wait;

static int output_has(void *arg) {
  output_wait *w = arg;
  return strstr(w->c->out, w->text) != NULL || w->c->eof;
}

/* Runs the reactor until the child printed TEXT (or closed its output); fails if it did not. */
static void child_expect(weft_reactor *reactor, child *c, const char *text) {
  output_wait w = {c, text};
  tu_run_until(reactor, output_has, &w, WAIT);
  ck_assert_msg(strstr(c->out, text) != NULL, "openssl did not print \"%s\"; its output:\n%s", text,
                c->out);
}

static int line_ended(void *arg) {
  output_wait *w = arg;
  const char *at = strstr(w->c->out, w->text);
  return (at != NULL && strchr(at, '\n') != NULL) || w->c->eof;
}

/* Runs the reactor until the line holding TEXT is complete. */
static void child_expect_line_end(weft_reactor *reactor, child *c, const char *text) {
  output_wait w = {c, text};
  tu_run_until(reactor, line_ended, &w, WAIT);
  const char *at = strstr(c->out, text);
  ck_assert_msg(at != NULL && strchr(at, '\n') != NULL,
                "openssl did not finish the line \"%s...\"; its output:\n%s", text, c->out);
}

/* The client side of every attempt has an outcome. */
static int client_settled(void *arg) {
  pair *p = arg;
  return p->client.made + p->client.failed >= p->attempts;
}

typedef struct s_client_wait {
  child *c;
  pair *p;
} s_client_wait;

/* s_client exited (its output ended) and the server saw the connection end. */
static int s_client_done(void *arg) {
  s_client_wait *w = arg;
  return w->c->eof && w->p->server.made >= 1 && w->p->server.lost == w->p->server.made;
}

/* weft's server (mutual TLS, list [h2, http/1.1]) against openssl s_client with EXTRA args. */
static void interop_s_client(const char *openssl, const certs *k, const char *const *extra,
                             size_t nextra, const char *expect_line, const char *expect_proto,
                             weft_negotiation_mechanism via) {
  char *server_cert = write_pem(k->scert, 0);
  char *client_cert = write_pem(k->ccert, 0);
  char *client_key = write_pem(k->ckey, 1);
  weft_cert_options *s = server_options(k, LIST("h2", "http/1.1"));
  pair p;
  pair_init(&p);
  pair_listen(&p, s);
  char connect[64];
  snprintf(connect, sizeof connect, "127.0.0.1:%d", p.port);
  const char *argv[32];
  size_t n = 0;
  argv[n++] = openssl;
  argv[n++] = "s_client";
  argv[n++] = "-connect";
  argv[n++] = connect;
  argv[n++] = "-CAfile";
  argv[n++] = server_cert;
  argv[n++] = "-verify_return_error";
  argv[n++] = "-verify_ip";
  argv[n++] = "127.0.0.1";
  argv[n++] = "-cert";
  argv[n++] = client_cert;
  argv[n++] = "-key";
  argv[n++] = client_key;
  for (size_t i = 0; i < nextra; i++)
    argv[n++] = extra[i];
  argv[n] = NULL;

  child c;
  child_start(&c, p.reactor, (char *const *)argv);
  /* "Q" makes s_client close the connection (close_notify) and exit once it is connected */
  ck_assert_int_eq(write(c.in_fd, "Q\n", 2), 2);
  child_close_stdin(&c);
  s_client_wait w = {&c, &p};
  tu_run_until(p.reactor, s_client_done, &w, WAIT);
  ck_assert_msg(strstr(c.out, expect_line) != NULL,
                "s_client did not print \"%s\"; its output:\n%s", expect_line, c.out);
  ck_assert_msg(strstr(c.out, "Verify return code: 0 (ok)") != NULL,
                "s_client did not verify weft's certificate; its output:\n%s", c.out);
  ck_assert_int_eq(p.server.made, 1);
  check_conn(p.server.conns_tail, "server", expect_proto, via);
  int status = child_end(&c);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                "s_client ended with status 0x%x; its output:\n%s", status, c.out);
  pair_free(&p);
  weft_cert_options_unref(s);
  remove_file(server_cert);
  remove_file(client_cert);
  remove_file(client_key);
}

/* weft's client (mutual TLS, list [h2, http/1.1]) against openssl s_server with EXTRA args. */
static void interop_s_server(const char *openssl, const certs *k, const char *const *extra,
                             size_t nextra, const char *expect_server_line,
                             const char *expect_proto, weft_negotiation_mechanism via) {
  char *server_cert = write_pem(k->scert, 0);
  char *server_key = write_pem(k->skey, 1);
  char *client_cert = write_pem(k->ccert, 0);
  pair p;
  pair_init(&p);
  const char *argv[32];
  size_t n = 0;
  argv[n++] = openssl;
  argv[n++] = "s_server";
  argv[n++] = "-accept";
  argv[n++] = "127.0.0.1:0";
  argv[n++] = "-naccept";
  argv[n++] = "1";
  argv[n++] = "-cert";
  argv[n++] = server_cert;
  argv[n++] = "-key";
  argv[n++] = server_key;
  argv[n++] = "-Verify";
  argv[n++] = "1";
  argv[n++] = "-CAfile";
  argv[n++] = client_cert;
  argv[n++] = "-verify_return_error";
  for (size_t i = 0; i < nextra; i++)
    argv[n++] = extra[i];
  argv[n] = NULL;

  child c;
  child_start(&c, p.reactor, (char *const *)argv); /* stdin stays open: s_server keeps going */
  /* "ACCEPT 127.0.0.1:PORT" once it listens (OpenSSL 3.0 prints the port picked for 0) */
  child_expect(p.reactor, &c, "ACCEPT 127.0.0.1:");
  child_expect_line_end(p.reactor, &c, "ACCEPT 127.0.0.1:");
  p.port = atoi(strstr(c.out, "ACCEPT 127.0.0.1:") + strlen("ACCEPT 127.0.0.1:"));
  ck_assert_msg(p.port > 0 && p.port < 65536, "no port in s_server's output:\n%s", c.out);

  weft_cert_options *co = client_options(k, LIST("h2", "http/1.1"));
  pair_connect(&p, co, NULL);
  tu_run_until(p.reactor, client_settled, &p, WAIT);
  ck_assert_msg(p.client.failed == 0, "weft's client failed: %s (%s); s_server's output:\n%s",
                weft_err_name(p.client.last_failed.code), p.client.last_failed.message, c.out);
  check_conn(p.client.conns_tail, "client", expect_proto, via);
  child_expect(p.reactor, &c, expect_server_line);
  pair_close_all(&p);
  check_conn(p.client.conns_tail, "client", expect_proto, via);
  child_end(&c);
  pair_free(&p);
  weft_cert_options_unref(co);
  remove_file(server_cert);
  remove_file(server_key);
  remove_file(client_cert);
}

/* weft against openssl s_client and s_server, both directions, ALPN and NPN. OpenSSL 3.0's
 * output lines (checked by hand): s_client prints "ALPN protocol: NAME" and
 * "Next protocol: (1) NAME" (1 is OPENSSL_NPN_NEGOTIATED); s_server prints
 * "ALPN protocols selected: NAME" and "NEXTPROTO is NAME". */
START_TEST(test_interop_openssl) {
  NEED(ALPN | NPN);
  const char *found = find_program("openssl");
  if (found == NULL) {
    printf("SKIP: test_interop_openssl: no openssl binary on PATH\n");
    fflush(stdout);
    return;
  }
  char *openssl = strdup(found);
  ck_assert_ptr_nonnull(openssl);
  certs k;
  certs_init(&k);

  /* weft server [h2, http/1.1] */
  interop_s_client(openssl, &k, (const char *const[]){"-alpn", "h2,http/1.1"}, 2,
                   "ALPN protocol: h2\n", "h2", WEFT_NEGOTIATED_ALPN);
  /* the server's order wins over ALPN even when s_client prefers http/1.1 */
  interop_s_client(openssl, &k, (const char *const[]){"-alpn", "http/1.1,h2"}, 2,
                   "ALPN protocol: h2\n", "h2", WEFT_NEGOTIATED_ALPN);
  interop_s_client(openssl, &k, (const char *const[]){"-nextprotoneg", "h2,http/1.1", "-tls1_2"}, 3,
                   "Next protocol: (1) h2\n", "h2", WEFT_NEGOTIATED_NPN);

  /* weft client [h2, http/1.1]: over ALPN s_server's order wins, over NPN weft's */
  interop_s_server(openssl, &k, (const char *const[]){"-alpn", "http/1.1,h2"}, 2,
                   "ALPN protocols selected: http/1.1", "http/1.1", WEFT_NEGOTIATED_ALPN);
  interop_s_server(openssl, &k, (const char *const[]){"-nextprotoneg", "http/1.1,h2", "-tls1_2"}, 3,
                   "NEXTPROTO is h2", "h2", WEFT_NEGOTIATED_NPN);
  certs_free(&k);
  free(openssl);
}
END_TEST

/* ===================================================================================== */

static Suite *alpn_suite(void) {
  Suite *s = suite_create("alpn");
  struct {
    const char *name;
    const TTest *tests[8];
  } groups[] = {
      {"seed",
       {test_NPNAndALPNSuccess, test_NPNAndALPNDifferent, test_NPNAndALPNFailure,
        test_NPNRespectsClientPreference, test_ALPNRespectsServerPreference,
        test_NPNAndALPNNotImplemented}},
      {"policy",
       {test_empty_list_either_side, test_no_overlap_fail, test_no_overlap_continue,
        test_npn_no_overlap}},
      {"names", {test_protocol_name_limits, test_protocol_name_binary}},
      {"versions",
       {test_tls_versions, test_shared_options_first_connection, test_starttls_negotiates}},
      {"selector", {test_protocol_selector_sni}},
#ifdef WEFT_HAVE_DISPATCH
      {"dispatch", {test_dispatch_factory}},
#endif
      {"mechanisms", {test_mechanisms_reporting}},
      {"interop", {test_interop_openssl}},
  };
  for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
    TCase *tc = tcase_create(groups[g].name);
    tcase_set_timeout(tc, 60);
    for (size_t t = 0; t < 8 && groups[g].tests[t]; t++)
      tcase_add_test(tc, groups[g].tests[t]);
    suite_add_tcase(s, tc);
  }
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(alpn_suite());
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
