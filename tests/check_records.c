/* tests/check_records.c: output that must arrive intact whatever the peer's record size and
 * reading speed.
 *
 * - Record sizes: an OpenSSL client that negotiated max_fragment_length 512, 1024, 2048 or 4096
 *   (TLS 1.2 and 1.3) receives a stream written with weft_transport_write, _write_reference and
 *   _write_sequence in pieces of many sizes; every byte must arrive, in order, and the close
 *   must be clean. (record_size_limit, RFC 8449, is not in OpenSSL 3.0: `openssl s_client
 *   -help` offers -maxfraglen only; the max_fragment_length cases cover the small records.)
 * - The producer pattern under a full socket: a weft server writes until pending output passes
 *   its high mark, then waits for write_drained, against a client that stops reading until the
 *   server is held back, then reads slowly; over TCP, TLS and STARTTLS, with each write call.
 *   The server's send buffer and the client's receive buffer are made small, so the socket
 *   fills. Completion, write_drained counts and the bytes are checked.
 *
 * The peer is a blocking OpenSSL client in a thread (tests/peerutil.h); the weft side runs the
 * reactor until a condition holds. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "peerutil.h"
#include "testutil.h"
#include "tlsutil.h"

enum { W_WRITE, W_REFERENCE, W_SEQUENCE };
static const char *const kind_name[] = {"write", "write_reference", "write_sequence"};
enum { M_TCP, M_TLS, M_STARTTLS };
static const char *const mode_name[] = {"TCP", "TLS", "STARTTLS"};

/* One server connection's producer. */
typedef struct producer {
  int kind;
  const uint8_t *stream; /* the whole stream (pattern bytes), for write_reference */
  size_t total;
  size_t produced;
  size_t high;          /* write while pending output <= high */
  size_t low;           /* write low-water mark */
  const size_t *pieces; /* piece sizes, cycled */
  size_t npieces;
  size_t next_piece;
  int sndbuf;  /* SO_SNDBUF for the server socket, if > 0 */
  int stalled; /* times the producer stopped above its high mark */
  int write_errors;
  int last_error;
  int lose_rc;
  int released; /* write_reference releases */
  int referenced;
  weft_cert_options *starttls_opts;
  int start_rc;
  int started;
  peer *peer; /* told to read once the producer first stalls */
} producer;

static void on_release(const void *data, size_t len, void *arg) {
  producer *pr = arg;
  (void)data;
  (void)len;
  pr->released++;
}

static void produce(tu_conn *c, weft_transport *t) {
  producer *pr = c->factory->user;
  while (pr->produced < pr->total && weft_transport_pending_output(t) <= pr->high) {
    size_t n = pr->pieces[pr->next_piece++ % pr->npieces];
    if (n > pr->total - pr->produced)
      n = pr->total - pr->produced;
    const uint8_t *at = pr->stream + pr->produced;
    int rc;
    if (pr->kind == W_WRITE) {
      rc = weft_transport_write(t, at, n);
    } else if (pr->kind == W_REFERENCE) {
      rc = weft_transport_write_reference(t, at, n, on_release, pr);
      if (rc == 0)
        pr->referenced++;
    } else {
      size_t a = n / 3, b = n / 2 - a;
      weft_buf bufs[4] = {{at, a}, {at + a, 0}, {at + a, b}, {at + a + b, n - a - b}};
      rc = weft_transport_write_sequence(t, bufs, 4);
    }
    if (rc != 0) {
      pr->write_errors++;
      pr->last_error = rc;
      return;
    }
    pr->produced += n;
  }
  if (pr->produced < pr->total) {
    pr->stalled++;
    if (pr->peer)
      peer_go(pr->peer);
    return;
  }
  pr->lose_rc = weft_transport_lose_connection(t);
}

static void start_producing(tu_conn *c, weft_transport *t) {
  producer *pr = c->factory->user;
  if (pr->sndbuf > 0) {
    int fd = peer_fd_of(t);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &pr->sndbuf, sizeof pr->sndbuf) != 0)
      tu_conn_violation(c, "could not find the server socket to set SO_SNDBUF");
  }
  if (pr->low)
    weft_transport_set_write_low_water(t, pr->low);
  produce(c, t);
}

