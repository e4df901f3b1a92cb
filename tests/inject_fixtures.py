"""notqmail's real qmail-inject, built from the vendored source into a private prefix whose bin/qmail-queue is
the qmail-queue stand-in: what it queues (envelope and message) lands in QQ_STANDIN_DIR, nothing is delivered."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from testbed.build import vendor_tarball

# qmail-inject's control files: a host that qualifies bare names with example.org.
CONTROL_FILES = {"me": "mx.example.org\n", "defaulthost": "example.org\n", "defaultdomain": "example.org\n"}


@pytest.fixture(scope="session")
def real_qmail_inject(tmp_path_factory, standin) -> str:
    """The path of a qmail-inject compiled with conf-qmail = its own prefix (no /var/qmail involved)."""
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.fail("make and gcc are needed to build qmail-inject (tests/install-deps.sh installs them)")
    prefix = tmp_path_factory.mktemp("qmail-inject-prefix")
    work = tmp_path_factory.mktemp("qmail-inject-build")
    subprocess.run(["tar", "-xzf", str(vendor_tarball("notqmail")), "-C", str(work)], check=True)
    (source,) = [path for path in work.iterdir() if path.is_dir()]
    (source / "conf-qmail").write_text(f"{prefix}\n")
    subprocess.run(["make", "qmail-inject"], cwd=source, check=True, capture_output=True, timeout=300)
    (prefix / "bin").mkdir()
    (prefix / "control").mkdir()
    shutil.copy2(source / "qmail-inject", prefix / "bin" / "qmail-inject")
    os.symlink(standin, prefix / "bin" / "qmail-queue")
    for name, text in CONTROL_FILES.items():
        (prefix / "control" / name).write_text(text)
    shutil.rmtree(work)
    return str(prefix / "bin" / "qmail-inject")
