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

#include <weft/common.h>

#include <sys/socket.h>
#include <sys/types.h>

#include <weft/protocol.h>
#include <weft/reactor.h>
#include <weft/transport.h>

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
 * "0.0.0.0") and PORT (0 picks a free port; see weft_listener_port), with the default backlog
 * (511). FACTORY builds a protocol for every accepted connection. For a backlog, SO_REUSEPORT,
 * a connection limit or a write time-out from the start, describe the listener with a
 * weft_endpoint and call weft_endpoint_listen.
 * Errors: WEFT_EINVAL (NULL reactor/factory, build_protocol missing, port outside 0..65535,
 * interface not an IP literal), WEFT_EADDRINUSE, WEFT_EADDRNOTAVAIL (no such local address),
 * WEFT_ESOCKET, WEFT_ESHUTDOWN (the reactor is being freed), WEFT_ENOMEM. On success stores the
 * listener in *OUT (may be NULL if the caller does not need it; it is then stopped by
 * weft_reactor_free). */
WEFT_EXTERN int weft_listen_tcp(weft_reactor *reactor, const char *interface, int port,
                                weft_factory *factory, weft_listener **out);

/** As weft_listen_tcp, but every accepted connection runs a TLS server handshake with OPTIONS
 * before build_protocol. OPTIONS must hold a private key and certificate; it is referenced and
 * frozen (see weft/tls.h). Once configured, OPTIONS may be shared by the listeners of several
 * reactors in several threads (see "Threading" in weft/tls.h). Extra errors: WEFT_EINVAL
 * (OPTIONS NULL), those of weft_cert_options_prepare (WEFT_EINVAL when the options hold no key
 * or certificate, WEFT_EKEYMISMATCH, WEFT_ETLS), with weft_cert_options_last_error saying why. */
WEFT_EXTERN int weft_listen_ssl(weft_reactor *reactor, const char *interface, int port,
                                weft_factory *factory, weft_cert_options *options,
                                weft_listener **out);

/** The port the listener is bound to (useful after asking for port 0), or -1 for NULL. */
WEFT_EXTERN int weft_listener_port(weft_listener *listener);

/** Copies the bound address into *ADDR / *LEN as weft_transport_host_address does. */
WEFT_EXTERN int weft_listener_address(weft_listener *listener, struct sockaddr *addr,
                                      socklen_t *len);

/** Limits how many of the listener's connections may exist at once (MAX 0, the default: no
 * limit). A connection counts from accept until it is freed: TLS handshakes under way count,
 * and so does a connection from build_protocol until its connection_lost has returned. At the
 * limit the listener stops calling accept(); new connections wait in the kernel's backlog (up
 * to the listen backlog, 511 unless weft_endpoint_set_backlog says otherwise, then the kernel
 * refuses or drops them) and are accepted, oldest first, as the listener's own connections end.
 * Lowering MAX below the current count closes nothing. Errors: WEFT_EINVAL (NULL listener). */
WEFT_EXTERN int weft_listener_set_connection_limit(weft_listener *listener, unsigned max);

/** The number of the listener's connections that exist now, as counted for the limit above
 * (0 for NULL). */
WEFT_EXTERN unsigned weft_listener_connection_count(weft_listener *listener);

/** The write time-out (see weft_transport_set_write_timeout) that connections accepted from now
 * on start with, applied when they become ready (before build_protocol, so build_protocol or
 * connection_made may change it per connection). SECONDS 0, the default, means none. Errors:
 * WEFT_EINVAL (NULL listener, SECONDS negative, above 1e6 or not a number). */
WEFT_EXTERN int weft_listener_set_write_timeout(weft_listener *listener, double seconds);

/** Stops listening and frees the listener. Connections it accepted live on (they no longer count
 * against anything). NULL is ignored. */
WEFT_EXTERN void weft_listener_stop(weft_listener *listener);

/** Connects to HOST (an IP literal, or a name resolved asynchronously, IPv4 and IPv6, its
 * addresses tried by Happy Eyeballs: see weft_endpoint_set_attempt_delay) and PORT
 * (1..65535), from any local address, with a time-out of 30 s for the whole attempt up to an
 * established TCP connection. On success the factory
 * builds a protocol; on failure connection_failed gets WEFT_ECONNREFUSED, WEFT_ETIMEDOUT,
 * WEFT_ENOTFOUND, ... exactly once, always from the reactor loop (never from inside this call).
 * For another time-out or a bind address, describe the connection with a weft_endpoint and call
 * weft_endpoint_connect.
 * Errors returned here (no callback follows): WEFT_EINVAL (NULL argument, empty HOST, port out
 * of range, build_protocol missing), WEFT_ESHUTDOWN (the reactor is being freed), WEFT_ENOMEM.
 * OUT may be NULL. */
