/* tls_conn.c: the SSL ex_data index under which each SSL carries its connection's
 * weft__tls_conn, so that the OpenSSL callbacks (negotiation.c, tls_session.c, tls_ssl.c) find
 * the per-connection state. The bottom of the TLS files: it calls nothing of weft's. */
#include "config.h"

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "tls_bio-internal.h"
#include "tls_conn-internal.h"

static CRYPTO_ONCE ex_once = CRYPTO_ONCE_STATIC_INIT;
static int ex_index = -1;

static void ex_index_init(void) {
  ex_index = SSL_get_ex_new_index(0, "weft__tls_conn", NULL, NULL, NULL);
}

int weft__tls_ex_index(void) {
  if (!CRYPTO_THREAD_run_once(&ex_once, ex_index_init))
    return -1;
  return ex_index;
}

weft__tls_conn *weft__tls_conn_of(const SSL *ssl) {
  if (ssl == NULL)
    return NULL;
  weft__tls_conn *conn = weft__tls_bio_owner(SSL_get_rbio(ssl));
  if (conn != NULL)
    return conn;
  int index = weft__tls_ex_index();
  return index < 0 ? NULL : SSL_get_ex_data(ssl, index);
}
