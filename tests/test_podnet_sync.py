"""podnet_sync and its shared node-side helpers, on throwaway folders of this machine.

systemd is not PID 1 here, so the unit steps are tested through their parsing and decisions
with systemctl's answers given; files, validation, rollback, tools and packages run for real.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from nodekit import ROOT, load, utils

sync = load("podnet_sync_module", ROOT / "plugins/modules/podnet_sync.py")


def params(**given: object) -> dict:
    base: dict = {"packages": [], "update_cache": False, "cache_valid_time": 3600,
                  "directories": [], "files": [],
                  "absent": [], "sysctls": {}, "tools": [], "masked": [], "units": []}
    return {**base, **given}


def file(path: Path, content: str, **more: object) -> dict:
    return {"path": str(path), "content": content, "mode": "0644", "validate": None,
            "create_only": False, **more}


def test_files_are_written_once_then_left_alone(tmp_path: Path) -> None:
    wanted = params(directories=[{"path": str(tmp_path / "d"), "mode": "0755"}],
                    files=[file(tmp_path / "d" / "a.conf", "a\n"),
                           file(tmp_path / "b.sh", "#!/bin/sh\n", mode="0755")])
    first = utils.Report(check_mode=False)
    sync.converge(wanted, first, diff=True)
    assert (tmp_path / "d" / "a.conf").read_text() == "a\n"
    assert (tmp_path / "b.sh").stat().st_mode & 0o777 == 0o755
    assert first.changed and len(first.diffs) == 2
    again = utils.Report(check_mode=False)
    sync.converge(wanted, again, diff=True)
    assert again.changes == []


def test_an_edited_file_and_a_changed_mode_are_repaired(tmp_path: Path) -> None:
    target = tmp_path / "a.conf"
    wanted = params(files=[file(target, "good\n")])
    sync.converge(wanted, utils.Report(False), diff=False)
    target.write_text("edited\n")
    report = utils.Report(False)
    sync.converge(wanted, report, diff=True)
    assert target.read_text() == "good\n"
    assert report.diffs[0]["before"] == "edited\n" and report.diffs[0]["after"] == "good\n"
    target.chmod(0o600)
    report = utils.Report(False)
    sync.converge(wanted, report, diff=False)
    assert target.stat().st_mode & 0o777 == 0o644 and report.changed


def test_check_mode_reports_and_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a.conf"
    target.write_text("old\n")
    report = utils.Report(check_mode=True)
    sync.converge(params(files=[file(target, "new\n")], absent=[str(tmp_path / "x")]),
                  report, diff=True)
    assert report.changes == [f"wrote {target}"]
    assert target.read_text() == "old\n"


def test_create_only_keeps_what_is_there(tmp_path: Path) -> None:
    target = tmp_path / "server.conf"
    target.write_text("the component role's config\n")
    report = utils.Report(False)
    sync.converge(params(files=[file(target, "default\n", create_only=True)]), report, False)
    assert target.read_text() == "the component role's config\n" and not report.changed


def test_a_file_failing_validation_rolls_back_the_files_written_before_it(tmp_path: Path
                                                                         ) -> None:
    first, second, third = tmp_path / "1.conf", tmp_path / "2.conf", tmp_path / "3.conf"
    first.write_text("old one\n")
    wanted = params(files=[file(first, "new one\n"), file(second, "new two\n"),
                           file(third, "bad\n", validate="grep -q good %s")])
    with pytest.raises(utils.SyncError, match=r"3.conf fails validation \(grep -q good %s\)"):
        sync.converge(wanted, utils.Report(False), diff=False)
    assert first.read_text() == "old one\n"
    assert not second.exists() and not third.exists()


def test_a_file_is_validated_after_the_files_before_it_are_written(tmp_path: Path) -> None:
    records, config = tmp_path / "records.conf", tmp_path / "server.conf"
    # the config's validation reads the records file written just before it
    wanted = params(files=[file(records, "ok\n"),
                           file(config, "include\n", validate=f"grep -q ok {records} %s")])
    sync.converge(wanted, utils.Report(False), diff=False)
    assert config.read_text() == "include\n"


def test_absent_paths_are_removed(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "f").write_text("x")
    (tmp_path / "g").write_text("y")
    report = utils.Report(False)
    sync.converge(params(absent=[str(tmp_path / "dir"), str(tmp_path / "g"),
                                 str(tmp_path / "never")]), report, False)
    assert list(tmp_path.iterdir()) == [] and len(report.changes) == 2


def tool(tmp_path: Path, body: str) -> str:
    path = tmp_path / "podnet-tool"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_tools_follow_the_shared_protocol(tmp_path: Path) -> None:
    argv = tool(tmp_path, 'echo "args: $*" >&2; '
                'if [ "$2" = --check ]; then echo \'{"changed": true, "check": 1}\'; '
                'else echo \'{"changed": false}\'; fi')
    live = utils.Report(False)
    got, _ = sync.converge(params(tools=[{"argv": [argv, "apply"], "check_arg": "--check"}]),
                           live, False)
    assert got == [{"changed": False}] and not live.changed
    dry = utils.Report(True)
    got, _ = sync.converge(params(tools=[{"argv": [argv, "apply"], "check_arg": "--check"}]),
                           dry, False)
    assert got == [{"changed": True, "check": 1}] and dry.changed


def test_a_tool_without_its_json_line_or_failing_is_an_error(tmp_path: Path) -> None:
    quiet = tool(tmp_path, "echo done")
    with pytest.raises(utils.SyncError, match="no JSON line with 'changed'"):
        utils.run_tool(utils.Report(False), [quiet])
    failing = tool(tmp_path, "echo broken >&2; exit 3")
    with pytest.raises(utils.SyncError, match="exited 3: broken"):
        utils.run_tool(utils.Report(False), [failing])


def test_a_tool_not_installed_yet_fails_but_a_dry_run_notes_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "not-installed")
    with pytest.raises(utils.SyncError, match="is not installed"):
        utils.run_tool(utils.Report(False), [missing])
    dry = utils.Report(True)
    assert utils.run_tool(dry, [missing]) == {"changed": True} and dry.changed


def test_missing_packages_asks_dpkg() -> None:
    if not Path("/usr/bin/dpkg-query").exists():
        pytest.fail("dpkg-query is needed (podnet's controller is Debian)")
    assert utils.missing_packages(["bash", "podnet-no-such-package"]) == \
        ["podnet-no-such-package"]
    assert utils.missing_packages([]) == []


def test_unit_states_pairs_systemctls_answers_with_the_units_asked(monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    answer = ("Id=a.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n"
              "ExecMainStartTimestampMonotonic=123\n\n"
              "Id=b.timer\nLoadState=not-found\nActiveState=inactive\nUnitFileState=\n"
              "ExecMainStartTimestampMonotonic=0\n")
    seen: list[list[str]] = []

    def must(argv: list[str], what: str, timeout: int = 300) -> str:
        seen.append(argv)
        return answer

    monkeypatch.setattr(utils, "must", must)
    states = utils.unit_states(["a.service", "b.timer"])
    assert utils.is_active(states["a.service"]) and utils.is_enabled(states["a.service"])
    assert not utils.is_active(states["b.timer"]) and not utils.is_enabled(states["b.timer"])
    assert len(seen) == 1  # one systemctl call for all of them
    monkeypatch.setattr(utils, "must", lambda argv, what, timeout=300: answer)
    with pytest.raises(utils.SyncError, match="answered 2 units for 3"):
        utils.unit_states(["a.service", "b.timer", "c.service"])


def test_units_are_restarted_started_enabled_and_masked_as_asked(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    config = tmp_path / "server.conf"
    states = {
        "changed.service": {"ActiveState": "active", "UnitFileState": "enabled"},
        "stopped.service": {"ActiveState": "inactive", "UnitFileState": "disabled"},
        "pkg.service": {"ActiveState": "active", "UnitFileState": "enabled"},
        "fine.timer": {"ActiveState": "active", "UnitFileState": "enabled"},
    }
    monkeypatch.setattr(sync, "unit_states", lambda names: {n: states[n] for n in names})
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(sync, "systemctl",
                        lambda report, verb, units, why="": calls.append((verb, list(units))))
    states["live.service"] = {"ActiveState": "active", "UnitFileState": "enabled"}
    unit = {"state": "started", "enabled": True, "masked": False, "restart_on": [],
            "reload_on": []}
    _, restarted = sync.converge(params(
        files=[file(config, "new\n")], masked=["pkg.service"],
        units=[{**unit, "name": "changed.service", "restart_on": [str(config)]},
               {**unit, "name": "live.service", "reload_on": [str(config)]},
               {**unit, "name": "stopped.service"}, {**unit, "name": "fine.timer"}]),
        utils.Report(False), False)
    assert restarted == ["changed.service"]
    # the masked unit first: masking comes before the packages are installed (see below); a
    # unit that reloads its configuration is reloaded, not restarted
    assert calls == [("mask", ["pkg.service"]), ("stop", ["pkg.service"]),
                     ("restart", ["changed.service"]), ("reload", ["live.service"]),
                     ("start", ["stopped.service"]), ("enable", ["stopped.service"])]


def test_a_masked_unit_not_installed_yet_is_masked_before_its_package_installs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian starts a packaged server when it is installed: masking it first keeps it off."""
    calls: list[str] = []
    monkeypatch.setattr(sync, "unit_states", lambda names: {n: {
        "ActiveState": "inactive", "UnitFileState": "", "LoadState": "not-found"} for n in names})
    monkeypatch.setattr(sync, "systemctl",
                        lambda report, verb, units, why="": calls.append(f"{verb} {units[0]}"))
    monkeypatch.setattr(sync, "install_packages",
                        lambda report, packages, update, valid: calls.append("install"))
    sync.converge(params(packages=["unbound"], masked=["unbound.service"]),
                  utils.Report(False), False)
    assert calls == ["mask unbound.service", "install"]  # no stop: it never ran


