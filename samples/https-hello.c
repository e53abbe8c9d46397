/* https-hello: a small HTTP/1.1 server over TLS, with keep-alive and pipelining.
 *
 *   https-hello --listen 127.0.0.1:8443          then: curl -k https://127.0.0.1:8443/
 *   https-hello --listen 127.0.0.1:8443 --threads 4     (four reactors, one port)
 *   https-hello --listen 127.0.0.1:8443 --idle-timeout 60 --write-timeout 30 --max-connections 20000
 *
 * GET / answers "Hello, World!"; GET /bytes/N answers N bytes, streamed in 64 KiB chunks as
 * the peer reads them (write_drained), never from one giant buffer. ALPN offers http/1.1.
 *
 * Multi-core: --threads N runs N threads, each with its own reactor and its own listener on
 * the same address (an endpoint with weft_endpoint_set_reuseport when N > 1), so the kernel
 * spreads new connections among them; a connection stays on the thread that accepted it, and
 * the threads share nothing but the frozen TLS options. The main thread only waits for signals
 * (sigwait): on SIGTERM or SIGINT it stops every reactor (weft_reactor_stop, safe from any
 * thread) and joins the threads.
 *
 * Reload: on SIGHUP the main thread reads --cert and --key again (without them, it generates a
 * new self-signed certificate) and builds new options, prepared (checked) right there; if that
 * fails it prints "error: reload failed: MESSAGE" to stderr and nothing changes. Otherwise it
 * asks every thread to swap them into its own listener (weft_listener_set_options must run in
 * the listener's reactor thread: weft_reactor_call_from_thread), waits for all of them, and
 * prints "reloaded" on stdout. Handshakes that start afterwards get the new certificate;
 * connections already open keep theirs. Session tickets issued before the reload are not
 * resumed after it (the new options have new automatic ticket keys).
 *
 * Limits (all optional, off by default): --idle-timeout SECONDS closes a connection once nothing
 * has arrived and no output has waited for that long (weft_listener_set_idle_timeout);
 * --write-timeout SECONDS closes it once output has waited that long without the peer reading
 * any (weft_listener_set_write_timeout); --max-connections N stops accepting while a thread's
 * listener has N connections (weft_listener_set_connection_limit; per thread with --threads).
 * SECONDS: a number from 0 (off) to 1000000; N: 0 (no limit) to 4294967295.
 *
 * Prints "listening on HOST:PORT" once every listener is up; on SIGTERM or SIGINT prints
 * "thread I: C connections, R requests" for each thread to stderr (C: connections that
 * completed the TLS handshake, R: responses sent) and exits with status 0.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <weft/weft.h>

#define MAX_HEAD (16 * 1024)      /* request line + headers; larger gets 431 and a close */
#define MAX_BUFFERED (256 * 1024) /* pipelined bytes kept while a response streams */
#define CHUNK (64 * 1024)         /* body bytes per write */
#define HIGH_WATER (256 * 1024)   /* stop writing body while this much output waits... */
#define LOW_WATER (64 * 1024)     /* ... and resume (write_drained) once it is down to this */
#define SCRATCH (32 * 1024)       /* per thread: input is parsed here, not in the connection */
#define MAX_THREADS 64

static const char usage[] =
    "usage: https-hello --listen HOST:PORT [--cert PEM --key PEM] [--threads N]\n"
    "                   [--idle-timeout SECONDS] [--write-timeout SECONDS] [--max-connections N]\n"
    "HOST is an IP literal (\"[::1]:PORT\" for IPv6); PORT 0 picks a free port. Without\n"
    "--cert a self-signed certificate for localhost is generated.\n"
    "--threads N (1 to 64, default 1): N threads, each with its own reactor, listening on\n"
    "the same port with SO_REUSEPORT; the kernel spreads connections among them. On exit\n"
    "each thread's connection and request counts are printed to stderr.\n"
    "--idle-timeout SECONDS closes a connection idle that long (nothing received, no output\n"
    "waiting); --write-timeout SECONDS closes one whose output waited that long unread;\n"
    "--max-connections N (per thread) stops accepting at N open connections until some end.\n"
    "SECONDS is 0 (off, the default) to 1000000; N is 0 (no limit, the default) or more.\n"
    "SIGHUP reloads the certificate and key files (prints \"reloaded\", or\n"
    "\"error: reload failed: MESSAGE\" and keeps serving with what it had).\n";

