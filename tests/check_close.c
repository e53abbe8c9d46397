/* tests/check_close.c: how connections end, seen from the peer.
 *
 * - lose_connection keeps flushing after the peer's FIN or close_notify: a FIN says the peer
 *   sends nothing more, not that it stops reading (TCP, TLS 1.2, TLS 1.3; the client
 *   half-closes right after its request, the server answers with 4 MiB and loses the
 *   connection at once; WEFT_OK only when every byte went out).
 * - lose_connection during a STARTTLS handshake: the handshake finishes, what was written is
 *   sent encrypted, then close_notify; a handshake that never finishes is cut after the close
 *   time-out with its own reason (not "handshake timed out").
 * - a TLS server that refuses a handshake (no client certificate) lets the client read the
 *   alert: a TLS 1.3 client that writes before it reads gets no reset.
 * - abort_connection after STARTTLS sends nothing more, not even records already encrypted:
 *   also when they wait in the socket bufferevent below the filter and the kernel has room.
 * - every STARTTLS handshake that start_tls began ends with exactly one tls_started (a failure
 *   code, the one connection_lost gets) before connection_lost, whatever ends it: the peer's
 *   EOF or reset (before, inside or after its ClientHello), no TLS from the peer, the
 *   handshake or close time-out, lose_connection, abort_connection, weft_reactor_free.
 * - write calls with lengths whose sum with pending output overflows: WEFT_EINVAL, nothing
 *   queued, release not called.
 *
 * Peers are blocking clients in a thread (tests/peerutil.h, or one below for the alert case);
 * the weft side runs the reactor until a condition holds. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "peerutil.h"
#include "testutil.h"
#include "tlsutil.h"

/* A server connection's script. */
typedef struct script {
  const uint8_t *stream;
  size_t total; /* bytes to answer with */
  weft_cert_options *starttls_opts;
  int started;
  int start_rc;
  int write_rc;
  int lose_rc;
  int lose_in_handshake;    /* STARTTLS: lose_connection right after start_tls */
  int abort_after_started;  /* STARTTLS: write TOTAL then abort in tls_started */
  int abort_in_handshake;   /* STARTTLS: abort_connection right after start_tls */
  int tls_started_in_abort; /* tls_started calls seen right after that abort returned */
} script;

static int has_line(tu_conn *c) {
  return c->rx && memchr(c->rx, '\n', c->rx_len) != NULL;
}

/* Answers the request line with the stream, then loses the connection at once. */
static void answer_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  script *s = c->factory->user;
  (void)data;
  (void)len;
  if (s->started || !has_line(c))
    return;
  s->started = 1;
  s->write_rc = weft_transport_write(t, s->stream, s->total);
  s->lose_rc = weft_transport_lose_connection(t);
}

static uint8_t *make_stream(size_t total) {
  uint8_t *b = malloc(total ? total : 1);
  ck_assert_ptr_nonnull(b);
  tu_pattern_fill(b, total, 0);
  return b;
}

static void set_sndbuf(tu_conn *c, weft_transport *t) {
  int fd = peer_fd_of(t), sz = 64 * 1024;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz) != 0)
    tu_conn_violation(c, "server socket not found");
}

/* --- item 7: flushing after the peer's FIN / close_notify ------------------------------------- */

/* _i: 0 TCP, 1 TLS 1.2, 2 TLS 1.3. */
START_TEST(test_flush_after_peer_half_close) {
  const size_t total = (size_t)4 << 20;
  tu_pki pki;
  tu_pki_init(&pki);
  weft_reactor *r = tu_reactor_new();
  weft_cert_options *so = tu_server_options(&pki);
  tu_factory f;
  tu_factory_init(&f);
  script s = {0};
  s.stream = make_stream(total);
  s.total = total;
  f.user = &s;
  f.conn_config.on_made = set_sndbuf; /* small buffers: the flush outlasts the peer's FIN */
  f.conn_config.on_data = answer_data;
  int port = 0;
  weft_listener *l =
      _i == 0 ? tu_listen_tcp_local(r, &f, &port) : tu_listen_ssl_local(r, &f, so, &port);

  peer p = {0};
  p.reactor = r;
  p.port = port;
  p.tls_version = _i == 0 ? 0 : _i == 1 ? TLS1_2_VERSION : TLS1_3_VERSION;
  p.ca = pki.ca_cert;
  p.rcvbuf = 64 * 1024;
  p.request = "GET\n";
  p.request_len = 4;
  p.half_close = 1;
  peer_start(&p);
  peer_join(&p, r, 30.0);
  tu_wait_int(r, &f.lost, 1, 10.0);
  tu_settle(r, 0.05);

  tu_conn *c = tu_factory_conn(&f, 0);
  ck_assert_ptr_nonnull(c);
  ck_assert_int_eq(s.write_rc, 0);
  ck_assert_int_eq(s.lose_rc, 0);
  ck_assert_msg(p.first_bad == (size_t)-1, "byte %zu corrupted", p.first_bad);
  ck_assert_msg(p.rx == total, "received %zu of %zu bytes (%s); server said %s: %s", p.rx, total,
                p.end_detail, weft_err_name(c->lost_reason.code), c->lost_reason.message);
  ck_assert_msg(p.end == 1, "the stream did not end cleanly: %s", p.end_detail);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  tu_factory_check(&f);

  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
  weft_cert_options_unref(so);
  free((void *)s.stream);
  tu_pki_free(&pki);
}
END_TEST

