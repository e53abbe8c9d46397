/* tests/load_tls.c: load tests for TLS connections over loopback (NOT part of `make check`;
 * run with `make check-load`, or ci/load.sh BUILDDIR).
 *
 *  concurrent  N (default 10,000; WEFT_LOAD_CONCURRENT) TLS connections open at once: the
 *              server (listener and its N connections) on this process's one reactor, the N
 *              clients in a forked child process with a reactor of its own, so each process
 *              needs about N descriptors rather than 2N (the hard RLIMIT_NOFILE is often 20,000
 *              and cannot be raised without CAP_SYS_RESOURCE). Connections are opened with at
 *              most 500 handshakes in flight (listen backlog 4096); once all N are established
 *              on both sides, each client sends 16 bytes and checks the echo, then all close from
 *              the client side (close_notify both ways). Prints RSS per connection of the server
 *              process alone (and, on a line of its own, of the client process), fds
 *              before/peak/after; asserts both processes' fds come back to their start values.
 *              The child reports through a pipe and never runs a Check assertion; the parent
 *              kills and reaps it on every path.
 *  handshakes  N (default 100,000; WEFT_LOAD_HANDSHAKES) short TLS 1.3 connections (EC P-256
 *              certificate and key exchange), 8 in flight at a time: connect, handshake, send
 *              1 byte, get it back, close. Asserts fds come back exactly and RSS stays within
 *              RSS(after the first 1,000) + 8 MiB, which a leak of 100 bytes per connection
 *              (10 MB over 100,000) would exceed.
 *
 * The protocols here are deliberately small (a few dozen bytes each, no tu_conn) so the RSS
 * figures measure weft, libevent and OpenSSL rather than the test's own bookkeeping.
 * Nothing sleeps: the reactor runs until a condition holds or a deadline passes. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "testutil.h"
#include "tlsutil.h"

#define LOAD_TIMEOUT 900        /* Check time-out per test, seconds */
#define CONCURRENT_DEADLINE 300 /* overall deadline of the concurrent test, seconds */
#define IN_FLIGHT_OPEN 500      /* handshakes in flight while opening the concurrent set */
#define BACKLOG 4096
#define ECHO_LEN 16
#define SEQ_IN_FLIGHT 8
#define SEQ_BASELINE 1000      /* RSS baseline taken after this many handshakes */
#define SEQ_RSS_SLACK_KIB 8192 /* allowed growth after the baseline */

static long env_long(const char *name, long def) {
  const char *s = getenv(name);
  if (s == NULL || *s == '\0')
    return def;
  char *end;
  long v = strtol(s, &end, 10);
  ck_assert_msg(*end == '\0' && v > 0, "%s=%s: expected a positive integer", name, s);
  return v;
}

/* Resident set size in KiB (/proc/self/statm, second field), or -1 (no Check assertion: the
 * concurrent test's client process uses it). */
static long rss_kib_raw(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL)
    return -1;
  long size = 0, resident = 0;
  int got = fscanf(f, "%ld %ld", &size, &resident);
  fclose(f);
  return got == 2 ? resident * (sysconf(_SC_PAGESIZE) / 1024) : -1;
}

/* Resident set size in KiB. */
static long rss_kib(void) {
  long kib = rss_kib_raw();
  ck_assert_msg(kib >= 0, "reading /proc/self/statm failed");
  return kib;
}

/* Raises RLIMIT_NOFILE so that WANT descriptors fit: soft to hard, and hard itself when we may
 * (root). Returns the soft limit in effect. */
