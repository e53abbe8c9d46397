/* Listeners: a listening socket under an evconnlistener; each accepted socket becomes a
 * transport (TCP ready at once, TLS after its handshake). With WEFT__LISTEN_REUSEPORT the socket
 * sets SO_REUSEPORT, so that listeners of several reactors (one per thread) share one port and
 * the kernel spreads new connections among them. */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/listener.h>

#include "alloc-internal.h"
#include "listener-internal.h"
#include "proxy-internal.h"
#include "transport-internal.h"
#include "log-internal.h"
#include <weft/timeout.h>

struct weft_listener {
  weft_reactor *reactor;
  weft__handle handle; /* registered (WEFT__RANK_SOURCE) until stopped */
  struct evconnlistener *evl;
  weft_factory *factory;
  weft_cert_options *options; /* NULL for TCP */
  struct sockaddr_storage addr;
  socklen_t addr_len;
  struct event *backoff;    /* re-enables accepting after EMFILE/ENFILE */
  unsigned max_connections; /* 0: no limit */
  unsigned connections;     /* accepted and not yet freed, handshakes included */
  double write_timeout;     /* default for the connections it accepts; 0: off */
  double idle_timeout;      /* default idle time-out of its connections; 0: off */
  int accepting;            /* the evconnlistener is enabled */
  int in_backoff;           /* paused after EMFILE/ENFILE until the backoff timer fires */
  int stopped;              /* weft_listener_stop or the reactor's shutdown ran: the memory
                               stays until the last connection it counts has ended */
  /* PROXY protocol (weft_listener_set_proxy_protocol): the versions required (0: none), the
   * trusted source prefixes (none: every source) and the time the header may take. */
  unsigned proxy_versions;
  weft__proxy_net *proxy_nets;
  size_t proxy_nnets;
  double proxy_timeout;
  /* Admission (weft_listener_set_peer_filter, weft_listener_set_per_address_limit): the
   * user's filter, and the connections counted per peer address (a chained hash table of
   * ADDR_BUCKETS lists, allocated on first use; an entry lives while its count is not 0). */
  weft_peer_filter filter;
  void *filter_arg;
  /* A Unix socket's file, removed when the listener stops if it is still the one bound. */
  char *unlink_path;
  dev_t unlink_dev;
  ino_t unlink_ino;
  unsigned per_address_limit; /* 0: none */
  struct addr_count **addr_table;
};

#define ADDR_BUCKETS 256

/* The connections of one peer address (IPv4-mapped IPv6 counted as IPv4; ports ignored). */
typedef struct addr_count {
  struct addr_count *next;
  uint8_t key[17]; /* family byte, then 16 address bytes */
  unsigned count;
} addr_count;

static void listener_release(weft_listener *l) {
  weft__free(l->addr_table); /* empty: entries go with their last connection */
  weft__free(l);
}

/* Accepting goes on unless the connection limit is reached or a back-off is running. Both
 * pauses leave new connections in the kernel's backlog. */
static void update_accepting(weft_listener *l) {
  int want = !l->in_backoff && (l->max_connections == 0 || l->connections < l->max_connections);
  if (want == l->accepting)
    return;
  l->accepting = want;
  if (want)
    evconnlistener_enable(l->evl);
  else
    evconnlistener_disable(l->evl);
}

static void connection_opened(weft_listener *l) {
  l->connections++;
  if (!l->stopped && l->max_connections && l->connections >= l->max_connections)
    update_accepting(l); /* libevent's accept loop stops once its callback disabled it */
}

/* One of L's connections ended (or could not be set up). A stopped listener lives only for
 * its connections' sake: the last one frees it. */
static void connection_closed(weft_listener *l) {
  l->connections--;
  if (l->stopped) {
    if (l->connections == 0)
      listener_release(l);
    return;
  }
  if (!l->accepting)
    update_accepting(l);
}

/* The owner hook of the transports L accepted: they count in L's connections from their
 * creation until they are freed. */
static void on_connection_closed(void *arg, const weft_reason *reason, int made) {
  (void)reason;
  (void)made;
  connection_closed(arg);
}

static void on_connection_ready(void *arg, struct weft_transport *transport);

/* Tells the factory that a connection from PEER ended before build_protocol. */
static void report_failure(weft_listener *l, const struct sockaddr *peer, int code, const char *fmt,
                           ...) __attribute__((format(printf, 4, 5)));
