/* negotiate-demo: how ALPN and NPN pick an application protocol, case by case.
 *
 * One process, no files: it generates a certificate, then for every case below starts a TLS
 * listener (port 0) with the case's server options, connects a client with the case's client
 * options (verifying the server against the generated certificate), and prints one row: what
 * each side listed, the mechanism that decided, the TLS version, and the result. The last line
 * says whether every result was the one expected. Exit status 0 when all were, else 1.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <weft/weft.h>

#define ALPN WEFT_MECH_ALPN
#define NPN WEFT_MECH_NPN
#define BOTH (WEFT_MECH_ALPN | WEFT_MECH_NPN)
#define FAIL WEFT_NO_OVERLAP_FAIL
#define CONTINUE WEFT_NO_OVERLAP_CONTINUE

/* One case: the lists (comma-separated; "" is an empty list), the mechanisms and no-overlap
 * policy (both sides use the same), the client's highest TLS version, and what must happen. */
struct demo_case {
  const char *name, *server_list, *client_list;
  unsigned server_mechs, client_mechs;
  weft_no_overlap_policy policy;
  int client_tls_max;
  const char *expected;      /* the protocol, "none", or "failed" (with WEFT_ENOPROTOCOL) */
  const char *expected_mech; /* "ALPN", "NPN" or "none" */
};

static const struct demo_case cases[] = {
    /* Both mechanisms offered: ALPN runs, and its result is the one reported. */
    {"both mechanisms", "h2,http/1.1", "h2,http/1.1", BOTH, BOTH, FAIL, WEFT_TLS1_3, "h2", "ALPN"},
    /* ALPN: the server selects, so the server's order wins. */
    {"ALPN only", "http/1.1,h2", "h2,http/1.1", ALPN, ALPN, FAIL, WEFT_TLS1_3, "http/1.1", "ALPN"},
    /* NPN: the client selects, so the client's order wins. */
    {"NPN only, TLS 1.2", "http/1.1,h2", "h2,http/1.1", NPN, NPN, FAIL, WEFT_TLS1_2, "h2", "NPN"},
    /* NPN does not exist in TLS 1.3: nothing is negotiated, the connection still succeeds. */
    {"NPN only, TLS 1.3", "http/1.1,h2", "h2,http/1.1", NPN, NPN, FAIL, WEFT_TLS1_3, "none",
     "none"},
    /* Different lists: the one protocol in common. */
    {"different lists", "h2,http/1.1,spdy/2", "spdy/3,http/1.1", BOTH, BOTH, FAIL, WEFT_TLS1_3,
     "http/1.1", "ALPN"},
    /* Nothing in common, policy fail: the server sends no_application_protocol (alert 120). */
    {"no overlap, fail", "h2,http/1.1", "spdy/3", BOTH, BOTH, FAIL, WEFT_TLS1_3, "failed", "none"},
    /* Nothing in common, policy continue: the connection goes on without a protocol. */
    {"no overlap, continue", "h2,http/1.1", "spdy/3", BOTH, BOTH, CONTINUE, WEFT_TLS1_3, "none",
     "none"},
    /* A client that lists nothing negotiates nothing. */
    {"empty client list", "h2,http/1.1", "", BOTH, BOTH, FAIL, WEFT_TLS1_3, "none", "none"},
};
#define NCASES (sizeof cases / sizeof cases[0])
#define ROW "%-22s %-20s %-17s %-5s %-8s %s\n" /* fixed widths: one aligned row per case */

/* What the client saw. Static: a protocol must outlive its connection, which may end (at
 * weft_reactor_free) after the case is over. */
static struct outcome {
  weft_protocol base; /* first member: the weft_protocol * we hand out is this struct */
  weft_factory factory;
  int finished;     /* connection_made or connection_failed ran */
  int code;         /* connection_failed's reason code */
  char result[160]; /* protocol name, "none", or "failed: REASON" */
  const char *mechanism, *version;
} outcomes[NCASES];

static void client_made(weft_protocol *p, weft_transport *t) {
  struct outcome *o = (struct outcome *)p;
  size_t len = 0;
  const uint8_t *proto = weft_transport_next_protocol(t, &len);
  snprintf(o->result, sizeof o->result, "%.*s", proto ? (int)len : 4,
           proto ? (const char *)proto : "none");
  weft_negotiation_mechanism m = weft_transport_negotiation_mechanism(t);
  o->mechanism = m == WEFT_NEGOTIATED_ALPN ? "ALPN" : m == WEFT_NEGOTIATED_NPN ? "NPN" : "none";
  o->version = weft_transport_tls_version(t);
  o->finished = 1;
  weft_transport_lose_connection(t); /* done with it */
}

static const weft_protocol_ops client_ops = {.connection_made = client_made};

static weft_protocol *build_client(weft_factory *f, weft_transport *t,
                                   const struct sockaddr *peer) {
  (void)t, (void)peer;
  struct outcome *o = f->data;
  o->base.ops = &client_ops;
  return &o->base;
}

static void client_failed(weft_factory *f, const weft_reason *r) {
  struct outcome *o = f->data;
  snprintf(o->result, sizeof o->result, "failed: %s", r->message);
  o->code = r->code;
  o->finished = 1;
}

/* The server side does nothing but exist: one stateless protocol serves every connection. */
static const weft_protocol_ops server_ops = {0};
static weft_protocol server_protocol = {.ops = &server_ops};
static weft_protocol *build_server(weft_factory *f, weft_transport *t,
                                   const struct sockaddr *peer) {
  (void)f, (void)t, (void)peer;
  return &server_protocol;
}
static weft_factory server_factory = {.build_protocol = build_server};

