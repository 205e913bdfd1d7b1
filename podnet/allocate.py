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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from podnet.addresses import probe, stable_hash
from podnet.problems import Problems

RECORD_VERSION = 1
RECORD_FILE = "allocations.json"
SECTIONS = ("node_cidrs", "cluster_ips", "node_ports", "health_check_node_ports", "lb_ips",
            "pods")


@dataclass
class Record:
    """What was allocated last time; the JSON in ``<podnet_state_dir>/allocations.json``."""

    node_cidrs: dict[str, str] = field(default_factory=dict)  # node -> CIDR
    cluster_ips: dict[str, str] = field(default_factory=dict)  # ns/name -> IP
    node_ports: dict[str, int] = field(default_factory=dict)  # ns/name:port/PROTO -> port
    health_check_node_ports: dict[str, int] = field(default_factory=dict)  # ns/name -> port
    lb_ips: dict[str, str] = field(default_factory=dict)  # ns/name -> IP
    pods: dict[str, str] = field(default_factory=dict)  # ns/pod -> node

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

    @property
    def available(self) -> int:
        return self.size - len(self.holders)


def keep_or_allocate(
    keys: Iterable[str],
    previous: dict[str, Any],
    to_slot: Callable[[Any], int | None],
    pool: Pool,
    choose: Callable[[str], int | None],
) -> tuple[dict[str, int], list[str]]:
    """Slots for ``keys``: the previous one where it is still free, else ``choose``.

    Returns the slots and the keys for which no slot was left.
    """
    keys = list(keys)
    slots: dict[str, int] = {}
    for key in keys:
        if key in previous:
            slot = to_slot(previous[key])
            if slot is not None and pool.free(slot):
                pool.claim(slot, key)
                slots[key] = slot
    exhausted: list[str] = []
    for key in keys:
        if key in slots:
            continue
        slot = choose(key)
        if slot is None:
            exhausted.append(key)
            continue
        pool.claim(slot, key)
        slots[key] = slot
    return slots, exhausted
