"""The local lab: systemd-nspawn machines on an underlay bridge inside a lab-owned netns.

Everything here runs on the controller as root. Nothing touches the machine's own network
namespace: the underlay bridge, the nodes' veth peers and every address live inside the
network namespace ``/run/netns/<lab>``, which only the lab creates and removes.

Layout on disk (all removed by :func:`stop_node` / ``lab down`` except the image cache)::

    /run/netns/<lab>                         the lab's network namespace
    /run/netns/<lab>_rt                      the lab's router (only with lab_segments)
    <state_dir>/ssh/id_ed25519[.pub]         the lab's SSH key pair
    <state_dir>/known_hosts                  host keys the lab generated for its nodes
    <state_dir>/nodes/<host>/{upper,work}    the node's overlay layers
    <state_dir>/nodes/<host>/root            the node's root (overlay mount point)
    <state_dir>/nodes/<host>/nspawn.{pid,log}
    <state_dir>/mirror/<suite>               links to the package mirrors the lab serves
    <state_dir>/mirror.{pid,log}             the mirror's HTTP server (in the lab's netns)
    <state_dir>/mirror-<segment>.{pid,log}   the same mirror on an extra segment's address
    <state_dir>/router-bird.{conf,ctl,pid,log}  the router's BIRD (only with lab_router_bgp_as)
    /run/systemd/nspawn/propagate/<machine>  left by systemd-nspawn, removed on stop

Hosts are VM-shaped: they boot like a fresh cloud image (a minimal Debian with openssh-server,
sudo and python3, none of podnet's packages), with a login user that has passwordless sudo, no
root login, sshd on the inventory's port, the resolver the inventory names for them (a plain
resolv.conf or systemd-resolved's stub) and apt pointed at the lab's package mirror, served on
the underlay from this machine's cache (an air-gapped site's mirror). What a cloud's first boot
(cloud-init) does to an image is what :func:`_prepare_root` does to a node's overlay.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podnet.paths import PATHS

NETNS_DIR = Path(PATHS.netns_dir)  # iproute2's named namespaces, as on the nodes
NSPAWN_RUNTIME_DIRS = (
    Path("/run/systemd/nspawn/propagate"),
    Path("/run/systemd/nspawn/unix-export"),
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Under each cgroup hierarchy systemd-nspawn uses, every lab host gets a cgroup of its own,
# <hierarchy>/podnet-lab/<machine>. systemd-nspawn makes the container's cgroups (payload/,
# supervisor/) under the cgroup it starts in; started in a shared one (this machine's root
# cgroup, when its PID 1 is not systemd), every host's units would share one cgroup per unit
# name, and stopping a unit on one host would kill its namesake's processes on another.
CGROUP_DIR = "podnet-lab"
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
HOST_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
USER_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Debian releases a lab host may run (lab_suite): the images and mirrors are built from this
# machine's own apt sources, deb.debian.org, which serves both.
SUITES = ("bookworm", "trixie")
# How a host resolves names (lab_resolver): a plain /etc/resolv.conf, or systemd-resolved with
# its 127.0.0.53 stub in /etc/resolv.conf (Ubuntu's default).
RESOLVERS = ("resolv.conf", "systemd-resolved")
RESOLVED_STUB = "../run/systemd/resolve/stub-resolv.conf"
# A node costs about 60 MB and a share of two cores; beyond this the lab stops being useful.
DEFAULT_MAX_HOSTS = 16
# An extra underlay segment (lab_segments) is a bridge named after it in the lab's netns: a
# Linux interface name (at most 15 characters). Links the lab makes itself use these prefixes.
SEGMENT_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
RESERVED_LINK_PREFIXES = ("vb-", "vr-")
# The router between the underlay and the segments is a network namespace of its own,
# /run/netns/<lab>_rt: "_" is never in a lab name (LAB_NAME_RE), so no lab's router can take
# another lab's name (podnet's router is podnet_rt, the lab podnet-rt's is podnet-rt_rt).
ROUTER_SUFFIX = "_rt"
# The alias the lab gives its segment bridges, so that a segment removed from the inventory is
# told apart from anything else in the lab's netns and removed by the next lab-up.
SEGMENT_ALIAS = "podnet-lab segment"
# The router's BIRD (lab_router_bgp_as): Debian's bird2, run inside the router's namespace as an
# iBGP peer of the nodes, learning their pod CIDRs. Its files are <state_dir>/router-bird.*.
BIRD = "/usr/sbin/bird"
BIRDC = "/usr/sbin/birdc"
ROUTER_BIRD = "router-bird"
MAX_AS = 4294967295


class LabError(Exception):
    """A lab operation failed; the message says what and how to fix it."""


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str


@dataclass(frozen=True)
class Route:
    """A static route a lab host gets in its networkd file; ``destination`` "" is the default."""

    destination: str
    gateway: str


@dataclass(frozen=True)
class Segment:
    """An extra underlay segment (an item of lab_segments): a bridge in the lab's netns named
    ``name``, holding the controller's address on it, joined to the router at ``router_address``."""

    name: str
    cidr: str
    controller_address: str
    router_address: str

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.cidr).prefixlen


@dataclass(frozen=True)
class HostNetwork:
    """Where a lab host sits: its address with prefix, the bridge it joins, the controller's
    address on that bridge (its mirror's) and its routes to the other segments."""

    address_cidr: str
    bridge: str
    controller_address: str
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class NodeSpec:
    """What a lab host is made as: its identity, how one logs in and what it resolves with."""

    host: str
    address_cidr: str
    authorized_key: str
    user: str
    port: int = 22
    resolver: str = "resolv.conf"
    nameservers: tuple[str, ...] = ()
    mirror_url: str | None = None
    routes: tuple[Route, ...] = ()

    @property
    def address(self) -> str:
        return self.address_cidr.split("/")[0]


def machine_name(lab: str, host: str) -> str:
    """The systemd-nspawn machine name: unique on this machine across labs, and short.

    systemd-nspawn names the host side of the veth ``vb-<machine>`` and shortens names
    past 15 characters in its own way; twelve characters keep the name exact, so teardown
    knows which link to wait for.
    """
    digest = hashlib.sha256(f"{lab}/{host}".encode()).hexdigest()
    return f"pn{digest[:10]}"


def veth_name(lab: str, host: str) -> str:
    return f"vb-{machine_name(lab, host)}"


def router_netns(lab: str) -> str:
    """The name of the lab's router namespace (/run/netns/<lab>_rt), see ROUTER_SUFFIX."""
    return f"{lab}{ROUTER_SUFFIX}"


def router_veth(bridge: str) -> str:
    """The lab's end of the veth joining the router to ``bridge`` (the underlay's or a
    segment's); its other end, in the router's namespace, is named after the bridge itself."""
    return f"vr-{hashlib.sha256(bridge.encode()).hexdigest()[:10]}"


def lab_mac(lab: str, what: str) -> str:
    """A fixed, locally administered unicast MAC for a link the lab makes (a segment's bridge,
    the router's veths): made again (a router namespace removed and repaired), it keeps its
    address, so the hosts' neighbour entries stay right; and a bridge with an address of its
    own does not follow the lowest address of its ports."""
    digest = hashlib.sha256(f"{lab}/{what}".encode()).hexdigest()
    return "02:" + ":".join(digest[i:i + 2] for i in range(0, 10, 2))


