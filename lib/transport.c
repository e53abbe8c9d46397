/* The transport: one type for TCP and TLS connections. It owns the bufferevent (and, for TLS,
 * the SSL through it), delivers the protocol's callbacks, and ends every connection through one
 * path (close_now + on_finish) so that connection_lost runs exactly once, from the loop. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "alloc-internal.h"
#include "transport-internal.h"

/* STARTTLS: ciphertext the socket bufferevent under a TLS filter may hold (see start_tls). */
#define WEFT__STARTTLS_SOCKET_HIGH ((size_t)64 << 10)

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void become_ready(weft_transport *t);
static void end_handshake_failed(weft_transport *t);
static int send_close_notify(weft_transport *t);
static void deliver_input(weft_transport *t);
static void check_read_ahead(weft_transport *t);

/* --- ending a connection ------------------------------------------------------------------ */

/* After STARTTLS the TLS engine writes into the plain bufferevent's output buffer, not the
 * socket: push what is there (a final alert or close_notify) before the socket closes. Best
 * effort: the socket is non-blocking and about to close. A socket bufferevent keeps the start
 * of its output buffer frozen (only its own write callback drains it), and evbuffer_write on a
 * frozen buffer writes nothing: thaw it for the write. */
static void flush_filter_output(weft_transport *t) {
  struct bufferevent *under = t->bev ? bufferevent_get_underlying(t->bev) : NULL;
  if (under && t->fd >= 0) {
    struct evbuffer *out = bufferevent_get_output(under);
    evbuffer_unfreeze(out, 1);
    evbuffer_write(out, t->fd);
    evbuffer_freeze(out, 1);
  }
}

static void transport_free(weft_transport *t) {
  struct weft_listener *listener = t->listener;
  flush_filter_output(t);
  weft__reactor_remove_transport(t->reactor, t);
  if (t->timer)
    event_free(t->timer);
  if (t->finish_event)
    event_free(t->finish_event);
  if (t->resume_event)
    event_free(t->resume_event);
  if (t->bev)
    bufferevent_free(t->bev); /* closes the socket, and frees the SSL for TLS */
  else if (t->fd >= 0)
    close(t->fd);
  if (t->tls.options)
    weft_cert_options_unref(t->tls.options);
  weft__free(t->server_name);
  weft__free(t);
  /* Last, once the transport is gone: this may resume accepting (connection limit). */
  if (listener)
    weft__listener_connection_closed(listener);
}

/* Delivers the end of the connection to whoever must hear it, then frees the transport. */
static void deliver_end(weft_transport *t) {
  const weft_reason *reason = &t->reason.reason;
  if (t->made) {
    if (t->protocol->ops->connection_lost)
      t->protocol->ops->connection_lost(t->protocol, t, reason);
  } else if (t->connector) {
    weft__connector_handshake_done(t->connector, reason);
  } else if (t->ssl && !t->tls.handshake_done && t->factory->handshake_failed) {
    t->factory->handshake_failed(t->factory, (struct sockaddr *)&t->peer, reason);
  }
  transport_free(t);
}

static void on_finish(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  deliver_end(arg);
}

/* Stops all I/O at once and schedules deliver_end from the loop. The reason must be set. The
 * bufferevent is kept until transport_free so that a callback running on it stays safe. */
static void close_now(weft_transport *t) {
  if (t->state == WEFT__T_CLOSED)
    return;
  t->state = WEFT__T_CLOSED;
  t->write_closed = 1;
  if (t->timer)
    event_del(t->timer);
  if (t->resume_event)
    event_del(t->resume_event);
  if (t->bev) {
    bufferevent_setcb(t->bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(t->bev, EV_READ | EV_WRITE);
  }
  event_active(t->finish_event, EV_TIMEOUT, 1);
}

static void close_with(weft_transport *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void close_with(weft_transport *t, int code, const char *fmt, ...) {
  if (t->state == WEFT__T_CLOSED)
    return;
  char msg[WEFT__REASON_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  weft__reason_set(&t->reason, code, "%s", msg);
  close_now(t);
}

void weft__transport_shutdown_all(weft_reactor *reactor) {
  weft_transport *t;
  /* First stop everything, so a connection_lost that touches another transport sees it closed. */
  TAILQ_FOREACH(t, &reactor->transports, link) {
    if (t->state != WEFT__T_CLOSED) {
      if (t->ssl && t->tls.handshake_done)
        send_close_notify(t); /* a clean TLS close, so the peer sees no truncation */
      weft__reason_set(&t->reason, WEFT_ESHUTDOWN, "the reactor was freed");
      close_now(t);
    }
    event_del(t->finish_event);
  }
  while ((t = TAILQ_FIRST(&reactor->transports)) != NULL)
    deliver_end(t);
}

/* --- TLS helpers ------------------------------------------------------------------------- */

static int sys_error_of(weft_transport *t) {
  int err = errno;
  if (err == 0 || err == EAGAIN || err == EINTR) {
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (t->fd >= 0 && getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr)
      err = soerr;
  }
  return err == EAGAIN || err == EINTR ? 0 : err;
}

static void classify_tls(weft_transport *t, int sys_errno) {
  unsigned long errs[16];
  size_t n = 0;
  unsigned long e;
  while ((e = bufferevent_get_openssl_error(t->bev)) != 0)
    if (n < sizeof errs / sizeof errs[0])
      errs[n++] = e;
  weft__tls_classify(t->ssl, &t->tls, errs, n, sys_errno, t->eof_seen, &t->reason);
  ERR_clear_error();
}

static void arm_timer(weft_transport *t, double seconds) {
  struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (time_t)seconds) * 1e6)};
  evtimer_add(t->timer, &tv);
}

