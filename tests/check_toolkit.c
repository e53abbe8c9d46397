/* check_toolkit.c: the protocol writer's toolkit without sockets: the test clock, the testing
 * transport (a protocol fed and read by the test), the connected pair (TCP and TLS with ALPN
 * over a socketpair), idle time-outs under the test clock (per transport and as a listener's
 * default), producers (file by sendfile on TCP, by reference on TLS; a generator with paused
 * reading), the log callback, and the framing writers. */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include <weft/weft.h>

#include "testutil.h"
#include "tlsutil.h"

/* --- the test clock ----------------------------------------------------------------------- */

static char order[32];
static void mark(void *arg) {
  size_t n = strlen(order);
  order[n] = *(const char *)arg;
  order[n + 1] = 0;
}

START_TEST(test_clock_orders_calls) {
  weft_reactor *r;
  ck_assert_int_eq(weft_testing_reactor_new(&r), 0);
  order[0] = 0;
  weft_delayed_call *c = NULL, *d = NULL;
  ck_assert_int_eq(weft_reactor_call_later(r, 5, mark, "b", NULL), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 1, mark, "a", NULL), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 5, mark, "c", &c), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 2, mark, "x", &d), 0);
  ck_assert_int_eq(weft_delayed_call_cancel(d), 0);
  ck_assert_int_eq(weft_reactor_call_later(r, 3600, mark, "z", NULL), 0);
  /* However long the machine takes, nothing runs before the clock moves. */
  ck_assert_int_eq(weft_testing_pump(r), 0);
  ck_assert_str_eq(order, "");
  ck_assert_int_eq(weft_testing_clock_advance(r, 0.999), 0);
  ck_assert_str_eq(order, "");
  ck_assert_int_eq(weft_testing_clock_advance(r, 0.001), 1);
  ck_assert_str_eq(order, "a");
  ck_assert_int_eq(weft_delayed_call_reset(c, 10), 0); /* now 1 + 10 */
  ck_assert_int_eq(weft_testing_clock_advance(r, 9), 1);
  ck_assert_str_eq(order, "ab");
  ck_assert(weft_testing_clock_now(r) == 10);
  ck_assert_int_eq(weft_testing_clock_advance(r, 1), 1);
  ck_assert_str_eq(order, "abc");
  ck_assert_int_eq(weft_testing_clock_advance(NULL, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_testing_clock_advance(r, -1), WEFT_EINVAL);
  weft_reactor_free(r); /* "z" never ran */
  ck_assert_str_eq(order, "abc");
  weft_reactor *real = tu_reactor_new();
  ck_assert_int_eq(weft_testing_clock_advance(real, 1), WEFT_EINVAL);
  ck_assert(weft_testing_clock_now(real) == -1);
  weft_reactor_free(real);
}
END_TEST

/* --- the testing transport: a line protocol tested with no socket -------------------------- */

/* The protocol under test: answers each line "PING" with "PONG\r\n", closes on "QUIT". */
typedef struct pinger {
  weft_protocol base;
  weft_transport *t;
  weft_framer *lines;
  int lost;
  int lost_code;
  char lost_msg[128];
  int too_long;
} pinger;

static int pinger_line(void *arg, const uint8_t *line, size_t len) {
  pinger *p = arg;
  if (len == 4 && memcmp(line, "PING", 4) == 0)
    weft_transport_write(p->t, "PONG\r\n", 6);
  else if (len == 4 && memcmp(line, "QUIT", 4) == 0)
    return weft_transport_lose_connection(p->t), 1;
  return 0;
}
static void pinger_made(weft_protocol *proto, weft_transport *t) {
  pinger *p = (pinger *)proto;
  p->t = t;
  ck_assert_int_eq(weft_framer_new_lines("\r\n", 2, 64, pinger_line, p, &p->lines), 0);
}
static void pinger_data(weft_protocol *proto, weft_transport *t, const uint8_t *d, size_t n) {
  pinger *p = (pinger *)proto;
  int rc = weft_framer_feed(p->lines, d, n);
  if (rc == WEFT_ETOOLONG) {
    p->too_long = 1;
    weft_transport_abort_connection(t);
  }
}
static void pinger_lost(weft_protocol *proto, weft_transport *t, const weft_reason *reason) {
  pinger *p = (pinger *)proto;
  (void)t;
  p->lost++;
  p->lost_code = reason->code;
  snprintf(p->lost_msg, sizeof p->lost_msg, "%s", reason->message);
  weft_framer_free(p->lines);
  p->lines = NULL;
}
static const weft_protocol_ops pinger_ops = {
    .connection_made = pinger_made, .data_received = pinger_data, .connection_lost = pinger_lost};

