/* tests/check_resume.c: TLS session resumption (issue #7).
 *
 * Real handshakes over loopback, with certificates generated in the test (tests/tlsutil.c):
 *  - client reuse: the second connection with the same client options to the same server name
 *    and port resumes, on both ends, at TLS 1.2 and 1.3, through the server's session cache
 *    or through tickets; and does not with reuse off, with the server keeping no session, to
 *    another port, for another server name, or with other client options;
 *  - a connection closed cleanly by either side keeps its session resumable (the trap: an SSL
 *    freed without close_notify sent, or an unexpected EOF, makes OpenSSL mark the session not
 *    resumable); an aborted connection does not;
 *  - ticket keys: two server options objects given the same key file resume each other's
 *    sessions (one after the other on the same address, as behind a load balancer), and so do
 *    two server processes (forked children; `openssl s_client -sess_out` / `-sess_in`); key
 *    rotation [K1] -> [K2, K1] -> [K2]; automatic rotation with a tiny key lifetime;
 *  - the client cache's bound (100 sessions, least recently used evicted), and one client and
 *    one server options object shared by reactors in four threads (cache, key rotation);
 *  - bad input to the new setters.
 *
 * Nothing sleeps to wait for an event: the reactor runs until a condition holds or a deadline
 * passes; waiting for time to pass is running the reactor until a deadline. Every test checks
 * that weft's allocations and the open descriptors are back to what they were. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "testutil.h"
#include "tlsutil.h"

#include "tls_options-internal.h" /* weft__tls_cached_sessions: how many sessions a client keeps */

#define WAIT 20.0 /* generous: valgrind slows handshakes down a lot */

static int version_of(int i) {
  return i % 2 == 0 ? WEFT_TLS1_2 : WEFT_TLS1_3;
}
static const char *version_name(int v) {
  return v == WEFT_TLS1_2 ? "TLSv1.2" : "TLSv1.3";
}

/* --- A world: reactor, PKI, one server and one client factory, options to release ------- */

typedef struct world {
  weft_reactor *r;
  tu_pki pki;
  tu_factory server, client;
  weft_cert_options *opts[16];
  int nopts;
  int fds;     /* descriptors open at the start */
  long allocs; /* weft's allocations outstanding at the start */
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
}

/* The world releases O in world_free. */
static weft_cert_options *world_keep(world *w, weft_cert_options *o) {
  ck_assert_int_lt(w->nopts, (int)(sizeof w->opts / sizeof w->opts[0]));
  w->opts[w->nopts++] = o;
  return o;
}

/* Frees everything, then checks that weft released all it allocated and every descriptor. */
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
  tu_pki_free(&w->pki);
  ck_assert_int_eq(weft_allocations_outstanding(), w->allocs);
  ck_assert_int_eq(tu_count_fds(), w->fds);
}

/* Server options with the PKI's identity at VERSION only, the session cache and tickets as
 * given. */
static weft_cert_options *server_opts(world *w, int version, int cache, int tickets) {
  weft_cert_options *o = world_keep(w, tu_server_options(&w->pki));
  tu_check_opt(o, weft_cert_options_set_tls_versions(o, version, version));
  tu_check_opt(o, weft_cert_options_set_session_cache(o, cache));
  tu_check_opt(o, weft_cert_options_set_session_tickets(o, tickets));
  return o;
}

/* Client options trusting the PKI's CA, at VERSION only (reuse: the default, on). */
static weft_cert_options *client_opts(world *w, int version) {
  weft_cert_options *o = world_keep(w, tu_client_options(&w->pki));
  tu_check_opt(o, weft_cert_options_set_tls_versions(o, version, version));
  return o;
}

/* Listens on 127.0.0.1:PORT (0: any free port) with OPTIONS; stores the port in *BOUND. */
static weft_listener *listen_on(world *w, weft_cert_options *options, int port, int *bound) {
  weft_listener *l = NULL;
  int rc = weft_listen_ssl(w->r, "127.0.0.1", port, &w->server.base, options, &l);
  ck_assert_msg(rc == 0, "weft_listen_ssl(127.0.0.1:%d): %s (%s)", port, weft_err_name(rc),
                weft_cert_options_last_error(options));
  if (bound != NULL)
    *bound = weft_listener_port(l);
  return l;
}

/* How a connection ends. */
typedef enum ending {
  CLIENT_CLOSES = 0, /* client lose_connection */
  SERVER_CLOSES,     /* server lose_connection */
  CLIENT_ABORTS,     /* client abort_connection */
  SERVER_ABORTS      /* server abort_connection */
} ending;

typedef struct outcome {
  int client_reused;
  int server_reused;
} outcome;

typedef struct conn_spec {
  int port;
  weft_cert_options *copts;
  const char *name; /* server name (NULL: "localhost") */
  int version;
  ending end;
  int no_ping; /* close at once in connection_made's wake, without a round trip first */
} conn_spec;

/* One connection as SPEC says: waits until both ends are ready and reads whether the session
 * was resumed on each, exchanges a line (by then TLS 1.3 tickets have arrived: the server sends
 * them before any data), ends the connection, and waits until both ends are lost. A clean
 * close must be WEFT_OK on both ends. */
