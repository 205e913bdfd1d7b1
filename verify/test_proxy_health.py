"""kube-proxy's health servers on every node, as a cloud load balancer asks them: the node's
/healthz and /livez on kube-proxy's port (10256, kubeproxy.HEALTHZ_PORT), and each
externalTrafficPolicy Local LoadBalancer Service's healthCheckNodePort, which answers 200 with
the number of the Service's ready endpoints on that node, 503 with 0 where it has none. Asked
from outside the cluster (the load balancer's side) and from the node itself (127.0.0.1).

How a health check follows readiness is proved in tests/test_proxy_health.py: no Local
LoadBalancer Service of the demo has pods with a readinessProbe to fail on purpose. What
"healthy" means is proved by taking kube-proxy's canary chain away on one node: its servers
answer 503 until podnet's canary puts the rules back. A Local LoadBalancer Service added by a
converge over pods on some of the nodes gets its health check port on every node without a
restart, 503 with 0 where it has no pods, and loses it when a converge removes it."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import pytest
import targets
import yaml
from conftest import (
    Evidence,
    assert_restored,
    converged,
    lab_state,
    manifests_dir,
    observed,
    outside_client,
    params,
    plan,
    plan_of,
    run,
    wait_for,
)

from podnet import kubeproxy, proxier
from podnet.plan import ServicePlan

pytestmark = pytest.mark.principle("kube-proxy")

PARTIAL = ("Service with a selector and a TCP port whose pods run on some nodes but not all "
           "(a new Local LoadBalancer Service is put over them)")
LOCAL_LB = ("LoadBalancer Service with externalTrafficPolicy: Local (it gets a "
            "healthCheckNodePort)")
FROM = ["outside", "node"]  # the outside client, or the node itself on 127.0.0.1


def local_services() -> list[str]:
    return [s.key for s in plan().services if s.type == "LoadBalancer"
            and s.external_traffic_policy == "Local" and s.health_check_node_port]


def ask(where: str, node: str, port: int, path: str) -> tuple[int, dict[str, str], str, Evidence]:
    """HTTP GET of node:port/path from ``where``: status, headers (lower-case names), body."""
    if where == "outside":
        host, address = outside_client().name, plan().node(node).address
    else:
        host, address = node, "127.0.0.1"
    got = run(host, "curl", "-s", "-D", "-", "--max-time", "5", f"http://{address}:{port}{path}")
    assert got.rc == 0, got
    head, _, body = got.stdout.replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    return int(status_line.split()[1]), headers, body, got


def ready_local_pods(service: str, node: str) -> set[str]:
    """The Service's pods running on ``node`` that its podnet-endpoints does not report
    unready (the unready pods file: "namespace/name ip" a line)."""
    svc = plan().service(service)
    pods = observed()
    unready = run(node, "sh", "-c", f"cat {plan().paths.unready_pods} 2>/dev/null || true")
    assert unready.rc == 0, unready
    out = set(unready.stdout.split()[0::2])
    return {e.pod for p in svc.ports for e in p.endpoints
            if e.node == node and e.pod in pods and pods[e.pod]["node"] == node
            and e.pod not in out}


@pytest.mark.parametrize("where", FROM)
@pytest.mark.parametrize("path", ["/healthz", "/livez"])
def test_the_node_health_server_answers_as_kube_proxy(node: str, path: str, where: str) -> None:
    status, headers, body, got = ask(where, node, kubeproxy.HEALTHZ_PORT, path)
    assert status == 200, got
    assert headers.get("content-type") == "application/json", got
    assert headers.get("x-content-type-options") == "nosniff", got
    answer = json.loads(body)
    want = {"lastUpdated", "currentTime", *(("nodeEligible",) if path == "/healthz" else ())}
    assert set(answer) == want, got
    assert answer["lastUpdated"] == answer["currentTime"], got  # healthy: synced now
    if path == "/healthz":
        assert answer["nodeEligible"] is True, got


def test_the_node_health_server_has_nothing_else(node: str) -> None:
    status, _, _, got = ask("outside", node, kubeproxy.HEALTHZ_PORT, "/metrics")
    assert status == 404, got


@pytest.mark.parametrize("where", FROM)
@pytest.mark.parametrize("service", params(local_services(), LOCAL_LB))
def test_a_local_service_health_check_counts_the_ready_local_endpoints(
        service: str, node: str, where: str) -> None:
    svc = plan().service(service)
    assert svc.health_check_node_port
    expected = len(ready_local_pods(service, node))
    status, headers, body, got = ask(where, node, svc.health_check_node_port, "/")
    assert headers.get("content-type") == "application/json", got
    assert headers.get("x-content-type-options") == "nosniff", got
    assert json.loads(body) == {
        "service": {"namespace": svc.namespace, "name": svc.name},
        "localEndpoints": expected, "serviceProxyHealthy": True}, got
    # a load balancer sends to the nodes that answer 200: those with a ready local endpoint
    assert status == (200 if expected else 503), got
    print(f"\n{service} on {node} from {where}: {status}, localEndpoints {expected}")


def test_flushed_rules_answer_503_until_the_canary_puts_them_back() -> None:
    node = plan().nodes[0].name
    lab = lab_state()
    # the canary is stopped while the chain is gone, so that the 503 is seen whenever its
    # 10 s round would have come (it could repair the rules before the health server's next
    # 1 s check); started again, it is what puts them back
    canary = "podnet-iptables-canary.service"
    assert run(node, "systemctl", "stop", canary).rc == 0
    gone = run(node, "sh", "-c", f"iptables -t nat -F {proxier.CANARY} && "
               f"iptables -t nat -X {proxier.CANARY}")
    try:
        assert gone.rc == 0, gone
        took = wait_for(f"{node} /healthz 503", lambda: ask(
            "outside", node, kubeproxy.HEALTHZ_PORT, "/healthz")[0] == 503, 5)
        status, _, body, got = ask("outside", node, kubeproxy.HEALTHZ_PORT, "/livez")
        assert status == 503, got
        answer = json.loads(body)
        assert answer["lastUpdated"] != answer["currentTime"], got  # the last apply, not now
        for service in local_services():
            svc = plan().service(service)
            assert svc.health_check_node_port
            status, _, body, got = ask("outside", node, svc.health_check_node_port, "/")
            assert status == 503 and json.loads(body)["serviceProxyHealthy"] is False, got
            assert json.loads(body)["localEndpoints"] == len(ready_local_pods(service, node)), got
        assert run(node, "systemctl", "start", canary).rc == 0
        back = wait_for(f"{node} /healthz 200 again", lambda: ask(
            "outside", node, kubeproxy.HEALTHZ_PORT, "/healthz")[0] == 200, 60)
        print(f"\n{node}: 503 {took:.1f} s after the canary chain went, 200 again "
              f"{back:.1f} s later (podnet's canary repaired the rules)")
    finally:
        run(node, "systemctl", "start", canary)
        assert_restored(lab, f"deleting {proxier.CANARY} on {node}")


def partial_service() -> ServicePlan:
    """A Service over pods on some nodes but not all (demo/api-local's 2 pods on 3 nodes)."""
    nodes = {n.name for n in plan().nodes}
    for svc in plan().services:
        if svc.selector and svc.ports and svc.ports[0].protocol == "TCP":
            on = {e.node for e in svc.ports[0].endpoints}
            if on and on != nodes:
                return svc
    pytest.skip(str(targets.NotInPlan(PARTIAL)))


def main_pid(node: str) -> str:
    got = run(node, "systemctl", "show", "-p", "MainPID", "--value", "podnet-proxy-health")
    assert got.rc == 0 and got.stdout.strip() not in ("", "0"), got
    return got.stdout.strip()


def refused(node: str, port: int) -> bool:
    got = run(outside_client().name, "curl", "-s", "--max-time", "5",
              f"http://{plan().node(node).address}:{port}/")
    return got.rc == 7  # connection refused: nothing listens (the rules ACCEPT the port)


@pytest.mark.changes_lab
def test_a_new_local_service_gets_its_health_check_everywhere_and_loses_it(tmp_path: Path
                                                                          ) -> None:
    like = partial_service()
    name, text = targets.new_service_like(plan(), like, "hc-new", like.ports[0].port)
    manifest = yaml.safe_load(text)
    manifest["spec"].update(type="LoadBalancer", externalTrafficPolicy="Local")
    copy = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), copy)
    (copy / f"zz-{name}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    changed = plan_of(copy)
    svc = changed.service(f"{like.namespace}/{name}")
    port = svc.health_check_node_port
    assert port and svc.external_traffic_policy == "Local", svc
    nodes = [n.name for n in plan().nodes]
    expected = {n: len({e.pod for p in svc.ports for e in p.endpoints if e.node == n})
                for n in nodes}
    assert 0 in expected.values() and max(expected.values()) > 0, expected  # both answers
    pids = {n: main_pid(n) for n in nodes}
    lab = lab_state()
    try:
        converged(copy, "workloads")
        for node in nodes:
            status, _, body, got = ask("outside", node, port, "/")
            assert json.loads(body) == {
                "service": {"namespace": svc.namespace, "name": svc.name},
                "localEndpoints": expected[node], "serviceProxyHealthy": True}, got
            assert status == (200 if expected[node] else 503), got
            print(f"\n{svc.key} on {node}: {status}, localEndpoints {expected[node]}")
    finally:
        converged(manifests_dir(), "workloads")
    for node in nodes:
        wait_for(f"{node} closing port {port}", partial(refused, node, port), 5)
    # the same processes followed both converges: no restart
    assert {n: main_pid(n) for n in nodes} == pids
    assert_restored(lab, f"adding and removing Service {svc.key}")
