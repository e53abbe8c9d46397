/* Stopping a reactor on SIGINT and SIGTERM, as Twisted's reactor does by default.
 *
 * libevent delivers signals to one event_base per process at a time (its signal handler writes
 * to the socketpair of the last base that added a signal event), so one reactor per process may
 * own the stop signals; the owner is process-wide state, guarded by a mutex because reactors of
 * other threads may ask too. The events live on the owner's event_base until the reactor is
 * freed: the ownership is one of the reactor's handles, whose stop gives the signals back (before
 * any connection_lost runs) and whose close frees it. */
#include "config.h"

#include <pthread.h>
#include <signal.h>

#include <event2/event.h>

#include <weft/error.h>
#include <weft/reactor.h>

#include "alloc-internal.h"
#include "reactor-internal.h"

/* One reactor's ownership of the signals. Its memory belongs to that reactor (a handle), and
 * lives on after the signals were given back until the reactor closes it: another reactor may
 * take the signals meanwhile, with its own. */
struct signal_owner {
  weft__handle handle; /* WEFT__RANK_SOURCE */
  weft_reactor *reactor;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct signal_owner *owner; /* guarded by LOCK */
static struct event *events[2];    /* SIGINT, SIGTERM; guarded by LOCK */
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

/* The reactor is being freed: give the signals back (libevent restores their old handlers)... */
static void on_reactor_stop(weft__handle *handle) {
  pthread_mutex_lock(&lock);
  if (owner == WEFT__CONTAINER_OF(handle, struct signal_owner, handle)) {
    free_events();
    owner = NULL;
  }
  pthread_mutex_unlock(&lock);
}

/* ... then free the ownership. */
static void on_reactor_close(weft__handle *handle) {
  struct signal_owner *o = WEFT__CONTAINER_OF(handle, struct signal_owner, handle);
  weft__reactor_remove_handle(o->reactor, &o->handle);
  weft__free(o);
}

static const weft__handle_ops signal_owner_ops = {on_reactor_stop, on_reactor_close};

int weft_reactor_stop_on_signals(weft_reactor *reactor) {
  if (!reactor)
    return WEFT_EINVAL;
  struct event_base *base = weft_reactor_event_base(reactor);
  int rc = 0;
  pthread_mutex_lock(&lock);
  if (owner && owner->reactor == reactor) {
    rc = 0; /* already on */
  } else if (owner) {
    rc = WEFT_EBUSY;
  } else {
    struct signal_owner *o = weft__calloc(1, sizeof *o);
    if (!o)
      rc = WEFT_ENOMEM;
    for (int i = 0; i < 2 && rc == 0; i++) {
      events[i] = evsignal_new(base, signals[i], on_signal, reactor);
      if (!events[i])
        rc = WEFT_ENOMEM;
      else if (evsignal_add(events[i], NULL) != 0)
        rc = WEFT_EIO;
    }
    /* Last: it fails only while the reactor is being freed (WEFT_ESHUTDOWN). */
    if (rc == 0)
      rc = weft__reactor_add_handle(reactor, &o->handle, &signal_owner_ops, WEFT__RANK_SOURCE);
    if (rc == 0) {
      o->reactor = reactor;
      owner = o;
    } else {
      free_events();
      weft__free(o);
    }
  }
  pthread_mutex_unlock(&lock);
  return rc;
}
