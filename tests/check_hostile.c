/* tests/check_hostile.c: hostile, broken and greedy peers against weft servers, and the
 * server-side limits that defend against them: random bytes, truncated and malformed
 * ClientHellos (a huge ALPN list, inconsistent ALPN lengths), silent clients, resets during
 * the handshake and during a transfer, a client that never reads (write time-out), plain HTTP
 * on a TLS port, a TLS client on a plain port, the per-listener connection limit, and the
 * back-off when accept() runs out of descriptors (in a child process with a low
 * RLIMIT_NOFILE).
 *
 * After every hostile case the server must still serve a normal weft client (full handshake,
 * echo, clean close), and the number of open descriptors must be what it was before the case,
 * once the reactor has settled. Memory is checked by running the suite under valgrind
 * (CK_FORK=no ./libtool --mode=execute valgrind --leak-check=full --error-exitcode=1
 * tests/check_hostile) and in a build configured with --enable-sanitizers. HOSTILE_VERBOSE=1 in
 * the environment prints what weft reported for each case.
 *
 * Hostile peers are raw sockets, or an OpenSSL client driven by an event on the reactor's own
 * event_base (no threads), or ClientHellos captured from an in-memory OpenSSL client and edited
 * by hand. Nothing sleeps to wait for an event: the reactor runs until a condition holds or a
 * deadline passes. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "testutil.h"
#include "tlsutil.h"

#define RX_STR(c) ((c)->rx ? (const char *)(c)->rx : "")

#define ck_assert_reason(r, expect_code)                                                           \
  ck_assert_msg((r)->code == (expect_code), "%s: got %s (%s), expected %s", #r,                    \
                weft_err_name((r)->code), (r)->message, weft_err_name(expect_code))

/* With HOSTILE_VERBOSE set in the environment, prints what weft said about each case (to see
 * OpenSSL's words behind the assertions). */
static void show_reason(const char *what, const tu_reason *r) {
  if (getenv("HOSTILE_VERBOSE"))
    fprintf(stderr, "%s: %s (tls_alert %d, alert_sent %d, errno %d): %s\n", what,
            weft_err_name(r->code), r->tls_alert, r->alert_sent, r->sys_errno, r->message);
}

static int str_contains(const char *haystack, const char *needle) {
  return haystack && strcasestr(haystack, needle) != NULL;
}

/* Server protocol list used wherever ALPN matters. */
static const char *const server_protocols[] = {"h2", "http/1.1"};

/* --- A server under attack ------------------------------------------------------------------ */

typedef struct srv {
  weft_reactor *r;
  int tls;
  tu_pki pki;
  tu_factory server; /* the attacked server: echoes */
  tu_factory client; /* the normal weft client that checks the server still serves */
  weft_cert_options *sopts, *copts;
  weft_listener *listener;
  int port;
  int fds_before; /* open descriptors once the server listens, before the case */
} srv;

/* A reactor, factories and (for TLS) a PKI and options with a 10 s handshake time-out, so a
 * server that hangs shows up as WEFT_EHANDSHAKETIMEOUT rather than passing by accident.
 * Configure, then srv_listen. */
static void srv_init(srv *s, int tls) {
  memset(s, 0, sizeof *s);
  s->tls = tls;
  s->r = tu_reactor_new();
  tu_factory_init(&s->server);
  tu_factory_init(&s->client);
  s->server.conn_config.echo = 1;
  if (tls) {
    tu_pki_init(&s->pki);
    s->sopts = tu_server_options(&s->pki);
    s->copts = tu_client_options(&s->pki);
    tu_check_opt(s->sopts, weft_cert_options_set_handshake_timeout(s->sopts, 10.0));
    /* A build without ALPN and NPN (configure --disable-alpn --disable-npn) refuses a list;
     * the hostile cases still run there, only the ALPN-specific ones skip. */
    if (weft_protocol_negotiation_mechanisms() != 0)
      tu_check_opt(s->sopts, weft_cert_options_set_next_protocols(s->sopts, server_protocols, 2));
  }
}

/* ALPN-specific cases cannot run in a build without ALPN: say so and pass. */
static int alpn_missing(const char *test) {
  if (weft_protocol_negotiation_mechanisms() & WEFT_MECH_ALPN)
    return 0;
  printf("SKIP: %s: needs ALPN, this build was configured with --disable-alpn\n", test);
  return 1;
}

static void srv_listen(srv *s) {
  if (s->tls)
    s->listener = tu_listen_ssl_local(s->r, &s->server, s->sopts, &s->port);
  else
    s->listener = tu_listen_tcp_local(s->r, &s->server, &s->port);
  s->fds_before = tu_count_fds();
}

static int server_all_lost(void *arg) {
  tu_factory *f = arg;
  return f->lost == f->made;
}

/* A normal client (TLS with verification when the server is TLS) connects, sees its bytes
 * echoed and closes cleanly; the server side ends cleanly too. */
static void srv_check_serves(srv *s) {
  int index = s->client.nconns;
  int server_made = s->server.made;
  if (s->tls)
    tu_connect_ssl_local(s->r, &s->client, s->port, s->copts, "localhost");
  else
    tu_connect_tcp_local(s->r, &s->client, s->port);
  tu_conn *c = tu_wait_conn(s->r, &s->client, index, 20.0);
  ck_assert_int_eq(c->made, 1);
  if (s->tls)
    ck_assert_msg(weft_transport_is_tls(c->transport), "the check client is not TLS");
  tu_conn_write_str(c, "still serving\n");
  tu_wait_size(s->r, &c->rx_len, 14, 20.0);
  ck_assert_msg(tu_conn_rx_equals(c, "still serving\n", 14), "echo: '%s'", RX_STR(c));
  ck_assert_int_eq(s->server.made, server_made + 1);
  ck_assert_int_eq(weft_transport_lose_connection(c->transport), 0);
  tu_wait_int(s->r, &c->lost, 1, 20.0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "check client lost: %s: %s",
                weft_err_name(c->lost_reason.code), c->lost_reason.message);
  tu_run_until(s->r, server_all_lost, &s->server, 20.0);
}

static int no_connections(void *arg) {
  return weft_reactor_connection_count(arg) == 0;
}

/* Every connection is gone and every descriptor the case opened is closed again. */
static void srv_check_no_leak(srv *s) {
  tu_run_until(s->r, no_connections, s->r, 20.0);
  tu_settle(s->r, 0.1);
  ck_assert_uint_eq(weft_reactor_connection_count(s->r), 0);
  ck_assert_uint_eq(weft_listener_connection_count(s->listener), 0);
  int fds = tu_count_fds();
  if (getenv("HOSTILE_VERBOSE"))
    fprintf(stderr, "descriptors: %d before the case, %d after\n", s->fds_before, fds);
  ck_assert_msg(fds == s->fds_before, "%d descriptors open, %d before the case", fds,
                s->fds_before);
}

static void srv_free(srv *s) {
  tu_factory_check(&s->server);
  tu_factory_check(&s->client);
  weft_reactor_free(s->r);
  tu_factory_check(&s->server);
  tu_factory_check(&s->client);
  tu_factory_cleanup(&s->server);
  tu_factory_cleanup(&s->client);
  weft_cert_options_unref(s->sopts);
  weft_cert_options_unref(s->copts);
  if (s->tls)
    tu_pki_free(&s->pki);
}

/* Waits for the server's only handshake failure, lets any extra callback show up, checks there
 * was exactly one, no protocol was built, and the message is not empty. */
