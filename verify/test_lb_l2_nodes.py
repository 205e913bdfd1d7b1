"""LoadBalancer in l2 mode, on the nodes (roles/l2_announce): keepalived runs on every node
with the configuration the plan gives it, each LoadBalancer address is held by one node and
only one - the highest-ranked node that passes the address's health check (kube-proxy's health
server for its policy) - and an outside client finds the address at that node's MAC. The
proofs from outside (every port, policies, failover) are lbchecks.py's, for both modes."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import targets
from conftest import Evidence, outside_client, params, plan, run

from podnet import l2announce, loadbalancer

pytestmark = pytest.mark.principle("LoadBalancer")
UNIT = "podnet-keepalived.service"
# a node's check may flip between two looks (its fall/rise): how long the holder may take to
# match (fall 2 + rise 2 checks of 1 s, one VRRP master-down interval, and slack for a busy
# machine)
SETTLE_S = 10.0


@pytest.fixture(scope="module")
def l2(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The plan's LoadBalancer config in l2 mode. A lab in another mode is converged in l2
    mode first (the session's other_lb_mode, which puts the lab's own mode back at the end):
    every make test proves both modes whatever the lab's own is."""
    if plan().settings.lb_mode != "l2":
        assert request.getfixturevalue("other_lb_mode") == "l2"
    return {**loadbalancer.config(plan()), "mode": "l2"}


ADDRESSES = [a["address"] for a in loadbalancer.config(plan())["addresses"]]
NODES = [n.name for n in plan().nodes]


def underlay(node: str) -> str:
    """The interface that holds the node's address (where keepalived puts the LB addresses)."""
    address = plan().node(node).address
    got = run(node, "ip", "-o", "-4", "addr", "show", "to", f"{address}/32")
    assert got.rc == 0 and got.stdout.split(), got
    return got.stdout.split()[1]


def holders(address: str) -> list[str]:
    found = []
    for node in NODES:
        got = run(node, "ip", "-o", "-4", "addr", "show", "to", f"{address}/32")
        assert got.rc == 0, got
        if got.stdout.strip():
            found.append(node)
    return found


def passes(node: str, check: dict[str, Any]) -> Evidence:
    """The address's health check, run on ``node`` as keepalived runs it."""
    return run(node, plan().paths.lb_check, str(check["port"]), str(check["path"]))


def test_keepalived_runs_on_every_node_with_the_planned_instances(l2: dict[str, Any],
                                                                  node: str) -> None:
    state = run(node, "systemctl", "is-active", UNIT)
    enabled = run(node, "systemctl", "is-enabled", UNIT)
    assert state.stdout.strip() == "active" and enabled.stdout.strip() == "enabled", \
        (state, enabled)
    conf = plan().paths.keepalived_conf
    process = run(node, "pgrep", "-a", "-f", f"keepalived .*--use-file={conf}")
    assert process.rc == 0, process  # the running daemon reads podnet's file
    assert run(node, "keepalived", "--config-test", f"--use-file={conf}").rc == 0
    text = run(node, "cat", conf)
    assert text.rc == 0, text
    expected = l2announce.expected_instances(l2announce.node_config(l2, node), underlay(node),
                                             plan().paths.lb_check)
    found = l2announce.read_instances(text.stdout)
    got = {k: {f: v[f] for f in expected.get(k, v)} for k, v in found.items()}
    assert got == expected, f"{node}:{conf}\n{text.stdout}"


@pytest.mark.parametrize("address", params(ADDRESSES, targets.LB_PORT))
def test_one_node_holds_each_address_the_highest_ranked_passing_its_check(
        l2: dict[str, Any], address: str) -> None:
    entry = next(a for a in l2["addresses"] if a["address"] == address)
    deadline = time.monotonic() + SETTLE_S
    while True:
        checks = {node: passes(node, entry["check"]).rc == 0 for node in entry["ranking"]}
        want = next(([n] for n in entry["ranking"] if checks[n]), [])  # none passes: nobody
        held = holders(address)
        if held == want or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"{address} ({entry['service']}, {entry['policy']}, check :{entry['check']['port']}"
          f"{entry['check']['path']}): ranking {entry['ranking']}, passing "
          f"{[n for n, ok in checks.items() if ok]}, held by {held}")
    assert held == want, (f"{address}: held by {held}, the ranking {entry['ranking']} with "
                          f"checks {checks} says {want}")


@pytest.mark.parametrize("address", params(ADDRESSES, targets.LB_PORT))
def test_the_outside_client_finds_the_address_at_its_holders_mac(l2: dict[str, Any],
                                                                 address: str) -> None:
    held = holders(address)
    if not held:
        pytest.skip(f"{address}: no node passes its health check, so none announces it")
    assert len(held) == 1, held
    mac = run(held[0], "cat", f"/sys/class/net/{underlay(held[0])}/address").stdout.strip()
    client = outside_client().name
    # any packet makes the client ask ARP: ICMP (kube-proxy's rules leave it to the node)
    ping = run(client, "ping", "-c", "1", "-W", "2", address)
    neigh = run(client, "ip", "-j", "neigh", "show", address)
    entries = json.loads(neigh.stdout or "[]")
    assert [e.get("lladdr") for e in entries] == [mac], (ping, neigh, f"{held[0]} has {mac}")
