"""Local traffic policies on the node that renders them: proxier.node_rules from a typed plan
(as the kube_proxy role calls it, through Plan.from_data), then the rules podnet-kube-proxy
writes from that input. A Service with both policies Local over 2 pods on 3 nodes leaves one
node without a local endpoint: there kube-proxy drops the NodePort and the ClusterIP in filter
("has no local endpoints") and writes no KUBE-SVL chain, where a renderer falling back to the
cluster chain would forward them to another node."""

from __future__ import annotations

from typing import Any

import pytest
from modelkit import deployment, make_plan, service

from podnet import kubeproxy, proxier
from podnet.plan import Plan

LOCAL = "default/api-local"
TEXT = deployment("api", 2) + service(
    "api-local", selector="api",
    body="  type: NodePort\n  externalTrafficPolicy: Local\n  internalTrafficPolicy: Local\n",
    ports="  ports:\n    - {port: 8080, targetPort: http}\n")
CHAINS = kubeproxy.chains("default", "api-local", "", "TCP")


@pytest.fixture(scope="module")
def cluster() -> tuple[Plan, dict[str, str]]:
    """The plan as the role gets it (its data turned back into a Plan), every pod running."""
    plan = Plan.from_data(make_plan(TEXT).data())
    return plan, {p.key: f"10.244.{i + 1}.{i + 10}" for i, p in enumerate(plan.pods)}


def rules_on(cluster: tuple[Plan, dict[str, str]], node: str) -> list[str]:
    """The rules file ``node`` renders from the role's input, all endpoints ready."""
    plan, ips = cluster
    got: dict[str, Any] = proxier.node_rules(plan, ips, node, {})
    return proxier.rules_file(*proxier.from_input(got["input"])).splitlines()


def nodes(cluster: tuple[Plan, dict[str, str]], local: bool) -> list[str]:
    """The nodes with (``local``) or without a pod behind the Service."""
    plan = cluster[0]
    behind = {e.node for e in plan.service(LOCAL).ports[0].endpoints}
    return [n.name for n in plan.nodes if (n.name in behind) == local]


def table(lines: list[str], name: str) -> list[str]:
    """The lines of one table (``*name`` to its COMMIT)."""
    start = lines.index(f"*{name}")
    return lines[start:lines.index("COMMIT", start)]


def mine(lines: list[str]) -> list[str]:
    """The Service's lines outside its endpoints' own KUBE-SEP chains."""
    return [x for x in lines if (LOCAL in x or any(c in x for c in CHAINS.values()))
            and not x.startswith("-A KUBE-SEP-")]


def test_the_fixture_leaves_exactly_one_node_without_a_local_endpoint(
        cluster: tuple[Plan, dict[str, str]]) -> None:
    plan = cluster[0]
    port = plan.service(LOCAL).ports[0]
    assert port.name == "" and len(port.endpoints) == 2, port
    assert len(nodes(cluster, local=False)) == 1 and len(nodes(cluster, local=True)) == 2


def test_a_node_without_local_endpoints_drops_the_nodeport_and_the_cluster_ip(
        cluster: tuple[Plan, dict[str, str]]) -> None:
    plan, _ = cluster
    node = nodes(cluster, local=False)[0]
    svc = plan.service(LOCAL)
    cip, node_port = svc.cluster_ip, svc.ports[0].node_port
    lines = rules_on(cluster, node)
    got = mine(lines)
    drop = f'-m comment --comment "{LOCAL} has no local endpoints"'
    # filter: both policies drop here (not REJECT: the Service has endpoints elsewhere)
    assert [x for x in got if x.endswith("-j DROP")] == [
        f"-A KUBE-SERVICES {drop} -m tcp -p tcp -d {cip} --dport 8080 -j DROP",
        f"-A KUBE-EXTERNAL-SERVICES {drop} -m addrtype --dst-type LOCAL -m tcp -p tcp "
        f"--dport {node_port} -j DROP",
    ], got
    assert got[0] in table(lines, "filter") and got[1] in table(lines, "filter")
    # nat: no local chain at all, and no capture of the ClusterIP
    assert not any(CHAINS["svl"] in x for x in lines), [x for x in lines if CHAINS["svl"] in x]
    assert not any(x.startswith("-A KUBE-SERVICES ") and f"-d {cip} " in x
                   and "-j DROP" not in x for x in lines), got
    # the EXT chain keeps only the short-circuits for pods and the node itself: nothing sends
    # outside traffic on to the cluster chain (which would cross to another node)
    ext = [x for x in lines if x.startswith(f"-A {CHAINS['ext']} ")]
    assert ext == [
        f'-A {CHAINS["ext"]} -m comment --comment "pod traffic for {LOCAL} external '
        f'destinations" -s 10.244.0.0/16 -j {CHAINS["svc"]}',
        f'-A {CHAINS["ext"]} -m comment --comment "masquerade LOCAL traffic for {LOCAL} external '
        'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
        f'-A {CHAINS["ext"]} -m comment --comment "route LOCAL traffic for {LOCAL} external '
        f'destinations" -m addrtype --src-type LOCAL -j {CHAINS["svc"]}',
    ], ext


@pytest.mark.parametrize("which", [0, 1], ids=["first", "second"])
def test_a_node_with_a_local_endpoint_sends_outside_traffic_to_it_alone(
        cluster: tuple[Plan, dict[str, str]], which: int) -> None:
    plan, ips = cluster
    node = nodes(cluster, local=True)[which]
    ep = next(e for e in plan.service(LOCAL).ports[0].endpoints if e.node == node)
    sep = kubeproxy.endpoint_chain("default", "api-local", "", "TCP", ips[ep.pod], ep.port)
    lines = rules_on(cluster, node)
    got = mine(lines)
    assert not any("has no local endpoints" in x for x in got), got
    assert f":{CHAINS['svl']} - [0:0]" in lines
    svl = [x for x in lines if x.startswith(f"-A {CHAINS['svl']} ") and "-j KUBE-SEP-" in x]
    assert svl == [f'-A {CHAINS["svl"]} -m comment --comment "{LOCAL} -> {ips[ep.pod]}:8080" '
                   f"-j {sep}"], svl
    ext = [x for x in lines if x.startswith(f"-A {CHAINS['ext']} ")]
    assert ext[-1] == f"-A {CHAINS['ext']} -j {CHAINS['svl']}", ext
    svc = plan.service(LOCAL)
    assert (f'-A KUBE-SERVICES -m comment --comment "{LOCAL} cluster IP" -m tcp -p tcp -d '
            f"{svc.cluster_ip} --dport 8080 -j {CHAINS['svl']}") in lines