static const tu_reason *srv_wait_handshake_failed(srv *s, double seconds) {
  tu_wait_int(s->r, &s->server.handshake_failed, 1, seconds);
  tu_settle(s->r, 0.05);
  ck_assert_int_eq(s->server.handshake_failed, 1);
  ck_assert_int_eq(s->server.built, 0);
  const tu_reason *r = &s->server.last_handshake_failed;
  show_reason("server handshake_failed", r);
  ck_assert_msg(r->code < 0, "handshake_failed with %s", weft_err_name(r->code));
  ck_assert_msg(r->message[0] != '\0', "handshake_failed with an empty message");
  return r;
}

/* --- Raw sockets -------------------------------------------------------------------------- */

static void raw_send_all(int fd, const void *data, size_t len) {
  const uint8_t *p = data;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    ck_assert_msg(n > 0, "send: %s", n < 0 ? strerror(errno) : "0 bytes");
    p += n;
    len -= (size_t)n;
  }
}

/* How a raw socket saw the server close it. */
typedef struct raw_end {
  int eof;          /* recv returned 0 */
  int reset;        /* recv failed with ECONNRESET */
  size_t bytes;     /* bytes read before the end */
  uint8_t head[64]; /* the first of them (a TLS alert record, typically) */
} raw_end;

/* Reads FD until EOF or a reset, for at most 5 s and 1 MiB; fails the test otherwise. The
 * server has closed its side already (its handshake_failed has run), so this cannot hang. */
static void raw_read_to_end(int fd, raw_end *end) {
  memset(end, 0, sizeof *end);
  struct timeval tv = {5, 0};
  ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  uint8_t buf[16384];
  while (end->bytes < (1u << 20)) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0) {
      end->eof = 1;
      return;
    }
    if (n < 0) {
      ck_assert_msg(errno == ECONNRESET, "raw socket: %s instead of EOF or reset", strerror(errno));
      end->reset = 1;
      return;
    }
    if (end->bytes < sizeof end->head)
      memcpy(end->head + end->bytes, buf,
             (size_t)n < sizeof end->head - end->bytes ? (size_t)n : sizeof end->head - end->bytes);
    end->bytes += (size_t)n;
  }
  ck_abort_msg("raw socket: more than 1 MiB and no end");
}

/* A one-shot readiness flag for a raw descriptor, served by the reactor's event_base, so that
 * run_until wakes up when the descriptor becomes readable. */
typedef struct fd_watch {
  struct event *ev;
  int ready;
} fd_watch;

static void on_fd_ready(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  ((fd_watch *)arg)->ready = 1;
}

static void fd_watch_start(fd_watch *w, weft_reactor *r, int fd) {
  w->ready = 0;
  w->ev = event_new(weft_reactor_event_base(r), fd, EV_READ, on_fd_ready, w);
  ck_assert_ptr_nonnull(w->ev);
  ck_assert_int_eq(event_add(w->ev, NULL), 0);
}

static int fd_watch_ready(void *arg) {
  return ((fd_watch *)arg)->ready;
}

static void fd_watch_stop(fd_watch *w) {
  event_free(w->ev);
  w->ev = NULL;
}

/* --- ClientHellos made by an in-memory OpenSSL client ------------------------------------- */

/* The first flight of an OpenSSL client (TLS 1.2 to 1.3, SNI localhost), offering ALPN WIRE
 * (wire form; NULL: none): one or more TLS records holding the ClientHello. Malloc'd. */
static uint8_t *capture_client_hello(const uint8_t *wire, size_t wire_len, size_t *len) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  ck_assert_ptr_nonnull(ctx);
  ck_assert_int_eq(SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION), 1);
  SSL *ssl = SSL_new(ctx);
  ck_assert_ptr_nonnull(ssl);
  BIO *rbio = BIO_new(BIO_s_mem());
  BIO *wbio = BIO_new(BIO_s_mem());
  ck_assert_ptr_nonnull(rbio);
  ck_assert_ptr_nonnull(wbio);
  SSL_set_bio(ssl, rbio, wbio);
  SSL_set_connect_state(ssl);
  ck_assert_int_eq(SSL_set_tlsext_host_name(ssl, "localhost"), 1);
  if (wire)
    ck_assert_int_eq(SSL_set_alpn_protos(ssl, wire, (unsigned)wire_len), 0); /* 0: success */
  int rc = SSL_do_handshake(ssl);
  ck_assert_int_eq(rc, -1);
  ck_assert_int_eq(SSL_get_error(ssl, rc), SSL_ERROR_WANT_READ);
  char *data = NULL;
  long n = BIO_get_mem_data(wbio, &data);
  ck_assert_msg(n > 5 && data, "no ClientHello written (%ld bytes)", n);
  uint8_t *hello = malloc((size_t)n);
  ck_assert_ptr_nonnull(hello);
  memcpy(hello, data, (size_t)n);
  *len = (size_t)n;
  ck_assert_int_eq(hello[0], 0x16); /* handshake record */
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return hello;
}

static unsigned be16(const uint8_t *p) {
  return (unsigned)p[0] << 8 | p[1];
}

/* Finds the ALPN extension (type 16) of a ClientHello that fits in one record; returns the
 * offset of its data (the 2-byte list length) and stores the extension data length. */
static size_t find_alpn_extension(const uint8_t *rec, size_t len, size_t *ext_len) {
  ck_assert_uint_ge(len, 5 + 4 + 2 + 32 + 1);
  ck_assert_uint_eq(5 + be16(rec + 3), len); /* one record */
  ck_assert_int_eq(rec[5], 1);               /* client_hello */
  size_t p = 5 + 4 + 2 + 32;                 /* header, handshake header, version, random */
  p += 1 + rec[p];                           /* session id */
  ck_assert_uint_le(p + 2, len);
  p += 2 + be16(rec + p); /* cipher suites */
  ck_assert_uint_le(p + 1, len);
  p += 1 + rec[p]; /* compression methods */
  ck_assert_uint_le(p + 2, len);
  size_t end = p + 2 + be16(rec + p);
  ck_assert_uint_eq(end, len);
  p += 2;
  while (p + 4 <= end) {
    unsigned type = be16(rec + p), elen = be16(rec + p + 2);
    ck_assert_uint_le(p + 4 + elen, end);
    if (type == 16) {
      *ext_len = elen;
      return p + 4;
    }
    p += 4 + elen;
  }
  ck_abort_msg("no ALPN extension in the ClientHello");
  return 0;
}

/* --- An OpenSSL client driven by the reactor's event_base ---------------------------------- */

typedef struct ossl_peer {
  int fd;
  SSL_CTX *ctx;
  SSL *ssl;
  struct event *rev, *wev; /* readable (persistent) / writable (one-shot) */
  int done;                /* the handshake completed */
  int failed;              /* the handshake failed */
  int eof;                 /* close_notify or EOF after the handshake */
  int read_after;          /* keep reading (and collect plaintext) after the handshake */
  char error[256];
  char selected[256]; /* ALPN result, "" if none */
  char rx[256];
  size_t rx_len;
} ossl_peer;

static void peer_error(ossl_peer *p, const char *what) {
  char ossl[200] = "";
  unsigned long e = ERR_get_error();
  if (e)
    ERR_error_string_n(e, ossl, sizeof ossl);
  snprintf(p->error, sizeof p->error, "%s: %s", what, ossl);
  ERR_clear_error();
}

static void peer_read(ossl_peer *p) {
  for (int i = 0; i < 64; i++) {
    char buf[4096];
    int n = SSL_read(p->ssl, buf, sizeof buf);
    if (n > 0) {
      size_t room = sizeof p->rx - 1 - p->rx_len;
      size_t take = (size_t)n < room ? (size_t)n : room;
      memcpy(p->rx + p->rx_len, buf, take);
      p->rx_len += take;
      p->rx[p->rx_len] = '\0';
      continue;
    }
    int err = SSL_get_error(p->ssl, n);
    if (err == SSL_ERROR_WANT_READ)
      break;
    if (err == SSL_ERROR_WANT_WRITE) {
      event_add(p->wev, NULL);
      break;
    }
    p->eof = 1;
    event_del(p->rev);
    break;
  }
  ERR_clear_error();
}