/* --- close_notify when the socket is full --------------------------------------------------- */

/* A TLS socket BIO writes with write(2) or send(2). This process's own write() and send() make
 * the next write to one chosen descriptor fail once with EAGAIN, as a full socket would: that
 * is how the close_notify of lose_connection meets a full socket on demand. Every other write
 * goes straight to the system call. */
static atomic_int write_eagain_fd = -1;

ssize_t write(int fd, const void *buf, size_t n) {
  int target = atomic_load(&write_eagain_fd);
  if (target >= 0 && fd == target &&
      atomic_compare_exchange_strong(&write_eagain_fd, &target, -1)) {
    errno = EAGAIN;
    return -1;
  }
  return syscall(SYS_write, fd, buf, n);
}

/* weft's TLS socket BIO writes with send(2) (MSG_NOSIGNAL): the same hook. */
ssize_t send(int fd, const void *buf, size_t n, int flags) {
  int target = atomic_load(&write_eagain_fd);
  if (target >= 0 && fd == target &&
      atomic_compare_exchange_strong(&write_eagain_fd, &target, -1)) {
    errno = EAGAIN;
    return -1;
  }
  return syscall(SYS_sendto, fd, buf, n, flags, NULL, 0);
}

static void lose_on_full_socket(tu_conn *c, weft_transport *t) {
  int fd = peer_fd_of(t);
  if (fd < 0) {
    tu_conn_violation(c, "server socket not found");
    return;
  }
  ck_assert_int_eq(weft_transport_pending_output(t), 0); /* so close_notify goes out now */
  atomic_store(&write_eagain_fd, fd);
  ck_assert_int_eq(weft_transport_lose_connection(t), 0);
  /* The close_notify's write met the "full socket": nothing else would ever retry it. */
  ck_assert_int_eq(atomic_load(&write_eagain_fd), -1);
}

/* _i: 0 TLS 1.2, 1 TLS 1.3. */
START_TEST(test_close_notify_on_full_socket) {
  tu_pki pki;
  tu_pki_init(&pki);
  weft_reactor *r = tu_reactor_new();
  weft_cert_options *so = tu_server_options(&pki);
  tu_check_opt(so, weft_cert_options_set_close_timeout(so, 3));
  tu_factory f;
  tu_factory_init(&f);
  f.conn_config.on_made = lose_on_full_socket;
  int port = 0;
  weft_listener *l = tu_listen_ssl_local(r, &f, so, &port);

  peer p = {0};
  p.reactor = r;
  p.port = port;
  p.tls_version = _i == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
  p.ca = pki.ca_cert;
  peer_start(&p);
  peer_join(&p, r, 30.0);
  tu_wait_int(r, &f.lost, 1, 10.0);

  tu_conn *c = tu_factory_conn(&f, 0);
  ck_assert_ptr_nonnull(c);
  ck_assert_msg(p.end == 1, "the stream did not end with close_notify: %s; server: %s",
                p.end_detail, c->lost_reason.message);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  ck_assert_msg(strstr(c->lost_reason.message, "did not answer") == NULL,
                "the peer never got close_notify: %s", c->lost_reason.message);
  tu_factory_check(&f);

  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
  weft_cert_options_unref(so);
  tu_pki_free(&pki);
}
END_TEST

/* --- item 6: lose_connection during a STARTTLS handshake --------------------------------------- */

static void starttls_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  script *s = c->factory->user;
  (void)data;
  (void)len;
  if (s->started || !has_line(c))
    return;
  s->started = 1;
  tu_conn_write_str(c, "GO\n");
  s->start_rc = weft_transport_start_tls(t, s->starttls_opts, WEFT_TLS_SERVER, NULL);
  if (s->lose_in_handshake) {
    if (s->total)
      s->write_rc = weft_transport_write(t, s->stream, s->total); /* sent once TLS is up */
    s->lose_rc = weft_transport_lose_connection(t);
  }
  if (s->abort_in_handshake) {
    weft_transport_abort_connection(t);
    s->tls_started_in_abort = c->tls_started; /* must still be 0: never from inside the call */
  }
}

static void abort_started(tu_conn *c, weft_transport *t, int status) {
  script *s = c->factory->user;
  if (status != 0 || !s->abort_after_started)
    return;
  /* Far more than the socket bufferevent below the filter takes (64 KiB): part of it is
   * encrypted at once, and must not be sent after the abort. */
  s->write_rc = weft_transport_write(t, s->stream, s->total);
  weft_transport_abort_connection(t);
}

