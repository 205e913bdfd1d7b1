"""The podnet_reset module's node side, for real, in a throwaway network and mount namespace.

Each test builds a podnet host in an ``unshare --net --mount`` sandbox with podnet's own tools
(pods through podnet-cni and the real CNI plugins, rules through podnet-iptables, routes
through podnet-routes), with every path of the catalogue under the test's folder. It plants
what is not podnet's beside it (a nat chain and the jump to it, a filter rule, a route, a
namespace, a unit, a CNI cache entry), then runs reset, the residue check and the record through
the module's own converge(), and checks what went and what stayed. systemd is not PID 1 here:
a stand-in systemctl logs what it is asked; conntrack is a stand-in too (the machine has none),
over a table of flows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from podnet import hostchanges, kubelet, proxier
from podnet.paths import NodePaths

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"CNI": ROOT / "roles/cni/files/podnet-cni",
         "IPTABLES": ROOT / "roles/pod_network/files/podnet-iptables",
         "ROUTES": ROOT / "roles/pod_network/files/podnet-routes"}

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists()
    or not shutil.which("unshare") or not shutil.which("iptables-nft-save"),
    reason="needs root, unshare, iptables and the CNI plugins (make setup installs them)")

DRIVER = r'''
import importlib.util, json, sys
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
root, mode, catalogue = sys.argv[1], sys.argv[2], sys.argv[3]
sync = load("ansible.module_utils.podnet_sync", root + "/plugins/module_utils/podnet_sync.py")
load("ansible.module_utils.podnet_reset", root + "/plugins/module_utils/podnet_reset.py")
module = load("podnet_reset_module", root + "/plugins/modules/podnet_reset.py")
report = sync.Report("--check" in sys.argv)
try:
    out = module.converge({"mode": mode, "catalogue": json.load(open(catalogue))}, report)
except sync.SyncError as exc:
    out = {"error": str(exc)}
print("RESULT " + json.dumps({"changes": report.changes, **out}))
'''

# a stand-in systemctl: list-units answers from units.list ("UNIT LOAD ACTIVE SUB"), stop takes
# a unit out of it
SYSTEMCTL = """#!PYTHON
import os, sys
world = os.environ["WORLD"]
with open(os.path.join(world, "systemctl.log"), "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
listed = os.path.join(world, "units.list")
lines = open(listed).read().splitlines() if os.path.exists(listed) else []
if sys.argv[1] == "list-units":
    print("\\n".join(lines))
elif sys.argv[1] in ("stop", "disable"):
    gone = set(sys.argv[2:])
    open(listed, "w").write("".join(line + "\\n" for line in lines
                                    if line.split()[0] not in gone))
"""

# a stand-in conntrack over a table file: -L lists it, -D -d/-s CIDR and -D -r ADDRESS delete
# by original destination, original source and reply source
CONNTRACK = """#!PYTHON
import ipaddress, os, re, sys
world = os.environ["WORLD"]
table = os.path.join(world, "conntrack.table")
with open(os.path.join(world, "conntrack.log"), "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
lines = open(table).read().splitlines() if os.path.exists(table) else []
if sys.argv[1] == "-L":
    print("\\n".join(lines))
elif sys.argv[1] == "-D":
    where = {"-s": 0, "-d": 1, "-r": 2}[sys.argv[2]]
    net = ipaddress.ip_network(sys.argv[3])
    kept = [line for line in lines if ipaddress.ip_address(
        re.findall(r"(?:src|dst)=([0-9.]+)", line)[where]) not in net]
    open(table, "w").write("".join(line + "\\n" for line in kept))
"""
# a ClusterIP flow NATed to a pod, a pod's own flow, a NodePort flow NATed to a pod, a flow to a
# pod from the node, and one that is none of podnet's business (ssh to the node)
FLOWS = "".join(
    f"{proto} 6 100 src={a} dst={b} sport=40000 dport=80 src={c} dst={d} sport=80 dport=40000 "
    "mark=0 use=1\n" for proto, a, b, c, d in (
        ("tcp", "10.0.9.1", "10.96.0.20", "10.244.0.2", "10.0.9.1"),
        ("udp", "10.244.0.3", "192.168.56.100", "192.168.56.100", "192.168.56.11"),
        ("tcp", "192.168.56.100", "192.168.56.11", "10.244.0.2", "192.168.56.100"),
        ("tcp", "192.168.56.11", "10.244.0.3", "10.244.0.3", "192.168.56.11"),
        ("tcp", "192.168.56.1", "192.168.56.11", "192.168.56.11", "192.168.56.1")))


def node_paths(world: Path) -> NodePaths:
    w = str(world)
    return NodePaths(
        bin_dir=f"{w}/usr/local/sbin", pods_dir=f"{w}/etc/podnet/pods",
        pod_state_dir=f"{w}/var/lib/podnet/pods", cni_conf_dir=f"{w}/etc/cni/net.d",
        cni_cache_dir=f"{w}/var/lib/cni/results", cni_ipam_dir=f"{w}/var/lib/cni/networks",
        cni_plugin_dir=f"{w}/usr/lib/cni",
        iptables_dir=f"{w}/etc/podnet/iptables", routes_file=f"{w}/etc/podnet/routes.conf",
        dns_dir=f"{w}/etc/podnet/cluster-dns",
        kube_proxy_state_dir=f"{w}/var/lib/podnet/kube-proxy",
        unready_pods=f"{w}/run/podnet/unready-pods", facts_dir=f"{w}/etc/ansible/facts.d",
        host_record=f"{w}/var/lib/podnet/host-record.json")


def catalogue(world: Path, **given: Any) -> dict[str, Any]:
    values = hostchanges.inputs({
        "node_base_sysctls": {"net.ipv4.ip_forward": 1}, "external_lb_sysctls": {},
        "node_base_sysctl_file": f"{world}/etc/sysctl.d/90-podnet.conf",
        "upstream_dns_dir": f"{world}/etc/podnet/upstream-dns",
        "external_lb_sysctl_file": f"{world}/etc/sysctl.d/90-podnet-cloud-lb.conf", **given})
    cat = hostchanges.node_catalogue(values, node_paths(world), root=str(world))
    # nothing of the catalogue may name a place outside the test's folder
    def places(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [p for v in value.values() for p in places(v)]
        if isinstance(value, list):
            return [p for v in value for p in places(v)]
        return [value] if isinstance(value, str) and value.startswith("/") else []
    outside = [p for p in places(cat) if not p.startswith(f"{world}/")]
    assert not outside, outside
    (world / "catalogue.json").write_text(json.dumps(cat))
    return cat


@pytest.fixture
def world(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    for name, text in (("systemctl", SYSTEMCTL), ("conntrack", CONNTRACK)):
        (tmp_path / "bin" / name).write_text(text.replace("PYTHON", sys.executable))
        (tmp_path / "bin" / name).chmod(0o755)
    (tmp_path / "driver.py").write_text(DRIVER)
    return tmp_path


def sandbox(world: Path, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in bash in a new network and mount namespace: a private /run (pod namespaces
    made here vanish with it) and podnet-iptables' state folder on tmpfs; $RESET MODE runs the
    module (its converge(), as Ansible's run does) on the catalogue and prints its answer as one
    RESULT line."""
    env = {**os.environ, "WORLD": str(world), "PATH": f"{world}/bin:{os.environ['PATH']}",
           "RESET": f"{sys.executable} {world}/driver.py {ROOT}",
           "CAT": str(world / "catalogue.json"),
           "PODNET_PODS_DIR": str(world / "etc/podnet/pods"),
           "PODNET_STATE_DIR": str(world / "var/lib/podnet/pods"),
           "PODNET_CNI_CACHE_DIR": str(world / "var/lib/cni/results"),
           "PODNET_UNIT_DIR": str(world / "etc/systemd/system"),
           **{k: str(v) for k, v in TOOLS.items()}}
    body = ("set -u\nmount -t tmpfs podnet-test /run\nmkdir -p /var/lib/podnet\n"
            "mount -t tmpfs podnet-test /var/lib/podnet\nip link set lo up\n" + script)
    return subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--fork",
                           "bash", "-c", body], env=env, capture_output=True, text=True,
                          check=False, timeout=180)


