"""One converge at a time: a lock on the cluster's state folder, held for a whole run.

Two ansible-playbook runs on one cluster would interleave their changes on the hosts (one
removing the pods, rules or records the other just wrote) and both would write the allocation
record. The first task of site.yml and reset.yml (plugins/action/podnet_converge_lock.py)
starts this module as a small process that takes an exclusive flock on
``<podnet_state_dir>/converge.lock`` and holds it until the ansible-playbook process it was
started for ends; a run that finds the lock taken stops before touching any host, naming the
run that holds it. The kernel drops a flock when its holder dies, so no lock outlives its run.

``python -m podnet.convergelock LOCKFILE PID`` prints ``held`` and keeps the lock until PID
ends, or prints ``busy`` and the holder's description (JSON) and exits 1.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import sys
import time
from pathlib import Path
from typing import Any

LOCK_FILE = "converge.lock"


def describe(pid: int) -> dict[str, Any]:
    """What the lock file says about its holder: the run's PID, command and start time."""
    try:
        argv = [a.decode(errors="replace")
                for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        argv = []
    if argv and Path(argv[0]).name.startswith("python"):
        argv = argv[1:]  # the interpreter of a script (ansible-playbook) says nothing
    command = " ".join([Path(argv[0]).name, *argv[1:]]) if argv else "?"
    return {"pid": pid, "command": command, "started": time.time()}


def holder_message(text: str, path: str) -> str:
    """The refusal a second run shows, from the lock file's description of the first."""
    try:
        info = json.loads(text)
        when = time.strftime("%H:%M:%S", time.localtime(float(info["started"])))
        held = f"{info['command']} (PID {info['pid']}, started at {when}, " \
               f"{time.time() - float(info['started']):.0f} s ago)"
    except (ValueError, KeyError, TypeError):
        held = "another run"
    return (f"another converge of this cluster is running: {held} holds {path}. Two runs "
            "would interleave their changes on the hosts: wait for it to end, or stop it, "
            "then run again")


def wait_for_exit(pid: int) -> None:
    """Return when process ``pid`` has ended (at once when there is no such process)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def hold(path: Path, pid: int) -> int:
    if pid <= 1:  # the run has already gone (its worker was handed to init): nothing to hold
        print(f"the run that asked (PID {pid}) is gone", file=sys.stderr)
        return 2
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        print(f"cannot open {path}: {exc.strerror}; run as a user who may write "
              f"{path.parent} (the cluster's podnet_state_dir), or set podnet_state_dir",
              file=sys.stderr)
        return 2
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("busy " + os.read(fd, 65536).decode(errors="replace").strip(), flush=True)
        return 1
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(describe(pid)) + "\n").encode(), 0)
    print("held", flush=True)
    os.close(1)  # the run reads "held", then its end of the pipe closes
    wait_for_exit(pid)
    return 0  # exiting drops the lock


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m podnet.convergelock LOCKFILE PID", file=sys.stderr)
        return 2
    return hold(Path(argv[0]), int(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
