/* tests/check_reconnect.c: reconnectors (weft/reconnect.h) over real sockets on 127.0.0.1:
 * back-off against a refused port (growth, cap, jitter with a fixed seed, max_retries), a
 * listener that appears late, reconnection after a lost connection (TCP and TLS), stopping and
 * freeing in every state and from inside every callback, both orders of freeing the reactor and
 * the reconnector, protocols that switch their ops table, and argument checking.
 *
 * Timing: delays are small (10 ms to 80 ms) and the loop runs until events happen, never for a
 * fixed sleep. Only lower bounds and order are asserted on measured times, with TIMER_SLACK for
 * libevent's clock: by default it reads CLOCK_MONOTONIC_COARSE (one tick is 4 ms on a 250 Hz
 * kernel), so a timer may fire up to one tick before DELAY has passed on CLOCK_MONOTONIC. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "testutil.h"
#include "tlsutil.h"

#define TIMER_SLACK 0.005
#define MAX_EVENTS 64

/* --- What a reconnector and its factory went through ------------------------------------- */

typedef enum free_point {
  FREE_NOWHERE = 0,
  FREE_IN_FAILED,  /* weft_reconnector_free in the factory's connection_failed */
  STOP_IN_FAILED,  /* weft_reconnector_stop in connection_failed */
  FREE_IN_RETRY,   /* ... in on_retry */
  FREE_IN_GIVE_UP, /* ... in on_give_up */
  FREE_IN_LOST,    /* ... in the protocol's connection_lost */
  FREE_IN_MADE     /* ... in the protocol's connection_made */
} free_point;

typedef struct fixture {
  weft_reactor *r;
  tu_factory server, client;
  weft_listener *listener;
  int port;
  weft_reconnector *rc;
  weft_reconnect_options ro;
  free_point free_at;

  int nretry;               /* on_retry calls */
  double waits[MAX_EVENTS]; /* their DELAY */
  int retry_codes[MAX_EVENTS];
  int give_ups;
  tu_reason give_up_reason;

  int nfail; /* connection_failed calls, as seen by the hook */
  double fail_times[MAX_EVENTS];
  weft_reconnect_state state_in_failed[MAX_EVENTS];
  int retries_in_failed[MAX_EVENTS];

  int made_tls[MAX_EVENTS]; /* weft_transport_is_tls in each client connection_made */
  int retries_in_made;      /* weft_reconnector_retries in the last connection_made */
  double delay_in_made;     /* weft_reconnector_current_delay in the last connection_made */
  int protocol_in_made_ok;  /* weft_transport_protocol(t) was the user's protocol */
} fixture;

static void free_rc(fixture *fx) {
  weft_reconnector_free(fx->rc);
  fx->rc = NULL;
}

static void on_retry(weft_reconnector *rc, double delay, const weft_reason *reason, void *data) {
  fixture *fx = data;
  ck_assert_ptr_eq(rc, fx->rc);
  ck_assert_ptr_nonnull(reason);
  ck_assert_ptr_nonnull(reason->message);
  ck_assert_int_eq(weft_reconnector_state(rc), WEFT_RECONNECT_WAITING);
  if (fx->nretry < MAX_EVENTS) {
    fx->waits[fx->nretry] = delay;
    fx->retry_codes[fx->nretry] = reason->code;
  }
  fx->nretry++;
  if (fx->free_at == FREE_IN_RETRY)
    free_rc(fx);
}

static void on_give_up(weft_reconnector *rc, const weft_reason *reason, void *data) {
  fixture *fx = data;
  ck_assert_ptr_eq(rc, fx->rc);
  ck_assert_int_eq(weft_reconnector_state(rc), WEFT_RECONNECT_STOPPED);
  fx->give_ups++;
  tu_reason_copy(&fx->give_up_reason, reason);
  if (fx->free_at == FREE_IN_GIVE_UP)
    free_rc(fx);
}

static void client_failed(tu_factory *f, const weft_reason *reason) {
  fixture *fx = f->user;
  (void)reason;
  if (fx->nfail < MAX_EVENTS) {
    fx->fail_times[fx->nfail] = tu_now();
    fx->state_in_failed[fx->nfail] = weft_reconnector_state(fx->rc);
    fx->retries_in_failed[fx->nfail] = weft_reconnector_retries(fx->rc);
  }
  fx->nfail++;
  if (fx->free_at == FREE_IN_FAILED)
    free_rc(fx);
  else if (fx->free_at == STOP_IN_FAILED)
    weft_reconnector_stop(fx->rc);
}

static void client_made(tu_conn *c, weft_transport *t) {
  fixture *fx = c->factory->user;
  if (c->index < MAX_EVENTS)
    fx->made_tls[c->index] = weft_transport_is_tls(t);
  fx->retries_in_made = weft_reconnector_retries(fx->rc);
  fx->delay_in_made = weft_reconnector_current_delay(fx->rc);
  fx->protocol_in_made_ok =
      weft_transport_protocol(t) == &c->base && weft_reconnector_transport(fx->rc) == t;
  if (fx->free_at == FREE_IN_MADE)
    free_rc(fx);
}

static void client_lost(tu_conn *c, weft_transport *t, const weft_reason *reason) {
  fixture *fx = c->factory->user;
  (void)t;
  (void)reason;
  /* The user's own table is back while its connection_lost runs. */
  if (c->base.ops != &tu_conn_ops && c->user == NULL)
    tu_conn_violation(c, "ops in connection_lost is not the protocol's own table");
  if (fx->free_at == FREE_IN_LOST)
    free_rc(fx);
}

