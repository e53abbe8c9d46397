/* tests/check_endpoint.c: the extensible endpoint object, endpoint descriptions (valid, invalid
 * and hostile strings, and end to end over loopback: TCP and TLS with ALPN), stopping on
 * SIGINT/SIGTERM, and the version macros against the library and configure. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tlsutil.h"

/* --- PEM files and helpers ------------------------------------------------------------------ */

/* The test PKI written to files, with every path escaped for use in a description. */
static struct files {
  tu_pki pki;
  char *key, *cert, *ca, *client_key, *client_cert, *other_cert;
  char ekey[600], ecert[600], eca[600], eclient_key[600], eclient_cert[600], eother_cert[600];
} F;

/* Copies S into OUT (600 bytes) with ':', '=' and '\' escaped. */
static void esc(char *out, const char *s) {
  size_t n = 0;
  for (; *s && n < 590; s++) {
    if (*s == ':' || *s == '=' || *s == '\\')
      out[n++] = '\\';
    out[n++] = *s;
  }
  out[n] = '\0';
}

static void files_init(void) {
  tu_pki_init(&F.pki);
  F.key = tu_write_key_pem(F.pki.server_key);
  F.cert = tu_write_cert_pem(F.pki.server_cert);
  F.ca = tu_write_cert_pem(F.pki.ca_cert);
  F.client_key = tu_write_key_pem(F.pki.client_key);
  F.client_cert = tu_write_cert_pem(F.pki.client_cert);
  F.other_cert = tu_write_cert_pem(F.pki.other_ca_cert);
  esc(F.ekey, F.key);
  esc(F.ecert, F.cert);
  esc(F.eca, F.ca);
  esc(F.eclient_key, F.client_key);
  esc(F.eclient_cert, F.client_cert);
  esc(F.eother_cert, F.other_cert);
}

static void files_free(void) {
  tu_remove_file(F.key);
  tu_remove_file(F.cert);
  tu_remove_file(F.ca);
  tu_remove_file(F.client_key);
  tu_remove_file(F.client_cert);
  tu_remove_file(F.other_cert);
  tu_pki_free(&F.pki);
  memset(&F, 0, sizeof F);
}

/* A description made with printf. */
static const char *desc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *desc(const char *fmt, ...) {
  static char buf[8192];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  ck_assert_int_lt(n, (int)sizeof buf);
  return buf;
}

/* 1 if S holds only printable ASCII. */
static int printable(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
      return 0;
  return 1;
}

/* Parses D, which must succeed; returns the endpoint. */
#define parse_ok(d, role) parse_ok_at(__LINE__, (d), (role))
static weft_endpoint *parse_ok_at(int line, const char *d, weft_endpoint_role role) {
  char err[256] = "untouched";
  weft_endpoint *ep = NULL;
  int rc = weft_endpoint_parse(d, role, &ep, err, sizeof err);
  ck_assert_msg(rc == 0 && ep, "line %d: '%s': %s: %s", line, d, weft_err_name(rc), err);
  ck_assert_msg(err[0] == '\0', "line %d: err not cleared on success: '%s'", line, err);
  ck_assert_int_eq(weft_endpoint_get_role(ep), role);
  return ep;
}

/* Parses D, which must fail with RC and a message starting with PREFIX. */
#define parse_err(d, role, rc, prefix) parse_err_at(__LINE__, (d), (role), (rc), (prefix))
static void parse_err_at(int line, const char *d, weft_endpoint_role role, int want,
                         const char *prefix) {
  char err[512];
  weft_endpoint *ep = (weft_endpoint *)&err; /* must be set to NULL */
  int rc = weft_endpoint_parse(d, role, &ep, err, sizeof err);
  ck_assert_msg(rc == want, "line %d: '%.80s': got %s (%s), want %s", line, d, weft_err_name(rc),
                rc ? err : "", weft_err_name(want));
  ck_assert_msg(ep == NULL, "line %d: *out not NULL on error", line);
  ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0,
                "line %d: '%.80s': message '%s' does not start with '%s'", line, d, err, prefix);
  ck_assert_msg(printable(err), "line %d: unprintable byte in message '%s'", line, err);
}

#define S WEFT_ENDPOINT_SERVER
#define C WEFT_ENDPOINT_CLIENT

/* --- The object ----------------------------------------------------------------------------- */

