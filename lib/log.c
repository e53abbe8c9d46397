/* log.c: the reactor's log callback (see weft/log.h). */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include <weft/error.h>
#include <weft/log.h>

#include "log-internal.h"
#include "reactor-internal.h"

int weft_reactor_set_log(weft_reactor *reactor, weft_log_level max_level, weft_log_fn fn,
                         void *arg) {
  if (!reactor || (int)max_level < WEFT_LOG_ERROR || max_level > WEFT_LOG_DEBUG)
    return WEFT_EINVAL;
  reactor->log_fn = fn;
  reactor->log_arg = arg;
  reactor->log_level = (int)max_level;
  return 0;
}

const char *weft_log_level_name(weft_log_level level) {
  switch (level) {
    case WEFT_LOG_ERROR:
      return "error";
    case WEFT_LOG_WARNING:
      return "warning";
    case WEFT_LOG_INFO:
      return "info";
    case WEFT_LOG_DEBUG:
      return "debug";
  }
  return "?";
}

int weft__log_enabled(weft_reactor *reactor, weft_log_level level) {
  return reactor && reactor->log_fn && (int)level <= reactor->log_level;
}

void weft__log(weft_reactor *reactor, weft_log_level level, const char *fmt, ...) {
  if (!weft__log_enabled(reactor, level))
    return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  reactor->log_fn(reactor->log_arg, level, msg);
}