static char body_chunk[CHUNK]; /* the bytes of /bytes/N, filled once in main */

/* One server thread. Its counters are touched by its own thread only (no locks, no atomics on
 * the request path) and read by the main thread after pthread_join. Aligned so that two
 * threads' counters never share a cache line. */
struct server {
  _Alignas(64) unsigned long long connections, requests;
  int index;
  pthread_t thread;
  weft_reactor *reactor;   /* made, run and freed by the thread itself */
  weft_listener *listener; /* its listener; touched in the thread only (reload: a call) */
  weft_factory factory;    /* data: this struct */
  weft_cert_options *opts; /* shared, prepared (frozen) before the threads start */
  const char *host;
  int port;              /* where to listen; the port actually bound once ready */
  int reuseport;         /* share the port (SO_REUSEPORT) when there are several threads */
  double idle_timeout;   /* --idle-timeout, 0: none */
  double write_timeout;  /* --write-timeout, 0: none */
  unsigned max_conns;    /* --max-connections, 0: no limit */
  char addr[64];         /* "HOST:PORT" bound, for the "listening on" line */
  sem_t *ready;          /* posted by the thread once its listener is up or setup failed */
  sem_t *release;        /* posted by the main thread after its last weft_reactor_stop */
  int setup_rc;          /* written before posting ready */
  int run_rc;            /* written after run; read after pthread_join */
  char scratch[SCRATCH]; /* where a connection with nothing buffered parses its input */
};

/* One connection: the bytes not parsed yet, and the response being streamed. */
struct http_conn {
  weft_protocol base; /* first member: the weft_protocol * we hand out is this struct */
  weft_transport *transport;
  struct server *server; /* the thread that accepted it, for its counters */
  char *in;              /* received, unparsed bytes (malloc'd, at most MAX_BUFFERED) */
  size_t in_len, in_size;
  size_t discard;               /* request body bytes still to skip (we ignore bodies) */
  unsigned long long body_left; /* /bytes/N bytes still to write */
  int close_after;              /* close once the current response is written */
  int peer_done;                /* ... because the client asked to (it sends nothing more) */
  int head_only;                /* HEAD request: headers without the body */
  int closing;
};

/* Writes a response header, then BODY if not NULL (else the caller streams LENGTH bytes). */
static void respond(struct http_conn *c, const char *status, const char *body,
                    unsigned long long length) {
  char head[256];
  c->server->requests++;
  if (body)
    length = strlen(body);
  if (c->head_only)
    body = NULL;
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %llu\r\n%s\r\n",
                   status, length, c->close_after ? "Connection: close\r\n" : "");
  weft_buf bufs[2] = {{head, (size_t)n}, {body, body ? length : 0}};
  weft_transport_write_sequence(c->transport, bufs, 2); /* one write: header and body */
}

/* Writes /bytes/N body while the output buffer has room. Returns 1 once it is all written. */
static int pump_body(struct http_conn *c) {
  while (c->body_left > 0 && weft_transport_pending_output(c->transport) <= HIGH_WATER) {
    size_t n = c->body_left < CHUNK ? (size_t)c->body_left : CHUNK;
    /* The bytes are static: weft sends them in place, no copy and no release callback. */
    if (weft_transport_write_reference(c->transport, body_chunk, n, NULL, NULL) != 0)
      return 0; /* closing */
    c->body_left -= n;
  }
  return c->body_left == 0;
}

