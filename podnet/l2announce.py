"""l2 mode on one node: what its keepalived announces (the l2_announce role's input).

podnet/loadbalancer.py decides everything cluster-wide (per LoadBalancer address: its VRRP id,
its health check, the nodes' rendezvous ranking); this turns that into one node's keepalived
instances, so that the template only prints:

- one VRRP instance per address, virtual_router_id = the address's ``vrid``, the address as a
  /32 on the node's underlay interface;
- the priority from the node's place in the address's ranking: the first node gets
  ``TOP_PRIORITY``, each next one ``priority_step`` less, so every node agrees on the order
  without talking (255 is VRRP's "address owner" and is never used, so a node that comes back
  takes its addresses by preemption, not by owning them). The step is as wide as the nodes
  allow (at most ``MAX_STEP``): a backup waits 3 adverts plus a skew of (256 - priority) / 256
  adverts before it takes over, so with sub-second adverts priorities one point apart differ by
  under a millisecond and every backup takes the address at once (a brief dual master, seen on
  the lab); 50 points apart, the next-ranked node is 40 ms ahead of the one after it at an
  advert of 0.2 s, and its advert arrives in time;
- unicast adverts to the other nodes (clouds and many switches drop multicast, and unicast
  keeps the adverts off every other host of the segment);
- a health check per address: kube-proxy's node server (/healthz on 10256) for policy Cluster,
  the Service's healthCheckNodePort for policy Local, so that with Local only a node with a
  ready local endpoint announces. A node failing it leaves the address (VRRP FAULT): when no
  node passes, nobody announces it, as MetalLB does (a node would drop the traffic anyway).
"""

from __future__ import annotations

import re
from ipaddress import ip_address, ip_network
from typing import Any

TOP_PRIORITY = 254  # VRRP priorities are 1-254 for backups; 255 means "owns the address"
MAX_STEP = 50
VRID_RANGE = range(1, 256)


def instance_name(address: str) -> str:
    """keepalived's name for the instance (and its check) of ``address``."""
    return "podnet_lb_" + address.replace(".", "_")


def priority_step(nodes: int) -> int:
    """Points between two places of a ranking of ``nodes`` nodes (the last one stays >= 1)."""
    return MAX_STEP if nodes < 2 else max(1, min(MAX_STEP, (TOP_PRIORITY - 1) // (nodes - 1)))


def node_config(lb: dict[str, Any], node: str) -> dict[str, Any]:
    """What keepalived on ``node`` announces, from ``lb`` (loadbalancer.config's answer).

    ``enabled`` is false when the mode is not l2, the node is not one of the cluster's nodes or
    there is no LoadBalancer address: the role then stops keepalived and removes its config.
    ValueError names the field and the fix."""
    nodes = {n["name"]: n["address"] for n in lb["nodes"]}
    if node not in nodes:
        return {"enabled": False, "node": node, "address": None, "peers": [], "instances": [],
                "pool": lb.get("pool")}
    if len(nodes) > TOP_PRIORITY:
        raise ValueError(f"l2 mode: {len(nodes)} nodes, but VRRP priorities give at most "
                         f"{TOP_PRIORITY} nodes a place per address; use podnet_lb_mode cloud")
    step = priority_step(len(nodes))
    peers = [address for name, address in nodes.items() if name != node]
    instances = []
    for a in lb["addresses"]:
        if a["vrid"] not in VRID_RANGE:
            raise ValueError(f"l2 mode: {a['service']} address {a['address']}: VRRP id "
                             f"{a['vrid']} is outside 1-255 (its place in podnet_lb_pool): "
                             "give podnet_lb_pool a /24 or smaller")
        if node not in a["ranking"]:
            raise ValueError(f"l2 mode: {a['service']} address {a['address']}: node {node} "
                             "is not in its ranking; the plan is stale: run the cluster_model "
                             "role again")
        rank = a["ranking"].index(node)
        instances.append({
            "name": instance_name(a["address"]),
            "address": a["address"],
            "service": a["service"],
            "policy": a["policy"],
            "vrid": a["vrid"],
            "rank": rank,
            "priority": TOP_PRIORITY - rank * step,
            "check": {"port": a["check"]["port"], "path": a["check"]["path"]},
        })
    return {
        "enabled": lb["mode"] == "l2" and bool(instances),
        "node": node,
        "address": nodes[node],
        "peers": peers,
        "instances": instances,
        "pool": lb.get("pool"),
    }


def stray_addresses(lb: dict[str, Any], interface_json: list[dict[str, Any]]) -> list[str]:
    """The LoadBalancer addresses (/32s in podnet_lb_pool) that ``ip -j -4 addr show dev
    <underlay>`` lists: what a node must not keep when keepalived is not announcing there
    (keepalived removes its addresses when it stops; this catches one that was killed)."""
    if not lb.get("pool"):
        return []
    pool = ip_network(lb["pool"])
    found = []
    for link in interface_json:
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and a.get("prefixlen") == 32 \
                    and ip_address(a["local"]) in pool:
                found.append(a["local"])
    return sorted(set(found), key=ip_address)


def _value(body: str, key: str) -> str | None:
    hit = re.search(rf"^\s+{key} (.+)$", body, re.M)
    return hit.group(1).strip() if hit else None


def _items(body: str, key: str) -> list[str]:
    hit = re.search(rf"^\s+{key} \{{\n(.*?)\n\s+\}}", body, re.M | re.S)
    return [x.strip() for x in hit.group(1).splitlines()] if hit else []


def read_instances(text: str) -> dict[str, dict[str, Any]]:
    """keepalived's VRRP instances and their checks as a keepalived.conf written from
    ``node_config`` holds them, by instance name: what the tests and verify compare with
    ``node_config`` (the file read back, not a second rendering)."""
    scripts = dict(re.findall(r"^vrrp_script (\S+) \{\n(.*?)^\}", text, re.M | re.S))
    found = {}
    for name, body in re.findall(r"^vrrp_instance (\S+) \{\n(.*?)^\}", text, re.M | re.S):
        tracked = _items(body, "track_script")
        script = scripts.get(tracked[0], "") if len(tracked) == 1 else ""
        found[name] = {
            "state": _value(body, "state"), "interface": _value(body, "interface"),
            "vrid": _value(body, "virtual_router_id"), "priority": _value(body, "priority"),
            "advert_int": _value(body, "advert_int"), "src": _value(body, "unicast_src_ip"),
            "peers": sorted(_items(body, "unicast_peer")),
            "addresses": _items(body, "virtual_ipaddress"),
            "track": tracked, "check": (_value(script, "script") or "").strip('"'),
            "nopreempt": bool(re.search(r"^\s+nopreempt$", body, re.M)),
        }
    return found


def expected_instances(node: dict[str, Any], interface: str,
                       check_tool: str) -> dict[str, dict[str, Any]]:
    """What ``read_instances`` must find in ``node``'s (node_config's) keepalived.conf."""
    return {i["name"]: {
        "vrid": str(i["vrid"]), "priority": str(i["priority"]), "src": node["address"],
        "peers": sorted(node["peers"]), "addresses": [f"{i['address']}/32 dev {interface}"],
        "interface": interface, "track": [i["name"]], "state": "BACKUP", "nopreempt": False,
        "check": f"{check_tool} {i['check']['port']} {i['check']['path']}"}
        for i in node["instances"]}
