/* tests/check_unix.c: Unix domain stream sockets through endpoints: plain and TLS over a socket
 * file and an abstract name, the file's mode, stale and live socket files, removal on stop
 * (only of the file the listener bound), the peer's credentials, peer addresses as
 * "unix:...", and the PROXY protocol over a Unix socket. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "testutil.h"
#include "tlsutil.h"

static char dir[64];

static void dir_make(void) {
  snprintf(dir, sizeof dir, "/tmp/weft-unix-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void dir_remove(void) {
  ck_assert_int_eq(rmdir(dir), 0); /* empty: every socket file was removed */
}

static weft_endpoint *parse(const char *desc, weft_endpoint_role role) {
  weft_endpoint *ep;
  char err[256];
  int rc = weft_endpoint_parse(desc, role, &ep, err, sizeof err);
  ck_assert_msg(rc == 0, "%s: %s", desc, err);
  return ep;
}

static weft_listener *listen_desc(weft_reactor *r, tu_factory *f, const char *desc) {
  weft_endpoint *ep = parse(desc, WEFT_ENDPOINT_SERVER);
  weft_listener *l;
  int rc = weft_endpoint_listen(r, ep, &f->base, &l);
  weft_endpoint_free(ep);
  ck_assert_msg(rc == 0, "listen %s: %s", desc, weft_strerror(rc));
  return l;
}

static int listen_rc(weft_reactor *r, tu_factory *f, const char *desc) {
  weft_endpoint *ep = parse(desc, WEFT_ENDPOINT_SERVER);
  weft_listener *l;
  int rc = weft_endpoint_listen(r, ep, &f->base, &l);
  weft_endpoint_free(ep);
  return rc;
}

static void connect_desc(weft_reactor *r, tu_factory *f, const char *desc) {
  weft_endpoint *ep = parse(desc, WEFT_ENDPOINT_CLIENT);
  int rc = weft_endpoint_connect(r, ep, &f->base, NULL);
  weft_endpoint_free(ep);
  ck_assert_msg(rc == 0, "connect %s: %s", desc, weft_strerror(rc));
}

static void fmt_peer(weft_transport *t, char *out, size_t size, int host) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss); /* a sockaddr_un is formatted up to its first NUL */
  socklen_t len = sizeof ss;
  ck_assert_int_eq(host ? weft_transport_host_address(t, (struct sockaddr *)&ss, &len)
                        : weft_transport_peer_address(t, (struct sockaddr *)&ss, &len),
                   0);
  weft_address_format((struct sockaddr *)&ss, out, size);
}

/* Echo over a socket file, mode 0600; the peer's credentials; addresses; the file goes on
 * stop. */
START_TEST(plain_socket_file) {
  dir_make();
  char path[128], desc[256];
  snprintf(path, sizeof path, "%s/s.sock", dir);
  weft_reactor *r = tu_reactor_new();
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  sf.conn_config.echo = 1;
  snprintf(desc, sizeof desc, "unix:%s:mode=0600", path);
  weft_listener *l = listen_desc(r, &sf, desc);
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert(S_ISSOCK(st.st_mode));
  ck_assert_int_eq(st.st_mode & 07777, 0600);
  ck_assert_int_eq(weft_listener_port(l), -1);
  snprintf(desc, sizeof desc, "unix:path=%s", path);
  connect_desc(r, &cf, desc);
  tu_conn *s = tu_wait_conn(r, &sf, 0, 5), *c = tu_wait_conn(r, &cf, 0, 5);
  tu_wait_int(r, &c->made, 1, 5);
  tu_conn_write_str(c, "over unix");
  tu_wait_size(r, &c->rx_total, 9, 5);
  ck_assert(tu_conn_rx_equals(c, "over unix", 9));
  char a[160], want[160];
  fmt_peer(s->transport, a, sizeof a, 0);
  ck_assert_str_eq(a, "unix:"); /* the client's socket has no name */
  fmt_peer(s->transport, a, sizeof a, 1);
  snprintf(want, sizeof want, "unix:%s", path);
  ck_assert_str_eq(a, want);
  fmt_peer(c->transport, a, sizeof a, 0);
  ck_assert_str_eq(a, want);
  ck_assert_int_eq(s->peer.ss_family, AF_UNIX); /* build_protocol's peer */
  pid_t pid = 0;
  uid_t uid = (uid_t)-1;
  gid_t gid = (gid_t)-1;
  ck_assert_int_eq(weft_transport_peer_credentials(s->transport, &pid, &uid, &gid), 0);
  ck_assert_int_eq(pid, getpid());
  ck_assert_int_eq(uid, getuid());
  ck_assert_int_eq(gid, getgid());
  ck_assert_int_eq(weft_transport_peer_credentials(c->transport, &pid, NULL, NULL), 0);
  ck_assert_int_eq(pid, getpid());
  ck_assert_int_eq(weft_transport_peer_credentials(NULL, &pid, NULL, NULL), WEFT_EINVAL);
  weft_listener_stop(l);
  ck_assert_int_eq(stat(path, &st), -1); /* removed on stop */
  weft_reactor_free(r);
  tu_factory_check(&sf);
  tu_factory_check(&cf);
  tu_factory_cleanup(&sf);
  tu_factory_cleanup(&cf);
  dir_remove();
}
END_TEST

