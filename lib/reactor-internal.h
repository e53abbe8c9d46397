/* Private: the reactor's state and its handle list. The reactor is the bottom of the stack: it
 * knows no concrete type (transport, listener, connector, ...), only weft__handle. */
#ifndef WEFT_REACTOR_INTERNAL_H
#define WEFT_REACTOR_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <sys/queue.h>

#include <event2/event.h>

#include <weft/reactor.h>
#include <weft/log.h>

struct evdns_base;

/* The object that embeds MEMBER at PTR (PTR must not be NULL). */
#define WEFT__CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* --- handles (libuv's handle queue and uv_close) ---------------------------------------------
 *
 * Everything long-lived that the reactor must end when it is freed (a transport, a listener, a
 * connector, the stop-signal events, ...) embeds a weft__handle and registers it with
 * weft__reactor_add_handle. weft_reactor_free ends them in two passes:
 *   1. stop: every handle's stop operation (when it has one), in rank order, then list order.
 *      A stop quiesces: afterwards nothing of the handle runs from the loop. It calls no user
 *      callback and neither frees nor removes any handle.
 *   2. close: the first handle of the lowest rank, again and again, until no handle is left.
 *      A close delivers what must still be delivered (connection_lost, connection_failed, ...)
 *      and frees the handle; it must remove it (weft__reactor_remove_handle) before it
 *      returns. The callbacks it runs may end other handles (stop a listener, cancel a
 *      connector), which remove themselves; they cannot add one (see weft__reactor_add_handle).
 * So every handle of one rank is stopped before any handle is closed, and all handles of a
 * lower rank are gone before the first of a higher rank is closed.
 * All of this runs in the reactor's thread. */

typedef struct weft__handle weft__handle;

typedef struct weft__handle_ops {
  void (*stop)(weft__handle *handle);  /* may be NULL */
  void (*close)(weft__handle *handle); /* required; removes and frees the handle */
} weft__handle_ops;

/* Close order at reactor free, lowest first. The ranks name roles, not types: whatever ends
 * later must still exist while what ends earlier delivers its last callbacks. */
typedef enum weft__handle_rank {
  /* Live connections, handshakes included; weft_reactor_connection_count counts them. Their
   * connection_lost (or a pending client's connection_failed) may still stop a listener or
   * cancel a pending attempt, which must exist then. */
  WEFT__RANK_CONNECTION = 0,
  /* Connection attempts not yet connected: connection_failed (WEFT_ESHUTDOWN). It may stop a
   * listener too. */
  WEFT__RANK_ATTEMPT,
  /* Sources of new work that deliver nothing when they end (listeners, signal events). */
  WEFT__RANK_SOURCE,
  WEFT__RANK_COUNT
} weft__handle_rank;

struct weft__handle {
  TAILQ_ENTRY(weft__handle) link;
  const weft__handle_ops *ops;
  weft__handle_rank rank;
};

TAILQ_HEAD(weft__handle_list, weft__handle);
TAILQ_HEAD(weft__delayed_list, weft_delayed_call);

/* --- deferred work ----------------------------------------------------------------------------
 *
 * Work an object must do "from the loop", never inside the call that asked for it (a
 * transport's connection_lost, its delivery of input held while paused, ...). Instead of an
 * event of its own for each kind of work (128 bytes of libevent memory each, on every
 * connection, idle or not), the object embeds a weft__deferred and queues it with
 * weft__reactor_defer: one event per reactor runs the queue, in the order queued. Reactor
 * thread only. */
typedef struct weft__deferred weft__deferred;
struct weft__deferred {
  TAILQ_ENTRY(weft__deferred) link;  /* link.tqe_prev is NULL while not queued */
  void (*run)(weft__deferred *work); /* called from the loop, once per weft__reactor_defer */
};
TAILQ_HEAD(weft__deferred_list, weft__deferred);

/* --- idle queues -----------------------------------------------------------------------------
 *
 * Idle time-outs without a timer per object (issue #17). An object with an idle time-out of T
 * seconds embeds a weft__idle_node and joins the reactor's queue for T (one queue per distinct
 * value, compared exactly, and per expiry function): an intrusive list ordered by
 * LAST_ACTIVITY, oldest first, since a node joins at the tail with the current time and moves
 * to the tail (weft__idle_touch: a time stamp and an O(1) move, no timer work) when it has
 * activity. Each queue owns one delayed call, armed for the head's LAST_ACTIVITY + T. As the
 * head only ever moves later, the call may fire early: it then re-arms for the new head, so a
 * busy queue costs one timer operation per period, not one per activity. When it fires, EXPIRE
 * runs for each head whose time is up (LAST_ACTIVITY + T - now <= 1 ms); EXPIRE must take the
 * node out (weft__idle_leave, directly or by closing its object) or touch it. EXPIRE may join,
 * touch or take out any node, of this queue or another, while the queue is processed. A queue
 * is made on first use of its value and freed when its last node leaves, or with the reactor
 * (whose free detaches the nodes still queued). Reactor thread only. */
