/* check_framing.c: lines, length-prefixed frames and netstrings (lib/framing.c), each stream
 * fed whole, under every split into two and three pieces, and one byte at a time: the frames,
 * the raw bytes and the final status must always be the same. Hostile lengths, leading zeros,
 * raw-mode switches (STARTTLS), and bounded memory. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <weft/alloc.h>
#include <weft/error.h>
#include <weft/framing.h>

/* --- a recorder: every frame and raw piece, and the final status, as one transcript --------- */

typedef struct rec {
  uint8_t *log;
  size_t len, cap;
  weft_framer *f;
  size_t max_held;     /* the most bytes the framer held after a feed */
  const char *raw_on;  /* switch to raw mode after a frame equal to this */
  const char *line_on; /* in raw mode, switch back after this many bytes ... */
  size_t raw_budget;   /* ... namely this many (0: never) */
  size_t raw_seen;
  int stop_on; /* return this from the frame callback after STOP_AFTER frames */
  int stop_after;
  int frames;
  const uint8_t *piece; /* the piece being fed, to check zero copies */
  size_t piece_len;
  int in_place; /* frames delivered as a pointer into the piece */
} rec;

static void rec_put(rec *r, const void *p, size_t n) {
  if (r->len + n > r->cap) {
    r->cap = (r->len + n) * 2 + 64;
    r->log = realloc(r->log, r->cap);
    ck_assert_ptr_nonnull(r->log);
  }
  if (n)
    memcpy(r->log + r->len, p, n);
  r->len += n;
}

static void rec_printf(rec *r, const char *fmt, size_t v) {
  char tmp[64];
  int n = snprintf(tmp, sizeof tmp, fmt, v);
  rec_put(r, tmp, (size_t)n);
}

static size_t on_raw(void *arg, const uint8_t *data, size_t len) {
  rec *r = arg;
  size_t take = len;
  if (r->raw_budget && r->raw_seen + take > r->raw_budget)
    take = r->raw_budget - r->raw_seen;
  rec_printf(r, "R%zu:", take);
  rec_put(r, data, take);
  r->raw_seen += take;
  if (r->raw_budget && r->raw_seen == r->raw_budget) {
    ck_assert_int_eq(weft_framer_set_raw_mode(r->f, NULL), 0);
    r->raw_seen = 0;
  }
  return take;
}

static int on_frame(void *arg, const uint8_t *frame, size_t len) {
  rec *r = arg;
  ck_assert_ptr_nonnull(frame);
  if (r->piece && frame >= r->piece && frame + len <= r->piece + r->piece_len)
    r->in_place++;
  rec_printf(r, "F%zu:", len);
  rec_put(r, frame, len);
  r->frames++;
  if (r->raw_on && len == strlen(r->raw_on) && memcmp(frame, r->raw_on, len) == 0)
    ck_assert_int_eq(weft_framer_set_raw_mode(r->f, on_raw), 0);
  if (r->stop_on && r->frames == r->stop_after)
    return r->stop_on;
  return 0;
}

/* Merges consecutive raw pieces of a transcript ("R2:abR1:c" -> "R3:abc"): how raw bytes are
 * cut depends on how they arrived; their order and content do not. */
static uint8_t *normalise(uint8_t *log, size_t *len) {
  uint8_t *out = malloc(*len + 1);
  size_t o = 0, i = 0;
  ck_assert_ptr_nonnull(out);
  while (i < *len) {
    char kind = (char)log[i];
    if (kind == '=') {
      memcpy(out + o, log + i, *len - i);
      o += *len - i;
      break;
    }
    ck_assert(kind == 'F' || kind == 'R');
    char *end;
    size_t n = strtoul((char *)log + i + 1, &end, 10);
    size_t body = (size_t)((uint8_t *)end - log) + 1;
    if (kind == 'R') {
      /* gather this and the following raw pieces */
      uint8_t *acc = malloc(*len + 1);
      size_t an = 0;
      for (;;) {
        memcpy(acc + an, log + body, n);
        an += n;
        i = body + n;
        if (i >= *len || log[i] != 'R')
          break;
        n = strtoul((char *)log + i + 1, &end, 10);
        body = (size_t)((uint8_t *)end - log) + 1;
      }
      o += (size_t)sprintf((char *)out + o, "R%zu:", an);
      memcpy(out + o, acc, an);
      o += an;
      free(acc);
      continue;
    }
    memcpy(out + o, log + i, body - i + n);
    o += body - i + n;
    i = body + n;
  }
  free(log);
  *len = o;
  return out;
}

