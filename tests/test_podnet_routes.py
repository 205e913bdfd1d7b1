"""podnet-routes in a throwaway network namespace: routes to other nodes' pod CIDRs added,
changed and removed by their protocol (152) without touching other routes, check mode, the
wait for a gateway on a connected network, and the file's errors naming file:line; the VXLAN
overlay between two namespaces playing two nodes: pod traffic through it, the device, its
forwarding and neighbour entries kept to the file's, and removed with the backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "roles" / "pod_network" / "files" / "podnet-routes"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
    reason="needs root, unshare and ip (make setup installs them)")

# a node on 192.168.50.1/24 (a veth: a container cannot load the dummy module) and a foreign
# route (another protocol) that podnet-routes must leave alone
NODE = """set -u
ip link set lo up
ip link add underlay type veth peer name wire
ip addr add 192.168.50.1/24 dev underlay
ip link set wire up
ip link set underlay up
ip route add 10.1.0.0/16 via 192.168.50.9
"""


def sandbox(tmp: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOOL": str(TOOL), "ROUTES": str(tmp / "routes")}
    return subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--fork",
                           "bash", "-c", NODE + script], env=env, capture_output=True, text=True,
                          check=False, timeout=60)


def results(run: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def test_apply_adds_changes_and_removes_only_its_own_routes(tmp_path: Path) -> None:
    (tmp_path / "routes").write_text(
        "# pod CIDRs of the other nodes\n"
        "10.244.2.0/24 via 192.168.50.2\n"
        "\n"
        "10.96.0.0/12 dev-of 192.168.50.1  # the Service CIDR out of the underlay\n")
    (tmp_path / "routes.next").write_text("10.244.2.0/24 via 192.168.50.3\n")
    run = sandbox(tmp_path, """
$TOOL apply $ROUTES
$TOOL apply $ROUTES
mv $ROUTES.next $ROUTES
$TOOL apply $ROUTES --check
echo "== after check"; ip -4 route show proto 152
$TOOL apply $ROUTES
echo "== after apply"; ip -4 route show
""")
    assert run.returncode == 0, run.stderr
    first, again, check, last = results(run)
    assert first == {"changed": True, "added": ["10.244.2.0/24", "10.96.0.0/12"], "removed": [],
                     "device": [], "entries": []}
    assert again == {"changed": False, "added": [], "removed": [], "device": [], "entries": []}
    assert check == {"changed": True, "added": ["10.244.2.0/24"], "removed": ["10.96.0.0/12"],
                     "device": [], "entries": []}
    assert last == check
    after_check = run.stdout.split("== after check\n")[1].split("{")[0]
    # check mode changed nothing: both routes as the first apply left them
    assert "10.244.2.0/24 via 192.168.50.2 dev underlay" in after_check
    assert "10.96.0.0/12 dev underlay" in after_check
    after = run.stdout.split("== after apply\n")[1]
    assert "10.244.2.0/24 via 192.168.50.3 dev underlay proto 152" in after
    assert "10.96.0.0/12" not in after
    assert "10.1.0.0/16 via 192.168.50.9 dev underlay" in after  # foreign route kept


def test_a_gateway_off_every_connected_network_fails_after_the_wait(tmp_path: Path) -> None:
    (tmp_path / "routes").write_text("10.244.2.0/24 via 172.16.0.2\n")
    run = sandbox(tmp_path, "$TOOL apply $ROUTES --wait=0.3; echo rc=$?; ip -4 route show")
    assert "rc=1" in run.stdout, run.stderr
    assert "podnet-routes: 172.16.0.2 is not on a connected network" in run.stderr
    assert "10.244.2.0/24" not in run.stdout  # nothing applied


def test_an_address_no_interface_holds_fails_after_the_wait(tmp_path: Path) -> None:
    (tmp_path / "routes").write_text("10.96.0.0/12 dev-of 192.168.50.77\n")
    run = sandbox(tmp_path, "$TOOL apply $ROUTES --wait=0.3; echo rc=$?")
    assert "rc=1" in run.stdout, run.stderr
    assert "podnet-routes: no interface holds 192.168.50.77" in run.stderr


@pytest.mark.parametrize("line", [
    "10.244.2.0/24 192.168.50.2",
    "10.244.2.0/24 through 192.168.50.2",
    "10.244.2.0/24 via 192.168.50.2 extra",
])
def test_a_malformed_line_is_named_with_its_file_and_line(tmp_path: Path, line: str) -> None:
    routes = tmp_path / "routes"
    routes.write_text(f"# header\n{line}\n")
    run = sandbox(tmp_path, "$TOOL apply $ROUTES --wait=0; echo rc=$?")
    assert "rc=1" in run.stdout, run.stderr
    assert (f"podnet-routes: {routes}:2: expected '<cidr> via <address>', "
            "'<cidr> dev-of <address>', 'vxlan ...' or 'vtep ...'") in run.stderr


def test_usage_without_a_file() -> None:
    run = subprocess.run([str(TOOL), "apply"], capture_output=True, text=True, check=False,
                         timeout=30)
    assert run.returncode == 2
    assert "podnet-routes apply FILE [--check] [--wait=SECONDS]" in run.stderr


# Two nodes as two namespaces on one underlay bridge, each with a "pod" address on a dummy-like
# veth end (10.244.N.5), and the VXLAN lines podnet/backends.py gives each (VNI 1, port 8472).
TWO_NODES = """set -u
mkdir -p /run/netns && mount -t tmpfs podnet-test /run/netns
ip link add under type bridge && ip link set under up
for n in 1 2; do
  ip netns add node$n
  ip link add u$n type veth peer name host0 netns node$n
  ip link set u$n master under up
  ip -n node$n link set lo up
  ip -n node$n addr add 192.168.50.$n/24 dev host0 && ip -n node$n link set host0 up
  ip -n node$n link add cni0 type veth peer name pod
  ip -n node$n addr add 10.244.$n.5/24 dev pod && ip -n node$n link set pod up
  ip -n node$n link set cni0 up