static outcome run_connection(world *w, const conn_spec *spec) {
  int ci = w->client.nconns, si = w->server.nconns;
  tu_connect_ssl_local(w->r, &w->client, spec->port, spec->copts,
                       spec->name ? spec->name : "localhost");
  tu_conn *c = tu_wait_conn(w->r, &w->client, ci, WAIT);
  tu_conn *s = tu_wait_conn(w->r, &w->server, si, WAIT);
  tu_wait_int(w->r, &c->made, 1, WAIT);
  tu_wait_int(w->r, &s->made, 1, WAIT);
  outcome o = {weft_transport_tls_session_reused(c->transport),
               weft_transport_tls_session_reused(s->transport)};
  const char *cv = weft_transport_tls_version(c->transport);
  const char *sv = weft_transport_tls_version(s->transport);
  ck_assert_msg(cv && strcmp(cv, version_name(spec->version)) == 0, "client version %s",
                cv ? cv : "NULL");
  ck_assert_msg(sv && strcmp(sv, version_name(spec->version)) == 0, "server version %s",
                sv ? sv : "NULL");
  if (!spec->no_ping) {
    tu_conn_write_str(c, "ping\n");
    tu_wait_size(w->r, &c->rx_len, 5, WAIT);
    ck_assert_msg(tu_conn_rx_equals(c, "ping\n", 5), "client got '%s'",
                  c->rx ? (const char *)c->rx : "");
  }
  switch (spec->end) {
    case CLIENT_CLOSES:
      ck_assert_int_eq(weft_transport_lose_connection(c->transport), 0);
      break;
    case SERVER_CLOSES:
      ck_assert_int_eq(weft_transport_lose_connection(s->transport), 0);
      break;
    case CLIENT_ABORTS:
      ck_assert_int_eq(weft_transport_abort_connection(c->transport), 0);
      break;
    case SERVER_ABORTS:
      ck_assert_int_eq(weft_transport_abort_connection(s->transport), 0);
      break;
  }
  tu_wait_int(w->r, &c->lost, 1, WAIT);
  tu_wait_int(w->r, &s->lost, 1, WAIT);
  if (spec->end == CLIENT_CLOSES || spec->end == SERVER_CLOSES) {
    ck_assert_msg(c->lost_reason.code == WEFT_OK, "client lost: %s: %s",
                  weft_err_name(c->lost_reason.code), c->lost_reason.message);
    ck_assert_msg(s->lost_reason.code == WEFT_OK, "server lost: %s: %s",
                  weft_err_name(s->lost_reason.code), s->lost_reason.message);
  }
  ck_assert_int_eq(w->client.failed, 0);
  ck_assert_int_eq(w->server.handshake_failed, 0);
  return o;
}

/* A connection closed cleanly by the client, after a round trip. */
static outcome connect_once(world *w, int port, weft_cert_options *copts, const char *name,
                            int version) {
  conn_spec spec = {port, copts, name, version, CLIENT_CLOSES, 0};
  return run_connection(w, &spec);
}

#define ck_assert_resumed(o, expect, what)                                                         \
  do {                                                                                             \
    outcome o_ = (o);                                                                              \
    ck_assert_msg(o_.client_reused == (expect) && o_.server_reused == (expect),                    \
                  "%s: resumed on client %d, server %d; expected %d on both", (what),              \
                  o_.client_reused, o_.server_reused, (expect));                                   \
  } while (0)

static int never(void *arg) {
  (void)arg;
  return 0;
}

/* Runs the reactor for SECONDS (time passing, with the loop live: no sleep). */
static void run_for(weft_reactor *r, double seconds) {
  ck_assert_int_eq(weft_reactor_run_until(r, never, NULL, seconds), WEFT_ETIMEDOUT);
}

/* Runs the reactor until the monotonic clock reaches DEADLINE. */
static void run_until_time(weft_reactor *r, double deadline) {
  double left = deadline - tu_now();
  if (left > 0)
    run_for(r, left + 0.001);
  ck_assert(tu_now() >= deadline);
}

/* 80 random bytes: a ticket key. */
static void random_key(uint8_t key[WEFT_TICKET_KEY_SIZE]) {
  ck_assert_int_eq(RAND_bytes(key, WEFT_TICKET_KEY_SIZE), 1);
}

/* --- Client reuse ------------------------------------------------------------------------- */

/* _i: version (bit 0) and server mode (i / 2): 0 defaults (cache and tickets), 1 cache only,
 * 2 tickets only, 3 neither (nothing can resume). */
START_TEST(test_reuse) {
  int v = version_of(_i);
  int mode = _i / 2;
  int cache = mode == 0 || mode == 1, tickets = mode == 0 || mode == 2;
  int expect = mode != 3;
  world w;
  world_init(&w);
  weft_cert_options *sopts = server_opts(&w, v, cache, tickets);
  weft_cert_options *copts = client_opts(&w, v);
  int port;
  listen_on(&w, sopts, 0, &port);

  uint64_t stored[3];
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 0, "first connection");
  ck_assert_uint_eq(weft__tls_cached_sessions(copts, &stored[0]), (size_t)expect);
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), expect, "second connection");
  ck_assert_uint_eq(weft__tls_cached_sessions(copts, &stored[1]), (size_t)expect);
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), expect, "third connection");
  ck_assert_uint_eq(weft__tls_cached_sessions(copts, &stored[2]), (size_t)expect);
  if (v == WEFT_TLS1_3 && expect) {
    /* the server sent new tickets on each resumed connection: each ticket is used once */
    ck_assert_msg(stored[0] < stored[1] && stored[1] < stored[2],
                  "sessions stored: %llu, %llu, %llu", (unsigned long long)stored[0],
                  (unsigned long long)stored[1], (unsigned long long)stored[2]);
  }
  world_free(&w);
}
END_TEST

START_TEST(test_reuse_off) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  weft_cert_options *sopts = server_opts(&w, v, 1, 1);
  weft_cert_options *off = client_opts(&w, v);
  tu_check_opt(off, weft_cert_options_set_session_reuse(off, 0));
  int port;
  listen_on(&w, sopts, 0, &port);
  ck_assert_resumed(connect_once(&w, port, off, NULL, v), 0, "reuse off, first");
  ck_assert_resumed(connect_once(&w, port, off, NULL, v), 0, "reuse off, second");
  ck_assert_uint_eq(weft__tls_cached_sessions(off, NULL), 0);

  /* The control: the same server resumes for a client that keeps its sessions. */
  weft_cert_options *on = client_opts(&w, v);
  ck_assert_resumed(connect_once(&w, port, on, NULL, v), 0, "reuse on, first");
  ck_assert_resumed(connect_once(&w, port, on, NULL, v), 1, "reuse on, second");
  world_free(&w);
}
END_TEST

/* One server options object on two ports: the server would resume either session on either
 * port, so only the client's key (name and port) keeps them apart. */
