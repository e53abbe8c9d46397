/* tests/check_isolation.c: session isolation, identity checks and policy enforcement (issue 11,
 * items 1, 2, 3, 12 and the ticket key FIFO).
 *
 * A session resumes only under the verification policy and for the identity that created it;
 * every client checks an identity by default; an NPN server holds to its no-overlap policy.
 * Each case either refuses to resume (weft_transport_tls_session_reused() == 0 and the full
 * verification result) or resumes where a full handshake would verify the same thing, and
 * each has a positive control (the same listener and options DO resume), so that a test that
 * resumes nothing by accident cannot pass.
 *
 *  - server policies: two listeners sharing a ticket key file, one after the other on one port
 *    (a load balancer's view), at TLS 1.2 and 1.3: a ticket from a listener that asks no client
 *    certificate, or trusts another CA, is not resumed on one that requires a certificate from
 *    its CA (item 1); listeners that differ only in their protocol lists do share sessions;
 *  - client cache keys: name vs other name vs IP literal, STARTTLS (peer IP checked) vs
 *    connect, other protocol lists; a STARTTLS upgrade without a name followed by
 *    weft_connect_ssl("127.0.0.1") against a certificate for evil.example (item 2);
 *  - identity by default: STARTTLS with no name checks the peer's IP, the explicit skip option
 *    (weft_cert_options_set_verify_identity 0) keeps chain verification and caches nothing,
 *    connect_ssl and a reconnector to an IP literal check it, a client with no address and no
 *    name is refused (item 3);
 *  - NPN: a client selecting a protocol the server never advertised is refused under
 *    WEFT_NO_OVERLAP_FAIL before build_protocol, with a weft client and with
 *    `openssl s_client -tls1_2 -nextprotoneg spdy/3` (item 12);
 *  - a ticket key "file" that is a FIFO is refused at once.
 *
 * Real sockets on 127.0.0.1, real handshakes, certificates made in the test; no sleeps. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "testutil.h"
#include "tlsutil.h"

#include "tls_options-internal.h" /* weft__tls_cached_sessions */
#include "tls_ssl-internal.h"     /* weft__tls_new_ssl */

#define WAIT 20.0 /* generous: valgrind slows handshakes down a lot */

static int version_of(int i) {
  return i % 2 == 0 ? WEFT_TLS1_2 : WEFT_TLS1_3;
}

/* --- A world: reactor, PKI, factories, options to release ---------------------------------- */

typedef struct world {
  weft_reactor *r;
  tu_pki pki;
  tu_factory server, client;
  weft_cert_options *opts[16];
  int nopts;
  int fds;
  long allocs;
  X509 *evil_cert;  /* CA-signed, DNS evil.example only (no IP) */
  X509 *rogue_cert; /* client certificate signed by the other CA */
  EVP_PKEY *rogue_key;
} world;

static void world_init(world *w) {
  memset(w, 0, sizeof *w);
  w->fds = tu_count_fds();
  w->allocs = weft_allocations_outstanding();
  w->r = tu_reactor_new();
  tu_pki_init(&w->pki);
  tu_factory_init(&w->server);
  tu_factory_init(&w->client);
  w->server.conn_config.echo = 1;
  w->evil_cert = tu_make_cert(w->pki.server_key, w->pki.ca_key, w->pki.ca_cert, "evil",
                              "evil.example", NULL, 0, 0);
  w->rogue_key = tu_make_key();
  w->rogue_cert = tu_make_cert(w->rogue_key, w->pki.other_ca_key, w->pki.other_ca_cert,
                               "rogue client", NULL, NULL, 0, 0);
}

static weft_cert_options *keep(world *w, weft_cert_options *o) {
  ck_assert_int_lt(w->nopts, (int)(sizeof w->opts / sizeof w->opts[0]));
  w->opts[w->nopts++] = o;
  return o;
}

static void world_free(world *w) {
  tu_factory_check(&w->server);
  tu_factory_check(&w->client);
  weft_reactor_free(w->r);
  tu_factory_check(&w->server);
  tu_factory_check(&w->client);
  tu_factory_cleanup(&w->server);
  tu_factory_cleanup(&w->client);
  for (int i = 0; i < w->nopts; i++)
    weft_cert_options_unref(w->opts[i]);
  X509_free(w->evil_cert);
  X509_free(w->rogue_cert);
  EVP_PKEY_free(w->rogue_key);
  tu_pki_free(&w->pki);
  ck_assert_int_eq(weft_allocations_outstanding(), w->allocs);
  ck_assert_int_eq(tu_count_fds(), w->fds);
}

static void versions(weft_cert_options *o, int v) {
  tu_check_opt(o, weft_cert_options_set_tls_versions(o, v, v));
}

/* Client options trusting the PKI's CA at version V, with no client certificate. */
static weft_cert_options *client_opts(world *w, int v) {
  weft_cert_options *o = keep(w, tu_client_options(&w->pki));
  versions(o, v);
  return o;
}

/* Server options with the PKI's server identity at V, tickets only (sessions can then cross
 * listeners only through the shared ticket key). */
