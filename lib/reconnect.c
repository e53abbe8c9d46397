/* Reconnectors: a client that connects again after a failed attempt or a lost connection, with
 * exponential back-off and jitter (Twisted's ReconnectingClientFactory).
 *
 * Each attempt is a small object (struct attempt) that is the weft_factory given to the
 * connector (wrapping the user's, to learn whether build_protocol refused) and the owner of the
 * connection's transport once it is ready (weft__connect's owner hook): that is how the
 * reconnector hears that the connection ended, after the protocol's connection_lost returned,
 * without touching the user's protocol or its callback table. An attempt lives as long as weft
 * may call it (until connection_failed returns, or the transport's closed hook), so the
 * reconnector can be stopped or freed at any moment: it just detaches the attempt
 * (attempt->rc = NULL), which then finishes quietly. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "abi-internal.h"
#include "alloc-internal.h"
#include "connector-internal.h"
#include "endpoint-internal.h"
#include "reactor-internal.h"

#include <weft/endpoint.h>
#include <weft/reconnect.h>
#include <weft/tls.h>
#include <weft/transport.h>

#define ATTEMPT_OF(member_ptr, member)                                                             \
  ((struct attempt *)((char *)(member_ptr)-offsetof(struct attempt, member)))

struct attempt {
  weft_factory factory;      /* given to the connector; first member */
  weft_transport *transport; /* valid from the ready hook until the closed hook */
  weft_connector *connector; /* valid until the ready hook or connection_failed */
  int connected;             /* the ready hook ran: the connection is up (or being built) */
  weft_reconnector *rc;      /* NULL once detached by stop or free */
};

struct weft_reconnector {
  weft_reactor *reactor;
  weft_factory *factory;           /* the user's */
  weft_cert_options *cert_options; /* referenced; NULL for TCP */
  char *host;
  char *server_name;
  char *bind_address;
  int port;
  double connect_timeout;      /* the endpoint's; 0: the connector's default */
  weft_reconnect_options opts; /* the 1.0 members read from the caller's, whatever its size */

  double delay;             /* the next wait, before jitter */
  int retries;              /* retries scheduled since the start or the last connection */
  uint64_t rng;             /* splitmix64 state for the jitter */
  struct attempt *attempt;  /* connecting or connected, or NULL */
  weft_delayed_call *timer; /* the wait for the next attempt, or NULL */
  int stopped;

  /* weft_reconnector_free from inside a callback this file called: freed once it returns. */
  int depth;
  int freed;
};

/* --- life ------------------------------------------------------------------------------- */

void weft_reconnect_options_init(weft_reconnect_options *o) {
  if (!o)
    return;
  memset(o, 0, sizeof *o);
  o->size = sizeof *o;
  o->initial_delay = 1.0;
  o->factor = 2.7182818284590451; /* Twisted's values */
  o->jitter = 0.11962656472;
  o->max_delay = 3600.0;
  o->max_retries = 0;
}

static int options_valid(const weft_reconnect_options *o) {
  return isfinite(o->initial_delay) && o->initial_delay > 0 && isfinite(o->factor) &&
         o->factor >= 1 && isfinite(o->jitter) && o->jitter >= 0 && o->jitter <= 1 &&
         isfinite(o->max_delay) && o->max_delay >= o->initial_delay && o->max_delay <= 1e9 &&
         o->max_retries >= 0;
}

static void rc_destroy(weft_reconnector *rc) {
  weft_cert_options_unref(rc->cert_options);
  weft__free(rc->host);
  weft__free(rc->server_name);
  weft__free(rc->bind_address);
  weft__free(rc);
}

/* Every call into user code that might free the reconnector is bracketed by depth++ and
 * rc_leave, which returns 1 (and frees it if no other such call is running) when it was freed. */
static int rc_leave(weft_reconnector *rc) {
  rc->depth--;
  if (!rc->freed)
    return 0;
  if (rc->depth == 0)
    rc_destroy(rc);
  return 1;
}

