/* tests/testutil.c: see testutil.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

/* --- Time and loops ------------------------------------------------------------------- */

double tu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

weft_reactor *tu_reactor_new(void) {
  weft_reactor *reactor = NULL;
  int rc = weft_reactor_new(&reactor);
  ck_assert_msg(rc == 0, "weft_reactor_new: %s", weft_err_name(rc));
  ck_assert_ptr_nonnull(reactor);
  return reactor;
}

void tu_run_until_at(const char *file, int line, const char *what, weft_reactor *reactor,
                     int (*pred)(void *arg), void *arg, double seconds) {
  double start = tu_now();
  int rc = weft_reactor_run_until(reactor, pred, arg, seconds);
  if (rc != 0)
    ck_abort_msg("%s:%d: waiting for %s: %s (%s) after %.3f s", file, line, what, weft_err_name(rc),
                 weft_strerror(rc), tu_now() - start);
}

typedef struct int_target {
  const int *counter;
  int target;
} int_target;

static int int_reached(void *arg) {
  const int_target *t = arg;
  return *t->counter >= t->target;
}

void tu_wait_int_at(const char *file, int line, const char *what, weft_reactor *reactor,
                    const int *counter, int target, double seconds) {
  int_target t = {counter, target};
  double start = tu_now();
  int rc = weft_reactor_run_until(reactor, int_reached, &t, seconds);
  if (rc != 0)
    ck_abort_msg("%s:%d: waiting for %s >= %d: %s after %.3f s (value %d)", file, line, what,
                 target, weft_err_name(rc), tu_now() - start, *counter);
}

typedef struct size_target {
  const size_t *counter;
  size_t target;
} size_target;

static int size_reached(void *arg) {
  const size_target *t = arg;
  return *t->counter >= t->target;
}

void tu_wait_size_at(const char *file, int line, const char *what, weft_reactor *reactor,
                     const size_t *counter, size_t target, double seconds) {
  size_target t = {counter, target};
  double start = tu_now();
  int rc = weft_reactor_run_until(reactor, size_reached, &t, seconds);
  if (rc != 0)
    ck_abort_msg("%s:%d: waiting for %s >= %zu: %s after %.3f s (value %zu)", file, line, what,
                 target, weft_err_name(rc), tu_now() - start, *counter);
}

static int never(void *arg) {
  (void)arg;
  return 0;
}

void tu_settle(weft_reactor *reactor, double seconds) {
  int rc = weft_reactor_run_until(reactor, never, NULL, seconds);
  ck_assert_msg(rc == WEFT_ETIMEDOUT, "tu_settle: run_until returned %s, expected WEFT_ETIMEDOUT",
                weft_err_name(rc));
}

/* --- Reasons and protocols ------------------------------------------------------------ */

void tu_reason_copy(tu_reason *dst, const weft_reason *src) {
  memset(dst, 0, sizeof *dst);
  dst->set = 1;
  if (src == NULL) {
    dst->code = 1; /* not a weft code: makes any assertion on the code fail */
    snprintf(dst->message, sizeof dst->message, "(NULL reason)");
    return;
  }
  dst->code = src->code;
  snprintf(dst->message, sizeof dst->message, "%s", src->message ? src->message : "(NULL)");
  dst->tls_alert = src->tls_alert;
  dst->alert_sent = src->alert_sent;
  dst->verify_result = src->verify_result;
  dst->sys_errno = src->sys_errno;
}

void tu_proto_read(tu_proto *dst, weft_transport *transport) {
  size_t len = 12345;
  const uint8_t *p = weft_transport_next_protocol(transport, &len);
  memset(dst, 0, sizeof *dst);
  dst->set = 1;
  dst->present = p != NULL;
  dst->len = p ? len : 0;
  if (p && len < sizeof dst->name)
    memcpy(dst->name, p, len);
  dst->mechanism = weft_transport_negotiation_mechanism(transport);
  if (!p && len != 0)
    dst->len = len; /* the contract says 0: let a test see otherwise */
}

/* --- The recording protocol ----------------------------------------------------------- */

