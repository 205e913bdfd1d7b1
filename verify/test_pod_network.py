"""A flat pod network: every pod reaches every pod and every node by IP, with no NAT between
them (the article's first principle). Only traffic leaving the cluster is masqueraded."""

from __future__ import annotations

import json
import time

import pytest
from conftest import Evidence, http_port, in_pod, outside_client, plan, run, running

pytestmark = pytest.mark.principle("flat network")


def dial(client: str, target_ip: str, port: int, request: str,
         client_ip: str | None = None) -> tuple[Evidence, dict]:
    """Make pod ``client`` itself connect to target_ip:port (its /dial endpoint); ``client_ip``
    is its address when the session's first look (running()) may be old."""
    url = (f"http://{client_ip or running()[client]['ip']}:{http_port(client)}"
           f"/dial?host={target_ip}"
           f"&port={port}&request={request}&protocol=http&tries=1")
    evidence = run(plan().pod(client).node, "curl", "-s", "--max-time", "15", url)
    try:
        return evidence, json.loads(evidence.stdout)
    except json.JSONDecodeError:
        return evidence, {"responses": [], "errors": ["no JSON"]}


@pytest.mark.quick_sample  # quick: each pod to one pod on every node (conftest.quick_pairs)
def test_pod_reaches_pod_and_is_seen_with_its_own_ip(server_pair: tuple[str, str]) -> None:
    client, target = server_pair
    evidence, answer = dial(client, running()[target]["ip"], http_port(target) or 0, "clientip")
    assert answer["errors"] == [] and len(answer["responses"]) == 1, evidence
    seen_ip = answer["responses"][0].rsplit(":", 1)[0]
    assert seen_ip == running()[client]["ip"], evidence


def test_node_reaches_pod(node: str, pod: str) -> None:
    ping = run(node, "ping", "-c", "1", "-W", "2", running()[pod]["ip"])
    assert ping.rc == 0, ping


def test_pod_reaches_node(pod: str, node: str) -> None:
    ping = in_pod(pod, "ping", "-c", "1", "-W", "2", plan().node(node).address)
    assert ping.rc == 0, ping


LISTEN = ("import socket; s = socket.create_server(('', {port})); s.settimeout(20); "
          "c, a = s.accept(); open('/run/podnet-verify-peer', 'w').write(a[0])")


def peer_seen_by(host: str, address: str, pod: str, port: int = 7999) -> tuple[str, Evidence]:
    """Listen on ``host``, connect from ``pod`` and return the source address host saw."""
    run(host, "rm", "-f", "/run/podnet-verify-peer")
    start = run(host, "systemd-run", "--unit", "podnet-verify-listen", "--collect", "python3",
                "-c", LISTEN.format(port=port))
    assert start.rc == 0, start
    time.sleep(0.5)
    try:
        hello = in_pod(pod, "python3", "-c", "import socket, sys; "
                       "socket.create_connection((sys.argv[1], int(sys.argv[2])), 5).close()",
                       address, str(port))
        assert hello.rc == 0, hello
        for _ in range(20):
            seen = run(host, "cat", "/run/podnet-verify-peer")
            if seen.rc == 0:
                return seen.stdout.strip(), seen
            time.sleep(0.25)
        return "", seen
    finally:
        run(host, "systemctl", "stop", "podnet-verify-listen")


def test_pod_to_node_keeps_the_pod_address() -> None:
    pod = next(p for p in plan().pods if p.node == plan().nodes[0].name)
    other = plan().nodes[-1]
    seen, evidence = peer_seen_by(other.name, other.address, pod.key)
    assert seen == running()[pod.key]["ip"], evidence


def test_pod_to_the_outside_is_masqueraded() -> None:
    outside = outside_client()
    pod = plan().pods[0]
    seen, evidence = peer_seen_by(outside.name, outside.address, pod.key)
    assert seen == plan().node(pod.node).address, evidence
