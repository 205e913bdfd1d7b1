"""Filters for the lab role: thin wrappers over podnet.lab."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from podnet import lab


def podnet_lab_errors(
    hostvars: dict[str, Any], hosts: list[str], lab_vars: dict[str, Any]
) -> list[str]:
    """Validation errors of a lab inventory (empty when it is good)."""
    records = [_record(h, hostvars[h], lab_vars) for h in hosts]
    try:
        max_hosts = int(lab_vars.get("lab_max_hosts", lab.DEFAULT_MAX_HOSTS))
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"lab_max_hosts: must be an integer ({exc})") from exc
    return lab.validate(
        lab_vars.get("lab_name"),
        lab_vars.get("lab_underlay_cidr"),
        lab_vars.get("lab_controller_address"),
        records,
        max_hosts=max_hosts,
        nameservers=list(lab_vars.get("lab_nameservers") or []),
        segments=lab_vars.get("lab_segments") or [],
        router_address=lab_vars.get("lab_router_address"),
        bridge=lab_vars.get("lab_bridge", "underlay"),
        router_bgp_as=lab_vars.get("lab_router_bgp_as"),
        router_bgp_neighbors=lab_vars.get("lab_router_bgp_neighbors") or [],
    )


def podnet_lab_host_network(hv: dict[str, Any], lab_vars: dict[str, Any]) -> dict[str, Any]:
    """Where a (validated) lab host sits: its address with prefix, its bridge, the controller's
    address on it and its routes to the other networks (podnet.lab.host_network)."""
    try:
        net = lab.host_network(
            str(hv["ansible_host"]), hv.get("lab_segment"), str(lab_vars["lab_underlay_cidr"]),
            str(lab_vars["lab_controller_address"]), str(lab_vars.get("lab_bridge", "underlay")),
            lab_vars.get("lab_router_address") or None,
            lab.segments_of(lab_vars.get("lab_segments") or []))
    except (lab.LabError, KeyError, ValueError) as exc:
        raise AnsibleFilterError(f"lab host network: {exc}") from exc
    return {"address": net.address_cidr, "bridge": net.bridge,
            "controller_address": net.controller_address,
            "routes": [{"destination": r.destination, "gateway": r.gateway} for r in net.routes]}


def _record(name: str, hv: dict[str, Any], lab_vars: dict[str, Any]) -> dict[str, object]:
    """A host as podnet.lab.validate reads it: how it is reached and shaped."""
    return {"name": name, "address": hv.get("ansible_host", ""),
            "user": hv.get("ansible_user"), "port": hv.get("ansible_port", 22),
            "suite": hv.get("lab_suite", lab_vars.get("lab_image_suite", "bookworm")),
            "resolver": hv.get("lab_resolver", "resolv.conf"),
            "segment": hv.get("lab_segment")}


def podnet_role_packages(roles_dir: str) -> list[str]:
    try:
        return lab.role_packages(roles_dir)
    except lab.LabError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "podnet_lab_errors": podnet_lab_errors,
            "podnet_lab_host_network": podnet_lab_host_network,
            "podnet_role_packages": podnet_role_packages,
        }
