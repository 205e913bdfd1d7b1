"""Routing backends benchmark: what each backend (host-gw, vxlan, bgp) costs a pod against
its node, in throughput and in request/response latency.

Needs the converged demo lab (`make demo`, or `make lab-up converge`); runs as root. For each
backend of ``--backends`` (default all three) it converges the lab's network with it
(``PODNET_BACKEND=<b> ansible-playbook playbooks/site.yml --tags network``: the cni and
pod_network roles), waits until a pod on the first node reaches a pod on the second, then
measures, all on the lab's hosts (nothing leaves this machine's own network namespace):

  1. TCP throughput, iperf3 (PODNET_BENCH_BACKENDS_SECONDS per run, one stream, then four):
     from a pod on the first node to a pod on the second (the server a transient unit in
     the target pod's netns, ``systemd-run ... ip netns exec``), and node to node over the
     underlay (first node -> the second's address; its own transient server);
  2. request/response latency: a TCP ping-pong of 1-byte messages over one kept connection
     (TCP_NODELAY both ends; PODNET_BENCH_BACKENDS_RR round trips after 500 thrown away),
     between the same pods and between the same nodes; p50 and p99 in microseconds.

Ratios are pod / node: throughput (goal: host-gw and bgp >= 0.9, vxlan >= 0.75 on one
stream) and latency (above 1: the pod path is slower). At the end, in a finally, the lab is
converged back to its own backend (the inventory's podnet_backend as this run sees it).
Everything shares this machine's cores: both iperf3 ends, the three nodes' packet paths and
(vxlan) the encapsulation; the ratio is the figure to compare.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingress import observed_ip  # noqa: E402
from loadbalancer import on  # noqa: E402

from podnet import cluster, kubelet  # noqa: E402
from podnet.plan import Plan  # noqa: E402
from podnet.settings import BACKENDS  # noqa: E402

INVENTORY = ROOT / "inventory" / "lab"
SECONDS = int(os.environ.get("PODNET_BENCH_BACKENDS_SECONDS", "5"))
ROUND_TRIPS = int(os.environ.get("PODNET_BENCH_BACKENDS_RR", "20000"))
WARMUP = 500
IPERF_POD_PORT = 5201  # in the target pod's netns
IPERF_NODE_PORT = 5202  # on the target node itself
RR_POD_PORT = 5203
RR_NODE_PORT = 5204
UNIT = "podnet-bench-backends"  # prefix of the transient units on the target node
RR_SCRIPT = "/run/podnet-bench-rr.py"  # on both nodes while the bench runs
GOALS = {"host-gw": 0.9, "bgp": 0.9, "vxlan": 0.75}
ANCHORS = ("Anchors (issue): over 40 GbE a single stream reaches 64% of bare metal with Flannel "
           "vxlan, 63% with Calico, 72% with kube-router;\n"
           "goal here: host-gw and bgp >= 0.9, vxlan >= 0.75 (pod / node, one stream).")

# The ping-pong, run with python3 on the lab's nodes: "serve PORT" echoes every byte back on
# each connection until it closes; "ping HOST PORT N WARMUP" prints the round trips' p50 and
# p99 in microseconds as JSON.
RR_CODE = '''
import json, socket, sys, time
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(4)
    while True:
        c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            b = c.recv(1)
            if not b:
                break
            c.sendall(b)
        c.close()
def ping(host, port, n, warmup):
    c = socket.create_connection((host, port), timeout=5)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    clock = time.perf_counter_ns
    for i in range(n + warmup):
        t = clock(); c.sendall(b"x")
        if c.recv(1) != b"x":
            raise SystemExit("bad echo")
        rtts.append(clock() - t)
    c.close()
    rtts = sorted(rtts[warmup:])
    q = lambda f: rtts[min(len(rtts) - 1, int(f * len(rtts)))] / 1000
    print(json.dumps({"p50": q(0.5), "p99": q(0.99), "n": len(rtts)}))
if sys.argv[1] == "serve":
    serve(int(sys.argv[2]))
else:
    ping(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
'''


def converge(backend: str) -> float:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PODNET_BACKEND": backend}
    argv = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(INVENTORY),
            str(ROOT / "playbooks" / "site.yml"), "--tags", "network"]
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                          timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"bench: converge with {backend} failed:\n{done.stdout[-3000:]}"
                         f"{done.stderr[-1000:]}")
    return time.monotonic() - started


def in_netns(netns: str | None, argv: list[str]) -> str:
    """``argv`` as one shell line, inside ``netns`` when one is given."""
    return shlex.join(["ip", "netns", "exec", netns, *argv] if netns else argv)


def start_unit(node: str, name: str, netns: str | None, argv: list[str]) -> None:
    """A transient unit on ``node`` running ``argv`` (in ``netns``), up before this returns."""
    on(node, f"systemctl stop {name} 2>/dev/null; systemctl reset-failed {name} 2>/dev/null; "
             f"systemd-run --quiet --collect --unit {name} "
             + in_netns(netns, argv), root=True)
    time.sleep(0.5)
    on(node, f"systemctl is-active --quiet {name}", root=True)


def stop_units(node: str, names: list[str]) -> None:
    """Stop each unit, going on when one fails: every unit gets its stop."""
    for name in names:
        try:
            on(node, f"systemctl stop {name} 2>/dev/null; "
                     f"systemctl reset-failed {name} 2>/dev/null; true", root=True)
        except SystemExit as e:
            print(f"  (could not stop {name} on {node}: {e})", flush=True)


def iperf(client: str, netns: str | None, address: str, port: int, streams: int) -> float:
    """Gbit/s received, one run of ``streams`` parallel streams."""
    out = json.loads(on(client, in_netns(netns, [
        "iperf3", "-c", address, "-p", str(port), "-t", str(SECONDS), "-P", str(streams),
        "-J"]), root=True))
    if "error" in out:
        raise SystemExit(f"bench: iperf3 to {address}:{port}: {out['error']}")
    return float(out["end"]["sum_received"]["bits_per_second"]) / 1e9


def rr(client: str, netns: str | None, address: str, port: int) -> dict[str, float]:
    out = on(client, in_netns(netns, ["python3", RR_SCRIPT, "ping", address, str(port),
                                      str(ROUND_TRIPS), str(WARMUP)]), root=True)
    return {k: float(v) for k, v in json.loads(out).items()}


def wait_reachable(node: str, netns: str, address: str, timeout: float = 90) -> float:
    """Seconds until ``address`` answers a ping from ``netns`` on ``node``."""
    started = time.monotonic()
    while True:
        try:
            on(node, in_netns(netns, ["ping", "-c1", "-W1", "-q", address]), root=True)
            return time.monotonic() - started
        except SystemExit:
            if time.monotonic() - started > timeout:
                raise SystemExit(f"bench: {address} unreachable from {netns} on {node} "
                                 f"{timeout:.0f} s after the converge") from None
            time.sleep(1)


def mtu(node: str, netns: str) -> int:
    out = on(node, in_netns(netns, ["ip", "-j", "link", "show", "eth0"]), root=True)
    return int(json.loads(out)[0]["mtu"])


def route(node: str, cidr: str) -> str:
    """How ``node`` routes ``cidr`` (the evidence of the backend in place)."""
    return " ".join(on(node, f"ip route show {cidr}").split()) or "(no route)"


def pick(plan: Plan, node: str) -> str:
    """The first pod of ``node`` in the plan that is not an add-on's."""
    keys = sorted(p.key for p in plan.pods_on(node) if not p.addon) or \
        sorted(p.key for p in plan.pods_on(node))
    if not keys:
        raise SystemExit(f"bench: the plan has no pod on {node}")
    return keys[0]


