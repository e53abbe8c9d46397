/* tls_ssl.c: the TLS side of one connection. The SSL object (from the options' SSL_CTX, with
 * the client's SNI, identity check and cached session, and the info callback that records
 * what weft__tls_classify needs), and the classification of TLS failures into reasons.
 *
 * The top of the TLS files: it uses tls_options.c (the SSL_CTX), tls_session.c (client
 * sessions), tls_keys.c (OpenSSL's error text) and tls_conn.c; none of them calls back here.
 * The info callback is set on each SSL rather than on the shared SSL_CTX for that reason. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls_keys-internal.h"
#include "tls_options-internal.h"
#include "tls_session-internal.h"
#include "tls_ssl-internal.h"

/* --- Per connection ----------------------------------------------------------------------- */

/* 1 if NAME is an IPv4 or IPv6 literal (IPv6 possibly in brackets); the bare address is
 * copied into BUF (INET6_ADDRSTRLEN bytes at least). */
static int ip_literal(const char *name, char *buf, size_t size) {
  unsigned char bin[16];
  size_t n = strlen(name);
  if (n >= 2 && name[0] == '[' && name[n - 1] == ']') {
    name++;
    n -= 2;
  }
  if (n >= size)
    return 0; /* too long for any address literal */
  memcpy(buf, name, n);
  buf[n] = '\0';
  return inet_pton(AF_INET, buf, bin) == 1 || inet_pton(AF_INET6, buf, bin) == 1;
}

/* The peer's IP address (IPv4-mapped IPv6 addresses as IPv4, as certificates name them) into
 * BIN, its length into *LEN, its text into TEXT, and its port into *PORT. Returns 0, or -1
 * when PEER is NULL or not an IP address (a Unix socket). */
static int peer_ip(const struct sockaddr *peer, unsigned char bin[16], size_t *len, char *text,
                   size_t size, unsigned *port) {
  if (peer != NULL && peer->sa_family == AF_INET) {
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)peer;
    memcpy(bin, &v4->sin_addr, 4);
    *len = 4;
    *port = ntohs(v4->sin_port);
  } else if (peer != NULL && peer->sa_family == AF_INET6) {
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)peer;
    *port = ntohs(v6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
      memcpy(bin, v6->sin6_addr.s6_addr + 12, 4);
      *len = 4;
    } else {
      memcpy(bin, &v6->sin6_addr, 16);
      *len = 16;
    }
  } else {
    return -1;
  }
  if (inet_ntop(*len == 4 ? AF_INET : AF_INET6, bin, text, (socklen_t)size) == NULL)
    return -1;
  return 0;
}

/* The port of PEER, or 0. */
static unsigned peer_port(const struct sockaddr *peer) {
  unsigned char bin[16];
  char text[INET6_ADDRSTRLEN];
  size_t len;
  unsigned port = 0;
  return peer_ip(peer, bin, &len, text, sizeof text, &port) == 0 ? port : 0;
}

/* How identity_error explains a failure. */
enum {
  ID_INPUT,   /* the input is wrong (WEFT_EINVAL); OpenSSL was not asked */
  ID_OPENSSL, /* an OpenSSL call failed: WEFT_ENOMEM when its error queue says an allocation
               * failed, else WEFT_EINVAL with OpenSSL's reason */
  ID_MEMORY   /* an OpenSSL call failed on input weft had checked already: running out of
               * memory is the only way left for it to fail (OpenSSL 3.0 does not always say
               * so: SSL_set_tlsext_host_name reports ERR_R_INTERNAL_ERROR, SSL_set1_host
               * nothing), so WEFT_ENOMEM */
};

/* 1 when OpenSSL's error queue holds ERR_R_MALLOC_FAILURE (its first or last entry; looked
 * at, not taken off the queue). */