typedef struct pinger_factory {
  weft_factory base;
  pinger p; /* one connection per test */
  double idle;
} pinger_factory;

static weft_protocol *pinger_build(weft_factory *f, weft_transport *t,
                                   const struct sockaddr *peer) {
  pinger_factory *pf = (pinger_factory *)f;
  (void)peer;
  memset(&pf->p, 0, sizeof pf->p);
  pf->p.base.ops = &pinger_ops;
  if (pf->idle > 0)
    ck_assert_int_eq(weft_transport_set_idle_timeout(t, pf->idle), 0);
  return &pf->p.base;
}

START_TEST(test_testing_transport_lines) {
  weft_reactor *r;
  ck_assert_int_eq(weft_testing_reactor_new(&r), 0);
  pinger_factory f = {.base.build_protocol = pinger_build};
  weft_testing_transport *tt;
  ck_assert_int_eq(weft_testing_transport_new(r, &f.base, &tt), 0);
  ck_assert_ptr_nonnull(weft_testing_transport_get(tt));
  const uint8_t *out;
  /* A line split anywhere, two lines in one piece: always the same answers. */
  ck_assert_int_eq(weft_testing_transport_feed(tt, "PI", 2), 0);
  ck_assert_uint_eq(weft_testing_transport_output(tt, &out), 0);
  ck_assert_int_eq(weft_testing_transport_feed(tt, "NG\r", 3), 0);
  ck_assert_int_eq(weft_testing_transport_feed(tt, "\nPING\r\nNOPE\r\n", 13), 0);
  ck_assert_uint_eq(weft_testing_transport_output(tt, &out), 12);
  ck_assert_int_eq(memcmp(out, "PONG\r\nPONG\r\n", 12), 0);
  weft_testing_transport_clear(tt);
  ck_assert_int_eq(weft_testing_transport_feed(tt, "QUIT\r\n", 6), 0);
  ck_assert_int_eq(weft_testing_transport_peer_close(tt), 0);
  int code = 1;
  ck_assert_int_eq(weft_testing_transport_lost(tt, &code), 1);
  ck_assert_int_eq(code, WEFT_OK);
  ck_assert_int_eq(f.p.lost, 1);
  ck_assert_ptr_null(weft_testing_transport_get(tt));
  weft_testing_transport_free(tt);

  /* Closing with a chosen reason; a line too long aborts. */
  ck_assert_int_eq(weft_testing_transport_new(r, &f.base, &tt), 0);
  ck_assert_int_eq(weft_testing_transport_close(tt, WEFT_ECONNRESET, "simulated reset"), 0);
  ck_assert_int_eq(f.p.lost, 1);
  ck_assert_int_eq(f.p.lost_code, WEFT_ECONNRESET);
  ck_assert_str_eq(f.p.lost_msg, "simulated reset");
  ck_assert_int_eq(weft_testing_transport_close(tt, WEFT_EIO, NULL), WEFT_ECLOSED);
  weft_testing_transport_free(tt);
  ck_assert_int_eq(weft_testing_transport_new(r, &f.base, &tt), 0);
  char big[100];
  memset(big, 'A', sizeof big);
  ck_assert_int_eq(weft_testing_transport_feed(tt, big, sizeof big), 0);
  ck_assert_int_eq(f.p.too_long, 1);
  ck_assert_int_eq(weft_testing_transport_lost(tt, &code), 1);
  ck_assert_int_eq(code, WEFT_EABORTED);
  weft_testing_transport_free(tt);
  weft_reactor_free(r);
}
END_TEST