/* Answers one request whose head (request line and headers, NUL-terminated, without the
 * final empty line) is HEAD. May set close_after and body_left. */
static void handle_request(struct http_conn *c, char *head) {
  char *line = head, *next = strstr(head, "\r\n");
  if (next)
    *next = '\0', next += 2;
  /* Request line: METHOD SP TARGET SP VERSION. */
  char *target = strchr(line, ' '), *version = target ? strchr(target + 1, ' ') : NULL;
  if (!version || target == line || strchr(version + 1, ' ') || target[1] != '/')
    goto bad;
  *target++ = '\0', *version++ = '\0';
  if (strcmp(version, "HTTP/1.1") && strcmp(version, "HTTP/1.0"))
    goto bad;
  int keep_alive = !strcmp(version, "HTTP/1.1"); /* HTTP/1.0 closes unless asked not to */

  /* Headers: "Name: value" lines. Only Connection and the request body's framing matter. */
  for (line = next; line && *line; line = next) {
    if ((next = strstr(line, "\r\n")))
      *next = '\0', next += 2;
    char *colon = strchr(line, ':');
    if (!colon || colon == line || memchr(line, ' ', (size_t)(colon - line)))
      goto bad;
    *colon = '\0';
    const char *value = colon + 1 + strspn(colon + 1, " \t");
    if (!strcasecmp(line, "Connection") && strcasestr(value, "close"))
      keep_alive = 0;
    if (!strcasecmp(line, "Connection") && strcasestr(value, "keep-alive"))
      keep_alive = 1;
    if (!strcasecmp(line, "Content-Length")) { /* a body we skip: digits only */
      if (value[0] < '0' || value[0] > '9' || value[strspn(value, "0123456789")])
        goto bad;
      c->discard = strtoul(value, NULL, 10);
    }
    if (!strcasecmp(line, "Transfer-Encoding"))
      goto bad; /* chunked bodies: not for a demo */
  }
  c->close_after = !keep_alive;
  c->peer_done = !keep_alive;

  c->head_only = !strcmp(line = head, "HEAD");
  target[strcspn(target, "?")] = '\0'; /* ignore a query string */
  char *end;
  if (strcmp(line, "GET") && !c->head_only) {
    respond(c, "501 Not Implemented", "method not implemented\n", 0);
  } else if (!strcmp(target, "/")) {
    respond(c, "200 OK", "Hello, World!", 0);
  } else if (!strncmp(target, "/bytes/", 7) && target[7] >= '0' && target[7] <= '9' &&
             strlen(target) <= 7 + 15) { /* at most 15 digits: no overflow */
    unsigned long long n = strtoull(target + 7, &end, 10);
    if (*end)
      goto not_found;
    respond(c, "200 OK", NULL, n);
    c->body_left = c->head_only ? 0 : n;
    pump_body(c);
  } else {
  not_found:
    respond(c, "404 Not Found", "not found\n", 0);
  }
  return;
bad:
  c->close_after = 1; /* after garbage we cannot tell where the next request starts */
  c->head_only = 0;
  respond(c, "400 Bad Request", "bad request\n", 0);
}

/* Answers every complete request in BUF (LEN bytes; modified in place), in order, unless a
 * response is streaming. Returns how many bytes it used; the rest is an incomplete request, or
 * requests pipelined behind a streaming body. */