/* --- waiting and retrying ------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* The current delay, spread uniformly by the jitter and capped. */
static double next_wait(weft_reconnector *rc) {
  double wait = rc->delay;
  if (rc->opts.jitter > 0) {
    double u = (double)(rng_next(&rc->rng) >> 11) * 0x1.0p-53; /* [0, 1) */
    wait *= 1.0 + rc->opts.jitter * (2.0 * u - 1.0);
  }
  if (wait > rc->opts.max_delay)
    wait = rc->opts.max_delay;
  return wait < 0 ? 0 : wait;
}

static void on_timer(void *arg);

/* The reactor was freed while we waited: it freed the timer; nothing is left to retry on. */
static void on_timer_dropped(void *arg) {
  weft_reconnector *rc = arg;
  rc->timer = NULL;
  rc->stopped = 1;
}

/* What follows a failed attempt or a lost connection. */
enum next_step { NEXT_NOTHING, NEXT_RETRY, NEXT_GIVE_UP };

/* Decides, and schedules, what follows REASON. Runs before the user hears of the failure, so
 * that the state, retries and current delay read from connection_failed are the new ones. For a
 * retry *WAIT gets the wait; a give-up for want of memory sets *ERR. */
static enum next_step plan_next(weft_reconnector *rc, const weft_reason *reason, double *wait,
                                int *err) {
  *err = 0;
  if (rc->stopped)
    return NEXT_NOTHING;
  if (reason->code == WEFT_ESHUTDOWN) { /* weft_reactor_free is under way: no future here */
    rc->stopped = 1;
    return NEXT_NOTHING;
  }
  if (rc->opts.max_retries > 0 && rc->retries >= rc->opts.max_retries) {
    rc->stopped = 1;
    return NEXT_GIVE_UP;
  }
  *wait = next_wait(rc);
  /* libevent arms timers from the time its loop iteration began, which may be long ago in a
   * slow callback: refresh it so the wait is counted from now. */
  *err =
      weft__reactor_call_later_full(rc->reactor, *wait, on_timer, on_timer_dropped, rc, &rc->timer);
  if (*err != 0) {
    rc->stopped = 1;
    return NEXT_GIVE_UP;
  }
  rc->retries++;
  rc->delay = fmin(rc->delay * rc->opts.factor, rc->opts.max_delay);
  return NEXT_RETRY;
}

/* Tells the reconnector's own callbacks what plan_next decided. */
static void announce(weft_reconnector *rc, enum next_step next, double wait,
                     const weft_reason *reason, int err) {
  if (next == NEXT_RETRY && rc->timer && rc->opts.on_retry) { /* not stopped meanwhile */
    rc->depth++;
    rc->opts.on_retry(rc, wait, reason, rc->opts.user_data);
    rc_leave(rc);
  } else if (next == NEXT_GIVE_UP && rc->opts.on_give_up) {
    weft_reason no_timer = {err, "cannot schedule the next connection attempt", -1, 0, 0, 0};
    rc->depth++;
    rc->opts.on_give_up(rc, err ? &no_timer : reason, rc->opts.user_data);
    rc_leave(rc);
  }
}

/* A failed attempt: plan the next one, tell the user's factory (if NOTIFY), then announce. */
static void attempt_failed_for(weft_reconnector *rc, const weft_reason *reason, int notify) {
  double wait = 0;
  int err;
  enum next_step next = plan_next(rc, reason, &wait, &err);
  if (notify && rc->factory->connection_failed) {
    rc->depth++;
    rc->factory->connection_failed(rc->factory, reason);
    if (rc_leave(rc))
      return;
  }
  announce(rc, next, wait, reason, err);
}

/* A lost connection (its protocol has heard of it already). */
static void connection_ended(weft_reconnector *rc, const weft_reason *reason) {
  double wait = 0;
  int err;
  enum next_step next = plan_next(rc, reason, &wait, &err);
  announce(rc, next, wait, reason, err);
}

