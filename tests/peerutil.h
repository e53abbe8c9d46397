/* tests/peerutil.h: a blocking TCP / TLS client peer in its own thread, for the record-size,
 * producer and close suites (check_records.c, check_close.c).
 *
 * The peer connects to 127.0.0.1:PORT, optionally asks for STARTTLS with a plain line first,
 * does an OpenSSL handshake (optionally negotiating a max_fragment_length), optionally sends a
 * request and half-closes (TCP shutdown(SHUT_WR), or close_notify for TLS), optionally waits
 * until the test lets it read (a full socket for the writer), then reads until the end of the
 * stream and checks every byte against the deterministic pattern (tests/testutil.h).
 *
 * Everything the thread reports is read by the test only after peer_join (which runs the
 * reactor until the thread is done, then joins it). The socket has 20 s receive and send
 * time-outs, so a peer never hangs a test. */
#ifndef WEFT_PEERUTIL_H
#define WEFT_PEERUTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include <weft/weft.h>

typedef struct peer {
  /* configuration */
  weft_reactor *reactor; /* woken with call_from_thread when the peer is done */
  int port;
  int tls_version;           /* 0: plain TCP; else TLS1_2_VERSION or TLS1_3_VERSION */
  const char *starttls_line; /* if set: sent in clear before the handshake; the server must
                                answer with one line (any text up to a newline) */
  int mfl;                   /* TLSEXT_max_fragment_length_512 ... _4096, or 0 */
  void *ca;                  /* X509 *: trust anchor (TLS); the name checked is "localhost" */
  int rcvbuf;                /* SO_RCVBUF before connect, if > 0 */
  const void *request;       /* sent after the handshake, if not NULL */
  size_t request_len;
  int half_close;    /* after the request: shutdown(SHUT_WR) / SSL_shutdown */
  int wait_go;       /* read nothing until peer_go */
  size_t stop_after; /* if > 0: stop reading (and keep the socket open, not reading) after
                              this many bytes, until peer_go; then read to the end */
  /* results */
  char error[256];
  int handshake_ok;
  int mfl_negotiated; /* the session's max_fragment_length mode */
  size_t rx;          /* bytes of application data received */
  size_t first_bad;   /* offset of the first byte that broke the pattern, or (size_t)-1 */
  int end;            /* how reading ended: 1 close_notify / clean FIN, -1 error */
  int end_errno;
  char end_detail[160];
  /* private */
  atomic_int go;
  int go_pipe[2];
  atomic_int stopped; /* 1 while holding back at stop_after */
  atomic_int done;
  pthread_t thread;
} peer;

/* Starts the peer thread (P configured by the caller; results zeroed here). */
void peer_start(peer *p);

/* Lets a peer waiting in wait_go or at stop_after read (any thread). */
void peer_go(peer *p);

/* Runs REACTOR until the peer is done (SECONDS at most, else the test fails), joins it. */
void peer_join(peer *p, weft_reactor *reactor, double seconds);

/* 1 once the peer thread is done (for tu_run_until). */
int peer_done(void *p);

/* The descriptor of T's socket in this process (found by its two addresses), or -1. */
int peer_fd_of(weft_transport *t);

#endif
