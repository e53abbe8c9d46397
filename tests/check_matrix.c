/* tests/check_matrix.c: the re-entrancy matrix. Every callback x every action a user may take
 * inside it x TCP, TLS and STARTTLS, each cell a separate Check test (tcase_add_loop_test).
 *
 * A cell runs a real connection on 127.0.0.1 (a weft client and a weft server on one reactor),
 * performs the action once, inside the callback, on the client's side (handshake_failed: on the
 * server's), then ends whatever is still open from outside, and asserts the rules of
 * include/weft/protocol.h:
 *  - the callback under test really ran (a cell that tests nothing fails);
 *  - connection_made and connection_lost balanced on both sides, no callback before
 *    connection_made or after connection_lost, same transport throughout (tu_factory_check);
 *  - connection_lost never runs nested inside a weft call made by the action;
 *  - no callback after a failed call: a write_reference that failed never calls its release, a
 *    start_tls that failed never brings a tls_started; a cancelled or stopped attempt brings no
 *    further connection_failed;
 *  - a write_reference that succeeded calls its release exactly once (at the latest when the
 *    reactor is freed);
 *  - a protocol whose ops were swapped gets its later callbacks, connection_lost included,
 *    through the new table; a reconnector never hands out a transport that is not live;
 *  - no leak (weft_allocations_outstanding() is 0 at the end; ASan's leak check in the
 *    sanitizer build), descriptors back to the count before the cell;
 *  - the reactor still serves a fresh connection afterwards.
 *
 * Where cells do not apply (the table is cell_not_applicable(), which also gives the reason):
 *  - read_eof: TCP only (TLS connections never get it: close_notify ends them);
 *  - tls_started: STARTTLS only (only weft_transport_start_tls brings it);
 *  - connection_failed: not STARTTLS (its TCP connection succeeded; an upgrade failure goes to
 *    tls_started);
 *  - handshake_failed: TLS only (TCP has no handshake; a failed STARTTLS upgrade goes to
 *    tls_started on the server);
 *  - transport actions (write ... start_tls, dispatch free, ops swap) in connection_failed and
 *    handshake_failed: the failed connection has no transport and no protocol;
 *  - write, write_reference, half_close, start_tls in build_protocol: protocol.h says not to
 *    write before connection_made;
 *  - connector cancel outside connection_failed: the connector is invalid once build_protocol
 *    ran (endpoint.h), and every other callback comes later (handshake_failed is the server's,
 *    and races with the client's own failure);
 *  - dispatch factory free in build_protocol (the dispatch factory is building that very
 *    connection) and in connection_failed / handshake_failed (the connector still uses it);
 *  - reactor free: weft_reactor_free must not be called from a callback of its reactor
 *    (reactor.h), so this column frees the reactor right AFTER the callback returned, from the
 *    test's loop, with the connection in the state that callback left it in.
 *
 * Clients: a plain connector, or a reconnector for the reconnector-stop/free and ops-swap
 * columns (ops swap is the case of issue 11 item 10), or a dispatch factory for the
 * dispatch-free column. STARTTLS: the client writes "STARTTLS\n" in connection_made, the server
 * answers "GO\n" and upgrades, the client upgrades on "GO" (as samples/starttls-line does).
 * WEFT_MATRIX_LIST=1 prints every cell (applicable or not, with the reason) to stdout;
 * WEFT_MATRIX_CELL=callback/action/kind runs that cell only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "tlsutil.h"

/* --- The axes ----------------------------------------------------------------------------- */

enum cb {
  CB_BUILD,
  CB_MADE,
  CB_DATA,
  CB_EOF,
  CB_DRAINED,
  CB_TLS_STARTED,
  CB_LOST,
  CB_FAILED,
  CB_HS_FAILED,
  CB_RELEASE,
  CB_DELAYED,
  NCB
};
static const char *const cb_names[NCB] = {
    "build_protocol",   "connection_made", "data_received",   "read_eof",
    "write_drained",    "tls_started",     "connection_lost", "connection_failed",
    "handshake_failed", "release",         "delayed_call"};

