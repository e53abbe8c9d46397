/* tests/check_chaos.c: a chaos peer against a TLS server and a STARTTLS server.
 *
 * Many short connections (WEFT_CHAOS_CONNECTIONS per server, 200 by default: about 0.5 s, 8 s
 * under valgrind; CI's "chaos" stage runs 10,000 under ASan + UBSan) from raw sockets driven
 * by the server's own reactor (no threads, no sleeps). Each connection picks, from a seeded PRNG,
 * a scenario (connect only, garbage, a truncated ClientHello, a malformed record, a real
 * handshake cut after a random number of steps, a full handshake with data cut while the echo
 * is in flight, a clean session; for STARTTLS also a partial command line, clear text pipelined
 * after STARTTLS, a FIN before GO, and every TLS scenario after GO) and an ending (reset with
 * SO_LINGER 0, FIN, close, garbage then FIN, a partial record then FIN), after a random delay.
 * At most WEFT_CHAOS_CONCURRENCY (32) run at once. The seed is printed; WEFT_CHAOS_SEED=N
 * replays a run (each client's choices depend only on the seed and its index).
 *
 * Asserted, for each server:
 *  - every callback kept protocol.h's lifecycle (tu_factory_check: made and lost once each, in
 *    order, nothing after lost), made == lost, no connection refused;
 *  - each chaos connection ended on the server exactly once, as connection_made or (TLS)
 *    handshake_failed: never twice, and exactly once for every connection the server spoke on
 *    (so accepted == made + handshake_failed). Each client binds its own source address,
 *    127.1.X.Y, which the server sees as the peer, so outcomes are matched one to one (Linux
 *    never hands out a connection reset before accept(), so those may have no outcome);
 *  - the server answers within CHAOS_WAIT seconds whenever a client waits for it: GO, a
 *    handshake, an echo, a close after the client's FIN or after a fatal error (a liveness
 *    bound, not a timing assertion);
 *  - STARTTLS: no data_received between start_tls and tls_started(0) (clear text must never pass
 *    as TLS), tls_started(0) only with weft_transport_is_tls;
 *  - afterwards the server still serves a normal weft client, no transport is left, and the
 *    process has as many descriptors open as before the chaos;
 *  - no sanitizer report, no leak (CI runs the suite under ASan + UBSan and valgrind).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "testutil.h"
#include "tlsutil.h"

/* The longest a chaos client waits for the server before calling it a stall, in seconds. */
#define CHAOS_WAIT 20.0
#define CHAOS_PAYLOAD_MAX 4096

/* --- Seeded PRNG (splitmix64): one stream per client, from the seed and its index ---------- */

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint32_t below(uint64_t *s, uint32_t n) {
  return n ? (uint32_t)(splitmix(s) % n) : 0;
}

static void fill_random(uint64_t *s, uint8_t *buf, size_t len) {
  for (size_t i = 0; i < len; i++)
    buf[i] = (uint8_t)splitmix(s);
}

/* --- What the chaos clients do ------------------------------------------------------------ */

typedef enum target { TARGET_TLS, TARGET_STARTTLS } target;

typedef enum scenario {
  SC_CONNECT,          /* connect (STARTTLS: after GO for the TLS part), then the ending */
  SC_GARBAGE,          /* random bytes where a ClientHello belongs */
  SC_PARTIAL_HELLO,    /* a prefix of a real ClientHello */
  SC_BAD_RECORD,       /* a handshake record header with a random (maybe oversized) length */
  SC_HANDSHAKE_CUT,    /* a real handshake, cut after a random number of steps */
  SC_DATA_CUT,         /* a full handshake, data, cut while the echo is in flight */
  SC_CLEAN,            /* a normal session: handshake, echo, close_notify */
  SC_ST_PARTIAL_LINE,  /* STARTTLS only: a prefix of "STARTTLS", then the ending */
  SC_ST_INJECT,        /* STARTTLS only: "STARTTLS\r\n" and clear text in one segment */
  SC_ST_FIN_BEFORE_GO, /* STARTTLS only: "STARTTLS\r\n" then FIN at once */
  SC_COUNT
} scenario;

static const char *const scenario_name[SC_COUNT] = {
    "connect",  "garbage", "partial-hello", "bad-record", "handshake-cut",
    "data-cut", "clean",   "partial-line",  "inject",     "fin-before-go"};

