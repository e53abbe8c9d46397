/* tls_options.c: certificate options (the user's configuration) and the two SSL_CTXs built
 * from them (one per role, built once and then frozen). The per-connection SSL and the
 * classification of TLS failures are tls_ssl.c's.
 *
 * Rule: nothing per connection is ever stored on an SSL_CTX. Per-connection state lives in the
 * transport's weft__tls_conn, attached to the SSL as ex_data, and the host name to verify is
 * set on the SSL. So one frozen options object serves any number of connections, hosts and
 * threads. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "alloc-internal.h"
#include "negotiation-internal.h"
#include "tls_hooks-internal.h"
#include "tls_keys-internal.h"
#include "tls_options-internal.h"
#include "tls_session-internal.h"
#include "tls_sni-internal.h"

/* TLS 1.2: forward-secret AEAD only. TLS 1.3 suites are all AEAD and forward secret. */
#define DEFAULT_CIPHERS                                                                            \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"       \
  "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* The session id context of a server is the SHA-256 of its admission policy (see
 * policy_digest), truncated to SSL_MAX_SID_CTX_LENGTH (32, all of it). OpenSSL stores it in
 * every session and ticket it issues and refuses to resume one whose context differs, at TLS
 * 1.2 (session ids and tickets) and 1.3 (PSKs): two listeners that share ticket keys resume
 * each other's sessions only when they would let in the same clients. */
#if SSL_MAX_SID_CTX_LENGTH < 32
#error "weft expects SSL_MAX_SID_CTX_LENGTH >= 32"
#endif

struct weft_cert_options {
  atomic_int refs;
  atomic_int frozen;   /* set once a context was built: setters then fail */
  CRYPTO_RWLOCK *lock; /* guards building ctx[] (reactors in several threads may race) */
  SSL_CTX *ctx[2];     /* indexed by weft_tls_role, built on first use */
  char last_error[WEFT__REASON_MSG_MAX];

  EVP_PKEY *key;
  X509 *cert;
  STACK_OF(X509) * chain; /* intermediates, sent after the leaf */

  int verify;
  int verify_identity; /* clients: check the server's name or IP address (default on) */
  int require_certificate;
  int verify_depth;
  STACK_OF(X509) * cas; /* trust anchors; with ca_dirs, replace the system store */
  char **ca_dirs;
  size_t ca_dir_count;
  char *server_name;

  int min_version;
  int max_version;
  char *cipher_list;  /* NULL: DEFAULT_CIPHERS */
  char *ciphersuites; /* NULL: OpenSSL's TLS 1.3 default */
  char *groups;       /* NULL: OpenSSL's default */
  int session_cache;
  int session_tickets;
  double handshake_timeout;
  double close_timeout;

  weft__nego_config nego;
  weft__sessions sessions;   /* ticket keys (servers), session cache (clients): tls_session.c */
  uint8_t client_policy[32]; /* policy_digest of the client SSL_CTX, once built: part of
                                every client session cache key */

  weft__sni sni;     /* servers: identities chosen per connection (tls_sni.c) */
  weft__hooks hooks; /* key log, verification hooks, required OCSP (tls_hooks.c) */
  weft__ocsp ocsp;   /* servers: the OCSP response stapled */
  int tls13_tickets; /* servers: tickets after a full TLS 1.3 handshake, -1: OpenSSL's */
};

/* A server identity: a partial options object (key, chain, and what the user overrode) and
 * which of its settings override the listener's. Frozen once added to options. */
struct weft_tls_identity {
  atomic_int refs;
  weft_cert_options *own;
  int has_protocols;     /* own->nego.wire replaces the listener's list */
  int has_client_policy; /* own->require_certificate (and own->cas, if any) replace it */
};

/* --- Errors ------------------------------------------------------------------------------- */

/* Records why the call failed, empties OpenSSL's error queue, and returns CODE. */
__attribute__((format(printf, 3, 4))) static int fail(weft_cert_options *o, int code,
                                                      const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(o->last_error, sizeof o->last_error, fmt, ap);
  va_end(ap);
  ERR_clear_error();
  return code;
}

/* As fail, with ": " and OpenSSL's reason appended. */
__attribute__((format(printf, 3, 4))) static int fail_ssl(weft_cert_options *o, int code,
                                                          const char *fmt, ...) {
  char why[200];
  weft__openssl_reason(why, sizeof why);
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(o->last_error, sizeof o->last_error, fmt, ap);
  va_end(ap);
  if (n >= 0 && (size_t)n < sizeof o->last_error)
    snprintf(o->last_error + n, sizeof o->last_error - (size_t)n, ": %s", why);
  return code;
}

/* Every setter starts here: NULL options are EINVAL, frozen options are EFROZEN. */
#define CHECK_SETTABLE(o)                                                                          \
  do {                                                                                             \
    if ((o) == NULL)                                                                               \
      return WEFT_EINVAL;                                                                          \
    if (atomic_load(&(o)->frozen))                                                                 \
      return fail((o), WEFT_EFROZEN,                                                               \
                  "these options are in use by a listener or connector (or were prepared) "        \
                  "and can no longer change; create new options instead");                         \
  } while (0)

/* --- Life --------------------------------------------------------------------------------- */

int weft_cert_options_new(weft_cert_options **out) {
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  weft_cert_options *o = weft__calloc(1, sizeof *o);
  if (o == NULL)
    return WEFT_ENOMEM;
  o->lock = CRYPTO_THREAD_lock_new();
  o->chain = sk_X509_new_null();
  o->cas = sk_X509_new_null();
  int sessions_rc = weft__sessions_init(&o->sessions);
  if (o->lock == NULL || o->chain == NULL || o->cas == NULL || sessions_rc != 0) {
    if (sessions_rc == 0)
      weft__sessions_cleanup(&o->sessions);
    CRYPTO_THREAD_lock_free(o->lock);
    sk_X509_free(o->chain);
    sk_X509_free(o->cas);
    weft__free(o);
    ERR_clear_error();
    return WEFT_ENOMEM;
  }
  atomic_init(&o->refs, 1);
  atomic_init(&o->frozen, 0);
  o->verify = 1;
  o->verify_identity = 1;
  o->verify_depth = 9;
  o->min_version = WEFT_TLS1_2;
  o->max_version = WEFT_TLS1_3;
  o->session_cache = 1;
  o->session_tickets = 1;
  o->handshake_timeout = 30.0;
  o->close_timeout = 5.0;
  o->nego.mechanisms = weft_protocol_negotiation_mechanisms();
  o->nego.no_overlap_policy = WEFT_NO_OVERLAP_FAIL;
  o->tls13_tickets = -1;
  *out = o;
  return 0;
}

weft_cert_options *weft_cert_options_ref(weft_cert_options *options) {
  if (options != NULL)
    atomic_fetch_add_explicit(&options->refs, 1, memory_order_relaxed);
  return options;
}

