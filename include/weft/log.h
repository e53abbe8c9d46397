/** @file
 * weft/log.h: a per-reactor log callback, for what weft does not report through callbacks.
 *
 * weft reports every connection's end through connection_lost, connection_failed and
 * handshake_failed. Some things have no such callback: a listener that pauses accepting
 * because the process ran out of descriptors (EMFILE/ENFILE) and resumes, an accept that
 * failed, a connection cut by its idle time-out (also reported in connection_lost), a producer
 * that could not read its file. Those go to the reactor's log callback, if one is set:
 * weft is silent by default and never writes to stdout or stderr itself.
 *
 * Messages are one line, without a trailing newline, in English; their wording may change
 * between versions (do not parse them: the typed reasons are the API).
 * Threading: the callback runs in the reactor's thread, from inside weft: it must not free the
 * reactor; it may call any other weft function.
 */
#ifndef WEFT_LOG_H
#define WEFT_LOG_H

#include <weft/reactor.h>

#include <weft/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Log levels, most severe first. */
typedef enum weft_log_level {
  WEFT_LOG_ERROR = 0,   /**< something failed that weft could not report otherwise */
  WEFT_LOG_WARNING = 1, /**< weft degraded its service (e.g.\ accepting paused: no descriptors) */
  WEFT_LOG_INFO = 2,    /**< a notable event (accepting resumed, an idle connection cut) */
  WEFT_LOG_DEBUG = 3    /**< detail for debugging */
} weft_log_level;

/** Receives one message: LEVEL, and MESSAGE (one line, valid during the call). */
typedef void (*weft_log_fn)(void *arg, weft_log_level level, const char *message);

/** Sends the reactor's messages up to MAX_LEVEL (WEFT_LOG_ERROR logs errors only,
 * WEFT_LOG_DEBUG everything) to FN(ARG, ...); FN NULL turns logging off (the default).
 * Errors: WEFT_EINVAL (NULL reactor, MAX_LEVEL out of range). Reactor thread. */
WEFT_EXTERN int weft_reactor_set_log(weft_reactor *reactor, weft_log_level max_level,
                                     weft_log_fn fn, void *arg);

/** "error", "warning", "info" or "debug" ("?" for another value). Static. Any thread. */
WEFT_EXTERN const char *weft_log_level_name(weft_log_level level);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_LOG_H */
