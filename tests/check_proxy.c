/* tests/check_proxy.c: the PROXY protocol (v1 and v2) on listeners. The parser on good, cut and
 * hostile headers (white box); the writer against the parser; then over loopback: TCP and TLS
 * listeners fed a header and the first bytes (for TLS, the ClientHello) in one send(), the
 * peer address build_protocol sees, v2 TLVs on the transport, hostile, slow and untrusted
 * peers refused with typed reasons before build_protocol, and the haproxy: description. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "proxy-internal.h"
#include "testutil.h"
#include "tlsutil.h"

#define ALL (WEFT_PROXY_V1 | WEFT_PROXY_V2)

static struct sockaddr_in sin4(const char *ip, int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  ck_assert_int_eq(inet_pton(AF_INET, ip, &a.sin_addr), 1);
  return a;
}

static struct sockaddr_in6 sin6(const char *ip, int port) {
  struct sockaddr_in6 a;
  memset(&a, 0, sizeof a);
  a.sin6_family = AF_INET6;
  a.sin6_port = htons((uint16_t)port);
  ck_assert_int_eq(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
  return a;
}

/* "IP:PORT" of an IPv4 or IPv6 address. */
static const char *addr_str(const struct sockaddr *sa, char *buf, size_t size) {
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = -1;
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof ip);
    port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof ip);
    port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
  }
  snprintf(buf, size, "%s:%d", ip, port);
  return buf;
}

/* Parses the whole of BUF, then checks that every proper prefix asks for more. */
static long parse_all(const uint8_t *buf, size_t len, unsigned versions, weft__proxy_header *h,
                      char *why, size_t why_size) {
  long r = weft__proxy_parse(buf, len, versions, h, why, why_size);
  if (r > 0)
    for (size_t i = 0; i < (size_t)r; i++) {
      weft__proxy_header tmp;
      long p = weft__proxy_parse(buf, i, versions, &tmp, NULL, 0);
      ck_assert_msg(p == 0, "prefix of %zu bytes of a %ld-byte header: %ld", i, r, p);
    }
  return r;
}

/* --- the parser -------------------------------------------------------------------------- */

START_TEST(v1_good) {
  static const char *h4 = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET /";
  weft__proxy_header h;
  char why[160], s[80];
  long r = parse_all((const uint8_t *)h4, strlen(h4), ALL, &h, why, sizeof why);
  ck_assert_int_eq(r, (long)strlen(h4) - 5); /* the bytes after CRLF are not the header's */
  ck_assert_int_eq(h.version, 1);
  ck_assert_int_eq(h.has_addresses, 1);
  ck_assert_str_eq(addr_str((struct sockaddr *)&h.src, s, sizeof s), "192.0.2.7:56324");
  ck_assert_str_eq(addr_str((struct sockaddr *)&h.dst, s, sizeof s), "198.51.100.1:443");

  static const char *h6 = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
  r = parse_all((const uint8_t *)h6, strlen(h6), WEFT_PROXY_V1, &h, why, sizeof why);
  ck_assert_int_eq(r, (long)strlen(h6));
  ck_assert_str_eq(addr_str((struct sockaddr *)&h.src, s, sizeof s), "2001:db8::1:65535");

  static const char *hu = "PROXY UNKNOWN ffff::1 whatever\r\n";
  r = parse_all((const uint8_t *)hu, strlen(hu), ALL, &h, why, sizeof why);
  ck_assert_int_eq(r, (long)strlen(hu));
  ck_assert_int_eq(h.has_addresses, 0);
  r = weft__proxy_parse((const uint8_t *)"PROXY UNKNOWN\r\n", 15, ALL, &h, why, sizeof why);
  ck_assert_int_eq(r, 15);
}
END_TEST

static const char *const v1_bad[] = {
    "GET / HTTP/1.1\r\n",                                /* no header */
    "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n",     /* LF without CR */
    "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\rX",    /* CR without LF */
    "PROXY TCP4 192.0.2.7  198.51.100.1 56324 443\r\n",  /* two blanks */
    "PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",       /* a field missing */
    "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 1\r\n", /* a field too many */
    "PROXY TCP4 ::1 198.51.100.1 56324 443\r\n",         /* IPv6 under TCP4 */
    "PROXY TCP6 192.0.2.7 ::1 56324 443\r\n",            /* IPv4 under TCP6 */
    "PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",   /* port out of range */
    "PROXY TCP4 192.0.2.7 198.51.100.1 0443 443\r\n",    /* leading zero */
    "PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n",      /* sign */
    "PROXY UDP4 192.0.2.7 198.51.100.1 1 443\r\n",       /* not a stream */
    "PROXY TCP4 192.0.2.7 198.51.100.1 1 4\x01\r\n",     /* a control byte */
    "proxy TCP4 192.0.2.7 198.51.100.1 1 443\r\n",       /* case */
};

START_TEST(v1_hostile) {
  char why[160];
  weft__proxy_header h;
  for (size_t i = 0; i < sizeof v1_bad / sizeof v1_bad[0]; i++) {
    long r =
        weft__proxy_parse((const uint8_t *)v1_bad[i], strlen(v1_bad[i]), ALL, &h, why, sizeof why);
    ck_assert_msg(r == WEFT_EPROXY, "case %zu (%s): %ld", i, v1_bad[i], r);
    ck_assert_msg(why[0] != '\0', "case %zu: no sentence", i);
  }
  /* 107 bytes without CRLF: oversized, not "need more" forever. */
  char longline[300];
  memset(longline, '1', sizeof longline);
  memcpy(longline, "PROXY TCP4 ", 11);
  ck_assert_int_eq(weft__proxy_parse((uint8_t *)longline, 106, ALL, &h, why, sizeof why), 0);
  ck_assert_int_eq(weft__proxy_parse((uint8_t *)longline, 107, ALL, &h, why, sizeof why),
                   WEFT_EPROXY);
  ck_assert_ptr_nonnull(strstr(why, "longer"));
  /* v1 refused when only v2 is allowed, and the other way round. */
  const char *ok = "PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\n";
  ck_assert_int_eq(
      weft__proxy_parse((const uint8_t *)ok, strlen(ok), WEFT_PROXY_V2, &h, why, sizeof why),
      WEFT_EPROXY);
}
END_TEST

