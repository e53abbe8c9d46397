/* tests/check_tcp.c: TCP connections over loopback: echo, flow control, every way a connection
 * ends or fails to start, name resolution (with a fake name server on 127.0.0.1, so nothing
 * leaves the machine), IPv6, argument checking, descriptor hygiene and addresses. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"

/* --- A connected pair on one reactor ---------------------------------------------------- */

typedef struct pair {
  weft_reactor *r;
  tu_factory server, client;
  weft_listener *listener;
  int port;
  tu_conn *s, *c; /* server and client side of the first connection */
} pair;

/* Reactor, factories and a listener on 127.0.0.1; configure the factories, then pair_connect. */
static void pair_init(pair *p) {
  memset(p, 0, sizeof *p);
  p->r = tu_reactor_new();
  tu_factory_init(&p->server);
  tu_factory_init(&p->client);
  p->listener = tu_listen_tcp_local(p->r, &p->server, &p->port);
}

/* Connects the client factory and waits until both sides ran connection_made. */
static void pair_connect(pair *p) {
  tu_connect_tcp_local(p->r, &p->client, p->port);
  p->c = tu_wait_conn(p->r, &p->client, 0, 10.0);
  p->s = tu_wait_conn(p->r, &p->server, 0, 10.0);
  tu_wait_int(p->r, &p->c->made, 1, 10.0);
  tu_wait_int(p->r, &p->s->made, 1, 10.0);
}

/* Frees everything; the factories' contract checks run first. */
static void pair_free(pair *p) {
  tu_factory_check(&p->server);
  tu_factory_check(&p->client);
  weft_reactor_free(p->r);
  tu_factory_check(&p->server);
  tu_factory_check(&p->client);
  tu_factory_cleanup(&p->server);
  tu_factory_cleanup(&p->client);
}

#define RX_STR(c) ((c)->rx ? (const char *)(c)->rx : "")

/* --- Echo ------------------------------------------------------------------------------- */

START_TEST(test_echo) {
  pair p;
  pair_init(&p);
  p.server.conn_config.echo = 1;
  p.client.conn_config.greeting = "hello";
  p.client.conn_config.greeting_len = 5;
  pair_connect(&p);
  ck_assert_uint_eq(weft_reactor_connection_count(p.r), 2);
  tu_wait_size(p.r, &p.c->rx_len, 5, 10.0);
  tu_settle(p.r, 0.05);
  ck_assert_msg(tu_conn_rx_equals(p.c, "hello", 5), "client got '%s'", RX_STR(p.c));
  ck_assert_msg(tu_conn_rx_equals(p.s, "hello", 5), "server got '%s'", RX_STR(p.s));
  ck_assert_int_eq(p.c->write_errors + p.s->write_errors, 0);
  ck_assert_int_eq(p.client.failed, 0);

  ck_assert_int_eq(weft_transport_lose_connection(p.c->transport), 0);
  tu_wait_int(p.r, &p.c->lost, 1, 10.0);
  tu_wait_int(p.r, &p.s->lost, 1, 10.0);
  ck_assert_int_eq(p.c->lost_reason.code, WEFT_OK);
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_OK);
  ck_assert_uint_eq(weft_reactor_connection_count(p.r), 0);
  pair_free(&p);
}
END_TEST

/* --- Writes by reference ---------------------------------------------------------------- */

typedef struct released {
  int calls;
  const void *data;
  size_t len;
  void *arg;
} released;

static void on_release(const void *data, size_t len, void *arg) {
  released *r = arg;
  r->calls++;
  r->data = data;
  r->len = len;
  r->arg = arg;
}

/* 4 MiB by reference, with a copied write before and after: all arrive in order, and the
 * bytes are released once, after they left (never while the peer still waits for them). */
START_TEST(test_write_reference) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  const size_t big = 4u << 20;
  uint8_t *body = malloc(big);
  ck_assert_ptr_nonnull(body);
  tu_pattern_fill(body, big, 3);
  uint8_t head[3], tail[5];
  tu_pattern_fill(head, sizeof head, 0);
  tu_pattern_fill(tail, sizeof tail, 3 + big);
  released rel = {0};
  ck_assert_int_eq(weft_transport_write(p.s->transport, head, sizeof head), 0);
  ck_assert_int_eq(weft_transport_write_reference(p.s->transport, body, big, on_release, &rel), 0);
  ck_assert_int_eq(weft_transport_write(p.s->transport, tail, sizeof tail), 0);
  ck_assert_int_eq(rel.calls, 0); /* 4 MiB cannot have left yet: the loop has not run */
  const size_t total = sizeof head + big + sizeof tail;
  tu_wait_size(p.r, &p.c->rx_len, total, 20.0);
  tu_wait_int(p.r, &rel.calls, 1, 10.0);
  tu_settle(p.r, 0.05);
  ck_assert_int_eq(rel.calls, 1);
  ck_assert_ptr_eq(rel.data, body);
  ck_assert_uint_eq(rel.len, big);
  ck_assert_ptr_eq(rel.arg, &rel);
  ck_assert_uint_eq(p.c->rx_len, total);
  ck_assert_uint_eq(tu_pattern_check(p.c->rx, total, 0), total);

  /* Errors: nothing queued, nothing released; the bytes stay the caller's. */
  ck_assert_int_eq(weft_transport_write_reference(NULL, body, 1, on_release, &rel), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_write_reference(p.s->transport, NULL, 1, on_release, &rel),
                   WEFT_EINVAL);
  /* LEN 0: nothing to send, released at once. A NULL release is allowed. */
  ck_assert_int_eq(weft_transport_write_reference(p.s->transport, body, 0, on_release, &rel), 0);
  ck_assert_int_eq(rel.calls, 2);
  ck_assert_int_eq(weft_transport_write_reference(p.s->transport, "x", 1, NULL, NULL), 0);
  ck_assert_int_eq(weft_transport_lose_connection(p.s->transport), 0);
  ck_assert_int_eq(weft_transport_write_reference(p.s->transport, body, 1, on_release, &rel),
                   WEFT_ECLOSED);
  ck_assert_int_eq(rel.calls, 2);
  tu_wait_int(p.r, &p.c->lost, 1, 10.0);
  pair_free(&p);
  free(body);
}
END_TEST

/* Bytes that never left are released when the connection is aborted, exactly once. */
START_TEST(test_write_reference_abort) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  ck_assert_int_eq(weft_transport_pause_reading(p.c->transport), 0); /* the peer stops reading */
  const size_t big = 32u << 20; /* more than the kernel buffers hold */
  uint8_t *body = calloc(1, big);
  ck_assert_ptr_nonnull(body);
  released rel = {0};
  ck_assert_int_eq(weft_transport_write_reference(p.s->transport, body, big, on_release, &rel), 0);
  tu_settle(p.r, 0.1);
  ck_assert_int_eq(rel.calls, 0);
  ck_assert_uint_gt(weft_transport_pending_output(p.s->transport), 0);
  ck_assert_int_eq(weft_transport_abort_connection(p.s->transport), 0);
  tu_wait_int(p.r, &p.s->lost, 1, 10.0);
  tu_wait_int(p.r, &rel.calls, 1, 10.0);
  tu_settle(p.r, 0.05);
  ck_assert_int_eq(rel.calls, 1);
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_EABORTED);
  pair_free(&p);
  free(body);
}
END_TEST

/* --- Pause and resume ------------------------------------------------------------------- */

static void pause_on_made(tu_conn *c, weft_transport *t) {
  (void)c;
  ck_assert_int_eq(weft_transport_pause_reading(t), 0);
  ck_assert_int_eq(weft_transport_pause_reading(t), 0); /* idempotent */
}

START_TEST(test_pause_resume) {
  pair p;
  pair_init(&p);
  p.server.conn_config.on_made = pause_on_made;
  p.client.conn_config.greeting = "abc";
  p.client.conn_config.greeting_len = 3;
  pair_connect(&p);
  tu_settle(p.r, 0.2);
  ck_assert_uint_eq(p.s->rx_total, 0); /* paused: nothing delivered */
  ck_assert_int_eq(weft_transport_resume_reading(p.s->transport), 0);
  ck_assert_int_eq(weft_transport_resume_reading(p.s->transport), 0);
  tu_wait_size(p.r, &p.s->rx_len, 3, 10.0);
  ck_assert_msg(tu_conn_rx_equals(p.s, "abc", 3), "server got '%s'", RX_STR(p.s));
  pair_free(&p);
}
END_TEST

/* The receiver pauses after every chunk and resumes from a delayed call, while the sender has
 * already closed: every byte still arrives, in order, before a clean connection_lost. */
static void resume_later_cb(void *arg) {
  tu_conn *c = arg;
  c->user = NULL;
  if (c->transport)
    ck_assert_int_eq(weft_transport_resume_reading(c->transport), 0);
}

static void pause_every_chunk(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  (void)data;
  (void)len;
  if (c->user)
    tu_conn_violation(c, "data_received while paused");
  ck_assert_int_eq(weft_transport_pause_reading(t), 0);
  c->user = c;
  ck_assert_int_eq(
      weft_reactor_call_later(weft_transport_reactor(t), 0.001, resume_later_cb, c, NULL), 0);
}

