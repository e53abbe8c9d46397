/* fuzz_nego_wire: the validation of wire-form protocol lists (length-prefixed names, as in the
 * ALPN extension), which guards every list a user gives weft.
 *
 * Each input is a candidate wire list. The target checks that
 *  - weft__nego_validate_wire accepts it exactly when an independent reference check does
 *    (each name 1..255 bytes, the length bytes consistent with the total, at most 65535 bytes),
 *    returns only 0 or WEFT_EINVAL, and explains a refusal with a non-empty sentence;
 *  - OpenSSL's own check (SSL_CTX_set_alpn_protos) agrees on lists weft accepts or refuses for
 *    their shape (OpenSSL does not enforce the 65535 limit);
 *  - the input (when its names average 15 bytes or more) tiled up to just below and just
 *    above 65535 bytes is accepted, then refused; lists of exactly 65535 and 65536 bytes are
 *    checked once at start;
 *  - weft_cert_options_set_next_protocols_wire on fresh options gives the same verdict (or
 *    WEFT_ENOTSUP in a build without ALPN and NPN), with a sentence in last_error on failure.
 * Any disagreement calls abort(), which libFuzzer reports as a crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <weft/tls.h>

#include "negotiation-internal.h"

#define LIST_MAX 65535u

/* The reference: walk the names counting what is left, independent of lib/negotiation.c. */
static int reference_ok(const uint8_t *wire, size_t len) {
  if (len > LIST_MAX)
    return 0;
  size_t left = len;
  const uint8_t *p = wire;
  while (left > 0) {
    size_t name_len = *p;
    left -= 1;
    p += 1;
    if (name_len < 1 || name_len > 255 || name_len > left)
      return 0;
    left -= name_len;
    p += name_len;
  }
  return 1;
}

/* The number of names in a well-formed list. */
static size_t count_names(const uint8_t *wire, size_t len) {
  size_t count = 0;
  for (size_t pos = 0; pos < len; pos += 1 + (size_t)wire[pos])
    count++;
  return count;
}

static __attribute__((noreturn)) void fail(const char *what, size_t len) {
  fprintf(stderr, "fuzz_nego_wire: %s (input of %zu bytes)\n", what, len);
  abort();
}

/* A refusal must carry WEFT_EINVAL and a non-empty, NUL-terminated sentence in the buffer. */
static void check_reason(const weft__reason_buf *err, size_t len) {
  if (err->reason.code != WEFT_EINVAL)
    fail("the reason's code is not WEFT_EINVAL", len);
  if (err->reason.message != err->msg)
    fail("the reason's message does not point at its buffer", len);
  if (memchr(err->msg, '\0', sizeof err->msg) == NULL)
    fail("the reason's message is not NUL-terminated", len);
  if (err->msg[0] == '\0')
    fail("the reason's message is empty", len);
}

/* Validates WIRE with and without a reason buffer and compares with the reference. */
static void check_validate(const uint8_t *wire, size_t len) {
  int expected = reference_ok(wire, len);
  weft__reason_buf err;
  memset(&err, 0x5a, sizeof err); /* no NUL anywhere: the callee must write one */
  int rc = weft__nego_validate_wire(wire, len, &err);
  if (rc != 0 && rc != WEFT_EINVAL)
    fail("weft__nego_validate_wire returned neither 0 nor WEFT_EINVAL", len);
  if ((rc == 0) != expected)
    fail(expected ? "weft__nego_validate_wire refused a well-formed list"
                  : "weft__nego_validate_wire accepted a malformed list",
         len);
  if (rc != 0)
    check_reason(&err, len);
  if (weft__nego_validate_wire(wire, len, NULL) != rc)
    fail("weft__nego_validate_wire answers differently without a reason buffer", len);
}

static SSL_CTX *scratch; /* only for OpenSSL's own list check */
static uint8_t *big;     /* 2 * LIST_MAX bytes, for the tiled lists */