static void report_failure(weft_listener *l, const struct sockaddr *peer, int code, const char *fmt,
                           ...) {
  if (!l->factory->handshake_failed)
    return;
  weft__reason_buf reason;
  char msg[WEFT__REASON_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  weft__reason_set(&reason, code, "%s", msg);
  l->factory->handshake_failed(l->factory, peer, &reason.reason);
}

/* Hands the accepted FD (already counted in L's connections) to a new transport whose owner
 * is OWNER (L's own hooks when NULL). On failure the fd is closed, the factory told, and the
 * count given back; returns the error so that an owner's caller can free its state. */
static int start_transport(weft_listener *l, evutil_socket_t fd, const struct sockaddr *peer,
                           socklen_t peer_len, const weft__owner *owner) {
  const weft__owner own = {on_connection_ready, on_connection_closed, l};
  int rc =
      weft__transport_start(l->reactor, fd, peer, peer_len, l->factory, l->options, WEFT_TLS_SERVER,
                            NULL, l->write_timeout, owner ? owner : &own, NULL);
  if (rc != 0) {
    /* The descriptor is closed already. Nobody else hears of this connection: tell the
     * factory. */
    report_failure(l, peer, rc, "could not set up an accepted connection: %s", weft_strerror(rc));
    connection_closed(l);
  }
  return rc;
}

/* --- connections per peer address ---------------------------------------------------------- */

static void addr_key(const struct sockaddr *peer, uint8_t key[17]) {
  memset(key, 0, 17);
  key[0] = (uint8_t)peer->sa_family;
  if (peer->sa_family == AF_INET) {
    memcpy(key + 1, &((const struct sockaddr_in *)peer)->sin_addr, 4);
  } else if (peer->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)peer)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a)) {
      key[0] = AF_INET;
      memcpy(key + 1, a->s6_addr + 12, 4);
    } else {
      memcpy(key + 1, a->s6_addr, 16);
    }
  }
}

/* Counts one more connection of PEER's address in *OUT, unless the address is at L's
 * per-address limit (WEFT_EPEERREFUSED) or memory runs out (WEFT_ENOMEM). */
static int addr_acquire(weft_listener *l, const struct sockaddr *peer, addr_count **out) {
  uint8_t key[17];
  addr_key(peer, key);
  uint32_t h = 2166136261u; /* FNV-1a */
  for (int i = 0; i < 17; i++)
    h = (h ^ key[i]) * 16777619u;
  if (!l->addr_table && !(l->addr_table = weft__calloc(ADDR_BUCKETS, sizeof *l->addr_table)))
    return WEFT_ENOMEM;
  addr_count **bucket = &l->addr_table[h % ADDR_BUCKETS], *e;
  for (e = *bucket; e && memcmp(e->key, key, sizeof key) != 0; e = e->next)
    ;
  if (e && e->count >= l->per_address_limit)
    return WEFT_EPEERREFUSED;
  if (!e) {
    if (!(e = weft__calloc(1, sizeof *e)))
      return WEFT_ENOMEM;
    memcpy(e->key, key, sizeof key);
    e->next = *bucket;
    *bucket = e;
  }
  e->count++;
  *out = e;
  return 0;
}

static void addr_release(weft_listener *l, addr_count *e) {
  if (--e->count > 0)
    return;
  uint32_t h = 2166136261u;
  for (int i = 0; i < 17; i++)
    h = (h ^ e->key[i]) * 16777619u;
  addr_count **p = &l->addr_table[h % ADDR_BUCKETS];
  while (*p != e)
    p = &(*p)->next;
  *p = e->next;
  weft__free(e);
}

/* Closes the accepted FD (counted already) that L will not serve, and says why. */
static void refuse_peer(weft_listener *l, evutil_socket_t fd, const struct sockaddr *peer, int code,
                        const char *why) {
  close(fd);
  report_failure(l, peer, code, "%s", why);
  connection_closed(l);
}

/* --- accepted connections with state: PROXY header, per-address count ---------------------- */

/* One accepted connection that needs state of its own: its PROXY header is being read, or it
 * counts in a per-address count; from the hand-over to its transport until the transport is
 * freed it is that transport's owner. */