typedef struct weft__idle_node weft__idle_node;
typedef struct weft__idle_queue weft__idle_queue;
typedef void (*weft__idle_expire_fn)(weft__idle_node *node);
struct weft__idle_node {
  TAILQ_ENTRY(weft__idle_node) link;
  weft__idle_queue *queue; /* NULL: in no queue (no idle time-out) */
  double last_activity;    /* on the reactor's clock; kept up to date only while queued */
};
TAILQ_HEAD(weft__idle_node_list, weft__idle_node);
struct weft__idle_queue {
  LIST_ENTRY(weft__idle_queue) link; /* in the reactor's IDLE_QUEUES */
  struct weft__idle_node_list nodes; /* oldest LAST_ACTIVITY first */
  weft_reactor *reactor;
  weft_delayed_call *call; /* made with the queue; kept (and re-armed) after it fires */
  weft__idle_expire_fn expire;
  double seconds;
  size_t count;             /* nodes queued */
  unsigned firing;          /* inside the call: an empty queue is freed at its end */
};
LIST_HEAD(weft__idle_queue_list, weft__idle_queue);

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

  struct weft__handle_list handles[WEFT__RANK_COUNT]; /* one list per rank, in order added */
  unsigned handle_count[WEFT__RANK_COUNT];
  struct weft__delayed_list delayed;

  /* call_from_thread: a locked FIFO and a self-pipe that wakes the loop. */
  pthread_mutex_t queue_lock;
  weft__thread_call *queue_head, *queue_tail;
  int wake_pending; /* a byte is in the pipe (guarded by queue_lock) */
  int wake_fds[2];
  struct event *wake_event;

  /* Deferred work (weft__reactor_defer): the queue, and the event that runs it. */
  struct weft__deferred_list deferred;
  size_t deferred_count;
  struct event *deferred_event;

  /* Idle queues (weft__idle_join), one per distinct time-out value. */
  struct weft__idle_queue_list idle_queues;

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

/* Puts NODE at the tail of REACTOR's queue for SECONDS (> 0, finite) and EXPIRE, with
 * LAST_ACTIVITY now, leaving the queue it was in (the same queue: it moves to the tail). The
 * queue is made on first use of the value. Returns 0, or WEFT_ENOMEM (no memory for a new
 * queue: NODE is then in no queue). Reactor thread. */
int weft__idle_join(weft_reactor *reactor, weft__idle_node *node, double seconds,
                    weft__idle_expire_fn expire);

/* Takes NODE out of its queue (nothing if it is in none); the queue is freed if it was the
 * last node (at the end of the queue's processing if it is being processed). Reactor thread. */
void weft__idle_leave(weft__idle_node *node);

/* Activity on NODE at NOW (weft__reactor_now): stamps it and, if queued, moves it to the tail
 * of its queue. No timer work (see "idle queues" above). Reactor thread. */
static inline void weft__idle_touch(weft__idle_node *node, double now) {
  node->last_activity = now;
  weft__idle_queue *q = node->queue;
  if (q && TAILQ_NEXT(node, link) != NULL) {
    TAILQ_REMOVE(&q->nodes, node, link);
    TAILQ_INSERT_TAIL(&q->nodes, node, link);
  }
}

/* Queues WORK (its RUN set, not queued yet or queued already: then it stays where it is) to
 * run from the loop. Cannot fail: the queue is intrusive, and the reactor's event exists. A
 * WORK queued from a RUN runs in a later pass of the loop, so one that keeps queueing itself
 * does not starve the other events. Reactor thread. */
void weft__reactor_defer(weft_reactor *reactor, weft__deferred *work);

/* Takes WORK off the queue if it is queued (then RUN is not called). Reactor thread. */
void weft__reactor_defer_cancel(weft_reactor *reactor, weft__deferred *work);

/* Returns the reactor's DNS resolver, creating it on first use; NULL on failure. */
struct evdns_base *weft__reactor_dns(weft_reactor *reactor);

/* Registers HANDLE (the caller's memory, usually embedded in its object) with OPS and RANK, at
 * the end of its rank's list. The handle stays registered until weft__reactor_remove_handle;
 * the reactor never frees it, it calls OPS->close when it is freed first. Returns 0, or
 * WEFT_ESHUTDOWN while the reactor is being freed (nothing new may start then; HANDLE is not
 * registered). Reactor thread. */
int weft__reactor_add_handle(weft_reactor *reactor, weft__handle *handle,
                             const weft__handle_ops *ops, weft__handle_rank rank);

/* Unregisters HANDLE, which must be registered with REACTOR. Reactor thread. */
void weft__reactor_remove_handle(weft_reactor *reactor, weft__handle *handle);

/* Parses an IP literal (v4 or v6) and PORT into *SS / *LEN. Returns 0 or WEFT_EINVAL. */
int weft__parse_ip(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len);

#endif
