/* tests/check_enfile.c: accept() failing for want of system resources.
 *
 * check_hostile's test_emfile_backoff makes accept() fail for real with EMFILE (a low
 * RLIMIT_NOFILE in a child process). ENFILE (the system-wide table is full), ENOBUFS and
 * ENOMEM cannot be caused that way without starving the whole machine, so this suite makes
 * them happen where libevent's listener calls accept4(): this program defines accept4, which
 * takes precedence over the C library's for every library it loads, and fails while
 * `inject_errno` is set. Each case checks that, while accept fails:
 *  - the listener backs off instead of spinning: at most a few accept calls per second (the
 *    back-off is 100 ms), where a spinning loop makes thousands;
 *  - no connection is made, and the waiting connection stays in the backlog;
 * and that once accept works again the waiting connection is accepted and served, then a new
 * one too, with no descriptor leaked.
 */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <check.h>
#include <weft/weft.h>

#include "testutil.h"

static int inject_errno; /* while non-zero, accept4 fails with it */
static long accept_calls;

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
  accept_calls++;
  if (inject_errno) {
    errno = inject_errno;
    return -1;
  }
  return (int)syscall(SYS_accept4, fd, addr, len, flags);
}

typedef struct recv_wait {
  int fd;
  char buf[8];
  size_t len, want;
} recv_wait;

static int recv_done(void *arg) {
  recv_wait *w = arg;
  while (w->len < w->want) {
    ssize_t n = recv(w->fd, w->buf + w->len, w->want - w->len, MSG_DONTWAIT);
    if (n <= 0)
      break;
    w->len += (size_t)n;
  }
  return w->len >= w->want;
}

static int made_at_least(void *arg) {
  tu_factory *f = arg;
  return f->made >= (int)(intptr_t)f->user;
}

static int never(void *arg) {
  (void)arg;
  return 0;
}

static int connect_local(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons((uint16_t)port);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
  ck_assert_int_eq(send(fd, "ping", 4, MSG_NOSIGNAL), 4);
  return fd;
}

/* Waits until F made TARGET connections and FD got its "ping" echoed. */
static void served(weft_reactor *r, tu_factory *f, int fd, int target) {
  f->user = (void *)(intptr_t)target;
  tu_run_until(r, made_at_least, f, 10.0);
  recv_wait echo = {fd, "", 0, 4};
  tu_run_until(r, recv_done, &echo, 10.0);
  ck_assert_msg(memcmp(echo.buf, "ping", 4) == 0, "echo: '%.4s'", echo.buf);
}

static const int errnos[] = {ENFILE, ENOBUFS, ENOMEM};

START_TEST(test_accept_backoff) {
  int err = errnos[_i];
  int fds = tu_count_fds();
  weft_reactor *r = tu_reactor_new();
  tu_factory f;
  tu_factory_init(&f);
  f.conn_config.echo = 1;
  int port = 0;
  weft_listener *l = tu_listen_tcp_local(r, &f, &port);

  /* A first connection proves accept4 is really the one defined here. */
  accept_calls = 0;
  int first = connect_local(port);
  served(r, &f, first, 1);
  ck_assert_msg(accept_calls > 0, "libevent did not call this accept4: nothing was injected");

  inject_errno = err;
  accept_calls = 0;
  int waiting = connect_local(port);
  double start = tu_now();
  ck_assert_int_eq(weft_reactor_run_until(r, never, NULL, 1.0), WEFT_ETIMEDOUT);
  double elapsed = tu_now() - start;
  long calls = accept_calls;
  inject_errno = 0;
  /* 100 ms back-off: about 10 attempts in a second; a listener that spins makes thousands. */
  ck_assert_msg(calls >= 1 && calls <= 25, "%s: %ld accept calls in %.2f s", strerror(err), calls,
                elapsed);
  ck_assert_int_eq(f.made, 1);

  /* accept works again: the connection that waited is served, then a new one. */
  served(r, &f, waiting, 2);
  int fresh = connect_local(port);
  served(r, &f, fresh, 3);
  fprintf(stderr, "check_enfile: %s: %ld accept calls in %.2f s of failure, then served\n",
          strerror(err), calls, elapsed);

  close(first);
  close(waiting);
  close(fresh);
  weft_listener_stop(l);
  weft_reactor_free(r);
  tu_factory_check(&f);
  tu_factory_cleanup(&f);
  ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

static Suite *enfile_suite(void) {
  Suite *s = suite_create("enfile");
  TCase *tc = tcase_create("backoff");
  tcase_add_loop_test(tc, test_accept_backoff, 0, (int)(sizeof errnos / sizeof errnos[0]));
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(enfile_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
