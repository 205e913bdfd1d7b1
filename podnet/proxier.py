"""kube-proxy's iptables mode, rule for rule: the filter and nat rules kube-proxy's
syncProxyRules (pkg/proxy/iptables/proxier.go) writes for a node, from the Services and their
endpoints. Pure: no I/O, so the same code renders on the controller (tests, bench) and on the
node.

Where it runs: readiness changes on the node between converges (every node's podnet-endpoints
probes the pods itself), so the rules are rendered where readiness is known, as kube-proxy
renders them in its own process. The kube_proxy role writes this module's input on the node
(``node_rules``: the node's Service ports with their endpoints, and the Options, as JSON) and
ships this file and kubeproxy.py unchanged; the node tool podnet-kube-proxy turns the input and
the current readiness into the rules file (``from_input`` then ``rules_file``) and
podnet-iptables applies it with one ``iptables-restore --noflush``.

Readiness is decided before rendering, as kube-proxy's CategorizeEndpoints decides which
endpoints count: an endpoint whose pod fails its readinessProbe is left out of the Service
chains (its KUBE-SEP chain is no longer written either, and goes as a stale chain), and the
remaining endpoints get kube-proxy's probabilities for their number. Where every endpoint of a
category (cluster-wide, or this node's for Local policy) is unready, podnet keeps them all (it
fails open): kube-proxy falls back to serving-terminating endpoints and else has none (REJECT);
podnet has no terminating state, and its probes run from each node alone, so one node whose
probes cannot reach the pods would otherwise reject a Service every other node serves (see
``_usable``, which ``categorize`` applies).

Differences from kube-proxy, on purpose: no nfacct counters unless ``nfacct`` is set (they need
the nfacct tool and module); localhost NodePorts (and the KUBE-FIREWALL rule that guards them)
only when ``localhost_nodeports`` is set (podnet leaves ``route_localnet`` alone); Services are
written in name order (kube-proxy walks a Go map) so that the output is the same on every run;
the canary chain KUBE-PROXY-CANARY is declared in the same file (kube-proxy creates it
separately); all-unready endpoints fail open (above).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from podnet import kubeproxy

if TYPE_CHECKING:  # the node has only this file and kubeproxy.py: no import of the plan there
    from podnet.plan import Plan

MASQ_MARK = "0x4000"
NODEPORTS_LAST = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'
OWNED_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str | None = None
    ready: bool = True
    pod: str = ""  # namespace/name: what podnet-endpoints reports unready

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    name: str
    port_name: str
    protocol: str
    cluster_ip: str
    port: int
    endpoints: tuple[Endpoint, ...] = ()
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    lb_ips: tuple[str, ...] = ()
    source_ranges: tuple[str, ...] = ()
    health_check_node_port: int = 0
    affinity_timeout: int | None = None
    external_local: bool = False
    internal_local: bool = False

    @property
    def name_string(self) -> str:
        return kubeproxy.service_port_name(self.namespace, self.name, self.port_name)

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.external_ips or self.lb_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        # even with Local external policy, the cluster chain short-circuits traffic from pods
        # and the node itself (kube-proxy's UsesClusterEndpoints)
        return not self.internal_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_local or (self.externally_accessible and self.external_local)


@dataclass
class Options:
    node_name: str
    node_ip: str
    cluster_cidr: str  # the local-traffic detector: traffic from pods
    masquerade_mark: str = MASQ_MARK
    random_fully: bool = True
    localhost_nodeports: bool = False
    nfacct: bool = False
    masquerade_all: bool = False


@dataclass
class _Buffers:
    filter_chains: list[str] = field(default_factory=list)
    filter_rules: list[str] = field(default_factory=list)
    nat_chains: list[str] = field(default_factory=list)
    nat_rules: list[str] = field(default_factory=list)


def probability(n: int) -> str:
    return f"{1.0 / n:0.10f}"


def _line(*words: str | Iterable[str]) -> str:
    out: list[str] = []
    for word in words:
        if isinstance(word, str):
            out.append(word)
        else:
            out.extend(word)
    return " ".join(out)


def _chain(name: str) -> str:
    return f":{name} - [0:0]"


def _usable(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """The ready endpoints; all of them when none is ready. kube-proxy falls back to
    serving-terminating endpoints at this point and otherwise has none (the Service REJECTs);
    podnet has no terminating state, and each node probes the pods by itself, so a node whose
    probes fail for its own reasons (its route to the pods, say) would otherwise reject a
    Service that works everywhere else: it fails open and keeps them all (documented in
    docs/manifests.md, Readiness, and tested in tests/test_proxier_readiness.py)."""
    candidates = list(endpoints)
    return [e for e in candidates if e.ready] or candidates


def categorize(svc: ServicePort, node: str
               ) -> tuple[list[Endpoint], list[Endpoint], list[Endpoint], bool]:
    """Cluster, local and all locally reachable endpoints, and whether the Service has any
    endpoint anywhere (kube-proxy's CategorizeEndpoints, without topology hints). Readiness is
    decided here, once, for every chain the renderer writes: each category is its ready
    endpoints, or (failing open) all of them when none is ready, independently for cluster and
    local as kube-proxy's fallback is."""
    cluster = _usable(svc.endpoints) if svc.uses_cluster_endpoints else []
    if not svc.uses_local_endpoints:
        return cluster, [], cluster, bool(cluster)
    local = _usable(e for e in svc.endpoints if e.node == node)
    # any endpoint anywhere counts (failing open, an unready one too): a Local Service whose
    # endpoints are all on other nodes then DROPs here ("has no local endpoints") instead of
    # REJECTing as a Service without endpoints does
    has_any = bool(svc.endpoints)
    # cluster holds every usable endpoint, but a local category that failed open may hold
    # unready local endpoints cluster left out: reachable is the union, in order
    reachable = list(cluster) + [e for e in local if e not in cluster]
    return cluster, local, reachable, has_any


def render(services: Sequence[ServicePort], opts: Options) -> str:
    """The iptables-restore input kube-proxy would write for ``services`` on this node."""
    b = _Buffers()
    mark = f"{opts.masquerade_mark}/{opts.masquerade_mark}"
    for name in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS",
                 "KUBE-PROXY-FIREWALL"):
        b.filter_chains.append(_chain(name))
    for name in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"):
        b.nat_chains.append(_chain(name))
    b.nat_rules.append(f"-A KUBE-POSTROUTING -m mark ! --mark {mark} -j RETURN")
    b.nat_rules.append(f"-A KUBE-POSTROUTING -j MARK --xor-mark {opts.masquerade_mark}")
    masq = ('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT"'
            " -j MASQUERADE")
    b.nat_rules.append(masq + (" --random-fully" if opts.random_fully else ""))
    b.nat_rules.append(f"-A KUBE-MARK-MASQ -j MARK --or-mark {opts.masquerade_mark}")
    if opts.localhost_nodeports:
        b.filter_chains.append(_chain("KUBE-FIREWALL"))
        b.filter_rules.append('-A KUBE-FIREWALL -m comment --comment "block incoming localnet '
                              'connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! '
                              "--ctstate RELATED,ESTABLISHED,DNAT -j DROP")
    for svc in sorted(services, key=lambda s: (s.name_string, s.protocol)):
        _service(b, svc, opts)
    destinations = "-m addrtype --dst-type LOCAL"
    if not opts.localhost_nodeports:
        destinations += " ! -d 127.0.0.0/8"
    b.nat_rules.append(f"-A KUBE-SERVICES -m comment --comment {NODEPORTS_LAST} {destinations} "
                       "-j KUBE-NODEPORTS")
    invalid = "-A KUBE-FORWARD -m conntrack --ctstate INVALID"
    if opts.nfacct:
        invalid += " -m nfacct --nfacct-name ct_state_invalid_dropped_pkts"
    b.filter_rules.append(invalid + " -j DROP")
    b.filter_rules.append('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
                          f"-m mark --mark {mark} -j ACCEPT")
    b.filter_rules.append('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack '
                          'rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT')
    lines = ["*filter", *b.filter_chains, *b.filter_rules, "COMMIT",
             "*nat", *b.nat_chains, *b.nat_rules, "COMMIT"]
    return "\n".join(lines) + "\n"


