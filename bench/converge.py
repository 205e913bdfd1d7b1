"""Converge benchmark (issue 11): what a converge of playbooks/site.yml costs, and how the cost
grows with the cluster.

For each manifest set (the demo's `inventory/lab/manifests/`, and `bench/manifests-large/`:
40 pods and 30 Services with the DNS add-on) on a lab of its own (PODNET_LAB, default
`podnet-bench`, so a demo lab is never touched):

  lab-down, lab-up (a freshly booted lab), then, each timed as one ansible-playbook run:
  floor       bench/floor.yml, one ping per host (median of 3), what any playbook costs here
  fresh       site.yml on the fresh lab
  nochange    site.yml again, nothing to change
  service     one Service added over an existing Deployment's pods (demo/web)
  scale       one Deployment scaled by one replica (demo/web)
  move        one pod moved to another node (demo/db-0 pinned with nodeName)

Each edit is made on a copy of the manifests (PODNET_MANIFESTS_DIR) and converged from the
state the previous scenario left. Prints wall seconds, the ratio to the floor, changed tasks
per host, the controller's CPU seconds (ansible-playbook, its forks and ssh) and the load
average before and after each run (this machine has few cores and other labs may be busy);
then the slowest tasks and the time per role of each converge (ansible.posix.profile_tasks).
The lab is torn down at the end, and what lab-down left is checked.

Run alone: `.venv/bin/python bench/converge.py [--set default|large|both] [--lab NAME]
[--root CHECKOUT]`; `--root` runs another checkout's playbooks, roles, inventory and
ansible.cfg (with its own `podnet` package first on PYTHONPATH), to measure before and after.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FLOOR_PLAYBOOK = HERE / "floor.yml"
LARGE_MANIFESTS = HERE / "manifests-large"
STEPS = ("fresh", "nochange", "service", "scale", "move")
TITLES = {
    "floor": "floor (one task)",
    "fresh": "fresh converge",
    "nochange": "no change",
    "service": "one Service added",
    "scale": "one Deployment scaled",
    "move": "one pod moved",
}
# What the edits touch: objects both manifest sets have.
DEPLOYMENT = ("demo", "web")
ADDED_SERVICE = "web-bench"
MOVED_POD = ("demo", "db-0")
FLOOR_RUNS = 3
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)")
# profile_tasks' summary line: "<task name> ------------ 12.34s"
TASK_RE = re.compile(r"^(?P<name>.*?) -* ?(?P<seconds>\d+\.\d+)s$")


@dataclass
class Run:
    """One timed ansible-playbook run."""

    set: str
    step: str
    seconds: float
    rc: int
    cpu: float  # controller CPU seconds: ansible-playbook, its workers and ssh
    load_before: str
    load_after: str
    log: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    tasks: list[tuple[str, float]] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not any(
            r["failed"] or r["unreachable"] for r in self.recap.values())


@dataclass
class Context:
    root: Path
    lab: str
    bin: Path
    work: Path
    timeout: float
    callbacks: str
    hosts: list[str] = field(default_factory=list)  # the lab's hosts, from the plan
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    @property
    def inventory(self) -> Path:
        return self.root / "inventory" / "lab"

    def env(self, manifests: Path | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "ANSIBLE_CONFIG": str(self.root / "ansible.cfg"),
            "PODNET_LAB": self.lab,
            "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}",
            # the checkout's plugins import its own podnet package, not the venv's editable one
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(self.root), env.get("PYTHONPATH", "")) if p),
            # ansible names ssh's ControlPath by host, port and user only: every lab has
            # root@192.168.56.11, so without a folder of its own this run could ride on another
            # lab's open master connection and run its tasks on that lab's hosts
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.work / "cp"),
            "ANSIBLE_CALLBACKS_ENABLED": self.callbacks,
            "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all",
            "ANSIBLE_NOCOLOR": "1",
        })
        env.pop("ANSIBLE_FORCE_COLOR", None)
        if manifests is None:
            env.pop("PODNET_MANIFESTS_DIR", None)
        else:
            env["PODNET_MANIFESTS_DIR"] = str(manifests)
        return env


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def callbacks_for(root: Path) -> str:
    """profile_tasks added to whatever callbacks the checkout's ansible.cfg enables."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(root / "ansible.cfg")
    names = [n.strip() for n in cfg.get("defaults", "callbacks_enabled", fallback="").split(",")
             if n.strip()]
    names += [n.strip() for n in os.environ.get("ANSIBLE_CALLBACKS_ENABLED", "").split(",")
              if n.strip()]
    if "ansible.posix.profile_tasks" not in names:
        names.append("ansible.posix.profile_tasks")
    return ",".join(dict.fromkeys(names))