/* Server side: close the first connection at once (the client then reconnects). */
static void server_close_first(tu_conn *c, weft_transport *t) {
  if (c->index == 0)
    weft_transport_lose_connection(t);
}

/* Fast back-off: 10, 20, 40, 80, 80 ... ms, no jitter. */
static void fixture_init(fixture *fx) {
  memset(fx, 0, sizeof *fx);
  fx->r = tu_reactor_new();
  tu_factory_init(&fx->server);
  tu_factory_init(&fx->client);
  fx->client.user = fx;
  fx->client.on_failed = client_failed;
  fx->client.conn_config.on_made = client_made;
  fx->client.conn_config.on_lost = client_lost;
  weft_reconnect_options_init(&fx->ro);
  fx->ro.initial_delay = 0.01;
  fx->ro.factor = 2;
  fx->ro.max_delay = 0.08;
  fx->ro.jitter = 0;
  fx->ro.seed = 1;
  fx->ro.on_retry = on_retry;
  fx->ro.on_give_up = on_give_up;
  fx->ro.user_data = fx;
}

static void fixture_listen(fixture *fx) {
  fx->listener = tu_listen_tcp_local(fx->r, &fx->server, &fx->port);
}

static void fixture_start(fixture *fx, weft_cert_options *opts, const char *server_name) {
  int rc = tu_reconnect_start(fx->r, "127.0.0.1", fx->port, &fx->client.base, opts, server_name, 0,
                              NULL, &fx->ro, &fx->rc);
  ck_assert_msg(rc == 0, "weft_reconnect_start: %s", weft_err_name(rc));
  ck_assert_ptr_nonnull(fx->rc);
}

/* Reconnector first, then the reactor (the documented order), then the contract checks. */
static void fixture_free(fixture *fx) {
  tu_factory_check(&fx->client);
  tu_factory_check(&fx->server);
  free_rc(fx);
  weft_reactor_free(fx->r);
  tu_factory_check(&fx->client);
  tu_factory_check(&fx->server);
  tu_factory_cleanup(&fx->client);
  tu_factory_cleanup(&fx->server);
}

/* The base delay of retry K (0-based) with the fixture's options. */
static double base_delay(const fixture *fx, int k) {
  return fmin(fx->ro.initial_delay * pow(fx->ro.factor, k), fx->ro.max_delay);
}

/* --- Options and arguments ----------------------------------------------------------- */

START_TEST(test_options_defaults) {
  weft_reconnect_options o;
  memset(&o, 0x5a, sizeof o);
  weft_reconnect_options_init(&o);
  ck_assert_double_eq_tol(o.initial_delay, 1.0, 1e-12);
  ck_assert_double_eq_tol(o.factor, 2.7182818, 1e-6);
  ck_assert_double_eq_tol(o.jitter, 0.11962656, 1e-8);
  ck_assert_double_eq_tol(o.max_delay, 3600.0, 1e-9);
  ck_assert_int_eq(o.max_retries, 0);
  ck_assert_uint_eq(o.size, sizeof o);
  ck_assert(o.seed == 0);
  ck_assert_ptr_null(o.on_retry);
  ck_assert_ptr_null(o.on_give_up);
  ck_assert_ptr_null(o.user_data);
  weft_reconnect_options_init(NULL); /* ignored */
}
END_TEST

static int start_with(fixture *fx, const weft_reconnect_options *ro) {
  weft_reconnector *out = (weft_reconnector *)&out; /* must be reset to NULL */
  int rc = tu_reconnect_start(fx->r, "127.0.0.1", fx->port, &fx->client.base, NULL, NULL, 0, NULL,
                              ro, &out);
  ck_assert_ptr_null(out);
  return rc;
}