/* --- idle time-outs under the test clock --------------------------------------------------- */

typedef struct logrec {
  int count;
  weft_log_level level;
  char msg[256];
} logrec;
static void on_log(void *arg, weft_log_level level, const char *message) {
  logrec *l = arg;
  l->count++;
  l->level = level;
  snprintf(l->msg, sizeof l->msg, "%s", message);
}

START_TEST(test_idle_timeout_test_clock) {
  weft_reactor *r;
  ck_assert_int_eq(weft_testing_reactor_new(&r), 0);
  logrec log = {0};
  ck_assert_int_eq(weft_reactor_set_log(r, WEFT_LOG_INFO, on_log, &log), 0);
  pinger_factory f = {.base.build_protocol = pinger_build, .idle = 10};
  weft_testing_transport *tt;
  ck_assert_int_eq(weft_testing_transport_new(r, &f.base, &tt), 0);
  weft_transport *t = weft_testing_transport_get(tt);
  ck_assert(weft_transport_get_idle_timeout(t) == 10);
  ck_assert_int_eq(weft_testing_clock_advance(r, 9.5), 0);
  ck_assert_int_eq(f.p.lost, 0);
  /* Traffic at 9.5 s moves the deadline to 19.5 s. */
  ck_assert_int_eq(weft_testing_transport_feed(tt, "PING\r\n", 6), 0);
  ck_assert_int_eq(weft_testing_clock_advance(r, 9.9), 1); /* the timer re-arms itself */
  ck_assert_int_eq(f.p.lost, 0);
  ck_assert_int_eq(log.count, 0);
  ck_assert_int_eq(weft_testing_clock_advance(r, 0.2), 1);
  ck_assert_int_eq(f.p.lost, 1);
  ck_assert_int_eq(f.p.lost_code, WEFT_EIDLE);
  ck_assert_ptr_nonnull(strstr(f.p.lost_msg, "idle time-out"));
  ck_assert_int_eq(log.count, 1);
  ck_assert_int_eq(log.level, WEFT_LOG_INFO);
  ck_assert_ptr_nonnull(strstr(log.msg, "idle time-out"));
  weft_testing_transport_free(tt);

  /* Turned off: never fires; bad values refused. */
  ck_assert_int_eq(weft_testing_transport_new(r, &f.base, &tt), 0);
  t = weft_testing_transport_get(tt);
  ck_assert_int_eq(weft_transport_set_idle_timeout(t, -1), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_set_idle_timeout(t, 0), 0);
  ck_assert_int_eq(weft_testing_clock_advance(r, 1000), 0);
  ck_assert_int_eq(f.p.lost, 0);
  /* reset_idle_timeout counts as activity. */
  ck_assert_int_eq(weft_transport_set_idle_timeout(t, 5), 0);
  ck_assert_int_eq(weft_testing_clock_advance(r, 4), 0);
  ck_assert_int_eq(weft_transport_reset_idle_timeout(t), 0);
  ck_assert_int_eq(weft_testing_clock_advance(r, 4), 1);
  ck_assert_int_eq(f.p.lost, 0);
  ck_assert_int_eq(weft_testing_clock_advance(r, 1), 1);
  ck_assert_int_eq(f.p.lost_code, WEFT_EIDLE);
  weft_testing_transport_free(tt);
  weft_reactor_free(r);
}
END_TEST

