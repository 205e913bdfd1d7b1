"""Kubernetes' [sig-network] conformance tests that need packets or names, mirrored on the hosts.

Each test is marked ``upstream(KEY)``: the entry of podnet/conformance.py whose upstream test it
mirrors (docs/conformance.md is the table). The upstream steps become manifests and converges:
the suite adds the namespace ``conformance`` with the upstream tests' pods and Services
(``manifests(stage)``) and converges only the workloads; the tests that change an object (the
type changes, the affinity switch, the protocol removed from a port, the ExternalName that
changes) run in stages, each one converge (stage 1 and 2 below), in the order of this file. At
the end the lab's own manifests are converged back and the lab is checked to be as it was.

Commands run as the upstream tests run them, from the pods (``in_container``: the pod's network
and mount namespaces, so its resolv.conf and /etc/hosts): curl, nc, dig over UDP and TCP,
getent. The waits are the upstream ones, shortened where podnet settles faster.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Callable, Generator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    Evidence,
    assert_restored,
    converge,
    converged,
    converged_back,
    in_container,
    lab_state,
    manifests_dir,
    needs_lab,
    observed,
    plan,
    plan_of,
    run,
    saved_record,
    wait_for,
)

from podnet.plan import DNS_SERVICE, Plan, ServicePlan

pytestmark = pytest.mark.principle("conformance")

NS = "conformance"
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
HOST_PORT = 54323  # the upstream HostPort test's
SERVE_PORT = 9376  # serve-hostname's
AFFINITY_REQUESTS = 16  # the upstream affinity check: 16 requests, the last 15 decide
AFFINITY_CONFIRM = 15
NOT_STABLE = {"podnet.io/stable-ip": "false"}  # pods of the node's pod CIDR, as upstream's


# -- the manifests, stage by stage ---------------------------------------------------------------
def _netexec(name: str, http: int, udp: int = 0, ports: list[dict[str, Any]] | None = None,
             **spec: Any) -> dict[str, Any]:
    args = ["netexec", f"--http-port={http}", f"--udp-port={udp}"]
    container: dict[str, Any] = {"name": "agnhost", "image": AGNHOST, "args": args}
    if ports:
        container["ports"] = ports
    return {"containers": [container], **spec}


def _sleeper(**spec: Any) -> dict[str, Any]:
    return {"containers": [{"name": "exec", "image": "debian",
                            "command": ["sleep", "infinity"]}], **spec}


def _pod(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None
         ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if labels:
        meta["labels"] = labels
    if not spec.get("hostNetwork"):
        meta["annotations"] = NOT_STABLE
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _service(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": spec}


def _http(port: int = 80, target: int = SERVE_PORT) -> list[dict[str, Any]]:
    return [{"name": "http", "port": port, "targetPort": target}]


def _hostnames(kind: str = "ClusterIP", affinity: str = "None") -> dict[str, Any]:
    """A Service of the serve-hostname pods (upstream's jig services)."""
    return {"type": kind, "selector": {"app": "hostnames"}, "ports": _http(),
            "sessionAffinity": affinity}


def _external(name: str) -> dict[str, Any]:
    return {"type": "ExternalName", "externalName": name}


def hostport_node(the_plan: Plan) -> str:
    return the_plan.nodes[1 % len(the_plan.nodes)].name


def manifests(the_plan: Plan, stage: int) -> list[dict[str, Any]]:
    """The conformance namespace at ``stage`` (0: as created; 1 and 2: the upstream updates)."""
    zone = the_plan.settings.cluster_domain
    nodes = [n.name for n in the_plan.nodes]
    hp_node = hostport_node(the_plan)
    hp_ip = next(n.address for n in the_plan.nodes if n.name == hp_node)
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}]
    # Networking Granular Checks: a netserver per node, a test pod, a hostNetwork pod
    for i, node in enumerate(nodes):
        docs.append(_pod(f"netserver-{i}", _netexec(
            "netserver", 8083, 8081,
            [{"name": "http", "containerPort": 8083},
             {"name": "udp", "containerPort": 8081, "protocol": "UDP"}],
            nodeSelector={"kubernetes.io/hostname": node}),
            {"selector-netserver": "true"}))
    docs.append(_pod("test-container-pod", _netexec("test", 9080)))
    docs.append(_pod("host-test-container-pod", _sleeper(
        hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet", nodeName=nodes[0])))
    # HostPort: one port number, three pods on one node, by hostIP and protocol
    for i, (ip, proto) in enumerate((("127.0.0.1", "TCP"), (hp_ip, "TCP"), (hp_ip, "UDP")), 1):
        docs.append(_pod(f"hostport-{i}", _netexec(
            "hostport", 8080, 8080,
            [{"containerPort": 8080, "hostPort": HOST_PORT, "hostIP": ip, "protocol": proto}],
            nodeName=hp_node)))
    docs.append(_pod("e2e-host-exec", _sleeper(hostNetwork=True, nodeName=hp_node)))
    # Services: serve-hostname pods behind every Service of the tests below
    docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "hostnames", "namespace": NS},
                 "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "hostnames"}},
                          "template": {"metadata": {"labels": {"app": "hostnames"}},
                                       "spec": _netexec("hostnames", SERVE_PORT, SERVE_PORT)}}})
    switched = "None" if stage == 1 else "ClientIP"
    docs += [
        _service("nodeport-test", _hostnames("NodePort")),
        _service("affinity-clusterip", _hostnames("ClusterIP", "ClientIP")),
        _service("affinity-nodeport", _hostnames("NodePort", "ClientIP")),
        _service("affinity-clusterip-transition", _hostnames("ClusterIP", switched)),
        _service("affinity-nodeport-transition", _hostnames("NodePort", switched)),
        _service("externalsvc", _hostnames()),
    ]
    external_target = f"externalsvc.{NS}.svc.{zone}"
    if stage == 0:
        docs += [_service("externalname-service", _external("foo.example.com")),
                 _service("externalname-nodeport", _external("foo.example.com")),
                 _service("clusterip-service", _hostnames()),
                 _service("nodeport-service", _hostnames("NodePort"))]
    else:
        docs += [_service("externalname-service", _hostnames()),
                 _service("externalname-nodeport", _hostnames("NodePort")),
                 _service("clusterip-service", _external(external_target)),
                 _service("nodeport-service", _external(external_target))]
    # one port number over TCP and UDP; stage 1 keeps only TCP, stage 2 only UDP
    ports = [{"name": "tcp-port", "port": 80, "targetPort": 80, "protocol": "TCP"},
             {"name": "udp-port", "port": 80, "targetPort": 80, "protocol": "UDP"}]
    docs.append(_pod("multiport", _netexec("multiport", 80, 80, [
        {"name": "tcp-port", "containerPort": 80},
        {"name": "udp-port", "containerPort": 80, "protocol": "UDP"}]), {"app": "multiport"}))
    docs.append(_service("multiprotocol-test", {
        "selector": {"app": "multiport"},
        "ports": ports if stage == 0 else [ports[stage - 1]]}))
    # DNS: the probe pods are the endpoints of the Services they look up, as upstream's
    docs.append(_pod("dns-querier-1", _netexec("querier", 80, hostname="dns-querier-1",
                                               subdomain="dns-test-service"),
                     {"dns-test": "true"}))
    docs.append(_service("dns-test-service", {"clusterIP": "None",
                                              "selector": {"dns-test": "true"},
                                              "ports": _http(80, 80)}))
    docs.append(_service("test-service-2", {"selector": {"dns-test": "true"},
                                            "ports": _http(80, 80)}))
    docs.append(_pod("dns-querier-2", _netexec("querier", 80, hostname="dns-querier-2",
                                               subdomain="dns-test-service-2"),
                     {"dns-test-hostname-attribute": "true"}))
    docs.append(_service("dns-test-service-2", {
        "clusterIP": "None", "selector": {"dns-test-hostname-attribute": "true"},
        "ports": _http(80, 80)}))
    docs.append(_service("dns-test-service-3", (
        _external("foo.example.com") if stage == 0 else _external("bar.example.com")
        if stage == 1 else {"type": "ClusterIP", "ports": _http(80, 80)})))
    # dnsPolicy None: upstream gives 1.1.1.1; the lab gives its own cluster DNS, which the pod
    # then really asks, through the search path dnsConfig adds
    docs.append(_pod("test-dns-nameservers", _sleeper(
        dnsPolicy="None", dnsConfig={
            "nameservers": [str(the_plan.settings.dns_service_ip)],
            "searches": [f"{NS}.svc.{zone}", "resolv.conf.local"]})))
    return docs


