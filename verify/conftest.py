"""Fixtures for the verify suites: the lab's hosts, reached exactly as Ansible reaches them."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import testinfra

from podnet.inventory import Host, Inventory

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = Path(os.environ.get("PODNET_INVENTORY", ROOT / "inventory" / "lab"))


@cache
def inventory() -> Inventory:
    return Inventory(INVENTORY if INVENTORY.is_absolute() else ROOT / INVENTORY)


@cache
def hosts(group: str = "all") -> list[Host]:
    return [inventory().host(name) for name in inventory().group(group)]


@cache
def setting(name: str) -> object:
    """A variable from the inventory (as the first host sees it)."""
    first = inventory().group("all")[0]
    return inventory().render(first, (name,))[name]


@cache
def connect(name: str) -> testinfra.host.Host:
    h = inventory().host(name)
    v = h.vars
    return testinfra.get_host(
        f"ssh://{v.get('ansible_user', 'root')}@{h.address}",
        ssh_identity_file=v.get("ansible_ssh_private_key_file"),
        ssh_extra_args=v.get("ansible_ssh_common_args", ""),
    )


@dataclass(repr=False)
class Evidence:
    """What a command on a host printed; its str() is what a failing assert shows."""

    host: str
    command: str
    rc: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"\n  on {self.host}: $ {self.command}\n  rc={self.rc}\n"
            f"  stdout: {self.stdout.strip()}\n  stderr: {self.stderr.strip()}"
        )

    __repr__ = __str__


def run(name: str, *argv: str) -> Evidence:
    command = shlex.join(argv)
    result = connect(name).run(command)
    return Evidence(name, command, result.rc, result.stdout, result.stderr)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``lab_host`` over every lab host, ``host_pair`` over ordered pairs."""
    names = [h.name for h in hosts("lab")]
    if "lab_host" in metafunc.fixturenames:
        metafunc.parametrize("lab_host", names)
    if "host_pair" in metafunc.fixturenames:
        pairs = [(a, b) for a in names for b in names if a != b]
        metafunc.parametrize("host_pair", pairs, ids=[f"{a}->{b}" for a, b in pairs])
