/* Connectors: resolve (asynchronously, evdns), try each address in turn with a non-blocking
 * connect, then hand the connected socket to a transport. A connector reports failure exactly
 * once, always from the loop. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "alloc-internal.h"
#include "connector-internal.h"
#include "unix-internal.h"

#define WEFT__MAX_ADDRS 16
#define WEFT__DEFAULT_CONNECT_TIMEOUT 30.0
#define WEFT__DEFAULT_ATTEMPT_DELAY 0.25 /* RFC 8305's recommended Connection Attempt Delay */

/* One connection attempt to one address (RFC 8305: several may run at once). */
typedef struct attempt {
  evutil_socket_t fd;  /* -1: not running */
  struct event *event; /* writable: this connect finished */
  int addr;            /* index in addrs */
  struct weft_connector *connector;
} attempt;

struct weft_connector {
  weft_reactor *reactor;
  weft__handle handle; /* registered (WEFT__RANK_ATTEMPT) until freed */
  weft_factory *factory;
  weft_cert_options *options; /* NULL for TCP */
  char *host;
  char *server_name;
  int port;

  struct sockaddr_storage bind_addr;
  socklen_t bind_len;

  struct sockaddr_storage addrs[WEFT__MAX_ADDRS];
  socklen_t addr_lens[WEFT__MAX_ADDRS];
  int naddrs, next_addr;

  struct evdns_getaddrinfo_request *dns_request;
  attempt attempts[WEFT__MAX_ADDRS]; /* Happy Eyeballs: the attempts running, by address */
  int running;                       /* attempts running */
  double attempt_delay;              /* seconds before the next attempt starts (RFC 8305: 250 ms) */
  struct event *delay_event;         /* starts the next attempt */
  struct event *timer;               /* the whole attempt's time-out */
  struct event *fail_event;          /* delivers connection_failed from the loop */
  struct event *step_event;          /* runs the next step (resolve, connect) from the loop */
  int resolved;                      /* addrs holds the addresses to try */
  struct weft_transport *transport;  /* TLS: the handshake under way */
  weft__owner next_owner;            /* the transport's owner once it is ready (may be all NULL) */
  int last_errno;
  int failed;
  weft__reason_buf reason;
};

/* Ends every attempt running but KEEP's (-1: all): a loser's socket is closed at once, its
 * SYN or handshake abandoned. */
static void stop_attempts(weft_connector *c, int keep) {
  for (int i = 0; i < c->naddrs; i++) {
    attempt *a = &c->attempts[i];
    if (a->fd < 0 || i == keep)
      continue;
    if (a->event)
      event_free(a->event);
    a->event = NULL;
    close(a->fd);
    a->fd = -1;
    c->running--;
  }
}

static void connector_free(weft_connector *c) {
  weft__reactor_remove_handle(c->reactor, &c->handle);
  if (c->dns_request) {
    struct evdns_getaddrinfo_request *req = c->dns_request;
    c->dns_request = NULL;
    evdns_getaddrinfo_cancel(req); /* runs on_resolved with EVUTIL_EAI_CANCEL */
  }
  stop_attempts(c, -1);
  if (c->delay_event)
    event_free(c->delay_event);
  if (c->timer)
    event_free(c->timer);
  if (c->fail_event)
    event_free(c->fail_event);
  if (c->step_event)
    event_free(c->step_event);
  if (c->options)
    weft_cert_options_unref(c->options);
  weft__free(c->host);
  weft__free(c->server_name);
  weft__free(c);
}

static void on_fail_event(evutil_socket_t fd, short what, void *arg) {
  weft_connector *c = arg;
  (void)fd;
  (void)what;
  if (c->factory->connection_failed)
    c->factory->connection_failed(c->factory, &c->reason.reason);
  connector_free(c);
}

