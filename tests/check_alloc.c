/* tests/check_alloc.c: allocation failure, through the allocator hook (weft/alloc.h).
 *
 * Each test first runs a whole connection life once with an allocator that counts weft's
 * allocations and fails none: a reactor, options, a listener, a connector, a connection that
 * echoes a few bytes, a clean close from the client, the listener stopped, everything freed.
 * That run makes M allocations. Then it walks N from 1 to M + 2: a fresh run in which the Nth
 * allocation fails. After every run:
 *  - nothing crashed and nothing hung (every wait has a deadline, and the run must end);
 *  - nothing leaked: weft_allocations_outstanding() is 0 and the open descriptors are those
 *    of before the run (the sanitizer build and valgrind check libevent's and OpenSSL's memory);
 *  - the failure was reported: some call returned WEFT_ENOMEM, or some callback got a reason
 *    whose code is WEFT_ENOMEM (connection_failed, handshake_failed, connection_lost);
 *  - the lifecycle held: connection_lost exactly once for every connection_made;
 *  - when N is past the last allocation, the run succeeded end to end.
 *
 * Debugging knobs (environment): WEFT_ALLOC_DEBUG=1 prints each run's result and a backtrace
 * of the failed allocation; WEFT_ALLOC_FROM=N starts the walk at N.
 *
 * WEFT_ALLOC_LIBEVENT=1 also fails libevent's own allocations (event_set_mem_functions). It is
 * not part of the suite because libevent 2.1.12 itself ignores some failures, and the walk
 * then hangs where weft cannot see the failure: evconnlistener_new ignores the result of
 * evconnlistener_enable (a listener that never accepts), and bufferevent_socket_new ignores
 * the result of evbuffer_add_cb (a connection whose output is never flushed); and a failure
 * inside bufferevent_openssl_socket_new after its bufferevent is allocated crashes in its own
 * clean-up (bufferevent_free on a half-built bufferevent). Failures that
 * libevent does report (event_base_new, event_new, bufferevent_*_new returning NULL) reach
 * the caller as WEFT_ENOMEM. OpenSSL's allocations are not failed here.
 */
#include "config.h"

#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <event2/event.h>
#include <weft/weft.h>

#include "testutil.h"
#include "tlsutil.h"

/* --- the failing allocator ------------------------------------------------------------ */

static struct {
  long count;   /* allocations asked for (malloc, calloc, realloc) */
  long fail_at; /* the one that fails (1-based); 0: none */
  long failed;  /* how many were failed */
} A;

static int should_fail(void) {
  if (++A.count == A.fail_at) {
    A.failed++;
    if (getenv("WEFT_ALLOC_DEBUG")) {
      void *frames[16];
      backtrace_symbols_fd(frames, backtrace(frames, 16), 2);
    }
    return 1;
  }
  return 0;
}

static void *t_malloc(size_t size, void *u) {
  (void)u;
  return should_fail() ? NULL : malloc(size);
}
static void t_free(void *ptr, void *u) {
  (void)u;
  free(ptr);
}
static void *t_calloc(size_t count, size_t size, void *u) {
  (void)u;
  return should_fail() ? NULL : calloc(count, size);
}
static void *t_realloc(void *ptr, size_t size, void *u) {
  (void)u;
  return should_fail() ? NULL : realloc(ptr, size);
}

static const weft_allocator failing = {0, t_malloc, t_free, t_calloc, t_realloc, NULL};

/* libevent's allocations, failed the same way while A.libevent is set (experimental). */
static int libevent_armed;
static void *ev_malloc(size_t size) { return libevent_armed && should_fail() ? NULL : malloc(size); }
static void *ev_realloc(void *ptr, size_t size) {
  return libevent_armed && should_fail() ? NULL : realloc(ptr, size);
}
static void ev_free(void *ptr) { free(ptr); }

/* --- one connection's life ------------------------------------------------------------ */

typedef struct side {
  weft_protocol base;
  int made, lost, lost_code, received_echo;
  size_t got;
} side;

