/* Private: weft's own log messages (see weft/log.h). */
#ifndef WEFT_LOG_INTERNAL_H
#define WEFT_LOG_INTERNAL_H

#include <weft/log.h>

/* 1 if REACTOR logs LEVEL: test it before building an expensive message. */
int weft__log_enabled(weft_reactor *reactor, weft_log_level level);

/* Formats and logs one message at LEVEL on REACTOR's callback, if it takes that level. */
void weft__log(weft_reactor *reactor, weft_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
