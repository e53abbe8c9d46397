/* acme-tls-alpn: a TLS server that answers ACME's tls-alpn-01 challenge (RFC 8737) on the port
 * it serves, with an identity selector (weft_cert_options_set_identity_selector).
 *
 *   acme-tls-alpn --listen 127.0.0.1:8443 --cert site.pem --key site.key \
 *     --challenge example.com=challenge.pem,challenge.key [--protocols h2,http/1.1]
 *
 * An ACME validator connects with SNI set to the name being validated and an ALPN offer of
 * exactly one protocol, "acme-tls/1". For such a ClientHello the selector, which sees both the
 * SNI name and the ALPN offer, picks the challenge identity of that name (its certificate is
 * the self-signed one the ACME client made, with the critical acmeIdentifier extension); the
 * handshake negotiates acme-tls/1 and the server closes the connection once it is up (RFC
 * 8737 section 3: nothing is sent over it). An acme-tls/1-only offer for a name with no
 * challenge is refused with the unrecognized_name alert (112). Every other client gets the
 * real certificate (--cert/--key) and the --protocols list (default http/1.1), and its bytes
 * are echoed back. The challenge identities are added under no name
 * (weft_cert_options_add_identity with COUNT 0), so the SNI name alone never selects them.
 *
 * Prints "listening on HOST:PORT" once ready, then "connected peer=ADDR protocol=NAME" for
 * each connection (as echo-server does); exits 0 on SIGTERM or SIGINT.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <weft/weft.h>

#define MAX_CHALLENGES 16
#define MAX_PROTOCOLS 16
#define ACME_TLS_1 "acme-tls/1"

static const char usage[] =
    "usage: acme-tls-alpn --listen HOST:PORT --cert PEM --key PEM\n"
    "                     [--challenge NAME=CERTPEM,KEYPEM]... [--protocols LIST]\n"
    "A client whose ALPN offer is exactly acme-tls/1 gets the challenge certificate of its SNI\n"
    "NAME (RFC 8737; refused with alert 112 when NAME has none); other clients get --cert,\n"
    "ALPN from LIST (comma-separated, default http/1.1), and an echo of what they send.\n";

/* One challenge: the name being validated and its identity. */
struct challenge {
  const char *name;
  weft_tls_identity *identity;
};

static struct challenge challenges[MAX_CHALLENGES];
static int nchallenges;

/* 1 when OFFER (ALPN wire form: length-prefixed names, LEN bytes) is exactly "acme-tls/1". */
static int offers_only_acme(const uint8_t *offer, size_t len) {
  size_t n = strlen(ACME_TLS_1);
  return len == 1 + n && offer[0] == n && memcmp(offer + 1, ACME_TLS_1, n) == 0;
}

/* The identity selector: runs in the reactor's thread for each ClientHello. */
static int select_identity(void *arg, const char *server_name, const uint8_t *offer,
                           size_t offer_len, weft_tls_identity **identity) {
  (void)arg;
  if (!offers_only_acme(offer, offer_len))
    return 0; /* not a validator: names decide */
  for (int i = 0; server_name && i < nchallenges; i++) {
    if (!strcasecmp(server_name, challenges[i].name)) {
      *identity = challenges[i].identity;
      return 1;
    }
  }
  return -1; /* no challenge for this name: unrecognized_name (112) */
}

/* --- The protocol: echo, or close at once after an acme-tls/1 handshake ------------------- */

static void conn_made(weft_protocol *p, weft_transport *t) {
  (void)p;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char addr[64] = "?";
  if (weft_transport_peer_address(t, (struct sockaddr *)&ss, &len) == 0)
    weft_address_format((struct sockaddr *)&ss, addr, sizeof addr);
  size_t n = 0;
  const uint8_t *proto = weft_transport_next_protocol(t, &n);
  printf("connected peer=%s protocol=%.*s\n", addr, proto ? (int)n : 4,
         proto ? (const char *)proto : "none");
  fflush(stdout);
  if (proto && n == strlen(ACME_TLS_1) && !memcmp(proto, ACME_TLS_1, n))
    weft_transport_lose_connection(t); /* the validator only wanted the certificate */
}

static void conn_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  (void)p;
  weft_transport_write(t, data, len);
}

static void conn_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)t, (void)reason;
  free(p); /* connection_lost is the protocol's last callback */
}

static const weft_protocol_ops conn_ops = {
    .connection_made = conn_made,
    .data_received = conn_data,
    .connection_lost = conn_lost,
};

static weft_protocol *build_conn(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)f, (void)t, (void)peer;
  weft_protocol *p = calloc(1, sizeof *p);
  if (p)
    p->ops = &conn_ops;
  return p; /* NULL refuses the connection */
}

static void handshake_failed(weft_factory *f, const struct sockaddr *peer, const weft_reason *r) {
  (void)f;
  char addr[64];
  fprintf(stderr, "handshake failed peer=%s: %s\n", weft_address_format(peer, addr, sizeof addr),
          r->message);
}

/* --- Setup ------------------------------------------------------------------------------- */

/* "127.0.0.1:80" or "[::1]:80" into HOST and PORT. An empty host means every interface. */
static int parse_host_port(const char *arg, const char **host, int *port) {
  static char buf[256];
  const char *colon = strrchr(arg, ':');
  char *end;
  long p = colon ? strtol(colon + 1, &end, 10) : -1;
  if (!colon || colon[1] == '\0' || *end || p < 0 || p > 65535)
    return -1;
  size_t n = (size_t)(colon - arg);
  if (n >= 2 && arg[0] == '[' && arg[n - 1] == ']')
    arg++, n -= 2;
  if (n >= sizeof buf)
    return -1;
  memcpy(buf, arg, n);
  buf[n] = '\0';
  *host = n ? buf : NULL;
  *port = (int)p;
  return 0;
}

