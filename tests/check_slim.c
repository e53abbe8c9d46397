/* tests/check_slim.c: what the transport gave up to hold less memory per connection (issue #17,
 * S4) must cost no behaviour:
 *  - addresses: IPv4/IPv6 kept inline, Unix socket paths in a block of their own (made only
 *    then; without memory for it the connection fails with WEFT_ENOMEM, nothing leaks);
 *  - the reason a connection ended: its message allocated at the end; without memory for it,
 *    connection_lost still gets the right code (and TLS fields) with weft_strerror(code);
 *  - one reactor-wide queue instead of a connection's own events: a resume and a finish both
 *    pending, pending work when the reactor is freed;
 *  - the handshake/close timer freed after the handshake: the close time-out still bounds a
 *    close after it, and without memory for a new timer the close ends at once.
 * libevent's allocator is hooked in main (before libevent allocates anything) so that a test
 * can fail the allocation of one struct event. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "peerutil.h"
#include "testutil.h"
#include "tlsutil.h"

/* --- allocators that fail on demand ----------------------------------------------------- */

/* weft's: while FAIL_SIZE is set, every allocation of exactly that many bytes made by the
 * test's own thread fails (counted); FAIL_ONCE: only the first. Peer threads (peerutil.c) also
 * allocate through weft (weft_reactor_call_from_thread): they never fail, and never touch
 * these counters. */
static size_t fail_size;
static int fail_once, fails;
static _Thread_local int test_thread; /* set by arm(): 1 in the thread that armed */

static int w_should_fail(size_t size) {
  if (!test_thread)
    return 0;
  if (fail_size && size == fail_size) {
    fails++;
    if (fail_once)
      fail_size = 0;
    return 1;
  }
  return 0;
}
static void *w_malloc(size_t size, void *u) {
  (void)u;
  return w_should_fail(size) ? NULL : malloc(size);
}
static void w_free(void *ptr, void *u) {
  (void)u;
  free(ptr);
}
static void *w_calloc(size_t count, size_t size, void *u) {
  (void)u;
  return w_should_fail(count * size) ? NULL : calloc(count, size);
}
static void *w_realloc(void *ptr, size_t size, void *u) {
  (void)u;
  return w_should_fail(size) ? NULL : realloc(ptr, size);
}
static const weft_allocator failing = {0, w_malloc, w_free, w_calloc, w_realloc, NULL};

static void arm(size_t size, int once) {
  test_thread = 1;
  fails = 0;
  fail_once = once;
  fail_size = size;
}

/* libevent's: while EV_FAIL_EVENTS is set, the allocation of a struct event fails (counted). */
static int ev_fail_events, ev_fails;
static void *ev_malloc(size_t size) {
  if (test_thread && ev_fail_events && size == event_get_struct_event_size()) {
    ev_fails++;
    return NULL;
  }
  return malloc(size);
}
static void *ev_realloc(void *ptr, size_t size) {
  return realloc(ptr, size);
}
static void ev_free(void *ptr) {
  free(ptr);
}

static tu_pki pki;

static void setup(void) {
  tu_pki_init(&pki);
}

static void teardown(void) {
  tu_pki_free(&pki);
}

/* The end of a test's connections: checks the factories SF and CF (CF may be NULL) for
 * lifecycle violations (reported at the caller's line) and frees their records. */
#define factories_done(sf, cf) factories_done_at(__FILE__, __LINE__, (sf), (cf))
static void factories_done_at(const char *file, int line, tu_factory *sf, tu_factory *cf) {
  tu_factory_check_at(file, line, sf);
  if (cf)
    tu_factory_check_at(file, line, cf);
  tu_factory_cleanup(sf);
  if (cf)
    tu_factory_cleanup(cf);
}

/* Stops listener L, frees reactor R (every connection then ends), then factories_done. */
#define finish(r, l, sf, cf) finish_at(__FILE__, __LINE__, (r), (l), (sf), (cf))
static void finish_at(const char *file, int line, weft_reactor *r, weft_listener *l, tu_factory *sf,
                      tu_factory *cf) {
  weft_listener_stop(l);
  weft_reactor_free(r);
  factories_done_at(file, line, sf, cf);
}

