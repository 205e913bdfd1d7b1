"""The cluster plan: what the model decided, as typed values.

The model (podnet/model.py) builds a :class:`Plan`; it crosses Ansible as data
(:meth:`Plan.data`, the fact ``cluster_model_plan`` and each role's ``<role>_plan`` input), and
every consumer turns that data back into a Plan once, with :meth:`Plan.from_data`, as CoreDNS
turns each API object into its own struct at the boundary. Renderers read attributes, never
string keys. Each field has one name on both sides of the boundary.

The plan holds what Kubernetes' API would hold (nodes and their pod CIDRs, pods and where they
run, Services with their addresses and the endpoints their selectors pick, Ingress routes) and
the node paths every component shares; what a component makes of it (kube-proxy's chain names,
unit files, DNS records) is the renderers' business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from podnet.allocate import Record
from podnet.paths import PATHS, NodePaths
from podnet.problems import Problem, Problems
from podnet.settings import Settings

DNS_SERVICE = "kube-system/kube-dns"  # the cluster DNS addon's Service (podnet/addons)
INGRESS_SERVICE = "ingress-nginx/ingress-nginx-controller"  # the Ingress controller add-on's
INGRESS_CONTROLLER = "k8s.io/ingress-nginx"  # the IngressClass controller podnet serves
# the add-ons' Deployments (PodPlan.owner) and Services: podnet's own, not the user's workloads
ADDON_OWNERS = ("Deployment kube-system/cluster-dns",
                "Deployment ingress-nginx/ingress-nginx-controller")
ADDON_SERVICES = (DNS_SERVICE, INGRESS_SERVICE)


def pod_hostname(name: str, hostname: str | None) -> str:
    """A pod's hostname: spec.hostname, else its name cut to a 63-character label."""
    return hostname or name[:63].rstrip("-.")


@dataclass(frozen=True)
class NodePlan:
    name: str
    address: str
    labels: dict[str, str]
    pod_cidr: str
    gateway: str
    # routers the node's BIRD peers with in the bgp backend: [{"address": ..., "as": ...}]
    bgp_peers: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class HostPlan:
    name: str
    address: str
    groups: list[str]


@dataclass(frozen=True)
class PortPlan:
    """A container port."""

    name: str | None
    port: int
    protocol: str
    host_port: int | None = None  # the portmap plugin maps host_ip:host_port to it
    host_ip: str | None = None  # None: every address of the node


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    image: str
    workload: dict[str, Any]
    ports: list[PortPlan]
    env: dict[str, str]
    readiness: dict[str, Any] | None = None  # the readinessProbe podnet runs (objects.Probe)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ContainerPlan:
        return cls(data["name"], data["image"], dict(data["workload"]),
                   [PortPlan(**p) for p in data["ports"]], dict(data["env"]),
                   dict(data["readiness"]) if data.get("readiness") else None)


@dataclass(frozen=True)
class PodPlan:
    namespace: str
    name: str
    node: str
    owner: str
    labels: dict[str, str]
    hostname: str | None  # spec.hostname as given
    subdomain: str | None
    restart_policy: str
    containers: list[ContainerPlan]
    source: str
    # the address the cluster gave a pod that keeps it on any node (from the stable pods' block,
    # podnet-ipam hands it out); None: the node's host-local IPAM gives one from its pod CIDR
    stable_ip: str | None = None
    host_network: bool = False  # runs in its node's network namespace, with the node's address
    dns_policy: str = "ClusterFirst"
    # spec.dnsConfig: {"nameservers": [...], "searches": [...], "options": [[name, value]]}
    dns_config: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def host_name(self) -> str:
        """Its hostname; on the host network its node's, as in Kubernetes."""
        return self.node if self.host_network else pod_hostname(self.name, self.hostname)

    @property
    def addon(self) -> bool:
        """A pod of one of podnet's add-ons (cluster DNS, Ingress controller)."""
        return self.owner in ADDON_OWNERS

    @property
    def readiness(self) -> dict[str, Any] | None:
        """The pod's readinessProbe (the first container's that has one)."""
        return next((c.readiness for c in self.containers if c.readiness), None)

    def named_port(self, name: str, protocol: str) -> int | None:
        for container in self.containers:
            for port in container.ports:
                if port.name == name and port.protocol == protocol:
                    return port.port
        return None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> PodPlan:
        return cls(**{**data, "labels": dict(data["labels"]),
                      "containers": [ContainerPlan.from_data(c) for c in data["containers"]]})


