/* Endpoints: an opaque, extensible description of where to listen or connect and how. Each
 * setting is a setter (a new setting is a new function, never a new struct member the caller
 * allocates); weft_endpoint_listen / weft_endpoint_connect hand the settings to the listen and
 * connect functions. The string form is parsed in endpoint_parse.c. */
#include "config.h"

#include <arpa/inet.h>
#include <math.h>
#include <string.h>

#include <weft/endpoint.h>
#include <weft/error.h>
#include <weft/tls.h>

#include "alloc-internal.h"
#include "endpoint-internal.h"
#include "connector-internal.h"
#include "listener-internal.h"
#include "proxy-internal.h"
#include "unix-internal.h"
#include "transport-internal.h"

#define WEFT__HOST_MAX 255
#define WEFT__SECONDS_MAX 1e6

int weft__endpoint_is_ip(const char *s) {
  unsigned char buf[sizeof(struct in6_addr)];
  return s && (inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1);
}

/* Replaces *SLOT by a copy of S (NULL clears it). */
static int set_string(char **slot, const char *s) {
  char *copy = NULL;
  if (s && !(copy = weft__strdup(s)))
    return WEFT_ENOMEM;
  weft__free(*slot);
  *slot = copy;
  return 0;
}

static int seconds_ok(double seconds) {
  return isfinite(seconds) && seconds >= 0 && seconds <= WEFT__SECONDS_MAX;
}

static int is_server(const weft_endpoint *ep) {
  return ep && ep->role == WEFT_ENDPOINT_SERVER;
}

static int is_client(const weft_endpoint *ep) {
  return ep && ep->role == WEFT_ENDPOINT_CLIENT;
}

int weft_endpoint_new(weft_endpoint_role role, weft_endpoint **out) {
  if (out)
    *out = NULL;
  if (!out || (role != WEFT_ENDPOINT_SERVER && role != WEFT_ENDPOINT_CLIENT))
    return WEFT_EINVAL;
  weft_endpoint *ep = weft__calloc(1, sizeof *ep);
  if (!ep)
    return WEFT_ENOMEM;
  ep->role = role;
  ep->port = -1;
  ep->unix_mode = -1;
  ep->fd = -1;
  ep->attempt_delay = -1;
  *out = ep;
  return 0;
}

void weft_endpoint_free(weft_endpoint *ep) {
  if (!ep)
    return;
  weft_cert_options_unref(ep->tls);
  weft__free(ep->host);
  weft__free(ep->server_name);
  weft__free(ep->bind_address);
  weft__free(ep->proxy_sources);
  weft__free(ep->unix_path);
  weft__free(ep->systemd_name);
  weft__free(ep);
}

int weft_endpoint_set_host(weft_endpoint *ep, const char *host) {
  if (!ep)
    return WEFT_EINVAL;
  if (ep->role == WEFT_ENDPOINT_SERVER && host && !weft__endpoint_is_ip(host))
    return WEFT_EINVAL;
  if (ep->role == WEFT_ENDPOINT_CLIENT && (!host || !*host || strlen(host) > WEFT__HOST_MAX))
    return WEFT_EINVAL;
  return set_string(&ep->host, host);
}

int weft_endpoint_set_port(weft_endpoint *ep, int port) {
  if (!ep || port < (ep->role == WEFT_ENDPOINT_SERVER ? 0 : 1) || port > 65535)
    return WEFT_EINVAL;
  ep->port = port;
  return 0;
}

int weft_endpoint_set_tls(weft_endpoint *ep, weft_cert_options *options) {
  if (!ep)
    return WEFT_EINVAL;
  weft_cert_options_ref(options); /* first, in case OPTIONS is the one held already */
  weft_cert_options_unref(ep->tls);
  ep->tls = options;
  return 0;
}

int weft_endpoint_set_server_name(weft_endpoint *ep, const char *name) {
  if (!is_client(ep) || (name && strlen(name) > WEFT__HOST_MAX))
    return WEFT_EINVAL;
  return set_string(&ep->server_name, name);
}