/* The listener's default, over a real loopback socket (what is tested is the listener). */
START_TEST(test_idle_timeout_listener_default) {
  weft_reactor *r;
  ck_assert_int_eq(weft_testing_reactor_new(&r), 0);
  tu_factory f;
  tu_factory_init(&f);
  int port;
  weft_listener *l = tu_listen_tcp_local(r, &f, &port);
  ck_assert_int_eq(weft_listener_set_idle_timeout(l, -2), WEFT_EINVAL);
  ck_assert_int_eq(weft_listener_set_idle_timeout(l, 30), 0);
  int fd = tu_raw_connect("127.0.0.1", port);
  tu_conn *c = tu_wait_conn(r, &f, 0, 10);
  ck_assert(weft_transport_get_idle_timeout(c->transport) == 30);
  ck_assert_int_eq(weft_testing_clock_advance(r, 29.9), 0);
  ck_assert_int_eq(c->lost, 0);
  ck_assert_int_eq(weft_testing_clock_advance(r, 0.1), 1);
  tu_wait_int(r, &c->lost, 1, 10);
  ck_assert_int_eq(c->lost_reason.code, WEFT_EIDLE);
  tu_factory_check(&f);
  close(fd);
  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
}
END_TEST

/* --- the connected pair: TLS with ALPN over memory, step by step ---------------------------- */

START_TEST(test_pair_tls_alpn) {
  TU_REQUIRE_ALPN();
  tu_pki pki;
  tu_pki_init(&pki);
  weft_reactor *r;
  ck_assert_int_eq(weft_testing_reactor_new(&r), 0);
  weft_cert_options *so = tu_server_options(&pki), *co = tu_client_options(&pki);
  static const char *const sp[] = {"h2", "http/1.1"}, *const cp[] = {"http/1.1", "h2"};
  tu_check_opt(so, weft_cert_options_set_next_protocols(so, sp, 2));
  tu_check_opt(co, weft_cert_options_set_next_protocols(co, cp, 2));
  tu_factory cf, sf;
  tu_factory_init(&cf);
  tu_factory_init(&sf);
  sf.conn_config.echo = 1;
  weft_testing_pair *p;
  ck_assert_int_eq(weft_testing_pair_new(r, &cf.base, &sf.base, co, so, "localhost", &p), 0);
  ck_assert_ptr_null(weft_testing_pair_transport(p, WEFT_TLS_CLIENT)); /* handshaking */
  ck_assert_int_eq(weft_testing_pump(r), 0);
  weft_transport *ct = weft_testing_pair_transport(p, WEFT_TLS_CLIENT);
  weft_transport *st = weft_testing_pair_transport(p, WEFT_TLS_SERVER);
  ck_assert_ptr_nonnull(ct);
  ck_assert_ptr_nonnull(st);
  tu_conn *cc = tu_factory_conn(&cf, 0);
  ck_assert_str_eq(cc->proto_made.name, "h2"); /* the server's order wins */
  ck_assert_int_eq(cc->proto_made.mechanism, WEFT_NEGOTIATED_ALPN);
  ck_assert_str_eq(tu_factory_conn(&sf, 0)->proto_made.name, "h2");
  ck_assert_int_eq(weft_transport_is_tls(ct), 1);
  ck_assert_int_eq(weft_write_netstring(ct, "hello", 5), 0);
  ck_assert_int_eq(weft_testing_pump(r), 0);
  ck_assert(tu_conn_rx_equals(cc, "5:hello,", 8));
  ck_assert_int_eq(weft_transport_lose_connection(ct), 0);
  ck_assert_int_eq(weft_testing_pump(r), 0);
  int code = 1;
  ck_assert_int_eq(weft_testing_pair_ended(p, WEFT_TLS_CLIENT, &code), 1);
  ck_assert_int_eq(code, WEFT_OK);
  ck_assert_int_eq(weft_testing_pair_ended(p, WEFT_TLS_SERVER, &code), 1);
  ck_assert_int_eq(code, WEFT_OK);
  weft_testing_pair_free(p);

  /* A client that does not trust the server: connection_failed, as over a socket. */
  weft_cert_options *untrusting;
  ck_assert_int_eq(weft_cert_options_new(&untrusting), 0);
  ck_assert_int_eq(weft_testing_pair_new(r, &cf.base, &sf.base, untrusting, so, "localhost", &p),
                   0);
  ck_assert_int_eq(weft_testing_pump(r), 0);
  ck_assert_int_eq(cf.failed, 1);
  ck_assert_int_eq(cf.last_failed.code, WEFT_ECERTVERIFY);
  ck_assert_int_eq(weft_testing_pair_ended(p, WEFT_TLS_CLIENT, NULL), 1);
  weft_testing_pair_free(p);
  weft_reactor_free(r);
  tu_factory_check(&cf);
  tu_factory_check(&sf);
  tu_factory_cleanup(&cf);
  tu_factory_cleanup(&sf);
  weft_cert_options_unref(untrusting);
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
  tu_pki_free(&pki);
}
END_TEST

