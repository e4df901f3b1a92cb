/*
 * qmail-scanner-queue: the setuid wrapper qmail runs as $QMAILQUEUE.
 *
 * Python scripts cannot be setuid, so this small program is: installed root:root 4755
 * (setuid root), it
 *   1. first of all becomes the scanner account completely: no supplementary groups, real,
 *      effective and saved gid and uid the scanner's; then checks that root cannot be regained
 *      (setuid(0) fails) and refuses to run otherwise. It is owned by root, not by the scanner
 *      account, so code running as the scanner account cannot rewrite it; root is needed only
 *      for this drop (a setuid-to-the-account binary could not drop the caller's groups),
 *   2. makes sure fds 0, 1 and 2 are open (a closed fd 2 would otherwise become the first
 *      file the scanner opens, and its error lines would land in the message); with no
 *      message or envelope fd it exits 54 as qmail-queue does,
 *   3. unblocks every signal and sets every disposition to the default: a caller that ignores
 *      SIGCHLD or blocks SIGALRM would otherwise break the wait for qmail-queue or the deadline,
 *   4. throws the caller's environment away except the variables qmail's callers set for
 *      the scanner (TCP*, RELAYCLIENT, DATABYTES, SMTPAUTHUSER, QS_*), bounded in size,
 *      and sets a fixed PATH and umask,
 *   5. hands the message to the resident engine when it runs (below), else
 *   6. execs the interpreter frozen at configure time with -I -S on the installed program:
 *      no PYTHON* variables, no user site, no site-packages, no current directory on sys.path.
 * Administrator flags (-h -v -z -g -r --engine-status) are passed on only for root and the
 * scanner account.
 *
 * The engine (qmail-scanner-queue.py --serve) listens on QS_ENGINE_SOCKET in the spool. The
 * wrapper uses it only when that path is a socket owned by the scanner account and the process
 * listening on it runs as that account (SO_PEERCRED); anything else, a missing socket, a refused
 * connection or no worker free within QS_ENGINE_WAIT_MS, and it execs the standalone program
 * at once, with fds 0 and 1 untouched. Once a worker has the fds, the wrapper exits with the
 * code the worker answers; a worker that dies or hangs past the deadline means exit 71 (451,
 * the sender retries), never 0.
 *
 * Everything it needs is compiled in by configure.py (-D...); nothing is read at run time.
 * Exit codes follow qmail-queue(8): 81 "qq internal bug" (temporary) when it cannot run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef QS_PYTHON
#error "compile with -DQS_PYTHON=\"/path/to/python3\""
#endif
#ifndef QS_PROGRAM
#error "compile with -DQS_PROGRAM=\"/var/qmail/bin/qmail-scanner-queue.py\""
#endif
#ifndef QS_UID
#error "compile with -DQS_UID=<uid of the scanner account>"
#endif
#ifndef QS_GID
#error "compile with -DQS_GID=<gid of the scanner account>"
#endif
#ifndef QS_UMASK
#define QS_UMASK 077
#endif
#ifndef QS_PATH
#define QS_PATH "/usr/local/bin:/usr/bin:/bin"
#endif

#ifndef QS_CUSTOM_ERROR_FD
#define QS_CUSTOM_ERROR_FD 6 /* 0: off */
#endif
#ifndef QS_DEADLINE
#define QS_DEADLINE 1200 /* seconds a message may take (--deadline) */
#endif
#ifndef QS_ENGINE_WAIT_MS
#define QS_ENGINE_WAIT_MS 3000 /* no worker free this long: run standalone */
#endif
/* The engine's master kills a worker 10 s past the deadline; wait a little longer than that. */
#define ENGINE_ANSWER_GRACE 30

#define EXIT_TROUBLE 81   /* 451 qq internal bug: the sender retries */
#define EXIT_ENGINE_LOST 71 /* 451 mail server temporarily rejected message */
#define EXIT_USAGE 100
#define EXIT_READ_ERROR 54 /* 451 qq read error */
#define KEEP_MAX 64        /* variables passed on at most */
#define VALUE_MAX 1024     /* longer values are dropped: no caller variable needs more */
#define NAME_MAX_LEN 64
#define ARGS_MAX 8

static char say_line[1024];
static size_t say_used;

