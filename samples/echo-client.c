/* echo-client: sends stdin to an echo server over TCP or TLS and writes the echo to stdout.
 *
 *   printf 'ping\n' | echo-client --connect 127.0.0.1:8443 --tls --insecure --protocols h2
 *   printf 'ping\n' | echo-client --endpoint tls:localhost:8443:trustRoots=ca.pem:alpn=h2
 *
 * --endpoint takes weft's endpoint descriptions (Twisted's syntax, see weft/endpoint.h) in
 * place of --connect, --tls, --cert and --key; the other flags apply on top of it.
 *
 * Prints "protocol: NAME" (or "protocol: none") once connected, then the echo. Exits 0 once
 * every byte of stdin has come back after stdin's end; on failure prints "error: MESSAGE" on
 * stderr and exits 1 (2 for a bad command line). Other programs drive it: keep those lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include <weft/weft.h>

#define HIGH_WATER (256 * 1024) /* stop reading stdin while this much output waits */
#define LOW_WATER (64 * 1024)   /* ... and go on once it has drained to this */

static const char usage[] =
    "usage: echo-client --connect HOST:PORT [--tls] [--ca PEM] [--cert PEM --key PEM]\n"
    "                   [--protocols LIST] [--mechanisms alpn|npn|both]\n"
    "                   [--no-overlap fail|continue] [--tls-max 1.2|1.3]\n"
    "                   [--servername NAME] [--insecure] [--require-protocol]\n"
    "                   [--keylog FILE] [--pin sha256//BASE64]\n"
    "       echo-client --endpoint DESCRIPTION [--ca PEM] [--protocols LIST]\n"
    "                   [...the other options after --tls]\n"
    "HOST is a name or an IP literal (\"[::1]:PORT\" for IPv6). LIST is comma-separated, most\n"
    "preferred first (h2,http/1.1). The options after --tls need --tls. The server is\n"
    "verified against the system trust store (or --ca) unless --insecure is given.\n"
    "DESCRIPTION replaces --connect, --tls, --cert and --key: tcp:host=HOST:port=PORT, or\n"
    "tls:HOST:PORT[:trustRoots=PEM][:alpn=LIST]... (escape ':' and '=' in values with '\\').\n";

/* The one connection this program makes, and the state of its stdin pump. */
static struct client {
  weft_protocol base; /* first member: the weft_protocol * we hand out is this struct */
  weft_reactor *reactor;
  weft_transport *transport;
  struct event *stdin_event; /* NULL when stdin cannot be polled (a regular file) */
  unsigned long long sent, received;
  int stdin_eof, done, status;
} client = {.status = 1};

/* All of stdin was sent and all of it came back: close gracefully (TLS: close_notify). */
static void maybe_done(void) {
  if (client.stdin_eof && client.received >= client.sent && !client.done) {
    client.done = 1;
    weft_transport_lose_connection(client.transport);
  }
}

/* Moves stdin to the connection until stdin would block, ends, or too much output waits. */
static void pump_stdin(void) {
  static char buf[64 * 1024];
  while (!client.stdin_eof && weft_transport_pending_output(client.transport) <= HIGH_WATER) {
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return; /* the event fires again */
    if (n < 0)
      fprintf(stderr, "error: reading stdin: %s\n", strerror(errno));
    if (n <= 0) {
      client.stdin_eof = 1;
      break;
    }
    weft_transport_write(client.transport, buf, (size_t)n);
    client.sent += (unsigned long long)n;
  }
  /* Poll stdin only while we are willing to read it; write_drained calls us again. */
  if (client.stdin_event &&
      (client.stdin_eof || weft_transport_pending_output(client.transport) > HIGH_WATER))
    event_del(client.stdin_event);
  maybe_done();
}

static void on_stdin(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what, (void)arg;
  pump_stdin();
}

static void client_made(weft_protocol *p, weft_transport *t) {
  (void)p;
  size_t n = 0;
  const uint8_t *proto = weft_transport_next_protocol(t, &n); /* final already, see protocol.h */
  printf("protocol: %.*s\n", proto ? (int)n : 4, proto ? (const char *)proto : "none");
  fflush(stdout);
  client.transport = t;
  weft_transport_set_write_low_water(t, LOW_WATER);

  /* Pipes, sockets and terminals are read when readable, with a libevent event on fd 0 made
   * non-blocking. Files (and /dev/null) are always readable and epoll refuses them: read them
   * with plain blocking reads, paced by write_drained. */
  struct stat st;
  if (fstat(STDIN_FILENO, &st) == 0 &&
      (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || isatty(STDIN_FILENO))) {
    fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
    struct event_base *base = weft_reactor_event_base(client.reactor);
    client.stdin_event = event_new(base, STDIN_FILENO, EV_READ | EV_PERSIST, on_stdin, NULL);
    if (client.stdin_event && event_add(client.stdin_event, NULL) == 0)
      return;
    fputs("error: cannot watch stdin\n", stderr);
    weft_transport_abort_connection(t);
    return;
  }
  pump_stdin();
}

