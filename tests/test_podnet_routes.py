"""podnet-routes in a throwaway network namespace: routes to other nodes' pod CIDRs added,
changed and removed by their protocol (152) without touching other routes, check mode, the
wait for a gateway on a connected network, and the file's errors naming file:line."""

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
    return subprocess.run(["unshare", "--net", "--fork", "bash", "-c", NODE + script], env=env,
                          capture_output=True, text=True, check=False, timeout=60)


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
    assert first == {"changed": True, "added": ["10.244.2.0/24", "10.96.0.0/12"], "removed": []}
    assert again == {"changed": False, "added": [], "removed": []}
    assert check == {"changed": True, "added": ["10.244.2.0/24"], "removed": ["10.96.0.0/12"]}
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
    assert (f"podnet-routes: {routes}:2: expected '<cidr> via <address>' or "
            "'<cidr> dev-of <address>'") in run.stderr


def test_usage_without_a_file() -> None:
    run = subprocess.run([str(TOOL), "apply"], capture_output=True, text=True, check=False,
                         timeout=30)
    assert run.returncode == 2
    assert "podnet-routes apply FILE [--check] [--wait=SECONDS]" in run.stderr
