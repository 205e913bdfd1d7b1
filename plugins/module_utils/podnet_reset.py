"""The node side of podnet's reset (roles/node_reset): undo every change podnet made on this
host, list what is left of them, and record the host before podnet's first change.

Everything it acts on comes from the catalogue (podnet/hostchanges.py ``node_catalogue``, the
module's argument): paths, unit and chain names, the host's values. It recognises podnet's
things by what only podnet makes (its paths, the ``podnet-`` units, routing protocol 152, the
chains its rule files declare and kube-proxy's chain names, rules commented ``podnet:``, its
pods' namespaces and CNI entries) and leaves everything else alone. Standard library only: this
runs on the node.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ansible.module_utils.podnet_sync import Report, SyncError, must, remove_path, run, write_atomic

Catalogue = dict[str, Any]
TABLES = ("raw", "mangle", "nat", "filter", "security")
# a pod's network namespace: <namespace>_<name> (podnet/kubelet.py pod_id), both DNS names
POD_NETNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?_[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
SYSCTL_DIR = Path("/proc/sys")
LEGACY_TABLES = Path("/proc/net/ip_tables_names")


# -- reading the host ---------------------------------------------------------------------------
def read_record(cat: Catalogue) -> dict[str, Any] | None:
    """The host as it was before podnet (record mode wrote it), or None."""
    path = Path(cat["record"])
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SyncError(f"{path}: not a podnet host record ({exc}); remove it to reset without "
                        "one (sysctls and masks are then left as they are)") from None
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(data, dict) or version != cat["version"]:
        raise SyncError(f"{path}: record version {version} is not {cat['version']}; remove it "
                        "to reset without one")
    return data


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def file_traces(cat: Catalogue) -> list[str]:
    """podnet's files and folders on this host (not the record): each one a residue line."""
    found = [f"file {p}" for p in [*cat["trees"], *cat["cni"]["files"]] if _exists(Path(p))]
    for pattern in cat["globs"]:
        folder, _, glob = pattern.rpartition("/")
        if Path(folder).is_dir():
            found += [f"file {p}" for p in sorted(Path(folder).glob(glob))]
    root = Path(cat["state_root"]["path"])
    if root.is_dir():
        keep = {*cat["state_root"]["keep"], Path(cat["record"]).name}
        found += [f"file {p}" for p in sorted(root.iterdir()) if p.name not in keep]
    reservations = Path(cat["cni"]["reservations"])
    if _exists(reservations):
        found.append(f"file {reservations}")
    found += [f"file {p}" for p in podnet_cache_entries(cat)]
    unit_dir = Path(cat["units"]["dir"])
    found += [f"file {p}" for p in unit_files(cat)]
    if unit_dir.is_dir():
        found += [f"file {p}" for p in sorted(unit_dir.glob(f"*.wants/{cat['units']['prefix']}*"))]
    return found


def unit_files(cat: Catalogue) -> list[Path]:
    unit_dir = Path(cat["units"]["dir"])
    if not unit_dir.is_dir():
        return []
    names = {p.name for p in unit_dir.glob(f"{cat['units']['prefix']}*")}
    names |= {n for n in cat["units"]["extra"] if _exists(unit_dir / n)}
    return [unit_dir / n for n in sorted(names)]


def loaded_units(cat: Catalogue) -> dict[str, tuple[str, str]]:
    """podnet's units systemd has loaded: {unit: (load state, active state)}."""
    if not shutil.which("systemctl"):
        return {}
    patterns = [f"{cat['units']['prefix']}*", *cat["units"]["extra"]]
    proc = run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "--full",
                "--no-pager", "--", *patterns])
    # UNIT LOAD ACTIVE SUB DESCRIPTION; a unit whose file is gone but which systemd still
    # holds (failed, or running) is listed too, as not-found
    return {words[0]: (words[1], words[2]) for words in map(str.split, proc.stdout.splitlines())
            if len(words) >= 3}


def pod_dirs(cat: Catalogue) -> list[Path]:
    folder = Path(cat["pods"]["dir"])
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _netns_name(value: str) -> str:
    return value.rstrip("/").rpartition("/")[2]


def cache_entries(cat: Catalogue) -> list[tuple[Path, dict[str, Any]]]:
    folder = Path(cat["cni"]["cache_dir"])
    if not folder.is_dir():
        return []
    return [(p, _json(p)) for p in sorted(folder.iterdir()) if p.is_file()]


