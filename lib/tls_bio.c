/* tls_bio.c: the socket BIO under a TLS transport's SSL, which can coalesce the records OpenSSL
 * writes into fewer system calls (see tls_bio-internal.h). Reads are those of BIO_s_socket. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>

#include "alloc-internal.h"
#include "tls_bio-internal.h"

/* Room for seven records of 16 KiB and their overhead (header, tag, nonce: under 30 bytes
 * each): allocated when a bulk write starts, freed once the transport's output is empty, and
 * under glibc's mmap threshold (128 KiB), so it comes from the heap, not from mmap(2). */
#define STAGE_CAPACITY ((size_t)120 << 10)

/* The staging area, allocated when a burst starts: the counters, then the bytes. */
typedef struct {
  uint32_t off, len;  /* the staged bytes are data[off, off + len): whole records */
  uint32_t head_end;  /* where the first record not fully written ends in data */
  uint32_t head_plain; /* ... and its plaintext bytes */
  uint32_t plain;     /* plaintext bytes of the staged records not fully written */
  unsigned char data[];
} tls_stage;

/* Per BIO: small, since every connection has one, idle or not.
 *
 * SENT is the plaintext of the application records the kernel has whole (sent directly, or
 * staged and then flushed): what the transport reports pending is the plaintext written minus
 * SENT. (Counting the output buffer instead would count twice the records of an SSL_write that
 * the BIO interrupted with a retry: OpenSSL keeps its place, and the bufferevent drains nothing
 * until the whole SSL_write succeeds.) To know which bytes complete a record, the BIO follows
 * the record framing of what it sends directly (FRAME_LEFT, HDR); staged bytes are whole
 * records. */
typedef struct {
  int fd;
  uint8_t staging;  /* the transport allows staging (application data, AEAD suite) */
  uint8_t counting; /* application data flows: keep SENT (AEAD suites, after the handshake) */
  uint8_t overhead; /* record bytes that are not plaintext: header, tag, nonce, type */
  uint8_t hdr_have; /* bytes of the next record's header taken so far (0 to 4) */
  uint8_t hdr[5];
  uint8_t frame_app;    /* the record being taken is application data */
  uint16_t frame_plain; /* ... and its plaintext */
  uint32_t frame_left;  /* bytes of the record being taken still to come (0: at a boundary) */
  tls_stage *st;        /* NULL when nothing is staged and no burst is under way */
  void *owner;          /* the transport's TLS state (weft__tls_bio_owner) */
  const SSL *ssl;       /* whose records these are (weft__tls_bio_start_staging) */
  uint64_t sent;        /* see above */
} tls_bio_state;

static BIO_METHOD *method;
static int method_type;
static pthread_once_t method_once = PTHREAD_ONCE_INIT;

