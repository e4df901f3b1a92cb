# qmail-scanner: `make demo` shows it working; `make test` sets up everything and runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: all demo demo-stop test deps venv lint bench bench-compare bench-engine bench-console corpus differential load load-engine soak site-run clean help

all: help

help:
	@echo "make demo    configure, install into ./demo, run sample messages, show what happened; start the console"
	@echo "make demo-stop  stop the console make demo left running"
	@echo "make test    install what the tests need (Debian packages as root, a venv), run every test"
	@echo "make bench   per-message cost and unpacking speed, as ratios against a baseline"
	@echo "make bench-compare [BASE=rev]  this tree against another revision, installed side by side, interleaved"
	@echo "make bench-smtp  SMTP sessions through the real qmail-smtpd: no filter, simscan, this project (root)"
	@echo "make corpus  real-world mail from other projects through the program: outcomes per kind"
	@echo "make differential [N=3000]  crafted messages: what real mail parsers extract that the unpacker misses"
	@echo "make lint    ruff"
	@echo "make bench-engine  the resident engine's workers over 10,000 messages: RSS and fds (root)"
	@echo "make bench-console  qs-console: the loader's rate, each API search at 1,000,000 records (SQLite, PostgreSQL),"
	@echo "                    and the engine's time per message with the loader busy beside it (root)"
	@echo "make load    concurrent senders through the program with faults, then an accounting"
	@echo "make load-engine  the same through the resident engine and the setuid wrapper (root)"
	@echo "make soak    a long fuzzing run with a summary"
	@echo "make site-run [DURATION=600] [ROUNDS=8]  a quiet, reloaded site: bursts, idle spells, clamd/spamd restarts (root)"

deps:
	PYTHON=$(PYTHON) sh tests/install-deps.sh all

venv:
	PYTHON=$(PYTHON) sh tests/install-deps.sh venv

demo: venv
	sh tests/install-deps.sh debian
	$(PY) contrib/demo.py

demo-stop:
	$(PYTHON) contrib/demo.py --stop

test: deps
	$(PY) -m ruff check lib tests configure.py contrib benchmarks contrib/qs-quarantine contrib/qs-report
	CI=$${CI:-} $(PY) -m pytest -q tests

lint: venv
	$(PY) -m ruff check lib tests configure.py contrib benchmarks contrib/qs-quarantine contrib/qs-report

bench: deps
	$(PY) benchmarks/run.py
	if [ "$$(id -u)" = 0 ]; then $(PY) benchmarks/engine.py latency; else echo "engine vs standalone: needs root"; fi

BASE ?= HEAD~1
bench-compare: deps
	$(PY) benchmarks/compare_trees.py --base $(BASE)

bench-engine: deps
	$(PY) benchmarks/engine.py soak

bench-console: deps
	status=0; $(PY) benchmarks/console.py --postgresql-search || status=1; \
	if [ "$$(id -u)" = 0 ]; then $(PY) benchmarks/console_engine.py || status=1; \
	else echo "the engine beside the loader: needs root"; fi; exit $$status

corpus: venv
	$(PY) benchmarks/corpus.py

N ?= 3000
differential: deps
	$(PY) benchmarks/differential.py --count $(N)

bench-smtp: deps
	$(PY) benchmarks/bench_smtp.py

load: deps
	$(PY) benchmarks/load.py

load-engine: deps
	$(PY) benchmarks/load.py --engine

soak: deps
	$(PY) tests/soak.py

DURATION ?= 600
ROUNDS ?= 8
site-run: deps
	$(PY) benchmarks/site_run.py --duration $(DURATION) --rounds $(ROUNDS)

clean:
	-$(PYTHON) contrib/demo.py --stop
	rm -rf demo build .pytest_cache .hypothesis .ruff_cache qmail-scanner-queue.py soak-summary.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