WEFT_EXTERN int weft_connect_tcp(weft_reactor *reactor, const char *host, int port,
                                 weft_factory *factory, weft_connector **out);

/** As weft_connect_tcp, then a TLS client handshake with OPTIONS (referenced and frozen) before
 * build_protocol. The name sent as SNI (when it is a DNS name) and checked against the server
 * certificate (DNS name or IP address) is the options' server name
 * (weft_cert_options_set_server_name), or else HOST; a per-connection name is a setting of
 * weft_endpoint (weft_endpoint_set_server_name). Handshake failures reach connection_failed
 * with their reason (WEFT_ECERTVERIFY, WEFT_EHOSTNAME, WEFT_ETLSALERT, WEFT_ETLSVERSION,
 * WEFT_ENOPROTOCOL, WEFT_EHANDSHAKETIMEOUT...). Extra errors: WEFT_EINVAL (OPTIONS NULL),
 * WEFT_ETLS (options cannot build a client context). */
WEFT_EXTERN int weft_connect_ssl(weft_reactor *reactor, const char *host, int port,
                                 weft_factory *factory, weft_cert_options *options,
                                 weft_connector **out);

/** Abandons a pending connection attempt: connection_failed follows with WEFT_ECANCELED, from
 * the reactor loop. Returns 0, or WEFT_EINVAL for NULL. */
WEFT_EXTERN int weft_connector_cancel(weft_connector *connector);

/* --- Endpoints: where to listen or connect, and how -------------------------------------
 *
 * A weft_endpoint describes one listening or connecting endpoint: address, port, TLS options,
 * limits and time-outs. It is an opaque object with setters (as nghttp2_option), so that new
 * settings arrive as new setters without breaking programs built against an older weft. Build
 * one with weft_endpoint_new and the setters, or from a description string with
 * weft_endpoint_parse, then use it any number of times with weft_endpoint_listen or
 * weft_endpoint_connect.
 *
 * Ownership: the endpoint is the user's (weft_endpoint_free). Strings given to setters are
 * copied; TLS options are referenced. weft_endpoint_listen / weft_endpoint_connect read the
 * endpoint only during the call: the endpoint may be freed right after.
 * Threading: an endpoint is plain data; use it from one thread at a time (listen and connect
 * then follow the rules of the functions they call: the reactor's thread).
 */

/** Whether an endpoint listens (server) or connects (client). */
typedef enum weft_endpoint_role {
  WEFT_ENDPOINT_SERVER = 0, /**< listens for connections (weft_endpoint_listen) */
  WEFT_ENDPOINT_CLIENT = 1  /**< connects out (weft_endpoint_connect) */
} weft_endpoint_role;

/** An endpoint description (opaque, owned by the user). */
typedef struct weft_endpoint weft_endpoint;

/** Creates an empty endpoint for ROLE: no host, no port (which must be set before use), plain
 * TCP, every other setting at the default of the function it ends up calling. Stores it in
 * *OUT. Errors: WEFT_EINVAL (OUT NULL, unknown ROLE), WEFT_ENOMEM. Any thread. */
WEFT_EXTERN int weft_endpoint_new(weft_endpoint_role role, weft_endpoint **out);

/** Frees the endpoint and drops its reference to its TLS options. Listeners and connectors
 * made from it are not affected. NULL is ignored. */
WEFT_EXTERN void weft_endpoint_free(weft_endpoint *endpoint);

