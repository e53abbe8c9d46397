/* tests/check_idleq.c: idle time-outs kept in one queue per distinct value per reactor, with one
 * delayed call per queue, not a timer per connection (issue #17, S4 with time-outs enabled).
 *
 * Real loopback connections (raw client sockets, weft's listener) under the test clock
 * (weft_testing_reactor_new): the clock moves only when a test advances it, so which connection
 * ends when is exact. Covered:
 *  - cost: setting a time-out on many connections makes one queue (two blocks) per value, and
 *    a queue's expiry is one delayed call whatever the number of connections;
 *  - activity keeps exactly the active connections alive, with two queues interleaved; every
 *    other one ends once, with WEFT_EIDLE and the usual message;
 *  - set / reset / change / 0 from data_received, connection_made, connection_lost (of the
 *    idle close itself), write_drained, and from the log callback, which runs while the queue
 *    is being processed (another connection of the same queue moved, taken out, aborted);
 *  - a connection ending (abort, peer reset) while it is the queue's head; the last one
 *    leaving; the reactor freed with queues not empty (nothing leaks);
 *  - no memory for a new queue: WEFT_ENOMEM, no time-out, nothing leaked, the connection
 *    works; a value whose queue exists needs no memory;
 *  - output still waiting at expiry is not idleness. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <weft/testing.h>

#include "testutil.h"

#define MAXC 24

/* One listener with N raw clients, all accepted at test-clock time 0. */
typedef struct fixture {
  weft_reactor *r;
  tu_factory f;
  weft_listener *l;
  int port;
  int n;
  int fd[MAXC];
  tu_conn *c[MAXC];
} fixture;

static fixture *fx; /* for the hooks */

static void fixture_connect_one(fixture *x) {
  int i = x->n++;
  x->fd[i] = tu_raw_connect("127.0.0.1", x->port);
  x->c[i] = tu_wait_conn(x->r, &x->f, i, 10);
  tu_wait_int(x->r, &x->c[i]->made, 1, 10);
}

static void fixture_init(fixture *x, double idle, int n, void (*on_made)(tu_conn *, weft_transport *)) {
  memset(x, 0, sizeof *x);
  fx = x;
  ck_assert_int_eq(weft_testing_reactor_new(&x->r), 0);
  tu_factory_init(&x->f);
  x->f.conn_config.on_made = on_made;
  x->l = tu_listen_tcp_local(x->r, &x->f, &x->port);
  if (idle > 0)
    ck_assert_int_eq(weft_listener_set_idle_timeout(x->l, idle), 0);
  for (int i = 0; i < n; i++)
    fixture_connect_one(x);
}

static void fixture_done(fixture *x) {
  tu_factory_check(&x->f);
  for (int i = 0; i < x->n; i++)
    if (x->fd[i] >= 0)
      close(x->fd[i]);
  weft_listener_stop(x->l);
  weft_reactor_free(x->r);
  tu_factory_cleanup(&x->f);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);
}

/* Sends one byte from client I and runs the loop until connection I has it. */
static void poke(fixture *x, int i) {
  size_t before = x->c[i]->rx_total;
  ck_assert_int_eq(write(x->fd[i], "x", 1), 1);
  tu_wait_size(x->r, &x->c[i]->rx_total, before + 1, 10);
}

static void advance(fixture *x, double s) {
  ck_assert_int_ge(weft_testing_clock_advance(x->r, s), 0);
  weft_testing_pump(x->r);
}

/* Connection I ended once with WEFT_EIDLE and the time-out's message. */
static void assert_idle_lost(fixture *x, int i, double seconds) {
  ck_assert_msg(x->c[i]->lost == 1, "connection %d: lost %d times", i, x->c[i]->lost);
  ck_assert_int_eq(x->c[i]->lost_reason.code, WEFT_EIDLE);
  char msg[96];
  snprintf(msg, sizeof msg, "idle time-out: nothing received for %.3g s", seconds);
  ck_assert_str_eq(x->c[i]->lost_reason.message, msg);
}
static void assert_alive(fixture *x, int i) {
  ck_assert_msg(x->c[i]->lost == 0, "connection %d ended: %s", i, x->c[i]->lost_reason.message);
}

