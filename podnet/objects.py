"""The Kubernetes objects podnet reads, as typed values with Kubernetes' defaults applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from podnet.schedule import EVERY_ADDRESS
from podnet.tls import CertInfo
from podnet.workloads import Workload
from podnet.yamlsource import Document, FieldPath


@dataclass(frozen=True)
class Ref:
    kind: str
    namespace: str  # "" for Namespace
    name: str
    doc: Document = field(compare=False, hash=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def __str__(self) -> str:
        return f"{self.kind} {self.key}"

    def where(self, path: FieldPath = ()) -> str:
        return self.doc.where(path)


@dataclass(frozen=True)
class ContainerPort:
    name: str | None
    port: int
    protocol: str
    host_port: int | None = None  # spec.containers[].ports[].hostPort (the portmap plugin)
    host_ip: str | None = None  # its hostIP; None: every address of the node (0.0.0.0)

    @property
    def host_slot(self) -> tuple[str, int, str] | None:
        """(hostIP, hostPort, protocol) it takes on its node, EVERY_ADDRESS for no hostIP."""
        if self.host_port is None:
            return None
        return (self.host_ip or EVERY_ADDRESS, self.host_port, self.protocol)


@dataclass(frozen=True)
class Probe:
    """A readinessProbe podnet runs: HTTP GET (2xx/3xx is success) or a TCP connect."""

    kind: str  # "http" or "tcp"
    port: int
    path: str = "/"
    period: int = 10
    timeout: int = 1
    failure: int = 3
    success: int = 1


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    workload: Workload
    ports: tuple[ContainerPort, ...]
    env: tuple[tuple[str, str], ...] = ()
    readiness: Probe | None = None


@dataclass(frozen=True)
class PodSpec:
    containers: tuple[Container, ...]
    hostname: str | None = None
    subdomain: str | None = None
    node_name: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    restart_policy: str = "Always"
    host_network: bool = False  # the pod runs in its node's network namespace, with its address
    dns_policy: str = "ClusterFirst"
    dns_config: DNSConfig | None = None

    def host_ports(self) -> tuple[tuple[str, int, str], ...]:
        """(hostIP, port, protocol) this pod takes on its node: its hostPorts, and every port
        of a hostNetwork pod (EVERY_ADDRESS), as the scheduler's NodePorts filter counts
        them."""
        out = []
        for c in self.containers:
            for p in c.ports:
                if p.host_slot is not None:
                    out.append(p.host_slot)
                elif self.host_network:
                    out.append((EVERY_ADDRESS, p.port, p.protocol))
        return tuple(out)


@dataclass(frozen=True)
class DNSConfig:
    """spec.dnsConfig: merged into the resolv.conf that dnsPolicy makes (all of it with None)."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class Namespace:
    ref: Ref
    labels: dict[str, str]


@dataclass(frozen=True)
class Pod:
    ref: Ref
    labels: dict[str, str]
    spec: PodSpec
    spec_path: FieldPath  # where the pod spec is in its document (for messages)
    stable_ip: bool = True  # annotation podnet.io/stable-ip; a bare Pod keeps its IP by default


@dataclass(frozen=True)
class Deployment:
    ref: Ref
    replicas: int
    selector: dict[str, str]
    labels: dict[str, str]  # the template's labels
    spec: PodSpec
    template: dict[str, Any]  # the raw template, hashed into pod names like pod-template-hash
    spec_path: FieldPath
    stable_ip: bool = False  # the template's annotation podnet.io/stable-ip (docs/backends.md)


@dataclass(frozen=True)
class ServicePortSpec:
    """A port of a Service manifest (spec.ports[i]); the plan's is ServicePortPlan."""

    name: str
    protocol: str
    port: int
    target_port: int | str
    node_port: int | None
    index: int  # position in spec.ports, for messages


@dataclass(frozen=True)
class Service:
    ref: Ref
    type: str
    selector: dict[str, str] | None
    ports: tuple[ServicePortSpec, ...]
    cluster_ip: str | None  # None: allocate; "None": headless
    external_name: str | None
    affinity_timeout: int | None  # seconds when sessionAffinity is ClientIP
    external_policy: str
    internal_policy: str
    source_ranges: tuple[str, ...]
    lb_ip: str | None
    health_check_node_port: int | None
    labels: dict[str, str]

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"

    @property
    def needs_node_ports(self) -> bool:
        return self.type in ("NodePort", "LoadBalancer")


@dataclass(frozen=True)
class IngressBackend:
    service: str
    port: int | str
    path: FieldPath


@dataclass(frozen=True)
class IngressPath:
    path: str
    path_type: str
    backend: IngressBackend


@dataclass(frozen=True)
class IngressRule:
    host: str | None
    paths: tuple[IngressPath, ...]


@dataclass(frozen=True)
class IngressTLS:
    hosts: tuple[str, ...]
    secret_name: str | None


@dataclass(frozen=True)
class Ingress:
    ref: Ref
    class_name: str | None
    default_backend: IngressBackend | None
    rules: tuple[IngressRule, ...]
    tls: tuple[IngressTLS, ...]


@dataclass(frozen=True)
class IngressClass:
    ref: Ref
    controller: str
    default: bool  # annotation ingressclass.kubernetes.io/is-default-class: "true"


@dataclass(frozen=True)
class TLSSecret:
    """A Secret of type kubernetes.io/tls whose certificate and key passed podnet/tls.py."""

    ref: Ref
    cert: str  # PEM chain
    key: str  # PEM private key
    info: CertInfo = field(compare=False, repr=False)


@dataclass
class Manifests:
    namespaces: list[Namespace] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    ingresses: list[Ingress] = field(default_factory=list)
    ingress_classes: list[IngressClass] = field(default_factory=list)
    secrets: list[TLSSecret] = field(default_factory=list)
    # Secrets of other types: read, not used (ns/name -> type), so a reference can say why
    other_secrets: dict[str, str] = field(default_factory=dict)
