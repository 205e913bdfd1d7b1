"""Ingress benchmark (issue 16): what the Ingress controller costs per request.

Needs the converged demo lab (`make demo`, or `make lab-up converge`); runs as root, and puts
back what it changes: one whoami pod with its own Service and an Ingress to it, host
plain.bench.test without TLS (bench/manifests-ingress, converged beside the demo's), and a
line in a host's /etc/hosts while wrk runs, so that wrk sends that name in Host and SNI (HTTPS
to it gets the controller's default certificate).

wrk (HTTP/1.1, keep-alive, PODNET_BENCH_INGRESS_SECONDS per run, PODNET_BENCH_INGRESS_CONNS
connections, one thread) against that one whoami pod:
  1. straight to the pod (its pod IP, from the node of a controller pod: no Service, no
     proxy): the anchor;
  2. through that node's controller pod (its pod IP: the Ingress's own cost, nothing of the
     load balancer's), HTTP and HTTPS;
  3. from the outside client through the controller's LoadBalancer address, HTTP and HTTPS
     (the whole external path: lb host, kube-proxy, controller, backend).
Requests per second, p50 and p99 latency, each as a ratio of the direct figure, and the CPU
the controller pods used per 1,000 requests (their containers' cgroups). wrk does not check
certificates: it measures; verify/test_ingress.py proves the certificates.
There is no published figure for ingress-nginx on a machine this small: the ratio is the
anchor. Everything shares this machine's 2 cores: wrk, the controller, the backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadbalancer import beside_the_demo, converge, inventory, on  # noqa: E402

from podnet import cluster, kubelet  # noqa: E402
from podnet.plan import Plan  # noqa: E402

INVENTORY = ROOT / "inventory" / "lab"
SECONDS = int(os.environ.get("PODNET_BENCH_INGRESS_SECONDS", "5"))
CONNS = int(os.environ.get("PODNET_BENCH_INGRESS_CONNS", "8"))
PLAIN = "plain.bench.test"  # bench/manifests-ingress (no TLS): every path to BACKEND
BENCH_MANIFESTS = Path(__file__).resolve().parent / "manifests-ingress"
BACKEND = "demo/bench-whoami"  # one pod (bench/manifests-ingress)
CONTROLLER = "ingress-nginx/ingress-nginx-controller"
MARK = "# podnet-bench-ingress"
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * UNITS[unit]


def wrk(host: str, url: str) -> dict[str, float]:
    """One measured run, after a 1 s one that warms the path up (connections to the upstream,
    TLS sessions, caches) and is thrown away."""
    on(host, shlex.join(["wrk", "-t1", f"-c{CONNS}", "-d1s", url]))
    out = on(host, shlex.join(["wrk", "-t1", f"-c{CONNS}", f"-d{SECONDS}s", "--latency",
                               url]))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        raise SystemExit(f"bench: wrk {url} from {host}: {errors.group(0)}\n{out}")
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50": p50, "p99": p99, "requests": total}


def cpu_seconds(plan: Plan) -> float:
    """CPU the controller pods' containers (nginx with its workers, podnet-ingress) have used
    so far: their cgroups' usage_usec (cgroup v2's cpu.stat; the lab's hosts have it under
    unified/)."""
    total = 0.0
    svc = plan.service(CONTROLLER)
    for key in sorted({e.pod for e in svc.ports[0].endpoints}):
        pod = plan.pod(key)
        units = [c["unit"] for p in kubelet.node_pods(plan, pod.node)
                 if f"{p['namespace']}/{p['name']}" == key for c in p["containers"]]
        script = ("for u in " + shlex.join(units) + "; do "
                  "cg=$(systemctl show -p ControlGroup --value $u); "
                  "cat /sys/fs/cgroup/unified$cg/cpu.stat 2>/dev/null "
                  "|| cat /sys/fs/cgroup$cg/cpu.stat; done")
        out = on(pod.node, script, root=True)
        total += sum(int(line.split()[1]) for line in out.splitlines()
                     if line.startswith("usage_usec ")) / 1e6
    return total


@contextlib.contextmanager
def pinned(host: str, address: str) -> Iterator[None]:
    """/etc/hosts on ``host`` names PLAIN as ``address`` while the block runs."""
    on(host, f"echo '{address} {PLAIN} {MARK}' >> /etc/hosts", root=True)
    try:
        yield
    finally:
        on(host, f"sed -i '/{MARK}$/d' /etc/hosts", root=True)


def observed_ip(plan: Plan, key: str) -> str:
    pod = plan.pod(key)
    out = on(pod.node, f"{plan.paths.cni_runtime} facts", root=True)
    for entry in json.loads(out)["pods"]:
        if f"{entry['namespace']}/{entry['name']}" == key:
            return str(entry["ip"])
    raise SystemExit(f"bench: {key} does not run on {pod.node}")


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (it converges the lab and edits a host's /etc/hosts)")
    manifests = beside_the_demo(BENCH_MANIFESTS)
    try:
        took = converge(manifests, "workloads")
        print(f"(the bench's pod, Service and Ingress {PLAIN} converged in {took:.1f} s)",
              flush=True)
        measure_all(cluster.load(INVENTORY, manifests=manifests))
    finally:
        converge(INVENTORY / "manifests", "workloads")
        shutil.rmtree(manifests.parent, ignore_errors=True)
    return 0


def measure_all(plan: Plan) -> None:
    try:
        svc = plan.service(CONTROLLER)
    except KeyError:
        raise SystemExit(f"bench: no {CONTROLLER} in the plan") from None
    client = inventory().group("clients")[0]
    ports = {p.name: p.port for p in svc.ports}
    backend_key = sorted({e.pod for p in plan.service(BACKEND).ports for e in p.endpoints})[0]
    controller_key = sorted({e.pod for e in svc.ports[0].endpoints})[0]
    node = plan.pod(controller_key).node
    backend_ip = observed_ip(plan, backend_key)
    controller_ip = observed_ip(plan, controller_key)
    backend_port = next(e.port for p in plan.service(BACKEND).ports for e in p.endpoints)
    print(f"wrk -t1 -c{CONNS} -d{SECONDS}s, keep-alive; backend {backend_key}, controller pod "
          f"{controller_key} on {node}; client {client}", flush=True)
    rows: list[tuple[str, dict[str, float], float]] = []

    def measure(label: str, host: str, url: str) -> None:
        before = cpu_seconds(plan)
        got = wrk(host, url)
        used = cpu_seconds(plan) - before
        rows.append((label, got, used))
        print(f"  {label:<44} {got['rps']:9.0f} req/s  p50 {got['p50']:7.2f} ms  p99 "
              f"{got['p99']:7.2f} ms  controller CPU {used / got['requests'] * 1000:6.3f} s "
              "per 1,000 requests", flush=True)

    measure(f"{node} -> whoami pod (direct, HTTP)", node,
            f"http://{backend_ip}:{backend_port}/")
    with pinned(node, controller_ip):
        measure(f"{node} -> controller pod -> whoami (HTTP)", node, f"http://{PLAIN}/")
        measure(f"{node} -> controller pod -> whoami (HTTPS)", node, f"https://{PLAIN}/")
    with pinned(client, str(svc.lb_ip)):
        measure(f"{client} -> LB {svc.lb_ip}:{ports['http']} -> ... (HTTP)", client,
                f"http://{PLAIN}:{ports['http']}/")
        measure(f"{client} -> LB {svc.lb_ip}:{ports['https']} -> ... (HTTPS)", client,
                f"https://{PLAIN}:{ports['https']}/")
    direct = rows[0][1]
    print("  ratios to direct (req/s; p99 latency):")
    for label, got, _ in rows[1:]:
        print(f"    {label:<44} {got['rps'] / direct['rps']:5.2f}   "
              f"p99 x{got['p99'] / direct['p99']:5.2f}")


if __name__ == "__main__":
    sys.exit(main())