def _service(b: _Buffers, svc: ServicePort, opts: Options) -> None:
    """One Service port's rules, in syncProxyRules' order and with its decisions (the comments
    say why each branch is taken; the readiness decision is categorize's, made before)."""
    proto = svc.protocol.lower()
    name = svc.name_string
    chains = kubeproxy.chains(svc.namespace, svc.name, svc.port_name, svc.protocol)
    cluster_chain, local_chain = chains["svc"], chains["svl"]
    ext_chain, fw_chain = chains["ext"], chains["fw"]
    cluster_eps, local_eps, reachable, has_endpoints = categorize(svc, opts.node_name)
    # a policy chain is written only when its policy is in use and it has endpoints to choose
    # from; without any, the filter rules below answer instead
    uses_cluster_chain = bool(cluster_eps) and svc.uses_cluster_endpoints
    uses_local_chain = bool(local_eps) and svc.uses_local_endpoints
    # ClusterIP traffic goes to the chain of the internal policy; with Local policy and no
    # endpoint on this node there is nothing to send it to, even if other nodes have some
    internal_chain, has_internal = cluster_chain, has_endpoints
    if svc.internal_local:
        internal_chain = local_chain
        has_internal = bool(local_eps)
    # the same for NodePort, external IP and LoadBalancer traffic and the external policy
    external_policy_chain, has_external = cluster_chain, has_endpoints
    if svc.external_local:
        external_policy_chain = local_chain
        has_external = bool(local_eps)
    # the EXT chain is written whenever the Service has endpoints anywhere, not only when
    # external traffic has some here: with Local policy and no local endpoint it still carries
    # the short-circuit rules that send pod and node traffic to the cluster chain
    uses_ext_chain = has_endpoints and svc.externally_accessible
    # LoadBalancer IPs go straight to the EXT chain, unless loadBalancerSourceRanges limit who
    # may use them: then through the FW chain, which jumps on only for allowed sources
    lb_chain = ext_chain
    uses_fw = has_endpoints and bool(svc.lb_ips) and bool(svc.source_ranges)
    if uses_fw:
        lb_chain = fw_chain
    int_target = int_comment = ext_target = ext_comment = ""
    if not has_endpoints:
        # no endpoint anywhere: REJECT, so that clients get "connection refused" at once
        # instead of waiting for a timeout; no nat chain is written for the Service at all
        int_target = ext_target = "REJECT"
        int_comment = ext_comment = f'"{name} has no endpoints"'
    else:
        # endpoints elsewhere but none here for a Local policy: DROP (not REJECT), the Service
        # exists and works from other nodes; an external load balancer's health check (the
        # health check node port) steers clients away from this node
        if not has_internal:
            int_target, int_comment = "DROP", f'"{name} has no local endpoints"'
        if not has_external:
            ext_target, ext_comment = "DROP", f'"{name} has no local endpoints"'
    match = f"-m {proto} -p {proto}"

    # capture the ClusterIP: into the internal policy chain, or filtered when there is none
    if has_internal:
        b.nat_rules.append(f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" {match} '
                           f"-d {svc.cluster_ip} --dport {svc.port} -j {internal_chain}")
    else:
        b.filter_rules.append(f"-A KUBE-SERVICES -m comment --comment {int_comment} {match} "
                              f"-d {svc.cluster_ip} --dport {svc.port} -j {int_target}")
    # external IPs: to the EXT chain (which short-circuits local traffic), and the rest dropped
    # or rejected in filter when external traffic has no endpoints here
    for ip in svc.external_ips:
        if has_endpoints:
            b.nat_rules.append(f'-A KUBE-SERVICES -m comment --comment "{name} external IP" '
                               f"{match} -d {ip} --dport {svc.port} -j {ext_chain}")
        if not has_external:
            b.filter_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} "
                                  f"{match} -d {ip} --dport {svc.port} -j {ext_target}")
    # LoadBalancer IPs: as external IPs, through the FW chain when source ranges apply; what
    # the FW chain lets fall through (not DNATed) is dropped in filter KUBE-PROXY-FIREWALL
    for ip in svc.lb_ips:
        if has_endpoints:
            b.nat_rules.append(f'-A KUBE-SERVICES -m comment --comment "{name} loadbalancer IP" '
                               f"{match} -d {ip} --dport {svc.port} -j {lb_chain}")
        if uses_fw:
            b.filter_rules.append(f'-A KUBE-PROXY-FIREWALL -m comment --comment "{name} traffic '
                                  f'not accepted by {fw_chain}" {match} -d {ip} --dport '
                                  f"{svc.port} -j DROP")
    if not has_external:
        for ip in svc.lb_ips:
            b.filter_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} "
                                  f"{match} -d {ip} --dport {svc.port} -j {ext_target}")
    # NodePorts: to the EXT chain (source ranges do not apply to them, as in kube-proxy)
    if svc.node_port:
        if has_endpoints:
            if opts.localhost_nodeports and opts.nfacct:
                b.nat_rules.append(f"-A KUBE-NODEPORTS -m comment --comment {name} {match} "
                                   f"-d 127.0.0.0/8 --dport {svc.node_port} -m nfacct "
                                   f"--nfacct-name localhost_nps_accepted_pkts -j {ext_chain}")
            b.nat_rules.append(f"-A KUBE-NODEPORTS -m comment --comment {name} {match} "
                               f"--dport {svc.node_port} -j {ext_chain}")
        if not has_external:
            b.filter_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} "
                                  f"-m addrtype --dst-type LOCAL {match} --dport {svc.node_port} "
                                  f"-j {ext_target}")
    # the health check node port is accepted whether or not this node has local endpoints: the
    # load balancer asks every node, and "none here" is an answer it needs
    if svc.health_check_node_port:
        b.filter_rules.append(f'-A KUBE-NODEPORTS -m comment --comment "{name} health check node '
                              f'port" -m tcp -p tcp --dport {svc.health_check_node_port} -j ACCEPT')

    # ClusterIP traffic from outside the pod network (a node, or a client routed to the
    # Service range through a node) is masqueraded: its replies must come back through this
    # node, which may not be on the way from the endpoint to the client
    if has_internal:
        args = (f'-m comment --comment "{name} cluster IP" {match} -d {svc.cluster_ip} '
                f"--dport {svc.port}")
        if opts.masquerade_all:
            b.nat_rules.append(f"-A {internal_chain} {args} -j KUBE-MARK-MASQ")
        else:
            b.nat_rules.append(f"-A {internal_chain} {args} ! -s {opts.cluster_cidr} "
                               "-j KUBE-MARK-MASQ")
    if uses_ext_chain:
        b.nat_chains.append(_chain(ext_chain))
        if not svc.external_local:
            # Cluster policy may send external traffic to another node: masquerade it, so the
            # reply comes back this way
            b.nat_rules.append(f'-A {ext_chain} -m comment --comment "masquerade traffic for '
                               f'{name} external destinations" -j KUBE-MARK-MASQ')
        else:
            # Local policy keeps the client's source IP, except for traffic that starts on this
            # node: a pod's traffic to an external address of the Service is treated as if it
            # went out to the load balancer and came back, so neither policy applies and it
            # goes to the cluster chain (the Local policy short-circuit for pods)
            b.nat_rules.append(f'-A {ext_chain} -m comment --comment "pod traffic for {name} '
                               f'external destinations" -s {opts.cluster_cidr} -j {cluster_chain}')
            # and the node's own traffic: its source is a local address (often the external IP
            # itself), which the endpoint could not answer, so masquerade it and send it to the
            # cluster chain too (the short-circuit for the node)
            b.nat_rules.append(f'-A {ext_chain} -m comment --comment "masquerade LOCAL traffic '
                               f'for {name} external destinations" -m addrtype --src-type LOCAL '
                               "-j KUBE-MARK-MASQ")
            b.nat_rules.append(f'-A {ext_chain} -m comment --comment "route LOCAL traffic for '
                               f'{name} external destinations" -m addrtype --src-type LOCAL '
                               f"-j {cluster_chain}")
        # everything else follows the external policy, when it has endpoints here (else the
        # filter rules above drop it)
        if has_external:
            b.nat_rules.append(f"-A {ext_chain} -j {external_policy_chain}")
    if uses_fw:
        b.nat_chains.append(_chain(fw_chain))
        head = f'-A {fw_chain} -m comment --comment "{name} loadbalancer IP"'
        allow_from_node = False
        import ipaddress  # local: only LoadBalancers with source ranges need it

        for cidr in svc.source_ranges:
            b.nat_rules.append(f"{head} -s {cidr} -j {ext_chain}")
            if ipaddress.ip_address(opts.node_ip) in ipaddress.ip_network(cidr, strict=False):
                allow_from_node = True
        # a load balancer IP is often a local address of the node too: the node's own request
        # to it loops back with the load balancer IP as its source, so when the node may use
        # the Service, that source is allowed as well
        if allow_from_node:
            for ip in svc.lb_ips:
                b.nat_rules.append(f"{head} -s {ip} -j {ext_chain}")
        # falling off the end means not DNATed: filter KUBE-PROXY-FIREWALL drops it
        b.nat_rules.append(f'-A {fw_chain} -m comment --comment "other traffic to {name} will '
                           'be dropped by KUBE-PROXY-FIREWALL"')
    if uses_cluster_chain:
        b.nat_chains.append(_chain(cluster_chain))
        _to_endpoints(b, svc, cluster_chain, cluster_eps)
    if uses_local_chain:
        b.nat_chains.append(_chain(local_chain))
        _to_endpoints(b, svc, local_chain, local_eps)
    # one chain per endpoint this node can send to (so an unready one's chain is not written
    # and goes as stale): hairpin traffic (an endpoint reaching itself through the Service) is
    # masqueraded, else its reply would skip the DNAT; ClientIP affinity remembers the source
    for ep in reachable:
        sep = _sep(svc, ep)
        b.nat_chains.append(_chain(sep))
        b.nat_rules.append(f"-A {sep} -m comment --comment {name} -s {ep.ip} -j KUBE-MARK-MASQ")
        affinity = (f" -m recent --name {sep} --set" if svc.affinity_timeout is not None else "")
        b.nat_rules.append(f"-A {sep} -m comment --comment {name}{affinity} {match} -j DNAT "
                           f"--to-destination {ep}")