def _sandbox(entry: dict[str, Any]) -> str:
    for iface in (entry.get("result") or {}).get("interfaces") or []:
        if isinstance(iface, dict) and iface.get("sandbox"):
            return str(iface["sandbox"])
    return ""


def is_podnet_container(container: str, netns: str) -> bool:
    """Whether ``container`` is the id podnet gives the pod whose namespace is ``netns``:
    sha256("podnet/<namespace>/<name>"), the namespace named <namespace>_<name>."""
    namespace, sep, name = netns.partition("_")
    return bool(sep) and container == hashlib.sha256(
        f"podnet/{namespace}/{name}".encode()).hexdigest()


def podnet_cache_entries(cat: Catalogue) -> list[Path]:
    """CNI cache entries of podnet's network, and loopback entries of podnet's pods."""
    out = []
    for path, entry in cache_entries(cat):
        if path.name.startswith(f"{cat['cni']['network']}-") or is_podnet_container(
                str(entry.get("containerId", "")), _netns_name(_sandbox(entry))):
            out.append(path)
    return out


def ip_json(*argv: str) -> list[dict[str, Any]]:
    if not shutil.which("ip"):
        return []
    proc = run(["ip", "-j", *argv])
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    data = json.loads(proc.stdout)
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def lb_addresses(cat: Catalogue) -> list[tuple[str, str]]:
    """The LoadBalancer addresses on this host's interfaces, as (address, interface): every /32
    inside podnet_lb_pool (l2 mode's keepalived holds them on the nodes; one it could not remove,
    killed, stays until reset)."""
    pool = cat.get("lb_addresses", {}).get("pool")
    if not pool:
        return []
    network = ipaddress.ip_network(pool)
    found = [(str(a["local"]), str(link.get("ifname", "")))
             for link in ip_json("-4", "addr", "show") for a in link.get("addr_info", [])
             if a.get("family") == "inet" and a.get("prefixlen") == 32
             and ipaddress.ip_address(a["local"]) in network]
    return sorted(found, key=lambda f: (ipaddress.ip_address(f[0]), f[1]))


def netns_names() -> dict[int, str]:
    """Named network namespaces: {id or -index: name}."""
    out = {}
    for i, ns in enumerate(ip_json("netns", "list")):
        nsid = ns.get("id")
        out[int(nsid) if isinstance(nsid, int) else -1 - i] = str(ns.get("name", ""))
    return out


def bridge_ports(cat: Catalogue) -> list[dict[str, Any]]:
    if not ip_json("link", "show", "dev", cat["cni"]["bridge"]):
        return []
    return ip_json("link", "show", "master", cat["cni"]["bridge"])


def podnet_netns(cat: Catalogue) -> set[str]:
    """Namespaces podnet made: named by its pod files and CNI cache, or holding the other end
    of a veth on its bridge."""
    names = set()
    for folder in pod_dirs(cat):
        names.add(_netns_name(str(_json(folder / "pod.json").get("netns", ""))))
    state = Path(cat["pods"]["state_dir"])
    if state.is_dir():
        names |= {_netns_name(str(_json(p).get("netns", ""))) for p in state.glob("*/state.json")}
    names |= {_netns_name(_sandbox(_json(p))) for p in podnet_cache_entries(cat)}
    ids = netns_names()
    for port in bridge_ports(cat):
        nsid = port.get("link_netnsid")
        if isinstance(nsid, int) and nsid in ids:
            names.add(ids[nsid])
    existing = set(ids.values())
    return {n for n in names if n and n in existing}


def podnet_routes(cat: Catalogue) -> list[dict[str, Any]]:
    """podnet's routes in every table: podnet-routes' and BIRD's (bgp), each with "protocol"."""
    return [{**route, "protocol": proto} for proto in cat["routes"]["protos"]
            for route in ip_json("-4", "route", "show", "table", "all", "proto", proto)]


def vxlan_devices(cat: Catalogue) -> list[str]:
    """The vxlan backend's devices (podnet.<VNI>); another VXLAN device is not podnet's."""
    return sorted(str(link.get("ifname")) for link in ip_json("link", "show", "type", "vxlan")
                  if str(link.get("ifname", "")).startswith(cat["routes"]["vxlan_prefix"]))