static size_t parse_requests(struct http_conn *c, char *buf, size_t len) {
  size_t used = 0;
  while (!c->closing && c->body_left == 0) {
    if (c->close_after) { /* the last response is out: Connection: close, or an error */
      c->closing = 1;
      /* The client asked to close and all it sent is read: it sends nothing more and reads the
       * response to its end, so there is no need to wait for its close_notify (nginx closes
       * then too). After an error, or with bytes of it unread, weft waits: bytes arriving
       * after the close would make the kernel reset the connection under the response. */
      if (c->peer_done && c->discard == 0 && used == len)
        weft_transport_set_close_timeout(c->transport, 0);
      weft_transport_lose_connection(c->transport);
      break;
    }
    if (c->discard) { /* skip a request body */
      size_t n = len - used < c->discard ? len - used : c->discard;
      used += n, c->discard -= n;
      if (c->discard)
        break;
    }
    char *start = buf + used, *end = memmem(start, len - used, "\r\n\r\n", 4);
    size_t head_len = end ? (size_t)(end - start) + 4 : len - used;
    if (head_len > MAX_HEAD) {
      c->close_after = 1;
      c->head_only = 0;
      respond(c, "431 Request Header Fields Too Large", "header too large\n", 0);
    } else if (!end) {
      break; /* incomplete: wait for more bytes */
    } else {
      *end = '\0';
      handle_request(c, start);
      used += head_len;
    }
  }
  /* While a body streams, stop reading: pipelined requests wait in the kernel, not here. */
  if (c->body_left)
    weft_transport_pause_reading(c->transport);
  return used;
}

/* Keeps LEN unparsed bytes at DATA in the connection's own buffer, after those already there.
 * Returns 0, or -1 when that would pass MAX_BUFFERED (or memory ran out). */
static int keep_input(struct http_conn *c, const void *data, size_t len) {
  if (c->in_len + len > c->in_size) { /* grow the buffer, within bounds */
    size_t size = c->in_size ? c->in_size * 2 : 4096;
    while (size < c->in_len + len)
      size *= 2;
    char *in = size <= MAX_BUFFERED ? realloc(c->in, size) : NULL;
    if (!in)
      return -1; /* only a client that ignores every limit gets here */
    c->in = in, c->in_size = size;
  }
  memcpy(c->in + c->in_len, data, len);
  c->in_len += len;
  return 0;
}

/* Parses what the connection keeps, and frees the buffer once it is empty: an idle keep-alive
 * connection holds no input buffer at all. */
static void process_requests(struct http_conn *c) {
  size_t used = parse_requests(c, c->in, c->in_len);
  memmove(c->in, c->in + used, c->in_len - used); /* keep the unparsed rest */
  c->in_len -= used;
  if (c->in_len == 0) {
    free(c->in);
    c->in = NULL, c->in_size = 0;
  }
}

static void http_made(weft_protocol *p, weft_transport *t) {
  struct http_conn *c = (struct http_conn *)p;
  c->transport = t;
  weft_transport_set_write_low_water(t, LOW_WATER);
}

static void http_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  struct http_conn *c = (struct http_conn *)p;
  if (c->closing)
    return;
  if (c->in_len == 0 && len <= SCRATCH) {
    /* The usual case, a whole request and nothing kept from before: parse it in the thread's
     * scratch buffer, and keep only what is left over (a partial or pipelined request). */
    char *buf = c->server->scratch;
    memcpy(buf, data, len);
    size_t used = parse_requests(c, buf, len);
    if (used < len && !c->closing && keep_input(c, buf + used, len - used) != 0) {
      weft_transport_abort_connection(t);
      c->closing = 1;
    }
    return;
  }
  if (keep_input(c, data, len) != 0) {
    weft_transport_abort_connection(t);
    c->closing = 1;
    return;
  }
  process_requests(c);
}

static void http_drained(weft_protocol *p, weft_transport *t) {
  struct http_conn *c = (struct http_conn *)p;
  if (c->closing || c->body_left == 0 || !pump_body(c))
    return;
  weft_transport_resume_reading(t); /* the body is out: on to pipelined requests */
  process_requests(c);
}

static void http_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)t, (void)reason;
  struct http_conn *c = (struct http_conn *)p;
  free(c->in);
  free(c); /* weft never frees a protocol: connection_lost is its last callback */
}