START_TEST(test_pause_until_eof) {
  pair p;
  pair_init(&p);
  p.server.conn_config.on_data = pause_every_chunk;
  pair_connect(&p);
  size_t n = 300000;
  uint8_t *buf = malloc(n);
  ck_assert_ptr_nonnull(buf);
  tu_pattern_fill(buf, n, 0);
  ck_assert_int_eq(weft_transport_write(p.c->transport, buf, n), 0);
  ck_assert_int_eq(weft_transport_lose_connection(p.c->transport), 0);
  tu_wait_int(p.r, &p.s->lost, 1, 20.0);
  ck_assert_uint_eq(p.s->rx_len, n);
  ck_assert_int_eq(memcmp(p.s->rx, buf, n), 0);
  ck_assert_int_gt(p.s->data_calls, 1);
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_OK);
  tu_wait_int(p.r, &p.c->lost, 1, 10.0);
  tu_settle(p.r, 0.02); /* the last resume call */
  free(buf);
  pair_free(&p);
}
END_TEST

/* write_drained runs once each time pending output falls back to the low-water mark (0 by
 * default) after a write left it above, and never without a write. */
START_TEST(test_write_drained) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  tu_settle(p.r, 0.05);
  ck_assert_int_eq(p.c->drained, 0);
  tu_conn_write_str(p.c, "0123456789");
  tu_wait_int(p.r, &p.c->drained, 1, 10.0);
  ck_assert_uint_eq(weft_transport_pending_output(p.c->transport), 0);
  tu_wait_size(p.r, &p.s->rx_len, 10, 10.0);
  tu_settle(p.r, 0.05);
  ck_assert_int_eq(p.c->drained, 1);
  tu_conn_write_str(p.c, "abc");
  tu_wait_int(p.r, &p.c->drained, 2, 10.0);
  tu_settle(p.r, 0.05);
  ck_assert_int_eq(p.c->drained, 2);
  ck_assert_int_eq(p.s->drained, 0); /* the server never wrote */
  ck_assert_int_eq(weft_transport_set_write_low_water(p.c->transport, 4096), 0);
  pair_free(&p);
}
END_TEST

/* --- 64 MiB each way with flow control -------------------------------------------------- */

#define XFER_TOTAL ((uint64_t)64 << 20)
#define XFER_CHUNK ((size_t)64 << 10)
#define XFER_HIGH ((size_t)1 << 20)
#define XFER_LOW ((size_t)256 << 10)
#define XFER_PAUSE_EVERY ((uint64_t)8 << 20)

typedef struct xfer {
  weft_reactor *r;
  tu_conn *conn;
  /* sending */
  uint64_t sent;
  size_t peak_pending;
  int write_errors;
  int last_write_error;
  int producer_runs;
  /* receiving */
  uint64_t received;
  int mismatch;
  uint64_t mismatch_at;
  int paused;
  int pauses;
  int data_while_paused;
  uint64_t next_pause_at;
  int resume_errors;
  weft_delayed_call *resume_call;
  uint8_t chunk[XFER_CHUNK];
} xfer;

static void xfer_produce(tu_conn *c, weft_transport *t) {
  xfer *x = c->user;
  x->producer_runs++;
  while (x->sent < XFER_TOTAL && weft_transport_pending_output(t) < XFER_HIGH) {
    size_t n = XFER_TOTAL - x->sent < XFER_CHUNK ? (size_t)(XFER_TOTAL - x->sent) : XFER_CHUNK;
    tu_pattern_fill(x->chunk, n, x->sent);
    int rc = weft_transport_write(t, x->chunk, n);
    if (rc != 0) {
      x->write_errors++;
      x->last_write_error = rc;
      return;
    }
    x->sent += n;
    size_t pending = weft_transport_pending_output(t);
    if (pending > x->peak_pending)
      x->peak_pending = pending;
  }
}

static void xfer_resume(void *arg) {
  xfer *x = arg;
  x->resume_call = NULL;
  x->paused = 0;
  if (weft_transport_resume_reading(x->conn->transport) != 0)
    x->resume_errors++;
}

static void xfer_consume(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  xfer *x = c->user;
  if (x->paused)
    x->data_while_paused++;
  if (!x->mismatch) {
    size_t at = tu_pattern_check(data, len, x->received);
    if (at < len) {
      x->mismatch = 1;
      x->mismatch_at = x->received + at;
    }
  }
  x->received += len;
  if (x->received >= x->next_pause_at && x->received < XFER_TOTAL && !x->paused) {
    x->next_pause_at += XFER_PAUSE_EVERY;
    if (weft_transport_pause_reading(t) == 0) {
      x->paused = 1;
      x->pauses++;
      ck_assert_int_eq(weft_reactor_call_later(x->r, 0.002, xfer_resume, x, &x->resume_call), 0);
    }
  }
}

static void xfer_on_build(tu_factory *f, tu_conn *c, weft_transport *t) {
  (void)t;
  xfer *x = f->user;
  x->conn = c;
  c->user = x;
}

static int xfer_done(void *arg) {
  xfer **x = arg;
  return (x[0]->received >= XFER_TOTAL && x[1]->received >= XFER_TOTAL) || x[0]->mismatch ||
         x[1]->mismatch || x[0]->write_errors || x[1]->write_errors;
}

static void xfer_setup(tu_factory *f, xfer *x, weft_reactor *r) {
  x->r = r;
  x->next_pause_at = XFER_PAUSE_EVERY;
  f->user = x;
  f->on_build = xfer_on_build;
  f->conn_config.keep_rx = 0;
  f->conn_config.low_water = XFER_LOW;
  f->conn_config.on_made = xfer_produce;
  f->conn_config.on_drained = xfer_produce;
  f->conn_config.on_data = xfer_consume;
}

static void xfer_check(const char *side, const xfer *x) {
  ck_assert_msg(!x->mismatch, "%s: received byte %llu differs from the pattern", side,
                (unsigned long long)x->mismatch_at);
  ck_assert_msg(x->write_errors == 0, "%s: write failed: %s", side,
                weft_err_name(x->last_write_error));
  ck_assert_uint_eq(x->sent, XFER_TOTAL);
  ck_assert_uint_eq(x->received, XFER_TOTAL);
  ck_assert_msg(x->peak_pending <= XFER_HIGH + XFER_CHUNK, "%s: peak pending output %zu", side,
                x->peak_pending);
  /* Pending output did reach the high mark, so the producer really waited for write_drained. */
  ck_assert_msg(x->peak_pending >= XFER_HIGH, "%s: peak pending output only %zu", side,
                x->peak_pending);
  ck_assert_msg(x->producer_runs > 1, "%s: producer ran %d times", side, x->producer_runs);
  ck_assert_int_ge(x->pauses, 7);
  ck_assert_int_eq(x->data_while_paused, 0);
  ck_assert_int_eq(x->resume_errors, 0);
}

START_TEST(test_transfer_64mib) {
  pair p;
  pair_init(&p);
  xfer *x[2] = {calloc(1, sizeof(xfer)), calloc(1, sizeof(xfer))};
  ck_assert_ptr_nonnull(x[0]);
  ck_assert_ptr_nonnull(x[1]);
  xfer_setup(&p.client, x[0], p.r);
  xfer_setup(&p.server, x[1], p.r);
  double start = tu_now();
  pair_connect(&p);
  tu_run_until(p.r, xfer_done, x, 50.0);
  double took = tu_now() - start;
  xfer_check("client", x[0]);
  xfer_check("server", x[1]);
  ck_assert_int_ge(p.c->drained, 1);
  ck_assert_int_ge(p.s->drained, 1);
  ck_assert_int_eq(p.c->lost + p.s->lost, 0);
  ck_assert_ptr_null(x[0]->resume_call);
  ck_assert_ptr_null(x[1]->resume_call);
  ck_assert_int_eq(weft_transport_lose_connection(p.c->transport), 0);
  tu_wait_int(p.r, &p.c->lost, 1, 10.0);
  tu_wait_int(p.r, &p.s->lost, 1, 10.0);
  ck_assert_int_eq(p.c->lost_reason.code, WEFT_OK);
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_OK);
  fprintf(stderr, "transfer: 2 x 64 MiB in %.2f s (%d and %d pauses)\n", took, x[0]->pauses,
          x[1]->pauses);
  pair_free(&p);
  free(x[0]);
  free(x[1]);
}
END_TEST

/* --- connection_lost exactly once ------------------------------------------------------- */

START_TEST(test_lost_peer_close) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  ck_assert_int_eq(weft_transport_lose_connection(p.c->transport), 0);
  ck_assert_int_eq(p.c->lost, 0); /* rule 7: from the loop, never from inside the call */
  tu_wait_int(p.r, &p.s->lost, 1, 10.0);
  tu_wait_int(p.r, &p.c->lost, 1, 10.0);
  tu_settle(p.r, 0.1);
  ck_assert_int_eq(p.s->lost, 1);
  ck_assert_int_eq(p.c->lost, 1);
  ck_assert_msg(p.s->lost_reason.code == WEFT_OK, "server: %s (%s)",
                weft_err_name(p.s->lost_reason.code), p.s->lost_reason.message);
  ck_assert_int_eq(p.c->lost_reason.code, WEFT_OK);
  ck_assert_ptr_null(p.s->transport);
  pair_free(&p);
}
END_TEST

START_TEST(test_lost_local_lose) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  ck_assert_int_eq(weft_transport_lose_connection(p.s->transport), 0);
  ck_assert_int_eq(p.s->lost, 0); /* rule 7: from the loop, never from inside the call */
  ck_assert_int_eq(weft_transport_lose_connection(p.s->transport), 0); /* again: no-op */
  tu_wait_int(p.r, &p.s->lost, 1, 10.0);
  tu_wait_int(p.r, &p.c->lost, 1, 10.0);
  tu_settle(p.r, 0.1);
  ck_assert_int_eq(p.s->lost, 1);
  ck_assert_int_eq(p.c->lost, 1);
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_OK);
  ck_assert_msg(p.c->lost_reason.code == WEFT_OK, "client: %s (%s)",
                weft_err_name(p.c->lost_reason.code), p.c->lost_reason.message);
  ck_assert_int_eq(p.c->read_eof, 1); /* the peer's FIN came through read_eof */
  pair_free(&p);
}
END_TEST

