/* tls_session.c: TLS session resumption, as a feature of the certificate options.
 *
 * Servers: stateless session tickets sealed with weft's own keys (AES-256-CBC and HMAC-SHA256
 * through SSL_CTX_set_tlsext_ticket_key_evp_cb, nginx's scheme and file layout), so that
 * several servers given the same keys resume each other's sessions. Without user keys, weft
 * makes random keys in process and rotates them: each encrypts for one lifetime, then only
 * decrypts for one more.
 *
 * Clients: a small cache of sessions per options object, keyed by the identity the connection
 * verified (a host name, or an IP address), its kind, the port and the options' policy,
 * filled from the new-session callback because TLS 1.3 tickets arrive after the handshake,
 * and offered to the next connection with the same key. A connection that checks no identity
 * (verification or identity checks turned off) neither stores nor is offered sessions: a
 * session may only resume where a full handshake would have verified the same identity.
 *
 * Why the cache holds the very SSL_SESSION objects the connections use (not copies): OpenSSL
 * marks a connection's session not resumable when the connection ends badly (a fatal alert,
 * a truncated stream, an SSL freed without close_notify having been sent), and that is the
 * right policy to keep; the cache checks SSL_SESSION_is_resumable before offering. weft's
 * clean close paths always send close_notify, so they keep sessions resumable. */
#include "config.h"

#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "alloc-internal.h"
#include "tls_session-internal.h"

/* "name" 255 bytes at most, or an IPv6 literal; "|", a port; NUL. */
#define KEY_MAX 272

/* --- Where the callbacks find the state --------------------------------------------------- */

static CRYPTO_ONCE ctx_index_once = CRYPTO_ONCE_STATIC_INIT;
static int ctx_index = -1;

static void ctx_index_init(void) {
  ctx_index = SSL_CTX_get_ex_new_index(0, "weft__sessions", NULL, NULL, NULL);
}

static int sessions_index(void) {
  if (!CRYPTO_THREAD_run_once(&ctx_index_once, ctx_index_init))
    return -1;
  return ctx_index;
}

static weft__sessions *sessions_of(const SSL *ssl) {
  int index = sessions_index();
  return index < 0 ? NULL : SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), index);
}

static weft__tls_conn *conn_of(const SSL *ssl) {
  return weft__tls_conn_of(ssl);
}

static double monotonic_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- Life --------------------------------------------------------------------------------- */

int weft__sessions_init(weft__sessions *s) {
  memset(s, 0, sizeof *s);
  if (pthread_mutex_init(&s->lock, NULL) != 0)
    return WEFT_ENOMEM;
  s->key_lifetime = WEFT__TICKET_KEY_LIFETIME;
  s->reuse = 1;
  return 0;
}

void weft__sessions_cleanup(weft__sessions *s) {
  if (s->keys != NULL) {
    OPENSSL_cleanse(s->keys, s->key_count * sizeof *s->keys);
    weft__free(s->keys);
  }
  OPENSSL_cleanse(s->auto_keys, sizeof s->auto_keys);
  for (size_t i = 0; s->slots != NULL && i < WEFT__SESSION_CACHE_MAX; i++)
    SSL_SESSION_free(s->slots[i].session);
  weft__free(s->slots);
  pthread_mutex_destroy(&s->lock);
}

int weft__sessions_add_ticket_key(weft__sessions *s, const uint8_t *key, weft__reason_buf *err) {
  for (size_t i = 0; i < s->key_count; i++) {
    if (memcmp(s->keys[i].name, key, WEFT__TICKET_KEY_NAME_LEN) == 0) {
      weft__reason_set(err, WEFT_EINVAL,
                       "ticket key #%zu has the same name (its first 16 bytes) as this one: "
                       "tickets could not tell them apart",
                       i + 1);
      return WEFT_EINVAL;
    }
  }
  /* A new array rather than realloc, so that the old copy of the keys can be cleansed. */
  weft__ticket_key *keys = weft__calloc(s->key_count + 1, sizeof *keys);
  if (keys == NULL) {
    weft__reason_set(err, WEFT_ENOMEM, "out of memory");
    return WEFT_ENOMEM;
  }
  if (s->key_count > 0) {
    memcpy(keys, s->keys, s->key_count * sizeof *keys);
    OPENSSL_cleanse(s->keys, s->key_count * sizeof *keys);
    weft__free(s->keys);
  }
  weft__ticket_key *k = &keys[s->key_count];
  memcpy(k->name, key, WEFT__TICKET_KEY_NAME_LEN);
  memcpy(k->hmac, key + WEFT__TICKET_KEY_NAME_LEN, WEFT__TICKET_KEY_SECRET_LEN);
  memcpy(k->aes, key + WEFT__TICKET_KEY_NAME_LEN + WEFT__TICKET_KEY_SECRET_LEN,
         WEFT__TICKET_KEY_SECRET_LEN);
  s->keys = keys;
  s->key_count++;
  return 0;
}

