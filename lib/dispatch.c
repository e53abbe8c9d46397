/* A factory that routes each connection to another factory by its negotiated protocol. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <weft/protocol.h>
#include <weft/transport.h>

#include "alloc-internal.h"

typedef struct dispatch_route {
  char *protocol;
  size_t len;
  weft_factory *factory;
} dispatch_route;

typedef struct dispatch_factory {
  weft_factory base; /* first: a weft_factory * made here is a dispatch_factory * */
  dispatch_route *routes;
  size_t count;
  weft_factory *fallback;
} dispatch_factory;

static weft_factory *route_for(dispatch_factory *d, weft_transport *transport) {
  size_t len = 0;
  const uint8_t *proto = weft_transport_next_protocol(transport, &len);
  if (proto) {
    for (size_t i = 0; i < d->count; i++)
      if (d->routes[i].len == len && memcmp(d->routes[i].protocol, proto, len) == 0)
        return d->routes[i].factory;
  }
  return d->fallback;
}

static weft_protocol *dispatch_build(weft_factory *factory, weft_transport *transport,
                                     const struct sockaddr *peer) {
  weft_factory *target = route_for((dispatch_factory *)factory, transport);
  return target ? target->build_protocol(target, transport, peer) : NULL;
}

static void dispatch_failed(weft_factory *factory, const weft_reason *reason) {
  weft_factory *fallback = ((dispatch_factory *)factory)->fallback;
  if (fallback && fallback->connection_failed)
    fallback->connection_failed(fallback, reason);
}

static void dispatch_handshake_failed(weft_factory *factory, const struct sockaddr *peer,
                                      const weft_reason *reason) {
  weft_factory *fallback = ((dispatch_factory *)factory)->fallback;
  if (fallback && fallback->handshake_failed)
    fallback->handshake_failed(fallback, peer, reason);
}

void weft_dispatch_factory_free(weft_factory *factory) {
  dispatch_factory *d = (dispatch_factory *)factory;
  if (!d)
    return;
  for (size_t i = 0; i < d->count; i++)
    weft__free(d->routes[i].protocol);
  weft__free(d->routes);
  weft__free(d);
}

int weft_dispatch_factory_new(const weft_dispatch_entry *entries, size_t count,
                              weft_factory *fallback, weft_factory **out) {
  if (!out)
    return WEFT_EINVAL;
  *out = NULL;
  if ((count > 0 && !entries) || (fallback && !fallback->build_protocol))
    return WEFT_EINVAL;
  for (size_t i = 0; i < count; i++)
    if (!entries[i].protocol || !*entries[i].protocol || !entries[i].factory ||
        !entries[i].factory->build_protocol)
      return WEFT_EINVAL;
  dispatch_factory *d = weft__calloc(1, sizeof *d);
  if (!d || (count > 0 && !(d->routes = weft__calloc(count, sizeof *d->routes)))) {
    weft__free(d);
    return WEFT_ENOMEM;
  }
  for (size_t i = 0; i < count; i++) {
    d->routes[i].protocol = weft__strdup(entries[i].protocol);
    if (!d->routes[i].protocol) {
      d->count = i;
      weft_dispatch_factory_free(&d->base);
      return WEFT_ENOMEM;
    }
    d->routes[i].len = strlen(entries[i].protocol);
    d->routes[i].factory = entries[i].factory;
  }
  d->count = count;
  d->fallback = fallback;
  d->base.build_protocol = dispatch_build;
  d->base.connection_failed = dispatch_failed;
  d->base.handshake_failed = dispatch_handshake_failed;
  *out = &d->base;
  return 0;
}