enum act {
  A_WRITE,
  A_WRITE_REF,
  A_LOSE,
  A_LOSE_NOW,
  A_ABORT,
  A_HALF_CLOSE,
  A_PAUSE_RESUME,
  A_START_TLS,
  A_LISTENER_STOP,
  A_CONNECTOR_CANCEL,
  A_RC_STOP,
  A_RC_FREE,
  A_REACTOR_STOP,
  A_REACTOR_FREE,
  A_DISPATCH_FREE,
  A_OPS_SWAP,
  NACT
};
static const char *const act_names[NACT] = {"write",
                                            "write_reference",
                                            "lose",
                                            "lose_now",
                                            "abort",
                                            "half_close",
                                            "pause_resume",
                                            "start_tls",
                                            "listener_stop",
                                            "connector_cancel",
                                            "reconnector_stop",
                                            "reconnector_free",
                                            "reactor_stop",
                                            "reactor_free",
                                            "dispatch_free",
                                            "ops_swap"};

enum kind { K_TCP, K_TLS, K_STARTTLS, NKIND };
static const char *const kind_names[NKIND] = {"tcp", "tls", "starttls"};

/* Cells that fail because of bugs outside this suite's owner's area (the transport's write and
 * close paths, the TLS layer), named "callback/action/kind". Each is skipped (and reported) until
 * the fix is merged; the lead empties this list then. */
static const char *const MATRIX_KNOWN_FAILING[] = {
    /* Empty: a cell that fails is a bug to fix, not to list. (The write_reference release
     * cells failed until the release was deferred out of libevent's buffer work.) */
    NULL,
};

static const char *cell_not_applicable(int cb, int act, int kind) {
  if (cb == CB_EOF && kind != K_TCP)
    return "TLS connections never get read_eof (close_notify ends them)";
  if (cb == CB_TLS_STARTED && kind != K_STARTTLS)
    return "only weft_transport_start_tls brings tls_started";
  if (cb == CB_FAILED && kind == K_STARTTLS)
    return "the TCP connection succeeded; an upgrade failure goes to tls_started";
  if (cb == CB_HS_FAILED && kind != K_TLS)
    return "TCP has no handshake; a failed STARTTLS upgrade goes to tls_started";
  int transport_act = act <= A_START_TLS || act == A_DISPATCH_FREE || act == A_OPS_SWAP;
  if ((cb == CB_FAILED || cb == CB_HS_FAILED) && transport_act)
    return "a failed connection has no transport and no protocol";
  if (cb == CB_BUILD &&
      (act == A_WRITE || act == A_WRITE_REF || act == A_HALF_CLOSE || act == A_START_TLS))
    return "protocol.h: do not write before connection_made";
  if (act == A_CONNECTOR_CANCEL && cb != CB_FAILED)
    return "the connector is invalid once build_protocol ran (endpoint.h)";
  if (act == A_DISPATCH_FREE && cb == CB_BUILD)
    return "the dispatch factory is building this very connection";
  return NULL;
}

typedef struct cell {
  int cb, act, kind;
} cell;

static cell cells[NCB * NACT * NKIND];
static int ncells;

static void cell_name(const cell *c, char *buf, size_t size) {
  snprintf(buf, size, "%s/%s/%s", cb_names[c->cb], act_names[c->act], kind_names[c->kind]);
}

static int known_failing(const cell *c) {
  char name[128];
  cell_name(c, name, sizeof name);
  for (size_t i = 0; MATRIX_KNOWN_FAILING[i]; i++)
    if (strcmp(MATRIX_KNOWN_FAILING[i], name) == 0)
      return 1;
  return 0;
}

/* --- Shared state of the cell running ------------------------------------------------------ */

static tu_pki pki;
static weft_cert_options *so, *co, *bad_co; /* server; client; client trusting the wrong CA */

