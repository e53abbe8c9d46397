/* Private: the reactor's state, shared by reactor.c, transport.c, listener.c and connector.c. */
#ifndef WEFT_REACTOR_INTERNAL_H
#define WEFT_REACTOR_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/queue.h>

#include <event2/event.h>

#include <weft/reactor.h>
#include <weft/log.h>

struct weft_transport;
struct weft_listener;
struct weft_connector;
struct evdns_base;

TAILQ_HEAD(weft__transport_list, weft_transport);
TAILQ_HEAD(weft__listener_list, weft_listener);
TAILQ_HEAD(weft__connector_list, weft_connector);
TAILQ_HEAD(weft__delayed_list, weft_delayed_call);

/* One request queued by weft_reactor_call_from_thread. */
typedef struct weft__thread_call {
  weft_callback fn;
  void *arg;
  struct weft__thread_call *next;
} weft__thread_call;

struct weft_reactor {
  struct event_base *base;
  int owns_base;
  struct evdns_base *dns; /* created on first name lookup */
  int running;            /* inside weft_reactor_run / run_until */
  int freeing;            /* inside weft_reactor_free */
  atomic_int stop_requested;

  struct weft__transport_list transports;
  struct weft__listener_list listeners;
  struct weft__connector_list connectors;
  struct weft__delayed_list delayed;
  unsigned connection_count;

  /* call_from_thread: a locked FIFO and a self-pipe that wakes the loop. */
  pthread_mutex_t queue_lock;
  weft__thread_call *queue_head, *queue_tail;
  int wake_pending; /* a byte is in the pipe (guarded by queue_lock) */
  int wake_fds[2];
  struct event *wake_event;

  /* The log callback (lib/log.c). */
  weft_log_fn log_fn;
  void *log_arg;
  int log_level;

  /* The test clock (lib/testing.c): while FAKE_CLOCK is set, delayed calls do not wait on
   * libevent's timers but for weft_testing_clock_advance, which moves FAKE_NOW. */
  int fake_clock;
  double fake_now;
};

/* Seconds on the reactor's clock: libevent's cached monotonic time, or the test clock. */
double weft__reactor_now(weft_reactor *reactor);

/* Test clock: runs the earliest delayed call due at or before UNTIL (setting the clock to its
 * due time first). Returns 1 if one ran, 0 if none is due. */
int weft__reactor_run_one_due(weft_reactor *reactor, double until);

/* weft_reactor_call_later, plus ON_DROP(ARG), called instead of FN if the reactor is freed
 * before the call ran (ON_DROP may be NULL). For library objects that outlive a reactor. */
int weft__reactor_call_later_full(weft_reactor *reactor, double seconds, weft_callback fn,
                                  weft_callback on_drop, void *arg, weft_delayed_call **out);

/* Returns the reactor's DNS resolver, creating it on first use; NULL on failure. */
struct evdns_base *weft__reactor_dns(weft_reactor *reactor);

/* Bookkeeping used by the other files. */
void weft__reactor_add_transport(weft_reactor *reactor, struct weft_transport *transport);
void weft__reactor_remove_transport(weft_reactor *reactor, struct weft_transport *transport);

/* Parses an IP literal (v4 or v6) and PORT into *SS / *LEN. Returns 0 or WEFT_EINVAL. */
int weft__parse_ip(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len);

#endif