/* Options with the lists and mechanisms of one side of CASE. Returns NULL (after printing why)
 * when a setter fails. Clients trust CERT (and nothing else) and expect it to be for
 * "localhost", although they connect to 127.0.0.1. */
static weft_cert_options *make_options(const struct demo_case *c, int server, EVP_PKEY *key,
                                       X509 *cert) {
  weft_cert_options *o;
  if (weft_cert_options_new(&o) != 0)
    return NULL;
  char list[64];
  snprintf(list, sizeof list, "%s", server ? c->server_list : c->client_list);
  const char *names[8];
  size_t n = 0;
  for (char *name = strtok(list, ","); name && n < 8; name = strtok(NULL, ","))
    names[n++] = name;

  int rc = weft_cert_options_set_next_protocols(o, names, n);
  if (rc == 0)
    rc =
        weft_cert_options_set_negotiation_mechanisms(o, server ? c->server_mechs : c->client_mechs);
  if (rc == 0)
    rc = weft_cert_options_set_no_overlap_policy(o, c->policy);
  if (rc == 0 && server)
    rc = weft_cert_options_set_private_key(o, key);
  if (rc == 0 && server)
    rc = weft_cert_options_set_certificate(o, cert);
  if (rc == 0 && !server)
    rc = weft_cert_options_add_ca_certificate(o, cert);
  if (rc == 0 && !server)
    rc = weft_cert_options_set_server_name(o, "localhost");
  if (rc == 0 && !server)
    rc = weft_cert_options_set_tls_versions(o, WEFT_TLS1_2, c->client_tls_max);
  if (rc != 0) {
    fprintf(stderr, "error: %s options: %s\n", server ? "server" : "client",
            weft_cert_options_last_error(o));
    weft_cert_options_unref(o);
    return NULL;
  }
  return o;
}

static int finished(void *arg) {
  return ((struct outcome *)arg)->finished;
}

/* Runs one case to its end (or a 10 s deadline) and fills its outcome. */
static void run_case(weft_reactor *reactor, size_t i, EVP_PKEY *key, X509 *cert) {
  struct outcome *o = &outcomes[i];
  o->factory =
      (weft_factory){.build_protocol = build_client, .connection_failed = client_failed, .data = o};
  o->mechanism = "none";
  snprintf(o->result, sizeof o->result, "failed: setup");
  weft_cert_options *server = make_options(&cases[i], 1, key, cert);
  weft_cert_options *client = make_options(&cases[i], 0, key, cert);
  weft_listener *listener = NULL;
  int rc = server && client ? 0 : WEFT_EINVAL;
  if (rc == 0)
    rc = weft_listen_ssl(reactor, "127.0.0.1", 0, &server_factory, server, &listener);
  if (rc == 0)
    rc = weft_connect_ssl(reactor, "127.0.0.1", weft_listener_port(listener), &o->factory, client,
                          NULL);
  weft_cert_options_unref(server); /* the listener and connector hold their own references */
  weft_cert_options_unref(client);
  if (rc != 0)
    snprintf(o->result, sizeof o->result, "failed: %s", weft_strerror(rc));
  else if (weft_reactor_run_until(reactor, finished, o, 10) == WEFT_ETIMEDOUT)
    snprintf(o->result, sizeof o->result, "failed: timeout");
  weft_listener_stop(listener); /* its connections live on until weft_reactor_free */
}

/* A self-signed certificate for "localhost", made in memory. */
static int make_identity(EVP_PKEY **key, X509 **cert) {
  static const char *const dns[] = {"localhost"};
  weft_cert_spec spec = {.common_name = "localhost", .dns_names = dns, .dns_count = 1};
  int rc = weft_key_generate(WEFT_KEY_EC_P256, 0, key);
  return rc ? rc : weft_cert_generate(&spec, *key, NULL, NULL, cert);
}

int main(int argc, char **argv) {
  if (argc > 1) {
    int help = argc == 2 && !strcmp(argv[1], "--help");
    fprintf(help ? stdout : stderr,
            "%susage: negotiate-demo   (no arguments: runs every "
            "ALPN/NPN case and prints a table)\n",
            help ? "" : "error: no arguments expected\n");
    return help ? 0 : 2;
  }
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  weft_reactor *reactor;
  if (make_identity(&key, &cert) != 0 || weft_reactor_new(&reactor) != 0) {
    fputs("error: cannot generate a certificate or create the reactor\n", stderr);
    return 1;
  }

  printf(ROW, "case", "server list", "client list", "mech", "TLS", "result");
  size_t good = 0;
  const char *mismatch = NULL;
  for (size_t i = 0; i < NCASES; i++) {
    const struct demo_case *c = &cases[i];
    struct outcome *o = &outcomes[i];
    run_case(reactor, i, key, cert);
    printf(ROW, c->name, *c->server_list ? c->server_list : "(empty)",
           *c->client_list ? c->client_list : "(empty)", o->mechanism,
           o->version ? o->version : "-", o->result);
    int as_expected = !strcmp(c->expected, "failed") ? o->code == WEFT_ENOPROTOCOL
                                                     : !strcmp(o->result, c->expected) &&
                                                           !strcmp(o->mechanism, c->expected_mech);
    if (as_expected)
      good++;
    else if (!mismatch)
      mismatch = c->name;
  }
  fflush(stdout);
  weft_reactor_free(reactor); /* closes what is still open */
  EVP_PKEY_free(key);
  X509_free(cert);
  if (mismatch)
    printf("MISMATCH in case %s\n", mismatch);
  else
    printf("all %zu cases as expected\n", good);
  return mismatch ? 1 : 0;
}