START_TEST(test_other_port) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  weft_cert_options *sopts = server_opts(&w, v, 1, 1);
  weft_cert_options *copts = client_opts(&w, v);
  int p1, p2;
  listen_on(&w, sopts, 0, &p1);
  listen_on(&w, sopts, 0, &p2);
  ck_assert_int_ne(p1, p2);
  ck_assert_resumed(connect_once(&w, p1, copts, NULL, v), 0, "port 1, first");
  ck_assert_resumed(connect_once(&w, p2, copts, NULL, v), 0, "port 2, first");
  ck_assert_uint_eq(weft__tls_cached_sessions(copts, NULL), 2);
  ck_assert_resumed(connect_once(&w, p1, copts, NULL, v), 1, "port 1, second");
  ck_assert_resumed(connect_once(&w, p2, copts, NULL, v), 1, "port 2, second");
  world_free(&w);
}
END_TEST

/* Two names of the same server (its certificate has both). */
START_TEST(test_other_name) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  weft_cert_options *sopts = server_opts(&w, v, 1, 1);
  weft_cert_options *copts = client_opts(&w, v);
  int port;
  listen_on(&w, sopts, 0, &port);
  ck_assert_resumed(connect_once(&w, port, copts, "a.example", v), 0, "a.example, first");
  ck_assert_resumed(connect_once(&w, port, copts, "b.example", v), 0, "b.example, first");
  ck_assert_resumed(connect_once(&w, port, copts, "a.example", v), 1, "a.example, second");
  ck_assert_resumed(connect_once(&w, port, copts, "b.example", v), 1, "b.example, second");
  world_free(&w);
}
END_TEST

/* Two client options objects (other protocol lists) have separate caches. */
START_TEST(test_other_options) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  weft_cert_options *sopts = server_opts(&w, v, 1, 1);
  weft_cert_options *x = client_opts(&w, v);
  weft_cert_options *y = client_opts(&w, v);
  if (weft_protocol_negotiation_mechanisms() & WEFT_MECH_ALPN) {
    static const char *const both[] = {"h2", "http/1.1"};
    static const char *const h2[] = {"h2"};
    static const char *const h1[] = {"http/1.1"};
    tu_check_opt(sopts, weft_cert_options_set_next_protocols(sopts, both, 2));
    tu_check_opt(x, weft_cert_options_set_next_protocols(x, h2, 1));
    tu_check_opt(y, weft_cert_options_set_next_protocols(y, h1, 1));
  } else {
    tu_check_opt(y, weft_cert_options_set_verify_depth(y, 5)); /* any other configuration */
  }
  int port;
  listen_on(&w, sopts, 0, &port);
  ck_assert_resumed(connect_once(&w, port, x, NULL, v), 0, "options X, first");
  ck_assert_resumed(connect_once(&w, port, y, NULL, v), 0, "options Y, first");
  ck_assert_resumed(connect_once(&w, port, x, NULL, v), 1, "options X, second");
  ck_assert_resumed(connect_once(&w, port, y, NULL, v), 1, "options Y, second");
  world_free(&w);
}
END_TEST

/* --- Closing keeps the session ------------------------------------------------------------ */

/* _i: version (bit 0), who closes (bit 1: server), at once without a round trip (bit 2: with
 * TLS 1.3 the tickets then arrive while the close is under way). */
START_TEST(test_clean_close_keeps_session) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  weft_cert_options *sopts = server_opts(&w, v, 1, 1);
  weft_cert_options *copts = client_opts(&w, v);
  int port;
  listen_on(&w, sopts, 0, &port);
  conn_spec first = {port, copts, NULL, v, (_i & 2) ? SERVER_CLOSES : CLIENT_CLOSES, _i & 4};
  ck_assert_resumed(run_connection(&w, &first), 0, "first connection");
  ck_assert_uint_eq(weft__tls_cached_sessions(copts, NULL), 1);
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 1,
                    (_i & 2) ? "after the server closed" : "after the client closed");
  world_free(&w);
}
END_TEST

/* The other side of the trap: an abort (no close_notify; the peer sees a truncated stream)
 * makes the session unusable, and the next connection does a full handshake and gets a new
 * one. _i: version (bit 0), who aborts (bit 1: server). */
START_TEST(test_abort_drops_session) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  weft_cert_options *sopts = server_opts(&w, v, 1, 1);
  weft_cert_options *copts = client_opts(&w, v);
  int port;
  listen_on(&w, sopts, 0, &port);
  conn_spec first = {port, copts, NULL, v, (_i & 2) ? SERVER_ABORTS : CLIENT_ABORTS, 0};
  ck_assert_resumed(run_connection(&w, &first), 0, "first connection");
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 0, "after an abort");
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 1, "after a clean close");
  world_free(&w);
}
END_TEST

/* --- Ticket keys -------------------------------------------------------------------------- */

/* Server options for the ticket tests: no session cache, so only a ticket can resume. */
static weft_cert_options *ticket_server(world *w, int version) {
  return server_opts(w, version, 0, 1);
}

/* Two options objects given the same key file, one after the other on the same address (a
 * load balancer's view): B resumes A's session. A server with its own keys does not. */
START_TEST(test_key_file_shared) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  uint8_t key[WEFT_TICKET_KEY_SIZE];
  random_key(key);
  char *path = tu_write_temp_file(key, sizeof key);
  weft_cert_options *a = ticket_server(&w, v);
  weft_cert_options *b = ticket_server(&w, v);
  weft_cert_options *other = ticket_server(&w, v);
  tu_check_opt(a, weft_cert_options_add_ticket_key_file(a, path));
  tu_check_opt(b, weft_cert_options_add_ticket_key_file(b, path));
  weft_cert_options *copts = client_opts(&w, v);

  int port;
  weft_listener *l = listen_on(&w, a, 0, &port);
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 0, "server A");
  weft_listener_stop(l);
  l = listen_on(&w, b, port, NULL);
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 1, "server B, A's session");
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 1, "server B, its own session");
  weft_listener_stop(l);
  listen_on(&w, other, port, NULL);
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 0, "a server with other keys");
  tu_remove_file(path);
  world_free(&w);
}
END_TEST