class FakeApt:
    """apt-get as install_packages calls it: records each call, answers from a script."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, lists: Path, install_answers: list[int],
                 missing: list[str]) -> None:
        self.calls: list[str] = []
        self.answers = list(install_answers)
        monkeypatch.setattr(utils, "APT_LISTS", lists)
        monkeypatch.setattr(utils, "missing_packages", lambda packages: list(missing))
        monkeypatch.setattr(utils, "run", self.run)

    def run(self, argv: list[str], stdin: str | None = None, timeout: float = 300) -> Any:
        verb = argv[argv.index("-o") + 2]
        self.calls.append(verb)
        assert "DPkg::Lock::Timeout=300" in argv  # waits for a VM's unattended-upgrades
        rc = self.answers.pop(0) if verb == "install" else 0
        out = "E: Unable to locate package conntrack" if rc else ""
        return type("Proc", (), {"returncode": rc, "stdout": "", "stderr": out})()


def lists_dir(tmp_path: Path, age: float | None, name: str = "lists") -> Path:
    """apt's lists folder with one Packages list ``age`` seconds old (None: empty)."""
    lists = tmp_path / name
    lists.mkdir()
    if age is not None:
        f = lists / "mirror_._Packages"
        f.write_text("Package: x\n")
        os.utime(f, (time.time() - age, time.time() - age))
    return lists


