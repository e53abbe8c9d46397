/* embedded-loop: weft inside an application that already runs its own libevent loop.
 *
 *   embedded-loop
 *
 * The application owns the event_base, runs it with event_base_dispatch and has its own timer
 * ("app tick N" every 100 ms). weft borrows the base (weft_reactor_new_with_base): a TCP echo
 * listener on 127.0.0.1 (a free port) and a client that sends "ping" and prints
 * "echo: ping" when it comes back. Once the echo is done and at least 3 ticks have passed, the
 * application breaks its loop, frees the reactor, then the base, and exits 0.
 * Link with libevent as well as weft: $(pkg-config --cflags --libs weft libevent).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <weft/weft.h>

#define MIN_TICKS 3
#define MAX_TICKS 100 /* 10 s: give up if the echo never comes */

static const char usage[] =
    "usage: embedded-loop\n"
    "Runs a weft echo server and client on an application's own libevent loop, prints\n"
    "\"app tick N\" every 100 ms and \"echo: ping\", then exits 0.\n";

static struct app {
  struct event_base *base;
  unsigned ticks;
  int echoed; /* the client got its echo and closed */
  int failed;
} app;

/* --- weft: the echo server's protocol -------------------------------------------------- */

static void echo_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  (void)p;
  weft_transport_write(t, data, len);
}

static void echo_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)t, (void)reason;
  free(p); /* weft never frees a protocol: connection_lost is its last callback */
}

static const weft_protocol_ops echo_ops = {.data_received = echo_data,
                                           .connection_lost = echo_lost};

static weft_protocol *build_echo(weft_factory *f, weft_transport *t, const struct sockaddr *pr) {
  (void)f, (void)t, (void)pr;
  weft_protocol *p = calloc(1, sizeof *p);
  if (p)
    p->ops = &echo_ops;
  return p;
}

/* --- weft: the client's protocol (one connection, so one static struct) ---------------- */

static struct ping_client {
  weft_protocol base; /* first member: the weft_protocol * we hand out is this struct */
  char got[8];
  size_t len;
} client;

static void ping_made(weft_protocol *p, weft_transport *t) {
  (void)p;
  weft_transport_write(t, "ping", 4);
}

static void ping_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  (void)p;
  if (len > sizeof client.got - client.len)
    len = sizeof client.got - client.len;
  memcpy(client.got + client.len, data, len); /* TCP may deliver "ping" in pieces */
  client.len += len;
  if (client.len < 4)
    return;
  printf("echo: %.*s\n", (int)client.len, client.got);
  fflush(stdout);
  weft_transport_lose_connection(t);
}

static void ping_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)p, (void)t;
  app.echoed = client.len == 4 && memcmp(client.got, "ping", 4) == 0;
  if (!app.echoed)
    fprintf(stderr, "error: no echo: %s\n", reason->message), app.failed = 1;
}

static const weft_protocol_ops ping_ops = {
    .connection_made = ping_made, .data_received = ping_data, .connection_lost = ping_lost};

static weft_protocol *build_ping(weft_factory *f, weft_transport *t, const struct sockaddr *pr) {
  (void)f, (void)t, (void)pr;
  client.base.ops = &ping_ops;
  return &client.base;
}

static void ping_failed(weft_factory *f, const weft_reason *reason) {
  (void)f;
  fprintf(stderr, "error: cannot connect: %s\n", reason->message);
  app.failed = 1;
}

/* --- The application's own event, which also decides when the program ends -------------- */

static void on_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what, (void)arg;
  printf("app tick %u\n", ++app.ticks);
  fflush(stdout);
  if (app.ticks >= MAX_TICKS && !app.echoed)
    fputs("error: no echo after 10 s\n", stderr), app.failed = 1;
  if ((app.echoed && app.ticks >= MIN_TICKS) || app.failed)
    event_base_loopbreak(app.base); /* our loop: we stop it ourselves */
}

int main(int argc, char **argv) {
  if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
    return fputs(usage, stdout), 0;
  if (argc > 1)
    return fprintf(stderr, "error: unexpected argument: %s\n%s", argv[1], usage), 2;

  /* The application's loop and timer, as it had them before weft. */
  app.base = event_base_new();
  struct event *tick = app.base ? event_new(app.base, -1, EV_PERSIST, on_tick, NULL) : NULL;
  struct timeval every = {0, 100 * 1000};
  if (!tick || event_add(tick, &every) != 0)
    return fputs("error: libevent setup\n", stderr), 1;

  /* weft on the same base: it adds its events there and never frees the base. */
  static weft_factory echo_factory = {.build_protocol = build_echo};
  static weft_factory ping_factory = {.build_protocol = build_ping,
                                      .connection_failed = ping_failed};
  weft_reactor *reactor = NULL;
  weft_listener *listener = NULL;
  int rc = weft_reactor_new_with_base(app.base, &reactor);
  if (rc == 0)
    rc = weft_listen_tcp(reactor, "127.0.0.1", 0, &echo_factory, &listener);
  if (rc == 0)
    rc = weft_connect_tcp(reactor, "127.0.0.1", weft_listener_port(listener), &ping_factory, NULL);
  if (rc == 0 && event_base_dispatch(app.base) < 0)
    rc = WEFT_EIO; /* runs app and weft alike */
  if (rc != 0)
    fprintf(stderr, "error: %s\n", weft_strerror(rc));

  event_free(tick);
  weft_reactor_free(reactor); /* first the reactor (closes what is left)... */
  event_base_free(app.base);  /* ... then the base, which is ours */
  return rc == 0 && app.echoed && !app.failed ? 0 : 1;
}
