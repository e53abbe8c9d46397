/* check_abi.c: the size rule of the structures the caller allocates (lib/abi-internal.h and
 * "API and ABI stability" in doc/guide.md): SIZE first, 0 means the 1.0 layout, later members
 * are read only when SIZE covers them, and a SIZE larger than the library knows is accepted. */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <check.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <weft/weft.h>

#include "abi-internal.h"
#include "testutil.h"
#include "tlsutil.h"

/* A struct that grew after 1.0: A and B are 1.0 members, C and D came later. */
typedef struct abi_test {
  size_t size;
  int a;
  void *b;
  double c;
  char d[40];
} abi_test;
#define WEFT__V1_END_abi_test WEFT__END_OF(abi_test, b)

START_TEST(test_has_member) {
  abi_test t;
  memset(&t, 0, sizeof t);
  /* SIZE 0: the 1.0 layout, and nothing after it. */
  ck_assert(WEFT__HAS_MEMBER(&t, abi_test, a));
  ck_assert(WEFT__HAS_MEMBER(&t, abi_test, b));
  ck_assert(!WEFT__HAS_MEMBER(&t, abi_test, c));
  ck_assert(!WEFT__HAS_MEMBER(&t, abi_test, d));
  ck_assert_uint_eq(WEFT__KNOWN_SIZE(&t, abi_test), WEFT__END_OF(abi_test, b));
  /* A SIZE smaller than the 1.0 layout reads as 0. */
  t.size = 1;
  ck_assert(WEFT__HAS_MEMBER(&t, abi_test, b));
  ck_assert(!WEFT__HAS_MEMBER(&t, abi_test, c));
  /* A SIZE that covers C but ends inside D. */
  t.size = offsetof(abi_test, d) + 1;
  ck_assert(WEFT__HAS_MEMBER(&t, abi_test, c));
  ck_assert(!WEFT__HAS_MEMBER(&t, abi_test, d));
  ck_assert_uint_eq(WEFT__KNOWN_SIZE(&t, abi_test), offsetof(abi_test, d) + 1);
  /* One byte short of C: C is not there. */
  t.size = WEFT__END_OF(abi_test, c) - 1;
  ck_assert(!WEFT__HAS_MEMBER(&t, abi_test, c));
  /* The whole struct, and more than this library knows (the tail is ignored). */
  t.size = sizeof t;
  ck_assert(WEFT__HAS_MEMBER(&t, abi_test, d));
  ck_assert_uint_eq(WEFT__KNOWN_SIZE(&t, abi_test), sizeof t);
  t.size = sizeof t + 1000;
  ck_assert(WEFT__HAS_MEMBER(&t, abi_test, d));
  ck_assert_uint_eq(WEFT__KNOWN_SIZE(&t, abi_test), sizeof t);
}
END_TEST

START_TEST(test_size_first) {
  /* SIZE is the first member of every growable struct, and the 1.0 layouts are whole. */
  ck_assert_uint_eq(offsetof(weft_protocol_ops, size), 0);
  ck_assert_uint_eq(offsetof(weft_factory, size), 0);
  ck_assert_uint_eq(offsetof(weft_reconnect_options, size), 0);
  ck_assert_uint_eq(offsetof(weft_cert_spec, size), 0);
  ck_assert_uint_eq(offsetof(weft_allocator, size), 0);
  weft_factory f = {.data = NULL};
  ck_assert(WEFT__HAS_MEMBER(&f, weft_factory, handshake_failed));
  ck_assert(WEFT__HAS_MEMBER(&f, weft_factory, data));
  weft_protocol_ops ops = {.connection_made = NULL};
  ck_assert(WEFT__HAS_MEMBER(&ops, weft_protocol_ops, connection_lost));
  /* The _init functions set SIZE to the headers' sizeof. */
  weft_reconnect_options ro;
  memset(&ro, 0xa5, sizeof ro);
  weft_reconnect_options_init(&ro);
  ck_assert_uint_eq(ro.size, sizeof ro);
  weft_cert_spec spec;
  memset(&spec, 0xa5, sizeof spec);
  weft_cert_spec_init(&spec);
  ck_assert_uint_eq(spec.size, sizeof spec);
  ck_assert_ptr_null(spec.common_name);
  ck_assert_int_eq(spec.serial, 0);
  weft_cert_spec_init(NULL); /* ignored */
}
END_TEST

