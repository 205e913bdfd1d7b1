"""Switching the routing backend of a live cluster by converging with another podnet_backend
(docs/backends.md): each other backend the lab can serve (not host-gw with a node behind a
router), then its own again. After each switch every node routes as the new backend says,
nothing of the previous one is left (its device, routes, daemon and files), and pods on every
node still reach pods on every other node with their own addresses. A dry run (--check) of the
first switch changes nothing. The lab ends as it began."""

from __future__ import annotations

import time
from functools import partial

import pytest
from backendchecks import residue, routing_problems, with_backend
from conftest import (
    assert_restored,
    converge,
    converged,
    http_port,
    lab_state,
    manifests_dir,
    observed,
    plan,
    wait_for,
)
from test_pod_network import dial

from podnet.backends import servable
from podnet.plan import Plan

pytestmark = pytest.mark.principle("flat network")


def one_server_per_node(pods: dict[str, dict[str, str]]) -> list[str]:
    p = plan()
    return [next(pod.key for pod in p.pods if pod.node == node.name and http_port(pod.key)
                 and pod.key in pods) for node in p.nodes]


def unreachable_pairs() -> list[str]:
    """Pod pairs on different nodes where the client does not reach the target, or is not
    seen with its own address. The pods' addresses as the nodes report them now: the suites
    before this one (LAST) recreate pods, so the session's first look (running()) may be old."""
    pods = observed()
    failed = []
    servers = one_server_per_node(pods)
    for client in servers:
        for target in servers:
            if client == target:
                continue
            mine, theirs = pods[client]["ip"], pods[target]["ip"]
            evidence, answer = dial(client, theirs, http_port(target) or 0, "clientip",
                                    client_ip=mine)
            seen = (answer["responses"] or [""])[0].rsplit(":", 1)[0]
            if answer["errors"] or seen != mine:
                failed.append(f"{client} -> {target}: {evidence}")
    return failed


def routes_as_planned(planned: Plan, nodes: list[str]) -> bool:
    return not any(routing_problems(planned, n) for n in nodes)


def test_switching_backends_keeps_pods_reachable_and_leaves_nothing_behind() -> None:
    p = plan()
    mine = p.settings.backend
    order = [b for b in servable(p) if b != mine] + [mine]
    nodes = [n.name for n in p.nodes]
    before = lab_state()
    dry = converge(manifests_dir(), "network", check=True, extra={"podnet_backend": order[0]})
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-2000:]
    assert {n: routing_problems(p, n) for n in nodes} == {n: [] for n in nodes}, \
        f"a dry run of the switch to {order[0]} changed the routes"
    try:
        for backend in order:
            planned = with_backend(p, backend)
            start = time.monotonic()
            converged(manifests_dir(), "network", podnet_backend=backend)
            took = time.monotonic() - start
            routed = wait_for(f"every node routing as {backend} says",
                              partial(routes_as_planned, planned, nodes), timeout=60)
            assert {n: residue(planned, n) for n in nodes} == {n: [] for n in nodes}
            assert unreachable_pairs() == [], f"after the switch to {backend}"
            print(f"switch to {backend}: converge (--tags network) {took:.1f} s, "
                  f"routes as planned {routed:.1f} s after it")
    finally:
        converged(manifests_dir(), "network")
    assert_restored(before, f"switching the backend {' -> '.join([mine, *order])}")
