/* starttls-line: a line protocol that starts in clear text and upgrades to TLS (STARTTLS).
 *
 *   starttls-line --listen 127.0.0.1:7000 --write-cert /tmp/server.pem
 *   starttls-line --connect 127.0.0.1:7000 --ca /tmp/server.pem       (or --insecure)
 *
 * The dialogue (client lines on the left):
 *   HELLO     -> HELLO plain
 *   STARTTLS  -> GO              then both sides call weft_transport_start_tls
 *   SECRET    -> SECRET over TLSv1.3
 * Both sides print "tls: VERSION" when the handshake is done; the client prints every line it
 * receives and exits 0 after the last. The server generates a certificate for localhost at
 * start, prints "listening on HOST:PORT" and exits 0 on SIGTERM or SIGINT. The client verifies
 * the server (system trust store, or --ca FILE) unless --insecure is given.
 *
 * Lines are cut by a weft_framer (weft/framing.h), bounded to MAX_LINE bytes; on the switching
 * line the framer goes to raw mode, which hands over every byte that followed it explicitly.
 *
 * This is the model of a safe STARTTLS (copy it). Both sides keep an explicit state, and:
 *  1. the line that triggers the switch (STARTTLS for the server, GO for the client) must be the
 *     last byte of clear text: anything after it in the same read was sent by someone before the
 *     handshake, in clear, and an attacker on the path can inject it (CVE-2011-0411, where a
 *     "STARTTLS
RSET
" made the server run RSET as if it came over TLS). Such bytes are a
 *     protocol violation: the connection is aborted, they are never parsed. weft hands the TLS
 *     engine every byte read after weft_transport_start_tls, so nothing else can slip through;
 *  2. protected lines (SECRET, and its answer) are accepted only once tls_started reported
 *     success and weft_transport_is_tls says 1, never while the handshake runs;
 *  3. a line that does not fit the state (GO that was not asked for, a second STARTTLS...) ends
 *     the connection: the client prints "error: MESSAGE" on stderr and exits non-zero.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <weft/weft.h>

static const char usage[] =
    "usage: starttls-line --listen HOST:PORT [--write-cert FILE]\n"
    "       starttls-line --connect HOST:PORT [--ca FILE | --insecure]\n"
    "HOST is an IP literal (\"[::1]:PORT\" for IPv6); --listen PORT 0 picks a free port.\n"
    "The server generates a certificate for localhost; --write-cert saves it (PEM) for the\n"
    "client's --ca. The client verifies the server unless --insecure is given.\n";

#define MAX_LINE 1024 /* the longest line accepted (a final "\r" included) */

static weft_reactor *reactor;
static weft_cert_options *tls; /* the server's or the client's options, shared by connections */
static int client_mode, status = 1; /* the client's exit status */

/* Where a connection is in the dialogue. Bytes are only ever interpreted against it. */
typedef enum line_state {
  LINE_PLAIN,     /* clear text: HELLO (server: also STARTTLS) */
  LINE_ASKED,     /* client: STARTTLS sent, only GO may follow */
  LINE_UPGRADING, /* start_tls called: nothing is trusted until tls_started(0) */
  LINE_TLS,       /* the handshake succeeded: protected lines are allowed */
  LINE_CLOSED     /* we closed (or aborted): the rest of the input is ignored */
} line_state;

typedef struct line_conn {
  weft_protocol base; /* first member: a weft_protocol * we hand out is a line_conn * */
  line_state state;
  const char *error; /* why we aborted (a protocol violation), for connection_lost's message */
  weft_transport *transport;
  weft_framer *framer; /* cuts the stream into lines; raw mode from the switch to TLS on */
  int switch_role;     /* 1 + the weft_tls_role to switch to once this read is parsed, or 0 */
} line_conn;

static void send_line(weft_transport *t, const char *a, const char *b) {
  weft_buf bufs[3] = {{a, strlen(a)}, {b, strlen(b)}, {"\n", 1}};
  weft_transport_write_sequence(t, bufs, 3);
}

/* Ends the connection at once because the peer broke the protocol; WHY is reported when the
 * connection is lost (client: "error: WHY", server: "refused: WHY"). */
static void refuse(line_conn *c, weft_transport *t, const char *why) {
  c->error = why;
  c->state = LINE_CLOSED;
  weft_transport_abort_connection(t);
}

