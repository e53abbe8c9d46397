/* s4-breakdown: where does each byte of an idle weft TLS server connection go? (issue #7, S4)
 *
 *   s4-breakdown --client PATH/idleclient [-n 2000] [--plain] [--top 40]
 *                [--no-cache] [--no-tickets] [--num-tickets K] [--free-buffers]
 *                [--no-read-ahead] [--ciphersuites LIST] [--groups LIST]
 *
 * Installs counting allocators before anything else runs: CRYPTO_set_mem_functions (OpenSSL
 * passes file and line: bytes are kept per file:line), event_set_mem_functions (libevent) and
 * weft_set_allocator (weft); for the last two the allocation site is found with backtrace(3)
 * (the program is linked statically with -g, so addr2line names even static functions). Every
 * block carries a 16-byte header (owner site, size), so frees subtract from the right site.
 * The per-connection protocol struct (a copy of samples/https-hello's struct http_conn) is
 * counted as "app".
 *
 * Then runs a weft TLS server (EC P-256 key and certificate made in process, ALPN http/1.1,
 * "GET /" answered as https-hello does) in the main thread, warms it up with a few
 * connections, snapshots the live bytes per site with 0 connections, has idleclient (a child
 * process, exec'd) open N TLS 1.3 connections that each do one keep-alive GET / and then stay
 * idle, snapshots again, and prints the difference divided by N: per owner, per OpenSSL source
 * file, per site. Also VmRSS, mallinfo2 (arena/uordblks/fordblks) and the glibc chunk size that
 * the requested sizes would take without the header (size + 8 rounded up to 16, at least 32),
 * so the gap between "bytes asked for" and RSS shows. --plain installs no hooks at all: the
 * RSS per connection is then the real one (no 16-byte headers).
 *
 * The options after --plain are experiments done from the application side (no library
 * change): the server session cache off, tickets off, SSL_CTX_set_num_tickets, SSL_free_buffers
 * once the response is written, read-ahead off.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <weft/weft.h>

/* --- counting allocators ------------------------------------------------------------------ */

enum owner { OWN_OPENSSL, OWN_LIBEVENT, OWN_WEFT, OWN_APP, OWN_N };
static const char *const owner_name[OWN_N] = {"OpenSSL", "libevent", "weft", "app (sample)"};

struct site {
  int used;
  int owner;
  const char *file; /* OpenSSL: its file; others: NULL */
  int line;
  void *pc[2];                     /* libevent/weft: the allocating function and its caller */
  long bytes, blocks, chunk;       /* live now */
  long a_bytes, a_blocks, a_chunk; /* at snapshot A */
};

#define NSITES 16384
static struct site sites[NSITES];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int hooks_on;

#define HDR 16
struct hdr {
  uint32_t site;
  uint32_t magic;
  size_t size;
};
#define MAGIC 0x5e4b7a11u

/* What glibc's malloc would take for a request of N bytes (64-bit): N + 8, rounded to 16. */
static size_t chunk_of(size_t n) {
  size_t c = (n + 8 + 15) & ~(size_t)15;
  return c < 32 ? 32 : c;
}

static uint32_t site_index(int owner, const char *file, int line, void *pc0, void *pc1) {
  uintptr_t h = (uintptr_t)file * 31 + (uintptr_t)line * 1000003u + (uintptr_t)pc0 * 17 +
                (uintptr_t)pc1 * 131 + (uintptr_t)owner;
  h ^= h >> 17;
  h *= 0x9E3779B97F4A7C15ull;
  for (size_t i = (h >> 20) % NSITES;; i = (i + 1) % NSITES) {
    struct site *s = &sites[i];
    if (!s->used) {
      s->used = 1, s->owner = owner, s->file = file, s->line = line;
      s->pc[0] = pc0, s->pc[1] = pc1;
      return (uint32_t)i;
    }
    if (s->owner == owner && s->file == file && s->line == line && s->pc[0] == pc0 &&
        s->pc[1] == pc1)
      return (uint32_t)i;
  }
}

static void account(uint32_t si, size_t size, int sign) {
  struct site *s = &sites[si];
  s->bytes += sign * (long)size;
  s->blocks += sign;
  s->chunk += sign * (long)chunk_of(size);
}

