/* tests/load_tls.c: load tests for TLS connections over loopback (NOT part of `make check`;
 * run with `make check-load`, or ci/load.sh BUILDDIR).
 *
 *  concurrent  N (default 10,000; WEFT_LOAD_CONCURRENT) TLS connections open at once on one
 *              reactor, server and clients in this process (2 fds each). Connections are opened
 *              with at most 500 handshakes in flight (listen backlog 4096); once all N are
 *              established on both sides, each client sends 16 bytes and checks the echo, then
 *              all close. Prints RSS per connection (both sides together) and fds before/after;
 *              asserts fds come back to the start value.
 *  handshakes  N (default 100,000; WEFT_LOAD_HANDSHAKES) short TLS 1.3 connections (EC P-256
 *              certificate and key exchange), 8 in flight at a time: connect, handshake, send
 *              1 byte, get it back, close. Asserts fds come back exactly and RSS stays within
 *              RSS(after the first 1,000) + 8 MiB, which a leak of 100 bytes per connection
 *              (10 MB over 100,000) would exceed.
 *
 * The protocols here are deliberately small (a few dozen bytes each, no tu_conn) so the RSS
 * figures measure weft, libevent and OpenSSL rather than the test's own bookkeeping.
 * Nothing sleeps: the reactor runs until a condition holds or a deadline passes. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "testutil.h"
#include "tlsutil.h"

#define LOAD_TIMEOUT 900        /* Check time-out per test, seconds */
#define CONCURRENT_DEADLINE 300 /* overall deadline of the concurrent test, seconds */
#define IN_FLIGHT_OPEN 500      /* handshakes in flight while opening the concurrent set */
#define BACKLOG 4096
#define ECHO_LEN 16
#define SEQ_IN_FLIGHT 8
#define SEQ_BASELINE 1000        /* RSS baseline taken after this many handshakes */
#define SEQ_RSS_SLACK_KIB 8192   /* allowed growth after the baseline */

static long env_long(const char *name, long def) {
  const char *s = getenv(name);
  if (s == NULL || *s == '\0') return def;
  char *end;
  long v = strtol(s, &end, 10);
  ck_assert_msg(*end == '\0' && v > 0, "%s=%s: expected a positive integer", name, s);
  return v;
}

/* Resident set size in KiB (/proc/self/statm, second field). */
static long rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  ck_assert_msg(f != NULL, "open /proc/self/statm: %s", strerror(errno));
  long size = 0, resident = 0;
  ck_assert_int_eq(fscanf(f, "%ld %ld", &size, &resident), 2);
  fclose(f);
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Raises RLIMIT_NOFILE so that WANT descriptors fit: soft to hard, and hard itself when we may
 * (root). Returns the soft limit in effect. */
