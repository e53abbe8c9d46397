/* tests/check_reactor.c: the reactor: life, embedding, delayed calls, cross-thread calls,
 * stopping, errors and SIGPIPE. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "testutil.h"

/* How early a timer may look from CLOCK_MONOTONIC (see test_call_later_order). */
#define CLOCK_SLACK 0.006

/* --- new / free ------------------------------------------------------------------------- */

START_TEST(test_new_free) {
  weft_reactor *r = NULL;
  ck_assert_int_eq(weft_reactor_new(&r), 0);
  ck_assert_ptr_nonnull(r);
  ck_assert_ptr_nonnull(weft_reactor_event_base(r));
  ck_assert_uint_eq(weft_reactor_connection_count(r), 0);
  weft_reactor_free(r);
  weft_reactor_free(NULL); /* ignored */
  ck_assert_int_eq(weft_reactor_new(NULL), WEFT_EINVAL);
}
END_TEST

/* --- new_with_base: the application drives the loop ------------------------------------- */

typedef struct app_state {
  int timer_fired;
  double timer_at;
} app_state;

static void app_timer(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  app_state *s = arg;
  s->timer_fired++;
  s->timer_at = tu_now();
}

START_TEST(test_new_with_base) {
  struct event_base *base = event_base_new();
  ck_assert_ptr_nonnull(base);
  weft_reactor *r = NULL;
  ck_assert_int_eq(weft_reactor_new_with_base(NULL, &r), WEFT_EINVAL);
  ck_assert_int_eq(weft_reactor_new_with_base(base, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_reactor_new_with_base(base, &r), 0);
  ck_assert_ptr_nonnull(r);
  ck_assert_ptr_eq(weft_reactor_event_base(r), base);

  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  server.conn_config.echo = 1;
  client.conn_config.greeting = "hello";
  client.conn_config.greeting_len = 5;
  int port;
  tu_listen_tcp_local(r, &server, &port);
  tu_connect_tcp_local(r, &client, port);

  app_state app = {0};
  struct event *timer = evtimer_new(base, app_timer, &app);
  ck_assert_ptr_nonnull(timer);
  struct timeval tv = {0, 50000};
  ck_assert_int_eq(evtimer_add(timer, &tv), 0);
  double start = tu_now();

  /* The application's own loop, bounded by a deadline. */
  tu_conn *c = NULL;
  while (tu_now() - start < 10.0) {
    c = tu_factory_conn(&client, 0);
    if (app.timer_fired && c && c->rx_len >= 5)
      break;
    ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE), 0);
  }
  ck_assert_int_eq(app.timer_fired, 1);
  ck_assert_double_ge(app.timer_at - start, 0.05 - CLOCK_SLACK);
  ck_assert_ptr_nonnull(c);
  ck_assert_msg(tu_conn_rx_equals(c, "hello", 5), "client received '%s'",
                c->rx ? (char *)c->rx : "");
  tu_conn *s = tu_factory_conn(&server, 0);
  ck_assert_ptr_nonnull(s);
  ck_assert_int_eq(s->made, 1);
  ck_assert_uint_eq(weft_reactor_connection_count(r), 2);

  event_free(timer);
  weft_reactor_free(r); /* closes both ends */
  ck_assert_int_eq(c->lost, 1);
  ck_assert_int_eq(s->lost, 1);
  ck_assert_int_eq(c->lost_reason.code, WEFT_ESHUTDOWN);
  tu_factory_check(&server);
  tu_factory_check(&client);
  /* The base is still the application's: it still works after the reactor is gone. */
  ck_assert_int_ge(event_base_loop(base, EVLOOP_NONBLOCK), 0);
  event_base_free(base);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
}
END_TEST

/* --- call_later ------------------------------------------------------------------------- */

typedef struct order_log {
  int n;
  int order[8];
  double at[8];
  weft_reactor *clock; /* a testing reactor: AT is its test clock; NULL: CLOCK_MONOTONIC */
} order_log;

typedef struct order_item {
  order_log *log;
  int id;
} order_item;

