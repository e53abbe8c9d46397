/* check_error.c: the error table, reasons and errno mapping (lib/error.c). */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <weft/error.h>

#include "error-internal.h"

/* Every code of the table, with its name and message as written there. */
static const struct {
  int code;
  const char *name;
  const char *msg;
} table[] = {
#define ROW(name, value, msg) {value, "WEFT_" #name, msg},
    WEFT_ERRNO_MAP(ROW)
#undef ROW
};
#define TABLE_SIZE (sizeof table / sizeof table[0])

START_TEST(test_table) {
  ck_assert_uint_ge(TABLE_SIZE, 32);
  for (size_t i = 0; i < TABLE_SIZE; i++) {
    ck_assert_int_lt(table[i].code, 0);
    ck_assert_str_eq(weft_err_name(table[i].code), table[i].name);
    ck_assert_str_eq(weft_strerror(table[i].code), table[i].msg);
    ck_assert_str_ne(weft_strerror(table[i].code), "unknown error");
    for (size_t j = 0; j < i; j++)
      ck_assert_int_ne(table[i].code, table[j].code); /* values are unique */
  }
  ck_assert_int_eq(WEFT_EINVAL, -1);
  ck_assert_int_eq(WEFT_ENOPROTOCOL, -23);
  ck_assert_str_eq(weft_err_name(WEFT_ENOPROTOCOL), "WEFT_ENOPROTOCOL");
}
END_TEST

START_TEST(test_ok_and_unknown) {
  ck_assert_str_eq(weft_strerror(0), "success");
  ck_assert_str_eq(weft_err_name(WEFT_OK), "WEFT_OK");
  ck_assert_str_eq(weft_strerror(-9999), "unknown error");
  ck_assert_str_eq(weft_strerror(5), "unknown error");
  ck_assert_str_eq(weft_err_name(-9999), "WEFT_UNKNOWN");
  ck_assert_str_eq(weft_err_name(12345), "WEFT_UNKNOWN");
}
END_TEST

START_TEST(test_reason_set) {
  weft__reason_buf buf;
  memset(&buf, 0x5a, sizeof buf);
  weft__reason_set(&buf, WEFT_ETLSALERT, "alert %d (%s)", 48, "unknown CA");
  ck_assert_int_eq(buf.reason.code, WEFT_ETLSALERT);
  ck_assert_ptr_eq(buf.reason.message, buf.msg);
  ck_assert_str_eq(buf.reason.message, "alert 48 (unknown CA)");
  ck_assert_int_eq(buf.reason.tls_alert, -1);
  ck_assert_int_eq(buf.reason.alert_sent, 0);
  ck_assert_int_eq(buf.reason.verify_result, 0);
  ck_assert_int_eq(buf.reason.sys_errno, 0);

  weft__reason_set(&buf, WEFT_ECONNREFUSED, NULL);
  ck_assert_str_eq(buf.reason.message, "connection refused");
  weft__reason_set(&buf, WEFT_OK, NULL);
  ck_assert_str_eq(buf.reason.message, "success");

  /* long messages are cut, always terminated */
  char big[WEFT__REASON_MSG_MAX * 2];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  weft__reason_set(&buf, WEFT_ETLS, "%s", big);
  ck_assert_uint_eq(strlen(buf.msg), WEFT__REASON_MSG_MAX - 1);

  weft__reason_set(NULL, WEFT_ETLS, "ignored"); /* no crash */
}
END_TEST

START_TEST(test_errno_mapping) {
  ck_assert_int_eq(weft__errno_to_code(0), WEFT_OK);
  ck_assert_int_eq(weft__errno_to_code(ECONNREFUSED), WEFT_ECONNREFUSED);
  ck_assert_int_eq(weft__errno_to_code(ECONNRESET), WEFT_ECONNRESET);
  ck_assert_int_eq(weft__errno_to_code(EPIPE), WEFT_ECONNRESET);
  ck_assert_int_eq(weft__errno_to_code(ETIMEDOUT), WEFT_ETIMEDOUT);
  ck_assert_int_eq(weft__errno_to_code(EADDRINUSE), WEFT_EADDRINUSE);
  ck_assert_int_eq(weft__errno_to_code(EADDRNOTAVAIL), WEFT_EADDRNOTAVAIL);
  ck_assert_int_eq(weft__errno_to_code(ENOMEM), WEFT_ENOMEM);
  ck_assert_int_eq(weft__errno_to_code(EINVAL), WEFT_EINVAL);
  ck_assert_int_eq(weft__errno_to_code(ECANCELED), WEFT_ECANCELED);
  ck_assert_int_eq(weft__errno_to_code(ECONNABORTED), WEFT_ECONNLOST);
  ck_assert_int_eq(weft__errno_to_code(EHOSTUNREACH), WEFT_ESOCKET);
  ck_assert_int_eq(weft__errno_to_code(EMFILE), WEFT_ESOCKET);
}
END_TEST

int main(void) {
  Suite *s = suite_create("error");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_table);
  tcase_add_test(tc, test_ok_and_unknown);
  tcase_add_test(tc, test_reason_set);
  tcase_add_test(tc, test_errno_mapping);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