static void *tagged_alloc(size_t size, uint32_t si, int zero) {
  struct hdr *h = zero ? calloc(1, HDR + size) : malloc(HDR + size);
  if (!h)
    return NULL;
  h->site = si, h->magic = MAGIC, h->size = size;
  pthread_mutex_lock(&lock);
  account(si, size, +1);
  pthread_mutex_unlock(&lock);
  return (char *)h + HDR;
}

static void tagged_free(void *p) {
  if (!p)
    return;
  struct hdr *h = (struct hdr *)((char *)p - HDR);
  if (h->magic != MAGIC)
    abort();
  pthread_mutex_lock(&lock);
  account(h->site, h->size, -1);
  pthread_mutex_unlock(&lock);
  h->magic = 0;
  free(h);
}

static void *tagged_realloc(void *p, size_t size, uint32_t si) {
  if (!p)
    return tagged_alloc(size, si, 0);
  if (size == 0) {
    tagged_free(p);
    return NULL;
  }
  struct hdr *h = (struct hdr *)((char *)p - HDR);
  if (h->magic != MAGIC)
    abort();
  uint32_t old_si = h->site;
  size_t old = h->size;
  struct hdr *n = realloc(h, HDR + size);
  if (!n)
    return NULL;
  pthread_mutex_lock(&lock);
  account(old_si, old, -1);
  account(si, size, +1); /* the block now belongs to the site that grew it */
  pthread_mutex_unlock(&lock);
  n->site = si, n->size = size;
  return (char *)n + HDR;
}

/* The caller's site: frames[0] is this helper's caller (our hook), [1] the library's wrapper
 * (event_mm_malloc_ / weft__malloc), [2] the allocating function, [3] its caller. */
static __attribute__((noinline)) uint32_t bt_site(int owner) {
  void *f[6] = {0};
  int n = backtrace(f, 6);
  void *pc0 = n > 3 ? f[3] : NULL, *pc1 = n > 4 ? f[4] : NULL;
  pthread_mutex_lock(&lock);
  uint32_t si = site_index(owner, NULL, 0, pc0, pc1);
  pthread_mutex_unlock(&lock);
  return si;
}

static uint32_t file_site(const char *file, int line) {
  pthread_mutex_lock(&lock);
  uint32_t si = site_index(OWN_OPENSSL, file, line, NULL, NULL);
  pthread_mutex_unlock(&lock);
  return si;
}

/* OpenSSL */
static void *ossl_malloc(size_t n, const char *file, int line) {
  return tagged_alloc(n, file_site(file, line), 0);
}
static void *ossl_realloc(void *p, size_t n, const char *file, int line) {
  return tagged_realloc(p, n, file_site(file, line));
}
static void ossl_free(void *p, const char *file, int line) {
  (void)file, (void)line;
  tagged_free(p);
}

/* libevent (its calloc calls malloc then memset) */
static __attribute__((noinline)) void *ev_malloc(size_t n) {
  return tagged_alloc(n, bt_site(OWN_LIBEVENT), 0);
}
static __attribute__((noinline)) void *ev_realloc(void *p, size_t n) {
  return tagged_realloc(p, n, bt_site(OWN_LIBEVENT));
}
static void ev_free(void *p) {
  tagged_free(p);
}

/* weft */
static __attribute__((noinline)) void *w_malloc(size_t n, void *ud) {
  (void)ud;
  return tagged_alloc(n, bt_site(OWN_WEFT), 0);
}
static __attribute__((noinline)) void *w_calloc(size_t c, size_t n, void *ud) {
  (void)ud;
  if (n && c > SIZE_MAX / n)
    return NULL;
  return tagged_alloc(c * n, bt_site(OWN_WEFT), 1);
}
static __attribute__((noinline)) void *w_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  return tagged_realloc(p, n, bt_site(OWN_WEFT));
}
static void w_free(void *p, void *ud) {
  (void)ud;
  tagged_free(p);
}

