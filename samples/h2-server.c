/* h2-server: HTTP/2 and HTTP/1.1 over TLS on one port, chosen by ALPN (libnghttp2 for HTTP/2).
 *
 *   h2-server --listen 127.0.0.1:8443
 *   curl -k --http2 https://127.0.0.1:8443/            (HTTP/2: "Hello, World!")
 *   curl -k --http1.1 https://127.0.0.1:8443/bytes/1000000
 *   h2load -n 2000 -c 10 https://127.0.0.1:8443/
 *
 * The paths of samples/https-hello: GET / answers 200 with the 13-byte body "Hello, World!",
 * GET /bytes/N answers 200 with N bytes; HEAD answers the same headers without the body. The
 * server offers h2 and http/1.1 over ALPN; weft's dispatch factory (weft_dispatch_factory_new)
 * hands each connection to the factory of the protocol it negotiated, and a client that
 * negotiated nothing gets HTTP/1.1.
 *
 * Back-pressure, the part to copy:
 *  - HTTP/2: nghttp2 decides what to send next (it honours the peer's flow-control windows: a
 *    stream whose window is closed gets no DATA until the peer's WINDOW_UPDATE), and weft
 *    decides when: the send callbacks answer NGHTTP2_ERR_WOULDBLOCK while the transport holds
 *    more than HIGH_WATER bytes of output, reading pauses, and write_drained (at LOW_WATER)
 *    resumes both. Output memory stays bounded however many streams run and however slowly the
 *    peer reads. Body bytes are passed to nghttp2 by reference (NGHTTP2_DATA_FLAG_NO_COPY).
 *  - HTTP/1.1: the request head is cut into lines by a weft_framer (bounded line length), a
 *    request body is skipped in the framer's raw mode, and /bytes/N streams through a
 *    weft_producer (it writes while the transport has room). Requests pipelined behind a
 *    streaming body wait: reading pauses, and what was already read is kept (bounded).
 *
 * Prints "listening on HOST:PORT" when ready; on SIGTERM or SIGINT closes every connection,
 * prints "h2: C connections, R requests" and "http/1.1: C connections, R requests" to stderr
 * and exits with status 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <weft/weft.h>

#define CHUNK (64 * 1024)          /* the static body bytes of /bytes/N */
#define HIGH_WATER (256 * 1024)    /* stop writing while this much output waits... */
#define LOW_WATER (64 * 1024)      /* ... and write again (write_drained) once it is down to this */
#define MAX_LINE 8192              /* HTTP/1.1: one request or header line */
#define MAX_HEAD (16 * 1024)       /* HTTP/1.1: the whole request head */
#define MAX_STASH (64 * 1024)      /* HTTP/1.1: bytes kept while a body streams */
#define MAX_BYTES 1000000000000ULL /* the largest N of /bytes/N */

static const char usage[] =
    "usage: h2-server --listen HOST:PORT [--cert PEM --key PEM]\n"
    "HOST is an IP literal (\"[::1]:PORT\" for IPv6); PORT 0 picks a free port. Without\n"
    "--cert a self-signed certificate for localhost is generated. ALPN offers h2 and\n"
    "http/1.1. GET / answers \"Hello, World!\"; GET /bytes/N answers N bytes.\n";

static const char hello[] = "Hello, World!";
static char body_chunk[CHUNK]; /* the bytes of /bytes/N, filled once in main */
static unsigned long long h2_connections, h2_requests, h1_connections, h1_requests;

/* What a request asked for, in either protocol. */
typedef struct response {
  const char *status;        /* "200" ... */
  const char *body;          /* a fixed body, or NULL: LENGTH bytes of body_chunk */
  unsigned long long length; /* the body's length (what Content-Length says) */
} response;

