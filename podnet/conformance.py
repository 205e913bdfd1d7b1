"""Kubernetes' [sig-network] conformance tests, and what podnet does with each.

The list is the 41 entries of kubernetes/kubernetes test/conformance/testdata/conformance.yaml
(v1.32) whose codename holds ``[sig-network]``. The 23 that need packets to flow or names to
resolve are mirrored on podnet's hosts by verify/test_conformance.py: each of its tests is
marked ``upstream(KEY)`` with the key of the entry it mirrors (a test may be one step of an
upstream test, as the affinity switch's three). The other 18 exercise only the API server,
which podnet does not have; ``why_not`` says so for each. docs/conformance.md is this table
(``python -m podnet conformance`` prints it; a unit test keeps the two in step).
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SUITE = Path(__file__).resolve().parent.parent / "verify" / "test_conformance.py"
UPSTREAM_LIST = ("kubernetes/kubernetes test/conformance/testdata/conformance.yaml, v1.32 "
                 "(commit 002c17be)")


@dataclass(frozen=True)
class Entry:
    key: str  # the upstream(KEY) marker of the verify tests that mirror it
    codename: str
    checks: str  # what the upstream test checks, in a line
    why_not: str = ""  # empty: mirrored; else why it does not apply to podnet

    @property
    def mirrored(self) -> bool:
        return not self.why_not


_GRANULAR = "[sig-network] Networking Granular Checks: Pods should function for "
_SVC = "[sig-network] Services should "
_DNS = "[sig-network] DNS should "
_NO_API = "podnet has no API server: "

ENTRIES: tuple[Entry, ...] = (
    Entry("intra-pod-http", f"{_GRANULAR}intra-pod communication: http [NodeConformance] "
          "[Conformance]", "a pod reaches a netserver pod on every node over HTTP, each "
          "answering its own name"),
    Entry("intra-pod-udp", f"{_GRANULAR}intra-pod communication: udp [NodeConformance] "
          "[Conformance]", "the same over UDP"),
    Entry("node-pod-http", f"{_GRANULAR}node-pod communication: http [LinuxOnly] "
          "[NodeConformance] [Conformance]", "a hostNetwork pod reaches every netserver pod "
          "over HTTP"),
    Entry("node-pod-udp", f"{_GRANULAR}node-pod communication: udp [LinuxOnly] "
          "[NodeConformance] [Conformance]", "the same over UDP"),
    Entry("hostport", "[sig-network] HostPort validates that there is no conflict between pods "
          "with same hostPort but different hostIP and protocol [LinuxOnly] [Conformance]",
          "three pods on one node share hostPort 54323 (127.0.0.1/TCP, node IP/TCP, node "
          "IP/UDP); each is reached at its own address and protocol"),
    Entry("nodeport", f"{_SVC}be able to create a functioning NodePort service [Conformance]",
          "a NodePort Service answers by name, by ClusterIP and at nodes' IP:NodePort"),
    Entry("externalname-to-clusterip", f"{_SVC}be able to change the type from ExternalName "
          "to ClusterIP [Conformance]", "an ExternalName Service turned ClusterIP gets a "
          "ClusterIP and answers by name and by it"),
    Entry("externalname-to-nodeport", f"{_SVC}be able to change the type from ExternalName to "
          "NodePort [Conformance]", "the same to NodePort, answering at nodes' IP:NodePort too"),
    Entry("clusterip-to-externalname", f"{_SVC}be able to change the type from ClusterIP to "
          "ExternalName [Conformance]", "a ClusterIP Service turned ExternalName loses its "
          "ClusterIP and its name resolves through the CNAME"),
    Entry("nodeport-to-externalname", f"{_SVC}be able to change the type from NodePort to "
          "ExternalName [Conformance]", "the same from NodePort, its NodePort released"),
    Entry("affinity-clusterip", f"{_SVC}have session affinity work for service with type "
          "clusterIP [LinuxOnly] [Conformance]", "ClientIP affinity: 15 requests in a row "
          "from one pod reach one pod"),
    Entry("affinity-nodeport", f"{_SVC}have session affinity work for NodePort service "
          "[LinuxOnly] [Conformance]", "the same at a node's IP:NodePort"),
    Entry("affinity-switch-clusterip", f"{_SVC}be able to switch session affinity for service "
          "with type clusterIP [LinuxOnly] [Conformance]", "ClientIP, then None (requests "
          "spread), then ClientIP again (sticky)"),
    Entry("affinity-switch-nodeport", f"{_SVC}be able to switch session affinity for NodePort "
          "service [LinuxOnly] [Conformance]", "the same at a node's IP:NodePort"),
    Entry("same-port-two-protocols", f"{_SVC}serve endpoints on same port and different "
          "protocols [Conformance]", "port 80 over TCP and UDP both answer; with one "
          "protocol's port removed only that protocol fails"),
    Entry("dns-cluster", f"{_DNS}provide DNS for the cluster [Conformance]",
          "a pod resolves the cluster's own names over UDP and TCP"),
    Entry("dns-etc-hosts", f"{_DNS}provide /etc/hosts entries for the cluster [Conformance]",
          "a pod finds its hostname and FQDN in its kubelet-managed /etc/hosts"),
    Entry("dns-services", f"{_DNS}provide DNS for services [Conformance]",
          "A and SRV records of a headless and a normal Service, PTR of a ClusterIP, over "
          "UDP and TCP"),
    Entry("dns-partial-names", f"{_DNS}resolve DNS of partial qualified names for services "
          "[LinuxOnly] [Conformance]", "the same names cut short, through the pod's search "
          "path"),
    Entry("dns-pod-hostname", f"{_DNS}provide DNS for pods for Hostname [Conformance]",
          "a pod with hostname and subdomain finds its FQDN and hostname"),
    Entry("dns-pod-subdomain", f"{_DNS}provide DNS for pods for Subdomain [Conformance]",
          "A records of the pod's hostname.subdomain and of the headless Service"),
    Entry("dns-externalname", f"{_DNS}provide DNS for ExternalName services [Conformance]",
          "an ExternalName Service is a CNAME that follows its changes, then an A record once "
          "it is ClusterIP"),
    Entry("dns-config", f"{_DNS}support configurable pod DNS nameservers [Conformance]",
          "a pod with dnsPolicy None gets dnsConfig's nameservers and searches"),
    Entry("basic-endpoint", f"{_SVC}serve a basic endpoint from pods [Conformance]",
          "Endpoints and EndpointSlices follow pods added and deleted",
          _NO_API + "the Endpoints objects it reads do not exist (a Service's endpoints are "
          "proved on the hosts by test_services.py and test_services_lifecycle.py)"),
    Entry("multiport-endpoints", f"{_SVC}serve multiport endpoints from pods [Conformance]",
          "Endpoints of a two-port Service follow pods per port",
          _NO_API + "no Endpoints objects (named ports per pod are proved by "
          "test_services.py)"),
    Entry("master-service", f"{_SVC}provide secure master service [Conformance]",
          "the default/kubernetes Service exists", _NO_API + "no kubernetes Service to serve"),
    Entry("list-all-namespaces", f"{_SVC}find a service from listing all namespaces "
          "[Conformance]", "listing Services in all namespaces finds default/kubernetes",
          _NO_API + "no list call"),
    Entry("service-status", f"{_SVC}complete a service status lifecycle [Conformance]",
          "get, patch and update a Service's /status, watched", _NO_API + "no status "
          "subresource"),
    Entry("delete-collection", f"{_SVC}delete a collection of services [Conformance]",
          "DeleteCollection by label", _NO_API + "manifests are removed from the folder"),
    Entry("endpoint-lifecycle", f"{_SVC}test the lifecycle of an Endpoint [Conformance]",
          "create, patch and delete a hand-made Endpoints object",
          _NO_API + "no Endpoints objects"),
    Entry("endpoint-latency", "[sig-network] Service endpoints latency should not be very high "
          "[Conformance]", "the endpoints controller's latency (p50 < 20 s, p90 < 50 s)",
          _NO_API + "no endpoints controller (bench/ measures podnet's own converge and "
          "failover times)"),
    Entry("endpointslice-pods", "[sig-network] EndpointSlice should create Endpoints and "
          "EndpointSlices for Pods matching a Service [Conformance]",
          "the controller writes EndpointSlices for a Service's pods",
          _NO_API + "no EndpointSlice controller"),
    Entry("endpointslice-selector", "[sig-network] EndpointSlice should create and delete "
          "Endpoints and EndpointSlices for a Service with a selector specified [Conformance]",
          "EndpointSlices come and go with the Service", _NO_API + "no EndpointSlice "
          "controller"),
    Entry("endpointslice-apiserver", "[sig-network] EndpointSlice should have Endpoints and "
          "EndpointSlices pointing to API Server [Conformance]",
          "default/kubernetes has EndpointSlices to the API servers", _NO_API + "no API "
          "servers to point to"),
    Entry("endpointslice-api", "[sig-network] EndpointSlice should support creating "
          "EndpointSlice API operations [Conformance]", "CRUD on endpointslices",
          _NO_API + "no API operations"),
    Entry("endpointslice-mirroring", "[sig-network] EndpointSliceMirroring should mirror a "
          "custom Endpoints resource through create update and delete [Conformance]",
          "custom Endpoints mirrored to EndpointSlices", _NO_API + "no mirroring controller"),
    Entry("ingress-api", "[sig-network] Ingress API should support creating Ingress API "
          "operations [Conformance]", "CRUD and status on ingresses",
          _NO_API + "no API operations (the Ingress data path is proved by test_ingress.py)"),
    Entry("ingressclass-api", "[sig-network] IngressClass API should support creating "
          "IngressClass API operations [Conformance]", "CRUD on ingressclasses",
          _NO_API + "no API operations"),
    Entry("proxy-service-pod", "[sig-network] Proxy version v1 should proxy through a service "
          "and a pod [Conformance]", "the API server's services/proxy and pods/proxy",
          _NO_API + "no proxy subresource"),
    Entry("proxy-with-path", "[sig-network] Proxy version v1 A set of valid responses are "
          "returned for both pod and service ProxyWithPath [Conformance]",
          "HTTP methods through the proxy subresource with a path",
          _NO_API + "no proxy subresource"),
    Entry("proxy", "[sig-network] Proxy version v1 A set of valid responses are returned for "
          "both pod and service Proxy [Conformance]", "HTTP methods through the proxy "
          "subresource", _NO_API + "no proxy subresource"),
)

# The [sig-node] test of the kubelet-managed /etc/hosts (not one of the 41): mirrored too, as
# hostNetwork pods and the pods' /etc/hosts are what the DNS tests above stand on
EXTRA: tuple[Entry, ...] = (
    Entry("kubelet-etc-hosts", "[sig-node] KubeletManagedEtcHosts should test kubelet managed "
          "/etc/hosts file [NodeConformance] [Conformance]", "a pod's /etc/hosts is the "
          "kubelet's; a hostNetwork pod's is its node's"),
)


def entry(key: str) -> Entry:
    for item in (*ENTRIES, *EXTRA):
        if item.key == key:
            return item
    raise KeyError(f"no conformance entry {key!r}: see podnet/conformance.py")


def results_from_junit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """``{key: [(test name, outcome), ...]}`` from a JUnit XML file of the conformance suite,
    whose test cases carry the property ``upstream`` (verify/test_conformance.py sets it):
    outcome is passed, failed, error or skipped."""
    out: dict[str, list[tuple[str, str]]] = {}
    # our own pytest's report, not input from elsewhere
    for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314
        keys = [p.get("value") or "" for p in case.iter("property")
                if p.get("name") == "upstream"]
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = "failed" if tag == "failure" else tag
        for key in keys:
            out.setdefault(key, []).append((case.get("name") or "", outcome))
    return out


def status(key: str, results: Mapping[str, Sequence[tuple[str, str]]] | None) -> str:
    """An entry's status: not applicable, not run, passed (every step), else what failed."""
    item = entry(key)
    if not item.mirrored:
        return "n/a"
    if results is None:
        return "mirrored"
    steps = results.get(key) or []
    if not steps:
        return "not run"
    bad = [f"{name} {outcome}" for name, outcome in steps if outcome != "passed"]
    return "passed" if not bad else "; ".join(bad)