def validate(
    lab_name: object,
    underlay_cidr: object,
    controller_address: object,
    hosts: Iterable[Mapping[str, object]],
    max_hosts: int = DEFAULT_MAX_HOSTS,
    nameservers: Iterable[object] = (),
    segments: object = (),
    router_address: object = None,
    bridge: object = "underlay",
    router_bgp_as: object = None,
    router_bgp_neighbors: object = (),
) -> list[str]:
    """Check a lab inventory before anything is created. Returns error messages.

    A host record has ``name`` and ``address`` (ansible_host), and may have ``user``
    (ansible_user), ``port`` (ansible_port), ``suite`` (lab_suite), ``resolver``
    (lab_resolver) and ``segment`` (lab_segment); ``nameservers`` are lab_nameservers,
    ``segments`` lab_segments, ``router_address`` lab_router_address, ``bridge``
    lab_bridge, ``router_bgp_as`` lab_router_bgp_as and ``router_bgp_neighbors``
    lab_router_bgp_neighbors."""
    errors: list[str] = []
    if not isinstance(lab_name, str) or not LAB_NAME_RE.match(lab_name):
        errors.append(
            f"lab_name: {lab_name!r} is not a valid lab name; use 1-15 lower-case letters, "
            "digits or '-', starting with a letter (it names the lab's network namespace)"
        )
    try:
        net = ipaddress.ip_network(str(underlay_cidr), strict=True)
    except ValueError as exc:
        errors.append(
            f"lab_underlay_cidr: {underlay_cidr!r} is not a network ({exc}); "
            "give one like 192.168.56.0/24"
        )
        return errors
    if net.version != 4:
        errors.append(f"lab_underlay_cidr: {underlay_cidr} is not IPv4; the lab is IPv4 only")
        return errors
    usable = {net.network_address, net.broadcast_address}
    ctrl = None
    try:
        ctrl = ipaddress.ip_address(str(controller_address))
        if ctrl not in net or ctrl in usable:
            errors.append(
                f"lab_controller_address: {controller_address} is not a host address in "
                f"lab_underlay_cidr {net}; pick one inside it (e.g. {net.network_address + 1})"
            )
    except ValueError:
        errors.append(f"lab_controller_address: {controller_address!r} is not an IPv4 address")

    seg_nets, reserved, seg_errors = _segments(segments, net, ctrl, router_address, bridge)
    errors += seg_errors
    errors += _router_bgp_errors(router_bgp_as, router_bgp_neighbors, router_address, net,
                                 seg_nets, reserved, ctrl)
    host_list = list(hosts)
    if len(host_list) > max_hosts:
        errors.append(
            f"inventory: {len(host_list)} lab hosts, more than lab_max_hosts={max_hosts}; "
            "remove hosts or raise lab_max_hosts if this machine has the memory"
        )
    on_underlay = [h for h in host_list if h.get("segment") in (None, "")]
    if len(on_underlay) > net.num_addresses - 3:
        errors.append(
            f"inventory: {len(on_underlay)} hosts do not fit in lab_underlay_cidr {net}; "
            "use a larger underlay"
        )
    seen_names: dict[str, str] = {}
    seen_addrs: dict[str, str] = {}
    for host in host_list:
        name = str(host.get("name", ""))
        label = name or "<unnamed>"
        key = name.lower()
        if not HOST_NAME_RE.match(key):
            errors.append(
                f"{label}: host name is not a DNS label of at most 32 characters "
                "(letters, digits, '-'); rename the host"
            )
        if key in seen_names:
            errors.append(
                f"{label}: duplicate host name (same as {seen_names[key]}, host names "
                "compare case-insensitively); give each host its own name"
            )
        else:
            seen_names[key] = name
        raw = host.get("address")
        try:
            addr = ipaddress.ip_address(str(raw))
        except ValueError:
            errors.append(f"{label}: ansible_host {raw!r} is not an IPv4 address")
            continue
        segment = host.get("segment")
        if segment not in (None, ""):
            if segment not in seg_nets:
                known = ", ".join(sorted(seg_nets)) or "none"
                errors.append(
                    f"{label}: lab_segment {segment!r} is not a segment of lab_segments "
                    f"(defined: {known}); name one of them, or remove lab_segment to put "
                    "the host on the underlay"
                )
            elif addr not in seg_nets[segment] or addr in {
                    seg_nets[segment].network_address, seg_nets[segment].broadcast_address}:
                errors.append(
                    f"{label}: ansible_host {addr} is outside the cidr {seg_nets[segment]} of "
                    f"its lab_segment {segment} (or is its network/broadcast address); give it "
                    "a host address inside it, or put the host on another segment"
                )
        elif addr not in net or addr in usable:
            inside = [n for n, s in seg_nets.items() if addr in s]
            hint = (f"; it is inside segment {inside[0]}'s cidr {seg_nets[inside[0]]}: set "
                    f"lab_segment: {inside[0]} on the host to put it there") if inside else ""
            errors.append(
                f"{label}: ansible_host {addr} is outside lab_underlay_cidr {net} "
                f"(or is its network/broadcast address); give it a host address inside it{hint}"
            )
        if ctrl is not None and addr == ctrl:
            errors.append(
                f"{label}: ansible_host {addr} is the controller's lab address "
                "(lab_controller_address); pick another"
            )
        elif addr in reserved:
            errors.append(f"{label}: ansible_host {addr} is {reserved[addr]}; pick another")
        if str(addr) in seen_addrs:
            errors.append(
                f"{label}: ansible_host {addr} is already used by {seen_addrs[str(addr)]}; "
                "give each host its own address"
            )
        else:
            seen_addrs[str(addr)] = label
    for host in host_list:
        errors += _shape_errors(str(host.get("name", "")) or "<unnamed>", host)
    for raw in nameservers:
        try:
            ns = ipaddress.ip_address(str(raw))
        except ValueError:
            errors.append(f"lab_nameservers: {raw!r} is not an IPv4 address; list the lab "
                          "hosts' resolvers by address (e.g. the upstream_dns host's)")
            continue
        if ns not in net and not any(ns in s for s in seg_nets.values()):
            errors.append(f"lab_nameservers: {ns} is outside lab_underlay_cidr {net}"
                          + (" and every segment of lab_segments" if seg_nets else "")
                          + ": lab hosts have no route out of the lab; name a resolver on the "
                          "underlay")
    return errors


SEGMENT_KEYS = ("name", "cidr", "controller_address", "router_address")


def _segments(
    raw: object, net: ipaddress.IPv4Network | ipaddress.IPv6Network,
    ctrl: ipaddress.IPv4Address | ipaddress.IPv6Address | None, router_address: object,
    bridge: object,
) -> tuple[dict[str, ipaddress.IPv4Network], dict[Any, str], list[str]]:
    """Check lab_segments and lab_router_address. Returns the segments' networks by name (those
    with a good cidr), the addresses the lab itself takes (what each is, for the hosts' check)
    and the errors."""
    errors: list[str] = []
    nets: dict[str, ipaddress.IPv4Network] = {}
    reserved: dict[Any, str] = {}
    if raw in (None, ""):
        raw = []
    if not isinstance(raw, (list, tuple)):
        return nets, reserved, [
            f"lab_segments: {raw!r} is not a list; give a list of segments, each "
            "{name, cidr, controller_address, router_address}, or [] for none"]
    has_router = router_address not in (None, "")
    if has_router:
        try:
            router = ipaddress.ip_address(str(router_address))
        except ValueError:
            errors.append(f"lab_router_address: {router_address!r} is not an IPv4 address; give "
                          f"the router's address on lab_underlay_cidr {net}, e.g. "
                          f"{net.broadcast_address - 1}")
        else:
            if router not in net or router in {net.network_address, net.broadcast_address}:
                errors.append(f"lab_router_address: {router} is not a host address in "
                              f"lab_underlay_cidr {net}; pick one inside it (e.g. "
                              f"{net.broadcast_address - 1})")
            elif router == ctrl:
                errors.append(f"lab_router_address: {router} is the controller's lab address "
                              "(lab_controller_address); pick another")
            reserved[router] = "the router's address on the underlay (lab_router_address)"
        if not raw:
            errors.append(f"lab_router_address: {router_address} is set but lab_segments is "
                          "empty, so the router would join nothing; add a segment or remove "
                          "lab_router_address")
    elif raw:
        errors.append(f"lab_router_address: not set, but lab_segments has {len(raw)} "
                      "segment(s), which reach the underlay only through the router; give it "
                      f"an address on lab_underlay_cidr {net} (e.g. {net.broadcast_address - 1})")
    names: set[str] = set()
    for i, item in enumerate(raw):
        where = f"lab_segments[{i}]"
        if not isinstance(item, Mapping):
            errors.append(f"{where}: {item!r} is not a mapping; give its name, cidr, "
                          "controller_address and router_address")
            continue
        unknown = sorted(str(k) for k in item if k not in SEGMENT_KEYS)
        if unknown:
            errors.append(f"{where}: unknown key(s) {', '.join(unknown)}; a segment has only "
                          f"{', '.join(SEGMENT_KEYS)}")
        missing = [k for k in SEGMENT_KEYS if item.get(k) in (None, "")]
        if missing:
            errors.append(f"{where}: {', '.join(missing)} missing; a segment needs "
                          f"{', '.join(SEGMENT_KEYS)}")
        name = item.get("name")
        if name not in (None, ""):
            where = f"lab_segments {name}"
            if not isinstance(name, str) or not SEGMENT_NAME_RE.match(name):
                errors.append(f"{where}: name {name!r} cannot name its bridge; use 1-15 "
                              "lower-case letters, digits or '-', starting with a letter")
            elif name.startswith(RESERVED_LINK_PREFIXES):
                errors.append(f"{where}: name {name!r} starts with one of "
                              f"{', '.join(RESERVED_LINK_PREFIXES)}, which the lab's own links "
                              "use; rename the segment")
            elif name == bridge:
                errors.append(f"{where}: name {name!r} is lab_bridge's, the underlay's bridge; "
                              "rename the segment (its bridge is named after it)")
            elif name == "lo":
                errors.append(f"{where}: name 'lo' is the loopback's; rename the segment")
            if str(name) in names:
                errors.append(f"{where}: duplicate segment name; give each segment its own")
            names.add(str(name))
        if "cidr" in missing:
            continue
        try:
            seg = ipaddress.ip_network(str(item["cidr"]), strict=True)
        except ValueError as exc:
            errors.append(f"{where}: cidr {item['cidr']!r} is not a network ({exc}); give one "
                          "like 192.168.57.0/24")
            continue
        if not isinstance(seg, ipaddress.IPv4Network):
            errors.append(f"{where}: cidr {seg} is not IPv4; the lab is IPv4 only")
            continue
        if seg.overlaps(net):
            errors.append(f"{where}: cidr {seg} overlaps lab_underlay_cidr {net}; give the "
                          "segment a network of its own (it is reached through the router)")
        for other, other_net in nets.items():
            if seg.overlaps(other_net):
                errors.append(f"{where}: cidr {seg} overlaps segment {other}'s {other_net}; "
                              "give each segment a network of its own")
        seen: dict[Any, str] = {}
        for key in ("controller_address", "router_address"):
            if key in missing:
                continue
            try:
                addr = ipaddress.ip_address(str(item[key]))
            except ValueError:
                errors.append(f"{where}: {key} {item[key]!r} is not an IPv4 address")
                continue
            if addr not in seg or addr in {seg.network_address, seg.broadcast_address}:
                errors.append(f"{where}: {key} {addr} is not a host address in its cidr {seg}; "
                              "pick one inside it")
            if addr in seen:
                errors.append(f"{where}: {key} {addr} is also its {seen[addr]}; give the "
                              "controller and the router an address each")
            seen[addr] = key
            reserved[addr] = (f"the controller's address on segment {name}" if
                              key == "controller_address" else
                              f"the router's address on segment {name}") + " (lab_segments)"
        if name not in (None, ""):
            nets[str(name)] = seg
    return nets, reserved, errors