/* Maps METHOD and TARGET (NUL-terminated) to the response. */
static response route(const char *method, const char *target) {
  static const char not_found[] = "not found\n", not_impl[] = "method not implemented\n";
  response r = {"200", hello, sizeof hello - 1};
  if (strcmp(method, "GET") && strcmp(method, "HEAD"))
    return (response){"501", not_impl, sizeof not_impl - 1};
  size_t n = strcspn(target, "?"); /* ignore a query string */
  if (n == 1 && target[0] == '/')
    return r;
  if (n > 7 && n <= 7 + 13 && !strncmp(target, "/bytes/", 7)) { /* at most 13 digits */
    unsigned long long len = 0;
    size_t i = 7;
    for (; i < n && target[i] >= '0' && target[i] <= '9'; i++)
      len = len * 10 + (unsigned)(target[i] - '0');
    if (i == n && len <= MAX_BYTES)
      return (response){"200", NULL, len};
  }
  return (response){"404", not_found, sizeof not_found - 1};
}

/* ============================== HTTP/2 (libnghttp2) ============================== */

/* One request stream: what its headers said, and how much of the body has gone out. */
typedef struct h2_stream {
  struct h2_stream *next, *prev; /* the connection's streams, freed with it at the latest */
  int32_t id;
  char method[16], path[256];
  int too_long; /* a :method or :path longer than we keep: 404 */
  response r;
  unsigned long long left; /* body bytes nghttp2 has not asked for yet */
  size_t sent;             /* fixed body: bytes already sent */
} h2_stream;

typedef struct h2_conn {
  weft_protocol base; /* first member: the weft_protocol * we hand out is this struct */
  weft_transport *transport;
  nghttp2_session *session;
  h2_stream *streams;
  int paused; /* reading paused because output passed HIGH_WATER */
  int closing;
} h2_conn;

static void h2_free_stream(h2_conn *c, h2_stream *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    c->streams = s->next;
  if (s->next)
    s->next->prev = s->prev;
  free(s);
}

/* nghttp2 hands us frames to send: copy them into the transport while it has room. */
static ssize_t h2_send(nghttp2_session *session, const uint8_t *data, size_t length, int flags,
                       void *user_data) {
  (void)session, (void)flags;
  h2_conn *c = user_data;
  if (weft_transport_pending_output(c->transport) > HIGH_WATER)
    return NGHTTP2_ERR_WOULDBLOCK;
  if (weft_transport_write(c->transport, data, length) != 0)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  return (ssize_t)length;
}

/* A DATA frame whose payload nghttp2 did not copy (NGHTTP2_DATA_FLAG_NO_COPY): its 9-byte
 * header, then LENGTH body bytes taken from the stream's source. On WOULDBLOCK nghttp2 asks
 * again for the same frame later. */
static int h2_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *user_data) {
  (void)session;
  h2_conn *c = user_data;
  h2_stream *s = source->ptr;
  if (weft_transport_pending_output(c->transport) > HIGH_WATER)
    return NGHTTP2_ERR_WOULDBLOCK;
  if (frame->data.padlen > 0)
    return NGHTTP2_ERR_CALLBACK_FAILURE; /* we never ask for padding */
  const char *body = s->r.body ? s->r.body + s->sent : body_chunk;
  weft_buf bufs[2] = {{framehd, 9}, {body, length}};
  if (weft_transport_write_sequence(c->transport, bufs, 2) != 0)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  s->sent += length;
  return 0;
}

/* nghttp2 asks for at most LENGTH body bytes (only when the flow-control windows allow). */
static ssize_t h2_read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data) {
  (void)session, (void)stream_id, (void)buf, (void)user_data;
  h2_stream *s = source->ptr;
  size_t n = s->left < length ? (size_t)s->left : length;
  if (n > CHUNK)
    n = CHUNK; /* never past body_chunk (frames are at most 16 KiB anyway) */
  s->left -= n;
  *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY; /* h2_send_data writes the bytes */
  if (s->left == 0)
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static int h2_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  h2_conn *c = user_data;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  h2_stream *s = calloc(1, sizeof *s);
  if (!s)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream only */
  s->id = frame->hd.stream_id;
  s->next = c->streams;
  if (s->next)
    s->next->prev = s;
  c->streams = s;
  nghttp2_session_set_stream_user_data(session, s->id, s);
  return 0;
}

