/*
 * qmail-scanner-queue: the setuid wrapper qmail runs as $QMAILQUEUE.
 *
 * Python scripts cannot be setuid, so this small program is: installed owned by the
 * scanner account (qscand) with the setuid and setgid bits, it
 *   1. makes sure fds 0, 1 and 2 are open (a closed fd 2 would otherwise become the first
 *      file the scanner opens, and its error lines would land in the message); with no
 *      message or envelope fd it exits 54 as qmail-queue does,
 *   2. becomes the scanner account completely (real, effective and saved ids), so the
 *      caller can neither signal nor trace the scanner,
 *   3. throws the caller's environment away except the variables qmail's callers set for
 *      the scanner (TCP*, RELAYCLIENT, DATABYTES, SMTPAUTHUSER, QS_*), bounded in size,
 *      and sets a fixed PATH and umask,
 *   4. execs the interpreter frozen at configure time with -I -S on the installed program:
 *      no PYTHON* variables, no user site, no site-packages, no current directory on sys.path.
 * Administrator flags (-h -v -z -g -r) are passed on only for root and the scanner account.
 *
 * Everything it needs is compiled in by configure.py (-D...); nothing is read at run time.
 * Exit codes follow qmail-queue(8): 81 "qq internal bug" (temporary) when it cannot run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
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

#define EXIT_TROUBLE 81   /* 451 qq internal bug: the sender retries */
#define EXIT_USAGE 100
#define EXIT_READ_ERROR 54 /* 451 qq read error */
#define KEEP_MAX 64        /* variables passed on at most */
#define VALUE_MAX 1024     /* longer values are dropped: no caller variable needs more */
#define NAME_MAX_LEN 64
#define ARGS_MAX 8

static void say(const char *text) {
  /* One line for the smtpd log; nothing else goes to fd 2. */
  ssize_t ignored = write(2, text, strlen(text));
  (void)ignored;
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

static void become_scanner_account(void) {
  uid_t uid = (uid_t)(QS_UID);
  gid_t gid = (gid_t)(QS_GID);
  if (geteuid() == 0) {
    /* Run by root (cron, or a setuid-root install): drop everything, groups first. */
    if (setgroups(1, &gid) != 0) trouble("setgroups failed");
    if (setresgid(gid, gid, gid) != 0) trouble("setresgid failed");
    if (setresuid(uid, uid, uid) != 0) trouble("setresuid failed");
  } else {
    /* Setuid/setgid to the scanner account: make the real and saved ids match the
     * effective ones, so no way back to the caller's ids remains. */
    gid_t egid = getegid();
    uid_t euid = geteuid();
    if (setresgid(egid, egid, egid) != 0) trouble("setresgid failed");
    if (setresuid(euid, euid, euid) != 0) trouble("setresuid failed");
  }
  if (getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid)
    trouble("not running as the scanner account: is the wrapper installed setuid and setgid to it?");
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
  static const char *flags[] = {"-h", "--help", "-v", "-z", "-g", "-r", NULL};
  size_t i;
  for (i = 0; flags[i]; ++i)
    if (strcmp(arg, flags[i]) == 0) return 1;
  return 0;
}

int main(int argc, char **argv, char **envp) {
  char *args[ARGS_MAX + 6];
  size_t n = 0;
  int i;
  uid_t caller = getuid();

  open_standard_fds(argc <= 1);
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
        say("qmail-scanner-queue: usage: qmail-scanner-queue [-h | -v | -z | -g | -r]\n");
        _exit(EXIT_USAGE);
      }
    }
  }
  become_scanner_account();
  char **clean = clean_environment(envp);
  if (chdir("/") != 0) trouble("cannot chdir to /");

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
