/* Endpoint descriptions: Twisted's serverFromString / clientFromString strings, parsed into a
 * weft_endpoint.
 *
 * Two passes. The first splits the string into the kind and its arguments (unescaping `\:`,
 * `\=` and `\\`), and checks every argument against the kind's table of keys: unknown,
 * duplicate, empty and missing keys are reported before any file is read. The second applies
 * the values to a new endpoint and, for TLS kinds, to new certificate options, in a fixed order
 * (key before certificate, so a mismatch is reported on the certificate). Every error message
 * starts with the key at fault; values are quoted with unprintable bytes escaped and long ones
 * cut, so a hostile description cannot garble the message. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <weft/endpoint.h>
#include <weft/error.h>
#include <weft/tls.h>

#include "alloc-internal.h"
#include "endpoint-internal.h"

#define WEFT__DESC_MAX 4096 /* bytes in a description */
#define WEFT__ALPN_MAX 32   /* names in an alpn= list */
#define WEFT__QUOTE_MAX 40  /* bytes of a value quoted in a message */

/* Every key any kind takes. The names are Twisted's where Twisted has the key. */
#define WEFT__KEYS(X)                                                                              \
  X(HOST, "host")                                                                                  \
  X(PORT, "port")                                                                                  \
  X(INTERFACE, "interface")                                                                        \
  X(BACKLOG, "backlog")                                                                            \
  X(REUSEPORT, "reusePort")                                                                        \
  X(CONNLIMIT, "connectionLimit")                                                                  \
  X(WRITETIMEOUT, "writeTimeout")                                                                  \
  X(TIMEOUT, "timeout")                                                                            \
  X(BINDADDRESS, "bindAddress")                                                                    \
  X(PRIVATEKEY, "privateKey")                                                                      \
  X(CERTKEY, "certKey")                                                                            \
  X(CERTIFICATE, "certificate")                                                                    \
  X(CACERTS, "caCerts")                                                                            \
  X(CACERTSDIR, "caCertsDir")                                                                      \
  X(TRUSTROOTS, "trustRoots")                                                                      \
  X(REQUIRECERT, "requireCert")                                                                    \
  X(SERVERNAME, "serverName")                                                                      \
  X(ALPN, "alpn")                                                                                  \
  X(MECHANISMS, "mechanisms")                                                                      \
  X(NOOVERLAP, "noOverlap")                                                                        \
  X(TLSMIN, "tlsMin")                                                                              \
  X(TLSMAX, "tlsMax")                                                                              \
  X(HANDSHAKETIMEOUT, "handshakeTimeout")                                                          \
  X(PROXYSOURCES, "proxySources")                                                                  \
  X(PROXYTIMEOUT, "proxyTimeout")                                                                  \
  X(PERADDRESSLIMIT, "perAddressLimit")                                                            \
  X(ADDRESS, "address")                                                                            \
  X(PATH, "path")                                                                                  \
  X(MODE, "mode")                                                                                  \
  X(TLS, "tls")                                                                                    \
  X(DOMAIN, "domain")                                                                              \
  X(INDEX, "index")                                                                                \
  X(NAME, "name")                                                                                  \
  X(DUALSTACK, "dualStack")                                                                        \
  X(ATTEMPTDELAY, "attemptDelay")

enum {
#define WEFT__KEY_ENUM(id, name) K_##id,
  WEFT__KEYS(WEFT__KEY_ENUM)
#undef WEFT__KEY_ENUM
      K_COUNT
};

static const char *const key_names[K_COUNT] = {
#define WEFT__KEY_NAME(id, name) name,
    WEFT__KEYS(WEFT__KEY_NAME)
#undef WEFT__KEY_NAME
};

#define BIT(k) (UINT64_C(1) << (k))
#define TCP_SERVER_KEYS                                                                            \
  (BIT(K_PORT) | BIT(K_INTERFACE) | BIT(K_BACKLOG) | BIT(K_REUSEPORT) | BIT(K_CONNLIMIT) |         \
   BIT(K_WRITETIMEOUT) | BIT(K_PROXYSOURCES) | BIT(K_PROXYTIMEOUT) | BIT(K_PERADDRESSLIMIT) |      \
   BIT(K_DUALSTACK))