def measure(backend: str, plan: Plan) -> dict[str, float]:
    first, second = plan.nodes[0], plan.nodes[1]
    src, dst = pick(plan, first.name), pick(plan, second.name)
    src_ns, dst_ns = (kubelet.pod_id(*k.split("/", 1)) for k in (src, dst))
    dst_ip = observed_ip(plan, dst)
    took = converge(backend)
    reached = wait_reachable(first.name, src_ns, dst_ip)
    print(f"{backend}: converged (--tags network) in {took:.1f} s, {dst_ip} answered "
          f"{reached:.1f} s after; {first.name} routes {second.pod_cidr}: "
          f"{route(first.name, second.pod_cidr)}; pod MTU {src} {mtu(first.name, src_ns)}, "
          f"{dst} {mtu(second.name, dst_ns)}", flush=True)
    units = [f"{UNIT}-{what}" for what in ("iperf-pod", "iperf-node", "rr-pod", "rr-node")]
    got: dict[str, float] = {}
    try:
        start_unit(second.name, units[0], dst_ns,
                   ["iperf3", "--server", "--port", str(IPERF_POD_PORT)])
        start_unit(second.name, units[1], None,
                   ["iperf3", "--server", "--port", str(IPERF_NODE_PORT)])
        start_unit(second.name, units[2], dst_ns,
                   ["python3", RR_SCRIPT, "serve", str(RR_POD_PORT)])
        start_unit(second.name, units[3], None,
                   ["python3", RR_SCRIPT, "serve", str(RR_NODE_PORT)])
        for streams in (1, 4):
            got[f"pod{streams}"] = iperf(first.name, src_ns, dst_ip, IPERF_POD_PORT, streams)
            got[f"node{streams}"] = iperf(first.name, None, second.address, IPERF_NODE_PORT,
                                          streams)
            print(f"  iperf3 -P {streams}: {src} -> {dst} ({dst_ip}) "
                  f"{got[f'pod{streams}']:6.2f} Gbit/s; {first.name} -> {second.name} "
                  f"({second.address}) {got[f'node{streams}']:6.2f} Gbit/s", flush=True)
        for label, netns, address, port in (("pod", src_ns, dst_ip, RR_POD_PORT),
                                            ("node", None, second.address, RR_NODE_PORT)):
            r = rr(first.name, netns, address, port)
            got[f"{label}_p50"], got[f"{label}_p99"] = r["p50"], r["p99"]
            print(f"  ping-pong {label} -> {address}:{port}: {int(r['n'])} round trips, "
                  f"p50 {r['p50']:.0f} us, p99 {r['p99']:.0f} us", flush=True)
    finally:
        stop_units(second.name, units)
    return got