static long raise_nofile(long want) {
  struct rlimit rl;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_max != RLIM_INFINITY && (long)rl.rlim_max < want) {
    struct rlimit up = {(rlim_t)want, (rlim_t)want};
    if (setrlimit(RLIMIT_NOFILE, &up) != 0)
      printf("load: cannot raise the hard RLIMIT_NOFILE from %ld to %ld: %s\n", (long)rl.rlim_max,
             want, strerror(errno));
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  if (rl.rlim_cur != rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  return rl.rlim_cur == RLIM_INFINITY ? want : (long)rl.rlim_cur;
}

/* --- Shared state ---------------------------------------------------------------------- */

typedef struct load {
  weft_reactor *r;
  tu_pki pki;
  weft_cert_options *sopts, *copts;
  weft_listener *listener;
  int port;
  weft_factory sfactory, cfactory;

  long target;        /* connections to make in all */
  long max_in_flight; /* connection attempts (or connections, sequential) at once */
  long started;       /* weft_connect_ssl calls that succeeded */
  long c_made, c_lost, c_failed, s_made, s_lost, s_hs_failed;
  long echoed;    /* clients that got their echo back, intact */
  long bad_echo;  /* clients that got something else */
  long bad_lost;  /* connection_lost with a reason other than WEFT_OK */
  int connect_rc; /* first weft_connect_ssl error */
  char first_error[256];

  int sequential;    /* handshakes test: clients write 1 byte in connection_made, close on echo */
  long rss_baseline; /* handshakes: RSS when SEQ_BASELINE clients were done */
} load;

typedef struct sconn {
  weft_protocol base;
  load *L;
} sconn;

typedef struct cconn {
  weft_protocol base;
  load *L;
  weft_transport *t;
  struct cconn *next; /* concurrent test: every live client, to write to and close */
  unsigned char got;
  unsigned char buf[ECHO_LEN];
} cconn;

static cconn *live_clients;

static void note_error(load *L, const char *what, const weft_reason *reason) {
  if (L->first_error[0] == '\0')
    snprintf(L->first_error, sizeof L->first_error, "%s: %s: %s", what, weft_err_name(reason->code),
             reason->message);
}

/* Starts connection attempts until MAX_IN_FLIGHT are pending or TARGET were started. For the
 * concurrent test "pending" means not yet made (handshakes in flight); for the sequential one it
 * means not yet finished. */
static void launch(load *L) {
  while (L->started < L->target && L->connect_rc == 0) {
    long busy =
        L->sequential ? L->started - L->c_lost - L->c_failed : L->started - L->c_made - L->c_failed;
    if (busy >= L->max_in_flight)
      break;
    int rc = tu_connect(L->r, "127.0.0.1", L->port, &L->cfactory, L->copts, "localhost", 60.0, NULL,
                        NULL);
    if (rc != 0) {
      L->connect_rc = rc;
      snprintf(L->first_error, sizeof L->first_error, "weft_connect_ssl: %s", weft_err_name(rc));
      return;
    }
    L->started++;
  }
}

/* Server side: echo everything. */
static void s_made(weft_protocol *p, weft_transport *t) {
  (void)t;
  ((sconn *)p)->L->s_made++;
}
static void s_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  (void)p;
  weft_transport_write(t, data, len);
}
static void s_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)t;
  load *L = ((sconn *)p)->L;
  L->s_lost++;
  if (reason->code != WEFT_OK) {
    L->bad_lost++;
    note_error(L, "server connection_lost", reason);
  }
  free(p);
}
static const weft_protocol_ops sconn_ops = {
    .connection_made = s_made, .data_received = s_data, .connection_lost = s_lost};

static weft_protocol *s_build(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)t, (void)peer;
  sconn *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->base.ops = &sconn_ops;
  c->L = f->data;
  return &c->base;
}
static void s_hs_failed(weft_factory *f, const struct sockaddr *peer, const weft_reason *reason) {
  (void)peer;
  load *L = f->data;
  L->s_hs_failed++;
  note_error(L, "server handshake_failed", reason);
}

/* Client side. */
static void c_made(weft_protocol *p, weft_transport *t) {
  cconn *c = (cconn *)p;
  load *L = c->L;
  c->t = t;
  L->c_made++;
  if (L->sequential) {
    weft_transport_write(t, "x", 1);
  } else {
    c->next = live_clients;
    live_clients = c;
    launch(L);
  }
}
static void c_data(weft_protocol *p, weft_transport *t, const uint8_t *data, size_t len) {
  cconn *c = (cconn *)p;
  load *L = c->L;
  size_t want = L->sequential ? 1 : ECHO_LEN;
  if (c->got + len > want) {
    L->bad_echo++;
    weft_transport_abort_connection(t);
    return;
  }
  memcpy(c->buf + c->got, data, len);
  c->got = (unsigned char)(c->got + len);
  if (c->got < want)
    return;
  int ok;
  if (L->sequential) {
    ok = c->buf[0] == 'x';
  } else {
    uint8_t expect[ECHO_LEN];
    tu_pattern_fill(expect, ECHO_LEN, (uint64_t)(uintptr_t)c);
    ok = memcmp(expect, c->buf, ECHO_LEN) == 0;
  }
  if (ok)
    L->echoed++;
  else
    L->bad_echo++;
  if (L->sequential)
    weft_transport_lose_connection(t);
}
static void c_lost(weft_protocol *p, weft_transport *t, const weft_reason *reason) {
  (void)t;
  cconn *c = (cconn *)p;
  load *L = c->L;
  L->c_lost++;
  if (reason->code != WEFT_OK) {
    L->bad_lost++;
    note_error(L, "client connection_lost", reason);
  }
  free(c);
  if (L->sequential) {
    if (L->c_lost == SEQ_BASELINE)
      L->rss_baseline = rss_kib();
    launch(L);
  }
}
static const weft_protocol_ops cconn_ops = {
    .connection_made = c_made, .data_received = c_data, .connection_lost = c_lost};

static weft_protocol *c_build(weft_factory *f, weft_transport *t, const struct sockaddr *peer) {
  (void)t, (void)peer;
  cconn *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->base.ops = &cconn_ops;
  c->L = f->data;
  return &c->base;
}
static void c_failed(weft_factory *f, const weft_reason *reason) {
  load *L = f->data;
  L->c_failed++;
  note_error(L, "client connection_failed", reason);
  launch(L);
}

