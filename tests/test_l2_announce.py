"""l2 mode's keepalived configuration per node (podnet/l2announce.py and the l2_announce role's
template): one VRRP instance per LoadBalancer address, the VRRP id of the plan, the priority of
the node's place in the address's ranking, unicast peers, the health check of the policy; and
the health check script against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule
from modelkit import deployment, make_plan, service

from podnet import l2announce, loadbalancer
from podnet.paths import PATHS

ROLE = Path(__file__).resolve().parents[1] / "roles" / "l2_announce"
LOCAL = "  type: LoadBalancer\n  externalTrafficPolicy: Local\n"
CLUSTER = "  type: LoadBalancer\n"
TEXT = (deployment("web") + service("local", selector="web", body=LOCAL)
        + service("public", selector="web", body=CLUSTER)
        + service("plain", selector="web", body="  type: NodePort\n"))
L2 = {"podnet_lb_mode": "l2"}


def lb_config(variables: dict[str, Any] | None = None, text: str = TEXT) -> dict[str, Any]:
    return loadbalancer.config(make_plan(text, L2 if variables is None else variables))


def templates() -> jinja2.Environment:
    """The role's templates, rendered as Ansible renders them (trim_blocks, its filters)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        autoescape=False,  # noqa: S701 - keepalived's config and a systemd unit, not HTML
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True)
    env.filters.update(FilterModule().filters())
    return env


def render(lb: dict[str, Any], node: str, interface: str = "ens3") -> str:
    """The role's template as the role renders it on ``node`` (its defaults, the plan's paths)."""
    env = templates()
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
    variables.update(ansible_managed="managed by podnet",
                     __l2_announce=l2announce.node_config(lb, node),
                     __l2_announce_interface=interface,
                     __l2_announce_paths=PATHS.as_dict())
    return env.get_template("etc/podnet/l2-announce/keepalived.conf.j2").render(variables)


def blocks(text: str, kind: str) -> dict[str, str]:
    """keepalived's ``kind NAME { ... }`` blocks by name (the body up to its closing brace at
    the start of a line)."""
    return dict(re.findall(rf"^{kind} (\S+) \{{\n(.*?)^\}}", text, re.M | re.S))


def value(body: str, key: str) -> str:
    found = re.search(rf"^\s+{key} (.+)$", body, re.M)
    assert found, f"no {key} in\n{body}"
    return found.group(1).strip()


@pytest.mark.parametrize("node", ["node1", "node2", "node3"])
def test_each_address_is_one_instance_with_its_vrid_priority_peers_and_address(node: str) -> None:
    lb = lb_config()
    found = l2announce.read_instances(render(lb, node))
    addresses = {a["address"]: a for a in lb["addresses"]}
    assert len(addresses) == 2
    assert sorted(found) == sorted(l2announce.instance_name(a) for a in addresses)
    nodes = {n["name"]: n["address"] for n in lb["nodes"]}
    for address, a in addresses.items():
        got = found[l2announce.instance_name(address)]
        assert got["vrid"] == str(a["vrid"])
        # first in the ranking: 254; every next node 50 less (3 nodes: 254, 204, 154)
        assert got["priority"] == str(254 - 50 * a["ranking"].index(node))
        assert got["state"] == "BACKUP"  # all start equal: priority decides, preempting
        assert got["nopreempt"] is False
        assert got["interface"] == "ens3"
        assert got["src"] == nodes[node]
        assert got["peers"] == sorted(ip for name, ip in nodes.items() if name != node)
        assert got["addresses"] == [f"{address}/32 dev ens3"]
        assert got["track"] == [l2announce.instance_name(address)]
        assert got["advert_int"] == "0.2"
    # what verify compares the nodes' files with says the same
    expected = l2announce.expected_instances(l2announce.node_config(lb, node), "ens3",
                                             PATHS.lb_check)
    assert {k: {f: v[f] for f in expected[k]} for k, v in found.items()} == expected


def test_every_address_has_one_top_node_the_first_of_its_ranking() -> None:
    lb = lb_config()
    for a in lb["addresses"]:
        name = l2announce.instance_name(a["address"])
        priorities = {node: int(l2announce.read_instances(render(lb, node))[name]["priority"])
                      for node in ("node1", "node2", "node3")}
        assert len(set(priorities.values())) == 3, priorities  # no tie: no election by address
        assert sorted(priorities, key=priorities.__getitem__, reverse=True) == a["ranking"]


def test_the_check_asks_the_health_server_of_the_policy_on_the_node() -> None:
    lb = lb_config()
    plan = make_plan(TEXT, L2)
    hcnp = plan.service("default/local").health_check_node_port
    scripts = blocks(render(lb, "node2"), "vrrp_script")
    local = scripts[l2announce.instance_name(plan.service("default/local").lb_ip or "")]
    public = scripts[l2announce.instance_name(plan.service("default/public").lb_ip or "")]
    # Local: the Service's healthCheckNodePort (only a node with a ready local endpoint passes)
    assert value(local, "script") == f'"{PATHS.lb_check} {hcnp} /"'
    # Cluster: kube-proxy's node server
    assert value(public, "script") == f'"{PATHS.lb_check} 10256 /healthz"'
    for body in (local, public):
        assert (value(body, "interval"), value(body, "fall"), value(body, "rise")) \
            == ("1", "2", "2")