def router_bgp_as(raw: object) -> int | None:
    """lab_router_bgp_as as an AS number, None when the router runs no BIRD (empty, 0, null).
    Raises ValueError when it is neither."""
    if raw in (None, "", 0, "0"):
        return None
    if isinstance(raw, bool) or not str(raw).strip().isdigit():
        raise ValueError(f"{raw!r} is not a number")
    number = int(str(raw).strip())
    if not 0 < number <= MAX_AS:
        raise ValueError(f"{number} is outside 1..{MAX_AS}")
    return number


def _router_bgp_errors(
    raw_as: object, raw_neighbors: object, router_address: object,
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
    seg_nets: Mapping[str, ipaddress.IPv4Network], reserved: Mapping[Any, str],
    ctrl: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
) -> list[str]:
    """Check lab_router_bgp_as and lab_router_bgp_neighbors: the router's BIRD peers only with
    addresses on a network it is connected to (the underlay or a segment of lab_segments)."""
    errors: list[str] = []
    try:
        number = router_bgp_as(raw_as)
    except ValueError as exc:
        errors.append(f"lab_router_bgp_as: {exc}; give the nodes' AS number (1..{MAX_AS}, "
                      "podnet_bgp_as's), or 0/empty for no BGP on the router")
        number = None
        enabled = True
    else:
        enabled = number is not None
    neighbors: list[object] = []
    not_a_list = raw_neighbors not in (None, "") and not isinstance(raw_neighbors, (list, tuple))
    if not_a_list:
        errors.append(f"lab_router_bgp_neighbors: {raw_neighbors!r} is not a list; give a list "
                      "of the nodes' addresses, e.g. [192.168.56.11, 192.168.57.13]")
    elif isinstance(raw_neighbors, (list, tuple)):
        neighbors = list(raw_neighbors)
    if not enabled:
        if neighbors:
            errors.append(f"lab_router_bgp_neighbors: {len(neighbors)} neighbor(s) but "
                          "lab_router_bgp_as is not set, so the router runs no BIRD; set "
                          "lab_router_bgp_as to the nodes' AS number or empty the list")
        return errors
    if router_address in (None, ""):
        errors.append(f"lab_router_bgp_as: {raw_as} is set but the lab has no router "
                      "(lab_router_address is empty): BGP on the router needs a routed lab "
                      "(lab_router_address and lab_segments); remove lab_router_bgp_as")
    if number is not None and not neighbors and not not_a_list:
        errors.append(f"lab_router_bgp_as: {number} is set but lab_router_bgp_neighbors is "
                      "empty, so the router's BIRD would peer with no one; list the nodes' "
                      "addresses in lab_router_bgp_neighbors")
    seen: set[Any] = set()
    for raw in neighbors:
        try:
            addr = ipaddress.ip_address(str(raw))
        except ValueError:
            errors.append(f"lab_router_bgp_neighbors: {raw!r} is not an IPv4 address; list the "
                          "nodes by their ansible_host")
            continue
        if addr in seen:
            errors.append(f"lab_router_bgp_neighbors: {addr} is listed twice; list each node once")
            continue
        seen.add(addr)
        networks = [("lab_underlay_cidr", net)] + [(f"segment {n}", s) for n, s in seg_nets.items()]
        on = [(what, s) for what, s in networks if addr in s
              and addr not in {s.network_address, s.broadcast_address}]
        if not on:
            errors.append(f"lab_router_bgp_neighbors: {addr} is on no network the router is "
                          f"connected to (lab_underlay_cidr {net}"
                          + "".join(f", segment {n} {s}" for n, s in seg_nets.items())
                          + "); the router peers only with directly connected nodes: list "
                          "their ansible_host addresses")
        elif addr in reserved or addr == ctrl:
            what = reserved.get(addr, "the controller's lab address (lab_controller_address)")
            errors.append(f"lab_router_bgp_neighbors: {addr} is {what}, not a node; list the "
                          "nodes' ansible_host addresses")
    return errors


def segments_of(raw: Iterable[Mapping[str, Any]]) -> list[Segment]:
    """lab_segments (validated) as Segment records."""
    return [Segment(str(s["name"]), str(s["cidr"]), str(s["controller_address"]),
                    str(s["router_address"])) for s in raw]


def host_network(address: str, segment: str | None, underlay_cidr: str, controller_address: str,
                 bridge: str, router_address: str | None,
                 segments: Iterable[Segment]) -> HostNetwork:
    """Where a host with ``address`` sits: on the underlay (``segment`` None or "") or on the
    named segment; its routes reach every network it is not on through the router's address on
    its own network. Without segments a host has no route but its own network's."""
    segs = list(segments)
    if segment in (None, ""):
        prefix = ipaddress.ip_network(underlay_cidr).prefixlen
        routes = tuple(Route(s.cidr, str(router_address)) for s in segs)
        return HostNetwork(f"{address}/{prefix}", bridge, controller_address, routes)
    own = next((s for s in segs if s.name == segment), None)
    if own is None:
        raise LabError(f"lab_segment {segment!r} is not a segment of lab_segments")
    others = [str(ipaddress.ip_network(underlay_cidr))] + [s.cidr for s in segs if s is not own]
    return HostNetwork(f"{address}/{own.prefixlen}", own.name, own.controller_address,
                       tuple(Route(cidr, own.router_address) for cidr in others))


