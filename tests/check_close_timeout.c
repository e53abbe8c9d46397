/* tests/check_close_timeout.c: weft_transport_set_close_timeout, seen from the peer.
 *
 * After lose_connection has sent everything and its close_notify (TLS) or FIN (TCP), the
 * transport waits for the peer's, for the certificate options' close time-out (5 s for TCP), or
 * for the transport's own when set_close_timeout gave one. Every test that applies to all three
 * runs over TCP, TLS 1.2 and TLS 1.3 (_i: 0, 1, 2):
 * - not set: lose_connection waits for the peer (nothing lost while the peer holds still), and
 *   a peer that never answers is cut after the options' close time-out, with WEFT_OK;
 * - 0: connection_lost(WEFT_OK) comes while the peer, which has read everything, stays silent;
 *   every byte written arrives, followed by close_notify (TLS) or a clean FIN; also with a large
 *   pending output read slowly; and with TLS records still staged for a full socket, or a
 *   close_notify that meets a full socket, which 0 used to drop (regressions, see the end);
 * - set from connection_made, data_received, write_drained, another transport's
 *   connection_lost, and while lose_connection is already waiting (0 ends it at once, 0.2
 *   ends it within its own deadline although the options say 30 s);
 * - bad input (NULL, -1, NaN, 1e7, infinities): WEFT_EINVAL and the previous value kept; from
 *   connection_lost: WEFT_ECLOSED;
 * - a value above the options' (0.1 s options, 2 s transport): the transport's wins, and a peer
 *   that answers after 0.5 s gets a close_notify exchange (TLS) / FIN exchange (TCP).
 *
 * Peers are blocking clients in a thread (one below, which can hold still after the end of the
 * stream and answer only when told); the weft side runs the reactor until a condition holds or a
 * deadline passes. No sleeps, no timing assertions: a deadline bounds every wait, and "not lost
 * yet" is checked only while the peer holds still and the time-out in force is far away. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "peerutil.h"
#include "testutil.h"
#include "tlsutil.h"

/* --- A peer that holds still ----------------------------------------------------------------- */

/* Connects, (TLS) handshakes, optionally sends a request, optionally waits for go 1 before
 * reading, reads to the end of the stream (checking the pattern), says so (at_end), then waits
 * for the next go before it answers (answer: SSL_shutdown for TLS; TCP's FIN is the close) and
 * closes. Until then it sends nothing: a silent peer. */
typedef struct cpeer {
  weft_reactor *reactor;
  int port;
  int tls_version; /* 0: TCP */
  X509 *ca;
  int rcvbuf;          /* SO_RCVBUF before connect, if > 0 */
  const char *request; /* sent after the handshake, if set */
  int hold_read;       /* read nothing until go 1 */
  size_t read_chunk;   /* bytes per read (0: 16 KiB): a slow reader */
  int answer;          /* after the end of the stream and the next go: close_notify (TLS) */
  /* results (read after at_end or cpeer_join) */
  char error[256];
  size_t rx;
  size_t first_bad;
  int end; /* 1: close_notify (TLS) / EOF (TCP); -1: anything else */
  char end_detail[160];
  atomic_int at_end;
  atomic_int done;
  /* private */
  atomic_int go;
  int go_pipe[2];
  pthread_t thread;
} cpeer;

static void cpeer_wake(void *arg) {
  (void)arg;
}

/* Waits until go reaches STAGE (30 s at most). */
static void cpeer_wait(cpeer *p, int stage) {
  for (int i = 0; i < 300 && atomic_load(&p->go) < stage; i++) {
    struct pollfd pfd = {p->go_pipe[0], POLLIN, 0};
    if (poll(&pfd, 1, 100) > 0) {
      char b;
      (void)!read(p->go_pipe[0], &b, 1);
    }
  }
}

static void cpeer_fail(cpeer *p, const char *what) {
  if (!p->error[0])
    snprintf(p->error, sizeof p->error, "%s (errno %s)", what, strerror(errno));
}

static void cpeer_account(cpeer *p, const uint8_t *buf, size_t n) {
  if (p->first_bad == (size_t)-1) {
    size_t bad = tu_pattern_check(buf, n, p->rx);
    if (bad < n)
      p->first_bad = p->rx + bad;
  }
  p->rx += n;
}

