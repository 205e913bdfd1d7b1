"""podnet-cloud-lb (roles/external_lb): the health checks' rise/fall, the config's checks, the ip
commands it builds from a state, what it reads back from the kernel (a fake ``ip``), and the
marks it shares with reset. No root needed."""

from __future__ import annotations

import copy
import http.server
import importlib.machinery
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from podnet import hostchanges

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "roles/external_lb/files/podnet-cloud-lb"


def load_tool() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("podnet_cloud_lb", str(TOOL))
    spec = importlib.util.spec_from_loader("podnet_cloud_lb", loader)
    assert spec
    module = importlib.util.module_from_spec(spec)
    sys.modules["podnet_cloud_lb"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


lb = load_tool()

CONFIG: dict[str, Any] = {
    "version": 1,
    "check": {"interval": 0.5, "timeout": 0.5, "rise": 2, "fall": 3},
    "nexthops": {"resilient": True, "buckets": 64, "idle_timer": 10},
    "nodes": [{"name": "node1", "address": "192.168.56.11"},
              {"name": "node2", "address": "192.168.56.12"},
              {"name": "node3", "address": "192.168.56.13"}],
    "addresses": [
        {"address": "192.168.56.240", "service": "demo/web-lb", "policy": "Local",
         "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                   {"name": "udp", "port": 8081, "protocol": "UDP"}],
         "check": {"port": 32579, "path": "/"}},
        {"address": "192.168.56.241", "service": "demo/web-public", "policy": "Cluster",
         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
         "check": {"port": 10256, "path": "/healthz"}},
    ],
}
ALL = {"192.168.56.240": ["node1", "node2", "node3"], "192.168.56.241": ["node1", "node2", "node3"]}


def cfg(**changes: Any) -> Any:
    data = copy.deepcopy(CONFIG)
    data.update(changes)
    return lb.parse_config(data)


# -- health ---------------------------------------------------------------------------------
def test_the_first_answer_decides() -> None:
    for ok in (True, False):
        h = lb.Health(rise=2, fall=3)
        assert h.observe(ok, "x") and h.healthy is ok


def test_a_node_falls_after_fall_failures_in_a_row() -> None:
    h = lb.Health(rise=2, fall=3)
    h.observe(True, "HTTP 200")
    assert [h.observe(False, "HTTP 503") for _ in range(3)] == [False, False, True]
    assert h.healthy is False and h.last == "HTTP 503"


def test_a_success_between_failures_starts_the_count_again() -> None:
    h = lb.Health(rise=2, fall=3)
    h.observe(True, "HTTP 200")
    for ok in (False, False, True, False, False):
        assert not h.observe(ok, "")
    assert h.healthy is True
    assert h.observe(False, "")


def test_a_node_rises_after_rise_answers_in_a_row() -> None:
    h = lb.Health(rise=2, fall=3)
    h.observe(False, "refused")
    assert [h.observe(True, "HTTP 200") for _ in range(2)] == [False, True]
    assert h.healthy is True


# -- the probe against real servers -----------------------------------------------------------
@pytest.fixture()
def server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_the_probe_is_healthy_only_on_200(server: int) -> None:
    assert lb.probe("127.0.0.1", lb.Check(server, "/healthz"), 1.0) == (True, "HTTP 200")
    assert lb.probe("127.0.0.1", lb.Check(server, "/"), 1.0) == (False, "HTTP 503")


def test_the_probe_fails_on_a_closed_port_and_on_silence() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    ok, why = lb.probe("127.0.0.1", lb.Check(port, "/"), 1.0)
    assert not ok and "refused" in why.lower()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts, never answers
    try:
        ok, why = lb.probe("127.0.0.1", lb.Check(silent.getsockname()[1], "/"), 0.2)
        assert not ok and why == "timed out after 0.2s"
    finally:
        silent.close()


# -- the config --------------------------------------------------------------------------------
def test_a_good_config_is_typed() -> None:
    c = cfg()
    assert [n.name for n in c.nodes] == ["node1", "node2", "node3"]
    assert c.addresses[0].ports == (("tcp", 80), ("udp", 8081))
    assert c.addresses[1].check == lb.Check(10256, "/healthz")
    assert c.timing == lb.Timing(0.5, 0.5, 2, 3) and c.resilient and c.buckets == 64


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("nodes"), "config.nodes: missing"),
    (lambda d: d.update(version=2), "config.version: 2 is not 1"),
    (lambda d: d["check"].update(timeout=1.0), "config.check.timeout: 1.0 must be above 0 and "
     "at most 0.5"),
    (lambda d: d["check"].update(rise=0), "config.check.rise: 0 must be above 0"),
    (lambda d: d["check"].update(fall="3"), "config.check.fall: '3' is not a int"),
    (lambda d: d["nexthops"].update(resilient="yes"), "config.nexthops.resilient: 'yes' is not "
     "a bool"),
    (lambda d: d["nexthops"].update(buckets=0), "config.nexthops.buckets: 0 must be 1-65535"),
    (lambda d: d["nodes"][1].update(address="node2"), "config.nodes[1].address: 'node2' is not "
     "an IPv4 address"),
    (lambda d: d.update(nodes=[]), "config.nodes: empty"),
    (lambda d: d["nodes"][2].update(address="10.168.56.11"), "share their low 24 bits"),
    (lambda d: d["addresses"][0]["ports"][1].update(protocol="ICMP"),
     "config.addresses[0].ports[1].protocol: 'ICMP' is not one of TCP, UDP, SCTP"),
    (lambda d: d["addresses"][1]["ports"][0].update(port=70000),
     "config.addresses[1].ports[0].port: 70000 is not a port"),
    (lambda d: d["addresses"][1]["check"].update(path="healthz"),
     "config.addresses[1].check.path: 'healthz' must begin with /"),
    (lambda d: d["addresses"][1].update(address="192.168.56.240"), "listed twice"),
])
def test_a_bad_config_names_the_field(change: Any, message: str) -> None:
    data = copy.deepcopy(CONFIG)
    change(data)
    with pytest.raises(lb.ConfigError) as err:
        lb.parse_config(data)
    assert message in str(err.value)


