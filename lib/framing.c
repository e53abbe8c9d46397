/* framing.c: lines, length-prefixed frames and netstrings cut out of a byte stream (see
 * weft/framing.h). A frame that lies whole in the piece being fed is passed in place; only a
 * frame split across pieces is gathered in BUF, which never grows past the maximum frame
 * length (plus the delimiter's length minus one for lines). Header bytes of a frame split
 * across pieces are kept in HDR, so that a switch to raw mode can give back every byte not
 * yet framed, exactly as it arrived. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft/error.h>
#include <weft/framing.h>

#include "alloc-internal.h"

enum framer_kind { KIND_LINES, KIND_PREFIXED, KIND_NETSTRINGS };

/* Netstring parse states. */
enum { NS_LEN = 0, NS_DATA, NS_COMMA };

#define NS_DIGITS_MAX 20 /* SIZE_MAX / 2 has at most 19 digits on 64-bit systems */

struct weft_framer {
  enum framer_kind kind;
  weft_frame_fn on_frame;
  weft_raw_fn on_raw; /* raw mode when not NULL */
  void *arg;
  size_t max;
  uint8_t delim[16];
  size_t dlen;
  unsigned prefix;
  weft_byte_order order;

  int stopped; /* a fault or a callback stopped it; ERR is returned from then on */
  int err;
  int in_feed;
  int raw_pending; /* raw mode set while bytes were held: give them back at the next feed */

  /* a frame split across pieces */
  uint8_t hdr[NS_DIGITS_MAX + 1 + 8]; /* prefixed: the length bytes; netstrings: "LEN:" */
  size_t hdr_len;
  int have_len; /* prefixed: the length is known (NEED) */
  int ns_state; /* netstrings: NS_LEN, NS_DATA, NS_COMMA */
  size_t ns_value;
  size_t need; /* the payload length being gathered */
  uint8_t *buf;
  size_t blen, bcap;
};

static int check_common(size_t max, weft_frame_fn on_frame, weft_framer **out) {
  if (out)
    *out = NULL;
  return !out || !on_frame || max > SIZE_MAX / 2 ? WEFT_EINVAL : 0;
}

static int framer_alloc(enum framer_kind kind, size_t max, weft_frame_fn on_frame, void *arg,
                        weft_framer **out) {
  weft_framer *f = weft__calloc(1, sizeof *f);
  if (!f)
    return WEFT_ENOMEM;
  f->kind = kind;
  f->max = max;
  f->on_frame = on_frame;
  f->arg = arg;
  *out = f;
  return 0;
}

int weft_framer_new_lines(const void *delimiter, size_t delimiter_len, size_t max_length,
                          weft_frame_fn on_frame, void *arg, weft_framer **out) {
  int rc = check_common(max_length, on_frame, out);
  if (rc != 0 || !delimiter || delimiter_len < 1 || delimiter_len > 16 || max_length == 0)
    return WEFT_EINVAL;
  if ((rc = framer_alloc(KIND_LINES, max_length, on_frame, arg, out)) != 0)
    return rc;
  memcpy((*out)->delim, delimiter, delimiter_len);
  (*out)->dlen = delimiter_len;
  return 0;
}

int weft_framer_new_prefixed(unsigned prefix_size, weft_byte_order order, size_t max_length,
                             weft_frame_fn on_frame, void *arg, weft_framer **out) {
  int rc = check_common(max_length, on_frame, out);
  if (rc != 0 || (prefix_size != 1 && prefix_size != 2 && prefix_size != 4 && prefix_size != 8) ||
      (order != WEFT_BIG_ENDIAN && order != WEFT_LITTLE_ENDIAN))
    return WEFT_EINVAL;
  if ((rc = framer_alloc(KIND_PREFIXED, max_length, on_frame, arg, out)) != 0)
    return rc;
  (*out)->prefix = prefix_size;
  (*out)->order = order;
  return 0;
}

int weft_framer_new_netstrings(size_t max_length, weft_frame_fn on_frame, void *arg,
                               weft_framer **out) {
  int rc = check_common(max_length, on_frame, out);
  if (rc != 0)
    return rc;
  return framer_alloc(KIND_NETSTRINGS, max_length, on_frame, arg, out);
}

void weft_framer_free(weft_framer *f) {
  if (!f)
    return;
  weft__free(f->buf);
  weft__free(f);
}

size_t weft_framer_buffered(const weft_framer *f) {
  return f ? f->hdr_len + f->blen : 0;
}

int weft_framer_set_max_length(weft_framer *f, size_t max_length) {
  if (!f || max_length > SIZE_MAX / 2 || (f->kind == KIND_LINES && max_length == 0))
    return WEFT_EINVAL;
  /* Bytes already held stay (a shorter maximum applies to the next frame, and a line held
   * past it is refused by the next feed). */
  f->max = max_length;
  return 0;
}

