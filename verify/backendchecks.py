"""A node's live routing state against what its backend must give it (podnet/backends.py), what
another backend left behind, and a capture of pod traffic on the underlay: shared by
test_backends.py (the backend the lab runs) and test_backends_lifecycle.py (all three in turn).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from ipaddress import IPv4Network
from typing import Any

from conftest import Evidence, http_port, in_pod, run, running

from podnet import backends
from podnet.plan import Plan

CAPTURE = "/run/podnet-verify-capture"


def with_backend(plan: Plan, backend: str) -> Plan:
    """The plan as it is with another routing backend (a switch under test)."""
    return dataclasses.replace(plan, settings=dataclasses.replace(plan.settings, backend=backend))


def _json(evidence: Evidence) -> list[dict[str, Any]]:
    return json.loads(evidence.stdout or "[]") if evidence.rc == 0 else []


def underlay_interface(node: str, address: str) -> tuple[str, int]:
    """(name, MTU) of the interface holding the node's address."""
    found = _json(run(node, "ip", "-j", "-4", "addr", "show", "to", f"{address}/32"))
    assert found, f"{node} has no interface holding {address}"
    return str(found[0]["ifname"]), int(found[0]["mtu"])


def pod_routes(plan: Plan, node: str, proto: str) -> dict[str, dict[str, Any]]:
    """The node's routes of a protocol into the cluster CIDR, by destination."""
    cluster = plan.settings.cluster_cidr
    routes = _json(run(node, "ip", "-j", "-4", "route", "show", "proto", proto))
    # ip prints a host route (a stable pod's /32) without its length
    by_dst = {r["dst"] if "/" in r["dst"] else f"{r['dst']}/32": r
              for r in routes if r["dst"] != "default"}
    return {dst: r for dst, r in by_dst.items() if IPv4Network(dst).subnet_of(cluster)}


def routing_problems(plan: Plan, node: str) -> list[str]:
    """How the node's routing differs from what the plan's backend gives it (empty: none)."""
    want = backends.node_routing(plan, node)
    problems: list[str] = []
    if want["backend"] == "host-gw":
        have = {dst: r.get("gateway") for dst, r in pod_routes(plan, node, "152").items()}
        expected = {r["dst"]: r["via"] for r in want["routes"]}
        if have != expected:
            problems.append(f"host-gw routes (protocol 152) {have}, the plan's {expected}")
    elif want["backend"] == "vxlan":
        problems += _vxlan_problems(plan, node, want["vxlan"])
    else:
        problems += _bgp_problems(plan, node, want["bgp"])
    return problems


def _vxlan_problems(plan: Plan, node: str, vx: dict[str, Any]) -> list[str]:
    problems = []
    dev = vx["device"]
    links = _json(run(node, "ip", "-j", "-d", "link", "show", "dev", dev))
    if not links:
        return [f"no VXLAN device {dev}"]
    link = links[0]
    info = link.get("linkinfo", {}).get("info_data", {})
    underlay, mtu = underlay_interface(node, vx["local"])
    got = (info.get("id"), info.get("port"), info.get("local"), info.get("link"),
           info.get("learning"), link.get("address"), link.get("mtu"))
    expected = (vx["vni"], vx["port"], vx["local"], underlay, False, vx["mac"],
                mtu - vx["overhead"])
    if got != expected:
        problems.append(f"{dev} (vni, port, local, dev, learning, mac, mtu) {got}, "
                        f"the plan's {expected}")
    fdb = {(e["mac"], e.get("dst")) for e in _json(run(node, "bridge", "-j", "fdb", "show",
                                                         "dev", dev)) if e.get("dst")}
    if fdb != {(p["mac"], p["underlay"]) for p in vx["peers"]}:
        problems.append(f"{dev} forwarding entries {sorted(fdb)}")
    neigh = {(e["dst"], e.get("lladdr")) for e in _json(run(node, "ip", "-j", "-4", "neigh",
                                                              "show", "dev", dev))}
    if neigh != {(p["vtep"], p["mac"]) for p in vx["peers"]}:
        problems.append(f"{dev} neighbour entries {sorted(neigh)}")
    have = {dst: (r.get("gateway"), r.get("dev"), "onlink" in r.get("flags", []))
            for dst, r in pod_routes(plan, node, "152").items()}
    expected_routes = {dst: (p["vtep"], dev, True) for p in vx["peers"] for dst in p["routes"]}
    if have != expected_routes:
        problems.append(f"vxlan routes {have}, the plan's {expected_routes}")
    return problems


BIRD_ROUTE = re.compile(r"^(\d+\.\d+\.\d+\.\d+/\d+)\s+unicast\s+\[(\S+)", re.M)
NEXT_HOP = re.compile(r"BGP\.next_hop:\s*(\S+)")


def bird(plan: Plan, node: str, *command: str) -> Evidence:
    return run(node, "birdc", "-s", plan.paths.bird_socket, *command)