void weft_cert_options_unref(weft_cert_options *options) {
  if (options == NULL || atomic_fetch_sub_explicit(&options->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (int i = 0; i < 2; i++)
    SSL_CTX_free(options->ctx[i]);
  /* the identities' contexts first, then the identities they point into */
  const weft_tls_identity **ids = NULL;
  size_t id_count = options->sni.count;
  if (id_count > 0 && (ids = weft__calloc(id_count, sizeof *ids)) != NULL) {
    for (size_t i = 0; i < id_count; i++)
      ids[i] = options->sni.entries[i].identity;
  }
  weft__sni_cleanup(&options->sni);
  for (size_t i = 0; ids != NULL && i < id_count; i++)
    weft_tls_identity_unref((weft_tls_identity *)ids[i]);
  weft__free(ids);
  weft__sessions_cleanup(&options->sessions); /* after the contexts: they point into it */
  weft__hooks_cleanup(&options->hooks);
  weft__free(options->ocsp.der);
  EVP_PKEY_free(options->key);
  X509_free(options->cert);
  sk_X509_pop_free(options->chain, X509_free);
  sk_X509_pop_free(options->cas, X509_free);
  for (size_t i = 0; i < options->ca_dir_count; i++)
    weft__free(options->ca_dirs[i]);
  weft__free(options->ca_dirs);
  weft__free(options->server_name);
  weft__free(options->cipher_list);
  weft__free(options->ciphersuites);
  weft__free(options->groups);
  weft__free(options->nego.wire);
  CRYPTO_THREAD_lock_free(options->lock);
  weft__free(options);
}

const char *weft_cert_options_last_error(const weft_cert_options *options) {
  return options != NULL ? options->last_error : "";
}

double weft__tls_handshake_timeout(const weft_cert_options *options) {
  return options != NULL ? options->handshake_timeout : 30.0;
}

double weft__tls_close_timeout(const weft_cert_options *options) {
  return options != NULL ? options->close_timeout : 5.0;
}

const char *weft__tls_options_server_name(const weft_cert_options *options) {
  return options != NULL ? options->server_name : NULL;
}

int weft__tls_options_verify_identity(const weft_cert_options *options) {
  /* verification off with pins: the SSL verifies (the pins), but no identity is checked */
  return options->verify && options->verify_identity;
}

const uint8_t *weft__tls_options_client_policy(const weft_cert_options *options) {
  return options->client_policy;
}

weft__sessions *weft__tls_options_sessions(weft_cert_options *options) {
  return &options->sessions;
}

int weft__tls_options_set_error(weft_cert_options *options, int code, const char *message) {
  return fail(options, code, "%s", message);
}

/* Replaces *SLOT with a copy of VALUE (NULL clears). */
static int set_string(weft_cert_options *o, char **slot, const char *value) {
  char *copy = NULL;
  if (value != NULL && (copy = weft__strdup(value)) == NULL)
    return fail(o, WEFT_ENOMEM, "out of memory");
  weft__free(*slot);
  *slot = copy;
  return 0;
}

/* --- Identity ----------------------------------------------------------------------------- */

/* "CN=..., O=..." of X, for messages. */
static const char *subject_of(X509 *x, char *buf, size_t size) {
  if (X509_NAME_oneline(X509_get_subject_name(x), buf, (int)size) == NULL)
    snprintf(buf, size, "(unknown subject)");
  return buf;
}

static int key_matches(X509 *cert, EVP_PKEY *key) {
  int ok = X509_check_private_key(cert, key) == 1;
  ERR_clear_error();
  return ok;
}

int weft_cert_options_set_private_key(weft_cert_options *options, EVP_PKEY *pkey) {
  CHECK_SETTABLE(options);
  if (pkey == NULL)
    return fail(options, WEFT_EINVAL, "the private key is NULL");
  char subject[160];
  if (options->cert != NULL && !key_matches(options->cert, pkey))
    return fail(options, WEFT_EKEYMISMATCH,
                "the private key does not match the certificate already set (%s)",
                subject_of(options->cert, subject, sizeof subject));
  if (!EVP_PKEY_up_ref(pkey))
    return fail(options, WEFT_ENOMEM, "could not reference the private key");
  EVP_PKEY_free(options->key);
  options->key = pkey;
  return 0;
}

int weft_cert_options_set_certificate(weft_cert_options *options, X509 *x509) {
  CHECK_SETTABLE(options);
  if (x509 == NULL)
    return fail(options, WEFT_EINVAL, "the certificate is NULL");
  char subject[160];
  if (options->key != NULL && !key_matches(x509, options->key))
    return fail(options, WEFT_EKEYMISMATCH,
                "the certificate (%s) does not match the private key already set",
                subject_of(x509, subject, sizeof subject));
  if (!X509_up_ref(x509))
    return fail(options, WEFT_ENOMEM, "could not reference the certificate");
  X509_free(options->cert);
  options->cert = x509;
  return 0;
}

/* Appends a reference to X to STACK. */
static int push_ref(weft_cert_options *o, STACK_OF(X509) * stack, X509 *x) {
  if (!X509_up_ref(x))
    return fail(o, WEFT_ENOMEM, "could not reference the certificate");
  if (!sk_X509_push(stack, x)) {
    X509_free(x);
    return fail(o, WEFT_ENOMEM, "out of memory");
  }
  return 0;
}

int weft_cert_options_add_chain_certificate(weft_cert_options *options, X509 *x509) {
  CHECK_SETTABLE(options);
  if (x509 == NULL)
    return fail(options, WEFT_EINVAL, "the chain certificate is NULL");
  return push_ref(options, options->chain, x509);
}

/* Opens PATH for reading, or records why not ("WHAT file 'PATH': reason"). */
static int open_file(weft_cert_options *o, const char *what, const char *path, BIO **out) {
  *out = NULL;
  if (path == NULL)
    return fail(o, WEFT_EINVAL, "the %s file name is NULL", what);
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
    return fail(o, WEFT_EPEM, "cannot read the %s file '%s': it is a directory", what, path);
  ERR_clear_error();
  *out = BIO_new_file(path, "r");
  if (*out == NULL)
    return fail_ssl(o, WEFT_EPEM, "cannot read the %s file '%s'", what, path);
  return 0;
}

static int open_memory(weft_cert_options *o, const char *what, const char *pem, size_t len,
                       BIO **out) {
  *out = NULL;
  if (pem == NULL || len > INT_MAX)
    return fail(o, WEFT_EINVAL, "the %s PEM text is NULL or too long", what);
  if (len == 0)
    return fail(o, WEFT_EPEM, "the %s PEM text is empty", what);
  *out = BIO_new_mem_buf(pem, (int)len);
  if (*out == NULL)
    return fail(o, WEFT_ENOMEM, "out of memory");
  return 0;
}

/* SOURCE names where the PEM came from in messages: "file 'x.pem'" or "PEM text". */
static int load_key(weft_cert_options *o, BIO *bio, const char *source) {
  EVP_PKEY *key;
  char why[200];
  int rc = weft__pem_read_key(bio, &key, why, sizeof why);
  BIO_free(bio);
  if (rc != 0)
    return fail(o, rc, "cannot load a private key from the %s: %s", source, why);
  rc = weft_cert_options_set_private_key(o, key);
  EVP_PKEY_free(key);
  return rc;
}

static int load_chain(weft_cert_options *o, BIO *bio, const char *source) {
  STACK_OF(X509) * certs;
  char why[200];
  int rc = weft__pem_read_certs(bio, &certs, why, sizeof why);
  BIO_free(bio);
  if (rc != 0)
    return fail(o, rc, "cannot load a certificate chain from the %s: %s", source, why);
  rc = weft_cert_options_set_certificate(o, sk_X509_value(certs, 0));
  if (rc == 0) {
    /* the intermediates replace any chain set before */
    X509_free(sk_X509_shift(certs));
    sk_X509_pop_free(o->chain, X509_free);
    o->chain = certs;
    return 0;
  }
  sk_X509_pop_free(certs, X509_free);
  return rc;
}

static int load_cas(weft_cert_options *o, BIO *bio, const char *source) {
  STACK_OF(X509) * certs;
  char why[200];
  int rc = weft__pem_read_certs(bio, &certs, why, sizeof why);
  BIO_free(bio);
  if (rc != 0)
    return fail(o, rc, "cannot load CA certificates from the %s: %s", source, why);
  for (int i = 0; rc == 0 && i < sk_X509_num(certs); i++)
    rc = push_ref(o, o->cas, sk_X509_value(certs, i));
  sk_X509_pop_free(certs, X509_free);
  return rc;
}

int weft_cert_options_load_private_key_pem(weft_cert_options *options, const char *pem,
                                           size_t len) {
  CHECK_SETTABLE(options);
  BIO *bio;
  int rc = open_memory(options, "private key", pem, len, &bio);
  return rc != 0 ? rc : load_key(options, bio, "PEM text");
}

int weft_cert_options_load_private_key_file(weft_cert_options *options, const char *path) {
  CHECK_SETTABLE(options);
  BIO *bio;
  int rc = open_file(options, "private key", path, &bio);
  if (rc != 0)
    return rc;
  char source[300];
  snprintf(source, sizeof source, "file '%s'", path);
  return load_key(options, bio, source);
}

int weft_cert_options_load_certificate_chain_pem(weft_cert_options *options, const char *pem,
                                                 size_t len) {
  CHECK_SETTABLE(options);
  BIO *bio;
  int rc = open_memory(options, "certificate chain", pem, len, &bio);
  return rc != 0 ? rc : load_chain(options, bio, "PEM text");
}

int weft_cert_options_load_certificate_chain_file(weft_cert_options *options, const char *path) {
  CHECK_SETTABLE(options);
  BIO *bio;
  int rc = open_file(options, "certificate chain", path, &bio);
  if (rc != 0)
    return rc;
  char source[300];
  snprintf(source, sizeof source, "file '%s'", path);
  return load_chain(options, bio, source);
}

/* --- Verification ------------------------------------------------------------------------- */

int weft_cert_options_set_verify(weft_cert_options *options, int on) {
  CHECK_SETTABLE(options);
  options->verify = on != 0;
  return 0;
}

int weft_cert_options_set_verify_identity(weft_cert_options *options, int on) {
  CHECK_SETTABLE(options);
  options->verify_identity = on != 0;
  return 0;
}

int weft_cert_options_set_require_certificate(weft_cert_options *options, int on) {
  CHECK_SETTABLE(options);
  options->require_certificate = on != 0;
  return 0;
}

int weft_cert_options_add_ca_certificate(weft_cert_options *options, X509 *x509) {
  CHECK_SETTABLE(options);
  if (x509 == NULL)
    return fail(options, WEFT_EINVAL, "the CA certificate is NULL");
  return push_ref(options, options->cas, x509);
}

int weft_cert_options_load_ca_file(weft_cert_options *options, const char *path) {
  CHECK_SETTABLE(options);
  BIO *bio;
  int rc = open_file(options, "CA", path, &bio);
  if (rc != 0)
    return rc;
  char source[300];
  snprintf(source, sizeof source, "file '%s'", path);
  return load_cas(options, bio, source);
}

int weft_cert_options_load_ca_dir(weft_cert_options *options, const char *path) {
  CHECK_SETTABLE(options);
  if (path == NULL)
    return fail(options, WEFT_EINVAL, "the CA directory name is NULL");
  struct stat st;
  if (stat(path, &st) != 0)
    return fail(options, WEFT_EPEM, "cannot read the CA directory '%s': %s", path, strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return fail(options, WEFT_EPEM, "the CA directory '%s' is not a directory", path);
  char **dirs = weft__realloc(options->ca_dirs, (options->ca_dir_count + 1) * sizeof *dirs);
  if (dirs == NULL)
    return fail(options, WEFT_ENOMEM, "out of memory");
  options->ca_dirs = dirs;
  if ((dirs[options->ca_dir_count] = weft__strdup(path)) == NULL)
    return fail(options, WEFT_ENOMEM, "out of memory");
  options->ca_dir_count++;
  return 0;
}

int weft_cert_options_set_verify_depth(weft_cert_options *options, int depth) {
  CHECK_SETTABLE(options);
  if (depth < 0 || depth > 100)
    return fail(options, WEFT_EINVAL, "verify depth %d is outside 0..100", depth);
  options->verify_depth = depth;
  return 0;
}

int weft_cert_options_set_server_name(weft_cert_options *options, const char *name) {
  CHECK_SETTABLE(options);
  if (name != NULL && (name[0] == '\0' || strlen(name) > 255))
    return fail(options, WEFT_EINVAL, "the server name must be 1 to 255 bytes long");
  return set_string(options, &options->server_name, name);
}

/* --- Versions and algorithms ------------------------------------------------------------ */

static const char *version_name(int v) {
  return v == WEFT_TLS1_2 ? "TLS 1.2" : v == WEFT_TLS1_3 ? "TLS 1.3" : "?";
}

int weft_cert_options_set_tls_versions(weft_cert_options *options, int min_version,
                                       int max_version) {
  CHECK_SETTABLE(options);
  int bad = min_version != WEFT_TLS1_2 && min_version != WEFT_TLS1_3   ? min_version
            : max_version != WEFT_TLS1_2 && max_version != WEFT_TLS1_3 ? max_version
                                                                       : 0;
  if (bad != 0)
    return fail(options, WEFT_EINVAL,
                "unknown TLS version 0x%04x; use WEFT_TLS1_2 (0x0303) or WEFT_TLS1_3 (0x0304)",
                (unsigned)bad);
  if (min_version > max_version)
    return fail(options, WEFT_EINVAL,
                "empty TLS version range: the minimum (%s) is above the maximum (%s)",
                version_name(min_version), version_name(max_version));
  options->min_version = min_version;
  options->max_version = max_version;
  return 0;
}

/* A throw-away context to try algorithm names on at set time. */
static SSL_CTX *scratch_ctx(weft_cert_options *o) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  if (ctx == NULL)
    fail(o, WEFT_ENOMEM, "could not create an SSL_CTX to check the names");
  return ctx;
}

/* The next element of a separated list (SEPS), or NULL at the end: *P advances past it. */
static const char *next_element(const char **p, const char *seps, char *buf, size_t size) {
  *p += strspn(*p, seps);
  size_t n = strcspn(*p, seps);
  if (n == 0)
    return NULL;
  snprintf(buf, size, "%.*s", (int)(n < size ? n : size - 1), *p);
  *p += n;
  return buf;
}

/* OpenSSL ignores unknown names in a cipher string as long as one name matched, so each
 * element is tried on its own: an element that selects nothing is unknown (or useless). */
int weft_cert_options_set_cipher_list(weft_cert_options *options, const char *ciphers) {
  CHECK_SETTABLE(options);
  if (ciphers == NULL)
    return fail(options, WEFT_EINVAL, "the cipher list is NULL");
  SSL_CTX *ctx = scratch_ctx(options);
  if (ctx == NULL)
    return WEFT_ENOMEM;
  int rc = 0;
  char elem[128];
  const char *p = ciphers;
  while (rc == 0 && next_element(&p, ":, ", elem, sizeof elem) != NULL) {
    const char *name = elem + strspn(elem, "!-+");
    if (name[0] == '@' || name[0] == '\0') /* @STRENGTH, @SECLEVEL=n: directives */
      continue;
    if (!SSL_CTX_set_cipher_list(ctx, name))
      rc = fail(options, WEFT_EINVAL,
                "unknown TLS 1.2 cipher or cipher class \"%s\" in \"%s\" (it selects no cipher)",
                name, ciphers);
  }
  if (rc == 0 && !SSL_CTX_set_cipher_list(ctx, ciphers))
    rc = fail_ssl(options, WEFT_EINVAL, "the cipher list \"%s\" selects no cipher", ciphers);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return rc != 0 ? rc : set_string(options, &options->cipher_list, ciphers);
}

/* OpenSSL also ignores unknown TLS 1.3 suite names: try each on its own and check that it
 * added a cipher to the context's list. */
int weft_cert_options_set_ciphersuites(weft_cert_options *options, const char *suites) {
  CHECK_SETTABLE(options);
  if (suites == NULL)
    return fail(options, WEFT_EINVAL, "the TLS 1.3 cipher suite list is NULL");
  SSL_CTX *ctx = scratch_ctx(options);
  if (ctx == NULL)
    return WEFT_ENOMEM;
  int rc = 0;
  if (!SSL_CTX_set_ciphersuites(ctx, ""))
    rc = fail_ssl(options, WEFT_ETLS, "could not check the TLS 1.3 cipher suites");
  int base = sk_SSL_CIPHER_num(SSL_CTX_get_ciphers(ctx));
  char elem[128];
  const char *p = suites;
  while (rc == 0 && next_element(&p, ":", elem, sizeof elem) != NULL) {
    if (!SSL_CTX_set_ciphersuites(ctx, elem) || sk_SSL_CIPHER_num(SSL_CTX_get_ciphers(ctx)) <= base)
      rc =
          fail(options, WEFT_EINVAL, "unknown TLS 1.3 cipher suite \"%s\" in \"%s\"", elem, suites);
  }
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return rc != 0 ? rc : set_string(options, &options->ciphersuites, suites);
}

int weft_cert_options_set_groups(weft_cert_options *options, const char *groups) {
  CHECK_SETTABLE(options);
  if (groups == NULL || groups[0] == '\0')
    return fail(options, WEFT_EINVAL, "the group list is NULL or empty");
  SSL_CTX *ctx = scratch_ctx(options);
  if (ctx == NULL)
    return WEFT_ENOMEM;
  int rc = 0;
  char elem[128];
  const char *p = groups;
  while (rc == 0 && next_element(&p, ":", elem, sizeof elem) != NULL) {
    if (!SSL_CTX_set1_groups_list(ctx, elem))
      rc = fail(options, WEFT_EINVAL, "unknown key-exchange group \"%s\" in \"%s\"", elem, groups);
  }
  if (rc == 0 && !SSL_CTX_set1_groups_list(ctx, groups))
    rc = fail_ssl(options, WEFT_EINVAL, "the group list \"%s\" is not valid", groups);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return rc != 0 ? rc : set_string(options, &options->groups, groups);
}

int weft_cert_options_set_session_cache(weft_cert_options *options, int on) {
  CHECK_SETTABLE(options);
  options->session_cache = on != 0;
  return 0;
}

int weft_cert_options_set_session_tickets(weft_cert_options *options, int on) {
  CHECK_SETTABLE(options);
  options->session_tickets = on != 0;
  return 0;
}

/* --- Session resumption ------------------------------------------------------------------- */

int weft_cert_options_add_ticket_key(weft_cert_options *options, const uint8_t *key, size_t len) {
  CHECK_SETTABLE(options);
  if (key == NULL)
    return fail(options, WEFT_EINVAL, "the ticket key is NULL");
  if (len != WEFT__TICKET_KEY_LEN)
    return fail(options, WEFT_EINVAL,
                "a ticket key is exactly %d bytes (16 name, 32 HMAC secret, 32 AES key), not "
                "%zu",
                WEFT__TICKET_KEY_LEN, len);
  weft__reason_buf err;
  int rc = weft__sessions_add_ticket_key(&options->sessions, key, &err);
  return rc != 0 ? fail(options, rc, "%s", err.msg) : 0;
}

int weft_cert_options_add_ticket_key_file(weft_cert_options *options, const char *path) {
  CHECK_SETTABLE(options);
  if (path == NULL)
    return fail(options, WEFT_EINVAL, "the ticket key file name is NULL");
  /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0)
    return fail(options, WEFT_EIO, "cannot read the ticket key file '%s': %s", path,
                strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return fail(options, WEFT_EIO, "cannot read the ticket key file '%s': %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return fail(options, WEFT_EINVAL,
                "the ticket key file '%s' is not a regular file (it is a %s); give a file "
                "holding exactly %d bytes (make one with `openssl rand 80 > FILE`)",
                path,
                S_ISDIR(st.st_mode)    ? "directory"
                : S_ISFIFO(st.st_mode) ? "FIFO"
                : S_ISSOCK(st.st_mode) ? "socket"
                : S_ISCHR(st.st_mode)  ? "character device"
                : S_ISBLK(st.st_mode)  ? "block device"
                                       : "special file",
                WEFT__TICKET_KEY_LEN);
  }
  /* one byte more than a key, to tell a longer file */
  uint8_t key[WEFT__TICKET_KEY_LEN + 1];
  size_t got = 0;
  int read_errno = 0;
  while (got < sizeof key) {
    ssize_t n = read(fd, key + got, sizeof key - got);
    if (n > 0) {
      got += (size_t)n;
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      read_errno = errno;
      break;
    }
  }
  long long size = fstat(fd, &st) == 0 ? (long long)st.st_size : -1;
  close(fd);
  int rc;
  if (read_errno != 0)
    rc = fail(options, WEFT_EIO, "cannot read the ticket key file '%s': %s", path,
              strerror(read_errno));
  else if (got != WEFT__TICKET_KEY_LEN && size >= 0)
    rc = fail(options, WEFT_EINVAL,
              "the ticket key file '%s' holds %lld bytes; a key is exactly %d (make one with "
              "`openssl rand 80 > FILE`)",
              path, size, WEFT__TICKET_KEY_LEN);
  else if (got > WEFT__TICKET_KEY_LEN)
    rc = fail(options, WEFT_EINVAL,
              "the ticket key file '%s' holds more than %d bytes; a key is exactly %d", path,
              WEFT__TICKET_KEY_LEN, WEFT__TICKET_KEY_LEN);
  else if (got != WEFT__TICKET_KEY_LEN)
    rc = fail(options, WEFT_EINVAL, "the ticket key file '%s' holds %zu bytes; a key is exactly %d",
              path, got, WEFT__TICKET_KEY_LEN);
  else
    rc = weft_cert_options_add_ticket_key(options, key, WEFT__TICKET_KEY_LEN);
  OPENSSL_cleanse(key, sizeof key);
  return rc;
}

int weft_cert_options_set_ticket_key_lifetime(weft_cert_options *options, double seconds) {
  CHECK_SETTABLE(options);
  if (!isfinite(seconds) || seconds <= 0)
    return fail(options, WEFT_EINVAL,
                "the ticket key lifetime must be a positive number of "
                "seconds");
  options->sessions.key_lifetime = seconds;
  return 0;
}

int weft_cert_options_set_session_reuse(weft_cert_options *options, int on) {
  CHECK_SETTABLE(options);
  options->sessions.reuse = on != 0;
  return 0;
}

size_t weft__tls_cached_sessions(weft_cert_options *options, uint64_t *stored) {
  if (stored != NULL)
    *stored = 0;
  return options != NULL ? weft__sessions_cached(&options->sessions, stored) : 0;
}

int weft_cert_options_set_handshake_timeout(weft_cert_options *options, double seconds) {
  CHECK_SETTABLE(options);
  if (!isfinite(seconds) || seconds <= 0)
    return fail(options, WEFT_EINVAL,
                "the handshake timeout must be a positive number of "
                "seconds");
  options->handshake_timeout = seconds;
  return 0;
}

int weft_cert_options_set_close_timeout(weft_cert_options *options, double seconds) {
  CHECK_SETTABLE(options);
  if (!isfinite(seconds) || seconds < 0)
    return fail(options, WEFT_EINVAL,
                "the close timeout must be 0 or a positive number of "
                "seconds");
  options->close_timeout = seconds;
  return 0;
}

/* --- Next protocols ----------------------------------------------------------------------- */

static int no_mechanism(weft_cert_options *o) {
  return fail(o, WEFT_ENOTSUP,
              "this build of weft supports neither ALPN nor NPN (configured with "
              "--disable-alpn and --disable-npn, or OpenSSL lacks both), so next protocols "
              "cannot be negotiated");
}

static int set_wire(weft_cert_options *o, uint8_t *wire, size_t len) {
  weft__free(o->nego.wire);
  o->nego.wire = wire;
  o->nego.wire_len = len;
  return 0;
}

int weft_cert_options_set_next_protocols(weft_cert_options *options, const char *const *names,
                                         size_t count) {
  CHECK_SETTABLE(options);
  if (count > 0 && weft_protocol_negotiation_mechanisms() == 0)
    return no_mechanism(options);
  uint8_t *wire;
  size_t len;
  weft__reason_buf err;
  int rc = weft__nego_encode(names, count, &wire, &len, &err);
  if (rc != 0)
    return fail(options, rc, "%s", err.msg);
  return set_wire(options, wire, len);
}

int weft_cert_options_set_next_protocols_wire(weft_cert_options *options, const uint8_t *wire,
                                              size_t len) {
  CHECK_SETTABLE(options);
  if (len > 0 && weft_protocol_negotiation_mechanisms() == 0)
    return no_mechanism(options);
  weft__reason_buf err;
  int rc = weft__nego_validate_wire(wire, len, &err);
  if (rc != 0)
    return fail(options, rc, "%s", err.msg);
  uint8_t *copy = NULL;
  if (len > 0) {
    if ((copy = weft__malloc(len)) == NULL)
      return fail(options, WEFT_ENOMEM, "out of memory");
    memcpy(copy, wire, len);
  }
  return set_wire(options, copy, len);
}

int weft_cert_options_set_negotiation_mechanisms(weft_cert_options *options, unsigned mask) {
  CHECK_SETTABLE(options);
  if (mask == 0 || (mask & ~(WEFT_MECH_ALPN | WEFT_MECH_NPN)) != 0)
    return fail(options, WEFT_EINVAL,
                "mechanism mask 0x%x is not a non-empty combination of WEFT_MECH_ALPN and "
                "WEFT_MECH_NPN",
                mask);
  unsigned missing = mask & ~weft_protocol_negotiation_mechanisms();
  if (missing != 0)
    return fail(options, WEFT_ENOTSUP,
                "this build of weft lacks %s%s%s (configured with --disable-%s, or OpenSSL "
                "lacks it)",
                (missing & WEFT_MECH_ALPN) ? "ALPN" : "",
                missing == (WEFT_MECH_ALPN | WEFT_MECH_NPN) ? " and " : "",
                (missing & WEFT_MECH_NPN) ? "NPN" : "", missing == WEFT_MECH_NPN ? "npn" : "alpn");
  options->nego.mechanisms = mask;
  return 0;
}

int weft_cert_options_set_no_overlap_policy(weft_cert_options *options,
                                            weft_no_overlap_policy policy) {
  CHECK_SETTABLE(options);
  if (policy != WEFT_NO_OVERLAP_FAIL && policy != WEFT_NO_OVERLAP_CONTINUE)
    return fail(options, WEFT_EINVAL, "unknown no-overlap policy %d", (int)policy);
  options->nego.no_overlap_policy = policy;
  return 0;
}

int weft_cert_options_set_protocol_selector(weft_cert_options *options,
                                            weft_protocol_selector selector, void *arg) {
  CHECK_SETTABLE(options);
  if (selector != NULL && !(weft_protocol_negotiation_mechanisms() & WEFT_MECH_ALPN))
    return fail(options, WEFT_ENOTSUP,
                "a protocol selector needs ALPN, which this build of weft lacks");
  options->nego.selector = selector;
  options->nego.selector_arg = arg;
  return 0;
}

/* --- Building the SSL_CTX ----------------------------------------------------------------- */

static int ctx_identity(weft_cert_options *o, SSL_CTX *ctx) {
  if (o->cert == NULL)
    return 0;
  if (SSL_CTX_use_certificate(ctx, o->cert) != 1)
    return fail_ssl(o, WEFT_ETLS, "the certificate cannot be used");
  if (SSL_CTX_use_PrivateKey(ctx, o->key) != 1)
    return fail_ssl(o, WEFT_ETLS, "the private key cannot be used");
  for (int i = 0; i < sk_X509_num(o->chain); i++) {
    if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(o->chain, i)) != 1)
      return fail_ssl(o, WEFT_ETLS, "chain certificate #%d cannot be used", i);
  }
  if (SSL_CTX_check_private_key(ctx) != 1)
    return fail(o, WEFT_EKEYMISMATCH, "the private key does not match the certificate");
  return 0;
}

