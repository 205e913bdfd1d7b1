"""The inventory half of the model's input: network settings and the hosts they apply to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, NamedTuple

from podnet import names
from podnet.addresses import nth_subnet, parse_address, parse_network, subnet_count
from podnet.problems import Problems

# how pod traffic crosses nodes (podnet/backends.py)
BACKENDS = ("host-gw", "vxlan", "bgp")
VXLAN_MAX_VNI = 2**24 - 1
# AS numbers no cluster may take: 0, AS_TRANS (RFC 6793) and the last of each range (RFC 7300)
BGP_RESERVED_AS = (0, 23456, 65535, 2**32 - 1)
PROXY_MODES = ("iptables",)
PLANNED_PROXY_MODES = ("nftables",)
# how LoadBalancer addresses are made reachable (docs/design.md, "LoadBalancer"): the lb host
# plays a cloud provider's network load balancer, or the nodes announce them on the segment
LB_MODES = ("cloud", "l2")
# l2 mode numbers each address's VRRP instance (virtual_router_id 1-255)
L2_MAX_ADDRESSES = 255
# a node that has not answered its peers' heartbeats for this long is NotReady (seconds); its
# peers beat once a second (podnet-endpoints), so the bounds are two beats and ten minutes
NODE_GRACE_BOUNDS = (2, 600)

DEFAULTS: dict[str, Any] = {
    "podnet_cluster_name": "podnet",
    "podnet_cluster_cidr": "10.244.0.0/16",
    "podnet_node_cidr_prefix": 24,
    # the block of the cluster CIDR that pods keeping their address on any node take theirs
    # from (docs/backends.md); empty: the last /podnet_node_cidr_prefix block of the cluster CIDR;
    # "none": no such block, every pod takes its node's addresses
    "podnet_stable_pod_cidr": "",
    "podnet_service_cidr": "10.96.0.0/12",
    "podnet_dns_service_ip": "10.96.0.10",
    "podnet_cluster_domain": "cluster.local",
    "podnet_nodeport_range": "30000-32767",
    "podnet_lb_pool": "",
    "podnet_lb_mode": "cloud",
    "podnet_lb_group": "loadbalancers",
    "podnet_backend": "host-gw",
    # vxlan: Flannel's VNI and UDP port
    "podnet_vxlan_vni": 1,
    "podnet_vxlan_port": 8472,
    # bgp: the cluster's private AS (Calico's default) and the nodes that reflect routes
    # (empty: every node peers with every other, a full mesh)
    "podnet_bgp_as": 64512,
    "podnet_bgp_route_reflectors": [],
    "podnet_proxy_mode": "iptables",
    "podnet_nodes_group": "nodes",
    "podnet_dns_replicas": 2,
    "podnet_dns_upstreams": [],  # empty: the resolvers in each DNS node's /etc/resolv.conf
    "podnet_ingress_replicas": 2,
    # "namespace/name" of a kubernetes.io/tls Secret; empty: the controller's self-signed one
    "podnet_ingress_default_certificate": "",
    # seconds without a heartbeat before a node's endpoints leave every Service (Kubernetes'
    # node-monitor-grace-period, 40 s there; docs/node-failure.md says why 5 s here)
    "podnet_node_grace_period": 5,
}
REQUIRED = ("podnet_underlay_cidr",)


@dataclass(frozen=True)
class Settings:
    cluster_name: str
    underlay_cidr: IPv4Network
    cluster_cidr: IPv4Network
    node_cidr_prefix: int
    service_cidr: IPv4Network
    dns_service_ip: IPv4Address
    cluster_domain: str
    nodeport_range: tuple[int, int]
    lb_pool: IPv4Network | None
    backend: str
    proxy_mode: str
    nodes_group: str
    dns_replicas: int
    dns_upstreams: tuple[str, ...] = ()
    lb_mode: str = "cloud"
    lb_group: str = "loadbalancers"
    ingress_replicas: int = 2
    ingress_default_certificate: str = ""  # ns/name, or "" for the controller's self-signed one
    vxlan_vni: int = 1
    vxlan_port: int = 8472
    bgp_as: int = 64512
    bgp_route_reflectors: tuple[str, ...] = ()
    # pods that keep their address on any node get it from here; no node's pod CIDR overlaps it
    # (None: podnet_stable_pod_cidr "none", every pod takes its node's addresses)
    stable_pod_cidr: IPv4Network | None = None
    node_grace_period: int = 5

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster_name": self.cluster_name,
            "underlay_cidr": str(self.underlay_cidr),
            "cluster_cidr": str(self.cluster_cidr),
            "node_cidr_prefix": self.node_cidr_prefix,
            "service_cidr": str(self.service_cidr),
            "dns_service_ip": str(self.dns_service_ip),
            "cluster_domain": self.cluster_domain,
            "nodeport_range": list(self.nodeport_range),
            "lb_pool": str(self.lb_pool) if self.lb_pool else None,
            "backend": self.backend,
            "proxy_mode": self.proxy_mode,
            "nodes_group": self.nodes_group,
            "dns_replicas": self.dns_replicas,
            "dns_upstreams": list(self.dns_upstreams),
            "lb_mode": self.lb_mode,
            "lb_group": self.lb_group,
            "ingress_replicas": self.ingress_replicas,
            "ingress_default_certificate": self.ingress_default_certificate,
            "vxlan_vni": self.vxlan_vni,
            "vxlan_port": self.vxlan_port,
            "bgp_as": self.bgp_as,
            "bgp_route_reflectors": list(self.bgp_route_reflectors),
            "stable_pod_cidr": str(self.stable_pod_cidr) if self.stable_pod_cidr else None,
            "node_grace_period": self.node_grace_period,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Settings:
        """The settings from :meth:`as_dict`'s data (the plan as Ansible holds it)."""
        pool = data["lb_pool"]
        return cls(
            cluster_name=data["cluster_name"], underlay_cidr=IPv4Network(data["underlay_cidr"]),
            cluster_cidr=IPv4Network(data["cluster_cidr"]),
            node_cidr_prefix=int(data["node_cidr_prefix"]),
            service_cidr=IPv4Network(data["service_cidr"]),
            dns_service_ip=IPv4Address(data["dns_service_ip"]),
            cluster_domain=data["cluster_domain"],
            nodeport_range=(int(data["nodeport_range"][0]), int(data["nodeport_range"][1])),
            lb_pool=IPv4Network(pool) if pool else None, backend=data["backend"],
            proxy_mode=data["proxy_mode"], nodes_group=data["nodes_group"],
            dns_replicas=int(data["dns_replicas"]), dns_upstreams=tuple(data["dns_upstreams"]),
            lb_mode=data["lb_mode"], lb_group=data["lb_group"],
            ingress_replicas=int(data["ingress_replicas"]),
            ingress_default_certificate=data["ingress_default_certificate"],
            vxlan_vni=int(data["vxlan_vni"]), vxlan_port=int(data["vxlan_port"]),
            bgp_as=int(data["bgp_as"]),
            bgp_route_reflectors=tuple(data["bgp_route_reflectors"]),
            stable_pod_cidr=(IPv4Network(data["stable_pod_cidr"]) if data["stable_pod_cidr"]
                             else None),
            node_grace_period=int(data["node_grace_period"]),
        )