def _sep(svc: ServicePort, ep: Endpoint) -> str:
    return kubeproxy.endpoint_chain(svc.namespace, svc.name, svc.port_name, svc.protocol, ep.ip,
                                    ep.port)


def _to_endpoints(b: _Buffers, svc: ServicePort, chain: str, endpoints: list[Endpoint]) -> None:
    """A policy chain's jumps to its endpoints: first, with ClientIP affinity, one rule per
    endpoint that sends a client seen recently back to it; then the random choice, where the
    i-th of n endpoints is taken with probability 1/(n-i), so each gets 1/n of new clients
    (the last rule matches whatever is left). The only place the formula is written."""
    name = svc.name_string
    if svc.affinity_timeout is not None:
        for ep in endpoints:
            sep = _sep(svc, ep)
            b.nat_rules.append(f'-A {chain} -m comment --comment "{name} -> {ep}" -m recent '
                               f"--name {sep} --rcheck --seconds {svc.affinity_timeout} --reap "
                               f"-j {sep}")
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        rule = f'-A {chain} -m comment --comment "{name} -> {ep}"'
        if i < n - 1:
            rule += f" -m statistic --mode random --probability {probability(n - i)}"
        b.nat_rules.append(f"{rule} -j {_sep(svc, ep)}")


JUMPS: tuple[tuple[str, str, str, str], ...] = (
    # table, from chain, to chain, match + comment (kube-proxy's iptablesJumpChains)
    ("filter", "INPUT", "KUBE-EXTERNAL-SERVICES", '-m conntrack --ctstate NEW -m comment '
     '--comment "kubernetes externally-visible service portals"'),
    ("filter", "FORWARD", "KUBE-EXTERNAL-SERVICES", '-m conntrack --ctstate NEW -m comment '
     '--comment "kubernetes externally-visible service portals"'),
    ("filter", "INPUT", "KUBE-NODEPORTS", '-m comment --comment "kubernetes health check '
     'service ports"'),
    ("filter", "FORWARD", "KUBE-SERVICES", '-m conntrack --ctstate NEW -m comment --comment '
     '"kubernetes service portals"'),
    ("filter", "OUTPUT", "KUBE-SERVICES", '-m conntrack --ctstate NEW -m comment --comment '
     '"kubernetes service portals"'),
    ("filter", "FORWARD", "KUBE-FORWARD", '-m comment --comment "kubernetes forwarding rules"'),
    ("filter", "INPUT", "KUBE-PROXY-FIREWALL", '-m conntrack --ctstate NEW -m comment --comment '
     '"kubernetes load balancer firewall"'),
    ("filter", "OUTPUT", "KUBE-PROXY-FIREWALL", '-m conntrack --ctstate NEW -m comment --comment '
     '"kubernetes load balancer firewall"'),
    ("filter", "FORWARD", "KUBE-PROXY-FIREWALL", '-m conntrack --ctstate NEW -m comment '
     '--comment "kubernetes load balancer firewall"'),
    ("nat", "OUTPUT", "KUBE-SERVICES", '-m comment --comment "kubernetes service portals"'),
    ("nat", "PREROUTING", "KUBE-SERVICES", '-m comment --comment "kubernetes service portals"'),
    ("nat", "POSTROUTING", "KUBE-POSTROUTING", '-m comment --comment "kubernetes postrouting '
     'rules"'),
)


