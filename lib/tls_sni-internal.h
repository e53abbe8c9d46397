/* Private: choosing a server identity (an SSL_CTX) per connection from the ClientHello (SNI
 * name, ALPN offer). Defined in tls_sni.c, below tls_options.c: it knows tables of names and
 * SSL_CTXs, never the options that built them. */
#ifndef WEFT_TLS_SNI_INTERNAL_H
#define WEFT_TLS_SNI_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include <weft/tls.h>

#include "error-internal.h"
#include "negotiation-internal.h"

/* One identity of a listener: its names (lower case; "*.example.com" matches one label), the
 * opaque identity the user's selector returns, and its frozen SSL_CTX (one reference). */
typedef struct weft__sni_entry {
  char **names;
  size_t count;
  const weft_tls_identity *identity;
  SSL_CTX *ctx;
  weft__nego_config nego; /* an identity with its own list: that list, the listener's rest */
} weft__sni_entry;

/* The identities of one options object, in the order added. Lives inside the options. */
typedef struct weft__sni {
  weft__sni_entry *entries;
  size_t count;
  int reject_unknown;              /* a name that matches nothing gets alert 112 */
  weft_identity_selector selector; /* or NULL */
  void *selector_arg;
} weft__sni;

/* 1 if the host NAME matches PATTERN (both compared without case): equal, or PATTERN is
 * "*.REST" and NAME is one non-empty label followed by ".REST". Pure. */
int weft__sni_match(const char *pattern, const char *name);

/* The index of the entry NAME selects (exact names first, in order, then wildcards), or -1. */
int weft__sni_find(const weft__sni *sni, const char *name);

/* Appends an entry for IDENTITY with COUNT NAMES (copied, lower-cased; validated: 1..255 bytes,
 * a wildcard only as a whole first label followed by at least two labels). CTX is set later.
 * Returns 0, or WEFT_EINVAL / WEFT_ENOMEM with a sentence in ERR. */
int weft__sni_add(weft__sni *sni, const char *const *names, size_t count,
                  const weft_tls_identity *identity, weft__reason_buf *err);

/* Installs the ClientHello callback on the listener's default CTX when there is anything to
 * choose (identities, a selector, or the reject policy): it reads SNI and the ALPN offer,
 * asks the selector, else matches the names, and switches the SSL to the chosen identity's
 * CTX (SSL_set_SSL_CTX, plus the verify mode, depth, options and ticket count, which OpenSSL
 * copies to an SSL only at SSL_new). SNI must outlive CTX. Returns 0 or WEFT_ETLS. */
int weft__sni_install(SSL_CTX *ctx, weft__sni *sni, weft__reason_buf *err);

/* Frees the names, the table and the entries' SSL_CTXs (not the identities). */
void weft__sni_cleanup(weft__sni *sni);

#endif
