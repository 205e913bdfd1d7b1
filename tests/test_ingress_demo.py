"""The lab's demo Ingresses end to end without a lab: the plan from inventory/lab's manifests,
the controller's input from podnet/ingress.py (every pod given a loopback address as its
observed IP), the config from podnet/nginxconf.py, served by a real nginx in a throwaway
network namespace with a backend per pod. The route table is the one verify checks on the lab
(docs/ingress.md), certificates checked against the demo CA (inventory/lab/tls/ca.crt)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_nginxconf import NGINX, Sandbox, https, needs_sandbox, write_files

from podnet import cluster, ingress, nginxconf

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "inventory" / "lab"
CA = LAB / "tls" / "ca.crt"
HTTP, HTTPS = 18080, 18443


def app(pod: str) -> str:
    """A Deployment's pod "ns/name-<hash>-<suffix>" by its Deployment's name."""
    return pod.split("/", 1)[1].rsplit("-", 2)[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    if os.geteuid() != 0 or not Path(NGINX).exists():
        pytest.skip("needs root and nginx")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PODNET_LAB", "podnet-ingress-demo-test")
        mp.delenv("PODNET_MANIFESTS_DIR", raising=False)
        plan = cluster.load(LAB)
    observed = {pod.key: f"127.1.{i // 250}.{i % 250 + 1}" for i, pod in enumerate(plan.pods)}
    config = ingress.config(plan, observed)
    # the pods' own ports (whoami's 80) are bound on their addresses in this one namespace:
    # nginx listens on others here
    config["http_port"], config["https_port"] = HTTP, HTTPS
    backends = {e["pod"] + f":{e['port']}": (e["ip"], int(e["port"]))
                for upstream in config["upstreams"].values() for e in upstream["endpoints"]}
    tmp = tmp_path_factory.mktemp("demo")
    pod = tmp / "pod"
    (pod / "nginx-temp").mkdir(parents=True)
    text, files = nginxconf.render(config, set(), str(pod))
    write_files(files)
    (pod / "nginx.conf").write_text(text)
    box = Sandbox(tmp, backends)
    try:
        test = box.run(NGINX, "-t", "-c", str(pod / "nginx.conf"))
        assert test.returncode == 0, test.stderr
        box.start_nginx(pod / "nginx.conf")
        deadline = time.monotonic() + 10
        while box.get({"scheme": "http", "host": "x", "path": "/healthz",
                         "port": HTTP})[0].get("status") != 200:
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)
        yield box
    finally:
        box.close()


def served_by(reply: dict[str, Any]) -> str:
    if reply.get("status") != 200 or not reply.get("body", "").startswith("{"):
        return str(reply.get("status", reply))
    return app(json.loads(reply["body"])["name"].rsplit(":", 1)[0])


ROUTES = [
    ("web.example.test", "/", "web"), ("web.example.test", "/healthz", "echo"),
    ("web.example.test", "/healthz/", "web"), ("web.example.test", "/whoami", "whoami"),
    ("api.example.test", "/v1", "api"), ("api.example.test", "/v2", "web"),
    ("paths.example.test", "/aaa/bbb", "whoami"), ("paths.example.test", "/aaa/bbb/", "whoami"),
    ("paths.example.test", "/aaa/bbb/ccc/", "whoami"),
    ("paths.example.test", "/aaa/bbb/ccc", "echo"), ("paths.example.test", "/aaa/bbbxyz", "api"),
    ("paths.example.test", "/aaa", "api"), ("paths.example.test", "/foo", "web"),
    ("paths.example.test", "/foobar", "web"), ("paths.example.test", "/fo", "404"),
    ("paths.example.test", "/nothing", "503"),
    ("x.apps.example.test", "/", "whoami"), ("a.b.apps.example.test", "/", "404"),
    ("apps.example.test", "/", "404"), ("ignored.example.test", "/", "404"),
]


@needs_sandbox
def test_the_demo_route_table_over_https_verified_against_the_demo_ca(demo: Sandbox) -> None:
    """Every route of the table, each host's certificate verified by SNI against the CA
    (the hosts without a certificate of their own get the default one: not verified)."""
    tls_hosts = {"web.example.test", "api.example.test", "paths.example.test",
                 "x.apps.example.test"}
    replies = demo.get(*(https(host, path, verify=host in tls_hosts, ca=str(CA), port=HTTPS)
                         for host, path, _ in ROUTES))
    got = [(h, p, served_by(r)) for (h, p, _), r in zip(ROUTES, replies, strict=True)]
    assert got == ROUTES


@needs_sandbox
def test_unknown_hosts_get_the_default_certificate_of_the_demo_ca(demo: Sandbox) -> None:
    reply, = demo.get(https("ingress.podnet.test", "/healthz", verify=True, ca=str(CA),
                            port=HTTPS))
    assert reply.get("status") == 200, reply


@needs_sandbox
def test_plain_http_to_a_tls_host_is_redirected(demo: Sandbox) -> None:
    reply, = demo.get({"scheme": "http", "host": "paths.example.test", "path": "/aaa",
                       "port": HTTP})
    assert (reply["status"], reply["location"]) == (308, "https://paths.example.test/aaa")
