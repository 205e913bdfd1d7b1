"""Node failure benchmark (issue 18): how long a dead node interrupts each path to a Service,
against Kubernetes' default, and how long the cluster takes to run its pods elsewhere.

Needs the converged demo lab (`make demo`, or `make lab-up converge`); runs as root (it pulls
a lab node's plug), and puts the lab back as it found it (the node booted again, the
allocation record put back, converged).

1. Outage per path, PODNET_BENCH_NODE_RUNS times (default 2): a request every 100 ms (1 s
   timeout each, a new connection each) on four paths at once while the last node's plug is
   pulled (`python -m podnet lab poweroff --hard`):
     - NodePort: the client to a NodePort Service at the first node's address,
     - LoadBalancer: the client to a Cluster-policy LoadBalancer address of the same pods,
     - ClusterIP: a pod on the first node to the Service's ClusterIP,
     - DNS: that pod to the Service by name, looked up for every request with the pod's own
       resolv.conf (the cluster DNS),
   each outage being the time from the plug to the last failed request. Kubernetes takes a
   node's endpoints out after the node-monitor grace period, 40 s by default (and its pods
   out of the cluster after 5 minutes); the ratio is podnet's outage over 40 s.
2. Rescheduling, once, after the last run: a converge (tag workloads) with the node down,
   timed, and then the time until the client has had an answer from every one of the
   Service's pods again (the one that ran on the dead node runs elsewhere now).
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadbalancer import INVENTORY, converge, inventory, on, shell  # noqa: E402

from podnet import access, cluster, kubelet, lab, outage  # noqa: E402
from podnet.plan import Plan, ServicePlan  # noqa: E402

RUNS = int(os.environ.get("PODNET_BENCH_NODE_RUNS", "2"))
KUBERNETES_GRACE = 40.0  # kube-controller-manager's --node-monitor-grace-period default
LEAD, TAIL = 2.0, 6.0  # requests before the plug, and after grace + this much


def lab_setting(name: str) -> str:
    return str(inventory().render(inventory().group("all")[0], (name,))[name])


def service(plan: Plan, victim: str) -> tuple[ServicePlan, ServicePlan | None]:
    """The NodePort Service with pods on the victim and elsewhere, and a Cluster-policy
    LoadBalancer Service of the same pods (None without one)."""
    svc = next(s for s in plan.services if s.type == "NodePort" and s.ports
               and s.external_traffic_policy == "Cluster"
               and victim in {e.node for e in s.ports[0].endpoints}
               and len({e.node for e in s.ports[0].endpoints}) > 1)
    pods = {e.pod for e in svc.ports[0].endpoints}
    balanced = next((s for s in plan.services if s.type == "LoadBalancer" and s.lb_ip
                     and s.ports and s.external_traffic_policy == "Cluster"
                     and not s.load_balancer_source_ranges
                     and {e.pod for e in s.ports[0].endpoints} == pods), None)
    return svc, balanced


def script(address: str, port: int, seconds: float) -> str:
    return shlex.join(["python3", "-c", outage.SCRIPT, "tcp", address, str(port),
                       str(seconds), str(outage.INTERVAL), "1.0"])


def from_pod(plan: Plan, key: str, command: str) -> list[str]:
    """An ssh command line running ``command`` as pod ``key`` would: in its netns, with its
    resolv.conf."""
    namespace, name = key.split("/", 1)
    pod_id = kubelet.pod_id(namespace, name)
    resolv = f"{plan.paths.pod_dir(pod_id)}/resolv.conf"
    line = (f"ip netns exec {pod_id} unshare -m sh -c "
            + shlex.quote(f"mount --bind {shlex.quote(resolv)} /etc/resolv.conf && {command}"))
    conn = access.connection(access.host(inventory(), plan.pod(key).node))
    return [*access.ssh_argv(conn), access.privileged_shell(conn, line)]


def one_run(plan: Plan, victim: str) -> dict[str, float]:
    survivor = plan.nodes[0]
    svc, balanced = service(plan, victim)
    seconds = LEAD + plan.settings.node_grace_period + TAIL
    port = svc.ports[0]
    pod = next(p.key for p in plan.pods_on(survivor.name) if p.owner.startswith("Deployment ")
               and any(c.ports for c in p.containers) and "netexec" in p.containers[0].image)
    name = f"{svc.name}.{svc.namespace}.svc.{plan.settings.cluster_domain}"
    client = shell("client")
    loads = {
        "NodePort": [*client, script(survivor.address, int(port.node_port or 0), seconds)],
        "ClusterIP": from_pod(plan, pod, script(str(svc.cluster_ip), port.port, seconds)),
        "DNS": from_pod(plan, pod, script(name, port.port, seconds)),
    }
    if balanced:
        loads["LoadBalancer"] = [*client, script(str(balanced.lb_ip), balanced.ports[0].port,
                                                 seconds)]
    procs = {what: subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    text=True) for what, argv in loads.items()}
    for proc in procs.values():
        assert proc.stdout is not None
        proc.stdout.readline()  # "start"
    started = time.monotonic()
    time.sleep(LEAD)
    cut = time.monotonic() - started
    lab.power_off(lab_setting("lab_name"), Path(lab_setting("lab_state_dir")), victim,
                  hard=True)
    got = {}
    for what, proc in procs.items():
        text, _ = proc.communicate(timeout=seconds + 60)
        got[what] = outage.last_failure(text, cut) or 0.0
        print(f"    {what:<13} {outage.summary(text, end=seconds)}", flush=True)
    return got


def power_on(victim: str) -> None:
    subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(INVENTORY),
                    str(ROOT / "playbooks" / "lab-up.yml")], check=True,
                   capture_output=True, timeout=600)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            on(victim, "true")
            return
        except SystemExit:
            time.sleep(2)
    raise SystemExit(f"bench: {victim} did not come back")


def reschedule(plan: Plan, victim: str) -> tuple[float, float]:
    """Converge with ``victim`` down: (the converge's seconds, then seconds until every pod
    of the Service has answered the client)."""
    took = converge(INVENTORY / "manifests", "workloads")
    svc, _ = service(plan, victim)
    names = {plan.pod(e.pod).host_name for e in svc.ports[0].endpoints}
    url = f"http://{plan.nodes[0].address}:{svc.ports[0].node_port}/hostname"
    started = time.monotonic()
    seen: set[str] = set()
    while not names <= seen:
        if time.monotonic() - started > 120:
            raise SystemExit(f"bench: {sorted(names - seen)} did not answer")
        seen |= set(on("client", f"for i in 1 2 3 4 5 6; do curl -s -m 2 {url}; echo; "
                                 "done").split())
    return took, time.monotonic() - started


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (it pulls a lab node's plug)")
    plan = cluster.load(INVENTORY)
    victim = plan.nodes[-1].name
    record = cluster.record_path({"podnet_state_dir": lab_setting("podnet_state_dir")})
    saved = record.read_bytes()
    runs: list[dict[str, float]] = []
    moved: tuple[float, float] | None = None
    try:
        for i in range(RUNS):
            print(f"  run {i + 1}: {victim}'s plug pulled under load "
                  f"(grace period {plan.settings.node_grace_period} s)", flush=True)
            runs.append(one_run(plan, victim))
            if i + 1 < RUNS:
                power_on(victim)
                time.sleep(plan.settings.node_grace_period)  # its peers take it back
        moved = reschedule(plan, victim)
    finally:
        power_on(victim)
        record.write_bytes(saved)
        converge(INVENTORY / "manifests", "workloads")
    print(f"  {'path':<13} {'median':>8} {'worst':>8}   worst / Kubernetes' "
          f"{KUBERNETES_GRACE:.0f} s")
    for what in runs[0]:
        values = [r[what] for r in runs]
        print(f"  {what:<13} {statistics.median(values):7.1f}s {max(values):7.1f}s   "
              f"{max(values) / KUBERNETES_GRACE:.2f}")
    if moved:
        print(f"  rescheduled: a converge with {victim} down took {moved[0]:.1f} s; every pod "
              f"of the Service answered {moved[1]:.1f} s later")
    print(json.dumps({"runs": runs, "reschedule": moved}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