@pytest.mark.parametrize(("age", "expected"), [
    (None, ["update", "install"]),          # a fresh image: no lists at all
    (7200.0, ["update", "install"]),        # older than cache_valid_time
    (60.0, ["install"]),                    # fresh: apt is not asked to refresh
])
def test_the_package_lists_are_refreshed_when_empty_or_stale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, age: float | None,
        expected: list[str]) -> None:
    apt = FakeApt(monkeypatch, lists_dir(tmp_path, age), [0], ["conntrack"])
    utils.install_packages(utils.Report(False), ["conntrack"], False, 3600)
    assert apt.calls == expected


def test_fresh_lists_apt_cannot_find_a_package_in_are_refreshed_once_and_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apt = FakeApt(monkeypatch, lists_dir(tmp_path, 60.0), [100, 0], ["conntrack"])
    utils.install_packages(utils.Report(False), ["conntrack"], False, 3600)
    assert apt.calls == ["install", "update", "install"]


def test_a_package_apt_cannot_find_after_a_refresh_fails_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apt = FakeApt(monkeypatch, lists_dir(tmp_path, None), [100], ["conntrack"])
    with pytest.raises(utils.SyncError, match=r"installing conntrack: .*Unable to locate"):
        utils.install_packages(utils.Report(False), ["conntrack"], False, 3600)
    assert apt.calls == ["update", "install"]  # refreshed already: no second refresh