static void load_init(load *L, long target, long max_in_flight, int sequential) {
  memset(L, 0, sizeof *L);
  live_clients = NULL;
  L->target = target;
  L->max_in_flight = max_in_flight;
  L->sequential = sequential;
  L->r = tu_reactor_new();
  tu_pki_init(&L->pki);
  L->sopts = tu_server_options(&L->pki);
  L->copts = tu_client_options(&L->pki);
  /* TLS 1.3 with the P-256 group on both sides (the certificates' keys are P-256 too). */
  tu_check_opt(L->sopts, weft_cert_options_set_tls_versions(L->sopts, WEFT_TLS1_3, WEFT_TLS1_3));
  tu_check_opt(L->copts, weft_cert_options_set_tls_versions(L->copts, WEFT_TLS1_3, WEFT_TLS1_3));
  tu_check_opt(L->sopts, weft_cert_options_set_groups(L->sopts, "P-256"));
  tu_check_opt(L->copts, weft_cert_options_set_groups(L->copts, "P-256"));
  L->sfactory.build_protocol = s_build;
  L->sfactory.handshake_failed = s_hs_failed;
  L->sfactory.data = L;
  L->cfactory.build_protocol = c_build;
  L->cfactory.connection_failed = c_failed;
  L->cfactory.data = L;
  int rc = tu_listen(L->r, "127.0.0.1", 0, &L->sfactory, L->sopts, BACKLOG, 0, &L->listener);
  ck_assert_msg(rc == 0, "weft_listen_ssl: %s (%s)", weft_err_name(rc),
                weft_cert_options_last_error(L->sopts));
  L->port = weft_listener_port(L->listener);
}

static void load_free(load *L) {
  weft_reactor_free(L->r);
  weft_cert_options_unref(L->sopts);
  weft_cert_options_unref(L->copts);
  tu_pki_free(&L->pki);
}

static const char *first_error(const load *L) {
  return L->first_error[0] ? L->first_error : "none";
}

/* Runs the reactor until PRED holds or the absolute deadline DEADLINE (tu_now() time) passes;
 * fails with WHAT and the counters then. */
static void run_phase(load *L, int (*pred)(void *), double deadline, const char *what) {
  double left = deadline - tu_now();
  int rc = left > 0 ? weft_reactor_run_until(L->r, pred, L, left) : WEFT_ETIMEDOUT;
  if (rc == WEFT_ETIMEDOUT && pred(L))
    rc = 0;
  ck_assert_msg(rc == 0,
                "%s: %s; started %ld, client made %ld lost %ld failed %ld, server made %ld lost "
                "%ld handshake_failed %ld, echoed %ld; first error: %s",
                what, rc == WEFT_ETIMEDOUT ? "deadline passed" : weft_err_name(rc), L->started,
                L->c_made, L->c_lost, L->c_failed, L->s_made, L->s_lost, L->s_hs_failed, L->echoed,
                first_error(L));
}

static int broken(const load *L) {
  return L->connect_rc != 0 || L->c_failed > 0 || L->s_hs_failed > 0 || L->bad_echo > 0 ||
         L->bad_lost > 0;
}

/* Runs the reactor until the descriptors of this process are back to fds_target. */
static int fds_target;
static int fds_back(void *arg) {
  load *L = arg;
  return weft_reactor_connection_count(L->r) == 0 && tu_count_fds() == fds_target;
}

/* --- 1. Concurrent connections ------------------------------------------------------------- */

/* The server (listener and its N connections) runs on this process's reactor; the N clients run
 * in a forked child process on a reactor of its own, so that each process needs about N
 * descriptors rather than one process 2N. The two talk through two pipes:
 *
 *   child -> parent  one report line at the end of each phase, or when the child gives up:
 *                    "phase=P made=N echoed=N failed=N lost=N bad_echo=N bad_lost=N
 *                    write_errors=N rss_before=K rss_peak=K fds_before=F fds_peak=F
 *                    fds_after=F err=TEXT", P being made, echoed or lost (or start when the
 *                    child could not even start); then the child _exits, 0 only when all went
 *                    well. The parent watches this pipe with an event on its reactor.
 *   parent -> child  one byte per command: 'e' (write the echoes), 'c' (close everything). The
 *                    child watches this pipe with an event on its reactor; end of file means the
 *                    parent is gone, and the child exits.
 *
 * The child never runs a Check assertion (a failing one would unwind into the Check runner
 * inside the child), nor Check's inherited signal handlers (reset to the defaults): it counts,
 * reports and exits. It dies with its parent (PR_SET_PDEATHSIG), and the parent kills and reaps
 * it before any of its own assertions fails (child_check), at an exit() (an atexit handler) and
 * at the end; main() reaps one that Check itself killed (a time-out). */

enum { PHASE_NONE = 0, PHASE_MADE = 1, PHASE_ECHOED = 2, PHASE_LOST = 3 };
#define REPORT_MAX 1024

/* /proc/self/fd entries, or -1 (no Check assertion: the child uses it). */
static int count_fds_raw(void) {
  DIR *dir = opendir("/proc/self/fd");
  if (dir == NULL)
    return -1;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(dir)) != NULL)
    if (de->d_name[0] != '.')
      n++;
  closedir(dir);
  return n - 1; /* the directory's own descriptor */
}

/* Writes all of BUF (a pipe: short writes only when interrupted). 0 or -1. */
static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t k = write(fd, buf, len);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return -1;
    buf += k;
    len -= (size_t)k;
  }
  return 0;
}

/* --- The client process -------------------------------------------------------------------- */

