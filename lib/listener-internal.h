/* Private: the one implementation of listening (lib/listener.c), used by the short forms
 * weft_listen_tcp / weft_listen_ssl and by weft_endpoint_listen. */
#ifndef WEFT_LISTENER_INTERNAL_H
#define WEFT_LISTENER_INTERNAL_H

#include <sys/types.h>

#include <weft/endpoint.h>

/* FLAGS of weft__listen. */
#define WEFT__LISTEN_REUSEPORT 1u /* SO_REUSEPORT before bind (weft_endpoint_set_reuseport) */
#define WEFT__LISTEN_DUALSTACK                                                                     \
  2u /* IPv6 socket accepting IPv4 too (weft_endpoint_set_dual_stack) */

/* Listens on INTERFACE:PORT with FACTORY; TLS when OPTIONS is not NULL; BACKLOG <= 0 means 511.
 * Errors and ownership as weft_listen_tcp / weft_listen_ssl, plus WEFT_EINVAL for an unknown
 * bit in FLAGS and WEFT_ENOTSUP when WEFT__LISTEN_REUSEPORT cannot be had. */
int weft__listen(weft_reactor *reactor, const char *interface, int port, weft_factory *factory,
                 weft_cert_options *options, int backlog, unsigned flags, weft_listener **out);

/* Serves the listening socket FD (any stream family; owned from now on, closed on failure) as
 * weft_listen_tcp / weft_listen_ssl would. Errors as theirs. For Unix sockets and adopted
 * descriptors. */
int weft__listen_fd(weft_reactor *reactor, int fd, weft_factory *factory,
                    weft_cert_options *options, weft_listener **out);

/* When L stops, PATH (taken: weft__free'd by L) is unlinked if it is still the socket file
 * DEV/INO (the one L bound, not a successor's). */
void weft__listener_unlink_on_stop(weft_listener *l, char *path, dev_t dev, ino_t ino);

/* lib/adopt.c: serves a duplicate of the listening socket FD (which stays the caller's) as
 * weft__listen_fd does. Errors: WEFT_EINVAL (FD is not a listening stream socket), those of
 * weft__listen_fd. */
int weft__listen_adopted(weft_reactor *reactor, int fd, weft_factory *factory,
                         weft_cert_options *options, weft_listener **out);

/* lib/adopt.c: the descriptor systemd passed for FAMILY (AF_UNSPEC: any) at INDEX, or named
 * NAME in LISTEN_FDNAMES when NAME is not NULL, in *OUT. Errors: WEFT_ENOTFOUND (no
 * LISTEN_FDS for this process, index or name out of range), WEFT_EINVAL (not a listening stream
 * socket of FAMILY). */
int weft__systemd_fd(int family, int index, const char *name, int *out);

#endif