static int openssl_out_of_memory(void) {
  unsigned long first = ERR_peek_error(), last = ERR_peek_last_error();
  return (first != 0 && !ERR_SYSTEM_ERROR(first) &&
          ERR_GET_REASON(first) == ERR_R_MALLOC_FAILURE) ||
         (last != 0 && !ERR_SYSTEM_ERROR(last) && ERR_GET_REASON(last) == ERR_R_MALLOC_FAILURE);
}

/* Records MESSAGE (with OpenSSL's reason, or "out of memory", as KIND says) in ERR and, for the
 * user calling weft_transport_start_tls or weft_connect_ssl, in the options' last error.
 * Returns WEFT_ENOMEM for an allocation failure, else WEFT_EINVAL. Clears OpenSSL's error
 * queue when KIND is not ID_INPUT. */
__attribute__((format(printf, 4, 5))) static int identity_error(weft_cert_options *o,
                                                                weft__reason_buf *err, int kind,
                                                                const char *fmt, ...) {
  char msg[WEFT__REASON_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  int code = WEFT_EINVAL;
  if (kind == ID_MEMORY || (kind == ID_OPENSSL && openssl_out_of_memory())) {
    code = WEFT_ENOMEM;
    ERR_clear_error();
    if (n >= 0 && (size_t)n < sizeof msg)
      snprintf(msg + n, sizeof msg - (size_t)n, ": out of memory");
  } else if (kind == ID_OPENSSL && n >= 0 && (size_t)n < sizeof msg) {
    char why[200];
    weft__openssl_reason(why, sizeof why);
    snprintf(msg + n, sizeof msg - (size_t)n, ": %s", why);
  }
  weft__reason_set(err, code, "%s", msg);
  return weft__tls_options_set_error(o, code, msg);
}

/* SNI and the identity check of a client SSL, and the connection's session cache key.
 * NAME: the host name or IP literal to check (SNI for host names only), or NULL: then the
 * peer's IP address is checked. With verification or identity checks off nothing is checked
 * (SNI is still sent) and the connection gets no cache key. */
static int client_identity(weft_cert_options *o, SSL *ssl, const char *name, weft__tls_conn *conn,
                           weft__reason_buf *err) {
  char ip[INET6_ADDRSTRLEN + 8];
  char identity[256];
  int kind;
  unsigned port = peer_port(conn->peer);
  int checks = SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE && weft__tls_options_verify_identity(o);
  if (name != NULL) {
    if (name[0] == '\0' || strlen(name) > 255)
      return identity_error(o, err, ID_INPUT, "the server name must be 1 to 255 bytes long");
    int is_ip = ip_literal(name, ip, sizeof ip);
    /* RFC 6066: SNI carries host names only, never IP literals. The length is checked
     * above, so this fails only when OpenSSL cannot copy the name. */
    if (!is_ip && SSL_set_tlsext_host_name(ssl, name) != 1)
      return identity_error(o, err, ID_MEMORY, "cannot use the server name '%s'", name);
    if (!checks)
      return 0;
    if (is_ip) {
      /* the canonical text of the address: "::1" and "[::1]" are one identity */
      unsigned char bin[16];
      int family = inet_pton(AF_INET, ip, bin) == 1    ? AF_INET
                   : inet_pton(AF_INET6, ip, bin) == 1 ? AF_INET6
                                                       : AF_UNSPEC;
      if (family == AF_UNSPEC || inet_ntop(family, bin, identity, sizeof identity) == NULL)
        return identity_error(o, err, ID_INPUT, "cannot use the server name '%s'", name);
      if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip) != 1)
        return identity_error(o, err, ID_OPENSSL, "cannot use the server name '%s'", name);
      kind = WEFT__IDENTITY_IP;
    } else {
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      /* NAME is a non-empty C string (no NUL inside): only an allocation can fail here */
      if (SSL_set1_host(ssl, name) != 1)
        return identity_error(o, err, ID_MEMORY, "cannot use the server name '%s'", name);
      /* host names compare without case: one key per name */
      size_t i = 0;
      for (; name[i] != '\0'; i++)
        identity[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
      identity[i] = '\0';
      kind = WEFT__IDENTITY_DNS;
    }
  } else {
    if (!checks)
      return 0;
    unsigned char bin[16];
    size_t len;
    if (peer_ip(conn->peer, bin, &len, identity, sizeof identity, &port) != 0)
      return identity_error(
          o, err, ID_INPUT,
          "a TLS client checks the server's identity, and with no server name it checks the "
          "peer's IP address, but this connection has none (%s); give a server name, or skip "
          "the identity check explicitly with weft_cert_options_set_verify_identity(options, 0)",
          conn->peer == NULL ? "no peer address" : "not an IP connection");
    /* BIN is 4 or 16 bytes: only an allocation can fail here */
    if (X509_VERIFY_PARAM_set1_ip(SSL_get0_param(ssl), bin, len) != 1)
      return identity_error(o, err, ID_MEMORY, "cannot check the peer's IP address %s", identity);
    kind = WEFT__IDENTITY_IP;
  }
  conn->session_key_set = weft__sessions_client_key(weft__tls_options_client_policy(o), kind,
                                                    identity, port, conn->session_key) == 0;
  return 0;
}