@dataclass(frozen=True)
class HostSpec:
    """An inventory host: a node (runs pods) or another lab host (client, load balancer)."""

    name: str
    address: IPv4Address
    groups: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)
    pod_cidr: IPv4Network | None = None  # podnet_pod_cidr: a fixed pod CIDR for this node
    # podnet_bgp_peers: routers the node's BIRD also peers with in the bgp backend, (address, AS)
    bgp_peers: tuple[tuple[IPv4Address, int], ...] = ()

    def is_node(self, settings: Settings) -> bool:
        return settings.nodes_group in self.groups


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"'{value}' is not a number")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"'{value}' is not a number") from None


def _replicas(v: Mapping[str, Any], key: str, what: str, where: str, problems: Problems) -> int:
    """A count of pods to run (1 or more); 0 with an error naming the setting otherwise."""
    try:
        count = _int(v[key])
        if count < 1:
            raise ValueError(f"'{count}' must be 1 or more")
    except ValueError as exc:
        problems.error(where, "inventory", key, str(exc), f"set how many {what} to run, like 2")
        return 0
    return count


def parse_port_range(value: Any) -> tuple[int, int]:
    text = str(value).strip()
    lo_text, sep, hi_text = text.partition("-")
    if not sep:
        raise ValueError(f"'{value}' is not a range FIRST-LAST (like 30000-32767)")
    lo, hi = _int(lo_text), _int(hi_text)
    if not (1 <= lo <= hi <= 65535):
        raise ValueError(f"'{value}' must satisfy 1 <= FIRST <= LAST <= 65535")
    return lo, hi