/* A v2 header written by hand: VER_CMD, FAM, LEN, then BODY. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, size_t len, const uint8_t *body,
                 size_t body_len) {
  static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                  0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
  memcpy(out, sig, 12);
  out[12] = ver_cmd;
  out[13] = fam;
  out[14] = (uint8_t)(len >> 8);
  out[15] = (uint8_t)len;
  if (body_len)
    memcpy(out + 16, body, body_len);
  return 16 + body_len;
}

START_TEST(v2_good) {
  struct sockaddr_in s = sin4("192.0.2.7", 56324), d = sin4("198.51.100.1", 443);
  static const uint8_t uid[] = "conn-42";
  weft_proxy_tlv tlvs[] = {{WEFT_PROXY_TLV_ALPN, (const uint8_t *)"h2", 2},
                           {WEFT_PROXY_TLV_AUTHORITY, (const uint8_t *)"example.com", 11},
                           {WEFT_PROXY_TLV_NOOP, NULL, 0},
                           {WEFT_PROXY_TLV_UNIQUE_ID, uid, sizeof uid - 1}};
  uint8_t buf[512];
  size_t len;
  ck_assert_int_eq(weft_proxy_header_write(2, (struct sockaddr *)&s, (struct sockaddr *)&d, tlvs, 4,
                                           buf, sizeof buf, &len),
                   0);
  ck_assert_uint_eq(len, 16 + 12 + 3 + 2 + 3 + 11 + 3 + 3 + 7);
  weft__proxy_header h;
  char why[160], str[80];
  ck_assert_int_eq(parse_all(buf, len, ALL, &h, why, sizeof why), (long)len);
  ck_assert_int_eq(h.version, 2);
  ck_assert_str_eq(addr_str((struct sockaddr *)&h.src, str, sizeof str), "192.0.2.7:56324");
  ck_assert_str_eq(addr_str((struct sockaddr *)&h.dst, str, sizeof str), "198.51.100.1:443");
  ck_assert_uint_eq(h.tlvs_len, 3 + 2 + 3 + 11 + 3 + 3 + 7);

  struct sockaddr_in6 s6 = sin6("2001:db8::7", 1), d6 = sin6("2001:db8::1", 8443);
  ck_assert_int_eq(weft_proxy_header_write(2, (struct sockaddr *)&s6, (struct sockaddr *)&d6, NULL,
                                           0, buf, sizeof buf, &len),
                   0);
  ck_assert_int_eq(parse_all(buf, len, WEFT_PROXY_V2, &h, why, sizeof why), 16 + 36);
  ck_assert_str_eq(addr_str((struct sockaddr *)&h.src, str, sizeof str), "2001:db8::7:1");

  /* LOCAL (a health check): no addresses, whatever the family says. */
  uint8_t body[12] = {0};
  len = v2(buf, 0x20, 0x11, 12, body, 12);
  ck_assert_int_eq(parse_all(buf, len, ALL, &h, why, sizeof why), 28);
  ck_assert_int_eq(h.has_addresses, 0);
  ck_assert_int_eq(weft_proxy_header_write(2, NULL, NULL, NULL, 0, buf, sizeof buf, &len), 0);
  ck_assert_int_eq(parse_all(buf, len, ALL, &h, why, sizeof why), 16);
  ck_assert_int_eq(h.has_addresses, 0);
  /* UNSPEC with PROXY: the connection's addresses too. */
  len = v2(buf, 0x21, 0x00, 0, NULL, 0);
  ck_assert_int_eq(parse_all(buf, len, ALL, &h, why, sizeof why), 16);
  ck_assert_int_eq(h.has_addresses, 0);
  /* v1 written, v1 parsed. */
  ck_assert_int_eq(weft_proxy_header_write(1, (struct sockaddr *)&s6, (struct sockaddr *)&d6, NULL,
                                           0, buf, sizeof buf, &len),
                   0);
  ck_assert_int_eq(memcmp(buf, "PROXY TCP6 2001:db8::7 2001:db8::1 1 8443\r\n", len), 0);
  ck_assert_int_eq(parse_all(buf, len, ALL, &h, why, sizeof why), (long)len);
  /* The writer's own errors. */
  ck_assert_int_eq(weft_proxy_header_write(1, (struct sockaddr *)&s, (struct sockaddr *)&d, tlvs, 1,
                                           buf, sizeof buf, &len),
                   WEFT_EINVAL);
  ck_assert_int_eq(weft_proxy_header_write(2, (struct sockaddr *)&s, (struct sockaddr *)&d6, NULL,
                                           0, buf, sizeof buf, &len),
                   WEFT_EINVAL);
  ck_assert_int_eq(
      weft_proxy_header_write(2, (struct sockaddr *)&s, NULL, NULL, 0, buf, sizeof buf, &len),
      WEFT_EINVAL);
  ck_assert_int_eq(weft_proxy_header_write(2, (struct sockaddr *)&s, (struct sockaddr *)&d, NULL, 0,
                                           buf, 27, &len),
                   WEFT_ETOOLONG);
  ck_assert_int_eq(weft_proxy_header_write(3, NULL, NULL, NULL, 0, buf, sizeof buf, &len),
                   WEFT_EINVAL);
}
END_TEST