static int ctx_verification(weft_cert_options *o, weft_tls_role role, SSL_CTX *ctx) {
  int have_cas = sk_X509_num(o->cas) > 0 || o->ca_dir_count > 0;
  int mode = SSL_VERIFY_NONE;
  if (role == WEFT_TLS_CLIENT)
    mode = o->verify || o->hooks.pin_count > 0 || o->hooks.verify != NULL ? SSL_VERIFY_PEER
                                                                          : SSL_VERIFY_NONE;
  else if (o->require_certificate)
    mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  else if (o->verify && have_cas)
    mode = SSL_VERIFY_PEER; /* ask for a certificate, verify it if one comes */
  SSL_CTX_set_verify(ctx, mode, NULL);
  SSL_CTX_set_verify_depth(ctx, o->verify_depth);
  if (mode == SSL_VERIFY_NONE)
    return 0;

  if (!have_cas) {
    /* only a client gets the system store: a server trusts nothing it was not given */
    if (role == WEFT_TLS_CLIENT && SSL_CTX_set_default_verify_paths(ctx) != 1)
      return fail_ssl(o, WEFT_ETLS, "cannot load the system trust store");
    return 0;
  }
  X509_STORE *store = SSL_CTX_get_cert_store(ctx);
  for (int i = 0; i < sk_X509_num(o->cas); i++) {
    X509 *ca = sk_X509_value(o->cas, i);
    if (X509_STORE_add_cert(store, ca) != 1) {
      unsigned long e = ERR_peek_last_error();
      if (ERR_GET_REASON(e) != X509_R_CERT_ALREADY_IN_HASH_TABLE)
        return fail_ssl(o, WEFT_ETLS, "CA certificate #%d cannot be used", i);
      ERR_clear_error();
    }
    /* tell clients which CAs we accept in the CertificateRequest */
    if (role == WEFT_TLS_SERVER && SSL_CTX_add_client_CA(ctx, ca) != 1)
      return fail_ssl(o, WEFT_ETLS, "CA certificate #%d cannot be used", i);
  }
  for (size_t i = 0; i < o->ca_dir_count; i++) {
    if (SSL_CTX_load_verify_dir(ctx, o->ca_dirs[i]) != 1)
      return fail_ssl(o, WEFT_ETLS, "cannot use the CA directory '%s'", o->ca_dirs[i]);
  }
  return 0;
}

