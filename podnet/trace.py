"""The path one flow takes through a live cluster, from the hosts' real state.

``python -m podnet trace --from NS/POD --to NAME[:PORT]`` (and reports/verify.html's packet-path
walkthroughs) send one real packet with a fixed source port and read what the hosts did with it:

- every node's nat table (``iptables-save -c``) before and after: the rules on the packet's way
  are found by walking the chains as netfilter does (addresses, ports, protocols, address types,
  the random and affinity rules decided by the endpoint conntrack names) and each is shown with
  how many packets its counter gained;
- ``conntrack -L`` filtered on the flow's source port: the node that translated it, the endpoint
  it picked (the reply's source) and whether the client was masqueraded (the reply's target);
- ``ip route get`` on the node that translated it and on the endpoint's node: the routes that
  carry the packet between them.

The parsing and the walk are pure (unit-tested on saved rules); :func:`trace` runs the commands
through a ``Runner``, so verify/conftest.py (which records them as evidence) and the command line
(ssh as Ansible reaches the hosts) share it.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import shlex
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from podnet.plan import Plan
from podnet.proxier import MASQ_MARK

# (host, shell script) -> stdout; the script runs as root on the host
Runner = Callable[[str, str], str]

TERMINAL = {"DNAT", "SNAT", "MASQUERADE", "ACCEPT", "DROP", "REJECT", "REDIRECT"}
SECTION = "=====podnet-trace====="


class TraceError(Exception):
    """A flow podnet cannot trace (an unknown pod, Service or port), in one line with the fix."""


# -- iptables-save -c ------------------------------------------------------------------------------
@dataclass
class Rule:
    table: str
    chain: str
    position: int  # 1-based, as iptables -L --line-numbers counts
    spec: str  # the rule after "-A CHAIN"
    packets: int

    @property
    def tokens(self) -> list[str]:
        return shlex.split(self.spec)

    @property
    def target(self) -> str | None:
        tokens = self.tokens
        for flag in ("-j", "-g"):
            if flag in tokens:
                return tokens[tokens.index(flag) + 1]
        return None

    def option(self, name: str) -> str | None:
        tokens = self.tokens
        return tokens[tokens.index(name) + 1] if name in tokens else None

    @property
    def comment(self) -> str | None:
        return self.option("--comment")

    @property
    def ref(self) -> tuple[str, str, int]:
        return (self.table, self.chain, self.position)


Tables = dict[str, dict[str, list[Rule]]]  # table -> chain -> rules in order
_RULE = re.compile(r"^\[(\d+):(\d+)\]\s+-A\s+(\S+)\s*(.*)$")


def parse_save(text: str) -> Tables:
    """``iptables-save -c`` output as rules by table and chain (chains without rules kept)."""
    tables: Tables = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            tables.setdefault(table, {})
        elif line.startswith(":") and table:
            tables[table].setdefault(line[1:].split()[0], [])
        elif (match := _RULE.match(line)) and table:
            chain = match.group(3)
            rules = tables[table].setdefault(chain, [])
            rules.append(Rule(table, chain, len(rules) + 1, match.group(4), int(match.group(1))))
    return tables


def gained(before: Tables, after: Tables) -> dict[tuple[str, str, int], int]:
    """Packets each rule's counter gained between two saves (rules present in both, same spec)."""
    out = {}
    for table, chains in after.items():
        for chain, rules in chains.items():
            old = before.get(table, {}).get(chain, [])
            for rule in rules:
                prior = old[rule.position - 1] if rule.position <= len(old) else None
                if prior is not None and prior.spec == rule.spec and rule.packets > prior.packets:
                    out[rule.ref] = rule.packets - prior.packets
    return out


# -- conntrack -L ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tuple:
    src: str
    dst: str
    sport: int
    dport: int