static void cpeer_run(cpeer *p) {
  int stage = 0;
  SSL_CTX *ctx = NULL;
  SSL *ssl = NULL;
  uint8_t buf[16384];
  size_t chunk = p->read_chunk && p->read_chunk < sizeof buf ? p->read_chunk : sizeof buf;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    cpeer_fail(p, "socket");
    return;
  }
  struct timeval tv = {20, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (p->rcvbuf > 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &p->rcvbuf, sizeof p->rcvbuf);
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)p->port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
    cpeer_fail(p, "connect");
    goto out;
  }
  if (p->tls_version) {
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
      cpeer_fail(p, "SSL_CTX_new");
      goto out;
    }
    SSL_CTX_set_min_proto_version(ctx, p->tls_version);
    SSL_CTX_set_max_proto_version(ctx, p->tls_version);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), p->ca);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    if (SSL_connect(ssl) != 1) {
      cpeer_fail(p, "SSL_connect");
      goto out;
    }
  }
  if (p->request) {
    int len = (int)strlen(p->request);
    if (ssl ? SSL_write(ssl, p->request, len) != len
            : send(fd, p->request, (size_t)len, MSG_NOSIGNAL) != len) {
      cpeer_fail(p, "sending the request");
      goto out;
    }
  }
  if (p->hold_read)
    cpeer_wait(p, ++stage);
  for (;;) {
    if (ssl) {
      ERR_clear_error();
      errno = 0;
      int n = SSL_read(ssl, buf, (int)chunk);
      if (n > 0) {
        cpeer_account(p, buf, (size_t)n);
        continue;
      }
      int err = SSL_get_error(ssl, n);
      p->end = err == SSL_ERROR_ZERO_RETURN ? 1 : -1;
      snprintf(p->end_detail, sizeof p->end_detail, "SSL error %d, errno %d", err, errno);
    } else {
      ssize_t n = recv(fd, buf, chunk, 0);
      if (n > 0) {
        cpeer_account(p, buf, (size_t)n);
        continue;
      }
      p->end = n == 0 ? 1 : -1;
      snprintf(p->end_detail, sizeof p->end_detail, "%s", n == 0 ? "EOF" : strerror(errno));
    }
    break;
  }
  atomic_store(&p->at_end, 1);
  weft_reactor_call_from_thread(p->reactor, cpeer_wake, NULL);
  cpeer_wait(p, ++stage); /* silent until told */
  if (p->answer && ssl)
    (void)SSL_shutdown(ssl); /* our close_notify (the server may be gone: ignored) */
out:
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd); /* TCP: our FIN */
}

static void *cpeer_main(void *arg) {
  cpeer *p = arg;
  cpeer_run(p);
  ERR_clear_error();
  OPENSSL_thread_stop();
  atomic_store(&p->at_end, 1);
  atomic_store(&p->done, 1);
  weft_reactor_call_from_thread(p->reactor, cpeer_wake, NULL);
  return NULL;
}

static void cpeer_start(cpeer *p) {
  p->error[0] = '\0';
  p->rx = 0;
  p->first_bad = (size_t)-1;
  p->end = 0;
  atomic_init(&p->at_end, 0);
  atomic_init(&p->done, 0);
  atomic_init(&p->go, 0);
  ck_assert_int_eq(pipe(p->go_pipe), 0);
  ck_assert_int_eq(pthread_create(&p->thread, NULL, cpeer_main, p), 0);
}

static void cpeer_go(cpeer *p) {
  atomic_fetch_add(&p->go, 1);
  (void)!write(p->go_pipe[1], "g", 1);
}

static int cpeer_at_end(void *arg) {
  return atomic_load(&((cpeer *)arg)->at_end);
}

static int cpeer_done(void *arg) {
  return atomic_load(&((cpeer *)arg)->done);
}

/* Lets the peer go on as often as needed and joins it. */
static void cpeer_join(cpeer *p, weft_reactor *r) {
  for (int i = 0; i < 3; i++)
    cpeer_go(p);
  tu_run_until(r, cpeer_done, p, 30.0);
  ck_assert_int_eq(pthread_join(p->thread, NULL), 0);
  close(p->go_pipe[0]);
  close(p->go_pipe[1]);
  ck_assert_msg(p->error[0] == '\0', "peer: %s", p->error);
}

/* --- Fixture: a server (TCP or TLS) and one peer ----------------------------------------- */

typedef struct fixture {
  tu_pki pki;
  weft_reactor *r;
  weft_cert_options *so;
  tu_factory f;
  weft_listener *l;
  int port;
  int tls; /* 0 TCP, else the TLS version */
  cpeer p;
} fixture;