/* the sample's own memory */
static uint32_t app_site_conn, app_site_in;
static void *app_calloc(size_t n, uint32_t si) {
  if (!hooks_on)
    return calloc(1, n);
  return tagged_alloc(n, si, 1);
}
static void app_free(void *p) {
  if (!hooks_on)
    free(p);
  else
    tagged_free(p);
}
static void *app_realloc(void *p, size_t n) {
  if (!hooks_on)
    return realloc(p, n);
  return tagged_realloc(p, n, app_site_in);
}

/* --- snapshots ---------------------------------------------------------------------------- */

static long vmrss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &v) == 1)
      break;
  if (f)
    fclose(f);
  return v;
}

/* System-wide kernel figures: TCP socket buffer pages, and slab. */
static void kernel_mem(long *tcp_mem_pages, long *slab_kib, long *tcp_inuse) {
  char line[512];
  *tcp_mem_pages = *slab_kib = *tcp_inuse = -1;
  FILE *f = fopen("/proc/net/sockstat", "r");
  while (f && fgets(line, sizeof line, f)) {
    long inuse, orphan, tw, alloc, mem;
    if (sscanf(line, "TCP: inuse %ld orphan %ld tw %ld alloc %ld mem %ld", &inuse, &orphan, &tw,
               &alloc, &mem) == 5)
      *tcp_mem_pages = mem, *tcp_inuse = inuse;
  }
  if (f)
    fclose(f);
  f = fopen("/proc/meminfo", "r");
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "Slab: %ld", slab_kib) == 1)
      break;
  if (f)
    fclose(f);
}

struct snap {
  long rss, tcp_mem, slab, tcp_inuse;
  struct mallinfo2 mi;
};

static void take(struct snap *s, int mark_sites) {
  s->rss = vmrss_kib();
  s->mi = mallinfo2();
  kernel_mem(&s->tcp_mem, &s->slab, &s->tcp_inuse);
  if (mark_sites) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < NSITES; i++) {
      sites[i].a_bytes = sites[i].bytes;
      sites[i].a_blocks = sites[i].blocks;
      sites[i].a_chunk = sites[i].chunk;
    }
    pthread_mutex_unlock(&lock);
  }
}

/* --- symbolizing pcs (addr2line on whichever object holds them) ---------------------------- */

static void describe_pc(void *pc, char *out, size_t size) {
  Dl_info info;
  struct link_map *lm = NULL;
  if (!pc || !dladdr1(pc, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm) {
    snprintf(out, size, "?");
    return;
  }
  /* the return address points after the call: look up pc-1 */
  uintptr_t off = (uintptr_t)pc - 1 - lm->l_addr;
  const char *obj = info.dli_fname;
  char exe[512];
  if (!obj || !*obj || lm->l_name[0] == '\0') {
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[k > 0 ? k : 0] = '\0';
    obj = exe;
  }
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "addr2line -f -s -e '%s' 0x%lx 2>/dev/null", obj, (unsigned long)off);
  FILE *p = popen(cmd, "r");
  char fn[256] = "?", loc[256] = "?";
  if (p) {
    if (fgets(fn, sizeof fn, p))
      fn[strcspn(fn, "\n")] = '\0';
    if (fgets(loc, sizeof loc, p))
      loc[strcspn(loc, "\n (")] = '\0';
    pclose(p);
  }
  if (!strcmp(fn, "??") && info.dli_sname)
    snprintf(fn, sizeof fn, "%s", info.dli_sname);
  snprintf(out, size, "%s%s%s", fn, strcmp(loc, "??:0") && strcmp(loc, "??:?") ? " " : "",
           strcmp(loc, "??:0") && strcmp(loc, "??:?") ? loc : "");
}

/* --- the server (https-hello's protocol, trimmed to GET /) ---------------------------------- */

struct opts {
  long n;
  int plain, no_cache, no_tickets, num_tickets, free_buffers, no_read_ahead, top;
  const char *client, *suites, *groups;
} O = {.n = 2000, .num_tickets = -1, .top = 45};

/* Same layout as samples/https-hello's struct http_conn. */
struct http_conn {
  weft_protocol base;
  weft_transport *transport;
  void *server;
  char *in;
  size_t in_len, in_size;
  size_t discard;
  unsigned long long body_left;
  int close_after, head_only, closing;
};

