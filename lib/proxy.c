/* The PROXY protocol (HAProxy's doc/proxy-protocol.txt), versions 1 and 2: the parser the
 * listener runs on the first bytes of an accepted connection (before any TLS), the writer a
 * client uses to send a header, the trusted-source prefixes, and the TLVs a transport keeps.
 *
 * The parser is a pure function of the bytes given: it says "a whole header of N bytes", "a
 * valid beginning, give me more" or "refused, because ...". The listener uses the length to
 * consume exactly the header from the socket, so bytes after it (a ClientHello in the same
 * segment) stay in the kernel for the transport. Every length in a version 2 header is checked
 * against the bytes it claims before anything is read through it. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <weft/error.h>

#include "alloc-internal.h"
#include "proxy-internal.h"
#include "transport-internal.h"

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
#define V1_MAX 107 /* "PROXY TCP6 " + 2 * 39 + 2 * 5 + 3 blanks + CRLF, per the spec */

static long refuse(char *why, size_t why_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static long refuse(char *why, size_t why_size, const char *fmt, ...) {
  if (why && why_size > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
  }
  return WEFT_EPROXY;
}

/* --- version 1: "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" or "PROXY UNKNOWN ...\r\n" ---------- */

/* A port: 1 to 5 digits, no leading zero (but "0"), at most 65535. */
static int v1_port(const char *s, size_t n, unsigned *out) {
  unsigned v = 0;
  if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > 65535)
    return -1;
  *out = v;
  return 0;
}

static int v1_addr(int family, const char *s, size_t n, unsigned port, struct sockaddr_storage *ss,
                   socklen_t *len) {
  char ip[INET6_ADDRSTRLEN];
  if (n == 0 || n >= sizeof ip)
    return -1;
  memcpy(ip, s, n);
  ip[n] = '\0';
  memset(ss, 0, sizeof *ss);
  if (family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, ip, &in->sin_addr) != 1)
      return -1;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    *len = sizeof *in;
  } else {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, ip, &in6->sin6_addr) != 1)
      return -1;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    *len = sizeof *in6;
  }
  return 0;
}

static long parse_v1(const uint8_t *buf, size_t len, weft__proxy_header *out, char *why,
                     size_t ws) {
  static const char prefix[] = "PROXY ";
  size_t i;
  for (i = 0; i < len && i < 6; i++)
    if (buf[i] != (uint8_t)prefix[i])
      return refuse(why, ws, "PROXY v1 header: bad signature");
  size_t end = 0; /* index of '\n' */
  for (i = 0; i < len && i < V1_MAX; i++) {
    uint8_t c = buf[i];
    if (c == '\r') {
      if (i + 1 < len && buf[i + 1] != '\n')
        return refuse(why, ws, "PROXY v1 header: CR without LF");
      continue;
    }
    if (c == '\n') {
      if (i == 0 || buf[i - 1] != '\r')
        return refuse(why, ws, "PROXY v1 header: LF without CR");
      end = i;
      break;
    }
    if (c < 0x20 || c > 0x7e)
      return refuse(why, ws, "PROXY v1 header: a control or non-ASCII byte");
  }
  if (!end)
    return i >= V1_MAX ? refuse(why, ws, "PROXY v1 header: longer than %d bytes", V1_MAX) : 0;
  /* The line without CRLF, split at single blanks. */
  const char *line = (const char *)buf + 6;
  size_t n = end - 1 - 6;
  const char *f[5];
  size_t fl[5], nf = 0, start = 0;
  if (n >= 7 && !memcmp(line, "UNKNOWN", 7) && (n == 7 || line[7] == ' ')) {
    memset(out, 0, sizeof *out);
    out->version = 1;
    return (long)end + 1; /* the rest of the line is ignored, as the spec says */
  }
  for (size_t j = 0; j <= n; j++) {
    if (j == n || line[j] == ' ') {
      if (nf == 5 || j == start)
        return refuse(why, ws, "PROXY v1 header: not PROTO SRC DST SPORT DPORT");
      f[nf] = line + start;
      fl[nf++] = j - start;
      start = j + 1;
    }
  }
  int family;
  if (nf == 5 && fl[0] == 4 && !memcmp(f[0], "TCP4", 4))
    family = AF_INET;
  else if (nf == 5 && fl[0] == 4 && !memcmp(f[0], "TCP6", 4))
    family = AF_INET6;
  else
    return refuse(why, ws, "PROXY v1 header: not TCP4, TCP6 or UNKNOWN with 4 fields");
  unsigned sport, dport;
  if (v1_port(f[3], fl[3], &sport) || v1_port(f[4], fl[4], &dport))
    return refuse(why, ws, "PROXY v1 header: bad port");
  memset(out, 0, sizeof *out);
  if (v1_addr(family, f[1], fl[1], sport, &out->src, &out->src_len) ||
      v1_addr(family, f[2], fl[2], dport, &out->dst, &out->dst_len))
    return refuse(why, ws, "PROXY v1 header: bad %s address", family == AF_INET ? "IPv4" : "IPv6");
  out->version = 1;
  out->has_addresses = 1;
  return (long)end + 1;
}

