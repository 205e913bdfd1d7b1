"""LoadBalancer, cloud mode: the lb host plays the cloud provider's network load balancer
(roles/external_lb, podnet-cloud-lb). Checked on the lb host itself: it answers for each
address (the address on lo), routes the Services' ports from the underlay with their
destination kept (rules into its own table), only to the nodes passing their health checks
(the route's nexthops, the checks as the lb host sees them now), and does no NAT and knows no
route into the pod or Service network. The end-to-end behaviour (clients, policies, failover)
is the LoadBalancer suite's."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from conftest import Evidence, plan, run

from podnet import hostchanges, loadbalancer

pytestmark = pytest.mark.principle("LoadBalancer")


def config() -> dict[str, Any]:
    return loadbalancer.config(plan())


def balancer() -> str:
    """The lb host, or a skip when the plan is not in cloud mode."""
    cfg = config()
    if cfg["mode"] != "cloud":
        pytest.skip(f"podnet_lb_mode is {cfg['mode']}: no lb host plays the cloud's load balancer")
    if not cfg["addresses"]:
        pytest.skip("the manifests have no LoadBalancer Service: add one with type LoadBalancer")
    return str(cfg["balancers"][0])


def ip_json(host: str, *argv: str) -> tuple[list[dict[str, Any]], Evidence]:
    ev = run(host, "ip", "-j", *argv)
    assert ev.rc == 0, ev
    return (json.loads(ev.stdout) if ev.stdout.strip() else []), ev


def status(host: str) -> tuple[dict[str, Any], Evidence]:
    ev = run(host, "cat", plan().paths.cloud_lb_status)
    assert ev.rc == 0, f"podnet-cloud-lb wrote no status file{ev}"
    return json.loads(ev.stdout), ev


def underlay(host: str) -> str:
    routes, ev = ip_json(host, "route", "get", config()["nodes"][0]["address"])
    assert routes and routes[0].get("dev"), ev
    return str(routes[0]["dev"])


def test_each_address_is_on_lo_so_the_host_answers_arp_for_it() -> None:
    host = balancer()
    links, ev = ip_json(host, "address", "show", "dev", "lo")
    have = {a["local"] for link in links for a in link.get("addr_info", [])
            if a.get("label") == hostchanges.CLOUD_LB_LABEL and a.get("prefixlen") == 32}
    assert have == {a["address"] for a in config()["addresses"]}, ev


def test_the_service_ports_from_the_underlay_are_routed_not_delivered() -> None:
    """One rule per address and Service port (iif underlay, ipproto, dport) into the load
    balancer's table, before the local rule (moved from pref 0 to 1000): ARP, ICMP and other
    ports still meet the local address."""
    host = balancer()
    dev = underlay(host)
    rules, ev = ip_json(host, "rule", "show")
    ours = {(r.get("dst"), r.get("ipproto"), r.get("dport"), r.get("iif"), r.get("table"))
            for r in rules if str(r.get("protocol")) == hostchanges.CLOUD_LB_PROTO
            and r.get("table") != "local"}
    want = {(a["address"], p["protocol"].lower(), p["port"], dev, hostchanges.CLOUD_LB_TABLE)
            for a in config()["addresses"] for p in a["ports"]}
    assert ours == want, ev
    local = [r["priority"] for r in rules if r.get("table") == "local"]
    ours_prefs = [r["priority"] for r in rules
                  if str(r.get("protocol")) == hostchanges.CLOUD_LB_PROTO
                  and r.get("table") != "local"]
    assert local and 0 not in local and min(local) > max(ours_prefs), ev


@pytest.mark.quick
def test_each_route_goes_to_the_nodes_that_pass_their_check() -> None:
    """The route's nexthops are the nodes the status file calls healthy (all of them when none
    is: fail open), and those are the nodes whose check answers 200 from the lb host now."""
    host = balancer()
    state, sev = status(host)
    nodes = {n["name"]: n["address"] for n in config()["nodes"]}
    routes, ev = ip_json(host, "route", "show", "table", hostchanges.CLOUD_LB_TABLE)
    by_dst = {str(r["dst"]).removesuffix("/32"): r for r in routes}
    for a in config()["addresses"]:
        address = a["address"]
        reported = state["addresses"][address]
        healthy = reported["healthy"]
        expected = healthy or sorted(nodes)
        assert reported["route"] == [n for n in nodes if n in expected], sev
        route = by_dst.get(address)
        assert route, f"no route to {address} in table {hostchanges.CLOUD_LB_TABLE}{ev}"
        gateways = sorted(h["gateway"] for h in route.get("nexthops", [])) or [route["gateway"]]
        assert gateways == sorted(nodes[n] for n in expected), f"{address}{ev}{sev}"
        check = a["check"]
        for name, node_address in nodes.items():
            probe = run(host, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2",
                        f"http://{node_address}:{check['port']}{check['path']}")
            answered = probe.stdout.strip() == "200"
            assert answered == (name in healthy), \
                f"{address}: {name} is {'' if name in healthy else 'not '}in the route{probe}{sev}"


def test_the_lb_host_does_no_nat() -> None:
    """The nodes see the client's own address: no NAT rule on the lb host."""
    host = balancer()
    ev = run(host, "iptables-save", "-t", "nat")
    assert ev.rc == 0, ev
    assert not [line for line in ev.stdout.splitlines() if line.startswith("-A")], ev
    nft = run(host, "nft", "list", "ruleset")
    assert nft.rc == 0, nft
    assert "type nat" not in nft.stdout, nft


def test_the_lb_host_has_no_route_into_the_pod_or_service_network() -> None:
    host = balancer()
    s = plan().settings
    inside = [ipaddress.ip_network(str(s.cluster_cidr)), ipaddress.ip_network(str(s.service_cidr))]
    routes, ev = ip_json(host, "-4", "route", "show", "table", "all")
    leaking = [r for r in routes if r.get("dst") not in (None, "default")
               and any(ipaddress.ip_network(str(r["dst"]), strict=False).overlaps(n)
                       for n in inside)]
    assert not leaking, ev


def test_the_flows_are_hashed_on_their_ports_and_no_redirect_is_sent() -> None:
    host = balancer()
    dev = underlay(host)
    keys = {"net.ipv4.ip_forward": "1", "net.ipv4.fib_multipath_hash_policy": "1",
            "net.ipv4.conf.all.send_redirects": "0", f"net.ipv4.conf.{dev}.send_redirects": "0"}
    ev = run(host, "sysctl", "-n", *keys)
    assert ev.rc == 0 and ev.stdout.split() == list(keys.values()), ev