def jumps(opts: Options) -> list[str]:
    """Lines for a podnet-iptables .jumps file: '<table> <chain> <rule>' (inserted first)."""
    out = [f"{table} {src} {args} -j {dst}" for table, src, dst, args in JUMPS]
    if opts.localhost_nodeports:
        out += ["filter INPUT -j KUBE-FIREWALL", "filter OUTPUT -j KUBE-FIREWALL"]
    return out


def readiness(plan: Plan, observed: Mapping[str, str]) -> list[dict[str, Any]]:
    """The pods with a readinessProbe that back a Service port: per pod its IP, the probe,
    the Service endpoints it governs ("ns/svc:port -> ip:port", as kube-proxy's rule comments
    name them; every node's podnet-endpoints reports the pod unready by its key and IP, and
    ``from_input`` leaves these endpoints out while it is) and its UDP endpoints (whose
    conntrack flows are cleared when it goes unready)."""
    out = []
    for pod in plan.pods:
        probe = pod.readiness
        ip = observed.get(pod.key)
        if not probe or not ip:
            continue
        governed, udp = set(), set()
        for svc in plan.services:
            if not svc.proxied:
                continue
            for port in svc.ports:
                for e in port.endpoints:
                    if e.pod == pod.key:
                        name = kubeproxy.service_port_name(svc.namespace, svc.name, port.name)
                        governed.add(f"{name} -> {ip}:{e.port}")
                        if port.protocol == "UDP":
                            udp.add(f"{ip}:{e.port}")
        if governed:
            out.append({"pod": pod.key, "ip": ip, "probe": probe, "endpoints": sorted(governed),
                        "udp": sorted(udp)})
    return out