/* _i: bit 0: TLS 1.2 / 1.3; bit 1: with 300 KiB written after start_tls, or nothing. */
START_TEST(test_lose_during_starttls_handshake) {
  const size_t total = _i & 2 ? 300 * 1024 : 0;
  tu_pki pki;
  tu_pki_init(&pki);
  weft_reactor *r = tu_reactor_new();
  weft_cert_options *so = tu_server_options(&pki);
  tu_factory f;
  tu_factory_init(&f);
  script s = {0};
  s.stream = make_stream(total);
  s.total = total;
  s.starttls_opts = so;
  s.lose_in_handshake = 1;
  f.user = &s;
  f.conn_config.on_data = starttls_data;
  int port = 0;
  weft_listener *l = tu_listen_tcp_local(r, &f, &port);

  peer p = {0};
  p.reactor = r;
  p.port = port;
  p.tls_version = _i & 1 ? TLS1_3_VERSION : TLS1_2_VERSION;
  p.starttls_line = "STARTTLS\n";
  p.ca = pki.ca_cert;
  double start = tu_now();
  peer_start(&p);
  peer_join(&p, r, 30.0);
  tu_wait_int(r, &f.lost, 1, 10.0);
  double took = tu_now() - start;
  tu_settle(r, 0.05);

  tu_conn *c = tu_factory_conn(&f, 0);
  ck_assert_ptr_nonnull(c);
  ck_assert_int_eq(s.start_rc, 0);
  ck_assert_int_eq(s.write_rc, 0);
  ck_assert_int_eq(s.lose_rc, 0);
  ck_assert_msg(p.handshake_ok, "the STARTTLS handshake did not complete");
  ck_assert_msg(p.first_bad == (size_t)-1, "byte %zu corrupted", p.first_bad);
  ck_assert_msg(p.rx == total, "received %zu of %zu (%s) after %.1f s; server: %s", p.rx, total,
                p.end_detail, took, c->lost_reason.message);
  ck_assert_msg(p.end == 1, "no close_notify: %s", p.end_detail);
  ck_assert_int_eq(c->tls_started, 1);
  ck_assert_int_eq(c->tls_started_status, 0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  tu_factory_check(&f);

  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
  weft_cert_options_unref(so);
  free((void *)s.stream);
  tu_pki_free(&pki);
}
END_TEST

/* The peer asks for STARTTLS, then never starts its handshake: lose_connection must end the
 * connection after the close time-out, with a reason that says so. */
START_TEST(test_lose_during_starttls_handshake_that_never_ends) {
  tu_pki pki;
  tu_pki_init(&pki);
  weft_reactor *r = tu_reactor_new();
  weft_cert_options *so = tu_server_options(&pki);
  tu_check_opt(so, weft_cert_options_set_close_timeout(so, 0.5));
  tu_check_opt(so, weft_cert_options_set_handshake_timeout(so, 20));
  tu_factory f;
  tu_factory_init(&f);
  script s = {0};
  s.starttls_opts = so;
  s.lose_in_handshake = 1;
  f.user = &s;
  f.conn_config.on_data = starttls_data;
  int port = 0;
  weft_listener *l = tu_listen_tcp_local(r, &f, &port);

  peer p = {0};
  p.reactor = r;
  p.port = port;
  p.tls_version = 0; /* plain: after the go-ahead it only reads, and never says ClientHello */
  p.starttls_line = "STARTTLS\n";
  peer_start(&p);
  tu_wait_int(r, &f.lost, 1, 10.0); /* not the 20 s handshake time-out */
  peer_join(&p, r, 30.0);
  tu_settle(r, 0.05);

  tu_conn *c = tu_factory_conn(&f, 0);
  ck_assert_ptr_nonnull(c);
  ck_assert_int_eq(s.start_rc, 0);
  ck_assert_int_eq(s.lose_rc, 0);
  ck_assert_int_eq(c->tls_started, 1);
  ck_assert_int_eq(c->tls_started_status, WEFT_ETIMEDOUT);
  ck_assert_msg(c->lost_reason.code == WEFT_ETIMEDOUT, "server: %s: %s",
                weft_err_name(c->lost_reason.code), c->lost_reason.message);
  ck_assert_msg(strstr(c->lost_reason.message, "close time-out") != NULL &&
                    strstr(c->lost_reason.message, "handshake timed out") == NULL,
                "reason: %s", c->lost_reason.message);
  ck_assert_int_eq(p.end, 1); /* the peer saw the connection end */
  tu_factory_check(&f);

  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
  weft_cert_options_unref(so);
  tu_pki_free(&pki);
}
END_TEST

/* --- abort after STARTTLS ----------------------------------------------------------------------- */

START_TEST(test_abort_after_starttls_sends_nothing) {
  const size_t total = (size_t)1 << 20;
  tu_pki pki;
  tu_pki_init(&pki);
  weft_reactor *r = tu_reactor_new();
  weft_cert_options *so = tu_server_options(&pki);
  tu_factory f;
  tu_factory_init(&f);
  script s = {0};
  s.stream = make_stream(total);
  s.total = total;
  s.starttls_opts = so;
  s.abort_after_started = 1;
  f.user = &s;
  f.conn_config.on_data = starttls_data;
  f.conn_config.on_tls_started = abort_started;
  int port = 0;
  weft_listener *l = tu_listen_tcp_local(r, &f, &port);

  peer p = {0};
  p.reactor = r;
  p.port = port;
  p.tls_version = TLS1_3_VERSION;
  p.starttls_line = "STARTTLS\n";
  p.ca = pki.ca_cert;
  peer_start(&p);
  peer_join(&p, r, 30.0);
  tu_wait_int(r, &f.lost, 1, 10.0);
  tu_settle(r, 0.05);

  tu_conn *c = tu_factory_conn(&f, 0);
  ck_assert_ptr_nonnull(c);
  ck_assert_int_eq(s.write_rc, 0);
  ck_assert_msg(p.handshake_ok, "no handshake");
  /* Everything was written and aborted in one callback: nothing had reached the kernel. */
  if (getenv("CLOSE_VERBOSE"))
    fprintf(stderr, "abort: peer rx %zu, end %s\n", p.rx, p.end_detail);
  ck_assert_msg(p.rx == 0, "the peer received %zu bytes written before the abort", p.rx);
  ck_assert_int_eq(c->lost_reason.code, WEFT_EABORTED);
  tu_factory_check(&f);

  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
  weft_cert_options_unref(so);
  free((void *)s.stream);
  tu_pki_free(&pki);
}
END_TEST

/* The test above aborts before anything reached the socket bufferevent's writer, and then the
 * kernel has no room anyway: it passes whether or not abort drops the ciphertext. Here the
 * records wait below the filter while the kernel has room when the transport is freed: the
 * server writes 1 MiB after the handshake to a peer that does not read, over small socket
 * buffers, so that the socket bufferevent under the filter holds tens of KiB of ciphertext
 * (its high-water mark is 64 KiB; the kernel takes much less). With the reactor stopped, the
 * peer then empties the kernel (its receive queue and the server's send queue), and the test
 * aborts. Whatever the peer receives after that was sent by weft after the abort. */

/* A STARTTLS client in a thread: a small receive buffer, the STARTTLS line, the go-ahead, the
 * handshake; then it reads nothing and leaves the socket to the test. */
typedef struct quiet_client {
  weft_reactor *reactor;
  int port;
  void *ca;
  int fd;
  int handshake_ok;
  char error[200];
  atomic_int done;
  pthread_t thread;
} quiet_client;

static void quiet_wake(void *arg) {
  (void)arg;
}

static void *quiet_main(void *arg) {
  quiet_client *q = arg;
  int buf = 8 * 1024;
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)q->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct timeval tv = {10, 0};
  char ch = 0;
  int i = 0;
  SSL_CTX *ctx = NULL;
  SSL *ssl = NULL;
  q->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (q->fd < 0 || setsockopt(q->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf) != 0 ||
      setsockopt(q->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      connect(q->fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
      send(q->fd, "STARTTLS\n", 9, MSG_NOSIGNAL) != 9) {
    snprintf(q->error, sizeof q->error, "connecting: %s", strerror(errno));
    goto out;
  }
  while (i++ < 64 && recv(q->fd, &ch, 1, 0) == 1 && ch != '\n')
    ;
  if (ch != '\n') {
    snprintf(q->error, sizeof q->error, "no go-ahead line");
    goto out;
  }
  ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), q->ca);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  ssl = SSL_new(ctx);
  SSL_set_fd(ssl, q->fd); /* BIO_NOCLOSE: the descriptor stays the test's */
  SSL_set1_host(ssl, "localhost");
  if (SSL_connect(ssl) == 1)
    q->handshake_ok = 1;
  else
    snprintf(q->error, sizeof q->error, "handshake failed");
out:
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  OPENSSL_thread_stop();
  atomic_store(&q->done, 1);
  weft_reactor_call_from_thread(q->reactor, quiet_wake, NULL);
  return NULL;
}

