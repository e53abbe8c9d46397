/* fuzz_nego_select: choosing the next protocol from two wire-form lists, as the ALPN server
 * and the NPN client do, and weft's ALPN/NPN callbacks themselves.
 *
 * Input: byte 0 says where to split the rest (0: all to OTHER, 255: all to PREFERRED, linear in
 * between), byte 1 drives the callbacks (bit 0: no-overlap policy CONTINUE instead of FAIL;
 * bit 1: use a protocol selector; bits 2-7 minus 3: what the selector returns, -3..60); the
 * remaining bytes are PREFERRED then OTHER, each a candidate wire list (possibly malformed).
 *
 * Checked, with a reference implementation written here:
 *  - weft__nego_select(PREFERRED, OTHER) and (OTHER, PREFERRED): a match points inside the
 *    second list's bytes at a name boundary (its length byte equals the returned length), and
 *    is the FIRST protocol of the first list that appears in the second; no match means no
 *    protocol in common or a malformed list; the answer is the same without out pointers;
 *  - weft__nego_contains agrees with the reference for every name of OTHER;
 *  - the server's ALPN callback (selection in the server's order, the selector, the no-overlap
 *    policy, the no_overlap flag on the connection) and the client's NPN callbacks, called
 *    directly with OTHER as the peer's list: the ones weft__nego_install registers, which
 *    negotiation.c hands out to tests (weft__nego_alpn_select_callback and friends). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <weft/tls.h>

#include "negotiation-internal.h"
#include "tls_options-internal.h"
#include "tls_ssl-internal.h"

static __attribute__((noreturn)) void fail(const char *what) {
  fprintf(stderr, "fuzz_nego_select: %s\n", what);
  abort();
}

/* --- The reference ------------------------------------------------------------------------ */

typedef struct name {
  const uint8_t *bytes; /* the name, after its length byte */
  size_t len;
} name;

typedef struct list {
  int ok;       /* well-formed */
  size_t count; /* names, when ok */
  name *names;  /* malloc'd, count entries */
} list;

/* Parses WIRE/LEN on its own terms (each name 1..255, lengths consistent, <= 65535 bytes). */
static list parse(const uint8_t *wire, size_t len) {
  list l = {0, 0, NULL};
  if (len > 65535)
    return l;
  l.names = malloc((len / 2 + 1) * sizeof *l.names);
  if (l.names == NULL)
    abort();
  size_t pos = 0;
  while (pos < len) {
    size_t n = wire[pos];
    if (n == 0 || len - pos - 1 < n)
      return l; /* ok stays 0 */
    l.names[l.count].bytes = wire + pos + 1;
    l.names[l.count].len = n;
    l.count++;
    pos += 1 + n;
  }
  l.ok = 1;
  return l;
}

static int same(const name *a, const uint8_t *bytes, size_t len) {
  return a->len == len && memcmp(a->bytes, bytes, len) == 0;
}

static int ref_contains(const list *l, const uint8_t *bytes, size_t len) {
  for (size_t i = 0; l->ok && i < l->count; i++)
    if (same(&l->names[i], bytes, len))
      return 1;
  return 0;
}

/* The first name of PREF that OTHER holds, or NULL. */
static const name *ref_select(const list *pref, const list *other) {
  if (!pref->ok || !other->ok)
    return NULL;
  for (size_t i = 0; i < pref->count; i++)
    if (ref_contains(other, pref->names[i].bytes, pref->names[i].len))
      return &pref->names[i];
  return NULL;
}

/* 1 if OUT/LEN is exactly one of the names of L (same address: a name boundary inside L). */
static int is_name_of(const list *l, const uint8_t *out, size_t len) {
  for (size_t i = 0; i < l->count; i++)
    if (l->names[i].bytes == out && l->names[i].len == len)
      return 1;
  return 0;
}

/* A match from weft must lie in OTHER's bytes, at a name boundary, with its length byte in
 * front, and be EXPECTED (the first of PREFERRED's names found in OTHER). */
static void check_match(const uint8_t *other, size_t other_len, const list *lo, const uint8_t *out,
                        size_t out_len, const name *expected) {
  if (expected == NULL)
    fail("a match was returned although the lists share no protocol (or one is malformed)");
  if (out == NULL || out <= other || out + out_len > other + other_len)
    fail("the match does not lie inside the other list's bytes");
  if (out[-1] != out_len)
    fail("the match's length byte does not equal the returned length");
  if (!is_name_of(lo, out, out_len))
    fail("the match does not start at a name boundary of the other list");
  if (!same(expected, out, out_len))
    fail("the match is not the first protocol of the preferred list found in the other");
}

static void check_select(const uint8_t *pref, size_t pref_len, const list *lp, const uint8_t *other,
                         size_t other_len, const list *lo) {
  const name *expected = ref_select(lp, lo);
  const uint8_t *out = NULL;
  uint8_t out_len = 0;
  int rc = weft__nego_select(pref, pref_len, other, other_len, &out, &out_len);
  if (rc != 0 && rc != 1)
    fail("weft__nego_select returned neither 0 nor 1");
  if (rc == 1)
    check_match(other, other_len, lo, out, out_len, expected);
  else if (expected != NULL)
    fail("weft__nego_select found nothing although the lists share a protocol");
  if (weft__nego_select(pref, pref_len, other, other_len, NULL, NULL) != rc)
    fail("weft__nego_select answers differently without out pointers");
}

