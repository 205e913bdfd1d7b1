"""Chain names equal kube-proxy's, checked against values in its own proxier_test.go."""

from __future__ import annotations

import pytest

from podnet import kubeproxy

# (namespace, service, port name, protocol) -> KUBE-SVC-..., from TestOverallIPTablesRules
SERVICES = [
    ("ns1", "svc1", "p80", "TCP", "KUBE-SVC-XPGD46QRK7WJZT7O"),
    ("ns2", "svc2", "p80", "TCP", "KUBE-SVC-GNZBNJ2PO5MGZ6GT"),
    ("ns3", "svc3", "p80", "TCP", "KUBE-SVC-X27LE4BHSL4DOUIK"),
    ("ns4", "svc4", "p80", "TCP", "KUBE-SVC-4SW47YFZTEDKD3PK"),
    ("ns5", "svc5", "p80", "TCP", "KUBE-SVC-NUKIZ6OKUXPJNT4C"),
]
ENDPOINTS = [
    ("ns1", "svc1", "p80", "TCP", "10.180.0.1", 80, "KUBE-SEP-SXIVWICOYRO3J4NJ"),
    ("ns2", "svc2", "p80", "TCP", "10.180.0.2", 80, "KUBE-SEP-RS4RBKLTHTF2IUXJ"),
    ("ns3", "svc3", "p80", "TCP", "10.180.0.3", 80, "KUBE-SEP-OYPFS5VJICHGATKP"),
    ("ns4", "svc4", "p80", "TCP", "10.180.0.4", 80, "KUBE-SEP-UKSFD7AGPMPPLUHC"),
    ("ns4", "svc4", "p80", "TCP", "10.180.0.5", 80, "KUBE-SEP-C6EBXVWJJZMIWKLZ"),
    ("ns5", "svc5", "p80", "TCP", "10.180.0.3", 80, "KUBE-SEP-I77PXRDZVX7PMWMN"),
]


@pytest.mark.parametrize(("ns", "name", "port", "proto", "chain"), SERVICES)
def test_service_chain(ns: str, name: str, port: str, proto: str, chain: str) -> None:
    chains = kubeproxy.chains(ns, name, port, proto)
    assert chains["svc"] == chain
    suffix = chain.removeprefix("KUBE-SVC-")
    assert chains == {"svc": chain, "svl": f"KUBE-SVL-{suffix}", "ext": f"KUBE-EXT-{suffix}",
                      "fw": f"KUBE-FW-{suffix}"}


@pytest.mark.parametrize(("ns", "name", "port", "proto", "ip", "number", "chain"), ENDPOINTS)
def test_endpoint_chain(ns: str, name: str, port: str, proto: str, ip: str, number: int,
                        chain: str) -> None:
    assert kubeproxy.endpoint_chain(ns, name, port, proto, ip, number) == chain


def test_protocol_is_lower_cased_and_unnamed_ports_have_no_colon() -> None:
    assert kubeproxy.service_port_name("ns1", "svc1", "") == "ns1/svc1"
    assert kubeproxy.port_proto_hash("ns1", "svc1", "p80", "TCP") == \
        kubeproxy.port_proto_hash("ns1", "svc1", "p80", "tcp")
    assert kubeproxy.chains("ns1", "svc1", "", "TCP")["svc"] != SERVICES[0][4]
    assert len(kubeproxy.chains("a", "b", "c", "UDP")["fw"]) == len("KUBE-FW-") + 16


def test_chain_names_are_the_renderers_not_the_plans() -> None:
    """kube-proxy's chain names are renderer knowledge: the plan (what the API would hold)
    has none, and the plan report names each Service's chain from kubeproxy."""
    from modelkit import make_plan, service

    from podnet import report

    plan = make_plan(service("svc1", ns="default"))
    port = plan.data()["services"][-1]["ports"][0]
    assert plan.service("default/svc1").ports[0].name == "http"
    assert "chains" not in port and not hasattr(plan.service("default/svc1").ports[0], "chains")
    assert kubeproxy.chains("default", "svc1", "http", "TCP")["svc"] in report.render(plan)
