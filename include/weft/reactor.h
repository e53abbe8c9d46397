/** @file
 * weft/reactor.h: the reactor, delayed calls, and the one thread-safe entry point.
 *
 * A reactor wraps a libevent event_base. It either owns it (weft_reactor_new) or borrows one the
 * application already runs (weft_reactor_new_with_base), so weft can be embedded into an
 * existing libevent program.
 *
 * Rules:
 *  1. One reactor belongs to one thread: every weft function that takes a reactor, or an object
 *     made by one (listener, connector, transport, delayed call), must be called from the thread
 *     that runs the reactor. The exceptions are weft_reactor_call_from_thread() and
 *     weft_reactor_stop(), which may be called from any thread while the reactor exists.
 *  2. Reactors, listeners, connectors, transports and delayed calls belong to the library.
 *     Factories, protocols and certificate options belong to the user.
 *  3. A function that fails returns a negative WEFT_E* code and never calls the callback it was
 *     given.
 *  4. Creating a reactor sets SIGPIPE to ignored if it still has its default action, so a write
 *     to a closed socket never kills the process.
 */
#ifndef WEFT_REACTOR_H
#define WEFT_REACTOR_H

#include <weft/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;

/** A reactor: the event loop of one thread (opaque, owned by the library). */
typedef struct weft_reactor weft_reactor;
/** A call scheduled by weft_reactor_call_later (opaque, owned by the library). */
typedef struct weft_delayed_call weft_delayed_call;

/** A plain callback with the user's pointer. */
typedef void (*weft_callback)(void *arg);

/** Creates a reactor that owns a new event_base. On success stores it in *OUT and returns 0.
 * Errors: WEFT_EINVAL (OUT is NULL), WEFT_ENOMEM. Any thread; the reactor then belongs to the
 * thread that runs it. */
WEFT_EXTERN int weft_reactor_new(weft_reactor **out);

/** Creates a reactor on BASE, an event_base the application owns and runs itself (for example
 * with event_base_dispatch). The reactor never frees BASE; free the reactor before BASE.
 * weft_reactor_run() may still be used, or the application's own loop may drive weft.
 * Errors: WEFT_EINVAL (NULL argument), WEFT_ENOMEM. */
WEFT_EXTERN int weft_reactor_new_with_base(struct event_base *base, weft_reactor **out);

/** Returns the reactor's event_base (owned or borrowed). */
WEFT_EXTERN struct event_base *weft_reactor_event_base(weft_reactor *reactor);

/** Runs the event loop until weft_reactor_stop() is called. Returns 0 after a stop, or WEFT_EIO
 * if libevent reported an error. Calling it from a callback of the same reactor returns
 * WEFT_EBUSY. A stop requested before run is honoured by the next run, which returns at once. */
WEFT_EXTERN int weft_reactor_run(weft_reactor *reactor);

/** Runs the loop until PREDICATE(ARG) returns non-zero or TIMEOUT seconds pass (TIMEOUT <= 0:
 * no limit). PREDICATE is checked before each wait and after each pass of the loop (the
 * events that were ready together all run before the next check). Returns 0 when the
 * predicate held, WEFT_ETIMEDOUT at the deadline, WEFT_ECANCELED if weft_reactor_stop() was
 * called first, WEFT_EBUSY when called from a callback of this reactor, WEFT_EINVAL when
 * PREDICATE is NULL. Intended for tests and for clients that wait for one result. */
WEFT_EXTERN int weft_reactor_run_until(weft_reactor *reactor, int (*predicate)(void *arg),
                                       void *arg, double timeout);

/** Asks weft_reactor_run / weft_reactor_run_until to return. Safe from any thread and from
 * callbacks (it sets a flag and wakes the loop through the reactor's wake-up pipe). On a
 * borrowed event_base it also breaks the application's own event_base_dispatch once
 * (event_base_loopbreak). Returns 0, or WEFT_ENOMEM when the
 * cross-thread request could not be queued. */
WEFT_EXTERN int weft_reactor_stop(weft_reactor *reactor);