START_TEST(test_bad_arguments) {
  fixture fx;
  fixture_init(&fx);
  fx.port = tu_free_port();
  weft_reconnector *out = NULL;
  weft_factory no_build = {0};

  /* Where to connect comes from a client endpoint: NULL, a server endpoint, or one without its
   * host or port is refused, as are the other NULL arguments. */
  weft_endpoint *ep = tu_client_endpoint("127.0.0.1", fx.port, NULL, NULL, 0, NULL);
  weft_endpoint *no_port = NULL, *no_host = NULL, *server = NULL;
  ck_assert_int_eq(weft_endpoint_new(WEFT_ENDPOINT_CLIENT, &no_port), 0);
  ck_assert_int_eq(weft_endpoint_set_host(no_port, "127.0.0.1"), 0);
  ck_assert_int_eq(weft_endpoint_new(WEFT_ENDPOINT_CLIENT, &no_host), 0);
  ck_assert_int_eq(weft_endpoint_set_port(no_host, fx.port), 0);
  ck_assert_int_eq(weft_endpoint_new(WEFT_ENDPOINT_SERVER, &server), 0);
  ck_assert_int_eq(weft_endpoint_set_host(server, "127.0.0.1"), 0);
  ck_assert_int_eq(weft_endpoint_set_port(server, fx.port), 0);
  ck_assert_int_eq(weft_reconnect_start(NULL, ep, &fx.client.base, &fx.ro, &out), WEFT_EINVAL);
  ck_assert_int_eq(weft_reconnect_start(fx.r, NULL, &fx.client.base, &fx.ro, &out), WEFT_EINVAL);
  ck_assert_int_eq(weft_reconnect_start(fx.r, no_port, &fx.client.base, &fx.ro, &out), WEFT_EINVAL);
  ck_assert_int_eq(weft_reconnect_start(fx.r, no_host, &fx.client.base, &fx.ro, &out), WEFT_EINVAL);
  ck_assert_int_eq(weft_reconnect_start(fx.r, server, &fx.client.base, &fx.ro, &out), WEFT_EINVAL);
  ck_assert_int_eq(weft_reconnect_start(fx.r, ep, NULL, &fx.ro, &out), WEFT_EINVAL);
  ck_assert_int_eq(weft_reconnect_start(fx.r, ep, &no_build, &fx.ro, &out), WEFT_EINVAL);
  ck_assert_int_eq(weft_reconnect_start(fx.r, ep, &fx.client.base, &fx.ro, NULL), WEFT_EINVAL);
  ck_assert_ptr_null(out);
  weft_endpoint_free(ep);
  weft_endpoint_free(no_port);
  weft_endpoint_free(no_host);
  weft_endpoint_free(server);

  /* Each option out of its range. */
  weft_reconnect_options o;
#define BAD_OPTION(field, value)                                                                   \
  do {                                                                                             \
    o = fx.ro;                                                                                     \
    o.field = (value);                                                                             \
    ck_assert_int_eq(start_with(&fx, &o), WEFT_EINVAL);                                            \
  } while (0)
  BAD_OPTION(initial_delay, 0);
  BAD_OPTION(initial_delay, -1);
  BAD_OPTION(initial_delay, NAN);
  BAD_OPTION(initial_delay, INFINITY);
  BAD_OPTION(factor, 0.5);
  BAD_OPTION(factor, INFINITY);
  BAD_OPTION(factor, NAN);
  BAD_OPTION(jitter, -0.1);
  BAD_OPTION(jitter, 1.5);
  BAD_OPTION(jitter, NAN);
  BAD_OPTION(max_delay, 0.005); /* below initial_delay */
  BAD_OPTION(max_delay, 2e9);
  BAD_OPTION(max_delay, INFINITY);
  BAD_OPTION(max_retries, -1);
#undef BAD_OPTION

  /* The accessors' NULL cases. */
  ck_assert_int_eq(weft_reconnector_stop(NULL), WEFT_EINVAL);
  weft_reconnector_free(NULL);
  ck_assert_int_eq(weft_reconnector_state(NULL), WEFT_RECONNECT_STOPPED);
  ck_assert_int_eq(weft_reconnector_retries(NULL), -1);
  ck_assert(weft_reconnector_current_delay(NULL) < 0);
  ck_assert_ptr_null(weft_reconnector_transport(NULL));

  /* No callback follows a refused start. */
  tu_settle(fx.r, 0.1);
  ck_assert_int_eq(fx.client.failed, 0);
  ck_assert_int_eq(fx.client.built, 0);
  ck_assert_int_eq(fx.nretry, 0);
  ck_assert_int_eq(fx.give_ups, 0);
  fixture_free(&fx);
}
END_TEST

START_TEST(test_tls_options_error) {
  /* Options that cannot make a client context (a key without its certificate): the options'
   * error comes back, nothing starts, no callback follows. */
  fixture fx;
  fixture_init(&fx);
  fx.port = tu_free_port();
  weft_cert_options *opts = NULL;
  ck_assert_int_eq(weft_cert_options_new(&opts), 0);
  EVP_PKEY *key = tu_make_key();
  tu_check_opt(opts, weft_cert_options_set_private_key(opts, key));
  weft_reconnector *out = NULL;
  int rc = tu_reconnect_start(fx.r, "127.0.0.1", fx.port, &fx.client.base, opts, NULL, 0, NULL,
                              &fx.ro, &out);
  ck_assert_int_eq(rc, WEFT_EINVAL);
  ck_assert_ptr_null(out);
  ck_assert_str_ne(weft_cert_options_last_error(opts), "");
  weft_cert_options_unref(opts);
  EVP_PKEY_free(key);
  tu_settle(fx.r, 0.1);
  ck_assert_int_eq(fx.client.failed, 0);
  ck_assert_int_eq(fx.nretry, 0);
  fixture_free(&fx);
}
END_TEST

/* --- Back-off ------------------------------------------------------------------------ */

static int gave_up(void *arg) {
  return ((fixture *)arg)->give_ups > 0;
}

