/* tests/testutil.h: helpers shared by every Check suite (TCP, TLS, ALPN, ...).
 *
 * What is here:
 *  - reactors that fail the test instead of returning errors (tu_reactor_new), and loops that
 *    run until a condition holds or a deadline passes (tu_run_until, tu_wait_int, ...): tests
 *    never sleep to wait for an event;
 *  - a recording protocol (tu_conn) and a recording factory (tu_factory) that count every
 *    callback, keep copies of the reasons and of the negotiated protocol, collect received
 *    bytes, and flag callbacks that break the lifecycle contract (tu_factory_check);
 *  - small socket helpers: local listeners, free ports, raw client sockets, open fd counts;
 *  - a fake DNS server on 127.0.0.1 that answers from the records a test gives it, NXDOMAIN
 *    otherwise (or nothing at all), so that resolver tests never send a packet off the machine;
 *  - the deterministic byte pattern used by transfer tests.
 *
 * Nothing here is TCP-only: tu_factory works with weft_listen_ssl / weft_connect_ssl too.
 *
 * Ownership: a tu_factory owns the tu_conn objects it builds. Free them with
 * tu_factory_cleanup() only once their connections are lost (after weft_reactor_free() at the
 * latest, which delivers connection_lost to every live connection), or reap the lost ones on the
 * way with tu_factory_reap().
 */
#ifndef WEFT_TESTUTIL_H
#define WEFT_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <check.h>
#include <weft/weft.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- Time and loops ------------------------------------------------------------------- */

/* Monotonic clock, in seconds. */
double tu_now(void);

/* A new reactor (weft_reactor_new); fails the test if it cannot be made. */
weft_reactor *tu_reactor_new(void);

/* Runs REACTOR until PRED(ARG) holds; fails the test (naming the predicate and the caller's
 * line) if SECONDS pass first or the loop ends for another reason. */