/* Sends close_notify once. Returns 1 once the peer's close_notify has been received too. */
static int send_close_notify(weft_transport *t) {
  if (t->shutdown_sent)
    return (SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN) != 0;
  t->shutdown_sent = 1;
  /* Under a STARTTLS filter, the socket bufferevent's high-water mark (see start_tls) could
   * refuse the alert, and nothing would send it later: nothing follows it, so lift the mark. */
  struct bufferevent *under = bufferevent_get_underlying(t->bev);
  if (under)
    bufferevent_setwatermark(under, EV_WRITE, 0, 0);
  int rc = SSL_shutdown(t->ssl);
  ERR_clear_error();
  return rc == 1;
}

static void handshake_complete(weft_transport *t) {
  event_del(t->timer);
  t->tls.handshake_done = 1;
  if (weft__tls_check_negotiated(t->ssl, &t->tls, &t->reason)) {
    end_handshake_failed(t); /* refused before build_protocol / tls_started(0) */
    return;
  }
  weft__tls_negotiated(t->ssl, &t->tls, &t->next_proto, &t->next_proto_len, &t->mechanism);
  if (t->starttls) {
    t->starttls = 0;
    if (t->protocol->ops->tls_started)
      t->protocol->ops->tls_started(t->protocol, t, 0);
  } else {
    become_ready(t);
  }
  /* A STARTTLS filter reads the records that came with the end of the handshake before it
   * reports BEV_EVENT_CONNECTED (deliver_input holds them while t->starttls is set), and no
   * further read event may come for them: deliver them now, after connection_made /
   * tls_started. */
  deliver_input(t);
  check_read_ahead(t);
}

/* The reason is set: tell a STARTTLS protocol its upgrade failed, then close. */
static void end_handshake_failed(weft_transport *t) {
  if (t->starttls && t->made) {
    t->starttls = 0;
    if (t->protocol->ops->tls_started)
      t->protocol->ops->tls_started(t->protocol, t, t->reason.reason.code);
  }
  close_now(t);
}

/* A TLS connection failed before or during its handshake, or broke while open. */
static void tls_failed(weft_transport *t, int sys_errno) {
  if (t->state == WEFT__T_CLOSED)
    return;
  classify_tls(t, sys_errno);
  end_handshake_failed(t);
}

/* Gives the bufferevent(s) libevent's write time-out: the write event waits at most that long
 * for the socket to take more bytes, and every write that makes progress re-arms it, so the
 * data path pays nothing per byte. Under a STARTTLS filter the bytes waiting for the socket sit
 * in the socket bufferevent below, so its time-out is the one that fires (libevent passes the
 * event up to the filter's callback, on_event). */
static int apply_write_timeout(weft_transport *t) {
  struct timeval tv = {(time_t)t->write_timeout,
                       (suseconds_t)((t->write_timeout - (time_t)t->write_timeout) * 1e6)};
  const struct timeval *write_tv = t->write_timeout > 0 ? &tv : NULL;
  int rc = bufferevent_set_timeouts(t->bev, NULL, write_tv);
  struct bufferevent *under = bufferevent_get_underlying(t->bev);
  if (under && bufferevent_set_timeouts(under, NULL, write_tv) != 0)
    rc = -1;
  return rc == 0 ? 0 : WEFT_ENOMEM;
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
  weft_transport *t = arg;
  (void)fd;
  (void)what;
  if (!t->tls.handshake_done && t->ssl) {
    weft__reason_set(&t->reason, WEFT_EHANDSHAKETIMEOUT, "TLS handshake timed out after %.3g s",
                     weft__tls_handshake_timeout(t->tls.options));
    end_handshake_failed(t);
  } else if (t->state == WEFT__T_CLOSING) {
    close_with(t, WEFT_OK, "closed locally (the peer did not answer %s within %.3g s)",
               t->ssl ? "close_notify" : "with its FIN", weft__tls_close_timeout(t->tls.options));
  }
}

/* --- proceeding through the states --------------------------------------------------------- */

static void become_ready(weft_transport *t) {
  if (t->connector) {
    struct weft_connector *c = t->connector;
    t->connector = NULL;
    weft__connector_handshake_done(c, NULL);
  }
  t->state = WEFT__T_OPEN;
  if (t->write_timeout > 0)
    (void)apply_write_timeout(t); /* the listener's default; the protocol may change it */
  weft_protocol *p = t->factory->build_protocol(t->factory, t, (struct sockaddr *)&t->peer);
  if (t->state == WEFT__T_CLOSED)
    return; /* build_protocol aborted the connection itself */
  if (!p || !p->ops) {
    /* Refused: close quietly (close_notify for TLS); nobody gets connection_lost. */
    if (t->ssl)
      send_close_notify(t);
    close_with(t, WEFT_EREFUSED, "%s", weft_strerror(WEFT_EREFUSED));
    return;
  }
  t->protocol = p;
  t->made = 1;
  if (p->ops->connection_made)
    p->ops->connection_made(p, t);
}

