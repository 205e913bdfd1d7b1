"""podnet-ipam, the CNI IPAM plugin of pods that keep their address on every node, executed as
a CNI runtime or a main plugin executes it (CNI_* variables, the configuration on stdin): ADD,
DEL, CHECK, GC, STATUS and VERSION, each error as a CNI error result with the spec's code, the
node's reservations (one attachment per address, under a lock) in a tmp folder
(PODNET_IPAM_STATE_DIR); and, as root, chained under Debian's real ptp plugin in a throwaway
network namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "roles" / "cni" / "files" / "podnet-ipam"
PTP = Path("/usr/lib/cni/ptp")

POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=db-0;K8S_POD_INFRA_CONTAINER_ID=c1"
ADDRESS = "10.244.255.3"
GATEWAY = "10.244.1.1"


class World:
    """A node's view: the assignments file and the reservations folder, in tmp."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.assignments = tmp / "stable.json"
        self.state = tmp / "state"
        self.write({"demo/db-0": ADDRESS, "demo/db-1": "10.244.255.4"})

    def write(self, pods: dict[str, str], version: int = 1) -> None:
        self.assignments.write_text(json.dumps({"version": version, "pods": pods}))

    def config(self, version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
        section = {"type": "podnet-ipam", "assignments": str(self.assignments),
                   "gateway": GATEWAY, "routes": [{"dst": "0.0.0.0/0"}], **ipam}
        return {"cniVersion": version, "name": "podnet", "type": "ptp", "ipam": section}

    @property
    def reservations(self) -> Path:
        return self.state / "podnet-stable"

    def held(self) -> dict[str, str]:
        if not self.reservations.is_dir():
            return {}
        return {p.name: p.read_text() for p in self.reservations.iterdir()
                if p.name[0].isdigit()}

    def call(self, command: str, config: dict[str, Any] | bytes | None = None, *,
             container: str | None = "c1", ifname: str = "eth0", args: str | None = POD_ARGS,
             ) -> tuple[int, dict[str, Any] | None]:
        """Execute the plugin; its exit code and the JSON it printed (None: nothing)."""
        env = {**os.environ, "CNI_COMMAND": command, "CNI_NETNS": "/run/netns/pod",
               "CNI_IFNAME": ifname, "CNI_PATH": str(PLUGIN.parent),
               "PODNET_IPAM_STATE_DIR": str(self.state)}
        for name, value in (("CNI_CONTAINERID", container), ("CNI_ARGS", args)):
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        if config is None:
            config = self.config()
        stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
        run = subprocess.run([str(PLUGIN)], input=stdin, env=env, capture_output=True,
                             check=False, timeout=30)
        assert not run.stderr, run.stderr.decode()
        out = run.stdout.decode().strip()
        return run.returncode, json.loads(out) if out else None


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def error(world: World, command: str = "ADD", config: dict[str, Any] | bytes | None = None,
          **kwargs: Any) -> dict[str, Any]:
    """The CNI error result of a call that must fail: exit non-zero, code, msg, details."""
    rc, out = world.call(command, config, **kwargs)
    assert rc != 0, out
    assert out is not None and set(out) <= {"cniVersion", "code", "msg", "details"}, out
    assert isinstance(out["code"], int) and out["msg"], out
    return out


# -- ADD --------------------------------------------------------------------------------------
def test_add_gives_the_pod_its_assigned_address_and_reserves_it(world: World) -> None:
    rc, out = world.call("ADD")
    assert rc == 0
    assert out == {"cniVersion": "1.0.0",
                   "ips": [{"address": f"{ADDRESS}/32", "gateway": GATEWAY}],
                   "routes": [{"dst": "0.0.0.0/0"}]}
    # host-local's layout: a file per address holding the container id and the interface
    assert world.held() == {ADDRESS: "c1\neth0\n"}
    assert (world.reservations / "lock").exists()


def test_add_again_by_the_same_attachment_is_idempotent(world: World) -> None:
    first = world.call("ADD")
    assert world.call("ADD") == first
    assert world.held() == {ADDRESS: "c1\neth0\n"}


def test_another_container_cannot_take_a_reserved_address(world: World) -> None:
    assert world.call("ADD")[0] == 0
    out = error(world, container="c2")
    assert out["code"] == 100
    assert out["msg"] == (f"pod demo/db-0: its address {ADDRESS} ({world.assignments}) is "
                          "reserved on this node by container c1 (eth0), not by container c2 "
                          "(eth0)")
    assert str(world.reservations / ADDRESS) in out["details"]
    assert "a DEL of container c1 (eth0) releases" in out["details"]
    assert world.held() == {ADDRESS: "c1\neth0\n"}  # the holder keeps it
    # the same container on a second interface is another attachment: refused as well
    assert error(world, ifname="net1")["code"] == 100


def test_two_pods_on_one_node_get_two_addresses(world: World) -> None:
    assert world.call("ADD")[0] == 0
    rc, out = world.call("ADD", container="c2",
                         args="K8S_POD_NAMESPACE=demo;K8S_POD_NAME=db-1")
    assert rc == 0 and out and out["ips"][0]["address"] == "10.244.255.4/32"
    assert world.held() == {ADDRESS: "c1\neth0\n", "10.244.255.4": "c2\neth0\n"}


def test_concurrent_adds_of_one_address_reserve_it_once(world: World) -> None:
    """Eight containers race for one pod's address: the lock lets exactly one have it."""
    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda i: world.call("ADD", container=f"racer{i}"), range(8)))
    won = [out for rc, out in runs if rc == 0]
    lost = [out for rc, out in runs if rc != 0]
    assert len(won) == 1 and len(lost) == 7
    assert {out["code"] for out in lost if out} == {100}
    assert len(world.held()) == 1


