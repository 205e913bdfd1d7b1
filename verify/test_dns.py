"""Service DNS: pods find Services by name (the article's DNS principle). The cluster DNS
answers every record of the Kubernetes DNS spec 1.1.0 exactly as the model says, through the
kube-dns Service, with the search list and ndots:5 a pod gets, and forwards the rest upstream.
The Service looked up by name and the pods that ask come from the plan by shape (targets.py)."""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from functools import cache

import pytest
import targets
from conftest import (
    Evidence,
    container_units,
    outside_client,
    params,
    plan,
    run,
    running,
    selected,
    servers,
    target,
    upstream,
    upstream_name,
    upstream_zones,
)

from podnet import clusterdns, dns

pytestmark = pytest.mark.principle("service DNS")

DNS_IP = str(plan().settings.dns_service_ip)
ZONE = plan().settings.cluster_domain
# the Service looked up by every name form, from a pod in its namespace and one in another
NAMES = selected(targets.dns_names)
# a name in the zone whatever the manifests hold: that Service's, else kube-dns's
FQDN = (NAMES.service if NAMES else plan().dns_service).fqdn


def askers() -> dict[str, str]:
    """Namespace -> the first pod running the test server there, for the first two namespaces
    that have one: the pods the record tests ask from (on the demo demo/db-0, other/client)."""
    out: dict[str, str] = {}
    for key in servers():
        out.setdefault(plan().pod(key).namespace, key)
    return dict(list(out.items())[:2])


ASKERS = askers()


def client(namespace: str | None = None) -> str:
    """A pod running the test server in ``namespace``; by default the first of them."""
    if not ASKERS:
        pytest.skip(str(targets.NotInPlan(targets.SERVER_POD)))
    return ASKERS[namespace] if namespace else next(iter(ASKERS.values()))


def names() -> targets.DnsNames:
    return target(targets.dns_names)


def mixed_case(name: str) -> str:
    """``name`` with the case of its letters alternating in each label (web -> WeB)."""
    return ".".join("".join(c.upper() if i % 2 == 0 else c.lower() for i, c in enumerate(label))
                    for label in name.split("."))


def in_container(key: str, *argv: str) -> Evidence:
    """Run a command inside a pod as kubectl exec would: in its first container's network,
    mount (so the pod's /etc/resolv.conf) and UTS namespaces."""
    pod = plan().pod(key)
    unit = container_units(key)[0]
    script = (f"pid=$(systemctl show -p MainPID --value {shlex.quote(unit)}) && "
              f"exec nsenter --target \"$pid\" --net --mount --uts -- {shlex.join(argv)}")
    return run(pod.node, "sh", "-c", script)


@cache
def served() -> list[dns.DNSRecord]:
    ips = {key: pod["ip"] for key, pod in running().items() if pod.get("ip")}
    return dns.served(plan(), ips)


def expected(name: str, rtype: str) -> set[str]:
    return {dns.rr_line(r) for r in served() if r.name == name and r.type == rtype}


def dig(where: str, *args: str) -> Evidence:
    """dig against the kube-dns Service IP from a node (name) or a pod (ns/name)."""
    argv = ["dig", f"@{DNS_IP}", "+time=2", "+tries=2", *args]
    return in_container(where, *argv) if "/" in where else run(where, *argv)


def answers(evidence: Evidence) -> set[str]:
    """The answer section as "name ttl IN type data" lines (dig +noall +answer)."""
    return {" ".join(line.split()) for line in evidence.stdout.splitlines()
            if line.strip() and not line.startswith(";")}


def status(evidence: Evidence) -> str:
    match = re.search(r"status: (\w+)", evidence.stdout)
    return match.group(1) if match else "no answer"


def ask(where: str, name: str, rtype: str, *flags: str) -> Evidence:
    """One query, printed with its status line (+comments) and its answer section."""
    return dig(where, *flags, "+noall", "+comments", "+answer", name, rtype)


def assert_answer(got: Evidence, want: set[str]) -> None:
    """The answer is NOERROR and exactly ``want`` (a record more fails as one less does);
    an empty ``want`` would pass against an empty answer, so it fails here first."""
    assert want, f"nothing expected for {got.command}: the model serves no such record"
    assert got.rc == 0 and status(got) == "NOERROR", got
    assert answers(got) == want, f"want {sorted(want)}{got}"


