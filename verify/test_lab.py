"""The hosts podnet builds on: up, on one underlay, prepared, and (the local lab) fenced off
from the machine. The tests of the lab's own properties skip on an inventory without a lab."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from conftest import connection, hosts, inventory, needs_lab, run, setting

from podnet import access, lab

pytestmark = pytest.mark.principle("the lab")


def test_host_runs_systemd_as_pid1_and_is_running(inventory_host: str) -> None:
    state = run(inventory_host, "systemctl", "is-system-running")
    if state.stdout.strip() != "running":  # say which units failed, and what they logged
        why = run(inventory_host, "sh", "-c", "systemctl --failed --no-legend --plain; for u in "
                  "$(systemctl --failed --no-legend --plain | cut -d' ' -f1); do "
                  "journalctl --no-pager -n 15 -u $u; done")
        raise AssertionError(f"{inventory_host} is {state.stdout.strip()}: {state}{why}")
    pid1 = run(inventory_host, "cat", "/proc/1/comm")
    assert pid1.stdout.strip() == "systemd", pid1


def test_host_has_its_inventory_name_and_address(inventory_host: str) -> None:
    needs_lab()  # the lab names its hosts; a VM keeps its own name, and may sit behind NAT
    want = inventory().host(inventory_host).address
    name = run(inventory_host, "hostname")
    assert name.stdout.strip() == inventory_host, name
    addrs = run(inventory_host, "ip", "-4", "-o", "addr", "show")
    assert f" {want}/" in addrs.stdout, addrs


@pytest.mark.quick
def test_hosts_reach_each_other_on_the_underlay(host_pair: tuple[str, str]) -> None:
    src, dst = host_pair
    address = inventory().host(dst).address
    ping = run(src, "ping", "-c", "1", "-W", "2", address)
    assert ping.rc == 0 and f"from {address}" in ping.stdout, ping


@pytest.mark.parametrize(
    ("key", "value"),
    [("net.ipv4.ip_forward", "1"), ("net.bridge.bridge-nf-call-iptables", "1")],
)
def test_sysctl_holds_live_and_persistently(inventory_host: str, key: str, value: str) -> None:
    live = run(inventory_host, "sysctl", "-n", key)
    assert live.stdout.strip() == value, live
    persisted = run(inventory_host, "grep", "-rhE", rf"^{key}\s*=", "/etc/sysctl.d")
    assert persisted.stdout.split("=")[-1].strip() == value, persisted


def lab_segments() -> list[dict[str, str]]:
    """The lab's extra segments (lab_segments; none when the inventory sets none)."""
    try:
        found = setting("lab_segments")
    except KeyError:
        return []
    assert isinstance(found, list), f"lab_segments is not a list: {found!r}"
    return found


def test_machine_namespace_has_no_route_or_address_into_the_lab() -> None:
    needs_lab()
    for network in [str(setting("lab_underlay_cidr"))] + [s["cidr"] for s in lab_segments()]:
        found = lab.host_routes_into(network)
        assert not found, f"the machine's own namespace reaches into {network}: {found}"


def test_the_kernel_routes_no_packet_from_the_machine_namespace_into_the_lab() -> None:
    """No route in the table is one proof; the kernel's own choice for each lab host's address
    (`ip route get`, policy rules and all tables included) is the other: it must not lead into
    the lab's namespace or stay on this machine. Nothing is sent: a packet from this namespace
    to a lab address would leave through the machine's own network."""
    needs_lab()
    lab_name = str(setting("lab_name"))
    lab_netns = Path(lab.NETNS_DIR) / lab_name
    assert Path("/proc/self/ns/net").stat().st_ino != lab_netns.stat().st_ino, (
        f"verify runs inside the lab's network namespace {lab_netns}: this proves nothing")
    links, nsid = lab.namespace_links(), lab.netns_id(lab_name)
    ways_in = {}
    for host in hosts("lab"):
        route = lab.kernel_route(host.address)
        why = lab.route_into_lab(route, links, nsid)
        if why:
            ways_in[f"{host.name} ({host.address})"] = f"{why}: {route}"
    assert not ways_in, f"the machine's own namespace routes into the lab: {ways_in}"


def test_machine_namespace_has_no_lab_interface() -> None:
    needs_lab()
    links = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    bridges = {"underlay"} | {s["name"] for s in lab_segments()}
    names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    assert not [n for n in names if n.startswith(lab.RESERVED_LINK_PREFIXES) or n in bridges], names


def test_segments_are_crossed_only_through_the_router(inventory_host: str) -> None:
    """A routed lab (lab_segments): the lab's namespace forwards nothing, the router does, and
    a host reaches every network it is not on through the router's address on its own (the
    kernel's choice, ``ip route get``: nothing is sent). A lab of one underlay has no router,
    and every host reaches every other directly."""
    needs_lab()
    segments = lab_segments()
    lab_name = str(setting("lab_name"))
    if not segments:
        assert not Path(f"/run/netns/{lab.router_netns(lab_name)}").exists()
        for other in hosts("lab"):
            if other.name == inventory_host:
                continue
            route = run(inventory_host, "ip", "-4", "route", "get", other.address)
            assert route.rc == 0 and " via " not in route.stdout, route
        return
    assert lab.netns_sysctl(lab_name, "net.ipv4.ip_forward") == "0"
    assert lab.netns_sysctl(lab.router_netns(lab_name), "net.ipv4.ip_forward") == "1"
    mine = str(host_setting(inventory_host, "lab_segment", "") or "")
    own = next((s for s in segments if s["name"] == mine), None)
    gateway = own["router_address"] if own else str(setting("lab_router_address"))
    for other in hosts("lab"):
        if str(host_setting(other.name, "lab_segment", "") or "") == mine:
            continue
        route = run(inventory_host, "ip", "-4", "route", "get", other.address)
        assert f" via {gateway} " in route.stdout, route