/* --- Servers: ticket keys ----------------------------------------------------------------- */

/* Automatic keys, under the lock: a new encryption key once the current one has encrypted for a
 * lifetime; the old one decrypts until two lifetimes after its creation. After a long idle
 * period both may have gone. Returns 0, or -1 if no random key could be made. */
static int rotate_locked(weft__sessions *s, double now) {
  double life = s->key_lifetime;
  if (s->auto_count == 2 && now >= s->auto_keys[1].created + 2 * life) {
    OPENSSL_cleanse(&s->auto_keys[1], sizeof s->auto_keys[1]);
    s->auto_count = 1;
  }
  if (s->auto_count >= 1 && now < s->auto_keys[0].created + life)
    return 0;
  weft__ticket_key fresh;
  if (RAND_bytes(fresh.name, sizeof fresh.name) != 1 ||
      RAND_priv_bytes(fresh.hmac, sizeof fresh.hmac) != 1 ||
      RAND_priv_bytes(fresh.aes, sizeof fresh.aes) != 1) {
    OPENSSL_cleanse(&fresh, sizeof fresh);
    ERR_clear_error();
    return -1;
  }
  fresh.created = now;
  if (s->auto_count >= 1 && now < s->auto_keys[0].created + 2 * life) {
    s->auto_keys[1] = s->auto_keys[0];
    s->auto_count = 2;
  } else {
    OPENSSL_cleanse(&s->auto_keys[1], sizeof s->auto_keys[1]);
    s->auto_count = 1;
  }
  s->auto_keys[0] = fresh;
  OPENSSL_cleanse(&fresh, sizeof fresh);
  return 0;
}

/* Copies the key that encrypts (NAME NULL) or the one named NAME into *OUT. Returns its index
 * (0: the encryption key), or -1 if there is none. */
static int find_key(weft__sessions *s, const uint8_t *name, weft__ticket_key *out) {
  int found = -1;
  pthread_mutex_lock(&s->lock);
  const weft__ticket_key *keys = s->keys;
  size_t count = s->key_count;
  if (count == 0) {
    double now = monotonic_now();
    if (rotate_locked(s, now) == 0) {
      keys = s->auto_keys;
      count = s->auto_count;
    }
  }
  for (size_t i = 0; i < count && found < 0; i++) {
    if (name == NULL || memcmp(keys[i].name, name, WEFT__TICKET_KEY_NAME_LEN) == 0) {
      *out = keys[i];
      found = (int)i;
    }
  }
  pthread_mutex_unlock(&s->lock);
  return found;
}

static int set_hmac_key(EVP_MAC_CTX *hctx, uint8_t *secret) {
  char digest[] = "SHA256";
  OSSL_PARAM params[3];
  params[0] =
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, secret, WEFT__TICKET_KEY_SECRET_LEN);
  params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
  params[2] = OSSL_PARAM_construct_end();
  return EVP_MAC_CTX_set_params(hctx, params) == 1;
}

