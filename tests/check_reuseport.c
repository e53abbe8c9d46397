/* tests/check_reuseport.c: listeners that share a port (weft_endpoint_set_reuseport), the way a
 * multi-core weft server runs: one reactor per thread, each with its own listener on the same
 * address and port, the kernel spreading new connections among them.
 *
 * test_spread_tcp (2 and 4 reactors, NCONNS_TCP connections) and test_spread_tls (2 reactors,
 * NCONNS_TLS connections): worker threads each run a reactor with a shared-port echo listener
 * (the first asks for port 0, the others pass the port it got). A client reactor in the main
 * thread opens every connection at once; each client sends "conn ID\n", checks the echo and
 * closes. Each server connection reports the ID it served to the main thread through
 * weft_reactor_call_from_thread, so the main reactor simply runs until every client has ended
 * and every report has arrived (no sleeps, bounded by DEADLINE). Then it asserts:
 *  - every connection succeeded, was echoed exactly, and was served exactly once, by one
 *    reactor (served[ID] == 1 for every ID; server made/lost counts add up);
 *  - every reactor served at least a quarter of its fair share, NCONNS / (4 * NWORKERS). The
 *    kernel (Linux) picks the listener by a hash of the connection's 4-tuple, and the clients'
 *    ephemeral ports differ, so each reactor's count is about Binomial(NCONNS, 1 / NWORKERS):
 *    the chance that one falls below the bound is below 1e-11 for the TCP cases (200
 *    connections) and about 2e-7 for TLS (40 connections, 2 reactors), while a kernel that
 *    did not spread (everything to one listener) fails it at once;
 *  - while the group listens, a plain listener on the port fails with WEFT_EADDRINUSE;
 *  - no file descriptor is left open once everything is freed.
 * Workers never call Check's assertions: they record errors, and the main thread asserts after
 * joining them (as in check_threads.c).
 *
 * test_addr_in_use: in one reactor, shared listeners join a group; a plain listener on a
 * group's port, and a shared one on a plain listener's port, fail with WEFT_EADDRINUSE; port 0
 * never joins an existing group; stopping the group frees the port.
 *
 * test_bad_arguments: WEFT_EINVAL for unknown flags and the usual bad arguments, with *OUT
 * cleared. (WEFT_ENOTSUP, for systems without SO_REUSEPORT, cannot happen on Linux.)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "tlsutil.h"

#define MAX_WORKERS 4
#define NCONNS_TCP 200
#define NCONNS_TLS 40
#define MAX_CONNS NCONNS_TCP
#define DEADLINE 60.0 /* seconds; valgrind is slow */
#define LINE_MAX_LEN 32

typedef struct world world;

/* --- Workers: a reactor and a shared-port echo listener each -------------------------- */

typedef struct worker {
  world *wd;
  int index;
  pthread_t thread;
  weft_reactor *r;      /* made, run and freed by the worker's thread */
  weft_factory factory; /* data: this worker */
  int port;             /* in: where to listen; out (before ready): the port bound */
  int setup_rc;         /* written before ready is posted */
  int run_rc;           /* read after the join */
  /* The worker's thread only, until the join. */
  int made, lost, errors;
  char error[256]; /* the first error */
} worker;

struct world {
  int nworkers, nconns, tls;
  weft_cert_options *server_opts; /* shared by the workers (prepared before they start) */
  worker w[MAX_WORKERS];
  sem_t ready;        /* a worker set up (or failed to) */
  sem_t release;      /* the main thread made its last call on the workers' reactors */
  weft_reactor *main; /* the clients' reactor, in the main thread */

  /* The main thread only (clients, and reports posted by the workers). */
  weft_factory client_factory;
  int clients_built, clients_ok, clients_lost, clients_failed, client_errors;
  char client_error[256];
  int served[MAX_CONNS]; /* reports per connection ID */
  int per_worker[MAX_WORKERS];
  int reports, bad_reports;
};

static void worker_error(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void worker_error(worker *w, const char *fmt, ...) {
  if (w->errors++ == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->error, sizeof w->error, fmt, ap);
    va_end(ap);
  }
}