/* Records alerts, renegotiation attempts and certificate requests on the connection's
 * weft__tls_conn: what weft__tls_classify needs and libevent does not keep. */
static void info_callback(const SSL *ssl, int where, int ret) {
  weft__tls_conn *conn = weft__tls_conn_of(ssl);
  if (conn == NULL)
    return;
  if (where & SSL_CB_ALERT) {
    int level = (ret >> 8) & 0xff;
    int desc = ret & 0xff;
    /* close_notify and user_canceled end a connection cleanly; a warning no_renegotiation
     * refuses a renegotiation and the connection goes on. Everything else is an error. */
    int benign = desc == SSL_AD_CLOSE_NOTIFY || desc == SSL_AD_USER_CANCELLED ||
                 (desc == SSL_AD_NO_RENEGOTIATION && level == SSL3_AL_WARNING);
    if (!benign) {
      if (where & SSL_CB_READ)
        conn->alert_received = desc;
      else
        conn->alert_sent = desc;
    }
    if ((where & SSL_CB_WRITE) && desc == SSL_AD_NO_RENEGOTIATION && SSL_is_server(ssl))
      conn->renegotiation_attempt = 1;
    return;
  }
  if ((where & SSL_CB_HANDSHAKE_START) && conn->handshake_done && SSL_is_server(ssl))
    conn->renegotiation_attempt = 1;
  if (where & SSL_CB_HANDSHAKE_DONE) {
    conn->handshake_done = 1;
    weft__sessions_client_handshake_done((SSL *)ssl, conn);
  }
  if ((where & SSL_CB_LOOP) && !SSL_is_server(ssl) && SSL_get_state(ssl) == TLS_ST_CR_CERT_REQ)
    conn->cert_requested = 1;
}

int weft__tls_new_ssl(weft_cert_options *options, weft_tls_role role, const char *server_name,
                      weft__tls_conn *conn, int attach, SSL **out, weft__reason_buf *err) {
  if (out != NULL)
    *out = NULL;
  if (options == NULL || conn == NULL || out == NULL) {
    weft__reason_set(err, WEFT_EINVAL, "weft__tls_new_ssl: NULL argument");
    return WEFT_EINVAL;
  }
  SSL_CTX *ctx;
  int rc = weft__tls_ctx(options, role, &ctx);
  if (rc != 0) {
    weft__reason_set(err, rc, "%s", weft_cert_options_last_error(options));
    return rc;
  }
  int index = weft__tls_ex_index();
  SSL *ssl = index < 0 ? NULL : SSL_new(ctx);
  if (ssl == NULL) {
    ERR_clear_error();
    weft__reason_set(err, WEFT_ENOMEM, "cannot create the SSL object");
    return WEFT_ENOMEM;
  }
  conn->role = role;
  conn->alert_received = -1;
  conn->alert_sent = -1;
  conn->no_overlap = 0;
  conn->npn_selected_by_client_fallback = 0;
  conn->handshake_done = 0;
  conn->renegotiation_attempt = 0;
  conn->cert_requested = 0;
  conn->session_key_set = 0;
  conn->hook_refused = 0;
  if (attach && SSL_set_ex_data(ssl, index, conn) != 1) {
    SSL_free(ssl);
    ERR_clear_error();
    weft__reason_set(err, WEFT_ENOMEM, "cannot attach the connection to the SSL object");
    return WEFT_ENOMEM;
  }
  SSL_set_info_callback(ssl, info_callback);
  if (role == WEFT_TLS_CLIENT) {
    const char *name = server_name != NULL ? server_name : weft__tls_options_server_name(options);
    if ((rc = client_identity(options, ssl, name, conn, err)) != 0) {
      SSL_free(ssl);
      return rc;
    }
    weft__sessions_client_offer(weft__tls_options_sessions(options), ssl, conn);
    SSL_set_connect_state(ssl);
  } else {
    SSL_set_accept_state(ssl);
  }
  *out = ssl;
  return 0;
}

