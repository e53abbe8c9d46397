/* Private: the transport's state and the functions listeners and connectors use to create
 * transports and hand them over. One transport type serves TCP and TLS (h2o style): TLS is a
 * bufferevent_openssl over the same socket, set up at accept/connect time or by STARTTLS. */
#ifndef WEFT_TRANSPORT_INTERNAL_H
#define WEFT_TRANSPORT_INTERNAL_H

#include <netinet/in.h>
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
#include "tls_bio-internal.h"
#include "tls_ssl-internal.h"

typedef enum weft__tstate {
  WEFT__T_HANDSHAKING = 0, /* TLS handshake before build_protocol */
  WEFT__T_OPEN,            /* protocol attached, data flows */
  WEFT__T_CLOSING,         /* lose_connection: flushing, then close_notify, then close */
  WEFT__T_CLOSED           /* socket closed; connection_lost pending or delivered */
} weft__tstate;

/* The owner hook (h2o's on_close): whoever creates a transport (listener, connector,
 * reconnector, ...) passes one and hears through it when the connection became ready and when
 * it ended. The transport never knows what its owner is, and nothing rewrites a user's
 * callback table to learn what happened. Both hooks run in the reactor's thread. */
typedef struct weft__owner {
  /* The connection is ready for application data (TCP: established; TLS: handshake done),
   * right before the factory's build_protocol. The hook may hand the transport to another
   * owner (weft__transport_set_owner), whose ready hook it then calls itself if it wants it
   * called. May be NULL. */
  void (*ready)(void *arg, struct weft_transport *transport);
  /* The transport ended and is freed: the last word about it, exactly once for every transport
   * weft__transport_start created (never when it failed). It runs after connection_lost
   * returned (or, for a connection that was never made, after handshake_failed or in place of
   * anything: refused, failed or cancelled handshake, reactor freed). MADE says whether
   * connection_made was called. REASON is valid during the call. May be NULL. */
  void (*closed)(void *arg, const weft_reason *reason, int made);
  void *arg;
} weft__owner;

/* An IPv4 or IPv6 address, kept inline in the transport (28 bytes instead of a 128-byte
 * sockaddr_storage). A longer one (a Unix socket path) lives in a block of its own. */
typedef union weft__inet_addr {
  struct sockaddr sa;
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
} weft__inet_addr;

/* The peer and host addresses of a connection whose addresses do not both fit inline. */
typedef struct weft__wide_addrs {
  struct sockaddr_storage peer, host;
} weft__wide_addrs;

struct weft_transport {
  weft_reactor *reactor;
  weft__handle handle; /* registered (WEFT__RANK_CONNECTION) from a successful start until freed */
  struct bufferevent *bev;
  evutil_socket_t fd;
  weft__tstate state;

  weft_factory *factory;
  weft_protocol *protocol;
  weft__owner owner; /* who created it and hears of its readiness and its end */

  /* The peer's and the host's addresses (PEER_LEN / HOST_LEN bytes; 0: unknown). Inline while
   * both fit there (IPv4, IPv6, an unnamed Unix socket), otherwise both in WIDE (allocated at
   * creation, only then). Read them with weft__transport_peer / weft__transport_host. */
  weft__inet_addr peer, host;
  weft__wide_addrs *wide;
  socklen_t peer_len, host_len;

  size_t low_water;
  double write_timeout; /* seconds without output progress before the cut; 0: off */
  double close_timeout; /* weft_transport_set_close_timeout; < 0: the options' (see close_wait) */
  unsigned is_client : 1;
  unsigned made : 1;         /* connection_made was called */
  unsigned write_closed : 1; /* no more writes accepted */
  unsigned half_close_pending : 1;
  unsigned half_closed : 1;
  unsigned read_paused : 1;
  unsigned above_low_water : 1;
  unsigned shutdown_sent : 1; /* TLS close_notify sent */
  unsigned eof_seen : 1;
  unsigned starttls : 1;     /* upgrading in place */
  unsigned starting_tls : 1; /* inside start_tls, enabling the new filter: no callbacks */
  unsigned host_later : 1;   /* HOST not read yet: getsockname(2) on first use (an IP peer) */
  unsigned tls_socket : 1;   /* TLS from the start: bufferevent_openssl on the socket, read-ahead
                                 on (not a STARTTLS filter) */
  unsigned close_notify_pulled : 1; /* pull_decrypted met the peer's close_notify: on_resume
                                       reports it once the input before it is delivered */
  unsigned lingering : 1;           /* a refused TLS handshake: alert sent, write side shut down,
                                 draining input until the peer's EOF (linger_after_alert) */
  unsigned finish_due : 1;          /* WORK is queued to deliver the end (deliver_end) */
  unsigned resume_due : 1;          /* WORK is queued to deliver input held back (on_resume) */
  unsigned reason_owned : 1;        /* REASON.message is a block of its own (freed with it) */
  int in_callback;                  /* depth of user callbacks running on this transport */

