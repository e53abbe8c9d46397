/** @file
 * weft/protocol.h: the callbacks users write. A factory builds one protocol per connection; the
 * protocol reacts to the connection's events.
 *
 * Ownership: factories and protocols belong to the user. A factory must outlive every listener
 * and connector that uses it, and every protocol it built. weft never frees a protocol: free it
 * (or return it to a pool) in connection_lost, the last callback a protocol receives.
 *
 * Lifecycle of one connection (numbered so the docs can refer to them):
 *  1. build_protocol is called once the connection is ready for application data: for TCP when
 *     it is established, for TLS after the handshake (so the negotiated next protocol is known).
 *     It may return NULL to refuse: the connection is then closed and no protocol callback runs
 *     (on a client, the connection attempt counts as done: no connection_failed either).
 *  2. connection_made is called once, right after build_protocol returned the protocol. This
 *     holds even if build_protocol closed the transport itself (lose or abort): the protocol it
 *     returned then gets connection_made (writes fail with WEFT_ECLOSED) and connection_lost,
 *     so that it is released in connection_lost like any other.
 *  3. data_received is called zero or more times with the bytes that arrived, in order.
 *  4. connection_lost is called exactly once for every connection_made, whatever ends the
 *     connection (peer close, reset, error, lose/abort, reactor free). After it returns the
 *     transport is invalid.
 *  5. A client connection that never becomes ready (refused, unresolvable, timed out, TLS
 *     handshake or verification failure, cancelled, reactor freed) gets connection_failed on its
 *     factory exactly once, and nothing else. One TLS 1.3 case differs by the protocol's
 *     design: a client's handshake completes before the server has checked the client's
 *     certificate, so a client whose certificate the server rejects gets connection_made, then
 *     connection_lost with the server's alert (WEFT_ENOPEERCERT or WEFT_ECERTVERIFY).
 *  6. A server-side TLS connection whose handshake fails never builds a protocol; the optional
 *     handshake_failed callback of the listener's factory is told the peer address and why.
 *  7. weft never calls connection_lost from inside a weft function the protocol called (lose,
 *     abort, write...): it always runs later, from the reactor loop, so the protocol may go on
 *     using its own state after such a call.
 *  8. weft never changes a protocol's OPS: it reads the table through the pointer at every
 *     call, so the protocol may point OPS at another table at any time (from a callback or
 *     not); the next callback, connection_lost included, goes to the new table.
 *
 * All callbacks run in the reactor's thread. Any weft call on the transport is allowed inside a
 * callback, including lose_connection, abort_connection and weft_reactor_stop.
 */
#ifndef WEFT_PROTOCOL_H
#define WEFT_PROTOCOL_H

#include <weft/common.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <weft/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A connection, TCP or TLS, as its protocol sees it (see weft/transport.h). */
typedef struct weft_transport weft_transport;
/** A protocol instance (see struct weft_protocol below). */
typedef struct weft_protocol weft_protocol;
/** A factory (see struct weft_factory below). */
typedef struct weft_factory weft_factory;

/** The protocol's callbacks. Every member may be NULL except where noted. Usually a static
 * const table with designated initializers (SIZE left 0). It follows the size rule of weft's ABI (see "API and ABI stability" in the guide): SIZE 0,
 * what a designated initializer leaves, means the 1.0 layout; members are only ever appended,
 * and the library reads one added after 1.0 only when SIZE (set it to sizeof the struct to use
 * them) covers it. A SIZE larger than the library knows (a program built against newer headers
 * running with an older library) is accepted and the tail ignored; one smaller than the 1.0
 * layout is read as 0. */
typedef struct weft_protocol_ops {
  size_t size; /**< 0 (the 1.0 layout) or sizeof(weft_protocol_ops) */
  /** The connection is ready. The transport is valid until connection_lost returns. */
  void (*connection_made)(weft_protocol *protocol, weft_transport *transport);
  /** LEN (> 0) bytes arrived. DATA is valid only during the call. */
  void (*data_received)(weft_protocol *protocol, weft_transport *transport, const uint8_t *data,
                        size_t len);
  /** TCP only: the peer closed its write side. If this member is NULL, or it returns 0, weft
   * closes the connection (connection_lost follows with WEFT_OK). If it returns non-zero the
   * connection stays open for writing (half-close), and the protocol closes it when done. TLS
   * connections never get it: the peer's close_notify ends the connection (WEFT_OK). */
  int (*read_eof)(weft_protocol *protocol, weft_transport *transport);
  /** Pending output fell to the low-water mark (see weft_transport_set_write_low_water) after
   * having been above it: a producer that paused may write again. */
  void (*write_drained)(weft_protocol *protocol, weft_transport *transport);
  /** A TLS handshake started by weft_transport_start_tls completed (STATUS 0) or failed (STATUS
   * < 0; the connection is then closed and connection_lost follows with the reason, whose code
   * is STATUS). Every weft_transport_start_tls that returned 0 gets exactly one tls_started,
   * before connection_lost, whatever ends the handshake: the peer's reset or EOF, a handshake
   * failure, the handshake or close time-out, lose_connection, abort_connection (STATUS
   * WEFT_EABORTED) or weft_reactor_free (WEFT_ESHUTDOWN). Like connection_lost it never runs
   * from inside the weft call that ended the connection (rule 7). */
  void (*tls_started)(weft_protocol *protocol, weft_transport *transport, int status);
  /** The connection ended; REASON->code is WEFT_OK for a clean close. Always the last call. */
  void (*connection_lost)(weft_protocol *protocol, weft_transport *transport,
                          const weft_reason *reason);
} weft_protocol_ops;

