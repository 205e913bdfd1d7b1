"""What each verify test proves its principle on, chosen from the plan by the property the test
needs, never by name: a user's own manifests get the same proofs as the demo's.

Each selector takes the plan and returns its choice, or raises :class:`NotInPlan` naming the
manifest shape to add; the test then skips with that reason (conftest.py ``target``,
``params``). Choices are deterministic: among the objects that fit, the Service with the most
endpoints, then the simplest type (ClusterIP, NodePort, LoadBalancer), then the first in the
plan; on the demo manifests (inventory/lab/manifests) every selector finds its object
(tests/test_verify_targets.py), so ``make verify`` there skips nothing.

"The test server" is the built-in netexec workload (image ``podnet/netexec`` or agnhost's
``netexec``, docs/workloads.md): HTTP (/hostname, /clientip, /dial) on its HTTP port and a UDP
echo on its UDP port. Selectors here only read the plan: no host is asked.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from ipaddress import ip_address, ip_network

from podnet.plan import Plan, PodPlan, ServicePlan, ServicePortPlan

# chi-square at p = 0.001 by degrees of freedom (endpoints - 1): the balancing test's limit,
# and so the most endpoints a Service it tests may have
CHI_SQUARE_LIMIT = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32,
                    8: 26.12, 9: 27.88, 10: 29.59, 11: 31.26, 12: 32.91, 13: 34.53, 14: 36.12,
                    15: 37.70}
TYPES = ("ClusterIP", "NodePort", "LoadBalancer")  # simplest first

# the shapes, as a skip reason names them ("the plan has no <shape>")
SERVER = "pods running the test server (podnet/netexec) on the Service's target port"
HTTP_SERVICE = (f"ClusterIP Service (internalTrafficPolicy Cluster, no sessionAffinity) whose "
                f"first port is TCP, with {SERVER}")
BALANCED = (f"ClusterIP Service (internalTrafficPolicy Cluster, no sessionAffinity) whose first "
            f"port is TCP, with 2 to {len(CHI_SQUARE_LIMIT) + 1} endpoints on 2 nodes or more, "
            f"{SERVER}, and a pod not behind it")
AFFINITY = (f"Service with sessionAffinity: ClientIP (internalTrafficPolicy Cluster) whose first "
            f"port is TCP, with 2 endpoints or more, {SERVER}")
NO_ENDPOINTS = "ClusterIP Service with a TCP first port whose selector matches no pod"
HAIRPIN = (f"Service with internalTrafficPolicy: Local whose first port is TCP, with {SERVER}, "
           f"one of them alone on its node")
LOCAL = {
    "internal": (f"Service with internalTrafficPolicy: Local whose first port is TCP, with "
                 f"{SERVER}, on fewer nodes than the cluster has (a node without a local "
                 f"endpoint drops it)"),
    "external": (f"NodePort or LoadBalancer Service with externalTrafficPolicy: Local whose first "
                 f"port is TCP, with {SERVER}, on fewer nodes than the cluster has (a node "
                 f"without a local endpoint drops it)"),
}
NODE_PORT = (f"NodePort (or LoadBalancer) Service with externalTrafficPolicy Cluster whose first "
             f"port is TCP, with {SERVER}")
UDP_FOLLOW = ("ClusterIP Service (internalTrafficPolicy Cluster) with a UDP port whose endpoints "
              "are the pods of one Deployment running the test server's UDP echo on it "
              "(netexec --udp-port), a pod not behind that port, and 2 nodes or more")
SCALING = ("ClusterIP Service (internalTrafficPolicy Cluster, no sessionAffinity) whose endpoints "
           "are the pods of one Deployment of the manifests")
DNS_NAMES = (f"{HTTP_SERVICE}, and a pod running the test server in its namespace and in "
             f"another namespace")
EXTERNAL_NAME = "Service of type ExternalName"
UNNAMED_PORT = "ClusterIP Service with a port without a name (no SRV record for it)"
BARE_POD = "Pod (kind: Pod, no controller) running the test server"
REBOOT = "node running a pod with the test server"
STABLE_POD = ("pod that keeps its address on any node (a bare Pod, or a Deployment's with "
              "annotation podnet.io/stable-ip: \"true\") running the test server, in a plan of "
              "2 nodes or more")
DRIFT = "cluster of 3 nodes or more, 2 of them running a pod with the test server"
DNS_REPLICAS = "second DNS pod (podnet_dns_replicas: 2 or more)"
SERVER_POD = "pod running the test server (podnet/netexec)"
CLUSTER_IP_PORT = (f"ClusterIP Service (internalTrafficPolicy Cluster) with {SERVER}, or a "
                   f"DNS server on port 53")


class NotInPlan(LookupError):
    """The plan has nothing of the shape a test needs; the message says what to add."""

    def __init__(self, shape: str) -> None:
        self.shape = shape
        super().__init__(f"the plan has no {shape}: add one to the manifests to run this test")


# -- the test server -----------------------------------------------------------------------------
def http_port(plan: Plan, key: str) -> int | None:
    """The test server's HTTP port in pod ``key``, if it runs one."""
    for container in plan.pod(key).containers:
        if container.workload["kind"] == "netexec" and container.workload["http_port"]:
            return int(container.workload["http_port"])
    return None