static int h2_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data) {
  (void)flags, (void)user_data;
  h2_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!s || frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  char *dst = NULL;
  size_t size = 0;
  if (namelen == 7 && !memcmp(name, ":method", 7))
    dst = s->method, size = sizeof s->method;
  if (namelen == 5 && !memcmp(name, ":path", 5))
    dst = s->path, size = sizeof s->path;
  if (!dst)
    return 0; /* other headers do not matter here */
  if (valuelen >= size || memchr(value, '\0', valuelen)) {
    s->too_long = 1;
    return 0;
  }
  memcpy(dst, value, valuelen);
  dst[valuelen] = '\0';
  return 0;
}

/* The request is complete (END_STREAM): submit the response. */
static int h2_respond(nghttp2_session *session, h2_stream *s) {
  int head = !strcmp(s->method, "HEAD");
  s->r = s->too_long ? route("GET", "/-") : route(s->method, s->path);
  char length[24];
  snprintf(length, sizeof length, "%llu", s->r.length);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
  nghttp2_nv headers[] = {NV(":status", s->r.status), NV("content-type", "text/plain"),
                          NV("content-length", length)};
#undef NV
  s->left = head ? 0 : s->r.length;
  nghttp2_data_provider body = {.source.ptr = s, .read_callback = h2_read_body};
  h2_requests++;
  /* No body (HEAD, or an empty one): the HEADERS frame ends the stream. */
  return nghttp2_submit_response(session, s->id, headers, 3, s->left ? &body : NULL);
}

static int h2_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  (void)user_data;
  if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
      !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
    return 0;
  h2_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (s && h2_respond(session, s) != 0)
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
  return 0;
}

static int h2_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data) {
  (void)error_code;
  h2_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
  if (s) {
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    h2_free_stream(user_data, s);
  }
  return 0;
}

/* Sends what nghttp2 has while the transport has room; pauses reading while it has none (a
 * peer that sends requests or PINGs without reading the answers then waits in TCP flow
 * control, instead of growing our queues). Closes once nghttp2 is done with the connection. */
static void h2_flush(h2_conn *c) {
  if (c->closing)
    return;
  int rv = nghttp2_session_send(c->session);
  int full = weft_transport_pending_output(c->transport) > HIGH_WATER;
  if (full && !c->paused)
    weft_transport_pause_reading(c->transport);
  if (!full && c->paused)
    weft_transport_resume_reading(c->transport);
  c->paused = full;
  if (rv != 0 ||
      (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session))) {
    c->closing = 1;                               /* a GOAWAY was sent, or the session failed */
    weft_transport_lose_connection(c->transport); /* what was written goes out first */
  }
}

static void h2_made(weft_protocol *p, weft_transport *t) {
  h2_conn *c = (h2_conn *)p;
  c->transport = t;
  weft_transport_set_write_low_water(t, LOW_WATER);
  nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
  if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 1) != 0) {
    c->closing = 1;
    weft_transport_abort_connection(t);
    return;
  }
  h2_flush(c);
}

static void h2_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  h2_conn *c = (h2_conn *)p;
  (void)t;
  if (c->closing)
    return;
  ssize_t rv = nghttp2_session_mem_recv(c->session, data, len); /* runs the callbacks above */
  if (rv < 0) {
    /* A protocol error: nghttp2 has queued a GOAWAY where it could; send it, then close. */
    nghttp2_session_send(c->session);
    c->closing = 1;
    weft_transport_lose_connection(c->transport);
    return;
  }
  h2_flush(c);
}

static void h2_drained(weft_protocol *p, weft_transport *t) {
  (void)t;
  h2_flush((h2_conn *)p); /* room again: nghttp2 goes on where WOULDBLOCK stopped it */
}

static void h2_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)t, (void)reason;
  h2_conn *c = (h2_conn *)p;
  nghttp2_session_del(c->session);
  while (c->streams)
    h2_free_stream(c, c->streams); /* streams nghttp2 never closed */
  free(c); /* weft never frees a protocol: connection_lost is its last callback */
}

static const weft_protocol_ops h2_ops = {
    .connection_made = h2_made,
    .data_received = h2_data,
    .write_drained = h2_drained,
    .connection_lost = h2_lost,
};