typedef int (*maker)(rec *r, weft_framer **out);

/* Feeds DATA cut at the offsets CUTS[0..NCUTS) (ascending), returns the transcript (malloc'd)
 * with the final status appended. */
static uint8_t *run_split(maker make, const rec *tmpl, const uint8_t *data, size_t len,
                          const size_t *cuts, size_t ncuts, size_t *out_len, int *in_place) {
  rec r = *tmpl;
  r.log = NULL;
  r.len = r.cap = 0;
  ck_assert_int_eq(make(&r, &r.f), 0);
  int rc = 0;
  size_t start = 0;
  for (size_t i = 0; i <= ncuts && rc == 0; i++) {
    size_t end = i < ncuts ? cuts[i] : len;
    r.piece = data + start;
    r.piece_len = end - start;
    rc = weft_framer_feed(r.f, data + start, end - start);
    if (weft_framer_buffered(r.f) > r.max_held)
      r.max_held = weft_framer_buffered(r.f);
    start = end;
  }
  rec_printf(&r, "=%zu", (size_t)(unsigned)-rc);
  if (rc != 0) /* stopped: it stays stopped */
    ck_assert_int_ne(weft_framer_feed(r.f, (const uint8_t *)"x", 1), 0);
  weft_framer_free(r.f);
  rec_put(&r, "", 1); /* room for strtoul's stop at the end */
  r.len--;
  r.log = normalise(r.log, &r.len);
  *out_len = r.len;
  if (in_place)
    *in_place = r.in_place;
  ck_assert_uint_le(r.max_held, tmpl->max_held); /* the template holds the bound */
  return r.log;
}

/* The whole stream, then every split into two and three pieces, then one byte at a time:
 * all transcripts equal EXPECT (or the whole run's when EXPECT is NULL). Returns the whole
 * run's transcript. */
static void check_all_splits(maker make, const rec *tmpl, const char *data_s, size_t len,
                             const char *expect) {
  const uint8_t *data = (const uint8_t *)data_s;
  size_t wlen;
  int in_place = 0;
  uint8_t *whole = run_split(make, tmpl, data, len, NULL, 0, &wlen, &in_place);
  if (expect) {
    if (wlen != strlen(expect) || memcmp(whole, expect, wlen) != 0)
      ck_abort_msg("whole: got '%.*s', want '%s'", (int)wlen, (char *)whole, expect);
  }
  size_t cuts[3];
  for (size_t a = 1; a < len; a++) {
    cuts[0] = a;
    size_t n;
    uint8_t *t = run_split(make, tmpl, data, len, cuts, 1, &n, NULL);
    if (n != wlen || memcmp(t, whole, n) != 0)
      ck_abort_msg("split at %zu: got '%.*s', want '%.*s'", a, (int)n, (char *)t, (int)wlen,
                   (char *)whole);
    free(t);
    for (size_t b = a + 1; b < len; b++) {
      cuts[1] = b;
      t = run_split(make, tmpl, data, len, cuts, 2, &n, NULL);
      if (n != wlen || memcmp(t, whole, n) != 0)
        ck_abort_msg("split at %zu,%zu: got '%.*s', want '%.*s'", a, b, (int)n, (char *)t,
                     (int)wlen, (char *)whole);
      free(t);
    }
  }
  size_t *all = malloc(len * sizeof *all);
  for (size_t i = 0; i + 1 < len; i++)
    all[i] = i + 1;
  size_t n;
  uint8_t *t = run_split(make, tmpl, data, len, all, len ? len - 1 : 0, &n, NULL);
  if (n != wlen || memcmp(t, whole, n) != 0)
    ck_abort_msg("byte by byte: got '%.*s', want '%.*s'", (int)n, (char *)t, (int)wlen,
                 (char *)whole);
  free(t);
  free(all);
  free(whole);
}

/* --- makers ------------------------------------------------------------------------------- */

static size_t g_max = 16;
static unsigned g_prefix = 2;
static weft_byte_order g_order = WEFT_BIG_ENDIAN;

static int make_crlf(rec *r, weft_framer **out) {
  return weft_framer_new_lines("\r\n", 2, g_max, on_frame, r, out);
}
static int make_lf(rec *r, weft_framer **out) {
  return weft_framer_new_lines("\n", 1, g_max, on_frame, r, out);
}
static int make_abc(rec *r, weft_framer **out) {
  return weft_framer_new_lines("abc", 3, g_max, on_frame, r, out);
}
static int make_prefixed(rec *r, weft_framer **out) {
  return weft_framer_new_prefixed(g_prefix, g_order, g_max, on_frame, r, out);
}
static int make_netstrings(rec *r, weft_framer **out) {
  return weft_framer_new_netstrings(g_max, on_frame, r, out);
}