static void record_call(void *arg) {
  order_item *it = arg;
  if (it->log->n < 8) {
    it->log->order[it->log->n] = it->id;
    it->log->at[it->log->n] = it->log->clock ? weft_testing_clock_now(it->log->clock) : tu_now();
  }
  it->log->n++;
}

START_TEST(test_call_later_order) {
  weft_reactor *r = tu_reactor_new();
  order_log log = {0};
  order_item a = {&log, 30}, b = {&log, 10}, c = {&log, 20};
  double start = tu_now();
  /* 100 ms apart: a slow build (valgrind) may take milliseconds between these calls, which
   * must not reorder the deadlines (the test clock's twin below checks exact times). */
  ck_assert_int_eq(weft_reactor_call_later(r, 0.3, record_call, &a, NULL), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 0.1, record_call, &b, NULL), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 0.2, record_call, &c, NULL), 0);
  ck_assert_int_eq(log.n, 0); /* never from inside call_later */
  tu_wait_int(r, &log.n, 3, 5.0);
  tu_settle(r, 0.05);
  ck_assert_int_eq(log.n, 3);
  ck_assert_int_eq(log.order[0], 10);
  ck_assert_int_eq(log.order[1], 20);
  ck_assert_int_eq(log.order[2], 30);
  /* None ran early, give or take the clock's granularity: libevent times its timers with
   * CLOCK_MONOTONIC_COARSE (4 ms ticks here), so a call may run up to a tick "early" as seen
   * from CLOCK_MONOTONIC. */
  ck_assert_double_ge(log.at[0] - start, 0.1 - CLOCK_SLACK);
  ck_assert_double_ge(log.at[1] - start, 0.2 - CLOCK_SLACK);
  ck_assert_double_ge(log.at[2] - start, 0.3 - CLOCK_SLACK);
  weft_reactor_free(r);
}
END_TEST

/* A testing reactor: the delayed calls below follow the test clock (weft/testing.h), so they
 * run deterministically, with no real wait. */
static weft_reactor *clock_reactor_new(order_log *log) {
  weft_reactor *r = NULL;
  ck_assert_int_eq(weft_testing_reactor_new(&r), 0);
  log->clock = r;
  return r;
}

/* test_call_later_order under the test clock: each call runs at its exact due time, none
 * before, ties in the order they were scheduled. (The real-clock test above stays: it checks
 * libevent's timer path.) */
START_TEST(test_call_later_order_clock) {
  order_log log = {0};
  weft_reactor *r = clock_reactor_new(&log);
  order_item a = {&log, 30}, b = {&log, 10}, c = {&log, 20}, d = {&log, 21};
  ck_assert_int_eq(weft_reactor_call_later(r, 3, record_call, &a, NULL), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 1, record_call, &b, NULL), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 2, record_call, &c, NULL), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 2, record_call, &d, NULL), 0); /* tie with C */
  ck_assert_int_eq(log.n, 0); /* never from inside call_later */
  ck_assert_int_eq(weft_testing_pump(r), 0);
  ck_assert_int_eq(log.n, 0); /* nor from the loop while the clock stands still */
  ck_assert_int_eq(weft_testing_clock_advance(r, 0.999), 0);
  ck_assert_int_eq(log.n, 0);
  ck_assert_int_eq(weft_testing_clock_advance(r, 0.001), 1);
  ck_assert_int_eq(log.n, 1);
  ck_assert_int_eq(weft_testing_clock_advance(r, 5), 3);
  ck_assert_int_eq(log.n, 4);
  ck_assert_int_eq(log.order[0], 10);
  ck_assert_int_eq(log.order[1], 20);
  ck_assert_int_eq(log.order[2], 21);
  ck_assert_int_eq(log.order[3], 30);
  ck_assert(log.at[0] == 1 && log.at[1] == 2 && log.at[2] == 2 && log.at[3] == 3);
  ck_assert(weft_testing_clock_now(r) == 6);
  weft_reactor_free(r);
}
END_TEST