/* A TCP connection has no peer credentials. */
START_TEST(credentials_tcp) {
  weft_reactor *r = tu_reactor_new();
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  int port;
  tu_listen_tcp_local(r, &sf, &port);
  tu_connect_tcp_local(r, &cf, port);
  tu_conn *s = tu_wait_conn(r, &sf, 0, 5);
  pid_t pid;
  ck_assert_int_eq(weft_transport_peer_credentials(s->transport, &pid, NULL, NULL), WEFT_ENOTSUP);
  weft_reactor_free(r);
  tu_factory_cleanup(&sf);
  tu_factory_cleanup(&cf);
}
END_TEST

/* TLS over a socket file, ALPN included; the client checks "localhost" by default. */
START_TEST(tls_socket_file) {
  dir_make();
  tu_pki pki;
  tu_pki_init(&pki);
  char *key = tu_write_key_pem(pki.server_key), *cert = tu_write_cert_pem(pki.server_cert),
       *ca = tu_write_cert_pem(pki.ca_cert);
  char path[128], desc[1024];
  snprintf(path, sizeof path, "%s/tls.sock", dir);
  weft_reactor *r = tu_reactor_new();
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  sf.conn_config.echo = 1;
  /* ALPN over a Unix socket too, where the build has it (configure --disable-alpn: none) */
  int alpn = (weft_protocol_negotiation_mechanisms() & WEFT_MECH_ALPN) != 0;
  snprintf(desc, sizeof desc, "unix:%s:privateKey=%s:certKey=%s%s", path, key, cert,
           alpn ? ":alpn=h2,http/1.1" : "");
  listen_desc(r, &sf, desc);
  snprintf(desc, sizeof desc, "unix:path=%s:tls=yes:trustRoots=%s%s", path, ca,
           alpn ? ":alpn=http/1.1" : "");
  connect_desc(r, &cf, desc);
  tu_conn *c = tu_wait_conn(r, &cf, 0, 5);
  ck_assert(weft_transport_is_tls(c->transport));
  if (alpn) {
    ck_assert(c->proto_made.present);
    ck_assert_str_eq(c->proto_made.name, "http/1.1");
  }
  tu_conn_write_str(c, "tls over unix");
  tu_wait_size(r, &c->rx_total, 13, 5);
  ck_assert(tu_conn_rx_equals(c, "tls over unix", 13));
  /* a wrong server name fails verification: the name is really checked */
  snprintf(desc, sizeof desc, "unix:path=%s:tls=yes:trustRoots=%s:serverName=wrong.example", path,
           ca);
  connect_desc(r, &cf, desc);
  tu_wait_int(r, &cf.failed, 1, 5);
  ck_assert_int_eq(cf.last_failed.code, WEFT_EHOSTNAME);
  weft_reactor_free(r);
  tu_factory_check(&sf);
  tu_factory_check(&cf);
  tu_factory_cleanup(&sf);
  tu_factory_cleanup(&cf);
  tu_remove_file(key);
  tu_remove_file(cert);
  tu_remove_file(ca);
  tu_pki_free(&pki);
  dir_remove();
}
END_TEST

