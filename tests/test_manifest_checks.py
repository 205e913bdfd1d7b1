"""More object checks: Kubernetes' API validation rules that its schema does not express."""

from __future__ import annotations

import pytest
from modelkit import deployment, errors_of, make_plan, service

ING = """\
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ing}}
spec:
{spec}"""


def ingress(spec: str) -> str:
    return service("web") + ING.format(spec=spec)


def svc(body: str = "", ports: str | None = None) -> str:
    return service("web", body=body, ports=ports)


POD = """\
---
apiVersion: v1
kind: Pod
metadata:
  name: p
{meta}spec:
  containers:
{containers}"""
C = "    - name: {name}\n      image: podnet/netexec\n{ports}"


def pod(containers: str, meta: str = "") -> str:
    return POD.format(meta=meta, containers=containers)


CASES = [
    ("label-key", pod(C.format(name="c", ports=""), "  labels: {'-bad': x}\n"),
     "Pod default/p: metadata.labels.-bad: label key '-bad' must be"),
    ("missing-kind", "apiVersion: v1\nmetadata: {name: x}\n", "document 1: kind: is missing"),
    ("missing-name", "apiVersion: v1\nkind: Service\nmetadata: {}\n",
     "Service in document 1: metadata.name: is missing"),
    ("bad-namespace-name", svc().replace("namespace: default", "namespace: Shop"),
     "metadata.namespace: 'Shop' is not a DNS-1123 label"),
    ("container-name", pod(C.format(name="C1", ports="")),
     "spec.containers[0].name: 'C1' is not a DNS-1123 label"),
    ("container-name-twice", pod(C.format(name="c", ports="") + C.format(name="c", ports="")),
     "spec.containers[1].name: container name 'c' is used twice"),
    ("container-port-name", pod(C.format(name="c", ports="      ports: [{name: HTTP, "
                                                          "containerPort: 80}]\n")),
     "spec.containers[0].ports[0].name: port name 'HTTP' may only hold"),
    ("container-port-twice", pod(C.format(name="c", ports="      ports: [{containerPort: 80}]\n")
                                 + C.format(name="d",
                                            ports="      ports: [{containerPort: 80}]\n")),
     "spec.containers[1].ports[0].containerPort: 80/TCP is already declared by container c"),
    ("replicas-negative", deployment("web").replace("replicas: 3", "replicas: -1"),
     "spec.replicas: -1 is negative"),
    ("selector-empty", deployment("web").replace("    matchLabels:\n      app: web\n",
                                                 "    matchLabels: {}\n"),
     "spec.selector.matchLabels: is empty"),
    ("service-type", svc("  type: Magic\n"), "spec.type: 'Magic' is not a Service type"),
    ("cluster-ip-ipv6", svc("  clusterIP: 'fd00::1'\n"),
     "spec.clusterIP: 'fd00::1' is not an IPv4"),
    ("cluster-ips-mismatch", svc("  clusterIP: 10.96.0.50\n  clusterIPs: [10.96.0.51]\n"),
     "spec.clusterIPs: ['10.96.0.51'] must be [clusterIP]"),
    ("dual-stack", svc("  ipFamilyPolicy: RequireDualStack\n"),
     "spec.ipFamilyPolicy: 'RequireDualStack' needs IPv6"),
    ("external-name-bad", svc("  type: ExternalName\n  externalName: 'bad name'\n", ports=""),
     "spec.externalName: 'bad name' is not a DNS-1123 subdomain"),
    ("external-name-with-ip", svc("  type: ExternalName\n  externalName: a.test\n"
                                  "  clusterIP: 10.96.0.5\n", ports=""),
     "spec.clusterIP: must not be set for type ExternalName"),
    ("external-name-on-clusterip", svc("  externalName: a.test\n"),
     "spec.externalName: is only used by type ExternalName, not ClusterIP"),
    ("no-ports", svc(ports="  ports: []\n"), "spec.ports: is empty"),
    ("port-name-invalid", svc(ports="  ports:\n    - {name: Web, port: 80}\n"),
     "spec.ports[0].name: 'Web' is not a DNS-1123 label"),
    ("port-name-twice",
     svc(ports="  ports:\n    - {name: a, port: 80}\n    - {name: a, port: 81}\n"),
     "spec.ports[1].name: port name 'a' is used twice"),
    ("port-twice", svc(ports="  ports:\n    - {name: a, port: 80}\n    - {name: b, port: 80}\n"),
     "spec.ports[1].port: 80/TCP is listed twice"),
    ("affinity-unknown", svc("  sessionAffinity: Cookie\n"),
     "spec.sessionAffinity: 'Cookie' is not an affinity"),
    ("affinity-config-alone", svc("  sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}\n"),
     "spec.sessionAffinityConfig: is set but sessionAffinity is not ClientIP"),
    ("policy-value", svc("  internalTrafficPolicy: Nearby\n"),
     "spec.internalTrafficPolicy: 'Nearby' is not a policy"),
    ("source-ranges-on-nodeport", svc("  type: NodePort\n  loadBalancerSourceRanges: "
                                      "[10.0.0.0/8]\n"),
     "spec.loadBalancerSourceRanges: only applies to LoadBalancer Services, not NodePort"),
    ("lb-ip-on-nodeport", svc("  type: NodePort\n  loadBalancerIP: 192.168.56.241\n"),
     "spec.loadBalancerIP: only applies to LoadBalancer, not NodePort"),
    ("lb-ip-invalid", svc("  type: LoadBalancer\n  loadBalancerIP: somewhere\n"),
     "spec.loadBalancerIP: 'somewhere' is not an IP address"),
    ("lb-ip-taken", svc("  type: LoadBalancer\n  loadBalancerIP: 192.168.56.241\n")
     + service("web2", selector="web", body="  type: LoadBalancer\n  loadBalancerIP: "
               "192.168.56.241\n"),
     "Service default/web2: spec.loadBalancerIP: 192.168.56.241 is already taken by Service "
     "default/web"),
    ("health-port-on-cluster-policy", svc("  type: LoadBalancer\n  healthCheckNodePort: 31000\n"),
     "spec.healthCheckNodePort: only applies to LoadBalancer Services with externalTrafficPolicy"),
    ("health-port-out-of-range", svc("  type: LoadBalancer\n  externalTrafficPolicy: Local\n"
                                     "  healthCheckNodePort: 80\n"),
     "spec.healthCheckNodePort: 80 is outside podnet_nodeport_range"),
    ("health-port-taken", svc("  type: LoadBalancer\n  externalTrafficPolicy: Local\n"
                              "  healthCheckNodePort: 30080\n",
                              ports="  ports:\n    - {port: 80, nodePort: 30080}\n"),
     "spec.healthCheckNodePort: 30080 is already the nodePort of Service default/web"),
    ("ingress-resource-backend", ingress("  defaultBackend: {resource: {kind: Bucket, name: b}}\n"),
     "spec.defaultBackend: has no service backend"),
    ("ingress-port-both", ingress("  defaultBackend: {service: {name: web, port: "
                                  "{number: 80, name: http}}}\n"),
     "spec.defaultBackend.service.port: needs exactly one of number or name"),
    ("ingress-empty", ingress("  tls: []\n"), "Ingress default/ing: spec: has neither rules nor"),
    ("ingress-host-invalid", ingress("  rules:\n    - host: 'a..b'\n      http: {paths: [{path: /, "
                                     "pathType: Prefix, backend: {service: {name: web, port: "
                                     "{number: 80}}}}]}\n"),
     "spec.rules[0].host: 'a..b' is not a DNS-1123 subdomain"),
    ("ingress-tls-host-invalid", ingress("  defaultBackend: {service: {name: web, port: "
                                         "{number: 80}}}\n  tls: [{hosts: ['*']}]\n"),
     "spec.tls[0].hosts[0]: '*' is not a DNS-1123 subdomain"),
    ("ingress-path-type", ingress("  rules:\n    - http: {paths: [{path: /, pathType: Regex, "
                                  "backend: {service: {name: web, port: {number: 80}}}}]}\n"),
     "spec.rules[0].http.paths[0].pathType: 'Regex' is not a path type"),
    ("ingress-headless-backend", service("db", body="  clusterIP: None\n") + ING.format(
        spec="  defaultBackend: {service: {name: db, port: {number: 80}}}\n"),
     "spec.defaultBackend.service.name: Service 'db' has no ClusterIP to proxy to"),
]