static long raise_nofile(long want) {
  struct rlimit rl;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_max != RLIM_INFINITY && (long)rl.rlim_max < want) {
    struct rlimit up = {(rlim_t)want, (rlim_t)want};
    if (setrlimit(RLIMIT_NOFILE, &up) != 0)
      printf("load: cannot raise the hard RLIMIT_NOFILE from %ld to %ld: %s\n",
             (long)rl.rlim_max, want, strerror(errno));
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  if (rl.rlim_cur != rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  return rl.rlim_cur == RLIM_INFINITY ? want : (long)rl.rlim_cur;
}

/* --- Shared state ---------------------------------------------------------------------- */

typedef struct load {
  weft_reactor *r;
  tu_pki pki;
  weft_cert_options *sopts, *copts;
  weft_listener *listener;
  int port;
  weft_factory sfactory, cfactory;

  long target;          /* connections to make in all */
  long max_in_flight;   /* connection attempts (or connections, sequential) at once */
  long started;         /* weft_connect_ssl calls that succeeded */
  long c_made, c_lost, c_failed, s_made, s_lost, s_hs_failed;
  long echoed;          /* clients that got their echo back, intact */
  long bad_echo;        /* clients that got something else */
  long bad_lost;        /* connection_lost with a reason other than WEFT_OK */
  int connect_rc;       /* first weft_connect_ssl error */
  char first_error[256];

  int sequential;       /* handshakes test: clients write 1 byte in connection_made, close on echo */
  long rss_baseline;    /* handshakes: RSS when SEQ_BASELINE clients were done */
} load;

typedef struct sconn {
  weft_protocol base;
  load *L;
} sconn;

typedef struct cconn {
  weft_protocol base;
  load *L;
  weft_transport *t;
  struct cconn *next; /* concurrent test: every live client, to write to and close */
  unsigned char got;
  unsigned char buf[ECHO_LEN];
} cconn;

static cconn *live_clients;

static void note_error(load *L, const char *what, const weft_reason *reason) {
  if (L->first_error[0] == '\0')
    snprintf(L->first_error, sizeof L->first_error, "%s: %s: %s", what,
             weft_err_name(reason->code), reason->message);
}

/* Starts connection attempts until MAX_IN_FLIGHT are pending or TARGET were started. For the
 * concurrent test "pending" means not yet made (handshakes in flight); for the sequential one it
 * means not yet finished. */
static void launch(load *L) {
  while (L->started < L->target && L->connect_rc == 0) {
    long busy = L->sequential ? L->started - L->c_lost - L->c_failed
                              : L->started - L->c_made - L->c_failed;
    if (busy >= L->max_in_flight) break;
    int rc = weft_connect_ssl(L->r, "127.0.0.1", L->port, &L->cfactory, L->copts, "localhost",
                              60.0, NULL, NULL);
    if (rc != 0) {
      L->connect_rc = rc;
      snprintf(L->first_error, sizeof L->first_error, "weft_connect_ssl: %s", weft_err_name(rc));
      return;
    }
    L->started++;
  }
}

/* Server side: echo everything. */
static void s_made(weft_protocol *p, weft_transport *t) {
  (void)t;
  ((sconn *)p)->L->s_made++;
}
static void s_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  (void)p;
  weft_transport_write(t, data, len);
}
static void s_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)t;
  load *L = ((sconn *)p)->L;
  L->s_lost++;
  if (reason->code != WEFT_OK) {
    L->bad_lost++;
    note_error(L, "server connection_lost", reason);
  }
  free(p);
}
static const weft_protocol_ops sconn_ops = {.connection_made = s_made,
                                            .data_received = s_data,
                                            .connection_lost = s_lost};

static weft_protocol *s_build(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)t, (void)peer;
  sconn *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->base.ops = &sconn_ops;
  c->L = f->data;
  return &c->base;
}
static void s_hs_failed(weft_factory *f, const struct sockaddr *peer, const weft_reason *reason) {
  (void)peer;
  load *L = f->data;
  L->s_hs_failed++;
  note_error(L, "server handshake_failed", reason);
}

/* Client side. */
static void c_made(weft_protocol *p, weft_transport *t) {
  cconn *c = (cconn *)p;
  load *L = c->L;
  c->t = t;
  L->c_made++;
  if (L->sequential) {
    weft_transport_write(t, "x", 1);
  } else {
    c->next = live_clients;
    live_clients = c;
    launch(L);
  }
}
static void c_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  cconn *c = (cconn *)p;
  load *L = c->L;
  size_t want = L->sequential ? 1 : ECHO_LEN;
  if (c->got + len > want) {
    L->bad_echo++;
    weft_transport_abort_connection(t);
    return;
  }
  memcpy(c->buf + c->got, data, len);
  c->got = (unsigned char)(c->got + len);
  if (c->got < want) return;
  int ok;
  if (L->sequential) {
    ok = c->buf[0] == 'x';
  } else {
    uint8_t expect[ECHO_LEN];
    tu_pattern_fill(expect, ECHO_LEN, (uint64_t)(uintptr_t)c);
    ok = memcmp(expect, c->buf, ECHO_LEN) == 0;
  }
  if (ok)
    L->echoed++;
  else
    L->bad_echo++;
  if (L->sequential) weft_transport_lose_connection(t);
}
static void c_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)t;
  cconn *c = (cconn *)p;
  load *L = c->L;
  L->c_lost++;
  if (reason->code != WEFT_OK) {
    L->bad_lost++;
    note_error(L, "client connection_lost", reason);
  }
  free(c);
  if (L->sequential) {
    if (L->c_lost == SEQ_BASELINE) L->rss_baseline = rss_kib();
    launch(L);
  }
}
static const weft_protocol_ops cconn_ops = {.connection_made = c_made,
                                            .data_received = c_data,
                                            .connection_lost = c_lost};