/* A stale socket file is replaced; a live one, or a file that is not a socket, is not. */
START_TEST(stale_and_live_files) {
  dir_make();
  char path[128], desc[256], other[128];
  snprintf(path, sizeof path, "%s/s.sock", dir);
  snprintf(other, sizeof other, "%s/plain-file", dir);
  /* stale: bound, then closed without unlink */
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  ck_assert_uint_lt(strlen(path), sizeof un.sun_path);
  memcpy(un.sun_path, path, strlen(path) + 1);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&un, sizeof un), 0);
  close(fd);
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  weft_reactor *r = tu_reactor_new();
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  snprintf(desc, sizeof desc, "unix:%s", path);
  weft_listener *l = listen_desc(r, &sf, desc);
  /* live: a second listener is refused, the first keeps serving */
  ck_assert_int_eq(listen_rc(r, &sf, desc), WEFT_EADDRINUSE);
  snprintf(desc, sizeof desc, "unix:path=%s", path);
  connect_desc(r, &cf, desc);
  tu_wait_conn(r, &sf, 0, 5);
  /* not a socket: left alone */
  int f = open(other, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ck_assert_int_ge(f, 0);
  close(f);
  snprintf(desc, sizeof desc, "unix:%s", other);
  ck_assert_int_eq(listen_rc(r, &sf, desc), WEFT_EADDRINUSE);
  ck_assert_int_eq(stat(other, &st), 0);
  ck_assert(S_ISREG(st.st_mode));
  unlink(other);
  /* a successor's file is not removed by a listener that stops later */
  ck_assert_int_eq(unlink(path), 0);
  snprintf(desc, sizeof desc, "unix:%s", path);
  weft_listener *l2 = listen_desc(r, &sf, desc);
  weft_listener_stop(l);
  ck_assert_int_eq(stat(path, &st), 0);
  snprintf(desc, sizeof desc, "unix:path=%s", path);
  connect_desc(r, &cf, desc);
  tu_wait_conn(r, &sf, 1, 5);
  weft_listener_stop(l2);
  ck_assert_int_eq(stat(path, &st), -1);
  /* too long a path */
  char longp[300];
  memset(longp, 'a', sizeof longp - 1);
  longp[sizeof longp - 1] = '\0';
  weft_endpoint *ep;
  ck_assert_int_eq(weft_endpoint_new(WEFT_ENDPOINT_SERVER, &ep), 0);
  ck_assert_int_eq(weft_endpoint_set_unix_path(ep, longp), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_unix_path(ep, ""), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_unix_mode(ep, 010000), WEFT_EINVAL);
  weft_endpoint_free(ep);
  char err[256];
  ck_assert_int_eq(
      weft_endpoint_parse("unix:/tmp/x:mode=999", WEFT_ENDPOINT_SERVER, &ep, err, sizeof err),
      WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "mode:"));
  weft_reactor_free(r);
  tu_factory_check(&sf);
  tu_factory_check(&cf);
  tu_factory_cleanup(&sf);
  tu_factory_cleanup(&cf);
  dir_remove();
}
END_TEST

