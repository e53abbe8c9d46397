/* The transport: one type for TCP and TLS connections. It owns the bufferevent (and, for TLS,
 * the SSL through it), delivers the protocol's callbacks, and ends every connection through one
 * path (close_now + on_finish) so that connection_lost runs exactly once, from the loop. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "alloc-internal.h"
#include "transport-internal.h"
#include "log-internal.h"
#include <weft/timeout.h>

/* STARTTLS: ciphertext the socket bufferevent under a TLS filter may hold (see start_tls). */
#define WEFT__STARTTLS_SOCKET_HIGH ((size_t)64 << 10)

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void become_ready(weft_transport *t);
static void end_handshake_failed(weft_transport *t);
static void proceed_close(weft_transport *t);
static int send_close_notify(weft_transport *t);
static void deliver_input(weft_transport *t);
static void check_read_ahead(weft_transport *t);
static void on_eof(weft_transport *t);
static void start_filter(weft_transport *t, struct bufferevent *tls);

/* --- the reason a connection ended ------------------------------------------------------- */

/* Sets T's reason from BUF (code, TLS fields, message). The message is copied into a block of
 * its own, made now: an open connection holds none. Without memory for it, the message is
 * weft_strerror(code): the code and the TLS fields are never lost. */
static void reason_adopt(weft_transport *t, const weft__reason_buf *buf) {
  if (t->reason_owned)
    weft__free((char *)t->reason.message);
  t->reason = buf->reason;
  size_t len = strlen(buf->msg) + 1;
  char *msg = weft__malloc(len);
  t->reason_owned = msg != NULL;
  if (msg)
    t->reason.message = memcpy(msg, buf->msg, len);
  else
    t->reason.message = weft_strerror(buf->reason.code);
}

/* Sets T's reason to CODE and the formatted message (see reason_adopt). */
static void set_reason(weft_transport *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_reason(weft_transport *t, int code, const char *fmt, ...) {
  weft__reason_buf buf;
  weft__reason_set(&buf, code, "%s", "");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf.msg, sizeof buf.msg, fmt, ap);
  va_end(ap);
  reason_adopt(t, &buf);
}

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

static void settle_releases(weft_transport *t);

/* Frees T and everything it holds (the socket too), whether it was registered or not. */
static void transport_release(weft_transport *t) {
  flush_filter_output(t);
  settle_releases(t);
  weft__idle_leave(&t->idle);
  if (t->shutdown_event)
    event_free(t->shutdown_event);
  if (t->flush_event)
    event_free(t->flush_event);
  if (t->timer)
    event_free(t->timer);
  weft__reactor_defer_cancel(t->reactor, &t->work);
  if (t->bev)
    bufferevent_free(t->bev); /* closes the socket, and frees the SSL for TLS */
  else if (t->fd >= 0)
    close(t->fd);
  if (t->tls.options)
    weft_cert_options_unref(t->tls.options);
  weft__free(t->server_name);
  weft__free(t->proxy_tlvs);
  weft__free(t->wide);
  if (t->reason_owned)
    weft__free((char *)t->reason.message);
  weft__free(t);
}

/* Unregisters and frees a transport that weft__transport_start returned. */
static void transport_free(weft_transport *t) {
  weft__reactor_remove_handle(t->reactor, &t->handle);
  transport_release(t);
}

/* Delivers the end of the connection to whoever must hear it, then frees the transport: the
 * protocol (connection_lost), or a server's factory (handshake_failed), then, once the
 * transport is gone, its owner (which may free itself, or resume accepting). */
static void deliver_end(weft_transport *t) {
  const weft_reason *reason = &t->reason;
  int made = t->made;
  if (!t->reason.message) /* (every path sets a reason before close_now; never without one) */
    t->reason.message = weft_strerror(t->reason.code);
  if (made && t->starttls) {
    /* A STARTTLS handshake was still under way and nothing told the protocol how it ended
     * (abort_connection, the reactor freed, ...): every successful start_tls gets exactly one
     * tls_started before connection_lost, with the same failure code. From the loop, like
     * connection_lost, never from inside the weft call that ended the connection. */
    t->starttls = 0;
    if (t->reason.code >= 0)
      set_reason(t, WEFT_ECONNLOST,
                       "the connection ended during the STARTTLS "
                       "handshake");
    if (t->protocol->ops->tls_started)
      t->protocol->ops->tls_started(t->protocol, t, reason->code);
  }
  if (t->helper.ended) /* before connection_lost, which may free what the helper uses */
    t->helper.ended(t->helper.arg, reason);
  if (made) {
    /* The ops as they are now: the protocol may have swapped its table at any time. */
    if (t->protocol->ops->connection_lost)
      t->protocol->ops->connection_lost(t->protocol, t, reason);
  } else if (!t->is_client && t->ssl && !t->tls.handshake_done && t->factory->handshake_failed) {
    t->factory->handshake_failed(t->factory, weft__transport_peer(t), reason);
  }
  weft__owner owner = t->owner;
  weft_reason last = t->reason; /* its message (if allocated) is taken over, freed below */
  char *owned = t->reason_owned ? (char *)t->reason.message : NULL;
  t->reason_owned = 0;
  transport_free(t);
  if (owner.closed)
    owner.closed(owner.arg, &last, made);
  weft__free(owned);
}

static void on_resume(weft_transport *t);

/* The transport's work from the loop: the end once it is due (it supersedes the rest: close_now
 * clears RESUME_DUE), otherwise the delivery of input held back. */
static void on_work(weft__deferred *work) {
  weft_transport *t = WEFT__CONTAINER_OF(work, weft_transport, work);
  if (t->finish_due) {
    deliver_end(t);
    return;
  }
  if (t->resume_due) {
    t->resume_due = 0;
    on_resume(t);
  }
}

/* Queues on_resume to run from the loop (input held back, or a close to proceed with). */
static void schedule_resume(weft_transport *t) {
  if (t->finish_due)
    return;
  t->resume_due = 1;
  weft__reactor_defer(t->reactor, &t->work);
}

static void cancel_resume(weft_transport *t) {
  t->resume_due = 0;
  if (!t->finish_due)
    weft__reactor_defer_cancel(t->reactor, &t->work);
}

/* Stops all I/O at once and schedules deliver_end from the loop. The reason must be set. The
 * bufferevent is kept until transport_free so that a callback running on it stays safe. */
