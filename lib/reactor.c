/* The reactor: an event_base (owned or borrowed), delayed calls, the cross-thread queue, and
 * the handles of everything it must end when it is freed (which it knows only as handles). */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include <weft/error.h>

#include "alloc-internal.h"
#include "reactor-internal.h"

struct weft_delayed_call {
  weft_reactor *reactor;
  struct event *event;
  weft_callback fn;
  weft_callback on_drop; /* called instead of FN when the reactor is freed first */
  void *arg;
  double due; /* on the reactor's clock (weft__reactor_now): the test clock needs it */
  TAILQ_ENTRY(weft_delayed_call) link;
  int keep; /* an idle queue's call: not freed when it runs (DUE is then HUGE_VAL until reset) */
};

static void idle_queues_free(weft_reactor *r);

static void ignore_sigpipe(void) {
  struct sigaction current;
  if (sigaction(SIGPIPE, NULL, &current) == 0 && current.sa_handler == SIG_DFL) {
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGPIPE, &ignore, NULL);
  }
}

static void on_wake(evutil_socket_t fd, short what, void *arg) {
  weft_reactor *r = arg;
  char drain[64];
  (void)what;
  while (read(fd, drain, sizeof drain) > 0) {
  }
  pthread_mutex_lock(&r->queue_lock);
  weft__thread_call *call = r->queue_head;
  r->queue_head = r->queue_tail = NULL;
  r->wake_pending = 0;
  pthread_mutex_unlock(&r->queue_lock);
  while (call) {
    weft__thread_call *next = call->next;
    call->fn(call->arg);
    weft__free(call);
    call = next;
  }
  if (atomic_load(&r->stop_requested))
    event_base_loopbreak(r->base);
}

/* Runs as many works as were queued when the pass began: what a RUN queues waits for the next
 * pass (the event is made active again), so that other events get their turn in between. (A
 * RUN may cancel works still waiting in this pass: then as many queued since run in it.) */
static void on_deferred(evutil_socket_t fd, short what, void *arg) {
  weft_reactor *r = arg;
  (void)fd;
  (void)what;
  weft__deferred *work;
  for (size_t n = r->deferred_count; n > 0 && (work = TAILQ_FIRST(&r->deferred)) != NULL; n--) {
    TAILQ_REMOVE(&r->deferred, work, link);
    work->link.tqe_prev = NULL;
    r->deferred_count--;
    work->run(work);
  }
  if (!TAILQ_EMPTY(&r->deferred))
    event_active(r->deferred_event, EV_TIMEOUT, 1);
}

void weft__reactor_defer(weft_reactor *r, weft__deferred *work) {
  if (work->link.tqe_prev)
    return;
  TAILQ_INSERT_TAIL(&r->deferred, work, link);
  r->deferred_count++;
  event_active(r->deferred_event, EV_TIMEOUT, 1);
}

void weft__reactor_defer_cancel(weft_reactor *r, weft__deferred *work) {
  if (!work->link.tqe_prev)
    return;
  TAILQ_REMOVE(&r->deferred, work, link);
  work->link.tqe_prev = NULL;
  r->deferred_count--;
}

static int set_nonblocking_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return -1;
  return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static int reactor_init(weft_reactor *r, struct event_base *base, int owns) {
  r->base = base;
  r->owns_base = owns;
  for (int rank = 0; rank < WEFT__RANK_COUNT; rank++)
    TAILQ_INIT(&r->handles[rank]);
  TAILQ_INIT(&r->delayed);
  LIST_INIT(&r->idle_queues);
  TAILQ_INIT(&r->deferred);
  atomic_init(&r->stop_requested, 0);
  r->wake_fds[0] = r->wake_fds[1] = -1;
  if (pthread_mutex_init(&r->queue_lock, NULL) != 0)
    return WEFT_ENOMEM;
  if (pipe(r->wake_fds) != 0 || set_nonblocking_cloexec(r->wake_fds[0]) != 0 ||
      set_nonblocking_cloexec(r->wake_fds[1]) != 0)
    return WEFT_ESOCKET;
  r->wake_event = event_new(base, r->wake_fds[0], EV_READ | EV_PERSIST, on_wake, r);
  if (!r->wake_event || event_add(r->wake_event, NULL) != 0)
    return WEFT_ENOMEM;
  r->deferred_event = event_new(base, -1, 0, on_deferred, r);
  if (!r->deferred_event)
    return WEFT_ENOMEM;
  ignore_sigpipe();
  return 0;
}