def from_plan(plan: Plan, observed: Mapping[str, str],
              external_ips: Mapping[str, Sequence[str]] | None = None) -> list[ServicePort]:
    """kube-proxy's Service ports for the plan's Services that have a ClusterIP, with
    endpoints at the pods' observed IPs (a pod not running yet is no endpoint)."""
    out = []
    for svc in plan.services:
        if not svc.proxied:
            continue
        for port in svc.ports:
            eps = tuple(Endpoint(observed[e.pod], e.port, e.node, pod=e.pod)
                        for e in port.endpoints if observed.get(e.pod))
            eps = tuple(sorted(eps, key=lambda e: (tuple(int(x) for x in e.ip.split(".")),
                                                   e.port)))
            out.append(ServicePort(
                namespace=svc.namespace, name=svc.name, port_name=port.name,
                protocol=port.protocol, cluster_ip=str(svc.cluster_ip), port=port.port,
                endpoints=eps, node_port=port.node_port or 0,
                external_ips=tuple((external_ips or {}).get(svc.key, ())),
                lb_ips=(svc.lb_ip,) if svc.lb_ip else (),
                source_ranges=tuple(svc.load_balancer_source_ranges),
                health_check_node_port=svc.health_check_node_port or 0,
                affinity_timeout=svc.session_affinity_timeout,
                # externalTrafficPolicy only applies to Services reachable from outside
                external_local=svc.external_traffic_policy == "Local"
                and svc.type in ("NodePort", "LoadBalancer"),
                internal_local=svc.internal_traffic_policy == "Local",
            ))
    return out


