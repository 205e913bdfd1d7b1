"""Filters over the cluster model: thin wrappers over the podnet package.

Each takes the plan as Ansible holds it (a role's ``<role>_plan``) and turns it into the typed
plan once (``Plan.from_data``); bad input raises AnsibleFilterError naming the filter.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from podnet import (
    addresses,
    backends,
    clusterdns,
    endpoints,
    ingress,
    kubelet,
    loadbalancer,
    proxier,
)
from podnet.plan import Plan


def _plan(data: Any, name: str) -> Plan:
    try:
        return Plan.from_data(data)
    except ValueError as exc:
        raise AnsibleFilterError(f"{name}: {exc}") from exc


def podnet_node_pods(plan: dict[str, Any], node: str) -> list[dict[str, Any]]:
    """What the kubelet role renders for the pods the plan puts on ``node``."""
    return kubelet.node_pods(_plan(plan, "podnet_node_pods"), node)


def podnet_stable_ipam(plan: dict[str, Any]) -> dict[str, Any]:
    """What the cni role writes for the pods that keep their address on any node: podnet-ipam's
    assignments file and the prefix length its results give (podnet/kubelet.py)."""
    return kubelet.stable_ipam(_plan(plan, "podnet_stable_ipam"))


def podnet_kube_proxy(plan: dict[str, Any], pods: Any, node: str,
                      options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the kube_proxy role writes on ``node`` (the input its renderer turns into
    kube-proxy's iptables rules there, the jumps, the pods to probe) from the plan and the pods'
    facts (a list of {namespace, name, ip}, as ansible_local.podnet.pods of every node)."""
    typed = _plan(plan, "podnet_kube_proxy")
    try:
        return proxier.node_rules(typed, endpoints.observed_ips(pods), node, options or {})
    except (KeyError, TypeError, ValueError, StopIteration) as exc:
        raise AnsibleFilterError(f"podnet_kube_proxy: {type(exc).__name__}: {exc}") from exc


def podnet_routing(plan: dict[str, Any], node: str) -> dict[str, Any]:
    """What the pod_network role writes on ``node`` for the plan's backend (podnet/backends.py):
    host-gw routes, the VXLAN device and its peers, or BIRD's AS, neighbours and announcements."""
    typed = _plan(plan, "podnet_routing")
    try:
        return backends.node_routing(typed, node)
    except StopIteration:
        raise AnsibleFilterError(f"podnet_routing: {node} is not a node of the plan") from None


def podnet_load_balancer(plan: dict[str, Any]) -> dict[str, Any]:
    """What makes the LoadBalancer addresses reachable, in either mode (podnet/loadbalancer.py):
    the mode, the nodes, and per address its Service, ports, health check and l2 ranking."""
    return loadbalancer.config(_plan(plan, "podnet_load_balancer"))


def podnet_cluster_pods(hostvars: Any, plan: dict[str, Any], strict: bool = True
                        ) -> list[dict[str, Any]]:
    """Every node's ansible_local.podnet.pods, as one list.

    A node without the fact would make its pods' endpoints vanish from every node's Service
    rules, so that is an error unless ``strict`` is off (a first dry run, before any pod runs).
    """
    pods: list[dict[str, Any]] = []
    try:
        # a NotReady node runs none of the plan's pods: what it last reported is stale
        for node in _plan(plan, "podnet_cluster_pods").ready_nodes:
            local = hostvars[node.name].get("ansible_local") or {}
            if "podnet" not in local and strict:
                raise AnsibleFilterError(
                    f"podnet_cluster_pods: node {node.name} has not reported its pods "
                    "(ansible_local.podnet); Services need every node's pods: run the node play "
                    "on all nodes (no --limit), or gather their facts first")
            pods.extend((local.get("podnet") or {}).get("pods") or [])
    except (KeyError, TypeError, AttributeError) as exc:
        raise AnsibleFilterError(f"podnet_cluster_pods: {exc}") from exc
    return pods


def podnet_cluster_dns(plan: dict[str, Any], pods: Any, node: str,
                       resolv_conf: str, resolved_conf: str | None = None) -> dict[str, Any]:
    """What the cluster_dns role renders on ``node``: the records (with the pods' observed
    IPs), the zone serial, the upstream resolvers and the node's DNS pods."""
    typed = _plan(plan, "podnet_cluster_dns")
    try:
        return clusterdns.node_config(typed, endpoints.observed_ips(pods), node, resolv_conf,
                                      resolved_conf)
    except ValueError as exc:
        raise AnsibleFilterError(f"cluster_dns: {exc}") from exc
    except (KeyError, TypeError, StopIteration) as exc:
        raise AnsibleFilterError(f"podnet_cluster_dns: {type(exc).__name__}: {exc}") from exc


def podnet_ingress(plan: dict[str, Any], pods: Any) -> dict[str, Any]:
    """The Ingress controller's input (podnet/ingress.py), the same on every node: servers,
    locations, upstreams with the selected pods' observed IPs, and the TLS certificates."""
    typed = _plan(plan, "podnet_ingress")
    try:
        return ingress.config(typed, endpoints.observed_ips(pods))
    except (KeyError, TypeError, ValueError, StopIteration) as exc:
        raise AnsibleFilterError(f"podnet_ingress: {type(exc).__name__}: {exc}") from exc


def podnet_dns_upstreams(plan: dict[str, Any], node: str, resolv_conf: str,
                         resolved_conf: str | None = None) -> list[str]:
    """The resolvers ``node``'s DNS pods will forward to (checked before any pod is wired)."""
    typed = _plan(plan, "podnet_dns_upstreams")
    try:
        return clusterdns.node_upstreams(typed, node, resolv_conf, resolved_conf)
    except ValueError as exc:
        raise AnsibleFilterError(f"cluster_dns on {node}: {exc}") from exc


def podnet_unbound_local_data(records: list[str]) -> str:
    try:
        return clusterdns.render_records(records)
    except ValueError as exc:
        raise AnsibleFilterError(f"podnet_unbound_local_data: {exc}") from exc


def podnet_placeholder_hosts(hostvars: Any, hosts: list[str]) -> list[str]:
    """The hosts whose address is a documentation placeholder (the example inventory's)."""
    return addresses.placeholder_hosts(
        {h: hostvars[h].get("ansible_host", h) for h in hosts})


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "podnet_node_pods": podnet_node_pods,
            "podnet_kube_proxy": podnet_kube_proxy,
            "podnet_load_balancer": podnet_load_balancer,
            "podnet_routing": podnet_routing,
            "podnet_stable_ipam": podnet_stable_ipam,
            "podnet_cluster_pods": podnet_cluster_pods,
            "podnet_cluster_dns": podnet_cluster_dns,
            "podnet_ingress": podnet_ingress,
            "podnet_dns_upstreams": podnet_dns_upstreams,
            "podnet_unbound_local_data": podnet_unbound_local_data,
            "podnet_placeholder_hosts": podnet_placeholder_hosts,
        }