START_TEST(test_backoff_refused_gives_up) {
  fixture fx;
  fixture_init(&fx);
  fx.port = tu_free_port(); /* nothing listens: every attempt is refused */
  fx.ro.max_retries = 5;
  fixture_start(&fx, NULL, NULL);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_CONNECTING);
  ck_assert_int_eq(weft_reconnector_retries(fx.rc), 0);
  tu_run_until(fx.r, gave_up, &fx, 10.0);

  /* max_retries 5: 6 attempts, 6 connection_failed, 5 retries, one give-up with the last
   * reason. */
  ck_assert_int_eq(fx.client.failed, 6);
  ck_assert_int_eq(fx.nfail, 6);
  ck_assert_int_eq(fx.nretry, 5);
  ck_assert_int_eq(fx.give_ups, 1);
  ck_assert_int_eq(fx.give_up_reason.code, WEFT_ECONNREFUSED);
  ck_assert_int_eq(fx.client.last_failed.code, WEFT_ECONNREFUSED);
  ck_assert_str_eq(fx.give_up_reason.message, fx.client.last_failed.message);
  ck_assert_int_eq(fx.client.built, 0);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_STOPPED);
  ck_assert_int_eq(weft_reconnector_retries(fx.rc), 5);

  /* No jitter: the waits are exactly 10, 20, 40, 80 (capped), 80 ms. */
  for (int k = 0; k < 5; k++) {
    ck_assert_double_eq_tol(fx.waits[k], base_delay(&fx, k), 1e-12);
    ck_assert_int_eq(fx.retry_codes[k], WEFT_ECONNREFUSED);
  }
  ck_assert_double_eq_tol(fx.waits[1], fx.waits[0] * 2, 1e-12);
  ck_assert_double_eq_tol(fx.waits[2], fx.waits[1] * 2, 1e-12);
  ck_assert_double_eq_tol(fx.waits[3], fx.waits[2] * 2, 1e-12);
  ck_assert_double_eq_tol(fx.waits[4], fx.ro.max_delay, 1e-12);
  ck_assert_double_eq_tol(weft_reconnector_current_delay(fx.rc), fx.ro.max_delay, 1e-12);

  /* Measured: attempt K+1 failed at least the wait after attempt K failed. */
  for (int k = 0; k < 5; k++) {
    double gap = fx.fail_times[k + 1] - fx.fail_times[k];
    ck_assert_msg(gap >= fx.waits[k] - TIMER_SLACK, "gap %d: %.4f s < wait %.4f s", k, gap,
                  fx.waits[k]);
  }
  /* In connection_failed the next step was already decided. */
  for (int k = 0; k < 5; k++) {
    ck_assert_int_eq(fx.state_in_failed[k], WEFT_RECONNECT_WAITING);
    ck_assert_int_eq(fx.retries_in_failed[k], k + 1);
  }
  ck_assert_int_eq(fx.state_in_failed[5], WEFT_RECONNECT_STOPPED);

  /* Stopped for good. */
  tu_settle(fx.r, 0.2);
  ck_assert_int_eq(fx.client.failed, 6);
  ck_assert_int_eq(fx.give_ups, 1);
  fixture_free(&fx);
}
END_TEST

/* Runs two reconnectors side by side until both gave up. */
typedef struct two {
  fixture *a, *b;
} two;

static int both_gave_up(void *arg) {
  two *t = arg;
  return t->a->give_ups > 0 && t->b->give_ups > 0;
}

START_TEST(test_jitter_seeded) {
  fixture fx[3];
  for (int i = 0; i < 3; i++) {
    fixture_init(&fx[i]);
    if (i > 0) { /* one reactor for all three */
      weft_reactor_free(fx[i].r);
      fx[i].r = fx[0].r;
    }
    fx[i].port = tu_free_port();
    fx[i].ro.jitter = 0.5;
    fx[i].ro.max_retries = 4;
    fx[i].ro.seed = i < 2 ? 12345 : 999;
    fixture_start(&fx[i], NULL, NULL);
  }
  two t01 = {&fx[0], &fx[1]}, t02 = {&fx[0], &fx[2]};
  tu_run_until(fx[0].r, both_gave_up, &t01, 10.0);
  tu_run_until(fx[0].r, both_gave_up, &t02, 10.0);

  int differs_from_base = 0, differs_from_other_seed = 0;
  for (int k = 0; k < 4; k++) {
    double d = base_delay(&fx[0], k), lo = d * 0.5, hi = fmin(d * 1.5, fx[0].ro.max_delay);
    for (int i = 0; i < 3; i++) {
      ck_assert_msg(fx[i].waits[k] >= lo && fx[i].waits[k] <= hi,
                    "reconnector %d wait %d: %.5f not in [%.5f, %.5f]", i, k, fx[i].waits[k], lo,
                    hi);
      double gap = fx[i].fail_times[k + 1] - fx[i].fail_times[k];
      ck_assert_msg(gap >= fx[i].waits[k] - TIMER_SLACK, "gap %.4f < wait %.4f", gap,
                    fx[i].waits[k]);
    }
    /* The same seed gives the same waits. */
    ck_assert_double_eq_tol(fx[0].waits[k], fx[1].waits[k], 1e-15);
    differs_from_base |= fabs(fx[0].waits[k] - d) > 1e-9;
    differs_from_other_seed |= fabs(fx[0].waits[k] - fx[2].waits[k]) > 1e-9;
  }
  ck_assert_msg(differs_from_base, "jitter 0.5 changed no wait");
  ck_assert_msg(differs_from_other_seed, "another seed gave the same waits");
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(fx[i].client.failed, 5);
    ck_assert_int_eq(fx[i].give_ups, 1);
    tu_factory_check(&fx[i].client);
    free_rc(&fx[i]);
  }
  weft_reactor_free(fx[0].r);
  for (int i = 0; i < 3; i++)
    tu_factory_cleanup(&fx[i].client);
  for (int i = 0; i < 3; i++)
    tu_factory_cleanup(&fx[i].server);
}
END_TEST

/* --- Connecting, losing, reconnecting ------------------------------------------------ */

