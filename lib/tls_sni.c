/* tls_sni.c: several identities on one listener. The ClientHello callback sees the SNI name
 * and the ALPN offer before OpenSSL selects ALPN (or looks up a session), so switching the
 * SSL to an identity's own SSL_CTX there makes that identity's certificate, ALPN callback,
 * client-certificate policy, session id context and ticket keys apply, as if it were its own
 * listener. Below tls_options.c: it knows names and SSL_CTXs only. */
#include "config.h"

#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/tls1.h>

#include "alloc-internal.h"
#include "tls_sni-internal.h"

static char lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int equal_nocase(const char *a, const char *b) {
  for (; *a != '\0' && *b != '\0'; a++, b++) {
    if (lower(*a) != lower(*b))
      return 0;
  }
  return *a == *b;
}

int weft__sni_match(const char *pattern, const char *name) {
  if (pattern == NULL || name == NULL || name[0] == '\0')
    return 0;
  if (pattern[0] != '*' || pattern[1] != '.')
    return equal_nocase(pattern, name);
  const char *dot = strchr(name, '.');
  /* one whole, non-empty label: "*.example.com" matches "a.example.com", not "example.com",
   * "a.b.example.com" or ".example.com" */
  return dot != NULL && dot != name && equal_nocase(pattern + 1, dot);
}

int weft__sni_find(const weft__sni *sni, const char *name) {
  if (name == NULL)
    return -1;
  for (int wild = 0; wild < 2; wild++) {
    for (size_t i = 0; i < sni->count; i++) {
      for (size_t k = 0; k < sni->entries[i].count; k++) {
        const char *p = sni->entries[i].names[k];
        if ((p[0] == '*') == wild && weft__sni_match(p, name))
          return (int)i;
      }
    }
  }
  return -1;
}

/* A DNS name or a one-label wildcard: 1..255 bytes of letters, digits, '-', '.', '_'. */
static int valid_name(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 255 || name[0] == '.' || name[n - 1] == '.')
    return 0;
  const char *rest = name;
  if (name[0] == '*') {
    if (name[1] != '.' || strchr(name + 2, '.') == NULL)
      return 0; /* "*.com" would match every name of a top-level domain */
    rest = name + 2;
  }
  for (const char *c = rest; *c != '\0'; c++) {
    int ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
             *c == '-' || *c == '_' || (*c == '.' && c[1] != '.');
    if (!ok)
      return 0;
  }
  return 1;
}

int weft__sni_add(weft__sni *sni, const char *const *names, size_t count,
                  const weft_tls_identity *identity, weft__reason_buf *err) {
  if (identity == NULL || (count > 0 && names == NULL)) {
    weft__reason_set(err, WEFT_EINVAL, "the identity or its name list is NULL");
    return WEFT_EINVAL;
  }
  for (size_t i = 0; i < count; i++) {
    if (names[i] == NULL || !valid_name(names[i])) {
      weft__reason_set(err, WEFT_EINVAL,
                       "identity name #%zu ('%s') is not a host name or a one-label wildcard "
                       "such as *.example.com",
                       i + 1, names[i] != NULL ? names[i] : "(null)");
      return WEFT_EINVAL;
    }
  }
  weft__sni_entry *entries = weft__realloc(sni->entries, (sni->count + 1) * sizeof *entries);
  if (entries == NULL)
    goto nomem;
  sni->entries = entries;
  weft__sni_entry *e = &entries[sni->count];
  memset(e, 0, sizeof *e);
  if (count > 0 && (e->names = weft__calloc(count, sizeof *e->names)) == NULL)
    goto nomem;
  for (size_t i = 0; i < count; i++) {
    if ((e->names[i] = weft__strdup(names[i])) == NULL) {
      for (size_t k = 0; k < i; k++)
        weft__free(e->names[k]);
      weft__free(e->names);
      goto nomem;
    }
    for (char *c = e->names[i]; *c != '\0'; c++)
      *c = lower(*c);
  }
  e->count = count;
  e->identity = identity;
  sni->count++;
  return 0;
nomem:
  weft__reason_set(err, WEFT_ENOMEM, "out of memory");
  return WEFT_ENOMEM;
}

