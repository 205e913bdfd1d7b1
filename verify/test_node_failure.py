"""A node's death and the smaller losses a cluster lives through (docs/node-failure.md).

A node's plug is pulled under load: clients outside (through a NodePort and a LoadBalancer
address) and a pod (through a Service's DNS name and ClusterIP) send a request every 100 ms,
and once the grace period and the time to apply have passed no request may fail. The cluster
is then converged with the node down (a second converge started meanwhile must refuse), its
Deployments' pods must all run and answer on the other nodes, and DNS must follow. The node
comes back, a converge takes it in again with no pod address twice and every pod reaching
every pod; then the lab is put back as it was. A cut link and killed podnet processes must
recover the same way. These change the lab, so they run last and put it back."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import lbchecks
import pytest
from conftest import (
    INVENTORY_PATH,
    ROOT,
    Evidence,
    LabState,
    assert_restored,
    connect,
    connection,
    converge_command,
    converged,
    converged_back,
    http_port,
    lab_state,
    manifests_dir,
    needs_lab,
    observed,
    plan,
    pod_id,
    record_file,
    run,
    saved_record,
    servers,
    setting,
    wait_for,
)

from podnet import access, convergelock, lab, outage
from podnet.plan import ServicePlan

pytestmark = pytest.mark.principle("lifecycle")

# after the grace period the prober's next pass (a second at most) publishes the NotReady
# node and the node's rules are applied without its pods: what may still fail past the
# grace period is bounded by that plus one request's timeout
APPLY = 2.0
LEAD = 2.0  # seconds of requests before the loss


def grace() -> float:
    return float(plan().settings.node_grace_period)


def victim() -> str:
    """The node that dies: the last one (the first keeps the clients' way in)."""
    return plan().nodes[-1].name


def survivor() -> str:
    return plan().nodes[0].name


def web() -> ServicePlan:
    """A NodePort Service (externalTrafficPolicy Cluster, HTTP first port) with a pod on the
    victim and one elsewhere: the one the clients load."""
    for svc in (s for s in plan().services if s.ports):
        nodes = {e.node for e in svc.ports[0].endpoints}
        if (svc.type == "NodePort" and svc.external_traffic_policy == "Cluster"
                and svc.ports[0].protocol == "TCP" and victim() in nodes and len(nodes) > 1
                and all(http_port(e.pod) == e.port for e in svc.ports[0].endpoints)):
            return svc
    pytest.skip(f"needs a NodePort Service (Cluster policy, HTTP) with pods on {victim()} and "
                "another node")


def lb_service() -> ServicePlan | None:
    """A LoadBalancer Service (Cluster policy, TCP first port, open to the clients) with a pod
    on the victim, if the manifests have one."""
    for svc in (s for s in plan().services if s.ports):
        if (svc.type == "LoadBalancer" and svc.lb_ip and svc.external_traffic_policy == "Cluster"
                and svc.ports[0].protocol == "TCP"
                and victim() in {e.node for e in svc.ports[0].endpoints}
                and all(http_port(e.pod) == e.port for e in svc.ports[0].endpoints)):
            return svc
    return None


def script(address: str, port: int, seconds: float) -> list[str]:
    return ["python3", "-c", outage.SCRIPT, "tcp", address, str(port), str(seconds),
            str(outage.INTERVAL), "1.0"]


def as_pod(key: str, *argv: str) -> list[str]:
    """``argv`` as pod ``key`` runs it: in its network namespace, resolving names with its own
    resolv.conf (the cluster DNS, its search path) as its containers do."""
    resolv = f"{plan().paths.pod_dir(pod_id(key))}/resolv.conf"
    return ["ip", "netns", "exec", pod_id(key), "unshare", "-m", "sh", "-c",
            'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"', "sh", resolv, *argv]


def from_pod(key: str, name: str, port: int, seconds: float) -> list[str]:
    """The requests from pod ``key``, by name: every request looks the name up again."""
    return access.ssh_argv(connection(plan().pod(key).node),
                           as_pod(key, *script(name, port, seconds)), as_root=True)


@dataclass(frozen=True)
class Seen:
    name: str
    outage: outage.Outage
    last_failure: float | None  # seconds after the plug was pulled


@dataclass
class Loss:
    node: str
    paths: list[Seen]
    not_ready_seen: str
    converge: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    before: LabState
    moved: list[str]


def answers(node: str) -> bool:
    try:
        return run(node, "true").rc == 0
    except RuntimeError:  # ssh's own failure: the host is not there
        return False


def power_on() -> None:
    """Boot every lab host that is off (make lab-up), then wait until ``victim`` answers."""
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i",
                           str(INVENTORY_PATH), str(ROOT / "playbooks" / "lab-up.yml")],
                          capture_output=True, text=True, check=False, timeout=600,
                          env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    connect.cache_clear()
    wait_for(f"{victim()} to answer", lambda: answers(victim()), timeout=180, every=2)


