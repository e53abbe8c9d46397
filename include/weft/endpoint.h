/** @file
 * weft/endpoint.h: listening for connections and connecting out, over TCP and TLS.
 *
 * Listeners and connectors belong to the library. A listener lives until weft_listener_stop or
 * weft_reactor_free. A connector lives until its attempt ends: it is invalid once the factory's
 * build_protocol has been called (success) or connection_failed has returned (failure).
 * All functions must be called from the reactor's thread.
 */
#ifndef WEFT_ENDPOINT_H
#define WEFT_ENDPOINT_H

#include <sys/socket.h>

#include <weft/protocol.h>
#include <weft/reactor.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A listening socket and its factory (opaque, owned by the library). */
typedef struct weft_listener weft_listener;
/** One outgoing connection attempt (opaque, owned by the library). */
typedef struct weft_connector weft_connector;
/** Certificate options (see weft/tls.h). */
typedef struct weft_cert_options weft_cert_options;

/** Listens on INTERFACE (an IPv4 or IPv6 literal such as "127.0.0.1" or "::1"; NULL means
 * "0.0.0.0") and PORT (0 picks a free port; see weft_listener_port). BACKLOG <= 0 means the
 * default (511). FACTORY builds a protocol for every accepted connection.
 * Errors: WEFT_EINVAL (NULL reactor/factory, build_protocol missing, port outside 0..65535,
 * interface not an IP literal), WEFT_EADDRINUSE, WEFT_EADDRNOTAVAIL (no such local address),
 * WEFT_ESOCKET, WEFT_ENOMEM. On success stores the listener in *OUT (may be NULL if the caller
 * does not need it; it is then stopped by weft_reactor_free). */
int weft_listen_tcp(weft_reactor *reactor, const char *interface, int port,
                    weft_factory *factory, int backlog, weft_listener **out);

/** As weft_listen_tcp, but every accepted connection runs a TLS server handshake with OPTIONS
 * before build_protocol. OPTIONS must hold a private key and certificate; it is referenced and
 * frozen (see weft/tls.h). Extra errors: those of weft_cert_options_prepare (WEFT_EINVAL when
 * the options hold no key or certificate, WEFT_EKEYMISMATCH, WEFT_ETLS), with
 * weft_cert_options_last_error saying why. */
int weft_listen_ssl(weft_reactor *reactor, const char *interface, int port,
                    weft_factory *factory, weft_cert_options *options, int backlog,
                    weft_listener **out);

/** Flags for weft_listen_tcp_ex and weft_listen_ssl_ex (bitwise OR; 0 gives the plain
 * weft_listen_tcp / weft_listen_ssl behaviour). */
enum {
  /** Share the port with other listeners, typically one per reactor and thread in a multi-core
   * server: the socket sets SO_REUSEPORT before bind, and the kernel hands each new connection
   * to one listener of the group (on Linux, by a hash of the connection's addresses and ports,
   * so many clients spread about evenly; the load of each reactor plays no part). Every
   * listener on the address and port must set this flag, and on Linux run with the same
   * effective uid. Port 0 on the first listener picks a free port; pass weft_listener_port()
   * of it to the others (another port 0 gets another port). Connections waiting in the
   * backlog of a listener when it stops are dropped by the kernel (Linux resets them), not
   * moved to the others: stop the listeners of a group together, at shutdown. */
  WEFT_LISTEN_REUSEPORT = 1u << 0
};

/** As weft_listen_tcp, with FLAGS (WEFT_LISTEN_* bits). Extra errors: WEFT_EINVAL (an unknown
 * bit in FLAGS), WEFT_ENOTSUP (WEFT_LISTEN_REUSEPORT where the system has no SO_REUSEPORT, or
 * the kernel refuses the option), WEFT_EADDRINUSE also when the port is held by a socket that
 * did not set SO_REUSEPORT, or (Linux) by another user's. Ownership and thread: as
 * weft_listen_tcp. */
int weft_listen_tcp_ex(weft_reactor *reactor, const char *interface, int port,
                       weft_factory *factory, int backlog, unsigned flags, weft_listener **out);