static void peer_step(ossl_peer *p) {
  if (p->failed)
    return;
  if (p->done) {
    if (p->read_after && !p->eof)
      peer_read(p);
    return;
  }
  int rc = SSL_do_handshake(p->ssl);
  if (rc == 1) {
    p->done = 1;
    const unsigned char *sel = NULL;
    unsigned sel_len = 0;
    SSL_get0_alpn_selected(p->ssl, &sel, &sel_len);
    snprintf(p->selected, sizeof p->selected, "%.*s", (int)sel_len, sel ? (const char *)sel : "");
    if (!p->read_after)
      event_del(p->rev); /* from now on it never reads */
    else
      peer_read(p);
    return;
  }
  int err = SSL_get_error(p->ssl, rc);
  if (err == SSL_ERROR_WANT_READ)
    return;
  if (err == SSL_ERROR_WANT_WRITE) {
    event_add(p->wev, NULL);
    return;
  }
  p->failed = 1;
  peer_error(p, "handshake");
  event_del(p->rev);
}

static void on_peer_event(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  peer_step(arg);
}

/* Connects to 127.0.0.1:PORT and starts a TLS handshake offering ALPN WIRE (may be NULL). No
 * verification: the peer is the hostile one, not the one checking. */
static void peer_start(ossl_peer *p, weft_reactor *r, int port, const uint8_t *wire,
                       size_t wire_len) {
  memset(p, 0, sizeof *p);
  p->fd = tu_raw_connect("127.0.0.1", port);
  ck_assert_int_eq(fcntl(p->fd, F_SETFL, fcntl(p->fd, F_GETFL) | O_NONBLOCK), 0);
  p->ctx = SSL_CTX_new(TLS_client_method());
  ck_assert_ptr_nonnull(p->ctx);
  p->ssl = SSL_new(p->ctx);
  ck_assert_ptr_nonnull(p->ssl);
  ck_assert_int_eq(SSL_set_fd(p->ssl, p->fd), 1);
  SSL_set_connect_state(p->ssl);
  if (wire)
    ck_assert_int_eq(SSL_set_alpn_protos(p->ssl, wire, (unsigned)wire_len), 0);
  struct event_base *base = weft_reactor_event_base(r);
  p->rev = event_new(base, p->fd, EV_READ | EV_PERSIST, on_peer_event, p);
  p->wev = event_new(base, p->fd, EV_WRITE, on_peer_event, p);
  ck_assert_ptr_nonnull(p->rev);
  ck_assert_ptr_nonnull(p->wev);
  ck_assert_int_eq(event_add(p->rev, NULL), 0);
  peer_step(p); /* writes the ClientHello */
}

static int peer_handshake_ended(void *arg) {
  ossl_peer *p = arg;
  return p->done || p->failed;
}

/* Frees the peer; with RESET the socket is closed with SO_LINGER 0 (the server sees a RST). */
static void peer_free(ossl_peer *p, int reset) {
  if (p->rev)
    event_free(p->rev);
  if (p->wev)
    event_free(p->wev);
  p->rev = p->wev = NULL;
  SSL_free(p->ssl);
  SSL_CTX_free(p->ctx);
  p->ssl = NULL;
  p->ctx = NULL;
  if (p->fd >= 0) {
    if (reset)
      tu_raw_reset(p->fd);
    else
      close(p->fd);
  }
  p->fd = -1;
  ERR_clear_error();
}

/* --- Garbage instead of a ClientHello ------------------------------------------------------ */

START_TEST(test_random_bytes) {
  srv s;
  srv_init(&s, 1);
  srv_listen(&s);

  uint8_t junk[4096];
  uint32_t x = 0x9e3779b9u; /* xorshift32: the same bytes every run */
  for (size_t i = 0; i < sizeof junk; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    junk[i] = (uint8_t)(x >> 24);
  }
  ck_assert_msg(junk[0] != 0x16, "the junk starts like a handshake record");
  int raw = tu_raw_connect("127.0.0.1", s.port);
  raw_send_all(raw, junk, sizeof junk);
  const tu_reason *r = srv_wait_handshake_failed(&s, 10.0);
  ck_assert_msg(r->code == WEFT_ETLS || r->code == WEFT_ETLSVERSION, "got %s: %s",
                weft_err_name(r->code), r->message);
  ck_assert_msg(str_contains(r->message, "TLS") || str_contains(r->message, "SSL"),
                "message names no TLS problem: %s", r->message);
  raw_end end;
  raw_read_to_end(raw, &end);
  ck_assert(end.eof || end.reset);
  close(raw);

  srv_check_serves(&s);
  srv_check_no_leak(&s);
  srv_free(&s);
}
END_TEST

START_TEST(test_truncated_client_hello) {
  srv s;
  srv_init(&s, 1);
  srv_listen(&s);

  size_t len = 0;
  uint8_t *hello = capture_client_hello(NULL, 0, &len);
  double start = tu_now();
  int raw = tu_raw_connect("127.0.0.1", s.port);
  raw_send_all(raw, hello, len / 2);
  ck_assert_int_eq(shutdown(raw, SHUT_WR), 0); /* and close: the server reads EOF mid-record */
  const tu_reason *r = srv_wait_handshake_failed(&s, 10.0);
  double elapsed = tu_now() - start;
  ck_assert_msg(r->code == WEFT_ETRUNCATED || r->code == WEFT_ETLS, "got %s: %s",
                weft_err_name(r->code), r->message);
  ck_assert_msg(elapsed < 5.0, "the server took %.2f s to notice", elapsed);
  raw_end end;
  raw_read_to_end(raw, &end);
  ck_assert(end.eof || end.reset);
  close(raw);
  free(hello);

  srv_check_serves(&s);
  srv_check_no_leak(&s);
  srv_free(&s);
}
END_TEST

/* --- ALPN abuse -------------------------------------------------------------------------------- */

/* About 60 KiB of valid protocol names (250 bytes each); with OVERLAP the last one is
 * "http/1.1", which the server also lists. */
static uint8_t *huge_alpn_list(int overlap, size_t *len) {
  enum { NAME = 250, COUNT = 245 };
  uint8_t *wire = malloc((size_t)COUNT * (NAME + 1) + 16);
  ck_assert_ptr_nonnull(wire);
  size_t n = 0;
  for (int i = 0; i < COUNT; i++) {
    if (overlap && i == COUNT - 1) {
      wire[n++] = 8;
      memcpy(wire + n, "http/1.1", 8);
      n += 8;
      break;
    }
    wire[n++] = NAME;
    char name[NAME + 1];
    snprintf(name, sizeof name, "x-hostile-%04d-", i);
    size_t l = strlen(name);
    memset(name + l, 'a' + i % 26, NAME - l);
    memcpy(wire + n, name, NAME);
    n += NAME;
  }
  ck_assert_uint_ge(n, 60000);
  ck_assert_uint_le(n, 65535 - 2);
  *len = n;
  return wire;
}