@dataclass(frozen=True)
class EndpointPlan:
    """A pod a Service port's selector picks, and its target port (its IP comes when it runs)."""

    pod: str  # ns/name
    node: str
    port: int  # the target port on this pod


@dataclass(frozen=True)
class ServicePortPlan:
    name: str
    protocol: str
    port: int
    target_port: int | str
    node_port: int | None
    endpoints: list[EndpointPlan]

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ServicePortPlan:
        return cls(data["name"], data["protocol"], data["port"], data["target_port"],
                   data["node_port"], [EndpointPlan(**e) for e in data["endpoints"]])


@dataclass(frozen=True)
class ServicePlan:
    namespace: str
    name: str
    type: str
    cluster_ip: str | None  # None for headless and ExternalName
    headless: bool
    external_name: str | None
    lb_ip: str | None
    selector: dict[str, str] | None
    ports: list[ServicePortPlan]
    session_affinity_timeout: int | None
    external_traffic_policy: str
    internal_traffic_policy: str
    load_balancer_source_ranges: list[str]
    health_check_node_port: int | None
    fqdn: str
    source: str
    pods: list[str]  # ns/name of the pods the selector picks (ready or not)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def addon(self) -> bool:
        """A Service of one of podnet's add-ons (kube-dns, the Ingress controller's)."""
        return self.key in ADDON_SERVICES

    @property
    def proxied(self) -> bool:
        """Whether kube-proxy writes rules for it: it has a ClusterIP (not headless, not
        ExternalName)."""
        return self.type != "ExternalName" and not self.headless and bool(self.cluster_ip)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ServicePlan:
        return cls(**{**data,
                      "selector": dict(data["selector"]) if data["selector"] is not None
                      else None,
                      "ports": [ServicePortPlan.from_data(p) for p in data["ports"]],
                      "load_balancer_source_ranges": list(data["load_balancer_source_ranges"]),
                      "pods": list(data["pods"])})


@dataclass(frozen=True)
class IngressRoutePlan:
    ingress: str  # ns/name
    host: str | None  # None: any host
    path: str
    path_type: str
    service: str
    service_port: int
    tls: bool
    secret_name: str | None


@dataclass(frozen=True)
class IngressClassPlan:
    name: str
    controller: str
    default: bool


@dataclass(frozen=True)
class IgnoredIngressPlan:
    """An Ingress the controller leaves alone, and why (another class's, or no class)."""

    ingress: str  # ns/name
    class_name: str | None
    reason: str
    source: str


@dataclass(frozen=True)
class TLSSecretPlan:
    """A checked kubernetes.io/tls Secret: its PEM (the controller's input carries it) and what
    its certificate says."""

    namespace: str
    name: str
    cert: str  # PEM chain
    key: str  # PEM private key
    names: list[str]  # subjectAltName DNS names
    not_after: str  # ISO 8601, UTC
    issuer: str
    hosts: list[str]  # the TLS hosts of served Ingresses that use it
    source: str

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> TLSSecretPlan:
        return cls(**{**data, "names": list(data["names"]), "hosts": list(data["hosts"])})


@dataclass(frozen=True)
class IngressLocationPlan:
    path: str
    path_type: str  # Exact | Prefix | ImplementationSpecific
    service: str | None  # ns/name; None: the built-in default backend (404)
    port: int | None  # the Service's port number
    ingress: str | None  # ns/name of the Ingress it comes from; None: built in


@dataclass(frozen=True)
class IngressServerPlan:
    """One nginx server: a host (exact, ``*.`` wildcard, or ``_`` for any other), its TLS
    Secret and its locations, as ingress-nginx's createServers merges them."""

    host: str
    certificate: str | None  # ns/name of its TLS Secret; None: plain HTTP
    locations: list[IngressLocationPlan]

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> IngressServerPlan:
        return cls(data["host"], data["certificate"],
                   [IngressLocationPlan(**loc) for loc in data["locations"]])


@dataclass(frozen=True)
class PendingPlan:
    """A pod no node runs: it waits for a NotReady node (podnet/schedule.py)."""

    pod: str  # ns/name
    node: str
    reason: str


