"""Services as endpoints come and go: rules repaired after a flush, other people's rules kept,
a scaled Deployment changing only its Services' rules, and a UDP Service following its endpoint
to another node. These change the lab and put it back; they run after the other suites. The
Services and Deployments they change come from the plan by shape (targets.py), and each edit of
the manifests is derived from them."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import targets
from conftest import (
    assert_restored,
    converged,
    converged_back,
    edited,
    in_pod,
    iptables_rules,
    lab_state,
    manifests_dir,
    observed,
    plan,
    plan_of,
    pod_id,
    rule_differences,
    run,
    saved_record,
    target,
)

from podnet import kubeproxy
from podnet.plan import ServicePlan

pytestmark = pytest.mark.principle("kube-proxy")

FOREIGN_NAT = ["POSTROUTING", "-s", "203.0.113.0/24", "-m", "comment", "--comment",
               "podnet-verify-foreign", "-j", "RETURN"]


def rules(node: str) -> set[str]:
    save = run(node, "iptables-save")
    assert save.rc == 0, save
    return {re.sub(r"\[\d+:\d+\]", "", line) for line in save.stdout.splitlines()
            if line and not line.startswith("#")}


def svc_jumps(svc: ServicePlan, lines: set[str]) -> list[str]:
    """The endpoint chains the KUBE-SVC chain of ``svc``'s first port jumps to, one per rule."""
    port = svc.ports[0]
    chain = kubeproxy.chains(svc.namespace, svc.name, port.name, port.protocol)["svc"]
    return [line.rsplit(" -j ", 1)[1] for line in lines
            if line.startswith(f"-A {chain} ") and " -j KUBE-SEP-" in line]


def endpoint_chains(services: list[ServicePlan], ips: set[str]) -> set[str]:
    """The KUBE-SEP chains the Deployment's Services may have for pods at ``ips`` (every pod of
    a Deployment serves each port on the same target port, so a new pod's port is an old
    one's)."""
    return {kubeproxy.endpoint_chain(svc.namespace, svc.name, port.name, port.protocol, ip,
                                     e.port)
            for svc in services for port in svc.ports for e in port.endpoints[:1] for ip in ips}


def test_flushed_rules_are_put_back() -> None:
    """A flush of nat and filter with the canary stopped breaks Services; the canary started
    again puts back every rule of every table as it was (iptables-save without counters,
    chain by chain in order), not only enough of them for one curl to work."""
    node = plan().nodes[0].name
    web = target(targets.http_service)
    url = f"http://{web.cluster_ip}:{web.ports[0].port}/hostname"
    assert run(node, "curl", "-s", "--max-time", "3", url).rc == 0
    lab = lab_state()
    before = iptables_rules(node)
    stop = run(node, "systemctl", "stop", "podnet-iptables-canary.service")  # no repair yet
    try:
        assert stop.rc == 0, stop
        flush = run(node, "sh", "-c", "iptables -t nat -F && iptables -t filter -F")
        assert flush.rc == 0, flush
        assert run(node, "curl", "-s", "--max-time", "2", url).rc != 0  # really broken now
        start = run(node, "systemctl", "start", "podnet-iptables-canary.service")
        assert start.rc == 0, start
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if iptables_rules(node) == before:
                break
            time.sleep(1)
        else:
            log = run(node, "journalctl", "-u", "podnet-iptables-canary", "-n", "20")
            raise AssertionError(
                f"the canary did not put {node}'s rules back within 40 s; what differs:\n  "
                + "\n  ".join(rule_differences(before, iptables_rules(node))) + f"{log}")
        assert run(node, "curl", "-s", "--max-time", "2", url).rc == 0
        assert run(node, "iptables", "-t", "nat", "-C", "PREROUTING", "-m", "comment",
                   "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES").rc == 0
    finally:
        # whatever happened above: the canary runs, and podnet's rules are applied again
        run(node, "systemctl", "start", "podnet-iptables-canary.service")
        paths = plan().paths
        run(node, f"{paths.bin_dir}/podnet-iptables", "apply", paths.iptables_dir)
        assert_restored(lab, f"flushing {node}'s rules")