static weft_cert_options *ticket_server(world *w, int v, const char *key_path) {
  weft_cert_options *o = keep(w, tu_server_options(&w->pki));
  versions(o, v);
  tu_check_opt(o, weft_cert_options_set_session_cache(o, 0));
  tu_check_opt(o, weft_cert_options_add_ticket_key_file(o, key_path));
  return o;
}

static weft_listener *listen_on(world *w, weft_cert_options *o, int port, int *bound) {
  weft_listener *l = NULL;
  int rc = weft_listen_ssl(w->r, "127.0.0.1", port, &w->server.base, o, &l);
  ck_assert_msg(rc == 0, "weft_listen_ssl(127.0.0.1:%d): %s (%s)", port, weft_err_name(rc),
                weft_cert_options_last_error(o));
  if (bound != NULL)
    *bound = weft_listener_port(l);
  return l;
}

static char *random_key_file(void) {
  uint8_t key[WEFT_TICKET_KEY_SIZE];
  ck_assert_int_eq(RAND_bytes(key, sizeof key), 1);
  return tu_write_temp_file(key, sizeof key);
}

/* --- One TLS connection, whatever its outcome ---------------------------------------------- */

typedef struct result {
  int client_ok, client_code; /* client made (1), or its connection_failed code */
  int server_ok, server_code; /* server built, or its handshake_failed code */
  int client_reused, server_reused;
  int server_peer_cert; /* the server reports a peer certificate */
  long server_verify;   /* the server's SSL_get_verify_result */
  char server_msg[TU_MSG_MAX], client_msg[TU_MSG_MAX];
} result;

typedef struct waiter {
  world *w;
  int c0, s0; /* counts before the attempt */
} waiter;

static int settled(void *arg) {
  waiter *x = arg;
  return x->w->client.made + x->w->client.failed > x->c0 &&
         x->w->server.built + x->w->server.handshake_failed > x->s0;
}

/* Connects to 127.0.0.1:PORT with COPTS and NAME, waits for both ends' outcome, exchanges a
 * line when both are up (TLS 1.3 tickets have arrived by then), closes cleanly, waits until
 * both ends are gone, and reaps them. */
static result attempt(world *w, int port, weft_cert_options *copts, const char *name) {
  result res;
  memset(&res, 0, sizeof res);
  waiter x = {w, w->client.made + w->client.failed, w->server.built + w->server.handshake_failed};
  int cf = w->client.failed, sf = w->server.handshake_failed;
  int ci = w->client.nconns, si = w->server.nconns;
  int rc = tu_connect(w->r, "127.0.0.1", port, &w->client.base, copts, name, 10.0, NULL, NULL);
  ck_assert_msg(rc == 0, "weft_connect_ssl: %s (%s)", weft_err_name(rc),
                weft_cert_options_last_error(copts));
  tu_run_until(w->r, settled, &x, WAIT);
  tu_conn *c = w->client.failed > cf ? NULL : tu_factory_conn(&w->client, ci);
  tu_conn *s = w->server.handshake_failed > sf ? NULL : tu_factory_conn(&w->server, si);
  if (c != NULL) {
    tu_wait_int(w->r, &c->made, 1, WAIT);
    res.client_ok = 1;
    res.client_reused = weft_transport_tls_session_reused(c->transport);
  } else {
    res.client_code = w->client.last_failed.code;
    snprintf(res.client_msg, sizeof res.client_msg, "%s", w->client.last_failed.message);
  }
  if (s != NULL) {
    tu_wait_int(w->r, &s->made, 1, WAIT);
    res.server_ok = 1;
    res.server_reused = weft_transport_tls_session_reused(s->transport);
    res.server_peer_cert = weft_transport_peer_certificate(s->transport) != NULL;
    res.server_verify = SSL_get_verify_result(weft_transport_ssl(s->transport));
  } else {
    res.server_code = w->server.last_handshake_failed.code;
    snprintf(res.server_msg, sizeof res.server_msg, "%s", w->server.last_handshake_failed.message);
  }
  if (c != NULL && s != NULL) {
    tu_conn_write_str(c, "ping\n");
    tu_wait_size(w->r, &c->rx_len, 5, WAIT);
    ck_assert_int_eq(weft_transport_lose_connection(c->transport), 0);
  }
  if (c != NULL)
    tu_wait_int(w->r, &c->lost, 1, WAIT);
  if (s != NULL)
    tu_wait_int(w->r, &s->lost, 1, WAIT);
  tu_factory_reap(&w->client);
  tu_factory_reap(&w->server);
  return res;
}

/* Fails the test unless R (evaluated once) is as expected. */
static void expect_at(int line, result r, int want_reused, const char *what) {
  int ok = r.client_ok && r.server_ok && r.client_reused == want_reused &&
           r.server_reused == want_reused;
  ck_assert_msg(ok,
                "line %d: %s: expected a %s; client %s, reused %d (%s); server %s, "
                "reused %d (%s)",
                line, what, want_reused ? "resumed connection" : "full handshake",
                r.client_ok ? "ok" : weft_err_name(r.client_code), r.client_reused, r.client_msg,
                r.server_ok ? "ok" : weft_err_name(r.server_code), r.server_reused, r.server_msg);
}