static struct {
  cell c;
  char name[128];
  weft_reactor *r;
  tu_factory server, client;
  weft_listener *listener;
  weft_connector *connector;
  weft_reconnector *rc;
  weft_factory *dispatch;
  int fired;           /* the callback under test ran */
  int acted;           /* the action ran */
  int free_now;        /* A_REACTOR_FREE: free the reactor once the callback returned */
  int ending;          /* end_live ran: the harness closed the connections itself */
  int in_weft;         /* depth of weft calls made by the action */
  int nested_lost;     /* connection_lost seen inside such a call */
  int ref_rc;          /* the action's write_reference result (1: not called) */
  int ref_released;    /* ... its release calls */
  int hx_ref_released; /* the harness's own write_reference (the release cell) */
  int hx_ref_rc;
  int starttls_ok;       /* start_tls calls that returned 0 (client side) */
  int tls_started_calls; /* client tls_started calls */
  int swapped;           /* the ops were swapped before connection_lost */
  int swap_lost;         /* connection_lost through the swapped table */
  int action_rc;         /* the action's main result */
  weft_transport *acted_on;
} M;

static uint8_t ref_buf[16384];
static uint8_t drain_buf[256 * 1024];

#define CELL_ASSERT(cond, ...)                                                                     \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      char m_msg_[512];                                                                            \
      snprintf(m_msg_, sizeof m_msg_, __VA_ARGS__);                                                \
      ck_abort_msg("cell %s: %s (%s)", M.name, m_msg_, #cond);                                     \
    }                                                                                              \
  } while (0)

/* Runs the loop until PRED holds or SECONDS pass; a weft_reactor_stop from a cell only
 * interrupts a pass. Returns 1 if PRED held. */
static int m_run(int (*pred)(void *), void *arg, double seconds) {
  double end = tu_now() + seconds;
  for (;;) {
    double left = end - tu_now();
    if (left <= 0)
      return pred(arg);
    int rc = weft_reactor_run_until(M.r, pred, arg, left);
    if (rc == 0)
      return 1;
    if (rc == WEFT_ETIMEDOUT)
      return pred(arg);
    ck_assert_msg(rc == WEFT_ECANCELED, "cell %s: run_until: %s", M.name, weft_err_name(rc));
  }
}

/* --- The swapped ops table ----------------------------------------------------------------- */

static void sw_made(weft_protocol *p, weft_transport *t) {
  tu_conn_ops.connection_made(p, t);
}
static void sw_data(weft_protocol *p, weft_transport *t, const uint8_t *d, size_t n) {
  tu_conn_ops.data_received(p, t, d, n);
}
static int sw_eof(weft_protocol *p, weft_transport *t) {
  return tu_conn_ops.read_eof(p, t);
}
static void sw_drained(weft_protocol *p, weft_transport *t) {
  tu_conn_ops.write_drained(p, t);
}
static void sw_tls_started(weft_protocol *p, weft_transport *t, int status) {
  tu_conn_ops.tls_started(p, t, status);
}
static void sw_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  M.swap_lost++;
  tu_conn_ops.connection_lost(p, t, reason);
}
static const weft_protocol_ops swapped_ops = {0,          sw_made,        sw_data, sw_eof,
                                              sw_drained, sw_tls_started, sw_lost};

/* --- The action ---------------------------------------------------------------------------- */

static void ref_release(const void *data, size_t len, void *arg) {
  (void)data;
  (void)len;
  (void)arg;
  M.ref_released++;
}

