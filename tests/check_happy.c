/* tests/check_happy.c: Happy Eyeballs (RFC 8305) in the connector. Names come from the fake
 * DNS server of testutil; dead addresses are black-holed inside a private network namespace
 * (unshare(CLONE_NEWNET) in the test's own process, which Check forks per test: lo up, and
 * 10.255.255.0/24 routed to lo, where packets to addresses that are not local vanish without an
 * answer). Nothing leaves the machine. Without the rights to make a namespace (or with
 * CK_FORK=no, where the namespace would outlive the test) those tests say so and pass empty.
 *
 * Timings are printed ("happy: ...") for the record; assertions on time are upper bounds
 * only, generous for a loaded machine. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "connector-internal.h"
#include "testutil.h"
#include "tlsutil.h"

/* Enters a new network namespace with lo up and 10.255.255.0/24 black-holed. 0: not here. */
static int enter_netns(void) {
  const char *fork_mode = getenv("CK_FORK");
  if (fork_mode && !strcmp(fork_mode, "no")) {
    fprintf(stderr, "happy: CK_FORK=no: no network namespace, test skipped\n");
    return 0;
  }
  if (unshare(CLONE_NEWNET) != 0) {
    fprintf(stderr, "happy: unshare(CLONE_NEWNET): %m: test skipped\n");
    return 0;
  }
  if (system("ip link set lo up && ip route add 10.255.255.0/24 dev lo") != 0) {
    fprintf(stderr, "happy: ip failed in the namespace: test skipped\n");
    return 0;
  }
  return 1;
}

typedef struct client {
  tu_factory f;
  double started;
} client;

static weft_connector *connect_name(weft_reactor *r, tu_factory *f, const char *host, int port,
                                    weft_cert_options *tls, double timeout, double delay) {
  weft_endpoint *ep;
  ck_assert_int_eq(weft_endpoint_new(WEFT_ENDPOINT_CLIENT, &ep), 0);
  ck_assert_int_eq(weft_endpoint_set_host(ep, host), 0);
  ck_assert_int_eq(weft_endpoint_set_port(ep, port), 0);
  ck_assert_int_eq(weft_endpoint_set_tls(ep, tls), 0);
  if (tls)
    ck_assert_int_eq(weft_endpoint_set_server_name(ep, "localhost"), 0);
  ck_assert_int_eq(weft_endpoint_set_timeout(ep, timeout), 0);
  if (delay >= 0)
    ck_assert_int_eq(weft_endpoint_set_attempt_delay(ep, delay), 0);
  weft_connector *c;
  ck_assert_int_eq(weft_endpoint_connect(r, ep, &f->base, &c), 0);
  weft_endpoint_free(ep);
  return c;
}

static int made_or_failed(void *arg) {
  tu_factory *f = arg;
  return f->made > 0 || f->failed > 0;
}

/* The first address black-holed, the second alive: connected after about the attempt delay,
 * not after the time-out (10 s here). */
static void blackholed_first(int tls) {
  if (!enter_netns())
    return;
  tu_pki pki;
  weft_cert_options *so = NULL, *co = NULL;
  if (tls) {
    tu_pki_init(&pki);
    so = tu_server_options(&pki);
    co = tu_client_options(&pki);
  }
  weft_reactor *r = tu_reactor_new();
  tu_fake_dns *dns = tu_fake_dns_start(r, TU_DNS_NXDOMAIN);
  tu_fake_dns_add(dns, "he.test", "10.255.255.1");
  tu_fake_dns_add(dns, "he.test", "127.0.0.1");
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  int port;
  if (tls)
    tu_listen_ssl_local(r, &sf, so, &port);
  else
    tu_listen_tcp_local(r, &sf, &port);
  int fds = tu_count_fds();
  double t0 = tu_now();
  connect_name(r, &cf, "he.test", port, co, 10, -1);
  tu_run_until(r, made_or_failed, &cf, 12);
  double elapsed = tu_now() - t0;
  fprintf(stderr,
          "happy: %s, first address black-holed: connected in %.3f s (attempt delay "
          "0.25 s, time-out 10 s)\n",
          tls ? "TLS" : "TCP", elapsed);
  ck_assert_msg(cf.made == 1, "not connected: %s", cf.last_failed.message);
  ck_assert_msg(elapsed < 5.0, "connected after %.3f s: the second address waited", elapsed);
  tu_conn *c = tu_factory_conn(&cf, 0);
  char a[80];
  weft_address_format((struct sockaddr *)&c->peer, a, sizeof a);
  ck_assert_msg(strncmp(a, "127.0.0.1:", 10) == 0, "peer %s", a);
  tu_wait_int(r, &sf.made, 1, 5);
  /* the black-holed attempt was closed: only the connection's two sockets remain */
  ck_assert_int_eq(tu_count_fds(), fds + 2);
  tu_settle(r, 0.3);
  ck_assert_int_eq(cf.failed, 0);
  ck_assert_int_eq(sf.built, 1);
  tu_fake_dns_free(dns); /* before the reactor */
  weft_reactor_free(r);
  tu_factory_check(&sf);
  tu_factory_check(&cf);
  tu_factory_cleanup(&sf);
  tu_factory_cleanup(&cf);
  if (tls) {
    weft_cert_options_unref(so);
    weft_cert_options_unref(co);
    tu_pki_free(&pki);
  }
}