/* --- cost: one queue per value ------------------------------------------------------------ */

START_TEST(test_one_queue_per_value) {
  fixture x;
  fixture_init(&x, 0, 16, NULL);
  long base = weft_allocations_outstanding();
  for (int i = 0; i < 16; i++)
    ck_assert_int_eq(weft_transport_set_idle_timeout(x.c[i]->transport, 10), 0);
  /* One queue and its delayed call, not one call per connection. */
  ck_assert_int_le(weft_allocations_outstanding() - base, 2);
  for (int i = 1; i < 16; i += 2)
    ck_assert_int_eq(weft_transport_set_idle_timeout(x.c[i]->transport, 7), 0);
  ck_assert_int_le(weft_allocations_outstanding() - base, 4);
  for (int i = 0; i < 16; i++)
    ck_assert(weft_transport_get_idle_timeout(x.c[i]->transport) == (i % 2 ? 7 : 10));
  /* The 8 connections at 7 s end on one delayed call; so do the 8 at 10 s. */
  ck_assert_int_eq(weft_testing_clock_advance(x.r, 6.9), 0);
  ck_assert_int_eq(weft_testing_clock_advance(x.r, 0.2), 1);
  weft_testing_pump(x.r);
  for (int i = 0; i < 16; i++) {
    if (i % 2)
      assert_idle_lost(&x, i, 7);
    else
      assert_alive(&x, i);
  }
  ck_assert_int_eq(weft_testing_clock_advance(x.r, 3), 1);
  weft_testing_pump(x.r);
  for (int i = 0; i < 16; i += 2)
    assert_idle_lost(&x, i, 10);
  fixture_done(&x);
}
END_TEST

/* --- activity, two queues interleaved -------------------------------------------------------- */

static void made_six_or_ten(tu_conn *c, weft_transport *t) {
  if (c->index % 3 == 0)
    ck_assert_int_eq(weft_transport_set_idle_timeout(t, 6), 0);
}

START_TEST(test_activity_two_queues) {
  fixture x;
  fixture_init(&x, 10, 12, made_six_or_ten);
  advance(&x, 5);
  for (int i = 0; i < 12; i += 2)
    poke(&x, i); /* at 5 s: 0, 6 (6 s queue) and 2, 4, 8, 10 (10 s queue) */
  advance(&x, 1.05); /* 6 s queue: 3 and 9 end */
  for (int i = 0; i < 12; i++) {
    if (i == 3 || i == 9)
      assert_idle_lost(&x, i, 6);
    else
      assert_alive(&x, i);
  }
  poke(&x, 1); /* at 6.05 s */
  advance(&x, 4); /* 10.05 s: 5, 7, 11 end */
  for (int i = 0; i < 12; i++) {
    if (i == 5 || i == 7 || i == 11)
      assert_idle_lost(&x, i, 10);
    else if (i != 3 && i != 9)
      assert_alive(&x, i);
  }
  advance(&x, 1); /* 11.05 s: 0 and 6 */
  assert_idle_lost(&x, 0, 6);
  assert_idle_lost(&x, 6, 6);
  advance(&x, 3.9); /* 14.95 s */
  for (int i = 1; i < 12; i++)
    if (i != 3 && i != 9 && i != 5 && i != 7 && i != 11 && i != 6)
      assert_alive(&x, i);
  advance(&x, 1.2); /* 16.15 s: everything has ended, once */
  for (int i = 0; i < 12; i++)
    ck_assert_int_eq(x.c[i]->lost, 1);
  assert_idle_lost(&x, 1, 10);
  for (int i = 2; i < 12; i += 2)
    if (i != 6)
      assert_idle_lost(&x, i, 10);
  ck_assert_int_eq(x.f.lost, 12);
  fixture_done(&x);
}
END_TEST

/* --- from inside callbacks ------------------------------------------------------------------ */