def test_nothing_missing_asks_apt_nothing_and_a_dry_run_only_notes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apt = FakeApt(monkeypatch, lists_dir(tmp_path, None), [], [])
    utils.install_packages(utils.Report(False), ["conntrack"], False, 3600)
    assert apt.calls == []
    apt = FakeApt(monkeypatch, lists_dir(tmp_path, None, "dry"), [], ["conntrack"])
    report = utils.Report(True)
    utils.install_packages(report, ["conntrack"], False, 3600)
    assert apt.calls == [] and report.changes == ["installed conntrack"]


def test_lists_age_is_none_without_lists(tmp_path: Path) -> None:
    assert utils.lists_age(tmp_path / "absent") is None
    assert utils.lists_age(lists_dir(tmp_path, None)) is None
    age = utils.lists_age(lists_dir(tmp_path, 500.0, "old"))
    assert age is not None and 499 < age < 600


def test_a_bad_mode_is_named(tmp_path: Path) -> None:
    with pytest.raises(utils.SyncError, match="mode 'rw' is not an octal number"):
        sync.converge(params(directories=[{"path": str(tmp_path / "x"), "mode": "rw"}]),
                      utils.Report(True), False)


def test_diff_of_a_large_file_says_only_its_size(tmp_path: Path) -> None:
    report = utils.Report(False)
    big = "x" * (utils.DIFF_LIMIT + 1)
    utils.sync_file(report, tmp_path / "big", big, 0o644, diff=True)
    assert report.diffs[0]["after"] == f"({len(big)} bytes, not shown)\n"
    assert json.dumps(report.diffs)


def test_a_dry_run_whose_files_change_does_not_ask_the_tools(tmp_path: Path) -> None:
    failing = tool(tmp_path, "exit 1")  # it would fail on the old (here: missing) input
    report = utils.Report(True)
    got, _ = sync.converge(params(files=[file(tmp_path / "routes.conf", "10.0.0.0/8\n")],
                                  tools=[{"argv": [failing, "apply"], "check_arg": "--check"}]),
                           report, False)
    assert got == [{"changed": True}]
    assert report.changes[-1] == f"would run {failing} apply (its input changes)"


class FakeModule:
    """What finish() needs of an AnsibleModule: check_mode, exit_json, fail_json."""

    def __init__(self) -> None:
        self.check_mode = False
        self.answer: dict = {}

    def exit_json(self, **result: object) -> None:
        self.answer = {"exit": result}

    def fail_json(self, **result: object) -> None:
        self.answer = {"fail": result}


def test_finish_answers_changes_outcome_and_diffs_or_fails_with_the_message(tmp_path: Path
                                                                            ) -> None:
    module = FakeModule()
    utils.finish(module, lambda report: (utils.sync_file(report, tmp_path / "a", "x\n", 0o644,
                                                         diff=True), {"tools": []})[1])
    result = module.answer["exit"]
    assert result["changed"] and result["changes"] == [f"created {tmp_path / 'a'}"]
    assert result["tools"] == [] and result["diff"][0]["after"] == "x\n"

    def broken(report: Any) -> dict[str, Any]:
        report.note("did one thing")
        raise utils.SyncError("then this went wrong")

    utils.finish(module, broken)
    assert module.answer == {"fail": {"msg": "then this went wrong",
                                      "changes": ["did one thing"]}}


def test_a_virtual_package_an_installed_package_provides_is_not_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([
        "curl installed\ndnsutils not-installed\n",
        "installed\tdnsutils (= 1:9.20.9-1), bind9-host\nconfig-files\tnc\ninstalled\t\n",
    ])
    seen: list[list[str]] = []

    def run(argv: list[str], stdin: str | None = None, timeout: float = 300) -> Any:
        seen.append(argv)
        return type("Proc", (), {"returncode": 0, "stdout": next(answers), "stderr": ""})()

    monkeypatch.setattr(utils, "run", run)
    assert utils.missing_packages(["curl", "dnsutils", "netcat"]) == ["netcat"]
    assert len(seen) == 2  # one more dpkg-query, only because something looked missing
    assert utils.provided_names("installed\tdnsutils (= 1), x:any\nhalf-installed\ty\n") == \
        {"dnsutils", "x"}