START_TEST(test_call_later_zero_delay) {
  order_log log = {0};
  weft_reactor *r = clock_reactor_new(&log);
  order_item a = {&log, 1}, b = {&log, 2};
  ck_assert_int_eq(weft_reactor_call_later(r, 0, record_call, &a, NULL), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 0, record_call, &b, NULL), 0);
  ck_assert_int_eq(log.n, 0); /* not from inside call_later, even with no delay */
  ck_assert_int_eq(weft_testing_clock_advance(r, 0), 2); /* due now: run without time passing */
  ck_assert_int_eq(log.n, 2);
  ck_assert_int_eq(log.order[0], 1);
  ck_assert_int_eq(log.order[1], 2);
  ck_assert(log.at[0] == 0 && log.at[1] == 0);
  weft_reactor_free(r);
}
END_TEST

START_TEST(test_call_later_cancel) {
  order_log log = {0};
  weft_reactor *r = clock_reactor_new(&log);
  order_item a = {&log, 1}, b = {&log, 2};
  weft_delayed_call *call = NULL;
  ck_assert_int_eq(weft_reactor_call_later(r, 1, record_call, &a, &call), 0);
  ck_assert_ptr_nonnull(call);
  ck_assert_int_eq(weft_reactor_call_later(r, 3, record_call, &b, NULL), 0);
  ck_assert_int_eq(weft_delayed_call_cancel(call), 0);
  ck_assert_int_eq(weft_delayed_call_cancel(NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_testing_clock_advance(r, 2), 0); /* A's time passed: nothing ran */
  ck_assert_int_eq(log.n, 0);
  ck_assert_int_eq(weft_testing_clock_advance(r, 60), 1);
  ck_assert_int_eq(log.n, 1);
  ck_assert_int_eq(log.order[0], 2); /* only the call that was not cancelled */
  ck_assert(log.at[0] == 3);
  weft_reactor_free(r);
}
END_TEST

START_TEST(test_call_later_reset) {
  order_log log = {0};
  weft_reactor *r = clock_reactor_new(&log);
  order_item x = {&log, 1}, y = {&log, 2};
  weft_delayed_call *cx = NULL;
  ck_assert_int_eq(weft_reactor_call_later(r, 1, record_call, &x, &cx), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 2, record_call, &y, NULL), 0);
  ck_assert_int_eq(weft_delayed_call_reset(cx, 4), 0);
  ck_assert_int_eq(weft_delayed_call_reset(NULL, 4), WEFT_EINVAL);
  ck_assert_int_eq(weft_delayed_call_reset(cx, -1.0), WEFT_EINVAL);
  ck_assert_int_eq(weft_delayed_call_reset(cx, NAN), WEFT_EINVAL);
  ck_assert_int_eq(weft_delayed_call_reset(cx, INFINITY), WEFT_EINVAL);
  ck_assert_int_eq(weft_testing_clock_advance(r, 3.999), 1);
  ck_assert_int_eq(log.n, 1);
  ck_assert_int_eq(log.order[0], 2); /* Y first now */
  ck_assert_int_eq(weft_testing_clock_advance(r, 0.001), 1);
  ck_assert_int_eq(log.n, 2);
  ck_assert_int_eq(log.order[1], 1);
  ck_assert(log.at[1] == 4); /* the failed resets did not move X */
  ck_assert_int_eq(weft_testing_clock_advance(r, 60), 0);
  ck_assert_int_eq(log.n, 2);
  weft_reactor_free(r);
}
END_TEST

/* A delayed call may cancel another one, and schedule a new one, from inside a callback. */
typedef struct chain_state {
  weft_reactor *r;
  weft_delayed_call *victim;
  order_log *log;
  order_item *next;
} chain_state;

static void chain_call(void *arg) {
  chain_state *s = arg;
  ck_assert_int_eq(weft_delayed_call_cancel(s->victim), 0);
  ck_assert_int_eq(weft_reactor_call_later(s->r, 0.0, record_call, s->next, NULL), 0);
}

