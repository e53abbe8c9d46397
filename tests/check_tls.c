/* tests/check_tls.c: TLS connections over loopback with certificates generated in the test:
 * server-only and mutual handshakes at TLS 1.2 and 1.3, a 16 MiB echo, every verification and
 * negotiation failure (reported on both sides), clean close vs. truncation vs. abort (checked
 * against a plain OpenSSL peer running in a thread), the handshake time-out, STARTTLS, SNI
 * with one options object for many names, interoperability with `openssl s_client` and
 * `openssl s_server`, verification on by default, and the TLS accessors on a TCP transport.
 *
 * Nothing sleeps to wait for an event: the reactor runs until a condition holds or a deadline
 * passes. Threads and child processes wake the reactor (call_from_thread, a pipe event). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "testutil.h"
#include "tlsutil.h"

#define RX_STR(c) ((c)->rx ? (const char *)(c)->rx : "")

static int version_of(int i) {
  return i == 0 ? WEFT_TLS1_2 : WEFT_TLS1_3;
}
static const char *version_name(int v) {
  return v == WEFT_TLS1_2 ? "TLSv1.2" : "TLSv1.3";
}

/* --- A world: reactor, PKI, a TLS listener and a TLS client factory ----------------------- */

typedef struct world {
  weft_reactor *r;
  tu_pki pki;
  tu_factory server, client;
  weft_cert_options *sopts, *copts; /* owned by the world once set */
  weft_listener *listener;
  int port;
} world;

static void world_init(world *w) {
  memset(w, 0, sizeof *w);
  w->r = tu_reactor_new();
  tu_pki_init(&w->pki);
  tu_factory_init(&w->server);
  tu_factory_init(&w->client);
}

/* Sets the version range of both options (0 leaves one alone). */
static void world_versions(world *w, int server_version, int client_version) {
  if (server_version)
    tu_check_opt(w->sopts,
                 weft_cert_options_set_tls_versions(w->sopts, server_version, server_version));
  if (client_version)
    tu_check_opt(w->copts,
                 weft_cert_options_set_tls_versions(w->copts, client_version, client_version));
}

static void world_listen(world *w) {
  w->listener = tu_listen_ssl_local(w->r, &w->server, w->sopts, &w->port);
}

static void world_connect(world *w, const char *server_name) {
  tu_connect_ssl_local(w->r, &w->client, w->port, w->copts, server_name);
}

/* Waits until both sides of the first connection ran connection_made. */
static void world_wait_made(world *w, tu_conn **c, tu_conn **s) {
  *c = tu_wait_conn(w->r, &w->client, 0, 20.0);
  *s = tu_wait_conn(w->r, &w->server, 0, 20.0);
  tu_wait_int(w->r, &(*c)->made, 1, 20.0);
  tu_wait_int(w->r, &(*s)->made, 1, 20.0);
}

static void world_free(world *w) {
  tu_factory_check(&w->server);
  tu_factory_check(&w->client);
  weft_reactor_free(w->r);
  tu_factory_check(&w->server);
  tu_factory_check(&w->client);
  tu_factory_cleanup(&w->server);
  tu_factory_cleanup(&w->client);
  weft_cert_options_unref(w->sopts);
  weft_cert_options_unref(w->copts);
  tu_pki_free(&w->pki);
}

/* Closes the first connection from the client side and checks both ends saw a clean close. */
static void world_close_clean(world *w, tu_conn *c, tu_conn *s) {
  ck_assert_int_eq(weft_transport_lose_connection(c->transport), 0);
  tu_wait_int(w->r, &c->lost, 1, 20.0);
  tu_wait_int(w->r, &s->lost, 1, 20.0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "client lost: %s: %s",
                weft_err_name(c->lost_reason.code), c->lost_reason.message);
  ck_assert_msg(s->lost_reason.code == WEFT_OK, "server lost: %s: %s",
                weft_err_name(s->lost_reason.code), s->lost_reason.message);
}

static int str_contains(const char *haystack, const char *needle) {
  return haystack && strstr(haystack, needle) != NULL;
}

static void expected_fingerprint(X509 *cert, char *buf, size_t size) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  ck_assert_int_eq(X509_digest(cert, EVP_sha256(), md, &n), 1);
  ck_assert_uint_eq(n, 32);
  ck_assert_uint_ge(size, 3 * n);
  for (unsigned int i = 0; i < n; i++)
    snprintf(buf + 3 * i, 4, "%02X%s", md[i], i + 1 < n ? ":" : "");
}

static const char *sni_of(weft_transport *t) {
  SSL *ssl = weft_transport_ssl(t);
  ck_assert_ptr_nonnull(ssl);
  return SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
}

/* Checks the TLS accessors of a live TLS transport. */
static void check_tls_transport(weft_transport *t, int version, const char *side) {
  ck_assert_msg(weft_transport_is_tls(t) == 1, "%s: not TLS", side);
  const char *v = weft_transport_tls_version(t);
  ck_assert_msg(v && strcmp(v, version_name(version)) == 0, "%s: version %s, expected %s", side,
                v ? v : "NULL", version_name(version));
  const char *cipher = weft_transport_tls_cipher(t);
  ck_assert_msg(cipher && *cipher, "%s: no cipher", side);
  if (version == WEFT_TLS1_3)
    ck_assert_msg(strncmp(cipher, "TLS_", 4) == 0, "%s: TLS 1.3 cipher %s", side, cipher);
  else
    ck_assert_msg(strncmp(cipher, "TLS_", 4) != 0, "%s: TLS 1.2 cipher %s", side, cipher);
  ck_assert_ptr_nonnull(weft_transport_ssl(t));
  ck_assert_int_eq(weft_transport_tls_session_reused(t), 0);
  ck_assert_int_eq(weft_transport_half_close(t), WEFT_ENOTSUP);
}

/* --- Handshakes ----------------------------------------------------------------------------- */

START_TEST(test_server_only) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  w.copts = tu_client_options(&w.pki);
  world_versions(&w, v, v);
  w.server.conn_config.echo = 1;
  world_listen(&w);
  world_connect(&w, "localhost");
  tu_conn *c, *s;
  world_wait_made(&w, &c, &s);

  check_tls_transport(c->transport, v, "client");
  check_tls_transport(s->transport, v, "server");
  ck_assert_str_eq(weft_transport_tls_cipher(c->transport),
                   weft_transport_tls_cipher(s->transport));

  char buf[512];
  ck_assert_int_eq(weft_transport_peer_subject(c->transport, buf, sizeof buf), 0);
  ck_assert_msg(str_contains(buf, "CN=server"), "client sees subject '%s'", buf);
  ck_assert_int_eq(weft_transport_peer_issuer(c->transport, buf, sizeof buf), 0);
  ck_assert_msg(str_contains(buf, "CN=weft test CA"), "client sees issuer '%s'", buf);
  ck_assert_int_eq(X509_cmp(weft_transport_peer_certificate(c->transport), w.pki.server_cert), 0);
  char expect[128];
  expected_fingerprint(w.pki.server_cert, expect, sizeof expect);
  ck_assert_int_eq(weft_transport_peer_fingerprint(c->transport, buf, sizeof buf), 0);
  ck_assert_msg(strcasecmp(buf, expect) == 0, "fingerprint %s, expected %s", buf, expect);
  ck_assert_int_eq(weft_transport_peer_fingerprint(c->transport, buf, 10), WEFT_ENOMEM);

  /* The server asked for no certificate. */
  ck_assert_ptr_null(weft_transport_peer_certificate(s->transport));
  ck_assert_int_eq(weft_transport_peer_subject(s->transport, buf, sizeof buf), WEFT_ENOPEERCERT);
  ck_assert_int_eq(weft_transport_peer_fingerprint(s->transport, buf, sizeof buf),
                   WEFT_ENOPEERCERT);
  const char *sni = sni_of(s->transport);
  ck_assert_msg(sni && strcmp(sni, "localhost") == 0, "server saw SNI %s", sni ? sni : "NULL");

  tu_conn_write_str(c, "ping\n");
  tu_wait_size(w.r, &c->rx_len, 5, 20.0);
  ck_assert_msg(tu_conn_rx_equals(c, "ping\n", 5), "client got '%s'", RX_STR(c));
  ck_assert_msg(tu_conn_rx_equals(s, "ping\n", 5), "server got '%s'", RX_STR(s));

  world_close_clean(&w, c, s);
  ck_assert_int_eq(w.client.failed, 0);
  ck_assert_int_eq(w.server.handshake_failed, 0);
  ck_assert_int_eq(w.server.built, 1);
  world_free(&w);
}
END_TEST

START_TEST(test_mutual) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  w.sopts = tu_server_options_mutual(&w.pki);
  w.copts = tu_client_options_mutual(&w.pki);
  world_versions(&w, v, v);
  w.server.conn_config.echo = 1;
  world_listen(&w);
  world_connect(&w, "localhost");
  tu_conn *c, *s;
  world_wait_made(&w, &c, &s);

  check_tls_transport(c->transport, v, "client");
  check_tls_transport(s->transport, v, "server");

  char buf[512], expect[128];
  ck_assert_int_eq(weft_transport_peer_subject(s->transport, buf, sizeof buf), 0);
  ck_assert_msg(str_contains(buf, "CN=client"), "server sees subject '%s'", buf);
  ck_assert_int_eq(weft_transport_peer_issuer(s->transport, buf, sizeof buf), 0);
  ck_assert_msg(str_contains(buf, "CN=weft test CA"), "server sees issuer '%s'", buf);
  ck_assert_int_eq(weft_transport_peer_fingerprint(s->transport, buf, sizeof buf), 0);
  ck_assert_msg(buf[0] != '\0', "empty fingerprint");
  expected_fingerprint(w.pki.client_cert, expect, sizeof expect);
  ck_assert_msg(strcasecmp(buf, expect) == 0, "fingerprint %s, expected %s", buf, expect);
  ck_assert_int_eq(X509_cmp(weft_transport_peer_certificate(s->transport), w.pki.client_cert), 0);
  ck_assert_int_eq(weft_transport_peer_subject(c->transport, buf, sizeof buf), 0);
  ck_assert_msg(str_contains(buf, "CN=server"), "client sees subject '%s'", buf);

  tu_conn_write_str(c, "mutual\n");
  tu_wait_size(w.r, &c->rx_len, 7, 20.0);
  ck_assert_msg(tu_conn_rx_equals(c, "mutual\n", 7), "client got '%s'", RX_STR(c));

  /* This time the server closes. */
  ck_assert_int_eq(weft_transport_lose_connection(s->transport), 0);
  tu_wait_int(w.r, &c->lost, 1, 20.0);
  tu_wait_int(w.r, &s->lost, 1, 20.0);
  ck_assert_msg(c->lost_reason.code == WEFT_OK, "client lost: %s: %s",
                weft_err_name(c->lost_reason.code), c->lost_reason.message);
  ck_assert_msg(s->lost_reason.code == WEFT_OK, "server lost: %s: %s",
                weft_err_name(s->lost_reason.code), s->lost_reason.message);
  world_free(&w);
}
END_TEST

