"""Command line: ``python -m podnet lab residue --lab NAME --state-dir DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from podnet import lab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m podnet")
    sub = parser.add_subparsers(dest="command", required=True)
    lab_cmd = sub.add_parser("lab", help="the local lab")
    lab_sub = lab_cmd.add_subparsers(dest="action", required=True)
    res = lab_sub.add_parser(
        "residue", help="list everything of a lab on this machine; exit 1 if any"
    )
    res.add_argument("--lab", required=True, help="lab name")
    res.add_argument("--state-dir", required=True, type=Path, help="lab state directory")
    res.add_argument("--hosts", default="", help="comma-separated inventory hosts of the lab")
    args = parser.parse_args(argv)

    hosts = [h for h in args.hosts.split(",") if h]
    found = lab.residue(args.lab, args.state_dir, hosts)
    for line in found:
        print(line)
    if not found:
        print(f"lab {args.lab}: nothing left on this machine")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
