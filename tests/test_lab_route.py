"""podnet.lab.route_into_lab: the "no route into the lab" check reads the kernel's route right.

verify/test_lab.py asks the kernel (``ip route get``, which sends nothing) how it would send a
packet from the machine's own namespace to each lab host, and expects no way in. These are real
``ip -j`` outputs; a route the check cannot place raises instead of passing.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from podnet import lab

LINKS: dict[str, dict[str, Any]] = {
    "lo": {"ifname": "lo"},
    "eth0": {"ifname": "eth0"},
    # a veth whose other end lives in the namespace with id 0 (the lab, below)
    "vh-lab": {"ifname": "vh-lab", "link_netnsid": 0,
               "linkinfo": {"info_kind": "veth"}},
    # a veth into some other namespace
    "vh-other": {"ifname": "vh-other", "link_netnsid": 3, "linkinfo": {"info_kind": "veth"}},
}
VIA_DEFAULT = {"dst": "192.168.56.100", "gateway": "192.0.2.1", "dev": "eth0",
               "prefsrc": "192.0.2.2", "flags": [], "uid": 0, "cache": []}
LOCAL = {"type": "local", "dst": "192.168.56.11", "dev": "lo", "prefsrc": "192.168.56.11",
         "flags": [], "uid": 0, "cache": ["local"]}
INTO_LAB = {"dst": "192.168.56.11", "dev": "vh-lab", "prefsrc": "192.168.56.1", "flags": [],
            "uid": 0, "cache": []}


@pytest.mark.parametrize(("route", "nsid", "why"), [
    (VIA_DEFAULT, 0, None),  # out through the machine's own network: not into the lab
    (None, 0, None),  # no route at all
    (LOCAL, None, "192.168.56.11 is an address of this machine itself"),
    (INTO_LAB, 0, "vh-lab leads into the lab's network namespace"),
    ({**INTO_LAB, "dev": "vh-other"}, 0, None),  # another namespace's veth
    (INTO_LAB, None, None),  # the lab has no id here: no link of this namespace leads there
], ids=["default-route", "unreachable", "local-address", "veth-into-lab", "other-netns",
        "lab-without-id"])
def test_route_into_lab(route: dict[str, Any] | None, nsid: int | None, why: str | None) -> None:
    assert lab.route_into_lab(route, LINKS, nsid) == why


def test_a_route_through_an_unknown_link_raises() -> None:
    with pytest.raises(lab.LabError, match="'ghost', which ip link does not list"):
        lab.route_into_lab({**VIA_DEFAULT, "dev": "ghost"}, LINKS, 0)


def fake_ip(monkeypatch: pytest.MonkeyPatch, rc: int, stdout: str, stderr: str = "") -> None:
    def run(argv: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
        assert argv[:3] == ["ip", "-j", "route"] or argv[:3] == ["ip", "-j", "netns"], argv
        return subprocess.CompletedProcess(argv, rc, stdout, stderr)

    monkeypatch.setattr(lab.subprocess, "run", run)


def test_kernel_route_reads_ip_route_get(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ip(monkeypatch, 0, '[{"dst":"192.168.56.100","gateway":"192.0.2.1","dev":"eth0",'
                            '"prefsrc":"192.0.2.2","flags":[],"uid":0,"cache":[]}]\n')
    assert lab.kernel_route("192.168.56.100") == VIA_DEFAULT


def test_kernel_route_without_a_route_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ip(monkeypatch, 2, "", "RTNETLINK answers: Network is unreachable\n")
    assert lab.kernel_route("192.168.56.100") is None


def test_kernel_route_that_fails_otherwise_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ip(monkeypatch, 1, "", 'Error: any valid prefix is expected rather than "x".\n')
    with pytest.raises(lab.LabError, match="ip route get x: Error"):
        lab.kernel_route("x")


def test_netns_id_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ip(monkeypatch, 0, '[{"name":"other"},{"name":"podnet","id":0}]\n')
    assert lab.netns_id("podnet") == 0
    assert lab.netns_id("other") is None
    assert lab.netns_id("absent") is None


def test_the_machine_has_no_way_into_an_address_no_lab_uses() -> None:
    """The real commands on this machine: 192.0.2.200 (TEST-NET-1) leads nowhere podnet made."""
    route = lab.kernel_route("192.0.2.200")
    assert lab.route_into_lab(route, lab.namespace_links(), None) is None