static void say(const char *text) {
  /* One line for the smtpd log; nothing else goes to fd 2. Each line starts with the local time
     as the program's own lines do (2026-12-06T08:00:00+01:00) and goes out in one write at its
     newline, so it never interleaves with another session's line. */
  size_t length = strlen(text);
  if (say_used == 0) {
    time_t now = time(NULL);
    struct tm local;
    char zone[8];
    if (localtime_r(&now, &local) && strftime(zone, sizeof zone, "%z", &local) == 5) {
      say_used = strftime(say_line, 32, "%Y-%m-%dT%H:%M:%S", &local);
      say_used += (size_t)snprintf(say_line + say_used, 16, "%.3s:%.2s ", zone, zone + 3);
    }
  }
  if (length > sizeof say_line - 1 - say_used) length = sizeof say_line - 1 - say_used;
  memcpy(say_line + say_used, text, length);
  say_used += length;
  if (say_used > 0 && (say_line[say_used - 1] == '\n' || say_used == sizeof say_line - 1)) {
    if (say_line[say_used - 1] != '\n') say_line[say_used++] = '\n';
    ssize_t ignored = write(2, say_line, say_used);
    (void)ignored;
    say_used = 0;
  }
}

static void trouble(const char *text) {
  say("qmail-scanner-queue: ");
  say(text);
  say("\n");
  _exit(EXIT_TROUBLE);
}

static int is_closed(int fd) { return fcntl(fd, F_GETFD) < 0 && errno == EBADF; }

static void open_standard_fds(int carries_message) {
  int fd, missing_input = 0;
  /* Fill every gap first, so no later open() lands on fd 0, 1 or 2. */
  for (fd = 0; fd <= 2; ++fd) {
    if (!is_closed(fd)) continue;
    if (fd < 2) missing_input = 1;
    if (open("/dev/null", fd == 2 ? O_WRONLY : O_RDONLY) != fd) _exit(EXIT_TROUBLE);
  }
  /* glibc itself puts /dev/full (write-only) on a closed fd 0 of a setuid program. */
  if ((fcntl(0, F_GETFL) & O_ACCMODE) == O_WRONLY || (fcntl(1, F_GETFL) & O_ACCMODE) == O_WRONLY) missing_input = 1;
  /* No message or no envelope: what qmail-queue says when it cannot read them. */
  if (missing_input && carries_message) {
    say("qmail-scanner-queue: fd 0 or fd 1 is closed: no message to read\n");
    _exit(EXIT_READ_ERROR);
  }
}

/* The first thing main does: with root (setuid root, or run by root) drop to the scanner account for
 * good; without root, go on only when the caller already is the scanner account (a plain install). */
static void become_scanner_account(void) {
  uid_t uid = (uid_t)(QS_UID), ruid, euid, suid;
  gid_t gid = (gid_t)(QS_GID), rgid, egid, sgid;
  int was_root = geteuid() == 0;
  if (was_root) {
    /* Groups first (only root may), then the gid (while still root), then the uid. */
    if (setgroups(0, NULL) != 0) trouble("setgroups failed");
    if (setresgid(gid, gid, gid) != 0) trouble("setresgid failed");
    if (setresuid(uid, uid, uid) != 0) trouble("setresuid failed");
  }
  if (getresuid(&ruid, &euid, &suid) != 0 || getresgid(&rgid, &egid, &sgid) != 0) trouble("cannot read the ids");
  if (ruid != uid || euid != uid || suid != uid || rgid != gid || egid != gid || sgid != gid)
    trouble("not running as the scanner account: is the wrapper installed root:root with mode 4755?");
  /* A caller that is the scanner account keeps its own groups when the wrapper holds no root. */
  if (was_root && getgroups(0, NULL) != 0) trouble("supplementary groups remain after dropping them");
  /* With the scanner account root (--qs-user root, installed without the setuid bit) there is nothing to lose. */
  if (uid != 0 && (setuid(0) == 0 || setgid(0) == 0)) trouble("root could be regained after dropping it");
}

/* rt_sigaction(2) with SIG_DFL, past the C library's wrapper: every field zero is SIG_DFL, no
   flags and an empty mask on every Linux ABI (the struct is larger than the kernel reads). */
static int kernel_default(int sig) {
  struct { void *handler; unsigned long flags; void *restorer; uint64_t mask[2]; } fresh;
  memset(&fresh, 0, sizeof fresh);
  return syscall(SYS_rt_sigaction, sig, &fresh, NULL, (size_t)(_NSIG / 8)) == 0;
}

/* Start what follows as a fresh process would: no blocked signal, every disposition the default. */
static void default_signals(void) {
  sigset_t none;
  struct sigaction fresh;
  int sig;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) trouble("cannot unblock signals");
  memset(&fresh, 0, sizeof fresh);
  fresh.sa_handler = SIG_DFL;
  sigemptyset(&fresh.sa_mask);
  for (sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    if (sigaction(sig, &fresh, NULL) == 0) continue;
    if (errno != EINVAL) trouble("cannot reset a signal");
    /* EINVAL: a number the C library keeps for itself (glibc's 32 and 33). A caller can still leave
       it ignored, and an ignored disposition survives execve: ask the kernel directly. */
    if (!kernel_default(sig)) trouble("cannot reset a signal the C library reserves");
  }
}