START_TEST(v2_hostile) {
  uint8_t buf[WEFT__PROXY_MAX + 64], body[WEFT__PROXY_MAX];
  memset(body, 0, sizeof body);
  weft__proxy_header h;
  char why[160];
  size_t len;
  /* wrong signature, at its last byte */
  len = v2(buf, 0x21, 0x11, 12, body, 12);
  buf[11] = 0x0b;
  ck_assert_int_eq(weft__proxy_parse(buf, len, ALL, &h, why, sizeof why), WEFT_EPROXY);
  ck_assert_int_eq(weft__proxy_parse(buf, 12, ALL, &h, why, sizeof why), WEFT_EPROXY);
  /* version 1 or 3 in the binary header, unknown command */
  len = v2(buf, 0x11, 0x11, 12, body, 12);
  ck_assert_int_eq(weft__proxy_parse(buf, 13, ALL, &h, why, sizeof why), WEFT_EPROXY);
  len = v2(buf, 0x31, 0x11, 12, body, 12);
  ck_assert_int_eq(weft__proxy_parse(buf, len, ALL, &h, why, sizeof why), WEFT_EPROXY);
  len = v2(buf, 0x22, 0x11, 12, body, 12);
  ck_assert_int_eq(weft__proxy_parse(buf, 13, ALL, &h, why, sizeof why), WEFT_EPROXY);
  /* a length too short for the family's addresses (lying length) */
  len = v2(buf, 0x21, 0x21, 12, body, 12);
  ck_assert_int_eq(weft__proxy_parse(buf, len, ALL, &h, why, sizeof why), WEFT_EPROXY);
  ck_assert_ptr_nonnull(strstr(why, "too short"));
  /* UDP over a stream */
  len = v2(buf, 0x21, 0x12, 12, body, 12);
  ck_assert_int_eq(weft__proxy_parse(buf, len, ALL, &h, why, sizeof why), WEFT_EPROXY);
  /* a TLV that claims more bytes than the header has */
  uint8_t lying[12 + 3 + 2] = {0};
  lying[12] = 0x05, lying[13] = 0x00, lying[14] = 0x09;
  len = v2(buf, 0x21, 0x11, sizeof lying, lying, sizeof lying);
  ck_assert_int_eq(weft__proxy_parse(buf, len, ALL, &h, why, sizeof why), WEFT_EPROXY);
  ck_assert_ptr_nonnull(strstr(why, "claims"));
  /* a TLV cut inside its 3-byte head */
  len = v2(buf, 0x21, 0x11, 14, lying, 14);
  ck_assert_int_eq(weft__proxy_parse(buf, len, ALL, &h, why, sizeof why), WEFT_EPROXY);
  ck_assert_ptr_nonnull(strstr(why, "truncated"));
  /* oversized: refused as soon as the length is known, not after 64 KiB */
  len = v2(buf, 0x21, 0x11, 0xffff, body, 0);
  ck_assert_int_eq(weft__proxy_parse(buf, 16, ALL, &h, why, sizeof why), WEFT_EPROXY);
  ck_assert_ptr_nonnull(strstr(why, "more than"));
  /* the largest accepted size passes; one byte more does not */
  len = v2(buf, 0x21, 0x11, WEFT__PROXY_MAX - 16, body, WEFT__PROXY_MAX - 16);
  /* fill with NOOP TLVs: 12 address bytes then TLVs of 1000 bytes and a last shorter one */
  size_t off = 16 + 12, left = WEFT__PROXY_MAX - 16 - 12;
  while (left) {
    size_t vl = left - 3 > 1000 ? 1000 : left - 3;
    buf[off] = 0x04, buf[off + 1] = (uint8_t)(vl >> 8), buf[off + 2] = (uint8_t)vl;
    off += 3 + vl, left -= 3 + vl;
  }
  ck_assert_int_eq(weft__proxy_parse(buf, len, ALL, &h, why, sizeof why), WEFT__PROXY_MAX);
  buf[15]++;
  ck_assert_int_eq(weft__proxy_parse(buf, 16, ALL, &h, why, sizeof why), WEFT_EPROXY);
  /* v2 refused when only v1 is allowed */
  len = v2(buf, 0x21, 0x00, 0, NULL, 0);
  ck_assert_int_eq(weft__proxy_parse(buf, len, WEFT_PROXY_V1, &h, why, sizeof why), WEFT_EPROXY);
}
END_TEST

START_TEST(sources) {
  weft__proxy_net *nets;
  size_t n;
  ck_assert_int_eq(weft__proxy_parse_sources("10.0.0.0/8, 192.0.2.7 ,2001:db8::/32", &nets, &n), 0);
  ck_assert_uint_eq(n, 3);
  struct sockaddr_in a = sin4("10.200.3.4", 1), b = sin4("11.0.0.1", 1), c = sin4("192.0.2.7", 1);
  struct sockaddr_in6 m = sin6("::ffff:10.1.2.3", 1), e = sin6("2001:db8:ffff::1", 1),
                      f = sin6("2001:db9::1", 1);
  ck_assert(weft__proxy_addr_in((struct sockaddr *)&a, &nets[0].net, nets[0].bits));
  ck_assert(!weft__proxy_addr_in((struct sockaddr *)&b, &nets[0].net, nets[0].bits));
  ck_assert(weft__proxy_addr_in((struct sockaddr *)&m, &nets[0].net, nets[0].bits));
  ck_assert(weft__proxy_addr_in((struct sockaddr *)&c, &nets[1].net, nets[1].bits));
  ck_assert(!weft__proxy_addr_in((struct sockaddr *)&a, &nets[1].net, nets[1].bits));
  ck_assert(weft__proxy_addr_in((struct sockaddr *)&e, &nets[2].net, nets[2].bits));
  ck_assert(!weft__proxy_addr_in((struct sockaddr *)&f, &nets[2].net, nets[2].bits));
  ck_assert(!weft__proxy_addr_in((struct sockaddr *)&a, &nets[2].net, nets[2].bits));
  free(nets);
  static const char *const bad[] = {"10.0.0.0/33", "10.0.0.0/",  "x", "10.0.0.0,,1.2.3.4",
                                    "::1/129",     "1.2.3.4/-1", ","};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_msg(weft__proxy_parse_sources(bad[i], &nets, &n) == WEFT_EINVAL, "%s", bad[i]);
    ck_assert_ptr_null(nets);
  }
}
END_TEST

/* --- over loopback ------------------------------------------------------------------------ */

