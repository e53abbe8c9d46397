/* fuzz_framing: the stream parsers of lib/framing.c (lines, length-prefixed frames of every
 * header size and order, netstrings), which read bytes straight from the network.
 *
 * The first input byte picks the parser and its maximum length, the second seeds the cuts;
 * the rest is the stream. The target feeds the stream whole, then cut into pieces at
 * pseudo-random offsets, then one byte at a time, and checks that
 *  - the frames and the final status are the same for every cut;
 *  - no frame is longer than the maximum, and the bytes held never pass the bound the header
 *    documents (the maximum plus the delimiter or header);
 *  - the status is 0, WEFT_ETOOLONG or WEFT_EBADFRAME (netstrings only), and a stopped framer
 *    stays stopped.
 * Any disagreement calls abort(), which libFuzzer reports as a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <weft/error.h>
#include <weft/framing.h>

typedef struct out {
  uint8_t *log;
  size_t len, cap;
  size_t max;
} out;

static void put(out *o, const void *p, size_t n) {
  if (o->len + n + 16 > o->cap) {
    o->cap = (o->len + n + 16) * 2;
    o->log = realloc(o->log, o->cap);
    if (!o->log)
      abort();
  }
  memcpy(o->log + o->len, p, n);
  o->len += n;
}

static int on_frame(void *arg, const uint8_t *frame, size_t len) {
  out *o = arg;
  if (len > o->max)
    abort();
  uint64_t l = len;
  put(o, &l, sizeof l);
  put(o, frame, len);
  return 0;
}

static int make(uint8_t sel, out *o, weft_framer **f) {
  static const unsigned sizes[] = {1, 2, 4, 8};
  o->max = (size_t)(sel >> 3) * 7 + 1;
  switch (sel & 7) {
    case 0:
      return weft_framer_new_lines("\r\n", 2, o->max, on_frame, o, f);
    case 1:
      return weft_framer_new_lines("\n", 1, o->max, on_frame, o, f);
    case 2:
      return weft_framer_new_lines("aba", 3, o->max, on_frame, o, f);
    case 7:
      return weft_framer_new_netstrings(o->max, on_frame, o, f);
    default:
      return weft_framer_new_prefixed(sizes[(sel & 7) - 3],
                                      (sel & 32) ? WEFT_LITTLE_ENDIAN : WEFT_BIG_ENDIAN, o->max,
                                      on_frame, o, f);
  }
}

static size_t bound(uint8_t sel, size_t max) {
  switch (sel & 7) {
    case 0:
      return max + 1;
    case 1:
      return max;
    case 2:
      return max + 2;
    case 7:
      return max + 22; /* digits, ':' */
    default:
      return max + 8;
  }
}

/* STEP 0: whole; STEP 1: one byte at a time; otherwise cuts from the seed. */
static void run(uint8_t sel, uint8_t seed, const uint8_t *d, size_t n, int step, out *o) {
  weft_framer *f;
  memset(o, 0, sizeof *o);
  if (make(sel, o, &f) != 0)
    abort();
  int rc = 0;
  size_t pos = 0;
  uint32_t x = seed * 2654435761u + 1;
  while (pos < n && rc == 0) {
    size_t piece = n - pos;
    if (step == 1) {
      piece = 1;
    } else if (step == 2) {
      x = x * 1103515245u + 12345u;
      piece = 1 + (x >> 16) % 17;
      if (piece > n - pos)
        piece = n - pos;
    }
    rc = weft_framer_feed(f, d + pos, piece);
    if (weft_framer_buffered(f) > bound(sel, o->max))
      abort();
    pos += piece;
  }
  if (rc != 0 && rc != WEFT_ETOOLONG && !(rc == WEFT_EBADFRAME && (sel & 7) == 7))
    abort();
  if (rc != 0 && weft_framer_feed(f, d, 1) != rc)
    abort(); /* stays stopped, with the same fault */
  int32_t r = rc;
  put(o, &r, sizeof r);
  weft_framer_free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  out a, b, c;
  run(data[0], data[1], data + 2, size - 2, 0, &a);
  run(data[0], data[1], data + 2, size - 2, 1, &b);
  run(data[0], data[1], data + 2, size - 2, 2, &c);
  if (a.len != b.len || a.len != c.len || memcmp(a.log, b.log, a.len) != 0 ||
      memcmp(a.log, c.log, a.len) != 0)
    abort();
  free(a.log);
  free(b.log);
  free(c.log);
  return 0;
}