@pytest.mark.parametrize(("version", "ip"), [
    ("0.4.0", {"version": "4", "address": f"{ADDRESS}/32", "gateway": GATEWAY}),
    ("1.1.0", {"address": f"{ADDRESS}/32", "gateway": GATEWAY}),
])
def test_the_result_follows_the_configurations_version(world: World, version: str,
                                                       ip: dict[str, str]) -> None:
    rc, out = world.call("ADD", world.config(version, routes=[]))
    assert rc == 0
    assert out == {"cniVersion": version, "ips": [ip]}  # no routes configured: none returned


def test_routes_and_prefix_length_come_from_the_configuration(world: World) -> None:
    routes = [{"dst": "10.96.0.0/12"}, {"dst": "192.168.0.0/16", "gw": "10.244.1.254"}]
    rc, out = world.call("ADD", world.config(routes=routes, prefixLength=16))
    assert rc == 0 and out
    assert out["ips"] == [{"address": f"{ADDRESS}/16", "gateway": GATEWAY}]
    assert out["routes"] == routes


def test_add_for_a_new_assignment_moves_the_attachments_reservation(world: World) -> None:
    assert world.call("ADD")[0] == 0
    world.write({"demo/db-0": "10.244.255.9"})
    rc, out = world.call("ADD")
    assert rc == 0 and out and out["ips"][0]["address"] == "10.244.255.9/32"
    assert world.held() == {"10.244.255.9": "c1\neth0\n"}  # the old address is free again


# -- the assignments and the pod ---------------------------------------------------------------
def test_a_pod_without_an_assignment_is_refused_with_the_fix(world: World) -> None:
    out = error(world, args="K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-0")
    assert out["code"] == 102
    assert out["msg"] == f"pod demo/web-0 has no stable address in {world.assignments}"
    assert "record one for demo/web-0 in the cluster model and converge" in out["details"]
    assert world.held() == {}


def test_a_missing_assignments_file_is_try_again_later(world: World) -> None:
    world.assignments.unlink()
    out = error(world)
    assert out["code"] == 11
    assert out["msg"] == (f"pod demo/db-0: the stable address assignments {world.assignments} "
                          "do not exist (yet)")
    assert "converge the node, then try again" in out["details"]