/* Starts P: a TLS 1.3 client (peerutil) of 127.0.0.1:PORT trusting the test CA, which reads
 * nothing until peer_go. */
static void start_idle_peer(peer *p, weft_reactor *r, int port) {
  memset(p, 0, sizeof *p);
  p->reactor = r;
  p->port = port;
  p->tls_version = TLS1_3_VERSION;
  p->ca = pki.ca_cert;
  p->wait_go = 1;
  peer_start(p);
}

/* --- addresses ---------------------------------------------------------------------------- */

static void get_addr(weft_transport *t, int host, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  *len = sizeof *ss;
  int rc = host ? weft_transport_host_address(t, (struct sockaddr *)ss, len)
                : weft_transport_peer_address(t, (struct sockaddr *)ss, len);
  ck_assert_int_eq(rc, 0);
}

/* The endpoint of the Unix socket PATH: a server's ("unix:PATH") or a client's ("unix:path=PATH"). */
static weft_endpoint *unix_endpoint(const char *path, int client) {
  char desc[256], err[256];
  snprintf(desc, sizeof desc, client ? "unix:path=%s" : "unix:%s", path);
  weft_endpoint *ep;
  ck_assert_int_eq(weft_endpoint_parse(desc, client ? WEFT_ENDPOINT_CLIENT : WEFT_ENDPOINT_SERVER,
                                       &ep, err, sizeof err),
                   0);
  return ep;
}

/* A listener on the Unix socket PATH for F. */
static weft_listener *unix_listen(weft_reactor *r, const char *path, tu_factory *f) {
  weft_endpoint *ep = unix_endpoint(path, 0);
  weft_listener *l;
  ck_assert_int_eq(weft_endpoint_listen(r, ep, &f->base, &l), 0);
  weft_endpoint_free(ep);
  return l;
}

/* A Unix socket path as long as sun_path takes (107 bytes and its NUL): the server's host
 * address and the client's peer address are the whole path, with their exact lengths; the
 * server's peer (the client's unnamed socket) is AF_UNIX with no path. */