/* OpenSSL's contract: encrypting, fill in the key name and IV and return 1 (0: send no
 * ticket); decrypting, return 1 (key found), 2 (found, but renew the ticket under the current
 * key) or 0 (unknown key: full handshake). Internal failures never fail the handshake: they
 * only cost the resumption.
 *
 * At TLS 1.3 every resumption renews: OpenSSL sends new tickets after a resumed handshake only
 * when told to renew, and clients should use a ticket once (RFC 8446, C.4). */
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc) {
  weft__sessions *s = sessions_of(ssl);
  if (s == NULL)
    return 0;
  weft__ticket_key k;
  int rc = 0;
  if (enc) {
    const EVP_CIPHER *aes = EVP_aes_256_cbc();
    if (find_key(s, NULL, &k) == 0 && RAND_bytes(iv, EVP_CIPHER_get_iv_length(aes)) == 1 &&
        EVP_EncryptInit_ex(cctx, aes, NULL, k.aes, iv) == 1 && set_hmac_key(hctx, k.hmac)) {
      memcpy(key_name, k.name, WEFT__TICKET_KEY_NAME_LEN);
      rc = 1;
    }
  } else {
    int index = find_key(s, key_name, &k);
    if (index >= 0 && set_hmac_key(hctx, k.hmac) &&
        EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1)
      rc = index == 0 && SSL_version(ssl) < TLS1_3_VERSION ? 1 : 2;
  }
  OPENSSL_cleanse(&k, sizeof k);
  if (rc == 0)
    ERR_clear_error();
  return rc;
}

/* --- Clients: the session cache ----------------------------------------------------------- */

/* SHA-256 over a version tag, POLICY, the identity's kind, the identity and the port. The
 * identity is the one the connection verifies (never a fallback it does not check), so a
 * session verified for one name or address is never offered to a connection that checks
 * another: "127.0.0.1" checked as an IP address and "localhost" checked as a name are two
 * keys, and a connection that checks no identity has no key at all. */
int weft__sessions_client_key(const uint8_t policy[32], int kind, const char *identity,
                              unsigned port, uint8_t key[32]) {
  if (identity == NULL || (kind != WEFT__IDENTITY_DNS && kind != WEFT__IDENTITY_IP))
    return -1;
  char text[KEY_MAX + 16];
  int n = snprintf(text, sizeof text, "%s:%s|%u", kind == WEFT__IDENTITY_DNS ? "dns" : "ip",
                   identity, port);
  if (n <= 0 || (size_t)n >= sizeof text)
    return -1;
  static const char tag[] = "weft client session key v2";
  unsigned int len = 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
           EVP_DigestUpdate(md, tag, sizeof tag) == 1 && EVP_DigestUpdate(md, policy, 32) == 1 &&
           EVP_DigestUpdate(md, text, (size_t)n + 1) == 1 &&
           EVP_DigestFinal_ex(md, key, &len) == 1 && len == 32;
  EVP_MD_CTX_free(md);
  if (!ok) {
    ERR_clear_error();
    return -1;
  }
  return 0;
}

static int usable(SSL_SESSION *session) {
  if (!SSL_SESSION_is_resumable(session))
    return 0;
  long t = SSL_SESSION_get_time(session);
  long timeout = SSL_SESSION_get_timeout(session);
  return (long)time(NULL) < t + timeout;
}

/* The slot holding KEY, or NULL (under the lock). */
static weft__session_slot *find_slot_locked(weft__sessions *s, const uint8_t key[32]) {
  for (size_t i = 0; i < WEFT__SESSION_CACHE_MAX; i++) {
    if (s->slots[i].session != NULL && memcmp(s->slots[i].key, key, 32) == 0)
      return &s->slots[i];
  }
  return NULL;
}

/* Stores SESSION (the caller's reference passes to the cache) for KEY, replacing the session
 * stored for KEY before, else taking a free slot, else the least recently used one. */
static void store(weft__sessions *s, const uint8_t key[32], SSL_SESSION *session) {
  pthread_mutex_lock(&s->lock);
  weft__session_slot *slot = find_slot_locked(s, key);
  if (slot == NULL) { /* a free slot, else the least recently used one */
    slot = &s->slots[0];
    for (size_t i = 0; i < WEFT__SESSION_CACHE_MAX; i++) {
      weft__session_slot *candidate = &s->slots[i];
      if (candidate->session == NULL) {
        slot = candidate;
        break;
      }
      if (candidate->used < slot->used)
        slot = candidate;
    }
  }
  SSL_SESSION *old = slot->session;
  memcpy(slot->key, key, 32);
  slot->session = session;
  slot->used = ++s->clock;
  if (old != session)
    s->stored++;
  pthread_mutex_unlock(&s->lock);
  SSL_SESSION_free(old); /* outside the lock: it may take OpenSSL's own locks */
}