/* --- one attempt ---------------------------------------------------------------------- */

/* The owner hook, from the connector: the connection is ready, build_protocol follows. */
static void attempt_ready(void *arg, weft_transport *transport) {
  struct attempt *a = arg;
  a->connector = NULL; /* freed by now */
  a->transport = transport;
  a->connected = 1;
}

static weft_protocol *attempt_build(weft_factory *factory, weft_transport *transport,
                                    const struct sockaddr *peer) {
  struct attempt *a = ATTEMPT_OF(factory, factory);
  weft_reconnector *rc = a->rc;
  if (!rc) /* freed meanwhile: refuse quietly (attempt_closed frees A) */
    return NULL;
  rc->depth++;
  weft_protocol *p = rc->factory->build_protocol(rc->factory, transport, peer);
  if (rc_leave(rc))
    return p;        /* freed from build_protocol: A was detached, the connection goes on */
  if (p && p->ops) { /* connection_made follows: the back-off starts again from the beginning */
    rc->delay = rc->opts.initial_delay;
    rc->retries = 0;
  }
  return p;
}

/* The owner hook: the transport ended, after the protocol's connection_lost returned (MADE),
 * or right after build_protocol refused it. */
static void attempt_closed(void *arg, const weft_reason *reason, int made) {
  struct attempt *a = arg;
  weft_reconnector *rc = a->rc;
  weft__free(a);
  if (!rc) /* detached by weft_reconnector_free: nothing follows */
    return;
  rc->attempt = NULL;
  if (made) {
    connection_ended(rc, reason);
    return;
  }
  /* Refused: the connection closed quietly (protocol.h rule 1) and counts as a failure. */
  char msg[160];
  snprintf(msg, sizeof msg, "%s port %d: %s", rc->host, rc->port, weft_strerror(WEFT_EREFUSED));
  weft_reason why = {WEFT_EREFUSED, msg, -1, 0, 0, 0};
  attempt_failed_for(rc, &why, 0);
}

static void attempt_connection_failed(weft_factory *factory, const weft_reason *reason) {
  struct attempt *a = ATTEMPT_OF(factory, factory);
  weft_reconnector *rc = a->rc;
  weft__free(a);
  if (!rc) /* cancelled by stop or free: nobody is told (reconnect.h rule 4) */
    return;
  rc->attempt = NULL;
  attempt_failed_for(rc, reason, 1);
}

/* Starts the next attempt. Returns 0 or the error of weft_connect_* (nothing started then). */
static int start_attempt(weft_reconnector *rc) {
  struct attempt *a = weft__calloc(1, sizeof *a);
  if (!a)
    return WEFT_ENOMEM;
  a->factory.build_protocol = attempt_build;
  a->factory.connection_failed = attempt_connection_failed;
  a->rc = rc;
  const weft__owner owner = {attempt_ready, attempt_closed, a};
  int err =
      weft__connect(rc->reactor, rc->host, rc->port, &a->factory, rc->cert_options, rc->server_name,
                    rc->connect_timeout, rc->bind_address, &owner, &a->connector);
  if (err != 0) {
    weft__free(a);
    return err;
  }
  rc->attempt = a;
  return 0;
}

static void on_timer(void *arg) {
  weft_reconnector *rc = arg;
  rc->timer = NULL;
  int err = start_attempt(rc);
  if (err != 0) { /* reported as a failed attempt, from the loop as usual */
    char msg[160];
    snprintf(msg, sizeof msg, "%s port %d: cannot start a connection attempt: %s", rc->host,
             rc->port, weft_strerror(err));
    weft_reason why = {err, msg, -1, 0, 0, 0};
    attempt_failed_for(rc, &why, 1);
  }
}

/* --- the public functions ------------------------------------------------------------- */