@dataclass(frozen=True)
class Conntrack:
    proto: str
    original: Tuple
    reply: Tuple
    state: str

    @property
    def dnat(self) -> bool:
        return (self.reply.src, self.reply.sport) != (self.original.dst, self.original.dport)

    @property
    def snat(self) -> bool:
        return (self.reply.dst, self.reply.dport) != (self.original.src, self.original.sport)

    def describe(self) -> str:
        o, r = self.original, self.reply
        return (f"{self.proto} {o.src}:{o.sport} -> {o.dst}:{o.dport}, reply "
                f"{r.src}:{r.sport} -> {r.dst}:{r.dport}{' ' + self.state if self.state else ''}")


def parse_conntrack(text: str) -> list[Conntrack]:
    """``conntrack -L`` lines (tcp and udp) as their original and reply tuples."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] not in ("tcp", "udp"):
            continue
        pairs = [w.split("=", 1) for w in words if "=" in w]
        values: dict[str, list[str]] = {}
        for key, value in pairs:
            values.setdefault(key, []).append(value)
        try:
            tuples = [Tuple(values["src"][i], values["dst"][i], int(values["sport"][i]),
                            int(values["dport"][i])) for i in (0, 1)]
        except (KeyError, IndexError, ValueError):
            continue
        state = next((w for w in words[3:5] if w.isupper() and "=" not in w), "")
        out.append(Conntrack(words[0], tuples[0], tuples[1], state))
    return out


# -- the walk --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    proto: str
    dport: int


@dataclass
class Hit:
    """A rule the packet matched, with what its counter gained during the trace."""

    table: str
    chain: str
    position: int
    spec: str
    gained: int
    outcome: str  # "jump", "DNAT 10.244.2.3:8080", "mark for masquerade", "RETURN", ...


def _in(address: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


# options that take no value (the rest of the rule's words after an option are its value)
FLAGS = {"--rcheck", "--set", "--update", "--remove", "--rsource", "--rdest", "--reap",
         "--random", "--random-fully", "--persistent"}
CHANCE = ("--probability", "--rcheck", "--update")


def _ports(spec: str, port: int) -> bool:
    """``--dport 80``, ``--dport 30000:32767`` or ``--dports 80,443,8000:8100``."""
    for part in spec.split(","):
        low, _, high = part.partition(":")
        if low.isdigit() and int(low) <= port <= int(high if high.isdigit() else low):
            return True
    return False


def _mark(spec: str) -> tuple[int, int]:
    value, _, mask = spec.partition("/")
    return int(value, 0), int(mask, 0) if mask else 0xFFFFFFFF


class Walk:
    """Netfilter's traversal of kube-proxy's and podnet's nat rules for one packet."""

    def __init__(self, tables: Tables, packet: Packet, local: Iterable[str],
                 endpoint: str | None, counters: dict[tuple[str, str, int], int]) -> None:
        self.tables = tables
        self.packet = packet
        self.local = set(local)
        self.endpoint = endpoint  # ip:port the conntrack reply names, if the flow was DNATed
        self.counters = counters
        self.mark = 0  # the packet's mark as the MARK targets set it
        self.hits: list[Hit] = []
        self.dnat: str | None = None
        self.unevaluated: set[str] = set()  # options taken as matching (-i, -o, ...)

    @property
    def marked(self) -> bool:
        """kube-proxy's masquerade bit is set (KUBE-POSTROUTING masquerades the packet)."""
        value, mask = _mark(MASQ_MARK)
        return self.mark & mask == value

    def _sep_destination(self, chain: str) -> str | None:
        for rule in self.tables["nat"].get(chain, []):
            if rule.target == "DNAT":
                return rule.option("--to-destination")
        return None

    def _chance(self, rule: Rule) -> bool:
        """A random or an affinity rule: its counter says whether this packet took it, when a
        counter of the chain's jumps to an endpoint moved (and the endpoint conntrack names must
        agree); with none moved (rules re-applied meanwhile), the endpoint alone decides."""
        target = rule.target or ""
        if not target.startswith("KUBE-SEP-"):
            return self.counters.get(rule.ref, 0) > 0
        to_endpoint = self._sep_destination(target) == self.endpoint if self.endpoint else True
        chain = self.tables["nat"].get(rule.chain, [])
        moved = any(self.counters.get(r.ref, 0) > 0 for r in chain
                    if (r.target or "").startswith("KUBE-SEP-"))
        if moved:
            return self.counters.get(rule.ref, 0) > 0 and to_endpoint
        return bool(self.endpoint) and to_endpoint

    def matches(self, rule: Rule) -> bool:
        words = rule.tokens
        packet = self.packet
        negate = False
        i = 0
        while i < len(words):
            word = words[i]
            if word == "!":
                negate = True
                i += 1
                continue
            if not word.startswith("-") or word in ("-A", "-j", "-g", "-m") or \
                    word.startswith("--to-") or word.startswith("--set-"):
                i += 1 if not word.startswith("-") else 2
                negate = False
                continue
            value = words[i + 1] if i + 1 < len(words) and word not in FLAGS else ""
            ok: bool | None = None
            if word == "-s":
                ok = _in(packet.src, value)
            elif word == "-d":
                ok = _in(packet.dst, value)
            elif word == "-p":
                ok = packet.proto == value
            elif word in ("--dport", "--dports", "--destination-port", "--destination-ports"):
                ok = _ports(value, packet.dport)
            elif word in ("--src-type", "--dst-type"):
                address = packet.src if word == "--src-type" else packet.dst
                ok = (address in self.local) == (value == "LOCAL")
            elif word == "--mark":
                mark, mask = _mark(value)
                ok = self.mark & mask == mark
            elif word in CHANCE:
                ok = self._chance(rule)
            elif word in ("-i", "-o", "--in-interface", "--out-interface", "--sport",
                          "--ctstate", "--state"):
                self.unevaluated.add(word)
            if ok is not None and ok == negate:
                return False
            negate = False
            i += 1 if word in FLAGS else 2
        return True

    def _set_mark(self, rule: Rule) -> str:
        old = self.mark
        for option in ("--set-xmark", "--set-mark", "--or-mark", "--xor-mark", "--and-mark"):
            spec = rule.option(option)
            if spec is None:
                continue
            value, mask = _mark(spec)
            if option == "--set-xmark":
                self.mark = (self.mark & ~mask) ^ value
            elif option == "--set-mark":
                self.mark = (self.mark & ~mask) | value
            elif option == "--or-mark":
                self.mark |= value
            elif option == "--xor-mark":
                self.mark ^= value
            else:
                self.mark &= value
        self.mark &= 0xFFFFFFFF
        note = ""
        if self.marked and not (old & _mark(MASQ_MARK)[1]):
            note = " (kube-proxy's: masquerade it)"
        elif old & _mark(MASQ_MARK)[1] and not self.marked:
            note = " (kube-proxy's bit cleared before masquerading)"
        return f"mark {old:#x} -> {self.mark:#x}{note}"

    def walk(self, chain: str, depth: int = 0) -> bool:
        """Walk ``chain``; True when a terminal target (DNAT, MASQUERADE...) ended the table."""
        if depth > 20:
            return False
        for rule in self.tables["nat"].get(chain, []):
            if not self.matches(rule):
                continue
            target = rule.target
            gained_now = self.counters.get(rule.ref, 0)
            if target is None:
                continue
            if target == "MARK":
                self.hits.append(Hit(*rule.ref, rule.spec, gained_now, self._set_mark(rule)))
                continue
            if target == "RETURN":
                self.hits.append(Hit(*rule.ref, rule.spec, gained_now, "RETURN"))
                return False
            if target in TERMINAL:
                detail = rule.option("--to-destination") or ""
                self.hits.append(Hit(*rule.ref, rule.spec, gained_now,
                                     f"{target} {detail}".strip()))
                if target == "DNAT":
                    self.dnat = detail
                return True
            self.hits.append(Hit(*rule.ref, rule.spec, gained_now, f"jump {target}"))
            if target in self.tables["nat"] and self.walk(target, depth + 1):
                return True
            if rule.option("-g") is not None:
                return False
        return False


