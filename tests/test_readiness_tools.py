"""Endpoint readiness on the node: podnet-endpoints' probe state machine, config reloads,
probes against real local servers and how it publishes; podnet-kube-proxy's render step (check
mode, atomic write, validation), and unready endpoints leaving the Service chains end to end in
a throwaway network namespace (render, then podnet-iptables apply). What the renderer leaves
out is tested on proxier itself in test_proxier_readiness.py."""

from __future__ import annotations

import http.server
import importlib.machinery
import importlib.util
import json
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from nodekit import sandbox  # the throwaway namespace podnet-iptables' tests use

from podnet import kubeproxy, proxier
from podnet.proxier import Endpoint as ProxyEndpoint
from podnet.proxier import Options, ServicePort

ROOT = Path(__file__).resolve().parents[1]
ROLES = ROOT / "roles"
ENDPOINTS = ROLES / "kube_proxy" / "files" / "podnet-endpoints"
RENDER = ROLES / "kube_proxy" / "files" / "podnet-kube-proxy"


def load(path: Path) -> ModuleType:
    name = path.name.replace("-", "_")
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


ep = load(ENDPOINTS)
kp = load(RENDER)


def entry(pod: str, ip: str, port: int = 8080, **probe: object) -> dict:
    return {"pod": pod, "ip": ip, "endpoints": [f"ns/svc:p -> {ip}:{port}"], "udp": [],
            "probe": {"kind": "http", "port": port, "path": "/ready", **probe}}


def test_an_endpoint_goes_unready_only_after_failure_failures() -> None:
    endpoint = ep.Endpoint(entry("a", "10.0.0.1", failure=3))
    assert endpoint.ready
    assert [endpoint.observe("HTTP 500") for _ in range(4)] == [False, False, True, False]
    assert not endpoint.ready


def test_a_success_in_between_resets_the_failure_count() -> None:
    endpoint = ep.Endpoint(entry("a", "10.0.0.1", failure=3))
    flips = [endpoint.observe(r) for r in ("down", "down", None, "down", "down", None)]
    assert flips == [False] * 6 and endpoint.ready


def test_an_unready_endpoint_comes_back_after_success_successes() -> None:
    endpoint = ep.Endpoint(entry("a", "10.0.0.1", failure=1, success=2))
    assert endpoint.observe("down") and not endpoint.ready
    flips = [endpoint.observe(r) for r in (None, "down", None, None, None)]
    assert flips == [False, False, False, True, False] and endpoint.ready


def test_the_default_thresholds_are_the_kubelets() -> None:
    endpoint = ep.Endpoint({"pod": "a", "ip": "10.0.0.1", "probe": {"kind": "tcp", "port": 1}})
    assert [endpoint.observe("down") for _ in range(3)] == [False, False, True]
    assert endpoint.observe(None) and endpoint.ready  # one success is enough


def by_pod(endpoints: dict[str, Any]) -> dict[str, Any]:
    return {e.entry["pod"]: e for e in endpoints.values()}


def test_load_keeps_the_state_of_the_same_pod_ip_and_probe() -> None:
    a, b, c = entry("a", "10.0.0.1", failure=1), entry("b", "10.0.0.2", failure=1), entry(
        "c", "10.0.0.3")
    old = ep.load([a, b, c], {})
    first = by_pod(old)
    for endpoint in first.values():
        endpoint.observe("down")
    # a backs one more Service now; b's probe changed; c left the file
    a2 = {**a, "endpoints": [*a["endpoints"], "ns/new:p -> 10.0.0.1:8080"]}
    config = [a2, {**b, "probe": {**b["probe"], "port": 9090}}]
    second = by_pod(ep.load(config, old))
    assert sorted(second) == ["a", "b"]
    assert second["a"] is first["a"] and not second["a"].ready
    assert second["a"].entry["endpoints"] == a2["endpoints"]  # the new one is named too
    assert ep.unready_pods(ep.load(config, old)) == {("a", "10.0.0.1")}  # out of every Service
    assert second["b"] is not first["b"]
    assert second["b"].ready and second["b"].failures == 0


