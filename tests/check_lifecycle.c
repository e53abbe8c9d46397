/* tests/check_lifecycle.c: who hears of a connection's end, over real sockets on 127.0.0.1.
 *
 *  - abort_connection (and lose_connection) inside build_protocol: the protocol returned still
 *    gets connection_made then connection_lost, exactly once each, on servers, on clients and
 *    under a reconnector, which then retries (issue 11, item 8);
 *  - weft_listener_stop from connection_lost while weft_reactor_free closes the connections
 *    (issue 11, item 9), and from connection_lost / connection_made in the normal course;
 *  - a protocol that swaps its ops table from a delayed call (outside any protocol callback)
 *    under a reconnector: the new table gets connection_lost, the reconnector hears of the end
 *    and reconnects, weft_reconnector_transport never returns a freed transport (item 10);
 *  - weft never rewrites the user's ops table (the pointer stays what the user set).
 *
 * Use-after-free checks do not rely on the sanitizers alone: the use-after-free tests install
 * an allocator that overwrites every block weft frees, so that a freed listener read
 * afterwards crashes the test under any build. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "tlsutil.h"

static tu_pki pki;

static void pki_setup(void) {
  tu_pki_init(&pki);
}

static void pki_teardown(void) {
  tu_pki_free(&pki);
}

/* --- An allocator that poisons what weft frees ------------------------------------------- */

static void *p_malloc(size_t n, void *u) {
  (void)u;
  return malloc(n);
}
static void *p_calloc(size_t c, size_t n, void *u) {
  (void)u;
  return calloc(c, n);
}
static void *p_realloc(void *p, size_t n, void *u) {
  (void)u;
  return realloc(p, n);
}
static void p_free(void *p, void *u) {
  (void)u;
  if (p)
    memset(p, 0xA5, malloc_usable_size(p));
  free(p);
}

static void poison_on(void) {
  weft_allocator a = {0, p_malloc, p_free, p_calloc, p_realloc, NULL};
  ck_assert_int_eq(weft_set_allocator(&a), 0);
}

static void poison_off(void) {
  ck_assert_int_eq(weft_set_allocator(NULL), 0);
}

/* --- Item 8: closing the transport inside build_protocol ---------------------------------- */

static int abort_in_build;

static void close_in_build(tu_factory *f, tu_conn *c, weft_transport *t) {
  (void)f;
  (void)c;
  if (abort_in_build)
    ck_assert_int_eq(weft_transport_abort_connection(t), 0);
  else
    ck_assert_int_eq(weft_transport_lose_connection(t), 0);
}

typedef struct ended {
  tu_factory *f;
  int n;
} ended;

static int lost_n(void *arg) {
  ended *e = arg;
  return e->f->lost >= e->n;
}

/* _i: 0 abort, 1 lose; TCP then TLS (bit 1). The server's build_protocol closes. */
START_TEST(test_close_in_build_server) {
  abort_in_build = !(_i & 1);
  int tls = (_i & 2) != 0;
  int fds = tu_count_fds();
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  server.on_build = close_in_build;
  int port;
  weft_listener *l;
  weft_cert_options *so = NULL, *co = NULL;
  if (tls) {
    so = tu_server_options(&pki);
    co = tu_client_options(&pki);
    l = tu_listen_ssl_local(r, &server, so, &port);
    tu_connect_ssl_local(r, &client, port, co, "localhost");
  } else {
    l = tu_listen_tcp_local(r, &server, &port);
    tu_connect_tcp_local(r, &client, port);
  }
  ended e = {&server, 1};
  tu_run_until(r, lost_n, &e, 10);
  tu_conn *c = tu_factory_conn(&server, 0);
  ck_assert_int_eq(c->made, 1);
  ck_assert_int_eq(c->lost, 1);
  ck_assert_int_eq(c->lost_reason.code, abort_in_build ? WEFT_EABORTED : WEFT_OK);
  /* The client side sees an ordinary connection that the server ended. */
  tu_wait_int(r, &client.lost, 1, 10);
  tu_settle(r, 0.05);
  ck_assert_int_eq(weft_listener_connection_count(l), 0);
  ck_assert_int_eq(weft_reactor_connection_count(r), 0);
  tu_factory_check(&server);
  tu_factory_check(&client);
  ck_assert_int_eq(server.made, 1);
  ck_assert_int_eq(server.lost, 1);
  weft_reactor_free(r);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
  ck_assert_int_eq(tu_count_fds(), fds);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);
}
END_TEST

