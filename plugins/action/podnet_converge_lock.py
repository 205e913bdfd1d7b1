"""Action ``podnet_converge_lock``: one converge of a cluster at a time (podnet/convergelock.py).

Runs on the controller. Starts the process that holds ``<podnet_state_dir>/converge.lock`` for
as long as this ansible-playbook run lives, or fails, naming the run that holds it, when another
run of the same cluster is under way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from ansible.plugins.action import ActionBase

from podnet import cluster, convergelock

DOCUMENTATION = r"""
module: podnet_converge_lock
short_description: Hold the cluster's converge lock for the whole run, or stop when it is taken
description:
  - Takes an exclusive lock on C(<podnet_state_dir>/converge.lock) on the controller, held by a
    small process until this ansible-playbook run ends (the kernel drops it if that process
    dies), so two runs on one cluster never interleave.
  - Fails, naming the other run (its command, PID and start time), when the lock is taken.
options: {}
"""


def playbook_pid() -> int:
    """The ansible-playbook process: the worker running this task is its child."""
    return os.getppid()


class ActionModule(ActionBase):
    _supports_check_mode = True  # a check run reads hosts another run is changing: it waits too

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        settings: dict[str, Any] = {k: self._templar.template(task_vars[k])
                    for k in ("podnet_state_dir", "podnet_cluster_name") if k in task_vars}
        path = cluster.state_dir(settings) / convergelock.LOCK_FILE
        holder = subprocess.Popen(
            [sys.executable, "-m", "podnet.convergelock", str(path), str(playbook_pid())],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, text=True)
        assert holder.stdout is not None and holder.stderr is not None
        line = holder.stdout.readline().strip()
        holder.stdout.close()
        result["path"] = str(path)
        if line == "held":
            holder.stderr.close()
            result.update(changed=False, msg=f"this run holds {path}")
            return result
        error = holder.stderr.read().strip()
        holder.wait()
        result["failed"] = True
        if line.startswith("busy"):
            result["msg"] = convergelock.holder_message(line[len("busy"):].strip(), str(path))
        else:
            result["msg"] = f"could not take the converge lock {path}: {error or line}"
        return result
