"""podnet-cni against the real CNI plugins, inside a throwaway network and mount namespace.

Every test runs its steps in one ``unshare --net --mount`` sandbox: the bridge, veths, pod
namespaces and iptables chains the plugins make live and die there; the machine's own network
is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "roles" / "cni" / "files" / "podnet-cni"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists() or not shutil.which("unshare"),
    reason="needs root, unshare and the CNI plugins (make setup installs them)")

CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "podnet",
    "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
         "hairpinMode": True,
         "ipam": {"type": "host-local", "dataDir": "DATA",
                  "ranges": [[{"subnet": "10.244.7.0/24", "gateway": "10.244.7.1"}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
LOOPBACK = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}

LOGGER = """#!/usr/bin/python3
import json, os, sys
conf = json.load(sys.stdin)
cmd = os.environ["CNI_COMMAND"]
if cmd == "VERSION":
    print(json.dumps({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}))
    sys.exit(0)
with open(os.environ["LOGFILE"], "a") as log:
    log.write(json.dumps({"cmd": cmd, "name": conf["name"], "me": conf.get("me"),
                          "prev": conf.get("prevResult")}) + "\\n")
if cmd == "ADD":
    print(json.dumps(conf.get("prevResult") or {"cniVersion": "1.0.0"}))
"""


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """Configuration and state folders for one sandbox."""
    (tmp_path / "net.d").mkdir()
    (tmp_path / "pods").mkdir()
    conflist = json.loads(json.dumps(CONFLIST).replace("DATA", str(tmp_path / "ipam")))
    (tmp_path / "net.d" / "10-podnet.conflist").write_text(json.dumps(conflist))
    (tmp_path / "net.d" / "99-loopback.conf").write_text(json.dumps(LOOPBACK))
    for name in ("a", "b"):
        pod = tmp_path / "pods" / f"t_{name}"
        pod.mkdir()
        (pod / "pod.json").write_text(json.dumps({
            "namespace": "t", "name": name, "netns": f"podnet-test-{name}",
            "container_id": f"c0ffee{name}", "ifname": "eth0", "node": "n1",
            "network": str(tmp_path / "net.d" / "10-podnet.conflist"),
            "loopback": str(tmp_path / "net.d" / "99-loopback.conf"), "units": []}))
    return tmp_path


def sandbox(world: Path, script: str, extra_path: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PODNET_PODS_DIR": str(world / "pods"),
           "PODNET_STATE_DIR": str(world / "state"), "PODNET_CNI_CACHE_DIR": str(world / "cache"),
           "CNI_PATH": f"{extra_path}:/usr/lib/cni" if extra_path else "/usr/lib/cni",
           "CNI": str(RUNTIME), "LOGFILE": str(world / "log")}
    # a private /run: pod namespaces made here vanish with the sandbox, none is left behind
    body = "set -u\nmount -t tmpfs podnet-test /run\nip link set lo up\n" + script
    return subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--fork",
                           "bash", "-c", body], env=env, capture_output=True, text=True,
                          check=False, timeout=120)


def test_validate_accepts_the_list_and_names_what_is_wrong(world: Path) -> None:
    bad = world / "net.d"
    (bad / "old.conflist").write_text(json.dumps({**CONFLIST, "cniVersion": "0.2.0"}))
    (bad / "none.conflist").write_text(json.dumps({**CONFLIST, "plugins": [{"type": "nope"}]}))
    (bad / "broken.conflist").write_text("{")
    run = sandbox(world, f"""
$CNI validate {bad}/10-podnet.conflist && echo GOOD
$CNI validate {bad}/99-loopback.conf && echo GOOD-LO
$CNI validate {bad}/old.conflist; echo rc=$?
$CNI validate {bad}/none.conflist; echo rc=$?
$CNI validate {bad}/broken.conflist; echo rc=$?
""")
    assert run.stdout == "GOOD\nGOOD-LO\nrc=1\nrc=1\nrc=1\n", run.stderr
    assert "cniVersion '0.2.0' is not one of" in run.stderr
    assert "plugin 'nope' was not found in CNI_PATH" in run.stderr
    assert "broken.conflist: cannot read the network configuration" in run.stderr


def test_up_check_down_with_the_real_plugins(world: Path) -> None:
    run = sandbox(world, f"""