def cloud_lb_residue(cat: Catalogue) -> list[str]:
    """What podnet-cloud-lb left in the kernel, found by its marks (its label on lo, its routing
    protocol on rules and nexthops, its table), and a local rule that is not back at pref 0."""
    lb = cat["cloud_lb"]
    left = [f"address {a.get('local')} on lo (label {lb['label']})"
            for link in ip_json("address", "show", "dev", "lo")
            for a in link.get("addr_info", []) if a.get("label") == lb["label"]]
    rules = ip_json("rule", "show")
    left += [f"rule pref {r.get('priority')} (protocol {lb['proto']}) to {r.get('dst', 'all')} "
             f"lookup {r.get('table')}" for r in rules if str(r.get("protocol")) == lb["proto"]]
    if rules and not any(r.get("table") == "local" and r.get("priority") == 0 for r in rules):
        left.append("rule pref 0 lookup local is missing (podnet-cloud-lb moves it)")
    left += [f"nexthop id {n.get('id')} (protocol {lb['proto']})"
             for n in ip_json("nexthop", "show", "protocol", lb["proto"])]
    left += [f"route {r.get('dst')} (table {lb['table']})"
             for r in ip_json("-4", "route", "show", "table", lb["table"])]
    return left


# -- iptables -----------------------------------------------------------------------------------
def iptables_variants() -> list[str]:
    """The iptables variants in use here: nft's, and legacy's when the kernel has legacy tables
    in this namespace (asking legacy otherwise would load its modules)."""
    out = []
    if shutil.which("iptables-nft-save"):
        out.append("iptables-nft")
    if shutil.which("iptables-legacy-save") and LEGACY_TABLES.exists() \
            and LEGACY_TABLES.read_text().split():
        out.append("iptables-legacy")
    if not out and shutil.which("iptables-save"):
        out.append("iptables")
    return out


def declared_by_files(cat: Catalogue) -> tuple[set[str], list[str]]:
    """Chains podnet's rule files declare, and the prefixes their .owns files claim."""
    chains: set[str] = set()
    prefixes: list[str] = []
    folder = Path(cat["iptables"]["dir"])
    if folder.is_dir():
        for path in sorted(folder.glob("*.rules")):
            chains |= {line[1:].split()[0] for line in path.read_text().splitlines()
                       if line.startswith(":") and len(line) > 1}
        for path in sorted(folder.glob("*.owns")):
            for line in path.read_text().splitlines():
                prefixes += line.split("#")[0].split()[1:]
    return chains, prefixes


class Table:
    """One table of an iptables-save dump: its chains and rules, and which are podnet's."""

    def __init__(self, name: str, lines: list[str]) -> None:
        self.name = name
        self.builtin: set[str] = set()
        self.chains: list[str] = []
        self.rules: list[tuple[str, list[str], str]] = []  # chain, words, the line
        for line in lines:
            if line.startswith(":"):
                words = line[1:].split()
                self.chains.append(words[0])
                if len(words) > 1 and words[1] != "-":
                    self.builtin.add(words[0])
            elif line.startswith("-A "):
                words = shlex.split(line)
                self.rules.append((words[1], words, line))

    def owned(self, cat: Catalogue, extra: tuple[set[str], list[str]]) -> list[str]:
        chains, prefixes = extra
        names = {*cat["iptables"]["chains"], *chains}
        starts = (*cat["iptables"]["prefixes"], *prefixes)
        return [c for c in self.chains
                if c not in self.builtin and (c in names or c.startswith(starts))]

    def jumps(self, cat: Catalogue, owned: list[str]) -> list[str]:
        """Rules outside podnet's chains that lead into them or carry podnet's comment."""
        out = []
        for chain, words, line in self.rules:
            if chain in owned:
                continue
            target = next((words[i + 1] for i, w in enumerate(words[:-1])
                           if w in ("-j", "--jump", "-g", "--goto")), "")
            comment = next((words[i + 1] for i, w in enumerate(words[:-1])
                            if w == "--comment"), "")
            if target in owned or comment.startswith(cat["iptables"]["comment"]):
                out.append(line)
        return out


def tables(variant: str) -> list[Table]:
    proc = run([f"{variant}-save"])
    if proc.returncode != 0:
        raise SyncError(f"{variant}-save exited {proc.returncode}: {proc.stderr.strip()}")
    out: list[Table] = []
    name, lines = "", list[str]()
    for line in proc.stdout.splitlines():
        if line.startswith("*"):
            name, lines = line[1:].strip(), []
        elif line.strip() == "COMMIT" and name:
            out.append(Table(name, lines))
            name = ""
        elif name:
            lines.append(line)
    return out


