/* Private: what lib/connector.c offers the rest of the library (the reconnector). */
#ifndef WEFT_CONNECTOR_INTERNAL_H
#define WEFT_CONNECTOR_INTERNAL_H

#include <weft/endpoint.h>

#include "transport-internal.h"

/* weft_connect_tcp / weft_connect_ssl, where OWNER (copied; may be NULL) becomes the owner of
 * the connection's transport once it is ready (its ready hook is called then, right before
 * build_protocol). A failed attempt does not reach OWNER: the factory's connection_failed tells
 * of it. Errors as weft_connect_ssl's (OPTIONS may be NULL: TCP). Reactor thread. */
int weft__connect(weft_reactor *reactor, const char *host, int port, weft_factory *factory,
                  weft_cert_options *options, const char *server_name, double timeout,
                  const char *bind_address, const weft__owner *owner, weft_connector **out);

/* Sets the Happy Eyeballs attempt delay of C (RFC 8305's Connection Attempt Delay: how long an
 * attempt runs alone before the next address is tried alongside it; 0.25 s unless set), before
 * the loop runs its first step. Errors: WEFT_EINVAL (NULL, SECONDS outside 0..60). */
int weft__connector_set_attempt_delay(weft_connector *c, double seconds);

/* Reorders the N (at most 16) addresses of ADDRS / LENS in place so that the families
 * alternate, starting with the family of the first one, each family keeping its order. */
void weft__interleave_addresses(struct sockaddr_storage *addrs, socklen_t *lens, int n);

/* As weft__connect, to the Unix socket PATH ("@name": Linux's abstract namespace) instead of a
 * host and port. With OPTIONS, the TLS name is SERVER_NAME, else the options' name, else
 * "localhost". Errors: WEFT_EINVAL also for a PATH too long for sun_path. */
int weft__connect_unix(weft_reactor *reactor, const char *path, weft_factory *factory,
                       weft_cert_options *options, const char *server_name, double timeout,
                       const weft__owner *owner, weft_connector **out);

#endif