START_TEST(test_call_later_from_callback) {
  order_log log = {0};
  weft_reactor *r = clock_reactor_new(&log);
  order_item victim = {&log, 1}, next = {&log, 2};
  chain_state s = {r, NULL, &log, &next};
  ck_assert_int_eq(weft_reactor_call_later(r, 5, record_call, &victim, &s.victim), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 1, chain_call, &s, NULL), 0);
  /* CHAIN runs at 1 s, cancels VICTIM and schedules NEXT with no delay: NEXT runs within the
   * same advance, at 1 s (nested scheduling). */
  ck_assert_int_eq(weft_testing_clock_advance(r, 1), 2);
  ck_assert_int_eq(log.n, 1);
  ck_assert_int_eq(log.order[0], 2);
  ck_assert(log.at[0] == 1);
  ck_assert_int_eq(weft_testing_clock_advance(r, 60), 0); /* VICTIM's time: it stays cancelled */
  ck_assert_int_eq(log.n, 1);
  weft_reactor_free(r);
}
END_TEST

START_TEST(test_call_later_invalid) {
  order_log log = {0};
  weft_reactor *r = clock_reactor_new(&log);
  order_item a = {&log, 1};
  weft_delayed_call *call = NULL;
  ck_assert_int_eq(weft_reactor_call_later(r, 0.01, NULL, &a, &call), WEFT_EINVAL);
  ck_assert_int_eq(weft_reactor_call_later(r, -0.01, record_call, &a, &call), WEFT_EINVAL);
  ck_assert_int_eq(weft_reactor_call_later(r, NAN, record_call, &a, &call), WEFT_EINVAL);
  ck_assert_int_eq(weft_reactor_call_later(r, INFINITY, record_call, &a, &call), WEFT_EINVAL);
  ck_assert_int_eq(weft_reactor_call_later(NULL, 0.01, record_call, &a, &call), WEFT_EINVAL);
  ck_assert_int_eq(weft_testing_clock_advance(r, 60), 0); /* none of them was scheduled */
  ck_assert_int_eq(log.n, 0);
  weft_reactor_free(r);
}
END_TEST

/* Delayed calls still pending at free are dropped without running (and without leaking). */
START_TEST(test_call_later_dropped_at_free) {
  order_log log = {0};
  weft_reactor *r = clock_reactor_new(&log);
  order_item a = {&log, 1};
  weft_delayed_call *call = NULL;
  ck_assert_int_eq(weft_reactor_call_later(r, 10.0, record_call, &a, &call), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 0.0, record_call, &a, NULL), 0);
  weft_reactor_free(r);
  ck_assert_int_eq(log.n, 0);
}
END_TEST

/* --- call_from_thread ------------------------------------------------------------------- */

#define NTHREADS 4
#define PER_THREAD 10000

typedef struct xthread_state xthread_state;

typedef struct xthread_call {
  xthread_state *state;
  int tid;
  int seq;
} xthread_call;

struct xthread_state {
  weft_reactor *r;
  pthread_t reactor_thread;
  int total;
  int next_seq[NTHREADS]; /* the seq expected next from each thread */
  int out_of_order;
  int wrong_thread;
  int queue_errors[NTHREADS];
  xthread_call calls[NTHREADS][PER_THREAD];
};

static void xthread_cb(void *arg) {
  xthread_call *c = arg;
  xthread_state *s = c->state;
  if (!pthread_equal(pthread_self(), s->reactor_thread))
    s->wrong_thread++;
  if (c->seq != s->next_seq[c->tid])
    s->out_of_order++;
  s->next_seq[c->tid] = c->seq + 1;
  s->total++;
}

typedef struct xthread_arg {
  xthread_state *s;
  int tid;
} xthread_arg;

static void *xthread_main(void *arg) {
  xthread_arg *a = arg;
  for (int i = 0; i < PER_THREAD; i++) {
    xthread_call *c = &a->s->calls[a->tid][i];
    c->state = a->s;
    c->tid = a->tid;
    c->seq = i;
    if (weft_reactor_call_from_thread(a->s->r, xthread_cb, c) != 0)
      a->s->queue_errors[a->tid]++;
  }
  return NULL;
}

