/* Unix domain stream sockets: the same listeners, connectors and transports as TCP (and TLS
 * over them), with a path instead of an address and port. This file knows the Unix-specific
 * parts: the sockaddr_un of a path or an abstract name, the safe removal of a stale socket
 * file, the file's permissions, and the peer's credentials. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* struct ucred */
#endif
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <weft/error.h>

#include "alloc-internal.h"
#include "listener-internal.h"
#include "transport-internal.h"
#include "unix-internal.h"

int weft__unix_address(const char *path, struct sockaddr_storage *ss, socklen_t *len) {
  struct sockaddr_un *un = (struct sockaddr_un *)ss;
  if (!path || !*path)
    return WEFT_EINVAL;
  size_t n = strlen(path);
  memset(ss, 0, sizeof *ss);
  un->sun_family = AF_UNIX;
  if (path[0] == '@') {
#ifdef __linux__
    if (n < 2 || n - 1 > sizeof un->sun_path - 1)
      return WEFT_EINVAL;
    memcpy(un->sun_path + 1, path + 1, n - 1); /* sun_path[0] stays 0: abstract */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    return 0;
#else
    return WEFT_EINVAL;
#endif
  }
  if (n >= sizeof un->sun_path)
    return WEFT_EINVAL;
  memcpy(un->sun_path, path, n);
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return 0;
}

/* A socket file at SS that nobody accepts on is left over by a process that died: remove it.
 * Anything else stays, and the path is in use. */
static int remove_stale(const char *path, const struct sockaddr_storage *ss, socklen_t len) {
  struct stat st;
  if (lstat(path, &st) != 0)
    return errno == ENOENT ? 0 : weft__errno_to_code(errno);
  if (!S_ISSOCK(st.st_mode))
    return WEFT_EADDRINUSE; /* never delete a file that is not a socket */
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0)
    return weft__errno_to_code(errno);
  int rc = connect(probe, (const struct sockaddr *)ss, len);
  int err = errno;
  close(probe);
  if (rc == 0 || err == EAGAIN || err == EINPROGRESS)
    return WEFT_EADDRINUSE; /* alive (EAGAIN: alive, its backlog full) */
  if (err != ECONNREFUSED)
    return weft__errno_to_code(err);
  if (unlink(path) != 0 && errno != ENOENT)
    return weft__errno_to_code(errno);
  return 0;
}

int weft__listen_unix(weft_reactor *reactor, const char *path, int mode, weft_factory *factory,
                      weft_cert_options *options, int backlog, weft_listener **out) {
  if (out)
    *out = NULL;
  struct sockaddr_storage ss;
  socklen_t len;
  if (!reactor || !factory || mode > 07777 || weft__unix_address(path, &ss, &len) != 0)
    return WEFT_EINVAL;
  int abstract = path[0] == '@';
  char *copy = abstract ? NULL : weft__strdup(path);
  if (!abstract && !copy)
    return WEFT_ENOMEM;
  int rc = abstract ? 0 : remove_stale(path, &ss, len);
  int fd = -1;
  struct stat st;
  if (rc == 0 && (fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
    rc = weft__errno_to_code(errno);
  if (rc == 0 && bind(fd, (const struct sockaddr *)&ss, len) != 0)
    rc = weft__errno_to_code(errno);
  else if (rc == 0 && !abstract) {
    /* Bound, not yet listening: connect() is refused until listen(), so the permissions are
     * right before anyone can get in. */
    if ((mode >= 0 && chmod(path, (mode_t)mode) != 0) || stat(path, &st) != 0)
      rc = weft__errno_to_code(errno);
    if (rc != 0)
      unlink(path);
  }
  if (rc == 0 && listen(fd, backlog > 0 ? backlog : 511) != 0) {
    rc = weft__errno_to_code(errno);
    if (!abstract)
      unlink(path);
  }
  if (rc != 0) {
    if (fd >= 0)
      close(fd);
    weft__free(copy);
    return rc;
  }
  weft_listener *l;
  if ((rc = weft__listen_fd(reactor, fd, factory, options, &l)) != 0) {
    if (!abstract)
      unlink(path);
    weft__free(copy);
    return rc;
  }
  if (!abstract)
    weft__listener_unlink_on_stop(l, copy, st.st_dev, st.st_ino);
  if (out)
    *out = l;
  return 0;
}

int weft_transport_peer_credentials(weft_transport *transport, pid_t *pid, uid_t *uid, gid_t *gid) {
  if (!transport)
    return WEFT_EINVAL;
  if (transport->state == WEFT__T_CLOSED)
    return WEFT_ECLOSED;
  if (weft__transport_peer(transport)->sa_family != AF_UNIX &&
      weft__transport_host(transport)->sa_family != AF_UNIX)
    return WEFT_ENOTSUP;
#ifdef SO_PEERCRED
  struct ucred cred;
  socklen_t n = sizeof cred;
  if (getsockopt(transport->fd, SOL_SOCKET, SO_PEERCRED, &cred, &n) != 0)
    return weft__errno_to_code(errno);
  if (pid)
    *pid = cred.pid;
  if (uid)
    *uid = cred.uid;
  if (gid)
    *gid = cred.gid;
  return 0;
#else
  (void)pid, (void)uid, (void)gid;
  return WEFT_ENOTSUP;
#endif
}
