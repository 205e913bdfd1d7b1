"""A routed lab (lab_segments, lab_router_address, the host variable lab_segment): validation
naming the variable and the fix, where each host sits and the routes its networkd file gets, and
(as root) the segments' bridges and the router namespace made, kept, repaired and removed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nodekit import ROOT, load

from podnet import lab

lab_filters = load("podnet_lab_filter", ROOT / "plugins/filter/podnet_lab.py")

FAR = {"name": "far", "cidr": "192.168.57.0/24", "controller_address": "192.168.57.1",
       "router_address": "192.168.57.254"}
HOSTS = [
    {"name": "node1", "address": "192.168.56.11"},
    {"name": "node2", "address": "192.168.56.12"},
    {"name": "node3", "address": "192.168.57.13", "segment": "far"},
    {"name": "client", "address": "192.168.56.100"},
]


def errors(hosts: Any = HOSTS, segments: Any = (FAR,), router: Any = "192.168.56.254",
           **kw: Any) -> list[str]:
    return lab.validate("podnet-rt", "192.168.56.0/24", "192.168.56.1", hosts,
                        segments=segments, router_address=router, **kw)


def test_a_routed_lab_is_good() -> None:
    assert errors() == []
    # a resolver on a segment is inside the lab too
    assert errors(nameservers=["192.168.57.13", "192.168.56.100"]) == []


def test_the_default_lab_needs_no_router() -> None:
    assert errors(HOSTS[:2], segments=(), router="") == []
    assert errors(HOSTS[:2], segments=(), router=None) == []


@pytest.mark.parametrize(("segments", "router", "needle"), [
    ([FAR], "", "lab_router_address: not set, but lab_segments has 1 segment(s)"),
    ([], "192.168.56.254", "lab_router_address: 192.168.56.254 is set but lab_segments is empty"),
    ([FAR], "192.168.58.1", "lab_router_address: 192.168.58.1 is not a host address in "
                            "lab_underlay_cidr 192.168.56.0/24"),
    ([FAR], "192.168.56.1", "lab_router_address: 192.168.56.1 is the controller's lab address"),
    ([FAR], "router", "lab_router_address: 'router' is not an IPv4 address"),
    ("far", "192.168.56.254", "lab_segments: 'far' is not a list"),
    (["far"], "192.168.56.254", "lab_segments[0]: 'far' is not a mapping"),
    ([{**FAR, "gateway": "x"}], "192.168.56.254", "lab_segments[0]: unknown key(s) gateway"),
    ([{"name": "far"}], "192.168.56.254",
     "lab_segments[0]: cidr, controller_address, router_address missing"),
    ([{**FAR, "name": "Far"}], "192.168.56.254", "lab_segments Far: name 'Far' cannot name "
                                                 "its bridge"),
    ([{**FAR, "name": "a-far-too-long-name"}], "192.168.56.254", "cannot name its bridge"),
    ([{**FAR, "name": "underlay"}], "192.168.56.254",
     "lab_segments underlay: name 'underlay' is lab_bridge's"),
    ([{**FAR, "name": "vb-x"}], "192.168.56.254", "which the lab's own links use"),
    ([FAR, {**FAR, "cidr": "192.168.58.0/24", "controller_address": "192.168.58.1",
            "router_address": "192.168.58.254"}], "192.168.56.254",
     "lab_segments far: duplicate segment name"),
    ([{**FAR, "cidr": "192.168.57.1/24"}], "192.168.56.254",
     "lab_segments far: cidr '192.168.57.1/24' is not a network"),
    ([{**FAR, "cidr": "fd00::/64"}], "192.168.56.254", "cidr fd00::/64 is not IPv4"),
    ([{**FAR, "cidr": "192.168.56.128/25", "controller_address": "192.168.56.129",
       "router_address": "192.168.56.254"}], "192.168.56.253",
     "lab_segments far: cidr 192.168.56.128/25 overlaps lab_underlay_cidr 192.168.56.0/24"),
    ([FAR, {**FAR, "name": "near", "cidr": "192.168.57.128/25",
            "controller_address": "192.168.57.129", "router_address": "192.168.57.130"}],
     "192.168.56.254", "lab_segments near: cidr 192.168.57.128/25 overlaps segment far's"),
    ([{**FAR, "controller_address": "192.168.56.1"}], "192.168.56.254",
     "lab_segments far: controller_address 192.168.56.1 is not a host address in its cidr"),
    ([{**FAR, "router_address": "192.168.57.255"}], "192.168.56.254",
     "lab_segments far: router_address 192.168.57.255 is not a host address"),
    ([{**FAR, "router_address": "192.168.57.1"}], "192.168.56.254",
     "lab_segments far: router_address 192.168.57.1 is also its controller_address"),
    ([{**FAR, "router_address": "x"}], "192.168.56.254",
     "lab_segments far: router_address 'x' is not an IPv4 address"),
])
def test_bad_segments_and_router_name_the_variable_and_the_fix(segments: Any, router: Any,
                                                                needle: str) -> None:
    hosts = HOSTS if segments and isinstance(segments, list) and segments[0] == FAR else HOSTS[:2]
    found = errors(hosts, segments=segments, router=router)
    assert any(needle in e for e in found), found


def test_a_host_on_an_unknown_segment_is_refused() -> None:
    found = errors([{"name": "node3", "address": "192.168.57.13", "segment": "near"}])
    assert found == ["node3: lab_segment 'near' is not a segment of lab_segments (defined: far); "
                     "name one of them, or remove lab_segment to put the host on the underlay"]


def test_a_host_outside_its_segment_is_refused() -> None:
    found = errors([{"name": "node3", "address": "192.168.56.13", "segment": "far"}])
    assert found == ["node3: ansible_host 192.168.56.13 is outside the cidr 192.168.57.0/24 of "
                     "its lab_segment far (or is its network/broadcast address); give it a host "
                     "address inside it, or put the host on another segment"]


def test_a_segment_address_without_lab_segment_says_to_set_it() -> None:
    found = errors([{"name": "node3", "address": "192.168.57.13"}])
    assert len(found) == 1 and found[0].endswith(
        "it is inside segment far's cidr 192.168.57.0/24: set lab_segment: far on the host to "
        "put it there"), found


@pytest.mark.parametrize(("host", "what"), [
    ({"name": "n", "address": "192.168.56.254"},
     "the router's address on the underlay (lab_router_address)"),
    ({"name": "n", "address": "192.168.57.1", "segment": "far"},
     "the controller's address on segment far (lab_segments)"),
    ({"name": "n", "address": "192.168.57.254", "segment": "far"},
     "the router's address on segment far (lab_segments)"),
])
def test_a_host_cannot_take_an_address_of_the_lab(host: dict[str, str], what: str) -> None:
    assert errors([host]) == [f"n: ansible_host {host['address']} is {what}; pick another"]


def test_segment_hosts_do_not_count_against_the_underlay() -> None:
    hosts = [{"name": f"s{i}", "address": f"192.168.57.{20 + i}", "segment": "far"}
             for i in range(3)]
    assert errors(hosts, max_hosts=16) == []
    tiny = lab.validate("p", "192.168.56.0/30", "192.168.56.1",
                        [{"name": "a", "address": "192.168.56.2"}, *hosts],
                        segments=[FAR], router_address="192.168.56.2")
    assert [e for e in tiny if "do not fit" in e] == []


def test_a_nameserver_outside_every_network_names_the_segments_too() -> None:
    assert errors(nameservers=["8.8.8.8"]) == [
        "lab_nameservers: 8.8.8.8 is outside lab_underlay_cidr 192.168.56.0/24 and every segment "
        "of lab_segments: lab hosts have no route out of the lab; name a resolver on the underlay"]


# -- where each host sits -----------------------------------------------------------------------
SEGS = lab.segments_of([FAR, {"name": "near", "cidr": "10.9.0.0/16",
                              "controller_address": "10.9.0.1", "router_address": "10.9.255.254"}])


def test_an_underlay_host_routes_to_every_segment_through_the_router() -> None:
    net = lab.host_network("192.168.56.11", None, "192.168.56.0/24", "192.168.56.1", "underlay",
                           "192.168.56.254", SEGS)
    assert net == lab.HostNetwork("192.168.56.11/24", "underlay", "192.168.56.1", (
        lab.Route("192.168.57.0/24", "192.168.56.254"), lab.Route("10.9.0.0/16", "192.168.56.254")))


def test_a_segment_host_routes_to_the_underlay_and_other_segments_through_its_router() -> None:
    net = lab.host_network("10.9.1.5", "near", "192.168.56.0/24", "192.168.56.1", "underlay",
                           "192.168.56.254", SEGS)
    assert net == lab.HostNetwork("10.9.1.5/16", "near", "10.9.0.1", (
        lab.Route("192.168.56.0/24", "10.9.255.254"), lab.Route("192.168.57.0/24", "10.9.255.254")))


def test_without_segments_a_host_has_no_route() -> None:
    net = lab.host_network("192.168.56.11", "", "192.168.56.0/24", "192.168.56.1", "underlay",
                           None, [])
    assert net == lab.HostNetwork("192.168.56.11/24", "underlay", "192.168.56.1", ())
    with pytest.raises(lab.LabError, match="lab_segment 'far' is not a segment"):
        lab.host_network("192.168.57.13", "far", "192.168.56.0/24", "192.168.56.1", "underlay",
                         None, [])


def test_the_filter_gives_the_role_a_hosts_network() -> None:
    settings = {"lab_underlay_cidr": "192.168.56.0/24", "lab_controller_address": "192.168.56.1",
                "lab_bridge": "underlay", "lab_router_address": "192.168.56.254",
                "lab_segments": [FAR]}
    assert lab_filters.podnet_lab_host_network(
        {"ansible_host": "192.168.57.13", "lab_segment": "far"}, settings) == {
        "address": "192.168.57.13/24", "bridge": "far", "controller_address": "192.168.57.1",
        "routes": [{"destination": "192.168.56.0/24", "gateway": "192.168.57.254"}]}
    # the default lab: what lab-up gave every host before segments existed
    plain = {**settings, "lab_router_address": "", "lab_segments": []}
    assert lab_filters.podnet_lab_host_network({"ansible_host": "192.168.56.11"}, plain) == {
        "address": "192.168.56.11/24", "bridge": "underlay", "controller_address": "192.168.56.1",
        "routes": []}
    errors = lab_filters.podnet_lab_errors(
        {"node3": {"ansible_host": "192.168.57.13", "ansible_user": "debian",
                   "lab_segment": "near"}}, ["node3"],
        {**settings, "lab_name": "podnet-rt"})
    assert errors == ["node3: lab_segment 'near' is not a segment of lab_segments (defined: far); "
                      "name one of them, or remove lab_segment to put the host on the underlay"]


# -- the networkd file ---------------------------------------------------------------------------
SPEC = lab.NodeSpec(host="node2", address_cidr="192.168.56.12/24", authorized_key="k",
                    user="debian", nameservers=("192.168.56.100",))
# the file lab-up wrote for every host before lab_segments (a default lab's host must get it still)
DEFAULT_FILE = (
    "# podnet lab: the node's underlay address (host0 is the nspawn veth)\n"
    "[Match]\nName=host0\n\n[Network]\nAddress=192.168.56.12/24\nDNS=192.168.56.100\n"
    "LinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\nIgnoreCarrierLoss=yes\n")


def test_a_host_without_routes_gets_the_file_it_always_got() -> None:
    assert lab.underlay_network(SPEC) == DEFAULT_FILE


def test_routes_become_route_sections_and_a_default_route_has_no_destination() -> None:
    spec = lab.NodeSpec(**{**SPEC.__dict__, "routes": (
        lab.Route("192.168.57.0/24", "192.168.56.254"), lab.Route("", "192.168.56.1"))})
    assert lab.underlay_network(spec) == DEFAULT_FILE + (
        "\n[Route]\nDestination=192.168.57.0/24\nGateway=192.168.56.254\n"
        "\n[Route]\nGateway=192.168.56.1\n")


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["podnet", "podnet-rt", "a", "x" * 15])
def test_a_router_namespace_is_never_a_lab_name(name: str) -> None:
    assert lab.LAB_NAME_RE.match(name)
    assert not lab.LAB_NAME_RE.match(lab.router_netns(name))
    assert lab.router_netns(name) == f"{name}_rt"


def test_lab_links_have_fixed_local_macs_and_short_names() -> None:
    mac = lab.lab_mac("podnet-rt", "router/far")
    assert mac == lab.lab_mac("podnet-rt", "router/far") != lab.lab_mac("podnet", "router/far")
    first = int(mac.split(":")[0], 16)
    assert first & 0b10 and not first & 0b1 and len(mac.split(":")) == 6  # local, unicast
    assert len(lab.router_veth("a-bridge-name-x")) <= 15
    assert lab.router_veth("far").startswith("vr-")


# -- as root: the segments and the router made, kept, repaired and removed ----------------------
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def macs(netns: str) -> dict[str, str]:
    """The namespace's links and their addresses (``ip -br link``: name, state, address)."""
    return {line.split()[0].split("@")[0]: line.split()[2]
            for line in ip("-n", netns, "-br", "link").splitlines()}