typedef struct run {
  int tls;
  int enomem;       /* a WEFT_ENOMEM was returned or reported */
  int client_done;  /* the client's connection ended, or its attempt failed */
  int server_done;  /* the server's connection ended, or its set-up/handshake failed */
  int client_failed, server_handshake_failed;
  side client, server;
  int server_built; /* build_protocol calls on the server */
  int client_built;
} run;

static run R;
static const char ping[] = "ping";

static void note(int rc) {
  if (rc == WEFT_ENOMEM)
    R.enomem = 1;
}

static void c_made(weft_protocol *p, weft_transport *t) {
  side *s = (side *)p;
  s->made++;
  note(weft_transport_write(t, ping, sizeof ping - 1));
}

static void c_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  side *s = (side *)p;
  (void)data;
  s->got += len;
  if (s->got >= sizeof ping - 1 && !s->received_echo) {
    s->received_echo = 1;
    note(weft_transport_lose_connection(t));
  }
}

static void c_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  side *s = (side *)p;
  (void)t;
  s->lost++;
  s->lost_code = reason->code;
  note(reason->code);
  R.client_done = 1;
}

static void s_made(weft_protocol *p, weft_transport *t) {
  (void)t;
  ((side *)p)->made++;
}

static void s_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  ((side *)p)->got += len;
  note(weft_transport_write(t, data, len)); /* echo */
}

static void s_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  side *s = (side *)p;
  (void)t;
  s->lost++;
  s->lost_code = reason->code;
  note(reason->code);
  R.server_done = 1;
}

static const weft_protocol_ops client_ops = {.connection_made = c_made,
                                             .data_received = c_data,
                                             .connection_lost = c_lost};
static const weft_protocol_ops server_ops = {.connection_made = s_made,
                                             .data_received = s_data,
                                             .connection_lost = s_lost};

static weft_protocol *c_build(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)f;
  (void)t;
  (void)peer;
  R.client_built++;
  R.client.base.ops = &client_ops;
  return &R.client.base;
}

static void c_failed(weft_factory *f, const weft_reason *reason) {
  (void)f;
  R.client_failed++;
  note(reason->code);
  R.client_done = 1;
}

static weft_protocol *s_build(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)f;
  (void)t;
  (void)peer;
  if (R.server_built++ > 0)
    return NULL; /* one connection per run */
  R.server.base.ops = &server_ops;
  return &R.server.base;
}

static void s_handshake_failed(weft_factory *f, const struct sockaddr *peer,
                               const weft_reason *reason) {
  (void)f;
  (void)peer;
  R.server_handshake_failed++;
  note(reason->code);
  R.server_done = 1;
}

static weft_factory client_factory = {.build_protocol = c_build, .connection_failed = c_failed};
static weft_factory server_factory = {.build_protocol = s_build,
                                      .handshake_failed = s_handshake_failed};

static int client_finished(void *arg) {
  (void)arg;
  return R.client_done;
}

static int both_finished(void *arg) {
  (void)arg;
  return R.client_done && R.server_done;
}

static tu_pki pki;

/* One life, with weft's allocations going through the failing allocator. Returns 0 when the
 * run ended by itself, -1 when a wait hit its deadline (a hang). */
