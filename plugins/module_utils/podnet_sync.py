"""Node-side helpers shared by podnet's sync modules (podnet_sync, podnet_kubelet).

A sync module gets a node's whole desired state in one call and converges it the way a
kubelet's sync loop does: compare, change only what differs, report what it changed. These
helpers are its vocabulary: files written atomically (validated first, so a bad file changes
nothing), systemd units read in one ``systemctl show`` and changed in few calls, packages
checked with one ``dpkg-query``, and podnet's node tools run with their shared protocol
(``--check``; one JSON line with ``changed``). Standard library only: this runs on the node.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

UNIT_SUFFIXES = (".service", ".timer", ".socket", ".target", ".path", ".mount")
DIFF_LIMIT = 64 * 1024  # bytes of a file shown in --diff; larger files say only that they changed

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


class SyncError(Exception):
    """What went wrong, worded for the person running the converge."""


def run(argv: Sequence[str], stdin: str | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C", "SYSTEMD_PAGER": "", "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False,
                          timeout=timeout, env=env)


def must(argv: Sequence[str], what: str, timeout: float = 300) -> str:
    proc = run(argv, timeout=timeout)
    if proc.returncode != 0:
        raise SyncError(f"{what}: '{' '.join(argv)}' exited {proc.returncode}: "
                        f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout


class Report:
    """What a sync changed (or would change, in check mode), and the diffs to show."""

    def __init__(self, check_mode: bool) -> None:
        self.check_mode = check_mode
        self.changes: list[str] = []
        self.diffs: list[dict[str, str]] = []

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def note(self, what: str) -> None:
        self.changes.append(what)


def finish(module: Any, converge: Callable[[Report], dict[str, Any]]) -> None:
    """Run a sync module's ``converge(report)`` and answer Ansible the way every podnet sync
    module does: ``changed``, ``changes``, what converge returned, and the diffs; a SyncError
    fails the task with its message and the changes made before it."""
    report = Report(module.check_mode)
    try:
        outcome = converge(report)
    except SyncError as exc:
        module.fail_json(msg=str(exc), changes=report.changes)
        return
    result = {"changed": report.changed, "changes": report.changes, **outcome}
    if report.diffs:
        result["diff"] = report.diffs
    module.exit_json(**result)


# -- files ------------------------------------------------------------------------------------
def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return "\ufffd(binary)"


def mode_of(path: Path) -> int | None:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return None


def write_atomic(path: Path, content: str, mode: int) -> None:
    """Write through a temporary file in the same folder and rename it into place, so a reader
    sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def validate(command: str, content: str, name: str) -> None:
    """Run ``command`` with ``%s`` replaced by a temporary copy of ``content``."""
    if "%s" not in command:
        raise SyncError(f"validate command for {name} has no %s: {command!r}")
    suffix = "".join(Path(name).suffixes[-1:])
    with tempfile.NamedTemporaryFile("w", suffix=suffix, prefix="podnet-validate-") as tmp:
        tmp.write(content)
        tmp.flush()
        argv = [word.replace("%s", tmp.name) for word in command.split()]
        proc = run(argv)
    if proc.returncode != 0:
        raise SyncError(f"{name} fails validation ({command}): "
                        f"{(proc.stderr or proc.stdout).strip()[-2000:]}")


def sync_file(report: Report, path: Path, content: str, mode: int, create_only: bool = False,
              diff: bool = False) -> bool:
    """Make ``path`` hold ``content`` with ``mode``; True when it had to change."""
    before = read_text(path)
    if before is not None and create_only:
        return False
    current_mode = mode_of(path)
    if before == content and current_mode == mode:
        return False
    if before == content:
        report.note(f"mode {path} {oct(current_mode or 0)} -> {oct(mode)}")
    else:
        report.note(f"{'wrote' if before is not None else 'created'} {path}")
        if diff:
            report.diffs.append({
                "before_header": str(path), "after_header": str(path),
                "before": _shown(before or ""), "after": _shown(content)})
    if not report.check_mode:
        write_atomic(path, content, mode)
    return True


def _shown(text: str) -> str:
    return text if len(text) <= DIFF_LIMIT else f"({len(text)} bytes, not shown)\n"


