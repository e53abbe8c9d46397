/** @file
 * weft/version.h: the version of the weft headers, as macros, and of the library, as functions.
 *
 * The macros say which weft a program was compiled against; weft_version() and
 * weft_version_string() say which library it runs with (they differ when a program built
 * against one release runs with another shared library). This header is the one place the
 * version is written: configure reads it (AC_INIT), and the test suite checks that the two
 * agree. Semantic versioning: MINOR grows with additions, MAJOR with incompatible changes.
 *
 * Threading: everything here is pure and may be used from any thread.
 */
#ifndef WEFT_VERSION_H
#define WEFT_VERSION_H

#include <weft/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @{ */
/** The version of these headers, in three numbers (0..255 each). */
#define WEFT_VERSION_MAJOR 1
#define WEFT_VERSION_MINOR 0
#define WEFT_VERSION_PATCH 0
/** @} */

/** The version as one number, 0xMMmmpp: compare it with `>=` to test for a feature. */
#define WEFT_VERSION_HEX                                                                           \
  ((WEFT_VERSION_MAJOR << 16) | (WEFT_VERSION_MINOR << 8) | WEFT_VERSION_PATCH)

#define WEFT__VERSION_STR2(x) #x
#define WEFT__VERSION_STR(x) WEFT__VERSION_STR2(x)

/** The version as a string, "MAJOR.MINOR.PATCH". */
#define WEFT_VERSION_STRING                                                                        \
  WEFT__VERSION_STR(WEFT_VERSION_MAJOR)                                                            \
  "." WEFT__VERSION_STR(WEFT_VERSION_MINOR) "." WEFT__VERSION_STR(WEFT_VERSION_PATCH)

/** The version of the library the program runs with, in the WEFT_VERSION_HEX form. */
WEFT_EXTERN unsigned weft_version(void);

/** The version of the library the program runs with, as WEFT_VERSION_STRING (static, never
 * NULL). */
WEFT_EXTERN const char *weft_version_string(void);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_VERSION_H */