typedef struct child_side {
  load *L;
  int cmd_fd, rep_fd;
  struct event *cmd_ev;
  char cmd;          /* the last command received, 0 before any */
  int parent_gone;   /* end of file (or an error) on the command pipe */
  long write_errors; /* weft_transport_write / lose_connection calls that failed */
  long rss_before, rss_peak;
  int fds_before, fds_peak, fds_after;
} child_side;

static void child_report(child_side *cs, const char *phase) {
  load *L = cs->L;
  char err[300];
  snprintf(err, sizeof err, "%s", first_error(L));
  for (char *p = err; *p; p++)
    if (*p == '\n' || *p == '\r')
      *p = ' ';
  char line[REPORT_MAX];
  int k = snprintf(line, sizeof line,
                   "phase=%s made=%ld echoed=%ld failed=%ld lost=%ld bad_echo=%ld bad_lost=%ld "
                   "write_errors=%ld rss_before=%ld rss_peak=%ld fds_before=%d fds_peak=%d "
                   "fds_after=%d err=%s\n",
                   phase, L->c_made, L->echoed, L->c_failed, L->c_lost, L->bad_echo, L->bad_lost,
                   cs->write_errors, cs->rss_before, cs->rss_peak, cs->fds_before, cs->fds_peak,
                   cs->fds_after, err);
  if (k < 0)
    return;
  if ((size_t)k >= sizeof line) { /* cut the error text, keep the newline */
    k = (int)sizeof line - 1;
    line[k - 1] = '\n';
  }
  (void)write_all(cs->rep_fd, line, (size_t)k); /* EPIPE: the parent is gone, we die with it */
}

static void child_cmd_cb(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  child_side *cs = arg;
  char b[16];
  ssize_t k = read(fd, b, sizeof b);
  if (k > 0) {
    cs->cmd = b[k - 1];
  } else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
    cs->parent_gone = 1;
    event_del(cs->cmd_ev);
  }
}

static int child_stop_waiting(const child_side *cs) {
  return cs->parent_gone || broken(cs->L);
}
static int ch_made(void *arg) {
  child_side *cs = arg;
  return child_stop_waiting(cs) || cs->L->c_made == cs->L->target;
}
static int ch_cmd_echo(void *arg) {
  child_side *cs = arg;
  return child_stop_waiting(cs) || cs->cmd == 'e';
}
static int ch_echoed(void *arg) {
  child_side *cs = arg;
  return child_stop_waiting(cs) || cs->L->echoed == cs->L->target;
}
static int ch_cmd_close(void *arg) {
  child_side *cs = arg;
  return child_stop_waiting(cs) || cs->cmd == 'c';
}
static int ch_lost(void *arg) {
  child_side *cs = arg;
  return child_stop_waiting(cs) || cs->L->c_lost == cs->L->target;
}
static int ch_fds_back(void *arg) {
  child_side *cs = arg;
  return cs->parent_gone ||
         (weft_reactor_connection_count(cs->L->r) == 0 && count_fds_raw() == cs->fds_before);
}

static void child_run(child_side *cs, int (*pred)(void *), double deadline, const char *what) {
  double left = deadline - tu_now();
  int rc = left > 0 ? weft_reactor_run_until(cs->L->r, pred, cs, left) : WEFT_ETIMEDOUT;
  if (rc != 0 && !pred(cs) && cs->L->first_error[0] == '\0')
    snprintf(cs->L->first_error, sizeof cs->L->first_error, "client process, %s: %s", what,
             rc == WEFT_ETIMEDOUT ? "deadline passed" : weft_err_name(rc));
}

/* Reports PHASE and exits with status 1 unless OK. */
static void child_phase_end(child_side *cs, const char *phase, int ok) {
  child_report(cs, phase);
  if (!ok)
    _exit(1);
}

/* The child's whole life: L is its copy of the parent's state (fork), of which it uses the
 * client options, the port and the counters (all 0), never the parent's reactor or listener. */