/* NAME=CERTPEM,KEYPEM (ARG is modified) into a challenge identity answering acme-tls/1. */
static int add_challenge(char *arg) {
  static const char *const acme[] = {ACME_TLS_1};
  char *eq = strchr(arg, '='), *comma = eq ? strchr(eq, ',') : NULL;
  if (!eq || !comma || eq == arg || nchallenges == MAX_CHALLENGES) {
    fprintf(stderr, "error: --challenge wants NAME=CERTPEM,KEYPEM (at most %d)\n", MAX_CHALLENGES);
    return -1;
  }
  *eq = '\0', *comma = '\0';
  weft_tls_identity *id;
  if (weft_tls_identity_new(&id) != 0)
    return fputs("error: out of memory\n", stderr), -1;
  int rc = weft_tls_identity_load_certificate_chain_file(id, eq + 1);
  if (rc == 0)
    rc = weft_tls_identity_load_private_key_file(id, comma + 1);
  if (rc == 0)
    rc = weft_tls_identity_set_next_protocols(id, acme, 1);
  if (rc != 0) {
    fprintf(stderr, "error: challenge %s: %s\n", arg, weft_tls_identity_last_error(id));
    weft_tls_identity_unref(id);
    return -1;
  }
  challenges[nchallenges++] = (struct challenge){arg, id};
  return 0;
}

/* LIST ("h2,http/1.1"; modified) as the options' next-protocol list. */
static int set_protocols(weft_cert_options *o, char *list) {
  const char *names[MAX_PROTOCOLS];
  size_t n = 0;
  for (char *save = NULL, *s = strtok_r(list, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
    if (n == MAX_PROTOCOLS)
      return WEFT_EINVAL;
    names[n++] = s;
  }
  return weft_cert_options_set_next_protocols(o, names, n);
}

int main(int argc, char **argv) {
  char *listen = NULL, *cert = NULL, *key = NULL, *protocols = "http/1.1";
  int status = 2;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(usage, stdout);
      status = 0;
      goto out;
    }
    if (i + 1 == argc)
      goto bad_flag;
    if (!strcmp(argv[i], "--listen"))
      listen = argv[++i];
    else if (!strcmp(argv[i], "--cert"))
      cert = argv[++i];
    else if (!strcmp(argv[i], "--key"))
      key = argv[++i];
    else if (!strcmp(argv[i], "--protocols"))
      protocols = argv[++i];
    else if (!strcmp(argv[i], "--challenge")) {
      if (add_challenge(argv[++i]) != 0)
        goto out;
    } else {
    bad_flag:
      fprintf(stderr, "error: %s: unknown option or missing value\n%s", argv[i], usage);
      goto out;
    }
  }
  const char *host = NULL;
  int port = 0;
  if (!listen || !cert || !key || parse_host_port(listen, &host, &port) != 0) {
    fprintf(stderr, "error: --listen HOST:PORT, --cert and --key are required\n%s", usage);
    goto out;
  }

  status = 1;
  weft_cert_options *opts;
  if (weft_cert_options_new(&opts) != 0) {
    fputs("error: out of memory\n", stderr);
    goto out;
  }
  int rc = weft_cert_options_load_certificate_chain_file(opts, cert);
  if (rc == 0)
    rc = weft_cert_options_load_private_key_file(opts, key);
  if (rc == 0)
    rc = set_protocols(opts, protocols);
  for (int i = 0; rc == 0 && i < nchallenges; i++) /* under no name: the selector's only */
    rc = weft_cert_options_add_identity(opts, NULL, 0, challenges[i].identity);
  if (rc == 0)
    rc = weft_cert_options_set_identity_selector(opts, select_identity, NULL);
  if (rc == 0)
    rc = weft_cert_options_prepare(opts, WEFT_TLS_SERVER); /* report errors now */
  if (rc != 0) {
    const char *why = weft_cert_options_last_error(opts);
    fprintf(stderr, "error: TLS options: %s\n", *why ? why : weft_strerror(rc));
    weft_cert_options_unref(opts);
    goto out;
  }

  weft_reactor *reactor;
  weft_listener *listener;
  static weft_factory factory = {.build_protocol = build_conn,
                                 .handshake_failed = handshake_failed};
  if (weft_reactor_new(&reactor) != 0) {
    fputs("error: cannot create the reactor\n", stderr);
    weft_cert_options_unref(opts);
    goto out;
  }
  rc = weft_listen_ssl(reactor, host, port, &factory, opts, &listener);
  weft_cert_options_unref(opts); /* the listener holds its own reference */
  if (rc == 0)
    rc = weft_reactor_stop_on_signals(reactor);
  if (rc != 0) {
    fprintf(stderr, "error: cannot listen on %s: %s\n", listen, weft_strerror(rc));
    weft_reactor_free(reactor);
    goto out;
  }
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char addr[64] = "?";
  if (weft_listener_address(listener, (struct sockaddr *)&ss, &len) == 0)
    weft_address_format((struct sockaddr *)&ss, addr, sizeof addr);
  printf("listening on %s\n", addr);
  fflush(stdout); /* a driver waits for this line */

  rc = weft_reactor_run(reactor);
  weft_reactor_free(reactor); /* closes every connection */
  status = rc == 0 ? 0 : 1;
  if (rc != 0)
    fprintf(stderr, "error: reactor: %s\n", weft_strerror(rc));
out:
  for (int i = 0; i < nchallenges; i++)
    weft_tls_identity_unref(challenges[i].identity);
  return status;
}