/* --- version 2: 12-byte signature, version/command, family/protocol, length, addresses, TLVs -- */

static long parse_v2(const uint8_t *buf, size_t len, weft__proxy_header *out, char *why,
                     size_t ws) {
  for (size_t i = 0; i < len && i < sizeof v2_sig; i++)
    if (buf[i] != v2_sig[i])
      return refuse(why, ws, "PROXY v2 header: bad signature");
  if (len > 12 && (buf[12] >> 4) != 2)
    return refuse(why, ws, "PROXY v2 header: version %d", buf[12] >> 4);
  if (len > 12 && (buf[12] & 0xf) > 1)
    return refuse(why, ws, "PROXY v2 header: unknown command %d", buf[12] & 0xf);
  if (len < 16)
    return 0;
  size_t body = (size_t)buf[14] << 8 | buf[15];
  if (16 + body > WEFT__PROXY_MAX)
    return refuse(why, ws, "PROXY v2 header: %zu bytes, more than %d", 16 + body, WEFT__PROXY_MAX);
  if (len < 16 + body)
    return 0;
  int local = (buf[12] & 0xf) == 0;
  uint8_t fam = buf[13];
  const uint8_t *a = buf + 16;
  size_t alen;
  memset(out, 0, sizeof *out);
  switch (fam) {
    case 0x00:
      alen = 0;
      break; /* UNSPEC */
    case 0x11:
      alen = 12;
      break; /* TCP over IPv4 */
    case 0x21:
      alen = 36;
      break; /* TCP over IPv6 */
    case 0x31:
      alen = 216;
      break; /* stream over a Unix socket */
    default:
      if (!local)
        return refuse(why, ws, "PROXY v2 header: family/protocol 0x%02x is not a stream", fam);
      alen = 0; /* LOCAL: the addresses are ignored, whatever they are */
  }
  if (alen > body)
    return refuse(why, ws, "PROXY v2 header: length %zu too short for its addresses (%zu)", body,
                  alen);
  if (!local && fam == 0x11) {
    struct sockaddr_in *s = (struct sockaddr_in *)&out->src, *d = (struct sockaddr_in *)&out->dst;
    s->sin_family = d->sin_family = AF_INET;
    memcpy(&s->sin_addr, a, 4);
    memcpy(&d->sin_addr, a + 4, 4);
    memcpy(&s->sin_port, a + 8, 2);
    memcpy(&d->sin_port, a + 10, 2);
    out->src_len = out->dst_len = sizeof(struct sockaddr_in);
    out->has_addresses = 1;
  } else if (!local && fam == 0x21) {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src,
                        *d = (struct sockaddr_in6 *)&out->dst;
    s->sin6_family = d->sin6_family = AF_INET6;
    memcpy(&s->sin6_addr, a, 16);
    memcpy(&d->sin6_addr, a + 16, 16);
    memcpy(&s->sin6_port, a + 32, 2);
    memcpy(&d->sin6_port, a + 34, 2);
    out->src_len = out->dst_len = sizeof(struct sockaddr_in6);
    out->has_addresses = 1;
  } else if (!local && fam == 0x31) {
    struct sockaddr_un *s = (struct sockaddr_un *)&out->src, *d = (struct sockaddr_un *)&out->dst;
    s->sun_family = d->sun_family = AF_UNIX;
    /* 108 bytes each on the wire; sun_path is 108 bytes too on Linux. Not trusting a NUL. */
    size_t pl = sizeof s->sun_path < 108 ? sizeof s->sun_path : 108;
    memcpy(s->sun_path, a, pl);
    memcpy(d->sun_path, a + 108, pl);
    s->sun_path[pl - 1] = d->sun_path[pl - 1] = '\0';
    out->src_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(s->sun_path) + 1);
    out->dst_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(d->sun_path) + 1);
    out->has_addresses = 1;
  }
  /* The TLVs: each one's length must stay inside the header. */
  const uint8_t *t = a + alen;
  size_t tlen = body - alen;
  for (size_t off = 0; off < tlen;) {
    if (tlen - off < 3)
      return refuse(why, ws, "PROXY v2 header: truncated TLV at offset %zu", off);
    size_t vl = (size_t)t[off + 1] << 8 | t[off + 2];
    if (vl > tlen - off - 3)
      return refuse(why, ws, "PROXY v2 header: TLV 0x%02x claims %zu bytes, %zu left", t[off], vl,
                    tlen - off - 3);
    off += 3 + vl;
  }
  out->tlvs = t; /* kept for LOCAL too: a health check may carry TLVs */
  out->tlvs_len = tlen;
  out->version = 2;
  return (long)(16 + body);
}