/* [K1] issues; [K2, K1] resumes and renews under K2; [K2] resumes the renewed ticket but not
 * one issued under K1 (a full handshake, no error). */
START_TEST(test_key_rotation) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  uint8_t k1[WEFT_TICKET_KEY_SIZE], k2[WEFT_TICKET_KEY_SIZE];
  random_key(k1);
  random_key(k2);
  weft_cert_options *s1 = ticket_server(&w, v);
  weft_cert_options *s21 = ticket_server(&w, v);
  weft_cert_options *s2 = ticket_server(&w, v);
  tu_check_opt(s1, weft_cert_options_add_ticket_key(s1, k1, sizeof k1));
  tu_check_opt(s21, weft_cert_options_add_ticket_key(s21, k2, sizeof k2));
  tu_check_opt(s21, weft_cert_options_add_ticket_key(s21, k1, sizeof k1));
  tu_check_opt(s2, weft_cert_options_add_ticket_key(s2, k2, sizeof k2));
  weft_cert_options *copts = client_opts(&w, v);

  int port;
  weft_listener *l = listen_on(&w, s1, 0, &port);
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 0, "[K1], first");
  weft_listener_stop(l);
  l = listen_on(&w, s21, port, NULL);
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 1, "[K2, K1], ticket under K1");
  weft_listener_stop(l);
  l = listen_on(&w, s2, port, NULL);
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 1, "[K2], renewed ticket");
  weft_listener_stop(l);
  l = listen_on(&w, s1, port, NULL);
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 0, "[K1], ticket under K2");
  weft_listener_stop(l);
  listen_on(&w, s2, port, NULL);
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 0, "[K2], ticket under K1");
  world_free(&w);
}
END_TEST

/* Automatic keys with a 0.2 s lifetime: a ticket is refused once more than two lifetimes have
 * passed since its key was made. The control, a 60 s lifetime, resumes after the same wait. */
START_TEST(test_auto_rotation_expires) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  weft_cert_options *tiny = ticket_server(&w, v);
  weft_cert_options *control = ticket_server(&w, v);
  tu_check_opt(tiny, weft_cert_options_set_ticket_key_lifetime(tiny, 0.2));
  tu_check_opt(control, weft_cert_options_set_ticket_key_lifetime(control, 60));
  weft_cert_options *copts = client_opts(&w, v);
  int pt, pc;
  listen_on(&w, tiny, 0, &pt);
  listen_on(&w, control, 0, &pc);
  ck_assert_resumed(connect_once(&w, pt, copts, NULL, v), 0, "0.2 s keys, first");
  ck_assert_resumed(connect_once(&w, pc, copts, NULL, v), 0, "60 s keys, first");
  /* the tiny server's key was made before this point, during its first handshake */
  run_until_time(w.r, tu_now() + 2 * 0.2 + 0.1);
  ck_assert_resumed(connect_once(&w, pt, copts, NULL, v), 0, "0.2 s keys, after 0.5 s");
  ck_assert_resumed(connect_once(&w, pc, copts, NULL, v), 1, "60 s keys, after 0.5 s");
  world_free(&w);
}
END_TEST

/* Between one and two lifetimes, the previous key still opens the ticket, which is renewed
 * under the new key. */
START_TEST(test_auto_rotation_grace) {
  int v = version_of(_i);
  const double life = 2.0;
  world w;
  world_init(&w);
  weft_cert_options *sopts = ticket_server(&w, v);
  tu_check_opt(sopts, weft_cert_options_set_ticket_key_lifetime(sopts, life));
  weft_cert_options *copts = client_opts(&w, v);
  int port;
  listen_on(&w, sopts, 0, &port);
  double t0 = tu_now(); /* the first key is made after this */
  ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 0, "first");
  double t1 = tu_now(); /* ... and before this */
  run_until_time(w.r, t1 + life + 0.05);
  outcome second = connect_once(&w, port, copts, NULL, v);
  if (tu_now() < t0 + 2 * life) {
    ck_assert_resumed(second, 1, "after one lifetime, under the previous key");
    ck_assert_resumed(connect_once(&w, port, copts, NULL, v), 1, "renewed ticket");
  } else {
    printf("test_auto_rotation_grace: this machine took %.2f s for the handshakes, more than "
           "the %.1f s window; not checked\n",
           tu_now() - t0 - life, life);
  }
  world_free(&w);
}
END_TEST

/* --- Two server processes sharing a key file --------------------------------------------- */

/* The echo protocol of the child servers (stateless, so one object serves every
 * connection). */
static void child_echo(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  (void)p;
  weft_transport_write(t, data, len);
}
static const weft_protocol_ops child_ops = {.data_received = child_echo};
static weft_protocol child_protocol = {&child_ops, NULL};
static weft_protocol *child_build(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)f;
  (void)t;
  (void)peer;
  return &child_protocol;
}

static int child_quit;
static void child_on_control(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  (void)arg;
  char buf[16];
  ssize_t n = read(fd, buf, sizeof buf);
  if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
    child_quit = 1;
}
static int child_should_quit(void *arg) {
  (void)arg;
  return child_quit;
}

/* In a forked child: a weft TLS server from the files, with no session cache (only tickets
 * resume). Reports its port on SOCK, serves until SOCK reaches EOF (the parent closed it) or
 * 60 s pass, and exits: 0 when all went well. Never returns. */