START_TEST(unix_long_path) {
  char dir[] = "/tmp/weft-slim-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char path[sizeof((struct sockaddr_un *)0)->sun_path];
  size_t n = (size_t)snprintf(path, sizeof path, "%s/", dir);
  memset(path + n, 'p', sizeof path - 1 - n - 5);
  memcpy(path + sizeof path - 6, ".sock", 6);
  ck_assert_uint_eq(strlen(path), sizeof path - 1);

  weft_reactor *r = tu_reactor_new();
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  sf.conn_config.echo = 1;
  weft_listener *l = unix_listen(r, path, &sf);
  weft_endpoint *ep = unix_endpoint(path, 1);
  ck_assert_int_eq(weft_endpoint_connect(r, ep, &cf.base, NULL), 0);
  weft_endpoint_free(ep);
  tu_conn *s = tu_wait_conn(r, &sf, 0, 5), *c = tu_wait_conn(r, &cf, 0, 5);
  tu_wait_int(r, &c->made, 1, 5);

  socklen_t full = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
  struct sockaddr_storage ss;
  socklen_t len;
  get_addr(s->transport, 1, &ss, &len);
  ck_assert_int_eq(ss.ss_family, AF_UNIX);
  ck_assert_int_eq(len, full);
  ck_assert_str_eq(((struct sockaddr_un *)&ss)->sun_path, path);
  get_addr(c->transport, 0, &ss, &len);
  ck_assert_int_eq(ss.ss_family, AF_UNIX);
  ck_assert_int_eq(len, full);
  ck_assert_str_eq(((struct sockaddr_un *)&ss)->sun_path, path);
  get_addr(s->transport, 0, &ss, &len);
  ck_assert_int_eq(ss.ss_family, AF_UNIX);
  ck_assert_int_eq(len, offsetof(struct sockaddr_un, sun_path)); /* unnamed */
  ck_assert_int_eq(s->peer.ss_family, AF_UNIX);                  /* build_protocol's */
  /* Too small a buffer is refused, as before. */
  len = full - 1;
  ck_assert_int_eq(weft_transport_host_address(s->transport, (struct sockaddr *)&ss, &len),
                   WEFT_EINVAL);
  pid_t pid = 0;
  ck_assert_int_eq(weft_transport_peer_credentials(s->transport, &pid, NULL, NULL), 0);
  ck_assert_int_eq(pid, getpid());

  tu_conn_write_str(c, "long path");
  tu_wait_size(r, &c->rx_total, 9, 5);
  finish(r, l, &sf, &cf);
  ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* Both ends unnamed (a socket pair): kept inline, still AF_UNIX, credentials work. */
START_TEST(unix_socketpair) {
  weft_reactor *r = tu_reactor_new();
  tu_factory f;
  tu_factory_init(&f);
  weft_testing_transport *tt;
  ck_assert_int_eq(weft_testing_transport_new(r, &f.base, &tt), 0);
  weft_transport *t = weft_testing_transport_get(tt);
  ck_assert_ptr_nonnull(t);
  struct sockaddr_storage ss;
  socklen_t len;
  for (int host = 0; host <= 1; host++) {
    get_addr(t, host, &ss, &len);
    ck_assert_int_eq(ss.ss_family, AF_UNIX);
    ck_assert_int_eq(len, offsetof(struct sockaddr_un, sun_path));
  }
  pid_t pid = 0;
  ck_assert_int_eq(weft_transport_peer_credentials(t, &pid, NULL, NULL), 0);
  ck_assert_int_eq(pid, getpid());
  weft_testing_transport_free(tt);
  weft_reactor_free(r);
  factories_done(&f, NULL);
}
END_TEST

/* The host address of an IP connection is read on first use (no getsockname(2) per
 * connection): asked for the first time in connection_lost, after the peer reset the
 * connection, it is still the address the peer connected to. TCP and TLS (_i). */
typedef struct {
  int rc;
  struct sockaddr_storage ss;
  socklen_t len;
} host_seen;

static void host_on_lost(tu_conn *c, weft_transport *t, const weft_reason *reason) {
  (void)reason;
  host_seen *h = c->user;
  h->len = sizeof h->ss;
  h->rc = weft_transport_host_address(t, (struct sockaddr *)&h->ss, &h->len);
}

START_TEST(host_read_late) {
  int tls = _i;
  weft_reactor *r = tu_reactor_new();
  tu_factory sf;
  tu_factory_init(&sf);
  sf.conn_config.on_lost = host_on_lost;
  weft_cert_options *opts = tls ? tu_server_options(&pki) : NULL;
  int port = 0;
  weft_listener *l =
      tls ? tu_listen_ssl_local(r, &sf, opts, &port) : tu_listen_tcp_local(r, &sf, &port);
  host_seen seen = {.rc = -12345};
  int fd = tu_raw_connect("127.0.0.1", port);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_storage want;
  socklen_t want_len = sizeof want;
  ck_assert_int_eq(getpeername(fd, (struct sockaddr *)&want, &want_len), 0);
  tu_conn *s = NULL;
  if (tls) {
    /* No handshake: the connection ends in handshake_failed, not connection_lost. Use a
     * client. */
    close(fd);
    tu_factory cf;
    tu_factory_init(&cf);
    weft_cert_options *co = tu_client_options(&pki);
    tu_connect_ssl_local(r, &cf, port, co, "localhost");
    s = tu_wait_conn(r, &sf, 0, 5);
    s->user = &seen;
    tu_conn *c = tu_wait_conn(r, &cf, 0, 5);
    tu_wait_int(r, &c->made, 1, 5);
    tu_wait_int(r, &s->made, 1, 5);
    want_len = sizeof want;
    ck_assert_int_eq(weft_transport_peer_address(c->transport, (struct sockaddr *)&want,
                                                 &want_len), 0);
    ck_assert_int_eq(weft_transport_abort_connection(c->transport), 0);
    tu_wait_int(r, &s->lost, 1, 5);
    tu_wait_int(r, &c->lost, 1, 5);
    factories_done(&cf, NULL);
    weft_cert_options_unref(co);
  } else {
    s = tu_wait_conn(r, &sf, 0, 5);
    s->user = &seen;
    tu_wait_int(r, &s->made, 1, 5);
    tu_raw_reset(fd); /* RST: the server's connection_lost reads its host address first */
    tu_wait_int(r, &s->lost, 1, 5);
  }
  ck_assert_int_eq(seen.rc, 0);
  ck_assert_int_eq(seen.len, want_len);
  ck_assert_mem_eq(&seen.ss, &want, want_len);
  finish(r, l, &sf, NULL);
  if (opts)
    weft_cert_options_unref(opts);
}
END_TEST

/* IPv6 (the largest inline address, all 28 bytes of a sockaddr_in6) and IPv4. */
static void check_ip(const char *ip, int family) {
  weft_reactor *r = tu_reactor_new();
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  weft_listener *l;
  ck_assert_int_eq(tu_listen(r, ip, 0, &sf.base, NULL, 0, 0, &l), 0);
  int port = weft_listener_port(l);
  ck_assert_int_eq(tu_connect(r, ip, port, &cf.base, NULL, NULL, 10, NULL, NULL), 0);
  tu_conn *s = tu_wait_conn(r, &sf, 0, 5), *c = tu_wait_conn(r, &cf, 0, 5);
  tu_wait_int(r, &c->made, 1, 5);
  struct sockaddr_storage sh, sp, ch, cp;
  socklen_t shl, spl, chl, cpl;
  get_addr(s->transport, 1, &sh, &shl);
  get_addr(s->transport, 0, &sp, &spl);
  get_addr(c->transport, 1, &ch, &chl);
  get_addr(c->transport, 0, &cp, &cpl);
  socklen_t want = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  ck_assert_int_eq(shl, want);
  ck_assert_int_eq(spl, want);
  ck_assert_int_eq(sh.ss_family, family);
  ck_assert_int_eq(sp.ss_family, family);
  /* Each side's host is the other's peer, byte for byte (ports included). */
  ck_assert_int_eq(chl, spl);
  ck_assert_int_eq(cpl, shl);
  ck_assert_mem_eq(&ch, &sp, spl);
  ck_assert_mem_eq(&cp, &sh, shl);
  char a[80], b[80];
  weft_address_format((struct sockaddr *)&sp, a, sizeof a);
  weft_address_format((struct sockaddr *)&s->peer, b, sizeof b);
  ck_assert_str_eq(a, b); /* build_protocol's peer is the same address */
  finish(r, l, &sf, &cf);
}

START_TEST(ip_addresses) {
  check_ip("127.0.0.1", AF_INET);
  if (tu_ipv6_available())
    check_ip("::1", AF_INET6);
  else
    printf("check_slim: no IPv6 loopback, IPv6 addresses not checked\n");
}
END_TEST

/* No memory for the block that holds a Unix path: the accepted connection fails with
 * WEFT_ENOMEM (handshake_failed), the client's as well (connection_failed), nothing leaks. */
START_TEST(unix_wide_enomem) {
  ck_assert_int_eq(weft_set_allocator(&failing), 0);
  char dir[] = "/tmp/weft-slim-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char path[128];
  snprintf(path, sizeof path, "%s/s.sock", dir);
  int fds = tu_count_fds();
  weft_reactor *r = tu_reactor_new();
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  weft_listener *l = unix_listen(r, path, &sf);
  weft_endpoint *ep = unix_endpoint(path, 1);
  arm(2 * sizeof(struct sockaddr_storage), 0);
  ck_assert_int_eq(weft_endpoint_connect(r, ep, &cf.base, NULL), 0);
  weft_endpoint_free(ep);
  tu_wait_int(r, &sf.handshake_failed, 1, 5);
  tu_wait_int(r, &cf.failed, 1, 5);
  fail_size = 0;
  ck_assert_int_eq(fails, 2);
  ck_assert_int_eq(sf.last_handshake_failed.code, WEFT_ENOMEM);
  ck_assert_int_eq(cf.last_failed.code, WEFT_ENOMEM);
  ck_assert_int_eq(sf.built + cf.built, 0);
  finish(r, l, &sf, &cf);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);
  ck_assert_int_eq(tu_count_fds(), fds);
  ck_assert_int_eq(weft_set_allocator(NULL), 0);
  ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* --- the reason's message, allocated at the end ------------------------------------------- */

/* One server connection that ends: over TCP when its client closes its socket (WEFT_OK, "closed
 * by the peer"), over TLS at its idle time-out (WEFT_EIDLE; close_notify sent first). With REF,
 * the allocation of exactly REF's message length fails once. Copies connection_lost's reason. */
static void one_end(int tls, const tu_reason *ref, tu_reason *out) {
  weft_reactor *r = tu_reactor_new();
  tu_factory sf;
  tu_factory_init(&sf);
  weft_cert_options *opts = tls ? tu_server_options(&pki) : NULL;
  int port;
  weft_listener *l =
      tls ? tu_listen_ssl_local(r, &sf, opts, &port) : tu_listen_tcp_local(r, &sf, &port);
  peer p;
  int fd = -1;
  if (tls) {
    start_idle_peer(&p, r, port);
  } else {
    fd = tu_raw_connect("127.0.0.1", port);
    ck_assert_int_ge(fd, 0);
  }
  tu_conn *s = tu_wait_conn(r, &sf, 0, 5);
  tu_wait_int(r, &s->made, 1, 5);
  if (ref)
    arm(strlen(ref->message) + 1, 1);
  if (tls)
    ck_assert_int_eq(weft_transport_set_idle_timeout(s->transport, 0.05), 0);
  else
    close(fd);
  tu_wait_int(r, &s->lost, 1, 10);
  fail_size = 0;
  *out = s->lost_reason;
  if (tls) {
    peer_go(&p);
    peer_join(&p, r, 10);
  }
  finish(r, l, &sf, NULL);
  if (opts)
    weft_cert_options_unref(opts);
}

static void check_reason_fallback(int tls) {
  ck_assert_int_eq(weft_set_allocator(&failing), 0);
  tu_reason ref, got;
  one_end(tls, NULL, &ref);
  ck_assert(ref.set);
  ck_assert_str_ne(ref.message, weft_strerror(ref.code)); /* the fallback can be told apart */
  one_end(tls, &ref, &got);
  ck_assert_int_eq(fails, 1); /* the message's allocation was the one failed */
  ck_assert(got.set);
  ck_assert_int_eq(got.code, ref.code);
  ck_assert_str_eq(got.message, weft_strerror(ref.code));
  ck_assert_int_eq(got.tls_alert, ref.tls_alert);
  ck_assert_int_eq(got.alert_sent, ref.alert_sent);
  ck_assert_int_eq(got.verify_result, ref.verify_result);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);
  ck_assert_int_eq(weft_set_allocator(NULL), 0);
}