START_TEST(test_huge_alpn) {
  if (alpn_missing("test_huge_alpn"))
    return;
  int overlap = _i;
  srv s;
  srv_init(&s, 1);
  srv_listen(&s);

  size_t wire_len = 0;
  uint8_t *wire = huge_alpn_list(overlap, &wire_len);
  ossl_peer p;
  peer_start(&p, s.r, s.port, wire, wire_len);
  p.read_after = 1;
  tu_run_until(s.r, peer_handshake_ended, &p, 20.0);

  if (!overlap) {
    /* Nothing in common: the server fails the handshake as RFC 7301 says. */
    const tu_reason *r = srv_wait_handshake_failed(&s, 10.0);
    ck_assert_reason(r, WEFT_ENOPROTOCOL);
    ck_assert_int_eq(r->tls_alert, 120);
    ck_assert_int_eq(r->alert_sent, 1);
    ck_assert_msg(p.failed && !p.done, "the hostile client completed its handshake");
    ck_assert_msg(str_contains(p.error, "no application protocol"), "client error: %s", p.error);
  } else {
    /* The server walks the whole list and picks its own protocol at the end of it. */
    ck_assert_msg(p.done, "handshake failed: %s", p.error);
    ck_assert_str_eq(p.selected, "http/1.1");
    tu_conn *sc = tu_wait_conn(s.r, &s.server, 0, 20.0);
    tu_wait_int(s.r, &sc->made, 1, 20.0);
    ck_assert_int_eq(sc->proto_made.present, 1);
    ck_assert_str_eq(sc->proto_made.name, "http/1.1");
    ck_assert_int_eq(sc->proto_made.mechanism, WEFT_NEGOTIATED_ALPN);
    ck_assert_int_eq(SSL_write(p.ssl, "ping", 4), 4);
    tu_wait_size(s.r, &p.rx_len, 4, 20.0);
    ck_assert_str_eq(p.rx, "ping");
    ck_assert_int_eq(s.server.handshake_failed, 0);
  }
  peer_free(&p, 0);
  free(wire);
  tu_run_until(s.r, server_all_lost, &s.server, 20.0);

  srv_check_serves(&s);
  srv_check_no_leak(&s);
  srv_free(&s);
}
END_TEST

/* Three ways to make the ALPN extension inconsistent while every enclosing length stays
 * right: the list length one too big, one too small, and a name length running past the
 * list. OpenSSL must answer each with a decode_error alert (50). */
START_TEST(test_malformed_alpn) {
  if (alpn_missing("test_malformed_alpn"))
    return;
  int variant = _i;
  srv s;
  srv_init(&s, 1);
  srv_listen(&s);

  static const uint8_t offer[] = "\x02h2\x08http/1.1";
  size_t len = 0;
  uint8_t *hello = capture_client_hello(offer, sizeof offer - 1, &len);
  size_t ext_len = 0;
  size_t at = find_alpn_extension(hello, len, &ext_len);
  ck_assert_uint_eq(ext_len, 2 + sizeof offer - 1);
  unsigned list_len = be16(hello + at);
  ck_assert_uint_eq(list_len, sizeof offer - 1);
  if (variant == 0)
    list_len++;
  else if (variant == 1)
    list_len--;
  if (variant <= 1) {
    hello[at] = (uint8_t)(list_len >> 8);
    hello[at + 1] = (uint8_t)list_len;
  } else {
    hello[at + 2] = 0xff; /* the first name claims 255 bytes of a 12-byte list */
  }

  int raw = tu_raw_connect("127.0.0.1", s.port);
  raw_send_all(raw, hello, len);
  const tu_reason *r = srv_wait_handshake_failed(&s, 10.0);
  ck_assert_msg(r->code == WEFT_ETLS || r->code == WEFT_ETLSALERT, "got %s: %s",
                weft_err_name(r->code), r->message);
  ck_assert_int_eq(r->tls_alert, 50); /* decode_error */
  ck_assert_int_eq(r->alert_sent, 1);
  ck_assert_msg(str_contains(r->message, "decode error") || str_contains(r->message, "extension"),
                "message: %s", r->message);
  raw_end end;
  raw_read_to_end(raw, &end);
  ck_assert(end.eof || end.reset);
  /* The alert reached the client: a record 21 (alert) whose body is fatal(2), 50. */
  ck_assert_msg(end.bytes >= 7, "no alert record before the close (%zu bytes)", end.bytes);
  ck_assert_int_eq(end.head[0], 21);
  ck_assert_int_eq(end.head[5], 2);
  ck_assert_int_eq(end.head[6], 50);
  close(raw);
  free(hello);

  srv_check_serves(&s);
  srv_check_no_leak(&s);
  srv_free(&s);
}
END_TEST

/* --- Silent, resetting and confused clients --------------------------------------------------- */

START_TEST(test_silent_client) {
  srv s;
  srv_init(&s, 1);
  tu_check_opt(s.sopts, weft_cert_options_set_handshake_timeout(s.sopts, 0.3));
  srv_listen(&s);

  double start = tu_now();
  int raw = tu_raw_connect("127.0.0.1", s.port);
  const tu_reason *r = srv_wait_handshake_failed(&s, 10.0);
  double elapsed = tu_now() - start;
  ck_assert_reason(r, WEFT_EHANDSHAKETIMEOUT);
  ck_assert_msg(elapsed >= 0.29 && elapsed < 5.0, "cut after %.3f s", elapsed);
  raw_end end;
  raw_read_to_end(raw, &end);
  ck_assert_msg(end.eof && end.bytes == 0, "silent client: eof %d, %zu bytes", end.eof, end.bytes);
  close(raw);

  srv_check_serves(&s);
  srv_check_no_leak(&s);
  srv_free(&s);
}
END_TEST

START_TEST(test_reset_mid_handshake) {
  srv s;
  srv_init(&s, 1);
  srv_listen(&s);

  size_t len = 0;
  uint8_t *hello = capture_client_hello(NULL, 0, &len);
  int raw = tu_raw_connect("127.0.0.1", s.port);
  fd_watch w;
  fd_watch_start(&w, s.r, raw);
  raw_send_all(raw, hello, len);
  /* The server answered (ServerHello ...) and now waits for the client's Finished. */
  tu_run_until(s.r, fd_watch_ready, &w, 10.0);
  fd_watch_stop(&w);
  ck_assert_int_eq(s.server.handshake_failed, 0);
  tu_raw_reset(raw);
  const tu_reason *r = srv_wait_handshake_failed(&s, 10.0);
  ck_assert_msg(r->code == WEFT_ECONNRESET, "got %s: %s", weft_err_name(r->code), r->message);
  free(hello);

  srv_check_serves(&s);
  srv_check_no_leak(&s);
  srv_free(&s);
}
END_TEST

/* --- A producer that respects flow control ---------------------------------------------------- */

#define PROD_CHUNK ((size_t)64 << 10)
#define PROD_HIGH ((size_t)1 << 20)
#define PROD_LOW ((size_t)256 << 10)

typedef struct producer {
  uint64_t limit; /* stop after this many bytes */
  uint64_t sent;  /* bytes accepted by weft_transport_write */
  size_t peak;    /* highest pending output seen */
  int runs;
  int write_errors;
  int last_write_error;
  int active; /* produce from write_drained */
  double made_at, lost_at;
  uint8_t chunk[PROD_CHUNK];
} producer;

static void produce(producer *x, weft_transport *t) {
  x->runs++;
  while (x->sent < x->limit && weft_transport_pending_output(t) < PROD_HIGH) {
    size_t n = x->limit - x->sent < PROD_CHUNK ? (size_t)(x->limit - x->sent) : PROD_CHUNK;
    tu_pattern_fill(x->chunk, n, x->sent);
    int rc = weft_transport_write(t, x->chunk, n);
    if (rc != 0) {
      x->write_errors++;
      x->last_write_error = rc;
      return;
    }
    x->sent += n;
    size_t pending = weft_transport_pending_output(t);
    if (pending > x->peak)
      x->peak = pending;
  }
}

static void producer_drained(tu_conn *c, weft_transport *t) {
  producer *x = c->user;
  if (x && x->active)
    produce(x, t);
}

static void producer_lost(tu_conn *c, weft_transport *t, const weft_reason *reason) {
  (void)t;
  (void)reason;
  producer *x = c->user;
  if (x)
    x->lost_at = tu_now();
}