static nghttp2_session_callbacks *h2_callbacks; /* made once in main */

static weft_protocol *build_h2(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)f, (void)t, (void)peer;
  h2_conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL; /* refuses the connection */
  if (nghttp2_session_server_new(&c->session, h2_callbacks, c) != 0) {
    free(c);
    return NULL;
  }
  c->base.ops = &h2_ops;
  h2_connections++;
  return &c->base;
}

/* ============================== HTTP/1.1 (weft helpers) ============================== */

typedef struct h1_conn {
  weft_protocol base;
  weft_transport *transport;
  weft_framer *framer;     /* request head lines; raw mode for bodies and while streaming */
  weft_producer *producer; /* the /bytes/N body being streamed, or NULL */
  char method[16], target[256];
  int in_head; /* the request line was read; header lines follow */
  int bad;     /* the request is malformed: 400, then close */
  int keep_alive, close_after, closing;
  size_t head_bytes;            /* of the current request head, against MAX_HEAD */
  unsigned long long discard;   /* request body bytes still to skip */
  unsigned long long body_left; /* /bytes/N bytes the producer has still to write */
  char *stash;                  /* bytes read while a body streamed (pipelined requests) */
  size_t stash_len;
} h1_conn;

static void h1_close(h1_conn *c) {
  c->closing = 1;
  weft_transport_lose_connection(c->transport); /* the responses written go out first */
}

static int h1_body(void *arg, weft_transport *t) { /* the producer's generator */
  h1_conn *c = arg;
  size_t n = c->body_left < CHUNK ? (size_t)c->body_left : CHUNK;
  /* The bytes are static: weft sends them in place, no copy and no release callback. */
  int rc = weft_transport_write_reference(t, body_chunk, n, NULL, NULL);
  if (rc != 0)
    return rc;
  c->body_left -= n;
  return c->body_left > 0;
}

static size_t h1_raw(void *arg, const uint8_t *data, size_t len);

static void h1_body_done(void *arg, int status) {
  h1_conn *c = arg;
  c->producer = NULL;
  if (status != 0 || c->closing)
    return; /* the connection is ending */
  if (c->close_after)
    return h1_close(c);
  weft_transport_resume_reading(c->transport);
  if (c->discard > 0)
    return; /* raw mode still skips the request body */
  /* Back to the request lines: first those that arrived while the body streamed. */
  weft_framer_set_raw_mode(c->framer, NULL);
  char *stash = c->stash;
  size_t n = c->stash_len;
  c->stash = NULL, c->stash_len = 0;
  int rc = weft_framer_feed(c->framer, (const uint8_t *)stash, n);
  free(stash);
  if (rc != 0 && !c->closing)
    weft_transport_abort_connection(c->transport), c->closing = 1;
}

/* Answers the request whose head was just read. */
static void h1_respond(h1_conn *c) {
  int head = !strcmp(c->method, "HEAD");
  response r = c->bad ? (response){"400", "bad request\n", 12} : route(c->method, c->target);
  const char *reason = !strcmp(r.status, "200")   ? "OK"
                       : !strcmp(r.status, "404") ? "Not Found"
                       : !strcmp(r.status, "400") ? "Bad Request"
                                                  : "Not Implemented";
  char hdr[256];
  c->close_after = c->bad || !c->keep_alive;
  int n = snprintf(hdr, sizeof hdr,
                   "HTTP/1.1 %s %s\r\nContent-Type: text/plain\r\nContent-Length: %llu\r\n%s\r\n",
                   r.status, reason, r.length, c->close_after ? "Connection: close\r\n" : "");
  int streamed = !head && !r.body && r.length > 0;
  weft_buf bufs[2] = {{hdr, (size_t)n}, {r.body, head || !r.body ? 0 : r.length}};
  h1_requests++;
  if (weft_transport_write_sequence(c->transport, bufs, 2) != 0 || !streamed)
    return;
  c->body_left = r.length;
  if (weft_producer_start(c->transport, h1_body, h1_body_done, c, &c->producer) != 0) {
    c->producer = NULL;
    weft_transport_abort_connection(c->transport);
    c->closing = 1;
    return;
  }
  /* Pipelined requests wait until the body is out: in the kernel, or (what was read already)
   * in the stash. */
  weft_transport_pause_reading(c->transport);
}