/* lose_connection, once output is flushed. */
static void proceed_close(weft_transport *t) {
  if (!t->ssl) {
    shutdown(t->fd, SHUT_WR);
    if (t->eof_seen) {
      close_with(t, WEFT_OK, "connection closed locally");
      return;
    }
    /* Closing a socket with unread input makes the kernel send a RST, which destroys what is
     * still in flight to the peer. So send our FIN, then read (and discard) until the peer's
     * FIN, for at most the close timeout. */
    t->shutdown_sent = 1;
    bufferevent_enable(t->bev, EV_READ);
    arm_timer(t, weft__tls_close_timeout(NULL));
    return;
  }
  double wait = weft__tls_close_timeout(t->tls.options);
  if (send_close_notify(t) || wait <= 0) {
    close_with(t, WEFT_OK, "TLS connection closed locally (close_notify sent)");
    return;
  }
  arm_timer(t, wait);
}

/* Each piece leaves the input buffer (moved, not copied) before data_received sees it, and the
 * loop stops if the bufferevent changed: a STARTTLS upgrade from inside data_received must hand
 * the TLS engine only the bytes after the piece that asked for it, never that piece again, and
 * bytes left in the old input buffer are TLS records, not plaintext for the protocol. */
static void deliver_input(weft_transport *t) {
  struct bufferevent *bev = t->bev;
  struct evbuffer *in = bufferevent_get_input(bev);
  struct evbuffer *piece = NULL;
  while (t->state == WEFT__T_OPEN && t->made && !t->read_paused && !t->starttls &&
         t->bev == bev) {
    struct evbuffer_iovec v;
    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
      break;
    if (t->ssl) {
      /* A TLS transport can never be upgraded again (start_tls says WEFT_EBUSY), so the
       * piece is handed over where it lies and drained afterwards: no copy, no allocation. */
      size_t len = v.iov_len;
      t->in_callback++;
      if (t->protocol->ops->data_received)
        t->protocol->ops->data_received(t->protocol, t, v.iov_base, len);
      t->in_callback--;
      if (t->bev == bev)
        evbuffer_drain(in, len);
      continue;
    }
    if (!piece && !(piece = evbuffer_new()))
      break; /* out of memory: the bytes stay buffered until the next read event */
    if (evbuffer_remove_buffer(in, piece, v.iov_len) != (int)v.iov_len ||
        evbuffer_peek(piece, -1, NULL, &v, 1) < 1) {
      evbuffer_drain(piece, evbuffer_get_length(piece));
      break;
    }
    t->in_callback++;
    if (t->protocol->ops->data_received)
      t->protocol->ops->data_received(t->protocol, t, v.iov_base, v.iov_len);
    t->in_callback--;
    evbuffer_drain(piece, evbuffer_get_length(piece));
  }
  if (piece)
    evbuffer_free(piece);
  if ((t->state == WEFT__T_CLOSING || t->state == WEFT__T_CLOSED) && t->bev == bev)
    evbuffer_drain(in, evbuffer_get_length(in));
}

/* Read-ahead (set on TLS sockets, see transport_start) lets OpenSSL take several records in
 * one read(2). libevent 2.1.12's bufferevent_openssl stops once SSL_pending() is 0, which
 * counts only the rest of the record being returned: whole records read ahead would wait in
 * OpenSSL's buffer for a readable event that may never come. SSL_has_pending() sees them; run
 * the bufferevent's read callback again, from the loop, to take them. */
static void check_read_ahead(weft_transport *t) {
  if (t->tls_socket && t->state == WEFT__T_OPEN && !t->read_paused && SSL_has_pending(t->ssl))
    event_active(&t->bev->ev_read, EV_READ, 1);
}

static void on_read(struct bufferevent *bev, void *arg) {
  (void)bev;
  deliver_input(arg);
  check_read_ahead(arg);
}

static void on_resume(evutil_socket_t fd, short what, void *arg) {
  weft_transport *t = arg;
  (void)fd;
  (void)what;
  if (t->ssl && t->state == WEFT__T_OPEN && !t->read_paused) {
    /* Bytes OpenSSL already decrypted wait in the SSL, and the socket may never become
     * readable again: pull them into the input buffer ourselves. */
    char buf[16384];
    int n;
    while (SSL_pending(t->ssl) > 0 && (n = SSL_read(t->ssl, buf, sizeof buf)) > 0)
      evbuffer_add(bufferevent_get_input(t->bev), buf, (size_t)n);
    ERR_clear_error();
  }
  deliver_input(t);
  check_read_ahead(t);
}

static void on_write(struct bufferevent *bev, void *arg) {
  weft_transport *t = arg;
  size_t pending = evbuffer_get_length(bufferevent_get_output(bev));
  if (t->state == WEFT__T_CLOSING) {
    if (pending == 0 && !t->shutdown_sent)
      proceed_close(t);
    return;
  }
  if (t->state != WEFT__T_OPEN)
    return;
  if (t->half_close_pending && pending == 0) {
    t->half_close_pending = 0;
    t->half_closed = 1;
    shutdown(t->fd, SHUT_WR);
  }
  if (t->above_low_water && pending <= t->low_water) {
    t->above_low_water = 0;
    if (t->made && t->protocol->ops->write_drained)
      t->protocol->ops->write_drained(t->protocol, t);
  }
}