/* --- Classifying failures ----------------------------------------------------------------- */

/* libevent mixes its own values (SSL_get_error codes, errno, -1) with OpenSSL's packed error
 * codes: keep only real ones. OpenSSL codes fit in 32 bits; system errors are flagged. */
static int real_error(unsigned long e) {
  if (e == 0 || (e >> 16 >> 16) != 0)
    return 0;
  if (ERR_SYSTEM_ERROR(e)) {
    unsigned long reason = e & ERR_SYSTEM_MASK;
    return reason > 0 && reason < 4096;
  }
  return ERR_GET_LIB(e) != 0 && ERR_GET_REASON(e) != 0;
}

static int has_ssl_reason(const unsigned long *errs, size_t n, int reason) {
  for (size_t i = 0; i < n; i++) {
    if (real_error(errs[i]) && !ERR_SYSTEM_ERROR(errs[i]) && ERR_GET_LIB(errs[i]) == ERR_LIB_SSL &&
        ERR_GET_REASON(errs[i]) == reason)
      return 1;
  }
  return 0;
}

/* OpenSSL 3.0's table lacks TLS 1.3's newer alerts. */
static const char *alert_text(int alert) {
  switch (alert) {
    case 109:
      return "missing extension";
    case 116:
      return "certificate required";
    default:
      return SSL_alert_desc_string_long(alert);
  }
}

static const char *proto_name(int version) {
  switch (version) {
    case TLS1_2_VERSION:
      return "TLS 1.2";
    case TLS1_3_VERSION:
      return "TLS 1.3";
    default:
      return "any version";
  }
}

/* The subject of the peer's certificate, also when verification failed (OpenSSL then keeps
 * only the chain). "" if there is none. */
static void peer_subject(SSL *ssl, char *buf, size_t size) {
  X509 *peer = SSL_get0_peer_certificate(ssl);
  STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
  if (peer == NULL && chain != NULL && sk_X509_num(chain) > 0)
    peer = sk_X509_value(chain, 0);
  buf[0] = '\0';
  if (peer != NULL && X509_NAME_oneline(X509_get_subject_name(peer), buf, (int)size) == NULL)
    buf[0] = '\0';
}

/* What weft__tls_classify knows of one failure, gathered once; each classify_* step below
 * either recognises the failure (sets OUT and returns 1) or leaves it to the next step. */
typedef struct tls_failure {
  SSL *ssl;                   /* may be NULL */
  const weft__tls_conn *conn; /* may be NULL */
  const unsigned long *errs;  /* libevent's list (NERRS entries, NULL when NERRS is 0) */
  size_t nerrs;
  int received; /* alert received, -1 if none */
  int sent;     /* alert sent, -1 if none */
  int is_server;
  int handshake_done;
  const char *during;  /* "" or " during the TLS handshake" */
  unsigned long first; /* the oldest real OpenSSL (non-system) error code, or 0 */
  int sys_errno;       /* the caller's errno, else the first system error in ERRS */
  int eof_seen;
  long verify; /* the SSL's verify result (X509_V_OK when not verifying) */
} tls_failure;