static void violation(tu_conn *c, tu_factory *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void violation(tu_conn *c, tu_factory *f, const char *fmt, ...) {
  char msg[TU_MSG_MAX - 32];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (c) {
    if (c->violations++ == 0)
      snprintf(c->violation, sizeof c->violation, "%s", msg);
    if (!f)
      f = c->factory;
  }
  if (f && f->violations++ == 0)
    snprintf(f->violation, sizeof f->violation, "conn %d: %s", c ? c->index : -1, msg);
}

void tu_conn_violation(tu_conn *c, const char *fmt, ...) {
  char msg[TU_MSG_MAX - 32];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  violation(c, NULL, "%s", msg);
}

/* Checks that a callback other than connection_made arrives on a live connection. */
static void check_live(tu_conn *c, weft_transport *t, const char *cb) {
  if (c->made != 1)
    violation(c, NULL, "%s with %d connection_made", cb, c->made);
  if (c->lost != 0)
    violation(c, NULL, "%s after connection_lost", cb);
  if (t != c->transport)
    violation(c, NULL, "%s with transport %p, expected %p", cb, (void *)t, (void *)c->transport);
}

static void conn_write(tu_conn *c, weft_transport *t, const void *data, size_t len) {
  int rc = weft_transport_write(t, data, len);
  if (rc != 0) {
    c->write_errors++;
    c->last_write_error = rc;
  }
}

static void rx_append(tu_conn *c, const uint8_t *data, size_t len) {
  if (c->rx_len + len + 1 > c->rx_cap) {
    size_t cap = c->rx_cap ? c->rx_cap : 256;
    while (cap < c->rx_len + len + 1)
      cap *= 2;
    uint8_t *rx = realloc(c->rx, cap);
    ck_assert_ptr_nonnull(rx);
    c->rx = rx;
    c->rx_cap = cap;
  }
  memcpy(c->rx + c->rx_len, data, len);
  c->rx_len += len;
  c->rx[c->rx_len] = 0;
}

static void on_connection_made(weft_protocol *p, weft_transport *t) {
  tu_conn *c = (tu_conn *)p;
  if (c->made != 0)
    violation(c, NULL, "connection_made called again");
  if (c->lost != 0)
    violation(c, NULL, "connection_made after connection_lost");
  if (t == NULL)
    violation(c, NULL, "connection_made with a NULL transport");
  if (t && weft_transport_protocol(t) != p)
    violation(c, NULL, "weft_transport_protocol() in connection_made is not the protocol");
  c->made++;
  if (c->factory)
    c->factory->made++;
  c->transport = t;
  if (!t)
    return;
  tu_proto_read(&c->proto_made, t);
  if (c->cfg.low_water)
    weft_transport_set_write_low_water(t, c->cfg.low_water);
  if (c->cfg.greeting)
    conn_write(c, t, c->cfg.greeting, c->cfg.greeting_len);
  if (c->cfg.on_made)
    c->cfg.on_made(c, t);
}

static void on_data_received(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  tu_conn *c = (tu_conn *)p;
  check_live(c, t, "data_received");
  if (len == 0)
    violation(c, NULL, "data_received with 0 bytes");
  if (data == NULL) {
    violation(c, NULL, "data_received with NULL data");
    return;
  }
  size_t before = c->rx_total;
  c->data_calls++;
  c->rx_total += len;
  if (c->cfg.keep_rx)
    rx_append(c, data, len);
  if (c->cfg.echo)
    conn_write(c, t, data, len);
  if (c->cfg.abort_on_data && before == 0)
    weft_transport_abort_connection(t);
  if (c->cfg.close_after && before < c->cfg.close_after && c->rx_total >= c->cfg.close_after)
    weft_transport_lose_connection(t);
  if (c->cfg.on_data)
    c->cfg.on_data(c, t, data, len);
}

static int on_read_eof(weft_protocol *p, weft_transport *t) {
  tu_conn *c = (tu_conn *)p;
  check_live(c, t, "read_eof");
  c->read_eof++;
  if (c->cfg.on_read_eof)
    return c->cfg.on_read_eof(c, t);
  return c->cfg.read_eof_result;
}

static void on_write_drained(weft_protocol *p, weft_transport *t) {
  tu_conn *c = (tu_conn *)p;
  check_live(c, t, "write_drained");
  c->drained++;
  if (c->cfg.on_drained)
    c->cfg.on_drained(c, t);
}

static void on_tls_started(weft_protocol *p, weft_transport *t, int status) {
  tu_conn *c = (tu_conn *)p;
  check_live(c, t, "tls_started");
  c->tls_started++;
  c->tls_started_status = status;
  if (c->cfg.on_tls_started)
    c->cfg.on_tls_started(c, t, status);
}

static void on_connection_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  tu_conn *c = (tu_conn *)p;
  if (c->lost != 0)
    violation(c, NULL, "connection_lost called again");
  if (c->made != 1)
    violation(c, NULL, "connection_lost with %d connection_made", c->made);
  if (t != c->transport)
    violation(c, NULL, "connection_lost with another transport");
  if (reason == NULL || reason->message == NULL)
    violation(c, NULL, "connection_lost with a NULL reason or message");
  if (reason && reason->code > 0)
    violation(c, NULL, "connection_lost with a positive code");
  c->lost++;
  if (c->factory)
    c->factory->lost++;
  tu_reason_copy(&c->lost_reason, reason);
  if (t)
    tu_proto_read(&c->proto_lost, t);
  if (c->cfg.on_lost)
    c->cfg.on_lost(c, t, reason);
  c->transport = NULL;
}

