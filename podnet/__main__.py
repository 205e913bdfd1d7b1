"""Command line.

``python -m podnet plan -i inventory/lab [--json]``: the cluster plan, or the validation errors
(exit 1). ``python -m podnet lab residue --lab NAME --state-dir DIR``: what a lab left behind.
``python -m podnet lab poweroff [-i INV] HOST [--hard]``: power a lab host off, keeping its disk
(``make lab-up`` boots it again; ``make node-off HOST=node3``).
``python -m podnet shell [-i INV] HOST [-- CMD...]``: a shell (or a command) on a host, over
Ansible's own ssh path. ``python -m podnet exec [-i INV] NS/POD -- CMD...``: a command in a
pod's network namespace on its node; exits with the command's status (podnet/access.py).
``python -m podnet trace [-i INV] --from NS/POD --to NAME[:PORT]``: one packet's path, the rules,
routes and NAT it meets on the hosts (podnet/trace.py); exit 1 when nothing answered it.
``python -m podnet report [--junit FILE] [--check]``: reports/verify.html rendered again from a
run's files; ``--check`` looks at it in headless Chromium. ``python -m podnet bundle``: every
host's networking state and podnet journals in reports/bundle/ (podnet/bundle.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from podnet import access, lab
from podnet.inventory import Host, InventoryError
from podnet.trace import Runner as trace_runner


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


def ssh_runner(inventory_path: str) -> trace_runner:
    """Run a shell script as root on an inventory host, over Ansible's own ssh path."""
    import subprocess

    inventory = access.load_inventory(inventory_path)
    # every host resolved here, in one thread: Ansible's plugin loader is not thread-safe, and
    # the runner is called from several at once
    hosts: dict[str, Host] = {name: access.host(inventory, name)
                              for name in inventory.group("all")}

    def run(name: str, script: str) -> str:
        argv = access.ssh_argv(hosts[name], ["sh", "-c", script], as_root=True)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode == 255:
            raise access.AccessError(f"ssh to {name} failed: {done.stderr.strip()}")
        return done.stdout

    return run


def _trace(args: argparse.Namespace) -> int:
    from podnet import cluster, trace
    from podnet.problems import InvalidInput

    try:
        plan = cluster.load(args.inventory)
        result = trace.trace(plan, ssh_runner(args.inventory), args.source, args.to)
    except InvalidInput as exc:
        print(f"podnet trace: {len(exc.problems)} problem(s) in {args.inventory}; python -m "
              f"podnet plan -i {args.inventory} lists them", file=sys.stderr)
        return 2
    except (trace.TraceError, access.AccessError, InventoryError) as exc:
        print(f"podnet trace: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.text())
    return 0 if result.answered else 1


def _report(args: argparse.Namespace) -> int:
    from podnet import browser, principles, verifyreport

    junit = Path(args.junit)
    if not junit.exists():
        print(f"podnet report: {junit} does not exist: run make verify first (it writes "
              f"reports/verify.xml), or give --junit FILE", file=sys.stderr)
        return 2
    page = verifyreport.render(junit)
    rows = verifyreport.summary(verifyreport.read_junit(junit))
    print("\n".join(verifyreport.table(rows)))
    print(f"report: {page}")
    if not args.check:
        return 0
    shot = Path(args.screenshot) if args.screenshot else page.with_suffix(".png")
    try:
        seen = browser.look(page.resolve(), shot)
    except (RuntimeError, TimeoutError, ValueError) as exc:
        print(f"podnet report --check: {exc}", file=sys.stderr)
        return 1
    problems = browser.problems(seen, [p.name for p in principles.TABLE])
    for problem in problems:
        print(f"podnet report --check: {problem}", file=sys.stderr)
    if not problems:
        print(f"checked in Chromium: no console error, nothing fetched, the picture drawn "
              f"({seen.picture_nonblank:.0%} of its box), all {len(seen.principles)} principle "
              f"rows; screenshot {shot}")
    return 1 if problems else 0


def _bundle(args: argparse.Namespace) -> int:
    from podnet import bundle, cluster

    try:
        inventory = access.load_inventory(args.inventory)
        paths = cluster.load(args.inventory).paths
        where = bundle.collect(ssh_runner(args.inventory), inventory.group("all"), paths,
                               Path(args.dest))
    except (access.AccessError, InventoryError) as exc:
        print(f"podnet bundle: {exc}", file=sys.stderr)
        return 2
    print(f"bundle: {where}/<host>/")
    return 0


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

    tr = sub.add_parser("trace", help="send one packet and show the rules, routes and NAT "
                        "it meets on the hosts")
    tr.add_argument("-i", "--inventory", default=access.DEFAULT_INVENTORY, help="inventory "
                    "(default %(default)s; PODNET_LAB picks the lab)")
    tr.add_argument("--from", dest="source", required=True, metavar="NS/POD",
                    help="the pod it leaves (or a host of the inventory, like client)")
    tr.add_argument("--to", required=True, metavar="NAME[:PORT]",
                    help="a Service (ns/name or name.ns; PORT: its number or name), a pod "
                    "ns/name:PORT, a host:PORT or an address:PORT")
    tr.add_argument("--json", action="store_true", help="the trace as JSON")
    tr.set_defaults(func=_trace)

    rep = sub.add_parser("report", help="render reports/verify.html again from a run's JUnit "
                         "XML and state file; --check opens it in headless Chromium")
    rep.add_argument("--junit", default="reports/verify.xml",
                     help="the run's JUnit XML (default %(default)s)")
    rep.add_argument("--check", action="store_true", help="open it in headless Chromium: exit 1 "
                     "on a console error, a fetch, a blank picture or a principle row missing")
    rep.add_argument("--screenshot", help="where --check saves its screenshot (default: the "
                     "report's name with .png)")
    rep.set_defaults(func=_report)

    bun = sub.add_parser("bundle", help="each host's rules, routes, addresses, links, "
                         "conntrack, CNI cache and podnet journals, in a folder")
    bun.add_argument("-i", "--inventory", default=access.DEFAULT_INVENTORY, help="inventory "
                     "(default %(default)s; PODNET_LAB picks the lab)")
    bun.add_argument("--dest", default="reports/bundle", help="folder (default %(default)s)")
    bun.set_defaults(func=_bundle)

    args = parser.parse_args(words)
    if tail is not None:
        if not hasattr(args, "cmd"):
            parser.error("'-- CMD' follows shell or exec only")
        args.cmd = [*args.cmd, *tail]
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