int weft_framer_set_raw_mode(weft_framer *f, weft_raw_fn on_raw) {
  if (!f)
    return WEFT_EINVAL;
  if (f->stopped)
    return WEFT_ECLOSED;
  f->on_raw = on_raw;
  f->raw_pending = on_raw != NULL && weft_framer_buffered(f) > 0;
  return 0;
}

/* --- the parsers ------------------------------------------------------------------------- */

static int stop(weft_framer *f, int code) {
  f->stopped = 1;
  f->err = code == WEFT_ETOOLONG || code == WEFT_EBADFRAME ? code : WEFT_ECLOSED;
  f->blen = f->hdr_len = 0;
  return code;
}

/* Appends N bytes to BUF, growing it by doubling up to LIMIT bytes. */
static int buf_append(weft_framer *f, const uint8_t *p, size_t n, size_t limit) {
  if (f->blen + n > f->bcap) {
    size_t cap = f->bcap ? f->bcap : 256;
    while (cap < f->blen + n)
      cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
    if (cap > limit)
      cap = limit;
    if (cap < f->blen + n)
      return WEFT_ETOOLONG; /* the callers check the limit first: never reached */
    uint8_t *nb = weft__realloc(f->buf, cap);
    if (!nb)
      return WEFT_ENOMEM;
    f->buf = nb;
    f->bcap = cap;
  }
  memcpy(f->buf + f->blen, p, n);
  f->blen += n;
  return 0;
}

/* Delivers one frame. The framer's state is reset first, so the callback sees an idle framer
 * (held bytes 0) and may switch to raw mode. */
static int deliver(weft_framer *f, const uint8_t *p, size_t n) {
  f->blen = 0;
  f->hdr_len = 0;
  f->have_len = 0;
  f->ns_state = NS_LEN;
  f->ns_value = 0;
  int rc = f->on_frame(f->arg, n ? p : (const uint8_t *)"", n);
  return rc != 0 ? stop(f, rc) : 0;
}

static const uint8_t *find(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m) {
  if (m == 1)
    return memchr(hay, needle[0], n);
  return memmem(hay, n, needle, m);
}

/* Lines: consumes a prefix of P[0..N) into *USED. */
static int step_lines(weft_framer *f, const uint8_t *p, size_t n, size_t *used) {
  size_t limit = f->max + f->dlen - 1; /* content plus a partial delimiter */
  if (f->blen > 0) {
    /* A delimiter that starts in BUF and ends in P: the earliest start first. */
    size_t kmax = f->dlen - 1 < f->blen ? f->dlen - 1 : f->blen;
    for (size_t k = kmax; k >= 1; k--) {
      if (n >= f->dlen - k && memcmp(f->buf + f->blen - k, f->delim, k) == 0 &&
          memcmp(p, f->delim + k, f->dlen - k) == 0) {
        size_t llen = f->blen - k;
        *used = f->dlen - k;
        if (llen > f->max)
          return stop(f, WEFT_ETOOLONG);
        return deliver(f, f->buf, llen);
      }
    }
  }
  const uint8_t *q = find(p, n, f->delim, f->dlen);
  if (!q) {
    *used = n;
    if (f->blen + n > limit)
      return stop(f, WEFT_ETOOLONG);
    int rc = buf_append(f, p, n, limit);
    return rc ? stop(f, rc) : 0;
  }
  size_t part = (size_t)(q - p);
  *used = part + f->dlen;
  if (f->blen + part > f->max)
    return stop(f, WEFT_ETOOLONG);
  if (f->blen == 0)
    return deliver(f, p, part); /* whole in the piece: no copy */
  int rc = buf_append(f, p, part, limit);
  if (rc)
    return stop(f, rc);
  return deliver(f, f->buf, f->blen);
}

static uint64_t decode_len(const uint8_t *h, unsigned size, weft_byte_order order) {
  uint64_t v = 0;
  for (unsigned i = 0; i < size; i++)
    v = (v << 8) | h[order == WEFT_BIG_ENDIAN ? i : size - 1 - i];
  return v;
}

static int step_prefixed(weft_framer *f, const uint8_t *p, size_t n, size_t *used) {
  if (!f->have_len && f->hdr_len == 0 && n >= f->prefix) {
    /* The fast path: the header, and maybe the whole frame, in this piece. */
    uint64_t len = decode_len(p, f->prefix, f->order);
    if (len > f->max)
      return *used = n, stop(f, WEFT_ETOOLONG);
    if (n - f->prefix >= len) {
      *used = f->prefix + (size_t)len;
      return deliver(f, p + f->prefix, (size_t)len);
    }
    memcpy(f->hdr, p, f->prefix);
    f->hdr_len = f->prefix;
    f->have_len = 1;
    f->need = (size_t)len;
    *used = f->prefix;
    return 0;
  }
  if (!f->have_len) {
    size_t take = f->prefix - f->hdr_len < n ? f->prefix - f->hdr_len : n;
    memcpy(f->hdr + f->hdr_len, p, take);
    f->hdr_len += take;
    *used = take;
    if (f->hdr_len < f->prefix)
      return 0;
    uint64_t len = decode_len(f->hdr, f->prefix, f->order);
    if (len > f->max)
      return stop(f, WEFT_ETOOLONG);
    f->have_len = 1;
    f->need = (size_t)len;
    if (f->need == 0)
      return deliver(f, NULL, 0);
    return 0;
  }
  size_t take = f->need - f->blen < n ? f->need - f->blen : n;
  *used = take;
  if (f->blen == 0 && take == f->need)
    return deliver(f, p, take); /* the payload whole in this piece */
  int rc = buf_append(f, p, take, f->need);
  if (rc)
    return stop(f, rc);
  return f->blen == f->need ? deliver(f, f->buf, f->blen) : 0;
}