/* data_received on connection 0: 1 off, 2 to another value, 3 reset, 4 the same value again. */
static void data_rearranges(tu_conn *c, weft_transport *t, const uint8_t *d, size_t n) {
  (void)t;
  (void)d;
  (void)n;
  if (c->index != 0)
    return;
  ck_assert_int_eq(weft_transport_set_idle_timeout(fx->c[1]->transport, 0), 0);
  ck_assert_int_eq(weft_transport_set_idle_timeout(fx->c[2]->transport, 4), 0);
  ck_assert_int_eq(weft_transport_reset_idle_timeout(fx->c[3]->transport), 0);
  ck_assert_int_eq(weft_transport_set_idle_timeout(fx->c[4]->transport, 10), 0);
}

START_TEST(test_from_data_received) {
  fixture x;
  fixture_init(&x, 10, 6, NULL);
  for (int i = 0; i < 6; i++)
    x.c[i]->cfg.on_data = data_rearranges;
  advance(&x, 5);
  poke(&x, 0); /* at 5 s */
  advance(&x, 3.9);
  for (int i = 0; i < 6; i++)
    assert_alive(&x, i);
  advance(&x, 0.2); /* 9.1 s: 2 (4 s from 5 s) */
  assert_idle_lost(&x, 2, 4);
  advance(&x, 1); /* 10.1 s: 5, never touched */
  assert_idle_lost(&x, 5, 10);
  for (int i = 0; i < 5; i++)
    if (i != 2)
      assert_alive(&x, i);
  advance(&x, 5); /* 15.1 s: 0, 3, 4 */
  assert_idle_lost(&x, 0, 10);
  assert_idle_lost(&x, 3, 10);
  assert_idle_lost(&x, 4, 10);
  advance(&x, 1000);
  assert_alive(&x, 1);
  ck_assert(weft_transport_get_idle_timeout(x.c[1]->transport) == 0);
  fixture_done(&x);
}
END_TEST

/* connection_made of connection 3 (at 2 s): 0 off, 1 restarted. connection_lost of 2 (its idle
 * close, at 10 s): 3 restarted (same queue), 1 to 4 s. write_drained of 4: 0 back on at 3 s. */
static void made_rearranges(tu_conn *c, weft_transport *t) {
  (void)t;
  if (c->index == 3) {
    ck_assert_int_eq(weft_transport_set_idle_timeout(fx->c[0]->transport, 0), 0);
    ck_assert_int_eq(weft_transport_set_idle_timeout(fx->c[1]->transport, 10), 0);
  }
}
static void lost_rearranges(tu_conn *c, weft_transport *t, const weft_reason *reason) {
  (void)t;
  if (c->index == 2 && reason->code == WEFT_EIDLE) {
    ck_assert_int_eq(weft_transport_set_idle_timeout(fx->c[3]->transport, 10), 0);
    ck_assert_int_eq(weft_transport_set_idle_timeout(fx->c[1]->transport, 4), 0);
    ck_assert_int_eq(weft_transport_set_idle_timeout(t, 10), WEFT_ECLOSED);
  }
}
static void drained_rearranges(tu_conn *c, weft_transport *t) {
  (void)t;
  if (c->index == 4 && c->drained == 1)
    ck_assert_int_eq(weft_transport_set_idle_timeout(fx->c[0]->transport, 3), 0);
}