#define expect_resumed(res, what) expect_at(__LINE__, (res), 1, (what))
#define expect_full(res, what) expect_at(__LINE__, (res), 0, (what))

/* The server refused the client (no protocol built) and nothing was resumed. */
static void expect_server_refused_at(int line, result r, const char *what) {
  ck_assert_msg(!r.server_ok && !r.server_reused && !r.client_reused && r.server_code < 0,
                "line %d: %s: expected the server to refuse; server %s (reused %d, peer cert "
                "%d, verify %ld) %s",
                line, what, r.server_ok ? "ADMITTED" : weft_err_name(r.server_code),
                r.server_reused, r.server_peer_cert, r.server_verify, r.server_msg);
}

#define expect_server_refused(res, what) expect_server_refused_at(__LINE__, (res), (what))

/* --- Item 1: server admission policy in the session id context ------------------------------ */

/* B asks no client certificate, A requires one from the PKI's CA; both share a ticket key and
 * serve one port in turn. A certificate-less client's ticket from B must not admit it to A. */
START_TEST(test_ticket_no_cert_to_required) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  char *key = random_key_file();
  weft_cert_options *b = ticket_server(&w, v, key);
  weft_cert_options *a = ticket_server(&w, v, key);
  tu_check_opt(a, weft_cert_options_set_require_certificate(a, 1));
  tu_check_opt(a, weft_cert_options_add_ca_certificate(a, w.pki.ca_cert));
  weft_cert_options *anon = client_opts(&w, v);
  weft_cert_options *mutual = keep(&w, tu_client_options_mutual(&w.pki));
  versions(mutual, v);

  int port;
  weft_listener *l = listen_on(&w, b, 0, &port);
  expect_full(attempt(&w, port, anon, "localhost"), "B, first");
  expect_resumed(attempt(&w, port, anon, "localhost"), "B, again (control)");
  weft_listener_stop(l);
  l = listen_on(&w, a, port, NULL);
  result r = attempt(&w, port, anon, "localhost");
  expect_server_refused(r, "A, with B's ticket and no certificate");
  ck_assert_msg(r.server_code == WEFT_ENOPEERCERT, "A: %s (%s)", weft_err_name(r.server_code),
                r.server_msg);
  /* control: A does resume its own sessions for a client that has a certificate */
  r = attempt(&w, port, mutual, "localhost");
  expect_full(r, "A, mutual, first");
  ck_assert(r.server_peer_cert && r.server_verify == X509_V_OK);
  r = attempt(&w, port, mutual, "localhost");
  expect_resumed(r, "A, mutual, again (control)");
  ck_assert(r.server_peer_cert && r.server_verify == X509_V_OK);
  tu_remove_file(key);
  world_free(&w);
}
END_TEST

/* B requires a client certificate from the other CA, A one from the PKI's CA; shared ticket
 * key. A rogue client (certificate from the other CA) admitted by B must not resume on A, and
 * A must never report the certificate it did not verify. */
START_TEST(test_ticket_other_ca) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  char *key = random_key_file();
  weft_cert_options *b = ticket_server(&w, v, key);
  tu_check_opt(b, weft_cert_options_set_require_certificate(b, 1));
  tu_check_opt(b, weft_cert_options_add_ca_certificate(b, w.pki.other_ca_cert));
  weft_cert_options *a = ticket_server(&w, v, key);
  tu_check_opt(a, weft_cert_options_set_require_certificate(a, 1));
  tu_check_opt(a, weft_cert_options_add_ca_certificate(a, w.pki.ca_cert));
  weft_cert_options *rogue = client_opts(&w, v);
  tu_check_opt(rogue, weft_cert_options_set_private_key(rogue, w.rogue_key));
  tu_check_opt(rogue, weft_cert_options_set_certificate(rogue, w.rogue_cert));

  int port;
  weft_listener *l = listen_on(&w, b, 0, &port);
  result r = attempt(&w, port, rogue, "localhost");
  expect_full(r, "B, first");
  ck_assert(r.server_peer_cert);
  expect_resumed(attempt(&w, port, rogue, "localhost"), "B, again (control)");
  weft_listener_stop(l);
  l = listen_on(&w, a, port, NULL);
  r = attempt(&w, port, rogue, "localhost");
  expect_server_refused(r, "A, with B's ticket and a certificate A does not trust");
  tu_remove_file(key);
  world_free(&w);
}
END_TEST

/* Listeners with the same admission policy but other protocol lists share sessions (the
 * protocol list is negotiated again on every handshake); a listener that only requests a
 * certificate (verify if one comes) is another policy than one that asks none. */