static void act(tu_conn *c, weft_transport *t, int cb) {
  if (M.fired || cb != M.c.cb)
    return;
  M.fired = 1;
  M.acted = 1;
  M.acted_on = t;
  M.in_weft++;
  int rc = 0;
  switch (M.c.act) {
    case A_WRITE:
      rc = weft_transport_write(t, "w", 1);
      CELL_ASSERT(rc == 0 || rc == WEFT_ECLOSED, "write: %s", weft_err_name(rc));
      break;
    case A_WRITE_REF:
      M.ref_rc = rc = weft_transport_write_reference(t, ref_buf, sizeof ref_buf, ref_release, NULL);
      CELL_ASSERT(rc == 0 || rc == WEFT_ECLOSED, "write_reference: %s", weft_err_name(rc));
      break;
    case A_LOSE:
      rc = weft_transport_lose_connection(t);
      CELL_ASSERT(rc == 0, "lose: %s", weft_err_name(rc));
      break;
    case A_LOSE_NOW: /* no wait for the peer's close_notify / FIN (set_close_timeout 0) */
      rc = weft_transport_set_close_timeout(t, 0);
      CELL_ASSERT(rc == 0 || rc == WEFT_ECLOSED, "set_close_timeout: %s", weft_err_name(rc));
      rc = weft_transport_lose_connection(t);
      CELL_ASSERT(rc == 0, "lose: %s", weft_err_name(rc));
      break;
    case A_ABORT:
      rc = weft_transport_abort_connection(t);
      CELL_ASSERT(rc == 0, "abort: %s", weft_err_name(rc));
      break;
    case A_HALF_CLOSE:
      rc = weft_transport_half_close(t);
      CELL_ASSERT(rc == 0 || rc == WEFT_ECLOSED || rc == WEFT_ENOTSUP, "half_close: %s",
                  weft_err_name(rc));
      break;
    case A_PAUSE_RESUME:
      rc = weft_transport_pause_reading(t);
      CELL_ASSERT(rc == 0 || rc == WEFT_ECLOSED, "pause: %s", weft_err_name(rc));
      rc = weft_transport_resume_reading(t);
      CELL_ASSERT(rc == 0 || rc == WEFT_ECLOSED, "resume: %s", weft_err_name(rc));
      break;
    case A_START_TLS:
      rc = weft_transport_start_tls(t, co, WEFT_TLS_CLIENT, "localhost");
      CELL_ASSERT(rc == 0 || rc == WEFT_ECLOSED || rc == WEFT_EBUSY, "start_tls: %s",
                  weft_err_name(rc));
      if (rc == 0)
        M.starttls_ok++;
      break;
    case A_LISTENER_STOP:
      weft_listener_stop(M.listener);
      M.listener = NULL;
      break;
    case A_CONNECTOR_CANCEL:
      rc = weft_connector_cancel(M.connector);
      CELL_ASSERT(rc == 0, "cancel: %s", weft_err_name(rc));
      break;
    case A_RC_STOP:
      rc = weft_reconnector_stop(M.rc);
      CELL_ASSERT(rc == 0, "reconnector_stop: %s", weft_err_name(rc));
      break;
    case A_RC_FREE:
      weft_reconnector_free(M.rc);
      M.rc = NULL;
      break;
    case A_REACTOR_STOP:
      rc = weft_reactor_stop(M.r);
      CELL_ASSERT(rc == 0, "reactor_stop: %s", weft_err_name(rc));
      break;
    case A_REACTOR_FREE:
      M.free_now = 1; /* after the callback returned: see the table above */
      break;
    case A_DISPATCH_FREE:
      weft_dispatch_factory_free(M.dispatch);
      M.dispatch = NULL;
      break;
    case A_OPS_SWAP:
      c->base.ops = &swapped_ops;
      if (cb != CB_LOST)
        M.swapped = 1;
      break;
  }
  M.action_rc = rc;
  M.in_weft--;
}

/* --- The client ----------------------------------------------------------------------------- */

static void hx_ref_release(const void *data, size_t len, void *arg) {
  (void)data;
  (void)len;
  tu_conn *c = arg;
  M.hx_ref_released++;
  act(c, c->transport, CB_RELEASE);
}

static void on_delayed(void *arg) {
  tu_conn *c = arg;
  /* The connection may have ended meanwhile: then there is nothing to act on. */
  if (c->lost || !c->transport) {
    M.fired = 1; /* ran, but its connection was gone already: nothing to test */
    return;
  }
  act(c, c->transport, CB_DELAYED);
}

