/* producer.c: files and generators streamed into a transport between two marks of pending
 * output (see weft/producer.h). The producer watches the transport's output evbuffer with an
 * evbuffer callback (which only schedules STEP: it runs inside libevent's buffer work, where
 * no write may happen) and writes from STEP, in the loop. */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <weft/producer.h>

#include "alloc-internal.h"
#include "log-internal.h"
#include "transport-internal.h"

#define FILE_CHUNK (64 * 1024)

struct weft_producer {
  weft_transport *t;
  weft_producer_done_fn done;
  weft_produce_fn produce;
  void *arg;
  size_t low, high;
  int pause_reading, paused_reading;
  int waiting; /* for the output to fall to LOW */
  int status;  /* 1: running; else the status DONE gets */
  struct event *step;
  struct evbuffer *out;
  struct evbuffer_cb_entry *watch;
  /* file */
  int fd;
  struct evbuffer_file_segment *seg; /* plain TCP: sendfile */
  int64_t offset, left;              /* LEFT -1: to the end (TLS path reads until EOF) */
  int64_t seg_pos;                   /* next offset inside SEG */
};

static void finish(weft_producer *p, int status) {
  weft_transport *t = p->t;
  evbuffer_remove_cb_entry(p->out, p->watch);
  event_free(p->step);
  if (p->seg)
    evbuffer_file_segment_free(p->seg); /* chunks still queued hold their own reference */
  t->helper.ended = NULL;
  t->helper.arg = NULL;
  if (p->paused_reading && t->state == WEFT__T_OPEN)
    weft_transport_resume_reading(t);
  weft_producer_done_fn done = p->done;
  void *arg = p->arg;
  weft__free(p);
  if (done)
    done(arg, status);
}

/* The transport's helper hook: it ends, before connection_lost. */
static void transport_ended(void *arg, const weft_reason *reason) {
  weft_producer *p = arg;
  finish(p, reason->code != WEFT_OK ? reason->code : WEFT_ECLOSED);
}

static void on_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg) {
  weft_producer *p = arg;
  (void)info;
  if (p->waiting && evbuffer_get_length(buf) <= p->low) {
    p->waiting = 0;
    event_active(p->step, EV_TIMEOUT, 1);
  }
}

static void free_chunk(const void *data, size_t len, void *arg) {
  (void)len;
  (void)arg;
  weft__free((void *)data);
}

/* One piece of the file: 1 more to come, 0 done, or an error. */
static int file_chunk(weft_producer *p) {
  if (p->left == 0)
    return 0;
  size_t want = p->left < 0 || p->left > FILE_CHUNK ? FILE_CHUNK : (size_t)p->left;
  if (p->seg) {
    if (evbuffer_add_file_segment(p->out, p->seg, p->seg_pos, (ev_off_t)want) != 0)
      return WEFT_ENOMEM;
    p->seg_pos += (int64_t)want;
    p->left -= (int64_t)want;
    return p->left > 0;
  }
  uint8_t *chunk = weft__malloc(want);
  if (!chunk)
    return WEFT_ENOMEM;
  ssize_t n = pread(p->fd, chunk, want, (off_t)p->offset);
  if (n <= 0) {
    weft__free(chunk);
    if (n == 0 && p->left < 0)
      return 0; /* end of file */
    weft__log(p->t->reactor, WEFT_LOG_ERROR, "producer: reading the file failed: %s",
              n < 0 ? strerror(errno) : "it is shorter than the length given");
    return WEFT_EIO;
  }
  p->offset += n;
  if (p->left > 0)
    p->left -= n;
  int rc = weft_transport_write_reference(p->t, chunk, (size_t)n, free_chunk, NULL);
  if (rc != 0) {
    weft__free(chunk);
    return rc;
  }
  return p->left != 0;
}