static void reactor_release(weft_reactor *r) {
  if (r->deferred_event)
    event_free(r->deferred_event);
  if (r->wake_event)
    event_free(r->wake_event);
  for (int i = 0; i < 2; i++)
    if (r->wake_fds[i] >= 0)
      close(r->wake_fds[i]);
  pthread_mutex_destroy(&r->queue_lock);
  if (r->owns_base && r->base)
    event_base_free(r->base);
  weft__free(r);
}

int weft_reactor_new(weft_reactor **out) {
  if (!out)
    return WEFT_EINVAL;
  *out = NULL;
  weft_reactor *r = weft__calloc(1, sizeof *r);
  if (!r)
    return WEFT_ENOMEM;
  /* No EVENT_BASE_FLAG_PRECISE_TIMER: with it, libevent's epoll backend makes a
   * timerfd_settime(2) call before every epoll_wait(2), one more system call per loop
   * iteration (per request, at a moderate rate). Without it timers run on the coarse
   * monotonic clock and epoll_wait's millisecond time-out: a delayed call may run up to one
   * clock tick (a few ms) early as seen from CLOCK_MONOTONIC; see weft_reactor_call_later. */
  struct event_base *base = event_base_new();
  if (!base) {
    weft__free(r);
    return WEFT_ENOMEM;
  }
  int rc = reactor_init(r, base, 1);
  if (rc != 0) {
    reactor_release(r);
    return rc;
  }
  *out = r;
  return 0;
}

int weft_reactor_new_with_base(struct event_base *base, weft_reactor **out) {
  if (!out)
    return WEFT_EINVAL;
  *out = NULL;
  if (!base)
    return WEFT_EINVAL;
  weft_reactor *r = weft__calloc(1, sizeof *r);
  if (!r)
    return WEFT_ENOMEM;
  int rc = reactor_init(r, base, 0);
  if (rc != 0) {
    reactor_release(r);
    return rc;
  }
  *out = r;
  return 0;
}

struct event_base *weft_reactor_event_base(weft_reactor *reactor) {
  return reactor ? reactor->base : NULL;
}

static void wake(weft_reactor *r) {
  /* Called with queue_lock held. One byte in the pipe is enough to wake the loop. */
  if (!r->wake_pending) {
    r->wake_pending = 1;
    ssize_t n;
    do {
      n = write(r->wake_fds[1], "w", 1);
    } while (n < 0 && errno == EINTR);
  }
}

int weft_reactor_stop(weft_reactor *reactor) {
  if (!reactor)
    return WEFT_EINVAL;
  atomic_store(&reactor->stop_requested, 1);
  pthread_mutex_lock(&reactor->queue_lock);
  wake(reactor);
  pthread_mutex_unlock(&reactor->queue_lock);
  return 0;
}

int weft_reactor_run(weft_reactor *reactor) {
  if (!reactor)
    return WEFT_EINVAL;
  if (reactor->running || reactor->freeing)
    return WEFT_EBUSY;
  if (atomic_exchange(&reactor->stop_requested, 0))
    return 0;
  reactor->running = 1;
  int rc = 0;
  while (!atomic_load(&reactor->stop_requested)) {
    if (event_base_loop(reactor->base, 0) < 0) {
      rc = WEFT_EIO;
      break;
    }
  }
  atomic_store(&reactor->stop_requested, 0);
  reactor->running = 0;
  return rc;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  *(int *)arg = 1;
}