/** Parses DESCRIPTION, a string in Twisted's endpoint syntax (serverFromString /
 * clientFromString), into a new endpoint for ROLE, stored in *OUT.
 *
 * Syntax: `KIND:ARG:ARG...`, each ARG either a positional value or `KEY=VALUE`; a backslash
 * escapes the next `:`, `=` or `\` (any other escape is an error). Within an argument the
 * first unescaped `=` separates the key; later ones belong to the value. Keys are
 * case-sensitive and may be given once each, by name or by position.
 *
 * Servers:
 *  - `tcp:PORT[:interface=IP][:backlog=N][:reusePort=yes][:connectionLimit=N]
 *    [:perAddressLimit=N][:writeTimeout=S][:dualStack=yes]` (positional: PORT, interface, backlog)
 *  - `ssl:PORT:privateKey=PEM[:certKey=PEM][:caCerts=PEM][:requireCert=yes|no][:alpn=LIST]
 *    [:mechanisms=alpn|npn|both][:noOverlap=fail|continue][:tlsMin=1.2|1.3][:tlsMax=1.2|1.3]
 *    [:handshakeTimeout=S]` and every tcp: key (positional: PORT, privateKey, certKey);
 *    certKey, the certificate chain, defaults to the privateKey file.
 *
 * Clients:
 *  - `tcp:HOST:PORT` or `tcp:host=HOST:port=PORT`, `[:timeout=S][:bindAddress=IP]
 *    [:attemptDelay=S]`
 *  - `tls:HOST:PORT[:trustRoots=PEM|DIR][:certificate=PEM[:privateKey=PEM]][:serverName=NAME]
 *    [:alpn=LIST][:mechanisms=..][:noOverlap=..][:tlsMin=..][:tlsMax=..][:handshakeTimeout=S]`
 *    and every tcp: key; the client key defaults to the certificate file.
 *  - `ssl:HOST:PORT`: as tls:, with Twisted's ssl: names caCerts (file), caCertsDir, certKey
 *    (client certificate) and privateKey. Unlike Twisted's ssl: client, weft always verifies
 *    the server (against the system trust store when no CA is given).
 *
 *  - `unix:PATH[:mode=0660][:backlog=N][:connectionLimit=N][:perAddressLimit=N]
 *    [:writeTimeout=S]` (positional: address, Twisted's name for the path), TLS when
 *    `privateKey=` is given, with the ssl: server's TLS keys (weft_endpoint_set_unix_path).
 *    PATH "@name" is an abstract name (Linux).
 *  - client `unix:path=PATH[:timeout=S]` (positional: path), TLS with `tls=yes` and the tls:
 *    client's TLS keys; the name checked is serverName, else "localhost".
 *    TLS keys on a plain unix: description are refused.
 *
 * Prefix (servers): `haproxy:` before a tcp: or ssl: description requires a PROXY header,
 * version 1 or 2, on every connection (weft_endpoint_set_proxy_protocol), with two more keys
 * allowed after it: `proxySources=LIST` (trusted prefixes IP[/BITS], comma-separated; escape
 * the colons of IPv6 ones with a backslash) and `proxyTimeout=S` (the header time-out).
 *
 * PORT is 0..65535 for servers (0 picks a free port) and 1..65535 for clients; LIST is
 * comma-separated (h2,http/1.1); S is seconds (a decimal number above 0, at most 1000000).
 * `systemd:domain=INET|INET6|UNIX:index=N` (or `:name=NAME`) serves a socket from systemd
 * (weft_endpoint_set_systemd), with the connection keys of tcp: and, when `privateKey=` is
 * given, TLS with the ssl: server's keys.
 *
 * TLS endpoints get new weft_cert_options (weft_endpoint_get_tls) with the key, certificates
 * and CAs loaded from the files now; the options are not frozen yet, so the caller may change
 * them before the first listen or connect.
 *
 * Errors: WEFT_EINVAL (a syntax error, an unknown, duplicate or missing key, an empty value, a
 * value out of range, a description longer than 4096 bytes, NULL DESCRIPTION or OUT), the
 * codes of the weft_cert_options loaders (WEFT_EPEM for a missing or malformed file, WEFT_EKEYMISMATCH, ...),
 * WEFT_ENOMEM. On error *OUT is NULL and, when ERR is not NULL, ERR (ERR_SIZE bytes, always
 * NUL-terminated when ERR_SIZE > 0) receives a sentence that starts with the key at fault and
 * gives the reason, e.g. "port: not a number 'x'". Any thread (loads files, blocking). */
WEFT_EXTERN int weft_endpoint_parse(const char *description, weft_endpoint_role role,
                                    weft_endpoint **out, char *err, size_t err_size);

/** Client: the host to connect to (a name or an IP literal, 1 to 255 bytes). Server: the
 * interface to listen on (an IPv4 or IPv6 literal; NULL, the default, means every IPv4
 * interface, as for weft_listen_tcp). The string is copied. Errors: WEFT_EINVAL (NULL endpoint,
 * a server interface that is not an IP literal, a client host that is NULL, empty or longer
 * than 255 bytes), WEFT_ENOMEM. */
WEFT_EXTERN int weft_endpoint_set_host(weft_endpoint *endpoint, const char *host);

/** The port: 0..65535 for a server (0 picks a free one: read it back with
 * weft_listener_port), 1..65535 for a client. Errors: WEFT_EINVAL. */