static size_t line_raw(void *arg, const uint8_t *data, size_t len);

/* The line that asks for TLS (STARTTLS, GO) was read: from now on no byte is a line. The
 * framer switches to raw mode, so the bytes that arrived after that line in the same read go to
 * line_raw (which refuses them: they came in clear text, before the handshake, and must not be
 * read as if they were protected, nor handed to the TLS engine). The switch itself (GO, then
 * start_tls) happens in line_data once the read is parsed, if nothing followed. */
static void ask_upgrade(line_conn *c, weft_tls_role role) {
  c->switch_role = 1 + (int)role;
  weft_framer_set_raw_mode(c->framer, line_raw);
}

/* Bytes after the switching line, before TLS started: a protocol violation. */
static size_t line_raw(void *arg, const uint8_t *data, size_t len) {
  line_conn *c = arg;
  (void)data;
  if (c->state != LINE_CLOSED)
    refuse(c, c->transport, "clear text pipelined after the STARTTLS switch (possible injection)");
  return len;
}

/* Switches to TLS in ROLE: nothing followed the line that asked for it. */
static void upgrade(line_conn *c, weft_transport *t, weft_tls_role role) {
  if (role == WEFT_TLS_SERVER)
    send_line(t, "GO", ""); /* written before start_tls: in clear */
  /* The client checks the server's name: "localhost" is the name its certificate must carry
   * (and the SNI sent). */
  if (weft_transport_start_tls(t, tls, role, role == WEFT_TLS_CLIENT ? "localhost" : NULL) < 0) {
    refuse(c, t, "cannot start TLS");
    return;
  }
  c->state = LINE_UPGRADING;
}

/* The client got LINE: print it and take the next step of the dialogue. */
static void client_line(line_conn *c, weft_transport *t, const char *line) {
  printf("%s\n", line);
  fflush(stdout);
  if (c->state == LINE_PLAIN && !strcmp(line, "HELLO plain")) {
    send_line(t, "STARTTLS", "");
    c->state = LINE_ASKED;
  } else if (c->state == LINE_ASKED && !strcmp(line, "GO")) {
    ask_upgrade(c, WEFT_TLS_CLIENT);
  } else if (c->state == LINE_TLS && weft_transport_is_tls(t) &&
             !strncmp(line, "SECRET over ", 12)) {
    status = 0; /* the last line, received over TLS: done */
    c->state = LINE_CLOSED;
    weft_transport_lose_connection(t);
  } else {
    refuse(c, t, "unexpected line from the server");
  }
}

/* The server got LINE. */
static void server_line(line_conn *c, weft_transport *t, const char *line) {
  int is_tls = c->state == LINE_TLS && weft_transport_is_tls(t);
  if (!strcmp(line, "HELLO")) {
    send_line(t, "HELLO ", is_tls ? "tls" : "plain");
  } else if (!strcmp(line, "STARTTLS") && c->state == LINE_PLAIN) {
    ask_upgrade(c, WEFT_TLS_SERVER);
  } else if (!strcmp(line, "SECRET") && is_tls) {
    send_line(t, "SECRET over ", weft_transport_tls_version(t));
  } else {
    send_line(t, "ERROR ", line);
  }
}

/* One line (without its "\n"; a final "\r" is dropped too), from the framer. */
static int on_line(void *arg, const uint8_t *data, size_t len) {
  line_conn *c = arg;
  char line[MAX_LINE + 1];
  if (c->state == LINE_CLOSED)
    return WEFT_ECLOSED; /* we aborted: the rest is not read */
  if (len > 0 && data[len - 1] == '\r')
    len--;
  memcpy(line, data, len);
  line[len] = '\0';
  if (client_mode)
    client_line(c, c->transport, line);
  else
    server_line(c, c->transport, line);
  return c->state == LINE_CLOSED ? WEFT_ECLOSED : 0;
}