static weft_protocol *c_build(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)t, (void)peer;
  cconn *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->base.ops = &cconn_ops;
  c->L = f->data;
  return &c->base;
}
static void c_failed(weft_factory *f, const weft_reason *reason) {
  load *L = f->data;
  L->c_failed++;
  note_error(L, "client connection_failed", reason);
  launch(L);
}

static void load_init(load *L, long target, long max_in_flight, int sequential) {
  memset(L, 0, sizeof *L);
  live_clients = NULL;
  L->target = target;
  L->max_in_flight = max_in_flight;
  L->sequential = sequential;
  L->r = tu_reactor_new();
  tu_pki_init(&L->pki);
  L->sopts = tu_server_options(&L->pki);
  L->copts = tu_client_options(&L->pki);
  /* TLS 1.3 with the P-256 group on both sides (the certificates' keys are P-256 too). */
  tu_check_opt(L->sopts, weft_cert_options_set_tls_versions(L->sopts, WEFT_TLS1_3, WEFT_TLS1_3));
  tu_check_opt(L->copts, weft_cert_options_set_tls_versions(L->copts, WEFT_TLS1_3, WEFT_TLS1_3));
  tu_check_opt(L->sopts, weft_cert_options_set_groups(L->sopts, "P-256"));
  tu_check_opt(L->copts, weft_cert_options_set_groups(L->copts, "P-256"));
  L->sfactory.build_protocol = s_build;
  L->sfactory.handshake_failed = s_hs_failed;
  L->sfactory.data = L;
  L->cfactory.build_protocol = c_build;
  L->cfactory.connection_failed = c_failed;
  L->cfactory.data = L;
  int rc = weft_listen_ssl(L->r, "127.0.0.1", 0, &L->sfactory, L->sopts, BACKLOG, &L->listener);
  ck_assert_msg(rc == 0, "weft_listen_ssl: %s (%s)", weft_err_name(rc),
                weft_cert_options_last_error(L->sopts));
  L->port = weft_listener_port(L->listener);
}

static void load_free(load *L) {
  weft_reactor_free(L->r);
  weft_cert_options_unref(L->sopts);
  weft_cert_options_unref(L->copts);
  tu_pki_free(&L->pki);
}

static const char *first_error(const load *L) {
  return L->first_error[0] ? L->first_error : "none";
}

/* Runs the reactor until PRED holds or the absolute deadline DEADLINE (tu_now() time) passes;
 * fails with WHAT and the counters then. */
static void run_phase(load *L, int (*pred)(void *), double deadline, const char *what) {
  double left = deadline - tu_now();
  int rc = left > 0 ? weft_reactor_run_until(L->r, pred, L, left) : WEFT_ETIMEDOUT;
  if (rc == WEFT_ETIMEDOUT && pred(L)) rc = 0;
  ck_assert_msg(rc == 0,
                "%s: %s; started %ld, client made %ld lost %ld failed %ld, server made %ld lost "
                "%ld handshake_failed %ld, echoed %ld; first error: %s",
                what, rc == WEFT_ETIMEDOUT ? "deadline passed" : weft_err_name(rc), L->started,
                L->c_made, L->c_lost, L->c_failed, L->s_made, L->s_lost, L->s_hs_failed,
                L->echoed, first_error(L));
}