# -- the stages ----------------------------------------------------------------------------------
class Stages:
    """The conformance namespace converged on the lab, moved forward a stage at a time."""

    def __init__(self, tmp: Path) -> None:
        self.folder = tmp / "manifests"
        shutil.copytree(manifests_dir(), self.folder)
        self.stage = -1
        self.plan = plan()
        self.plans: dict[int, Plan] = {}  # the plan of each stage reached

    def at(self, stage: int) -> Plan:
        """The plan at ``stage``, converging to it first when the lab is behind."""
        assert stage >= self.stage, f"stage {stage} comes before {self.stage}: tests out of order"
        if stage > self.stage:
            docs = manifests(plan(), stage)
            (self.folder / "zz-conformance.yaml").write_text(
                yaml.safe_dump_all(docs, sort_keys=False))
            converged(self.folder, "workloads")
            if stage == 0:
                # hostNetwork pods, hostPorts and dnsConfig converge idempotently too
                again = converge(self.folder, "workloads")
                changed = re.findall(r" changed=(\d+) ", again.stdout)
                assert again.returncode == 0 and changed and set(changed) == {"0"}, (
                    again.stdout[-3000:])
            self.stage = stage
            self.plan = self.plans[stage] = plan_of(self.folder)
            # every pod of the namespace runs, with its address reported
            wait_for(f"the {NS} pods running at stage {stage}", self.all_running, 90)
        return self.plan

    def all_running(self) -> bool:
        running = observed()
        return all(p.key in running and running[p.key].get("ip")
                   for p in self.plan.pods if p.namespace == NS)


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> Generator[Stages, None, None]:
    needs_lab()
    before = lab_state()
    record = saved_record()
    staged = Stages(tmp_path_factory.mktemp("conformance"))
    try:
        yield staged
    finally:
        converged_back(record)
        assert_restored(before, f"the conformance suite's namespace {NS}")


