"""BGP on the lab's router (lab_router_bgp_as, lab_router_bgp_neighbors): validation naming the
variable and the fix, the BIRD configuration it gets, and (as root, with Debian's bird2) BIRD
started inside the router's namespace of a throwaway lab, kept, restarted on a new configuration
or when it died, learning a peer's route into the router's kernel table, and gone with the lab."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_lab_segments import FAR, lab_filters
from test_lab_segments import HOSTS as SEGMENT_HOSTS

from podnet import lab

# the routed lab of the segment tests: its nodes, without the client
HOSTS = [h for h in SEGMENT_HOSTS if h["name"].startswith("node")]
NODES = ["192.168.56.11", "192.168.56.12", "192.168.57.13"]


def errors(bgp_as: Any = 64512, neighbors: Any = tuple(NODES), router: Any = "192.168.56.254",
           segments: Any = (FAR,), hosts: Any = HOSTS) -> list[str]:
    return lab.validate("podnet-rt", "192.168.56.0/24", "192.168.56.1", hosts,
                        segments=segments, router_address=router, router_bgp_as=bgp_as,
                        router_bgp_neighbors=neighbors)


# -- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bgp_as", [64512, "64512", 1, 4294967295, "4200000000"])
def test_a_router_with_bgp_is_good(bgp_as: Any) -> None:
    assert errors(bgp_as) == []


@pytest.mark.parametrize("bgp_as", [None, "", 0, "0"])
def test_no_as_means_no_bird_and_is_the_default(bgp_as: Any) -> None:
    assert errors(bgp_as, neighbors=[]) == []
    assert errors(bgp_as, neighbors=None) == []
    # nor does a lab without a router need one
    assert errors(bgp_as, neighbors=[], router="", segments=(), hosts=HOSTS[:2]) == []
    assert lab.router_bgp_as(bgp_as) is None


@pytest.mark.parametrize(("kw", "message"), [
    ({"bgp_as": 4294967296},
     "lab_router_bgp_as: 4294967296 is outside 1..4294967295; give the nodes' AS number "
     "(1..4294967295, podnet_bgp_as's), or 0/empty for no BGP on the router"),
    ({"bgp_as": "as64512"},
     "lab_router_bgp_as: 'as64512' is not a number; give the nodes' AS number (1..4294967295, "
     "podnet_bgp_as's), or 0/empty for no BGP on the router"),
    ({"bgp_as": True}, "lab_router_bgp_as: True is not a number"),
    ({"bgp_as": -5}, "lab_router_bgp_as: -5 is not a number"),
    ({"neighbors": []},
     "lab_router_bgp_as: 64512 is set but lab_router_bgp_neighbors is empty, so the router's "
     "BIRD would peer with no one; list the nodes' addresses in lab_router_bgp_neighbors"),
    ({"neighbors": "192.168.56.11"},
     "lab_router_bgp_neighbors: '192.168.56.11' is not a list; give a list of the nodes' "
     "addresses, e.g. [192.168.56.11, 192.168.57.13]"),
    ({"bgp_as": 0, "neighbors": NODES},
     "lab_router_bgp_neighbors: 3 neighbor(s) but lab_router_bgp_as is not set, so the router "
     "runs no BIRD; set lab_router_bgp_as to the nodes' AS number or empty the list"),
    ({"neighbors": ["node1"]},
     "lab_router_bgp_neighbors: 'node1' is not an IPv4 address; list the nodes by their "
     "ansible_host"),
    ({"neighbors": ["192.168.56.11", "192.168.56.11"]},
     "lab_router_bgp_neighbors: 192.168.56.11 is listed twice; list each node once"),
    ({"neighbors": ["10.0.0.5"]},
     "lab_router_bgp_neighbors: 10.0.0.5 is on no network the router is connected to "
     "(lab_underlay_cidr 192.168.56.0/24, segment far 192.168.57.0/24); the router peers only "
     "with directly connected nodes: list their ansible_host addresses"),
    ({"neighbors": ["192.168.57.255"]},
     "lab_router_bgp_neighbors: 192.168.57.255 is on no network the router is connected to"),
    ({"neighbors": ["192.168.57.254"]},
     "lab_router_bgp_neighbors: 192.168.57.254 is the router's address on segment far "
     "(lab_segments), not a node; list the nodes' ansible_host addresses"),
    ({"neighbors": ["192.168.56.254"]},
     "lab_router_bgp_neighbors: 192.168.56.254 is the router's address on the underlay "
     "(lab_router_address), not a node"),
    ({"neighbors": ["192.168.56.1"]},
     "lab_router_bgp_neighbors: 192.168.56.1 is the controller's lab address "
     "(lab_controller_address), not a node"),
])
def test_bad_router_bgp_names_the_variable_and_the_fix(kw: dict[str, Any], message: str) -> None:
    found = errors(**kw)
    assert any(e.startswith(message) for e in found), found
    assert len(found) == 1, found


def test_bgp_without_a_router_is_refused() -> None:
    found = errors(router="", segments=(), hosts=HOSTS[:2], neighbors=NODES[:2])
    assert found == [
        "lab_router_bgp_as: 64512 is set but the lab has no router (lab_router_address is "
        "empty): BGP on the router needs a routed lab (lab_router_address and lab_segments); "
        "remove lab_router_bgp_as"]


def test_the_filter_passes_the_router_bgp_variables() -> None:
    hostvars = {h["name"]: {"ansible_host": h["address"], "ansible_user": "debian",
                            **({"lab_segment": h["segment"]} if "segment" in h else {})}
                for h in HOSTS}
    settings = {"lab_name": "podnet-rt", "lab_underlay_cidr": "192.168.56.0/24",
                "lab_controller_address": "192.168.56.1", "lab_router_address": "192.168.56.254",
                "lab_segments": [FAR], "lab_router_bgp_as": "64512",
                "lab_router_bgp_neighbors": NODES}
    names = list(hostvars)
    assert lab_filters.podnet_lab_errors(hostvars, names, settings) == []
    bad = {**settings, "lab_router_bgp_neighbors": ["10.0.0.5"]}
    assert [e[:47] for e in lab_filters.podnet_lab_errors(hostvars, names, bad)] == [
        "lab_router_bgp_neighbors: 10.0.0.5 is on no net"]


# -- the configuration ---------------------------------------------------------------------------
def peer(name: str, local: str, neighbor: str) -> str:
    return (f"\nprotocol bgp {name} {{\n  local {local} as 64512;\n"
            f"  neighbor {neighbor} as 64512;\n  passive;\n  connect retry time 5;\n"
            "  hold time 30;\n  keepalive time 10;\n"
            "  graceful restart on;\n  ipv4 {\n    import all;\n    export none;\n  };\n}\n")


def config(neighbors: list[str] = NODES, lab_name: str = "podnet-rt") -> str:
    return lab.router_bird_config(lab_name, 64512, "192.168.56.0/24", "192.168.56.254",
                                  lab.segments_of([FAR]), neighbors)


def test_the_routers_bird_peers_from_its_address_on_each_neighbors_network() -> None:
    text = config()
    head, _, _ = text.partition("\nprotocol bgp")
    assert "router id 192.168.56.254;\n" in head
    assert "protocol device {\n  scan time 10;\n}\n" in head
    assert "protocol direct {\n  ipv4;\n}\n" in head
    assert ("protocol kernel {\n  ipv4 {\n    import none;\n    export where source = RTS_BGP;\n"
            "  };\n}\n") in head
    assert text.endswith(peer("n_192_168_56_11", "192.168.56.254", "192.168.56.11")
                         + peer("n_192_168_56_12", "192.168.56.254", "192.168.56.11")
                         .replace("neighbor 192.168.56.11", "neighbor 192.168.56.12")
                         + peer("n_192_168_57_13", "192.168.57.254", "192.168.57.13")), text
    assert text == config()  # the same inputs, the same text: lab-up leaves BIRD running


def test_a_neighbor_off_the_routers_networks_is_an_error() -> None:
    with pytest.raises(lab.LabError, match=r"10\.0\.0\.5 is on no network the router is connected"):
        config(["10.0.0.5"])


@pytest.mark.skipif(not Path(lab.BIRD).exists(), reason="bird2 is not installed (make setup)")
def test_bird_parses_the_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "router-bird.conf"
    conf.write_text(config())
    proc = subprocess.run([lab.BIRD, "-p", "-c", str(conf)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr


# -- as root: BIRD in the router of a throwaway lab ---------------------------------------------
ROOT_BIRD = pytest.mark.skipif(os.geteuid() != 0 or not Path(lab.BIRD).exists(),
                               reason="network namespaces need root, and bird2 (make setup)")


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def routed_lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A lab of its own (a name no one else uses) with segment far and its router, no hosts;
    torn down after, leaving nothing."""
    name = f"pnbgp{os.getpid() % 100000}"
    state = tmp_path / "state"
    state.mkdir()
    lab.ensure_netns(name, "underlay", "192.168.56.1/24")
    lab.ensure_segments(name, "underlay", 24, "192.168.56.254", lab.segments_of([FAR]))
    try:
        yield name, state
    finally:
        lab.teardown(name, state)
    assert lab.residue(name, state) == []
    assert lab.router_bird_processes(state) == []