def read_settings(variables: Mapping[str, Any], where: str, problems: Problems) -> Settings | None:
    """Settings from the ``podnet_*`` variables; problems are added, None when any is an error."""
    before = len(problems.errors)
    v = {**DEFAULTS, **{k: val for k, val in variables.items() if val is not None}}
    for key in REQUIRED:
        if key not in v:
            problems.error(where, "inventory", key, "is not set",
                           f"set {key} in group_vars/all (like 192.168.56.0/24)")
            return None

    def net(key: str, optional: bool = False) -> IPv4Network | None:
        if optional and not v.get(key):
            return None
        try:
            return parse_network(v[key])
        except ValueError as exc:
            problems.error(where, "inventory", key, str(exc),
                           f"set {key} to an IPv4 network with its host bits zero")
            return None

    underlay = net("podnet_underlay_cidr")
    cluster = net("podnet_cluster_cidr")
    service = net("podnet_service_cidr")
    pool = net("podnet_lb_pool", optional=True)

    name = str(v["podnet_cluster_name"])
    if reason := names.dns1123_label(name):
        problems.error(where, "inventory", "podnet_cluster_name", reason,
                       "use a short lower-case name like 'podnet'")
    domain = str(v["podnet_cluster_domain"]).rstrip(".")
    if reason := names.dns1123_subdomain(domain):
        problems.error(where, "inventory", "podnet_cluster_domain", reason,
                       "use a DNS domain like 'cluster.local'")

    prefix: int | None = None
    try:
        prefix = _int(v["podnet_node_cidr_prefix"])
    except ValueError as exc:
        problems.error(where, "inventory", "podnet_node_cidr_prefix", str(exc),
                       "set a prefix length like 24")
    if cluster and prefix is not None and not cluster.prefixlen <= prefix <= 29:
        problems.error(
            where, "inventory", "podnet_node_cidr_prefix",
            f"/{prefix} does not fit podnet_cluster_cidr {cluster}: it must be between "
            f"/{cluster.prefixlen} and /29",
            f"choose a prefix from {cluster.prefixlen} to 29 (24 gives 254 pods per node)",
        )
    if service and not 12 <= service.prefixlen <= 28:
        problems.error(where, "inventory", "podnet_service_cidr",
                       f"{service} must be between a /12 and a /28 (Kubernetes' limits)",
                       "use a range like 10.96.0.0/12")

    stable = _stable_pod_cidr(v, cluster, prefix, where, problems)

    pairs = [("podnet_cluster_cidr", cluster), ("podnet_service_cidr", service),
             ("podnet_underlay_cidr", underlay), ("podnet_lb_pool", pool)]
    for i, (key_a, a) in enumerate(pairs):
        for key_b, b in pairs[i + 1:]:
            if a is None or b is None:
                continue
            if {key_a, key_b} == {"podnet_underlay_cidr", "podnet_lb_pool"}:
                continue  # LoadBalancer addresses may live on the underlay
            if a.overlaps(b):
                problems.error(where, "inventory", key_b,
                               f"{b} overlaps {key_a} {a}",
                               f"choose {key_b} and {key_a} so that they do not overlap")

    dns_ip = None
    try:
        dns_ip = parse_address(v["podnet_dns_service_ip"])
    except ValueError as exc:
        problems.error(where, "inventory", "podnet_dns_service_ip", str(exc),
                       "set an address inside podnet_service_cidr, like 10.96.0.10")
    if dns_ip and service:
        if dns_ip not in service:
            problems.error(where, "inventory", "podnet_dns_service_ip",
                           f"{dns_ip} is outside podnet_service_cidr {service}",
                           f"choose an address inside {service}, like {service[10]}")
        elif service.prefixlen < 31 and dns_ip in (service.network_address,
                                                    service.broadcast_address):
            problems.error(where, "inventory", "podnet_dns_service_ip",
                           f"{dns_ip} is the network or broadcast address of {service}",
                           f"choose a host address inside {service}, like {service[10]}")

    nodeports = (0, 0)
    try:
        nodeports = parse_port_range(v["podnet_nodeport_range"])
    except ValueError as exc:
        problems.error(where, "inventory", "podnet_nodeport_range", str(exc),
                       "set a range like 30000-32767")

    backend = str(v["podnet_backend"])
    if backend not in BACKENDS:
        problems.error(where, "inventory", "podnet_backend",
                       f"'{backend}' is not a routing backend podnet has",
                       f"use one of: {', '.join(BACKENDS)} (docs/backends.md)")
    vni, vxlan_port, bgp_as, reflectors = _backend_options(v, nodeports, where, problems)
    mode = str(v["podnet_proxy_mode"])
    if mode not in PROXY_MODES:
        later = " (planned, not built yet)" if mode in PLANNED_PROXY_MODES else ""
        problems.error(where, "inventory", "podnet_proxy_mode",
                       f"'{mode}' is not a proxy mode podnet has{later}",
                       f"use one of: {', '.join(PROXY_MODES)}")

    lb_mode = str(v["podnet_lb_mode"])
    if lb_mode not in LB_MODES:
        problems.error(where, "inventory", "podnet_lb_mode",
                       f"'{lb_mode}' is not a LoadBalancer mode podnet has",
                       f"use one of: {', '.join(LB_MODES)} (cloud: the lb host of group "
                       "podnet_lb_group; l2: the nodes announce the addresses)")
    if pool and underlay and not pool.subnet_of(underlay):
        problems.error(where, "inventory", "podnet_lb_pool",
                       f"{pool} is not inside podnet_underlay_cidr {underlay}: LoadBalancer "
                       "addresses are answered for (ARP) on the underlay, in both modes",
                       f"choose a pool inside {underlay}, like the top of its range")
    if pool and lb_mode == "l2" and pool.num_addresses > L2_MAX_ADDRESSES:
        problems.error(where, "inventory", "podnet_lb_pool",
                       f"{pool} has {pool.num_addresses} addresses; l2 mode gives each one a "
                       f"VRRP instance numbered 1-{L2_MAX_ADDRESSES}",
                       "use a pool of at most 255 addresses (a /25 or smaller)")

    replicas = _replicas(v, "podnet_dns_replicas", "DNS pods", where, problems)

    upstreams = _upstreams(v["podnet_dns_upstreams"], cluster, service, where, problems)

    ingress_replicas = _replicas(v, "podnet_ingress_replicas", "Ingress controller pods", where,
                                 problems)
    default_cert = str(v["podnet_ingress_default_certificate"] or "").strip()
    if default_cert:
        namespace, sep, secret = default_cert.partition("/")
        reason = (f"'{default_cert}' is not namespace/name" if not sep
                  else names.dns1123_label(namespace) or names.dns1123_subdomain(secret))
        if reason:
            problems.error(where, "inventory", "podnet_ingress_default_certificate", reason,
                           "name a kubernetes.io/tls Secret as namespace/name, like "
                           "ingress-nginx/default-tls, or leave it empty for a self-signed one")

    grace = _grace_period(v["podnet_node_grace_period"], where, problems)

    if len(problems.errors) > before:
        return None
    assert underlay and cluster and service and dns_ip and prefix is not None
    return Settings(
        cluster_name=name, underlay_cidr=underlay, cluster_cidr=cluster, node_cidr_prefix=prefix,
        service_cidr=service, dns_service_ip=dns_ip, cluster_domain=domain,
        nodeport_range=nodeports,
        lb_pool=pool, backend=backend, proxy_mode=mode,
        nodes_group=str(v["podnet_nodes_group"]), dns_replicas=replicas, dns_upstreams=upstreams,
        lb_mode=lb_mode, lb_group=str(v["podnet_lb_group"]),
        ingress_replicas=ingress_replicas, ingress_default_certificate=default_cert,
        vxlan_vni=vni, vxlan_port=vxlan_port, bgp_as=bgp_as, bgp_route_reflectors=reflectors,
        stable_pod_cidr=stable, node_grace_period=grace,
    )