def walk_nat(tables: Tables, packet: Packet, local: Iterable[str], endpoint: str | None,
             counters: dict[tuple[str, str, int], int], hook: str) -> Walk:
    """The nat rules a packet meets on one node: ``hook`` PREROUTING (it arrived) or OUTPUT (the
    node sent it), then POSTROUTING with the address DNAT gave it."""
    first = Walk(tables, packet, local, endpoint, counters)
    if "nat" not in tables:
        return first
    first.walk(hook)
    after = packet
    if first.dnat:
        address, _, port = first.dnat.rpartition(":")
        after = Packet(packet.src, address, packet.proto, int(port or packet.dport))
    second = Walk(tables, after, local, endpoint, counters)
    second.mark = first.mark
    second.walk("POSTROUTING")
    first.hits += second.hits  # first.mark stays the mark PREROUTING/OUTPUT gave the packet
    first.unevaluated |= second.unevaluated
    return first


# -- a live trace ---------------------------------------------------------------------------------
@dataclass
class Step:
    host: str
    what: str  # one line a reader follows
    evidence: str = ""  # the command on the host that shows it
    detail: list[str] = field(default_factory=list)


@dataclass
class Trace:
    source: str
    target: str
    flow: str  # "tcp 10.244.0.5:40123 -> 10.104.138.46:80"
    answered: bool
    outcome: str
    steps: list[Step]
    endpoint: str | None
    through: list[str]  # nodes whose conntrack saw the flow

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [f"trace {self.source} -> {self.target}: {self.flow}", ""]
        for n, step in enumerate(self.steps, 1):
            lines.append(f"{n:2}. [{step.host}] {step.what}")
            lines += [f"      {d}" for d in step.detail]
            if step.evidence:
                lines.append(f"      ($ {step.evidence})")
        lines += ["", f"result: {self.outcome}"]
        return "\n".join(lines)