/* One line of a request head (LINE, LEN bytes, without its CRLF). */
static int h1_line(void *arg, const uint8_t *line, size_t len) {
  h1_conn *c = arg;
  char buf[MAX_LINE + 1];
  if (c->closing)
    return WEFT_ECLOSED;
  if ((c->head_bytes += len + 2) > MAX_HEAD)
    return WEFT_ETOOLONG;
  memcpy(buf, line, len);
  buf[len] = '\0';
  if (!c->in_head) { /* the request line: METHOD SP TARGET SP VERSION */
    if (len == 0)
      return c->head_bytes = 0, 0; /* an empty line before a request is allowed */
    char *target = strchr(buf, ' '), *version = target ? strchr(target + 1, ' ') : NULL;
    c->in_head = 1, c->bad = 0, c->discard = 0;
    if (!version || target == buf || strchr(version + 1, ' ') || target[1] != '/' ||
        (size_t)(target - buf) >= sizeof c->method ||
        (size_t)(version - target - 1) >= sizeof c->target ||
        (strcmp(version + 1, "HTTP/1.1") && strcmp(version + 1, "HTTP/1.0"))) {
      c->bad = 1;
      return 0;
    }
    *target++ = '\0', *version++ = '\0';
    strcpy(c->method, buf);
    strcpy(c->target, target);
    c->keep_alive = !strcmp(version, "HTTP/1.1"); /* HTTP/1.0 closes unless asked not to */
    return 0;
  }
  if (len > 0) { /* a header: only Connection and the body's framing matter */
    char *colon = strchr(buf, ':');
    if (!colon || colon == buf || memchr(buf, ' ', (size_t)(colon - buf)) || strlen(buf) != len)
      return c->bad = 1, 0;
    *colon = '\0';
    const char *value = colon + 1 + strspn(colon + 1, " \t");
    if (!strcasecmp(buf, "Connection") && strcasestr(value, "close"))
      c->keep_alive = 0;
    if (!strcasecmp(buf, "Connection") && strcasestr(value, "keep-alive"))
      c->keep_alive = 1;
    if (!strcasecmp(buf, "Content-Length")) { /* a body we skip: at most 15 digits */
      size_t digits = strspn(value, "0123456789");
      if (digits == 0 || digits > 15 || value[digits])
        return c->bad = 1, 0;
      c->discard = strtoull(value, NULL, 10);
    }
    if (!strcasecmp(buf, "Transfer-Encoding"))
      c->bad = 1; /* chunked bodies: not for a demo */
    return 0;
  }
  /* The empty line: the head is complete. */
  c->in_head = 0, c->head_bytes = 0;
  h1_respond(c);
  if (c->closing)
    return WEFT_ECLOSED;
  if (c->close_after && !c->producer) { /* after garbage, or Connection: close */
    h1_close(c);
    return WEFT_ECLOSED; /* what follows is not read */
  }
  /* A body to skip, or a response streaming: the bytes that follow go to h1_raw. */
  if (c->discard > 0 || c->producer)
    weft_framer_set_raw_mode(c->framer, h1_raw);
  return 0;
}

/* Raw mode: skips the request body, then keeps what arrives while a response streams. */
static size_t h1_raw(void *arg, const uint8_t *data, size_t len) {
  h1_conn *c = arg;
  size_t used = c->discard < len ? (size_t)c->discard : len;
  c->discard -= used;
  if (c->discard > 0 || c->closing)
    return len;
  if (c->producer || c->close_after) { /* pipelined behind a streaming body: keep it */
    if (c->close_after)
      return len; /* nothing after a "Connection: close" request is read */
    if (c->stash_len + (len - used) > MAX_STASH) {
      weft_transport_abort_connection(c->transport); /* only a client ignoring limits */
      c->closing = 1;
      return len;
    }
    char *stash = realloc(c->stash, c->stash_len + (len - used) + 1);
    if (!stash) {
      weft_transport_abort_connection(c->transport);
      c->closing = 1;
      return len;
    }
    memcpy(stash + c->stash_len, data + used, len - used);
    c->stash = stash, c->stash_len += len - used;
    return len;
  }
  weft_framer_set_raw_mode(c->framer, NULL); /* the body is skipped: lines again */
  return used;
}

