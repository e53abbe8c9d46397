/* alpn-dispatch: one TLS port, one factory per negotiated protocol (weft_dispatch_factory_new).
 *
 *   alpn-dispatch --listen 127.0.0.1:8443
 *   openssl s_client -connect 127.0.0.1:8443 -alpn h2 -quiet     (type lines: h2-handler echoes)
 *   curl -k --http1.1 https://127.0.0.1:8443/                    (http/1.1-handler)
 *   openssl s_client -connect 127.0.0.1:8443 -quiet              (no ALPN: fallback-handler)
 *
 * The server offers [h2, http/1.1] over ALPN/NPN. "h2" here is a toy line protocol (a real
 * server would speak HTTP/2). Prints "listening on HOST:PORT", then one line per connection:
 * "dispatched peer=ADDR protocol=NAME handler=NAME". Exits 0 on SIGTERM or SIGINT.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <weft/weft.h>

static const char usage[] =
    "usage: alpn-dispatch --listen HOST:PORT [--cert PEM --key PEM]\n"
    "HOST is an IP literal (\"[::1]:PORT\" for IPv6); PORT 0 picks a free port. Without\n"
    "--cert a self-signed certificate for localhost is generated.\n";

/* The longest line (h2) or request head (http/1.1) a connection may send. */
#define MAX_HEAD 8192

/* One connection, whichever handler serves it. The framer (weft/framing.h) cuts the stream into
 * lines, whatever pieces TLS delivers, and keeps at most MAX_HEAD bytes of an unfinished one. */
typedef struct conn {
  weft_protocol base;  /* first member: a weft_protocol * we hand out is a conn * */
  weft_framer *framer; /* NULL for the fallback, which reads nothing */
  weft_transport *t;   /* for the framer's callbacks */
  size_t head;         /* http/1.1: bytes of the request head so far */
} conn;

/* h2 (the toy): answers "h2-handler: LINE" for every line (without its "\n"). */
static int h2_line(void *arg, const uint8_t *line, size_t len) {
  conn *c = arg;
  if (len > 0 && line[len - 1] == '\r')
    len--; /* accept CRLF too */
  weft_buf reply[3] = {{"h2-handler: ", 12}, {line, len}, {"\n", 1}};
  weft_transport_write_sequence(c->t, reply, 3); /* copied: the line is only lent to us */
  return 0;
}

/* http/1.1: answers the first complete request head (its empty line) with 200 and closes (no
 * keep-alive, to stay short; samples/https-hello shows a real one). */
static int http_line(void *arg, const uint8_t *line, size_t len) {
  static const char response[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: 17\r\nConnection: close\r\n\r\n"
                                 "http/1.1-handler\n";
  conn *c = arg;
  (void)line;
  c->head += len + 2;
  if (c->head > MAX_HEAD) { /* a request head larger than we accept */
    weft_transport_abort_connection(c->t);
    return 1;
  }
  if (len > 0)
    return 0; /* a header line: the head is not complete yet */
  weft_transport_write(c->t, response, sizeof response - 1);
  weft_transport_lose_connection(c->t); /* sends the response, then close_notify */
  return 1;                             /* stops the framer: the rest of the stream is ignored */
}

/* Both handlers: feed the framer. A line longer than MAX_HEAD (WEFT_ETOOLONG) ends the
 * connection; a framer stopped by http_line (1, then WEFT_ECLOSED) has already closed it. */
static void conn_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  conn *c = (conn *)p;
  c->t = t;
  int rc = weft_framer_feed(c->framer, data, len);
  if (rc < 0 && rc != WEFT_ECLOSED)
    weft_transport_abort_connection(t);
}

/* fallback: no protocol negotiated (or one without a route): say so and close. */
static void fallback_made(weft_protocol *p, weft_transport *t) {
  (void)p;
  weft_transport_write(t, "fallback-handler\n", 17);
  weft_transport_lose_connection(t);
}

static void conn_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)t, (void)reason;
  weft_framer_free(((conn *)p)->framer);
  free(p); /* weft never frees a protocol: connection_lost is its last callback */
}

static const weft_protocol_ops h2_ops = {.data_received = conn_data, .connection_lost = conn_lost};
static const weft_protocol_ops http_ops = {.data_received = conn_data,
                                           .connection_lost = conn_lost};
static const weft_protocol_ops fallback_ops = {.connection_made = fallback_made,
                                               .connection_lost = conn_lost};

/* One build_protocol for the three factories: each factory's DATA is its ops table, and its
 * handler name is printed. The dispatch factory has already chosen the factory. */
static weft_protocol *build(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  const weft_protocol_ops *ops = f->data;
  char addr[64];
  size_t n = 0;
  const uint8_t *proto = weft_transport_next_protocol(t, &n); /* final, see protocol.h */
  const char *handler = ops == &h2_ops     ? "h2-handler"
                        : ops == &http_ops ? "http/1.1-handler"
                                           : "fallback-handler";
  printf("dispatched peer=%s protocol=%.*s handler=%s\n",
         weft_address_format(peer, addr, sizeof addr), proto ? (int)n : 4,
         proto ? (const char *)proto : "none", handler);
  fflush(stdout);
  conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL; /* NULL refuses the connection */
  c->base.ops = ops;
  int rc = ops == &h2_ops     ? weft_framer_new_lines("\n", 1, MAX_HEAD, h2_line, c, &c->framer)
           : ops == &http_ops ? weft_framer_new_lines("\r\n", 2, MAX_HEAD, http_line, c, &c->framer)
                              : 0;
  if (rc != 0)
    free(c);
  return rc == 0 ? &c->base : NULL;
}