/* The client's connection is ready for the cell's traffic (TCP/TLS: made; STARTTLS: upgraded). */
static void client_ready(tu_conn *c, weft_transport *t) {
  if (c->index != 0)
    return;
  switch (M.c.cb) {
    case CB_DRAINED: {
      /* The cell's write_drained may have run already, on the STARTTLS command's clear-text
     * write, and the harness may be closing the connection while the handshake ends (slow
     * builds: TSan, valgrind): then the write is refused, as it must be. */
      int rc = weft_transport_write(t, drain_buf, sizeof drain_buf);
      CELL_ASSERT(rc == 0 || (M.ending && rc == WEFT_ECLOSED), "harness write: %s",
                  weft_err_name(rc));
      break;
    }
    case CB_RELEASE:
      M.hx_ref_rc = weft_transport_write_reference(t, ref_buf, sizeof ref_buf, hx_ref_release, c);
      CELL_ASSERT(M.hx_ref_rc == 0, "harness write_reference: %s", weft_err_name(M.hx_ref_rc));
      break;
    case CB_DELAYED:
      ck_assert_int_eq(weft_reactor_call_later(M.r, 0, on_delayed, c, NULL), 0);
      break;
    default:
      break;
  }
}

static void cl_build(tu_factory *f, tu_conn *c, weft_transport *t) {
  (void)f;
  if (c->index == 0)
    act(c, t, CB_BUILD);
}

static void cl_made(tu_conn *c, weft_transport *t) {
  if (M.c.kind == K_STARTTLS && c->index == 0 && !weft_transport_is_tls(t))
    weft_transport_write(t, "STARTTLS\n", 9); /* may fail if the cell closed it already */
  else
    client_ready(c, t);
  if (c->index == 0)
    act(c, t, CB_MADE);
}

static void cl_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  if (M.c.kind == K_STARTTLS && c->index == 0 && !weft_transport_is_tls(t) && len >= 2 &&
      memcmp(data, "GO", 2) == 0) {
    if (weft_transport_start_tls(t, co, WEFT_TLS_CLIENT, "localhost") == 0)
      M.starttls_ok++;
    return;
  }
  if (c->index == 0)
    act(c, t, CB_DATA);
}

static int cl_eof(tu_conn *c, weft_transport *t) {
  if (c->index == 0)
    act(c, t, CB_EOF);
  return 0;
}

static void cl_drained(tu_conn *c, weft_transport *t) {
  if (c->index == 0)
    act(c, t, CB_DRAINED);
}

static void cl_tls_started(tu_conn *c, weft_transport *t, int status) {
  M.tls_started_calls++;
  if (status == 0)
    client_ready(c, t);
  if (c->index == 0)
    act(c, t, CB_TLS_STARTED);
}

static void any_lost(tu_conn *c, weft_transport *t, const weft_reason *reason) {
  (void)reason;
  if (M.in_weft > 0)
    M.nested_lost++;
  if (c->factory == &M.client && c->index == 0)
    act(c, t, CB_LOST);
}

static void cl_failed(tu_factory *f, const weft_reason *reason) {
  (void)f;
  (void)reason;
  act(NULL, NULL, CB_FAILED);
}

/* --- The server ------------------------------------------------------------------------------ */

static void server_ready(tu_conn *c, weft_transport *t) {
  weft_transport_write(t, "hello", 5);
  if (c->index != 0)
    return;
  if (M.c.cb == CB_EOF)
    weft_transport_half_close(t);
  else if (M.c.cb == CB_LOST)
    weft_transport_lose_connection(t);
}

static void sv_made(tu_conn *c, weft_transport *t) {
  if (M.c.kind != K_STARTTLS)
    server_ready(c, t);
}

static void sv_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  if (weft_transport_is_tls(t) || c->user)
    return; /* discard */
  if (M.c.kind == K_STARTTLS && len >= 9 && memcmp(data, "STARTTLS\n", 9) == 0) {
    c->user = c;
    weft_transport_write(t, "GO\n", 3);
    if (weft_transport_start_tls(t, so, WEFT_TLS_SERVER, NULL) != 0)
      weft_transport_lose_connection(t);
    return;
  }
  /* A TLS ClientHello where plaintext is expected (start_tls without the server's consent), or
   * anything else out of turn in the STARTTLS dialogue: close, as a real server would. */
  if (memchr(data, 0x16, len) || M.c.kind == K_STARTTLS)
    weft_transport_lose_connection(t);
}

