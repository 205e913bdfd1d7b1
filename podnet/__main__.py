"""Command line.

``python -m podnet plan -i inventory/lab [--json]``: the cluster plan, or the validation errors
(exit 1). ``python -m podnet lab residue --lab NAME --state-dir DIR``: what a lab left behind.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from podnet import lab


def _plan(args: argparse.Namespace) -> int:
    from podnet import cluster, report
    from podnet.problems import InvalidInput

    try:
        plan = cluster.load(args.inventory)
    except InvalidInput as exc:
        if args.json:
            print(json.dumps({"errors": [p.as_dict() for p in exc.problems]}, indent=2))
        else:
            print(f"{len(exc.problems)} problem(s) in {args.inventory}:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(plan.as_dict(), indent=2))
    else:
        sys.stdout.write(report.render(plan))
    return 0


def _residue(args: argparse.Namespace) -> int:
    hosts = [h for h in args.hosts.split(",") if h]
    found = lab.residue(args.lab, args.state_dir, hosts)
    for line in found:
        print(line)
    if not found:
        print(f"lab {args.lab}: nothing left on this machine")
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m podnet")
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="validate the inventory and manifests, print the plan")
    plan.add_argument("-i", "--inventory", required=True, help="inventory directory or file")
    plan.add_argument("--json", action="store_true", help="the plan as JSON, for tools")
    plan.set_defaults(func=_plan)

    lab_cmd = sub.add_parser("lab", help="the local lab")
    lab_sub = lab_cmd.add_subparsers(dest="action", required=True)
    res = lab_sub.add_parser(
        "residue", help="list everything of a lab on this machine; exit 1 if any"
    )
    res.add_argument("--lab", required=True, help="lab name")
    res.add_argument("--state-dir", required=True, type=Path, help="lab state directory")
    res.add_argument("--hosts", default="", help="comma-separated inventory hosts of the lab")
    res.set_defaults(func=_residue)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