/* A report from a worker's server connection, run in the main thread. */
typedef struct report {
  world *wd;
  int worker;
  int id; /* the connection ID served, or -1 when the connection went wrong */
} report;

static void on_report(void *arg) {
  report *rp = arg;
  world *wd = rp->wd;
  wd->reports++;
  if (rp->id < 0 || rp->id >= wd->nconns)
    wd->bad_reports++;
  else
    wd->served[rp->id]++;
  wd->per_worker[rp->worker]++;
  free(rp);
}

typedef struct echo {
  weft_protocol base; /* first member */
  worker *w;
  char line[LINE_MAX_LEN];
  size_t len;
  int id; /* parsed from the line; -1 until then */
} echo;

static void echo_made(weft_protocol *p, weft_transport *t) {
  (void)t;
  ((echo *)p)->w->made++;
}

/* Collects the line "conn ID\n", then echoes it. */
static void echo_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  echo *e = (echo *)p;
  if (e->id >= 0 || e->len + len >= sizeof e->line) {
    worker_error(e->w, "unexpected bytes from a client");
    weft_transport_abort_connection(t);
    return;
  }
  memcpy(e->line + e->len, data, len);
  e->len += len;
  e->line[e->len] = '\0';
  if (e->line[e->len - 1] != '\n')
    return;
  int id, n = 0;
  if (sscanf(e->line, "conn %d\n%n", &id, &n) != 1 || (size_t)n != e->len || id < 0) {
    worker_error(e->w, "bad line from a client: %s", e->line);
    weft_transport_abort_connection(t);
    return;
  }
  e->id = id;
  int rc = weft_transport_write(t, e->line, e->len);
  if (rc != 0)
    worker_error(e->w, "echo write: %s", weft_err_name(rc));
}

static void echo_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  echo *e = (echo *)p;
  worker *w = e->w;
  (void)t;
  w->lost++;
  if (reason->code != WEFT_OK)
    worker_error(w, "server connection lost: %s: %s", weft_err_name(reason->code), reason->message);
  report *rp = malloc(sizeof *rp);
  if (rp != NULL) {
    rp->wd = w->wd;
    rp->worker = w->index;
    rp->id = reason->code == WEFT_OK ? e->id : -1;
    if (weft_reactor_call_from_thread(w->wd->main, on_report, rp) != 0) {
      free(rp);
      rp = NULL;
    }
  }
  if (rp == NULL)
    worker_error(w, "cannot report to the main thread");
  free(e);
}

static const weft_protocol_ops echo_ops = {
    .connection_made = echo_made, .data_received = echo_data, .connection_lost = echo_lost};

static weft_protocol *build_echo(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)t, (void)peer;
  worker *w = f->data;
  echo *e = calloc(1, sizeof *e);
  if (e == NULL) {
    worker_error(w, "out of memory");
    return NULL;
  }
  e->base.ops = &echo_ops;
  e->w = w;
  e->id = -1;
  return &e->base;
}

static void server_handshake_failed(weft_factory *f, const struct sockaddr *peer,
                                    const weft_reason *reason) {
  (void)peer;
  worker_error(f->data, "server handshake failed: %s: %s", weft_err_name(reason->code),
               reason->message);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  world *wd = w->wd;
  weft_listener *l = NULL;
  int rc = weft_reactor_new(&w->r);
  if (rc == 0)
    rc = wd->tls
             ? tu_listen(w->r, "127.0.0.1", w->port, &w->factory, wd->server_opts, 0,
                         TU_LISTEN_REUSEPORT, &l)
             : tu_listen(w->r, "127.0.0.1", w->port, &w->factory, NULL, 0, TU_LISTEN_REUSEPORT, &l);
  if (rc == 0) {
    w->port = weft_listener_port(l);
  } else {
    weft_reactor_free(w->r);
    w->r = NULL;
  }
  w->setup_rc = rc;
  sem_post(&wd->ready);
  if (rc != 0)
    return NULL;
  w->run_rc = weft_reactor_run(w->r); /* until the main thread stops it */
  sem_wait(&wd->release);             /* no weft_reactor_stop may come after the free */
  weft_reactor_free(w->r);
  w->r = NULL;
  return NULL;
}