@pytest.fixture(autouse=True)
def _upstream_property(request: pytest.FixtureRequest,
                       record_property: Callable[[str, object], None]) -> None:
    """The upstream entry a test mirrors, in the JUnit report (make conformance reads it)."""
    for mark in request.node.iter_markers("upstream"):
        record_property("upstream", mark.args[0])


def upstream(key: str) -> pytest.MarkDecorator:
    from podnet import conformance

    conformance.entry(key)  # a typo fails at import
    return pytest.mark.upstream(key)


# -- helpers -------------------------------------------------------------------------------------
def key(name: str) -> str:
    return f"{NS}/{name}"


def pod_ip(the_plan: Plan, name: str) -> str:
    pod = the_plan.pod(key(name))
    ip = observed([pod.node])[key(name)]["ip"]
    assert ip, f"{key(name)} has no address"
    return str(ip)


def service(the_plan: Plan, name: str) -> ServicePlan:
    return next(s for s in the_plan.services if s.key == key(name))


def node_port(svc: ServicePlan) -> int:
    port = svc.ports[0].node_port
    assert port, f"{svc.key} has no NodePort"
    return port


def hostnames(the_plan: Plan) -> set[str]:
    return {p.host_name for p in the_plan.pods if p.labels.get("app") == "hostnames"}


def sh(name: str, the_plan: Plan, script: str) -> Evidence:
    """A shell command in the pod, as kubectl exec runs it."""
    return in_container(key(name), "sh", "-c", script, within=the_plan)


def curl(name: str, the_plan: Plan, url: str, timeout: int = 2) -> Evidence:
    return sh(name, the_plan, f"curl -g -q -s --connect-timeout {timeout} --max-time "
              f"{timeout + 3} {url}")


def udp(name: str, the_plan: Plan, host: str, port: int, message: str = "hostname") -> Evidence:
    return sh(name, the_plan, f"echo {message} | nc -u -w 2 {host} {port}")


