/* Private: what the transport asks of the TLS code per connection. Defined in tls_ssl.c, the
 * top of the TLS files: the SSL object of one connection (built from the options' SSL_CTX,
 * with the client's identity check, the session offered, and the info callback that records
 * alerts), and the classification of TLS failures into reasons. */
#ifndef WEFT_TLS_SSL_INTERNAL_H
#define WEFT_TLS_SSL_INTERNAL_H

#include <stddef.h>

#include <openssl/ssl.h>

#include <weft/tls.h>

#include "error-internal.h"
#include "tls_conn-internal.h"

/* Creates the SSL object for one connection from the options' context, attaches CONN (which
 * must outlive the SSL) and, for clients, sets SNI (DNS names only) and the identity check:
 * the host name or IP literal SERVER_NAME (NULL: the options' server name; if none either, the
 * IP address of CONN->peer). Clients always check an identity unless the options turn
 * verification or identity checks off; a client with no name and no IP peer address (a Unix
 * socket) is refused with WEFT_EINVAL. Resets CONN's handshake state (role, alerts -1, flags
 * 0) and computes CONN's session cache key; CONN->options, CONN->server_name (which must be
 * SERVER_NAME) and CONN->peer are left as the transport set them. A client SSL gets the
 * session cached under that key, if the options reuse sessions (see tls_session.c). The SSL
 * is in connect or accept state for ROLE. The options must stay referenced while the SSL lives
 * (its callbacks read them). Errors: WEFT_ENOMEM, WEFT_ETLS, WEFT_EINVAL (or the options' own
 * error when the context cannot be built); the message goes into ERR. ATTACH: CONN is stored in
 * the SSL's ex_data, where the callbacks find it (weft__tls_conn_of); 0 when the caller gives
 * the SSL weft's socket BIO owned by CONN (weft__tls_bio_set_owner) before any handshake. */
int weft__tls_new_ssl(weft_cert_options *options, weft_tls_role role, const char *server_name,
                      weft__tls_conn *conn, int attach, SSL **out, weft__reason_buf *err);

/* Classifies why a TLS connection failed or ended into OUT. ERRS holds the OpenSSL error codes
 * libevent collected for the connection (bufferevent_get_openssl_error, oldest first; entries
 * that are not OpenSSL error codes are ignored), SYS_ERRNO the errno seen with the failure
 * (0 if none), EOF_SEEN whether the socket reached end of file. Looks at the SSL's verify
 * result, the alerts in CONN, and whether close_notify was received, and picks the most
 * specific code: WEFT_ECERTVERIFY, WEFT_EHOSTNAME, WEFT_ENOPEERCERT, WEFT_ETLSVERSION,
 * WEFT_ENOPROTOCOL, WEFT_ETLSALERT, WEFT_ETRUNCATED, WEFT_ECONNRESET, WEFT_ETLS, or WEFT_OK for
 * a clean close_notify. */
void weft__tls_classify(SSL *ssl, const weft__tls_conn *conn, const unsigned long *errs,
                        size_t nerrs, int sys_errno, int eof_seen, weft__reason_buf *out);

#endif