def test_scaling_changes_only_its_services_rules_and_keeps_foreign_ones(tmp_path: Path) -> None:
    scaling = target(targets.scaling)
    svc, (namespace, name) = scaling.service, scaling.deployment
    node = plan().nodes[0].name
    added = run(node, "iptables", "-t", "nat", "-A", *FOREIGN_NAT)
    assert added.rc == 0, added
    try:
        before = rules(node)
        before_ips = {k: v["ip"] for k, v in observed().items() if v.get("ip")}
        assert len(svc_jumps(svc, before)) == len(svc.ports[0].endpoints)
        replicas = len(scaling.pods) + 1
        scaled = edited(tmp_path, "Deployment", namespace, name,
                        lambda d: d["spec"].__setitem__("replicas", replicas))
        pods_now = [p.key for p in plan_of(scaled).pods
                    if targets.owner_deployment(p) == scaling.deployment]
        converged(scaled, "workloads")
        after = rules(node)
        services = scaling.services
        mine = set()
        for service in services:
            for port in service.ports:
                mine |= set(kubeproxy.chains(service.namespace, service.name, port.name,
                                             port.protocol).values())
                mine.add(f"{service.key}:{port.name}")
        changed = before ^ after
        assert changed, f"scaling {namespace}/{name} changed no rule"
        others = [line for line in changed if not any(m in line for m in mine)
                  and "KUBE-SEP-" not in line]
        assert others == [], others
        for line in (line for line in changed if "KUBE-SEP-" in line and line.startswith("-A")):
            assert any(f"{s.key}:" in line for s in services), line
        # every endpoint chain a changed line names (its declaration too) is one of the
        # Deployment's Services' endpoints, before or after: nothing else was touched
        now = {k: v["ip"] for k, v in observed().items() if v.get("ip")}
        ips_now = {ip for k, ip in now.items() if k in pods_now}
        assert len(ips_now) == replicas, now
        seps = endpoint_chains(services, ips_now | {
            ip for k, ip in before_ips.items() if k in scaling.pods})
        foreign = [line for line in changed
                   if not set(re.findall(r"KUBE-SEP-[A-Z0-9]+", line)) <= seps]
        assert foreign == [], foreign
        # the Service's chain jumps to exactly its replicas + 1 endpoints now (jumps, not chain
        # declarations)
        port = svc.ports[0]
        assert sorted(svc_jumps(svc, after)) == sorted(
            kubeproxy.endpoint_chain(svc.namespace, svc.name, port.name, port.protocol, ip,
                                     port.endpoints[0].port) for ip in ips_now), \
            svc_jumps(svc, after)
        assert any("podnet-verify-foreign" in line for line in after), "foreign rule lost"
    finally:
        converged(manifests_dir(), "workloads")
        still = rules(node)
        run(node, "iptables", "-t", "nat", "-D", *FOREIGN_NAT)
    assert any("podnet-verify-foreign" in line for line in still), "foreign rule lost"
    # back to the replicas of the manifests: the new endpoint's chains are gone, the rest as
    # before
    assert still == before, sorted(still ^ before)


CLIENT = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", 40404))
s.settimeout(0.5)
out = open(sys.argv[3], "a", buffering=1)
while True:
    s.sendto(b"hostname", (sys.argv[1], int(sys.argv[2])))
    try:
        out.write(f"{time.time():.1f} {s.recvfrom(999)[0].decode()}\\n")
    except OSError:
        out.write(f"{time.time():.1f} -\\n")
    time.sleep(0.3)
"""


def test_udp_service_follows_its_endpoint_to_another_node(tmp_path: Path) -> None:
    follow = target(targets.udp_follow)
    echo, udp, client = follow.service, follow.port, follow.client
    namespace, deployment = follow.deployment
    # the Deployment's pods: as they are, and (once the edit is made) after the move
    owned = {p.key for p in plan().pods if targets.owner_deployment(p) == follow.deployment}
    log = f"/run/podnet-verify-udp-{pod_id(client.key)}.log"
    unit = "podnet-verify-udp-client"
    before = lab_state()
    record = saved_record()
    run(client.node, "rm", "-f", log)
    started = run(client.node, "systemd-run", "--unit", unit, "--collect",
                  f"--property=NetworkNamespacePath={plan().paths.netns(pod_id(client.key))}",
                  "python3", "-c", CLIENT, str(echo.cluster_ip), str(udp.port), log)
    assert started.rc == 0, started
    try:
        time.sleep(3)
        first = run(client.node, "tail", "-n", "1", log).stdout.split()
        assert len(first) == 2 and first[1] != "-", first
        serving = first[1]  # the pod the client's conntrack flow is pinned to
        serving_node = next(p.node for p in plan().pods if p.host_name == serving)
        to_node = next(n.name for n in plan().nodes if n.name != serving_node)
        moved_manifests = edited(tmp_path, "Deployment", namespace, deployment,
                                 lambda d: d["spec"]["template"]["spec"].__setitem__(
                                     "nodeName", to_node))
        after = {p.key for p in plan_of(moved_manifests).pods
                 if targets.owner_deployment(p) == follow.deployment}
        converged(moved_manifests, "workloads")
        done_at = time.time()
        time.sleep(8)
        lines = run(client.node, "cat", log).stdout.splitlines()
        late = [line.split()[1] for line in lines if float(line.split()[0]) > done_at + 3]
        assert late and all(name not in ("-", serving) for name in late[-5:]), lines[-20:]
        now = observed()
        moved = [k for k in now if k in owned | after]
        assert moved and all(now[k]["node"] == to_node for k in moved), now
    finally:
        run(client.node, "systemctl", "stop", unit)
        run(client.node, "rm", "-f", log)
        converged_back(record)
        # the Deployment's pods are back on their node, with new IPs (host-local gives the
        # next free one)
        assert_restored(before, f"moving {namespace}/{deployment} to another node and back",
                        moved=owned)
    assert in_pod(client.key, "true").rc == 0