static void h1_made(weft_protocol *p, weft_transport *t) {
  ((h1_conn *)p)->transport = t;
}

static void h1_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  h1_conn *c = (h1_conn *)p;
  if (c->closing)
    return;
  int rc = weft_framer_feed(c->framer, data, len);
  if (rc == WEFT_ETOOLONG && !c->closing && !c->producer) {
    /* A line or a head above the limits: say so, and close. */
    static const char too_large[] = "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                    "Content-Type: text/plain\r\nContent-Length: 17\r\n"
                                    "Connection: close\r\n\r\nheader too large\n";
    weft_transport_write(t, too_large, sizeof too_large - 1);
    h1_requests++;
    h1_close(c);
  } else if (rc != 0 && !c->closing) {
    weft_transport_abort_connection(t);
    c->closing = 1;
  }
}

static void h1_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)t, (void)reason;
  h1_conn *c = (h1_conn *)p;
  weft_framer_free(c->framer); /* the producer, if any, ended (its DONE ran) before this */
  free(c->stash);
  free(c);
}

static const weft_protocol_ops h1_ops = {
    .connection_made = h1_made,
    .data_received = h1_data,
    .connection_lost = h1_lost,
};

static weft_protocol *build_h1(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)f, (void)t, (void)peer;
  h1_conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  if (weft_framer_new_lines("\r\n", 2, MAX_LINE, h1_line, c, &c->framer) != 0) {
    free(c);
    return NULL;
  }
  c->base.ops = &h1_ops;
  h1_connections++;
  return &c->base;
}

/* ============================== Setup ============================== */

/* The server's options: the identity (files, or a certificate generated for localhost,
 * 127.0.0.1 and ::1) and the next protocols, most preferred first. */
static int make_options(weft_cert_options **out, const char *cert_file, const char *key_file) {
  static const char *const protocols[] = {"h2", "http/1.1"};
  static const char *const dns[] = {"localhost"}, *const ips[] = {"127.0.0.1", "::1"};
  weft_cert_spec spec = {.common_name = "localhost",
                         .dns_names = dns,
                         .dns_count = 1,
                         .ip_addresses = ips,
                         .ip_count = 2};
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  int rc = weft_cert_options_new(out);
  if (rc == 0 && cert_file)
    rc = weft_cert_options_load_certificate_chain_file(*out, cert_file);
  if (rc == 0 && key_file)
    rc = weft_cert_options_load_private_key_file(*out, key_file);
  if (rc == 0 && !cert_file)
    rc = weft_key_generate(WEFT_KEY_EC_P256, 0, &key);
  if (rc == 0 && !cert_file)
    rc = weft_cert_generate(&spec, key, NULL, NULL, &cert);
  if (rc == 0 && key)
    rc = weft_cert_options_set_private_key(*out, key);
  if (rc == 0 && cert)
    rc = weft_cert_options_set_certificate(*out, cert);
  EVP_PKEY_free(key); /* the options took their own references */
  X509_free(cert);
  if (rc == 0)
    rc = weft_cert_options_set_next_protocols(*out, protocols, 2);
  if (rc == 0)
    rc = weft_cert_options_prepare(*out, WEFT_TLS_SERVER); /* report errors now */
  return rc;
}