def answers(check: Callable[[], Evidence], expected: set[str] | str, what: str,
            timeout: float = 30) -> Evidence:
    """Poll until the command's output (stripped) is ``expected`` (or one of a set)."""
    wanted = {expected} if isinstance(expected, str) else expected
    seen: list[Evidence] = []

    def ok() -> bool:
        seen.append(check())
        return seen[-1].stdout.strip() in wanted

    try:
        wait_for(what, ok, timeout, every=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; wanted one of {sorted(wanted)}, last: {seen[-1]}") from None
    return seen[-1]


def dig(name: str, the_plan: Plan, query: str, rtype: str, tcp: bool,
        search: bool = False) -> Evidence:
    flags = ["+short", "+tcp" if tcp else "+notcp", "+search" if search else "+nosearch",
             "+time=2", "+tries=1"]
    return sh(name, the_plan, f"dig {' '.join(flags)} {query} {rtype}")


def resolves(name: str, the_plan: Plan, query: str, rtype: str, expected: set[str] | str,
             search: bool = False) -> None:
    """The answer over UDP and over TCP, as upstream's two dig runs per name."""
    for tcp in (False, True):
        answers(partial(dig, name, the_plan, query, rtype, tcp, search), expected,
                f"{query} {rtype} over {'TCP' if tcp else 'UDP'} from {name}")


def affinity_trace(the_plan: Plan, url: str) -> list[str]:
    """Upstream's checkAffinity poll: 16 requests in a row from the client pod."""
    loop = (f"for i in $(seq 1 {AFFINITY_REQUESTS}); do curl -q -s --connect-timeout 2 "
            f"{url}; echo; done")
    out = sh("test-container-pod", the_plan, loop)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def affinity(the_plan: Plan, url: str, hold: bool) -> None:
    """Sticky (the last 15 answers from one pod) or spread (at least two pods among them),
    polled like upstream's checkAffinity (its 2 minutes, here 60 s)."""
    trace: list[str] = []

    def settled() -> bool:
        trace.extend(affinity_trace(the_plan, url))
        last = trace[-AFFINITY_CONFIRM:]
        if len(last) < AFFINITY_CONFIRM:
            return False
        return (len(set(last)) == 1) == hold

    try:
        wait_for(f"affinity {'holds' if hold else 'does not hold'} at {url}", settled, 60, 2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: answers {Counter(trace[-AFFINITY_CONFIRM:])}") from None
    assert set(trace[-AFFINITY_CONFIRM:]) <= hostnames(the_plan), trace


def reachable(the_plan: Plan, svc_name: str, node_ports: bool = False) -> None:
    """upstream's CheckServiceReachability: by name and ClusterIP (and every node's
    IP:NodePort), each answer from one of the serve-hostname pods."""
    svc = service(the_plan, svc_name)
    assert svc.cluster_ip, f"{svc.key} has no ClusterIP"
    pods = hostnames(the_plan)
    urls = [f"http://{svc_name}:80/hostname", f"http://{svc.cluster_ip}:80/hostname"]
    if node_ports:
        urls += [f"http://{n.address}:{node_port(svc)}/hostname" for n in the_plan.nodes]
    for url in urls:
        answers(partial(curl, "test-container-pod", the_plan, url), pods,
                f"{url} from test-container-pod")


# ================================ stage 0: as created ===========================================
@pytest.mark.parametrize("proto", [pytest.param("http", marks=upstream("intra-pod-http")),
                                   pytest.param("udp", marks=upstream("intra-pod-udp"))])
def test_networking_granular_intra_pod(stages: Stages, proto: str) -> None:
    """Granular checks, pod to pod: the test pod's netexec dials every netserver (one per node)
    and each answers with its own name (upstream: /dial with tries=1, retried)."""
    the_plan = stages.at(0)
    me = pod_ip(the_plan, "test-container-pod")
    port = 8083 if proto == "http" else 8081
    for i in range(len(the_plan.nodes)):
        target = pod_ip(the_plan, f"netserver-{i}")
        url = (f"'http://{me}:9080/dial?request=hostname&protocol={proto}&host={target}"
               f"&port={port}&tries=1'")
        answers(partial(curl, "test-container-pod", the_plan, url),
                f'{{"responses": ["netserver-{i}"], "errors": []}}',
                f"{proto} from test-container-pod to netserver-{i}")


@pytest.mark.parametrize("proto", [pytest.param("http", marks=upstream("node-pod-http")),
                                   pytest.param("udp", marks=upstream("node-pod-udp"))])
def test_networking_granular_node_pod(stages: Stages, proto: str) -> None:
    """Granular checks, node to pod: from a hostNetwork pod (the node's own network), every
    netserver answers its name over HTTP (curl) and UDP (nc)."""
    the_plan = stages.at(0)
    for i in range(len(the_plan.nodes)):
        ip = pod_ip(the_plan, f"netserver-{i}")
        if proto == "http":
            def check(ip: str = ip) -> Evidence:
                return sh("host-test-container-pod", the_plan, "curl -g -q -s --max-time 15 "
                          f"--connect-timeout 1 http://{ip}:8083/hostname")
        else:
            def check(ip: str = ip) -> Evidence:
                return sh("host-test-container-pod", the_plan,
                          f"echo hostname | nc -w 1 -u {ip} 8081")
        answers(check, f"netserver-{i}", f"{proto} from the node to netserver-{i}")


def test_host_network_pod_is_on_its_node(stages: Stages) -> None:
    """A hostNetwork pod has its node's address and hostname, is wired by no CNI, and with
    dnsPolicy ClusterFirstWithHostNet resolves the cluster's names from the node's network."""
    the_plan = stages.at(0)
    pod = the_plan.pod(key("host-test-container-pod"))
    node = next(n for n in the_plan.nodes if n.name == pod.node)
    assert pod_ip(the_plan, "host-test-container-pod") == node.address
    mine = sh("host-test-container-pod", the_plan, "readlink /proc/self/ns/net")
    nodes = run(pod.node, "readlink", "/proc/1/ns/net")
    assert mine.rc == 0 and mine.stdout == nodes.stdout, (mine, nodes)
    conf = sh("host-test-container-pod", the_plan, "cat /etc/resolv.conf")
    assert f"nameserver {the_plan.settings.dns_service_ip}\n" in conf.stdout, conf
    svc = service(the_plan, "test-service-2")
    got = answers(lambda: sh("host-test-container-pod", the_plan,
                             f"getent hosts test-service-2.{NS} | cut -d' ' -f1"),
                  str(svc.cluster_ip), "test-service-2 by name from the host network")
    assert got.rc == 0


@upstream("hostport")
def test_hostport_same_port_different_hostip_and_protocol(stages: Stages) -> None:
    """Three pods on one node share hostPort 54323: 127.0.0.1/TCP, the node's IP/TCP, the
    node's IP/UDP. From the node (a hostNetwork pod there) each answers at its own address and
    protocol; from another node, the node IP's two."""
    the_plan = stages.at(0)
    node = hostport_node(the_plan)
    ip = next(n.address for n in the_plan.nodes if n.name == node)
    local = answers(lambda: sh("e2e-host-exec", the_plan, "curl -g -s --connect-timeout 5 "
                               f"--interface {ip} http://127.0.0.1:{HOST_PORT}/hostname"),
                    "hostport-1", "127.0.0.1:54323/TCP on the node")
    assert local.rc == 0
    answers(lambda: sh("e2e-host-exec", the_plan,
                       f"curl -g -s --connect-timeout 5 http://{ip}:{HOST_PORT}/hostname"),
            "hostport-2", "node IP:54323/TCP on the node")
    answers(lambda: sh("e2e-host-exec", the_plan, f"echo hostname | nc -u -w 5 {ip} {HOST_PORT}"),
            "hostport-3", "node IP:54323/UDP on the node")
    other = next(n.name for n in the_plan.nodes if n.name != node)
    answers(lambda: run(other, "curl", "-g", "-s", "--connect-timeout", "5",
                        f"http://{ip}:{HOST_PORT}/hostname"),
            "hostport-2", f"{node}'s IP:54323/TCP from {other}")
    answers(lambda: run(other, "sh", "-c", f"echo hostname | nc -u -w 5 {ip} {HOST_PORT}"),
            "hostport-3", f"{node}'s IP:54323/UDP from {other}")
    refused = run(other, "curl", "-g", "-s", "--connect-timeout", "3",
                  f"http://127.0.0.1:{HOST_PORT}/hostname")
    assert refused.rc != 0, f"127.0.0.1:{HOST_PORT} is mapped on {other} too: {refused}"


@upstream("nodeport")
def test_functioning_nodeport_service(stages: Stages) -> None:
    """A NodePort Service answers by name, by ClusterIP and at every node's IP:NodePort."""
    reachable(stages.at(0), "nodeport-test", node_ports=True)


@upstream("affinity-clusterip")
def test_session_affinity_clusterip(stages: Stages) -> None:
    the_plan = stages.at(0)
    reachable(the_plan, "affinity-clusterip")
    svc = service(the_plan, "affinity-clusterip")
    affinity(the_plan, f"http://{svc.cluster_ip}:80/hostname", hold=True)


@upstream("affinity-nodeport")
def test_session_affinity_nodeport(stages: Stages) -> None:
    the_plan = stages.at(0)
    reachable(the_plan, "affinity-nodeport", node_ports=True)
    svc = service(the_plan, "affinity-nodeport")
    affinity(the_plan, f"http://{the_plan.nodes[0].address}:{node_port(svc)}/hostname",
             hold=True)


def transition_url(the_plan: Plan, kind: str) -> str:
    svc = service(the_plan, f"affinity-{kind}-transition")
    if kind == "clusterip":
        return f"http://{svc.cluster_ip}:80/hostname"
    return f"http://{the_plan.nodes[0].address}:{node_port(svc)}/hostname"


TRANSITIONS = [pytest.param("clusterip", marks=upstream("affinity-switch-clusterip")),
               pytest.param("nodeport", marks=upstream("affinity-switch-nodeport"))]


@pytest.mark.parametrize("kind", TRANSITIONS)
def test_switch_session_affinity_1_client_ip(stages: Stages, kind: str) -> None:
    """The affinity switch, first step: ClientIP holds."""
    the_plan = stages.at(0)
    affinity(the_plan, transition_url(the_plan, kind), hold=True)


@upstream("same-port-two-protocols")
def test_same_port_two_protocols_1_both(stages: Stages) -> None:
    """Port 80 of one Service over TCP and over UDP: both reach the pod."""
    the_plan = stages.at(0)
    ip = service(the_plan, "multiprotocol-test").cluster_ip
    answers(lambda: curl("test-container-pod", the_plan, f"http://{ip}:80/hostname"),
            "multiport", "TCP to port 80")
    answers(lambda: udp("test-container-pod", the_plan, str(ip), 80), "multiport",
            "UDP to port 80")


@upstream("dns-cluster")
def test_dns_for_the_cluster(stages: Stages) -> None:
    """The cluster's own name (its DNS Service; podnet has no kubernetes Service) over UDP and
    TCP from a pod."""
    the_plan = stages.at(0)
    dns = next(s for s in the_plan.services if s.key == DNS_SERVICE)
    namespace, name = DNS_SERVICE.split("/")
    zone = the_plan.settings.cluster_domain
    resolves("dns-querier-1", the_plan, f"{name}.{namespace}.svc.{zone}", "A", str(dns.cluster_ip))


def etc_hosts_lookup(the_plan: Plan, pod: str, subdomain: str) -> None:
    """The pod's FQDN and hostname from its /etc/hosts alone (getent's files source, not the
    cluster DNS, which has the FQDN too), on the kubelet's line for the pod."""
    ip = pod_ip(the_plan, pod)
    fqdn = f"{pod}.{subdomain}.{NS}.svc.{the_plan.settings.cluster_domain}"
    for name in (fqdn, pod):
        got = sh(pod, the_plan, f"getent -s files hosts {name}")
        assert got.rc == 0 and got.stdout.split() == [ip, fqdn, pod], got
    hosts = sh(pod, the_plan, "cat /etc/hosts")
    assert f"\n{ip}\t{fqdn}\t{pod}\n" in hosts.stdout, hosts


@upstream("dns-etc-hosts")
def test_dns_etc_hosts_entries(stages: Stages) -> None:
    """The pod's FQDN and hostname from its /etc/hosts (getent)."""
    etc_hosts_lookup(stages.at(0), "dns-querier-1", "dns-test-service")


def srv(the_plan: Plan, svc: str, target: str) -> str:
    return f"0 100 80 {target}.{svc}.{NS}.svc.{the_plan.settings.cluster_domain}." if target \
        else f"0 100 80 {svc}.{NS}.svc.{the_plan.settings.cluster_domain}."


@upstream("dns-services")
def test_dns_for_services(stages: Stages) -> None:
    """A of the headless Service, SRV of both, PTR of the ClusterIP: over UDP and TCP."""
    the_plan = stages.at(0)
    zone = the_plan.settings.cluster_domain
    ip = pod_ip(the_plan, "dns-querier-1")
    svc2 = service(the_plan, "test-service-2")
    resolves("dns-querier-1", the_plan, f"dns-test-service.{NS}.svc.{zone}", "A", ip)
    resolves("dns-querier-1", the_plan, f"_http._tcp.dns-test-service.{NS}.svc.{zone}", "SRV",
             srv(the_plan, "dns-test-service", "dns-querier-1"))
    resolves("dns-querier-1", the_plan, f"_http._tcp.test-service-2.{NS}.svc.{zone}", "SRV",
             srv(the_plan, "test-service-2", ""))
    reverse = ".".join(reversed(str(svc2.cluster_ip).split("."))) + ".in-addr.arpa"
    resolves("dns-querier-1", the_plan, reverse, "PTR", f"test-service-2.{NS}.svc.{zone}.")


@upstream("dns-partial-names")
def test_dns_partial_qualified_names(stages: Stages) -> None:
    """The same names cut short, through the pod's search path (dig +search)."""
    the_plan = stages.at(0)
    ip = pod_ip(the_plan, "dns-querier-1")
    for name in ("dns-test-service", f"dns-test-service.{NS}", f"dns-test-service.{NS}.svc"):
        resolves("dns-querier-1", the_plan, name, "A", ip, search=True)
    resolves("dns-querier-1", the_plan, f"_http._tcp.dns-test-service.{NS}.svc", "SRV",
             srv(the_plan, "dns-test-service", "dns-querier-1"), search=True)
    resolves("dns-querier-1", the_plan, f"_http._tcp.test-service-2.{NS}.svc", "SRV",
             srv(the_plan, "test-service-2", ""), search=True)


@upstream("dns-pod-hostname")
def test_dns_pods_hostname(stages: Stages) -> None:
    etc_hosts_lookup(stages.at(0), "dns-querier-2", "dns-test-service-2")


@upstream("dns-pod-subdomain")
def test_dns_pods_subdomain(stages: Stages) -> None:
    the_plan = stages.at(0)
    zone = the_plan.settings.cluster_domain
    ip = pod_ip(the_plan, "dns-querier-2")
    resolves("dns-querier-2", the_plan, f"dns-querier-2.dns-test-service-2.{NS}.svc.{zone}",
             "A", ip)
    resolves("dns-querier-2", the_plan, f"dns-test-service-2.{NS}.svc.{zone}", "A", ip)


def externalname_fqdn(the_plan: Plan) -> str:
    return f"dns-test-service-3.{NS}.svc.{the_plan.settings.cluster_domain}"


@upstream("dns-externalname")
def test_dns_externalname_1_cname(stages: Stages) -> None:
    the_plan = stages.at(0)
    resolves("dns-querier-1", the_plan, externalname_fqdn(the_plan), "CNAME", "foo.example.com.")


@upstream("dns-config")
def test_dns_configurable_nameservers(stages: Stages) -> None:
    """dnsPolicy None: the pod's resolv.conf is its dnsConfig (nameserver, searches), and its
    resolver uses it (a Service found through the search domain dnsConfig gave)."""
    the_plan = stages.at(0)
    conf = sh("test-dns-nameservers", the_plan, "cat /etc/resolv.conf")
    servers = re.findall(r"^nameserver (\S+)", conf.stdout, re.MULTILINE)
    searches = re.findall(r"^search (.*)$", conf.stdout, re.MULTILINE)
    assert servers == [str(the_plan.settings.dns_service_ip)], conf
    assert searches and "resolv.conf.local" in searches[0].split(), conf
    svc = service(the_plan, "test-service-2")
    answers(lambda: sh("test-dns-nameservers", the_plan, "getent hosts test-service-2 | cut "
                       "-d' ' -f1"), str(svc.cluster_ip), "test-service-2 through dnsConfig")


@upstream("kubelet-etc-hosts")
def test_kubelet_managed_etc_hosts(stages: Stages) -> None:
    """A pod's /etc/hosts is the kubelet's (its header, the pod's own line) and not the node's;
    a hostNetwork pod's is its node's, unmanaged."""
    the_plan = stages.at(0)
    header = "# Kubernetes-managed hosts file."
    pod = sh("dns-querier-1", the_plan, "cat /etc/hosts")
    node = run(the_plan.pod(key("dns-querier-1")).node, "cat", "/etc/hosts")
    assert pod.stdout.startswith(header) and pod.stdout != node.stdout, (pod, node)
    assert "\n127.0.0.1\tlocalhost\n" in pod.stdout, pod
    assert f"\n{pod_ip(the_plan, 'dns-querier-1')}\tdns-querier-1." in pod.stdout, pod
    host_pod = sh("e2e-host-exec", the_plan, "cat /etc/hosts")
    host_node = run(the_plan.pod(key("e2e-host-exec")).node, "cat", "/etc/hosts")
    assert host_pod.stdout == host_node.stdout and not host_pod.stdout.startswith(header), (
        host_pod, host_node)
    # and its resolv.conf is its node's too (ClusterFirst on the host network is Default)
    conf = sh("e2e-host-exec", the_plan, "cat /etc/resolv.conf")
    node_conf = run(the_plan.pod(key("e2e-host-exec")).node, "cat", "/etc/resolv.conf")
    assert conf.stdout == node_conf.stdout, (conf, node_conf)


# ================================ stage 1: the first updates ====================================
@pytest.mark.parametrize("kind", TRANSITIONS)
def test_switch_session_affinity_2_none(stages: Stages, kind: str) -> None:
    """sessionAffinity ClientIP -> None: requests spread over the pods."""
    the_plan = stages.at(1)
    affinity(the_plan, transition_url(the_plan, kind), hold=False)


@upstream("externalname-to-clusterip")
def test_change_type_externalname_to_clusterip(stages: Stages) -> None:
    the_plan = stages.at(1)
    reachable(the_plan, "externalname-service")


@upstream("externalname-to-nodeport")
def test_change_type_externalname_to_nodeport(stages: Stages) -> None:
    the_plan = stages.at(1)
    reachable(the_plan, "externalname-nodeport", node_ports=True)


def now_external(stages: Stages, name: str) -> None:
    """The Service is ExternalName now: its ClusterIP (and NodePort) left every node's rules,
    and its name is a CNAME to externalsvc, which resolves to externalsvc's ClusterIP."""
    the_plan = stages.at(1)
    before = service(stages.plans[0], name)
    assert service(the_plan, name).cluster_ip is None
    gone = [str(before.cluster_ip)] + [f"--dport {p.node_port}" for p in before.ports
                                       if p.node_port]
    for node in the_plan.nodes:
        rules = run(node.name, "iptables-save", "-t", "nat")
        left = [g for g in gone if g in rules.stdout]
        assert not left, f"{node.name} still has {left} of {name}"
    zone = the_plan.settings.cluster_domain
    fqdn = f"{name}.{NS}.svc.{zone}"
    target = f"externalsvc.{NS}.svc.{zone}"
    resolves("dns-querier-1", the_plan, fqdn, "CNAME", f"{target}.")
    ip = str(service(the_plan, "externalsvc").cluster_ip)
    answers(lambda: sh("test-container-pod", the_plan, f"getent hosts {fqdn} | cut -d' ' -f1"),
            ip, f"{fqdn} through its CNAME")


@upstream("clusterip-to-externalname")
def test_change_type_clusterip_to_externalname(stages: Stages) -> None:
    now_external(stages, "clusterip-service")


@upstream("nodeport-to-externalname")
def test_change_type_nodeport_to_externalname(stages: Stages) -> None:
    now_external(stages, "nodeport-service")


@upstream("same-port-two-protocols")
def test_same_port_two_protocols_2_tcp_only(stages: Stages) -> None:
    """The UDP port removed: TCP still answers, UDP stops."""
    the_plan = stages.at(1)
    ip = str(service(the_plan, "multiprotocol-test").cluster_ip)
    answers(lambda: curl("test-container-pod", the_plan, f"http://{ip}:80/hostname"),
            "multiport", "TCP to port 80")
    refused(the_plan, "UDP", ip)


def refused(the_plan: Plan, proto: str, ip: str) -> None:
    """The Service's port over ``proto`` stops answering (upstream: within 30 s), while the pod
    still answers the same request at its own address: the Service, not the pod or the tools."""
    pod = pod_ip(the_plan, "multiport")

    def ask(host: str) -> Evidence:
        if proto == "UDP":
            return udp("test-container-pod", the_plan, host, 80)
        return curl("test-container-pod", the_plan, f"http://{host}:80/hostname")

    answers(lambda: ask(ip), "", f"{proto} to the Service's port 80 fails")
    last = ask(ip)
    assert last.stdout.strip() == "" and (proto == "UDP" or last.rc != 0), last
    answers(lambda: ask(pod), "multiport", f"{proto} to the pod itself")


@upstream("dns-externalname")
def test_dns_externalname_2_changed(stages: Stages) -> None:
    the_plan = stages.at(1)
    resolves("dns-querier-1", the_plan, externalname_fqdn(the_plan), "CNAME", "bar.example.com.")


# ================================ stage 2: the second updates ===================================
@pytest.mark.parametrize("kind", TRANSITIONS)
def test_switch_session_affinity_3_client_ip_again(stages: Stages, kind: str) -> None:
    """sessionAffinity None -> ClientIP: sticky again."""
    the_plan = stages.at(2)
    affinity(the_plan, transition_url(the_plan, kind), hold=True)


@upstream("same-port-two-protocols")
def test_same_port_two_protocols_3_udp_only(stages: Stages) -> None:
    """Only the UDP port: UDP answers, TCP stops."""
    the_plan = stages.at(2)
    ip = str(service(the_plan, "multiprotocol-test").cluster_ip)
    answers(lambda: udp("test-container-pod", the_plan, ip, 80), "multiport", "UDP to port 80")
    refused(the_plan, "TCP", ip)


@upstream("dns-externalname")
def test_dns_externalname_3_clusterip(stages: Stages) -> None:
    the_plan = stages.at(2)
    svc = service(the_plan, "dns-test-service-3")
    assert svc.cluster_ip
    resolves("dns-querier-1", the_plan, externalname_fqdn(the_plan), "A", str(svc.cluster_ip))