#define tu_run_until(reactor, pred, arg, seconds)                                                  \
  tu_run_until_at(__FILE__, __LINE__, #pred, (reactor), (pred), (arg), (seconds))
void tu_run_until_at(const char *file, int line, const char *what, weft_reactor *reactor,
                     int (*pred)(void *arg), void *arg, double seconds);

/* Runs REACTOR until *COUNTER >= TARGET (an int or a size_t); fails the test on timeout. */
#define tu_wait_int(reactor, counter, target, seconds)                                             \
  tu_wait_int_at(__FILE__, __LINE__, #counter, (reactor), (counter), (target), (seconds))
#define tu_wait_size(reactor, counter, target, seconds)                                            \
  tu_wait_size_at(__FILE__, __LINE__, #counter, (reactor), (counter), (target), (seconds))
void tu_wait_int_at(const char *file, int line, const char *what, weft_reactor *reactor,
                    const int *counter, int target, double seconds);
void tu_wait_size_at(const char *file, int line, const char *what, weft_reactor *reactor,
                     const size_t *counter, size_t target, double seconds);

/* Runs REACTOR for SECONDS whatever happens (the loop must not stop early): used after the
 * events a test waited for, to let any wrong extra callback show up before counts are checked.
 * Keep it short (0.05 to 0.2 s). */
void tu_settle(weft_reactor *reactor, double seconds);

/* For tests whose subject needs ALPN, in a build without it (configure --disable-alpn): checks
 * what such a build does instead (with neither mechanism, setting a protocol list is refused
 * with WEFT_ENOTSUP), says so on stdout, and returns from the test. */
#define TU_REQUIRE_ALPN()                                                                          \
  do {                                                                                             \
    if (!(weft_protocol_negotiation_mechanisms() & WEFT_MECH_ALPN)) {                              \
      tu_check_without_alpn(__func__);                                                             \
      return;                                                                                      \
    }                                                                                              \
  } while (0)
void tu_check_without_alpn(const char *test);

/* --- Reasons and negotiated protocols, copied out of callbacks ------------------------ */

#define TU_MSG_MAX 512

typedef struct tu_reason {
  int set; /* 1 once a reason was stored */
  int code;
  char message[TU_MSG_MAX];
  int tls_alert;
  int alert_sent;
  long verify_result;
  int sys_errno;
} tu_reason;

void tu_reason_copy(tu_reason *dst, const weft_reason *src);

/* The negotiated next protocol as read from a transport at one moment. */
typedef struct tu_proto {
  int set;     /* 1 once read (even if nothing was negotiated) */
  int present; /* 1 if weft_transport_next_protocol returned non-NULL */
  size_t len;
  char name[257]; /* the bytes, NUL-terminated for convenience */
  weft_negotiation_mechanism mechanism;
} tu_proto;

void tu_proto_read(tu_proto *dst, weft_transport *transport);

/* --- The recording protocol ----------------------------------------------------------- */

typedef struct tu_conn tu_conn;
typedef struct tu_factory tu_factory;

/* How a tu_conn behaves. A factory copies its conn_config into every connection it builds;
 * change a connection's own copy (conn->cfg) afterwards if needed. */
typedef struct tu_conn_config {
  int echo;             /* write back every byte received */
  size_t close_after;   /* lose_connection once this many bytes arrived in all (0: off) */
  int abort_on_data;    /* abort_connection on the first data */
  int keep_rx;          /* store received bytes in rx (else only count them in rx_total);
                              tu_factory_init sets it to 1 */
  int read_eof_result;  /* what read_eof returns (non-zero keeps a half-closed connection) */
  const void *greeting; /* written in connection_made if not NULL */
  size_t greeting_len;
  size_t low_water; /* if non-zero, set as write low water in connection_made */
  /* Optional hooks, called after the recording and the built-in behaviour above. */
  void (*on_made)(tu_conn *c, weft_transport *t);
  void (*on_data)(tu_conn *c, weft_transport *t, const uint8_t *data, size_t len);
  int (*on_read_eof)(tu_conn *c, weft_transport *t); /* if set, its result is returned */
  void (*on_drained)(tu_conn *c, weft_transport *t);
  void (*on_tls_started)(tu_conn *c, weft_transport *t, int status);
  void (*on_lost)(tu_conn *c, weft_transport *t, const weft_reason *reason); /* before t is
                                                                                 cleared */
} tu_conn_config;

struct tu_conn {
  weft_protocol base;  /* first member: a weft_protocol * is a tu_conn * */
  tu_factory *factory; /* the factory that built it (NULL for tu_conn_new) */
  tu_conn *next;       /* the factory's list, in build order */
  int index;           /* 0 for the factory's first connection, ... */
  tu_conn_config cfg;

  weft_transport *transport;    /* from connection_made until connection_lost */
  struct sockaddr_storage peer; /* the address given to build_protocol */
  socklen_t peer_len;

  int made;        /* connection_made calls */
  int lost;        /* connection_lost calls */
  int read_eof;    /* read_eof calls */
  int drained;     /* write_drained calls */
  int data_calls;  /* data_received calls */
  int tls_started; /* tls_started calls */
  int tls_started_status;
  tu_reason lost_reason;

  uint8_t *rx; /* received bytes (keep_rx), NUL-terminated; may be NULL */
  size_t rx_len;
  size_t rx_cap;
  size_t rx_total; /* bytes received, stored or not */

  int write_errors; /* failed writes by echo or greeting */
  int last_write_error;

  tu_proto proto_build; /* next protocol as seen in build_protocol */
  tu_proto proto_made;  /* ... in connection_made */
  tu_proto proto_lost;  /* ... in connection_lost */

  int violations;             /* callbacks that broke the lifecycle contract */
  char violation[TU_MSG_MAX]; /* the first one */

  void *user; /* free for the test */
};

/* A stand-alone recording protocol (not built by a factory); free with tu_conn_free. */
tu_conn *tu_conn_new(const tu_conn_config *cfg);
void tu_conn_free(tu_conn *c);

/* The callbacks a tu_conn uses (for tests that build their own protocols on top). */
extern const weft_protocol_ops tu_conn_ops;

/* Writes a NUL-terminated string on the connection's transport; fails the test on error. */
void tu_conn_write_str(tu_conn *c, const char *s);

/* Records a contract violation on C (and its factory) for tu_factory_check to report: for
 * hooks that check more than tu_conn does. */
void tu_conn_violation(tu_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* 1 if the connection received exactly the LEN bytes of DATA so far. */
int tu_conn_rx_equals(const tu_conn *c, const void *data, size_t len);

/* --- The recording factory ------------------------------------------------------------ */

struct tu_factory {
  weft_factory base;          /* first member: a weft_factory * is a tu_factory * */
  tu_conn_config conn_config; /* copied into every connection built */
  int refuse;                 /* build_protocol returns NULL */

  tu_conn *conns; /* connections built, in order */
  tu_conn *conns_tail;
  int nconns;     /* connections built (and not reaped) */
  int next_index; /* index of the next connection built */

  int built;            /* build_protocol calls (refused ones included) */
  int refused;          /* build_protocol calls that returned NULL */
  int made;             /* connection_made calls, all connections */
  int lost;             /* connection_lost calls, all connections */
  int failed;           /* connection_failed calls */
  int handshake_failed; /* handshake_failed calls */
  tu_reason last_failed;
  tu_reason last_handshake_failed;
  struct sockaddr_storage last_handshake_peer;

  int violations; /* sum over connections, plus factory-level ones */
  char violation[TU_MSG_MAX];

  /* Optional hooks. */
  void (*on_build)(tu_factory *f, tu_conn *c, weft_transport *t); /* after building C */
  void (*on_failed)(tu_factory *f, const weft_reason *reason);
  void (*on_handshake_failed)(tu_factory *f, const struct sockaddr *peer,
                              const weft_reason *reason);
  void *user; /* free for the test */
};

/* Initialises F (zeroes it, sets the callbacks, keep_rx = 1). */
void tu_factory_init(tu_factory *f);

/* Frees every connection F built. Only once none is live (see the ownership note above). */
void tu_factory_cleanup(tu_factory *f);

/* Frees the connections whose connection_lost has run; keeps indices of the others. */
void tu_factory_reap(tu_factory *f);

/* The INDEX-th connection built (counting from 0, reaped ones excluded), or NULL. */
tu_conn *tu_factory_conn(tu_factory *f, int index);

/* Runs REACTOR until F has built INDEX + 1 connections, and returns the INDEX-th one; fails the
 * test on timeout, or at once when F gets a connection_failed meanwhile. */
#define tu_wait_conn(reactor, f, index, seconds)                                                   \
  tu_wait_conn_at(__FILE__, __LINE__, (reactor), (f), (index), (seconds))
tu_conn *tu_wait_conn_at(const char *file, int line, weft_reactor *reactor, tu_factory *f,
                         int index, double seconds);

/* Fails the test if a callback broke the contract: a callback before connection_made or after
 * connection_lost, connection_made or connection_lost twice, a callback with another transport,
 * a NULL reason or message, data_received with no bytes, ... */
#define tu_factory_check(f) tu_factory_check_at(__FILE__, __LINE__, (f))
void tu_factory_check_at(const char *file, int line, tu_factory *f);

/* --- Sockets -------------------------------------------------------------------------- */

/* Listens with weft_listen_tcp on 127.0.0.1, port 0; stores the port in *PORT (may be NULL).
 * Fails the test on error. */
weft_listener *tu_listen_tcp_local(weft_reactor *reactor, tu_factory *f, int *port);

/* Starts weft_connect_tcp to 127.0.0.1:PORT; fails the test on error. */
weft_connector *tu_connect_tcp_local(weft_reactor *reactor, tu_factory *f, int port);

/* weft_connect_tcp (OPTIONS NULL) or weft_connect_ssl with the settings that weft 1.0 keeps on
 * weft_endpoint: SERVER_NAME (TLS only; NULL: the options' name, else HOST), TIMEOUT (the
 * connect time-out; 0 or less, or above 1e6: the default, 30 s; NaN: WEFT_EINVAL) and
 * BIND_ADDRESS (NULL: any). Goes through a client endpoint and weft_endpoint_connect, and
 * returns what they return (the setters' WEFT_EINVAL included). */
int tu_connect(weft_reactor *reactor, const char *host, int port, weft_factory *factory,
               weft_cert_options *options, const char *server_name, double timeout,
               const char *bind_address, weft_connector **out);

/* A client endpoint for HOST:PORT with the settings of tu_connect; fails the test on error.
 * Free it with weft_endpoint_free. */
weft_endpoint *tu_client_endpoint(const char *host, int port, weft_cert_options *options,
                                  const char *server_name, double timeout,
                                  const char *bind_address);

/* weft_reconnect_start with a client endpoint made as tu_connect makes it (freed before this
 * returns: the reconnector copies it), returning what weft_reconnect_start returns. */
int tu_reconnect_start(weft_reactor *reactor, const char *host, int port, weft_factory *factory,
                       weft_cert_options *options, const char *server_name, double timeout,
                       const char *bind_address, const weft_reconnect_options *ro,
                       weft_reconnector **out);

/* weft_listen_tcp (OPTIONS NULL) or weft_listen_ssl with a BACKLOG (0 or less: the default)
 * and FLAGS (TU_LISTEN_REUSEPORT: weft_endpoint_set_reuseport; any other bit: WEFT_EINVAL),
 * through a server endpoint and weft_endpoint_listen. */
#define TU_LISTEN_REUSEPORT 1u
int tu_listen(weft_reactor *reactor, const char *interface, int port, weft_factory *factory,
              weft_cert_options *options, int backlog, unsigned flags, weft_listener **out);

/* A TCP port on 127.0.0.1 that was free a moment ago and has no listener (nothing is bound to
 * it when this returns). */
int tu_free_port(void);

/* A blocking TCP socket connected to HOST (IPv4 literal) : PORT, or fails the test. */
int tu_raw_connect(const char *host, int port);

/* Closes FD with SO_LINGER 0, so that the peer receives a RST. */
void tu_raw_reset(int fd);

/* The number of file descriptors open in this process (entries of /proc/self/fd). */
int tu_count_fds(void);

/* 1 if an IPv6 socket can be bound to ::1. */
int tu_ipv6_available(void);

/* --- Fake DNS server ------------------------------------------------------------------ */

typedef struct tu_fake_dns tu_fake_dns;

typedef enum tu_dns_mode {
  TU_DNS_NXDOMAIN = 0, /* answer from the records added (tu_fake_dns_add), else NXDOMAIN */
  TU_DNS_SILENT = 1    /* read queries and never answer */
} tu_dns_mode;

/* Binds a UDP socket on 127.0.0.1 (a free port), serves it from REACTOR's event_base, and makes
 * it the reactor's only name server (weft_reactor_set_nameservers). Free it before the
 * reactor. Fails the test on error. */
tu_fake_dns *tu_fake_dns_start(weft_reactor *reactor, tu_dns_mode mode);

/* Adds an address record: queries for NAME (case-insensitive) are answered with every IP added
 * for it whose family matches the query (A: IPv4, AAAA: IPv6), in the order added, or with no
 * answer (NODATA) when none matches. Names never added get NXDOMAIN. Use loopback addresses
 * only. */
void tu_fake_dns_add(tu_fake_dns *dns, const char *name, const char *ip);
int tu_fake_dns_port(const tu_fake_dns *dns);
int tu_fake_dns_queries(const tu_fake_dns *dns); /* queries received so far */
void tu_fake_dns_free(tu_fake_dns *dns);

/* --- Data patterns -------------------------------------------------------------------- */

/* Byte I of the deterministic stream used by transfer tests. It depends on I's higher bits too,
 * so reordered, lost or repeated blocks are caught. */
static inline uint8_t tu_pattern_byte(uint64_t i) {
  return (uint8_t)((i * 31u + 7u) ^ (i >> 8) ^ (i >> 16) ^ (i >> 24));
}

/* Fills BUF with LEN pattern bytes starting at stream offset OFFSET. */
void tu_pattern_fill(uint8_t *buf, size_t len, uint64_t offset);

/* Returns the index within BUF of the first byte that differs from the pattern at OFFSET, or
 * LEN if all match. */
size_t tu_pattern_check(const uint8_t *buf, size_t len, uint64_t offset);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_TESTUTIL_H */