typedef enum ending {
  END_RST,            /* close with SO_LINGER 0: the server gets a reset */
  END_FIN,            /* shutdown(SHUT_WR), then wait for the server to close */
  END_CLOSE,          /* close() */
  END_GARBAGE,        /* random bytes, then FIN */
  END_PARTIAL_RECORD, /* an application-data record header and part of its body, then FIN */
  END_COUNT
} ending;

static const char *const ending_name[END_COUNT] = {"rst", "fin", "close", "garbage+fin",
                                                   "partial-record+fin"};

typedef enum phase {
  PH_CONNECT,   /* non-blocking connect in progress */
  PH_WAIT_GO,   /* STARTTLS sent, waiting for "GO\n" */
  PH_DELAY,     /* a random pause before the ending */
  PH_HANDSHAKE, /* OpenSSL client handshake on the raw socket */
  PH_ECHO,      /* payload written, reading the echo */
  PH_SHUTDOWN,  /* close_notify sent, waiting for the server's close */
  PH_DRAIN      /* FIN sent (or the server must close): reading until EOF */
} phase;

typedef struct chaos_run chaos_run;

typedef struct chaos_client {
  chaos_run *run;
  int index;
  int fd;
  uint64_t rng;
  scenario sc;
  ending end;
  phase ph;
  int cut_steps, steps; /* SC_HANDSHAKE_CUT: cut after this many handshake round trips */
  double delay;         /* before the ending, in seconds */
  size_t payload_len, cut_at, echoed;
  int wrote;
  char plain[16];
  size_t plain_len;
  SSL *ssl;
  struct event *ev;
  uint8_t payload[CHAOS_PAYLOAD_MAX];
} chaos_client;

struct chaos_run {
  weft_reactor *reactor;
  target target;
  int port;
  uint64_t seed;
  SSL_CTX *ctx; /* the chaos clients' OpenSSL context (no verification: they are the attackers) */
  uint8_t hello[4096];
  size_t hello_len;
  weft_cert_options *server_options;
  tu_factory server;

  int total, concurrency, started, finished, active;
  unsigned char *seen;  /* per client: outcomes on the server (made or handshake_failed) */
  unsigned char *spoke; /* per client: the server sent it something, so it was accepted */
  int per_scenario[SC_COUNT], per_ending[END_COUNT];
  int handshakes, cleans, stalls, unknown_peers, twice;
  int failures;
  char failure[256]; /* the first */
};

static void client_fail(chaos_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void client_fail(chaos_client *c, const char *fmt, ...) {
  chaos_run *run = c->run;
  if (run->failures++ == 0) {
    va_list ap;
    int n = snprintf(run->failure, sizeof run->failure, "client %d (%s, %s, phase %d): ", c->index,
                     scenario_name[c->sc], ending_name[c->end], (int)c->ph);
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof run->failure)
      vsnprintf(run->failure + n, sizeof run->failure - (size_t)n, fmt, ap);
    va_end(ap);
  }
}

static void start_clients(chaos_run *run);
static void client_step(chaos_client *c);

