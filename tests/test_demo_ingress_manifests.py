"""The demo's Ingress manifests say exactly the route table the Ingress verify checks
(docs/ingress.md): read as plain YAML, so a change to either shows up here, whatever the model
makes of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MANIFESTS = Path(__file__).resolve().parents[1] / "inventory" / "lab" / "manifests"

# (ingress, class or None for the default, host, path, pathType, service, port number or name)
ROUTES = [
    ("demo/demo", "nginx", "web.example.test", "/", "Prefix", "web", 80),
    ("demo/demo", "nginx", "web.example.test", "/healthz", "Exact", "echo", "http"),
    ("demo/demo", "nginx", "api.example.test", "/v1", "Prefix", "api", 8080),
    ("demo/paths", None, "paths.example.test", "/aaa", "Prefix", "api", 8080),
    ("demo/paths", None, "paths.example.test", "/aaa/bbb", "Prefix", "whoami", "http"),
    ("demo/paths", None, "paths.example.test", "/aaa/bbb/ccc", "Exact", "echo", "http"),
    ("demo/paths", None, "paths.example.test", "/foo", "ImplementationSpecific", "web", 80),
    ("demo/paths", None, "paths.example.test", "/nothing", "Prefix", "nothing", "http"),
    ("demo/wild", "nginx", "*.apps.example.test", "/", "Prefix", "whoami", "http"),
    ("demo/merge", "nginx", "web.example.test", "/whoami", "Prefix", "whoami", "http"),
    ("demo/elsewhere", "other", "ignored.example.test", "/", "Prefix", "web", 80),
]
TLS = {
    "demo/demo": [(["web.example.test", "api.example.test"], "demo-tls")],
    "demo/paths": [(["paths.example.test"], "demo-tls")],
    "demo/wild": [(["*.apps.example.test"], "wild-tls")],
    "demo/merge": [],
    "demo/elsewhere": [],
}
DEFAULT_BACKENDS = {"demo/demo": ("web", "http")}


def objects(kind: str) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == kind:
                meta = doc["metadata"]
                key = f"{meta['namespace']}/{meta['name']}" if "namespace" in meta \
                    else meta["name"]
                found[key] = doc
    return found


def port_of(backend: dict[str, Any]) -> int | str:
    port = backend["service"]["port"]
    return int(port["number"]) if "number" in port else str(port["name"])


def test_the_ingresses_give_the_route_table() -> None:
    routes = []
    for key, ing in objects("Ingress").items():
        spec = ing["spec"]
        for rule in spec.get("rules", []):
            for p in rule["http"]["paths"]:
                routes.append((key, spec.get("ingressClassName"), rule.get("host"), p["path"],
                               p["pathType"], p["backend"]["service"]["name"],
                               port_of(p["backend"])))
    assert sorted(routes, key=str) == sorted(ROUTES, key=str)


def test_tls_sections_and_default_backends() -> None:
    ingresses = objects("Ingress")
    assert {k: [(t["hosts"], t["secretName"]) for t in i["spec"].get("tls", [])]
            for k, i in ingresses.items()} == TLS
    assert {k: (i["spec"]["defaultBackend"]["service"]["name"],
                port_of(i["spec"]["defaultBackend"]))
            for k, i in ingresses.items() if "defaultBackend" in i["spec"]} == DEFAULT_BACKENDS


def test_every_backend_is_a_demo_service_port() -> None:
    """Each backend names a Service of the Ingress's namespace and one of its ports."""
    services = objects("Service")
    for ingress, _, _, _, _, name, port in ROUTES:
        namespace = ingress.split("/")[0]
        ports = services[f"{namespace}/{name}"]["spec"]["ports"]
        assert any(port in (p["port"], p.get("name")) for p in ports), (ingress, name, port)


def test_the_ingress_classes() -> None:
    """nginx is the add-on's (the default class); the demo adds one of another controller."""
    assert {k: c["spec"]["controller"] for k, c in objects("IngressClass").items()} == {
        "other": "example.com/other"}


def test_whoami_is_two_ready_checked_pods_behind_a_named_port() -> None:
    deployment = objects("Deployment")["demo/whoami"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 2
    assert container["image"].startswith("traefik/whoami")
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 80}]
    service = objects("Service")["demo/whoami"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