START_TEST(reason_fallback_tcp) {
  check_reason_fallback(0);
}
END_TEST

START_TEST(reason_fallback_tls) {
  check_reason_fallback(1);
}
END_TEST

/* --- work from the loop ------------------------------------------------------------------- */

/* The client writes three records at once; the server's read-ahead takes them in one read, so
 * a resume is due after the first data_received. In that data_received the server pauses and
 * resumes (a resume queued) and then ENDS the connection (a finish queued while the resume is
 * too): the end supersedes the resume, connection_lost comes once from the loop, and no
 * data_received follows. */
static int end_how;         /* 0: abort_connection, 1: lose_connection */
static int calls_after_end; /* data_received after the end was asked for */
static int ended;

static void on_data_end(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  (void)c, (void)data, (void)len;
  if (ended) {
    calls_after_end++;
    return;
  }
  ck_assert_int_eq(weft_transport_pause_reading(t), 0);
  ck_assert_int_eq(weft_transport_resume_reading(t), 0);
  ended = 1;
  ck_assert_int_eq(end_how ? weft_transport_lose_connection(t) : weft_transport_abort_connection(t),
                   0);
  ck_assert_int_eq(c->lost, 0); /* never inside the weft call */
  /* Once closed, resuming is refused and queues nothing. */
  if (!end_how)
    ck_assert_int_eq(weft_transport_resume_reading(t), WEFT_ECLOSED);
}