static int one_life(int tls) {
  weft_reactor *reactor = NULL;
  weft_cert_options *sopts = NULL, *copts = NULL;
  weft_listener *listener = NULL;
  weft_connector *connector = NULL;
  int hung = 0, rc;
  static const char *const protos[] = {"h2", "http/1.1"};

  memset(&R, 0, sizeof R);
  R.tls = tls;
  if ((rc = weft_reactor_new(&reactor)) != 0)
    goto out;
  if (tls) {
    if ((rc = weft_cert_options_new(&sopts)) != 0 ||
        (rc = weft_cert_options_set_private_key(sopts, pki.server_key)) != 0 ||
        (rc = weft_cert_options_set_certificate(sopts, pki.server_cert)) != 0 ||
        (rc = weft_cert_options_new(&copts)) != 0 ||
        (rc = weft_cert_options_add_ca_certificate(copts, pki.ca_cert)) != 0)
      goto out;
    if (weft_protocol_negotiation_mechanisms() != 0 &&
        ((rc = weft_cert_options_set_next_protocols(sopts, protos, 2)) != 0 ||
         (rc = weft_cert_options_set_next_protocols(copts, protos, 2)) != 0))
      goto out;
    rc = weft_listen_ssl(reactor, "127.0.0.1", 0, &server_factory, sopts, &listener);
  } else {
    rc = weft_listen_tcp(reactor, "127.0.0.1", 0, &server_factory, &listener);
  }
  if (rc != 0)
    goto out;
  int port = weft_listener_port(listener);
  if (tls)
    rc = tu_connect(reactor, "127.0.0.1", port, &client_factory, copts, "localhost", 10, NULL,
                    &connector);
  else
    rc = weft_connect_tcp(reactor, "127.0.0.1", port, &client_factory, &connector);
  if (rc != 0)
    goto out;
  rc = weft_reactor_run_until(reactor, client_finished, NULL, 10);
  if (rc == WEFT_ETIMEDOUT) {
    hung = 1;
  } else if (rc == 0 && !R.server_done) {
    /* The server hears of the connection only if the client got as far as connecting; give
     * it a bounded moment, then weft_reactor_free ends whatever is left. */
    rc = weft_reactor_run_until(reactor, both_finished, NULL, 1.0);
    if (rc == WEFT_ETIMEDOUT)
      rc = 0;
  }
out:
  note(rc);
  if (getenv("WEFT_ALLOC_DEBUG")) fprintf(stderr, "fail_at %ld: rc %s\n", A.fail_at, weft_err_name(rc));
  if (listener)
    weft_listener_stop(listener);
  if (reactor)
    weft_reactor_free(reactor); /* delivers connection_lost to any live connection */
  weft_cert_options_unref(sopts);
  weft_cert_options_unref(copts);
  return hung ? -1 : 0;
}

/* Walks N over every allocation of one life. */
static void walk(int tls) {
  if (getenv("WEFT_ALLOC_LIBEVENT")) {
    event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
    libevent_armed = 1;
  }
  tu_pki_init(&pki);
  int fds = tu_count_fds();
  ck_assert_int_eq(weft_set_allocator(&failing), 0);

  /* The reference run: nothing fails, everything works. */
  A.count = 0;
  A.fail_at = 0;
  ck_assert_int_eq(one_life(tls), 0);
  long total = A.count;
  ck_assert_msg(R.client.received_echo && R.client.lost == 1 && R.client.lost_code == WEFT_OK,
                "reference run: echo %d, client lost %d (code %d)", R.client.received_echo,
                R.client.lost, R.client.lost_code);
  ck_assert_msg(R.server.made == 1 && R.server.lost == 1 && R.server.lost_code == WEFT_OK,
                "reference run: server made %d lost %d (code %d)", R.server.made, R.server.lost,
                R.server.lost_code);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);
  ck_assert_int_eq(tu_count_fds(), fds);
  ck_assert_msg(total >= 4, "only %ld allocations in a connection's life?", total);

  long reported = 0, absorbed = 0;
  long from = getenv("WEFT_ALLOC_FROM") ? atol(getenv("WEFT_ALLOC_FROM")) : 1;
  for (long n = from; n <= total + 2; n++) {
    A.count = 0;
    A.failed = 0;
    A.fail_at = n;
    int hung = one_life(tls);
    ck_assert_msg(!hung, "allocation %ld of %ld failed: the run hung (client done %d, server "
                  "done %d)", n, total, R.client_done, R.server_done);
    ck_assert_msg(weft_allocations_outstanding() == 0,
                  "allocation %ld of %ld failed: %ld blocks leaked", n, total,
                  weft_allocations_outstanding());
    ck_assert_msg(tu_count_fds() == fds, "allocation %ld of %ld failed: %d descriptors open, "
                  "%d before", n, total, tu_count_fds(), fds);
    ck_assert_msg(R.client.lost == R.client.made && R.server.lost == R.server.made,
                  "allocation %ld: made/lost client %d/%d server %d/%d", n, R.client.made,
                  R.client.lost, R.server.made, R.server.lost);
    ck_assert_msg(R.client_failed + R.client.made <= 1, "allocation %ld: the client both failed "
                  "and was made, or twice", n);
    int succeeded = R.client.received_echo && R.client.lost_code == WEFT_OK &&
                    R.server.lost == 1 && R.server.lost_code == WEFT_OK;
    if (A.failed && libevent_armed && succeeded) {
      absorbed++; /* libevent coped (e.g. another backend, a retry): nothing to report */
    } else if (A.failed) {
      ck_assert_msg(R.enomem, "allocation %ld of %ld failed and nobody reported WEFT_ENOMEM "
                    "(client failed %d, lost code %d; server handshake failed %d, lost code %d)",
                    n, total, R.client_failed, R.client.lost_code, R.server_handshake_failed,
                    R.server.lost_code);
      reported++;
    } else {
      ck_assert_msg(R.client.received_echo && R.client.lost_code == WEFT_OK,
                    "allocation %ld is past the last one (%ld) but the run did not succeed", n,
                    total);
    }
  }
  /* Every allocation of the reference run was failed once (the count may differ by a few
   * between runs, as client and server interleave differently). */
  ck_assert_msg(reported + absorbed >= total - 2, "only %ld of %ld allocations were failed",
                reported + absorbed, total);
  fprintf(stderr, "check_alloc: %s%s: %ld allocations per connection life, each failed once: "
          "%ld reported as WEFT_ENOMEM, %ld absorbed\n", tls ? "TLS" : "TCP",
          libevent_armed ? " (weft and libevent)" : " (weft)", total, reported, absorbed);
  ck_assert_int_eq(weft_set_allocator(NULL), 0);
  tu_pki_free(&pki);
}

