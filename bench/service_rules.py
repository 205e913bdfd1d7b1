"""Service-rules benchmark: kube-proxy's iptables rules for 1,000 and 10,000 Services x 5
endpoints, applied with iptables-restore --noflush on a lab node with the nft and the legacy
backend (full apply, then one Service changed among them), and TCP connect latency to a
ClusterIP with 1 and with 10,000 Services loaded.

Everything runs on the node inside two throwaway network namespaces (a client holding the
rules and a server holding the 5 endpoint addresses), so the lab's own rules are untouched.
Needs the demo lab (`make lab-up`). Prints a table; where a backend does not finish within
the cap it says so.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from podnet.inventory import Inventory  # noqa: E402
from podnet.proxier import Endpoint, Options, ServicePort, render  # noqa: E402

SIZES = (1, 1000, 10000)
CAP = float(os.environ.get("PODNET_BENCH_CAP", "120"))  # seconds one apply may take
ENDPOINTS = [f"10.201.0.{i}" for i in range(2, 7)]

WORKER = r"""
import json, socket, statistics, subprocess, sys, time
CAP = float(sys.argv[1])
def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, **kw)
def cleanup():
    for ns in ("pnbench-c", "pnbench-s"):
        sh(f"ip netns pids {ns} | xargs -r kill -9; ip netns delete {ns}")
cleanup()
sh("ip netns add pnbench-c && ip netns add pnbench-s")
sh("ip link add pnb0 netns pnbench-c type veth peer name pnb1 netns pnbench-s")
sh("ip -n pnbench-c addr add 10.201.0.1/24 dev pnb0 && ip -n pnbench-c link set pnb0 up"
   " && ip -n pnbench-c link set lo up && ip -n pnbench-c route add default dev pnb0")
for i in range(2, 7):
    sh(f"ip -n pnbench-s addr add 10.201.0.{i}/24 dev pnb1")
sh("ip -n pnbench-s link set pnb1 up && ip -n pnbench-s link set lo up")
server = subprocess.Popen(["ip", "netns", "exec", "pnbench-s", "python3", "-c",
    "import socket\ns=socket.create_server(('',8080),backlog=512)\n"
    "while True:\n c,_=s.accept(); c.close()"])
time.sleep(0.5)
CONNECT = ("import socket,time,json,sys\nd=[]\nfor i in range(int(sys.argv[1])):\n"
           " t=time.perf_counter(); s=socket.create_connection(('10.96.0.1',80),3);"
           " d.append(time.perf_counter()-t); s.close()\nprint(json.dumps(d))")