static void fleet_child(int sock, int version, const char *cert, const char *key,
                        const char *ticket_key) {
  weft_reactor *r = NULL;
  weft_cert_options *o = NULL;
  weft_listener *l = NULL;
  weft_factory f = {.build_protocol = child_build};
  struct event *ev = NULL;
  int status = 1;
  if (weft_reactor_new(&r) != 0 || weft_cert_options_new(&o) != 0 ||
      weft_cert_options_load_certificate_chain_file(o, cert) != 0 ||
      weft_cert_options_load_private_key_file(o, key) != 0 ||
      weft_cert_options_add_ticket_key_file(o, ticket_key) != 0 ||
      weft_cert_options_set_session_cache(o, 0) != 0 ||
      weft_cert_options_set_tls_versions(o, version, version) != 0 ||
      weft_listen_ssl(r, "127.0.0.1", 0, &f, o, &l) != 0)
    goto out;
  ev = event_new(weft_reactor_event_base(r), sock, EV_READ | EV_PERSIST, child_on_control, NULL);
  if (ev == NULL || event_add(ev, NULL) != 0)
    goto out;
  int port = weft_listener_port(l);
  if (write(sock, &port, sizeof port) != (ssize_t)sizeof port)
    goto out;
  status = weft_reactor_run_until(r, child_should_quit, NULL, 60.0) == 0 ? 0 : 3;
out:
  if (ev != NULL)
    event_free(ev);
  weft_listener_stop(l);
  weft_reactor_free(r);
  weft_cert_options_unref(o);
  close(sock);
  _exit(status);
}

typedef struct fleet_server {
  pid_t pid;
  int sock; /* the parent's end: closing it stops the child */
  int port;
} fleet_server;

/* CLOSE_FD (or -1): a descriptor of the parent the child must not keep (another child's
 * control socket, whose EOF would otherwise never come). */
static void fleet_start(fleet_server *s, int version, const char *cert, const char *key,
                        const char *ticket_key, int close_fd) {
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  pid_t parent = getpid();
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
    if (getppid() != parent)
      _exit(127);
    close(sv[0]);
    if (close_fd >= 0)
      close(close_fd);
    fleet_child(sv[1], version, cert, key, ticket_key);
  }
  close(sv[1]);
  s->pid = pid;
  s->sock = sv[0];
  struct pollfd pfd = {s->sock, POLLIN, 0};
  int ready = poll(&pfd, 1, (int)(WAIT * 1000));
  ck_assert_msg(ready == 1, "the server process did not report its port");
  ck_assert_int_eq(read(s->sock, &s->port, sizeof s->port), (ssize_t)sizeof s->port);
  ck_assert_int_gt(s->port, 0);
}

/* Stops the child (closes its socket) and checks it exited with status 0. */
static void fleet_stop(fleet_server *s) {
  close(s->sock);
  int status = 0;
  double deadline = tu_now() + WAIT;
  pid_t p;
  while ((p = waitpid(s->pid, &status, WNOHANG)) == 0 && tu_now() < deadline) {
    struct pollfd none;
    poll(&none, 0, 10); /* a bounded wait for the child's exit, which has no descriptor */
  }
  if (p == 0) {
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    ck_abort_msg("the server process did not exit");
  }
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                "the server process ended with status 0x%x", status);
}

/* openssl s_client as a child process, its output collected by a reactor. */
typedef struct sclient {
  pid_t pid;
  int in_fd, out_fd;
  struct event *ev;
  char out[65536];
  size_t out_len;
  int eof;
} sclient;

static void sclient_on_output(evutil_socket_t fd, short what, void *arg) {
  sclient *c = arg;
  (void)what;
  for (;;) {
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      size_t room = sizeof c->out - 1 - c->out_len;
      size_t k = (size_t)n < room ? (size_t)n : room;
      memcpy(c->out + c->out_len, buf, k);
      c->out_len += k;
      c->out[c->out_len] = '\0';
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0 || errno != EAGAIN) {
      c->eof = 1;
      event_del(c->ev);
    }
    return;
  }
}

static void sclient_start(sclient *c, weft_reactor *r, char *const argv[]) {
  int in[2], out[2];
  memset(c, 0, sizeof *c);
  ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
  pid_t parent = getpid();
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
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
  ck_assert_int_eq(fcntl(c->out_fd, F_SETFL, O_NONBLOCK), 0);
  c->ev =
      event_new(weft_reactor_event_base(r), c->out_fd, EV_READ | EV_PERSIST, sclient_on_output, c);
  ck_assert_ptr_nonnull(c->ev);
  ck_assert_int_eq(event_add(c->ev, NULL), 0);
}

static void sclient_close_stdin(sclient *c) {
  if (c->in_fd >= 0)
    close(c->in_fd);
  c->in_fd = -1;
}

static int sclient_eof(void *arg) {
  return ((sclient *)arg)->eof;
}

/* Closes its stdin, runs the reactor until its output ends, reaps it (killing it if it does not
 * exit in time) and frees the event. */
static void sclient_finish(sclient *c, weft_reactor *r) {
  sclient_close_stdin(c);
  weft_reactor_run_until(r, sclient_eof, c, WAIT);
  event_free(c->ev);
  close(c->out_fd);
  int status;
  double deadline = tu_now() + WAIT;
  while (waitpid(c->pid, &status, WNOHANG) == 0) {
    if (tu_now() >= deadline) {
      kill(c->pid, SIGKILL);
      waitpid(c->pid, &status, 0);
      ck_abort_msg("s_client did not exit; output:\n%s", c->out);
    }
    struct pollfd none;
    poll(&none, 0, 10);
  }
}

typedef struct file_wait {
  const char *path;
  sclient *c;
} file_wait;

/* The session file is complete (or s_client ended). */
static int session_written(void *arg) {
  file_wait *fw = arg;
  if (fw->c->eof)
    return 1;
  char buf[16384];
  FILE *f = fopen(fw->path, "r");
  if (f == NULL)
    return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strstr(buf, "-----END SSL SESSION PARAMETERS-----") != NULL;
}

/* Two server processes build their own options from the same files; a session that s_client
 * got from the first resumes on the second, and not on a server with other keys (this
 * process's own listener). */