static void on_client_made(tu_conn *c, weft_transport *t) {
  (void)c;
  ck_assert_int_eq(weft_transport_write(t, "one", 3), 0);
  ck_assert_int_eq(weft_transport_write(t, "two", 3), 0);
  ck_assert_int_eq(weft_transport_write(t, "three", 5), 0);
}

static void resume_and_finish(int how) {
  end_how = how;
  calls_after_end = 0;
  ended = 0;
  weft_reactor *r = tu_reactor_new();
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  sf.conn_config.on_data = on_data_end;
  cf.conn_config.on_made = on_client_made;
  weft_cert_options *so = tu_server_options(&pki), *co = tu_client_options(&pki);
  int port;
  weft_listener *l = tu_listen_ssl_local(r, &sf, so, &port);
  tu_connect_ssl_local(r, &cf, port, co, "localhost");
  tu_conn *s = tu_wait_conn(r, &sf, 0, 5), *c = tu_wait_conn(r, &cf, 0, 5);
  tu_wait_int(r, &s->lost, 1, 5);
  tu_wait_int(r, &c->lost, 1, 5);
  tu_settle(r, 0.1);
  ck_assert_int_eq(s->lost, 1);
  ck_assert_int_eq(s->data_calls, 1);
  ck_assert_int_eq(calls_after_end, 0);
  ck_assert_int_eq(s->lost_reason.code, how ? WEFT_OK : WEFT_EABORTED);
  finish(r, l, &sf, &cf);
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
}

