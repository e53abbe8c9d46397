/* Private: the per-connection TLS state and where the OpenSSL callbacks find it. The bottom of
 * the TLS files: negotiation.c, tls_session.c and tls_ssl.c read and write this state from
 * their callbacks; it calls nothing else of weft's. Defined in tls_conn.c. */
#ifndef WEFT_TLS_CONN_INTERNAL_H
#define WEFT_TLS_CONN_INTERNAL_H

#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include <weft/tls.h>

/* Per-connection TLS state, owned by the transport, attached to its SSL with SSL_set_ex_data
 * (index weft__tls_ex_index()) so the OpenSSL callbacks can find it. */
typedef struct weft__tls_conn {
  weft_cert_options *options;          /* referenced by the transport */
  int role;                            /* weft_tls_role */
  int alert_received;                  /* last alert received from the peer, -1 if none */
  int alert_sent;                      /* last alert sent to the peer, -1 if none */
  int no_overlap;                      /* selection found no protocol in common */
  int npn_selected_by_client_fallback; /* NPN client had to send a protocol without overlap */
  int handshake_done;
  int renegotiation_attempt;   /* a renegotiation (client hello after the first) was seen */
  const char *server_name;     /* client: name to verify (borrowed from the transport) */
  int cert_requested;          /* client: the server sent a CertificateRequest (set by the TLS
                                 code's info callback; tells "server wanted our certificate"
                                 from other handshake_failure alerts) */
  const struct sockaddr *peer; /* the peer's address (borrowed from the transport, set before
                                  weft__tls_new_ssl; may be NULL). Clients: its IP is the
                                  identity checked when there is no server name, and its port
                                  is part of the session cache key */
  int session_key_set;         /* client: set by weft__tls_new_ssl when the connection checks an
                                 identity (verification and identity checks on), so that its
                                 session may be cached and offered under SESSION_KEY */
  uint8_t session_key[32];     /* client: the session cache key, see weft__sessions_client_key */
  int hook_refused;            /* client verification hooks (tls_hooks.c) refused the peer:
                                 WEFT__HOOK_* saying which, 0 if none */
} weft__tls_conn;

/* Which verification hook refused the peer (weft__tls_conn.hook_refused). */
#define WEFT__HOOK_PIN 1      /* the SPKI pins: the key matches none */
#define WEFT__HOOK_CALLBACK 2 /* the user's verify callback */
#define WEFT__HOOK_OCSP 3     /* no valid stapled OCSP response where one is required */

/* The SSL ex_data index for weft__tls_conn (created once, thread-safe). -1 on failure. */
int weft__tls_ex_index(void);

/* The connection of SSL: the owner of its BIO when that is weft's socket BIO (a TLS socket
 * transport, see tls_bio-internal.h), else what ex_data index weft__tls_ex_index() holds (a
 * STARTTLS transport). NULL if neither. */
weft__tls_conn *weft__tls_conn_of(const SSL *ssl);

#endif
