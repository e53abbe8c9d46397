/* negotiation.c: next-protocol negotiation. The first half is pure functions over wire-form
 * lists (length-prefixed names, as in the ALPN extension), safe to fuzz; the second half is the
 * OpenSSL glue: the ALPN and NPN callbacks and the reading of the result.
 *
 * The rules (doc/guide.md, section 4 "ALPN and NPN how-to", and its table "Cases and
 * results"): over ALPN the server selects and its
 * order wins; over NPN the client selects and its order wins; when both run, ALPN's result is
 * reported; an empty list on either side negotiates nothing; no overlap follows the selecting
 * side's policy. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "alloc-internal.h"
#include "negotiation-internal.h"

#if defined(HAVE_SSL_CTX_SET_ALPN_SELECT_CB) && !defined(WEFT_DISABLE_ALPN)
#define WEFT__HAVE_ALPN 1
#endif
#if !defined(OPENSSL_NO_NEXTPROTONEG) && defined(HAVE_SSL_CTX_SET_NEXT_PROTO_SELECT_CB) &&         \
    !defined(WEFT_DISABLE_NPN)
#define WEFT__HAVE_NPN 1
#endif

#define WIRE_MAX 65535u

unsigned weft_protocol_negotiation_mechanisms(void) {
  unsigned mask = 0;
#ifdef WEFT__HAVE_ALPN
  mask |= WEFT_MECH_ALPN;
#endif
#ifdef WEFT__HAVE_NPN
  mask |= WEFT_MECH_NPN;
#endif
  return mask;
}

/* --- Pure functions ----------------------------------------------------------------------- */

int weft__nego_validate_wire(const uint8_t *wire, size_t len, weft__reason_buf *err) {
  if (len == 0)
    return 0;
  if (wire == NULL) {
    weft__reason_set(err, WEFT_EINVAL, "the protocol list is NULL but %zu bytes long", len);
    return WEFT_EINVAL;
  }
  if (len > WIRE_MAX) {
    weft__reason_set(err, WEFT_EINVAL,
                     "the protocol list is %zu bytes long; at most %u bytes are allowed", len,
                     WIRE_MAX);
    return WEFT_EINVAL;
  }
  size_t index = 0;
  for (size_t i = 0; i < len; index++) {
    size_t n = wire[i];
    if (n == 0) {
      weft__reason_set(err, WEFT_EINVAL,
                       "protocol #%zu of the list is empty (a zero length byte at offset %zu)",
                       index, i);
      return WEFT_EINVAL;
    }
    if (n > len - i - 1) {
      weft__reason_set(err, WEFT_EINVAL,
                       "protocol #%zu of the list claims %zu bytes but only %zu remain "
                       "(malformed wire form)",
                       index, n, len - i - 1);
      return WEFT_EINVAL;
    }
    i += 1 + n;
  }
  return 0;
}

/* Well-formed is checked once by the callers below, so the walks can trust the lengths. */
static int wire_ok(const uint8_t *wire, size_t len) {
  return weft__nego_validate_wire(wire, len, NULL) == 0;
}

int weft__nego_contains(const uint8_t *wire, size_t wire_len, const uint8_t *name, size_t len) {
  if (name == NULL || len == 0 || !wire_ok(wire, wire_len))
    return 0;
  for (size_t i = 0; i < wire_len; i += 1 + (size_t)wire[i]) {
    if (wire[i] == len && memcmp(wire + i + 1, name, len) == 0)
      return 1;
  }
  return 0;
}

int weft__nego_select(const uint8_t *preferred, size_t preferred_len, const uint8_t *other,
                      size_t other_len, const uint8_t **out, uint8_t *out_len) {
  if (!wire_ok(preferred, preferred_len) || !wire_ok(other, other_len))
    return 0;
  for (size_t i = 0; i < preferred_len; i += 1 + (size_t)preferred[i]) {
    for (size_t j = 0; j < other_len; j += 1 + (size_t)other[j]) {
      if (preferred[i] == other[j] && memcmp(preferred + i + 1, other + j + 1, other[j]) == 0) {
        if (out != NULL)
          *out = other + j + 1;
        if (out_len != NULL)
          *out_len = other[j];
        return 1;
      }
    }
  }
  return 0;
}