static int step_netstrings(weft_framer *f, const uint8_t *p, size_t n, size_t *used) {
  if (f->ns_state == NS_LEN) {
    size_t i = 0;
    for (; i < n; i++) {
      uint8_t c = p[i];
      size_t digits = f->hdr_len;
      if (c == ':') {
        if (digits == 0)
          return *used = i + 1, stop(f, WEFT_EBADFRAME);
        f->hdr[f->hdr_len++] = c;
        f->need = f->ns_value;
        f->ns_state = NS_DATA;
        i++;
        break;
      }
      if (c < '0' || c > '9' || (digits == 1 && f->hdr[0] == '0'))
        return *used = i + 1, stop(f, WEFT_EBADFRAME); /* not a digit, or a leading zero */
      size_t d = (size_t)(c - '0');
      if (f->ns_value > (f->max - (d < f->max ? d : f->max)) / 10 ||
          f->ns_value * 10 + d > f->max || digits + 1 > NS_DIGITS_MAX)
        return *used = i + 1, stop(f, WEFT_ETOOLONG);
      f->ns_value = f->ns_value * 10 + d;
      f->hdr[f->hdr_len++] = c;
    }
    *used = i;
    return 0;
  }
  if (f->ns_state == NS_DATA) {
    if (f->blen == 0 && n > f->need) {
      /* The payload and its ',' whole in this piece. */
      *used = f->need + 1;
      if (p[f->need] != ',')
        return stop(f, WEFT_EBADFRAME);
      return deliver(f, p, f->need);
    }
    size_t take = f->need - f->blen < n ? f->need - f->blen : n;
    *used = take;
    int rc = take ? buf_append(f, p, take, f->need) : 0;
    if (rc)
      return stop(f, rc);
    if (f->blen == f->need)
      f->ns_state = NS_COMMA;
    return 0;
  }
  *used = 1;
  if (p[0] != ',')
    return stop(f, WEFT_EBADFRAME);
  return deliver(f, f->buf, f->blen);
}

static int feed(weft_framer *f, const uint8_t *data, size_t len);

/* Raw mode was set while bytes were held: reset the parser and feed them again, so that they
 * reach ON_RAW (and, if it switches back, the parser) exactly as they arrived. */
static int give_back_held(weft_framer *f) {
  f->raw_pending = 0;
  size_t n = weft_framer_buffered(f);
  uint8_t *held = weft__malloc(n);
  if (!held)
    return stop(f, WEFT_ENOMEM);
  memcpy(held, f->hdr, f->hdr_len);
  if (f->blen)
    memcpy(held + f->hdr_len, f->buf, f->blen);
  f->hdr_len = f->blen = 0;
  f->have_len = 0;
  f->ns_state = NS_LEN;
  f->ns_value = 0;
  int rc = feed(f, held, n);
  weft__free(held);
  return rc;
}

static int feed(weft_framer *f, const uint8_t *data, size_t len) {
  size_t pos = 0;
  while (pos < len) {
    if (f->stopped)
      return f->err;
    size_t used = 0;
    int rc;
    if (f->on_raw) {
      if (f->raw_pending && (rc = give_back_held(f)) != 0)
        return rc;
      if (!f->on_raw)
        continue; /* ON_RAW switched back while taking the held bytes */
      size_t n = len - pos;
      size_t c = f->on_raw(f->arg, data + pos, n);
      pos += f->on_raw || c > n ? n : c;
      continue;
    }
    switch (f->kind) {
      case KIND_LINES:
        rc = step_lines(f, data + pos, len - pos, &used);
        break;
      case KIND_PREFIXED:
        rc = step_prefixed(f, data + pos, len - pos, &used);
        break;
      default:
        rc = step_netstrings(f, data + pos, len - pos, &used);
        break;
    }
    if (rc != 0)
      return rc;
    pos += used;
  }
  return 0;
}

int weft_framer_feed(weft_framer *f, const uint8_t *data, size_t len) {
  if (!f || (!data && len > 0))
    return WEFT_EINVAL;
  if (f->stopped)
    return f->err;
  if (f->in_feed)
    return WEFT_EBUSY;
  if (len == 0)
    return 0;
  f->in_feed = 1;
  int rc = feed(f, data, len);
  f->in_feed = 0;
  return rc;
}