static void handshake_failed(weft_factory *f, const struct sockaddr *peer, const weft_reason *r) {
  (void)f;
  char addr[64];
  fprintf(stderr, "handshake failed peer=%s: %s\n", weft_address_format(peer, addr, sizeof addr),
          r->message);
}

/* Makes the server's options: the identity (files or a generated certificate for localhost,
 * 127.0.0.1 and ::1) and the next-protocol list, most preferred first. */
static int make_options(weft_cert_options **out, const char *cert_file, const char *key_file) {
  static const char *const protocols[] = {"h2", "http/1.1"};
  static const char *const dns[] = {"localhost"}, *const ips[] = {"127.0.0.1", "::1"};
  weft_cert_spec spec = {.common_name = "localhost",
                         .dns_names = dns,
                         .dns_count = 1,
                         .ip_addresses = ips,
                         .ip_count = 2};
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  int rc = weft_cert_options_new(out);
  if (rc == 0 && cert_file)
    rc = weft_cert_options_load_certificate_chain_file(*out, cert_file);
  if (rc == 0 && key_file)
    rc = weft_cert_options_load_private_key_file(*out, key_file);
  if (rc == 0 && !cert_file)
    rc = weft_key_generate(WEFT_KEY_EC_P256, 0, &key);
  if (rc == 0 && !cert_file)
    rc = weft_cert_generate(&spec, key, NULL, NULL, &cert);
  if (rc == 0 && key)
    rc = weft_cert_options_set_private_key(*out, key);
  if (rc == 0 && cert)
    rc = weft_cert_options_set_certificate(*out, cert);
  EVP_PKEY_free(key); /* the options took their own references */
  X509_free(cert);
  if (rc == 0)
    rc = weft_cert_options_set_next_protocols(*out, protocols, 2);
  if (rc == 0)
    rc = weft_cert_options_prepare(*out, WEFT_TLS_SERVER); /* report errors now */
  return rc;
}

int main(int argc, char **argv) {
  char *listen = NULL, *cert = NULL, *key = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
      return fputs(usage, stdout), 0;
    char **slot = !strcmp(argv[i], "--listen") ? &listen
                  : !strcmp(argv[i], "--cert") ? &cert
                  : !strcmp(argv[i], "--key")  ? &key
                                               : NULL;
    if (!slot || i + 1 == argc) {
      fprintf(stderr, "error: %s: unknown option or missing value\n%s", argv[i], usage);
      return 2;
    }
    *slot = argv[++i];
  }
  /* "127.0.0.1:80" or "[::1]:80" into HOST and PORT. */
  char *colon = listen ? strrchr(listen, ':') : NULL, *end = NULL, *host = listen;
  long port = colon ? strtol(colon + 1, &end, 10) : -1;
  if (!colon || colon[1] == '\0' || *end || port < 0 || port > 65535)
    return fputs("error: --listen HOST:PORT is required (see --help)\n", stderr), 2;
  *colon = '\0';
  if (host[0] == '[' && colon > host + 1 && colon[-1] == ']')
    host++, colon[-1] = '\0';
  if (!cert != !key)
    return fputs("error: --cert and --key go together\n", stderr), 2;

  weft_cert_options *opts = NULL;
  int rc = make_options(&opts, cert, key);
  if (rc != 0) {
    const char *why = opts ? weft_cert_options_last_error(opts) : "";
    fprintf(stderr, "error: TLS options: %s\n", *why ? why : weft_strerror(rc));
    weft_cert_options_unref(opts);
    return 1;
  }

  /* The three handlers are ordinary factories; the dispatch factory routes between them.
   * handshake_failed of the dispatch factory goes to the fallback's. */
  static weft_factory h2 = {.build_protocol = build, .data = (void *)&h2_ops};
  static weft_factory http = {.build_protocol = build, .data = (void *)&http_ops};
  static weft_factory fallback = {
      .build_protocol = build, .handshake_failed = handshake_failed, .data = (void *)&fallback_ops};
  const weft_dispatch_entry routes[] = {{"h2", &h2}, {"http/1.1", &http}};
  weft_factory *dispatch = NULL;
  weft_reactor *reactor = NULL;
  weft_listener *listener = NULL;
  if ((rc = weft_dispatch_factory_new(routes, 2, &fallback, &dispatch)) == 0 &&
      (rc = weft_reactor_new(&reactor)) == 0)
    rc = weft_listen_ssl(reactor, *host ? host : NULL, (int)port, dispatch, opts, &listener);
  weft_cert_options_unref(opts); /* the listener holds its own reference */
  if (rc != 0) {
    fprintf(stderr, "error: cannot listen on %s:%ld: %s\n", host, port, weft_strerror(rc));
    weft_reactor_free(reactor);
    weft_dispatch_factory_free(dispatch);
    return 1;
  }

  /* Stop cleanly on SIGTERM and SIGINT: weft_reactor_run then returns 0. */
  if (weft_reactor_stop_on_signals(reactor) != 0)
    return fputs("error: cannot install signal handlers\n", stderr), 1;

  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char addr[64] = "?";
  if (weft_listener_address(listener, (struct sockaddr *)&ss, &len) == 0)
    weft_address_format((struct sockaddr *)&ss, addr, sizeof addr);
  printf("listening on %s\n", addr);
  fflush(stdout); /* a driver waits for this line */

  rc = weft_reactor_run(reactor);
  weft_reactor_free(reactor);           /* closes every connection: each gets connection_lost */
  weft_dispatch_factory_free(dispatch); /* only once nothing can use it any more */
  if (rc != 0)
    fprintf(stderr, "error: reactor: %s\n", weft_strerror(rc));
  return rc == 0 ? 0 : 1;
}
