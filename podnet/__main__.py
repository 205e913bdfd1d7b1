"""Command line.

``python -m podnet plan -i inventory/lab [--json]``: the cluster plan, or the validation errors
(exit 1). ``python -m podnet lab residue --lab NAME --state-dir DIR``: what a lab left behind.
``python -m podnet lab poweroff [-i INV] HOST [--hard]``: power a lab host off, keeping its disk
(``make lab-up`` boots it again; ``make node-off HOST=node3``).
``python -m podnet shell [-i INV] HOST [-- CMD...]``: a shell (or a command) on a host, over
Ansible's own ssh path. ``python -m podnet exec [-i INV] NS/POD -- CMD...``: a command in a
pod's network namespace on its node; exits with the command's status (podnet/access.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from podnet import access, lab
from podnet.inventory import InventoryError


def _plan(args: argparse.Namespace) -> int:
    from podnet import cluster, dns, report
    from podnet.problems import InvalidInput, Problem

    try:
        plan = cluster.load(args.inventory)
    except (InventoryError, FileNotFoundError) as exc:
        # no inventory to validate (missing, unreadable, or without hosts): one line, not the
        # problem list, because nothing past the inventory could be checked
        fix = exc.fix if isinstance(exc, InventoryError) else \
            "add the hosts (see inventory/example-vms/hosts.yml for the groups podnet uses)"
        message = exc.message if isinstance(exc, InventoryError) else \
            str(exc).removeprefix(f"inventory {args.inventory} ")
        problem = Problem(str(args.inventory), "inventory", "", message, fix)
        if args.json:
            print(json.dumps({"errors": [problem.as_dict()]}, indent=2))
        else:
            print(f"podnet plan: {problem}", file=sys.stderr)
        return 1
    except InvalidInput as exc:
        if args.json:
            print(json.dumps({"errors": [p.as_dict() for p in exc.problems]}, indent=2))
        else:
            print(f"{len(exc.problems)} problem(s) in {args.inventory}:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(dns.printable(plan), indent=2))
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


def _poweroff(args: argparse.Namespace) -> int:
    try:
        inventory = access.load_inventory(args.inventory)
        if args.host not in inventory.group("lab"):
            raise lab.LabError(f"{args.host} is not a host of group lab in {args.inventory}")
        where = inventory.render(args.host, ("lab_name", "lab_state_dir"))
        done = lab.power_off(str(where["lab_name"]), Path(str(where["lab_state_dir"])),
                             args.host, hard=args.hard)
    except (lab.LabError, InventoryError, KeyError) as exc:
        print(f"podnet lab poweroff: {exc}", file=sys.stderr)
        return 2
    how = "pulled the plug of" if args.hard else "powered off"
    print(f"lab {where['lab_name']}: {how} {args.host}" if done
          else f"lab {where['lab_name']}: {args.host} was not running")
    return 0


def _shell(args: argparse.Namespace) -> int:
    try:
        host = access.host(access.load_inventory(args.inventory), args.host)
        argv = access.ssh_argv(host, args.cmd, tty=bool(args.cmd) and access.interactive())
    except (access.AccessError, InventoryError) as exc:
        print(f"podnet shell: {exc}", file=sys.stderr)
        return 2
    return access.replace_process(argv)


def _exec(args: argparse.Namespace) -> int:
    from podnet import cluster
    from podnet.problems import InvalidInput

    try:
        pod = access.parse_pod(args.pod)
        access.pod_command(pod, args.cmd)  # no command: said before the inventory is read
        inventory = access.load_inventory(args.inventory)
        try:
            plan = cluster.load(args.inventory)
        except InvalidInput as exc:
            raise access.AccessError(f"{len(exc.problems)} problem(s) in {args.inventory}; "
                                     f"python -m podnet plan -i {args.inventory} lists them"
                                     ) from exc
        node = access.pod_node({p.key: p.node for p in plan.pods}, pod)
        command = access.pod_command(pod, args.cmd, plan.pod(pod.key).host_network)
        # ip netns exec needs root: through sudo -n when the login user is not root
        argv = access.ssh_argv(access.host(inventory, node), command,
                               tty=access.interactive(), as_root=True)
    except (access.AccessError, InventoryError) as exc:
        print(f"podnet exec: {exc}", file=sys.stderr)
        return 2
    return access.replace_process(argv)


def _conformance(args: argparse.Namespace) -> int:
    from podnet import conformance

    results = conformance.results_from_junit(Path(args.junit)) if args.junit else None
    print(conformance.markdown(results), end="")
    if results is None:
        return 0
    bad = [e.key for e in conformance.ENTRIES + conformance.EXTRA
           if e.mirrored and conformance.status(e.key, results) != "passed"]
    if bad:
        print(f"\nnot passed: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    # everything after the first "--" is the command for shell/exec, options and all
    # (kubectl exec's rule), so argparse never reads a flag meant for it
    words = list(sys.argv[1:] if argv is None else argv)
    tail: list[str] | None = None
    if "--" in words:
        cut = words.index("--")
        words, tail = words[:cut], words[cut + 1:]
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
    off = lab_sub.add_parser(
        "poweroff", help="power a lab host off, keeping its disk (make lab-up boots it again)")
    off.add_argument("-i", "--inventory", default=access.DEFAULT_INVENTORY, help="inventory "
                     "(default %(default)s; PODNET_LAB picks the lab)")
    off.add_argument("--hard", action="store_true",
                     help="pull the plug: kill it at once, nothing in it shuts down")
    off.add_argument("host", help="the host, e.g. node3")
    off.set_defaults(func=_poweroff)

    conf = sub.add_parser("conformance", help="the [sig-network] conformance table "
                          "(docs/conformance.md), with a run's results")
    conf.add_argument("--junit", help="the JUnit XML of a run of verify/test_conformance.py: "
                      "each entry's status from it; exit 1 when a mirrored one did not pass")
    conf.set_defaults(func=_conformance)

    shell = sub.add_parser("shell", help="a shell on a host, reached as Ansible reaches it")
    shell.add_argument("-i", "--inventory", default=access.DEFAULT_INVENTORY, help="inventory "
                       "(default %(default)s; PODNET_LAB picks the lab)")
    shell.add_argument("host", nargs="?", help="an inventory host (none: list them)")
    shell.add_argument("cmd", nargs="*", metavar="-- CMD",
                       help="run CMD (everything after --) instead of a login shell")
    shell.set_defaults(func=_shell)

    exe = sub.add_parser("exec", help="run a command in a pod's network namespace on its node")
    exe.add_argument("-i", "--inventory", default=access.DEFAULT_INVENTORY, help="inventory "
                     "(default %(default)s; PODNET_LAB picks the lab)")
    exe.add_argument("pod", metavar="NS/POD", help="the pod, e.g. demo/db-0")
    exe.add_argument("cmd", nargs="*", metavar="-- CMD",
                     help="what to run: everything after -- goes to the pod untouched")
    exe.set_defaults(func=_exec)

    args = parser.parse_args(words)
    if tail is not None:
        if not hasattr(args, "cmd"):
            parser.error("'-- CMD' follows shell or exec only")
        args.cmd = [*args.cmd, *tail]
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
