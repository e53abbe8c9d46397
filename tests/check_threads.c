/* tests/check_threads.c: several reactors in several threads, the way a multi-core weft server
 * runs (DESIGN.md, "Threading": one reactor per thread; weft_reactor_call_from_thread and
 * weft_reactor_stop are the only calls made across threads).
 *
 * test_reactors_in_threads: NWORKERS threads, each with its own reactor, a TCP and a TLS echo
 * listener, and clients (TCP and TLS) that connect to the NEXT worker's listeners and do ROUNDS
 * echo round trips each, checking every byte. All TLS connections of all threads share one
 * server and one client weft_cert_options object: frozen before the threads start (loop 0), or
 * frozen by whichever thread uses it first, so that building the SSL_CTXs races (loop 1).
 * Meanwhile every worker posts a storm of weft_reactor_call_from_thread calls to every other
 * worker from its reactor's callbacks, and the main thread posts to all of them; receivers
 * check that each sender's calls arrive complete and in order. Once every count is complete,
 * the main thread stops the reactors with weft_reactor_stop. Everything is counted and checked.
 *
 * test_stop_from_threads: weft_reactor_stop from other threads, racing with the loop starting,
 * running and stopping, and with call_from_thread storms; no stop may be lost.
 *
 * Built to run under ThreadSanitizer (ci/tsan.sh): threads share nothing but what the API says
 * may be shared, and the test's own cross-thread state is atomics or joins. Workers never call
 * Check's assertions (they record failures; the main thread asserts after joining). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "tlsutil.h"

#define NWORKERS 4
#define TCP_CLIENTS 2  /* per worker */
#define TLS_CLIENTS 2  /* per worker */
#define ROUNDS 200     /* echo round trips per client */
#define STORM 1000     /* calls each worker posts to each other worker */
#define STORM_CHUNK 50 /* ... per loop pass, to each other worker */
#define MAIN_CALLS 500 /* calls the main thread posts to each worker */
#define MAIN_SENDER NWORKERS
#define DEADLINE 120.0 /* seconds for the whole test; ThreadSanitizer is slow */

/* Bytes the client sends in round R (varied, up to a few kB, so TLS records and TCP segments
 * split differently). */
static size_t round_size(int r) {
  return 64 + (size_t)((r * 397) % 4000);
}

/* --- Workers ------------------------------------------------------------------------------- */

typedef struct worker worker;

typedef struct client {
  weft_protocol base; /* first member */
  worker *w;
  int tls;
  int round;         /* completed round trips */
  uint64_t sent;     /* bytes sent (pattern stream offset) */
  uint64_t received; /* bytes received and checked */
  int made, lost;
} client;

typedef struct echo {
  weft_protocol base; /* first member */
  worker *w;
} echo;

struct worker {
  int index;
  pthread_t thread; /* for the main thread (pthread_create may store it after the start) */
  pthread_t self;   /* set by the worker's thread itself */
  weft_reactor *r;  /* created and freed by the worker's thread */
  weft_cert_options *server_opts, *client_opts; /* shared by all workers */
  weft_factory server_factory, client_factory;
  weft_listener *tcp_listener, *tls_listener;

  /* Only the worker's thread touches these until it is joined. */
  int clients_made, clients_lost, clients_ok, client_failures;
  int servers_made, servers_lost;
  uint64_t server_bytes;
  int calls_from[NWORKERS + 1]; /* calls received, per sender (MAIN_SENDER: the main thread) */
  int storm_posted[NWORKERS];   /* calls posted to each other worker */
  int post_errors;
  int errors;
  char error[512];  /* the first error */
  int wrong_thread; /* a callback ran outside the worker's thread */
  int done_reported;

  /* Shared with the main thread. */
  atomic_int tcp_port, tls_port;
  atomic_int ready; /* listeners are up (ports published), or setup failed (-1) */
  atomic_int done;  /* every count above is complete */
};

typedef struct world {
  worker w[NWORKERS];
  pthread_barrier_t listening; /* all listeners up: clients may connect */
  pthread_barrier_t stopped;   /* the main thread made its last call on any reactor */
  tu_pki pki;
} world;