static void client_finish(chaos_client *c, int reset) {
  chaos_run *run = c->run;
  if (c->ev)
    event_free(c->ev);
  if (c->ssl)
    SSL_free(c->ssl); /* does not close the descriptor (SSL_set_fd's BIO_NOCLOSE) */
  if (c->fd >= 0) {
    if (reset) {
      struct linger lg = {1, 0};
      (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(c->fd);
  }
  run->finished++;
  run->active--;
  free(c);
  start_clients(run);
}

static void on_client_event(evutil_socket_t fd, short what, void *arg);

/* Waits for WHAT (EV_READ, EV_WRITE, or 0 for a pure timer) at most SECONDS. */
static void client_wait(chaos_client *c, short what, double seconds) {
  if (c->ev)
    event_free(c->ev);
  struct event_base *base = weft_reactor_event_base(c->run->reactor);
  c->ev = event_new(base, what ? c->fd : -1, what, on_client_event, c);
  ck_assert_ptr_nonnull(c->ev);
  struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
  ck_assert_int_eq(event_add(c->ev, &tv), 0);
}

static void send_bytes(chaos_client *c, const void *data, size_t len) {
  /* Best effort: a chaos client does not care whether the server is still there. */
  (void)send(c->fd, data, len, MSG_NOSIGNAL);
}

/* The ending: C's connection ends the way it drew. */
static void client_end(chaos_client *c) {
  uint8_t buf[1024];
  switch (c->end) {
    case END_RST:
      client_finish(c, 1);
      return;
    case END_CLOSE:
      client_finish(c, 0);
      return;
    case END_GARBAGE: {
      size_t n = 1 + below(&c->rng, sizeof buf);
      fill_random(&c->rng, buf, n);
      send_bytes(c, buf, n);
      break;
    }
    case END_PARTIAL_RECORD: {
      /* application_data, TLS 1.2 framing, announcing LEN bytes; only part of them follows */
      size_t len = 64 + below(&c->rng, 16384 - 64);
      size_t part = below(&c->rng, sizeof buf - 5 < len ? sizeof buf - 5 : len);
      buf[0] = 0x17, buf[1] = 0x03, buf[2] = 0x03, buf[3] = (uint8_t)(len >> 8),
      buf[4] = (uint8_t)len;
      fill_random(&c->rng, buf + 5, part);
      send_bytes(c, buf, 5 + part);
      break;
    }
    case END_FIN:
    case END_COUNT:
      break;
  }
  (void)shutdown(c->fd, SHUT_WR);
  c->ph = PH_DRAIN;
  client_wait(c, EV_READ, CHAOS_WAIT);
}

static void client_delay_then_end(chaos_client *c) {
  c->ph = PH_DELAY;
  client_wait(c, 0, c->delay);
}

/* The TLS part of the scenario: at once on the TLS port, after GO on the STARTTLS port. */
static void client_tls_part(chaos_client *c) {
  chaos_run *run = c->run;
  uint8_t buf[512];
  switch (c->sc) {
    case SC_GARBAGE: {
      size_t n = 1 + below(&c->rng, sizeof buf);
      fill_random(&c->rng, buf, n);
      send_bytes(c, buf, n);
      client_delay_then_end(c);
      return;
    }
    case SC_PARTIAL_HELLO:
      send_bytes(c, run->hello, 1 + below(&c->rng, (uint32_t)run->hello_len - 1));
      client_delay_then_end(c);
      return;
    case SC_BAD_RECORD: {
      /* a handshake record whose length may exceed the 2^14 + 2048 limit, with some body */
      size_t len = below(&c->rng, 0x10000);
      size_t part = below(&c->rng, sizeof buf - 5);
      buf[0] = 0x16, buf[1] = 0x03, buf[2] = (uint8_t)below(&c->rng, 4),
      buf[3] = (uint8_t)(len >> 8), buf[4] = (uint8_t)len;
      fill_random(&c->rng, buf + 5, part);
      send_bytes(c, buf, 5 + part);
      client_delay_then_end(c);
      return;
    }
    case SC_HANDSHAKE_CUT:
    case SC_DATA_CUT:
    case SC_CLEAN:
      c->ssl = SSL_new(run->ctx);
      ck_assert_ptr_nonnull(c->ssl);
      ck_assert_int_eq(SSL_set_fd(c->ssl, c->fd), 1);
      if (below(&c->rng, 2)) /* half of them at TLS 1.2: more round trips to cut */
        ck_assert_int_eq(SSL_set_max_proto_version(c->ssl, TLS1_2_VERSION), 1);
      SSL_set_connect_state(c->ssl);
      c->ph = PH_HANDSHAKE;
      client_step(c);
      return;
    default:
      client_delay_then_end(c);
      return;
  }
}

/* Reads what the server sent while C drains; returns 1 once the server closed. */
static int drain_raw(chaos_client *c) {
  uint8_t buf[4096];
  for (int i = 0; i < 64; i++) {
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n > 0) {
      c->run->spoke[c->index] = 1;
      continue;
    }
    if (n == 0)
      return 1;
    if (errno == EINTR)
      continue;
    return errno != EAGAIN && errno != EWOULDBLOCK; /* a reset also means closed */
  }
  return 0;
}

static void client_step(chaos_client *c) {
  chaos_run *run = c->run;
  for (;;) {
    switch (c->ph) {
      case PH_CONNECT: {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
          client_fail(c, "connect: %s", strerror(err ? err : errno));
          client_finish(c, 0);
          return;
        }
        if (run->target == TARGET_TLS) {
          client_tls_part(c);
          return;
        }
        static const char cmd[] = "STARTTLS\r\n";
        if (c->sc == SC_CONNECT) {
          client_delay_then_end(c);
        } else if (c->sc == SC_ST_PARTIAL_LINE) {
          send_bytes(c, cmd, 1 + below(&c->rng, 7));
          client_delay_then_end(c);
        } else if (c->sc == SC_ST_INJECT) {
          /* the command and clear text in one segment: the server must close, never upgrade */
          uint8_t buf[256];
          memcpy(buf, cmd, sizeof cmd - 1);
          size_t n = 1 + below(&c->rng, sizeof buf - (sizeof cmd - 1));
          fill_random(&c->rng, buf + sizeof cmd - 1, n);
          send_bytes(c, buf, sizeof cmd - 1 + n);
          c->ph = PH_DRAIN;
          client_wait(c, EV_READ, CHAOS_WAIT);
        } else if (c->sc == SC_ST_FIN_BEFORE_GO) {
          send_bytes(c, cmd, sizeof cmd - 1);
          (void)shutdown(c->fd, SHUT_WR);
          c->ph = PH_DRAIN;
          client_wait(c, EV_READ, CHAOS_WAIT);
        } else {
          send_bytes(c, cmd, sizeof cmd - 1);
          c->ph = PH_WAIT_GO;
          client_wait(c, EV_READ, CHAOS_WAIT);
        }
        return;
      }
      case PH_WAIT_GO: {
        /* Reads byte by byte up to the newline: nothing of the TLS stream may be consumed. */
        while (c->plain_len < 3) {
          ssize_t n = recv(c->fd, c->plain + c->plain_len, 1, 0);
          if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            client_wait(c, EV_READ, CHAOS_WAIT);
            return;
          }
          if (n <= 0) {
            client_fail(c, "the STARTTLS server closed before GO");
            client_finish(c, 0);
            return;
          }
          c->plain_len++;
          run->spoke[c->index] = 1;
        }
        if (memcmp(c->plain, "GO\n", 3) != 0) {
          client_fail(c, "the STARTTLS server answered '%.3s', not GO", c->plain);
          client_finish(c, 0);
          return;
        }
        client_tls_part(c);
        return;
      }
      case PH_DELAY:
        client_end(c);
        return;
      case PH_HANDSHAKE: {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r == 1) {
          run->spoke[c->index] = 1;
          run->handshakes++;
          if (c->sc == SC_HANDSHAKE_CUT) { /* it completed before its cut: cut now */
            client_delay_then_end(c);
            return;
          }
          c->ph = PH_ECHO;
          continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
          if (c->sc == SC_HANDSHAKE_CUT && ++c->steps >= c->cut_steps) {
            client_delay_then_end(c);
            return;
          }
          client_wait(c, e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE, CHAOS_WAIT);
          return;
        }
        char msg[160];
        ERR_error_string_n(ERR_peek_last_error(), msg, sizeof msg);
        client_fail(c, "the server refused a valid handshake: SSL error %d, %s", e, msg);
        client_finish(c, 1);
        return;
      }
      case PH_ECHO: {
        ERR_clear_error();
        if (!c->wrote) {
          int r = SSL_write(c->ssl, c->payload, (int)c->payload_len);
          if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
              client_wait(c, e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE, CHAOS_WAIT);
              return;
            }
            client_fail(c, "SSL_write failed: SSL error %d", e);
            client_finish(c, 1);
            return;
          }
          c->wrote = 1;
        }
        while (c->echoed < c->payload_len) {
          if (c->sc == SC_DATA_CUT && c->echoed >= c->cut_at) {
            client_delay_then_end(c);
            return;
          }
          uint8_t buf[CHAOS_PAYLOAD_MAX];
          int r = SSL_read(c->ssl, buf, (int)(c->payload_len - c->echoed));
          if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
              client_wait(c, e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE, CHAOS_WAIT);
              return;
            }
            client_fail(c, "the echo ended after %zu of %zu bytes (SSL error %d)", c->echoed,
                        c->payload_len, e);
            client_finish(c, 1);
            return;
          }
          if (memcmp(buf, c->payload + c->echoed, (size_t)r) != 0) {
            client_fail(c, "the echo differs from what was sent at byte %zu", c->echoed);
            client_finish(c, 1);
            return;
          }
          c->echoed += (size_t)r;
        }
        if (c->sc != SC_CLEAN) { /* a data cut drawn at the very end */
          client_delay_then_end(c);
          return;
        }
        (void)SSL_shutdown(c->ssl); /* close_notify; the server answers and closes */
        c->ph = PH_SHUTDOWN;
        continue;
      }
      case PH_SHUTDOWN: {
        uint8_t buf[256];
        ERR_clear_error();
        int r = SSL_read(c->ssl, buf, sizeof buf);
        if (r > 0) {
          client_fail(c, "data after the echo");
          client_finish(c, 1);
          return;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
          client_wait(c, EV_READ, CHAOS_WAIT);
          return;
        }
        if (e != SSL_ERROR_ZERO_RETURN) {
          char msg[160];
          ERR_error_string_n(ERR_peek_last_error(), msg, sizeof msg);
          client_fail(c, "no close_notify from the server after ours (%s, SSL error %d, %s)",
                      SSL_get_version(c->ssl), e, msg);
          client_finish(c, 1);
          return;
        }
        run->cleans++;
        client_finish(c, 0);
        return;
      }
      case PH_DRAIN:
        if (drain_raw(c)) {
          client_finish(c, 0);
          return;
        }
        client_wait(c, EV_READ, CHAOS_WAIT);
        return;
    }
  }
}