START_TEST(test_from_made_lost_drained) {
  fixture x;
  fixture_init(&x, 10, 3, made_rearranges);
  x.f.conn_config.on_lost = lost_rearranges;
  x.f.conn_config.on_drained = drained_rearranges;
  for (int i = 0; i < 3; i++) {
    x.c[i]->cfg.on_lost = lost_rearranges;
    x.c[i]->cfg.on_drained = drained_rearranges;
  }
  advance(&x, 2);
  fixture_connect_one(&x); /* 3, at 2 s */
  ck_assert(weft_transport_get_idle_timeout(x.c[0]->transport) == 0);
  advance(&x, 8.05); /* 10.05 s: 2 ends; its connection_lost moves 3 and 1 */
  assert_idle_lost(&x, 2, 10);
  assert_alive(&x, 0);
  assert_alive(&x, 1);
  assert_alive(&x, 3);
  advance(&x, 2.1); /* 12.15 s: 1 and 3 were due here before the moves */
  assert_alive(&x, 1);
  assert_alive(&x, 3);
  advance(&x, 2); /* 14.15 s: 1 (4 s from 10.05 s) */
  assert_idle_lost(&x, 1, 4);
  assert_alive(&x, 3);

  /* write_drained of 4 (idle 10 s from 14.15 s) sets 0 to 3 s. */
  fixture_connect_one(&x);
  ck_assert_int_eq(weft_transport_set_write_low_water(x.c[4]->transport, 1), 0);
  static uint8_t big[1 << 20];
  int fl = fcntl(x.fd[4], F_GETFL);
  ck_assert_int_eq(fcntl(x.fd[4], F_SETFL, fl | O_NONBLOCK), 0);
  for (int k = 0; k < 16 && weft_transport_pending_output(x.c[4]->transport) == 0; k++) {
    ck_assert_int_eq(weft_transport_write(x.c[4]->transport, big, sizeof big), 0);
    weft_testing_pump(x.r);
  }
  ck_assert_uint_gt(weft_transport_pending_output(x.c[4]->transport), 0);
  for (int k = 0; k < 100000 && weft_transport_pending_output(x.c[4]->transport) > 0; k++) {
    static uint8_t sink[1 << 16];
    while (read(x.fd[4], sink, sizeof sink) > 0) {
    }
    weft_testing_pump(x.r);
  }
  ck_assert_int_ge(x.c[4]->drained, 1);
  ck_assert(weft_transport_get_idle_timeout(x.c[0]->transport) == 3);
  advance(&x, 2.9); /* 17.05 s */
  assert_alive(&x, 0);
  advance(&x, 0.2); /* 17.25 s: 0 */
  assert_idle_lost(&x, 0, 3);
  advance(&x, 3); /* 20.25 s: 3 (restarted at 10.05 s) */
  assert_idle_lost(&x, 3, 10);
  advance(&x, 4); /* 24.25 s: 4 */
  assert_idle_lost(&x, 4, 10);
  fixture_done(&x);
}
END_TEST

/* The log callback runs inside the queue's processing, once per idle close: at the first, it
 * moves 1 to the tail, takes 2 out, moves 3 to another value and aborts 4 (all in the queue
 * being processed, 4 the next head but one); at the second (5's), it sets 0's time-out although
 * 0 is closed already. */
static int log_calls;
static void log_rearranges(void *arg, weft_log_level level, const char *message) {
  (void)arg;
  (void)level;
  if (!strstr(message, "idle time-out"))
    return;
  if (++log_calls == 1) {
    ck_assert_int_eq(weft_transport_set_idle_timeout(fx->c[1]->transport, 10), 0);
    ck_assert_int_eq(weft_transport_set_idle_timeout(fx->c[2]->transport, 0), 0);
    ck_assert_int_eq(weft_transport_set_idle_timeout(fx->c[3]->transport, 20), 0);
    ck_assert_int_eq(weft_transport_abort_connection(fx->c[4]->transport), 0);
  } else if (log_calls == 2) {
    ck_assert_int_eq(weft_transport_reset_idle_timeout(fx->c[1]->transport), 0);
  }
}

START_TEST(test_from_log_while_processing) {
  fixture x;
  fixture_init(&x, 10, 6, NULL);
  log_calls = 0;
  ck_assert_int_eq(weft_reactor_set_log(x.r, WEFT_LOG_INFO, log_rearranges, NULL), 0);
  advance(&x, 10.05); /* 0 and 5 end; 1, 2, 3 moved; 4 aborted */
  ck_assert_int_eq(log_calls, 2);
  assert_idle_lost(&x, 0, 10);
  assert_idle_lost(&x, 5, 10);
  ck_assert_int_eq(x.c[4]->lost, 1);
  ck_assert_int_eq(x.c[4]->lost_reason.code, WEFT_EABORTED);
  assert_alive(&x, 1);
  assert_alive(&x, 2);
  assert_alive(&x, 3);
  advance(&x, 9.9); /* 19.95 s */
  assert_alive(&x, 1);
  advance(&x, 0.2); /* 20.15 s: 1 */
  assert_idle_lost(&x, 1, 10);
  assert_alive(&x, 3);
  advance(&x, 10); /* 30.15 s: 3 */
  assert_idle_lost(&x, 3, 20);
  advance(&x, 1000);
  assert_alive(&x, 2);
  ck_assert_int_eq(x.c[4]->lost, 1);
  fixture_done(&x);
}
END_TEST