/* lose_connection sends what was written first. */
START_TEST(test_lose_flushes) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  size_t n = (size_t)4 << 20;
  uint8_t *buf = malloc(n);
  ck_assert_ptr_nonnull(buf);
  tu_pattern_fill(buf, n, 0);
  ck_assert_int_eq(weft_transport_write(p.c->transport, buf, n), 0);
  ck_assert_int_eq(weft_transport_lose_connection(p.c->transport), 0);
  tu_wait_int(p.r, &p.s->lost, 1, 20.0);
  tu_wait_int(p.r, &p.c->lost, 1, 10.0);
  ck_assert_uint_eq(p.s->rx_len, n);
  ck_assert_int_eq(memcmp(p.s->rx, buf, n), 0);
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_OK);
  ck_assert_int_eq(p.c->lost_reason.code, WEFT_OK);
  free(buf);
  pair_free(&p);
}
END_TEST

/* lose_connection while the peer is still sending: what was written must still reach the peer
 * in full. (Closing the socket with unread input makes the kernel send a RST, which discards
 * what is still in flight; a graceful close must drain the input until the peer's FIN or a
 * bounded time.) */
#define REPLY_SIZE ((size_t)2 << 20)

static void reply_and_lose(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  (void)data;
  (void)len;
  if (c->data_calls != 1)
    return;
  uint8_t *out = malloc(REPLY_SIZE);
  ck_assert_ptr_nonnull(out);
  tu_pattern_fill(out, REPLY_SIZE, 0);
  ck_assert_int_eq(weft_transport_write(t, out, REPLY_SIZE), 0);
  free(out);
  ck_assert_int_eq(weft_transport_lose_connection(t), 0);
}

START_TEST(test_lose_with_unread_input) {
  pair p;
  pair_init(&p);
  p.server.conn_config.keep_rx = 0;
  p.server.conn_config.on_data = reply_and_lose;
  pair_connect(&p);
  size_t n = (size_t)8 << 20; /* far more than the server reads before it closes */
  uint8_t *buf = calloc(1, n);
  ck_assert_ptr_nonnull(buf);
  ck_assert_int_eq(weft_transport_write(p.c->transport, buf, n), 0);
  free(buf);
  tu_wait_int(p.r, &p.c->lost, 1, 20.0);
  tu_wait_int(p.r, &p.s->lost, 1, 20.0);
  ck_assert_msg(p.c->rx_len == REPLY_SIZE, "the client received %zu of %zu bytes (%s: %s)",
                p.c->rx_len, REPLY_SIZE, weft_err_name(p.c->lost_reason.code),
                p.c->lost_reason.message);
  ck_assert_uint_eq(tu_pattern_check(p.c->rx, p.c->rx_len, 0), p.c->rx_len);
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_OK);
  pair_free(&p);
}
END_TEST

START_TEST(test_lost_abort) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  ck_assert_int_eq(weft_transport_write(p.c->transport, "pending", 7), 0);
  ck_assert_int_eq(weft_transport_abort_connection(p.c->transport), 0);
  ck_assert_int_eq(p.c->lost, 0); /* connection_lost comes from the loop */
  ck_assert_int_eq(weft_transport_abort_connection(p.c->transport), 0);
  ck_assert_int_eq(weft_transport_lose_connection(p.c->transport), 0);
  tu_wait_int(p.r, &p.c->lost, 1, 10.0);
  tu_wait_int(p.r, &p.s->lost, 1, 10.0);
  tu_settle(p.r, 0.1);
  ck_assert_int_eq(p.c->lost, 1);
  ck_assert_int_eq(p.s->lost, 1);
  ck_assert_msg(p.c->lost_reason.code == WEFT_EABORTED, "client: %s (%s)",
                weft_err_name(p.c->lost_reason.code), p.c->lost_reason.message);
  pair_free(&p);
}
END_TEST

START_TEST(test_lost_peer_reset) {
  weft_reactor *r = tu_reactor_new();
  tu_factory server;
  tu_factory_init(&server);
  int port;
  tu_listen_tcp_local(r, &server, &port);
  int fd = tu_raw_connect("127.0.0.1", port);
  tu_conn *s = tu_wait_conn(r, &server, 0, 10.0);
  tu_wait_int(r, &s->made, 1, 10.0);
  ck_assert_int_eq(write(fd, "hi", 2), 2);
  tu_wait_size(r, &s->rx_len, 2, 10.0);
  tu_raw_reset(fd);
  tu_wait_int(r, &s->lost, 1, 10.0);
  tu_settle(r, 0.1);
  ck_assert_int_eq(s->lost, 1);
  ck_assert_msg(s->lost_reason.code == WEFT_ECONNRESET, "server: %s (%s)",
                weft_err_name(s->lost_reason.code), s->lost_reason.message);
  ck_assert_int_eq(s->read_eof, 0);
  tu_factory_check(&server);
  weft_reactor_free(r);
  tu_factory_cleanup(&server);
}
END_TEST

START_TEST(test_lost_reactor_free) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  /* A second connection that is closing, with output still pending. */
  tu_connect_tcp_local(p.r, &p.client, p.port);
  tu_conn *c2 = tu_wait_conn(p.r, &p.client, 1, 10.0);
  tu_conn *s2 = tu_wait_conn(p.r, &p.server, 1, 10.0);
  tu_wait_int(p.r, &s2->made, 1, 10.0);
  size_t n = (size_t)8 << 20;
  uint8_t *buf = calloc(1, n);
  ck_assert_ptr_nonnull(buf);
  ck_assert_int_eq(weft_transport_write(c2->transport, buf, n), 0);
  ck_assert_int_eq(weft_transport_lose_connection(c2->transport), 0);
  free(buf);
  ck_assert_uint_eq(weft_reactor_connection_count(p.r), 4);

  tu_factory_check(&p.server);
  tu_factory_check(&p.client);
  weft_reactor_free(p.r);
  tu_conn *all[4] = {p.c, p.s, c2, s2};
  const char *names[4] = {"client 1", "server 1", "client 2 (closing)", "server 2"};
  for (int i = 0; i < 4; i++) {
    ck_assert_msg(all[i]->lost == 1, "%s: connection_lost %d times", names[i], all[i]->lost);
    ck_assert_msg(all[i]->lost_reason.code == WEFT_ESHUTDOWN, "%s: %s (%s)", names[i],
                  weft_err_name(all[i]->lost_reason.code), all[i]->lost_reason.message);
  }
  tu_factory_check(&p.server);
  tu_factory_check(&p.client);
  tu_factory_cleanup(&p.server);
  tu_factory_cleanup(&p.client);
}
END_TEST

/* After lose_connection (or abort) inside data_received, no more data is delivered, even though
 * the peer sent much more. */
static void lose_on_first_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  (void)data;
  (void)len;
  if (c->data_calls != 1)
    return;
  /* Output still pending keeps the connection in its closing state for a while. */
  size_t n = (size_t)2 << 20;
  uint8_t *out = calloc(1, n);
  ck_assert_ptr_nonnull(out);
  ck_assert_int_eq(weft_transport_write(t, out, n), 0);
  free(out);
  ck_assert_int_eq(weft_transport_lose_connection(t), 0);
}

START_TEST(test_no_data_after_close) {
  pair p;
  pair_init(&p);
  p.server.conn_config.on_data = lose_on_first_data;
  pair_connect(&p);
  /* A second connection whose server side aborts on the first data. */
  p.server.conn_config.on_data = NULL;
  p.server.conn_config.abort_on_data = 1;
  tu_connect_tcp_local(p.r, &p.client, p.port);
  tu_conn *c2 = tu_wait_conn(p.r, &p.client, 1, 10.0);
  tu_conn *s2 = tu_wait_conn(p.r, &p.server, 1, 10.0);
  tu_wait_int(p.r, &s2->made, 1, 10.0);

  size_t n = (size_t)1 << 20;
  uint8_t *buf = calloc(1, n);
  ck_assert_ptr_nonnull(buf);
  ck_assert_int_eq(weft_transport_write(p.c->transport, buf, n), 0);
  ck_assert_int_eq(weft_transport_write(c2->transport, buf, n), 0);
  free(buf);
  tu_wait_int(p.r, &p.s->lost, 1, 10.0);
  tu_wait_int(p.r, &s2->lost, 1, 10.0);
  tu_wait_int(p.r, &p.c->lost, 1, 10.0);
  tu_wait_int(p.r, &c2->lost, 1, 10.0);
  ck_assert_int_eq(p.s->data_calls, 1);
  ck_assert_int_eq(s2->data_calls, 1);
  ck_assert_uint_lt(p.s->rx_total, n);
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_OK);
  ck_assert_int_eq(s2->lost_reason.code, WEFT_EABORTED);
  pair_free(&p);
}
END_TEST

/* An abort whose connection_lost is still pending when the reactor is freed: reported once, as
 * the abort it was. */
START_TEST(test_abort_then_free) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  ck_assert_int_eq(weft_transport_abort_connection(p.c->transport), 0);
  ck_assert_int_eq(p.c->lost, 0);
  tu_factory_check(&p.client);
  weft_reactor_free(p.r);
  ck_assert_int_eq(p.c->lost, 1);
  ck_assert_int_eq(p.s->lost, 1);
  ck_assert_msg(p.c->lost_reason.code == WEFT_EABORTED, "client: %s",
                weft_err_name(p.c->lost_reason.code));
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_ESHUTDOWN);
  tu_factory_check(&p.server);
  tu_factory_check(&p.client);
  tu_factory_cleanup(&p.server);
  tu_factory_cleanup(&p.client);
}
END_TEST

