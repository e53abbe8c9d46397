/* tests/tlsutil.h: certificates and options for the TLS suites, all generated in memory.
 *
 * tu_pki_init makes a small PKI: a CA, a server certificate signed by it (CN "server",
 * subjectAltName DNS localhost, a.example, b.example and IP 127.0.0.1, ::1) and a client
 * certificate signed by it (CN "client"). A second, unrelated CA ("other CA") signs nothing the
 * peers trust: use it to make untrusted certificates.
 *
 * Keys are EVP_PKEY *, certificates X509 * (as in the weft API). Everything in a tu_pki is
 * owned by it and freed by tu_pki_free. Options returned by the tu_*_options functions are new
 * references owned by the caller (weft_cert_options_unref).
 */
#ifndef WEFT_TLSUTIL_H
#define WEFT_TLSUTIL_H

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <weft/weft.h>

typedef struct tu_pki {
  EVP_PKEY *ca_key;
  X509 *ca_cert;
  EVP_PKEY *other_ca_key;
  X509 *other_ca_cert;
  EVP_PKEY *server_key;
  X509 *server_cert;
  EVP_PKEY *client_key;
  X509 *client_cert;
} tu_pki;

/* Generates the PKI (EC P-256 keys); fails the test on error. */
void tu_pki_init(tu_pki *pki);
void tu_pki_free(tu_pki *pki);

/* A certificate for KEY, signed by ISSUER_KEY/ISSUER_CERT (both NULL: self-signed), with the
 * given CN, one DNS name (may be NULL), one IP literal (may be NULL) and validity window in
 * seconds relative to now. Fails the test on error; the caller frees it (X509_free). */
X509 *tu_make_cert(EVP_PKEY *key, EVP_PKEY *issuer_key, X509 *issuer_cert, const char *cn,
                   const char *dns, const char *ip, long not_before, long not_after);

/* A new EC P-256 key; the caller frees it (EVP_PKEY_free). */
EVP_PKEY *tu_make_key(void);

/* Server options with the PKI's server key and certificate. Client certificates are not
 * requested. */
weft_cert_options *tu_server_options(const tu_pki *pki);

/* Server options that require a client certificate signed by the PKI's CA. */
weft_cert_options *tu_server_options_mutual(const tu_pki *pki);

/* Client options that trust the PKI's CA (verification on), with no client certificate. */
weft_cert_options *tu_client_options(const tu_pki *pki);

/* Client options that trust the PKI's CA and present the PKI's client certificate. */
weft_cert_options *tu_client_options_mutual(const tu_pki *pki);

/* Fails the test (with weft_cert_options_last_error) when RC is not 0. */
#define tu_check_opt(opts, rc) tu_check_opt_at(__FILE__, __LINE__, (opts), (rc))
void tu_check_opt_at(const char *file, int line, weft_cert_options *opts, int rc);

/* Starts weft_connect_ssl to 127.0.0.1:PORT with OPTIONS and SERVER_NAME (see tu_connect);
 * fails the test on error. */
weft_connector *tu_connect_ssl_local(weft_reactor *reactor, tu_factory *f, int port,
                                     weft_cert_options *options, const char *server_name);

/* Listens with weft_listen_ssl on 127.0.0.1 port 0 with OPTIONS; stores the port in *PORT. */
weft_listener *tu_listen_ssl_local(weft_reactor *reactor, tu_factory *f, weft_cert_options *options,
                                   int *port);

/* Path of a binary if it is on PATH (e.g. "openssl"), else NULL. Static buffer. */
const char *tu_find_program(const char *name);

/* Writes PEM of a key or certificate to a new temporary file and returns its path (malloc'd;
 * the caller unlinks and frees it). For driving openssl s_client / s_server. */
char *tu_write_key_pem(EVP_PKEY *key);
char *tu_write_cert_pem(X509 *cert);

/* --- Added for check_tls.c (usable by any suite) ----------------------------------------- */

/* New options holding KEY (EVP_PKEY *) and CERT (X509 *), nothing else; fails the test on
 * error. The caller unrefs them. */
weft_cert_options *tu_options_with_identity(EVP_PKEY *key, X509 *cert);

/* Writes LEN bytes of DATA to a new temporary file (mode 0600) and returns its path (malloc'd);
 * fails the test on error. */
char *tu_write_temp_file(const void *data, size_t len);

/* Unlinks PATH and frees it (as returned by tu_write_*). NULL is ignored. */
void tu_remove_file(char *path);

#endif