typedef struct server {
  weft_reactor *r;
  tu_factory f;
  weft_listener *l;
  int port;
  /* what the first connection saw in connection_made */
  char tlv_alpn[16], tlv_authority[64], tlv_uid[64];
  int proxy_version;
  char peer_made[80];
} server;

static void copy_tlv(weft_transport *t, unsigned type, char *out, size_t size) {
  size_t len;
  const uint8_t *v = weft_transport_proxy_tlv(t, type, &len);
  if (!v) {
    snprintf(out, size, "(none)");
    return;
  }
  snprintf(out, size, "%.*s", (int)len, (const char *)v);
}

static void on_made_record(tu_conn *c, weft_transport *t) {
  server *s = c->factory->user;
  if (c->index != 0)
    return;
  copy_tlv(t, WEFT_PROXY_TLV_ALPN, s->tlv_alpn, sizeof s->tlv_alpn);
  copy_tlv(t, WEFT_PROXY_TLV_AUTHORITY, s->tlv_authority, sizeof s->tlv_authority);
  copy_tlv(t, WEFT_PROXY_TLV_UNIQUE_ID, s->tlv_uid, sizeof s->tlv_uid);
  s->proxy_version = weft_transport_proxy_version(t);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (weft_transport_peer_address(t, (struct sockaddr *)&ss, &len) == 0)
    addr_str((struct sockaddr *)&ss, s->peer_made, sizeof s->peer_made);
}

/* Starts S listening on 127.0.0.1 with OPTIONS (NULL: TCP) and the PROXY settings. */
static void server_start(server *s, weft_cert_options *options, unsigned versions,
                         const char *sources, double timeout) {
  memset(s, 0, sizeof *s);
  s->r = tu_reactor_new();
  tu_factory_init(&s->f);
  s->f.conn_config.echo = 1;
  s->f.conn_config.on_made = on_made_record;
  s->f.user = s;
  weft_endpoint *ep;
  ck_assert_int_eq(weft_endpoint_new(WEFT_ENDPOINT_SERVER, &ep), 0);
  ck_assert_int_eq(weft_endpoint_set_host(ep, "127.0.0.1"), 0);
  ck_assert_int_eq(weft_endpoint_set_port(ep, 0), 0);
  ck_assert_int_eq(weft_endpoint_set_tls(ep, options), 0);
  ck_assert_int_eq(weft_endpoint_set_proxy_protocol(ep, versions, sources, timeout), 0);
  ck_assert_int_eq(weft_endpoint_listen(s->r, ep, &s->f.base, &s->l), 0);
  weft_endpoint_free(ep);
  s->port = weft_listener_port(s->l);
}

static void server_free(server *s) {
  weft_reactor_free(s->r);
  tu_factory_check(&s->f);
  tu_factory_cleanup(&s->f);
}

/* A raw client: sends LEN bytes of DATA in one send() with Nagle off. */
static int raw_send(int port, const void *data, size_t len) {
  int fd = tu_raw_connect("127.0.0.1", port);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (len)
    ck_assert_int_eq(send(fd, data, len, MSG_NOSIGNAL), (ssize_t)len);
  return fd;
}

/* A raw client's reads, made while the reactor runs. */
typedef struct raw_reader {
  int fd;
  char buf[64];
  size_t got, want;
} raw_reader;

static int raw_read_some(void *arg) {
  raw_reader *rr = arg;
  ssize_t n = recv(rr->fd, rr->buf + rr->got, rr->want - rr->got, MSG_DONTWAIT);
  if (n > 0)
    rr->got += (size_t)n;
  return rr->got >= rr->want || n == 0;
}

static int conn_made(void *arg) {
  return ((tu_factory *)arg)->made >= 1;
}

START_TEST(tcp_v1_and_v2_one_segment) {
  for (int version = 1; version <= 2; version++) {
    server s;
    server_start(&s, NULL, ALL, "127.0.0.0/8", 0);
    struct sockaddr_in src = sin4("203.0.113.9", 40000 + version), dst = sin4("198.51.100.1", 80);
    static const uint8_t uid[] = "uid-7";
    weft_proxy_tlv tlvs[] = {{WEFT_PROXY_TLV_ALPN, (const uint8_t *)"h2", 2},
                             {WEFT_PROXY_TLV_AUTHORITY, (const uint8_t *)"a.example", 9},
                             {WEFT_PROXY_TLV_UNIQUE_ID, uid, 5}};
    uint8_t buf[256];
    size_t len;
    ck_assert_int_eq(weft_proxy_header_write((unsigned)version, (struct sockaddr *)&src,
                                             (struct sockaddr *)&dst, version == 2 ? tlvs : NULL,
                                             version == 2 ? 3 : 0, buf, sizeof buf, &len),
                     0);
    memcpy(buf + len, "hello", 5); /* the header and the first data in one segment */
    int fd = raw_send(s.port, buf, len + 5);
    tu_conn *c = tu_wait_conn(s.r, &s.f, 0, 5);
    tu_run_until(s.r, conn_made, &s.f, 5);
    char str[80];
    ck_assert_str_eq(addr_str((struct sockaddr *)&c->peer, str, sizeof str),
                     version == 1 ? "203.0.113.9:40001" : "203.0.113.9:40002");
    ck_assert_str_eq(s.peer_made, str);
    ck_assert_int_eq(s.proxy_version, version);
    ck_assert_str_eq(s.tlv_alpn, version == 2 ? "h2" : "(none)");
    ck_assert_str_eq(s.tlv_authority, version == 2 ? "a.example" : "(none)");
    ck_assert_str_eq(s.tlv_uid, version == 2 ? "uid-7" : "(none)");
    tu_wait_size(s.r, &c->rx_total, 5, 5);
    ck_assert(tu_conn_rx_equals(c, "hello", 5)); /* not a byte of the header */
    raw_reader rr = {.fd = fd, .want = 5};
    tu_run_until(s.r, raw_read_some, &rr, 5);
    ck_assert_uint_eq(rr.got, 5);
    ck_assert_int_eq(memcmp(rr.buf, "hello", 5), 0);
    close(fd);
    ck_assert_int_eq(s.f.handshake_failed, 0);
    server_free(&s);
  }
}
END_TEST