@pytest.mark.parametrize(("content", "code", "words"), [
    ('{"version": 1, "pods": {', 101, "is not valid JSON"),
    ('{"version": 2, "pods": {}}', 101, "is not a version 1 assignments file (version 2)"),
    ('["demo/db-0"]', 101, "is not a version 1 assignments file (a JSON list)"),
    ('{"version": 1, "pods": ["demo/db-0"]}', 101, "has no 'pods' object"),
    ('{"version": 1, "pods": {"demo/db-0": 3}}', 101, "has no 'pods' object"),
    ('{"version": 1, "pods": {"demo/db-0": "10.244.255.3", "demo/x": "10.244.255.3"}}', 101,
     "assigns its address 10.244.255.3 to demo/x as well"),
    ('{"version": 1, "pods": {"demo/db-0": "fd00::3"}}', 103, "'fd00::3'"),
    ('{"version": 1, "pods": {"demo/db-0": "10.244.255.300"}}', 103, "'10.244.255.300'"),
    ('{"version": 1, "pods": {"demo/db-0": "10.244.255.3/32"}}', 103, "'10.244.255.3/32'"),
    ('{"version": 1, "pods": {"demo/db-0": "224.0.0.5"}}', 103, "'224.0.0.5'"),
    ('{"version": 1, "pods": {"demo/db-0": "127.0.0.2"}}', 103, "'127.0.0.2'"),
    ('{"version": 1, "pods": {"demo/db-0": "0.0.0.0"}}', 103, "'0.0.0.0'"),
])
def test_a_bad_assignments_file_names_the_pod_the_file_and_the_fix(
        world: World, content: str, code: int, words: str) -> None:
    world.assignments.write_text(content)
    out = error(world)
    assert out["code"] == code
    assert out["msg"].startswith("pod demo/db-0: ") and str(world.assignments) in out["msg"]
    assert words in out["msg"]
    assert "cluster model" in out["details"] or "converge" in out["details"]
    assert world.held() == {}


def test_an_unreadable_assignments_file_is_an_io_failure(world: World) -> None:
    world.assignments.unlink()
    world.assignments.mkdir()
    out = error(world)
    assert out["code"] == 5 and str(world.assignments) in out["msg"]


@pytest.mark.parametrize("args", [
    None, "", "IgnoreUnknown=1", "K8S_POD_NAMESPACE=demo", "K8S_POD_NAME=db-0",
    "K8S_POD_NAMESPACE=;K8S_POD_NAME=db-0",
])
def test_cni_args_must_name_the_pod(world: World, args: str | None) -> None:
    out = error(world, args=args)
    assert out["code"] == 4
    assert out["msg"].startswith("container c1: CNI_ARGS names no pod")
    assert str(world.assignments) in out["msg"]
    assert "K8S_POD_NAMESPACE=<namespace>;K8S_POD_NAME=<name>" in out["details"]


def test_a_cni_args_pair_without_a_value_is_refused(world: World) -> None:
    out = error(world, args="K8S_POD_NAMESPACE=demo;garbage;K8S_POD_NAME=db-0")
    assert out["code"] == 4 and out["msg"] == "CNI_ARGS has an invalid pair 'garbage'"


def test_the_gateway_must_fit_the_address(world: World) -> None:
    out = error(world, config=world.config(gateway=ADDRESS))
    assert out["code"] == 7 and out["msg"].endswith(f"the gateway {ADDRESS}: the gateway is "
                                                    "that address")
    out = error(world, config=world.config(prefixLength=24))
    assert out["code"] == 7
    assert "the gateway is outside 10.244.255.0/24 (prefixLength 24)" in out["msg"]
    assert world.held() == {}


# -- the configuration and the environment ------------------------------------------------------
def broken(world: World, change: dict[str, Any]) -> dict[str, Any]:
    config = world.config()
    for key, value in change.items():
        where, _, field = key.rpartition(".")
        target = config["ipam"] if where == "ipam" else config
        if value is None:
            target.pop(field)
        else:
            target[field] = value
    return config