static void failure_init(tls_failure *f, SSL *ssl, const weft__tls_conn *conn,
                         const unsigned long *errs, size_t nerrs, int sys_errno, int eof_seen) {
  f->ssl = ssl;
  f->conn = conn;
  f->received = conn != NULL ? conn->alert_received : -1;
  f->sent = conn != NULL ? conn->alert_sent : -1;
  f->is_server = conn != NULL ? conn->role == WEFT_TLS_SERVER : ssl != NULL && SSL_is_server(ssl);
  f->handshake_done =
      conn != NULL ? conn->handshake_done : ssl != NULL && SSL_is_init_finished(ssl);
  f->during = f->handshake_done ? "" : " during the TLS handshake";
  f->first = 0;
  f->eof_seen = eof_seen;

  if (errs == NULL)
    nerrs = 0;
  f->errs = errs;
  f->nerrs = nerrs;
  for (size_t i = 0; i < nerrs; i++) {
    if (!real_error(errs[i]))
      continue;
    if (ERR_SYSTEM_ERROR(errs[i])) {
      if (sys_errno == 0)
        sys_errno = (int)(errs[i] & ERR_SYSTEM_MASK);
    } else if (f->first == 0) {
      f->first = errs[i];
    }
  }
  f->sys_errno = sys_errno;
  f->verify = X509_V_OK;
  if (ssl != NULL && SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE)
    f->verify = SSL_get_verify_result(ssl);
}

static int renegotiated(const tls_failure *f) {
  return f->conn != NULL && f->conn->renegotiation_attempt;
}

/* No protocol in common: our own selection found none, or alert 120 went either way. */
static int classify_no_protocol(const tls_failure *f, weft__reason_buf *out) {
  int alert =
      f->received == TLS1_AD_NO_APPLICATION_PROTOCOL || f->sent == TLS1_AD_NO_APPLICATION_PROTOCOL;
  if (!alert && !(f->conn != NULL && f->conn->no_overlap))
    return 0;
  if (alert)
    weft__reason_set(out, WEFT_ENOPROTOCOL,
                     "no application protocol in common (alert 120 no_application_protocol "
                     "%s)",
                     f->received == TLS1_AD_NO_APPLICATION_PROTOCOL ? "received" : "sent");
  else
    weft__reason_set(out, WEFT_ENOPROTOCOL,
                     "no application protocol in common (%s: none of our protocols is in "
                     "the peer's list)",
                     f->is_server ? "ALPN" : "NPN");
  return 1;
}

/* Our verification of the peer's certificate failed: its identity, or the certificate. */
static int classify_verification(const tls_failure *f, weft__reason_buf *out) {
  int hook = f->conn != NULL ? f->conn->hook_refused : 0;
  if (hook != 0) {
    char subject[160] = "";
    peer_subject(f->ssl, subject, sizeof subject);
    weft__reason_set(out, WEFT_ECERTVERIFY, "%s%s%s",
                     hook == WEFT__HOOK_PIN
                         ? "the peer's public key matches none of the pinned keys"
                     : hook == WEFT__HOOK_CALLBACK
                         ? "the verify callback refused the peer's certificate"
                         : "the server stapled no valid OCSP response (required): none, "
                           "not signed by the issuer, not current, or not \"good\"",
                     subject[0] ? "; peer certificate " : "", subject);
    out->reason.verify_result = hook == WEFT__HOOK_OCSP ? X509_V_OK : f->verify;
    return 1;
  }
  if (f->verify == X509_V_OK)
    return 0;
  SSL *ssl = f->ssl;
  long verify = f->verify;
  char subject[160] = "";
  peer_subject(ssl, subject, sizeof subject);
  /* the name checked: the transport's, else the one set on the SSL by weft__tls_new_ssl */
  const char *name = f->conn != NULL ? f->conn->server_name : NULL;
  char *ip = NULL;
  if (name == NULL && ssl != NULL)
    name = X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0);
  if (name == NULL && ssl != NULL)
    name = ip = X509_VERIFY_PARAM_get1_ip_asc(SSL_get0_param(ssl));
  if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH)
    weft__reason_set(out, WEFT_EHOSTNAME, "the peer's certificate%s%s%s does not match %s%s%s: %s",
                     subject[0] ? " (" : "", subject, subject[0] ? ")" : "",
                     name != NULL ? "the name '" : "the expected name", name ? name : "",
                     name != NULL ? "'" : "", X509_verify_cert_error_string(verify));
  else
    weft__reason_set(out, WEFT_ECERTVERIFY,
                     "certificate verification failed: %s (X509 error %ld)%s%s",
                     X509_verify_cert_error_string(verify), verify,
                     subject[0] ? "; peer certificate " : "", subject);
  OPENSSL_free(ip);
  out->reason.verify_result = verify;
  return 1;
}