def _shape_errors(label: str, host: Mapping[str, object]) -> list[str]:
    """What is wrong with how a host is shaped: its login, port, release and resolver.
    Keys absent from ``host`` are not checked (a record from an older caller)."""
    errors: list[str] = []
    if "user" in host:
        user = host["user"]
        if user == "root":
            errors.append(f"{label}: ansible_user is root, but lab hosts are VM-shaped (no root "
                          "login, a login user with sudo): set ansible_user to a login name "
                          "such as debian")
        elif not isinstance(user, str) or not USER_NAME_RE.match(user):
            errors.append(f"{label}: ansible_user {user!r} is not a login name (lower-case "
                          "letters, digits, '_' or '-', at most 32); set ansible_user, e.g. debian")
    if "port" in host:
        port = host["port"]
        if isinstance(port, bool) or not str(port).isdigit() or not 0 < int(str(port)) < 65536:
            errors.append(f"{label}: ansible_port {port!r} is not a TCP port (1-65535)")
    if "suite" in host and host["suite"] not in SUITES:
        errors.append(f"{label}: lab_suite {host['suite']!r} is not one the lab builds; use one "
                      f"of {', '.join(SUITES)}")
    if "resolver" in host and host["resolver"] not in RESOLVERS:
        errors.append(f"{label}: lab_resolver {host['resolver']!r} is not one the lab sets up; "
                      f"use one of {', '.join(RESOLVERS)}")
    return errors


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


# --------------------------------------------------------------------------- netns


def netns_exists(lab: str) -> bool:
    return (NETNS_DIR / lab).exists()


def ensure_netns(lab: str, bridge: str, controller_cidr: str) -> bool:
    """Create the lab netns with its underlay bridge and the controller's address."""
    changed = False
    if not netns_exists(lab):
        _run(["ip", "netns", "add", lab])
        changed = True
    links = _run(["ip", "-n", lab, "-o", "link", "show"]).stdout
    if not re.search(rf"^\d+: {re.escape(bridge)}[:@]", links, re.M):
        _run(["ip", "-n", lab, "link", "add", bridge, "type", "bridge"])
        changed = True
    addrs = _run(["ip", "-n", lab, "-o", "addr", "show", "dev", bridge]).stdout
    if f" {controller_cidr} " not in addrs:
        _run(["ip", "-n", lab, "addr", "replace", controller_cidr, "dev", bridge])
        changed = True
    for dev in ("lo", bridge):
        line = _run(["ip", "-n", lab, "-o", "link", "show", "dev", dev]).stdout
        flags = line.split("<", 1)[1].split(">", 1)[0].split(",")
        if "UP" not in flags:
            _run(["ip", "-n", lab, "link", "set", dev, "up"])
            changed = True
    return changed


def processes_in_netns(lab: str) -> list[int]:
    """PIDs living in the lab's network namespace (e.g. SSH ProxyCommand ``nc``s).

    Deleting /run/netns/<lab> does not end them, and while they live the namespace does.
    """
    try:
        ino = (NETNS_DIR / lab).stat().st_ino
    except OSError:
        return []
    want = f"net:[{ino}]"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str((entry / "ns" / "net").readlink()) == want:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def remove_netns(lab: str) -> bool:
    if not netns_exists(lab):
        return False
    _run(["ip", "netns", "del", lab])
    return True


def _links(netns: str) -> dict[str, dict[str, Any]]:
    """The links of a named namespace by name, with details (``ip -j -d link show``)."""
    found: list[dict[str, Any]] = json.loads(
        _run(["ip", "-n", netns, "-j", "-d", "link", "show"]).stdout or "[]")
    return {link["ifname"]: link for link in found}


def _ensure_up(netns: str, dev: str, link: Mapping[str, Any] | None) -> bool:
    if link is not None and "UP" in link.get("flags", []):
        return False
    _run(["ip", "-n", netns, "link", "set", dev, "up"])
    return True


def _ensure_addr(netns: str, dev: str, cidr: str) -> bool:
    """``cidr`` on ``dev`` (added beside any other address: the dev is the lab's own)."""
    addrs = _run(["ip", "-n", netns, "-o", "-4", "addr", "show", "dev", dev]).stdout
    if f" {cidr} " in addrs:
        return False
    _run(["ip", "-n", netns, "addr", "replace", cidr, "dev", dev])
    return True


def netns_sysctl(netns: str, key: str) -> str:
    """A sysctl's value as the named namespace sees it (read inside it: /proc/sys/net is per
    namespace)."""
    return _run(["nsenter", f"--net={NETNS_DIR / netns}", "sysctl", "-n", key]).stdout.strip()


def _ensure_sysctl(netns: str, key: str, value: str) -> bool:
    if netns_sysctl(netns, key) == value:
        return False
    _run(["nsenter", f"--net={NETNS_DIR / netns}", "sysctl", "-q", "-w", f"{key}={value}"])
    return True


def ensure_segments(lab: str, bridge: str, underlay_prefix: int, router_address: str | None,
                    segments: Iterable[Segment]) -> bool:
    """The lab's extra segments and the router between them and the underlay (lab_segments,
    lab_router_address); with no segments, removes whatever an earlier lab-up made of them.

    Each segment is a bridge named after it in the lab's netns, holding the controller's address
    there. The lab's netns does not forward (ip_forward 0, set: a new namespace inherits the
    machine's value), so packets between segments cross only the router: a namespace of its own
    (router_netns) joined to each bridge by a veth (router_veth on the lab's side, named after
    the bridge on the router's) holding the router's address there, with ip_forward 1. Nothing
    else: no route (its networks are all connected), no filter, no NAT. Only ``ip`` and the
    namespaces' own sysctls; the machine's namespace is never touched."""
    segs = list(segments)
    rt = router_netns(lab)
    changed = False
    links = _links(lab)
    wanted = {s.name for s in segs}
    # a segment gone from the inventory: its bridge (marked with SEGMENT_ALIAS) and its veth
    for name, found in links.items():
        if found.get("ifalias") == SEGMENT_ALIAS and name not in wanted:
            _run(["ip", "-n", lab, "link", "del", name])
            changed = True
    if not segs:
        for name in links:
            if name.startswith("vr-"):
                _run(["ip", "-n", lab, "link", "del", name], check=False)
                changed = True
        if netns_exists(rt):
            _kill_in_netns(rt)
            remove_netns(rt)
            changed = True
        return changed
    if router_address in (None, ""):
        raise LabError("lab_router_address: not set, but lab_segments has segments")
    changed |= _ensure_sysctl(lab, "net.ipv4.ip_forward", "0")
    for seg in segs:
        link = links.get(seg.name)
        if link is None:
            _run(["ip", "-n", lab, "link", "add", seg.name, "address",
                  lab_mac(lab, f"bridge/{seg.name}"), "type", "bridge"])
            changed = True
        elif link.get("address") != lab_mac(lab, f"bridge/{seg.name}"):
            _run(["ip", "-n", lab, "link", "set", seg.name, "address",
                  lab_mac(lab, f"bridge/{seg.name}")])
            changed = True
        if link is None or link.get("ifalias") != SEGMENT_ALIAS:
            _run(["ip", "-n", lab, "link", "set", seg.name, "alias", SEGMENT_ALIAS])
            changed = True
        changed |= _ensure_addr(lab, seg.name, f"{seg.controller_address}/{seg.prefixlen}")
        changed |= _ensure_up(lab, seg.name, link)
    if not netns_exists(rt):
        _run(["ip", "netns", "add", rt])
        changed = True
    changed |= _ensure_up(rt, "lo", _links(rt).get("lo"))
    changed |= _ensure_sysctl(rt, "net.ipv4.ip_forward", "1")
    legs = [(bridge, f"{router_address}/{underlay_prefix}")] + [
        (s.name, f"{s.router_address}/{s.prefixlen}") for s in segs]
    links, rt_links = _links(lab), _links(rt)
    for leg, cidr in legs:
        ours = router_veth(leg)
        if ours in links and leg not in rt_links:
            # its other end is in a router namespace that is gone from /run/netns but still
            # held by a process: the pair goes, and is made again into the router's namespace
            _run(["ip", "-n", lab, "link", "del", ours], check=False)
            links = _links(lab)
            changed = True
        if ours not in links:
            if leg in rt_links:  # an end whose peer is gone (cannot be, but never two of a name)
                _run(["ip", "-n", rt, "link", "del", leg], check=False)
            _run(["ip", "-n", lab, "link", "add", ours, "address", lab_mac(lab, f"lab/{leg}"),
                  "type", "veth", "peer", "name", leg, "address", lab_mac(lab, f"router/{leg}"),
                  "netns", rt])
            changed = True
            links, rt_links = _links(lab), _links(rt)
        for netns, dev, now, mac in ((lab, ours, links[ours], lab_mac(lab, f"lab/{leg}")),
                                     (rt, leg, rt_links.get(leg), lab_mac(lab, f"router/{leg}"))):
            if now is None or now.get("address") != mac:
                _run(["ip", "-n", netns, "link", "set", dev, "address", mac])
                changed = True
        if links[ours].get("master") != leg:
            _run(["ip", "-n", lab, "link", "set", ours, "master", leg])
            changed = True
        changed |= _ensure_up(lab, ours, links[ours])
        changed |= _ensure_addr(rt, leg, cidr)
        changed |= _ensure_up(rt, leg, rt_links.get(leg))
    # legs no longer wanted (a segment removed): their veths, both ends
    keep = {router_veth(leg) for leg, _ in legs}
    for name in _links(lab):
        if name.startswith("vr-") and name not in keep:
            _run(["ip", "-n", lab, "link", "del", name], check=False)
            changed = True
    for name in _links(rt):
        if name != "lo" and name not in {leg for leg, _ in legs}:
            _run(["ip", "-n", rt, "link", "del", name], check=False)
            changed = True
    return changed