static world *the_world; /* for the workers, set before they start */

static void worker_error(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void worker_error(worker *w, const char *fmt, ...) {
  if (w->errors++ == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->error, sizeof w->error, fmt, ap);
    va_end(ap);
  }
}

static void check_thread(worker *w) {
  if (!pthread_equal(pthread_self(), w->self))
    w->wrong_thread++;
}

/* Every count complete: tell the main thread (once). */
static void maybe_done(worker *w) {
  const int clients = TCP_CLIENTS + TLS_CLIENTS;
  if (w->done_reported)
    return;
  if (w->clients_lost + w->client_failures < clients || w->servers_made < clients ||
      w->servers_lost < w->servers_made)
    return;
  for (int s = 0; s < NWORKERS; s++) {
    if (s != w->index && (w->calls_from[s] < STORM || w->storm_posted[s] < STORM))
      return;
  }
  if (w->calls_from[MAIN_SENDER] < MAIN_CALLS)
    return;
  w->done_reported = 1;
  atomic_store(&w->done, 1);
}

/* --- The echo server ------------------------------------------------------------------------ */

static void echo_made(weft_protocol *p, weft_transport *t) {
  echo *e = (echo *)p;
  (void)t;
  check_thread(e->w);
  e->w->servers_made++;
}

static void echo_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  echo *e = (echo *)p;
  e->w->server_bytes += len;
  int rc = weft_transport_write(t, data, len);
  if (rc != 0)
    worker_error(e->w, "echo write: %s", weft_err_name(rc));
}

static void echo_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  echo *e = (echo *)p;
  worker *w = e->w;
  (void)t;
  check_thread(w);
  if (reason->code != WEFT_OK)
    worker_error(w, "server connection lost: %s: %s", weft_err_name(reason->code), reason->message);
  w->servers_lost++;
  free(e);
  maybe_done(w);
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
  return &e->base;
}

static void server_handshake_failed(weft_factory *f, const struct sockaddr *peer,
                                    const weft_reason *reason) {
  (void)peer;
  worker_error(f->data, "server handshake failed: %s: %s", weft_err_name(reason->code),
               reason->message);
}

/* --- The clients --------------------------------------------------------------------------- */

static void client_send_round(client *c, weft_transport *t) {
  uint8_t buf[4096 + 64];
  size_t n = round_size(c->round);
  tu_pattern_fill(buf, n, c->sent);
  int rc = weft_transport_write(t, buf, n);
  if (rc != 0)
    worker_error(c->w, "client write: %s", weft_err_name(rc));
  c->sent += n;
}

static void client_made(weft_protocol *p, weft_transport *t) {
  client *c = (client *)p;
  check_thread(c->w);
  c->made++;
  c->w->clients_made++;
  if (weft_transport_is_tls(t) != c->tls)
    worker_error(c->w, "client transport is_tls %d, expected %d", weft_transport_is_tls(t), c->tls);
  client_send_round(c, t);
}

static void client_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  client *c = (client *)p;
  size_t bad = tu_pattern_check(data, len, c->received);
  if (bad != len) {
    worker_error(c->w, "client %s: wrong byte at stream offset %llu", c->tls ? "TLS" : "TCP",
                 (unsigned long long)(c->received + bad));
    weft_transport_abort_connection(t);
    return;
  }
  c->received += len;
  if (c->received > c->sent) {
    worker_error(c->w, "client received more than it sent");
    weft_transport_abort_connection(t);
    return;
  }
  if (c->received < c->sent)
    return;
  if (++c->round == ROUNDS) {
    weft_transport_lose_connection(t);
    return;
  }
  client_send_round(c, t);
}

static void client_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  client *c = (client *)p;
  worker *w = c->w;
  (void)t;
  check_thread(w);
  c->lost++;
  w->clients_lost++;
  if (reason->code == WEFT_OK && c->round == ROUNDS && c->received == c->sent)
    w->clients_ok++;
  else
    worker_error(w, "client %s lost after %d rounds: %s: %s", c->tls ? "TLS" : "TCP", c->round,
                 weft_err_name(reason->code), reason->message);
  free(c);
  maybe_done(w);
}