const weft_protocol_ops tu_conn_ops = {
    .connection_made = on_connection_made,
    .data_received = on_data_received,
    .read_eof = on_read_eof,
    .write_drained = on_write_drained,
    .tls_started = on_tls_started,
    .connection_lost = on_connection_lost,
};

tu_conn *tu_conn_new(const tu_conn_config *cfg) {
  tu_conn *c = calloc(1, sizeof *c);
  ck_assert_ptr_nonnull(c);
  c->base.ops = &tu_conn_ops;
  c->base.data = c;
  if (cfg)
    c->cfg = *cfg;
  return c;
}

void tu_conn_free(tu_conn *c) {
  if (!c)
    return;
  free(c->rx);
  free(c);
}

void tu_conn_write_str(tu_conn *c, const char *s) {
  ck_assert_msg(c->transport != NULL, "tu_conn_write_str on a connection that is not live");
  int rc = weft_transport_write(c->transport, s, strlen(s));
  ck_assert_msg(rc == 0, "weft_transport_write: %s", weft_err_name(rc));
}

int tu_conn_rx_equals(const tu_conn *c, const void *data, size_t len) {
  return c->rx_len == len && (len == 0 || memcmp(c->rx, data, len) == 0);
}

/* --- The recording factory ------------------------------------------------------------ */

static weft_protocol *factory_build(weft_factory *wf, weft_transport *t,
                                    const struct sockaddr *peer) {
  tu_factory *f = (tu_factory *)wf;
  f->built++;
  if (t == NULL)
    violation(NULL, f, "build_protocol with a NULL transport");
  if (peer == NULL)
    violation(NULL, f, "build_protocol with a NULL peer");
  if (t && weft_transport_protocol(t) != NULL)
    violation(NULL, f, "weft_transport_protocol() is not NULL in build_protocol");
  if (f->refuse) {
    f->refused++;
    return NULL;
  }
  tu_conn *c = tu_conn_new(&f->conn_config);
  c->factory = f;
  c->index = f->next_index++;
  if (peer) {
    socklen_t len =
        peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    memcpy(&c->peer, peer, len);
    c->peer_len = len;
  }
  if (t)
    tu_proto_read(&c->proto_build, t);
  if (f->conns_tail)
    f->conns_tail->next = c;
  else
    f->conns = c;
  f->conns_tail = c;
  f->nconns++;
  if (f->on_build)
    f->on_build(f, c, t);
  return &c->base;
}

static void factory_failed(weft_factory *wf, const weft_reason *reason) {
  tu_factory *f = (tu_factory *)wf;
  f->failed++;
  if (reason == NULL || reason->message == NULL)
    violation(NULL, f, "connection_failed with a NULL reason or message");
  else if (reason->code >= 0)
    violation(NULL, f, "connection_failed with code %d (not an error)", reason->code);
  tu_reason_copy(&f->last_failed, reason);
  if (f->on_failed)
    f->on_failed(f, reason);
}

