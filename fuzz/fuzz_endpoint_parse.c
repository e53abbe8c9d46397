/* fuzz_endpoint_parse: the endpoint description parser (weft_endpoint_parse, lib/endpoint_parse.c
 * with the setters of lib/endpoint.c), which reads strings from command lines and
 * configuration files.
 *
 * The first input byte picks the role (bit 0) and the size of the error buffer (the rest); the
 * remaining bytes, NUL-terminated, are the description. The target checks that the call
 * returns 0 with an endpoint of the role asked, or a negative code with no endpoint and a
 * NUL-terminated sentence (when there is room for one), never anything else. Files named in
 * a description are opened as the parser would; keep the fuzzer's working directory free of
 * interesting files. Listening and connecting are not linked in (stubs that abort). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <weft/endpoint.h>
#include <weft/error.h>
#include <weft/tls.h>

#include "connector-internal.h"
#include "listener-internal.h"

/* endpoint.c's listen and connect, never reached by parsing */
int weft__listen(weft_reactor *r, const char *i, int p, weft_factory *f, weft_cert_options *o,
                 int b, unsigned fl, weft_listener **out) {
  (void)r, (void)i, (void)p, (void)f, (void)o, (void)b, (void)fl, (void)out;
  abort();
}
int weft_listener_set_connection_limit(weft_listener *l, unsigned max) {
  (void)l, (void)max;
  abort();
}
int weft_listener_set_write_timeout(weft_listener *l, double s) {
  (void)l, (void)s;
  abort();
}
int weft_listener_set_proxy_protocol(weft_listener *l, unsigned v, const char *s, double t) {
  (void)l, (void)v, (void)s, (void)t;
  abort();
}
int weft__connect(weft_reactor *r, const char *h, int p, weft_factory *f, weft_cert_options *o,
                  const char *sn, double t, const char *b, const weft__owner *ow,
                  weft_connector **out) {
  (void)r, (void)h, (void)p, (void)f, (void)o, (void)sn, (void)t, (void)b, (void)ow, (void)out;
  abort();
}
int weft_listener_set_per_address_limit(weft_listener *l, unsigned max) {
  (void)l, (void)max;
  abort();
}
int weft__listen_fd(weft_reactor *r, int fd, weft_factory *f, weft_cert_options *o,
                    weft_listener **out) {
  (void)r, (void)fd, (void)f, (void)o, (void)out;
  abort();
}
void weft__listener_unlink_on_stop(weft_listener *l, char *path, dev_t dev, ino_t ino) {
  (void)l, (void)path, (void)dev, (void)ino;
  abort();
}
int weft__connect_unix(weft_reactor *r, const char *p, weft_factory *f, weft_cert_options *o,
                       const char *sn, double t, const weft__owner *ow, weft_connector **out) {
  (void)r, (void)p, (void)f, (void)o, (void)sn, (void)t, (void)ow, (void)out;
  abort();
}
int weft__systemd_fd(int family, int index, const char *name, int *out) {
  (void)family, (void)index, (void)name, (void)out;
  abort();
}
int weft__listen_adopted(weft_reactor *r, int fd, weft_factory *f, weft_cert_options *o,
                         weft_listener **out) {
  (void)r, (void)fd, (void)f, (void)o, (void)out;
  abort();
}
int weft__connector_set_attempt_delay(weft_connector *c, double seconds) {
  (void)c, (void)seconds;
  abort();
}
void weft_listener_stop(weft_listener *l) {
  (void)l;
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 5000)
    return 0;
  weft_endpoint_role role = (data[0] & 1) ? WEFT_ENDPOINT_CLIENT : WEFT_ENDPOINT_SERVER;
  size_t err_size = data[0] >> 1; /* 0..127 */
  char *desc = malloc(size);
  char err[128];
  if (!desc)
    abort();
  memcpy(desc, data + 1, size - 1);
  desc[size - 1] = '\0';
  memset(err, 'x', sizeof err);
  weft_endpoint *ep = (weft_endpoint *)1;
  int rc = weft_endpoint_parse(desc, role, &ep, err_size ? err : NULL, err_size);
  if (rc == 0) {
    if (!ep || weft_endpoint_get_role(ep) != role)
      abort();
    weft_endpoint_free(ep);
  } else {
    if (rc > 0 || ep != NULL || !weft_strerror(rc))
      abort();
    if (err_size && !memchr(err, '\0', err_size))
      abort();
  }
  free(desc);
  return 0;
}