def test_checks_run_as_root_from_root_owned_files_and_vrrp_is_version_3() -> None:
    text = render(lb_config(), "node1")
    (body,) = re.findall(r"^global_defs \{\n(.*?)^\}", text, re.M | re.S)
    assert value(body, "router_id") == "node1"
    assert re.search(r"^\s+enable_script_security$", body, re.M)
    assert value(body, "script_user") == "root"
    assert value(body, "vrrp_version") == "3"  # sub-second advert_int needs it
    assert value(body, "vrrp_garp_master_repeat") == "3"
    assert text.startswith("#")  # ansible_managed, commented


def test_the_unit_runs_podnets_config_with_its_own_pid_files() -> None:
    unit = templates().get_template("etc/systemd/system/podnet-keepalived.service.j2").render(
        ansible_managed="managed", __l2_announce_paths=PATHS.as_dict())
    start = value(unit.replace("ExecStart=", "  ExecStart "), "ExecStart")
    assert f"--use-file={PATHS.keepalived_conf}" in start.split()
    assert "--vrrp" in start.split() and "--dont-fork" in start.split()
    assert all(a.split("=", 1)[1].startswith("/run/podnet-keepalived/")
               for a in start.split() if a.startswith(("--pid=", "--vrrp_pid=")))


@pytest.mark.parametrize("variables, text, why", [
    ({}, TEXT, "cloud mode"),
    (L2, deployment("web") + service("plain", selector="web", body="  type: NodePort\n"),
     "no LoadBalancer address"),
])
def test_nothing_is_announced_outside_l2_mode_or_without_addresses(
        variables: dict[str, Any], text: str, why: str) -> None:
    assert l2announce.node_config(lb_config(variables, text), "node1")["enabled"] is False, why


def test_a_host_that_is_not_a_node_announces_nothing() -> None:
    answer = l2announce.node_config(lb_config(), "lb")
    assert answer["enabled"] is False and answer["address"] is None


@pytest.mark.parametrize("nodes, step", [(1, 50), (2, 50), (3, 50), (6, 50), (7, 42),
                                         (100, 2), (254, 1)])
def test_priorities_are_spread_as_far_as_the_nodes_allow(nodes: int, step: int) -> None:
    assert l2announce.priority_step(nodes) == step
    assert 254 - (nodes - 1) * step >= 1  # the last node keeps a valid priority


def test_more_nodes_than_priorities_is_an_error_naming_the_fix() -> None:
    lb = lb_config()
    lb["nodes"] = [{"name": f"n{i}", "address": f"10.0.{i // 250}.{i % 250 + 1}"}
                   for i in range(255)]
    with pytest.raises(ValueError, match=r"255 nodes.*at most 254.*podnet_lb_mode cloud"):
        l2announce.node_config(lb, "n0")


def test_a_vrid_outside_vrrps_range_is_an_error_naming_the_pool() -> None:
    lb = lb_config()
    lb["addresses"][0]["vrid"] = 256
    with pytest.raises(ValueError, match=r"VRRP id 256 is outside 1-255.*podnet_lb_pool"):
        l2announce.node_config(lb, "node1")


def test_stray_addresses_are_the_pools_32s_on_the_interface_only() -> None:
    lb = lb_config()
    listing = [{"ifname": "ens3", "addr_info": [
        {"family": "inet", "local": "192.168.56.11", "prefixlen": 24},
        {"family": "inet", "local": "192.168.56.241", "prefixlen": 32},
        {"family": "inet", "local": "192.168.56.240", "prefixlen": 32},
        {"family": "inet", "local": "192.168.56.250", "prefixlen": 24},  # not a /32: not ours
        {"family": "inet", "local": "10.9.9.9", "prefixlen": 32},  # outside the pool
    ]}]
    assert l2announce.stray_addresses(lb, listing) == ["192.168.56.240", "192.168.56.241"]


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_port() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_check_passes_on_200_and_fails_on_503_and_on_a_closed_port(health_port: int) -> None:
    check = str(ROLE / "files" / "lb-check.sh")

    def rc(*argv: str) -> int:
        return subprocess.run([check, *argv], capture_output=True, timeout=10).returncode
    assert rc(str(health_port), "/healthz") == 0
    assert rc(str(health_port), "/") != 0  # 503: no ready local endpoint
    with socket_closed() as port:
        assert rc(str(port), "/healthz") != 0
    assert rc(str(health_port)) == 2  # usage


class socket_closed:
    """A port on 127.0.0.1 that nothing listens on."""

    def __enter__(self) -> int:
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
