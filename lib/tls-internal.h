/* Private: what the transport code asks of the TLS code, and nothing more. The TLS files
 * (tls_options.c, tls_keys.c, negotiation.c) build SSL_CTXs from options, create SSL objects,
 * run the ALPN/NPN callbacks, and classify TLS failures into reasons. */
#ifndef WEFT_TLS_INTERNAL_H
#define WEFT_TLS_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include <weft/tls.h>

#include "error-internal.h"

/* Per-connection TLS state, owned by the transport, attached to its SSL with SSL_set_ex_data
 * (index weft__tls_ex_index()) so the OpenSSL callbacks can find it. */
typedef struct weft__tls_conn {
  weft_cert_options *options; /* referenced by the transport */
  int role;                   /* weft_tls_role */
  int alert_received;         /* last alert received from the peer, -1 if none */
  int alert_sent;             /* last alert sent to the peer, -1 if none */
  int no_overlap;             /* selection found no protocol in common */
  int npn_selected_by_client_fallback; /* NPN client had to send a protocol without overlap */
  int handshake_done;
  int renegotiation_attempt;  /* a renegotiation (client hello after the first) was seen */
  const char *server_name;    /* client: name to verify (borrowed from the transport) */
  int cert_requested;         /* client: the server sent a CertificateRequest (set by the TLS
                                 code's info callback; tells "server wanted our certificate"
                                 from other handshake_failure alerts) */
  const struct sockaddr *peer; /* the peer's address (borrowed from the transport, set before
                                  weft__tls_new_ssl; may be NULL). Clients: its IP is the
                                  identity checked when there is no server name, and its port
                                  is part of the session cache key */
  int session_key_set;        /* client: set by weft__tls_new_ssl when the connection checks an
                                 identity (verification and identity checks on), so that its
                                 session may be cached and offered under SESSION_KEY */
  uint8_t session_key[32];    /* client: the session cache key, see weft__sessions_client_key */
} weft__tls_conn;

/* The SSL ex_data index for weft__tls_conn (created once, thread-safe). -1 on failure. */
int weft__tls_ex_index(void);

/* Builds (once, then cached) and returns the options' SSL_CTX for ROLE, freezing the options.
 * Borrowed pointer, valid while the options live. Errors as weft_cert_options_prepare. */
int weft__tls_ctx(weft_cert_options *options, weft_tls_role role, SSL_CTX **out);

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
 * error when the context cannot be built); the message goes into ERR. */
int weft__tls_new_ssl(weft_cert_options *options, weft_tls_role role, const char *server_name,
                      weft__tls_conn *conn, SSL **out, weft__reason_buf *err);

/* The options' own server name (weft_cert_options_set_server_name), or NULL. Borrowed. A
 * connector computes the name to pass to weft__tls_new_ssl as: its own name, else this, else
 * the host it connects to. */
const char *weft__tls_options_server_name(const weft_cert_options *options);

/* Handshake and close time-outs of the options, in seconds. */
double weft__tls_handshake_timeout(const weft_cert_options *options);
double weft__tls_close_timeout(const weft_cert_options *options);

/* After a successful handshake: the negotiated protocol and the mechanism that produced it,
 * following weft's rules (ALPN result first; NPN only when a protocol in common was chosen).
 * *PROTO points into the SSL's memory (valid while the SSL lives) or is NULL. */
void weft__tls_negotiated(SSL *ssl, const weft__tls_conn *conn, const uint8_t **proto,
                          size_t *len, weft_negotiation_mechanism *mechanism);

/* After a successful handshake, before the connection is handed to the application: 1 if the
 * negotiation result breaks the options' policy and the connection must be refused, with the
 * reason (WEFT_ENOPROTOCOL) in OUT and CONN->handshake_done reset (the handshake did not
 * succeed in weft's terms); 0 otherwise. Today: a server whose NPN client selected a protocol
 * the server did not advertise, under WEFT_NO_OVERLAP_FAIL (NPN gives the server no say
 * during the handshake: the client's choice arrives in its last flight). */
