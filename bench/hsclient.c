/* hsclient: one new TLS connection per request, to measure the server's handshake cost.
 *
 *   hsclient --port P [--host 127.0.0.1] [-n 2000] [-c 4] [--resume] [--tls12] [--max-seconds 300]
 *
 * Each connection: TCP connect, TLS handshake (TLS 1.3 only unless --tls12), "GET /" with
 * "Connection: close", read the whole response, SSL_shutdown (close_notify), close. -c K
 * threads run N/K connections each. --resume: each thread offers the session of its previous
 * connection, taken with SSL_get1_session AFTER the response was read (so the TLS 1.3
 * NewSessionTicket messages have arrived); SSL_session_reused counts the real resumptions.
 * Tickets: a new-session callback on the client SSL_CTX (SSL_SESS_CACHE_CLIENT |
 * SSL_SESS_CACHE_NO_INTERNAL_STORE, returning 0 so OpenSSL keeps ownership) counts, per
 * connection, the sessions the server gives it: in TLS 1.3 one per NewSessionTicket message
 * processed before the whole response was read (a server sends them right after its
 * handshake, so they all are); in TLS 1.2 (--tls12) one per full handshake, none when resumed.
 * Prints one line "RESULT conns=.. ok=.. failed=.. resumed=.. resumable=.. tickets=..
 * tickets_per_conn=.. tickets_min=.. tickets_max=.. elapsed_s=.. rate=.." (tickets_per_conn:
 * tickets / ok; min and max over the ok connections) and exits 1 on any failed connection, 3
 * when --resume resumed < 95%.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>

#include "benchcommon.h"

static const char *host = "127.0.0.1";
static int port, resume, tls12;
static long per_thread;
static double deadline;
static SSL_CTX *ctx;

struct result {
  long ok, failed, resumed, resumable; /* resumable: connections that offered a session */
  long tickets, tickets_min, tickets_max; /* sessions received on the ok connections */
};

/* Sessions (tickets) received on this thread's current connection. */
static _Thread_local long conn_tickets;

/* The client's new-session callback: OpenSSL calls it for each session the server hands out
 * (TLS 1.3: each NewSessionTicket). Returning 0 leaves the session to OpenSSL. */
static int count_ticket(SSL *ssl, SSL_SESSION *sess) {
  (void)ssl, (void)sess;
  conn_tickets++;
  return 0;
}

static void *run(void *arg) {
  struct result *r = arg;
  SSL_SESSION *sess = NULL;
  char buf[16384];
  static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  for (long i = 0; i < per_thread && now_s() < deadline; i++) {
    SSL *ssl = ssl_connect_new(ctx, host, port);
    if (!ssl) {
      r->failed++;
      continue;
    }
    int fd = SSL_get_fd(ssl);
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (sess) {
      SSL_set_session(ssl, sess);
      r->resumable++;
    }
    size_t have = 0;
    conn_tickets = 0;
    int status = 0, ok = SSL_connect(ssl) == 1 && ssl_write_all(ssl, req, sizeof req - 1) == 0 &&
                         read_response(ssl, buf, sizeof buf, &have, &status) >= 0 && status == 200;
    if (ok) {
      r->ok++;
      r->tickets += conn_tickets;
      if (r->ok == 1 || conn_tickets < r->tickets_min)
        r->tickets_min = conn_tickets;
      if (conn_tickets > r->tickets_max)
        r->tickets_max = conn_tickets;
      if (SSL_session_reused(ssl))
        r->resumed++;
      if (resume) {
        SSL_SESSION_free(sess);
        sess = SSL_get1_session(ssl); /* after the response: tickets have arrived */
      }
      SSL_shutdown(ssl); /* close_notify: the session stays resumable */
    } else {
      r->failed++;
      ERR_clear_error();
    }
    SSL_free(ssl);
    close(fd);
  }
  SSL_SESSION_free(sess);
  return NULL;
}

int main(int argc, char **argv) {
  long n = 2000, c = 4;
  double max_seconds = 300;
  for (int i = 1; i < argc; i++) {
    if (common_arg(argc, argv, &i, &port, &host, &n, &c))
      continue;
    if (!strcmp(argv[i], "--max-seconds") && i + 1 < argc)
      max_seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--resume"))
      resume = 1;
    else if (!strcmp(argv[i], "--tls12"))
      tls12 = 1;
    else {
      fprintf(stderr, "usage: hsclient --port P [--host H] [-n N] [-c K] [--resume] [--tls12]"
                      " [--max-seconds S]\n");
      return 2;
    }
  }
  if (port <= 0 || n < 1 || c < 1 || c > 256)
    return fputs("hsclient: bad arguments\n", stderr), 2;
  signal(SIGPIPE, SIG_IGN);
  ctx = client_ctx(tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
  if (!ctx)
    return fputs("hsclient: cannot make an SSL_CTX\n", stderr), 1;
  if (tls12)
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
  /* Count tickets: the callback needs client caching on; nothing is stored internally, so
   * sessions are still only offered by hand (SSL_set_session). */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, count_ticket);
  per_thread = (n + c - 1) / c;
  pthread_t th[256];
  struct result res[256];
  memset(res, 0, sizeof res);
  double t0 = now_s();
  deadline = t0 + max_seconds;
  for (long i = 0; i < c; i++)
    pthread_create(&th[i], NULL, run, &res[i]);
  struct result tot = {0, 0, 0, 0, 0, 0, 0};
  for (long i = 0; i < c; i++) {
    pthread_join(th[i], NULL);
    if (res[i].ok && (!tot.ok || res[i].tickets_min < tot.tickets_min))
      tot.tickets_min = res[i].tickets_min;
    if (res[i].tickets_max > tot.tickets_max)
      tot.tickets_max = res[i].tickets_max;
    tot.ok += res[i].ok, tot.failed += res[i].failed;
    tot.resumed += res[i].resumed, tot.resumable += res[i].resumable;
    tot.tickets += res[i].tickets;
  }
  double el = now_s() - t0;
  printf("RESULT conns=%ld ok=%ld failed=%ld resumed=%ld resumable=%ld tickets=%ld "
         "tickets_per_conn=%.2f tickets_min=%ld tickets_max=%ld elapsed_s=%.3f rate=%.1f\n",
         tot.ok + tot.failed, tot.ok, tot.failed, tot.resumed, tot.resumable, tot.tickets,
         tot.ok ? (double)tot.tickets / (double)tot.ok : 0.0, tot.tickets_min, tot.tickets_max, el,
         (double)tot.ok / el);
  if (tot.ok + tot.failed < per_thread * c)
    fprintf(stderr, "hsclient: stopped at --max-seconds %.0f\n", max_seconds);
  if (tot.failed) {
    fprintf(stderr, "hsclient: ERROR: %ld connections failed\n", tot.failed);
    return 1;
  }
  if (resume && tot.resumed < 0.95 * (double)tot.resumable) {
    fprintf(stderr, "hsclient: ERROR: resumed only %ld of %ld offered sessions (< 95%%)\n",
            tot.resumed, tot.resumable);
    return 3;
  }
  if (!resume && tot.resumed) {
    fprintf(stderr, "hsclient: ERROR: %ld connections resumed without being asked\n", tot.resumed);
    return 3;
  }
  return 0;
}