static int ctx_algorithms(weft_cert_options *o, SSL_CTX *ctx) {
  if (SSL_CTX_set_min_proto_version(ctx, o->min_version) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, o->max_version) != 1)
    return fail_ssl(o, WEFT_ETLS, "cannot set the TLS version range");
  const char *ciphers = o->cipher_list != NULL ? o->cipher_list : DEFAULT_CIPHERS;
  if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1)
    return fail_ssl(o, WEFT_EINVAL, "the cipher list \"%s\" cannot be used", ciphers);
  if (o->ciphersuites != NULL && SSL_CTX_set_ciphersuites(ctx, o->ciphersuites) != 1)
    return fail_ssl(o, WEFT_EINVAL, "the TLS 1.3 cipher suites \"%s\" cannot be used",
                    o->ciphersuites);
  if (o->groups != NULL && SSL_CTX_set1_groups_list(ctx, o->groups) != 1)
    return fail_ssl(o, WEFT_EINVAL, "the groups \"%s\" cannot be used", o->groups);

  uint64_t opts = SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION;
#ifdef SSL_OP_NO_CLIENT_RENEGOTIATION
  opts |= SSL_OP_NO_CLIENT_RENEGOTIATION;
#endif
  SSL_CTX_set_options(ctx, opts);
  /* weft tells a truncated stream from a clean close: an EOF without close_notify must stay an
   * error (SSL_R_UNEXPECTED_EOF_WHILE_READING) */
  SSL_CTX_clear_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  /* bufferevent_openssl retries writes from a moved buffer and accepts partial writes */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_ENABLE_PARTIAL_WRITE);
  return 0;
}