static weft_reactor *reactor;
static long requests, made_total;
static SSL_CTX *server_ctx; /* found through the first connection's SSL */

/* Diagnostics for a run that stalls: every live connection (kept outside the counted heap). */
#define MAXCONN 65536
static struct http_conn *live[MAXCONN];
static long served[MAXCONN];

static void http_made(weft_protocol *p, weft_transport *t) {
  struct http_conn *c = (struct http_conn *)p;
  c->transport = t;
  for (int i = 0; i < MAXCONN; i++)
    if (!live[i]) {
      live[i] = c, served[i] = 0;
      break;
    }
  weft_transport_set_write_low_water(t, 64 * 1024);
  SSL *ssl = weft_transport_ssl(t);
  if (ssl && !server_ctx)
    server_ctx = SSL_get_SSL_CTX(ssl);
  if (ssl && O.no_read_ahead)
    SSL_set_read_ahead(ssl, 0);
  made_total++;
}

static void http_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  struct http_conn *c = (struct http_conn *)p;
  /* keep everything until the end of the head, as the sample does (usually not at all) */
  if (c->in_len + len > c->in_size) {
    size_t size = c->in_size ? c->in_size * 2 : 4096;
    while (size < c->in_len + len)
      size *= 2;
    char *in = app_realloc(c->in, size);
    if (!in) {
      weft_transport_abort_connection(t);
      return;
    }
    c->in = in, c->in_size = size;
  }
  memcpy(c->in + c->in_len, data, len);
  c->in_len += len;
  while (c->in_len) {
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end)
      return;
    size_t used = (size_t)(end - c->in) + 4;
    static const char head[] =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n";
    weft_buf bufs[2] = {{head, sizeof head - 1}, {"Hello, World!", 13}};
    weft_transport_write_sequence(t, bufs, 2);
    requests++;
    for (int i = 0; i < MAXCONN; i++)
      if (live[i] == c) {
        served[i]++;
        break;
      }
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
  }
  app_free(c->in); /* an idle keep-alive connection keeps no input buffer (as the sample) */
  c->in = NULL, c->in_size = 0;
  SSL *ssl = weft_transport_ssl(t);
  if (O.free_buffers && ssl && weft_transport_pending_output(t) == 0)
    SSL_free_buffers(ssl); /* fails (harmlessly) if OpenSSL still holds bytes */
}

static void http_lost(weft_protocol *p, weft_transport *t, const weft_reason *r) {
  (void)t, (void)r;
  struct http_conn *c = (struct http_conn *)p;
  for (int i = 0; i < MAXCONN; i++)
    if (live[i] == c)
      live[i] = NULL;
  app_free(c->in);
  app_free(c);
}

static const weft_protocol_ops http_ops = {
    .connection_made = http_made, .data_received = http_data, .connection_lost = http_lost};

static weft_protocol *build_http(weft_factory *f, weft_transport *t, const struct sockaddr *a) {
  (void)f, (void)t, (void)a;
  struct http_conn *c = app_calloc(sizeof *c, app_site_conn);
  if (!c)
    return NULL;
  c->base.ops = &http_ops;
  return &c->base;
}

/* --- driving idleclient ---------------------------------------------------------------------- */

static pid_t child = -1;
static int child_out = -1;
static char child_buf[4096];
static size_t child_len;
static int port;

static void spawn_client(long n, int hold) {
  int pfd[2];
  if (pipe(pfd) != 0)
    exit(1);
  char sport[16], sn[32], shold[16];
  snprintf(sport, sizeof sport, "%d", port);
  snprintf(sn, sizeof sn, "%ld", n);
  snprintf(shold, sizeof shold, "%d", hold);
  child = fork();
  if (child == 0) {
    dup2(pfd[1], 1);
    close(pfd[0]);
    close(pfd[1]);
    execl(O.client, O.client, "--port", sport, "-n", sn, "-c", "4", "--hold", shold, (char *)NULL);
    _exit(127);
  }
  close(pfd[1]);
  child_out = pfd[0];
  fcntl(child_out, F_SETFL, O_NONBLOCK);
  child_len = 0;
  child_buf[0] = '\0';
}