def sync_directory(report: Report, path: Path, mode: int) -> None:
    if path.is_dir():
        if mode_of(path) != mode:
            report.note(f"mode {path} -> {oct(mode)}")
            if not report.check_mode:
                path.chmod(mode)
        return
    report.note(f"created {path}/")
    if not report.check_mode:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)


def remove_path(report: Report, path: Path) -> bool:
    if not path.exists() and not path.is_symlink():
        return False
    report.note(f"removed {path}")
    if not report.check_mode:
        if path.is_dir() and not path.is_symlink():
            for child in sorted(path.rglob("*"), reverse=True):
                if child.is_dir() and not child.is_symlink():
                    child.rmdir()
                else:
                    child.unlink()
            path.rmdir()
        else:
            path.unlink()
    return True


def is_unit_file(path: Path | str) -> bool:
    text = str(path)
    return "/systemd/" in text and text.endswith(UNIT_SUFFIXES)


def sync_sysctl(report: Report, key: str, value: str) -> None:
    """Set a kernel parameter now when its live value differs (per network namespace for the
    net.* ones, so a lab node changes only its own)."""
    path = Path("/proc/sys") / key.replace(".", "/")
    try:
        live = " ".join(path.read_text().split())
    except OSError as exc:
        raise SyncError(f"sysctl {key}: cannot read {path}: {exc.strerror}") from None
    if live == " ".join(value.split()):
        return
    report.note(f"sysctl {key} {live} -> {value}")
    if not report.check_mode:
        must(["sysctl", "-w", f"{key}={value}"], f"setting sysctl {key}")


# -- packages ---------------------------------------------------------------------------------
def missing_packages(packages: Iterable[str]) -> list[str]:
    """Packages not installed, by one dpkg-query (a name it does not know counts as missing).
    A virtual name an installed package provides counts as installed (trixie's ``dnsutils`` is
    bind9-dnsutils'), else apt would be asked to install it on every run."""
    wanted = sorted(set(packages))
    if not wanted:
        return []
    proc = run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *wanted])
    installed = {line.split()[0].split(":")[0] for line in proc.stdout.splitlines()
                 if line.endswith(" installed")}
    missing = [p for p in wanted if p not in installed]
    if missing:
        provided = provided_names(run(["dpkg-query", "-W", "-f",
                                       "${db:Status-Status}\t${Provides}\n"]).stdout)
        missing = [p for p in missing if p not in provided]
    return missing


def provided_names(listing: str) -> set[str]:
    """The names installed packages provide, from ``dpkg-query -W -f
    '${db:Status-Status}\\t${Provides}\\n'`` (e.g. ``installed\tdnsutils (= 1:9.20), foo``)."""
    names: set[str] = set()
    for line in listing.splitlines():
        status, _, provides = line.partition("\t")
        if status.strip() != "installed":
            continue
        for item in provides.split(","):
            name = item.strip().split(" ")[0].split(":")[0]
            if name:
                names.add(name)
    return names


APT_LISTS = Path("/var/lib/apt/lists")
# apt waits this long for another apt or dpkg (a VM's unattended-upgrades, apt-daily) to let go
# of its lock, instead of failing at once
APT_LOCK_TIMEOUT = 300
APT = ["apt-get", "-q", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT}"]


def lists_age(lists: Path | None = None, now: float | None = None) -> float | None:
    """Seconds since apt's package lists (APT_LISTS) were last refreshed; None when there are
    none (a fresh cloud image's empty cache)."""
    lists = APT_LISTS if lists is None else lists
    try:
        stamps = [p.stat().st_mtime for p in lists.iterdir()
                  if p.is_file() and p.name.endswith("_Packages")]
    except OSError:
        return None
    if not stamps:
        return None
    return (time.time() if now is None else now) - max(stamps)