static void on_client_event(evutil_socket_t fd, short what, void *arg) {
  chaos_client *c = arg;
  (void)fd;
  if ((what & EV_TIMEOUT) && c->ph != PH_DELAY) {
    c->run->stalls++;
    client_fail(c, "the server did not answer within %.0f s", CHAOS_WAIT);
    client_finish(c, 1);
    return;
  }
  client_step(c);
}

/* Starts client INDEX: draws its scenario, ending and timings, binds 127.1.X.Y, connects. */
static void start_client(chaos_run *run, int index) {
  chaos_client *c = calloc(1, sizeof *c);
  ck_assert_ptr_nonnull(c);
  c->run = run;
  c->index = index;
  c->rng = run->seed ^ ((uint64_t)index * 0xD1B54A32D192ED03ull);
  (void)splitmix(&c->rng);
  c->sc = (scenario)below(&c->rng, run->target == TARGET_STARTTLS ? SC_COUNT : SC_ST_PARTIAL_LINE);
  c->end = (ending)below(&c->rng, END_COUNT);
  c->cut_steps = 1 + (int)below(&c->rng, 3);
  /* no pause for a third of them; else up to 5 ms */
  c->delay = below(&c->rng, 3) == 0 ? 0.0 : below(&c->rng, 5000) / 1e6;
  c->payload_len = 1 + below(&c->rng, CHAOS_PAYLOAD_MAX);
  c->cut_at = below(&c->rng, (uint32_t)c->payload_len);
  fill_random(&c->rng, c->payload, c->payload_len);
  run->per_scenario[c->sc]++;
  run->per_ending[c->end]++;

  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(c->fd, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(0x7f010000u + (uint32_t)index + 1u); /* 127.1.X.Y */
  ck_assert_msg(bind(c->fd, (struct sockaddr *)&sin, sizeof sin) == 0, "bind 127.1.x.y: %s",
                strerror(errno));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons((uint16_t)run->port);
  int r = connect(c->fd, (struct sockaddr *)&sin, sizeof sin);
  ck_assert_msg(r == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
  c->ph = PH_CONNECT;
  client_wait(c, EV_WRITE, CHAOS_WAIT);
}

static void start_clients(chaos_run *run) {
  while (run->active < run->concurrency && run->started < run->total) {
    run->active++;
    start_client(run, run->started++);
  }
}

/* --- The servers ---------------------------------------------------------------------------- */

/* A server-side outcome (build_protocol or handshake_failed) for the peer PEER. */
static void record_outcome(chaos_run *run, const struct sockaddr *peer) {
  if (!peer || peer->sa_family != AF_INET) {
    run->unknown_peers++;
    return;
  }
  uint32_t ip = ntohl(((const struct sockaddr_in *)peer)->sin_addr.s_addr);
  if (ip == INADDR_LOOPBACK)
    return; /* the normal clients, counted by their own checks */
  if ((ip >> 16) != 0x7f01u || (ip & 0xffffu) == 0 || (int)(ip & 0xffffu) > run->total) {
    run->unknown_peers++;
    return;
  }
  if (run->seen[(ip & 0xffffu) - 1]++ != 0)
    run->twice++;
}

typedef struct starttls_state {
  char line[16];
  size_t len;
  int upgraded; /* start_tls was called */
} starttls_state;

static void server_on_build(tu_factory *f, tu_conn *c, weft_transport *t) {
  chaos_run *run = f->user;
  (void)t;
  record_outcome(run, (const struct sockaddr *)&c->peer);
  if (run->target == TARGET_STARTTLS) {
    c->user = calloc(1, sizeof(starttls_state));
    ck_assert_ptr_nonnull(c->user);
  }
}

static void server_on_handshake_failed(tu_factory *f, const struct sockaddr *peer,
                                       const weft_reason *reason) {
  (void)reason;
  record_outcome(f->user, peer);
}

/* The STARTTLS server: "STARTTLS\n" (CR optional) is the only clear-text command; anything
 * pipelined after it is refused; after the handshake it echoes. */
static void starttls_on_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  starttls_state *s = c->user;
  chaos_run *run = c->factory->user;
  if (s->upgraded) {
    if (!weft_transport_is_tls(t) || c->tls_started != 1 || c->tls_started_status != 0)
      tu_conn_violation(c, "data_received after start_tls before tls_started(0): %zu bytes", len);
    else
      (void)weft_transport_write(t, data, len);
    return;
  }
  for (size_t i = 0; i < len; i++) {
    if (data[i] == '\r')
      continue;
    if (data[i] != '\n') {
      if (s->len + 1 == sizeof s->line) {
        weft_transport_abort_connection(t);
        return;
      }
      s->line[s->len++] = (char)data[i];
      continue;
    }
    s->line[s->len] = '\0';
    if (strcmp(s->line, "STARTTLS") != 0 || i + 1 < len) { /* unknown, or pipelined clear text */
      weft_transport_abort_connection(t);
      return;
    }
    ck_assert_int_eq(weft_transport_write(t, "GO\n", 3), 0);
    if (weft_transport_start_tls(t, run->server_options, WEFT_TLS_SERVER, NULL) != 0) {
      tu_conn_violation(c, "start_tls failed on a live connection");
      weft_transport_abort_connection(t);
      return;
    }
    s->upgraded = 1;
    return;
  }
}

static void starttls_on_tls_started(tu_conn *c, weft_transport *t, int status) {
  starttls_state *s = c->user;
  if (!s->upgraded)
    tu_conn_violation(c, "tls_started without start_tls");
  if (c->tls_started != 1)
    tu_conn_violation(c, "tls_started called %d times", c->tls_started);
  if (status == 0 && !weft_transport_is_tls(t))
    tu_conn_violation(c, "tls_started(0) but weft_transport_is_tls is 0");
}

static void starttls_on_lost(tu_conn *c, weft_transport *t, const weft_reason *reason) {
  (void)t, (void)reason;
  free(c->user);
  c->user = NULL;
}

/* --- A normal client at the end (and a warm-up one at the start) ---------------------------- */

static int normal_upgraded_marker;

static void normal_on_made(tu_conn *c, weft_transport *t) {
  (void)t;
  tu_conn_write_str(c, "STARTTLS\r\n");
}

static void normal_on_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  (void)data, (void)len;
  if (c->user == NULL && c->rx_len == 3 && memcmp(c->rx, "GO\n", 3) == 0) {
    c->user = &normal_upgraded_marker;
    weft_cert_options *opts = c->factory->user;
    ck_assert_int_eq(weft_transport_start_tls(t, opts, WEFT_TLS_CLIENT, "localhost"), 0);
  }
}