static void factory_handshake_failed(weft_factory *wf, const struct sockaddr *peer,
                                     const weft_reason *reason) {
  tu_factory *f = (tu_factory *)wf;
  f->handshake_failed++;
  if (reason == NULL || reason->message == NULL)
    violation(NULL, f, "handshake_failed with a NULL reason or message");
  else if (reason->code >= 0)
    violation(NULL, f, "handshake_failed with code %d (not an error)", reason->code);
  if (peer == NULL)
    violation(NULL, f, "handshake_failed with a NULL peer");
  tu_reason_copy(&f->last_handshake_failed, reason);
  memset(&f->last_handshake_peer, 0, sizeof f->last_handshake_peer);
  if (peer)
    memcpy(&f->last_handshake_peer, peer,
           peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
  if (f->on_handshake_failed)
    f->on_handshake_failed(f, peer, reason);
}

void tu_factory_init(tu_factory *f) {
  memset(f, 0, sizeof *f);
  f->base.build_protocol = factory_build;
  f->base.connection_failed = factory_failed;
  f->base.handshake_failed = factory_handshake_failed;
  f->base.data = f;
  f->conn_config.keep_rx = 1;
}

void tu_factory_cleanup(tu_factory *f) {
  tu_conn *c = f->conns;
  while (c) {
    tu_conn *next = c->next;
    tu_conn_free(c);
    c = next;
  }
  f->conns = f->conns_tail = NULL;
  f->nconns = 0;
}

void tu_factory_reap(tu_factory *f) {
  tu_conn **link = &f->conns;
  tu_conn *last = NULL;
  while (*link) {
    tu_conn *c = *link;
    if (c->lost) {
      *link = c->next;
      tu_conn_free(c);
      f->nconns--;
    } else {
      last = c;
      link = &c->next;
    }
  }
  f->conns_tail = last;
}

tu_conn *tu_factory_conn(tu_factory *f, int index) {
  tu_conn *c = f->conns;
  for (int i = 0; c && i < index; i++)
    c = c->next;
  return c;
}

typedef struct conn_target {
  tu_factory *f;
  int count;
  int failed; /* connection_failed count when the wait started */
} conn_target;

static int conns_reached(void *arg) {
  const conn_target *t = arg;
  return t->f->nconns >= t->count || t->f->failed > t->failed;
}

tu_conn *tu_wait_conn_at(const char *file, int line, weft_reactor *reactor, tu_factory *f,
                         int index, double seconds) {
  conn_target t = {f, index + 1, f->failed};
  int rc = weft_reactor_run_until(reactor, conns_reached, &t, seconds);
  if (rc != 0 || f->nconns < t.count)
    ck_abort_msg("%s:%d: waiting for connection %d to be built: %s (built %d, failed %d%s%s)", file,
                 line, index, rc ? weft_err_name(rc) : "connection_failed", f->nconns, f->failed,
                 f->failed ? ": " : "", f->failed ? f->last_failed.message : "");
  return tu_factory_conn(f, index);
}

void tu_factory_check_at(const char *file, int line, tu_factory *f) {
  ck_assert_msg(f->violations == 0, "%s:%d: %d contract violation(s), first: %s", file, line,
                f->violations, f->violation);
  for (tu_conn *c = f->conns; c; c = c->next) {
    ck_assert_msg(c->violations == 0, "%s:%d: conn %d: %s", file, line, c->index, c->violation);
    ck_assert_msg(c->made <= 1 && c->lost <= c->made,
                  "%s:%d: conn %d: connection_made %d, connection_lost %d", file, line, c->index,
                  c->made, c->lost);
  }
}

/* --- Sockets -------------------------------------------------------------------------- */

/* Fills a client endpoint as tu_connect describes; returns the first setter's error. */
static int client_endpoint(const char *host, int port, weft_cert_options *options,
                           const char *server_name, double timeout, const char *bind_address,
                           weft_endpoint **out) {
  weft_endpoint *ep = NULL;
  int rc = weft_endpoint_new(WEFT_ENDPOINT_CLIENT, &ep);
  if (rc == 0)
    rc = weft_endpoint_set_host(ep, host);
  if (rc == 0)
    rc = weft_endpoint_set_port(ep, port);
  if (rc == 0)
    rc = weft_endpoint_set_tls(ep, options);
  if (rc == 0 && server_name)
    rc = weft_endpoint_set_server_name(ep, server_name);
  if (rc == 0 && (timeout != timeout || (timeout > 0 && timeout <= 1e6)))
    rc = weft_endpoint_set_timeout(ep, timeout);
  if (rc == 0 && bind_address)
    rc = weft_endpoint_set_bind_address(ep, bind_address);
  if (rc != 0) {
    weft_endpoint_free(ep);
    ep = NULL;
  }
  *out = ep;
  return rc;
}

int tu_connect(weft_reactor *reactor, const char *host, int port, weft_factory *factory,
               weft_cert_options *options, const char *server_name, double timeout,
               const char *bind_address, weft_connector **out) {
  if (out)
    *out = NULL;
  weft_endpoint *ep;
  int rc = client_endpoint(host, port, options, server_name, timeout, bind_address, &ep);
  if (rc == 0)
    rc = weft_endpoint_connect(reactor, ep, factory, out);
  weft_endpoint_free(ep);
  return rc;
}

weft_endpoint *tu_client_endpoint(const char *host, int port, weft_cert_options *options,
                                  const char *server_name, double timeout,
                                  const char *bind_address) {
  weft_endpoint *ep;
  int rc = client_endpoint(host, port, options, server_name, timeout, bind_address, &ep);
  ck_assert_msg(rc == 0, "client endpoint %s:%d: %s", host ? host : "NULL", port,
                weft_err_name(rc));
  return ep;
}

int tu_reconnect_start(weft_reactor *reactor, const char *host, int port, weft_factory *factory,
                       weft_cert_options *options, const char *server_name, double timeout,
                       const char *bind_address, const weft_reconnect_options *ro,
                       weft_reconnector **out) {
  if (out)
    *out = NULL;
  weft_endpoint *ep;
  int rc = client_endpoint(host, port, options, server_name, timeout, bind_address, &ep);
  if (rc == 0)
    rc = weft_reconnect_start(reactor, ep, factory, ro, out);
  weft_endpoint_free(ep);
  return rc;
}

int tu_listen(weft_reactor *reactor, const char *interface, int port, weft_factory *factory,
              weft_cert_options *options, int backlog, unsigned flags, weft_listener **out) {
  if (out)
    *out = NULL;
  if (flags & ~TU_LISTEN_REUSEPORT)
    return WEFT_EINVAL;
  weft_endpoint *ep = NULL;
  int rc = weft_endpoint_new(WEFT_ENDPOINT_SERVER, &ep);
  if (rc == 0)
    rc = weft_endpoint_set_host(ep, interface);
  if (rc == 0)
    rc = weft_endpoint_set_port(ep, port);
  if (rc == 0)
    rc = weft_endpoint_set_tls(ep, options);
  if (rc == 0 && backlog > 0)
    rc = weft_endpoint_set_backlog(ep, backlog);
  if (rc == 0 && (flags & TU_LISTEN_REUSEPORT))
    rc = weft_endpoint_set_reuseport(ep, 1);
  if (rc == 0)
    rc = weft_endpoint_listen(reactor, ep, factory, out);
  weft_endpoint_free(ep);
  return rc;
}

weft_listener *tu_listen_tcp_local(weft_reactor *reactor, tu_factory *f, int *port) {
  weft_listener *listener = NULL;
  int rc = weft_listen_tcp(reactor, "127.0.0.1", 0, &f->base, &listener);
  ck_assert_msg(rc == 0, "weft_listen_tcp(127.0.0.1, 0): %s", weft_err_name(rc));
  ck_assert_ptr_nonnull(listener);
  int p = weft_listener_port(listener);
  ck_assert_msg(p > 0 && p < 65536, "weft_listener_port returned %d", p);
  if (port)
    *port = p;
  return listener;
}

weft_connector *tu_connect_tcp_local(weft_reactor *reactor, tu_factory *f, int port) {
  weft_connector *connector = NULL;
  int rc = weft_connect_tcp(reactor, "127.0.0.1", port, &f->base, &connector);
  ck_assert_msg(rc == 0, "weft_connect_tcp(127.0.0.1:%d): %s", port, weft_err_name(rc));
  return connector;
}

static int parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *sin = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    *len = sizeof *sin;
    return 0;
  }
  if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    *len = sizeof *sin6;
    return 0;
  }
  return -1;
}