static int child_ready(void) {
  ssize_t k;
  while (child_out >= 0 && child_len + 1 < sizeof child_buf &&
         (k = read(child_out, child_buf + child_len, sizeof child_buf - 1 - child_len)) > 0)
    child_len += (size_t)k, child_buf[child_len] = '\0';
  return strstr(child_buf, "READY") != NULL;
}

static void reap_client(void) {
  if (child > 0) {
    kill(child, SIGTERM);
    waitpid(child, NULL, 0);
    child = -1;
  }
  if (child_out >= 0)
    close(child_out), child_out = -1;
}

/* Runs the loop until PRED holds (polled every 50 ms) or TIMEOUT seconds pass. */
static int (*pred_fn)(void);
static int pred_met;
static void poll_pred(void *arg) {
  (void)arg;
  if (pred_fn()) {
    pred_met = 1;
    weft_reactor_stop(reactor);
    return;
  }
  weft_reactor_call_later(reactor, 0.05, poll_pred, NULL, NULL);
}
static int timed_out;
static void on_timeout(void *arg) {
  (void)arg;
  timed_out = 1;
  weft_reactor_stop(reactor);
}
static int run_until(int (*pred)(void), double timeout) {
  weft_delayed_call *to;
  pred_fn = pred, pred_met = 0, timed_out = 0;
  weft_reactor_call_later(reactor, 0, poll_pred, NULL, NULL);
  weft_reactor_call_later(reactor, timeout, on_timeout, NULL, &to);
  weft_reactor_run(reactor);
  if (!timed_out)
    weft_delayed_call_cancel(to); /* not fired: it must not stop a later run */
  return pred_met;
}
static long target_conns;
static int all_open(void) {
  return child_ready() && (long)weft_reactor_connection_count(reactor) >= target_conns &&
         requests >= target_conns;
}
static int none_open(void) {
  return weft_reactor_connection_count(reactor) == 0;
}
static int settle_done;
static int settled(void) {
  return settle_done++ >= 20;
} /* one second of loop */

/* --- report -------------------------------------------------------------------------------- */

struct row {
  char name[300];
  int owner;
  double bytes, blocks, chunk;
};

static int by_bytes(const void *a, const void *b) {
  double d = ((const struct row *)b)->bytes - ((const struct row *)a)->bytes;
  return d > 0 ? 1 : d < 0 ? -1 : 0;
}

static const char *short_file(const char *f) {
  const char *p;
  if ((p = strstr(f, "ssl/")) || (p = strstr(f, "crypto/")) || (p = strstr(f, "providers/")))
    return p;
  return f;
}