START_TEST(blackholed_first_tcp) {
  blackholed_first(0);
}
END_TEST

START_TEST(blackholed_first_tls) {
  blackholed_first(1);
}
END_TEST

/* Every address black-holed: the overall time-out ends it, with every attempt closed; and a
 * cancel while attempts run. */
START_TEST(all_blackholed) {
  if (!enter_netns())
    return;
  weft_reactor *r = tu_reactor_new();
  tu_fake_dns *dns = tu_fake_dns_start(r, TU_DNS_NXDOMAIN);
  tu_fake_dns_add(dns, "dead.test", "10.255.255.1");
  tu_fake_dns_add(dns, "dead.test", "10.255.255.3");
  tu_fake_dns_add(dns, "dead.test", "10.255.255.5");
  tu_factory cf;
  tu_factory_init(&cf);
  int fds = tu_count_fds();
  double t0 = tu_now();
  connect_name(r, &cf, "dead.test", 443, NULL, 0.8, 0.1);
  tu_wait_int(r, &cf.failed, 1, 5);
  double elapsed = tu_now() - t0;
  fprintf(stderr,
          "happy: three black-holed addresses, attempt delay 0.1 s, time-out 0.8 s: "
          "failed after %.3f s\n",
          elapsed);
  ck_assert_int_eq(cf.last_failed.code, WEFT_ETIMEDOUT);
  ck_assert_int_eq(tu_count_fds(), fds);
  connect_name(r, &cf, "dead.test", 443, NULL, 10, 0.05);
  weft_connector *c = connect_name(r, &cf, "dead.test", 443, NULL, 10, 0.05);
  tu_settle(r, 0.3); /* all three attempts of both are running */
  ck_assert_int_eq(tu_count_fds(), fds + 6);
  ck_assert_int_eq(weft_connector_cancel(c), 0);
  tu_wait_int(r, &cf.failed, 2, 5);
  ck_assert_int_eq(cf.last_failed.code, WEFT_ECANCELED);
  ck_assert_int_eq(tu_count_fds(), fds + 3); /* the other connector's three attempts */
  tu_fake_dns_free(dns);                     /* before the reactor */
  weft_reactor_free(r); /* the other fails with WEFT_ESHUTDOWN, its sockets closed */
  ck_assert_int_eq(cf.failed, 3);
  tu_factory_check(&cf);
  tu_factory_cleanup(&cf);
}
END_TEST

/* A refused address starts the next attempt at once, whatever the attempt delay (no namespace
 * needed: 127.0.0.2 refuses, 127.0.0.1 listens). */
START_TEST(refused_first) {
  weft_reactor *r = tu_reactor_new();
  tu_fake_dns *dns = tu_fake_dns_start(r, TU_DNS_NXDOMAIN);
  tu_fake_dns_add(dns, "refused.test", "127.0.0.2");
  tu_fake_dns_add(dns, "refused.test", "127.0.0.1");
  tu_fake_dns_add(dns, "none.test", "127.0.0.2");
  tu_fake_dns_add(dns, "none.test", "127.0.0.3");
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  int port;
  tu_listen_tcp_local(r, &sf, &port);
  double t0 = tu_now();
  connect_name(r, &cf, "refused.test", port, NULL, 10, 5.0);
  tu_run_until(r, made_or_failed, &cf, 10);
  double elapsed = tu_now() - t0;
  fprintf(stderr, "happy: first address refused, attempt delay 5 s: connected in %.3f s\n",
          elapsed);
  ck_assert_int_eq(cf.made, 1);
  ck_assert_msg(elapsed < 4.0, "connected after %.3f s: the refusal did not start the next",
                elapsed);
  /* every address refused: one connection_failed with the refusal */
  connect_name(r, &cf, "none.test", port, NULL, 10, 5.0);
  tu_wait_int(r, &cf.failed, 1, 5);
  ck_assert_int_eq(cf.last_failed.code, WEFT_ECONNREFUSED);
  tu_settle(r, 0.1);
  ck_assert_int_eq(cf.failed, 1);
  tu_fake_dns_free(dns); /* before the reactor */
  weft_reactor_free(r);
  tu_factory_check(&sf);
  tu_factory_check(&cf);
  tu_factory_cleanup(&sf);
  tu_factory_cleanup(&cf);
}
END_TEST