static void on_step(evutil_socket_t fd, short what, void *arg) {
  weft_producer *p = arg;
  (void)fd;
  (void)what;
  weft_transport *t = p->t;
  if (p->status != 1) {
    finish(p, p->status);
    return;
  }
  if (t->state != WEFT__T_OPEN || t->write_closed) {
    finish(p, WEFT_ECLOSED);
    return;
  }
  if (p->paused_reading) {
    p->paused_reading = 0;
    weft_transport_resume_reading(t);
  }
  /* A bounded number of calls per step, so a generator that writes nothing cannot spin. */
  for (int i = 0; i < 64 && evbuffer_get_length(p->out) < p->high; i++) {
    int rc = p->produce ? p->produce(p->arg, t) : file_chunk(p);
    if (rc <= 0) {
      finish(p, rc);
      return;
    }
    if (t->helper.arg != p)
      return; /* the connection ended inside the generator: finish ran already */
    if (t->state != WEFT__T_OPEN) {
      finish(p, WEFT_ECLOSED);
      return;
    }
  }
  if (evbuffer_get_length(p->out) > p->low) {
    p->waiting = 1;
    if (p->pause_reading && !t->read_paused) {
      p->paused_reading = 1;
      weft_transport_pause_reading(t);
    }
  } else {
    event_active(p->step, EV_TIMEOUT, 1); /* room already: go on from the next pass */
  }
}

static int start(weft_transport *t, weft_producer_done_fn done, void *arg, weft_producer **out,
                 weft_producer **made) {
  if (out)
    *out = NULL;
  if (!t)
    return WEFT_EINVAL;
  if (t->helper.ended)
    return WEFT_EBUSY;
  if (t->state != WEFT__T_OPEN || t->write_closed)
    return WEFT_ECLOSED;
  weft_producer *p = weft__calloc(1, sizeof *p);
  if (!p)
    return WEFT_ENOMEM;
  p->t = t;
  p->done = done;
  p->arg = arg;
  p->low = 64 * 1024;
  p->high = 256 * 1024;
  p->status = 1;
  p->fd = -1;
  p->out = bufferevent_get_output(t->bev);
  p->step = event_new(t->reactor->base, -1, 0, on_step, p);
  p->watch = p->step ? evbuffer_add_cb(p->out, on_output, p) : NULL;
  if (!p->watch) {
    if (p->step)
      event_free(p->step);
    weft__free(p);
    return WEFT_ENOMEM;
  }
  *made = p;
  return 0;
}

static void launch(weft_producer *p, weft_producer **out) {
  p->t->helper.ended = transport_ended;
  p->t->helper.arg = p;
  event_active(p->step, EV_TIMEOUT, 1);
  if (out)
    *out = p;
}

int weft_producer_start(weft_transport *transport, weft_produce_fn produce,
                        weft_producer_done_fn done, void *arg, weft_producer **out) {
  weft_producer *p;
  if (!produce)
    return WEFT_EINVAL;
  int rc = start(transport, done, arg, out, &p);
  if (rc != 0)
    return rc;
  p->produce = produce;
  launch(p, out);
  return 0;
}

int weft_producer_start_file(weft_transport *transport, int fd, int64_t offset, int64_t length,
                             weft_producer_done_fn done, void *arg, weft_producer **out) {
  struct stat st;
  if (fd < 0 || offset < 0 || length < -1)
    return WEFT_EINVAL;
  if (fstat(fd, &st) != 0)
    return WEFT_EIO;
  if (!S_ISREG(st.st_mode))
    return WEFT_EINVAL;
  weft_producer *p;
  int rc = start(transport, done, arg, out, &p);
  if (rc != 0)
    return rc;
  p->fd = fd;
  p->offset = offset;
  p->left = length;
  if (!transport->ssl) {
    /* Plain TCP: a file segment, which libevent writes with sendfile(2). Its length must be
     * known: to the end of the file as it is now. */
    if (p->left < 0)
      p->left = st.st_size > offset ? (int64_t)st.st_size - offset : 0;
    p->seg = p->left > 0 ? evbuffer_file_segment_new(fd, offset, p->left, 0) : NULL;
    if (p->left > 0 && !p->seg) {
      evbuffer_remove_cb_entry(p->out, p->watch);
      event_free(p->step);
      weft__free(p);
      return WEFT_ENOMEM;
    }
  }
  launch(p, out);
  return 0;
}

int weft_producer_set_marks(weft_producer *p, size_t low, size_t high) {
  if (!p || high < 1 || low >= high)
    return WEFT_EINVAL;
  p->low = low;
  p->high = high;
  return 0;
}

int weft_producer_set_pause_reading(weft_producer *p, int on) {
  if (!p)
    return WEFT_EINVAL;
  p->pause_reading = on != 0;
  return 0;
}

int weft_producer_stop(weft_producer *p) {
  if (!p)
    return WEFT_EINVAL;
  if (p->status == 1) {
    p->status = WEFT_ECANCELED;
    p->waiting = 0;
    event_active(p->step, EV_TIMEOUT, 1);
  }
  return 0;
}