WEFT_EXTERN int weft_endpoint_set_port(weft_endpoint *endpoint, int port);

/** Makes the endpoint TLS with OPTIONS (referenced; the endpoint drops its reference when
 * freed or given other options), or plain TCP again with NULL. The options are frozen by the
 * first listen or connect, as with weft_listen_ssl. Errors: WEFT_EINVAL (NULL endpoint). */
WEFT_EXTERN int weft_endpoint_set_tls(weft_endpoint *endpoint, weft_cert_options *options);

/** Client with TLS: the name sent as SNI and checked against the server's certificate (NULL,
 * the default, means the options' name, else the host; see weft_connect_ssl). Ignored for
 * plain TCP.
 * Errors: WEFT_EINVAL (NULL endpoint, a server endpoint, a name longer than 255 bytes),
 * WEFT_ENOMEM. */
WEFT_EXTERN int weft_endpoint_set_server_name(weft_endpoint *endpoint, const char *name);

/** Server: the listen backlog, 1..65535 (0, the default, means weft_listen_tcp's default).
 * Errors: WEFT_EINVAL (NULL endpoint, a client endpoint, out of range). */
WEFT_EXTERN int weft_endpoint_set_backlog(weft_endpoint *endpoint, int backlog);

/** Client: the time-out in seconds of the whole attempt up to an established TCP connection
 * (0, the default, means 30 s, as for weft_connect_tcp; at most 1e6). Errors: WEFT_EINVAL
 * (NULL endpoint, a server endpoint, negative, too large or not a number). */
WEFT_EXTERN int weft_endpoint_set_timeout(weft_endpoint *endpoint, double seconds);

/** Client: the Happy Eyeballs attempt delay (RFC 8305's Connection Attempt Delay), in seconds:
 * when a name has several addresses, each connection attempt runs alone this long before the
 * next address is tried alongside it (an attempt that fails starts the next one at once). The
 * addresses are tried with the families alternating, starting with the resolver's first; the
 * first attempt to connect wins, the others are closed at once, and with TLS only the winner
 * runs the handshake. The endpoint's time-out bounds the whole. Default 0.25 s (RFC 8305's
 * recommendation); 0 starts all attempts at once. Description key `attemptDelay=S` (client
 * tcp:, tls:, ssl:). Errors: WEFT_EINVAL (NULL endpoint, a server endpoint, SECONDS negative,
 * above 60 or not a number). */
WEFT_EXTERN int weft_endpoint_set_attempt_delay(weft_endpoint *endpoint, double seconds);

/** Client: the local IP literal to connect from (NULL, the default: any). Copied. Errors:
 * WEFT_EINVAL (NULL endpoint, a server endpoint, not an IP literal), WEFT_ENOMEM. */
WEFT_EXTERN int weft_endpoint_set_bind_address(weft_endpoint *endpoint, const char *address);

/** Server: share the port with other listeners (default off), typically one per reactor and
 * thread in a multi-core server: the socket sets SO_REUSEPORT before bind, and the kernel hands
 * each new connection to one listener of the group (on Linux, by a hash of the connection's
 * addresses and ports, so many clients spread about evenly; the load of each reactor plays no
 * part). Every listener on the address and port must set this, and on Linux run with the same
 * effective uid. Port 0 on the first listener picks a free port; give weft_listener_port() of
 * it to the others (another port 0 gets another port). Connections waiting in the backlog of a
 * listener when it stops are dropped by the kernel (Linux resets them), not moved to the
 * others: stop the listeners of a group together, at shutdown. weft_endpoint_listen then fails
 * with WEFT_ENOTSUP where the system has no SO_REUSEPORT or the kernel refuses the option, and
 * with WEFT_EADDRINUSE also when the port is held by a socket that did not set SO_REUSEPORT,
 * or (Linux) by another user's. Errors: WEFT_EINVAL (NULL endpoint, a client endpoint). */
WEFT_EXTERN int weft_endpoint_set_reuseport(weft_endpoint *endpoint, int on);

/** Server: with an IPv6 interface ("::" for every address), accept IPv4 connections on the same
 * socket too (ON non-zero), as IPv4-mapped IPv6 peers (the address 192.0.2.1 is seen as
 * \c \::ffff:192.0.2.1); the default (0) sets IPV6_V6ONLY, whatever the system's default, so
 * that one listener serves one family and an IPv4 listener may share the port. Ignored for an IPv4 interface. Description key:
 * `dualStack=yes` (tcp:, ssl:). weft_endpoint_listen fails with WEFT_ENOTSUP where the system
 * cannot clear IPV6_V6ONLY. Errors: WEFT_EINVAL (NULL endpoint, a client endpoint). */