@pytest.mark.parametrize(("change", "code", "words"), [
    ({"ipam": None}, 7, "ipam section is missing"),
    ({"ipam.assignments": None}, 7, "'assignments' is None"),
    ({"ipam.assignments": "stable.json"}, 7, "'assignments' is 'stable.json'"),
    ({"ipam.gateway": None}, 7, "'gateway' is None"),
    ({"ipam.gateway": "fd00::1"}, 7, "'gateway' is 'fd00::1'"),
    ({"ipam.routes": {"dst": "0.0.0.0/0"}}, 7, "'routes' must be a list"),
    ({"ipam.routes": [{"dst": "0.0.0.0/33"}]}, 7, "routes[0]"),
    ({"ipam.routes": [{"gw": "10.0.0.1"}]}, 7, "routes[0]"),
    ({"ipam.routes": ["0.0.0.0/0"]}, 7, "routes[0]"),
    ({"ipam.routes": [{"dst": "0.0.0.0/0", "gw": "x"}]}, 7, "routes[0]"),
    ({"ipam.prefixLength": 33}, 7, "'prefixLength' is 33"),
    ({"ipam.prefixLength": True}, 7, "'prefixLength' is True"),
    ({"name": "../etc"}, 7, "the network name '../etc' is not valid"),
    ({"name": None}, 7, "the network name None is not valid"),
    ({"cniVersion": "0.3.1"}, 1, "cniVersion '0.3.1' is not supported"),
    ({"cniVersion": None}, 1, "cniVersion None is not supported"),
])
def test_an_invalid_configuration_is_refused(world: World, change: dict[str, Any], code: int,
                                             words: str) -> None:
    out = error(world, config=broken(world, change))
    assert out["code"] == code and words in out["msg"], out
    # the error speaks the configuration's version when it has a supported one
    version = change.get("cniVersion", "1.0.0")
    assert out["cniVersion"] == (version if version == "1.0.0" else "1.1.0")
    assert world.held() == {}


@pytest.mark.parametrize("stdin", [b"{", b"[1]", b"\xff"])
def test_stdin_that_is_no_json_object_is_a_decode_failure(world: World, stdin: bytes) -> None:
    out = error(world, config=stdin)
    assert out["code"] == 6 and out["cniVersion"] == "1.1.0"


@pytest.mark.parametrize(("command", "container", "words"), [
    ("ADD", None, "CNI_COMMAND=ADD needs CNI_CONTAINERID"),
    ("CHECK", None, "CNI_COMMAND=CHECK needs CNI_CONTAINERID"),
    ("DEL", None, "CNI_COMMAND=DEL needs CNI_CONTAINERID"),
    ("ADD", "../c1", "CNI_CONTAINERID '../c1' is not valid"),
    ("DEL", "-c1", "CNI_CONTAINERID '-c1' is not valid"),
    ("", "c1", "CNI_COMMAND '' is not known"),
    ("UPDATE", "c1", "CNI_COMMAND 'UPDATE' is not known"),
])
def test_missing_or_invalid_variables_are_refused(world: World, command: str,
                                                  container: str | None, words: str) -> None:
    out = error(world, command, container=container)
    assert out["code"] == 4 and out["msg"] == words
    assert not world.state.exists()


def test_reservations_that_cannot_be_written_are_an_io_failure(world: World) -> None:
    world.state.write_text("not a folder")
    out = error(world)
    assert out["code"] == 5 and str(world.reservations) in out["msg"]


# -- DEL ----------------------------------------------------------------------------------------
def test_del_releases_the_attachments_reservation_and_only_it(world: World) -> None:
    assert world.call("ADD")[0] == 0
    assert world.call("ADD", container="c2",
                      args="K8S_POD_NAMESPACE=demo;K8S_POD_NAME=db-1")[0] == 0
    assert world.call("DEL", container="c9") == (0, None)  # holds nothing: no error
    assert world.call("DEL", ifname="net1") == (0, None)  # c1's other interface holds nothing
    assert len(world.held()) == 2
    # a DEL needs neither the pod nor the assignments (they may be gone by then)
    world.assignments.unlink()
    assert world.call("DEL", args=None) == (0, None)
    assert world.held() == {"10.244.255.4": "c2\neth0\n"}
    assert world.call("DEL") == (0, None)  # again: nothing reserved is no error
    # the address is free for the pod's next sandbox
    world.write({"demo/db-0": ADDRESS})
    assert world.call("ADD", container="c3")[0] == 0


def test_del_on_a_node_that_never_reserved_creates_nothing(world: World) -> None:
    assert world.call("DEL") == (0, None)
    assert not world.state.exists()


