/* samples/reconnecting-client.c: a client that keeps its connection up, reconnecting with
 * exponential back-off after a failure or a lost connection (weft/reconnect.h).
 *
 *   reconnecting-client --connect HOST:PORT [--tls [--insecure]] [--max-retries N]
 *
 * Prints one line per event: "connected", "failed: REASON", "lost: REASON",
 * "retrying in X.XX s", "giving up: REASON" (then exits 1). Sends a line on every connection and
 * copies what the server sends to stdout. Try it with samples/echo-server, stopping and
 * restarting the server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

static weft_reactor *reactor;
static int exit_status;

/* The protocol. One connection at a time, so one static protocol object serves them all. */
static void on_made(weft_protocol *p, weft_transport *t) {
  static const char hello[] = "hello from reconnecting-client\n";
  (void)p;
  printf("connected\n");
  weft_transport_write(t, hello, sizeof hello - 1);
}

static void on_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  (void)p, (void)t;
  fwrite(data, 1, len, stdout);
}
static void on_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)p, (void)t;
  printf("lost: %s\n", reason->message);
}

static const weft_protocol_ops line_ops = {
    .connection_made = on_made, .data_received = on_data, .connection_lost = on_lost};
static weft_protocol line_protocol = {&line_ops, NULL};

/* The factory: builds the protocol for each connection, hears of every failed attempt. */
static weft_protocol *build(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)f, (void)t, (void)peer;
  return &line_protocol;
}
static void failed(weft_factory *f, const weft_reason *reason) {
  (void)f;
  printf("failed: %s\n", reason->message);
}

static weft_factory factory = {.build_protocol = build, .connection_failed = failed};

/* The reconnector's own events. */
static void on_retry(weft_reconnector *rc, double delay, const weft_reason *why, void *data) {
  (void)rc, (void)why, (void)data;
  printf("retrying in %.2f s\n", delay);
}
static void on_give_up(weft_reconnector *rc, const weft_reason *reason, void *data) {
  (void)rc, (void)data;
  printf("giving up: %s\n", reason->message);
  exit_status = 1;
  weft_reactor_stop(reactor);
}

static int usage(FILE *out, int status) {
  fputs("usage: reconnecting-client --connect HOST:PORT [--tls [--insecure]] [--max-retries N]\n",
        out);
  return status;
}

int main(int argc, char **argv) {
  char host[256] = "", *end;
  int port = 0, tls = 0, insecure = 0;
  weft_reconnect_options ro;
  weft_reconnect_options_init(&ro); /* the defaults first, then what was asked for */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      return usage(stdout, 0);
    } else if (!strcmp(a, "--tls")) {
      tls = 1;
    } else if (!strcmp(a, "--insecure")) {
      insecure = 1;
    } else if (!strcmp(a, "--connect") && v) { /* HOST:PORT; HOST may be an IPv6 literal */
      const char *colon = strrchr(v, ':');
      size_t n = colon ? (size_t)(colon - v) : 0;
      port = colon ? (int)strtol(colon + 1, &end, 10) : 0;
      if (!n || n >= sizeof host || *end || port < 1 || port > 65535) {
        fprintf(stderr, "error: --connect wants HOST:PORT, got '%s'\n", v);
        return 2;
      }
      memcpy(host, v, n);
      host[n] = '\0';
      i++;
    } else if (!strcmp(a, "--max-retries") && v) {
      ro.max_retries = (int)strtol(v, &end, 10);
      if (*end || !*v || ro.max_retries < 0) {
        fprintf(stderr, "error: --max-retries wants a number >= 0, got '%s'\n", v);
        return 2;
      }
      i++;
    } else {
      fprintf(stderr, "error: unknown or incomplete option '%s'\n", a);
      return usage(stderr, 2);
    }
  }
  if (!*host) {
    fprintf(stderr, "error: --connect HOST:PORT is required\n");
    return usage(stderr, 2);
  }
  setvbuf(stdout, NULL, _IOLBF, 0); /* each event line shows at once, even through a pipe */
  ro.on_retry = on_retry;
  ro.on_give_up = on_give_up;

  weft_cert_options *opts = NULL;
  weft_endpoint *ep = NULL; /* where to connect: host, port, TLS options */
  weft_reconnector *rcn = NULL;
  int rc = weft_reactor_new(&reactor);
  if (rc == 0 && tls && (rc = weft_cert_options_new(&opts)) == 0 && insecure)
    rc = weft_cert_options_set_verify(opts, 0); /* accepts any server: for tests only */
  if (rc == 0 && (rc = weft_endpoint_new(WEFT_ENDPOINT_CLIENT, &ep)) == 0 &&
      (rc = weft_endpoint_set_host(ep, host)) == 0 && (rc = weft_endpoint_set_port(ep, port)) == 0)
    rc = weft_endpoint_set_tls(ep, opts); /* TLS when opts is set; the server name is HOST */
  if (rc == 0)
    rc = weft_reconnect_start(reactor, ep, &factory, &ro, &rcn);
  weft_endpoint_free(ep); /* the reconnector copied what it needs */
  if (rc != 0)
    fprintf(stderr, "error: %s%s%s\n", weft_strerror(rc), opts ? ": " : "",
            opts ? weft_cert_options_last_error(opts) : "");
  weft_cert_options_unref(opts); /* the reconnector keeps its own reference */
  if (rc == 0)
    weft_reactor_run(reactor); /* until on_give_up stops it */
  weft_reconnector_free(rcn);  /* reconnectors first (NULL is ignored), then the reactor */
  weft_reactor_free(reactor);
  return rc != 0 ? 1 : exit_status;
}