/* --- Clients, in the main thread -------------------------------------------------------- */

typedef struct client {
  weft_protocol base; /* first member */
  world *wd;
  char line[LINE_MAX_LEN];
  size_t len;    /* bytes of line */
  size_t echoed; /* bytes received back, checked */
} client;

static void client_error(world *wd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void client_error(world *wd, const char *fmt, ...) {
  if (wd->client_errors++ == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(wd->client_error, sizeof wd->client_error, fmt, ap);
    va_end(ap);
  }
}

static void client_made(weft_protocol *p, weft_transport *t) {
  client *c = (client *)p;
  int rc = weft_transport_write(t, c->line, c->len);
  if (rc != 0)
    client_error(c->wd, "client write: %s", weft_err_name(rc));
}

static void client_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  client *c = (client *)p;
  if (c->echoed + len > c->len || memcmp(data, c->line + c->echoed, len) != 0) {
    client_error(c->wd, "wrong echo for %.*s", (int)(c->len - 1), c->line);
    weft_transport_abort_connection(t);
    return;
  }
  c->echoed += len;
  if (c->echoed == c->len)
    weft_transport_lose_connection(t);
}

static void client_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  client *c = (client *)p;
  world *wd = c->wd;
  (void)t;
  wd->clients_lost++;
  if (reason->code == WEFT_OK && c->echoed == c->len)
    wd->clients_ok++;
  else
    client_error(wd, "client lost after %zu of %zu bytes: %s: %s", c->echoed, c->len,
                 weft_err_name(reason->code), reason->message);
  free(c);
}

static const weft_protocol_ops client_ops = {
    .connection_made = client_made, .data_received = client_data, .connection_lost = client_lost};

/* Connection IDs are given in build order: 0 .. nconns-1, one per connection. */
static weft_protocol *build_client(weft_factory *f, weft_transport *t,
                                   const struct sockaddr *peer) {
  (void)t, (void)peer;
  world *wd = f->data;
  client *c = calloc(1, sizeof *c);
  if (c == NULL) {
    client_error(wd, "out of memory");
    return NULL;
  }
  c->base.ops = &client_ops;
  c->wd = wd;
  c->len = (size_t)snprintf(c->line, sizeof c->line, "conn %d\n", wd->clients_built++);
  return &c->base;
}

static void client_failed(weft_factory *f, const weft_reason *reason) {
  world *wd = f->data;
  wd->clients_failed++;
  client_error(wd, "connection failed: %s: %s", weft_err_name(reason->code), reason->message);
}

static int all_reported(void *arg) {
  world *wd = arg;
  return wd->clients_lost + wd->clients_failed >= wd->nconns && wd->reports >= wd->clients_built;
}

/* --- The spread tests ----------------------------------------------------------------- */

