/** @file
 * weft/testing.h: testing protocols without ports and without sleeps (Twisted's
 * StringTransport, Clock and loopback TLS pair).
 *
 *  - A test clock: weft_testing_reactor_new makes a reactor whose delayed calls
 *    (weft_reactor_call_later) and idle time-outs (weft/timeout.h) follow a clock that only
 *    weft_testing_clock_advance moves. They fire in due order, deterministically, however
 *    long the machine takes.
 *  - A testing transport: a real weft_transport with the protocol under test on one end, and
 *    the test on the other: it feeds the bytes the peer "sends", reads what the protocol
 *    wrote, closes the peer's side or ends the connection with any reason.
 *  - A connected pair: a client and a server transport, TCP or TLS (real OpenSSL handshakes,
 *    ALPN and NPN negotiated, certificates verified), each with its factory's protocol, driven
 *    step by step with weft_testing_pump.
 *
 * How: both ends of a connection are an AF_UNIX socketpair(2) inside the process, so no port
 * is bound, nothing leaves the process, and the transport under test is the very code that
 * runs in production (bufferevents, OpenSSL, the lifecycle rules). Peer addresses are AF_UNIX
 * without a path. The pieces data_received gets depend on the writes (one feed usually arrives
 * as one piece, not guaranteed: protocols must not rely on it; use weft/framing.h).
 *
 * What the test clock does not drive: the time-outs that libevent's own timers carry, which run
 * on the real monotonic clock even on a testing reactor. They are: the TLS handshake time-out
 * (weft_cert_options_set_handshake_timeout) and the close time-out of lose_connection (TCP and
 * TLS), the write time-out (weft_transport_set_write_timeout: libevent's bufferevent
 * time-outs), a connector's connect time-out and its DNS queries, the reconnecting factory's
 * back-off (weft/reconnect.h: libevent timers), the listener's accept back-off, and the
 * deadline of weft_reactor_run_until. Everything built on weft_reactor_call_later and the idle
 * time-out follows it.
 *
 * All functions: the reactor's thread. Errors are negative WEFT_E* codes.
 */
#ifndef WEFT_TESTING_H
#define WEFT_TESTING_H

#include <stddef.h>
#include <stdint.h>

#include <weft/protocol.h>
#include <weft/reactor.h>
#include <weft/transport.h>

#include <weft/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- the test clock ---------------------------------------------------------------------- */

/** Creates a reactor (like weft_reactor_new) whose clock is the test clock, at 0 s. Free it
 * with weft_reactor_free. Errors: WEFT_EINVAL (OUT NULL), WEFT_ENOMEM. */
WEFT_EXTERN int weft_testing_reactor_new(weft_reactor **out);

/** Moves the test clock SECONDS (0 or more) forward, running every delayed call that falls
 * due on the way, in due order (ties in the order they were scheduled), each with the clock set
 * to its due time; calls scheduled by those calls run too if they fall due within the window.
 * Then runs the reactor's ready events (weft_testing_pump), so what the calls started (a close,
 * a write) has happened when it returns. Returns the number of calls run, or WEFT_EINVAL (NULL,
 * not a testing reactor, SECONDS negative or not finite), WEFT_EBUSY (from a callback inside
 * weft_reactor_run). */
WEFT_EXTERN int weft_testing_clock_advance(weft_reactor *reactor, double seconds);

/** The test clock's time in seconds (0 at creation); -1 for NULL or a reactor without it. */
WEFT_EXTERN double weft_testing_clock_now(weft_reactor *reactor);

/** Runs the reactor's ready events without waiting, pass after pass (a bounded number, enough
 * for a TLS handshake over the socketpair to complete), so that bytes written on one end have
 * been delivered on the other, and closes completed. Returns 0, WEFT_EINVAL (NULL), WEFT_EBUSY
 * (from a callback inside weft_reactor_run). Works on any reactor. */
WEFT_EXTERN int weft_testing_pump(weft_reactor *reactor);

/* --- a testing transport (StringTransport) ---------------------------------------------- */

/** A connection whose peer is the test (opaque, owned by the test). */
typedef struct weft_testing_transport weft_testing_transport;

/** Creates a plain (TCP-like) connection and builds its protocol with FACTORY at once: its
 * build_protocol and connection_made have run when this returns (if FACTORY refuses, *OUT is
 * still created and weft_testing_transport_get returns NULL). Errors: WEFT_EINVAL, WEFT_ENOMEM,
 * WEFT_ESOCKET (socketpair failed; sys_errno lost). */