int tu_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
  struct sockaddr_in sin = {0};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_msg(bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0, "bind: %s", strerror(errno));
  socklen_t len = sizeof sin;
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
  close(fd);
  return ntohs(sin.sin_port);
}

int tu_raw_connect(const char *host, int port) {
  struct sockaddr_storage ss;
  socklen_t len;
  ck_assert_msg(parse_addr(host, port, &ss, &len) == 0, "tu_raw_connect: bad address %s", host);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
  int rc = connect(fd, (struct sockaddr *)&ss, len);
  ck_assert_msg(rc == 0, "connect to %s:%d: %s", host, port, strerror(errno));
  return fd;
}

void tu_raw_reset(int fd) {
  struct linger lg = {1, 0};
  ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
}

int tu_count_fds(void) {
  DIR *dir = opendir("/proc/self/fd");
  ck_assert_msg(dir != NULL, "opendir /proc/self/fd: %s", strerror(errno));
  int n = 0;
  struct dirent *de;
  while ((de = readdir(dir)) != NULL)
    if (de->d_name[0] != '.')
      n++;
  closedir(dir);
  return n - 1; /* the directory's own descriptor */
}

int tu_ipv6_available(void) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  struct sockaddr_in6 sin6 = {0};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_addr = in6addr_loopback;
  int ok = bind(fd, (struct sockaddr *)&sin6, sizeof sin6) == 0;
  close(fd);
  return ok;
}

