/* tests/peerutil.c: see peerutil.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "peerutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "testutil.h"

static void peer_fail(peer *p, const char *what) {
  char ossl[160] = "";
  unsigned long e = ERR_get_error();
  if (e)
    ERR_error_string_n(e, ossl, sizeof ossl);
  if (!p->error[0])
    snprintf(p->error, sizeof p->error, "%s (errno %s; %s)", what, strerror(errno), ossl);
}

/* Blocks until peer_go (a byte on the go pipe), for at most 30 s. */
static void wait_go(peer *p) {
  struct pollfd pfd = {p->go_pipe[0], POLLIN, 0};
  if (!atomic_load(&p->go))
    (void)poll(&pfd, 1, 30000);
}

static int send_all(int fd, const void *data, size_t len) {
  const char *b = data;
  while (len > 0) {
    ssize_t n = send(fd, b, len, MSG_NOSIGNAL);
    if (n <= 0)
      return -1;
    b += n;
    len -= (size_t)n;
  }
  return 0;
}

static void account(peer *p, const uint8_t *buf, size_t n) {
  if (p->first_bad == (size_t)-1) {
    size_t bad = tu_pattern_check(buf, n, p->rx);
    if (bad < n)
      p->first_bad = p->rx + bad;
  }
  p->rx += n;
}

static int hold_back(peer *p) {
  if (p->stop_after && p->rx >= p->stop_after && !atomic_load(&p->go)) {
    atomic_store(&p->stopped, 1);
    wait_go(p);
  }
  return 0;
}

static void read_plain(peer *p, int fd) {
  uint8_t buf[16384];
  for (;;) {
    hold_back(p);
    size_t want = sizeof buf;
    if (p->stop_after && !atomic_load(&p->go) && p->stop_after - p->rx < want)
      want = p->stop_after - p->rx;
    ssize_t n = recv(fd, buf, want, 0);
    if (n > 0) {
      account(p, buf, (size_t)n);
      continue;
    }
    p->end = n == 0 ? 1 : -1;
    p->end_errno = n == 0 ? 0 : errno;
    snprintf(p->end_detail, sizeof p->end_detail, "%s", n == 0 ? "EOF" : strerror(errno));
    return;
  }
}

static void read_tls(peer *p, SSL *ssl) {
  uint8_t buf[16384];
  for (;;) {
    hold_back(p);
    int want = (int)sizeof buf;
    if (p->stop_after && !atomic_load(&p->go) && p->stop_after - p->rx < (size_t)want)
      want = (int)(p->stop_after - p->rx);
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(ssl, buf, want);
    if (n > 0) {
      account(p, buf, (size_t)n);
      continue;
    }
    int err = SSL_get_error(ssl, n);
    p->end = err == SSL_ERROR_ZERO_RETURN ? 1 : -1;
    p->end_errno = errno;
    char ossl[120] = "";
    unsigned long e = ERR_get_error();
    if (e)
      ERR_error_string_n(e, ossl, sizeof ossl);
    snprintf(p->end_detail, sizeof p->end_detail, "SSL error %d, errno %d, %s", err, errno, ossl);
    return;
  }
}

