/* Shared helpers of the bench load clients: TCP connect, a client SSL_CTX, and reading one
 * HTTP/1.1 response (headers plus Content-Length body) over a blocking SSL. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A connected blocking TCP socket to 127.0.0.1:PORT (TCP_NODELAY), or -1. */
static inline int tcp_connect(const char *host, int port) {
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
    return -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* A new SSL from CTX on a new blocking TCP connection to HOST:PORT (SSL_set_fd done; the caller
 * closes SSL_get_fd after SSL_free), or NULL with nothing left open. */
static inline SSL *ssl_connect_new(SSL_CTX *ctx, const char *host, int port) {
  int fd = tcp_connect(host, port);
  SSL *ssl = fd >= 0 ? SSL_new(ctx) : NULL;
  if (!ssl) {
    if (fd >= 0)
      close(fd);
    return NULL;
  }
  SSL_set_fd(ssl, fd);
  return ssl;
}

/* The options every load client takes: if ARGV[*I] is --port P, --host H, -c K or (N not NULL)
 * -n N and its value follows, stores the value, moves *I to it and returns 1; else returns 0. */
static inline int common_arg(int argc, char **argv, int *i, int *port, const char **host,
                             long *n, long *c) {
  if (*i + 1 >= argc)
    return 0;
  const char *opt = argv[*i], *val = argv[*i + 1];
  if (!strcmp(opt, "--port"))
    *port = atoi(val);
  else if (!strcmp(opt, "--host"))
    *host = val;
  else if (!strcmp(opt, "-n") && n)
    *n = atol(val);
  else if (!strcmp(opt, "-c"))
    *c = atol(val);
  else
    return 0;
  ++*i;
  return 1;
}

/* Client context: no certificate check (self-signed), ALPN http/1.1, TLS MIN..1.3.
 * The client session cache is off: sessions are handed over by hand (SSL_set_session). */
static inline SSL_CTX *client_ctx(int min_version) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx)
    return NULL;
  SSL_CTX_set_min_proto_version(ctx, min_version);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  static const unsigned char alpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
  return ctx;
}

/* Raises RLIMIT_NOFILE to the hard limit. Returns the new soft limit. */
static inline long raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return -1;
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  return (long)rl.rlim_cur;
}

/* Finds the end of the head ("\r\n\r\n") in BUF[0..LEN) and its Content-Length.
 * Returns the head length, 0 if incomplete, -1 if malformed or no Content-Length. */
static inline long parse_head(const char *buf, size_t len, unsigned long long *content_length,
                              int *status) {
  const char *end = memmem(buf, len, "\r\n\r\n", 4);
  if (!end)
    return 0;
  size_t head_len = (size_t)(end - buf) + 4;
  if (head_len < 12 || memcmp(buf, "HTTP/1.", 7))
    return -1;
  *status = atoi(buf + 9);
  const char *p = buf;
  int found = 0;
  while ((p = memchr(p, '\n', (size_t)(end - p))) && p < end) {
    p++;
    if (!strncasecmp(p, "Content-Length:", 15)) {
      *content_length = strtoull(p + 15, NULL, 10);
      found = 1;
    }
  }
  return found ? (long)head_len : -1;
}

/* Reads one whole response on a blocking SSL. BUF (SIZE bytes) holds leftovers between
 * calls: *HAVE bytes already read. Returns the body length, or -1 on error. */
static inline long long read_response(SSL *ssl, char *buf, size_t size, size_t *have, int *status) {
  unsigned long long clen = 0;
  long head;
  while ((head = parse_head(buf, *have, &clen, status)) == 0) {
    if (*have == size)
      return -1;
    int n = SSL_read(ssl, buf + *have, (int)(size - *have));
    if (n <= 0)
      return -1;
    *have += (size_t)n;
  }
  if (head < 0)
    return -1;
  /* body: discard as it comes */
  unsigned long long got = *have - (size_t)head;
  if (got >= clen) { /* whole body already here: keep what follows (pipelining) */
    size_t used = (size_t)head + (size_t)clen;
    memmove(buf, buf + used, *have - used);
    *have -= used;
    return (long long)clen;
  }
  *have = 0;
  while (got < clen) {
    size_t want = clen - got < size ? (size_t)(clen - got) : size;
    int n = SSL_read(ssl, buf, (int)want);
    if (n <= 0)
      return -1;
    got += (unsigned long long)n;
  }
  return (long long)clen;
}

static inline int ssl_write_all(SSL *ssl, const char *data, size_t len) {
  while (len > 0) {
    int n = SSL_write(ssl, data, (int)len);
    if (n <= 0)
      return -1;
    data += n, len -= (size_t)n;
  }
  return 0;
}

#endif