typedef struct proxy_conn {
  weft_listener *l;
  weft__handle handle; /* registered (WEFT__RANK_CONNECTION) while reading the header */
  evutil_socket_t fd;
  struct event *ev;             /* readable, or the header time-out */
  struct sockaddr_storage peer; /* the socket's peer */
  socklen_t peer_len;
  uint8_t *buf; /* WEFT__PROXY_MAX bytes: the header read so far */
  size_t have;
  int version;   /* of the header read */
  uint8_t *tlvs; /* its TLVs, until the transport takes them */
  size_t tlvs_len;
  addr_count *counted; /* the per-address entry it counts in, or NULL */
} proxy_conn;

static void proxy_conn_free(proxy_conn *pc) {
  if (pc->counted)
    addr_release(pc->l, pc->counted);
  if (pc->ev)
    event_free(pc->ev);
  weft__free(pc->buf);
  weft__free(pc->tlvs);
  weft__free(pc);
}

/* Ends PC before its header was read: the socket closes, the factory hears why. */
static void proxy_fail(proxy_conn *pc, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void proxy_fail(proxy_conn *pc, int code, const char *fmt, ...) {
  weft_listener *l = pc->l;
  char msg[WEFT__REASON_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  weft__reactor_remove_handle(l->reactor, &pc->handle);
  close(pc->fd);
  report_failure(l, (struct sockaddr *)&pc->peer, code, "%s", msg);
  proxy_conn_free(pc);
  connection_closed(l);
}

static void on_proxy_ready(void *arg, struct weft_transport *transport) {
  proxy_conn *pc = arg;
  transport->proxy_version = pc->version;
  transport->proxy_tlvs = pc->tlvs; /* the transport frees them */
  transport->proxy_tlvs_len = pc->tlvs_len;
  pc->tlvs = NULL;
  on_connection_ready(pc->l, transport);
}

static void on_proxy_closed(void *arg, const weft_reason *reason, int made) {
  proxy_conn *pc = arg;
  weft_listener *l = pc->l;
  (void)reason;
  (void)made;
  proxy_conn_free(pc);
  connection_closed(l);
}

/* Decides about PC's peer (after its PROXY header, if any), then starts its transport. */
static void admit(proxy_conn *pc, const struct sockaddr *peer, socklen_t peer_len) {
  weft_listener *l = pc->l;
  const char *why = NULL;
  int rc = 0;
  if (l->filter && l->filter(l, peer, peer_len, l->filter_arg) != 0) {
    rc = WEFT_EPEERREFUSED;
    why = "refused by the listener's peer filter";
  } else if (l->per_address_limit && (rc = addr_acquire(l, peer, &pc->counted)) != 0) {
    why = rc == WEFT_ENOMEM ? "could not set up an accepted connection: out of memory"
                            : "the per-address connection limit is reached for this address";
  }
  if (rc != 0) {
    evutil_socket_t fd = pc->fd;
    proxy_conn_free(pc);
    refuse_peer(l, fd, peer, rc, why);
    return;
  }
  const weft__owner owner = {on_proxy_ready, on_proxy_closed, pc};
  if (start_transport(l, pc->fd, peer, peer_len, &owner) != 0)
    proxy_conn_free(pc); /* start_transport gave the count back */
}

/* The header H (in PC->buf) is read whole: the connection goes on as a transport whose peer
 * is the header's source. */
static void proxy_done(proxy_conn *pc, const weft__proxy_header *h) {
  weft_listener *l = pc->l;
  if (h->tlvs_len) {
    if (!(pc->tlvs = weft__malloc(h->tlvs_len))) {
      proxy_fail(pc, WEFT_ENOMEM, "could not set up an accepted connection: %s",
                 weft_strerror(WEFT_ENOMEM));
      return;
    }
    memcpy(pc->tlvs, h->tlvs, h->tlvs_len);
    pc->tlvs_len = h->tlvs_len;
  }
  pc->version = h->version;
  struct sockaddr_storage peer = h->has_addresses ? h->src : pc->peer;
  socklen_t peer_len = h->has_addresses ? h->src_len : pc->peer_len;
  weft__reactor_remove_handle(l->reactor, &pc->handle);
  event_free(pc->ev);
  pc->ev = NULL;
  weft__free(pc->buf);
  pc->buf = NULL;
  admit(pc, (struct sockaddr *)&peer, peer_len);
}

/* Reads the header without ever reading past it: peek, let the parser say how long the header
 * is (or that all it saw belongs to it), then consume exactly that many bytes. Whatever follows
 * (a ClientHello in the same segment) stays in the socket for the transport. */
static void on_proxy_event(evutil_socket_t fd, short what, void *arg) {
  proxy_conn *pc = arg;
  weft_listener *l = pc->l;
  if (what & EV_TIMEOUT) {
    proxy_fail(pc, WEFT_ETIMEDOUT, "no complete PROXY header within %.3g s (%zu bytes read)",
               l->proxy_timeout, pc->have);
    return;
  }
  ssize_t n = recv(fd, pc->buf + pc->have, WEFT__PROXY_MAX - pc->have, MSG_PEEK);
  if (n < 0) {
    int err = errno;
    if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR)
      proxy_fail(pc, weft__errno_to_code(err), "reading the PROXY header: %s", strerror(err));
    return;
  }
  if (n == 0) {
    proxy_fail(pc, WEFT_EPROXY,
               "the peer closed the connection before a complete PROXY "
               "header (%zu bytes read)",
               pc->have);
    return;
  }
  weft__proxy_header h;
  char why[160];
  long r = weft__proxy_parse(pc->buf, pc->have + (size_t)n, l->proxy_versions, &h, why, sizeof why);
  if (r < 0) {
    proxy_fail(pc, WEFT_EPROXY, "%s", why);
    return;
  }
  size_t take = r > 0 ? (size_t)r - pc->have : (size_t)n;
  ssize_t got = recv(fd, pc->buf + pc->have, take, 0); /* the bytes just peeked */
  if (got != (ssize_t)take) {
    proxy_fail(pc, WEFT_ESOCKET, "reading the PROXY header: short read");
    return;
  }
  pc->have += take;
  if (r > 0)
    proxy_done(pc, &h);
}

/* The reactor is being freed while PC waits for its header: close quietly, as a TLS
 * handshake under way does. */
static void on_proxy_reactor_close(weft__handle *handle) {
  proxy_conn *pc = WEFT__CONTAINER_OF(handle, proxy_conn, handle);
  weft_listener *l = pc->l;
  weft__reactor_remove_handle(l->reactor, &pc->handle);
  close(pc->fd);
  proxy_conn_free(pc);
  connection_closed(l);
}

static const weft__handle_ops proxy_handle_ops = {NULL, on_proxy_reactor_close};

static int trusted_source(const weft_listener *l, const struct sockaddr *peer) {
  if (l->proxy_nnets == 0)
    return 1;
  for (size_t i = 0; i < l->proxy_nnets; i++)
    if (weft__proxy_addr_in(peer, &l->proxy_nets[i].net, l->proxy_nets[i].bits))
      return 1;
  return 0;
}

/* Starts reading the PROXY header of the accepted FD (counted already). */
static void proxy_start(weft_listener *l, evutil_socket_t fd, const struct sockaddr *peer,
                        socklen_t peer_len) {
  if (!trusted_source(l, peer)) {
    refuse_peer(l, fd, peer, WEFT_EPEERREFUSED,
                "not a trusted source of PROXY headers: connection refused");
    return;
  }
  proxy_conn *pc = weft__calloc(1, sizeof *pc);
  if (pc)
    pc->buf = weft__malloc(WEFT__PROXY_MAX);
  if (pc && pc->buf)
    pc->ev = event_new(l->reactor->base, fd, EV_READ | EV_PERSIST, on_proxy_event, pc);
  double t = l->proxy_timeout;
  struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
  if (!pc || !pc->ev || event_add(pc->ev, &tv) != 0 ||
      weft__reactor_add_handle(l->reactor, &pc->handle, &proxy_handle_ops, WEFT__RANK_CONNECTION) !=
          0) {
    if (pc)
      proxy_conn_free(pc);
    close(fd);
    report_failure(l, peer, WEFT_ENOMEM, "could not set up an accepted connection: %s",
                   weft_strerror(WEFT_ENOMEM));
    connection_closed(l);
    return;
  }
  pc->l = l;
  pc->fd = fd;
  if (peer_len > 0 && (size_t)peer_len <= sizeof pc->peer)
    memcpy(&pc->peer, peer, (size_t)peer_len);
  pc->peer_len = peer_len;
}

int weft_listener_set_proxy_protocol(weft_listener *l, unsigned versions, const char *sources,
                                     double timeout) {
  if (!l || l->stopped || (versions & ~(WEFT_PROXY_V1 | WEFT_PROXY_V2)) ||
      !(timeout >= 0 && timeout <= 1e6))
    return WEFT_EINVAL;
  weft__proxy_net *nets;
  size_t n;
  int rc = weft__proxy_parse_sources(sources, &nets, &n);
  if (rc != 0)
    return rc;
  weft__free(l->proxy_nets);
  l->proxy_nets = nets;
  l->proxy_nnets = n;
  l->proxy_versions = versions;
  l->proxy_timeout = timeout > 0 ? timeout : 10;
  return 0;
}

static void on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *peer,
                      int peer_len, void *arg) {
  weft_listener *l = arg;
  (void)evl;
  /* Counted before the transport exists, so that L outlives this call even if the protocol's
   * connection_made stops it (the memory stays while a connection counts). */
  connection_opened(l);
  if (l->proxy_versions) {
    proxy_start(l, fd, peer, (socklen_t)peer_len);
  } else if (l->per_address_limit) {
    proxy_conn *pc = weft__calloc(1, sizeof *pc);
    if (!pc) {
      refuse_peer(l, fd, peer, WEFT_ENOMEM,
                  "could not set up an accepted connection: out of "
                  "memory");
      return;
    }
    pc->l = l;
    pc->fd = fd;
    admit(pc, peer, (socklen_t)peer_len);
  } else if (l->filter && l->filter(l, peer, (socklen_t)peer_len, l->filter_arg) != 0) {
    refuse_peer(l, fd, peer, WEFT_EPEERREFUSED, "refused by the listener's peer filter");
  } else {
    start_transport(l, fd, peer, (socklen_t)peer_len, NULL);
  }
}

