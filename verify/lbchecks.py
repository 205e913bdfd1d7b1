"""The LoadBalancer proofs, from outside the cluster, in whichever mode the lab is in:
test_loadbalancer.py runs them on the lab as converged (its podnet_lb_mode), and
test_lb_lifecycle.py again after switching the mode. Each takes its Service by shape
(targets.py) and asks from the hosts of group clients."""

from __future__ import annotations

import subprocess
import time
from collections import Counter

import targets
from conftest import Evidence, connection, hosts, plan, run, setting, target
from targets import CHI_SQUARE_LIMIT

from podnet import access, lab, loadbalancer, outage


def clients() -> list[tuple[str, str]]:
    return [(h.name, h.address) for h in hosts("clients")]


def backends(key: str) -> dict[str, str]:
    """The hostnames of the pods behind ``key`` and the node each runs on."""
    svc = plan().service(key)
    return {plan().pod(e.pod).host_name: e.node for p in svc.ports for e in p.endpoints}


def admitted_client(key: str) -> str:
    """The first client the Service's loadBalancerSourceRanges admit."""
    svc = plan().service(key)
    return next(name for name, address in clients() if targets.admits(svc, address))


def ask(client: str, key: str, port_name: str, protocol: str, request: str = "hostname",
        timeout: int = 3) -> Evidence:
    """One request from ``client`` to the Service's LB address and port."""
    svc = plan().service(key)
    port = next(p for p in svc.ports if p.name == port_name and p.protocol == protocol)
    if protocol == "UDP":
        return run(client, "python3", "-c", "import socket, sys; s = socket.socket(socket."
                   "AF_INET, socket.SOCK_DGRAM); s.settimeout(float(sys.argv[4])); s.sendto("
                   "sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2]))); "
                   "print(s.recvfrom(999)[0].decode())",
                   str(svc.lb_ip), str(port.port), request, str(timeout))
    return run(client, "curl", "-s", "--max-time", str(timeout),
               f"http://{svc.lb_ip}:{port.port}/{request}")


def many(client: str, key: str, count: int, request: str = "hostname") -> list[str]:
    """``count`` new connections from ``client`` to the Service's LB address, first port;
    a connection that fails gives an empty line."""
    svc = plan().service(key)
    script = (f'for i in $(seq {count}); do curl -s --max-time 3 '
              f'"http://{svc.lb_ip}:{svc.ports[0].port}/{request}"; echo; done')
    got = run(client, "sh", "-c", script)
    assert got.rc == 0, got
    return [line.strip() for line in got.stdout.splitlines()]


# -- the proofs ----------------------------------------------------------------------------------
def every_port_answers(key: str, port_name: str, protocol: str) -> None:
    client = admitted_client(key)
    got = ask(client, key, port_name, protocol)
    assert got.rc == 0 and got.stdout.strip() in backends(key), got


def cluster_policy_spreads() -> None:
    svc = target(targets.lb_cluster_service)
    client = admitted_client(svc.key)
    answers = many(client, svc.key, 300)
    counts = Counter(answers)
    want = set(backends(svc.key))
    assert set(counts) == want, counts  # every endpoint, and no failed connection ("")
    expected = len(answers) / len(want)
    chi2 = sum((n - expected) ** 2 / expected for n in counts.values())
    limit = CHI_SQUARE_LIMIT[len(want) - 1]
    print(f"{svc.key} at {svc.lb_ip}: {len(answers)} connections from {client} over "
          f"{len(want)} endpoints: {dict(counts)}; chi-square {chi2:.2f} (limit {limit})")
    assert chi2 < limit, (counts, chi2)


def local_policy_keeps_the_client_address(key: str) -> None:
    client = admitted_client(key)
    address = next(a for n, a in clients() if n == client)
    for _ in range(10):
        seen = ask(client, key, plan().service(key).ports[0].name, "TCP", "clientip")
        assert seen.rc == 0 and seen.stdout.strip().rsplit(":", 1)[0] == address, seen