/* The documented pattern: a protocol allocated in build_protocol and freed in connection_lost.
 * Under valgrind or ASan any use of the protocol after connection_lost shows up. */
typedef struct self_freeing {
  weft_protocol base;
  int *made;
  int *lost;
  int last_code;
  int *codes;
} self_freeing;

typedef struct self_freeing_factory {
  weft_factory base;
  int made, lost;
  int codes[8];
  int echo;
} self_freeing_factory;

static void sf_made(weft_protocol *p, weft_transport *t) {
  (void)t;
  (*((self_freeing *)p)->made)++;
}

static void sf_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  (void)p;
  weft_transport_write(t, data, len);
}

static void sf_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)t;
  self_freeing *s = (self_freeing *)p;
  int i = (*s->lost)++;
  if (i < 8)
    s->codes[i] = reason->code;
  memset(s, 0x5a, sizeof *s); /* poison, then free */
  free(s);
}

static const weft_protocol_ops sf_ops = {
    .connection_made = sf_made, .data_received = sf_data, .connection_lost = sf_lost};

static weft_protocol *sf_build(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)t;
  (void)peer;
  self_freeing_factory *sff = (self_freeing_factory *)f;
  self_freeing *s = calloc(1, sizeof *s);
  ck_assert_ptr_nonnull(s);
  s->base.ops = &sf_ops;
  s->made = &sff->made;
  s->lost = &sff->lost;
  s->codes = sff->codes;
  return &s->base;
}

static int fd_readable(void *arg) {
  struct pollfd pfd = {*(int *)arg, POLLIN, 0};
  return poll(&pfd, 1, 0) == 1;
}

START_TEST(test_protocol_freed_in_lost) {
  weft_reactor *r = tu_reactor_new();
  self_freeing_factory server = {.base = {.build_protocol = sf_build}};
  tu_factory client;
  tu_factory_init(&client);
  weft_listener *l = NULL;
  ck_assert_int_eq(weft_listen_tcp(r, "127.0.0.1", 0, &server.base, &l), 0);
  int port = weft_listener_port(l);
  /* 1: the client closes; 2: the client aborts; 3: a raw client resets; 4: reactor free. */
  for (int i = 0; i < 2; i++) {
    tu_connect_tcp_local(r, &client, port);
    tu_conn *c = tu_wait_conn(r, &client, i, 10.0);
    tu_wait_int(r, &server.made, i + 1, 10.0);
    tu_conn_write_str(c, "data");
    tu_wait_size(r, &c->rx_len, 4, 10.0);
    if (i == 0)
      ck_assert_int_eq(weft_transport_lose_connection(c->transport), 0);
    else
      ck_assert_int_eq(weft_transport_abort_connection(c->transport), 0);
    tu_wait_int(r, &server.lost, i + 1, 10.0);
  }
  int fd = tu_raw_connect("127.0.0.1", port);
  tu_wait_int(r, &server.made, 3, 10.0);
  ck_assert_int_eq(write(fd, "x", 1), 1);
  tu_run_until(r, fd_readable, &fd, 10.0); /* the echo came back */
  char x;
  ck_assert_int_eq(read(fd, &x, 1), 1);
  tu_raw_reset(fd);
  tu_wait_int(r, &server.lost, 3, 10.0);
  tu_connect_tcp_local(r, &client, port);
  tu_wait_int(r, &server.made, 4, 10.0);
  ck_assert_int_eq(server.lost, 3);
  weft_reactor_free(r);
  ck_assert_int_eq(server.made, 4);
  ck_assert_int_eq(server.lost, 4);
  ck_assert_int_eq(server.codes[0], WEFT_OK);
  ck_assert_int_eq(server.codes[2], WEFT_ECONNRESET);
  ck_assert_int_eq(server.codes[3], WEFT_ESHUTDOWN);
  tu_factory_check(&client);
  tu_factory_cleanup(&client);
}
END_TEST

/* Stopping a listener closes only the listening socket. */
START_TEST(test_listener_stop) {
  pair p;
  pair_init(&p);
  p.server.conn_config.echo = 1;
  pair_connect(&p);
  weft_listener_stop(p.listener);
  p.listener = NULL;
  tu_conn_write_str(p.c, "still here");
  tu_wait_size(p.r, &p.c->rx_len, 10, 10.0);
  ck_assert_msg(tu_conn_rx_equals(p.c, "still here", 10), "client got '%s'", RX_STR(p.c));
  tu_connect_tcp_local(p.r, &p.client, p.port);
  tu_wait_int(p.r, &p.client.failed, 1, 10.0);
  ck_assert_int_eq(p.client.last_failed.code, WEFT_ECONNREFUSED);
  ck_assert_int_eq(p.server.built, 1);
  ck_assert_int_eq(p.s->lost + p.c->lost, 0);
  pair_free(&p);
}
END_TEST

/* A protocol may close its connection from inside connection_made. */
static void abort_in_made(tu_conn *c, weft_transport *t) {
  (void)c;
  ck_assert_int_eq(weft_transport_abort_connection(t), 0);
}

static void lose_in_made(tu_conn *c, weft_transport *t) {
  (void)c;
  ck_assert_int_eq(weft_transport_write(t, "bye", 3), 0);
  ck_assert_int_eq(weft_transport_lose_connection(t), 0);
}

START_TEST(test_close_in_connection_made) {
  pair p;
  pair_init(&p);
  p.server.conn_config.on_made = abort_in_made;
  tu_connect_tcp_local(p.r, &p.client, p.port);
  tu_conn *s1 = tu_wait_conn(p.r, &p.server, 0, 10.0);
  tu_conn *c1 = tu_wait_conn(p.r, &p.client, 0, 10.0);
  tu_wait_int(p.r, &s1->lost, 1, 10.0);
  tu_wait_int(p.r, &c1->lost, 1, 10.0);
  ck_assert_int_eq(s1->lost_reason.code, WEFT_EABORTED);

  p.server.conn_config.on_made = lose_in_made;
  tu_connect_tcp_local(p.r, &p.client, p.port);
  tu_conn *s2 = tu_wait_conn(p.r, &p.server, 1, 10.0);
  tu_conn *c2 = tu_wait_conn(p.r, &p.client, 1, 10.0);
  tu_wait_int(p.r, &s2->lost, 1, 10.0);
  tu_wait_int(p.r, &c2->lost, 1, 10.0);
  tu_settle(p.r, 0.05);
  ck_assert_int_eq(s2->lost_reason.code, WEFT_OK);
  ck_assert_int_eq(c2->lost_reason.code, WEFT_OK);
  ck_assert_msg(tu_conn_rx_equals(c2, "bye", 3), "client got '%s'", RX_STR(c2));
  ck_assert_int_eq(s1->lost + s2->lost + c1->lost + c2->lost, 4);
  pair_free(&p);
}
END_TEST

/* --- connection_failed ------------------------------------------------------------------ */

START_TEST(test_failed_refused) {
  weft_reactor *r = tu_reactor_new();
  tu_factory client;
  tu_factory_init(&client);
  int port = tu_free_port();
  tu_connect_tcp_local(r, &client, port);
  ck_assert_int_eq(client.failed, 0); /* never from inside weft_connect_tcp */
  tu_wait_int(r, &client.failed, 1, 10.0);
  tu_settle(r, 0.1);
  ck_assert_int_eq(client.failed, 1);
  ck_assert_int_eq(client.built, 0);
  ck_assert_int_eq(client.made, 0);
  ck_assert_msg(client.last_failed.code == WEFT_ECONNREFUSED, "%s (%s)",
                weft_err_name(client.last_failed.code), client.last_failed.message);
  tu_factory_check(&client);
  weft_reactor_free(r);
  ck_assert_int_eq(client.failed, 1);
  tu_factory_cleanup(&client);
}
END_TEST

/* A listener whose accept queue is full drops further SYNs: connecting to it times out. */
START_TEST(test_failed_timeout) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(lfd, 0);
  struct sockaddr_in sin = {0};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sin, sizeof sin), 0);
  ck_assert_int_eq(listen(lfd, 0), 0);
  socklen_t slen = sizeof sin;
  ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin, &slen), 0);
  int port = ntohs(sin.sin_port);

  /* Fill the queue: connect until one connection stays unanswered (SYN_SENT). */
  enum { MAX_FILLERS = 16 };
  int fillers[MAX_FILLERS];
  int nfill = 0, unanswered = 0;
  while (nfill < MAX_FILLERS && !unanswered) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    fillers[nfill++] = fd;
    int rc = connect(fd, (struct sockaddr *)&sin, sizeof sin);
    ck_assert_msg(rc == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
    struct pollfd pfd = {fd, POLLOUT, 0};
    if (poll(&pfd, 1, 200) == 0) {
      struct tcp_info ti;
      socklen_t tlen = sizeof ti;
      ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tlen), 0);
      unanswered = ti.tcpi_state == TCP_SYN_SENT;
    }
  }
  ck_assert_msg(unanswered, "could not fill the accept queue with %d connections", nfill);

  weft_reactor *r = tu_reactor_new();
  tu_factory client;
  tu_factory_init(&client);
  double start = tu_now();
  ck_assert_int_eq(tu_connect(r, "127.0.0.1", port, &client.base, NULL, NULL, 0.5, NULL, NULL), 0);
  tu_wait_int(r, &client.failed, 1, 10.0);
  double took = tu_now() - start;
  tu_settle(r, 0.1);
  ck_assert_msg(client.last_failed.code == WEFT_ETIMEDOUT, "%s (%s)",
                weft_err_name(client.last_failed.code), client.last_failed.message);
  ck_assert_double_ge(took, 0.45);
  ck_assert_double_lt(took, 3.0);
  ck_assert_int_eq(client.failed, 1);
  ck_assert_int_eq(client.built, 0);
  ck_assert_int_eq(client.made, 0);
  tu_factory_check(&client);
  weft_reactor_free(r);
  tu_factory_cleanup(&client);
  for (int i = 0; i < nfill; i++)
    close(fillers[i]);
  close(lfd);
}
END_TEST