static int cmp_digest(const void *a, const void *b) {
  return memcmp(a, b, 32);
}

/* Feeds the SHA-256 of the DER of each certificate of CERTS into MD, sorted (the order of the
 * trust anchors changes nothing to whom they admit). Returns 1, or 0 on failure. */
static int digest_certs(EVP_MD_CTX *md, STACK_OF(X509) * certs) {
  int n = sk_X509_num(certs);
  if (n <= 0)
    return EVP_DigestUpdate(md, "none", 5) == 1;
  uint8_t(*digests)[32] = weft__calloc((size_t)n, sizeof *digests);
  if (digests == NULL)
    return 0;
  int ok = 1;
  for (int i = 0; ok && i < n; i++) {
    unsigned int len = 0;
    ok = X509_digest(sk_X509_value(certs, i), EVP_sha256(), digests[i], &len) == 1 && len == 32;
  }
  if (ok) {
    qsort(digests, (size_t)n, sizeof *digests, cmp_digest);
    ok = EVP_DigestUpdate(md, digests, (size_t)n * sizeof *digests) == 1;
  }
  weft__free(digests);
  return ok;
}

/* A field of the policy: its name, then its bytes, then a separator, so that no two policies
 * hash the same text. */
static int digest_field(EVP_MD_CTX *md, const char *name, const void *data, size_t len) {
  uint64_t n = len;
  return EVP_DigestUpdate(md, name, strlen(name) + 1) == 1 &&
         EVP_DigestUpdate(md, &n, sizeof n) == 1 &&
         (len == 0 || EVP_DigestUpdate(md, data, len) == 1);
}