def _grace_period(value: Any, where: str, problems: Problems) -> int:
    """podnet_node_grace_period in whole seconds, within NODE_GRACE_BOUNDS."""
    low, high = NODE_GRACE_BOUNDS
    try:
        seconds = _int(value)
        if not low <= seconds <= high:
            raise ValueError(f"'{seconds}' must be from {low} to {high} seconds")
    except ValueError as exc:
        problems.error(where, "inventory", "podnet_node_grace_period", str(exc),
                       f"set how many seconds a silent node keeps its endpoints, from {low} to "
                       f"{high}, like 5 (Kubernetes waits 40)")
        return 0
    return seconds


def default_stable_cidr(cluster: IPv4Network, prefix: int) -> IPv4Network:
    """The cluster CIDR's last /prefix block (the node CIDR allocator hands out the first free
    ones, so in a growing cluster it is the last one a node would take)."""
    return nth_subnet(cluster, prefix, subnet_count(cluster, prefix) - 1)


def stable_node_blocks(settings: Settings) -> list[IPv4Network]:
    """The node-sized blocks of the cluster CIDR that overlap the stable pods' block: no node
    may have one as its pod CIDR."""
    if settings.stable_pod_cidr is None:
        return []
    return overlapping_blocks(settings.stable_pod_cidr, settings.node_cidr_prefix)


