"""The lab image carries every package the roles name in <role>_packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from podnet import lab

ROOT = Path(__file__).resolve().parent.parent


def write_defaults(root: Path, role: str, text: str) -> None:
    path = root / role / "defaults" / "main.yml"
    path.parent.mkdir(parents=True)
    path.write_text(text)


def test_packages_of_all_roles_are_collected_sorted_and_unique(tmp_path: Path) -> None:
    write_defaults(tmp_path, "cni", "cni_packages: [containernetworking-plugins, iproute2]\n")
    write_defaults(tmp_path, "dns", "dns_packages: [unbound, iproute2]\ndns_port: 53\n")
    assert lab.role_packages(tmp_path) == ["containernetworking-plugins", "iproute2", "unbound"]


def test_only_the_roles_own_packages_variable_counts(tmp_path: Path) -> None:
    write_defaults(tmp_path, "cni", "other_packages: [nginx]\ncni_extra: [x]\n")
    assert lab.role_packages(tmp_path) == []


def test_a_packages_variable_that_is_not_a_list_is_an_error(tmp_path: Path) -> None:
    write_defaults(tmp_path, "cni", "cni_packages: containernetworking-plugins\n")
    with pytest.raises(lab.LabError, match="cni_packages must be a list of package names"):
        lab.role_packages(tmp_path)


def test_the_real_roles_put_node_base_packages_in_the_image() -> None:
    packages = lab.role_packages(ROOT / "roles")
    assert {"iptables", "iproute2", "conntrack", "python3-apt"} <= set(packages)


def test_the_ingress_controllers_packages_are_in_the_mirror() -> None:
    """nginx for the controller pods, openssl for their self-signed default certificate."""
    assert {"nginx", "openssl"} <= set(lab.role_packages(ROOT / "roles"))
