/** @file
 * weft/reconnect.h: a client that keeps its connection up, like Twisted's
 * ReconnectingClientFactory.
 *
 * A reconnector connects where a client weft_endpoint says (TCP, or TLS) with the user's
 * factory and, whenever an
 * attempt fails or an established connection ends, waits and tries again. The wait starts at
 * initial_delay, is multiplied by factor after each retry up to max_delay, is spread by a random
 * jitter, and goes back to initial_delay once a connection is made. With max_retries set, it
 * gives up after that many retries in a row without a connection.
 *
 * What the user's factory and protocols see is what they would see with weft_connect_tcp /
 * weft_connect_ssl, once per attempt:
 *  - build_protocol builds each connection's protocol; connection_made, data_received, ...,
 *    connection_lost reach that protocol as usual (protocol.h, rules 1 to 4 and 7);
 *  - connection_failed is called for EVERY failed attempt, with that attempt's reason (as
 *    Twisted's clientConnectionFailed), including the last one before giving up. By then the
 *    next step is decided: the state is WEFT_RECONNECT_WAITING (or _STOPPED on a give-up), and
 *    retries and current delay are updated; stopping here cancels the retry;
 *  - a connection that build_protocol refuses (returns NULL) counts as a failed attempt, but
 *    connection_failed is not called for it (protocol.h rule 1): on_retry and on_give_up get
 *    WEFT_EREFUSED;
 *  - the reconnector's own events (a retry was scheduled, it gave up) go to the optional
 *    on_retry and on_give_up callbacks of weft_reconnect_options.
 *
 * How the reconnector learns that a connection ended: it owns the connection inside weft and
 * hears of its end once your protocol's connection_lost has returned; it never touches your
 * protocol or its OPS table. So your protocol is entirely yours: you may assign a new table to
 * OPS at any time (protocol.h rule 8), from a callback or from a delayed call. Do not hand the
 * same protocol object to two live connections (one protocol per connection, as always).
 *
 * Ownership and lifecycle (numbered so the docs can refer to them):
 *  1. A reconnector belongs to the library, but only the user ends it: weft_reconnector_free
 *     must be called for every reconnector weft_reconnect_start made, also after a give-up.
 *  2. Either order works: free the reconnectors before weft_reactor_free, or after it (a
 *     reconnector whose reactor is freed stops itself, in any state, and weft_reconnector_free
 *     then only releases its memory). Call no other reconnector function after its reactor is
 *     gone.
 *  3. The factory, and the certificate options' owner, are the user's; the factory must outlive
 *     the reconnector and every connection it made. The endpoint's settings are copied and its TLS
 *     options referenced (and frozen by the first attempt) by weft_reconnect_start, so the
 *     caller may free the endpoint and unref the options right after it.
 *  4. Stopping (weft_reconnector_stop, weft_reconnector_free, or a give-up) ends the retrying:
 *     the pending wait or attempt is cancelled without any callback (no connection_failed for a
 *     cancelled attempt). A live connection is left alone: its protocol keeps getting its
 *     callbacks until connection_lost, after which nothing is retried.
 *  5. weft_reactor_free cutting an attempt or a connection (WEFT_ESHUTDOWN, reported to the
 *     factory or protocol as usual) stops the reconnector without on_give_up.
 *
 * Threading: everything here runs in, and must be called from, the reactor's thread. Every
 * function below may be called from any weft callback, including the reconnector's own
 * (weft_reconnector_free too).
 */
#ifndef WEFT_RECONNECT_H
#define WEFT_RECONNECT_H

#include <weft/common.h>

#include <stddef.h>
#include <stdint.h>

#include <weft/endpoint.h>
#include <weft/error.h>
#include <weft/protocol.h>
#include <weft/reactor.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Defined when weft_reconnect_start exists (for code that must build with older weft). */
#define WEFT_HAVE_RECONNECT 1

/** A reconnecting client (opaque; weft_reconnect_start makes it, weft_reconnector_free ends it). */
typedef struct weft_reconnector weft_reconnector;

/** How a reconnector waits and retries, and whom it tells (where and how it connects is the
 * client endpoint given to weft_reconnect_start). The caller allocates it, so it follows the
 * size rule of the weft 1.0 ABI: fill it with weft_reconnect_options_init first (which sets
 * SIZE and the defaults), then change the fields you need. Members are only ever appended in
 * later versions; the library reads one added after 1.0 only when SIZE covers it. SIZE 0 (what a
 * designated initializer leaves) means the 1.0 layout, as does any SIZE smaller than it; a SIZE
 * larger than this library knows (a program built against newer headers) is accepted and the
 * tail ignored. */