/* _i: 0 TCP, 1 TLS 1.2, 2 TLS 1.3. OPTIONS_CLOSE: the options' close time-out (TLS). */
static void fx_init(fixture *x, int variant, double options_close) {
  memset(x, 0, sizeof *x);
  tu_pki_init(&x->pki);
  x->r = tu_reactor_new();
  x->so = tu_server_options(&x->pki);
  tu_check_opt(x->so, weft_cert_options_set_close_timeout(x->so, options_close));
  tu_factory_init(&x->f);
  x->tls = variant == 0 ? 0 : variant == 1 ? TLS1_2_VERSION : TLS1_3_VERSION;
  x->l = x->tls ? tu_listen_ssl_local(x->r, &x->f, x->so, &x->port)
                : tu_listen_tcp_local(x->r, &x->f, &x->port);
  x->p.reactor = x->r;
  x->p.port = x->port;
  x->p.tls_version = x->tls;
  x->p.ca = x->pki.ca_cert;
}

static void fx_free(fixture *x) {
  tu_factory_check(&x->f);
  weft_listener_stop(x->l);
  weft_reactor_free(x->r);
  tu_factory_cleanup(&x->f);
  weft_cert_options_unref(x->so);
  tu_pki_free(&x->pki);
}

/* The peer saw every byte, then close_notify (TLS) or a clean EOF (TCP). */
static void check_peer_got_all(fixture *x, size_t total, tu_conn *c) {
  ck_assert_msg(x->p.first_bad == (size_t)-1, "byte %zu corrupted", x->p.first_bad);
  ck_assert_msg(x->p.rx == total, "peer received %zu of %zu bytes (%s); server: %s", x->p.rx,
                total, x->p.end_detail, c ? c->lost_reason.message : "-");
  ck_assert_msg(x->p.end == 1, "the stream did not end with %s: %s; server: %s",
                x->tls ? "close_notify" : "a clean EOF", x->p.end_detail,
                c ? c->lost_reason.message : "-");
}

/* What connection_made writes (the pattern) and whether it sets a close time-out first. */
typedef struct plan {
  size_t total;
  uint8_t *stream;
  double set; /* < 0: not set */
  int set_rc;
  int lose_rc;
  int write_rc;
} plan;

static uint8_t *make_stream(size_t total) {
  uint8_t *b = malloc(total ? total : 1);
  ck_assert_ptr_nonnull(b);
  tu_pattern_fill(b, total, 0);
  return b;
}

static void write_and_lose(tu_conn *c, weft_transport *t) {
  plan *pl = c->factory->user;
  if (pl->set >= 0)
    pl->set_rc = weft_transport_set_close_timeout(t, pl->set);
  pl->write_rc = weft_transport_write(t, pl->stream, pl->total);
  pl->lose_rc = weft_transport_lose_connection(t);
}

static void set_sndbuf(tu_conn *c, weft_transport *t, int size) {
  int fd = peer_fd_of(t);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size) != 0)
    tu_conn_violation(c, "server socket not found");
}

/* --- 1. Not set: lose_connection waits for the peer --------------------------------------- */