/* --- lines -------------------------------------------------------------------------------- */

START_TEST(test_lines_splits) {
  g_max = 16;
  rec t = {.max_held = 16 + 1};
  const char *in = "HELO a\r\n\r\nMAIL x\rz\r\n0123456789abcdef\r\ntail\r";
  check_all_splits(make_crlf, &t, in, strlen(in), "F6:HELO aF0:F8:MAIL x\rzF16:0123456789abcdef=0");
  /* A delimiter that overlaps itself: "abc" after "ab". */
  rec t3 = {.max_held = 16 + 2};
  const char *in3 = "xxababcyyabcabcaab";
  check_all_splits(make_abc, &t3, in3, strlen(in3), "F4:xxabF2:yyF0:=0");
}
END_TEST

START_TEST(test_lines_zero_copy) {
  g_max = 64;
  rec t = {.max_held = 64};
  const char *in = "one\ntwo\nthree\n";
  size_t n;
  int in_place = 0;
  uint8_t *log = run_split(make_lf, &t, (const uint8_t *)in, strlen(in), NULL, 0, &n, &in_place);
  ck_assert_int_eq(in_place, 3); /* every line passed in place, none copied */
  free(log);
  size_t cut = 5; /* "one\nt" | "wo\nthree\n": "two" is gathered, "three" in place again */
  log = run_split(make_lf, &t, (const uint8_t *)in, strlen(in), &cut, 1, &n, &in_place);
  ck_assert_int_eq(in_place, 2);
  free(log);
}
END_TEST

START_TEST(test_lines_too_long) {
  g_max = 8;
  rec t = {.max_held = 8 + 1};
  /* Lines up to the maximum pass; the first longer one stops the framer under every split. */
  const char *in = "12345678\r\nok\r\n123456789\r\nnever\r\n";
  check_all_splits(make_crlf, &t, in, strlen(in), "F8:12345678F2:ok=33");
  /* With no delimiter at all: refused once max + 1 content bytes and the delimiter's room are
   * there, the memory held never more than that. */
  const char *flood = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  check_all_splits(make_crlf, &t, flood, strlen(flood), "=33");
  /* A line of max + 1 bytes ending in a partial delimiter is not refused early. */
  check_all_splits(make_crlf, &t, "12345678\r", 9, "=0");
}
END_TEST