static int broken(const load *L) {
  return L->connect_rc != 0 || L->c_failed > 0 || L->s_hs_failed > 0 || L->bad_echo > 0 ||
         L->bad_lost > 0;
}

/* --- 1. Concurrent connections ------------------------------------------------------------- */

static int all_made(void *arg) {
  load *L = arg;
  return broken(L) || (L->c_made == L->target && L->s_made == L->target);
}
static int all_echoed(void *arg) {
  load *L = arg;
  return broken(L) || L->echoed == L->target;
}
static int all_lost(void *arg) {
  load *L = arg;
  return broken(L) || (L->c_lost == L->target && L->s_lost == L->target);
}
static int fds_target;
static int fds_back(void *arg) {
  load *L = arg;
  return weft_reactor_connection_count(L->r) == 0 && tu_count_fds() == fds_target;
}

START_TEST(test_concurrent) {
  long n = env_long("WEFT_LOAD_CONCURRENT", 10000);
  long want = 2 * n + 100;
  long limit = raise_nofile(want);
  if (limit < want) {
    long m = (limit - 100) / 2;
    printf("concurrent: RLIMIT_NOFILE is %ld, below the %ld needed for %ld connections: "
           "running %ld\n",
           limit, want, n, m);
    ck_assert_msg(m >= 100, "RLIMIT_NOFILE %ld is too low for a load test", limit);
    n = m;
  }
  double t0 = tu_now(), deadline = t0 + CONCURRENT_DEADLINE;

  load L;
  load_init(&L, n, IN_FLIGHT_OPEN, 0);
  int fds_before = tu_count_fds();
  long rss_before = rss_kib();

  launch(&L);
  run_phase(&L, all_made, deadline, "opening the connections");
  ck_assert_msg(!broken(&L), "opening: client failed %ld, server handshake_failed %ld: %s",
                L.c_failed, L.s_hs_failed, first_error(&L));
  double t_open = tu_now() - t0;
  unsigned peak_count = weft_reactor_connection_count(L.r);
  int fds_peak = tu_count_fds();
  long rss_peak = rss_kib();
  ck_assert_msg(peak_count >= 2 * (unsigned)n, "connection_count %u at the peak, expected >= %ld",
                peak_count, 2 * n);
  ck_assert_int_ge(fds_peak, fds_before + 2 * n);

  /* Every client sends 16 bytes (a pattern that depends on the connection) and checks the echo. */
  long writers = 0;
  for (cconn *c = live_clients; c != NULL; c = c->next, writers++) {
    uint8_t msg[ECHO_LEN];
    tu_pattern_fill(msg, ECHO_LEN, (uint64_t)(uintptr_t)c);
    ck_assert_int_eq(weft_transport_write(c->t, msg, ECHO_LEN), 0);
  }
  ck_assert_int_eq(writers, n);
  run_phase(&L, all_echoed, deadline, "echoing");
  ck_assert_msg(!broken(&L), "echo: %ld bad echoes, %ld bad closes: %s", L.bad_echo, L.bad_lost,
                first_error(&L));

  /* All close, from the client side (close_notify both ways). */
  cconn *c = live_clients;
  live_clients = NULL;
  while (c != NULL) {
    cconn *next = c->next; /* C stays valid until its connection_lost, which runs later */
    ck_assert_int_eq(weft_transport_lose_connection(c->t), 0);
    c = next;
  }
  run_phase(&L, all_lost, deadline, "closing");
  ck_assert_msg(!broken(&L), "close: %ld closes not clean: %s", L.bad_lost, first_error(&L));
  fds_target = fds_before;
  run_phase(&L, fds_back, deadline, "waiting for the descriptors to be closed");
  int fds_after = tu_count_fds();
  long rss_after = rss_kib();
  malloc_trim(0); /* what the allocator keeps vs. what is still in use */
  long rss_trimmed = rss_kib();
  double total = tu_now() - t0;

  printf("concurrent: %ld connections, RSS per connection %.1f KiB (server+client side together)\n",
         n, (double)(rss_peak - rss_before) / (double)n);
  printf("concurrent: opened in %.1f s, total %.1f s; connection_count at peak %u; fds "
         "before/peak/after %d/%d/%d; RSS before/peak/after %ld/%ld/%ld KiB (%ld after "
         "malloc_trim)\n",
         t_open, total, peak_count, fds_before, fds_peak, fds_after, rss_before, rss_peak,
         rss_after, rss_trimmed);
  fflush(stdout);
  ck_assert_int_eq(L.echoed, n);
  ck_assert_int_eq(fds_after, fds_before);
  load_free(&L);
}
END_TEST