def iptables_residue(cat: Catalogue, extra: tuple[set[str], list[str]]
                     ) -> list[tuple[str, Table, list[str], list[str]]]:
    """Per variant and table with podnet's things in it: (variant, table, chains, jumps)."""
    out = []
    for variant in iptables_variants():
        for table in tables(variant):
            owned = table.owned(cat, extra)
            jumps = table.jumps(cat, owned)
            if owned or jumps:
                out.append((variant, table, owned, jumps))
    return out


def _variant_label(variant: str) -> str:
    return "iptables" if variant in ("iptables", "iptables-nft") else variant


# -- conntrack ----------------------------------------------------------------------------------
def flows(cat: Catalogue) -> list[tuple[str, list[str]]]:
    """Connection tracking entries of the Services and the pods: (the entry, [orig src, orig
    dst, reply src, reply dst])."""
    if not shutil.which("conntrack"):
        return []
    proc = run(["conntrack", "-L"])
    service = ipaddress.ip_network(cat["conntrack"]["service_cidr"])
    cluster = ipaddress.ip_network(cat["conntrack"]["cluster_cidr"])
    out = []
    for line in proc.stdout.splitlines():
        addrs = re.findall(r"(?:src|dst)=([0-9.]+)(?=\s)", line + " ")
        if len(addrs) < 4:
            continue
        try:
            osrc, odst, rsrc = (ipaddress.ip_address(a) for a in addrs[:3])
        except ValueError:
            continue
        if odst in service or osrc in cluster or rsrc in cluster:
            out.append((f"{line.split()[0]} {addrs[0]} -> {addrs[1]}", addrs[:4]))
    return out


