"""The routing backend the lab runs, as the plan says it (docs/backends.md): every node's routes
to the others' pod CIDRs (host-gw: via each node; vxlan: the device, its forwarding and
neighbour entries, routes on link; bgp: every session Established, the routes learnt and
installed equal the plan's), nothing of another backend left, and pod traffic on the underlay
in the backend's form (vxlan: UDP to the VXLAN port with the pod addresses inside; host-gw and
bgp: the pod addresses themselves)."""

from __future__ import annotations

import re

import pytest
from backendchecks import capture, pods_between, residue, routing_problems
from conftest import plan, running

pytestmark = pytest.mark.principle("flat network")


def test_the_node_routes_pods_as_its_backend_says(node: str) -> None:
    assert routing_problems(plan(), node) == []


def test_no_other_backend_left_anything_on_the_node(node: str) -> None:
    assert residue(plan(), node) == []


def node_pairs() -> list[tuple[str, str]]:
    names = [n.name for n in plan().nodes]
    return [(a, b) for a in names for b in names if a != b]


@pytest.mark.parametrize("pair", node_pairs(), ids=[f"{a}->{b}" for a, b in node_pairs()])
def test_pod_traffic_crosses_the_underlay_in_the_backend_s_form(pair: tuple[str, str]) -> None:
    p = plan()
    client, target = pods_between(p, *pair)
    src, dst = running()[client]["ip"], running()[target]["ip"]
    if p.settings.backend == "vxlan":
        got = capture(p, client, target, p.settings.vxlan_port)
        here, there = (p.node(n).address for n in pair)
        lines = got.stdout.splitlines()
        # tcpdump prints the outer packet (node to node, UDP to the VXLAN port, the VNI) and on
        # the next line the inner one: the pods' own addresses
        outer = f"IP {here}."
        tunnelled = [i for i, line in enumerate(lines[:-1])
                     if outer in line and f"> {there}.{p.settings.vxlan_port}: VXLAN" in line
                     and line.endswith(f"vni {p.settings.vxlan_vni}")
                     and lines[i + 1].startswith(f"IP {src}.") and f"> {dst}." in lines[i + 1]]
        assert tunnelled, got
    else:
        # routed as they are: the pods' own addresses on the wire, no tunnel
        got = capture(p, client, target, None)
        assert f"IP {src}." in got.stdout and f"> {dst}." in got.stdout, got
        # (no VXLAN header decoded, nothing to the VXLAN port: ".8472: ", not a timestamp's
        # microseconds that happen to end in 8472)
        assert "VXLAN" not in got.stdout, got
        assert not re.search(rf"\.{p.settings.vxlan_port}: ", got.stdout), got