/* Stops the attempt and schedules connection_failed. Only the first failure counts. */
static void connector_fail(weft_connector *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void connector_fail(weft_connector *c, int code, const char *fmt, ...) {
  if (c->failed)
    return;
  c->failed = 1;
  char msg[WEFT__REASON_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  weft__reason_set(&c->reason, code, "%s", msg);
  c->reason.reason.sys_errno = c->last_errno;
  stop_attempts(c, -1);
  if (c->delay_event)
    event_del(c->delay_event);
  event_del(c->timer);
  event_del(c->step_event);
  event_active(c->fail_event, EV_TIMEOUT, 1);
}

static void try_next_address(weft_connector *c);

/* The connector owns its transport until the connection is ready (TLS: until the handshake
 * ended), then hands it to NEXT_OWNER and frees itself: it is invalid from build_protocol on. */
static void on_transport_ready(void *arg, struct weft_transport *transport) {
  weft_connector *c = arg;
  weft__owner next = c->next_owner;
  c->transport = NULL;
  weft__transport_set_owner(transport, &next);
  connector_free(c);
  if (next.ready)
    next.ready(next.arg, transport);
}

/* The transport ended before it was ready: a failed, cancelled or shut down TLS handshake. */
static void on_transport_closed(void *arg, const weft_reason *reason, int made) {
  weft_connector *c = arg;
  (void)made; /* never made: on_transport_ready handed the transport on before that */
  c->transport = NULL;
  if (c->factory->connection_failed)
    c->factory->connection_failed(c->factory, reason);
  connector_free(c);
}

/* Attempt A connected first: the others end, and its socket becomes the transport (the TLS
 * handshake runs on the winner only). */
static void hand_over(weft_connector *c, attempt *a) {
  int index = a->addr;
  evutil_socket_t fd = a->fd;
  stop_attempts(c, index);
  if (a->event)
    event_free(a->event);
  a->event = NULL;
  a->fd = -1;
  c->running = 0;
  event_del(c->timer);
  if (c->delay_event)
    event_del(c->delay_event);
  const struct sockaddr *peer = (struct sockaddr *)&c->addrs[index];
  socklen_t peer_len = c->addr_lens[index];
  /* TLS: c->transport is set before the handshake starts (so weft_connector_cancel can reach
   * it) and the owner hooks report the handshake's end. TCP: the connection is ready at once,
   * and on_transport_ready frees c before weft__transport_start returns: c is not touched
   * after a success. */
  const char *name = c->server_name;
  if (!name && c->options)
    name = weft__tls_options_server_name(c->options);
  const weft__owner owner = {on_transport_ready, on_transport_closed, c};
  int rc = weft__transport_start(c->reactor, fd, peer, peer_len, c->factory, c->options,
                                 WEFT_TLS_CLIENT, name ? name : c->host, 0, &owner, &c->transport);
  if (rc != 0)
    connector_fail(c, rc, "%s", weft_strerror(rc));
}

static void fail_from_errno(weft_connector *c) {
  int code = c->last_errno ? weft__errno_to_code(c->last_errno) : WEFT_ESOCKET;
  if (c->port == 0) /* a Unix socket: HOST is its path */
    connector_fail(c, code, "%s: %s (%s)", c->host, weft_strerror(code),
                   c->last_errno ? strerror(c->last_errno) : "no usable address");
  else
    connector_fail(c, code, "%s port %d: %s (%s)", c->host, c->port, weft_strerror(code),
                   c->last_errno ? strerror(c->last_errno) : "no usable address");
}

static void on_attempt(evutil_socket_t fd, short what, void *arg) {
  attempt *a = arg;
  weft_connector *c = a->connector;
  (void)what;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    err = errno;
  if (err == 0) {
    hand_over(c, a);
    return;
  }
  /* This one failed: the next starts now, without waiting for the attempt delay. */
  c->last_errno = err;
  event_free(a->event);
  a->event = NULL;
  close(a->fd);
  a->fd = -1;
  c->running--;
  try_next_address(c);
}

static void on_attempt_delay(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  try_next_address(arg);
}

/* Starts the next attempt (Happy Eyeballs, RFC 8305 section 5): addresses whose connect fails
 * at once are skipped; the first whose connect is under way runs while the attempt delay
 * passes, then the next one starts alongside it, and so on. Fails once no address is left and
 * no attempt runs. */
static void try_next_address(weft_connector *c) {
  if (c->delay_event)
    event_del(c->delay_event);
  while (c->next_addr < c->naddrs) {
    int i = c->next_addr++;
    const struct sockaddr_storage *ss = &c->addrs[i];
    if (c->bind_len && c->bind_addr.ss_family != ss->ss_family) {
      c->last_errno = EAFNOSUPPORT;
      continue;
    }
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      c->last_errno = errno;
      continue;
    }
    if (c->bind_len && bind(fd, (struct sockaddr *)&c->bind_addr, c->bind_len) != 0) {
      c->last_errno = errno;
      close(fd);
      continue;
    }
    attempt *a = &c->attempts[i];
    a->fd = fd;
    a->addr = i;
    a->connector = c;
    c->running++;
    if (connect(fd, (const struct sockaddr *)ss, c->addr_lens[i]) == 0) {
      hand_over(c, a);
      return;
    }
    if (errno == EINPROGRESS) {
      a->event = event_new(c->reactor->base, fd, EV_WRITE, on_attempt, a);
      if (!a->event || event_add(a->event, NULL) != 0) {
        connector_fail(c, WEFT_ENOMEM, "%s", weft_strerror(WEFT_ENOMEM));
        return;
      }
      if (c->next_addr < c->naddrs) {
        double d = c->attempt_delay;
        struct timeval tv = {(time_t)d, (suseconds_t)((d - (double)(time_t)d) * 1e6)};
        if (!c->delay_event &&
            !(c->delay_event = evtimer_new(c->reactor->base, on_attempt_delay, c))) {
          connector_fail(c, WEFT_ENOMEM, "%s", weft_strerror(WEFT_ENOMEM));
          return;
        }
        evtimer_add(c->delay_event, &tv);
      }
      return;
    }
    c->last_errno = errno;
    close(fd);
    a->fd = -1;
    c->running--;
  }
  if (c->running == 0)
    fail_from_errno(c);
}

/* RFC 8305 section 4: alternate the families, starting with the family of the first address
 * (the resolver's preferred one), each family keeping its own order. */
void weft__interleave_addresses(struct sockaddr_storage *addrs, socklen_t *lens, int n) {
  struct sockaddr_storage tmp[WEFT__MAX_ADDRS];
  socklen_t tlen[WEFT__MAX_ADDRS];
  int first[WEFT__MAX_ADDRS], other[WEFT__MAX_ADDRS], nf = 0, no = 0, k = 0;
  if (n <= 1 || n > WEFT__MAX_ADDRS)
    return;
  for (int i = 0; i < n; i++) {
    if (addrs[i].ss_family == addrs[0].ss_family)
      first[nf++] = i;
    else
      other[no++] = i;
  }
  for (int i = 0, j = 0; i < nf || j < no;) {
    if (i < nf) {
      tmp[k] = addrs[first[i]];
      tlen[k++] = lens[first[i++]];
    }
    if (j < no) {
      tmp[k] = addrs[other[j]];
      tlen[k++] = lens[other[j++]];
    }
  }
  memcpy(addrs, tmp, sizeof addrs[0] * (size_t)n);
  memcpy(lens, tlen, sizeof lens[0] * (size_t)n);
}

int weft__connector_set_attempt_delay(weft_connector *c, double seconds) {
  if (!c || !(seconds >= 0 && seconds <= 60))
    return WEFT_EINVAL;
  c->attempt_delay = seconds;
  return 0;
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg) {
  weft_connector *c = arg;
  if (result == EVUTIL_EAI_CANCEL) {
    if (res)
      evutil_freeaddrinfo(res);
    return;
  }
  c->dns_request = NULL;
  if (result != 0 || !res) {
    if (res)
      evutil_freeaddrinfo(res);
    connector_fail(c, WEFT_ENOTFOUND, "%s: %s (%s)", c->host, weft_strerror(WEFT_ENOTFOUND),
                   evutil_gai_strerror(result));
    return;
  }
  for (struct evutil_addrinfo *ai = res; ai && c->naddrs < WEFT__MAX_ADDRS; ai = ai->ai_next) {
    if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
        ai->ai_addrlen > sizeof c->addrs[0])
      continue;
    memcpy(&c->addrs[c->naddrs], ai->ai_addr, ai->ai_addrlen);
    c->addr_lens[c->naddrs] = (socklen_t)ai->ai_addrlen;
    if (ai->ai_family == AF_INET)
      ((struct sockaddr_in *)&c->addrs[c->naddrs])->sin_port = htons((uint16_t)c->port);
    else
      ((struct sockaddr_in6 *)&c->addrs[c->naddrs])->sin6_port = htons((uint16_t)c->port);
    c->naddrs++;
  }
  evutil_freeaddrinfo(res);
  if (c->naddrs == 0) {
    connector_fail(c, WEFT_ENOTFOUND, "%s: no IPv4 or IPv6 address", c->host);
    return;
  }
  weft__interleave_addresses(c->addrs, c->addr_lens, c->naddrs);
  /* This may run inside evdns_getaddrinfo (an answer from /etc/hosts): go on from the loop. */
  c->resolved = 1;
  event_active(c->step_event, EV_TIMEOUT, 1);
}

