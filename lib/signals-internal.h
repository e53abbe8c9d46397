/* Private: the reactor's SIGINT/SIGTERM events (lib/signals.c). */
#ifndef WEFT_SIGNALS_INTERNAL_H
#define WEFT_SIGNALS_INTERNAL_H

#include <weft/reactor.h>

/* Called by weft_reactor_free: if REACTOR owns the stop signals, frees its signal events (which
 * restores the signals' previous handlers) and gives up the ownership. */
void weft__signals_release(weft_reactor *reactor);

#endif
