"""Turn YAML documents into checked Kubernetes objects (objects.py), reporting every problem.

Checks here need only the object itself (and its schema); checks across objects and against the
inventory live in model.py.
"""

from __future__ import annotations

import base64
import binascii
from ipaddress import ip_address
from typing import Any

from podnet import names, schema, tls, workloads
from podnet.addresses import parse_network
from podnet.objects import (
    Container,
    ContainerPort,
    Deployment,
    DNSConfig,
    Ingress,
    IngressBackend,
    IngressClass,
    IngressPath,
    IngressRule,
    IngressTLS,
    Manifests,
    Namespace,
    Pod,
    PodSpec,
    Probe,
    Ref,
    Service,
    ServicePortSpec,
    TLSSecret,
)
from podnet.problems import Problems
from podnet.yamlsource import Document, FieldPath, fmt_path

PROTOCOLS = ("TCP", "UDP")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
DEFAULT_AFFINITY_TIMEOUT = 10800


class _Checker:
    def __init__(self, ref: Ref, problems: Problems) -> None:
        self.ref = ref
        self.problems = problems
        self.ok = True
        self.probed = ""  # the container whose readinessProbe podnet runs

    def error(self, path: FieldPath, message: str, fix: str) -> None:
        self.ok = False
        self.problems.error(self.ref.where(path), str(self.ref), fmt_path(path), message, fix)

    def warn(self, path: FieldPath, message: str, fix: str) -> None:
        self.problems.warn(self.ref.where(path), str(self.ref), fmt_path(path), message, fix)

    def labels(self, data: Any, path: FieldPath) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in (data or {}).items():
            text = "" if value is None else str(value)
            reason = names.label_key(str(key)) or names.label_value(text)
            if reason:
                self.error((*path, str(key)), reason, "use Kubernetes label syntax")
            out[str(key)] = text
        return out

    def port(self, value: Any, path: FieldPath, what: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
            self.error(path, f"{what} {value!r} is out of range", "use a port from 1 to 65535")
            return 0
        return value

    def protocol(self, value: Any, path: FieldPath) -> str:
        proto = "TCP" if value is None else str(value)
        if proto not in PROTOCOLS:
            extra = " (SCTP is not carried by podnet)" if proto == "SCTP" else ""
            self.error(path, f"protocol '{proto}' is not supported{extra}", "use TCP or UDP")
        return proto


def read(documents: list[Document], problems: Problems) -> Manifests:
    """Checked objects from the documents; problems list everything wrong with them."""
    out = Manifests()
    seen: dict[tuple[str, str, str], Ref] = {}
    for doc in documents:
        ref = _identify(doc, problems)
        if ref is None:
            continue
        identity = (ref.kind, ref.namespace, ref.name)
        if identity in seen:
            problems.error(ref.where(("metadata", "name")), str(ref), "metadata.name",
                           f"is defined twice (first at {seen[identity].where()})",
                           "give each object of a kind its own name in its namespace")
            continue
        seen[identity] = ref
        check = _Checker(ref, problems)
        data = _without_nulls(doc.data, (), check)
        for path, message in schema.schema_errors(data):
            fields = fmt_path(tuple(p for p in path if isinstance(p, str)))
            explain = f"{ref.kind.lower()}.{fields}" if fields else ref.kind.lower()
            check.error(path, message, f"see 'kubectl explain {explain}' "
                        f"(Kubernetes {schema.KUBERNETES_VERSION} schema)")
        if not check.ok:
            continue
        if ref.kind == "Secret" and data.get("type") != tls.TLS_TYPE:
            # podnet has one use for a Secret, an Ingress' TLS: others are let be, said once
            kind = data.get("type") or "Opaque"
            check.warn(("type",), f"a Secret of type {kind} is not used by podnet (it reads "
                       f"{tls.TLS_TYPE} Secrets, for Ingress TLS); it is ignored",
                       f"remove it, or make it type {tls.TLS_TYPE} with tls.crt and tls.key")
            out.other_secrets[ref.key] = str(kind)
            continue
        for path in schema.unhonoured_fields(ref.kind, data):
            check.warn(path, "podnet does not act on this field; it has no effect here",
                       "remove it, or see docs/manifests.md for the fields podnet honours")
        parser = _PARSERS[ref.kind]
        try:
            parsed = parser(check, data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a backstop
            check.error((), f"could not be read ({type(exc).__name__}: {exc})",
                        "check the object against the Kubernetes documentation of its kind")
            continue
        if check.ok and parsed is not None:
            getattr(out, _LISTS[ref.kind]).append(parsed)
    return out


def _without_nulls(data: Any, path: FieldPath, check: _Checker) -> Any:
    """The object with null fields dropped, as the API server treats them (unset); a null
    list item is an error."""
    if isinstance(data, dict):
        return {k: _without_nulls(v, (*path, k), check) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        for i, item in enumerate(data):
            if item is None:
                check.error((*path, i), "is null", "remove the empty list item")
        return [_without_nulls(v, (*path, i), check) for i, v in enumerate(data) if v is not None]
    return data


def _identify(doc: Document, problems: Problems) -> Ref | None:
    data = doc.data
    subject = f"document {doc.number}"
    if not isinstance(data, dict):
        problems.error(doc.where(), subject, "", "is not a mapping (a Kubernetes object)",
                       "each YAML document must be one object with apiVersion, kind, metadata")
        return None
    kind, api = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api, str):
        problems.error(doc.where(), subject, "kind" if not isinstance(kind, str) else "apiVersion",
                       "is missing", "every object needs apiVersion and kind")
        return None
    if kind not in schema.KINDS:
        problems.error(doc.where(("kind",)), subject, "kind",
                       f"'{kind}' is not a kind podnet builds",
                       f"use {', '.join(schema.KINDS)}")
        return None
    if api != schema.KINDS[kind]:
        problems.error(doc.where(("apiVersion",)), f"{kind} in {subject}", "apiVersion",
                       f"'{api}' is not the apiVersion podnet reads for {kind}",
                       f"use apiVersion: {schema.KINDS[kind]}")
        return None
    raw_meta = data.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        problems.error(doc.where(("metadata",)), f"{kind} in {subject}", "metadata.name",
                       "is missing", "give the object a name")
        return None
    namespace = "" if kind == "Namespace" else str(meta.get("namespace") or "default")
    ref = Ref(kind, namespace, name, doc)
    rule = {"Service": names.dns1035_label, "Namespace": names.dns1123_label}.get(
        kind, names.dns1123_subdomain)
    reason = rule(name)
    if reason:
        problems.error(doc.where(("metadata", "name")), str(ref), "metadata.name", reason,
                       "rename the object (lower-case letters, digits and '-')")
        return None
    if namespace and (reason := names.dns1123_label(namespace)):
        problems.error(doc.where(("metadata", "namespace")), str(ref), "metadata.namespace",
                       reason, "use a valid namespace name")
        return None
    return ref


def _probe(check: _Checker, probe: Any, path: FieldPath, ports: list[ContainerPort],
           container: str) -> Probe | None:
    """A readinessProbe with httpGet or tcpSocket (others are warned about by the schema
    check and not run: the pod stays ready)."""
    if not isinstance(probe, dict):
        return None
    kind, action = next(((k, probe[k]) for k in ("httpGet", "tcpSocket")
                         if isinstance(probe.get(k), dict)), (None, None))
    if kind is None or action is None:
        return None
    where = (*path, kind, "port")
    port = action.get("port")
    if isinstance(port, str) and port.isdigit():
        check.error(where, f"port '{port}' is a quoted number, which Kubernetes reads as a port "
                    "name (and a name needs a letter)", "write the number without quotes")
        return None
    if isinstance(port, str):
        named = [p.port for p in ports if p.name == port and p.protocol == "TCP"]
        if not named:
            check.error(where, f"port '{port}' is not a TCP port name of this container",
                        "name one of the container's ports, or give the number")
            return None
        number = named[0]
    else:
        number = check.port(port, where, "port")
    timing = {}
    for field, key, low in (("periodSeconds", "period", 1), ("timeoutSeconds", "timeout", 1),
                            ("failureThreshold", "failure", 1), ("successThreshold", "success", 1)):
        value = probe.get(field)
        if value is None or value == 0:  # the API server defaults 0 as it defaults a gap
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            check.error((*path, field), f"'{value}' must be a whole number of at least {low}",
                        f"set {field} to {low} or more, or leave it out")
            continue
        timing[key] = value
    if check.probed:
        check.warn(path, f"container {check.probed}'s readinessProbe is the one podnet runs for "
                   "this pod; this one is not run", "give the pod one readinessProbe")
        return None
    check.probed = container
    path_text = str(action.get("path") or "/") if kind == "httpGet" else "/"
    if not path_text.startswith("/"):
        check.error((*path, "httpGet", "path"), f"'{path_text}' does not start with '/'",
                    "give an absolute path like /ready")
    return Probe("http" if kind == "httpGet" else "tcp", number, path_text, **timing)


def _host_port(check: _Checker, p: dict[str, Any], path: FieldPath, number: int,
               host_network: bool) -> tuple[int | None, str | None]:
    """A container port's hostPort and hostIP, checked as the API server checks them."""
    host_ip = p.get("hostIP")
    if p.get("hostPort") in (None, 0):  # 0 is no host port, as in Kubernetes
        if host_ip is not None:
            check.error((*path, "hostIP"), "is set without a hostPort",
                        "set hostPort too, or remove hostIP")
        return None, None
    port = check.port(p["hostPort"], (*path, "hostPort"), "hostPort")
    if host_network and port != number:
        check.error((*path, "hostPort"),
                    f"{port} differs from containerPort {number} in a hostNetwork pod",
                    "a hostNetwork pod listens on its node: make hostPort equal containerPort "
                    "or remove it")
    if host_ip is not None:
        try:
            addr = ip_address(str(host_ip))
        except ValueError:
            check.error((*path, "hostIP"), f"'{host_ip}' is not an IP address",
                        "give one of the node's IPv4 addresses, like 127.0.0.1, or remove it")
            return port, None
        if addr.version != 4:
            check.error((*path, "hostIP"), f"'{host_ip}' is not IPv4 (podnet's pod network is "
                        "IPv4 only)", "give one of the node's IPv4 addresses, or remove it")
        if addr.is_unspecified:
            return port, None  # 0.0.0.0 is every address, as with no hostIP
        return port, str(addr)
    return port, None


DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
# the resolver's limits the kubelet enforces (pkg/apis/core/validation: MaxDNSNameservers,
# MaxDNSSearchPaths, MaxDNSSearchListChars)
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32
MAX_SEARCH_CHARS = 2048


def _dns_config(check: _Checker, spec: dict[str, Any], path: FieldPath) -> DNSConfig | None:
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    data = spec.get("dnsConfig")
    if policy not in DNS_POLICIES:
        check.error((*path, "dnsPolicy"), f"'{policy}' is not a DNS policy",
                    f"use one of {', '.join(DNS_POLICIES)}")
    if data is None:
        if policy == "None":
            check.error((*path, "dnsPolicy"), "is None but dnsConfig gives no nameservers",
                        "add dnsConfig.nameservers (at least one) or use another dnsPolicy")
        return None
    cpath = (*path, "dnsConfig")
    servers = [str(s) for s in data.get("nameservers") or ()]
    for i, server in enumerate(servers):
        try:
            if ip_address(server).version != 4:
                raise ValueError
        except ValueError:
            check.error((*cpath, "nameservers", i), f"'{server}' is not an IPv4 address",
                        "give the resolver's IPv4 address, like 10.96.0.10")
    if len(servers) > MAX_NAMESERVERS:
        check.error((*cpath, "nameservers"), f"lists {len(servers)} nameservers",
                    f"give at most {MAX_NAMESERVERS} (the resolver reads no more)")
    if policy == "None" and not servers:
        check.error((*cpath, "nameservers"), "is empty but dnsPolicy is None",
                    "give at least one nameserver")
    searches = [str(s).rstrip(".") for s in data.get("searches") or ()]
    for i, domain in enumerate(searches):
        if reason := names.dns1123_subdomain(domain):
            check.error((*cpath, "searches", i), reason, "give a domain like ns1.svc.example")
    if len(searches) > MAX_SEARCHES:
        check.error((*cpath, "searches"), f"lists {len(searches)} domains",
                    f"give at most {MAX_SEARCHES}")
    if len(" ".join(searches)) > MAX_SEARCH_CHARS:
        check.error((*cpath, "searches"), f"is longer than {MAX_SEARCH_CHARS} characters",
                    "list fewer or shorter domains")
    options: list[tuple[str, str | None]] = []
    for i, opt in enumerate(data.get("options") or ()):
        name = str(opt.get("name") or "")
        if not name:
            check.error((*cpath, "options", i, "name"), "is missing",
                        "name the resolver option, like ndots")
        value = opt.get("value")
        options.append((name, None if value is None else str(value)))
    if policy == "Default" or (policy == "ClusterFirst" and spec.get("hostNetwork")):
        why = ("dnsPolicy Default" if policy == "Default" else
               "dnsPolicy ClusterFirst on the host network (the kubelet makes that Default)")
        check.error((*cpath,), f"is set with {why}: podnet does not merge it into the node's "
                    "own resolv.conf", "use dnsPolicy None with the whole dnsConfig, or "
                    "ClusterFirst (ClusterFirstWithHostNet on the host network)")
    return DNSConfig(tuple(servers), tuple(searches), tuple(options))


def _pod_spec(check: _Checker, spec: dict[str, Any], path: FieldPath) -> PodSpec:
    containers: list[Container] = []
    host_network = bool(spec.get("hostNetwork"))
    seen_names: set[str] = set()
    seen_ports: dict[tuple[int, str], str] = {}
    seen_port_names: set[str] = set()
    for ci, c in enumerate(spec["containers"]):
        cpath = (*path, "containers", ci)
        if reason := names.dns1123_label(c["name"]):
            check.error((*cpath, "name"), reason, "rename the container")
        if c["name"] in seen_names:
            check.error((*cpath, "name"), f"container name '{c['name']}' is used twice",
                        "give each container of the pod its own name")
        seen_names.add(c["name"])
        try:
            workload = workloads.resolve(str(c.get("image") or ""), c.get("command") or (),
                                         c.get("args") or ())
        except ValueError as exc:
            check.error((*cpath, "image"), str(exc), "see docs/workloads.md")
            workload = workloads.Workload("invalid")
        ports: list[ContainerPort] = []
        for pi, p in enumerate(c.get("ports") or ()):
            ppath = (*cpath, "ports", pi)
            number = check.port(p["containerPort"], (*ppath, "containerPort"), "containerPort")
            proto = check.protocol(p.get("protocol"), (*ppath, "protocol"))
            name = p.get("name")
            if name is not None:
                if reason := names.iana_svc_name(name):
                    check.error((*ppath, "name"), reason, "use a short port name like 'http'")
                elif name in seen_port_names:
                    check.error((*ppath, "name"), f"port name '{name}' is used twice in the pod",
                                "give each container port its own name")
                seen_port_names.add(name)
            if (number, proto) in seen_ports:
                check.error((*ppath, "containerPort"),
                            f"{number}/{proto} is already declared by container "
                            f"{seen_ports[(number, proto)]}", "declare each port once per pod")
            seen_ports[(number, proto)] = c["name"]
            host_port, host_ip = _host_port(check, p, ppath, number, host_network)
            ports.append(ContainerPort(name, number, proto, host_port, host_ip))
        env = tuple((str(e["name"]), str(e.get("value", ""))) for e in c.get("env") or ())
        probe = _probe(check, c.get("readinessProbe"), (*cpath, "readinessProbe"), ports,
                       str(c["name"]))
        containers.append(Container(c["name"], c["image"], workload, tuple(ports), env, probe))
    for key in ("hostname", "subdomain"):
        value = spec.get(key)
        if value is not None and (reason := names.dns1123_label(value)):
            check.error((*path, key), reason, f"set {key} to a DNS-1123 label")
    selector = check.labels(spec.get("nodeSelector"), (*path, "nodeSelector"))
    dns_config = _dns_config(check, spec, path)
    taken: dict[tuple[str, int, str], str] = {}
    for ci, c in enumerate(containers):
        for pi, p in enumerate(c.ports):
            slot = p.host_slot
            if slot is None:
                continue
            if slot in taken:
                check.error((*path, "containers", ci, "ports", pi, "hostPort"),
                            f"{slot[0]}:{slot[1]}/{slot[2]} is already taken by container "
                            f"{taken[slot]}", "give each hostPort, hostIP and protocol once")
            taken[slot] = c.name
    return PodSpec(
        containers=tuple(containers),
        hostname=spec.get("hostname"),
        subdomain=spec.get("subdomain"),
        node_name=spec.get("nodeName"),
        node_selector=tuple(sorted(selector.items())),
        restart_policy=spec.get("restartPolicy") or "Always",
        host_network=host_network,
        dns_policy=spec.get("dnsPolicy") or "ClusterFirst",
        dns_config=dns_config,
    )


def _namespace(check: _Checker, data: dict[str, Any]) -> Namespace:
    return Namespace(check.ref, check.labels(data["metadata"].get("labels"),
                                             ("metadata", "labels")))


# A pod that keeps its address on whichever node it runs (docs/backends.md): "true" or "false";
# bare Pods do by default (they have one identity, like a StatefulSet's pods), a Deployment's
# pods when its template says "true" (replica i keeps replica i's address)
STABLE_IP_ANNOTATION = "podnet.io/stable-ip"


def _stable_ip(check: _Checker, meta: Any, path: tuple[str, ...], default: bool) -> bool:
    annotations = (meta.get("annotations") or {}) if isinstance(meta, dict) else {}
    if not isinstance(annotations, dict):
        check.error((*path, "annotations"), "must be a mapping of strings",
                    f"write annotations as key: value, like {STABLE_IP_ANNOTATION}: \"true\"")
        return default
    value = annotations.get(STABLE_IP_ANNOTATION)
    if value is None:
        return default
    if value not in ("true", "false"):
        check.error((*path, "annotations", STABLE_IP_ANNOTATION),
                    f"{value!r} is not \"true\" or \"false\"",
                    "quote it: annotations are strings (\"true\" keeps the pod's address on "
                    "any node, \"false\" takes one from its node's pod CIDR)")
        return default
    return value == "true"


def _pod(check: _Checker, data: dict[str, Any]) -> Pod:
    labels = check.labels(data["metadata"].get("labels"), ("metadata", "labels"))
    host_network = bool(data["spec"].get("hostNetwork"))
    stable = _stable_ip(check, data["metadata"], ("metadata",), default=not host_network)
    if stable and host_network:
        check.error(("metadata", "annotations", STABLE_IP_ANNOTATION),
                    "is \"true\" on a hostNetwork pod, which has its node's address",
                    "remove the annotation or hostNetwork")
    return Pod(check.ref, labels, _pod_spec(check, data["spec"], ("spec",)), ("spec",), stable)


def _deployment(check: _Checker, data: dict[str, Any]) -> Deployment | None:
    spec = data["spec"]
    template = spec["template"]
    labels = check.labels((template.get("metadata") or {}).get("labels"),
                          ("spec", "template", "metadata", "labels"))
    selector = check.labels(spec["selector"].get("matchLabels"),
                            ("spec", "selector", "matchLabels"))
    replicas = spec.get("replicas", 1)
    if replicas < 0:
        check.error(("spec", "replicas"), f"{replicas} is negative", "use 0 or more replicas")
    if not selector:
        check.error(("spec", "selector", "matchLabels"), "is empty",
                    "select the template's pods with matchLabels")
    elif any(labels.get(k) != v for k, v in selector.items()):
        check.error(("spec", "selector", "matchLabels"),
                    f"{selector} does not match the template labels {labels}",
                    "make spec.template.metadata.labels include every matchLabels entry")
    if "spec" not in template:
        check.error(("spec", "template", "spec"), "is required", "give the pod template a spec")
        return None
    pod_spec = _pod_spec(check, template["spec"], ("spec", "template", "spec"))
    if pod_spec.restart_policy != "Always":
        check.error(("spec", "template", "spec", "restartPolicy"),
                    f"'{pod_spec.restart_policy}' is not allowed in a Deployment",
                    "use Always (the default), or a Pod for a run-once workload")
    if pod_spec.hostname:
        check.warn(("spec", "template", "spec", "hostname"),
                   "every replica gets this same hostname", "use a Pod per hostname instead")
    stable = _stable_ip(check, template.get("metadata"), ("spec", "template", "metadata"),
                        default=False)
    if stable and pod_spec.host_network:
        check.error(("spec", "template", "metadata", "annotations", STABLE_IP_ANNOTATION),
                    "is \"true\" on hostNetwork pods, which have their node's address",
                    "remove the annotation or hostNetwork")
    return Deployment(check.ref, replicas, selector, labels, pod_spec, template,
                      ("spec", "template", "spec"), stable)


def _service(check: _Checker, data: dict[str, Any]) -> Service:
    spec = data.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    if kind not in SERVICE_TYPES:
        check.error(("spec", "type"), f"'{kind}' is not a Service type",
                    f"use one of {', '.join(SERVICE_TYPES)}")
    cluster_ip = spec.get("clusterIP") or None
    if cluster_ip is not None and cluster_ip != "None" and not _is_ipv4(cluster_ip):
        check.error(("spec", "clusterIP"), f"'{cluster_ip}' is not an IPv4 address",
                    "give an address in podnet_service_cidr, 'None' for headless, or leave it out")
    ips = spec.get("clusterIPs")
    if ips and ips != [cluster_ip or ips[0]]:
        check.error(("spec", "clusterIPs"), f"{ips} must be [clusterIP] (podnet is IPv4-only)",
                    "leave clusterIPs out or make it equal [clusterIP]")
    if ips and cluster_ip is None:
        cluster_ip = str(ips[0])
        if cluster_ip != "None" and not _is_ipv4(cluster_ip):
            check.error(("spec", "clusterIPs", 0), f"'{cluster_ip}' is not an IPv4 address",
                        "give an address in podnet_service_cidr or leave clusterIPs out")
    for fam_i, family in enumerate(spec.get("ipFamilies") or ()):
        if family != "IPv4":
            check.error(("spec", "ipFamilies", fam_i), f"'{family}' is not carried by podnet",
                        "use [IPv4] or leave ipFamilies out")
    if spec.get("ipFamilyPolicy") not in (None, "SingleStack", "PreferDualStack"):
        check.error(("spec", "ipFamilyPolicy"), f"'{spec['ipFamilyPolicy']}' needs IPv6",
                    "use SingleStack or leave it out")
    headless = cluster_ip == "None"
    if headless and kind != "ClusterIP":
        check.error(("spec", "clusterIP"), f"a {kind} Service cannot be headless",
                    "use clusterIP: None only with type ClusterIP")
    external_name = spec.get("externalName")
    if kind == "ExternalName":
        if not external_name:
            check.error(("spec", "externalName"), "is required for type ExternalName",
                        "set externalName to a DNS name like db.example.test")
        elif reason := names.dns1123_subdomain(str(external_name).rstrip(".")):
            check.error(("spec", "externalName"), reason, "use a DNS name")
        if cluster_ip is not None:
            check.error(("spec", "clusterIP"), "must not be set for type ExternalName",
                        "remove clusterIP")
    elif external_name:
        check.error(("spec", "externalName"), f"is only used by type ExternalName, not {kind}",
                    "remove externalName or set type: ExternalName")

    ports: list[ServicePortSpec] = []
    raw_ports = spec.get("ports") or []
    if not raw_ports and kind != "ExternalName" and not headless:
        check.error(("spec", "ports"), "is empty", "give the Service at least one port")
    seen_names: set[str] = set()
    seen_numbers: set[tuple[int, str]] = set()
    for i, p in enumerate(raw_ports):
        path = ("spec", "ports", i)
        name = p.get("name") or ""
        if len(raw_ports) > 1 and not name:
            check.error((*path, "name"), "is required when a Service has more than one port",
                        "name every port (like http, dns)")
        if name:
            if reason := names.dns1123_label(name):
                check.error((*path, "name"), reason, "use a port name like 'http'")
            if name in seen_names:
                check.error((*path, "name"), f"port name '{name}' is used twice",
                            "give each port its own name")
            seen_names.add(name)
        number = check.port(p["port"], (*path, "port"), "port")
        proto = check.protocol(p.get("protocol"), (*path, "protocol"))
        if (number, proto) in seen_numbers:
            check.error((*path, "port"), f"{number}/{proto} is listed twice",
                        "list each port and protocol once")
        seen_numbers.add((number, proto))
        target: int | str = p.get("targetPort", number)
        if isinstance(target, int):
            check.port(target, (*path, "targetPort"), "targetPort")
        elif reason := names.iana_svc_name(target):
            check.error((*path, "targetPort"), reason,
                        "give a port number or the name of a container port")
        node_port = p.get("nodePort")
        if node_port is not None:
            if kind not in ("NodePort", "LoadBalancer"):
                check.error((*path, "nodePort"), f"is only used by NodePort and LoadBalancer, "
                            f"not {kind}", "remove nodePort or change the type")
            else:
                check.port(node_port, (*path, "nodePort"), "nodePort")
        ports.append(ServicePortSpec(name, proto, number, target, node_port, i))

    affinity = spec.get("sessionAffinity") or "None"
    timeout = None
    if affinity == "ClientIP":
        timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
            "timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT)
        if not 1 <= timeout <= 86400:
            check.error(("spec", "sessionAffinityConfig", "clientIP", "timeoutSeconds"),
                        f"{timeout} is out of range", "use 1 to 86400 seconds")
    elif affinity != "None":
        check.error(("spec", "sessionAffinity"), f"'{affinity}' is not an affinity",
                    "use None or ClientIP")
    elif spec.get("sessionAffinityConfig"):
        check.error(("spec", "sessionAffinityConfig"), "is set but sessionAffinity is not ClientIP",
                    "set sessionAffinity: ClientIP or remove sessionAffinityConfig")
    external = spec.get("externalTrafficPolicy")
    if external is not None and kind not in ("NodePort", "LoadBalancer"):
        check.error(("spec", "externalTrafficPolicy"), f"only applies to NodePort and "
                    f"LoadBalancer Services, not {kind}", "remove it or change the type")
    external = external or "Cluster"
    internal = spec.get("internalTrafficPolicy") or "Cluster"
    for key, value in (("externalTrafficPolicy", external), ("internalTrafficPolicy", internal)):
        if value not in ("Cluster", "Local"):
            check.error(("spec", key), f"'{value}' is not a policy", "use Cluster or Local")
    ranges: list[str] = []
    for i, text in enumerate(spec.get("loadBalancerSourceRanges") or ()):
        if kind != "LoadBalancer":
            check.error(("spec", "loadBalancerSourceRanges"), f"only applies to LoadBalancer "
                        f"Services, not {kind}", "remove it or set type: LoadBalancer")
            break
        try:
            ranges.append(str(parse_network(str(text).strip())))
        except ValueError as exc:
            check.error(("spec", "loadBalancerSourceRanges", i), str(exc),
                        "list client networks in CIDR form, like 192.168.56.0/24")
    lb_ip = spec.get("loadBalancerIP") or None
    if lb_ip is not None:
        if kind != "LoadBalancer":
            check.error(("spec", "loadBalancerIP"), f"only applies to LoadBalancer, not {kind}",
                        "remove it or set type: LoadBalancer")
        else:
            try:
                ip_address(lb_ip)
            except ValueError:
                check.error(("spec", "loadBalancerIP"), f"'{lb_ip}' is not an IP address",
                            "give an address from podnet_lb_pool or leave it out")
    hc_port = spec.get("healthCheckNodePort")
    if hc_port is not None and not (kind == "LoadBalancer" and external == "Local"):
        check.error(("spec", "healthCheckNodePort"), "only applies to LoadBalancer Services "
                    "with externalTrafficPolicy: Local", "remove it")
        hc_port = None
    selector = spec.get("selector")
    if selector is not None:
        selector = check.labels(selector, ("spec", "selector"))
    if kind == "ExternalName" and selector:
        check.warn(("spec", "selector"), "an ExternalName Service has no endpoints",
                   "remove the selector")
    return Service(
        ref=check.ref, type=kind, selector=selector or None, ports=tuple(ports),
        cluster_ip=cluster_ip, external_name=str(external_name).rstrip(".")
        if external_name else None,
        affinity_timeout=timeout, external_policy=external, internal_policy=internal,
        source_ranges=tuple(ranges), lb_ip=lb_ip, health_check_node_port=hc_port,
        labels=check.labels(data["metadata"].get("labels"), ("metadata", "labels")),
    )


def _backend(check: _Checker, data: dict[str, Any], path: FieldPath) -> IngressBackend | None:
    service = data.get("service")
    if not service:
        check.error(path, "has no service backend", "point the backend at a Service")
        return None
    port = service.get("port") or {}
    number, name = port.get("number"), port.get("name")
    if (number is None) == (name is None):
        check.error((*path, "service", "port"), "needs exactly one of number or name",
                    "give port.number or port.name")
        return None
    if number is not None:
        check.port(number, (*path, "service", "port", "number"), "port")
    port_ref: int | str = number if number is not None else str(name)
    return IngressBackend(service["name"], port_ref, (*path, "service"))


def _ingress(check: _Checker, data: dict[str, Any]) -> Ingress:
    spec = data.get("spec") or {}
    class_name = spec.get("ingressClassName")  # checked against the IngressClasses in model.py
    default = None
    if spec.get("defaultBackend"):
        default = _backend(check, spec["defaultBackend"], ("spec", "defaultBackend"))
    rules: list[IngressRule] = []
    for ri, rule in enumerate(spec.get("rules") or ()):
        host = rule.get("host") or None
        if host is not None:
            if _is_ip(host):
                check.error(("spec", "rules", ri, "host"), f"'{host}' is an IP address",
                            "give a DNS name; a rule without host matches any address")
            elif reason := names.dns1123_subdomain(host, wildcard=True):
                check.error(("spec", "rules", ri, "host"), reason, "give a DNS name")
        paths: list[IngressPath] = []
        for pi, p in enumerate(((rule.get("http") or {}).get("paths")) or ()):
            ppath = ("spec", "rules", ri, "http", "paths", pi)
            value = p.get("path") or ""
            if not value and p["pathType"] == "ImplementationSpecific":
                value = "/"
            if not value.startswith("/"):
                check.error((*ppath, "path"), f"'{value}' is not an absolute path",
                            "start the path with '/'")
            if p["pathType"] not in PATH_TYPES:
                check.error((*ppath, "pathType"), f"'{p['pathType']}' is not a path type",
                            f"use one of {', '.join(PATH_TYPES)}")
            backend = _backend(check, p["backend"], (*ppath, "backend"))
            if backend:
                paths.append(IngressPath(value, p["pathType"], backend))
        rules.append(IngressRule(host, tuple(paths)))
    if not rules and default is None:
        check.error(("spec",), "has neither rules nor a defaultBackend",
                    "add rules or a defaultBackend")
    tls: list[IngressTLS] = []
    rule_hosts = {r.host for r in rules}
    for ti, entry in enumerate(spec.get("tls") or ()):
        hosts = tuple(entry.get("hosts") or ())
        for hi, host in enumerate(hosts):
            if reason := names.dns1123_subdomain(host, wildcard=True):
                check.error(("spec", "tls", ti, "hosts", hi), reason, "give a DNS name")
            elif host not in rule_hosts:
                check.warn(("spec", "tls", ti, "hosts", hi), f"no rule has host '{host}'",
                           "add a rule for it or remove it from tls")
        tls.append(IngressTLS(hosts, entry.get("secretName")))
    return Ingress(check.ref, class_name, default, tuple(rules), tuple(tls))


def _ingress_class(check: _Checker, data: dict[str, Any]) -> IngressClass:
    spec = data.get("spec") or {}
    controller = str(spec.get("controller") or "")
    if not controller:
        check.error(("spec", "controller"), "is required",
                    "name the controller, like k8s.io/ingress-nginx (podnet's)")
    annotations = data["metadata"].get("annotations") or {}
    marked = annotations.get(DEFAULT_CLASS_ANNOTATION)
    path = ("metadata", "annotations", DEFAULT_CLASS_ANNOTATION)
    if marked is not None and str(marked) not in ("true", "false"):
        # Kubernetes' admission plugin compares with "true" exactly: anything else is not default
        check.warn(path, f"'{marked}' is not \"true\", so this class is not the default",
                   'write "true" (quoted) or remove the annotation')
    return IngressClass(check.ref, controller, str(marked) == "true")


def _secret(check: _Checker, data: dict[str, Any]) -> TLSSecret | None:
    """A kubernetes.io/tls Secret (read() lets no other type here): tls.crt and tls.key from
    stringData (PEM text, which the API server moves into data) or data (base64), checked."""
    found: dict[str, tuple[FieldPath, bytes]] = {}
    plain = data.get("stringData") or {}
    encoded = data.get("data") or {}
    for key in (tls.CERT_KEY, tls.KEY_KEY):
        if key in plain:
            found[key] = (("stringData", key), str(plain[key]).encode())
        elif key in encoded:
            try:
                value = base64.b64decode(str(encoded[key]), validate=True)
            except binascii.Error:
                check.error(("data", key), "is not base64",
                            "base64-encode the PEM (base64 -w0 file.pem), or give the PEM text "
                            "under stringData")
                continue
            found[key] = (("data", key), value)
        else:
            check.error(("data", key), f"is missing: a {tls.TLS_TYPE} Secret needs "
                        f"{tls.CERT_KEY} and {tls.KEY_KEY}",
                        "add it under data (base64) or stringData (PEM text)")
    if not check.ok:
        return None
    cert_path, cert = found[tls.CERT_KEY]
    key_pem = found[tls.KEY_KEY][1]
    try:
        info = tls.check_pair(cert, key_pem)
        cert_text, key_text = cert.decode("ascii"), key_pem.decode("ascii")
    except tls.TLSError as exc:
        check.error(found[exc.key][0], str(exc), exc.fix)
        return None
    except UnicodeDecodeError:
        check.error(cert_path, "holds bytes that are not PEM text", "give PEM files")
        return None
    if info.expired():
        check.warn(cert_path, f"the certificate expired on {info.not_after:%Y-%m-%d %H:%M} UTC; "
                   "clients will refuse it", "renew it")
    elif info.not_yet_valid():
        check.warn(cert_path, f"the certificate is valid only from "
                   f"{info.not_before:%Y-%m-%d %H:%M} UTC", "check the clock or the certificate")
    return TLSSecret(check.ref, cert_text, key_text, info)


def _is_ipv4(text: str) -> bool:
    try:
        return ip_address(text).version == 4
    except ValueError:
        return False


def _is_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


_PARSERS = {
    "Namespace": _namespace,
    "Pod": _pod,
    "Deployment": _deployment,
    "Service": _service,
    "Ingress": _ingress,
    "IngressClass": _ingress_class,
    "Secret": _secret,
}
_LISTS = {
    "Namespace": "namespaces",
    "Pod": "pods",
    "Deployment": "deployments",
    "Service": "services",
    "Ingress": "ingresses",
    "IngressClass": "ingress_classes",
    "Secret": "secrets",
}
