/* tests/check_adopt.c: adopting descriptors. A listening socket made outside weft served by
 * weft_listener_adopt and through an endpoint (weft_endpoint_set_fd); connected sockets
 * (socketpair and TCP) wrapped as transports in both roles, plain and TLS; descriptors that are
 * not what the call needs refused and left open; socket activation's environment checks.
 * systemd-socket-activate itself drives the samples in tests/check_adopt_samples.sh. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"
#include "tlsutil.h"

static int is_open(int fd) {
  return fcntl(fd, F_GETFD) != -1;
}

/* A blocking listening socket on 127.0.0.1, port in *PORT. */
static int raw_listener(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  ck_assert_int_eq(listen(fd, 16), 0);
  socklen_t n = sizeof a;
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &n), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

START_TEST(listener_adopt) {
  weft_reactor *r = tu_reactor_new();
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  sf.conn_config.echo = 1;
  int port, fd = raw_listener(&port);
  /* not listening: refused, left open */
  int plain = socket(AF_INET, SOCK_STREAM, 0);
  weft_listener *l;
  ck_assert_int_eq(weft_listener_adopt(r, plain, &sf.base, NULL, &l), WEFT_EINVAL);
  ck_assert(is_open(plain));
  close(plain);
  ck_assert_int_eq(weft_listener_adopt(r, -1, &sf.base, NULL, &l), WEFT_EINVAL);
  ck_assert_int_eq(weft_listener_adopt(r, fd, &sf.base, NULL, &l), 0);
  ck_assert(!is_open(fd)); /* taken: the listener works on its duplicate */
  ck_assert_int_eq(weft_listener_port(l), port);
  tu_connect_tcp_local(r, &cf, port);
  tu_conn *c = tu_wait_conn(r, &cf, 0, 5);
  tu_wait_int(r, &c->made, 1, 5);
  tu_conn_write_str(c, "adopted");
  tu_wait_size(r, &c->rx_total, 7, 5);
  ck_assert(tu_conn_rx_equals(c, "adopted", 7));
  weft_reactor_free(r);
  tu_factory_check(&sf);
  tu_factory_check(&cf);
  tu_factory_cleanup(&sf);
  tu_factory_cleanup(&cf);
}
END_TEST

/* Through an endpoint: served by a duplicate, the caller's descriptor stays open and usable
 * (two endpoints, two reactors could share it). */
START_TEST(endpoint_fd) {
  weft_reactor *r = tu_reactor_new();
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  int port, fd = raw_listener(&port);
  weft_endpoint *ep;
  ck_assert_int_eq(weft_endpoint_new(WEFT_ENDPOINT_SERVER, &ep), 0);
  ck_assert_int_eq(weft_endpoint_set_fd(ep, fd), 0);
  weft_listener *l;
  ck_assert_int_eq(weft_endpoint_listen(r, ep, &sf.base, &l), 0);
  ck_assert(is_open(fd));
  ck_assert_int_eq(weft_listener_port(l), port);
  tu_connect_tcp_local(r, &cf, port);
  tu_wait_conn(r, &sf, 0, 5);
  weft_endpoint_free(ep);
  ck_assert_int_eq(weft_endpoint_new(WEFT_ENDPOINT_CLIENT, &ep), 0);
  ck_assert_int_eq(weft_endpoint_set_fd(ep, fd), WEFT_EINVAL);
  weft_endpoint_free(ep);
  weft_reactor_free(r);
  close(fd);
  tu_factory_check(&sf);
  tu_factory_cleanup(&sf);
  tu_factory_cleanup(&cf);
}
END_TEST