int weft_listener_set_peer_filter(weft_listener *l, weft_peer_filter filter, void *arg) {
  if (!l || l->stopped)
    return WEFT_EINVAL;
  l->filter = filter;
  l->filter_arg = arg;
  return 0;
}

int weft_listener_set_per_address_limit(weft_listener *l, unsigned max) {
  if (!l || l->stopped)
    return WEFT_EINVAL;
  /* Connections accepted while there was no limit were not counted: they stay uncounted. */
  l->per_address_limit = max;
  return 0;
}

static void on_backoff_done(evutil_socket_t fd, short what, void *arg) {
  weft_listener *l = arg;
  (void)fd;
  (void)what;
  l->in_backoff = 0;
  weft__log(l->reactor, WEFT_LOG_INFO, "accepting resumed after the back-off");
  update_accepting(l);
}

/* accept() failed. Out of descriptors (or memory) is the one case that would otherwise spin:
 * the pending connection stays in the queue and the socket stays readable. Pause, then retry. */
static void on_accept_error(struct evconnlistener *evl, void *arg) {
  weft_listener *l = arg;
  int err = EVUTIL_SOCKET_ERROR();
  (void)evl;
  if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
    weft__log(l->reactor, WEFT_LOG_WARNING, "accept failed (%s): accepting paused for 100 ms",
              strerror(err));
    l->in_backoff = 1;
    update_accepting(l);
    struct timeval tv = {0, 100000};
    evtimer_add(l->backoff, &tv);
  }
}

