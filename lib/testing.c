/* testing.c: the test clock, the testing transport and the connected pair (see
 * weft/testing.h). The transports are real ones (lib/transport.c) over an AF_UNIX socketpair,
 * created through the same internal entry point as accepted and connected sockets, with an
 * owner hook that records their readiness and their end. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include <weft/testing.h>

#include "alloc-internal.h"
#include "reactor-internal.h"
#include "transport-internal.h"

/* Enough non-blocking passes for a TLS 1.2 or 1.3 handshake and its first records to cross a
 * socketpair: each pass moves each side one step (read, then the deferred write). */
#define PUMP_PASSES 64

int weft_testing_reactor_new(weft_reactor **out) {
  int rc = weft_reactor_new(out);
  if (rc == 0) {
    (*out)->fake_clock = 1;
    (*out)->fake_now = 0;
  }
  return rc;
}

double weft_testing_clock_now(weft_reactor *reactor) {
  return reactor && reactor->fake_clock ? reactor->fake_now : -1;
}

int weft_testing_pump(weft_reactor *reactor) {
  if (!reactor)
    return WEFT_EINVAL;
  if (reactor->running || reactor->freeing)
    return WEFT_EBUSY;
  for (int i = 0; i < PUMP_PASSES; i++)
    event_base_loop(reactor->base, EVLOOP_NONBLOCK);
  return 0;
}

int weft_testing_clock_advance(weft_reactor *reactor, double seconds) {
  if (!reactor || !reactor->fake_clock || !isfinite(seconds) || seconds < 0)
    return WEFT_EINVAL;
  if (reactor->running || reactor->freeing)
    return WEFT_EBUSY;
  double until = reactor->fake_now + seconds;
  int ran = 0;
  weft_testing_pump(reactor); /* what is ready now happens before the clock moves */
  while (weft__reactor_run_one_due(reactor, until)) {
    ran++;
    weft_testing_pump(reactor);
  }
  reactor->fake_now = until;
  return ran;
}

/* --- one end of a socketpair with an owner hook ------------------------------------------- */

typedef struct side {
  weft_transport *t; /* from ready until closed */
  int ready, ended, code;
  weft_factory *factory;
  int is_client_of_pair; /* a pair's client: a failed handshake reaches connection_failed */
} side;

static void side_ready(void *arg, struct weft_transport *transport) {
  side *s = arg;
  s->t = transport;
  s->ready = 1;
}

static void side_closed(void *arg, const weft_reason *reason, int made) {
  side *s = arg;
  s->t = NULL;
  s->ended = 1;
  s->code = reason->code;
  if (!made && !s->ready && s->is_client_of_pair && s->factory->connection_failed)
    s->factory->connection_failed(s->factory, reason);
}

static int make_socketpair(int fds[2]) {
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0)
    return errno == ENOMEM || errno == ENFILE || errno == EMFILE ? WEFT_ENOMEM : WEFT_ESOCKET;
  return 0;
}

static int side_start(weft_reactor *reactor, int fd, weft_factory *factory,
                      weft_cert_options *options, weft_tls_role role, const char *server_name,
                      side *s) {
  weft__owner owner = {side_ready, side_closed, s};
  s->factory = factory;
  weft_transport *t = NULL;
  int rc = weft__transport_start(reactor, fd, NULL, 0, factory, options, role, server_name, 0,
                                 &owner, &t);
  if (rc == 0 && !s->ready && !s->ended)
    s->t = t; /* TLS: handshaking; kept to abort it on free, not returned before ready */
  return rc;
}

/* Detaches S from its transport (S is about to be freed) and aborts the connection. */
static void side_release(side *s) {
  if (s->t && !s->ended) {
    weft__transport_set_owner(s->t, NULL);
    weft__transport_close_with(s->t, WEFT_EABORTED, "closed by the test (testing object freed)");
  }
  s->t = NULL;
}

/* --- the testing transport ---------------------------------------------------------------- */

struct weft_testing_transport {
  weft_reactor *reactor;
  side s;
  int peer_fd; /* the test's end */
  int peer_closed;
  uint8_t *out;
  size_t out_len, out_cap;
};

int weft_testing_transport_new(weft_reactor *reactor, weft_factory *factory,
                               weft_testing_transport **out) {
  if (out)
    *out = NULL;
  if (!reactor || !factory || !factory->build_protocol || !out)
    return WEFT_EINVAL;
  weft_testing_transport *tt = weft__calloc(1, sizeof *tt);
  if (!tt)
    return WEFT_ENOMEM;
  tt->reactor = reactor;
  int fds[2];
  int rc = make_socketpair(fds);
  if (rc != 0) {
    weft__free(tt);
    return rc;
  }
  tt->peer_fd = fds[1];
  *out = tt; /* before the factory runs: its callbacks may use the testing API */
  rc = side_start(reactor, fds[0], factory, NULL, WEFT_TLS_SERVER, NULL, &tt->s);
  if (rc != 0) {
    *out = NULL;
    close(tt->peer_fd);
    weft__free(tt);
  }
  return rc;
}

weft_transport *weft_testing_transport_get(weft_testing_transport *tt) {
  if (!tt || !tt->s.t || tt->s.ended || !tt->s.t->made)
    return NULL;
  return tt->s.t;
}

