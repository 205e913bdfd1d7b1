"""Shared by the unit tests: with PODNET_NO_SKIPS set (make unit and CI set it), a test that
skips is a failure. The CNI runtime, podnet-iptables, podnet-dns, readiness and lab tests skip
without root or a tool such as dig; on the machines podnet is tested on, every one must run,
or a green run could stand on nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


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