static void sv_tls_started(tu_conn *c, weft_transport *t, int status) {
  if (status == 0)
    server_ready(c, t);
}

static void sv_handshake_failed(tu_factory *f, const struct sockaddr *peer,
                                const weft_reason *reason) {
  (void)f;
  (void)peer;
  (void)reason;
  act(NULL, NULL, CB_HS_FAILED);
}

/* --- Running a cell ---------------------------------------------------------------------------- */

static int fired_pred(void *arg) {
  (void)arg;
  return M.fired;
}

static int all_lost_pred(void *arg) {
  (void)arg;
  return M.client.made == M.client.lost && M.server.made == M.server.lost &&
         (M.c.cb != CB_RELEASE || M.hx_ref_released > 0);
}

static int never(void *arg) {
  (void)arg;
  return 0;
}

static void end_live(tu_factory *f) {
  M.ending = 1;
  for (tu_conn *c = f->conns; c; c = c->next)
    if (c->made && !c->lost && c->transport)
      weft_transport_lose_connection(c->transport);
}

typedef struct fresh {
  tu_factory fs, fc;
  int stage;
} fresh;

static int fresh_pred(void *arg) {
  fresh *f = arg;
  tu_conn *c = tu_factory_conn(&f->fc, 0);
  switch (f->stage) {
    case 0:
      return f->fc.made == 1 || f->fc.failed > 0;
    case 1:
      return c->rx_total >= 4 || c->lost;
    default:
      return f->fc.lost == 1 && f->fs.lost == 1;
  }
}

/* A fresh TCP connection through a new listener: the reactor still works. */
static void fresh_connection(void) {
  fresh f;
  memset(&f, 0, sizeof f);
  tu_factory_init(&f.fs);
  tu_factory_init(&f.fc);
  f.fs.conn_config.echo = 1;
  int port;
  weft_listener *l = tu_listen_tcp_local(M.r, &f.fs, &port);
  ck_assert_int_eq(tu_connect(M.r, "127.0.0.1", port, &f.fc.base, NULL, NULL, 5, NULL, NULL), 0);
  m_run(fresh_pred, &f, 5);
  CELL_ASSERT(f.fc.made == 1, "no fresh connection (failed %d)", f.fc.failed);
  tu_conn *c = tu_factory_conn(&f.fc, 0);
  tu_conn_write_str(c, "ping");
  f.stage = 1;
  m_run(fresh_pred, &f, 5);
  CELL_ASSERT(tu_conn_rx_equals(c, "ping", 4), "fresh connection: no echo");
  weft_transport_lose_connection(c->transport);
  f.stage = 2;
  m_run(fresh_pred, &f, 5);
  CELL_ASSERT(f.fc.lost == 1 && f.fs.lost == 1, "fresh connection did not end");
  tu_factory_check(&f.fs);
  tu_factory_check(&f.fc);
  weft_listener_stop(l);
  tu_factory_cleanup(&f.fs);
  tu_factory_cleanup(&f.fc);
}

/* Fresh options for every cell: they hold the client's session cache and the server's ticket
 * keys, which the leak check must see released. */
static void setup_options(void) {
  so = tu_server_options(&pki);
  co = tu_client_options(&pki);
  ck_assert_int_eq(weft_cert_options_new(&bad_co), 0);
  tu_check_opt(bad_co, weft_cert_options_add_ca_certificate(bad_co, pki.other_ca_cert));
  /* Bounded handshakes: a cell that stalls one fails in seconds, not in 30 s. */
  weft_cert_options *all[] = {so, co, bad_co};
  for (int i = 0; i < 3; i++)
    tu_check_opt(all[i], weft_cert_options_set_handshake_timeout(all[i], 3));
}

static void teardown_options(void);