@pytest.fixture
def bare_lab(tmp_path: Path) -> Iterator[str]:
    """A lab of its own with no hosts (a name no one else uses), torn down after."""
    name = f"pnseg{os.getpid() % 100000}"
    lab.ensure_netns(name, "underlay", "192.168.56.1/24")
    yield name
    lab.teardown(name, tmp_path / "state")
    assert lab.residue(name, tmp_path / "state") == []


@ROOT_ONLY
def test_segments_and_router_are_made_kept_repaired_and_removed(bare_lab: str,
                                                                 tmp_path: Path) -> None:
    name, rt = bare_lab, lab.router_netns(bare_lab)
    far = lab.segments_of([FAR])
    assert lab.ensure_segments(name, "underlay", 24, "192.168.56.254", far) is True
    assert lab.ensure_segments(name, "underlay", 24, "192.168.56.254", far) is False
    assert " 192.168.57.1/24 " in ip("-n", name, "-o", "-4", "addr", "show", "dev", "far")
    router = ip("-n", rt, "-o", "-4", "addr")
    assert " 192.168.56.254/24 " in router and " 192.168.57.254/24 " in router, router
    assert ip("-n", rt, "-4", "route").count("proto kernel") == 2  # connected routes only
    assert lab.netns_sysctl(name, "net.ipv4.ip_forward") == "0"
    assert lab.netns_sysctl(rt, "net.ipv4.ip_forward") == "1"
    ports = ip("-n", name, "-o", "link", "show", "master", "far")
    assert lab.router_veth("far") in ports, ports
    before = macs(rt)
    # a router removed by hand is made again, with the same addresses
    subprocess.run(["ip", "netns", "del", rt], check=True)
    assert lab.ensure_segments(name, "underlay", 24, "192.168.56.254", far) is True
    assert macs(rt) == before and set(before) == {"lo", "underlay", "far"}, before
    assert lab.ensure_segments(name, "underlay", 24, "192.168.56.254", far) is False
    assert lab.residue(name, tmp_path / "state") == [f"netns {lab.NETNS_DIR / name}",
                                                     f"netns {lab.NETNS_DIR / rt}"]
    # no segments any more: the router and the segment's bridge go, the underlay stays
    assert lab.ensure_segments(name, "underlay", 24, None, []) is True
    assert not lab.netns_exists(rt)
    links = ip("-n", name, "-o", "link")
    assert "far" not in links and "vr-" not in links and "underlay" in links, links
    assert lab.ensure_segments(name, "underlay", 24, None, []) is False
    # teardown (the fixture) removes the router with the lab
    lab.ensure_segments(name, "underlay", 24, "192.168.56.254", far)