WEFT_EXTERN int weft_endpoint_set_dual_stack(weft_endpoint *endpoint, int on);

/** Server: the connection limit of the listener (weft_listener_set_connection_limit; 0, the
 * default, means none). Errors: WEFT_EINVAL (NULL endpoint, a client endpoint). */
WEFT_EXTERN int weft_endpoint_set_connection_limit(weft_endpoint *endpoint, unsigned max);

/** Server: the write time-out the listener gives its connections
 * (weft_listener_set_write_timeout; 0, the default, means none). Errors: WEFT_EINVAL (NULL
 * endpoint, a client endpoint, SECONDS negative, above 1e6 or not a number). */
WEFT_EXTERN int weft_endpoint_set_write_timeout(weft_endpoint *endpoint, double seconds);

/** @{ */
/** What the endpoint holds: its role (WEFT_ENDPOINT_SERVER for NULL), its host or interface
 * (NULL when not set; valid until changed or freed), its port (-1 when not set or for NULL),
 * its TLS options (NULL for plain TCP; borrowed: take a reference to keep them). */
WEFT_EXTERN weft_endpoint_role weft_endpoint_get_role(const weft_endpoint *endpoint);
WEFT_EXTERN const char *weft_endpoint_get_host(const weft_endpoint *endpoint);
WEFT_EXTERN int weft_endpoint_get_port(const weft_endpoint *endpoint);
WEFT_EXTERN weft_cert_options *weft_endpoint_get_tls(const weft_endpoint *endpoint);
/** @} */

/** Listens as the server ENDPOINT says: as weft_listen_tcp or, with TLS options,
 * weft_listen_ssl, with the endpoint's backlog and SO_REUSEPORT setting, and the listener's
 * connection limit and write time-out set before anything can be accepted. Errors:
 * WEFT_EINVAL (NULL argument, a client endpoint, no port set), then those of the functions
 * named and of weft_endpoint_set_reuseport. OUT: as weft_listen_tcp. Reactor thread. */
WEFT_EXTERN int weft_endpoint_listen(weft_reactor *reactor, const weft_endpoint *endpoint,
                                     weft_factory *factory, weft_listener **out);

/** Connects as the client ENDPOINT says: as weft_connect_tcp or, with TLS options,
 * weft_connect_ssl, with the endpoint's host, port, time-out, bind address and server name.
 * Errors: WEFT_EINVAL (NULL argument, a server endpoint, no host or port set), then those of
 * the functions named; failures after the call returned 0 reach connection_failed, exactly
 * once. OUT: as weft_connect_tcp. Reactor thread. */
WEFT_EXTERN int weft_endpoint_connect(weft_reactor *reactor, const weft_endpoint *endpoint,
                                      weft_factory *factory, weft_connector **out);

/** Replaces the TLS options of a running TLS listener. OPTIONS are prepared for the server role
 * first (every identity's SSL_CTX built, files already read by their loaders): if that fails
 * nothing changes, the listener keeps serving with what it had and the call returns the
 * error, with the sentence in weft_cert_options_last_error(OPTIONS). On success the listener
 * takes a reference to OPTIONS and drops its old one: every handshake that starts afterwards
 * uses the new certificates, keys, protocol lists and policies; connections already accepted
 * keep the options they started with (each holds its own reference) and are not disturbed.
 * To reload files, build new options from the same file names (weft's loaders read files
 * when called) and pass them here; ticket keys given by file reload the same way. With
 * automatic ticket keys, the new options make new keys: tickets issued before the reload
 * then get a full handshake (give ticket key files to keep resumption across reloads).
 * Errors: WEFT_EINVAL (NULL, or a TCP listener), the errors of weft_cert_options_prepare.
 * Thread: the listener's reactor thread (from another thread, use
 * weft_reactor_call_from_thread). */
WEFT_EXTERN int weft_listener_set_options(weft_listener *listener, weft_cert_options *options);