/* Copies of WIRE (well-formed, LEN bytes) laid end to end: the most that fit in 65535 bytes
 * must be accepted, one more copy refused. */
static void check_tiled(const uint8_t *wire, size_t len) {
  size_t total = LIST_MAX / len * len;
  memcpy(big, wire, len);
  for (size_t filled = len; filled < total + len;) { /* doubling: few memcpy calls */
    size_t n = filled <= total + len - filled ? filled : total + len - filled;
    memcpy(big + filled, big, n);
    filled += n;
  }
  if (weft__nego_validate_wire(big, total, NULL) != 0)
    fail("a tiled well-formed list of at most 65535 bytes was refused", len);
  if (weft__nego_validate_wire(big, total + len, NULL) != WEFT_EINVAL)
    fail("a tiled list longer than 65535 bytes was accepted", len);
}

/* Lists exactly at the limit, built from long names: 255 names of 255 bytes then one of 254
 * bytes is 65535 bytes; a 255-byte last name makes it 65536. */
static void check_boundaries(void) {
  uint8_t *buf = calloc(1, LIST_MAX + 1);
  if (buf == NULL)
    abort();
  size_t at = 0;
  for (int i = 0; i < 255; i++) {
    buf[at] = 255;
    memset(buf + at + 1, 'a' + i % 26, 255);
    at += 256;
  }
  buf[at] = 254;
  memset(buf + at + 1, 'z', 254);
  if (at + 255 != LIST_MAX || weft__nego_validate_wire(buf, LIST_MAX, NULL) != 0)
    fail("a 65535-byte list was refused", LIST_MAX);
  buf[at] = 255;
  buf[at + 255] = 'z';
  if (weft__nego_validate_wire(buf, LIST_MAX + 1, NULL) != WEFT_EINVAL)
    fail("a 65536-byte list was accepted", LIST_MAX + 1);
  weft__reason_buf err;
  if (weft__nego_validate_wire(NULL, 3, &err) != WEFT_EINVAL)
    fail("a NULL list with a length was accepted", 3);
  check_reason(&err, 3);
  if (weft__nego_validate_wire(NULL, 0, NULL) != 0)
    fail("the empty list (NULL, 0) was refused", 0);
  free(buf);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  scratch = SSL_CTX_new(TLS_method());
  big = malloc(2 * LIST_MAX);
  if (scratch == NULL || big == NULL)
    abort();
  check_boundaries();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_validate(data, size);
  int ok = reference_ok(data, size);

  /* OpenSSL 3.0 refuses a list whose shape is wrong (it returns 1, inverted convention); an
   * empty list just clears. It does not know the 65535 limit. */
  if (size > 0 && size <= LIST_MAX) {
    int openssl_ok = SSL_CTX_set_alpn_protos(scratch, data, (unsigned int)size) == 0;
    ERR_clear_error();
    if (openssl_ok != ok)
      fail(ok ? "OpenSSL refuses a list weft accepts" : "OpenSSL accepts a list weft refuses",
           size);
  }
  /* only lists with long names: short ones would mean thousands of names to walk per run */
  if (ok && size > 0 && size >= 16 * count_names(data, size))
    check_tiled(data, size);

  weft_cert_options *options;
  if (weft_cert_options_new(&options) != 0)
    abort();
  int rc = weft_cert_options_set_next_protocols_wire(options, data, size);
  int expected = size > 0 && weft_protocol_negotiation_mechanisms() == 0 ? WEFT_ENOTSUP
                 : ok                                                    ? 0
                                                                         : WEFT_EINVAL;
  if (rc != expected)
    fail("weft_cert_options_set_next_protocols_wire gave an unexpected result", size);
  const char *why = weft_cert_options_last_error(options);
  if (rc != 0 && (why == NULL || why[0] == '\0'))
    fail("a refused list left no sentence in last_error", size);
  weft_cert_options_unref(options);
  return 0;
}
