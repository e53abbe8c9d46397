/** @file
 * weft/error.h: error codes, their names and messages, and the reason given to callbacks.
 *
 * Every weft function that can fail returns an int: 0 on success, or one of the negative
 * WEFT_E* codes below. The codes come from one table (WEFT_ERRNO_MAP), which also gives
 * weft_strerror() and weft_err_name(), so a code, its name and its text never disagree.
 *
 * Threading: everything in this header is pure and may be called from any thread.
 */
#ifndef WEFT_ERROR_H
#define WEFT_ERROR_H

#include <weft/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** X(NAME, value, message). Values are stable: new codes are added at the end. */
#define WEFT_ERRNO_MAP(X)                                                                          \
  X(EINVAL, -1, "invalid argument")                                                                \
  X(ENOMEM, -2, "out of memory")                                                                   \
  X(ENOTSUP, -3, "operation not supported")                                                        \
  X(ECLOSED, -4, "transport is closing or closed")                                                 \
  X(ECONNREFUSED, -5, "connection refused")                                                        \
  X(ETIMEDOUT, -6, "operation timed out")                                                          \
  X(ENOTFOUND, -7, "host name could not be resolved")                                              \
  X(ECONNRESET, -8, "connection reset by peer")                                                    \
  X(ECONNLOST, -9, "connection lost (socket error without an errno)")                              \
  X(EADDRINUSE, -10, "address already in use")                                                     \
  X(EADDRNOTAVAIL, -11, "address not available")                                                   \
  X(ESOCKET, -12, "socket error")                                                                  \
  X(ECANCELED, -13, "operation canceled")                                                          \
  X(EABORTED, -14, "connection aborted locally")                                                   \
  X(ESHUTDOWN, -15, "reactor shut down")                                                           \
  X(EREFUSED, -16, "the factory refused the connection")                                           \
  X(ETLS, -17, "TLS error")                                                                        \
  X(ECERTVERIFY, -18, "certificate verification failed")                                           \
  X(EHOSTNAME, -19, "certificate does not match the host name")                                    \
  X(ENOPEERCERT, -20, "peer did not present a certificate")                                        \
  X(ETLSALERT, -21, "peer sent a TLS alert")                                                       \
  X(ETLSVERSION, -22, "no TLS version in common")                                                  \
  X(ENOPROTOCOL, -23, "no application protocol in common")                                         \
  X(ETRUNCATED, -24, "TLS stream truncated (TCP closed without close_notify)")                     \
  X(EHANDSHAKETIMEOUT, -25, "TLS handshake timed out")                                             \
  X(EPEM, -26, "malformed or unreadable PEM data")                                                 \
  X(EKEYMISMATCH, -27, "private key does not match the certificate")                               \
  X(EFROZEN, -28, "options are in use by a listener or connector and can no longer change")        \
  X(EIO, -29, "I/O error")                                                                         \
  X(ENOTTLS, -30, "transport is not a TLS transport")                                              \
  X(EBUSY, -31, "resource busy")                                                                   \
  X(ECONNLIMIT, -32, "connection limit reached (reserved)")                                        \
  X(ETOOLONG, -33, "line or frame longer than the maximum length")                                 \
  X(EIDLE, -34, "connection idle for longer than its idle time-out")                               \
  X(EBADFRAME, -35, "malformed frame")                                                             \
  X(EPROXY, -36, "missing or malformed PROXY protocol header")                                     \
  X(EPEERREFUSED, -37, "peer refused by the listener's policy")

/** The error codes. WEFT_OK (0) is success; for a reason it means a clean close. */
enum {
  WEFT_OK = 0, /**< success; as a reason's code, a clean close */
#define WEFT__ERRNO_ENUM(name, value, msg) WEFT_##name = (value),
  WEFT_ERRNO_MAP(WEFT__ERRNO_ENUM)
#undef WEFT__ERRNO_ENUM
};

/** Returns a static English message for CODE ("success" for 0, "unknown error" for a code not
 * in the table). Never NULL. */
WEFT_EXTERN const char *weft_strerror(int code);

/** Returns the static name of CODE, e.g.\ "WEFT_ECONNREFUSED" ("WEFT_OK" for 0,
 * "WEFT_UNKNOWN" for a code not in the table). Never NULL. */
WEFT_EXTERN const char *weft_err_name(int code);

/** Why a connection ended or never started: given to connection_lost, connection_failed and
 * handshake_failed. Valid only for the duration of the callback it is passed to: copy what
 * you need to keep.
 *
 *  code           0 (WEFT_OK) for a clean close, otherwise a WEFT_E* code.
 *  message        a human readable sentence, never NULL; it includes OpenSSL's verify error
 *                 or alert text where there is one.
 *  tls_alert      the TLS alert number (RFC 8446 section 6) that was received from the peer or
 *                 sent to it, or -1 if none.
 *  alert_sent     1 if tls_alert was sent by this side, 0 if it came from the peer.
 *  verify_result  OpenSSL's X509_V_* verify result when certificate verification failed,
 *                 otherwise 0 (X509_V_OK).
 *  sys_errno      the operating system errno behind the failure, or 0.
 *
 * Frozen: weft allocates every reason and callers only read it through the pointer they are
 * given, during the call; its members never change. */
typedef struct weft_reason {
  int code;            /**< WEFT_OK for a clean close, otherwise a WEFT_E* code */
  const char *message; /**< a human readable sentence, never NULL */
  int tls_alert;       /**< the TLS alert number received or sent, or -1 if none */
  int alert_sent;      /**< 1 if this side sent tls_alert, 0 if it came from the peer */
  long verify_result;  /**< OpenSSL's X509_V_* result when verification failed, otherwise 0 */
  int sys_errno;       /**< the operating system errno behind the failure, or 0 */
} weft_reason;

#ifdef __cplusplus
}
#endif
#endif /* WEFT_ERROR_H */