static void on_eof(weft_transport *t) {
  t->eof_seen = 1;
  if (t->state == WEFT__T_CLOSING) {
    close_with(t, WEFT_OK, t->ssl ? "TLS connection closed locally (close_notify exchanged)"
                                  : "connection closed locally");
    return;
  }
  if (t->ssl) {
    if (t->state == WEFT__T_HANDSHAKING || !(SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN)) {
      tls_failed(t, 0);
      return;
    }
    send_close_notify(t);
    close_with(t, WEFT_OK, "the peer closed the TLS connection cleanly (close_notify)");
    return;
  }
  /* TCP: the peer closed its write side. */
  if (t->made && t->protocol->ops->read_eof && !t->half_closed) {
    int keep = t->protocol->ops->read_eof(t->protocol, t);
    if (t->state != WEFT__T_OPEN)
      return;
    if (keep) {
      bufferevent_disable(t->bev, EV_READ);
      return;
    }
  }
  close_with(t, WEFT_OK, "connection closed by the peer");
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  weft_transport *t = arg;
  (void)bev;
  int err = (what & BEV_EVENT_ERROR) ? sys_error_of(t) : 0;
  if (what & BEV_EVENT_CONNECTED) {
    if (t->ssl && (t->state == WEFT__T_HANDSHAKING || t->starttls))
      handshake_complete(t);
    return;
  }
  if (what & BEV_EVENT_EOF) {
    on_eof(t);
    return;
  }
  if (what & BEV_EVENT_TIMEOUT) {
    /* Only the write time-out is ever set (weft_transport_set_write_timeout): output has
     * waited that long without the socket taking a byte. Also while lose_connection flushes,
     * and during a STARTTLS handshake, whose protocol then hears of it in tls_started. */
    if ((what & BEV_EVENT_WRITING) && t->write_timeout > 0 && t->state != WEFT__T_CLOSED) {
      weft__reason_set(&t->reason, WEFT_ETIMEDOUT,
                       "write timed out: the peer read nothing for %.3g s", t->write_timeout);
      end_handshake_failed(t);
    }
    return;
  }
  if (!(what & BEV_EVENT_ERROR))
    return;
  if (t->state == WEFT__T_CLOSING && t->shutdown_sent) {
    close_with(t, WEFT_OK, "%s", t->ssl ? "TLS connection closed locally (close_notify sent)"
                                         : "connection closed locally (FIN sent)");
    return;
  }
  if (t->ssl) {
    tls_failed(t, err);
    return;
  }
  int code = err ? weft__errno_to_code(err) : WEFT_ECONNLOST;
  close_with(t, code, "%s%s%s", weft_strerror(code), err ? ": " : "", err ? strerror(err) : "");
}

/* --- creation ------------------------------------------------------------------------------ */

static int setup_tls(weft_transport *t, weft_cert_options *options, weft_tls_role role,
                     const char *server_name) {
  t->tls.alert_received = t->tls.alert_sent = -1;
  t->tls.role = role;
  t->tls.options = weft_cert_options_ref(options);
  if (server_name && !(t->server_name = weft__strdup(server_name)))
    return WEFT_ENOMEM;
  t->tls.server_name = t->server_name;
  t->tls.peer = t->peer_len ? (const struct sockaddr *)&t->peer : NULL; /* session cache key */
  return weft__tls_new_ssl(options, role, t->server_name, &t->tls, &t->ssl, &t->reason);
}