$CNI up t_a
echo "ADDR $(ip -n podnet-test-a -4 -o addr show dev eth0 | awk '{{print $4}}')"
echo "GW $(ip -4 -o addr show dev cni0 | awk '{{print $4}}')"
echo "HAIRPIN $(bridge -d link show | grep -c "hairpin on")"
echo "LO $(ip -n podnet-test-a -o link show lo | grep -c UP)"
$CNI check t_a
$CNI up t_a
echo "RESERVED $(ls {world}/ipam/podnet | grep -c '^10\\.')"
cat {world}/cache/podnet-c0ffeea-eth0; echo
cat {world}/state/t_a/state.json
$CNI facts
$CNI down t_a && echo DOWN
echo "NETNS $(ip netns list | grep -c podnet-test-a)"
echo "CACHE $(ls {world}/cache | wc -l)"
echo "RESERVED $(ls {world}/ipam/podnet | grep -c '^10\\.')"
echo "VETHS $(ip -o link show type veth | wc -l)"
$CNI down t_a && echo DOWN-AGAIN
""")
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "pod t_a: 10.244.7.2 in /run/netns/podnet-test-a" in out
    assert "ADDR 10.244.7.2/24" in out and "GW 10.244.7.1/24" in out
    assert "HAIRPIN 1" in out and "LO 1" in out
    assert "pod t_a: CHECK passed" in out
    assert out.count("RESERVED 1") == 1 and "RESERVED 0" in out
    cache = json.loads(out.split("RESERVED 1\n")[1].splitlines()[0])
    assert cache["kind"] == "cniCacheV1" and cache["ifName"] == "eth0"
    assert cache["result"]["ips"][0]["address"] == "10.244.7.2/24"
    assert ["K8S_POD_NAME", "a"] in cache["cniArgs"]
    facts = json.loads(next(line for line in out.splitlines() if line.startswith('{"pods"')))
    assert facts["pods"][0] | {"ip": "10.244.7.2", "name": "a", "node": "n1"} == facts["pods"][0]
    assert "DOWN\nNETNS 0\nCACHE 0\nRESERVED 0\nVETHS 0\nDOWN-AGAIN" in out


SERVE = ('import socket; s = socket.create_server(("", 7000)); c, a = s.accept(); '
         "c.sendall(a[0].encode())")
ASK = ("import socket, sys; "
       "print(socket.create_connection((sys.argv[1], 7000), 3).recv(99).decode())")


def test_two_pods_get_two_addresses_and_reach_each_other(world: Path) -> None:
    run = sandbox(world, f"""
$CNI up t_a && $CNI up t_b
serve() {{  # answer one TCP connection with the peer's address
  ip netns exec "$1" python3 -c '{SERVE}' &
  sleep 0.3
}}
ask() {{ ip netns exec "$1" python3 -c '{ASK}' "$2"; }}
serve podnet-test-b; echo "B-SAW $(ask podnet-test-a 10.244.7.3)"
serve podnet-test-a; echo "A-SAW $(ask podnet-test-b 10.244.7.2)"
$CNI down t_a; $CNI down t_b
""")
    assert "10.244.7.2" in run.stdout and "10.244.7.3" in run.stdout, run.stderr
    # each side sees the other's own pod address: no NAT on the bridge
    assert "B-SAW 10.244.7.2\nA-SAW 10.244.7.3" in run.stdout


def test_the_bridge_keeps_its_mac_as_ports_come_and_go(world: Path) -> None:
    """podnet-cni makes the bridge with a MAC of its own (from the gateway): a port with a
    lower MAC does not change it, so the pods added before still pass CHECK."""
    run = sandbox(world, """
$CNI up t_a
echo "FIRST $(ip -br link show dev cni0 | awk '{print $3}')"
ip link add low address 02:00:00:00:00:01 type veth peer name lowp
ip link set low master cni0 && ip link set low up
$CNI up t_b
echo "AFTER $(ip -br link show dev cni0 | awk '{print $3}')"
$CNI check t_a && echo "CHECK-A ok"
ip link delete low
$CNI down t_a; $CNI down t_b
""")
    assert "FIRST 0a:58:0a:f4:07:01" in run.stdout, run.stdout + run.stderr
    assert "AFTER 0a:58:0a:f4:07:01" in run.stdout, run.stdout + run.stderr
    assert "CHECK-A ok" in run.stdout, run.stdout + run.stderr


def test_a_pod_gets_its_address_back_after_its_namespace_is_lost(world: Path) -> None:
    # a node reboot empties /run/netns but keeps /var/lib/cni: the pod must come back as it was
    run = sandbox(world, f"""
