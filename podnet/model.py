"""The cluster model: inventory + manifests (+ the allocation record) -> one validated plan.

``build()`` is pure: it reads its arguments and returns a :class:`Plan` or raises
:class:`~podnet.problems.InvalidInput` listing every error. Roles print the plan with Jinja;
verify/ reads it to know what must hold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import string
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from podnet import allocate, manifests, schedule
from podnet.addresses import gateway
from podnet.allocate import (
    Allocated,
    Allocator,
    Full,
    HeldByRecord,
    NotInRange,
    Record,
    Refusal,
    Reserved,
    V,
)
from podnet.manifests import DEFAULT_CLASS_ANNOTATION, STABLE_IP_ANNOTATION
from podnet.objects import (
    DNSConfig,
    Ingress,
    IngressBackend,
    Manifests,
    PodSpec,
    Ref,
    Service,
    TLSSecret,
)
from podnet.paths import PATHS
from podnet.plan import (
    DNS_SERVICE,
    INGRESS_CONTROLLER,
    ContainerPlan,
    EndpointPlan,
    HostPlan,
    IgnoredIngressPlan,
    IngressClassPlan,
    IngressLocationPlan,
    IngressRoutePlan,
    IngressServerPlan,
    NodePlan,
    PendingPlan,
    Plan,
    PodPlan,
    PortPlan,
    ServicePlan,
    ServicePortPlan,
    TLSSecretPlan,
)
from podnet.problems import InvalidInput, Problems
from podnet.settings import HostSpec, Settings, read_hosts, read_settings, stable_node_blocks
from podnet.yamlsource import Document, fmt_path, load_text

ADDON = Path(__file__).parent / "addons" / "cluster-dns.yaml"
ADDON_LABEL = "podnet:addons/cluster-dns.yaml"
INGRESS_ADDON = Path(__file__).parent / "addons" / "ingress-nginx.yaml"
INGRESS_ADDON_LABEL = "podnet:addons/ingress-nginx.yaml"
BUILTIN_NAMESPACES = ("default", "kube-system")
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery rand.SafeEncodeString alphabet


def addon_documents(settings: Settings, problems: Problems) -> list[Document]:
    text = string.Template(ADDON.read_text(encoding="utf-8")).substitute(
        dns_ip=str(settings.dns_service_ip), domain=settings.cluster_domain,
        replicas=settings.dns_replicas, dns_tool=PATHS.tool("podnet-dns"),
        records=PATHS.dns_records)
    return load_text(text, ADDON_LABEL, problems)


def ingress_addon_documents(settings: Settings, problems: Problems) -> list[Document]:
    """The Ingress controller add-on. It is read after the manifests, so that its Service and
    pods take their addresses, NodePorts and nodes after the manifests' own: adding it moves
    nothing a cluster already had."""
    text = string.Template(INGRESS_ADDON.read_text(encoding="utf-8")).substitute(
        replicas=settings.ingress_replicas, tool=PATHS.tool("podnet-ingress"),
        input=PATHS.ingress_input, unready=PATHS.unready_pods, pods_dir=PATHS.pods_dir,
        service_type="LoadBalancer" if settings.lb_pool else "NodePort")
    return load_text(text, INGRESS_ADDON_LABEL, problems)


def wants_ingress_controller(documents: Sequence[Document]) -> bool:
    """Whether the cluster runs the Ingress controller add-on: when the manifests have an
    Ingress. Unlike DNS, a cluster without Ingresses has no use for it, and its LoadBalancer
    Service would take an address of podnet_lb_pool (and need the pool's load balancer)."""
    return any(isinstance(d.data, dict) and d.data.get("kind") == "Ingress" for d in documents)


def check_default_certificate(settings: Settings, objects: Manifests, where: str,
                              problems: Problems) -> None:
    """podnet_ingress_default_certificate names a kubernetes.io/tls Secret of the manifests."""
    default = settings.ingress_default_certificate
    if not default or any(s.ref.key == default for s in objects.secrets):
        return
    other = objects.other_secrets.get(default)
    why = (f"is a Secret of type {other}, not kubernetes.io/tls" if other
           else "is not a Secret of the manifests")
    problems.error(where, "inventory", "podnet_ingress_default_certificate", f"'{default}' {why}",
                   "add that kubernetes.io/tls Secret to the manifests, or leave the setting "
                   "empty for a self-signed certificate")


def _dns_config_plan(config: DNSConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    return {"nameservers": list(config.nameservers), "searches": list(config.searches),
            "options": [list(o) for o in config.options]}


def template_hash(template: Mapping[str, Any]) -> str:
    """Like pod-template-hash: a short safe-encoded hash of the Deployment's pod template."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    value = 0x811C9DC5  # FNV-1a 32, as Kubernetes' ComputeHash uses
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(value))


def replica_name(deployment: str, template: str, index: int) -> str:
    """``<deployment>-<hash>-<5 chars>``; the base cut to 58 characters as Kubernetes'
    generateName does, so the name stays a 63-character label."""
    digest = hashlib.sha256(f"{deployment}-{template}/{index}".encode()).digest()
    base = f"{deployment}-{template}-"[:58]
    return base + "".join(_SAFE[b % len(_SAFE)] for b in digest[:5])


def build(
    variables: Mapping[str, Any],
    hosts: Sequence[Mapping[str, Any]],
    documents: Sequence[Document],
    record: Record | None = None,
    where: str = "inventory",
    record_where: str = "allocation record",
    problems: Problems | None = None,
    not_ready: Collection[str] = (),
) -> Plan:
    """The plan, or InvalidInput with every error (warnings ride along in the plan).

    ``not_ready``: the hosts the converge could not reach. Nodes among them are NotReady: they
    take no pod (podnet/schedule.py) and are left out of the node plays; any other host there
    is an error, as is a cluster without a Ready node."""
    problems = problems if problems is not None else Problems()
    record = record or Record()
    settings = read_settings(variables, where, problems)
    if settings is None:
        manifests.read(list(documents), problems)  # report their own problems too
        raise InvalidInput(problems.errors)
    host_specs = read_hosts(hosts, settings, where, problems)
    check_not_ready(host_specs, settings, not_ready, where, problems)
    nodes = sum(h.is_node(settings) for h in host_specs)
    ingress_wanted = wants_ingress_controller(documents)
    if ingress_wanted and nodes and settings.ingress_replicas > nodes:
        if "podnet_ingress_replicas" not in variables:
            # the default, 2, on a one-node cluster: one controller pod
            settings = dataclasses.replace(settings, ingress_replicas=nodes)
        else:
            problems.error(where, "inventory", "podnet_ingress_replicas",
                           f"{settings.ingress_replicas} controller pods on {nodes} nodes: two "
                           "would share a node, and a node's loss would take both",
                           f"set it from 1 to {nodes}")
    docs = addon_documents(settings, problems) + list(documents)
    if ingress_wanted:
        docs += ingress_addon_documents(settings, problems)
    objects = manifests.read(docs, problems)
    check_default_certificate(settings, objects, where, problems)
    if problems.errors:
        raise InvalidInput(problems.errors)
    builder = _Builder(settings, host_specs, objects, record, problems, record_where,
                       frozenset(not_ready))
    plan = builder.run()
    if problems.errors:
        raise InvalidInput(problems.errors)
    plan.warnings = problems.warnings
    return plan


def check_not_ready(hosts: Sequence[HostSpec], settings: Settings, not_ready: Collection[str],
                    where: str, problems: Problems) -> None:
    """Only nodes may be down for a converge, and not all of them."""
    nodes = [h.name for h in hosts if h.is_node(settings)]
    for name in sorted(not_ready):
        if name in nodes:
            problems.warn(where, f"host {name}", "ansible_host",
                          "did not answer: the node is NotReady, and this converge leaves it "
                          "out; its Deployments' pods move to other nodes, its other pods "
                          "wait (pending)", f"bring {name} back and converge: it rejoins")
        else:
            problems.error(where, f"host {name}", "ansible_host",
                           "did not answer, and it is not a node: only a node may be down "
                           "(NotReady) while the cluster converges",
                           f"bring {name} back (or fix its address or login) and converge again")
    if nodes and all(n in not_ready for n in nodes):
        problems.error(where, "inventory", "podnet_nodes_group",
                       "no node answered: every node is NotReady and no pod can run",
                       "bring the nodes back (or fix their addresses or login) and converge "
                       "again")


class _Builder:
    def __init__(self, settings: Settings, hosts: list[HostSpec], objects: Manifests,
                 previous: Record, problems: Problems, record_where: str,
                 not_ready: frozenset[str] = frozenset()) -> None:
        self.settings = settings
        self.hosts = hosts
        self.nodes = [h for h in hosts if h.is_node(settings)]
        self.objects = objects
        self.previous = previous
        self.problems = problems
        self.record_where = record_where
        self.record = Record()
        self.stable_keys: dict[str, str] = {}  # pod key -> its pod_ips record key
        self.not_ready = not_ready
        self.pending: list[PendingPlan] = []

    def error(self, ref: Ref, path: tuple[str | int, ...], message: str, fix: str) -> None:
        self.problems.error(ref.where(path), str(ref), fmt_path(path), message, fix)

    def warn(self, ref: Ref, path: tuple[str | int, ...], message: str, fix: str) -> None:
        self.problems.warn(ref.where(path), str(ref), fmt_path(path), message, fix)

    def run(self) -> Plan:
        nodes = self.node_cidrs()
        namespaces = self.namespaces()
        drafts = self.pod_drafts()
        pods = self.place(drafts)
        services = self.services(pods)
        ingress = self.ingress(services)
        hosts = [HostPlan(h.name, str(h.address), list(h.groups)) for h in self.hosts]
        return Plan(self.settings, nodes, hosts, namespaces, pods, services, ingress.routes,
                    self.record, ingress_classes=ingress.classes,
                    ingress_servers=ingress.servers, ignored_ingresses=ingress.ignored,
                    tls_secrets=ingress.secrets,
                    not_ready=[n.name for n in nodes if n.name in self.not_ready],
                    pending=self.pending)

    # -- nodes ---------------------------------------------------------------------------------
    def node_cidrs(self) -> list[NodePlan]:
        cidrs = allocate.pod_cidrs(self.settings.cluster_cidr, self.settings.node_cidr_prefix)
        for block in stable_node_blocks(self.settings):
            # read_hosts refused a node's podnet_pod_cidr here; the record's is allocated anew
            cidrs.reserve(block, "the stable pods' block")
        for node in self.nodes:
            if node.pod_cidr is not None:
                # read_hosts checked it: a /prefix inside the cluster CIDR, no other node's
                cidrs.allocate(node.pod_cidr, node.name)
        free = [n.name for n in self.nodes if n.pod_cidr is None]
        chosen = cidrs.keep_or_allocate(free, self.previous.node_cidrs)
        out = []
        for node in self.nodes:
            cidr = node.pod_cidr or chosen[node.name]
            if isinstance(cidr, Full):  # read_hosts lets in no more nodes than there are CIDRs
                raise AssertionError(f"no pod CIDR left for node {node.name}")
            old = self.previous.node_cidrs.get(node.name)
            if old and old != str(cidr):
                self.problems.warn(self.record_where, f"host {node.name}", "podnet_pod_cidr",
                                   f"pod CIDR changes from {old} to {cidr}",
                                   "expected only when podnet_pod_cidr or the cluster CIDR "
                                   "changed; the node's pods get new addresses")
            self.record.node_cidrs[node.name] = str(cidr)
            out.append(NodePlan(node.name, str(node.address), dict(sorted(node.labels.items())),
                                str(cidr), str(gateway(cidr)),
                                [{"address": str(a), "as": asn} for a, asn in node.bgp_peers]))
        return out

    # -- namespaces and pods ---------------------------------------------------------------------
    def namespaces(self) -> list[str]:
        known = set(BUILTIN_NAMESPACES) | {n.ref.name for n in self.objects.namespaces}
        objects = self.objects
        for group in (objects.pods, objects.deployments, objects.services, objects.ingresses):
            for obj in group:
                if obj.ref.namespace not in known:
                    self.error(obj.ref, ("metadata", "namespace"),
                               f"namespace '{obj.ref.namespace}' is not defined",
                               f"add a Namespace manifest named {obj.ref.namespace}")
        return sorted(known)

    def pod_drafts(self) -> list[tuple[Ref, str, str, dict[str, str], PodSpec, str]]:
        """(ref, pod name, owner, labels, spec, source) for every pod, in a stable order; the
        pods that keep their address go in ``self.stable_keys`` (pod key -> record key)."""
        drafts: list[tuple[Ref, str, str, dict[str, str], PodSpec, str]] = []
        for pod in self.objects.pods:
            drafts.append((pod.ref, pod.ref.name, f"Pod {pod.ref.key}", pod.labels, pod.spec,
                           pod.ref.where()))
            if pod.stable_ip:
                self.stable_keys[pod.ref.key] = pod.ref.key
        for dep in self.objects.deployments:
            tmpl = template_hash(dep.template)
            for i in range(dep.replicas):
                name = replica_name(dep.ref.name, tmpl, i)
                drafts.append((dep.ref, name, f"Deployment {dep.ref.key}",
                               {**dep.labels, "pod-template-hash": tmpl}, dep.spec,
                               dep.ref.where()))
                if dep.stable_ip:
                    # replica i keeps replica i's address through template changes (which
                    # rename the pods), as a StatefulSet's pod i keeps its identity
                    self.stable_keys[f"{dep.ref.namespace}/{name}"] = f"{dep.ref.key}/{i}"
        seen: dict[str, Ref] = {}
        unique = []
        for draft in drafts:
            key = f"{draft[0].namespace}/{draft[1]}"
            if key in seen:
                self.error(draft[0], ("metadata", "name"),
                           f"its pod {key} has the same name as a pod of {seen[key]}",
                           "rename one of them")
                continue
            seen[key] = draft[0]
            unique.append(draft)
        return unique

    def place(self, drafts: list[tuple[Ref, str, str, dict[str, str], PodSpec, str]]
              ) -> list[PodPlan]:
        candidates = [schedule.Candidate(f"{ref.namespace}/{name}", owner, spec.node_name,
                                         spec.node_selector, spec.host_ports())
                      for ref, name, owner, _labels, spec, _src in drafts]
        node_labels = {n.name: n.labels for n in self.nodes}
        placed, failed, pending = schedule.place(candidates, node_labels, self.previous.pods,
                                                 self.not_ready)
        by_key = {f"{d[0].namespace}/{d[1]}": d for d in drafts}
        for wait in pending:
            # it keeps its node (and its address) in the record: it runs there again when the
            # node is back; nothing runs it meanwhile, as no kubelet would
            self.pending.append(PendingPlan(wait.key, wait.node, wait.reason))
            self.record.pods[wait.key] = wait.node
            self.problems.warn(by_key[wait.key][5], str(by_key[wait.key][0]), "spec",
                               f"pod {wait.key} is pending: {wait.reason}",
                               f"it runs again when {wait.node} answers; bring the node back "
                               "(or remove it from the inventory) and converge")
        for key, node in sorted(placed.items()):
            old = self.previous.pods.get(key)
            if old in self.not_ready and old != node:
                self.problems.warn(by_key[key][5], str(by_key[key][0]), "spec",
                                   f"pod {key} is evicted from {old} (NotReady) to {node}",
                                   f"it stays on {node}; the converge that finds {old} back "
                                   "removes the old copy there")
        for miss in failed:
            ref = by_key[miss.key][0]
            spec_path = ("spec", "template", "spec") if ref.kind == "Deployment" else ("spec",)
            self.error(ref, (*spec_path, miss.field), f"pod {miss.key}: {miss.reason}", miss.fix)
        # a pending pod's address stays its own: nobody else may take it while it waits
        waiting = {w.key for w in pending}
        stable = self.stable_ips([k for k in by_key if k in placed or k in waiting], by_key)
        pods = []
        for key, (ref, name, owner, labels, spec, src) in by_key.items():
            if key not in placed:
                continue
            self.record.pods[key] = placed[key]
            containers = [
                ContainerPlan(c.name, c.image, c.workload.as_dict(),
                              [PortPlan(p.name, p.port, p.protocol, p.host_port, p.host_ip)
                               for p in c.ports],
                              dict(c.env), asdict(c.readiness) if c.readiness else None)
                for c in spec.containers
            ]
            pods.append(PodPlan(ref.namespace, name, placed[key], owner, dict(labels),
                                spec.hostname, spec.subdomain,
                                spec.restart_policy, containers, src, stable.get(key),
                                spec.host_network, spec.dns_policy,
                                _dns_config_plan(spec.dns_config)))
        return pods

    def stable_ips(self, keys: list[str],
                   drafts: Mapping[str, tuple[Ref, str, str, dict[str, str], PodSpec, str]]
                   ) -> dict[str, str]:
        """pod key -> address for the pods that keep theirs: the record's if still free, else
        the first free one of the stable block, in manifest order."""
        wanting = [k for k in keys if k in self.stable_keys]
        block = self.settings.stable_pod_cidr
        if block is None:  # podnet_stable_pod_cidr: none - every pod takes its node's addresses
            asked = {drafts[k][0] for k in wanting if drafts[k][0].kind == "Deployment"}
            for ref in sorted(asked, key=str):
                self.error(ref, ("spec", "template", "metadata", "annotations",
                                 STABLE_IP_ANNOTATION),
                           "asks for addresses kept on any node, but podnet_stable_pod_cidr "
                           "is none", "remove the annotation, or give podnet_stable_pod_cidr a "
                           "block (empty: the cluster CIDR's last node-sized one)")
            return {}
        pool = allocate.stable_pod_ips(block)
        chosen = pool.keep_or_allocate([self.stable_keys[k] for k in wanting],
                                       self.previous.pod_ips)
        out = {}
        for key in wanting:
            record_key = self.stable_keys[key]
            ip = chosen[record_key]
            ref = drafts[key][0]
            if isinstance(ip, Full):
                path = (("spec", "template", "metadata") if ref.kind == "Deployment"
                        else ("metadata",))
                self.error(ref, (*path, "annotations", STABLE_IP_ANNOTATION),
                           f"pod {key}: no address left in the stable pods' block "
                           f"{block} ({ip.usable} addresses, all taken)",
                           "set podnet_stable_pod_cidr to a larger block, or let some pods "
                           f"take their node's addresses ({STABLE_IP_ANNOTATION}: \"false\")")
                continue
            old = self.previous.pod_ips.get(record_key)
            if old and old != str(ip):
                self.warn(ref, ("metadata", "name"),
                          f"pod {key}: its stable address changes from {old} to {ip}",
                          "expected only when podnet_stable_pod_cidr changed")
            elif not old and key in self.previous.pods:
                # a pod that ran before with its node's address (an upgrade, or the annotation
                # just set): it is renumbered once, then keeps the new address
                self.warn(ref, ("metadata", "name"),
                          f"pod {key} now keeps its address on any node: it leaves its node's "
                          f"address for {ip} (once)",
                          f"expected after an upgrade or a new {STABLE_IP_ANNOTATION} "
                          "annotation; set it to \"false\" to keep the node's address")
            self.record.pod_ips[record_key] = str(ip)
            out[key] = str(ip)
        return out

    # -- services --------------------------------------------------------------------------------
    def services(self, pods: list[PodPlan]) -> list[ServicePlan]:
        ips = self.cluster_ips()
        node_ports, health_ports = self.node_ports()
        lb_ips = self.lb_ips()
        out = []
        for svc in self.objects.services:
            selected = self.selected(svc, pods)
            ports = []
            for sp in svc.ports:
                endpoints = self.endpoints(svc, sp.index, sp.target_port, sp.protocol, selected)
                ports.append(ServicePortPlan(
                    sp.name, sp.protocol, sp.port, sp.target_port,
                    node_ports.get(self.port_key(svc, sp.name)),
                    endpoints,
                ))
            self.check_hostnames(svc, selected)
            out.append(ServicePlan(
                namespace=svc.ref.namespace, name=svc.ref.name, type=svc.type,
                cluster_ip=ips.get(svc.ref.key), headless=svc.headless,
                external_name=svc.external_name, lb_ip=lb_ips.get(svc.ref.key),
                selector=svc.selector, ports=ports,
                session_affinity_timeout=svc.affinity_timeout,
                external_traffic_policy=svc.external_policy,
                internal_traffic_policy=svc.internal_policy,
                load_balancer_source_ranges=list(svc.source_ranges),
                health_check_node_port=health_ports.get(svc.ref.key),
                fqdn=f"{svc.ref.name}.{svc.ref.namespace}.svc.{self.settings.cluster_domain}",
                source=svc.ref.where(),
                pods=[p.key for p in selected],
            ))
        for pod in self.objects.pods:
            self.check_subdomain(pod.ref, pod.spec, ("spec", "subdomain"))
        for dep in self.objects.deployments:
            self.check_subdomain(dep.ref, dep.spec, ("spec", "template", "spec", "subdomain"))
        self.check_external_name_loops(out)
        return out

    def check_external_name_loops(self, services: list[ServicePlan]) -> None:
        """ExternalName Services whose CNAMEs lead back to themselves: the cluster DNS follows a
        CNAME into its zone by asking itself, so a loop would hold its queries until they time
        out (CoreDNS answers SERVFAIL)."""
        targets = {s.fqdn.lower(): str(s.external_name).lower().rstrip(".")
                   for s in services if s.type == "ExternalName"}
        by_fqdn = {s.fqdn.lower(): s for s in services}
        reported: set[str] = set()
        for start in targets:
            chain = [start]
            while chain[-1] in targets and targets[chain[-1]] not in chain:
                chain.append(targets[chain[-1]])
            if chain[-1] in targets and targets[chain[-1]] == start and start not in reported:
                reported.update(chain)
                svc = by_fqdn[start]
                ref = next(s.ref for s in self.objects.services if s.ref.key == svc.key)
                self.error(ref, ("spec", "externalName"),
                           "its CNAME leads back to itself: " + " -> ".join([*chain, start]),
                           "point one of these ExternalName Services at a name outside the "
                           "loop")

    def check_subdomain(self, ref: Ref, spec: PodSpec, path: tuple[str, ...]) -> None:
        if not spec.subdomain:
            return
        if not any(s.ref.namespace == ref.namespace and s.ref.name == spec.subdomain
                   and s.headless for s in self.objects.services):
            self.warn(ref, path, f"no headless Service '{spec.subdomain}' in namespace "
                      f"{ref.namespace}, so the pod gets no hostname record",
                      "add a Service with clusterIP: None of that name selecting the pod")

    def check_hostnames(self, svc: Service, selected: list[PodPlan]) -> None:
        if not svc.headless:
            return
        seen: dict[str, str] = {}
        for pod in selected:
            if pod.hostname and pod.subdomain == svc.ref.name:
                if pod.hostname in seen:
                    self.warn(svc.ref, ("spec", "selector"),
                              f"pods {seen[pod.hostname]} and {pod.key} share hostname "
                              f"'{pod.hostname}': the name has both addresses",
                              "give each pod its own hostname")
                seen[pod.hostname] = pod.key

    @staticmethod
    def port_key(svc: Service, name: str) -> str:
        """Record key of a service port's nodePort: by port name, as Kubernetes keeps them."""
        return f"{svc.ref.key}:{name}"

    def selected(self, svc: Service, pods: list[PodPlan]) -> list[PodPlan]:
        if not svc.selector or svc.type == "ExternalName":
            return []
        return [p for p in pods if p.namespace == svc.ref.namespace
                and all(p.labels.get(k) == v for k, v in svc.selector.items())]

    def endpoints(self, svc: Service, index: int, target: int | str, protocol: str,
                  selected: list[PodPlan]) -> list[EndpointPlan]:
        out = []
        for pod in selected:
            number = target if isinstance(target, int) else pod.named_port(target, protocol)
            if number is not None:
                out.append(EndpointPlan(pod.key, pod.node, number))
        if isinstance(target, str) and selected and not out:
            self.error(svc.ref, ("spec", "ports", index, "targetPort"),
                       f"no selected pod has a {protocol} container port named '{target}' "
                       f"(selected: {', '.join(p.key for p in selected)})",
                       "name the container port in the pods, or give targetPort as a number")
        elif isinstance(target, str) and len(out) < len(selected):
            missing = [p.key for p in selected if p.named_port(target, protocol) is None]
            self.warn(svc.ref, ("spec", "ports", index, "targetPort"),
                      f"pods {', '.join(missing)} have no port named '{target}' and are not "
                      "endpoints of this port", "name the port in every selected pod")
        return out

    def _auto(self, svc: Service) -> bool:
        """Whether the Service still wants an allocated ClusterIP."""
        return svc.cluster_ip is None and svc.type != "ExternalName"

    def claim(self, pool: Allocator[V], value: V, owner: str, ref: Ref,
              path: tuple[str | int, ...], words: Callable[[Refusal], tuple[str, str]]) -> bool:
        """Give ``owner`` the value its manifest asks for, or report why not in ``words``."""
        refusal = pool.allocate(value, owner)
        if refusal is not None:
            self.error(ref, path, *words(refusal))
        return refusal is None

    def allocate_rest(self, pool: Allocator[V], wanting: list[Service],
                      previous: Mapping[str, str], path: tuple[str | int, ...],
                      words: Callable[[Refusal], tuple[str, str]]) -> dict[str, str]:
        """Values for Services that ask for none: the recorded one, else a new one; an error
        for each Service the range has none left for."""
        by_key = {s.ref.key: s for s in wanting}
        values: dict[str, str] = {}
        for key, got in pool.keep_or_allocate(by_key, previous).items():
            if isinstance(got, Full):
                self.error(by_key[key].ref, path, *words(got))
            else:
                values[key] = str(got)
        return values

    def cluster_ip_refusal(self, refusal: Refusal) -> tuple[str, str]:
        net = self.settings.service_cidr
        match refusal:
            case NotInRange(addr):
                return (f"{addr} is outside podnet_service_cidr {net} (or is its network or "
                        "broadcast address)", f"choose an address inside {net} or leave "
                        "clusterIP out")
            case Reserved(addr, what):
                return (f"{addr} is {what}, reserved for the kube-dns Service",
                        "choose another address or leave it out")
            case Allocated(addr, holder):
                return (f"{addr} is already taken by Service {holder}",
                        "give each Service its own clusterIP")
            case HeldByRecord(addr, holder):
                return (f"{addr} is already allocated to Service {holder} ({self.record_where})",
                        "choose a free address or leave clusterIP out")
            case Full():
                return (f"podnet_service_cidr {net} has no free address left",
                        "widen podnet_service_cidr")

    def cluster_ips(self) -> dict[str, str]:
        pool = allocate.cluster_ips(self.settings.service_cidr)
        pool.reserve(self.settings.dns_service_ip, "podnet_dns_service_ip", DNS_SERVICE)
        by_key = {s.ref.key: s for s in self.objects.services}
        # a recorded address is held while its Service still wants an allocated one
        for key, ip in self.previous.cluster_ips.items():
            if key in by_key and self._auto(by_key[key]):
                pool.hold(ip, key)
        ips: dict[str, str] = {}
        wanting: list[Service] = []
        for svc in self.objects.services:
            if svc.headless or svc.type == "ExternalName":
                continue
            if svc.cluster_ip is None:
                wanting.append(svc)
                continue
            addr = ip_address(svc.cluster_ip)
            if self.claim(pool, addr, svc.ref.key, svc.ref, ("spec", "clusterIP"),
                          self.cluster_ip_refusal):
                ips[svc.ref.key] = str(addr)
        ips.update(self.allocate_rest(pool, wanting, self.previous.cluster_ips,
                                      ("spec", "clusterIP"), self.cluster_ip_refusal))
        self.record.cluster_ips = dict(ips)
        return ips

    def node_port_refusal(self, refusal: Refusal) -> tuple[str, str]:
        lo, hi = self.settings.nodeport_range
        match refusal:
            case NotInRange(port):
                return (f"{port} is outside podnet_nodeport_range {lo}-{hi}",
                        f"choose a port from {lo} to {hi} or leave it out")
            case Allocated(port, holder) | Reserved(port, holder):
                return (f"{port} is already the nodePort of {holder}",
                        "give each Service its own nodePort or leave it out")
            case HeldByRecord(port, holder):
                return (f"{port} is already allocated to {holder} ({self.record_where})",
                        "choose a free port or leave it out")
            case Full():
                return (f"podnet_nodeport_range {lo}-{hi} has no free port left",
                        "widen podnet_nodeport_range")

    def node_ports(self) -> tuple[dict[str, int], dict[str, int]]:
        """NodePorts per service port (by record key) and health-check ports per Service.

        Order keeps what exists: first the ports given in manifests, then every recorded port
        still wanted, and only then new ones. Ports of one Service with the same number (TCP
        and UDP 53) share one NodePort, as Kubernetes allocates them: the allocator lets an
        owner ask again for a port it holds.
        """
        pool = allocate.node_ports(*self.settings.nodeport_range)
        services = [s for s in self.objects.services if s.needs_node_ports]
        local_lbs = [s for s in services
                     if s.type == "LoadBalancer" and s.external_policy == "Local"]
        hc_owner = {svc.ref.key: f"{svc.ref.key} (health check)" for svc in local_lbs}
        # recorded values still wanted, and who holds them: a Service's port is held for the
        # Service, not for its own owner name, so one port number given to another of its ports
        # cannot leave two port numbers on one NodePort
        wanted_keys = {self.port_key(s, sp.name): s.ref.key
                       for s in services for sp in s.ports if sp.node_port is None}
        for key, port in self.previous.node_ports.items():
            if key in wanted_keys:
                pool.hold(port, wanted_keys[key])
        for key, port in self.previous.health_check_node_ports.items():
            svc = next((s for s in local_lbs if s.ref.key == key), None)
            if svc is not None and svc.health_check_node_port is None:
                pool.hold(port, hc_owner[key])

        ports: dict[str, int] = {}
        health: dict[str, int] = {}
        for svc in services:
            seen: set[tuple[int, str]] = set()
            for sp in svc.ports:
                if sp.node_port is None:
                    continue
                path = ("spec", "ports", sp.index, "nodePort")
                if (sp.node_port, sp.protocol) in seen:
                    self.error(svc.ref, path, f"{sp.node_port}/{sp.protocol} is given twice",
                               "give each port its own nodePort")
                    continue
                seen.add((sp.node_port, sp.protocol))
                if self.claim(pool, sp.node_port, f"Service {svc.ref.key}", svc.ref, path,
                              self.node_port_refusal):
                    ports[self.port_key(svc, sp.name)] = sp.node_port
        for svc in local_lbs:
            if svc.health_check_node_port is not None and self.claim(
                    pool, svc.health_check_node_port, hc_owner[svc.ref.key], svc.ref,
                    ("spec", "healthCheckNodePort"), self.node_port_refusal):
                health[svc.ref.key] = svc.health_check_node_port

        for svc in services:
            for sp in svc.ports:
                key = self.port_key(svc, sp.name)
                if sp.node_port is None and key in self.previous.node_ports:
                    got = pool.keep(self.previous.node_ports[key], f"Service {svc.ref.key}")
                    if got is not None:
                        ports[key] = got
        for svc in local_lbs:
            key = svc.ref.key
            if (key not in health and svc.health_check_node_port is None
                    and key in self.previous.health_check_node_ports):
                got = pool.keep(self.previous.health_check_node_ports[key], hc_owner[key])
                if got is not None:
                    health[key] = got

        def allocate_next(svc: Service, key: str, owner: str) -> int | None:
            got = pool.allocate_next(key, owner)
            if isinstance(got, Full):
                self.error(svc.ref, ("spec", "type"), *self.node_port_refusal(got))
                return None
            return got

        for svc in services:
            by_number: dict[int, int] = {}
            for sp in svc.ports:  # ports given or kept first: a sibling may share them
                key = self.port_key(svc, sp.name)
                if key in ports:
                    by_number.setdefault(sp.port, ports[key])
            for sp in svc.ports:
                key = self.port_key(svc, sp.name)
                if key in ports or sp.node_port is not None:
                    continue
                shared = by_number.get(sp.port)
                got = shared if shared is not None else allocate_next(svc, key,
                                                                      f"Service {svc.ref.key}")
                if got is not None:
                    ports[key] = got
                    by_number.setdefault(sp.port, got)
        for svc in local_lbs:
            if svc.ref.key not in health and svc.health_check_node_port is None:
                got = allocate_next(svc, f"{svc.ref.key} health check", hc_owner[svc.ref.key])
                if got is not None:
                    health[svc.ref.key] = got
        self.record.node_ports = dict(ports)
        self.record.health_check_node_ports = dict(health)
        return ports, health

    def lb_ip_refusal(self, refusal: Refusal) -> tuple[str, str]:
        pool = self.settings.lb_pool
        match refusal:
            case NotInRange(addr):
                return (f"{addr} is outside podnet_lb_pool {pool}",
                        f"choose an address inside {pool} or leave it out")
            case Reserved(addr, holder) | Allocated(addr, holder):
                return (f"{addr} is already taken by {holder}",
                        "choose a free pool address or leave it out")
            case HeldByRecord(addr, holder):
                return (f"{addr} is already allocated to Service {holder} ({self.record_where})",
                        "choose a free pool address or leave it out")
            case Full(usable):
                return (f"podnet_lb_pool {pool} is exhausted: its {usable} usable addresses are "
                        "all taken", "widen podnet_lb_pool")

    def check_lb_hosts(self, wanting: list[Service]) -> None:
        """Cloud mode needs its one load-balancer host (group podnet_lb_group), l2 mode none."""
        group = self.settings.lb_group
        lbs = [h.name for h in self.hosts if group in h.groups]
        if self.settings.lb_mode != "cloud" or len(lbs) == 1:
            return
        svc = wanting[0]
        if not lbs:
            self.error(svc.ref, ("spec", "type"),
                       f"podnet_lb_mode is cloud but group {group} has no host to play the "
                       "cloud load balancer",
                       f"add a host to group {group} (see inventory/lab/hosts.yml) or set "
                       "podnet_lb_mode: l2 to announce the addresses from the nodes")
        else:
            self.error(svc.ref, ("spec", "type"),
                       f"podnet_lb_mode is cloud and group {group} has {len(lbs)} hosts "
                       f"({', '.join(lbs)}); each would answer ARP for the same addresses",
                       f"keep one host in group {group}")

    def lb_ips(self) -> dict[str, str]:
        wanting = [s for s in self.objects.services if s.type == "LoadBalancer"]
        if not wanting:
            return {}
        if self.settings.lb_pool is None:
            for svc in wanting:
                self.error(svc.ref, ("spec", "type"), "podnet_lb_pool is not set, so there is "
                           "no LoadBalancer address to give", "set podnet_lb_pool in the inventory")
            return {}
        self.check_lb_hosts(wanting)
        pool = allocate.lb_ips(self.settings.lb_pool)
        underlay = self.settings.underlay_cidr
        pool.reserve(underlay.network_address, "the underlay's network address")
        pool.reserve(underlay.broadcast_address, "the underlay's broadcast address")
        for host in self.hosts:
            pool.reserve(host.address, f"host {host.name}")
        automatic = [s for s in wanting if s.lb_ip is None]
        for key, ip in self.previous.lb_ips.items():
            if any(s.ref.key == key for s in automatic):
                pool.hold(ip, key)
        ips: dict[str, str] = {}
        for svc in wanting:
            if svc.lb_ip is None:
                continue
            addr = ip_address(svc.lb_ip)
            if self.claim(pool, addr, f"Service {svc.ref.key}", svc.ref,
                          ("spec", "loadBalancerIP"), self.lb_ip_refusal):
                ips[svc.ref.key] = str(addr)
        ips.update(self.allocate_rest(pool, automatic, self.previous.lb_ips, ("spec", "type"),
                                      self.lb_ip_refusal))
        self.record.lb_ips = dict(ips)
        return ips

    # -- ingress ---------------------------------------------------------------------------------
    def ingress_classes(self) -> list[IngressClassPlan]:
        classes = self.objects.ingress_classes
        defaults = [c for c in classes if c.default]
        if len(defaults) > 1:
            first = defaults[0]
            for other in defaults[1:]:
                self.error(other.ref, ("metadata", "annotations", DEFAULT_CLASS_ANNOTATION),
                           f"IngressClass {first.ref.name} ({first.ref.where()}) is the default "
                           f"class too: an Ingress without ingressClassName would have two",
                           f"mark one IngressClass as the default (\"true\"), not both "
                           f"{first.ref.name} and {other.ref.name}")
        return [IngressClassPlan(c.ref.name, c.controller, c.default) for c in classes]

    def served_ingresses(self) -> tuple[list[Ingress], list[IgnoredIngressPlan]]:
        """The Ingresses of podnet's controller (their class's controller is
        k8s.io/ingress-nginx), and the others with why they are left alone."""
        classes = {c.ref.name: c for c in self.objects.ingress_classes}
        default = next((c for c in self.objects.ingress_classes if c.default), None)
        served: list[Ingress] = []
        ignored: list[IgnoredIngressPlan] = []
        for ing in self.objects.ingresses:
            name = ing.class_name
            if name is None and default is None:
                ignored.append(IgnoredIngressPlan(
                    ing.ref.key, None, "no ingressClassName and no default IngressClass",
                    ing.ref.where()))
                continue
            chosen = classes.get(name) if name is not None else default
            if chosen is None:
                self.error(ing.ref, ("spec", "ingressClassName"),
                           f"'{name}' is not an IngressClass",
                           f"use one of {', '.join(sorted(classes))}, add an IngressClass "
                           f"manifest named {name}, or leave it out for the default class")
                continue
            if chosen.controller != INGRESS_CONTROLLER:
                ignored.append(IgnoredIngressPlan(
                    ing.ref.key, chosen.ref.name,
                    f"class {chosen.ref.name}'s controller is {chosen.controller}, not "
                    f"{INGRESS_CONTROLLER}", ing.ref.where()))
                continue
            served.append(ing)
        return served, ignored

    def backend(self, ing: Ingress, backend: IngressBackend, by_key: Mapping[str, ServicePlan]
                ) -> tuple[str, int] | None:
        """(Service, port number) a backend names, or None with the error reported."""
        svc = by_key.get(f"{ing.ref.namespace}/{backend.service}")
        if svc is None:
            self.error(ing.ref, (*backend.path, "name"),
                       f"Service '{backend.service}' does not exist in namespace "
                       f"{ing.ref.namespace}", "point the backend at an existing Service")
            return None
        if svc.type == "ExternalName" or svc.headless:
            self.error(ing.ref, (*backend.path, "name"),
                       f"Service '{backend.service}' has no ClusterIP to proxy to",
                       "use a ClusterIP, NodePort or LoadBalancer Service")
            return None
        port = next((p for p in svc.ports if p.protocol == "TCP" and (
            p.port == backend.port if isinstance(backend.port, int)
            else p.name == backend.port)), None)
        if port is None:
            self.error(ing.ref, (*backend.path, "port"),
                       f"Service '{backend.service}' has no TCP port {backend.port!r}",
                       f"use one of {[p.name or p.port for p in svc.ports]}")
            return None
        return svc.key, port.port

    def tls_secrets(self, served: list[Ingress]) -> dict[str, TLSSecret]:
        """The TLS Secrets by ns/name; a reference to a missing or non-TLS one is a warning (as
        ingress-nginx, the host is then served with the default certificate: here, without
        TLS); a certificate not covering a host that uses it is a warning."""
        secrets = {s.ref.key: s for s in self.objects.secrets}
        for ing in served:
            for ti, entry in enumerate(ing.tls):
                path = ("spec", "tls", ti, "secretName")
                if entry.secret_name is None:
                    if entry.hosts:
                        self.warn(ing.ref, path, "is not set, so these hosts are served without "
                                  "TLS here", "name a kubernetes.io/tls Secret")
                    continue
                key = f"{ing.ref.namespace}/{entry.secret_name}"
                if key not in secrets:
                    other = self.objects.other_secrets.get(key)
                    why = (f"is a Secret of type {other}, not kubernetes.io/tls" if other
                           else f"does not exist in namespace {ing.ref.namespace}")
                    self.warn(ing.ref, path, f"Secret '{entry.secret_name}' {why}: its hosts "
                              "are served without TLS", "add a kubernetes.io/tls Secret of that "
                              "name (tls.crt, tls.key)")
                    continue
                info = secrets[key].info
                for hi, host in enumerate(entry.hosts):
                    if not info.covers(host):
                        self.warn(ing.ref, ("spec", "tls", ti, "hosts", hi),
                                  f"the certificate of Secret {key} does not cover '{host}' "
                                  f"(its names: {', '.join(info.names) or 'none'}); clients "
                                  "that check names will refuse it",
                                  "issue a certificate with that name in its subjectAltName")
        return secrets

    def ingress(self, services: list[ServicePlan]) -> IngressPlans:
        """Servers as ingress-nginx's createServers builds them (docs/ingress.md): manifest order
        stands for creation time; a host's server is made by the first Ingress naming it, with
        that Ingress' defaultBackend as its "/"; a defaultBackend of an Ingress without rules is
        the catch-all's "/"; a rule's own "/" replaces a default one; the same host, path and
        type twice is a warning and the first wins."""
        classes = self.ingress_classes()
        if not self.objects.ingresses:  # no controller either (wants_ingress_controller)
            return IngressPlans(classes, [], [], [], [])
        served, ignored = self.served_ingresses()
        secrets = self.tls_secrets(served)
        by_key = {s.key: s for s in services}
        servers: dict[str, _Server] = {CATCH_ALL: _Server(CATCH_ALL)}
        for ing in served:
            default = (self.backend(ing, ing.default_backend, by_key)
                       if ing.default_backend else None)
            if default and not ing.rules:
                root = servers[CATCH_ALL].root
                if root.ingress is None:
                    servers[CATCH_ALL].set_root(default, ing.ref.key)
                else:
                    self.warn(ing.ref, ("spec", "defaultBackend"),
                              f"the default backend of unknown hosts is already Ingress "
                              f"{root.ingress}'s; this one is not used",
                              "give one Ingress without rules a defaultBackend")
            for rule in ing.rules:
                host = rule.host or CATCH_ALL
                if host not in servers:
                    servers[host] = _Server(host)
                    if default:
                        servers[host].set_root(default, ing.ref.key)
        for ing in served:
            for entry in ing.tls:
                key = f"{ing.ref.namespace}/{entry.secret_name}"
                for host in entry.hosts:
                    if host in servers and key in secrets and servers[host].certificate is None:
                        servers[host].certificate = key
        routes: list[IngressRoutePlan] = []
        # what each location becomes in nginx (docs/ingress.md): two rules giving the same
        # nginx location would make nginx refuse the whole file, so the later one is dropped
        seen: dict[tuple[str, str, str], tuple[str, str, str]] = {}
        for ing in served:
            tls_hosts = {h: t.secret_name for t in ing.tls for h in t.hosts}
            for ri, rule in enumerate(ing.rules):
                host = rule.host or CATCH_ALL
                server = servers[host]
                for pi, p in enumerate(rule.paths):
                    target = self.backend(ing, p.backend, by_key)
                    if target is None:
                        continue
                    # Prefix matches by path element: a trailing "/" changes nothing
                    value = (p.path.rstrip("/") or "/") if p.path_type == "Prefix" else p.path
                    is_root = value == "/" and p.path_type != "Exact"
                    ident = (host, *_nginx_location(value, p.path_type))
                    if ident in seen:
                        first, first_path, first_type = seen[ident]
                        same = (first_path, first_type) == (value, p.path_type)
                        what = ("already routed" if same else
                                f"the same nginx location as path {first_path} ({first_type}), "
                                "routed")
                        self.warn(ing.ref, ("spec", "rules", ri, "http", "paths", pi),
                                  f"host {rule.host or '*'} path {value} ({p.path_type}) is "
                                  f"{what} by Ingress {first}; the first wins",
                                  "route each host and path in one Ingress")
                        continue
                    seen[ident] = (ing.ref.key, value, p.path_type)
                    location = IngressLocationPlan(value, p.path_type, target[0], target[1],
                                                   ing.ref.key)
                    if is_root:
                        server.root = location
                    else:
                        server.locations.append(location)
                    routes.append(IngressRoutePlan(
                        ing.ref.key, rule.host, value, p.path_type, target[0], target[1],
                        rule.host in tls_hosts, tls_hosts.get(rule.host) if rule.host else None))
        ordered = sorted(servers.values(), key=lambda s: (
            s.host == CATCH_ALL, s.host.startswith("*."), s.host))
        uses: dict[str, list[str]] = {}
        for server in ordered:
            if server.certificate:
                uses.setdefault(server.certificate, []).append(server.host)
        default_cert = self.settings.ingress_default_certificate
        tls_plans = [TLSSecretPlan(
            s.ref.namespace, s.ref.name, s.cert, s.key, list(s.info.names),
            s.info.not_after.isoformat(), s.info.issuer, uses.get(s.ref.key, []), s.ref.where())
            for s in self.objects.secrets
            if s.ref.key in uses or s.ref.key == default_cert]
        return IngressPlans(classes, [s.plan() for s in ordered], ignored, tls_plans, routes)


CATCH_ALL = "_"  # nginx's server_name for any host no other server names


def _nginx_location(path: str, path_type: str) -> tuple[str, str]:
    """The nginx location a rule path owns (docs/ingress.md): "/" of any prefix type is the
    server's root; Prefix P owns ``^~ P/`` (its ``= P`` yields to an Exact P, as nginx's own
    precedence says); ImplementationSpecific P owns ``^~ P``; Exact P owns ``= P``."""
    if path == "/" and path_type != "Exact":
        return ("root", "/")
    if path_type == "Prefix":
        return ("^~", f"{path}/")
    if path_type == "ImplementationSpecific":
        return ("^~", path)
    return ("=", path)
_LOCATION_ORDER = {"Exact": 0, "Prefix": 1, "ImplementationSpecific": 2}


class _Server:
    def __init__(self, host: str) -> None:
        self.host = host
        self.certificate: str | None = None
        self.root = IngressLocationPlan("/", "Prefix", None, None, None)  # the default backend
        self.locations: list[IngressLocationPlan] = []

    def set_root(self, target: tuple[str, int], ingress: str) -> None:
        self.root = IngressLocationPlan("/", "Prefix", target[0], target[1], ingress)

    def plan(self) -> IngressServerPlan:
        """Locations longest path first, Exact before Prefix at one path (nginx's own
        precedence decides; the order only keeps the file stable and readable), "/" last."""
        ordered = sorted(self.locations, key=lambda loc: (
            -len(loc.path), loc.path, _LOCATION_ORDER.get(loc.path_type, 3)))
        return IngressServerPlan(self.host, self.certificate, [*ordered, self.root])


@dataclasses.dataclass
class IngressPlans:
    classes: list[IngressClassPlan]
    servers: list[IngressServerPlan]
    ignored: list[IgnoredIngressPlan]
    secrets: list[TLSSecretPlan]
    routes: list[IngressRoutePlan]
