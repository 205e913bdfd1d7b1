"""A converge with unchanged inputs repairs drift.

changed=0 must mean "nothing was wrong", not "nothing was looked at": the sync modules compare
every file, unit, sysctl, route, rule and pod sandbox with what the plan wants on every run.
Here the lab is broken in one kind of way per test (spread over the nodes so that one converge
repairs them all), converged once with the same manifests, and each test proves its repair:
the thing is back and the behaviour that depends on it works. A second converge must then
find nothing left to do. These change the lab, so they run after the read-only suites.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import targets
from conftest import (
    assert_restored,
    container_units,
    converge,
    http_port,
    in_pod,
    lab_state,
    manifests_dir,
    observed,
    plan,
    pod_id,
    run,
    running,
    target,
)

pytestmark = pytest.mark.principle("lifecycle")

RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.MULTILINE)
FORWARD = "net.ipv4.ip_forward"


def recap(done: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """{host: changed} from a playbook's PLAY RECAP; fails on an unreachable or failed host."""
    rows = RECAP.findall(done.stdout)
    assert rows, done.stdout[-2000:] + done.stderr[-2000:]
    bad = [r[0] for r in rows if int(r[3]) or int(r[4])]
    assert not bad, f"failed or unreachable: {bad}\n{done.stdout[-3000:]}"
    return {r[0]: int(r[2]) for r in rows}


def server_on(node: str) -> str:
    return next(p.key for p in plan().pods_on(node) if http_port(p.key))


def assert_answers(key: str) -> None:
    """The pod answers HTTP on its IP, from its node, with its own hostname."""
    ip = observed()[key]["ip"]
    got = run(plan().pod(key).node, "curl", "-s", "--max-time", "5",
              f"http://{ip}:{http_port(key)}/hostname")
    if got.rc != 0 or got.stdout.strip() != plan().pod(key).host_name:
        state = run(plan().pod(key).node, "sh", "-c",
                    f"ip neigh show {ip}; systemctl status --no-pager -n 5 "
                    f"podnet-sandbox@{pod_id(key)} {' '.join(container_units(key))}")
        raise AssertionError(f"{key} does not answer: {got}\n{state}")


@dataclass
class Drift:
    """What was broken where, what it was before, and the converge that had to repair it."""

    nodes: list[str]
    before: dict[str, str] = field(default_factory=dict)
    dry_run: dict[str, int] = field(default_factory=dict)
    still_broken: list[str] = field(default_factory=list)
    changed: dict[str, int] = field(default_factory=dict)
    second: dict[str, int] = field(default_factory=dict)


def must(node: str, *argv: str) -> str:
    got = run(node, *argv)
    assert got.rc == 0, got
    return got.stdout


@pytest.fixture(scope="module")
def drift() -> Iterator[Drift]:
    # the damage is spread over three nodes; the second and third run a test server
    a, b, c = target(targets.drift_nodes)
    d = Drift(nodes=[a, b, c])
    lab = lab_state()
    pods = running()
    d.before = {
        "netns_pod": server_on(b), "netns_ip": pods[server_on(b)]["ip"],
        "stopped_pod": server_on(c), "resolv_pod": server_on(c),
        "route": next(n.pod_cidr for n in plan().nodes if n.name != c),
        "conflist": must(b, "cat", plan().paths.network_conf),
        "resolv": must(c, "cat", f"{plan().paths.pod_dir(pod_id(server_on(c)))}/resolv.conf"),
        "routes_file": must(c, "cat", plan().paths.routes_file),
        "kube_services": must(a, "iptables", "-t", "nat", "-S", "KUBE-SERVICES"),
    }
    try:
        # node a: a flushed chain (its canary and its readiness prober, which re-applies rules
        # when an endpoint's readiness changes, stopped first: only the converge may repair
        # it), and the prober's unit file deleted
        must(a, "systemctl", "stop", "podnet-iptables-canary.service", "podnet-endpoints.service")
        must(a, "iptables", "-t", "nat", "-F", "KUBE-SERVICES")
        must(a, "rm", "/etc/systemd/system/podnet-endpoints.service")
        # node b: a deleted pod network namespace, a sysctl set back, an edited conflist
        must(b, "ip", "netns", "delete", pod_id(d.before["netns_pod"]))
        must(b, "sysctl", "-w", f"{FORWARD}=0")
        must(b, "sed", "-i", "s/\"hairpinMode\": true/\"hairpinMode\": false/",
             plan().paths.network_conf)
        # node c: a stopped container, an edited pod resolv.conf, a deleted file and its route
        for unit in container_units(d.before["stopped_pod"]):
            must(c, "systemctl", "stop", unit)
        must(c, "sh", "-c", "echo 'nameserver 192.0.2.53' > "
             f"{plan().paths.pod_dir(pod_id(d.before['resolv_pod']))}/resolv.conf")
        must(c, "rm", plan().paths.routes_file)
        must(c, "ip", "route", "del", d.before["route"])
        # a dry run first: it must see the drift and leave it as it is
        d.dry_run = recap(converge(manifests_dir(), check=True))
        d.still_broken = [what for what, broken in (
            ("netns", run(b, "test", "-e",
                          plan().paths.netns(pod_id(d.before['netns_pod']))).rc != 0),
            ("sysctl", must(b, "sysctl", "-n", FORWARD).strip() == "0"),
            ("route", run(c, "ip", "route", "show", d.before["route"]).stdout.strip() == ""),
            ("chain", must(a, "iptables", "-t", "nat", "-S", "KUBE-SERVICES").strip()
             == "-N KUBE-SERVICES"),
        ) if broken]
        d.changed = recap(converge(manifests_dir()))
        d.second = recap(converge(manifests_dir()))
        yield d
    finally:
        # whatever happened above, leave a working lab behind for the suites that follow (a
        # second converge that found nothing to do has shown it is)
        if not (d.second and all(n == 0 for n in d.second.values())):
            for node in (a, b, c):
                run(node, "systemctl", "start", "podnet-iptables-canary.service",
                    "podnet-endpoints.service")
            recap(converge(manifests_dir()))
        # and check that it is: the pods with their IPs, every rule, the services that run
        assert_restored(lab, "the drift suite")