typedef struct weft_reconnect_options {
  size_t size;          /**< sizeof(weft_reconnect_options), or 0 for the 1.0 layout */
  double initial_delay; /**< seconds before the first retry after a failure or a lost
                               connection (default 1.0; > 0) */
  double factor;        /**< the delay is multiplied by this after each retry (default
                               2.7182818, e; >= 1) */
  double jitter;        /**< relative spread of each wait: a delay D waits a uniformly random
                               time in [D * (1 - jitter), D * (1 + jitter)], at most max_delay
                               (default 0.11962656; 0 to 1; 0: exact waits) */
  double max_delay;     /**< cap on the delay and on every wait (default 3600; from
                               initial_delay to 1e9) */
  int max_retries;      /**< give up after this many retries in a row without a connection
                               made, i.e. after max_retries + 1 failed attempts from the start
                               (0: never give up; default 0; >= 0) */
  uint64_t seed;        /**< seed of the jitter's random generator, so tests can repeat a
                               sequence of waits (default 0: seeded from the clock) */

  /** Optional. A retry was scheduled: the next attempt starts in DELAY seconds (jitter
   * included). REASON is why the previous attempt failed or the connection ended (WEFT_OK for
   * a clean close; WEFT_EREFUSED when build_protocol refused the connection); it is valid only
   * during the call. Runs after the factory's connection_failed or the protocol's
   * connection_lost. Calling weft_reconnector_stop or _free here cancels that retry. */
  void (*on_retry)(weft_reconnector *rc, double delay, const weft_reason *reason, void *user_data);
  /** Optional. The reconnector gave up: max_retries retries in a row failed (REASON is the last
   * attempt's, already given to connection_failed), or the next attempt could not be scheduled
   * (WEFT_ENOMEM). Called at most once; the reconnector is stopped (rule 4) but must still be
   * freed, which may be done here. */
  void (*on_give_up)(weft_reconnector *rc, const weft_reason *reason, void *user_data);
  void *user_data; /**< passed to on_retry and on_give_up */
} weft_reconnect_options;

/** Where a reconnector is. */
typedef enum weft_reconnect_state {
  WEFT_RECONNECT_CONNECTING = 0, /**< an attempt is under way (TCP connect, TLS handshake) */
  WEFT_RECONNECT_CONNECTED = 1,  /**< its connection is live (from build_protocol until
                                      connection_lost returns), also after a stop */
  WEFT_RECONNECT_WAITING = 2,    /**< waiting for the next attempt */
  WEFT_RECONNECT_STOPPED = 3     /**< stopped, gave up, or cut by reactor shutdown, and no
                                      connection of its own is live */
} weft_reconnect_state;

/** Fills OPTIONS with the defaults noted above (Twisted's ReconnectingClientFactory values)
 * and sets its SIZE to sizeof(weft_reconnect_options) of these headers. NULL is ignored. Any
 * thread. */
WEFT_EXTERN void weft_reconnect_options_init(weft_reconnect_options *options);

/** Starts a reconnector: connects at once as the client ENDPOINT says (host, port, TLS options,
 * server name, connect time-out and bind address, as weft_endpoint_connect; all copied now, and
 * the TLS options referenced, so the endpoint may be freed or changed right after) and keeps
 * reconnecting as described at the top of this file. FACTORY is the user's and must have
 * build_protocol. OPTIONS NULL means the defaults. Stores the reconnector in *OUT; the first
 * attempt's outcome, like every later one, comes from the reactor loop, never from inside this
 * call.
 * Errors (nothing is started and no callback follows): WEFT_EINVAL (NULL reactor, endpoint,
 * factory or OUT, a server endpoint, an endpoint without host or port, no build_protocol, an
 * option out of its range or not finite), the errors of weft_cert_options_prepare when the
 * endpoint's TLS options cannot make a client context (WEFT_EINVAL, WEFT_ETLS...;
 * weft_cert_options_last_error says why), WEFT_ESHUTDOWN (the reactor is being freed),
 * WEFT_ENOMEM. */
WEFT_EXTERN int weft_reconnect_start(weft_reactor *reactor, const weft_endpoint *endpoint,
                                     weft_factory *factory, const weft_reconnect_options *options,
                                     weft_reconnector **out);

/** Stops retrying (rule 4, as Twisted's stopTrying): cancels the pending wait or attempt without
 * callbacks and leaves a live connection alone; nothing is retried after it ends. Stopping is
 * final; calling it again does nothing. Returns 0, or WEFT_EINVAL for NULL. */
WEFT_EXTERN int weft_reconnector_stop(weft_reconnector *rc);

/** Stops the reconnector (as weft_reconnector_stop) and frees it. A live connection lives on
 * with its protocol until connection_lost (close it through its transport if it must end).
 * Safe from any callback, including the reconnector's own. NULL is ignored. */
WEFT_EXTERN void weft_reconnector_free(weft_reconnector *rc);

/** Where the reconnector is (see weft_reconnect_state). WEFT_RECONNECT_STOPPED for NULL. */
WEFT_EXTERN weft_reconnect_state weft_reconnector_state(const weft_reconnector *rc);

/** Retries made in a row since the start or the last connection made: 0 while the first attempt
 * runs or a connection is live, 1 once the first retry is scheduled, ... (a lost connection
 * counts as the first failure of a new series). -1 for NULL. */
WEFT_EXTERN int weft_reconnector_retries(const weft_reconnector *rc);

/** The delay, in seconds and before jitter, that the next retry will wait: initial_delay after
 * the start and after every connection made, then multiplied by factor with each retry
 * scheduled, up to max_delay. -1 for NULL. */
WEFT_EXTERN double weft_reconnector_current_delay(const weft_reconnector *rc);

/** The transport of the reconnector's live connection (from build_protocol until
 * connection_lost returns), or NULL. */
WEFT_EXTERN weft_transport *weft_reconnector_transport(const weft_reconnector *rc);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_RECONNECT_H */