/** A protocol instance. Embed it (usually as the first member) in your own per-connection
 * struct, set OPS, and return it from build_protocol. Frozen: these two members are all it will
 * ever have (new callbacks go into weft_protocol_ops), so it has no SIZE. */
struct weft_protocol {
  const weft_protocol_ops *ops; /**< the protocol's callbacks */
  void *data;                   /**< free for the user */
};

/** A factory. The user allocates and fills it; weft reads it. It follows the size rule of weft's ABI (see "API and ABI stability" in the guide): SIZE 0,
 * what a designated initializer leaves, means the 1.0 layout; members are only ever appended,
 * and the library reads one added after 1.0 only when SIZE (set it to sizeof the struct to use
 * them) covers it. A SIZE larger than the library knows (a program built against newer headers
 * running with an older library) is accepted and the tail ignored; one smaller than the 1.0
 * layout is read as 0. */
struct weft_factory {
  size_t size; /**< 0 (the 1.0 layout) or sizeof(weft_factory) */
  /** Required. Builds the protocol for a connection that is ready. PEER is the remote address,
   * TRANSPORT the new connection (its accessors, such as weft_transport_next_protocol, already
   * work; do not write before connection_made). Return NULL to refuse the connection. */
  weft_protocol *(*build_protocol)(weft_factory *factory, weft_transport *transport,
                                   const struct sockaddr *peer);
  /** Client factories: the connection attempt failed for REASON. Called exactly once per failed
   * attempt, never after connection_made. May be NULL. */
  void (*connection_failed)(weft_factory *factory, const weft_reason *reason);
  /** Server factories: a connection from PEER ended before build_protocol. With TLS, its
   * handshake failed for REASON; with TLS or TCP, the accepted connection could not be set up
   * (REASON->code WEFT_ENOMEM: memory ran out, the connection was closed). May be NULL. */
  void (*handshake_failed)(weft_factory *factory, const struct sockaddr *peer,
                           const weft_reason *reason);
  void *data; /**< free for the user */
};

/* --- Dispatch by negotiated protocol ----------------------------------------------------- */

/** Defined when weft_dispatch_factory_new exists (for code that must build with older weft). */
#define WEFT_HAVE_DISPATCH 1

/** One route of a dispatch factory: connections that negotiated PROTOCOL (a NUL-terminated
 * name, compared byte for byte) go to FACTORY. Frozen: it never gains a member (an array of
 * them is passed with its count, so its size is part of the ABI). */
typedef struct weft_dispatch_entry {
  const char *protocol;  /**< the negotiated protocol's name, NUL-terminated */
  weft_factory *factory; /**< the factory that builds the protocol for those connections */
} weft_dispatch_entry;

/** Creates a factory that hands each connection to the factory of its negotiated next protocol
 * (see weft_transport_next_protocol): its build_protocol calls the chosen factory's
 * build_protocol. Connections that negotiated nothing, or a protocol with no entry, go to
 * FALLBACK; with FALLBACK NULL they are refused. connection_failed and handshake_failed are
 * passed to FALLBACK (if it has them). ENTRIES are copied; the factories they name, and
 * FALLBACK, stay the user's and must outlive the dispatch factory.
 * Errors: WEFT_EINVAL (OUT NULL, ENTRIES NULL with COUNT > 0, an entry with a NULL or empty
 * protocol, a NULL factory or one without build_protocol), WEFT_ENOMEM. Any thread. */
WEFT_EXTERN int weft_dispatch_factory_new(const weft_dispatch_entry *entries, size_t count,
                                          weft_factory *fallback, weft_factory **out);

/** Frees a factory made by weft_dispatch_factory_new, once no listener or connector uses it
 * and no connection it dispatched is still being built. NULL is ignored. */
WEFT_EXTERN void weft_dispatch_factory_free(weft_factory *factory);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_PROTOCOL_H */