/* --- PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2) ----------------------
 *
 * Behind a load balancer (HAProxy, AWS NLB, ...) every connection starts with a PROXY header
 * that names the client the balancer accepted. A listener told to expect it reads the header
 * right after accept, before any TLS handshake, and consumes exactly its bytes (a ClientHello
 * in the same TCP segment stays for the handshake). The connection then reports the header's
 * source as its peer: build_protocol's PEER, weft_transport_peer_address and, on failure,
 * handshake_failed's PEER (the socket's own peer until the header is read). A LOCAL command
 * (health checks), an UNSPEC family or a v1 UNKNOWN line keeps the socket's addresses.
 * A missing, malformed, unsupported or oversized header (more than 4096 bytes) ends the
 * connection before build_protocol: handshake_failed gets WEFT_EPROXY with a sentence saying
 * what was wrong; one that does not arrive whole within the header time-out gets
 * WEFT_ETIMEDOUT; a peer that closes first gets WEFT_EPROXY.
 * Anyone who can connect could claim any address in a header: give the balancers' addresses
 * as SOURCES, and connections from anywhere else are refused (handshake_failed gets
 * WEFT_EPEERREFUSED) before a byte of theirs is read. */

/** Bits of the VERSIONS argument below. */
#define WEFT_PROXY_V1 1u /**< the text header, "PROXY TCP4 ..." */
#define WEFT_PROXY_V2 2u /**< the binary header, with TLVs */

/** @{ */
/** Version 2 TLV types (the spec's PP2_TYPE_*), for weft_transport_proxy_tlv. */
#define WEFT_PROXY_TLV_ALPN 0x01u
#define WEFT_PROXY_TLV_AUTHORITY 0x02u
#define WEFT_PROXY_TLV_CRC32C 0x03u
#define WEFT_PROXY_TLV_NOOP 0x04u
#define WEFT_PROXY_TLV_UNIQUE_ID 0x05u
#define WEFT_PROXY_TLV_SSL 0x20u
#define WEFT_PROXY_TLV_NETNS 0x30u
/** @} */

/** Makes LISTENER require a PROXY header of one of VERSIONS (WEFT_PROXY_V1 | WEFT_PROXY_V2;
 * 0 turns it off) on every connection accepted from now on. SOURCES, when not NULL or empty,
 * is a comma-separated list of trusted prefixes ("10.0.0.0/8,192.0.2.7,2001:db8::/32"; an
 * address alone is a full-length prefix; an IPv4-mapped IPv6 peer matches IPv4 prefixes):
 * connections from other addresses are refused at once. NULL trusts every source (only for a
 * port no one but the balancer can reach). TIMEOUT is the time the whole header may take, in
 * seconds (0: 10 s; at most 1e6). Errors: WEFT_EINVAL (NULL listener, an unknown bit, a
 * malformed SOURCES, TIMEOUT out of range), WEFT_ENOMEM; nothing changes then. Reactor
 * thread. */
WEFT_EXTERN int weft_listener_set_proxy_protocol(weft_listener *listener, unsigned versions,
                                                 const char *sources, double timeout);

/** Server endpoint: the settings of weft_listener_set_proxy_protocol, applied by
 * weft_endpoint_listen before anything is accepted (VERSIONS 0, the default: no header).
 * SOURCES is copied. Errors: WEFT_EINVAL (NULL or client endpoint, as for the listener's
 * function), WEFT_ENOMEM. */
WEFT_EXTERN int weft_endpoint_set_proxy_protocol(weft_endpoint *endpoint, unsigned versions,
                                                 const char *sources, double timeout);

/** The version of the PROXY header the connection came with (1 or 2), or 0 (none, or NULL).
 * Valid from build_protocol on. */
WEFT_EXTERN int weft_transport_proxy_version(weft_transport *transport);

/** The value of the first TLV of TYPE (WEFT_PROXY_TLV_ALPN, ..._AUTHORITY, ..._UNIQUE_ID, or
 * any other type) in the connection's version 2 header, with its length in *LEN (may be NULL),
 * or NULL (and *LEN 0) when there is none. The bytes are the transport's, valid until
 * connection_lost returns, and not NUL-terminated. */
WEFT_EXTERN const uint8_t *weft_transport_proxy_tlv(weft_transport *transport, unsigned type,
                                                    size_t *len);

/** One version 2 TLV to send (weft_proxy_header_write): TYPE, and LEN bytes at VALUE. */
typedef struct weft_proxy_tlv {
  uint8_t type;         /**< WEFT_PROXY_TLV_* or another type */
  const uint8_t *value; /**< LEN bytes (may be NULL when LEN is 0) */
  size_t len;           /**< at most 65535 */
} weft_proxy_tlv;

