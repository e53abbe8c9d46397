/* Private: the one implementation of listening (lib/listener.c), used by the short forms
 * weft_listen_tcp / weft_listen_ssl and by weft_endpoint_listen. */
#ifndef WEFT_LISTENER_INTERNAL_H
#define WEFT_LISTENER_INTERNAL_H

#include <weft/endpoint.h>

/* FLAGS of weft__listen. */
#define WEFT__LISTEN_REUSEPORT 1u /* SO_REUSEPORT before bind (weft_endpoint_set_reuseport) */

/* Listens on INTERFACE:PORT with FACTORY; TLS when OPTIONS is not NULL; BACKLOG <= 0 means 511.
 * Errors and ownership as weft_listen_tcp / weft_listen_ssl, plus WEFT_EINVAL for an unknown
 * bit in FLAGS and WEFT_ENOTSUP when WEFT__LISTEN_REUSEPORT cannot be had. */
int weft__listen(weft_reactor *reactor, const char *interface, int port, weft_factory *factory,
                 weft_cert_options *options, int backlog, unsigned flags, weft_listener **out);

#endif