  /* Work from the loop (see weft__reactor_defer): connection_lost once CLOSED (FINISH_DUE),
   * before that the delivery of input held back while paused or read ahead (RESUME_DUE). */
  weft__deferred work;
  struct event *timer;          /* handshake or close time-out: made when one is armed, freed
                                   once the handshake is done (NULL on an open connection) */
  struct event *drain_event;    /* lingering: reads and discards input (NULL otherwise) */
  uint64_t written;           /* plaintext accepted by the write calls (pending_output) */
  BIO *bio;                  /* TLS socket: the SSL's socket BIO (owned by the SSL), which
                                coalesces records once the handshake is done (tls_bio.c) */
  struct event *flush_event; /* TLS socket: records staged in the BIO met a full socket; written
                                when it is writable (made on first need) */
  struct event *shutdown_event; /* TLS socket: close_notify met a full socket; retried when it
                                   is writable (NULL otherwise) */
  /* write_reference with a release: the releases not yet due (bytes still queued) and those
   * due but not yet called. libevent calls a reference's cleanup from inside its own buffer
   * work, where a weft call on this transport would corrupt the buffer: the user's release
   * runs later, from RELEASE_EVENT (made on first use). */
  LIST_HEAD(, weft__release) releases_queued;
  struct weft__release *releases_due;
  struct event *release_event;

  /* TLS */
  SSL *ssl;
  weft__tls_conn tls;
  char *server_name;
  const uint8_t *next_proto;
  size_t next_proto_len;
  weft_negotiation_mechanism mechanism;
  int proxy_version; /* see proxy_tlvs below (here: it fills the hole after MECHANISM) */

  /* Why it closed (valid once state is CLOSED). The message is allocated when the reason is
   * set, at the end, not held by every open connection; without memory for it, it is
   * weft_strerror(code). Set it with weft__reason_set(&t->reason, ...) in transport.c. */
  weft_reason reason;

  /* Idle time-out (weft_transport_set_idle_timeout): no timer of its own, a node in the
   * reactor's queue for its value (see "idle queues" in reactor-internal.h). A read stamps
   * IDLE.last_activity and moves the node to the queue's tail: no timer work. */
  double idle_timeout;
  weft__idle_node idle;
  /* A helper working on this transport on the protocol's behalf (lib/producer.c's producer),
   * if any: ENDED (ARG, REASON) runs once, before connection_lost, when the transport ends.
   * The transport knows nothing else of it, so the dependency runs one way. */
  struct {
    void (*ended)(void *arg, const weft_reason *reason);
    void *arg;
  } helper;
  /* The PROXY protocol header the listener read before this transport existed (lib/proxy.c
   * reads these; the listener sets them from its ready hook): its version (0: none;
   * PROXY_VERSION, above) and its well-formed version 2 TLV block (owned, freed with the
   * transport). */
  uint8_t *proxy_tlvs;
  size_t proxy_tlvs_len;
};

/* The peer's and the host's addresses (see weft_transport.peer). */
static inline const struct sockaddr *weft__transport_peer(const struct weft_transport *t) {
  return t->wide ? (const struct sockaddr *)&t->wide->peer : &t->peer.sa;
}
static inline const struct sockaddr *weft__transport_host(const struct weft_transport *t) {
  return t->wide ? (const struct sockaddr *)&t->wide->host : &t->host.sa;
}

/* Closes the transport now with CODE and MESSAGE (connection_lost follows from the loop), as
 * an error would; for TLS after the handshake, close_notify is sent first. For
 * weft_testing_transport_close and the idle time-out. */
void weft__transport_close_with(struct weft_transport *transport, int code, const char *message);

/* Creates a transport for the connected socket FD (owned from now on, closed on failure) and
 * registers it with the reactor as a handle of rank WEFT__RANK_CONNECTION (freeing the reactor
 * closes it: connection_lost with WEFT_ESHUTDOWN, TLS close_notify sent). For TLS (OPTIONS not NULL) the handshake starts at once in
 * ROLE; otherwise the connection is ready and OWNER's ready hook and the factory's
 * build_protocol run before this returns. OWNER (copied; may be NULL) hears of the
 * transport's readiness and end (see weft__owner). WRITE_TIMEOUT (0: off) is applied when the
 * connection becomes ready, before build_protocol. PEER may be NULL (looked up with
 * getpeername). On success *OUT (may be NULL) receives the transport, before anything is
 * called back; it is valid until OWNER's closed hook. Returns 0 or a WEFT_E* code (among them
 * WEFT_ESHUTDOWN while the reactor is being freed): the fd is closed then, *OUT is untouched
 * and no hook of OWNER is called. */
int weft__transport_start(weft_reactor *reactor, evutil_socket_t fd, const struct sockaddr *peer,
                          socklen_t peer_len, weft_factory *factory, weft_cert_options *options,
                          weft_tls_role role, const char *server_name, double write_timeout,
                          const weft__owner *owner, struct weft_transport **out);

/* Replaces the transport's owner (copied; NULL: none). For an owner that hands a transport on,
 * e.g. a connector from its ready hook to the one that asked it to connect. */
void weft__transport_set_owner(struct weft_transport *transport, const weft__owner *owner);

/* Ends a client TLS handshake under way with WEFT_ECANCELED (the owner's closed hook follows,
 * from the loop). Does nothing once the transport is ready. */
void weft__transport_cancel_handshake(struct weft_transport *transport);

#endif