/** The sending side, for tests and for proxies written on weft: writes into OUT (SIZE bytes)
 * the PROXY header of VERSION (1 or 2) that announces a connection from SRC to DST (both IPv4
 * or both IPv6, ports included), with NTLVS TLVS (version 2 only), and stores its length in
 * *LEN. SRC and DST NULL write a v1 "PROXY UNKNOWN" line or a v2 LOCAL header. Send the header
 * as the very first bytes of the connection (before TLS). 16 + 36 + the TLVs' bytes (3 + len
 * each) always suffice for version 2, 108 for version 1. Errors: WEFT_EINVAL (a NULL OUT or
 * LEN, a bad version, one of SRC/DST NULL, mixed or other families, TLVs with version 1),
 * WEFT_ETOOLONG (SIZE too small, or more than 65535 bytes after the first 16). Any thread. */
WEFT_EXTERN int weft_proxy_header_write(unsigned version, const struct sockaddr *src,
                                        const struct sockaddr *dst, const weft_proxy_tlv *tlvs,
                                        size_t ntlvs, uint8_t *out, size_t size, size_t *len);

/* --- Admission: refusing a peer before any handshake ---------------------------------------- */

/** A listener's admission callback (weft_listener_set_peer_filter): PEER (PEER_LEN bytes) is
 * the address of a connection just accepted, or, behind the PROXY protocol, the address its
 * header carried. Return 0 to serve the connection, anything else to refuse it. Runs in the
 * reactor's thread, before any TLS handshake and before build_protocol; it may call any
 * listener function (stopping LISTENER too: the connection it was asked about is then still
 * served or refused as it answers). PEER is valid during the call. */
typedef int (*weft_peer_filter)(weft_listener *listener, const struct sockaddr *peer,
                                socklen_t peer_len, void *arg);

/** Sets (FILTER NULL: removes) the admission callback of LISTENER, called with ARG for every
 * connection accepted from now on. A refused connection is closed at once (no byte of it is
 * read, no TLS handshake starts) and the factory's handshake_failed gets WEFT_EPEERREFUSED.
 * Deny-lists, rate limits and the like need no TLS handshake first. Errors: WEFT_EINVAL (NULL
 * or stopped listener). Reactor thread. */
WEFT_EXTERN int weft_listener_set_peer_filter(weft_listener *listener, weft_peer_filter filter,
                                              void *arg);

/** At most MAX connections of LISTENER at once from one peer address (IPv4, or IPv6 as a full
 * 128-bit address; an IPv4-mapped IPv6 address counts as IPv4; ports do not matter; behind the
 * PROXY protocol, the header's address). MAX 0, the default, means no such limit. Another
 * connection from an address at its limit is refused as by the peer filter (which runs first):
 * closed at once, handshake_failed with WEFT_EPEERREFUSED. A connection counts from accept
 * until it is freed, like weft_listener_set_connection_limit; connections accepted while no
 * limit was set are not counted. Errors: WEFT_EINVAL (NULL or stopped listener). Reactor
 * thread. */
WEFT_EXTERN int weft_listener_set_per_address_limit(weft_listener *listener, unsigned max);

/** Server endpoint: the listener's per-address limit (weft_listener_set_per_address_limit; 0,
 * the default, means none). Errors: WEFT_EINVAL (NULL endpoint, a client endpoint). */
WEFT_EXTERN int weft_endpoint_set_per_address_limit(weft_endpoint *endpoint, unsigned max);

/* --- Unix domain sockets ------------------------------------------------------------------- */

/** Makes the endpoint a Unix domain stream socket at PATH instead of a host and port (NULL:
 * back to host and port). PATH is a file name, or "@name" for Linux's abstract namespace (no
 * file; elsewhere refused). Server: listens there. A socket file left by a process that died
 * (nobody accepts on it) is removed first; a live socket or any other file there makes
 * weft_endpoint_listen fail with WEFT_EADDRINUSE (nothing is deleted). The file is removed when
 * the listener stops, if it is still the one the listener bound. Client: connects there; with
 * TLS the name checked against the server certificate is the endpoint's server name, else the
 * options', else "localhost". TLS works the same as over TCP (weft_endpoint_set_tls). Connections
 * are transports like any other; their peer address is a struct sockaddr_un (usually unnamed:
 * weft_address_format prints "unix:" and the path when there is one).
 * Errors: WEFT_EINVAL (NULL endpoint, empty PATH, longer than sun_path allows, 107 bytes on
 * Linux), WEFT_ENOMEM. The string is copied. */
WEFT_EXTERN int weft_endpoint_set_unix_path(weft_endpoint *endpoint, const char *path);

/** Server with a Unix path: the permissions of the socket file (e.g. 0660), set before the
 * socket accepts anything; -1, the default, leaves what the umask gives. Ignored for abstract
 * names. Errors: WEFT_EINVAL (NULL or client endpoint, MODE outside -1..07777). */
