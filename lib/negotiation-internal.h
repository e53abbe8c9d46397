/* Private: next-protocol negotiation. Defined in negotiation.c: pure functions over wire-form
 * lists (fuzzable), the ALPN/NPN callbacks installed on an SSL_CTX, and the reading of the
 * result after a handshake. Uses only the per-connection state of tls_conn-internal.h. */
#ifndef WEFT_NEGOTIATION_INTERNAL_H
#define WEFT_NEGOTIATION_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include <weft/tls.h>

#include "error-internal.h"
#include "tls_conn-internal.h"

/* --- Pure functions, fuzzable ------------------------------------------------------------ */

/* Validates a wire-form protocol list (length-prefixed names, each 1..255 bytes, total at most
 * 65535 bytes). Returns 0, or WEFT_EINVAL with a sentence in ERR (ERR may be NULL). An empty
 * list (LEN 0) is valid. */
int weft__nego_validate_wire(const uint8_t *wire, size_t len, weft__reason_buf *err);

/* Picks the first protocol of PREFERRED (wire form) that also appears in OTHER (wire form,
 * which may be malformed: it comes from the peer; malformed means no match). On a match
 * stores a pointer into OTHER's bytes (the protocol name, not its length byte) and its length,
 * and returns 1; returns 0 when there is no overlap. */
int weft__nego_select(const uint8_t *preferred, size_t preferred_len, const uint8_t *other,
                      size_t other_len, const uint8_t **out, uint8_t *out_len);

/* 1 if NAME/LEN is one of the protocols in WIRE (wire form). */
int weft__nego_contains(const uint8_t *wire, size_t wire_len, const uint8_t *name, size_t len);

/* Encodes COUNT NUL-terminated NAMES into a malloc'd wire-form list (*WIRE, *LEN; *WIRE is NULL
 * when COUNT is 0). Returns 0, WEFT_EINVAL (NULL, empty or over-long name, list too long; the
 * sentence in ERR says which) or WEFT_ENOMEM. */
int weft__nego_encode(const char *const *names, size_t count, uint8_t **wire, size_t *len,
                      weft__reason_buf *err);

/* --- The OpenSSL side -------------------------------------------------------------------- */

/* The next-protocol part of the options, read by the ALPN/NPN callbacks. Lives inside the
 * options, so it outlives every SSL_CTX built from them. */
typedef struct weft__nego_config {
  uint8_t *wire; /* the ordered list in wire form, NULL when empty */
  size_t wire_len;
  unsigned mechanisms;   /* WEFT_MECH_* allowed by the options (a subset of the build's) */
  int no_overlap_policy; /* weft_no_overlap_policy */
  weft_protocol_selector selector; /* servers: per-connection ALPN choice, or NULL */
  void *selector_arg;
  int require_protocol; /* clients: no protocol negotiated fails (weft__tls_check_negotiated) */
} weft__nego_config;

/* Installs ALPN and NPN on a freshly built CTX for ROLE according to CFG (nothing when the list
 * is empty). Uses the CTX's app data (SSL_CTX_set_app_data) to find CFG again. Returns 0, or
 * WEFT_ETLS / WEFT_ENOMEM with a sentence in ERR. */
int weft__nego_install(SSL_CTX *ctx, weft_tls_role role, const weft__nego_config *cfg,
                       weft__reason_buf *err);

/* The callbacks weft__nego_install registers (server ALPN selection, client NPN selection,
 * server NPN advertisement), for tests and fuzz targets that drive them directly with a CFG as
 * their ARG; NULL when this build lacks the mechanism. */
SSL_CTX_alpn_select_cb_func weft__nego_alpn_select_callback(void);
#ifndef OPENSSL_NO_NEXTPROTONEG
SSL_CTX_npn_select_cb_func weft__nego_npn_select_callback(void);
SSL_CTX_npn_advertised_cb_func weft__nego_npn_advertise_callback(void);
#endif

/* After a successful handshake: the negotiated protocol and the mechanism that produced it,
 * following weft's rules (ALPN result first; NPN only when a protocol in common was chosen).
 * *PROTO points into the SSL's memory (valid while the SSL lives) or is NULL. */
void weft__tls_negotiated(SSL *ssl, const weft__tls_conn *conn, const uint8_t **proto, size_t *len,
                          weft_negotiation_mechanism *mechanism);

/* After a successful handshake, before the connection is handed to the application: 1 if the
 * negotiation result breaks the options' policy and the connection must be refused, with the
 * reason (WEFT_ENOPROTOCOL) in OUT and CONN->handshake_done reset (the handshake did not
 * succeed in weft's terms); 0 otherwise. A client that requires a protocol
 * (weft_cert_options_set_require_protocol) and got none; a server whose NPN client selected a protocol
 * the server did not advertise, under WEFT_NO_OVERLAP_FAIL (NPN gives the server no say
 * during the handshake: the client's choice arrives in its last flight). */
int weft__tls_check_negotiated(SSL *ssl, weft__tls_conn *conn, weft__reason_buf *out);

#endif