/* --- 16 MiB echo with flow control on both sides ----------------------------------------------- */

#define BIG_TOTAL ((size_t)16 << 20)
#define BIG_CHUNK ((size_t)64 << 10)
#define BIG_HIGH ((size_t)1 << 20)
#define BIG_LOW ((size_t)256 << 10)

typedef struct big_state {
  size_t sent;
  size_t received;
  long long mismatch_at; /* -1: none */
  size_t max_pending;
  int write_errors;
  int server_pauses;
  uint8_t chunk[BIG_CHUNK];
} big_state;

static big_state *big_of(tu_conn *c) {
  return c->factory->user;
}

static void big_pump(tu_conn *c, weft_transport *t) {
  big_state *st = big_of(c);
  while (st->sent < BIG_TOTAL && weft_transport_pending_output(t) < BIG_HIGH) {
    size_t n = BIG_TOTAL - st->sent < BIG_CHUNK ? BIG_TOTAL - st->sent : BIG_CHUNK;
    tu_pattern_fill(st->chunk, n, st->sent);
    if (weft_transport_write(t, st->chunk, n) != 0) {
      st->write_errors++;
      return;
    }
    st->sent += n;
    size_t pending = weft_transport_pending_output(t);
    if (pending > st->max_pending)
      st->max_pending = pending;
  }
}

static void big_client_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  (void)t;
  big_state *st = big_of(c);
  size_t at = tu_pattern_check(data, len, st->received);
  if (at != len && st->mismatch_at < 0)
    st->mismatch_at = (long long)(st->received + at);
  st->received += len;
}

/* Server: echo (built in), and stop reading while the echo waits to be sent. */
static void big_server_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  (void)data;
  (void)len;
  if (weft_transport_pending_output(t) > BIG_HIGH) {
    big_of(c)->server_pauses++;
    weft_transport_pause_reading(t);
  }
}

static void big_server_drained(tu_conn *c, weft_transport *t) {
  (void)c;
  weft_transport_resume_reading(t);
}

START_TEST(test_big_echo) {
  int v = version_of(_i);
  big_state *st = calloc(1, sizeof *st);
  ck_assert_ptr_nonnull(st);
  st->mismatch_at = -1;
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  w.copts = tu_client_options(&w.pki);
  world_versions(&w, v, v);
  w.server.user = w.client.user = st;
  w.server.conn_config.echo = 1;
  w.server.conn_config.keep_rx = 0;
  w.server.conn_config.low_water = BIG_LOW;
  w.server.conn_config.on_data = big_server_data;
  w.server.conn_config.on_drained = big_server_drained;
  w.client.conn_config.keep_rx = 0;
  w.client.conn_config.low_water = BIG_LOW;
  w.client.conn_config.on_made = big_pump;
  w.client.conn_config.on_drained = big_pump;
  w.client.conn_config.on_data = big_client_data;
  world_listen(&w);
  world_connect(&w, "localhost");
  tu_conn *c, *s;
  world_wait_made(&w, &c, &s);

  tu_wait_size(w.r, &c->rx_total, BIG_TOTAL, 60.0);
  tu_settle(w.r, 0.05);
  ck_assert_uint_eq(st->sent, BIG_TOTAL);
  ck_assert_uint_eq(c->rx_total, BIG_TOTAL);
  ck_assert_uint_eq(s->rx_total, BIG_TOTAL);
  ck_assert_msg(st->mismatch_at < 0, "echo differs from the pattern at byte %lld", st->mismatch_at);
  ck_assert_int_eq(st->write_errors + c->write_errors + s->write_errors, 0);
  /* The producer really waited for write_drained: it never queued far above its mark. */
  ck_assert_int_ge(c->drained, 1);
  ck_assert_uint_lt(st->max_pending, BIG_HIGH + BIG_CHUNK + 1);
  ck_assert_uint_eq(weft_transport_pending_output(c->transport), 0);
  check_tls_transport(c->transport, v, "client");

  world_close_clean(&w, c, s);
  world_free(&w);
  free(st);
}
END_TEST

/* --- Failures, reported on both sides --------------------------------------------------------- */

/* The client's failure: connection_failed, with no connection_made. */
static const tu_reason *client_failed(world *w) {
  tu_wait_int(w->r, &w->client.failed, 1, 20.0);
  ck_assert_int_eq(w->client.failed, 1);
  ck_assert_int_eq(w->client.made, 0);
  ck_assert_int_eq(w->client.built, 0);
  return &w->client.last_failed;
}

/* The server's failure: handshake_failed, and never a protocol. */
static const tu_reason *server_failed(world *w) {
  tu_wait_int(w->r, &w->server.handshake_failed, 1, 20.0);
  tu_settle(w->r, 0.05);
  ck_assert_int_eq(w->server.handshake_failed, 1);
  ck_assert_int_eq(w->server.built, 0);
  ck_assert_int_eq(w->server.made, 0);
  /* The peer address is the client's. */
  const struct sockaddr_in *peer = (const struct sockaddr_in *)&w->server.last_handshake_peer;
  ck_assert_int_eq(peer->sin_family, AF_INET);
  ck_assert_uint_eq(ntohl(peer->sin_addr.s_addr), INADDR_LOOPBACK);
  return &w->server.last_handshake_failed;
}

static int client_ended(void *arg) {
  world *w = arg;
  return w->client.failed > 0 || w->client.lost > 0;
}

/* A rejection by the server after the client's side of the handshake finished (TLS 1.3 client
 * certificates): either connection_failed, or connection_made then connection_lost. Returns the
 * reason and sets *MADE to which path was taken. */
static const tu_reason *client_rejected(world *w, int *made) {
  tu_run_until(w->r, client_ended, w, 20.0);
  tu_settle(w->r, 0.05);
  if (w->client.failed) {
    ck_assert_int_eq(w->client.made, 0);
    *made = 0;
    return &w->client.last_failed;
  }
  tu_conn *c = tu_factory_conn(&w->client, 0);
  ck_assert_ptr_nonnull(c);
  ck_assert_int_eq(c->made, 1);
  ck_assert_int_eq(c->lost, 1);
  *made = 1;
  return &c->lost_reason;
}

#define ck_assert_reason(r, expect_code)                                                           \
  ck_assert_msg((r)->code == (expect_code), "%s: got %s (%s), expected %s", #r,                    \
                weft_err_name((r)->code), (r)->message, weft_err_name(expect_code))

/* The side whose certificate the peer refused: weft reports WEFT_ECERTVERIFY with the alert it
 * received (and verify_result 0: this side verified nothing that failed). */
static void check_rejected_by_peer(const tu_reason *r, int alert, const char *alert_text) {
  ck_assert_reason(r, WEFT_ECERTVERIFY);
  ck_assert_int_eq(r->verify_result, X509_V_OK);
  ck_assert_int_eq(r->alert_sent, 0);
  ck_assert_int_eq(r->tls_alert, alert);
  ck_assert_msg(str_contains(r->message, "rejected our certificate"), "message: %s", r->message);
  ck_assert_msg(strcasestr(r->message, alert_text) != NULL, "message '%s' lacks '%s'", r->message,
                alert_text);
}

START_TEST(test_no_client_cert_tls12) {
  world w;
  world_init(&w);
  w.sopts = tu_server_options_mutual(&w.pki);
  w.copts = tu_client_options(&w.pki);
  world_versions(&w, WEFT_TLS1_2, WEFT_TLS1_2);
  world_listen(&w);
  world_connect(&w, "localhost");

  const tu_reason *cr = client_failed(&w);
  const tu_reason *sr = server_failed(&w);
  ck_assert_reason(sr, WEFT_ENOPEERCERT);
  ck_assert_int_eq(sr->alert_sent, 1);
  ck_assert_int_eq(sr->tls_alert, 40); /* handshake_failure */
  ck_assert_reason(cr, WEFT_ENOPEERCERT);
  ck_assert_int_eq(cr->alert_sent, 0);
  ck_assert_int_eq(cr->tls_alert, 40);
  world_free(&w);
}
END_TEST

START_TEST(test_no_client_cert_tls13) {
  world w;
  world_init(&w);
  w.sopts = tu_server_options_mutual(&w.pki);
  w.copts = tu_client_options(&w.pki);
  world_versions(&w, WEFT_TLS1_3, WEFT_TLS1_3);
  world_listen(&w);
  world_connect(&w, "localhost");

  const tu_reason *sr = server_failed(&w);
  ck_assert_reason(sr, WEFT_ENOPEERCERT);
  ck_assert_int_eq(sr->alert_sent, 1);
  ck_assert_int_eq(sr->tls_alert, 116); /* certificate_required */
  int made = -1;
  const tu_reason *cr = client_rejected(&w, &made);
  /* Either path is legitimate at TLS 1.3 (weft takes the first: the client's handshake ends
   * before the server looks at the certificate); the reason must name the problem. */
  ck_assert_msg(cr->code == WEFT_ENOPEERCERT, "client (%s): %s alert %d: %s",
                made ? "made, then lost" : "failed", weft_err_name(cr->code), cr->tls_alert,
                cr->message);
  ck_assert_int_eq(cr->tls_alert, 116);
  ck_assert_int_eq(cr->alert_sent, 0);
  world_free(&w);
}
END_TEST