def udp_port(plan: Plan, key: str) -> int | None:
    """The test server's UDP echo port in pod ``key``, if it runs one."""
    for container in plan.pod(key).containers:
        if container.workload["kind"] == "netexec" and container.workload["udp_port"]:
            return int(container.workload["udp_port"])
    return None


def servers(plan: Plan) -> list[str]:
    """Pods running the test server, in plan order."""
    return [p.key for p in plan.pods if http_port(plan, p.key)]


def serves_http(plan: Plan, port: ServicePortPlan) -> bool:
    """A TCP port with endpoints, each the test server's HTTP port of its pod."""
    return port.protocol == "TCP" and bool(port.endpoints) and all(
        http_port(plan, e.pod) == e.port for e in port.endpoints)


def _ranked(plan: Plan, services: list[ServicePlan]) -> list[ServicePlan]:
    """Most endpoints (first port) first, then the simplest type, then plan order."""
    order = {s.key: i for i, s in enumerate(plan.services)}
    return sorted(services, key=lambda s: (-len(s.ports[0].endpoints) if s.ports else 0,
                                           TYPES.index(s.type) if s.type in TYPES else 9,
                                           order[s.key]))


def _http_services(plan: Plan) -> list[ServicePlan]:
    """Every Service HTTP_SERVICE describes, ranked."""
    return _ranked(plan, [s for s in plan.services
                          if s.proxied and s.internal_traffic_policy == "Cluster"
                          and not s.session_affinity_timeout and s.ports
                          and serves_http(plan, s.ports[0])])


def _first(found: list[ServicePlan], shape: str) -> ServicePlan:
    if not found:
        raise NotInPlan(shape)
    return found[0]


# -- Services ------------------------------------------------------------------------------------
def answerable(plan: Plan, port: ServicePortPlan) -> bool:
    """A port with endpoints whose answer the reachability test can check: port 53 (a DNS
    server: dig), or the test server behind every endpoint (HTTP /hostname for TCP, its UDP
    echo for UDP). Another server (nginx, say) answers with something else."""
    if not port.endpoints:
        return False
    if port.port == 53:
        return True
    serving = http_port if port.protocol == "TCP" else udp_port
    return all(serving(plan, e.pod) == e.port for e in port.endpoints)


def cluster_ip_ports(plan: Plan) -> list[tuple[str, str, str]]:
    """(Service, port name, protocol) of every ClusterIP port, internal traffic policy
    Cluster, that is answerable(): what every client must reach (the demo has 8)."""
    out = []
    for svc in plan.services:
        if svc.cluster_ip and svc.internal_traffic_policy == "Cluster":
            out += [(svc.key, p.name, p.protocol) for p in svc.ports if answerable(plan, p)]
    return out


