"""kube-proxy's iptables chain names (pkg/proxy/iptables/proxier.go), computed the same way.

The hash is over ``ServicePortName.String() + protocol`` where the name prints as ``ns/name``
plus ``:port-name`` when the port has a name, and the protocol is lower case; endpoint chains
also append ``ip:port``. The first 16 characters of the base32 of the sha256 follow the prefix.
"""

from __future__ import annotations

import base64
import hashlib

# kube-proxy's node health server (--healthz-bind-address, 0.0.0.0:10256): /healthz and /livez,
# what a cloud load balancer checks for externalTrafficPolicy Cluster (podnet-proxy-health)
HEALTHZ_PORT = 10256
# where other nodes' podnet-endpoints send their heartbeats (any answer: the node is alive)
LIVEZ_PATH = "/livez"
# podnet's own path on that server: the addresses of the pods running on the node (the fence of
# pods that keep their address, podnet-cni)
PODS_PATH = "/podnet/pods"

PREFIXES = {
    "svc": "KUBE-SVC-",
    "svl": "KUBE-SVL-",
    "ext": "KUBE-EXT-",
    "fw": "KUBE-FW-",
}


def service_port_name(namespace: str, name: str, port_name: str) -> str:
    """ServicePortName.String(): "ns/svc:port" or "ns/svc" for an unnamed port."""
    return f"{namespace}/{name}:{port_name}" if port_name else f"{namespace}/{name}"


def _hash16(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def port_proto_hash(namespace: str, name: str, port_name: str, protocol: str) -> str:
    return _hash16(service_port_name(namespace, name, port_name) + protocol.lower())


def chains(namespace: str, name: str, port_name: str, protocol: str) -> dict[str, str]:
    """KUBE-SVC/SVL/EXT/FW chain names of one service port."""
    base = port_proto_hash(namespace, name, port_name, protocol)
    return {kind: prefix + base for kind, prefix in PREFIXES.items()}


def endpoint_chain(namespace: str, name: str, port_name: str, protocol: str,
                   ip: str, port: int) -> str:
    """KUBE-SEP-... of one endpoint (ip:port) of a service port."""
    text = service_port_name(namespace, name, port_name) + protocol.lower() + f"{ip}:{port}"
    return "KUBE-SEP-" + _hash16(text)