static void client_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  (void)p, (void)t;
  fwrite(data, 1, len, stdout);
  fflush(stdout);
  client.received += len;
  maybe_done();
}

static void client_drained(weft_protocol *p, weft_transport *t) {
  (void)p, (void)t;
  if (client.stdin_eof)
    return;
  if (client.stdin_event)
    event_add(client.stdin_event, NULL);
  else
    pump_stdin();
}

static void client_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)p, (void)t;
  if (client.done)
    client.status = 0;
  else
    fprintf(stderr, "error: connection closed before the echo came back: %s\n", reason->message);
  weft_reactor_stop(client.reactor);
}

static const weft_protocol_ops client_ops = {
    .connection_made = client_made,
    .data_received = client_data,
    .write_drained = client_drained,
    .connection_lost = client_lost,
};

static weft_protocol *build_client(weft_factory *f, weft_transport *t,
                                   const struct sockaddr *peer) {
  (void)f, (void)t, (void)peer;
  client.base.ops = &client_ops;
  return &client.base;
}

static void connection_failed(weft_factory *f, const weft_reason *reason) {
  (void)f;
  fprintf(stderr, "error: %s\n", reason->message);
  weft_reactor_stop(client.reactor);
}

/* --- Setup ------------------------------------------------------------------------------- */

/* "example.com:80", "127.0.0.1:80" or "[::1]:80" into HOST and PORT. */
static int parse_host_port(const char *arg, const char **host, int *port) {
  static char buf[256]; /* the host part (one address per program) */
  const char *colon = strrchr(arg, ':');
  char *end;
  long p = colon ? strtol(colon + 1, &end, 10) : -1;
  if (!colon || colon[1] == '\0' || *end || p < 1 || p > 65535)
    return -1;
  size_t n = (size_t)(colon - arg);
  if (n >= 2 && arg[0] == '[' && arg[n - 1] == ']')
    arg++, n -= 2; /* bracketed IPv6 */
  if (n == 0 || n >= sizeof buf)
    return -1;
  memcpy(buf, arg, n);
  buf[n] = '\0';
  *host = buf;
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
  /* the TLS secrets, NSS key log format: a secret, for Wireshark while debugging */
  if (!strcmp(opt, "--keylog"))
    return weft_cert_options_set_keylog_file(o, v);
  /* curl's form: base64 of the SHA-256 of the server's SubjectPublicKeyInfo */
  if (!strcmp(opt, "--pin"))
    return weft_cert_options_add_pin_sha256(o, v);
  return 1;
}