START_TEST(test_untrusted_client_cert) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  EVP_PKEY *key = tu_make_key();
  X509 *cert =
      tu_make_cert(key, w.pki.other_ca_key, w.pki.other_ca_cert, "client", NULL, NULL, 0, 0);
  w.sopts = tu_server_options_mutual(&w.pki);
  w.copts = tu_client_options(&w.pki);
  tu_check_opt(w.copts, weft_cert_options_set_private_key(w.copts, key));
  tu_check_opt(w.copts, weft_cert_options_set_certificate(w.copts, cert));
  world_versions(&w, v, v);
  world_listen(&w);
  world_connect(&w, "localhost");

  const tu_reason *sr = server_failed(&w);
  ck_assert_reason(sr, WEFT_ECERTVERIFY);
  ck_assert_int_eq(sr->verify_result, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  ck_assert_msg(str_contains(sr->message, "unable to get local issuer certificate"), "server: %s",
                sr->message);
  ck_assert_int_eq(sr->alert_sent, 1);
  ck_assert_int_eq(sr->tls_alert, 48); /* unknown_ca */

  const tu_reason *cr;
  if (v == WEFT_TLS1_2) {
    cr = client_failed(&w);
  } else {
    int made = -1;
    cr = client_rejected(&w, &made);
  }
  check_rejected_by_peer(cr, 48, "unknown CA");
  world_free(&w);
  EVP_PKEY_free(key);
  X509_free(cert);
}
END_TEST

/* A server certificate for localhost / 127.0.0.1 signed by ISSUER, valid from NB to NA. */
static void serve_cert(world *w, EVP_PKEY *issuer_key, X509 *issuer_cert, long nb, long na) {
  EVP_PKEY *key = tu_make_key();
  X509 *cert =
      tu_make_cert(key, issuer_key, issuer_cert, "server", "localhost", "127.0.0.1", nb, na);
  w->sopts = tu_options_with_identity(key, cert);
  EVP_PKEY_free(key);
  X509_free(cert);
}

/* The client rejects the server's certificate: ECERTVERIFY with VERIFY and TEXT; the server
 * hears the alert (ALERT_TEXT). */
static void expect_server_cert_rejected(world *w, long verify, const char *text, int alert,
                                        const char *alert_text) {
  const tu_reason *cr = client_failed(w);
  ck_assert_reason(cr, WEFT_ECERTVERIFY);
  ck_assert_int_eq(cr->verify_result, verify);
  ck_assert_msg(str_contains(cr->message, text), "client message '%s' lacks '%s'", cr->message,
                text);
  ck_assert_int_eq(cr->alert_sent, 1);
  ck_assert_int_eq(cr->tls_alert, alert);
  check_rejected_by_peer(server_failed(w), alert, alert_text);
}

START_TEST(test_untrusted_server_cert) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  serve_cert(&w, w.pki.other_ca_key, w.pki.other_ca_cert, 0, 0);
  w.copts = tu_client_options(&w.pki);
  world_versions(&w, v, v);
  world_listen(&w);
  world_connect(&w, "localhost");
  expect_server_cert_rejected(&w, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                              "unable to get local issuer certificate", 48, "unknown CA");
  world_free(&w);
}
END_TEST

START_TEST(test_expired_server_cert) {
  world w;
  world_init(&w);
  serve_cert(&w, w.pki.ca_key, w.pki.ca_cert, -7200, -3600);
  w.copts = tu_client_options(&w.pki);
  world_listen(&w);
  world_connect(&w, "localhost");
  expect_server_cert_rejected(&w, X509_V_ERR_CERT_HAS_EXPIRED, "expired", 45,
                              "certificate expired");
  world_free(&w);
}
END_TEST

START_TEST(test_not_yet_valid_server_cert) {
  world w;
  world_init(&w);
  serve_cert(&w, w.pki.ca_key, w.pki.ca_cert, 3600, 7200);
  w.copts = tu_client_options(&w.pki);
  world_listen(&w);
  world_connect(&w, "localhost");
  expect_server_cert_rejected(&w, X509_V_ERR_CERT_NOT_YET_VALID, "not yet valid", 42,
                              "bad certificate");
  world_free(&w);
}
END_TEST

START_TEST(test_expired_client_cert) {
  world w;
  world_init(&w);
  X509 *cert = tu_make_cert(w.pki.client_key, w.pki.ca_key, w.pki.ca_cert, "client", NULL, NULL,
                            -7200, -3600);
  w.sopts = tu_server_options_mutual(&w.pki);
  w.copts = tu_client_options(&w.pki);
  tu_check_opt(w.copts, weft_cert_options_set_private_key(w.copts, w.pki.client_key));
  tu_check_opt(w.copts, weft_cert_options_set_certificate(w.copts, cert));
  world_versions(&w, WEFT_TLS1_2, WEFT_TLS1_2);
  world_listen(&w);
  world_connect(&w, "localhost");
  const tu_reason *sr = server_failed(&w);
  ck_assert_reason(sr, WEFT_ECERTVERIFY);
  ck_assert_int_eq(sr->verify_result, X509_V_ERR_CERT_HAS_EXPIRED);
  ck_assert_msg(str_contains(sr->message, "expired"), "server: %s", sr->message);
  check_rejected_by_peer(client_failed(&w), 45, "certificate expired");
  world_free(&w);
  X509_free(cert);
}
END_TEST

START_TEST(test_hostname_mismatch) {
  /* 0: a DNS name the certificate lacks; 1: an IP address it lacks. */
  const char *names[] = {"wrong.example", "127.0.0.2"};
  const long verify[] = {X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH};
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  w.copts = tu_client_options(&w.pki);
  world_listen(&w);
  world_connect(&w, names[_i]);
  const tu_reason *cr = client_failed(&w);
  ck_assert_reason(cr, WEFT_EHOSTNAME);
  ck_assert_int_eq(cr->verify_result, verify[_i]);
  ck_assert_msg(str_contains(cr->message, names[_i]), "message '%s' does not name %s", cr->message,
                names[_i]);
  check_rejected_by_peer(server_failed(&w), 42, "bad certificate");
  world_free(&w);
}
END_TEST

START_TEST(test_hostname_match) {
  /* A DNS name, the IP address (server_name NULL: the host is checked against the IP
   * subjectAltName) and, where available, ::1. */
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  w.copts = tu_client_options(&w.pki);
  w.server.conn_config.echo = 1;
  world_listen(&w);
  world_connect(&w, "a.example");
  tu_conn *c0 = tu_wait_conn(w.r, &w.client, 0, 20.0);
  world_connect(&w, NULL);
  tu_conn *c1 = tu_wait_conn(w.r, &w.client, 1, 20.0);
  tu_wait_int(w.r, &w.server.made, 2, 20.0);
  ck_assert_int_eq(c0->made + c1->made, 2);
  ck_assert_int_eq(w.client.failed, 0);
  ck_assert_int_eq(w.server.handshake_failed, 0);
  int expected = 2;

  weft_listener *l6 = NULL;
  if (tu_ipv6_available()) {
    int rc = weft_listen_ssl(w.r, "::1", 0, &w.server.base, w.sopts, &l6);
    ck_assert_msg(rc == 0, "listen ::1: %s", weft_err_name(rc));
    weft_connector *conn = NULL;
    rc = weft_connect_ssl(w.r, "::1", weft_listener_port(l6), &w.client.base, w.copts, &conn);
    ck_assert_int_eq(rc, 0);
    tu_conn *c2 = tu_wait_conn(w.r, &w.client, 2, 20.0);
    ck_assert_int_eq(c2->made, 1);
    tu_wait_int(w.r, &w.server.made, 3, 20.0);
    expected = 3;
  } else {
    printf("test_hostname_match: no IPv6 on this host, ::1 not tested\n");
  }
  for (int i = 0; i < expected; i++)
    tu_conn_write_str(tu_factory_conn(&w.client, i), "x");
  for (int i = 0; i < expected; i++)
    tu_wait_size(w.r, &tu_factory_conn(&w.client, i)->rx_len, 1, 20.0);
  ck_assert_int_eq(w.client.failed, 0);
  world_free(&w);
}
END_TEST

START_TEST(test_version_mismatch) {
  /* 0: server 1.3 only, client 1.2 only; 1: the other way round. */
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  w.copts = tu_client_options(&w.pki);
  if (_i == 0)
    world_versions(&w, WEFT_TLS1_3, WEFT_TLS1_2);
  else
    world_versions(&w, WEFT_TLS1_2, WEFT_TLS1_3);
  world_listen(&w);
  world_connect(&w, "localhost");
  const tu_reason *cr = client_failed(&w);
  ck_assert_reason(cr, WEFT_ETLSVERSION);
  const tu_reason *sr = server_failed(&w);
  ck_assert_reason(sr, WEFT_ETLSVERSION);
  ck_assert_int_eq(sr->alert_sent, 1);
  ck_assert_int_eq(sr->tls_alert, 70); /* protocol_version */
  ck_assert_int_eq(cr->alert_sent, 0);
  ck_assert_int_eq(cr->tls_alert, 70);
  world_free(&w);
}
END_TEST

START_TEST(test_key_mismatch) {
  EVP_PKEY *key_a = tu_make_key();
  EVP_PKEY *key_b = tu_make_key();
  X509 *cert_a = tu_make_cert(key_a, NULL, NULL, "a", "a.example", NULL, 0, 0);
  weft_cert_options *o = NULL;

  /* Key first, then a certificate for another key. */
  ck_assert_int_eq(weft_cert_options_new(&o), 0);
  ck_assert_str_eq(weft_cert_options_last_error(o), "");
  ck_assert_int_eq(weft_cert_options_set_private_key(o, key_b), 0);
  ck_assert_int_eq(weft_cert_options_set_certificate(o, cert_a), WEFT_EKEYMISMATCH);
  ck_assert_msg(weft_cert_options_last_error(o)[0] != '\0', "no last error");
  /* The matching key fixes it. */
  ck_assert_int_eq(weft_cert_options_set_private_key(o, key_a), 0);
  ck_assert_int_eq(weft_cert_options_set_certificate(o, cert_a), 0);
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_SERVER), 0);
  weft_cert_options_unref(o);

  /* Certificate first, then another key. */
  ck_assert_int_eq(weft_cert_options_new(&o), 0);
  ck_assert_int_eq(weft_cert_options_set_certificate(o, cert_a), 0);
  ck_assert_int_eq(weft_cert_options_set_private_key(o, key_b), WEFT_EKEYMISMATCH);
  ck_assert_msg(weft_cert_options_last_error(o)[0] != '\0', "no last error");
  weft_cert_options_unref(o);

  /* The same through the PEM loaders. */
  char *key_pem = NULL, *cert_pem = NULL;
  size_t key_len = 0, cert_len = 0;
  ck_assert_int_eq(weft_key_to_pem(key_b, &key_pem, &key_len), 0);
  ck_assert_int_eq(weft_cert_to_pem(cert_a, &cert_pem, &cert_len), 0);
  ck_assert_int_eq(weft_cert_options_new(&o), 0);
  ck_assert_int_eq(weft_cert_options_load_private_key_pem(o, key_pem, key_len), 0);
  ck_assert_int_eq(weft_cert_options_load_certificate_chain_pem(o, cert_pem, cert_len),
                   WEFT_EKEYMISMATCH);
  ck_assert_msg(weft_cert_options_last_error(o)[0] != '\0', "no last error");
  weft_cert_options_unref(o);
  free(key_pem);
  free(cert_pem);

  /* A server with no identity at all cannot listen; the options say why. */
  weft_reactor *r = tu_reactor_new();
  tu_factory f;
  tu_factory_init(&f);
  ck_assert_int_eq(weft_cert_options_new(&o), 0);
  weft_listener *l = NULL;
  int rc = weft_listen_ssl(r, "127.0.0.1", 0, &f.base, o, &l);
  ck_assert_msg(rc < 0, "listening without a certificate succeeded");
  ck_assert_ptr_null(l);
  ck_assert_msg(weft_cert_options_last_error(o)[0] != '\0', "no last error for %s",
                weft_err_name(rc));
  weft_cert_options_unref(o);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);

  EVP_PKEY_free(key_a);
  EVP_PKEY_free(key_b);
  X509_free(cert_a);
}
END_TEST