static int transport_start(weft_reactor *reactor, evutil_socket_t fd, const struct sockaddr *peer,
                           socklen_t peer_len, weft_factory *factory, weft_cert_options *options,
                           weft_tls_role role, const char *server_name,
                           struct weft_connector *connector, struct weft_listener *listener,
                           double write_timeout) {
  weft_transport *t = weft__calloc(1, sizeof *t);
  if (!t) {
    close(fd);
    return WEFT_ENOMEM;
  }
  t->reactor = reactor;
  t->fd = fd;
  t->factory = factory;
  t->is_client = role == WEFT_TLS_CLIENT;
  t->state = options ? WEFT__T_HANDSHAKING : WEFT__T_OPEN;
  t->write_timeout = write_timeout;
  weft__reactor_add_transport(reactor, t);
  /* Counted from here: transport_free uncounts it, on every path including failure below. */
  t->listener = listener;
  if (listener)
    weft__listener_connection_opened(listener);

  if (peer && peer_len <= sizeof t->peer) {
    memcpy(&t->peer, peer, peer_len);
    t->peer_len = peer_len;
  } else {
    t->peer_len = sizeof t->peer;
    if (getpeername(fd, (struct sockaddr *)&t->peer, &t->peer_len) != 0)
      t->peer_len = 0;
  }
  t->host_len = sizeof t->host;
  if (getsockname(fd, (struct sockaddr *)&t->host, &t->host_len) != 0)
    t->host_len = 0;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* Already non-blocking: the listener accepts with accept4(SOCK_NONBLOCK) (libevent's
   * evconnlistener) and the connector creates its sockets with SOCK_NONBLOCK. */

  int rc = WEFT_ENOMEM;
  t->finish_event = event_new(reactor->base, -1, 0, on_finish, t);
  t->resume_event = event_new(reactor->base, -1, 0, on_resume, t);
  t->timer = evtimer_new(reactor->base, on_timer, t);
  if (!t->finish_event || !t->resume_event || !t->timer)
    goto fail;
  if (options) {
    rc = setup_tls(t, options, role, server_name);
    if (rc != 0)
      goto fail;
    /* One read(2) per burst of records instead of two per record (header, then body); see
     * check_read_ahead for the catch. Writes may be retried from another address (the
     * bufferevent retries one that write_through left unfinished). */
    SSL_set_read_ahead(t->ssl, 1);
    SSL_set_mode(t->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    t->tls_socket = 1;
    t->bev = bufferevent_openssl_socket_new(
        reactor->base, fd, t->ssl,
        role == WEFT_TLS_SERVER ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
        BEV_OPT_CLOSE_ON_FREE);
    if (!t->bev) {
      /* With BEV_OPT_CLOSE_ON_FREE, libevent frees the SSL itself when it fails (its socket
       * BIO does not own the descriptor, which the failure path below closes). */
      t->ssl = NULL;
      rc = WEFT_ENOMEM;
      goto fail;
    }
    arm_timer(t, weft__tls_handshake_timeout(options));
  } else {
    t->bev = bufferevent_socket_new(reactor->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!t->bev)
      goto fail;
  }
  t->connector = connector;
  if (connector && options)
    weft__connector_attach(connector, t);
  bufferevent_setcb(t->bev, on_read, on_write, on_event, t);
  bufferevent_enable(t->bev, EV_READ | EV_WRITE);
  if (!options)
    become_ready(t);
  return 0;

fail:
  t->connector = NULL;
  weft__reactor_remove_transport(reactor, t);
  if (t->bev) {
    bufferevent_free(t->bev);
  } else {
    close(fd);
  }
  t->bev = NULL;
  t->fd = -1;
  weft__reactor_add_transport(reactor, t); /* transport_free removes it again */
  transport_free(t);
  return rc;
}

int weft__transport_start(weft_reactor *reactor, evutil_socket_t fd, const struct sockaddr *peer,
                          socklen_t peer_len, weft_factory *factory, weft_cert_options *options,
                          weft_tls_role role, const char *server_name,
                          struct weft_connector *connector) {
  return transport_start(reactor, fd, peer, peer_len, factory, options, role, server_name,
                         connector, NULL, 0);
}

int weft__transport_accept(weft_reactor *reactor, struct weft_listener *listener,
                           evutil_socket_t fd, const struct sockaddr *peer, socklen_t peer_len,
                           weft_factory *factory, weft_cert_options *options,
                           double write_timeout) {
  int rc = transport_start(reactor, fd, peer, peer_len, factory, options, WEFT_TLS_SERVER, NULL,
                           NULL, listener, write_timeout);
  /* The descriptor is closed already. Nobody else hears of this connection: tell the factory,
   * from the loop (we are in the listener's accept callback). */
  if (rc != 0 && factory->handshake_failed) {
    weft__reason_buf reason;
    weft__reason_set(&reason, rc, "could not set up an accepted connection: %s",
                     weft_strerror(rc));
    factory->handshake_failed(factory, peer, &reason.reason);
  }
  return rc;
}

void weft__transport_forget_listener(weft_reactor *reactor, struct weft_listener *listener) {
  weft_transport *t;
  TAILQ_FOREACH(t, &reactor->transports, link) {
    if (t->listener == listener)
      t->listener = NULL;
  }
}

void weft__transport_cancel_handshake(weft_transport *t) {
  if (t->state == WEFT__T_HANDSHAKING)
    close_with(t, WEFT_ECANCELED, "connection attempt canceled during the TLS handshake");
}

/* --- the public transport API ------------------------------------------------------------- */

static int writable(weft_transport *t) {
  if (!t)
    return WEFT_EINVAL;
  if (t->write_closed || t->state != WEFT__T_OPEN)
    return WEFT_ECLOSED;
  return 0;
}

static void note_pending(weft_transport *t) {
  if (evbuffer_get_length(bufferevent_get_output(t->bev)) > t->low_water)
    t->above_low_water = 1;
}

/* The largest write that write_through takes: one TLS record. */
#define WRITE_THROUGH_MAX 16384

/* A TLS socket with nothing queued: the bytes go to SSL_write now. Queued instead, the
 * bufferevent would arm its write event, wait a loop iteration for the socket to be writable,
 * write, and disarm the event again: two epoll_ctl(2) calls and one more epoll_wait(2) per
 * response. Returns 1 when it took the bytes (sent; or left to the bufferevent to finish; or,
 * on a fatal error, reported as lost through connection_lost), 0 when the caller queues them. */
static int write_through(weft_transport *t, const void *data, size_t len) {
  /* Socket mode only: under a STARTTLS filter the SSL writes into another bufferevent. */
  if (!t->tls_socket || !t->tls.handshake_done || len == 0 || len > WRITE_THROUGH_MAX)
    return 0;
  struct evbuffer *out = bufferevent_get_output(t->bev);
  /* Something queued (or OpenSSL holding a record half-written): keep the order, queue. */
  if (evbuffer_get_length(out) != 0 || SSL_want_write(t->ssl))
    return 0;
  ERR_clear_error();
  errno = 0;
  int n = SSL_write(t->ssl, data, (int)len);
  if (n == (int)len)
    return 1;
  int err = SSL_get_error(t->ssl, n);
  if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
    /* OpenSSL keeps the record it could not finish; the bufferevent's retry must pass the same
     * bytes, which is what it finds at the head of its (empty until now) output buffer. */
    ERR_clear_error();
    if (evbuffer_add(out, data, len) == 0)
      return 1;
    weft__reason_set(&t->reason, WEFT_ENOMEM, "out of memory queueing a TLS write");
    end_handshake_failed(t);
    return 1;
  }
  tls_failed(t, err == SSL_ERROR_SYSCALL ? errno : 0);
  return 1;
}

