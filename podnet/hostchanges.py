"""Every change podnet makes on a host, in one list: ``playbooks/reset.yml`` (the node_reset
role) undoes them, its residue check looks for each one, and docs/host-changes.md explains them.

Two views of the same facts:

- ``changes()``: what podnet changes, which role makes the change, how reset undoes it, or why
  reset keeps it (docs/host-changes.md lists each one; tests/test_hostchanges.py checks that it
  does).
- ``node_catalogue()``: the same things as concrete data for one host: paths, unit and chain
  names, and the host's own values of the role variables they depend on. The podnet_reset
  module acts on this data. It runs on the host and cannot import this package, so it gets the
  data as its argument.

Where a role or a node tool spells a name (the modules-load file, the routes' protocol number,
the units that are masked), this module spells it once more for the host side, and
tests/test_hostchanges.py fails if the two ever differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from podnet import proxier
from podnet.addresses import parse_network
from podnet.paths import PATHS, NodePaths
from podnet.settings import DEFAULTS

ROLES_DIR = Path(__file__).resolve().parents[1] / "roles"

# names that roles and node tools spell, repeated here for the host side (the tests compare)
UNIT_DIR = "/etc/systemd/system"  # every podnet unit file, and systemctl mask's /dev/null links
UNIT_PREFIX = "podnet-"  # every podnet unit: tools' services, sandboxes, containers
MODULES_FILE = "/etc/modules-load.d/podnet.conf"  # node_base: modules loaded at boot
FACT_FILE = "podnet.fact"  # the kubelet role's local fact, in PATHS.facts_dir
ROUTE_PROTO = "152"  # podnet-routes marks its routes with this routing protocol number
# the bgp backend's BIRD installs what it learns with its own protocol number (rtnetlink's
# RTPROT_BIRD, "bird" in iproute2's names), and the vxlan backend's device is podnet.<VNI>
BIRD_PROTO = "12"
VXLAN_PREFIX = "podnet."  # podnet/backends.py VXLAN_DEVICE_PREFIX (the tests compare)
PODNET_CHAIN_PREFIX = "PODNET-"  # pod_network's own chains (PODNET-POSTROUTING)
# the CNI portmap plugin's chains (hostPorts): its shared ones and one per pod that maps ports
PORTMAP_CHAIN_PREFIXES = ("CNI-HOSTPORT-", "CNI-DN-")
PODNET_COMMENT = "podnet:"  # how pod_network's rules and jumps begin their comments
# masked by the cluster_dns, upstream_dns and ingress_nginx roles in their task files (the
# kubelet role masks kubelet_masked_services): the distribution's unbound and nginx, replaced
# by podnet's own instances
ALSO_MASKED = ("unbound.service", "nginx.service", "bird.service")
# entries of the state root that are the lab controller's, never a host's (podnet/lab.py keeps
# each lab's state in /var/lib/podnet/labs/<lab>): reset and its check leave them alone
CONTROLLER_ONLY = ("labs",)
# the node tools' own state (their constants: podnet-iptables APPLIED and LOCK, podnet-dns
# APPLIED, podnet-kube-proxy LOCK, podnet-cni BRIDGE_LOCK): under the roots reset removes whole
# (a test checks both)
TOOL_STATE = ("/var/lib/podnet/iptables", "/var/lib/podnet/cluster-dns",
              "/run/podnet/iptables.lock", "/run/podnet/kube-proxy.lock",
              "/run/podnet/cni-bridge.lock",
              "/var/lib/podnet/cloud-lb/saved.json")
# podnet-cloud-lb (the external_lb role, on the lb host) marks what it puts in the kernel: its
# rules, nexthops and routes carry this routing protocol, its routes live in this table, its
# addresses on lo carry this label (the tool's PROTO, TABLE, LABEL; the tests compare)
CLOUD_LB_TOOL = "podnet-cloud-lb"
CLOUD_LB_UNIT = f"{UNIT_PREFIX}cloud-lb.service"
CLOUD_LB_PROTO = "153"
CLOUD_LB_TABLE = "153"
CLOUD_LB_LABEL = "lo:podnetlb"
# the variables the catalogue reads: (variable, role whose defaults/main.yml gives its default)
ROLE_INPUTS = (
    ("node_base_sysctls", "node_base"), ("node_base_sysctl_file", "node_base"),
    ("node_base_packages", "node_base"),
    ("cni_packages", "cni"), ("kubelet_packages", "kubelet"),
    ("kubelet_masked_services", "kubelet"), ("cluster_dns_packages", "cluster_dns"),
    ("upstream_dns_packages", "upstream_dns"), ("upstream_dns_dir", "upstream_dns"),
    ("upstream_dns_service", "upstream_dns"),
    ("external_lb_sysctls", "external_lb"), ("external_lb_sysctl_file", "external_lb"),
    ("l2_announce_packages", "l2_announce"), ("ingress_nginx_packages", "ingress_nginx"),
    ("pod_network_bgp_packages", "pod_network"),
)
SETTINGS_INPUTS = ("podnet_cluster_cidr", "podnet_service_cidr")
# the LoadBalancer pool: every /32 in it on a host's interface is podnet's (empty: no pool)
POOL_INPUT = "podnet_lb_pool"
# l2 mode's keepalived, under podnet's own unit name (Debian's keepalived.service untouched)
KEEPALIVED_UNIT = f"{UNIT_PREFIX}keepalived.service"
RECORD_VERSION = 1


@dataclass(frozen=True)
class Change:
    """One kind of change podnet makes on a host."""

    kind: str  # how the residue check names it: file, unit, netns, link, route, iptables, ...
    what: str  # where on the host
    role: str  # the role (or the node tool it runs) that makes it
    undo: str  # what reset does about it
    kept: str = ""  # why reset leaves it as it is (empty: reset undoes it)


def changes(paths: NodePaths = PATHS) -> tuple[Change, ...]:
    """Every change podnet makes on a host, in the order reset undoes them."""
    p = paths
    return (
        Change("unit", f"{UNIT_PREFIX}iptables-canary.service, {UNIT_PREFIX}endpoints.service, "
               f"{CLOUD_LB_UNIT}", "kube_proxy, external_lb",
               "stopped first, so that nothing puts the rules (or the load balancer's routes) "
               "back during reset"),
        Change("kernel", f"the LoadBalancer addresses on lo (label {CLOUD_LB_LABEL}); rules with "
               f"protocol {CLOUD_LB_PROTO} (per Service port `iif <underlay> to <address> "
               f"ipproto .. dport ..`, and the local rule moved from pref 0 to 1000); nexthops "
               f"and nexthop groups with protocol {CLOUD_LB_PROTO}; routes in table "
               f"{CLOUD_LB_TABLE}; send_redirects=0 on the underlay interface",
               f"external_lb ({CLOUD_LB_TOOL})",
               f"`{CLOUD_LB_TOOL} clean`: the local rule back at pref 0 first, then the rest, "
               "found by their marks; the interface's send_redirects back to the value it saved"),
        Change("unit", f"{KEEPALIVED_UNIT} (l2 mode: keepalived, announcing the "
               "LoadBalancer addresses)", "l2_announce",
               "stopped with podnet's other units: keepalived removes the addresses it holds as "
               "it stops and tells the other nodes (priority 0), which take them over"),
        Change("address", "LoadBalancer addresses: /32s of podnet_lb_pool on an interface "
               "(l2 mode: the node's underlay interface)", "l2_announce (keepalived)",
               "any one left (its keepalived was killed) is deleted after the units stop; no "
               "other address is touched"),
        Change("unit", f"{UNIT_PREFIX}sandbox@<pod>.service and {UNIT_PREFIX}<pod>-<container>"
               ".service (pods)", "kubelet",
               "stopped and disabled by `podnet-cni remove <pod>`; a pod that cannot be removed "
               "that way has its units stopped and its namespace deleted directly"),
        Change("netns", f"{p.netns_dir}/<namespace>_<name> (a pod's network namespace)",
               "kubelet (podnet-cni up)",
               "CNI DEL through `podnet-cni remove`, then `ip netns delete` for any left: those "
               f"named by podnet's pod files and CNI cache, and those whose veth is on "
               f"{p.cni_bridge}"),
        Change("cni", f"{p.cni_reservations}/<ip> (host-local's reservations) and "
               f"{p.stable_reservations}/<ip> (podnet-ipam's, pods that keep their address)",
               "kubelet (CNI ADD)", "released by CNI DEL; the folders are removed"),
        Change("iptables", "nat chains CNI-HOSTPORT-DNAT, -SETMARK, -MASQ and CNI-DN-<id> with "
               "their jumps from PREROUTING, OUTPUT and POSTROUTING (pods' hostPorts); "
               f"route_localnet on {p.cni_bridge} (portmap's, for the node's own connections "
               "to 127.0.0.1)",
               "kubelet (CNI portmap plugin)", "a pod's by its CNI DEL; the shared ones by "
               "podnet-cni after the DEL of the last pod with hostPorts; any left are removed "
               "with podnet's other chains"),
        Change("cni", f"{p.cni_cache_dir}/{p.cni_network}-<id>-eth0, lo-<id>-lo (CNI cache)",
               "kubelet (podnet-cni)", "removed by CNI DEL; any left of podnet's pods removed "
               "(a loopback entry is podnet's when its container id is podnet's hash of the pod)"),
        Change("link", f"{p.cni_bridge} (the pods' bridge) and the pods' veths (on the bridge; "
               "or, for pods that keep their address, point to point: ptp's, each with the pod "
               "gateway and a route to the pod's /32)",
               "kubelet (CNI bridge and ptp plugins)",
               "veths go with their namespaces (ptp's with their address and route); the veths "
               "still on the bridge are deleted, then the bridge (its connected route goes "
               "with it)"),
        Change("link", f"{VXLAN_PREFIX}<VNI> (the vxlan backend's device, with its forwarding "
               "and neighbour entries)", "pod_network (podnet-routes)",
               "deleted (its entries and routes go with it); no other VXLAN device is touched"),
        Change("route", f"routes with protocol {ROUTE_PROTO}: other nodes' pod CIDRs and the "
               "/32s of their pods that keep their address (host-gw, vxlan) and the Service "
               "CIDR; with protocol {BIRD_PROTO}: those BIRD learnt "
               "(bgp, kept in the kernel while BIRD restarts)",
               "pod_network (podnet-routes, podnet-bird)",
               f"deleted: every route with protocol {ROUTE_PROTO} or {BIRD_PROTO}, in every "
               "table, after podnet-bird stopped; no other route is touched"),
        Change("iptables", f"chains {PODNET_CHAIN_PREFIX}* and kube-proxy's layout: "
               + ", ".join(fixed_chains()) + ", and " + ", ".join(
                   f"{x}*" for x in proxier.OWNED_PREFIXES) + " (every table)",
               "pod_network, kube_proxy (podnet-iptables)",
               "flushed and deleted in one iptables-restore --noflush per variant in use "
               "(iptables-nft; iptables-legacy when the kernel has legacy tables); no other "
               "chain is flushed or deleted"),
        Change("iptables", "jumps into those chains from other chains (PREROUTING, OUTPUT, "
               f"POSTROUTING, INPUT, FORWARD) and rules commented \"{PODNET_COMMENT} ...\"",
               "pod_network, kube_proxy (podnet-iptables .jumps files)",
               "deleted rule by rule (-D) in the same transaction; other rules stay"),
        Change("conntrack", "flows to the Service CIDR, from the cluster CIDR, or answered from "
               "it (NATed to a pod)", "kube_proxy (the Services' DNAT)",
               "deleted with conntrack -D (by CIDR; per pod address for the NATed ones)"),
        Change("file", f"{UNIT_DIR}/{UNIT_PREFIX}* (unit files) and their links in "
               "*.wants/", "pod_network, kubelet, kube_proxy, upstream_dns, external_lb, "
               "l2_announce",
               "units stopped, disabled, files removed, daemon-reload, reset-failed"),
        Change("file", f"{p.bin_dir}/{UNIT_PREFIX}* (node tools; and an old "
               f"{Path(p.bin_dir).parent}/bin/podnet-netexec)", "every node role",
               "removed"),
        Change("file", f"{p.lib_dir} (kube-proxy's renderer, the ingress controller's nginx "
               "renderer)", "kube_proxy, ingress_nginx", "removed"),
        Change("file", f"{config_root(p)} (pods, rules, routes, DNS records, upstream DNS "
               "config, the load balancer's config, keepalived's config, the ingress input "
               "(ingress_dir) and each controller pod's nginx.conf and TLS files)",
               "cni, pod_network, kubelet, kube_proxy, cluster_dns, upstream_dns, external_lb, "
               "l2_announce, ingress_nginx (podnet-ingress)",
               "removed"),
        Change("file", f"{state_root(p)} (pod state, kube-proxy input, applied rules, DNS "
               "state)", "kubelet, kube_proxy, node tools",
               "removed, but for the lab controller's labs/ folder (never on a host)"),
        Change("file", f"{run_root(p)} (readiness, tool locks)",
               "kube_proxy (podnet-endpoints, podnet-iptables)", "removed"),
        Change("file", f"{p.network_conf}, {p.stable_network_conf}, {p.loopback_conf}, and "
               f"podnet's IPAM plugin {p.ipam_plugin}", "cni",
               "removed; the folders are removed when empty"),
        Change("file", f"{p.facts_dir}/{FACT_FILE} (the pods' local fact)", "kubelet",
               "removed; the folder (and /etc/ansible) when empty"),
        Change("file", f"{MODULES_FILE} (br_netfilter, overlay at boot)", "node_base",
               "removed", kept="modules already loaded stay loaded: unloading br_netfilter "
               "would break anything else on the host that filters bridged traffic"),
        Change("sysctl", "node_base_sysctls (net.ipv4.ip_forward, "
               "net.bridge.bridge-nf-call-iptables) in node_base_sysctl_file; external_lb_sysctls "
               "(net.ipv4.fib_multipath_hash_policy, send_redirects of all and default) in "
               "external_lb_sysctl_file", "node_base, external_lb",
               "the file is removed; the running values go back to the record's",
               kept="without a record the running values stay (reset says which): podnet "
               "cannot know what they were"),
        Change("mask", "kubelet_masked_services (nginx, unbound, unbound-resolvconf), "
               "unbound.service, nginx.service and bird.service", "kubelet, cluster_dns, "
               "upstream_dns, ingress_nginx, pod_network (bgp)",
               "unmasked, except those the record says were masked before podnet; without a "
               "record, unmasked when the host has other traces of podnet. They stay stopped",
               kept="their enablement at boot is what their packages set"),
        Change("package", "node_base_packages, cni_packages, kubelet_packages, "
               "cluster_dns_packages, upstream_dns_packages, ingress_nginx_packages (nginx, "
               "openssl), l2_announce_packages (keepalived: "
               "its own keepalived.service is left as the package set it, and starts only "
               "with a /etc/keepalived/keepalived.conf, which podnet never writes), "
               "pod_network_bgp_packages (bird2, on nodes that ran bgp)", "every role",
               "kept: removing a package can remove what the host needs (kubespray's reset "
               "keeps them too)", kept="the record tells which podnet installed: reset lists "
               "them so they can be removed by hand"),
        Change("record", f"{p.host_record} (the host before podnet)",
               "node_reset (record.yml, from site.yml's first host play)",
               "used by reset, then removed last"),
    )


def config_root(paths: NodePaths = PATHS) -> str:
    """The folder that holds podnet's node configuration (/etc/podnet)."""
    return str(Path(paths.pods_dir).parent)


