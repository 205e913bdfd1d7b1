"""A failure bundle, like ``kind export logs`` or cilium's sysdump: what each host had when a
verify run failed, one folder per host in reports/ (``<run>-bundle/<host>/<what>.txt``), so the
failure can be read after the lab is gone.

verify/conftest.py writes it at the end of a run with a failed test and names it in the terminal
summary and in reports/verify.html; ``python -m podnet bundle`` takes one by hand.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from podnet.paths import NodePaths as Paths

SECTION = "=====podnet-bundle {}====="


def commands(paths: Paths) -> dict[str, str]:
    """The file of the bundle -> the shell command (run as root) that fills it."""
    cni = " ".join(shlex.quote(d) for d in (paths.cni_cache_dir, paths.cni_ipam_dir,
                                            paths.pod_state_dir))
    return {
        "iptables-save": "iptables-save -c",
        "routes": "ip -d route show table all; echo; ip rule show",
        "addresses": "ip -d address show",
        "links": "ip -d link show",
        "neighbours": "ip neighbour show",
        "conntrack": "conntrack -L 2>&1",
        "cni-cache": f"for d in {cni}; do [ -d \"$d\" ] || continue; find \"$d\" -type f | "
                     "sort | while read -r f; do echo \"--- $f\"; cat \"$f\"; echo; done; done",
        "units": "systemctl list-units --all --no-pager 'podnet*'",
        "journal": "journalctl --no-pager -n 4000 -u 'podnet*'",
    }


def script(paths: Paths) -> str:
    """One shell script printing every file's content after its section line."""
    return "; ".join(f"echo {shlex.quote(SECTION.format(name))}; {{ {command}; }} 2>&1"
                     for name, command in commands(paths).items())


def split(text: str, names: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    current = None
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        match = next((n for n in names if stripped == SECTION.format(n)), None)
        if match is not None:
            current = match
            out[current] = ""
        elif current is not None:
            out[current] += line
    return out


def collect(runner: Callable[[str, str], str], hosts: Sequence[str], paths: Paths,
            dest: Path) -> Path:
    """Write ``dest/<host>/<what>.txt`` for every host (a host that cannot be reached gets an
    ``unreachable.txt`` saying why); an older bundle there is replaced."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    names = list(commands(paths))
    text = script(paths)

    def one(host: str) -> None:
        folder = dest / host
        folder.mkdir()
        try:
            files = split(runner(host, text), names)
        except Exception as exc:  # a dead host is what a bundle must record
            (folder / "unreachable.txt").write_text(f"{type(exc).__name__}: {exc}\n")
            return
        for name, content in files.items():
            (folder / f"{name}.txt").write_text(content)

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
        list(pool.map(one, hosts))
    return dest