static int make_callbacks(void) {
  if (nghttp2_session_callbacks_new(&h2_callbacks) != 0)
    return -1;
  nghttp2_session_callbacks_set_send_callback(h2_callbacks, h2_send);
  nghttp2_session_callbacks_set_send_data_callback(h2_callbacks, h2_send_data);
  nghttp2_session_callbacks_set_on_begin_headers_callback(h2_callbacks, h2_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(h2_callbacks, h2_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(h2_callbacks, h2_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(h2_callbacks, h2_stream_close);
  return 0;
}

int main(int argc, char **argv) {
  char *listen = NULL, *cert = NULL, *key = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
      return fputs(usage, stdout), 0;
    char **slot = !strcmp(argv[i], "--listen") ? &listen
                  : !strcmp(argv[i], "--cert") ? &cert
                  : !strcmp(argv[i], "--key")  ? &key
                                               : NULL;
    if (!slot || i + 1 == argc) {
      fprintf(stderr, "error: %s: unknown option or missing value\n%s", argv[i], usage);
      return 2;
    }
    *slot = argv[++i];
  }
  /* "127.0.0.1:80" or "[::1]:80" into HOST and PORT. */
  char *colon = listen ? strrchr(listen, ':') : NULL, *end = NULL, *host = listen;
  long port = colon ? strtol(colon + 1, &end, 10) : -1;
  if (!colon || colon[1] == '\0' || *end || port < 0 || port > 65535)
    return fputs("error: --listen HOST:PORT is required (see --help)\n", stderr), 2;
  *colon = '\0';
  if (host[0] == '[' && colon > host + 1 && colon[-1] == ']')
    host++, colon[-1] = '\0';
  if (!cert != !key)
    return fputs("error: --cert and --key go together\n", stderr), 2;

  weft_cert_options *opts = NULL;
  int rc = make_options(&opts, cert, key);
  if (rc != 0) {
    const char *why = opts ? weft_cert_options_last_error(opts) : "";
    fprintf(stderr, "error: TLS options: %s\n", *why ? why : weft_strerror(rc));
    weft_cert_options_unref(opts);
    return 1;
  }
  if (make_callbacks() != 0)
    return fputs("error: out of memory\n", stderr), 1;
  memset(body_chunk, 'x', sizeof body_chunk);

  /* One factory per protocol; the dispatch factory routes by the negotiated one. A client that
   * negotiated nothing (no ALPN) gets HTTP/1.1: the fallback. */
  static weft_factory h2 = {.build_protocol = build_h2};
  static weft_factory h1 = {.build_protocol = build_h1};
  const weft_dispatch_entry routes[] = {{"h2", &h2}, {"http/1.1", &h1}};
  weft_factory *dispatch = NULL;
  weft_reactor *reactor = NULL;
  weft_listener *listener = NULL;
  if ((rc = weft_dispatch_factory_new(routes, 2, &h1, &dispatch)) == 0 &&
      (rc = weft_reactor_new(&reactor)) == 0)
    rc = weft_listen_ssl(reactor, *host ? host : NULL, (int)port, dispatch, opts, &listener);
  weft_cert_options_unref(opts); /* the listener holds its own reference */
  if (rc == 0 && weft_reactor_stop_on_signals(reactor) != 0)
    rc = WEFT_EINVAL;
  if (rc != 0) {
    fprintf(stderr, "error: cannot listen on %s:%ld: %s\n", host, port, weft_strerror(rc));
    weft_reactor_free(reactor);
    weft_dispatch_factory_free(dispatch);
    nghttp2_session_callbacks_del(h2_callbacks);
    return 1;
  }

  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char addr[64] = "?";
  if (weft_listener_address(listener, (struct sockaddr *)&ss, &len) == 0)
    weft_address_format((struct sockaddr *)&ss, addr, sizeof addr);
  printf("listening on %s\n", addr);
  fflush(stdout); /* a driver waits for this line */

  rc = weft_reactor_run(reactor);       /* until SIGTERM or SIGINT */
  weft_reactor_free(reactor);           /* closes every connection: each gets connection_lost */
  weft_dispatch_factory_free(dispatch); /* only once nothing can use it any more */
  nghttp2_session_callbacks_del(h2_callbacks);
  fprintf(stderr, "h2: %llu connections, %llu requests\n", h2_connections, h2_requests);
  fprintf(stderr, "http/1.1: %llu connections, %llu requests\n", h1_connections, h1_requests);
  if (rc != 0)
    fprintf(stderr, "error: reactor: %s\n", weft_strerror(rc));
  return rc == 0 ? 0 : 1;
}