/* The client's build_protocol closes: no connection_failed, made and lost once. */
START_TEST(test_close_in_build_client) {
  abort_in_build = !(_i & 1);
  int tls = (_i & 2) != 0;
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  client.on_build = close_in_build;
  int port;
  weft_cert_options *so = NULL, *co = NULL;
  if (tls) {
    so = tu_server_options(&pki);
    co = tu_client_options(&pki);
    tu_listen_ssl_local(r, &server, so, &port);
    tu_connect_ssl_local(r, &client, port, co, "localhost");
  } else {
    tu_listen_tcp_local(r, &server, &port);
    tu_connect_tcp_local(r, &client, port);
  }
  ended e = {&client, 1};
  tu_run_until(r, lost_n, &e, 10);
  tu_settle(r, 0.05);
  ck_assert_int_eq(client.made, 1);
  ck_assert_int_eq(client.lost, 1);
  ck_assert_int_eq(client.failed, 0);
  tu_factory_check(&client);
  weft_reactor_free(r);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);
}
END_TEST

/* --- Reconnectors ------------------------------------------------------------------------- */

typedef struct rfix {
  weft_reactor *r;
  tu_factory server, client;
  weft_reconnector *rc;
  int retries_seen;                /* on_retry calls */
  weft_transport *transport_after; /* weft_reconnector_transport after the first lost */
  weft_reconnect_state state_after;
  int swapped_lost; /* connection_lost calls through the swapped table */
} rfix;

static rfix *g_rfix;

static void rf_on_retry(weft_reconnector *rc, double delay, const weft_reason *reason, void *data) {
  rfix *fx = data;
  (void)rc;
  (void)delay;
  (void)reason;
  fx->retries_seen++;
}

static void rf_note_after(rfix *fx) {
  fx->transport_after = weft_reconnector_transport(fx->rc);
  fx->state_after = weft_reconnector_state(fx->rc);
}

static void rf_retry_noted(weft_reconnector *rc, double delay, const weft_reason *reason,
                           void *data) {
  rfix *fx = data;
  if (fx->retries_seen == 0)
    rf_note_after(fx);
  rf_on_retry(rc, delay, reason, data);
}

static void rf_start(rfix *fx, int tls, weft_cert_options **so, weft_cert_options **co) {
  int port;
  if (tls) {
    *so = tu_server_options(&pki);
    *co = tu_client_options(&pki);
    tu_listen_ssl_local(fx->r, &fx->server, *so, &port);
  } else {
    tu_listen_tcp_local(fx->r, &fx->server, &port);
  }
  weft_reconnect_options ro;
  weft_reconnect_options_init(&ro);
  ro.initial_delay = 0.01;
  ro.max_delay = 0.05;
  ro.seed = 1;
  ro.on_retry = rf_retry_noted;
  ro.user_data = fx;
  ck_assert_int_eq(tu_reconnect_start(fx->r, "127.0.0.1", port, &fx->client.base, tls ? *co : NULL,
                                      tls ? "localhost" : NULL, 0, NULL, &ro, &fx->rc),
                   0);
}

/* Only the first connection closes itself in build_protocol. */
static void close_first_in_build(tu_factory *f, tu_conn *c, weft_transport *t) {
  if (c->index == 0)
    close_in_build(f, c, t);
}

START_TEST(test_close_in_build_reconnector) {
  abort_in_build = !(_i & 1);
  int tls = (_i & 2) != 0;
  rfix fx;
  memset(&fx, 0, sizeof fx);
  fx.r = tu_reactor_new();
  tu_factory_init(&fx.server);
  tu_factory_init(&fx.client);
  fx.client.on_build = close_first_in_build;
  weft_cert_options *so = NULL, *co = NULL;
  rf_start(&fx, tls, &so, &co);
  /* The first connection ends inside build_protocol; the reconnector must hear of it, retry,
   * and make a second connection that stays up. */
  tu_wait_int(fx.r, &fx.client.made, 2, 10);
  tu_conn *first = tu_factory_conn(&fx.client, 0);
  ck_assert_int_eq(first->made, 1);
  ck_assert_int_eq(first->lost, 1);
  ck_assert_int_eq(first->lost_reason.code, abort_in_build ? WEFT_EABORTED : WEFT_OK);
  ck_assert_int_ge(fx.retries_seen, 1);
  ck_assert_ptr_null(fx.transport_after);
  ck_assert_int_eq(fx.state_after, WEFT_RECONNECT_WAITING);
  tu_conn *second = tu_factory_conn(&fx.client, 1);
  ck_assert_ptr_eq(weft_reconnector_transport(fx.rc), second->transport);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_CONNECTED);
  tu_factory_check(&fx.client);
  weft_reconnector_free(fx.rc);
  weft_reactor_free(fx.r);
  ck_assert_int_eq(fx.client.made, fx.client.lost);
  tu_factory_check(&fx.client);
  tu_factory_cleanup(&fx.server);
  tu_factory_cleanup(&fx.client);
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);
}
END_TEST