def results(run: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    found = [json.loads(line[7:]) for line in run.stdout.splitlines()
             if line.startswith("RESULT ")]
    assert found, run.stdout + run.stderr
    return found


CONFLIST = {
    "cniVersion": "1.0.0", "name": "podnet",
    "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
         "hairpinMode": True,
         "ipam": {"type": "host-local", "dataDir": "DATA",
                  "ranges": [[{"subnet": "10.244.0.0/24", "gateway": "10.244.0.1"}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}


def build_host(world: Path) -> str:
    """Files of a converged node in ``world``, and the script that brings up the rest (pods,
    rules, routes, sysctl, masks) inside the sandbox, as a converge would."""
    p = node_paths(world)
    for folder in (p.cni_conf_dir, p.pods_dir, p.iptables_dir, p.bin_dir, p.facts_dir,
                   f"{world}/etc/systemd/system/multi-user.target.wants",
                   f"{world}/etc/sysctl.d", f"{world}/etc/modules-load.d", p.dns_dir,
                   p.kube_proxy_state_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    conflist = json.dumps(CONFLIST).replace("DATA", p.cni_ipam_dir)
    Path(p.network_conf).write_text(conflist)
    Path(p.loopback_conf).write_text('{"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}')
    # pods that keep their address: the second conflist, the IPAM plugin, a reservation
    Path(p.stable_network_conf).write_text(conflist)
    Path(p.cni_plugin_dir).mkdir(parents=True, exist_ok=True)
    Path(f"{p.cni_plugin_dir}/podnet-ipam").write_text("#!/bin/sh\n")
    Path(f"{p.cni_plugin_dir}/ptp").write_text("#!/bin/sh\n# Debian's, not podnet's\n")
    Path(p.stable_reservations).mkdir(parents=True, exist_ok=True)
    Path(f"{p.stable_reservations}/10.244.255.1").write_text("c0ffee\neth0")
    units = world / "etc/systemd/system"
    for ns, name in (("demo", "web-1"), ("kube-system", "dns-1")):
        ident = kubelet.pod_id(ns, name)
        pod = Path(p.pod_dir(ident))
        pod.mkdir()
        container = f"podnet-{ident}-netexec.service"
        (pod / "pod.json").write_text(json.dumps({
            "namespace": ns, "name": name, "node": "node1", "netns": ident,
            "container_id": kubelet.container_id(ns, name), "ifname": "eth0",
            "network": p.network_conf, "loopback": p.loopback_conf, "units": [container]}))
        (units / container).write_text("[Service]\n")
        (units / "multi-user.target.wants" / container).symlink_to(units / container)
        (units / "multi-user.target.wants" / f"podnet-sandbox@{ident}.service").symlink_to(
            units / "podnet-sandbox@.service")
    for unit in ("podnet-sandbox@.service", "podnet-endpoints.service",
                 "podnet-iptables-canary.service", "podnet-routes.service"):
        (units / unit).write_text("[Service]\n")
    for unit in ("nginx.service", "unbound.service"):  # masked by podnet
        if not (units / unit).is_symlink():
            (units / unit).symlink_to("/dev/null")
    for tool in TOOLS.values():  # reset runs the installed podnet-cni to remove the pods
        shutil.copy(tool, p.tool(tool.name))
    Path(f"{p.facts_dir}/podnet.fact").write_text("#!/bin/sh\n")
    (world / "etc/sysctl.d/90-podnet.conf").write_text("net.ipv4.ip_forward = 1\n")
    (world / "etc/modules-load.d/podnet.conf").write_text("br_netfilter\n")
    Path(p.dns_records).write_text("server:\n")
    Path(p.kube_proxy_input).write_text("{}\n")
    Path(p.routes_file).write_text("10.244.1.0/24 via 192.168.56.12\n"
                                   "10.96.0.0/12 dev-of 192.168.56.11\n")
    services = [proxier.ServicePort(
        namespace="demo", name="web", port_name="http", protocol="TCP",
        cluster_ip="10.96.0.20", port=80, node_port=30080,
        endpoints=(proxier.Endpoint("10.244.0.2", 8080, "node1"),
                   proxier.Endpoint("10.244.1.2", 8080, "node2")))]
    opts = proxier.Options(node_name="node1", node_ip="192.168.56.11",
                           cluster_cidr="10.244.0.0/16")
    Path(p.kube_proxy_rules).write_text(proxier.rules_file(services, opts))
    Path(f"{p.iptables_dir}/50-kube-proxy.jumps").write_text("\n".join(proxier.jumps(opts)) + "\n")
    Path(f"{p.iptables_dir}/50-kube-proxy.owns").write_text(
        f"nat {' '.join(proxier.OWNED_PREFIXES)}\n")
    for name in ("10-pod-network.rules", "10-pod-network.jumps"):
        template = ROOT / f"roles/pod_network/templates/etc/podnet/iptables/{name}.j2"
        text = template.read_text().split("\n", 1)[1]  # the ansible_managed line
        text = text.replace("{{ pod_network_plan.settings.cluster_cidr }}", "10.244.0.0/16")
        text = "\n".join(line for line in text.splitlines() if "{%" not in line
                         and "node.address" not in line) + "\n"
        Path(f"{p.iptables_dir}/{name}").write_text(text)
    return f"""
ip link add host0 type veth peer name host0-peer && ip addr add 192.168.56.11/24 dev host0
ip link set host0 up && ip link set host0-peer up
sysctl -qw net.ipv4.ip_forward=1
$CNI up demo_web-1 >/dev/null && $CNI up kube-system_dns-1 >/dev/null
$IPTABLES apply {p.iptables_dir} >/dev/null
$ROUTES apply {p.routes_file} >/dev/null
"""


# the foreign things every test plants beside podnet's, and the lines that show they stayed
FOREIGN = """
iptables -t nat -N FOREIGN && iptables -t nat -A FOREIGN -p tcp --dport 9999 -j RETURN
iptables -t nat -A PREROUTING -j FOREIGN
iptables -A INPUT -p tcp --dport 9998 -m comment --comment "foreign: keep" -j ACCEPT
ip route add 10.99.0.0/24 dev lo
ip netns add foreign-ns
"""
SHOW_FOREIGN = """
echo "FOREIGN-CHAIN $(iptables -t nat -S FOREIGN | grep -c 9999)"
echo "FOREIGN-JUMP $(iptables -t nat -S PREROUTING | grep -c -- '-j FOREIGN')"
echo "FOREIGN-RULE $(iptables -S INPUT | grep -c 'foreign: keep')"
echo "FOREIGN-ROUTE $(ip route show 10.99.0.0/24 | wc -l)"
echo "FOREIGN-NETNS $(ip netns list | grep -c foreign-ns)"
"""
FOREIGN_KEPT = ("FOREIGN-CHAIN 1", "FOREIGN-JUMP 1", "FOREIGN-RULE 1", "FOREIGN-ROUTE 1",
                "FOREIGN-NETNS 1")


def plant_foreign_files(world: Path) -> None:
    units = world / "etc/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    (units / "other.service").write_text("[Service]\n")
    (units / "apache2.service").symlink_to("/dev/null")  # masked, not by podnet
    cache = world / "var/lib/cni/results"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "other-net-abc-eth0").write_text('{"containerId": "abc"}')
    (cache / "lo-abc-lo").write_text('{"containerId": "abc", "result": {"interfaces": '
                                     '[{"sandbox": "/run/netns/x_y"}]}}')
    (world / "etc/cni/net.d").mkdir(parents=True, exist_ok=True)
    (world / "etc/cni/net.d/20-other.conflist").write_text("{}")


def foreign_files_kept(world: Path) -> None:
    assert (world / "etc/systemd/system/other.service").exists()
    assert (world / "etc/systemd/system/apache2.service").is_symlink()
    assert (world / "var/lib/cni/results/other-net-abc-eth0").exists()
    assert (world / "var/lib/cni/results/lo-abc-lo").exists()
    assert (world / "etc/cni/net.d/20-other.conflist").exists()


def test_reset_removes_all_of_podnets_and_nothing_else(world: Path) -> None:
    catalogue(world)
    setup = build_host(world)
    plant_foreign_files(world)
    (world / "conntrack.table").write_text(FLOWS)
    (world / "units.list").write_text(
        "podnet-routes.service loaded active exited x\n"
        "podnet-iptables-canary.service loaded active running x\n"
        "podnet-endpoints.service loaded active running x\n"
        "podnet-demo_web-1-netexec.service loaded active running x\n"
        "podnet-gone.service not-found inactive dead x\n")  # no file, nothing running: no change
    run = sandbox(world, setup + FOREIGN + """
$RESET residue $CAT
$RESET reset $CAT --check
$RESET residue $CAT
$RESET reset $CAT
$RESET residue $CAT
$RESET reset $CAT
echo "CNI0 $(ip link show cni0 2>/dev/null | wc -l) NETNS $(ip netns list | wc -l)"
echo "PROTO152 $(ip route show proto 152 | wc -l)"
echo "KUBE $(iptables-save | grep -c -e KUBE- -e PODNET-)"
echo "FORWARD $(sysctl -n net.ipv4.ip_forward)"
""" + SHOW_FOREIGN)
    assert run.returncode == 0, run.stdout + run.stderr
    before, dry, after_dry, done, after, again = results(run)
    left = before["left"]
    # the residue check names each kind of podnet's things
    for wanted in ("network namespace demo_web-1", "network namespace kube-system_dns-1",
                   "link cni0", "route 10.244.1.0/24 (table main, proto 152)",
                   "route 10.96.0.0/12 (table main, proto 152)",
                   "iptables chain KUBE-SERVICES in nat",
                   "iptables chain PODNET-POSTROUTING in nat",
                   "iptables chain KUBE-PROXY-CANARY in mangle",
                   "iptables chain KUBE-SEP-", "iptables chain KUBE-SVC-",
                   'iptables rule in nat: -A POSTROUTING -m comment --comment "podnet: pod egress"'
                   " -j PODNET-POSTROUTING",
                   "iptables rule in filter: -A FORWARD -m comment --comment \"kubernetes "
                   "forwarding rules\" -j KUBE-FORWARD",
                   f"file {world}/etc/podnet", f"file {world}/etc/cni/net.d/10-podnet.conflist",
                   f"file {world}/var/lib/cni/networks/podnet",
                   f"file {world}/etc/cni/net.d/20-podnet-stable.conflist",
                   f"file {world}/usr/lib/cni/podnet-ipam",
                   f"file {world}/var/lib/cni/networks/podnet-stable",
                   f"file {world}/etc/systemd/system/podnet-endpoints.service",
                   f"file {world}/etc/modules-load.d/podnet.conf",
                   f"file {world}/usr/local/sbin/podnet-cni",
                   "conntrack flow tcp 10.0.9.1 -> 10.96.0.20"):
        assert any(line.startswith(wanted) for line in left), (wanted, left)
    assert not any("FOREIGN" in line or "foreign" in line or "other" in line or "apache2" in line
                   or "lo-abc-lo" in line for line in left), left
    assert sum(line.startswith("conntrack flow") for line in left) == 4, left  # not the ssh one
    # a dry run says what it would do and does nothing
    assert "removed pod demo_web-1" in dry["changes"]
    assert "deleted link cni0" in dry["changes"] and "unmasked nginx.service" in dry["changes"]
    assert after_dry["left"] == left
    # the reset: pods through CNI DEL, then everything else, and what it keeps, said
    assert "removed pod kube-system_dns-1" in done["changes"]
    assert "deleted route 10.244.1.0/24 (table main, proto 152)" in done["changes"]
    assert "deleted iptables chain PODNET-POSTROUTING in nat" in done["changes"]
    assert "deleted 4 conntrack flows of the Services and pods" in done["changes"]
    assert "sysctl net.ipv4.ip_forward = 1 kept: no record of its value before podnet" \
        in done["kept"]
    assert after["left"] == [], after["left"]
    assert again["changes"] == [], again["changes"]  # a second reset changes nothing
    out = run.stdout
    assert "CNI0 0 NETNS 1" in out and "PROTO152 0" in out and "KUBE 0" in out
    assert "FORWARD 1" in out  # no record: the running value stays
    for line in FOREIGN_KEPT:
        assert line in out, out
    foreign_files_kept(world)
    assert not (world / "var/lib/cni/networks").exists()  # host-local's state is gone
    # podnet's IPAM plugin went, the distribution's plugins stay
    assert sorted(p.name for p in (world / "usr/lib/cni").iterdir()) == ["ptp"]
    assert (world / "etc/cni/net.d").is_dir()  # it still holds another network's file
    assert not (world / "etc/systemd/system/nginx.service").exists()  # unmasked
    assert not (world / "etc/podnet").exists() and not (world / "var/lib/podnet").exists()
    log = (world / "systemctl.log").read_text().splitlines()
    stops = [line for line in log if line.startswith(("stop", "disable"))]
    # the units that would put the rules back go first; podnet-cni remove stops each pod's
    assert stops[:2] == [
        "stop -- podnet-iptables-canary.service podnet-endpoints.service",
        "disable --now podnet-demo_web-1-netexec.service podnet-sandbox@demo_web-1.service"], log
    assert "stop -- podnet-routes.service" in stops
    assert "unit podnet-routes.service is loaded active" in left
    assert not any("podnet-gone" in line for line in left)
    deleted = [line for line in (world / "conntrack.log").read_text().splitlines()
               if line.startswith("-D")]
    assert deleted == ["-D -d 10.96.0.0/12", "-D -s 10.244.0.0/16", "-D -r 10.244.0.2",
                       "-D -r 10.244.0.3"], deleted
    assert (world / "conntrack.table").read_text() == FLOWS.splitlines()[-1] + "\n"


def test_a_converge_that_stopped_half_way_is_reset_too(world: Path) -> None:
    """Rules and routes applied, a pod folder whose network configuration never arrived (its
    CNI DEL fails), its namespace there: reset removes all of it, directly where it must."""
    cat = catalogue(world)
    build_host(world)
    p = node_paths(world)
    Path(p.network_conf).unlink()  # podnet-cni remove fails on this pod
    run = sandbox(world, f"""
ip link add host0 type veth peer name host0-peer && ip addr add 192.168.56.11/24 dev host0
ip link set host0 up && ip link set host0-peer up
$IPTABLES apply {p.iptables_dir} >/dev/null
$ROUTES apply {p.routes_file} >/dev/null
ip netns add demo_web-1
""" + FOREIGN + """
$RESET reset $CAT
$RESET residue $CAT
$RESET reset $CAT
echo "POD-NETNS $(ip netns list | grep -c demo_web-1)"
""" + SHOW_FOREIGN)
    done, after, again = results(run)
    assert any(c.startswith("pod demo_web-1: podnet-cni remove failed (podnet-cni: ")
               and c.endswith("removed directly") for c in done["changes"]), done["changes"]
    assert "POD-NETNS 0" in run.stdout
    assert after["left"] == [] and again["changes"] == [], (after, again)
    for line in FOREIGN_KEPT:
        assert line in run.stdout, run.stdout + run.stderr
    assert cat["pods"]["dir"].startswith(str(world))


def test_a_host_podnet_never_touched_is_left_alone(world: Path) -> None:
    catalogue(world)
    plant_foreign_files(world)
    (world / "etc/systemd/system/nginx.service").symlink_to("/dev/null")  # the admin's mask
    run = sandbox(world, FOREIGN + """
ip netns add other_pod
$RESET reset $CAT --check
$RESET reset $CAT
$RESET residue $CAT
""" + SHOW_FOREIGN)
    dry, done, residue = results(run)
    assert dry["changes"] == [] and done["changes"] == [], done
    assert done["kept"] == []
    # a namespace named like a pod's is named, though not removed: podnet cannot tell
    assert residue["left"] == ["network namespace other_pod"], residue
    assert residue["kept"] == ["unit nginx.service is masked: no record says whether podnet "
                               "masked it"]
    assert (world / "etc/systemd/system/nginx.service").is_symlink()
    for line in FOREIGN_KEPT:
        assert line in run.stdout, run.stdout + run.stderr
    foreign_files_kept(world)


def test_the_record_puts_back_sysctls_and_masks(world: Path) -> None:
    cat = catalogue(world)
    units = world / "etc/systemd/system"
    units.mkdir(parents=True)
    (units / "unbound.service").symlink_to("/dev/null")  # masked before podnet: stays masked
    # a fresh network namespace forwards nothing: the record keeps ip_forward = 0
    first = sandbox(world, "$RESET record $CAT --check\n$RESET record $CAT\n$RESET record $CAT\n")
    dry, recorded, again = results(first)
    record = f"{world}/var/lib/podnet/host-record.json"
    assert dry["changes"] == [f"recorded the host before podnet in {record}"]
    assert recorded["changes"] == dry["changes"]
    assert again["changes"] == [] and again["warning"] == ""  # recorded once
    # what reset puts back, and nothing else (resolv.conf is not podnet's: no field for it)
    recorded_host = json.loads(Path(record).read_text())
    packages = recorded_host.pop("packages")
    assert recorded_host == {"version": hostchanges.RECORD_VERSION,
                             "sysctls": {"net.ipv4.ip_forward": "0"},
                             "masked": ["unbound.service"]}, recorded_host
    # this machine has iptables (the sandbox needs it), one of podnet's packages
    assert "iptables" in packages and set(packages) <= set(cat["packages"]), packages
    # a converge: ip_forward = 1, nginx masked
    run = sandbox(world, build_host(world) + """
$RESET residue $CAT
$RESET reset $CAT
$RESET residue $CAT
echo "FORWARD $(sysctl -n net.ipv4.ip_forward)"
""")
    before, done, after = results(run)
    assert "sysctl net.ipv4.ip_forward = 1 (was 0 before podnet)" in before["left"]
    assert "unit nginx.service is masked (podnet masked it)" in before["left"]
    assert "unit unbound.service is masked (podnet masked it)" not in before["left"]
    assert "sysctl net.ipv4.ip_forward 1 -> 0 (as before podnet)" in done["changes"]
    assert "unmasked nginx.service" in done["changes"]
    assert "unmasked unbound.service" not in done["changes"]
    assert f"removed {record}" in done["changes"]
    # the record went with the reset: a mask left is the host's, or podnet's without a record
    assert after == {"changes": [], "left": [], "warning": "", "kept": [
        "unit unbound.service is masked: no record says whether podnet masked it"]}, after
    assert "FORWARD 0" in run.stdout
    assert (units / "unbound.service").is_symlink() and not (units / "nginx.service").exists()


def test_no_record_where_podnet_was_first(world: Path) -> None:
    catalogue(world)
    build_host(world)
    run = sandbox(world, "$RESET record $CAT\n$RESET reset $CAT\n")
    record, done = results(run)
    assert record["changes"] == [] and record["warning"].startswith(
        "podnet changed this host before its state was recorded (file ")
    assert record["warning"].endswith("no record is written, and reset keeps the sysctls' "
                                      "running values then")
    assert not (world / "var/lib/podnet/host-record.json").exists()
    # without a record the running value stays, and reset says so
    assert "sysctl net.ipv4.ip_forward = 0 kept: no record of its value before podnet" \
        in done["kept"], done["kept"]


def test_a_bad_record_is_named_with_the_fix(world: Path) -> None:
    catalogue(world)
    (world / "var/lib/podnet").mkdir(parents=True)
    (world / "var/lib/podnet/host-record.json").write_text("{not json")
    run = sandbox(world, "$RESET reset $CAT\n")
    (failed,) = results(run)
    assert failed["error"].startswith(f"{world}/var/lib/podnet/host-record.json: not a podnet "
                                      "host record (")
    assert failed["error"].endswith("remove it to reset without one (sysctls and masks are "
                                    "then left as they are)")
    assert failed["changes"] == []


def test_load_balancer_addresses_left_on_an_interface_go_and_no_other_address(
        world: Path) -> None:
    """A keepalived that was killed leaves l2 mode's /32s behind: reset deletes every /32 of
    podnet_lb_pool, on any interface, and no other address (outside the pool, or not a /32)."""
    catalogue(world, podnet_lb_pool="192.168.56.240/28")
    run = sandbox(world, """
ip link add under0 type veth peer name under1 && ip link set under0 up
ip addr add 192.168.56.11/24 dev under0
ip addr add 192.168.56.240/32 dev under0
ip addr add 192.168.56.241/32 dev lo
ip addr add 192.168.56.250/28 dev under0
ip addr add 10.9.9.9/32 dev under0
$RESET residue $CAT
$RESET reset $CAT --check
$RESET reset $CAT
$RESET residue $CAT
$RESET reset $CAT
echo "LEFT $(ip -o -4 addr show | awk '{print $4}' | sort | tr '\\n' ' ')"
""")
    assert run.returncode == 0, run.stdout + run.stderr
    before, dry, done, after, again = results(run)
    assert before["left"] == ["address 192.168.56.240/32 (on under0)",
                              "address 192.168.56.241/32 (on lo)"], before
    assert dry["changes"] == done["changes"] == [
        "deleted address 192.168.56.240/32 (on under0)",
        "deleted address 192.168.56.241/32 (on lo)"], (dry, done)
    assert after["left"] == [] and again["changes"] == [], (after, again)
    left = run.stdout.split("LEFT ", 1)[1].split()
    assert left == ["10.9.9.9/32", "127.0.0.1/8", "192.168.56.11/24", "192.168.56.250/28"], left