void weft__sni_cleanup(weft__sni *sni) {
  for (size_t i = 0; i < sni->count; i++) {
    for (size_t k = 0; k < sni->entries[i].count; k++)
      weft__free(sni->entries[i].names[k]);
    weft__free(sni->entries[i].names);
    SSL_CTX_free(sni->entries[i].ctx);
  }
  weft__free(sni->entries);
  memset(sni, 0, sizeof *sni);
}

/* The host name of the ClientHello's server_name extension (RFC 6066 3) into BUF, or "" when
 * there is none. Returns 0, or -1 when the extension is malformed. */
static int client_hello_name(SSL *ssl, char *buf, size_t size) {
  const unsigned char *p;
  size_t len;
  buf[0] = '\0';
  if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len))
    return 0;
  if (len < 2 || (size_t)((p[0] << 8) | p[1]) != len - 2)
    return -1;
  p += 2;
  len -= 2;
  while (len >= 3) {
    size_t n = (size_t)((p[1] << 8) | p[2]);
    if (n > len - 3)
      return -1;
    if (p[0] == TLSEXT_NAMETYPE_host_name) {
      if (n == 0 || n >= size || memchr(p + 3, '\0', n) != NULL)
        return -1;
      memcpy(buf, p + 3, n);
      buf[n] = '\0';
      return 0;
    }
    p += 3 + n;
    len -= 3 + n;
  }
  return len == 0 ? 0 : -1;
}

/* The ALPN offer of the ClientHello in wire form (without its 2-byte length), or none. */
static void client_hello_alpn(SSL *ssl, const uint8_t **offer, size_t *len) {
  const unsigned char *p;
  size_t n;
  *offer = NULL;
  *len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p, &n) &&
      n >= 2 && (size_t)((p[0] << 8) | p[1]) == n - 2) {
    *offer = p + 2;
    *len = n - 2;
  }
}

static int switch_to(SSL *ssl, SSL_CTX *ctx) {
  if (ctx == SSL_get_SSL_CTX(ssl))
    return 0;
  if (SSL_set_SSL_CTX(ssl, ctx) != ctx)
    return -1;
  /* what SSL_new copied from the listener's context, taken from the identity's now */
  SSL_set_verify(ssl, SSL_CTX_get_verify_mode(ctx), SSL_CTX_get_verify_callback(ctx));
  SSL_set_verify_depth(ssl, SSL_CTX_get_verify_depth(ctx));
  SSL_clear_options(ssl, SSL_get_options(ssl) & ~SSL_CTX_get_options(ctx));
  SSL_set_options(ssl, SSL_CTX_get_options(ctx));
  SSL_set_num_tickets(ssl, SSL_CTX_get_num_tickets(ctx));
  return 0;
}

static int client_hello_cb(SSL *ssl, int *alert, void *arg) {
  const weft__sni *sni = arg;
  char name[256];
  if (client_hello_name(ssl, name, sizeof name) != 0) {
    *alert = SSL_AD_DECODE_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
  int index = -1;
  int decided = 0;
  if (sni->selector != NULL) {
    const uint8_t *offer;
    size_t offer_len;
    client_hello_alpn(ssl, &offer, &offer_len);
    weft_tls_identity *chosen = NULL;
    int rc =
        sni->selector(sni->selector_arg, name[0] != '\0' ? name : NULL, offer, offer_len, &chosen);
    if (rc < 0) {
      *alert = SSL_AD_UNRECOGNIZED_NAME;
      return SSL_CLIENT_HELLO_ERROR;
    }
    if (rc > 0) {
      for (size_t i = 0; chosen != NULL && i < sni->count && index < 0; i++) {
        if (sni->entries[i].identity == chosen)
          index = (int)i;
      }
      if (index < 0 && chosen != NULL) { /* not one of this listener's: a bug, refuse */
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
      }
      decided = 1; /* an identity, or NULL: the default one */
    }
  }
  if (!decided && name[0] != '\0') {
    index = weft__sni_find(sni, name);
    if (index < 0 && sni->reject_unknown) {
      *alert = SSL_AD_UNRECOGNIZED_NAME;
      return SSL_CLIENT_HELLO_ERROR;
    }
  }
  if (index >= 0 && switch_to(ssl, sni->entries[index].ctx) != 0) {
    ERR_clear_error();
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

int weft__sni_install(SSL_CTX *ctx, weft__sni *sni, weft__reason_buf *err) {
  (void)err;
  if (sni->count == 0 && sni->selector == NULL && !sni->reject_unknown)
    return 0;
  SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, sni);
  return 0;
}