START_TEST(test_reset_mid_transfer) {
  srv s;
  srv_init(&s, 1);
  srv_listen(&s);
  producer *x = calloc(1, sizeof *x);
  ck_assert_ptr_nonnull(x);
  x->limit = (uint64_t)8 << 20;

  ossl_peer p;
  peer_start(&p, s.r, s.port, NULL, 0);
  tu_run_until(s.r, peer_handshake_ended, &p, 20.0);
  ck_assert_msg(p.done, "handshake failed: %s", p.error);
  tu_conn *sc = tu_wait_conn(s.r, &s.server, 0, 20.0);
  tu_wait_int(s.r, &sc->made, 1, 20.0);
  sc->cfg.echo = 0;
  sc->cfg.on_drained = producer_drained;
  sc->cfg.on_lost = producer_lost;
  sc->user = x;
  ck_assert_int_eq(weft_transport_set_write_low_water(sc->transport, PROD_LOW), 0);
  x->active = 1;
  produce(x, sc->transport);

  /* The peer never reads: once the kernel buffers are full the server is stuck mid-transfer
   * with output pending. Then the peer resets. */
  tu_wait_size(s.r, &x->peak, PROD_HIGH, 20.0);
  ck_assert_msg(x->sent < x->limit, "the whole transfer fit in the buffers");
  ck_assert_uint_gt(weft_transport_pending_output(sc->transport), 0);
  peer_free(&p, 1);
  tu_wait_int(s.r, &sc->lost, 1, 20.0);
  tu_settle(s.r, 0.05);
  ck_assert_int_eq(sc->lost, 1);
  ck_assert_int_eq(s.server.lost, 1);
  ck_assert_int_eq(s.server.handshake_failed, 0);
  show_reason("reset mid-transfer", &sc->lost_reason);
  ck_assert_msg(sc->lost_reason.code == WEFT_ECONNRESET, "lost: %s: %s",
                weft_err_name(sc->lost_reason.code), sc->lost_reason.message);
  ck_assert_int_eq(x->write_errors, 0);
  sc->user = NULL;
  free(x);

  srv_check_serves(&s);
  srv_check_no_leak(&s);
  srv_free(&s);
}
END_TEST

/* --- A client that never reads: the write time-out ------------------------------------------- */

typedef enum never_reads_kind {
  NR_TLS = 0,     /* TLS, weft_transport_set_write_timeout in connection_made */
  NR_TLS_DEFAULT, /* TLS, weft_listener_set_write_timeout */
  NR_TCP,         /* plain TCP */
  NR_STARTTLS,    /* TCP upgraded with weft_transport_start_tls after the time-out was set */
  NR_KINDS
} never_reads_kind;

static const char *const never_reads_names[] = {"tls", "tls-listener-default", "tcp", "starttls"};

#define WRITE_TIMEOUT 0.5

typedef struct never_reads {
  never_reads_kind kind;
  producer x;
  weft_cert_options *starttls_opts;
  int made_rc; /* what the calls in connection_made returned */
} never_reads;

/* In connection_made: the time-out (unless the listener gives it), then for STARTTLS the
 * upgrade, before any byte of the client's ClientHello can be read as plaintext. */
static void nr_on_made(tu_conn *c, weft_transport *t) {
  never_reads *nr = c->factory->user;
  if (nr->kind != NR_TLS_DEFAULT)
    nr->made_rc = weft_transport_set_write_timeout(t, WRITE_TIMEOUT);
  if (nr->made_rc == 0 && nr->kind == NR_STARTTLS)
    nr->made_rc = weft_transport_start_tls(t, nr->starttls_opts, WEFT_TLS_SERVER, NULL);
}

static void nr_tls_started(tu_conn *c, weft_transport *t, int status) {
  never_reads *nr = c->factory->user;
  if (status == 0 && nr->x.active)
    produce(&nr->x, t);
}

/* Only the first connection is the victim; later ones (the check client) just echo. */
static void nr_on_build(tu_factory *f, tu_conn *c, weft_transport *t) {
  never_reads *nr = f->user;
  (void)t;
  if (c->index != 0)
    return;
  c->user = &nr->x;
  c->cfg.echo = 0;
  c->cfg.on_drained = producer_drained;
  c->cfg.on_lost = producer_lost;
  c->cfg.on_tls_started = nr_tls_started;
  c->cfg.on_made = nr_on_made;
  c->cfg.low_water = PROD_LOW;
}

START_TEST(test_never_reads) {
  never_reads_kind kind = (never_reads_kind)_i;
  srv s;
  srv_init(&s, kind == NR_TLS || kind == NR_TLS_DEFAULT);
  never_reads *nr = calloc(1, sizeof *nr);
  ck_assert_ptr_nonnull(nr);
  nr->kind = kind;
  nr->x.limit = (uint64_t)1 << 30; /* far more than any kernel buffers */
  s.server.user = nr;
  s.server.on_build = nr_on_build;
  tu_pki starttls_pki;
  if (kind == NR_STARTTLS) {
    tu_pki_init(&starttls_pki);
    nr->starttls_opts = tu_server_options(&starttls_pki);
  }
  srv_listen(&s);
  if (kind == NR_TLS_DEFAULT)
    ck_assert_int_eq(weft_listener_set_write_timeout(s.listener, WRITE_TIMEOUT), 0);

  /* The victim connects: an OpenSSL client that stops reading after its handshake, or a raw
   * TCP socket. */
  ossl_peer p;
  int raw = -1;
  memset(&p, 0, sizeof p);
  p.fd = -1;
  if (kind == NR_TCP)
    raw = tu_raw_connect("127.0.0.1", s.port);
  else
    peer_start(&p, s.r, s.port, NULL, 0);
  tu_conn *sc = tu_wait_conn(s.r, &s.server, 0, 20.0);
  tu_wait_int(s.r, &sc->made, 1, 20.0);
  ck_assert_msg(nr->made_rc == 0, "in connection_made: %s", weft_err_name(nr->made_rc));
  if (kind != NR_TCP) {
    tu_run_until(s.r, peer_handshake_ended, &p, 20.0);
    ck_assert_msg(p.done, "handshake failed: %s", p.error);
  }
  if (kind == NR_STARTTLS)
    tu_wait_int(s.r, &sc->tls_started, 1, 20.0);

  if (kind == NR_TLS) {
    /* Idle with nothing pending for twice the time-out: never cut. */
    tu_settle(s.r, 2 * WRITE_TIMEOUT + 0.1);
    ck_assert_msg(sc->lost == 0, "an idle connection was cut: %s", sc->lost_reason.message);
  }
  nr->x.active = 1;
  nr->x.made_at = tu_now();
  produce(&nr->x, sc->transport);

  tu_wait_int(s.r, &sc->lost, 1, 30.0);
  tu_settle(s.r, 0.05);
  ck_assert_int_eq(sc->lost, 1);
  show_reason(never_reads_names[kind], &sc->lost_reason);
  ck_assert_reason(&sc->lost_reason, WEFT_ETIMEDOUT);
  ck_assert_msg(str_contains(sc->lost_reason.message, "write timed out: the peer read nothing"),
                "message: %s", sc->lost_reason.message);
  ck_assert_msg(str_contains(sc->lost_reason.message, "0.5 s"), "message: %s",
                sc->lost_reason.message);
  /* Flow control held: pending output reached the high mark and never passed it by more than
   * one chunk; the producer ran again from write_drained while the kernel buffers filled. */
  ck_assert_msg(nr->x.peak >= PROD_HIGH && nr->x.peak <= PROD_HIGH + PROD_CHUNK,
                "%s: peak pending output %zu", never_reads_names[kind], nr->x.peak);
  ck_assert_int_eq(nr->x.write_errors, 0);
  ck_assert_uint_lt(nr->x.sent, nr->x.limit);
  double lived = nr->x.lost_at - nr->x.made_at;
  ck_assert_msg(lived >= WRITE_TIMEOUT - 0.01 && lived < 20.0, "cut after %.3f s", lived);

  if (kind == NR_TCP)
    close(raw);
  else
    peer_free(&p, 0);
  srv_check_serves(&s);
  srv_check_no_leak(&s);
  srv_free(&s);
  if (kind == NR_STARTTLS) {
    weft_cert_options_unref(nr->starttls_opts);
    tu_pki_free(&starttls_pki);
  }
  free(nr);
}
END_TEST