def only_nodes_with_a_local_endpoint_get_traffic(mode: str) -> None:
    """No connection to a Local Service's address reaches a node without a local endpoint
    (it would drop it: an empty answer). In cloud mode the lb host spreads flows over every
    node with one, so every pod answers; in l2 mode one node holds the address, and its own
    pods answer (MetalLB's layer 2 mode does the same)."""
    svc = target(targets.lb_partial_service)
    client = admitted_client(svc.key)
    answers = many(client, svc.key, 60)
    behind = backends(svc.key)
    assert "" not in answers and set(answers) <= behind.keys(), Counter(answers)
    nodes = {behind[a] for a in answers}
    if mode == "cloud":
        assert set(answers) == behind.keys(), Counter(answers)
    else:
        [holder] = nodes  # one node holds the address: all of its local pods answer
        assert set(answers) == {a for a, n in behind.items() if n == holder}, Counter(answers)
    print(f"{mode} mode, {svc.key} at {svc.lb_ip}: {len(answers)} connections, answered on "
          f"{sorted(nodes)}; never on {sorted({n.name for n in plan().nodes} - nodes)}")


def source_ranges_admit_and_refuse() -> None:
    svc, inside, outside = target(lambda p: targets.lb_ranged_service(p, clients()))
    port = svc.ports[0]
    got = ask(inside, svc.key, port.name, port.protocol)
    assert got.rc == 0 and got.stdout.strip() in backends(svc.key), got
    refused = ask(outside, svc.key, port.name, port.protocol, timeout=2)
    # kube-proxy's KUBE-FW chain drops it: a timeout (curl 28), not a refusal
    assert refused.rc == 28 and not refused.stdout.strip(), refused
    # the refused client is served where no range applies: it is the range, not the client
    open_svc = next((s for s in targets.lb_services(plan())
                     if not s.load_balancer_source_ranges and targets.serves_http(
                         plan(), s.ports[0])), None)
    if open_svc is not None:
        other = ask(outside, open_svc.key, open_svc.ports[0].name, "TCP")
        assert other.rc == 0 and other.stdout.strip() in backends(open_svc.key), other


# -- failover ------------------------------------------------------------------------------------
def lab_link(node: str, up: bool) -> None:
    """Set the lab's end of ``node``'s underlay link up or down (in the lab's own netns)."""
    name = str(setting("lab_name"))
    subprocess.run(["ip", "-n", name, "link", "set", "dev", lab.veth_name(name, node),
                    "up" if up else "down"], check=True)


def failover(key: str) -> tuple[str, outage.Failover]:
    """Requests every 100 ms from an admitted client to ``key``'s LB address while the link
    of the node ranked first for it (in l2 mode the node holding the address) is cut for
    8 seconds: the node, and the outage as the client saw it."""
    svc = plan().service(key)
    node = loadbalancer.ranking(str(svc.lb_ip), [n.name for n in plan().nodes])[0]
    shell = access.ssh_argv(connection(admitted_client(key)))
    return node, outage.failover(shell, str(svc.lb_ip), svc.ports[0].port,
                                 lambda down: lab_link(node, up=not down))


def settle(key: str, mode: str, timeout: float = 30.0) -> None:
    """Wait until ``key``'s LB address is served as its mode serves it (a node that came back
    is taken again once it passes its health check, or takes its address back): every pod
    behind it answers, or in l2 mode for a Local Service every pod of the node holding it;
    no connection fails."""
    deadline = time.monotonic() + timeout
    behind = backends(key)
    local = plan().service(key).external_traffic_policy == "Local"
    while True:
        got = many(admitted_client(key), key, 12)
        if "" not in got:
            if mode == "l2" and local:
                nodes = {behind[a] for a in got if a in behind}
                want = {a for a, n in behind.items() if n in nodes} if len(nodes) == 1 else set()
            else:
                want = set(behind)
            if set(got) == want:
                return
        assert time.monotonic() < deadline, f"{key} ({mode} mode): answered by {got}"
        time.sleep(1)