static int name_allowed(const char *entry, size_t name_len) {
  static const char *exact[] = {"RELAYCLIENT", "DATABYTES", "SMTPAUTHUSER", NULL};
  size_t i;
  if (name_len == 0 || name_len > NAME_MAX_LEN) return 0;
  for (i = 0; i < name_len; ++i) {
    char c = entry[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return 0;
  }
  if (name_len > 3 && strncmp(entry, "TCP", 3) == 0) return 1;
  if (name_len > 3 && strncmp(entry, "QS_", 3) == 0) return 1;
  for (i = 0; exact[i]; ++i)
    if (strlen(exact[i]) == name_len && strncmp(entry, exact[i], name_len) == 0) return 1;
  return 0;
}

static void keep_allowed(char **environ_in, char **kept, size_t *count, int want_qs) {
  size_t i, j;
  for (i = 0; environ_in && environ_in[i] && *count < KEEP_MAX; ++i) {
    char *entry = environ_in[i];
    const char *equals = strchr(entry, '=');
    int duplicate = 0;
    if (!equals) continue;
    size_t name_len = (size_t)(equals - entry);
    if (!name_allowed(entry, name_len)) continue;
    if ((strncmp(entry, "QS_", 3) == 0) != want_qs) continue;
    if (strnlen(equals + 1, VALUE_MAX + 1) > VALUE_MAX) continue;
    /* The first of duplicated names wins, as getenv() would see it. */
    for (j = 0; j < *count; ++j)
      if (strncmp(kept[j], entry, name_len + 1) == 0) duplicate = 1;
    if (!duplicate) kept[(*count)++] = entry;
  }
}

static char **clean_environment(char **environ_in) {
  static char *kept[KEEP_MAX + 2];
  size_t count = 0;
  /* The connection's own variables first, so a flood of QS_* cannot push them out. */
  keep_allowed(environ_in, kept, &count, 0);
  keep_allowed(environ_in, kept, &count, 1);
  kept[count++] = "PATH=" QS_PATH;
  kept[count] = NULL;
  return kept;
}

static int flag_allowed(const char *arg) {
  static const char *flags[] = {"-h", "--help", "-v", "-z", "-g", "-r", "--engine-status", NULL};
  size_t i;
  for (i = 0; flags[i]; ++i)
    if (strcmp(arg, flags[i]) == 0) return 1;
  return 0;
}

#ifdef QS_ENGINE_SOCKET
/* The wire format of lib/qmail_scanner/engine/wire.py. */
struct hello {
  char magic[4];
  uint32_t caller_uid;
  uint32_t fd_mask;
  uint32_t environment_bytes;
};
#define FD_CUSTOM_ERROR 8

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until fd is readable; 1 ready, 0 timed out or failed. */
static int wait_readable(int fd, long long deadline_ms) {
  for (;;) {
    long long left = deadline_ms - now_ms();
    struct pollfd p = {fd, POLLIN, 0};
    int r;
    if (left <= 0) return 0;
    r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
    if (r > 0) return 1;
    if (r < 0 && errno != EINTR) return 0;
  }
}

static int send_all(int fd, const char *data, size_t size) {
  while (size > 0) {
    ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0;
    data += n;
    size -= (size_t)n;
  }
  return 1;
}

/* The socket the engine listens on, if it is one we may trust; -1 means run standalone. */
static int engine_connect(void) {
  struct stat info;
  struct sockaddr_un address;
  struct ucred peer;
  socklen_t peer_size = sizeof peer;
  int s;
  if (sizeof(QS_ENGINE_SOCKET) > sizeof address.sun_path) return -1;
  if (lstat(QS_ENGINE_SOCKET, &info) != 0) return -1; /* no engine: the usual standalone case */
  if (!S_ISSOCK(info.st_mode) || info.st_uid != (uid_t)(QS_UID)) {
    say("qmail-scanner-queue: " QS_ENGINE_SOCKET " is not a socket of the scanner account: ignored, running standalone\n");
    return -1;
  }
  s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return -1;
  memset(&address, 0, sizeof address);
  address.sun_family = AF_UNIX;
  memcpy(address.sun_path, QS_ENGINE_SOCKET, sizeof(QS_ENGINE_SOCKET));
  /* Non-blocking: a full backlog (EAGAIN) or a dead engine (ECONNREFUSED) means standalone now. */
  if (connect(s, (struct sockaddr *)&address, sizeof address) != 0) {
    close(s);
    return -1;
  }
  if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &peer, &peer_size) != 0 || peer.uid != (uid_t)(QS_UID)) {
    say("qmail-scanner-queue: the engine socket is served by another account: ignored, running standalone\n");
    close(s);
    return -1;
  }
  return s;
}

