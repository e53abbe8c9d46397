/* baseline: the HTTPS "hello" server written by hand on libevent's bufferevent_openssl,
 * with no framework: the yardstick weft's samples/https-hello is measured against.
 *
 *   baseline --listen 127.0.0.1:PORT --cert PEM --key PEM
 *
 * Answers exactly what samples/https-hello answers, byte for byte: GET / gives
 * "Hello, World!" (text/plain, Content-Length), GET /bytes/N gives N bytes of 'x' streamed in
 * 64 KiB chunks (no more than 256 KiB queued, refilled when the output is down to 64 KiB),
 * HTTP/1.1 keep-alive and pipelining, "Connection: close" honoured. TLS is set up as weft's
 * defaults: TLS 1.2 minimum, weft's TLS 1.2 cipher list with server preference, no
 * compression or renegotiation, a server session cache plus tickets, SSL_MODE_RELEASE_BUFFERS,
 * ALPN http/1.1. Prints "listening on HOST:PORT" when ready; exits 0 on SIGTERM or SIGINT.
 */
#define _GNU_SOURCE /* memmem, strcasestr */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_HEAD (16 * 1024)
#define MAX_BUFFERED (256 * 1024)
#define CHUNK (64 * 1024)
#define HIGH_WATER (256 * 1024)
#define LOW_WATER (64 * 1024)

/* weft's default TLS 1.2 cipher list (lib/tls_options.c DEFAULT_CIPHERS) */
#define CIPHERS                                                                                    \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"       \
  "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static char body_chunk[CHUNK];

struct conn {
  struct bufferevent *bev;
  size_t discard;               /* request body bytes still to skip */
  unsigned long long body_left; /* /bytes/N bytes still to queue */
  int close_after;              /* close once the current response is written */
  int head_only;
  int closing; /* waiting for the output to drain, then close */
};

static void conn_free(struct conn *c) {
  SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
  if (ssl)
    SSL_shutdown(ssl); /* close_notify; the socket is closed by bufferevent_free */
  bufferevent_free(c->bev);
  free(c);
}

static void respond(struct conn *c, const char *status, const char *body,
                    unsigned long long length) {
  struct evbuffer *out = bufferevent_get_output(c->bev);
  if (body)
    length = strlen(body);
  if (c->head_only)
    body = NULL;
  evbuffer_add_printf(out,
                      "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %llu\r\n%s\r\n",
                      status, length, c->close_after ? "Connection: close\r\n" : "");
  if (body)
    evbuffer_add(out, body, length);
}

/* Queues /bytes/N body while the output is below the high mark. 1 once all is queued. */
static int pump_body(struct conn *c) {
  struct evbuffer *out = bufferevent_get_output(c->bev);
  while (c->body_left > 0 && evbuffer_get_length(out) <= HIGH_WATER) {
    size_t n = c->body_left < CHUNK ? (size_t)c->body_left : CHUNK;
    evbuffer_add_reference(out, body_chunk, n, NULL, NULL); /* static bytes: no copy */
    c->body_left -= n;
  }
  return c->body_left == 0;
}

static void handle_request(struct conn *c, char *head) {
  char *line = head, *next = strstr(head, "\r\n");
  if (next)
    *next = '\0', next += 2;
  char *target = strchr(line, ' '), *version = target ? strchr(target + 1, ' ') : NULL;
  if (!version || target == line || strchr(version + 1, ' ') || target[1] != '/')
    goto bad;
  *target++ = '\0', *version++ = '\0';
  if (strcmp(version, "HTTP/1.1") && strcmp(version, "HTTP/1.0"))
    goto bad;
  int keep_alive = !strcmp(version, "HTTP/1.1");
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
    if (!strcasecmp(line, "Content-Length")) {
      if (value[0] < '0' || value[0] > '9' || value[strspn(value, "0123456789")])
        goto bad;
      c->discard = strtoul(value, NULL, 10);
    }
    if (!strcasecmp(line, "Transfer-Encoding"))
      goto bad;
  }
  c->close_after = !keep_alive;
  c->head_only = !strcmp(line = head, "HEAD");
  target[strcspn(target, "?")] = '\0';
  char *end;
  if (strcmp(line, "GET") && !c->head_only) {
    respond(c, "501 Not Implemented", "method not implemented\n", 0);
  } else if (!strcmp(target, "/")) {
    respond(c, "200 OK", "Hello, World!", 0);
  } else if (!strncmp(target, "/bytes/", 7) && target[7] >= '0' && target[7] <= '9' &&
             strlen(target) <= 7 + 15) {
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
  c->close_after = 1;
  c->head_only = 0;
  respond(c, "400 Bad Request", "bad request\n", 0);
}

/* Answers every complete request in the input, in order, unless a body is streaming. */
static void process_requests(struct conn *c) {
  struct evbuffer *in = bufferevent_get_input(c->bev);
  while (!c->closing && c->body_left == 0) {
    if (c->close_after) { /* the last response is queued: close once it is written */
      c->closing = 1;
      bufferevent_disable(c->bev, EV_READ);
      if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_free(c);
      return;
    }
    if (c->discard) {
      size_t n = evbuffer_get_length(in) < c->discard ? evbuffer_get_length(in) : c->discard;
      evbuffer_drain(in, n);
      c->discard -= n;
      if (c->discard)
        break;
    }
    struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    size_t avail = evbuffer_get_length(in);
    if ((p.pos < 0 && avail > MAX_HEAD) || (p.pos >= 0 && (size_t)p.pos + 4 > MAX_HEAD)) {
      c->close_after = 1;
      c->head_only = 0;
      respond(c, "431 Request Header Fields Too Large", "header too large\n", 0);
      evbuffer_drain(in, avail);
    } else if (p.pos < 0) {
      break;
    } else {
      size_t head_len = (size_t)p.pos + 4;
      char *head = (char *)evbuffer_pullup(in, (ev_ssize_t)head_len);
      head[p.pos] = '\0';
      handle_request(c, head);
      evbuffer_drain(in, head_len);
    }
  }
  /* While a body streams, stop reading: pipelined requests wait in the kernel. */
  if (c->body_left)
    bufferevent_disable(c->bev, EV_READ);
}