/* --- Item 10: ops swapped from a delayed call under a reconnector -------------------------- */

static void swapped_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  rfix *fx = g_rfix;
  fx->swapped_lost++;
  /* Still the live connection's transport during connection_lost. */
  ck_assert_ptr_eq(weft_reconnector_transport(fx->rc), t);
  tu_conn_ops.connection_lost(p, t, reason);
}

static const weft_protocol_ops swapped_ops = {
    .connection_made = NULL, /* not called again */
    .data_received = NULL,
    .read_eof = NULL,
    .write_drained = NULL,
    .tls_started = NULL,
    .connection_lost = swapped_lost,
};

static weft_protocol *swap_target;
static int swapped;

static void swap_later(void *arg) {
  (void)arg;
  swap_target->ops = &swapped_ops;
  swapped = 1;
  /* Now end it: the server closes (the reconnector must hear of it). */
  tu_conn *s = tu_factory_conn(&g_rfix->server, 0);
  ck_assert_ptr_nonnull(s);
  ck_assert_int_eq(weft_transport_lose_connection(s->transport), 0);
}

static void schedule_swap(tu_conn *c, weft_transport *t) {
  if (c->index != 0)
    return;
  swap_target = &c->base;
  (void)t;
  ck_assert_int_eq(weft_reactor_call_later(weft_transport_reactor(t), 0.01, swap_later, NULL, NULL),
                   0);
}

static int server_made_one(void *arg) {
  rfix *fx = arg;
  return fx->server.made >= 1 && fx->client.made >= 1;
}

START_TEST(test_ops_swap_from_delayed_call) {
  int tls = _i != 0;
  rfix fx;
  memset(&fx, 0, sizeof fx);
  g_rfix = &fx;
  swapped = 0;
  fx.r = tu_reactor_new();
  tu_factory_init(&fx.server);
  tu_factory_init(&fx.client);
  fx.client.conn_config.on_made = schedule_swap;
  weft_cert_options *so = NULL, *co = NULL;
  rf_start(&fx, tls, &so, &co);
  tu_run_until(fx.r, server_made_one, &fx, 10);
  tu_conn *first = tu_factory_conn(&fx.client, 0);
  const weft_protocol_ops *ops_in_made = first->base.ops;
  tu_wait_int(fx.r, &fx.swapped_lost, 1, 10);
  ck_assert_int_eq(swapped, 1);
  ck_assert_ptr_eq(first->base.ops, &swapped_ops);
  /* The reconnector heard of the end: it reconnects, and hands out the new transport. */
  tu_wait_int(fx.r, &fx.client.made, 2, 10);
  ck_assert_int_ge(fx.retries_seen, 1);
  tu_conn *second = tu_factory_conn(&fx.client, 1);
  /* (Not compared with the first transport's address: the allocator may well give the new
   * transport the same block. That the first connection is over is checked below.) */
  ck_assert_ptr_eq(weft_reconnector_transport(fx.rc), second->transport);
  ck_assert_ptr_nonnull(second->transport);
  ck_assert_int_eq(second->lost, 0);
  ck_assert_int_eq(first->lost, 1);
  ck_assert_int_eq(fx.swapped_lost, 1);
  /* weft never rewrites the user's table: it was the one build_protocol returned. */
  ck_assert_ptr_eq(ops_in_made, &tu_conn_ops);
  tu_factory_check(&fx.client);
  weft_reconnector_free(fx.rc);
  weft_reactor_free(fx.r);
  tu_factory_check(&fx.client);
  tu_factory_cleanup(&fx.server);
  tu_factory_cleanup(&fx.client);
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);
  g_rfix = NULL;
}
END_TEST

/* --- Item 9: weft_listener_stop from connection_lost during weft_reactor_free -------------- */

static weft_listener *stop_me;
static int stops;

static void stop_listener_once(tu_conn *c, weft_transport *t, const weft_reason *reason) {
  (void)c;
  (void)t;
  (void)reason;
  if (stop_me) {
    weft_listener *l = stop_me;
    stop_me = NULL;
    weft_listener_stop(l);
    stops++;
  }
}

/* _i bit 0: TLS. bit 1: the stop comes from the client's connection_lost (the client and the
 * server are on the same reactor), else from the server's. */