/* Stops L for good and releases everything but its memory, which stays until its last
 * connection has ended (those connections live on, and report to it: see connection_closed). */
static void listener_free(weft_listener *l) {
  weft__reactor_remove_handle(l->reactor, &l->handle);
  l->stopped = 1;
  if (l->evl)
    evconnlistener_free(l->evl);
  l->evl = NULL;
  if (l->backoff)
    event_free(l->backoff);
  l->backoff = NULL;
  if (l->options)
    weft_cert_options_unref(l->options);
  l->options = NULL;
  weft__free(l->proxy_nets);
  l->proxy_nets = NULL;
  l->proxy_nnets = 0;
  if (l->unlink_path) {
    struct stat st;
    if (stat(l->unlink_path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == l->unlink_dev &&
        st.st_ino == l->unlink_ino)
      unlink(l->unlink_path);
    weft__free(l->unlink_path);
    l->unlink_path = NULL;
  }
  if (l->connections == 0)
    listener_release(l);
}

/* The reactor is being freed. Its connections are gone already (they close first), so this
 * frees L at once. A connection_lost run before may have stopped L itself: it is no handle then. */
static void on_reactor_close(weft__handle *handle) {
  listener_free(WEFT__CONTAINER_OF(handle, weft_listener, handle));
}

static const weft__handle_ops listener_handle_ops = {NULL, on_reactor_close};

/* SO_REUSEPORT could not be set: the option does not exist in this kernel (ENOPROTOOPT, Linux
 * before 3.9) or not for this socket. */
static int reuseport_error(int err) {
  return err == ENOPROTOOPT || err == EINVAL || err == ENOTSUP || err == EOPNOTSUPP
             ? WEFT_ENOTSUP
             : weft__errno_to_code(err);
}

static int open_socket(const struct sockaddr_storage *ss, socklen_t len, int backlog,
                       unsigned flags, int *out) {
  int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return weft__errno_to_code(errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss->ss_family == AF_INET6) {
    /* One family per socket unless asked: the system default (net.ipv6.bindv6only) varies. */
    int v6only = !(flags & WEFT__LISTEN_DUALSTACK);
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) != 0 && !v6only) {
      int err = errno;
      close(fd);
      return err == ENOPROTOOPT || err == EINVAL ? WEFT_ENOTSUP : weft__errno_to_code(err);
    }
  }
