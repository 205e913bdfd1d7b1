"""verify/targets.py, the selectors that give each verify test its Service, Deployment or pods by
shape: on the demo manifests every one finds the object the suites were written against (so
``make verify`` on the lab skips nothing and proves what it did with names), and on plans
without that shape each says what to add."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelkit import NETEXEC, deployment, make_plan, service
from nodekit import load

from podnet import cluster
from podnet.plan import Plan

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "inventory" / "lab"
EXAMPLE = ROOT / "inventory" / "example-vms"

# verify/ imports it as a top-level module beside its conftest; here under a name of its own
targets: Any = load("verify_targets", ROOT / "verify" / "targets.py")


@pytest.fixture(scope="module")
def demo() -> Plan:
    """The lab's plan from its manifests alone (a lab that does not exist: no record)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PODNET_LAB", "podnet-targets-test")
        mp.delenv("PODNET_MANIFESTS_DIR", raising=False)
        return cluster.load(LAB)


@pytest.fixture(scope="module")
def example() -> Plan:
    """inventory/example-vms with its own manifests (its record would be under the default
    state root: point it at an empty folder)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PODNET_MANIFESTS_DIR", raising=False)
        return cluster.load(EXAMPLE)


def owned_by(plan: Plan, namespace: str, name: str) -> list[str]:
    return [p.key for p in plan.pods if targets.owner_deployment(p) == (namespace, name)]


# -- the demo: each selector finds what the suites proved by name before ------------------------
def test_the_demo_gives_the_matrices_their_floors(demo: Plan) -> None:
    """What the demo's manifests must give the suites to prove much: a manifest edit that
    leaves the pod matrix or the ClusterIP matrix nearly empty fails here, not as a green
    verify over a few pairs."""
    assert len(targets.servers(demo)) >= 10, targets.servers(demo)
    assert len(targets.cluster_ip_ports(demo)) >= 8, targets.cluster_ip_ports(demo)


def test_the_demo_services_each_test_takes(demo: Plan) -> None:
    assert targets.http_service(demo).key == "demo/web"
    balanced = targets.balanced_service(demo)
    assert balanced.service.key == "demo/web"
    assert balanced.client not in {e.pod for e in balanced.service.ports[0].endpoints}
    assert targets.affinity_service(demo).key == "demo/web-sticky"
    assert targets.service_without_endpoints(demo).key == "demo/nothing"
    hairpin = targets.hairpin_service(demo)
    assert hairpin.key == "demo/web-node-local"
    assert sorted(targets.alone_on_their_node(hairpin)) == sorted(owned_by(demo, "demo", "web"))
    assert [s.key for s in targets.node_port_services(demo)] == [
        "demo/web", "demo/web-public", "demo/api"]
    assert targets.external_name_service(demo).key == "demo/upstream"
    assert targets.unnamed_port_services(demo) == ["demo/api-local"]


def test_the_demo_local_policy_cases_take_both_branches(demo: Plan) -> None:
    internal = targets.local_cases(demo, "internal")
    external = targets.local_cases(demo, "external")
    assert {s for s, _, _ in internal} == {"demo/api-local", "demo/web-node-local"}
    assert {s for s, _, _ in external} == {"demo/api-local", "demo/web-lb"}
    assert targets.local_branches(demo, "internal") == Counter(answers=5, drops=1)
    assert targets.local_branches(demo, "external") == Counter(answers=5, drops=1)


def test_the_demo_lifecycle_targets(demo: Plan) -> None:
    follow = targets.udp_follow(demo)
    assert (follow.service.key, follow.port.name, follow.deployment) == (
        "demo/echo", "udp", ("demo", "echo"))
    assert follow.client.namespace == "demo" and follow.client.key not in owned_by(
        demo, "demo", "echo")
    scaling = targets.scaling(demo)
    assert (scaling.service.key, scaling.deployment) == ("demo/web", ("demo", "web"))
    assert scaling.pods == owned_by(demo, "demo", "web") and len(scaling.pods) == 3
    assert sorted(s.key for s in scaling.services) == [
        "demo/web", "demo/web-lb", "demo/web-node-local", "demo/web-public", "demo/web-sticky"]
    assert targets.bare_server_pod(demo).key == "demo/db-0"
    assert targets.stable_server_pod(demo).key == "demo/db-0"
    # the most pods: node2 has six (one of whoami's two and an Ingress controller pod)
    assert targets.reboot_node(demo) == "node2"
    assert targets.drift_nodes(demo) == ("node1", "node2", "node3")
    assert len(targets.dns_pods(demo)) == 2


def test_the_demo_dns_names(demo: Plan) -> None:
    names = targets.dns_names(demo)
    assert names.service.key == "demo/web"
    assert names.clients == {"demo": "demo/db-0", "other": "other/client"}


def test_a_new_service_beside_the_demos_web(demo: Plan) -> None:
    """The manifest the DNS lifecycle test adds: web's namespace, selector and target port."""
    name, text = targets.new_service_like(demo, demo.service("demo/web"), "dns-new", 8088)
    assert name == "dns-new"
    assert yaml.safe_load(text) == {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "dns-new", "namespace": "demo"},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 8088, "protocol": "TCP", "targetPort": "http"}]}}
    assert targets.unused_service_name(demo, "demo", "web") == "web-2"


