/* latclient: open-loop fixed-rate load over keep-alive TLS connections, with per-request
 * latency (a small stand-in for wrk2, which Debian does not ship).
 *
 *   latclient --port P [--host 127.0.0.1] [--rate 2000] [-c 20] [--duration 10] [--path /]
 *
 * Request i is due at t0 + i/rate and goes out on connection i % c at that time whether or
 * not the previous response on that connection is back (HTTP/1.1 pipelining), so a slow
 * server cannot slow the client down (no coordinated omission). Latency = time the response
 * was complete - time the request was DUE. After --duration the client stops sending and
 * waits up to 5 s for outstanding responses. Prints
 * "RESULT sent=.. done=.. errors=.. rate=.. p50_us=.. p90_us=.. p99_us=.. max_us=..".
 * Exits 1 if a connection failed or a response is missing.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <signal.h>

#include "benchcommon.h"

#define MAXC 1024
#define QCAP 65536 /* outstanding requests per connection (ring) */

struct conn {
  SSL *ssl;
  int fd;
  double *due; /* ring of due times of requests sent, not answered yet */
  size_t qh, qt;
  char out[8192]; /* request bytes not yet accepted by SSL_write */
  size_t out_len;
  char in[65536];
  size_t in_len;
  unsigned long long body_left; /* of the response being read */
  int in_body;
  int dead;
};

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int flush_out(struct conn *c) {
  while (c->out_len > 0) {
    int n = SSL_write(c->ssl, c->out, (int)c->out_len);
    if (n <= 0) {
      int e = SSL_get_error(c->ssl, n);
      if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
        return 0;
      return -1;
    }
    memmove(c->out, c->out + n, c->out_len - (size_t)n);
    c->out_len -= (size_t)n;
  }
  return 0;
}

