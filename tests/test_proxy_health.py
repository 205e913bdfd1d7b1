"""kube-proxy's health servers on the node (podnet-proxy-health), run as the node runs them: a
subprocess on free local ports, reading a renderer input made with proxier.rules_input and an
unready pods file, with a stand-in iptables that has or lacks the canary chain. What it counts
(proxier.health_checks) and how the unready file reads (proxier.parse_unready) are tested
directly first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from podnet import kubeproxy, proxier
from podnet.proxier import Endpoint, Options, ServicePort

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "roles" / "kube_proxy" / "files" / "podnet-proxy-health"
NODE = "n1"
CHECK = 0.2  # seconds between the tool's rule checks (1 on a node): fast tests


def endpoint(pod: str, ip: str, node: str, port: int = 8080) -> Endpoint:
    return Endpoint(ip=ip, port=port, node=node, pod=f"demo/{pod}")


EPS = (endpoint("a", "10.244.1.2", NODE), endpoint("b", "10.244.1.3", NODE),
       endpoint("c", "10.244.2.2", "n2"))


def local_service(name: str, hc_port: int, eps: tuple[Endpoint, ...] = EPS
                  ) -> list[ServicePort]:
    """A Local-policy LoadBalancer Service with two ports (TCP and UDP) over the same pods."""
    base = ServicePort(namespace="demo", name=name, port_name="http", protocol="TCP",
                       cluster_ip="10.96.0.20", port=80, endpoints=eps, node_port=30001,
                       lb_ips=("192.168.56.240",), health_check_node_port=hc_port,
                       external_local=True)
    udp = replace(base, port_name="udp", protocol="UDP", port=8081, node_port=30002,
                  endpoints=tuple(replace(e, port=8081) for e in eps))
    return [base, udp]


# -- what is counted ------------------------------------------------------------------------
def test_a_service_counts_its_ready_pods_on_this_node_once_over_its_ports() -> None:
    checks = proxier.health_checks(local_service("web-lb", 31000), NODE)
    assert checks == [proxier.HealthCheck("demo", "web-lb", 31000, 2)]
    unready = {e for e in EPS if e.pod == "demo/a"}
    services = [replace(s, endpoints=tuple(replace(e, ready=e.ip not in {u.ip for u in unready})
                                           for e in s.endpoints))
                for s in local_service("web-lb", 31000)]
    assert proxier.health_checks(services, NODE)[0].local_endpoints == 1
    assert proxier.health_checks(services, "n2")[0].local_endpoints == 1
    assert proxier.health_checks(services, "n3")[0].local_endpoints == 0


def test_only_local_policy_services_with_a_health_check_port_get_one() -> None:
    cluster = [replace(s, name="web-public", external_local=False, health_check_node_port=0)
               for s in local_service("x", 0)]
    no_port = [replace(s, name="local-no-port", health_check_node_port=0)
               for s in local_service("x", 0)]
    assert proxier.health_checks([*cluster, *no_port], NODE) == []


def test_the_unready_file_reads_as_pod_and_ip_and_names_a_bad_line() -> None:
    text = "# comment\n\ndemo/a 10.244.1.2\nkube-system/dns 10.244.1.9\n"
    assert proxier.parse_unready(text) == {("demo/a", "10.244.1.2"),
                                           ("kube-system/dns", "10.244.1.9")}
    with pytest.raises(ValueError, match=r"^2: 'KUBE-SEP-X' is not 'namespace/name ip'"):
        proxier.parse_unready("demo/a 10.0.0.1\nKUBE-SEP-X\n")


def test_the_node_port_is_kube_proxys() -> None:
    assert kubeproxy.HEALTHZ_PORT == 10256


# -- the servers ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> dict:
        return dict(json.loads(self.body))


def get(port: int, path: str = "/") -> Reply | None:
    """The reply on 127.0.0.1:port, None when nothing listens there."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return Reply(r.status, dict(r.headers), r.read().decode())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read().decode())
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None
        if isinstance(exc.reason, ConnectionResetError):  # as when it came while reading
            raise exc.reason from None
        raise