# -- the example for real VMs: other names, the same shapes, so no proof skips there ----------
def test_the_example_vms_manifests_give_every_test_its_shape(example: Plan) -> None:
    """Every selector finds an object in inventory/example-vms/manifests (names unlike the
    demo's): on VMs converged from the example, verify skips only what needs the lab itself."""
    assert len(targets.servers(example)) >= 10
    assert targets.http_service(example).key == "shop/frontend"
    assert targets.balanced_service(example).service.key == "shop/frontend"
    assert targets.affinity_service(example).key == "shop/frontend-sticky"
    assert targets.service_without_endpoints(example).key == "shop/legacy-search"
    assert targets.hairpin_service(example).key == "shop/frontend-local"
    assert targets.local_branches(example, "internal") == Counter(answers=5, drops=1)
    assert targets.local_branches(example, "external") == Counter(answers=2, drops=1)
    assert [s.key for s in targets.node_port_services(example)] == ["shop/frontend"]
    assert targets.external_name_service(example).key == "shop/payments"
    assert targets.unnamed_port_services(example) == ["shop/cart"]
    follow = targets.udp_follow(example)
    assert (follow.service.key, follow.deployment) == ("ops/logsink", ("ops", "logsink"))
    assert targets.scaling(example).deployment == ("shop", "frontend")
    assert targets.bare_server_pod(example).namespace in {"shop", "ops"}
    assert set(targets.dns_names(example).clients) == {"shop", "ops"}
    assert targets.reboot_node(example) and len(targets.drift_nodes(example)) == 3
    assert len(targets.dns_pods(example)) == 2


# -- other plans: the choice follows the shape, and a missing shape says what to add ------------
def test_the_most_endpoints_then_the_simplest_type_win() -> None:
    plan = make_plan(deployment("a", 2) + deployment("b", 3)
                     + service("lb", selector="b", body="  type: LoadBalancer\n")
                     + service("np", selector="b", body="  type: NodePort\n")
                     + service("two", selector="a"))
    assert targets.http_service(plan).key == "default/np"
    assert [s.key for s in targets.node_port_services(plan)] == ["default/np", "default/lb"]


def test_every_client_reaches_only_ports_whose_answer_it_can_check() -> None:
    """The ClusterIP matrix asks /hostname (TCP) or the UDP echo: a port served by another
    program, or by the test server on another port, is left out, and a DNS port is kept."""
    udp = "  ports:\n    - {name: u, port: 5000, protocol: UDP, targetPort: 8081}\n"
    wrong = "  ports:\n    - {name: w, port: 81, targetPort: 9999}\n"
    plan = make_plan(deployment("w", 2) + service("w") + service("echo", selector="w", ports=udp)
                     + service("wrong", selector="w", ports=wrong))
    ports = targets.cluster_ip_ports(plan)
    assert ("default/w", "http", "TCP") in ports and ("default/echo", "u", "UDP") in ports
    assert not [p for p in ports if p[0] == "default/wrong"]
    assert {p for p in ports if p[0] == "kube-system/kube-dns"} == {
        ("kube-system/kube-dns", "dns", "UDP"), ("kube-system/kube-dns", "dns-tcp", "TCP")}


def test_a_plan_without_the_test_server_has_no_http_service() -> None:
    other = deployment("x", 2).replace(NETEXEC, """\
      containers:
        - name: nginx
          image: nginx
          ports:
            - name: http
              containerPort: 80
""")
    plan = make_plan(other + service("x"))
    with pytest.raises(targets.NotInPlan) as err:
        targets.http_service(plan)
    assert str(err.value) == (
        "the plan has no ClusterIP Service (internalTrafficPolicy Cluster, no sessionAffinity) "
        "whose first port is TCP, with pods running the test server (podnet/netexec) on the "
        "Service's target port: add one to the manifests to run this test")