typedef struct filled {
  quiet_client *q;
  tu_factory *f;
} filled;

static int queued(int fd, unsigned long req) {
  int n = 0;
  return ioctl(fd, req, &n) == 0 ? n : -1;
}

/* The handshake is done on both sides, the filter holds plaintext back (the socket
 * bufferevent below it reached its high-water mark, 64 KiB, which it refills only once
 * empty), and that bufferevent has written to the kernel, which takes far less than 64 KiB
 * with these buffers: ciphertext waits in the bufferevent. */
static int filter_blocked(void *arg) {
  filled *w = arg;
  tu_conn *c = tu_factory_conn(w->f, 0);
  return atomic_load(&w->q->done) && c && c->tls_started && c->transport &&
         weft_transport_pending_output(c->transport) > 0 &&
         queued((int)(intptr_t)c->user, SIOCOUTQ) > 0;
}

static void write_after_started(tu_conn *c, weft_transport *t, int status) {
  script *s = c->factory->user;
  if (status == 0)
    s->write_rc = weft_transport_write(t, s->stream, s->total);
}

static void set_small_sndbuf(tu_conn *c, weft_transport *t) {
  int fd = peer_fd_of(t), sz = 8 * 1024;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz) != 0)
    tu_conn_violation(c, "server socket not found");
  c->user = (void *)(intptr_t)fd;
}

/* Reads what FD has without blocking; returns the bytes read, and sets *END at EOF or error. */
static size_t read_available(int fd, int *end) {
  char buf[16384];
  size_t got = 0;
  for (int i = 0; i < 1024; i++) {
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
      *end = 1;
    break;
  }
  return got;
}