def overlapping_blocks(stable: IPv4Network, prefix: int) -> list[IPv4Network]:
    if stable.prefixlen >= prefix:
        return [stable.supernet(new_prefix=prefix)]
    return list(stable.subnets(new_prefix=prefix))


def _stable_pod_cidr(v: Mapping[str, Any], cluster: IPv4Network | None, prefix: int | None,
                     where: str, problems: Problems) -> IPv4Network | None:
    """podnet_stable_pod_cidr: a block inside the cluster CIDR, smaller than it, that leaves the
    nodes at least one pod CIDR; the cluster CIDR's last node-sized block when not set; None
    for "none" (and when wrong: the error is reported)."""
    key = "podnet_stable_pod_cidr"
    value = v.get(key)
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    if not value:
        if cluster is None or prefix is None or not cluster.prefixlen <= prefix <= 29:
            return None  # reported already
        if subnet_count(cluster, prefix) < 2:
            problems.error(where, "inventory", key,
                           f"the default, the last /{prefix} block of podnet_cluster_cidr "
                           f"{cluster}, would leave the nodes none",
                           "lengthen podnet_node_cidr_prefix, or set it to none (every pod "
                           "takes its node's addresses)")
            return None
        return default_stable_cidr(cluster, prefix)
    try:
        stable = parse_network(v[key])
    except ValueError as exc:
        problems.error(where, "inventory", key, str(exc),
                       "set an IPv4 network inside podnet_cluster_cidr, like 10.244.255.0/24, "
                       "leave it empty for the cluster CIDR's last node-sized block, or set "
                       "none")
        return None
    if cluster and (not stable.subnet_of(cluster) or stable == cluster
                    or stable.prefixlen > 30):
        problems.error(where, "inventory", key,
                       f"{stable} is not a block inside podnet_cluster_cidr {cluster} (smaller "
                       "than it, a /30 or larger)",
                       f"choose a block inside {cluster} that leaves room for the nodes' pod "
                       "CIDRs, or leave it empty")
        return None
    if (cluster and prefix is not None and cluster.prefixlen <= prefix
            and len(overlapping_blocks(stable, prefix)) >= subnet_count(cluster, prefix)):
        problems.error(where, "inventory", key,
                       f"{stable} overlaps every /{prefix} block of {cluster}: no node would "
                       "have a pod CIDR",
                       "choose a smaller block, or widen podnet_cluster_cidr")
        return None
    return stable


def _number(v: Mapping[str, Any], key: str, lo: int, hi: int, fix: str, where: str,
            problems: Problems) -> int:
    """An integer setting in [lo, hi]; 0 with an error naming the setting otherwise."""
    try:
        value = _int(v[key])
        if not lo <= value <= hi:
            raise ValueError(f"'{value}' is outside {lo}-{hi}")
    except ValueError as exc:
        problems.error(where, "inventory", key, str(exc), fix)
        return 0
    return value