/* --- A plain OpenSSL peer in a thread ---------------------------------------------------------- */

typedef enum raw_mode {
  RAW_CLIENT_TRUNCATE,     /* handshake, "hi", wait for the echo, close TCP without close_notify */
  RAW_CLIENT_EXPECT_CLOSE, /* handshake, "bye", expect weft's close_notify, answer it (or,
                              with no_answer, wait for the TCP close without answering) */
  RAW_SERVER_TRUNCATE      /* accept, handshake, "hi", wait for the echo, close TCP without
                              close_notify */
} raw_mode;

typedef struct raw_peer {
  raw_mode mode;
  weft_reactor *reactor; /* woken when done */
  int port;              /* client modes: where to connect */
  int listen_fd;         /* server mode */
  int version;
  X509 *ca;      /* client modes: trust anchor */
  EVP_PKEY *key; /* server mode: identity */
  X509 *cert;
  int cork;      /* hold the last handshake flight with TCP_CORK and send it in one
                            segment with the first application data */
  int no_answer; /* RAW_CLIENT_EXPECT_CLOSE: never answer the close_notify */
  pthread_t thread;
  atomic_int done;
  /* results */
  char error[256];
  int handshake_ok;
  char version_seen[16];
  int read_rc, read_err, shutdown_flags, shutdown_rc;
  int eof_rc;       /* no_answer: what recv returned once weft gave up waiting */
  double cut_after; /* no_answer: seconds from close_notify to the TCP close */
  char rx[64];
} raw_peer;

static void raw_wake(void *arg) {
  (void)arg;
}

static void raw_fail(raw_peer *p, const char *what) {
  char ossl[160] = "";
  unsigned long e = ERR_get_error();
  if (e)
    ERR_error_string_n(e, ossl, sizeof ossl);
  snprintf(p->error, sizeof p->error, "%s (errno %s; %s)", what, strerror(errno), ossl);
}

static void set_timeouts(int fd) {
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static void set_cork(int fd, int on) {
  setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
}

static int raw_read_exact(SSL *ssl, char *buf, int len) {
  int got = 0;
  while (got < len) {
    int n = SSL_read(ssl, buf + got, len - got);
    if (n <= 0)
      return -1;
    got += n;
  }
  return got;
}

static void raw_client(raw_peer *p, SSL_CTX *ctx) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)p->port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  set_timeouts(fd);
  if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
    raw_fail(p, "connect");
    close(fd);
    return;
  }
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), p->ca);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  SSL *ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "localhost");
  SSL_set1_host(ssl, "localhost");
  set_cork(fd, p->cork);
  if (SSL_connect(ssl) != 1) {
    raw_fail(p, "SSL_connect");
    goto out;
  }
  p->handshake_ok = 1;
  snprintf(p->version_seen, sizeof p->version_seen, "%s", SSL_get_version(ssl));
  if (p->mode == RAW_CLIENT_TRUNCATE) {
    if (SSL_write(ssl, "hi", 2) != 2) {
      raw_fail(p, "SSL_write hi");
      goto out;
    }
    set_cork(fd, 0);
    if (raw_read_exact(ssl, p->rx, 2) != 2) {
      raw_fail(p, "reading the echo of hi");
      goto out;
    }
    /* Close the TCP connection without close_notify. */
    close(fd);
    fd = -1;
  } else {
    if (SSL_write(ssl, "bye", 3) != 3) {
      raw_fail(p, "SSL_write bye");
      goto out;
    }
    char buf[64];
    p->read_rc = SSL_read(ssl, buf, sizeof buf);
    p->read_err = SSL_get_error(ssl, p->read_rc);
    p->shutdown_flags = SSL_get_shutdown(ssl);
    if (p->no_answer) {
      /* Stay silent: weft must give up after its close time-out and close the socket. */
      double start = tu_now();
      p->eof_rc = (int)recv(fd, buf, sizeof buf, 0);
      p->cut_after = tu_now() - start;
    } else {
      /* Answer the close_notify. */
      p->shutdown_rc = SSL_shutdown(ssl);
    }
  }
out:
  SSL_free(ssl);
  if (fd >= 0)
    close(fd);
}

static void raw_server(raw_peer *p, SSL_CTX *ctx) {
  int fd = accept(p->listen_fd, NULL, NULL);
  if (fd < 0) {
    raw_fail(p, "accept");
    return;
  }
  set_timeouts(fd);
  SSL_CTX_use_certificate(ctx, p->cert);
  SSL_CTX_use_PrivateKey(ctx, p->key);
  SSL *ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  set_cork(fd, p->cork);
  if (SSL_accept(ssl) != 1) {
    raw_fail(p, "SSL_accept");
  } else {
    p->handshake_ok = 1;
    snprintf(p->version_seen, sizeof p->version_seen, "%s", SSL_get_version(ssl));
    if (SSL_write(ssl, "hi", 2) != 2) {
      raw_fail(p, "SSL_write hi");
    } else {
      set_cork(fd, 0);
      if (raw_read_exact(ssl, p->rx, 2) != 2)
        raw_fail(p, "reading the echo of hi");
    }
  }
  /* Close without close_notify. */
  close(fd);
  SSL_free(ssl);
}

static void *raw_main(void *arg) {
  raw_peer *p = arg;
  SSL_CTX *ctx =
      SSL_CTX_new(p->mode == RAW_SERVER_TRUNCATE ? TLS_server_method() : TLS_client_method());
  if (!ctx) {
    raw_fail(p, "SSL_CTX_new");
  } else {
    SSL_CTX_set_min_proto_version(ctx, p->version);
    SSL_CTX_set_max_proto_version(ctx, p->version);
    if (p->mode == RAW_SERVER_TRUNCATE)
      raw_server(p, ctx);
    else
      raw_client(p, ctx);
    SSL_CTX_free(ctx);
  }
  ERR_clear_error();
  atomic_store(&p->done, 1);
  weft_reactor_call_from_thread(p->reactor, raw_wake, NULL);
  return NULL;
}

static void raw_start(raw_peer *p) {
  atomic_init(&p->done, 0);
  ck_assert_int_eq(pthread_create(&p->thread, NULL, raw_main, p), 0);
}

static int raw_done(void *arg) {
  return atomic_load(&((raw_peer *)arg)->done);
}

static void raw_join(raw_peer *p, weft_reactor *r) {
  tu_run_until(r, raw_done, p, 30.0);
  ck_assert_int_eq(pthread_join(p->thread, NULL), 0);
  ck_assert_msg(p->error[0] == '\0', "OpenSSL peer: %s", p->error);
}

/* --- Clean close, truncation, abort ----------------------------------------------------------- */

START_TEST(test_close_notify_sent) {
  /* weft's lose_connection sends close_notify: a plain OpenSSL peer reads a clean EOF
   * (SSL_ERROR_ZERO_RETURN), and answering it ends the connection with WEFT_OK. */
  int v = version_of(_i);
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  world_versions(&w, v, 0);
  tu_check_opt(w.sopts, weft_cert_options_set_close_timeout(w.sopts, 10.0));
  w.server.conn_config.close_after = 3;
  world_listen(&w);
  raw_peer p;
  memset(&p, 0, sizeof p);
  p.mode = RAW_CLIENT_EXPECT_CLOSE;
  p.reactor = w.r;
  p.port = w.port;
  p.version = v;
  p.ca = w.pki.ca_cert;
  raw_start(&p);
  tu_conn *s = tu_wait_conn(w.r, &w.server, 0, 20.0);
  /* Well within the close time-out: the peer's answer, not the timer, ended it. */
  tu_wait_int(w.r, &s->lost, 1, 5.0);
  raw_join(&p, w.r);
  ck_assert_int_eq(p.handshake_ok, 1);
  ck_assert_str_eq(p.version_seen, version_name(v));
  ck_assert_msg(tu_conn_rx_equals(s, "bye", 3), "server got '%s'", RX_STR(s));
  ck_assert_msg(p.read_rc == 0 && p.read_err == SSL_ERROR_ZERO_RETURN,
                "peer's SSL_read: %d, SSL_get_error %d (expected 0, SSL_ERROR_ZERO_RETURN)",
                p.read_rc, p.read_err);
  ck_assert_msg(p.shutdown_flags & SSL_RECEIVED_SHUTDOWN, "no close_notify received (%d)",
                p.shutdown_flags);
  ck_assert_int_eq(p.shutdown_rc, 1);
  ck_assert_reason(&s->lost_reason, WEFT_OK);
  world_free(&w);
}
END_TEST

START_TEST(test_close_timeout) {
  /* A peer that never answers close_notify is cut off after the close time-out. */
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  tu_check_opt(w.sopts, weft_cert_options_set_close_timeout(w.sopts, 0.5));
  w.server.conn_config.close_after = 3;
  world_listen(&w);
  raw_peer p;
  memset(&p, 0, sizeof p);
  p.mode = RAW_CLIENT_EXPECT_CLOSE;
  p.no_answer = 1;
  p.reactor = w.r;
  p.port = w.port;
  p.version = WEFT_TLS1_3;
  p.ca = w.pki.ca_cert;
  raw_start(&p);
  tu_conn *s = tu_wait_conn(w.r, &w.server, 0, 20.0);
  tu_wait_int(w.r, &s->lost, 1, 20.0);
  raw_join(&p, w.r);
  ck_assert_msg(p.read_rc == 0 && p.read_err == SSL_ERROR_ZERO_RETURN,
                "peer's SSL_read: %d, SSL_get_error %d", p.read_rc, p.read_err);
  ck_assert_msg(p.eof_rc == 0, "peer's recv after close_notify returned %d", p.eof_rc);
  ck_assert_msg(p.cut_after >= 0.4 && p.cut_after < 5.0, "cut off after %.3f s (timeout 0.5 s)",
                p.cut_after);
  ck_assert_reason(&s->lost_reason, WEFT_OK);
  world_free(&w);
}
END_TEST