START_TEST(test_abort_after_starttls_drops_queued_ciphertext) {
  const size_t total = (size_t)1 << 20;
  tu_pki pki;
  tu_pki_init(&pki);
  weft_reactor *r = tu_reactor_new();
  weft_cert_options *so = tu_server_options(&pki);
  tu_factory f;
  tu_factory_init(&f);
  script s = {0};
  s.stream = make_stream(total);
  s.total = total;
  s.starttls_opts = so;
  f.user = &s;
  f.conn_config.on_made = set_small_sndbuf;
  f.conn_config.on_data = starttls_data;
  f.conn_config.on_tls_started = write_after_started;
  int port = 0;
  weft_listener *l = tu_listen_tcp_local(r, &f, &port);

  quiet_client q = {.reactor = r, .port = port, .ca = pki.ca_cert, .fd = -1};
  atomic_init(&q.done, 0);
  ck_assert_int_eq(pthread_create(&q.thread, NULL, quiet_main, &q), 0);
  filled w = {&q, &f};
  tu_run_until(r, filter_blocked, &w, 20.0);
  ck_assert_int_eq(pthread_join(q.thread, NULL), 0);
  ck_assert_msg(q.error[0] == '\0' && q.handshake_ok, "client: %s", q.error);
  tu_conn *c = tu_factory_conn(&f, 0);
  ck_assert_int_eq(s.start_rc, 0);
  ck_assert_int_eq(s.write_rc, 0);
  ck_assert_int_eq(c->tls_started_status, 0);
  int server_fd = (int)(intptr_t)c->user;

  /* The reactor is stopped: weft writes nothing now. Empty the kernel on both sides, so that
   * it has room for whatever weft would push when the transport is freed. */
  size_t before = 0;
  int end = 0;
  double deadline = tu_now() + 10.0;
  while (!end && tu_now() < deadline) {
    before += read_available(q.fd, &end);
    if (queued(server_fd, SIOCOUTQ) == 0 && queued(q.fd, FIONREAD) == 0)
      break;
    struct pollfd pfd = {q.fd, POLLIN, 0};
    (void)poll(&pfd, 1, 100);
  }
  ck_assert_msg(!end, "the connection ended before the abort");
  ck_assert_msg(queued(server_fd, SIOCOUTQ) == 0 && queued(q.fd, FIONREAD) == 0,
                "the kernel still holds %d + %d bytes", queued(server_fd, SIOCOUTQ),
                queued(q.fd, FIONREAD));
  ck_assert_msg(before < total, "the peer read %zu bytes: weft did not hold any back", before);
  ck_assert_uint_gt(weft_transport_pending_output(c->transport), 0);

  ck_assert_int_eq(weft_transport_abort_connection(c->transport), 0);
  tu_wait_int(r, &f.lost, 1, 10.0);
  /* The transport is freed and its socket closed: read to the end of the stream. */
  size_t after = 0;
  end = 0;
  deadline = tu_now() + 10.0;
  while (!end && tu_now() < deadline) {
    after += read_available(q.fd, &end);
    struct pollfd pfd = {q.fd, POLLIN, 0};
    if (!end)
      (void)poll(&pfd, 1, 100);
  }
  if (getenv("CLOSE_VERBOSE"))
    fprintf(stderr, "abort with queued ciphertext: %zu bytes before, %zu after\n", before, after);
  ck_assert_msg(end, "the peer saw no end of the stream");
  ck_assert_msg(after == 0, "the peer received %zu bytes of ciphertext sent after the abort",
                after);
  ck_assert_int_eq(c->lost_reason.code, WEFT_EABORTED);
  tu_factory_check(&f);

  close(q.fd);
  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
  weft_cert_options_unref(so);
  free((void *)s.stream);
  tu_pki_free(&pki);
}
END_TEST

/* --- every STARTTLS ending gets tls_started ------------------------------------------------------ */

/* How a STARTTLS handshake under way ends (server side; the peer is a raw socket here). */
enum starttls_ending {
  END_LINE_THEN_EOF,     /* the peer closes right behind its STARTTLS line (one read) */
  END_LINE_THEN_RESET,   /* the peer resets right behind its STARTTLS line */
  END_PEER_EOF,          /* the peer closes before its ClientHello */
  END_PEER_EOF_PARTIAL,  /* the peer sends half a record header, then closes */
  END_PEER_RESET,        /* the peer resets the connection */
  END_HELLO_THEN_EOF,    /* the peer sends its ClientHello, gets the server's answer, sends FIN */
  END_HELLO_THEN_RESET,  /* the peer sends its ClientHello, gets the server's answer, resets */
  END_GARBAGE,           /* the peer sends no TLS at all: the handshake fails */
  END_TIMEOUT,           /* the peer stays silent: the handshake time-out */
  END_LOSE_THEN_EOF,     /* lose_connection right after start_tls, then the peer closes */
  END_LOSE_THEN_SILENCE, /* lose_connection right after start_tls, the peer stays silent */
  END_ABORT,             /* abort_connection from outside any callback */
  END_ABORT_IN_CALLBACK, /* abort_connection right after start_tls, in the same callback */
  END_REACTOR_FREE,      /* weft_reactor_free */
  END_COUNT
};