/** As weft_listen_ssl, with FLAGS as for weft_listen_tcp_ex (same extra errors). Once configured,
 * OPTIONS may be shared by the listeners of several reactors in several threads (see
 * "Threading" in weft/tls.h). */
int weft_listen_ssl_ex(weft_reactor *reactor, const char *interface, int port,
                       weft_factory *factory, weft_cert_options *options, int backlog,
                       unsigned flags, weft_listener **out);

/** The port the listener is bound to (useful after asking for port 0), or -1 for NULL. */
int weft_listener_port(weft_listener *listener);

/** Copies the bound address into *ADDR / *LEN as weft_transport_host_address does. */
int weft_listener_address(weft_listener *listener, struct sockaddr *addr, socklen_t *len);

/** Limits how many of the listener's connections may exist at once (MAX 0, the default: no
 * limit). A connection counts from accept until it is freed: TLS handshakes under way count,
 * and so does a connection from build_protocol until its connection_lost has returned. At the
 * limit the listener stops calling accept(); new connections wait in the kernel's backlog (up
 * to the BACKLOG given to weft_listen_*, then the kernel refuses or drops them) and are
 * accepted, oldest first, as the listener's own connections end. Lowering MAX below the current
 * count closes nothing. Errors: WEFT_EINVAL (NULL listener). */
int weft_listener_set_connection_limit(weft_listener *listener, unsigned max);

/** The number of the listener's connections that exist now, as counted for the limit above
 * (0 for NULL). */
unsigned weft_listener_connection_count(weft_listener *listener);

/** The write time-out (see weft_transport_set_write_timeout) that connections accepted from now
 * on start with, applied when they become ready (before build_protocol, so build_protocol or
 * connection_made may change it per connection). SECONDS 0, the default, means none. Errors:
 * WEFT_EINVAL (NULL listener, SECONDS negative, above 1e6 or not a number). */
int weft_listener_set_write_timeout(weft_listener *listener, double seconds);

/** Stops listening and frees the listener. Connections it accepted live on (they no longer count
 * against anything). NULL is ignored. */
void weft_listener_stop(weft_listener *listener);

/** Connects to HOST (an IP literal, or a name resolved asynchronously, IPv4 and IPv6; every
 * address is tried in turn) and PORT (1..65535). TIMEOUT is the limit in seconds for the whole
 * attempt up to an established TCP connection (<= 0: 30 s). BIND_ADDRESS, if not NULL, is the
 * local IP literal to connect from. On success the factory builds a protocol; on failure
 * connection_failed gets WEFT_ECONNREFUSED, WEFT_ETIMEDOUT, WEFT_ENOTFOUND, ... exactly once,
 * always from the reactor loop (never from inside this call).
 * Errors returned here (no callback follows): WEFT_EINVAL (NULL argument, port out of range,
 * build_protocol missing, bad bind address), WEFT_ENOMEM. OUT may be NULL. */
int weft_connect_tcp(weft_reactor *reactor, const char *host, int port, weft_factory *factory,
                     double timeout, const char *bind_address, weft_connector **out);

/** As weft_connect_tcp, then a TLS client handshake with OPTIONS (referenced and frozen) before
 * build_protocol. SERVER_NAME is the name sent as SNI (when it is a DNS name) and checked
 * against the server certificate (DNS name or IP address); NULL means the options' server name,
 * or else HOST. Handshake failures reach connection_failed with their reason (WEFT_ECERTVERIFY,
 * WEFT_EHOSTNAME, WEFT_ETLSALERT, WEFT_ETLSVERSION, WEFT_ENOPROTOCOL, WEFT_EHANDSHAKETIMEOUT...).
 * Extra errors: WEFT_ETLS (options cannot build a client context). */
int weft_connect_ssl(weft_reactor *reactor, const char *host, int port, weft_factory *factory,
                     weft_cert_options *options, const char *server_name, double timeout,
                     const char *bind_address, weft_connector **out);

/** Abandons a pending connection attempt: connection_failed follows with WEFT_ECANCELED, from
 * the reactor loop. Returns 0, or WEFT_EINVAL for NULL. */
int weft_connector_cancel(weft_connector *connector);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_ENDPOINT_H */
