/* Stopping a reactor on SIGINT and SIGTERM, as Twisted's reactor does by default.
 *
 * libevent delivers signals to one event_base per process at a time (its signal handler writes
 * to the socketpair of the last base that added a signal event), so one reactor per process may
 * own the stop signals; the owner is process-wide state, guarded by a mutex because reactors of
 * other threads may ask too. The events live on the owner's event_base until the reactor is
 * freed (weft__signals_release, called by weft_reactor_free). */
#include "config.h"

#include <pthread.h>
#include <signal.h>

#include <event2/event.h>

#include <weft/error.h>
#include <weft/reactor.h>

#include "signals-internal.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static weft_reactor *owner;       /* guarded by LOCK */
static struct event *events[2];   /* SIGINT, SIGTERM; guarded by LOCK */
static const int signals[2] = {SIGINT, SIGTERM};

static void on_signal(evutil_socket_t sig, short what, void *reactor) {
  (void)sig;
  (void)what;
  weft_reactor_stop(reactor);
}

static void free_events(void) {
  for (int i = 0; i < 2; i++) {
    if (events[i])
      event_free(events[i]); /* deletes it first: libevent restores the old handler */
    events[i] = NULL;
  }
}

int weft_reactor_stop_on_signals(weft_reactor *reactor) {
  if (!reactor)
    return WEFT_EINVAL;
  struct event_base *base = weft_reactor_event_base(reactor);
  int rc = 0;
  pthread_mutex_lock(&lock);
  if (owner == reactor) {
    rc = 0; /* already on */
  } else if (owner) {
    rc = WEFT_EBUSY;
  } else {
    for (int i = 0; i < 2 && rc == 0; i++) {
      events[i] = evsignal_new(base, signals[i], on_signal, reactor);
      if (!events[i])
        rc = WEFT_ENOMEM;
      else if (evsignal_add(events[i], NULL) != 0)
        rc = WEFT_EIO;
    }
    if (rc == 0)
      owner = reactor;
    else
      free_events();
  }
  pthread_mutex_unlock(&lock);
  return rc;
}

void weft__signals_release(weft_reactor *reactor) {
  pthread_mutex_lock(&lock);
  if (reactor && owner == reactor) {
    free_events();
    owner = NULL;
  }
  pthread_mutex_unlock(&lock);
}