/* A header in pieces, with the loop running in between: the listener waits for the rest. */
START_TEST(tcp_header_in_pieces) {
  server s;
  server_start(&s, NULL, WEFT_PROXY_V2, NULL, 0);
  struct sockaddr_in6 src = sin6("2001:db8::9", 1234), dst = sin6("2001:db8::1", 443);
  uint8_t buf[128];
  size_t len;
  ck_assert_int_eq(weft_proxy_header_write(2, (struct sockaddr *)&src, (struct sockaddr *)&dst,
                                           NULL, 0, buf, sizeof buf, &len),
                   0);
  int fd = raw_send(s.port, buf, 5);
  tu_settle(s.r, 0.05);
  ck_assert_int_eq(send(fd, buf + 5, 15, 0), 15);
  tu_settle(s.r, 0.05);
  ck_assert_int_eq(s.f.built, 0);
  ck_assert_int_eq(send(fd, buf + 20, len - 20, 0), (ssize_t)(len - 20));
  tu_conn *c = tu_wait_conn(s.r, &s.f, 0, 5);
  char str[80];
  ck_assert_str_eq(addr_str((struct sockaddr *)&c->peer, str, sizeof str), "2001:db8::9:1234");
  close(fd);
  server_free(&s);
}
END_TEST

typedef struct hostile_case {
  const char *name;
  const void *data;
  size_t len;
  int close_after; /* close the client after sending (else wait for the server to act) */
  int code;
} hostile_case;

START_TEST(tcp_hostile_headers) {
  static const uint8_t lying[] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54,
                                  0x0a, 0x21, 0x11, 0x00, 0x0f, 1,    2,    3,    4,    5,    6,
                                  7,    8,    0,    1,    0,    2,    0x05, 0xff, 0xff};
  static const uint8_t oversized[] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51,
                                      0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0xff, 0xff};
  const hostile_case cases[] = {
      {"plain data, no header", "GET / HTTP/1.0\r\n\r\n", 18, 0, WEFT_EPROXY},
      {"TLS ClientHello, no header", "\x16\x03\x01\x00\x05hello", 10, 0, WEFT_EPROXY},
      {"truncated v1, then EOF", "PROXY TCP4 1.2.3.4", 18, 1, WEFT_EPROXY},
      {"truncated v2, then EOF", lying, 20, 1, WEFT_EPROXY},
      {"lying TLV length", lying, sizeof lying, 0, WEFT_EPROXY},
      {"oversized v2", oversized, sizeof oversized, 0, WEFT_EPROXY},
      {"v1 line too long",
       "PROXY TCP4 111111111111111111111111111111111111111111111111111111111"
       "11111111111111111111111111111111111111111111111111111111111111",
       130, 0, WEFT_EPROXY},
      {"empty connection", "", 0, 1, WEFT_EPROXY},
  };
  server s;
  server_start(&s, NULL, ALL, NULL, 5);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int before = s.f.handshake_failed;
    int fd = raw_send(s.port, cases[i].data, cases[i].len);
    if (cases[i].close_after)
      shutdown(fd, SHUT_WR);
    tu_wait_int(s.r, &s.f.handshake_failed, before + 1, 5);
    ck_assert_msg(s.f.last_handshake_failed.code == cases[i].code, "%s: %d %s", cases[i].name,
                  s.f.last_handshake_failed.code, s.f.last_handshake_failed.message);
    /* the server closed the socket: our read ends */
    char c;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = recv(fd, &c, 1, 0);
    ck_assert_msg(n == 0 || (n < 0 && errno == ECONNRESET), "%s: recv %zd", cases[i].name, n);
    close(fd);
  }
  tu_settle(s.r, 0.05);
  ck_assert_int_eq(s.f.built, 0);
  ck_assert_int_eq(weft_listener_connection_count(s.l), 0);
  server_free(&s);
}
END_TEST

START_TEST(tcp_slow_header) {
  server s;
  server_start(&s, NULL, ALL, NULL, 0.2);
  int fd = raw_send(s.port, "PROXY TCP4 ", 11);
  double t0 = tu_now();
  tu_wait_int(s.r, &s.f.handshake_failed, 1, 5);
  ck_assert_int_eq(s.f.last_handshake_failed.code, WEFT_ETIMEDOUT);
  ck_assert(tu_now() - t0 < 4.0);
  ck_assert_int_eq(s.f.built, 0);
  close(fd);
  server_free(&s);
}
END_TEST