START_TEST(test_listener_appears_later) {
  fixture fx;
  fixture_init(&fx);
  fx.port = tu_free_port();
  fx.ro.initial_delay = 0.05; /* time enough to start listening after the second failure */
  fx.ro.max_delay = 1;
  fx.server.conn_config.echo = 1;
  fixture_start(&fx, NULL, NULL);
  tu_wait_int(fx.r, &fx.client.failed, 2, 10.0);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_WAITING);
  ck_assert_double_eq_tol(weft_reconnector_current_delay(fx.rc), 0.2, 1e-12);
  ck_assert_int_eq(weft_listen_tcp(fx.r, "127.0.0.1", fx.port, &fx.server.base, &fx.listener), 0);

  tu_wait_int(fx.r, &fx.client.made, 1, 10.0);
  tu_conn *c = tu_factory_conn(&fx.client, 0);
  ck_assert_int_eq(c->made, 1);
  ck_assert_int_eq(fx.client.failed, 2);
  ck_assert_int_eq(fx.nretry, 2);
  /* Reset on connection_made, already visible inside it. */
  ck_assert_int_eq(fx.retries_in_made, 0);
  ck_assert_double_eq_tol(fx.delay_in_made, fx.ro.initial_delay, 1e-12);
  ck_assert_int_eq(fx.protocol_in_made_ok, 1);
  ck_assert_int_eq(weft_reconnector_retries(fx.rc), 0);
  ck_assert_double_eq_tol(weft_reconnector_current_delay(fx.rc), fx.ro.initial_delay, 1e-12);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_CONNECTED);
  ck_assert_ptr_eq(weft_reconnector_transport(fx.rc), c->transport);

  /* Data flows through the forwarding table both ways. */
  tu_conn_write_str(c, "ping");
  tu_wait_size(fx.r, &c->rx_total, 4, 10.0);
  ck_assert(tu_conn_rx_equals(c, "ping", 4));
  ck_assert_int_eq(fx.client.failed, 2);
  /* The reconnector first, then the reactor, which cuts the connection. */
  free_rc(&fx);
  weft_reactor_free(fx.r);
  ck_assert_int_eq(c->lost, 1);
  ck_assert_int_eq(c->lost_reason.code, WEFT_ESHUTDOWN);
  tu_factory_check(&fx.client);
  tu_factory_cleanup(&fx.client);
  tu_factory_cleanup(&fx.server);
}
END_TEST

START_TEST(test_reconnect_after_loss) {
  fixture fx;
  fixture_init(&fx);
  fixture_listen(&fx);
  fx.server.conn_config.on_made = server_close_first;
  fixture_start(&fx, NULL, NULL);
  tu_wait_int(fx.r, &fx.client.made, 2, 10.0);

  tu_conn *first = tu_factory_conn(&fx.client, 0), *second = tu_factory_conn(&fx.client, 1);
  ck_assert_int_eq(first->made, 1);
  ck_assert_int_eq(first->lost, 1);
  ck_assert_int_eq(first->lost_reason.code, WEFT_OK);
  ck_assert_ptr_eq(first->base.ops, &tu_conn_ops); /* the user's table is back */
  ck_assert_int_eq(second->made, 1);
  ck_assert_int_eq(second->lost, 0);
  ck_assert_int_eq(fx.client.failed, 0);
  ck_assert_int_eq(fx.nretry, 1);
  ck_assert_int_eq(fx.retry_codes[0], WEFT_OK);
  ck_assert_double_eq_tol(fx.waits[0], fx.ro.initial_delay, 1e-12);
  ck_assert_int_eq(weft_reconnector_retries(fx.rc), 0);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_CONNECTED);
  ck_assert_ptr_eq(weft_reconnector_transport(fx.rc), second->transport);
  ck_assert_int_eq(fx.protocol_in_made_ok, 1);

  /* The second connection stays: nothing more happens. */
  tu_settle(fx.r, 0.1);
  ck_assert_int_eq(fx.client.made, 2);
  ck_assert_int_eq(fx.server.made, 2);
  fixture_free(&fx);
}
END_TEST

START_TEST(test_refused_by_factory) {
  /* build_protocol returning NULL counts as a failed attempt, without connection_failed. */
  fixture fx;
  fixture_init(&fx);
  fixture_listen(&fx);
  fx.client.refuse = 1;
  fx.ro.max_retries = 2;
  fixture_start(&fx, NULL, NULL);
  tu_run_until(fx.r, gave_up, &fx, 10.0);
  ck_assert_int_eq(fx.client.refused, 3);
  ck_assert_int_eq(fx.client.failed, 0);
  ck_assert_int_eq(fx.nretry, 2);
  ck_assert_int_eq(fx.retry_codes[0], WEFT_EREFUSED);
  ck_assert_int_eq(fx.give_up_reason.code, WEFT_EREFUSED);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_STOPPED);
  tu_settle(fx.r, 0.1);
  ck_assert_int_eq(fx.client.refused, 3);
  fixture_free(&fx);
}
END_TEST

/* A protocol that switches to another table mid-connection keeps being forwarded to. */
static weft_protocol_ops switched_ops;
static int switched_lost;

static void switched_connection_lost(weft_protocol *p, weft_transport *t,
                                     const weft_reason *reason) {
  switched_lost++;
  tu_conn_ops.connection_lost(p, t, reason);
}

static void switch_ops_on_made(tu_conn *c, weft_transport *t) {
  client_made(c, t);
  if (c->index == 0) {
    c->user = c; /* tells client_lost that this table is expected */
    c->base.ops = &switched_ops;
  }
}

START_TEST(test_protocol_switches_ops) {
  switched_ops = tu_conn_ops;
  switched_ops.connection_lost = switched_connection_lost;
  switched_lost = 0;
  fixture fx;
  fixture_init(&fx);
  fixture_listen(&fx);
  fx.server.conn_config.on_made = server_close_first;
  fx.client.conn_config.on_made = switch_ops_on_made;
  fixture_start(&fx, NULL, NULL);
  tu_wait_int(fx.r, &fx.client.made, 2, 10.0);
  tu_conn *first = tu_factory_conn(&fx.client, 0);
  ck_assert_int_eq(switched_lost, 1);
  ck_assert_int_eq(first->lost, 1);
  ck_assert_ptr_eq(first->base.ops, &switched_ops);
  ck_assert_int_eq(fx.nretry, 1);
  fixture_free(&fx);
}
END_TEST