def http_service(plan: Plan) -> ServicePlan:
    """A Service every pod and node reaches on its ClusterIP and first port with curl, answered
    by the test server's /hostname (HTTP_SERVICE)."""
    return _first(_http_services(plan), HTTP_SERVICE)


@dataclass(frozen=True)
class Balanced:
    service: ServicePlan
    client: str  # a pod not behind it (ns/name), the first in the plan


def balanced_service(plan: Plan) -> Balanced:
    """A Service whose new connections the balancing test counts (BALANCED): its endpoints on
    two nodes or more, so the spread crosses nodes, and few enough for the chi-square table."""
    for svc in _http_services(plan):
        endpoints = svc.ports[0].endpoints
        behind = {e.pod for e in endpoints}
        client = next((p.key for p in plan.pods if p.key not in behind), None)
        if (2 <= len(endpoints) <= len(CHI_SQUARE_LIMIT) + 1
                and len({e.node for e in endpoints}) >= 2 and client):
            return Balanced(svc, client)
    raise NotInPlan(BALANCED)


def affinity_service(plan: Plan) -> ServicePlan:
    """A ClientIP-affinity Service with two endpoints or more (AFFINITY): with one, every
    client would stay on it whatever the rules do."""
    return _first(_ranked(plan, [
        s for s in plan.services
        if s.proxied and s.session_affinity_timeout and s.internal_traffic_policy == "Cluster"
        and s.ports and serves_http(plan, s.ports[0]) and len(s.ports[0].endpoints) >= 2]),
        AFFINITY)


def service_without_endpoints(plan: Plan) -> ServicePlan:
    """A Service kube-proxy REJECTs (NO_ENDPOINTS)."""
    return _first([s for s in plan.services if s.proxied and s.ports
                   and s.ports[0].protocol == "TCP" and not s.ports[0].endpoints], NO_ENDPOINTS)


def alone_on_their_node(svc: ServicePlan) -> list[str]:
    """The pods behind ``svc``'s first port that are its only endpoint on their node."""
    per_node = Counter(e.node for e in svc.ports[0].endpoints)
    return [e.pod for e in svc.ports[0].endpoints if per_node[e.node] == 1]


def hairpin_service(plan: Plan) -> ServicePlan:
    """An internalTrafficPolicy Local Service (HAIRPIN): a pod alone on its node among the
    endpoints reaches itself through the ClusterIP (hairpin); the test asks from those pods."""
    found = [s for s in plan.services
             if s.proxied and s.internal_traffic_policy == "Local" and s.ports
             and serves_http(plan, s.ports[0]) and alone_on_their_node(s)]
    order = {s.key: i for i, s in enumerate(plan.services)}
    found.sort(key=lambda s: (-len(alone_on_their_node(s)),
                              TYPES.index(s.type) if s.type in TYPES else 9, order[s.key]))
    return _first(found, HAIRPIN)


def local_cases(plan: Plan, policy: str) -> list[tuple[str, str, str]]:
    """(Service, node, branch) for every Service whose ``policy`` (internal, external) traffic
    policy is Local and whose first port the test server answers, on every node; the branch is
    the one the node takes: ``answers`` with a local endpoint, ``drops`` without one
    (LOCAL[policy]; on the demo, demo/api-local's 2 pods on 3 nodes)."""
    out = []
    for svc in plan.services:
        local = (svc.internal_traffic_policy == "Local" and svc.proxied
                 if policy == "internal" else svc.external_traffic_policy == "Local"
                 and svc.type in ("NodePort", "LoadBalancer"))
        if not local or not svc.ports or not serves_http(plan, svc.ports[0]):
            continue
        behind = {e.node for e in svc.ports[0].endpoints}
        for node in plan.nodes:
            out.append((svc.key, node.name, "answers" if node.name in behind else "drops"))
    return out


