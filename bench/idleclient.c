/* idleclient: opens N TLS connections and holds them idle, to measure server memory per
 * connection.
 *
 *   idleclient --port P [--host 127.0.0.1] [-n 5000] [-c 4] [--hold 60]
 *
 * Each connection completes the handshake and one keep-alive "GET /" (so the server has
 * really processed it), then stays open and idle; -c K threads open them (N/K each, blocking
 * sockets), so that round trips overlap. When all are open it prints
 * "READY open=N failed=F elapsed_s=S" and holds them until --hold seconds pass or SIGTERM
 * comes, then closes them all and exits (status 1 if any connection failed). RLIMIT_NOFILE is raised to the hard limit first.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <signal.h>

#include "benchcommon.h"

static volatile sig_atomic_t stop;
static void on_term(int sig) {
  (void)sig, stop = 1;
}

static const char *host = "127.0.0.1";
static int port;
static SSL_CTX *ctx;

struct slice {
  SSL **conns; /* room for n */
  long n, open_n, failed;
};

static void *open_slice(void *arg) {
  struct slice *sl = arg;
  static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  char buf[4096];
  for (long i = 0; i < sl->n && !stop; i++) {
    SSL *ssl = ssl_connect_new(ctx, host, port);
    if (!ssl) {
      sl->failed++;
      continue;
    }
    int fd = SSL_get_fd(ssl);
    size_t have = 0;
    int status = 0;
    if (SSL_connect(ssl) == 1 && ssl_write_all(ssl, req, sizeof req - 1) == 0 &&
        read_response(ssl, buf, sizeof buf, &have, &status) >= 0 && status == 200) {
      sl->conns[sl->open_n++] = ssl;
    } else {
      sl->failed++;
      ERR_clear_error();
      SSL_free(ssl);
      close(fd);
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  long n = 5000, k = 4;
  double hold = 60;
  for (int i = 1; i < argc; i++) {
    if (common_arg(argc, argv, &i, &port, &host, &n, &k))
      continue;
    if (!strcmp(argv[i], "--hold") && i + 1 < argc)
      hold = atof(argv[++i]);
    else
      return fputs("usage: idleclient --port P [--host H] [-n N] [-c K] [--hold S]\n", stderr), 2;
  }
  if (port <= 0 || n < 1 || k < 1 || k > 64)
    return fputs("idleclient: bad arguments\n", stderr), 2;
  long lim = raise_nofile();
  if (lim < n + 16) {
    fprintf(stderr, "idleclient: RLIMIT_NOFILE %ld is too low for %ld connections\n", lim, n);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  ctx = client_ctx(TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* keep the client small too */
  SSL **conns = calloc((size_t)n, sizeof *conns);
  struct slice sl[64];
  pthread_t th[64];
  double t0 = now_s();
  for (long t = 0, at = 0; t < k; t++) {
    long m = n / k + (t < n % k);
    sl[t] = (struct slice){.conns = conns + at, .n = m};
    at += m;
    pthread_create(&th[t], NULL, open_slice, &sl[t]);
  }
  long open_n = 0, failed = 0;
  for (long t = 0; t < k; t++) {
    pthread_join(th[t], NULL);
    open_n += sl[t].open_n, failed += sl[t].failed;
  }
  printf("READY open=%ld failed=%ld elapsed_s=%.3f\n", open_n, failed, now_s() - t0);
  fflush(stdout);
  double end = now_s() + hold;
  while (!stop && now_s() < end)
    poll(NULL, 0, 100);
  for (long t = 0; t < k; t++) {
    for (long i = 0; i < sl[t].open_n; i++) {
      int fd = SSL_get_fd(sl[t].conns[i]);
      SSL_free(sl[t].conns[i]); /* no close_notify: 5000 of them would only slow the exit */
      close(fd);
    }
  }
  free(conns);
  SSL_CTX_free(ctx);
  return failed ? 1 : 0;
}