def protocols(state: Path) -> dict[str, list[str]]:
    """``birdc show protocols`` by protocol name: [proto, table, state, since..., info]."""
    out = lab.router_bird_protocols(state)
    return {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:] if line.strip()}


def node_bird_config() -> str:
    """A node of the bgp backend in miniature: announces its pod CIDR to the router over iBGP."""
    return ("router id 192.168.57.13;\nprotocol device {}\n"
            "protocol static pods { ipv4; route 10.244.2.0/24 unreachable; }\n"
            "protocol bgp uplink {\n  local 192.168.57.13 as 64512;\n"
            "  neighbor 192.168.57.254 as 64512;\n  connect delay time 1;\n"
            "  connect retry time 1;\n  ipv4 { import none; export all; };\n}\n")


@pytest.fixture
def node3(routed_lab: tuple[str, Path], tmp_path: Path) -> Iterator[str]:
    """A stand-in for node3: a namespace of the test's own with a veth into the lab's far
    bridge (192.168.57.13/24), running BIRD that announces 10.244.2.0/24 to the router."""
    name, _ = routed_lab
    ns = f"{name}_n3"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc = None
    try:
        ip("-n", name, "link", "add", "vt-n3", "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        ip("-n", name, "link", "set", "vt-n3", "master", "far", "up")
        ip("-n", ns, "addr", "add", "192.168.57.13/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        conf = tmp_path / "node-bird.conf"
        conf.write_text(node_bird_config())
        proc = subprocess.Popen(["nsenter", f"--net={lab.NETNS_DIR / ns}", lab.BIRD, "-f", "-c",
                                 str(conf), "-s", str(tmp_path / "node-bird.ctl")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        yield ns
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        subprocess.run(["ip", "netns", "del", ns], check=True)


def wait_for(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout} s")
        time.sleep(0.2)


@ROOT_BIRD
def test_router_bird_is_started_kept_restarted_and_removed(routed_lab: tuple[str, Path]) -> None:
    name, state = routed_lab
    rt = lab.router_netns(name)
    assert lab.ensure_router_bird(name, state, config(lab_name=name)) is True
    pid = lab.router_bird_pid(state)
    assert pid is not None
    inode = (lab.NETNS_DIR / rt).stat().st_ino
    assert str(Path(f"/proc/{pid}/ns/net").readlink()) == f"net:[{inode}]"
    # its sessions wait for the nodes (no node is there): passive, so never Established
    found = protocols(state)
    for neighbor in NODES:
        row = found["n_" + neighbor.replace(".", "_")]
        assert row[0] == "BGP" and row[2] == "start" and row[-1] in ("Idle", "Active",
                                                                     "Passive"), row
    assert found["kernel1"][2] == "up" and found["direct1"][2] == "up", found
    # unchanged: left running
    assert lab.ensure_router_bird(name, state, config(lab_name=name)) is False
    assert lab.router_bird_pid(state) == pid
    # a new configuration: started again with it
    assert lab.ensure_router_bird(name, state, config(NODES[:2], lab_name=name)) is True
    new = lab.router_bird_pid(state)
    assert new not in (None, pid) and not Path(f"/proc/{pid}").exists()
    assert "n_192_168_57_13" not in protocols(state)
    # died: started again
    os.kill(new, signal.SIGKILL)
    wait_for("the killed BIRD gone", lambda: lab.router_bird_pid(state) is None)
    assert lab.ensure_router_bird(name, state, config(NODES[:2], lab_name=name)) is True
    again = lab.router_bird_pid(state)
    assert again not in (None, new)
    assert [line for line in lab.residue(name, state) if f"process {again} " in line] == [
        f"process {again} {' '.join(lab._cmdline(again))} in the lab's router"]
    assert f"file {state / 'router-bird.ctl'}: the lab's router BIRD's" in lab.residue(name, state)
    # no AS any more: stopped, its files gone; the lab's teardown (the fixture) leaves nothing
    assert lab.ensure_router_bird(name, state, None) is True
    assert lab.router_bird_processes(state) == [] and list(state.glob("router-bird.*")) == []
    assert lab.ensure_router_bird(name, state, None) is False
    lab.ensure_router_bird(name, state, config(lab_name=name))
    assert lab.router_bird_processes(state) != []


@ROOT_BIRD
def test_router_bird_learns_a_nodes_pod_cidr_into_the_routers_kernel(
        routed_lab: tuple[str, Path], node3: str) -> None:
    name, state = routed_lab
    rt = lab.router_netns(name)
    assert lab.ensure_router_bird(name, state, config(lab_name=name)) is True
    wait_for("the session to node3 established",
             lambda: protocols(state)["n_192_168_57_13"][-1] == "Established")
    # the next hop (node3, on far) resolves through protocol direct's connected route
    route = wait_for("10.244.2.0/24 in the router's kernel table",
                     lambda: ip("-n", rt, "-4", "route", "show", "10.244.2.0/24").strip())
    assert route == "10.244.2.0/24 via 192.168.57.13 dev far proto bird metric 32", route
    # only what BGP learnt: the connected routes stay the kernel's own, not BIRD's
    assert ip("-n", rt, "-4", "route", "show", "proto", "bird").strip() == \
        "10.244.2.0/24 via 192.168.57.13 dev far metric 32"


@ROOT_BIRD
def test_a_router_namespace_removed_under_bird_is_repaired(routed_lab: tuple[str, Path]) -> None:
    """BIRD holds the router's namespace: removed by hand from /run/netns, it lives on (with the
    router's veths into the lab's bridges). lab-up's order (the stray BIRD, the segments, BIRD)
    ends that BIRD, makes the router again and starts BIRD in it."""
    name, state = routed_lab
    rt = lab.router_netns(name)
    far = lab.segments_of([FAR])
    lab.ensure_router_bird(name, state, config(lab_name=name))
    old = lab.router_bird_pid(state)
    subprocess.run(["ip", "netns", "del", rt], check=True)
    assert old is not None and Path(f"/proc/{old}").exists()
    # outside every namespace the lab names, the residue check still finds it
    assert f"process {old} {' '.join(lab._cmdline(old))}: the lab's router BIRD" in \
        lab.residue(name, state)
    assert lab.stop_stray_router_bird(name, state) is True
    assert lab.ensure_segments(name, "underlay", 24, "192.168.56.254", far) is True
    assert lab.ensure_router_bird(name, state, config(lab_name=name)) is True
    assert lab.ensure_segments(name, "underlay", 24, "192.168.56.254", far) is False
    assert set(protocols(state)) >= {"n_192_168_56_11", "n_192_168_57_13"}
    router = ip("-n", rt, "-o", "-4", "addr")
    assert " 192.168.56.254/24 " in router and " 192.168.57.254/24 " in router, router