done
vx() {  # vx N OTHER: node N's routes file
  local line1="vxlan podnet.1 vni 1 port 8472 local 192.168.50.$1 address 10.244.$1.0"
  local line2="vtep 10.244.$2.0 mac 0a:59:0a:f4:0$2:00 underlay 192.168.50.$2"
  echo "$line1 mac 0a:59:0a:f4:0$1:00 overhead 50" > $ROUTES.$1
  echo "$line2 routes 10.244.$2.0/24" >> $ROUTES.$1
}
vx 1 2; vx 2 1
"""


def test_vxlan_carries_pod_traffic_between_nodes_and_keeps_to_the_file(tmp_path: Path) -> None:
    run = sandbox(tmp_path, TWO_NODES + """
ip netns exec node1 $TOOL apply $ROUTES.1
ip netns exec node2 $TOOL apply $ROUTES.2
ip netns exec node1 $TOOL apply $ROUTES.1
ip netns exec node2 nc -l -w3 -s 10.244.2.5 -p 8080 > $ROUTES.got &
sleep 0.3
echo hello | ip netns exec node1 nc -N -w3 -s 10.244.1.5 10.244.2.5 8080
wait
[ "$(cat $ROUTES.got)" = hello ] && echo POD-TO-POD-OK
echo "== link"; ip -n node1 -d link show podnet.1
echo "== route"; ip -n node1 route show proto 152
# drift: a stray forwarding entry, a lost neighbour entry, a wrong MTU
ip netns exec node1 bridge fdb append 0a:59:0a:f4:09:00 dev podnet.1 dst 192.168.50.9
ip -n node1 neigh del 10.244.2.0 dev podnet.1
ip -n node1 link set podnet.1 mtu 1400
ip netns exec node1 $TOOL apply $ROUTES.1 --check
ip netns exec node1 $TOOL apply $ROUTES.1
ip netns exec node1 $TOOL apply $ROUTES.1
# another backend (host-gw): the device goes, with its routes
echo "10.244.2.0/24 via 192.168.50.2" > $ROUTES.1
ip netns exec node1 $TOOL apply $ROUTES.1 --check
ip -n node1 link show podnet.1 >/dev/null && echo DEVICE-KEPT-BY-CHECK
ip netns exec node1 $TOOL apply $ROUTES.1
echo "== after"; ip -n node1 link show type vxlan; ip -n node1 route show proto 152
""")
    assert run.returncode == 0, run.stderr
    first, _, again, drift_check, repair, quiet, switch_check, switch = results(run)
    assert first["changed"] and first["added"] == ["10.244.2.0/24"]
    assert first["device"] == ["create podnet.1", "address 10.244.1.0/32"]
    assert first["entries"] == ["fdb 0a:59:0a:f4:02:00 192.168.50.2",
                                "neigh 10.244.2.0 0a:59:0a:f4:02:00"]
    assert again == {"changed": False, "added": [], "removed": [], "device": [], "entries": []}
    assert "POD-TO-POD-OK" in run.stdout, run.stderr
    link = run.stdout.split("== link\n")[1].split("== route")[0]
    # the underlay's 1500 less VXLAN's 50; Flannel's VNI and port, no learning
    assert "mtu 1450" in link and "vxlan id 1 local 192.168.50.1 dev host0" in link
    assert "dstport 8472" in link and "nolearning" in link
    assert "link/ether 0a:59:0a:f4:01:00" in link
    assert "10.244.2.0/24 via 10.244.2.0 dev podnet.1 onlink" in run.stdout
    assert drift_check["changed"] and drift_check == repair
    assert repair["device"] == ["set podnet.1 mac 0a:59:0a:f4:01:00 mtu 1450 up"]
    assert repair["entries"] == ["fdb del 0a:59:0a:f4:09:00 192.168.50.9",
                                 "neigh 10.244.2.0 0a:59:0a:f4:02:00"]
    assert not quiet["changed"]
    assert switch_check["device"] == ["delete podnet.1"] and switch_check == switch
    assert switch["added"] == ["10.244.2.0/24"] and "DEVICE-KEPT-BY-CHECK" in run.stdout
    after = run.stdout.split("== after\n")[1]
    assert "podnet.1" not in after
    assert after.strip() == "10.244.2.0/24 via 192.168.50.2 dev host0"


@pytest.mark.parametrize(("line", "message"), [
    ("vxlan flannel.1 vni 1 port 8472 local 192.168.50.1 address 10.244.1.0 mac 0a:59:0a:f4:01:00 "
     "overhead 50", "the device is named podnet.<VNI>"),
    ("vxlan podnet.1 vni 1 port 8472 local 192.168.50.1 mac 0a:59:0a:f4:01:00 overhead 50",
     "expected vni <vni> port <port> local <local> address <address> mac <mac> overhead"),
    ("vtep 10.244.2.0 mac 0a:59 underlay 192.168.50.2 routes 10.244.2.0/24",
     "'0a:59' is not a MAC address"),
    ("vtep 10.244.2.0 mac 0a:59:0a:f4:02:00 underlay 192.168.50.2 routes 10.244.2.0/33",
     "10.244.2.0/33"),
])
def test_a_malformed_vxlan_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    routes = tmp_path / "routes"
    routes.write_text(f"{line}\n")
    run = sandbox(tmp_path, "$TOOL apply $ROUTES --wait=0; echo rc=$?")
    assert "rc=1" in run.stdout, run.stderr
    assert f"podnet-routes: {routes}:1: " in run.stderr and message in run.stderr


def test_vtep_lines_without_the_device_line_are_refused(tmp_path: Path) -> None:
    (tmp_path / "routes").write_text(
        "vtep 10.244.2.0 mac 0a:59:0a:f4:02:00 underlay 192.168.50.2 routes 10.244.2.0/24\n")
    run = sandbox(tmp_path, "$TOOL apply $ROUTES --wait=0; echo rc=$?")
    assert "rc=1" in run.stdout
    assert "'vtep' lines need the 'vxlan' line of this node's device" in run.stderr
