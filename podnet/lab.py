"""The local lab: systemd-nspawn machines on an underlay bridge inside a lab-owned netns.

Everything here runs on the controller as root. Nothing touches the machine's own network
namespace: the underlay bridge, the nodes' veth peers and every address live inside the
network namespace ``/run/netns/<lab>``, which only the lab creates and removes.

Layout on disk (all removed by :func:`stop_node` / ``lab down`` except the image cache)::

    /run/netns/<lab>                         the lab's network namespace
    <state_dir>/ssh/id_ed25519[.pub]         the lab's SSH key pair
    <state_dir>/known_hosts                  host keys the lab generated for its nodes
    <state_dir>/nodes/<host>/{upper,work}    the node's overlay layers
    <state_dir>/nodes/<host>/root            the node's root (overlay mount point)
    <state_dir>/nodes/<host>/nspawn.{pid,log}
    <state_dir>/mirror/<suite>               links to the package mirrors the lab serves
    <state_dir>/mirror.{pid,log}             the mirror's HTTP server (in the lab's netns)
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


class LabError(Exception):
    """A lab operation failed; the message says what and how to fix it."""


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str


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
    gateway: str | None = None

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


def validate(
    lab_name: object,
    underlay_cidr: object,
    controller_address: object,
    hosts: Iterable[Mapping[str, object]],
    max_hosts: int = DEFAULT_MAX_HOSTS,
    nameservers: Iterable[object] = (),
) -> list[str]:
    """Check a lab inventory before anything is created. Returns error messages.

    A host record has ``name`` and ``address`` (ansible_host), and may have ``user``
    (ansible_user), ``port`` (ansible_port), ``suite`` (lab_suite) and ``resolver``
    (lab_resolver); ``nameservers`` are lab_nameservers."""
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

    host_list = list(hosts)
    if len(host_list) > max_hosts:
        errors.append(
            f"inventory: {len(host_list)} lab hosts, more than lab_max_hosts={max_hosts}; "
            "remove hosts or raise lab_max_hosts if this machine has the memory"
        )
    if len(host_list) > net.num_addresses - 3:
        errors.append(
            f"inventory: {len(host_list)} hosts do not fit in lab_underlay_cidr {net}; "
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
        if addr not in net or addr in usable:
            errors.append(
                f"{label}: ansible_host {addr} is outside lab_underlay_cidr {net} "
                "(or is its network/broadcast address); give it a host address inside it"
            )
        if ctrl is not None and addr == ctrl:
            errors.append(
                f"{label}: ansible_host {addr} is the controller's lab address "
                "(lab_controller_address); pick another"
            )
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
        if ns not in net:
            errors.append(f"lab_nameservers: {ns} is outside lab_underlay_cidr {net}: lab hosts "
                          "have no route out of the lab; name a resolver on the underlay")
    return errors


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


# --------------------------------------------------------------------------- mirror


def mirror_pid(state_dir: Path) -> int | None:
    """The PID of the lab's mirror server when it runs (its pid file and its command line agree)."""
    pid = _read_pid(state_dir / "mirror.pid")
    if pid is None:
        return None
    argv = _cmdline(pid)
    return pid if "http.server" in argv and str(state_dir / "mirror") in argv else None


def mirror_url(state_dir: Path) -> str | None:
    """``http://address:port`` of the lab's running mirror server (read off its command line),
    None when it does not run."""
    pid = mirror_pid(state_dir)
    if pid is None:
        return None
    argv = _cmdline(pid)
    return f"http://{argv[argv.index('--bind') + 1]}:{argv[-1]}"


def ensure_mirror(lab: str, state_dir: Path, address: str, port: int,
                  mirrors: Mapping[str, str | Path]) -> bool:
    """Serve each suite's package mirror (a folder with Packages and its .debs, built by the lab
    role from this machine's apt sources) at ``http://<address>:<port>/<suite>/``, from inside
    the lab's network namespace: only the lab's hosts can reach it."""
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
    if mirror_pid(state_dir) is not None:
        return changed
    cmd = ["nsenter", f"--net={NETNS_DIR / lab}", sys.executable, "-m", "http.server",
           "--bind", address, "--directory", str(served), str(port)]
    with open(state_dir / "mirror.log", "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    (state_dir / "mirror.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 10
    while not _listening(lab, address, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (state_dir / "mirror.log").read_text(errors="replace")[-600:]
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


def _prepare_root(root: Path, spec: NodeSpec) -> None:
    """Write the node's identity into its overlay (only what is missing or different)."""
    host = spec.host
    (root / "etc/hostname").write_text(host + "\n")
    hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{host}\n::1\tlocalhost ip6-localhost\n"
    (root / "etc/hosts").write_text(hosts)
    route = f"\n[Route]\nGateway={spec.gateway}\n" if spec.gateway else ""
    dns = "".join(f"DNS={ns}\n" for ns in spec.nameservers)
    _write(root / "etc/systemd/network/10-underlay.network",
           "# podnet lab: the node's underlay address (host0 is the nspawn veth)\n"
           f"[Match]\nName=host0\n\n[Network]\nAddress={spec.address_cidr}\n{dns}"
           "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
           # a cut link (verify's failover tests set the lab's end down) keeps the address,
           # and so the routes through it (podnet-routes'), as a VM's NIC losing carrier does
           "ConfigureWithoutCarrier=yes\nIgnoreCarrierLoss=yes\n" + route)
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


def _cleanup_node_runtime(lab: str, node_dir: Path, host: str) -> bool:
    """Stop the node's processes and unmount its root; keep its files."""
    changed = False
    root = node_dir / "root"
    launchers = [p for p in nspawn_processes(node_dir.parent.parent) if str(root) in _cmdline(p)]
    if launchers:
        # The launcher shell dies at once (so it boots nothing again); systemd-nspawn asks
        # the node's systemd to power off and exits when it has.
        _kill(launchers, signal.SIGTERM)
        if _wait_gone(launchers, 20):
            _kill(launchers, signal.SIGKILL)
            _wait_gone(launchers, 5)
        changed = True
    strays = processes_under(root) + [
        p for p in nspawn_processes(node_dir.parent.parent) if str(root) in _cmdline(p)
    ]
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
    if netns_exists(lab):
        found.append(f"netns {NETNS_DIR / lab}")
        found += [
            f"process {p} {' '.join(_cmdline(p))} in the lab's netns"
            for p in processes_in_netns(lab)
        ]
    found += [f"process {p} {' '.join(_cmdline(p))}" for p in nspawn_processes(state_dir)]
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
        if name.startswith("vb-") or name == lab:
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
    inside = processes_in_netns(lab)
    if inside:
        _kill(inside, signal.SIGTERM)
        if _wait_gone(inside, 5):
            _kill(inside, signal.SIGKILL)
            _wait_gone(inside, 5)
        changed = True
    changed |= remove_netns(lab)
    if state_dir.exists():
        shutil.rmtree(state_dir)
        changed = True
    return changed