def test_one_endpoint_is_not_enough_to_balance_or_to_prove_affinity() -> None:
    sticky = ("  sessionAffinity: ClientIP\n")
    plan = make_plan(deployment("one", 1) + service("one")
                     + service("sticky", selector="one", body=sticky))
    assert targets.http_service(plan).key == "default/one"
    for select, shape in ((targets.balanced_service, targets.BALANCED),
                          (targets.affinity_service, targets.AFFINITY)):
        with pytest.raises(targets.NotInPlan, match="add one to the manifests") as err:
            select(plan)
        assert err.value.shape == shape


def test_endpoints_on_one_node_do_not_balance_across_nodes() -> None:
    pinned = "      nodeName: node2\n"
    plan = make_plan(deployment("w", 3, spec_extra=pinned) + service("w"))
    with pytest.raises(targets.NotInPlan):
        targets.balanced_service(plan)
    # nor are they alone on their node: no hairpin case either
    local = make_plan(deployment("w", 2, spec_extra=pinned)
                      + service("w", body="  internalTrafficPolicy: Local\n"))
    with pytest.raises(targets.NotInPlan):
        targets.hairpin_service(local)


def test_local_policy_on_every_node_takes_no_drop_branch() -> None:
    plan = make_plan(deployment("w", 3)
                     + service("w", body="  type: NodePort\n  externalTrafficPolicy: Local\n"))
    assert Counter(b for _, _, b in targets.local_cases(plan, "external")) == Counter(answers=3)
    with pytest.raises(targets.NotInPlan) as err:
        targets.local_branches(plan, "external")
    assert "externalTrafficPolicy: Local" in str(err.value)
    assert targets.local_cases(plan, "internal") == []


def test_no_service_without_endpoints_and_no_external_name() -> None:
    plan = make_plan(deployment("w", 2) + service("w"))
    for select in (targets.service_without_endpoints, targets.external_name_service,
                   targets.unnamed_port_services, targets.bare_server_pod,
                   targets.stable_server_pod):
        with pytest.raises(targets.NotInPlan):
            select(plan)


def test_scaling_takes_a_deployment_of_the_manifests_never_the_dns_addon() -> None:
    """The DNS add-on's Deployment is behind kube-dns but not in the manifests to edit."""
    bare = make_plan(service("w", selector="nothing"))
    with pytest.raises(targets.NotInPlan):
        targets.scaling(bare)
    # nor the Ingress controller's, though its Service has two endpoints of one Deployment
    ingress = ("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\n"
               "spec: {defaultBackend: {service: {name: w, port: {number: 80}}}}\n")
    with pytest.raises(targets.NotInPlan):
        targets.scaling(make_plan(service("w", selector="nothing") + ingress))
    plan = make_plan(deployment("w", 1) + service("w") + service("w2", selector="w"))
    scaling = targets.scaling(plan)
    assert scaling.deployment == ("default", "w")
    assert sorted(s.key for s in scaling.services) == ["default/w", "default/w2"]


def test_udp_follow_needs_the_udp_echo_behind_a_udp_port() -> None:
    udp = "  ports:\n    - {name: u, port: 5000, protocol: UDP, targetPort: 8081}\n"
    plan = make_plan(deployment("e", 1) + service("e", ports=udp) + deployment("c", 1))
    follow = targets.udp_follow(plan)
    assert follow.port.name == "u" and follow.deployment == ("default", "e")
    assert follow.client.key.startswith("default/c-")
    wrong_port = make_plan(deployment("e", 1) + deployment("c", 1) + service(
        "e", ports="  ports:\n    - {name: u, port: 5000, protocol: UDP, targetPort: 9999}\n"))
    with pytest.raises(targets.NotInPlan):
        targets.udp_follow(wrong_port)


def test_dns_names_need_a_second_namespace_with_the_test_server() -> None:
    one = make_plan(deployment("w", 2) + service("w"))
    with pytest.raises(targets.NotInPlan) as err:
        targets.dns_names(one)
    assert "in its namespace and in another namespace" in str(err.value)
    other = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n"
    two = make_plan(deployment("w", 2) + service("w") + other + deployment("c", 1, ns="other"))
    names = targets.dns_names(two)
    assert names.service.key == "default/w"
    assert list(names.clients) == ["default", "other"]


def test_drift_needs_a_test_server_on_two_of_three_nodes() -> None:
    pinned = make_plan(deployment("w", 2, spec_extra="      nodeName: node3\n") + service("w"))
    with pytest.raises(targets.NotInPlan):
        targets.drift_nodes(pinned)
    spread = make_plan(deployment("w", 2, spec_extra="      nodeName: node1\n")
                       + deployment("v", 1, spec_extra="      nodeName: node3\n"))
    assert targets.drift_nodes(spread) == ("node2", "node1", "node3")
    # of the nodes running a test server, the one with the most pods: node1, with two
    assert targets.reboot_node(spread) == "node1"