#define UNIX_SERVER_KEYS                                                                           \
  (BIT(K_ADDRESS) | BIT(K_MODE) | BIT(K_BACKLOG) | BIT(K_CONNLIMIT) | BIT(K_WRITETIMEOUT) |        \
   BIT(K_PROXYSOURCES) | BIT(K_PROXYTIMEOUT) | BIT(K_PERADDRESSLIMIT))
#define TCP_CLIENT_KEYS                                                                            \
  (BIT(K_HOST) | BIT(K_PORT) | BIT(K_TIMEOUT) | BIT(K_BINDADDRESS) | BIT(K_ATTEMPTDELAY))
#define TLS_COMMON_KEYS                                                                            \
  (BIT(K_ALPN) | BIT(K_MECHANISMS) | BIT(K_NOOVERLAP) | BIT(K_TLSMIN) | BIT(K_TLSMAX) |            \
   BIT(K_HANDSHAKETIMEOUT))

/* One kind for one role: its keys, which of them are required, and the keys its positional
 * arguments stand for, in order (K_COUNT ends the list). */
typedef struct kind {
  const char *name;
  weft_endpoint_role role;
  int tls; /* 0: plain, 1: TLS, 2: TLS when asked (unix:, see wants_tls) */
  uint64_t keys, required;
  int positional[4];
} kind;

static const kind kinds[] = {
    {"tcp",
     WEFT_ENDPOINT_SERVER,
     0,
     TCP_SERVER_KEYS,
     BIT(K_PORT),
     {K_PORT, K_INTERFACE, K_BACKLOG, K_COUNT}},
    {"ssl",
     WEFT_ENDPOINT_SERVER,
     1,
     TCP_SERVER_KEYS | TLS_COMMON_KEYS | BIT(K_PRIVATEKEY) | BIT(K_CERTKEY) | BIT(K_CACERTS) |
         BIT(K_REQUIRECERT),
     BIT(K_PORT) | BIT(K_PRIVATEKEY),
     {K_PORT, K_PRIVATEKEY, K_CERTKEY, K_COUNT}},
    {"unix",
     WEFT_ENDPOINT_SERVER,
     2,
     UNIX_SERVER_KEYS | TLS_COMMON_KEYS | BIT(K_PRIVATEKEY) | BIT(K_CERTKEY) | BIT(K_CACERTS) |
         BIT(K_REQUIRECERT),
     BIT(K_ADDRESS),
     {K_ADDRESS, K_COUNT}},
    {"systemd",
     WEFT_ENDPOINT_SERVER,
     2,
     BIT(K_DOMAIN) | BIT(K_INDEX) | BIT(K_NAME) | BIT(K_CONNLIMIT) | BIT(K_PERADDRESSLIMIT) |
         BIT(K_WRITETIMEOUT) | BIT(K_PROXYSOURCES) | BIT(K_PROXYTIMEOUT) | TLS_COMMON_KEYS |
         BIT(K_PRIVATEKEY) | BIT(K_CERTKEY) | BIT(K_CACERTS) | BIT(K_REQUIRECERT),
     BIT(K_DOMAIN),
     {K_COUNT}},
    {"unix",
     WEFT_ENDPOINT_CLIENT,
     2,
     BIT(K_PATH) | BIT(K_TIMEOUT) | BIT(K_TLS) | TLS_COMMON_KEYS | BIT(K_TRUSTROOTS) |
         BIT(K_CERTIFICATE) | BIT(K_PRIVATEKEY) | BIT(K_SERVERNAME),
     BIT(K_PATH),
     {K_PATH, K_COUNT}},
    {"tcp",
     WEFT_ENDPOINT_CLIENT,
     0,
     TCP_CLIENT_KEYS,
     BIT(K_HOST) | BIT(K_PORT),
     {K_HOST, K_PORT, K_COUNT}},
    {"tls",
     WEFT_ENDPOINT_CLIENT,
     1,
     TCP_CLIENT_KEYS | TLS_COMMON_KEYS | BIT(K_TRUSTROOTS) | BIT(K_CERTIFICATE) |
         BIT(K_PRIVATEKEY) | BIT(K_SERVERNAME),
     BIT(K_HOST) | BIT(K_PORT),
     {K_HOST, K_PORT, K_COUNT}},
    {"ssl",
     WEFT_ENDPOINT_CLIENT,
     1,
     TCP_CLIENT_KEYS | TLS_COMMON_KEYS | BIT(K_CACERTS) | BIT(K_CACERTSDIR) | BIT(K_CERTKEY) |
         BIT(K_PRIVATEKEY) | BIT(K_SERVERNAME),
     BIT(K_HOST) | BIT(K_PORT),
     {K_HOST, K_PORT, K_COUNT}},
};