START_TEST(resume_and_abort) {
  resume_and_finish(0);
}
END_TEST

START_TEST(resume_and_lose) {
  resume_and_finish(1);
}
END_TEST

/* Work still queued when the reactor is freed (a resume, or an end): connection_lost runs
 * exactly once, from weft_reactor_free, and nothing runs on a freed transport afterwards (the
 * sanitizer build and valgrind watch that). */
static void on_data_pause(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  (void)c, (void)data, (void)len;
  weft_transport_pause_reading(t);
}

static void pending_at_free(int what) {
  weft_reactor *r = tu_reactor_new();
  tu_factory sf, cf;
  tu_factory_init(&sf);
  tu_factory_init(&cf);
  sf.conn_config.on_data = on_data_pause;
  cf.conn_config.greeting = "hello";
  cf.conn_config.greeting_len = 5;
  int port;
  weft_listener *l = tu_listen_tcp_local(r, &sf, &port);
  tu_connect_tcp_local(r, &cf, port);
  tu_conn *s = tu_wait_conn(r, &sf, 0, 5);
  tu_wait_int(r, &s->data_calls, 1, 5);
  weft_transport *t = s->transport;
  if (what == 0) {
    ck_assert_int_eq(weft_transport_resume_reading(t), 0); /* a resume queued */
  } else if (what == 1) {
    ck_assert_int_eq(weft_transport_abort_connection(t), 0); /* an end queued */
  } else {
    ck_assert_int_eq(weft_transport_resume_reading(t), 0);
    ck_assert_int_eq(weft_transport_abort_connection(t), 0); /* both */
  }
  ck_assert_int_eq(s->lost, 0);
  weft_listener_stop(l);
  weft_reactor_free(r);
  ck_assert_int_eq(s->lost, 1);
  ck_assert_int_eq(s->lost_reason.code, what == 0 ? WEFT_ESHUTDOWN : WEFT_EABORTED);
  factories_done(&sf, &cf);
}

START_TEST(resume_pending_at_free) {
  pending_at_free(0);
}
END_TEST

START_TEST(finish_pending_at_free) {
  pending_at_free(1);
}
END_TEST

START_TEST(both_pending_at_free) {
  pending_at_free(2);
}
END_TEST

/* Many connections ending in one callback: each gets connection_lost once, from the loop. */
#define MANY 20
static tu_factory many_sf;

static void on_data_end_all(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  (void)c, (void)t, (void)data, (void)len;
  for (tu_conn *x = many_sf.conns; x; x = x->next)
    if (x->transport && !x->lost)
      weft_transport_abort_connection(x->transport);
  for (tu_conn *x = many_sf.conns; x; x = x->next)
    ck_assert_int_eq(x->lost, 0);
}