START_TEST(test_truncation_seen_by_server) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  world_versions(&w, v, 0);
  w.server.conn_config.echo = 1;
  world_listen(&w);
  raw_peer p;
  memset(&p, 0, sizeof p);
  p.mode = RAW_CLIENT_TRUNCATE;
  p.reactor = w.r;
  p.port = w.port;
  p.version = v;
  p.ca = w.pki.ca_cert;
  raw_start(&p);
  tu_conn *s = tu_wait_conn(w.r, &w.server, 0, 20.0);
  tu_wait_int(w.r, &s->lost, 1, 20.0);
  raw_join(&p, w.r);
  ck_assert_str_eq(p.version_seen, version_name(v));
  ck_assert_msg(memcmp(p.rx, "hi", 2) == 0, "peer got '%.2s'", p.rx);
  ck_assert_msg(tu_conn_rx_equals(s, "hi", 2), "server got '%s'", RX_STR(s));
  ck_assert_reason(&s->lost_reason, WEFT_ETRUNCATED);
  world_free(&w);
}
END_TEST

/* Keeps the TLS version seen in connection_made (a static string) in c->user. */
static void note_version(tu_conn *c, weft_transport *t) {
  c->user = (void *)weft_transport_tls_version(t);
}

START_TEST(test_truncation_seen_by_client) {
  int v = version_of(_i);
  world w;
  world_init(&w);
  w.copts = tu_client_options(&w.pki);
  raw_peer p;
  memset(&p, 0, sizeof p);
  p.mode = RAW_SERVER_TRUNCATE;
  p.reactor = w.r;
  p.version = v;
  p.key = w.pki.server_key;
  p.cert = w.pki.server_cert;
  p.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(p.listen_fd, 0);
  set_timeouts(p.listen_fd);
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sin;
  ck_assert_int_eq(bind(p.listen_fd, (struct sockaddr *)&sin, sizeof sin), 0);
  ck_assert_int_eq(listen(p.listen_fd, 4), 0);
  ck_assert_int_eq(getsockname(p.listen_fd, (struct sockaddr *)&sin, &len), 0);
  w.port = ntohs(sin.sin_port);
  w.client.conn_config.on_made = note_version;
  w.client.conn_config.echo = 1;
  raw_start(&p);
  world_connect(&w, "localhost");
  tu_conn *c = tu_wait_conn(w.r, &w.client, 0, 20.0);
  tu_wait_int(w.r, &c->lost, 1, 20.0);
  raw_join(&p, w.r);
  close(p.listen_fd);
  ck_assert_msg(tu_conn_rx_equals(c, "hi", 2), "client got '%s'", RX_STR(c));
  ck_assert_msg(memcmp(p.rx, "hi", 2) == 0, "peer got '%.2s'", p.rx);
  ck_assert_str_eq(p.version_seen, version_name(v));
  ck_assert_msg(c->user && strcmp(c->user, version_name(v)) == 0, "client made with %s",
                c->user ? (const char *)c->user : "NULL");
  ck_assert_reason(&c->lost_reason, WEFT_ETRUNCATED);
  world_free(&w);
}
END_TEST

/* Records what a write returns once the connection is closing or closed. */
static void write_after_close(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  (void)data;
  (void)len;
  c->last_write_error = weft_transport_write(t, "late", 4);
}

/* Application data in the same TCP segment as the end of the handshake (the plain OpenSSL
 * peer corks its last flight and its first record): weft must deliver it after
 * connection_made without waiting for more bytes. 0: weft server, TLS 1.3 (the client's
 * Finished + data); 1: weft client, TLS 1.2 (the server's Finished + data). */
/* Many small writes, each short enough to go straight to SSL_write, into a connection whose
 * peer cannot read them yet (the writer runs inside one callback, so the reader gets no turn):
 * once the socket is full, OpenSSL keeps a half-written record and the rest must queue behind
 * it. Every byte must arrive, once, in order. _i 0: weft_transport_write; 1: write_sequence
 * (two pieces per write). */
#define SMALL_WRITES 12000
#define SMALL_WRITE_LEN 700
static size_t small_writes_pending; /* the writer's pending output right after writing */
static int small_writes_failed;
static int small_writes_sequence; /* use write_sequence */

static void write_small_blocks(tu_conn *c, weft_transport *t) {
  uint8_t block[SMALL_WRITE_LEN];
  uint64_t offset = 0;
  for (int i = 0; i < SMALL_WRITES; i++) {
    tu_pattern_fill(block, sizeof block, offset);
    int rc;
    if (small_writes_sequence) {
      weft_buf bufs[2] = {{block, 100}, {block + 100, sizeof block - 100}};
      rc = weft_transport_write_sequence(t, bufs, 2);
    } else {
      rc = weft_transport_write(t, block, sizeof block);
    }
    if (rc != 0)
      small_writes_failed++;
    offset += sizeof block;
  }
  small_writes_pending = weft_transport_pending_output(t);
  (void)c;
}

START_TEST(test_small_writes_queue_in_order) {
  world w;
  world_init(&w);
  small_writes_pending = 0;
  small_writes_failed = 0;
  w.sopts = tu_server_options(&w.pki);
  w.copts = tu_client_options(&w.pki);
  w.server.conn_config.on_made = write_small_blocks;
  small_writes_sequence = _i;
  w.client.conn_config.keep_rx = 1;
  world_listen(&w);
  world_connect(&w, "localhost");
  tu_conn *c, *s;
  world_wait_made(&w, &c, &s);
  const size_t total = (size_t)SMALL_WRITES * SMALL_WRITE_LEN;
  ck_assert_int_eq(small_writes_failed, 0);
  /* Otherwise the socket took everything and the queueing path was not exercised. */
  ck_assert_msg(small_writes_pending > 0, "all %zu bytes left at once", total);
  tu_wait_size(w.r, &c->rx_len, total, 30.0);
  ck_assert_uint_eq(c->rx_len, total);
  size_t bad = tu_pattern_check(c->rx, c->rx_len, 0);
  ck_assert_msg(bad == total, "byte %zu of %zu differs (pending after writing: %zu)", bad, total,
                small_writes_pending);
  world_close_clean(&w, c, s);
  world_free(&w);
}
END_TEST

/* A small write by reference into an idle TLS connection goes out at once (write-through):
 * its bytes are released before the call returns. A large one is released after it left. */
static int tls_release_calls;
static void tls_release(const void *data, size_t len, void *arg) {
  (void)data;
  (void)len;
  (void)arg;
  tls_release_calls++;
}

START_TEST(test_write_reference_tls) {
  world w;
  world_init(&w);
  tls_release_calls = 0;
  w.sopts = tu_server_options(&w.pki);
  w.copts = tu_client_options(&w.pki);
  world_listen(&w);
  world_connect(&w, "localhost");
  tu_conn *c, *s;
  world_wait_made(&w, &c, &s);
  static const char hello[] = "hello";
  ck_assert_int_eq(weft_transport_write_reference(s->transport, hello, 5, tls_release, NULL), 0);
  ck_assert_int_eq(tls_release_calls, 1);
  ck_assert_uint_eq(weft_transport_pending_output(s->transport), 0);
  const size_t big = 1u << 20;
  uint8_t *body = malloc(big);
  ck_assert_ptr_nonnull(body);
  tu_pattern_fill(body, big, 5);
  ck_assert_int_eq(weft_transport_write_reference(s->transport, body, big, tls_release, NULL), 0);
  ck_assert_int_eq(tls_release_calls, 1);
  tu_wait_size(w.r, &c->rx_len, 5 + big, 20.0);
  tu_wait_int(w.r, &tls_release_calls, 2, 10.0);
  ck_assert_msg(memcmp(c->rx, hello, 5) == 0, "the first bytes are not hello");
  ck_assert_uint_eq(tu_pattern_check(c->rx + 5, big, 5), big);
  world_close_clean(&w, c, s);
  world_free(&w);
  free(body);
}
END_TEST

START_TEST(test_data_with_handshake_end) {
  int weft_is_server = _i == 0;
  int v = weft_is_server ? WEFT_TLS1_3 : WEFT_TLS1_2;
  world w;
  world_init(&w);
  raw_peer p;
  memset(&p, 0, sizeof p);
  p.reactor = w.r;
  p.version = v;
  p.cork = 1;
  if (weft_is_server) {
    w.sopts = tu_server_options(&w.pki);
    w.server.conn_config.echo = 1;
    world_listen(&w);
    p.mode = RAW_CLIENT_TRUNCATE;
    p.port = w.port;
    p.ca = w.pki.ca_cert;
  } else {
    w.copts = tu_client_options(&w.pki);
    w.client.conn_config.echo = 1;
    p.mode = RAW_SERVER_TRUNCATE;
    p.key = w.pki.server_key;
    p.cert = w.pki.server_cert;
    p.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(p.listen_fd, 0);
    set_timeouts(p.listen_fd);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    ck_assert_int_eq(bind(p.listen_fd, (struct sockaddr *)&sin, sizeof sin), 0);
    ck_assert_int_eq(listen(p.listen_fd, 4), 0);
    ck_assert_int_eq(getsockname(p.listen_fd, (struct sockaddr *)&sin, &len), 0);
    w.port = ntohs(sin.sin_port);
  }
  raw_start(&p);
  if (!weft_is_server)
    world_connect(&w, "localhost");
  tu_factory *f = weft_is_server ? &w.server : &w.client;
  tu_conn *c = tu_wait_conn(w.r, f, 0, 20.0);
  /* Well before the peer's 10 s read time-out: the data came with the handshake's end. */
  tu_wait_size(w.r, &c->rx_len, 2, 5.0);
  ck_assert_msg(tu_conn_rx_equals(c, "hi", 2), "weft got '%s'", RX_STR(c));
  tu_wait_int(w.r, &c->lost, 1, 20.0);
  raw_join(&p, w.r);
  if (!weft_is_server)
    close(p.listen_fd);
  ck_assert_str_eq(p.version_seen, version_name(v));
  ck_assert_msg(memcmp(p.rx, "hi", 2) == 0, "peer got '%.2s'", p.rx);
  ck_assert_reason(&c->lost_reason, WEFT_ETRUNCATED);
  world_free(&w);
}
END_TEST

