"""Endpoint readiness: podnet-endpoints' probe state machine, config reloads and probes against
real local servers, podnet-iptables' removal of unready endpoints from the Service chains
(pure, and end to end in a throwaway network namespace)."""

from __future__ import annotations

import http.server
import importlib.machinery
import importlib.util
import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from nodekit import sandbox  # the throwaway namespace podnet-iptables' tests use

ROLES = Path(__file__).resolve().parents[1] / "roles"
ENDPOINTS = ROLES / "kube_proxy" / "files" / "podnet-endpoints"
TOOL = ROLES / "pod_network" / "files" / "podnet-iptables"


def load(path: Path) -> ModuleType:
    name = path.name.replace("-", "_")
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


ep = load(ENDPOINTS)
without_unready = load(TOOL).without_unready


def entry(pod: str, ip: str, port: int = 8080, **probe: object) -> dict:
    return {"pod": pod, "ip": ip, "chains": [f"KUBE-SEP-{pod.upper()}"], "udp": [],
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


def by_pod(endpoints: dict) -> dict:  # type: ignore[type-arg]
    return {e.entry["pod"]: e for e in endpoints.values()}


def test_load_keeps_the_state_of_the_same_pod_ip_and_probe(tmp_path: Path) -> None:
    config = tmp_path / "endpoints.json"
    a, b, c = entry("a", "10.0.0.1", failure=1), entry("b", "10.0.0.2", failure=1), entry(
        "c", "10.0.0.3")
    config.write_text(json.dumps([a, b, c]))
    old = ep.load(config, {})
    first = by_pod(old)
    for endpoint in first.values():
        endpoint.observe("down")
    # a backs one more Service now; b's probe changed; c left the file
    a2 = {**a, "chains": [*a["chains"], "KUBE-SEP-NEW"]}
    config.write_text(json.dumps([a2, {**b, "probe": {**b["probe"], "port": 9090}}]))
    second = by_pod(ep.load(config, old))
    assert sorted(second) == ["a", "b"]
    assert second["a"] is first["a"] and not second["a"].ready
    assert second["a"].entry["chains"] == a2["chains"]  # the new chain goes out too
    assert second["b"] is not first["b"]
    assert second["b"].ready and second["b"].failures == 0


def test_load_seeds_new_endpoints_from_what_was_published(tmp_path: Path) -> None:
    config = tmp_path / "endpoints.json"
    a, b = entry("a", "10.0.0.1"), entry("b", "10.0.0.2")
    config.write_text(json.dumps([a, b]))
    got = by_pod(ep.load(config, {}, set(a["chains"])))
    assert not got["a"].ready and got["b"].ready


@pytest.mark.parametrize("text", [None, "[{", "not json"])
def test_load_keeps_the_old_set_when_the_file_is_unreadable(tmp_path: Path,
                                                           text: str | None) -> None:
    config = tmp_path / "endpoints.json"
    if text is not None:
        config.write_text(text)
    old = {"a@10.0.0.1": ep.Endpoint(entry("a", "10.0.0.1"))}
    assert ep.load(config, old) is old


def test_unready_chains_are_those_of_unready_endpoints() -> None:
    up, down = ep.Endpoint(entry("a", "10.0.0.1")), ep.Endpoint(entry("b", "10.0.0.2"))
    down.entry["chains"].append("KUBE-SEP-B2")  # the pod backs two Services
    assert ep.unready_chains({"a": up, "b": down}) == set()
    down.ready = False
    assert ep.unready_chains({"a": up, "b": down}) == {"KUBE-SEP-B", "KUBE-SEP-B2"}


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


def svc_rule(sep: str, ip: str, tail: str) -> str:
    return f'-A KUBE-SVC-X -m comment --comment "ns/svc:p -> {ip}:80"{tail} -j KUBE-SEP-{sep}'


SEPS = {"A": "10.0.0.1", "B": "10.0.0.2", "C": "10.0.0.3"}
AFFINITY = [svc_rule(s, ip, f" -m recent --name KUBE-SEP-{s} --rcheck --seconds 10800 --reap")
            for s, ip in SEPS.items()]
STAT = " -m statistic --mode random --probability "
BALANCE = [svc_rule("A", SEPS["A"], STAT + "0.3333333333"),
           svc_rule("B", SEPS["B"], STAT + "0.5000000000"), svc_rule("C", SEPS["C"], "")]
RULES = "\n".join([
    "*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-SVC-X - [0:0]", ":KUBE-SVC-Y - [0:0]",
    *[f":KUBE-SEP-{s} - [0:0]" for s in [*SEPS, "D"]],
    '-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "ns/svc:p cluster IP" '
    "-m tcp --dport 80 -j KUBE-SVC-X",
    '-A KUBE-SERVICES -d 10.96.0.11/32 -p tcp -m comment --comment "ns/one:p cluster IP" '
    "-m tcp --dport 80 -j KUBE-SVC-Y",
    *AFFINITY, *BALANCE,
    '-A KUBE-SVC-Y -m comment --comment "ns/one:p -> 10.0.0.4:80" -j KUBE-SEP-D',
    *[f'-A KUBE-SEP-{s} -p tcp -m comment --comment "ns/svc:p" -m recent --name KUBE-SEP-{s} '
      f"--set -m tcp -j DNAT --to-destination {ip}:80" for s, ip in SEPS.items()],
    '-A KUBE-SEP-D -p tcp -m comment --comment "ns/one:p" -m tcp -j DNAT '
    "--to-destination 10.0.0.4:80",
    "COMMIT", ""])


def svc_x(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("-A KUBE-SVC-X ")]


def test_an_unready_endpoint_leaves_the_others_renumbered() -> None:
    out = without_unready(RULES, {"KUBE-SEP-A"})
    assert svc_x(out) == [AFFINITY[1], AFFINITY[2],
                          svc_rule("B", SEPS["B"], STAT + "0.5000000000"), BALANCE[2]]


def test_the_unready_endpoint_chain_itself_stays() -> None:
    out = without_unready(RULES, {"KUBE-SEP-A"})
    assert ":KUBE-SEP-A - [0:0]" in out.splitlines()
    assert [x for x in out.splitlines() if x.startswith("-A KUBE-SEP-A ")] == [
        x for x in RULES.splitlines() if x.startswith("-A KUBE-SEP-A ")]


def test_the_last_endpoint_unready_makes_the_one_before_it_last() -> None:
    out = without_unready(RULES, {"KUBE-SEP-C"})
    assert svc_x(out)[2:] == [svc_rule("A", SEPS["A"], STAT + "0.5000000000"),
                              svc_rule("B", SEPS["B"], "")]
    assert svc_x(out)[:2] == AFFINITY[:2]


@pytest.mark.parametrize("unready", [
    {"KUBE-SEP-A", "KUBE-SEP-B", "KUBE-SEP-C"}, set(), {"KUBE-SEP-D"}, {"KUBE-SEP-OTHER"}])
def test_nothing_changes_without_a_ready_endpoint_left_or_an_unready_one(unready: set) -> None:
    assert without_unready(RULES, unready) == RULES  # all (or the only one) unready: fail open


def test_other_chains_are_untouched() -> None:
    out = without_unready(RULES, {"KUBE-SEP-B"})
    assert [x for x in out.splitlines() if not x.startswith("-A KUBE-SVC-X ")] == [
        x for x in RULES.splitlines() if not x.startswith("-A KUBE-SVC-X ")]


# how iptables-save prints AFFINITY[0]
AFFINITY_SAVED = svc_rule("A", "10.0.0.1", " -m recent --rcheck --seconds 10800 --reap --name "
                          "KUBE-SEP-A --mask 255.255.255.255 --rsource")
needs_sandbox = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("iptables-restore") or not shutil.which("unshare"),
    reason="needs root, unshare and iptables (make setup installs them)")