static _Noreturn void child_main(load *L, int cmd_fd, int rep_fd, pid_t parent, double deadline) {
  child_side cs = {.L = L,
                   .cmd_fd = cmd_fd,
                   .rep_fd = rep_fd,
                   .fds_before = -1,
                   .fds_peak = -1,
                   .fds_after = -1,
                   .rss_before = -1,
                   .rss_peak = -1};
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
    _exit(3);
  /* Check's handlers (SIGTERM, SIGINT, SIGALRM: killpg of the test's process group) are Check
   * code too: back to the default actions. Ignored signals (SIGPIPE) stay ignored. */
  for (int sig = 1; sig < NSIG; sig++) {
    struct sigaction sa;
    if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) != 0)
      continue;
    if (!(sa.sa_flags & SA_SIGINFO) && (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
      continue;
    signal(sig, SIG_DFL);
  }
  weft_reactor *r = NULL;
  int rc = weft_reactor_new(&r);
  if (rc != 0) {
    snprintf(L->first_error, sizeof L->first_error, "client process: weft_reactor_new: %s",
             weft_err_name(rc));
    child_phase_end(&cs, "start", 0);
  }
  L->r = r;
  live_clients = NULL;
  cs.cmd_ev =
      event_new(weft_reactor_event_base(r), cmd_fd, EV_READ | EV_PERSIST, child_cmd_cb, &cs);
  if (cs.cmd_ev == NULL || event_add(cs.cmd_ev, NULL) != 0) {
    snprintf(L->first_error, sizeof L->first_error, "client process: cannot watch the pipe");
    child_phase_end(&cs, "start", 0);
  }
  cs.fds_before = count_fds_raw();
  cs.rss_before = rss_kib_raw();

  /* 1. Open the N connections (at most IN_FLIGHT_OPEN handshakes in flight, as launch does). */
  launch(L);
  child_run(&cs, ch_made, deadline, "opening the connections");
  cs.fds_peak = count_fds_raw();
  cs.rss_peak = rss_kib_raw();
  child_phase_end(&cs, "made", L->c_made == L->target && !broken(L) && !cs.parent_gone);

  /* 2. On 'e', every client sends 16 bytes (a pattern that depends on the connection) and
   * checks the echo. */
  child_run(&cs, ch_cmd_echo, deadline, "waiting for the echo command");
  if (cs.cmd != 'e' && L->first_error[0] == '\0')
    snprintf(L->first_error, sizeof L->first_error,
             "client process: no echo command (parent gone: %d)", cs.parent_gone);
  if (cs.cmd == 'e' && !broken(L)) {
    long writers = 0;
    for (cconn *c = live_clients; c != NULL; c = c->next, writers++) {
      uint8_t msg[ECHO_LEN];
      tu_pattern_fill(msg, ECHO_LEN, (uint64_t)(uintptr_t)c);
      if (weft_transport_write(c->t, msg, ECHO_LEN) != 0)
        cs.write_errors++;
    }
    if (writers != L->target) {
      cs.write_errors++;
      snprintf(L->first_error, sizeof L->first_error,
               "client process: %ld live clients, expected %ld", writers, L->target);
    }
    if (cs.write_errors == 0)
      child_run(&cs, ch_echoed, deadline, "echoing");
  }
  child_phase_end(&cs, "echoed",
                  L->echoed == L->target && cs.write_errors == 0 && !broken(L) && !cs.parent_gone);

  /* 3. On 'c', all close from the client side (close_notify both ways); then the client
   * process's descriptors must be back to their start too. */
  child_run(&cs, ch_cmd_close, deadline, "waiting for the close command");
  if (cs.cmd != 'c') {
    if (L->first_error[0] == '\0')
      snprintf(L->first_error, sizeof L->first_error,
               "client process: no close command (parent gone: %d)", cs.parent_gone);
    child_phase_end(&cs, "lost", 0);
  }
  cconn *c = live_clients;
  live_clients = NULL;
  while (c != NULL) {
    cconn *next = c->next; /* C stays valid until its connection_lost, which runs later */
    if (weft_transport_lose_connection(c->t) != 0)
      cs.write_errors++;
    c = next;
  }
  child_run(&cs, ch_lost, deadline, "closing");
  int ok = L->c_lost == L->target && cs.write_errors == 0 && !broken(L) && !cs.parent_gone;
  if (ok)
    child_run(&cs, ch_fds_back, deadline, "waiting for the descriptors to be closed");
  cs.fds_after = count_fds_raw();
  ok = ok && cs.fds_after == cs.fds_before;
  child_report(&cs, "lost"); /* before weft_reactor_free, which would lose what is left */
  event_free(cs.cmd_ev);
  weft_reactor_free(r);
  _exit(ok ? 0 : 1);
}

/* --- The server process (the test itself) --------------------------------------------------- */

typedef struct parent_side {
  load *L;
  pid_t pid;          /* the client process until it is reaped, else 0 */
  int rep_fd, cmd_fd; /* -1 when closed */
  struct event *rep_ev;
  char buf[2 * REPORT_MAX];
  size_t len;
  char line[REPORT_MAX]; /* the last report line, "(none)" before any */
  int phase;             /* the phase of the last report line */
  int eof;               /* end of file on the report pipe (or a read error, or a line too long) */
} parent_side;

static parent_side child_proc = {.pid = 0, .rep_fd = -1, .cmd_fd = -1};

/* Kills (unless it already exited) and reaps the client process, frees the pipes; idempotent.
 * Returns the wait status, or -1 if there was no process. */
static int child_reap(parent_side *P, int kill_it) {
  int status = -1;
  if (P->pid > 0) {
    if (kill_it)
      kill(P->pid, SIGKILL);
    while (waitpid(P->pid, &status, 0) < 0 && errno == EINTR) {
    }
    P->pid = 0;
  }
  if (P->rep_ev != NULL)
    event_free(P->rep_ev);
  P->rep_ev = NULL;
  if (P->rep_fd >= 0)
    close(P->rep_fd);
  if (P->cmd_fd >= 0)
    close(P->cmd_fd);
  P->rep_fd = P->cmd_fd = -1;
  return status;
}

/* Fails the test with FILE:LINE: and the message FMT..., after killing and reaping the client
 * process; says how that process ended (an exit of its own, or our SIGKILL). */