START_TEST(untrusted_source) {
  server s;
  server_start(&s, NULL, ALL, "10.0.0.0/8,::1", 0);
  const char *h = "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nhi";
  int fd = raw_send(s.port, h, strlen(h));
  tu_wait_int(s.r, &s.f.handshake_failed, 1, 5);
  ck_assert_int_eq(s.f.last_handshake_failed.code, WEFT_EPEERREFUSED);
  char str[80];
  ck_assert_str_eq(addr_str((struct sockaddr *)&s.f.last_handshake_peer, str, sizeof str) + 0,
                   str); /* the socket's own peer, not the header's */
  ck_assert_ptr_nonnull(strstr(str, "127.0.0.1:"));
  ck_assert_int_eq(s.f.built, 0);
  close(fd);
  /* setting it again with 127.0.0.1 trusted lets the next one in */
  ck_assert_int_eq(weft_listener_set_proxy_protocol(s.l, ALL, "127.0.0.1", 0), 0);
  fd = raw_send(s.port, h, strlen(h));
  tu_conn *c = tu_wait_conn(s.r, &s.f, 0, 5);
  ck_assert_str_eq(addr_str((struct sockaddr *)&c->peer, str, sizeof str), "192.0.2.1:1");
  close(fd);
  ck_assert_int_eq(weft_listener_set_proxy_protocol(s.l, 4, NULL, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_listener_set_proxy_protocol(s.l, ALL, "nonsense", 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_listener_set_proxy_protocol(s.l, ALL, NULL, -1), WEFT_EINVAL);
  server_free(&s);
}
END_TEST

/* --- TLS: the header and the ClientHello in one segment ----------------------------------- */

typedef struct tls_client {
  int port;
  int version;
  tu_pki *pki;
  int ok;
  char err[256];
  char echo[8];
} tls_client;

/* A blocking OpenSSL client in its own thread: the ClientHello is produced into a memory BIO,
 * sent in one send() after the PROXY header, then the handshake goes on over the socket. */
static void *tls_client_main(void *arg) {
  tls_client *tc = arg;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  SSL *ssl = NULL;
  int fd = -1;
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), tc->pki->ca_cert);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  ssl = SSL_new(ctx);
  SSL_set_tlsext_host_name(ssl, "localhost");
  SSL_set1_host(ssl, "localhost");
  BIO *mem_r = BIO_new(BIO_s_mem()), *mem_w = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, mem_r, mem_w);
  SSL_set_connect_state(ssl);
  if (SSL_do_handshake(ssl) != -1) {
    snprintf(tc->err, sizeof tc->err, "no ClientHello");
    goto out;
  }
  char *hello;
  long hello_len = BIO_get_mem_data(mem_w, &hello);
  struct sockaddr_in src = sin4("203.0.113.50", 5555), dst = sin4("127.0.0.1", tc->port);
  uint8_t buf[4096];
  size_t len;
  weft_proxy_tlv tlv = {WEFT_PROXY_TLV_AUTHORITY, (const uint8_t *)"localhost", 9};
  if (weft_proxy_header_write((unsigned)tc->version, (struct sockaddr *)&src,
                              (struct sockaddr *)&dst, tc->version == 2 ? &tlv : NULL,
                              tc->version == 2 ? 1 : 0, buf, sizeof buf, &len) != 0 ||
      len + (size_t)hello_len > sizeof buf) {
    snprintf(tc->err, sizeof tc->err, "header");
    goto out;
  }
  memcpy(buf + len, hello, (size_t)hello_len);
  struct sockaddr_in to = sin4("127.0.0.1", tc->port);
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0 ||
      send(fd, buf, len + (size_t)hello_len, MSG_NOSIGNAL) != (ssize_t)(len + (size_t)hello_len)) {
    snprintf(tc->err, sizeof tc->err, "connect/send: %s", strerror(errno));
    goto out;
  }
  BIO *sock = BIO_new_socket(fd, BIO_NOCLOSE);
  SSL_set_bio(ssl, sock, sock); /* frees the memory BIOs */
  if (SSL_do_handshake(ssl) != 1 || SSL_write(ssl, "ping", 4) != 4) {
    snprintf(tc->err, sizeof tc->err, "handshake: %s", ERR_reason_error_string(ERR_get_error()));
    goto out;
  }
  int got = 0;
  while (got < 4) {
    int n = SSL_read(ssl, tc->echo + got, 4 - got);
    if (n <= 0) {
      snprintf(tc->err, sizeof tc->err, "read: %d", n);
      goto out;
    }
    got += n;
  }
  tc->ok = 1;
  SSL_shutdown(ssl);
out:
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  if (fd >= 0)
    close(fd);
  return NULL;
}

static int tls_done(void *arg) {
  server *s = arg;
  tu_conn *c = tu_factory_conn(&s->f, 0);
  return c && c->lost;
}

START_TEST(tls_v1_and_v2_one_segment) {
  tu_pki pki;
  tu_pki_init(&pki);
  for (int version = 1; version <= 2; version++) {
    weft_cert_options *so = tu_server_options(&pki);
    server s;
    server_start(&s, so, ALL, "127.0.0.1", 0);
    weft_cert_options_unref(so);
    tls_client tc = {.port = s.port, .version = version, .pki = &pki};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, tls_client_main, &tc), 0);
    tu_run_until(s.r, tls_done, &s, 10);
    pthread_join(th, NULL);
    ck_assert_msg(tc.ok, "client: %s", tc.err);
    ck_assert_int_eq(memcmp(tc.echo, "ping", 4), 0);
    tu_conn *c = tu_factory_conn(&s.f, 0);
    char str[80];
    ck_assert_str_eq(addr_str((struct sockaddr *)&c->peer, str, sizeof str), "203.0.113.50:5555");
    ck_assert_str_eq(s.peer_made, "203.0.113.50:5555");
    ck_assert_int_eq(s.proxy_version, version);
    ck_assert_str_eq(s.tlv_authority, version == 2 ? "localhost" : "(none)");
    ck_assert_int_eq(s.f.handshake_failed, 0);
    server_free(&s);
  }
  tu_pki_free(&pki);
}
END_TEST

/* A TLS listener with PROXY on, and a client that sends no header: refused before any TLS. */
START_TEST(tls_without_header) {
  tu_pki pki;
  tu_pki_init(&pki);
  weft_cert_options *so = tu_server_options(&pki), *co = tu_client_options(&pki);
  server s;
  server_start(&s, so, ALL, NULL, 0);
  tu_factory cf;
  tu_factory_init(&cf);
  tu_connect_ssl_local(s.r, &cf, s.port, co, "localhost");
  tu_wait_int(s.r, &s.f.handshake_failed, 1, 5);
  ck_assert_int_eq(s.f.last_handshake_failed.code, WEFT_EPROXY);
  tu_wait_int(s.r, &cf.failed, 1, 5);
  ck_assert_int_eq(s.f.built, 0);
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
  server_free(&s);
  tu_factory_cleanup(&cf);
  tu_pki_free(&pki);
}
END_TEST

/* A connection waiting for its header when the reactor is freed: closed, no callback, no
 * leak. */