int weft_reconnect_start(weft_reactor *reactor, const weft_endpoint *endpoint,
                         weft_factory *factory, const weft_reconnect_options *options,
                         weft_reconnector **out) {
  if (out)
    *out = NULL;
  weft_reconnect_options defaults;
  if (!options) {
    weft_reconnect_options_init(&defaults);
    options = &defaults;
  }
  if (!reactor || !endpoint || endpoint->role != WEFT_ENDPOINT_CLIENT || !endpoint->host ||
      endpoint->port < 1 || !factory || !factory->build_protocol || !out || !options_valid(options))
    return WEFT_EINVAL;
  weft_reconnector *rc = weft__calloc(1, sizeof *rc);
  if (!rc)
    return WEFT_ENOMEM;
  rc->reactor = reactor;
  rc->factory = factory;
  rc->port = endpoint->port;
  rc->connect_timeout = endpoint->timeout;
  /* Only what this version knows is copied: a caller built against newer headers may pass a
   * larger struct, whose tail is ignored (the size rule). Every member is a 1.0 one so far. */
  memcpy(&rc->opts, options, WEFT__KNOWN_SIZE(options, weft_reconnect_options));
  rc->opts.size = sizeof rc->opts;
  rc->delay = options->initial_delay;
  const char *server_name = endpoint->tls ? endpoint->server_name : NULL;
  rc->host = weft__strdup(endpoint->host);
  rc->server_name = server_name ? weft__strdup(server_name) : NULL;
  rc->bind_address = endpoint->bind_address ? weft__strdup(endpoint->bind_address) : NULL;
  if (endpoint->tls)
    rc->cert_options = weft_cert_options_ref(endpoint->tls);
  if (!rc->host || (server_name && !rc->server_name) ||
      (endpoint->bind_address && !rc->bind_address)) {
    rc_destroy(rc);
    return WEFT_ENOMEM;
  }
  rc->rng = options->seed;
  if (rc->rng == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rc->rng = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ (uintptr_t)rc;
  }
  int err = start_attempt(rc);
  if (err != 0) {
    rc_destroy(rc);
    return err;
  }
  *out = rc;
  return 0;
}

int weft_reconnector_stop(weft_reconnector *rc) {
  if (!rc)
    return WEFT_EINVAL;
  rc->stopped = 1;
  if (rc->timer) {
    weft_delayed_call_cancel(rc->timer);
    rc->timer = NULL;
  }
  struct attempt *a = rc->attempt;
  if (a && !a->connected) { /* still connecting: cancel it, quietly */
    rc->attempt = NULL;
    a->rc = NULL;
    if (a->connector)
      weft_connector_cancel(a->connector); /* connection_failed follows and frees A */
  }
  return 0;
}

void weft_reconnector_free(weft_reconnector *rc) {
  if (!rc || rc->freed)
    return;
  weft_reconnector_stop(rc);
  if (rc->attempt) { /* a live connection (or one being built) goes on without us */
    rc->attempt->rc = NULL;
    rc->attempt = NULL;
  }
  rc->freed = 1;
  if (rc->depth == 0)
    rc_destroy(rc);
}

weft_reconnect_state weft_reconnector_state(const weft_reconnector *rc) {
  if (!rc)
    return WEFT_RECONNECT_STOPPED;
  if (rc->attempt)
    return rc->attempt->connected ? WEFT_RECONNECT_CONNECTED : WEFT_RECONNECT_CONNECTING;
  return rc->timer ? WEFT_RECONNECT_WAITING : WEFT_RECONNECT_STOPPED;
}

int weft_reconnector_retries(const weft_reconnector *rc) {
  return rc ? rc->retries : -1;
}

double weft_reconnector_current_delay(const weft_reconnector *rc) {
  return rc ? rc->delay : -1.0;
}

weft_transport *weft_reconnector_transport(const weft_reconnector *rc) {
  return rc && rc->attempt ? rc->attempt->transport : NULL;
}