int weft_transport_write(weft_transport *transport, const void *data, size_t len) {
  int rc = writable(transport);
  if (rc != 0)
    return rc;
  if (len == 0)
    return 0;
  if (!data)
    return WEFT_EINVAL;
  if (write_through(transport, data, len))
    return 0;
  if (bufferevent_write(transport->bev, data, len) != 0)
    return WEFT_ENOMEM;
  note_pending(transport);
  return 0;
}

typedef struct release_ctx {
  weft_release_fn release;
  void *arg;
} release_ctx;

static void release_reference(const void *data, size_t len, void *arg) {
  release_ctx ctx = *(release_ctx *)arg;
  weft__free(arg);
  if (ctx.release)
    ctx.release(data, len, ctx.arg);
}

int weft_transport_write_reference(weft_transport *transport, const void *data, size_t len,
                                   weft_release_fn release, void *arg) {
  int rc = writable(transport);
  if (rc != 0)
    return rc;
  if (len > 0 && !data)
    return WEFT_EINVAL;
  if (len == 0 || write_through(transport, data, len)) {
    /* Sent (or, if OpenSSL must finish the record later, copied: see write_through). */
    if (release)
      release(data, len, arg);
    return 0;
  }
  /* The bufferevent reads the bytes in place; libevent's cleanup takes one pointer, so the
   * caller's pair travels in a small block (none at all for RELEASE NULL). */
  release_ctx *ctx = NULL;
  if (release) {
    if (!(ctx = weft__malloc(sizeof *ctx)))
      return WEFT_ENOMEM;
    ctx->release = release;
    ctx->arg = arg;
  }
  if (evbuffer_add_reference(bufferevent_get_output(transport->bev), data, len,
                             release ? release_reference : NULL, ctx) != 0) {
    weft__free(ctx);
    return WEFT_ENOMEM;
  }
  note_pending(transport);
  return 0;
}

int weft_transport_write_sequence(weft_transport *transport, const weft_buf *bufs, size_t count) {
  int rc = writable(transport);
  if (rc != 0)
    return rc;
  if (count > 0 && !bufs)
    return WEFT_EINVAL;
  for (size_t i = 0; i < count; i++)
    if (bufs[i].len > 0 && !bufs[i].base)
      return WEFT_EINVAL;
  size_t total = 0;
  for (size_t i = 0; i < count; i++) {
    if (bufs[i].len > SIZE_MAX - total)
      return WEFT_EINVAL;
    total += bufs[i].len;
  }
  if (total == 0)
    return 0;
  if (total <= WRITE_THROUGH_MAX && transport->tls_socket) {
    char gather[WRITE_THROUGH_MAX]; /* one record: header and body leave together */
    size_t at = 0;
    for (size_t i = 0; i < count; i++) {
      if (bufs[i].len > 0)
        memcpy(gather + at, bufs[i].base, bufs[i].len);
      at += bufs[i].len;
    }
    if (!write_through(transport, gather, total)) {
      if (bufferevent_write(transport->bev, gather, total) != 0)
        return WEFT_ENOMEM;
      note_pending(transport);
    }
    return 0;
  }
  /* All or nothing: room for every byte first, so that no add below can fail half-way. */
  struct evbuffer *out = bufferevent_get_output(transport->bev);
  if (evbuffer_expand(out, total) != 0)
    return WEFT_ENOMEM;
  for (size_t i = 0; i < count; i++) {
    if (bufs[i].len > 0 && evbuffer_add(out, bufs[i].base, bufs[i].len) != 0)
      return WEFT_ENOMEM; /* cannot happen after the expand above */
  }
  note_pending(transport);
  return 0;
}

int weft_transport_lose_connection(weft_transport *transport) {
  if (!transport)
    return WEFT_EINVAL;
  weft_transport *t = transport;
  if (t->state == WEFT__T_CLOSING || t->state == WEFT__T_CLOSED)
    return 0;
  if (t->state == WEFT__T_HANDSHAKING) {
    close_with(t, WEFT_ECANCELED, "connection closed locally during the TLS handshake");
    return 0;
  }
  t->state = WEFT__T_CLOSING;
  t->write_closed = 1;
  bufferevent_setwatermark(t->bev, EV_WRITE, 0, 0);
  if (evbuffer_get_length(bufferevent_get_output(t->bev)) == 0)
    proceed_close(t);
  return 0;
}

int weft_transport_abort_connection(weft_transport *transport) {
  if (!transport)
    return WEFT_EINVAL;
  if (transport->state == WEFT__T_CLOSED)
    return 0;
  close_with(transport, WEFT_EABORTED, "%s", weft_strerror(WEFT_EABORTED));
  return 0;
}

int weft_transport_half_close(weft_transport *transport) {
  int rc = writable(transport);
  if (rc != 0)
    return rc;
  if (transport->ssl)
    return WEFT_ENOTSUP;
  transport->write_closed = 1;
  if (evbuffer_get_length(bufferevent_get_output(transport->bev)) == 0) {
    transport->half_closed = 1;
    shutdown(transport->fd, SHUT_WR);
  } else {
    transport->half_close_pending = 1;
  }
  return 0;
}