@pytest.mark.parametrize(("case", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_object_checks(case: str, text: str, expected: str) -> None:
    found = "\n".join(errors_of(text))
    assert expected in found, f"{case}: {expected!r} not in\n{found}"


def test_warnings_for_odd_but_valid_objects() -> None:
    text = (deployment("web", spec_extra="      hostname: same\n")
            + service("ext", body="  type: ExternalName\n  externalName: a.test\n", ports="")
            + ingress("  defaultBackend: {service: {name: web, port: {number: 80}}}\n"
                      "  tls: [{hosts: [other.example.test]}]\n")
            + deployment("db", 1, spec_extra="      subdomain: nowhere\n"))
    plan = make_plan(text)
    warnings = "\n".join(str(w) for w in plan.warnings)
    assert "spec.template.spec.hostname: every replica gets this same hostname" in warnings
    assert ("Service default/ext: spec.selector: an ExternalName Service has no endpoints"
            in warnings)
    assert "spec.tls[0].hosts[0]: no rule has host 'other.example.test'" in warnings
    assert "no headless Service 'nowhere' in namespace default" in warnings


def test_partly_named_ports_and_shared_hostnames_warn() -> None:
    text = (deployment("web", 2)
            + pod(C.format(name="c", ports="      ports: [{name: other, containerPort: 81}]\n"),
                  "  labels: {app: web}\n")
            + service("web"))
    plan = make_plan(text)
    assert any("have no port named 'http' and are not endpoints" in str(w) for w in plan.warnings)


def test_ingress_routes_resolve_ports_and_tls() -> None:
    plan = make_plan(ingress("""\
  tls: [{hosts: [a.example.test], secretName: a-tls}]
  rules:
    - host: a.example.test
      http:
        paths:
          - path: /x
            pathType: ImplementationSpecific
            backend: {service: {name: web, port: {name: http}}}
    - host: '*.example.test'
      http:
        paths:
          - {path: /, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
"""))
    routes = [(r.host, r.path, r.path_type, r.service_port, r.tls, r.secret_name)
              for r in plan.ingress_routes]
    assert routes == [("a.example.test", "/x", "ImplementationSpecific", 80, True, "a-tls"),
                      ("*.example.test", "/", "Exact", 80, False, None)]