/* --- A newer program's larger structs are accepted, their tail ignored ----------------- */

static long newer_mallocs;
static void *n_malloc(size_t size, void *ud) {
  (void)ud;
  newer_mallocs++;
  return malloc(size);
}
static void n_free(void *p, void *ud) {
  (void)ud;
  free(p);
}
static void *n_calloc(size_t n, size_t size, void *ud) {
  (void)ud;
  newer_mallocs++;
  return calloc(n, size);
}
static void *n_realloc(void *p, size_t size, void *ud) {
  (void)ud;
  return realloc(p, size);
}

START_TEST(test_larger_allocator) {
  /* A program built against a newer weft.h, whose weft_allocator has 32 more bytes (set to
   * junk here: the library must not read them). */
  struct {
    weft_allocator a;
    unsigned char tail[32];
  } newer;
  memset(&newer, 0xff, sizeof newer);
  newer.a = (weft_allocator){.size = sizeof newer,
                             .malloc = n_malloc,
                             .free = n_free,
                             .calloc = n_calloc,
                             .realloc = n_realloc,
                             .user_data = NULL};
  ck_assert_int_eq(weft_set_allocator(&newer.a), 0);
  newer_mallocs = 0;
  weft_reactor *r = tu_reactor_new();
  ck_assert_int_gt(newer_mallocs, 0);
  weft_reactor_free(r);
  ck_assert_int_eq(weft_allocations_outstanding(), 0);
  /* SIZE 0, the 1.0 layout, works too. */
  weft_allocator old = {
      .malloc = n_malloc, .free = n_free, .calloc = n_calloc, .realloc = n_realloc};
  ck_assert_int_eq(weft_set_allocator(&old), 0);
  newer_mallocs = 0;
  r = tu_reactor_new();
  ck_assert_int_gt(newer_mallocs, 0);
  weft_reactor_free(r);
  ck_assert_int_eq(weft_set_allocator(NULL), 0);
}
END_TEST

START_TEST(test_larger_cert_spec) {
  EVP_PKEY *key = tu_make_key();
  struct {
    weft_cert_spec s;
    unsigned char tail[64];
  } newer;
  memset(&newer, 0xff, sizeof newer);
  weft_cert_spec_init(&newer.s);
  newer.s.size = sizeof newer;
  newer.s.common_name = "newer";
  X509 *cert = NULL;
  ck_assert_int_eq(weft_cert_generate(&newer.s, key, NULL, NULL, &cert), 0);
  ck_assert_ptr_nonnull(cert);
  X509_free(cert);
  EVP_PKEY_free(key);
}
END_TEST

START_TEST(test_larger_reconnect_options) {
  /* weft_reconnect_start copies the options the library knows, and ignores a newer tail. */
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  int port = 0;
  weft_listener *l = tu_listen_tcp_local(r, &server, &port);
  struct {
    weft_reconnect_options o;
    unsigned char tail[48];
  } newer;
  memset(&newer, 0xff, sizeof newer);
  weft_reconnect_options_init(&newer.o);
  newer.o.size = sizeof newer;
  newer.o.seed = 3;
  weft_reconnector *rc = NULL;
  ck_assert_int_eq(
      tu_reconnect_start(r, "127.0.0.1", port, &client.base, NULL, NULL, 0, NULL, &newer.o, &rc),
      0);
  tu_wait_int(r, &client.made, 1, 10.0);
  ck_assert_int_eq(weft_reconnector_state(rc), WEFT_RECONNECT_CONNECTED);
  ck_assert_double_eq_tol(weft_reconnector_current_delay(rc), 1.0, 1e-12);
  weft_reconnector_free(rc);
  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_check(&client);
  tu_factory_check(&server);
  tu_factory_cleanup(&client);
  tu_factory_cleanup(&server);
}
END_TEST

static Suite *abi_suite(void) {
  Suite *s = suite_create("abi");
  TCase *tc = tcase_create("size rule");
  tcase_add_test(tc, test_has_member);
  tcase_add_test(tc, test_size_first);
  tcase_add_test(tc, test_larger_allocator);
  tcase_add_test(tc, test_larger_cert_spec);
  tcase_add_test(tc, test_larger_reconnect_options);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(abi_suite());
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
