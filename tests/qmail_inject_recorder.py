# qmail-inject stand-in for tests (RECORD_DIR is set in the line above when the fixture writes it):
# records argv, the environment, its open fds and the message on stdin, one JSON file per run.
import json
import os
import sys


def _is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


message = sys.stdin.buffer.read()
record = {
    "argv": sys.argv[1:],
    "qmailqueue": os.environ.get("QMAILQUEUE"),
    "fds": [fd for fd in range(256) if _is_open(fd)],
    "message": message.decode("utf-8", "replace"),
}
name = os.path.join(RECORD_DIR, f"{os.getpid()}.json")  # noqa: F821 - set by the fixture
with open(name + ".tmp", "w") as handle:
    json.dump(record, handle)
os.rename(name + ".tmp", name)
sys.exit(int(os.environ.get("INJECT_EXIT", "0")))
