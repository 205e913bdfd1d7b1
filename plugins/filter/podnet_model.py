"""Filters over the cluster model: thin wrappers over the podnet package."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from podnet import addresses, endpoints, kubelet, kubeproxy


def podnet_service_chains(service: str, port_name: str, protocol: str) -> dict[str, str]:
    """'ns/name' | podnet_service_chains('http', 'TCP') -> {svc, svl, ext, fw} chain names."""
    namespace, sep, name = str(service).partition("/")
    if not sep:
        raise AnsibleFilterError(f"podnet_service_chains: '{service}' is not 'namespace/name'")
    return kubeproxy.chains(namespace, name, port_name, protocol)


def podnet_endpoint_chain(service: str, port_name: str, protocol: str, ip: str,
                          port: int) -> str:
    namespace, sep, name = str(service).partition("/")
    if not sep:
        raise AnsibleFilterError(f"podnet_endpoint_chain: '{service}' is not 'namespace/name'")
    return kubeproxy.endpoint_chain(namespace, name, port_name, protocol, ip, int(port))


def podnet_observed_ips(pods: Any) -> dict[str, str]:
    """Pod facts (a list of {namespace, name, ip}) -> {'ns/name': ip}."""
    try:
        return endpoints.observed_ips(pods)
    except ValueError as exc:
        raise AnsibleFilterError(f"podnet_observed_ips: {exc}") from exc


def podnet_pods_on(plan: dict[str, Any], node: str) -> list[dict[str, Any]]:
    """The plan's pods (as data) that run on ``node``."""
    try:
        return [p for p in plan["pods"] if p["node"] == node]
    except (KeyError, TypeError) as exc:
        raise AnsibleFilterError(f"podnet_pods_on: not a podnet plan ({exc})") from exc


def podnet_node_pods(plan: dict[str, Any], node: str) -> list[dict[str, Any]]:
    """What the kubelet role renders for the pods the plan puts on ``node``."""
    try:
        return kubelet.node_pods(plan, node)
    except (KeyError, TypeError) as exc:
        raise AnsibleFilterError(f"podnet_node_pods: not a podnet plan ({exc})") from exc


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "podnet_service_chains": podnet_service_chains,
            "podnet_endpoint_chain": podnet_endpoint_chain,
            "podnet_observed_ips": podnet_observed_ips,
            "podnet_pods_on": podnet_pods_on,
            "podnet_node_pods": podnet_node_pods,
            "podnet_dashed_ip": addresses.dashed,
            "podnet_reverse_name": addresses.reverse_name,
        }
