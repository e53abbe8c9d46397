/* echo-server: echoes every byte back, over TCP or TLS, and reports what ALPN/NPN negotiated.
 *
 *   echo-server --listen 127.0.0.1:8443 --tls --protocols h2,http/1.1
 *   echo-server --endpoint ssl:8443:interface=127.0.0.1:privateKey=key.pem:certKey=cert.pem
 *
 * --endpoint takes weft's endpoint descriptions (Twisted's syntax, see weft/endpoint.h) in
 * place of --listen, --tls, --cert and --key; the other flags apply on top of it.
 *
 * Prints "listening on HOST:PORT" (a Unix socket: "listening on unix:PATH") once ready (the real port if 0 was asked for), then
 * "connected peer=ADDR protocol=NAME" for every connection that is ready. Exits with status 0
 * on SIGTERM or SIGINT. Other programs drive it: keep those output lines as they are.
 *
 * Serving TLS in production: --sni NAME=CERTPEM,KEYPEM adds an identity chosen by SNI (NAME may
 * be *.example.com; repeatable), --sni-protocols NAME=LIST gives it its own protocol list,
 * --sni-unknown reject answers other names with alert 112, --keylog FILE writes the TLS
 * secrets (NSS format, a secret!), --ocsp-response DERFILE staples an OCSP response. On SIGHUP
 * the server reads its command line again (every certificate, key, OCSP and ticket key file),
 * swaps the new options in for new handshakes (weft_listener_set_options) and prints
 * "reloaded", or "error: reload failed: MESSAGE" on stderr while it keeps what it had.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <event2/event.h>
#include <weft/weft.h>

#define HIGH_WATER (256 * 1024) /* stop reading from a peer that does not read its echo */
#define LOW_WATER (64 * 1024)   /* ... and start again once it has caught up */

static const char usage[] =
    "usage: echo-server --listen HOST:PORT [--tls] [--cert PEM --key PEM] [--ca PEM]\n"
    "                   [--require-cert] [--protocols LIST] [--mechanisms alpn|npn|both]\n"
    "                   [--no-overlap fail|continue] [--tls-max 1.2|1.3]\n"
    "                   [--handshake-timeout SECONDS] [--sni NAME=CERTPEM,KEYPEM]...\n"
    "                   [--sni-protocols NAME=LIST]... [--sni-unknown default|reject]\n"
    "                   [--keylog FILE] [--ocsp-response DERFILE]\n"
    "       echo-server --endpoint DESCRIPTION [--ca PEM] [--require-cert] [--protocols LIST]\n"
    "                   [...the other options after --tls]\n"
    "HOST is an IP literal (\"[::1]:PORT\" for IPv6); PORT 0 picks a free port.\n"
    "LIST is comma-separated, most preferred first (h2,http/1.1). The options after --tls\n"
    "need --tls; without --cert a self-signed certificate for localhost is generated.\n"
    "DESCRIPTION replaces --listen, --tls, --cert and --key: tcp:PORT:interface=ADDR, or\n"
    "ssl:PORT:interface=ADDR:privateKey=PEM:certKey=PEM[:caCerts=PEM][:requireCert=yes]\n"
    "[:alpn=LIST]... (escape ':' and '=' in values with '\\').\n";

static int reloading; /* set while SIGHUP re-reads the command line */

/* Prints "error: WHAT[: DETAIL]" (during a reload "error: reload failed: WHAT[: DETAIL]") on
 * stderr and returns STATUS for main to exit with. */
static int fail(int status, const char *what, const char *detail) {
  fprintf(stderr, "error: %s%s%s%s\n", reloading ? "reload failed: " : "", what, detail ? ": " : "",
          detail ? detail : "");
  return status;
}

/* --- The protocol: one per connection ----------------------------------------------------- */

static void echo_made(weft_protocol *p, weft_transport *t) {
  (void)p;
  struct sockaddr_storage ss = {0}; /* zeroed: a Unix path is formatted up to its NUL */
  socklen_t len = sizeof ss;
  char addr[128] = "?";
  if (weft_transport_peer_address(t, (struct sockaddr *)&ss, &len) == 0)
    weft_address_format((struct sockaddr *)&ss, addr, sizeof addr);
  size_t n = 0;
  const uint8_t *proto = weft_transport_next_protocol(t, &n); /* final already, see protocol.h */
  printf("connected peer=%s protocol=%.*s\n", addr, proto ? (int)n : 4,
         proto ? (const char *)proto : "none");
  fflush(stdout);
  weft_transport_set_write_low_water(t, LOW_WATER);
}

