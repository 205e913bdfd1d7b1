"""Check that the collections requirements.yml asks for are installed in versions it allows.

Galaxy is not reachable from the machines podnet runs on; the `ansible` package from PyPI
bundles the collections. This check makes a mismatch loud instead of a runtime surprise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from ansible.galaxy.dependency_resolution.versioning import meets_requirements


def main(path: str) -> int:
    wanted = yaml.safe_load(Path(path).read_text())["collections"]
    venv_bin = Path(sys.executable).parent
    out = subprocess.run(
        [str(venv_bin / "ansible-galaxy"), "collection", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed: dict[str, str] = {}
    for collections in json.loads(out).values():
        for name, info in collections.items():
            installed.setdefault(name, info["version"])
    bad = 0
    for item in wanted:
        name, spec = item["name"], str(item.get("version", "*"))
        have = installed.get(name)
        if have is None:
            print(f"collections: {name} is not installed; run 'make setup'", file=sys.stderr)
            bad += 1
        elif not meets_requirements(have, spec):
            print(f"collections: {name} {have} does not satisfy {spec} ({path})", file=sys.stderr)
            bad += 1
        else:
            print(f"collections: {name} {have} satisfies {spec}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements.yml"))