START_TEST(test_walk_tcp) { walk(0); }
END_TEST

START_TEST(test_walk_tls) { walk(1); }
END_TEST

/* The hook's own contract: bad allocators, and no switch while weft memory is outstanding. */
START_TEST(test_set_allocator_errors) {
  weft_allocator bad = failing;
  bad.calloc = NULL;
  ck_assert_int_eq(weft_set_allocator(&bad), WEFT_EINVAL);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);

  weft_reactor *reactor = NULL;
  ck_assert_int_eq(weft_reactor_new(&reactor), 0);
  ck_assert_int_gt(weft_allocations_outstanding(), 0);
  ck_assert_int_eq(weft_set_allocator(&failing), WEFT_EBUSY);
  ck_assert_int_eq(weft_set_allocator(NULL), WEFT_EBUSY);
  weft_reactor_free(reactor);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);

  /* Once nothing is outstanding, the hook takes over: weft's next allocation goes through it. */
  A.count = 0;
  A.fail_at = 0;
  ck_assert_int_eq(weft_set_allocator(&failing), 0);
  ck_assert_int_eq(weft_reactor_new(&reactor), 0);
  ck_assert_int_gt(A.count, 0);
  weft_reactor_free(reactor);
  A.count = 0;
  A.fail_at = 1;
  reactor = NULL;
  ck_assert_int_eq(weft_reactor_new(&reactor), WEFT_ENOMEM);
  ck_assert_ptr_null(reactor);
  ck_assert_int_eq(weft_set_allocator(NULL), 0);
  A.count = 0;
  ck_assert_int_eq(weft_reactor_new(&reactor), 0);
  ck_assert_int_eq(A.count, 0); /* the C library's allocator again */
  weft_reactor_free(reactor);
}
END_TEST

static Suite *alloc_suite(void) {
  Suite *s = suite_create("alloc");
  TCase *tc = tcase_create("hook");
  tcase_add_test(tc, test_set_allocator_errors);
  suite_add_tcase(s, tc);
  tc = tcase_create("walk");
  tcase_add_test(tc, test_walk_tcp);
  tcase_add_test(tc, test_walk_tls);
  tcase_set_timeout(tc, 240);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(alloc_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