/* Prints "error: WHAT[: DETAIL]" on stderr and returns STATUS for main to exit with. */
static int fail(int status, const char *what, const char *detail) {
  fprintf(stderr, "error: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  return status;
}

/* 1 if OPT is one of the TLS options that take a value (applied by apply_tls_option). */
static int is_tls_option(const char *opt) {
  static const char *const names[] = {"--cert",      "--key",        "--ca",
                                      "--protocols", "--mechanisms", "--no-overlap",
                                      "--tls-max",   "--keylog",     "--pin"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strcmp(opt, names[i]))
      return 1;
  return 0;
}

/* The endpoint of --connect HOST:PORT [--tls]: made with the endpoint setters. Returns 0, or
 * the status to exit with. */
static int endpoint_from_flags(const char *connect, int tls, weft_endpoint **ep) {
  const char *host = NULL;
  int port = 0;
  if (parse_host_port(connect, &host, &port) != 0)
    return fail(2, "bad --connect address", connect);
  weft_cert_options *opts = NULL;
  if (weft_endpoint_new(WEFT_ENDPOINT_CLIENT, ep) != 0 || (tls && weft_cert_options_new(&opts)))
    return fail(1, "out of memory", NULL);
  int rc = weft_endpoint_set_port(*ep, port);
  if (rc == 0)
    rc = weft_endpoint_set_host(*ep, host);
  if (rc == 0)
    rc = weft_endpoint_set_tls(*ep, opts); /* NULL: plain TCP */
  weft_cert_options_unref(opts);           /* the endpoint holds its own reference */
  return rc == 0 ? 0 : fail(2, "bad --connect address", connect);
}

/* Reads the command line into *EP, the endpoint to connect to: parsed from --endpoint, or made
 * from --connect and --tls; the TLS options (--ca, --protocols, --servername, ...) are then
 * applied on top, in command-line order. Returns -1 when the client should run, else the
 * status to exit with (0 after --help). */
static int parse_args(int argc, char **argv, weft_endpoint **ep) {
  int tls = 0, tls_flags = 0, cert = 0, key = 0, rc = 0, status = 2, nflags = 0;
  const char *connect = NULL, *description = NULL, *servername = NULL;
  const char **flags = calloc((size_t)argc * 2, sizeof *flags); /* option, value (or NULL) */
  weft_cert_options *opts = NULL;
  if (!flags)
    return fail(1, "out of memory", NULL);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage, stdout);
      status = 0;
      goto done;
    } else if (!strcmp(a, "--tls")) {
      tls = 1;
    } else if (!strcmp(a, "--insecure") || !strcmp(a, "--require-protocol")) {
      tls_flags = 1;
      flags[nflags++] = a, flags[nflags++] = NULL;
    } else if (i + 1 == argc || (strcmp(a, "--connect") && strcmp(a, "--endpoint") &&
                                 strcmp(a, "--servername") && !is_tls_option(a))) {
      fprintf(stderr, "error: %s: unknown option or missing value\n%s", a, usage);
      goto done;
    } else if (!strcmp(a, "--connect")) {
      connect = argv[++i];
    } else if (!strcmp(a, "--endpoint")) {
      description = argv[++i];
    } else if (!strcmp(a, "--servername")) {
      tls_flags = 1;
      servername = argv[++i];
    } else {
      tls_flags = 1, cert |= !strcmp(a, "--cert"), key |= !strcmp(a, "--key");
      flags[nflags++] = a, flags[nflags++] = argv[++i];
    }
  }
  const char *problem = description && (connect || tls || cert || key)
                            ? "--endpoint replaces --connect, --tls, --cert and --key"
                        : !description && !connect ? "--connect HOST:PORT is required (see --help)"
                        : !description && tls_flags && !tls ? "TLS options need --tls"
                        : cert != key                       ? "--cert and --key go together"
                                                            : NULL;
  if (problem) {
    fail(2, problem, NULL);
    goto done;
  }
  if (description) {
    char err[256];
    if ((rc = weft_endpoint_parse(description, WEFT_ENDPOINT_CLIENT, ep, err, sizeof err))) {
      status = fail(rc == WEFT_EINVAL || rc == WEFT_ENOTSUP ? 2 : 1, "bad --endpoint", err);
      goto done;
    }
    if (tls_flags && !weft_endpoint_get_tls(*ep)) {
      status = fail(2, "TLS options need a tls: endpoint", NULL);
      goto done;
    }
  } else if ((status = endpoint_from_flags(connect, tls, ep)) != 0) {
    goto done;
  }
  status = 2;
  /* SERVERNAME (default: the endpoint's, else HOST) is sent as SNI and checked against the
   * server's certificate. */
  if (servername && weft_endpoint_set_server_name(*ep, servername) != 0) {
    fail(2, "bad --servername", servername);
    goto done;
  }
  opts = weft_cert_options_ref(weft_endpoint_get_tls(*ep)); /* NULL for TCP */
  for (int f = 0; f < nflags && rc == 0; f += 2) {
    if (!flags[f + 1] && !strcmp(flags[f], "--require-protocol")) {
      rc = weft_cert_options_set_require_protocol(opts, 1); /* none negotiated: an error */
    } else if (!flags[f + 1]) {
      rc = weft_cert_options_set_verify(opts, 0); /* --insecure: accept any server (tests) */
    } else if ((rc = apply_tls_option(opts, flags[f], (char *)flags[f + 1])) == 1) {
      fprintf(stderr, "error: %s: unknown option or bad value\n%s", flags[f], usage);
      goto done;
    }
  }
  /* Build the SSL context now, so that a bad CA file or key is reported at once. */
  if (rc == 0 && opts)
    rc = weft_cert_options_prepare(opts, WEFT_TLS_CLIENT);
  if (rc != 0) {
    const char *why = weft_cert_options_last_error(opts);
    status = fail(1, "TLS options", *why ? why : weft_strerror(rc));
    goto done;
  }
  status = -1;
done:
  weft_cert_options_unref(opts);
  free(flags);
  if (status >= 0) {
    weft_endpoint_free(*ep);
    *ep = NULL;
  }
  return status;
}

int main(int argc, char **argv) {
  weft_endpoint *endpoint = NULL;
  int status = parse_args(argc, argv, &endpoint);
  if (status >= 0)
    return status;

  if (weft_reactor_new(&client.reactor) != 0) {
    weft_endpoint_free(endpoint);
    return fail(1, "cannot create the reactor", NULL);
  }
  static weft_factory factory = {.build_protocol = build_client,
                                 .connection_failed = connection_failed};
  /* Failures from here on (refused, DNS, TLS) arrive in connection_failed, from the loop. */
  int rc = weft_endpoint_connect(client.reactor, endpoint, &factory, NULL);
  weft_endpoint_free(endpoint); /* the connector holds what it needs */
  if (rc == 0)
    rc = weft_reactor_run(client.reactor);
  if (rc != 0)
    fail(1, weft_strerror(rc), NULL);

  if (client.stdin_event) { /* give stdin back as we found it: the shell may share it */
    event_free(client.stdin_event);
    fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) & ~O_NONBLOCK);
  }
  weft_reactor_free(client.reactor);
  return rc == 0 ? client.status : 1;
}