static const char *const ending_names[END_COUNT] = {
    "line, then EOF",          "line, then reset",     "peer EOF",
    "peer EOF in a record",    "peer reset",           "ClientHello, then EOF",
    "ClientHello, then reset", "no TLS from the peer", "time-out",
    "lose, then peer EOF",     "lose, peer silent",    "abort",
    "abort in the callback",   "reactor free"};

static int script_started(void *arg) {
  return ((script *)arg)->started;
}

typedef struct fd_wait {
  int fd;
  int bytes;
} fd_wait;

static int fd_has(void *arg) {
  fd_wait *w = arg;
  int n = 0;
  return ioctl(w->fd, FIONREAD, &n) == 0 && n >= w->bytes;
}

/* A TLS 1.3 ClientHello, as a client would send it (memory BIOs); returns its length. */
static size_t make_client_hello(uint8_t *buf, size_t cap) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  ck_assert_ptr_nonnull(ctx);
  SSL *ssl = SSL_new(ctx);
  ck_assert_ptr_nonnull(ssl);
  BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rb, wb);
  SSL_set_connect_state(ssl);
  (void)SSL_do_handshake(ssl); /* wants to read the server's answer */
  int n = BIO_read(wb, buf, (int)cap);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  ck_assert_int_gt(n, 0);
  return (size_t)n;
}

/* _i: an enum starttls_ending. Whatever ends the handshake, the protocol that called start_tls
 * hears tls_started exactly once, with a failure code, before connection_lost (with the same
 * code). */
START_TEST(test_starttls_ending_reports_tls_started) {
  const enum starttls_ending ending = (enum starttls_ending)_i;
  tu_pki pki;
  tu_pki_init(&pki);
  weft_reactor *r = tu_reactor_new();
  weft_cert_options *so = tu_server_options(&pki);
  tu_check_opt(so, weft_cert_options_set_handshake_timeout(so, ending == END_TIMEOUT ? 0.3 : 20));
  tu_check_opt(so, weft_cert_options_set_close_timeout(so, 0.3));
  tu_factory f;
  tu_factory_init(&f);
  script s = {0};
  s.starttls_opts = so;
  s.lose_in_handshake = ending == END_LOSE_THEN_EOF || ending == END_LOSE_THEN_SILENCE;
  s.abort_in_handshake = ending == END_ABORT_IN_CALLBACK;
  f.user = &s;
  f.conn_config.on_data = starttls_data;
  int port = 0;
  weft_listener *l = tu_listen_tcp_local(r, &f, &port);

  int fd = tu_raw_connect("127.0.0.1", port);
  ck_assert_int_eq(send(fd, "STARTTLS\n", 9, MSG_NOSIGNAL), 9);
  if (ending == END_LINE_THEN_EOF) {
    close(fd);
    fd = -1;
  } else if (ending == END_LINE_THEN_RESET) {
    tu_raw_reset(fd);
    fd = -1;
  }
  tu_run_until(r, script_started, &s, 10.0);
  ck_assert_int_eq(s.start_rc, 0);
  tu_conn *c = tu_factory_conn(&f, 0);
  ck_assert_ptr_nonnull(c);
  if (fd >= 0 && ending != END_ABORT_IN_CALLBACK) {
    /* Read the go-ahead, so that closing our socket sends a FIN, not a reset. */
    fd_wait w = {fd, 3};
    char go[3];
    tu_run_until(r, fd_has, &w, 10.0);
    ck_assert_int_eq(recv(fd, go, 3, 0), 3);
    ck_assert_int_eq(c->tls_started, 0);
  }
  ck_assert_int_eq(s.tls_started_in_abort, 0);

  switch (ending) {
    case END_PEER_EOF:
    case END_LOSE_THEN_EOF:
      close(fd);
      fd = -1;
      break;
    case END_PEER_EOF_PARTIAL:
      ck_assert_int_eq(send(fd, "\x16\x03", 2, MSG_NOSIGNAL), 2);
      close(fd);
      fd = -1;
      break;
    case END_PEER_RESET:
      tu_raw_reset(fd);
      fd = -1;
      break;
    case END_HELLO_THEN_EOF:
    case END_HELLO_THEN_RESET: {
      uint8_t hello[4096];
      size_t len = make_client_hello(hello, sizeof hello);
      ck_assert_int_eq(send(fd, hello, len, MSG_NOSIGNAL), (ssize_t)len);
      fd_wait w = {fd, 1};
      tu_run_until(r, fd_has, &w, 10.0); /* the server's first flight */
      ck_assert_int_eq(c->tls_started, 0);
      if (ending == END_HELLO_THEN_EOF) {
        shutdown(fd, SHUT_WR);
      } else {
        tu_raw_reset(fd);
        fd = -1;
      }
      break;
    }
    case END_GARBAGE:
      ck_assert_int_eq(send(fd, "HELLO THERE, NO TLS HERE\r\n", 26, MSG_NOSIGNAL), 26);
      break;
    case END_ABORT:
      ck_assert_int_eq(weft_transport_abort_connection(c->transport), 0);
      ck_assert_int_eq(c->tls_started, 0); /* never from inside the call */
      break;
    case END_REACTOR_FREE:
      weft_listener_stop(l);
      l = NULL;
      weft_reactor_free(r);
      r = NULL;
      break;
    default:
      break;
  }
  if (r) {
    tu_wait_int(r, &f.lost, 1, 10.0);
    tu_settle(r, 0.05);
  }

  ck_assert_int_eq(f.lost, 1);
  ck_assert_msg(c->tls_started == 1,
                "%s: tls_started called %d times before connection_lost "
                "(%s: %s)",
                ending_names[ending], c->tls_started, weft_err_name(c->lost_reason.code),
                c->lost_reason.message);
  ck_assert_msg(c->tls_started_status < 0 && c->tls_started_status == c->lost_reason.code,
                "%s: tls_started said %s, connection_lost %s (%s)", ending_names[ending],
                weft_err_name(c->tls_started_status), weft_err_name(c->lost_reason.code),
                c->lost_reason.message);
  if (ending == END_ABORT || ending == END_ABORT_IN_CALLBACK)
    ck_assert_int_eq(c->lost_reason.code, WEFT_EABORTED);
  if (ending == END_REACTOR_FREE)
    ck_assert_int_eq(c->lost_reason.code, WEFT_ESHUTDOWN);
  if (ending == END_TIMEOUT)
    ck_assert_int_eq(c->lost_reason.code, WEFT_EHANDSHAKETIMEOUT);
  if (ending == END_LOSE_THEN_SILENCE)
    ck_assert_int_eq(c->lost_reason.code, WEFT_ETIMEDOUT);
  tu_factory_check(&f);

  if (fd >= 0)
    close(fd);
  if (l)
    weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
  weft_cert_options_unref(so);
  tu_pki_free(&pki);
}
END_TEST