/* The write time-out also bounds a STARTTLS upgrade whose clear-text output before the
 * upgrade never leaves: the protocol hears it in tls_started, then in connection_lost. */
typedef struct starttls_stuck {
  weft_cert_options *opts;
  uint8_t *blob;
  size_t blob_len;
  int rc_timeout, rc_write, rc_start;
} starttls_stuck;

static void stuck_on_made(tu_conn *c, weft_transport *t) {
  starttls_stuck *st = c->factory->user;
  st->rc_timeout = weft_transport_set_write_timeout(t, WRITE_TIMEOUT);
  st->rc_write = weft_transport_write(t, st->blob, st->blob_len);
  st->rc_start = weft_transport_start_tls(t, st->opts, WEFT_TLS_SERVER, NULL);
}

START_TEST(test_write_timeout_during_starttls) {
  srv s;
  srv_init(&s, 0);
  starttls_stuck st;
  memset(&st, 0, sizeof st);
  tu_pki pki;
  tu_pki_init(&pki);
  st.opts = tu_server_options(&pki);
  st.blob_len = (size_t)32 << 20; /* more than any kernel buffers */
  st.blob = calloc(1, st.blob_len);
  ck_assert_ptr_nonnull(st.blob);
  s.server.user = &st;
  s.server.conn_config.echo = 0;
  s.server.conn_config.on_made = stuck_on_made;
  srv_listen(&s);

  int raw = tu_raw_connect("127.0.0.1", s.port); /* never reads, never says a word */
  tu_conn *sc = tu_wait_conn(s.r, &s.server, 0, 20.0);
  ck_assert_int_eq(st.rc_timeout, 0);
  ck_assert_int_eq(st.rc_write, 0);
  ck_assert_int_eq(st.rc_start, 0);
  tu_wait_int(s.r, &sc->lost, 1, 30.0);
  tu_settle(s.r, 0.05);
  ck_assert_int_eq(sc->tls_started, 1);
  ck_assert_int_eq(sc->tls_started_status, WEFT_ETIMEDOUT);
  ck_assert_int_eq(sc->lost, 1);
  show_reason("starttls stuck", &sc->lost_reason);
  ck_assert_reason(&sc->lost_reason, WEFT_ETIMEDOUT);
  ck_assert_msg(str_contains(sc->lost_reason.message, "write timed out"), "message: %s",
                sc->lost_reason.message);
  close(raw);
  free(st.blob);
  st.blob = NULL;

  s.server.conn_config.on_made = NULL;
  s.server.conn_config.echo = 1;
  srv_check_serves(&s);
  srv_check_no_leak(&s);
  srv_free(&s);
  weft_cert_options_unref(st.opts);
  tu_pki_free(&pki);
}
END_TEST