int weft_reactor_run_until(weft_reactor *reactor, int (*predicate)(void *arg), void *arg,
                           double timeout) {
  if (!reactor || !predicate || isnan(timeout))
    return WEFT_EINVAL;
  if (reactor->running || reactor->freeing)
    return WEFT_EBUSY;
  int expired = 0;
  struct event *deadline = NULL;
  if (timeout > 0) {
    deadline = evtimer_new(reactor->base, on_deadline, &expired);
    if (!deadline)
      return WEFT_ENOMEM;
    struct timeval tv = {(time_t)timeout, (suseconds_t)((timeout - (time_t)timeout) * 1e6)};
    evtimer_add(deadline, &tv);
  }
  reactor->running = 1;
  int rc = 0;
  for (;;) {
    if (predicate(arg)) {
      rc = 0;
      break;
    }
    if (atomic_exchange(&reactor->stop_requested, 0)) {
      rc = WEFT_ECANCELED;
      break;
    }
    if (expired) {
      rc = WEFT_ETIMEDOUT;
      break;
    }
    if (event_base_loop(reactor->base, EVLOOP_ONCE) < 0) {
      rc = WEFT_EIO;
      break;
    }
  }
  reactor->running = 0;
  if (deadline)
    event_free(deadline);
  return rc;
}

/* Ends every handle: all stopped first, then closed in rank order (see reactor-internal.h).
 * Connections first: their connection_lost (or a pending TLS client's connection_failed) may
 * still use a listener or a pending connector (stop it, cancel it), which must exist then. */
static void close_handles(weft_reactor *r) {
  weft__handle *h;
  for (int rank = 0; rank < WEFT__RANK_COUNT; rank++)
    TAILQ_FOREACH(h, &r->handles[rank], link) /* a stop removes nothing */
  if (h->ops->stop)
    h->ops->stop(h);
  for (int rank = 0; rank < WEFT__RANK_COUNT; rank++)
    while ((h = TAILQ_FIRST(&r->handles[rank])) != NULL)
      h->ops->close(h); /* removes H */
}

void weft_reactor_free(weft_reactor *reactor) {
  if (!reactor || reactor->freeing)
    return;
  reactor->freeing = 1; /* from now on weft__reactor_add_handle refuses */
  close_handles(reactor);
  idle_queues_free(reactor);
  weft_delayed_call *call;
  while ((call = TAILQ_FIRST(&reactor->delayed)) != NULL) {
    TAILQ_REMOVE(&reactor->delayed, call, link);
    event_free(call->event);
    weft_callback on_drop = call->on_drop;
    void *arg = call->arg;
    weft__free(call);
    if (on_drop)
      on_drop(arg);
  }
  if (reactor->dns)
    evdns_base_free(reactor->dns, 0);
  reactor->dns = NULL;
  event_del(reactor->wake_event);
  event_del(reactor->deferred_event); /* the handles took their work off the queue */
  pthread_mutex_lock(&reactor->queue_lock);
  weft__thread_call *q = reactor->queue_head;
  reactor->queue_head = reactor->queue_tail = NULL;
  pthread_mutex_unlock(&reactor->queue_lock);
  while (q) {
    weft__thread_call *next = q->next;
    weft__free(q);
    q = next;
  }
  /* Freed bufferevents finish in a deferred callback (libevent holds a reference until its
   * queued callbacks ran): let them run, or their buffers and SSLs would leak. Nothing of
   * weft's own can run in this pass: delayed calls and queued calls are gone. */
  event_base_loop(reactor->base, EVLOOP_NONBLOCK);
  reactor_release(reactor);
}

/* --- delayed calls ---------------------------------------------------------------------- */

static int seconds_to_tv(double seconds, struct timeval *tv) {
  if (!isfinite(seconds) || seconds < 0 || seconds > 1e9)
    return WEFT_EINVAL;
  tv->tv_sec = (time_t)seconds;
  tv->tv_usec = (suseconds_t)((seconds - (double)tv->tv_sec) * 1e6);
  return 0;
}