START_TEST(abstract_name) {
#ifdef __linux__
  char name[64], desc[128];
  snprintf(name, sizeof name, "@weft-check-unix-%d", (int)getpid());
  weft_reactor *r = tu_reactor_new();
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  sf.conn_config.echo = 1;
  snprintf(desc, sizeof desc, "unix:%s", name);
  weft_listener *l = listen_desc(r, &sf, desc);
  ck_assert_int_eq(listen_rc(r, &sf, desc), WEFT_EADDRINUSE);
  snprintf(desc, sizeof desc, "unix:path=%s", name);
  connect_desc(r, &cf, desc);
  tu_conn *s = tu_wait_conn(r, &sf, 0, 5), *c = tu_wait_conn(r, &cf, 0, 5);
  tu_wait_int(r, &c->made, 1, 5);
  char a[160], want[160];
  fmt_peer(s->transport, a, sizeof a, 1);
  snprintf(want, sizeof want, "unix:%s", name);
  ck_assert_str_eq(a, want);
  tu_conn_write_str(c, "abstract");
  tu_wait_size(r, &c->rx_total, 8, 5);
  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_check(&sf);
  tu_factory_cleanup(&sf);
  tu_factory_cleanup(&cf);
#endif
}
END_TEST

/* A client connecting to a path where nobody listens fails from the loop. */
START_TEST(connect_refused) {
  dir_make();
  char desc[256];
  snprintf(desc, sizeof desc, "unix:path=%s/nobody.sock", dir);
  weft_reactor *r = tu_reactor_new();
  tu_factory cf;
  tu_factory_init(&cf);
  connect_desc(r, &cf, desc);
  ck_assert_int_eq(cf.failed, 0); /* not from inside the call */
  tu_wait_int(r, &cf.failed, 1, 5);
  ck_assert_int_eq(cf.last_failed.code, WEFT_ESOCKET);
  ck_assert_ptr_nonnull(strstr(cf.last_failed.message, "No such file"));
  /* a stale socket file: refused */
  char path[128];
  snprintf(path, sizeof path, "%s/stale.sock", dir);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  ck_assert_uint_lt(strlen(path), sizeof un.sun_path);
  memcpy(un.sun_path, path, strlen(path) + 1);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&un, sizeof un), 0);
  close(fd);
  snprintf(desc, sizeof desc, "unix:path=%s", path);
  connect_desc(r, &cf, desc);
  tu_wait_int(r, &cf.failed, 2, 5);
  ck_assert_int_eq(cf.last_failed.code, WEFT_ECONNREFUSED);
  unlink(path);
  weft_reactor_free(r);
  tu_factory_cleanup(&cf);
  dir_remove();
}
END_TEST

/* haproxy: over a Unix socket (a balancer next to the server). */
START_TEST(proxy_over_unix) {
  dir_make();
  char path[128], desc[256];
  snprintf(path, sizeof path, "%s/p.sock", dir);
  weft_reactor *r = tu_reactor_new();
  tu_factory sf;
  tu_factory_init(&sf);
  snprintf(desc, sizeof desc, "haproxy:unix:%s", path);
  listen_desc(r, &sf, desc);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  ck_assert_uint_lt(strlen(path), sizeof un.sun_path);
  memcpy(un.sun_path, path, strlen(path) + 1);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&un, sizeof un), 0);
  const char *h = "PROXY TCP4 192.0.2.44 192.0.2.1 4444 443\r\nhi";
  ck_assert_int_eq(send(fd, h, strlen(h), 0), (ssize_t)strlen(h));
  tu_conn *s = tu_wait_conn(r, &sf, 0, 5);
  char a[80];
  weft_address_format((struct sockaddr *)&s->peer, a, sizeof a);
  ck_assert_str_eq(a, "192.0.2.44:4444");
  tu_wait_size(r, &s->rx_total, 2, 5);
  ck_assert(tu_conn_rx_equals(s, "hi", 2));
  close(fd);
  weft_reactor_free(r);
  tu_factory_check(&sf);
  tu_factory_cleanup(&sf);
  dir_remove();
}
END_TEST

static Suite *unix_suite(void) {
  Suite *s = suite_create("unix");
  TCase *tc = tcase_create("unix");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, plain_socket_file);
  tcase_add_test(tc, credentials_tcp);
  tcase_add_test(tc, tls_socket_file);
  tcase_add_test(tc, stale_and_live_files);
  tcase_add_test(tc, abstract_name);
  tcase_add_test(tc, connect_refused);
  tcase_add_test(tc, proxy_over_unix);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(unix_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
