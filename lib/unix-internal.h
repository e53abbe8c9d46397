/* Private: Unix domain stream sockets (lib/unix.c): addresses, listening, used by the endpoint
 * (lib/endpoint.c) and the connector (lib/connector.c). */
#ifndef WEFT_UNIX_INTERNAL_H
#define WEFT_UNIX_INTERNAL_H

#include <sys/socket.h>

#include <weft/endpoint.h>

/* Fills *SS / *LEN with the address of PATH: a file name, or "@name" for Linux's abstract
 * namespace (no file; the name is the bytes after '@'). Returns 0, or WEFT_EINVAL (NULL or
 * empty PATH, too long for sun_path, "@" where there is no abstract namespace). */
int weft__unix_address(const char *path, struct sockaddr_storage *ss, socklen_t *len);

/* Listens on the Unix socket PATH (see weft__unix_address) with FACTORY and OPTIONS (NULL:
 * plain), BACKLOG (<= 0: 511). For a file name: a stale socket file (nobody accepts on it) is
 * removed first, anything else there (a live socket, a file of another type) gives
 * WEFT_EADDRINUSE; MODE (>= 0) is applied to the new file before listen() (so nobody can
 * connect under the umask's permissions in between); the file is removed again when the
 * listener stops, if it is still the one it bound. Errors: those of weft_listen_tcp, plus
 * WEFT_EINVAL (bad PATH or MODE), the errno codes of bind/chmod (WEFT_ESOCKET, ...). */
int weft__listen_unix(weft_reactor *reactor, const char *path, int mode, weft_factory *factory,
                      weft_cert_options *options, int backlog, weft_listener **out);

#endif