START_TEST(test_object) {
  weft_endpoint *s, *c;
  ck_assert_int_eq(weft_endpoint_new((weft_endpoint_role)7, &s), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_new(S, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_new(S, &s), 0);
  ck_assert_int_eq(weft_endpoint_new(C, &c), 0);
  ck_assert_int_eq(weft_endpoint_get_port(s), -1);
  ck_assert_ptr_null(weft_endpoint_get_host(s));
  ck_assert_ptr_null(weft_endpoint_get_tls(s));

  /* Ports: 0 is a server's "any free port", never a client's. */
  ck_assert_int_eq(weft_endpoint_set_port(s, 0), 0);
  ck_assert_int_eq(weft_endpoint_set_port(s, 65536), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_port(s, -1), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_port(c, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_port(c, 65535), 0);
  ck_assert_int_eq(weft_endpoint_get_port(c), 65535);

  /* Hosts: a server's interface is an IP literal; a client's host a name. */
  ck_assert_int_eq(weft_endpoint_set_host(s, "localhost"), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_host(s, "::1"), 0);
  ck_assert_str_eq(weft_endpoint_get_host(s), "::1");
  ck_assert_int_eq(weft_endpoint_set_host(s, NULL), 0);
  ck_assert_ptr_null(weft_endpoint_get_host(s));
  ck_assert_int_eq(weft_endpoint_set_host(c, ""), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_host(c, NULL), WEFT_EINVAL);
  char long_host[300];
  memset(long_host, 'a', sizeof long_host - 1);
  long_host[299] = '\0';
  ck_assert_int_eq(weft_endpoint_set_host(c, long_host), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_host(c, "example.com"), 0);
  ck_assert_str_eq(weft_endpoint_get_host(c), "example.com");

  /* Role-specific setters refuse the other role. */
  ck_assert_int_eq(weft_endpoint_set_backlog(c, 10), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_reuseport(c, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_connection_limit(c, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_write_timeout(c, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_timeout(s, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_bind_address(s, "127.0.0.1"), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_server_name(s, "x"), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_backlog(s, 10), 0);
  ck_assert_int_eq(weft_endpoint_set_backlog(s, 65536), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_reuseport(s, 1), 0);
  ck_assert_int_eq(weft_endpoint_set_connection_limit(s, 3), 0);
  ck_assert_int_eq(weft_endpoint_set_write_timeout(s, 1.5), 0);
  ck_assert_int_eq(weft_endpoint_set_write_timeout(s, -1), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_write_timeout(s, 1e7), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_timeout(c, 2), 0);
  ck_assert_int_eq(weft_endpoint_set_timeout(c, 0.0 / 0.0), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_bind_address(c, "nope"), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_bind_address(c, "127.0.0.1"), 0);
  ck_assert_int_eq(weft_endpoint_set_server_name(c, "localhost"), 0);
  ck_assert_int_eq(weft_endpoint_set_server_name(c, long_host), WEFT_EINVAL);

  /* TLS options are referenced: the endpoint keeps them alive after the caller's unref. */
  weft_cert_options *o;
  ck_assert_int_eq(weft_cert_options_new(&o), 0);
  ck_assert_int_eq(weft_endpoint_set_tls(c, o), 0);
  ck_assert_int_eq(weft_endpoint_set_tls(c, o), 0); /* same options again: still one ref */
  weft_cert_options_unref(o);
  ck_assert_ptr_eq(weft_endpoint_get_tls(c), o);
  ck_assert_int_eq(weft_cert_options_set_verify(weft_endpoint_get_tls(c), 0), 0);
  ck_assert_int_eq(weft_endpoint_set_tls(c, NULL), 0);
  ck_assert_ptr_null(weft_endpoint_get_tls(c));

  /* NULLs. */
  ck_assert_int_eq(weft_endpoint_set_host(NULL, "x"), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_port(NULL, 1), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_set_tls(NULL, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_get_port(NULL), -1);
  ck_assert_ptr_null(weft_endpoint_get_tls(NULL));
  weft_endpoint_free(NULL);

  /* listen / connect check the role and the required settings. */
  weft_reactor *r = tu_reactor_new();
  tu_factory f;
  tu_factory_init(&f);
  weft_listener *l = (weft_listener *)&f;
  weft_connector *k = (weft_connector *)&f;
  ck_assert_int_eq(weft_endpoint_listen(r, c, &f.base, &l), WEFT_EINVAL);
  ck_assert_ptr_null(l);
  ck_assert_int_eq(weft_endpoint_connect(r, s, &f.base, &k), WEFT_EINVAL);
  ck_assert_ptr_null(k);
  weft_endpoint *empty;
  ck_assert_int_eq(weft_endpoint_new(C, &empty), 0);
  ck_assert_int_eq(weft_endpoint_connect(r, empty, &f.base, NULL), WEFT_EINVAL); /* no host */
  ck_assert_int_eq(weft_endpoint_set_host(empty, "127.0.0.1"), 0);
  ck_assert_int_eq(weft_endpoint_connect(r, empty, &f.base, NULL), WEFT_EINVAL); /* no port */
  weft_endpoint_free(empty);
  ck_assert_int_eq(weft_endpoint_new(S, &empty), 0);
  ck_assert_int_eq(weft_endpoint_listen(r, empty, &f.base, NULL), WEFT_EINVAL); /* no port */
  weft_endpoint_free(empty);
  ck_assert_int_eq(weft_endpoint_listen(NULL, s, &f.base, NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_listen(r, s, NULL, NULL), WEFT_EINVAL);
  ck_assert_int_eq(f.failed, 0);
  weft_reactor_free(r);
  tu_factory_cleanup(&f);
  weft_endpoint_free(s);
  weft_endpoint_free(c);
}
END_TEST

/* --- Valid descriptions ----------------------------------------------------------------------- */

START_TEST(test_valid_tcp) {
  weft_endpoint *ep = parse_ok("tcp:8080", S);
  ck_assert_int_eq(weft_endpoint_get_port(ep), 8080);
  ck_assert_ptr_null(weft_endpoint_get_host(ep));
  ck_assert_ptr_null(weft_endpoint_get_tls(ep));
  weft_endpoint_free(ep);

  ep = parse_ok("tcp:0:interface=127.0.0.1:backlog=10:reusePort=yes:connectionLimit=5:"
                "writeTimeout=2.5",
                S);
  ck_assert_int_eq(weft_endpoint_get_port(ep), 0);
  ck_assert_str_eq(weft_endpoint_get_host(ep), "127.0.0.1");
  weft_endpoint_free(ep);

  ep = parse_ok("tcp:65535:127.0.0.1:10", S); /* Twisted's positional PORT, interface, backlog */
  ck_assert_int_eq(weft_endpoint_get_port(ep), 65535);
  ck_assert_str_eq(weft_endpoint_get_host(ep), "127.0.0.1");
  weft_endpoint_free(ep);

  ep = parse_ok("tcp:interface=\\:\\:1:port=443", S); /* keys in any order, escaped colons */
  ck_assert_str_eq(weft_endpoint_get_host(ep), "::1");
  ck_assert_int_eq(weft_endpoint_get_port(ep), 443);
  weft_endpoint_free(ep);

  ep = parse_ok("tcp:1:interface=[\\:\\:1]", S); /* brackets are stripped */
  ck_assert_str_eq(weft_endpoint_get_host(ep), "::1");
  weft_endpoint_free(ep);

  ep = parse_ok("tcp:host=example.com:port=80", C);
  ck_assert_str_eq(weft_endpoint_get_host(ep), "example.com");
  ck_assert_int_eq(weft_endpoint_get_port(ep), 80);
  weft_endpoint_free(ep);

  ep = parse_ok("tcp:example.com:80:timeout=5:bindAddress=127.0.0.1", C);
  ck_assert_str_eq(weft_endpoint_get_host(ep), "example.com");
  ck_assert_int_eq(weft_endpoint_get_port(ep), 80);
  weft_endpoint_free(ep);

  ep = parse_ok("tcp:port=80:example.com", C); /* the positional one is the host */
  ck_assert_str_eq(weft_endpoint_get_host(ep), "example.com");
  weft_endpoint_free(ep);

  /* Escapes, and '=' inside a value. */
  ep = parse_ok("tcp:host=a\\:b\\=c\\\\d=e:port=1", C);
  ck_assert_str_eq(weft_endpoint_get_host(ep), "a:b=c\\d=e");
  weft_endpoint_free(ep);
}
END_TEST

START_TEST(test_valid_tls) {
  files_init();
  /* Server: every key once. certKey defaults to the privateKey file (here it holds no
   * certificate, so certKey is needed). */
  /* The next-protocol keys exist only where ALPN does (configure --disable-alpn: refused). */
  int alpn = (weft_protocol_negotiation_mechanisms() & WEFT_MECH_ALPN) != 0;
  if (!alpn)
    parse_err(desc("ssl:0:privateKey=%s:certKey=%s:alpn=h2", F.ekey, F.ecert), S, WEFT_ENOTSUP,
              "alpn: ");
  weft_endpoint *ep =
      parse_ok(desc("ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s:caCerts=%s:requireCert=yes:"
                    "%stlsMin=1.2:tlsMax=1.3:"
                    "handshakeTimeout=7:backlog=5:reusePort=no:connectionLimit=0:writeTimeout=1",
                    F.ekey, F.ecert, F.eca,
                    alpn ? "alpn=h2,http/1.1:mechanisms=alpn:noOverlap=continue:" : ""),
               S);
  weft_cert_options *o = weft_endpoint_get_tls(ep);
  ck_assert_ptr_nonnull(o);
  /* Not frozen yet: the caller may still change the options... */
  ck_assert_int_eq(weft_cert_options_set_verify_depth(o, 5), 0);
  /* ... and they hold a matching key and certificate. */
  ck_assert_int_eq(weft_cert_options_prepare(o, WEFT_TLS_SERVER), 0);
  weft_endpoint_free(ep);

  ep = parse_ok(desc("ssl:443:%s:%s", F.ekey, F.ecert), S); /* positional key and cert */
  ck_assert_int_eq(weft_cert_options_prepare(weft_endpoint_get_tls(ep), WEFT_TLS_SERVER), 0);
  weft_endpoint_free(ep);

  /* Client: tls: with every key, and Twisted's ssl: client form. */
  ep = parse_ok(desc("tls:127.0.0.1:443:trustRoots=%s:certificate=%s:privateKey=%s:"
                     "serverName=localhost:%stlsMax=1.2:"
                     "handshakeTimeout=0.5:timeout=3:bindAddress=127.0.0.1",
                     F.eca, F.eclient_cert, F.eclient_key,
                     alpn ? "alpn=h2:mechanisms=both:noOverlap=fail:" : ""),
                C);
  ck_assert_str_eq(weft_endpoint_get_host(ep), "127.0.0.1");
  ck_assert_int_eq(weft_cert_options_prepare(weft_endpoint_get_tls(ep), WEFT_TLS_CLIENT), 0);
  weft_endpoint_free(ep);

  ep = parse_ok(desc("ssl:host=localhost:port=8443:caCerts=%s:certKey=%s:privateKey=%s", F.eca,
                     F.eclient_cert, F.eclient_key),
                C);
  ck_assert_int_eq(weft_endpoint_get_port(ep), 8443);
  ck_assert_ptr_nonnull(weft_endpoint_get_tls(ep));
  weft_endpoint_free(ep);

  ep = parse_ok("tls:example.com:443", C); /* the system trust store */
  ck_assert_ptr_nonnull(weft_endpoint_get_tls(ep));
  weft_endpoint_free(ep);
  files_free();
}
END_TEST

/* --- Invalid descriptions --------------------------------------------------------------------- */

START_TEST(test_invalid) {
  files_init();
  /* Syntax and kinds. */
  parse_err("", S, WEFT_EINVAL, "kind: empty description");
  parse_err(":8080", S, WEFT_EINVAL, "kind: missing");
  parse_err("foo:80", S, WEFT_EINVAL, "kind: unknown endpoint kind 'foo'");
  parse_err("TCP:80", S, WEFT_EINVAL, "kind: unknown endpoint kind 'TCP'");
  parse_err("tls:80", S, WEFT_EINVAL, "tls: a client endpoint kind");
  parse_err("tcp:80:\\q", S, WEFT_EINVAL, "bad escape '\\q' at byte 7");
  parse_err("tcp:80\\", S, WEFT_EINVAL, "trailing backslash at byte 6");
  parse_err("tcp:80:=x", S, WEFT_EINVAL, "(empty key)");
  parse_err("tcp:80:127.0.0.1:5:extra", S, WEFT_EINVAL, "'extra': too many positional");
  parse_err("tcp:80:bogus=1", S, WEFT_EINVAL, "'bogus': unknown key for tcp server");
  parse_err("tcp:80:privateKey=x", S, WEFT_EINVAL, "'privateKey': unknown key for tcp server");
  parse_err("tcp:80:Port=1", S, WEFT_EINVAL, "'Port': unknown key"); /* case-sensitive */
  parse_err("tcp:h:1:alpn=h2", C, WEFT_EINVAL, "'alpn': unknown key for tcp client");
  parse_err("tcp:80:port=81", S, WEFT_EINVAL, "port: given twice");
  parse_err("tcp:80:interface=::1", S, WEFT_EINVAL, "interface: empty value"); /* unescaped */
  parse_err("tcp:80:interface=", S, WEFT_EINVAL, "interface: empty value");
  parse_err("tcp:", S, WEFT_EINVAL, "port: empty value");
  parse_err("tcp:interface=127.0.0.1", S, WEFT_EINVAL, "port: required for tcp server");
  parse_err("tcp:example.com", C, WEFT_EINVAL, "port: required for tcp client");
  parse_err("tcp:port=1", C, WEFT_EINVAL, "host: required for tcp client");
  parse_err("ssl:443", S, WEFT_EINVAL, "privateKey: required for ssl server");

  /* Values. */
  parse_err("tcp:x", S, WEFT_EINVAL, "port: not a number 'x'");
  parse_err("tcp:-1", S, WEFT_EINVAL, "port: not a number '-1'");
  parse_err("tcp:+1", S, WEFT_EINVAL, "port: not a number '+1'");
  parse_err("tcp: 80", S, WEFT_EINVAL, "port: not a number ' 80'");
  parse_err("tcp:80 ", S, WEFT_EINVAL, "port: not a number '80 '");
  parse_err("tcp:0x50", S, WEFT_EINVAL, "port: not a number '0x50'");
  parse_err("tcp:65536", S, WEFT_EINVAL, "port: out of range '65536' (0 to 65535)");
  parse_err("tcp:h:0", C, WEFT_EINVAL, "port: out of range '0' (1 to 65535)");
  parse_err("tcp:80:interface=localhost", S, WEFT_EINVAL, "interface: not an IP address");
  parse_err("tcp:80:backlog=0", S, WEFT_EINVAL, "backlog: out of range");
  parse_err("tcp:80:reusePort=maybe", S, WEFT_EINVAL, "reusePort: not yes or no 'maybe'");
  parse_err("tcp:80:connectionLimit=-3", S, WEFT_EINVAL, "connectionLimit: not a number");
  parse_err("tcp:80:writeTimeout=0", S, WEFT_EINVAL, "writeTimeout: out of range");
  parse_err("tcp:h:1:timeout=-1", C, WEFT_EINVAL, "timeout: not a number of seconds '-1'");
  parse_err("tcp:h:1:timeout=1e3", C, WEFT_EINVAL, "timeout: not a number of seconds");
  parse_err("tcp:h:1:timeout=1.2.3", C, WEFT_EINVAL, "timeout: not a number of seconds");
  parse_err("tcp:h:1:timeout=.", C, WEFT_EINVAL, "timeout: not a number of seconds");
  parse_err("tcp:h:1:timeout=1000001", C, WEFT_EINVAL, "timeout: out of range");
  parse_err("tcp:h:1:bindAddress=nope", C, WEFT_EINVAL, "bindAddress: not an IP address");
  parse_err("tcp:host=a\\:b c:port=1", C, WEFT_EINVAL, "host: a blank, control or non-ASCII");

  /* TLS keys: the value checks, and errors from the options that name the file. */
  const char *k = F.ekey, *c = F.ecert;
  parse_err(desc("ssl:1:privateKey=%s:certKey=%s:alpn=h2,,x", k, c), S, WEFT_EINVAL,
            "alpn: empty protocol name in 'h2,,x'");
  parse_err(desc("ssl:1:privateKey=%s:certKey=%s:alpn=h2,", k, c), S, WEFT_EINVAL,
            "alpn: empty protocol name");
  char longname[300];
  memset(longname, 'p', 256);
  longname[256] = '\0';
  parse_err(desc("ssl:1:privateKey=%s:certKey=%s:alpn=%s", k, c, longname), S,
            (weft_protocol_negotiation_mechanisms() & WEFT_MECH_ALPN) ? WEFT_EINVAL : WEFT_ENOTSUP,
            "alpn: ");
  parse_err(desc("ssl:1:privateKey=%s:certKey=%s:mechanisms=spdy", k, c), S, WEFT_EINVAL,
            "mechanisms: not alpn, npn or both 'spdy'");
  parse_err(desc("ssl:1:privateKey=%s:certKey=%s:noOverlap=maybe", k, c), S, WEFT_EINVAL,
            "noOverlap: not fail or continue 'maybe'");
  parse_err(desc("ssl:1:privateKey=%s:certKey=%s:tlsMax=1.1", k, c), S, WEFT_EINVAL,
            "tlsMax: not a TLS version weft speaks");
  parse_err(desc("ssl:1:privateKey=%s:certKey=%s:tlsMin=1.3:tlsMax=1.2", k, c), S, WEFT_EINVAL,
            "tlsMax: tlsMin 1.3 is above tlsMax 1.2");
  parse_err(desc("ssl:1:privateKey=%s:certKey=%s:handshakeTimeout=0", k, c), S, WEFT_EINVAL,
            "handshakeTimeout: out of range");
  parse_err(desc("ssl:1:privateKey=%s:certKey=%s:requireCert=1", k, c), S, WEFT_EINVAL,
            "requireCert: not yes or no '1'");
  parse_err("ssl:1:privateKey=/nonexistent/key.pem", S, WEFT_EPEM, "privateKey: ");
  parse_err(desc("ssl:1:privateKey=%s", k), S, WEFT_EPEM, "privateKey: "); /* no cert in it */
  parse_err(desc("ssl:1:privateKey=%s:certKey=%s", k, F.eclient_cert), S, WEFT_EKEYMISMATCH,
            "certKey: ");
  parse_err(desc("ssl:1:privateKey=%s:certKey=%s:caCerts=/nonexistent", k, c), S, WEFT_EPEM,
            "caCerts: ");
  parse_err("tls:h:1:trustRoots=/nonexistent", C, WEFT_EPEM, "trustRoots: ");
  parse_err(desc("tls:h:1:privateKey=%s", F.eclient_key), C, WEFT_EINVAL,
            "privateKey: needs certificate");
  parse_err(desc("ssl:h:1:privateKey=%s", F.eclient_key), C, WEFT_EINVAL,
            "privateKey: needs certKey");

  /* Kinds weft knows but does not support yet. */
  parse_err("unix:/tmp/sock:alpn=h2", S, WEFT_EINVAL, "alpn: a TLS key on a plain unix:");
  parse_err("systemd:domain=IPX:index=0", S, WEFT_EINVAL, "domain: not INET, INET6 or UNIX");
  parse_err("haproxy:tcp:host=a:port=1", C, WEFT_EINVAL, "haproxy: a prefix of server");
  parse_err("unix:path=/tmp/sock:trustRoots=x", C, WEFT_EINVAL, "trustRoots: a TLS key on");

  /* NULLs and a small or missing error buffer. */
  weft_endpoint *ep;
  ck_assert_int_eq(weft_endpoint_parse(NULL, S, &ep, NULL, 0), WEFT_EINVAL);
  ck_assert_ptr_null(ep);
  ck_assert_int_eq(weft_endpoint_parse("tcp:80", S, NULL, NULL, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_parse("tcp:80", (weft_endpoint_role)9, &ep, NULL, 0), WEFT_EINVAL);
  ck_assert_int_eq(weft_endpoint_parse("tcp:x", S, &ep, NULL, 0), WEFT_EINVAL);
  char small[8];
  memset(small, 'Z', sizeof small);
  ck_assert_int_eq(weft_endpoint_parse("tcp:x", S, &ep, small, sizeof small), WEFT_EINVAL);
  ck_assert_str_eq(small, "port: n");
  ck_assert_int_eq(weft_endpoint_parse("tcp:x", S, &ep, small, 0), WEFT_EINVAL);
  files_free();
}
END_TEST

/* --- Hostile descriptions --------------------------------------------------------------------- */

START_TEST(test_hostile) {
  static char big[10000];
  /* Too long. */
  memset(big, 'a', 5000);
  memcpy(big, "tcp:", 4);
  big[5000] = '\0';
  parse_err(big, S, WEFT_EINVAL, "description too long (5000 bytes, at most 4096)");
  /* Only colons; only backslashes; only equals signs. */
  memset(big, ':', 4000);
  big[4000] = '\0';
  parse_err(big, S, WEFT_EINVAL, "kind: missing");
  parse_err(desc("tcp%s", big), S, WEFT_EINVAL, "port: empty value");
  memset(big, '\\', 4000);
  parse_err(big, S, WEFT_EINVAL, "kind: unknown endpoint kind '\\\\\\\\"); /* 2000 '\' */
  big[3999] = '\0';
  parse_err(big, S, WEFT_EINVAL, "trailing backslash at byte 3998");
  memset(big, '=', 4000);
  big[4000] = '\0';
  parse_err(big, S, WEFT_EINVAL, "kind: unknown endpoint kind '====");
  parse_err(desc("tcp:%s", big + 10), S, WEFT_EINVAL, "(empty key)");
  /* A huge number: the message quotes at most 40 bytes of it. */
  memset(big, '9', 3000);
  big[3000] = '\0';
  parse_err(desc("tcp:%s", big), S, WEFT_EINVAL, "port: out of range '9999999999");
  char err[512];
  weft_endpoint *ep;
  weft_endpoint_parse(desc("tcp:%s", big), S, &ep, err, sizeof err);
  ck_assert_msg(strlen(err) < 120 && strstr(err, "...'") == NULL && strstr(err, "'...") != NULL,
                "long value not cut: '%s'", err);
  /* Negative and overflowing values everywhere a number goes. */
  parse_err("tcp:-0", S, WEFT_EINVAL, "port: not a number");
  parse_err("tcp:18446744073709551617", S, WEFT_EINVAL, "port: out of range");
  parse_err("tcp:80:backlog=99999999999999999999999", S, WEFT_EINVAL, "backlog: out of range");
  parse_err("tcp:80:connectionLimit=4294967297", S, WEFT_EINVAL, "connectionLimit: out of range");
  memset(big, '1', 400);
  big[400] = '\0';
  parse_err(desc("tcp:h:1:timeout=%s", big), C, WEFT_EINVAL, "timeout: not a number");
  /* Non-ASCII and control bytes: quoted as \xNN. */
  parse_err("\xc3\xa9:80", S, WEFT_EINVAL, "kind: unknown endpoint kind '\\xc3\\xa9'");
  parse_err("tcp:80:\xff\x01=1", S, WEFT_EINVAL, "'\\xff\\x01': unknown key");
  parse_err("tcp:host=caf\xc3\xa9.example:port=1", C, WEFT_EINVAL,
            "host: a blank, control or non-ASCII byte in 'caf\\xc3\\xa9.example'");
  parse_err("tcp:\x1b[2J", S, WEFT_EINVAL, "port: not a number '\\x1b[2J'");
  parse_err("tcp:host=a\tb:port=1", C, WEFT_EINVAL, "host: a blank");
  /* A host too long for DNS, and a key that is almost a known one. */
  memset(big, 'h', 300);
  big[300] = '\0';
  parse_err(desc("tcp:host=%s:port=1", big), C, WEFT_EINVAL, "host: too long (300 bytes");
  parse_err("tcp:80:interface =127.0.0.1", S, WEFT_EINVAL, "'interface ': unknown key");
  parse_err("tcp:80:interface\\==127.0.0.1", S, WEFT_EINVAL, "'interface=': unknown key");

  /* Random strings over the grammar's alphabet: no crash, no leak (ASan, valgrind), a message
   * exactly when parsing fails, every message printable. */
  static const char alphabet[] = "::==\\\\tcpsl0189.ahi\xff";
  unsigned seed = 12345;
  for (int n = 0; n < 3000; n++) {
    size_t len = (seed = seed * 1103515245u + 12345u) >> 16 & 31;
    for (size_t i = 0; i < len; i++)
      big[i] = alphabet[((seed = seed * 1103515245u + 12345u) >> 16) % (sizeof alphabet - 1)];
    big[len] = '\0';
    if (n % 3 == 0 && len > 4) /* give many of them a real kind */
      memcpy(big, n % 2 ? "tcp:" : "ssl:", 4);
    for (int role = 0; role < 2; role++) {
      err[0] = 'X';
      ep = NULL;
      int rc = weft_endpoint_parse(big, (weft_endpoint_role)role, &ep, err, sizeof err);
      ck_assert_msg((rc == 0) == (ep != NULL), "'%s': rc %d, ep %p", big, rc, (void *)ep);
      ck_assert_msg(rc == 0 ? err[0] == '\0' : err[0] != '\0' && printable(err),
                    "'%s': rc %d, message '%s'", big, rc, err);
      weft_endpoint_free(ep);
    }
  }
}
END_TEST

/* --- End to end ------------------------------------------------------------------------------- */

START_TEST(test_e2e_tls_alpn) {
  TU_REQUIRE_ALPN();
  files_init();
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  server.conn_config.echo = 1;
  client.conn_config.greeting = "ping";
  client.conn_config.greeting_len = 4;

  char err[256];
  weft_endpoint *sep, *cep;
  ck_assert_int_eq(weft_endpoint_parse(desc("ssl:0:interface=127.0.0.1:privateKey=%s:"
                                            "certKey=%s:alpn=h2,http/1.1",
                                            F.ekey, F.ecert),
                                       S, &sep, err, sizeof err),
                   0);
  weft_listener *l;
  ck_assert_int_eq(weft_endpoint_listen(r, sep, &server.base, &l), 0);
  weft_endpoint_free(sep); /* read only during the call */
  int port = weft_listener_port(l);
  ck_assert_int_gt(port, 0);

  ck_assert_int_eq(weft_endpoint_parse(desc("tls:127.0.0.1:%d:trustRoots=%s:alpn=h2", port, F.eca),
                                       C, &cep, err, sizeof err),
                   0);
  ck_assert_int_eq(weft_endpoint_connect(r, cep, &client.base, NULL), 0);
  weft_endpoint_free(cep);

  tu_conn *c = tu_wait_conn(r, &client, 0, 10.0);
  tu_conn *s = tu_wait_conn(r, &server, 0, 10.0);
  tu_wait_int(r, &c->made, 1, 10.0);
  tu_wait_int(r, &s->made, 1, 10.0);
  ck_assert_msg(c->proto_made.present && !strcmp(c->proto_made.name, "h2"),
                "client negotiated '%s'", c->proto_made.present ? c->proto_made.name : "none");
  ck_assert_msg(s->proto_made.present && !strcmp(s->proto_made.name, "h2"),
                "server negotiated '%s'", s->proto_made.present ? s->proto_made.name : "none");
  tu_wait_size(r, &c->rx_len, 4, 10.0);
  ck_assert(tu_conn_rx_equals(c, "ping", 4));
  ck_assert_int_eq(client.failed + server.handshake_failed, 0);

  tu_factory_check(&server);
  tu_factory_check(&client);
  weft_reactor_free(r);
  tu_factory_check(&server);
  tu_factory_check(&client);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
  files_free();
}
END_TEST

/* requireCert and caCerts reach the server's options, certificate and privateKey the client's:
 * a client without a certificate is refused, one with it gets in. */
START_TEST(test_e2e_mutual) {
  files_init();
  weft_reactor *r = tu_reactor_new();
  tu_factory server, anon, known;
  tu_factory_init(&server);
  tu_factory_init(&anon);
  tu_factory_init(&known);
  weft_endpoint *ep = parse_ok(desc("ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s:"
                                    "caCerts=%s:requireCert=yes",
                                    F.ekey, F.ecert, F.eca),
                               S);
  weft_listener *l;
  ck_assert_int_eq(weft_endpoint_listen(r, ep, &server.base, &l), 0);
  weft_endpoint_free(ep);
  int port = weft_listener_port(l);

  ep = parse_ok(desc("tls:127.0.0.1:%d:trustRoots=%s:tlsMax=1.2", port, F.eca), C);
  ck_assert_int_eq(weft_endpoint_connect(r, ep, &anon.base, NULL), 0);
  weft_endpoint_free(ep);
  tu_wait_int(r, &anon.failed, 1, 10.0);
  ck_assert_int_eq(anon.made, 0);

  ep = parse_ok(desc("tls:host=localhost:port=%d:trustRoots=%s:certificate=%s:privateKey=%s", port,
                     F.eca, F.eclient_cert, F.eclient_key),
                C);
  ck_assert_int_eq(weft_endpoint_connect(r, ep, &known.base, NULL), 0);
  weft_endpoint_free(ep);
  tu_conn *c = tu_wait_conn(r, &known, 0, 10.0);
  tu_wait_int(r, &c->made, 1, 10.0);
  tu_wait_int(r, &server.made, 1, 10.0);
  ck_assert_int_eq(known.failed, 0);

  weft_reactor_free(r);
  tu_factory_check(&server);
  tu_factory_check(&anon);
  tu_factory_check(&known);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&anon);
  tu_factory_cleanup(&known);
  files_free();
}
END_TEST

/* connectionLimit reaches the listener: with a limit of 1 the second client waits in the
 * backlog until the first one's connection ends. */
START_TEST(test_e2e_tcp_limit) {
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  weft_endpoint *ep = parse_ok("tcp:0:interface=127.0.0.1:connectionLimit=1:writeTimeout=30", S);
  weft_listener *l;
  ck_assert_int_eq(weft_endpoint_listen(r, ep, &server.base, &l), 0);
  weft_endpoint_free(ep);
  int port = weft_listener_port(l);
  ck_assert_int_gt(port, 0);

  ep = parse_ok(desc("tcp:host=127.0.0.1:port=%d:timeout=10", port), C);
  ck_assert_int_eq(weft_endpoint_connect(r, ep, &client.base, NULL), 0);
  ck_assert_int_eq(weft_endpoint_connect(r, ep, &client.base, NULL), 0); /* used twice */
  weft_endpoint_free(ep);
  tu_wait_int(r, &client.made, 2, 10.0); /* both TCP connections are up (kernel backlog) */
  tu_wait_int(r, &server.made, 1, 10.0);
  tu_settle(r, 0.1);
  ck_assert_int_eq(server.made, 1);
  ck_assert_uint_eq(weft_listener_connection_count(l), 1);

  tu_conn *s0 = tu_factory_conn(&server, 0);
  ck_assert_int_eq(weft_transport_lose_connection(s0->transport), 0);
  tu_wait_int(r, &server.made, 2, 10.0);

  weft_reactor_free(r);
  tu_factory_check(&server);
  tu_factory_check(&client);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
}
END_TEST

/* --- Signals ---------------------------------------------------------------------------------- */

static void send_signal(void *arg) {
  kill(getpid(), *(int *)arg);
}

/* The handler of SIG now (Check's own, SIG_DFL, or libevent's while a reactor owns SIG). */
static void (*handler(int sig))(int) {
  struct sigaction sa;
  ck_assert_int_eq(sigaction(sig, NULL, &sa), 0);
  return sa.sa_handler;
}

/* The signal SIG stops a running reactor: run returns 0; freeing the reactor closes the
 * connections and gives the signal its previous handler back. */
static void stop_on(int sig) {
  void (*before)(int) = handler(sig);
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  int port;
  tu_listen_tcp_local(r, &server, &port);
  tu_connect_tcp_local(r, &client, port);
  tu_wait_int(r, &client.made, 1, 10.0);
  tu_wait_int(r, &server.made, 1, 10.0);

  ck_assert_int_eq(weft_reactor_stop_on_signals(r), 0);
  ck_assert(handler(sig) != before);
  ck_assert_int_eq(weft_reactor_call_later(r, 0.01, send_signal, &sig, NULL), 0);
  ck_assert_int_eq(weft_reactor_run(r), 0); /* without the signal this would never return */
  ck_assert_int_eq(server.lost + client.lost, 0);

  weft_reactor_free(r);
  ck_assert_int_eq(server.lost, 1);
  ck_assert_int_eq(client.lost, 1);
  ck_assert_int_eq(tu_factory_conn(&server, 0)->lost_reason.code, WEFT_ESHUTDOWN);
  ck_assert(handler(sig) == before);
  tu_factory_check(&server);
  tu_factory_check(&client);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
}

START_TEST(test_signal_sigterm) {
  stop_on(SIGTERM);
}
END_TEST

START_TEST(test_signal_sigint) {
  stop_on(SIGINT);
}
END_TEST

START_TEST(test_signal_owner) {
  weft_reactor *a = tu_reactor_new(), *b = tu_reactor_new();
  void (*before)(int) = handler(SIGTERM);
  ck_assert_int_eq(weft_reactor_stop_on_signals(NULL), WEFT_EINVAL);
  ck_assert_int_eq(weft_reactor_stop_on_signals(a), 0);
  ck_assert_int_eq(weft_reactor_stop_on_signals(a), 0); /* again: no change */
  ck_assert_int_eq(weft_reactor_stop_on_signals(b), WEFT_EBUSY);
  weft_reactor_free(a);
  ck_assert(handler(SIGTERM) == before);
  ck_assert_int_eq(weft_reactor_stop_on_signals(b), 0); /* free to take now */
  int sig = SIGTERM;
  ck_assert_int_eq(weft_reactor_call_later(b, 0, send_signal, &sig, NULL), 0);
  ck_assert_int_eq(weft_reactor_run(b), 0);
  weft_reactor_free(b);
  ck_assert(handler(SIGTERM) == before);
}
END_TEST

/* A connection_lost run while the reactor is freed cannot take the signals (nothing new starts
 * then: WEFT_ESHUTDOWN). Before, it took them again after the reactor had given them back, and
 * the freed reactor kept them: libevent's handler stayed, its events leaked, and no reactor of
 * the process could take the signals any more (WEFT_EBUSY). */
static int signals_rc_in_lost = 1;

static void take_signals_in_lost(tu_conn *c, weft_transport *t, const weft_reason *reason) {
  (void)c;
  (void)reason;
  signals_rc_in_lost = weft_reactor_stop_on_signals(weft_transport_reactor(t));
}

START_TEST(test_signal_owner_during_free) {
  void (*before)(int) = handler(SIGTERM);
  weft_reactor *r = tu_reactor_new();
  tu_factory server, client;
  tu_factory_init(&server);
  tu_factory_init(&client);
  server.conn_config.on_lost = take_signals_in_lost;
  int port;
  tu_listen_tcp_local(r, &server, &port);
  tu_connect_tcp_local(r, &client, port);
  tu_wait_int(r, &server.made, 1, 10.0);
  ck_assert_int_eq(weft_reactor_stop_on_signals(r), 0);

  weft_reactor_free(r);
  ck_assert_int_eq(server.lost, 1);
  ck_assert_int_eq(signals_rc_in_lost, WEFT_ESHUTDOWN);
  ck_assert(handler(SIGTERM) == before);
  weft_reactor *b = tu_reactor_new();
  ck_assert_int_eq(weft_reactor_stop_on_signals(b), 0); /* nobody holds them */
  weft_reactor_free(b);
  ck_assert(handler(SIGTERM) == before);
  tu_factory_check(&server);
  tu_factory_check(&client);
  tu_factory_cleanup(&server);
  tu_factory_cleanup(&client);
}
END_TEST

/* --- Version ---------------------------------------------------------------------------------- */

START_TEST(test_version) {
  /* Headers, library and configure (PACKAGE_VERSION, from config.h) agree. */
  ck_assert_str_eq(WEFT_VERSION_STRING, PACKAGE_VERSION);
  ck_assert_str_eq(weft_version_string(), WEFT_VERSION_STRING);
  ck_assert_uint_eq(weft_version(), WEFT_VERSION_HEX);
  unsigned major, minor, patch;
  ck_assert_int_eq(sscanf(weft_version_string(), "%u.%u.%u", &major, &minor, &patch), 3);
  ck_assert_uint_eq(major, WEFT_VERSION_MAJOR);
  ck_assert_uint_eq(minor, WEFT_VERSION_MINOR);
  ck_assert_uint_eq(patch, WEFT_VERSION_PATCH);
  ck_assert_uint_eq(weft_version(), major << 16 | minor << 8 | patch);
}
END_TEST

static Suite *endpoint_suite(void) {
  Suite *s = suite_create("endpoint");
  TCase *tc = tcase_create("parse");
  tcase_add_test(tc, test_object);
  tcase_add_test(tc, test_valid_tcp);
  tcase_add_test(tc, test_valid_tls);
  tcase_add_test(tc, test_invalid);
  tcase_add_test(tc, test_hostile);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("e2e");
  tcase_add_test(tc, test_e2e_tls_alpn);
  tcase_add_test(tc, test_e2e_mutual);
  tcase_add_test(tc, test_e2e_tcp_limit);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("signals");
  tcase_add_test(tc, test_signal_sigterm);
  tcase_add_test(tc, test_signal_sigint);
  tcase_add_test(tc, test_signal_owner);
  tcase_add_test(tc, test_signal_owner_during_free);
  tcase_add_test(tc, test_version);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(endpoint_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
