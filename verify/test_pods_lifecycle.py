"""Pods through their life: a killed process, a rebooted node, a pod removed from the
manifests. These change the lab, so they run last and put it back as it was."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import targets
import yaml
from conftest import (
    Evidence,
    LabNotRestored,
    assert_restored,
    connect,
    container_units,
    converged,
    http_port,
    lab_state,
    manifests_dir,
    observed,
    plan,
    pod_id,
    run,
    running,
    servers,
    target,
)

from podnet.plan import ServicePlan

pytestmark = pytest.mark.principle("kubelet + CNI")


def wait_for(what: str, check, timeout: float = 120.0, every: float = 1.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last is True or (last and not isinstance(last, Evidence)):
                return last
        except Exception as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}")


def matrix_failures(clients: list[str], peers: list[str]) -> list[str]:
    """Every client pod dials every peer pod (its /dial), as the flat-network suite does."""
    now = observed()
    failures = []
    for client in clients:
        for peer in peers:
            url = (f"http://{now[client]['ip']}:{http_port(client)}/dial?host={now[peer]['ip']}"
                   f"&port={http_port(peer)}&request=clientip&protocol=http")
            got = run(plan().pod(client).node, "curl", "-s", "--max-time", "15", url)
            if f'["{now[client]["ip"]}:' not in got.stdout:
                failures.append(f"{client} -> {peer}: {got}")
    return failures


def test_killed_container_restarts_with_the_same_ip() -> None:
    """A container killed with SIGKILL is restarted by systemd in the same pod: the pod's
    network namespace still holds its IP on eth0 and CNI CHECK passes against the cached
    result, not only the state file still naming the IP."""
    pod = servers()[0]
    node = plan().pod(pod).node
    unit = container_units(pod)[0]
    lab = lab_state()
    before = run(node, "systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()
    try:
        kill = run(node, "kill", "-9", before)
        assert kill.rc == 0, kill

        def restarted() -> bool:
            pid = run(node, "systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()
            return pid not in ("0", before) and run(node, "systemctl", "is-active", unit).rc == 0

        wait_for(f"{unit} to restart", restarted, timeout=30)
        ip = running()[pod]["ip"]
        hello = wait_for(f"{pod} to answer", lambda: run(node, "curl", "-s", "--max-time", "3",
                         f"http://{ip}:{http_port(pod)}/hostname").stdout, timeout=30)
        assert hello == plan().pod(pod).host_name
        assert observed()[pod]["ip"] == ip
        eth0 = run(node, "ip", "-n", pod_id(pod), "-4", "-o", "addr", "show", "dev", "eth0")
        assert f" {ip}/" in eth0.stdout, eth0
        check = run(node, plan().paths.cni_runtime, "check", pod_id(pod))
        assert check.rc == 0, check
    finally:
        # a container systemd did not restart (its start limit hit, say) is started again
        run(node, "systemctl", "reset-failed", unit)
        run(node, "systemctl", "start", unit)
        assert_restored(lab, f"killing {unit} on {node}")


def test_rebooted_node_brings_its_pods_back_with_their_ips() -> None:
    node = target(targets.reboot_node)
    web = target(targets.http_service)
    mine = [p.key for p in plan().pods_on(node)]
    before = {key: running()[key]["ip"] for key in mine}
    lab = lab_state()
    marker = run(node, "touch", "/run/podnet-verify-before-reboot")
    assert marker.rc == 0, marker
    try:
        reboot_and_check(node, mine, before, web)
    finally:
        # whatever happened above: the node up again, and converged if it came back without
        # its pods or rules as they were
        connect.cache_clear()
        wait_for(f"{node} to answer", lambda: run(node, "true").rc == 0, timeout=180, every=2)
        try:
            assert_restored(lab, f"rebooting {node}", timeout=60)
        except LabNotRestored:
            converged(manifests_dir())
            assert_restored(lab, f"rebooting {node} (and a converge)")


def reboot_and_check(node: str, mine: list[str], before: dict[str, str], web: ServicePlan
                     ) -> None:
    """Reboot ``node`` (marked in /run before) and check its pods came back as they were, and
    its Service rules: a pod there reaches ``web``."""
    reboot = run(node, "systemd-run", "--on-active=1", "--timer-property=AccuracySec=100ms",
                 "systemctl", "reboot")
    assert reboot.rc == 0, reboot
    time.sleep(3)
    connect.cache_clear()

    def back() -> bool:
        connect.cache_clear()
        gone = run(node, "test", "-e", "/run/podnet-verify-before-reboot").rc != 0
        return gone and run(node, "systemctl", "is-system-running").stdout.strip() == "running"

    wait_for(f"{node} to boot again", back, timeout=180, every=2)
    after = wait_for(f"the pods of {node} to be back",
                     lambda: (lambda now: now if all(k in now for k in mine) else None)(
                         observed()), timeout=60)
    assert {key: after[key]["ip"] for key in mine} == before
    here = [k for k in mine if http_port(k)]
    # a pod is back when its sandbox is; its server answers once its container has started
    # (seconds later on a loaded machine, as a kubelet's readiness would wait for): wait for
    # that, then prove the whole matrix as before
    wait_for(f"the servers of {node}'s pods to answer", lambda: all(
        run(node, "curl", "-s", "--max-time", "2", "-o", "/dev/null",
            f"http://{after[k]['ip']}:{http_port(k)}/hostname").rc == 0 for k in here),
        timeout=60, every=1)
    assert matrix_failures(here, servers()) == []
    assert matrix_failures(servers(), here) == []
    # and the node's Service rules came back at boot (podnet-iptables.service)
    got = run(node, "ip", "netns", "exec", pod_id(here[0]), "curl", "-s", "--max-time", "5",
              f"http://{web.cluster_ip}:{web.ports[0].port}/hostname")
    assert got.rc == 0 and got.stdout.strip(), got


def test_pod_removed_from_the_manifests_leaves_nothing_behind(tmp_path: Path) -> None:
    original = manifests_dir()
    copy = tmp_path / "manifests"
    shutil.copytree(original, copy)
    victim = target(targets.bare_server_pod)
    found = False
    for path in copy.glob("*.y*ml"):
        docs = list(yaml.safe_load_all(path.read_text()))
        keep = [d for d in docs if not (d and d.get("kind") == "Pod"
                and d["metadata"]["name"] == victim.name
                and d["metadata"].get("namespace", "default") == victim.namespace)]
        if len(keep) != len(docs):
            found = True
            path.write_text(yaml.safe_dump_all(keep))
    assert found, f"{victim.key} not found in {original}"
    node, ident = victim.node, pod_id(victim.key)
    container_id = running()[victim.key]["container_id"]
    ip = running()[victim.key]["ip"]
    lab = lab_state()
    try:
        converged(copy, "workloads")
        paths = plan().paths
        leftovers = run(node, "sh", "-c",
                        f"ls -d {paths.pod_dir(ident)} {paths.pod_state_dir}/{ident} "
                        f"{paths.netns(ident)} /etc/netns/{ident} "
                        f"{paths.cni_cache_dir}/*{container_id}* "
                        f"{paths.cni_reservations}/{ip} {paths.stable_reservations}/{ip} "
                        f"/etc/systemd/system/podnet-{ident}-* "
                        "2>/dev/null || true")
        assert leftovers.stdout.strip() == "", leftovers

        # no unit of the pod may be loaded from a file or active; systemd may keep a removed
        # unit's name in memory for a while as "not-found inactive dead" (no file, no process)
        units = run(node, "systemctl", "list-units", "--all", "--no-legend", "--plain",
                    f"podnet-{ident}-*", f"podnet-sandbox@{ident}.service")
        for line in units.stdout.splitlines():
            name, load, active, *_ = line.split()
            assert (load, active) == ("not-found", "inactive") or (
                name.startswith("podnet-sandbox@") and active == "inactive"), units
        # the bridge's ports are its other pods' (a pod keeping its address is wired by ptp)
        ports = run(node, "sh", "-c", f"ip -o link show master {plan().paths.cni_bridge} | wc -l")
        bridged = [p for p in plan().pods_on(node) if not p.stable_ip and p.key != victim.key]
        assert int(ports.stdout) == len(bridged), ports
        # and no node routes the address to it any more (its /32 left with it)
        host_routes = {n.name: run(n.name, "ip", "-4", "route", "show", f"{ip}/32").stdout.strip()
                       for n in plan().nodes}
        assert not any(host_routes.values()), host_routes
        assert victim.key not in observed()
    finally:
        converged(original, "workloads")
        # the pod is back on its node, with a new IP (its old one was released)
        assert_restored(lab, f"removing {victim.key}", moved={victim.key})
    assert victim.key in observed()