static int is_retry(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

static size_t staged_len(const tls_bio_state *s) { return s->st ? s->st->len : 0; }

/* The length of the record that starts at P (header included), 0 if fewer than 5 bytes. */
static size_t record_len(const unsigned char *p, size_t avail) {
  return avail < 5 ? 0 : 5 + ((size_t)p[3] << 8 | p[4]);
}

static size_t plain_of(const tls_bio_state *s, size_t rec) {
  return rec > s->overhead ? rec - s->overhead : 0;
}

/* An application data record (outer type 23) written outside a handshake: TLS 1.2 alerts have
 * their own type; TLS 1.3 hides the type, but its post-handshake messages (KeyUpdate, ...) are
 * written while the SSL is in a handshake state. */
static int app_record(const tls_bio_state *s, const unsigned char *hdr) {
  return hdr[0] == 23 && s->ssl != NULL && !SSL_in_init(s->ssl);
}

/* Plaintext bytes in DATA if it is whole application records, at a record boundary; (size_t)-1
 * if it is not (those bytes are not staged). */
static size_t parse_records(const tls_bio_state *s, const unsigned char *data, size_t n) {
  if (s->frame_left != 0 || s->hdr_have != 0)
    return (size_t)-1;
  size_t at = 0, plain = 0;
  while (at < n) {
    size_t rec = record_len(data + at, n - at);
    if (rec == 0 || rec > n - at || !app_record(s, data + at))
      return (size_t)-1;
    plain += plain_of(s, rec);
    at += rec;
  }
  return plain;
}

/* Follows the framing over K bytes the BIO sent directly: each application record completed
 * adds its plaintext to SENT. */
static void frame_taken(tls_bio_state *s, const unsigned char *p, size_t k) {
  while (k > 0) {
    if (s->frame_left > 0) {
      size_t take = k < s->frame_left ? k : s->frame_left;
      s->frame_left -= (uint32_t)take;
      p += take;
      k -= take;
      if (s->frame_left == 0 && s->frame_app)
        s->sent += s->frame_plain;
      continue;
    }
    size_t take = 5u - s->hdr_have;
    if (take > k)
      take = k;
    memcpy(s->hdr + s->hdr_have, p, take);
    s->hdr_have = (uint8_t)(s->hdr_have + take);
    p += take;
    k -= take;
    if (s->hdr_have < 5)
      break;
    s->hdr_have = 0;
    size_t body = (size_t)s->hdr[3] << 8 | s->hdr[4];
    s->frame_app = s->counting && app_record(s, s->hdr);
    s->frame_plain = (uint16_t)plain_of(s, 5 + body);
    s->frame_left = (uint32_t)body;
    if (body == 0 && s->frame_app)
      s->sent += s->frame_plain;
  }
}

/* Writes what is staged. 1: all written; 0: the socket is full; -1: error (errno). */
static int flush_staged(tls_bio_state *s) {
  tls_stage *g = s->st;
  if (!g)
    return 1;
  while (g->len > 0) {
    ssize_t n = send(s->fd, g->data + g->off, g->len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return is_retry(errno) ? 0 : -1;
    }
    g->off += (uint32_t)n;
    g->len -= (uint32_t)n;
    /* Records now wholly in the kernel leave the count of what is pending. */
    size_t end = (size_t)g->off + g->len;
    while (g->head_end > 0 && g->off >= g->head_end) {
      g->plain -= g->head_plain;
      if (s->counting)
        s->sent += g->head_plain;
      if (g->head_end >= end) {
        g->head_end = 0; /* no record left */
        break;
      }
      size_t rec = record_len(g->data + g->head_end, end - g->head_end);
      g->head_end += (uint32_t)rec;
      g->head_plain = (uint32_t)plain_of(s, rec);
    }
  }
  g->off = g->len = g->head_end = g->head_plain = g->plain = 0;
  return 1;
}

static int bio_write(BIO *bio, const char *data, int len) {
  tls_bio_state *s = BIO_get_data(bio);
  BIO_clear_retry_flags(bio);
  if (len <= 0)
    return 0;
  size_t n = (size_t)len;
  const unsigned char *p = (const unsigned char *)data;
  size_t plain = s->staging && n <= STAGE_CAPACITY ? parse_records(s, p, n) : (size_t)-1;
  int stage = plain != (size_t)-1;
  tls_stage *g = s->st;
  if (g && g->len > 0 && (!stage || g->off + g->len + n > STAGE_CAPACITY)) {
    /* Order first: what is staged leaves before these bytes. */
    int rc = flush_staged(s);
    if (rc < 0)
      return -1;
    if (rc == 0 && (!stage || g->len + n > STAGE_CAPACITY)) {
      BIO_set_retry_write(bio); /* the caller keeps the record and comes back */
      return -1;
    }
    if (g->len > 0 && g->off > 0) { /* room at the end: move what is left to the front */
      memmove(g->data, g->data + g->off, g->len);
      g->head_end -= g->off;
      g->off = 0;
    }
  }
  if (stage) {
    if (!g) {
      if (!(g = weft__malloc(sizeof *g + STAGE_CAPACITY))) {
        errno = ENOMEM;
        return -1;
      }
      g->off = g->len = g->head_end = g->head_plain = g->plain = 0;
      s->st = g;
    }
    if (g->len == 0) {
      g->off = 0;
      g->head_end = (uint32_t)record_len(p, n);
      g->head_plain = (uint32_t)plain_of(s, g->head_end);
    }
    memcpy(g->data + g->off + g->len, p, n);
    g->len += (uint32_t)n;
    g->plain += (uint32_t)plain;
    return len;
  }
  for (;;) {
    ssize_t w = send(s->fd, p, n, MSG_NOSIGNAL);
    if (w >= 0) {
      /* A record cut short: its rest comes in the next write, which is not staged (the
       * framing says it does not start a record). */
      frame_taken(s, p, (size_t)w);
      return (int)w;
    }
    if (errno == EINTR)
      continue;
    if (is_retry(errno))
      BIO_set_retry_write(bio);
    return -1;
  }
}

static int bio_read(BIO *bio, char *out, int len) {
  tls_bio_state *s = BIO_get_data(bio);
  BIO_clear_retry_flags(bio);
  if (!out || len <= 0)
    return 0;
  for (;;) {
    ssize_t n = read(s->fd, out, (size_t)len);
    if (n > 0)
      return (int)n;
    if (n == 0) {
      BIO_set_flags(bio, BIO_FLAGS_IN_EOF);
      return 0;
    }
    if (errno == EINTR)
      continue;
    if (is_retry(errno))
      BIO_set_retry_read(bio);
    return -1;
  }
}

static int bio_puts(BIO *bio, const char *str) { return bio_write(bio, str, (int)strlen(str)); }

static long bio_ctrl(BIO *bio, int cmd, long num, void *ptr) {
  tls_bio_state *s = BIO_get_data(bio);
  switch (cmd) {
  case BIO_C_GET_FD:
    if (ptr)
      *(int *)ptr = s->fd;
    return s->fd;
  case BIO_CTRL_GET_CLOSE:
    return BIO_NOCLOSE; /* the transport's bufferevent owns the descriptor */
  case BIO_CTRL_SET_CLOSE:
    (void)num;
    return 1;
  case BIO_CTRL_FLUSH: {
    BIO_clear_retry_flags(bio);
    int rc = flush_staged(s);
    if (rc == 0)
      BIO_set_retry_write(bio);
    return rc > 0 ? 1 : rc == 0 ? 0 : -1;
  }
  case BIO_CTRL_WPENDING:
    return (long)staged_len(s);
  case BIO_CTRL_PENDING:
    return 0;
  case BIO_CTRL_EOF:
    return BIO_test_flags(bio, BIO_FLAGS_IN_EOF) != 0;
  case BIO_CTRL_DUP:
  case BIO_CTRL_PUSH:
  case BIO_CTRL_POP:
    return 1;
  default:
    return 0;
  }
}

static int bio_create(BIO *bio) {
  BIO_set_init(bio, 0);
  BIO_set_data(bio, NULL);
  return 1;
}

static int bio_destroy(BIO *bio) {
  tls_bio_state *s = BIO_get_data(bio);
  if (s) {
    weft__free(s->st);
    weft__free(s);
  }
  BIO_set_data(bio, NULL);
  return 1;
}

static void make_method(void) {
  int index = BIO_get_new_index();
  if (index < 0)
    return;
  BIO_METHOD *m = BIO_meth_new(index | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "weft socket");
  if (!m)
    return;
  if (!BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
      !BIO_meth_set_puts(m, bio_puts) || !BIO_meth_set_ctrl(m, bio_ctrl) ||
      !BIO_meth_set_create(m, bio_create) || !BIO_meth_set_destroy(m, bio_destroy)) {
    BIO_meth_free(m);
    return;
  }
  method_type = index | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR;
  method = m; /* kept for the life of the process, like OpenSSL's own methods */
}

BIO *weft__tls_bio_new(int fd) {
  pthread_once(&method_once, make_method);
  if (!method)
    return NULL;
  tls_bio_state *s = weft__calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->fd = fd;
  BIO *bio = BIO_new(method);
  if (!bio) {
    weft__free(s);
    return NULL;
  }
  BIO_set_data(bio, s);
  BIO_set_init(bio, 1);
  return bio;
}

int weft__tls_bio_is_ours(BIO *bio) { return bio && method && BIO_method_type(bio) == method_type; }

/* Record bytes that carry no plaintext with SSL's suite, 0 for a suite without a fixed
 * overhead (CBC: padding), whose records are never staged. */
static size_t record_overhead(const SSL *ssl) {
  const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
  if (!c || !SSL_CIPHER_is_aead(c))
    return 0;
  const char *name = SSL_CIPHER_get_name(c);
  int short_tag = name && (strstr(name, "CCM8") || strstr(name, "CCM_8"));
  if (SSL_version(ssl) >= TLS1_3_VERSION) /* header, tag, inner content type */
    return 5 + (short_tag ? 8 : 16) + 1;
  switch (SSL_CIPHER_get_cipher_nid(c)) {
  case NID_chacha20_poly1305: /* header, tag */
    return 5 + 16;
  case NID_aes_128_gcm:
  case NID_aes_256_gcm:
  case NID_aria_128_gcm:
  case NID_aria_256_gcm:
  case NID_aes_128_ccm:
  case NID_aes_256_ccm: /* header, explicit nonce, tag */
    return 5 + 8 + (short_tag ? 8 : 16);
  default:
    return 0;
  }
}

void weft__tls_bio_start_staging(BIO *bio, const SSL *ssl) {
  tls_bio_state *s = BIO_get_data(bio);
  s->ssl = ssl;
  if (staged_len(s) == 0)
    s->overhead = (uint8_t)record_overhead(ssl);
  s->staging = s->overhead > 0;
  s->counting = s->overhead > 0;
}

int weft__tls_bio_sent(BIO *bio, uint64_t *sent) {
  tls_bio_state *s = BIO_get_data(bio);
  if (!s || !s->counting)
    return 0;
  *sent = s->sent;
  return 1;
}

void weft__tls_bio_set_staging(BIO *bio, int on) {
  tls_bio_state *s = BIO_get_data(bio);
  s->staging = on && s->overhead > 0;
}

size_t weft__tls_bio_staged(BIO *bio) {
  tls_bio_state *s = BIO_get_data(bio);
  return s ? staged_len(s) : 0;
}

int weft__tls_bio_flush(BIO *bio) {
  tls_bio_state *s = BIO_get_data(bio);
  return flush_staged(s);
}

void weft__tls_bio_trim(BIO *bio) {
  tls_bio_state *s = BIO_get_data(bio);
  if (s->st && s->st->len == 0) {
    weft__free(s->st);
    s->st = NULL;
  }
}

void weft__tls_bio_discard(BIO *bio) {
  tls_bio_state *s = BIO_get_data(bio);
  if (s->st)
    s->st->off = s->st->len = s->st->head_end = s->st->head_plain = s->st->plain = 0;
}

void weft__tls_bio_set_owner(BIO *bio, void *owner) {
  tls_bio_state *s = BIO_get_data(bio);
  s->owner = owner;
}

void *weft__tls_bio_owner(BIO *bio) {
  if (!weft__tls_bio_is_ours(bio))
    return NULL;
  tls_bio_state *s = BIO_get_data(bio);
  return s ? s->owner : NULL;
}