# -- reset --------------------------------------------------------------------------------------
class Reset:
    """Undo podnet's changes, in the order that keeps each step possible: the units that put
    rules back first, pods (CNI DEL needs the conflist and the plugins), namespaces, links,
    routes, rules, flows, then files, masks and sysctls, and the record last. /etc/resolv.conf
    is not podnet's (no role writes it), so reset leaves it alone."""

    def __init__(self, cat: Catalogue, report: Report) -> None:
        self.cat = cat
        self.report = report
        self.kept: list[str] = []
        self.record = read_record(cat)
        self.traces = bool(file_traces(cat))
        self.env = {**os.environ, "LC_ALL": "C", "PODNET_PODS_DIR": cat["pods"]["dir"],
                    "PODNET_STATE_DIR": cat["pods"]["state_dir"],
                    "PODNET_CNI_CACHE_DIR": cat["cni"]["cache_dir"],
                    "PODNET_UNIT_DIR": cat["units"]["dir"]}

    @property
    def check(self) -> bool:
        return self.report.check_mode

    def systemctl(self, *argv: str) -> None:
        if not self.check and shutil.which("systemctl"):
            run(["systemctl", *argv])

    def run(self) -> dict[str, Any]:
        units = loaded_units(self.cat)
        first = [u for u in self.cat["units"]["first"] if units.get(u, ("", ""))[1] == "active"]
        if first:
            self.report.note(f"stopped {' '.join(first)}")
            self.systemctl("stop", "--", *first)
        netns = podnet_netns(self.cat)  # before the pods' files go
        extra = declared_by_files(self.cat)  # before the rule files go
        self.pods()
        # what the pods' removal left running (in check mode: all of it)
        after = loaded_units(self.cat)
        units.update(after)
        rest = [u for u, (_, active) in sorted(after.items())
                if u not in first and active != "inactive"]
        if rest:
            self.report.note(f"stopped {' '.join(rest)}")
            self.systemctl("stop", "--", *rest)
        self.namespaces(netns | podnet_netns(self.cat))
        self.addresses()
        self.links()
        self.cloud_lb()
        self.routes()
        self.iptables(extra)
        self.conntrack()
        self.files(units)
        self.unmask()
        self.sysctls()
        self.finish()
        return {"kept": self.kept}

    def pods(self) -> None:
        runtime = Path(self.cat["pods"]["runtime"])
        for folder in pod_dirs(self.cat):
            self.report.note(f"removed pod {folder.name}")
            if self.check:
                continue
            if runtime.exists() and (folder / "pod.json").exists():
                # units, CNI DEL (host-local releases the address), namespace, files
                try:
                    proc = subprocess.run([str(runtime), "remove", folder.name],
                                          capture_output=True, text=True, check=False,
                                          timeout=300, env=self.env)
                    # its first words say what failed (a long path would push them out of the end)
                    why = proc.stderr.strip()[:300] if proc.returncode else ""
                except (OSError, subprocess.TimeoutExpired) as exc:
                    why = str(exc)
                if not why:
                    continue
                self.report.note(f"pod {folder.name}: podnet-cni remove failed ({why}); "
                                 "removed directly")
            spec = _json(folder / "pod.json")
            units = [*spec.get("units", []), f"{self.cat['units']['sandbox']}{folder.name}.service"]
            self.systemctl("stop", "--", *units)
            remove_path(Report(False), folder)
            remove_path(Report(False), Path(self.cat["pods"]["state_dir"]) / folder.name)

    def namespaces(self, names: Iterable[str]) -> None:
        existing = set(netns_names().values())
        for name in sorted(n for n in names if n in existing):
            self.report.note(f"deleted network namespace {name}")
            if not self.check:
                must(["ip", "netns", "delete", name], f"deleting network namespace {name}")

    def addresses(self) -> None:
        """LoadBalancer addresses left on an interface (keepalived removes its own as it stops,
        above; one that was killed leaves them)."""
        for address, ifname in lb_addresses(self.cat):
            self.report.note(f"deleted address {address}/32 (on {ifname})")
            if not self.check:
                must(["ip", "addr", "del", f"{address}/32", "dev", ifname],
                     f"deleting the LoadBalancer address {address} from {ifname}")

    def links(self) -> None:
        bridge = self.cat["cni"]["bridge"]
        for port in bridge_ports(self.cat):
            name = str(port.get("ifname", ""))
            self.report.note(f"deleted link {name} (on {bridge})")
            if not self.check:
                run(["ip", "link", "delete", name])  # gone already when its namespace went
        if ip_json("link", "show", "dev", bridge):
            self.report.note(f"deleted link {bridge}")
            if not self.check:
                must(["ip", "link", "delete", bridge], f"deleting the bridge {bridge}")
        for name in vxlan_devices(self.cat):
            self.report.note(f"deleted link {name} (VXLAN)")
            if not self.check:
                must(["ip", "link", "delete", name], f"deleting the VXLAN device {name}")

    def cloud_lb(self) -> None:
        """The load balancer's addresses, rules and routes, by its own clean (the one that
        knows their order: the local rule back at pref 0 before the rest goes)."""
        found = cloud_lb_residue(self.cat)
        tool = self.cat["cloud_lb"]["tool"]
        if not found and not Path(tool).exists():
            return
        for line in found:
            self.report.note(f"removed {line}")
        if self.check or not Path(tool).exists():
            if found and not Path(tool).exists():
                self.kept.append(f"{tool} is gone: the residue check lists what it left")
            return
        proc = run([tool, "clean"])
        if proc.returncode != 0:
            raise SyncError(f"{tool} clean failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")

    def routes(self) -> None:
        for route in podnet_routes(self.cat):
            table, proto = str(route.get("table", "main")), str(route["protocol"])
            self.report.note(f"deleted route {route['dst']} (table {table}, proto {proto})")
            if not self.check:
                # a route through a VXLAN device deleted above is gone with it
                run(["ip", "-4", "route", "delete", str(route["dst"]), "proto", proto,
                     "table", table])

    def iptables(self, extra: tuple[set[str], list[str]]) -> None:
        """Per variant, one iptables-restore --noflush: podnet's chains declared (which
        flushes them), the jumps into them deleted, then the chains deleted; each table is one
        transaction, and no other chain or rule is named."""
        script: dict[str, list[str]] = {}
        for variant, table, owned, jumps in iptables_residue(self.cat, extra):
            label = _variant_label(variant)
            for line in jumps:
                self.report.note(f"deleted {label} rule in {table.name}: {line}")
            for chain in owned:
                self.report.note(f"deleted {label} chain {chain} in {table.name}")
            script.setdefault(variant, []).extend([
                f"*{table.name}", *(f":{c} - [0:0]" for c in owned),
                *(f"-D {line[3:]}" for line in jumps), *(f"-X {c}" for c in owned), "COMMIT"])
        if self.check:
            return
        for variant, lines in script.items():
            proc = run([f"{variant}-restore", "-w", "--noflush"], stdin="\n".join(lines) + "\n")
            if proc.returncode != 0:
                raise SyncError(f"{variant}-restore --noflush could not delete podnet's rules: "
                                f"{proc.stderr.strip()[-2000:]}")

    def conntrack(self) -> None:
        found = flows(self.cat)
        if not found:
            return
        self.report.note(f"deleted {len(found)} conntrack flows of the Services and pods")
        if self.check:
            return
        c = self.cat["conntrack"]
        service = ipaddress.ip_network(c["service_cidr"])
        cluster = ipaddress.ip_network(c["cluster_cidr"])
        if any(ipaddress.ip_address(a[1]) in service for _, a in found):
            run(["conntrack", "-D", "-d", c["service_cidr"]])
        if any(ipaddress.ip_address(a[0]) in cluster for _, a in found):
            run(["conntrack", "-D", "-s", c["cluster_cidr"]])
        # the reply source takes no CIDR: one deletion per pod address that answered
        for address in sorted({a[2] for _, a in flows(self.cat)
                               if ipaddress.ip_address(a[2]) in cluster}):
            run(["conntrack", "-D", "-r", address])

    def files(self, units: dict[str, tuple[str, str]]) -> None:
        cat = self.cat
        unit_dir = Path(cat["units"]["dir"])
        prefix = cat["units"]["prefix"]
        links = sorted(unit_dir.glob(f"*.wants/{prefix}*")) if unit_dir.is_dir() else []
        reload = bool(links) or bool(unit_files(cat))
        for path in [*links, *unit_files(cat)]:
            remove_path(self.report, path)
        for path in podnet_cache_entries(cat):
            remove_path(self.report, path)
        for path in [*cat["trees"], *cat["cni"]["files"], cat["cni"]["reservations"]]:
            remove_path(self.report, Path(path))
        for pattern in cat["globs"]:
            folder, _, glob = pattern.rpartition("/")
            for path in sorted(Path(folder).glob(glob)) if Path(folder).is_dir() else []:
                remove_path(self.report, path)
        root = Path(cat["state_root"]["path"])
        keep = {*cat["state_root"]["keep"], Path(cat["record"]).name}
        for path in sorted(root.iterdir()) if root.is_dir() else []:
            if path.name not in keep:
                remove_path(self.report, path)
        for folder in cat["empty_dirs"]:
            path = Path(folder)
            if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                remove_path(self.report, path)
        if reload:
            self.report.note("reloaded systemd")
            self.systemctl("daemon-reload")
        if units:
            self.systemctl("reset-failed", "--", *units)

    def unmask(self) -> None:
        """Units podnet masked, unmasked: with a record, those it did not find masked; without
        one, all of them, but only on a host where podnet has been (else the masks are not
        podnet's to lift)."""
        wanted = self.cat["masked"]
        if self.record is not None:
            wanted = [u for u in wanted if u not in self.record.get("masked", [])]
        elif not self.traces:
            return
        unit_dir = Path(self.cat["units"]["dir"])
        masked = [u for u in wanted if is_masked(unit_dir / u)]
        for unit in masked:
            self.report.note(f"unmasked {unit}")
            if not self.check:
                (unit_dir / unit).unlink()
        if masked:
            self.systemctl("daemon-reload")

    def sysctls(self) -> None:
        recorded = (self.record or {}).get("sysctls", {})
        for key in self.cat["sysctls"]:
            live = read_sysctl(key)
            if live is None:
                continue
            before = recorded.get(key)
            if self.record is None:
                if self.traces:
                    self.kept.append(f"sysctl {key} = {live} kept: no record of its value "
                                     "before podnet")
                continue
            if before is None:
                self.kept.append(f"sysctl {key} = {live} kept: it did not exist before podnet "
                                 "(its module was not loaded)")
            elif before != live:
                self.report.note(f"sysctl {key} {live} -> {before} (as before podnet)")
                if not self.check:
                    must(["sysctl", "-w", f"{key}={before}"], f"setting sysctl {key} back")

    def finish(self) -> None:
        cat = self.cat
        if self.record is not None:
            installed = installed_packages(cat["packages"])
            ours = [p for p in installed if p not in self.record.get("packages", [])]
            if ours:
                self.kept.append(f"packages podnet installed kept: {' '.join(ours)}")
        remove_path(self.report, Path(cat["record"]))
        root = Path(cat["state_root"]["path"])
        if root.is_dir() and not any(root.iterdir()) and not self.check:
            root.rmdir()