int weft__nego_encode(const char *const *names, size_t count, uint8_t **wire, size_t *len,
                      weft__reason_buf *err) {
  *wire = NULL;
  *len = 0;
  if (count == 0)
    return 0;
  if (names == NULL) {
    weft__reason_set(err, WEFT_EINVAL, "the protocol name array is NULL but COUNT is %zu", count);
    return WEFT_EINVAL;
  }
  size_t total = 0;
  for (size_t i = 0; i < count; i++) {
    if (names[i] == NULL) {
      weft__reason_set(err, WEFT_EINVAL, "protocol name #%zu is NULL", i);
      return WEFT_EINVAL;
    }
    size_t n = strlen(names[i]);
    if (n == 0) {
      weft__reason_set(err, WEFT_EINVAL, "protocol name #%zu is empty; names are 1 to 255 bytes",
                       i);
      return WEFT_EINVAL;
    }
    if (n > 255) {
      weft__reason_set(err, WEFT_EINVAL,
                       "protocol name #%zu (\"%.24s...\") is %zu bytes long; at most 255 "
                       "bytes are allowed",
                       i, names[i], n);
      return WEFT_EINVAL;
    }
    total += 1 + n;
    if (total > WIRE_MAX) {
      weft__reason_set(err, WEFT_EINVAL,
                       "the protocol list is too long: with name #%zu it needs %zu bytes "
                       "encoded; at most %u bytes are allowed",
                       i, total, WIRE_MAX);
      return WEFT_EINVAL;
    }
  }
  uint8_t *buf = weft__malloc(total);
  if (buf == NULL) {
    weft__reason_set(err, WEFT_ENOMEM, "out of memory encoding the protocol list");
    return WEFT_ENOMEM;
  }
  size_t at = 0;
  for (size_t i = 0; i < count; i++) {
    size_t n = strlen(names[i]);
    buf[at++] = (uint8_t)n;
    memcpy(buf + at, names[i], n);
    at += n;
  }
  *wire = buf;
  *len = total;
  return 0;
}

/* --- OpenSSL glue ------------------------------------------------------------------------- */

#if defined(WEFT__HAVE_ALPN) || defined(WEFT__HAVE_NPN)
static weft__tls_conn *conn_of(SSL *ssl) {
  return weft__tls_conn_of(ssl);
}
#endif

#ifdef WEFT__HAVE_ALPN
/* The protocol at INDEX (0-based) of a well-formed wire list, or 0 if out of range. */
static int wire_at(const uint8_t *wire, size_t len, int index, const uint8_t **out,
                   uint8_t *out_len) {
  int k = 0;
  for (size_t i = 0; i < len; i += 1 + (size_t)wire[i], k++) {
    if (k == index) {
      *out = wire + i + 1;
      *out_len = wire[i];
      return 1;
    }
  }
  return 0;
}