CANARY = "KUBE-PROXY-CANARY"
INPUT_VERSION = 1  # of the JSON node_rules gives and from_input reads


def rules_file(services: Sequence[ServicePort], opts: Options) -> str:
    """The rules file podnet-iptables applies on a node: ``render``'s rules, with kube-proxy's
    canary chain declared in mangle, nat and filter (a flush of any of them shows)."""
    text = render(services, opts)
    text = text.replace("*filter\n", f"*filter\n:{CANARY} - [0:0]\n", 1)
    text = text.replace("*nat\n", f"*nat\n:{CANARY} - [0:0]\n", 1)
    return f"*mangle\n:{CANARY} - [0:0]\nCOMMIT\n" + text


def rules_input(services: Sequence[ServicePort], opts: Options) -> dict[str, Any]:
    """The renderer's input as JSON data: the Options and the Service ports with their
    endpoints (which pod, on which node), without readiness, which only the node knows."""
    def port(svc: ServicePort) -> dict[str, Any]:
        data = asdict(svc)
        data["endpoints"] = [{k: v for k, v in asdict(e).items() if k != "ready"}
                             for e in svc.endpoints]
        return data

    return {"version": INPUT_VERSION, "options": asdict(opts),
            "services": [port(s) for s in services]}


def from_input(data: Mapping[str, Any], unready: Collection[tuple[str, str]] = ()
               ) -> tuple[list[ServicePort], Options]:
    """The Service ports and Options of ``rules_input`` data, each endpoint marked not ready
    when its (pod, ip) is in ``unready`` (what podnet-endpoints reports). A pod that comes
    back with a new IP is a new endpoint: it starts ready. Raises ValueError naming the field
    when the data is not this version's input."""
    if not isinstance(data, Mapping) or data.get("version") != INPUT_VERSION:
        found = data.get("version") if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"version: {found!r} is not {INPUT_VERSION} (the input was written by "
                         "another podnet; converge again to write it anew)")
    where = "options"
    try:
        opts = Options(**data["options"])
        services = []
        for i, raw in enumerate(data["services"]):
            where = f"services[{i}]"
            eps = tuple(Endpoint(**e, ready=(e.get("pod", ""), e["ip"]) not in unready)
                        for e in raw["endpoints"])
            lists = {f.name: tuple(raw[f.name]) for f in fields(ServicePort)
                     if f.name in ("external_ips", "lb_ips", "source_ranges")}
            services.append(ServicePort(**{**raw, **lists, "endpoints": eps}))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{where}: {type(exc).__name__}: {exc} (the input was written by "
                         "another podnet; converge again to write it anew)") from None
    return services, opts


