/* Private: OpenSSL error text and the PEM readers the options' loaders share. Defined in
 * tls_keys.c (which also implements the public key and certificate functions of weft/tls.h). */
#ifndef WEFT_TLS_KEYS_INTERNAL_H
#define WEFT_TLS_KEYS_INTERNAL_H

#include <stddef.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

/* Writes OpenSSL's reason for the oldest error on this thread's queue (system errors as
 * strerror text) into BUF of SIZE bytes, empties the queue, and returns BUF. */
const char *weft__openssl_reason(char *buf, size_t size);

/* Read a private key (unencrypted PEM; never prompts) / every certificate (leaf first) from BIO.
 * Return 0, or WEFT_EPEM / WEFT_ENOMEM with OpenSSL's reason in WHY; the error queue is left
 * empty. *OUT is the caller's (EVP_PKEY_free / sk_X509_pop_free(.., X509_free)). */
int weft__pem_read_key(BIO *bio, EVP_PKEY **out, char *why, size_t why_size);
int weft__pem_read_certs(BIO *bio, STACK_OF(X509) * *out, char *why, size_t why_size);

#endif
