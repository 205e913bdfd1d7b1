"""podnet's kube-proxy rules equal kube-proxy's own expected dumps (proxier_test.go), compared
the way kube-proxy's tests compare them (goldenkit.sort_dump), and what that sorting cannot
see (the place of the must-be-last rule) asserted on the raw render."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from goldenkit import NODEPORTS_LAST, sort_dump
from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.proxier import Endpoint, Options, ServicePort, render

GOLDEN = Path(__file__).parent / "golden"

# TestOverallIPTablesRules: its fake proxier has node IP 192.168.0.2, pods in 10.0.0.0/8,
# localhost NodePorts and nfacct counters on, and an iptables without --random-fully.
OVERALL_OPTIONS = Options(node_name="test-hostname", node_ip="192.168.0.2",
                          cluster_cidr="10.0.0.0/8", random_fully=False,
                          localhost_nodeports=True, nfacct=True)


def tcp80(ns: str, name: str, ip: str, **kw: object) -> ServicePort:
    return ServicePort(namespace=ns, name=name, port_name="p80", protocol="TCP", cluster_ip=ip,
                       port=80, **kw)  # type: ignore[arg-type]


OVERALL = [
    # a ClusterIP Service
    tcp80("ns1", "svc1", "172.30.0.41", endpoints=(Endpoint("10.180.0.1", 80),)),
    # a LoadBalancer with Local traffic policy whose only endpoint is on another node
    tcp80("ns2", "svc2", "172.30.0.42", endpoints=(Endpoint("10.180.0.2", 80),),
          node_port=3001, lb_ips=("1.2.3.4",), external_ips=("192.168.99.22",),
          health_check_node_port=30000, external_local=True),
    # a NodePort Service
    tcp80("ns3", "svc3", "172.30.0.43", endpoints=(Endpoint("10.180.0.3", 80),),
          node_port=3003),
    # a Service with an external IP and two endpoints, one of them on this node
    tcp80("ns4", "svc4", "172.30.0.44", external_ips=("192.168.99.33",),
          endpoints=(Endpoint("10.180.0.4", 80), Endpoint("10.180.0.5", 80, "test-hostname"))),
    # a LoadBalancer with Cluster policy, source ranges and ClientIP affinity
    tcp80("ns5", "svc5", "172.30.0.45", endpoints=(Endpoint("10.180.0.3", 80),),
          node_port=3002, lb_ips=("5.6.7.8",), source_ranges=("203.0.113.0/25",),
          affinity_timeout=10800),
    # a ClusterIP Service without endpoints
    tcp80("ns6", "svc6", "172.30.0.46"),
]


def test_overall_rules_equal_kube_proxys() -> None:
    expected = (GOLDEN / "kube-proxy-overall.rules").read_text()
    assert sort_dump(render(OVERALL, OVERALL_OPTIONS)) == sort_dump(expected)


@pytest.mark.parametrize("options", [OVERALL_OPTIONS, Options(
    node_name="test-hostname", node_ip="192.168.0.2", cluster_cidr="10.0.0.0/8")],
    ids=["kube-proxy-test-options", "podnet-defaults"])
def test_the_nodeports_jump_is_the_last_rule_of_kube_services(options: Options) -> None:
    # sort_dump puts it last whatever its place, so the golden comparisons cannot see it: a
    # NodePort rule placed after it would never be reached for a ClusterIP on a node address
    nat = render(OVERALL, options).split("*nat\n", 1)[1]
    services = [line for line in nat.splitlines() if line.startswith("-A KUBE-SERVICES ")]
    assert len(services) > 1, services
    assert NODEPORTS_LAST in services[-1], services[-1]
    assert services[-1].endswith("-j KUBE-NODEPORTS"), services[-1]
    assert not any(NODEPORTS_LAST in line for line in services[:-1]), services


@pytest.mark.parametrize(("dump", "message"), [
    ("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SVC-X -j ACCEPT\nCOMMIT\n",
     "table nat: rule of a chain the table does not declare: '-A KUBE-SVC-X -j ACCEPT'"),
    ("*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n-A KUBE-SERVICES -j ACCEPT\n",
     "line 4: '-A KUBE-SERVICES -j ACCEPT' is outside a table"),
], ids=["undeclared-chain", "outside-a-table"])
def test_sort_dump_refuses_rules_it_cannot_place(dump: str, message: str) -> None:
    # kube-proxy's parser raises here; dropping such rules would hide them from the comparison
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        sort_dump(dump)


def test_bad_ips_case_with_its_addresses_normalised() -> None:
    # TestBadIPs: kube-proxy rewrites "172.30.0.041" and the like; podnet's model refuses
    # such addresses before rules are made, so the input here is already normal.
    svc = tcp80("ns1", "svc1", "172.30.0.41", endpoints=(Endpoint("10.180.0.1", 80),),
                node_port=3001, lb_ips=("1.2.3.4",), external_ips=("192.168.99.22",),
                source_ranges=("203.0.113.0/25",))
    expected = (GOLDEN / "kube-proxy-bad-ips.rules").read_text()
    assert sort_dump(render([svc], OVERALL_OPTIONS)) == sort_dump(expected)


def test_two_cluster_ip_services_first_sync() -> None:
    # TestSyncProxyRulesRepeated, its first full sync
    services = [
        tcp80("ns1", "svc1", "172.30.0.41", endpoints=(Endpoint("10.0.1.1", 80),)),
        ServicePort(namespace="ns2", name="svc2", port_name="p8080", protocol="TCP",
                    cluster_ip="172.30.0.42", port=8080,
                    endpoints=(Endpoint("10.0.2.1", 8080),)),
    ]
    expected = (GOLDEN / "kube-proxy-repeated.rules").read_text()
    assert sort_dump(render(services, OVERALL_OPTIONS)) == sort_dump(expected)


def test_podnet_defaults_differ_only_where_documented() -> None:
    plain = render(OVERALL, Options(node_name="test-hostname", node_ip="192.168.0.2",
                                    cluster_cidr="10.0.0.0/8"))
    assert "--random-fully" in plain and "nfacct" not in plain and "KUBE-FIREWALL" not in plain
    assert ('-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS' in plain)
    assert render(OVERALL, OVERALL_OPTIONS) == render(list(reversed(OVERALL)), OVERALL_OPTIONS)


def test_probabilities_are_kube_proxys() -> None:
    eps = tuple(Endpoint(f"10.0.0.{i}", 80) for i in range(1, 5))
    rules = render([tcp80("a", "b", "10.96.0.5", endpoints=eps)], OVERALL_OPTIONS)
    probabilities = [line.split("--probability ")[1].split()[0]
                     for line in rules.splitlines() if "--probability" in line]
    assert probabilities == ["0.2500000000", "0.3333333333", "0.5000000000"]


TARGETS = {"ACCEPT", "DROP", "REJECT", "RETURN", "DNAT", "MARK", "MASQUERADE"}


@st.composite
def service_ports(draw: st.DrawFn) -> ServicePort:
    n = draw(st.integers(0, 4))
    eps = tuple(Endpoint(f"10.0.1.{i + 1}", 8080, draw(st.sampled_from(["me", "other", None])),
                         draw(st.booleans()) or i > 0) for i in range(n))
    node_port = draw(st.sampled_from([0, 30001]))
    lb = draw(st.sampled_from([(), ("192.168.56.240",)]))
    return ServicePort(
        namespace="ns", name=draw(st.sampled_from(["a", "b", "c"])), port_name="p",
        protocol=draw(st.sampled_from(["TCP", "UDP"])), cluster_ip="10.96.0.5", port=80,
        endpoints=eps, node_port=node_port, lb_ips=lb,
        source_ranges=draw(st.sampled_from([(), ("192.168.56.0/24",)])) if lb else (),
        external_ips=draw(st.sampled_from([(), ("192.168.56.99",)])),
        health_check_node_port=31000 if node_port and draw(st.booleans()) else 0,
        affinity_timeout=draw(st.sampled_from([None, 600])),
        external_local=draw(st.booleans()), internal_local=draw(st.booleans()))


@settings(max_examples=300, deadline=None)
@given(st.lists(service_ports(), max_size=3, unique_by=lambda s: (s.name, s.protocol)))
def test_every_jump_goes_to_a_declared_chain(services: list[ServicePort]) -> None:
    text = render(services, Options(node_name="me", node_ip="192.168.56.11",
                                    cluster_cidr="10.0.0.0/8"))
    for table in text.split("COMMIT\n")[:-1]:
        declared = [line[1:].split()[0] for line in table.splitlines() if line.startswith(":")]
        assert len(declared) == len(set(declared)), declared
        for line in table.splitlines():
            if line.startswith("-A") and " -j " in line:
                target = line.split(" -j ")[1].split()[0]
                assert target in TARGETS or target in declared, (line, declared)
            if line.startswith("-A"):
                assert line.split()[1] in declared, line


def test_local_policies_both_ways_keep_the_cluster_chain_for_short_circuits() -> None:
    # kube-proxy's UsesClusterEndpoints: an externally reachable Service keeps KUBE-SVC even
    # with internal and external policy Local, for traffic from pods and the node itself
    svc = tcp80("ns", "both-local", "10.96.0.7", node_port=30007, internal_local=True,
                external_local=True, endpoints=(Endpoint("10.0.1.1", 80, "me"),
                                               Endpoint("10.0.1.2", 80, "other")))
    text = render([svc], Options(node_name="me", node_ip="192.168.56.11",
                                 cluster_cidr="10.0.0.0/8"))
    chains = kubeproxy_chains("ns", "both-local")
    assert f":{chains['svc']} - [0:0]" in text and f":{chains['svl']} - [0:0]" in text
    assert "-A KUBE-SERVICES -m comment --comment \"ns/both-local:p80 cluster IP\"" in text
    assert f"-j {chains['svl']}" in text.split("cluster IP\" -m tcp")[1].splitlines()[0]


def kubeproxy_chains(ns: str, name: str) -> dict[str, str]:
    from podnet import kubeproxy

    return kubeproxy.chains(ns, name, "p80", "TCP")