$CNI up t_b >/dev/null; $CNI up t_a
$CNI down t_b
ip netns delete podnet-test-a
ip link delete cni0
$CNI up t_a
$CNI check t_a
echo "RESERVED $(ls {world}/ipam/podnet | grep -c '^10\\.')"
""")
    assert run.stdout.count("pod t_a: 10.244.7.3 in") == 2, run.stdout + run.stderr
    assert "CHECK passed" in run.stdout and "RESERVED 1" in run.stdout


def test_plugins_are_chained_and_deleted_in_reverse(world: Path) -> None:
    bin_dir = world / "bin"
    bin_dir.mkdir()
    logger = bin_dir / "logger"
    logger.write_text(LOGGER)
    logger.chmod(0o755)
    conflist = json.loads((world / "net.d" / "10-podnet.conflist").read_text())
    conflist["plugins"] = [conflist["plugins"][0], {"type": "logger", "me": 2},
                           {"type": "logger", "me": 3}]
    (world / "net.d" / "10-podnet.conflist").write_text(json.dumps(conflist))
    run = sandbox(world, "$CNI up t_a >/dev/null && $CNI check t_a >/dev/null && $CNI down t_a",
                  extra_path=str(bin_dir))
    assert run.returncode == 0, run.stderr
    log = [json.loads(line) for line in (world / "log").read_text().splitlines()]
    assert [(e["cmd"], e["me"]) for e in log] == [
        ("ADD", 2), ("ADD", 3), ("CHECK", 2), ("CHECK", 3), ("DEL", 3), ("DEL", 2)]
    bridge_result = log[0]["prev"]
    assert bridge_result["ips"][0]["address"] == "10.244.7.2/24"
    assert log[1]["prev"] == bridge_result  # the chain passes results on
    assert log[4]["prev"] == bridge_result  # DEL gets the cached final result
    assert all(e["name"] == "podnet" for e in log)


def test_plugin_errors_come_with_the_plugins_message(world: Path) -> None:
    conflist = json.loads((world / "net.d" / "10-podnet.conflist").read_text())
    conflist["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.244.7.0/33"}]]
    (world / "net.d" / "10-podnet.conflist").write_text(json.dumps(conflist))
    run = sandbox(world, """
$CNI up t_a; echo rc=$?
echo "NETNS $(ip netns list | grep -c podnet-test-a)"
""")
    assert "rc=1" in run.stdout and "NETNS 0" in run.stdout
    assert "plugin bridge ADD failed (code" in run.stderr
    assert "10.244.7.0/33" in run.stderr


def test_check_fails_when_the_pod_lost_its_address(world: Path) -> None:
    run = sandbox(world, """
$CNI up t_a >/dev/null
ip -n podnet-test-a addr flush dev eth0
$CNI check t_a; echo rc=$?
""")
    assert "rc=1" in run.stdout, run.stdout + run.stderr
    assert "plugin bridge CHECK failed" in run.stderr


def test_stop_keeps_the_address_for_the_next_up(world: Path) -> None:
    run = sandbox(world, f"""
$CNI up t_b >/dev/null; $CNI up t_a
$CNI stop t_a
echo "NETNS $(ip netns list | grep -c podnet-test-a) STATE $(ls {world}/state | grep -c t_a)"
$CNI down t_b
$CNI up t_b; $CNI up t_a
""")
    assert "pod t_a: 10.244.7.3 in" in run.stdout and "NETNS 0 STATE 0" in run.stdout, run.stderr
    assert run.stdout.count("pod t_a: 10.244.7.3 in") == 2, run.stdout


def test_a_pod_back_on_a_new_veth_is_announced_to_its_neighbours(world: Path) -> None:
    """The pod's netns is deleted under it and its sandbox comes up again: the same IP on a new
    veth with a new MAC. Its node and the pod beside it had the old MAC cached; the gratuitous
    ARP podnet-cni sends makes them use the new one at once (not after a minute)."""
    run = sandbox(world, """