START_TEST(test_ticket_same_policy) {
  TU_REQUIRE_ALPN();
  int v = version_of(_i);
  world w;
  world_init(&w);
  char *key = random_key_file();
  static const char *const h2[] = {"h2"};
  static const char *const http11[] = {"http/1.1"};
  weft_cert_options *b = ticket_server(&w, v, key);
  tu_check_opt(b, weft_cert_options_set_next_protocols(b, h2, 1));
  tu_check_opt(b, weft_cert_options_set_no_overlap_policy(b, WEFT_NO_OVERLAP_CONTINUE));
  weft_cert_options *a = ticket_server(&w, v, key);
  tu_check_opt(a, weft_cert_options_set_next_protocols(a, http11, 1));
  tu_check_opt(a, weft_cert_options_set_no_overlap_policy(a, WEFT_NO_OVERLAP_CONTINUE));
  weft_cert_options *requests = ticket_server(&w, v, key);
  tu_check_opt(requests, weft_cert_options_add_ca_certificate(requests, w.pki.ca_cert));
  weft_cert_options *copts = client_opts(&w, v);

  int port;
  weft_listener *l = listen_on(&w, b, 0, &port);
  expect_full(attempt(&w, port, copts, "localhost"), "B, first");
  weft_listener_stop(l);
  l = listen_on(&w, a, port, NULL);
  expect_resumed(attempt(&w, port, copts, "localhost"), "A, same policy, other protocols");
  weft_listener_stop(l);
  l = listen_on(&w, requests, port, NULL);
  expect_full(attempt(&w, port, copts, "localhost"), "a server that requests certificates");
  expect_resumed(attempt(&w, port, copts, "localhost"), "that server again (control)");
  tu_remove_file(key);
  world_free(&w);
}
END_TEST

/* --- STARTTLS helpers ------------------------------------------------------------------------ */

/* A plain listener whose connections start TLS as the server at once (so both STARTTLS
 * clients and weft_connect_ssl clients can talk to it), with w->user's options; and STARTTLS
 * clients that upgrade in connection_made with their factory's options and name. */
typedef struct starttls_cfg {
  weft_cert_options *options;
  const char *name;
  int start_rc;
  int started;
  int status;
  int reused;
  char message[TU_MSG_MAX];
} starttls_cfg;

static void server_start_tls(tu_conn *c, weft_transport *t) {
  starttls_cfg *cfg = c->factory->user;
  cfg->start_rc = weft_transport_start_tls(t, cfg->options, WEFT_TLS_SERVER, NULL);
}

static void client_start_tls(tu_conn *c, weft_transport *t) {
  starttls_cfg *cfg = c->factory->user;
  cfg->start_rc = weft_transport_start_tls(t, cfg->options, WEFT_TLS_CLIENT, cfg->name);
  if (cfg->start_rc != 0) {
    snprintf(cfg->message, sizeof cfg->message, "%s", weft_cert_options_last_error(cfg->options));
    weft_transport_abort_connection(t);
  }
}

static void on_started(tu_conn *c, weft_transport *t, int status) {
  starttls_cfg *cfg = c->factory->user;
  cfg->started++;
  cfg->status = status;
  cfg->reused = status == 0 ? weft_transport_tls_session_reused(t) : 0;
  if (status == 0) {
    tu_conn_write_str(c, "ping\n"); /* TLS 1.3 tickets come before the echo */
  }
}

static void on_echo_close(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  (void)data;
  (void)len;
  if (c->rx_len >= 5)
    weft_transport_lose_connection(t);
}

/* STARTTLS listener: server factory user = server cfg. */
static weft_listener *starttls_listen(world *w, starttls_cfg *server, int *port) {
  w->server.user = server;
  w->server.conn_config.on_made = server_start_tls;
  return tu_listen_tcp_local(w->r, &w->server, port);
}

/* One STARTTLS client connection with CFG: returns once it has ended. */
static void starttls_once(world *w, int port, starttls_cfg *cfg) {
  tu_factory f;
  tu_factory_init(&f);
  f.user = cfg;
  f.conn_config.on_made = client_start_tls;
  f.conn_config.on_tls_started = on_started;
  f.conn_config.on_data = on_echo_close;
  cfg->started = 0;
  cfg->status = 0;
  cfg->reused = 0;
  cfg->start_rc = 0;
  tu_connect_tcp_local(w->r, &f, port);
  tu_conn *c = tu_wait_conn(w->r, &f, 0, WAIT);
  tu_wait_int(w->r, &c->lost, 1, WAIT);
  tu_factory_check(&f);
  tu_factory_cleanup(&f);
  tu_factory_reap(&w->server);
}

/* --- Item 2: the client cache key is the identity actually verified -------------------------- */

/* The sequence: STARTTLS with no name, then weft_connect_ssl("127.0.0.1") with the same
 * options, against a certificate for evil.example. Neither may succeed: the STARTTLS client
 * checks the peer's IP now, and nothing it did can be resumed into accepting evil.example. */
START_TEST(test_starttls_then_connect_ip) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  starttls_cfg server = {.options =
                             keep(&w, tu_options_with_identity(w.pki.server_key, w.evil_cert))};
  versions(server.options, v);
  int port;
  starttls_listen(&w, &server, &port);
  weft_cert_options *copts = client_opts(&w, v);
  starttls_cfg client = {.options = copts, .name = NULL};
  starttls_once(&w, port, &client);
  ck_assert_int_eq(client.start_rc, 0);
  ck_assert_int_eq(client.started, 1);
  ck_assert_msg(client.status == WEFT_EHOSTNAME, "STARTTLS without a name against evil.example: %s",
                weft_err_name(client.status));
  result r = attempt(&w, port, copts, "127.0.0.1");
  ck_assert_msg(!r.client_ok && r.client_code == WEFT_EHOSTNAME && !r.client_reused,
                "connect_ssl(127.0.0.1) against evil.example: %s, reused %d (%s)",
                r.client_ok ? "ACCEPTED" : weft_err_name(r.client_code), r.client_reused,
                r.client_msg);
  world_free(&w);
}
END_TEST