START_TEST(test_cell) {
  memset(&M, 0, sizeof M);
  M.c = cells[_i];
  M.ref_rc = 1;
  M.hx_ref_rc = 1;
  cell_name(&M.c, M.name, sizeof M.name);
  if (known_failing(&M.c)) {
    printf("matrix: skipping known failing cell %s\n", M.name);
    return;
  }
  int fds = tu_count_fds();
  long blocks = weft_allocations_outstanding();
  setup_options();
  M.r = tu_reactor_new();
  tu_factory_init(&M.server);
  tu_factory_init(&M.client);
  M.server.conn_config.on_made = sv_made;
  M.server.conn_config.on_data = sv_data;
  M.server.conn_config.on_tls_started = sv_tls_started;
  M.server.conn_config.on_lost = any_lost;
  M.server.conn_config.keep_rx = 0;
  M.server.on_handshake_failed = sv_handshake_failed;
  M.client.on_build = cl_build;
  M.client.conn_config.on_made = cl_made;
  M.client.conn_config.on_data = cl_data;
  M.client.conn_config.on_read_eof = cl_eof;
  M.client.conn_config.on_drained = cl_drained;
  M.client.conn_config.on_tls_started = cl_tls_started;
  M.client.conn_config.on_lost = any_lost;
  M.client.on_failed = cl_failed;

  int tls = M.c.kind == K_TLS;
  int port;
  M.listener = tls ? tu_listen_ssl_local(M.r, &M.server, so, &port)
                   : tu_listen_tcp_local(M.r, &M.server, &port);
  int target = port;
  if (M.c.cb == CB_FAILED && !tls)
    target = tu_free_port(); /* refused */
  weft_cert_options *copts =
      tls ? (M.c.cb == CB_FAILED || M.c.cb == CB_HS_FAILED ? bad_co : co) : NULL;

  weft_factory *cf = &M.client.base;
  if (M.c.act == A_DISPATCH_FREE) {
    ck_assert_int_eq(weft_dispatch_factory_new(NULL, 0, &M.client.base, &M.dispatch), 0);
    cf = M.dispatch;
  }
  if (M.c.act == A_RC_STOP || M.c.act == A_RC_FREE || M.c.act == A_OPS_SWAP) {
    weft_reconnect_options ro;
    weft_reconnect_options_init(&ro);
    ro.initial_delay = 0.02;
    ro.max_delay = 0.05;
    ro.max_retries = 2;
    ro.seed = 7;
    ck_assert_int_eq(tu_reconnect_start(M.r, "127.0.0.1", target, cf, copts,
                                        copts ? "localhost" : NULL, 5, NULL, &ro, &M.rc),
                     0);
  } else if (copts) {
    ck_assert_int_eq(
        tu_connect(M.r, "127.0.0.1", target, cf, copts, "localhost", 5, NULL, &M.connector), 0);
  } else {
    ck_assert_int_eq(tu_connect(M.r, "127.0.0.1", target, cf, NULL, NULL, 5, NULL, &M.connector),
                     0);
  }

  CELL_ASSERT(m_run(fired_pred, NULL, 5), "the callback under test never ran");
  int failed_at_action = M.client.failed;

  if (M.free_now) {
    weft_reactor_free(M.r);
    M.r = NULL;
  } else {
    m_run(never, NULL, 0.01); /* let the action's consequences run */
    if (M.rc)
      weft_reconnector_stop(M.rc);
    end_live(&M.client);
    end_live(&M.server);
    CELL_ASSERT(m_run(all_lost_pred, NULL, 5),
                "connections did not end: client %d/%d, server %d/%d", M.client.made, M.client.lost,
                M.server.made, M.server.lost);
    if (M.c.cb == CB_FAILED &&
        (M.c.act == A_RC_STOP || M.c.act == A_RC_FREE || M.c.act == A_CONNECTOR_CANCEL))
      CELL_ASSERT(M.client.failed == failed_at_action,
                  "connection_failed after the attempt was stopped (%d then %d)", failed_at_action,
                  M.client.failed);
    if (M.rc) {
      /* A reconnector never hands out a transport that is not live. */
      weft_transport *rt = weft_reconnector_transport(M.rc);
      int live = rt == NULL;
      for (tu_conn *c = M.client.conns; c && !live; c = c->next)
        live = c->transport == rt && c->made && !c->lost;
      CELL_ASSERT(live, "weft_reconnector_transport returned a transport that is not live");
    }
    fresh_connection();
    weft_reactor_free(M.r);
    M.r = NULL;
  }
  if (M.rc)
    weft_reconnector_free(M.rc);
  M.rc = NULL;
  if (M.dispatch)
    weft_dispatch_factory_free(M.dispatch);
  M.dispatch = NULL;

  CELL_ASSERT(M.fired, "never fired");
  CELL_ASSERT(M.nested_lost == 0, "connection_lost ran inside a weft call (%d)", M.nested_lost);
  tu_factory_check(&M.client);
  tu_factory_check(&M.server);
  /* Every protocol build_protocol returned got connection_made (and so connection_lost). */
  CELL_ASSERT(M.client.built - M.client.refused == M.client.made,
              "client built %d protocols, %d made", M.client.built - M.client.refused,
              M.client.made);
  CELL_ASSERT(M.server.built - M.server.refused == M.server.made,
              "server built %d protocols, %d made", M.server.built - M.server.refused,
              M.server.made);
  CELL_ASSERT(M.client.made == M.client.lost, "client made %d lost %d", M.client.made,
              M.client.lost);
  CELL_ASSERT(M.server.made == M.server.lost, "server made %d lost %d", M.server.made,
              M.server.lost);
  CELL_ASSERT(M.ref_released == (M.ref_rc == 0 ? 1 : 0), "write_reference rc %d, released %d",
              M.ref_rc, M.ref_released);
  if (M.c.cb == CB_RELEASE)
    CELL_ASSERT(M.hx_ref_released == 1, "harness release ran %d times", M.hx_ref_released);
  CELL_ASSERT(M.tls_started_calls <= M.starttls_ok, "tls_started %d for %d start_tls",
              M.tls_started_calls, M.starttls_ok);
  if (M.swapped)
    CELL_ASSERT(M.swap_lost == 1, "connection_lost through the swapped table: %d", M.swap_lost);
  tu_factory_cleanup(&M.client);
  tu_factory_cleanup(&M.server);
  teardown_options();
  CELL_ASSERT(weft_allocations_outstanding() == blocks, "leak: %ld blocks",
              weft_allocations_outstanding() - blocks);
  CELL_ASSERT(tu_count_fds() == fds, "descriptors: %d before, %d after", fds, tu_count_fds());
}
END_TEST