/* A certificate one side requires was not sent: by the client to us, or by us to the server
 * (TLS 1.3's certificate_required, or TLS 1.2's handshake_failure after a CertificateRequest
 * while we have no certificate). */
static int classify_missing_certificate(const tls_failure *f, weft__reason_buf *out) {
  if (has_ssl_reason(f->errs, f->nerrs, SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)) {
    weft__reason_set(out, WEFT_ENOPEERCERT,
                     "the client presented no certificate, and this server requires one");
    return 1;
  }
  if (f->received == SSL_AD_CERTIFICATE_REQUIRED ||
      (f->received == SSL_AD_HANDSHAKE_FAILURE && f->conn != NULL && f->conn->cert_requested &&
       f->ssl != NULL && SSL_get_certificate(f->ssl) == NULL)) {
    weft__reason_set(out, WEFT_ENOPEERCERT,
                     "the server requires a client certificate and none was sent (alert %d %s)",
                     f->received, alert_text(f->received));
    return 1;
  }
  return 0;
}

/* No TLS version in common (or a peer that does not speak TLS at all). */
static int classify_version(const tls_failure *f, weft__reason_buf *out) {
  const unsigned long *errs = f->errs;
  size_t nerrs = f->nerrs;
  if (!(has_ssl_reason(errs, nerrs, SSL_R_UNSUPPORTED_PROTOCOL) ||
        has_ssl_reason(errs, nerrs, SSL_R_NO_PROTOCOLS_AVAILABLE) ||
        has_ssl_reason(errs, nerrs, SSL_R_WRONG_VERSION_NUMBER) ||
        has_ssl_reason(errs, nerrs, SSL_R_TLSV1_ALERT_PROTOCOL_VERSION) ||
        f->received == SSL_AD_PROTOCOL_VERSION || f->sent == SSL_AD_PROTOCOL_VERSION))
    return 0;
  int lo = f->ssl != NULL ? (int)SSL_get_min_proto_version(f->ssl) : 0;
  int hi = f->ssl != NULL ? (int)SSL_get_max_proto_version(f->ssl) : 0;
  weft__reason_set(out, WEFT_ETLSVERSION,
                   "no TLS version in common with the peer (this side allows %s to %s)%s",
                   proto_name(lo), proto_name(hi),
                   has_ssl_reason(errs, nerrs, SSL_R_WRONG_VERSION_NUMBER)
                       ? "; the peer may not speak TLS at all"
                       : "");
  return 1;
}

/* Any other alert from the peer: 42 to 49 (but 47, illegal_parameter) reject our
 * certificate; the rest are reported as alerts. */
static int classify_peer_alert(const tls_failure *f, weft__reason_buf *out) {
  int received = f->received;
  if (received >= 42 && received <= 49 && received != SSL_AD_ILLEGAL_PARAMETER) {
    weft__reason_set(out, WEFT_ECERTVERIFY, "the peer rejected our certificate: alert %d (%s)",
                     received, alert_text(received));
    return 1;
  }
  if (received >= 0) {
    weft__reason_set(out, WEFT_ETLSALERT, "the peer sent TLS alert %d (%s)%s%s", received,
                     alert_text(received), f->during,
                     renegotiated(f) ? " after a renegotiation attempt, which weft refuses" : "");
    return 1;
  }
  return 0;
}