/* Identity skipped explicitly: the STARTTLS upgrade succeeds (the chain is good), but its
 * session is not cached, so the next connection with these options does a full handshake. */
START_TEST(test_skip_identity_caches_nothing) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  starttls_cfg server = {.options =
                             keep(&w, tu_options_with_identity(w.pki.server_key, w.evil_cert))};
  versions(server.options, v);
  int port;
  starttls_listen(&w, &server, &port);
  weft_cert_options *skip = client_opts(&w, v);
  tu_check_opt(skip, weft_cert_options_set_verify_identity(skip, 0));
  starttls_cfg client = {.options = skip};
  starttls_once(&w, port, &client);
  ck_assert_msg(client.started == 1 && client.status == 0, "STARTTLS, identity skipped: %s",
                weft_err_name(client.status));
  ck_assert_uint_eq(weft__tls_cached_sessions(skip, NULL), 0);
  starttls_once(&w, port, &client);
  ck_assert_msg(client.status == 0 && !client.reused, "again: %s, reused %d",
                weft_err_name(client.status), client.reused);
  result r = attempt(&w, port, skip, "127.0.0.1");
  ck_assert_msg(r.client_ok && !r.client_reused, "connect_ssl, identity skipped: %s (%s)",
                weft_err_name(r.client_code), r.client_msg);
  ck_assert_uint_eq(weft__tls_cached_sessions(skip, NULL), 0);
  world_free(&w);
}
END_TEST

/* One listener, one client options object: a session is offered only to a connection that
 * checks the same identity (same kind) at the same port. */
START_TEST(test_client_cache_keys) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  weft_cert_options *sopts = keep(&w, tu_server_options(&w.pki));
  versions(sopts, v);
  weft_cert_options *copts = client_opts(&w, v);
  int port;
  listen_on(&w, sopts, 0, &port);
  expect_full(attempt(&w, port, copts, "localhost"), "localhost, first");
  expect_resumed(attempt(&w, port, copts, "localhost"), "localhost, again (control)");
  expect_resumed(attempt(&w, port, copts, "LocalHost"), "LocalHost (names ignore case)");
  expect_full(attempt(&w, port, copts, "a.example"), "another name");
  expect_full(attempt(&w, port, copts, "127.0.0.1"), "the IP, checked as an address");
  expect_resumed(attempt(&w, port, copts, "127.0.0.1"), "the IP again (control)");
  expect_resumed(attempt(&w, port, copts, "localhost"), "localhost after the IP");
  /* other options (another protocol list) have their own cache (a build without ALPN has no
   * protocol list to differ) */
  if (weft_protocol_negotiation_mechanisms() & WEFT_MECH_ALPN) {
    static const char *const h2[] = {"h2"};
    weft_cert_options *other = client_opts(&w, v);
    tu_check_opt(other, weft_cert_options_set_next_protocols(other, h2, 1));
    tu_check_opt(other, weft_cert_options_set_no_overlap_policy(other, WEFT_NO_OVERLAP_CONTINUE));
    expect_full(attempt(&w, port, other, "localhost"), "other protocol list");
    expect_resumed(attempt(&w, port, other, "localhost"), "other protocol list, again (control)");
  }
  /* verification off: nothing checked, nothing cached */
  weft_cert_options *off = client_opts(&w, v);
  tu_check_opt(off, weft_cert_options_set_verify(off, 0));
  expect_full(attempt(&w, port, off, "localhost"), "verification off");
  expect_full(attempt(&w, port, off, "localhost"), "verification off, again");
  ck_assert_uint_eq(weft__tls_cached_sessions(off, NULL), 0);
  world_free(&w);
}
END_TEST

/* STARTTLS without a name checks the peer's IP: its session may serve connect_ssl to the same
 * IP literal and port (the same check), never a connection that checks a name. */
START_TEST(test_starttls_vs_connect) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  starttls_cfg server = {.options = keep(&w, tu_server_options(&w.pki))};
  versions(server.options, v);
  int port;
  starttls_listen(&w, &server, &port);
  weft_cert_options *copts = client_opts(&w, v);
  starttls_cfg client = {.options = copts};
  starttls_once(&w, port, &client);
  ck_assert_msg(client.started == 1 && client.status == 0 && !client.reused,
                "STARTTLS, no name, certificate with IP 127.0.0.1: %s",
                weft_err_name(client.status));
  starttls_once(&w, port, &client);
  ck_assert_msg(client.status == 0 && client.reused, "STARTTLS again (control): %s, reused %d",
                weft_err_name(client.status), client.reused);
  result r = attempt(&w, port, copts, "localhost");
  ck_assert_msg(r.client_ok && !r.client_reused, "connect_ssl(localhost): %s, reused %d",
                weft_err_name(r.client_code), r.client_reused);
  r = attempt(&w, port, copts, "127.0.0.1");
  ck_assert_msg(r.client_ok && r.client_reused, "connect_ssl(127.0.0.1): %s, reused %d",
                weft_err_name(r.client_code), r.client_reused);
  world_free(&w);
}
END_TEST

