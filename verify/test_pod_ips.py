"""Every pod has its own unique IP, from its node's pod CIDR, and every record of it agrees
(the article's second principle)."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter

import pytest
from conftest import plan, pod_id, run, running

pytestmark = pytest.mark.principle("unique pod IP")


@pytest.mark.principle("kubelet + CNI")
def test_every_planned_pod_runs_on_its_node(pod: str) -> None:
    assert pod in running(), f"{pod} is not running; the nodes report {sorted(running())}"
    assert running()[pod]["reported_by"] == plan().pod(pod).node, running()[pod]
    assert running()[pod]["ip"], running()[pod]


@pytest.mark.quick
def test_no_two_pods_share_an_ip() -> None:
    counts = Counter(p["ip"] for p in running().values())
    assert [ip for ip, n in counts.items() if n > 1] == [], running()


def test_pod_ip_is_from_its_nodes_pod_cidr_or_the_one_it_keeps(pod: str) -> None:
    """A pod that keeps its address on any node has the one the cluster assigned it, from the
    stable block; any other pod one from its node's pod CIDR (host-local)."""
    planned = plan().pod(pod)
    ip = ipaddress.ip_address(running()[pod]["ip"])
    if planned.stable_ip:
        assert str(ip) == planned.stable_ip, (running()[pod], planned.stable_ip)
        block = plan().settings.stable_pod_cidr
        assert block and ip in block, (ip, block)
    else:
        cidr = ipaddress.ip_network(plan().node(planned.node).pod_cidr)
        assert ip in cidr, (running()[pod], cidr)


@pytest.mark.principle("kubelet + CNI")
def test_fact_cache_and_interface_agree(pod: str) -> None:
    node = plan().pod(pod).node
    fact = run(node, f"{plan().paths.facts_dir}/podnet.fact")
    mine = [p for p in json.loads(fact.stdout)["pods"] if f"{p['namespace']}/{p['name']}" == pod]
    assert len(mine) == 1, fact
    ip = mine[0]["ip"]
    cache = run(node, "cat", plan().paths.cni_result(mine[0]['container_id']))
    cached = json.loads(cache.stdout)["result"]["ips"][0]["address"].split("/")[0]
    eth0 = run(node, "ip", "-n", pod_id(pod), "-4", "-o", "addr", "show", "dev", "eth0")
    assert cached == ip, cache
    assert f" {ip}/" in eth0.stdout, eth0


@pytest.mark.principle("kubelet + CNI")
def test_cni_check_passes(pod: str) -> None:
    check = run(plan().pod(pod).node, plan().paths.cni_runtime, "check", pod_id(pod))
    assert check.rc == 0 and "CHECK passed" in check.stdout, check


@pytest.mark.principle("kubelet + CNI")
@pytest.mark.quick
def test_node_holds_exactly_its_planned_pods(node: str) -> None:
    want = sorted(pod_id(p.key) for p in plan().pods_on(node))
    folders = run(node, "ls", plan().paths.pods_dir)
    namespaces = run(node, "ip", "netns", "list")
    # host-local's reservations (from the node's pod CIDR) and podnet-ipam's (stable addresses)
    reserved = run(node, "ls", plan().paths.cni_reservations)
    stable = run(node, "sh", "-c", f"ls {plan().paths.stable_reservations} 2>/dev/null || true")
    cidr = ipaddress.ip_network(plan().node(node).pod_cidr)
    addresses = [name for name in reserved.stdout.split() if _is_ip(name)]
    assert sorted(folders.stdout.split()) == want, folders
    assert sorted(line.split()[0] for line in namespaces.stdout.splitlines()) == want, namespaces
    bridged = [p for p in plan().pods_on(node) if not p.stable_ip]
    assert len(addresses) == len(bridged), reserved
    assert all(ipaddress.ip_address(a) in cidr for a in addresses), reserved
    kept = sorted(p.stable_ip for p in plan().stable_pods_on(node) if p.stable_ip)
    assert sorted(name for name in stable.stdout.split() if _is_ip(name)) == kept, stable


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
