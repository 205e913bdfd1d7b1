"""A pod that keeps its address, moved to another node by changing its nodeSelector (the
article: its address "remains consistent even if the Pod is rescheduled to a different Node").
This changes the lab, so it runs among the last suites and puts it back as it was."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import targets
from conftest import (
    assert_restored,
    converged,
    converged_back,
    edited,
    http_port,
    lab_state,
    observed,
    plan,
    run,
    saved_record,
    servers,
    target,
)
from test_pod_network import dial

pytestmark = pytest.mark.principle("unique pod IP")

HOSTNAME_LABEL = "kubernetes.io/hostname"


def answers_from_every_node(ip: str, port: int, hostname: str) -> list[str]:
    """What is wrong with the pod answering /hostname at ip:port from every node (empty: it
    answers everywhere)."""
    wrong = []
    for node in plan().nodes:
        got = run(node.name, "curl", "-s", "--max-time", "2", f"http://{ip}:{port}/hostname")
        if got.stdout.strip() != hostname:
            wrong.append(f"{node.name}: {got}")
    return wrong


def test_pod_moved_to_another_node_keeps_its_address(tmp_path: Path) -> None:
    mover = target(targets.stable_server_pod)
    before = observed()
    ip, port = before[mover.key]["ip"], http_port(mover.key) or 0
    assert ip == mover.stable_ip, before[mover.key]
    old = before[mover.key]["reported_by"]
    dest = next(n.name for n in plan().nodes if n.name != old)

    def select_node(pod: dict[str, Any]) -> None:
        pod["spec"].pop("nodeName", None)
        pod["spec"]["nodeSelector"] = {HOSTNAME_LABEL: dest}

    copy = edited(tmp_path, "Pod", mover.namespace, mover.name, select_node)
    record = saved_record()
    lab = lab_state()
    try:
        start = time.monotonic()
        converged(copy, "workloads")
        converged_at = time.monotonic()
        # the converge has started the pod on its new node; how long until every node reaches it
        while answers_from_every_node(ip, port, mover.host_name):
            assert time.monotonic() - converged_at < 30, answers_from_every_node(
                ip, port, mover.host_name)
            time.sleep(0.2)
        answering = time.monotonic() - converged_at
        print(f"\n{mover.key} moved {old} -> {dest} keeping {ip}: the converge took "
              f"{converged_at - start:.1f} s; every node reached it {answering:.1f} s after it")

        after = observed()
        assert after[mover.key]["reported_by"] == dest, after[mover.key]
        assert after[mover.key]["ip"] == ip, after[mover.key]
        # its /32 left the old node's veth and is routed to the new node everywhere
        for node in plan().nodes:
            shown = run(node.name, "ip", "-j", "-4", "route", "show", f"{ip}/32")
            routes = json.loads(shown.stdout or "[]")
            assert len(routes) == 1, shown
            on_veth = str(routes[0].get("dev", "")).startswith("veth")
            assert on_veth == (node.name == dest), shown
        # every pod reaches it at its address, and it reaches every pod seen with its address
        failures = []
        for other in servers():
            if other == mover.key:
                continue
            evidence, answer = dial(other, ip, port, "hostname", client_ip=after[other]["ip"])
            if answer.get("responses") != [mover.host_name]:
                failures.append(f"{other} -> {mover.key}: {evidence}")
            evidence, answer = dial(mover.key, after[other]["ip"], http_port(other) or 0,
                                    "clientip", client_ip=ip)
            seen = [r.rsplit(":", 1)[0] for r in answer.get("responses", [])]
            if seen != [ip]:
                failures.append(f"{mover.key} -> {other}: {evidence}")
        assert failures == []
    finally:
        converged_back(record)
        assert_restored(lab, f"moving {mover.key} back to {old}")
    assert observed()[mover.key]["ip"] == ip