long weft__proxy_parse(const uint8_t *buf, size_t len, unsigned versions, weft__proxy_header *out,
                       char *why, size_t why_size) {
  if (why && why_size)
    why[0] = '\0';
  if (len == 0)
    return 0;
  if (buf[0] == 'P' && (versions & WEFT_PROXY_V1))
    return parse_v1(buf, len, out, why, why_size);
  if (buf[0] == 0x0d && (versions & WEFT_PROXY_V2))
    return parse_v2(buf, len, out, why, why_size);
  return refuse(why, why_size, "no PROXY %sheader where one is required",
                versions == WEFT_PROXY_V1   ? "v1 "
                : versions == WEFT_PROXY_V2 ? "v2 "
                                            : "");
}

/* --- trusted sources ------------------------------------------------------------------------ */

/* The address bytes of ADDR (IPv4-mapped IPv6 as IPv4), or NULL for another family. */
static const uint8_t *addr_bytes(const struct sockaddr *addr, int *family) {
  if (addr->sa_family == AF_INET) {
    *family = AF_INET;
    return (const uint8_t *)&((const struct sockaddr_in *)addr)->sin_addr;
  }
  if (addr->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)addr)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a)) {
      *family = AF_INET;
      return a->s6_addr + 12;
    }
    *family = AF_INET6;
    return a->s6_addr;
  }
  return NULL;
}

int weft__proxy_addr_in(const struct sockaddr *addr, const struct sockaddr_storage *net, int bits) {
  int fa = 0, fn = 0;
  const uint8_t *a = addr_bytes(addr, &fa), *n = addr_bytes((const struct sockaddr *)net, &fn);
  if (!a || !n || fa != fn)
    return 0;
  int full = bits / 8, rest = bits % 8;
  if (memcmp(a, n, (size_t)full) != 0)
    return 0;
  if (rest == 0)
    return 1;
  uint8_t mask = (uint8_t)(0xff << (8 - rest));
  return (a[full] & mask) == (n[full] & mask);
}

int weft__proxy_parse_sources(const char *sources, weft__proxy_net **out, size_t *n) {
  *out = NULL;
  *n = 0;
  if (!sources || !*sources)
    return 0;
  size_t cap = 1;
  for (const char *c = sources; *c; c++)
    cap += *c == ',';
  weft__proxy_net *nets = weft__calloc(cap, sizeof *nets);
  if (!nets)
    return WEFT_ENOMEM;
  size_t count = 0;
  const char *s = sources;
  for (;;) {
    const char *comma = strchr(s, ',');
    size_t l = comma ? (size_t)(comma - s) : strlen(s);
    while (l && (*s == ' ' || *s == '\t'))
      s++, l--;
    while (l && (s[l - 1] == ' ' || s[l - 1] == '\t'))
      l--;
    char item[64];
    if (l == 0 || l >= sizeof item)
      goto bad;
    memcpy(item, s, l);
    item[l] = '\0';
    char *slash = strchr(item, '/');
    int bits = -1;
    if (slash) {
      char *end;
      *slash = '\0';
      if (!slash[1] || slash[1] < '0' || slash[1] > '9')
        goto bad;
      long b = strtol(slash + 1, &end, 10);
      if (*end || b < 0 || b > 128)
        goto bad;
      bits = (int)b;
    }
    weft__proxy_net *e = &nets[count];
    struct sockaddr_in *in = (struct sockaddr_in *)&e->net;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&e->net;
    if (inet_pton(AF_INET, item, &in->sin_addr) == 1) {
      in->sin_family = AF_INET;
      if (bits > 32)
        goto bad;
      e->bits = bits < 0 ? 32 : bits;
    } else if (inet_pton(AF_INET6, item, &in6->sin6_addr) == 1) {
      in6->sin6_family = AF_INET6;
      e->bits = bits < 0 ? 128 : bits;
    } else {
      goto bad;
    }
    count++;
    if (!comma)
      break;
    s = comma + 1;
  }
  *out = nets;
  *n = count;
  return 0;
bad:
  weft__free(nets);
  return WEFT_EINVAL;
}

/* --- the sending side ------------------------------------------------------------------------ */