static void child_fail_at(const char *file, int line, parent_side *P, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void child_fail_at(const char *file, int line, parent_side *P, const char *fmt, ...) {
  char msg[3 * REPORT_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  int had_child = P->pid > 0;
  int status = child_reap(P, 1);
  char how[64];
  if (!had_child)
    snprintf(how, sizeof how, "already reaped");
  else if (WIFEXITED(status))
    snprintf(how, sizeof how, "had exited with status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(how, sizeof how, "killed by signal %d%s", WTERMSIG(status),
             WTERMSIG(status) == SIGKILL ? " (ours)" : "");
  else
    snprintf(how, sizeof how, "wait status 0x%x", (unsigned)status);
  ck_abort_msg("%s:%d: %s [client process %s]", file, line, msg, how);
}

static void child_reap_at_exit(void) {
  if (child_proc.pid > 0) {
    kill(child_proc.pid, SIGKILL);
    while (waitpid(child_proc.pid, NULL, 0) < 0 && errno == EINTR) {
    }
    child_proc.pid = 0;
  }
}

/* Fails the test, after killing and reaping the client process, unless COND holds. */
#define child_check(P, cond, ...)                                                                  \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      child_fail_at(__FILE__, __LINE__, (P), __VA_ARGS__);                                         \
  } while (0)

/* The number after " KEY=" (or "KEY=" at the start) in the report line, before its err= text;
 * -1 when absent. */
static long rep_field(const parent_side *P, const char *key) {
  char head[REPORT_MAX + 1];
  head[0] = ' ';
  memcpy(head + 1, P->line, sizeof P->line); /* NUL-terminated within it */
  char *err = strstr(head, " err=");
  if (err != NULL)
    *err = '\0';
  char pat[64];
  snprintf(pat, sizeof pat, " %s=", key);
  const char *at = strstr(head, pat);
  if (at == NULL)
    return -1;
  char *end;
  long v = strtol(at + strlen(pat), &end, 10);
  return end == at + strlen(pat) ? -1 : v;
}

static void parent_rep_cb(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  parent_side *P = arg;
  ssize_t k = read(fd, P->buf + P->len, sizeof P->buf - P->len);
  if (k < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (k <= 0) {
    if (k < 0)
      snprintf(P->line, sizeof P->line, "(read error on the report pipe: %s)", strerror(errno));
    P->eof = 1;
    event_del(P->rep_ev);
    return;
  }
  P->len += (size_t)k;
  char *nl;
  while ((nl = memchr(P->buf, '\n', P->len)) != NULL) {
    size_t ll = (size_t)(nl - P->buf);
    snprintf(P->line, sizeof P->line, "%.*s", (int)ll, P->buf);
    memmove(P->buf, nl + 1, P->len - ll - 1);
    P->len -= ll + 1;
    P->phase = strncmp(P->line, "phase=made ", 11) == 0     ? PHASE_MADE
               : strncmp(P->line, "phase=echoed ", 13) == 0 ? PHASE_ECHOED
               : strncmp(P->line, "phase=lost ", 11) == 0   ? PHASE_LOST
                                                            : PHASE_NONE;
  }
  if (P->len == sizeof P->buf) { /* no newline in a full buffer: not our child talking */
    snprintf(P->line, sizeof P->line, "(report line too long)");
    P->phase = PHASE_NONE;
    P->eof = 1;
    event_del(P->rep_ev);
  }
}

/* Forks the client process; the parent keeps the report pipe's read end (watched by an event
 * on L's reactor) and the command pipe's write end. */
static void child_start(parent_side *P, load *L, double deadline) {
  static int registered;
  if (!registered) {
    ck_assert_int_eq(atexit(child_reap_at_exit), 0);
    registered = 1;
  }
  int rep[2], cmd[2];
  ck_assert_msg(pipe2(rep, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
  ck_assert_msg(pipe2(cmd, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
  ck_assert_int_eq(fcntl(rep[0], F_SETFL, O_NONBLOCK), 0);
  ck_assert_int_eq(fcntl(cmd[0], F_SETFL, O_NONBLOCK), 0);
  memset(P, 0, sizeof *P);
  P->L = L;
  snprintf(P->line, sizeof P->line, "(none)");
  pid_t parent = getpid();
  fflush(NULL); /* nothing buffered twice */
  pid_t pid = fork();
  ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    close(rep[0]);
    close(cmd[1]);
    child_main(L, cmd[0], rep[1], parent, deadline + 10); /* the parent enforces DEADLINE */
  }
  P->pid = pid;
  close(rep[1]);
  close(cmd[0]);
  P->rep_fd = rep[0];
  P->cmd_fd = cmd[1];
  P->rep_ev =
      event_new(weft_reactor_event_base(L->r), P->rep_fd, EV_READ | EV_PERSIST, parent_rep_cb, P);
  child_check(P, P->rep_ev != NULL && event_add(P->rep_ev, NULL) == 0,
              "cannot watch the report pipe");
}

static void child_command(parent_side *P, char cmd) {
  int rc = write_all(P->cmd_fd, &cmd, 1);
  child_check(P, rc == 0, "sending '%c' to the client process: %s; its last report: %s", cmd,
              strerror(errno), P->line);
}

static int p_made(void *arg) {
  parent_side *P = arg;
  return broken(P->L) || P->eof || (P->L->s_made == P->L->target && P->phase >= PHASE_MADE);
}
static int p_echoed(void *arg) {
  parent_side *P = arg;
  return broken(P->L) || P->eof || P->phase >= PHASE_ECHOED;
}
static int p_lost(void *arg) {
  parent_side *P = arg;
  return broken(P->L) || (P->eof && P->phase < PHASE_LOST) ||
         (P->L->s_lost == P->L->target && P->phase >= PHASE_LOST);
}
static int p_exited(void *arg) {
  return ((parent_side *)arg)->eof;
}

/* run_phase for the server process: kills the client process before failing. */
static void parent_phase(parent_side *P, int (*pred)(void *), double deadline, const char *what) {
  load *L = P->L;
  double left = deadline - tu_now();
  int rc = left > 0 ? weft_reactor_run_until(L->r, pred, P, left) : WEFT_ETIMEDOUT;
  if (rc == WEFT_ETIMEDOUT && pred(P))
    rc = 0;
  child_check(P, rc == 0,
              "%s: %s; server made %ld lost %ld handshake_failed %ld; client process: %s; first "
              "error: %s",
              what, rc == WEFT_ETIMEDOUT ? "deadline passed" : weft_err_name(rc), L->s_made,
              L->s_lost, L->s_hs_failed, P->line, first_error(L));
}

START_TEST(test_concurrent) {
  long n = env_long("WEFT_LOAD_CONCURRENT", 10000);
  long want = n + 100; /* per process: the server's N, or the clients' N, plus a few */
  long limit = raise_nofile(want);
  if (limit < want) {
    long m = limit - 100;
    printf("concurrent: RLIMIT_NOFILE is %ld, below the %ld needed per process for %ld "
           "connections: running %ld\n",
           limit, want, n, m);
    ck_assert_msg(m >= 100, "RLIMIT_NOFILE %ld is too low for a load test", limit);
    n = m;
  }
  double t0 = tu_now(), deadline = t0 + CONCURRENT_DEADLINE;

  load L;
  load_init(&L, n, IN_FLIGHT_OPEN, 0);
  int fds_before = tu_count_fds();
  long rss_before = rss_kib();
  parent_side *P = &child_proc;
  child_start(P, &L, deadline);

  /* 1. The child opens N connections: wait until the server made N and the child reports
   * made=N. */
  parent_phase(P, p_made, deadline, "opening the connections");
  child_check(P,
              !broken(&L) && L.s_made == n && P->phase == PHASE_MADE && rep_field(P, "made") == n &&
                  rep_field(P, "failed") == 0,
              "opening: server made %ld handshake_failed %ld; client process: %s; first server "
              "error: %s",
              L.s_made, L.s_hs_failed, P->line, first_error(&L));
  double t_open = tu_now() - t0;
  unsigned peak_count = weft_reactor_connection_count(L.r);
  int fds_peak = tu_count_fds();
  long rss_peak = rss_kib();
  long c_rss_before = rep_field(P, "rss_before"), c_rss_peak = rep_field(P, "rss_peak");
  long c_fds_before = rep_field(P, "fds_before"), c_fds_peak = rep_field(P, "fds_peak");
  child_check(P, peak_count == (unsigned)n, "server connection_count %u at the peak, expected %ld",
              peak_count, n);
  child_check(P, fds_peak >= fds_before + n, "server fds at the peak %d, expected >= %d + %ld",
              fds_peak, fds_before, n);
  child_check(P, c_fds_before > 0 && c_fds_peak >= c_fds_before + n,
              "client process fds before/peak %ld/%ld, expected the peak >= before + %ld",
              c_fds_before, c_fds_peak, n);

  /* 2. Every client sends its 16-byte pattern and checks the echo: wait for echoed=N. */
  child_command(P, 'e');
  parent_phase(P, p_echoed, deadline, "echoing");
  child_check(P,
              !broken(&L) && P->phase == PHASE_ECHOED && rep_field(P, "echoed") == n &&
                  rep_field(P, "bad_echo") == 0 && rep_field(P, "write_errors") == 0,
              "echo: client process: %s; server: %ld unclean closes; first server error: %s",
              P->line, L.bad_lost, first_error(&L));
  long c_echoed = rep_field(P, "echoed");

  /* 3. All close from the client side (close_notify both ways): wait until the server lost all
   * with WEFT_OK and the child reports lost=N, clean, with its descriptors back. */
  child_command(P, 'c');
  parent_phase(P, p_lost, deadline, "closing");
  child_check(P,
              !broken(&L) && L.s_lost == n && P->phase == PHASE_LOST && rep_field(P, "lost") == n &&
                  rep_field(P, "bad_lost") == 0 && rep_field(P, "write_errors") == 0,
              "close: server lost %ld (%ld not clean); client process: %s; first server error: %s",
              L.s_lost, L.bad_lost, P->line, first_error(&L));
  long c_fds_after = rep_field(P, "fds_after");
  child_check(P, c_fds_after == c_fds_before, "client process fds before/after %ld/%ld: %s",
              c_fds_before, c_fds_after, P->line);
  parent_phase(P, p_exited, deadline, "waiting for the client process to exit");
  char last[sizeof P->line];
  memcpy(last, P->line, sizeof last);
  int status = child_reap(P, 0);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                "client process: wait status 0x%x, expected exit 0; its last report: %s",
                (unsigned)status, last);

  fds_target = fds_before;
  run_phase(&L, fds_back, deadline, "waiting for the descriptors to be closed");
  int fds_after = tu_count_fds();
  long rss_after = rss_kib();
  malloc_trim(0); /* what the allocator keeps vs. what is still in use */
  long rss_trimmed = rss_kib();
  double total = tu_now() - t0;

  printf("concurrent: %ld connections, RSS per connection %.1f KiB (server process only; the "
         "clients ran in a forked process)\n",
         n, (double)(rss_peak - rss_before) / (double)n);
  printf("concurrent: opened in %.1f s, total %.1f s; connection_count at peak %u; fds "
         "before/peak/after %d/%d/%d; RSS before/peak/after %ld/%ld/%ld KiB (%ld after "
         "malloc_trim) (server process)\n",
         t_open, total, peak_count, fds_before, fds_peak, fds_after, rss_before, rss_peak,
         rss_after, rss_trimmed);
  printf("concurrent: client process: %ld echoed, RSS per connection %.1f KiB, fds "
         "before/peak/after %ld/%ld/%ld, RSS before/peak %ld/%ld KiB\n",
         c_echoed, (double)(c_rss_peak - c_rss_before) / (double)n, c_fds_before, c_fds_peak,
         c_fds_after, c_rss_before, c_rss_peak);
  fflush(stdout);
  ck_assert_int_eq(L.s_made, n);
  ck_assert_int_eq(c_echoed, n);
  ck_assert_int_eq(fds_after, fds_before);
  load_free(&L);
}
END_TEST

/* --- 2. Sequential handshakes ---------------------------------------------------------------- */

static int seq_done(void *arg) {
  load *L = arg;
  return broken(L) || (L->c_lost + L->c_failed == L->target && L->s_lost == L->target);
}

START_TEST(test_handshakes) {
  long n = env_long("WEFT_LOAD_HANDSHAKES", 100000);
  raise_nofile(1024);
  load L;
  load_init(&L, n, SEQ_IN_FLIGHT, 1);
  int fds_before = tu_count_fds();
  long rss_start = rss_kib();
  double t0 = tu_now();

  launch(&L);
  run_phase(&L, seq_done, t0 + LOAD_TIMEOUT - 30, "handshakes");
  ck_assert_msg(!broken(&L),
                "after %ld connections: client failed %ld, server handshake_failed %ld, bad "
                "echoes %ld, unclean closes %ld; first error: %s",
                L.c_lost, L.c_failed, L.s_hs_failed, L.bad_echo, L.bad_lost, first_error(&L));
  double secs = tu_now() - t0;
  fds_target = fds_before;
  run_phase(&L, fds_back, tu_now() + 30, "waiting for the descriptors to be closed");
  int fds_after = tu_count_fds();
  long rss_end = rss_kib();
  long baseline = n >= SEQ_BASELINE ? L.rss_baseline : rss_start;

  printf("handshakes: %ld in %.1f s (%.0f/s), fds before/after %d/%d, RSS start/after-%d/end "
         "%ld/%ld/%ld KiB (bound: end <= after-%d + %d KiB)\n",
         n, secs, (double)n / secs, fds_before, fds_after, SEQ_BASELINE, rss_start, baseline,
         rss_end, SEQ_BASELINE, SEQ_RSS_SLACK_KIB);
  fflush(stdout);
  ck_assert_int_eq(L.echoed, n);
  ck_assert_int_eq(L.s_made, n);
  ck_assert_int_eq(fds_after, fds_before);
  ck_assert_msg(rss_end <= baseline + SEQ_RSS_SLACK_KIB,
                "RSS grew from %ld KiB (after %d handshakes) to %ld KiB (after %ld): more than "
                "%d KiB, a leak of about %.0f bytes per connection",
                baseline, SEQ_BASELINE, rss_end, n, SEQ_RSS_SLACK_KIB,
                (double)(rss_end - baseline) * 1024.0 / (double)(n - SEQ_BASELINE));
  load_free(&L);
}
END_TEST

static Suite *load_suite(void) {
  Suite *s = suite_create("load_tls");
  TCase *tc = tcase_create("concurrent");
  tcase_add_test(tc, test_concurrent);
  tcase_set_timeout(tc, LOAD_TIMEOUT);
  suite_add_tcase(s, tc);
  tc = tcase_create("handshakes");
  tcase_add_test(tc, test_handshakes);
  tcase_set_timeout(tc, LOAD_TIMEOUT);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  /* When Check kills a test process (time-out, or its killpg of the test's process group after
   * each test), a client process of the concurrent test it had not reaped yet is killed too and
   * comes to us rather than to init, which may never reap it: reap those at the end. */
  int subreaper = prctl(PR_SET_CHILD_SUBREAPER, 1) == 0;
  SRunner *sr = srunner_create(load_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  /* Everything left is in a killed process group: this cannot block for long. */
  while (subreaper && (waitpid(-1, NULL, 0) > 0 || errno == EINTR)) {
  }
  return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