/* --- producers ------------------------------------------------------------------------------ */

static int done_status = 99;
static int done_calls;
static void on_done(void *arg, int status) {
  (void)arg;
  done_status = status;
  done_calls++;
}

static char *make_file(size_t len) {
  uint8_t *buf = malloc(len);
  tu_pattern_fill(buf, len, 0);
  char *path = tu_write_temp_file(buf, len);
  free(buf);
  return path;
}

START_TEST(test_producer_file_tcp) {
  weft_reactor *r;
  ck_assert_int_eq(weft_testing_reactor_new(&r), 0);
  tu_factory f;
  tu_factory_init(&f);
  size_t size = 3 * 1024 * 1024 + 17;
  char *path = make_file(size);
  int fd = open(path, O_RDONLY);
  ck_assert_int_ge(fd, 0);
  weft_testing_transport *tt;
  ck_assert_int_eq(weft_testing_transport_new(r, &f.base, &tt), 0);
  weft_transport *t = weft_testing_transport_get(tt);
  weft_producer *p;
  done_calls = 0;
  ck_assert_int_eq(weft_producer_start_file(t, fd, 0, -1, on_done, NULL, &p), 0);
  ck_assert_int_eq(weft_producer_start_file(t, fd, 0, -1, on_done, NULL, NULL), WEFT_EBUSY);
  ck_assert_int_eq(done_calls, 0); /* never from inside start */
  /* Read slowly: pending output never passes the high mark by more than one chunk. */
  size_t got = 0, peak = 0;
  const uint8_t *out;
  for (int i = 0; i < 10000 && done_calls == 0; i++) {
    size_t n = weft_testing_transport_output(tt, &out);
    size_t pending = weft_transport_pending_output(t);
    if (pending > peak)
      peak = pending;
    ck_assert_uint_eq(tu_pattern_check(out, n, got), n);
    got += n;
    weft_testing_transport_clear(tt);
  }
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_status, 0);
  got += weft_testing_transport_output(tt, &out);
  ck_assert_uint_eq(got, size);
  ck_assert_uint_le(peak, 256 * 1024 + 64 * 1024);
  weft_testing_transport_free(tt);
  weft_reactor_free(r);
  close(fd);
  tu_remove_file(path);
  tu_factory_cleanup(&f);
}
END_TEST

START_TEST(test_producer_file_tls) {
  tu_pki pki;
  tu_pki_init(&pki);
  weft_reactor *r;
  ck_assert_int_eq(weft_testing_reactor_new(&r), 0);
  weft_cert_options *so = tu_server_options(&pki), *co = tu_client_options(&pki);
  tu_factory cf, sf;
  tu_factory_init(&cf);
  tu_factory_init(&sf);
  weft_testing_pair *pair;
  ck_assert_int_eq(weft_testing_pair_new(r, &cf.base, &sf.base, co, so, "localhost", &pair), 0);
  weft_testing_pump(r);
  weft_transport *st = weft_testing_pair_transport(pair, WEFT_TLS_SERVER);
  ck_assert_ptr_nonnull(st);
  size_t size = 1000 * 1000 + 3;
  char *path = make_file(size);
  int fd = open(path, O_RDONLY);
  done_calls = 0;
  ck_assert_int_eq(weft_producer_start_file(st, fd, 10, -1, on_done, NULL, NULL), 0);
  tu_conn *cc = tu_factory_conn(&cf, 0);
  for (int i = 0; i < 2000 && (done_calls == 0 || cc->rx_total < size - 10); i++)
    weft_testing_pump(r);
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_status, 0);
  ck_assert_uint_eq(cc->rx_total, size - 10);
  ck_assert_uint_eq(tu_pattern_check(cc->rx, cc->rx_len, 10), size - 10);

  /* A producer whose connection ends hears of it before connection_lost. */
  ck_assert_int_eq(weft_producer_start_file(st, fd, 0, -1, on_done, NULL, NULL), 0);
  weft_transport_abort_connection(weft_testing_pair_transport(pair, WEFT_TLS_CLIENT));
  for (int i = 0; i < 100 && done_calls < 2; i++)
    weft_testing_pump(r);
  ck_assert_int_eq(done_calls, 2);
  ck_assert_int_ne(done_status, 0);
  weft_testing_pair_free(pair);
  weft_reactor_free(r);
  close(fd);
  tu_remove_file(path);
  tu_factory_check(&cf);
  tu_factory_check(&sf);
  tu_factory_cleanup(&cf);
  tu_factory_cleanup(&sf);
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
  tu_pki_free(&pki);
}
END_TEST