def local_branches(plan: Plan, policy: str) -> Counter[str]:
    """How many cases take each branch; NotInPlan unless both are taken."""
    branches = Counter(branch for _, _, branch in local_cases(plan, policy))
    if not (branches["drops"] and branches["answers"]):
        raise NotInPlan(LOCAL[policy])
    return branches


def node_port_services(plan: Plan) -> list[ServicePlan]:
    """Every Service NODE_PORT describes, ranked: reached from outside on each node's
    address and its NodePort, with the client's address SNATed to the node's."""
    found = _ranked(plan, [s for s in plan.services
                           if s.type in ("NodePort", "LoadBalancer")
                           and s.external_traffic_policy == "Cluster" and s.ports
                           and s.ports[0].node_port and serves_http(plan, s.ports[0])])
    if not found:
        raise NotInPlan(NODE_PORT)
    return found


@dataclass(frozen=True)
class UdpFollow:
    service: ServicePlan
    port: ServicePortPlan  # the UDP port
    deployment: tuple[str, str]  # (namespace, name) of the Deployment behind it
    client: PodPlan  # a pod not behind the port, in the Service's namespace if there is one


def owner_deployment(pod: PodPlan) -> tuple[str, str] | None:
    """(namespace, name) of the Deployment that owns ``pod`` (PodPlan.owner: "Deployment
    ns/name"), None for any other owner."""
    kind, _, key = pod.owner.partition(" ")
    if kind != "Deployment":
        return None
    namespace, _, name = key.partition("/")
    return namespace, name


def _deployment_of(plan: Plan, port: ServicePortPlan) -> tuple[str, str] | None:
    owners = {owner_deployment(plan.pod(e.pod)) for e in port.endpoints}
    return owners.pop() if len(owners) == 1 and None not in owners else None


def udp_follow(plan: Plan) -> UdpFollow:
    """A UDP Service whose Deployment the test moves to another node while a client keeps
    sending to it (UDP_FOLLOW)."""
    if len(plan.nodes) >= 2:
        for svc in plan.services:
            if not svc.proxied or svc.internal_traffic_policy != "Cluster":
                continue
            for port in svc.ports:
                deployment = _deployment_of(plan, port) if port.endpoints else None
                if (port.protocol != "UDP" or deployment is None
                        or any(udp_port(plan, e.pod) != e.port for e in port.endpoints)):
                    continue
                behind = {e.pod for e in port.endpoints}
                others = sorted((p for p in plan.pods if p.key not in behind),
                                key=lambda p: p.namespace != svc.namespace)  # stable
                if others:
                    return UdpFollow(svc, port, deployment, others[0])
    raise NotInPlan(UDP_FOLLOW)


@dataclass(frozen=True)
class Scaling:
    service: ServicePlan  # the Service whose endpoint jumps the test counts
    deployment: tuple[str, str]  # (namespace, name)
    pods: list[str]  # the Deployment's pods (ns/name)
    services: list[ServicePlan]  # every Service with a rule for one of those pods


def scaling(plan: Plan) -> Scaling:
    """A Deployment to scale by one and the Services whose rules that may change (SCALING); the
    add-ons' Deployments (cluster DNS, the Ingress controller) are not in the manifests, so they
    are never chosen."""
    for svc in _ranked(plan, [s for s in plan.services
                              if s.proxied and s.internal_traffic_policy == "Cluster"
                              and not s.session_affinity_timeout and s.ports
                              and s.ports[0].endpoints and not s.addon]):
        deployment = _deployment_of(plan, svc.ports[0])
        if deployment is None:
            continue
        pods = [p.key for p in plan.pods if owner_deployment(p) == deployment]
        return Scaling(svc, deployment, pods,
                       [s for s in plan.services if s.proxied and set(s.pods) & set(pods)])
    raise NotInPlan(SCALING)


@dataclass(frozen=True)
class DnsNames:
    service: ServicePlan  # the Service whose name the pods look up
    clients: dict[str, str]  # namespace -> a test-server pod in it: the Service's own first