static void line_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  line_conn *c = (line_conn *)p;
  if (c->state == LINE_CLOSED)
    return;
  int rc = weft_framer_feed(c->framer, data, len);
  if (rc == WEFT_ETOOLONG)
    refuse(c, t, "line too long");
  else if (rc != 0 && c->state != LINE_CLOSED)
    refuse(c, t, weft_strerror(rc));
  /* A switching line was the last byte of this read (line_raw refused anything after it). */
  if (c->switch_role && c->state != LINE_CLOSED) {
    weft_tls_role role = (weft_tls_role)(c->switch_role - 1);
    c->switch_role = 0;
    upgrade(c, t, role);
  }
}

static void line_made(weft_protocol *p, weft_transport *t) {
  (void)p;
  if (client_mode)
    send_line(t, "HELLO", "");
}

static void line_tls_started(weft_protocol *p, weft_transport *t, int rc) {
  line_conn *c = (line_conn *)p;
  if (rc < 0)
    return; /* the connection is closed; connection_lost follows with the reason */
  if (c->state != LINE_UPGRADING || !weft_transport_is_tls(t)) { /* cannot happen: belt, braces */
    refuse(c, t, "TLS reported started in the wrong state");
    return;
  }
  c->state = LINE_TLS; /* from now on, and only now, protected lines are accepted */
  weft_framer_set_raw_mode(c->framer, NULL); /* lines again, decrypted ones */
  printf("tls: %s\n", weft_transport_tls_version(t));
  fflush(stdout);
  if (client_mode)
    send_line(t, "SECRET", "");
}

static void line_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  line_conn *c = (line_conn *)p;
  (void)t;
  if (client_mode && status != 0)
    fprintf(stderr, "error: %s\n", c->error ? c->error : reason->message);
  if (!client_mode && c->error)
    fprintf(stderr, "refused: %s\n", c->error);
  else if (!client_mode && reason->code != WEFT_OK)
    fprintf(stderr, "lost: %s (%s)\n", reason->message, weft_err_name(reason->code));
  weft_framer_free(c->framer);
  c->framer = NULL;
  if (client_mode)
    weft_reactor_stop(reactor); /* the client's one connection is over */
  else
    free(p); /* weft never frees a protocol: connection_lost is its last callback */
}

static const weft_protocol_ops line_ops = {.connection_made = line_made,
                                           .data_received = line_data,
                                           .tls_started = line_tls_started,
                                           .connection_lost = line_lost};

static weft_protocol *build_line(weft_factory *f, weft_transport *t, const struct sockaddr *pr) {
  (void)f, (void)pr;
  static line_conn the_client; /* the client has one connection; a server one per peer */
  line_conn *c = client_mode ? &the_client : calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->base.ops = &line_ops;
  c->transport = t;
  /* Lines end with "\n" (a "\r" before it is dropped); longer than MAX_LINE: refused. */
  if (weft_framer_new_lines("\n", 1, MAX_LINE, on_line, c, &c->framer) != 0) {
    if (!client_mode)
      free(c);
    return NULL;
  }
  return &c->base;
}

static void connection_failed(weft_factory *f, const weft_reason *reason) {
  (void)f;
  fprintf(stderr, "error: %s\n", reason->message);
  weft_reactor_stop(reactor);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  (void)sig, (void)what, (void)arg;
  weft_reactor_stop(reactor);
}

/* The server's identity: a new key and a self-signed certificate for localhost, optionally
 * saved as PEM in CERT_FILE for clients to trust. */
static int generate_identity(const char *cert_file) {
  static const char *const dns[] = {"localhost"}, *const ips[] = {"127.0.0.1", "::1"};
  weft_cert_spec spec = {.common_name = "localhost",
                         .dns_names = dns,
                         .dns_count = 1,
                         .ip_addresses = ips,
                         .ip_count = 2};
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  char *pem = NULL;
  size_t len = 0;
  int rc = weft_key_generate(WEFT_KEY_EC_P256, 0, &key);
  if (rc == 0)
    rc = weft_cert_generate(&spec, key, NULL, NULL, &cert);
  if (rc == 0)
    rc = weft_cert_options_set_private_key(tls, key);
  if (rc == 0)
    rc = weft_cert_options_set_certificate(tls, cert);
  if (rc == 0 && cert_file)
    rc = weft_cert_to_pem(cert, &pem, &len);
  if (pem) {
    FILE *f = fopen(cert_file, "w");
    if (!f || fwrite(pem, 1, len, f) != len)
      rc = WEFT_EIO;
    if (f && fclose(f) != 0)
      rc = WEFT_EIO;
    free(pem);
  }
  EVP_PKEY_free(key); /* the options took their own references */
  X509_free(cert);
  return rc;
}