/* Server: choose from the client's offer. Returning SSL_TLSEXT_ERR_ALERT_FATAL makes OpenSSL
 * 3.0 (tls_handle_alpn) fail the handshake with no_application_protocol (120);
 * SSL_TLSEXT_ERR_NOACK goes on as if ALPN had not been offered. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *out_len,
                          const unsigned char *in, unsigned int in_len, void *arg) {
  const weft__nego_config *cfg = arg;
  weft__tls_conn *conn = conn_of(ssl);
  int found = 0;
  int fatal = 0;

  if (!wire_ok(in, in_len)) {
    found = 0; /* a malformed offer shares nothing with us (OpenSSL checks it first anyway) */
  } else if (cfg->selector != NULL) {
    int choice = cfg->selector(cfg->selector_arg, in, in_len,
                               SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    if (choice >= 0)
      found = wire_at(in, in_len, choice, out, out_len);
    /* -2 asks to fail; an index past the offer is a bug in the selector: fail loudly too */
    fatal = choice == -2 || (choice >= 0 && !found) || choice < -2;
  } else {
    found = weft__nego_select(cfg->wire, cfg->wire_len, in, in_len, out, out_len);
  }
  if (found)
    return SSL_TLSEXT_ERR_OK;
  if (fatal || cfg->no_overlap_policy == WEFT_NO_OVERLAP_FAIL) {
    if (conn != NULL)
      conn->no_overlap = 1;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  return SSL_TLSEXT_ERR_NOACK;
}
#endif

#ifdef WEFT__HAVE_NPN
/* Server: advertise the whole list; the client chooses. */
static int npn_advertise_cb(SSL *ssl, const unsigned char **out, unsigned int *out_len, void *arg) {
  (void)ssl;
  const weft__nego_config *cfg = arg;
  *out = cfg->wire;
  *out_len = (unsigned int)cfg->wire_len;
  return SSL_TLSEXT_ERR_OK;
}

/* Client: choose from the server's advertisement, in the client's order. OpenSSL copies the
 * selection, so pointing into IN or into our own list is fine. */
static int npn_select_cb(SSL *ssl, unsigned char **out, unsigned char *out_len,
                         const unsigned char *in, unsigned int in_len, void *arg) {
  const weft__nego_config *cfg = arg;
  weft__tls_conn *conn = conn_of(ssl);
  const uint8_t *chosen = NULL;

  if (weft__nego_select(cfg->wire, cfg->wire_len, in, in_len, &chosen, out_len)) {
    *out = (unsigned char *)chosen;
    return SSL_TLSEXT_ERR_OK;
  }
  if (cfg->no_overlap_policy == WEFT_NO_OVERLAP_FAIL) {
    if (conn != NULL)
      conn->no_overlap = 1;
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* OpenSSL sends handshake_failure (40) */
  }
  /* CONTINUE: NPN has no "nothing" answer and OpenSSL 3.0.19 refuses an empty selection, so
   * send our first protocol (what RFC draft's fallback does) but report no protocol. */
  *out = cfg->wire + 1;
  *out_len = cfg->wire[0];
  if (conn != NULL)
    conn->npn_selected_by_client_fallback = 1;
  return SSL_TLSEXT_ERR_OK;
}
#endif

SSL_CTX_alpn_select_cb_func weft__nego_alpn_select_callback(void) {
#ifdef WEFT__HAVE_ALPN
  return alpn_select_cb;
#else
  return NULL;
#endif
}

#ifndef OPENSSL_NO_NEXTPROTONEG
SSL_CTX_npn_select_cb_func weft__nego_npn_select_callback(void) {
#ifdef WEFT__HAVE_NPN
  return npn_select_cb;
#else
  return NULL;
#endif
}

SSL_CTX_npn_advertised_cb_func weft__nego_npn_advertise_callback(void) {
#ifdef WEFT__HAVE_NPN
  return npn_advertise_cb;
#else
  return NULL;
#endif
}
#endif

int weft__nego_install(SSL_CTX *ctx, weft_tls_role role, const weft__nego_config *cfg,
                       weft__reason_buf *err) {
  SSL_CTX_set_app_data(ctx, (void *)cfg);
  if (cfg->wire_len == 0)
    return 0; /* an empty list negotiates nothing: no ALPN offered, no NPN callbacks */
  unsigned mech = cfg->mechanisms & weft_protocol_negotiation_mechanisms();
#ifdef WEFT__HAVE_ALPN
  if (mech & WEFT_MECH_ALPN) {
    if (role == WEFT_TLS_SERVER) {
      SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, (void *)cfg);
    } else if (SSL_CTX_set_alpn_protos(ctx, cfg->wire, (unsigned int)cfg->wire_len) != 0) {
      /* note the inverted convention: 0 is success */
      weft__reason_set(err, WEFT_ENOMEM, "could not set the ALPN protocol list");
      ERR_clear_error();
      return WEFT_ENOMEM;
    }
  }
#endif
#ifdef WEFT__HAVE_NPN
  if (mech & WEFT_MECH_NPN) {
    if (role == WEFT_TLS_SERVER)
      SSL_CTX_set_next_protos_advertised_cb(ctx, npn_advertise_cb, (void *)cfg);
    else
      SSL_CTX_set_next_proto_select_cb(ctx, npn_select_cb, (void *)cfg);
  }
#endif
  (void)mech;
  (void)role;
  (void)err;
  return 0;
}