START_TEST(reactor_freed_while_waiting) {
  server s;
  server_start(&s, NULL, ALL, NULL, 0);
  int fd = raw_send(s.port, "PROXY ", 6);
  tu_settle(s.r, 0.1);
  ck_assert_uint_eq(weft_listener_connection_count(s.l), 1); /* accepted, header pending */
  int fds = tu_count_fds();
  weft_reactor_free(s.r);
  ck_assert_int_lt(tu_count_fds(), fds); /* its socket closed (the listener's too) */
  ck_assert_int_eq(s.f.built, 0);
  tu_factory_check(&s.f);
  tu_factory_cleanup(&s.f);
  char c;
  ck_assert_int_eq(recv(fd, &c, 1, 0), 0);
  close(fd);
}
END_TEST

/* --- descriptions ---------------------------------------------------------------------------- */

START_TEST(haproxy_description) {
  weft_endpoint *ep;
  char err[256];
  ck_assert_int_eq(weft_endpoint_parse("haproxy:tcp:0:interface=127.0.0.1:proxySources=127.0.0.1",
                                       WEFT_ENDPOINT_SERVER, &ep, err, sizeof err),
                   0);
  server s;
  memset(&s, 0, sizeof s);
  s.r = tu_reactor_new();
  tu_factory_init(&s.f);
  s.f.conn_config.echo = 1;
  ck_assert_int_eq(weft_endpoint_listen(s.r, ep, &s.f.base, &s.l), 0);
  weft_endpoint_free(ep);
  const char *h = "PROXY TCP6 2001:db8::5 2001:db8::1 7 8\r\n";
  int fd = raw_send(weft_listener_port(s.l), h, strlen(h));
  tu_conn *c = tu_wait_conn(s.r, &s.f, 0, 5);
  char str[80];
  ck_assert_str_eq(addr_str((struct sockaddr *)&c->peer, str, sizeof str), "2001:db8::5:7");
  close(fd);
  server_free(&s);

  ck_assert_int_eq(
      weft_endpoint_parse("haproxy:tcp:host=a:port=1", WEFT_ENDPOINT_CLIENT, &ep, err, sizeof err),
      WEFT_EINVAL);
  ck_assert_ptr_null(ep);
  ck_assert_int_eq(weft_endpoint_parse("tcp:0:proxySources=10.0.0.1", WEFT_ENDPOINT_SERVER, &ep,
                                       err, sizeof err),
                   WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "haproxy:"));
  ck_assert_int_eq(weft_endpoint_parse("haproxy:tcp:0:proxySources=10.0.0.0/99",
                                       WEFT_ENDPOINT_SERVER, &ep, err, sizeof err),
                   WEFT_EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "proxySources"));
  ck_assert_int_eq(weft_endpoint_parse("haproxy:tcp:0:proxyTimeout=0", WEFT_ENDPOINT_SERVER, &ep,
                                       err, sizeof err),
                   WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_parse("haproxy:", WEFT_ENDPOINT_SERVER, &ep, err, sizeof err),
                   WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_parse("haproxy:tcp:0:proxyTimeout=2.5", WEFT_ENDPOINT_SERVER, &ep,
                                       err, sizeof err),
                   0);
  weft_endpoint_free(ep);
  /* endpoint setter checks */
  ck_assert_int_eq(weft_endpoint_new(WEFT_ENDPOINT_CLIENT, &ep), 0);
  ck_assert_int_eq(weft_endpoint_set_proxy_protocol(ep, ALL, NULL, 0), WEFT_EINVAL);
  weft_endpoint_free(ep);
}
END_TEST

/* --- admission: the peer filter and the per-address limit --------------------------------- */

typedef struct filter_state {
  int calls;
  int refuse;
  char last_peer[80];
} filter_state;

static int peer_filter(weft_listener *l, const struct sockaddr *peer, socklen_t len, void *arg) {
  filter_state *fs = arg;
  (void)l;
  ck_assert_uint_gt(len, 0);
  fs->calls++;
  addr_str(peer, fs->last_peer, sizeof fs->last_peer);
  return fs->refuse;
}

/* Refused before the TLS handshake: the client's handshake fails, the server's factory hears
 * WEFT_EPEERREFUSED, and nothing is built; then allowed again. */
START_TEST(filter_refuses_before_tls) {
  tu_pki pki;
  tu_pki_init(&pki);
  weft_cert_options *so = tu_server_options(&pki), *co = tu_client_options(&pki);
  server s;
  server_start(&s, so, 0, NULL, 0);
  filter_state fs = {.refuse = 1};
  ck_assert_int_eq(weft_listener_set_peer_filter(s.l, peer_filter, &fs), 0);
  tu_factory cf;
  tu_factory_init(&cf);
  tu_connect_ssl_local(s.r, &cf, s.port, co, "localhost");
  tu_wait_int(s.r, &s.f.handshake_failed, 1, 5);
  ck_assert_int_eq(s.f.last_handshake_failed.code, WEFT_EPEERREFUSED);
  ck_assert_ptr_nonnull(strstr(s.f.last_handshake_failed.message, "filter"));
  tu_wait_int(s.r, &cf.failed, 1, 5);
  ck_assert_int_eq(fs.calls, 1);
  ck_assert_ptr_nonnull(strstr(fs.last_peer, "127.0.0.1:"));
  ck_assert_int_eq(s.f.built, 0);
  /* a raw client that sends a ClientHello-looking byte sees the close, not a TLS alert */
  int fd = raw_send(s.port, "\x16", 1);
  tu_wait_int(s.r, &s.f.handshake_failed, 2, 5);
  char c;
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ssize_t n = recv(fd, &c, 1, 0);
  ck_assert_msg(n == 0 || (n < 0 && errno == ECONNRESET), "recv %zd", n);
  close(fd);
  fs.refuse = 0;
  tu_connect_ssl_local(s.r, &cf, s.port, co, "localhost");
  tu_wait_conn(s.r, &s.f, 0, 5);
  ck_assert_int_eq(fs.calls, 3);
  ck_assert_int_eq(weft_listener_set_peer_filter(s.l, NULL, NULL), 0);
  ck_assert_int_eq(weft_listener_set_peer_filter(NULL, peer_filter, &fs), WEFT_EINVAL);
  weft_cert_options_unref(so);
  weft_cert_options_unref(co);
  server_free(&s);
  tu_factory_check(&cf);
  tu_factory_cleanup(&cf);
  tu_pki_free(&pki);
}
END_TEST