static void normal_on_tls_started(tu_conn *c, weft_transport *t, int status) {
  (void)t;
  ck_assert_msg(status == 0, "the normal STARTTLS client's handshake failed: %s",
                weft_err_name(status));
  tu_conn_write_str(c, "ping\n");
}

static int no_connection_left(void *arg) {
  chaos_run *run = arg;
  return weft_reactor_connection_count(run->reactor) == 0 && run->server.lost == run->server.made;
}

/* Connects a normal weft client, checks the echo of "ping\n" (after GO for STARTTLS), closes. */
static void normal_client(chaos_run *run, const tu_pki *pki) {
  tu_factory cf;
  tu_factory_init(&cf);
  weft_cert_options *opts = tu_client_options(pki);
  const char *want = "ping\n";
  if (run->target == TARGET_TLS) {
    cf.conn_config.greeting = "ping\n";
    cf.conn_config.greeting_len = 5;
    tu_connect_ssl_local(run->reactor, &cf, run->port, opts, "localhost");
  } else {
    cf.user = opts;
    cf.conn_config.on_made = normal_on_made;
    cf.conn_config.on_data = normal_on_data;
    cf.conn_config.on_tls_started = normal_on_tls_started;
    want = "GO\nping\n";
    tu_connect_tcp_local(run->reactor, &cf, run->port);
  }
  tu_conn *c = tu_wait_conn(run->reactor, &cf, 0, 10);
  tu_wait_size(run->reactor, &c->rx_total, strlen(want), 10);
  ck_assert_msg(tu_conn_rx_equals(c, want, strlen(want)), "the normal client got '%s'",
                c->rx ? (const char *)c->rx : "");
  if (run->target == TARGET_STARTTLS)
    ck_assert_int_eq(c->tls_started, 1);
  weft_transport_lose_connection(c->transport);
  tu_wait_int(run->reactor, &c->lost, 1, 10);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "the normal client's close: %s (%s)",
                weft_err_name(c->lost_reason.code), c->lost_reason.message);
  tu_run_until(run->reactor, no_connection_left, run, 10);
  tu_factory_check(&cf);
  tu_factory_cleanup(&cf);
  weft_cert_options_unref(opts);
}