static void on_delayed(evutil_socket_t fd, short what, void *arg) {
  weft_delayed_call *call = arg;
  (void)fd;
  (void)what;
  weft_callback fn = call->fn;
  void *fn_arg = call->arg;
  if (call->keep) { /* stays made: FN re-arms it with weft_delayed_call_reset */
    call->due = HUGE_VAL;
    fn(fn_arg);
    return;
  }
  TAILQ_REMOVE(&call->reactor->delayed, call, link);
  event_free(call->event);
  weft__free(call);
  fn(fn_arg);
}

int weft_reactor_call_later(weft_reactor *reactor, double seconds, weft_callback fn, void *arg,
                            weft_delayed_call **out) {
  return weft__reactor_call_later_full(reactor, seconds, fn, NULL, arg, out);
}

int weft__reactor_call_later_full(weft_reactor *reactor, double seconds, weft_callback fn,
                                  weft_callback on_drop, void *arg, weft_delayed_call **out) {
  struct timeval tv;
  if (out)
    *out = NULL;
  if (!reactor || !fn || seconds_to_tv(seconds, &tv) != 0)
    return WEFT_EINVAL;
  weft_delayed_call *call = weft__calloc(1, sizeof *call);
  if (!call)
    return WEFT_ENOMEM;
  call->reactor = reactor;
  call->fn = fn;
  call->on_drop = on_drop;
  call->arg = arg;
  /* Count SECONDS from now, not from the start of this loop iteration (libevent's cache). */
  event_base_update_cache_time(reactor->base);
  call->event = evtimer_new(reactor->base, on_delayed, call);
  call->due = weft__reactor_now(reactor) + seconds;
  if (!call->event || (!reactor->fake_clock && evtimer_add(call->event, &tv) != 0)) {
    if (call->event)
      event_free(call->event);
    weft__free(call);
    return WEFT_ENOMEM;
  }
  TAILQ_INSERT_TAIL(&reactor->delayed, call, link);
  if (out)
    *out = call;
  return 0;
}

int weft_delayed_call_cancel(weft_delayed_call *call) {
  if (!call)
    return WEFT_EINVAL;
  TAILQ_REMOVE(&call->reactor->delayed, call, link);
  event_free(call->event);
  weft__free(call);
  return 0;
}

int weft_delayed_call_reset(weft_delayed_call *call, double seconds) {
  struct timeval tv;
  if (!call || seconds_to_tv(seconds, &tv) != 0)
    return WEFT_EINVAL;
  event_base_update_cache_time(call->reactor->base);
  call->due = weft__reactor_now(call->reactor) + seconds;
  if (call->reactor->fake_clock)
    return 0; /* weft_testing_clock_advance runs it */
  return evtimer_add(call->event, &tv) == 0 ? 0 : WEFT_ENOMEM;
}

/* --- threads ---------------------------------------------------------------------------- */

int weft_reactor_call_from_thread(weft_reactor *reactor, weft_callback fn, void *arg) {
  if (!reactor || !fn)
    return WEFT_EINVAL;
  weft__thread_call *call = weft__malloc(sizeof *call);
  if (!call)
    return WEFT_ENOMEM;
  call->fn = fn;
  call->arg = arg;
  call->next = NULL;
  pthread_mutex_lock(&reactor->queue_lock);
  if (reactor->queue_tail)
    reactor->queue_tail->next = call;
  else
    reactor->queue_head = call;
  reactor->queue_tail = call;
  wake(reactor);
  pthread_mutex_unlock(&reactor->queue_lock);
  return 0;
}

/* --- names and bookkeeping -------------------------------------------------------------- */

