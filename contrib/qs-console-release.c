/* qs-console-release: the console's one privileged step, acting on a quarantined message.
 *
 * The console runs as its own account (qsconsole), which cannot read the quarantine (the scanner
 * account's, 0700). This helper is installed root:qsconsole 04750 by `qs-console install`: only
 * root and the console's group can run it, and neither the console nor the scanner account can
 * rewrite it (a setuid binary owned by the account it becomes could be rewritten by that account).
 *
 * It accepts exactly these argument forms of qs-quarantine (those lib/qsconsole/actions.py gives
 * the release tool), nothing else:
 *     release -- ID              release to the original recipients
 *     release --to ADDR -- ID    release to ADDR alone
 *     delete -- ID               remove the stored copy
 *     show --raw -- ID           write the stored bytes (the console's download and spam/ham learning)
 * ADDR is one address: 1 to 320 bytes, no space or control character, not starting with '-'
 * (qs-quarantine then delivers only if it is one of the message's original recipients). ID is a
 * quarantine id: a letter or digit, then letters, digits, '.', '_', '-' (what qs-quarantine
 * accepts; no slash, no "..", no leading '-'). Anything else is refused before any privilege is
 * used. It then drops to the scanner account for good and execs the installed qs-quarantine with
 * fixed arguments and a fixed environment, after checking that the tool is root's and writable
 * by root only.
 *
 * Compiled in (-D): QS_TOOL (the installed qs-quarantine), QS_UID and QS_GID (the scanner account).
 */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef QS_TOOL
#error "compile with -DQS_TOOL=\"/path/of/installed/qs-quarantine\""
#endif
#if !defined(QS_UID) || !defined(QS_GID)
#error "compile with -DQS_UID=n -DQS_GID=n (the scanner account)"
#endif

#define MAX_ID 255
#define MAX_ADDRESS 320
#define USAGE_EXIT 64
#define REFUSED_EXIT 77

static int valid_id(const char *id) {
  size_t length = strlen(id);
  size_t i;
  if (length == 0 || length > MAX_ID)
    return 0;
  for (i = 0; i < length; i++) {
    char c = id[i];
    int alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
      return 0;
  }
  return 1;
}

static int valid_address(const char *address) {
  size_t length = strlen(address);
  size_t i;
  if (length == 0 || length > MAX_ADDRESS || address[0] == '-')
    return 0;
  for (i = 0; i < length; i++) {
    unsigned char c = (unsigned char)address[i];
    if (c <= ' ' || c == 0x7f)
      return 0;
  }
  return 1;
}

int main(int argc, char **argv) {
  struct stat tool;
  char *const environment[] = {"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8", NULL};
  char *arguments[] = {QS_TOOL, NULL, NULL, NULL, NULL, NULL, NULL};
  const char *id;

  if (argc == 4 && strcmp(argv[1], "release") == 0 && strcmp(argv[2], "--") == 0) {
    arguments[1] = "release";
    arguments[2] = "--";
    arguments[3] = argv[3];
  } else if (argc == 6 && strcmp(argv[1], "release") == 0 && strcmp(argv[2], "--to") == 0 &&
             strcmp(argv[4], "--") == 0) {
    if (!valid_address(argv[3])) {
      fprintf(stderr, "qs-console-release: refused: not one address\n");
      return USAGE_EXIT;
    }
    arguments[1] = "release";
    arguments[2] = "--to";
    arguments[3] = argv[3];
    arguments[4] = "--";
    arguments[5] = argv[5];
  } else if (argc == 4 && strcmp(argv[1], "delete") == 0 && strcmp(argv[2], "--") == 0) {
    arguments[1] = "delete";
    arguments[2] = "--";
    arguments[3] = argv[3];
  } else if (argc == 5 && strcmp(argv[1], "show") == 0 && strcmp(argv[2], "--raw") == 0 &&
             strcmp(argv[3], "--") == 0) {
    arguments[1] = "show";
    arguments[2] = "--raw";
    arguments[3] = "--";
    arguments[4] = argv[4];
  } else {
    fprintf(stderr, "qs-console-release: usage: qs-console-release release [--to ADDR] -- QUARANTINE-ID\n"
                    "       qs-console-release delete -- QUARANTINE-ID\n"
                    "       qs-console-release show --raw -- QUARANTINE-ID\n");
    return USAGE_EXIT;
  }
  id = argv[argc - 1];
  if (!valid_id(id)) {
    fprintf(stderr, "qs-console-release: refused: not a quarantine id\n");
    return USAGE_EXIT;
  }
  /* Drop to the scanner account for good before anything else: groups, then gid, then uid. */
  if (setgroups(0, NULL) != 0 || setgid(QS_GID) != 0 || setuid(QS_UID) != 0) {
    fprintf(stderr, "qs-console-release: cannot become the scanner account: %s\n", strerror(errno));
    return REFUSED_EXIT;
  }
  if (getuid() != QS_UID || geteuid() != QS_UID || getgid() != QS_GID || getegid() != QS_GID || setuid(0) == 0) {
    fprintf(stderr, "qs-console-release: the privilege drop did not hold\n");
    return REFUSED_EXIT;
  }
  umask(077);
  if (stat(QS_TOOL, &tool) != 0 || tool.st_uid != 0 || (tool.st_mode & (S_IWGRP | S_IWOTH)) ||
      !S_ISREG(tool.st_mode)) {
    fprintf(stderr, "qs-console-release: %s is missing or not root's alone: refused\n", QS_TOOL);
    return REFUSED_EXIT;
  }
  execve(QS_TOOL, arguments, environment);
  fprintf(stderr, "qs-console-release: %s: %s\n", QS_TOOL, strerror(errno));
  return REFUSED_EXIT;
}