START_TEST(test_failed_not_found) {
  weft_reactor *r = tu_reactor_new();
  tu_fake_dns *dns = tu_fake_dns_start(r, TU_DNS_NXDOMAIN);
  tu_factory client;
  tu_factory_init(&client);
  ck_assert_int_eq(weft_connect_tcp(r, "no-such-host.invalid", tu_free_port(), &client.base, NULL),
                   0);
  ck_assert_int_eq(client.failed, 0);
  tu_wait_int(r, &client.failed, 1, 10.0);
  tu_settle(r, 0.1);
  ck_assert_msg(client.last_failed.code == WEFT_ENOTFOUND, "%s (%s)",
                weft_err_name(client.last_failed.code), client.last_failed.message);
  ck_assert_int_ge(tu_fake_dns_queries(dns), 1); /* it asked our server, and only it */
  ck_assert_int_eq(client.failed, 1);
  ck_assert_int_eq(client.built, 0);
  ck_assert_int_eq(client.made, 0);
  tu_factory_check(&client);
  tu_fake_dns_free(dns);
  weft_reactor_free(r);
  tu_factory_cleanup(&client);
}
END_TEST

START_TEST(test_connect_localhost) {
  pair p;
  pair_init(&p);
  tu_fake_dns *dns = tu_fake_dns_start(p.r, TU_DNS_NXDOMAIN);
  p.server.conn_config.echo = 1;
  p.client.conn_config.greeting = "ping";
  p.client.conn_config.greeting_len = 4;
  ck_assert_int_eq(weft_connect_tcp(p.r, "localhost", p.port, &p.client.base, NULL), 0);
  tu_conn *c = tu_wait_conn(p.r, &p.client, 0, 10.0);
  tu_wait_size(p.r, &c->rx_len, 4, 10.0);
  ck_assert_msg(tu_conn_rx_equals(c, "ping", 4), "client got '%s'", RX_STR(c));
  ck_assert_int_eq(p.client.failed, 0);
  ck_assert_int_eq(tu_fake_dns_queries(dns), 0); /* /etc/hosts answered */
  tu_fake_dns_free(dns);
  pair_free(&p);
}
END_TEST

/* Every resolved address is tried in turn: the name has a dead address (nothing listens on
 * 127.0.0.2) before the live one. A name whose addresses are all dead fails with the error of
 * the attempts. */
START_TEST(test_resolve_every_address) {
  pair p;
  pair_init(&p);
  tu_fake_dns *dns = tu_fake_dns_start(p.r, TU_DNS_NXDOMAIN);
  tu_fake_dns_add(dns, "multi.weft.test", "127.0.0.2");
  tu_fake_dns_add(dns, "multi.weft.test", "127.0.0.1");
  tu_fake_dns_add(dns, "dead.weft.test", "127.0.0.2");
  tu_fake_dns_add(dns, "dead.weft.test", "127.0.0.3");
  p.server.conn_config.echo = 1;
  p.client.conn_config.greeting = "multi";
  p.client.conn_config.greeting_len = 5;
  ck_assert_int_eq(weft_connect_tcp(p.r, "multi.weft.test", p.port, &p.client.base, NULL), 0);
  tu_conn *c = tu_wait_conn(p.r, &p.client, 0, 10.0);
  tu_wait_size(p.r, &c->rx_len, 5, 10.0);
  ck_assert_msg(tu_conn_rx_equals(c, "multi", 5), "client got '%s'", RX_STR(c));
  ck_assert_int_eq(p.client.failed, 0);
  char buf[64], want[64];
  snprintf(want, sizeof want, "127.0.0.1:%d", p.port);
  ck_assert_str_eq(weft_address_format((struct sockaddr *)&c->peer, buf, sizeof buf), want);
  int queries = tu_fake_dns_queries(dns);
  ck_assert_int_ge(queries, 1);

  ck_assert_int_eq(weft_connect_tcp(p.r, "dead.weft.test", p.port, &p.client.base, NULL), 0);
  tu_wait_int(p.r, &p.client.failed, 1, 10.0);
  ck_assert_msg(p.client.last_failed.code == WEFT_ECONNREFUSED, "%s (%s)",
                weft_err_name(p.client.last_failed.code), p.client.last_failed.message);
  ck_assert_int_gt(tu_fake_dns_queries(dns), queries);
  ck_assert_int_eq(p.client.built, 1);
  tu_fake_dns_free(dns);
  pair_free(&p);
}
END_TEST

START_TEST(test_bind_address) {
  pair p;
  pair_init(&p);
  ck_assert_int_eq(
      tu_connect(p.r, "127.0.0.1", p.port, &p.client.base, NULL, NULL, 10.0, "127.0.0.1", NULL), 0);
  tu_conn *s = tu_wait_conn(p.r, &p.server, 0, 10.0);
  tu_conn *c = tu_wait_conn(p.r, &p.client, 0, 10.0);
  char buf[64];
  ck_assert_int_eq(s->peer.ss_family, AF_INET);
  ck_assert_msg(strncmp(weft_address_format((struct sockaddr *)&s->peer, buf, sizeof buf),
                        "127.0.0.1:", 10) == 0,
                "server sees %s", buf);
  ck_assert_int_eq(c->made, 1);
  if (tu_ipv6_available()) {
    /* An IPv6 source for an IPv4 destination cannot work: one failure, no crash. */
    ck_assert_int_eq(
        tu_connect(p.r, "127.0.0.1", p.port, &p.client.base, NULL, NULL, 10.0, "::1", NULL), 0);
    tu_wait_int(p.r, &p.client.failed, 1, 10.0);
    tu_settle(p.r, 0.05);
    ck_assert_int_eq(p.client.failed, 1);
    ck_assert_int_lt(p.client.last_failed.code, 0);
    ck_assert_int_eq(p.client.built, 1);
  }
  pair_free(&p);
}
END_TEST

START_TEST(test_ipv6) {
  if (!tu_ipv6_available()) {
    printf("test_ipv6: skipped, ::1 is not available\n");
    return;
  }
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  server.conn_config.echo = 1;
  client.conn_config.greeting = "six";
  client.conn_config.greeting_len = 3;
  weft_listener *l = NULL;
  ck_assert_int_eq(weft_listen_tcp(r, "::1", 0, &server.base, &l), 0);
  int port = weft_listener_port(l);
  ck_assert_int_gt(port, 0);
  ck_assert_int_eq(weft_connect_tcp(r, "::1", port, &client.base, NULL), 0);
  tu_conn *c = tu_wait_conn(r, &client, 0, 10.0);
  tu_wait_size(r, &c->rx_len, 3, 10.0);
  ck_assert_msg(tu_conn_rx_equals(c, "six", 3), "client got '%s'", RX_STR(c));

  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char buf[64], want[64];
  ck_assert_int_eq(weft_transport_peer_address(c->transport, (struct sockaddr *)&ss, &len), 0);
  ck_assert_int_eq(ss.ss_family, AF_INET6);
  ck_assert_int_eq(len, sizeof(struct sockaddr_in6));
  snprintf(want, sizeof want, "[::1]:%d", port);
  ck_assert_str_eq(weft_address_format((struct sockaddr *)&ss, buf, sizeof buf), want);
  tu_conn *s = tu_factory_conn(&server, 0);
  ck_assert_ptr_nonnull(s);
  ck_assert_int_eq(s->peer.ss_family, AF_INET6);

  tu_factory_check(&server);
  tu_factory_check(&client);
  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
}
END_TEST

/* --- Writes after close, refusal -------------------------------------------------------- */

START_TEST(test_write_after_close) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  weft_buf bufs[1] = {{"x", 1}};
  /* lose_connection on the client, abort on the server. */
  ck_assert_int_eq(weft_transport_lose_connection(p.c->transport), 0);
  ck_assert_int_eq(weft_transport_write(p.c->transport, "late", 4), WEFT_ECLOSED);
  ck_assert_int_eq(weft_transport_write_sequence(p.c->transport, bufs, 1), WEFT_ECLOSED);
  ck_assert_int_eq(weft_transport_abort_connection(p.s->transport), 0);
  ck_assert_int_eq(weft_transport_write(p.s->transport, "late", 4), WEFT_ECLOSED);
  ck_assert_int_eq(weft_transport_write_sequence(p.s->transport, bufs, 1), WEFT_ECLOSED);
  tu_wait_int(p.r, &p.c->lost, 1, 10.0);
  tu_wait_int(p.r, &p.s->lost, 1, 10.0);
  tu_settle(p.r, 0.1);
  ck_assert_int_eq(p.c->lost, 1);
  ck_assert_int_eq(p.s->lost, 1);
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_EABORTED);
  ck_assert_uint_eq(p.s->rx_total, 0);
  pair_free(&p);
}
END_TEST

/* Writes from inside connection_lost are refused too. */
static void write_in_lost(tu_conn *c, weft_transport *t, const weft_reason *reason) {
  (void)reason;
  c->last_write_error = weft_transport_write(t, "x", 1);
}