@dataclass
class Plan:
    settings: Settings
    nodes: list[NodePlan]
    hosts: list[HostPlan]
    namespaces: list[str]
    pods: list[PodPlan]
    services: list[ServicePlan]
    ingress_routes: list[IngressRoutePlan]
    record: Record
    warnings: list[Problem] = field(default_factory=list)
    paths: NodePaths = PATHS
    ingress_classes: list[IngressClassPlan] = field(default_factory=list)
    ingress_servers: list[IngressServerPlan] = field(default_factory=list)
    ignored_ingresses: list[IgnoredIngressPlan] = field(default_factory=list)
    tls_secrets: list[TLSSecretPlan] = field(default_factory=list)
    # the nodes the converge could not reach (NotReady): they run nothing this converge
    not_ready: list[str] = field(default_factory=list)
    pending: list[PendingPlan] = field(default_factory=list)

    @property
    def ready_nodes(self) -> list[NodePlan]:
        return [n for n in self.nodes if n.name not in self.not_ready]

    def node(self, name: str) -> NodePlan:
        return next(n for n in self.nodes if n.name == name)

    def service(self, key: str) -> ServicePlan:
        return next(s for s in self.services if s.key == key)

    def pod(self, key: str) -> PodPlan:
        return next(p for p in self.pods if p.key == key)

    def pods_on(self, node: str) -> list[PodPlan]:
        return [p for p in self.pods if p.node == node]

    def stable_pods_on(self, node: str) -> list[PodPlan]:
        """The pods on ``node`` that keep their address on any node (their /32 follows them)."""
        return [p for p in self.pods if p.node == node and p.stable_ip]

    def stable_ips(self) -> dict[str, str]:
        """ns/name -> address of every pod that keeps its address (podnet-ipam's assignments)."""
        return {p.key: p.stable_ip for p in self.pods if p.stable_ip}

    @property
    def dns_service(self) -> ServicePlan:
        return self.service(DNS_SERVICE)

    @property
    def ingress_service(self) -> ServicePlan:
        return self.service(INGRESS_SERVICE)

    def tls_secret(self, key: str) -> TLSSecretPlan:
        return next(t for t in self.tls_secrets if t.ref == key)

    def data(self) -> dict[str, Any]:
        """The plan as data: what Ansible holds and :meth:`from_data` reads back."""
        return {
            "settings": self.settings.as_dict(),
            "paths": self.paths.as_dict(),
            "nodes": [asdict(n) for n in self.nodes],
            "hosts": [asdict(h) for h in self.hosts],
            "namespaces": list(self.namespaces),
            "pods": [asdict(p) for p in self.pods],
            "services": [asdict(s) for s in self.services],
            "ingress_routes": [asdict(r) for r in self.ingress_routes],
            "ingress_classes": [asdict(c) for c in self.ingress_classes],
            "ingress_servers": [asdict(s) for s in self.ingress_servers],
            "ignored_ingresses": [asdict(i) for i in self.ignored_ingresses],
            "tls_secrets": [asdict(t) for t in self.tls_secrets],
            "allocations": self.record.as_dict(),
            "warnings": [w.as_dict() for w in self.warnings],
            "not_ready": list(self.not_ready),
            "pending": [asdict(p) for p in self.pending],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Plan:
        """The plan from its data (the inverse of :meth:`data`). Raises ValueError naming what
        is missing or malformed: data that did not come from :meth:`data`."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a podnet plan is a mapping, not {type(data).__name__}")
        try:
            problems = Problems()
            record = Record.from_dict(data["allocations"], "plan", problems)
            if problems.errors:
                raise ValueError(str(problems.errors[0]))
            return cls(
                settings=Settings.from_data(data["settings"]),
                nodes=[NodePlan(**{**n, "labels": dict(n["labels"])}) for n in data["nodes"]],
                hosts=[HostPlan(**{**h, "groups": list(h["groups"])}) for h in data["hosts"]],
                namespaces=list(data["namespaces"]),
                pods=[PodPlan.from_data(p) for p in data["pods"]],
                services=[ServicePlan.from_data(s) for s in data["services"]],
                ingress_routes=[IngressRoutePlan(**r) for r in data["ingress_routes"]],
                record=record,
                warnings=[Problem.from_dict(w) for w in data["warnings"]],
                paths=NodePaths(**{k: v for k, v in data["paths"].items()
                                   if k in NodePaths.__dataclass_fields__}),
                ingress_classes=[IngressClassPlan(**c) for c in data["ingress_classes"]],
                ingress_servers=[IngressServerPlan.from_data(s)
                                 for s in data["ingress_servers"]],
                ignored_ingresses=[IgnoredIngressPlan(**i) for i in data["ignored_ingresses"]],
                tls_secrets=[TLSSecretPlan.from_data(t) for t in data["tls_secrets"]],
                not_ready=list(data["not_ready"]),
                pending=[PendingPlan(**p) for p in data["pending"]],
            )
        except KeyError as exc:
            raise ValueError(f"not a podnet plan: it has no {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ValueError(f"not a podnet plan: {exc}") from None
