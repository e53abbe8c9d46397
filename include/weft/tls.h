/** @file
 * weft/tls.h: certificate options (keys, certificates, verification, versions, ciphers, next
 * protocols), key and certificate generation, and what next-protocol negotiation this build
 * supports.
 *
 * Ownership: options are the user's and reference counted. weft_cert_options_new returns one
 * reference; every listener, connector and STARTTLS transport using the options takes its own
 * and drops it when done, so the user may unref right after weft_listen_ssl/weft_connect_ssl.
 * The first use builds the options' SSL_CTX and freezes them: setters then fail with
 * WEFT_EFROZEN. Nothing per connection is ever stored on the shared SSL_CTX, so one options
 * object serves many connections to many hosts.
 *
 * Keys and certificates are OpenSSL's EVP_PKEY and X509, spelled struct evp_pkey_st and
 * struct x509_st here (OpenSSL's typedefs name these structs) so that this header does not pull
 * in OpenSSL's: a program that includes <openssl/evp.h> and <openssl/x509.h> declares
 * EVP_PKEY *key; X509 *cert; and passes them without casts, and the compiler refuses a key
 * where a certificate belongs and the reverse. Setters take their own reference: the caller
 * keeps and frees its own.
 *
 * Errors: every setter returns 0 or a negative WEFT_E* code and then records a sentence saying
 * what was wrong, readable with weft_cert_options_last_error.
 *
 * Threading: configure options in one thread. Once frozen their configuration is read-only and
 * they may be shared by reactors in several threads (the reference count is atomic; the
 * client session cache and the rotation of automatic ticket keys, the only state that still
 * changes, are guarded by a mutex). Key and certificate functions may be called from any
 * thread.
 */
#ifndef WEFT_TLS_H
#define WEFT_TLS_H

#include <weft/common.h>

#include <stddef.h>
#include <stdint.h>

#include <weft/transport.h>

/* OpenSSL's EVP_PKEY and X509, forward-declared (see above). */
struct evp_pkey_st;
struct x509_st;