/* --- The callbacks, caught on their way to OpenSSL ---------------------------------------- */

static SSL_CTX_alpn_select_cb_func alpn_select_cb;
#ifndef OPENSSL_NO_NEXTPROTONEG
static SSL_CTX_npn_select_cb_func npn_select_cb;
static SSL_CTX_npn_advertised_cb_func npn_advertise_cb;
#endif

static weft__tls_conn server_conn, client_conn;
static SSL *server_ssl, *client_ssl;

/* What the selector saw and answers. */
static struct {
  int choice;
  int calls;
  const uint8_t *offer;
  size_t offer_len;
} selector_state;

static int selector(void *arg, const uint8_t *offer, size_t offer_len, const char *server_name) {
  (void)arg;
  selector_state.calls++;
  if (offer != selector_state.offer || offer_len != selector_state.offer_len)
    fail("the selector was not given the client's offer");
  if (server_name != NULL)
    fail("the selector got a server name although the client sent none");
  return selector_state.choice;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  static const char *const protocols[] = {"h2", "http/1.1"};
  const char *const names[] = {"localhost"};
  weft_cert_spec spec = {.common_name = "localhost", .dns_names = names, .dns_count = 1};
  weft_cert_options *options;
  EVP_PKEY *key;
  X509 *cert;
  weft__reason_buf err;
  if (weft_key_generate(WEFT_KEY_EC_P256, 0, &key) != 0 ||
      weft_cert_generate(&spec, key, NULL, NULL, &cert) != 0 ||
      weft_cert_options_new(&options) != 0 ||
      weft_cert_options_set_private_key(options, key) != 0 ||
      weft_cert_options_set_certificate(options, cert) != 0)
    fail("cannot build the options");
  unsigned mech = weft_protocol_negotiation_mechanisms();
  if (mech != 0 && weft_cert_options_set_next_protocols(options, protocols, 2) != 0)
    fail("cannot set the next protocols");
  EVP_PKEY_free(key);
  X509_free(cert);
  server_conn.options = client_conn.options = options; /* kept for the whole run */
  if (weft__tls_new_ssl(options, WEFT_TLS_SERVER, NULL, &server_conn, 1, &server_ssl, &err) != 0 ||
      /* an IP literal: no SNI, and clients always check an identity */
      weft__tls_new_ssl(options, WEFT_TLS_CLIENT, "127.0.0.1", &client_conn, 1, &client_ssl, &err) !=
          0)
    fail(err.msg);
  alpn_select_cb = (mech & WEFT_MECH_ALPN) ? weft__nego_alpn_select_callback() : NULL;
  if ((mech & WEFT_MECH_ALPN) && alpn_select_cb == NULL)
    fail("this build has ALPN but no ALPN select callback");
#ifndef OPENSSL_NO_NEXTPROTONEG
  npn_select_cb = (mech & WEFT_MECH_NPN) ? weft__nego_npn_select_callback() : NULL;
  npn_advertise_cb = (mech & WEFT_MECH_NPN) ? weft__nego_npn_advertise_callback() : NULL;
  if ((mech & WEFT_MECH_NPN) && (npn_select_cb == NULL || npn_advertise_cb == NULL))
    fail("this build has NPN but not its callbacks");
#endif
  ERR_clear_error();
  return 0;
}

/* Server side of ALPN: OTHER is the client's offer, CFG the server's configuration. */
static void check_alpn_callback(const weft__nego_config *cfg, const list *lp, const uint8_t *other,
                                size_t other_len, const list *lo) {
  const unsigned char *out = NULL;
  unsigned char out_len = 0;
  selector_state.calls = 0;
  selector_state.offer = other;
  selector_state.offer_len = other_len;
  server_conn.no_overlap = 0;
  int rc = alpn_select_cb(server_ssl, &out, &out_len, other, (unsigned int)other_len, (void *)cfg);

  int found, fatal = 0;
  const uint8_t *want = NULL; /* the name (inside OTHER) that must be chosen */
  size_t want_len = 0;
  if (!lo->ok) {
    found = 0;
    if (selector_state.calls != 0)
      fail("the selector was called with a malformed offer");
  } else if (cfg->selector != NULL) {
    int choice = selector_state.choice;
    if (selector_state.calls != 1)
      fail("the selector was not called exactly once");
    found = choice >= 0 && (size_t)choice < lo->count;
    if (found) {
      want = lo->names[choice].bytes;
      want_len = lo->names[choice].len;
    }
    fatal = choice <= -2 || (choice >= 0 && !found); /* -2 asks to fail; below is a bug */
  } else {
    const name *expected = ref_select(lp, lo);
    found = expected != NULL;
    if (found && rc == SSL_TLSEXT_ERR_OK)
      check_match(other, other_len, lo, out, out_len, expected);
  }

  if (found) {
    if (rc != SSL_TLSEXT_ERR_OK)
      fail("the ALPN callback refused although a protocol was found");
    if (want != NULL && (out != want || out_len != want_len))
      fail("the ALPN callback did not return the selector's choice");
    if (server_conn.no_overlap)
      fail("the ALPN callback flagged no overlap after a match");
  } else if (fatal || cfg->no_overlap_policy == WEFT_NO_OVERLAP_FAIL) {
    if (rc != SSL_TLSEXT_ERR_ALERT_FATAL || !server_conn.no_overlap)
      fail("the ALPN callback did not fail the handshake (and flag it) without a protocol");
  } else if (rc != SSL_TLSEXT_ERR_NOACK || server_conn.no_overlap) {
    fail("the ALPN callback did not go on without a protocol (policy CONTINUE)");
  }
}