/* The parser's state: the unescaped copy of the description and the values found in it. */
typedef struct parse {
  char *buf; /* the unescaped arguments, each NUL-terminated */
  const kind *kind;
  const char *values[K_COUNT]; /* NULL: not given */
  int haproxy;                 /* the description started with "haproxy:" */
  char *err;
  size_t err_size;
} parse;

/* Writes "WHAT..." into the caller's buffer and returns CODE. */
static int fail(parse *p, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(parse *p, int code, const char *fmt, ...) {
  if (p->err && p->err_size > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, p->err_size, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* S quoted for a message: printable ASCII as is, other bytes as \xNN, cut after
 * WEFT__QUOTE_MAX bytes with "...". OUT must hold 4 * WEFT__QUOTE_MAX + 8 bytes. */
#define QUOTE_SIZE (4 * WEFT__QUOTE_MAX + 8)
static const char *quote(char *out, const char *s) {
  size_t n = 0, i;
  out[n++] = '\'';
  for (i = 0; s[i] && i < WEFT__QUOTE_MAX; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x7f)
      out[n++] = (char)c;
    else
      n += (size_t)snprintf(out + n, 5, "\\x%02x", c);
  }
  out[n++] = '\'';
  if (s[i])
    memcpy(out + n, "...", 3), n += 3;
  out[n] = '\0';
  return out;
}

/* --- Pass 1: syntax and keys --------------------------------------------------------------- */

/* Records one argument (KEY NULL for a positional one, at position *NPOS). */
static int add_arg(parse *p, const char *key, char *value, int *npos) {
  char q[QUOTE_SIZE];
  int k;
  const char *kn = p->kind->name;
  const char *role = p->kind->role == WEFT_ENDPOINT_SERVER ? "server" : "client";
  if (key) {
    if (!*key)
      return fail(p, WEFT_EINVAL, "(empty key): an argument starts with '=' (value %s)",
                  quote(q, value));
    for (k = 0; k < K_COUNT && strcmp(key, key_names[k]) != 0; k++)
      ;
    if (k == K_COUNT || !(p->kind->keys & BIT(k)))
      return fail(p, WEFT_EINVAL, "%s: unknown key for %s %s endpoints", quote(q, key), kn, role);
  } else {
    int i;
    for (i = 0; i < *npos && p->kind->positional[i] != K_COUNT; i++)
      ;
    if (p->kind->positional[i] == K_COUNT)
      return fail(p, WEFT_EINVAL, "%s: too many positional arguments for %s %s endpoints",
                  quote(q, value), kn, role);
    k = p->kind->positional[(*npos)++];
  }
  if (p->values[k])
    return fail(p, WEFT_EINVAL, "%s: given twice", key_names[k]);
  if (!*value)
    return fail(p, WEFT_EINVAL, "%s: empty value", key_names[k]);
  size_t n = strlen(value); /* "[::1]" as well as "::1" (whose colons must be escaped) */
  if ((k == K_HOST || k == K_INTERFACE || k == K_BINDADDRESS) && n > 2 && value[0] == '[' &&
      value[n - 1] == ']') {
    memmove(value, value + 1, n - 2);
    value[n - 2] = '\0';
  }
  p->values[k] = value;
  return 0;
}

static int find_kind(parse *p, const char *name, weft_endpoint_role role) {
  char q[QUOTE_SIZE];
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (kinds[i].role == role && !strcmp(kinds[i].name, name)) {
      p->kind = &kinds[i];
      return 0;
    }
  if (role == WEFT_ENDPOINT_SERVER && !strcmp(name, "tls"))
    return fail(p, WEFT_EINVAL, "tls: a client endpoint kind (servers use ssl:)");
  if (!*name)
    return fail(p, WEFT_EINVAL, "kind: missing (the description starts with tcp:, ssl:, ...)");
  return fail(p, WEFT_EINVAL, "kind: unknown endpoint kind %s (%s)", quote(q, name),
              role == WEFT_ENDPOINT_SERVER ? "tcp, ssl, unix, systemd" : "tcp, tls, ssl, unix");
}

/* Splits DESC into the kind and its arguments, unescaping into P->buf. */
static int split(parse *p, const char *desc, weft_endpoint_role role) {
  size_t len = strlen(desc);
  if (len == 0)
    return fail(p, WEFT_EINVAL, "kind: empty description");
  if (len > WEFT__DESC_MAX)
    return fail(p, WEFT_EINVAL, "description too long (%zu bytes, at most %d)", len,
                WEFT__DESC_MAX);
  if (!(p->buf = weft__malloc(len + 1)))
    return fail(p, WEFT_ENOMEM, "out of memory");
  char *out = p->buf, *arg = out, *value = NULL; /* VALUE: after this argument's '=' */
  int nargs = -1, npos = 0; /* -1: the kind comes first; each key is taken once, so the
                               * number of arguments is bounded by the number of keys */
  for (size_t i = 0;; i++) {
    char c = desc[i];
    if (c == '\\') {
      char next = desc[i + 1];
      if (!next)
        return fail(p, WEFT_EINVAL, "trailing backslash at byte %zu (escape it as \\\\)", i);
      if (next != ':' && next != '=' && next != '\\')
        return fail(p, WEFT_EINVAL, "bad escape '\\%c' at byte %zu (only \\:, \\= and \\\\)",
                    next >= 0x20 && next < 0x7f ? next : '?', i);
      *out++ = next;
      i++;
      continue;
    }
    if (c == '=' && !value && nargs >= 0) {
      *out++ = '\0';
      value = out;
      continue;
    }
    if (c != ':' && c != '\0') {
      *out++ = c;
      continue;
    }
    *out++ = '\0'; /* the end of an argument */
    int rc;
    if (nargs < 0)
      rc = find_kind(p, arg, role);
    else
      rc = value ? add_arg(p, arg, value, &npos) : add_arg(p, NULL, arg, &npos);
    if (rc != 0)
      return rc;
    if (c == '\0')
      return 0;
    nargs++;
    arg = out, value = NULL;
  }
}

static int check_required(parse *p) {
  for (int k = 0; k < K_COUNT; k++)
    if ((p->kind->required & BIT(k)) && !p->values[k])
      return fail(p, WEFT_EINVAL, "%s: required for %s %s endpoints", key_names[k], p->kind->name,
                  p->kind->role == WEFT_ENDPOINT_SERVER ? "server" : "client");
  return 0;
}

/* --- Values ---------------------------------------------------------------------------------- */

/* A decimal integer of digits only (no sign, no blanks) within MIN..MAX. */
static int get_int(parse *p, int k, long min, long max, long *out) {
  char q[QUOTE_SIZE];
  const char *s = p->values[k];
  long v = 0;
  size_t i;
  for (i = 0; s[i] >= '0' && s[i] <= '9'; i++)
    if ((v = v * 10 + (s[i] - '0')) > max)
      return fail(p, WEFT_EINVAL, "%s: out of range %s (%ld to %ld)", key_names[k], quote(q, s),
                  min, max);
  if (s[i] || i == 0)
    return fail(p, WEFT_EINVAL, "%s: not a number %s", key_names[k], quote(q, s));
  if (v < min)
    return fail(p, WEFT_EINVAL, "%s: out of range %s (%ld to %ld)", key_names[k], quote(q, s), min,
                max);
  *out = v;
  return 0;
}

/* Seconds: digits with at most one '.', above 0 and at most 1e6. */
static int get_seconds(parse *p, int k, double *out) {
  char q[QUOTE_SIZE];
  const char *s = p->values[k];
  size_t digits = strspn(s, "0123456789."), dots = 0;
  for (const char *c = s; *c; c++)
    dots += *c == '.';
  char *end = "";
  double v = s[digits] || dots > 1 || strlen(s) > 20 ? -1 : strtod(s, &end);
  if (v < 0 || *end)
    return fail(p, WEFT_EINVAL, "%s: not a number of seconds %s", key_names[k], quote(q, s));
  if (!(v > 0) || v > 1e6)
    return fail(p, WEFT_EINVAL, "%s: out of range %s (more than 0, at most 1000000 seconds)",
                key_names[k], quote(q, s));
  *out = v;
  return 0;
}

static int get_bool(parse *p, int k, int *out) {
  char q[QUOTE_SIZE];
  const char *s = p->values[k];
  if (!strcmp(s, "yes") || !strcmp(s, "true"))
    return *out = 1, 0;
  if (!strcmp(s, "no") || !strcmp(s, "false"))
    return *out = 0, 0;
  return fail(p, WEFT_EINVAL, "%s: not yes or no %s", key_names[k], quote(q, s));
}

static int get_tls_version(parse *p, int k, int *out) {
  char q[QUOTE_SIZE];
  const char *s = p->values[k];
  if (!strcmp(s, "1.2"))
    return *out = WEFT_TLS1_2, 0;
  if (!strcmp(s, "1.3"))
    return *out = WEFT_TLS1_3, 0;
  return fail(p, WEFT_EINVAL, "%s: not a TLS version weft speaks (1.2 or 1.3) %s", key_names[k],
              quote(q, s));
}

/* --- Pass 2: the endpoint -------------------------------------------------------------------- */

/* Reports a failed weft_cert_options call on key K with the options' own sentence. */
static int opt_fail(parse *p, int k, weft_cert_options *o, int rc) {
  const char *why = weft_cert_options_last_error(o);
  return fail(p, rc, "%s: %s", key_names[k], *why ? why : weft_strerror(rc));
}

static int apply_alpn(parse *p, weft_cert_options *o) {
  char q[QUOTE_SIZE];
  const char *list = p->values[K_ALPN];
  char *copy = weft__strdup(list);
  if (!copy)
    return fail(p, WEFT_ENOMEM, "out of memory");
  const char *names[WEFT__ALPN_MAX];
  size_t n = 0;
  int rc = 0;
  for (char *name = copy; name && rc == 0; n++) {
    char *comma = strchr(name, ',');
    if (comma)
      *comma = '\0';
    if (n == WEFT__ALPN_MAX)
      rc = fail(p, WEFT_EINVAL, "alpn: more than %d protocols", WEFT__ALPN_MAX);
    else if (!*name)
      rc = fail(p, WEFT_EINVAL, "alpn: empty protocol name in %s", quote(q, list));
    else
      names[n] = name;
    name = comma ? comma + 1 : NULL;
  }
  if (rc == 0 && (rc = weft_cert_options_set_next_protocols(o, names, n)) != 0)
    rc = opt_fail(p, K_ALPN, o, rc);
  weft__free(copy);
  return rc;
}

/* The TLS settings, in an order where each depends only on those before it. */
static int apply_tls(parse *p, weft_cert_options *o) {
  const char *const *v = p->values;
  int rc = 0, on, min = WEFT_TLS1_2, max = WEFT_TLS1_3;
  double seconds;
  char q[QUOTE_SIZE];
  /* Server: privateKey, certKey (default: the key file). Client: certificate, privateKey
   * (tls:, default: the certificate file) or certKey, privateKey (ssl:). */
  int cert_key = v[K_CERTIFICATE] ? K_CERTIFICATE : K_CERTKEY;
  const char *cert = v[cert_key], *key = v[K_PRIVATEKEY];
  if (p->kind->role == WEFT_ENDPOINT_SERVER && !cert)
    cert = key;
  if (p->kind->role == WEFT_ENDPOINT_CLIENT && key && !cert)
    return fail(p, WEFT_EINVAL, "privateKey: needs %s (the client certificate)",
                !strcmp(p->kind->name, "tls") ? "certificate" : "certKey");
  if (p->kind->role == WEFT_ENDPOINT_CLIENT && cert && !key)
    key = cert;
  if (key && (rc = weft_cert_options_load_private_key_file(o, key)) != 0)
    return opt_fail(p, K_PRIVATEKEY, o, rc);
  if (cert && (rc = weft_cert_options_load_certificate_chain_file(o, cert)) != 0)
    return opt_fail(p, v[cert_key] ? cert_key : K_PRIVATEKEY, o, rc);
  if (v[K_CACERTS] && (rc = weft_cert_options_load_ca_file(o, v[K_CACERTS])) != 0)
    return opt_fail(p, K_CACERTS, o, rc);
  if (v[K_CACERTSDIR] && (rc = weft_cert_options_load_ca_dir(o, v[K_CACERTSDIR])) != 0)
    return opt_fail(p, K_CACERTSDIR, o, rc);
  if (v[K_TRUSTROOTS]) { /* Twisted: a PEM file, or a directory of them */
    struct stat st;
    int dir = stat(v[K_TRUSTROOTS], &st) == 0 && S_ISDIR(st.st_mode);
    rc = dir ? weft_cert_options_load_ca_dir(o, v[K_TRUSTROOTS])
             : weft_cert_options_load_ca_file(o, v[K_TRUSTROOTS]);
    if (rc != 0)
      return opt_fail(p, K_TRUSTROOTS, o, rc);
  }
  if (v[K_REQUIRECERT]) {
    if ((rc = get_bool(p, K_REQUIRECERT, &on)) != 0)
      return rc;
    if ((rc = weft_cert_options_set_require_certificate(o, on)) != 0)
      return opt_fail(p, K_REQUIRECERT, o, rc);
  }
  if (v[K_ALPN] && (rc = apply_alpn(p, o)) != 0)
    return rc;
  if (v[K_MECHANISMS]) {
    const char *m = v[K_MECHANISMS];
    unsigned mask = !strcmp(m, "alpn")   ? WEFT_MECH_ALPN
                    : !strcmp(m, "npn")  ? WEFT_MECH_NPN
                    : !strcmp(m, "both") ? WEFT_MECH_ALPN | WEFT_MECH_NPN
                                         : 0;
    if (!mask)
      return fail(p, WEFT_EINVAL, "mechanisms: not alpn, npn or both %s", quote(q, m));
    if ((rc = weft_cert_options_set_negotiation_mechanisms(o, mask)) != 0)
      return opt_fail(p, K_MECHANISMS, o, rc);
  }
  if (v[K_NOOVERLAP]) {
    const char *s = v[K_NOOVERLAP];
    if (strcmp(s, "fail") != 0 && strcmp(s, "continue") != 0)
      return fail(p, WEFT_EINVAL, "noOverlap: not fail or continue %s", quote(q, s));
    rc = weft_cert_options_set_no_overlap_policy(o, !strcmp(s, "fail") ? WEFT_NO_OVERLAP_FAIL
                                                                       : WEFT_NO_OVERLAP_CONTINUE);
    if (rc != 0)
      return opt_fail(p, K_NOOVERLAP, o, rc);
  }
  if (v[K_TLSMIN] && (rc = get_tls_version(p, K_TLSMIN, &min)) != 0)
    return rc;
  if (v[K_TLSMAX] && (rc = get_tls_version(p, K_TLSMAX, &max)) != 0)
    return rc;
  if (min > max)
    return fail(p, WEFT_EINVAL, "%s: tlsMin %s is above tlsMax %s",
                v[K_TLSMAX] ? "tlsMax" : "tlsMin", min == WEFT_TLS1_3 ? "1.3" : "1.2",
                max == WEFT_TLS1_3 ? "1.3" : "1.2");
  if ((v[K_TLSMIN] || v[K_TLSMAX]) && (rc = weft_cert_options_set_tls_versions(o, min, max)) != 0)
    return opt_fail(p, v[K_TLSMAX] ? K_TLSMAX : K_TLSMIN, o, rc);
  if (v[K_HANDSHAKETIMEOUT]) {
    if ((rc = get_seconds(p, K_HANDSHAKETIMEOUT, &seconds)) != 0)
      return rc;
    if ((rc = weft_cert_options_set_handshake_timeout(o, seconds)) != 0)
      return opt_fail(p, K_HANDSHAKETIMEOUT, o, rc);
  }
  return 0;
}

/* The address, limits and time-outs. */
static int apply_plain(parse *p, weft_endpoint *ep) {
  const char *const *v = p->values;
  char q[QUOTE_SIZE];
  long n;
  double seconds;
  int rc, on;
  int server = p->kind->role == WEFT_ENDPOINT_SERVER;
  if (v[K_PORT]) {
    if ((rc = get_int(p, K_PORT, server ? 0 : 1, 65535, &n)) != 0)
      return rc;
    weft_endpoint_set_port(ep, (int)n);
  }
  const char *unix_path = v[K_ADDRESS] ? v[K_ADDRESS] : v[K_PATH];
  if (unix_path && (rc = weft_endpoint_set_unix_path(ep, unix_path)) != 0)
    return fail(p, rc, "%s: %s %s", v[K_ADDRESS] ? "address" : "path",
                rc == WEFT_ENOMEM ? "out of memory" : "not a usable Unix socket path",
                quote(q, unix_path));
  if (v[K_DOMAIN]) { /* systemd: */
    const char *d = v[K_DOMAIN];
    int family = !strcmp(d, "INET")    ? AF_INET
                 : !strcmp(d, "INET6") ? AF_INET6
                 : !strcmp(d, "UNIX")  ? AF_UNIX
                                       : -1;
    if (family < 0)
      return fail(p, WEFT_EINVAL, "domain: not INET, INET6 or UNIX %s", quote(q, d));
    if (!v[K_INDEX] == !v[K_NAME])
      return fail(p, WEFT_EINVAL, "index: give index=N or name=NAME (one of them)");
    n = 0;
    if (v[K_INDEX] && (rc = get_int(p, K_INDEX, 0, 4095, &n)) != 0)
      return rc;
    if ((rc = weft_endpoint_set_systemd(ep, family, (int)n, v[K_NAME])) != 0)
      return fail(p, rc, "name: %s", rc == WEFT_ENOMEM ? "out of memory" : "not a usable name");
  }
  if (v[K_MODE]) {
    const char *m = v[K_MODE];
    char *end;
    long mode = strspn(m, "01234567") == strlen(m) && strlen(m) <= 5 ? strtol(m, &end, 8) : -1;
    if (mode < 0 || mode > 07777)
      return fail(p, WEFT_EINVAL, "mode: not an octal file mode %s (e.g. 0660)", quote(q, m));
    weft_endpoint_set_unix_mode(ep, (int)mode);
  }
  if (v[K_INTERFACE] && !weft__endpoint_is_ip(v[K_INTERFACE]))
    return fail(p, WEFT_EINVAL, "interface: not an IP address %s", quote(q, v[K_INTERFACE]));
  if (v[K_HOST]) {
    const char *h = v[K_HOST];
    if (strlen(h) > 255)
      return fail(p, WEFT_EINVAL, "host: too long (%zu bytes, at most 255)", strlen(h));
    for (const unsigned char *c = (const unsigned char *)h; *c; c++)
      if (*c <= 0x20 || *c >= 0x7f)
        return fail(p, WEFT_EINVAL,
                    "host: a blank, control or non-ASCII byte in %s (use the IDNA form)",
                    quote(q, h));
  }
  if ((v[K_HOST] || v[K_INTERFACE]) &&
      (rc = weft_endpoint_set_host(ep, server ? v[K_INTERFACE] : v[K_HOST])) != 0)
    return fail(p, rc, "%s: cannot be set", server ? "interface" : "host");
  if (v[K_BACKLOG]) {
    if ((rc = get_int(p, K_BACKLOG, 1, 65535, &n)) != 0)
      return rc;
    weft_endpoint_set_backlog(ep, (int)n);
  }
  if (v[K_DUALSTACK]) {
    if ((rc = get_bool(p, K_DUALSTACK, &on)) != 0)
      return rc;
    weft_endpoint_set_dual_stack(ep, on);
  }
  if (v[K_REUSEPORT]) {
    if ((rc = get_bool(p, K_REUSEPORT, &on)) != 0)
      return rc;
    weft_endpoint_set_reuseport(ep, on);
  }
  if (v[K_CONNLIMIT]) {
    if ((rc = get_int(p, K_CONNLIMIT, 0, 1000000000, &n)) != 0)
      return rc;
    weft_endpoint_set_connection_limit(ep, (unsigned)n);
  }
  if (v[K_PERADDRESSLIMIT]) {
    if ((rc = get_int(p, K_PERADDRESSLIMIT, 0, 1000000000, &n)) != 0)
      return rc;
    weft_endpoint_set_per_address_limit(ep, (unsigned)n);
  }
  if (v[K_WRITETIMEOUT]) {
    if ((rc = get_seconds(p, K_WRITETIMEOUT, &seconds)) != 0)
      return rc;
    weft_endpoint_set_write_timeout(ep, seconds);
  }
  if (v[K_TIMEOUT]) {
    if ((rc = get_seconds(p, K_TIMEOUT, &seconds)) != 0)
      return rc;
    weft_endpoint_set_timeout(ep, seconds);
  }
  if (v[K_ATTEMPTDELAY]) {
    if ((rc = get_seconds(p, K_ATTEMPTDELAY, &seconds)) != 0)
      return rc;
    if (weft_endpoint_set_attempt_delay(ep, seconds) != 0)
      return fail(p, WEFT_EINVAL, "attemptDelay: out of range %s (at most 60 seconds)",
                  quote(q, v[K_ATTEMPTDELAY]));
  }
  if (v[K_BINDADDRESS] && weft_endpoint_set_bind_address(ep, v[K_BINDADDRESS]) != 0)
    return fail(p, WEFT_EINVAL, "bindAddress: not an IP address %s", quote(q, v[K_BINDADDRESS]));
  if (v[K_SERVERNAME] && weft_endpoint_set_server_name(ep, v[K_SERVERNAME]) != 0)
    return fail(p, WEFT_EINVAL, "serverName: too long (%zu bytes, at most 255)",
                strlen(v[K_SERVERNAME]));
  return 0;
}

/* A unix: description is TLS when it says so: the server with privateKey=, the client with
 * tls=yes. Returns 1 (TLS), 0 (plain) or an error for TLS keys on a plain one. */
static int wants_tls(parse *p) {
  int on = 0, rc;
  if (p->kind->role == WEFT_ENDPOINT_SERVER)
    on = p->values[K_PRIVATEKEY] != NULL;
  else if (p->values[K_TLS] && (rc = get_bool(p, K_TLS, &on)) != 0)
    return rc;
  if (on)
    return 1;
  for (int k = 0; k < K_COUNT; k++)
    if (p->values[k] && k != K_TLS && k != K_PRIVATEKEY &&
        (TLS_COMMON_KEYS | BIT(K_CERTKEY) | BIT(K_CACERTS) | BIT(K_REQUIRECERT) |
         BIT(K_TRUSTROOTS) | BIT(K_CERTIFICATE) | BIT(K_SERVERNAME)) &
            BIT(k))
      return fail(p, WEFT_EINVAL, "%s: a TLS key on a plain unix: endpoint (%s)", key_names[k],
                  p->kind->role == WEFT_ENDPOINT_SERVER ? "give privateKey= for TLS"
                                                        : "give tls=yes for TLS");
  return 0;
}

static int build(parse *p, weft_endpoint_role role, weft_endpoint **out) {
  weft_endpoint *ep;
  weft_cert_options *o = NULL;
  int rc = weft_endpoint_new(role, &ep);
  if (rc != 0)
    return fail(p, rc, "out of memory");
  if ((rc = apply_plain(p, ep)) == 0 && p->kind->tls == 2)
    rc = wants_tls(p);
  if (rc > 0 || (rc == 0 && p->kind->tls == 1)) {
    if ((rc = weft_cert_options_new(&o)) != 0)
      rc = fail(p, rc, "out of memory");
    else if ((rc = apply_tls(p, o)) == 0)
      weft_endpoint_set_tls(ep, o);
    weft_cert_options_unref(o); /* the endpoint holds its own reference */
  }
  if (rc == 0 && p->haproxy) {
    double seconds = 0;
    if (p->values[K_PROXYTIMEOUT])
      rc = get_seconds(p, K_PROXYTIMEOUT, &seconds);
    if (rc == 0 && (rc = weft_endpoint_set_proxy_protocol(ep, WEFT_PROXY_V1 | WEFT_PROXY_V2,
                                                          p->values[K_PROXYSOURCES], seconds)))
      rc = fail(p, rc, "proxySources: %s",
                rc == WEFT_ENOMEM ? "out of memory"
                                  : "not a comma-separated list of IP[/BITS] prefixes");
  } else if (rc == 0 && (p->values[K_PROXYSOURCES] || p->values[K_PROXYTIMEOUT])) {
    rc = fail(p, WEFT_EINVAL, "%s: only after the haproxy: prefix",
              p->values[K_PROXYSOURCES] ? "proxySources" : "proxyTimeout");
  }
  if (rc != 0) {
    weft_endpoint_free(ep);
    return rc;
  }
  *out = ep;
  return 0;
}

int weft_endpoint_parse(const char *description, weft_endpoint_role role, weft_endpoint **out,
                        char *err, size_t err_size) {
  parse p = {.err = err, .err_size = err_size};
  if (err && err_size > 0)
    err[0] = '\0';
  if (out)
    *out = NULL;
  if (!description || !out || (role != WEFT_ENDPOINT_SERVER && role != WEFT_ENDPOINT_CLIENT))
    return fail(&p, WEFT_EINVAL, "%s: NULL or unknown role",
                !description ? "description"
                : !out       ? "out"
                             : "role");
  if (!strncmp(description, "haproxy:", 8)) {
    if (role != WEFT_ENDPOINT_SERVER)
      return fail(&p, WEFT_EINVAL, "haproxy: a prefix of server descriptions only");
    p.haproxy = 1;
    description += 8;
  }
  int rc = split(&p, description, role);
  if (rc == 0)
    rc = check_required(&p);
  if (rc == 0)
    rc = build(&p, role, out);
  weft__free(p.buf);
  return rc;
}