START_TEST(test_listener_stop_in_lost_during_free) {
  int tls = (_i & 1) != 0;
  int from_client = (_i & 2) != 0;
  poison_on();
  int fds = tu_count_fds();
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  if (from_client)
    client.conn_config.on_lost = stop_listener_once;
  else
    server.conn_config.on_lost = stop_listener_once;
  int port;
  weft_cert_options *so = NULL, *co = NULL;
  weft_listener *l;
  if (tls) {
    so = tu_server_options(&pki);
    co = tu_client_options(&pki);
    l = tu_listen_ssl_local(r, &server, so, &port);
    tu_connect_ssl_local(r, &client, port, co, "localhost");
  } else {
    l = tu_listen_tcp_local(r, &server, &port);
    tu_connect_tcp_local(r, &client, port);
  }
  /* A second listener, so that the reactor still has one to free after the stop. */
  tu_factory other;
  tu_factory_init(&other);
  tu_listen_tcp_local(r, &other, NULL);
  tu_wait_int(r, &server.made, 1, 10);
  tu_wait_int(r, &client.made, 1, 10);
  stop_me = l;
  stops = 0;
  weft_reactor_free(r);
  ck_assert_int_eq(stops, 1);
  ck_assert_int_eq(server.lost, 1);
  ck_assert_int_eq(client.lost, 1);
  ck_assert_int_eq(tu_factory_conn(&server, 0)->lost_reason.code, WEFT_ESHUTDOWN);
  tu_factory_check(&server);
  tu_factory_check(&client);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
  tu_factory_cleanup(&other);
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
  ck_assert_int_eq(tu_count_fds(), fds);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);
  poison_off();
}
END_TEST

/* The same stop in the normal course: from the server's connection_made (inside the listener's
 * accept callback) and from connection_lost; the stopped listener accepts nothing more, and
 * the connection it accepted lives on. */
static void stop_listener_in_made(tu_conn *c, weft_transport *t) {
  (void)c;
  (void)t;
  stop_listener_once(c, t, NULL);
}

START_TEST(test_listener_stop_in_callbacks) {
  int in_made = (_i & 1) != 0;
  poison_on();
  int fds = tu_count_fds();
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  if (in_made)
    server.conn_config.on_made = stop_listener_in_made;
  else
    server.conn_config.on_lost = stop_listener_once;
  server.conn_config.echo = 1;
  int port;
  stop_me = tu_listen_tcp_local(r, &server, &port);
  stops = 0;
  tu_connect_tcp_local(r, &client, port);
  tu_conn *cc = tu_wait_conn(r, &client, 0, 10);
  tu_wait_int(r, &server.made, 1, 10);
  tu_conn_write_str(cc, "ping");
  tu_wait_size(r, &cc->rx_total, 4, 10);
  ck_assert(tu_conn_rx_equals(cc, "ping", 4));
  ck_assert_int_eq(weft_transport_lose_connection(cc->transport), 0);
  tu_wait_int(r, &server.lost, 1, 10);
  ck_assert_int_eq(stops, 1);
  /* Stopped: a new connection is refused. */
  tu_connect_tcp_local(r, &client, port);
  tu_wait_int(r, &client.failed, 1, 10);
  ck_assert_int_eq(client.last_failed.code, WEFT_ECONNREFUSED);
  tu_factory_check(&server);
  tu_factory_check(&client);
  weft_reactor_free(r);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
  ck_assert_int_eq(tu_count_fds(), fds);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);
  poison_off();
}
END_TEST

static Suite *lifecycle_suite(void) {
  Suite *s = suite_create("lifecycle");
  TCase *tc = tcase_create("build_protocol");
  tcase_add_unchecked_fixture(tc, pki_setup, pki_teardown);
  tcase_add_loop_test(tc, test_close_in_build_server, 0, 4);
  tcase_add_loop_test(tc, test_close_in_build_client, 0, 4);
  tcase_add_loop_test(tc, test_close_in_build_reconnector, 0, 4);
  suite_add_tcase(s, tc);
  tc = tcase_create("reconnector");
  tcase_add_unchecked_fixture(tc, pki_setup, pki_teardown);
  tcase_add_loop_test(tc, test_ops_swap_from_delayed_call, 0, 2);
  suite_add_tcase(s, tc);
  tc = tcase_create("listener");
  tcase_add_unchecked_fixture(tc, pki_setup, pki_teardown);
  tcase_add_loop_test(tc, test_listener_stop_in_lost_during_free, 0, 4);
  tcase_add_loop_test(tc, test_listener_stop_in_callbacks, 0, 2);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(lifecycle_suite());
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