/* --- Stopping and freeing ------------------------------------------------------------ */

START_TEST(test_stop_while_waiting) {
  fixture fx;
  fixture_init(&fx);
  fx.port = tu_free_port();
  fx.ro.initial_delay = 0.05;
  fixture_start(&fx, NULL, NULL);
  tu_wait_int(fx.r, &fx.client.failed, 1, 10.0);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_WAITING);
  ck_assert_int_eq(weft_reconnector_stop(fx.rc), 0);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_STOPPED);
  ck_assert_int_eq(weft_reconnector_stop(fx.rc), 0); /* again: nothing */
  tu_settle(fx.r, 0.3);
  ck_assert_int_eq(fx.client.failed, 1);
  ck_assert_int_eq(fx.nretry, 1);
  ck_assert_int_eq(fx.give_ups, 0);
  fixture_free(&fx);
}
END_TEST

START_TEST(test_free_while_waiting) {
  fixture fx;
  fixture_init(&fx);
  fx.port = tu_free_port();
  fx.ro.initial_delay = 0.05;
  fixture_start(&fx, NULL, NULL);
  tu_wait_int(fx.r, &fx.client.failed, 1, 10.0);
  free_rc(&fx); /* cancels the pending wait */
  tu_settle(fx.r, 0.2);
  ck_assert_int_eq(fx.client.failed, 1);
  fixture_free(&fx);
}
END_TEST

START_TEST(test_stop_while_connecting) {
  fixture fx;
  fixture_init(&fx);
  fixture_listen(&fx);
  fixture_start(&fx, NULL, NULL);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_CONNECTING);
  weft_reconnector_stop(fx.rc);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_STOPPED);
  tu_settle(fx.r, 0.2);
  /* The attempt was cancelled quietly: no connection_failed, no connection. */
  ck_assert_int_eq(fx.client.failed, 0);
  ck_assert_int_eq(fx.client.built, 0);
  ck_assert_int_eq(fx.nretry, 0);
  free_rc(&fx);

  /* Same with free. */
  fixture_start(&fx, NULL, NULL);
  free_rc(&fx);
  tu_settle(fx.r, 0.2);
  ck_assert_int_eq(fx.client.failed, 0);
  ck_assert_int_eq(fx.client.built, 0);
  fixture_free(&fx);
}
END_TEST

START_TEST(test_stop_while_connected) {
  fixture fx;
  fixture_init(&fx);
  fixture_listen(&fx);
  fixture_start(&fx, NULL, NULL);
  tu_wait_int(fx.r, &fx.client.made, 1, 10.0);
  tu_conn *s = tu_wait_conn(fx.r, &fx.server, 0, 10.0);
  tu_wait_int(fx.r, &s->made, 1, 10.0);
  weft_reconnector_stop(fx.rc);
  /* The connection is left alone. */
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_CONNECTED);
  tu_conn *c = tu_factory_conn(&fx.client, 0);
  ck_assert_ptr_eq(weft_reconnector_transport(fx.rc), c->transport);
  tu_conn_write_str(c, "still here");
  tu_wait_size(fx.r, &s->rx_total, 10, 10.0);

  weft_transport_lose_connection(s->transport);
  tu_wait_int(fx.r, &c->lost, 1, 10.0);
  tu_settle(fx.r, 0.2);
  ck_assert_int_eq(fx.client.made, 1);
  ck_assert_int_eq(fx.server.made, 1);
  ck_assert_int_eq(fx.nretry, 0);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_STOPPED);
  ck_assert_ptr_null(weft_reconnector_transport(fx.rc));
  fixture_free(&fx);
}
END_TEST

START_TEST(test_free_while_connected) {
  fixture fx;
  fixture_init(&fx);
  fixture_listen(&fx);
  fx.server.conn_config.echo = 1;
  fixture_start(&fx, NULL, NULL);
  tu_wait_int(fx.r, &fx.client.made, 1, 10.0);
  tu_conn *c = tu_factory_conn(&fx.client, 0);
  free_rc(&fx);
  /* The connection lives on with its protocol. */
  tu_conn_write_str(c, "echo");
  tu_wait_size(fx.r, &c->rx_total, 4, 10.0);
  tu_conn *s = tu_wait_conn(fx.r, &fx.server, 0, 10.0);
  weft_transport_lose_connection(s->transport);
  tu_wait_int(fx.r, &c->lost, 1, 10.0);
  ck_assert_ptr_eq(c->base.ops, &tu_conn_ops);
  tu_settle(fx.r, 0.2);
  ck_assert_int_eq(fx.client.made, 1);
  ck_assert_int_eq(fx.server.made, 1);
  ck_assert_int_eq(fx.nretry, 0);
  fixture_free(&fx);
}
END_TEST

static int rc_gone(void *arg) {
  return ((fixture *)arg)->rc == NULL;
}