START_TEST(test_fleet_processes) {
  int v = version_of(_i);
  const char *found = tu_find_program("openssl");
  if (found == NULL) {
    printf("SKIP: test_fleet_processes: `openssl` is not on PATH (Debian package: openssl)\n");
    return;
  }
  char openssl[4096];
  snprintf(openssl, sizeof openssl, "%s", found);
  int fds = tu_count_fds();
  long allocs = weft_allocations_outstanding();
  tu_pki pki;
  tu_pki_init(&pki);
  char *cert = tu_write_cert_pem(pki.server_cert);
  char *key = tu_write_key_pem(pki.server_key);
  uint8_t ticket_key[WEFT_TICKET_KEY_SIZE];
  random_key(ticket_key);
  char *ticket_path = tu_write_temp_file(ticket_key, sizeof ticket_key);
  char *session = tu_write_temp_file("", 0);

  fleet_server a, b;
  fleet_start(&a, v, cert, key, ticket_path, -1);
  fleet_start(&b, v, cert, key, ticket_path, a.sock);
  ck_assert_int_ne(a.port, b.port);

  /* This process: a reactor for s_client's output and a server with its own keys. */
  weft_reactor *r = tu_reactor_new();
  tu_factory own;
  tu_factory_init(&own);
  weft_cert_options *own_opts = tu_server_options(&pki);
  tu_check_opt(own_opts, weft_cert_options_set_session_cache(own_opts, 0));
  int own_port;
  tu_listen_ssl_local(r, &own, own_opts, &own_port);

  const char *vflag = v == WEFT_TLS1_2 ? "-tls1_2" : "-tls1_3";
  char target[64];
  sclient c;

  /* 1: a full handshake with A; s_client writes the session once the ticket arrived. */
  snprintf(target, sizeof target, "127.0.0.1:%d", a.port);
  char *first[] = {openssl,       "s_client",  "-connect", target, "-noservername",
                   (char *)vflag, "-sess_out", session,    NULL};
  /* Under ThreadSanitizer on a loaded machine s_client once saw no ticket from the server
   * child within WAIT (cause not found: the child's side is not visible here): up to three
   * attempts, each said on stdout, before the test fails. */
  for (int attempt = 1;; attempt++) {
    sclient_start(&c, r, first);
    file_wait fw = {session, &c};
    double deadline = tu_now() + WAIT;
    while (!session_written(&fw) && tu_now() < deadline) /* each pass ends within 0.1 s */
      weft_reactor_run_until(r, session_written, &fw, 0.1);
    if (session_written(&fw) && !c.eof)
      break;
    ck_assert_msg(attempt < 3, "no session from server A in %d attempts; s_client said:\n%s",
                  attempt, c.out);
    printf("test_fleet_processes: attempt %d got no session from server A; again\n", attempt);
    kill(c.pid, SIGKILL);
    sclient_finish(&c, r);
  }
  sclient_finish(&c, r);
  ck_assert_msg(strstr(c.out, "New, TLS") != NULL, "first handshake not new:\n%s", c.out);

  /* 2: B resumes it. */
  snprintf(target, sizeof target, "127.0.0.1:%d", b.port);
  char *second[] = {openssl,       "s_client", "-connect", target, "-noservername",
                    (char *)vflag, "-sess_in", session,    NULL};
  sclient_start(&c, r, second);
  sclient_finish(&c, r);
  char expect[32];
  snprintf(expect, sizeof expect, "Reused, %s", version_name(v));
  ck_assert_msg(strstr(c.out, expect) != NULL, "server B did not resume A's session:\n%s", c.out);

  /* 3: the control, a server with its own keys: a full handshake. */
  snprintf(target, sizeof target, "127.0.0.1:%d", own_port);
  char *third[] = {openssl,       "s_client", "-connect", target, "-noservername",
                   (char *)vflag, "-sess_in", session,    NULL};
  sclient_start(&c, r, third);
  sclient_finish(&c, r);
  snprintf(expect, sizeof expect, "New, %s", version_name(v));
  ck_assert_msg(strstr(c.out, expect) != NULL, "a server with other keys:\n%s", c.out);

  fleet_stop(&a);
  fleet_stop(&b);
  weft_reactor_free(r);
  tu_factory_check(&own);
  tu_factory_cleanup(&own);
  weft_cert_options_unref(own_opts);
  tu_remove_file(session);
  tu_remove_file(ticket_path);
  tu_remove_file(cert);
  tu_remove_file(key);
  tu_pki_free(&pki);
  ck_assert_int_eq(weft_allocations_outstanding(), allocs);
  ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

/* --- Options shared by reactors in several threads ------------------------------------------ */

#define TWORKERS 4
#define TCONNS 25 /* sequential connections per worker */

/* One worker: its own reactor and listener; every worker shares one server options object
 * (automatic keys with a short lifetime, so that rotation happens while other threads seal and
 * open tickets) and one client options object (one cache for all). Workers never call Check's
 * assertions: they count, and the main thread asserts after joining. */
typedef struct tworker {
  weft_cert_options *sopts, *copts;
  weft_reactor *r;
  int port;
  weft_protocol client, server;
  weft_factory client_factory, server_factory;
  int started, done, resumed, failures;
  char error[256];
} tworker;

static void tw_error(tworker *w, const char *what, int code) {
  if (w->failures++ == 0)
    snprintf(w->error, sizeof w->error, "%s: %s", what, weft_err_name(code));
}

static void tw_connect(tworker *w) {
  w->started++;
  int rc = tu_connect(w->r, "127.0.0.1", w->port, &w->client_factory, w->copts, "localhost", 10,
                      NULL, NULL);
  if (rc != 0)
    tw_error(w, "weft_connect_ssl", rc);
}

static void tw_client_made(weft_protocol *p, weft_transport *t) {
  tworker *w = p->data;
  w->resumed += weft_transport_tls_session_reused(t);
  int rc = weft_transport_write(t, "x", 1);
  if (rc != 0)
    tw_error(w, "write", rc);
}

static void tw_client_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  (void)p;
  (void)data;
  (void)len;
  weft_transport_lose_connection(t);
}

static void tw_client_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  tworker *w = p->data;
  (void)t;
  if (reason->code != WEFT_OK)
    tw_error(w, "client connection_lost", reason->code);
  w->done++;
  if (w->started < TCONNS)
    tw_connect(w);
}

static void tw_echo(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  (void)p;
  weft_transport_write(t, data, len);
}

static const weft_protocol_ops tw_client_ops = {.connection_made = tw_client_made,
                                                .data_received = tw_client_data,
                                                .connection_lost = tw_client_lost};
static const weft_protocol_ops tw_server_ops = {.data_received = tw_echo};