$CNI up t_a >/dev/null && $CNI up t_b >/dev/null
old=$(ip -n podnet-test-a -o link show eth0 | grep -o 'ether [0-9a-f:]*' | cut -d' ' -f2)
echo "OLD ether $old"
# what traffic to the pod leaves behind: its MAC in the node's and its neighbour's caches
ip neigh replace 10.244.7.2 lladdr $old dev cni0 nud stale
ip -n podnet-test-b neigh replace 10.244.7.2 lladdr $old dev eth0 nud stale
ip netns delete podnet-test-a
$CNI up t_a >/dev/null
echo "NEW $(ip -n podnet-test-a -o link show eth0 | grep -o 'ether [0-9a-f:]*')"
echo "NODE $(ip neigh show 10.244.7.2 | grep -o 'lladdr [0-9a-f:]*')"
echo "POD $(ip -n podnet-test-b neigh show 10.244.7.2 | grep -o 'lladdr [0-9a-f:]*')"
""")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    old, new = lines["OLD"].split()[1], lines["NEW"].split()[1]
    assert old != new, run.stdout
    assert lines["NODE"] == f"lladdr {new}", run.stdout + run.stderr
    assert lines["POD"] == f"lladdr {new}", run.stdout + run.stderr


IPAM = ROOT / "roles" / "cni" / "files" / "podnet-ipam"


def test_a_pod_moved_to_the_stable_conflist_frees_its_old_address(world: Path) -> None:
    """A pod that starts keeping its address (its pod.json names the ptp + podnet-ipam conflist
    now): up DELs the old attachment with the configuration it was ADDed with (from the cache),
    so host-local frees the bridge address, and ADDs the new one: the assigned address on a
    point-to-point veth, its /32 routed to it, the gateway on the host side."""
    plugins = world / "plugins"
    plugins.mkdir()
    shutil.copy(IPAM, plugins / "podnet-ipam")
    (world / "stable.json").write_text(json.dumps({"version": 1, "pods": {"t/a": "10.244.255.9"}}))
    stable = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "ptp", "ipMasq": False,
         "ipam": {"type": "podnet-ipam", "assignments": str(world / "stable.json"),
                  "gateway": "10.244.7.1", "prefixLength": 16,
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    (world / "net.d" / "20-podnet-stable.conflist").write_text(json.dumps(stable))
    pod_json = world / "pods" / "t_a" / "pod.json"
    switched = {**json.loads(pod_json.read_text()),
                "network": str(world / "net.d" / "20-podnet-stable.conflist")}
    run = sandbox(world, f"""
export PODNET_IPAM_STATE_DIR={world}/ipam
$CNI up t_a
echo "BRIDGED $(ls {world}/ipam/podnet | grep -c '^10\\.')"
echo '{json.dumps(switched)}' > {pod_json}
$CNI up t_a
echo "BRIDGED $(ls {world}/ipam/podnet | grep -c '^10\\.')"
echo "KEPT $(ls {world}/ipam/podnet-stable | grep '^10\\.')"
echo "ADDR $(ip -n podnet-test-a -4 -o addr show dev eth0 | awk '{{print $4}}')"
echo "ROUTE $(ip -4 route show 10.244.255.9/32 | awk '{{print $2, $3}}')"
echo "DEFAULT $(ip -n podnet-test-a -4 route show default | awk '{{print $3}}')"
$CNI check t_a
$CNI down t_a && echo DOWN
echo "KEPT-AFTER $(ls {world}/ipam/podnet-stable | grep -c '^10\\.')"
""", extra_path=str(plugins))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "pod t_a: 10.244.7.2 in" in out and "pod t_a: 10.244.255.9 in" in out, out
    assert "BRIDGED 1\n" in out and "BRIDGED 0\n" in out, out
    assert "KEPT 10.244.255.9\n" in out and "ADDR 10.244.255.9/16\n" in out, out
    assert "ROUTE dev veth" in out and "DEFAULT 10.244.7.1\n" in out, out
    assert "pod t_a: CHECK passed" in out and "DOWN\nKEPT-AFTER 0" in out, out


def test_a_pod_that_keeps_its_address_is_not_started_at_boot_where_another_node_runs_it(
        world: Path) -> None:
    """The fence: before a converge has admitted it since boot, ``up`` asks the other nodes of
    the assignments (their /podnet/pods) and refuses, naming the node, when one runs a pod with
    the address; a node that does not answer cannot say; once admitted it asks no more."""
    plugins = world / "plugins"
    plugins.mkdir()
    shutil.copy(IPAM, plugins / "podnet-ipam")
    port = 18080
    fence = {"nodes": [{"name": "n1", "address": "127.0.0.9"},  # this node: never asked
                       {"name": "n2", "address": "127.0.0.2"},  # answers
                       {"name": "n3", "address": "127.0.0.3"}],  # down
             "port": port, "path": "/podnet/pods"}
    (world / "stable.json").write_text(json.dumps(
        {"version": 1, "pods": {"t/a": "10.244.255.9"}, "fence": fence}))
    stable = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "ptp", "ipMasq": False,
         "ipam": {"type": "podnet-ipam", "assignments": str(world / "stable.json"),
                  "gateway": "10.244.7.1", "prefixLength": 16,
                  "routes": [{"dst": "0.0.0.0/0"}]}}]}
    (world / "net.d" / "20-podnet-stable.conflist").write_text(json.dumps(stable))
    pod_json = world / "pods" / "t_a" / "pod.json"
    pod_json.write_text(json.dumps({
        **json.loads(pod_json.read_text()), "stable_ip": "10.244.255.9",
        "network": str(world / "net.d" / "20-podnet-stable.conflist")}))
    served = world / "n2" / "podnet"
    served.mkdir(parents=True)
    run = sandbox(world, f"""