WEFT_EXTERN int weft_testing_transport_new(weft_reactor *reactor, weft_factory *factory,
                                           weft_testing_transport **out);

/** The protocol's transport; NULL once connection_lost ran (or if the factory refused). */
WEFT_EXTERN weft_transport *weft_testing_transport_get(weft_testing_transport *tt);

/** Sends LEN bytes as the peer and pumps the reactor, so data_received has seen them (unless
 * the protocol paused reading). Errors: WEFT_EINVAL, WEFT_ECLOSED (after peer_close),
 * WEFT_EIO (the socketpair refused the bytes: more than its buffer holds while the protocol
 * does not read; feed less at a time). */
WEFT_EXTERN int weft_testing_transport_feed(weft_testing_transport *tt, const void *data,
                                            size_t len);

/** Pumps the reactor, then returns how many bytes the protocol wrote that the test has not
 * cleared, and in *DATA (if not NULL) where they are (valid until the next call on TT). */
WEFT_EXTERN size_t weft_testing_transport_output(weft_testing_transport *tt, const uint8_t **data);

/** Forgets the output read so far (weft_testing_transport_output then starts from empty). */
WEFT_EXTERN void weft_testing_transport_clear(weft_testing_transport *tt);

/** The peer closes its sending side (TCP FIN): the protocol's read_eof runs, or the
 * connection closes with WEFT_OK. Pumps. Errors: WEFT_EINVAL, WEFT_ECLOSED (already). */
WEFT_EXTERN int weft_testing_transport_peer_close(weft_testing_transport *tt);

/** Ends the connection now with the reason CODE (a WEFT_E* code, or WEFT_OK) and MESSAGE (NULL:
 * weft_strerror(CODE)), as if the network had failed that way; connection_lost follows with
 * that reason, from the pump this call runs. Errors: WEFT_EINVAL, WEFT_ECLOSED (lost already). */
WEFT_EXTERN int weft_testing_transport_close(weft_testing_transport *tt, int code,
                                             const char *message);

/** 1 once connection_lost ran (or the factory refused), with the reason's code in *CODE (if not
 * NULL); 0 while the connection lives. */
WEFT_EXTERN int weft_testing_transport_lost(weft_testing_transport *tt, int *code);

/** Frees TT. A connection still alive is aborted (connection_lost with WEFT_EABORTED runs from
 * the reactor loop, or when the reactor is freed). NULL is ignored. */
WEFT_EXTERN void weft_testing_transport_free(weft_testing_transport *tt);

/* --- a connected pair ------------------------------------------------------------------- */

/** A client and a server connected to each other (opaque, owned by the test). */
typedef struct weft_testing_pair weft_testing_pair;

/** Connects a client built by CLIENT and a server built by SERVER. With CLIENT_TLS and
 * SERVER_TLS both NULL the pair is plain, and both protocols are built before this returns.
 * With both set, the TLS handshake runs (real OpenSSL, the options' certificates, verification,
 * ALPN/NPN lists) as the reactor is pumped: each side's build_protocol runs when its
 * handshake completed; a failed handshake reaches CLIENT's connection_failed and SERVER's
 * handshake_failed, as over a socket. SERVER_NAME is the client's SNI and verification name
 * (NULL: the options' name). Options are referenced. Errors: WEFT_EINVAL (NULL argument, one
 * TLS option set without the other), WEFT_ENOMEM, WEFT_ESOCKET, WEFT_ETLS. */
WEFT_EXTERN int weft_testing_pair_new(weft_reactor *reactor, weft_factory *client,
                                      weft_factory *server, weft_cert_options *client_tls,
                                      weft_cert_options *server_tls, const char *server_name,
                                      weft_testing_pair **out);

/** The client's (ROLE WEFT_TLS_CLIENT) or the server's transport: NULL before it is ready and
 * after its connection_lost. */
WEFT_EXTERN weft_transport *weft_testing_pair_transport(weft_testing_pair *pair,
                                                        weft_tls_role role);

/** 1 once ROLE's side ended (connection_lost ran, or its handshake failed), with the reason's
 * code in *CODE (if not NULL); 0 while it lives. */
WEFT_EXTERN int weft_testing_pair_ended(weft_testing_pair *pair, weft_tls_role role, int *code);

/** Frees PAIR; live connections are aborted as by weft_testing_transport_free. NULL is
 * ignored. */
WEFT_EXTERN void weft_testing_pair_free(weft_testing_pair *pair);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_TESTING_H */
