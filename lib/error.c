/* error.c: the error table (names and messages from WEFT_ERRNO_MAP), reasons with their own
 * message storage, and errno mapping. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <weft/error.h>

#include "error-internal.h"

const char *weft_strerror(int code) {
  switch (code) {
    case WEFT_OK:
      return "success";
#define WEFT__ERRNO_MSG(name, value, msg)                                                          \
  case WEFT_##name:                                                                                \
    return msg;
      WEFT_ERRNO_MAP(WEFT__ERRNO_MSG)
#undef WEFT__ERRNO_MSG
    default:
      return "unknown error";
  }
}

const char *weft_err_name(int code) {
  switch (code) {
    case WEFT_OK:
      return "WEFT_OK";
#define WEFT__ERRNO_NAME(name, value, msg)                                                         \
  case WEFT_##name:                                                                                \
    return "WEFT_" #name;
      WEFT_ERRNO_MAP(WEFT__ERRNO_NAME)
#undef WEFT__ERRNO_NAME
    default:
      return "WEFT_UNKNOWN";
  }
}

void weft__reason_set(weft__reason_buf *buf, int code, const char *fmt, ...) {
  if (buf == NULL)
    return;
  buf->reason.code = code;
  buf->reason.tls_alert = -1;
  buf->reason.alert_sent = 0;
  buf->reason.verify_result = 0;
  buf->reason.sys_errno = 0;
  buf->reason.message = buf->msg;
  if (fmt == NULL) {
    snprintf(buf->msg, sizeof buf->msg, "%s", weft_strerror(code));
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf->msg, sizeof buf->msg, fmt, ap);
  va_end(ap);
  if (n < 0) /* an encoding error: keep a sentence rather than garbage */
    snprintf(buf->msg, sizeof buf->msg, "%s", weft_strerror(code));
}

int weft__errno_to_code(int err) {
  switch (err) {
    case 0:
      return WEFT_OK;
    case EINVAL:
      return WEFT_EINVAL;
    case ENOMEM:
    case ENOBUFS:
      return WEFT_ENOMEM;
    case ENOTSUP:
#if defined(EOPNOTSUPP) && EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
    case EAFNOSUPPORT:
    case EPROTONOSUPPORT:
      return WEFT_ENOTSUP;
    case ECONNREFUSED:
      return WEFT_ECONNREFUSED;
    case ETIMEDOUT:
      return WEFT_ETIMEDOUT;
    case ECONNRESET:
    case EPIPE:
      return WEFT_ECONNRESET;
    case ECONNABORTED:
    case ENETRESET:
      return WEFT_ECONNLOST;
    case EADDRINUSE:
      return WEFT_EADDRINUSE;
    case EADDRNOTAVAIL:
      return WEFT_EADDRNOTAVAIL;
    case ECANCELED:
      return WEFT_ECANCELED;
    case EIO:
      return WEFT_EIO;
    case EBUSY:
      return WEFT_EBUSY;
    default:
      return WEFT_ESOCKET;
  }
}
