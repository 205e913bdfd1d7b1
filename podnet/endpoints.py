"""Endpoints of Services for the pods that actually run, with the IPs their nodes reported."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from podnet.plan import Plan, ServicePlan


@dataclass(frozen=True)
class EndpointAddress:
    """A Service port's endpoint at the IP its pod runs with (an EndpointSlice's address)."""

    pod: str  # ns/name
    node: str
    ip: str
    port: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def observed_ips(pods: object) -> dict[str, str]:
    """``{ns/name: ip}`` from pod facts: a list of ``{namespace, name, ip}`` mappings."""
    out: dict[str, str] = {}
    if not isinstance(pods, list):
        raise ValueError("observed pods must be a list of {namespace, name, ip} mappings")
    for i, pod in enumerate(pods):
        if not isinstance(pod, Mapping) or not all(k in pod for k in ("namespace", "name")):
            raise ValueError(f"observed pod [{i}] needs namespace and name, got {pod!r}")
        if pod.get("ip"):
            out[f"{pod['namespace']}/{pod['name']}"] = str(pod["ip"])
    return out


def for_port(service: ServicePlan, port_name: str, protocol: str,
             observed: Mapping[str, str]) -> list[EndpointAddress]:
    """Ready endpoints (pods with an IP) of one port, in the plan's order."""
    port = next(p for p in service.ports if p.name == port_name and p.protocol == protocol)
    return [EndpointAddress(e.pod, e.node, observed[e.pod], e.port)
            for e in port.endpoints if observed.get(e.pod)]


def all_endpoints(plan: Plan, observed: Mapping[str, str]
                  ) -> dict[str, dict[str, list[EndpointAddress]]]:
    """``{ns/svc: {"name/PROTO": [EndpointAddress, ...]}}`` for every Service with a
    selector."""
    out: dict[str, dict[str, list[EndpointAddress]]] = {}
    for svc in plan.services:
        out[svc.key] = {f"{p.name or p.port}/{p.protocol}": for_port(svc, p.name, p.protocol,
                                                                      observed)
                        for p in svc.ports}
    return out