def _backend_options(v: Mapping[str, Any], nodeports: tuple[int, int], where: str,
                     problems: Problems) -> tuple[int, int, int, tuple[str, ...]]:
    """The vxlan and bgp settings, checked whichever backend is chosen (a switch to it later
    must not meet a bad value on a live cluster)."""
    vni = _number(v, "podnet_vxlan_vni", 1, VXLAN_MAX_VNI,
                  f"set a VXLAN network identifier from 1 to {VXLAN_MAX_VNI}, like 1 (Flannel's)",
                  where, problems)
    port = _number(v, "podnet_vxlan_port", 1, 65535,
                   "set the UDP port VXLAN uses, like 8472 (Flannel's) or 4789 (IANA's)",
                   where, problems)
    if port and nodeports[0] <= port <= nodeports[1]:
        problems.error(where, "inventory", "podnet_vxlan_port",
                       f"{port} is inside podnet_nodeport_range {nodeports[0]}-{nodeports[1]}: "
                       "a UDP NodePort Service given that port would take the nodes' VXLAN "
                       "traffic", "choose a port outside the NodePort range, like 8472")
    bgp_as = _number(v, "podnet_bgp_as", 1, 2**32 - 1,
                     "set a private AS number, like 64512 (64512-65534 or 4200000000-4294967294)",
                     where, problems)
    if bgp_as in BGP_RESERVED_AS:
        problems.error(where, "inventory", "podnet_bgp_as", f"AS {bgp_as} is reserved",
                       "set a private AS number, like 64512")
    raw = v["podnet_bgp_route_reflectors"]
    reflectors: list[str] = []
    if raw in (None, ""):
        raw = []
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        problems.error(where, "inventory", "podnet_bgp_route_reflectors",
                       f"'{raw}' is not a list of node names",
                       "write a list, like [node1, node2], or [] for a full mesh")
        raw = []
    for i, item in enumerate(raw):
        name = str(item)
        if name in reflectors:
            problems.error(where, "inventory", f"podnet_bgp_route_reflectors[{i}]",
                           f"'{name}' is listed twice", "list each reflector once")
            continue
        reflectors.append(name)
    return vni, port, bgp_as, tuple(reflectors)


class UpstreamProblem(NamedTuple):
    reason: str
    fix: str
    loops: bool  # the address is inside the cluster: the DNS would ask itself


def upstream_problem(address: IPv4Address, cluster: IPv4Network | None,
                     service: IPv4Network | None) -> UpstreamProblem | None:
    """Why a DNS pod cannot forward to ``address``, or None: the one rule for
    podnet_dns_upstreams and for resolvers found in a node's resolv.conf."""
    if address.is_multicast or address.is_reserved or address == IPv4Address("255.255.255.255"):
        return UpstreamProblem(f"{address} is not a unicast address",
                               "give the resolver's address", False)
    if address.is_loopback or address.is_unspecified:
        return UpstreamProblem(f"{address} is not reachable from a DNS pod (inside the pod's "
                               "network namespace it is the pod itself)",
                               "give a resolver on the node network, or the one a node-local "
                               "cache forwards to", False)
    if cluster and address in cluster:
        return UpstreamProblem(f"{address} is in podnet_cluster_cidr {cluster}: a pod address, "
                               "maybe a DNS pod forwarding to itself",
                               "give the resolver the nodes use, outside the cluster", True)
    if service and address in service:
        return UpstreamProblem(f"{address} is in podnet_service_cidr {service}: the cluster DNS "
                               "would forward to itself",
                               "give the resolver the nodes use, outside the cluster", True)
    return None