def pull_the_plug() -> None:
    lab.power_off(str(setting("lab_name")), Path(str(setting("lab_state_dir"))), victim(),
                  hard=True)


def two_converges() -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """A converge (tag workloads) and, once it holds the lock, a second one: (first, second)."""
    argv, env = converge_command(manifests_dir(), "workloads")
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lock = record_file().parent / convergelock.LOCK_FILE

    def holds() -> bool:
        try:
            return bool(json.loads(lock.read_text())["pid"] == first.pid)
        except (OSError, ValueError, KeyError):
            return False

    wait_for("the first converge to take the lock", lambda: holds() or first.poll() is not None,
             timeout=120)
    second = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                            timeout=300)
    out, err = first.communicate(timeout=900)
    return subprocess.CompletedProcess(argv, first.returncode, out, err), second


@pytest.fixture(scope="module")
def loss() -> Generator[Loss, None, None]:
    """node3's plug pulled under load, then a converge with it down: what the clients saw
    and what the converges said. Puts the lab back as it was at the end."""
    needs_lab()
    svc, balanced = web(), lb_service()
    before, record = lab_state(), saved_record()
    moved = [p.key for p in plan().pods_on(victim())]
    node = plan().node(survivor())
    seconds = LEAD + grace() + APPLY + 6.0
    client = lbchecks.admitted_client(balanced.key) if balanced else "client"
    shell = access.ssh_argv(connection(client))
    loads = {f"NodePort {node.address}:{svc.ports[0].node_port} ({svc.key})": [
        *shell, shlex.join(script(node.address, int(svc.ports[0].node_port or 0), seconds))]}
    if balanced:
        loads[f"LoadBalancer {balanced.lb_ip}:{balanced.ports[0].port} ({balanced.key})"] = [
            *shell, shlex.join(script(str(balanced.lb_ip), balanced.ports[0].port, seconds))]
    pod = next(k for k in servers() if plan().pod(k).node == survivor())
    name = f"{svc.name}.{svc.namespace}.svc.{plan().settings.cluster_domain}"
    loads[f"ClusterIP by DNS name {name}:{svc.ports[0].port} from pod {pod}"] = from_pod(
        pod, name, svc.ports[0].port, seconds)
    try:
        running = {what: subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          text=True) for what, argv in loads.items()}
        for proc in running.values():
            assert proc.stdout is not None and proc.stdout.readline().strip() == "start"
        started = time.monotonic()
        time.sleep(LEAD)
        cut = time.monotonic() - started
        pull_the_plug()
        paths = []
        for what, proc in running.items():
            text, _ = proc.communicate(timeout=seconds + 60)
            paths.append(Seen(what, outage.summary(text, end=seconds),
                               outage.last_failure(text, cut)))
        seen = run(survivor(), "cat", plan().paths.not_ready_nodes).stdout
        first, second = two_converges()
        yield Loss(victim(), paths, seen, first, second, before, moved)
    finally:
        if not answers(victim()):
            power_on()
        converged_back(record)
        assert_restored(before, f"pulling {victim()}'s plug, converging, and back", moved,
                        timeout=180)


# -- the smaller losses, first: on the lab as the manifests place it ----------------------------
def test_a_cut_link_is_a_dead_node_until_it_is_back() -> None:
    """The victim's underlay link down for longer than the grace period: the survivors take
    its pods out (no request fails after the grace period), and back when it answers."""
    needs_lab()
    svc, node = web(), plan().node(survivor())
    behind = {plan().pod(e.pod).host_name for e in svc.ports[0].endpoints}
    theirs = {plan().pod(e.pod).host_name for e in svc.ports[0].endpoints
              if e.node == victim()}
    hold = grace() + APPLY + 3.0
    cut = outage.failover(access.ssh_argv(connection("client")), node.address,
                          int(svc.ports[0].node_port or 0),
                          lambda down: lbchecks.lab_link(victim(), up=not down),
                          lead=LEAD, hold=hold, tail=3.0)
    print(f"\n{victim()}'s link cut, NodePort on {survivor()}: {cut}")
    # the requests the victim's pods would have answered failed: the cut was real
    assert cut.during.failed, f"no request met the cut: {cut}"
    # the last failure came within the grace period and the time to apply
    assert cut.during.recovered is not None or not cut.during.failed, str(cut)
    assert cut.during.recovered is None or cut.during.recovered - cut.cut_at <= grace() + APPLY
    url = f"http://{node.address}:{svc.ports[0].node_port}/hostname"
    wait_for(f"{victim()}'s pods to answer again", lambda: theirs <= set(run(
        "client", "sh", "-c", f"for i in $(seq 12); do curl -s -m 2 {url}; echo; done"
    ).stdout.split()) <= behind, timeout=30)
    assert run(survivor(), "cat", plan().paths.not_ready_nodes).stdout.split() == []