/* --- Fake DNS server ------------------------------------------------------------------ */

#define TU_DNS_MAX_RECORDS 16

typedef struct dns_record {
  char name[256];
  int family;
  uint8_t addr[16];
} dns_record;

struct tu_fake_dns {
  evutil_socket_t fd;
  struct event *ev;
  int port;
  int queries;
  tu_dns_mode mode;
  int nrecords;
  dns_record records[TU_DNS_MAX_RECORDS];
};

void tu_fake_dns_add(tu_fake_dns *dns, const char *name, const char *ip) {
  ck_assert_int_lt(dns->nrecords, TU_DNS_MAX_RECORDS);
  dns_record *rec = &dns->records[dns->nrecords];
  ck_assert_uint_lt(strlen(name), sizeof rec->name);
  snprintf(rec->name, sizeof rec->name, "%s", name);
  if (inet_pton(AF_INET, ip, rec->addr) == 1)
    rec->family = AF_INET;
  else if (inet_pton(AF_INET6, ip, rec->addr) == 1)
    rec->family = AF_INET6;
  else
    ck_abort_msg("tu_fake_dns_add: %s is not an IP literal", ip);
  dns->nrecords++;
}

/* Answers the query Q (LEN bytes) into OUT: the header with QR and RA set, the question copied,
 * and the matching address records (RCODE 0), or NXDOMAIN (RCODE 3) for an unknown name.
 * Returns the answer's length, or 0 for a packet that is not a query. */
static size_t dns_answer(const tu_fake_dns *dns, const uint8_t *q, size_t len, uint8_t *out,
                         size_t cap) {
  if (len < 12 || (q[2] & 0x80))
    return 0; /* too short, or already a response */
  size_t qdcount = ((size_t)q[4] << 8) | q[5];
  size_t end = 12;
  char name[256] = "";
  size_t name_len = 0;
  unsigned qtype = 0;
  if (qdcount >= 1) { /* read the first question */
    int labels = 0;
    while (end < len && q[end] != 0 && labels++ < 128) {
      size_t l = q[end];
      if ((l & 0xc0) != 0 || end + 1 + l > len)
        return 0; /* no compression in queries */
      if (name_len + l + 2 > sizeof name)
        return 0;
      if (name_len)
        name[name_len++] = '.';
      memcpy(name + name_len, q + end + 1, l);
      name_len += l;
      end += 1 + l;
    }
    name[name_len] = 0;
    if (end + 5 > len)
      return 0;
    qtype = ((unsigned)q[end + 1] << 8) | q[end + 2];
    end += 1 + 4; /* root label, QTYPE, QCLASS */
  }
  if (end > cap)
    return 0;
  memcpy(out, q, end);
  out[2] = (uint8_t)(0x80 | (q[2] & 0x79)); /* QR, opcode, RD */
  out[4] = 0;
  out[5] = qdcount >= 1 ? 1 : 0;
  memset(out + 6, 0, 6); /* AN, NS, AR counts */
  int known = 0;
  unsigned answers = 0;
  size_t pos = end;
  for (int i = 0; i < dns->nrecords && qdcount >= 1; i++) {
    const dns_record *rec = &dns->records[i];
    if (strcasecmp(rec->name, name) != 0)
      continue;
    known = 1;
    int want = qtype == 1 ? AF_INET : qtype == 28 ? AF_INET6 : -1;
    if (rec->family != want)
      continue;
    size_t alen = rec->family == AF_INET ? 4 : 16;
    if (pos + 12 + alen > cap)
      break;
    uint8_t *a = out + pos;
    a[0] = 0xc0; /* name: pointer to the question */
    a[1] = 12;
    a[2] = (uint8_t)(qtype >> 8);
    a[3] = (uint8_t)qtype;
    a[4] = 0; /* class IN */
    a[5] = 1;
    a[6] = a[7] = a[8] = 0; /* TTL 60 */
    a[9] = 60;
    a[10] = 0;
    a[11] = (uint8_t)alen;
    memcpy(a + 12, rec->addr, alen);
    pos += 12 + alen;
    answers++;
  }
  out[3] = (uint8_t)(0x80 | (known ? 0 : 3)); /* RA, RCODE NOERROR or NXDOMAIN */
  out[6] = (uint8_t)(answers >> 8);
  out[7] = (uint8_t)answers;
  return pos;
}