/* Socket activation's environment: nothing for this process means WEFT_ENOTFOUND. */
START_TEST(systemd_environment) {
  weft_reactor *r = tu_reactor_new();
  tu_factory sf;
  tu_factory_init(&sf);
  weft_endpoint *ep;
  char err[128];
  ck_assert_int_eq(weft_endpoint_parse("systemd:domain=INET:index=0", WEFT_ENDPOINT_SERVER, &ep,
                                       err, sizeof err),
                   0);
  weft_listener *l;
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  ck_assert_int_eq(weft_endpoint_listen(r, ep, &sf.base, &l), WEFT_ENOTFOUND);
  setenv("LISTEN_PID", "1", 1); /* someone else's */
  setenv("LISTEN_FDS", "1", 1);
  ck_assert_int_eq(weft_endpoint_listen(r, ep, &sf.base, &l), WEFT_ENOTFOUND);
  char pid[32];
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  setenv("LISTEN_PID", pid, 1);
  setenv("LISTEN_FDS", "0", 1);
  ck_assert_int_eq(weft_endpoint_listen(r, ep, &sf.base, &l), WEFT_ENOTFOUND);
  weft_endpoint_free(ep);
  ck_assert_int_eq(weft_endpoint_parse("systemd:domain=INET:index=0:name=web", WEFT_ENDPOINT_SERVER,
                                       &ep, err, sizeof err),
                   WEFT_EINVAL);
  ck_assert_int_eq(
      weft_endpoint_parse("systemd:domain=INET", WEFT_ENDPOINT_SERVER, &ep, err, sizeof err),
      WEFT_EINVAL);
  ck_assert_int_eq(
      weft_endpoint_parse("systemd:index=0", WEFT_ENDPOINT_SERVER, &ep, err, sizeof err),
      WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_parse("systemd:domain=UNIX:name=web:alpn=h2", WEFT_ENDPOINT_SERVER,
                                       &ep, err, sizeof err),
                   WEFT_EINVAL); /* TLS keys without privateKey */
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  weft_reactor_free(r);
  tu_factory_cleanup(&sf);
}
END_TEST

/* Both ends of a socketpair adopted, one as a TLS server and one as a TLS client, in the same
 * reactor; then plain. */
START_TEST(transport_adopt_socketpair) {
  tu_pki pki;
  tu_pki_init(&pki);
  weft_cert_options *so = tu_server_options(&pki), *co = tu_client_options(&pki);
  weft_reactor *r = tu_reactor_new();
  for (int tls = 0; tls <= 1; tls++) {
    tu_factory sf, cf;
    tu_factory_init(&sf);
    tu_factory_init(&cf);
    sf.conn_config.echo = 1;
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    weft_transport *st = NULL, *ct = NULL;
    ck_assert_int_eq(
        weft_transport_adopt(r, sv[0], &sf.base, tls ? so : NULL, WEFT_TLS_SERVER, NULL, &st), 0);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(sf.built, tls ? 0 : 1); /* plain: ready at once */
    ck_assert_int_eq(weft_transport_adopt(r, sv[1], &cf.base, tls ? co : NULL, WEFT_TLS_CLIENT,
                                          "localhost", &ct),
                     0);
    tu_conn *c = tu_wait_conn(r, &cf, 0, 5);
    tu_wait_int(r, &c->made, 1, 5);
    tu_conn_write_str(c, "pair");
    tu_wait_size(r, &c->rx_total, 4, 5);
    ck_assert(tu_conn_rx_equals(c, "pair", 4));
    pid_t pid;
    ck_assert_int_eq(weft_transport_peer_credentials(c->transport, &pid, NULL, NULL), 0);
    ck_assert_int_eq(pid, getpid());
    if (tls)
      ck_assert(weft_transport_is_tls(c->transport));
    weft_transport_lose_connection(c->transport);
    tu_wait_int(r, &sf.lost, 1, 5);
    tu_wait_int(r, &cf.lost, 1, 5);
    tu_factory_check(&sf);
    tu_factory_check(&cf);
    tu_factory_cleanup(&sf);
    tu_factory_cleanup(&cf);
  }
  weft_reactor_free(r);
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
  tu_pki_free(&pki);
}
END_TEST

/* A TLS client whose peer is not TLS: connection_failed once, nothing built; bad descriptors
 * are refused and left open. */
