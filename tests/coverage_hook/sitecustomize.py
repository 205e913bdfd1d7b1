"""Measure the node tools the unit tests start through their shebang (#!/usr/bin/python3).

That interpreter is the host's, not the venv's: coverage's startup hook (a .pth file in the
venv) never runs in it, so podnet-cni, podnet-iptables and the others ran unmeasured.
`make unit` puts this folder on PYTHONPATH and names the venv's site-packages in
PODNET_COVERAGE_SITE; Python imports this module at startup, and while coverage measures the
test run (it sets COVERAGE_PROCESS_CONFIG for the processes it starts) this imports coverage
from the venv and starts measuring. The venv leaves sys.path again at once, so a tool still
sees only what a node has: an import a node lacks fails here as it would there.
"""

from __future__ import annotations

import os
import sys


def _start() -> None:
    site = os.environ.get("PODNET_COVERAGE_SITE")
    if not site or not os.environ.get("COVERAGE_PROCESS_CONFIG"):
        return
    try:
        import coverage
    except ImportError:  # the host's Python, as on a node
        sys.path.append(site)
        try:
            import coverage
        finally:
            sys.path.remove(site)
    # a second start (the venv's Python, whose .pth file started it) is a no-op
    coverage.process_startup(slug="sitecustomize")


_start()