START_TEST(test_abort) {
  /* _i: bit 0 the version, bit 1 which side aborts (0 server, 1 client). */
  int v = version_of(_i & 1);
  int client_aborts = (_i >> 1) & 1;
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  w.copts = tu_client_options(&w.pki);
  world_versions(&w, v, v);
  tu_factory *af = client_aborts ? &w.client : &w.server;
  af->conn_config.abort_on_data = 1;
  af->conn_config.on_data = write_after_close; /* runs after the abort */
  world_listen(&w);
  world_connect(&w, "localhost");
  tu_conn *c, *s;
  world_wait_made(&w, &c, &s);
  tu_conn *aborter = client_aborts ? c : s;
  tu_conn *peer = client_aborts ? s : c;
  tu_conn_write_str(peer, "x");
  tu_wait_int(w.r, &aborter->lost, 1, 20.0);
  tu_wait_int(w.r, &peer->lost, 1, 20.0);
  ck_assert_reason(&aborter->lost_reason, WEFT_EABORTED);
  ck_assert_reason(&peer->lost_reason, WEFT_ETRUNCATED);
  ck_assert_int_eq(aborter->last_write_error, WEFT_ECLOSED);
  ck_assert_int_eq(weft_transport_abort_connection(NULL), WEFT_EINVAL);
  world_free(&w);
}
END_TEST

START_TEST(test_server_close_clean) {
  /* The server closes after a request: both sides report WEFT_OK, writes are refused after. */
  int v = version_of(_i);
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  w.copts = tu_client_options(&w.pki);
  world_versions(&w, v, v);
  w.server.conn_config.greeting = "welcome";
  w.server.conn_config.greeting_len = 7;
  w.server.conn_config.close_after = 4;
  w.server.conn_config.on_data = write_after_close;
  world_listen(&w);
  world_connect(&w, "localhost");
  tu_conn *c, *s;
  world_wait_made(&w, &c, &s);
  tu_conn_write_str(c, "quit");
  tu_wait_int(w.r, &c->lost, 1, 20.0);
  tu_wait_int(w.r, &s->lost, 1, 20.0);
  ck_assert_int_eq(s->last_write_error, WEFT_ECLOSED);
  ck_assert_msg(tu_conn_rx_equals(c, "welcome", 7), "client got '%s'", RX_STR(c));
  ck_assert_reason(&c->lost_reason, WEFT_OK);
  ck_assert_reason(&s->lost_reason, WEFT_OK);
  world_free(&w);
}
END_TEST

/* --- Handshake time-out ------------------------------------------------------------------------- */

START_TEST(test_handshake_timeout) {
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  w.copts = tu_client_options(&w.pki);
  tu_check_opt(w.sopts, weft_cert_options_set_handshake_timeout(w.sopts, 0.3));
  w.server.conn_config.echo = 1;
  world_listen(&w);

  double start = tu_now();
  int raw = tu_raw_connect("127.0.0.1", w.port);
  struct sockaddr_in raw_addr;
  socklen_t raw_len = sizeof raw_addr;
  ck_assert_int_eq(getsockname(raw, (struct sockaddr *)&raw_addr, &raw_len), 0);

  /* A TLS client connects while the silent one is pending. */
  world_connect(&w, "localhost");
  tu_conn *c0 = tu_wait_conn(w.r, &w.client, 0, 20.0);
  ck_assert_int_eq(c0->made, 1);

  tu_wait_int(w.r, &w.server.handshake_failed, 1, 10.0);
  double elapsed = tu_now() - start;
  ck_assert_msg(elapsed >= 0.29 && elapsed < 5.0, "handshake time-out after %.3f s", elapsed);
  ck_assert_reason(&w.server.last_handshake_failed, WEFT_EHANDSHAKETIMEOUT);
  const struct sockaddr_in *peer = (const struct sockaddr_in *)&w.server.last_handshake_peer;
  ck_assert_uint_eq(ntohs(peer->sin_port), ntohs(raw_addr.sin_port));

  /* The silent socket was closed: it reads EOF. */
  struct timeval tv = {5, 0};
  setsockopt(raw, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char b;
  ssize_t n = recv(raw, &b, 1, 0);
  ck_assert_msg(n == 0, "recv on the silent socket returned %zd (%s)", n,
                n < 0 ? strerror(errno) : "data");
  close(raw);

  /* The first client still works, and a new one connects. */
  tu_conn_write_str(c0, "a");
  tu_wait_size(w.r, &c0->rx_len, 1, 20.0);
  world_connect(&w, "localhost");
  tu_conn *c1 = tu_wait_conn(w.r, &w.client, 1, 20.0);
  ck_assert_int_eq(c1->made, 1);
  tu_conn_write_str(c1, "b");
  tu_wait_size(w.r, &c1->rx_len, 1, 20.0);
  ck_assert_int_eq(w.server.made, 2);
  ck_assert_int_eq(w.server.handshake_failed, 1);
  ck_assert_int_eq(w.client.failed, 0);
  world_free(&w);
}
END_TEST

START_TEST(test_client_handshake_timeout) {
  /* A server that accepts TCP (the kernel does, from the backlog) and never answers the
   * ClientHello: the client's own handshake time-out ends the attempt. */
  world w;
  world_init(&w);
  w.copts = tu_client_options(&w.pki);
  tu_check_opt(w.copts, weft_cert_options_set_handshake_timeout(w.copts, 0.3));
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sin;
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
  ck_assert_int_eq(listen(fd, 4), 0);
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
  w.port = ntohs(sin.sin_port);
  double start = tu_now();
  world_connect(&w, "localhost");
  const tu_reason *cr = client_failed(&w);
  double elapsed = tu_now() - start;
  ck_assert_reason(cr, WEFT_EHANDSHAKETIMEOUT);
  ck_assert_msg(elapsed >= 0.29 && elapsed < 5.0, "failed after %.3f s", elapsed);
  ck_assert_uint_eq(weft_reactor_connection_count(w.r), 0);
  close(fd);
  world_free(&w);
}
END_TEST

/* --- STARTTLS ----------------------------------------------------------------------------------- */

typedef struct starttls_ctx {
  tu_pki *pki;
  weft_cert_options *server_opts, *client_opts;
  int server_start_rc, client_start_rc, again_rc;
  int plain_checked; /* accessors were checked on the plain connection */
  int plain_errors;
  int early_data;
} starttls_ctx;

static void check_plain(starttls_ctx *x, weft_transport *t) {
  char buf[64];
  if (weft_transport_is_tls(t) != 0 || weft_transport_tls_version(t) != NULL ||
      weft_transport_peer_subject(t, buf, sizeof buf) != WEFT_ENOTTLS)
    x->plain_errors++;
  x->plain_checked++;
}

static void starttls_server_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  starttls_ctx *x = c->factory->user;
  if (c->tls_started) {
    /* Encrypted phase: echo. */
    weft_transport_write(t, data, len);
    return;
  }
  if (c->rx_len > 9)
    x->early_data++; /* bytes after STARTTLS\n delivered before tls_started */
  if (c->rx_len == 9 && memcmp(c->rx, "STARTTLS\n", 9) == 0) {
    check_plain(x, t);
    tu_conn_write_str(c, "GO\n");
    x->server_start_rc = weft_transport_start_tls(t, x->server_opts, WEFT_TLS_SERVER, NULL);
    x->again_rc = weft_transport_start_tls(t, x->server_opts, WEFT_TLS_SERVER, NULL);
  }
}

static void starttls_client_made(tu_conn *c, weft_transport *t) {
  (void)t;
  tu_conn_write_str(c, "STARTTLS\n");
}

static void starttls_client_data(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len) {
  starttls_ctx *x = c->factory->user;
  (void)data;
  (void)len;
  if (!c->tls_started && c->rx_len == 3 && memcmp(c->rx, "GO\n", 3) == 0) {
    check_plain(x, t);
    x->client_start_rc = weft_transport_start_tls(t, x->client_opts, WEFT_TLS_CLIENT, "localhost");
  }
}

static void starttls_client_started(tu_conn *c, weft_transport *t, int status) {
  (void)t;
  if (status == 0)
    tu_conn_write_str(c, "secret\n");
}

typedef struct starttls_wait {
  tu_conn *c, *s;
} starttls_wait;

/* Both sides got the whole exchange ("GO\n" + "secret\n", "STARTTLS\n" + "secret\n"), or one
 * side was lost. */
static int starttls_finished(void *arg) {
  starttls_wait *w = arg;
  return (w->c->rx_len >= 10 && w->s->rx_len >= 16) || w->c->lost || w->s->lost;
}