#ifndef OPENSSL_NO_NEXTPROTONEG
/* Client side of NPN: OTHER is the server's advertisement. */
static void check_npn_callbacks(const weft__nego_config *cfg, const list *lp, const uint8_t *other,
                                size_t other_len, const list *lo) {
  unsigned char *out = NULL;
  unsigned char out_len = 0;
  client_conn.no_overlap = 0;
  client_conn.npn_selected_by_client_fallback = 0;
  int rc = npn_select_cb(client_ssl, &out, &out_len, other, (unsigned int)other_len, (void *)cfg);
  const name *expected = ref_select(lp, lo);
  if (expected != NULL) {
    if (rc != SSL_TLSEXT_ERR_OK)
      fail("the NPN select callback refused although a protocol is in common");
    check_match(other, other_len, lo, out, out_len, expected);
    if (client_conn.no_overlap || client_conn.npn_selected_by_client_fallback)
      fail("the NPN select callback flagged no overlap after a match");
  } else if (cfg->no_overlap_policy == WEFT_NO_OVERLAP_FAIL) {
    if (rc != SSL_TLSEXT_ERR_ALERT_FATAL || !client_conn.no_overlap)
      fail("the NPN select callback did not fail (and flag it) without a protocol");
  } else if (rc != SSL_TLSEXT_ERR_OK || out != cfg->wire + 1 || out_len != cfg->wire[0] ||
             !client_conn.npn_selected_by_client_fallback) {
    fail("the NPN select callback did not fall back to our first protocol (policy CONTINUE)");
  }

  const unsigned char *adv = NULL;
  unsigned int adv_len = 0;
  if (npn_advertise_cb(server_ssl, &adv, &adv_len, (void *)cfg) != SSL_TLSEXT_ERR_OK ||
      adv != cfg->wire || adv_len != cfg->wire_len)
    fail("the NPN advertise callback did not advertise the whole list");
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  unsigned ratio = data[0], mode = data[1];
  const uint8_t *rest = data + 2;
  size_t n = size - 2;
  size_t split = (ratio * n + 127) / 255;
  const uint8_t *pref = rest, *other = rest + split;
  size_t pref_len = split, other_len = n - split;

  list lp = parse(pref, pref_len), lo = parse(other, other_len);
  check_select(pref, pref_len, &lp, other, other_len, &lo);
  check_select(other, other_len, &lo, pref, pref_len, &lp);

  /* contains: every name of OTHER is looked up in PREFERRED (and a malformed list holds none) */
  for (size_t i = 0; lo.ok && i < lo.count && i < 64; i++) {
    int rc = weft__nego_contains(pref, pref_len, lo.names[i].bytes, lo.names[i].len);
    if (rc != ref_contains(&lp, lo.names[i].bytes, lo.names[i].len))
      fail("weft__nego_contains disagrees with the reference");
  }
  if (weft__nego_contains(pref, pref_len, NULL, 0) != 0)
    fail("weft__nego_contains found the empty name");

  /* The callbacks run with the server's (or NPN client's) own list as PREFERRED: weft only
   * ever installs them with a validated, non-empty list, so other inputs are skipped. */
  if (lp.ok && lp.count > 0 && other_len <= UINT32_MAX) {
    weft__nego_config cfg = {
        .wire = (uint8_t *)pref,
        .wire_len = pref_len,
        .mechanisms = weft_protocol_negotiation_mechanisms(),
        .no_overlap_policy = (mode & 1) ? WEFT_NO_OVERLAP_CONTINUE : WEFT_NO_OVERLAP_FAIL,
        .selector = (mode & 2) ? selector : NULL,
        .selector_arg = NULL,
    };
    selector_state.choice = (int)(mode >> 2) - 3;
    if (alpn_select_cb != NULL)
      check_alpn_callback(&cfg, &lp, other, other_len, &lo);
#ifndef OPENSSL_NO_NEXTPROTONEG
    cfg.selector = NULL; /* NPN has no selector */
    if (npn_select_cb != NULL)
      check_npn_callbacks(&cfg, &lp, other, other_len, &lo);
#endif
  }
  free(lp.names);
  free(lo.names);
  return 0;
}