def install_packages(report: Report, packages: Sequence[str], update_cache: bool,
                     cache_valid_time: int = 3600) -> None:
    """Install what is missing. The package lists are refreshed first when asked to, when there
    are none, or when they are older than ``cache_valid_time`` seconds (as Ansible's apt module
    does); and once more, then the install retried, when apt cannot find a package or a file
    with lists that were not refreshed in this run (a mirror that moved on)."""
    missing = missing_packages(packages)
    if not missing:
        return
    report.note(f"installed {' '.join(missing)}")
    if report.check_mode:
        return
    age = lists_age()
    refreshed = update_cache or age is None or age > cache_valid_time
    if refreshed:
        must([*APT, "update"], "refreshing the package lists", timeout=600)
    install = [*APT, "install", "-y", "--no-install-recommends", *missing]
    proc = run(install, timeout=1800)
    if proc.returncode != 0 and not refreshed and _stale_lists(proc.stdout + proc.stderr):
        must([*APT, "update"], "refreshing the stale package lists", timeout=600)
        proc = run(install, timeout=1800)
    if proc.returncode != 0:
        raise SyncError(f"installing {' '.join(missing)}: '{' '.join(install)}' exited "
                        f"{proc.returncode}: {(proc.stderr or proc.stdout).strip()[-2000:]}")


def _stale_lists(output: str) -> bool:
    """apt's words for lists that no longer match the mirror."""
    return any(s in output for s in ("Unable to locate package", "404", "Unable to fetch",
                                     "has no installation candidate"))


# -- systemd ----------------------------------------------------------------------------------
def unit_states(units: Sequence[str]) -> dict[str, dict[str, str]]:
    """``systemctl show`` of every unit in one call: {unit: {ActiveState, UnitFileState, ...}}."""
    if not units:
        return {}
    out = must(["systemctl", "show", "--no-pager",
                "-p", "Id,LoadState,ActiveState,SubState,UnitFileState",
                "-p", "ExecMainStartTimestampMonotonic", "--", *units],
               "reading the units' states")
    states: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in [*out.splitlines(), ""]:
        if not line.strip():
            if current:
                states.append(current)
                current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = value
    if len(states) != len(units):
        raise SyncError(f"systemctl show answered {len(states)} units for {len(units)} asked")
    # systemctl answers in the order asked; Id may differ (an alias), so pair by position
    return dict(zip(units, states, strict=True))


def daemon_reload(report: Report) -> None:
    report.note("reloaded systemd")
    if not report.check_mode:
        must(["systemctl", "daemon-reload"], "reloading systemd")


def systemctl(report: Report, verb: str, units: Sequence[str], why: str = "") -> None:
    """One ``systemctl VERB`` over several units (noted, and skipped in check mode)."""
    if not units:
        return
    report.note(f"{verb} {' '.join(units)}{f' ({why})' if why else ''}")
    if not report.check_mode:
        must(["systemctl", verb, "--", *units], f"systemctl {verb}")


def is_active(state: dict[str, str]) -> bool:
    return state.get("ActiveState") in ("active", "activating", "reloading")


def is_enabled(state: dict[str, str]) -> bool:
    return state.get("UnitFileState") in ("enabled", "enabled-runtime", "static", "alias",
                                          "indirect", "generated")


# -- node tools -------------------------------------------------------------------------------
def run_tool(report: Report, argv: Sequence[str], check_arg: str = "--check") -> dict[str, Any]:
    """Run one of podnet's node tools: ``--check`` in check mode, its last line is JSON with
    ``changed``. A tool that is not installed yet (a first dry run) would run: noted as a
    change."""
    if not Path(argv[0]).exists():
        if report.check_mode:
            report.note(f"would run {' '.join(argv)} (not installed yet)")
            return {"changed": True}
        raise SyncError(f"{argv[0]} is not installed")
    full = [*argv, check_arg] if report.check_mode and check_arg else list(argv)
    proc = run(full, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0:
        raise SyncError(f"'{' '.join(full)}' exited {proc.returncode}: "
                        f"{(proc.stderr or proc.stdout).strip()[-3000:]}")
    try:
        result = json.loads(lines[-1])
        changed = bool(result["changed"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise SyncError(f"'{' '.join(full)}' printed no JSON line with 'changed': "
                        f"{proc.stdout.strip()[-500:]}") from None
    if changed:
        report.note(f"{Path(argv[0]).name} {' '.join(argv[1:2])}: changed")
    return dict(result)