static int digest_int(EVP_MD_CTX *md, const char *name, long long value) {
  return digest_field(md, name, &value, sizeof value);
}

static int digest_str(EVP_MD_CTX *md, const char *name, const char *value) {
  return digest_field(md, name, value != NULL ? value : "", value != NULL ? strlen(value) + 1 : 0);
}

/* The SHA-256 of everything that decides whom a handshake under these options accepts, for
 * ROLE, with CTX's verify mode:
 *  - both roles: the verify mode (none / request a certificate / require one), the verify
 *    depth, the trust anchors (SHA-256 of each CA certificate's DER, sorted, and the CA
 *    directories by path), the TLS versions and the ciphers (OpenSSL resumes a session whose
 *    cipher the client offers even if the server's list no longer has it);
 *  - clients also: whether identities are checked, their own certificate and chain (what the
 *    server saw), and the next-protocol list, mechanisms and no-overlap policy.
 * Servers leave out the next-protocol configuration on purpose: ALPN and NPN run again on every
 * handshake, resumed or not (weft__tls_check_negotiated included), so a session grants no
 * protocol; keeping it out lets listeners that differ only in their protocol lists share
 * sessions. The server's own certificate is left out too: it decides nothing about the
 * client. Returns 0, or WEFT_ENOMEM. */
static int policy_digest(weft_cert_options *o, weft_tls_role role, SSL_CTX *ctx, uint8_t out[32]) {
  static const char tag[] = "weft admission policy v1";
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned int len = 0;
  int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
           digest_field(md, "tag", tag, sizeof tag) && digest_int(md, "role", role) &&
           digest_int(md, "verify mode", SSL_CTX_get_verify_mode(ctx)) &&
           digest_int(md, "verify depth", o->verify_depth) &&
           digest_int(md, "require certificate", o->require_certificate) &&
           digest_int(md, "verify", o->verify) && digest_int(md, "cas", sk_X509_num(o->cas)) &&
           digest_certs(md, o->cas) && digest_int(md, "ca dirs", (long long)o->ca_dir_count);
  for (size_t i = 0; ok && i < o->ca_dir_count; i++)
    ok = digest_str(md, "ca dir", o->ca_dirs[i]);
  ok = ok && digest_int(md, "min version", o->min_version) &&
       digest_int(md, "max version", o->max_version) &&
       digest_str(md, "ciphers", o->cipher_list != NULL ? o->cipher_list : DEFAULT_CIPHERS) &&
       digest_str(md, "ciphersuites", o->ciphersuites);
  if (ok && role == WEFT_TLS_CLIENT) {
    STACK_OF(X509) *own = sk_X509_new_null();
    ok = own != NULL && (o->cert == NULL || sk_X509_push(own, o->cert)) &&
         digest_int(md, "verify identity", o->verify_identity) &&
         digest_int(md, "own certificate", o->cert != NULL) && digest_certs(md, own) &&
         digest_int(md, "chain", sk_X509_num(o->chain)) && digest_certs(md, o->chain) &&
         digest_field(md, "protocols", o->nego.wire, o->nego.wire_len) &&
         digest_int(md, "mechanisms", o->nego.mechanisms) &&
         digest_int(md, "no overlap", o->nego.no_overlap_policy);
    sk_X509_free(own); /* the certificate stays the options' */
  }
  ok = ok && EVP_DigestFinal_ex(md, out, &len) == 1 && len == 32;
  EVP_MD_CTX_free(md);
  if (!ok)
    return fail(o, WEFT_ENOMEM, "cannot compute the verification policy digest");
  return 0;
}

/* What an SSL_CTX built from options points into: the options' own state for the listener's
 * context, the identity's or the listener's for an identity's (see build_identity_ctx). */
typedef struct ctx_parts {
  weft__sessions *sessions;
  const weft__nego_config *nego;
  const weft__ocsp *staple;
  weft__hooks *hooks;
  const weft__sni_entry *identity; /* NULL for the listener's own context */
} ctx_parts;

/* An identity's session id context: the policy digest extended with its names, so that its
 * sessions resume on it alone. */
static int identity_sid(weft_cert_options *o, const weft__sni_entry *e, uint8_t sid[32]) {
  static const char tag[] = "weft identity v1";
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned int len = 0;
  int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
           digest_field(md, "tag", tag, sizeof tag) && digest_field(md, "policy", sid, 32) &&
           digest_int(md, "names", (long long)e->count);
  for (size_t i = 0; ok && i < e->count; i++)
    ok = digest_str(md, "name", e->names[i]);
  /* an identity with no names (chosen by a selector only) is told apart by its address */
  uintptr_t self = (uintptr_t)e->identity;
  ok = ok && (e->count > 0 || digest_field(md, "unnamed", &self, sizeof self)) &&
       EVP_DigestFinal_ex(md, sid, &len) == 1 && len == 32;
  EVP_MD_CTX_free(md);
  return ok ? 0 : fail(o, WEFT_ENOMEM, "cannot compute an identity's session id context");
}

static int ctx_sessions(weft_cert_options *o, weft_tls_role role, SSL_CTX *ctx,
                        const ctx_parts *parts) {
  weft__reason_buf err;
  int rc = weft__sessions_install(ctx, role, parts->sessions, o->session_tickets, &err);
  if (rc != 0)
    return fail(o, rc, "%s", err.msg);
  if (role != WEFT_TLS_SERVER)
    return policy_digest(o, role, ctx, o->client_policy);
  uint8_t sid_ctx[32];
  if ((rc = policy_digest(o, role, ctx, sid_ctx)) != 0)
    return rc;
  if (parts->identity != NULL && (rc = identity_sid(o, parts->identity, sid_ctx)) != 0)
    return rc;
  if (SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx) != 1)
    return fail_ssl(o, WEFT_ETLS, "cannot set the session id context");
  SSL_CTX_set_session_cache_mode(ctx,
                                 o->session_cache ? SSL_SESS_CACHE_SERVER : SSL_SESS_CACHE_OFF);
  if (!o->session_tickets)
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  /* TLS 1.3 sends tickets even without a cache (stateful or stateless): with neither, none */
  if (!o->session_tickets && !o->session_cache)
    SSL_CTX_set_num_tickets(ctx, 0);
  else if (o->tls13_tickets >= 0)
    SSL_CTX_set_num_tickets(ctx, (size_t)o->tls13_tickets);
  return 0;
}

