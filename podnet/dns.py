"""The DNS records of the cluster: Kubernetes DNS-Based Service Discovery 1.1.0, as CoreDNS
serves them (plugin/kubernetes), plus pod A records ``a-b-c-d.<ns>.pod.<zone>`` for pods that
exist (CoreDNS ``pods verified``).

- ``dns-version.<zone>`` TXT "1.1.0" (TTL 28800); every other record has CoreDNS' TTL of 5 s.
- ClusterIP Services: A, PTR for the ClusterIP, SRV ``_<port>._<proto>`` per named port
  (priority 0, weight 100, the Service port, target the Service name).
- Headless Services: one A per ready endpoint; per endpoint an A and PTR for
  ``<hostname>.<svc>.<ns>.svc.<zone>`` where hostname is the pod's ``spec.hostname`` when its
  ``spec.subdomain`` names the Service, else the endpoint IP with dashes (as CoreDNS does); SRV
  per named port and endpoint (weight ``floor(100 / endpoints)``, the endpoint's port).
- ExternalName Services: CNAME.

Records that need a pod's IP are only known once the pod runs: without observed IPs they come
back with ``data`` None and the pod they wait for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from podnet.addresses import dashed, reverse_name
from podnet.plan import Plan, ServicePlan

SCHEMA_VERSION = "1.1.0"
TTL = 5
VERSION_TTL = 28800


@dataclass(frozen=True)
class DNSRecord:
    name: str  # absolute, lower case, trailing dot
    type: str
    ttl: int
    data: str | None  # None: waits for the pod's IP
    pod: str | None = None  # ns/name of the pod whose IP the record needs

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        data = self.data if self.data is not None else f"<IP of pod {self.pod}>"
        return f"{self.name} {self.ttl} IN {self.type} {data}"


def records(plan: Plan, observed: Mapping[str, str] | None = None) -> list[DNSRecord]:
    """Every record of the zone; ``observed`` maps pod keys (ns/name) to their running IPs
    (without it, records that need a pod's IP come back waiting for it)."""
    zone = plan.settings.cluster_domain.lower()
    out = [DNSRecord(f"dns-version.{zone}.", "TXT", VERSION_TTL, f'"{SCHEMA_VERSION}"')]
    for svc in plan.services:
        fqdn = f"{svc.fqdn.lower()}."
        if svc.type == "ExternalName":
            out.append(DNSRecord(fqdn, "CNAME", TTL, f"{str(svc.external_name).lower()}."))
        elif svc.headless:
            out.extend(_headless(plan, svc, fqdn, observed))
        elif svc.cluster_ip:
            out.append(DNSRecord(fqdn, "A", TTL, svc.cluster_ip))
            out.append(DNSRecord(f"{reverse_name(svc.cluster_ip)}.", "PTR", TTL, fqdn))
            for port in svc.ports:
                # an unnamed port has no SRV record (DNS-Based Service Discovery 2.4.1)
                if port.name:
                    out.append(DNSRecord(f"_{port.name}._{port.protocol.lower()}.{fqdn}",
                                         "SRV", TTL, f"0 100 {port.port} {fqdn}"))
    for pod in plan.pods:
        ip = None if observed is None else observed.get(pod.key)
        if observed is None:
            out.append(DNSRecord(f"<ip>.{pod.namespace}.pod.{zone}.", "A", TTL, None, pod.key))
        elif ip:
            out.append(DNSRecord(f"{dashed(ip)}.{pod.namespace}.pod.{zone}.", "A", TTL, ip))
    return out


def _headless(plan: Plan, svc: ServicePlan, fqdn: str,
              observed: Mapping[str, str] | None) -> list[DNSRecord]:
    out: list[DNSRecord] = []
    names: dict[str, str] = {}
    # every selected pod is in the EndpointSlice (without ports if it lacks a named one),
    # so it has its A and PTR records; SRV records need the port
    for key in sorted(svc.pods):
        pod = plan.pod(key)
        ip = None if observed is None else observed.get(key)
        if observed is not None and not ip:
            continue  # not ready: not an endpoint
        if pod.hostname and pod.subdomain == svc.name:
            label = pod.hostname.lower()
        else:
            label = dashed(ip) if ip else "<ip>"
        host = f"{label}.{fqdn}"
        names[key] = host
        out.append(DNSRecord(fqdn, "A", TTL, ip, None if ip else key))
        out.append(DNSRecord(host, "A", TTL, ip, None if ip else key))
        if ip:
            out.append(DNSRecord(f"{reverse_name(ip)}.", "PTR", TTL, host))
    for port in svc.ports:
        if not port.name:
            continue
        ready = [e for e in port.endpoints if e.pod in names]
        if not ready:
            continue
        weight = max(1, 100 // len(ready))
        for e in ready:
            out.append(DNSRecord(f"_{port.name}._{port.protocol.lower()}.{fqdn}", "SRV",
                                 TTL, f"0 {weight} {e.port} {names[e.pod]}"))
    return out


def apex(zone: str, dns_ip: str, serial: int) -> list[DNSRecord]:
    """The zone's SOA (CoreDNS' values: refresh 7200, retry 1800, expire 86400, minimum 5, so
    NXDOMAIN is cached 5 s), NS and the name server's address, as CoreDNS serves them."""
    zone = zone.lower()
    return [
        DNSRecord(f"{zone}.", "SOA", TTL,
                  f"ns.dns.{zone}. hostmaster.{zone}. {serial} 7200 1800 86400 5"),
        DNSRecord(f"{zone}.", "NS", TTL, f"ns.dns.{zone}."),
        DNSRecord(f"ns.dns.{zone}.", "A", TTL, dns_ip),
    ]


def serial(found: list[DNSRecord]) -> int:
    """The SOA serial: a 32-bit digest of the records, so it changes when they do and a
    converge that changes nothing keeps it (CoreDNS uses the time of the last change)."""
    text = "\n".join(sorted(str(r) for r in found))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") or 1


def served(plan: Plan, observed: Mapping[str, str]) -> list[DNSRecord]:
    """What the DNS pods serve: the apex, then every record whose data is known, sorted."""
    found = sorted({r for r in records(plan, observed) if r.data is not None},
                   key=lambda r: (r.name, r.type, r.data or ""))
    settings = plan.settings
    return apex(settings.cluster_domain, str(settings.dns_service_ip), serial(found)) + found


def printable(plan: Plan) -> dict[str, Any]:
    """The plan as data with the DNS records known before any pod runs (``podnet plan``)."""
    return {**plan.data(), "dns_records": [r.as_dict() for r in records(plan)]}


def rr_line(record: DNSRecord) -> str:
    """The record as unbound's local-data and unbound-control local_datas take it."""
    return f"{record.name} {record.ttl} IN {record.type} {record.data}"