START_TEST(test_free_inside_callbacks) {
  /* Every callback may free the reconnector; valgrind checks that nothing touches it after. */
  static const struct {
    free_point at;
    int max_retries, failures, retries_announced;
  } cases[] = {
      {FREE_IN_FAILED, 0, 1, 0}, /* the retry planned before connection_failed is cancelled */
      {FREE_IN_RETRY, 0, 1, 1},
      {FREE_IN_GIVE_UP, 1, 2, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fixture fx;
    fixture_init(&fx);
    fx.port = tu_free_port();
    fx.free_at = cases[i].at;
    fx.ro.max_retries = cases[i].max_retries;
    fixture_start(&fx, NULL, NULL);
    tu_run_until(fx.r, rc_gone, &fx, 10.0);
    tu_settle(fx.r, 0.1);
    ck_assert_int_eq(fx.client.failed, cases[i].failures);
    ck_assert_int_eq(fx.nretry, cases[i].retries_announced);
    ck_assert_int_eq(fx.give_ups, cases[i].at == FREE_IN_GIVE_UP);
    fixture_free(&fx);
  }

  static const free_point conn_points[] = {FREE_IN_LOST, FREE_IN_MADE};
  for (size_t i = 0; i < sizeof conn_points / sizeof conn_points[0]; i++) {
    fixture fx;
    fixture_init(&fx);
    fixture_listen(&fx);
    fx.server.conn_config.on_made = server_close_first;
    fx.free_at = conn_points[i];
    fixture_start(&fx, NULL, NULL);
    tu_wait_int(fx.r, &fx.client.lost, 1, 10.0);
    ck_assert_ptr_null(fx.rc);
    tu_settle(fx.r, 0.2);
    ck_assert_int_eq(fx.client.made, 1); /* no reconnection */
    ck_assert_int_eq(fx.server.made, 1);
    ck_assert_int_eq(fx.nretry, 0);
    ck_assert_ptr_eq(tu_factory_conn(&fx.client, 0)->base.ops, &tu_conn_ops);
    fixture_free(&fx);
  }
}
END_TEST

START_TEST(test_stop_inside_connection_failed) {
  fixture fx;
  fixture_init(&fx);
  fx.port = tu_free_port();
  fx.free_at = STOP_IN_FAILED;
  fixture_start(&fx, NULL, NULL);
  tu_wait_int(fx.r, &fx.client.failed, 1, 10.0);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_STOPPED);
  tu_settle(fx.r, 0.1);
  ck_assert_int_eq(fx.client.failed, 1);
  ck_assert_int_eq(fx.nretry, 0); /* the retry was cancelled before it was announced */
  ck_assert_int_eq(fx.give_ups, 0);
  fixture_free(&fx);
}
END_TEST

/* --- The reactor freed first --------------------------------------------------------- */

START_TEST(test_reactor_freed_first) {
  /* Connected: the protocol hears of the shutdown, the reconnector stops, freeing it later is
   * safe. */
  fixture fx;
  fixture_init(&fx);
  fixture_listen(&fx);
  fixture_start(&fx, NULL, NULL);
  tu_wait_int(fx.r, &fx.client.made, 1, 10.0);
  weft_reactor_free(fx.r);
  tu_conn *c = tu_factory_conn(&fx.client, 0);
  ck_assert_int_eq(c->lost, 1);
  ck_assert_int_eq(c->lost_reason.code, WEFT_ESHUTDOWN);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_STOPPED);
  ck_assert_int_eq(fx.nretry, 0);
  ck_assert_int_eq(fx.give_ups, 0);
  free_rc(&fx);
  tu_factory_check(&fx.client);
  tu_factory_cleanup(&fx.client);
  tu_factory_cleanup(&fx.server);

  /* Connecting: the factory gets connection_failed (ESHUTDOWN), once. */
  fixture_init(&fx);
  fixture_listen(&fx);
  fixture_start(&fx, NULL, NULL);
  weft_reactor_free(fx.r);
  ck_assert_int_eq(fx.client.failed, 1);
  ck_assert_int_eq(fx.client.last_failed.code, WEFT_ESHUTDOWN);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_STOPPED);
  ck_assert_int_eq(fx.nretry, 0);
  free_rc(&fx);
  tu_factory_check(&fx.client);
  tu_factory_cleanup(&fx.client);
  tu_factory_cleanup(&fx.server);

  /* Waiting between attempts: the reactor drops the wait, the reconnector stops itself, and
   * freeing it afterwards is safe (valgrind/ASan check the memory side). */
  fixture_init(&fx);
  fx.port = tu_free_port();
  fx.ro.initial_delay = 30; /* the wait is still pending when the reactor goes */
  fx.ro.max_delay = 60;
  fixture_start(&fx, NULL, NULL);
  tu_wait_int(fx.r, &fx.client.failed, 1, 10.0);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_WAITING);
  weft_reactor_free(fx.r);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_STOPPED);
  ck_assert_int_eq(fx.client.failed, 1);
  ck_assert_int_eq(fx.give_ups, 0);
  free_rc(&fx);
  tu_factory_check(&fx.client);
  tu_factory_cleanup(&fx.client);
  tu_factory_cleanup(&fx.server);
}
END_TEST

/* --- TLS ----------------------------------------------------------------------------- */