static void echo_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  (void)p;
  weft_transport_write(t, data, len);
  /* Back-pressure: a peer that sends but does not read would make us buffer without limit. */
  if (weft_transport_pending_output(t) > HIGH_WATER)
    weft_transport_pause_reading(t);
}

static void echo_drained(weft_protocol *p, weft_transport *t) {
  (void)p;
  weft_transport_resume_reading(t);
}

static void echo_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)t, (void)reason;
  free(p); /* weft never frees a protocol: connection_lost is its last callback */
}

static const weft_protocol_ops echo_ops = {
    .connection_made = echo_made,
    .data_received = echo_data,
    .write_drained = echo_drained,
    .connection_lost = echo_lost,
};

static weft_protocol *build_echo(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)f, (void)t, (void)peer;
  weft_protocol *p = calloc(1, sizeof *p);
  if (p)
    p->ops = &echo_ops;
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

/* Sets the next-protocol list from "h2,http/1.1" ("" clears it). The library validates the
 * names (its last_error says which one is bad); more than 32 is our own limit (returns 1). */
static int set_protocols(weft_cert_options *o, char *list) {
  const char *names[32];
  size_t n = 0;
  for (char *name = *list ? list : NULL; name; n++) {
    if (n == 32)
      return 1;
    names[n] = name;
    if ((name = strchr(name, ',')))
      *name++ = '\0'; /* on to the next name, if any */
  }
  return weft_cert_options_set_next_protocols(o, names, n);
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

/* --sni and --sni-protocols, gathered while the flags are applied and turned into identities
 * after them (an identity freezes once added). */
static struct sni_flag { char *name, *cert, *key, *protocols; } snis[32];
static size_t nsni;

static struct sni_flag *sni_named(const char *name) {
  for (size_t i = 0; i < nsni; i++)
    if (!strcmp(snis[i].name, name))
      return &snis[i];
  return NULL;
}

/* --sni NAME=CERT,KEY (V is modified in place). Returns 0 or 1 (malformed). */
static int add_sni_flag(char *v) {
  char *eq = strchr(v, '='), *comma = eq ? strchr(eq, ',') : NULL;
  if (!comma || eq == v || nsni == sizeof snis / sizeof snis[0])
    return 1;
  *eq = *comma = '\0';
  snis[nsni++] = (struct sni_flag){v, eq + 1, comma + 1, NULL};
  return 0;
}

/* Adds the identities of --sni to O. Returns 0, or 1 after printing why. */
static int add_identities(weft_cert_options *o, char **protocol_flags, size_t nprotocols) {
  for (size_t i = 0; i < nprotocols; i++) { /* NAME=LIST */
    char *eq = strchr(protocol_flags[i], '=');
    struct sni_flag *f = eq ? (*eq = '\0', sni_named(protocol_flags[i])) : NULL;
    if (!f)
      return fail(1, "--sni-protocols names no --sni identity", protocol_flags[i]), 1;
    f->protocols = eq + 1;
  }
  for (size_t i = 0; i < nsni; i++) {
    weft_tls_identity *id = NULL;
    const char *name = snis[i].name;
    int rc = weft_tls_identity_new(&id);
    if (rc == 0)
      rc = weft_tls_identity_load_certificate_chain_file(id, snis[i].cert);
    if (rc == 0)
      rc = weft_tls_identity_load_private_key_file(id, snis[i].key);
    if (rc == 0 && snis[i].protocols) {
      const char *names[32];
      size_t n = 0;
      for (char *p = *snis[i].protocols ? snis[i].protocols : NULL; p && n < 32; n++) {
        names[n] = p;
        if ((p = strchr(p, ',')))
          *p++ = '\0';
      }
      rc = weft_tls_identity_set_next_protocols(id, names, n);
    }
    if (rc != 0) {
      fail(1, "--sni",
           *weft_tls_identity_last_error(id) ? weft_tls_identity_last_error(id)
                                             : weft_strerror(rc));
      weft_tls_identity_unref(id);
      return 1;
    }
    rc = weft_cert_options_add_identity(o, &name, 1, id);
    weft_tls_identity_unref(id); /* the options hold it */
    if (rc != 0)
      return fail(1, "--sni", weft_cert_options_last_error(o)), 1;
  }
  return 0;
}

/* Applies one TLS command-line option to O. Returns 0, a WEFT_E* code (O's last_error says
 * why), or 1 for an unknown option or a value outside its choices. */
static int apply_tls_option(weft_cert_options *o, const char *opt, char *v) {
  if (!strcmp(opt, "--cert"))
    return weft_cert_options_load_certificate_chain_file(o, v);
  if (!strcmp(opt, "--key"))
    return weft_cert_options_load_private_key_file(o, v);
  if (!strcmp(opt, "--ca"))
    return weft_cert_options_load_ca_file(o, v);
  if (!strcmp(opt, "--protocols"))
    return set_protocols(o, v);
  if (!strcmp(opt, "--mechanisms")) {
    unsigned mask = !strcmp(v, "alpn")   ? WEFT_MECH_ALPN
                    : !strcmp(v, "npn")  ? WEFT_MECH_NPN
                    : !strcmp(v, "both") ? WEFT_MECH_ALPN | WEFT_MECH_NPN
                                         : 0;
    return mask ? weft_cert_options_set_negotiation_mechanisms(o, mask) : 1;
  }
  if (!strcmp(opt, "--no-overlap") && !strcmp(v, "fail"))
    return weft_cert_options_set_no_overlap_policy(o, WEFT_NO_OVERLAP_FAIL);
  if (!strcmp(opt, "--no-overlap") && !strcmp(v, "continue"))
    return weft_cert_options_set_no_overlap_policy(o, WEFT_NO_OVERLAP_CONTINUE);
  if (!strcmp(opt, "--tls-max") && !strcmp(v, "1.2"))
    return weft_cert_options_set_tls_versions(o, WEFT_TLS1_2, WEFT_TLS1_2);
  if (!strcmp(opt, "--tls-max") && !strcmp(v, "1.3"))
    return weft_cert_options_set_tls_versions(o, WEFT_TLS1_2, WEFT_TLS1_3);
  if (!strcmp(opt, "--sni"))
    return add_sni_flag(v);
  if (!strcmp(opt, "--sni-unknown") && !strcmp(v, "default"))
    return weft_cert_options_set_sni_unknown_policy(o, WEFT_SNI_UNKNOWN_DEFAULT);
  if (!strcmp(opt, "--sni-unknown") && !strcmp(v, "reject"))
    return weft_cert_options_set_sni_unknown_policy(o, WEFT_SNI_UNKNOWN_REJECT);
  if (!strcmp(opt, "--keylog"))
    return weft_cert_options_set_keylog_file(o, v);
  if (!strcmp(opt, "--ocsp-response"))
    return weft_cert_options_load_ocsp_response_file(o, v);
  if (!strcmp(opt, "--handshake-timeout")) {
    char *end;
    double seconds = strtod(v, &end);
    return *end || !(seconds > 0) ? 1 : weft_cert_options_set_handshake_timeout(o, seconds);
  }
  return 1;
}

/* 1 if OPT is one of the TLS options that take a value (applied by apply_tls_option). */
static int is_tls_option(const char *opt) {
  static const char *const names[] = {
      "--cert",         "--key",           "--ca",          "--protocols",
      "--mechanisms",   "--no-overlap",    "--tls-max",     "--handshake-timeout",
      "--sni",          "--sni-protocols", "--sni-unknown", "--keylog",
      "--ocsp-response"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strcmp(opt, names[i]))
      return 1;
  return 0;
}

/* The endpoint of --listen HOST:PORT [--tls]: made with the endpoint setters. Returns 0, or
 * the status to exit with. */
static int endpoint_from_flags(const char *listen, int tls, weft_endpoint **ep) {
  const char *host = NULL;
  int port = 0;
  if (parse_host_port(listen, &host, &port) != 0)
    return fail(2, "bad --listen address", listen);
  weft_cert_options *opts = NULL;
  if (weft_endpoint_new(WEFT_ENDPOINT_SERVER, ep) != 0 || (tls && weft_cert_options_new(&opts)))
    return fail(1, "out of memory", NULL);
  int rc = weft_endpoint_set_port(*ep, port);
  if (rc == 0)
    rc = weft_endpoint_set_host(*ep, host);
  if (rc == 0)
    rc = weft_endpoint_set_tls(*ep, opts); /* NULL: plain TCP */
  weft_cert_options_unref(opts);           /* the endpoint holds its own reference */
  return rc == 0 ? 0 : fail(2, "bad --listen address", listen);
}

/* Reads the command line into *EP, the endpoint to listen on: parsed from --endpoint, or made
 * from --listen and --tls; the TLS options (--cert, --protocols, ...) are then applied to the
 * endpoint's certificate options, in command-line order. Returns -1 when the server should
 * run, else the status to exit with (0 after --help). */
static int parse_args(int argc, char **argv, weft_endpoint **ep) {
  int tls = 0, tls_flags = 0, cert = 0, key = 0, rc = 0, status = 2, nflags = 0;
  const char *listen = NULL, *description = NULL;
  const char **flags = calloc((size_t)argc * 2, sizeof *flags); /* option, value (or NULL) */
  weft_cert_options *opts = NULL;
  char **sni_protocols = calloc((size_t)argc, sizeof *sni_protocols);
  char **copies = calloc((size_t)argc, sizeof *copies); /* values modified in place */
  size_t nsni_protocols = 0;
  nsni = 0;
  if (!flags || !sni_protocols || !copies)
    return fail(1, "out of memory", NULL);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage, stdout);
      status = 0;
      goto done;
    } else if (!strcmp(a, "--tls")) {
      tls = 1;
    } else if (!strcmp(a, "--require-cert")) {
      tls_flags = 1;
      flags[nflags++] = a, flags[nflags++] = NULL;
    } else if (i + 1 == argc ||
               (strcmp(a, "--listen") && strcmp(a, "--endpoint") && !is_tls_option(a))) {
      fprintf(stderr, "error: %s: unknown option or missing value\n%s", a, usage);
      goto done;
    } else if (!strcmp(a, "--listen")) {
      listen = argv[++i];
    } else if (!strcmp(a, "--endpoint")) {
      description = argv[++i];
    } else {
      tls_flags = 1, cert |= !strcmp(a, "--cert"), key |= !strcmp(a, "--key");
      flags[nflags++] = a, flags[nflags++] = argv[++i];
    }
  }
  const char *problem = description && (listen || tls || cert || key)
                            ? "--endpoint replaces --listen, --tls, --cert and --key"
                        : !description && !listen ? "--listen HOST:PORT is required (see --help)"
                        : !description && tls_flags && !tls ? "TLS options need --tls"
                        : cert != key                       ? "--cert and --key go together"
                                                            : NULL;
  if (problem) {
    fail(2, problem, NULL);
    goto done;
  }
  if (description) {
    char err[256];
    if ((rc = weft_endpoint_parse(description, WEFT_ENDPOINT_SERVER, ep, err, sizeof err))) {
      status = fail(rc == WEFT_EINVAL || rc == WEFT_ENOTSUP ? 2 : 1, "bad --endpoint", err);
      goto done;
    }
    if (tls_flags && !weft_endpoint_get_tls(*ep)) {
      status = fail(2, "TLS options need an ssl: endpoint", NULL);
      goto done;
    }
  } else if ((status = endpoint_from_flags(listen, tls, ep)) != 0) {
    goto done;
  }
  status = 2;
  opts = weft_cert_options_ref(weft_endpoint_get_tls(*ep)); /* NULL for TCP */
  for (int f = 0; f < nflags && rc == 0; f += 2) {
    char *value = flags[f + 1] ? (copies[f / 2] = strdup(flags[f + 1])) : NULL;
    if (!flags[f + 1]) {
      rc = weft_cert_options_set_require_certificate(opts, 1);
    } else if (!value) {
      status = fail(1, "out of memory", NULL);
      goto done;
    } else if (!strcmp(flags[f], "--sni-protocols")) {
      sni_protocols[nsni_protocols++] = value;
    } else if ((rc = apply_tls_option(opts, flags[f], value)) == 1) {
      fprintf(stderr, "error: %s: unknown option or bad value\n%s", flags[f], usage);
      goto done;
    }
  }
  if (rc == 0 && (nsni > 0 || nsni_protocols > 0) &&
      add_identities(opts, sni_protocols, nsni_protocols) != 0) {
    status = 1;
    goto done;
  }
  if (rc == 0 && tls && !cert)
    rc = use_generated_cert(opts);
  /* Build the SSL context now, so that a bad key or certificate is reported at once. */
  if (rc == 0 && opts)
    rc = weft_cert_options_prepare(opts, WEFT_TLS_SERVER);
  if (rc != 0) {
    const char *why = weft_cert_options_last_error(opts);
    status = fail(1, "TLS options", *why ? why : weft_strerror(rc));
    goto done;
  }
  status = -1;