/* Two live addresses, both families, attempts started together: one connection is made and
 * TLS runs on it only. */
START_TEST(two_live_tls_winner_only) {
  if (!tu_ipv6_available())
    return;
  tu_pki pki;
  tu_pki_init(&pki);
  weft_cert_options *so = tu_server_options(&pki), *co = tu_client_options(&pki);
  weft_reactor *r = tu_reactor_new();
  tu_fake_dns *dns = tu_fake_dns_start(r, TU_DNS_NXDOMAIN);
  tu_fake_dns_add(dns, "both.test", "127.0.0.1");
  tu_fake_dns_add(dns, "both.test", "::1");
  tu_factory s4, s6, cf;
  tu_factory_init(&s4);
  tu_factory_init(&s6);
  tu_factory_init(&cf);
  int port;
  tu_listen_ssl_local(r, &s4, so, &port);
  weft_listener *l6;
  ck_assert_int_eq(weft_listen_ssl(r, "::1", port, &s6.base, so, &l6), 0);
  connect_name(r, &cf, "both.test", port, co, 10, 0);
  tu_run_until(r, made_or_failed, &cf, 10);
  ck_assert_int_eq(cf.made, 1);
  tu_settle(r, 0.3);
  ck_assert_int_eq(s4.built + s6.built, 1);
  ck_assert_int_eq(s4.made + s6.made, 1);
  fprintf(stderr,
          "happy: two live addresses, delay 0: won by %s; the other server saw %d "
          "failed handshake(s)\n",
          s4.built ? "IPv4" : "IPv6", s4.built ? s6.handshake_failed : s4.handshake_failed);
  tu_fake_dns_free(dns); /* before the reactor */
  weft_reactor_free(r);
  tu_factory_check(&s4);
  tu_factory_check(&s6);
  tu_factory_check(&cf);
  tu_factory_cleanup(&s4);
  tu_factory_cleanup(&s6);
  tu_factory_cleanup(&cf);
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
  tu_pki_free(&pki);
}
END_TEST

static void fill(struct sockaddr_storage *a, socklen_t *l, const char *const *ips, int n) {
  for (int i = 0; i < n; i++) {
    memset(&a[i], 0, sizeof a[i]);
    if (strchr(ips[i], ':')) {
      struct sockaddr_in6 *s = (struct sockaddr_in6 *)&a[i];
      s->sin6_family = AF_INET6;
      inet_pton(AF_INET6, ips[i], &s->sin6_addr);
      l[i] = sizeof *s;
    } else {
      struct sockaddr_in *s = (struct sockaddr_in *)&a[i];
      s->sin_family = AF_INET;
      inet_pton(AF_INET, ips[i], &s->sin_addr);
      l[i] = sizeof *s;
    }
  }
}

static void check_order(struct sockaddr_storage *a, int n, const char *want) {
  char got[256] = "", ip[INET6_ADDRSTRLEN];
  for (int i = 0; i < n; i++) {
    if (a[i].ss_family == AF_INET)
      inet_ntop(AF_INET, &((struct sockaddr_in *)&a[i])->sin_addr, ip, sizeof ip);
    else
      inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a[i])->sin6_addr, ip, sizeof ip);
    strcat(got, i ? " " : "");
    strcat(got, ip);
  }
  ck_assert_str_eq(got, want);
}

START_TEST(interleave) {
  struct sockaddr_storage a[16];
  socklen_t l[16];
  const char *const v6first[] = {"::1", "::2", "::3", "10.0.0.1", "10.0.0.2"};
  fill(a, l, v6first, 5);
  weft__interleave_addresses(a, l, 5);
  check_order(a, 5, "::1 10.0.0.1 ::2 10.0.0.2 ::3");
  ck_assert_uint_eq(l[1], sizeof(struct sockaddr_in));
  const char *const v4first[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3", "::1"};
  fill(a, l, v4first, 4);
  weft__interleave_addresses(a, l, 4);
  check_order(a, 4, "10.0.0.1 ::1 10.0.0.2 10.0.0.3");
  const char *const one[] = {"::1", "::2"};
  fill(a, l, one, 2);
  weft__interleave_addresses(a, l, 2);
  check_order(a, 2, "::1 ::2");
}
END_TEST

static Suite *happy_suite(void) {
  Suite *s = suite_create("happy");
  TCase *tc = tcase_create("happy");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, interleave);
  tcase_add_test(tc, blackholed_first_tcp);
  tcase_add_test(tc, blackholed_first_tls);
  tcase_add_test(tc, all_blackholed);
  tcase_add_test(tc, refused_first);
  tcase_add_test(tc, two_live_tls_winner_only);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(happy_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