@dataclass(frozen=True)
class Endpoint:
    """Where a trace starts or what it aims at."""

    label: str  # "pod demo/client", "host client", "Service demo/web:http"
    host: str  # the inventory host the packet leaves from (source) / the pod's node
    address: str
    port: int = 0
    proto: str = "tcp"
    pod: str | None = None  # ns/name of a pod source, run in its netns
    host_network: bool = False
    query: str = "."  # the name a UDP packet to port 53 asks for (a DNS query, so it is answered)


def pod_addresses(plan: Plan, runner: Runner, nodes: list[str]) -> dict[str, tuple[str, str]]:
    """``{ns/name: (ip, node)}`` of the pods each node's podnet-cni reports."""
    command = shlex.join([plan.paths.cni_runtime, "facts"])
    out = {}
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        texts = list(pool.map(lambda node: runner(node, command), nodes))
    for node, text in zip(nodes, texts, strict=True):
        for pod in json.loads(text or "{}").get("pods", []):
            out[f"{pod['namespace']}/{pod['name']}"] = (str(pod.get("ip") or ""), node)
    return out


def resolve_source(plan: Plan, text: str, pods: dict[str, tuple[str, str]]) -> Endpoint:
    hosts = {h.name: h for h in plan.hosts}
    if "/" not in text:
        if text not in hosts:
            raise TraceError(f"--from {text}: give NS/POD (python -m podnet plan lists the pods) "
                             f"or a host of the inventory: {', '.join(hosts)}")
        return Endpoint(f"host {text}", text, hosts[text].address)
    if text not in {p.key for p in plan.pods}:
        raise TraceError(f"--from {text}: no pod {text} in the plan; the pods are: "
                         f"{', '.join(sorted(p.key for p in plan.pods))}")
    pod = plan.pod(text)
    if text not in pods or not pods[text][0]:
        raise TraceError(f"--from {text}: {pod.node} reports no running pod {text}: converge "
                         f"first (make converge)")
    return Endpoint(f"pod {text}", pod.node, pods[text][0], pod=text,
                    host_network=pod.host_network)