/* --- Item 3: every client checks an identity by default --------------------------------------- */

START_TEST(test_starttls_identity_default) {
  world w;
  world_init(&w);
  /* the PKI's server certificate names 127.0.0.1: accepted (control) */
  starttls_cfg good = {.options = keep(&w, tu_server_options(&w.pki))};
  int good_port;
  weft_listener *l = starttls_listen(&w, &good, &good_port);
  weft_cert_options *copts = keep(&w, tu_client_options(&w.pki));
  starttls_cfg client = {.options = copts};
  starttls_once(&w, good_port, &client);
  ck_assert_msg(client.started == 1 && client.status == 0, "control: %s",
                weft_err_name(client.status));
  weft_listener_stop(l);

  /* evil.example, no IP: refused without a name, and with the wrong name */
  starttls_cfg evil = {.options =
                           keep(&w, tu_options_with_identity(w.pki.server_key, w.evil_cert))};
  int evil_port;
  starttls_listen(&w, &evil, &evil_port);
  starttls_once(&w, evil_port, &client);
  ck_assert_msg(client.started == 1 && client.status == WEFT_EHOSTNAME, "no name, evil.example: %s",
                weft_err_name(client.status));
  client.name = "localhost";
  starttls_once(&w, evil_port, &client);
  ck_assert_int_eq(client.status, WEFT_EHOSTNAME);
  client.name = "evil.example";
  starttls_once(&w, evil_port, &client);
  ck_assert_msg(client.status == 0, "the right name: %s", weft_err_name(client.status));

  /* skipping the identity check is explicit and keeps the chain check */
  weft_cert_options *skip = keep(&w, tu_client_options(&w.pki));
  tu_check_opt(skip, weft_cert_options_set_verify_identity(skip, 0));
  starttls_cfg skipping = {.options = skip};
  starttls_once(&w, evil_port, &skipping);
  ck_assert_msg(skipping.started == 1 && skipping.status == 0, "identity skipped: %s",
                weft_err_name(skipping.status));
  weft_cert_options *skip_other_ca;
  ck_assert_int_eq(weft_cert_options_new(&skip_other_ca), 0);
  keep(&w, skip_other_ca);
  tu_check_opt(skip_other_ca,
               weft_cert_options_add_ca_certificate(skip_other_ca, w.pki.other_ca_cert));
  tu_check_opt(skip_other_ca, weft_cert_options_set_verify_identity(skip_other_ca, 0));
  skipping.options = skip_other_ca;
  starttls_once(&w, evil_port, &skipping);
  ck_assert_msg(skipping.status == WEFT_ECERTVERIFY, "identity skipped, untrusted chain: %s",
                weft_err_name(skipping.status));
  world_free(&w);
}
END_TEST

/* connect_ssl to an IP literal with no server name, and a reconnector likewise, check the IP. */
START_TEST(test_connect_ip_identity) {
  world w;
  world_init(&w);
  weft_cert_options *evil = keep(&w, tu_options_with_identity(w.pki.server_key, w.evil_cert));
  int port;
  listen_on(&w, evil, 0, &port);
  weft_cert_options *copts = keep(&w, tu_client_options(&w.pki));
  result r = attempt(&w, port, copts, NULL);
  ck_assert_msg(!r.client_ok && r.client_code == WEFT_EHOSTNAME, "connect_ssl(127.0.0.1): %s",
                r.client_ok ? "ACCEPTED" : weft_err_name(r.client_code));

  tu_factory f;
  tu_factory_init(&f);
  weft_reconnect_options ro;
  weft_reconnect_options_init(&ro);
  ro.max_retries = 0;
  ro.initial_delay = 60; /* one attempt is all this test waits for */
  weft_reconnector *rc = NULL;
  int err = tu_reconnect_start(w.r, "127.0.0.1", port, &f.base, copts, NULL, 0, NULL, &ro, &rc);
  ck_assert_msg(err == 0, "weft_reconnect_start: %s", weft_err_name(err));
  tu_wait_int(w.r, &f.failed, 1, WAIT);
  ck_assert_msg(f.last_failed.code == WEFT_EHOSTNAME, "reconnector: %s (%s)",
                weft_err_name(f.last_failed.code), f.last_failed.message);
  ck_assert_int_eq(f.made, 0);
  weft_reconnector_free(rc);
  tu_factory_reap(&w.server);
  tu_factory_check(&f);
  tu_factory_cleanup(&f);
  world_free(&w);
}
END_TEST

/* A client SSL with no name and no IP peer (what a Unix socket gives) is refused with a clear
 * WEFT_EINVAL; with identity checks skipped it is allowed and gets no cache key. */