WEFT_EXTERN int weft_endpoint_set_unix_mode(weft_endpoint *endpoint, int mode);

/** The credentials of the process at the other end of a Unix socket connection, as the kernel
 * recorded them when the connection was made (SO_PEERCRED): its process id, user id and group
 * id, each stored when its pointer is not NULL. Errors: WEFT_EINVAL (NULL transport),
 * WEFT_ECLOSED (the connection is closed), WEFT_ENOTSUP (not a Unix socket, or a system without
 * SO_PEERCRED). Reactor thread. */
WEFT_EXTERN int weft_transport_peer_credentials(weft_transport *transport, pid_t *pid, uid_t *uid,
                                                gid_t *gid);

/* --- Adopting descriptors: socket activation, inherited sockets ---------------------------- */

/** Server endpoint: serve a listening socket systemd passed at socket activation (or anything
 * that follows sd_listen_fds(3): LISTEN_PID is this process, LISTEN_FDS descriptors from fd 3
 * on, LISTEN_FDNAMES their names): the one at INDEX (0 is fd 3), or, when NAME is not NULL,
 * the one named NAME (FileDescriptorName=). FAMILY (AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC
 * for any) must match the socket's. weft_endpoint_listen checks the descriptor then and serves
 * a duplicate of it (the environment and the original descriptor are left as they are, so
 * several endpoints may use several sockets); it fails with WEFT_ENOTFOUND when this process
 * was given no such socket, WEFT_EINVAL when it is not a listening stream socket of FAMILY.
 * The endpoint's host, port and Unix path are then ignored; TLS options, limits, time-outs and
 * the PROXY protocol apply as usual. Description: `systemd:domain=INET|INET6|UNIX:index=N` (or
 * `:name=NAME`), as in Twisted. Errors: WEFT_EINVAL (NULL or client endpoint, INDEX outside
 * 0..4095, an unknown FAMILY, an empty NAME or one with ':'), WEFT_ENOMEM. */
WEFT_EXTERN int weft_endpoint_set_systemd(weft_endpoint *endpoint, int family, int index,
                                          const char *name);

/** Server endpoint: serve the listening socket FD the process inherited or made itself (-1,
 * the default: none). As for weft_endpoint_set_systemd, weft_endpoint_listen serves a
 * duplicate and FD stays the caller's. Errors: WEFT_EINVAL (NULL or client endpoint, FD below
 * -1). */
WEFT_EXTERN int weft_endpoint_set_fd(weft_endpoint *endpoint, int fd);

/** Serves the listening stream socket FD (TCP, TCP6 or Unix; bound and listening already, as
 * inherited from a parent or a supervisor) like weft_listen_tcp's listeners, TLS with OPTIONS
 * (NULL: plain). On success the listener owns the socket (FD itself is closed: the listener
 * works on a non-blocking duplicate); on failure FD stays the caller's, open. Errors:
 * WEFT_EINVAL (NULL argument, build_protocol missing, FD not a listening stream socket),
 * WEFT_ESHUTDOWN, WEFT_ENOMEM, those of weft_cert_options_prepare. Reactor thread. */
WEFT_EXTERN int weft_listener_adopt(weft_reactor *reactor, int fd, weft_factory *factory,
                                    weft_cert_options *options, weft_listener **out);

/** Wraps the connected stream socket FD (TCP or Unix; from socketpair, a parent, another
 * library) as a transport of FACTORY, in ROLE. Without OPTIONS the connection is ready at once:
 * build_protocol and connection_made run before this returns. With OPTIONS a TLS handshake in
 * ROLE starts (a client sends SERVER_NAME as SNI and checks it, else the options' name; with
 * neither, nothing is checked by name), and build_protocol follows from the loop when it is
 * done. A connection that ends before build_protocol is reported to the factory as a
 * listener's or a connector's would be: handshake_failed (server) or connection_failed
 * (client). On success the transport owns the socket (FD itself is closed: the transport works
 * on a non-blocking duplicate) and *OUT (may be NULL) receives it; on failure FD stays the
 * caller's, open, and nothing is called back. Errors: WEFT_EINVAL (NULL argument, a bad ROLE,
 * FD not a connected stream socket), WEFT_ESHUTDOWN, WEFT_ENOMEM, those of
 * weft_cert_options_prepare. Reactor thread. */
WEFT_EXTERN int weft_transport_adopt(weft_reactor *reactor, int fd, weft_factory *factory,
                                     weft_cert_options *options, weft_tls_role role,
                                     const char *server_name, weft_transport **out);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_ENDPOINT_H */