static void prod_made(tu_conn *c, weft_transport *t) {
  producer *pr = c->factory->user;
  if (!pr->starttls_opts)
    start_producing(c, t);
}

static void prod_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  producer *pr = c->factory->user;
  (void)data;
  (void)len;
  /* STARTTLS: the client's line; a client that pipelines its ClientHello behind it is fine. */
  if (pr->starttls_opts && !pr->started && memchr(c->rx, '\n', c->rx_len)) {
    pr->started = 1;
    tu_conn_write_str(c, "GO\n");
    pr->start_rc = weft_transport_start_tls(t, pr->starttls_opts, WEFT_TLS_SERVER, NULL);
  }
}

static void prod_started(tu_conn *c, weft_transport *t, int status) {
  if (status == 0)
    start_producing(c, t);
}

static void prod_drained(tu_conn *c, weft_transport *t) {
  produce(c, t);
}

static uint8_t *make_stream(size_t total) {
  uint8_t *s = malloc(total);
  ck_assert_ptr_nonnull(s);
  tu_pattern_fill(s, total, 0);
  return s;
}

/* --- max_fragment_length -------------------------------------------------------------------- */

/* Sizes around the record limits: small, one record, one byte under, bigger than the
 * write-through limit, and odd. */
static const size_t mixed_pieces[] = {100, 16384, 5000, 40000, 16383, 777, 1, 9000};

static const int mfl_modes[] = {TLSEXT_max_fragment_length_512, TLSEXT_max_fragment_length_1024,
                                TLSEXT_max_fragment_length_2048, TLSEXT_max_fragment_length_4096};