/* Behind the PROXY protocol the filter sees the header's address. */
START_TEST(filter_sees_proxy_address) {
  server s;
  server_start(&s, NULL, ALL, "127.0.0.1", 0);
  filter_state fs = {.refuse = 1};
  ck_assert_int_eq(weft_listener_set_peer_filter(s.l, peer_filter, &fs), 0);
  const char *h = "PROXY TCP4 198.18.0.1 192.0.2.2 999 2\r\n";
  int fd = raw_send(s.port, h, strlen(h));
  tu_wait_int(s.r, &s.f.handshake_failed, 1, 5);
  ck_assert_int_eq(s.f.last_handshake_failed.code, WEFT_EPEERREFUSED);
  ck_assert_str_eq(fs.last_peer, "198.18.0.1:999");
  char str[80];
  ck_assert_str_eq(addr_str((struct sockaddr *)&s.f.last_handshake_peer, str, sizeof str),
                   "198.18.0.1:999");
  close(fd);
  ck_assert_int_eq(s.f.built, 0);
  server_free(&s);
}
END_TEST

static int conn_lost_n(void *arg) {
  return ((tu_factory *)arg)->lost >= 1;
}

START_TEST(per_address_limit) {
  server s;
  server_start(&s, NULL, 0, NULL, 0);
  ck_assert_int_eq(weft_listener_set_per_address_limit(s.l, 2), 0);
  int a = raw_send(s.port, NULL, 0), b = raw_send(s.port, NULL, 0);
  tu_wait_int(s.r, &s.f.made, 2, 5);
  int c = raw_send(s.port, NULL, 0);
  tu_wait_int(s.r, &s.f.handshake_failed, 1, 5);
  ck_assert_int_eq(s.f.last_handshake_failed.code, WEFT_EPEERREFUSED);
  ck_assert_ptr_nonnull(strstr(s.f.last_handshake_failed.message, "per-address"));
  ck_assert_int_eq(s.f.built, 2);
  close(c);
  close(a); /* one ends: its address may connect once more */
  tu_run_until(s.r, conn_lost_n, &s.f, 5);
  int d = raw_send(s.port, NULL, 0);
  tu_wait_int(s.r, &s.f.made, 3, 5);
  tu_settle(s.r, 0.05);
  ck_assert_int_eq(s.f.handshake_failed, 1);
  ck_assert_uint_eq(weft_listener_connection_count(s.l), 2);
  close(b);
  close(d);
  server_free(&s);
}
END_TEST

/* Behind the PROXY protocol each header address has its own count. */
START_TEST(per_address_limit_behind_proxy) {
  weft_endpoint *ep;
  char err[256];
  ck_assert_int_eq(weft_endpoint_parse("haproxy:tcp:0:interface=127.0.0.1:perAddressLimit=1",
                                       WEFT_ENDPOINT_SERVER, &ep, err, sizeof err),
                   0);
  server s;
  memset(&s, 0, sizeof s);
  s.r = tu_reactor_new();
  tu_factory_init(&s.f);
  ck_assert_int_eq(weft_endpoint_listen(s.r, ep, &s.f.base, &s.l), 0);
  weft_endpoint_free(ep);
  int port = weft_listener_port(s.l);
  const char *h1 = "PROXY TCP4 198.18.0.1 192.0.2.2 1 2\r\n";
  const char *h2 = "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
  const char *h3 = "PROXY TCP6 ::ffff:198.18.0.1 2001:db8::2 5 2\r\n"; /* = h1's address */
  int a = raw_send(port, h1, strlen(h1)), b = raw_send(port, h2, strlen(h2));
  tu_wait_int(s.r, &s.f.made, 2, 5);
  int c = raw_send(port, h3, strlen(h3));
  tu_wait_int(s.r, &s.f.handshake_failed, 1, 5);
  ck_assert_int_eq(s.f.last_handshake_failed.code, WEFT_EPEERREFUSED);
  ck_assert_int_eq(s.f.built, 2);
  close(a);
  close(b);
  close(c);
  server_free(&s);
  ck_assert_int_eq(
      weft_endpoint_parse("tcp:0:perAddressLimit=x", WEFT_ENDPOINT_SERVER, &ep, err, sizeof err),
      WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_new(WEFT_ENDPOINT_CLIENT, &ep), 0);
  ck_assert_int_eq(weft_endpoint_set_per_address_limit(ep, 1), WEFT_EINVAL);
  weft_endpoint_free(ep);
}
END_TEST

static Suite *proxy_suite(void) {
  Suite *s = suite_create("proxy");
  TCase *tc = tcase_create("parser");
  tcase_add_test(tc, v1_good);
  tcase_add_test(tc, v1_hostile);
  tcase_add_test(tc, v2_good);
  tcase_add_test(tc, v2_hostile);
  tcase_add_test(tc, sources);
  suite_add_tcase(s, tc);
  tc = tcase_create("listener");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, tcp_v1_and_v2_one_segment);
  tcase_add_test(tc, tcp_header_in_pieces);
  tcase_add_test(tc, tcp_hostile_headers);
  tcase_add_test(tc, tcp_slow_header);
  tcase_add_test(tc, untrusted_source);
  tcase_add_test(tc, tls_v1_and_v2_one_segment);
  tcase_add_test(tc, tls_without_header);
  tcase_add_test(tc, reactor_freed_while_waiting);
  tcase_add_test(tc, haproxy_description);
  suite_add_tcase(s, tc);
  tc = tcase_create("admission");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, filter_refuses_before_tls);
  tcase_add_test(tc, filter_sees_proxy_address);
  tcase_add_test(tc, per_address_limit);
  tcase_add_test(tc, per_address_limit_behind_proxy);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(proxy_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