/* How the stream ended: end of file without close_notify (truncation), close_notify (clean),
 * or a reset. */
static int classify_end_of_stream(const tls_failure *f, weft__reason_buf *out) {
  int close_notify = f->ssl != NULL && (SSL_get_shutdown(f->ssl) & SSL_RECEIVED_SHUTDOWN);
  if (has_ssl_reason(f->errs, f->nerrs, SSL_R_UNEXPECTED_EOF_WHILE_READING) ||
      (f->eof_seen && !close_notify)) {
    weft__reason_set(out, WEFT_ETRUNCATED,
                     f->handshake_done
                         ? "the peer closed the connection without a TLS close_notify "
                           "(truncated stream)"
                         : "the peer closed the connection during the TLS handshake");
    return 1;
  }
  if (close_notify) {
    weft__reason_set(out, WEFT_OK, "clean TLS close (close_notify received)");
    return 1;
  }
  if (f->sys_errno == ECONNRESET || f->sys_errno == EPIPE) {
    weft__reason_set(out, WEFT_ECONNRESET, "connection reset by peer%s", f->during);
    return 1;
  }
  return 0;
}

/* The rest: OpenSSL's own reason, else the system error, else what little is known. */
static void classify_other(const tls_failure *f, weft__reason_buf *out) {
  if (f->first != 0) {
    /* error strings are loaded by SSL_CTX_new; make sure even if no context was ever built */
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
    char text[200];
    const char *reason = ERR_reason_error_string(f->first);
    if (reason == NULL)
      ERR_error_string_n(f->first, text, sizeof text);
    else
      snprintf(text, sizeof text, "%s", reason);
    char alert[96] = "";
    if (f->sent >= 0)
      snprintf(alert, sizeof alert, " (sent alert %d %s)", f->sent, alert_text(f->sent));
    weft__reason_set(out, WEFT_ETLS, "%s: %s%s%s",
                     f->handshake_done ? "TLS error" : "TLS handshake failed", text, alert,
                     renegotiated(f) ? " after a renegotiation attempt, which weft refuses" : "");
  } else if (f->sys_errno != 0) {
    weft__reason_set(out, weft__errno_to_code(f->sys_errno), "%s%s", strerror(f->sys_errno),
                     f->during);
  } else if (renegotiated(f)) {
    weft__reason_set(out, WEFT_ETLS,
                     "the peer attempted a TLS renegotiation, which weft "
                     "refuses");
  } else {
    weft__reason_set(out, WEFT_ETLS, "TLS connection failed%s (OpenSSL gave no reason)", f->during);
  }
}

/* The most specific reason wins: the steps run in this order and the first that recognises
 * the failure sets it. Then the alert (received first, else sent) and the errno are recorded
 * whatever the reason. */
void weft__tls_classify(SSL *ssl, const weft__tls_conn *conn, const unsigned long *errs,
                        size_t nerrs, int sys_errno, int eof_seen, weft__reason_buf *out) {
  tls_failure f;
  failure_init(&f, ssl, conn, errs, nerrs, sys_errno, eof_seen);
  if (!classify_no_protocol(&f, out) && !classify_verification(&f, out) &&
      !classify_missing_certificate(&f, out) && !classify_version(&f, out) &&
      !classify_peer_alert(&f, out) && !classify_end_of_stream(&f, out))
    classify_other(&f, out);

  if (f.received >= 0) {
    out->reason.tls_alert = f.received;
    out->reason.alert_sent = 0;
  } else if (f.sent >= 0) {
    out->reason.tls_alert = f.sent;
    out->reason.alert_sent = 1;
  }
  out->reason.sys_errno = f.sys_errno;
}
