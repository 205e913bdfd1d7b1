"""podnet.lab.validate: a bad lab inventory is refused with a message naming field and fix."""

from __future__ import annotations

from typing import Any

import pytest

from podnet import lab

GOOD_HOSTS = [
    {"name": "node1", "address": "192.168.56.11"},
    {"name": "node2", "address": "192.168.56.12"},
    {"name": "client", "address": "192.168.56.100"},
]


def errors(hosts: Any = GOOD_HOSTS, name: str = "podnet", cidr: str = "192.168.56.0/24",
           ctrl: str = "192.168.56.1", **kw: Any) -> list[str]:
    return lab.validate(name, cidr, ctrl, hosts, **kw)


def test_good_inventory_has_no_errors() -> None:
    assert errors() == []


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "Podnet"}, "lab_name: 'Podnet'"),
        ({"name": "a-name-that-is-far-too-long"}, "lab_name"),
        ({"name": ""}, "lab_name"),
        ({"name": None}, "lab_name"),
        ({"cidr": "192.168.56.1/24"}, "lab_underlay_cidr: '192.168.56.1/24' is not a network"),
        ({"cidr": "not-a-cidr"}, "lab_underlay_cidr"),
        ({"cidr": "fd00::/64"}, "not IPv4"),
        ({"ctrl": "10.0.0.1"}, "lab_controller_address: 10.0.0.1 is not a host address"),
        ({"ctrl": "192.168.56.255"}, "lab_controller_address"),
        ({"ctrl": "x"}, "lab_controller_address: 'x' is not an IPv4 address"),
    ],
)
def test_bad_lab_settings_name_the_field(kwargs: dict, needle: str) -> None:
    found = errors(**kwargs)
    assert any(needle in e for e in found), found


def test_duplicate_host_name_is_refused_case_insensitively() -> None:
    hosts = [*GOOD_HOSTS, {"name": "NODE1", "address": "192.168.56.20"}]
    found = errors(hosts)
    assert any("NODE1: duplicate host name (same as node1" in e for e in found), found


def test_duplicate_address_is_refused() -> None:
    hosts = [*GOOD_HOSTS, {"name": "node9", "address": "192.168.56.11"}]
    found = errors(hosts)
    assert found == [
        "node9: ansible_host 192.168.56.11 is already used by node1; give each host its own address"
    ]


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.57.11", "192.168.56.0", "192.168.56.255"])
def test_address_outside_the_underlay_is_refused(address: str) -> None:
    found = errors([{"name": "node1", "address": address}])
    assert len(found) == 1 and "outside lab_underlay_cidr 192.168.56.0/24" in found[0], found


def test_controller_address_cannot_be_a_host() -> None:
    found = errors([{"name": "node1", "address": "192.168.56.1"}])
    assert any("is the controller's lab address" in e for e in found), found


def test_address_that_is_not_an_ip_is_refused() -> None:
    found = errors([{"name": "node1", "address": "node1.example"}])
    assert found == ["node1: ansible_host 'node1.example' is not an IPv4 address"]


@pytest.mark.parametrize("name", ["-node", "node_1", "n" * 40, ""])
def test_host_name_must_be_a_dns_label(name: str) -> None:
    found = errors([{"name": name, "address": "192.168.56.11"}])
    assert any("host name is not a DNS label" in e for e in found), found


def test_too_many_hosts_is_refused() -> None:
    hosts = [{"name": f"n{i}", "address": f"192.168.56.{10 + i}"} for i in range(5)]
    found = errors(hosts, max_hosts=4)
    assert found == [
        "inventory: 5 lab hosts, more than lab_max_hosts=4; remove hosts or raise "
        "lab_max_hosts if this machine has the memory"
    ]


def test_hosts_must_fit_in_the_underlay() -> None:
    hosts = [{"name": f"n{i}", "address": f"192.168.56.{2 + i}"} for i in range(3)]
    found = errors(hosts, cidr="192.168.56.0/30", ctrl="192.168.56.1")
    assert any("do not fit in lab_underlay_cidr" in e for e in found), found


def test_every_problem_is_reported_at_once() -> None:
    hosts = [
        {"name": "node1", "address": "10.1.1.1"},
        {"name": "node1", "address": "192.168.56.12"},
    ]
    assert len(errors(hosts, name="Bad")) == 3


def test_machine_names_are_unique_per_lab() -> None:
    assert lab.machine_name("podnet", "node1") != lab.machine_name("podnet-mol", "node1")