START_TEST(test_starttls) {
  weft_reactor *r = tu_reactor_new();
  tu_pki pki;
  tu_pki_init(&pki);
  starttls_ctx x;
  memset(&x, 0, sizeof x);
  x.server_start_rc = x.client_start_rc = x.again_rc = 1;
  x.server_opts = tu_server_options(&pki);
  x.client_opts = tu_client_options(&pki);
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  server.user = client.user = &x;
  server.conn_config.on_data = starttls_server_data;
  client.conn_config.on_made = starttls_client_made;
  client.conn_config.on_data = starttls_client_data;
  client.conn_config.on_tls_started = starttls_client_started;
  int port;
  tu_listen_tcp_local(r, &server, &port);
  tu_connect_tcp_local(r, &client, port);
  tu_conn *c = tu_wait_conn(r, &client, 0, 20.0);
  tu_conn *s = tu_wait_conn(r, &server, 0, 20.0);
  starttls_wait sw = {c, s};
  int rc = weft_reactor_run_until(r, starttls_finished, &sw, 20.0);
  ck_assert_msg(rc == 0 && c->lost + s->lost == 0,
                "STARTTLS: %s; client got '%s', lost %d (%s: %s, tls_started %d/%d); server got "
                "'%s', lost %d (%s: %s, tls_started %d/%d)",
                weft_err_name(rc), RX_STR(c), c->lost, weft_err_name(c->lost_reason.code),
                c->lost_reason.message, c->tls_started, c->tls_started_status, RX_STR(s), s->lost,
                weft_err_name(s->lost_reason.code), s->lost_reason.message, s->tls_started,
                s->tls_started_status);

  ck_assert_int_eq(x.server_start_rc, 0);
  ck_assert_int_eq(x.client_start_rc, 0);
  ck_assert_int_eq(x.again_rc, WEFT_EBUSY);
  ck_assert_int_eq(x.plain_checked, 2);
  ck_assert_int_eq(x.plain_errors, 0);
  ck_assert_int_eq(x.early_data, 0);
  ck_assert_int_eq(c->tls_started, 1);
  ck_assert_int_eq(c->tls_started_status, 0);
  ck_assert_int_eq(s->tls_started, 1);
  ck_assert_int_eq(s->tls_started_status, 0);
  ck_assert_msg(tu_conn_rx_equals(c, "GO\nsecret\n", 10), "client got '%s'", RX_STR(c));
  ck_assert_msg(tu_conn_rx_equals(s, "STARTTLS\nsecret\n", 16), "server got '%s'", RX_STR(s));
  for (int i = 0; i < 2; i++) {
    weft_transport *t = i ? s->transport : c->transport;
    ck_assert_int_eq(weft_transport_is_tls(t), 1);
    ck_assert_ptr_nonnull(weft_transport_tls_version(t));
    ck_assert_ptr_nonnull(weft_transport_tls_cipher(t));
  }
  char buf[256];
  ck_assert_int_eq(weft_transport_peer_subject(c->transport, buf, sizeof buf), 0);
  ck_assert_msg(str_contains(buf, "CN=server"), "client sees '%s'", buf);

  ck_assert_int_eq(weft_transport_lose_connection(c->transport), 0);
  tu_wait_int(r, &c->lost, 1, 20.0);
  tu_wait_int(r, &s->lost, 1, 20.0);
  ck_assert_reason(&c->lost_reason, WEFT_OK);
  ck_assert_reason(&s->lost_reason, WEFT_OK);

  tu_factory_check(&server);
  tu_factory_check(&client);
  weft_reactor_free(r);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
  weft_cert_options_unref(x.server_opts);
  weft_cert_options_unref(x.client_opts);
  tu_pki_free(&pki);
}
END_TEST

/* --- SNI: one options object, many names ------------------------------------------------------- */

typedef struct sni_expect {
  const char *name; /* NULL: no SNI expected */
  int seen, wrong;
  char first_wrong[128];
} sni_expect;

static void sni_on_build(tu_factory *f, tu_conn *c, weft_transport *t) {
  sni_expect *e = f->user;
  (void)c;
  const char *sni = sni_of(t);
  e->seen++;
  int ok = e->name ? (sni && strcmp(sni, e->name) == 0) : sni == NULL;
  if (!ok && e->wrong++ == 0)
    snprintf(e->first_wrong, sizeof e->first_wrong, "%s", sni ? sni : "(none)");
}

#define SNI_CONNS 100

START_TEST(test_sni_many) {
  weft_reactor *r = tu_reactor_new();
  tu_pki pki;
  tu_pki_init(&pki);
  EVP_PKEY *key_a = tu_make_key(), *key_b = tu_make_key();
  X509 *cert_a = tu_make_cert(key_a, pki.ca_key, pki.ca_cert, "a.example", "a.example", NULL, 0, 0);
  X509 *cert_b = tu_make_cert(key_b, pki.ca_key, pki.ca_cert, "b.example", "b.example", NULL, 0, 0);
  weft_cert_options *sa = tu_options_with_identity(key_a, cert_a);
  weft_cert_options *sb = tu_options_with_identity(key_b, cert_b);
  weft_cert_options *sip = tu_server_options(&pki);
  weft_cert_options *copts = tu_client_options(&pki);
  tu_factory fa, fb, fip, client, cross;
  sni_expect ea = {"a.example", 0, 0, ""}, eb = {"b.example", 0, 0, ""}, eip = {NULL, 0, 0, ""};
  tu_factory_init(&fa);
  tu_factory_init(&fb);
  tu_factory_init(&fip);
  tu_factory_init(&client);
  tu_factory_init(&cross);
  fa.user = &ea;
  fb.user = &eb;
  fip.user = &eip;
  fa.on_build = fb.on_build = fip.on_build = sni_on_build;
  int pa, pb, pip;
  tu_listen_ssl_local(r, &fa, sa, &pa);
  tu_listen_ssl_local(r, &fb, sb, &pb);
  tu_listen_ssl_local(r, &fip, sip, &pip);

  for (int i = 0; i < SNI_CONNS; i++)
    tu_connect_ssl_local(r, &client, i % 2 ? pb : pa, copts, i % 2 ? "b.example" : "a.example");
  tu_wait_int(r, &client.made, SNI_CONNS, 60.0);
  tu_wait_int(r, &fa.made, SNI_CONNS / 2, 20.0);
  tu_wait_int(r, &fb.made, SNI_CONNS / 2, 20.0);
  ck_assert_int_eq(client.failed, 0);
  ck_assert_int_eq(fa.handshake_failed + fb.handshake_failed, 0);
  ck_assert_int_eq(ea.seen, SNI_CONNS / 2);
  ck_assert_int_eq(eb.seen, SNI_CONNS / 2);
  ck_assert_msg(ea.wrong == 0, "a.example listener saw SNI %s", ea.first_wrong);
  ck_assert_msg(eb.wrong == 0, "b.example listener saw SNI %s", eb.first_wrong);
  /* Each client saw the certificate of the name it asked for. */
  int saw_a = 0, saw_b = 0;
  for (tu_conn *c = client.conns; c; c = c->next) {
    char buf[256];
    ck_assert_int_eq(weft_transport_peer_subject(c->transport, buf, sizeof buf), 0);
    saw_a += str_contains(buf, "CN=a.example");
    saw_b += str_contains(buf, "CN=b.example");
    ck_assert_int_eq(weft_transport_lose_connection(c->transport), 0);
  }
  ck_assert_int_eq(saw_a, SNI_CONNS / 2);
  ck_assert_int_eq(saw_b, SNI_CONNS / 2);
  tu_wait_int(r, &client.lost, SNI_CONNS, 30.0);
  tu_wait_int(r, &fa.lost, SNI_CONNS / 2, 30.0);
  tu_wait_int(r, &fb.lost, SNI_CONNS / 2, 30.0);
  for (tu_conn *c = client.conns; c; c = c->next)
    ck_assert_reason(&c->lost_reason, WEFT_OK);

  /* Cross-check: a.example against the b.example listener. */
  tu_connect_ssl_local(r, &cross, pb, copts, "a.example");
  tu_wait_int(r, &cross.failed, 1, 20.0);
  ck_assert_reason(&cross.last_failed, WEFT_EHOSTNAME);
  tu_wait_int(r, &fb.handshake_failed, 1, 20.0);
  ck_assert_int_eq(eb.seen, SNI_CONNS / 2);

  /* No SNI for IP literals: the host (server_name NULL) or an explicit IP server name. */
  tu_connect_ssl_local(r, &cross, pip, copts, NULL);
  tu_connect_ssl_local(r, &cross, pip, copts, "127.0.0.1");
  tu_wait_int(r, &cross.made, 2, 20.0);
  tu_wait_int(r, &fip.made, 2, 20.0);
  ck_assert_int_eq(eip.seen, 2);
  ck_assert_msg(eip.wrong == 0, "an IP literal was sent as SNI: %s", eip.first_wrong);

  tu_factory_check(&fa);
  tu_factory_check(&fb);
  tu_factory_check(&fip);
  tu_factory_check(&client);
  tu_factory_check(&cross);
  weft_reactor_free(r);
  tu_factory_cleanup(&fa);
  tu_factory_cleanup(&fb);
  tu_factory_cleanup(&fip);
  tu_factory_cleanup(&client);
  tu_factory_cleanup(&cross);
  weft_cert_options_unref(sa);
  weft_cert_options_unref(sb);
  weft_cert_options_unref(sip);
  weft_cert_options_unref(copts);
  EVP_PKEY_free(key_a);
  EVP_PKEY_free(key_b);
  X509_free(cert_a);
  X509_free(cert_b);
  tu_pki_free(&pki);
}
END_TEST

/* --- Interop with the openssl command ----------------------------------------------------------- */

typedef struct child_proc {
  pid_t pid;
  int in_fd, out_fd;
  struct event *ev;
  char out[32768];
  size_t out_len;
  int eof;
} child_proc;

static void child_on_output(evutil_socket_t fd, short what, void *arg) {
  child_proc *c = arg;
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
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      c->eof = 1;
      event_del(c->ev);
    }
    return;
  }
}