static void on_read(struct bufferevent *bev, void *arg) {
  struct conn *c = arg;
  if (evbuffer_get_length(bufferevent_get_input(bev)) > MAX_BUFFERED + MAX_HEAD) {
    conn_free(c); /* only a client that ignores every limit gets here */
    return;
  }
  process_requests(c);
}

/* Called when the output has drained to the low-water mark (64 KiB, or 0 when not streaming). */
static void on_write(struct bufferevent *bev, void *arg) {
  struct conn *c = arg;
  struct evbuffer *out = bufferevent_get_output(bev);
  if (c->closing) {
    if (evbuffer_get_length(out) == 0)
      conn_free(c);
    return;
  }
  if (c->body_left == 0 || !pump_body(c))
    return;
  bufferevent_enable(bev, EV_READ); /* the body is queued: on to pipelined requests */
  process_requests(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  (void)bev;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
    struct conn *c = arg;
    while (ERR_get_error()) {
    } /* a peer that vanished: nothing to report */
    bufferevent_free(c->bev);
    free(c);
  }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *ctx) {
  (void)sa, (void)salen;
  struct event_base *base = evconnlistener_get_base(l);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  SSL *ssl = SSL_new(ctx);
  struct conn *c = calloc(1, sizeof *c);
  if (!ssl || !c)
    goto fail;
  c->bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
  if (!c->bev)
    goto fail;
  bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
  bufferevent_setwatermark(c->bev, EV_WRITE, LOW_WATER, 0);
  bufferevent_enable(c->bev, EV_READ | EV_WRITE);
  return;
fail:
  if (ssl)
    SSL_free(ssl);
  free(c);
  evutil_closesocket(fd);
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl, (void)arg;
  static const unsigned char ours[] = "\x08http/1.1";
  unsigned char *sel;
  if (SSL_select_next_proto(&sel, outlen, ours, sizeof ours - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* as weft: no common protocol is a fatal alert */
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *make_ctx(const char *cert, const char *key) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx)
    return NULL;
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(ctx, CIPHERS) != 1 ||
      SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1 ||
      SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"baseline", 8) != 1) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION |
                               SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_ENABLE_PARTIAL_WRITE);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER); /* tickets: on by default */
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
  return ctx;
}

static void on_signal(evutil_socket_t sig, short what, void *base) {
  (void)sig, (void)what;
  event_base_loopexit(base, NULL);
}

int main(int argc, char **argv) {
  const char *listen_at = NULL, *cert = NULL, *key = NULL;
  for (int i = 1; i < argc; i++) {
    const char **val = !strcmp(argv[i], "--listen") ? &listen_at
                       : !strcmp(argv[i], "--cert") ? &cert
                       : !strcmp(argv[i], "--key")  ? &key
                                                    : NULL;
    if (!val || i + 1 == argc) {
      fprintf(stderr, "usage: baseline --listen 127.0.0.1:PORT --cert PEM --key PEM\n");
      return 2;
    }
    *val = argv[++i];
  }
  if (!listen_at || !cert || !key) {
    fprintf(stderr, "usage: baseline --listen 127.0.0.1:PORT --cert PEM --key PEM\n");
    return 2;
  }
  struct sockaddr_in sin = {.sin_family = AF_INET};
  const char *colon = strrchr(listen_at, ':');
  char host[64];
  if (!colon || (size_t)(colon - listen_at) >= sizeof host)
    return fputs("bad --listen\n", stderr), 2;
  memcpy(host, listen_at, (size_t)(colon - listen_at));
  host[colon - listen_at] = '\0';
  if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
    return fputs("bad --listen host\n", stderr), 2;
  sin.sin_port = htons((unsigned short)atoi(colon + 1));

  SSL_CTX *ctx = make_ctx(cert, key);
  if (!ctx) {
    ERR_print_errors_fp(stderr);
    return 1;
  }
  memset(body_chunk, 'x', sizeof body_chunk);
  signal(SIGPIPE, SIG_IGN);

  struct event_base *base = event_base_new();
  if (!base)
    return fputs("error: no event base\n", stderr), 1;
  struct evconnlistener *l = evconnlistener_new_bind(
      base, on_accept, ctx, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 511,
      (struct sockaddr *)&sin, sizeof sin);
  if (!l)
    return perror("error: cannot listen"), 1;
  struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
  struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
  evsignal_add(sigterm, NULL);
  evsignal_add(sigint, NULL);

  struct sockaddr_in bound;
  socklen_t len = sizeof bound;
  getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &len);
  char addr[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &bound.sin_addr, addr, sizeof addr);
  printf("listening on %s:%d\n", addr, ntohs(bound.sin_port));
  fflush(stdout);

  int rc = event_base_dispatch(base);
  event_free(sigterm);
  event_free(sigint);
  evconnlistener_free(l);
  event_base_free(base); /* connections still open are dropped with the process */
  SSL_CTX_free(ctx);
  return rc < 0 ? 1 : 0;
}