int weft_endpoint_set_backlog(weft_endpoint *ep, int backlog) {
  if (!is_server(ep) || backlog < 0 || backlog > 65535)
    return WEFT_EINVAL;
  ep->backlog = backlog;
  return 0;
}

int weft_endpoint_set_timeout(weft_endpoint *ep, double seconds) {
  if (!is_client(ep) || !seconds_ok(seconds))
    return WEFT_EINVAL;
  ep->timeout = seconds;
  return 0;
}

int weft_endpoint_set_attempt_delay(weft_endpoint *ep, double seconds) {
  if (!is_client(ep) || !(seconds >= 0 && seconds <= 60))
    return WEFT_EINVAL;
  ep->attempt_delay = seconds;
  return 0;
}

int weft_endpoint_set_bind_address(weft_endpoint *ep, const char *address) {
  if (!is_client(ep) || (address && !weft__endpoint_is_ip(address)))
    return WEFT_EINVAL;
  return set_string(&ep->bind_address, address);
}

int weft_endpoint_set_reuseport(weft_endpoint *ep, int on) {
  if (!is_server(ep))
    return WEFT_EINVAL;
  ep->reuseport = on != 0;
  return 0;
}

int weft_endpoint_set_dual_stack(weft_endpoint *ep, int on) {
  if (!is_server(ep))
    return WEFT_EINVAL;
  ep->dual_stack = on != 0;
  return 0;
}

int weft_endpoint_set_connection_limit(weft_endpoint *ep, unsigned max) {
  if (!is_server(ep))
    return WEFT_EINVAL;
  ep->connection_limit = max;
  return 0;
}

int weft_endpoint_set_write_timeout(weft_endpoint *ep, double seconds) {
  if (!is_server(ep) || !seconds_ok(seconds))
    return WEFT_EINVAL;
  ep->write_timeout = seconds;
  return 0;
}

int weft_endpoint_set_proxy_protocol(weft_endpoint *ep, unsigned versions, const char *sources,
                                     double timeout) {
  if (!is_server(ep) || (versions & ~(WEFT_PROXY_V1 | WEFT_PROXY_V2)) || !seconds_ok(timeout))
    return WEFT_EINVAL;
  weft__proxy_net *nets;
  size_t n;
  int rc = weft__proxy_parse_sources(sources, &nets, &n); /* checked now, not at listen */
  if (rc != 0)
    return rc;
  weft__free(nets);
  if ((rc = set_string(&ep->proxy_sources, sources && *sources ? sources : NULL)) != 0)
    return rc;
  ep->proxy_versions = versions;
  ep->proxy_timeout = timeout;
  return 0;
}

int weft_endpoint_set_unix_path(weft_endpoint *ep, const char *path) {
  struct sockaddr_storage ss;
  socklen_t len;
  if (!ep || (path && weft__unix_address(path, &ss, &len) != 0))
    return WEFT_EINVAL;
  return set_string(&ep->unix_path, path);
}

int weft_endpoint_set_unix_mode(weft_endpoint *ep, int mode) {
  if (!is_server(ep) || mode < -1 || mode > 07777)
    return WEFT_EINVAL;
  ep->unix_mode = mode;
  return 0;
}

int weft_endpoint_set_systemd(weft_endpoint *ep, int family, int index, const char *name) {
  if (!is_server(ep) || index < 0 || index > 4095 || (name && (!*name || strchr(name, ':'))) ||
      (family != AF_UNSPEC && family != AF_INET && family != AF_INET6 && family != AF_UNIX))
    return WEFT_EINVAL;
  int rc = set_string(&ep->systemd_name, name);
  if (rc != 0)
    return rc;
  ep->systemd = 1;
  ep->systemd_family = family;
  ep->systemd_index = index;
  return 0;
}

int weft_endpoint_set_fd(weft_endpoint *ep, int fd) {
  if (!is_server(ep) || fd < -1)
    return WEFT_EINVAL;
  ep->fd = fd;
  return 0;
}