START_TEST(test_http_to_tls_port) {
  srv s;
  srv_init(&s, 1);
  srv_listen(&s);

  int raw = tu_raw_connect("127.0.0.1", s.port);
  static const char get[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  raw_send_all(raw, get, sizeof get - 1);
  const tu_reason *r = srv_wait_handshake_failed(&s, 10.0);
  ck_assert_msg(r->code == WEFT_ETLS || r->code == WEFT_ETLSVERSION, "got %s: %s",
                weft_err_name(r->code), r->message);
  ck_assert_msg(str_contains(r->message, "http request"), "message: %s", r->message);
  raw_end end;
  raw_read_to_end(raw, &end);
  ck_assert(end.eof || end.reset);
  close(raw);

  srv_check_serves(&s);
  srv_check_no_leak(&s);
  srv_free(&s);
}
END_TEST

/* The TCP server greets the first connection (the TLS client); the check client later gets a
 * plain echo. */
static void greet_first(tu_factory *f, tu_conn *c, weft_transport *t) {
  (void)f;
  (void)t;
  if (c->index == 0) {
    c->cfg.greeting = "hello\n";
    c->cfg.greeting_len = 6;
  }
}

START_TEST(test_tls_client_to_tcp_port) {
  srv s;
  srv_init(&s, 0);
  s.server.on_build = greet_first;
  srv_listen(&s);
  tu_pki pki;
  tu_pki_init(&pki);
  weft_cert_options *copts = tu_client_options(&pki);

  tu_factory client;
  tu_factory_init(&client);
  tu_connect_ssl_local(s.r, &client, s.port, copts, "localhost");
  tu_wait_int(s.r, &client.failed, 1, 20.0);
  tu_run_until(s.r, server_all_lost, &s.server, 20.0);
  tu_settle(s.r, 0.05);
  ck_assert_int_eq(client.failed, 1);
  ck_assert_int_eq(client.made, 0);
  ck_assert_int_eq(client.built, 0);
  show_reason("client connection_failed", &client.last_failed);
  ck_assert_msg(client.last_failed.code == WEFT_ETLS || client.last_failed.code == WEFT_ETLSVERSION,
                "got %s: %s", weft_err_name(client.last_failed.code), client.last_failed.message);
  /* OpenSSL reads "hello\n" as a record header: "wrong version number", which weft words as
   * a version problem with a hint. */
  ck_assert_msg(str_contains(client.last_failed.message, "may not speak TLS") ||
                    str_contains(client.last_failed.message, "wrong version number") ||
                    str_contains(client.last_failed.message, "packet length"),
                "message: %s", client.last_failed.message);
  ck_assert_int_eq(s.server.made, 1); /* for the TCP server it was a connection like any */
  tu_factory_check(&client);
  tu_factory_cleanup(&client);

  srv_check_serves(&s); /* a TCP client this time */
  srv_check_no_leak(&s);
  srv_free(&s);
  weft_cert_options_unref(copts);
  tu_pki_free(&pki);
}
END_TEST

/* --- The connection limit ------------------------------------------------------------------ */

static int local_port_of(int fd) {
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
  return ntohs(sin.sin_port);
}

static int peer_port_of(const tu_conn *c) {
  return ntohs(((const struct sockaddr_in *)&c->peer)->sin_port);
}

START_TEST(test_connection_limit) {
  srv s;
  srv_init(&s, 0);
  srv_listen(&s);
  ck_assert_uint_eq(weft_listener_connection_count(s.listener), 0);
  ck_assert_int_eq(weft_listener_set_connection_limit(s.listener, 3), 0);

  int raw[6];
  for (int i = 0; i < 5; i++)
    raw[i] = tu_raw_connect("127.0.0.1", s.port); /* the kernel completes them all */
  tu_wait_int(s.r, &s.server.made, 3, 10.0);
  tu_settle(s.r, 0.2);
  ck_assert_int_eq(s.server.made, 3);
  ck_assert_uint_eq(weft_listener_connection_count(s.listener), 3);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(peer_port_of(tu_factory_conn(&s.server, i)), local_port_of(raw[i]));

  /* One ends: the oldest waiting connection is accepted, and only that one. */
  close(raw[0]);
  raw[0] = -1;
  tu_wait_int(s.r, &s.server.made, 4, 10.0);
  tu_settle(s.r, 0.2);
  ck_assert_int_eq(s.server.made, 4);
  ck_assert_int_eq(s.server.lost, 1);
  ck_assert_uint_eq(weft_listener_connection_count(s.listener), 3);
  ck_assert_int_eq(peer_port_of(tu_factory_conn(&s.server, 3)), local_port_of(raw[3]));

  /* Lifting the limit resumes accepting at once. */
  ck_assert_int_eq(weft_listener_set_connection_limit(s.listener, 0), 0);
  tu_wait_int(s.r, &s.server.made, 5, 10.0);
  ck_assert_int_eq(peer_port_of(tu_factory_conn(&s.server, 4)), local_port_of(raw[4]));
  ck_assert_uint_eq(weft_listener_connection_count(s.listener), 4);

  /* A limit below the count closes nothing, and accepts nothing until the count is below it. */
  ck_assert_int_eq(weft_listener_set_connection_limit(s.listener, 2), 0);
  raw[5] = tu_raw_connect("127.0.0.1", s.port);
  tu_settle(s.r, 0.2);
  ck_assert_int_eq(s.server.made, 5);
  ck_assert_int_eq(s.server.lost, 1);
  for (int i = 1; i <= 3; i++) {
    close(raw[i]);
    raw[i] = -1;
  }
  tu_wait_int(s.r, &s.server.lost, 4, 10.0);
  tu_wait_int(s.r, &s.server.made, 6, 10.0);
  tu_settle(s.r, 0.1);
  ck_assert_int_eq(s.server.made, 6);
  ck_assert_int_eq(peer_port_of(tu_factory_conn(&s.server, 5)), local_port_of(raw[5]));
  ck_assert_uint_eq(weft_listener_connection_count(s.listener), 2);

  /* The listener stops while two of its connections live: they end later without it. */
  weft_listener_stop(s.listener);
  s.listener = NULL;
  ck_assert_uint_eq(weft_listener_connection_count(NULL), 0);
  close(raw[4]);
  close(raw[5]);
  tu_wait_int(s.r, &s.server.lost, 6, 10.0);
  ck_assert_int_eq(s.server.made, 6);
  tu_run_until(s.r, no_connections, s.r, 10.0);
  tu_settle(s.r, 0.1);
  /* The listening socket is gone too. */
  ck_assert_int_eq(tu_count_fds(), s.fds_before - 1);
  srv_free(&s);
}
END_TEST

/* TLS connections count from accept: a client that never finishes its handshake holds its
 * slot until the handshake time-out frees it. */
START_TEST(test_connection_limit_tls) {
  srv s;
  srv_init(&s, 1);
  tu_check_opt(s.sopts, weft_cert_options_set_handshake_timeout(s.sopts, 1.0));
  srv_listen(&s);
  ck_assert_int_eq(weft_listener_set_connection_limit(s.listener, 1), 0);

  int silent = tu_raw_connect("127.0.0.1", s.port);
  fd_watch w; /* wakes the loop when the server cuts the silent client */
  fd_watch_start(&w, s.r, silent);
  tu_settle(s.r, 0.1);
  ck_assert_uint_eq(weft_listener_connection_count(s.listener), 1);
  double start = tu_now();
  tu_connect_ssl_local(s.r, &s.client, s.port, s.copts, "localhost");
  tu_settle(s.r, 0.2);
  ck_assert_int_eq(s.client.made, 0); /* in the backlog, its handshake not even started */
  ck_assert_int_eq(s.server.handshake_failed, 0);

  tu_conn *c = tu_wait_conn(s.r, &s.client, 0, 20.0);
  double waited = tu_now() - start;
  ck_assert_int_eq(s.server.handshake_failed, 1);
  ck_assert_reason(&s.server.last_handshake_failed, WEFT_EHANDSHAKETIMEOUT);
  ck_assert_msg(waited >= 0.5, "the second client got in after %.3f s", waited);
  ck_assert_int_eq(c->made, 1);
  ck_assert_uint_eq(weft_listener_connection_count(s.listener), 1);
  tu_conn_write_str(c, "x");
  tu_wait_size(s.r, &c->rx_len, 1, 20.0);
  ck_assert_int_eq(weft_transport_lose_connection(c->transport), 0);
  tu_wait_int(s.r, &c->lost, 1, 20.0);
  fd_watch_stop(&w);
  close(silent);
  tu_run_until(s.r, server_all_lost, &s.server, 20.0);

  srv_check_serves(&s);
  srv_check_no_leak(&s);
  srv_free(&s);
}
END_TEST

/* --- Out of descriptors -------------------------------------------------------------------- */

static int count_fds_plain(void) {
  DIR *dir = opendir("/proc/self/fd");
  if (!dir)
    return -1;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(dir)) != NULL)
    if (de->d_name[0] != '.')
      n++;
  closedir(dir);
  return n - 1;
}

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct recv_wait {
  int fd;
  char buf[16];
  size_t len, want;
} recv_wait;

static int recv_done(void *arg) {
  recv_wait *w = arg;
  while (w->len < w->want) {
    ssize_t n = recv(w->fd, w->buf + w->len, w->want - w->len, MSG_DONTWAIT);
    if (n <= 0)
      break;
    w->len += (size_t)n;
  }
  return w->len >= w->want;
}

static int made_at_least(void *arg) {
  tu_factory *f = arg;
  return f->made >= (int)(intptr_t)f->user;
}

/* Never holds; counts how often run_until asked, i.e. the passes of the loop. */
static int count_passes(void *arg) {
  (*(long *)arg)++;
  return 0;
}

/* Valgrind emulates RLIMIT_NOFILE instead of passing it to the kernel: accept() succeeds in
 * the kernel and valgrind then closes the new descriptor and reports EMFILE, which destroys
 * the queued connection. Its preload libraries give it away. */
static int under_valgrind(void) {
  const char *preload = getenv("LD_PRELOAD");
  return preload && strstr(preload, "vgpreload") != NULL;
}

/* Connects FD to PORT on 127.0.0.1, sends "ping", and runs R until F has built TARGET
 * connections and the echo came back. Returns 1 if all that happened within 10 s. */
static int emfile_served(weft_reactor *r, tu_factory *f, int fd, int port, int target,
                         int do_connect) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons((uint16_t)port);
  if (do_connect && (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
                     send(fd, "ping", 4, MSG_NOSIGNAL) != 4))
    return 0;
  f->user = (void *)(intptr_t)target;
  if (weft_reactor_run_until(r, made_at_least, f, 10.0) != 0)
    return 0;
  recv_wait echo = {fd, "", 0, 4};
  return weft_reactor_run_until(r, recv_done, &echo, 10.0) == 0 && memcmp(echo.buf, "ping", 4) == 0;
}

#define EMFILE_PERIOD 1.0

/* The child's side of test_emfile_backoff: no Check assertions here (a failing one would
 * unwind into the suite's runner inside this process). Writes one result line to OUT and
 * returns the exit status. */
