/* Private: the certificate options as the rest of weft sees them: their SSL_CTX per role, and
 * what the per-connection code (tls_ssl.c, the transport, the connector) reads of them.
 * Defined in tls_options.c, which builds on negotiation.c, tls_session.c and tls_keys.c and
 * calls nothing above it. */
#ifndef WEFT_TLS_OPTIONS_INTERNAL_H
#define WEFT_TLS_OPTIONS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include <weft/tls.h>

#include "tls_session-internal.h"

/* Builds (once, then cached) and returns the options' SSL_CTX for ROLE, freezing the options.
 * Borrowed pointer, valid while the options live. Errors as weft_cert_options_prepare. */
int weft__tls_ctx(weft_cert_options *options, weft_tls_role role, SSL_CTX **out);

/* The options' own server name (weft_cert_options_set_server_name), or NULL. Borrowed. A
 * connector computes the name to pass to weft__tls_new_ssl as: its own name, else this, else
 * the host it connects to. */
const char *weft__tls_options_server_name(const weft_cert_options *options);

/* Handshake and close time-outs of the options, in seconds. */
double weft__tls_handshake_timeout(const weft_cert_options *options);
double weft__tls_close_timeout(const weft_cert_options *options);

/* How many sessions the client cache of OPTIONS holds, and (STORED, may be NULL) how many new
 * sessions it has stored so far (for tests). */
size_t weft__tls_cached_sessions(weft_cert_options *options, uint64_t *stored);

/* For the per-connection SSL (tls_ssl.c); OPTIONS must not be NULL. Whether clients check the
 * server's identity (weft_cert_options_set_verify_identity); the client policy digest that is
 * part of every client session cache key (valid once the client SSL_CTX is built); the
 * options' resumption state. Borrowed, valid while the options live. */
int weft__tls_options_verify_identity(const weft_cert_options *options);
const uint8_t *weft__tls_options_client_policy(const weft_cert_options *options);
weft__sessions *weft__tls_options_sessions(weft_cert_options *options);

/* Records MESSAGE as the options' last error (weft_cert_options_last_error), empties
 * OpenSSL's error queue, and returns CODE. */
int weft__tls_options_set_error(weft_cert_options *options, int code, const char *message);

#endif