def state_root(paths: NodePaths = PATHS) -> str:
    """The folder that holds podnet's node state (/var/lib/podnet)."""
    return str(Path(paths.pod_state_dir).parent)


def run_root(paths: NodePaths = PATHS) -> str:
    """The folder that holds podnet's runtime state (/run/podnet)."""
    return str(Path(paths.unready_pods).parent)


def fixed_chains() -> list[str]:
    """kube-proxy's chains that exist whatever the Services, as podnet's renderer declares them
    (every option on that adds one)."""
    options = proxier.Options(node_name="", node_ip="192.0.2.1", cluster_cidr="198.51.100.0/24",
                              localhost_nodeports=True)
    text = proxier.rules_file([], options)
    return sorted({line[1:].split()[0] for line in text.splitlines() if line.startswith(":")})


def container_id(namespace: str, name: str) -> str:
    """The container id podnet gives a pod's sandbox (podnet/kubelet.py), spelled as the
    podnet_reset module computes it to recognise podnet's loopback CNI cache entries."""
    return hashlib.sha256(f"podnet/{namespace}/{name}".encode()).hexdigest()


def role_defaults(role: str) -> dict[str, Any]:
    """A role's defaults/main.yml."""
    path = ROLES_DIR / role / "defaults" / "main.yml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping of variables")
    return data