def is_masked(path: Path) -> bool:
    return path.is_symlink() and str(path.readlink()) == "/dev/null"


def read_sysctl(key: str) -> str | None:
    try:
        return " ".join((SYSCTL_DIR / key.replace(".", "/")).read_text().split())
    except OSError:
        return None


def installed_packages(packages: list[str]) -> list[str]:
    if not packages or not shutil.which("dpkg-query"):
        return []
    proc = run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *packages])
    return sorted(line.split()[0].split(":")[0] for line in proc.stdout.splitlines()
                  if line.endswith(" installed"))


# -- residue ------------------------------------------------------------------------------------
def residue(cat: Catalogue) -> dict[str, list[str]]:
    """Everything of podnet's still on this host (``left``: reset failed at it), and what reset
    keeps on purpose (``kept``), one line each, named the way reset names them."""
    left = file_traces(cat)
    record = read_record(cat)
    if record is not None:
        left.append(f"file {cat['record']}")
    # a unit systemd still names, with no file (not-found) and nothing running (inactive), is
    # no change on the host: systemd forgets it when nothing refers to it (on the lab, whose
    # machines share one cgroup tree, another machine's unit of the same name can hold it)
    left += [f"unit {u} is {' '.join(state)}" for u, state in sorted(loaded_units(cat).items())
             if state != ("not-found", "inactive")]
    left += [f"network namespace {n}" for n in sorted(set(netns_names().values()))
             if POD_NETNS.match(n) or n in podnet_netns(cat)]
    bridge = cat["cni"]["bridge"]
    if ip_json("link", "show", "dev", bridge):
        left.append(f"link {bridge}")
    left += [f"link {p.get('ifname')} (on {bridge})" for p in bridge_ports(cat)]
    left += [f"address {a}/32 (on {i})" for a, i in lb_addresses(cat)]
    left += [f"link {name} (VXLAN)" for name in vxlan_devices(cat)]
    left += [f"route {r['dst']} (table {r.get('table', 'main')}, proto {r['protocol']})"
             for r in podnet_routes(cat)]
    left += cloud_lb_residue(cat)
    for variant, table, owned, jumps in iptables_residue(cat, declared_by_files(cat)):
        label = _variant_label(variant)
        left += [f"{label} chain {c} in {table.name}" for c in owned]
        left += [f"{label} rule in {table.name}: {line}" for line in jumps]
    found = flows(cat)
    left += [f"conntrack flow {what}" for what, _ in found[:10]]
    if len(found) > 10:
        left.append(f"conntrack: {len(found) - 10} more flows of the Services and pods")
    kept: list[str] = []
    unit_dir = Path(cat["units"]["dir"])
    for unit in cat["masked"]:
        if not is_masked(unit_dir / unit):
            continue
        if record is not None and unit not in record.get("masked", []):
            left.append(f"unit {unit} is masked (podnet masked it)")
        elif record is None:
            kept.append(f"unit {unit} is masked: no record says whether podnet masked it")
    if record is not None:
        for key, before in sorted(record.get("sysctls", {}).items()):
            live = read_sysctl(key)
            if before is not None and live is not None and live != before:
                left.append(f"sysctl {key} = {live} (was {before} before podnet)")
    return {"left": left, "kept": kept}


# -- record -------------------------------------------------------------------------------------
def record(cat: Catalogue, report: Report) -> dict[str, Any]:
    """Write down, once, what reset needs to put back: the sysctls' values, which of the units
    podnet masks are masked, which of its packages are installed. Not on a host podnet has
    already changed: that record would call podnet's changes the host's own."""
    path = Path(cat["record"])
    if read_record(cat) is not None:
        return {"warning": ""}
    traces = file_traces(cat)
    if traces:
        return {"warning": f"podnet changed this host before its state was recorded "
                f"({traces[0]}, ...): no record is written, and reset keeps the sysctls' running "
                "values then"}
    unit_dir = Path(cat["units"]["dir"])
    data = {
        "version": cat["version"],
        "sysctls": {key: read_sysctl(key) for key in cat["sysctls"]},
        "masked": [u for u in cat["masked"] if is_masked(unit_dir / u)],
        "packages": installed_packages(cat["packages"]),
    }
    report.note(f"recorded the host before podnet in {path}")
    if not report.check_mode:
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n", 0o600)
    return {"warning": ""}