/* Runs ARGV with its stdin on a pipe and its stdout and stderr read into C->out by REACTOR. */
static void child_spawn(child_proc *c, weft_reactor *r, char *const argv[]) {
  int in[2], out[2];
  memset(c, 0, sizeof *c);
  ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
  pid_t parent = getpid();
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    /* Die with the test process, whatever happens to it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    execv(argv[0], argv);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  c->pid = pid;
  c->in_fd = in[1];
  c->out_fd = out[0];
  ck_assert_int_eq(fcntl(c->out_fd, F_SETFL, O_NONBLOCK), 0);
  c->ev =
      event_new(weft_reactor_event_base(r), c->out_fd, EV_READ | EV_PERSIST, child_on_output, c);
  ck_assert_ptr_nonnull(c->ev);
  ck_assert_int_eq(event_add(c->ev, NULL), 0);
}

/* Kills the child if it still runs and reaps it; returns its wait status. */
static int child_finish(child_proc *c) {
  int status = 0;
  if (c->ev)
    event_free(c->ev);
  c->ev = NULL;
  if (c->in_fd >= 0)
    close(c->in_fd);
  if (c->out_fd >= 0)
    close(c->out_fd);
  c->in_fd = c->out_fd = -1;
  if (c->pid > 0) {
    kill(c->pid, SIGTERM);
    waitpid(c->pid, &status, 0);
    c->pid = 0;
  }
  return status;
}

typedef struct child_wait {
  child_proc *c;
  const char *needle;
} child_wait;

static int child_has(void *arg) {
  child_wait *w = arg;
  return strstr(w->c->out, w->needle) != NULL || w->c->eof;
}

static void child_wait_for(child_proc *c, weft_reactor *r, const char *needle) {
  child_wait cw = {c, needle};
  tu_run_until(r, child_has, &cw, 20.0);
  ck_assert_msg(strstr(c->out, needle) != NULL, "'%s' not in the output of the child:\n%s", needle,
                c->out);
}

/* s_server printed its whole "ACCEPT 127.0.0.1:PORT" line (or exited). */
static int accept_line_done(void *arg) {
  child_proc *c = arg;
  const char *at = strstr(c->out, "ACCEPT 127.0.0.1:");
  return c->eof || (at && strchr(at, '\n'));
}

START_TEST(test_interop_s_client) {
  int v = version_of(_i);
  const char *found = tu_find_program("openssl");
  if (!found) {
    printf("test_interop_s_client: openssl not found on PATH, skipped\n");
    return;
  }
  char openssl[4096];
  snprintf(openssl, sizeof openssl, "%s", found);
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  w.server.conn_config.echo = 1;
  world_listen(&w);
  char *ca = tu_write_cert_pem(w.pki.ca_cert);
  char connect[64];
  snprintf(connect, sizeof connect, "127.0.0.1:%d", w.port);
  char *argv[] = {
      openssl,   "s_client", "-connect",    connect,     v == WEFT_TLS1_2 ? "-tls1_2" : "-tls1_3",
      "-CAfile", ca,         "-servername", "localhost", "-verify_return_error",
      "-quiet",  NULL};
  child_proc child;
  child_spawn(&child, w.r, argv);
  ck_assert_int_eq(write(child.in_fd, "hello\n", 6), 6);
  tu_conn *s = tu_wait_conn(w.r, &w.server, 0, 20.0);
  child_wait_for(&child, w.r, "hello\n");
  ck_assert_msg(tu_conn_rx_equals(s, "hello\n", 6), "server got '%s'", RX_STR(s));
  check_tls_transport(s->transport, v, "server");
  const char *sni = sni_of(s->transport);
  ck_assert_msg(sni && strcmp(sni, "localhost") == 0, "SNI %s", sni ? sni : "NULL");

  /* The server closes; s_client sees the close and exits. */
  ck_assert_int_eq(weft_transport_lose_connection(s->transport), 0);
  tu_wait_int(w.r, &s->lost, 1, 20.0);
  tu_wait_int(w.r, &child.eof, 1, 20.0);
  int status = child_finish(&child);
  ck_assert_msg(WIFEXITED(status), "s_client did not exit by itself (status %d)", status);
  ck_assert_reason(&s->lost_reason, WEFT_OK);
  ck_assert_int_eq(w.server.handshake_failed, 0);
  tu_remove_file(ca);
  world_free(&w);
}
END_TEST

START_TEST(test_interop_s_server) {
  int v = version_of(_i);
  const char *found = tu_find_program("openssl");
  if (!found) {
    printf("test_interop_s_server: openssl not found on PATH, skipped\n");
    return;
  }
  char openssl[4096];
  snprintf(openssl, sizeof openssl, "%s", found);
  world w;
  world_init(&w);
  w.copts = tu_client_options(&w.pki);
  char *cert = tu_write_cert_pem(w.pki.server_cert);
  char *key = tu_write_key_pem(w.pki.server_key);
  char *argv[] = {openssl,       "s_server", "-accept",
                  "127.0.0.1:0", "-cert",    cert,
                  "-key",        key,        v == WEFT_TLS1_2 ? "-tls1_2" : "-tls1_3",
                  "-naccept",    "1",        "-rev",
                  NULL};
  child_proc child;
  child_spawn(&child, w.r, argv);
  child_wait_for(&child, w.r, "ACCEPT 127.0.0.1:");
  tu_run_until(w.r, accept_line_done, &child, 20.0);
  w.port = atoi(strstr(child.out, "ACCEPT 127.0.0.1:") + strlen("ACCEPT 127.0.0.1:"));
  ck_assert_msg(w.port > 0, "no port in s_server's output:\n%s", child.out);
  world_connect(&w, "localhost");
  tu_conn *c = tu_wait_conn(w.r, &w.client, 0, 20.0);
  check_tls_transport(c->transport, v, "client");
  char buf[256];
  ck_assert_int_eq(weft_transport_peer_subject(c->transport, buf, sizeof buf), 0);
  ck_assert_msg(str_contains(buf, "CN=server"), "client sees '%s'", buf);
  tu_conn_write_str(c, "hello\n");
  tu_wait_size(w.r, &c->rx_len, 6, 20.0);
  ck_assert_msg(tu_conn_rx_equals(c, "olleh\n", 6), "client got '%s'", RX_STR(c));

  ck_assert_int_eq(weft_transport_lose_connection(c->transport), 0);
  tu_wait_int(w.r, &c->lost, 1, 20.0);
  ck_assert_reason(&c->lost_reason, WEFT_OK);
  tu_wait_int(w.r, &child.eof, 1, 20.0); /* -naccept 1: s_server exits after the connection */
  int status = child_finish(&child);
  ck_assert_msg(WIFEXITED(status), "s_server did not exit by itself (status %d)", status);
  ck_assert_int_eq(w.client.failed, 0);
  tu_remove_file(cert);
  tu_remove_file(key);
  world_free(&w);
}
END_TEST

/* --- Defaults and plain transports -------------------------------------------------------------- */

START_TEST(test_verify_on_by_default) {
  world w;
  world_init(&w);
  w.sopts = tu_server_options(&w.pki);
  ck_assert_int_eq(weft_cert_options_new(&w.copts), 0); /* no CA: the system store */
  world_listen(&w);
  world_connect(&w, "localhost");
  const tu_reason *cr = client_failed(&w);
  ck_assert_reason(cr, WEFT_ECERTVERIFY);
  ck_assert_int_ne(cr->verify_result, X509_V_OK);
  check_rejected_by_peer(server_failed(&w), 48, "unknown CA");

  /* Control: the same connection with verification turned off succeeds. */
  weft_cert_options *insecure = NULL;
  ck_assert_int_eq(weft_cert_options_new(&insecure), 0);
  tu_check_opt(insecure, weft_cert_options_set_verify(insecure, 0));
  tu_connect_ssl_local(w.r, &w.client, w.port, insecure, "localhost");
  weft_cert_options_unref(insecure); /* the connector keeps its own reference */
  tu_conn *c = tu_wait_conn(w.r, &w.client, 0, 20.0);
  ck_assert_int_eq(c->made, 1);
  ck_assert_int_eq(w.client.failed, 1);
  world_free(&w);
}
END_TEST

START_TEST(test_tcp_accessors) {
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  int port;
  tu_listen_tcp_local(r, &server, &port);
  tu_connect_tcp_local(r, &client, port);
  tu_conn *c = tu_wait_conn(r, &client, 0, 20.0);
  tu_conn *s = tu_wait_conn(r, &server, 0, 20.0);
  for (int i = 0; i < 2; i++) {
    weft_transport *t = i ? s->transport : c->transport;
    char buf[128];
    size_t len = 99;
    ck_assert_int_eq(weft_transport_is_tls(t), 0);
    ck_assert_ptr_null(weft_transport_tls_version(t));
    ck_assert_ptr_null(weft_transport_tls_cipher(t));
    ck_assert_int_eq(weft_transport_tls_session_reused(t), 0);
    ck_assert_ptr_null(weft_transport_peer_certificate(t));
    ck_assert_ptr_null(weft_transport_ssl(t));
    ck_assert_int_eq(weft_transport_peer_subject(t, buf, sizeof buf), WEFT_ENOTTLS);
    ck_assert_int_eq(weft_transport_peer_issuer(t, buf, sizeof buf), WEFT_ENOTTLS);
    ck_assert_int_eq(weft_transport_peer_fingerprint(t, buf, sizeof buf), WEFT_ENOTTLS);
    ck_assert_ptr_null(weft_transport_next_protocol(t, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(weft_transport_negotiation_mechanism(t), WEFT_NEGOTIATED_NONE);
  }
  ck_assert_int_eq(weft_transport_peer_subject(NULL, NULL, 0), WEFT_EINVAL);
  ck_assert_ptr_null(weft_transport_tls_version(NULL));
  tu_factory_check(&server);
  tu_factory_check(&client);
  weft_reactor_free(r);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
}
END_TEST

/* --- The suite ------------------------------------------------------------------------------- */

static Suite *tls_suite(void) {
  Suite *s = suite_create("tls");
  TCase *tc = tcase_create("handshake");
  tcase_add_loop_test(tc, test_server_only, 0, 2);
  tcase_add_loop_test(tc, test_mutual, 0, 2);
  tcase_add_test(tc, test_tcp_accessors);
  tcase_add_test(tc, test_verify_on_by_default);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("transfer");
  tcase_add_loop_test(tc, test_big_echo, 0, 2);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("failures");
  tcase_add_test(tc, test_no_client_cert_tls12);
  tcase_add_test(tc, test_no_client_cert_tls13);
  tcase_add_loop_test(tc, test_untrusted_client_cert, 0, 2);
  tcase_add_loop_test(tc, test_untrusted_server_cert, 0, 2);
  tcase_add_test(tc, test_expired_server_cert);
  tcase_add_test(tc, test_not_yet_valid_server_cert);
  tcase_add_test(tc, test_expired_client_cert);
  tcase_add_loop_test(tc, test_hostname_mismatch, 0, 2);
  tcase_add_test(tc, test_hostname_match);
  tcase_add_loop_test(tc, test_version_mismatch, 0, 2);
  tcase_add_test(tc, test_key_mismatch);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("close");
  tcase_add_loop_test(tc, test_server_close_clean, 0, 2);
  tcase_add_loop_test(tc, test_close_notify_sent, 0, 2);
  tcase_add_test(tc, test_close_timeout);
  tcase_add_loop_test(tc, test_truncation_seen_by_server, 0, 2);
  tcase_add_loop_test(tc, test_truncation_seen_by_client, 0, 2);
  tcase_add_loop_test(tc, test_abort, 0, 4);
  tcase_add_loop_test(tc, test_data_with_handshake_end, 0, 2);
  tcase_add_loop_test(tc, test_small_writes_queue_in_order, 0, 2);
  tcase_add_test(tc, test_write_reference_tls);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("timeout");
  tcase_add_test(tc, test_handshake_timeout);
  tcase_add_test(tc, test_client_handshake_timeout);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("starttls");
  tcase_add_test(tc, test_starttls);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("sni");
  tcase_add_test(tc, test_sni_many);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("interop");
  tcase_add_loop_test(tc, test_interop_s_client, 0, 2);
  tcase_add_loop_test(tc, test_interop_s_server, 0, 2);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(tls_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