static weft_protocol *tw_build_client(weft_factory *f, weft_transport *t,
                                      const struct sockaddr *peer) {
  (void)t;
  (void)peer;
  return &((tworker *)f->data)->client;
}

static weft_protocol *tw_build_server(weft_factory *f, weft_transport *t,
                                      const struct sockaddr *peer) {
  (void)t;
  (void)peer;
  return &((tworker *)f->data)->server;
}

static void tw_failed(weft_factory *f, const weft_reason *reason) {
  tworker *w = f->data;
  tw_error(w, "connection_failed", reason->code);
  w->done++;
  if (w->started < TCONNS)
    tw_connect(w);
}

static int tw_finished(void *arg) {
  return ((tworker *)arg)->done >= TCONNS;
}

static void *tw_main(void *arg) {
  tworker *w = arg;
  w->client = (weft_protocol){&tw_client_ops, w};
  w->server = (weft_protocol){&tw_server_ops, w};
  w->client_factory =
      (weft_factory){.build_protocol = tw_build_client, .connection_failed = tw_failed, .data = w};
  w->server_factory = (weft_factory){.build_protocol = tw_build_server, .data = w};
  weft_listener *l = NULL;
  int rc = weft_reactor_new(&w->r);
  if (rc == 0)
    rc = weft_listen_ssl(w->r, "127.0.0.1", 0, &w->server_factory, w->sopts, &l);
  if (rc != 0) {
    tw_error(w, "set-up", rc);
  } else {
    w->port = weft_listener_port(l);
    tw_connect(w);
    rc = weft_reactor_run_until(w->r, tw_finished, w, 60);
    if (rc != 0)
      tw_error(w, "run_until", rc);
  }
  weft_listener_stop(l);
  weft_reactor_free(w->r);
  return NULL;
}