/* --- lengths that overflow ----------------------------------------------------------------------- */

typedef struct overflow_result {
  int done;
  int rc_write, rc_ref, rc_ref2, rc_seq;
  int released;
  size_t pending_before, pending_after;
} overflow_result;

static void count_release(const void *data, size_t len, void *arg) {
  (void)data;
  (void)len;
  ((overflow_result *)arg)->released++;
}

static void overflow_made(tu_conn *c, weft_transport *t) {
  overflow_result *o = c->factory->user;
  static const char byte[2] = "x";
  ck_assert_int_eq(weft_transport_write(t, byte, 1), 0); /* one byte pending */
  o->pending_before = weft_transport_pending_output(t);
  o->rc_write = weft_transport_write(t, byte, SIZE_MAX);
  o->rc_ref = weft_transport_write_reference(t, byte, SIZE_MAX, count_release, o);
  o->rc_ref2 =
      weft_transport_write_reference(t, byte, SIZE_MAX - o->pending_before + 1, count_release, o);
  weft_buf bufs[2] = {{byte, 1}, {byte, SIZE_MAX - 1}}; /* sums to SIZE_MAX exactly */
  o->rc_seq = weft_transport_write_sequence(t, bufs, 2);
  o->pending_after = weft_transport_pending_output(t);
  o->done = 1;
  weft_transport_lose_connection(t);
}

START_TEST(test_write_length_overflow) {
  weft_reactor *r = tu_reactor_new();
  tu_factory f;
  tu_factory_init(&f);
  overflow_result o = {0};
  f.user = &o;
  f.conn_config.on_made = overflow_made;
  int port = 0;
  weft_listener *l = tu_listen_tcp_local(r, &f, &port);
  peer p = {0};
  p.reactor = r;
  p.port = port;
  peer_start(&p);
  peer_join(&p, r, 10.0);
  tu_wait_int(r, &f.lost, 1, 10.0);
  ck_assert_int_eq(o.done, 1);
  ck_assert_uint_eq(o.pending_before, 1);
  ck_assert_int_eq(o.rc_write, WEFT_EINVAL);
  ck_assert_int_eq(o.rc_ref, WEFT_EINVAL);
  ck_assert_int_eq(o.rc_ref2, WEFT_EINVAL);
  ck_assert_int_eq(o.rc_seq, WEFT_EINVAL);
  ck_assert_int_eq(o.released, 0);
  ck_assert_uint_eq(o.pending_after, 1);
  ck_assert_uint_eq(p.rx, 1);
  tu_factory_check(&f);
  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
}
END_TEST

/* --- item 13: a refused handshake lets the client read the alert ------------------------------ */

typedef struct alert_client {
  weft_reactor *reactor;
  int port;
  int version;
  void *ca;
  /* results */
  char error[200];
  int connect_rc;
  int write1, write2; /* SSL_write results after the handshake (TLS 1.3) */
  int write_errno;
  int alert;     /* alert description received, -1 if none */
  int saw_reset; /* a write or read failed with ECONNRESET / EPIPE */
  atomic_int done;
  pthread_t thread;
} alert_client;

static void alert_info(const SSL *ssl, int where, int ret) {
  if (where & SSL_CB_READ_ALERT) {
    alert_client *a = SSL_get_app_data(ssl);
    a->alert = ret & 0xff;
  }
}

static void alert_wake(void *arg) {
  (void)arg;
}

