/* Private: the transport's state and the functions listeners and connectors use to create
 * transports and hand them over. One transport type serves TCP and TLS (h2o style): TLS is a
 * bufferevent_openssl over the same socket, set up at accept/connect time or by STARTTLS. */
#ifndef WEFT_TRANSPORT_INTERNAL_H
#define WEFT_TRANSPORT_INTERNAL_H

#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <openssl/ssl.h>

#include <weft/endpoint.h>
#include <weft/transport.h>

#include "error-internal.h"
#include "reactor-internal.h"
#include "negotiation-internal.h"
#include "tls_options-internal.h"
#include "tls_ssl-internal.h"

typedef enum weft__tstate {
  WEFT__T_HANDSHAKING = 0, /* TLS handshake before build_protocol */
  WEFT__T_OPEN,            /* protocol attached, data flows */
  WEFT__T_CLOSING,         /* lose_connection: flushing, then close_notify, then close */
  WEFT__T_CLOSED           /* socket closed; connection_lost pending or delivered */
} weft__tstate;

struct weft_transport {
  weft_reactor *reactor;
  TAILQ_ENTRY(weft_transport) link;
  struct bufferevent *bev;
  evutil_socket_t fd;
  weft__tstate state;

  weft_factory *factory;
  weft_protocol *protocol;
  struct weft_connector *connector; /* client TLS: the attempt, until the handshake ends */
  struct weft_listener *listener;   /* server side: the listener that accepted it, counted in
                                       its connection limit until transport_free; NULL once
                                       that listener is stopped */

  struct sockaddr_storage peer, host;
  socklen_t peer_len, host_len;

  size_t low_water;
  double write_timeout;       /* seconds without output progress before the cut; 0: off */
  unsigned is_client : 1;
  unsigned made : 1;          /* connection_made was called */
  unsigned write_closed : 1;  /* no more writes accepted */
  unsigned half_close_pending : 1;
  unsigned half_closed : 1;
  unsigned read_paused : 1;
  unsigned above_low_water : 1;
  unsigned shutdown_sent : 1; /* TLS close_notify sent */
  unsigned eof_seen : 1;
  unsigned starttls : 1;      /* upgrading in place */
  unsigned tls_socket : 1;    /* TLS from the start: bufferevent_openssl on the socket, read-ahead
                                 on (not a STARTTLS filter) */
  int in_callback;            /* depth of user callbacks running on this transport */

  struct event *timer;        /* handshake or close time-out */
  struct event *finish_event; /* delivers connection_lost from the loop */
  struct event *resume_event; /* delivers data buffered while paused */

  /* TLS */
  SSL *ssl;
  weft__tls_conn tls;
  char *server_name;
  const uint8_t *next_proto;
  size_t next_proto_len;
  weft_negotiation_mechanism mechanism;

  weft__reason_buf reason; /* why it closed (valid once state is CLOSED) */
};

/* Creates a transport for the connected socket FD (owned from now on, closed on failure) and
 * registers it with the reactor. For TLS (OPTIONS not NULL) the handshake starts at once in
 * ROLE; otherwise the connection is ready and the factory builds the protocol right away.
 * CONNECTOR (client side) receives connection_failed if the handshake fails. PEER may be NULL
 * (looked up with getpeername). Returns 0 or a WEFT_E* code (the fd is closed then). */
int weft__transport_start(weft_reactor *reactor, evutil_socket_t fd, const struct sockaddr *peer,
                          socklen_t peer_len, weft_factory *factory, weft_cert_options *options,
                          weft_tls_role role, const char *server_name,
                          struct weft_connector *connector);

/* As weft__transport_start for a server connection that LISTENER (of REACTOR) accepted: the
 * transport counts in LISTENER's connections (weft__listener_connection_opened / _closed) from
 * its creation until it is freed, failure included, and gets WRITE_TIMEOUT (the listener's
 * default, 0: off) when it becomes ready, before build_protocol. */
int weft__transport_accept(weft_reactor *reactor, struct weft_listener *listener,
                           evutil_socket_t fd, const struct sockaddr *peer, socklen_t peer_len,
                           weft_factory *factory, weft_cert_options *options,
                           double write_timeout);

/* A stopped listener is about to be freed: every transport it accepted forgets it. */
void weft__transport_forget_listener(weft_reactor *reactor, struct weft_listener *listener);

/* Listener side (listener.c): one of LISTENER's connections was created / freed. Opening may
 * pause accepting (connection limit reached); closing may resume it. */
void weft__listener_connection_opened(struct weft_listener *listener);
void weft__listener_connection_closed(struct weft_listener *listener);

/* Closes every transport of the reactor at shutdown, delivering connection_lost (ESHUTDOWN). */
void weft__transport_shutdown_all(weft_reactor *reactor);

/* Connector side (connector.c): the TLS handshake of a client connection ended. On failure
 * REASON says why and the connector delivers connection_failed and frees itself; on success
 * it just frees itself (the transport then builds the protocol). */
void weft__connector_handshake_done(struct weft_connector *connector, const weft_reason *reason);

/* Connector side: a TLS client transport registers itself with its connector for the length
 * of the handshake, so that weft_connector_cancel can reach it. */
void weft__connector_attach(struct weft_connector *connector, struct weft_transport *transport);

/* Ends a client TLS handshake under way with WEFT_ECANCELED (connection_failed follows). */
void weft__transport_cancel_handshake(struct weft_transport *transport);

#endif
