/* Private: the socket BIO under a TLS transport's SSL, with write coalescing. Defined in
 * tls_bio.c, a leaf: it calls nothing else of weft's but the allocator.
 *
 * OpenSSL writes one record per BIO write: with its own socket BIO, a bulk transfer through
 * bufferevent_openssl makes one write(2) per 16 KiB record. This BIO reads and writes the
 * socket like that one, but while staging is on (from the end of the handshake, for the AEAD
 * suites) it keeps the records OpenSSL hands it, up to seven full records, and writes them with
 * one send(2) when the transport flushes it (at the end of the bufferevent's write pass), when
 * OpenSSL flushes it (handshake messages, alerts), or when the next record would not fit. When
 * the staged bytes cannot be written because the socket is full, the next record is refused
 * with a retry (SSL_write says WANT_WRITE, the bufferevent keeps the plaintext and waits for
 * the socket): back-pressure reaches the transport's output buffer as before. What the
 * transport reports pending is the plaintext written minus that of the application records the
 * kernel has whole (weft__tls_bio_sent): exact, since an AEAD record's overhead is fixed. */
#ifndef WEFT_TLS_BIO_INTERNAL_H
#define WEFT_TLS_BIO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>

/* A new BIO on FD (not owned: BIO_get_fd reports it, nothing closes it). NULL when out of
 * memory. Staging starts off: every write goes to the socket at once, as with BIO_s_socket. */
BIO *weft__tls_bio_new(int fd);

/* 1 if BIO is one of ours. */
int weft__tls_bio_is_ours(BIO *bio);

/* The pointer the BIO carries for its transport: the connection's TLS state, which the OpenSSL
 * callbacks find through the SSL's BIO (weft__tls_conn_of) instead of SSL ex_data, which would
 * cost every connection two more allocations. weft__tls_bio_owner returns NULL for a BIO that
 * is not ours. */
void weft__tls_bio_set_owner(BIO *bio, void *owner);
void *weft__tls_bio_owner(BIO *bio);

/* Starts staging once the handshake is done, if SSL's suite gives every record the same
 * overhead (the AEAD suites; CBC pads): then the plaintext of what is staged is known exactly.
 * Otherwise every write goes to the socket at once, as before. */
void weft__tls_bio_start_staging(BIO *bio, const SSL *ssl);

/* Staging on or off again (on only takes effect after weft__tls_bio_start_staging chose to
 * stage). Turning it off does not write what is staged: the next write (or flush) does,
 * before its own bytes. */
void weft__tls_bio_set_staging(BIO *bio, int on);

/* The bytes staged and not yet written. */
size_t weft__tls_bio_staged(BIO *bio);

/* The plaintext of the application records the kernel has whole since staging started
 * (sent directly, or staged and flushed), in *SENT; returns 1. Returns 0 when the BIO does not
 * count (before the handshake ends, or a suite without a fixed record overhead). A transport's
 * pending output is the plaintext written since then minus this. */
int weft__tls_bio_sent(BIO *bio, uint64_t *sent);

/* Writes what is staged. Returns 1 when nothing is left, 0 when the socket is full (the rest
 * stays staged), -1 on a socket error (errno says which; the staged bytes are kept). */
int weft__tls_bio_flush(BIO *bio);

/* Frees the staging buffer if nothing is staged: the transport calls it once its output is
 * empty, so that an idle connection holds no buffer but a bulk transfer keeps its one. */
void weft__tls_bio_trim(BIO *bio);

/* Drops what is staged (an aborted connection). */
void weft__tls_bio_discard(BIO *bio);

#endif