struct evdns_base *weft__reactor_dns(weft_reactor *reactor) {
  if (!reactor->dns) {
    reactor->dns = evdns_base_new(reactor->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                                     EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!reactor->dns) /* no resolv.conf: still answer from /etc/hosts */
      reactor->dns = evdns_base_new(reactor->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (reactor->dns)
      evdns_base_load_hosts(reactor->dns, NULL);
  }
  return reactor->dns;
}

int weft_reactor_set_nameservers(weft_reactor *reactor, const char *servers) {
  if (!reactor || !servers || !*servers)
    return WEFT_EINVAL;
  /* Check the whole list before touching the resolver, so a bad list changes nothing. */
  char *copy = weft__strdup(servers);
  if (!copy)
    return WEFT_ENOMEM;
  int count = 0;
  for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    while (*tok == ' ')
      tok++;
    struct sockaddr_storage ss;
    int len = (int)sizeof ss;
    if (*tok && evutil_parse_sockaddr_port(tok, (struct sockaddr *)&ss, &len) != 0) {
      weft__free(copy);
      return WEFT_EINVAL;
    }
    count += *tok != '\0';
  }
  weft__free(copy);
  if (count == 0)
    return WEFT_EINVAL;
  if (!reactor->dns) {
    reactor->dns = evdns_base_new(reactor->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!reactor->dns)
      return WEFT_ENOMEM;
    evdns_base_load_hosts(reactor->dns, NULL);
  } else {
    evdns_base_clear_nameservers_and_suspend(reactor->dns);
  }
  copy = weft__strdup(servers);
  if (!copy)
    return WEFT_ENOMEM;
  int rc = 0;
  for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    while (*tok == ' ')
      tok++;
    if (*tok && evdns_base_nameserver_ip_add(reactor->dns, tok) != 0)
      rc = WEFT_EINVAL;
  }
  weft__free(copy);
  evdns_base_resume(reactor->dns);
  return rc;
}

unsigned weft_reactor_connection_count(weft_reactor *reactor) {
  return reactor ? reactor->handle_count[WEFT__RANK_CONNECTION] : 0;
}

int weft__reactor_add_handle(weft_reactor *reactor, weft__handle *handle,
                             const weft__handle_ops *ops, weft__handle_rank rank) {
  if (reactor->freeing)
    return WEFT_ESHUTDOWN;
  handle->ops = ops;
  handle->rank = rank;
  TAILQ_INSERT_TAIL(&reactor->handles[rank], handle, link);
  reactor->handle_count[rank]++;
  return 0;
}

void weft__reactor_remove_handle(weft_reactor *reactor, weft__handle *handle) {
  TAILQ_REMOVE(&reactor->handles[handle->rank], handle, link);
  reactor->handle_count[handle->rank]--;
}

int weft__parse_ip(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  if (port < 0 || port > 65535 || !ip)
    return WEFT_EINVAL;
  struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    *len = sizeof *v4;
    return 0;
  }
  const char *s = ip;
  char buf[INET6_ADDRSTRLEN + 2];
  size_t n = strlen(ip);
  if (n >= 2 && ip[0] == '[' && ip[n - 1] == ']' && n - 2 < sizeof buf) {
    memcpy(buf, ip + 1, n - 2);
    buf[n - 2] = '\0';
    s = buf;
  }
  if (inet_pton(AF_INET6, s, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    *len = sizeof *v6;
    return 0;
  }
  return WEFT_EINVAL;
}

/* --- the reactor's clock (idle time-outs, the test clock) ---------------------------------- */

