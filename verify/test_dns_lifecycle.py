"""Service DNS while things change: a DNS pod stopped (its endpoint leaves every node's
kube-dns rules through its readiness probe, names keep resolving through the other), and a new
Service that resolves right after the converge that adds it, with no query dropped meanwhile.
These change the lab and put it back; they run after the other suites. The Service looked up
and the one added beside it come from the plan by shape (targets.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import targets
from conftest import (
    assert_restored,
    container_units,
    converged,
    lab_state,
    manifests_dir,
    observed,
    plan,
    plan_of,
    pod_id,
    run,
    servers,
    target,
    wait_for,
)

from podnet import kubeproxy

pytestmark = pytest.mark.principle("service DNS")

DNS_IP = str(plan().settings.dns_service_ip)
ZONE = plan().settings.cluster_domain
def dns_chains(key: str, ip: str) -> set[str]:
    svc = plan().service("kube-system/kube-dns")
    pod = plan().pod(key)
    return {kubeproxy.endpoint_chain(svc.namespace, svc.name, p.name, p.protocol, ip,
                                     next(e.port for e in p.endpoints if e.pod == pod.key))
            for p in svc.ports}


def jumps_to(node: str, chains: set[str]) -> set[str]:
    save = run(node, "iptables-save", "-t", "nat")
    assert save.rc == 0, save
    return {c for c in chains
            if re.search(rf"^-A KUBE-SVC-\S+ .*-j {re.escape(c)}$", save.stdout, re.MULTILINE)}


def test_one_dns_pod_stopped_names_still_resolve_through_the_other() -> None:
    dns_pods = targets.dns_pods(plan())
    if len(dns_pods) < 2:
        pytest.skip(str(targets.NotInPlan(targets.DNS_REPLICAS)))
    web = target(targets.http_service)
    name = f"{web.fqdn}."
    victim = dns_pods[0]
    pod = plan().pod(victim)
    ip = observed()[victim]["ip"]
    chains = dns_chains(victim, ip)
    nodes = [n.name for n in plan().nodes]
    assert all(jumps_to(n, chains) == chains for n in nodes), "the DNS pod is not in the rules"
    units = container_units(victim)
    lab = lab_state()
    stopped = run(pod.node, "systemctl", "stop", *units)
    assert stopped.rc == 0, stopped
    try:
        dead = run(pod.node, "dig", f"@{ip}", "+time=1", "+tries=1", name)
        assert dead.rc != 0, dead  # really gone
        # no server answers at all (dig 9, "no servers could be reached"), not an answer with
        # some status (SERVFAIL, REFUSED) nor a failure of dig itself
        assert dead.rc == 9 and "status:" not in dead.stdout, dead
        took = wait_for(f"{victim} leaving every node's kube-dns rules",
                        lambda: not any(jumps_to(n, chains) for n in nodes), 20)
        print(f"\n{victim} out of the kube-dns rules on {len(nodes)} nodes after {took:.1f} s")
        clients = servers()
        failures = []
        for client in clients:
            for _ in range(5):
                got = run(plan().pod(client).node, "ip", "netns", "exec", pod_id(client), "dig",
                          f"@{DNS_IP}", "+time=2", "+tries=1", "+short", name)
                if got.rc != 0 or got.stdout.strip() != web.cluster_ip:
                    failures.append(got)
        assert not failures, failures[:3]
    finally:
        started = run(pod.node, "systemctl", "start", *units)
        assert started.rc == 0, started
        took = wait_for(f"{victim} back in every node's kube-dns rules",
                        lambda: all(jumps_to(n, chains) == chains for n in nodes), 30)
        print(f"{victim} back in the rules after {took:.1f} s")
        assert_restored(lab, f"stopping {victim}")


def test_a_new_service_resolves_right_after_converge_with_no_query_dropped(tmp_path: Path
                                                                            ) -> None:
    # a new Service beside one the plan has (its namespace, selector and target port)
    like = target(targets.http_service)
    new, manifest = targets.new_service_like(plan(), like, "dns-new", 8088)
    copy = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), copy)
    (copy / f"zz-{new}.yaml").write_text(manifest)
    node = plan().nodes[0].name
    lab = lab_state()
    name = f"{new}.{like.namespace}.svc.{ZONE}."
    # an unchanged name, the schema version and the SOA (its serial changes with the records)
    queries = f"{like.fqdn}. A\\ndns-version.{ZONE}. TXT\\n{ZONE}. SOA\\n"
    load = ["systemd-run", "--unit", "podnet-verify-dnsperf", "--collect", "-p",
            "StandardOutput=file:/run/podnet-verify-dnsperf.out", "sh", "-c",
            f"printf '{queries}' > /run/podnet-verify-queries && exec dnsperf -s {DNS_IP} "
            "-d /run/podnet-verify-queries -l 900 -Q 200 -t 2"]
    started = run(node, *load)
    assert started.rc == 0, started
    try:
        try:
            converged(copy, "workloads")
            got = run(node, "dig", f"@{DNS_IP}", "+short", name)
        finally:
            run(node, "systemctl", "kill", "-s", "INT", "podnet-verify-dnsperf")
            wait_for("dnsperf to finish", lambda: run(node, "systemctl", "is-active",
                                                     "podnet-verify-dnsperf").rc != 0, 15)
        report = run(node, "cat", "/run/podnet-verify-dnsperf.out")
        run(node, "rm", "-f", "/run/podnet-verify-dnsperf.out", "/run/podnet-verify-queries")
        changed = plan_of(copy)
        assert got.stdout.strip() == changed.service(f"{like.namespace}/{new}").cluster_ip, got
        sent = re.search(r"Queries sent:\s+(\d+)", report.stdout)
        lost = re.search(r"Queries lost:\s+(\d+)", report.stdout)
        assert sent and lost, report
        print(f"\nduring the converge: {sent.group(1)} queries sent, {lost.group(1)} lost")
        assert int(sent.group(1)) > 1000 and int(lost.group(1)) == 0, report
        assert re.search(r"Response codes:\s+NOERROR \d+ \(100\.00%\)$", report.stdout,
                         re.MULTILINE), report
    finally:
        # the lab as it was, whatever happened above
        converged(manifests_dir(), "workloads")
        run(node, "systemctl", "stop", "podnet-verify-dnsperf")  # if it was left running
        assert_restored(lab, f"adding Service {like.namespace}/{new}")
    gone = run(node, "dig", f"@{DNS_IP}", name)
    assert "status: NXDOMAIN" in gone.stdout, gone
