/* tls_hooks.c: what an operator hooks into TLS: OCSP stapling and required stapled responses,
 * the key log (NSS format, for Wireshark), and the verification hooks (a callback that sees
 * the chain and OpenSSL's verdict, and SPKI SHA-256 pins, curl's form). Below tls_options.c:
 * it sees one weft__hooks, never the options. */
#include "config.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "alloc-internal.h"
#include "tls_conn-internal.h"
#include "tls_hooks-internal.h"

static CRYPTO_ONCE index_once = CRYPTO_ONCE_STATIC_INIT;
static int hooks_ex_index = -1;

static void index_init(void) {
  hooks_ex_index = SSL_CTX_get_ex_new_index(0, "weft__hooks", NULL, NULL, NULL);
}

static weft__hooks *hooks_of(const SSL *ssl) {
  if (!CRYPTO_THREAD_run_once(&index_once, index_init) || hooks_ex_index < 0)
    return NULL;
  return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), hooks_ex_index);
}

static weft__tls_conn *conn_of(const SSL *ssl) {
  return weft__tls_conn_of(ssl);
}

void weft__hooks_cleanup(weft__hooks *h) {
  if (h->keylog_file != NULL)
    fclose(h->keylog_file);
  if (h->keylog_lock_ready)
    pthread_mutex_destroy(&h->keylog_lock);
  weft__free(h->pins);
  memset(h, 0, sizeof *h);
}

/* --- Key log ------------------------------------------------------------------------------ */

/* OpenSSL gives each secret as one NSS key log line without its newline. */
static void keylog_cb(const SSL *ssl, const char *line) {
  weft__hooks *h = hooks_of(ssl);
  if (h == NULL)
    return;
  if (h->keylog != NULL)
    h->keylog(h->keylog_arg, line);
  if (h->keylog_file != NULL) {
    pthread_mutex_lock(&h->keylog_lock);
    fprintf(h->keylog_file, "%s\n", line);
    fflush(h->keylog_file);
    pthread_mutex_unlock(&h->keylog_lock);
  }
}

/* --- Verification hooks ------------------------------------------------------------------- */

int weft__spki_sha256(X509 *cert, uint8_t out[32]) {
  unsigned char *der = NULL;
  int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  unsigned int len = 0;
  int ok = n > 0 && EVP_Digest(der, (size_t)n, out, &len, EVP_sha256(), NULL) == 1 && len == 32;
  OPENSSL_free(der);
  if (!ok)
    ERR_clear_error();
  return ok ? 0 : -1;
}

int weft__pin_decode(const char *pin, uint8_t out[32], weft__reason_buf *err) {
  if (pin == NULL) {
    weft__reason_set(err, WEFT_EINVAL, "the pin is NULL");
    return WEFT_EINVAL;
  }
  const char *b64 = strncmp(pin, "sha256//", 8) == 0 ? pin + 8 : pin;
  size_t n = strlen(b64);
  unsigned char buf[48];
  /* 32 bytes are 44 base64 characters, the last one '=' */
  if (n != 44 || EVP_DecodeBlock(buf, (const unsigned char *)b64, 44) != 33 || b64[43] != '=' ||
      b64[42] == '=') {
    ERR_clear_error();
    weft__reason_set(err, WEFT_EINVAL,
                     "the pin '%.60s' is not sha256//BASE64 with the base64 of a 32-byte "
                     "SHA-256 digest",
                     pin);
    return WEFT_EINVAL;
  }
  memcpy(out, buf, 32);
  return 0;
}

/* Replaces OpenSSL's chain verification (SSL_CTX_set_cert_verify_callback): runs it, then the
 * pins, then the user's callback, which has the last word (except over a pin refusal). */
static int cert_verify_cb(X509_STORE_CTX *store, void *arg) {
  weft__hooks *h = arg;
  SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
  weft__tls_conn *conn = conn_of(ssl);
  int ok = X509_verify_cert(store);
  long verdict = ok > 0 ? X509_V_OK : X509_STORE_CTX_get_error(store);
  if (ok <= 0 && verdict == X509_V_OK)
    verdict = X509_V_ERR_UNSPECIFIED;
  ERR_clear_error();
  int accept = verdict == X509_V_OK || h->trust_pins_only;
  int refused_by = 0;
  X509 *leaf = X509_STORE_CTX_get0_cert(store);
  if (h->pin_count > 0) {
    uint8_t digest[32];
    int pinned = 0;
    if (leaf != NULL && weft__spki_sha256(leaf, digest) == 0) {
      for (size_t i = 0; i < h->pin_count && !pinned; i++)
        pinned = CRYPTO_memcmp(h->pins[i], digest, 32) == 0;
    }
    if (!pinned) {
      accept = 0;
      refused_by = WEFT__HOOK_PIN;
    }
  }
  if (h->verify != NULL && refused_by == 0) {
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(store);
    if (chain == NULL || sk_X509_num(chain) == 0)
      chain = X509_STORE_CTX_get0_untrusted(store);
    size_t count = chain != NULL ? (size_t)sk_X509_num(chain) : 0;
    X509 *only[1] = {leaf};
    X509 **certs = count > 0 ? weft__calloc(count, sizeof *certs) : NULL;
    if (certs == NULL) {
      count = leaf != NULL ? 1 : 0;
    } else {
      for (size_t i = 0; i < count; i++)
        certs[i] = sk_X509_value(chain, (int)i);
    }
    accept = h->verify(h->verify_arg, verdict, certs != NULL ? certs : only, count) == 1;
    weft__free(certs);
    if (!accept)
      refused_by = WEFT__HOOK_CALLBACK;
  }
  if (conn != NULL)
    conn->hook_refused = refused_by;
  if (accept) {
    X509_STORE_CTX_set_error(store, X509_V_OK);
    return 1;
  }
  X509_STORE_CTX_set_error(store,
                           refused_by != 0 ? X509_V_ERR_APPLICATION_VERIFICATION : (int)verdict);
  return 0;
}

