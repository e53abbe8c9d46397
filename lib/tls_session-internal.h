/* Private: TLS session resumption (server ticket keys, the client session cache). Defined in
 * tls_session.c. Uses only the per-connection state of tls_conn-internal.h; the options
 * (tls_options.c) own one weft__sessions each and the per-connection SSL code (tls_ssl.c)
 * offers and stores client sessions through it. */
#ifndef WEFT_TLS_SESSION_INTERNAL_H
#define WEFT_TLS_SESSION_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include <weft/tls.h>

#include "error-internal.h"
#include "tls_conn-internal.h"

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
  weft__ticket_key *keys; /* keys the user gave, in order: [0] encrypts */
  size_t key_count;
  weft__ticket_key auto_keys[2]; /* without user keys: [0] encrypts, [1] the previous one */
  size_t auto_count;
  double key_lifetime; /* seconds an automatic key encrypts */
  /* clients */
  int reuse;                 /* keep sessions and offer them again */
  weft__session_slot *slots; /* WEFT__SESSION_CACHE_MAX, made with the client SSL_CTX */
  uint64_t clock;            /* counts stores and offers, for the slots' USED */
  uint64_t stored;           /* sessions stored so far (for tests) */
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

/* How many sessions the client cache of S holds, and (STORED, may be NULL) how
 * many new sessions it has stored so far (for tests). */
size_t weft__sessions_cached(weft__sessions *s, uint64_t *stored);

#endif