/* --- 2. Sequential handshakes ---------------------------------------------------------------- */

static int seq_done(void *arg) {
  load *L = arg;
  return broken(L) || (L->c_lost + L->c_failed == L->target && L->s_lost == L->target);
}

START_TEST(test_handshakes) {
  long n = env_long("WEFT_LOAD_HANDSHAKES", 100000);
  raise_nofile(1024);
  load L;
  load_init(&L, n, SEQ_IN_FLIGHT, 1);
  int fds_before = tu_count_fds();
  long rss_start = rss_kib();
  double t0 = tu_now();

  launch(&L);
  run_phase(&L, seq_done, t0 + LOAD_TIMEOUT - 30, "handshakes");
  ck_assert_msg(!broken(&L),
                "after %ld connections: client failed %ld, server handshake_failed %ld, bad "
                "echoes %ld, unclean closes %ld; first error: %s",
                L.c_lost, L.c_failed, L.s_hs_failed, L.bad_echo, L.bad_lost, first_error(&L));
  double secs = tu_now() - t0;
  fds_target = fds_before;
  run_phase(&L, fds_back, tu_now() + 30, "waiting for the descriptors to be closed");
  int fds_after = tu_count_fds();
  long rss_end = rss_kib();
  long baseline = n >= SEQ_BASELINE ? L.rss_baseline : rss_start;

  printf("handshakes: %ld in %.1f s (%.0f/s), fds before/after %d/%d, RSS start/after-%d/end "
         "%ld/%ld/%ld KiB (bound: end <= after-%d + %d KiB)\n",
         n, secs, (double)n / secs, fds_before, fds_after, SEQ_BASELINE, rss_start, baseline,
         rss_end, SEQ_BASELINE, SEQ_RSS_SLACK_KIB);
  fflush(stdout);
  ck_assert_int_eq(L.echoed, n);
  ck_assert_int_eq(L.s_made, n);
  ck_assert_int_eq(fds_after, fds_before);
  ck_assert_msg(rss_end <= baseline + SEQ_RSS_SLACK_KIB,
                "RSS grew from %ld KiB (after %d handshakes) to %ld KiB (after %ld): more than "
                "%d KiB, a leak of about %.0f bytes per connection",
                baseline, SEQ_BASELINE, rss_end, n, SEQ_RSS_SLACK_KIB,
                (double)(rss_end - baseline) * 1024.0 / (double)(n - SEQ_BASELINE));
  load_free(&L);
}
END_TEST

static Suite *load_suite(void) {
  Suite *s = suite_create("load_tls");
  TCase *tc = tcase_create("concurrent");
  tcase_add_test(tc, test_concurrent);
  tcase_set_timeout(tc, LOAD_TIMEOUT);
  suite_add_tcase(s, tc);
  tc = tcase_create("handshakes");
  tcase_add_test(tc, test_handshakes);
  tcase_set_timeout(tc, LOAD_TIMEOUT);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  SRunner *sr = srunner_create(load_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
