"""Pods that keep their address on whichever node they run (the article: each Pod's address
"remains consistent even if the Pod is rescheduled to a different Node"; docs/backends.md):
bare Pods by default, a Deployment's pods by annotation. Their addresses come from the cluster's
assignments (the same file on every node) through podnet-ipam, ptp wires them point to point,
and every other node routes each one's /32 to its node (this suite: how they are wired;
test_backends.py: the /32s in every backend's routes; test_pod_move.py: a move)."""

from __future__ import annotations

import json

import backendchecks
import pytest
from conftest import params, plan, pod_id, run, running

from podnet import backends
from podnet.kubelet import stable_ipam

pytestmark = pytest.mark.principle("unique pod IP")


def kept_pods() -> list[str]:
    return [p.key for p in plan().pods if p.stable_ip]


def test_every_node_has_the_clusters_assignments(node: str) -> None:
    """A pod finds its address on whichever node it lands: every node has all of them."""
    got = run(node, "cat", plan().paths.ipam_assignments)
    assert got.rc == 0, got
    assert json.loads(got.stdout) == stable_ipam(plan())["assignments"], got


@pytest.mark.parametrize("kept", params(kept_pods(), "pod that keeps its address"))
def test_kept_address_is_wired_point_to_point_from_its_node(kept: str) -> None:
    """ptp, not the bridge: the node routes the pod's /32 to the pod's own veth (off the
    bridge), and the pod sends everything to its node's pod gateway."""
    node = plan().node(plan().pod(kept).node)
    ip = running()[kept]["ip"]
    shown = run(node.name, "ip", "-j", "-4", "route", "show", f"{ip}/32")
    routes = json.loads(shown.stdout or "[]")
    assert len(routes) == 1 and "gateway" not in routes[0], shown
    veth = routes[0]["dev"]
    link = json.loads(run(node.name, "ip", "-j", "link", "show", "dev", veth).stdout)[0]
    assert "master" not in link, link
    default = run(node.name, "ip", "-n", pod_id(kept), "-j", "-4", "route", "show", "default")
    assert [r.get("gateway") for r in json.loads(default.stdout)] == [node.gateway], default


@pytest.mark.parametrize("kept", params(kept_pods(), "pod that keeps its address"))
def test_every_other_node_routes_the_kept_address_to_its_node(kept: str) -> None:
    """The /32 follows the pod: each other node routes exactly that address to the pod's node,
    so the longest prefix wins - via its address (host-gw), its VTEP (vxlan), or as BIRD learnt
    it with the pod's node as next hop and installed it (bgp)."""
    home = plan().node(plan().pod(kept).node)
    prefix = f"{running()[kept]['ip']}/32"
    for node in plan().nodes:
        if node.name == home.name:
            continue
        backend = backends.node_routing(plan(), node.name)["backend"]
        if backend == "bgp":
            learned, evidence = backendchecks.learned_routes(plan(), node.name)
            assert learned.get(prefix) == home.address, evidence
            assert prefix in backendchecks.pod_routes(plan(), node.name, "12"), node.name
        else:
            routes = backendchecks.pod_routes(plan(), node.name, "152")
            via = home.address if backend == "host-gw" else backends.vtep_address(home)
            assert routes.get(prefix, {}).get("gateway") == via, (node.name, routes)