static void run(peer *p) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    peer_fail(p, "socket");
    return;
  }
  struct timeval tv = {20, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (p->rcvbuf > 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &p->rcvbuf, sizeof p->rcvbuf);
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)p->port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
    peer_fail(p, "connect");
    close(fd);
    return;
  }
  if (p->starttls_line) {
    /* Ask, then wait for the server's go-ahead line before the handshake: bytes sent behind
     * the request in the same read would be plaintext to the server (STARTTLS injection
     * rules), so a correct client never pipelines its ClientHello. */
    char ch = 0;
    int i = 0;
    if (send_all(fd, p->starttls_line, strlen(p->starttls_line)) != 0) {
      peer_fail(p, "sending the STARTTLS line");
      close(fd);
      return;
    }
    while (i++ < 64 && recv(fd, &ch, 1, 0) == 1 && ch != '\n')
      ;
    if (ch != '\n') {
      peer_fail(p, "no go-ahead line after STARTTLS");
      close(fd);
      return;
    }
  }
  if (!p->tls_version) {
    p->handshake_ok = 1;
    if (p->request && send_all(fd, p->request, p->request_len) != 0)
      peer_fail(p, "sending the request");
    if (p->half_close)
      shutdown(fd, SHUT_WR);
    if (p->wait_go)
      wait_go(p);
    read_plain(p, fd);
    close(fd);
    return;
  }
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  SSL *ssl = NULL;
  if (!ctx) {
    peer_fail(p, "SSL_CTX_new");
    goto out;
  }
  SSL_CTX_set_min_proto_version(ctx, p->tls_version);
  SSL_CTX_set_max_proto_version(ctx, p->tls_version);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), p->ca);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  if (p->mfl)
    SSL_CTX_set_tlsext_max_fragment_length(ctx, p->mfl);
  ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "localhost");
  SSL_set1_host(ssl, "localhost");
  if (SSL_connect(ssl) != 1) {
    peer_fail(p, "SSL_connect");
    goto out;
  }
  p->handshake_ok = 1;
  p->mfl_negotiated = SSL_SESSION_get_max_fragment_length(SSL_get_session(ssl));
  if (p->request && SSL_write(ssl, p->request, (int)p->request_len) != (int)p->request_len) {
    peer_fail(p, "SSL_write of the request");
    goto out;
  }
  if (p->half_close)
    SSL_shutdown(ssl); /* close_notify: we send nothing more, but keep reading */
  if (p->wait_go)
    wait_go(p);
  read_tls(p, ssl);
out:
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
}

static void peer_wake(void *arg) {
  (void)arg;
}

static void *peer_main(void *arg) {
  peer *p = arg;
  run(p);
  ERR_clear_error();
  OPENSSL_thread_stop();
  atomic_store(&p->done, 1);
  weft_reactor_call_from_thread(p->reactor, peer_wake, NULL);
  return NULL;
}

void peer_start(peer *p) {
  p->error[0] = '\0';
  p->handshake_ok = p->mfl_negotiated = 0;
  p->rx = 0;
  p->first_bad = (size_t)-1;
  p->end = 0;
  atomic_init(&p->go, 0);
  atomic_init(&p->stopped, 0);
  atomic_init(&p->done, 0);
  ck_assert_int_eq(pipe(p->go_pipe), 0);
  ck_assert_int_eq(pthread_create(&p->thread, NULL, peer_main, p), 0);
}

void peer_go(peer *p) {
  if (!atomic_exchange(&p->go, 1))
    (void)!write(p->go_pipe[1], "g", 1);
}

int peer_done(void *p) {
  return atomic_load(&((peer *)p)->done);
}

void peer_join(peer *p, weft_reactor *reactor, double seconds) {
  tu_run_until(reactor, peer_done, p, seconds);
  ck_assert_int_eq(pthread_join(p->thread, NULL), 0);
  close(p->go_pipe[0]);
  close(p->go_pipe[1]);
  ck_assert_msg(p->error[0] == '\0', "peer: %s", p->error);
}

int peer_fd_of(weft_transport *t) {
  struct sockaddr_storage host, peer_addr, a, b;
  socklen_t hl = sizeof host, pl = sizeof peer_addr;
  if (weft_transport_host_address(t, (struct sockaddr *)&host, &hl) != 0 ||
      weft_transport_peer_address(t, (struct sockaddr *)&peer_addr, &pl) != 0)
    return -1;
  for (int fd = 0; fd < 4096; fd++) {
    socklen_t al = sizeof a, bl = sizeof b;
    if (getsockname(fd, (struct sockaddr *)&a, &al) == 0 && al == hl &&
        memcmp(&a, &host, hl) == 0 && getpeername(fd, (struct sockaddr *)&b, &bl) == 0 &&
        bl == pl && memcmp(&b, &peer_addr, pl) == 0)
      return fd;
  }
  return -1;
}