START_TEST(test_lines_bad_args) {
  weft_framer *f = (weft_framer *)1;
  ck_assert_int_eq(weft_framer_new_lines("", 0, 10, on_frame, NULL, &f), WEFT_EINVAL);
  ck_assert_ptr_null(f);
  ck_assert_int_eq(weft_framer_new_lines("\n", 1, 0, on_frame, NULL, &f), WEFT_EINVAL);
  ck_assert_int_eq(weft_framer_new_lines("\n", 1, 10, NULL, NULL, &f), WEFT_EINVAL);
  ck_assert_int_eq(weft_framer_new_lines("01234567890123456", 17, 10, on_frame, NULL, &f),
                   WEFT_EINVAL);
  ck_assert_int_eq(weft_framer_new_prefixed(3, WEFT_BIG_ENDIAN, 10, on_frame, NULL, &f),
                   WEFT_EINVAL);
  ck_assert_int_eq(weft_framer_new_prefixed(4, (weft_byte_order)7, 10, on_frame, NULL, &f),
                   WEFT_EINVAL);
  ck_assert_int_eq(weft_framer_new_netstrings(SIZE_MAX, on_frame, NULL, &f), WEFT_EINVAL);
  ck_assert_int_eq(weft_framer_feed(NULL, (const uint8_t *)"x", 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_framer_set_raw_mode(NULL, on_raw), WEFT_EINVAL);
  ck_assert_uint_eq(weft_framer_buffered(NULL), 0);
  weft_framer_free(NULL);
}
END_TEST

/* --- raw mode ----------------------------------------------------------------------------- */

START_TEST(test_raw_switch_starttls) {
  g_max = 32;
  /* The line that asks for the switch; then the bytes after it, in the same piece or not,
   * reach the raw callback exactly, never the line parser. */
  rec t = {.max_held = 32 + 1, .raw_on = "STARTTLS"};
  const char *in = "EHLO x\r\nSTARTTLS\r\nQUIT\r\nMORE\r\n";
  /* The raw callback may be called in several pieces: the transcript is normalised by
   * checking the concatenation, so compare against the whole run only (expect NULL) and
   * check the whole run by hand. */
  size_t n;
  uint8_t *log = run_split(make_crlf, &t, (const uint8_t *)in, strlen(in), NULL, 0, &n, NULL);
  const char *want = "F6:EHLO xF8:STARTTLSR12:QUIT\r\nMORE\r\n=0";
  ck_assert_uint_eq(n, strlen(want));
  ck_assert_int_eq(memcmp(log, want, n), 0);
  free(log);
  /* Every split: the raw bytes in order, nothing else framed. */
  check_all_splits(make_crlf, &t, in, strlen(in), want);
}
END_TEST

START_TEST(test_raw_and_back) {
  /* A length-prefixed frame "RAW" switches to raw for 5 bytes, then framing resumes: what an
   * HTTP-like protocol does for a body. Raw budget makes the transcript split-independent
   * except for the raw piece sizes, so check it on whole and byte-by-byte feeds. */
  g_max = 100;
  g_prefix = 1;
  g_order = WEFT_BIG_ENDIAN;
  rec t = {.max_held = 100, .raw_on = "RAW", .raw_budget = 5};
  const char in[] = "\x03RAW"
                    "hello"
                    "\x02ok"
                    "\x00";
  size_t len = sizeof in - 1;
  size_t n;
  uint8_t *log = run_split(make_prefixed, &t, (const uint8_t *)in, len, NULL, 0, &n, NULL);
  const char *want = "F3:RAWR5:helloF2:okF0:=0";
  ck_assert_uint_eq(n, strlen(want));
  ck_assert_int_eq(memcmp(log, want, n), 0);
  free(log);
  size_t cuts[16];
  for (size_t i = 0; i + 1 < len; i++)
    cuts[i] = i + 1;
  log = run_split(make_prefixed, &t, (const uint8_t *)in, len, cuts, len - 1, &n, NULL);
  const char *want1 = "F3:RAWR5:helloF2:okF0:=0";
  ck_assert_uint_eq(n, strlen(want1));
  ck_assert_int_eq(memcmp(log, want1, n), 0);
  free(log);
}
END_TEST

START_TEST(test_raw_gives_back_held_bytes) {
  /* Raw mode set from outside a callback while part of a frame is held: those bytes come
   * back first, exactly as they arrived (header included). */
  rec r = {0};
  ck_assert_int_eq(weft_framer_new_prefixed(4, WEFT_LITTLE_ENDIAN, 100, on_frame, &r, &r.f), 0);
  ck_assert_int_eq(weft_framer_feed(r.f, (const uint8_t *)"\x05\x00\x00\x00he", 6), 0);
  ck_assert_uint_eq(weft_framer_buffered(r.f), 6);
  ck_assert_int_eq(weft_framer_set_raw_mode(r.f, on_raw), 0);
  ck_assert_int_eq(weft_framer_feed(r.f, (const uint8_t *)"llo", 3), 0);
  const char want[] = "R6:\x05\x00\x00\x00heR3:llo";
  ck_assert_uint_eq(r.len, sizeof want - 1);
  ck_assert_int_eq(memcmp(r.log, want, r.len), 0);
  ck_assert_uint_eq(weft_framer_buffered(r.f), 0);
  weft_framer_free(r.f);
  free(r.log);
}
END_TEST

START_TEST(test_callback_stops) {
  g_max = 16;
  rec t = {.max_held = 17, .stop_on = 7, .stop_after = 2};
  const char *in = "a\nb\nc\n";
  check_all_splits(make_lf, &t, in, strlen(in), NULL);
  size_t n;
  uint8_t *log = run_split(make_lf, &t, (const uint8_t *)in, strlen(in), NULL, 0, &n, NULL);
  /* -7 printed as an unsigned of the negated value: 4294967289 */
  const char *want = "F1:aF1:b=4294967289";
  ck_assert_uint_eq(n, strlen(want));
  ck_assert_int_eq(memcmp(log, want, n), 0);
  free(log);
}
END_TEST

/* --- length-prefixed ---------------------------------------------------------------------- */

static size_t build_prefixed(uint8_t *out, unsigned size, weft_byte_order order,
                             const char *const *frames, size_t count) {
  size_t o = 0;
  for (size_t i = 0; i < count; i++) {
    uint64_t len = strlen(frames[i]);
    for (unsigned b = 0; b < size; b++)
      out[o + (order == WEFT_BIG_ENDIAN ? size - 1 - b : b)] = (uint8_t)(len >> (8 * b));
    o += size;
    memcpy(out + o, frames[i], (size_t)len);
    o += (size_t)len;
  }
  return o;
}

START_TEST(test_prefixed_splits) {
  static const char *const frames[] = {"hello", "", "x", "0123456789"};
  static const unsigned sizes[] = {1, 2, 4, 8};
  for (size_t s = 0; s < 4; s++) {
    for (int o = 0; o < 2; o++) {
      uint8_t buf[128];
      g_prefix = sizes[s];
      g_order = o ? WEFT_LITTLE_ENDIAN : WEFT_BIG_ENDIAN;
      g_max = 10;
      size_t len = build_prefixed(buf, g_prefix, g_order, frames, 4);
      rec t = {.max_held = 10 + 8};
      check_all_splits(make_prefixed, &t, (const char *)buf, len,
                       "F5:helloF0:F1:xF10:0123456789=0");
    }
  }
}
END_TEST

START_TEST(test_prefixed_hostile) {
  /* Lengths above the maximum, up to 2^64 - 1, are refused when the header is read: nothing of
   * the payload is buffered, nothing is allocated for it. */
  g_prefix = 8;
  g_order = WEFT_BIG_ENDIAN;
  g_max = 1024;
  rec t = {.max_held = 8};
  const char huge[] = "\xff\xff\xff\xff\xff\xff\xff\xff"
                      "abcdef";
  check_all_splits(make_prefixed, &t, huge, sizeof huge - 1, "=33");
  const char just[] = "\x00\x00\x00\x00\x00\x00\x04\x01"
                      "abc"; /* 1025 */
  check_all_splits(make_prefixed, &t, just, sizeof just - 1, "=33");
  g_order = WEFT_LITTLE_ENDIAN;
  g_prefix = 4;
  const char le[] = "\x01\x04\x00\x00"; /* 1025 little-endian */
  t.max_held = 4;
  check_all_splits(make_prefixed, &t, le, sizeof le - 1, "=33");
  /* A frame at the maximum announced and sent slowly: memory follows what arrived. */
  long before = weft_allocations_outstanding();
  rec r = {0};
  ck_assert_int_eq(weft_framer_new_prefixed(4, WEFT_BIG_ENDIAN, 1 << 20, on_frame, &r, &r.f), 0);
  ck_assert_int_eq(weft_framer_feed(r.f, (const uint8_t *)"\x00\x10\x00\x00zz", 6), 0);
  ck_assert_uint_eq(weft_framer_buffered(r.f), 6);
  ck_assert_int_eq(r.frames, 0);
  weft_framer_free(r.f);
  ck_assert_int_eq(weft_allocations_outstanding(), before);
}
END_TEST

/* --- netstrings --------------------------------------------------------------------------- */

START_TEST(test_netstrings) {
  g_max = 12;
  rec t = {.max_held = 12 + 4};
  const char *good = "5:hello,0:,12:hello world!,1:,,";
  check_all_splits(make_netstrings, &t, good, strlen(good), "F5:helloF0:F12:hello world!F1:,=0");
  check_all_splits(make_netstrings, &t, "3:abc,05:hello,", 15, "F3:abc=35"); /* leading zero */
  check_all_splits(make_netstrings, &t, "3:abcX", 6, "=35");                 /* no comma */
  check_all_splits(make_netstrings, &t, "3:abc,:x,", 9, "F3:abc=35");        /* no length */
  check_all_splits(make_netstrings, &t, "3x:abc,", 7, "=35");                /* not a digit */
  check_all_splits(make_netstrings, &t, "13:", 3, "=33");                    /* too long */
  check_all_splits(make_netstrings, &t, "99999999999999999999999999:", 27, "=33");
}
END_TEST

static Suite *framing_suite(void) {
  Suite *s = suite_create("framing");
  TCase *tc = tcase_create("framing");
  tcase_add_test(tc, test_lines_splits);
  tcase_add_test(tc, test_lines_zero_copy);
  tcase_add_test(tc, test_lines_too_long);
  tcase_add_test(tc, test_lines_bad_args);
  tcase_add_test(tc, test_raw_switch_starttls);
  tcase_add_test(tc, test_raw_and_back);
  tcase_add_test(tc, test_raw_gives_back_held_bytes);
  tcase_add_test(tc, test_callback_stops);
  tcase_add_test(tc, test_prefixed_splits);
  tcase_add_test(tc, test_prefixed_hostile);
  tcase_add_test(tc, test_netstrings);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(framing_suite());
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