@pytest.mark.parametrize("unit", ["podnet-endpoints.service", "podnet-iptables-canary.service"])
def test_a_killed_prober_or_rule_canary_comes_back_and_services_keep_answering(unit: str
                                                                               ) -> None:
    needs_lab()
    node, svc = survivor(), web()
    pid = run(node, "systemctl", "show", "-P", "MainPID", unit).stdout.strip()
    assert pid not in ("", "0"), f"{unit} does not run on {node}"
    killed = run(node, "kill", "-9", pid)
    assert killed.rc == 0, killed
    wait_for(f"{unit} to run again", lambda: run(node, "systemctl", "show", "-P", "MainPID",
                                                 unit).stdout.strip() not in ("", "0", pid)
             and run(node, "systemctl", "is-active", unit).stdout.strip() == "active",
             timeout=30)
    names = {plan().pod(e.pod).host_name for e in svc.ports[0].endpoints}
    url = f"http://{plan().node(node).address}:{svc.ports[0].node_port}/hostname"
    got = run("client", "sh", "-c", f"for i in $(seq 30); do curl -s -m 2 {url}; echo; done")
    assert set(got.stdout.split()) == names, got


def test_a_pod_that_keeps_its_address_is_not_started_where_another_node_runs_it() -> None:
    """The fence a booting node passes before it starts such a pod that no converge has placed
    there since boot (podnet-cni up): a stand-in pod given the address of a pod that runs on
    another node is refused, naming that node, and nothing of it is left."""
    needs_lab()
    holder = next((p for p in plan().pods if p.stable_ip), None)
    if holder is None:
        pytest.skip("needs a pod that keeps its address on any node (a bare Pod, by default)")
    node = next(n.name for n in plan().nodes if n.name != holder.node)
    ident = "verify_fence"
    folder = plan().paths.pod_dir(ident)
    spec: dict[str, object] = {
        "namespace": "verify", "name": "fence", "node": node, "netns": ident,
        "container_id": "verifyfence", "ifname": "eth0", "units": [],
        "network": plan().paths.stable_network_conf, "loopback": plan().paths.loopback_conf,
        "stable_ip": holder.stable_ip}
    made = run(node, "sh", "-c", f"mkdir -p {folder} && echo '{json.dumps(spec)}' > "
                                 f"{folder}/pod.json")
    assert made.rc == 0, made
    try:
        up = run(node, plan().paths.cni_runtime, "up", ident)
        assert up.rc == 1, up
        assert (f"{holder.node} runs a pod with its address {holder.stable_ip} (it moved there "
                "while this node was away): not started here") in up.stderr, up
        assert run(node, "test", "-e", plan().paths.netns(ident)).rc != 0
    finally:
        gone = run(node, "rm", "-rf", folder, f"{plan().paths.admitted_dir}/{ident}")
        assert gone.rc == 0, gone


# -- the node's death --------------------------------------------------------------------------
def test_a_dead_node_leaves_every_path_within_the_grace_period(loss: Loss) -> None:
    limit = grace() + APPLY
    for path in loss.paths:
        print(f"\n{loss.node} powered off; {path.name}: {path.outage}; last failure "
              f"{'none' if path.last_failure is None else f'{path.last_failure:.1f} s'} after "
              f"the plug (grace period {grace():.0f} s)")
    late = [f"{p.name}: a request sent {p.last_failure:.1f} s after the plug failed"
            for p in loss.paths if p.last_failure is not None and p.last_failure > limit]
    assert late == [], f"failures after the grace period plus {APPLY} s: {late}"
    assert loss.node in loss.not_ready_seen.split(), loss.not_ready_seen


def test_a_second_converge_meanwhile_refuses_naming_the_first(loss: Loss) -> None:
    assert loss.second.returncode != 0, loss.second.stdout[-2000:]
    said = loss.second.stdout + loss.second.stderr
    assert "another converge of this cluster is running" in said, said[-3000:]
    assert "ansible-playbook" in said and "wait for it to end" in said
    # and it stopped before any host: no play after the lock's ran
    assert "Find the hosts that do not answer" not in said


