"""Odd but schema-valid input (nulls, empty strings, edge values, very long names): each is
either fine or an error naming the field, never a crash. Allocation corner cases are in
test_allocation.py."""

from __future__ import annotations

import pytest
from modelkit import deployment, errors_of, make_plan, service

from podnet import dns


@pytest.mark.parametrize(("text", "expected"), [
    (deployment("web").replace("replicas: 3", "replicas: null"), None),
    (service("web", body="  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n"
                         "    clientIP: {timeoutSeconds: null}\n"), None),
    (service("web", ports="  ports:\n    - {port: 80, targetPort: null}\n"), None),
    (service("web", ports="  ports: [null]\n"), "spec.ports[0]: is null"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [null]\n",
     "spec.containers[0]: is null"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
     "    - {name: c, image: podnet/netexec, args: [null]}\n",
     "spec.containers[0].args[0]: is null"),
    (service("web", body="  clusterIPs: [10.96.0.300]\n"),
     "spec.clusterIPs[0]: '10.96.0.300' is not an IPv4 address"),
    (deployment("web", spec_extra="      restartPolicy: Never\n"),
     "spec.template.spec.restartPolicy: 'Never' is not allowed in a Deployment"),
    (service("web", ports="  ports:\n    - {port: 80, targetPort: '8080'}\n"),
     "spec.ports[0].targetPort: port name '8080' must contain at least one letter"),
    (service("web") + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}"
     "\nspec:\n  rules:\n    - http: {paths: [{path: '', pathType: Prefix, backend: {service: "
     "{name: web, port: {number: 80}}}}]}\n",
     "spec.rules[0].http.paths[0].path: '' is not an absolute path"),
    (service("web", body="  type: NodePort\n", ports="  ports:\n    - {name: a, port: 80, "
             "nodePort: 30080}\n    - {name: b, port: 81, nodePort: 30080}\n"),
     "spec.ports[1].nodePort: 30080/TCP is given twice"),
    (service("lb", body="  type: LoadBalancer\n  loadBalancerIP: 192.168.56.255\n"),
     "192.168.56.255 is already taken by the underlay's broadcast address"),
])
def test_odd_input_is_an_error_or_fine_never_a_crash(text: str, expected: str | None) -> None:
    if expected is None:
        make_plan(text)
    else:
        assert expected in "\n".join(errors_of(text))


def test_node_prefix_zero_is_named() -> None:
    found = "\n".join(errors_of(variables={"podnet_node_cidr_prefix": 0}))
    assert "podnet_node_cidr_prefix: /0 does not fit podnet_cluster_cidr" in found


def test_host_in_pool_reported_once() -> None:
    found = errors_of(host_list=[{"name": "node1", "address": "192.168.56.241",
                                  "groups": ["nodes"]}])
    assert sum("lies inside podnet_lb_pool" in f for f in found) == 1


def test_empty_host_and_implementation_specific_empty_path() -> None:
    plan = make_plan(service("web") + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\n"
                     "metadata: {name: i}\nspec:\n  rules:\n    - host: ''\n      http: {paths: "
                     "[{pathType: ImplementationSpecific, backend: {service: {name: web, port: "
                     "{number: 80}}}}]}\n")
    assert [(r.host, r.path) for r in plan.ingress_routes] == [(None, "/")]


def test_headless_records_include_pods_without_the_named_port() -> None:
    text = (service("db", selector="db", body="  clusterIP: None\n",
                    ports="  ports:\n    - {name: http, port: 80, targetPort: http}\n")
            + deployment("db", 1)
            + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: bare, labels: {app: db}}\n"
              "spec:\n  containers: [{name: c, image: podnet/netexec}]\n")
    plan = make_plan(text)
    ips = {p.key: f"10.244.0.{i + 5}" for i, p in enumerate(plan.pods)}
    lines = {str(r) for r in dns.records(plan, ips)}
    bare = ips["default/bare"]
    assert f"db.default.svc.cluster.local. 5 IN A {bare}" in lines
    assert not any("SRV" in line and bare.replace(".", "-") in line for line in lines)


def test_long_deployment_names_give_63_character_pod_names() -> None:
    name = "a" * 60
    plan = make_plan(deployment(name, 2))
    pods = [p.name for p in plan.pods if p.owner.endswith(name)]
    assert all(len(p) == 63 for p in pods) and len(set(pods)) == 2
