/* idle-timeout.c: what an idle time-out costs per connection (weft/timeout.h).
 *
 * Opens N connections (weft/testing.h testing transports: real weft transports over AF_UNIX
 * socketpairs, 2 descriptors each; N defaults to 9000, the most a 20000-descriptor limit
 * allows), on a reactor with the test clock, then measures:
 *   - memory: bytes weft allocates for the time-outs of N connections (a counting allocator);
 *   - set: the time of weft_transport_set_idle_timeout on each connection;
 *   - read: the time of one 1-byte feed to every connection, time-outs off, then on (the data
 *     path only stores a time stamp; the difference is in the noise of the feed itself);
 *   - re-arm: advancing the clock by one period while every connection had traffic (each
 *     timer re-arms itself once: the only timer work a busy connection causes);
 *   - fire: advancing past the deadline of idle connections (each is closed with WEFT_EIDLE).
 * Build: gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude bench/idle-timeout.c -Llib/.libs -lweft
 *        $(pkg-config --libs libevent) -o bench/bin/idle-timeout
 * Run:   LD_LIBRARY_PATH=lib/.libs bench/bin/idle-timeout [N] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <time.h>

#include <weft/weft.h>

static size_t live_bytes;
typedef struct hdr {
  size_t size;
  max_align_t align;
} hdr;
static void *c_malloc(size_t n, void *u) {
  (void)u;
  hdr *h = malloc(sizeof *h + n);
  if (!h)
    return NULL;
  h->size = n;
  live_bytes += n;
  return h + 1;
}
static void c_free(void *p, void *u) {
  (void)u;
  if (!p)
    return;
  hdr *h = (hdr *)p - 1;
  live_bytes -= h->size;
  free(h);
}
static void *c_calloc(size_t c, size_t n, void *u) {
  void *p = c_malloc(c * n, u);
  if (p)
    memset(p, 0, c * n);
  return p;
}
static void *c_realloc(void *p, size_t n, void *u) {
  if (!p)
    return c_malloc(n, u);
  hdr *h = (hdr *)p - 1;
  void *q = c_malloc(n, u);
  if (!q)
    return NULL;
  memcpy(q, p, h->size < n ? h->size : n);
  c_free(p, u);
  return q;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int lost;
static void on_lost(weft_protocol *p, weft_transport *t, const weft_reason *r) {
  (void)p;
  (void)t;
  if (r->code == WEFT_EIDLE)
    lost++;
}
static const weft_protocol_ops ops = {.connection_lost = on_lost};
static weft_protocol proto = {.ops = &ops};
static weft_protocol *build(weft_factory *f, weft_transport *t, const struct sockaddr *a) {
  (void)f;
  (void)t;
  (void)a;
  return &proto;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 9000;
  weft_allocator a = {sizeof(weft_allocator), c_malloc, c_free, c_calloc, c_realloc, NULL};
  weft_set_allocator(&a);
  weft_reactor *r;
  if (weft_testing_reactor_new(&r) != 0)
    return 1;
  weft_factory f = {.build_protocol = build};
  weft_testing_transport **tt = calloc((size_t)n, sizeof *tt);
  for (int i = 0; i < n; i++) {
    if (weft_testing_transport_new(r, &f, &tt[i]) != 0) {
      fprintf(stderr, "connection %d failed (descriptor limit?)\n", i);
      return 1;
    }
  }
  double t0 = now();
  for (int i = 0; i < n; i++)
    weft_testing_transport_feed(tt[i], "x", 1);
  double feed_off = now() - t0;
  size_t before = live_bytes;
  t0 = now();
  for (int i = 0; i < n; i++)
    weft_transport_set_idle_timeout(weft_testing_transport_get(tt[i]), 60);
  double set = now() - t0;
  size_t mem = live_bytes - before;
  t0 = now();
  for (int i = 0; i < n; i++)
    weft_testing_transport_feed(tt[i], "x", 1);
  double feed_on = now() - t0;
  weft_testing_clock_advance(r, 30);
  for (int i = 0; i < n; i++)
    weft_testing_transport_feed(tt[i], "x", 1);
  t0 = now();
  int rearmed = weft_testing_clock_advance(r, 30.5); /* every timer re-arms once */
  double rearm = now() - t0;
  t0 = now();
  weft_testing_clock_advance(r, 60);
  double fire = now() - t0;
  printf("connections: %d\n", n);
  printf("memory for the time-outs: %zu bytes in all, %.1f bytes per connection (weft's own; "
         "plus libevent's heap slot)\n",
         mem, (double)mem / n);
  printf("set_idle_timeout: %.3f us per connection\n", set / n * 1e6);
  printf("1-byte feed (testing transport round trip): %.3f us off, %.3f us on, per connection\n",
         feed_off / n * 1e6, feed_on / n * 1e6);
  printf("re-arm after a busy period: %d timers, %.3f us each\n", rearmed, rearm / n * 1e6);
  printf("idle cut: %d connections closed with WEFT_EIDLE, %.3f us each (close included)\n", lost,
         fire / n * 1e6);
  for (int i = 0; i < n; i++)
    weft_testing_transport_free(tt[i]);
  weft_reactor_free(r);
  free(tt);
  return lost == n ? 0 : 1;
}