START_TEST(transport_adopt_failures) {
  tu_pki pki;
  tu_pki_init(&pki);
  weft_cert_options *co = tu_client_options(&pki);
  weft_reactor *r = tu_reactor_new();
  tu_factory cf;
  tu_factory_init(&cf);
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ck_assert_int_eq(weft_transport_adopt(r, sv[0], &cf.base, co, WEFT_TLS_CLIENT, "localhost", NULL),
                   0);
  ck_assert_int_eq(write(sv[1], "not TLS at all\r\n", 16), 16);
  close(sv[1]);
  tu_wait_int(r, &cf.failed, 1, 5);
  tu_settle(r, 0.05);
  ck_assert_int_eq(cf.failed, 1);
  ck_assert_int_eq(cf.built, 0);
  int port, lfd = raw_listener(&port);
  ck_assert_int_eq(weft_transport_adopt(r, lfd, &cf.base, NULL, WEFT_TLS_SERVER, NULL, NULL),
                   WEFT_EINVAL); /* listening, not connected */
  ck_assert(is_open(lfd));
  close(lfd);
  int udp = socket(AF_INET, SOCK_DGRAM, 0);
  ck_assert_int_eq(weft_transport_adopt(r, udp, &cf.base, NULL, WEFT_TLS_SERVER, NULL, NULL),
                   WEFT_EINVAL);
  ck_assert(is_open(udp));
  close(udp);
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ck_assert_int_eq(weft_transport_adopt(r, sv[0], &cf.base, NULL, (weft_tls_role)7, NULL, NULL),
                   WEFT_EINVAL);
  close(sv[0]);
  close(sv[1]);
  weft_reactor_free(r);
  tu_factory_check(&cf);
  tu_factory_cleanup(&cf);
  weft_cert_options_unref(co);
  tu_pki_free(&pki);
}
END_TEST

/* Dual stack: a listener on "::" accepts IPv4 with the option, not without. */
static int connect_v4(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
  int err = errno;
  close(fd);
  return rc == 0 ? 0 : err;
}

START_TEST(dual_stack) {
  if (!tu_ipv6_available())
    return; /* no IPv6 here: nothing to test */
  weft_reactor *r = tu_reactor_new();
  for (int dual = 0; dual <= 1; dual++) {
    tu_factory sf;
    tu_factory_init(&sf);
    weft_endpoint *ep;
    char err[128], desc[64];
    snprintf(desc, sizeof desc, "tcp:0:interface=\\:\\::dualStack=%s", dual ? "yes" : "no");
    ck_assert_msg(weft_endpoint_parse(desc, WEFT_ENDPOINT_SERVER, &ep, err, sizeof err) == 0,
                  "%s: %s", desc, err);
    weft_listener *l;
    ck_assert_int_eq(weft_endpoint_listen(r, ep, &sf.base, &l), 0);
    weft_endpoint_free(ep);
    int port = weft_listener_port(l);
    if (dual) {
      ck_assert_int_eq(connect_v4(port), 0);
      tu_conn *c = tu_wait_conn(r, &sf, 0, 5);
      char a[80];
      weft_address_format((struct sockaddr *)&c->peer, a, sizeof a);
      ck_assert_msg(strncmp(a, "[::ffff:127.0.0.1]:", 19) == 0, "peer %s", a);
    } else {
      ck_assert_int_eq(connect_v4(port), ECONNREFUSED); /* V6ONLY: IPv4 is not for it */
      /* and an IPv4 listener may take the same port */
      weft_listener *l4;
      ck_assert_int_eq(weft_listen_tcp(r, "0.0.0.0", port, &sf.base, &l4), 0);
      weft_listener_stop(l4);
    }
    weft_listener_stop(l);
    tu_settle(r, 0.02);
    weft_reactor_free(r);
    r = tu_reactor_new();
    tu_factory_cleanup(&sf);
  }
  weft_reactor_free(r);
  weft_endpoint *ep;
  ck_assert_int_eq(weft_endpoint_new(WEFT_ENDPOINT_CLIENT, &ep), 0);
  ck_assert_int_eq(weft_endpoint_set_dual_stack(ep, 1), WEFT_EINVAL);
  weft_endpoint_free(ep);
}
END_TEST

static Suite *adopt_suite(void) {
  Suite *s = suite_create("adopt");
  TCase *tc = tcase_create("adopt");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, listener_adopt);
  tcase_add_test(tc, endpoint_fd);
  tcase_add_test(tc, systemd_environment);
  tcase_add_test(tc, transport_adopt_socketpair);
  tcase_add_test(tc, transport_adopt_failures);
  tcase_add_test(tc, dual_stack);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(adopt_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