def test_del_releases_a_reservation_without_an_interface_line(world: World) -> None:
    world.reservations.mkdir(parents=True)
    (world.reservations / ADDRESS).write_text("c1")
    assert world.call("DEL") == (0, None)
    assert world.held() == {}


# -- CHECK --------------------------------------------------------------------------------------
def test_check_passes_for_the_reservation_of_the_assigned_address(world: World) -> None:
    rc, result = world.call("ADD")
    assert rc == 0
    assert world.call("CHECK") == (0, None)
    assert world.call("CHECK", {**world.config(), "prevResult": result}) == (0, None)


def test_check_fails_without_the_reservation(world: World) -> None:
    out = error(world, "CHECK")
    assert out["code"] == 104
    assert out["msg"] == (f"pod demo/db-0: container c1 (eth0) has no reservation of its "
                          f"assigned address {ADDRESS} ({world.assignments}) on this node: it "
                          "holds no address here")
    assert "DEL" in out["details"]
    assert world.call("ADD")[0] == 0
    out = error(world, "CHECK", container="c2")
    assert out["code"] == 104
    assert f"{world.reservations / ADDRESS} names container c1" in out["msg"]
    assert world.call("DEL")[0] == 0
    assert error(world, "CHECK")["code"] == 104


def test_check_fails_when_the_assignment_changed(world: World) -> None:
    assert world.call("ADD")[0] == 0
    world.write({"demo/db-0": "10.244.255.9"})
    out = error(world, "CHECK")
    assert out["code"] == 104
    assert f"assigned address 10.244.255.9 ({world.assignments})" in out["msg"]
    assert out["msg"].endswith(f"it holds {ADDRESS}")


def test_check_fails_when_the_result_holds_another_address(world: World) -> None:
    assert world.call("ADD")[0] == 0
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.244.1.7/24"}]}
    out = error(world, "CHECK", {**world.config(), "prevResult": prev})
    assert out["code"] == 104
    assert out["msg"] == (f"pod demo/db-0: its result holds 10.244.1.7, not its assigned "
                          f"address {ADDRESS} ({world.assignments})")


def test_check_refuses_what_add_refuses(world: World) -> None:
    assert error(world, "CHECK", args="K8S_POD_NAME=db-0")["code"] == 4
    world.assignments.unlink()
    assert error(world, "CHECK")["code"] == 11


# -- GC, STATUS, VERSION ------------------------------------------------------------------------
def gc_config(world: World, attachments: list[dict[str, str]] | None,
              key: str = "cni.dev/valid-attachments") -> dict[str, Any]:
    config = world.config("1.1.0")
    if attachments is not None:
        config[key] = attachments
    return config


def test_gc_releases_the_reservations_of_attachments_not_valid(world: World) -> None:
    for container, pod in (("c1", "db-0"), ("c2", "db-1")):
        args = f"K8S_POD_NAMESPACE=demo;K8S_POD_NAME={pod}"
        assert world.call("ADD", world.config("1.1.0"), container=container, args=args)[0] == 0
    valid = [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]
    assert world.call("GC", gc_config(world, valid), container=None, args=None) == (0, None)
    assert world.held() == {ADDRESS: "c1\neth0\n"}  # c2's eth0 was not valid
    assert (world.reservations / "lock").exists()  # not an address: left alone
    # libcni also sends the list as cni.dev/attachments (its older name)
    assert world.call("GC", gc_config(world, [], "cni.dev/attachments")) == (0, None)
    assert world.held() == {}


def test_gc_without_the_valid_attachments_releases_nothing(world: World) -> None:
    assert world.call("ADD")[0] == 0
    out = error(world, "GC", gc_config(world, None))
    assert out["code"] == 7 and out["msg"] == "GC needs 'cni.dev/valid-attachments'"
    assert world.held() == {ADDRESS: "c1\neth0\n"}


def test_gc_on_a_node_without_reservations_does_nothing(world: World) -> None:
    assert world.call("GC", gc_config(world, [])) == (0, None)
    assert not world.state.exists()


