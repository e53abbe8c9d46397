/* Private: the operator's hooks on a TLS context: OCSP stapling (server) and required stapled
 * responses (client), the key log, and the verification hooks (a user callback, SPKI SHA-256
 * pins). Defined in tls_hooks.c, below tls_options.c (which owns one weft__hooks per options
 * object and installs it on the SSL_CTXs it builds); uses only tls_conn-internal.h. */
#ifndef WEFT_TLS_HOOKS_INTERNAL_H
#define WEFT_TLS_HOOKS_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/ssl.h>

#include <weft/tls.h>

#include "error-internal.h"

/* A DER OCSP response to staple (servers). */
typedef struct weft__ocsp {
  uint8_t *der;
  size_t len;
} weft__ocsp;

typedef struct weft__hooks {
  /* key log: either or both */
  weft_keylog_callback keylog;
  void *keylog_arg;
  FILE *keylog_file;
  pthread_mutex_t keylog_lock; /* one line at a time into the file */
  int keylog_lock_ready;
  /* verification (clients and servers) */
  weft_verify_callback verify;
  void *verify_arg;
  uint8_t (*pins)[32];
  size_t pin_count;
  int trust_pins_only; /* verification is off: the pins (or callback) alone decide */
  /* clients: require a stapled, valid OCSP response */
  int require_ocsp;
} weft__hooks;

/* Frees what HOOKS holds (closes the key log file). */
void weft__hooks_cleanup(weft__hooks *hooks);

/* Checks that DER/LEN is a well-formed OCSP response whose status is "successful". Returns 0,
 * or WEFT_EINVAL with a sentence in ERR. Pure. */
int weft__ocsp_check_der(const uint8_t *der, size_t len, weft__reason_buf *err);

/* Decodes a pin, "sha256//BASE64" or "BASE64" (the base64 of 32 bytes), into OUT. Returns 0 or
 * WEFT_EINVAL with a sentence in ERR. Pure. */
int weft__pin_decode(const char *pin, uint8_t out[32], weft__reason_buf *err);

/* The SHA-256 of CERT's DER SubjectPublicKeyInfo. Returns 0 or -1. */
int weft__spki_sha256(X509 *cert, uint8_t out[32]);

/* Installs on a freshly built CTX for ROLE: the key log, the verification hooks (when a
 * callback or pins are set), OCSP stapling of STAPLE (servers, when it holds a response; may
 * be NULL) and the OCSP requirement (clients). HOOKS and STAPLE must outlive CTX. Returns 0 or
 * WEFT_ETLS with a sentence in ERR. */
int weft__hooks_install(SSL_CTX *ctx, weft_tls_role role, weft__hooks *hooks,
                        const weft__ocsp *staple, weft__reason_buf *err);

#endif
