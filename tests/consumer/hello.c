/* tests/consumer/hello.c: a program built outside weft's tree against an installed weft, three
 * ways (pkg-config, CMake's find_package, the Debian packages): see ci/consumers.sh.
 *
 * It uses only calls that are part of weft's stable surface, and calls libevent and OpenSSL
 * directly too, to show that what the consumer is given (pkg-config's flags, the weft::weft
 * target) carries their include directories and libraries as well as weft's.
 * Prints one line, "hello: weft VERSION, libevent VERSION, OPENSSL-VERSION", and exits 0; on any
 * failure prints "hello: error: ..." to stderr and exits 1. */
#include <stdio.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/crypto.h>
#include <weft/weft.h>

int main(void) {
  weft_reactor *reactor = NULL;
  weft_cert_options *options = NULL;
  int rc;

  /* The headers it was compiled with and the library it runs with must be the same release. */
  if (strcmp(weft_version_string(), WEFT_VERSION_STRING) != 0) {
    fprintf(stderr, "hello: error: compiled against weft %s, running with %s\n",
            WEFT_VERSION_STRING, weft_version_string());
    return 1;
  }
  if ((rc = weft_reactor_new(&reactor)) != 0) {
    fprintf(stderr, "hello: error: weft_reactor_new: %s\n", weft_strerror(rc));
    return 1;
  }
  if ((rc = weft_cert_options_new(&options)) != 0) {
    fprintf(stderr, "hello: error: weft_cert_options_new: %s\n", weft_strerror(rc));
    weft_reactor_free(reactor);
    return 1;
  }
  weft_cert_options_unref(options);
  weft_reactor_free(reactor);
  printf("hello: weft %s, libevent %s, %s\n", weft_version_string(), event_get_version(),
         OpenSSL_version(OPENSSL_VERSION));
  return 0;
}