START_TEST(test_default_waits_for_peer) {
  fixture x;
  fx_init(&x, _i, 30.0); /* TCP: 5 s */
  plan pl = {.total = 1000, .set = -1};
  pl.stream = make_stream(pl.total);
  x.f.user = &pl;
  x.f.conn_config.on_made = write_and_lose;
  x.p.answer = 1;
  cpeer_start(&x.p);
  tu_run_until(x.r, cpeer_at_end, &x.p, 10.0);
  tu_settle(x.r, 0.2);
  /* The peer read everything and holds still: the transport must still be waiting. */
  ck_assert_int_eq(x.f.made, 1);
  tu_conn *c = tu_factory_conn(&x.f, 0);
  ck_assert_msg(x.f.lost == 0, "lost before the peer answered: %s", c->lost_reason.message);
  cpeer_go(&x.p); /* answer: close_notify (TLS) / FIN */
  tu_wait_int(x.r, &x.f.lost, 1, 4.0);
  ck_assert_int_eq(pl.lose_rc, 0);
  ck_assert_int_eq(pl.write_rc, 0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  ck_assert_str_eq(c->lost_reason.message, x.tls ? "TLS connection closed locally (close_notify "
                                                   "exchanged)"
                                                 : "connection closed locally");
  cpeer_join(&x.p, x.r);
  check_peer_got_all(&x, pl.total, c);
  fx_free(&x);
  free(pl.stream);
}
END_TEST

/* TLS only (TCP's wait is a fixed 5 s): the options' 0.3 s ends the wait of a silent peer. */
START_TEST(test_default_options_timeout_ends_wait) {
  fixture x;
  fx_init(&x, _i + 1, 0.3);
  plan pl = {.total = 1000, .set = -1};
  pl.stream = make_stream(pl.total);
  x.f.user = &pl;
  x.f.conn_config.on_made = write_and_lose;
  cpeer_start(&x.p);
  tu_wait_int(x.r, &x.f.lost, 1, 10.0); /* the peer holds still throughout */
  tu_conn *c = tu_factory_conn(&x.f, 0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  ck_assert_msg(strstr(c->lost_reason.message, "did not answer close_notify within 0.3 s"),
                "server: %s", c->lost_reason.message);
  cpeer_join(&x.p, x.r);
  check_peer_got_all(&x, pl.total, c);
  fx_free(&x);
  free(pl.stream);
}
END_TEST

/* --- 2. 0: close once ours is sent ------------------------------------------------------- */

START_TEST(test_zero_closes_without_the_peer) {
  fixture x;
  fx_init(&x, _i, 30.0);
  plan pl = {.total = 100 * 1000, .set = 0};
  pl.stream = make_stream(pl.total);
  x.f.user = &pl;
  x.f.conn_config.on_made = write_and_lose;
  x.p.answer = 1; /* would answer, but only once told: after connection_lost */
  cpeer_start(&x.p);
  tu_wait_int(x.r, &x.f.lost, 1, 3.0); /* TCP's default would be 5 s, the options' 30 s */
  ck_assert_int_eq(atomic_load(&x.p.go), 0); /* the peer sent nothing so far */
  tu_conn *c = tu_factory_conn(&x.f, 0);
  ck_assert_int_eq(pl.set_rc, 0);
  ck_assert_int_eq(pl.write_rc, 0);
  ck_assert_int_eq(pl.lose_rc, 0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  ck_assert_str_eq(c->lost_reason.message,
                   x.tls ? "TLS connection closed locally (close_notify sent)"
                         : "connection closed locally (FIN sent; not waiting for the peer's)");
  tu_run_until(x.r, cpeer_at_end, &x.p, 10.0);
  cpeer_join(&x.p, x.r);
  check_peer_got_all(&x, pl.total, c);
  fx_free(&x);
  free(pl.stream);
}
END_TEST

static void small_sndbuf_write_and_lose(tu_conn *c, weft_transport *t) {
  set_sndbuf(c, t, 64 * 1024);
  write_and_lose(c, t);
}

/* 1 MiB pending when lose_connection is called, the peer holds, then reads 4 KiB at a time:
 * nothing is lost, and close_notify / FIN follows the last byte. */
START_TEST(test_zero_with_pending_output) {
  fixture x;
  fx_init(&x, _i, 30.0);
  plan pl = {.total = (size_t)1 << 20, .set = 0};
  pl.stream = make_stream(pl.total);
  x.f.user = &pl;
  x.f.conn_config.on_made = small_sndbuf_write_and_lose;
  x.p.rcvbuf = 64 * 1024;
  x.p.hold_read = 1;
  x.p.read_chunk = 4096;
  cpeer_start(&x.p);
  tu_wait_int(x.r, &x.f.made, 1, 10.0);
  tu_settle(x.r, 0.1);
  tu_conn *c = tu_factory_conn(&x.f, 0);
  ck_assert_msg(x.f.lost == 0, "lost with output pending: %s", c->lost_reason.message);
  ck_assert_uint_gt(weft_transport_pending_output(c->transport), 0);
  cpeer_go(&x.p); /* read, slowly */
  tu_wait_int(x.r, &x.f.lost, 1, 20.0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  ck_assert_msg(strstr(c->lost_reason.message, "did not answer") == NULL, "server: %s",
                c->lost_reason.message);
  tu_run_until(x.r, cpeer_at_end, &x.p, 20.0);
  cpeer_join(&x.p, x.r);
  check_peer_got_all(&x, pl.total, c);
  fx_free(&x);
  free(pl.stream);
}
END_TEST

/* TLS: records still staged for a full socket when lose_connection is called with the output
 * buffer empty (64 KiB fit the staging buffer; the small socket buffers do not). They must
 * still reach the peer, followed by close_notify. */
static void tiny_sndbuf_write(tu_conn *c, weft_transport *t) {
  plan *pl = c->factory->user;
  set_sndbuf(c, t, 4096);
  pl->write_rc = weft_transport_write(t, pl->stream, pl->total);
}

/* _i: (0: TLS 1.2, 1: TLS 1.3) + 2 * (0: set to 0; 1: not set and the peer answers, the
 * control that shows the records do arrive when lose_connection waits). */
START_TEST(test_zero_with_staged_records) {
  int control = _i / 2;
  fixture x;
  fx_init(&x, _i % 2 + 1, 30.0);
  plan pl = {.total = 64 * 1024, .set = -1};
  pl.stream = make_stream(pl.total);
  x.f.user = &pl;
  x.f.conn_config.on_made = tiny_sndbuf_write;
  x.p.rcvbuf = 4096;
  x.p.hold_read = 1;
  cpeer_start(&x.p);
  tu_wait_int(x.r, &x.f.made, 1, 10.0);
  tu_settle(x.r, 0.1);
  tu_conn *c = tu_factory_conn(&x.f, 0);
  ck_assert_int_eq(pl.write_rc, 0);
  ck_assert_uint_gt(weft_transport_pending_output(c->transport), 0);
  if (!control)
    ck_assert_int_eq(weft_transport_set_close_timeout(c->transport, 0), 0);
  x.p.answer = control;
  ck_assert_int_eq(weft_transport_lose_connection(c->transport), 0);
  cpeer_go(&x.p);
  if (control) {
    tu_run_until(x.r, cpeer_at_end, &x.p, 10.0);
    cpeer_go(&x.p); /* answer */
  }
  tu_wait_int(x.r, &x.f.lost, 1, 10.0);
  tu_run_until(x.r, cpeer_at_end, &x.p, 10.0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  cpeer_join(&x.p, x.r);
  check_peer_got_all(&x, pl.total, c);
  fx_free(&x);
  free(pl.stream);
}
END_TEST

/* TLS: the close_notify's own write meets a full socket (EAGAIN once, injected below): with 0,
 * the close_notify must still be sent before the socket is closed. */
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

ssize_t send(int fd, const void *buf, size_t n, int flags) {
  int target = atomic_load(&write_eagain_fd);
  if (target >= 0 && fd == target &&
      atomic_compare_exchange_strong(&write_eagain_fd, &target, -1)) {
    errno = EAGAIN;
    return -1;
  }
  return syscall(SYS_sendto, fd, buf, n, flags, NULL, 0);
}

static void zero_lose_on_full_socket(tu_conn *c, weft_transport *t) {
  plan *pl = c->factory->user;
  int fd = peer_fd_of(t);
  if (fd < 0) {
    tu_conn_violation(c, "server socket not found");
    return;
  }
  pl->set_rc = weft_transport_set_close_timeout(t, 0);
  atomic_store(&write_eagain_fd, fd);
  pl->lose_rc = weft_transport_lose_connection(t);
  if (atomic_exchange(&write_eagain_fd, -1) != -1)
    tu_conn_violation(c, "the close_notify was not written at once");
}

START_TEST(test_zero_close_notify_on_full_socket) {
  fixture x;
  fx_init(&x, _i + 1, 30.0);
  plan pl = {.total = 0, .set = 0};
  x.f.user = &pl;
  x.f.conn_config.on_made = zero_lose_on_full_socket;
  cpeer_start(&x.p);
  tu_wait_int(x.r, &x.f.lost, 1, 10.0);
  tu_run_until(x.r, cpeer_at_end, &x.p, 10.0);
  tu_conn *c = tu_factory_conn(&x.f, 0);
  ck_assert_int_eq(pl.set_rc, 0);
  ck_assert_int_eq(pl.lose_rc, 0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  cpeer_join(&x.p, x.r);
  check_peer_got_all(&x, 0, c);
  fx_free(&x);
}
END_TEST

/* --- 3. Set from the callbacks, and while waiting ---------------------------------------- */

enum { FROM_MADE, FROM_DATA, FROM_DRAINED, FROM_COUNT };

static void set_zero_write_lose(tu_conn *c, weft_transport *t) {
  plan *pl = c->factory->user;
  pl->set_rc = weft_transport_set_close_timeout(t, 0);
  pl->write_rc = weft_transport_write(t, pl->stream, pl->total);
  pl->lose_rc = weft_transport_lose_connection(t);
}

static void from_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  (void)data;
  (void)len;
  if (c->rx_total >= 4 && c->rx_total - len < 4) /* "GET\n" complete */
    set_zero_write_lose(c, t);
}

static void big_write(tu_conn *c, weft_transport *t) {
  plan *pl = c->factory->user;
  pl->write_rc = weft_transport_write(t, pl->stream, pl->total);
}

static void from_drained(tu_conn *c, weft_transport *t) {
  plan *pl = c->factory->user;
  if (c->drained != 1)
    return;
  pl->set_rc = weft_transport_set_close_timeout(t, 0);
  pl->lose_rc = weft_transport_lose_connection(t);
}

/* _i: transport (0 TCP, 1 TLS 1.2, 2 TLS 1.3) * 3 + where (FROM_*). */
START_TEST(test_zero_set_from_callbacks) {
  int where = _i % FROM_COUNT;
  fixture x;
  fx_init(&x, _i / FROM_COUNT, 30.0);
  plan pl = {.total = where == FROM_DRAINED ? (size_t)1 << 20 : 5000, .set = -1};
  pl.stream = make_stream(pl.total);
  x.f.user = &pl;
  if (where == FROM_MADE) {
    x.f.conn_config.on_made = set_zero_write_lose;
  } else if (where == FROM_DATA) {
    x.f.conn_config.on_data = from_data;
    x.p.request = "GET\n";
  } else {
    x.f.conn_config.low_water = 64 * 1024;
    x.f.conn_config.on_made = big_write;
    x.f.conn_config.on_drained = from_drained;
  }
  cpeer_start(&x.p);
  tu_wait_int(x.r, &x.f.lost, 1, 3.0); /* silent peer: only the 0 ends the wait this early */
  ck_assert_int_eq(atomic_load(&x.p.go), 0);
  tu_conn *c = tu_factory_conn(&x.f, 0);
  ck_assert_int_eq(pl.set_rc, 0);
  ck_assert_int_eq(pl.write_rc, 0);
  ck_assert_int_eq(pl.lose_rc, 0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  ck_assert_msg(strstr(c->lost_reason.message, "did not answer") == NULL, "server: %s",
                c->lost_reason.message);
  tu_run_until(x.r, cpeer_at_end, &x.p, 10.0);
  cpeer_join(&x.p, x.r);
  check_peer_got_all(&x, pl.total, c);
  fx_free(&x);
  free(pl.stream);
}
END_TEST

/* Set while lose_connection already waits: _i: transport * 2 + (0: 0 s, 1: 0.2 s). */
START_TEST(test_set_while_waiting) {
  double value = _i % 2 ? 0.2 : 0;
  fixture x;
  fx_init(&x, _i / 2, 30.0);
  plan pl = {.total = 1000, .set = -1};
  pl.stream = make_stream(pl.total);
  x.f.user = &pl;
  x.f.conn_config.on_made = write_and_lose;
  x.p.answer = 1;
  cpeer_start(&x.p);
  tu_run_until(x.r, cpeer_at_end, &x.p, 10.0); /* our close_notify / FIN arrived */
  tu_settle(x.r, 0.05);
  tu_conn *c = tu_factory_conn(&x.f, 0);
  ck_assert_msg(x.f.lost == 0, "lost before the peer answered: %s", c->lost_reason.message);
  ck_assert_int_eq(weft_transport_set_close_timeout(c->transport, value), 0);
  /* TCP waits 5 s, TLS 30 s by the options: this deadline is the new value's. */
  tu_wait_int(x.r, &x.f.lost, 1, value > 0 ? 3.0 : 1.0);
  ck_assert_int_eq(atomic_load(&x.p.go), 0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  char want[96];
  snprintf(want, sizeof want, "did not answer %s within %.3g s",
           x.tls ? "close_notify" : "with its FIN", value);
  ck_assert_msg(strstr(c->lost_reason.message, want), "server: %s (want \"%s\")",
                c->lost_reason.message, want);
  cpeer_join(&x.p, x.r);
  check_peer_got_all(&x, pl.total, c);
  fx_free(&x);
  free(pl.stream);
}
END_TEST

/* From another transport's connection_lost: two peers, both servers waiting for them; the
 * first peer answers, and the first server's connection_lost sets the second's to 0. */
static int other_rc = 1;

static void set_other_on_lost(tu_conn *c, weft_transport *t, const weft_reason *reason) {
  (void)t;
  (void)reason;
  tu_conn *other = tu_factory_conn(c->factory, 1);
  if (c->index == 0 && other && other->transport)
    other_rc = weft_transport_set_close_timeout(other->transport, 0);
}

START_TEST(test_set_from_other_connection_lost) {
  fixture x;
  fx_init(&x, _i, 30.0);
  plan pl = {.total = 1000, .set = -1};
  pl.stream = make_stream(pl.total);
  x.f.user = &pl;
  x.f.conn_config.on_made = write_and_lose;
  x.f.conn_config.on_lost = set_other_on_lost;
  other_rc = 1;
  cpeer q = x.p; /* the second peer */
  x.p.answer = 1;
  cpeer_start(&x.p);
  tu_run_until(x.r, cpeer_at_end, &x.p, 10.0);
  cpeer_start(&q);
  tu_run_until(x.r, cpeer_at_end, &q, 10.0);
  tu_settle(x.r, 0.05);
  ck_assert_int_eq(x.f.made, 2);
  ck_assert_int_eq(x.f.lost, 0);
  cpeer_go(&x.p); /* the first answers */
  tu_wait_int(x.r, &x.f.lost, 2, 3.0);
  ck_assert_int_eq(other_rc, 0);
  ck_assert_int_eq(atomic_load(&q.go), 0); /* the second never answered */
  tu_conn *c0 = tu_factory_conn(&x.f, 0), *c1 = tu_factory_conn(&x.f, 1);
  ck_assert_msg(c0->lost_reason.code == WEFT_OK, "server 0: %s", c0->lost_reason.message);
  ck_assert_msg(strstr(c0->lost_reason.message, "did not answer") == NULL, "server 0: %s",
                c0->lost_reason.message);
  ck_assert_msg(c1->lost_reason.code == WEFT_OK, "server 1: %s", c1->lost_reason.message);
  ck_assert_msg(strstr(c1->lost_reason.message, "within 0 s"), "server 1: %s",
                c1->lost_reason.message);
  cpeer_join(&x.p, x.r);
  cpeer_join(&q, x.r);
  check_peer_got_all(&x, pl.total, c0);
  x.p = q;
  check_peer_got_all(&x, pl.total, c1);
  fx_free(&x);
  free(pl.stream);
}
END_TEST

/* --- 4. Bad input -------------------------------------------------------------------------- */

typedef struct bad_results {
  int rc[8];
  int lost_rc;
  int lost_rc_bad;
} bad_results;

static void bad_made(tu_conn *c, weft_transport *t) {
  bad_results *b = c->factory->user;
  b->rc[0] = weft_transport_set_close_timeout(NULL, 0);
  b->rc[1] = weft_transport_set_close_timeout(t, 0); /* the value that must survive */
  b->rc[2] = weft_transport_set_close_timeout(t, -1);
  b->rc[3] = weft_transport_set_close_timeout(t, NAN);
  b->rc[4] = weft_transport_set_close_timeout(t, 1e7);
  b->rc[5] = weft_transport_set_close_timeout(t, INFINITY);
  b->rc[6] = weft_transport_set_close_timeout(t, -INFINITY);
  b->rc[7] = weft_transport_set_close_timeout(t, -1e-9);
  weft_transport_write(t, "x", 1); /* pattern byte 0 is not 'x': only the count matters */
  weft_transport_lose_connection(t);
}

static void bad_lost(tu_conn *c, weft_transport *t, const weft_reason *reason) {
  bad_results *b = c->factory->user;
  (void)reason;
  b->lost_rc = weft_transport_set_close_timeout(t, 1);
  b->lost_rc_bad = weft_transport_set_close_timeout(t, NAN);
}

START_TEST(test_bad_input) {
  fixture x;
  fx_init(&x, _i, 30.0);
  bad_results b = {{0}, 0, 0};
  x.f.user = &b;
  x.f.conn_config.on_made = bad_made;
  x.f.conn_config.on_lost = bad_lost;
  cpeer_start(&x.p);
  /* The refused values left the 0 in force: lost without waiting for the silent peer. */
  tu_wait_int(x.r, &x.f.lost, 1, 3.0);
  ck_assert_int_eq(b.rc[0], WEFT_EINVAL);
  ck_assert_int_eq(b.rc[1], 0);
  for (int i = 2; i < 8; i++)
    ck_assert_msg(b.rc[i] == WEFT_EINVAL, "value %d: %s", i, weft_err_name(b.rc[i]));
  ck_assert_int_eq(b.lost_rc, WEFT_ECLOSED);
  ck_assert_int_eq(b.lost_rc_bad, WEFT_EINVAL);
  tu_conn *c = tu_factory_conn(&x.f, 0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  ck_assert_msg(strstr(c->lost_reason.message, "did not answer") == NULL, "server: %s",
                c->lost_reason.message);
  cpeer_join(&x.p, x.r);
  ck_assert_uint_eq(x.p.rx, 1);
  ck_assert_int_eq(x.p.end, 1);
  fx_free(&x);
}
END_TEST

/* The limits themselves are accepted: 1e6 and a tiny positive value. */
static void limits_made(tu_conn *c, weft_transport *t) {
  bad_results *b = c->factory->user;
  b->rc[0] = weft_transport_set_close_timeout(t, 1e6);
  b->rc[1] = weft_transport_set_close_timeout(t, 1e-9);
  b->rc[2] = weft_transport_set_close_timeout(t, 1e6);
  weft_transport_abort_connection(t);
}

START_TEST(test_limits_accepted) {
  fixture x;
  fx_init(&x, 0, 30.0);
  bad_results b = {{1, 1, 1}, 0, 0};
  x.f.user = &b;
  x.f.conn_config.on_made = limits_made;
  cpeer_start(&x.p);
  tu_wait_int(x.r, &x.f.lost, 1, 5.0);
  ck_assert_int_eq(b.rc[0], 0);
  ck_assert_int_eq(b.rc[1], 0);
  ck_assert_int_eq(b.rc[2], 0);
  cpeer_join(&x.p, x.r);
  fx_free(&x);
}
END_TEST

/* --- 5. Above the options' ----------------------------------------------------------------- */

START_TEST(test_longer_than_options) {
  fixture x;
  fx_init(&x, _i, 0.1);
  plan pl = {.total = 1000, .set = 2.0};
  pl.stream = make_stream(pl.total);
  x.f.user = &pl;
  x.f.conn_config.on_made = write_and_lose;
  x.p.answer = 1;
  cpeer_start(&x.p);
  tu_run_until(x.r, cpeer_at_end, &x.p, 10.0);
  tu_settle(x.r, 0.5); /* the options' 0.1 s would have ended the wait by now */
  tu_conn *c = tu_factory_conn(&x.f, 0);
  ck_assert_msg(x.f.lost == 0, "lost before the peer answered: %s", c->lost_reason.message);
  cpeer_go(&x.p);
  tu_wait_int(x.r, &x.f.lost, 1, 5.0);
  ck_assert_int_eq(pl.set_rc, 0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  ck_assert_str_eq(c->lost_reason.message, x.tls ? "TLS connection closed locally (close_notify "
                                                   "exchanged)"
                                                 : "connection closed locally");
  cpeer_join(&x.p, x.r);
  check_peer_got_all(&x, pl.total, c);
  fx_free(&x);
  free(pl.stream);
}
END_TEST

static Suite *close_timeout_suite(void) {
  Suite *s = suite_create("close_timeout");
  TCase *tc = tcase_create("close_timeout");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, test_default_waits_for_peer, 0, 3);
  tcase_add_loop_test(tc, test_default_options_timeout_ends_wait, 0, 2);
  tcase_add_loop_test(tc, test_zero_closes_without_the_peer, 0, 3);
  tcase_add_loop_test(tc, test_zero_with_pending_output, 0, 3);
  tcase_add_loop_test(tc, test_zero_with_staged_records, 2, 4); /* the controls */
  tcase_add_loop_test(tc, test_zero_set_from_callbacks, 0, 3 * FROM_COUNT);
  tcase_add_loop_test(tc, test_set_while_waiting, 0, 6);
  tcase_add_loop_test(tc, test_set_from_other_connection_lost, 0, 3);
  tcase_add_loop_test(tc, test_bad_input, 0, 3);
  tcase_add_test(tc, test_limits_accepted);
  tcase_add_loop_test(tc, test_longer_than_options, 0, 3);
  suite_add_tcase(s, tc);
  /* Regressions (found by this suite, fixed in lib/transport.c proceed_close and
   * on_shutdown_writable): with a close time-out of 0, a close_notify that met a full socket,
   * and TLS records still staged for a full socket, were dropped when the socket closed. */
  TCase *full = tcase_create("full_socket");
  tcase_set_timeout(full, 60);
  tcase_add_loop_test(full, test_zero_with_staged_records, 0, 2);
  tcase_add_loop_test(full, test_zero_close_notify_on_full_socket, 0, 2);
  suite_add_tcase(s, full);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(close_timeout_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