static void close_now(weft_transport *t) {
  if (t->state == WEFT__T_CLOSED)
    return;
  t->state = WEFT__T_CLOSED;
  t->write_closed = 1;
  t->lingering = 0;
  if (t->drain_event) {
    event_free(t->drain_event);
    t->drain_event = NULL;
  }
  if (t->shutdown_event) {
    event_free(t->shutdown_event);
    t->shutdown_event = NULL;
  }
  if (t->flush_event) {
    event_free(t->flush_event);
    t->flush_event = NULL;
  }
  if (t->timer)
    event_del(t->timer);
  weft__idle_leave(&t->idle);
  t->resume_due = 0;
  if (t->bev) {
    bufferevent_setcb(t->bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(t->bev, EV_READ | EV_WRITE);
  }
  t->finish_due = 1;
  weft__reactor_defer(t->reactor, &t->work); /* (queued already for a resume: stays there) */
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
  set_reason(t, code, "%s", msg);
  close_now(t);
}

/* The reactor is being freed. Its handle ops, stop first for every transport (so that a
 * connection_lost that touches another transport sees it closed), then close. */
static void on_reactor_stop(weft__handle *handle) {
  weft_transport *t = WEFT__CONTAINER_OF(handle, weft_transport, handle);
  if (t->state != WEFT__T_CLOSED) {
    if (t->ssl && t->tls.handshake_done)
      send_close_notify(t); /* a clean TLS close, so the peer sees no truncation */
    set_reason(t, WEFT_ESHUTDOWN, "the reactor was freed");
    close_now(t);
  }
  /* delivered by on_reactor_close, not from the loop */
  weft__reactor_defer_cancel(t->reactor, &t->work);
}

static void on_reactor_close(weft__handle *handle) {
  deliver_end(WEFT__CONTAINER_OF(handle, weft_transport, handle));
}

static const weft__handle_ops transport_handle_ops = {on_reactor_stop, on_reactor_close};

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
  weft__reason_buf buf;
  weft__tls_classify(t->ssl, &t->tls, errs, n, sys_errno, t->eof_seen, &buf);
  reason_adopt(t, &buf);
  ERR_clear_error();
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

static struct timeval to_timeval(double seconds) {
  return (struct timeval){(time_t)seconds, (suseconds_t)((seconds - (time_t)seconds) * 1e6)};
}

/* Makes the timer if there is none (an open connection holds none, see handshake_complete).
 * Returns 0, or WEFT_ENOMEM. */
static int need_timer(weft_transport *t) {
  if (!t->timer && !(t->timer = evtimer_new(t->reactor->base, on_timer, t)))
    return WEFT_ENOMEM;
  return 0;
}

/* (Re)arms the handshake or close time-out. Returns 0, or WEFT_ENOMEM when there is no timer
 * and no memory to make one. */
static int arm_timer(weft_transport *t, double seconds) {
  if (need_timer(t) != 0)
    return WEFT_ENOMEM;
  struct timeval tv = to_timeval(seconds);
  evtimer_add(t->timer, &tv);
  return 0;
}

/* The handshake is over and no close is under way: nothing needs a time-out any more. */
static void drop_timer(weft_transport *t) {
  if (t->timer)
    event_free(t->timer);
  t->timer = NULL;
}

/* How long lose_connection waits for the peer's close_notify (TLS) or FIN (TCP) after sending
 * its own: weft_transport_set_close_timeout's, else the options' (TLS), else 5 s. */
static double close_wait(const weft_transport *t) {
  return t->close_timeout >= 0 ? t->close_timeout : weft__tls_close_timeout(t->tls.options);
}

/* Sends close_notify once. Returns 1 once the peer's close_notify has been received too. */
static void on_shutdown_writable(evutil_socket_t fd, short what, void *arg);

/* One SSL_shutdown. On a TLS socket whose send buffer is full, OpenSSL keeps the close_notify
 * record and asks to be called again once the socket is writable: nothing else would (the
 * bufferevent has no output left to write), so a one-shot write event retries it. Returns 1
 * once the peer's close_notify has been received too. */
static int shutdown_step(weft_transport *t) {
  /* Closing: nothing more to coalesce. What is staged leaves first (the BIO writes it before
   * the alert, or says WANT_WRITE while the socket is full). */
  if (t->bio)
    weft__tls_bio_set_staging(t->bio, 0);
  ERR_clear_error();
  int rc = SSL_shutdown(t->ssl);
  if (rc < 0 && SSL_get_error(t->ssl, rc) == SSL_ERROR_WANT_WRITE && t->tls_socket &&
      t->state != WEFT__T_CLOSED) {
    if (!t->shutdown_event)
      t->shutdown_event = event_new(t->reactor->base, t->fd, EV_WRITE, on_shutdown_writable, t);
    if (t->shutdown_event)
      event_add(t->shutdown_event, NULL); /* (out of memory: the close time-out still ends it) */
  }
  ERR_clear_error();
  return rc == 1;
}

/* 1 while the close_notify (and the staged records before it) waits for the socket. */
static int close_notify_waiting(const weft_transport *t) {
  return t->shutdown_event && event_pending(t->shutdown_event, EV_WRITE, NULL);
}

static void on_shutdown_writable(evutil_socket_t fd, short what, void *arg) {
  weft_transport *t = arg;
  (void)fd;
  (void)what;
  if (t->state == WEFT__T_CLOSED)
    return;
  (void)shutdown_step(t); /* the peer's answer arrives through the bufferevent, as usual */
  /* A close that does not wait for the peer (close time-out 0) waited for this write only. */
  if (t->state == WEFT__T_CLOSING && !close_notify_waiting(t) && close_wait(t) <= 0)
    close_with(t, WEFT_OK, "TLS connection closed locally (close_notify sent)");
}

static int send_close_notify(weft_transport *t) {
  if (t->shutdown_sent)
    return (SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN) != 0;
  t->shutdown_sent = 1;
  /* Under a STARTTLS filter, the socket bufferevent's high-water mark (see start_tls) could
   * refuse the alert, and nothing would send it later: nothing follows it, so lift the mark. */
  struct bufferevent *under = bufferevent_get_underlying(t->bev);
  if (under)
    bufferevent_setwatermark(under, EV_WRITE, 0, 0);
  return shutdown_step(t);
}

static void handshake_complete(weft_transport *t) {
  if (t->state != WEFT__T_CLOSING)
    drop_timer(t); /* CLOSING: the close time-out keeps running (lose_connection) */
  t->tls.handshake_done = 1;
  weft__reason_buf refused;
  if (weft__tls_check_negotiated(t->ssl, &t->tls, &refused)) {
    reason_adopt(t, &refused);
    end_handshake_failed(t); /* refused before build_protocol / tls_started(0) */
    return;
  }
  weft__tls_negotiated(t->ssl, &t->tls, &t->next_proto, &t->next_proto_len, &t->mechanism);
  if (t->bio && !t->shutdown_sent)
    weft__tls_bio_start_staging(t->bio, t->ssl); /* application data: records coalesce */
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
  /* lose_connection was called during the STARTTLS handshake (or from tls_started): now that
   * the TLS layer is up, flush what was written and send close_notify. */
  if (t->state == WEFT__T_CLOSING && !t->shutdown_sent &&
      evbuffer_get_length(bufferevent_get_output(t->bev)) == 0)
    proceed_close(t);
}

/* Reads and discards what the peer still sends after our fatal alert, until its EOF. */
static void on_drain(evutil_socket_t fd, short what, void *arg) {
  weft_transport *t = arg;
  (void)what;
  char buf[4096];
  for (int i = 0; i < 16; i++) { /* bounded per event: other connections get their turn */
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
      return;
    close_now(t); /* EOF or error: the peer has read the alert, or never will */
    return;
  }
}

/* A TLS server refused the handshake and sent a fatal alert (OpenSSL wrote it to the socket
 * already). Closing now, with the client's next flight (its Certificate, Finished, first data)
 * unread or still in flight, makes the kernel answer with a reset, and a client that writes
 * before it reads gets that reset instead of the alert. So do what lose_connection does: shut
 * down the write side (FIN after the alert), read and discard until the peer's EOF, for at most
 * the close time-out, then close. The factory's handshake_failed follows the close. Returns 1
 * when lingering (the reason is set), 0 when the caller closes at once. */
static int linger_after_alert(weft_transport *t) {
  if (!t->tls_socket || t->made || t->tls.handshake_done || t->tls.role != WEFT_TLS_SERVER ||
      t->tls.alert_sent < 0 || t->state != WEFT__T_HANDSHAKING || t->lingering || t->fd < 0)
    return 0;
  double wait = close_wait(t);
  if (wait <= 0 || need_timer(t) != 0)
    return 0;
  t->drain_event = event_new(t->reactor->base, t->fd, EV_READ | EV_PERSIST, on_drain, t);
  if (!t->drain_event || event_add(t->drain_event, NULL) != 0) {
    if (t->drain_event)
      event_free(t->drain_event);
    t->drain_event = NULL;
    return 0;
  }
  t->lingering = 1;
  t->write_closed = 1;
  bufferevent_setcb(t->bev, NULL, NULL, NULL, NULL);
  bufferevent_disable(t->bev, EV_READ | EV_WRITE);
  shutdown(t->fd, SHUT_WR);
  event_del(t->timer);
  (void)arm_timer(t, wait); /* (cannot fail: the timer exists, see need_timer above) */
  return 1;
}

/* The reason is set: tell a STARTTLS protocol its upgrade failed, then close. Inside
 * weft_transport_start_tls itself, deliver_end tells it later, from the loop. */
static void end_handshake_failed(weft_transport *t) {
  if (t->starttls && t->made && !t->starting_tls) {
    t->starttls = 0;
    if (t->protocol->ops->tls_started)
      t->protocol->ops->tls_started(t->protocol, t, t->reason.code);
  } else if (linger_after_alert(t)) {
    return;
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
  struct timeval tv = to_timeval(t->write_timeout);
  const struct timeval *write_tv = t->write_timeout > 0 ? &tv : NULL;
  int rc = bufferevent_set_timeouts(t->bev, NULL, write_tv);
  struct bufferevent *under = bufferevent_get_underlying(t->bev);
  if (under && bufferevent_set_timeouts(under, NULL, write_tv) != 0)
    rc = -1;
  /* Staged records waiting for the socket (flush_staged) wait under the same time-out. */
  if (t->flush_event && event_pending(t->flush_event, EV_WRITE, NULL) &&
      event_add(t->flush_event, write_tv) != 0)
    rc = -1;
  return rc == 0 ? 0 : WEFT_ENOMEM;
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
  weft_transport *t = arg;
  (void)fd;
  (void)what;
  if (t->lingering) {
    close_now(t); /* the peer did not close within the close time-out after our alert */
  } else if (!t->tls.handshake_done && t->ssl && t->state == WEFT__T_CLOSING) {
    set_reason(t, WEFT_ETIMEDOUT,
                     "closed locally during the STARTTLS handshake: it did not finish within "
                     "the close time-out (%.3g s); no close_notify sent",
                     close_wait(t));
    end_handshake_failed(t);
  } else if (!t->tls.handshake_done && t->ssl) {
    set_reason(t, WEFT_EHANDSHAKETIMEOUT, "TLS handshake timed out after %.3g s",
                     weft__tls_handshake_timeout(t->tls.options));
    end_handshake_failed(t);
  } else if (t->state == WEFT__T_CLOSING && !t->shutdown_sent) {
    /* Only after a lose_connection during a STARTTLS handshake: the time-out runs from the
     * call, and output was still waiting. */
    close_with(t, WEFT_ETIMEDOUT,
               "closed locally: output not flushed within the close "
               "time-out (%.3g s)",
               close_wait(t));
  } else if (t->state == WEFT__T_CLOSING && t->ssl && close_notify_waiting(t)) {
    close_with(t, WEFT_ETIMEDOUT,
               "closed locally: the close_notify could not be sent (the peer read nothing) "
               "within the close time-out");
  } else if (t->state == WEFT__T_CLOSING) {
    close_with(t, WEFT_OK, "closed locally (the peer did not answer %s within %.3g s)",
               t->ssl ? "close_notify" : "with its FIN", close_wait(t));
  }
}

/* --- proceeding through the states --------------------------------------------------------- */

/* The connection is ready: tell the owner, build the protocol, connection_made. A protocol
 * that build_protocol returned always gets connection_made and then connection_lost, even if
 * build_protocol closed the transport already (protocol.h rule 2): nothing leaks, and the
 * owner hears of the end like for any other connection. */
static void become_ready(weft_transport *t) {
  t->state = WEFT__T_OPEN;
  if (t->write_timeout > 0)
    (void)apply_write_timeout(t); /* the listener's default; the protocol may change it */
  if (t->owner.ready)
    t->owner.ready(t->owner.arg, t);
  weft_protocol *p = t->factory->build_protocol(t->factory, t, weft__transport_peer(t));
  if (!p || !p->ops) {
    /* Refused: close quietly (close_notify for TLS); nobody gets connection_lost. */
    if (t->ssl && t->state != WEFT__T_CLOSED)
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
    if (close_wait(t) <= 0) {
      close_with(t, WEFT_OK, "connection closed locally (FIN sent; not waiting for the peer's)");
      return;
    }
    /* Closing a socket with unread input makes the kernel send a RST, which destroys what is
     * still in flight to the peer. So send our FIN, then read (and discard) until the peer's
     * FIN, for at most the close timeout. */
    if (arm_timer(t, close_wait(t)) != 0) {
      /* No memory for the time-out that bounds the wait: close now rather than unbounded. */
      close_with(t, WEFT_OK, "connection closed locally (FIN sent)");
      return;
    }
    t->shutdown_sent = 1;
    bufferevent_enable(t->bev, EV_READ);
    return;
  }
  double wait = close_wait(t);
  if (send_close_notify(t) || (wait <= 0 && !close_notify_waiting(t))) {
    close_with(t, WEFT_OK, "TLS connection closed locally (close_notify sent)");
    return;
  }
  /* Not waiting for the peer, but the close_notify (or records staged before it) waits for a
   * full socket: closing now would drop them. on_shutdown_writable closes once they are out;
   * the options' close time-out (5 s if 0 there too) bounds the wait. */
  if (wait <= 0) {
    wait = weft__tls_close_timeout(t->tls.options);
    if (wait <= 0)
      wait = weft__tls_close_timeout(NULL); /* the default */
  }
  /* A lose_connection during a STARTTLS handshake armed the close time-out already: keep
   * that one deadline for the whole close. */
  if ((!t->timer || !evtimer_pending(t->timer, NULL)) && arm_timer(t, wait) != 0)
    close_with(t, WEFT_OK,
               "TLS connection closed locally (close_notify sent; no memory to "
               "wait for the peer's)");
}

/* Each piece leaves the input buffer (moved, not copied) before data_received sees it, and the
 * loop stops if the bufferevent changed: a STARTTLS upgrade from inside data_received must hand
 * the TLS engine only the bytes after the piece that asked for it, never that piece again, and
 * bytes left in the old input buffer are TLS records, not plaintext for the protocol. */
static void deliver_input(weft_transport *t) {
  struct bufferevent *bev = t->bev;
  struct evbuffer *in = bufferevent_get_input(bev);
  struct evbuffer *piece = NULL;
  while (t->state == WEFT__T_OPEN && t->made && !t->read_paused && !t->starttls && t->bev == bev) {
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

/* Moves what OpenSSL can decrypt from the bytes it already holds into the input buffer, without
 * reading the socket (SSL_read on a record that is not complete yet returns WANT_READ, and the
 * socket's read event brings the rest). Returns the number of bytes moved. */
static size_t pull_decrypted(weft_transport *t) {
  struct evbuffer *in = bufferevent_get_input(t->bev);
  size_t moved = 0;
  while (SSL_has_pending(t->ssl)) {
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(in, 16384, &v, 1) < 1)
      break;
    int n = SSL_read(t->ssl, v.iov_base, v.iov_len > INT_MAX ? INT_MAX : (int)v.iov_len);
    if (n <= 0) {
      /* A partial record: the socket's read event brings the rest. close_notify: the peer
       * may keep its socket open waiting for ours, so no event would report it: on_resume
       * does. A fatal error is met again by the bufferevent when the peer closes. */
      if (SSL_get_error(t->ssl, n) == SSL_ERROR_ZERO_RETURN)
        t->close_notify_pulled = 1;
      break;
    }
    v.iov_len = (size_t)n;
    if (evbuffer_commit_space(in, &v, 1) != 0)
      break;
    moved += (size_t)n;
  }
  if (ERR_peek_error() != 0)
    ERR_clear_error();
  return moved;
}

/* Read-ahead (set on TLS sockets, see transport_start) lets OpenSSL take several records in
 * one read(2). libevent 2.1.12's bufferevent_openssl stops once SSL_pending() is 0, which
 * counts only the rest of the record being returned: whole records read ahead would wait in
 * OpenSSL's buffer for a readable event that may never come. SSL_has_pending() sees them: they
 * are decrypted here and delivered from the loop (on_resume), like input held while paused. */
static void check_read_ahead(weft_transport *t) {
  if (t->tls_socket && t->state == WEFT__T_OPEN && !t->read_paused && SSL_has_pending(t->ssl) &&
      (pull_decrypted(t) > 0 || t->close_notify_pulled))
    schedule_resume(t);
}

static void on_read(struct bufferevent *bev, void *arg) {
  weft_transport *t = arg;
  (void)bev;
  if (t->idle.queue) /* a time stamp and an O(1) move, no timer work */
    weft__idle_touch(&t->idle, weft__reactor_now(t->reactor));
  deliver_input(t);
  check_read_ahead(t);
}

static void on_resume(weft_transport *t) {
  if (t->state == WEFT__T_CLOSING && t->eof_seen && !t->shutdown_sent) {
    /* on_eof: the peer's close_notify arrived while lose_connection flushes. */
    bufferevent_enable(t->bev, EV_WRITE);
    return;
  }
  /* Bytes OpenSSL already decrypted, or holds in whole records, wait in the SSL, and the
   * socket may never become readable again: pull them into the input buffer ourselves. */
  if (t->ssl && t->state == WEFT__T_OPEN && !t->read_paused)
    pull_decrypted(t);
  deliver_input(t);
  if (t->close_notify_pulled && t->state == WEFT__T_OPEN && !t->read_paused &&
      evbuffer_get_length(bufferevent_get_input(t->bev)) == 0) {
    t->close_notify_pulled = 0;
    on_eof(t);
    return;
  }
  check_read_ahead(t);
}

static void on_flush_writable(evutil_socket_t fd, short what, void *arg);

/* Writes the records the BIO staged during the bufferevent's write pass. Returns 1 when none is
 * left, 0 when the socket is full (flush_event finishes the job and calls on_write again), -1
 * when the connection failed. */
static int flush_staged(weft_transport *t) {
  if (!t->bio || weft__tls_bio_staged(t->bio) == 0)
    return 1;
  errno = 0;
  int rc = weft__tls_bio_flush(t->bio);
  if (rc > 0)
    return 1;
  if (rc < 0) {
    int err = errno;
    int code = weft__errno_to_code(err);
    close_with(t, code, "%s: %s", weft_strerror(code), strerror(err));
    return -1;
  }
  if (!t->flush_event &&
      !(t->flush_event = event_new(t->reactor->base, t->fd, EV_WRITE, on_flush_writable, t))) {
    close_with(t, WEFT_ENOMEM, "out of memory waiting to write TLS records");
    return -1;
  }
  struct timeval tv = to_timeval(t->write_timeout);
  event_add(t->flush_event, t->write_timeout > 0 ? &tv : NULL);
  if (weft_transport_pending_output(t) > t->low_water)
    t->above_low_water = 1;
  return 0;
}

static void on_flush_writable(evutil_socket_t fd, short what, void *arg) {
  weft_transport *t = arg;
  (void)fd;
  if (t->state == WEFT__T_CLOSED)
    return;
  if (what & EV_TIMEOUT) {
    set_reason(t, WEFT_ETIMEDOUT, "write timed out: the peer read nothing for %.3g s",
                     t->write_timeout);
    end_handshake_failed(t);
    return;
  }
  on_write(t->bev, t);
}

static void on_write(struct bufferevent *bev, void *arg) {
  weft_transport *t = arg;
  if (t->state == WEFT__T_CLOSED || flush_staged(t) <= 0)
    return;
  size_t pending = evbuffer_get_length(bufferevent_get_output(bev));
  if (t->state == WEFT__T_CLOSING) {
    if (pending == 0 && !t->shutdown_sent && !t->starttls)
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
  if (t->above_low_water && weft_transport_pending_output(t) <= t->low_water) {
    t->above_low_water = 0;
    if (t->made && t->protocol->ops->write_drained)
      t->protocol->ops->write_drained(t->protocol, t);
  }
  /* Nothing more to write (write_drained wrote nothing): give the staging buffer back. */
  if (t->bio && t->state == WEFT__T_OPEN && evbuffer_get_length(bufferevent_get_output(t->bev)) == 0)
    weft__tls_bio_trim(t->bio);
}

static void on_eof(weft_transport *t) {
  t->eof_seen = 1;
  if (t->state == WEFT__T_CLOSING && !t->starttls) {
    if (!t->shutdown_sent && (!t->ssl || (SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN))) {
      /* Still flushing what lose_connection must deliver. The peer's FIN (or close_notify)
       * says it will send nothing more, not that it stops reading: go on writing; on_write
       * proceeds to close once everything reached the kernel. A TLS bufferevent stops writing
       * when it reports the EOF, after this callback: restart it from the loop (on_resume). */
      if (t->ssl)
        schedule_resume(t);
      return;
    }
    if (!t->shutdown_sent) {
      /* TLS: the TCP stream ended without close_notify while output was pending. */
      tls_failed(t, 0);
      return;
    }
    close_with(t, WEFT_OK,
               t->ssl ? "TLS connection closed locally (close_notify exchanged)"
                      : "connection closed locally");
    return;
  }
  if (t->ssl) {
    if (t->state == WEFT__T_HANDSHAKING || t->starttls ||
        !(SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN)) {
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
      set_reason(t, WEFT_ETIMEDOUT,
                       "write timed out: the peer read nothing for %.3g s", t->write_timeout);
      end_handshake_failed(t);
    }
    return;
  }
  if (!(what & BEV_EVENT_ERROR))
    return;
  if (t->state == WEFT__T_CLOSING && t->shutdown_sent) {
    close_with(t, WEFT_OK, "%s",
               t->ssl ? "TLS connection closed locally (close_notify sent)"
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

/* SOCKET: the SSL will sit on weft's socket BIO, which carries the TLS state for the callbacks
 * (transport_start attaches it before the handshake); else (STARTTLS) ex_data does. */
static int setup_tls(weft_transport *t, weft_cert_options *options, weft_tls_role role,
                     const char *server_name, int socket) {
  t->tls.alert_received = t->tls.alert_sent = -1;
  t->tls.role = role;
  t->tls.options = weft_cert_options_ref(options);
  if (server_name && !(t->server_name = weft__strdup(server_name)))
    return WEFT_ENOMEM;
  t->tls.server_name = t->server_name;
  t->tls.peer = t->peer_len ? weft__transport_peer(t) : NULL; /* session cache key */
  weft__reason_buf err; /* (the caller reports the code only) */
  int rc = weft__tls_new_ssl(options, role, t->server_name, &t->tls, !socket, &t->ssl, &err);
  /* No partial writes on a transport's SSL (the options' context enables them). libevent
   * 2.1.12's bufferevent_openssl hands SSL_write one evbuffer chunk after another and, when a
   * write is short, goes on with the next chunk and drains the total from the front: the rest
   * of the short chunk is skipped and the stream is corrupted. A short write happens as soon
   * as a record is smaller than a chunk: a peer that negotiated max_fragment_length 512 (or a
   * small record_size_limit). Whole writes only: OpenSSL then writes every record of the call,
   * or says WANT_WRITE and is retried with the same bytes (what libevent does). */
  if (rc == 0)
    SSL_clear_mode(t->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE);
  return rc;
}

static int transport_start(weft_reactor *reactor, evutil_socket_t fd, const struct sockaddr *peer,
                           socklen_t peer_len, weft_factory *factory, weft_cert_options *options,
                           weft_tls_role role, const char *server_name, double write_timeout,
                           const weft__owner *owner, weft_transport **out) {
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
  t->close_timeout = -1; /* the options' */

  t->work.run = on_work;

  int rc = WEFT_ENOMEM;
  struct sockaddr_storage peer_ss, host_ss;
  if (peer && peer_len <= sizeof peer_ss) {
    memcpy(&peer_ss, peer, peer_len);
    t->peer_len = peer_len;
  } else {
    t->peer_len = sizeof peer_ss;
    if (getpeername(fd, (struct sockaddr *)&peer_ss, &t->peer_len) != 0)
      t->peer_len = 0;
  }
  /* An IP peer's host address is an IP address too (it fits inline): read it when asked, not
   * with one more system call for every connection. */
  sa_family_t family = t->peer_len ? peer_ss.ss_family : AF_UNSPEC;
  t->host_later = family == AF_INET || family == AF_INET6;
  t->host_len = t->host_later ? 0 : sizeof host_ss;
  if (!t->host_later && getsockname(fd, (struct sockaddr *)&host_ss, &t->host_len) != 0)
    t->host_len = 0;
  if (t->peer_len <= sizeof t->peer && t->host_len <= sizeof t->host) {
    memcpy(&t->peer, &peer_ss, t->peer_len);
    memcpy(&t->host, &host_ss, t->host_len);
  } else if ((t->wide = weft__calloc(1, sizeof *t->wide)) != NULL) {
    memcpy(&t->wide->peer, &peer_ss, t->peer_len);
    memcpy(&t->wide->host, &host_ss, t->host_len);
  } else {
    goto fail;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* Already non-blocking: the listener accepts with accept4(SOCK_NONBLOCK) (libevent's
   * evconnlistener) and the connector creates its sockets with SOCK_NONBLOCK. */

  if (options) {
    if (need_timer(t) != 0) /* the handshake time-out */
      goto fail;
    rc = setup_tls(t, options, role, server_name, 1);
    if (rc != 0)
      goto fail;
    /* One read(2) per burst of records instead of two per record (header, then body); see
     * check_read_ahead for the catch. Writes may be retried from another address (the
     * bufferevent retries one that write_through left unfinished). */
    SSL_set_read_ahead(t->ssl, 1);
    SSL_set_mode(t->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* weft's socket BIO (the bufferevent keeps an SSL's BIO whose descriptor is FD). */
    BIO *bio = weft__tls_bio_new(fd);
    if (!bio) {
      SSL_free(t->ssl);
      t->ssl = NULL;
      rc = WEFT_ENOMEM;
      goto fail;
    }
    t->tls_socket = 1;
    if (role == WEFT_TLS_SERVER) {
      /* A server reads first. A bufferevent starts with EV_WRITE enabled and would register
       * the socket for writability now and again when the handshake ends, with nothing to
       * write: a wake-up and four epoll_ctl(2) calls per connection for nothing. So it is made
       * without a descriptor, EV_WRITE is disabled, and then it gets the socket (setfd gives
       * the SSL a socket BIO of libevent's, replaced by ours at once). The handshake asks for
       * the write event when it needs it; note_pending enables EV_WRITE once output is queued. */
      t->bev = bufferevent_openssl_socket_new(reactor->base, -1, t->ssl, BUFFEREVENT_SSL_ACCEPTING,
                                              BEV_OPT_CLOSE_ON_FREE);
      if (t->bev) {
        bufferevent_disable(t->bev, EV_WRITE);
        if (bufferevent_setfd(t->bev, fd) != 0) {
          BIO_free(bio);
          rc = WEFT_ENOMEM;
          goto fail; /* the bufferevent closes FD (libevent's BIO has it) and frees the SSL */
        }
        SSL_set_bio(t->ssl, bio, bio);
      }
    } else {
      SSL_set_bio(t->ssl, bio, bio);
      t->bev = bufferevent_openssl_socket_new(reactor->base, fd, t->ssl, BUFFEREVENT_SSL_CONNECTING,
                                              BEV_OPT_CLOSE_ON_FREE);
    }
    if (!t->bev) {
      /* With BEV_OPT_CLOSE_ON_FREE, libevent frees the SSL itself when it fails (its socket
       * BIO does not own the descriptor, which the failure path below closes). */
      if (role == WEFT_TLS_SERVER)
        BIO_free(bio); /* not attached yet */
      t->ssl = NULL;
      rc = WEFT_ENOMEM;
      goto fail;
    }
    t->bio = bio;
    weft__tls_bio_set_owner(bio, &t->tls); /* how the OpenSSL callbacks find the connection */
    /* The bufferevent hands SSL_write at most this much at a time (16 KiB by default, one
     * record per call): four records per call, which the BIO stages together. */
    bufferevent_set_max_single_write(t->bev, 4 * 16384);
    arm_timer(t, weft__tls_handshake_timeout(options));
  } else {
    t->bev = bufferevent_socket_new(reactor->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!t->bev)
      goto fail;
  }
  /* Registered once nothing can fail any more; from here on transport_free unregisters it. */
  rc = weft__reactor_add_handle(reactor, &t->handle, &transport_handle_ops, WEFT__RANK_CONNECTION);
  if (rc != 0)
    goto fail;
  if (owner)
    t->owner = *owner;
  bufferevent_setcb(t->bev, on_read, on_write, on_event, t);
  /* A TLS server's EV_WRITE waits for output (see above). A client must write its ClientHello
   * first: its write event starts the handshake. */
  bufferevent_enable(t->bev, options && role == WEFT_TLS_SERVER ? EV_READ : EV_READ | EV_WRITE);
  if (out)
    *out = t;
  if (!options)
    become_ready(t);
  return 0;

fail:
  transport_release(t); /* never registered; closes FD (with the bufferevent, if there is one) */
  return rc;
}

int weft__transport_start(weft_reactor *reactor, evutil_socket_t fd, const struct sockaddr *peer,
                          socklen_t peer_len, weft_factory *factory, weft_cert_options *options,
                          weft_tls_role role, const char *server_name, double write_timeout,
                          const weft__owner *owner, weft_transport **out) {
  return transport_start(reactor, fd, peer, peer_len, factory, options, role, server_name,
                         write_timeout, owner, out);
}

void weft__transport_set_owner(weft_transport *t, const weft__owner *owner) {
  if (owner)
    t->owner = *owner;
  else
    memset(&t->owner, 0, sizeof t->owner);
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

/* 1 if LEN more bytes would take pending output past what libevent can count: its buffers keep
 * lengths in size_t but measure and peek with ev_ssize_t, so the sum must stay at or below
 * EV_SSIZE_MAX. Only a caller's bug (a length that is no real buffer's) gets there. */
static int too_long(weft_transport *t, size_t len) {
  size_t pending = evbuffer_get_length(bufferevent_get_output(t->bev));
  return len > (size_t)EV_SSIZE_MAX || pending > (size_t)EV_SSIZE_MAX - len;
}

static void note_pending(weft_transport *t) {
  if (weft_transport_pending_output(t) > t->low_water)
    t->above_low_water = 1;
  /* A TLS server's bufferevent writes only once something is queued (see transport_start). */
  if (evbuffer_get_length(bufferevent_get_output(t->bev)) > 0 &&
      !(bufferevent_get_enabled(t->bev) & EV_WRITE))
    bufferevent_enable(t->bev, EV_WRITE);
}

/* A write call counts its bytes as written (see weft_transport_pending_output) before they go
 * anywhere; when it fails with nothing queued, it takes them back. Returns WEFT_ENOMEM. */
static int unwrite(weft_transport *t, size_t len) {
  t->written -= len;
  return WEFT_ENOMEM;
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
  if (evbuffer_get_length(out) != 0 || SSL_want_write(t->ssl) ||
      (t->bio && weft__tls_bio_staged(t->bio) != 0))
    return 0;
  if (ERR_peek_error() != 0) /* usually empty: clearing all of its slots costs more than a look */
    ERR_clear_error();
  errno = 0;
  /* One record, written now: nothing to coalesce it with. */
  if (t->bio)
    weft__tls_bio_set_staging(t->bio, 0);
  int n = SSL_write(t->ssl, data, (int)len);
  if (t->bio)
    weft__tls_bio_set_staging(t->bio, 1);
  if (n == (int)len)
    return 1;
  if (n > 0) {
    /* A short write is progress, not an error: with partial writes on (see setup_tls, which
     * turns them off, and weft_transport_ssl, which lets a user turn them back on) OpenSSL
     * returns after one record, and a peer that negotiated a small max_fragment_length makes
     * records of 512 bytes. The N bytes are sent; the rest waits in order, and the producer
     * hears of it (note_pending, so write_drained follows). */
    if (evbuffer_add(out, (const char *)data + n, len - (size_t)n) == 0) {
      note_pending(t);
      return 1;
    }
    set_reason(t, WEFT_ENOMEM, "out of memory queueing a TLS write");
    end_handshake_failed(t);
    return 1;
  }
  int err = SSL_get_error(t->ssl, n);
  if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
    /* OpenSSL keeps the record it could not finish; the bufferevent's retry must pass the same
     * bytes, which is what it finds at the head of its (empty until now) output buffer. The
     * socket is full: this is where a producer must learn to wait for write_drained. */
    ERR_clear_error();
    if (evbuffer_add(out, data, len) == 0) {
      note_pending(t);
      return 1;
    }
    set_reason(t, WEFT_ENOMEM, "out of memory queueing a TLS write");
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
  if (!data || too_long(transport, len))
    return WEFT_EINVAL;
  transport->written += len; /* (an ENOMEM below takes it back) */
  if (write_through(transport, data, len))
    return 0;
  if (bufferevent_write(transport->bev, data, len) != 0)
    return unwrite(transport, len);
  note_pending(transport);
  return 0;
}

/* One write_reference with a release, from the write until the release is called. */
struct weft__release {
  weft_release_fn release;
  void *arg;
  const void *data;
  size_t len;
  weft_transport *transport;      /* NULL once the transport is freed: then called at once */
  LIST_ENTRY(weft__release) link; /* in transport->releases_queued while queued */
  struct weft__release *next_due;
};

static void call_release(struct weft__release *r) {
  struct weft__release copy = *r;
  weft__free(r);
  copy.release(copy.data, copy.len, copy.arg);
}

/* Calls the releases that came due, in order (each may write again, queueing more). */
static void run_due_releases(weft_transport *t) {
  struct weft__release *r;
  while ((r = t->releases_due) != NULL) {
    t->releases_due = r->next_due;
    call_release(r);
  }
}

static void on_release(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  run_due_releases(arg);
}

/* libevent's cleanup for a reference: the bytes left the buffer (sent or dropped). */
static void release_reference(const void *data, size_t len, void *arg) {
  struct weft__release *r = arg;
  weft_transport *t = r->transport;
  (void)data;
  (void)len;
  if (!t) {
    call_release(r); /* the transport is gone: nothing of weft's is running on it */
    return;
  }
  LIST_REMOVE(r, link);
  struct weft__release **tail = &t->releases_due;
  while (*tail)
    tail = &(*tail)->next_due;
  r->next_due = NULL;
  *tail = r;
  event_active(t->release_event, EV_TIMEOUT, 1);
}

/* The transport is being freed: releases that came due run now; those still queued run when
 * libevent frees their bytes, directly. */
static void settle_releases(weft_transport *t) {
  run_due_releases(t);
  struct weft__release *r;
  LIST_FOREACH(r, &t->releases_queued, link)
  r->transport = NULL;
  LIST_INIT(&t->releases_queued);
  if (t->release_event)
    event_free(t->release_event);
  t->release_event = NULL;
}

int weft_transport_write_reference(weft_transport *transport, const void *data, size_t len,
                                   weft_release_fn release, void *arg) {
  int rc = writable(transport);
  if (rc != 0)
    return rc;
  if ((len > 0 && !data) || too_long(transport, len))
    return WEFT_EINVAL;
  transport->written += len; /* (a failure below takes it back) */
  if (len == 0 || write_through(transport, data, len)) {
    /* Sent (or, if OpenSSL must finish the record later, copied: see write_through). */
    if (release)
      release(data, len, arg);
    return 0;
  }
  /* The bufferevent reads the bytes in place; libevent's cleanup takes one pointer, so the
   * caller's release travels in a small block (none at all for RELEASE NULL). */
  struct weft__release *r = NULL;
  if (release) {
    if ((!transport->release_event &&
         !(transport->release_event =
               event_new(transport->reactor->base, -1, 0, on_release, transport))) ||
        !(r = weft__malloc(sizeof *r)))
      return unwrite(transport, len);
    *r = (struct weft__release){
        .release = release, .arg = arg, .data = data, .len = len, .transport = transport};
    LIST_INSERT_HEAD(&transport->releases_queued, r, link);
  }
  if (evbuffer_add_reference(bufferevent_get_output(transport->bev), data, len,
                             release ? release_reference : NULL, r) != 0) {
    if (r) {
      LIST_REMOVE(r, link);
      weft__free(r);
    }
    return unwrite(transport, len);
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
  if (too_long(transport, total))
    return WEFT_EINVAL;
  transport->written += total; /* (a failure below takes it back) */
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
        return unwrite(transport, total);
      note_pending(transport);
    }
    return 0;
  }
  /* All or nothing: room for every byte first, so that no add below can fail half-way. */
  struct evbuffer *out = bufferevent_get_output(transport->bev);
  if (evbuffer_expand(out, total) != 0)
    return unwrite(transport, total);
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
  if (t->starttls) {
    /* The STARTTLS handshake goes on (close_notify needs it, and what was written since
     * start_tls must go out encrypted): once it is done, handshake_complete flushes and sends
     * close_notify. The close time-out bounds all of it from now. */
    arm_timer(t, close_wait(t));
    return 0;
  }
  if (evbuffer_get_length(bufferevent_get_output(t->bev)) == 0)
    proceed_close(t);
  return 0;
}

int weft_transport_abort_connection(weft_transport *transport) {
  if (!transport)
    return WEFT_EINVAL;
  if (transport->state == WEFT__T_CLOSED)
    return 0;
  /* Drop everything: after STARTTLS the records already encrypted wait in the socket
   * bufferevent below the filter, and the final flush (flush_filter_output) would send them. */
  struct bufferevent *under = transport->bev ? bufferevent_get_underlying(transport->bev) : NULL;
  if (under) {
    /* libevent freezes the start of a socket bufferevent's output outside its own writes:
     * a drain there would silently do nothing (see flush_filter_output). */
    struct evbuffer *out = bufferevent_get_output(under);
    evbuffer_unfreeze(out, 1);
    evbuffer_drain(out, evbuffer_get_length(out));
    evbuffer_freeze(out, 1);
  }
  if (transport->bio)
    weft__tls_bio_discard(transport->bio); /* records staged for the socket: dropped too */
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
  cancel_resume(transport);
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
  schedule_resume(transport);
  return 0;
}

size_t weft_transport_pending_output(weft_transport *transport) {
  if (!transport || !transport->bev)
    return 0;
  uint64_t sent;
  if (transport->bio && weft__tls_bio_sent(transport->bio, &sent)) /* see tls_bio.c */
    return transport->written > sent ? (size_t)(transport->written - sent) : 0;
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

int weft_transport_set_close_timeout(weft_transport *transport, double seconds) {
  if (!transport || !(seconds >= 0 && seconds <= 1e6)) /* also refuses NaN */
    return WEFT_EINVAL;
  weft_transport *t = transport;
  if (t->state == WEFT__T_CLOSED)
    return WEFT_ECLOSED;
  t->close_timeout = seconds;
  /* Already waiting for the peer: the wait runs SECONDS from now (0: it ends at once). */
  if (t->state == WEFT__T_CLOSING && t->shutdown_sent && t->timer &&
      evtimer_pending(t->timer, NULL) && arm_timer(t, seconds) != 0)
    return WEFT_ENOMEM;
  return 0;
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

static int copy_address(const struct sockaddr *ss, socklen_t sslen, struct sockaddr *addr,
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
  return copy_address(weft__transport_peer(transport), transport->peer_len, addr, len);
}

int weft_transport_host_address(weft_transport *transport, struct sockaddr *addr, socklen_t *len) {
  if (!transport)
    return WEFT_EINVAL;
  if (transport->host_later && transport->fd >= 0 && !transport->wide) {
    socklen_t n = sizeof transport->host;
    transport->host_later = 0;
    if (getsockname(transport->fd, &transport->host.sa, &n) == 0 && n <= sizeof transport->host)
      transport->host_len = n;
  }
  return copy_address(weft__transport_host(transport), transport->host_len, addr, len);
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
  } else if (addr && addr->sa_family == AF_UNIX) {
    /* "unix:" alone for an unnamed peer, "unix:@name" for an abstract one */
    const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
    const char *p = un->sun_path[0] ? un->sun_path : un->sun_path + 1;
    size_t n = strnlen(p, sizeof un->sun_path - (size_t)(p - un->sun_path));
    snprintf(buf, size, "unix:%s%.*s", un->sun_path[0] || !n ? "" : "@", (int)n, p);
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
  rc = setup_tls(t, options, role, server_name, 0);
  if (rc == 0 && need_timer(t) != 0) /* the handshake time-out, armed by start_filter */
    rc = WEFT_ENOMEM;
  if (rc == 0) {
    /* A filter over the plain bufferevent: clear output already queued goes out first, and
     * bytes already read past the upgrade point are fed to the TLS engine. With
     * BEV_OPT_CLOSE_ON_FREE the filter owns the SSL, and libevent frees it when the filter
     * cannot be made; weft holds a reference of its own across the call, so that it frees the
     * SSL itself, exactly once, and never touches a freed one, whatever libevent did. */
    SSL_up_ref(t->ssl);
    struct bufferevent *tls = bufferevent_openssl_filter_new(
        t->reactor->base, t->bev, t->ssl,
        role == WEFT_TLS_SERVER ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
        BEV_OPT_CLOSE_ON_FREE);
    if (tls) {
      SSL_free(t->ssl); /* weft's reference; the filter keeps its own */
      start_filter(t, tls);
      return 0;
    }
    rc = WEFT_ENOMEM;
  }
  /* Back to the plain connection as it was: weft's callbacks on its bufferevent (libevent may
   * have set its own before it failed), no TLS state, nothing held. Writes, closing and
   * another start_tls work as before the call. */
  if (t->ssl)
    SSL_free(t->ssl);
  t->ssl = NULL;
  weft_cert_options_unref(t->tls.options);
  weft__free(t->server_name);
  t->server_name = NULL;
  memset(&t->tls, 0, sizeof t->tls);
  bufferevent_setcb(t->bev, on_read, on_write, on_event, t);
  ERR_clear_error();
  return rc;
}

/* start_tls, once the filter TLS over the plain bufferevent exists: the transport switches to
 * it. */
static void start_filter(weft_transport *t, struct bufferevent *tls) {
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
  arm_timer(t, weft__tls_handshake_timeout(t->tls.options));
  /* The filter may start reading here (bytes already buffered, or its first read's allocation
   * failing): a failure it reports now closes the transport, and tls_started follows from the
   * loop (deliver_end), never from inside start_tls, which has returned 0 by then. */
  t->starting_tls = 1;
  bufferevent_enable(t->bev, t->read_paused ? EV_WRITE : EV_READ | EV_WRITE);
  t->starting_tls = 0;
}

/* --- idle time-out and closing with a given reason ----------------------------------------- */

void weft__transport_close_with(weft_transport *t, int code, const char *message) {
  if (t->state == WEFT__T_CLOSED)
    return;
  if (t->ssl && t->tls.handshake_done && !t->shutdown_sent && !t->starttls)
    send_close_notify(t); /* a clean TLS end: the peer sees a close, not a truncation */
  close_with(t, code, "%s", message ? message : weft_strerror(code));
}

/* The idle queue found T's time up (see "idle queues" in reactor-internal.h). */
static void on_idle(weft__idle_node *node) {
  weft_transport *t = WEFT__CONTAINER_OF(node, weft_transport, idle);
  if (t->state != WEFT__T_OPEN) {
    weft__idle_leave(node); /* closing: lose_connection's own bounds apply */
    return;
  }
  double now = weft__reactor_now(t->reactor);
  /* Output still waiting is not idleness (the write time-out watches that it moves). */
  if (evbuffer_get_length(bufferevent_get_output(t->bev)) > 0) {
    weft__idle_touch(node, now);
    if (t->idle_timeout > 1e-3)
      return;
  }
  char peer[64] = "?";
  if (t->peer_len)
    weft_address_format(weft__transport_peer(t), peer, sizeof peer);
  char msg[128];
  snprintf(msg, sizeof msg, "idle time-out: nothing received for %.3g s", t->idle_timeout);
  weft__log(t->reactor, WEFT_LOG_INFO, "connection from %s closed: %s", peer, msg);
  weft__idle_leave(node); /* (close_now does too; first, whatever the log callback does) */
  weft__transport_close_with(t, WEFT_EIDLE, msg);
}

int weft_transport_set_idle_timeout(weft_transport *transport, double seconds) {
  if (!transport || !(seconds >= 0 && seconds <= 1e6))
    return WEFT_EINVAL;
  weft_transport *t = transport;
  if (t->state == WEFT__T_CLOSED)
    return WEFT_ECLOSED;
  t->idle_timeout = seconds;
  t->idle.last_activity = weft__reactor_now(t->reactor);
  if (seconds == 0) {
    weft__idle_leave(&t->idle);
    return 0;
  }
  int rc = weft__idle_join(t->reactor, &t->idle, seconds, on_idle);
  if (rc != 0)
    t->idle_timeout = 0; /* no memory for the value's queue: no time-out */
  return rc;
}

double weft_transport_get_idle_timeout(weft_transport *transport) {
  return transport ? transport->idle_timeout : 0;
}

int weft_transport_reset_idle_timeout(weft_transport *transport) {
  if (!transport)
    return WEFT_EINVAL;
  if (transport->state == WEFT__T_CLOSED)
    return WEFT_ECLOSED;
  weft__idle_touch(&transport->idle, weft__reactor_now(transport->reactor));
  return 0;
}