def table(results: dict[str, dict[str, float]]) -> None:
    print(f"\nbetween a pod on the first node and a pod on the second; iperf3 {SECONDS} s per "
          f"run, ping-pong {ROUND_TRIPS} round trips of 1 byte:\n")
    print("| backend | 1 stream Gbit/s | 4 streams | node-to-node 1 / 4 | ratio 1 / 4 | "
          "RR p50 / p99 µs | node RR p50 / p99 µs | ratio p50 / p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for backend, g in results.items():
        print(f"| {backend} | {g['pod1']:.2f} | {g['pod4']:.2f} | {g['node1']:.2f} / "
              f"{g['node4']:.2f} | {g['pod1'] / g['node1']:.2f} / {g['pod4'] / g['node4']:.2f} "
              f"| {g['pod_p50']:.0f} / {g['pod_p99']:.0f} | {g['node_p50']:.0f} / "
              f"{g['node_p99']:.0f} | {g['pod_p50'] / g['node_p50']:.2f} / "
              f"{g['pod_p99'] / g['node_p99']:.2f} |")
    print()
    for backend, g in results.items():
        ratio, goal = g["pod1"] / g["node1"], GOALS[backend]
        print(f"{backend}: one stream pod / node = {ratio:.2f} (goal >= {goal}: "
              f"{'met' if ratio >= goal else 'missed'})")
    print(ANCHORS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated, in the order to run (default: %(default)s)")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        parser.error(f"--backends: {', '.join(unknown) or 'none given'}; "
                     f"use some of {', '.join(BACKENDS)}")
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (it converges the lab's network)")
    plan = cluster.load(INVENTORY)
    own = plan.settings.backend
    if len(plan.nodes) < 2:
        raise SystemExit("bench: the plan needs two nodes")
    nodes = plan.nodes[:2]
    script = base64.b64encode(RR_CODE.encode()).decode()
    results: dict[str, dict[str, float]] = {}
    try:
        for node in nodes:
            on(node.name, f"echo {script} | base64 -d > {RR_SCRIPT}", root=True)
        for backend in backends:
            results[backend] = measure(backend, plan)
    finally:
        try:
            for node in nodes:
                on(node.name, f"rm -f {RR_SCRIPT}", root=True)
        finally:
            took = converge(own)
            print(f"(back to the lab's own backend, {own}, in {took:.1f} s)", flush=True)
    if results:
        table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