def parse_unready(text: str) -> set[tuple[str, str]]:
    """The (pod, ip) pairs of the unready pods file podnet-endpoints writes ("namespace/name
    ip" a line; ``#`` comments and blank lines skipped), what ``from_input`` takes. Raises
    ValueError starting with the line number for a line of another shape."""
    out = set()
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or line.startswith("#"):
            continue
        if len(words) != 2:
            raise ValueError(f"{number}: {line!r} is not 'namespace/name ip' (podnet-endpoints "
                             "writes this file; restart it)")
        out.add((words[0], words[1]))
    return out


@dataclass(frozen=True)
class HealthCheck:
    """One Service's health check node port on a node and what it reports: the number of
    ready endpoints of the Service on that node (kube-proxy's LocalReadyEndpoints)."""
    namespace: str
    name: str
    port: int
    local_endpoints: int


def health_checks(services: Iterable[ServicePort], node: str) -> list[HealthCheck]:
    """The health checks ``node`` serves, one per Service (not per port) with
    externalTrafficPolicy Local and a healthCheckNodePort, as kube-proxy's service health
    server: each counts the Service's distinct ready endpoints (pods) on ``node`` over all
    its ports. Readiness here is strict, unlike ``categorize``'s fail-open: a node whose local
    endpoints are all unready reports 0, so the load balancer stops sending to it, which is
    what the Local policy needs (failing open keeps the rules, not the load balancer's
    choice)."""
    ports: dict[tuple[str, str], int] = {}
    pods: dict[tuple[str, str], set[str]] = {}
    for svc in services:
        if not (svc.external_local and svc.health_check_node_port):
            continue
        key = (svc.namespace, svc.name)
        ports[key] = svc.health_check_node_port
        pods.setdefault(key, set()).update(e.pod or e.ip for e in svc.endpoints
                                           if e.node == node and e.ready)
    return [HealthCheck(ns, name, ports[(ns, name)], len(pods[(ns, name)]))
            for ns, name in sorted(ports)]