static void teardown_options(void) {
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
  weft_cert_options_unref(bad_co);
  so = co = bad_co = NULL;
}

static void pki_setup(void) {
  tu_pki_init(&pki);
}

static void pki_teardown(void) {
  tu_pki_free(&pki);
}

static void build_cells(int list) {
  ncells = 0;
  for (int k = 0; k < NKIND; k++)
    for (int b = 0; b < NCB; b++)
      for (int a = 0; a < NACT; a++) {
        cell c = {b, a, k};
        const char *why = cell_not_applicable(b, a, k);
        if (list) {
          char name[128];
          cell_name(&c, name, sizeof name);
          printf("%-48s %s\n", name, why ? why : (known_failing(&c) ? "KNOWN FAILING" : "run"));
        }
        const char *only = getenv("WEFT_MATRIX_CELL"); /* run one cell, by name */
        char name[128];
        cell_name(&c, name, sizeof name);
        if (!why && (!only || strcmp(only, name) == 0))
          cells[ncells++] = c;
      }
}

int main(void) {
  const char *list = getenv("WEFT_MATRIX_LIST");
  build_cells(list && *list == '1');
  for (size_t i = 0; i < sizeof drain_buf; i++)
    drain_buf[i] = 'd';
  memset(ref_buf, 'r', sizeof ref_buf);
  Suite *s = suite_create("matrix");
  TCase *tc = tcase_create("cells");
  tcase_add_unchecked_fixture(tc, pki_setup, pki_teardown);
  tcase_set_timeout(tc, 30);
  tcase_add_loop_test(tc, test_cell, 0, ncells);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