def resolve_target(plan: Plan, text: str, source: Endpoint,
                   pods: dict[str, tuple[str, str]]) -> Endpoint:
    """NAME[:PORT]: a Service (ns/name or name.ns[.svc...]), a pod (ns/name), a host, or an
    address. A Service from a host outside the cluster is reached at its LoadBalancer address,
    else at its first node's NodePort; from a pod or node at its ClusterIP."""
    name, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    services = {s.namespace + "/" + s.name: s for s in plan.services}
    for service in plan.services:
        for alias in (f"{service.name}.{service.namespace}", service.fqdn.rstrip(".")):
            services.setdefault(alias, service)
        services.setdefault(f"{service.name}.{service.namespace}.svc", service)
    if name in services:
        service = services[name]
        port = next((p for p in service.ports if port_text in (str(p.port), p.name)),
                    None) if port_text else (service.ports[0] if service.ports else None)
        if port is None:
            raise TraceError(f"--to {text}: {service.namespace}/{service.name} has no port "
                             f"{port_text}; its ports are: "
                             f"{', '.join(f'{p.name or p.port}' for p in service.ports)}")
        label = f"Service {service.namespace}/{service.name}:{port.name or port.port}"
        query = service.fqdn
        nodes = {n.name for n in plan.nodes}
        outside = source.pod is None and source.host not in nodes
        if outside and service.lb_ip:
            return Endpoint(label + " (LoadBalancer)", "", service.lb_ip, port.port,
                            port.protocol.lower(), query=query)
        if outside and port.node_port:
            node = plan.nodes[0]
            return Endpoint(label + f" (NodePort on {node.name})", node.name, node.address,
                            port.node_port, port.protocol.lower(), query=query)
        if service.cluster_ip is None:
            raise TraceError(f"--to {text}: {service.namespace}/{service.name} has no ClusterIP "
                             f"(headless or ExternalName): trace one of its pods instead")
        return Endpoint(label, "", service.cluster_ip, port.port, port.protocol.lower(),
                        query=query)
    if not port_text:
        raise TraceError(f"--to {text}: give the port, NAME:PORT")
    try:
        port_number = int(port_text)
    except ValueError:
        raise TraceError(f"--to {text}: the port {port_text!r} is not a number") from None
    if name in pods:
        return Endpoint(f"pod {name}", pods[name][1], pods[name][0], port_number)
    hosts = {h.name: h for h in plan.hosts}
    if name in hosts:
        return Endpoint(f"host {name}", name, hosts[name].address, port_number)
    try:
        ipaddress.ip_address(name)
    except ValueError:
        raise TraceError(f"--to {text}: no Service, pod or host {name}; give ns/name of a "
                         f"Service or pod, a host of the inventory or an address") from None
    return Endpoint(name, "", name, port_number)


SEND = r"""
import socket, sys
proto, src_port, dst, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", src_port))
s.settimeout(3)
try:
    if proto == "tcp":
        s.connect((dst, port))
        print("connected")
    else:
        name = b"".join(bytes([len(x)]) + x.encode() for x in sys.argv[5].split(".") if x)
        query = b"\x12\x34\x01\x00\x00\x01" + bytes(6) + name + b"\x00\x00\x01\x00\x01"
        s.sendto(query if port == 53 else b"podnet-trace\n", (dst, port))
        data, peer = s.recvfrom(4096)
        print(f"reply {len(data)} bytes from {peer[0]}:{peer[1]}")
except OSError as exc:
    print(f"no answer: {exc}")
"""


def _sections(text: str) -> list[str]:
    return text.split(SECTION + "\n")