static void dns_readable(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  tu_fake_dns *dns = arg;
  for (int i = 0; i < 64; i++) {
    uint8_t q[1500], a[1500];
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof from;
    ssize_t n = recvfrom(fd, q, sizeof q, 0, (struct sockaddr *)&from, &fromlen);
    if (n < 0)
      return; /* EAGAIN: drained */
    dns->queries++;
    if (dns->mode == TU_DNS_SILENT)
      continue;
    size_t alen = dns_answer(dns, q, (size_t)n, a, sizeof a);
    if (alen)
      (void)sendto(fd, a, alen, 0, (struct sockaddr *)&from, fromlen);
  }
}

tu_fake_dns *tu_fake_dns_start(weft_reactor *reactor, tu_dns_mode mode) {
  tu_fake_dns *dns = calloc(1, sizeof *dns);
  ck_assert_ptr_nonnull(dns);
  dns->mode = mode;
  dns->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ck_assert_msg(dns->fd >= 0, "socket: %s", strerror(errno));
  struct sockaddr_in sin = {0};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_msg(bind(dns->fd, (struct sockaddr *)&sin, sizeof sin) == 0, "bind: %s",
                strerror(errno));
  socklen_t len = sizeof sin;
  ck_assert_int_eq(getsockname(dns->fd, (struct sockaddr *)&sin, &len), 0);
  dns->port = ntohs(sin.sin_port);
  dns->ev =
      event_new(weft_reactor_event_base(reactor), dns->fd, EV_READ | EV_PERSIST, dns_readable, dns);
  ck_assert_ptr_nonnull(dns->ev);
  ck_assert_int_eq(event_add(dns->ev, NULL), 0);
  char servers[64];
  snprintf(servers, sizeof servers, "127.0.0.1:%d", dns->port);
  int rc = weft_reactor_set_nameservers(reactor, servers);
  ck_assert_msg(rc == 0, "weft_reactor_set_nameservers(%s): %s", servers, weft_err_name(rc));
  return dns;
}

int tu_fake_dns_port(const tu_fake_dns *dns) {
  return dns->port;
}

int tu_fake_dns_queries(const tu_fake_dns *dns) {
  return dns->queries;
}

void tu_fake_dns_free(tu_fake_dns *dns) {
  if (!dns)
    return;
  event_free(dns->ev);
  close(dns->fd);
  free(dns);
}

/* --- Data patterns -------------------------------------------------------------------- */

void tu_pattern_fill(uint8_t *buf, size_t len, uint64_t offset) {
  for (size_t i = 0; i < len; i++)
    buf[i] = tu_pattern_byte(offset + i);
}

size_t tu_pattern_check(const uint8_t *buf, size_t len, uint64_t offset) {
  for (size_t i = 0; i < len; i++)
    if (buf[i] != tu_pattern_byte(offset + i))
      return i;
  return len;
}

void tu_check_without_alpn(const char *test) {
  if (weft_protocol_negotiation_mechanisms() == 0) {
    weft_cert_options *o = NULL;
    static const char *const names[] = {"h2"};
    ck_assert_int_eq(weft_cert_options_new(&o), 0);
    ck_assert_int_eq(weft_cert_options_set_next_protocols(o, names, 1), WEFT_ENOTSUP);
    weft_cert_options_unref(o);
  }
  printf("%s: this build has no ALPN: only its refusal was checked\n", test);
}