START_TEST(many_end_at_once) {
  weft_reactor *r = tu_reactor_new();
  tu_factory cf;
  tu_factory_init(&many_sf);
  tu_factory_init(&cf);
  int port;
  weft_listener *l = tu_listen_tcp_local(r, &many_sf, &port);
  for (int i = 0; i < MANY; i++)
    tu_connect_tcp_local(r, &cf, port);
  for (int i = 0; i < MANY; i++)
    tu_wait_int(r, &tu_wait_conn(r, &many_sf, i, 5)->made, 1, 5);
  many_sf.conns->cfg.on_data = on_data_end_all;
  tu_wait_int(r, &cf.made, MANY, 5);
  tu_conn_write_str(tu_factory_conn(&cf, 0), "x"); /* whichever server conn it reaches */
  for (tu_conn *x = many_sf.conns; x; x = x->next)
    x->cfg.on_data = on_data_end_all;
  tu_wait_int(r, &many_sf.lost, MANY, 5);
  tu_wait_int(r, &cf.lost, MANY, 5);
  tu_settle(r, 0.1);
  for (tu_conn *x = many_sf.conns; x; x = x->next) {
    ck_assert_int_eq(x->lost, 1);
    ck_assert_int_eq(x->lost_reason.code, WEFT_EABORTED);
  }
  finish(r, l, &many_sf, &cf);
}
END_TEST

/* --- the timer, freed after the handshake -------------------------------------------------- */

/* After the handshake (the timer freed), lose_connection makes a new one: a peer that never
 * answers close_notify is cut at the close time-out. Without memory for it (FAIL_TIMER), the
 * close ends at once instead of waiting without a bound (the close time-out is 60 s then,
 * longer than the test waits). */
static void close_timeout_after_handshake(int fail_timer) {
  weft_reactor *r = tu_reactor_new();
  tu_factory sf;
  tu_factory_init(&sf);
  weft_cert_options *so = tu_server_options(&pki);
  ck_assert_int_eq(weft_cert_options_set_close_timeout(so, fail_timer ? 60 : 0.2), 0);
  int port;
  weft_listener *l = tu_listen_ssl_local(r, &sf, so, &port);
  peer p;
  start_idle_peer(&p, r, port); /* reads nothing: close_notify stays unanswered */
  tu_conn *s = tu_wait_conn(r, &sf, 0, 5);
  tu_wait_int(r, &s->made, 1, 5);
  tu_settle(r, 0.05);
  ev_fails = 0;
  test_thread = 1;
  ev_fail_events = fail_timer;
  ck_assert_int_eq(weft_transport_lose_connection(s->transport), 0);
  ev_fail_events = 0;
  ck_assert_int_eq(ev_fails, (fail_timer ? 1 : 0));
  ck_assert_int_eq(s->lost, 0);
  tu_wait_int(r, &s->lost, 1, 10);
  ck_assert_int_eq(s->lost_reason.code, WEFT_OK);
  if (fail_timer)
    ck_assert_msg(strstr(s->lost_reason.message, "no memory") != NULL, "%s",
                  s->lost_reason.message);
  else
    ck_assert_msg(strstr(s->lost_reason.message, "did not answer close_notify") != NULL, "%s",
                  s->lost_reason.message);
  peer_go(&p);
  peer_join(&p, r, 10);
  finish(r, l, &sf, NULL);
  weft_cert_options_unref(so);
}

START_TEST(close_timeout_after_hs) {
  close_timeout_after_handshake(0);
}
END_TEST

START_TEST(close_timer_enomem) {
  close_timeout_after_handshake(1);
}
END_TEST

int main(void) {
  /* Before libevent allocates anything (it refuses a change afterwards). */
  event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
  Suite *s = suite_create("slim");
  TCase *tc = tcase_create("slim");
  tcase_set_timeout(tc, 60);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, unix_long_path);
  tcase_add_test(tc, unix_socketpair);
  tcase_add_test(tc, ip_addresses);
  tcase_add_loop_test(tc, host_read_late, 0, 2);
  tcase_add_test(tc, unix_wide_enomem);
  tcase_add_test(tc, reason_fallback_tcp);
  tcase_add_test(tc, reason_fallback_tls);
  tcase_add_test(tc, resume_and_abort);
  tcase_add_test(tc, resume_and_lose);
  tcase_add_test(tc, resume_pending_at_free);
  tcase_add_test(tc, finish_pending_at_free);
  tcase_add_test(tc, both_pending_at_free);
  tcase_add_test(tc, many_end_at_once);
  tcase_add_test(tc, close_timeout_after_hs);
  tcase_add_test(tc, close_timer_enomem);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
