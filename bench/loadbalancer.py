"""LoadBalancer benchmark (issue 15): what the LB path costs, and how long a node's loss
interrupts a client, in each podnet_lb_mode.

Needs the converged demo lab (`make demo`, or `make lab-up converge`); runs as root (it cuts a
node's link inside the lab's own netns), and puts the lab back as it found it.

1. Throughput (iperf3, TCP, client -> server, PODNET_BENCH_LB_SECONDS per run, 3 runs,
   median): an iperf3 server in a pod (bench/manifests-lb: one pod, a LoadBalancer Service
   with externalTrafficPolicy Local, converged beside the demo's manifests), reached from the
   outside client
     - at its LB address (through the lb host in cloud mode, straight to the announcing node
       in l2 mode),
     - at its node's address and NodePort (kube-proxy's DNAT, no load balancer),
     - and, as the floor, an iperf3 server on that node itself (no Service rules at all).
   Ratios: LB / NodePort (goal >= 0.9) and NodePort / node.
2. Failover, in the lab's mode and then in the other one (converged with tag lb): a request
   every 100 ms from the client to a Local LoadBalancer Service with a pod on every node
   while the link of the node that takes its address first is cut for 8 s; the outage is
   the time from the first failed request to the first success while the link is still cut.
   PODNET_BENCH_LB_CUTS runs per mode; median and worst, against the goal of 3 s.

Everything shares this machine's 2 cores: the client, the lb host, three nodes and iperf3.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import ip_address, ip_network
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from podnet import access, cluster, lab, loadbalancer, outage  # noqa: E402
from podnet.inventory import Inventory  # noqa: E402
from podnet.plan import Plan  # noqa: E402

INVENTORY = ROOT / "inventory" / "lab"
BENCH_MANIFESTS = Path(__file__).resolve().parent / "manifests-lb"
SECONDS = int(os.environ.get("PODNET_BENCH_LB_SECONDS", "4"))
CUTS = int(os.environ.get("PODNET_BENCH_LB_CUTS", "3"))
IPERF = ("bench", "iperf")  # the bench's Service (namespace, name)
NODE_PORT = 5202  # the floor's iperf3 server on the node itself
GOAL_RATIO = 0.9
GOAL_OUTAGE = 3.0
OTHER = {"cloud": "l2", "l2": "cloud"}


def inventory() -> Inventory:
    return Inventory(INVENTORY)


def shell(host: str) -> list[str]:
    return access.ssh_argv(access.connection(access.host(inventory(), host)))


def on(host: str, command: str, root: bool = False) -> str:
    conn = access.connection(access.host(inventory(), host))
    line = access.privileged_shell(conn, command) if root else command
    done = subprocess.run([*access.ssh_argv(conn), line], capture_output=True, text=True,
                          check=False, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"bench: on {host}: {command}: {done.stderr.strip()[-500:]}")
    return done.stdout


def converge(manifests: Path, tags: str, **extra: object) -> float:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PODNET_MANIFESTS_DIR": str(manifests)}
    argv = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(INVENTORY), "-e",
            json.dumps({"podnet_manifests_dir": str(manifests), **extra}),
            str(ROOT / "playbooks" / "site.yml"), "--tags", tags]
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                          timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"bench: converge failed:\n{done.stdout[-3000:]}{done.stderr[-1000:]}")
    return time.monotonic() - started


def beside_the_demo(extra: Path) -> Path:
    """A temporary folder (its parent is the bench's to remove) with the lab's manifests and
    the bench's own from ``extra``, named to sort after them."""
    manifests = Path(tempfile.mkdtemp(prefix="podnet-bench-")) / "manifests"
    shutil.copytree(cluster.manifests_dir(
        {"podnet_manifests_dir": os.environ.get("PODNET_MANIFESTS_DIR", "manifests")},
        INVENTORY) or INVENTORY / "manifests", manifests)
    for path in extra.glob("*.yaml"):
        shutil.copy(path, manifests / f"zz-bench-{path.name}")
    return manifests


def iperf(client: str, address: str, port: int) -> float:
    """Median Gbit/s of 3 runs of iperf3 -c from ``client``."""
    rates = []
    for _ in range(3):
        out = json.loads(on(client, shlex.join(["iperf3", "-c", address, "-p", str(port),
                                                "-t", str(SECONDS), "-J"])))
        if "error" in out:
            raise SystemExit(f"bench: iperf3 to {address}:{port}: {out['error']}")
        rates.append(out["end"]["sum_received"]["bits_per_second"] / 1e9)
    return statistics.median(rates)


def throughput(plan: Plan, client: str) -> None:
    svc = plan.service("/".join(IPERF))
    port = svc.ports[0]
    [node] = {e.node for e in port.endpoints}
    node_address = plan.node(node).address
    pidfile = "$HOME/.podnet-bench-iperf3.pid"  # the login user's, on the node
    on(node, f"iperf3 --server --daemon --port {NODE_PORT} --pidfile {pidfile}")
    paths = [
        ("LB address", str(svc.lb_ip), port.port),
        (f"NodePort on {node}", node_address, int(port.node_port or 0)),
        (f"{node} itself", node_address, NODE_PORT),
    ]
    got = {}
    try:
        for label, address, number in paths:
            got[label] = iperf(client, address, number)
            print(f"  {client} -> {label:<20} {address}:{number:<6} {got[label]:6.2f} Gbit/s",
                  flush=True)
    finally:
        on(node, f"kill $(cat {pidfile}); rm -f {pidfile}")
    lb, nodeport, floor = got.values()
    print(f"  LB / NodePort = {lb / nodeport:.2f} (goal >= {GOAL_RATIO}); NodePort / node = "
          f"{nodeport / floor:.2f}")


def failover_runs(plan: Plan, mode: str) -> list[float]:
    nodes = {n.name for n in plan.nodes}
    key = next(s.key for s in plan.services if s.type == "LoadBalancer" and s.lb_ip
               and s.external_traffic_policy == "Local" and s.ports
               and {e.node for e in s.ports[0].endpoints} == nodes)
    svc = plan.service(key)
    node = loadbalancer.ranking(str(svc.lb_ip), sorted(nodes))[0]
    client = next(h for h in inventory().group("clients")
                  if not svc.load_balancer_source_ranges or any(
                      ip_address(inventory().host(h).address) in ip_network(r)
                      for r in svc.load_balancer_source_ranges))
    name = str(inventory().render(client, ("lab_name",))["lab_name"])

    def cut(down: bool) -> None:
        subprocess.run(["ip", "-n", name, "link", "set", "dev", lab.veth_name(name, node),
                        "down" if down else "up"], check=True)

    outages = []
    for i in range(CUTS):
        got = outage.failover(shell(client), str(svc.lb_ip), svc.ports[0].port, cut)
        spent = got.during.longest if got.failed_over else float("inf")
        outages.append(spent)
        print(f"  {mode} run {i + 1}: {key} at {svc.lb_ip}, {node}'s link cut: {got}",
              flush=True)
        time.sleep(8)  # the node is taken back (its health check, or VRRP preemption)
    return outages


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (it cuts a lab node's link in the lab's netns)")
    demo = cluster.load(INVENTORY)
    mode = demo.settings.lb_mode
    client = inventory().group("clients")[0]
    manifests = beside_the_demo(BENCH_MANIFESTS)
    work = manifests.parent
    results: dict[str, list[float]] = {}
    try:
        took = converge(manifests, "workloads")
        plan = cluster.load(INVENTORY, manifests=manifests)
        print(f"throughput ({mode} mode; bench manifests converged in {took:.1f} s)", flush=True)
        throughput(plan, client)
        print("failover", flush=True)
        results[mode] = failover_runs(plan, mode)
        took = converge(manifests, "lb", podnet_lb_mode=OTHER[mode])
        print(f"  ({OTHER[mode]} mode converged in {took:.1f} s)", flush=True)
        results[OTHER[mode]] = failover_runs(plan, OTHER[mode])
    finally:
        converge(INVENTORY / "manifests", "workloads,lb")
        shutil.rmtree(work, ignore_errors=True)
    for name, runs in results.items():
        worst = max(runs)
        print(f"  {name}: outage median {statistics.median(runs):.2f} s, worst {worst:.2f} s "
              f"over {len(runs)} cuts; worst / goal {GOAL_OUTAGE} s = {worst / GOAL_OUTAGE:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