START_TEST(test_no_name_no_address) {
  weft_cert_options *o;
  ck_assert_int_eq(weft_cert_options_new(&o), 0);
  weft__tls_conn conn;
  memset(&conn, 0, sizeof conn);
  conn.options = o;
  SSL *ssl = NULL;
  weft__reason_buf err;
  ck_assert_int_eq(weft__tls_new_ssl(o, WEFT_TLS_CLIENT, NULL, &conn, 1, &ssl, &err), WEFT_EINVAL);
  ck_assert_ptr_null(ssl);
  ck_assert_msg(strstr(err.msg, "IP address") != NULL &&
                    strstr(err.msg, "weft_cert_options_set_verify_identity") != NULL,
                "message: %s", err.msg);
  ck_assert_ptr_nonnull(strstr(weft_cert_options_last_error(o), "IP address"));
  /* an IP peer: its address is what is checked */
  struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(4433)};
  peer.sin_addr.s_addr = htonl(0x7f000001);
  conn.peer = (struct sockaddr *)&peer;
  ck_assert_int_eq(weft__tls_new_ssl(o, WEFT_TLS_CLIENT, NULL, &conn, 1, &ssl, &err), 0);
  char *ip = X509_VERIFY_PARAM_get1_ip_asc(SSL_get0_param(ssl));
  ck_assert_str_eq(ip ? ip : "", "127.0.0.1");
  OPENSSL_free(ip);
  ck_assert_int_eq(conn.session_key_set, 1);
  SSL_free(ssl);
  weft_cert_options_unref(o);

  ck_assert_int_eq(weft_cert_options_new(&o), 0);
  ck_assert_int_eq(weft_cert_options_set_verify_identity(o, 0), 0);
  conn.options = o;
  conn.peer = NULL;
  ck_assert_int_eq(weft__tls_new_ssl(o, WEFT_TLS_CLIENT, NULL, &conn, 1, &ssl, &err), 0);
  ck_assert_int_eq(SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER, SSL_VERIFY_PEER);
  ck_assert_int_eq(conn.session_key_set, 0);
  SSL_free(ssl);
  ck_assert_int_eq(weft_cert_options_set_verify_identity(o, 1), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_verify_identity(NULL, 1), WEFT_EINVAL);
  weft_cert_options_unref(o);
}
END_TEST

/* --- Item 12: the NPN server's no-overlap policy ----------------------------------------------- */

static weft_cert_options *npn_server(world *w) {
  static const char *const list[] = {"h2", "http/1.1"};
  weft_cert_options *o = keep(w, tu_server_options(&w->pki));
  tu_check_opt(o, weft_cert_options_set_next_protocols(o, list, 2));
  tu_check_opt(o, weft_cert_options_set_negotiation_mechanisms(o, WEFT_MECH_NPN));
  tu_check_opt(o, weft_cert_options_set_no_overlap_policy(o, WEFT_NO_OVERLAP_FAIL));
  return o;
}

static int client_ended(void *arg) {
  world *w = arg;
  return w->client.failed + w->client.lost >= 1;
}

/* A weft client with the list [spdy/3] and policy CONTINUE selects spdy/3 over NPN, as
 * `openssl s_client -nextprotoneg spdy/3` does. */
START_TEST(test_npn_server_refuses_unadvertised) {
  if (!(weft_protocol_negotiation_mechanisms() & WEFT_MECH_NPN))
    return;
  world w;
  world_init(&w);
  int port;
  listen_on(&w, npn_server(&w), 0, &port);
  static const char *const spdy[] = {"spdy/3"};
  weft_cert_options *c = client_opts(&w, WEFT_TLS1_2);
  tu_check_opt(c, weft_cert_options_set_next_protocols(c, spdy, 1));
  tu_check_opt(c, weft_cert_options_set_negotiation_mechanisms(c, WEFT_MECH_NPN));
  tu_check_opt(c, weft_cert_options_set_no_overlap_policy(c, WEFT_NO_OVERLAP_CONTINUE));
  tu_connect_ssl_local(w.r, &w.client, port, c, "localhost");
  tu_wait_int(w.r, &w.server.handshake_failed, 1, WAIT);
  tu_run_until(w.r, client_ended, &w, WAIT);
  tu_settle(w.r, 0.1);
  ck_assert_int_eq(w.server.built, 0);
  ck_assert_msg(w.server.last_handshake_failed.code == WEFT_ENOPROTOCOL, "server: %s (%s)",
                weft_err_name(w.server.last_handshake_failed.code),
                w.server.last_handshake_failed.message);
  ck_assert_ptr_nonnull(strstr(w.server.last_handshake_failed.message, "spdy/3"));
  /* control: a client that selects an advertised protocol is served, over NPN */
  static const char *const http11[] = {"http/1.1"};
  weft_cert_options *ok = client_opts(&w, WEFT_TLS1_2);
  tu_check_opt(ok, weft_cert_options_set_next_protocols(ok, http11, 1));
  tu_check_opt(ok, weft_cert_options_set_negotiation_mechanisms(ok, WEFT_MECH_NPN));
  result r = attempt(&w, port, ok, "localhost");
  ck_assert_msg(r.client_ok && r.server_ok, "control: %s / %s", weft_err_name(r.client_code),
                weft_err_name(r.server_code));
  ck_assert_int_eq(w.server.handshake_failed, 1);
  world_free(&w);
}
END_TEST