/* Consumes complete responses in c->in; records latencies. -1 on protocol error. */
static int consume(struct conn *c, double now, double *lat, size_t *nlat, size_t cap) {
  for (;;) {
    if (c->in_body) {
      size_t k = c->in_len < c->body_left ? c->in_len : (size_t)c->body_left;
      memmove(c->in, c->in + k, c->in_len - k);
      c->in_len -= k, c->body_left -= k;
      if (c->body_left)
        return 0;
      c->in_body = 0;
      if (c->qh == c->qt)
        return -1; /* a response nobody asked for */
      double due = c->due[c->qh++ % QCAP];
      if (*nlat < cap)
        lat[(*nlat)++] = now - due;
      continue;
    }
    unsigned long long clen = 0;
    int status = 0;
    long head = parse_head(c->in, c->in_len, &clen, &status);
    if (head == 0)
      return c->in_len == sizeof c->in ? -1 : 0;
    if (head < 0 || status != 200)
      return -1;
    memmove(c->in, c->in + head, c->in_len - (size_t)head);
    c->in_len -= (size_t)head;
    c->body_left = clen;
    c->in_body = 1;
  }
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *path = "/";
  int port = 0;
  long nconn = 20;
  double rate = 2000, duration = 10;
  for (int i = 1; i < argc; i++) {
    if (common_arg(argc, argv, &i, &port, &host, NULL, &nconn))
      continue;
    if (!strcmp(argv[i], "--rate") && i + 1 < argc)
      rate = atof(argv[++i]);
    else if (!strcmp(argv[i], "--duration") && i + 1 < argc)
      duration = atof(argv[++i]);
    else if (!strcmp(argv[i], "--path") && i + 1 < argc)
      path = argv[++i];
    else
      return fputs("usage: latclient --port P [--host H] [--rate R] [-c C] [--duration S]"
                   " [--path /]\n",
                   stderr),
             2;
  }
  if (port <= 0 || nconn < 1 || nconn > MAXC || rate <= 0 || duration <= 0 || rate * duration > 5e7)
    return fputs("latclient: bad arguments\n", stderr), 2;
  raise_nofile();
  signal(SIGPIPE, SIG_IGN);
  SSL_CTX *ctx = client_ctx(TLS1_2_VERSION);
  char req[512];
  int req_len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);

  static struct conn conns[MAXC];
  struct pollfd pfd[MAXC];
  for (long i = 0; i < nconn; i++) { /* blocking handshakes, then non-blocking I/O */
    struct conn *c = &conns[i];
    c->ssl = ssl_connect_new(ctx, host, port);
    if (!c->ssl)
      return fprintf(stderr, "latclient: cannot connect\n"), 1;
    c->fd = SSL_get_fd(c->ssl);
    if (SSL_connect(c->ssl) != 1)
      return fprintf(stderr, "latclient: handshake failed\n"), 1;
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    c->due = malloc(QCAP * sizeof *c->due);
  }
  size_t total = (size_t)(rate * duration), cap = total, nlat = 0;
  double *lat = malloc(cap * sizeof *lat);
  size_t sent = 0;
  long errors = 0;
  double t0 = now_s() + 0.05, stop_wait = 0;
  for (;;) {
    double now = now_s();
    /* send every request that is due */
    while (sent < total && t0 + (double)sent / rate <= now) {
      struct conn *c = &conns[sent % (size_t)nconn];
      if (!c->dead && c->out_len + (size_t)req_len <= sizeof c->out && c->qt - c->qh < QCAP) {
        memcpy(c->out + c->out_len, req, (size_t)req_len);
        c->out_len += (size_t)req_len;
        c->due[c->qt++ % QCAP] = t0 + (double)sent / rate;
        if (flush_out(c) != 0)
          c->dead = 1, errors++;
      } else {
        errors++; /* could not even queue it: counts as failed */
      }
      sent++;
    }
    int outstanding = 0;
    for (long i = 0; i < nconn; i++) {
      struct conn *c = &conns[i];
      pfd[i].fd = c->dead ? -1 : c->fd;
      pfd[i].events = POLLIN | (c->out_len ? POLLOUT : 0);
      pfd[i].revents = 0;
      if (!c->dead && c->qt != c->qh)
        outstanding = 1;
    }
    if (sent >= total) {
      if (!outstanding)
        break;
      if (stop_wait == 0)
        stop_wait = now + 5;
      if (now > stop_wait)
        break;
    }
    double next = sent < total ? t0 + (double)sent / rate : now + 0.05;
    double wait = next - now;
    if (wait < 0)
      wait = 0;
    struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
    int r = ppoll(pfd, (nfds_t)nconn, &ts, NULL);
    if (r <= 0)
      continue;
    now = now_s();
    for (long i = 0; i < nconn; i++) {
      struct conn *c = &conns[i];
      if (c->dead || !pfd[i].revents)
        continue;
      if (c->out_len && flush_out(c) != 0) {
        c->dead = 1, errors++;
        continue;
      }
      for (;;) { /* read everything OpenSSL can give us now */
        int n = SSL_read(c->ssl, c->in + c->in_len, (int)(sizeof c->in - c->in_len));
        if (n <= 0) {
          int e = SSL_get_error(c->ssl, n);
          if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            c->dead = 1, errors++;
          break;
        }
        c->in_len += (size_t)n;
        if (consume(c, now, lat, &nlat, cap) != 0) {
          c->dead = 1, errors++;
          break;
        }
      }
    }
  }
  double elapsed = now_s() - t0;
  for (long i = 0; i < nconn; i++) {
    struct conn *c = &conns[i];
    if (!c->dead)
      errors += (long)(c->qt - c->qh); /* never answered */
    SSL_free(c->ssl);
    close(c->fd);
    free(c->due);
  }
  qsort(lat, nlat, sizeof *lat, cmp_double);
#define PCT(p) (nlat ? lat[(size_t)((double)(nlat - 1) * (p))] * 1e6 : 0.0)
  printf("RESULT sent=%zu done=%zu errors=%ld rate=%.1f p50_us=%.0f p90_us=%.0f p99_us=%.0f "
         "max_us=%.0f\n",
         sent, nlat, errors, (double)nlat / elapsed, PCT(0.50), PCT(0.90), PCT(0.99), PCT(1.0));
  free(lat);
  SSL_CTX_free(ctx);
  return errors || nlat < total ? 1 : 0;
}