static const weft_protocol_ops http_ops = {
    .connection_made = http_made,
    .data_received = http_data,
    .write_drained = http_drained,
    .connection_lost = http_lost,
};

static weft_protocol *build_http(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)t, (void)peer;
  struct http_conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL; /* refuses the connection */
  c->base.ops = &http_ops;
  c->server = f->data;
  c->server->connections++;
  return &c->base;
}

/* --- Setup ------------------------------------------------------------------------------- */

/* "127.0.0.1:80" or "[::1]:80" into HOST and PORT. An empty host means every interface. */
static int parse_host_port(const char *arg, const char **host, int *port) {
  static char buf[256]; /* the host part (one address per program) */
  const char *colon = strrchr(arg, ':');
  char *end;
  long p = colon ? strtol(colon + 1, &end, 10) : -1;
  if (!colon || colon[1] == '\0' || *end || p < 0 || p > 65535)
    return -1;
  size_t n = (size_t)(colon - arg);
  if (n >= 2 && arg[0] == '[' && arg[n - 1] == ']')
    arg++, n -= 2; /* bracketed IPv6 */
  if (n >= sizeof buf)
    return -1;
  memcpy(buf, arg, n);
  buf[n] = '\0';
  *host = n ? buf : NULL;
  *port = (int)p;
  return 0;
}

/* "30", "0.5": a number of seconds from 0 to 1e6 (the library's bounds) into *OUT. */
static int parse_seconds(const char *arg, double *out) {
  char *end;
  errno = 0;
  double v = strtod(arg, &end);
  if (end == arg || *end || errno || !(v >= 0 && v <= 1e6)) /* also refuses NaN */
    return -1;
  *out = v;
  return 0;
}

/* "20000": a count from 0 to UINT_MAX (digits only) into *OUT. */
static int parse_count(const char *arg, unsigned long *out) {
  char *end;
  if (arg[0] < '0' || arg[0] > '9')
    return -1; /* no sign, no space: strtoul would take "-1" */
  errno = 0;
  unsigned long v = strtoul(arg, &end, 10);
  if (*end || errno || v > UINT_MAX)
    return -1;
  *out = v;
  return 0;
}

/* A self-signed certificate for "localhost", 127.0.0.1 and ::1, made in memory. */
static int use_generated_cert(weft_cert_options *o) {
  static const char *const dns[] = {"localhost"};
  static const char *const ips[] = {"127.0.0.1", "::1"};
  weft_cert_spec spec = {.common_name = "localhost",
                         .dns_names = dns,
                         .dns_count = 1,
                         .ip_addresses = ips,
                         .ip_count = 2};
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  int rc = weft_key_generate(WEFT_KEY_EC_P256, 0, &key);
  if (rc == 0)
    rc = weft_cert_generate(&spec, key, NULL, NULL, &cert);
  if (rc == 0)
    rc = weft_cert_options_set_private_key(o, key);
  if (rc == 0)
    rc = weft_cert_options_set_certificate(o, cert);
  EVP_PKEY_free(key); /* the options took their own references */
  X509_free(cert);
  return rc;
}

/* Builds and prepares (freezes, checks) the server's TLS options: the identity from CERT and
 * KEY (PEM files; both NULL: a generated self-signed certificate) and ALPN (and NPN) offering
 * http/1.1. Returns 0 with *OUT set, or prints "error: PREFIX: MESSAGE" and returns an error. */