#ifdef SO_REUSEPORT
  /* Before bind: the kernel lets a socket join a port's group only if every socket bound to
   * it set the option (and has the same effective uid, on Linux). */
  if ((flags & WEFT__LISTEN_REUSEPORT) &&
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int err = errno;
    close(fd);
    return reuseport_error(err);
  }
#else
  (void)flags; /* listen_common refused WEFT__LISTEN_REUSEPORT already */
#endif
  if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, backlog) != 0) {
    int err = errno;
    close(fd);
    return weft__errno_to_code(err);
  }
  *out = fd;
  return 0;
}

/* Serves the listening socket FD (owned from now on: closed on failure too) with FACTORY and
 * OPTIONS (prepared already), registered with REACTOR. */
static int listener_start(weft_reactor *reactor, evutil_socket_t fd, weft_factory *factory,
                          weft_cert_options *options, weft_listener **out) {
  weft_listener *l = weft__calloc(1, sizeof *l);
  if (!l) {
    close(fd);
    return WEFT_ENOMEM;
  }
  l->reactor = reactor;
  l->factory = factory;
  if (weft__reactor_add_handle(reactor, &l->handle, &listener_handle_ops, WEFT__RANK_SOURCE)) {
    weft__free(l); /* the reactor is being freed */
    close(fd);
    return WEFT_ESHUTDOWN;
  }
  if (options)
    l->options = weft_cert_options_ref(options);
  /* Created disabled and enabled below: evconnlistener_new ignores a failure to enable
   * (out of memory in event_add), which would leave a listener that never accepts. */
  l->evl =
      evconnlistener_new(reactor->base, on_accept, l,
                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED, 0, fd);
  l->backoff = evtimer_new(reactor->base, on_backoff_done, l);
  if (!l->evl || !l->backoff || evconnlistener_enable(l->evl) != 0) {
    if (!l->evl)
      close(fd);
    listener_free(l);
    return WEFT_ENOMEM;
  }
  evconnlistener_set_error_cb(l->evl, on_accept_error);
  l->accepting = 1;
  l->addr_len = sizeof l->addr;
  getsockname(fd, (struct sockaddr *)&l->addr, &l->addr_len);
  if (out)
    *out = l;
  return 0;
}

/* The checks every way of listening makes first. */
static int listen_check(weft_reactor *reactor, weft_factory *factory, weft_cert_options *options) {
  if (!reactor || !factory || !factory->build_protocol)
    return WEFT_EINVAL;
  if (reactor->freeing)
    return WEFT_ESHUTDOWN;
  return options ? weft_cert_options_prepare(options, WEFT_TLS_SERVER) : 0;
}

int weft__listen_fd(weft_reactor *reactor, int fd, weft_factory *factory,
                    weft_cert_options *options, weft_listener **out) {
  if (out)
    *out = NULL;
  int rc = listen_check(reactor, factory, options);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  return listener_start(reactor, fd, factory, options, out);
}

void weft__listener_unlink_on_stop(weft_listener *l, char *path, dev_t dev, ino_t ino) {
  weft__free(l->unlink_path);
  l->unlink_path = path;
  l->unlink_dev = dev;
  l->unlink_ino = ino;
}