def _upstreams(value: Any, cluster: IPv4Network | None, service: IPv4Network | None,
               where: str, problems: Problems) -> tuple[str, ...]:
    """The resolvers the cluster DNS forwards other names to: IPv4 addresses a DNS pod can
    reach (not loopback: inside a pod's network namespace that is the pod itself)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        problems.error(where, "inventory", "podnet_dns_upstreams",
                       f"'{value}' is not a list of addresses",
                       "write a list, like [192.168.56.100], or leave it out to use the "
                       "nodes' /etc/resolv.conf")
        return ()
    out: list[str] = []
    for i, item in enumerate(value):
        try:
            address = parse_address(item)
        except ValueError as exc:
            problems.error(where, "inventory", f"podnet_dns_upstreams[{i}]", str(exc),
                           "give the resolver's IPv4 address, like 192.168.56.100")
            continue
        problem = upstream_problem(address, cluster, service)
        if problem:
            problems.error(where, "inventory", f"podnet_dns_upstreams[{i}]", problem.reason,
                           problem.fix)
            continue
        out.append(str(address))
    return tuple(out)


def read_hosts(
    entries: Sequence[Mapping[str, Any]], settings: Settings, where: str, problems: Problems
) -> list[HostSpec]:
    """Hosts from ``{name, address, groups, labels, pod_cidr}`` entries, checked together."""
    hosts: list[HostSpec] = []
    seen_addr: dict[IPv4Address, str] = {}
    seen_cidr: dict[IPv4Network, str] = {}
    for entry in entries:
        name = str(entry["name"])
        subject = f"host {name}"
        groups = tuple(sorted(entry.get("groups") or ()))
        node = settings.nodes_group in groups
        try:
            address = parse_address(entry.get("address") or name)
        except ValueError as exc:
            problems.error(where, subject, "ansible_host", str(exc),
                           "give the host an IPv4 address in ansible_host")
            continue
        if address in seen_addr:
            problems.error(where, subject, "ansible_host",
                           f"{address} is also host {seen_addr[address]}'s address",
                           "give every host its own address")
        seen_addr[address] = name
        if node and address not in settings.underlay_cidr:
            _routed_node(name, address, settings, where, problems)
        for key, net in (("podnet_cluster_cidr", settings.cluster_cidr),
                         ("podnet_service_cidr", settings.service_cidr),
                         ("podnet_lb_pool", settings.lb_pool)):
            if net is not None and address in net:
                problems.error(where, subject, "ansible_host", f"{address} lies inside {key} {net}",
                               f"choose a host address outside {key}")
        if (node and name != name.lower()) or (node and names.dns1123_label(name)):
            problems.error(where, subject, "inventory_hostname",
                           f"node name '{name}' is not a DNS-1123 label",
                           "name nodes with lower-case letters, digits and '-'")
        labels: dict[str, str] = {}
        raw_labels = entry.get("labels") or {}
        if not isinstance(raw_labels, Mapping):
            problems.error(where, subject, "podnet_node_labels",
                           f"must be a mapping of label keys to values, not {raw_labels!r}",
                           "write podnet_node_labels: {key: value}")
            raw_labels = {}
        for key, value in raw_labels.items():
            text = "" if value is None else str(value)
            reason = names.label_key(str(key)) or names.label_value(text)
            if reason:
                problems.error(where, subject, f"podnet_node_labels.{key}", reason,
                               "use Kubernetes label syntax")
            labels[str(key)] = text
        if node:
            labels.setdefault("kubernetes.io/hostname", name)
            labels.setdefault("kubernetes.io/os", "linux")
        pod_cidr = None
        if entry.get("pod_cidr"):
            pod_cidr = _read_pod_cidr(entry["pod_cidr"], name, node, settings, where, problems)
            if pod_cidr in seen_cidr:
                problems.error(where, subject, "podnet_pod_cidr",
                               f"{pod_cidr} is also node {seen_cidr[pod_cidr]}'s pod CIDR",
                               "give each node its own pod CIDR, or leave it to podnet")
            if pod_cidr:
                seen_cidr[pod_cidr] = name
        peers = _bgp_peers(entry.get("bgp_peers"), name, node, address, settings, where, problems)
        hosts.append(HostSpec(name, address, groups, labels, pod_cidr, peers))
    nodes = [h for h in hosts if h.is_node(settings)]
    capacity = (subnet_count(settings.cluster_cidr, settings.node_cidr_prefix)
                - len(stable_node_blocks(settings)))
    if len(nodes) > capacity:
        problems.error(
            where, "inventory", "podnet_cluster_cidr",
            f"{len(nodes)} nodes need {len(nodes)} /{settings.node_cidr_prefix} pod CIDRs but "
            f"{settings.cluster_cidr} holds only {capacity}"
            + (f" beside the stable pods' {settings.stable_pod_cidr}"
               if settings.stable_pod_cidr else ""),
            "widen podnet_cluster_cidr or lengthen podnet_node_cidr_prefix"
            + (", or set podnet_stable_pod_cidr to a smaller block or none"
               if settings.stable_pod_cidr else ""),
        )
    if not nodes:
        problems.error(where, "inventory", "podnet_nodes_group",
                       f"group '{settings.nodes_group}' has no hosts",
                       "put the nodes in that group or set podnet_nodes_group")
    node_names = [n.name for n in nodes]
    for i, name in enumerate(settings.bgp_route_reflectors):
        if name not in node_names:
            problems.error(where, "inventory", f"podnet_bgp_route_reflectors[{i}]",
                           f"'{name}' is not a node (group '{settings.nodes_group}')",
                           f"name nodes, some of: {', '.join(node_names)}")
    return hosts


def _bgp_peers(value: Any, name: str, node: bool, own: IPv4Address, settings: Settings,
               where: str, problems: Problems) -> tuple[tuple[IPv4Address, int], ...]:
    """A node's podnet_bgp_peers: the routers its BIRD peers with besides the other nodes (a
    top-of-rack router that must learn the pod CIDRs to carry them), each {address, as}; the
    AS defaults to the cluster's (iBGP)."""
    subject = f"host {name}"
    if value in (None, "", []):
        return ()
    fix = "write a list like [{address: 192.168.56.254}] (as: defaults to podnet_bgp_as)"
    if not node:
        problems.error(where, subject, "podnet_bgp_peers",
                       f"is set but {name} is not in group '{settings.nodes_group}'",
                       "set podnet_bgp_peers on nodes only")
        return ()
    if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
        problems.error(where, subject, "podnet_bgp_peers", f"'{value}' is not a list", fix)
        return ()
    peers: list[tuple[IPv4Address, int]] = []
    for i, item in enumerate(value):
        field_ = f"podnet_bgp_peers[{i}]"
        if not isinstance(item, Mapping) or "address" not in item:
            problems.error(where, subject, field_, f"'{item}' has no address", fix)
            continue
        try:
            address = parse_address(item["address"])
        except ValueError as exc:
            problems.error(where, subject, f"{field_}.address", str(exc),
                           "give the router's IPv4 address")
            continue
        if address == own:
            problems.error(where, subject, f"{field_}.address",
                           f"{address} is the node's own address",
                           "give a router's address (the other nodes are peers already)")
            continue
        peer_as = settings.bgp_as
        if item.get("as") not in (None, ""):
            try:
                peer_as = _int(item["as"])
                if not 1 <= peer_as <= 2**32 - 1 or peer_as in BGP_RESERVED_AS:
                    raise ValueError(f"AS '{peer_as}' is not one a router can have")
            except ValueError as exc:
                problems.error(where, subject, f"{field_}.as", str(exc),
                               "give the router's AS number, like 64512, or leave it out for "
                               "podnet_bgp_as")
                continue
        if address in {a for a, _ in peers}:
            problems.error(where, subject, f"{field_}.address", f"{address} is listed twice",
                           "list each router once")
            continue
        peers.append((address, peer_as))
    return tuple(peers)