static int make_options(const char *cert, const char *key, const char *prefix,
                        weft_cert_options **out) {
  static const char *const protocols[] = {"http/1.1"};
  weft_cert_options *opts;
  *out = NULL;
  if (weft_cert_options_new(&opts) != 0) {
    fprintf(stderr, "error: %s: out of memory\n", prefix);
    return WEFT_ENOMEM;
  }
  int rc = cert ? weft_cert_options_load_certificate_chain_file(opts, cert) : 0;
  if (rc == 0)
    rc = key ? weft_cert_options_load_private_key_file(opts, key) : use_generated_cert(opts);
  if (rc == 0)
    rc = weft_cert_options_set_next_protocols(opts, protocols, 1);
  if (rc == 0)
    rc = weft_cert_options_prepare(opts, WEFT_TLS_SERVER); /* report errors now */
  if (rc != 0) {
    const char *why = weft_cert_options_last_error(opts);
    fprintf(stderr, "error: %s: %s\n", prefix, *why ? why : weft_strerror(rc));
    weft_cert_options_unref(opts);
    return rc;
  }
  *out = opts;
  return 0;
}

/* --- Reload (SIGHUP) --------------------------------------------------------------------- */

/* One thread's part of a reload: runs in that thread (weft_reactor_call_from_thread), swaps
 * the new options into its listener, drops the reference it was given, and says so. */
struct reload_call {
  struct server *server;
  weft_cert_options *opts; /* a reference of the call's own */
  int rc;
  sem_t *done;
};

static void reload_in_thread(void *arg) {
  struct reload_call *call = arg;
  call->rc = weft_listener_set_options(call->server->listener, call->opts);
  weft_cert_options_unref(call->opts);
  sem_post(call->done); /* the main thread reads rc after this */
}

/* Main thread: builds new options from CERT and KEY and has each of the N running threads put
 * them into its listener. The options are prepared (every check done) before any thread is
 * asked, so either every listener gets them or none does. Returns 0 or an error (printed). */
static int reload_all(struct server *servers, int n, const char *cert, const char *key) {
  /* Static: a call that comes late (after a time-out below) still finds its slot and DONE. */
  static struct reload_call calls[MAX_THREADS];
  static sem_t done;
  static int done_ready;
  weft_cert_options *opts;
  int rc = make_options(cert, key, "reload failed", &opts);
  if (rc != 0)
    return rc;
  if (!done_ready)
    sem_init(&done, 0, 0), done_ready = 1;
  while (sem_trywait(&done) == 0) { /* what late calls of an earlier reload posted */
  }
  int asked = 0;
  for (int i = 0; i < n; i++) {
    calls[i] = (struct reload_call){&servers[i], weft_cert_options_ref(opts), 0, &done};
    if (weft_reactor_call_from_thread(servers[i].reactor, reload_in_thread, &calls[i]) != 0) {
      weft_cert_options_unref(opts);
      rc = WEFT_ENOMEM;
      break;
    }
    asked++;
  }
  /* A thread whose reactor stopped on an error never answers: wait a bounded time. */
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 10;
  for (int i = 0; i < asked; i++) {
    int w;
    while ((w = sem_timedwait(&done, &deadline)) != 0 && errno == EINTR) {
    }
    if (w != 0) { /* the late calls keep their references (and their slots) */
      fprintf(stderr, "error: reload failed: a thread did not answer\n");
      weft_cert_options_unref(opts);
      return WEFT_ETIMEDOUT;
    }
  }
  for (int i = 0; i < asked && rc == 0; i++)
    rc = calls[i].rc;
  weft_cert_options_unref(opts); /* the listeners hold their own references */
  if (rc != 0) {
    fprintf(stderr, "error: reload failed: %s\n", weft_strerror(rc));
    return rc;
  }
  printf("reloaded\n");
  fflush(stdout);
  return 0;
}