out = {}
try:
    for backend in ("nft", "legacy"):
        for size in [int(x) for x in sys.argv[2].split(",")]:
            key = f"{backend} {size}"
            res = {}
            for variant in ("full", "changed"):
                path = f"/tmp/pnbench-{size}-{variant}.rules"
                t = time.perf_counter()
                try:
                    p = subprocess.run(["ip", "netns", "exec", "pnbench-c",
                                        f"iptables-{backend}-restore", "--noflush", path],
                                       capture_output=True, text=True, timeout=CAP)
                    took = time.perf_counter() - t
                    res[variant] = took if p.returncode == 0 else p.stderr[-300:]
                except subprocess.TimeoutExpired:
                    res[variant] = None
                    break
            if isinstance(res.get("full"), float) and size in (1, 10000):
                c = sh(f"ip netns exec pnbench-c python3 -c \"{CONNECT}\" 300")
                try:
                    d = sorted(json.loads(c.stdout))
                    res["p50"], res["p90"] = d[len(d) // 2], d[int(len(d) * 0.9)]
                except ValueError:
                    res["latency_error"] = c.stderr[-300:]
            out[key] = res
            # empty the tables for the next run
            sh(f"ip netns exec pnbench-c iptables-{backend} -t nat -F;"
               f" ip netns exec pnbench-c iptables-{backend} -t nat -X;"
               f" ip netns exec pnbench-c iptables-{backend} -t filter -F;"
               f" ip netns exec pnbench-c iptables-{backend} -t filter -X", timeout=CAP)
finally:
    server.kill()
    cleanup()
    sh("rm -f /tmp/pnbench-*.rules")
print(json.dumps(out))
"""


def services(n: int, changed: bool) -> list[ServicePort]:
    out = []
    for i in range(n):
        ip = f"10.96.{i // 250}.{i % 250 + 1}" if i else "10.96.0.1"
        eps = tuple(Endpoint(addr, 8080) for addr in ENDPOINTS)
        if changed and i == n // 2:  # one Service loses an endpoint
            eps = eps[:-1]
        # the one measured (ClusterIP 10.96.0.1) sorts last: its KUBE-SERVICES rule is the
        # last of thousands, kube-proxy's worst case for a linear chain
        name = "zz-measured" if i == 0 else f"svc{i}"
        out.append(ServicePort(namespace="bench", name=name, port_name="http",
                               protocol="TCP", cluster_ip=ip, port=80, endpoints=eps))
    return out


def rules(n: int, changed: bool) -> str:
    text = render(services(n, changed), Options(node_name="bench", node_ip="10.201.0.1",
                                               cluster_cidr="10.244.0.0/16"))
    jump = "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
    head, _, tail = text.partition("*nat\n")
    nat, _, rest = tail.partition("COMMIT\n")
    if changed:  # the second apply: the jump exists already
        jump = ""
    return f"{head}*nat\n{nat}{jump}COMMIT\n{rest}"


def ssh(node: str) -> list[str]:
    inv = Inventory(ROOT / "inventory" / "lab")
    host = inv.host(node)
    args = ["ssh", "-i", str(host.vars["ansible_ssh_private_key_file"])]
    args += shlex.split(str(host.vars.get("ansible_ssh_common_args", "")))
    return [*args, f"root@{host.address}"]


def main() -> int:
    node = os.environ.get("PODNET_BENCH_NODE", "node1")
    base = ssh(node)
    sizes = [int(s) for s in os.environ.get("PODNET_BENCH_SIZES", ",".join(map(str, SIZES)))
             .split(",")]
    for n in sizes:
        for variant, changed in (("full", False), ("changed", True)):
            data = rules(n, changed).encode()
            subprocess.run([*base, f"cat > /tmp/pnbench-{n}-{variant}.rules"], input=data,
                           check=True)
        lines = data.count(b"\n")
        print(f"rules for {n} services: {len(data) / 1e6:.1f} MB, {lines} lines", flush=True)
    started = time.time()
    proc = subprocess.run([*base, "python3", "-c", shlex.quote(WORKER), str(CAP),
                           ",".join(map(str, sizes))], capture_output=True, text=True,
                          check=False, timeout=CAP * 8 + 600)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nService rules on {node} (each Service: 5 endpoints), {time.time() - started:.0f} s")
    print(f"{'backend':8} {'services':>8} {'full apply':>12} {'1 changed':>12} "
          f"{'connect p50':>12} {'p90':>9}")

    def fmt(value: object) -> str:
        if value is None:
            return f"> {CAP:.0f} s"
        if isinstance(value, float):
            return f"{value:.2f} s"
        return "error"

    for key, res in results.items():
        backend, size = key.split()
        p50 = f"{res['p50'] * 1e3:.3f} ms" if "p50" in res else "-"
        p90 = f"{res['p90'] * 1e3:.3f} ms" if "p90" in res else "-"
        print(f"{backend:8} {size:>8} {fmt(res.get('full')):>12} {fmt(res.get('changed')):>12} "
              f"{p50:>12} {p90:>9}")
        for what in ("full", "changed", "latency_error"):
            if isinstance(res.get(what), str):
                print(f"  {backend} {size} {what}: {res[what].strip()}")
    for backend in ("nft", "legacy"):
        a, b = results.get(f"{backend} 1000", {}), results.get(f"{backend} 10000", {})
        if isinstance(a.get("full"), float) and isinstance(b.get("full"), float):
            print(f"{backend}: 10,000 Services take {b['full'] / a['full']:.1f}x the time of "
                  "1,000")
        one, many = results.get(f"{backend} 1", {}), b
        if "p50" in one and "p50" in many:
            print(f"{backend}: connect p50 with 10,000 Services is {many['p50'] / one['p50']:.1f}x "
                  "that with 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