int weft_proxy_header_write(unsigned version, const struct sockaddr *src,
                            const struct sockaddr *dst, const weft_proxy_tlv *tlvs, size_t ntlvs,
                            uint8_t *out, size_t size, size_t *len) {
  if (len)
    *len = 0;
  if (!out || !len || (version != 1 && version != 2) || (!src != !dst) ||
      (src && src->sa_family != dst->sa_family) ||
      (src && src->sa_family != AF_INET && src->sa_family != AF_INET6) || (version == 1 && ntlvs) ||
      (ntlvs && !tlvs))
    return WEFT_EINVAL;
  if (version == 1) {
    char line[V1_MAX + 1], s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
    int n;
    if (!src) {
      n = snprintf(line, sizeof line, "PROXY UNKNOWN\r\n");
    } else if (src->sa_family == AF_INET) {
      const struct sockaddr_in *a = (const void *)src, *b = (const void *)dst;
      inet_ntop(AF_INET, &a->sin_addr, s, sizeof s);
      inet_ntop(AF_INET, &b->sin_addr, d, sizeof d);
      n = snprintf(line, sizeof line, "PROXY TCP4 %s %s %u %u\r\n", s, d, ntohs(a->sin_port),
                   ntohs(b->sin_port));
    } else {
      const struct sockaddr_in6 *a = (const void *)src, *b = (const void *)dst;
      inet_ntop(AF_INET6, &a->sin6_addr, s, sizeof s);
      inet_ntop(AF_INET6, &b->sin6_addr, d, sizeof d);
      n = snprintf(line, sizeof line, "PROXY TCP6 %s %s %u %u\r\n", s, d, ntohs(a->sin6_port),
                   ntohs(b->sin6_port));
    }
    if (n < 0 || (size_t)n > size)
      return WEFT_ETOOLONG;
    memcpy(out, line, (size_t)n);
    *len = (size_t)n;
    return 0;
  }
  size_t body = !src ? 0 : src->sa_family == AF_INET ? 12 : 36;
  for (size_t i = 0; i < ntlvs; i++) {
    if (tlvs[i].len > 65535 || (tlvs[i].len && !tlvs[i].value))
      return WEFT_EINVAL;
    body += 3 + tlvs[i].len;
  }
  if (body > 65535 || 16 + body > size)
    return WEFT_ETOOLONG;
  memcpy(out, v2_sig, 12);
  out[12] = src ? 0x21 : 0x20; /* version 2, PROXY or LOCAL */
  out[13] = !src ? 0x00 : src->sa_family == AF_INET ? 0x11 : 0x21;
  out[14] = (uint8_t)(body >> 8);
  out[15] = (uint8_t)body;
  uint8_t *p = out + 16;
  if (src && src->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)src, *b = (const void *)dst;
    memcpy(p, &a->sin_addr, 4), memcpy(p + 4, &b->sin_addr, 4);
    memcpy(p + 8, &a->sin_port, 2), memcpy(p + 10, &b->sin_port, 2);
    p += 12;
  } else if (src) {
    const struct sockaddr_in6 *a = (const void *)src, *b = (const void *)dst;
    memcpy(p, &a->sin6_addr, 16), memcpy(p + 16, &b->sin6_addr, 16);
    memcpy(p + 32, &a->sin6_port, 2), memcpy(p + 34, &b->sin6_port, 2);
    p += 36;
  }
  for (size_t i = 0; i < ntlvs; i++) {
    *p++ = tlvs[i].type;
    *p++ = (uint8_t)(tlvs[i].len >> 8);
    *p++ = (uint8_t)tlvs[i].len;
    if (tlvs[i].len)
      memcpy(p, tlvs[i].value, tlvs[i].len);
    p += tlvs[i].len;
  }
  *len = 16 + body;
  return 0;
}

/* --- what a transport keeps of its header ------------------------------------------------- */

int weft_transport_proxy_version(weft_transport *transport) {
  return transport ? transport->proxy_version : 0;
}

const uint8_t *weft_transport_proxy_tlv(weft_transport *transport, unsigned type, size_t *len) {
  if (len)
    *len = 0;
  if (!transport || !transport->proxy_tlvs)
    return NULL;
  const uint8_t *t = transport->proxy_tlvs;
  size_t n = transport->proxy_tlvs_len;
  for (size_t off = 0; off + 3 <= n;) { /* checked well formed by the parser */
    size_t vl = (size_t)t[off + 1] << 8 | t[off + 2];
    if (t[off] == type) {
      if (len)
        *len = vl;
      return t + off + 3;
    }
    off += 3 + vl;
  }
  return NULL;
}