done:
  weft_cert_options_unref(opts);
  for (int i = 0; copies && i < argc; i++)
    free(copies[i]);
  free(copies);
  free(sni_protocols);
  free(flags);
  if (status >= 0) {
    weft_endpoint_free(*ep);
    *ep = NULL;
  }
  return status;
}

/* SIGHUP: read the command line again and swap the new options in for new handshakes. */
struct reload_ctx {
  int argc;
  char **argv;
  weft_listener *listener;
};

static void on_sighup(evutil_socket_t sig, short what, void *arg) {
  struct reload_ctx *r = arg;
  (void)sig, (void)what;
  weft_endpoint *ep = NULL;
  reloading = 1;
  int status = parse_args(r->argc, r->argv, &ep);
  if (status < 0) {
    weft_cert_options *o = weft_endpoint_get_tls(ep);
    int rc = o ? weft_listener_set_options(r->listener, o) : WEFT_EINVAL;
    if (rc == 0) {
      printf("reloaded\n");
      fflush(stdout);
    } else {
      fail(1, o ? weft_cert_options_last_error(o) : "not a TLS listener", NULL);
    }
    weft_endpoint_free(ep);
  }
  reloading = 0;
}

int main(int argc, char **argv) {
  weft_endpoint *endpoint = NULL;
  int status = parse_args(argc, argv, &endpoint);
  if (status >= 0)
    return status;

  weft_reactor *reactor;
  if (weft_reactor_new(&reactor) != 0)
    return fail(1, "cannot create the reactor", NULL);
  static weft_factory factory = {.build_protocol = build_echo,
                                 .handshake_failed = handshake_failed};
  weft_listener *listener;
  int rc = weft_endpoint_listen(reactor, endpoint, &factory, &listener);
  if (rc != 0) {
    const char *host = weft_endpoint_get_host(endpoint);
    fprintf(stderr, "error: cannot listen on %s:%d: %s\n", host ? host : "*",
            weft_endpoint_get_port(endpoint), weft_strerror(rc));
    weft_endpoint_free(endpoint);
    weft_reactor_free(reactor);
    return 1;
  }
  weft_endpoint_free(endpoint); /* the listener holds what it needs */

  /* Stop cleanly on SIGTERM and SIGINT: weft_reactor_run then returns 0. */
  if (weft_reactor_stop_on_signals(reactor) != 0) {
    weft_reactor_free(reactor);
    return fail(1, "cannot install signal handlers", NULL);
  }
  struct reload_ctx reload = {argc, argv, listener};
  struct event *hup = evsignal_new(weft_reactor_event_base(reactor), SIGHUP, on_sighup, &reload);
  if (!hup || evsignal_add(hup, NULL) != 0) {
    weft_reactor_free(reactor);
    return fail(1, "cannot install the SIGHUP handler", NULL);
  }

  struct sockaddr_storage ss = {0}; /* zeroed: a Unix path is formatted up to its NUL */
  socklen_t len = sizeof ss;
  char addr[128] = "?"; /* HOST:PORT, or unix:PATH */
  if (weft_listener_address(listener, (struct sockaddr *)&ss, &len) == 0)
    weft_address_format((struct sockaddr *)&ss, addr, sizeof addr);
  printf("listening on %s\n", addr);
  fflush(stdout); /* a driver waits for this line: do not leave it in stdio's buffer */

  rc = weft_reactor_run(reactor);
  event_free(hup);
  weft_reactor_free(reactor); /* closes every connection: each gets connection_lost */
  return rc == 0 ? 0 : fail(1, "reactor", weft_strerror(rc));
}