START_TEST(test_call_from_thread) {
  xthread_state *s = calloc(1, sizeof *s);
  ck_assert_ptr_nonnull(s);
  s->r = tu_reactor_new();
  s->reactor_thread = pthread_self();
  ck_assert_int_eq(weft_reactor_call_from_thread(NULL, xthread_cb, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_reactor_call_from_thread(s->r, NULL, NULL), WEFT_EINVAL);
  pthread_t threads[NTHREADS];
  xthread_arg args[NTHREADS];
  for (int t = 0; t < NTHREADS; t++) {
    args[t].s = s;
    args[t].tid = t;
    ck_assert_int_eq(pthread_create(&threads[t], NULL, xthread_main, &args[t]), 0);
  }
  /* Run the loop while the threads are queueing. */
  tu_wait_int(s->r, &s->total, NTHREADS * PER_THREAD, 30.0);
  for (int t = 0; t < NTHREADS; t++)
    pthread_join(threads[t], NULL);
  tu_settle(s->r, 0.05);
  for (int t = 0; t < NTHREADS; t++) {
    ck_assert_int_eq(s->queue_errors[t], 0);
    ck_assert_int_eq(s->next_seq[t], PER_THREAD);
  }
  ck_assert_int_eq(s->total, NTHREADS * PER_THREAD); /* each ran exactly once */
  ck_assert_int_eq(s->out_of_order, 0);
  ck_assert_int_eq(s->wrong_thread, 0);
  weft_reactor_free(s->r);
  free(s);
}
END_TEST

/* Calls still queued at free are dropped without running. */
static void count_call(void *arg) {
  (*(int *)arg)++;
}

START_TEST(test_call_from_thread_dropped_at_free) {
  weft_reactor *r = tu_reactor_new();
  int n = 0;
  for (int i = 0; i < 100; i++)
    ck_assert_int_eq(weft_reactor_call_from_thread(r, count_call, &n), 0);
  ck_assert_int_eq(n, 0);
  weft_reactor_free(r);
  ck_assert_int_eq(n, 0);
}
END_TEST

/* --- stopping --------------------------------------------------------------------------- */

typedef struct stop_state {
  weft_reactor *r;
  pthread_t thread;
  int thread_started;
  int stop_rc;
  int keepalive_fired;
} stop_state;

static void *stopper_main(void *arg) {
  stop_state *s = arg;
  s->stop_rc = weft_reactor_stop(s->r);
  return NULL;
}

static void start_stopper(void *arg) {
  stop_state *s = arg;
  ck_assert_int_eq(pthread_create(&s->thread, NULL, stopper_main, s), 0);
  s->thread_started = 1;
}

static void keepalive(void *arg) {
  stop_state *s = arg;
  s->keepalive_fired = 1;
}

START_TEST(test_stop_from_thread) {
  stop_state s = {0};
  s.r = tu_reactor_new();
  s.stop_rc = 99;
  weft_delayed_call *ka = NULL;
  /* Something for the loop to wait on that would keep it running far longer than the test. */
  ck_assert_int_eq(weft_reactor_call_later(s.r, 60.0, keepalive, &s, &ka), 0);
  ck_assert_int_eq(weft_reactor_call_later(s.r, 0.02, start_stopper, &s, NULL), 0);
  double start = tu_now();
  ck_assert_int_eq(weft_reactor_run(s.r), 0);
  double took = tu_now() - start;
  ck_assert_int_eq(s.thread_started, 1);
  pthread_join(s.thread, NULL);
  ck_assert_int_eq(s.stop_rc, 0);
  ck_assert_int_eq(s.keepalive_fired, 0);
  ck_assert_double_ge(took, 0.02 - CLOCK_SLACK);
  ck_assert_double_lt(took, 10.0);
  ck_assert_int_eq(weft_delayed_call_cancel(ka), 0);
  weft_reactor_free(s.r);
}
END_TEST

typedef struct cb_stop {
  weft_reactor *r;
  int calls;
  int late;
  int nested_rc;
} cb_stop;

static int never_true(void *arg) {
  (void)arg;
  return 0;
}

static void stop_cb(void *arg) {
  cb_stop *s = arg;
  s->calls++;
  s->nested_rc = weft_reactor_run(s->r); /* from a callback: refused */
  ck_assert_int_eq(weft_reactor_stop(s->r), 0);
}

static void late_cb(void *arg) {
  ((cb_stop *)arg)->late++;
}

START_TEST(test_stop_from_callback) {
  cb_stop s = {0};
  s.r = tu_reactor_new();
  weft_delayed_call *late = NULL;
  ck_assert_int_eq(weft_reactor_call_later(s.r, 5.0, late_cb, &s, &late), 0);
  ck_assert_int_eq(weft_reactor_call_later(s.r, 0.01, stop_cb, &s, NULL), 0);
  double start = tu_now();
  ck_assert_int_eq(weft_reactor_run(s.r), 0);
  ck_assert_double_lt(tu_now() - start, 4.0);
  ck_assert_int_eq(s.calls, 1);
  ck_assert_int_eq(s.late, 0);
  ck_assert_int_eq(s.nested_rc, WEFT_EBUSY);

  /* run_until: a stop from a callback ends it with WEFT_ECANCELED. */
  ck_assert_int_eq(weft_reactor_call_later(s.r, 0.01, stop_cb, &s, NULL), 0);
  ck_assert_int_eq(weft_reactor_run_until(s.r, never_true, NULL, 5.0), WEFT_ECANCELED);
  ck_assert_int_eq(s.calls, 2);

  /* A stop requested before run is honoured by the next run, which returns at once. */
  ck_assert_int_eq(weft_reactor_stop(s.r), 0);
  start = tu_now();
  ck_assert_int_eq(weft_reactor_run(s.r), 0);
  ck_assert_double_lt(tu_now() - start, 1.0);
  ck_assert_int_eq(s.late, 0);
  ck_assert_int_eq(weft_delayed_call_cancel(late), 0);
  weft_reactor_free(s.r);
}
END_TEST

static int counter_ge_3(void *arg) {
  return *(int *)arg >= 3;
}

typedef struct chain {
  weft_reactor *r;
  int n;
  int max;
} chain;

static void chain_next(void *arg) {
  chain *c = arg;
  if (++c->n < c->max)
    ck_assert_int_eq(weft_reactor_call_later(c->r, 0.001, chain_next, c, NULL), 0);
}

START_TEST(test_run_until) {
  weft_reactor *r = tu_reactor_new();
  double start = tu_now();
  ck_assert_int_eq(weft_reactor_run_until(r, never_true, NULL, 0.1), WEFT_ETIMEDOUT);
  double took = tu_now() - start;
  ck_assert_double_ge(took, 0.1 - CLOCK_SLACK);
  ck_assert_double_lt(took, 2.0);
  ck_assert_int_eq(weft_reactor_run_until(r, NULL, NULL, 0.1), WEFT_EINVAL);

  /* The predicate is checked between loop iterations: a chain of calls, each scheduling the
   * next, stops at the third call, not later. (Events that are ready together run in one
   * iteration, so timers due at nearly the same moment could not show this reliably.) */
  chain c = {r, 0, 5};
  ck_assert_int_eq(weft_reactor_call_later(r, 0.001, chain_next, &c, NULL), 0);
  ck_assert_int_eq(weft_reactor_run_until(r, counter_ge_3, &c.n, 5.0), 0);
  ck_assert_int_eq(c.n, 3);
  /* A predicate that already holds returns at once. */
  ck_assert_int_eq(weft_reactor_run_until(r, counter_ge_3, &c.n, 5.0), 0);
  ck_assert_int_eq(c.n, 3);
  weft_reactor_free(r); /* drops the pending fourth call */
  ck_assert_int_eq(c.n, 3);
}
END_TEST

/* --- errors ----------------------------------------------------------------------------- */

START_TEST(test_errors) {
  ck_assert_str_eq(weft_err_name(WEFT_ECONNREFUSED), "WEFT_ECONNREFUSED");
  ck_assert_str_eq(weft_strerror(WEFT_ECONNREFUSED), "connection refused");
  ck_assert_str_eq(weft_err_name(WEFT_EINVAL), "WEFT_EINVAL");
  ck_assert_str_eq(weft_strerror(WEFT_EINVAL), "invalid argument");
  ck_assert_str_eq(weft_err_name(WEFT_ECONNLIMIT), "WEFT_ECONNLIMIT");
  ck_assert_str_eq(weft_strerror(WEFT_ETIMEDOUT), "operation timed out");
  ck_assert_str_eq(weft_err_name(WEFT_OK), "WEFT_OK");
  ck_assert_str_eq(weft_strerror(WEFT_OK), "success");
  ck_assert_str_eq(weft_err_name(-1000), "WEFT_UNKNOWN");
  ck_assert_str_eq(weft_strerror(-1000), "unknown error");
  ck_assert_str_eq(weft_err_name(7), "WEFT_UNKNOWN");
  ck_assert_str_eq(weft_strerror(7), "unknown error");
  /* Every code in the table has its own name and a message. */
#define CHECK_CODE(name, value, msg)                                                               \
  ck_assert_str_eq(weft_err_name(value), "WEFT_" #name);                                           \
  ck_assert_str_eq(weft_strerror(value), msg);
  WEFT_ERRNO_MAP(CHECK_CODE)
#undef CHECK_CODE
}
END_TEST

/* --- SIGPIPE ---------------------------------------------------------------------------- */

START_TEST(test_sigpipe_ignored) {
  signal(SIGPIPE, SIG_DFL); /* as a fresh process has it */
  weft_reactor *r = tu_reactor_new();
  struct sigaction sa;
  ck_assert_int_eq(sigaction(SIGPIPE, NULL, &sa), 0);
  ck_assert_msg(sa.sa_handler != SIG_DFL, "SIGPIPE still has its default action");
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  close(sv[1]);
  errno = 0;
  ssize_t n = write(sv[0], "x", 1); /* kills the process if SIGPIPE is not ignored */
  int err = errno;
  close(sv[0]);
  ck_assert_int_eq(n, -1);
  ck_assert_int_eq(err, EPIPE);
  weft_reactor_free(r);
}
END_TEST

/* A handler the application installed is left alone. */
static void my_sigpipe(int sig) {
  (void)sig;
}

START_TEST(test_sigpipe_handler_kept) {
  signal(SIGPIPE, my_sigpipe);
  weft_reactor *r = tu_reactor_new();
  struct sigaction sa;
  ck_assert_int_eq(sigaction(SIGPIPE, NULL, &sa), 0);
  ck_assert_ptr_eq((void *)sa.sa_handler, (void *)my_sigpipe);
  weft_reactor_free(r);
  signal(SIGPIPE, SIG_IGN);
}
END_TEST

static Suite *reactor_suite(void) {
  Suite *s = suite_create("reactor");
  TCase *tc = tcase_create("life");
  tcase_add_test(tc, test_new_free);
  tcase_add_test(tc, test_new_with_base);
  tcase_set_timeout(tc, 20);
  suite_add_tcase(s, tc);

  tc = tcase_create("call_later");
  tcase_add_test(tc, test_call_later_order);
  tcase_add_test(tc, test_call_later_order_clock);
  tcase_add_test(tc, test_call_later_zero_delay);
  tcase_add_test(tc, test_call_later_cancel);
  tcase_add_test(tc, test_call_later_reset);
  tcase_add_test(tc, test_call_later_from_callback);
  tcase_add_test(tc, test_call_later_invalid);
  tcase_add_test(tc, test_call_later_dropped_at_free);
  tcase_set_timeout(tc, 20);
  suite_add_tcase(s, tc);

  tc = tcase_create("threads");
  tcase_add_test(tc, test_call_from_thread);
  tcase_add_test(tc, test_call_from_thread_dropped_at_free);
  tcase_add_test(tc, test_stop_from_thread);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("stop");
  tcase_add_test(tc, test_stop_from_callback);
  tcase_add_test(tc, test_run_until);
  tcase_set_timeout(tc, 20);
  suite_add_tcase(s, tc);

  tc = tcase_create("errors");
  tcase_add_test(tc, test_errors);
  tcase_add_test(tc, test_sigpipe_ignored);
  tcase_add_test(tc, test_sigpipe_handler_kept);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(reactor_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