double weft__reactor_now(weft_reactor *reactor) {
  if (reactor->fake_clock)
    return reactor->fake_now;
  /* CLOCK_MONOTONIC_COARSE: a vDSO read, no system call, the resolution libevent's timers
   * have anyway (see weft_reactor_call_later). */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int weft__reactor_run_one_due(weft_reactor *reactor, double until) {
  weft_delayed_call *call, *first = NULL;
  TAILQ_FOREACH(call, &reactor->delayed, link) {
    if (call->due <= until && (!first || call->due < first->due))
      first = call; /* ties: the earliest scheduled, as the list is in scheduling order */
  }
  if (!first)
    return 0;
  if (first->due > reactor->fake_now)
    reactor->fake_now = first->due;
  on_delayed(-1, EV_TIMEOUT, first);
  return 1;
}

/* --- idle queues (see reactor-internal.h) -------------------------------------------------- */

static void idle_queue_free(weft__idle_queue *q) {
  weft__idle_node *node;
  while ((node = TAILQ_FIRST(&q->nodes)) != NULL) { /* reactor free: the objects stay */
    TAILQ_REMOVE(&q->nodes, node, link);
    node->queue = NULL;
  }
  LIST_REMOVE(q, link);
  weft_delayed_call_cancel(q->call);
  weft__free(q);
}

static void idle_queues_free(weft_reactor *r) {
  while (!LIST_EMPTY(&r->idle_queues))
    idle_queue_free(LIST_FIRST(&r->idle_queues));
}

/* Arms Q's call for its head's time (the head is there). The event was made with the queue
 * and sits in libevent's timer heap at most once, so re-adding it needs no memory. */
static void idle_queue_arm(weft__idle_queue *q, double now) {
  double left = TAILQ_FIRST(&q->nodes)->last_activity + q->seconds - now;
  (void)weft_delayed_call_reset(q->call, left > 0 ? left : 0);
}

static void on_idle_queue(void *arg) {
  weft__idle_queue *q = arg;
  double now = weft__reactor_now(q->reactor);
  /* Each pass removes the head or moves it to the tail with the time now (not due again, as
   * SECONDS > 1 ms, unless EXPIRE breaks its contract): the bound only guards against that. */
  size_t budget = q->count;
  weft__idle_node *node;
  q->firing++;
  while ((node = TAILQ_FIRST(&q->nodes)) != NULL && budget-- > 0) {
    if (q->seconds - (now - node->last_activity) > 1e-3)
      break; /* the head is not due: neither is anything behind it */
    q->expire(node);
    if (TAILQ_FIRST(&q->nodes) == node && node->last_activity <= now - q->seconds + 1e-3)
      weft__idle_leave(node); /* EXPIRE neither took it out nor touched it */
  }
  q->firing--;
  if (TAILQ_EMPTY(&q->nodes))
    idle_queue_free(q);
  else
    idle_queue_arm(q, weft__reactor_now(q->reactor));
}

int weft__idle_join(weft_reactor *r, weft__idle_node *node, double seconds,
                    weft__idle_expire_fn expire) {
  weft__idle_queue *q;
  LIST_FOREACH(q, &r->idle_queues, link) {
    if (q->seconds == seconds && q->expire == expire)
      break;
  }
  double now = weft__reactor_now(r);
  if (q && node->queue == q) { /* the same value again: count from now */
    weft__idle_touch(node, now);
    return 0;
  }
  weft__idle_leave(node);
  if (!q) {
    q = weft__calloc(1, sizeof *q);
    if (!q)
      return WEFT_ENOMEM;
    if (weft__reactor_call_later_full(r, seconds, on_idle_queue, NULL, q, &q->call) != 0) {
      weft__free(q);
      return WEFT_ENOMEM;
    }
    q->call->keep = 1;
    q->reactor = r;
    q->expire = expire;
    q->seconds = seconds;
    TAILQ_INIT(&q->nodes);
    LIST_INSERT_HEAD(&r->idle_queues, q, link);
    node->last_activity = now;
    node->queue = q;
    TAILQ_INSERT_TAIL(&q->nodes, node, link); /* the call is armed for it: SECONDS from now */
    q->count = 1;
    return 0;
  }
  int was_empty = TAILQ_EMPTY(&q->nodes);
  node->last_activity = now;
  node->queue = q;
  TAILQ_INSERT_TAIL(&q->nodes, node, link);
  q->count++;
  if (was_empty && !q->firing)
    idle_queue_arm(q, now); /* otherwise armed for an earlier head already, or at its end */
  return 0;
}

void weft__idle_leave(weft__idle_node *node) {
  weft__idle_queue *q = node->queue;
  if (!q)
    return;
  TAILQ_REMOVE(&q->nodes, node, link);
  node->queue = NULL;
  q->count--;
  if (TAILQ_EMPTY(&q->nodes) && !q->firing)
    idle_queue_free(q); /* its call may stay armed for a node gone: it goes with it */
}
