"""What the cluster_dns role puts on a node: the records every DNS pod serves and, per DNS pod
planned on the node, where its unbound finds its configuration and control socket.

Pure functions over the typed plan and the pods' observed IPs, so the role's templates only
print.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from podnet import dns, kubelet
from podnet.plan import Plan
from podnet.settings import upstream_problem

SERVER_CONTAINER = "unbound"


def resolv_nameservers(text: str) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf, in order."""
    out = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.append(parts[1])
    return out


# systemd-resolved's stub listeners: a node whose /etc/resolv.conf names only these resolves
# through systemd-resolved, whose real upstreams are in RESOLVED_UPSTREAMS (kubeadm points the
# kubelet's resolvConf there for the same reason: the stub is the node's loopback, not a pod's)
RESOLVED_STUBS = frozenset({"127.0.0.53", "127.0.0.54"})
RESOLVED_UPSTREAMS = "/run/systemd/resolve/resolv.conf"


def upstreams(plan: Plan, resolv_conf: str, resolved_conf: str | None = None) -> list[str]:
    """The resolvers DNS pods forward to: ``podnet_dns_upstreams``, else the node's
    resolv.conf, or systemd-resolved's upstreams (``resolved_conf``, the text of
    RESOLVED_UPSTREAMS, None when the node has none) when resolv.conf names only its stub.
    Raises ValueError naming the fix when none is usable from a pod."""
    given = list(plan.settings.dns_upstreams)
    if given:
        return given
    found, source = resolv_nameservers(resolv_conf), "/etc/resolv.conf"
    if found and set(found) <= RESOLVED_STUBS:
        if resolved_conf is None:
            raise ValueError(
                f"the node's /etc/resolv.conf names only systemd-resolved's stub "
                f"({', '.join(found)}), which a pod cannot reach, and {RESOLVED_UPSTREAMS} (its "
                "real upstreams) is missing: start systemd-resolved, or set podnet_dns_upstreams "
                "to the resolvers the cluster DNS should forward to")
        found, source = resolv_nameservers(resolved_conf), RESOLVED_UPSTREAMS
    cluster, service = plan.settings.cluster_cidr, plan.settings.service_cidr
    usable, looping = [], []
    for text in found:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not isinstance(address, ipaddress.IPv4Address):
            continue
        problem = upstream_problem(address, cluster, service)
        if problem and problem.loops:
            looping.append(text)  # the cluster DNS itself, or a pod: it would ask itself
        elif not problem:
            usable.append(text)
    if not usable:
        why = (f"{', '.join(looping)} is inside the cluster (the DNS would forward to itself)"
               if looping else "loopback is the pod itself")
        raise ValueError(
            f"the node's {source} names no resolver a DNS pod can reach "
            f"(found: {', '.join(found) or 'none'}; {why}): set "
            "podnet_dns_upstreams to the resolvers the cluster DNS should forward to")
    return usable


def node_upstreams(plan: Plan, node: str, resolv_conf: str,
                   resolved_conf: str | None = None) -> list[str]:
    """The upstreams of ``node``'s DNS pods; none when the plan puts no DNS pod there (its
    resolvers need not suit a pod then)."""
    chosen = set(plan.dns_service.pods)
    if not any(p.key in chosen and p.node == node for p in plan.pods):
        return []
    return upstreams(plan, resolv_conf, resolved_conf)


def allowed_sources(plan: Plan) -> list[str]:
    """Who may query the cluster DNS: pods, the nodes, and the pod itself (its health check)."""
    nodes = sorted({f"{n.address}/32" for n in plan.nodes})
    return [str(plan.settings.cluster_cidr), *nodes, "127.0.0.0/8"]


def dns_pods(plan: Plan, observed: Mapping[str, str], node: str) -> list[dict[str, Any]]:
    """The pods of the kube-dns Service planned on ``node``, with their server's paths."""
    chosen = set(plan.dns_service.pods)
    ports = {p.key: next((port.port for c in p.containers if c.name == SERVER_CONTAINER
                          for port in c.ports if port.protocol == "UDP"), 53)
             for p in plan.pods}
    out = []
    for pod in kubelet.node_pods(plan, node):  # where the kubelet put each pod's files
        key = f"{pod['namespace']}/{pod['name']}"
        server = next((c for c in pod["containers"] if c["name"] == SERVER_CONTAINER), None)
        if key not in chosen or server is None or server["config_path"] is None:
            continue
        out.append({
            "id": pod["id"],
            "key": key,
            "config": server["config_path"],
            "control": f"{pod['dir']}/{SERVER_CONTAINER}.ctl",
            "ip": observed.get(key),
            "unit": server["unit"],
            "port": ports[key],
        })
    return out


def node_config(plan: Plan, observed: Mapping[str, str], node: str,
                resolv_conf: str, resolved_conf: str | None = None) -> dict[str, Any]:
    """Everything the cluster_dns role renders on ``node``."""
    served = dns.served(plan, observed)
    pods = dns_pods(plan, observed, node)
    return {
        "zone": plan.settings.cluster_domain.lower().rstrip(".") + ".",
        "serial": int(str(served[0].data).split()[2]),
        "records": [dns.rr_line(r) for r in served],
        "records_path": plan.paths.dns_records,
        "pods_path": plan.paths.dns_pods,
        "upstreams": upstreams(plan, resolv_conf, resolved_conf) if pods else [],
        "allow": allowed_sources(plan),
        "pods": pods,
    }


def quote(rr: str) -> str:
    """An RR as a quoted unbound local-data value (TXT data carries double quotes)."""
    if "'" in rr:
        raise ValueError(f"record {rr!r} has a single quote; unbound cannot take it")
    return f"'{rr}'"


def render_records(lines: Sequence[str]) -> str:
    """unbound local-data lines. A CNAME (ExternalName) gets a redirect zone of its own:
    unbound only follows a local CNAME to its target from such a zone, and a pod's resolver
    needs the target's address in the answer, as CoreDNS gives it."""
    out = []
    for rr in lines:
        parts = rr.split()
        if len(parts) > 4 and parts[3] == "CNAME":
            out.append(f"  local-zone: {quote(parts[0])} redirect\n")
        out.append(f"  local-data: {quote(rr)}\n")
    return "".join(out)