/* --- The run ---------------------------------------------------------------------------------- */

static int env_int(const char *name, int def, int min, int max) {
  const char *v = getenv(name);
  if (!v || !*v)
    return def;
  char *end;
  long n = strtol(v, &end, 10);
  ck_assert_msg(*end == '\0' && n >= min && n <= max, "%s=%s: want %d..%d", name, v, min, max);
  return (int)n;
}

static uint64_t chaos_seed(void) {
  const char *v = getenv("WEFT_CHAOS_SEED");
  if (v && *v)
    return strtoull(v, NULL, 0);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 32;
}

/* A real ClientHello, captured from an in-memory OpenSSL client. */
static void capture_hello(chaos_run *run) {
  SSL *ssl = SSL_new(run->ctx);
  BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
  ck_assert(ssl && rbio && wbio);
  SSL_set_bio(ssl, rbio, wbio);
  SSL_set_connect_state(ssl);
  ck_assert_int_le(SSL_do_handshake(ssl), 0);
  int n = BIO_read(wbio, run->hello, sizeof run->hello);
  ck_assert_int_gt(n, 5);
  run->hello_len = (size_t)n;
  SSL_free(ssl);
}

static int all_finished(void *arg) {
  chaos_run *run = arg;
  return run->finished == run->total;
}