/* A server thread: sets up its reactor and listener, says so, then runs until stopped. */
/* A server thread: sets up its reactor and listener, says so, then runs until stopped. */
static void *server_main(void *arg) {
  struct server *sv = arg;
  weft_listener *listener = NULL;
  /* An endpoint says where and how to listen; the short form weft_listen_ssl would do for one
   * thread, but sharing the port between threads is an endpoint setting. */
  weft_endpoint *ep = NULL;
  int rc = weft_reactor_new(&sv->reactor);
  if (rc == 0)
    rc = weft_endpoint_new(WEFT_ENDPOINT_SERVER, &ep);
  if (rc == 0)
    rc = weft_endpoint_set_host(ep, sv->host); /* NULL: every IPv4 interface */
  if (rc == 0)
    rc = weft_endpoint_set_port(ep, sv->port);
  if (rc == 0)
    rc = weft_endpoint_set_tls(ep, sv->opts);
  if (rc == 0)
    rc = weft_endpoint_set_reuseport(ep, sv->reuseport);
  if (rc == 0)
    rc = weft_endpoint_listen(sv->reactor, ep, &sv->factory, &listener);
  weft_endpoint_free(ep); /* the listener does not need it */
  /* Limits, set before the reactor runs: no connection is accepted without them. */
  if (rc == 0 && sv->idle_timeout > 0)
    rc = weft_listener_set_idle_timeout(listener, sv->idle_timeout);
  if (rc == 0 && sv->write_timeout > 0)
    rc = weft_listener_set_write_timeout(listener, sv->write_timeout);
  if (rc == 0 && sv->max_conns > 0)
    rc = weft_listener_set_connection_limit(listener, sv->max_conns);
  if (rc != 0 && listener) {
    weft_listener_stop(listener);
    listener = NULL;
  }
  if (rc == 0) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    snprintf(sv->addr, sizeof sv->addr, "?");
    if (weft_listener_address(listener, (struct sockaddr *)&ss, &len) == 0)
      weft_address_format((struct sockaddr *)&ss, sv->addr, sizeof sv->addr);
    sv->port = weft_listener_port(listener);
    sv->listener = listener;
  } else {
    weft_reactor_free(sv->reactor); /* NULL is ignored; the main thread will not touch it */
    sv->reactor = NULL;
  }
  sv->setup_rc = rc;
  sem_post(sv->ready); /* the main thread reads setup_rc, port and addr after this */
  if (rc != 0)
    return NULL;
  /* A stop from the main thread that comes before run makes run return at once. */
  sv->run_rc = weft_reactor_run(sv->reactor);
  if (sv->run_rc != 0)
    kill(getpid(), SIGTERM); /* wakes the main thread's sigwait */
  /* The main thread may still call weft_reactor_stop: free the reactor only after its last. */
  while (sem_wait(sv->release) != 0 && errno == EINTR) {
  }
  weft_reactor_free(sv->reactor); /* closes every connection: each gets connection_lost */
  return NULL;
}

