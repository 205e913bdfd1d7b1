"""LoadBalancer Services made reachable: what the lb host (cloud mode) and the nodes (l2 mode)
are given, from the plan (docs/design.md, "LoadBalancer").

Both modes answer ARP for each address on the underlay and hand its packets, destination kept,
to a node whose kube-proxy rules for the address do the rest (the external and firewall chains,
loadBalancerSourceRanges, the Local policy). Which nodes may take an address is decided by
kube-proxy's health servers, as a cloud provider's load balancer decides it:

- externalTrafficPolicy Cluster: every node whose proxy is healthy (its node server, port
  ``kubeproxy.HEALTHZ_PORT`` path ``/healthz``);
- externalTrafficPolicy Local: the nodes with a ready local endpoint (the Service's
  healthCheckNodePort answers 200 there, 503 elsewhere).

In l2 mode each address is announced by one node at a time: the nodes are ranked for it by
rendezvous hashing (highest ``sha256(address/node)`` first), so the addresses spread over the
nodes, every node computes the same order without talking to the others, and a node's
leaving or coming back moves only the addresses it ranks first for.
"""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Address
from typing import Any

from podnet.kubeproxy import HEALTHZ_PORT
from podnet.plan import Plan, ServicePlan

NODE_HEALTH_PATH = "/healthz"
# a Local Service's health check answers on every path of its healthCheckNodePort
SERVICE_HEALTH_PATH = "/"


def ranking(address: str, nodes: list[str]) -> list[str]:
    """The nodes in the order they announce ``address`` in l2 mode (rendezvous hashing)."""
    def weight(node: str) -> str:
        return hashlib.sha256(f"{address}/{node}".encode()).hexdigest()
    return sorted(nodes, key=weight, reverse=True)


def health_check(svc: ServicePlan) -> dict[str, Any]:
    """Where a load balancer asks whether a node may take ``svc``'s traffic."""
    if svc.external_traffic_policy == "Local" and svc.health_check_node_port:
        return {"port": svc.health_check_node_port, "path": SERVICE_HEALTH_PATH}
    return {"port": HEALTHZ_PORT, "path": NODE_HEALTH_PATH}


def ingress(svc: ServicePlan) -> list[dict[str, str]]:
    """The Service's status.loadBalancer.ingress: its address, reached with the destination
    kept (ipMode VIP: kube-proxy on the node matches the address itself)."""
    return [{"ip": svc.lb_ip, "ipMode": "VIP"}] if svc.lb_ip else []


def balancers(plan: Plan) -> list[str]:
    """The hosts of podnet_lb_group (cloud mode's load balancer)."""
    return [h.name for h in plan.hosts if plan.settings.lb_group in h.groups]


def config(plan: Plan) -> dict[str, Any]:
    """What both modes' components are given: the mode, the nodes, and per LoadBalancer
    address its Service, ports, health check, VRRP id (its place in the pool, 1-255) and the
    nodes' l2 ranking."""
    s = plan.settings
    nodes = [{"name": n.name, "address": n.address} for n in plan.nodes]
    names = [n.name for n in plan.nodes]
    pool_start = int(s.lb_pool.network_address) if s.lb_pool else 0
    addresses = []
    served = {IPv4Address(v.lb_ip): v for v in plan.services
              if v.type == "LoadBalancer" and v.lb_ip}
    for address in sorted(served):
        svc = served[address]
        assert svc.lb_ip is not None
        addresses.append({
            "address": svc.lb_ip,
            "service": svc.key,
            "policy": svc.external_traffic_policy,
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol}
                      for p in svc.ports],
            "source_ranges": list(svc.load_balancer_source_ranges),
            "check": health_check(svc),
            "vrid": int(address) - pool_start + 1,
            "ranking": ranking(svc.lb_ip, names),
        })
    return {"mode": s.lb_mode, "pool": str(s.lb_pool) if s.lb_pool else None,
            "underlay_cidr": str(s.underlay_cidr), "balancers": balancers(plan),
            "nodes": nodes, "addresses": addresses}