static void run_spread(int nworkers, int nconns, int tls) {
  int fds_before = tu_count_fds();
  world *wd = calloc(1, sizeof *wd);
  ck_assert_ptr_nonnull(wd);
  wd->nworkers = nworkers;
  wd->nconns = nconns;
  wd->tls = tls;
  tu_pki pki;
  weft_cert_options *client_opts = NULL;
  if (tls) {
    tu_pki_init(&pki);
    wd->server_opts = tu_server_options(&pki);
    client_opts = tu_client_options(&pki);
    tu_check_opt(wd->server_opts, weft_cert_options_prepare(wd->server_opts, WEFT_TLS_SERVER));
  }
  wd->main = tu_reactor_new();
  wd->client_factory.build_protocol = build_client;
  wd->client_factory.connection_failed = client_failed;
  wd->client_factory.data = wd;
  ck_assert_int_eq(sem_init(&wd->ready, 0, 0), 0);
  ck_assert_int_eq(sem_init(&wd->release, 0, 0), 0);

  /* The first worker picks the port; the others join it, one after the other. */
  int started = 0, running = 0, port = 0;
  for (int i = 0; i < nworkers; i++) {
    worker *w = &wd->w[i];
    w->wd = wd;
    w->index = i;
    w->port = port;
    w->factory.build_protocol = build_echo;
    w->factory.handshake_failed = server_handshake_failed;
    w->factory.data = w;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
      break;
    started++;
    while (sem_wait(&wd->ready) != 0 && errno == EINTR) {
    }
    if (w->setup_rc != 0)
      break;
    running++;
    port = w->port;
  }

  /* While the group listens, a listener without the flag cannot have the port. */
  weft_factory plain = {.build_protocol = build_client};
  weft_listener *l = (weft_listener *)&plain; /* any non-NULL value: must be cleared */
  int plain_rc =
      running > 0 ? weft_listen_tcp(wd->main, "127.0.0.1", port, &plain, &l) : WEFT_EADDRINUSE;

  int connect_errors = 0, rc = WEFT_EINVAL;
  if (running == nworkers) {
    for (int i = 0; i < nconns; i++) {
      int crc = tls ? tu_connect(wd->main, "127.0.0.1", port, &wd->client_factory, client_opts,
                                 "localhost", 30.0, NULL, NULL)
                    : weft_connect_tcp(wd->main, "127.0.0.1", port, &wd->client_factory, NULL);
      connect_errors += crc != 0;
    }
    rc = weft_reactor_run_until(wd->main, all_reported, wd, DEADLINE);
  }

  /* Stop the workers from this thread, let them free their reactors, join. */
  int stop_errors = 0;
  for (int i = 0; i < running; i++)
    stop_errors += weft_reactor_stop(wd->w[i].r) != 0;
  for (int i = 0; i < running; i++)
    sem_post(&wd->release);
  for (int i = 0; i < started; i++)
    pthread_join(wd->w[i].thread, NULL);
  sem_destroy(&wd->ready);
  sem_destroy(&wd->release);

  /* Setup, then every count. */
  for (int i = 0; i < started; i++)
    ck_assert_msg(wd->w[i].setup_rc == 0, "worker %d: listen on port %d: %s", i, wd->w[i].port,
                  weft_err_name(wd->w[i].setup_rc));
  ck_assert_msg(started == nworkers, "could not start worker %d", started);
  for (int i = 0; i < nworkers; i++)
    ck_assert_int_eq(wd->w[i].port, port);
  ck_assert_msg(plain_rc == WEFT_EADDRINUSE, "plain listener on a shared port: %s",
                weft_err_name(plain_rc));
  ck_assert_ptr_null(l);
  ck_assert_int_eq(connect_errors, 0);
  ck_assert_int_eq(stop_errors, 0);
  ck_assert_msg(rc == 0, "%s after %.0f s: clients ok %d lost %d failed %d, reports %d (%s)",
                weft_err_name(rc), DEADLINE, wd->clients_ok, wd->clients_lost, wd->clients_failed,
                wd->reports, wd->client_error);
  ck_assert_msg(wd->client_errors == 0, "%d client errors, the first: %s", wd->client_errors,
                wd->client_error);
  ck_assert_int_eq(wd->clients_built, nconns);
  ck_assert_int_eq(wd->clients_ok, nconns);
  ck_assert_int_eq(wd->clients_failed, 0);
  ck_assert_int_eq(wd->reports, nconns);
  ck_assert_int_eq(wd->bad_reports, 0);
  for (int id = 0; id < nconns; id++)
    ck_assert_msg(wd->served[id] == 1, "connection %d served %d times", id, wd->served[id]);
  int min = nconns / (4 * nworkers), total = 0;
  char spread[128] = "";
  for (int i = 0; i < nworkers; i++) {
    worker *w = &wd->w[i];
    ck_assert_msg(w->errors == 0, "worker %d: %d errors, the first: %s", i, w->errors, w->error);
    ck_assert_int_eq(w->run_rc, 0);
    ck_assert_int_eq(w->made, wd->per_worker[i]);
    ck_assert_int_eq(w->lost, wd->per_worker[i]);
    total += wd->per_worker[i];
    size_t n = strlen(spread);
    snprintf(spread + n, sizeof spread - n, "%s%d", i ? " " : "", wd->per_worker[i]);
  }
  ck_assert_int_eq(total, nconns);
  for (int i = 0; i < nworkers; i++)
    ck_assert_msg(wd->per_worker[i] >= min,
                  "reactor %d served %d of %d connections, want at least %d (spread: %s)", i,
                  wd->per_worker[i], nconns, min, spread);
  printf("reuseport %s: %d reactors on port %d, %d connections spread %s (at least %d each)\n",
         tls ? "TLS" : "TCP", nworkers, port, nconns, spread, min);

  weft_reactor_free(wd->main);
  if (tls) {
    weft_cert_options_unref(wd->server_opts);
    weft_cert_options_unref(client_opts);
    tu_pki_free(&pki);
  }
  free(wd);
  ck_assert_int_eq(tu_count_fds(), fds_before);
}