static void report(long n) {
  double tot[OWN_N] = {0}, totb[OWN_N] = {0}, totc[OWN_N] = {0};
  static struct row rows[NSITES], files[512];
  size_t nrows = 0, nfiles = 0;
  for (size_t i = 0; i < NSITES; i++) {
    struct site *s = &sites[i];
    if (!s->used)
      continue;
    long db = s->bytes - s->a_bytes, dn = s->blocks - s->a_blocks, dc = s->chunk - s->a_chunk;
    if (db == 0 && dn == 0)
      continue;
    tot[s->owner] += (double)db / n;
    totb[s->owner] += (double)dn / n;
    totc[s->owner] += (double)dc / n;
    struct row *r = &rows[nrows++];
    r->owner = s->owner;
    r->bytes = (double)db / n, r->blocks = (double)dn / n, r->chunk = (double)dc / n;
    if (s->owner == OWN_OPENSSL) {
      snprintf(r->name, sizeof r->name, "%s:%d", short_file(s->file), s->line);
      size_t j;
      const char *sf = short_file(s->file);
      for (j = 0; j < nfiles && strcmp(files[j].name, sf); j++)
        ;
      if (j == nfiles && nfiles < 512)
        snprintf(files[nfiles++].name, sizeof files[0].name, "%s", sf);
      if (j < 512)
        files[j].bytes += r->bytes, files[j].blocks += r->blocks, files[j].chunk += r->chunk;
    } else if (s->owner == OWN_APP) {
      snprintf(r->name, sizeof r->name, "%s",
               i == app_site_conn ? "struct http_conn (calloc in build_http)"
                                  : "input buffer (realloc in http_data)");
    } else {
      char a[140], b[140];
      describe_pc(s->pc[0], a, sizeof a);
      describe_pc(s->pc[1], b, sizeof b);
      snprintf(r->name, sizeof r->name, "%s  <- %s", a, b);
    }
  }
  qsort(rows, nrows, sizeof rows[0], by_bytes);
  qsort(files, nfiles, sizeof files[0], by_bytes);
  double all = 0, allb = 0, allc = 0;
  for (int o = 0; o < OWN_N; o++)
    all += tot[o], allb += totb[o], allc += totc[o];
  printf("\n## Live heap per connection, by owner (delta / %ld)\n\n", n);
  printf("| owner | bytes/conn | KiB/conn | blocks/conn | glibc chunk bytes/conn |\n");
  printf("|---|---:|---:|---:|---:|\n");
  for (int o = 0; o < OWN_N; o++)
    printf("| %s | %.0f | %.2f | %.2f | %.0f |\n", owner_name[o], tot[o], tot[o] / 1024, totb[o],
           totc[o]);
  printf("| **total** | %.0f | **%.2f** | %.2f | %.0f (%.2f KiB) |\n", all, all / 1024, allb, allc,
         allc / 1024);
  printf("\n## OpenSSL, by source file\n\n| file | bytes/conn | blocks/conn |\n|---|---:|---:|\n");
  for (size_t j = 0; j < nfiles; j++)
    if (files[j].bytes > 0.5 || files[j].bytes < -0.5)
      printf("| %s | %.0f | %.2f |\n", files[j].name, files[j].bytes, files[j].blocks);
  printf("\n## Sites (bytes/conn >= 1), largest first\n\n");
  printf("| owner | site | bytes/conn | blocks/conn | bytes/block |\n|---|---|---:|---:|---:|\n");
  int shown = 0;
  for (size_t i = 0; i < nrows && shown < O.top; i++) {
    if (rows[i].bytes < 1 && rows[i].bytes > -1)
      continue;
    shown++;
    printf("| %s | %s | %.0f | %.2f | %.0f |\n", owner_name[rows[i].owner], rows[i].name,
           rows[i].bytes, rows[i].blocks,
           rows[i].blocks > 0.01 ? rows[i].bytes / rows[i].blocks : 0);
  }
}

/* --- main ------------------------------------------------------------------------------------ */