START_TEST(test_write_in_connection_lost) {
  pair p;
  pair_init(&p);
  p.client.conn_config.on_lost = write_in_lost;
  p.server.conn_config.on_lost = write_in_lost;
  pair_connect(&p);
  ck_assert_int_eq(weft_transport_lose_connection(p.s->transport), 0);
  tu_wait_int(p.r, &p.c->lost, 1, 10.0);
  tu_wait_int(p.r, &p.s->lost, 1, 10.0);
  ck_assert_int_eq(p.c->last_write_error, WEFT_ECLOSED);
  ck_assert_int_eq(p.s->last_write_error, WEFT_ECLOSED);
  pair_free(&p);
}
END_TEST

START_TEST(test_factory_refuses) {
  pair p;
  pair_init(&p);
  p.server.refuse = 1;
  tu_connect_tcp_local(p.r, &p.client, p.port);
  tu_conn *c = tu_wait_conn(p.r, &p.client, 0, 10.0);
  tu_wait_int(p.r, &c->lost, 1, 10.0);
  tu_settle(p.r, 0.1);
  ck_assert_int_eq(c->made, 1);
  ck_assert_int_eq(c->lost, 1);
  ck_assert_msg(c->lost_reason.code == WEFT_OK || c->lost_reason.code == WEFT_ECONNLOST,
                "client: %s (%s)", weft_err_name(c->lost_reason.code), c->lost_reason.message);
  ck_assert_int_eq(p.client.failed, 0);
  ck_assert_int_eq(p.server.built, 1);
  ck_assert_int_eq(p.server.refused, 1);
  ck_assert_int_eq(p.server.nconns, 0);
  ck_assert_int_eq(p.server.made, 0);
  ck_assert_uint_eq(weft_reactor_connection_count(p.r), 0);
  pair_free(&p);
}
END_TEST

/* --- write_sequence, half-close --------------------------------------------------------- */

START_TEST(test_write_sequence) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  size_t big = 100000;
  uint8_t *pat = malloc(big);
  ck_assert_ptr_nonnull(pat);
  tu_pattern_fill(pat, big, 0);
  /* All or nothing: one bad buffer and nothing at all is queued. */
  weft_buf bad[2] = {{"xyz", 3}, {NULL, 5}};
  ck_assert_int_eq(weft_transport_write_sequence(p.c->transport, bad, 2), WEFT_EINVAL);
  ck_assert_uint_eq(weft_transport_pending_output(p.c->transport), 0);
  weft_buf bufs[4] = {{"abc", 3}, {"", 0}, {"defgh", 5}, {pat, big}};
  ck_assert_int_eq(weft_transport_write_sequence(p.c->transport, bufs, 4), 0);
  ck_assert_int_eq(weft_transport_write_sequence(p.c->transport, bufs, 0), 0);
  tu_wait_size(p.r, &p.s->rx_len, 8 + big, 10.0);
  tu_settle(p.r, 0.05);
  ck_assert_uint_eq(p.s->rx_len, 8 + big);
  ck_assert_int_eq(memcmp(p.s->rx, "abcdefgh", 8), 0);
  ck_assert_int_eq(memcmp(p.s->rx + 8, pat, big), 0);
  free(pat);
  pair_free(&p);
}
END_TEST