/* _i: bits 0-1 the max_fragment_length, bit 2 TLS 1.2 / 1.3, i / 8 the write call. */
START_TEST(test_max_fragment_length) {
  int mfl = mfl_modes[_i % 4];
  int version = (_i / 4) % 2 ? TLS1_3_VERSION : TLS1_2_VERSION;
  int kind = _i / 8;
  const size_t total = 200 * 1024;
  tu_pki pki;
  tu_pki_init(&pki);
  weft_reactor *r = tu_reactor_new();
  weft_cert_options *so = tu_server_options(&pki);
  tu_factory f;
  tu_factory_init(&f);
  producer pr = {0};
  pr.kind = kind;
  pr.stream = make_stream(total);
  pr.total = total;
  pr.high = (size_t)-1; /* write it all at once: the pieces exercise both write paths */
  pr.pieces = mixed_pieces;
  pr.npieces = sizeof mixed_pieces / sizeof mixed_pieces[0];
  f.user = &pr;
  f.conn_config.keep_rx = 0;
  f.conn_config.on_made = prod_made;
  int port = 0;
  weft_listener *l = tu_listen_ssl_local(r, &f, so, &port);

  peer p = {0};
  p.reactor = r;
  p.port = port;
  p.tls_version = version;
  p.mfl = mfl;
  p.ca = pki.ca_cert;
  peer_start(&p);
  peer_join(&p, r, 30.0);
  tu_wait_int(r, &f.lost, 1, 10.0);
  tu_settle(r, 0.05);

  tu_conn *c = tu_factory_conn(&f, 0);
  ck_assert_ptr_nonnull(c);
  ck_assert_msg(p.mfl_negotiated == mfl, "max_fragment_length %d not negotiated (got %d)", mfl,
                p.mfl_negotiated);
  ck_assert_msg(pr.write_errors == 0, "%s failed: %s", kind_name[kind],
                weft_err_name(pr.last_error));
  ck_assert_int_eq(pr.produced, total);
  ck_assert_msg(p.first_bad == (size_t)-1, "%s, mfl %d, %s: byte %zu corrupted", kind_name[kind],
                mfl, version == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2", p.first_bad);
  ck_assert_msg(p.rx == total, "%s, mfl mode %d, %s: received %zu of %zu bytes (%s); server: %s",
                kind_name[kind], mfl, version == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2", p.rx,
                total, p.end_detail, c->lost_reason.message);
  ck_assert_msg(p.end == 1, "the stream did not end with close_notify: %s", p.end_detail);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  ck_assert_int_eq(pr.released, pr.referenced);
  tu_factory_check(&f);

  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
  weft_cert_options_unref(so);
  free((void *)pr.stream);
  tu_pki_free(&pki);
}
END_TEST

/* --- the producer pattern under a full socket --------------------------------------------------- */

static const size_t piece_16k[] = {16384};

/* _i: i % 3 transport (TCP, TLS, STARTTLS), (i / 3) % 3 the write call, i / 9: 0 high mark
 * 64 KiB (low 16 KiB), 1 high mark 0 (write one piece whenever nothing is pending), 2 one long
 * stream (8 MiB, TLS write only). */
START_TEST(test_producer_full_socket) {
  int mode = _i % 3;
  int kind = (_i / 3) % 3;
  int variant = _i / 9;
  if (variant == 2) {
    mode = M_TLS;
    kind = W_WRITE;
  }
  const size_t total = variant == 2 ? (size_t)8 << 20 : (size_t)2 << 20;
  tu_pki pki;
  tu_pki_init(&pki);
  weft_reactor *r = tu_reactor_new();
  weft_cert_options *so = tu_server_options(&pki);
  tu_factory f;
  tu_factory_init(&f);
  producer pr = {0};
  pr.kind = kind;
  pr.stream = make_stream(total);
  pr.total = total;
  pr.high = variant == 1 ? 0 : 64 * 1024;
  pr.low = variant == 1 ? 0 : 16 * 1024;
  pr.pieces = piece_16k;
  pr.npieces = 1;
  pr.sndbuf = 32 * 1024;
  pr.starttls_opts = mode == M_STARTTLS ? so : NULL;
  f.user = &pr;
  f.conn_config.on_made = prod_made;
  f.conn_config.on_data = prod_data;
  f.conn_config.on_tls_started = prod_started;
  f.conn_config.on_drained = prod_drained;
  int port = 0;
  weft_listener *l =
      mode == M_TLS ? tu_listen_ssl_local(r, &f, so, &port) : tu_listen_tcp_local(r, &f, &port);

  peer p = {0};
  p.reactor = r;
  p.port = port;
  p.tls_version = mode == M_TCP ? 0 : TLS1_3_VERSION;
  p.starttls_line = mode == M_STARTTLS ? "STARTTLS\n" : NULL;
  p.ca = pki.ca_cert;
  p.rcvbuf = 32 * 1024;
  p.wait_go = 1; /* read nothing until the producer is held back */
  pr.peer = &p;
  peer_start(&p);
  peer_join(&p, r, 60.0);
  tu_wait_int(r, &f.lost, 1, 10.0);
  tu_settle(r, 0.05);

  tu_conn *c = tu_factory_conn(&f, 0);
  ck_assert_ptr_nonnull(c);
  const char *what = mode_name[mode];
  ck_assert_msg(pr.write_errors == 0, "%s %s failed: %s", what, kind_name[kind],
                weft_err_name(pr.last_error));
  ck_assert_msg(pr.produced == total, "%s %s, high %zu: produced %zu of %zu (drained %d)", what,
                kind_name[kind], pr.high, pr.produced, total, c->drained);
  ck_assert_msg(pr.stalled > 0 && c->drained > 0, "%s %s: stalled %d, write_drained %d", what,
                kind_name[kind], pr.stalled, c->drained);
  ck_assert_msg(p.first_bad == (size_t)-1, "%s %s: byte %zu corrupted", what, kind_name[kind],
                p.first_bad);
  ck_assert_msg(p.rx == total, "%s %s: received %zu of %zu (%s)", what, kind_name[kind], p.rx,
                total, p.end_detail);
  ck_assert_msg(p.end == 1, "%s %s: the stream did not end with close_notify: %s; server: %s", what,
                kind_name[kind], p.end_detail, c->lost_reason.message);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "server: %s", c->lost_reason.message);
  ck_assert_int_eq(pr.released, pr.referenced);
  if (mode == M_STARTTLS)
    ck_assert_int_eq(pr.start_rc, 0);
  tu_factory_check(&f);

  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
  weft_cert_options_unref(so);
  free((void *)pr.stream);
  tu_pki_free(&pki);
}
END_TEST

static Suite *records_suite(void) {
  Suite *s = suite_create("records");
  TCase *tc = tcase_create("max_fragment_length");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_max_fragment_length, 0, 24);
  suite_add_tcase(s, tc);
  tc = tcase_create("producer");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_producer_full_socket, 0, 19);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(records_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