/* A client without a certificate that writes before it reads: at TLS 1.3 its handshake ends
 * before the server's verdict; it waits until the server's alert and FIN are in (both weft
 * versions send them), then writes twice, then reads. A server that closed its socket answers
 * the first write with a reset, and the second write fails: the client never reads the alert. */
static void *alert_main(void *arg) {
  alert_client *a = arg;
  a->alert = -1;
  int fd = tu_raw_connect("127.0.0.1", a->port);
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, a->version);
  SSL_CTX_set_max_proto_version(ctx, a->version);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), a->ca);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  SSL *ssl = SSL_new(ctx);
  SSL_set_app_data(ssl, a);
  SSL_set_info_callback(ssl, alert_info);
  SSL_set_fd(ssl, fd);
  SSL_set1_host(ssl, "localhost");
  a->connect_rc = SSL_connect(ssl);
  if (a->connect_rc == 1) {
    struct pollfd pfd = {fd, POLLRDHUP, 0};
    if (poll(&pfd, 1, 10000) != 1) /* the server's alert and FIN have arrived */
      snprintf(a->error, sizeof a->error, "no FIN from the server");
    errno = 0;
    a->write1 = SSL_write(ssl, "ping", 4);
    if (a->write1 > 0) {
      /* The first write's reset, if any, came back during the send on loopback. */
      a->write2 = SSL_write(ssl, "pong", 4);
    }
    if (a->write1 <= 0 || a->write2 <= 0) {
      a->write_errno = errno;
      if (errno == ECONNRESET || errno == EPIPE)
        a->saw_reset = 1;
    } else {
      char buf[64];
      errno = 0;
      if (SSL_read(ssl, buf, sizeof buf) <= 0 && (errno == ECONNRESET || errno == EPIPE))
        a->saw_reset = 1;
    }
  }
  ERR_clear_error();
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  OPENSSL_thread_stop();
  atomic_store(&a->done, 1);
  weft_reactor_call_from_thread(a->reactor, alert_wake, NULL);
  return NULL;
}

static int alert_done(void *arg) {
  return atomic_load(&((alert_client *)arg)->done);
}

/* _i: 0 TLS 1.3 (certificate_required, 116), 1 TLS 1.2 (handshake_failure, 40). */
START_TEST(test_refused_handshake_alert_reaches_client) {
  tu_pki pki;
  tu_pki_init(&pki);
  weft_reactor *r = tu_reactor_new();
  weft_cert_options *so = tu_server_options_mutual(&pki);
  tu_factory f;
  tu_factory_init(&f);
  int port = 0;
  weft_listener *l = tu_listen_ssl_local(r, &f, so, &port);
  alert_client a = {0};
  a.reactor = r;
  a.port = port;
  a.version = _i == 0 ? TLS1_3_VERSION : TLS1_2_VERSION;
  a.ca = pki.ca_cert;
  atomic_init(&a.done, 0);
  ck_assert_int_eq(pthread_create(&a.thread, NULL, alert_main, &a), 0);
  tu_run_until(r, alert_done, &a, 30.0);
  ck_assert_int_eq(pthread_join(a.thread, NULL), 0);
  tu_wait_int(r, &f.handshake_failed, 1, 10.0); /* after the client closed: no time-out */
  tu_settle(r, 0.05);

  ck_assert_msg(a.error[0] == '\0', "client: %s", a.error);
  int expect = _i == 0 ? 116 : 40;
  if (_i == 0) {
    ck_assert_msg(a.connect_rc == 1, "TLS 1.3: the client's handshake should end first");
    ck_assert_msg(!a.saw_reset && a.write1 == 4 && a.write2 == 4,
                  "the client's writes met a reset (errno %s) instead of a lingering server",
                  strerror(a.write_errno));
  }
  ck_assert_msg(a.alert == expect, "the client read alert %d, expected %d", a.alert, expect);
  ck_assert_int_eq(f.made, 0);
  ck_assert_int_eq(f.handshake_failed, 1);
  ck_assert_msg(f.last_handshake_failed.code != WEFT_OK, "handshake_failed: %s",
                f.last_handshake_failed.message);
  tu_factory_check(&f);

  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
  weft_cert_options_unref(so);
  tu_pki_free(&pki);
}
END_TEST

static Suite *close_suite(void) {
  Suite *s = suite_create("close");
  TCase *tc = tcase_create("close");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, test_flush_after_peer_half_close, 0, 3);
  tcase_add_loop_test(tc, test_close_notify_on_full_socket, 0, 2);
  tcase_add_loop_test(tc, test_lose_during_starttls_handshake, 0, 4);
  tcase_add_test(tc, test_lose_during_starttls_handshake_that_never_ends);
  tcase_add_test(tc, test_abort_after_starttls_sends_nothing);
  tcase_add_test(tc, test_abort_after_starttls_drops_queued_ciphertext);
  tcase_add_loop_test(tc, test_starttls_ending_reports_tls_started, 0, END_COUNT);
  tcase_add_test(tc, test_write_length_overflow);
  tcase_add_loop_test(tc, test_refused_handshake_alert_reaches_client, 0, 2);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(close_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
