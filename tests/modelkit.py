"""A small valid cluster for model tests, helpers to break it one way at a time, and a cluster
that gives every kind of DNS record (DNS_TEXT, plan_and_ips)."""

from __future__ import annotations

from typing import Any

import pytest

from podnet.allocate import Record
from podnet.model import build
from podnet.plan import Plan
from podnet.problems import InvalidInput, Problems
from podnet.yamlsource import Document, load_text

VARS: dict[str, Any] = {
    "podnet_underlay_cidr": "192.168.56.0/24",
    "podnet_cluster_cidr": "10.244.0.0/16",
    "podnet_node_cidr_prefix": 24,
    "podnet_service_cidr": "10.96.0.0/12",
    "podnet_dns_service_ip": "10.96.0.10",
    "podnet_cluster_domain": "cluster.local",
    "podnet_nodeport_range": "30000-32767",
    "podnet_lb_pool": "192.168.56.240/28",
    "podnet_backend": "host-gw",
    "podnet_proxy_mode": "iptables",
}


def hosts(n: int = 3, **labels: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"name": f"node{i}", "address": f"192.168.56.{10 + i}", "groups": ["lab", "nodes"],
         "labels": labels.get(f"node{i}", {})}
        for i in range(1, n + 1)
    ]
    out.append({"name": "client", "address": "192.168.56.100", "groups": ["clients", "lab"]})
    out.append({"name": "lb", "address": "192.168.56.200", "groups": ["lab", "loadbalancers"]})
    return out


NETEXEC = """\
      containers:
        - name: netexec
          image: podnet/netexec
          ports:
            - name: http
              containerPort: 8080
"""


def pod_doc(name: str, spec: str, meta: str = "", ns: str = "default") -> str:
    """A bare Pod document: ``spec`` and ``meta`` are the indented lines under spec: and
    metadata: (after its name and namespace)."""
    return f"""\
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
{meta}spec:
{spec}"""


def deployment(name: str, replicas: int = 3, ns: str = "default", labels: str = "",
               spec_extra: str = "") -> str:
    return f"""\
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}{labels}
    spec:
{spec_extra}{NETEXEC}"""


def service(name: str, ns: str = "default", selector: str | None = None, body: str = "",
            ports: str | None = None) -> str:
    ports = ports if ports is not None else """\
  ports:
    - name: http
      port: 80
      targetPort: http
"""
    return f"""\
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
spec:
  selector:
    app: {selector or name}
{body}{ports}"""


def docs(text: str, file: str = "m.yaml", problems: Problems | None = None) -> list[Document]:
    problems = problems if problems is not None else Problems()
    found = load_text(text, file, problems)
    assert not problems.errors, problems.errors
    return found


def make_plan(text: str = "", variables: dict[str, Any] | None = None,
              host_list: list[dict[str, Any]] | None = None,
              record: Record | None = None, not_ready: tuple[str, ...] = ()) -> Plan:
    problems = Problems()
    documents = load_text(text, "m.yaml", problems)
    return build({**VARS, **(variables or {})}, host_list if host_list is not None else hosts(),
                 documents, record, "inv", "record.json", problems, not_ready)


def errors_of(text: str = "", variables: dict[str, Any] | None = None,
              host_list: list[dict[str, Any]] | None = None,
              record: Record | None = None, not_ready: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        make_plan(text, variables, host_list, record, not_ready)
    return [str(p) for p in caught.value.problems]


_DB_POD = """\
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: db}}
spec:
{extra}  containers:
    - name: c
      image: podnet/netexec
      ports: [{{name: pg, containerPort: {port}}}]
"""

# pods and Services that give every kind of DNS record: a ClusterIP Service with TCP and UDP
# ports, a headless one with hostnames, subdomains and a pod off the subdomain, an ExternalName
DNS_TEXT = (
    deployment("web", 2)
    + service("web", ports="  ports:\n    - {name: http, port: 80, targetPort: http}\n"
              "    - {name: dns, port: 53, protocol: UDP}\n")
    + service("db", selector="db", body="  clusterIP: None\n",
              ports="  ports:\n    - {name: pg, port: 5432, targetPort: pg}\n")
    + _DB_POD.format(name="db-0", extra="  hostname: db-0\n  subdomain: db\n", port=5432)
    + _DB_POD.format(name="db-1", extra="", port=5433)
    + _DB_POD.format(name="db-2", extra="  hostname: db-2\n  subdomain: db\n", port=5432)
    + service("ext", body="  type: ExternalName\n  externalName: www.example.test.\n",
              ports="").replace("  selector:\n    app: ext\n", "")
)


def plan_and_ips() -> tuple[Plan, dict[str, str]]:
    """The DNS_TEXT plan and a pod IP for every pod but db-2."""
    plan = make_plan(DNS_TEXT)
    ips = {p.key: f"10.244.{i}.{i + 10}" for i, p in enumerate(plan.pods)}
    ips.pop("default/db-2")  # db-2 is not running: not ready, no records
    return plan, ips