int weft_endpoint_set_per_address_limit(weft_endpoint *ep, unsigned max) {
  if (!is_server(ep))
    return WEFT_EINVAL;
  ep->per_address_limit = max;
  return 0;
}

weft_endpoint_role weft_endpoint_get_role(const weft_endpoint *ep) {
  return ep ? ep->role : WEFT_ENDPOINT_SERVER;
}

const char *weft_endpoint_get_host(const weft_endpoint *ep) {
  return ep ? ep->host : NULL;
}

int weft_endpoint_get_port(const weft_endpoint *ep) {
  return ep ? ep->port : -1;
}

weft_cert_options *weft_endpoint_get_tls(const weft_endpoint *ep) {
  return ep ? ep->tls : NULL;
}

int weft_endpoint_listen(weft_reactor *reactor, const weft_endpoint *ep, weft_factory *factory,
                         weft_listener **out) {
  if (out)
    *out = NULL;
  if (!reactor || !is_server(ep) || !factory ||
      (ep->port < 0 && !ep->unix_path && !ep->systemd && ep->fd < 0))
    return WEFT_EINVAL;
  unsigned flags =
      (ep->reuseport ? WEFT__LISTEN_REUSEPORT : 0) | (ep->dual_stack ? WEFT__LISTEN_DUALSTACK : 0);
  weft_listener *l;
  int rc, fd = ep->fd;
  if (ep->systemd &&
      (rc = weft__systemd_fd(ep->systemd_family, ep->systemd_index, ep->systemd_name, &fd)) != 0)
    return rc;
  if (fd >= 0) /* a duplicate: the descriptor stays the caller's (or systemd's) */
    rc = weft__listen_adopted(reactor, fd, factory, ep->tls, &l);
  else if (ep->unix_path)
    rc =
        weft__listen_unix(reactor, ep->unix_path, ep->unix_mode, factory, ep->tls, ep->backlog, &l);
  else
    rc = weft__listen(reactor, ep->host, ep->port, factory, ep->tls, ep->backlog, flags, &l);
  if (rc != 0)
    return rc;
  /* Nothing can be accepted before these apply: the loop does not run in between. */
  if (ep->connection_limit)
    weft_listener_set_connection_limit(l, ep->connection_limit);
  if (ep->write_timeout > 0)
    weft_listener_set_write_timeout(l, ep->write_timeout);
  if (ep->per_address_limit)
    weft_listener_set_per_address_limit(l, ep->per_address_limit);
  if (ep->proxy_versions &&
      (rc = weft_listener_set_proxy_protocol(l, ep->proxy_versions, ep->proxy_sources,
                                             ep->proxy_timeout)) != 0) {
    weft_listener_stop(l); /* ENOMEM: nothing was accepted */
    return rc;
  }
  if (out)
    *out = l;
  return 0;
}

int weft_endpoint_connect(weft_reactor *reactor, const weft_endpoint *ep, weft_factory *factory,
                          weft_connector **out) {
  if (out)
    *out = NULL;
  if (!reactor || !is_client(ep) || !factory)
    return WEFT_EINVAL;
  if (ep->unix_path)
    return weft__connect_unix(reactor, ep->unix_path, factory, ep->tls,
                              ep->tls ? ep->server_name : NULL, ep->timeout, NULL, out);
  if (!ep->host || ep->port < 1)
    return WEFT_EINVAL;
  /* The server name matters only with TLS (weft_endpoint_set_server_name). */
  weft_connector *c;
  int rc = weft__connect(reactor, ep->host, ep->port, factory, ep->tls,
                         ep->tls ? ep->server_name : NULL, ep->timeout, ep->bind_address, NULL, &c);
  if (rc == 0 && ep->attempt_delay >= 0) /* before the loop runs the connector's first step */
    weft__connector_set_attempt_delay(c, ep->attempt_delay);
  if (out)
    *out = rc == 0 ? c : NULL;
  return rc;
}