def test_a_dry_run_reports_the_drift_and_repairs_nothing(drift: Drift) -> None:
    assert all(drift.dry_run[node] > 0 for node in drift.nodes), drift.dry_run
    assert drift.still_broken == ["netns", "sysctl", "route", "chain"]


def test_the_converge_reported_each_repair(drift: Drift) -> None:
    assert all(drift.changed[node] > 0 for node in drift.nodes), drift.changed


def test_a_second_converge_finds_nothing_left_to_repair(drift: Drift) -> None:
    assert drift.second and all(n == 0 for n in drift.second.values()), drift.second


def test_a_dry_run_on_the_converged_lab_changes_nothing(drift: Drift) -> None:
    dry = recap(converge(manifests_dir(), check=True))
    assert dry and all(n == 0 for n in dry.values()), dry


def test_a_flushed_service_chain_is_applied_again(drift: Drift) -> None:
    node = drift.nodes[0]
    assert must(node, "iptables", "-t", "nat", "-S", "KUBE-SERVICES") == \
        drift.before["kube_services"]
    web = target(targets.http_service)
    got = run(node, "curl", "-s", "--max-time", "5",
              f"http://{web.cluster_ip}:{web.ports[0].port}/hostname")
    assert got.rc == 0 and got.stdout.strip(), got


def test_stopped_units_and_a_deleted_unit_file_are_back_and_running(drift: Drift) -> None:
    node = drift.nodes[0]
    assert run(node, "systemctl", "is-active", "podnet-iptables-canary.service").rc == 0
    assert run(node, "test", "-s", "/etc/systemd/system/podnet-endpoints.service").rc == 0
    active = run(node, "systemctl", "is-active", "podnet-endpoints.service")
    assert active.stdout.strip() == "active", active


def test_a_deleted_pod_netns_comes_back_with_the_same_ip(drift: Drift) -> None:
    key, node = drift.before["netns_pod"], drift.nodes[1]
    assert run(node, "test", "-e", plan().paths.netns(pod_id(key))).rc == 0
    assert observed()[key]["ip"] == drift.before["netns_ip"]
    eth0 = in_pod(key, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    assert f" {drift.before['netns_ip']}/" in eth0.stdout, eth0
    check = run(node, plan().paths.cni_runtime, "check", pod_id(key))
    assert check.rc == 0, check
    assert_answers(key)


def test_a_sysctl_set_back_is_set_again(drift: Drift) -> None:
    assert must(drift.nodes[1], "sysctl", "-n", FORWARD).strip() == "1"


def test_an_edited_cni_conflist_is_written_back(drift: Drift) -> None:
    assert must(drift.nodes[1], "cat", plan().paths.network_conf) == \
        drift.before["conflist"]


def test_a_stopped_container_is_started(drift: Drift) -> None:
    key, node = drift.before["stopped_pod"], drift.nodes[2]
    for unit in container_units(key):
        active = run(node, "systemctl", "is-active", unit)
        assert active.stdout.strip() == "active", active
    assert_answers(key)


def test_an_edited_pod_resolv_conf_is_written_back_and_its_containers_see_it(drift: Drift
                                                                            ) -> None:
    key, node = drift.before["resolv_pod"], drift.nodes[2]
    path = f"{plan().paths.pod_dir(pod_id(key))}/resolv.conf"
    assert must(node, "cat", path) == drift.before["resolv"]
    # the running container sees the file through its bind mount: restarted onto the new one
    unit = container_units(key)[0]
    pid = must(node, "systemctl", "show", "-p", "MainPID", "--value", unit).strip()
    seen = must(node, "cat", f"/proc/{pid}/root/etc/resolv.conf")
    assert seen == drift.before["resolv"]


def test_a_deleted_routes_file_and_its_route_come_back(drift: Drift) -> None:
    node = drift.nodes[2]
    assert must(node, "cat", plan().paths.routes_file) == drift.before["routes_file"]
    route = run(node, "ip", "route", "show", drift.before["route"])
    assert route.stdout.strip().startswith(drift.before["route"]), route
