"""IPv4 address arithmetic for the cluster plan: subnets per node, service ranges, DNS names.

Pure functions over :mod:`ipaddress`; the property tests in tests/test_addresses.py cover them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network


def parse_network(text: object) -> IPv4Network:
    """An IPv4 network in CIDR form whose host bits are zero; ValueError says why not."""
    if not isinstance(text, str) or "/" not in text:
        raise ValueError(f"'{text}' is not in CIDR form (like 10.244.0.0/16)")
    try:
        net = ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"'{text}' is not a network address: {exc}") from None
    if not isinstance(net, IPv4Network):
        raise ValueError(f"'{text}' is IPv6; podnet plans IPv4 networks only")
    return net


def parse_address(text: object) -> IPv4Address:
    try:
        addr = ip_address(str(text))
    except ValueError:
        raise ValueError(f"'{text}' is not an IP address") from None
    if not isinstance(addr, IPv4Address):
        raise ValueError(f"'{text}' is IPv6; podnet plans IPv4 networks only")
    return addr


def subnet_count(parent: IPv4Network, prefix: int) -> int:
    """How many /prefix subnets ``parent`` holds (0 when prefix is shorter than parent's)."""
    if prefix < parent.prefixlen or prefix > 32:
        return 0
    return 1 << (prefix - parent.prefixlen)


def nth_subnet(parent: IPv4Network, prefix: int, index: int) -> IPv4Network:
    """The index-th /prefix subnet of ``parent``, counting from 0."""
    count = subnet_count(parent, prefix)
    if not 0 <= index < count:
        raise IndexError(f"{parent} has {count} /{prefix} subnets, not {index + 1}")
    base = int(parent.network_address) + (index << (32 - prefix))
    return IPv4Network((base, prefix))


def subnet_index(parent: IPv4Network, subnet: IPv4Network) -> int:
    """Inverse of :func:`nth_subnet`."""
    if not subnet.subnet_of(parent):
        raise ValueError(f"{subnet} is not inside {parent}")
    return (int(subnet.network_address) - int(parent.network_address)) >> (
        32 - subnet.prefixlen
    )


def gateway(pod_cidr: IPv4Network) -> IPv4Address:
    """The bridge's address in a node's pod CIDR: its first host address."""
    return pod_cidr.network_address + 1


def host_range(net: IPv4Network) -> tuple[int, int]:
    """First and last usable host address of ``net`` as integers (the whole /31, /32)."""
    if net.prefixlen >= 31:
        return int(net.network_address), int(net.broadcast_address)
    return int(net.network_address) + 1, int(net.broadcast_address) - 1


def dashed(ip: IPv4Address | str) -> str:
    """10.244.1.5 -> 10-244-1-5, the form of pod and headless endpoint DNS names."""
    return str(ip).replace(".", "-")


def reverse_name(ip: IPv4Address | str) -> str:
    """10.96.0.10 -> 10.0.96.10.in-addr.arpa (no trailing dot)."""
    return ".".join(reversed(str(ip).split("."))) + ".in-addr.arpa"


def stable_hash(key: str) -> int:
    """A hash of ``key`` that is the same on every run and machine (unlike hash())."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def probe(preferred: int, size: int, is_free: Callable[[int], bool]) -> int | None:
    """The first free slot at or after ``preferred`` (wrapping), or None if all are taken."""
    for step in range(size):
        slot = (preferred + step) % size
        if is_free(slot):
            return slot
    return None


# Addresses reserved for documentation (RFC 5737, RFC 3849): never a real host's. The example
# inventory for real VMs uses them, so that running it before its addresses are yours reaches
# nothing, and podnet refuses to try (placeholder_hosts).
DOCUMENTATION_NETWORKS = tuple(ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))


def is_documentation(text: object) -> bool:
    """Whether ``text`` is an address in a documentation range (False for a name)."""
    try:
        address = ip_address(str(text))
    except ValueError:
        return False
    return any(address in net for net in DOCUMENTATION_NETWORKS if net.version == address.version)


def placeholder_hosts(addresses: dict[str, object]) -> list[str]:
    """``host (address)`` for every host whose address (ansible_host, else its name) is a
    documentation placeholder, in the order given."""
    return [f"{name} ({address})" for name, address in addresses.items()
            if is_documentation(address)]
