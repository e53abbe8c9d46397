/* Private: building weft_reason values with their own message storage. */
#ifndef WEFT_ERROR_INTERNAL_H
#define WEFT_ERROR_INTERNAL_H

#include <stdarg.h>

#include <weft/error.h>

#define WEFT__REASON_MSG_MAX 384

/* A reason plus the storage its message points into. Initialise with weft__reason_set. */
typedef struct weft__reason_buf {
  weft_reason reason;
  char msg[WEFT__REASON_MSG_MAX];
} weft__reason_buf;

/* Sets CODE, clears the TLS fields, and formats the message (printf style). A NULL FMT uses
 * weft_strerror(CODE). reason.message always points at msg. */
void weft__reason_set(weft__reason_buf *buf, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Maps an errno value to the closest WEFT_E* code (WEFT_ESOCKET for the rest). */
int weft__errno_to_code(int err);

#endif