int weft_testing_transport_feed(weft_testing_transport *tt, const void *data, size_t len) {
  if (!tt || (!data && len > 0))
    return WEFT_EINVAL;
  if (tt->peer_closed)
    return WEFT_ECLOSED;
  size_t done = 0;
  for (int tries = 0; done < len && tries < 64; tries++) {
    ssize_t n = write(tt->peer_fd, (const char *)data + done, len - done);
    if (n > 0)
      done += (size_t)n;
    else if (n < 0 && errno != EAGAIN && errno != EINTR)
      return WEFT_EIO;
    weft_testing_pump(tt->reactor);
  }
  if (done == len)
    weft_testing_pump(tt->reactor);
  return done == len ? 0 : WEFT_EIO;
}

size_t weft_testing_transport_output(weft_testing_transport *tt, const uint8_t **data) {
  if (!tt)
    return 0;
  weft_testing_pump(tt->reactor);
  for (;;) {
    if (tt->out_cap - tt->out_len < 16384) {
      size_t cap = tt->out_cap ? tt->out_cap * 2 : 65536;
      uint8_t *nb = weft__realloc(tt->out, cap);
      if (!nb)
        break;
      tt->out = nb;
      tt->out_cap = cap;
    }
    ssize_t n = read(tt->peer_fd, tt->out + tt->out_len, tt->out_cap - tt->out_len);
    if (n <= 0)
      break;
    tt->out_len += (size_t)n;
    weft_testing_pump(tt->reactor); /* a producer waiting for room goes on */
  }
  if (data)
    *data = tt->out;
  return tt->out_len;
}

void weft_testing_transport_clear(weft_testing_transport *tt) {
  if (tt)
    tt->out_len = 0;
}

int weft_testing_transport_peer_close(weft_testing_transport *tt) {
  if (!tt)
    return WEFT_EINVAL;
  if (tt->peer_closed)
    return WEFT_ECLOSED;
  tt->peer_closed = 1;
  shutdown(tt->peer_fd, SHUT_WR);
  weft_testing_pump(tt->reactor);
  return 0;
}

int weft_testing_transport_close(weft_testing_transport *tt, int code, const char *message) {
  if (!tt || code > 0)
    return WEFT_EINVAL;
  if (!tt->s.t || tt->s.ended)
    return WEFT_ECLOSED;
  weft__transport_close_with(tt->s.t, code, message);
  weft_testing_pump(tt->reactor);
  return 0;
}

int weft_testing_transport_lost(weft_testing_transport *tt, int *code) {
  if (!tt || !tt->s.ended)
    return 0;
  if (code)
    *code = tt->s.code;
  return 1;
}

void weft_testing_transport_free(weft_testing_transport *tt) {
  if (!tt)
    return;
  side_release(&tt->s);
  close(tt->peer_fd);
  weft__free(tt->out);
  weft__free(tt);
}

/* --- the connected pair ------------------------------------------------------------------- */

struct weft_testing_pair {
  weft_reactor *reactor;
  side client, server;
};

int weft_testing_pair_new(weft_reactor *reactor, weft_factory *client, weft_factory *server,
                          weft_cert_options *client_tls, weft_cert_options *server_tls,
                          const char *server_name, weft_testing_pair **out) {
  if (out)
    *out = NULL;
  if (!reactor || !client || !server || !client->build_protocol || !server->build_protocol ||
      !out || (!client_tls) != (!server_tls))
    return WEFT_EINVAL;
  weft_testing_pair *p = weft__calloc(1, sizeof *p);
  if (!p)
    return WEFT_ENOMEM;
  p->reactor = reactor;
  p->client.is_client_of_pair = 1;
  int fds[2];
  int rc = make_socketpair(fds);
  if (rc != 0) {
    weft__free(p);
    return rc;
  }
  *out = p;
  /* The server first: a plain client's connection_made may write at once. */
  rc = side_start(reactor, fds[1], server, server_tls, WEFT_TLS_SERVER, NULL, &p->server);
  if (rc != 0) {
    close(fds[0]);
    *out = NULL;
    weft__free(p);
    return rc;
  }
  rc = side_start(reactor, fds[0], client, client_tls, WEFT_TLS_CLIENT, server_name, &p->client);
  if (rc != 0) {
    *out = NULL;
    side_release(&p->server);
    weft__free(p);
  }
  return rc;
}

static side *pair_side(weft_testing_pair *p, weft_tls_role role) {
  return role == WEFT_TLS_CLIENT ? &p->client : &p->server;
}

weft_transport *weft_testing_pair_transport(weft_testing_pair *pair, weft_tls_role role) {
  if (!pair)
    return NULL;
  side *s = pair_side(pair, role);
  return s->ready && !s->ended && s->t && s->t->made ? s->t : NULL;
}

int weft_testing_pair_ended(weft_testing_pair *pair, weft_tls_role role, int *code) {
  if (!pair || !pair_side(pair, role)->ended)
    return 0;
  if (code)
    *code = pair_side(pair, role)->code;
  return 1;
}

void weft_testing_pair_free(weft_testing_pair *pair) {
  if (!pair)
    return;
  side_release(&pair->client);
  side_release(&pair->server);
  weft__free(pair);
}