static void on_step(evutil_socket_t fd, short what, void *arg) {
  weft_connector *c = arg;
  (void)fd;
  (void)what;
  if (c->resolved) {
    try_next_address(c);
    return;
  }
  struct evdns_base *dns = weft__reactor_dns(c->reactor);
  if (!dns) {
    connector_fail(c, WEFT_ENOMEM, "%s: cannot create the DNS resolver", c->host);
    return;
  }
  struct evutil_addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  /* NULL when answered at once: on_resolved has run already and only scheduled a step. */
  c->dns_request = evdns_getaddrinfo(dns, c->host, NULL, &hints, on_resolved, c);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg) {
  weft_connector *c = arg;
  (void)fd;
  (void)what;
  c->last_errno = ETIMEDOUT;
  connector_fail(c, WEFT_ETIMEDOUT, "%s port %d: connection attempt timed out", c->host, c->port);
}

/* The reactor is being freed: connection_failed (WEFT_ESHUTDOWN, or the failure already
 * scheduled), then free C. Connections close first, and a connector in its TLS handshake ends
 * with its transport (on_transport_closed), so C has no transport here. */
static void on_reactor_close(weft__handle *handle) {
  weft_connector *c = WEFT__CONTAINER_OF(handle, weft_connector, handle);
  if (!c->failed) {
    c->last_errno = 0;
    connector_fail(c, WEFT_ESHUTDOWN, "the reactor was freed");
  }
  event_del(c->fail_event);
  on_fail_event(-1, 0, c);
}

