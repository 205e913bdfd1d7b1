"""Allocation and placement: given values honoured, nothing existing renumbered or moved."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from modelkit import deployment, errors_of, hosts, make_plan, service

from podnet.allocate import Record

NAME = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
NAMES = st.lists(NAME, min_size=1, max_size=8, unique=True)
T = TypeVar("T")
slow = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def services_text(names: list[str], kind: str = "NodePort") -> str:
    return "".join(service(f"s{n}", selector="x", body=f"  type: {kind}\n") for n in names)


@st.composite
def kept_gone_and_new(draw: st.DrawFn, names: st.SearchStrategy[T], most: int,
                      ) -> tuple[list[T], list[T]]:
    """Two generations of a set of names, ``before`` and ``after``, that always share at least
    one: two independent draws rarely do, and a kept name is the one the property is about.
    Each generation comes in its own order, so a kept name may move in the manifests."""
    drawn = draw(st.lists(names, min_size=1, max_size=most, unique=True))
    kept = draw(st.integers(1, len(drawn)))
    gone = draw(st.integers(0, len(drawn) - kept))
    before = drawn[:kept + gone]
    after = drawn[:kept] + drawn[kept + gone:]
    event(f"{'some' if gone else 'none'} gone, {'some' if len(after) > kept else 'none'} new")
    return draw(st.permutations(before)), draw(st.permutations(after))


@slow
@given(kept_gone_and_new(NAME, 12))
def test_adding_and_removing_services_never_renumbers_others(
        generations: tuple[list[str], list[str]]) -> None:
    first, second = generations
    before = make_plan(services_text(first, "LoadBalancer"))
    after = make_plan(services_text(second, "LoadBalancer"), record=before.record)
    compared = 0
    for svc in after.services:
        if svc.key in {s.key for s in before.services}:
            old = before.service(svc.key)
            assert (svc.cluster_ip, svc.lb_ip) == (old.cluster_ip, old.lb_ip)
            assert [p.node_port for p in svc.ports] == [p.node_port for p in old.ports]
            compared += svc.key != "kube-system/kube-dns"
    # kube-dns's address is fixed, so it proves nothing: every example compares a kept one
    assert compared == len(set(first) & set(second)) >= 1


@slow
@given(NAMES)
def test_allocated_addresses_are_unique_and_in_range(names: list[str]) -> None:
    plan = make_plan(services_text(names))
    cidr = IPv4Network("10.96.0.0/12")
    ips = [s.cluster_ip for s in plan.services]
    assert len(set(ips)) == len(ips)
    assert "10.96.0.10" in ips  # kube-dns, and only kube-dns
    for svc in plan.services:
        assert IPv4Address(svc.cluster_ip) in cidr
        assert (svc.cluster_ip == "10.96.0.10") == (svc.key == "kube-system/kube-dns")
        # dynamic allocation stays out of the static band (first 256 addresses of a /12)
        if svc.key != "kube-system/kube-dns":
            assert int(IPv4Address(svc.cluster_ip)) - int(cidr.network_address) > 256
    ports = [p.node_port for s in plan.services for p in s.ports if p.node_port]
    assert len(set(ports)) == len(ports) == len(names)
    assert all(30000 + 86 <= p <= 32767 for p in ports)


def test_given_values_are_honoured() -> None:
    plan = make_plan(service("web", body="  type: LoadBalancer\n  clusterIP: 10.96.0.50\n"
                                         "  loadBalancerIP: 192.168.56.250\n",
                             ports="  ports:\n    - port: 80\n      nodePort: 30080\n"))
    web = plan.service("default/web")
    assert (web.cluster_ip, web.lb_ip, web.ports[0].node_port) == (
        "10.96.0.50", "192.168.56.250", 30080)


def test_lb_ips_skip_host_and_broadcast_addresses() -> None:
    text = "".join(service(f"lb{i}", selector="x", body="  type: LoadBalancer\n")
                   for i in range(15))
    plan = make_plan(text)
    got = sorted(int(IPv4Address(s.lb_ip)) & 0xFF for s in plan.services if s.lb_ip)
    assert got == list(range(240, 255))  # .255 is the underlay's broadcast address


def test_health_check_node_port_for_local_load_balancers() -> None:
    plan = make_plan(service("lb", body="  type: LoadBalancer\n  externalTrafficPolicy: Local\n"))
    svc = plan.service("default/lb")
    assert svc.health_check_node_port is not None
    assert svc.health_check_node_port != svc.ports[0].node_port
    again = make_plan(service("lb", body="  type: LoadBalancer\n  externalTrafficPolicy: Local\n")
                      + service("other", body="  type: NodePort\n"), record=plan.record)
    assert again.service("default/lb").health_check_node_port == svc.health_check_node_port
    given_port = make_plan(service("lb", body="  type: LoadBalancer\n  externalTrafficPolicy: "
                                              "Local\n  healthCheckNodePort: 31999\n"))
    assert given_port.service("default/lb").health_check_node_port == 31999


def node_sets() -> st.SearchStrategy[tuple[list[int], list[int]]]:
    """Node numbers before and after, at least one node in both (see kept_gone_and_new)."""
    return kept_gone_and_new(st.integers(1, 40), 15)


def node_list(ids: list[int]) -> list[dict[str, object]]:
    return [{"name": f"n{i}", "address": f"192.168.56.{i}", "groups": ["nodes"]} for i in ids]


@slow
@given(node_sets())
def test_node_cidrs_survive_nodes_coming_and_going(sets: tuple[list[int], list[int]]) -> None:
    first, second = sets
    before = make_plan("", host_list=node_list(first))
    after = make_plan("", host_list=node_list(second), record=before.record)
    cidrs = [n.pod_cidr for n in after.nodes]
    assert len(set(cidrs)) == len(cidrs)
    compared = 0
    for node in after.nodes:
        assert IPv4Network(node.pod_cidr).subnet_of(IPv4Network("10.244.0.0/16"))
        # a new node only has to be unique and inside; a kept one keeps its CIDR
        if node.name in {n.name for n in before.nodes}:
            assert node.pod_cidr == before.node(node.name).pod_cidr
            compared += 1
    assert compared == len(set(first) & set(second)) >= 1


def test_node_cidrs_in_inventory_order_and_explicit_ones_kept() -> None:
    plan = make_plan("", host_list=[
        {"name": "a", "address": "192.168.56.11", "groups": ["nodes"]},
        {"name": "b", "address": "192.168.56.12", "groups": ["nodes"],
         "pod_cidr": "10.244.0.0/24"},
        {"name": "c", "address": "192.168.56.13", "groups": ["nodes"]}])
    assert [(n.name, n.pod_cidr, n.gateway) for n in plan.nodes] == [
        ("a", "10.244.1.0/24", "10.244.1.1"), ("b", "10.244.0.0/24", "10.244.0.1"),
        ("c", "10.244.2.0/24", "10.244.2.1")]


def test_explicit_cidr_taking_a_recorded_one_is_a_warning() -> None:
    record = Record(node_cidrs={"a": "10.244.0.0/24"})
    plan = make_plan("", host_list=[
        {"name": "a", "address": "192.168.56.11", "groups": ["nodes"]},
        {"name": "b", "address": "192.168.56.12", "groups": ["nodes"],
         "pod_cidr": "10.244.0.0/24"}], record=record)
    assert plan.node("a").pod_cidr == "10.244.1.0/24"
    assert any("pod CIDR changes from 10.244.0.0/24 to 10.244.1.0/24" in str(w)
               for w in plan.warnings)


@slow
@given(st.integers(1, 6), st.integers(0, 6), st.integers(1, 5), st.integers(0, 3))
def test_scaling_up_and_adding_nodes_moves_no_pod(replicas: int, more: int, nodes: int,
                                                  new_nodes: int) -> None:
    before = make_plan(deployment("web", replicas), host_list=hosts(nodes))
    after = make_plan(deployment("web", replicas + more), host_list=hosts(nodes + new_nodes),
                      record=before.record)
    old = {p.key: p.node for p in before.pods}
    for pod in after.pods:
        if pod.key in old:
            assert pod.node == old[pod.key]
    assert len([p for p in after.pods if p.owner == "Deployment default/web"]) == replicas + more


@slow
@given(st.integers(1, 8), st.integers(1, 6))
def test_replicas_spread_evenly(replicas: int, nodes: int) -> None:
    plan = make_plan(deployment("web", replicas), host_list=hosts(nodes))
    counts = [sum(1 for p in plan.pods if p.node == n.name and p.owner.endswith("/web"))
              for n in plan.nodes]
    assert max(counts) - min(counts) <= 1


def test_dns_pods_land_on_different_nodes() -> None:
    plan = make_plan("")
    dns_nodes = [p.node for p in plan.pods if p.namespace == "kube-system"]
    assert len(dns_nodes) == 2 and len(set(dns_nodes)) == 2


def test_node_selector_and_node_name_are_honoured() -> None:
    text = deployment("web", 4, spec_extra="      nodeSelector:\n        zone: b\n")
    plan = make_plan(text, host_list=hosts(3, node2={"zone": "b"}, node3={"zone": "b"}))
    assert {p.node for p in plan.pods if p.owner.endswith("/web")} == {"node2", "node3"}
    pinned = make_plan(deployment("web", 2, spec_extra="      nodeName: node1\n"))
    assert {p.node for p in pinned.pods if p.owner.endswith("/web")} == {"node1"}


def test_a_recorded_pod_moves_when_its_node_goes() -> None:
    before = make_plan(deployment("web", 3))
    gone = before.pods_on("node3")
    after = make_plan(deployment("web", 3), host_list=hosts(2), record=before.record)
    for pod in gone:
        if pod.key in {p.key for p in after.pods}:
            assert after.pod(pod.key).node in ("node1", "node2")


def test_replica_names_keep_on_scale_and_change_with_the_template() -> None:
    three = [p.name for p in make_plan(deployment("web", 3)).pods if p.owner.endswith("/web")]
    five = [p.name for p in make_plan(deployment("web", 5)).pods if p.owner.endswith("/web")]
    assert five[:3] == three
    changed = [p.name for p in make_plan(deployment("web", 3, labels="\n        tier: x")).pods
               if p.owner.endswith("/web")]
    assert not set(changed) & set(three)
    assert all(n.startswith("web-") and len(n.split("-")[-1]) == 5 for n in three)


NP = "  type: NodePort\n"


@pytest.mark.parametrize(("what", "body", "ports"), [
    ("nodePort", NP, "  ports:\n    - {{port: 80, nodePort: {value}}}\n"),
    ("loadBalancerIP", "  type: LoadBalancer\n  loadBalancerIP: {value}\n", None),
    ("healthCheckNodePort", "  type: LoadBalancer\n  externalTrafficPolicy: Local\n"
                            "  healthCheckNodePort: {value}\n", None),
])
def test_a_given_value_may_not_take_a_recorded_one(what: str, body: str, ports: str | None,
                                                   ) -> None:
    first = make_plan(service("a", body=body.split("\n  " + what)[0] + "\n"
                              if what != "nodePort" else NP))
    a = first.service("default/a")
    value = {"nodePort": a.ports[0].node_port, "loadBalancerIP": a.lb_ip,
             "healthCheckNodePort": a.health_check_node_port}[what]
    text = service("a", body=body.split("\n  " + what)[0] + "\n" if what != "nodePort" else NP)
    text += service("b", body=body.format(value=value),
                    ports=ports.format(value=value) if ports else None)
    found = "\n".join(errors_of(text, record=first.record))
    assert f"{value} is already allocated to" in found and "default/a" in found, found


def test_tcp_and_udp_of_one_number_share_a_node_port() -> None:
    plan = make_plan(service("dns", body=NP, ports="  ports:\n    - {name: dns, port: 53, "
                             "protocol: UDP}\n    - {name: dns-tcp, port: 53}\n"))
    ports = {p.protocol: p.node_port for p in plan.service("default/dns").ports}
    assert ports["UDP"] == ports["TCP"]


def test_an_unnamed_port_keeps_its_node_port_when_its_number_changes() -> None:
    first = make_plan(service("a", body=NP, ports="  ports:\n    - {port: 80}\n"))
    again = make_plan(service("a", body=NP, ports="  ports:\n    - {port: 81}\n"),
                      record=first.record)
    assert again.service("default/a").ports[0].node_port == \
        first.service("default/a").ports[0].node_port


def test_a_stale_record_entry_does_not_block_a_given_address() -> None:
    first = make_plan(service("a"))
    taken = first.service("default/a").cluster_ip
    now = make_plan(service("a", body="  type: ExternalName\n  externalName: x.test\n", ports="")
                    + service("b", body=f"  clusterIP: {taken}\n"), record=first.record)
    assert now.service("default/b").cluster_ip == taken


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), min_size=1, max_size=12,
                unique=True))
def test_new_node_port_services_never_renumber_health_check_ports(names: list[str]) -> None:
    local = service("a", body="  type: LoadBalancer\n  externalTrafficPolicy: Local\n")
    first = make_plan(local)
    after = make_plan(local + "".join(service(f"b{n}", body=NP) for n in names),
                      record=first.record)
    before_a, after_a = first.service("default/a"), after.service("default/a")
    assert after_a.health_check_node_port == before_a.health_check_node_port
    assert after_a.ports[0].node_port == before_a.ports[0].node_port
    used = [p.node_port for s in after.services for p in s.ports if p.node_port]
    assert after_a.health_check_node_port is not None
    used.append(after_a.health_check_node_port)
    assert len(used) == len(set(used))