def closed(port: int) -> bool:
    """Nothing listens on the port (a connection the closing server had accepted but not
    served is reset: then it is still closing)."""
    try:
        return get(port) is None
    except ConnectionResetError:
        return False


def eventually(what: str, check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.05)


class Node:
    """A node's files and a running podnet-proxy-health over them."""

    def __init__(self, tmp: Path, timeout: float = 30.0, pod_state: bool = True) -> None:
        self.tmp = tmp
        # podnet-cni's state folder: two pods running, one starting (no state yet), one torn
        self.pod_state = tmp / "pods"
        for pod, text in (("demo_a", '{"ip": "10.244.0.5"}'), ("demo_b", '{"ip": "10.244.255.1"}'),
                          ("demo_torn", '{"ip": ')):
            (self.pod_state / pod).mkdir(parents=True)
            (self.pod_state / pod / "state.json").write_text(text)
        (self.pod_state / "demo_starting").mkdir()
        self.input, self.unready = tmp / "rules-input.json", tmp / "unready-pods"
        self.rules = tmp / "iptables" / "50-kube-proxy.rules"
        self.applied = tmp / "applied"
        self.canary = tmp / "canary"  # the stand-in iptables has the chain while this exists
        self.port, self.hc1, self.hc2 = free_port(), free_port(), free_port()
        for folder in (self.rules.parent, self.applied, tmp / "bin"):
            folder.mkdir()
        fake = tmp / "bin" / "iptables"
        fake.write_text(f"#!/bin/sh\n[ -e {self.canary} ] && exit 0\n"
                        "echo 'iptables: No chain/target/match by that name.' >&2\nexit 1\n")
        fake.chmod(0o755)
        self.canary.touch()
        self.rules.write_text("*nat\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n")
        shutil.copy(self.rules, self.applied / self.rules.name)
        self.write([*local_service("web-lb", self.hc1), *local_service("far", self.hc2, EPS[2:])])
        env = {**os.environ, "PATH": f"{tmp / 'bin'}:{os.environ['PATH']}",
               "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.log = tmp / "log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [str(TOOL), "serve", str(self.input), str(self.unready), str(self.rules),
                 f"--port={self.port}", "--address=127.0.0.1", f"--timeout={timeout}",
                 f"--applied={self.applied}", f"--interval={CHECK}",
                 *([f"--pod-state={self.pod_state}"] if pod_state else [])],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        eventually("the node server to answer", lambda: self.up(self.port))
        eventually("the health check ports to open", lambda: self.up(self.hc1) and self.up(
            self.hc2))

    def up(self, port: int) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        return get(port, "/healthz") is not None

    def write(self, services: list[ServicePort]) -> None:
        data = proxier.rules_input(services, Options(node_name=NODE, node_ip="192.168.56.11",
                                                     cluster_cidr="10.244.0.0/16"))
        tmp = self.input.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.input)

    def set_unready(self, *lines: str) -> None:
        tmp = self.unready.with_suffix(".tmp")
        tmp.write_text("".join(f"{line}\n" for line in lines))
        tmp.replace(self.unready)

    def local_endpoints(self, port: int) -> int | None:
        reply = get(port)
        return None if reply is None else int(reply.json()["localEndpoints"])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    running = Node(tmp_path)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def steady(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node for the tests that only ask (none changes its files)."""
    running = Node(tmp_path_factory.mktemp("steady"))
    yield running
    running.stop()


JSON_HEADERS = {"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"}


def test_healthz_and_livez_answer_as_kube_proxys_while_the_rules_are_in(steady: Node) -> None:
    node = steady
    healthz, livez = get(node.port, "/healthz"), get(node.port, "/livez")
    assert healthz and livez
    assert (healthz.status, livez.status) == (200, 200), healthz
    for reply in (healthz, livez):
        assert JSON_HEADERS.items() <= reply.headers.items(), reply.headers
        # healthy: kube-proxy reports now as lastUpdated
        assert reply.json()["lastUpdated"] == reply.json()["currentTime"]
        assert reply.json()["currentTime"].endswith(" +0000 UTC")
    assert set(healthz.json()) == {"lastUpdated", "currentTime", "nodeEligible"}
    assert healthz.json()["nodeEligible"] is True
    assert set(livez.json()) == {"lastUpdated", "currentTime"}


def test_other_paths_of_the_node_server_are_404(steady: Node) -> None:
    node = steady
    for path in ("/", "/metrics", "/healthz/x", "/livezz"):
        reply = get(node.port, path)
        assert reply and reply.status == 404, (path, reply)


def test_the_node_server_lists_the_addresses_of_the_pods_running_here(steady: Node) -> None:
    reply = get(steady.port, kubeproxy.PODS_PATH)
    assert reply and reply.status == 200 and reply.json() == {"ips": ["10.244.0.5",
                                                                      "10.244.255.1"]}
    assert JSON_HEADERS.items() <= reply.headers.items()


def test_without_the_pod_state_folder_the_pods_path_is_404(tmp_path: Path) -> None:
    bare = Node(tmp_path, pod_state=False)
    try:
        reply = get(bare.port, kubeproxy.PODS_PATH)
        assert reply and reply.status == 404
    finally:
        bare.stop()


def test_a_service_health_check_answers_its_local_ready_pods(steady: Node) -> None:
    node = steady
    reply = get(node.hc1, "/any/path")
    assert reply and reply.status == 200, reply
    assert JSON_HEADERS.items() <= reply.headers.items(), reply.headers
    # kube-proxy's body, tab-indented as its dedented template prints it
    assert reply.body == ('{\n\t"service": {\n\t\t"namespace": "demo",\n\t\t"name": "web-lb"\n'
                          '\t},\n\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}')
    far = get(node.hc2)  # its one pod runs on n2
    assert far and far.status == 503 and far.json() == {
        "service": {"namespace": "demo", "name": "far"}, "localEndpoints": 0,
        "serviceProxyHealthy": True}, far


def test_it_follows_readiness_without_a_restart(node: Node) -> None:
    node.set_unready("demo/a 10.244.1.2")
    eventually("one pod unready", lambda: node.local_endpoints(node.hc1) == 1)
    assert (r := get(node.hc1)) and r.status == 200
    node.set_unready("demo/a 10.244.1.2", "demo/b 10.244.1.3")
    eventually("both unready", lambda: node.local_endpoints(node.hc1) == 0)
    assert (r := get(node.hc1)) and r.status == 503
    node.set_unready("demo/a 10.244.9.9")  # that pod's old IP: the pod with its new one is ready
    eventually("ready again", lambda: node.local_endpoints(node.hc1) == 2)
    node.set_unready("demo/b 10.244.1.3")
    eventually("b unready", lambda: node.local_endpoints(node.hc1) == 1)
    node.unready.unlink()  # no file: every pod ready
    eventually("no unready file", lambda: node.local_endpoints(node.hc1) == 2)
    assert node.proc.poll() is None


def test_it_opens_and_closes_ports_as_services_come_and_go(node: Node) -> None:
    hc3 = free_port()
    node.write([*local_service("web-lb", node.hc1), *local_service("new", hc3, EPS[:1])])
    eventually("the new Service's port to open", lambda: get(hc3) is not None)
    assert (r := get(hc3)) and r.status == 200 and r.json()["service"]["name"] == "new"
    assert r.json()["localEndpoints"] == 1
    eventually("the removed Service's port to close", lambda: closed(node.hc2))
    # a Service that loses its local endpoints in the input (moved to another node) answers 503
    node.write([*local_service("web-lb", node.hc1, EPS[2:])])
    eventually("web-lb without local pods", lambda: node.local_endpoints(node.hc1) == 0)
    eventually("new's port to close", lambda: closed(hc3))
    assert (r := get(node.hc1)) and r.status == 503


def test_a_bad_input_or_unready_file_is_logged_and_the_last_state_kept(node: Node) -> None:
    node.set_unready("demo/a 10.244.1.2")
    eventually("one pod unready", lambda: node.local_endpoints(node.hc1) == 1)
    node.input.write_text("{")
    eventually("the bad input logged", lambda: f"{node.input}: Expecting property name"
               in node.log.read_text())
    assert "keeping the last good state (2 health checks)" in node.log.read_text()
    node.write([*local_service("web-lb", node.hc1), *local_service("far", node.hc2, EPS[2:])])
    node.set_unready("KUBE-SEP-OLDSTYLE")  # a good input now, with a bad unready file
    eventually("the bad unready file logged", lambda: f"{node.unready}:1: 'KUBE-SEP-OLDSTYLE'"
               in node.log.read_text())
    assert node.local_endpoints(node.hc1) == 1 and node.local_endpoints(node.hc2) == 0
    node.set_unready("demo/a 10.244.1.2")
    node.input.write_text(json.dumps({"version": 7}))
    eventually("another podnet's input named", lambda: "version: 7 is not 1"
               in node.log.read_text())
    assert node.local_endpoints(node.hc1) == 1 and node.proc.poll() is None
    node.set_unready()
    node.write(local_service("web-lb", node.hc1))  # good again: followed
    eventually("good input read", lambda: node.local_endpoints(node.hc1) == 2)
    eventually("far's port closed", lambda: closed(node.hc2))


def test_without_the_canary_chain_the_proxy_is_unhealthy(node: Node) -> None:
    node.canary.unlink()  # the rules flushed
    eventually("/healthz 503", lambda: (r := get(node.port, "/healthz")) is not None
               and r.status == 503)
    healthz, livez = get(node.port, "/healthz"), get(node.port, "/livez")
    assert healthz and livez and livez.status == 503
    # unhealthy: lastUpdated is when the rules were last applied, not now
    applied = (node.applied / node.rules.name).stat().st_mtime
    assert healthz.json()["lastUpdated"] != healthz.json()["currentTime"]
    assert healthz.json()["lastUpdated"].startswith(time.strftime(
        "%Y-%m-%d %H:%M:%S", time.gmtime(applied)))
    assert healthz.json()["nodeEligible"] is True  # eligible, but not healthy
    service = get(node.hc1)
    assert service and service.status == 503
    assert service.json()["serviceProxyHealthy"] is False
    assert service.json()["localEndpoints"] == 2
    assert "proxy unhealthy: no KUBE-PROXY-CANARY in nat" in node.log.read_text()
    node.canary.touch()  # repaired
    eventually("/healthz 200 again", lambda: (r := get(node.port, "/healthz")) is not None
               and r.status == 200)
    assert (r := get(node.hc1)) and r.status == 200


def test_rules_waiting_unapplied_past_the_timeout_are_unhealthy(node: Node) -> None:
    node.rules.write_text(node.rules.read_text() + "# a newer render\n")
    time.sleep(3 * CHECK)  # checked since: a fresh render is not late yet
    assert (r := get(node.port, "/healthz")) and r.status == 200
    old = time.time() - 60  # written a minute ago, the timeout is 30 s
    os.utime(node.rules, (old, old))
    eventually("/healthz 503", lambda: (r := get(node.port, "/healthz")) is not None
               and r.status == 503)
    time.sleep(3 * CHECK)  # checked again, the same words: logged once
    assert node.log.read_text().count(f"{node.rules} waiting unapplied since") == 1
    shutil.copy(node.rules, node.applied / node.rules.name)  # podnet-iptables applied it
    eventually("/healthz 200", lambda: (r := get(node.port, "/healthz")) is not None
               and r.status == 200)


def test_sigterm_closes_every_port_and_exits_0(node: Node) -> None:
    assert node.stop() == 0
    assert [get(p) for p in (node.port, node.hc1, node.hc2)] == [None, None, None]
    assert node.log.read_text().rstrip().endswith("podnet-proxy-health: stopped")


def test_a_taken_node_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(TOOL), "serve", str(tmp_path / "in"), str(tmp_path / "un"),
             str(tmp_path / "rules"), f"--port={port}", "--address=127.0.0.1"],
            capture_output=True, text=True, timeout=10, check=False,
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}"
                 f"{os.environ.get('PYTHONPATH', '')}"})
    assert done.returncode == 1, done
    assert f"cannot open the node health server on 127.0.0.1:{port}" in done.stdout, done