int main(int argc, char **argv) {
  char *listen = NULL, *cert = NULL, *key = NULL, *threads = "1";
  char *idle = NULL, *write_to = NULL, *max_conns = NULL;
  for (int i = 1; i < argc; i++) {
    char **val = !strcmp(argv[i], "--listen")            ? &listen
                 : !strcmp(argv[i], "--cert")            ? &cert
                 : !strcmp(argv[i], "--key")             ? &key
                 : !strcmp(argv[i], "--threads")         ? &threads
                 : !strcmp(argv[i], "--idle-timeout")    ? &idle
                 : !strcmp(argv[i], "--write-timeout")   ? &write_to
                 : !strcmp(argv[i], "--max-connections") ? &max_conns
                                                         : NULL;
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(usage, stdout);
      return 0;
    } else if (!val || i + 1 == argc) {
      fprintf(stderr, "error: %s: unknown option or missing value\n%s", argv[i], usage);
      return 2;
    }
    *val = argv[++i];
  }
  const char *host = NULL;
  int port = 0;
  char *end;
  long nthreads = strtol(threads, &end, 10);
  if (!listen)
    return fputs("error: --listen HOST:PORT is required (see --help)\n", stderr), 2;
  if (parse_host_port(listen, &host, &port) != 0)
    return fprintf(stderr, "error: bad --listen address: %s\n", listen), 2;
  if (!cert != !key)
    return fputs("error: --cert and --key go together\n", stderr), 2;
  if (*end || end == threads || nthreads < 1 || nthreads > MAX_THREADS)
    return fprintf(stderr, "error: --threads needs a number from 1 to %d\n", MAX_THREADS), 2;
  double idle_s = 0, write_s = 0;
  unsigned long conn_limit = 0;
  if (idle && parse_seconds(idle, &idle_s) != 0)
    return fputs("error: --idle-timeout needs a number of seconds from 0 to 1000000\n", stderr), 2;
  if (write_to && parse_seconds(write_to, &write_s) != 0)
    return fputs("error: --write-timeout needs a number of seconds from 0 to 1000000\n", stderr), 2;
  if (max_conns && parse_count(max_conns, &conn_limit) != 0)
    return fputs("error: --max-connections needs a number from 0 to 4294967295\n", stderr), 2;

  /* TLS options: identity, and ALPN (and NPN) offering http/1.1. Prepared (frozen) here, so
   * the threads only ever read them. */
  weft_cert_options *opts;
  int rc = make_options(cert, key, "TLS options", &opts);
  if (rc != 0)
    return 1;
  memset(body_chunk, 'x', sizeof body_chunk);

  /* SIGTERM, SIGINT and SIGHUP are blocked in every thread (the threads inherit this mask)
   * and taken by the main thread's sigwait below. */
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, NULL);

  /* Start the threads one at a time: the first one's port (chosen by the kernel for port 0)
   * is the port of all the others. */
  static struct server servers[MAX_THREADS];
  sem_t ready, release;
  sem_init(&ready, 0, 0);
  sem_init(&release, 0, 0);
  int started = 0, running = 0;
  for (int i = 0; i < nthreads; i++) {
    struct server *sv = &servers[i];
    sv->index = i;
    sv->factory.build_protocol = build_http;
    sv->factory.data = sv;
    sv->opts = opts;
    sv->host = host;
    sv->port = i == 0 ? port : servers[0].port;
    sv->reuseport = nthreads > 1;
    sv->idle_timeout = idle_s;
    sv->write_timeout = write_s;
    sv->max_conns = (unsigned)conn_limit;
    sv->ready = &ready;
    sv->release = &release;
    if (pthread_create(&sv->thread, NULL, server_main, sv) != 0) {
      fputs("error: cannot start a thread\n", stderr);
      rc = 1;
      break;
    }
    started++;
    while (sem_wait(&ready) != 0 && errno == EINTR) {
    }
    if (sv->setup_rc != 0) {
      fprintf(stderr, "error: cannot listen on %s:%d (thread %d): %s\n", host ? host : "*",
              sv->port, i, weft_strerror(sv->setup_rc));
      rc = 1;
      break;
    }
    running++; /* threads 0 .. running-1 run their reactor */
  }

  if (rc == 0) {
    printf("listening on %s\n", servers[0].addr);
    fflush(stdout); /* a driver waits for this line: do not leave it in stdio's buffer */
    int sig = 0;
    while (sigwait(&signals, &sig) == 0 && sig == SIGHUP)
      reload_all(servers, running, cert, key); /* a failure is printed; serving goes on */
  }
  for (int i = 0; i < running; i++)
    weft_reactor_stop(servers[i].reactor);
  for (int i = 0; i < running; i++)
    sem_post(&release);
  for (int i = 0; i < started; i++)
    pthread_join(servers[i].thread, NULL);
  sem_destroy(&ready);
  sem_destroy(&release);
  weft_cert_options_unref(opts);
  if (rc != 0)
    return 1;

  for (int i = 0; i < running; i++) {
    fprintf(stderr, "thread %d: %llu connections, %llu requests\n", i, servers[i].connections,
            servers[i].requests);
    if (servers[i].run_rc != 0) {
      fprintf(stderr, "error: thread %d: %s\n", i, weft_strerror(servers[i].run_rc));
      rc = 1;
    }
  }
  return rc;
}
