/** @file
 * weft/timeout.h: idle time-outs (Twisted's TimeoutMixin), per connection and as a listener's
 * default for the connections it accepts.
 *
 * A connection is idle while nothing arrives from the peer and no output waits to be sent.
 * After SECONDS of that, weft closes it (TLS: close_notify first) and connection_lost follows
 * with the typed reason WEFT_EIDLE and the message "idle time-out: nothing received for N s".
 * A protocol that counts something else as activity (its own writes, say) calls
 * weft_transport_reset_idle_timeout.
 *
 * Cost: no timer per connection. Each reactor keeps one queue per distinct time-out value
 * (compared exactly), ordered by last activity, with one delayed call for its oldest member;
 * a connection holds only its place in the queue (32 bytes in the transport). A read stores
 * the time (a vDSO clock read) and moves the connection to the queue's tail; it never touches
 * libevent's timer heap. The queue's call, when it fires, closes what is due and re-arms for
 * the next, so a busy connection costs no timer operation of its own (bench/idle-timeout.c
 * measures it). The time-out follows the reactor's clock, so under weft/testing.h's test
 * clock it fires exactly when the test advances the clock past it.
 *
 * All functions: reactor thread.
 */
#ifndef WEFT_TIMEOUT_H
#define WEFT_TIMEOUT_H

#include <weft/endpoint.h>
#include <weft/transport.h>

#include <weft/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Closes TRANSPORT with WEFT_EIDLE once it has been idle for SECONDS (counted from this call;
 * 0 turns it off, the default unless the listener set one). Calling it again restarts the
 * count with the new value. Errors: WEFT_EINVAL (NULL, SECONDS negative, above 1e6 or not a
 * number), WEFT_ECLOSED (the connection is lost already), WEFT_ENOMEM (no memory for the queue
 * of a value no connection of this reactor uses yet: the connection is left without a
 * time-out). */
WEFT_EXTERN int weft_transport_set_idle_timeout(weft_transport *transport, double seconds);

/** The idle time-out in seconds (0: none, or NULL). */
WEFT_EXTERN double weft_transport_get_idle_timeout(weft_transport *transport);

/** Counts now as activity: the idle time-out starts again from now (Twisted's resetTimeout).
 * Costs a clock read. Errors: WEFT_EINVAL (NULL), WEFT_ECLOSED. */
WEFT_EXTERN int weft_transport_reset_idle_timeout(weft_transport *transport);

/** The idle time-out given to each connection LISTENER accepts from now on (0: none, the
 * default), set when the connection is ready (after a TLS handshake, which its own handshake
 * time-out bounds), before build_protocol: the protocol may change it.
 * Errors: WEFT_EINVAL (NULL, SECONDS negative, above 1e6 or not a number). */
WEFT_EXTERN int weft_listener_set_idle_timeout(weft_listener *listener, double seconds);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_TIMEOUT_H */