START_TEST(test_spread_tcp) {
  run_spread(_i, NCONNS_TCP, 0);
}
END_TEST

START_TEST(test_spread_tls) {
  run_spread(2, NCONNS_TLS, 1);
}
END_TEST

/* --- One reactor: who may join a port -------------------------------------------------- */

START_TEST(test_addr_in_use) {
  int fds_before = tu_count_fds();
  weft_reactor *r = tu_reactor_new();
  tu_factory f;
  tu_factory_init(&f);
  weft_factory *fac = &f.base;
  weft_listener *a = NULL, *b = NULL, *c = (weft_listener *)fac, *p = NULL;

  /* A group of two on a port the kernel picks. */
  ck_assert_int_eq(tu_listen(r, "127.0.0.1", 0, fac, NULL, 0, TU_LISTEN_REUSEPORT, &a), 0);
  int port = weft_listener_port(a);
  ck_assert_int_gt(port, 0);
  ck_assert_int_eq(tu_listen(r, "127.0.0.1", port, fac, NULL, 0, TU_LISTEN_REUSEPORT, &b), 0);
  ck_assert_int_eq(weft_listener_port(b), port);
  /* Without the flag, in either form: refused, *OUT cleared. */
  ck_assert_int_eq(weft_listen_tcp(r, "127.0.0.1", port, fac, &c), WEFT_EADDRINUSE);
  ck_assert_ptr_null(c);
  c = (weft_listener *)fac;
  ck_assert_int_eq(tu_listen(r, "127.0.0.1", port, fac, NULL, 0, 0, &c), WEFT_EADDRINUSE);
  ck_assert_ptr_null(c);
  /* Port 0 with the flag picks another port: it never joins an existing group by chance. */
  ck_assert_int_eq(tu_listen(r, "127.0.0.1", 0, fac, NULL, 0, TU_LISTEN_REUSEPORT, &c), 0);
  ck_assert_int_ne(weft_listener_port(c), port);
  weft_listener_stop(c);

  /* A plain listener's port cannot be joined, with or without the flag. */
  ck_assert_int_eq(weft_listen_tcp(r, "127.0.0.1", 0, fac, &p), 0);
  int plain_port = weft_listener_port(p);
  c = (weft_listener *)fac;
  ck_assert_int_eq(tu_listen(r, "127.0.0.1", plain_port, fac, NULL, 0, TU_LISTEN_REUSEPORT, &c),
                   WEFT_EADDRINUSE);
  ck_assert_ptr_null(c);
  weft_listener_stop(p);

  /* The group holds the port while one member remains; once both stopped it is free. */
  weft_listener_stop(a);
  c = (weft_listener *)fac;
  ck_assert_int_eq(weft_listen_tcp(r, "127.0.0.1", port, fac, &c), WEFT_EADDRINUSE);
  ck_assert_ptr_null(c);
  weft_listener_stop(b);
  ck_assert_int_eq(weft_listen_tcp(r, "127.0.0.1", port, fac, &c), 0);
  ck_assert_int_eq(weft_listener_port(c), port);

  weft_reactor_free(r);
  ck_assert_int_eq(f.built, 0);
  tu_factory_check(&f);
  tu_factory_cleanup(&f);
  ck_assert_int_eq(tu_count_fds(), fds_before);
}
END_TEST