START_TEST(test_write_arguments) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  ck_assert_int_eq(weft_transport_write(p.c->transport, NULL, 3), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_write(p.c->transport, NULL, 0), 0);
  ck_assert_int_eq(weft_transport_write(p.c->transport, "x", 0), 0);
  ck_assert_int_eq(weft_transport_write(NULL, "x", 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_write_sequence(NULL, NULL, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_lose_connection(NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_abort_connection(NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_half_close(NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_pause_reading(NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_resume_reading(NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_set_write_low_water(NULL, 0), WEFT_EINVAL);
  ck_assert_uint_eq(weft_transport_pending_output(NULL), 0);
  ck_assert_int_eq(weft_transport_set_nodelay(p.c->transport, 0), 0);
  ck_assert_int_eq(weft_transport_set_nodelay(p.c->transport, 1), 0);
  ck_assert_int_eq(weft_transport_set_keepalive(p.c->transport, 1, 30), 0);
  ck_assert_int_eq(weft_transport_set_keepalive(p.c->transport, 0, 0), 0);
  tu_settle(p.r, 0.05);
  ck_assert_uint_eq(p.s->rx_total, 0);
  pair_free(&p);
}
END_TEST

static void half_close_on_made(tu_conn *c, weft_transport *t) {
  ck_assert_int_eq(weft_transport_write(t, "request", 7), 0);
  ck_assert_int_eq(weft_transport_half_close(t), 0);
  c->last_write_error = weft_transport_write(t, "more", 4);
}

static int reply_on_eof(tu_conn *c, weft_transport *t) {
  char reply[128];
  int n = snprintf(reply, sizeof reply, "reply:%s", RX_STR(c));
  if (weft_transport_write(t, reply, (size_t)n) != 0)
    c->write_errors++;
  if (weft_transport_lose_connection(t) != 0)
    c->write_errors++;
  return 1;
}

START_TEST(test_half_close) {
  pair p;
  pair_init(&p);
  p.client.conn_config.on_made = half_close_on_made;
  p.server.conn_config.on_read_eof = reply_on_eof;
  pair_connect(&p);
  tu_wait_int(p.r, &p.c->lost, 1, 10.0);
  tu_wait_int(p.r, &p.s->lost, 1, 10.0);
  ck_assert_int_eq(p.c->last_write_error, WEFT_ECLOSED);
  ck_assert_msg(tu_conn_rx_equals(p.s, "request", 7), "server got '%s'", RX_STR(p.s));
  ck_assert_msg(tu_conn_rx_equals(p.c, "reply:request", 13), "client got '%s'", RX_STR(p.c));
  ck_assert_int_eq(p.s->write_errors, 0);
  ck_assert_int_eq(p.s->read_eof, 1);
  /* The client's own write side was already shut: whether read_eof still runs when the
   * server's FIN arrives is not part of the contract; at most once, and the close is clean. */
  ck_assert_int_le(p.c->read_eof, 1);
  ck_assert_int_eq(p.c->lost_reason.code, WEFT_OK);
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_OK);
  pair_free(&p);
}
END_TEST

/* --- The same protocol logic without a port ------------------------------------------------ */

/* A plain weft_testing_pair (weft/testing.h): both protocols are built on return, and the test
 * pumps the reactor instead of waiting. For the tests below the socket is not the point. */
typedef struct mem_pair {
  weft_reactor *r;
  tu_factory server, client;
  weft_testing_pair *tp;
  tu_conn *s, *c;
} mem_pair;

static void mem_pair_new(mem_pair *p) {
  memset(p, 0, sizeof *p);
  ck_assert_int_eq(weft_testing_reactor_new(&p->r), 0);
  tu_factory_init(&p->server);
  tu_factory_init(&p->client);
}

static void mem_pair_connect(mem_pair *p) {
  ck_assert_int_eq(
      weft_testing_pair_new(p->r, &p->client.base, &p->server.base, NULL, NULL, NULL, &p->tp), 0);
  p->c = tu_factory_conn(&p->client, 0);
  p->s = tu_factory_conn(&p->server, 0);
  ck_assert_ptr_nonnull(p->c);
  ck_assert_ptr_nonnull(p->s);
}

static void mem_pair_free(mem_pair *p) {
  tu_factory_check(&p->server);
  tu_factory_check(&p->client);
  weft_testing_pair_free(p->tp);
  weft_reactor_free(p->r);
  tu_factory_check(&p->server);
  tu_factory_check(&p->client);
  tu_factory_cleanup(&p->server);
  tu_factory_cleanup(&p->client);
}

/* test_half_close without a port. */
START_TEST(test_half_close_memory) {
  mem_pair p;
  mem_pair_new(&p);
  p.client.conn_config.on_made = half_close_on_made;
  p.server.conn_config.on_read_eof = reply_on_eof;
  mem_pair_connect(&p);
  ck_assert_int_eq(weft_testing_pump(p.r), 0);
  ck_assert_int_eq(p.c->lost, 1);
  ck_assert_int_eq(p.s->lost, 1);
  ck_assert_int_eq(p.c->last_write_error, WEFT_ECLOSED);
  ck_assert_msg(tu_conn_rx_equals(p.s, "request", 7), "server got '%s'", RX_STR(p.s));
  ck_assert_msg(tu_conn_rx_equals(p.c, "reply:request", 13), "client got '%s'", RX_STR(p.c));
  ck_assert_int_eq(p.s->write_errors, 0);
  ck_assert_int_eq(p.s->read_eof, 1);
  ck_assert_int_le(p.c->read_eof, 1);
  ck_assert_int_eq(p.c->lost_reason.code, WEFT_OK);
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_OK);
  mem_pair_free(&p);
}
END_TEST

/* test_write_after_close and test_write_in_connection_lost without a port. */
START_TEST(test_write_after_close_memory) {
  mem_pair p;
  mem_pair_new(&p);
  p.client.conn_config.on_lost = write_in_lost;
  p.server.conn_config.on_lost = write_in_lost;
  mem_pair_connect(&p);
  weft_buf bufs[1] = {{"x", 1}};
  ck_assert_int_eq(weft_transport_lose_connection(p.c->transport), 0);
  ck_assert_int_eq(weft_transport_write(p.c->transport, "late", 4), WEFT_ECLOSED);
  ck_assert_int_eq(weft_transport_write_sequence(p.c->transport, bufs, 1), WEFT_ECLOSED);
  ck_assert_int_eq(weft_transport_abort_connection(p.s->transport), 0);
  ck_assert_int_eq(weft_transport_write(p.s->transport, "late", 4), WEFT_ECLOSED);
  ck_assert_int_eq(weft_transport_write_sequence(p.s->transport, bufs, 1), WEFT_ECLOSED);
  ck_assert_int_eq(weft_testing_pump(p.r), 0);
  ck_assert_int_eq(p.c->lost, 1);
  ck_assert_int_eq(p.s->lost, 1);
  ck_assert_int_eq(p.s->lost_reason.code, WEFT_EABORTED);
  ck_assert_uint_eq(p.s->rx_total, 0);
  ck_assert_int_eq(p.c->last_write_error, WEFT_ECLOSED); /* from inside connection_lost */
  ck_assert_int_eq(p.s->last_write_error, WEFT_ECLOSED);
  mem_pair_free(&p);
}
END_TEST

/* --- Bad arguments ---------------------------------------------------------------------- */

START_TEST(test_bad_arguments) {
  weft_reactor *r = tu_reactor_new();
  tu_factory f;
  tu_factory_init(&f);
  weft_factory no_build = {0};
  weft_listener *l = NULL;
  ck_assert_int_eq(weft_listen_tcp(NULL, "127.0.0.1", 0, &f.base, &l), WEFT_EINVAL);
  ck_assert_int_eq(weft_listen_tcp(r, "127.0.0.1", 0, NULL, &l), WEFT_EINVAL);
  ck_assert_int_eq(weft_listen_tcp(r, "127.0.0.1", 0, &no_build, &l), WEFT_EINVAL);
  ck_assert_int_eq(weft_listen_tcp(r, "127.0.0.1", -1, &f.base, &l), WEFT_EINVAL);
  ck_assert_int_eq(weft_listen_tcp(r, "127.0.0.1", 65536, &f.base, &l), WEFT_EINVAL);
  ck_assert_int_eq(weft_listen_tcp(r, "not-an-ip", 0, &f.base, &l), WEFT_EINVAL);
  ck_assert_int_eq(weft_listen_tcp(r, "localhost", 0, &f.base, &l), WEFT_EINVAL);

  int port = tu_free_port();
  weft_connector *cn = NULL;
  ck_assert_int_eq(weft_connect_tcp(NULL, "127.0.0.1", port, &f.base, &cn), WEFT_EINVAL);
  ck_assert_int_eq(weft_connect_tcp(r, NULL, port, &f.base, &cn), WEFT_EINVAL);
  ck_assert_int_eq(weft_connect_tcp(r, "127.0.0.1", port, NULL, &cn), WEFT_EINVAL);
  ck_assert_int_eq(weft_connect_tcp(r, "127.0.0.1", port, &no_build, &cn), WEFT_EINVAL);
  ck_assert_int_eq(weft_connect_tcp(r, "127.0.0.1", 0, &f.base, &cn), WEFT_EINVAL);
  ck_assert_int_eq(weft_connect_tcp(r, "127.0.0.1", -1, &f.base, &cn), WEFT_EINVAL);
  ck_assert_int_eq(weft_connect_tcp(r, "127.0.0.1", 65536, &f.base, &cn), WEFT_EINVAL);
  ck_assert_int_eq(tu_connect(r, "127.0.0.1", port, &f.base, NULL, NULL, 1, "not-an-ip", &cn),
                   WEFT_EINVAL);

  ck_assert_int_eq(weft_listener_port(NULL), -1);
  weft_listener_stop(NULL);
  ck_assert_int_eq(weft_connector_cancel(NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_reactor_set_nameservers(r, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_reactor_set_nameservers(r, "not a server"), WEFT_EINVAL);

  tu_settle(r, 0.1);
  ck_assert_int_eq(f.built + f.failed + f.made + f.lost, 0);
  ck_assert_uint_eq(weft_reactor_connection_count(r), 0);
  weft_reactor_free(r);
  ck_assert_int_eq(f.built + f.failed + f.made + f.lost, 0);
  tu_factory_cleanup(&f);
}
END_TEST

START_TEST(test_listen_errors) {
  weft_reactor *r = tu_reactor_new();
  tu_factory f;
  tu_factory_init(&f);
  /* A port held by a plain socket (no SO_REUSEPORT). */
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_in sin = {0};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
  ck_assert_int_eq(listen(fd, 1), 0);
  socklen_t len = sizeof sin;
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
  weft_listener *l = NULL;
  ck_assert_int_eq(weft_listen_tcp(r, "127.0.0.1", ntohs(sin.sin_port), &f.base, &l),
                   WEFT_EADDRINUSE);
  /* 192.0.2.1 (TEST-NET-1) is no local address: bind fails, nothing is sent. */
  ck_assert_int_eq(weft_listen_tcp(r, "192.0.2.1", 0, &f.base, &l), WEFT_EADDRNOTAVAIL);
  close(fd);
  tu_settle(r, 0.05);
  ck_assert_int_eq(f.built + f.failed + f.made + f.lost, 0);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
}
END_TEST

/* --- Connector cancel and shutdown ------------------------------------------------------ */

START_TEST(test_connector_cancel) {
  pair p;
  pair_init(&p);
  weft_connector *cn = NULL;
  ck_assert_int_eq(weft_connect_tcp(p.r, "127.0.0.1", p.port, &p.client.base, &cn), 0);
  ck_assert_ptr_nonnull(cn);
  ck_assert_int_eq(weft_connector_cancel(cn), 0);
  ck_assert_int_eq(p.client.failed, 0);           /* from the loop, not from inside cancel */
  ck_assert_int_eq(weft_connector_cancel(cn), 0); /* still pending: a second cancel is harmless */
  tu_wait_int(p.r, &p.client.failed, 1, 10.0);
  tu_settle(p.r, 0.2);
  ck_assert_int_eq(p.client.failed, 1);
  ck_assert_msg(p.client.last_failed.code == WEFT_ECANCELED, "%s (%s)",
                weft_err_name(p.client.last_failed.code), p.client.last_failed.message);
  ck_assert_int_eq(p.client.built, 0);
  ck_assert_int_eq(p.client.made, 0);
  /* Whatever the server accepted ended too. */
  ck_assert_int_eq(p.server.made, p.server.lost);
  pair_free(&p);
}
END_TEST

static int dns_asked(void *arg) {
  return tu_fake_dns_queries(arg) >= 1;
}

START_TEST(test_connector_cancel_resolving) {
  weft_reactor *r = tu_reactor_new();
  tu_fake_dns *dns = tu_fake_dns_start(r, TU_DNS_SILENT);
  tu_factory client;
  tu_factory_init(&client);
  weft_connector *cn = NULL;
  ck_assert_int_eq(weft_connect_tcp(r, "no-such-host.invalid", tu_free_port(), &client.base, &cn),
                   0);
  /* Wait until the query reached the (silent) server, then cancel mid-resolution. */
  tu_run_until(r, dns_asked, dns, 10.0);
  ck_assert_int_eq(client.failed, 0);
  ck_assert_int_eq(weft_connector_cancel(cn), 0);
  tu_wait_int(r, &client.failed, 1, 10.0);
  tu_settle(r, 0.1);
  ck_assert_int_eq(client.failed, 1);
  ck_assert_msg(client.last_failed.code == WEFT_ECANCELED, "%s (%s)",
                weft_err_name(client.last_failed.code), client.last_failed.message);
  ck_assert_int_eq(client.built, 0);
  tu_fake_dns_free(dns);
  weft_reactor_free(r);
  ck_assert_int_eq(client.failed, 1);
  tu_factory_cleanup(&client);
}
END_TEST

START_TEST(test_reactor_free_pending_connectors) {
  weft_reactor *r = tu_reactor_new();
  tu_fake_dns *dns = tu_fake_dns_start(r, TU_DNS_SILENT);
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  int port;
  tu_listen_tcp_local(r, &server, &port);
  tu_connect_tcp_local(r, &client, port); /* connecting */
  ck_assert_int_eq(weft_connect_tcp(r, "no-such-host.invalid", port, &client.base, NULL),
                   0); /* resolving */
  ck_assert_int_eq(client.failed, 0);
  tu_fake_dns_free(dns);
  weft_reactor_free(r);
  ck_assert_int_eq(client.failed, 2);
  ck_assert_int_eq(client.last_failed.code, WEFT_ESHUTDOWN);
  ck_assert_int_eq(client.built, 0);
  ck_assert_int_eq(server.made, server.lost);
  tu_factory_check(&client);
  tu_factory_check(&server);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
}
END_TEST

/* --- 1,000 sequential connections leave no descriptor behind --------------------------- */

static void one_round(weft_reactor *r, tu_factory *server, tu_factory *client, int port, int i) {
  tu_connect_tcp_local(r, client, port);
  tu_wait_int(r, &client->lost, i + 1, 10.0);
  tu_wait_int(r, &server->lost, i + 1, 10.0);
  tu_conn *c = tu_factory_conn(client, 0);
  ck_assert_ptr_nonnull(c);
  ck_assert_msg(tu_conn_rx_equals(c, "x", 1), "round %d: client got '%s'", i, RX_STR(c));
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "round %d: %s", i,
                weft_err_name(c->lost_reason.code));
  tu_factory_check(client);
  tu_factory_check(server);
  tu_factory_reap(client);
  tu_factory_reap(server);
}

START_TEST(test_many_connections) {
  int fds_start = tu_count_fds();
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  server.conn_config.echo = 1;
  client.conn_config.greeting = "x";
  client.conn_config.greeting_len = 1;
  client.conn_config.close_after = 1;
  int port;
  weft_listener *l = tu_listen_tcp_local(r, &server, &port);
  one_round(r, &server, &client, port, 0); /* warm-up: lazily created resources */
  int fds_before = tu_count_fds();
  double start = tu_now();
  for (int i = 1; i <= 1000; i++)
    one_round(r, &server, &client, port, i);
  double took = tu_now() - start;
  int fds_after = tu_count_fds();
  ck_assert_int_eq(fds_after, fds_before);
  ck_assert_int_eq(client.failed, 0);
  ck_assert_int_eq(client.made, 1001);
  ck_assert_int_eq(server.made, 1001);
  ck_assert_uint_eq(weft_reactor_connection_count(r), 0);
  fprintf(stderr, "1000 connections in %.2f s\n", took);
  weft_listener_stop(l);
  weft_reactor_free(r);
  ck_assert_int_eq(tu_count_fds(), fds_start);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
}
END_TEST

/* --- Addresses -------------------------------------------------------------------------- */

static void expect_addr(weft_transport *t, int peer, const char *want, const char *what) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char buf[64];
  int rc = peer ? weft_transport_peer_address(t, (struct sockaddr *)&ss, &len)
                : weft_transport_host_address(t, (struct sockaddr *)&ss, &len);
  ck_assert_msg(rc == 0, "%s: %s", what, weft_err_name(rc));
  ck_assert_int_eq(ss.ss_family, AF_INET);
  ck_assert_int_eq(len, sizeof(struct sockaddr_in));
  const char *got = weft_address_format((struct sockaddr *)&ss, buf, sizeof buf);
  ck_assert_msg(strcmp(got, want) == 0, "%s: got %s, want %s", what, got, want);
}

START_TEST(test_addresses) {
  pair p;
  pair_init(&p);
  pair_connect(&p);
  char want[64], client_addr[64], buf[64];
  snprintf(want, sizeof want, "127.0.0.1:%d", p.port);
  expect_addr(p.c->transport, 1, want, "client peer");
  expect_addr(p.s->transport, 0, want, "server host");

  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  ck_assert_int_eq(weft_transport_host_address(p.c->transport, (struct sockaddr *)&ss, &len), 0);
  snprintf(client_addr, sizeof client_addr, "%s",
           weft_address_format((struct sockaddr *)&ss, buf, sizeof buf));
  ck_assert_msg(strncmp(client_addr, "127.0.0.1:", 10) == 0, "client host %s", client_addr);
  ck_assert_str_ne(client_addr, want);
  expect_addr(p.s->transport, 1, client_addr, "server peer");
  /* build_protocol was given the same peer address. */
  ck_assert_str_eq(weft_address_format((struct sockaddr *)&p.s->peer, buf, sizeof buf),
                   client_addr);
  ck_assert_str_eq(weft_address_format((struct sockaddr *)&p.c->peer, buf, sizeof buf), want);

  len = sizeof ss;
  ck_assert_int_eq(weft_listener_address(p.listener, (struct sockaddr *)&ss, &len), 0);
  ck_assert_str_eq(weft_address_format((struct sockaddr *)&ss, buf, sizeof buf), want);
  len = sizeof ss;
  ck_assert_int_eq(weft_transport_peer_address(NULL, (struct sockaddr *)&ss, &len), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_peer_address(p.c->transport, NULL, &len), WEFT_EINVAL);
  ck_assert_int_eq(weft_transport_host_address(p.c->transport, (struct sockaddr *)&ss, NULL),
                   WEFT_EINVAL);

  /* Other accessors of a plain TCP transport. */
  ck_assert_ptr_eq(weft_transport_reactor(p.c->transport), p.r);
  ck_assert_ptr_eq(weft_transport_protocol(p.c->transport), &p.c->base);
  ck_assert_int_eq(weft_transport_is_tls(p.c->transport), 0);
  ck_assert_ptr_null(weft_transport_tls_version(p.c->transport));
  ck_assert_ptr_null(weft_transport_ssl(p.c->transport));
  ck_assert_int_eq(p.c->proto_made.set, 1);
  ck_assert_int_eq(p.c->proto_made.present, 0);
  ck_assert_uint_eq(p.c->proto_made.len, 0);
  ck_assert_int_eq(p.c->proto_made.mechanism, WEFT_NEGOTIATED_NONE);
  pair_free(&p);
}
END_TEST

/* A NULL interface listens on every IPv4 address (0.0.0.0); loopback reaches it. */
START_TEST(test_listen_any) {
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  server.conn_config.echo = 1;
  client.conn_config.greeting = "any";
  client.conn_config.greeting_len = 3;
  weft_listener *l = NULL;
  ck_assert_int_eq(tu_listen(r, NULL, 0, &server.base, NULL, -1, 0, &l), 0);
  int port = weft_listener_port(l);
  ck_assert_int_gt(port, 0);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char buf[64], want[64];
  ck_assert_int_eq(weft_listener_address(l, (struct sockaddr *)&ss, &len), 0);
  snprintf(want, sizeof want, "0.0.0.0:%d", port);
  ck_assert_str_eq(weft_address_format((struct sockaddr *)&ss, buf, sizeof buf), want);
  tu_connect_tcp_local(r, &client, port);
  tu_conn *c = tu_wait_conn(r, &client, 0, 10.0);
  tu_wait_size(r, &c->rx_len, 3, 10.0);
  ck_assert_msg(tu_conn_rx_equals(c, "any", 3), "client got '%s'", RX_STR(c));
  tu_factory_check(&server);
  tu_factory_check(&client);
  weft_reactor_free(r); /* also stops the listener */
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
}
END_TEST

START_TEST(test_address_format) {
  char buf[64];
  struct sockaddr_in sin = {0};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(8080);
  inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
  ck_assert_str_eq(weft_address_format((struct sockaddr *)&sin, buf, sizeof buf), "127.0.0.1:8080");
  struct sockaddr_in6 sin6 = {0};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(443);
  sin6.sin6_addr = in6addr_loopback;
  ck_assert_str_eq(weft_address_format((struct sockaddr *)&sin6, buf, sizeof buf), "[::1]:443");
  inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
  sin6.sin6_port = htons(65535);
  ck_assert_str_eq(weft_address_format((struct sockaddr *)&sin6, buf, sizeof buf),
                   "[2001:db8::1]:65535");
  struct sockaddr unknown = {0};
  unknown.sa_family = 255; /* no such family */
  ck_assert_str_eq(weft_address_format(&unknown, buf, sizeof buf), "?");
  unknown.sa_family = AF_UNIX; /* an unnamed Unix socket (its path bytes zero) */
  ck_assert_str_eq(weft_address_format(&unknown, buf, sizeof buf), "unix:");
  /* A short buffer is filled and terminated, never overrun. */
  char small[8];
  memset(small, 'Z', sizeof small);
  const char *s = weft_address_format((struct sockaddr *)&sin, small, 6);
  ck_assert_ptr_nonnull(s);
  ck_assert_uint_lt(strlen(s), 6);
  ck_assert_int_eq(small[6], 'Z');
  ck_assert_int_eq(small[7], 'Z');
}
END_TEST

static Suite *tcp_suite(void) {
  Suite *s = suite_create("tcp");
  TCase *tc = tcase_create("data");
  tcase_add_test(tc, test_echo);
  tcase_add_test(tc, test_write_reference);
  tcase_add_test(tc, test_write_reference_abort);
  tcase_add_test(tc, test_pause_resume);
  tcase_add_test(tc, test_pause_until_eof);
  tcase_add_test(tc, test_write_drained);
  tcase_add_test(tc, test_write_sequence);
  tcase_add_test(tc, test_write_arguments);
  tcase_add_test(tc, test_half_close);
  tcase_add_test(tc, test_half_close_memory);
  tcase_add_test(tc, test_write_after_close_memory);
  tcase_set_timeout(tc, 30);
  suite_add_tcase(s, tc);

  tc = tcase_create("transfer");
  tcase_add_test(tc, test_transfer_64mib);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("lost");
  tcase_add_test(tc, test_lost_peer_close);
  tcase_add_test(tc, test_lost_local_lose);
  tcase_add_test(tc, test_lose_flushes);
  tcase_add_test(tc, test_lose_with_unread_input);
  tcase_add_test(tc, test_lost_abort);
  tcase_add_test(tc, test_lost_peer_reset);
  tcase_add_test(tc, test_lost_reactor_free);
  tcase_add_test(tc, test_write_after_close);
  tcase_add_test(tc, test_write_in_connection_lost);
  tcase_add_test(tc, test_factory_refuses);
  tcase_add_test(tc, test_no_data_after_close);
  tcase_add_test(tc, test_abort_then_free);
  tcase_add_test(tc, test_protocol_freed_in_lost);
  tcase_add_test(tc, test_listener_stop);
  tcase_add_test(tc, test_close_in_connection_made);
  tcase_set_timeout(tc, 30);
  suite_add_tcase(s, tc);

  tc = tcase_create("failed");
  tcase_add_test(tc, test_failed_refused);
  tcase_add_test(tc, test_failed_timeout);
  tcase_add_test(tc, test_failed_not_found);
  tcase_add_test(tc, test_connect_localhost);
  tcase_add_test(tc, test_resolve_every_address);
  tcase_add_test(tc, test_bind_address);
  tcase_add_test(tc, test_ipv6);
  tcase_add_test(tc, test_connector_cancel);
  tcase_add_test(tc, test_connector_cancel_resolving);
  tcase_add_test(tc, test_reactor_free_pending_connectors);
  tcase_set_timeout(tc, 30);
  suite_add_tcase(s, tc);

  tc = tcase_create("arguments");
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_listen_errors);
  tcase_add_test(tc, test_addresses);
  tcase_add_test(tc, test_listen_any);
  tcase_add_test(tc, test_address_format);
  tcase_set_timeout(tc, 30);
  suite_add_tcase(s, tc);

  tc = tcase_create("hygiene");
  tcase_add_test(tc, test_many_connections);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(tcp_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