START_TEST(test_shared_across_threads) {
  long allocs = weft_allocations_outstanding();
  int fds = tu_count_fds();
  tu_pki pki;
  tu_pki_init(&pki);
  weft_cert_options *sopts = tu_server_options(&pki);
  tu_check_opt(sopts, weft_cert_options_set_session_cache(sopts, 0));
  tu_check_opt(sopts, weft_cert_options_set_ticket_key_lifetime(sopts, 0.3));
  weft_cert_options *copts = tu_client_options(&pki);
  tworker w[TWORKERS];
  pthread_t threads[TWORKERS];
  memset(w, 0, sizeof w);
  for (int i = 0; i < TWORKERS; i++) {
    w[i].sopts = sopts;
    w[i].copts = copts;
    ck_assert_int_eq(pthread_create(&threads[i], NULL, tw_main, &w[i]), 0);
  }
  for (int i = 0; i < TWORKERS; i++)
    ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
  for (int i = 0; i < TWORKERS; i++) {
    ck_assert_msg(w[i].failures == 0, "worker %d: %d failures, the first: %s", i, w[i].failures,
                  w[i].error);
    ck_assert_int_eq(w[i].done, TCONNS);
    ck_assert_msg(w[i].resumed >= 1, "worker %d: no connection resumed", i);
  }
  /* one session per worker's port */
  ck_assert_uint_eq(weft__tls_cached_sessions(copts, NULL), TWORKERS);
  weft_cert_options_unref(sopts);
  weft_cert_options_unref(copts);
  tu_pki_free(&pki);
  ck_assert_int_eq(weft_allocations_outstanding(), allocs);
  ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

/* --- The client cache's bound ------------------------------------------------------------ */

/* 101 server names: the cache keeps 100, the least recently used goes. The server's
 * certificate is for *.wild.example, so that every name verifies (only sessions whose
 * identity was checked are cached). */
START_TEST(test_cache_bound) {
  const int v = WEFT_TLS1_2; /* the session is stored at the handshake's end: no round trip */
  world w;
  world_init(&w);
  void *wild = tu_make_cert(w.pki.server_key, w.pki.ca_key, w.pki.ca_cert, "wild", "*.wild.example",
                            NULL, 0, 0);
  weft_cert_options *sopts = world_keep(&w, tu_options_with_identity(w.pki.server_key, wild));
  X509_free(wild);
  tu_check_opt(sopts, weft_cert_options_set_tls_versions(sopts, v, v));
  weft_cert_options *copts = client_opts(&w, v);
  int port;
  listen_on(&w, sopts, 0, &port);
  char name[64];
  for (int i = 0; i <= WEFT__SESSION_CACHE_MAX; i++) {
    snprintf(name, sizeof name, "h%d.wild.example", i);
    conn_spec spec = {port, copts, name, v, CLIENT_CLOSES, 1};
    ck_assert_resumed(run_connection(&w, &spec), 0, name);
    tu_factory_reap(&w.client);
    tu_factory_reap(&w.server);
  }
  ck_assert_uint_eq(weft__tls_cached_sessions(copts, NULL), WEFT__SESSION_CACHE_MAX);
  ck_assert_resumed(connect_once(&w, port, copts, "h1.wild.example", v), 1, "h1, kept");
  ck_assert_resumed(connect_once(&w, port, copts, "h0.wild.example", v), 0, "h0, evicted");
  /* storing h0 again evicted the least recently used: h2 (h1 was just used) */
  ck_assert_resumed(connect_once(&w, port, copts, "h1.wild.example", v), 1, "h1, still kept");
  ck_assert_resumed(connect_once(&w, port, copts, "h2.wild.example", v), 0, "h2, evicted");
  ck_assert_uint_eq(weft__tls_cached_sessions(copts, NULL), WEFT__SESSION_CACHE_MAX);
  world_free(&w);
}
END_TEST

/* --- Bad input ------------------------------------------------------------------------------ */

static int contains(const char *haystack, const char *needle) {
  return haystack != NULL && strstr(haystack, needle) != NULL;
}

START_TEST(test_bad_input) {
  long allocs = weft_allocations_outstanding();
  int fds = tu_count_fds();
  weft_cert_options *o;
  ck_assert_int_eq(weft_cert_options_new(&o), 0);
  uint8_t key[WEFT_TICKET_KEY_SIZE + 1];
  random_key(key);
  key[WEFT_TICKET_KEY_SIZE] = 0x5a;

  /* NULLs */
  ck_assert_int_eq(weft_cert_options_add_ticket_key_file(NULL, "x"), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_add_ticket_key_file(o, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_add_ticket_key(NULL, key, WEFT_TICKET_KEY_SIZE), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_add_ticket_key(o, NULL, WEFT_TICKET_KEY_SIZE), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_ticket_key_lifetime(NULL, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_session_reuse(NULL, 1), WEFT_EINVAL);

  /* A missing file: EIO, naming the path and the reason. */
  const char *missing = "/nonexistent-weft-dir/ticket.key";
  ck_assert_int_eq(weft_cert_options_add_ticket_key_file(o, missing), WEFT_EIO);
  ck_assert_msg(contains(weft_cert_options_last_error(o), missing) &&
                    contains(weft_cert_options_last_error(o), strerror(ENOENT)),
                "message: %s", weft_cert_options_last_error(o));
  /* A directory: not a regular file, EINVAL (issue 11: special files are refused, see
   * check_isolation.c for a FIFO). */
  ck_assert_int_eq(weft_cert_options_add_ticket_key_file(o, "/"), WEFT_EINVAL);
  ck_assert_msg(contains(weft_cert_options_last_error(o), "'/'") &&
                    contains(weft_cert_options_last_error(o), "not a regular file"),
                "message: %s", weft_cert_options_last_error(o));

  /* Wrong sizes: EINVAL with the size found. */
  static const size_t sizes[] = {0, 79, 81, 160};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    uint8_t big[160];
    memset(big, 7, sizeof big);
    char *path = tu_write_temp_file(big, sizes[i]);
    ck_assert_int_eq(weft_cert_options_add_ticket_key_file(o, path), WEFT_EINVAL);
    char size[32];
    snprintf(size, sizeof size, "holds %zu bytes", sizes[i]);
    ck_assert_msg(contains(weft_cert_options_last_error(o), size) &&
                      contains(weft_cert_options_last_error(o), path),
                  "size %zu: message: %s", sizes[i], weft_cert_options_last_error(o));
    tu_remove_file(path);
    ck_assert_int_eq(weft_cert_options_add_ticket_key(o, big, sizes[i]), WEFT_EINVAL);
    snprintf(size, sizeof size, "not %zu", sizes[i]);
    ck_assert_msg(contains(weft_cert_options_last_error(o), size), "size %zu: message: %s",
                  sizes[i], weft_cert_options_last_error(o));
  }

  /* Bad lifetimes. */
  ck_assert_int_eq(weft_cert_options_set_ticket_key_lifetime(o, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_ticket_key_lifetime(o, -1), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_ticket_key_lifetime(o, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_ticket_key_lifetime(o, INFINITY), WEFT_EINVAL);
  ck_assert_int_eq(weft_cert_options_set_ticket_key_lifetime(o, 0.5), 0);

  /* Good keys; a second key with the same name is refused. */
  char *path = tu_write_temp_file(key, WEFT_TICKET_KEY_SIZE);
  ck_assert_int_eq(weft_cert_options_add_ticket_key_file(o, path), 0);
  uint8_t same_name[WEFT_TICKET_KEY_SIZE];
  memcpy(same_name, key, sizeof same_name);
  same_name[40] ^= 1;
  ck_assert_int_eq(weft_cert_options_add_ticket_key(o, same_name, sizeof same_name), WEFT_EINVAL);
  ck_assert_msg(contains(weft_cert_options_last_error(o), "same name"), "message: %s",
                weft_cert_options_last_error(o));
  same_name[0] ^= 1;
  ck_assert_int_eq(weft_cert_options_add_ticket_key(o, same_name, sizeof same_name), 0);
  ck_assert_int_eq(weft_cert_options_set_session_reuse(o, 0), 0);
  ck_assert_int_eq(weft_cert_options_set_session_reuse(o, 1), 0);

  /* Frozen. */
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_CLIENT), 0);
  ck_assert_int_eq(weft_cert_options_add_ticket_key_file(o, path), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_add_ticket_key(o, key, WEFT_TICKET_KEY_SIZE), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_ticket_key_lifetime(o, 1), WEFT_EFROZEN);
  ck_assert_int_eq(weft_cert_options_set_session_reuse(o, 0), WEFT_EFROZEN);
  ck_assert_int_eq(weft__tls_cached_sessions(o, NULL), 0);
  tu_remove_file(path);
  weft_cert_options_unref(o);
  ck_assert_int_eq(weft_allocations_outstanding(), allocs);
  ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

/* --- The suite ------------------------------------------------------------------------------- */

static Suite *resume_suite(void) {
  Suite *s = suite_create("resume");
  TCase *tc = tcase_create("client");
  tcase_add_loop_test(tc, test_reuse, 0, 8);
  tcase_add_loop_test(tc, test_reuse_off, 0, 2);
  tcase_add_loop_test(tc, test_other_port, 0, 2);
  tcase_add_loop_test(tc, test_other_name, 0, 2);
  tcase_add_loop_test(tc, test_other_options, 0, 2);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);

  tc = tcase_create("close");
  tcase_add_loop_test(tc, test_clean_close_keeps_session, 0, 8);
  tcase_add_loop_test(tc, test_abort_drops_session, 0, 4);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);

  tc = tcase_create("tickets");
  tcase_add_loop_test(tc, test_key_file_shared, 0, 2);
  tcase_add_loop_test(tc, test_key_rotation, 0, 2);
  tcase_add_loop_test(tc, test_auto_rotation_expires, 0, 2);
  tcase_add_loop_test(tc, test_auto_rotation_grace, 0, 2);
  tcase_add_loop_test(tc, test_fleet_processes, 0, 2);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);

  tc = tcase_create("cache");
  tcase_add_test(tc, test_cache_bound);
  tcase_add_test(tc, test_shared_across_threads);
  tcase_set_timeout(tc, 300);
  suite_add_tcase(s, tc);

  tc = tcase_create("input");
  tcase_add_test(tc, test_bad_input);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(resume_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
