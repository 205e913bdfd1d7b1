"""Loading podnet's node-side Python (Ansible modules and their module_utils) in unit tests, under
the names Ansible gives them on a node."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# what `from ansible.module_utils.podnet_sync import ...` finds on a node
utils = load("ansible.module_utils.podnet_sync", ROOT / "plugins/module_utils/podnet_sync.py")
