"""Allocation of node pod CIDRs, ClusterIPs, NodePorts and LoadBalancer IPs, kept stable.

What is given is honoured; the rest is allocated so that adding or removing another object never
renumbers an existing one. That takes memory, as Kubernetes keeps it in etcd: the allocation
record (``allocations.json`` in ``podnet_state_dir`` on the controller, written by the first play
of site.yml). An entry of the record is kept while its object exists and the entry is still
valid; entries of removed objects are released.

Without a record, allocation is still deterministic: ClusterIPs and NodePorts start at a slot
chosen by a hash of the object's name inside Kubernetes' dynamic band (KEP-3070: the range's
first ``min(max(16, size/16), 256)`` ClusterIPs and ``min(max(16, size/32), 128)`` NodePorts are
left for explicit requests), and probe upwards; node CIDRs and LoadBalancer IPs take the first
free slot in inventory / manifest order.

Each range is an :class:`Allocator`, modelled on Kubernetes' ipallocator and portallocator: it
knows its slots, values, holders and the record's holds, and answers a request with a typed
outcome (:class:`NotInRange`, :class:`Reserved`, :class:`Allocated`, :class:`HeldByRecord`,
:class:`Full`). It never words a message: the model knows which field asked and says what to fix.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from typing import Any, Generic, TypeVar

from podnet.addresses import host_range, nth_subnet, probe, stable_hash, subnet_count, subnet_index
from podnet.problems import Problems

RECORD_VERSION = 1
RECORD_FILE = "allocations.json"
SECTIONS = ("node_cidrs", "cluster_ips", "node_ports", "health_check_node_ports", "lb_ips",
            "pods", "pod_ips")


@dataclass
class Record:
    """What was allocated last time; the JSON in ``<podnet_state_dir>/allocations.json``."""

    node_cidrs: dict[str, str] = field(default_factory=dict)  # node -> CIDR
    cluster_ips: dict[str, str] = field(default_factory=dict)  # ns/name -> IP
    node_ports: dict[str, int] = field(default_factory=dict)  # ns/name:port/PROTO -> port
    health_check_node_ports: dict[str, int] = field(default_factory=dict)  # ns/name -> port
    lb_ips: dict[str, str] = field(default_factory=dict)  # ns/name -> IP
    pods: dict[str, str] = field(default_factory=dict)  # ns/pod -> node
    # stable pods' addresses: ns/pod (a bare Pod) or ns/deployment/index (a replica) -> IP
    pod_ips: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": RECORD_VERSION}
        for name in SECTIONS:
            out[name] = dict(sorted(getattr(self, name).items()))
        return out

    def dumps(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str, problems: Problems) -> Record:
        """A record from JSON data; a damaged record is an error (it would renumber things)."""
        fix = ("restore the file from a backup, or delete it to allocate everything anew "
               "(which may renumber Services and move pods)")
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            problems.error(where, "allocation record", "version",
                           f"is not a version {RECORD_VERSION} podnet allocation record", fix)
            return cls()
        record = cls()
        for name in SECTIONS:
            section = data.get(name, {})
            want: type = int if name in ("node_ports", "health_check_node_ports") else str
            if not isinstance(section, dict) or not all(
                isinstance(k, str) and isinstance(v, want) and not isinstance(v, bool)
                for k, v in section.items()
            ):
                problems.error(where, "allocation record", name,
                               f"must map names to {want.__name__} values", fix)
                continue
            setattr(record, name, dict(section))
        return record

    @classmethod
    def loads(cls, text: str, where: str, problems: Problems) -> Record:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.error(where, "allocation record", "", f"is not JSON: {exc}",
                           "restore the file or delete it to allocate everything anew")
            return cls()
        return cls.from_dict(data, where, problems)


def band_offset(size: int, minimum: int, maximum: int, step: int) -> int:
    """KEP-3070's static band: the first ``offset`` slots are preferred for explicit requests."""
    if size <= minimum:
        return 0
    return min(max(minimum, size // step), maximum)


class Pool:
    """Slots 0..size-1 of a range; ``claim`` records who holds which slot."""

    def __init__(self, size: int, static_band: int = 0) -> None:
        self.size = size
        self.static_band = static_band
        self.holders: dict[int, str] = {}

    def holder(self, slot: int) -> str | None:
        return self.holders.get(slot)

    def claim(self, slot: int, who: str) -> None:
        self.holders[slot] = who

    def free(self, slot: int) -> bool:
        return 0 <= slot < self.size and slot not in self.holders

    def hashed(self, key: str) -> int | None:
        """A free slot for ``key``: hashed into the dynamic band, then any free slot."""
        dynamic = self.size - self.static_band
        if dynamic > 0:
            start = self.static_band + stable_hash(key) % dynamic
            slot = probe(start - self.static_band, dynamic,
                         lambda s: self.free(self.static_band + s))
            if slot is not None:
                return self.static_band + slot
        return probe(0, self.size, self.free)

    def first_free(self) -> int | None:
        return probe(0, self.size, self.free)


# -- what a request is answered with ---------------------------------------------------------------
Value = int | IPv4Address | IPv6Address | IPv4Network


@dataclass(frozen=True)
class NotInRange:
    """The value lies outside the range (for an address range: or is not an address of it)."""

    value: Value


@dataclass(frozen=True)
class Reserved:
    """The value is set aside for ``what`` (a DNS address, a host), not for this owner."""

    value: Value
    what: str


@dataclass(frozen=True)
class Allocated:
    """Another owner was given the value in this plan."""

    value: Value
    holder: str


@dataclass(frozen=True)
class HeldByRecord:
    """The allocation record keeps the value for ``holder``, who still wants it."""

    value: Value
    holder: str


@dataclass(frozen=True)
class Full:
    """No free value is left; ``usable`` is how many the range has beside its reserved ones."""

    usable: int


Refusal = NotInRange | Reserved | Allocated | HeldByRecord | Full

V = TypeVar("V", bound=Value)


@dataclass(frozen=True)
class _Reservation:
    what: str
    owner: str | None  # who may still take it (the kube-dns Service its address), or nobody


class Allocator(ABC, Generic[V]):
    """Values of one range, each given to one owner; a subclass maps values to slots.

    An owner may ask again for a value it holds (ports of one Service with the same number share
    one NodePort). With ``static_band`` None, ``allocate_next`` takes the first free value in
    request order; with a number, it hashes the key into the slots above that band (KEP-3070).
    """

    def __init__(self, size: int, static_band: int | None = None) -> None:
        self.pool = Pool(size, static_band or 0)
        self.hashed = static_band is not None
        self.reserved: dict[int, _Reservation] = {}
        self.record_holds: dict[int, str] = {}

    @abstractmethod
    def slot(self, value: V) -> int | None:
        """The value's slot, or None when it lies outside the range."""

    @abstractmethod
    def value(self, slot: int) -> V:
        """The value of a slot."""

    @abstractmethod
    def parse(self, recorded: str | int) -> V | None:
        """A value as the allocation record writes it; None when it is not one."""

    @property
    def usable(self) -> int:
        return self.pool.size - len(self.reserved)

    def reserve(self, value: V, what: str, owner: str | None = None) -> None:
        """Set ``value`` aside for ``what``; only ``owner`` may still take it. A value outside
        the range needs no reserving and is passed over."""
        slot = self.slot(value)
        if slot is not None:
            self.reserved[slot] = _Reservation(what, owner)
            self.pool.claim(slot, owner if owner is not None else what)

    def hold(self, recorded: str | int, holder: str) -> None:
        """The record keeps ``recorded`` for ``holder``: nobody else may ask for it by value.
        A value the record gives twice stays with the first holder; a value not in the range
        holds nothing."""
        value = self.parse(recorded)
        slot = None if value is None else self.slot(value)
        if slot is not None:
            self.record_holds.setdefault(slot, holder)

    def allocate(self, value: V, owner: str) -> Refusal | None:
        """Give ``value`` to ``owner``, or say why not (None: given). The checks run in the order
        Kubernetes' allocators run them: range, reservation, this plan's holders, the record."""
        slot = self.slot(value)
        if slot is None:
            return NotInRange(value)
        reservation = self.reserved.get(slot)
        if reservation is not None and reservation.owner != owner:
            return Reserved(value, reservation.what)
        holder = self.pool.holder(slot)
        if holder is not None and holder != owner:
            return Allocated(value, holder)
        held = self.record_holds.get(slot)
        if held is not None and held != owner:
            return HeldByRecord(value, held)
        self.pool.claim(slot, owner)
        return None

    def keep(self, recorded: str | int, owner: str) -> V | None:
        """Give ``owner`` the value the record had for it again, if that is still in the range
        and nobody else took it; None when it must be allocated anew. Record holds do not stop
        it: they are the record's own entries."""
        value = self.parse(recorded)
        slot = None if value is None else self.slot(value)
        if slot is None:
            return None
        reservation = self.reserved.get(slot)
        holder = self.pool.holder(slot)
        if (reservation is not None and reservation.owner != owner) or holder not in (None,
                                                                                      owner):
            return None
        self.pool.claim(slot, owner)
        return self.value(slot)

    def allocate_next(self, key: str, owner: str) -> V | Full:
        """A free value for ``owner``: hashed by ``key`` into the dynamic band, or the first free
        one (see the class)."""
        slot = self.pool.hashed(key) if self.hashed else self.pool.first_free()
        if slot is None:
            return Full(self.usable)
        self.pool.claim(slot, owner)
        return self.value(slot)

    def keep_or_allocate(self, keys: Iterable[str], previous: Mapping[str, str | int],
                         ) -> dict[str, V | Full]:
        """A value for each of ``keys`` (each its own owner), in their order: first every
        recorded value still free, then new ones, so a new key never takes the value an older
        one had; :class:`Full` for a key the range has none left for."""
        keys = list(keys)
        kept: dict[str, V] = {}
        for key in keys:
            if key in previous:
                value = self.keep(previous[key], key)
                if value is not None:
                    kept[key] = value
        return {key: kept[key] if key in kept else self.allocate_next(key, key) for key in keys}


class AddressRange(Allocator[IPv4Address | IPv6Address]):
    """Addresses ``first``..``last``; an IPv6 address is never in range."""

    def __init__(self, first: IPv4Address, last: IPv4Address,
                 static_band: int | None = None) -> None:
        self.first = int(first)
        super().__init__(int(last) - self.first + 1, static_band)

    def slot(self, value: IPv4Address | IPv6Address) -> int | None:
        slot = int(value) - self.first
        return slot if isinstance(value, IPv4Address) and 0 <= slot < self.pool.size else None

    def value(self, slot: int) -> IPv4Address:
        return IPv4Address(self.first + slot)

    def parse(self, recorded: str | int) -> IPv4Address | IPv6Address | None:
        try:
            return ip_address(str(recorded))
        except ValueError:
            return None


class PortRange(Allocator[int]):
    def __init__(self, low: int, high: int, static_band: int | None = None) -> None:
        self.low = low
        super().__init__(high - low + 1, static_band)

    def slot(self, value: int) -> int | None:
        slot = value - self.low
        return slot if 0 <= slot < self.pool.size else None

    def value(self, slot: int) -> int:
        return self.low + slot

    def parse(self, recorded: str | int) -> int | None:
        return recorded if isinstance(recorded, int) else None


class SubnetRange(Allocator[IPv4Network]):
    """The /``prefix`` subnets of ``parent``."""

    def __init__(self, parent: IPv4Network, prefix: int) -> None:
        self.parent, self.prefix = parent, prefix
        super().__init__(subnet_count(parent, prefix))

    def slot(self, value: IPv4Network) -> int | None:
        if value.prefixlen != self.prefix or not value.subnet_of(self.parent):
            return None
        return subnet_index(self.parent, value)

    def value(self, slot: int) -> IPv4Network:
        return nth_subnet(self.parent, self.prefix, slot)

    def parse(self, recorded: str | int) -> IPv4Network | None:
        try:
            return IPv4Network(recorded) if isinstance(recorded, str) else None
        except ValueError:
            return None


# -- the ranges of a cluster, each with its way of choosing --------------------------------------
def pod_cidrs(cluster: IPv4Network, prefix: int) -> SubnetRange:
    """Node pod CIDRs: the first free one, in inventory order."""
    return SubnetRange(cluster, prefix)


def cluster_ips(service_cidr: IPv4Network) -> AddressRange:
    """ClusterIPs: the host addresses of the service CIDR, hashed above KEP-3070's static band
    of ``min(max(16, size/16), 256)``."""
    first, last = host_range(service_cidr)
    size = last - first + 1
    return AddressRange(IPv4Address(first), IPv4Address(last), band_offset(size, 16, 256, 16))


def node_ports(low: int, high: int) -> PortRange:
    """NodePorts: hashed above a static band of ``min(max(16, size/32), 128)`` ports."""
    return PortRange(low, high, band_offset(high - low + 1, 16, 128, 32))


def stable_pod_ips(block: IPv4Network) -> AddressRange:
    """Addresses of pods that keep theirs on any node: the block's host addresses, the first free
    one in manifest order. Each is routed as a /32, but the network and broadcast addresses are
    left out all the same (a /24 block's .0 and .255 look wrong to people and some tools)."""
    first, last = host_range(block)
    return AddressRange(IPv4Address(first), IPv4Address(last))


def lb_ips(pool: IPv4Network) -> AddressRange:
    """LoadBalancer IPs: every address of the pool, the first free one in manifest order."""
    return AddressRange(pool.network_address, pool.broadcast_address)
