"""The principles the verify suites prove, in the order reports show them: the article's nine
(flat network to Ingress) and podnet's own three (the lab, conformance, lifecycle).

This table is the one definition: each test's ``principle("...")`` marker names an entry,
verify/conftest.py registers every entry's slug as a marker (``pytest -m kube_proxy``), and the
terminal summary, the JUnit properties and reports/verify.html group the results by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from podnet.markers import slug


@dataclass(frozen=True)
class Principle:
    name: str     # what the principle() marker says and the reports print
    source: str   # "article" (the article's principles) or "podnet" (podnet's own)
    proves: str   # one line: what its tests show on the hosts

    @property
    def slug(self) -> str:
        return slug(self.name)


TABLE: tuple[Principle, ...] = (
    Principle("the lab", "podnet",
              "lab hosts up with systemd, on one underlay, fenced off from this machine"),
    Principle("flat network", "article",
              "every pod reaches every pod and node with its own IP, no NAT between them"),
    Principle("unique pod IP", "article",
              "one IP per pod, from its node's pod CIDR or the one it keeps on any node"),
    Principle("kubelet + CNI", "article",
              "the kubelet runs each node's pods and the CNI plugins wire them: cache, "
              "CHECK, restarts and reboots keep the address"),
    Principle("service abstraction", "article",
              "ClusterIPs reached from every pod and node and load-balanced over endpoints"),
    Principle("kube-proxy", "article",
              "kube-proxy's rules: repaired when flushed, changed only where a Service "
              "changed, its health servers"),
    Principle("service DNS", "article",
              "pods find Services by name; every record as the model says"),
    Principle("NodePort", "article",
              "NodePorts answer from outside on every node; traffic policies"),
    Principle("LoadBalancer", "article",
              "LoadBalancer addresses answered from outside (cloud lb host, l2 announcement)"),
    Principle("Ingress", "article",
              "the controller routes by the Ingress spec from outside, terminates TLS, passes "
              "the client's address"),
    Principle("conformance", "podnet",
              "Kubernetes' [sig-network] conformance tests that need packets or names, "
              "mirrored on the hosts (docs/conformance.md)"),
    Principle("lifecycle", "podnet",
              "drift repaired, a dead node survived, the cluster converging around change"),
)

BY_NAME = {p.name: p for p in TABLE}
BY_SLUG = {p.slug: p for p in TABLE}


def marker_lines() -> list[str]:
    """pytest ``markers`` ini lines registering each principle's slug."""
    return [f"{p.slug}: principle {p.name!r}: {p.proves}" for p in TABLE]
