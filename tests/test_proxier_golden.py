"""podnet's kube-proxy rules equal kube-proxy's own expected dumps (proxier_test.go), compared
the way kube-proxy's tests compare them (podnet.proxier.sort_dump)."""

from __future__ import annotations

from pathlib import Path

from podnet.proxier import Endpoint, Options, ServicePort, render, sort_dump

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
