/* Listeners: a listening socket under an evconnlistener; each accepted socket becomes a
 * transport (TCP ready at once, TLS after its handshake). */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/listener.h>

#include "transport-internal.h"

struct weft_listener {
  weft_reactor *reactor;
  TAILQ_ENTRY(weft_listener) link;
  struct evconnlistener *evl;
  weft_factory *factory;
  weft_cert_options *options; /* NULL for TCP */
  struct sockaddr_storage addr;
  socklen_t addr_len;
  struct event *backoff; /* re-enables accepting after EMFILE/ENFILE */
};

static void on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *peer,
                      int peer_len, void *arg) {
  weft_listener *l = arg;
  (void)evl;
  weft__transport_start(l->reactor, fd, peer, (socklen_t)peer_len, l->factory, l->options,
                        WEFT_TLS_SERVER, NULL, NULL);
}

static void on_backoff_done(evutil_socket_t fd, short what, void *arg) {
  weft_listener *l = arg;
  (void)fd;
  (void)what;
  evconnlistener_enable(l->evl);
}

/* accept() failed. Out of descriptors (or memory) is the one case that would otherwise spin:
 * the pending connection stays in the queue and the socket stays readable. Pause, then retry. */
static void on_accept_error(struct evconnlistener *evl, void *arg) {
  weft_listener *l = arg;
  int err = EVUTIL_SOCKET_ERROR();
  if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
    evconnlistener_disable(evl);
    struct timeval tv = {0, 100000};
    evtimer_add(l->backoff, &tv);
  }
}

static void listener_free(weft_listener *l) {
  TAILQ_REMOVE(&l->reactor->listeners, l, link);
  if (l->evl)
    evconnlistener_free(l->evl);
  if (l->backoff)
    event_free(l->backoff);
  if (l->options)
    weft_cert_options_unref(l->options);
  free(l);
}

static int open_socket(const struct sockaddr_storage *ss, socklen_t len, int backlog, int *out) {
  int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return weft__errno_to_code(errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss->ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, backlog) != 0) {
    int err = errno;
    close(fd);
    return weft__errno_to_code(err);
  }
  *out = fd;
  return 0;
}

static int listen_common(weft_reactor *reactor, const char *interface, int port,
                         weft_factory *factory, weft_cert_options *options, int backlog,
                         weft_listener **out) {
  if (out)
    *out = NULL;
  if (!reactor || !factory || !factory->build_protocol || port < 0 || port > 65535)
    return WEFT_EINVAL;
  if (reactor->freeing)
    return WEFT_ESHUTDOWN;
  struct sockaddr_storage ss;
  socklen_t len;
  if (weft__parse_ip(interface ? interface : "0.0.0.0", port, &ss, &len) != 0)
    return WEFT_EINVAL;
  if (options) {
    int rc = weft_cert_options_prepare(options, WEFT_TLS_SERVER);
    if (rc != 0)
      return rc;
  }
  weft_listener *l = calloc(1, sizeof *l);
  if (!l)
    return WEFT_ENOMEM;
  l->reactor = reactor;
  l->factory = factory;
  TAILQ_INSERT_TAIL(&reactor->listeners, l, link);
  if (options)
    l->options = weft_cert_options_ref(options);
  int fd = -1;
  int rc = open_socket(&ss, len, backlog > 0 ? backlog : 511, &fd);
  if (rc != 0) {
    listener_free(l);
    return rc;
  }
  l->evl = evconnlistener_new(reactor->base, on_accept, l,
                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
  l->backoff = evtimer_new(reactor->base, on_backoff_done, l);
  if (!l->evl || !l->backoff) {
    if (!l->evl)
      close(fd);
    listener_free(l);
    return WEFT_ENOMEM;
  }
  evconnlistener_set_error_cb(l->evl, on_accept_error);
  l->addr_len = sizeof l->addr;
  getsockname(fd, (struct sockaddr *)&l->addr, &l->addr_len);
  if (out)
    *out = l;
  return 0;
}

int weft_listen_tcp(weft_reactor *reactor, const char *interface, int port,
                    weft_factory *factory, int backlog, weft_listener **out) {
  return listen_common(reactor, interface, port, factory, NULL, backlog, out);
}

int weft_listen_ssl(weft_reactor *reactor, const char *interface, int port,
                    weft_factory *factory, weft_cert_options *options, int backlog,
                    weft_listener **out) {
  if (!options) {
    if (out)
      *out = NULL;
    return WEFT_EINVAL;
  }
  return listen_common(reactor, interface, port, factory, options, backlog, out);
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

void weft_listener_stop(weft_listener *listener) {
  if (listener)
    listener_free(listener);
}

void weft__listener_shutdown_all(weft_reactor *reactor) {
  weft_listener *l;
  while ((l = TAILQ_FIRST(&reactor->listeners)) != NULL)
    listener_free(l);
}