START_TEST(test_tls_reconnect) {
  tu_pki pki;
  tu_pki_init(&pki);
  weft_cert_options *server_opts = tu_server_options(&pki);
  weft_cert_options *client_opts = tu_client_options(&pki);
  fixture fx;
  fixture_init(&fx);
  fx.listener = tu_listen_ssl_local(fx.r, &fx.server, server_opts, &fx.port);
  fx.server.conn_config.on_made = server_close_first;
  fixture_start(&fx, client_opts, "localhost");
  weft_cert_options_unref(client_opts); /* the reconnector holds its own reference */
  tu_wait_int(fx.r, &fx.client.made, 2, 20.0);
  tu_conn *first = tu_factory_conn(&fx.client, 0);
  ck_assert_int_eq(fx.made_tls[0], 1);
  ck_assert_int_eq(fx.made_tls[1], 1);
  ck_assert_int_eq(first->lost, 1);
  ck_assert_int_eq(first->lost_reason.code, WEFT_OK); /* close_notify */
  ck_assert_int_eq(fx.client.failed, 0);
  ck_assert_int_eq(fx.nretry, 1);
  ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_CONNECTED);
  fixture_free(&fx);
  weft_cert_options_unref(server_opts);
  tu_pki_free(&pki);
}
END_TEST

START_TEST(test_tls_verify_failure_retries) {
  /* A server the client does not trust: every attempt fails in the handshake, each with
   * connection_failed, until the give-up. */
  tu_pki pki;
  tu_pki_init(&pki);
  EVP_PKEY *key = tu_make_key();
  X509 *cert = tu_make_cert(key, pki.other_ca_key, pki.other_ca_cert, "server", "localhost",
                            "127.0.0.1", 0, 0);
  weft_cert_options *server_opts = tu_options_with_identity(key, cert);
  weft_cert_options *client_opts = tu_client_options(&pki);
  fixture fx;
  fixture_init(&fx);
  fx.listener = tu_listen_ssl_local(fx.r, &fx.server, server_opts, &fx.port);
  fx.ro.max_retries = 2;
  fixture_start(&fx, client_opts, "localhost");
  tu_run_until(fx.r, gave_up, &fx, 20.0);
  ck_assert_int_eq(fx.client.failed, 3);
  ck_assert_int_eq(fx.client.last_failed.code, WEFT_ECERTVERIFY);
  ck_assert_int_eq(fx.give_up_reason.code, WEFT_ECERTVERIFY);
  ck_assert_int_eq(fx.client.built, 0);
  fixture_free(&fx);
  weft_cert_options_unref(client_opts);
  weft_cert_options_unref(server_opts);
  X509_free(cert);
  EVP_PKEY_free(key);
  tu_pki_free(&pki);
}
END_TEST

static int server_got_bytes(void *arg) {
  fixture *fx = arg;
  tu_conn *s = tu_factory_conn(&fx->server, 0);
  return s && s->rx_total > 0;
}

START_TEST(test_tls_stop_during_handshake) {
  /* A plain TCP server that never answers the ClientHello keeps the client in its handshake.
   * Stopping then (and, second round, freeing the reactor) cancels the attempt: quietly for
   * stop, with connection_failed (ESHUTDOWN) for the reactor. */
  tu_pki pki;
  tu_pki_init(&pki);
  weft_cert_options *client_opts = tu_client_options(&pki);
  for (int round = 0; round < 2; round++) {
    fixture fx;
    fixture_init(&fx);
    fixture_listen(&fx);
    fixture_start(&fx, client_opts, "localhost");
    tu_run_until(fx.r, server_got_bytes, &fx, 10.0); /* the ClientHello arrived */
    ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_CONNECTING);
    if (round == 0) {
      weft_reconnector_stop(fx.rc);
      ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_STOPPED);
      tu_settle(fx.r, 0.2);
      ck_assert_int_eq(fx.client.failed, 0);
      ck_assert_int_eq(fx.client.built, 0);
      fixture_free(&fx);
    } else {
      weft_reactor_free(fx.r);
      ck_assert_int_eq(fx.client.failed, 1);
      ck_assert_int_eq(fx.client.last_failed.code, WEFT_ESHUTDOWN);
      ck_assert_int_eq(weft_reconnector_state(fx.rc), WEFT_RECONNECT_STOPPED);
      free_rc(&fx);
      tu_factory_check(&fx.client);
      tu_factory_cleanup(&fx.client);
      tu_factory_cleanup(&fx.server);
    }
  }
  weft_cert_options_unref(client_opts);
  tu_pki_free(&pki);
}
END_TEST

static Suite *reconnect_suite(void) {
  Suite *s = suite_create("reconnect");
  TCase *tc = tcase_create("arguments");
  tcase_add_test(tc, test_options_defaults);
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_tls_options_error);
  tcase_set_timeout(tc, 30);
  suite_add_tcase(s, tc);

  tc = tcase_create("backoff");
  tcase_add_test(tc, test_backoff_refused_gives_up);
  tcase_add_test(tc, test_jitter_seeded);
  tcase_add_test(tc, test_refused_by_factory);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("reconnect");
  tcase_add_test(tc, test_listener_appears_later);
  tcase_add_test(tc, test_reconnect_after_loss);
  tcase_add_test(tc, test_protocol_switches_ops);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("lifecycle");
  tcase_add_test(tc, test_stop_while_waiting);
  tcase_add_test(tc, test_free_while_waiting);
  tcase_add_test(tc, test_stop_while_connecting);
  tcase_add_test(tc, test_stop_while_connected);
  tcase_add_test(tc, test_free_while_connected);
  tcase_add_test(tc, test_free_inside_callbacks);
  tcase_add_test(tc, test_stop_inside_connection_failed);
  tcase_add_test(tc, test_reactor_freed_first);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("tls");
  tcase_add_test(tc, test_tls_reconnect);
  tcase_add_test(tc, test_tls_verify_failure_retries);
  tcase_add_test(tc, test_tls_stop_during_handshake);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(reconnect_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
