/* The library's own version: what weft/version.h said when the library was built. */
#include "config.h"

#include <weft/version.h>

unsigned weft_version(void) {
  return WEFT_VERSION_HEX;
}

const char *weft_version_string(void) {
  return WEFT_VERSION_STRING;
}