def table(tests: Mapping[str, Sequence[str]],
          results: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> str:
    """The Markdown table of every entry: upstream codename, what it checks, podnet's tests
    (``tests``: key -> test names) and the status (from ``results`` when given)."""
    rows = ["| # | upstream test | what it checks | podnet | status |",
            "|---|---|---|---|---|"]
    for number, item in enumerate((*ENTRIES, *EXTRA), 1):
        where = ", ".join(f"`{t}`" for t in tests.get(item.key, ())) or item.why_not
        rows.append(f"| {number} | {item.codename} | {item.checks} | {where} | "
                    f"{status(item.key, results)} |")
    return "\n".join(rows) + "\n"


def _upstream_key(call: ast.AST) -> str | None:
    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id == "upstream" and call.args
            and isinstance(call.args[0], ast.Constant)):
        return str(call.args[0].value)
    return None


def _marks(expr: ast.AST) -> list[tuple[str, str | None]]:
    """(key, parameter id or None) of each upstream(KEY) in ``expr``: in a pytest.param's
    marks, the param's first value is its id, as pytest names the test."""
    found: list[tuple[str, str | None]] = []
    inside: set[int] = set()
    for call in ast.walk(expr):
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr == "param" and call.args
                and isinstance(call.args[0], ast.Constant)):
            for sub in ast.walk(call):
                if (key := _upstream_key(sub)) is not None:
                    found.append((key, str(call.args[0].value)))
                    inside.add(id(sub))
    for call in ast.walk(expr):
        if id(call) not in inside and (key := _upstream_key(call)) is not None:
            found.append((key, None))
    return found


def mirrors(suite: Path = SUITE) -> dict[str, list[str]]:
    """``{key: [test, ...]}``: the tests of the suite marked ``upstream(KEY)``, by a decorator
    or in a ``pytest.param``'s marks (``test[param]``), read from its source, not imported."""
    tree = ast.parse(suite.read_text())
    shared = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name)}
    out: dict[str, list[str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            exprs = [deco, *(shared[n.id] for n in ast.walk(deco)
                             if isinstance(n, ast.Name) and n.id in shared)]
            for expr in exprs:
                for key, param in _marks(expr):
                    out.setdefault(key, []).append(
                        f"{node.name}[{param}]" if param else node.name)
    return out


def markdown(results: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> str:
    """docs/conformance.md's table (with ``results``: the table ``make conformance`` prints)."""
    counted = sum(1 for e in ENTRIES if e.mirrored)
    return (f"Source: {UPSTREAM_LIST}. {len(ENTRIES)} [sig-network] tests: {counted} mirrored, "
            f"{len(ENTRIES) - counted} not applicable; and {len(EXTRA)} [sig-node] test the "
            "DNS tests stand on.\n\n" + table(mirrors(), results))
