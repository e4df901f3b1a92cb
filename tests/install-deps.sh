#!/bin/sh
# Install what the tests and the demo need: Debian packages (as root) and a venv.
# Usage: tests/install-deps.sh [debian|node|testbed|venv|all]
set -eu
cd "$(dirname "$0")/.."
what=${1:-all}
PYTHON=${PYTHON:-python3}

DEBIAN_PACKAGES="gcc libc6-dev libmagic1 python3-magic tnef maildrop clamav clamav-daemon clamdscan clamav-testfiles
spamassassin spamd spamc rspamd chromium logrotate perl
make groff-base ucspi-tcp ripmime
libarchive13 libarchive-tools 7zip xorriso gcab zstd xz-utils bzip2
libmime-tools-perl maildir-utils libconvert-binhex-perl uudeview prometheus-node-exporter
man-db daemontools runit rsyslog systemd
python3-django python3-psycopg2 python3-waitress postgresql-15 postgresql-client-15 chromium-driver python3-selenium"

debian() {
    missing=""
    for package in $DEBIAN_PACKAGES; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing="$missing $package"
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: missing Debian packages:$missing (run as root to install them)" >&2
        return 0
    fi
    echo "install-deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends $missing >/dev/null
    }
    # The packaged daemons must not hold the default sockets or eat memory: tests start their own.
    for service in clamav-daemon clamav-freshclam spamd spamassassin rspamd prometheus-node-exporter rsyslog postgresql; do
        if command -v systemctl >/dev/null 2>&1; then systemctl stop "$service" >/dev/null 2>&1 || true; fi
    done
}

# node and the pinned mailparser for the differential harness (tests/differential). A node that is
# already there (e.g. a newer one from another source, with its own npm) is kept.
node_deps() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        if [ "$(id -u)" != 0 ]; then
            echo "install-deps: node and npm are missing (run as root to install them)" >&2
            return 0
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends nodejs npm >/dev/null 2>&1 || {
            apt-get update -q >/dev/null
            apt-get install -y -q --no-install-recommends nodejs npm >/dev/null
        }
    fi
    stamp=tests/differential/node_modules/.installed
    if [ ! -f "$stamp" ] || [ tests/differential/package-lock.json -nt "$stamp" ]; then
        (cd tests/differential && npm ci --silent --no-audit --no-fund >/dev/null)
        touch "$stamp"
    fi
}

# The real qmail test bed (tests/testbed/build.py): notqmail and simscan in /opt/qmail-scanner-testbed
# (never /var/qmail; accounts qsbed-*), built once
# from the shared vendor sources and rebuilt only when they change.
testbed() {
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: the qmail test bed is built as root (tests/testbed/build.py)" >&2
        return 0
    fi
    "$PYTHON" tests/testbed/build.py --quiet
}

venv() {
    if [ ! -x .venv/bin/python ]; then
        "$PYTHON" -m venv .venv
    fi
    stamp=.venv/.requirements-installed
    if [ ! -f "$stamp" ] || [ tests/requirements.txt -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
        touch "$stamp"
    fi
}

case "$what" in
    debian) debian ;;
    node) node_deps ;;
    testbed) testbed ;;
    venv) venv ;;
    all) debian; node_deps; testbed; venv ;;
    *) echo "usage: $0 [debian|node|testbed|venv|all]" >&2; exit 2 ;;
esac