def test_validate_names_the_file_and_the_field(tmp_path: Path) -> None:
    bad = copy.deepcopy(CONFIG)
    bad["check"]["interval"] = -1
    path = tmp_path / "cloud-lb.json"
    path.write_text(json.dumps(bad))
    proc = subprocess.run([sys.executable, str(TOOL), "validate", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"podnet-cloud-lb: {path}: config.check.interval: -1.0 " \
        "must be above 0"
    path.write_text("{not json")
    proc = subprocess.run([sys.executable, str(TOOL), "validate", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "not JSON" in proc.stderr
    path.write_text(json.dumps(CONFIG))
    assert subprocess.run([sys.executable, str(TOOL), "validate", str(path)],
                          check=False).returncode == 0


# -- the commands built from a state -------------------------------------------------------------
NH = {n: lb.NODE_NH_BASE | a for n, a in (("node1", 0xA8380B), ("node2", 0xA8380C),
                                           ("node3", 0xA8380D))}
G240, G241 = lb.GROUP_NH_BASE | 0xA838F0, lb.GROUP_NH_BASE | 0xA838F1


def test_from_nothing_the_routes_come_before_the_rules_and_the_local_rule_moves_last() -> None:
    c = cfg()
    cmds = [" ".join(a[1:]) for a in lb.commands(lb.desired(c, ALL), lb.Kernel(), c, "eth0")]
    group = f"{NH['node1']}/{NH['node2']}/{NH['node3']}"
    assert cmds == [
        "address add 192.168.56.240/32 dev lo label lo:podnetlb",
        "address add 192.168.56.241/32 dev lo label lo:podnetlb",
        f"nexthop replace id {NH['node1']} via 192.168.56.11 dev eth0 protocol 153",
        f"nexthop replace id {NH['node2']} via 192.168.56.12 dev eth0 protocol 153",
        f"nexthop replace id {NH['node3']} via 192.168.56.13 dev eth0 protocol 153",
        f"nexthop replace id {G240} group {group} type resilient buckets 64 idle_timer 10 "
        "protocol 153",
        f"nexthop replace id {G241} group {group} type resilient buckets 64 idle_timer 10 "
        "protocol 153",
        f"route replace 192.168.56.240/32 table 153 protocol 153 nhid {G240}",
        f"route replace 192.168.56.241/32 table 153 protocol 153 nhid {G241}",
        "rule add pref 100 iif eth0 to 192.168.56.240/32 ipproto tcp dport 80 lookup 153 "
        "protocol 153",
        "rule add pref 100 iif eth0 to 192.168.56.240/32 ipproto udp dport 8081 lookup 153 "
        "protocol 153",
        "rule add pref 100 iif eth0 to 192.168.56.241/32 ipproto tcp dport 80 lookup 153 "
        "protocol 153",
        "rule add pref 1000 lookup local protocol 153",
        "rule del pref 0 lookup local",
    ]


def test_nothing_is_changed_when_the_kernel_is_as_it_should_be() -> None:
    c = cfg()
    want = lb.desired(c, ALL)
    assert lb.commands(want, copy.deepcopy(want), c, "eth0") == []


def test_a_node_that_fails_its_check_leaves_only_that_address_group() -> None:
    c = cfg()
    have = lb.desired(c, ALL)
    healthy = {**ALL, "192.168.56.240": ["node1", "node3"]}
    cmds = [" ".join(a[1:]) for a in lb.commands(lb.desired(c, healthy), have, c, "eth0")]
    assert cmds == [f"nexthop replace id {G240} group {NH['node1']}/{NH['node3']} type resilient "
                    "buckets 64 idle_timer 10 protocol 153"]


def test_a_new_bucket_count_makes_the_groups_and_routes_again() -> None:
    c = cfg()
    have = lb.desired(c, ALL)
    data = copy.deepcopy(CONFIG)
    data["nexthops"]["buckets"] = 128
    c2 = lb.parse_config(data)
    cmds = [" ".join(a[1:5]) for a in lb.commands(lb.desired(c2, ALL), have, c2, "eth0")]
    assert cmds == [f"nexthop del id {G240}", f"nexthop del id {G241}",
                    f"nexthop replace id {G240}", f"nexthop replace id {G241}",
                    "route replace 192.168.56.240/32 table",
                    "route replace 192.168.56.241/32 table"]
    assert have.groups  # what the caller read is left as it was


def test_no_healthy_node_fails_open_to_all_of_them() -> None:
    c = cfg()
    none = {"192.168.56.240": [], "192.168.56.241": ["node2"]}
    routes = lb.route_nodes(c, none)
    assert [n.name for n in routes["192.168.56.240"]] == ["node1", "node2", "node3"]
    assert [n.name for n in routes["192.168.56.241"]] == ["node2"]


def test_without_resilient_groups_a_multipath_route() -> None:
    data = copy.deepcopy(CONFIG)
    data["nexthops"]["resilient"] = False
    c = lb.parse_config(data)
    want = lb.desired(c, {"192.168.56.240": ["node1", "node2"], "192.168.56.241": ["node3"]})
    assert not want.node_nhs and not want.groups
    cmds = [" ".join(a[1:]) for a in lb.commands(want, lb.Kernel(), c, "eth0")
            if a[1] == "route"]
    assert cmds == [
        "route replace 192.168.56.240/32 table 153 protocol 153 nexthop via 192.168.56.11 dev "
        "eth0 nexthop via 192.168.56.12 dev eth0",
        "route replace 192.168.56.241/32 table 153 protocol 153 via 192.168.56.13 dev eth0"]


def test_a_service_that_went_away_loses_its_rules_route_group_and_address() -> None:
    c = cfg()
    have = lb.desired(c, ALL)
    data = copy.deepcopy(CONFIG)
    data["addresses"] = data["addresses"][1:]
    c2 = lb.parse_config(data)
    cmds = [" ".join(a[1:]) for a in lb.commands(lb.desired(c2, ALL), have, c2, "eth0")]
    assert cmds == [
        "rule del pref 100 iif eth0 to 192.168.56.240/32 ipproto tcp dport 80 lookup 153 "
        "protocol 153",
        "rule del pref 100 iif eth0 to 192.168.56.240/32 ipproto udp dport 8081 lookup 153 "
        "protocol 153",
        "route del 192.168.56.240/32 table 153",
        f"nexthop del id {G240}",
        "address del 192.168.56.240/32 dev lo"]


def test_clean_puts_the_local_rule_back_before_anything_goes() -> None:
    have = lb.desired(cfg(), ALL)
    cmds = [" ".join(a[1:]) for a in lb.clean_commands(have)]
    assert cmds[:2] == ["rule add pref 0 lookup local",
                        "rule del pref 1000 lookup local protocol 153"]
    assert cmds[-2:] == ["address del 192.168.56.240/32 dev lo",
                         "address del 192.168.56.241/32 dev lo"]
    assert len(cmds) == 2 + 3 + 2 + 2 + 3 + 2  # rules, routes, groups, node nexthops, addresses
    assert lb.clean_commands(lb.Kernel()) == []


# -- the kernel read back through a fake ip --------------------------------------------------------
def fake_ip(tmp_path: Path, answers: dict[str, Any]) -> None:
    """An ``ip`` on PATH that prints ``answers[<its arguments>]`` as JSON."""
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    script = tmp_path / "ip"
    script.write_text(f"#!{sys.executable}\nimport json, sys\n"
                      f"a = json.load(open({str(tmp_path / 'answers.json')!r}))\n"
                      "print(json.dumps(a.get(' '.join(sys.argv[1:]), [])))\n")
    script.chmod(0o755)


def test_the_kernel_is_read_back_as_the_commands_left_it(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    group = [{"id": NH["node1"]}, {"id": NH["node3"]}]
    fake_ip(tmp_path, {
        "-j address show dev lo": [{"ifname": "lo", "addr_info": [
            {"family": "inet", "local": "127.0.0.1", "label": "lo"},
            {"family": "inet", "local": "192.168.56.240", "label": "lo:podnetlb"},
            {"family": "inet", "local": "192.168.56.241", "label": "lo:podnetlb"}]}],
        "-j rule show": [
            {"priority": 100, "dst": "192.168.56.240", "iif": "eth0", "ipproto": "tcp",
             "dport": 80, "table": "153", "protocol": "153"},
            {"priority": 100, "dst": "192.168.56.240", "iif": "eth0", "ipproto": "udp",
             "dport": 8081, "table": "153", "protocol": "153"},
            {"priority": 100, "dst": "192.168.56.241", "iif": "eth0", "ipproto": "tcp",
             "dport": 80, "table": "153", "protocol": "153"},
            {"priority": 1000, "src": "all", "table": "local", "protocol": "153"},
            {"priority": 32766, "src": "all", "table": "main"}],
        "-j nexthop show protocol 153": [
            *({"id": NH[n], "gateway": f"192.168.56.1{i + 1}", "dev": "eth0", "protocol": "153"}
              for i, n in enumerate(("node1", "node2", "node3"))),
            *({"id": g, "group": group, "type": "resilient", "protocol": "153",
               "resilient_args": {"buckets": 64, "idle_timer": 10}} for g in (G240, G241))],
        "-j route show table 153 protocol 153": [
            {"dst": "192.168.56.240", "nhid": G240, "protocol": "153"},
            {"dst": "192.168.56.241", "nhid": G241, "protocol": "153"}],
    })
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    have = lb.read_kernel()
    c = cfg()
    healthy = {"192.168.56.240": ["node1", "node3"], "192.168.56.241": ["node1", "node3"]}
    assert lb.commands(lb.desired(c, healthy), have, c, "eth0") == []
    # node2 is back: only the groups change
    cmds = lb.commands(lb.desired(c, ALL), have, c, "eth0")
    assert [a[1:4] for a in cmds] == [["nexthop", "replace", "id"]] * 2
    assert not have.local_at_0 and have.local_moved


# -- the marks reset looks for ---------------------------------------------------------------------
def test_the_tool_marks_its_state_as_reset_looks_for_it() -> None:
    assert (lb.PROTO, lb.TABLE, lb.LABEL) == (hostchanges.CLOUD_LB_PROTO,
                                              hostchanges.CLOUD_LB_TABLE,
                                              hostchanges.CLOUD_LB_LABEL)
    assert str(lb.SAVED) in hostchanges.TOOL_STATE
    assert TOOL.name == hostchanges.CLOUD_LB_TOOL
    unit = ROOT / "roles/external_lb/templates/etc/systemd/system" / \
        f"{hostchanges.CLOUD_LB_UNIT}.j2"
    assert unit.exists()
    assert hostchanges.CLOUD_LB_UNIT in hostchanges.node_catalogue(
        hostchanges.inputs({}))["units"]["first"]


def test_a_new_address_is_announced_by_gratuitous_arp(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, bytes]] = []

    class FakeSocket:
        def __init__(self, family: int, kind: int) -> None:
            assert (family, kind) == (socket.AF_PACKET, socket.SOCK_RAW)

        def __enter__(self) -> FakeSocket:
            return self

        def __exit__(self, *args: object) -> None:
            pass

        def bind(self, where: tuple[str, int]) -> None:
            self.interface = where[0]

        def send(self, frame: bytes) -> None:
            sent.append((self.interface, frame))

    monkeypatch.setattr(lb.socket, "socket", FakeSocket)
    monkeypatch.setattr(lb.time, "sleep", lambda _: None)
    lb.gratuitous_arp("lo", "192.168.56.241", count=2)
    mac = bytes(6)  # lo's address
    ip = socket.inet_aton("192.168.56.241")
    want = (b"\xff" * 6 + mac + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01"
            + mac + ip + bytes(6) + ip)
    assert sent == [("lo", want), ("lo", want)]