def test_load_seeds_new_endpoints_from_what_was_published() -> None:
    a, b, c = entry("a", "10.0.0.1"), entry("b", "10.0.0.2"), entry("c", "10.0.0.3")
    # c was published unready at another IP: the pod came back with a new one and starts ready
    got = by_pod(ep.load([a, b, c], {}, {("a", "10.0.0.1"), ("c", "10.0.0.9")}))
    assert not got["a"].ready and got["b"].ready and got["c"].ready


@pytest.mark.parametrize("text", [None, "[{", "not json", "[]", '{"pods": 1}',
                                  '{"pods": [], "nodes": []}'])
def test_an_unreadable_config_is_none_and_logged(tmp_path: Path, text: str | None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The caller keeps what it had (run() loads only a config it could read)."""
    config = tmp_path / "endpoints.json"
    if text is not None:
        config.write_text(text)
    assert ep.read_config(config) is None
    assert f"cannot read {config}" in capsys.readouterr().out


def test_a_config_is_its_object(tmp_path: Path) -> None:
    config = tmp_path / "endpoints.json"
    data = {"pods": [entry("a", "10.0.0.1")], "nodes": [], "grace": 5}
    config.write_text(json.dumps(data))
    assert ep.read_config(config) == data


def test_unready_pods_are_those_of_unready_endpoints() -> None:
    up, down = ep.Endpoint(entry("a", "10.0.0.1")), ep.Endpoint(entry("b", "10.0.0.2"))
    down.entry["endpoints"].append("ns/two:p -> 10.0.0.2:8080")  # the pod backs two Services
    assert ep.unready_pods({"a": up, "b": down}) == set()
    down.ready = False
    # the pod and its IP: the renderer leaves its endpoints out of both Services
    # (test_proxier_readiness.py::test_from_input_marks_a_pods_endpoints_in_every_service_unready)
    assert ep.unready_pods({"a": up, "b": down}) == {("b", "10.0.0.2")}


def peer_entry(name: str = "node3", *pods: tuple[str, str], address: str = "127.0.0.1",
               port: int = 1) -> dict:
    return {"name": name, "address": address, "port": port, "path": "/livez",
            "pods": [{"pod": pod, "ip": ip, "udp": [f"{ip}:53"]} for pod, ip in pods]}


def test_a_silent_node_is_not_ready_only_after_the_grace_period() -> None:
    peer = ep.Peer(peer_entry("node3", ("web-1", "10.244.3.5")), now=100.0)
    assert [peer.observe("timed out", t, 5) for t in (101.0, 103.0, 104.9)] == [False] * 3
    assert peer.ready
    assert peer.observe("timed out", 105.0, 5) and not peer.ready
    assert not peer.observe("timed out", 106.0, 5)  # flips once
    assert ep.unready_pods({}, {"node3": peer}) == {("web-1", "10.244.3.5")}
    assert ep.not_ready_nodes({"node3": peer}) == {"node3"}


def test_an_answer_restarts_the_grace_period() -> None:
    peer = ep.Peer(peer_entry(), now=100.0)
    assert not peer.observe("refused", 104.0, 5)
    assert not peer.observe(None, 104.5, 5)  # an HTTP answer of any status
    assert not peer.observe("refused", 109.0, 5) and peer.ready
    assert peer.observe("refused", 109.5, 5) and not peer.ready


def test_a_hanging_heartbeat_does_not_stop_the_clock() -> None:
    """No answer has come back (late): the node is NotReady at seen + grace all the same."""
    peer = ep.Peer(peer_entry(), now=100.0)
    assert not peer.observe(None, 104.9, 5, late=True)
    assert peer.observe(None, 105.0, 5, late=True) and not peer.ready


def test_a_not_ready_node_comes_back_after_answers_in_a_row() -> None:
    peer = ep.Peer(peer_entry(), now=0.0, ready=False)
    flips = [peer.observe(r, t, 5) for t, r in enumerate((None, "refused", None, None, None))]
    assert flips == [False, False, False, True, False] and peer.ready
    assert ep.RECOVERY == 2


def test_load_peers_keeps_state_and_seeds_from_what_was_published() -> None:
    a, b = peer_entry("node2", ("x", "10.244.2.2")), peer_entry("node3", ("y", "10.244.3.3"))
    old = ep.load_peers([a, b], {}, 10.0, {"node3"})
    assert old["node2"].ready and not old["node3"].ready  # a restart keeps a dead node out
    old["node2"].observe("refused", 20.0, 5)
    a2 = peer_entry("node2", ("x", "10.244.2.2"), ("z", "10.244.2.9"))
    moved = {**b, "address": "192.168.56.99"}
    new = ep.load_peers([a2, moved], old, 30.0)
    assert new["node2"] is old["node2"] and not new["node2"].ready
    assert new["node2"].pods() == {("x", "10.244.2.2"), ("z", "10.244.2.9")}
    assert new["node3"] is not old["node3"] and new["node3"].ready and new["node3"].seen == 30.0
    assert ep.load_peers([], new, 40.0) == {}


def test_heartbeat_is_any_http_answer(web: int) -> None:
    assert ep.heartbeat("127.0.0.1", web, "/ok") is None
    assert ep.heartbeat("127.0.0.1", web, "/fail") is None  # 500: a process answered
    why = ep.heartbeat("127.0.0.1", closed_port(), "/livez")
    assert why is not None and "refused" in why.lower()


class Stop(Exception):
    """Ends ep.run()'s loop from a recorder."""


def run_until(tmp_path: Path, config: Path,
              then: Callable[[list[tuple[set, set, list]]], bool]) -> list[tuple[set, set, list]]:
    """ep.run() on CONFIG with a publisher that records each publish (pods, nodes, went) and
    stops once ``then`` (called with the record so far) says so."""
    seen: list[tuple[set, set, list]] = []

    class Recorder:
        unready = tmp_path / "unready"
        nodes = tmp_path / "nodes"

        def publish(self, pods: set, dead_nodes: set, went: list) -> bool:
            seen.append((set(pods), set(dead_nodes), list(went)))
            if then(seen):
                raise Stop
            return True

    with pytest.raises(Stop):
        ep.run(config, Recorder())
    return seen


def test_run_takes_a_silent_nodes_endpoints_out_and_puts_them_back(
        tmp_path: Path, web: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole loop, with a real heartbeat server: node2 answers, node3's port is closed;
    node3's pods are published unready after the grace, and back once it answers."""
    config = tmp_path / "readiness.json"
    dead = closed_port()
    nodes = [peer_entry("node2", ("a", "10.244.2.2"), port=web),
             peer_entry("node3", ("b", "10.244.3.3"), port=dead)]
    config.write_text(json.dumps({"pods": [], "nodes": nodes, "grace": 1}))

    def then(seen: list[tuple[set, set, list]]) -> bool:
        if len(seen) == 2:
            # node3 answers from now on (same node, its heartbeat port now open)
            nodes[1]["port"] = web
            config.write_text(json.dumps({"pods": [], "nodes": nodes, "grace": 1}))
        return len(seen) == 3

    seen = run_until(tmp_path, config, then)
    assert seen[0] == (set(), set(), [])
    assert seen[1][:2] == ({("b", "10.244.3.3")}, {"node3"})
    assert seen[1][2] == [{"pod": "b", "ip": "10.244.3.3", "udp": ["10.244.3.3:53"]}]
    # node3 answered RECOVERY heartbeats in a row: Ready, its pod back in the Services
    assert seen[2][:2] == (set(), set())


def test_run_publishes_a_not_ready_node_that_backs_no_service(tmp_path: Path) -> None:
    """No rule changes, but NODES must still name it (what an operator and verify read)."""
    config = tmp_path / "readiness.json"
    config.write_text(json.dumps({"pods": [], "grace": 1,
                                  "nodes": [peer_entry("node4", port=closed_port())]}))
    seen = run_until(tmp_path, config, lambda seen: bool(seen[-1][1]))
    assert seen[-1][:2] == (set(), {"node4"})


FAKE_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
[ "$(basename "$0")" != "$FAIL" ]
"""


@pytest.mark.parametrize("fail", ["", "podnet-kube-proxy", "podnet-iptables"])
def test_publish_writes_the_pods_then_renders_then_applies(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           fail: str) -> None:
    for name in ("podnet-kube-proxy", "podnet-iptables", "conntrack"):
        tool = tmp_path / "bin" / name
        tool.parent.mkdir(exist_ok=True)
        tool.write_text(FAKE_TOOL)
        tool.chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setenv("FAIL", fail)
    rules = tmp_path / "iptables" / "50-kube-proxy.rules"
    publisher = ep.Publisher(tmp_path / "in.json", tmp_path / "run" / "unready", rules,
                             tmp_path / "run" / "nodes")
    gone = {**entry("a", "10.0.0.1"), "udp": ["10.0.0.1:53"]}
    done = publisher.publish({("b", "10.0.0.2"), ("a", "10.0.0.1")}, {"node3", "node2"}, [gone])
    assert done == (fail == "")
    assert (tmp_path / "run" / "unready").read_text() == "a 10.0.0.1\nb 10.0.0.2\n"
    assert (tmp_path / "run" / "nodes").read_text() == "node2\nnode3\n"
    assert ep.read_pods(tmp_path / "run" / "unready") == {("a", "10.0.0.1"), ("b", "10.0.0.2")}
    want = [f"podnet-kube-proxy render {tmp_path}/in.json {tmp_path}/run/unready {rules}",
            f"podnet-iptables apply {rules.parent}",
            "conntrack -D -p udp --reply-src 10.0.0.1 --reply-port-src 53"]
    # a failed step stops there (the next tick publishes again)
    stop = {"": 3, "podnet-kube-proxy": 1, "podnet-iptables": 2}[fail]
    assert calls.read_text().splitlines() == want[:stop]


CODES = {"/ok": 200, "/fail": 500, "/missing": 404, "/moved": 302, "/moved-nowhere": 302}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(CODES.get(self.path, 404))
        if self.path == "/moved":
            self.send_header("Location", "/ok")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("path", "want"), [
    ("/ok", None), ("/fail", "HTTP 500"), ("/missing", "HTTP 404"), ("/moved", None),
    ("/moved-nowhere", None)])
def test_http_probe_status(web: int, path: str, want: str | None) -> None:
    assert ep.probe_once("127.0.0.1", {"kind": "http", "port": web, "path": path}) == want


def test_http_probe_of_a_closed_port_says_why() -> None:
    reason = ep.probe_once("127.0.0.1", {"kind": "http", "port": closed_port(), "path": "/"})
    assert isinstance(reason, str) and "refused" in reason.lower(), reason


def test_http_probe_of_a_silent_server_times_out() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)  # connects, never answers
        probe = {"kind": "http", "port": sock.getsockname()[1], "timeout": 0.2}
        reason = ep.probe_once("127.0.0.1", probe)
    assert isinstance(reason, str) and "timed out" in reason, reason


def test_tcp_probe() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        assert ep.probe_once("127.0.0.1", {"kind": "tcp", "port": sock.getsockname()[1]}) is None
    reason = ep.probe_once("127.0.0.1", {"kind": "tcp", "port": closed_port()})
    assert isinstance(reason, str) and "refused" in reason.lower(), reason


OPTS = Options(node_name="me", node_ip="192.168.56.11", cluster_cidr="10.0.0.0/8")
IPS = {"A": "10.0.0.1", "B": "10.0.0.2", "C": "10.0.0.3"}
SVC_X = kubeproxy.chains("ns", "svc", "p", "TCP")["svc"]


def sep(name: str) -> str:
    return kubeproxy.endpoint_chain("ns", "svc", "p", "TCP", IPS[name], 80)


def svc_rule(name: str, tail: str) -> str:
    return (f'-A {SVC_X} -m comment --comment "ns/svc:p -> {IPS[name]}:80"{tail} '
            f"-j {sep(name)}")


def write_input(folder: Path, **options: object) -> Path:
    """The renderer's input for ns/svc:p (three endpoints, ClientIP affinity), as the role
    writes it."""
    svc = ServicePort(namespace="ns", name="svc", port_name="p", protocol="TCP",
                      cluster_ip="10.96.0.10", port=80, affinity_timeout=10800,
                      endpoints=tuple(ProxyEndpoint(ip, 80, "me", pod=f"ns/{n.lower()}")
                                      for n, ip in IPS.items()))
    opts = Options(**{**OPTS.__dict__, **options})
    path = folder / "rules-input.json"
    path.write_text(json.dumps(proxier.rules_input([svc], opts)))
    return path


def test_rendered_is_the_renderers_file_with_the_pods_left_out(tmp_path: Path) -> None:
    source = write_input(tmp_path)
    unready = tmp_path / "unready"
    unready.write_text("ns/a 10.0.0.1\n")
    text = kp.rendered(source, unready)
    services, opts = proxier.from_input(json.loads(source.read_text()), {("ns/a", "10.0.0.1")})
    assert text.endswith(proxier.rules_file(services, opts))
    assert text.startswith("# kube-proxy, iptables mode: 1 service ports, 3 endpoints, 1 not "
                           "ready\n")
    assert sep("A") not in text and sep("B") in text
    none = kp.rendered(source, tmp_path / "missing")  # no file: none unready
    assert sep("A") in none and ", 0 not ready\n" in none


@pytest.mark.parametrize(("content", "message"), [
    ("{", "rules-input.json: Expecting property name"),
    ('{"version": 7}', "rules-input.json: version: 7 is not 1"),
])
def test_rendered_names_a_bad_input(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "rules-input.json").write_text(content)
    with pytest.raises(kp.RenderError, match=message):
        kp.rendered(tmp_path / "rules-input.json", tmp_path / "unready")


def test_a_bad_unready_line_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "unready").write_text("ns/a 10.0.0.1\nKUBE-SEP-OLDSTYLE\n")
    with pytest.raises(kp.RenderError, match=r"unready:2: 'KUBE-SEP-OLDSTYLE' is not "):
        kp.read_unready(tmp_path / "unready")


# how iptables-save prints the affinity rule of A
AFFINITY_SAVED = svc_rule("A", " -m recent --rcheck --seconds 10800 --reap --name "
                          f"{sep('A')} --mask 255.255.255.255 --rsource")
STAT = " -m statistic --mode random --probability "
needs_sandbox = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("iptables-restore") or not shutil.which("unshare"),
    reason="needs root, unshare and iptables (make setup installs them)")
# the tool runs under the system python, which finds podnet through PYTHONPATH here (on a node,
# in ../lib/podnet beside it); what PYTHONPATH held stays (make unit's coverage hook measures it)
KP = f"PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}} {RENDER}"


@needs_sandbox
def test_render_writes_atomically_only_on_change_and_check_writes_nothing(tmp_path: Path
                                                                          ) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    source = write_input(tmp_path)
    run = sandbox(tmp_path, f"""
U=/run/podnet/unready-pods; R=$DIR/50-kp.rules
{KP} render {source} $U $R; stat -c 'inode=%i' $R
{KP} render {source} $U $R; stat -c 'inode=%i' $R
echo "ns/b 10.0.0.2" > $U
cp $R $DIR/../before
{KP} render {source} $U $R --check; cmp -s $R $DIR/../before && echo same
{KP} render {source} $U $R; stat -c 'inode=%i' $R; ls -a $DIR
""")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    first, second, check, again = (json.loads(x) for x in lines if x.startswith("{"))
    inodes = [x for x in lines if x.startswith("inode=")]
    assert first == {"changed": True} and second == {"changed": False}
    assert inodes[0] == inodes[1]  # nothing to change: the file is not touched
    assert check == {"changed": True} and "same" in lines  # --check wrote nothing
    assert again == {"changed": True} and inodes[2] != inodes[1]  # renamed over the old file
    assert sorted(x for x in lines[lines.index(inodes[2]) + 1:]) == [".", "..", "50-kp.rules"]
    text = (folder / "50-kp.rules").read_text()
    assert sep("B") not in text and "1 not ready" in text


@needs_sandbox
def test_a_render_iptables_refuses_leaves_the_old_file(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "50-kp.rules").write_text("old\n")
    source = write_input(tmp_path, masquerade_mark="0xnotamark")
    run = sandbox(tmp_path, f"""
{KP} render {source} /run/podnet/unready-pods $DIR/50-kp.rules; echo rc=$?
ls -a $DIR
""")
    assert "rc=1" in run.stdout, run.stdout + run.stderr
    assert "50-kp.rules: iptables-restore --test refused the rendered rules, the old file " \
           "stays:" in run.stderr, run.stderr
    assert (folder / "50-kp.rules").read_text() == "old\n"
    assert run.stdout.split("rc=1\n")[1].split() == [".", "..", "50-kp.rules"]  # no temp left


@needs_sandbox
def test_unready_endpoints_leave_the_applied_rules_until_they_are_ready(tmp_path: Path
                                                                        ) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "50-kp.owns").write_text("nat KUBE-SVC- KUBE-SEP-\n")
    source = write_input(tmp_path)
    render = f"{KP} render {source} /run/podnet/unready-pods $DIR/50-kp.rules >/dev/null"
    run = sandbox(tmp_path, f"""
{render}; $TOOL apply $DIR >/dev/null
echo "ns/a 10.0.0.1" > /run/podnet/unready-pods
{render}; $TOOL apply $DIR
echo "== unready"; iptables-save -t nat | grep -e '-A {SVC_X}' -e ':KUBE-SEP-'
echo "== repair"; $TOOL repair $DIR 2>&1; echo "rc=$?"
rm /run/podnet/unready-pods
echo "== ready"; {render}; $TOOL apply $DIR; iptables-save -t nat | grep -- '-A {SVC_X}'
""")
    assert run.returncode == 0 and run.stdout.startswith('{"changed": true'), run.stderr
    got = sections(run.stdout)
    # the unready endpoint's chain is no longer written, so it goes as a stale chain, and
    # nothing jumps to it
    assert f":{sep('A')} - [0:0]" not in got["unready"], got["unready"]
    assert f":{sep('B')} - [0:0]" in got["unready"], got["unready"]
    assert not [x for x in got["unready"] if x.endswith(f"-j {sep('A')}")], got["unready"]
    jumps = [x for x in got["unready"] if not x.startswith(":") and "-m recent" not in x
             and "-j KUBE-SEP-" in x]
    assert jumps[0].endswith(f"--probability 0.50000000000 -j {sep('B')}"), jumps
    assert jumps[1] == svc_rule("C", ""), jumps  # last, no statistic
    assert got["repair"] == ["rc=0"]  # the snapshot has the rules without A: nothing to repair
    assert got["ready"][0].startswith('{"changed": true')
    assert [x for x in got["ready"] if x.endswith(f"-j {sep('A')}")] == [
        AFFINITY_SAVED, svc_rule("A", STAT + "0.33333333349")]
def sections(out: str) -> dict[str, list[str]]:
    """The output lines after each ``== name`` marker."""
    got: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in out.splitlines():
        if line.startswith("== "):
            lines = got.setdefault(line[3:], [])
        else:
            lines.append(line)
    return got
