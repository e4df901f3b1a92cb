/*
 * qmail-queue stand-in: keeps the contract of the real qmail-queue (fd 0 message read to
 * EOF first, then the envelope on fd 1 checked byte by byte: 91 bad format, 11 address too
 * long, 54 read error/EOF before the final NUL) and "queues" into a directory instead of
 * the qmail queue.  Used by the tests and by `make demo` (where it is the demo sink).
 *
 *   QQ_STANDIN_DIR   directory; queued messages become <n>.msg + <n>.env (+ <n>.fds)
 *   QQ_STANDIN_EXIT  exit with this code after reading everything, queue nothing
 *   QQ_STANDIN_DIE   "1": kill itself with SIGKILL after reading the message
 *
 * A message is queued only after the final NUL; files appear atomically (rename).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ADDR 1003

static char path_tmp[4096], path_final[4096];

static void die(int code) { if (path_tmp[0]) unlink(path_tmp); _exit(code); }

static int get(unsigned char *ch) {
  ssize_t r;
  do { r = read(1, ch, 1); } while (r < 0 && errno == EINTR);
  return r == 1;
}

static void put_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w < 0) { if (errno == EINTR) continue; die(53); }
    p += w; len -= (size_t)w;
  }
}

int main(void) {
  const char *dir = getenv("QQ_STANDIN_DIR");
  const char *forced = getenv("QQ_STANDIN_EXIT");
  const char *dying = getenv("QQ_STANDIN_DIE");
  char buf[65536], name[256];
  int out = -1, env_out, fd;
  unsigned char ch;
  size_t len;
  static unsigned char envelope[16 * 1024 * 1024];
  size_t env_len = 0;

  if (!dir) die(55);
  snprintf(name, sizeof name, "%ld.%ld", (long)time(NULL), (long)getpid());
  snprintf(path_tmp, sizeof path_tmp, "%s/tmp.%s", dir, name);
  out = open(path_tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (out < 0) die(63);
  for (;;) {
    ssize_t r = read(0, buf, sizeof buf);
    if (r < 0) { if (errno == EINTR) continue; die(54); }
    if (r == 0) break;
    put_all(out, buf, (size_t)r);
  }
  if (dying && dying[0] == '1') { unlink(path_tmp); kill(getpid(), SIGKILL); }

  if (!get(&ch)) die(54);
  if (ch != 'F') die(91);
  envelope[env_len++] = ch;
  for (;;) {
    for (len = 0; len < ADDR; ++len) {
      if (!get(&ch)) die(54);
      if (env_len >= sizeof envelope) die(51);
      envelope[env_len++] = ch;
      if (!ch) break;
    }
    if (len >= ADDR) die(11);
    if (!get(&ch)) die(54);
    if (env_len >= sizeof envelope) die(51);
    envelope[env_len++] = ch;
    if (!ch) break;
    if (ch != 'T') die(91);
  }

  if (forced && *forced) { int code = atoi(forced); die(code); }
  if (fsync(out) < 0 || close(out) < 0) die(53);

  /* Record which extra fds we inherited: a scanner must not leak its own. */
  snprintf(path_final, sizeof path_final, "%s/%s.fds", dir, name);
  fd = open(path_final, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) die(63);
  for (int i = 3; i < 64; ++i) {
    if (i != fd && fcntl(i, F_GETFD) >= 0) {
      int n = snprintf(buf, sizeof buf, "%d\n", i);
      put_all(fd, buf, (size_t)n);
    }
  }
  close(fd);

  snprintf(path_final, sizeof path_final, "%s/%s.env", dir, name);
  env_out = open(path_final, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (env_out < 0) die(63);
  put_all(env_out, envelope, env_len);
  if (fsync(env_out) < 0 || close(env_out) < 0) die(53);

  snprintf(path_final, sizeof path_final, "%s/%s.msg", dir, name);
  if (rename(path_tmp, path_final) < 0) die(63);
  return 0;
}