static void usage(void) {
  fputs("usage: s4-breakdown --client IDLECLIENT [-n N] [--plain] [--top K] [--no-cache]\n"
        "       [--no-tickets] [--num-tickets K] [--free-buffers] [--no-read-ahead]\n"
        "       [--ciphersuites LIST] [--groups LIST]\n",
        stderr);
  exit(2);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-n") && i + 1 < argc)
      O.n = atol(argv[++i]);
    else if (!strcmp(a, "--client") && i + 1 < argc)
      O.client = argv[++i];
    else if (!strcmp(a, "--top") && i + 1 < argc)
      O.top = atoi(argv[++i]);
    else if (!strcmp(a, "--num-tickets") && i + 1 < argc)
      O.num_tickets = atoi(argv[++i]);
    else if (!strcmp(a, "--ciphersuites") && i + 1 < argc)
      O.suites = argv[++i];
    else if (!strcmp(a, "--groups") && i + 1 < argc)
      O.groups = argv[++i];
    else if (!strcmp(a, "--plain"))
      O.plain = 1;
    else if (!strcmp(a, "--no-cache"))
      O.no_cache = 1;
    else if (!strcmp(a, "--no-tickets"))
      O.no_tickets = 1;
    else if (!strcmp(a, "--free-buffers"))
      O.free_buffers = 1;
    else if (!strcmp(a, "--no-read-ahead"))
      O.no_read_ahead = 1;
    else
      usage();
  }
  if (!O.client || O.n < 1)
    usage();

  if (!O.plain) {
    /* Before anything allocates. backtrace() loads libgcc_s on first use: do that now. */
    void *f[2];
    backtrace(f, 2);
    if (!CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free)) {
      fputs("CRYPTO_set_mem_functions failed: OpenSSL allocated already\n", stderr);
      return 1;
    }
    event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
    weft_allocator wa = {0, w_malloc, w_free, w_calloc, w_realloc, NULL};
    if (weft_set_allocator(&wa) != 0) {
      fputs("weft_set_allocator failed\n", stderr);
      return 1;
    }
    app_site_conn = site_index(OWN_APP, "conn", 0, NULL, NULL);
    app_site_in = site_index(OWN_APP, "in", 0, NULL, NULL);
    hooks_on = 1;
  }
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  signal(SIGPIPE, SIG_IGN);

  /* TLS options as samples/https-hello sets them up. */
  weft_cert_options *opts;
  static const char *const dns[] = {"localhost"};
  static const char *const ips[] = {"127.0.0.1", "::1"};
  static const char *const protocols[] = {"http/1.1"};
  weft_cert_spec spec = {.common_name = "localhost",
                         .dns_names = dns,
                         .dns_count = 1,
                         .ip_addresses = ips,
                         .ip_count = 2};
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  int rc = weft_cert_options_new(&opts);
  if (rc == 0)
    rc = weft_key_generate(WEFT_KEY_EC_P256, 0, &key);
  if (rc == 0)
    rc = weft_cert_generate(&spec, key, NULL, NULL, &cert);
  if (rc == 0)
    rc = weft_cert_options_set_private_key(opts, key);
  if (rc == 0)
    rc = weft_cert_options_set_certificate(opts, cert);
  if (rc == 0)
    rc = weft_cert_options_set_next_protocols(opts, protocols, 1);
  if (rc == 0 && O.suites)
    rc = weft_cert_options_set_ciphersuites(opts, O.suites);
  if (rc == 0 && O.groups)
    rc = weft_cert_options_set_groups(opts, O.groups);
  if (rc == 0 && O.no_cache)
    rc = weft_cert_options_set_session_cache(opts, 0);
  if (rc == 0 && O.no_tickets)
    rc = weft_cert_options_set_session_tickets(opts, 0);
  if (rc == 0)
    rc = weft_cert_options_prepare(opts, WEFT_TLS_SERVER);
  EVP_PKEY_free(key);
  X509_free(cert);
  weft_factory factory = {.build_protocol = build_http};
  weft_listener *listener = NULL;
  if (rc == 0)
    rc = weft_reactor_new(&reactor);
  if (rc == 0)
    rc = weft_listen_ssl(reactor, "127.0.0.1", 0, &factory, opts, &listener);
  if (rc != 0) {
    fprintf(stderr, "setup failed: %s (%s)\n", weft_strerror(rc),
            weft_cert_options_last_error(opts));
    return 1;
  }
  port = weft_listener_port(listener);

  /* Warm-up: lazy OpenSSL/libevent state (method tables, ticket keys, fetched algorithms,
   * epoll arrays) is made by the first connections, not per connection. */
  target_conns = 50;
  spawn_client(target_conns, 600);
  if (!run_until(all_open, 60)) {
    fprintf(stderr, "warm-up failed: %s\n", child_buf);
    return 1;
  }
  if (server_ctx && O.num_tickets >= 0)
    SSL_CTX_set_num_tickets(server_ctx, (size_t)O.num_tickets); /* for the measured ones */
  reap_client();
  run_until(none_open, 30);
  settle_done = 0;
  run_until(settled, 5);

  struct snap a, b, c;
  take(&a, 1);
  long req0 = requests;
  target_conns = O.n;
  requests = 0;
  spawn_client(O.n, 600);
  if (!run_until(all_open, 120)) {
    fprintf(stderr, "only %u connections (%ld requests) came: %s\n",
            weft_reactor_connection_count(reactor), requests, child_buf);
    for (int i = 0; i < MAXCONN; i++)
      if (live[i] && !served[i]) {
        SSL *ssl = weft_transport_ssl(live[i]->transport);
        fprintf(stderr,
                "  connection %p made, no request seen: SSL_pending %d, "
                "SSL_has_pending %d, in_len %zu, input buffered by weft %zu\n",
                (void *)live[i], ssl ? SSL_pending(ssl) : -1, ssl ? SSL_has_pending(ssl) : -1,
                live[i]->in_len, (size_t)0);
      }
    reap_client();
    return 1;
  }
  settle_done = 0;
  run_until(settled, 5);
  long sess_number = server_ctx ? SSL_CTX_sess_number(server_ctx) : -1;
  take(&b, 0);
  /* the report's numbers come from the live counters now, against snapshot A */
  printf("# s4-breakdown: %ld idle TLS connections (%s)\n\n", O.n,
         child_buf[0] ? strtok(child_buf, "\n") : "");
  printf("mode: %s%s%s%s%s%s\n",
         O.plain ? "plain (no hooks)" : "instrumented (16-byte header per block)",
         O.no_cache ? ", session cache off" : "", O.no_tickets ? ", tickets off" : "",
         O.free_buffers ? ", SSL_free_buffers when idle" : "",
         O.no_read_ahead ? ", read-ahead off" : "", O.num_tickets >= 0 ? ", num_tickets set" : "");
  if (O.suites)
    printf("TLS 1.3 suites: %s\n", O.suites);
  if (O.groups)
    printf("groups: %s\n", O.groups);
  if (O.num_tickets >= 0)
    printf("num_tickets: %d\n", O.num_tickets);
  printf("warm-up requests: %ld; measured connections: %u; requests: %ld\n", req0,
         weft_reactor_connection_count(reactor), requests);
  if (server_ctx) {
    SSL *probe = NULL;
    (void)probe;
    printf("server SSL_CTX: SSL_CTX_sess_number = %ld (%.3f per connection), num_tickets = %zu\n",
           sess_number, (double)sess_number / O.n, SSL_CTX_get_num_tickets(server_ctx));
  }
  double n = (double)O.n;
  printf("\n## Process and system\n\n| measure | at 0 conns | at %ld conns | delta per conn "
         "|\n|---|---:|---:|---:|\n",
         O.n);
  printf("| VmRSS (KiB) | %ld | %ld | **%.2f KiB** |\n", a.rss, b.rss, (b.rss - a.rss) / n);
  printf("| mallinfo2 arena (main arena bytes from sbrk) | %zu | %zu | %.0f B |\n", a.mi.arena,
         b.mi.arena, ((double)b.mi.arena - (double)a.mi.arena) / n);
  printf("| mallinfo2 uordblks (in use, incl. chunk headers) | %zu | %zu | %.0f B |\n",
         a.mi.uordblks, b.mi.uordblks, ((double)b.mi.uordblks - (double)a.mi.uordblks) / n);
  printf("| mallinfo2 fordblks (free in arena) | %zu | %zu | %.0f B |\n", a.mi.fordblks,
         b.mi.fordblks, ((double)b.mi.fordblks - (double)a.mi.fordblks) / n);
  printf("| mallinfo2 hblkhd (mmapped) | %zu | %zu | %.0f B |\n", a.mi.hblkhd, b.mi.hblkhd,
         ((double)b.mi.hblkhd - (double)a.mi.hblkhd) / n);
  printf("| kernel TCP buffer pages (sockstat mem, both ends) | %ld | %ld | %.2f KiB |\n",
         a.tcp_mem, b.tcp_mem, (b.tcp_mem - a.tcp_mem) * 4.0 / n);
  printf("| kernel Slab (system-wide, both ends) KiB | %ld | %ld | %.2f KiB |\n", a.slab, b.slab,
         (b.slab - a.slab) / n);
  if (!O.plain)
    report(O.n);

  reap_client();
  run_until(none_open, 60);
  take(&c, 0);
  if (!O.plain) {
    long left = 0;
    for (size_t i = 0; i < NSITES; i++)
      left += sites[i].bytes - sites[i].a_bytes;
    printf("\nafter the clients left: %u connections, live bytes vs 0-conn snapshot: %+ld, "
           "VmRSS %ld KiB\n",
           weft_reactor_connection_count(reactor), left, c.rss);
  } else {
    printf("\nafter the clients left: %u connections, VmRSS %ld KiB\n",
           weft_reactor_connection_count(reactor), c.rss);
  }
  weft_reactor_free(reactor);
  weft_cert_options_unref(opts);
  return 0;
}