def _str_list(value: Any, name: str, empty: bool) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) \
            or (not value and not empty):
        raise ValueError(f"{name}: {value!r} is not a list of names; give a YAML list of "
                         "strings in the inventory")
    return list(value)


def _path(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{name}: {value!r} is not an absolute path; give one such as "
                         "/etc/podnet/... in the inventory")
    return value


def inputs(variables: Mapping[str, Any]) -> dict[str, Any]:
    """The values the catalogue reads: the host's own (``variables``: what the inventory sets),
    else each role's default, else podnet's settings default."""
    v: dict[str, Any] = {}
    for name, role in ROLE_INPUTS:
        value = variables.get(name)
        v[name] = role_defaults(role)[name] if value is None else value
    for name in (*SETTINGS_INPUTS, POOL_INPUT):
        value = variables.get(name)
        v[name] = DEFAULTS[name] if value is None else value
    return v


def node_catalogue(v: Mapping[str, Any], paths: NodePaths = PATHS,
                   root: str = "") -> dict[str, Any]:
    """What podnet_reset acts on for one host, from ``inputs()``. ValueError names the variable
    and the fix. ``root`` moves the system places this module names (the unit folder, the
    modules-load file) under a test's folder."""
    cidrs = {}
    for name in SETTINGS_INPUTS:
        try:
            cidrs[name] = str(parse_network(v[name]))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}; fix it in the inventory") from None
    pool = v.get(POOL_INPUT) or ""
    if pool:
        try:
            pool = str(parse_network(pool))
        except ValueError as exc:
            raise ValueError(f"{POOL_INPUT}: {exc}; fix it in the inventory") from None
    sysctls: dict[str, Any] = {}
    for name in ("node_base_sysctls", "external_lb_sysctls"):
        given = v[name]
        if not isinstance(given, Mapping) or not all(isinstance(k, str) for k in given):
            raise ValueError(f"{name}: {given!r} is not a mapping of sysctl names to "
                             "values; give one such as {net.ipv4.ip_forward: 1}")
        sysctls.update(given)
    masked = _str_list(v["kubelet_masked_services"], "kubelet_masked_services", empty=True)
    packages = sorted({p for name in ("node_base_packages", "cni_packages", "kubelet_packages",
                                      "cluster_dns_packages", "upstream_dns_packages",
                                      "l2_announce_packages", "ingress_nginx_packages")
                       for p in _str_list(v[name], name, empty=True)})
    service = v["upstream_dns_service"]
    if not isinstance(service, str) or not service.endswith(".service"):
        raise ValueError(f"upstream_dns_service: {service!r} is not a unit name such as "
                         "podnet-upstream-dns.service")
    bin_parent = str(Path(paths.bin_dir).parent)
    return {
        "version": RECORD_VERSION,
        "record": paths.host_record,
        "units": {"dir": root + UNIT_DIR, "prefix": UNIT_PREFIX,
                  # stopped before anything else: both put podnet's rules back
                  "first": [f"{UNIT_PREFIX}iptables-canary.service",
                            f"{UNIT_PREFIX}endpoints.service", CLOUD_LB_UNIT],
                  "sandbox": f"{UNIT_PREFIX}sandbox@",
                  # a renamed upstream DNS unit is podnet's even without the prefix
                  "extra": [] if service.startswith(UNIT_PREFIX) else [service]},
        "pods": {"dir": paths.pods_dir, "state_dir": paths.pod_state_dir,
                 "runtime": paths.cni_runtime},
        "cni": {"network": paths.cni_network, "bridge": paths.cni_bridge,
                "cache_dir": paths.cni_cache_dir, "reservations": paths.cni_reservations,
                "files": [paths.network_conf, paths.stable_network_conf, paths.loopback_conf,
                          paths.ipam_plugin, paths.stable_reservations]},
        "routes": {"proto": ROUTE_PROTO, "protos": [ROUTE_PROTO, BIRD_PROTO],
                   "vxlan_prefix": VXLAN_PREFIX},
        "cloud_lb": {"tool": paths.tool(CLOUD_LB_TOOL), "proto": CLOUD_LB_PROTO,
                     "table": CLOUD_LB_TABLE, "label": CLOUD_LB_LABEL},
        "lb_addresses": {"pool": pool},
        "iptables": {"dir": paths.iptables_dir, "chains": fixed_chains(),
                     "prefixes": [PODNET_CHAIN_PREFIX, *proxier.OWNED_PREFIXES,
                                  *PORTMAP_CHAIN_PREFIXES],
                     "comment": PODNET_COMMENT},
        "conntrack": {"service_cidr": cidrs["podnet_service_cidr"],
                      "cluster_cidr": cidrs["podnet_cluster_cidr"]},
        # removed whole: podnet's own folders and files
        "trees": [config_root(paths), run_root(paths), paths.lib_dir,
                  _path(v["upstream_dns_dir"], "upstream_dns_dir"),
                  f"{paths.facts_dir}/{FACT_FILE}", root + MODULES_FILE,
                  _path(v["node_base_sysctl_file"], "node_base_sysctl_file"),
                  _path(v["external_lb_sysctl_file"], "external_lb_sysctl_file")],
        "globs": [f"{paths.bin_dir}/{UNIT_PREFIX}*", f"{bin_parent}/bin/podnet-netexec"],
        "state_root": {"path": state_root(paths), "keep": list(CONTROLLER_ONLY)},
        # removed when empty (they may hold what is not podnet's)
        "empty_dirs": [paths.cni_conf_dir, paths.cni_reservations, paths.cni_ipam_dir,
                       paths.cni_cache_dir, str(Path(paths.cni_cache_dir).parent),
                       str(Path(paths.cni_conf_dir).parent), paths.facts_dir,
                       str(Path(paths.facts_dir).parent)],
        "sysctls": sorted(str(k) for k in sysctls),
        "masked": sorted({*masked, *ALSO_MASKED}),
        "packages": packages,
    }


def table(paths: NodePaths = PATHS) -> str:
    """``changes()`` as the Markdown table docs/host-changes.md holds (between its
    ``hostchanges`` markers; ``python -m podnet.hostchanges`` prints it)."""
    rows = ["| kind | what, where | made by | reset | left as it is |", "|---|---|---|---|---|"]
    for c in changes(paths):
        cells = [c.kind, c.what, c.role, c.undo, c.kept or "-"]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(table(), end="")