void weft__tls_negotiated(SSL *ssl, const weft__tls_conn *conn, const uint8_t **proto, size_t *len,
                          weft_negotiation_mechanism *mechanism) {
  const unsigned char *data = NULL;
  unsigned int n = 0;

  *proto = NULL;
  *len = 0;
  *mechanism = WEFT_NEGOTIATED_NONE;
  if (ssl == NULL)
    return;
#ifdef WEFT__HAVE_ALPN
  SSL_get0_alpn_selected(ssl, &data, &n);
  if (data != NULL && n > 0) {
    *proto = data;
    *len = n;
    *mechanism = WEFT_NEGOTIATED_ALPN;
    return;
  }
#endif
#ifdef WEFT__HAVE_NPN
  if (conn != NULL && conn->npn_selected_by_client_fallback)
    return;
  SSL_get0_next_proto_negotiated(ssl, &data, &n);
  if (data == NULL || n == 0)
    return;
  /* A peer may "select" something we never listed (OpenSSL's own fallback does): that is no
   * protocol in common, so it is not reported. */
  const weft__nego_config *cfg = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  if (cfg != NULL && weft__nego_contains(cfg->wire, cfg->wire_len, data, n)) {
    *proto = data;
    *len = n;
    *mechanism = WEFT_NEGOTIATED_NPN;
  }
#endif
  (void)conn;
  (void)data;
  (void)n;
}

int weft__tls_check_negotiated(SSL *ssl, weft__tls_conn *conn, weft__reason_buf *out) {
  if (ssl != NULL && conn != NULL && conn->role == WEFT_TLS_CLIENT) {
    const weft__nego_config *ccfg = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    const uint8_t *proto;
    size_t len;
    weft_negotiation_mechanism mech;
    if (ccfg == NULL || !ccfg->require_protocol || ccfg->wire_len == 0)
      return 0;
    weft__tls_negotiated(ssl, conn, &proto, &len, &mech);
    if (proto != NULL)
      return 0;
    conn->handshake_done = 0;
    weft__reason_set(out, WEFT_ENOPROTOCOL,
                     "no application protocol negotiated, and these options require one "
                     "(the server %s)",
                     SSL_version(ssl) >= TLS1_3_VERSION || !(ccfg->mechanisms & WEFT_MECH_NPN)
                         ? "answered no ALPN protocol"
                         : "answered neither ALPN nor NPN");
    return 1;
  }
  if (ssl == NULL || conn == NULL || conn->role != WEFT_TLS_SERVER)
    return 0;
#ifdef WEFT__HAVE_NPN
  const weft__nego_config *cfg = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  if (cfg == NULL || cfg->wire_len == 0 || cfg->no_overlap_policy != WEFT_NO_OVERLAP_FAIL)
    return 0;
  const unsigned char *data = NULL;
  unsigned int n = 0;
#ifdef WEFT__HAVE_ALPN
  SSL_get0_alpn_selected(ssl, &data, &n);
  if (data != NULL && n > 0)
    return 0; /* ALPN decided (and its own callback enforced the policy) */
#endif
  data = NULL;
  n = 0;
  SSL_get0_next_proto_negotiated(ssl, &data, &n);
  if (data == NULL || n == 0 || weft__nego_contains(cfg->wire, cfg->wire_len, data, n))
    return 0;
  /* The client "selected" a protocol we never advertised: no protocol in common. */
  char shown[64];
  size_t k = 0;
  unsigned int i = 0;
  for (; i < n && k + 5 < sizeof shown; i++) {
    unsigned char c = data[i];
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'')
      shown[k++] = (char)c;
    else
      k += (size_t)snprintf(shown + k, sizeof shown - k, "\\x%02x", c);
  }
  shown[k] = '\0';
  conn->no_overlap = 1;
  conn->handshake_done = 0; /* not a success in weft's terms: handshake_failed hears of it */
  weft__reason_set(out, WEFT_ENOPROTOCOL,
                   "no application protocol in common (NPN: the client selected '%s%s', which "
                   "this server does not offer)",
                   shown, i < n ? "..." : "");
  return 1;
#else
  (void)out;
  return 0;
#endif
}