/* --- connections ending on their own --------------------------------------------------------- */

START_TEST(test_head_ends) {
  fixture x;
  fixture_init(&x, 10, 4, NULL);
  ck_assert_int_eq(weft_transport_abort_connection(x.c[0]->transport), 0); /* the head */
  tu_wait_int(x.r, &x.c[0]->lost, 1, 10);
  ck_assert_int_eq(x.c[0]->lost_reason.code, WEFT_EABORTED);
  tu_raw_reset(x.fd[1]); /* the new head, by the peer */
  x.fd[1] = -1;
  tu_wait_int(x.r, &x.c[1]->lost, 1, 10);
  ck_assert_int_ne(x.c[1]->lost_reason.code, WEFT_EIDLE);
  advance(&x, 10.05);
  ck_assert_int_eq(x.c[0]->lost, 1);
  ck_assert_int_eq(x.c[1]->lost, 1);
  assert_idle_lost(&x, 2, 10);
  assert_idle_lost(&x, 3, 10);

  /* The last connection of a queue leaving (time-out off) frees the queue. */
  fixture_connect_one(&x);
  long with_queue = weft_allocations_outstanding();
  ck_assert_int_eq(weft_transport_set_idle_timeout(x.c[4]->transport, 0), 0);
  ck_assert_int_lt(weft_allocations_outstanding(), with_queue);
  ck_assert_int_eq(weft_transport_set_idle_timeout(x.c[4]->transport, 5), 0);
  ck_assert_int_eq(weft_transport_set_idle_timeout(x.c[4]->transport, 6), 0); /* moves */
  advance(&x, 5.5);
  assert_alive(&x, 4);
  advance(&x, 0.6);
  assert_idle_lost(&x, 4, 6);
  fixture_done(&x);
}
END_TEST

/* The reactor freed while queues hold connections: each gets connection_lost (shutdown) once,
 * nothing leaks (fixture_done checks weft's blocks; ASan and valgrind the rest). */
START_TEST(test_reactor_freed_with_queues) {
  fixture x;
  fixture_init(&x, 10, 6, made_six_or_ten);
  advance(&x, 3);
  poke(&x, 2);
  for (int i = 0; i < 6; i++)
    assert_alive(&x, i);
  weft_reactor_free(x.r);
  for (int i = 0; i < 6; i++) {
    ck_assert_int_eq(x.c[i]->lost, 1);
    ck_assert_int_eq(x.c[i]->lost_reason.code, WEFT_ESHUTDOWN);
  }
  tu_factory_check(&x.f);
  for (int i = 0; i < 6; i++)
    close(x.fd[i]);
  tu_factory_cleanup(&x.f);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);
}
END_TEST

/* --- no memory for a queue ------------------------------------------------------------------- */

static long fail_from; /* 0: none fail; else allocations from the FAIL_FROMth on fail */
static long n_alloc;
static int should_fail(void) {
  return fail_from > 0 && ++n_alloc >= fail_from;
}
static void *t_malloc(size_t size, void *u) {
  (void)u;
  return should_fail() ? NULL : malloc(size);
}
static void t_free(void *p, void *u) {
  (void)u;
  free(p);
}
static void *t_calloc(size_t count, size_t size, void *u) {
  (void)u;
  return should_fail() ? NULL : calloc(count, size);
}
static void *t_realloc(void *p, size_t size, void *u) {
  (void)u;
  return should_fail() ? NULL : realloc(p, size);
}
static const weft_allocator failing = {0, t_malloc, t_free, t_calloc, t_realloc, NULL};