/* --- OCSP --------------------------------------------------------------------------------- */

int weft__ocsp_check_der(const uint8_t *der, size_t len, weft__reason_buf *err) {
  const unsigned char *p = der;
  OCSP_RESPONSE *resp =
      der != NULL && len > 0 && len < (1u << 24) ? d2i_OCSP_RESPONSE(NULL, &p, (long)len) : NULL;
  int status = resp != NULL ? OCSP_response_status(resp) : -1;
  OCSP_RESPONSE_free(resp);
  ERR_clear_error();
  if (resp == NULL || p != der + len) {
    weft__reason_set(err, WEFT_EINVAL, "not a DER OCSP response (%zu bytes)", len);
    return WEFT_EINVAL;
  }
  if (status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
    weft__reason_set(err, WEFT_EINVAL, "the OCSP response's status is %s, not successful",
                     OCSP_response_status_str(status));
    return WEFT_EINVAL;
  }
  return 0;
}

/* Server: staple the response when the client asks for one. */
static int ocsp_server_cb(SSL *ssl, void *arg) {
  const weft__ocsp *staple = arg;
  if (staple == NULL || staple->len == 0)
    return SSL_TLSEXT_ERR_NOACK;
  unsigned char *copy = OPENSSL_malloc(staple->len);
  if (copy == NULL)
    return SSL_TLSEXT_ERR_NOACK;
  memcpy(copy, staple->der, staple->len);
  if (SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)staple->len) != 1) {
    OPENSSL_free(copy);
    ERR_clear_error();
    return SSL_TLSEXT_ERR_NOACK;
  }
  return SSL_TLSEXT_ERR_OK;
}

/* 1 if the stapled response of SSL is successful, signed by the issuer (or a responder it
 * delegated to) as the trust store sees it, current, and says "good" for the leaf. */
static int ocsp_valid(SSL *ssl) {
  const unsigned char *p = NULL;
  long len = SSL_get_tlsext_status_ocsp_resp(ssl, &p);
  if (len <= 0 || p == NULL)
    return 0;
  OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, len);
  OCSP_BASICRESP *basic = NULL;
  OCSP_CERTID *id = NULL;
  int ok = 0;
  X509 *leaf = SSL_get0_peer_certificate(ssl);
  STACK_OF(X509) *verified = SSL_get0_verified_chain(ssl);
  if (resp == NULL || leaf == NULL || verified == NULL ||
      OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL ||
      (basic = OCSP_response_get1_basic(resp)) == NULL)
    goto done;
  X509 *issuer = sk_X509_num(verified) > 1 ? sk_X509_value(verified, 1) : leaf;
  X509_STORE *store = SSL_CTX_get_cert_store(SSL_get_SSL_CTX(ssl));
  if (OCSP_basic_verify(basic, SSL_get_peer_cert_chain(ssl), store, 0) != 1)
    goto done;
  if ((id = OCSP_cert_to_id(NULL, leaf, issuer)) == NULL)
    goto done;
  int status = -1, reason = 0;
  ASN1_GENERALIZEDTIME *revoked = NULL, *this_update = NULL, *next_update = NULL;
  ok = OCSP_resp_find_status(basic, id, &status, &reason, &revoked, &this_update, &next_update) ==
           1 &&
       status == V_OCSP_CERTSTATUS_GOOD &&
       OCSP_check_validity(this_update, next_update, 300, -1) == 1;
done:
  OCSP_CERTID_free(id);
  OCSP_BASICRESP_free(basic);
  OCSP_RESPONSE_free(resp);
  ERR_clear_error();
  return ok;
}

/* Client: 1 accepts; 0 fails the handshake with bad_certificate_status_response (113). */
static int ocsp_client_cb(SSL *ssl, void *arg) {
  const weft__hooks *h = arg;
  if (!h->require_ocsp || ocsp_valid(ssl))
    return 1;
  weft__tls_conn *conn = conn_of(ssl);
  if (conn != NULL)
    conn->hook_refused = WEFT__HOOK_OCSP;
  return 0;
}

/* --- Installing --------------------------------------------------------------------------- */

int weft__hooks_install(SSL_CTX *ctx, weft_tls_role role, weft__hooks *h, const weft__ocsp *staple,
                        weft__reason_buf *err) {
  if (!CRYPTO_THREAD_run_once(&index_once, index_init) || hooks_ex_index < 0 ||
      SSL_CTX_set_ex_data(ctx, hooks_ex_index, h) != 1) {
    ERR_clear_error();
    weft__reason_set(err, WEFT_ETLS, "cannot attach the TLS hooks to the SSL_CTX");
    return WEFT_ETLS;
  }
  if (h->keylog != NULL || h->keylog_file != NULL)
    SSL_CTX_set_keylog_callback(ctx, keylog_cb);
  if (h->verify != NULL || h->pin_count > 0)
    SSL_CTX_set_cert_verify_callback(ctx, cert_verify_cb, h);
  if (role == WEFT_TLS_SERVER && staple != NULL && staple->len > 0) {
    SSL_CTX_set_tlsext_status_cb(ctx, ocsp_server_cb);
    SSL_CTX_set_tlsext_status_arg(ctx, (void *)staple);
  }
  if (role == WEFT_TLS_CLIENT && h->require_ocsp) {
    SSL_CTX_set_tlsext_status_type(ctx, TLSEXT_STATUSTYPE_ocsp);
    SSL_CTX_set_tlsext_status_cb(ctx, ocsp_client_cb);
    SSL_CTX_set_tlsext_status_arg(ctx, h);
  }
  return 0;
}
