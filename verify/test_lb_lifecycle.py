"""LoadBalancer under change, from outside: a node cut off, a Service's pods moved, and the
other podnet_lb_mode converged and proved (lbchecks.py) before the lab's own mode comes back.
Each test puts the lab back as it found it and checks that it did."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

import lbchecks
import pytest
import targets
import yaml
from conftest import (
    assert_restored,
    connection,
    converged,
    converged_back,
    lab_state,
    manifests_dir,
    needs_lab,
    params,
    plan,
    plan_of,
    saved_record,
    selected,
    target,
)

from podnet import access, outage

pytestmark = pytest.mark.principle("LoadBalancer")


def failover_service() -> str:
    """A Local LoadBalancer Service with an endpoint on every node: cut any node off and the
    others can still serve it."""
    nodes = {n.name for n in plan().nodes}
    found = [s.key for s in selected(targets.lb_local_services) or []
             if {e.node for e in plan().service(s.key).ports[0].endpoints} == nodes]
    if not found:
        pytest.skip(str(targets.NotInPlan(f"{targets.LB_LOCAL}, on every node")))
    return found[0]


def cut_a_node_off(mode: str) -> None:
    needs_lab()
    key = failover_service()
    before = lab_state()
    try:
        node, got = lbchecks.failover(key)
        print(f"{mode} mode, {key}, {node}'s link: {got}")
        assert got.failed_over, got
    finally:
        lbchecks.settle(key, mode)
        assert_restored(before, f"cutting a node off ({mode} mode)")


def test_a_node_cut_off_stops_getting_load_balancer_traffic() -> None:
    cut_a_node_off(plan().settings.lb_mode)


def test_local_policy_follows_its_pods_to_another_node(tmp_path: Path) -> None:
    """Move every pod of a Local LoadBalancer Service to the node that had none: the load
    balancer stops handing flows to the nodes it left (their health check answers 503) and
    starts on the new one, while a client keeps asking."""
    svc = target(targets.lb_partial_service)
    deployments = {targets.owner_deployment(plan().pod(e.pod)) for e in svc.ports[0].endpoints}
    if len(deployments) != 1 or None in deployments:
        pytest.skip(f"{svc.key}'s endpoints are not the pods of one Deployment")
    [(namespace, name)] = deployments  # type: ignore[misc]
    empty = sorted({n.name for n in plan().nodes} - {e.node for e in svc.ports[0].endpoints})[0]
    copy = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), copy)
    for path in copy.glob("*.y*ml"):
        docs = list(yaml.safe_load_all(path.read_text()))
        for d in docs:
            if d and d.get("kind") == "Deployment" and d["metadata"]["name"] == name \
                    and d["metadata"].get("namespace", "default") == namespace:
                d["spec"]["template"]["spec"]["nodeName"] = empty
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    owned = {p.key for p in plan().pods if targets.owner_deployment(p) == (namespace, name)}
    moved = {p.key for p in plan_of(copy).pods if targets.owner_deployment(p) == (namespace, name)}
    before = lab_state()
    record = saved_record()
    client = lbchecks.admitted_client(svc.key)
    command = shlex.join(["python3", "-c", outage.SCRIPT, "tcp", str(svc.lb_ip),
                          str(svc.ports[0].port), "120", "0.1", "1"])
    probe = subprocess.Popen([*access.ssh_argv(connection(client)), command],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    took = 0.0
    try:
        started = time.monotonic()
        converged(copy, "workloads")
        took = time.monotonic() - started
        time.sleep(3)
        after = lbchecks.many(client, svc.key, 30)
        hosts = {plan_of(copy).pod(k).host_name for k in moved}
        assert set(after) == hosts, after  # every answer from a moved pod, none dropped
    finally:
        probe.terminate()
        out, _ = probe.communicate(timeout=30)
        print(f"{svc.key}: pods moved to {empty} by a converge of {took:.1f} s; a request "
              f"every 100 ms meanwhile: {outage.summary(out)}")
        converged_back(record)
        # the Deployment's pods are back on the nodes they left, each on one of them
        assert_restored(before, f"moving {namespace}/{name} to {empty} and back", replicas=owned)
    lbchecks.settle(svc.key, plan().settings.lb_mode)


# -- the other mode ------------------------------------------------------------------------------
@pytest.mark.parametrize(("service", "port_name", "protocol"), [
    pytest.param(s, p, t, id=f"{s}:{p}/{t}") for s, p, t in selected(targets.lb_ports) or []
] or [pytest.param(None, None, None, id="none", marks=pytest.mark.skip(
    reason=str(targets.NotInPlan(targets.LB_PORT))))])
def test_other_mode_every_port_answers(other_lb_mode: str, service: str, port_name: str,
                                       protocol: str) -> None:
    lbchecks.every_port_answers(service, port_name, protocol)


def test_other_mode_cluster_policy_spreads(other_lb_mode: str) -> None:
    lbchecks.cluster_policy_spreads()


@pytest.mark.parametrize("service", params(
    [s.key for s in selected(targets.lb_local_services) or []], targets.LB_LOCAL))
def test_other_mode_local_policy_keeps_the_client_address(other_lb_mode: str,
                                                          service: str) -> None:
    lbchecks.local_policy_keeps_the_client_address(service)


def test_other_mode_only_nodes_with_a_local_endpoint_get_traffic(other_lb_mode: str) -> None:
    lbchecks.only_nodes_with_a_local_endpoint_get_traffic(other_lb_mode)


def test_other_mode_source_ranges(other_lb_mode: str) -> None:
    lbchecks.source_ranges_admit_and_refuse()


def test_other_mode_a_node_cut_off_stops_getting_traffic(other_lb_mode: str) -> None:
    cut_a_node_off(other_lb_mode)