/* Hand the message to a worker. Returns -1 (run standalone; fds 0 and 1 untouched) or never returns. */
static int engine_handoff(char **clean, uid_t caller) {
  char environment[(KEEP_MAX + 2) * (NAME_MAX_LEN + VALUE_MAX + 2)];
  size_t used = 0, i;
  struct hello hello;
  int fds[4], nfds = 3, s, custom_open;
  char ready, answer[2];
  size_t got = 0;
  struct msghdr msg;
  struct iovec iov;
  char control[CMSG_SPACE(sizeof fds)];
  struct cmsghdr *cmsg;
  long long deadline;

  s = engine_connect();
  if (s < 0) return -1;
  for (i = 0; clean[i]; ++i) {
    size_t len = strlen(clean[i]) + 1;
    if (used + len > sizeof environment) break;
    memcpy(environment + used, clean[i], len);
    used += len;
  }
  custom_open = QS_CUSTOM_ERROR_FD > 2 && !is_closed(QS_CUSTOM_ERROR_FD);
  memcpy(hello.magic, "QSE1", 4);
  hello.caller_uid = (uint32_t)caller;
  hello.fd_mask = 7 | (custom_open ? FD_CUSTOM_ERROR : 0);
  hello.environment_bytes = (uint32_t)used;
  /* Nothing of the message has been given away yet: any failure up to READY means standalone. */
  if (!send_all(s, (const char *)&hello, sizeof hello) || !send_all(s, environment, used) ||
      !wait_readable(s, now_ms() + QS_ENGINE_WAIT_MS) || recv(s, &ready, 1, 0) != 1 || ready != 'R') {
    close(s);
    return -1;
  }
  fds[0] = 0;
  fds[1] = 1;
  fds[2] = 2;
  if (custom_open) fds[nfds++] = QS_CUSTOM_ERROR_FD;
  memset(&msg, 0, sizeof msg);
  memset(control, 0, sizeof control);
  iov.iov_base = "F";
  iov.iov_len = 1;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
  cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
  memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));
  for (;;) {
    ssize_t n = sendmsg(s, &msg, MSG_NOSIGNAL);
    if (n == 1) break;
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
      struct pollfd p = {s, POLLOUT, 0};
      poll(&p, 1, 1000);
      continue;
    }
    close(s); /* not sent: the fds are still only ours */
    return -1;
  }
  /* The worker holds the message now. Drop our copies, so a worker that dies leaves
   * qmail-smtpd with a broken pipe at once instead of a reader that never reads. */
  close(0);
  close(1);
  if (custom_open) close(QS_CUSTOM_ERROR_FD);
  deadline = now_ms() + ((long long)QS_DEADLINE + ENGINE_ANSWER_GRACE) * 1000;
  while (got < 2 && wait_readable(s, deadline)) {
    ssize_t n = recv(s, answer + got, 2 - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  if (got == 2 && answer[0] == 'Q') _exit((unsigned char)answer[1]);
  say("qmail-scanner-queue: the scanning engine stopped before answering: temporary failure, the sender retries\n");
  _exit(EXIT_ENGINE_LOST);
}
#endif

int main(int argc, char **argv, char **envp) {
  char *args[ARGS_MAX + 6];
  size_t n = 0;
  int i;
  uid_t caller = getuid();

  become_scanner_account(); /* before anything else: nothing below runs with root */
  open_standard_fds(argc <= 1);
  default_signals();
  umask(QS_UMASK);
  if (argc > 1) {
    if (caller != 0 && caller != (uid_t)(QS_UID)) {
      say("qmail-scanner-queue: flags are for root and the scanner account only\n");
      _exit(EXIT_USAGE);
    }
    if (argc - 1 > ARGS_MAX) {
      say("qmail-scanner-queue: too many arguments\n");
      _exit(EXIT_USAGE);
    }
    for (i = 1; i < argc; ++i) {
      if (!flag_allowed(argv[i])) {
        say("qmail-scanner-queue: usage: qmail-scanner-queue [-h | -v | -z | -g | -r | --engine-status]\n");
        _exit(EXIT_USAGE);
      }
    }
  }
  char **clean = clean_environment(envp);
  if (chdir("/") != 0) trouble("cannot chdir to /");
#ifdef QS_ENGINE_SOCKET
  if (argc <= 1) engine_handoff(clean, caller);
#endif

  args[n++] = QS_PYTHON;
  args[n++] = "-I";
  args[n++] = "-S";
  args[n++] = QS_PROGRAM;
  for (i = 1; i < argc; ++i) args[n++] = argv[i];
  args[n] = NULL;
  execve(QS_PYTHON, args, clean);
  say("qmail-scanner-queue: cannot run " QS_PYTHON ": ");
  say(strerror(errno));
  say("\n");
  return EXIT_TROUBLE;
}