int main(int argc, char **argv) {
  char *address = NULL, *ca = NULL, *cert_file = NULL;
  int insecure = 0, listen = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h"))
      return fputs(usage, stdout), 0;
    if (!strcmp(a, "--insecure")) {
      insecure = 1;
      continue;
    }
    char **slot = !strcmp(a, "--listen") || !strcmp(a, "--connect") ? &address
                  : !strcmp(a, "--ca")                              ? &ca
                  : !strcmp(a, "--write-cert")                      ? &cert_file
                                                                    : NULL;
    if (!slot || i + 1 == argc || (slot == &address && address)) {
      fprintf(stderr, "error: %s: unknown option, missing value or repeated\n%s", a, usage);
      return 2;
    }
    listen |= slot == &address && !strcmp(a, "--listen");
    *slot = argv[++i];
  }
  client_mode = !listen;
  char *colon = address ? strrchr(address, ':') : NULL, *end = NULL, *host = address;
  long port = colon ? strtol(colon + 1, &end, 10) : -1;
  if (!colon || colon[1] == '\0' || *end || port < (listen ? 0 : 1) || port > 65535)
    return fputs("error: --listen or --connect HOST:PORT is required (see --help)\n", stderr), 2;
  *colon = '\0';
  if (host[0] == '[' && colon > host + 1 && colon[-1] == ']')
    host++, colon[-1] = '\0';
  if (listen ? ca || insecure : cert_file != NULL)
    return fputs("error: --ca and --insecure are client options, --write-cert a server one\n",
                 stderr),
           2;

  int rc = weft_cert_options_new(&tls);
  if (rc == 0 && listen)
    rc = generate_identity(cert_file);
  if (rc == 0 && ca)
    rc = weft_cert_options_load_ca_file(tls, ca);
  if (rc == 0 && insecure)
    rc = weft_cert_options_set_verify(tls, 0); /* demos and tests only */
  if (rc == 0)
    rc = weft_cert_options_prepare(tls, listen ? WEFT_TLS_SERVER : WEFT_TLS_CLIENT);
  if (rc == 0)
    rc = weft_reactor_new(&reactor);
  static weft_factory factory = {.build_protocol = build_line,
                                 .connection_failed = connection_failed};
  weft_listener *listener = NULL;
  if (rc == 0)
    rc = listen ? weft_listen_tcp(reactor, *host ? host : NULL, (int)port, &factory, &listener)
                : weft_connect_tcp(reactor, host, (int)port, &factory, NULL);
  if (rc != 0) {
    const char *why = tls ? weft_cert_options_last_error(tls) : "";
    fprintf(stderr, "error: %s\n", *why ? why : weft_strerror(rc));
    weft_reactor_free(reactor);
    weft_cert_options_unref(tls);
    return 1;
  }

  struct event *sigterm = NULL, *sigint = NULL;
  if (listen) {
    /* Stop cleanly on SIGTERM and SIGINT: libevent turns the signals into events. */
    struct event_base *base = weft_reactor_event_base(reactor);
    sigterm = evsignal_new(base, SIGTERM, on_signal, NULL);
    sigint = evsignal_new(base, SIGINT, on_signal, NULL);
    if (!sigterm || !sigint || evsignal_add(sigterm, NULL) || evsignal_add(sigint, NULL))
      return fputs("error: cannot install signal handlers\n", stderr), 1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char addr[64] = "?";
    if (weft_listener_address(listener, (struct sockaddr *)&ss, &len) == 0)
      weft_address_format((struct sockaddr *)&ss, addr, sizeof addr);
    printf("listening on %s\n", addr);
    fflush(stdout); /* a driver waits for this line */
  }
  rc = weft_reactor_run(reactor);
  if (sigterm)
    event_free(sigterm);
  if (sigint)
    event_free(sigint);
  weft_reactor_free(reactor); /* closes every connection: each gets connection_lost */
  weft_cert_options_unref(tls);
  if (rc != 0)
    fprintf(stderr, "error: reactor: %s\n", weft_strerror(rc));
  return rc != 0 ? 1 : listen ? 0 : status;
}