int weft_transport_pause_reading(weft_transport *transport) {
  if (!transport)
    return WEFT_EINVAL;
  if (transport->state == WEFT__T_CLOSED)
    return WEFT_ECLOSED;
  transport->read_paused = 1;
  event_del(transport->resume_event);
  bufferevent_disable(transport->bev, EV_READ);
  return 0;
}

int weft_transport_resume_reading(weft_transport *transport) {
  if (!transport)
    return WEFT_EINVAL;
  if (transport->state == WEFT__T_CLOSED)
    return WEFT_ECLOSED;
  if (!transport->read_paused)
    return 0;
  transport->read_paused = 0;
  if (!transport->eof_seen)
    bufferevent_enable(transport->bev, EV_READ);
  /* Deliver what was buffered while paused from the loop, not from inside this call. */
  event_active(transport->resume_event, EV_TIMEOUT, 1);
  return 0;
}

size_t weft_transport_pending_output(weft_transport *transport) {
  if (!transport || !transport->bev)
    return 0;
  return evbuffer_get_length(bufferevent_get_output(transport->bev));
}

int weft_transport_set_write_low_water(weft_transport *transport, size_t low) {
  if (!transport)
    return WEFT_EINVAL;
  if (transport->state == WEFT__T_CLOSED)
    return WEFT_ECLOSED;
  transport->low_water = low;
  if (transport->state != WEFT__T_CLOSING)
    bufferevent_setwatermark(transport->bev, EV_WRITE, low, 0);
  return 0;
}

int weft_transport_set_write_timeout(weft_transport *transport, double seconds) {
  if (!transport || !(seconds >= 0 && seconds <= 1e6)) /* also refuses NaN */
    return WEFT_EINVAL;
  if (transport->state == WEFT__T_CLOSED)
    return WEFT_ECLOSED;
  transport->write_timeout = seconds;
  return apply_write_timeout(transport);
}

int weft_transport_set_nodelay(weft_transport *transport, int on) {
  if (!transport)
    return WEFT_EINVAL;
  if (transport->state == WEFT__T_CLOSED)
    return WEFT_ECLOSED;
  int v = on ? 1 : 0;
  return setsockopt(transport->fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) == 0
             ? 0
             : weft__errno_to_code(errno);
}

int weft_transport_set_keepalive(weft_transport *transport, int on, int idle_seconds) {
  if (!transport || idle_seconds < 0)
    return WEFT_EINVAL;
  if (transport->state == WEFT__T_CLOSED)
    return WEFT_ECLOSED;
  int v = on ? 1 : 0;
  if (setsockopt(transport->fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v) != 0)
    return weft__errno_to_code(errno);
#ifdef TCP_KEEPIDLE
  if (on && idle_seconds > 0 &&
      setsockopt(transport->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_seconds, sizeof idle_seconds) != 0)
    return weft__errno_to_code(errno);
#endif
  return 0;
}

static int copy_address(const struct sockaddr_storage *ss, socklen_t sslen, struct sockaddr *addr,
                        socklen_t *len) {
  if (!addr || !len || sslen == 0 || *len < sslen)
    return WEFT_EINVAL;
  memcpy(addr, ss, sslen);
  *len = sslen;
  return 0;
}

int weft_transport_peer_address(weft_transport *transport, struct sockaddr *addr, socklen_t *len) {
  if (!transport)
    return WEFT_EINVAL;
  return copy_address(&transport->peer, transport->peer_len, addr, len);
}

int weft_transport_host_address(weft_transport *transport, struct sockaddr *addr, socklen_t *len) {
  if (!transport)
    return WEFT_EINVAL;
  return copy_address(&transport->host, transport->host_len, addr, len);
}

const char *weft_address_format(const struct sockaddr *addr, char *buf, size_t size) {
  char ip[INET6_ADDRSTRLEN];
  if (!buf || size == 0)
    return "?";
  if (addr && addr->sa_family == AF_INET) {
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)addr;
    inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
    snprintf(buf, size, "%s:%u", ip, (unsigned)ntohs(v4->sin_port));
  } else if (addr && addr->sa_family == AF_INET6) {
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
    inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip);
    snprintf(buf, size, "[%s]:%u", ip, (unsigned)ntohs(v6->sin6_port));
  } else {
    snprintf(buf, size, "?");
  }
  return buf;
}

weft_reactor *weft_transport_reactor(weft_transport *transport) {
  return transport ? transport->reactor : NULL;
}

weft_protocol *weft_transport_protocol(weft_transport *transport) {
  return transport ? transport->protocol : NULL;
}

int weft_transport_is_tls(weft_transport *transport) {
  return transport && transport->ssl && transport->tls.handshake_done;
}

const uint8_t *weft_transport_next_protocol(weft_transport *transport, size_t *len) {
  if (len)
    *len = transport ? transport->next_proto_len : 0;
  return transport ? transport->next_proto : NULL;
}

weft_negotiation_mechanism weft_transport_negotiation_mechanism(weft_transport *transport) {
  return transport ? transport->mechanism : WEFT_NEGOTIATED_NONE;
}

const char *weft_transport_tls_version(weft_transport *transport) {
  return weft_transport_is_tls(transport) ? SSL_get_version(transport->ssl) : NULL;
}