/** Frees the reactor: closes every transport (each protocol gets connection_lost with
 * WEFT_ESHUTDOWN, a TLS client still in its handshake connection_failed), then cancels every
 * pending connector (each gets connection_failed with WEFT_ESHUTDOWN), then stops every
 * listener: a connection_lost or connection_failed run here may still stop a listener or
 * cancel a pending connector, and starts nothing new (WEFT_ESHUTDOWN). It cancels delayed
 * calls without running them and
 * drops pending call_from_thread requests, sends close_notify on open TLS connections, then
 * runs one non-blocking pass of the loop so libevent can finish freeing what it deferred (on
 * a borrowed event_base that pass may also run the application's own ready events). Frees
 * the event_base if the reactor owns it.
 * Must not be called from a callback of this reactor. NULL is ignored. */
WEFT_EXTERN void weft_reactor_free(weft_reactor *reactor);

/** Schedules FN(ARG) to run once, SECONDS from now (0 or more, finite). If OUT is not NULL it
 * receives a handle valid until FN starts running or the call is cancelled. Timing follows
 * libevent's clock (CLOCK_MONOTONIC_COARSE on Linux, and epoll_wait's millisecond time-out):
 * FN may run up to one clock tick (a few milliseconds) early as measured with CLOCK_MONOTONIC,
 * and later under load; the reactor does not pay a system call per loop iteration for a finer
 * timer.
 * Errors: WEFT_EINVAL (NULL reactor or FN, negative or non-finite SECONDS), WEFT_ENOMEM. */
WEFT_EXTERN int weft_reactor_call_later(weft_reactor *reactor, double seconds, weft_callback fn,
                                        void *arg, weft_delayed_call **out);

/** Cancels a delayed call that has not run yet and frees it; the handle is invalid afterwards.
 * Returns 0, or WEFT_EINVAL for NULL. */
WEFT_EXTERN int weft_delayed_call_cancel(weft_delayed_call *call);

/** Reschedules a delayed call that has not run yet to run SECONDS from now. Returns 0, or
 * WEFT_EINVAL (NULL call, negative or non-finite SECONDS). */
WEFT_EXTERN int weft_delayed_call_reset(weft_delayed_call *call, double seconds);

/** Queues FN(ARG) to run in the reactor's thread, soon. Safe to call from any thread (with
 * weft_reactor_stop, the only reactor function that is; pure helpers such as weft_strerror,
 * weft_address_format and the key/certificate functions are thread-safe too). Not
 * async-signal-safe: from a signal handler, use a libevent signal event instead. Calls queued
 * from one thread run in the order they were queued. Returns 0,
 * WEFT_EINVAL (NULL argument) or WEFT_ENOMEM. Calls still queued when the reactor is freed are
 * dropped without running. */
WEFT_EXTERN int weft_reactor_call_from_thread(weft_reactor *reactor, weft_callback fn, void *arg);

/** Replaces the name servers the reactor's asynchronous resolver uses (by default those of
 * /etc/resolv.conf; /etc/hosts is always consulted first). SERVERS is a comma-separated list of
 * "IP" or "IP:PORT". Errors: WEFT_EINVAL (NULL or unparsable list), WEFT_ENOMEM. */
WEFT_EXTERN int weft_reactor_set_nameservers(weft_reactor *reactor, const char *servers);

/** Returns the number of live transports the reactor owns (connections from connection_made
 * until connection_lost returns, plus TLS connections still in their handshake). */
WEFT_EXTERN unsigned weft_reactor_connection_count(weft_reactor *reactor);

/** Makes SIGINT and SIGTERM stop the reactor cleanly, as Twisted's reactor does: the signal
 * makes weft_reactor_run return 0 (through libevent signal events on the reactor's event_base,
 * so the handler itself does nothing unsafe), and the program then frees the reactor, which
 * closes every connection (connection_lost with WEFT_ESHUTDOWN). The signals stay handled this
 * way until the reactor is freed, which restores their previous handlers.
 * One reactor per process may own the signals (libevent delivers signals to one event_base at
 * a time): typically the main thread's. In a multi-threaded server, let that reactor's thread
 * stop the others (weft_reactor_stop is safe from any thread). On a borrowed event_base the
 * signal events count as pending events for the application's own event_base_dispatch.
 * Returns 0 (also when this reactor already owns the signals), WEFT_EBUSY (another reactor of
 * the process owns them), WEFT_EINVAL (NULL reactor), WEFT_ESHUTDOWN (called from a callback
 * run by weft_reactor_free, which has given the signals back already), WEFT_ENOMEM or WEFT_EIO
 * (libevent could not add the signal events). Reactor thread. */
WEFT_EXTERN int weft_reactor_stop_on_signals(weft_reactor *reactor);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_REACTOR_H */
