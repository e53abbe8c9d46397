/* Private: the PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2) header parser
 * and writer of lib/proxy.c, used by the listener (lib/listener.c) and the fuzz target. */
#ifndef WEFT_PROXY_INTERNAL_H
#define WEFT_PROXY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <weft/endpoint.h>

/* The largest header a listener reads: all of version 1 (107 bytes) and version 2 headers
 * with up to 4080 bytes of addresses and TLVs. A longer one is refused as oversized. */
#define WEFT__PROXY_MAX 4096

/* A parsed header. Addresses are the ones the header carries; HAS_ADDRESSES is 0 for a
 * version 2 LOCAL command, an UNSPEC family or a version 1 UNKNOWN line: the connection's own
 * addresses apply then. TLVS points into the parsed buffer. */
typedef struct weft__proxy_header {
  int version; /* 1 or 2 */
  int has_addresses;
  struct sockaddr_storage src, dst;
  socklen_t src_len, dst_len;
  const uint8_t *tlvs; /* version 2: the TLV block, checked well formed */
  size_t tlvs_len;
} weft__proxy_header;

/* Parses the start of BUF (LEN bytes), accepting the VERSIONS given (WEFT_PROXY_V1 |
 * WEFT_PROXY_V2). Returns the header's length (> 0) when a whole header is there (bytes
 * after it are not looked at), 0 when every byte so far is a valid beginning of a header and
 * more are needed (at most WEFT__PROXY_MAX - LEN more), or WEFT_EPROXY with a sentence in WHY
 * (WHY_SIZE bytes, NUL-terminated) for a malformed, oversized or unsupported header. */
long weft__proxy_parse(const uint8_t *buf, size_t len, unsigned versions, weft__proxy_header *out,
                       char *why, size_t why_size);

/* 1 if ADDR is inside the prefix NET/BITS (same family; an IPv4-mapped IPv6 address counts as
 * IPv4). */
int weft__proxy_addr_in(const struct sockaddr *addr, const struct sockaddr_storage *net, int bits);

/* One trusted source prefix (weft_listener_set_proxy_protocol's SOURCES). */
typedef struct weft__proxy_net {
  struct sockaddr_storage net;
  int bits;
} weft__proxy_net;

/* Parses SOURCES ("IP[/BITS],...", blanks around items allowed) into a new array (*OUT,
 * weft__free it; *N entries). NULL or "" gives none. Returns 0, WEFT_EINVAL or WEFT_ENOMEM. */
int weft__proxy_parse_sources(const char *sources, weft__proxy_net **out, size_t *n);

#endif