def trace(plan: Plan, runner: Runner, source_text: str, target_text: str,
          pods: dict[str, tuple[str, str]] | None = None) -> Trace:
    """Send one packet from ``source_text`` to ``target_text`` and say what the hosts did;
    ``pods`` (pod_addresses()) saves asking the nodes again when several flows are traced."""
    nodes = [n.name for n in plan.nodes]
    node_address = {n.name: n.address for n in plan.nodes}
    # what the plan alone can refuse is refused before any host is asked
    planned = {p.key: ("0.0.0.0", p.node) for p in plan.pods}  # noqa: S104 - not a bind
    resolve_target(plan, target_text, resolve_source(plan, source_text, planned), planned)
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        if pods is None:
            pods = pod_addresses(plan, runner, nodes)
        source = resolve_source(plan, source_text, pods)
        target = resolve_target(plan, target_text, source, pods)
        sport = random.randint(40000, 59999)  # noqa: S311 - a port, not a secret
        save = "iptables-save -c -t nat"
        before = dict(zip(nodes, pool.map(lambda n: parse_save(runner(n, save)), nodes),
                          strict=True))
        send = shlex.join(["python3", "-c", SEND, target.proto, str(sport), target.address,
                           str(target.port), target.query])
        inside = ""
        if source.pod and not source.host_network:
            from podnet.kubelet import pod_id
            namespace, name = source.pod.split("/", 1)
            inside = shlex.join(["ip", "netns", "exec", pod_id(namespace, name)]) + " "
        route_get = f"ip route get {shlex.quote(target.address)}"
        sent = _sections(runner(source.host, f"{inside}{route_get}; echo {SECTION}; "
                                f"{inside}{send}"))
        first_route = sent[0].strip().splitlines()[0] if sent[0].strip() else "no route"
        outcome = (sent[1].strip() if len(sent) > 1 else "") or "no output"
        after_script = (f"{save}; echo {SECTION}; conntrack -L -p {target.proto} "
                        f"--orig-port-src {sport} 2>/dev/null; echo {SECTION}; "
                        f"ip -o -4 addr show; true")
        after_text = dict(zip(nodes, pool.map(lambda n: runner(n, after_script), nodes),
                              strict=True))
    flow = f"{target.proto} {source.address}:{sport} -> {target.address}:{target.port}"
    steps: list[Step] = []
    if source.pod and not source.host_network:
        steps.append(Step(source.host, f"{source.label} ({source.address}) sends {flow} from "
                          f"its eth0, whose veth peer is on {plan.paths.cni_bridge} of "
                          f"{source.host}: {first_route}", f"{inside}{route_get}"))
    else:
        steps.append(Step(source.host, f"{source.label} ({source.address}) sends {flow}: "
                          f"{first_route}", route_get))
        steps += _hops(plan, runner, first_route, target.address, nodes)
        if any(s.lb_ip == target.address for s in plan.services):
            steps += _lb_hosts(plan, runner, target)
    seen: dict[str, Conntrack] = {}
    for node in nodes:
        parts = _sections(after_text[node])
        # this flow: its source port, and its source or its target (another flow may share
        # the port; past a masquerading node the source is the node's address)
        entries = [c for c in parse_conntrack(parts[1] if len(parts) > 1 else "")
                   if c.original.sport == sport and (c.original.src == source.address
                                                     or c.original.dst == target.address)]
        if entries:
            seen[node] = entries[0]
    translated = next((n for n, c in seen.items() if c.dnat), None)
    entry = translated or (source.host if source.host in nodes else next(iter(seen), None))
    endpoint = None
    final = target.address
    if entry is not None:
        after = parse_save(_sections(after_text[entry])[0])
        counters = gained(before[entry], after)
        conn = seen.get(entry)
        if conn is not None and conn.dnat:
            endpoint = f"{conn.reply.src}:{conn.reply.sport}"
            final = conn.reply.src
        hook = "OUTPUT" if entry == source.host and (source.pod is None
                                                    or source.host_network) else "PREROUTING"
        parts = _sections(after_text[entry])
        # addrtype LOCAL: every address the node holds (its own, cni0's, an announced LB IP)
        local = set(re.findall(r"\binet (\S+?)/", parts[2] if len(parts) > 2 else ""))
        walk = walk_nat(after, Packet(source.address, target.address, target.proto,
                                      target.port), local, endpoint, counters, hook)
        detail = [f"{h.chain} #{h.position}: {_short(h.spec)} -> {h.outcome}"
                  f"  [counter +{h.gained}]" for h in walk.hits]
        if walk.unevaluated:
            detail.append(f"(taken as matching, not evaluated: "
                          f"{', '.join(sorted(walk.unevaluated))})")
        if walk.dnat:
            what = (f"nat {hook}: kube-proxy's rules pick {walk.dnat} and DNAT "
                    f"{target.address}:{target.port} to it")
        else:
            what = f"nat {hook}: no rule translates {target.address}:{target.port}"
        steps.append(Step(entry, what, save, detail))
        if conn is not None:
            steps.append(Step(entry, f"conntrack: {conn.describe()}",
                              f"conntrack -L -p {target.proto} --orig-port-src {sport}"))
    route_hosts = [h for h in dict.fromkeys([entry] + [node for ip, node in pods.values()
                                                        if ip == final] if entry else [])
                   if h in nodes]
    owner = next((key for key, (ip, _) in pods.items() if ip == final), None)
    owner_node = pods[owner][1] if owner else next(
        (n for n, a in node_address.items() if a == final), None)
    for host in dict.fromkeys([*route_hosts, *([owner_node] if owner_node in nodes else [])]):
        if host is None:
            continue
        route = runner(host, f"ip route get {shlex.quote(final)}").splitlines()
        text = route[0].strip() if route else "no route"
        steps.append(Step(host, f"route: {text}", f"ip route get {final}"))
    for node, conn in seen.items():
        if node != entry:
            steps.append(Step(node, f"conntrack: {conn.describe()}",
                              f"conntrack -L -p {target.proto} --orig-port-src {sport}"))
    reached = f"pod {owner}" if owner else (f"node {owner_node}" if owner_node else final)
    conn = seen.get(entry) if entry else None
    if conn is not None:
        reply = (f"the reply {conn.reply.src}:{conn.reply.sport} -> {conn.reply.dst}:"
                 f"{conn.reply.dport} is translated back to {conn.original.dst}:"
                 f"{conn.original.dport} -> {conn.original.src}:{conn.original.sport}")
        if conn.snat:
            reply += (f"; the client was masqueraded: {reached} saw {conn.reply.dst} "
                      f"as its peer, not {conn.original.src}")
        elif not conn.dnat:
            reply = (f"no NAT: {reached} sees {conn.original.src} as its peer and answers it "
                     f"directly")
        steps.append(Step(entry or "", reply))
    answered = outcome.startswith(("connected", "reply"))
    result = (f"{outcome}; {reached} reached" + (f" as {endpoint}" if endpoint else "")
              if answered else f"{outcome}; no endpoint answered")
    return Trace(f"{source.label}", target.label, flow, answered, result, steps, endpoint,
                 list(seen))