export PODNET_IPAM_STATE_DIR={world}/ipam PODNET_IPAM_ASSIGNMENTS={world}/stable.json
export PODNET_ADMITTED_DIR={world}/admitted
echo '{{"ips": ["10.244.0.5", "10.244.255.9"]}}' > {served}/pods
python3 -m http.server {port} --bind 127.0.0.2 --directory {world}/n2 >/dev/null 2>&1 &
for i in $(seq 50); do curl -sf http://127.0.0.2:{port}/podnet/pods >/dev/null && break
  sleep 0.1; done
$CNI up t_a; echo "REFUSED $? $(ls {world}/admitted 2>/dev/null | wc -l) $(ip netns list | wc -l)"
echo '{{"ips": ["10.244.0.5"]}}' > {served}/pods
$CNI up t_a && echo "STARTED $(ls {world}/admitted)"
$CNI stop t_a
echo '{{"ips": ["10.244.255.9"]}}' > {served}/pods
$CNI up t_a && echo "ADMITTED-STARTS"
$CNI down t_a
""", extra_path=str(plugins))
    out = run.stdout + run.stderr
    assert "podnet-cni: pod t_a: n2 runs a pod with its address 10.244.255.9 (it moved there " \
           "while this node was away): not started here" in out, out
    assert "REFUSED 1 0 0\n" in out, out  # nothing wired, nothing admitted
    assert "pod t_a: 10.244.255.9 in" in out and "STARTED t_a\n" in out, out
    assert "ADMITTED-STARTS\n" in out, out


def _describe(world: Path, name: str, **extra: object) -> None:
    path = world / "pods" / f"t_{name}" / "pod.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))


UDP_ECHO = ('import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); '
            's.bind(("", 7000)); d, a = s.recvfrom(99); s.sendto(b"udp:" + d, a)')
UDP_ASK = ('import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); '
           's.settimeout(3); s.sendto(b"hi", (sys.argv[1], int(sys.argv[2]))); '
           'print(s.recv(99).decode())')


def test_host_ports_are_mapped_and_the_shared_chains_go_with_the_last(world: Path) -> None:
    """hostPorts through the real portmap plugin (runtimeConfig portMappings, as libcni passes
    it): the node's address and port reach the pod over TCP and UDP, 127.0.0.1's from the node
    itself; CHECK passes with the cached mappings; a stop and up leaves one set of rules; a
    pod's DEL removes its mapping, and the DEL of the last pod with host ports removes
    portmap's shared chains and the bridge's route_localnet."""
    _describe(world, "a", port_mappings=[
        {"hostPort": 54323, "containerPort": 7000, "protocol": "tcp"},
        {"hostPort": 54324, "containerPort": 7000, "protocol": "tcp", "hostIP": "127.0.0.1"}])
    _describe(world, "b", port_mappings=[
        {"hostPort": 54325, "containerPort": 7000, "protocol": "udp"}])
    ask = ASK.replace("7000", "int(sys.argv[2])")
    serve = f"ip netns exec podnet-test-a python3 -c '{SERVE}' & server=$!; sleep 0.5"
    run = sandbox(world, f"""
