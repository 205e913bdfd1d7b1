"""Loading podnet's node-side Python (Ansible modules and their module_utils) in unit tests, under
the names Ansible gives them on a node, and running podnet-iptables in a throwaway namespace."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
IPTABLES_TOOL = ROOT / "roles" / "pod_network" / "files" / "podnet-iptables"


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# what `from ansible.module_utils.podnet_sync import ...` finds on a node
utils = load("ansible.module_utils.podnet_sync", ROOT / "plugins/module_utils/podnet_sync.py")


def sandbox(tmp: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in bash in a new network and mount namespace (needs root, unshare and
    iptables), with $TOOL the podnet-iptables under test, $DIR ``tmp``/rules, and podnet's state
    folders on tmpfs, so nothing reaches the host's rules or files."""
    env = {**os.environ, "TOOL": str(IPTABLES_TOOL), "DIR": str(tmp / "rules")}
    body = ("set -u\n"
            "for d in /var/lib/podnet /run/podnet; do mkdir -p $d && "
            "mount -t tmpfs podnet-test $d; done\n" + script)
    return subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--fork",
                           "bash", "-c", body], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