static int build_ctx(weft_cert_options *o, weft_tls_role role, const ctx_parts *parts,
                     SSL_CTX **out) {
  if (role == WEFT_TLS_SERVER && (o->key == NULL || o->cert == NULL))
    return fail(o, WEFT_EINVAL, "a TLS server needs a private key and a certificate, but %s set",
                o->key != NULL    ? "no certificate was"
                : o->cert != NULL ? "no private key was"
                                  : "neither was");
  if ((o->key == NULL) != (o->cert == NULL))
    return fail(o, WEFT_EINVAL,
                "a client certificate needs its private key, but only the %s "
                "was set",
                o->key != NULL ? "private key" : "certificate");
  ERR_clear_error();
  SSL_CTX *ctx = SSL_CTX_new(role == WEFT_TLS_SERVER ? TLS_server_method() : TLS_client_method());
  if (ctx == NULL)
    return fail_ssl(o, WEFT_ENOMEM, "cannot create the %s SSL_CTX",
                    role == WEFT_TLS_SERVER ? "server" : "client");
  weft__reason_buf err;
  int rc = ctx_algorithms(o, ctx);
  if (rc == 0)
    rc = ctx_identity(o, ctx);
  if (rc == 0)
    rc = ctx_verification(o, role, ctx);
  if (rc == 0)
    rc = ctx_sessions(o, role, ctx, parts);
  if (rc == 0 && (rc = weft__nego_install(ctx, role, parts->nego, &err)) != 0)
    fail(o, rc, "%s", err.msg);
  if (rc == 0 && (rc = weft__hooks_install(ctx, role, parts->hooks, parts->staple, &err)) != 0)
    fail(o, rc, "%s", err.msg);
  if (rc != 0) {
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return rc;
  }
  *out = ctx;
  return 0;
}

/* The SSL_CTX of one identity of O: built from a copy of O's configuration with the
 * identity's key and chain and whatever it overrides; it points into the identity (its ticket
 * keys, protocol list, OCSP response) or into O, both of which outlive it. Errors name the
 * identity, in O's last error. */
static int build_identity_ctx(weft_cert_options *o, weft__sni_entry *e) {
  weft_tls_identity *id = (weft_tls_identity *)e->identity;
  weft_cert_options *own = id->own;
  const char *label = e->count > 0 ? e->names[0] : "(chosen by the selector)";
  weft_cert_options *m = weft__malloc(sizeof *m);
  if (m == NULL)
    return fail(o, WEFT_ENOMEM, "out of memory");
  memcpy(m, o, sizeof *m);
  m->key = own->key;
  m->cert = own->cert;
  m->chain = own->chain;
  if (id->has_client_policy) {
    m->require_certificate = own->require_certificate;
    m->verify = 1;
    if (sk_X509_num(own->cas) > 0) {
      m->cas = own->cas;
      m->ca_dirs = NULL;
      m->ca_dir_count = 0;
    }
  }
  if (id->has_protocols) {
    e->nego = o->nego; /* the listener's mechanisms, policy and selector, the identity's list */
    e->nego.wire = own->nego.wire;
    e->nego.wire_len = own->nego.wire_len;
  }
  ctx_parts parts = {own->sessions.key_count > 0 ? &own->sessions : &o->sessions,
                     id->has_protocols ? &e->nego : &o->nego,
                     /* never the listener's response: it speaks of another certificate */
                     own->ocsp.len > 0 ? &own->ocsp : NULL, &o->hooks, e};
  int rc = build_ctx(m, WEFT_TLS_SERVER, &parts, &e->ctx);
  if (rc != 0)
    fail(o, rc, "identity '%s': %s", label, m->last_error);
  weft__free(m);
  return rc;
}

/* The options' context for ROLE and, for a server, every identity's context and the
 * ClientHello callback that chooses among them. All or nothing. */
static int build_role(weft_cert_options *o, weft_tls_role role, SSL_CTX **out) {
  o->hooks.trust_pins_only = !o->verify;
  ctx_parts parts = {&o->sessions, &o->nego, &o->ocsp, &o->hooks, NULL};
  int rc = build_ctx(o, role, &parts, out);
  if (rc != 0 || role != WEFT_TLS_SERVER)
    return rc;
  weft__reason_buf err;
  for (size_t i = 0; rc == 0 && i < o->sni.count; i++)
    rc = build_identity_ctx(o, &o->sni.entries[i]);
  if (rc == 0 && (rc = weft__sni_install(*out, &o->sni, &err)) != 0)
    fail(o, rc, "%s", err.msg);
  if (rc != 0) {
    for (size_t i = 0; i < o->sni.count; i++) {
      SSL_CTX_free(o->sni.entries[i].ctx);
      o->sni.entries[i].ctx = NULL;
    }
    SSL_CTX_free(*out);
    *out = NULL;
  }
  return rc;
}

int weft__tls_ctx(weft_cert_options *options, weft_tls_role role, SSL_CTX **out) {
  if (out != NULL)
    *out = NULL;
  if (options == NULL || out == NULL)
    return WEFT_EINVAL;
  if (role != WEFT_TLS_CLIENT && role != WEFT_TLS_SERVER)
    return fail(options, WEFT_EINVAL, "unknown TLS role %d", (int)role);
  /* built once: after that, every connection only reads the pointer */
  if (!CRYPTO_THREAD_read_lock(options->lock))
    return fail(options, WEFT_ETLS, "cannot lock the options");
  SSL_CTX *ctx = options->ctx[role];
  CRYPTO_THREAD_unlock(options->lock);
  if (ctx != NULL) {
    *out = ctx;
    return 0;
  }
  if (!CRYPTO_THREAD_write_lock(options->lock))
    return fail(options, WEFT_ETLS, "cannot lock the options");
  int rc = 0;
  if (options->ctx[role] == NULL) { /* another thread may have built it meanwhile */
    rc = build_role(options, role, &ctx);
    if (rc == 0) {
      options->ctx[role] = ctx;
      atomic_store(&options->frozen, 1);
    }
  }
  *out = options->ctx[role];
  CRYPTO_THREAD_unlock(options->lock);
  return rc;
}

int weft_cert_options_prepare(weft_cert_options *options, weft_tls_role role) {
  SSL_CTX *ctx;
  return weft__tls_ctx(options, role, &ctx);
}

/* --- Identities (several per listener, chosen per connection) ------------------------------ */

int weft_tls_identity_new(weft_tls_identity **out) {
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  weft_tls_identity *id = weft__calloc(1, sizeof *id);
  if (id == NULL)
    return WEFT_ENOMEM;
  int rc = weft_cert_options_new(&id->own);
  if (rc != 0) {
    weft__free(id);
    return rc;
  }
  atomic_init(&id->refs, 1);
  *out = id;
  return 0;
}

weft_tls_identity *weft_tls_identity_ref(weft_tls_identity *identity) {
  if (identity != NULL)
    atomic_fetch_add_explicit(&identity->refs, 1, memory_order_relaxed);
  return identity;
}

void weft_tls_identity_unref(weft_tls_identity *identity) {
  if (identity == NULL || atomic_fetch_sub_explicit(&identity->refs, 1, memory_order_acq_rel) != 1)
    return;
  weft_cert_options_unref(identity->own);
  weft__free(identity);
}

const char *weft_tls_identity_last_error(const weft_tls_identity *identity) {
  return identity != NULL ? identity->own->last_error : "";
}

int weft_tls_identity_set_private_key(weft_tls_identity *identity, EVP_PKEY *pkey) {
  return identity == NULL ? WEFT_EINVAL : weft_cert_options_set_private_key(identity->own, pkey);
}

int weft_tls_identity_set_certificate(weft_tls_identity *identity, X509 *x509) {
  return identity == NULL ? WEFT_EINVAL : weft_cert_options_set_certificate(identity->own, x509);
}

int weft_tls_identity_add_chain_certificate(weft_tls_identity *identity, X509 *x509) {
  return identity == NULL ? WEFT_EINVAL
                          : weft_cert_options_add_chain_certificate(identity->own, x509);
}

int weft_tls_identity_load_private_key_file(weft_tls_identity *identity, const char *path) {
  return identity == NULL ? WEFT_EINVAL
                          : weft_cert_options_load_private_key_file(identity->own, path);
}

int weft_tls_identity_load_certificate_chain_file(weft_tls_identity *identity, const char *path) {
  return identity == NULL ? WEFT_EINVAL
                          : weft_cert_options_load_certificate_chain_file(identity->own, path);
}

int weft_tls_identity_set_next_protocols(weft_tls_identity *identity, const char *const *names,
                                         size_t count) {
  if (identity == NULL)
    return WEFT_EINVAL;
  int rc = weft_cert_options_set_next_protocols(identity->own, names, count);
  if (rc == 0)
    identity->has_protocols = 1;
  return rc;
}