def _routed_node(name: str, address: IPv4Address, settings: Settings, where: str,
                 problems: Problems) -> None:
    """A node outside the underlay is reached through a router: vxlan and bgp carry pod traffic
    to it (UDP, or a BGP next hop resolved through the router), host-gw cannot (its next hop is
    the node itself, on the segment), nor can l2 announcements (ARP stays on the segment)."""
    subject = f"host {name}"
    if settings.backend == "host-gw":
        problems.error(
            where, subject, "ansible_host",
            f"{address} is outside podnet_underlay_cidr {settings.underlay_cidr}: the host-gw "
            "backend routes each pod CIDR straight to its node, so every node must share that "
            "one layer-2 network",
            "set podnet_backend to vxlan or bgp (they cross routers), or put the node on the "
            "underlay",
        )
    if settings.lb_pool:
        how = ("announces LoadBalancer addresses by ARP, which does not cross a router"
               if settings.lb_mode == "l2" else
               "has the lb host forward LoadBalancer traffic to each node's address as a next "
               "hop on the segment")
        problems.error(
            where, subject, "ansible_host",
            f"{address} is outside podnet_underlay_cidr {settings.underlay_cidr}: "
            f"{settings.lb_mode} mode {how}",
            "leave podnet_lb_pool empty (no LoadBalancer Services), or put every node on the "
            "underlay",
        )


def _read_pod_cidr(value: Any, name: str, node: bool, settings: Settings, where: str,
                   problems: Problems) -> IPv4Network | None:
    subject = f"host {name}"
    if not node:
        problems.error(where, subject, "podnet_pod_cidr",
                       f"is set but {name} is not in group '{settings.nodes_group}'",
                       "set podnet_pod_cidr on nodes only")
        return None
    try:
        cidr = parse_network(value)
    except ValueError as exc:
        problems.error(where, subject, "podnet_pod_cidr", str(exc),
                       f"give a /{settings.node_cidr_prefix} inside {settings.cluster_cidr}")
        return None
    if cidr.prefixlen != settings.node_cidr_prefix or not cidr.subnet_of(settings.cluster_cidr):
        problems.error(where, subject, "podnet_pod_cidr",
                       f"{cidr} is not a /{settings.node_cidr_prefix} inside podnet_cluster_cidr "
                       f"{settings.cluster_cidr}",
                       f"give a /{settings.node_cidr_prefix} inside {settings.cluster_cidr}")
        return None
    if settings.stable_pod_cidr and cidr.overlaps(settings.stable_pod_cidr):
        problems.error(where, subject, "podnet_pod_cidr",
                       f"{cidr} overlaps the stable pods' block {settings.stable_pod_cidr} "
                       "(podnet_stable_pod_cidr)",
                       "give the node another pod CIDR, or move podnet_stable_pod_cidr")
        return None
    return cidr