def dns_names(plan: Plan) -> DnsNames:
    """A Service looked up by every name form, from a pod in its own namespace and one in
    another (DNS_NAMES): the short name resolves only in the first."""
    for svc in _http_services(plan):
        home = [k for k in servers(plan) if plan.pod(k).namespace == svc.namespace]
        away = [k for k in servers(plan) if plan.pod(k).namespace != svc.namespace]
        if svc.headless or not home or not away:
            continue
        other = plan.pod(away[0]).namespace
        return DnsNames(svc, {svc.namespace: home[0], other: away[0]})
    raise NotInPlan(DNS_NAMES)


def external_name_service(plan: Plan) -> ServicePlan:
    return _first([s for s in plan.services if s.type == "ExternalName"], EXTERNAL_NAME)


def unnamed_port_services(plan: Plan) -> list[str]:
    found = [s.key for s in plan.services if s.cluster_ip and not s.headless
             and any(not p.name for p in s.ports)]
    if not found:
        raise NotInPlan(UNNAMED_PORT)
    return found


def bare_server_pod(plan: Plan) -> PodPlan:
    """A pod of kind Pod (owner "Pod ns/name") the test removes from the manifests."""
    for pod in plan.pods:
        if pod.owner == f"Pod {pod.key}" and http_port(plan, pod.key):
            return pod
    raise NotInPlan(BARE_POD)


def stable_server_pod(plan: Plan) -> PodPlan:
    """A pod that keeps its address on any node, running the test server, the test moves to
    another node (STABLE_POD): the first in the plan."""
    if len(plan.nodes) > 1:
        for pod in plan.pods:
            if pod.stable_ip and http_port(plan, pod.key):
                return pod
    raise NotInPlan(STABLE_POD)


def reboot_node(plan: Plan) -> str:
    """The node with the most pods, among those running a test server (REBOOT)."""
    found = [n.name for n in plan.nodes
             if any(http_port(plan, p.key) for p in plan.pods_on(n.name))]
    if not found:
        raise NotInPlan(REBOOT)
    return max(found, key=lambda n: len(plan.pods_on(n)))


def drift_nodes(plan: Plan) -> tuple[str, str, str]:
    """Three nodes for the drift suite's damage (DRIFT): the second and third run a test
    server (a deleted netns, a stopped container); the first in plan order that fits."""
    names = [n.name for n in plan.nodes]
    for a, b, c in itertools.permutations(names, 3):
        if all(any(http_port(plan, p.key) for p in plan.pods_on(n)) for n in (b, c)):
            return a, b, c
    raise NotInPlan(DRIFT)


def dns_pods(plan: Plan) -> list[str]:
    """The cluster DNS pods (behind kube-system/kube-dns), sorted."""
    return sorted(plan.dns_service.pods)


def unused_service_name(plan: Plan, namespace: str, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``, ... : a Service name ``namespace`` does not have."""
    taken = {s.name for s in plan.services if s.namespace == namespace}
    names = itertools.chain([base], (f"{base}-{i}" for i in itertools.count(2)))
    return next(n for n in names if n not in taken)


def new_service_like(plan: Plan, like: ServicePlan, base: str, port: int) -> tuple[str, str]:
    """(name, manifest) of a new ClusterIP Service beside ``like``: its namespace, selector
    and first port's target, on ``port``, under a name its namespace does not have yet."""
    import yaml

    name = unused_service_name(plan, like.namespace, base)
    first = like.ports[0]
    manifest = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": like.namespace},
                "spec": {"selector": dict(like.selector or {}),
                         "ports": [{"name": first.name or "port", "port": port,
                                    "protocol": first.protocol,
                                    "targetPort": first.target_port}]}}
    return name, yaml.safe_dump(manifest, sort_keys=False)