/* OpenSSL hands over a reference when this returns 1. */
static int new_session_cb(SSL *ssl, SSL_SESSION *session) {
  weft__sessions *s = sessions_of(ssl);
  const weft__tls_conn *conn = conn_of(ssl);
  if (s == NULL || s->slots == NULL || conn == NULL || !conn->session_key_set ||
      !SSL_SESSION_is_resumable(session))
    return 0;
  store(s, conn->session_key, session);
  return 1;
}

void weft__sessions_client_offer(weft__sessions *s, SSL *ssl, const weft__tls_conn *conn) {
  if (s->slots == NULL || conn == NULL || !conn->session_key_set)
    return;
  SSL_SESSION *session = NULL, *stale = NULL;
  pthread_mutex_lock(&s->lock);
  weft__session_slot *slot = find_slot_locked(s, conn->session_key);
  if (slot != NULL && !usable(slot->session)) {
    stale = slot->session;
    slot->session = NULL;
  } else if (slot != NULL) {
    /* Kept, also at TLS 1.3: the tickets the server sends on this connection replace it, so
     * it is offered again only by a connection that starts before they arrive, or if the
     * server sends none. */
    session = slot->session;
    SSL_SESSION_up_ref(session);
    slot->used = ++s->clock;
  }
  pthread_mutex_unlock(&s->lock);
  SSL_SESSION_free(stale);
  if (session != NULL) {
    if (SSL_set_session(ssl, session) != 1)
      ERR_clear_error();
    SSL_SESSION_free(session);
  }
}

void weft__sessions_client_handshake_done(SSL *ssl, const weft__tls_conn *conn) {
  if (SSL_is_server(ssl) || !SSL_session_reused(ssl) || SSL_version(ssl) >= TLS1_3_VERSION)
    return;
  weft__sessions *s = sessions_of(ssl);
  if (s == NULL || s->slots == NULL || conn == NULL || !conn->session_key_set)
    return;
  SSL_SESSION *session = SSL_get1_session(ssl);
  if (session == NULL)
    return;
  if (SSL_SESSION_is_resumable(session))
    store(s, conn->session_key, session);
  else
    SSL_SESSION_free(session);
}

size_t weft__sessions_cached(weft__sessions *s, uint64_t *stored) {
  size_t n = 0;
  pthread_mutex_lock(&s->lock);
  if (stored != NULL)
    *stored = s->stored;
  for (size_t i = 0; s->slots != NULL && i < WEFT__SESSION_CACHE_MAX; i++)
    n += s->slots[i].session != NULL;
  pthread_mutex_unlock(&s->lock);
  return n;
}

/* --- Installing on a context -------------------------------------------------------------- */

int weft__sessions_install(SSL_CTX *ctx, weft_tls_role role, weft__sessions *s, int tickets,
                           weft__reason_buf *err) {
  int index = sessions_index();
  if (index < 0 || SSL_CTX_set_ex_data(ctx, index, s) != 1) {
    ERR_clear_error();
    weft__reason_set(err, WEFT_ETLS, "cannot attach the session state to the SSL_CTX");
    return WEFT_ETLS;
  }
  if (role == WEFT_TLS_SERVER) {
    if (tickets && SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb) != 1) {
      ERR_clear_error();
      weft__reason_set(err, WEFT_ETLS, "cannot install the session ticket key callback");
      return WEFT_ETLS;
    }
    return 0;
  }
  if (s->reuse) {
    if (s->slots == NULL &&
        (s->slots = weft__calloc(WEFT__SESSION_CACHE_MAX, sizeof *s->slots)) == NULL) {
      weft__reason_set(err, WEFT_ENOMEM, "out of memory for the client session cache");
      return WEFT_ENOMEM;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  }
  return 0;
}