def run_playbook(ctx: Context, playbook: Path, name: str,
                 manifests: Path | None) -> tuple[float, int, float, str, str, Path]:
    """Run one playbook with its output in a log; wall seconds, rc, CPU, loads, log path."""
    log = ctx.logs / f"{name}.log"
    argv = [str(ctx.bin / "ansible-playbook"), "-i", str(ctx.inventory), str(playbook)]
    before = loadavg()
    cpu = children_cpu()
    start = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        # a session of its own: on a timeout or ^C the whole run (workers, ssh) is ended
        proc = subprocess.Popen(argv, cwd=ctx.root, env=ctx.env(manifests), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=ctx.timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            out.write(f"\nbench: stopped after {ctx.timeout:.0f} s\n")
            rc = -1
        except BaseException:
            stop(proc)
            raise
    seconds = time.monotonic() - start
    return seconds, rc, children_cpu() - cpu, before, loadavg(), log


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def parse_log(text: str) -> tuple[dict[str, dict[str, int]], list[tuple[str, float]]]:
    """PLAY RECAP per host, and profile_tasks' per-task seconds."""
    recap: dict[str, dict[str, int]] = {}
    tasks: list[tuple[str, float]] = []
    section = ""
    for line in text.splitlines():
        if line.startswith("PLAY RECAP"):
            section = "recap"
            continue
        if line.startswith("TASKS RECAP"):
            section = "tasks"
            continue
        if section == "recap":
            match = RECAP_RE.match(line)
            if match:
                recap[match["host"]] = {k: int(v) for k, v in match.groupdict().items()
                                        if k != "host"}
        elif section == "tasks" and not line.startswith("="):
            match = TASK_RE.match(line)
            if match:
                tasks.append((match["name"], float(match["seconds"])))
    return recap, tasks


def timed(ctx: Context, set_name: str, step: str, playbook: Path,
          manifests: Path | None, note: str = "") -> Run:
    label = f"{set_name}-{step}"
    print(f"bench: {set_name}: {TITLES.get(step, step)} ...", flush=True)
    seconds, rc, cpu, before, after, log = run_playbook(ctx, playbook, label, manifests)
    recap, tasks = parse_log(log.read_text(encoding="utf-8", errors="replace"))
    run = Run(set_name, step, seconds, rc, cpu, before, after, str(log), recap, tasks, note)
    state = "ok" if run.ok else f"FAILED (rc {rc}, see {log})"
    print(f"bench: {set_name}: {TITLES.get(step, step)}: {seconds:.1f} s, {state}", flush=True)
    return run


def lab(ctx: Context, action: str, name: str) -> tuple[float, int]:
    playbook = ctx.root / "playbooks" / f"lab-{action}.yml"
    print(f"bench: lab-{action} {ctx.lab} ...", flush=True)
    seconds, rc, _, _, _, log = run_playbook(ctx, playbook, name, None)
    print(f"bench: lab-{action} {ctx.lab}: {seconds:.1f} s, rc {rc}"
          + ("" if rc == 0 else f" (see {log})"), flush=True)
    return seconds, rc


# ----------------------------------------------------------------------------- the edits


def documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def edit(folder: Path, kind: str, namespace: str, name: str,
         change: Callable[[dict[str, Any]], None]) -> Path:
    """Apply change to the one object of the manifests folder; rewrite its file."""
    for path in sorted(folder.glob("*.y*ml")):
        docs = documents(path)
        for doc in docs:
            meta = doc.get("metadata") or {}
            if (doc.get("kind") == kind and meta.get("name") == name
                    and meta.get("namespace", "default") == namespace):
                change(doc)
                path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
                return path
    raise SystemExit(f"bench: no {kind} {namespace}/{name} in {folder}")


def add_service(folder: Path) -> str:
    namespace, app = DEPLOYMENT
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": ADDED_SERVICE, "namespace": namespace},
        "spec": {"selector": {"app": app},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    (folder / "zz-bench-added.yaml").write_text(
        "---\n" + yaml.safe_dump(service, sort_keys=False), encoding="utf-8")
    return f"{namespace}/{ADDED_SERVICE}: ClusterIP over app={app}"


def scale(folder: Path) -> str:
    namespace, name = DEPLOYMENT
    seen: dict[str, int] = {}

    def plus_one(doc: dict[str, Any]) -> None:
        seen["from"] = int(doc["spec"].get("replicas", 1))
        doc["spec"]["replicas"] = seen["from"] + 1

    edit(folder, "Deployment", namespace, name, plus_one)
    return f"Deployment {namespace}/{name}: {seen['from']} -> {seen['from'] + 1} replicas"


def plan(ctx: Context, manifests: Path) -> dict[str, Any]:
    """The cluster plan of the manifests as the model makes it now (allocation record)."""
    done = subprocess.run(
        [str(ctx.bin / "python"), "-m", "podnet", "plan", "-i", str(ctx.inventory), "--json"],
        cwd=ctx.root, env=ctx.env(manifests), capture_output=True, text=True, check=False,
        timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"bench: podnet plan failed:\n{done.stdout}{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def placement(ctx: Context, manifests: Path) -> tuple[list[str], dict[str, str]]:
    """The nodes, and each pod's node."""
    now = plan(ctx, manifests)
    nodes = [n["name"] for n in now["nodes"]]
    return nodes, {f"{p['namespace']}/{p['name']}": p["node"] for p in now["pods"]}


def move(ctx: Context, folder: Path) -> tuple[str, str, str]:
    namespace, name = MOVED_POD
    key = f"{namespace}/{name}"
    nodes, placed = placement(ctx, folder)
    source = placed[key]
    target = nodes[(nodes.index(source) + 1) % len(nodes)]

    def pin(doc: dict[str, Any]) -> None:
        doc["spec"]["nodeName"] = target

    edit(folder, "Pod", namespace, name, pin)
    return key, source, target


# ----------------------------------------------------------------------------- one set


def bench_set(ctx: Context, set_name: str, source: Path, steps: list[str],
              runs: list[Run]) -> None:
    manifests = ctx.work / set_name / "manifests"
    shutil.rmtree(manifests.parent, ignore_errors=True)
    shutil.copytree(source, manifests)
    # an edit copy is only ever a copy: fail before any lab work when the set is bad
    first = plan(ctx, manifests)
    ctx.hosts = [h["name"] for h in first["hosts"]]
    print(f"bench: {set_name}: {len(first['pods'])} pods, {len(first['services'])} Services "
          f"on {len(first['nodes'])} nodes, from {source}", flush=True)

    lab(ctx, "down", f"{set_name}-lab-down")
    up, rc = lab(ctx, "up", f"{set_name}-lab-up")
    if rc != 0:
        raise SystemExit(f"bench: lab-up of {ctx.lab} failed (rc {rc})")

    floors = [timed(ctx, set_name, "floor", FLOOR_PLAYBOOK, manifests)
              for _ in range(FLOOR_RUNS)]
    floor = sorted(floors, key=lambda r: r.seconds)[len(floors) // 2]
    floor.note = (f"median of {FLOOR_RUNS}: "
                  + ", ".join(f"{r.seconds:.2f}" for r in floors) + f" s; lab-up {up:.0f} s")
    runs.append(floor)

    site = ctx.root / "playbooks" / "site.yml"
    runs.append(timed(ctx, set_name, "fresh", site, manifests,
                      f"{len(first['pods'])} pods, {len(first['services'])} Services"))
    for step in steps:
        if step == "nochange":
            runs.append(timed(ctx, set_name, step, site, manifests))
        elif step == "service":
            runs.append(timed(ctx, set_name, step, site, manifests, add_service(manifests)))
        elif step == "scale":
            runs.append(timed(ctx, set_name, step, site, manifests, scale(manifests)))
        elif step == "move":
            key, was, target = move(ctx, manifests)
            run = timed(ctx, set_name, step, site, manifests)
            now = placement(ctx, manifests)[1].get(key)
            run.note = f"{key}: {was} -> {target}" + ("" if now == target else
                                                       f" (plan says {now}!)")
            runs.append(run)


# ----------------------------------------------------------------------------- report


def changed_cell(run: Run, hosts: list[str]) -> str:
    return "/".join(str(run.recap[h]["changed"]) if h in run.recap else "-" for h in hosts)


def report(runs: list[Run], top: int, header: str) -> str:
    lines = [header, ""]
    hosts = [*sorted({h for r in runs for h in r.recap if h != "localhost"}), "localhost"]
    floors = {r.set: r.seconds for r in runs if r.step == "floor"}
    rows = [("set", "scenario", "wall s", "x floor", "tasks", "changed " + "/".join(hosts),
             "ctl CPU s", "load1 before/after", "note")]
    for r in runs:
        ratio = r.seconds / floors[r.set] if floors.get(r.set) else 0.0
        wall = f"{r.seconds:.1f}" if r.ok else f"{r.seconds:.1f} FAIL"
        rows.append((r.set, TITLES.get(r.step, r.step), wall, f"{ratio:.1f}",
                     str(len(r.tasks)), changed_cell(r, hosts), f"{r.cpu:.1f}",
                     f"{r.load_before.split()[0]} / {r.load_after.split()[0]}", r.note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for i, row in enumerate(rows):
        cells = [c.rjust(w) if 2 <= n <= 4 or n == 6 else c.ljust(w)
                 for n, (c, w) in enumerate(zip(row, widths, strict=False))]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ----")

    sets = list(dict.fromkeys(r.set for r in runs))
    if "default" in sets and "large" in sets:
        lines += ["", "growth, large set / default set (wall time):"]
        by = {(r.set, r.step): r.seconds for r in runs}
        for step in ("floor", *STEPS):
            if ("default", step) in by and ("large", step) in by:
                lines.append(f"  {TITLES[step]:<22} {by[('large', step)]:7.1f} s / "
                             f"{by[('default', step)]:6.1f} s = "
                             f"{by[('large', step)] / by[('default', step)]:.2f}x")

    for r in runs:
        if r.step == "floor" or not r.tasks:
            continue
        total = sum(s for _, s in r.tasks)
        lines += ["", f"{r.set} / {TITLES[r.step]}: {len(r.tasks)} tasks, {total:.1f} s "
                      f"by profile_tasks, {r.seconds:.1f} s wall; slowest {top}:"]
        for name, seconds in sorted(r.tasks, key=lambda t: -t[1])[:top]:
            lines.append(f"  {seconds:7.2f} s {100 * seconds / total:4.0f}%  {name}")
        roles: dict[str, list[float]] = {}
        for name, seconds in r.tasks:
            role = name.split(" : ", 1)[0] if " : " in name else "(play: facts, includes)"
            roles.setdefault(role, []).append(seconds)
        per_role = sorted(roles.items(), key=lambda kv: -sum(kv[1]))
        lines.append("  per role: " + ", ".join(
            f"{role} {sum(times):.1f} s/{len(times)}" for role, times in per_role))
    return "\n".join(lines) + "\n"


def describe(root: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    dirty = " + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") \
        else ""
    return f"{root} at {commit}{dirty}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--set", choices=["default", "large", "both"],
                        default=os.environ.get("PODNET_BENCH_CONVERGE_SET", "both"),
                        help="which manifests: the demo's, bench/manifests-large/, or both "
                             "(default both; PODNET_BENCH_CONVERGE_SET)")
    parser.add_argument("--lab", default=os.environ.get("PODNET_BENCH_LAB", "podnet-bench"),
                        help="the bench's own lab (PODNET_LAB); default podnet-bench")
    parser.add_argument("--root", type=Path, default=REPO,
                        help="checkout whose playbooks, roles, inventory and ansible.cfg run "
                             f"(default {REPO})")
    parser.add_argument("--steps", default=",".join(STEPS[1:]),
                        help="after the fresh converge, which of "
                             f"{','.join(STEPS[1:])} to run, in that order (default all)")
    parser.add_argument("--top", type=int, default=10, help="slowest tasks listed per run")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one playbook run may take (default 1800)")
    parser.add_argument("--json", type=Path, help="also write the runs as JSON here")
    parser.add_argument("--keep-lab", action="store_true",
                        help="leave the lab up at the end (default: lab-down)")
    args = parser.parse_args(argv)

    steps = [s for s in args.steps.split(",") if s]
    unknown = set(steps) - set(STEPS[1:])
    if unknown:
        parser.error(f"--steps: unknown {', '.join(sorted(unknown))}; use {STEPS[1:]}")
    steps = [s for s in STEPS[1:] if s in steps]
    root = args.root.resolve()
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "ansible-playbook").exists():
        venv_bin = REPO / ".venv" / "bin"
    if os.geteuid() != 0:
        parser.error("run as root: the bench boots a lab of its own")
    sets = {"default": root / "inventory" / "lab" / "manifests", "large": LARGE_MANIFESTS}
    chosen = ["default", "large"] if args.set == "both" else [args.set]

    work = Path(tempfile.mkdtemp(prefix=f"{args.lab}-"))
    ctx = Context(root, args.lab, venv_bin, work, args.timeout, callbacks_for(root))
    # a SIGTERM ends the run through the finally below, which takes the lab down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    header = (f"podnet converge benchmark: {describe(root)}; lab {args.lab}; "
              f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M')}")
    print(header, f"\nbench: logs in {ctx.logs}", flush=True)
    runs: list[Run] = []
    started = time.monotonic()
    failed = False
    try:
        for set_name in chosen:
            bench_set(ctx, set_name, sets[set_name], steps, runs)
    finally:
        if not args.keep_lab:
            _, rc = lab(ctx, "down", "final-lab-down")
            failed = rc != 0
            left = subprocess.run(
                [str(venv_bin / "python"), "-m", "podnet", "lab", "residue", "--lab", args.lab,
                 "--state-dir", f"/var/lib/podnet/labs/{args.lab}",
                 "--hosts", ",".join(ctx.hosts)],
                cwd=root, env=ctx.env(None), capture_output=True, text=True, check=False)
            print("bench: " + (left.stdout.strip() or left.stderr.strip()), flush=True)
            failed = failed or left.returncode != 0
        if runs:
            print()
            print(report(runs, args.top, header), end="")
            print(f"\nbenchmark run time: {time.monotonic() - started:.0f} s "
                  f"(logs in {ctx.logs})")
            if args.json:
                args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n",
                                     encoding="utf-8")
    failed = failed or any(not r.ok for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