static int emfile_child(int out) {
  int open_now = count_fds_plain();
  struct rlimit rl;
  if (open_now < 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 10;
  rlim_t low = (rlim_t)open_now + 24;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < low)
    return 11;
  rl.rlim_cur = low;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 12;

  weft_reactor *r = NULL;
  if (weft_reactor_new(&r) != 0)
    return 13;
  tu_factory f;
  tu_factory_init(&f);
  f.conn_config.echo = 1;
  weft_listener *l = NULL;
  if (weft_listen_tcp(r, "127.0.0.1", 0, &f.base, &l) != 0)
    return 14;
  int port = weft_listener_port(l);
  /* Two client sockets, made while descriptors remain. */
  int queued = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int fresh = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (queued < 0 || fresh < 0)
    return 15;
  /* Use up every descriptor left. */
  int fill[256];
  int nfill = 0;
  int last_errno = 0;
  while (nfill < 256) {
    int fd = fcntl(queued, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
      last_errno = errno;
      break;
    }
    fill[nfill++] = fd;
  }
  if (last_errno != EMFILE)
    return 16;
  /* A connection waits in the backlog while accept() fails with EMFILE. */
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons((uint16_t)port);
  if (connect(queued, (struct sockaddr *)&sin, sizeof sin) != 0 ||
      send(queued, "ping", 4, MSG_NOSIGNAL) != 4)
    return 17;
  long passes = 0;
  double wall0 = tu_now(), cpu0 = cpu_now();
  weft_reactor_run_until(r, count_passes, &passes, EMFILE_PERIOD);
  double wall1 = tu_now(), cpu1 = cpu_now();
  int made_during = f.made;

  /* Descriptors come back: the waiting connection is accepted and served (not under
   * valgrind, see under_valgrind), and so is a new one. */
  for (int i = 0; i < nfill; i++)
    close(fill[i]);
  int queued_ok = under_valgrind() ? -1 : emfile_served(r, &f, queued, port, 1, 0);
  int fresh_ok = emfile_served(r, &f, fresh, port, f.made + 1, 1);
  char line[256];
  snprintf(line, sizeof line,
           "wall=%.6f cpu=%.6f passes=%ld made_during=%d queued=%d fresh=%d made=%d\n",
           wall1 - wall0, cpu1 - cpu0, passes, made_during, queued_ok, fresh_ok, f.made);
  ssize_t n = write(out, line, strlen(line));
  close(queued);
  close(fresh);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
  return n == (ssize_t)strlen(line) ? 0 : 18;
}

/* accept() failing with EMFILE leaves the connection in the backlog and the listening socket
 * readable: without the listener's back-off the loop would spin on it. In a child process
 * with a low RLIMIT_NOFILE, so this process's limit stays as it was. */
START_TEST(test_emfile_backoff) {
  int pipefd[2];
  ck_assert_int_eq(pipe2(pipefd, O_CLOEXEC), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(pipefd[0]);
    int status = emfile_child(pipefd[1]);
    close(pipefd[1]);
    _exit(status);
  }
  close(pipefd[1]);
  char out[512];
  size_t len = 0;
  double deadline = tu_now() + 60.0;
  for (;;) {
    int left = (int)((deadline - tu_now()) * 1000);
    ck_assert_msg(left > 0, "the child did not finish in time");
    struct pollfd pfd = {pipefd[0], POLLIN, 0};
    int pr = poll(&pfd, 1, left);
    ck_assert_msg(pr >= 0 || errno == EINTR, "poll: %s", strerror(errno));
    if (pr <= 0)
      continue;
    ssize_t n = read(pipefd[0], out + len, sizeof out - 1 - len);
    ck_assert_msg(n >= 0, "read: %s", strerror(errno));
    if (n == 0)
      break;
    len += (size_t)n;
    ck_assert_uint_lt(len, sizeof out - 1);
  }
  out[len] = '\0';
  close(pipefd[0]);
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d: '%s'", status,
                out);
  if (getenv("HOSTILE_VERBOSE"))
    fprintf(stderr, "emfile child: %s", out);
  double wall = 0, cpu = 0;
  long passes = -1;
  int made_during = -1, queued = 0, fresh = 0, made = -1;
  ck_assert_msg(sscanf(out,
                       "wall=%lf cpu=%lf passes=%ld made_during=%d queued=%d fresh=%d "
                       "made=%d",
                       &wall, &cpu, &passes, &made_during, &queued, &fresh, &made) == 7,
                "child said '%s'", out);
  ck_assert_msg(wall >= EMFILE_PERIOD * 0.95, "exhausted period lasted %.3f s", wall);
  ck_assert_msg(made_during == 0, "%d connections accepted without descriptors", made_during);
  ck_assert_msg(cpu < 0.5 * wall, "the loop spun: %.3f s of CPU in %.3f s", cpu, wall);
  /* The same seen from the loop (this machine's CPU clock under-counts a spinning loop): a
   * retry every 100 ms is a few dozen passes, a spinning loop tens of thousands. */
  ck_assert_msg(passes >= 1 && passes < 20 * wall / 0.1, "%ld passes of the loop in %.3f s", passes,
                wall);
  if (under_valgrind())
    ck_assert_msg(queued == -1, "queued %d under valgrind", queued);
  else
    ck_assert_msg(queued == 1, "the connection that waited was not served once descriptors "
                               "came back");
  ck_assert_msg(fresh == 1, "a new connection was not served once descriptors came back");
  ck_assert_int_eq(made, under_valgrind() ? 1 : 2);
}
END_TEST

/* --- Arguments of the new calls -------------------------------------------------------------- */

START_TEST(test_limit_arguments) {
  ck_assert_int_eq(weft_transport_set_write_timeout(NULL, 1.0), WEFT_EINVAL);
  ck_assert_int_eq(weft_listener_set_connection_limit(NULL, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_listener_set_write_timeout(NULL, 1.0), WEFT_EINVAL);
  ck_assert_uint_eq(weft_listener_connection_count(NULL), 0);

  srv s;
  srv_init(&s, 0);
  srv_listen(&s);
  ck_assert_int_eq(weft_listener_set_write_timeout(s.listener, -1.0), WEFT_EINVAL);
  ck_assert_int_eq(weft_listener_set_write_timeout(s.listener, 0.0 / 0.0), WEFT_EINVAL);
  ck_assert_int_eq(weft_listener_set_write_timeout(s.listener, 2e6), WEFT_EINVAL);
  ck_assert_int_eq(weft_listener_set_write_timeout(s.listener, 0.0), 0);
  tu_connect_tcp_local(s.r, &s.client, s.port);
  tu_conn *c = tu_wait_conn(s.r, &s.client, 0, 10.0);
  weft_transport *t = c->transport;
  ck_assert_int_eq(weft_transport_set_write_timeout(t, -0.5), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_set_write_timeout(t, 0.0 / 0.0), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_set_write_timeout(t, 1e7), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_set_write_timeout(t, 3.0), 0);
  ck_assert_int_eq(weft_transport_set_write_timeout(t, 0.0), 0);
  ck_assert_int_eq(weft_transport_lose_connection(t), 0);
  tu_wait_int(s.r, &c->lost, 1, 10.0);
  ck_assert_int_eq(c->lost_reason.code, WEFT_OK);
  srv_check_no_leak(&s);
  srv_free(&s);
}
END_TEST

static Suite *hostile_suite(void) {
  Suite *s = suite_create("hostile");
  TCase *tc = tcase_create("garbage");
  tcase_add_test(tc, test_random_bytes);
  tcase_add_test(tc, test_truncated_client_hello);
  tcase_add_test(tc, test_http_to_tls_port);
  tcase_add_test(tc, test_tls_client_to_tcp_port);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("alpn");
  tcase_add_loop_test(tc, test_huge_alpn, 0, 2);
  tcase_add_loop_test(tc, test_malformed_alpn, 0, 3);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("peers");
  tcase_add_test(tc, test_silent_client);
  tcase_add_test(tc, test_reset_mid_handshake);
  tcase_add_test(tc, test_reset_mid_transfer);
  tcase_add_loop_test(tc, test_never_reads, 0, NR_KINDS);
  tcase_add_test(tc, test_write_timeout_during_starttls);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("limits");
  tcase_add_test(tc, test_limit_arguments);
  tcase_add_test(tc, test_connection_limit);
  tcase_add_test(tc, test_connection_limit_tls);
  tcase_add_test(tc, test_emfile_backoff);
  tcase_set_timeout(tc, 90);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(hostile_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