/* --- Bad arguments -------------------------------------------------------------------- */

START_TEST(test_bad_arguments) {
  int fds_before = tu_count_fds();
  weft_reactor *r = tu_reactor_new();
  tu_factory f;
  tu_factory_init(&f);
  weft_factory *fac = &f.base;
  weft_factory no_build = {0};
  tu_pki pki;
  tu_pki_init(&pki);
  weft_cert_options *opts = tu_server_options(&pki);
  const unsigned share = TU_LISTEN_REUSEPORT;
  weft_listener *junk = (weft_listener *)fac, *l;

#define EXPECT_EINVAL(call)                                                                        \
  do {                                                                                             \
    l = junk;                                                                                      \
    ck_assert_int_eq((call), WEFT_EINVAL);                                                         \
    ck_assert_ptr_null(l);                                                                         \
  } while (0)
  /* The arguments weft_listen_tcp / weft_listen_ssl refuse, with the flag (an endpoint). */
  EXPECT_EINVAL(tu_listen(NULL, "127.0.0.1", 0, fac, NULL, 0, share, &l));
  EXPECT_EINVAL(tu_listen(r, "127.0.0.1", 0, NULL, NULL, 0, share, &l));
  EXPECT_EINVAL(tu_listen(r, "127.0.0.1", 0, &no_build, NULL, 0, share, &l));
  EXPECT_EINVAL(tu_listen(r, "127.0.0.1", -1, fac, NULL, 0, share, &l));
  EXPECT_EINVAL(tu_listen(r, "127.0.0.1", 65536, fac, NULL, 0, share, &l));
  EXPECT_EINVAL(tu_listen(r, "localhost", 0, fac, NULL, 0, share, &l));
  EXPECT_EINVAL(weft_listen_ssl(r, "127.0.0.1", 0, fac, NULL, &l));
  EXPECT_EINVAL(tu_listen(NULL, "127.0.0.1", 0, fac, opts, 0, share, &l));
  EXPECT_EINVAL(tu_listen(r, "127.0.0.1", 0, &no_build, opts, 0, share, &l));
#undef EXPECT_EINVAL
  /* OUT may be NULL on failure too. */
  ck_assert_int_eq(tu_listen(r, "localhost", 0, fac, NULL, 0, share, NULL), WEFT_EINVAL);
  /* Options without an identity: weft_cert_options_prepare's error. */
  weft_cert_options *empty;
  ck_assert_int_eq(weft_cert_options_new(&empty), 0);
  l = junk;
  ck_assert_int_eq(tu_listen(r, "127.0.0.1", 0, fac, empty, 0, share, &l), WEFT_EINVAL);
  ck_assert_ptr_null(l);
  weft_cert_options_unref(empty);
  /* And the good call works, on TCP and TLS, with OUT NULL. */
  ck_assert_int_eq(tu_listen(r, "127.0.0.1", 0, fac, NULL, 0, share, NULL), 0);
  ck_assert_int_eq(tu_listen(r, "127.0.0.1", 0, fac, opts, 16, share, NULL), 0);

  weft_reactor_free(r); /* stops the two listeners */
  weft_cert_options_unref(opts);
  tu_pki_free(&pki);
  ck_assert_int_eq(f.built, 0);
  tu_factory_cleanup(&f);
  ck_assert_int_eq(tu_count_fds(), fds_before);
}
END_TEST

static Suite *reuseport_suite(void) {
  Suite *s = suite_create("reuseport");
  TCase *tc = tcase_create("spread");
  tcase_add_loop_test(tc, test_spread_tcp, 2, 3);
  tcase_add_loop_test(tc, test_spread_tcp, 4, 5);
  tcase_add_test(tc, test_spread_tls);
  tcase_set_timeout(tc, 2 * DEADLINE);
  suite_add_tcase(s, tc);
  TCase *tc_args = tcase_create("arguments");
  tcase_add_test(tc_args, test_addr_in_use);
  tcase_add_test(tc_args, test_bad_arguments);
  suite_add_tcase(s, tc_args);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(reuseport_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
