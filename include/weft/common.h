/** @file
 * weft/common.h: what every public weft header needs; included by each of them.
 *
 * WEFT_EXTERN marks the functions of the public API. The library is built with hidden symbol
 * visibility, so only the functions declared with WEFT_EXTERN in include/weft/ are exported
 * from the shared library (tests/check_exports.sh checks it). Programs never need to use it.
 */
#ifndef WEFT_COMMON_H
#define WEFT_COMMON_H

/** Marks a function of the public API (exported from the shared library). */
#if defined(__GNUC__) || defined(__clang__)
#define WEFT_EXTERN __attribute__((visibility("default")))
#else
#define WEFT_EXTERN
#endif

#endif /* WEFT_COMMON_H */