static int generated;
static int produce_numbers(void *arg, weft_transport *t) {
  (void)arg;
  char line[32];
  int n = snprintf(line, sizeof line, "%08d\n", generated++);
  weft_transport_write(t, line, (size_t)n);
  return generated < 100000;
}

START_TEST(test_producer_generator_pauses_reading) {
  weft_reactor *r;
  ck_assert_int_eq(weft_testing_reactor_new(&r), 0);
  tu_factory f;
  tu_factory_init(&f);
  weft_testing_transport *tt;
  ck_assert_int_eq(weft_testing_transport_new(r, &f.base, &tt), 0);
  weft_transport *t = weft_testing_transport_get(tt);
  weft_producer *p;
  generated = 0;
  done_calls = 0;
  ck_assert_int_eq(weft_producer_start(t, produce_numbers, on_done, NULL, &p), 0);
  ck_assert_int_eq(weft_producer_set_marks(p, 10, 5), WEFT_EINVAL);
  ck_assert_int_eq(weft_producer_set_marks(p, 1000, 4000), 0);
  ck_assert_int_eq(weft_producer_set_pause_reading(p, 1), 0);
  weft_testing_pump(r);
  /* The peer reads nothing: the generator stopped near the high mark, reading is paused. */
  ck_assert_int_lt(generated, 100000);
  ck_assert_uint_le(weft_transport_pending_output(t), 4000 + 9);
  tu_conn *c = tu_factory_conn(&f, 0);
  /* (the socketpair's own buffer took some first; what waits in weft is bounded) */
  ck_assert_int_eq(weft_testing_transport_feed(tt, "x", 1), 0);
  if (weft_transport_pending_output(t) > 1000)
    ck_assert_uint_eq(c->rx_total, 0); /* paused */
  size_t total = 0;
  const uint8_t *out;
  for (int i = 0; i < 100000 && done_calls == 0; i++) {
    total += weft_testing_transport_output(tt, &out);
    weft_testing_transport_clear(tt);
  }
  total += weft_testing_transport_output(tt, &out);
  ck_assert_int_eq(done_status, 0);
  ck_assert_uint_eq(total, 100000u * 9);
  ck_assert_uint_eq(c->rx_total, 1); /* reading resumed */
  weft_testing_transport_free(tt);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
}
END_TEST

static Suite *toolkit_suite(void) {
  Suite *s = suite_create("toolkit");
  TCase *tc = tcase_create("toolkit");
  tcase_add_test(tc, test_clock_orders_calls);
  tcase_add_test(tc, test_testing_transport_lines);
  tcase_add_test(tc, test_idle_timeout_test_clock);
  tcase_add_test(tc, test_idle_timeout_listener_default);
  tcase_add_test(tc, test_pair_tls_alpn);
  tcase_add_test(tc, test_producer_file_tcp);
  tcase_add_test(tc, test_producer_file_tls);
  tcase_add_test(tc, test_producer_generator_pauses_reading);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(toolkit_suite());
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
