"""Every Python file in the repository is linted by ruff, type-checked by mypy and, when it ships
(the package, the Ansible plugins, the node tools), measured by coverage: the node tools have no
.py extension, and a tool, plugin or script outside the configuration's reach would pass
`make lint` and `make unit` unread. The reach is asked of each tool itself (ruff's file list,
mypy's source discovery, coverage's configuration), not of a copy of its globs."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import coverage
import pytest
from mypy.config_parser import parse_config_file
from mypy.find_sources import create_source_list
from mypy.options import Options

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Python that runs podnet rather than ships with it: checked by ruff, never measured by coverage
NOT_SHIPPED = ("tests/", "verify/", "bench/", "scripts/")


def script_dirs() -> list[str]:
    """The folders `make lint` type-checks in a mypy run each (MYPY_SCRIPT_DIRS): they import
    their helpers as top-level modules, and tests/ and verify/ both have a conftest."""
    found = re.search(r"^MYPY_SCRIPT_DIRS := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert found, "the Makefile names no MYPY_SCRIPT_DIRS"
    return found.group(1).split()


def is_python(path: Path) -> bool:
    if path.suffix == ".py":
        return True
    if path.suffix or not path.is_file():
        return False
    with path.open("rb") as f:
        first = f.readline(200)
    return first.startswith(b"#!") and b"python" in first


def python_files() -> list[str]:
    """Every Python file git knows of or would add (tracked, or new and not ignored), by
    extension or by a python shebang, relative to the repository root."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    found = sorted(name for name in set(listed) if name and is_python(ROOT / name))
    assert found, f"git ls-files found no Python file in {ROOT}"
    return found


def ruff_files() -> set[str]:
    out = subprocess.run([str(BIN / "ruff"), "check", "--show-files", "."], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return {Path(line).relative_to(ROOT).as_posix() for line in out.splitlines() if line}


def mypy_files(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The files `make lint`'s mypy runs check: pyproject's `files` expanded by mypy, and the
    folders it checks one by one."""
    monkeypatch.chdir(ROOT)  # mypy expands the globs in `files` from where it runs
    options = Options()
    errors = io.StringIO()
    parse_config_file(options, lambda: None, str(ROOT / "pyproject.toml"), io.StringIO(), errors)
    assert not errors.getvalue(), errors.getvalue()
    assert options.files, "pyproject.toml's [tool.mypy] names no files"
    return {
        Path(os.path.relpath(source.path, ROOT)).as_posix()
        for source in create_source_list([*options.files, *script_dirs()], options)
        if source.path
    }


def coverage_reaches(name: str, cov: coverage.Coverage) -> bool:
    path = (ROOT / name).as_posix()
    sources = [(ROOT / s).as_posix() + "/" for s in cov.config.source or []]
    if not any(path.startswith(s) for s in sources):
        return False
    omitted = coverage.files.GlobMatcher(cov.config.run_omit or [], "omit")
    return not omitted.match(path)


def test_ruff_checks_every_python_file() -> None:
    outside = sorted(set(python_files()) - ruff_files())
    assert not outside, f"ruff check . skips {outside}: add them to [tool.ruff] extend-include"


def test_mypy_checks_every_python_file(monkeypatch: pytest.MonkeyPatch) -> None:
    outside = sorted(set(python_files()) - mypy_files(monkeypatch))
    assert not outside, f"mypy skips {outside}: add them to [tool.mypy] files"


def test_coverage_measures_every_shipped_python_file() -> None:
    cov = coverage.Coverage(config_file=str(ROOT / "pyproject.toml"))
    shipped = [f for f in python_files() if not f.startswith(NOT_SHIPPED)]
    assert any(f.startswith("roles/") for f in shipped), "found no node tool in roles/*/files"
    outside = [f for f in shipped if not coverage_reaches(f, cov)]
    assert not outside, (
        f"coverage does not measure {outside}: add them to [tool.coverage.run] source"
    )


def test_every_node_tool_is_run_by_a_unit_test() -> None:
    """Coverage lists a .py file no test runs at 0%, but a node tool (no .py) that never runs
    is absent from the report and escapes the floor: each must be named by a unit test."""
    tools = [f for f in python_files() if f.startswith("roles/")]
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py")
                      if p.name != Path(__file__).name)
    unrun = [f for f in tools if Path(f).name not in tests]
    assert not unrun, f"no unit test names {unrun}: add one that runs it"


def test_the_reach_checks_see_a_python_file_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python node tool under a name the globs miss is found by its shebang and reported
    outside ruff's and mypy's reach: the checks above see a gap, they do not pass whatever
    they get."""
    stray = ROOT / "roles" / "cni" / "files" / "reach-test-stray-tool"
    stray.write_text("#!/usr/bin/env python3\nprint('stray')\n")
    try:
        assert stray.relative_to(ROOT).as_posix() in python_files()
        assert stray.relative_to(ROOT).as_posix() not in ruff_files()
        assert stray.relative_to(ROOT).as_posix() not in mypy_files(monkeypatch)
    finally:
        stray.unlink()
    assert not is_python(ROOT / "Makefile")
    cov = coverage.Coverage(config_file=str(ROOT / "pyproject.toml"))
    assert coverage_reaches("roles/cni/files/podnet-cni", cov)
    assert not coverage_reaches("bench/converge.py", cov)
    typed = mypy_files(monkeypatch)
    assert {"roles/cni/files/podnet-cni", "plugins/modules/podnet_lab.py",
            "plugins/filter/podnet_lab.py", "tests/conftest.py", "verify/conftest.py",
            "bench/converge.py"} <= typed