def groups() -> dict[str, list[tuple[str, str]]]:
    """The (name, type) pairs of the served records, grouped by what they belong to."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for svc in plan().services:
        fqdn = f"{svc.fqdn}."
        for r in dns.records(plan()):
            if r.name.endswith(fqdn) and not r.name.startswith("<ip>"):
                out[svc.key].add((r.name, r.type))
    return {k: sorted(v) for k, v in out.items()}


@cache
def dns_pods() -> list[dict[str, object]]:
    return [p for node in plan().nodes
            for p in clusterdns.dns_pods(plan(), {k: v["ip"] for k, v in running().items()},
                                         node.name)]


# -- the DNS pods ------------------------------------------------------------------------------
@pytest.mark.parametrize("dns_pod", targets.dns_pods(plan()))
def test_dns_pod_reports_healthy_and_ready_with_the_models_serial(dns_pod: str) -> None:
    ip = running()[dns_pod]["ip"]
    node = plan().pod(dns_pod).node
    health = run(node, "curl", "-s", "-w", " %{http_code}", "--max-time", "5",
                 f"http://{ip}:8080/health")
    assert health.rc == 0 and health.stdout.startswith("OK ") and health.stdout.endswith(" 200"), \
        health
    serial = str(served()[0].data).split()[2]
    ready = run(node, "curl", "-s", "-w", " %{http_code}", "--max-time", "5",
                f"http://{ip}:8080/ready")
    assert ready.rc == 0 and f"SOA: NOERROR {serial} " in ready.stdout, ready
    assert ready.stdout.endswith(" 200"), ready


def test_dns_pods_run_on_different_nodes() -> None:
    nodes = [plan().pod(str(p["key"])).node for p in dns_pods()]
    assert len(nodes) == plan().settings.dns_replicas == len(set(nodes)), nodes


# -- every record, as the model says -----------------------------------------------------------
def test_zone_apex_and_schema_version() -> None:
    for name, rtype in ((f"{ZONE}.", "SOA"), (f"{ZONE}.", "NS"), (f"ns.dns.{ZONE}.", "A"),
                        (f"dns-version.{ZONE}.", "TXT")):
        got = ask(client(), name, rtype)
        assert got.rc == 0 and answers(got) == expected(name, rtype), got
        assert_answer(got, expected(name, rtype))


@pytest.mark.parametrize("service", sorted(groups()))
def test_service_records_match_the_model(service: str) -> None:
    """A, SRV, CNAME and headless hostname records under the Service's name, and PTRs for
    its ClusterIP or endpoints; each answer compared, TTL included, with the model."""
    fqdn = f"{plan().service(service).fqdn}."
    names = {(r.name, r.type) for r in served()
             if r.name.endswith(fqdn) or (r.type == "PTR" and r.data == fqdn)
             or (r.type == "PTR" and str(r.data).endswith("." + fqdn))}
    assert names, f"the model serves nothing for {service}"
    for name, rtype in sorted(names):
        got = ask(client(), name, rtype)
        want = expected(name, rtype)
        have = {line for line in answers(got) if line.split()[3] == rtype
                and line.split()[0] == name}
        assert got.rc == 0 and have == want, f"{name} {rtype}: want {sorted(want)}{got}"
        assert_answer(got, want)  # and nothing else in the answer


def spec_names(service: str) -> dict[tuple[str, str], set[str]]:
    """What the DNS spec 1.1.0 gives a ClusterIP Service, from the plan alone (not dns.py):
    an A record for its ClusterIP and an SRV record per named port; a port without a name
    has none (2.4.1)."""
    svc = plan().service(service)
    fqdn = f"{svc.fqdn}."
    out = {(fqdn, "A"): {f"{fqdn} 5 IN A {svc.cluster_ip}"}}
    for port in svc.ports:
        if port.name:
            name = f"_{port.name}._{port.protocol.lower()}.{fqdn}"
            out[(name, "SRV")] = {f"{name} 5 IN SRV 0 100 {port.port} {fqdn}"}
    return out


CLUSTER_IP_SERVICES = [s.key for s in plan().services if s.cluster_ip and not s.headless]


@pytest.mark.parametrize("service", CLUSTER_IP_SERVICES)
def test_cluster_ip_service_records_are_the_specs_and_no_more(service: str) -> None:
    """Checked against the spec, not only the model: a spurious record the model serves (an
    extra A, an SRV for a port without a name: demo/api-local's) is answered as the model
    says and passes the test above; here it fails."""
    fqdn = f"{plan().service(service).fqdn}."
    spec = spec_names(service)
    model = {(r.name, r.type) for r in served() if r.name.endswith(fqdn)}
    assert model == set(spec), f"{service}: the model serves {sorted(model)}, the spec gives " \
        f"{sorted(spec)}"
    for (name, rtype), want in sorted(spec.items()):
        assert_answer(ask(client(), name, rtype), want)


def test_a_port_without_a_name_is_in_the_plan() -> None:
    """The spec test above sees an unnamed port (else its no-SRV rule is never exercised)."""
    unnamed = target(targets.unnamed_port_services)
    assert unnamed and set(unnamed) <= set(CLUSTER_IP_SERVICES), (unnamed, CLUSTER_IP_SERVICES)


def test_external_name_is_a_cname() -> None:
    """The cluster DNS answers an ExternalName Service with a CNAME to its externalName,
    whatever the target's own answer is (NXDOMAIN for a name nothing serves)."""
    svc = target(targets.external_name_service)
    got = ask(client(), f"{svc.fqdn}.", "A")
    assert status(got) in ("NOERROR", "NXDOMAIN"), got
    assert f"{svc.fqdn}. 5 IN CNAME {svc.external_name}." in answers(got), got


def test_external_name_is_a_cname_followed_to_the_upstreams_address() -> None:
    upstream()  # the name it points to must resolve upstream
    zones = upstream_zones()
    served = [s for s in plan().services if s.type == "ExternalName" and any(
        (s.external_name or "").rstrip(".").endswith(f".{z.rstrip('.')}") for z in zones)]
    if not served:
        pytest.skip(f"the plan has no ExternalName Service whose externalName is in the upstream "
                    f"DNS's zones ({', '.join(zones)}): add one to run this test")
    svc = served[0]
    got = ask(client(), f"{svc.fqdn}.", "A")
    assert status(got) == "NOERROR", got
    lines = answers(got)
    assert f"{svc.fqdn}. 5 IN CNAME {svc.external_name}." in lines, got
    assert any(line.startswith(f"{svc.external_name}. ") and " IN A " in line
               for line in lines), got


def test_pod_a_record(pod: str) -> None:
    ip = running()[pod]["ip"]
    name = f"{ip.replace('.', '-')}.{plan().pod(pod).namespace}.pod.{ZONE}."
    got = dig(list(ASKERS.values())[-1] if ASKERS else client(), "+noall", "+answer", name,
              "A")
    assert answers(got) == {f"{name} 5 IN A {ip}"}, got


def absent_names() -> list[str]:
    """Names in the zone nothing has: a Service its namespace lacks, a namespace no Service is
    in, a label more than a Service name, a pod address no pod has, and a bare label."""
    if not NAMES:
        return []
    svc, ns = NAMES.service.name, NAMES.service.namespace
    return [f"{targets.unused_service_name(plan(), ns, 'nothing-here')}.{ns}.svc",
            f"{svc}.no-such-namespace.svc", f"{svc}.{ns}.svc.extra", f"1-2-3-4.{ns}.pod",
            "no-such-record"]


@pytest.mark.parametrize("name", params(absent_names(), targets.DNS_NAMES))
def test_absent_names_in_the_zone_are_nxdomain_with_the_soa(name: str) -> None:
    got = dig(client(), "+noall", "+comments", "+authority", f"{name}.{ZONE}.", "A")
    assert status(got) == "NXDOMAIN", got
    soa = expected(f"{ZONE}.", "SOA")
    assert soa and soa <= answers(got), got
    assert answers(got) == soa, got  # the SOA and nothing else


def test_a_name_that_exists_has_no_aaaa_but_is_not_nxdomain() -> None:
    got = dig(client(), "+noall", "+comments", "+answer", f"{names().service.fqdn}.", "AAAA")
    assert status(got) == "NOERROR" and not answers(got), got


def test_names_are_compared_case_insensitively() -> None:
    svc = names().service
    name = f"{mixed_case(f'{svc.name}.{svc.namespace}.svc')}.{ZONE.upper()}."
    got = ask(client(), name, "A")
    assert status(got) == "NOERROR" and len(answers(got)) == 1, got
    assert {line.split()[4] for line in answers(got)} == {svc.cluster_ip}, got


def test_queries_over_tcp() -> None:
    name = f"{names().service.fqdn}."
    got = ask(client(), name, "A", "+tcp")
    assert answers(got) == expected(name, "A"), got
    assert_answer(got, expected(name, "A"))


# -- the pod's resolver: search list and ndots:5 -----------------------------------------------
def short_forms() -> list[str]:
    """Every form of the Service's name a pod's search list may complete (web, web.demo, ...)."""
    if not NAMES:
        return []
    name, ns = NAMES.service.name, NAMES.service.namespace
    return [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.{ZONE}",
            f"{name}.{ns}.svc.{ZONE}."]


CLIENTS = list(NAMES.clients) if NAMES else []  # its namespace, then another


@pytest.mark.parametrize("namespace", params(CLIENTS, targets.DNS_NAMES))
@pytest.mark.parametrize("form", params(short_forms(), targets.DNS_NAMES))
def test_search_list_resolves_service_names(namespace: str, form: str) -> None:
    """From a pod in the Service's namespace every form finds it; from a pod in another
    namespace only the forms that name the namespace do (the short name is searched in the
    pod's own)."""
    svc, clients = names().service, names().clients
    got = in_container(clients[namespace], "getent", "ahostsv4", form)
    found = {line.split()[0] for line in got.stdout.splitlines() if line.strip()}
    if namespace == svc.namespace or form != svc.name:
        assert got.rc == 0 and found == {svc.cluster_ip}, got
    else:
        assert got.rc == 2 and not found, got


@pytest.mark.parametrize("name, searched_first", [
    (name, name.count(".") < 5) for name in (
        "www.example.test",        # 2 dots < ndots:5: the search list is tried first
        FQDN,                      # web.demo.svc.cluster.local, 4 dots: still searched first
        "a.b.c.d.e.example.test",  # 5 dots or more: asked as is first
    )])
def test_ndots_5_decides_whether_the_search_list_comes_first(name: str, searched_first: bool
                                                             ) -> None:
    pod = client()
    conf = in_container(pod, "cat", "/etc/resolv.conf")
    assert "options ndots:5" in conf.stdout, conf
    search = next(line.split()[1:] for line in conf.stdout.splitlines()
                  if line.startswith("search"))
    got = in_container(pod, "dig", "+search", "+showsearch", "+time=2", "+noall", "+comments",
                       "+question", name, "A")
    asked = [m.group(1).rstrip(".") for m in re.finditer(r"^;([^;\s]\S*)\s+IN\s+A$",
                                                           got.stdout, re.MULTILINE)]
    with_search = [f"{name}.{s}" for s in search]
    assert asked, got
    if searched_first:
        assert asked[:len(search)] == with_search[:len(asked[:len(search)])], got
        assert asked[0] == with_search[0], got
    else:
        assert asked[0] == name, got


# -- upstream, access, end to end --------------------------------------------------------------
@pytest.mark.parametrize("namespace", params(list(ASKERS), targets.SERVER_POD))
def test_external_names_are_answered_through_the_upstream(namespace: str) -> None:
    server = upstream()
    external = upstream_name()
    direct = run(server.name, "dig", "+short", f"@{server.address}", external, "A")
    assert direct.rc == 0 and direct.stdout.strip(), direct
    got = in_container(client(namespace), "getent", "ahostsv4", external)
    assert got.rc == 0 and {line.split()[0] for line in got.stdout.splitlines()} \
        == set(direct.stdout.split()), got


def test_nodes_may_ask_the_cluster_dns() -> None:
    name = f"{names().service.fqdn}."
    for node in plan().nodes:
        got = ask(node.name, name, "A")
        assert answers(got) == expected(name, "A"), got
        assert_answer(got, expected(name, "A"))


def test_the_cluster_dns_refuses_hosts_outside_the_cluster_and_node_networks() -> None:
    """The client host gets a route to a DNS pod through its node; its query arrives (the
    answer is REFUSED, not a timeout) and is refused, while the node's is answered."""
    outsider = outside_client()
    pod = dns_pods()[0]
    node = plan().pod(str(pod["key"])).node
    via = next(n.address for n in plan().nodes if n.name == node)
    route = ["ip", "route", "replace", f"{pod['ip']}/32", "via", via]
    added = run(outsider.name, *route)
    assert added.rc == 0, added
    try:
        refused = run(outsider.name, "dig", f"@{pod['ip']}", "+time=2", "+tries=1",
                      f"{FQDN}.", "A")
        assert status(refused) == "REFUSED", refused
    finally:
        run(outsider.name, "ip", "route", "del", f"{pod['ip']}/32", "via", via)
    allowed = run(node, "dig", f"@{pod['ip']}", "+time=2", "+tries=1", f"{FQDN}.")
    assert status(allowed) == "NOERROR", allowed


@pytest.mark.quick
@pytest.mark.parametrize("namespace", params(CLIENTS, targets.DNS_NAMES))
def test_a_pod_reaches_a_service_by_name(namespace: str) -> None:
    svc, clients = names().service, names().clients
    name = svc.name if namespace == svc.namespace else f"{svc.name}.{svc.namespace}"
    port = svc.ports[0].port
    backends = {plan().pod(e.pod).host_name for e in svc.ports[0].endpoints}
    got = in_container(clients[namespace], "curl", "-s", "--max-time", "5",
                       f"http://{name}:{port}/hostname")
    assert got.rc == 0 and got.stdout.strip() in backends, got