@needs_sandbox
def test_apply_leaves_unready_endpoints_out_until_they_are_ready(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "50-kp.rules").write_text(RULES)
    (folder / "50-kp.owns").write_text("nat KUBE-SVC- KUBE-SEP-\n")
    run = sandbox(tmp_path, """
echo KUBE-SEP-A > /run/podnet/unready
$TOOL apply $DIR
echo "== unready"; iptables-save -t nat | grep -e '-A KUBE-SVC-X' -e ':KUBE-SEP-A'
echo "== repair"; $TOOL repair $DIR 2>&1; echo "rc=$?"
rm /run/podnet/unready
echo "== ready"; $TOOL apply $DIR; iptables-save -t nat | grep -- '-A KUBE-SVC-X'
""")
    assert run.returncode == 0 and run.stdout.startswith('{"changed": true'), run.stderr
    got = sections(run.stdout)
    assert ":KUBE-SEP-A - [0:0]" in got["unready"]  # the chain stays, nothing jumps to it
    assert not [x for x in got["unready"] if x.endswith("-j KUBE-SEP-A")], got["unready"]
    assert got["unready"][-2].endswith("--probability 0.50000000000 -j KUBE-SEP-B")
    assert got["unready"][-1].endswith('10.0.0.3:80" -j KUBE-SEP-C')  # last, no statistic
    assert got["repair"] == ["rc=0"]  # the snapshot has the rules without A: nothing to repair
    assert got["ready"][0].startswith('{"changed": true')
    assert [x for x in got["ready"] if x.endswith("-j KUBE-SEP-A")] == [
        AFFINITY_SAVED, svc_rule("A", "10.0.0.1", STAT + "0.33333333349")]


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
