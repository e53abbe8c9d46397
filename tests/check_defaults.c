/* tests/check_defaults.c: weft's default TLS server configuration, checked from the outside.
 *
 * A server with default options (only a key and a certificate set) listens with
 * weft_listen_ssl on 127.0.0.1:0 in the test process; `openssl s_client` (a child process) then
 * forces each weak choice a client can make, and the server must refuse it:
 *  - TLS 1.0 and 1.1;
 *  - TLS 1.2 ciphers without forward secrecy (RSA key exchange), CBC-mode ciphers, and NULL /
 *    anonymous ciphers (RC4, 3DES, DES and EXPORT are not even offered by OpenSSL 3.0 as Debian
 *    builds it, so the client list that asks for them offers the NULL and anonymous ones);
 *  - client-initiated renegotiation (s_client's "R" command).
 * It also checks what a default connection gets: no compression, the server's own cipher order
 * (two opposite client orders yield the same cipher), and TLS 1.2 and 1.3 connections that work
 * (the positive controls, so a refusal is never just a broken setup).
 *
 * Proof that a refusal comes from the server and not from s_client's own policy: the client
 * lowers its security level (@SECLEVEL=0), and the test requires the server's factory to get
 * handshake_failed with the alert the server sent (protocol_version 70 or handshake_failure
 * 40). Every variant runs against an EC P-256 server and an RSA 2048 server (RSA key exchange
 * is only possible at all with an RSA certificate).
 *
 * Waits are bounded: the reactor runs until a condition holds or a deadline passes; the child
 * is reaped with a deadline, and killed (SIGKILL) and reaped in any case. Without `openssl` on
 * PATH every test prints why and passes (Check 0.15 has no skip). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "testutil.h"
#include "tlsutil.h"

#define WAIT_SECONDS 20.0 /* generous: valgrind and the sanitizers slow everything down */

/* --- Server identities, made once per test case (an unchecked fixture runs in Check's parent
 * process, so forked tests share them and RSA key generation runs once) ------------------- */

enum { ID_EC = 0, ID_RSA = 1, ID_COUNT };
static const char *const id_name[ID_COUNT] = {"EC P-256", "RSA 2048"};
static EVP_PKEY *id_key[ID_COUNT];
static X509 *id_cert[ID_COUNT];

static void identities_setup(void) {
  static const char *const dns[] = {"localhost"};
  static const char *const ips[] = {"127.0.0.1"};
  for (int i = 0; i < ID_COUNT; i++) {
    int rc = weft_key_generate(i == ID_EC ? WEFT_KEY_EC_P256 : WEFT_KEY_RSA, i == ID_EC ? 0 : 2048,
                               &id_key[i]);
    ck_assert_msg(rc == 0, "weft_key_generate(%s): %s", id_name[i], weft_err_name(rc));
    weft_cert_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.common_name = "localhost";
    spec.dns_names = dns;
    spec.dns_count = 1;
    spec.ip_addresses = ips;
    spec.ip_count = 1;
    rc = weft_cert_generate(&spec, id_key[i], NULL, NULL, &id_cert[i]);
    ck_assert_msg(rc == 0, "weft_cert_generate(%s): %s", id_name[i], weft_err_name(rc));
  }
}

static void identities_teardown(void) {
  for (int i = 0; i < ID_COUNT; i++) {
    EVP_PKEY_free(id_key[i]);
    X509_free(id_cert[i]);
    id_key[i] = NULL;
    id_cert[i] = NULL;
  }
}

/* --- openssl s_client as a child process --------------------------------------------------- */

/* Path of openssl, or NULL after printing why TEST is skipped. */
static const char *openssl_path(const char *test) {
  static char path[4096];
  const char *found = tu_find_program("openssl");
  if (found == NULL) {
    printf("SKIP: %s: `openssl` is not on PATH (Debian package: openssl)\n", test);
    return NULL;
  }
  snprintf(path, sizeof path, "%s", found);
  return path;
}

typedef struct sclient {
  pid_t pid;
  int in_fd;  /* s_client's stdin (-1 once closed) */
  int out_fd; /* its stdout and stderr */
  struct event *ev;
  char out[65536];
  size_t out_len;
  int eof;
  int exited; /* 1 once reaped: status holds the wait status */
  int status;
} sclient;