def test_the_converge_with_the_node_down_succeeds_and_says_what_moved(loss: Loss) -> None:
    out = loss.converge.stdout
    assert loss.converge.returncode == 0, out[-3000:] + loss.converge.stderr[-2000:]
    said = " ".join(out.split())  # the warnings as one line, however the output wrapped them
    assert f"host {loss.node}: ansible_host: did not answer: the node is NotReady" in said
    recap = next(line for line in out.splitlines() if line.startswith(f"{loss.node} "))
    assert "failed=0" in recap and "unreachable=0" in recap, recap
    for key in loss.moved:
        pod = plan().pod(key)
        word = "is evicted from" if pod.owner.startswith("Deployment ") else "is pending"
        assert f"pod {key} {word}" in said, key


def test_every_deployment_runs_in_full_on_the_live_nodes_and_answers(loss: Loss) -> None:
    live = [n.name for n in plan().nodes if n.name != loss.node]
    pods = observed(live)
    wanted = [p.key for p in plan().pods if p.owner.startswith("Deployment ")]
    assert sorted(k for k in wanted if k not in pods) == []
    bare = [k for k in loss.moved if not plan().pod(k).owner.startswith("Deployment ")]
    assert [k for k in bare if k in pods] == [], "a pending pod runs"
    addresses = [p["ip"] for p in pods.values()]
    assert len(addresses) == len(set(addresses)), addresses
    # the NodePort and ClusterIP answered by every one of web's replicas, from the client
    # and from every live pod, by name
    svc = web()
    names = {plan().pod(e.pod).host_name for e in svc.ports[0].endpoints}
    node = plan().node(live[0])
    url = f"http://{node.address}:{svc.ports[0].node_port}/hostname"
    got = run("client", "sh", "-c", f"for i in $(seq 40); do curl -s -m 2 {url}; echo; done")
    assert set(got.stdout.split()) == names, got
    name = f"{svc.name}.{svc.namespace}.svc.{plan().settings.cluster_domain}"
    for key in (k for k in servers() if k in pods):
        asked = run(pods[key]["reported_by"], *as_pod(key, "sh", "-c", "for i in 1 2 3 4 5 6; do "
                    f"curl -s -m 3 http://{name}:{svc.ports[0].port}/hostname; echo; done"))
        assert asked.stdout.split() and set(asked.stdout.split()) <= names, (key, asked)


def test_dns_answers_follow_the_pods(loss: Loss) -> None:
    live = [n.name for n in plan().nodes if n.name != loss.node]
    pods = observed(live)
    headless = [s for s in plan().services if s.cluster_ip is None and s.type == "ClusterIP"
                and s.ports and s.ports[0].endpoints]
    if not headless:
        pytest.skip("needs a headless Service with pods")
    asker = next(k for k in servers() if k in pods)
    for svc in headless:
        name = f"{svc.name}.{svc.namespace}.svc.{plan().settings.cluster_domain}"
        want = sorted(pods[e.pod]["ip"] for e in svc.ports[0].endpoints if e.pod in pods)
        got = dns_a(asker, pods[asker]["reported_by"], name)
        assert sorted(got.stdout.split()) == want, (name, got)


def dns_a(key: str, node: str, name: str) -> Evidence:
    return run(node, "ip", "netns", "exec", pod_id(key), "dig", "+short", "+time=2",
               "+tries=2", f"@{plan().dns_service.cluster_ip}", name, "A")


def test_the_node_back_rejoins_with_no_address_twice(loss: Loss) -> None:
    power_on()
    converged(manifests_dir(), "workloads")
    pods = observed([n.name for n in plan().nodes])
    addresses = [p["ip"] for p in pods.values()]
    assert len(addresses) == len(set(addresses)), addresses
    for key in loss.moved:
        pod = plan().pod(key)
        if pod.owner.startswith("Deployment "):
            assert pods[key]["reported_by"] != loss.node, f"{key} left {loss.node} and stays away"
        else:
            assert pods[key]["reported_by"] == loss.node, f"{key} waited for {loss.node}"
    # every pod reaches every pod (their /dial, one shell per client)
    failures = []
    for client in (k for k in servers() if k in pods):
        port = http_port(client)
        urls = [f"http://{pods[client]['ip']}:{port}/dial?host={pods[peer]['ip']}&port="
                f"{http_port(peer)}&request=clientip&protocol=http"
                for peer in servers() if peer in pods]
        got = run(pods[client]["reported_by"], "sh", "-c", " ".join(
            f"curl -s -m 10 '{u}'; echo;" for u in urls))
        lines = got.stdout.splitlines()
        failures += [f"{client}: {u} -> {line!r}" for u, line in zip(urls, lines, strict=False)
                     if f'["{pods[client]["ip"]}:' not in line]
        assert len(lines) == len(urls), got
    assert failures == []