typedef struct child {
  pid_t pid;
  int status;
  int exited;
  int out_eof; /* its stdout (a pipe) reached end of file: it exited */
} child;

/* Reads and drops the child's output; wakes the loop at its end of file. */
static void on_child_output(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  child *c = arg;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof buf);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
    c->out_eof = 1;
}

static int child_exited(void *arg) {
  child *c = arg;
  if (c->out_eof && !c->exited && waitpid(c->pid, &c->status, 0) == c->pid)
    c->exited = 1;
  return c->exited;
}

static int server_refused(void *arg) {
  world *w = arg;
  return w->server.handshake_failed + w->server.built >= 1;
}

/* The reproduction: openssl s_client -tls1_2 -nextprotoneg spdy/3. */
START_TEST(test_npn_server_refuses_s_client) {
  const char *openssl = tu_find_program("openssl");
  if (openssl == NULL || !(weft_protocol_negotiation_mechanisms() & WEFT_MECH_NPN))
    return;
  char prog[512];
  snprintf(prog, sizeof prog, "%s", openssl);
  world w;
  world_init(&w);
  int port;
  listen_on(&w, npn_server(&w), 0, &port);
  char connect[64];
  snprintf(connect, sizeof connect, "127.0.0.1:%d", port);
  int in[2], out[2];
  ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(out, O_CLOEXEC | O_NONBLOCK), 0);
  child c = {0};
  c.pid = fork();
  ck_assert_int_ge(c.pid, 0);
  if (c.pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    execl(prog, "openssl", "s_client", "-tls1_2", "-nextprotoneg", "spdy/3", "-connect", connect,
          (char *)NULL);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  struct event *ev =
      event_new(weft_reactor_event_base(w.r), out[0], EV_READ | EV_PERSIST, on_child_output, &c);
  ck_assert_ptr_nonnull(ev);
  event_add(ev, NULL);
  tu_run_until(w.r, server_refused, &w, WAIT);
  /* the peer sees the connection end: s_client exits with its stdin still open */
  tu_run_until(w.r, child_exited, &c, WAIT);
  event_free(ev);
  close(out[0]);
  close(in[1]);
  ck_assert_msg(WIFEXITED(c.status) && WEXITSTATUS(c.status) != 127, "s_client did not run");
  ck_assert_int_eq(w.server.built, 0);
  ck_assert_msg(w.server.last_handshake_failed.code == WEFT_ENOPROTOCOL, "server: %s (%s)",
                weft_err_name(w.server.last_handshake_failed.code),
                w.server.last_handshake_failed.message);
  world_free(&w);
}
END_TEST

/* --- Ticket key file that is a FIFO ------------------------------------------------------------ */

START_TEST(test_ticket_key_fifo) {
  char dir[] = "/tmp/weft-isolation-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char path[64];
  snprintf(path, sizeof path, "%s/key", dir);
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  weft_cert_options *o;
  ck_assert_int_eq(weft_cert_options_new(&o), 0);
  /* opened for reading with no writer: a blocking open would never return */
  ck_assert_int_eq(weft_cert_options_add_ticket_key_file(o, path), WEFT_EINVAL);
  ck_assert_msg(strstr(weft_cert_options_last_error(o), "not a regular file") != NULL &&
                    strstr(weft_cert_options_last_error(o), path) != NULL,
                "message: %s", weft_cert_options_last_error(o));
  unlink(path);
  /* control: a regular file with a key is taken */
  uint8_t key[WEFT_TICKET_KEY_SIZE];
  ck_assert_int_eq(RAND_bytes(key, sizeof key), 1);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, key, sizeof key), (ssize_t)sizeof key);
  close(fd);
  ck_assert_int_eq(weft_cert_options_add_ticket_key_file(o, path), 0);
  unlink(path);
  rmdir(dir);
  weft_cert_options_unref(o);
}
END_TEST

/* --- The suite ----------------------------------------------------------------------------------- */

static Suite *isolation_suite(void) {
  Suite *s = suite_create("isolation");
  TCase *tc = tcase_create("server-policy");
  tcase_add_loop_test(tc, test_ticket_no_cert_to_required, 0, 2);
  tcase_add_loop_test(tc, test_ticket_other_ca, 0, 2);
  tcase_add_loop_test(tc, test_ticket_same_policy, 0, 2);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("client-cache");
  tcase_add_loop_test(tc, test_starttls_then_connect_ip, 0, 2);
  tcase_add_loop_test(tc, test_skip_identity_caches_nothing, 0, 2);
  tcase_add_loop_test(tc, test_client_cache_keys, 0, 2);
  tcase_add_loop_test(tc, test_starttls_vs_connect, 0, 2);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("identity");
  tcase_add_test(tc, test_starttls_identity_default);
  tcase_add_test(tc, test_connect_ip_identity);
  tcase_add_test(tc, test_no_name_no_address);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("npn");
  tcase_add_test(tc, test_npn_server_refuses_unadvertised);
  tcase_add_test(tc, test_npn_server_refuses_s_client);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("files");
  tcase_add_test(tc, test_ticket_key_fifo);
  tcase_set_timeout(tc, 10);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  SRunner *sr = srunner_create(isolation_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
