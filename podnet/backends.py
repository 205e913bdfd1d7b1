"""How pod traffic crosses nodes: the routing backends, and what each node keeps for one.

Three backends share one pod network (a bridge and a pod CIDR per node, docs/design.md):

- ``host-gw`` (Flannel's host-gw, Kubernetes The Hard Way): a route per other node's pod CIDR
  via that node's underlay address. Every node must share one layer-2 segment: the next hop is
  the node itself.
- ``vxlan`` (Flannel's vxlan): a kernel VXLAN device per node (VNI 1, UDP 8472 by default), its
  address the network address of the node's pod CIDR (the node's VTEP), and for every other
  node a forwarding entry (its VTEP MAC -> its underlay address), a permanent neighbour entry
  (its VTEP address -> its VTEP MAC) and a route to its pod CIDR via its VTEP address, on link.
  No multicast and no learning: everything comes from the plan, so the underlay only has to
  route UDP between the nodes. Pods get an MTU 50 bytes lower (the outer IPv4, UDP, VXLAN and
  Ethernet headers).
- ``bgp`` (Calico's model): BIRD 2 on every node, iBGP between the nodes (a full mesh, or
  through route reflectors), each node announcing its pod CIDR with itself as the next hop;
  BIRD installs what it learns with its own routing protocol number (12, "bird").

Every backend's node state is derived here from the plan; the pod_network role only prints it
(routes.conf for podnet-routes, bird.conf for BIRD).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

from podnet.plan import NodePlan, Plan
from podnet.settings import BACKENDS

# bytes VXLAN adds around a pod's packet: outer IPv4 (20), UDP (8), VXLAN (8), inner Ethernet (14)
VXLAN_OVERHEAD = 50
# the VXLAN device is named "<prefix><VNI>" (Flannel: flannel.<VNI>); podnet-routes removes a
# VXLAN device of this prefix that the file no longer names (a backend or VNI change)
VXLAN_DEVICE_PREFIX = "podnet."
# BIRD's route reflectors share one cluster id, so that two reflectors do not reflect each
# other's routes back (RFC 4456); Calico's examples use this one
BGP_RR_CLUSTER_ID = "244.0.0.1"


def servable(plan: Plan) -> list[str]:
    """The backends that can serve the plan's nodes: host-gw only when every node is on the
    underlay (settings.read_hosts refuses it otherwise, naming the node)."""
    underlay = plan.settings.underlay_cidr
    on_segment = all(IPv4Address(n.address) in underlay for n in plan.nodes)
    return [b for b in BACKENDS if b != "host-gw" or on_segment]


def vtep_address(node: NodePlan) -> str:
    """A node's VXLAN address: its pod CIDR's network address, as Flannel gives flannel.1."""
    return str(IPv4Network(node.pod_cidr).network_address)


def vtep_mac(node: NodePlan) -> str:
    """A node's VXLAN device MAC, fixed by its VTEP address: a locally administered unicast
    0a:59 followed by the address's four bytes (cni0's are 0a:58 and the gateway's)."""
    raw = IPv4Address(vtep_address(node)).packed
    return ":".join(f"{b:02x}" for b in (0x0A, 0x59, *raw))


def vxlan_device(vni: int) -> str:
    return f"{VXLAN_DEVICE_PREFIX}{vni}"


def mtu_overhead(backend: str) -> int:
    """Bytes a pod's MTU gives up to the backend's encapsulation."""
    return VXLAN_OVERHEAD if backend == "vxlan" else 0


def remote_source(plan: Plan, name: str) -> str:
    """The source address a node gives what it masquerades (a NodePort's client, say) toward a
    pod on another node: the address of the interface the packet leaves by, the node's own on
    the underlay, or with vxlan its VTEP address (as Flannel's flannel.1 does)."""
    node = plan.node(name)
    return vtep_address(node) if plan.settings.backend == "vxlan" else node.address


def _peers(plan: Plan, node: NodePlan) -> list[NodePlan]:
    return [n for n in plan.nodes if n.name != node.name]


def bgp_neighbors(plan: Plan, node: NodePlan) -> list[dict[str, Any]]:
    """Whom ``node`` peers with: every other node (a full mesh); with route reflectors, a
    reflector peers with every other node (the others as its clients) and any other node
    with the reflectors only."""
    reflectors = plan.settings.bgp_route_reflectors
    out = []
    for peer in _peers(plan, node):
        if reflectors and node.name not in reflectors and peer.name not in reflectors:
            continue  # two clients: their routes reach each other through a reflector
        client = bool(reflectors) and node.name in reflectors and peer.name not in reflectors
        out.append({"name": peer.name, "address": peer.address, "rr_client": client,
                    "protocol": bgp_protocol(peer.name)})
    return out


def bgp_protocol(node: str) -> str:
    """The name of BIRD's session with ``node`` (a BIRD symbol: a letter first, no '-')."""
    return "peer_" + node.replace("-", "_")


def node_prefixes(plan: Plan, node: NodePlan) -> list[str]:
    """What the other nodes route to ``node``: its pod CIDR, and a /32 for each pod on it that
    keeps its address on any node (the /32 follows the pod; the longest prefix wins over the
    stable block, which no node routes as a whole)."""
    return [node.pod_cidr, *(f"{p.stable_ip}/32" for p in plan.stable_pods_on(node.name))]


def node_routing(plan: Plan, name: str) -> dict[str, Any]:
    """Everything the pod_network role writes on node ``name`` for the plan's backend."""
    settings = plan.settings
    node = plan.node(name)
    backend = settings.backend
    routes: list[dict[str, str]] = []
    vxlan = None
    bgp = None
    if backend == "host-gw":
        routes = [{"dst": dst, "via": p.address, "node": p.name}
                  for p in _peers(plan, node) for dst in node_prefixes(plan, p)]
    elif backend == "vxlan":
        vxlan = {
            "device": vxlan_device(settings.vxlan_vni), "vni": settings.vxlan_vni,
            "port": settings.vxlan_port, "local": node.address, "address": vtep_address(node),
            "mac": vtep_mac(node), "overhead": VXLAN_OVERHEAD,
            "peers": [{"node": p.name, "routes": node_prefixes(plan, p), "vtep": vtep_address(p),
                       "mac": vtep_mac(p), "underlay": p.address} for p in _peers(plan, node)],
        }
    else:
        reflectors = settings.bgp_route_reflectors
        bgp = {
            "as": settings.bgp_as, "router_id": node.address,
            "announce": node_prefixes(plan, node),
            "route_reflector": node.name in reflectors, "cluster_id": BGP_RR_CLUSTER_ID,
            "neighbors": bgp_neighbors(plan, node),
            # routers (podnet_bgp_peers) learn what the node announces; they announce nothing back
            "routers": [{**peer, "protocol": "router_" + peer["address"].replace(".", "_"),
                         "ibgp": peer["as"] == settings.bgp_as} for peer in node.bgp_peers],
        }
    return {
        "backend": backend, "node": node.name, "address": node.address,
        "service_cidr": str(settings.service_cidr), "routes": routes, "vxlan": vxlan,
        "bgp": bgp, "mtu_overhead": mtu_overhead(backend),
    }