def _hops(plan: Plan, runner: Runner, route: str, address: str, nodes: list[str]
          ) -> list[Step]:
    """The routes of the hosts between a host outside the cluster and the nodes (the cloud lb
    host): each ``via`` that is a host of the inventory and not a node, followed (up to 3)."""
    by_address = {h.address: h.name for h in plan.hosts}
    steps = []
    for _ in range(3):
        match = re.search(r"\bvia (\S+)", route)
        host = by_address.get(match.group(1)) if match else None
        if host is None or host in nodes:
            break
        route_get = f"ip route get {shlex.quote(address)}"
        lines = runner(host, route_get).strip().splitlines()
        route = lines[0] if lines else "no route"
        steps.append(Step(host, f"route: {route}", route_get))
    return steps


def _lb_hosts(plan: Plan, runner: Runner, target: Endpoint) -> list[Step]:
    """A cloud load balancer host's route for the address: the nodes it spreads flows over
    (hashed per flow; the node that took this one is the one whose conntrack has it)."""
    steps = []
    for host in (h.name for h in plan.hosts if plan.settings.lb_group in h.groups):
        command = f"ip route show table all {shlex.quote(target.address)}"
        text = runner(host, command)
        vias = re.findall(r"\bvia (\S+)", text)
        if vias:
            names = {n.address: n.name for n in plan.nodes}
            steps.append(Step(host, f"load balancer: {target.address} is routed to "
                              f"{', '.join(f'{names.get(v, v)} ({v})' for v in vias)}, one "
                              f"node per flow by hash", command))
    return steps


def _short(spec: str) -> str:
    """A rule without its comment (the comment is shown as the rule's name in the chain)."""
    tokens = shlex.split(spec)
    out: list[str] = []
    skip = 0
    for i, word in enumerate(tokens):
        if skip:
            skip -= 1
            continue
        if word == "-m" and i + 1 < len(tokens) and tokens[i + 1] == "comment":
            skip = 3
            continue
        out.append(word)
    return shlex.join(out)
