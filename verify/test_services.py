"""Services: a stable virtual IP that kube-proxy's rules on every node spread over the pods
behind it (the article's third principle), NodePort and the traffic policies. LoadBalancer
addresses are proved from outside in test_loadbalancer.py. Each test takes its
Service from the plan by the shape it needs (targets.py)."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import targets
from conftest import Evidence, in_pod, outside_client, params, plan, run, selected, target
from targets import CHI_SQUARE_LIMIT

from podnet import kubeproxy
from podnet.backends import remote_source

pytestmark = pytest.mark.principle("service abstraction")

def port_of(key: str, name: str, protocol: str):  # type: ignore[no-untyped-def]
    return next(p for p in plan().service(key).ports if p.name == name and p.protocol == protocol)


def backends(key: str) -> set[str]:
    return {plan().pod(e.pod).host_name for p in plan().service(key).ports for e in p.endpoints}


def ask(where: str, ip: str, port: int, protocol: str, request: str = "hostname") -> Evidence:
    """From a node (name) or a pod (ns/name): one request to ip:port, answered by netexec
    (HTTP /<request>, or a UDP datagram) or, for DNS, by a DNS server (dig)."""
    if port == 53:
        argv = ["dig", f"@{ip}", "-p", "53", "+time=2", "+tries=1", "kubernetes.default"]
        if protocol == "TCP":
            argv.append("+tcp")
    elif protocol == "UDP":
        argv = ["python3", "-c", "import socket, sys; s = socket.socket(socket.AF_INET, "
                "socket.SOCK_DGRAM); s.settimeout(3); s.sendto(sys.argv[3].encode(), "
                "(sys.argv[1], int(sys.argv[2]))); print(s.recvfrom(999)[0].decode())",
                ip, str(port), request]
    else:
        argv = ["curl", "-s", "--max-time", "5", f"http://{ip}:{port}/{request}"]
    return in_pod(where, *argv) if "/" in where else run(where, *argv)


def answered(evidence: Evidence, key: str, port: int) -> bool:
    if port == 53:
        return evidence.rc == 0 and "status:" in evidence.stdout
    return evidence.rc == 0 and evidence.stdout.strip() in backends(key)


CLIENTS = [n.name for n in plan().nodes] + [p.key for p in plan().pods]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(("service", "port_name", "protocol"), [
    pytest.param(s, p, t, id=f"{s}:{p}/{t}") for s, p, t in targets.cluster_ip_ports(plan())
] or [pytest.param(None, None, None, id="none", marks=pytest.mark.skip(
    reason=str(targets.NotInPlan(targets.CLUSTER_IP_PORT))))])
def test_every_client_reaches_every_cluster_ip(client: str, service: str, port_name: str,
                                               protocol: str) -> None:
    port = port_of(service, port_name, protocol).port
    got = ask(client, str(plan().service(service).cluster_ip), port, protocol)
    assert answered(got, service, port), got


def many(where: str, ip: str, port: int, count: int, request: str = "hostname") -> list[str]:
    """``count`` new connections from one pod, each answered by some endpoint."""
    script = (f'for i in $(seq {count}); do curl -s --max-time 3 '
              f'"http://{ip}:{port}/{request}"; echo; done')
    got = in_pod(where, "sh", "-c", script)
    assert got.rc == 0, got
    return [line.strip() for line in got.stdout.splitlines()]


@pytest.mark.quick
def test_connections_are_spread_uniformly_over_the_endpoints() -> None:
    balanced = target(targets.balanced_service)
    svc, client = balanced.service, balanced.client
    answers = many(client, str(svc.cluster_ip), svc.ports[0].port, 300)
    counts = Counter(answers)
    want = backends(svc.key)
    assert set(counts) == want, counts
    expected = len(answers) / len(want)
    chi2 = sum((n - expected) ** 2 / expected for n in counts.values())
    limit = CHI_SQUARE_LIMIT[len(want) - 1]
    print(f"balancing over {len(want)} endpoints, {len(answers)} connections: {dict(counts)}; "
          f"chi-square {chi2:.2f} (limit {limit} at p=0.001)")
    assert chi2 < limit, (counts, chi2)


def test_client_ip_affinity_keeps_a_client_on_one_endpoint() -> None:
    svc = target(targets.affinity_service)
    assert svc.session_affinity_timeout
    seen = {}
    for client in (plan().pods[0].key, plan().pods[-1].key):
        answers = set(many(client, str(svc.cluster_ip), svc.ports[0].port, 30))
        assert len(answers) == 1 and answers <= backends(svc.key), (client, answers)
        seen[client] = answers
    print(f"affinity: {seen}")


def test_service_without_endpoints_is_refused_at_once() -> None:
    svc = target(targets.service_without_endpoints)
    assert not svc.ports[0].endpoints
    for where in (plan().nodes[0].name, plan().pods[0].key):
        started = time.monotonic()
        got = ask(where, str(svc.cluster_ip), svc.ports[0].port, "TCP")
        elapsed = time.monotonic() - started
        assert got.rc == 7, got  # curl: connection refused (REJECT), not a timeout (28)
        assert elapsed < 3, elapsed  # includes the SSH round trip; the refusal itself is instant


def test_pod_reaches_itself_through_its_service() -> None:
    # internalTrafficPolicy: Local sends a pod that is its Service's only endpoint on its node
    # to itself (hairpin)
    svc = target(targets.hairpin_service)
    for pod in [plan().pod(key) for key in targets.alone_on_their_node(svc)]:
        got = ask(pod.key, str(svc.cluster_ip), svc.ports[0].port, "TCP")
        assert got.stdout.strip() == pod.host_name, got


def dropped(node: str, service: str, policy: str) -> int | None:
    """Packets the node's filter rule "<service port> has no local endpoints" has dropped so
    far (kube-proxy's DROP where a Local policy has no endpoint on the node: KUBE-SERVICES for
    the ClusterIP, KUBE-EXTERNAL-SERVICES for the NodePort); None when the node has no such
    rule. The counter tells a drop from a forward that fails on its way back: both time out."""
    svc = plan().service(service)
    port = svc.ports[0]
    chain, dport = (("KUBE-SERVICES", port.port) if policy == "internal"
                    else ("KUBE-EXTERNAL-SERVICES", port.node_port))
    name = kubeproxy.service_port_name(svc.namespace, svc.name, port.name)
    save = run(node, "iptables-save", "-c", "-t", "filter")
    assert save.rc == 0, save
    rules = [line for line in save.stdout.splitlines()
             if f" -A {chain} " in line and f'"{name} has no local endpoints"' in line
             and f"--dport {dport} " in line and line.endswith(" -j DROP")]
    assert len(rules) <= 1, rules
    return int(rules[0][1:].split(":", 1)[0]) if rules else None


@pytest.mark.parametrize("policy", ["internal", "external"])
def test_local_policy_cases_take_both_branches(policy: str) -> None:
    """The Local-policy tests below prove the drop branch too: some Service with that policy
    has a node without a local endpoint (else a renderer falling back to the cluster chain
    there would pass them all), and some node with one."""
    branches = target(lambda plan: targets.local_branches(plan, policy))
    assert branches["drops"] >= 1 and branches["answers"] >= 1, (policy, branches)


def local_params(policy: str) -> list[object]:
    return [pytest.param(svc, node, id=f"{svc}@{node}:{branch}")
            for svc, node, branch in targets.local_cases(plan(), policy)] or [
        pytest.param(None, None, id="none", marks=pytest.mark.skip(
            reason=str(targets.NotInPlan(targets.LOCAL[policy]))))]


@pytest.mark.parametrize(("service", "on_node"), local_params("internal"))
def test_internal_local_policy_answers_from_the_same_node(service: str, on_node: str) -> None:
    node = on_node  # not the fixture "node": these cases are (Service, node) pairs
    svc = plan().service(service)
    local = {plan().pod(e.pod).host_name for e in svc.ports[0].endpoints
             if e.node == node}
    client = next(p.key for p in plan().pods_on(node))
    before = dropped(node, service, "internal")
    # a drop costs a full timeout per request: one shows it as well as ten
    got = set(many(client, str(svc.cluster_ip), svc.ports[0].port, 10 if local else 1))
    if local:
        assert got == local, (node, got)
        assert before is None, f"{node} has a local endpoint of {service} and drops it"
    else:
        assert got == {""}, (node, got)  # dropped: no local endpoint
        # dropped as kube-proxy does (a timeout, curl 28), not refused (REJECT, curl 7) nor
        # answered from another node, and by the "has no local endpoints" rule
        once = ask(client, str(svc.cluster_ip), svc.ports[0].port, "TCP")
        assert once.rc == 28 and not once.stdout.strip(), once
        after = dropped(node, service, "internal")
        assert before is not None and after is not None and after > before, (node, before,
                                                                              after)


@pytest.mark.quick
@pytest.mark.principle("NodePort")
@pytest.mark.parametrize("service", params(
    [s.key for s in selected(targets.node_port_services) or []], targets.NODE_PORT))
def test_node_port_answers_on_every_node_from_outside(service: str, node: str) -> None:
    svc = plan().service(service)
    client = outside_client().name
    address = plan().node(node).address
    got = run(client, "curl", "-s", "--max-time", "5",
              f"http://{address}:{svc.ports[0].node_port}/clientip")
    assert got.rc == 0, got
    # Cluster policy: the pod sees the node the client talked to (SNAT), so the reply goes
    # back through that node; the TCP connection only completes if it does. The source is the
    # address of the interface toward the pod: cni0's (the gateway) for a pod on the node, the
    # way to the other nodes' (the node's own, or its VXLAN address) for a pod elsewhere
    seen = got.stdout.strip().rsplit(":", 1)[0]
    remote = remote_source(plan(), node)
    pod_nodes = {e.node for e in svc.ports[0].endpoints}
    if node in pod_nodes:
        assert seen in {remote, plan().node(node).gateway}, got
    else:
        assert seen == remote, got


@pytest.mark.principle("NodePort")
@pytest.mark.parametrize(("service", "on_node"), local_params("external"))
def test_local_policy_keeps_the_client_ip_and_the_node(service: str, on_node: str) -> None:
    node = on_node
    svc = plan().service(service)
    assert svc.external_traffic_policy == "Local"
    client = outside_client()
    address = plan().node(node).address
    port = svc.ports[0].node_port
    local = {plan().pod(e.pod).host_name for e in svc.ports[0].endpoints if e.node == node}
    before = dropped(node, service, "external")
    if local:
        assert before is None, f"{node} has a local endpoint of {service} and drops it"
    for _ in range(5 if local else 1):  # a drop costs a full timeout: once shows it
        who = run(client.name, "curl", "-s", "--max-time", "3", f"http://{address}:{port}/hostname")
        seen = run(client.name, "curl", "-s", "--max-time", "3", f"http://{address}:{port}/clientip")
        if local:
            assert who.stdout.strip() in local, who  # never crosses nodes
            assert seen.stdout.strip().rsplit(":", 1)[0] == client.address, seen
        else:
            assert who.rc != 0, who  # dropped where there is no local endpoint
            # as kube-proxy's filter DROP ("has no local endpoints"): a timeout (curl 28),
            # not a refusal (7), and no answer from a pod on another node
            assert who.rc == 28 and not who.stdout.strip(), who
            assert seen.rc == 28 and not seen.stdout.strip(), seen
    if not local:
        after = dropped(node, service, "external")
        assert before is not None and after is not None and after >= before + 2, (node, before,
                                                                                  after)