def learned_routes(plan: Plan, node: str) -> tuple[dict[str, str], Evidence]:
    """{prefix: BGP next hop} of the routes BIRD learnt over BGP on the node."""
    shown = bird(plan, node, "show", "route", "where", "source", "=", "RTS_BGP", "all")
    learned: dict[str, str] = {}
    for block in re.split(r"\n(?=\d+\.\d+\.\d+\.\d+/\d+)", shown.stdout):
        prefix, hop = BIRD_ROUTE.search(block), NEXT_HOP.search(block)
        if prefix and hop:
            learned[prefix.group(1)] = hop.group(1)
    return learned, shown


def _bgp_problems(plan: Plan, node: str, bgp: dict[str, Any]) -> list[str]:
    problems = []
    active = run(node, "systemctl", "is-active", "podnet-bird.service")
    if active.stdout.strip() != "active":
        return [f"podnet-bird.service is {active.stdout.strip()}{active}"]
    shown = bird(plan, node, "show", "protocols")
    states = {m.group(1): m.group(2) for m in re.finditer(
        r"^(\S+)\s+BGP\s+\S+\s+\S+\s+\S+\s+(\S+)", shown.stdout, re.M)}
    expected_sessions = {p["protocol"]: "Established" for p in bgp["neighbors"] + bgp["routers"]}
    if states != expected_sessions:
        problems.append(f"BGP sessions {states}, expected {expected_sessions}{shown}")
    learned, evidence = learned_routes(plan, node)
    others = {dst: n.address for n in plan.nodes if n.name != node
              for dst in backends.node_prefixes(plan, n)}
    if learned != others:
        problems.append(f"BGP routes learnt (prefix: next hop) {learned}, the plan's {others}"
                        f"{evidence}")
    installed = set(pod_routes(plan, node, "12"))
    if installed != set(others):
        problems.append(f"routes BIRD installed (protocol 12) {sorted(installed)}, the plan's "
                        f"{sorted(others)}")
    return problems


def residue(plan: Plan, node: str) -> list[str]:
    """What the backends the node does not run left on it (empty: nothing)."""
    backend = plan.settings.backend
    left: list[str] = []
    if backend != "vxlan":
        left += [f"VXLAN device {link['ifname']}" for link in _json(
            run(node, "ip", "-j", "link", "show", "type", "vxlan"))
            if str(link["ifname"]).startswith(backends.VXLAN_DEVICE_PREFIX)]
    if backend != "bgp":
        left += [f"route {dst} (protocol 12, BIRD's)" for dst in pod_routes(plan, node, "12")]
        state = run(node, "systemctl", "is-active", "podnet-bird.service").stdout.strip()
        if state not in ("inactive", "unknown"):
            left.append(f"podnet-bird.service is {state}")
        for path in (plan.paths.bgp_dir, "/etc/systemd/system/podnet-bird.service"):
            if run(node, "test", "-e", path).rc == 0:
                left.append(f"{path} exists")
    else:
        left += [f"route {dst} (protocol 152, podnet-routes')"
                 for dst in pod_routes(plan, node, "152")]
    return left


def pods_between(plan: Plan, a: str, b: str) -> tuple[str, str]:
    """A test-server pod on node a and one on node b."""
    def on(node: str) -> str:
        return next(p.key for p in plan.pods if p.node == node and http_port(p.key)
                    and p.key in running())
    return on(a), on(b)


def capture(plan: Plan, client: str, target: str, vxlan_port: int | None) -> Evidence:
    """tcpdump on the client pod's node's underlay interface while the client pod connects to
    the target pod: VXLAN decoded on ``vxlan_port`` (UDP to the target's node: other pods'
    packets may be there too), else the packets between the two pod addresses."""
    node = plan.pod(client).node
    far = plan.node(plan.pod(target).node).address
    iface, _ = underlay_interface(node, plan.node(node).address)
    src, dst = running()[client]["ip"], running()[target]["ip"]
    expression = (["-T", "vxlan", "udp", "port", str(vxlan_port), "and", "dst", "host", far]
                  if vxlan_port else ["src", "host", src, "and", "dst", "host", dst])
    run(node, "rm", "-f", CAPTURE)
    started = run(node, "systemd-run", "--unit", "podnet-verify-capture", "--collect",
                  "-p", f"StandardOutput=file:{CAPTURE}", "timeout", "15", "tcpdump", "-i",
                  iface, "-n", "-l", "-c", "1000", *expression)
    assert started.rc == 0, started
    time.sleep(1.0)  # tcpdump's socket open before the first packet
    try:
        hello = in_pod(client, "curl", "-s", "--max-time", "5",
                       f"http://{dst}:{http_port(target)}/hostname")
        assert hello.rc == 0, hello
        time.sleep(0.5)  # the last packets printed (tcpdump -l: a line each)
    finally:
        run(node, "systemctl", "stop", "podnet-verify-capture")
    return run(node, "cat", CAPTURE)