def _kill_in_netns(netns: str) -> bool:
    """End every process living in the named namespace (SIGTERM, then SIGKILL)."""
    inside = processes_in_netns(netns)
    if not inside:
        return False
    _kill(inside, signal.SIGTERM)
    if _wait_gone(inside, 5):
        _kill(inside, signal.SIGKILL)
        _wait_gone(inside, 5)
    return True


# --------------------------------------------------------------------------- router BIRD


def router_bird_config(lab: str, as_number: int, underlay_cidr: str, router_address: str,
                       segments: Iterable[Segment], neighbors: Iterable[str]) -> str:
    """The router's BIRD 2 configuration (lab_router_bgp_as, lab_router_bgp_neighbors): an iBGP
    peer of each neighbor, from the router's address on that neighbor's network, that only
    learns (passive: the nodes connect; it announces nothing) and installs what BGP brought in
    the router's namespace with BIRD's protocol number (12). Each neighbor must be on the
    underlay or a segment (validate)."""
    networks = [(ipaddress.ip_network(underlay_cidr), router_address)] + [
        (ipaddress.ip_network(s.cidr), s.router_address) for s in segments]
    out = (f"# podnet lab {lab}: the router's BIRD (roles/lab, lab_router_bgp_as), an iBGP peer\n"
           "# of the nodes that learns their pod CIDRs and installs them in the router's\n"
           "# namespace. Written by podnet.lab; lab-up restarts BIRD when it changes.\n"
           f"router id {router_address};\n"
           "log stderr { info, remote, warning, error, auth, fatal, bug };\n"
           "\n"
           "# interfaces: BIRD needs them to tell which next hops are reachable\n"
           "protocol device {\n  scan time 10;\n}\n"
           "\n"
           "# the connected networks (underlay, segments): an iBGP route's next hop (the node\n"
           "# that announced it) resolves through them (gateway recursive, iBGP's default)\n"
           "protocol direct {\n  ipv4;\n}\n"
           "\n"
           "# only what BGP learnt goes to the kernel (protocol bird, 12); none is read from it\n"
           "protocol kernel {\n  ipv4 {\n    import none;\n    export where source = RTS_BGP;\n"
           "  };\n}\n")
    for raw in neighbors:
        addr = ipaddress.ip_address(str(raw))
        local = next((r for n, r in networks if addr in n), None)
        if local is None:
            raise LabError(f"lab_router_bgp_neighbors: {addr} is on no network the router is "
                           "connected to")
        name = "n_" + str(addr).replace(".", "_")
        out += (f"\nprotocol bgp {name} {{\n"
                f"  local {local} as {as_number};\n"
                f"  neighbor {addr} as {as_number};\n"
                "  passive;\n"
                "  connect retry time 5;\n"
                "  hold time 30;\n"
                "  keepalive time 10;\n"
                "  graceful restart on;\n"
                "  ipv4 {\n    import all;\n    export none;\n  };\n}\n")
    return out


def _router_bird_file(state_dir: Path, ext: str) -> Path:
    return state_dir / f"{ROUTER_BIRD}.{ext}"


def _is_router_bird(pid: int, state_dir: Path) -> bool:
    """Whether ``pid`` is this lab's router BIRD (a bird with the lab's router-bird.conf)."""
    argv = _cmdline(pid)
    return (bool(argv) and Path(argv[0]).name == "bird"
            and str(_router_bird_file(state_dir, "conf")) in argv)


def router_bird_processes(state_dir: Path) -> list[int]:
    """Every process of this lab's router BIRD (found by its command line: a bird started on the
    lab's router-bird.conf), also one whose pid file or namespace is gone."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _is_router_bird(int(entry.name), state_dir):
            found.append(int(entry.name))
    return found


def router_bird_pid(state_dir: Path) -> int | None:
    """The PID of the lab's router BIRD when it runs (its pid file and command line agree)."""
    pid = _read_pid(_router_bird_file(state_dir, "pid"))
    if pid is None or _is_zombie(pid) or not _is_router_bird(pid, state_dir):
        return None
    return pid


def _netns_inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _in_netns(pid: int, netns: str) -> bool:
    want = _netns_inode(NETNS_DIR / netns)
    return want is not None and _netns_inode(Path(f"/proc/{pid}/ns/net")) == want


def stop_router_bird(state_dir: Path, remove_files: bool = True) -> bool:
    """End the lab's router BIRD (SIGTERM, then SIGKILL; only processes whose command line shows
    they are it) and remove its files."""
    changed = False
    pids = router_bird_processes(state_dir)
    if pids:
        _kill(pids, signal.SIGTERM)
        if _wait_gone(pids, 5):
            _kill(pids, signal.SIGKILL)
            _wait_gone(pids, 5)
        changed = True
    if remove_files:
        for ext in ("conf", "ctl", "pid", "log"):
            path = _router_bird_file(state_dir, ext)
            if path.exists() or path.is_symlink():
                path.unlink()
                changed = True
    return changed


def stop_stray_router_bird(lab: str, state_dir: Path) -> bool:
    """End a router BIRD that does not live in the router's namespace as /run/netns names it
    now (the namespace removed or replaced by hand): it holds the old namespace, and with it
    veths into the lab's bridges."""
    strays = [p for p in router_bird_processes(state_dir) if not _in_netns(p, router_netns(lab))]
    if not strays:
        return False
    _kill(strays, signal.SIGTERM)
    if _wait_gone(strays, 5):
        _kill(strays, signal.SIGKILL)
        _wait_gone(strays, 5)
    return True