# -- LoadBalancer --------------------------------------------------------------------------------
LB_PORT = (f"LoadBalancer Service with an address from podnet_lb_pool and a port (TCP or UDP) "
           f"with {SERVER} (HTTP for TCP, its UDP echo for UDP)")
LB_CLUSTER = (f"LoadBalancer Service with externalTrafficPolicy Cluster whose first port is TCP, "
              f"with 2 to {len(CHI_SQUARE_LIMIT) + 1} endpoints on 2 nodes or more, {SERVER}, "
              f"and no loadBalancerSourceRanges")
LB_LOCAL = (f"LoadBalancer Service with externalTrafficPolicy Local whose first port is TCP, "
            f"with {SERVER}")
LB_PARTIAL = (f"{LB_LOCAL}, on fewer nodes than the cluster has (a node without a local "
              f"endpoint must not get its traffic)")
LB_RANGED = (f"LoadBalancer Service whose first port is TCP with {SERVER} and "
             f"loadBalancerSourceRanges that admit one host of group clients and not another "
             f"(two clients with different addresses)")


def lb_services(plan: Plan) -> list[ServicePlan]:
    return [s for s in plan.services if s.type == "LoadBalancer" and s.lb_ip and s.ports]


def admits(svc: ServicePlan, address: str) -> bool:
    """Whether ``svc``'s loadBalancerSourceRanges let ``address`` reach its LB address."""
    if not svc.load_balancer_source_ranges:
        return True
    ip = ip_address(address)
    return any(ip in ip_network(r, strict=False) for r in svc.load_balancer_source_ranges)


def lb_ports(plan: Plan) -> list[tuple[str, str, str]]:
    """(Service, port name, protocol) of every LoadBalancer port the test server answers
    (LB_PORT)."""
    found = [(s.key, p.name, p.protocol) for s in lb_services(plan) for p in s.ports
             if answerable(plan, p) and p.port != 53]
    if not found:
        raise NotInPlan(LB_PORT)
    return found


def lb_cluster_service(plan: Plan) -> ServicePlan:
    """The LoadBalancer Service whose connections are counted over its endpoints (LB_CLUSTER)."""
    return _first(_ranked(plan, [
        s for s in lb_services(plan) if s.external_traffic_policy == "Cluster"
        and not s.load_balancer_source_ranges and serves_http(plan, s.ports[0])
        and 2 <= len(s.ports[0].endpoints) <= len(CHI_SQUARE_LIMIT) + 1
        and len({e.node for e in s.ports[0].endpoints}) >= 2]), LB_CLUSTER)


def lb_local_services(plan: Plan) -> list[ServicePlan]:
    """Every LB_LOCAL Service, ranked."""
    found = _ranked(plan, [s for s in lb_services(plan) if s.external_traffic_policy == "Local"
                           and serves_http(plan, s.ports[0])])
    if not found:
        raise NotInPlan(LB_LOCAL)
    return found


def lb_partial_service(plan: Plan) -> ServicePlan:
    """A Local LoadBalancer Service with a node that has none of its endpoints (LB_PARTIAL)."""
    nodes = {n.name for n in plan.nodes}
    return _first(_ranked(plan, [
        s for s in lb_services(plan) if s.external_traffic_policy == "Local"
        and serves_http(plan, s.ports[0]) and {e.node for e in s.ports[0].endpoints} < nodes]),
        LB_PARTIAL)


def lb_ranged_service(plan: Plan, clients: list[tuple[str, str]]
                      ) -> tuple[ServicePlan, str, str]:
    """(Service, admitted client, refused client) for LB_RANGED; ``clients`` are the
    (name, address) of group clients."""
    for svc in _ranked(plan, [s for s in lb_services(plan) if s.load_balancer_source_ranges
                              and serves_http(plan, s.ports[0])]):
        inside = [name for name, address in clients if admits(svc, address)]
        outside = [name for name, address in clients if not admits(svc, address)]
        if inside and outside:
            return svc, inside[0], outside[0]
    raise NotInPlan(LB_RANGED)