static void sclient_on_output(evutil_socket_t fd, short what, void *arg) {
  sclient *c = arg;
  (void)what;
  for (;;) {
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      size_t room = sizeof c->out - 1 - c->out_len;
      size_t k = (size_t)n < room ? (size_t)n : room;
      memcpy(c->out + c->out_len, buf, k);
      c->out_len += k;
      c->out[c->out_len] = '\0';
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0 || errno != EAGAIN) {
      c->eof = 1;
      event_del(c->ev);
    }
    return;
  }
}

/* Starts `openssl s_client -connect 127.0.0.1:PORT -noservername ARGS...` with its stdin on a
 * pipe and its stdout and stderr collected into C->out by REACTOR's loop. */
static void sclient_start(sclient *c, weft_reactor *r, const char *openssl, int port,
                          const char *const *args) {
  char connect[64];
  snprintf(connect, sizeof connect, "127.0.0.1:%d", port);
  const char *argv[32] = {openssl, "s_client", "-connect", connect, "-noservername"};
  size_t n = 5;
  for (size_t i = 0; args[i] != NULL; i++) {
    ck_assert_uint_lt(n, sizeof argv / sizeof argv[0] - 1);
    argv[n++] = args[i];
  }
  argv[n] = NULL;

  int in[2], out[2];
  memset(c, 0, sizeof *c);
  c->in_fd = c->out_fd = -1;
  ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
  pid_t parent = getpid();
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test process */
    if (getppid() != parent)
      _exit(127);
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  c->pid = pid;
  c->in_fd = in[1];
  c->out_fd = out[0];
  ck_assert_int_eq(fcntl(c->out_fd, F_SETFL, O_NONBLOCK), 0);
  c->ev =
      event_new(weft_reactor_event_base(r), c->out_fd, EV_READ | EV_PERSIST, sclient_on_output, c);
  ck_assert_ptr_nonnull(c->ev);
  ck_assert_int_eq(event_add(c->ev, NULL), 0);
}

static void sclient_close_stdin(sclient *c) {
  if (c->in_fd >= 0)
    close(c->in_fd);
  c->in_fd = -1;
}

static void sclient_send(sclient *c, const char *s) {
  ck_assert_int_ge(c->in_fd, 0);
  size_t len = strlen(s);
  ck_assert_msg(write(c->in_fd, s, len) == (ssize_t)len, "writing to s_client: %s",
                strerror(errno));
}

typedef struct sclient_wait {
  sclient *c;
  const char *needle;
} sclient_wait;

static int sclient_has(void *arg) {
  sclient_wait *w = arg;
  return w->c->eof || strstr(w->c->out, w->needle) != NULL;
}

/* Runs the reactor until s_client printed NEEDLE (or closed its output). */
static void sclient_wait_for(sclient *c, weft_reactor *r, const char *needle) {
  sclient_wait w = {c, needle};
  tu_run_until(r, sclient_has, &w, WAIT_SECONDS);
  ck_assert_msg(strstr(c->out, needle) != NULL, "'%s' not in s_client's output:\n%s", needle,
                c->out);
}