def ensure_router_bird(lab: str, state_dir: Path, config: str | None) -> bool:
    """Run BIRD with ``config`` inside the lab's router namespace (None: run none, and remove
    its files). Left running when its config is unchanged and it lives in the router's
    namespace; started again when the config changed or it died."""
    if config is None:
        return stop_router_bird(state_dir)
    rt = router_netns(lab)
    if not netns_exists(rt):
        raise LabError(f"the router's BIRD needs the router namespace {NETNS_DIR / rt}, which "
                       "does not exist (lab_router_address and lab_segments make it)")
    if not Path(BIRD).exists():
        raise LabError(f"{BIRD} is missing on the controller; run 'make setup' (it installs "
                       "bird2) or remove lab_router_bgp_as")
    conf = _router_bird_file(state_dir, "conf")
    pid = router_bird_pid(state_dir)
    same = conf.is_file() and conf.read_text() == config
    if same and pid is not None and _in_netns(pid, rt) and \
            _router_bird_file(state_dir, "ctl").is_socket():
        return False
    stop_router_bird(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    conf.write_text(config)
    check = _run([BIRD, "-p", "-c", str(conf)], check=False)
    if check.returncode != 0:
        raise LabError(f"the router's BIRD config {conf} does not parse: "
                       f"{(check.stderr or check.stdout).strip()}")
    ctl, pidfile, logfile = (_router_bird_file(state_dir, e) for e in ("ctl", "pid", "log"))
    cmd = ["nsenter", f"--net={NETNS_DIR / rt}", BIRD, "-f", "-c", str(conf), "-s", str(ctl),
           "-P", str(pidfile)]
    with open(logfile, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    # nsenter (net only) execs bird in place: the same PID; BIRD writes it there too
    pidfile.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 10
    while not ctl.is_socket():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            tail = logfile.read_text(errors="replace")[-600:]
            raise LabError(f"the router's BIRD did not start in {NETNS_DIR / rt}: {tail}")
        time.sleep(0.1)
    return True


def router_bird_protocols(state_dir: Path) -> str:
    """``birdc show protocols`` of the lab's router BIRD (through its control socket)."""
    return _run([BIRDC, "-s", str(_router_bird_file(state_dir, "ctl")), "show",
                 "protocols"]).stdout


# --------------------------------------------------------------------------- mirror


def mirror_pid(state_dir: Path, server: str = "mirror") -> int | None:
    """The PID of the lab's mirror server when it runs (its pid file and its command line agree).
    ``server`` names its pid file: ``mirror`` on the underlay, ``mirror-<segment>`` on a segment."""
    pid = _read_pid(state_dir / f"{server}.pid")
    if pid is None:
        return None
    argv = _cmdline(pid)
    return pid if "http.server" in argv and str(state_dir / "mirror") in argv else None


def mirror_url(state_dir: Path, server: str = "mirror") -> str | None:
    """``http://address:port`` of the lab's running mirror server (read off its command line),
    None when it does not run."""
    pid = mirror_pid(state_dir, server)
    if pid is None:
        return None
    argv = _cmdline(pid)
    return f"http://{argv[argv.index('--bind') + 1]}:{argv[-1]}"


def ensure_mirror(lab: str, state_dir: Path, address: str, port: int,
                  mirrors: Mapping[str, str | Path], server: str = "mirror") -> bool:
    """Serve each suite's package mirror (a folder with Packages and its .debs, built by the lab
    role from this machine's apt sources) at ``http://<address>:<port>/<suite>/``, from inside
    the lab's network namespace: only the lab's hosts can reach it. One server per address: the
    controller's on the underlay (``server`` mirror) and on each segment (mirror-<segment>)."""
    changed = False
    served = state_dir / "mirror"
    served.mkdir(parents=True, exist_ok=True)
    for suite, folder in mirrors.items():
        if not (Path(folder) / "Packages").is_file():
            raise LabError(f"mirror {folder} of {suite} has no Packages index; run the lab "
                           "role's image step (make lab-up) to build it")
        link = served / suite
        if not (link.is_symlink() and str(link.readlink()) == str(folder)):
            link.unlink(missing_ok=True)
            link.symlink_to(folder)
            changed = True
    if mirror_pid(state_dir, server) is not None:
        return changed
    cmd = ["nsenter", f"--net={NETNS_DIR / lab}", sys.executable, "-m", "http.server",
           "--bind", address, "--directory", str(served), str(port)]
    with open(state_dir / f"{server}.log", "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    (state_dir / f"{server}.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 10
    while not _listening(lab, address, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (state_dir / f"{server}.log").read_text(errors="replace")[-600:]
            raise LabError(f"the lab's package mirror did not start on {address}:{port}: {tail}")
        time.sleep(0.1)
    return True


def _listening(lab: str, address: str, port: int) -> bool:
    out = _run(["nsenter", f"--net={NETNS_DIR / lab}", "ss", "-Htln",
                f"src {address}:{port}"], check=False).stdout
    return bool(out.strip())


# --------------------------------------------------------------------------- image


def ensure_rootfs(image_tar: Path) -> Path:
    """Unpack the image tarball once, next to it; returns the read-only lower dir."""
    rootfs = image_tar.with_suffix("")
    done = rootfs / ".podnet-unpacked"
    if done.exists():
        return rootfs
    tmp = rootfs.with_name(rootfs.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with tarfile.open(image_tar) as tar:
        # Our own image, just built by mmdebstrap: device nodes and ownership must survive.
        tar.extractall(tmp, filter="fully_trusted")  # noqa: S202
    (tmp / ".podnet-unpacked").touch()
    if rootfs.exists():
        shutil.rmtree(rootfs)
    tmp.rename(rootfs)
    return rootfs


# --------------------------------------------------------------------------- processes


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def nspawn_pid(node_dir: Path) -> int | None:
    """The PID of the node's launcher (which runs systemd-nspawn) if it runs, else None."""
    pid = _read_pid(node_dir / "nspawn.pid")
    if pid is None:
        return None
    cmd = _cmdline(pid)
    if "systemd-nspawn" in cmd and str(node_dir / "root") in cmd:
        return pid
    return None


def processes_under(path: Path) -> list[int]:
    """PIDs whose root directory or executable lives below ``path`` (container leftovers)."""
    prefix = str(path).rstrip("/") + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            root = str((entry / "root").readlink())
        except OSError:
            continue
        if (root.rstrip("/") + "/").startswith(prefix):
            found.append(pid)
    return found


def nspawn_processes(state_dir: Path) -> list[int]:
    """Launchers and systemd-nspawn processes of this lab (found by their -D argument)."""
    prefix = str(state_dir / "nodes") + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        cmd = _cmdline(int(entry.name))
        if "systemd-nspawn" in cmd and any(a.startswith(prefix) for a in cmd):
            found.append(int(entry.name))
    return found


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
        if alive:
            time.sleep(0.1)
    return alive


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _kill(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# --------------------------------------------------------------------------- mounts


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/")
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if target == prefix or target.startswith(prefix + "/"):
            found.append(target)
    return found


def unmount_all(path: Path) -> None:
    for target in sorted(mounts_under(path), key=len, reverse=True):
        if _run(["umount", target], check=False).returncode != 0:
            _run(["umount", "-l", target])


# --------------------------------------------------------------------------- nodes


def _chroot(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run one of the image's own programs on the node's root (not booted yet), as cloud-init
    would on first boot: useradd, systemctl enable."""
    return _run(["chroot", str(root), *argv])


def _passwd_entry(root: Path, user: str) -> list[str] | None:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return fields
    return None


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def _prepare_login(root: Path, spec: NodeSpec) -> None:
    """The login user with passwordless sudo and the lab's key; sshd on the port, no root."""
    if _passwd_entry(root, spec.user) is None:
        _chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", "--user-group",
                "--groups", "sudo", spec.user)
    fields = _passwd_entry(root, spec.user)
    if fields is None:
        raise LabError(f"{spec.host}: useradd did not create {spec.user}")
    uid, gid, home = int(fields[2]), int(fields[3]), root / fields[5].lstrip("/")
    _write(root / "etc/sudoers.d/90-podnet-lab-users",
           f"# podnet lab: the login user, as a cloud image's default user\n"
           f"{spec.user} ALL=(ALL:ALL) NOPASSWD:ALL\n", 0o440)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(spec.authorized_key.strip() + "\n")
    keys.chmod(0o600)
    for path in (home, ssh_dir, keys):
        os.chown(path, uid, gid)
    (root / "root/.ssh/authorized_keys").unlink(missing_ok=True)
    _write(root / "etc/ssh/sshd_config.d/10-podnet-lab.conf",
           "# podnet lab: a VM's sshd - its own port, keys only, no root login\n"
           f"Port {spec.port}\nPermitRootLogin no\nPasswordAuthentication no\n")
    if not list((root / "etc/ssh").glob("ssh_host_*_key")):
        _run(["ssh-keygen", "-A", "-f", str(root)])


def _prepare_resolver(root: Path, spec: NodeSpec) -> None:
    """/etc/resolv.conf as a plain file, or systemd-resolved's stub (its upstreams come from
    the networkd file's DNS= lines, as a DHCP lease gives them)."""
    resolv = root / "etc/resolv.conf"
    if spec.resolver == "systemd-resolved":
        if not (resolv.is_symlink() and str(resolv.readlink()) == RESOLVED_STUB):
            resolv.unlink(missing_ok=True)
            resolv.symlink_to(RESOLVED_STUB)
        _chroot(root, "systemctl", "enable", "--quiet", "systemd-resolved.service")
        return
    if (root / "etc/systemd/system/multi-user.target.wants/systemd-resolved.service").exists():
        _chroot(root, "systemctl", "disable", "--quiet", "systemd-resolved.service")
    _write(resolv, "# podnet lab: the resolvers the lab's network hands out\n"
           + "".join(f"nameserver {ns}\n" for ns in spec.nameservers))


def networkd_routes(routes: Iterable[Route]) -> str:
    """The [Route] sections of a host's networkd file: a destination through a gateway on the
    host's own network (no Destination= for the default route)."""
    out = ""
    for r in routes:
        dest = f"Destination={r.destination}\n" if r.destination else ""
        out += f"\n[Route]\n{dest}Gateway={r.gateway}\n"
    return out


def underlay_network(spec: NodeSpec) -> str:
    """The host's networkd file (/etc/systemd/network/10-underlay.network): its address on its
    network, its resolvers and its routes to the lab's other networks."""
    dns = "".join(f"DNS={ns}\n" for ns in spec.nameservers)
    return ("# podnet lab: the node's underlay address (host0 is the nspawn veth)\n"
            f"[Match]\nName=host0\n\n[Network]\nAddress={spec.address_cidr}\n{dns}"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
            # a cut link (verify's failover tests set the lab's end down) keeps the address,
            # and so the routes through it (podnet-routes'), as a VM's NIC losing carrier does
            "ConfigureWithoutCarrier=yes\nIgnoreCarrierLoss=yes\n" + networkd_routes(spec.routes))


def _prepare_root(root: Path, spec: NodeSpec) -> None:
    """Write the node's identity into its overlay (only what is missing or different)."""
    host = spec.host
    (root / "etc/hostname").write_text(host + "\n")
    hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{host}\n::1\tlocalhost ip6-localhost\n"
    (root / "etc/hosts").write_text(hosts)
    _write(root / "etc/systemd/network/10-underlay.network", underlay_network(spec))
    if spec.mirror_url:
        # the image's own sources are gone (lab image recipe); the site's mirror replaces them
        _write(root / "etc/apt/sources.list",
               "# podnet lab: the lab's package mirror on the underlay (no route out of the lab)\n"
               f"deb [trusted=yes] {spec.mirror_url} ./\n")
    _prepare_login(root, spec)
    _prepare_resolver(root, spec)


def host_key_line(root: Path, address: str, port: int = 22) -> str:
    """The node's ed25519 host key as a known_hosts line (``[address]:port`` off port 22)."""
    key = (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    where = address if port == 22 else f"[{address}]:{port}"
    return f"{where} {key[0]} {key[1]}"


def start_node(
    lab: str,
    state_dir: Path,
    spec: NodeSpec,
    bridge: str,
    image_tar: Path,
) -> tuple[bool, str]:
    """Boot a node (or leave it running). Returns (changed, known_hosts line)."""
    host = spec.host
    node_dir = state_dir / "nodes" / host
    root = node_dir / "root"
    if nspawn_pid(node_dir) is not None and mounts_under(root):
        return False, host_key_line(root, spec.address, spec.port)
    # Not running: clear whatever a dirty previous run left, keep the node's own upper layer.
    _cleanup_node_runtime(lab, node_dir, host)
    lower = ensure_rootfs(image_tar)
    for sub in ("upper", "work", "root"):
        (node_dir / sub).mkdir(parents=True, exist_ok=True)
    _run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={node_dir / 'upper'},workdir={node_dir / 'work'}",
            str(root),
        ]
    )
    _prepare_root(root, spec)
    # The launcher boots the node again when it reboots (systemd-nspawn exits with 133 on
    # `systemctl reboot` inside), as a VM's firmware would; any other exit ends it. Each boot
    # starts in the node's own cgroups (PODNET_CGROUPS, see CGROUP_DIR); the launcher stays out
    # of them, so that they hold only the container.
    cgroups = node_cgroups(lab, host)
    for cg in cgroups:
        cg.mkdir(parents=True, exist_ok=True)
    join = 'for g in $PODNET_CGROUPS; do echo $$ > "$g/cgroup.procs" || exit 1; done; exec "$@"'
    cmd = [
        "/bin/sh",
        "-c",
        'while :; do /bin/sh -c "$0" podnet-lab-node "$@"; rc=$?; '
        '[ "$rc" -eq 133 ] || exit "$rc"; done',
        join,
        "nsenter",
        f"--net={NETNS_DIR / lab}",
        "systemd-nspawn",
        "--boot",
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--console=read-only",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "-D",
        str(root),
        "-M",
        machine_name(lab, host),
        f"--hostname={host}",
        f"--network-bridge={bridge}",
    ]
    with open(node_dir / "nspawn.log", "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            cmd,
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "PODNET_CGROUPS": " ".join(str(c) for c in cgroups)},
        )
    (node_dir / "nspawn.pid").write_text(f"{proc.pid}\n")
    time.sleep(0.5)
    if proc.poll() is not None:
        tail = (node_dir / "nspawn.log").read_text(errors="replace")[-800:]
        raise LabError(f"{host}: systemd-nspawn exited with {proc.returncode}: {tail}")
    return True, host_key_line(root, spec.address, spec.port)


def cgroup_hierarchies(root: Path = CGROUP_ROOT) -> list[Path]:
    """The cgroup hierarchies systemd-nspawn puts a container in: the unified one alone
    (cgroup v2), or the named systemd one and the unified one (hybrid, or v1 without unified)."""
    if (root / "cgroup.controllers").exists():
        return [root]
    return [h for h in (root / "systemd", root / "unified") if (h / "cgroup.procs").exists()]


def node_cgroups(lab: str, host: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """The host's own cgroup in each hierarchy (see CGROUP_DIR)."""
    return [h / CGROUP_DIR / machine_name(lab, host) for h in cgroup_hierarchies(root)]


def cgroup_processes(cgroups: Iterable[Path]) -> list[int]:
    """Every process in these cgroups and the cgroups below them."""
    pids: set[int] = set()
    for top in cgroups:
        for procs in top.rglob("cgroup.procs") if top.is_dir() else ():
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(line) for line in procs.read_text().split()}
    return sorted(pids)


def _remove_cgroups(cgroups: Iterable[Path]) -> bool:
    """Remove cgroup folders deepest first (rmdir: a cgroup with processes stays and
    residue() reports it); then the shared podnet-lab folder when no lab uses it."""
    changed = False
    for top in cgroups:
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
            changed = True
        with contextlib.suppress(OSError):
            top.parent.rmdir()  # succeeds only when it is empty
    return changed


def _launchers(node_dir: Path) -> list[int]:
    """The node's launcher shell and systemd-nspawn (their command lines name its root)."""
    root = str(node_dir / "root")
    return [p for p in nspawn_processes(node_dir.parent.parent) if root in _cmdline(p)]


def _cleanup_node_runtime(lab: str, node_dir: Path, host: str) -> bool:
    """Stop the node's processes and unmount its root; keep its files."""
    changed = False
    root = node_dir / "root"
    launchers = _launchers(node_dir)
    if launchers:
        # The launcher shell dies at once (so it boots nothing again); systemd-nspawn asks
        # the node's systemd to power off and exits when it has.
        _kill(launchers, signal.SIGTERM)
        if _wait_gone(launchers, 20):
            _kill(launchers, signal.SIGKILL)
            _wait_gone(launchers, 5)
        changed = True
    strays = processes_under(root) + _launchers(node_dir)
    if strays:
        _kill(strays, signal.SIGKILL)
        _wait_gone(strays, 5)
        changed = True
    if mounts_under(root):
        unmount_all(root)
        changed = True
    changed |= _remove_stale_veth(lab, host)
    for base in NSPAWN_RUNTIME_DIRS:
        leftover = base / machine_name(lab, host)
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)
            changed = True
    changed |= _remove_cgroups(node_cgroups(lab, host))
    (node_dir / "nspawn.pid").unlink(missing_ok=True)
    return changed


def _remove_stale_veth(lab: str, host: str) -> bool:
    """Wait for the kernel to drop the dead node's veth, or delete it (a killed launcher)."""
    if not netns_exists(lab):
        return False
    veth = veth_name(lab, host)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _run(["ip", "-n", lab, "link", "show", "dev", veth], check=False).returncode != 0:
            return False
        time.sleep(0.1)
    _run(["ip", "-n", lab, "link", "del", "dev", veth], check=False)
    return True


def power_off(lab: str, state_dir: Path, host: str, hard: bool = False) -> bool:
    """Power a node off and keep its disk (its upper layer), as a VM stopped in its hypervisor:
    ``make lab-up`` boots it again. ``hard`` pulls the plug (SIGKILL to the node's launcher and
    every process in it, so nothing in it says goodbye); otherwise its systemd shuts down.
    False when it was not running."""
    node_dir = state_dir / "nodes" / host
    if not node_dir.is_dir():
        raise LabError(f"{host}: no such node in {state_dir / 'nodes'} (is the lab up?)")
    if nspawn_pid(node_dir) is None:
        return False
    if hard:
        # the container's processes are found by its cgroups: from this side their root
        # directory reads "/" (their own mount namespace), so processes_under() misses them
        pids = _launchers(node_dir) + cgroup_processes(node_cgroups(lab, host))
        _kill(pids, signal.SIGKILL)
        _wait_gone(pids, 5)
    _cleanup_node_runtime(lab, node_dir, host)
    return True


def stop_node(lab: str, state_dir: Path, host: str) -> bool:
    """Power the node off and remove everything of it."""
    node_dir = state_dir / "nodes" / host
    changed = _cleanup_node_runtime(lab, node_dir, host)
    if node_dir.exists():
        shutil.rmtree(node_dir)
        changed = True
    return changed


# --------------------------------------------------------------------------- residue


def residue(lab: str, state_dir: Path, hosts: Iterable[str] = ()) -> list[str]:
    """Everything of the lab that exists on this machine right now, one line each.

    ``hosts`` adds the inventory's hosts to those found in the state directory when looking
    for systemd-nspawn's per-machine runtime directories.
    """
    found: list[str] = []
    names = set(hosts)
    if (state_dir / "nodes").is_dir():
        names |= {p.name for p in (state_dir / "nodes").iterdir()}
    for netns, what in ((lab, "the lab's netns"), (router_netns(lab), "the lab's router")):
        if netns_exists(netns):
            found.append(f"netns {NETNS_DIR / netns}")
            found += [
                f"process {p} {' '.join(_cmdline(p))} in {what}"
                for p in processes_in_netns(netns)
            ]
    found += [f"process {p} {' '.join(_cmdline(p))}" for p in nspawn_processes(state_dir)]
    # the router's BIRD, also outside the router's namespace (removed by hand under it)
    in_router = set(processes_in_netns(router_netns(lab)))
    found += [f"process {p} {' '.join(_cmdline(p))}: the lab's router BIRD"
              for p in router_bird_processes(state_dir) if p not in in_router]
    found += [f"file {f}: the lab's router BIRD's" for f in
              (_router_bird_file(state_dir, e) for e in ("conf", "ctl", "pid", "log"))
              if f.exists() or f.is_symlink()]
    nodes = state_dir / "nodes"
    found += [f"process {p} rooted in the lab" for p in processes_under(nodes)]
    found += [f"mount {m}" for m in mounts_under(state_dir)]
    for base in NSPAWN_RUNTIME_DIRS:
        for host in sorted(names):
            if (base / machine_name(lab, host)).exists():
                found.append(f"nspawn runtime {base / machine_name(lab, host)} of {host}")
    for host in sorted(names):
        found += [f"cgroup {cg} of {host}" for cg in node_cgroups(lab, host) if cg.exists()]
    links = _run(["ip", "-o", "link", "show"]).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(RESERVED_LINK_PREFIXES) or name == lab:
            found.append(f"link {name} in the machine's own namespace")
    if state_dir.exists():
        found.append(f"state {state_dir}")
    return found


def host_routes_into(cidr: str) -> list[str]:
    """Routes and addresses of the machine's own namespace that reach into ``cidr``."""
    net = ipaddress.ip_network(cidr)
    found = []
    for line in _run(["ip", "-4", "-o", "route", "show", "table", "all"]).stdout.splitlines():
        dest = line.split()[0]
        if dest in ("default", "broadcast", "local", "unreachable", "blackhole"):
            dest = line.split()[1] if dest != "default" else "0.0.0.0/0"
        try:
            target = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            continue
        if target.prefixlen > 0 and target.overlaps(net):
            found.append(f"route {line.strip()}")
    for line in _run(["ip", "-4", "-o", "addr", "show"]).stdout.splitlines():
        addr = ipaddress.ip_interface(line.split()[3])
        if addr.network.overlaps(net):
            found.append(f"address {line.split()[1]} {addr}")
    return found


def route_into_lab(route: Mapping[str, Any] | None, links: Mapping[str, Mapping[str, Any]],
                   lab_nsid: int | None) -> str | None:
    """Why the kernel's route for a lab address (one entry of ``ip -j route get ADDRESS``, None
    when the kernel has none) would deliver a packet into the lab or keep it on this machine;
    None when it would not. ``links`` are this namespace's links (``ip -j -d link show``) by
    name, ``lab_nsid`` the lab namespace's id as this namespace knows it (``ip -j netns list``).

    The lab's namespace joins this one only through a link whose other end lives there (a veth
    pair); a route over such a link, or an address of this machine, is a way in. Anything else
    (the default route towards the machine's own network, no route at all) is not.
    """
    if route is None:
        return None
    if route.get("type") == "local":
        return f"{route.get('dst')} is an address of this machine itself"
    device = str(route.get("dev", ""))
    link = links.get(device)
    if link is None:
        raise LabError(f"the route to {route.get('dst')} leaves through {device!r}, which "
                       "ip link does not list: cannot tell where it leads")
    if lab_nsid is not None and link.get("link_netnsid") == lab_nsid:
        return f"{device} leads into the lab's network namespace"
    return None


def kernel_route(address: str) -> dict[str, Any] | None:
    """The route the kernel would take to ``address`` from this namespace (``ip route get``,
    which sends nothing); None when it has none ("Network is unreachable")."""
    proc = _run(["ip", "-j", "route", "get", address], check=False)
    if proc.returncode != 0:
        if "unreachable" in proc.stderr.lower():
            return None
        raise LabError(f"ip route get {address}: {proc.stderr.strip()}")
    found: list[dict[str, Any]] = json.loads(proc.stdout)
    return found[0]


def namespace_links() -> dict[str, dict[str, Any]]:
    """This namespace's links by name, with details (``ip -j -d link show``)."""
    links: list[dict[str, Any]] = json.loads(_run(["ip", "-j", "-d", "link", "show"]).stdout)
    return {link["ifname"]: link for link in links}


def netns_id(name: str) -> int | None:
    """The id this namespace has given the named namespace (None when it has none: then no link
    of this namespace leads there)."""
    listed: list[dict[str, Any]] = json.loads(_run(["ip", "-j", "netns", "list"]).stdout or "[]")
    return next((int(n["id"]) for n in listed if n.get("name") == name and "id" in n), None)


# --------------------------------------------------------------------------- image contents


def role_packages(roles_dir: str | Path) -> list[str]:
    """Every package named by a role's ``<role>_packages`` default, sorted and unique.

    The lab's package mirror carries these (and their dependencies): the hosts install them
    from it as VMs install from their site's mirror.
    """
    import yaml  # local: only the controller needs it

    found: set[str] = set()
    for defaults in sorted(Path(roles_dir).glob("*/defaults/main.yml")):
        data = yaml.safe_load(defaults.read_text()) or {}
        role = defaults.parent.parent.name
        for key, value in data.items():
            if key.endswith("_packages") and key.startswith(role):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise LabError(f"{defaults}: {key} must be a list of package names")
                found.update(value)
    return sorted(found)


def teardown(lab: str, state_dir: Path) -> bool:
    """Remove the whole lab: every node, stray process, mount, runtime dir, netns, file."""
    changed = False
    nodes = state_dir / "nodes"
    if nodes.is_dir():
        for node_dir in sorted(p for p in nodes.iterdir() if p.is_dir()):
            changed |= stop_node(lab, state_dir, node_dir.name)
    strays = nspawn_processes(state_dir) + processes_under(state_dir)
    if strays:
        _kill(strays, signal.SIGKILL)
        _wait_gone(strays, 5)
        changed = True
    if mounts_under(state_dir):
        unmount_all(state_dir)
        changed = True
    # the router's BIRD by its command line (also one outside the router's namespace), then the
    # router: its veths go with its namespace, and their ends in the lab's with them
    changed |= stop_router_bird(state_dir)
    for netns in (router_netns(lab), lab):
        changed |= _kill_in_netns(netns)
        changed |= remove_netns(netns)
    if state_dir.exists():
        shutil.rmtree(state_dir)
        changed = True
    return changed