int weft_tls_identity_set_require_certificate(weft_tls_identity *identity, int on) {
  if (identity == NULL)
    return WEFT_EINVAL;
  int rc = weft_cert_options_set_require_certificate(identity->own, on);
  if (rc == 0)
    identity->has_client_policy = 1;
  return rc;
}

int weft_tls_identity_add_ca_certificate(weft_tls_identity *identity, X509 *x509) {
  if (identity == NULL)
    return WEFT_EINVAL;
  int rc = weft_cert_options_add_ca_certificate(identity->own, x509);
  if (rc == 0)
    identity->has_client_policy = 1;
  return rc;
}

int weft_tls_identity_add_ticket_key_file(weft_tls_identity *identity, const char *path) {
  return identity == NULL ? WEFT_EINVAL
                          : weft_cert_options_add_ticket_key_file(identity->own, path);
}

int weft_tls_identity_load_ocsp_response_file(weft_tls_identity *identity, const char *path) {
  return identity == NULL ? WEFT_EINVAL
                          : weft_cert_options_load_ocsp_response_file(identity->own, path);
}

int weft_cert_options_add_identity(weft_cert_options *options, const char *const *names,
                                   size_t count, weft_tls_identity *identity) {
  CHECK_SETTABLE(options);
  if (identity == NULL)
    return fail(options, WEFT_EINVAL, "the identity is NULL");
  if (identity->own->key == NULL || identity->own->cert == NULL)
    return fail(options, WEFT_EINVAL, "an identity needs a private key and a certificate");
  weft__reason_buf err;
  int rc = weft__sni_add(&options->sni, names, count, identity, &err);
  if (rc != 0)
    return fail(options, rc, "%s", err.msg);
  weft_tls_identity_ref(identity);
  atomic_store(&identity->own->frozen, 1);
  return 0;
}

int weft_cert_options_set_sni_unknown_policy(weft_cert_options *options,
                                             weft_sni_unknown_policy policy) {
  CHECK_SETTABLE(options);
  if (policy != WEFT_SNI_UNKNOWN_DEFAULT && policy != WEFT_SNI_UNKNOWN_REJECT)
    return fail(options, WEFT_EINVAL, "unknown SNI policy %d", (int)policy);
  options->sni.reject_unknown = policy == WEFT_SNI_UNKNOWN_REJECT;
  return 0;
}

int weft_cert_options_set_identity_selector(weft_cert_options *options,
                                            weft_identity_selector selector, void *arg) {
  CHECK_SETTABLE(options);
  options->sni.selector = selector;
  options->sni.selector_arg = arg;
  return 0;
}

/* --- OCSP --------------------------------------------------------------------------------- */

int weft_cert_options_set_ocsp_response(weft_cert_options *options, const uint8_t *der,
                                        size_t len) {
  CHECK_SETTABLE(options);
  weft__reason_buf err;
  int rc = weft__ocsp_check_der(der, len, &err);
  if (rc != 0)
    return fail(options, rc, "%s", err.msg);
  uint8_t *copy = weft__malloc(len);
  if (copy == NULL)
    return fail(options, WEFT_ENOMEM, "out of memory");
  memcpy(copy, der, len);
  weft__free(options->ocsp.der);
  options->ocsp.der = copy;
  options->ocsp.len = len;
  return 0;
}

int weft_cert_options_load_ocsp_response_file(weft_cert_options *options, const char *path) {
  CHECK_SETTABLE(options);
  if (path == NULL)
    return fail(options, WEFT_EINVAL, "the OCSP response file name is NULL");
  enum { MAX = 1 << 20 };
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX) {
    int e = fd < 0 ? errno : 0;
    int regular = fd >= 0 && S_ISREG(st.st_mode);
    if (fd >= 0)
      close(fd);
    return fail(options, fd < 0 ? WEFT_EIO : WEFT_EINVAL,
                "cannot read the OCSP response file '%s': %s", path,
                e != 0    ? strerror(e)
                : regular ? "larger than 1 MiB"
                          : "not a regular file");
  }
  uint8_t *buf = weft__malloc((size_t)st.st_size + 1);
  size_t got = 0;
  int read_errno = 0;
  while (buf != NULL && got <= (size_t)st.st_size) {
    ssize_t n = read(fd, buf + got, (size_t)st.st_size + 1 - got);
    if (n > 0)
      got += (size_t)n;
    else if (n == 0)
      break;
    else if (errno != EINTR) {
      read_errno = errno;
      break;
    }
  }
  close(fd);
  int rc;
  if (buf == NULL)
    rc = fail(options, WEFT_ENOMEM, "out of memory");
  else if (read_errno != 0)
    rc = fail(options, WEFT_EIO, "cannot read the OCSP response file '%s': %s", path,
              strerror(read_errno));
  else if ((rc = weft_cert_options_set_ocsp_response(options, buf, got)) != 0) {
    char why[WEFT__REASON_MSG_MAX];
    snprintf(why, sizeof why, "%s", options->last_error);
    rc = fail(options, rc, "the OCSP response file '%s': %s", path, why);
  }
  weft__free(buf);
  return rc;
}

int weft_cert_options_set_require_ocsp(weft_cert_options *options, int on) {
  CHECK_SETTABLE(options);
  options->hooks.require_ocsp = on != 0;
  return 0;
}

/* --- Key log ------------------------------------------------------------------------------ */

int weft_cert_options_set_keylog_callback(weft_cert_options *options, weft_keylog_callback callback,
                                          void *arg) {
  CHECK_SETTABLE(options);
  options->hooks.keylog = callback;
  options->hooks.keylog_arg = arg;
  return 0;
}

int weft_cert_options_set_keylog_file(weft_cert_options *options, const char *path) {
  CHECK_SETTABLE(options);
  FILE *f = NULL;
  if (path != NULL) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0 || (f = fdopen(fd, "a")) == NULL) {
      int e = errno;
      if (fd >= 0)
        close(fd);
      return fail(options, WEFT_EIO, "cannot open the key log file '%s': %s", path, strerror(e));
    }
  }
  if (!options->hooks.keylog_lock_ready) {
    if (pthread_mutex_init(&options->hooks.keylog_lock, NULL) != 0) {
      if (f != NULL)
        fclose(f);
      return fail(options, WEFT_ENOMEM, "cannot create the key log lock");
    }
    options->hooks.keylog_lock_ready = 1;
  }
  if (options->hooks.keylog_file != NULL)
    fclose(options->hooks.keylog_file);
  options->hooks.keylog_file = f;
  return 0;
}

/* --- Verification hooks ------------------------------------------------------------------- */

int weft_cert_options_set_verify_callback(weft_cert_options *options, weft_verify_callback callback,
                                          void *arg) {
  CHECK_SETTABLE(options);
  options->hooks.verify = callback;
  options->hooks.verify_arg = arg;
  return 0;
}

int weft_cert_options_add_pin_sha256(weft_cert_options *options, const char *pin) {
  CHECK_SETTABLE(options);
  uint8_t digest[32];
  weft__reason_buf err;
  int rc = weft__pin_decode(pin, digest, &err);
  if (rc != 0)
    return fail(options, rc, "%s", err.msg);
  weft__hooks *h = &options->hooks;
  uint8_t(*pins)[32] = weft__realloc(h->pins, (h->pin_count + 1) * sizeof *pins);
  if (pins == NULL)
    return fail(options, WEFT_ENOMEM, "out of memory");
  memcpy(pins[h->pin_count], digest, 32);
  h->pins = pins;
  h->pin_count++;
  return 0;
}

/* --- Miscellaneous ------------------------------------------------------------------------ */

int weft_cert_options_set_require_protocol(weft_cert_options *options, int on) {
  CHECK_SETTABLE(options);
  options->nego.require_protocol = on != 0;
  return 0;
}

int weft_cert_options_set_tls13_tickets(weft_cert_options *options, unsigned count) {
  CHECK_SETTABLE(options);
  if (count > 16)
    return fail(options, WEFT_EINVAL, "%u TLS 1.3 tickets per handshake: at most 16", count);
  options->tls13_tickets = (int)count;
  return 0;
}