def test_lab_hosts_are_only_reached_through_the_lab_namespace() -> None:
    needs_lab()
    lab_name = str(setting("lab_name"))
    for host in hosts("lab"):
        args = str(host.vars.get("ansible_ssh_common_args", ""))
        assert f"nsenter --net=/run/netns/{lab_name}" in args, (host.name, args)


# -- the lab's hosts are shaped like fresh cloud VMs (roles/lab, docs/real-vms.md) ---------------
def host_setting(host: str, name: str, default: object) -> object:
    """A variable as ``host`` sees it (its host variables over the groups'), else ``default``."""
    return inventory().render(host, (name,)).get(name, default)


def login(host: str, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` as the login user itself (no sudo), over the ssh Ansible uses."""
    return subprocess.run([*access.ssh_argv(connection(host)), command], capture_output=True,
                          text=True, check=False, timeout=60)


def test_lab_host_logs_in_as_its_user_who_becomes_root_with_sudo(inventory_host: str) -> None:
    needs_lab()
    user = connection(inventory_host).login
    assert user != "root", f"lab hosts have no root login; {inventory_host} logs in as root"
    got = login(inventory_host, "id -un; sudo -n id -un")
    assert got.returncode == 0 and got.stdout.split() == [user, "root"], got


def test_lab_host_refuses_root_and_passwords_and_serves_ssh_on_its_port(inventory_host: str
                                                                       ) -> None:
    needs_lab()
    port = int(str(host_setting(inventory_host, "ansible_port", 22)))
    sshd = run(inventory_host, "sshd", "-T")
    settings = {line.split(" ", 1)[0]: line.split(" ", 1)[-1] for line in sshd.stdout.splitlines()}
    assert sshd.rc == 0 and settings.get("port") == str(port), sshd
    assert settings.get("permitrootlogin") == "no", sshd
    assert settings.get("passwordauthentication") == "no", sshd
    # the lab's key, as root: no shared master connection (a new login), no prompt
    root = dataclasses.replace(connection(inventory_host), user="root", control_path=None)
    as_root = subprocess.run([*access.ssh_argv(root)[:-1], "-o", "BatchMode=yes",
                              f"root@{root.address}", "true"],
                             capture_output=True, text=True, check=False, timeout=60)
    assert as_root.returncode == 255 and "Permission denied" in as_root.stderr, as_root


def test_lab_host_runs_its_release_and_installs_only_from_the_labs_mirror(inventory_host: str
                                                                          ) -> None:
    needs_lab()
    suite = str(host_setting(inventory_host, "lab_suite", "bookworm"))
    release = run(inventory_host, "sh", "-c", ". /etc/os-release && echo $VERSION_CODENAME")
    assert release.stdout.strip() == suite, release
    # a host on a segment (lab_segment) has the mirror on the controller's address there
    segment = str(host_setting(inventory_host, "lab_segment", "") or "")
    served = lab.mirror_url(Path(str(setting("lab_state_dir"))),
                            f"mirror-{segment}" if segment else "mirror")
    assert served, f"the lab's mirror server does not run{' on ' + segment if segment else ''}"
    mirror = f"{served}/{suite}"
    sources = run(inventory_host, "sh", "-c", "cat /etc/apt/sources.list "
                  "/etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null"
                  " | grep -E '^(deb|URIs:)'")
    assert sources.stdout.strip() == f"deb [trusted=yes] {mirror} ./", sources


def test_lab_host_resolves_as_the_lab_hands_out(inventory_host: str) -> None:
    """A plain resolv.conf naming lab_nameservers, or (lab_resolver: systemd-resolved)
    resolved's 127.0.0.53 stub with lab_nameservers as its upstreams, as on Ubuntu."""
    needs_lab()
    given = host_setting(inventory_host, "lab_nameservers", [])
    assert isinstance(given, list), f"lab_nameservers is not a list: {given!r}"
    nameservers = [str(n) for n in given]
    conf = run(inventory_host, "sh", "-c", "readlink /etc/resolv.conf; grep ^nameserver "
               "/etc/resolv.conf")
    if host_setting(inventory_host, "lab_resolver", "resolv.conf") == "systemd-resolved":
        assert conf.stdout.split("\n")[0] == lab.RESOLVED_STUB, conf
        assert "nameserver 127.0.0.53" in conf.stdout, conf
        upstream = run(inventory_host, "grep", "^nameserver", "/run/systemd/resolve/resolv.conf")
        assert upstream.stdout.split()[1::2] == nameservers, upstream
    else:
        assert conf.stdout.split()[1::2] == nameservers, conf
