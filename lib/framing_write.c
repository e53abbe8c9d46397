/* framing_write.c: writing length-prefixed frames and netstrings (see weft/framing.h). Kept
 * apart from the parsers in framing.c, which the fuzz target builds without the transport. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>

#include <weft/error.h>
#include <weft/framing.h>
#include <weft/transport.h>

int weft_write_prefixed(weft_transport *transport, unsigned prefix_size, weft_byte_order order,
                        const void *data, size_t len) {
  if ((prefix_size != 1 && prefix_size != 2 && prefix_size != 4 && prefix_size != 8) ||
      (order != WEFT_BIG_ENDIAN && order != WEFT_LITTLE_ENDIAN) || (!data && len > 0))
    return WEFT_EINVAL;
  if (prefix_size < 8 && (uint64_t)len >> (8 * prefix_size) != 0)
    return WEFT_EINVAL;
  uint8_t hdr[8];
  uint64_t v = len;
  for (unsigned i = 0; i < prefix_size; i++) {
    hdr[order == WEFT_BIG_ENDIAN ? prefix_size - 1 - i : i] = (uint8_t)(v & 0xff);
    v >>= 8;
  }
  weft_buf bufs[2] = {{hdr, prefix_size}, {data, len}};
  return weft_transport_write_sequence(transport, bufs, len ? 2 : 1);
}

int weft_write_netstring(weft_transport *transport, const void *data, size_t len) {
  if (!data && len > 0)
    return WEFT_EINVAL;
  char hdr[32];
  int h = snprintf(hdr, sizeof hdr, "%zu:", len);
  weft_buf bufs[3] = {{hdr, (size_t)h}, {data, len}, {",", 1}};
  return weft_transport_write_sequence(transport, bufs, 3);
}