/* Reaps the child, waiting at most SECONDS (0: not at all); 1 once it is reaped. */
static int sclient_reap(sclient *c, double seconds) {
  double deadline = tu_now() + seconds;
  while (!c->exited && c->pid > 0) {
    pid_t p = waitpid(c->pid, &c->status, WNOHANG);
    if (p == c->pid) {
      c->exited = 1;
      break;
    }
    if (p < 0 && errno != EINTR)
      ck_abort_msg("waitpid(s_client): %s", strerror(errno));
    if (tu_now() >= deadline)
      return 0;
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return c->exited;
}

static int sclient_eof(void *arg) {
  return ((sclient *)arg)->eof;
}

/* Runs the reactor (serving the connection) until s_client closed its output, then reaps it;
 * fails the test if it does not exit in time. Returns its exit code (128 + N for signal N). */
static int sclient_wait_exit(sclient *c, weft_reactor *r) {
  tu_run_until(r, sclient_eof, c, WAIT_SECONDS);
  ck_assert_msg(sclient_reap(c, WAIT_SECONDS), "s_client did not exit; output:\n%s", c->out);
  return WIFEXITED(c->status) ? WEXITSTATUS(c->status) : 128 + WTERMSIG(c->status);
}

/* Frees the event and the pipes; kills the child if it still runs, and reaps it. */
static void sclient_finish(sclient *c) {
  if (c->ev)
    event_free(c->ev);
  c->ev = NULL;
  sclient_close_stdin(c);
  if (c->out_fd >= 0)
    close(c->out_fd);
  c->out_fd = -1;
  if (c->pid > 0 && !c->exited) {
    kill(c->pid, SIGKILL);
    while (waitpid(c->pid, &c->status, 0) < 0 && errno == EINTR)
      ;
    c->exited = 1;
  }
}

/* The value of the line "KEY VALUE" in TEXT (up to the end of the line), or "" if absent. */
static const char *line_value(const char *text, const char *key, char *buf, size_t size) {
  buf[0] = '\0';
  const char *at = strstr(text, key);
  if (at == NULL)
    return buf;
  at += strlen(key);
  size_t n = strcspn(at, "\r\n");
  snprintf(buf, size, "%.*s", (int)(n < size ? n : size - 1), at);
  return buf;
}

/* --- A default server ----------------------------------------------------------------------- */

typedef struct server {
  weft_reactor *r;
  tu_factory f;
  weft_cert_options *opts;
  int port;
} server;

/* Listens on 127.0.0.1:0 with options holding only identity ID's key and certificate. */
static void server_start(server *s, int id) {
  memset(s, 0, sizeof *s);
  s->r = tu_reactor_new();
  tu_factory_init(&s->f);
  s->f.conn_config.echo = 1;
  s->opts = tu_options_with_identity(id_key[id], id_cert[id]);
  tu_listen_ssl_local(s->r, &s->f, s->opts, &s->port);
}

static void server_free(server *s) {
  tu_factory_check(&s->f);
  weft_reactor_free(s->r);
  tu_factory_check(&s->f);
  tu_factory_cleanup(&s->f);
  weft_cert_options_unref(s->opts);
}

/* One s_client run with stdin closed at once: returns the exit code, the output in C. */
static int run_sclient(server *s, sclient *c, const char *openssl, const char *const *args) {
  sclient_start(c, s->r, openssl, s->port, args);
  sclient_close_stdin(c);
  int code = sclient_wait_exit(c, s->r);
  sclient_finish(c);
  return code;
}

/* A successful handshake as s_client -brief reports it. */
static int brief_established(const char *out) {
  return strstr(out, "CONNECTION ESTABLISHED") != NULL &&
         strstr(out, "Protocol version: ") != NULL && strstr(out, "Ciphersuite: ") != NULL;
}

/* --- Refusals ------------------------------------------------------------------------------ */

typedef struct refusal {
  const char *what;
  const char *args[8]; /* after -connect; NULL-terminated */
  int alert;           /* the alert the server must send */
  const char *alert_text;
  int code; /* the reason handshake_failed must get (0: any error) */
} refusal;

static const refusal refusals[] = {
    {"TLS 1.0",
     {"-brief", "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0", NULL},
     70,
     "protocol version",
     WEFT_ETLSVERSION},
    {"TLS 1.1",
     {"-brief", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", NULL},
     70,
     "protocol version",
     WEFT_ETLSVERSION},
    /* RSA key exchange: no forward secrecy */
    {"RSA key exchange (AES128-GCM-SHA256)",
     {"-brief", "-tls1_2", "-cipher", "AES128-GCM-SHA256:@SECLEVEL=0", NULL},
     40,
     "handshake failure",
     0},
    {"RSA key exchange (every kRSA cipher)",
     {"-brief", "-tls1_2", "-cipher", "kRSA:@SECLEVEL=0", NULL},
     40,
     "handshake failure",
     0},
    /* forward secret, but CBC mode (MAC-then-encrypt: Lucky13 and friends) */
    {"CBC (ECDHE-ECDSA-AES128-SHA256, ECDHE-RSA-AES128-SHA256)",
     {"-brief", "-tls1_2", "-cipher",
      "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:@SECLEVEL=0", NULL},
     40,
     "handshake failure",
     0},
    {"CBC (ECDHE-ECDSA-AES128-SHA, ECDHE-RSA-AES128-SHA)",
     {"-brief", "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:@SECLEVEL=0",
      NULL},
     40,
     "handshake failure",
     0},
    {"every non-AEAD cipher",
     {"-brief", "-tls1_2", "-cipher",
      "ALL:COMPLEMENTOFALL:!AESGCM:!CHACHA20:!AESCCM:!ARIAGCM:@SECLEVEL=0", NULL},
     40,
     "handshake failure",
     0},
    /* RC4, 3DES, DES and EXPORT are compiled out of OpenSSL 3.0 here: the list still offers
     * the NULL-encryption and anonymous (unauthenticated) ciphers */
    {"NULL / anonymous / RC4 / 3DES / DES / EXPORT",
     {"-brief", "-tls1_2", "-cipher", "NULL:eNULL:aNULL:RC4:3DES:DES:EXP:@SECLEVEL=0", NULL},
     40,
     "handshake failure",
     0},
};
#define N_REFUSALS ((int)(sizeof refusals / sizeof refusals[0]))

/* 1 if the cipher string of a refusal (after "-cipher") selects at least one TLS 1.2 cipher in
 * this OpenSSL: a list that selects nothing would make s_client refuse by itself. */
static int selects_tls12_cipher(const char *ciphers) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  ck_assert_ptr_nonnull(ctx);
  /* without the TLS 1.3 suites, whatever is left is a TLS 1.2 (or older) cipher */
  int n = SSL_CTX_set_ciphersuites(ctx, "") == 1 && SSL_CTX_set_cipher_list(ctx, ciphers) == 1
              ? sk_SSL_CIPHER_num(SSL_CTX_get_ciphers(ctx))
              : 0;
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return n > 0;
}

START_TEST(test_refused) {
  const refusal *t = &refusals[_i / ID_COUNT];
  int id = _i % ID_COUNT;
  const char *openssl = openssl_path("test_refused");
  if (openssl == NULL)
    return;
  for (int i = 0; t->args[i] != NULL; i++) {
    if (strcmp(t->args[i], "-cipher") == 0)
      ck_assert_msg(selects_tls12_cipher(t->args[i + 1]),
                    "%s: \"%s\" selects no TLS 1.2 cipher in this OpenSSL: the test would "
                    "prove nothing",
                    t->what, t->args[i + 1]);
  }
  server s;
  server_start(&s, id);
  sclient c;
  int code = run_sclient(&s, &c, openssl, t->args);
  ck_assert_msg(code != 0 && !brief_established(c.out),
                "%s against the %s server was accepted (s_client exit %d):\n%s", t->what,
                id_name[id], code, c.out);
  tu_wait_int(s.r, &s.f.handshake_failed, 1, WAIT_SECONDS);
  const tu_reason *why = &s.f.last_handshake_failed;
  ck_assert_msg(strcasestr(c.out, t->alert_text) != NULL,
                "%s, %s server: s_client did not report the server's '%s' alert:\n%s", t->what,
                id_name[id], t->alert_text, c.out);
  ck_assert_msg(why->alert_sent == 1 && why->tls_alert == t->alert,
                "%s, %s server: the server should have sent alert %d; handshake_failed got "
                "%s (alert %d, %s): %s",
                t->what, id_name[id], t->alert, weft_err_name(why->code), why->tls_alert,
                why->alert_sent ? "sent" : "received", why->message);
  ck_assert_int_ne(why->code, WEFT_OK);
  if (t->code != 0)
    ck_assert_msg(why->code == t->code, "%s, %s server: handshake_failed got %s (%s), expected %s",
                  t->what, id_name[id], weft_err_name(why->code), why->message,
                  weft_err_name(t->code));
  ck_assert_int_eq(s.f.built, 0);
  ck_assert_int_eq(s.f.handshake_failed, 1);
  server_free(&s);
}
END_TEST

/* --- What a default connection gets ------------------------------------------------------- */

/* Positive controls: default TLS 1.2 and 1.3 handshakes succeed, and both ends agree on the
 * version and cipher. Loop: (version, identity). */
START_TEST(test_default_connection) {
  int tls13 = _i / ID_COUNT;
  int id = _i % ID_COUNT;
  const char *openssl = openssl_path("test_default_connection");
  if (openssl == NULL)
    return;
  server s;
  server_start(&s, id);
  const char *args[] = {"-brief", tls13 ? "-tls1_3" : "-tls1_2", NULL};
  sclient c;
  sclient_start(&c, s.r, openssl, s.port, args);
  sclient_send(&c, "ping\n");
  tu_conn *conn = tu_wait_conn(s.r, &s.f, 0, WAIT_SECONDS);
  tu_wait_size(s.r, &conn->rx_len, 5, WAIT_SECONDS);
  sclient_wait_for(&c, s.r, "ping\n"); /* the echo */
  ck_assert_msg(brief_established(c.out), "%s: no handshake in s_client's output:\n%s", id_name[id],
                c.out);
  char version[64], cipher[128];
  line_value(c.out, "Protocol version: ", version, sizeof version);
  line_value(c.out, "Ciphersuite: ", cipher, sizeof cipher);
  ck_assert_str_eq(version, tls13 ? "TLSv1.3" : "TLSv1.2");
  ck_assert_str_eq(weft_transport_tls_version(conn->transport), version);
  ck_assert_str_eq(weft_transport_tls_cipher(conn->transport), cipher);
  if (!tls13) /* forward secret and AEAD, as the defaults promise */
    ck_assert_msg(strncmp(cipher, "ECDHE-", 6) == 0 &&
                      (strstr(cipher, "-GCM-") != NULL || strstr(cipher, "CHACHA20") != NULL),
                  "default TLS 1.2 cipher %s", cipher);
  sclient_close_stdin(&c);
  int code = sclient_wait_exit(&c, s.r);
  sclient_finish(&c);
  ck_assert_msg(code == 0, "s_client exit %d:\n%s", code, c.out);
  tu_wait_int(s.r, &conn->lost, 1, WAIT_SECONDS);
  ck_assert_int_eq(s.f.handshake_failed, 0);
  server_free(&s);
}
END_TEST

/* No compression (CRIME): s_client's full report says "Compression: NONE", and the server's
 * SSL has no compression method. TLS 1.2: TLS 1.3 has no compression at all. */
START_TEST(test_no_compression) {
  const char *openssl = openssl_path("test_no_compression");
  if (openssl == NULL)
    return;
  server s;
  server_start(&s, ID_EC);
  const char *args[] = {"-tls1_2", NULL}; /* not -brief: the full report has the line */
  sclient c;
  sclient_start(&c, s.r, openssl, s.port, args);
  tu_conn *conn = tu_wait_conn(s.r, &s.f, 0, WAIT_SECONDS);
  SSL *ssl = weft_transport_ssl(conn->transport);
  ck_assert_ptr_nonnull(ssl);
  ck_assert_ptr_null(SSL_get_current_compression(ssl));
  ck_assert_ptr_null(SSL_get_current_expansion(ssl));
  sclient_wait_for(&c, s.r, "Compression: ");
  sclient_wait_for(&c, s.r, "Expansion: ");
  sclient_close_stdin(&c);
  int code = sclient_wait_exit(&c, s.r);
  sclient_finish(&c);
  char value[64];
  ck_assert_str_eq(line_value(c.out, "Compression: ", value, sizeof value), "NONE");
  ck_assert_str_eq(line_value(c.out, "Expansion: ", value, sizeof value), "NONE");
  ck_assert_msg(strstr(c.out, "Cipher is ") != NULL && strstr(c.out, "Cipher is (NONE)") == NULL,
                "no cipher in s_client's report:\n%s", c.out);
  ck_assert_msg(code == 0, "s_client exit %d:\n%s", code, c.out);
  server_free(&s);
}
END_TEST

/* The server's cipher order wins: offered in two opposite orders, the same cipher is chosen.
 * Loop: 0 TLS 1.2 (-cipher), 1 TLS 1.3 (-ciphersuites). */
START_TEST(test_server_cipher_order) {
  int tls13 = _i;
  const char *openssl = openssl_path("test_server_cipher_order");
  if (openssl == NULL)
    return;
  static const char *const orders[2][2] = {
      {"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
       "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"},
      {"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384",
       "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"},
  };
  char chosen[2][128];
  for (int k = 0; k < 2; k++) {
    server s;
    server_start(&s, ID_EC);
    const char *args[] = {"-brief", tls13 ? "-tls1_3" : "-tls1_2",
                          tls13 ? "-ciphersuites" : "-cipher", orders[tls13][k], NULL};
    sclient c;
    int code = run_sclient(&s, &c, openssl, args);
    ck_assert_msg(code == 0 && brief_established(c.out), "offer %s: s_client exit %d:\n%s",
                  orders[tls13][k], code, c.out);
    line_value(c.out, "Ciphersuite: ", chosen[k], sizeof chosen[k]);
    ck_assert_msg(strstr(orders[tls13][k], chosen[k]) != NULL && chosen[k][0] != '\0',
                  "offer %s: chosen '%s'", orders[tls13][k], chosen[k]);
    server_free(&s);
  }
  ck_assert_msg(strcmp(chosen[0], chosen[1]) == 0,
                "the client's order won: offer %s chose %s, offer %s chose %s", orders[tls13][0],
                chosen[0], orders[tls13][1], chosen[1]);
}
END_TEST

/* Client-initiated renegotiation is refused: s_client's "R" command renegotiates a TLS 1.2
 * connection; the server answers no_renegotiation, s_client fails, no second handshake runs,
 * and nothing sent after it reaches the server. Loop: identity. */
START_TEST(test_no_client_renegotiation) {
  int id = _i;
  const char *openssl = openssl_path("test_no_client_renegotiation");
  if (openssl == NULL)
    return;
  server s;
  server_start(&s, id);
  const char *args[] = {"-brief", "-tls1_2", NULL}; /* not -quiet: it disables the commands */
  sclient c;
  sclient_start(&c, s.r, openssl, s.port, args);
  sclient_send(&c, "hello\n");
  tu_conn *conn = tu_wait_conn(s.r, &s.f, 0, WAIT_SECONDS);
  tu_wait_size(s.r, &conn->rx_len, 6, WAIT_SECONDS);
  sclient_wait_for(&c, s.r, "hello\n");
  ck_assert(brief_established(c.out));
  SSL *ssl = weft_transport_ssl(conn->transport);
  ck_assert_ptr_nonnull(ssl);
  ck_assert_msg(SSL_get_secure_renegotiation_support(ssl) == 1,
                "s_client did not offer secure renegotiation: the test would prove less");

  sclient_send(&c, "R\n");
  sclient_wait_for(&c, s.r, "RENEGOTIATING");
  /* s_client normally quits on the refusal (then this write may fail with EPIPE, which is
   * fine); if the server renegotiated, the connection goes on and the line comes back */
  ssize_t ignored = write(c.in_fd, "after\n", 6);
  (void)ignored;
  sclient_wait w = {&c, "after\n"};
  tu_run_until(s.r, sclient_has, &w, WAIT_SECONDS);
  ck_assert_msg(strstr(c.out, "after\n") == NULL,
                "%s server: the connection survived a client-initiated renegotiation (data "
                "sent after it was echoed):\n%s",
                id_name[id], c.out);
  int code = sclient_wait_exit(&c, s.r);
  sclient_finish(&c);
  const char *after = strstr(c.out, "RENEGOTIATING");
  ck_assert_msg(code != 0, "s_client renegotiated and exited 0:\n%s", c.out);
  ck_assert_msg(strcasestr(after, "no renegotiation") != NULL,
                "s_client did not report the server's no_renegotiation:\n%s", c.out);
  ck_assert_msg(strstr(after, "CONNECTION ESTABLISHED") == NULL &&
                    strstr(after, "Ciphersuite: ") == NULL,
                "a second handshake completed:\n%s", c.out);
  tu_wait_int(s.r, &conn->lost, 1, WAIT_SECONDS);
  ck_assert_msg(tu_conn_rx_equals(conn, "hello\n", 6),
                "data after the renegotiation attempt reached the server: '%s'",
                conn->rx ? (const char *)conn->rx : "");
  ck_assert_int_eq(s.f.made, 1);
  ck_assert_int_eq(s.f.handshake_failed, 0);
  server_free(&s);
}
END_TEST

/* --- The suite ------------------------------------------------------------------------------ */

static Suite *defaults_suite(void) {
  Suite *s = suite_create("defaults");
  TCase *tc = tcase_create("refused");
  tcase_add_unchecked_fixture(tc, identities_setup, identities_teardown);
  tcase_add_loop_test(tc, test_refused, 0, N_REFUSALS * ID_COUNT);
  tcase_add_loop_test(tc, test_no_client_renegotiation, 0, ID_COUNT);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("accepted");
  tcase_add_unchecked_fixture(tc, identities_setup, identities_teardown);
  tcase_add_loop_test(tc, test_default_connection, 0, 2 * ID_COUNT);
  tcase_add_test(tc, test_no_compression);
  tcase_add_loop_test(tc, test_server_cipher_order, 0, 2);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(defaults_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