int weft__tls_check_negotiated(SSL *ssl, weft__tls_conn *conn, weft__reason_buf *out);

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

/* --- tls_keys.c: OpenSSL error text and PEM readers, shared with the options' loaders ---- */

/* Writes OpenSSL's reason for the oldest error on this thread's queue (system errors as
 * strerror text) into BUF of SIZE bytes, empties the queue, and returns BUF. */
const char *weft__openssl_reason(char *buf, size_t size);

/* Read a private key (unencrypted PEM; never prompts) / every certificate (leaf first) from BIO.
 * Return 0, or WEFT_EPEM / WEFT_ENOMEM with OpenSSL's reason in WHY; the error queue is left
 * empty. *OUT is the caller's (EVP_PKEY_free / sk_X509_pop_free(.., X509_free)). */
int weft__pem_read_key(BIO *bio, EVP_PKEY **out, char *why, size_t why_size);
int weft__pem_read_certs(BIO *bio, STACK_OF(X509) **out, char *why, size_t why_size);

/* --- negotiation.c: pure functions, fuzzable ------------------------------------------ */

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

/* --- negotiation.c: the OpenSSL side ------------------------------------------------------ */

/* The next-protocol part of the options, read by the ALPN/NPN callbacks. Lives inside the
 * options, so it outlives every SSL_CTX built from them. */
typedef struct weft__nego_config {
  uint8_t *wire; /* the ordered list in wire form, NULL when empty */
  size_t wire_len;
  unsigned mechanisms; /* WEFT_MECH_* allowed by the options (a subset of the build's) */
  int no_overlap_policy; /* weft_no_overlap_policy */
  weft_protocol_selector selector; /* servers: per-connection ALPN choice, or NULL */
  void *selector_arg;
} weft__nego_config;

/* Installs ALPN and NPN on a freshly built CTX for ROLE according to CFG (nothing when the list
 * is empty). Uses the CTX's app data (SSL_CTX_set_app_data) to find CFG again. Returns 0, or
 * WEFT_ETLS / WEFT_ENOMEM with a sentence in ERR. */
int weft__nego_install(SSL_CTX *ctx, weft_tls_role role, const weft__nego_config *cfg,
                       weft__reason_buf *err);

/* --- tls_session.c: session resumption --------------------------------------------------- */

/* A ticket key in nginx's 80-byte file layout: name, HMAC-SHA256 secret, AES-256-CBC key. */
#define WEFT__TICKET_KEY_LEN WEFT_TICKET_KEY_SIZE
#define WEFT__TICKET_KEY_NAME_LEN 16
#define WEFT__TICKET_KEY_SECRET_LEN 32

typedef struct weft__ticket_key {
  uint8_t name[WEFT__TICKET_KEY_NAME_LEN];
  uint8_t hmac[WEFT__TICKET_KEY_SECRET_LEN];
  uint8_t aes[WEFT__TICKET_KEY_SECRET_LEN];
  double created; /* monotonic seconds (automatic keys only) */
} weft__ticket_key;

/* One session of a client cache. The key is a SHA-256 digest (weft__sessions_client_key; fixed
 * size: the whole table is allocated with the client SSL_CTX, so storing a session never
 * allocates and never fails). */
typedef struct weft__session_slot {
  uint8_t key[32];
  SSL_SESSION *session; /* one reference, or NULL for a free slot */
  uint64_t used;        /* when last stored or offered: the smallest is evicted first */
} weft__session_slot;

/* The resumption state of one options object: the server's ticket keys and the client's
 * session cache. Lives inside the options, so it outlives both SSL_CTXs; the SSL_CTXs find it
 * through their ex_data. LOCK guards what changes once the options are frozen (automatic key
 * rotation, the client cache): reactors in several threads may share the options. The
 * configuration fields are written only before the freeze. */
