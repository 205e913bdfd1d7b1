"""What both LoadBalancer modes are given (podnet/loadbalancer.py): the health check per
traffic policy, l2's ranking of the nodes per address, the VRRP ids, the plan's status."""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Network

from modelkit import deployment, hosts, make_plan, service

from podnet import loadbalancer, report

LOCAL = "  type: LoadBalancer\n  externalTrafficPolicy: Local\n"
CLUSTER = "  type: LoadBalancer\n"
TEXT = (deployment("web") + service("local", selector="web", body=LOCAL)
        + service("public", selector="web", body=CLUSTER)
        + service("plain", selector="web", body="  type: NodePort\n"))


def test_each_address_gets_its_service_ports_and_the_health_check_of_its_policy() -> None:
    plan = make_plan(TEXT)
    lb = loadbalancer.config(plan)
    assert lb["mode"] == "cloud" and lb["balancers"] == ["lb"]
    assert [n["name"] for n in lb["nodes"]] == ["node1", "node2", "node3"]
    by_service = {a["service"]: a for a in lb["addresses"]}
    assert set(by_service) == {"default/local", "default/public"}  # not the NodePort Service
    local, public = by_service["default/local"], by_service["default/public"]
    # Local: only nodes with a ready local endpoint, as its healthCheckNodePort says
    hcnp = plan.service("default/local").health_check_node_port
    assert local["check"] == {"port": hcnp, "path": "/"} and local["policy"] == "Local"
    # Cluster: every node whose proxy is healthy, as kube-proxy's node server says
    assert public["check"] == {"port": 10256, "path": "/healthz"}
    assert public["ports"] == [{"name": "http", "port": 80, "protocol": "TCP"}]
    assert local["address"] == plan.service("default/local").lb_ip


def test_addresses_are_in_address_order_with_vrrp_ids_from_their_place_in_the_pool() -> None:
    text = "".join(service(f"lb{i}", selector="x", body=CLUSTER) for i in range(12))
    lb = loadbalancer.config(make_plan(text))
    pool = IPv4Network("192.168.56.240/28")
    for a in lb["addresses"]:
        assert a["vrid"] == int(IPv4Network(a["address"]).network_address) \
            - int(pool.network_address) + 1
        assert 1 <= a["vrid"] <= 255
    vrids = [a["vrid"] for a in lb["addresses"]]
    assert vrids == sorted(vrids) and len(set(vrids)) == len(vrids) == 12


def test_l2_ranking_is_deterministic_spreads_and_moves_only_a_leaving_nodes_addresses() -> None:
    nodes = [f"node{i}" for i in range(1, 5)]
    addresses = [f"192.168.56.{i}" for i in range(100, 228)]
    first = {a: loadbalancer.ranking(a, nodes)[0] for a in addresses}
    assert first == {a: loadbalancer.ranking(a, list(reversed(nodes)))[0] for a in addresses}
    counts = Counter(first.values())
    assert set(counts) == set(nodes) and min(counts.values()) >= 16, counts  # 32 each on average
    # node4 leaves: only the addresses it announced move, each to its next-ranked node
    without = {a: loadbalancer.ranking(a, nodes[:3])[0] for a in addresses}
    for a in addresses:
        if first[a] != "node4":
            assert without[a] == first[a]
        else:
            assert without[a] == loadbalancer.ranking(a, nodes)[1]


def test_the_plan_shows_status_load_balancer_ingress_and_who_takes_the_address() -> None:
    plan = make_plan(TEXT)
    ip = plan.service("default/public").lb_ip
    assert loadbalancer.ingress(plan.service("default/public")) == [{"ip": ip, "ipMode": "VIP"}]
    assert loadbalancer.ingress(plan.service("default/plain")) == []
    text = report.render(plan)
    assert "LoadBalancers [cloud mode: lb answers for them] (2)" in text
    assert f'[{{"ip": "{ip}", "ipMode": "VIP"}}]' in text
    assert "nodes passing :10256/healthz" in text
    l2 = report.render(make_plan(TEXT, {"podnet_lb_mode": "l2"}, hosts()[:-1]))
    assert "LoadBalancers [l2 mode: one node at a time answers for each] (2)" in l2
    ranked = loadbalancer.ranking(ip or "", ["node1", "node2", "node3"])
    assert " > ".join(ranked) in l2


def test_l2_mode_needs_no_lb_host_and_an_lb_host_is_not_a_balancer_there() -> None:
    plan = make_plan(TEXT, {"podnet_lb_mode": "l2"})
    lb = loadbalancer.config(plan)
    assert lb["mode"] == "l2"
    # the hosts of podnet_lb_group stay listed: their play removes what cloud mode set up
    assert lb["balancers"] == ["lb"]
    assert make_plan(TEXT, {"podnet_lb_mode": "l2"}, hosts()[:-1]).services
