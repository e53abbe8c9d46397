/** @file
 * weft/transport.h: what a protocol uses to talk to the connection: write, pause, close, ask.
 *
 * A transport belongs to the library. It is valid from build_protocol until connection_lost
 * returns; after that every pointer to it is dangling. All functions here must be called from
 * the reactor's thread. Functions returning int return 0 or a negative WEFT_E* code; NULL
 * transports give WEFT_EINVAL.
 *
 * TCP and TLS connections share this one type: the TLS accessors return WEFT_ENOTTLS (or NULL)
 * on a plain connection until weft_transport_start_tls upgrades it.
 */
#ifndef WEFT_TRANSPORT_H
#define WEFT_TRANSPORT_H

#include <weft/common.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <weft/protocol.h>

#ifdef __cplusplus
extern "C" {
#endif

/* OpenSSL's types, forward-declared as libevent's bufferevent_ssl.h does: no OpenSSL header is
 * needed to include this one, and a program that includes <openssl/ssl.h> passes its SSL * and
 * X509 * (typedefs of these structs) without casts. */
struct ssl_st;
struct x509_st;

/** The reactor (see weft/reactor.h). */
typedef struct weft_reactor weft_reactor;
/** Certificate options (see weft/tls.h). */
typedef struct weft_cert_options weft_cert_options;

/** One buffer of a gathered write. Frozen: it never gains a member (an array of them is passed
 * with its count, so its size is part of the ABI). */
typedef struct weft_buf {
  const void *base; /**< the first byte */
  size_t len;       /**< the number of bytes */
} weft_buf;

/** Queues LEN bytes for sending; weft copies them, so DATA may be reused at once. Never blocks;
 * the bytes wait in the transport's output buffer (see weft_transport_pending_output). On TLS,
 * what the socket does not take at once (a full socket, small records) is queued in order and
 * counts as pending, so write_drained follows as for any queued write.
 * Errors: WEFT_EINVAL (DATA NULL with LEN > 0; or LEN plus the pending output above
 * EV_SSIZE_MAX, which also covers a sum that overflows size_t), WEFT_ECLOSED (after lose_connection,
 * abort_connection, half_close or once the connection is lost), WEFT_ENOMEM. LEN 0 is a no-op. */
WEFT_EXTERN int weft_transport_write(weft_transport *transport, const void *data, size_t len);

/** Queues COUNT buffers as one write, in order; all or nothing. Errors as weft_transport_write
 * (the lengths' sum, and the sum with the pending output, must not overflow: WEFT_EINVAL). */
WEFT_EXTERN int weft_transport_write_sequence(weft_transport *transport, const weft_buf *bufs,
                                              size_t count);

/** Releases the bytes given to weft_transport_write_reference: DATA and LEN as given, ARG the
 * caller's pointer. */
typedef void (*weft_release_fn)(const void *data, size_t len, void *arg);

/** Queues LEN bytes at DATA without copying them: weft reads them in place until they are
 * sent, or dropped because the connection ended, and then calls RELEASE(DATA, LEN, ARG) once
 * (RELEASE may be NULL: for static or long-lived bytes). Until then the caller must keep the
 * bytes alive and unchanged. Use it for large or shared bodies (a file mapped in memory, a
 * static response) where weft_transport_write's copy would cost more than the send.
 * RELEASE runs on the reactor's thread: before this function returns when the bytes were sent
 * at once, otherwise later from the loop (never from inside a weft call or libevent's buffer
 * work), or, once the connection is lost, while the transport is freed (after connection_lost
 * returned) or later when libevent frees the bytes. While the transport is valid RELEASE may call
 * any weft function on it, writes included; after connection_lost it must not touch it.
 * Errors as weft_transport_write; on error nothing is queued and RELEASE is not called, so the
 * bytes are still the caller's. LEN 0 returns 0 and calls RELEASE at once. */
WEFT_EXTERN int weft_transport_write_reference(weft_transport *transport, const void *data,
                                               size_t len, weft_release_fn release, void *arg);

/** Closes the connection gracefully: what was written is sent first (also after the peer's FIN
 * or close_notify: they say the peer sends nothing more, not that it stops reading); then for TCP a FIN is
 * sent and input is read and discarded until the peer's FIN (so that closing with unread input
 * cannot make the kernel reset the connection and destroy data in flight), for at most 5 s;
 * for TLS a close_notify is sent once, and the peer's close_notify is awaited for at most the
 * close timeout (5 s by default); then the socket is closed and connection_lost follows, from the
 * loop, with WEFT_OK
 * (also when the peer did not answer close_notify in time: everything written was delivered to
 * the kernel; the message says so), or the error that broke the connection while flushing.
 * Incoming data is discarded from now on. Further writes fail with WEFT_ECLOSED.
 * During a STARTTLS handshake: the handshake goes on (tls_started runs when it ends), then what
 * was written is sent, encrypted, then close_notify, all bounded by one close timeout from this
 * call; a handshake still unfinished then ends with WEFT_ETIMEDOUT (tls_started, then
 * connection_lost), without close_notify.
 * Calling it again, or after abort, returns 0 and does nothing. */
WEFT_EXTERN int weft_transport_lose_connection(weft_transport *transport);

/** Closes the connection at once, dropping pending output (after STARTTLS, also the records
 * already encrypted and not yet given to the socket). connection_lost follows with
 * WEFT_EABORTED, from the reactor loop (not from inside this call). Calling it again returns 0. */
WEFT_EXTERN int weft_transport_abort_connection(weft_transport *transport);

/** Shuts down the write side once pending output is sent (TCP FIN); reading goes on. Further
 * writes fail with WEFT_ECLOSED. TLS transports return WEFT_ENOTSUP: weft does not offer a TLS
 * half-close (close_notify ends the whole connection). */
WEFT_EXTERN int weft_transport_half_close(weft_transport *transport);

/** @{ */
/** Stops / restarts delivering data_received. Data keeps arriving in the kernel's buffer, so a
 * paused peer is eventually slowed by TCP flow control. Idempotent. */
WEFT_EXTERN int weft_transport_pause_reading(weft_transport *transport);
WEFT_EXTERN int weft_transport_resume_reading(weft_transport *transport);
/** @} */

/** Bytes written but not yet handed to the kernel, in plaintext: for TLS, the plaintext not
 * yet encrypted, plus that of the encrypted records weft holds to send several in one system
 * call (a record the kernel has only part of counts whole). 0 for NULL. Reactor thread. */
WEFT_EXTERN size_t weft_transport_pending_output(weft_transport *transport);

/** Sets the low-water mark for write_drained (default 0): when pending output falls to LOW
 * bytes or fewer, after a write left it above, the protocol's write_drained is called. A
 * producer writes until pending output passes its own high mark, then waits for
 * write_drained. */
WEFT_EXTERN int weft_transport_set_write_low_water(weft_transport *transport, size_t low);

/** Cuts the connection when pending output makes no progress for SECONDS: the socket took not
 * one byte for that long, typically because the peer stopped reading and its window and the
 * kernel buffers are full. connection_lost then follows with WEFT_ETIMEDOUT and the message
 * "write timed out: the peer read nothing for N s". Any write that leaves the buffer restarts
 * the clock; with nothing pending, an idle connection is never cut. It also bounds
 * lose_connection's flush of pending output (the reason is then WEFT_ETIMEDOUT, not WEFT_OK).
 * SECONDS 0 turns it off (the default, unless the listener set one: see
 * weft_listener_set_write_timeout). Kept across weft_transport_start_tls; when it fires during
 * the STARTTLS handshake, tls_started gets WEFT_ETIMEDOUT before connection_lost. Costs nothing
 * per write: libevent's write event carries the time-out.
 * Errors: WEFT_EINVAL (SECONDS negative, above 1e6 or not a number), WEFT_ECLOSED (after the
 * connection was lost), WEFT_ENOMEM. */
WEFT_EXTERN int weft_transport_set_write_timeout(weft_transport *transport, double seconds);

/** Sets how long weft_transport_lose_connection waits, once it has sent everything and its own
 * close_notify (TLS) or FIN (TCP), for the peer's close_notify or FIN before it closes the
 * socket: SECONDS for this connection instead of the certificate options' close time-out
 * (weft_cert_options_set_close_timeout; 5 s for TCP). Waiting is what keeps a peer that is
 * still reading from losing data to a reset: the kernel resets a connection that receives
 * bytes after it was closed, and a reset destroys what the peer had not read yet. 0 closes as
 * soon as the close_notify or FIN is sent: use it when the protocol says the peer sends nothing
 * more and reads to the end first (an HTTP/1.1 response to a request with "Connection: close"
 * whose bytes were all read, as nginx does); it saves the wake-up, the read and, for TLS, the
 * decryption of the peer's close_notify. Called while lose_connection is already waiting, the
 * wait runs SECONDS from now (0: it ends at once). connection_lost reports WEFT_OK either way.
 * Errors: WEFT_EINVAL (NULL; SECONDS negative, above 1e6 or not a number), WEFT_ECLOSED (the
 * connection was lost), WEFT_ENOMEM (re-arming a wait). Reactor thread. */
WEFT_EXTERN int weft_transport_set_close_timeout(weft_transport *transport, double seconds);

/** TCP_NODELAY on or off (weft turns it on for every connection by default). */
WEFT_EXTERN int weft_transport_set_nodelay(weft_transport *transport, int on);

/** SO_KEEPALIVE on or off; with IDLE_SECONDS > 0 also the idle time before the first probe. */
WEFT_EXTERN int weft_transport_set_keepalive(weft_transport *transport, int on, int idle_seconds);

/** @{ */
/** Copies the peer's (remote) or the host's (local) address into *ADDR (which must hold
 * *LEN bytes; a struct sockaddr_storage always fits) and sets *LEN to the address length.
 * Errors: WEFT_EINVAL. */
WEFT_EXTERN int weft_transport_peer_address(weft_transport *transport, struct sockaddr *addr,
                                            socklen_t *len);
WEFT_EXTERN int weft_transport_host_address(weft_transport *transport, struct sockaddr *addr,
                                            socklen_t *len);
/** @} */

/** Formats ADDR as "1.2.3.4:80", "[::1]:80", or for a Unix socket "unix:PATH" ("unix:" for an
 * unnamed one, "unix:@NAME" for an abstract one; the path is read up to its first NUL, so the
 * bytes after a Unix address must be zero, as in the addresses weft passes to callbacks and in
 * a zeroed struct sockaddr_storage) into BUF (at most SIZE bytes, always terminated when
 * SIZE > 0). Returns BUF, or "?" for an unknown family. Any thread. */
WEFT_EXTERN const char *weft_address_format(const struct sockaddr *addr, char *buf, size_t size);

/** The reactor this transport belongs to. */
WEFT_EXTERN weft_reactor *weft_transport_reactor(weft_transport *transport);

/** The protocol attached to this transport (NULL before build_protocol returned). */
WEFT_EXTERN weft_protocol *weft_transport_protocol(weft_transport *transport);

/** 1 if the transport is TLS (from the start, or after start_tls completed), else 0. */
WEFT_EXTERN int weft_transport_is_tls(weft_transport *transport);

/* --- Next-protocol negotiation (see weft/tls.h for how it is configured) ------------------ */

/** Which mechanism produced the negotiated protocol. */
typedef enum weft_negotiation_mechanism {
  WEFT_NEGOTIATED_NONE = 0, /**< nothing negotiated (plain TCP, empty list, no overlap) */
  WEFT_NEGOTIATED_ALPN = 1, /**< negotiated by ALPN */
  WEFT_NEGOTIATED_NPN = 2   /**< negotiated by NPN (TLS 1.2 and lower) */
} weft_negotiation_mechanism;

/** The protocol negotiated by ALPN or NPN: its bytes (not NUL-terminated) and, if LEN is not
 * NULL, its length in *LEN. NULL (and *LEN 0) when nothing was negotiated. Final by
 * connection_made (or tls_started after STARTTLS) and still readable in connection_lost. When
 * both mechanisms ran, the ALPN result is reported. */
WEFT_EXTERN const uint8_t *weft_transport_next_protocol(weft_transport *transport, size_t *len);

/** Which mechanism produced weft_transport_next_protocol's result. */
/* One line, as tests/check_exports.sh reads declarations: */
/* clang-format off */
WEFT_EXTERN weft_negotiation_mechanism weft_transport_negotiation_mechanism(weft_transport *transport);
/* clang-format on */

/* --- TLS details ---------------------------------------------------------------------- */

/** "TLSv1.2", "TLSv1.3", ... or NULL when not TLS. Static string. */
WEFT_EXTERN const char *weft_transport_tls_version(weft_transport *transport);

/** The cipher in use, e.g.\ "TLS_AES_256_GCM_SHA384", or NULL when not TLS. Static string. */
WEFT_EXTERN const char *weft_transport_tls_cipher(weft_transport *transport);

/** 1 if the TLS session was resumed, 0 if not or not TLS. */
WEFT_EXTERN int weft_transport_tls_session_reused(weft_transport *transport);

/** The peer's certificate (an X509 *: struct x509_st is OpenSSL's X509), or NULL if none or
 * not TLS. Borrowed: valid while the transport is; call X509_up_ref to keep it. */
WEFT_EXTERN struct x509_st *weft_transport_peer_certificate(weft_transport *transport);

/** @{ */
/** Writes the peer certificate's subject or issuer (one line, OpenSSL's RFC 2253 form) or its
 * SHA-256 fingerprint (hex with colons) into BUF of SIZE bytes. Errors: WEFT_EINVAL,
 * WEFT_ENOTTLS, WEFT_ENOPEERCERT, WEFT_ENOMEM (BUF too small). */
WEFT_EXTERN int weft_transport_peer_subject(weft_transport *transport, char *buf, size_t size);
WEFT_EXTERN int weft_transport_peer_issuer(weft_transport *transport, char *buf, size_t size);
WEFT_EXTERN int weft_transport_peer_fingerprint(weft_transport *transport, char *buf, size_t size);
/** @} */

/** The SSL * of the connection (struct ssl_st is OpenSSL's SSL) for advanced use (NULL if not
 * TLS). Borrowed. Changing its configuration after the handshake is at the user's risk. */
WEFT_EXTERN struct ssl_st *weft_transport_ssl(weft_transport *transport);

/** Which side of a TLS handshake this end plays in weft_transport_start_tls. */
typedef enum weft_tls_role {
  WEFT_TLS_CLIENT = 0, /**< the TLS client: starts the handshake, sends SNI, verifies the server */
  WEFT_TLS_SERVER = 1  /**< the TLS server: answers the handshake with its certificate */
} weft_tls_role;

/** STARTTLS: upgrades this live TCP connection to TLS in place with OPTIONS, in ROLE. Output
 * already written is sent in clear first; bytes read after this call are TLS. The protocol keeps
 * its transport; when the handshake ends, its tls_started callback runs (0 on success), exactly
 * once and before connection_lost, however the handshake ends (see tls_started in
 * weft/protocol.h). On failure (an error returned) tls_started is not called and the transport
 * stays a working plain TCP connection: it may write, close, or call start_tls again. For a
 * client, SERVER_NAME (may be NULL) is the SNI and verification name; with NULL and no name in
 * the options the peer's IP address is checked, and a connection without one (a Unix socket)
 * is refused with WEFT_EINVAL (see weft_cert_options_set_verify_identity).
 * Errors: WEFT_EINVAL, WEFT_EBUSY (already TLS or upgrading), WEFT_ECLOSED, WEFT_ENOMEM,
 * WEFT_ETLS (options could not be built). OPTIONS is referenced, not copied. */
WEFT_EXTERN int weft_transport_start_tls(weft_transport *transport, weft_cert_options *options,
                                         weft_tls_role role, const char *server_name);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_TRANSPORT_H */
