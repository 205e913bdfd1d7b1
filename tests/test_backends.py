"""The routing backends' node state from the plan (podnet/backends.py): host-gw routes, the
VXLAN device and its peers, BIRD's neighbours (full mesh, route reflectors), and the rendered
routes.conf and bird.conf that podnet-routes and BIRD read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
from modelkit import hosts, make_plan

from podnet import backends
from podnet.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "roles/pod_network/templates"


def routing(backend: str, node: str = "node1", n: int = 3, **variables: Any) -> dict[str, Any]:
    plan = make_plan(variables={"podnet_backend": backend, **variables}, host_list=hosts(n))
    return backends.node_routing(plan, node)


def test_host_gw_routes_every_other_node_s_pod_cidr_via_its_address() -> None:
    r = routing("host-gw")
    assert r["routes"] == [
        {"dst": "10.244.1.0/24", "via": "192.168.56.12", "node": "node2"},
        {"dst": "10.244.2.0/24", "via": "192.168.56.13", "node": "node3"}]
    assert r["vxlan"] is None and r["bgp"] is None and r["mtu_overhead"] == 0


def test_vxlan_gives_a_device_and_every_other_node_s_vtep() -> None:
    r = routing("vxlan", podnet_vxlan_vni=42, podnet_vxlan_port=4789)
    vx = r["vxlan"]
    assert r["routes"] == [] and r["mtu_overhead"] == 50
    assert (vx["device"], vx["vni"], vx["port"], vx["local"]) == ("podnet.42", 42, 4789,
                                                                  "192.168.56.11")
    # the VTEP is the pod CIDR's network address, its MAC 0a:59 and that address's bytes
    assert (vx["address"], vx["mac"]) == ("10.244.0.0", "0a:59:0a:f4:00:00")
    assert vx["peers"] == [
        {"node": "node2", "routes": ["10.244.1.0/24"], "vtep": "10.244.1.0",
         "mac": "0a:59:0a:f4:01:00", "underlay": "192.168.56.12"},
        {"node": "node3", "routes": ["10.244.2.0/24"], "vtep": "10.244.2.0",
         "mac": "0a:59:0a:f4:02:00", "underlay": "192.168.56.13"}]


def test_vtep_macs_are_unique_and_locally_administered_unicast() -> None:
    plan = make_plan(variables={"podnet_backend": "vxlan", "podnet_cluster_cidr": "10.128.0.0/9",
                                "podnet_node_cidr_prefix": 26}, host_list=hosts(9))
    macs = [backends.vtep_mac(n) for n in plan.nodes]
    assert len(set(macs)) == len(macs)
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0b10 and not first & 0b1, mac


def test_bgp_full_mesh_peers_every_other_node() -> None:
    bgp = routing("bgp", node="node2", podnet_bgp_as=65001)["bgp"]
    assert bgp["as"] == 65001 and bgp["router_id"] == "192.168.56.12"
    assert bgp["announce"] == ["10.244.1.0/24"] and not bgp["route_reflector"]
    assert bgp["neighbors"] == [
        {"name": "node1", "address": "192.168.56.11", "rr_client": False,
         "protocol": "peer_node1"},
        {"name": "node3", "address": "192.168.56.13", "rr_client": False,
         "protocol": "peer_node3"}]


@pytest.mark.parametrize(("node", "peers", "clients"), [
    ("node1", ["node2", "node3", "node4"], ["node3", "node4"]),  # a reflector: all, clients
    ("node2", ["node1", "node3", "node4"], ["node3", "node4"]),
    ("node3", ["node1", "node2"], []),  # a client: the reflectors only
])
def test_route_reflectors_peer_with_all_and_clients_with_the_reflectors(
        node: str, peers: list[str], clients: list[str]) -> None:
    bgp = routing("bgp", node=node, n=4, podnet_bgp_route_reflectors=["node1", "node2"])["bgp"]
    assert [p["name"] for p in bgp["neighbors"]] == peers
    assert [p["name"] for p in bgp["neighbors"] if p["rr_client"]] == clients
    assert bgp["route_reflector"] == (node in ("node1", "node2"))


def test_a_node_s_routers_learn_its_pod_cidr() -> None:
    host_list = hosts(2)
    host_list[1]["bgp_peers"] = [{"address": "192.168.56.254"}, {"address": "10.9.0.1",
                                                                 "as": 65010}]
    plan = make_plan(variables={"podnet_backend": "bgp"}, host_list=host_list)
    assert backends.node_routing(plan, "node1")["bgp"]["routers"] == []
    assert backends.node_routing(plan, "node2")["bgp"]["routers"] == [
        {"address": "192.168.56.254", "as": 64512, "protocol": "router_192_168_56_254",
         "ibgp": True},
        {"address": "10.9.0.1", "as": 65010, "protocol": "router_10_9_0_1", "ibgp": False}]
    conf = render("etc/podnet/bgp/bird.conf.j2", "bgp", node="node2", plan=plan)
    assert "protocol bgp router_192_168_56_254 from podnet_router {" in conf
    assert "neighbor 10.9.0.1 as 65010;" in conf
    assert 'export where proto = "podnet_pods";' in conf and "import none;" in conf


def test_host_gw_is_servable_only_with_every_node_on_the_underlay() -> None:
    assert backends.servable(make_plan()) == ["host-gw", "vxlan", "bgp"]
    routed = hosts(2)
    routed[1]["address"] = "192.168.57.13"
    plan = make_plan(variables={"podnet_backend": "vxlan", "podnet_lb_pool": ""},
                     host_list=routed)
    assert backends.servable(plan) == ["vxlan", "bgp"]


def test_a_node_name_with_a_dash_is_a_bird_symbol() -> None:
    assert backends.bgp_protocol("node-1") == "peer_node_1"


def render(template: str, backend: str, node: str = "node1", plan: Plan | None = None,
           **variables: Any) -> str:
    plan = plan or make_plan(variables={"podnet_backend": backend, **variables},
                             host_list=hosts(3))
    # configuration files, not HTML: nothing to escape (Ansible renders them the same way)
    env = jinja2.Environment(  # noqa: S701
        loader=jinja2.FileSystemLoader(TEMPLATES), trim_blocks=True, lstrip_blocks=False,
        keep_trailing_newline=True)
    env.filters["comment"] = lambda text: f"# {text}"
    env.filters["podnet_routing"] = lambda data, name: backends.node_routing(plan, name)
    return env.get_template(template).render(
        pod_network_plan=plan.data(), inventory_hostname=node, ansible_managed="managed")


def lines(text: str) -> list[str]:
    return [ln.split("#")[0].strip() for ln in text.splitlines() if ln.split("#")[0].strip()]


@pytest.mark.parametrize(("backend", "expected"), [
    ("host-gw", ["10.244.1.0/24 via 192.168.56.12", "10.244.2.0/24 via 192.168.56.13",
                 "10.96.0.0/12 dev-of 192.168.56.11"]),
    ("vxlan", ["vxlan podnet.1 vni 1 port 8472 local 192.168.56.11 address 10.244.0.0 "
               "mac 0a:59:0a:f4:00:00 overhead 50",
               "vtep 10.244.1.0 mac 0a:59:0a:f4:01:00 underlay 192.168.56.12 routes 10.244.1.0/24",
               "vtep 10.244.2.0 mac 0a:59:0a:f4:02:00 underlay 192.168.56.13 routes 10.244.2.0/24",
               "10.96.0.0/12 dev-of 192.168.56.11"]),
    ("bgp", ["10.96.0.0/12 dev-of 192.168.56.11"]),
])
def test_routes_conf_holds_the_backend_s_entries(backend: str, expected: list[str]) -> None:
    assert lines(render("etc/podnet/routes.conf.j2", backend)) == expected


def test_bird_conf_announces_the_pod_cidr_and_peers_over_the_underlay() -> None:
    conf = render("etc/podnet/bgp/bird.conf.j2", "bgp", node="node3",
                  podnet_bgp_route_reflectors=["node1"])
    assert "router id 192.168.56.13;" in conf
    assert "route 10.244.2.0/24 unreachable;" in conf
    assert "local 192.168.56.13 as 64512;" in conf
    assert "export where source = RTS_BGP;" in conf  # only what BGP learnt goes to the kernel
    assert "protocol bgp peer_node1 from podnet_peer {" in conf
    assert "neighbor 192.168.56.11 as 64512;" in conf
    assert "peer_node2" not in conf  # a client peers with the reflector only
    reflector = render("etc/podnet/bgp/bird.conf.j2", "bgp", node="node1",
                       podnet_bgp_route_reflectors=["node1"])
    assert reflector.count("rr client;") == 2 and "rr cluster id 244.0.0.1;" in reflector


@pytest.mark.parametrize("backend", ["vxlan", "bgp"])
def test_the_routed_lab_plans_with_the_backends_that_cross_its_router(
        backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from podnet import cluster
    monkeypatch.setenv("PODNET_BACKEND", backend)
    plan = cluster.load(ROOT / "inventory/lab-routed")
    assert plan.settings.backend == backend
    assert plan.node("node3").address == "192.168.57.13"
    assert plan.node("node3").bgp_peers == [{"address": "192.168.57.254", "as": 64512}]


def test_the_routed_lab_refuses_host_gw_naming_the_node_and_the_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from podnet import cluster
    from podnet.problems import InvalidInput
    monkeypatch.setenv("PODNET_BACKEND", "host-gw")
    with pytest.raises(InvalidInput) as caught:
        cluster.load(ROOT / "inventory/lab-routed")
    assert ("host node3: ansible_host: 192.168.57.13 is outside podnet_underlay_cidr "
            "192.168.56.0/24: the host-gw backend routes each pod CIDR straight to its node"
            in str(caught.value))
    assert "fix: set podnet_backend to vxlan or bgp" in str(caught.value)