START_TEST(test_enomem_new_queue) {
  ck_assert_int_eq(weft_set_allocator(&failing), 0);
  fail_from = 0;
  fixture x;
  fixture_init(&x, 0, 2, NULL);
  x.c[0]->cfg.echo = 1;
  weft_transport *t = x.c[0]->transport;
  for (long n = 1; n <= 2; n++) { /* the queue, then its delayed call */
    long base = weft_allocations_outstanding();
    n_alloc = 0;
    fail_from = n;
    ck_assert_int_eq(weft_transport_set_idle_timeout(t, 7), WEFT_ENOMEM);
    fail_from = 0;
    ck_assert(weft_transport_get_idle_timeout(t) == 0);
    ck_assert_int_eq(weft_allocations_outstanding(), base);
  }
  /* Having had a time-out before: left without one. */
  ck_assert_int_eq(weft_transport_set_idle_timeout(t, 5), 0);
  n_alloc = 0;
  fail_from = 1;
  ck_assert_int_eq(weft_transport_set_idle_timeout(t, 7), WEFT_ENOMEM);
  fail_from = 0;
  ck_assert(weft_transport_get_idle_timeout(t) == 0);
  advance(&x, 100);
  assert_alive(&x, 0);
  /* It works normally: echoes. */
  ck_assert_int_eq(write(x.fd[0], "ping", 4), 4);
  tu_wait_size(x.r, &x.c[0]->rx_total, 4, 10);
  char buf[8];
  ssize_t got = 0;
  for (int k = 0; k < 1000 && got < 4; k++) {
    weft_testing_pump(x.r);
    ssize_t m = recv(x.fd[0], buf + got, sizeof buf - (size_t)got, MSG_DONTWAIT);
    if (m > 0)
      got += m;
  }
  ck_assert_int_eq(got, 4);
  ck_assert_int_eq(memcmp(buf, "ping", 4), 0);
  /* A value whose queue exists needs no memory. */
  ck_assert_int_eq(weft_transport_set_idle_timeout(x.c[1]->transport, 9), 0);
  n_alloc = 0;
  fail_from = 1;
  ck_assert_int_eq(weft_transport_set_idle_timeout(t, 9), 0);
  fail_from = 0;
  advance(&x, 9.1);
  assert_idle_lost(&x, 0, 9);
  assert_idle_lost(&x, 1, 9);
  fixture_done(&x);
  ck_assert_int_eq(weft_set_allocator(NULL), 0);
}
END_TEST

/* --- output waiting is not idleness ------------------------------------------------------- */

START_TEST(test_output_pending_not_idle) {
  fixture x;
  fixture_init(&x, 10, 2, NULL);
  weft_transport *t = x.c[0]->transport;
  static uint8_t big[1 << 20];
  for (int k = 0; k < 64 && weft_transport_pending_output(t) == 0; k++) {
    ck_assert_int_eq(weft_transport_write(t, big, sizeof big), 0);
    weft_testing_pump(x.r);
  }
  ck_assert_uint_gt(weft_transport_pending_output(t), 0);
  advance(&x, 10.05); /* 1 ends; 0 waits on its peer: not idle */
  assert_idle_lost(&x, 1, 10);
  assert_alive(&x, 0);
  advance(&x, 10);
  assert_alive(&x, 0);
  ck_assert_uint_gt(weft_transport_pending_output(t), 0);
  int fl = fcntl(x.fd[0], F_GETFL);
  ck_assert_int_eq(fcntl(x.fd[0], F_SETFL, fl | O_NONBLOCK), 0);
  for (int k = 0; k < 100000 && weft_transport_pending_output(t) > 0; k++) {
    static uint8_t sink[1 << 16];
    while (read(x.fd[0], sink, sizeof sink) > 0) {
    }
    weft_testing_pump(x.r);
  }
  ck_assert_uint_eq(weft_transport_pending_output(t), 0);
  assert_alive(&x, 0);
  advance(&x, 10.1); /* idle since its last expiry with output waiting (20 s) */
  assert_idle_lost(&x, 0, 10);
  fixture_done(&x);
}
END_TEST

static Suite *idleq_suite(void) {
  Suite *s = suite_create("idleq");
  TCase *tc = tcase_create("idleq");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_one_queue_per_value);
  tcase_add_test(tc, test_activity_two_queues);
  tcase_add_test(tc, test_from_data_received);
  tcase_add_test(tc, test_from_made_lost_drained);
  tcase_add_test(tc, test_from_log_while_processing);
  tcase_add_test(tc, test_head_ends);
  tcase_add_test(tc, test_reactor_freed_with_queues);
  tcase_add_test(tc, test_enomem_new_queue);
  tcase_add_test(tc, test_output_pending_not_idle);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(idleq_suite());
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
