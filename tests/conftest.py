"""Shared fixtures: the qmail-queue stand-in and installations of the generated program."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import Installation, build_standin, install
from testbed.isolation import describe_changes, stock_qmail_snapshot

# Fixture modules shared by several test files, registered once here.
pytest_plugins = ("actions_fixtures", "mime_fixtures", "testbed.fixtures", "engine_fixtures", "console_fixtures")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true nothing may be skipped: a skip there hides a missing install step."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (nothing may be skipped in CI): {report.longrepr}"


@pytest.fixture(scope="session", autouse=True)
def stock_qmail_untouched():
    """The session fails if /var/qmail's bin/ or control/ or the stock qmail accounts changed while it ran.

    `make test` may run on a host whose live qmail is there; the test bed lives in a prefix of its own.
    """
    before = stock_qmail_snapshot()
    yield
    changes = describe_changes(before, stock_qmail_snapshot())
    if changes:
        pytest.fail("the host's qmail changed during the test session:\n" + "\n".join(changes[:50]), pytrace=False)


@pytest.fixture(scope="session")
def standin(tmp_path_factory) -> Path:
    """The compiled qmail-queue stand-in."""
    return build_standin(tmp_path_factory.mktemp("standin"))


@pytest.fixture(scope="session")
def make_installation(tmp_path_factory, standin):
    """Factory: make_installation(*configure_args) -> Installation, cached per argument list."""
    cache: dict[tuple[str, ...], Installation] = {}

    def factory(*configure_args: str, fresh: bool = False) -> Installation:
        key = tuple(configure_args)
        if fresh or key not in cache:
            cache[key] = install(tmp_path_factory.mktemp("qs"), standin, *configure_args)
        return cache[key]

    return factory


@pytest.fixture
def installation(tmp_path, standin) -> Installation:
    """A fresh installation with internal checks only, no alerts (per test: spool state is private)."""
    return install(tmp_path / "qs", standin)