static const weft_protocol_ops client_ops = {
    .connection_made = client_made, .data_received = client_data, .connection_lost = client_lost};

static weft_protocol *build_client(weft_factory *f, weft_transport *t,
                                   const struct sockaddr *peer) {
  (void)peer;
  worker *w = f->data;
  client *c = calloc(1, sizeof *c);
  if (c == NULL) {
    worker_error(w, "out of memory");
    return NULL;
  }
  c->base.ops = &client_ops;
  c->w = w;
  c->tls = weft_transport_is_tls(t);
  return &c->base;
}

static void client_failed(weft_factory *f, const weft_reason *reason) {
  worker *w = f->data;
  check_thread(w);
  w->client_failures++;
  worker_error(w, "client connection failed: %s: %s", weft_err_name(reason->code), reason->message);
  maybe_done(w);
}

/* --- Cross-thread calls ---------------------------------------------------------------------- */

typedef struct xcall {
  worker *to;
  int from; /* a worker index or MAIN_SENDER */
  int seq;  /* 0, 1, ... per (from, to) */
} xcall;

static void on_xcall(void *arg) {
  xcall *x = arg;
  worker *w = x->to;
  check_thread(w);
  if (x->seq != w->calls_from[x->from])
    worker_error(w, "call %d from sender %d arrived as number %d", x->seq, x->from,
                 w->calls_from[x->from]);
  w->calls_from[x->from]++;
  free(x);
  maybe_done(w);
}

/* Posts call number SEQ from FROM to TO; 0 or the error. Any thread. */
static int post_xcall(worker *to, int from, int seq) {
  xcall *x = malloc(sizeof *x);
  if (x == NULL)
    return WEFT_ENOMEM;
  x->to = to;
  x->from = from;
  x->seq = seq;
  int rc = weft_reactor_call_from_thread(to->r, on_xcall, x);
  if (rc != 0)
    free(x);
  return rc;
}

/* A pass of the storm, in the worker's loop: STORM_CHUNK calls to every other worker, then
 * again on the next pass until STORM were posted to each. */
static void storm_pass(void *arg) {
  worker *w = arg;
  check_thread(w);
  int more = 0;
  for (int k = 0; k < NWORKERS; k++) {
    if (k == w->index)
      continue;
    for (int i = 0; i < STORM_CHUNK && w->storm_posted[k] < STORM; i++) {
      int rc = post_xcall(&the_world->w[k], w->index, w->storm_posted[k]);
      if (rc != 0) {
        w->post_errors++;
        worker_error(w, "call_from_thread to worker %d: %s", k, weft_err_name(rc));
        w->storm_posted[k] = STORM; /* give up on this one: the count check fails */
        break;
      }
      w->storm_posted[k]++;
    }
    more |= w->storm_posted[k] < STORM;
  }
  if (more) {
    int rc = weft_reactor_call_later(w->r, 0.0, storm_pass, w, NULL);
    if (rc != 0)
      worker_error(w, "call_later: %s", weft_err_name(rc));
  }
  maybe_done(w);
}

/* --- The worker thread ------------------------------------------------------------------------ */

