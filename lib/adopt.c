/* Adopting descriptors: a listening socket handed over by systemd socket activation
 * (LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES, as sd_listen_fds(3) reads them) or inherited any
 * other way, and an already connected socket wrapped as a transport, TCP or TLS, in either
 * role. The descriptor is checked (a stream socket; listening or not, as the call needs) before
 * anything takes it, and stays the caller's when the call fails. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <weft/error.h>
#include <weft/tls.h>

#include "alloc-internal.h"
#include "listener-internal.h"
#include "transport-internal.h"

#define SD_LISTEN_FDS_START 3

/* 0 if FD is a stream socket whose SO_ACCEPTCONN is LISTENING (1: listening, 0: connected), of
 * family *FAMILY (stored when FAMILY is not NULL). */
static int check_socket(int fd, int listening, int *family) {
  int type = 0, acc = 0;
  socklen_t n = sizeof type;
  if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &n) != 0 || type != SOCK_STREAM)
    return WEFT_EINVAL;
  n = sizeof acc;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &n) != 0 || !acc != !listening)
    return WEFT_EINVAL;
  struct sockaddr_storage ss;
  n = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &n) != 0)
    return WEFT_EINVAL;
  if (family)
    *family = ss.ss_family;
  return 0;
}

/* A non-blocking, close-on-exec duplicate of FD (the caller keeps FD until success). */
static int dup_nonblocking(int fd) {
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (d < 0)
    return -1;
  int fl = fcntl(d, F_GETFL);
  if (fl < 0 || fcntl(d, F_SETFL, fl | O_NONBLOCK) != 0) {
    close(d);
    return -1;
  }
  return d;
}

int weft__listen_adopted(weft_reactor *reactor, int fd, weft_factory *factory,
                         weft_cert_options *options, weft_listener **out) {
  if (out)
    *out = NULL;
  if (!reactor || !factory || !factory->build_protocol || check_socket(fd, 1, NULL) != 0)
    return WEFT_EINVAL;
  int d = dup_nonblocking(fd);
  if (d < 0)
    return weft__errno_to_code(errno);
  return weft__listen_fd(reactor, d, factory, options, out); /* closes D on failure */
}

int weft_listener_adopt(weft_reactor *reactor, int fd, weft_factory *factory,
                        weft_cert_options *options, weft_listener **out) {
  int rc = weft__listen_adopted(reactor, fd, factory, options, out);
  if (rc == 0)
    close(fd); /* the listener's duplicate is the socket now */
  return rc;
}

int weft__systemd_fd(int family, int index, const char *name, int *out) {
  const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
  char *end;
  if (!pid || !fds)
    return WEFT_ENOTFOUND;
  long p = strtol(pid, &end, 10);
  if (*end || p != (long)getpid())
    return WEFT_ENOTFOUND; /* meant for another process (our parent, say) */
  long n = strtol(fds, &end, 10);
  if (*end || n < 1 || n > 4096)
    return WEFT_ENOTFOUND;
  if (name) { /* LISTEN_FDNAMES: colon-separated, one per descriptor */
    const char *names = getenv("LISTEN_FDNAMES");
    size_t len = strlen(name);
    int i = 0;
    index = -1;
    for (const char *s = names; s && i < n; i++) {
      const char *colon = strchr(s, ':');
      size_t l = colon ? (size_t)(colon - s) : strlen(s);
      if (l == len && !memcmp(s, name, len)) {
        index = i;
        break;
      }
      s = colon ? colon + 1 : NULL;
    }
    if (index < 0)
      return WEFT_ENOTFOUND;
  }
  if (index < 0 || index >= n)
    return WEFT_ENOTFOUND;
  int fd = SD_LISTEN_FDS_START + index, fam;
  if (check_socket(fd, 1, &fam) != 0)
    return WEFT_EINVAL;
  if (family != AF_UNSPEC && fam != family)
    return WEFT_EINVAL;
  *out = fd;
  return 0;
}

/* --- a connected descriptor as a transport ------------------------------------------------ */

/* A client transport's owner: a connection that ends before build_protocol reaches the
 * factory's connection_failed, as a connector's would. */
static void on_client_closed(void *arg, const weft_reason *reason, int made) {
  weft_factory *factory = arg;
  if (!made && factory->connection_failed)
    factory->connection_failed(factory, reason);
}

int weft_transport_adopt(weft_reactor *reactor, int fd, weft_factory *factory,
                         weft_cert_options *options, weft_tls_role role, const char *server_name,
                         weft_transport **out) {
  if (out)
    *out = NULL;
  if (!reactor || !factory || !factory->build_protocol ||
      (role != WEFT_TLS_CLIENT && role != WEFT_TLS_SERVER) || check_socket(fd, 0, NULL) != 0)
    return WEFT_EINVAL;
  if (reactor->freeing)
    return WEFT_ESHUTDOWN;
  int rc;
  if (options && (rc = weft_cert_options_prepare(options, role)) != 0)
    return rc;
  int d = dup_nonblocking(fd);
  if (d < 0)
    return weft__errno_to_code(errno);
  const weft__owner owner = {NULL, role == WEFT_TLS_CLIENT ? on_client_closed : NULL, factory};
  weft_transport *t = NULL;
  rc = weft__transport_start(reactor, d, NULL, 0, factory, options, role,
                             role == WEFT_TLS_CLIENT ? server_name : NULL, 0, &owner, &t);
  if (rc != 0)
    return rc; /* D is closed; FD is still the caller's */
  close(fd);
  if (out)
    *out = t;
  return 0;
}
