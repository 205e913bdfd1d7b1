"""podnet.inventory renders the lab inventory exactly as ansible-playbook would."""

from __future__ import annotations

from pathlib import Path

import pytest

from podnet.inventory import Inventory

LAB = Path(__file__).resolve().parent.parent / "inventory" / "lab"


def test_lab_groups_follow_the_addressing_plan() -> None:
    inv = Inventory(LAB)
    assert inv.group("nodes") == ["node1", "node2", "node3"]
    assert inv.group("clients") == ["client", "client2"]
    assert inv.group("loadbalancers") == ["lb"]
    addresses = {n: inv.host(n).address for n in inv.group("lab")}
    assert addresses == {
        "node1": "192.168.56.11",
        "node2": "192.168.56.12",
        "node3": "192.168.56.13",
        "client": "192.168.56.100",
        "client2": "192.168.56.101",
        "lb": "192.168.56.200",
    }


def test_connection_goes_through_the_named_labs_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PODNET_LAB", "other")
    host = Inventory(LAB).host("node1")
    assert "nsenter --net=/run/netns/other nc %h %p" in host.vars["ansible_ssh_common_args"]
    assert host.vars["ansible_ssh_private_key_file"] == "/var/lib/podnet/labs/other/ssh/id_ed25519"


def test_default_lab_name_is_podnet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODNET_LAB", raising=False)
    inv = Inventory(LAB)
    assert inv.render("node2", ("lab_name", "lab_state_dir")) == {
        "lab_name": "podnet",
        "lab_state_dir": "/var/lib/podnet/labs/podnet",
    }


def test_unknown_host_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="node9 is not in the inventory"):
        Inventory(LAB).host("node9")