#ifdef __cplusplus
extern "C" {
#endif

/** TLS configuration for listeners, connectors and STARTTLS (opaque, reference counted). */
typedef struct weft_cert_options weft_cert_options;

/** @{ */
/** TLS protocol versions (the wire values, as OpenSSL's TLS1_2_VERSION...). */
#define WEFT_TLS1_2 0x0303
#define WEFT_TLS1_3 0x0304
/** @} */

/** @{ */
/** Next-protocol negotiation mechanisms, as a bit mask. */
#define WEFT_MECH_ALPN 0x1u
#define WEFT_MECH_NPN 0x2u
/** @} */

/** What to do when both sides list protocols but none is in common. */
typedef enum weft_no_overlap_policy {
  /** Fail the handshake. The default. Over ALPN the server sends RFC 7301's
   * no_application_protocol alert (120) and both sides get WEFT_ENOPROTOCOL. Over NPN (TLS 1.2
   * and lower) the client selects: OpenSSL then sends handshake_failure (40), so the client
   * gets WEFT_ENOPROTOCOL and the server WEFT_ETLSALERT naming alert 40. A server whose NPN
   * client selects a protocol the server did not advertise (NPN lets a client do that, and
   * the choice arrives in the client's last flight) refuses the connection once the handshake
   * ends, before build_protocol: its factory's handshake_failed gets WEFT_ENOPROTOCOL and the
   * client sees the connection closed. */
  WEFT_NO_OVERLAP_FAIL = 0,
  /** Go on with no protocol negotiated (weft_transport_next_protocol returns NULL). */
  WEFT_NO_OVERLAP_CONTINUE = 1
} weft_no_overlap_policy;

/** Reports which mechanisms this build of weft, linked with this OpenSSL, supports: a mask of
 * WEFT_MECH_ALPN and WEFT_MECH_NPN (0 when neither). Probes features, not version numbers.
 * Any thread. */
WEFT_EXTERN unsigned weft_protocol_negotiation_mechanisms(void);

/* --- Options: life ---------------------------------------------------------------------- */

/** Creates options with secure defaults: verification on (clients check the server against the
 * system trust store and the host name; servers request no client certificate until
 * require_certificate), TLS 1.2 to 1.3, forward-secret AEAD ciphers only, server cipher order,
 * no compression, no renegotiation, no next protocols, both mechanisms, WEFT_NO_OVERLAP_FAIL,
 * handshake timeout 30 s, close timeout 5 s. Errors: WEFT_EINVAL, WEFT_ENOMEM. */
WEFT_EXTERN int weft_cert_options_new(weft_cert_options **out);

/** @{ */
/** Takes / drops a reference. The last unref frees. NULL is ignored. */
WEFT_EXTERN weft_cert_options *weft_cert_options_ref(weft_cert_options *options);
WEFT_EXTERN void weft_cert_options_unref(weft_cert_options *options);
/** @} */

/** The sentence explaining the most recent failed call on these options ("" if no call has
 * failed yet). A call that succeeds does not clear it, as errno: read it right after a call
 * returned an error. The string belongs to the options and lives as long as they do; the next
 * failed call on them (a setter, weft_cert_options_prepare, or a listen, connect or STARTTLS
 * that prepares them) overwrites it. "" for NULL. */
WEFT_EXTERN const char *weft_cert_options_last_error(const weft_cert_options *options);

/** Builds the SSL_CTX now, for ROLE (WEFT_TLS_SERVER or WEFT_TLS_CLIENT), and freezes the
 * options, so that configuration mistakes (no certificate for a server, a key that does not
 * match, an empty version range, unknown ciphers or groups) are reported here rather than on
 * the first connection. Listeners and connectors call it themselves. Calling it again for the
 * same role returns 0. Errors: WEFT_EINVAL, WEFT_EKEYMISMATCH, WEFT_ETLS, WEFT_ENOMEM. */
WEFT_EXTERN int weft_cert_options_prepare(weft_cert_options *options, weft_tls_role role);

/* --- Identity ------------------------------------------------------------------------- */

/** @{ */
/** Sets the private key (EVP_PKEY *) and the certificate (X509 *). A key that does not match
 * the certificate is refused (WEFT_EKEYMISMATCH) by whichever setter comes second. */
WEFT_EXTERN int weft_cert_options_set_private_key(weft_cert_options *options,
                                                  struct evp_pkey_st *pkey);
WEFT_EXTERN int weft_cert_options_set_certificate(weft_cert_options *options, struct x509_st *x509);
/** @} */

/** Appends an intermediate certificate (X509 *) sent after the leaf, in call order. */
WEFT_EXTERN int weft_cert_options_add_chain_certificate(weft_cert_options *options,
                                                        struct x509_st *x509);

/** @{ */
/** Loads a PEM private key, or a PEM certificate chain (leaf first, then intermediates), from
 * memory (PEM of LEN bytes) or from a file. Errors: WEFT_EPEM (unreadable or malformed; the
 * message names the file or OpenSSL's reason), WEFT_EKEYMISMATCH, WEFT_EFROZEN. */
WEFT_EXTERN int weft_cert_options_load_private_key_pem(weft_cert_options *options, const char *pem,
                                                       size_t len);
WEFT_EXTERN int weft_cert_options_load_private_key_file(weft_cert_options *options,
                                                        const char *path);
WEFT_EXTERN int weft_cert_options_load_certificate_chain_pem(weft_cert_options *options,
                                                             const char *pem, size_t len);
WEFT_EXTERN int weft_cert_options_load_certificate_chain_file(weft_cert_options *options,
                                                              const char *path);
/** @} */

/* --- Verification --------------------------------------------------------------------- */

/** Verify the peer (default on). Turning it off on a client accepts any server: an explicit
 * choice for tests and pinned setups, never a default. It also turns off identity checks (see
 * weft_cert_options_set_verify_identity) and client session reuse. */
WEFT_EXTERN int weft_cert_options_set_verify(weft_cert_options *options, int on);

/** Clients: check the server's identity (default on). Every client checks one by default, on
 * every path (weft_connect_ssl, reconnectors, weft_transport_start_tls): the server name
 * (the connection's, else the options' weft_cert_options_set_server_name, else the host
 * connected to) matched against the certificate's DNS subjectAltNames, or, for an IP
 * literal, its IP subjectAltNames; with no name at all (weft_transport_start_tls with
 * SERVER_NAME NULL and no name in the options) the peer's IP address is checked, and a
 * connection with no IP address (a Unix socket) is refused with WEFT_EINVAL.
 * Turning this off (ON 0) is the explicit, named way to skip the identity check: any
 * certificate that chains to a trusted CA is accepted, whatever name it carries. The chain is
 * still verified (weft_cert_options_set_verify), SNI is still sent for a host name, and the
 * connection neither stores nor resumes sessions (a session may only resume where a full
 * handshake would have checked the same identity). Use it only where something else binds
 * the certificate to the peer (a private CA issuing one certificate per peer, a pinned key).
 * Servers ignore it. Errors: WEFT_EINVAL (NULL), WEFT_EFROZEN. */
WEFT_EXTERN int weft_cert_options_set_verify_identity(weft_cert_options *options, int on);

/** Servers: require the client to present a certificate that verifies (default off). Implies
 * verification. */
WEFT_EXTERN int weft_cert_options_set_require_certificate(weft_cert_options *options, int on);

/** @{ */
/** Trust anchors (X509 * for weft_cert_options_add_ca_certificate). Adding any replaces the
 * default (the system trust store, used by clients only when no CA was given). */
WEFT_EXTERN int weft_cert_options_add_ca_certificate(weft_cert_options *options,
                                                     struct x509_st *x509);
WEFT_EXTERN int weft_cert_options_load_ca_file(weft_cert_options *options, const char *path);
WEFT_EXTERN int weft_cert_options_load_ca_dir(weft_cert_options *options, const char *path);
/** @} */

/** Maximum verification chain depth (default 9; 0..100). */
WEFT_EXTERN int weft_cert_options_set_verify_depth(weft_cert_options *options, int depth);

/** Clients: the server's host name, sent as SNI when it is a DNS name (never for IP literals)
 * and matched against the certificate (DNS name, or IP address subjectAltName). A connection's
 * own server name (weft_endpoint_set_server_name, weft_transport_start_tls) takes precedence;
 * with neither, the host connected to, or for STARTTLS the peer's IP address, is checked (see
 * weft_cert_options_set_verify_identity). */
WEFT_EXTERN int weft_cert_options_set_server_name(weft_cert_options *options, const char *name);

/* --- Protocol versions and algorithms --------------------------------------------------- */

/** Inclusive range of TLS versions, WEFT_TLS1_2 or WEFT_TLS1_3 (default 1.2 to 1.3). An empty
 * range (MIN > MAX) or an unknown version is refused with WEFT_EINVAL. */
WEFT_EXTERN int weft_cert_options_set_tls_versions(weft_cert_options *options, int min_version,
                                                   int max_version);

/** @{ */
/** TLS 1.2 cipher list (OpenSSL syntax) and TLS 1.3 cipher suites. Unknown names are refused
 * with WEFT_EINVAL. The defaults allow only forward-secret AEAD ciphers. */
WEFT_EXTERN int weft_cert_options_set_cipher_list(weft_cert_options *options, const char *ciphers);
WEFT_EXTERN int weft_cert_options_set_ciphersuites(weft_cert_options *options, const char *suites);
/** @} */

/** Key-exchange groups, colon separated ("X25519:P-256"). Unknown names: WEFT_EINVAL. */
WEFT_EXTERN int weft_cert_options_set_groups(weft_cert_options *options, const char *groups);

/* --- Session resumption ----------------------------------------------------------------
 *
 * A resumed handshake skips the certificate exchange and, at TLS 1.2, the key exchange: it is
 * cheaper for both sides and saves a round trip at TLS 1.2. weft_transport_tls_session_reused
 * tells whether a connection was resumed.
 *
 * Servers resume through their session cache (stateful: the session stays in this process)
 * and through session tickets (stateless: the session travels to the client sealed with a
 * ticket key, AES-256-CBC with HMAC-SHA256).
 *
 * A session resumes only under the verification policy that created it. Every server session
 * and ticket carries a session id context: the SHA-256 of the server options' admission
 * policy (verification on or off, client certificate requested or required, verify depth,
 * the trusted CA certificates and CA directories, TLS versions and ciphers). OpenSSL refuses
 * to resume a session whose context differs, at TLS 1.2 and 1.3: a ticket issued by a
 * listener that asks no client certificate gives nothing on a listener that requires one,
 * even when both share ticket keys; the client gets a full handshake, and its certificate is
 * verified by the listener it is talking to. The next-protocol list is not part of it: ALPN
 * and NPN run again on every handshake, resumed or not. Ticket keys are either given (several servers
 * given the same keys, e.g. a fleet behind a load balancer, resume each other's sessions) or,
 * by default, made at random in this process and rotated (see
 * weft_cert_options_set_ticket_key_lifetime).
 *
 * Clients keep the sessions servers give them in a cache inside the options and offer them to
 * the next connection with the same options that checks the same server identity at the same
 * port (see weft_cert_options_set_session_reuse).
 *
 * A session survives a connection closed cleanly by either side (lose_connection, or the
 * peer's close_notify: weft always answers with its own). A connection that ends with an
 * error, a truncated stream or abort_connection makes its session unusable (OpenSSL's rule:
 * the session may have been attacked), so the next connection to that server does a full
 * handshake.
 */

/** @{ */
/** Servers: the session cache (default on) and stateless session tickets (default on). With
 * both off, no session is ever resumed. */
WEFT_EXTERN int weft_cert_options_set_session_cache(weft_cert_options *options, int on);
WEFT_EXTERN int weft_cert_options_set_session_tickets(weft_cert_options *options, int on);
/** @} */

/** Size in bytes of a session ticket key: 16 bytes of key name, 32 of HMAC-SHA256 secret and 32
 * of AES-256 key, nginx's ssl_session_ticket_key layout: `openssl rand 80 > FILE` makes one. */
#define WEFT_TICKET_KEY_SIZE 80

/** @{ */
/** Servers: adds a session ticket key, from LEN bytes at KEY (copied; LEN must be
 * WEFT_TICKET_KEY_SIZE) or from the file PATH (a regular file holding exactly
 * WEFT_TICKET_KEY_SIZE bytes; read now, not kept open; a FIFO, socket, device or directory is
 * refused with WEFT_EINVAL rather than waited on). Keys are used in the order added: the first seals new
 * tickets, the others only open tickets sealed before; a ticket opened with another key than
 * the first is renewed under the first (the client gets a new ticket). So to rotate keys
 * across a fleet, give every server [new, old] (each server then issues tickets under NEW and
 * still accepts the old ones), then later [new] alone. A ticket sealed with a key no longer
 * given is ignored: a full handshake follows, without error. Once a key is given, keys are no
 * longer generated nor rotated automatically. Keys are secrets: keep the files readable by the
 * server only; weft wipes its copies (OPENSSL_cleanse) when the options are freed. Tickets are
 * used only while session tickets are on (weft_cert_options_set_session_tickets). At TLS 1.3
 * every resumed connection also gets new tickets, so that clients can use each ticket once.
 * Errors: WEFT_EINVAL (NULL argument; wrong size, the message gives the size found; not a
 * regular file; a key whose 16-byte name is already in use), WEFT_EIO (the file cannot be read; the message names
 * PATH and the system's reason), WEFT_EFROZEN, WEFT_ENOMEM. */
WEFT_EXTERN int weft_cert_options_add_ticket_key(weft_cert_options *options, const uint8_t *key,
                                                 size_t len);
WEFT_EXTERN int weft_cert_options_add_ticket_key_file(weft_cert_options *options, const char *path);
/** @} */

/** Servers without ticket keys of their own (weft_cert_options_add_ticket_key): every SECONDS
 * a new random key starts sealing tickets, and the previous one keeps opening them for SECONDS
 * more; so a ticket resumes for at least SECONDS and at most twice that. The default, 7200 s
 * (2 hours), is OpenSSL's session lifetime (the lifetime a ticket announces to the client), so
 * rotation never refuses a ticket the client still considers valid, while a key stolen from
 * the process memory opens at most 4 hours of tickets. Keys are made on first use, per options
 * object (so per SSL_CTX, shared by every listener of these options, in any thread), and
 * rotation happens on the next handshake after the deadline, under a mutex. Keys generated
 * in one process are unknown to others: for a fleet, give keys.
 * Errors: WEFT_EINVAL (SECONDS not a positive number), WEFT_EFROZEN. */
WEFT_EXTERN int weft_cert_options_set_ticket_key_lifetime(weft_cert_options *options,
                                                          double seconds);

/** Clients: keep the sessions servers give (default on) and offer them again to the next
 * connection made with these options that checks the same identity at the same port. The
 * cache key is the identity the connection actually verifies (see
 * weft_cert_options_set_verify_identity): a host name, or an IP address (an IP literal given
 * as the name, or the peer's IP for STARTTLS without a name), which are two kinds of keys
 * ("127.0.0.1" checked as an address never shares a session with "localhost" checked as a
 * name), plus the port and a digest of the options' client policy (trust anchors, client
 * certificate, versions, ciphers, protocol list). A connection that checks no identity
 * (verification or identity checks off) neither stores nor is offered a session. The cache
 * holds one session per key, at most 100 (the least recently used goes first), and lives as
 * long as the options; expired sessions and sessions made unusable by a failed connection are
 * dropped. A session is offered until the server gives a newer one for the same key: at TLS
 * 1.3 servers send new tickets on each connection (weft servers always do), so each ticket is
 * normally used once, as RFC 8446 advises; a server that sends none gets the same ticket
 * again.
 * On by default, as in browsers and curl: a session is only offered under the same options
 * and for the identity whose certificate it verified, so it grants nothing a full handshake
 * would not. Turn it off for
 * clients that must not be linkable across connections (a resumed session identifies the
 * client to the server). Thread: the cache is guarded by a mutex; options may be shared by
 * reactors in several threads. Errors: WEFT_EINVAL (NULL), WEFT_EFROZEN. */
WEFT_EXTERN int weft_cert_options_set_session_reuse(weft_cert_options *options, int on);

/** @{ */
/** Seconds a TLS handshake may take before the connection is cut (default 30; > 0), and seconds
 * lose_connection waits for the peer's close_notify (default 5; >= 0). On a server, the
 * handshake time-out is what ends a client that connects and never completes its handshake
 * (WEFT_EHANDSHAKETIMEOUT to handshake_failed); until then that connection holds a slot of the
 * listener's connection limit (weft_listener_set_connection_limit). */
WEFT_EXTERN int weft_cert_options_set_handshake_timeout(weft_cert_options *options, double seconds);
WEFT_EXTERN int weft_cert_options_set_close_timeout(weft_cert_options *options, double seconds);
/** @} */

/* --- Next-protocol negotiation (ALPN and NPN) ------------------------------------------
 *
 * One ordered list, most preferred first, drives both mechanisms:
 *  - as a server, weft selects over ALPN (its own order wins: the first protocol in the
 *    server's list that the client offered) and advertises the list over NPN;
 *  - as a client, weft offers the list over ALPN and selects over NPN (its own order wins).
 * When both mechanisms run, the ALPN result is reported. NPN exists only up to TLS 1.2: with
 * TLS 1.3, only ALPN negotiates. An empty list, on either side, means nothing is negotiated and
 * the connection goes on. When both sides list protocols with none in common, the no-overlap
 * policy of the selecting side (the server for ALPN, the client for NPN) decides.
 */

/** Sets the list from COUNT NUL-terminated names. Each name must be 1 to 255 bytes and the
 * encoded list (each name prefixed by its length byte) at most 65535 bytes. COUNT 0 clears it.
 * Errors: WEFT_EINVAL (bad name or list too long; the message says which), WEFT_ENOTSUP
 * (non-empty list and this build supports neither mechanism), WEFT_EFROZEN, WEFT_ENOMEM. */
WEFT_EXTERN int weft_cert_options_set_next_protocols(weft_cert_options *options,
                                                     const char *const *names, size_t count);

/** Same, from the wire form (length-prefixed names, as in the ALPN extension), for names that
 * may hold any byte. Same errors; a malformed encoding is WEFT_EINVAL. */
WEFT_EXTERN int weft_cert_options_set_next_protocols_wire(weft_cert_options *options,
                                                          const uint8_t *wire, size_t len);

/** Restricts negotiation to a mask of WEFT_MECH_ALPN and WEFT_MECH_NPN (default: both, where
 * available). 0 or unknown bits: WEFT_EINVAL. A mechanism this build lacks: WEFT_ENOTSUP. */
WEFT_EXTERN int weft_cert_options_set_negotiation_mechanisms(weft_cert_options *options,
                                                             unsigned mask);

/** What to do when the lists do not overlap (default WEFT_NO_OVERLAP_FAIL). */
WEFT_EXTERN int weft_cert_options_set_no_overlap_policy(weft_cert_options *options,
                                                        weft_no_overlap_policy policy);

/** @{ */
/** Servers: a callback that picks the ALPN protocol per connection, instead of the list order.
 * OFFER is the client's list in wire form (OFFER_LEN bytes), SERVER_NAME the SNI name (or
 * NULL). Return the index (0-based) of the chosen protocol within the offer, -1 for "none"
 * (the no-overlap policy then applies), or -2 to fail the handshake with
 * no_application_protocol. The chosen protocol need not be in the options' list, but the
 * options must have a non-empty list for ALPN to be enabled. Runs in the reactor's thread
 * during the handshake. */
typedef int (*weft_protocol_selector)(void *arg, const uint8_t *offer, size_t offer_len,
                                      const char *server_name);
WEFT_EXTERN int weft_cert_options_set_protocol_selector(weft_cert_options *options,
                                                        weft_protocol_selector selector, void *arg);
/** @} */

/* --- Keys and certificates, in memory ---------------------------------------------------- */

/** The key types weft_key_generate makes. */
typedef enum weft_key_type {
  WEFT_KEY_EC_P256 = 0, /**< ECDSA on the NIST P-256 curve */
  WEFT_KEY_ED25519 = 1, /**< Ed25519 */
  WEFT_KEY_RSA = 2      /**< BITS >= 2048 */
} weft_key_type;

/** Generates a key pair. BITS is used for RSA only (0 means 2048; below 2048 is WEFT_EINVAL).
 * Stores a new EVP_PKEY * in *OUT, owned by the caller (EVP_PKEY_free). */
WEFT_EXTERN int weft_key_generate(weft_key_type type, int bits, struct evp_pkey_st **out);

/** What a generated certificate says. Zeroed fields take the defaults noted. Fill it with
 * weft_cert_spec_init, or a designated initializer (SIZE 0). It follows the size rule of weft's ABI (see "API and ABI stability" in the guide): SIZE 0,
 * what a designated initializer leaves, means the 1.0 layout; members are only ever appended,
 * and the library reads one added after 1.0 only when SIZE (set it to sizeof the struct to use
 * them) covers it. A SIZE larger than the library knows (a program built against newer headers
 * running with an older library) is accepted and the tail ignored; one smaller than the 1.0
 * layout is read as 0. */
typedef struct weft_cert_spec {
  size_t size;                     /**< 0 (the 1.0 layout) or sizeof(weft_cert_spec) */
  const char *common_name;         /**< subject CN; NULL: none */
  const char *organization;        /**< subject O; NULL: none */
  const char *const *dns_names;    /**< subjectAltName DNS entries */
  size_t dns_count;                /**< number of dns_names */
  const char *const *ip_addresses; /**< subjectAltName IP entries (IPv4 or IPv6 literals) */
  size_t ip_count;                 /**< number of ip_addresses */
  long not_before;                 /**< seconds relative to now (may be negative); default 0
                                         is "now minus 60 s" to absorb clock skew */
  long not_after;                  /**< seconds relative to now; 0: one year */
  int is_ca;                       /**< basicConstraints CA:TRUE, keyCertSign */
  long serial;                     /**< 0: random */
} weft_cert_spec;

/** Zeroes SPEC (every field at its default) and sets its SIZE to sizeof(weft_cert_spec) of
 * these headers. NULL is ignored. Any thread. */
WEFT_EXTERN void weft_cert_spec_init(weft_cert_spec *spec);

/** Makes an X509 certificate for KEY (EVP_PKEY *) as SPEC says, signed by ISSUER_KEY with issuer
 * name from ISSUER_CERT (X509 *), or self-signed when both are NULL. Stores a new X509 * in
 * *OUT, owned by the caller (X509_free). Errors: WEFT_EINVAL (bad IP literal, only one of the
 * issuer pair given, issuer key that does not match its certificate), WEFT_ETLS, WEFT_ENOMEM. */
WEFT_EXTERN int weft_cert_generate(const weft_cert_spec *spec, struct evp_pkey_st *key,
                                   struct evp_pkey_st *issuer_key, struct x509_st *issuer_cert,
                                   struct x509_st **out);

/** @{ */
/** PEM in and out of memory, for keys (EVP_PKEY *) and certificates (X509 *). *_from_pem store
 * a new object owned by the caller (EVP_PKEY_free, X509_free); *_to_pem store a malloc'd
 * NUL-terminated PEM text (free with free()) and its length (LEN may be NULL).
 * Errors: WEFT_EINVAL, WEFT_EPEM, WEFT_ENOMEM. */
WEFT_EXTERN int weft_key_from_pem(const char *pem, size_t len, struct evp_pkey_st **out);
WEFT_EXTERN int weft_cert_from_pem(const char *pem, size_t len, struct x509_st **out);
WEFT_EXTERN int weft_key_to_pem(struct evp_pkey_st *key, char **out, size_t *len);
WEFT_EXTERN int weft_cert_to_pem(struct x509_st *x509, char **out, size_t *len);
/** @} */

/* --- Serving TLS in production: identities chosen by SNI -------------------------------
 *
 * One listener may serve several identities (key, certificate chain, and optionally their own
 * next-protocol list, client-certificate policy, ticket keys and OCSP response), chosen per
 * connection from the ClientHello: by the user's selector (weft_cert_options_set_identity_
 * selector), which sees the SNI name and the client's ALPN offer, else by the SNI name matched
 * against each identity's names (exact names first, then one-label wildcards such as
 * "*.example.com": it matches "a.example.com", not "example.com" nor "a.b.example.com"; all
 * compared without case). A connection whose name matches nothing, or that sends no SNI, gets
 * the listener's own key and certificate (the default identity), or, under
 * WEFT_SNI_UNKNOWN_REJECT, a name that matches nothing is refused with the unrecognized_name
 * alert (112).
 *
 * Each identity gets its own SSL_CTX, so its certificate, ALPN list and no-overlap policy,
 * protocol selector, client-certificate policy and ticket keys apply as if it had its own
 * listener. Everything an identity does not set is the listener's options' (TLS versions,
 * ciphers, groups, time-outs, key log, verification hooks are always the listener's).
 *
 * Resumption: each identity's session id context is the listener's admission-policy digest
 * (see "Session resumption") extended with the identity's names, so a session or ticket made
 * under one identity never resumes under another, even when both share ticket keys and
 * policy: a resumed session skips the certificate, so it must resume only where that same
 * certificate would have been sent. Sessions of the default identity resume only on the
 * default identity. An identity without ticket keys of its own uses the listener's (given or
 * automatic) keys.
 */

/** One identity of a TLS server (opaque, reference counted). */
typedef struct weft_tls_identity weft_tls_identity;

/** Creates an empty identity (one reference). Give it a key and a certificate chain, then
 * add it to server options with weft_cert_options_add_identity, which freezes it.
 * Errors: WEFT_EINVAL (NULL), WEFT_ENOMEM. Any thread. */
WEFT_EXTERN int weft_tls_identity_new(weft_tls_identity **out);

/** @{ */
/** Takes / drops a reference; the last unref frees (options holding the identity keep their
 * own references). NULL is ignored. Any thread: the count is atomic. */
WEFT_EXTERN weft_tls_identity *weft_tls_identity_ref(weft_tls_identity *identity);
WEFT_EXTERN void weft_tls_identity_unref(weft_tls_identity *identity);
/** @} */

/** The sentence explaining the most recent failed call on IDENTITY ("" if none has failed, or
 * for NULL); as weft_cert_options_last_error, a call that succeeds does not clear it.
 * Borrowed: valid until the next call on IDENTITY. Thread: the one configuring IDENTITY. */
WEFT_EXTERN const char *weft_tls_identity_last_error(const weft_tls_identity *identity);

/** @{ */
/** The identity's key and certificate chain: as the weft_cert_options functions of the same
 * names (same ownership: PKEY and X509 are referenced, the caller keeps its own; files are
 * read when called). Errors: WEFT_EINVAL (NULL identity), those of the weft_cert_options
 * function, and WEFT_EFROZEN once the identity was added to options. Any thread, one at a
 * time per identity, before it is added to options. */
WEFT_EXTERN int weft_tls_identity_set_private_key(weft_tls_identity *identity,
                                                  struct evp_pkey_st *pkey);
WEFT_EXTERN int weft_tls_identity_set_certificate(weft_tls_identity *identity,
                                                  struct x509_st *x509);
WEFT_EXTERN int weft_tls_identity_add_chain_certificate(weft_tls_identity *identity,
                                                        struct x509_st *x509);
WEFT_EXTERN int weft_tls_identity_load_private_key_file(weft_tls_identity *identity,
                                                        const char *path);
WEFT_EXTERN int weft_tls_identity_load_certificate_chain_file(weft_tls_identity *identity,
                                                              const char *path);
/** @} */

/** The identity's own next-protocol list (as weft_cert_options_set_next_protocols; NAMES
 * copied; COUNT 0 is an empty list of its own: nothing negotiated). Unset, the listener's
 * list, policy and selector apply. Errors: WEFT_EINVAL (NULL identity, a bad list), WEFT_EFROZEN
 * (already added to options), WEFT_ENOMEM. Any thread, before the identity is added. */
WEFT_EXTERN int weft_tls_identity_set_next_protocols(weft_tls_identity *identity,
                                                     const char *const *names, size_t count);

/** The identity's own client-certificate policy: require a client certificate (ON 1) or not
 * (0), verified against the identity's CAs if it was given any
 * (weft_tls_identity_add_ca_certificate), else the listener's. Unset, the listener's policy
 * applies. Errors: WEFT_EINVAL (NULL identity), WEFT_EFROZEN (already added to options). Any
 * thread, before the identity is added. */
WEFT_EXTERN int weft_tls_identity_set_require_certificate(weft_tls_identity *identity, int on);

/** Adds X509 (referenced, not copied: the caller keeps its own reference) to the CAs that verify
 * client certificates on this identity; once it has any, the listener's CAs no longer apply to
 * it. Errors: WEFT_EINVAL (NULL identity), and those of weft_cert_options_add_ca_certificate.
 * Any thread, before the identity is added to options in use. */
WEFT_EXTERN int weft_tls_identity_add_ca_certificate(weft_tls_identity *identity,
                                                     struct x509_st *x509);

/** The identity's own ticket keys (as weft_cert_options_add_ticket_key_file: the file is read
 * now; call again for each older key that must still open tickets). Unset, the listener's
 * keys (given, or automatic) seal and open the identity's tickets; automatic keys are made
 * anew by each new options object, so across a reload (weft_listener_set_options) only an
 * identity with key files keeps resuming the tickets it issued before. Errors: WEFT_EINVAL
 * (NULL identity), those of weft_cert_options_add_ticket_key_file, WEFT_EFROZEN. Any thread,
 * before the identity is added. */
WEFT_EXTERN int weft_tls_identity_add_ticket_key_file(weft_tls_identity *identity,
                                                      const char *path);

/** The identity's own OCSP response to staple, read from the DER file PATH now (as
 * weft_cert_options_load_ocsp_response_file). An identity never staples the listener's
 * response (it is about another certificate). Errors: WEFT_EINVAL (NULL identity or PATH, not
 * a successful OCSP response), WEFT_EIO (the file cannot be read), WEFT_EFROZEN, WEFT_ENOMEM.
 * Any thread, before the identity is added. */
WEFT_EXTERN int weft_tls_identity_load_ocsp_response_file(weft_tls_identity *identity,
                                                          const char *path);

/** Servers: adds IDENTITY under COUNT host NAMES (each a DNS name or "*." and at least two
 * labels; copied). COUNT 0 adds an identity only a selector can choose (e.g. the acme-tls/1
 * challenge certificate). Takes a reference to IDENTITY and freezes it (its setters then
 * return WEFT_EFROZEN); the same identity may be added to several options. The identity's
 * SSL_CTX is built with the options' (weft_cert_options_prepare): a key that does not match
 * its certificate makes the listener fail to start, or a reload fail, naming it.
 * Errors: WEFT_EINVAL (NULL options or identity, an identity without a key or a certificate,
 * NULL NAMES with COUNT > 0, a bad name), WEFT_EFROZEN (the options are in use), WEFT_ENOMEM;
 * the sentence is in weft_cert_options_last_error(OPTIONS). Any thread, one at a time per
 * options object, before the options are in use. */
WEFT_EXTERN int weft_cert_options_add_identity(weft_cert_options *options, const char *const *names,
                                               size_t count, weft_tls_identity *identity);

/** What a server does with an SNI name that matches no identity. */
typedef enum weft_sni_unknown_policy {
  WEFT_SNI_UNKNOWN_DEFAULT = 0, /**< serve the default identity (the default) */
  WEFT_SNI_UNKNOWN_REJECT = 1   /**< fail the handshake with unrecognized_name (112) */
} weft_sni_unknown_policy;

/** Sets the unknown-name policy. A ClientHello without SNI always gets the default identity.
 * Errors: WEFT_EINVAL (NULL options, unknown POLICY), WEFT_EFROZEN (options in use). Any
 * thread, before the options are in use. */
WEFT_EXTERN int weft_cert_options_set_sni_unknown_policy(weft_cert_options *options,
                                                         weft_sni_unknown_policy policy);

/** @{ */
/** Servers: chooses the identity of each connection before the names are matched. SERVER_NAME
 * is the SNI name (NULL without SNI), OFFER the client's ALPN offer in wire form (OFFER_LEN
 * bytes; NULL/0 when none): both borrowed for the call. Return 1 with *IDENTITY set to one of
 * the identities added to these options (or NULL: the default identity); 0 to let the names
 * decide; -1 to refuse the connection with unrecognized_name (112). An identity that was not
 * added to these options fails the handshake (internal_error). This is how acme-tls/1 (RFC
 * 8737) answers its challenge with a special certificate while other clients get the real
 * one (see the guide, "TLS in production"). SELECTOR (NULL: none) runs in the reactor's thread
 * during the handshake and must not block; ARG is the caller's and must outlive the options.
 * Errors: WEFT_EINVAL (NULL options), WEFT_EFROZEN (options in use). Any thread, before the
 * options are in use. */
typedef int (*weft_identity_selector)(void *arg, const char *server_name, const uint8_t *offer,
                                      size_t offer_len, weft_tls_identity **identity);
WEFT_EXTERN int weft_cert_options_set_identity_selector(weft_cert_options *options,
                                                        weft_identity_selector selector, void *arg);
/** @} */

/* --- Reload without restart ------------------------------------------------------------- */

/* Reloading a live listener's options: weft_listener_set_options, in weft/endpoint.h. */

/* --- OCSP stapling --------------------------------------------------------------------- */

/** @{ */
/** Servers: a DER OCSP response (copied; LEN bytes) or a file holding one, stapled to every
 * handshake whose client asks for certificate status. It must parse and its status be
 * "successful"; weft does not check its signature or dates (the client does): refresh it by
 * reloading (weft_listener_set_options). Errors: WEFT_EINVAL (NULL argument, not an OCSP
 * response, or not successful), WEFT_EIO (the file cannot be read), WEFT_EFROZEN, WEFT_ENOMEM.
 * Any thread, before the options are in use. */
WEFT_EXTERN int weft_cert_options_set_ocsp_response(weft_cert_options *options, const uint8_t *der,
                                                    size_t len);
WEFT_EXTERN int weft_cert_options_load_ocsp_response_file(weft_cert_options *options,
                                                          const char *path);
/** @} */

/** Clients: ask for certificate status and fail the handshake (WEFT_ECERTVERIFY; alert 113,
 * bad_certificate_status_response) unless the server staples a successful OCSP response,
 * signed by the certificate's issuer or a responder it delegated to (as the trust anchors
 * see it), current (5 minutes of clock skew allowed) and saying "good" for the server's
 * certificate. Default off. Errors: WEFT_EINVAL (NULL options), WEFT_EFROZEN. Any thread,
 * before the options are in use. */
WEFT_EXTERN int weft_cert_options_set_require_ocsp(weft_cert_options *options, int on);

/* --- Key log ------------------------------------------------------------------------------ */

/** A key log line: NSS key log format (what SSLKEYLOGFILE gives browsers), without newline.
 * Borrowed for the call. Runs in the reactor's thread during handshakes. */
typedef void (*weft_keylog_callback)(void *arg, const char *line);

/** @{ */
/** Both roles: give every TLS secret of every connection made with these options to CALLBACK
 * (NULL turns it off), or append it to the file PATH (opened now, created mode 0600 when
 * missing; one line per secret, flushed at once; NULL closes it). Off by default. Key log
 * lines ARE SECRETS: whoever reads them decrypts the captured traffic (Wireshark reads this
 * format). Use only for debugging, never in production by default. ARG is the caller's and
 * must outlive the options; the file is closed when the options are freed. Errors:
 * WEFT_EINVAL (NULL options), WEFT_EIO (the file cannot be opened; the message says why),
 * WEFT_EFROZEN, WEFT_ENOMEM (the file's lock). Any thread, before the options are in use. */
WEFT_EXTERN int weft_cert_options_set_keylog_callback(weft_cert_options *options,
                                                      weft_keylog_callback callback, void *arg);
WEFT_EXTERN int weft_cert_options_set_keylog_file(weft_cert_options *options, const char *path);
/** @} */

/* --- Verification hooks ------------------------------------------------------------------ */

/** @{ */
/** Both roles: called once per handshake that verifies a peer certificate, after OpenSSL's
 * own verification (chain, dates, trust, the client's identity check) and the pins. VERDICT
 * is OpenSSL's result (0, X509_V_OK, or an X509_V_ERR_* code), CHAIN the verified chain
 * (leaf first; when verification failed, the certificates the peer sent) of COUNT
 * certificates (X509 *), borrowed for the call. Return 1 to accept, 0 to refuse: the
 * handshake then fails with WEFT_ECERTVERIFY. The callback has the last word: returning 1
 * when VERDICT is not 0 accepts a certificate OpenSSL refused (a custom policy; use with
 * care); a pin mismatch is refused before the callback is asked. Runs in the reactor's thread
 * during the handshake; ARG is the caller's and must outlive the options. Errors: WEFT_EINVAL
 * (NULL options), WEFT_EFROZEN. Any thread, before the options are in use. */
typedef int (*weft_verify_callback)(void *arg, long verdict, struct x509_st *const *chain,
                                    size_t count);
WEFT_EXTERN int weft_cert_options_set_verify_callback(weft_cert_options *options,
                                                      weft_verify_callback callback, void *arg);
/** @} */

/** Clients (and servers, for client certificates): pins the peer's key. PIN is curl's form,
 * "sha256//BASE64" (or just BASE64): the base64 of the SHA-256 of the DER SubjectPublicKeyInfo
 * of the peer's leaf certificate (`openssl x509 -pubkey -noout | openssl pkey -pubin -outform
 * der | openssl dgst -sha256 -binary | base64`). Call once per accepted key (e.g. the current
 * and the next one). With pins set, a peer whose key matches none is refused
 * (WEFT_ECERTVERIFY). With verification on, the pin is checked in addition to the chain; with
 * verification off (weft_cert_options_set_verify(options, 0)) the pins alone decide (a pinned
 * self-signed server). PIN is copied. Errors: WEFT_EINVAL (NULL argument, malformed pin),
 * WEFT_EFROZEN, WEFT_ENOMEM. Any thread, before the options are in use. */
WEFT_EXTERN int weft_cert_options_add_pin_sha256(weft_cert_options *options, const char *pin);

/* --- Miscellaneous --------------------------------------------------------------------- */

/** Clients: require a negotiated protocol (default off). With a non-empty next-protocol list,
 * a handshake that ends with no protocol negotiated (a server without ALPN or NPN, or under
 * WEFT_NO_OVERLAP_CONTINUE) fails with WEFT_ENOPROTOCOL before build_protocol: the factory's
 * connection_failed hears of it. Errors: WEFT_EINVAL (NULL options), WEFT_EFROZEN. Any
 * thread, before the options are in use. */
WEFT_EXTERN int weft_cert_options_set_require_protocol(weft_cert_options *options, int on);

/** Servers: how many TLS 1.3 session tickets to send after a full handshake (OpenSSL's
 * default is 2; 0 sends none; at most 16). Errors: WEFT_EINVAL (NULL options, COUNT over 16),
 * WEFT_EFROZEN. Any thread, before the options are in use. */
WEFT_EXTERN int weft_cert_options_set_tls13_tickets(weft_cert_options *options, unsigned count);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_TLS_H */