const char *weft_transport_tls_cipher(weft_transport *transport) {
  if (!weft_transport_is_tls(transport))
    return NULL;
  const SSL_CIPHER *c = SSL_get_current_cipher(transport->ssl);
  return c ? SSL_CIPHER_get_name(c) : NULL;
}

int weft_transport_tls_session_reused(weft_transport *transport) {
  return weft_transport_is_tls(transport) && SSL_session_reused(transport->ssl);
}

X509 *weft_transport_peer_certificate(weft_transport *transport) {
  return weft_transport_is_tls(transport) ? SSL_get0_peer_certificate(transport->ssl) : NULL;
}

SSL *weft_transport_ssl(weft_transport *transport) {
  return transport ? transport->ssl : NULL;
}

static int peer_cert_for(weft_transport *transport, char *buf, size_t size, X509 **out) {
  if (!transport || !buf || size == 0)
    return WEFT_EINVAL;
  if (!weft_transport_is_tls(transport))
    return WEFT_ENOTTLS;
  *out = SSL_get0_peer_certificate(transport->ssl);
  return *out ? 0 : WEFT_ENOPEERCERT;
}

static int print_name(X509_NAME *name, char *buf, size_t size) {
  BIO *bio = BIO_new(BIO_s_mem());
  if (!bio)
    return WEFT_ENOMEM;
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
  char *data;
  long n = BIO_get_mem_data(bio, &data);
  int rc = 0;
  if (n < 0 || (size_t)n >= size) {
    rc = WEFT_ENOMEM;
  } else {
    memcpy(buf, data, (size_t)n);
    buf[n] = '\0';
  }
  BIO_free(bio);
  return rc;
}

int weft_transport_peer_subject(weft_transport *transport, char *buf, size_t size) {
  X509 *cert;
  int rc = peer_cert_for(transport, buf, size, &cert);
  return rc ? rc : print_name(X509_get_subject_name(cert), buf, size);
}

int weft_transport_peer_issuer(weft_transport *transport, char *buf, size_t size) {
  X509 *cert;
  int rc = peer_cert_for(transport, buf, size, &cert);
  return rc ? rc : print_name(X509_get_issuer_name(cert), buf, size);
}

int weft_transport_peer_fingerprint(weft_transport *transport, char *buf, size_t size) {
  X509 *cert;
  int rc = peer_cert_for(transport, buf, size, &cert);
  if (rc)
    return rc;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!X509_digest(cert, EVP_sha256(), md, &n))
    return WEFT_ETLS;
  if (size < (size_t)n * 3)
    return WEFT_ENOMEM;
  for (unsigned int i = 0; i < n; i++)
    snprintf(buf + i * 3, 4, "%02X%s", md[i], i + 1 < n ? ":" : "");
  return 0;
}

int weft_transport_start_tls(weft_transport *transport, weft_cert_options *options,
                             weft_tls_role role, const char *server_name) {
  if (!transport || !options || (role != WEFT_TLS_CLIENT && role != WEFT_TLS_SERVER))
    return WEFT_EINVAL;
  weft_transport *t = transport;
  if (t->ssl)
    return WEFT_EBUSY;
  if (t->write_closed || t->state != WEFT__T_OPEN)
    return WEFT_ECLOSED;
  int rc = weft_cert_options_prepare(options, role);
  if (rc != 0)
    return rc;
  rc = setup_tls(t, options, role, server_name);
  if (rc != 0) {
    weft_cert_options_unref(t->tls.options);
    t->tls.options = NULL;
    weft__free(t->server_name);
    t->server_name = NULL;
    return rc;
  }
  /* A filter over the plain bufferevent: clear output already queued goes out first, and
   * bytes already read past the upgrade point are fed to the TLS engine. */
  struct bufferevent *tls = bufferevent_openssl_filter_new(
      t->reactor->base, t->bev, t->ssl,
      role == WEFT_TLS_SERVER ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
      BEV_OPT_CLOSE_ON_FREE);
  if (!tls) {
    t->ssl = NULL; /* freed by libevent on failure (BEV_OPT_CLOSE_ON_FREE) */
    return WEFT_ENOMEM;
  }
  /* Report the plain bufferevent's EOF as EOF (not as an error with no reason): on_eof tells
   * a clean close_notify from a truncated stream itself. */
  bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
  /* The filter encrypts into the socket bufferevent below as fast as it is handed plaintext.
   * Without a high-water mark there, every byte written would leave the filter's output at
   * once: pending_output would read 0, write_drained would never hold a producer back, and a
   * peer that does not read would make weft buffer without bound. With the mark, the filter
   * stops at it and the plaintext waits in its output, where pending_output counts it. */
  bufferevent_setwatermark(t->bev, EV_WRITE, 0, WEFT__STARTTLS_SOCKET_HIGH);
  t->bev = tls;
  t->starttls = 1;
  bufferevent_setcb(t->bev, on_read, on_write, on_event, t);
  bufferevent_setwatermark(t->bev, EV_WRITE, t->low_water, 0);
  if (t->write_timeout > 0)
    (void)apply_write_timeout(t); /* the socket bufferevent below keeps its own already */
  bufferevent_enable(t->bev, t->read_paused ? EV_WRITE : EV_READ | EV_WRITE);
  arm_timer(t, weft__tls_handshake_timeout(options));
  return 0;
}
