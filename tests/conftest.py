"""Shared by the unit tests: with PODNET_NO_SKIPS set (make unit and CI set it), a test that
skips is a failure. The CNI runtime, podnet-iptables, podnet-dns, readiness and lab tests skip
without root or a tool such as dig; on the machines podnet is tested on, every one must run,
or a green run could stand on nothing.

make unit runs the tests on two pytest-xdist workers, a file whole on one worker (--dist
loadfile), files in the order collected here (--no-loadscope-reorder): the lab tests come
first, so the slowest file (a real lab, mostly waiting on it) starts at once and the other
files fill the other worker meanwhile instead of leaving it idle at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a stable sort: the tests marked lab first, every file's tests in their own order
    items.sort(key=lambda item: item.get_closest_marker("lab") is None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("PODNET_NO_SKIPS") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"skipped, and PODNET_NO_SKIPS says every test must run here: "
                           f"{reason} (make setup installs what the tests need)")