static const weft__handle_ops connector_handle_ops = {NULL, on_reactor_close};

/* PORT 0 with UNIX set: HOST is a Unix socket path ("@name": an abstract one). */
static int connect_common(weft_reactor *reactor, const char *host, int port, weft_factory *factory,
                          weft_cert_options *options, const char *server_name, double timeout,
                          const char *bind_address, const weft__owner *owner, int unix,
                          weft_connector **out) {
  if (out)
    *out = NULL;
  struct sockaddr_storage unix_ss;
  socklen_t unix_len = 0;
  if (!reactor || !host || !*host || !factory || !factory->build_protocol ||
      (!unix && (port < 1 || port > 65535)) || timeout != timeout ||
      (unix && (bind_address || weft__unix_address(host, &unix_ss, &unix_len) != 0)))
    return WEFT_EINVAL;
  if (reactor->freeing)
    return WEFT_ESHUTDOWN;
  struct sockaddr_storage bind_ss;
  socklen_t bind_len = 0;
  if (bind_address && weft__parse_ip(bind_address, 0, &bind_ss, &bind_len) != 0)
    return WEFT_EINVAL;
  if (options) {
    int rc = weft_cert_options_prepare(options, WEFT_TLS_CLIENT);
    if (rc != 0)
      return rc;
  }
  if (timeout <= 0 || timeout > 1e6)
    timeout = WEFT__DEFAULT_CONNECT_TIMEOUT;

  weft_connector *c = weft__calloc(1, sizeof *c);
  if (!c)
    return WEFT_ENOMEM;
  c->reactor = reactor;
  c->factory = factory;
  c->port = port;
  c->attempt_delay = WEFT__DEFAULT_ATTEMPT_DELAY;
  for (int i = 0; i < WEFT__MAX_ADDRS; i++)
    c->attempts[i].fd = -1;
  if (owner)
    c->next_owner = *owner;
  if (weft__reactor_add_handle(reactor, &c->handle, &connector_handle_ops, WEFT__RANK_ATTEMPT)) {
    weft__free(c); /* the reactor is being freed */
    return WEFT_ESHUTDOWN;
  }
  if (options)
    c->options = weft_cert_options_ref(options);
  if (bind_len) {
    c->bind_addr = bind_ss;
    c->bind_len = bind_len;
  }
  c->host = weft__strdup(host);
  /* TLS over a Unix socket checks the name "localhost" unless told otherwise: a path is no
   * name a certificate carries. */
  if (unix && options && !server_name && !weft__tls_options_server_name(options))
    server_name = "localhost";
  c->server_name = server_name ? weft__strdup(server_name) : NULL;
  c->timer = evtimer_new(reactor->base, on_timeout, c);
  c->fail_event = event_new(reactor->base, -1, 0, on_fail_event, c);
  c->step_event = event_new(reactor->base, -1, 0, on_step, c);
  if (!c->host || (server_name && !c->server_name) || !c->timer || !c->fail_event ||
      !c->step_event) {
    connector_free(c);
    return WEFT_ENOMEM;
  }
  struct timeval tv = {(time_t)timeout, (suseconds_t)((timeout - (time_t)timeout) * 1e6)};
  evtimer_add(c->timer, &tv);

  struct sockaddr_storage ss;
  socklen_t len;
  if (unix) {
    c->addrs[0] = unix_ss;
    c->addr_lens[0] = unix_len;
    c->naddrs = 1;
    c->resolved = 1;
  } else if (weft__parse_ip(host, port, &ss, &len) == 0) {
    c->addrs[0] = ss;
    c->addr_lens[0] = len;
    c->naddrs = 1;
    c->resolved = 1;
  }
  /* Every step runs from the loop, so nothing is called back from inside this function. */
  event_active(c->step_event, EV_TIMEOUT, 1);
  if (out)
    *out = c;
  return 0;
}