def node_rules(plan: Plan, observed: Mapping[str, str], node: str,
               options: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the kube_proxy role writes on ``node``: the renderer's input (rendered there
    with the node's readiness by podnet-kube-proxy), the jumps into kube-proxy's chains, the
    chain prefixes podnet-iptables may delete when stale, the UDP services' endpoints (for
    conntrack cleanup) and the pods to probe."""
    opts = Options(node_name=node, node_ip=plan.node(node).address,
                   cluster_cidr=str(plan.settings.cluster_cidr),
                   masquerade_mark=str(options.get("masquerade_mark", MASQ_MARK)),
                   random_fully=bool(options.get("random_fully", True)),
                   localhost_nodeports=bool(options.get("localhost_nodeports", False)),
                   nfacct=bool(options.get("nfacct", False)))
    services = from_plan(plan, observed)
    udp = {}
    for svc in services:
        if svc.protocol == "UDP":
            ready = sorted({str(e) for e in svc.endpoints if e.ready})
            for ip in (svc.cluster_ip, *svc.lb_ips, *svc.external_ips):
                udp[f"{ip}:{svc.port}"] = ready
            if svc.node_port:
                udp[f"nodeport:{svc.node_port}"] = ready
    return {"input": rules_input(services, opts), "jumps": jumps(opts),
            "owns": [f"nat {' '.join(OWNED_PREFIXES)}"], "udp_endpoints": udp,
            "readiness": {"pods": readiness(plan, observed),
                          "nodes": peers(plan, services, node),
                          "grace": plan.settings.node_grace_period}}


def peers(plan: Plan, services: Sequence[ServicePort], node: str) -> list[dict[str, Any]]:
    """The nodes ``node``'s podnet-endpoints watches (every other one: a node never declares
    itself NotReady), each with its heartbeat (kube-proxy's /livez on its address) and the
    Service endpoints on it, which leave ``node``'s rules while it is NotReady (the node
    lifecycle controller marks them not ready; kube-proxy then drops them)."""
    out = []
    for other in plan.nodes:
        if other.name == node:
            continue
        pods: dict[tuple[str, str], set[str]] = {}
        for svc in services:
            for e in svc.endpoints:
                if e.node == other.name and e.pod:
                    udp = pods.setdefault((e.pod, e.ip), set())
                    if svc.protocol == "UDP":
                        udp.add(str(e))
        out.append({"name": other.name, "address": str(other.address),
                    "port": kubeproxy.HEALTHZ_PORT, "path": kubeproxy.LIVEZ_PATH,
                    "pods": [{"pod": pod, "ip": ip, "udp": sorted(udp)}
                             for (pod, ip), udp in sorted(pods.items())]})
    return out
