"""Cluster DNS benchmark: dnsperf from a pod against the kube-dns Service IP, as a pod's
resolver would ask it, for cluster names (every name the model serves, all record types) and
for an external name answered from the cache after the first query through the upstream;
then the same cluster names sent to one DNS pod directly (no Service rules in between).

Prints queries per second, average/min/max latency and lost queries per run, and the ratio to
CoreDNS' published 33,669 QPS for cluster names on 2 vCPUs (coredns/deployment,
kubernetes/Scaling_CoreDNS.md). Needs the converged demo lab (`make demo` or `make lab-up
converge`). Everything here shares this machine's 2 cores: dnsperf, both DNS pods and the
three nodes' packet paths.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service_rules import ssh  # noqa: E402  (bench/ is on sys.path: the script's folder)

from podnet import cluster, dns, endpoints  # noqa: E402
from podnet.kubelet import pod_id  # noqa: E402
from podnet.plan import Plan  # noqa: E402

COREDNS_QPS = 33669  # 2 vCPUs, cluster names, Scaling_CoreDNS.md
SECONDS = int(os.environ.get("PODNET_BENCH_DNS_SECONDS", "15"))
CLIENTS = os.environ.get("PODNET_BENCH_DNS_CLIENTS", "8")  # sockets: flows kube-proxy spreads
OUTSTANDING = os.environ.get("PODNET_BENCH_DNS_OUTSTANDING", "50")
THREADS = os.environ.get("PODNET_BENCH_DNS_THREADS", "1")  # leaves the other core to DNS
INVENTORY = ROOT / "inventory" / "lab"


def on(node: str, command: str, data: str | None = None) -> str:
    done = subprocess.run([*ssh(node), command], input=data, capture_output=True, text=True,
                          check=False, timeout=SECONDS * 4 + 120)
    if done.returncode != 0:
        raise SystemExit(f"bench: on {node}: {command}: {done.stderr.strip()[-500:]}")
    return done.stdout


def observed(plan: Plan) -> dict[str, str]:
    """The pods' IPs as each node reports them (the kubelet's fact)."""
    pods = [pod for node in plan.nodes
            for pod in json.loads(on(node.name, "/usr/local/sbin/podnet-cni facts"))["pods"]]
    return endpoints.observed_ips(pods)


def dnsperf(node: str, netns: str, server: str, queries: str) -> dict[str, str]:
    on(node, "cat > /tmp/podnet-bench-queries", queries)
    out = on(node, f"ip netns exec {shlex.quote(netns)} dnsperf -s {server} "
                   f"-d /tmp/podnet-bench-queries -l {SECONDS} -c {CLIENTS} -T {THREADS} "
                   f"-q {OUTSTANDING} -t 2 && rm -f /tmp/podnet-bench-queries")
    fields = {
        "sent": r"Queries sent:\s+(\d+)",
        "completed": r"Queries completed:\s+(\d+)",
        "lost": r"Queries lost:\s+(\d+)",
        "qps": r"Queries per second:\s+([\d.]+)",
        "avg": r"Average Latency \(s\):\s+([\d.]+)",
        "min": r"Average Latency \(s\):\s+[\d.]+ \(min ([\d.]+),",
        "max": r"Average Latency \(s\):\s+[\d.]+ \(min [\d.]+, max ([\d.]+)\)",
        "codes": r"Response codes:\s+(.+)",
    }
    got = {}
    for key, pattern in fields.items():
        match = re.search(pattern, out)
        got[key] = match.group(1).strip() if match else "?"
    return got


def main() -> int:
    plan = cluster.load(INVENTORY)
    client_key = os.environ.get("PODNET_BENCH_POD", "other/client")
    client = plan.pod(client_key)
    ips = observed(plan)
    served = dns.served(plan, ips)
    cluster_names = "".join(f"{r.name} {r.type}\n" for r in served)
    external = "www.example.test. A\n"
    dns_ip = str(plan.settings.dns_service_ip)
    dns_pods = sorted(p.key for p in plan.pods if p.namespace == "kube-system")
    netns = pod_id(client.namespace, client.name)
    print(f"dnsperf from pod {client_key} on {client.node}: {SECONDS} s per run, {CLIENTS} "
          f"clients in {THREADS} thread(s), {OUTSTANDING} outstanding; {len(served)} cluster "
          f"records ({len({r.type for r in served})} types), {len(dns_pods)} DNS pods",
          flush=True)
    runs = [
        ("cluster names via kube-dns", dns_ip, cluster_names),
        ("external name (cached) via kube-dns", dns_ip, external),
        (f"cluster names, one DNS pod direct ({dns_pods[0].split('/')[1]})",
         ips[dns_pods[0]], cluster_names),
    ]
    results = []
    for label, server, queries in runs:
        results.append((label, dnsperf(client.node, netns, server, queries)))
        got = results[-1][1]
        print(f"  {label}: {got['qps']} QPS, avg {float(got['avg']) * 1e3:.3f} ms, "
              f"lost {got['lost']}/{got['sent']}, codes {got['codes']}", flush=True)
    print(f"\n{'run':46} {'QPS':>9} {'avg ms':>8} {'min ms':>8} {'max ms':>8} {'lost':>10}")
    for label, got in results:
        print(f"{label:46} {float(got['qps']):>9.0f} {float(got['avg']) * 1e3:>8.3f} "
              f"{float(got['min']) * 1e3:>8.3f} {float(got['max']) * 1e3:>8.3f} "
              f"{got['lost'] + '/' + got['sent']:>10}")
    qps = float(results[0][1]["qps"])
    print(f"\ncluster names via kube-dns: {qps:.0f} QPS = {qps / COREDNS_QPS:.2f}x CoreDNS' "
          f"{COREDNS_QPS:,} QPS on 2 vCPUs")
    direct = float(results[2][1]["qps"])
    print(f"one DNS pod direct: {direct:.0f} QPS; via the Service (both pods): "
          f"{qps / direct:.2f}x that")
    return 0


if __name__ == "__main__":
    sys.exit(main())
