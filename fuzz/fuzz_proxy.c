/* fuzz_proxy: the PROXY protocol header parser of lib/proxy.c (weft__proxy_parse), which reads
 * the first bytes of a connection, from anyone who can connect, before any TLS.
 *
 * The first input byte picks the versions accepted; the rest is what the peer sent. The target
 * checks what the listener relies on, and aborts (a crash for libFuzzer) otherwise:
 *  - the result is a length within the input and at most WEFT__PROXY_MAX, 0, or WEFT_EPROXY
 *    with a sentence;
 *  - "need more" is only said with fewer than WEFT__PROXY_MAX bytes, and every proper prefix of
 *    a whole header asks for more (so the listener never consumes past a header);
 *  - the header alone parses to the same length, with the same TLV block, which lies inside it
 *    and is well formed; the addresses, when any, are IPv4, IPv6 or Unix with their lengths.
 * It also runs the writer on the parsed addresses and parses the result back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <weft/error.h>

#include "proxy-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  unsigned versions = (data[0] & 3) ? (data[0] & 3) : 3;
  const uint8_t *buf = data + 1;
  size_t len = size - 1;
  weft__proxy_header h;
  char why[160];
  long r = weft__proxy_parse(buf, len, versions, &h, why, sizeof why);
  if (r < 0) {
    if (r != WEFT_EPROXY || !why[0])
      abort();
    return 0;
  }
  if (r == 0) {
    if (len >= WEFT__PROXY_MAX)
      abort();
    return 0;
  }
  if ((size_t)r > len || r > WEFT__PROXY_MAX)
    abort();
  if (h.version != 1 && h.version != 2)
    abort();
  if (h.tlvs_len && (h.tlvs < buf || h.tlvs + h.tlvs_len > buf + r))
    abort();
  for (size_t off = 0; off < h.tlvs_len;) {
    if (h.tlvs_len - off < 3)
      abort();
    off += 3 + ((size_t)h.tlvs[off + 1] << 8 | h.tlvs[off + 2]);
    if (off > h.tlvs_len)
      abort();
  }
  if (h.has_addresses) {
    int fam = h.src.ss_family;
    if (fam != h.dst.ss_family || (fam != AF_INET && fam != AF_INET6 && fam != AF_UNIX))
      abort();
    if (fam != AF_UNIX && (h.src_len != h.dst_len || h.src_len > sizeof h.src))
      abort();
  }
  /* a whole header again, alone and in every cut */
  uint8_t *copy = malloc((size_t)r);
  if (!copy)
    abort();
  memcpy(copy, buf, (size_t)r);
  weft__proxy_header h2;
  if (weft__proxy_parse(copy, (size_t)r, versions, &h2, NULL, 0) != r ||
      h2.tlvs_len != h.tlvs_len || h2.has_addresses != h.has_addresses)
    abort();
  for (size_t i = 0; i < (size_t)r; i++)
    if (weft__proxy_parse(copy, i, versions, &h2, NULL, 0) != 0)
      abort();
  free(copy);
  /* the writer and the parser agree */
  if (h.has_addresses && h.src.ss_family != AF_UNIX) {
    uint8_t out[64];
    size_t olen;
    int rc = weft_proxy_header_write((unsigned)h.version, (struct sockaddr *)&h.src,
                                     (struct sockaddr *)&h.dst, NULL, 0, out, sizeof out, &olen);
    if (rc != 0 || weft__proxy_parse(out, olen, 3, &h2, NULL, 0) != (long)olen ||
        memcmp(&h2.src, &h.src, h.src_len) != 0 || memcmp(&h2.dst, &h.dst, h.dst_len) != 0)
      abort();
  }
  return 0;
}
