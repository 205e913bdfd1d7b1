"""podnet-ingress, the controller container, against a real nginx in a throwaway network
namespace: it replaces the kubelet's placeholder config and reloads nginx, follows the unready
pods and the input without restarting nginx, never installs a config nginx -t rejects (nginx
keeps serving the last good one, /healthz stays 200), and ``wait`` reports both."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from test_nginxconf import CLIENT, NGINX, Sandbox, backend, issue, make_ca, needs_sandbox

from podnet import nginxconf

TOOL = Path(__file__).resolve().parents[1] / "roles" / "ingress_nginx" / "files" / "podnet-ingress"
NAMESPACE = "ingress-nginx"
# the kubelet's placeholder (podnet/kubelet.py default_config): its pid file in the pod's folder
# (never /dev/null: nginx deletes its old pid file on a reload that changes it)
PLACEHOLDER = ("# podnet default: a placeholder until a component role configures it\n"
               "pid {pod}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n  access_log off;\n"
               "  server {{\n    listen 80;\n"
               "    location / {{ return 200 \"podnet nginx placeholder\\n\"; }}\n  }}\n}}\n")


def load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("podnet_ingress_tool", str(TOOL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


tool = load()


def make_input(cert: tuple[str, str], endpoints: list[str]) -> dict[str, Any]:
    ips = {"web": "127.0.0.2", "web-unready": "127.0.0.3", "whoami": "127.0.0.5"}
    return {
        "version": 1, "class": "nginx", "http_port": 80, "https_port": 443, "health_port": 10254,
        "certificates": {"demo/demo-tls": {"cert": cert[0], "key": cert[1]}},
        "default_certificate": None,
        "servers": [
            {"host": "web.example.test", "certificate": "demo/demo-tls", "ssl_redirect": False,
             "locations": [{"path": "/", "type": "Prefix", "upstream": "demo-web-80",
                            "ingress": "demo/demo"}]},
            {"host": "_", "certificate": None, "ssl_redirect": False,
             "locations": [{"path": "/", "type": "Prefix", "upstream": None,
                            "ingress": None}]}],
        "upstreams": {"demo-web-80": {"service": "demo/web", "port": 80, "endpoints": [
            {"pod": f"demo/{name}", "ip": ips[name], "port": 8001 if name != "whoami" else 8003}
            for name in endpoints]}},
    }


def until(what: str, ok: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.1)


class Node:
    """One controller pod: its folder, nginx started with the kubelet's placeholder, and the
    controller beside it in the same network namespace."""

    def __init__(self, tmp: Path, cert: tuple[str, str]) -> None:
        self.cert = cert
        self.pods = tmp / "pods"
        self.pod = self.pods / f"{NAMESPACE}_ctl-1"
        self.pod.mkdir(parents=True)
        (self.pod / "nginx.conf").write_text(PLACEHOLDER.format(pod=self.pod))
        self.input, self.unready = tmp / "input.json", tmp / "unready-pods"
        self.set_input(make_input(cert, ["web", "web-unready"]))
        self.box = Sandbox(tmp)
        self.box.start_nginx(self.pod / "nginx.conf")
        self.log = (tmp / "controller.log").open("w")
        self.controller = subprocess.Popen(
            ["nsenter", "-t", str(self.box.holder.pid), "-n", sys.executable, str(TOOL), "run",
             "--input", str(self.input), "--unready", str(self.unready),
             "--pods-dir", str(self.pods), "--namespace", NAMESPACE, "--interval", "0.2",
             "--nginx-unit", "podnet-test-none.service"],
            env={**os.environ, "HOSTNAME": "ctl-1", "PYTHONPATH": str(TOOL.parents[3])},
            stdout=self.log, stderr=subprocess.STDOUT)

    def set_input(self, config: dict[str, Any]) -> None:
        tmp = self.input.with_suffix(".tmp")
        tmp.write_text(json.dumps(config))
        tmp.replace(self.input)

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.pod / "ingress-status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def applied(self) -> bool:
        digest = tool.input_digest(self.input.read_bytes())
        return self.status().get("input") == digest and bool(self.status().get("applied"))

    def health(self) -> int:
        proc = self.box.run(sys.executable, "-c", "import urllib.request, urllib.error\ntry:\n"
                            " print(urllib.request.urlopen('http://127.0.0.1:10254/healthz', "
                            "timeout=2).status)\nexcept urllib.error.HTTPError as e:\n"
                            " print(e.code)")
        return int(proc.stdout.strip() or 0)

    def backends(self, count: int = 8) -> set[str]:
        replies = self.box.get(*[{"scheme": "http", "host": "web.example.test", "path": f"/{n}"}
                                 for n in range(count)])
        return {backend(r) for r in replies}

    def master(self) -> int | None:
        return tool.nginx_master(self.pod, "podnet-test-none.service")

    def wait(self, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(TOOL), "wait", "--input", str(self.input),
                               "--pods-dir", str(self.pods), "--namespace", NAMESPACE,
                               "--timeout", str(timeout)], capture_output=True, text=True,
                              check=False, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(TOOL.parents[3])})

    def close(self) -> None:
        self.controller.terminate()
        self.controller.wait(timeout=10)
        self.log.close()
        self.box.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    if os.geteuid() != 0 or not Path(NGINX).exists():
        pytest.skip("needs root and nginx")
    tmp = tmp_path_factory.mktemp("controller")
    ca, ca_key = make_ca(tmp)
    made = Node(tmp, issue(tmp, "demo", ca, ca_key, ["web.example.test"]))
    try:
        yield made
    finally:
        made.close()
        sys.stderr.write((tmp / "controller.log").read_text())


@needs_sandbox
def test_the_controller_replaces_the_placeholder_and_reloads_nginx(node: Node) -> None:
    until("the controller applies its input", node.applied)
    assert nginxconf.generation_of((node.pod / "nginx.conf").read_text()) == \
        node.status()["generation"]
    assert node.backends(16) == {"web", "web-unready"}
    assert node.health() == 200
    assert (node.pod / "tls" / "default-fake.key").stat().st_mode & 0o777 == 0o600


@needs_sandbox
def test_an_unready_pod_is_left_out_without_restarting_nginx(node: Node) -> None:
    until("the controller applies its input", node.applied)
    master = node.master()
    before = node.status()["generation"]
    node.unready.write_text("demo/web-unready 127.0.0.3\n")
    until("a new generation", lambda: node.applied() and node.status()["generation"] != before)
    assert node.backends(16) == {"web"}
    assert node.master() == master


@needs_sandbox
def test_a_request_open_during_the_reload_is_answered(node: Node) -> None:
    """nginx's graceful reload: the old workers finish the requests they hold."""
    until("the controller applies its input", node.applied)
    before = node.status()["generation"]
    slow = subprocess.Popen(
        ["nsenter", "-t", str(node.box.holder.pid), "-n", sys.executable, "-c", CLIENT],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert slow.stdin
    slow.stdin.write(json.dumps([{"scheme": "http", "host": "web.example.test",
                                  "path": "/slow"}]))
    slow.stdin.close()
    time.sleep(0.3)  # the request is at the backend
    # one pod's readiness flips: a new generation, a reload
    flipped = "" if node.unready.exists() and node.unready.read_text() else \
        "demo/web-unready 127.0.0.3\n"
    node.unready.write_text(flipped)
    until("a new generation", lambda: node.applied() and node.status()["generation"] != before)
    assert slow.poll() is None, "the request ended before the reload"
    assert slow.stdout and slow.wait(timeout=20) == 0
    reply, = json.loads(slow.stdout.read())
    assert reply.get("status") == 200, reply


@needs_sandbox
def test_an_input_change_is_loaded_by_a_reload(node: Node) -> None:
    master = node.master()
    node.set_input(make_input(node.cert, ["whoami"]))
    until("the new input", node.applied)
    assert node.backends() == {"whoami"}
    assert node.master() == master
    assert node.wait(5).returncode == 0


@needs_sandbox
def test_a_config_nginx_rejects_is_never_installed(node: Node) -> None:
    until("the controller applies its input", node.applied)
    conf = (node.pod / "nginx.conf").read_text()
    node.set_input(make_input(("not a certificate", "not a key"), ["web"]))
    until("the error in the status file", lambda: bool(node.status().get("error")))
    assert "nginx -t rejects" in node.status()["error"]
    assert (node.pod / "nginx.conf").read_text() == conf
    assert node.backends() == {"whoami"}  # the last good config
    assert node.health() == 200
    waited = node.wait(5)
    assert waited.returncode == 1 and "nginx -t rejects" in waited.stderr


@needs_sandbox
def test_wait_returns_once_every_controller_runs_the_input(node: Node) -> None:
    node.set_input(make_input(node.cert, ["web"]))
    waited = node.wait(15)
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["pods"] == [f"{NAMESPACE}_ctl-1"]
    assert node.backends() == {"web"}
    # the rejected config's certificate is gone, the installed one's stay
    conf = (node.pod / "nginx.conf").read_text()
    assert all(str(p) in conf for p in (node.pod / "tls").iterdir())


def test_the_pod_folder_comes_from_the_namespace_and_hostname(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "ingress-nginx-controller-0")
    monkeypatch.delenv("PODNET_POD_DIR", raising=False)
    args = tool.main.__globals__["argparse"].Namespace(
        pod_dir=None, pods_dir="/etc/podnet/pods", namespace=NAMESPACE)
    assert str(tool.pod_dir_of(args)) == \
        "/etc/podnet/pods/ingress-nginx_ingress-nginx-controller-0"


def test_render_prints_the_config(tmp_path: Path) -> None:
    data = tmp_path / "input.json"
    data.write_text(json.dumps({"version": 1, "servers": [], "upstreams": {}}))
    proc = subprocess.run([sys.executable, str(TOOL), "render", "--input", str(data),
                           "--pod-dir", "/pod"], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(TOOL.parents[3])})
    assert proc.returncode == 0, proc.stderr
    assert nginxconf.generation_of(proc.stdout)


@pytest.mark.parametrize(("text", "unsafe"), [
    ("# podnet default\npid /dev/null;\nevents {}\n", True),
    ("pid /etc/podnet/pods/x/nginx.pid;\n", False),
    ("worker_processes 1;\n", False),
])
def test_a_placeholder_keeping_its_pid_in_dev_null_is_never_reloaded(text: str,
                                                                     unsafe: bool) -> None:
    """nginx deletes its old pid file when a reload changes it (and as it exits): the node's
    /dev/null, for an older kubelet's placeholder. The controller kills that nginx instead."""
    assert tool.unsafe_pid_file(text) is unsafe