static void *worker_main(void *arg) {
  worker *w = arg;
  world *wd = the_world;
  w->self = pthread_self();
  int rc = weft_reactor_new(&w->r);
  if (rc == 0)
    rc = weft_listen_tcp(w->r, "127.0.0.1", 0, &w->server_factory, &w->tcp_listener);
  if (rc == 0)
    rc =
        weft_listen_ssl(w->r, "127.0.0.1", 0, &w->server_factory, w->server_opts, &w->tls_listener);
  if (rc != 0) {
    worker_error(w, "setup: %s (%s)", weft_err_name(rc),
                 weft_cert_options_last_error(w->server_opts));
    atomic_store(&w->ready, -1);
  } else {
    atomic_store(&w->tcp_port, weft_listener_port(w->tcp_listener));
    atomic_store(&w->tls_port, weft_listener_port(w->tls_listener));
    atomic_store(&w->ready, 1);
  }
  pthread_barrier_wait(&wd->listening);

  if (atomic_load(&w->ready) == 1) {
    worker *next = &wd->w[(w->index + 1) % NWORKERS];
    int tcp_port = atomic_load(&next->tcp_port), tls_port = atomic_load(&next->tls_port);
    for (int i = 0; i < TCP_CLIENTS + TLS_CLIENTS && tcp_port > 0 && tls_port > 0; i++) {
      int tls = i >= TCP_CLIENTS;
      rc = tls ? tu_connect(w->r, "127.0.0.1", tls_port, &w->client_factory, w->client_opts,
                            "localhost", 20.0, NULL, NULL)
               : weft_connect_tcp(w->r, "127.0.0.1", tcp_port, &w->client_factory, NULL);
      if (rc != 0) {
        worker_error(w, "connect: %s (%s)", weft_err_name(rc),
                     weft_cert_options_last_error(w->client_opts));
        w->client_failures++;
      }
    }
    rc = weft_reactor_call_later(w->r, 0.0, storm_pass, w, NULL);
    if (rc != 0)
      worker_error(w, "call_later: %s", weft_err_name(rc));
    /* Runs until the main thread stops it. */
    rc = weft_reactor_run(w->r);
    if (rc != 0)
      worker_error(w, "weft_reactor_run: %s", weft_err_name(rc));
  }
  /* No other thread may touch the reactor once it is freed: wait for the main thread's last
   * weft_reactor_stop (the workers stopped posting before they reported done). */
  pthread_barrier_wait(&wd->stopped);
  weft_reactor_free(w->r); /* stops the listeners, closes anything left */
  w->r = NULL;
  return NULL;
}

static int all_done(world *wd) {
  for (int i = 0; i < NWORKERS; i++)
    if (!atomic_load(&wd->w[i].done))
      return 0;
  return 1;
}