int weft_connect_tcp(weft_reactor *reactor, const char *host, int port, weft_factory *factory,
                     weft_connector **out) {
  return connect_common(reactor, host, port, factory, NULL, NULL, 0, NULL, NULL, 0, out);
}

int weft_connect_ssl(weft_reactor *reactor, const char *host, int port, weft_factory *factory,
                     weft_cert_options *options, weft_connector **out) {
  if (!options) {
    if (out)
      *out = NULL;
    return WEFT_EINVAL;
  }
  return connect_common(reactor, host, port, factory, options, NULL, 0, NULL, NULL, 0, out);
}

int weft__connect(weft_reactor *reactor, const char *host, int port, weft_factory *factory,
                  weft_cert_options *options, const char *server_name, double timeout,
                  const char *bind_address, const weft__owner *owner, weft_connector **out) {
  return connect_common(reactor, host, port, factory, options, server_name, timeout, bind_address,
                        owner, 0, out);
}

int weft__connect_unix(weft_reactor *reactor, const char *path, weft_factory *factory,
                       weft_cert_options *options, const char *server_name, double timeout,
                       const weft__owner *owner, weft_connector **out) {
  return connect_common(reactor, path, 0, factory, options, server_name, timeout, NULL, owner, 1,
                        out);
}

int weft_connector_cancel(weft_connector *connector) {
  if (!connector)
    return WEFT_EINVAL;
  if (connector->transport) {
    weft__transport_cancel_handshake(connector->transport);
    return 0;
  }
  connector_fail(connector, WEFT_ECANCELED, "connection attempt canceled");
  return 0;
}