static int listen_common(weft_reactor *reactor, const char *interface, int port,
                         weft_factory *factory, weft_cert_options *options, int backlog,
                         unsigned flags, weft_listener **out) {
  if (out)
    *out = NULL;
  if (!reactor || !factory || !factory->build_protocol || port < 0 || port > 65535 ||
      (flags & ~(unsigned)(WEFT__LISTEN_REUSEPORT | WEFT__LISTEN_DUALSTACK)) != 0)
    return WEFT_EINVAL;
#ifndef SO_REUSEPORT
  if (flags & WEFT__LISTEN_REUSEPORT)
    return WEFT_ENOTSUP;
#endif
  if (reactor->freeing)
    return WEFT_ESHUTDOWN;
  struct sockaddr_storage ss;
  socklen_t len;
  if (weft__parse_ip(interface ? interface : "0.0.0.0", port, &ss, &len) != 0)
    return WEFT_EINVAL;
  int rc = listen_check(reactor, factory, options);
  if (rc != 0)
    return rc;
  int fd = -1;
  rc = open_socket(&ss, len, backlog > 0 ? backlog : 511, flags, &fd);
  if (rc != 0)
    return rc;
  return listener_start(reactor, fd, factory, options, out);
}

int weft__listen(weft_reactor *reactor, const char *interface, int port, weft_factory *factory,
                 weft_cert_options *options, int backlog, unsigned flags, weft_listener **out) {
  return listen_common(reactor, interface, port, factory, options, backlog, flags, out);
}

int weft_listen_tcp(weft_reactor *reactor, const char *interface, int port, weft_factory *factory,
                    weft_listener **out) {
  return listen_common(reactor, interface, port, factory, NULL, 0, 0, out);
}

int weft_listen_ssl(weft_reactor *reactor, const char *interface, int port, weft_factory *factory,
                    weft_cert_options *options, weft_listener **out) {
  if (!options) {
    if (out)
      *out = NULL;
    return WEFT_EINVAL;
  }
  return listen_common(reactor, interface, port, factory, options, 0, 0, out);
}

int weft_listener_port(weft_listener *listener) {
  if (!listener)
    return -1;
  if (listener->addr.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&listener->addr)->sin_port);
  if (listener->addr.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&listener->addr)->sin6_port);
  return -1;
}

int weft_listener_address(weft_listener *listener, struct sockaddr *addr, socklen_t *len) {
  if (!listener || !addr || !len || *len < listener->addr_len)
    return WEFT_EINVAL;
  memcpy(addr, &listener->addr, listener->addr_len);
  *len = listener->addr_len;
  return 0;
}

int weft_listener_set_connection_limit(weft_listener *listener, unsigned max) {
  if (!listener)
    return WEFT_EINVAL;
  listener->max_connections = max;
  update_accepting(listener);
  return 0;
}

unsigned weft_listener_connection_count(weft_listener *listener) {
  return listener ? listener->connections : 0;
}

int weft_listener_set_write_timeout(weft_listener *listener, double seconds) {
  if (!listener || !(seconds >= 0 && seconds <= 1e6)) /* also refuses NaN */
    return WEFT_EINVAL;
  listener->write_timeout = seconds;
  return 0;
}

void weft_listener_stop(weft_listener *listener) {
  if (listener)
    listener_free(listener);
}

int weft_listener_set_options(weft_listener *listener, weft_cert_options *options) {
  if (listener == NULL || options == NULL || listener->options == NULL)
    return WEFT_EINVAL; /* a TCP listener has no TLS to reload */
  /* build (and check) everything first: a failure leaves the listener as it was */
  int rc = weft_cert_options_prepare(options, WEFT_TLS_SERVER);
  if (rc != 0)
    return rc;
  weft_cert_options *old = listener->options;
  listener->options = weft_cert_options_ref(options);
  weft_cert_options_unref(old); /* connections accepted before keep their own references */
  return 0;
}

/* --- idle time-out default ---------------------------------------------------------------- */

/* The owner's ready hook of accepted connections: right before build_protocol. */
static void on_connection_ready(void *arg, struct weft_transport *transport) {
  weft_listener *l = arg;
  if (l->idle_timeout > 0)
    (void)weft_transport_set_idle_timeout(transport, l->idle_timeout); /* ENOMEM: none */
}

int weft_listener_set_idle_timeout(weft_listener *listener, double seconds) {
  if (!listener || !(seconds >= 0 && seconds <= 1e6)) /* also refuses NaN */
    return WEFT_EINVAL;
  listener->idle_timeout = seconds;
  return 0;
}