START_TEST(test_reactors_in_threads) {
  int prepared = _i == 0;
  world *wd = calloc(1, sizeof *wd);
  ck_assert_ptr_nonnull(wd);
  the_world = wd;
  tu_pki_init(&wd->pki);
  weft_cert_options *server_opts = tu_server_options(&wd->pki);
  weft_cert_options *client_opts = tu_client_options(&wd->pki);
  if (prepared) {
    tu_check_opt(server_opts, weft_cert_options_prepare(server_opts, WEFT_TLS_SERVER));
    tu_check_opt(client_opts, weft_cert_options_prepare(client_opts, WEFT_TLS_CLIENT));
  }
  ck_assert_int_eq(pthread_barrier_init(&wd->listening, NULL, NWORKERS + 1), 0);
  ck_assert_int_eq(pthread_barrier_init(&wd->stopped, NULL, NWORKERS + 1), 0);
  for (int i = 0; i < NWORKERS; i++) {
    worker *w = &wd->w[i];
    w->index = i;
    w->server_opts = server_opts;
    w->client_opts = client_opts;
    w->server_factory.build_protocol = build_echo;
    w->server_factory.handshake_failed = server_handshake_failed;
    w->server_factory.data = w;
    w->client_factory.build_protocol = build_client;
    w->client_factory.connection_failed = client_failed;
    w->client_factory.data = w;
    atomic_init(&w->ready, 0);
    atomic_init(&w->done, 0);
    atomic_init(&w->tcp_port, 0);
    atomic_init(&w->tls_port, 0);
    ck_assert_int_eq(pthread_create(&w->thread, NULL, worker_main, w), 0);
  }
  pthread_barrier_wait(&wd->listening);

  /* The main thread joins the storm: MAIN_CALLS calls to each worker, interleaved. */
  int ready = 1, main_post_errors = 0;
  for (int i = 0; i < NWORKERS; i++)
    ready &= atomic_load(&wd->w[i].ready) == 1;
  for (int seq = 0; ready && seq < MAIN_CALLS; seq++)
    for (int i = 0; i < NWORKERS; i++)
      main_post_errors += post_xcall(&wd->w[i], MAIN_SENDER, seq) != 0;

  /* Wait for every count (bounded), then stop every reactor from this thread. */
  double start = tu_now();
  while (ready && !all_done(wd) && tu_now() - start < DEADLINE) {
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  double elapsed = tu_now() - start;
  int stop_errors = 0;
  for (int i = 0; i < NWORKERS; i++)
    if (atomic_load(&wd->w[i].ready) == 1)
      stop_errors += weft_reactor_stop(wd->w[i].r) != 0;
  pthread_barrier_wait(&wd->stopped);
  for (int i = 0; i < NWORKERS; i++)
    pthread_join(wd->w[i].thread, NULL);
  pthread_barrier_destroy(&wd->listening);
  pthread_barrier_destroy(&wd->stopped);

  /* Every count, worker by worker. */
  ck_assert_msg(ready, "a worker could not set up: %s%s%s%s", wd->w[0].error, wd->w[1].error,
                wd->w[2].error, wd->w[3].error);
  ck_assert_int_eq(main_post_errors, 0);
  ck_assert_int_eq(stop_errors, 0);
  long round_trips = 0, calls = 0;
  for (int i = 0; i < NWORKERS; i++) {
    worker *w = &wd->w[i];
    ck_assert_msg(w->errors == 0, "worker %d: %d errors, the first: %s", i, w->errors, w->error);
    ck_assert_msg(atomic_load(&w->done),
                  "worker %d did not finish in %.0f s: clients made %d "
                  "lost %d ok %d failed %d, servers made %d lost %d, calls from main %d",
                  i, elapsed, w->clients_made, w->clients_lost, w->clients_ok, w->client_failures,
                  w->servers_made, w->servers_lost, w->calls_from[MAIN_SENDER]);
    ck_assert_int_eq(w->wrong_thread, 0);
    ck_assert_int_eq(w->post_errors, 0);
    ck_assert_int_eq(w->clients_made, TCP_CLIENTS + TLS_CLIENTS);
    ck_assert_int_eq(w->clients_ok, TCP_CLIENTS + TLS_CLIENTS);
    ck_assert_int_eq(w->client_failures, 0);
    ck_assert_int_eq(w->servers_made, TCP_CLIENTS + TLS_CLIENTS);
    ck_assert_int_eq(w->servers_lost, TCP_CLIENTS + TLS_CLIENTS);
    uint64_t expect_bytes = 0;
    for (int r = 0; r < ROUNDS; r++)
      expect_bytes += round_size(r);
    ck_assert_uint_eq(w->server_bytes, expect_bytes * (TCP_CLIENTS + TLS_CLIENTS));
    for (int s = 0; s < NWORKERS; s++) {
      if (s == i)
        continue;
      ck_assert_int_eq(w->calls_from[s], STORM);
      ck_assert_int_eq(w->storm_posted[s], STORM);
      calls += w->calls_from[s];
    }
    ck_assert_int_eq(w->calls_from[i], 0);
    ck_assert_int_eq(w->calls_from[MAIN_SENDER], MAIN_CALLS);
    calls += MAIN_CALLS;
    round_trips += (long)w->clients_ok * ROUNDS;
  }
  printf("test_reactors_in_threads (%s options): %d reactors, %ld echo round trips, %ld "
         "cross-thread calls in %.2f s\n",
         prepared ? "prepared" : "first-use", NWORKERS, round_trips, calls, elapsed);
  weft_cert_options_unref(server_opts);
  weft_cert_options_unref(client_opts);
  tu_pki_free(&wd->pki);
  the_world = NULL;
  free(wd);
}
END_TEST

/* --- weft_reactor_stop from other threads ---------------------------------------------------- */

#define STOP_ROUNDS 100
#define STOPPERS 2

typedef struct stop_state {
  weft_reactor *r;
  atomic_int round;     /* the round the stoppers should act in (-1: quit) */
  atomic_int acted;     /* stoppers that acted in the current round */
  atomic_int calls_run; /* call_from_thread calls that ran */
  atomic_int post_errors, stop_errors;
} stop_state;

static int never(void *arg) {
  (void)arg;
  return 0;
}

static void count_call(void *arg) {
  atomic_fetch_add(&((stop_state *)arg)->calls_run, 1);
}

/* Each round: post a few calls, then stop the reactor, at a slightly different moment each
 * time (before the main thread's run starts, while it starts, while it runs). */
typedef struct stopper {
  stop_state *s;
  int id;
  int posted;
} stopper;

static void *stopper_main(void *arg) {
  stopper *me = arg;
  stop_state *s = me->s;
  int seen = 0;
  for (;;) {
    int round;
    while ((round = atomic_load(&s->round)) == seen) {
      struct timespec ts = {0, 100 * 1000};
      nanosleep(&ts, NULL);
    }
    if (round < 0)
      return NULL;
    seen = round;
    struct timespec delay = {0, (long)((round * 7 + me->id * 13) % 5) * 200 * 1000};
    nanosleep(&delay, NULL);
    for (int i = 0; i < 10; i++) {
      if (weft_reactor_call_from_thread(s->r, count_call, s) != 0)
        atomic_fetch_add(&s->post_errors, 1);
      else
        me->posted++;
    }
    if (weft_reactor_stop(s->r) != 0)
      atomic_fetch_add(&s->stop_errors, 1);
    atomic_fetch_add(&s->acted, 1);
  }
}

START_TEST(test_stop_from_threads) {
  stop_state s;
  memset(&s, 0, sizeof s);
  s.r = tu_reactor_new();
  atomic_init(&s.round, 0);
  atomic_init(&s.acted, 0);
  atomic_init(&s.calls_run, 0);
  atomic_init(&s.post_errors, 0);
  atomic_init(&s.stop_errors, 0);
  stopper st[STOPPERS];
  pthread_t threads[STOPPERS];
  for (int i = 0; i < STOPPERS; i++) {
    st[i] = (stopper){&s, i, 0};
    ck_assert_int_eq(pthread_create(&threads[i], NULL, stopper_main, &st[i]), 0);
  }
  int runs = 0;
  for (int round = 1; round <= STOP_ROUNDS; round++) {
    atomic_store(&s.acted, 0);
    atomic_store(&s.round, round);
    /* A stop may come before, during or after the loop starts: it must end this run (a stop
     * before run makes run return at once). The run is bounded by the test's timeout. */
    double start = tu_now();
    ck_assert_int_eq(weft_reactor_run(s.r), 0);
    runs++;
    ck_assert_msg(tu_now() - start < 10.0, "round %d: the stop took %.1f s", round,
                  tu_now() - start);
    /* Both stoppers act in every round; a stop that lands after this run returned is
     * honoured by the next run, so drain it before the next round. */
    while (atomic_load(&s.acted) < STOPPERS) {
      struct timespec ts = {0, 100 * 1000};
      nanosleep(&ts, NULL);
    }
    int rc = weft_reactor_run_until(s.r, never, NULL, 0.001);
    ck_assert_msg(rc == WEFT_ECANCELED || rc == WEFT_ETIMEDOUT, "draining: %s", weft_err_name(rc));
  }
  atomic_store(&s.round, -1);
  for (int i = 0; i < STOPPERS; i++)
    pthread_join(threads[i], NULL);
  int posted = 0;
  for (int i = 0; i < STOPPERS; i++)
    posted += st[i].posted;
  ck_assert_int_eq(atomic_load(&s.post_errors), 0);
  ck_assert_int_eq(atomic_load(&s.stop_errors), 0);
  ck_assert_int_eq(runs, STOP_ROUNDS);
  ck_assert_int_eq(posted, STOP_ROUNDS * STOPPERS * 10);
  weft_reactor_free(s.r); /* drops calls still queued */
  ck_assert_int_le(atomic_load(&s.calls_run), posted);
}
END_TEST

/* --- The suite ------------------------------------------------------------------------------ */

static Suite *threads_suite(void) {
  Suite *s = suite_create("threads");
  TCase *tc = tcase_create("reactors");
  tcase_add_loop_test(tc, test_reactors_in_threads, 0, 2);
  tcase_add_test(tc, test_stop_from_threads);
  tcase_set_timeout(tc, 150);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(threads_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