typedef struct weft__sessions {
  pthread_mutex_t lock;
  /* servers */
  weft__ticket_key *keys;         /* keys the user gave, in order: [0] encrypts */
  size_t key_count;
  weft__ticket_key auto_keys[2];  /* without user keys: [0] encrypts, [1] the previous one */
  size_t auto_count;
  double key_lifetime;            /* seconds an automatic key encrypts */
  /* clients */
  int reuse;                      /* keep sessions and offer them again */
  weft__session_slot *slots;      /* WEFT__SESSION_CACHE_MAX, made with the client SSL_CTX */
  uint64_t clock;                 /* counts stores and offers, for the slots' USED */
  uint64_t stored;                /* sessions stored so far (for tests) */
} weft__sessions;

/* Default lifetime of an automatic ticket key, and the client cache's size. */
#define WEFT__TICKET_KEY_LIFETIME 7200.0
#define WEFT__SESSION_CACHE_MAX 100

/* Initialises / frees S (key material is cleansed, cached sessions freed). Init returns 0 or
 * WEFT_ENOMEM. */
int weft__sessions_init(weft__sessions *s);
void weft__sessions_cleanup(weft__sessions *s);

/* Appends an 80-byte key (before the freeze). Returns 0, or WEFT_EINVAL (a key with the same
 * name is already there) / WEFT_ENOMEM with a sentence in ERR. */
int weft__sessions_add_ticket_key(weft__sessions *s, const uint8_t *key, weft__reason_buf *err);

/* Installs resumption on a freshly built CTX: for a server with TICKETS, the ticket key
 * callback; for a client that reuses sessions, the client cache (its table is allocated here;
 * SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE and a new-session callback).
 * Returns 0, or WEFT_ETLS / WEFT_ENOMEM with a sentence in ERR. */
int weft__sessions_install(SSL_CTX *ctx, weft_tls_role role, weft__sessions *s, int tickets,
                           weft__reason_buf *err);

/* Identity kinds for weft__sessions_client_key. */
#define WEFT__IDENTITY_DNS 1 /* a host name matched against DNS subjectAltNames */
#define WEFT__IDENTITY_IP 2  /* an IP address matched against IP subjectAltNames */

/* Client: the session cache key of a connection that checks the identity KIND / IDENTITY
 * (a host name, or an IP address in inet_ntop's canonical form) of the server at PORT, with
 * options whose client policy digest is POLICY (trust anchors, client certificate, versions,
 * ciphers, protocol list: what the handshake under these options accepts). SHA-256 of all of
 * it, so a session is offered only to a connection that checks the same identity, of the same
 * kind, at the same port, under the same policy. Returns 0, or -1 (no caching). */
int weft__sessions_client_key(const uint8_t policy[32], int kind, const char *identity,
                              unsigned port, uint8_t key[32]);

/* Client: SSL_set_session with the session cached under CONN->session_key, if CONN has one
 * (only connections that check an identity do). The session stays cached until a newer one
 * for the same key replaces it (at TLS 1.3, the tickets the server sends on that connection).
 * Expired and non-resumable sessions are dropped. Never fails: no session means a full
 * handshake. */
void weft__sessions_client_offer(weft__sessions *s, SSL *ssl, const weft__tls_conn *conn);

/* Client, from the info callback at the end of a handshake: a resumed TLS 1.2 session whose
 * ticket the server renewed is stored again (OpenSSL calls no new-session callback then). */
void weft__sessions_client_handshake_done(SSL *ssl, const weft__tls_conn *conn);

/* How many sessions the client cache of S / of OPTIONS holds, and (STORED, may be NULL) how
 * many new sessions it has stored so far (for tests). */
size_t weft__sessions_cached(weft__sessions *s, uint64_t *stored);
size_t weft__tls_cached_sessions(weft_cert_options *options, uint64_t *stored);

#endif