$CNI up t_a >/dev/null && $CNI up t_b >/dev/null
echo "LOCALNET $(cat /proc/sys/net/ipv4/conf/cni0/route_localnet)"
{serve}
echo "TCP $(python3 -c '{ask}' 10.244.7.1 54323 || kill $server)"
{serve}
echo "LOCAL $(python3 -c '{ask}' 127.0.0.1 54324 || kill $server)"
ip netns exec podnet-test-b python3 -c '{UDP_ECHO}' & sleep 0.5
echo "UDP $(python3 -c '{UDP_ASK}' 10.244.7.1 54325)"
echo "CACHED $(grep -c '"hostPort": 54324' {world}/cache/podnet-c0ffeea-eth0)"
$CNI check t_a && echo CHECKED
echo "RULES $(iptables-save -t nat | grep -c 'dport 54323')"
$CNI stop t_a && $CNI up t_a >/dev/null
echo "RULES $(iptables-save -t nat | grep -c 'dport 54323')"
$CNI down t_a && echo "A-DOWN $(iptables-save -t nat | grep -c 'CNI-HOSTPORT-DNAT')"
echo "A-RULES $(iptables-save -t nat | grep -c 'dport 54323')"
$CNI down t_b && echo "B-DOWN $(iptables-save -t nat | grep -c 'CNI-')"
echo "LOCALNET $(cat /proc/sys/net/ipv4/conf/cni0/route_localnet)"
""")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "LOCALNET 1" and lines[-1] == "LOCALNET 0", run.stdout
    assert "TCP 10.244.7.1" in lines, run.stdout + run.stderr  # the node's own address
    assert next(x for x in lines if x.startswith("LOCAL ")).startswith("LOCAL 10.244."), lines
    assert "UDP udp:hi" in lines and "CACHED 1" in lines, run.stdout
    assert "CHECKED" in lines, run.stdout + run.stderr
    rules = [x for x in lines if x.startswith("RULES")]
    assert len(rules) == 2 and rules[0] == rules[1] != "RULES 0", run.stdout
    assert "A-RULES 0" in lines, run.stdout
    assert next(x for x in lines if x.startswith("A-DOWN")) != "A-DOWN 0", run.stdout
    assert "B-DOWN 0" in lines, run.stdout


def test_a_pod_moved_to_the_host_network_leaves_its_pod_network_behind(world: Path) -> None:
    _describe(world, "a", port_mappings=[
        {"hostPort": 54323, "containerPort": 7000, "protocol": "tcp"}])
    run = sandbox(world, f"""
$CNI up t_a >/dev/null
python3 - <<'PY'
import json
path = "{world}/pods/t_a/pod.json"
pod = json.load(open(path)); pod.update(host_network=True, host_ip="192.168.56.11")
json.dump(pod, open(path, "w"))
PY
$CNI stop t_a && $CNI up t_a
echo "NETNS $(ip netns list | grep -c podnet-test-a)"
echo "CACHE $(ls {world}/cache | wc -l)"
echo "RESERVED $(ls {world}/ipam/podnet | grep -c '^10\\.')"
echo "RULES $(iptables-save -t nat | grep -c 'CNI-')"
""")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "pod t_a: 192.168.56.11" in run.stdout, run.stdout
    for line in ("NETNS 0", "CACHE 0", "RESERVED 0", "RULES 0"):
        assert line in run.stdout.splitlines(), run.stdout


def test_a_host_network_pod_has_the_nodes_address_and_no_namespace(world: Path) -> None:
    _describe(world, "a", host_network=True, host_ip="192.168.56.11")
    _describe(world, "b", etc_hosts={"hostname": "web-0", "domain": "web.t.svc.cluster.local",
                                      "path": str(world / "state" / "t_b" / "hosts")})
    run = sandbox(world, f"""
$CNI up t_a && $CNI check t_a && echo CHECKED
echo "NETNS $(ip netns list | grep -c podnet-test-a)"
$CNI facts
$CNI up t_b >/dev/null
cat {world}/state/t_b/hosts
$CNI down t_a && echo "STATE $(ls {world}/state | tr '\\n' ' ')"
""")
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "CHECKED" in out and "NETNS 0" in out
    facts = json.loads(next(x for x in out.splitlines() if x.startswith('{"pods"')))
    host = next(p for p in facts["pods"] if p["name"] == "a")
    assert host["ip"] == "192.168.56.11" and host["netns"] == "" and host["host_network"]
    assert out.split("# Kubernetes-managed hosts file.\n", 1)[1].startswith("127.0.0.1\tlocalhost")
    assert "10.244.7.2\tweb-0.web.t.svc.cluster.local\tweb-0\n" in out
    assert "STATE t_b" in out