static void chaos(target tg) {
  chaos_run run = {.target = tg};
  run.total = env_int("WEFT_CHAOS_CONNECTIONS", 200, 1, 60000);
  run.concurrency = env_int("WEFT_CHAOS_CONCURRENCY", 32, 1, 1000);
  run.seed = chaos_seed();
  const char *name = tg == TARGET_TLS ? "tls" : "starttls";
  fprintf(stderr,
          "chaos %s: seed %llu (WEFT_CHAOS_SEED=%llu replays it), %d connections, %d at "
          "a time\n",
          name, (unsigned long long)run.seed, (unsigned long long)run.seed, run.total,
          run.concurrency);
  run.seen = calloc((size_t)run.total, 1);
  run.spoke = calloc((size_t)run.total, 1);
  ck_assert(run.seen && run.spoke);

  tu_pki pki;
  tu_pki_init(&pki);
  run.reactor = tu_reactor_new();
  run.server_options = tu_server_options(&pki);
  tu_factory_init(&run.server);
  run.server.user = &run;
  run.server.on_build = server_on_build;
  run.server.on_handshake_failed = server_on_handshake_failed;
  run.server.conn_config.keep_rx = 0;
  weft_listener *listener;
  if (tg == TARGET_TLS) {
    run.server.conn_config.echo = 1;
    listener = tu_listen_ssl_local(run.reactor, &run.server, run.server_options, &run.port);
  } else {
    run.server.conn_config.on_data = starttls_on_data;
    run.server.conn_config.on_tls_started = starttls_on_tls_started;
    run.server.conn_config.on_lost = starttls_on_lost;
    listener = tu_listen_tcp_local(run.reactor, &run.server, &run.port);
  }
  run.ctx = SSL_CTX_new(TLS_client_method());
  ck_assert_ptr_nonnull(run.ctx);
  SSL_CTX_set_verify(run.ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_session_cache_mode(run.ctx, SSL_SESS_CACHE_OFF);
  capture_hello(&run);

  /* A warm-up session first, so that whatever weft, libevent and OpenSSL open once is open
   * before the descriptors are counted. */
  normal_client(&run, &pki);
  tu_factory_reap(&run.server);
  int fds_before = tu_count_fds();
  int made_before = run.server.made;

  double t0 = tu_now();
  start_clients(&run);
  tu_run_until(run.reactor, all_finished, &run, 30 + run.total * 0.5);
  tu_run_until(run.reactor, no_connection_left, &run, 30);
  double elapsed = tu_now() - t0;
  tu_factory_reap(&run.server);

  int required = 0, outcomes = 0;
  for (int i = 0; i < run.total; i++) {
    outcomes += run.seen[i];
    if (run.spoke[i]) {
      required++;
      if (run.seen[i] != 1 && run.failures++ == 0)
        snprintf(run.failure, sizeof run.failure,
                 "client %d was served but the server reported %d outcomes for it", i, run.seen[i]);
    }
  }
  fprintf(stderr,
          "chaos %s: %d connections in %.1f s: %d handshakes, %d clean sessions; "
          "server: %d made, %d handshake_failed, %d outcomes for %d served clients\n",
          name, run.total, elapsed, run.handshakes, run.cleans, run.server.made - made_before,
          run.server.handshake_failed, outcomes, required);
  fprintf(stderr, "chaos %s: scenarios:", name);
  for (int s = 0; s < SC_COUNT; s++)
    if (run.per_scenario[s])
      fprintf(stderr, " %s %d", scenario_name[s], run.per_scenario[s]);
  fprintf(stderr, "; endings:");
  for (int e = 0; e < END_COUNT; e++)
    fprintf(stderr, " %s %d", ending_name[e], run.per_ending[e]);
  fprintf(stderr, "\n");

  ck_assert_msg(run.failures == 0, "seed %llu: %d failure(s), the first: %s",
                (unsigned long long)run.seed, run.failures, run.failure);
  ck_assert_msg(run.twice == 0, "seed %llu: %d connections had two server outcomes",
                (unsigned long long)run.seed, run.twice);
  ck_assert_int_eq(run.unknown_peers, 0);
  ck_assert_int_eq(run.stalls, 0);
  tu_factory_check(&run.server);
  ck_assert_int_eq(run.server.refused, 0);
  ck_assert_int_eq(run.server.made, run.server.lost);
  ck_assert_int_eq(run.server.built, run.server.made);
  if (tg == TARGET_STARTTLS)
    ck_assert_int_eq(run.server.handshake_failed, 0);
  ck_assert_int_eq(outcomes, run.server.made - made_before + run.server.handshake_failed);
  ck_assert_uint_eq(weft_listener_connection_count(listener), 0);

  /* The server still serves, and nothing was left open. */
  normal_client(&run, &pki);
  tu_factory_reap(&run.server);
  int fds_after = tu_count_fds();
  ck_assert_msg(fds_after == fds_before,
                "seed %llu: %d descriptors open before the chaos, %d after",
                (unsigned long long)run.seed, fds_before, fds_after);

  weft_reactor_free(run.reactor);
  tu_factory_check(&run.server);
  tu_factory_cleanup(&run.server);
  weft_cert_options_unref(run.server_options);
  SSL_CTX_free(run.ctx);
  tu_pki_free(&pki);
  free(run.seen);
  free(run.spoke);
}

START_TEST(test_chaos_tls) {
  chaos(TARGET_TLS);
}
END_TEST

START_TEST(test_chaos_starttls) {
  chaos(TARGET_STARTTLS);
}
END_TEST

static Suite *chaos_suite(void) {
  Suite *s = suite_create("chaos");
  TCase *tc = tcase_create("chaos");
  /* Bounded by the run's own deadlines (30 s + 0.5 s per connection, then 30 s to settle). */
  int n = 200;
  const char *v = getenv("WEFT_CHAOS_CONNECTIONS");
  if (v && atoi(v) > 0)
    n = atoi(v);
  tcase_set_timeout(tc, 90 + n * 0.5);
  tcase_add_test(tc, test_chaos_tls);
  tcase_add_test(tc, test_chaos_starttls);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* OpenSSL writes to the raw sockets of the chaos clients */
  SRunner *sr = srunner_create(chaos_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