def test_status_is_ready(world: World) -> None:
    assert world.call("STATUS", world.config("1.1.0"), container=None, args=None) == (0, None)


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_need_version_1_1(world: World, command: str) -> None:
    out = error(world, command, world.config("1.0.0"))
    assert out["code"] == 1 and out["msg"] == f"cniVersion 1.0.0 has no {command}"


@pytest.mark.parametrize(("stdin", "version"), [
    (b'{"cniVersion": "1.0.0"}', "1.0.0"), (b'{"cniVersion": "0.2.0"}', "1.1.0"), (b"", "1.1.0"),
])
def test_version_lists_the_supported_versions(world: World, stdin: bytes, version: str) -> None:
    rc, out = world.call("VERSION", stdin, container=None, args=None)
    assert rc == 0
    assert out == {"cniVersion": version, "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}


# -- chained under the real ptp plugin ------------------------------------------------------
needs_ptp = pytest.mark.skipif(
    os.geteuid() != 0 or not PTP.exists() or not shutil.which("unshare"),
    reason="needs root, unshare and /usr/lib/cni/ptp (make setup installs them)")

# answer one TCP connection in the pod with the address the client came from
SERVE = ("import socket; s = socket.create_server(('0.0.0.0', 8080)); c, a = s.accept(); "
         "c.sendall(a[0].encode()); c.close()")
ASK = ("import socket, sys; c = socket.create_connection((sys.argv[1], 8080), timeout=5); "
       "print(c.recv(64).decode())")


def ptp_sandbox(world: World, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in bash in a new network and mount namespace with a private /run (the pod's
    namespace ``pod`` vanishes with it); $PTP runs ptp with podnet-ipam on CNI_PATH (a tmp
    folder holding it), the pod demo/db-0 as container c1, and $CONF_<name> are configs."""
    bin_dir = world.tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "podnet-ipam").symlink_to(PLUGIN)
    env = {**os.environ, "CNI_PATH": f"{bin_dir}:/usr/lib/cni", "CNI_CONTAINERID": "c1",
           "CNI_NETNS": "/run/netns/pod", "CNI_IFNAME": "eth0", "CNI_ARGS": POD_ARGS,
           "PODNET_IPAM_STATE_DIR": str(world.state), "PTP": str(PTP)}
    configs = {
        # what ptp can wire: the address inside a prefix that holds the gateway
        "PREFIX16": world.config(prefixLength=16),
        # the default, a /32 with the gateway outside it, with and without routes
        "SLASH32": world.config(),
        "SLASH32_NOROUTES": world.config(routes=[]),
    }
    for name, config in configs.items():
        path = world.tmp / f"{name}.json"
        path.write_text(json.dumps(config))
        env[f"CONF_{name}"] = str(path)
    body = ("set -u\nmount -t tmpfs podnet-test /run\nmkdir -p /run/netns\nip link set lo up\n"
            "ip netns add pod\n" + script)
    return subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--fork",
                           "bash", "-c", body], env=env, capture_output=True, text=True,
                          check=False, timeout=120)


def section(run: subprocess.CompletedProcess[str], name: str) -> str:
    return run.stdout.split(f"== {name}\n", 1)[1].split("\n== ", 1)[0]


@needs_ptp
def test_ptp_wires_the_stable_address_and_del_removes_it(world: World) -> None:
    run = ptp_sandbox(world, f"""
echo "== add"; CNI_COMMAND=ADD $PTP < $CONF_PREFIX16 > $TMPDIR_RESULT; echo "rc=$?"
cat $TMPDIR_RESULT; echo
echo "== pod"; ip -n pod -4 -o addr show dev eth0; ip -n pod -4 route
echo "== host"; ip -4 -o addr show; ip -4 route
echo "== reserved"; cat {world.reservations}/{ADDRESS}
ip netns exec pod python3 -c "{SERVE}" & sleep 0.3
echo "== reached"; python3 -c "{ASK}" {ADDRESS}; wait
python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); \
c["prevResult"] = json.load(open(sys.argv[2])); print(json.dumps(c))' \
  $CONF_PREFIX16 $TMPDIR_RESULT > $TMPDIR_CHECK
echo "== check"; CNI_COMMAND=CHECK $PTP < $TMPDIR_CHECK; echo "rc=$?"
echo "== del"; CNI_COMMAND=DEL $PTP < $CONF_PREFIX16; echo "rc=$?"
CNI_COMMAND=DEL $PTP < $CONF_PREFIX16; echo "rc=$?"
echo "== after"; ip -n pod -4 -o addr show; ip -4 route; ls -a {world.reservations}
echo "== end"
""".replace("$TMPDIR_RESULT", str(world.tmp / "result.json"))
       .replace("$TMPDIR_CHECK", str(world.tmp / "check.json")))
    assert "== end" in run.stdout, run.stdout + run.stderr
    added = section(run, "add")
    assert added.startswith("rc=0\n"), run.stdout + run.stderr
    result = json.loads(added.removeprefix("rc=0\n"))
    assert result["ips"] == [{"interface": 1, "address": f"{ADDRESS}/16", "gateway": GATEWAY}]
    pod = section(run, "pod")
    assert f"eth0    inet {ADDRESS}/16" in pod
    assert f"default via {GATEWAY} dev eth0" in pod
    # ptp swaps the connected route of the prefix for a host route to the gateway and the
    # prefix via the gateway: the pod sends everything to the gateway, as with a /32
    assert f"{GATEWAY} dev eth0 scope link src {ADDRESS}" in pod
    assert f"10.244.0.0/16 via {GATEWAY} dev eth0 src {ADDRESS}" in pod
    assert "10.244.0.0/16 dev eth0 proto kernel" not in pod
    host = section(run, "host")
    veth = result["interfaces"][0]["name"]
    assert f"{veth}    inet {GATEWAY}/32" in host  # the gateway: the host end of the veth
    assert f"{ADDRESS} dev {veth} scope host" in host  # the /32 route to the pod
    assert section(run, "reserved").split() == ["c1", "eth0"]
    assert section(run, "reached").strip() == GATEWAY  # the node reached the pod, no NAT
    assert section(run, "check").strip() == "rc=0"
    assert section(run, "del").split() == ["rc=0", "rc=0"]  # the second DEL: nothing left
    after = section(run, "after")
    assert "eth0" not in after and ADDRESS not in after
    assert after.split() == [".", "..", "lock"]


@needs_ptp
def test_ptp_cannot_wire_a_slash_32_and_releases_it(world: World) -> None:
    """Why prefixLength exists: Debian's ptp (1.1.1) adds the configured routes via the gateway
    before its own host route to it, and deletes the connected route of the address's prefix,
    which a /32 does not have. Its failed ADD releases the reservation (an IPAM DEL); the
    interface it left in the pod goes with the runtime's DEL."""
    run = ptp_sandbox(world, f"""
echo "== routes"; CNI_COMMAND=ADD $PTP < $CONF_SLASH32; echo "rc=$?"
echo "== routes-left"; ip -n pod -4 -o addr show dev eth0; ls {world.reservations}
CNI_COMMAND=DEL $PTP < $CONF_SLASH32
echo "== noroutes"; CNI_COMMAND=ADD $PTP < $CONF_SLASH32_NOROUTES; echo "rc=$?"
echo "== del"; CNI_COMMAND=DEL $PTP < $CONF_SLASH32_NOROUTES; echo "rc=$?"
echo "== after"; ip -n pod -o link show type veth; ls {world.reservations}
echo "== end"
""")
    assert "== end" in run.stdout, run.stdout + run.stderr
    routes = section(run, "routes")
    assert routes.rstrip().endswith("rc=1")
    assert f"failed to add route '{{0.0.0.0 00000000}} via {GATEWAY} dev eth0': network is " \
           "unreachable" in routes
    left = section(run, "routes-left")
    assert f"inet {ADDRESS}/32" in left  # ptp left the interface in the pod
    assert left.split()[-1] == "lock"  # but released the address
    noroutes = section(run, "noroutes")
    assert noroutes.rstrip().endswith("rc=1")
    assert "failed to delete route {Ifindex: " in noroutes
    assert f"Dst: {ADDRESS}/32 " in noroutes and "no such process" in noroutes
    assert section(run, "del").strip() == "rc=0"
    assert section(run, "after").split() == ["lock"]
