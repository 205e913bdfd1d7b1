"""The cluster DNS add-on's model: the zone apex and serial, what the DNS pods serve, the
cluster_dns role's per-node view, podnet_dns_upstreams, readinessProbe parsing and the endpoints
every node's readiness prober takes out of the Service rules."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from modelkit import deployment, errors_of, make_plan, plan_and_ips, service

from podnet import clusterdns, dns, kubeproxy, proxier
from podnet.plan import DNS_SERVICE, Plan

SOA = "ns.dns.{z}. hostmaster.{z}. {s} 7200 1800 86400 5"


def rec(name: str, rtype: str = "A", data: str | None = "10.0.0.1") -> dns.DNSRecord:
    return dns.DNSRecord(name, rtype, dns.TTL, data)


def all_ips(plan: Any) -> dict[str, str]:
    return {p.key: f"10.244.{i + 1}.{i + 10}" for i, p in enumerate(plan.pods)}


@pytest.fixture(scope="module")
def base() -> SimpleNamespace:
    """The default cluster (just the DNS add-on) as the roles get it (its data, turned back into
    a plan as the filters do), every pod running, its DNS nodes."""
    plan = make_plan()
    data = Plan.from_data(plan.data())
    dns_nodes = [p.node for p in data.pods if p.namespace == "kube-system"]
    other = next(n.name for n in data.nodes if n.name not in dns_nodes)
    return SimpleNamespace(plan=plan, data=data, ips=all_ips(plan), dns_node=dns_nodes[0],
                           dns_nodes=dns_nodes, other=other)


# -- dns.apex, dns.serial, dns.rr_line ---------------------------------------------------------
def test_apex_soa_ns_and_name_server_address() -> None:
    assert [str(r) for r in dns.apex("Cluster.Local", "10.96.0.10", 42)] == [
        f"cluster.local. 5 IN SOA {SOA.format(z='cluster.local', s=42)}",
        "cluster.local. 5 IN NS ns.dns.cluster.local.",
        "ns.dns.cluster.local. 5 IN A 10.96.0.10",
    ]
    assert all(r.ttl == 5 and r.pod is None for r in dns.apex("x.test", "10.96.0.10", 1))


def test_serial_is_deterministic_in_any_order() -> None:
    found = [rec("a.test."), rec("b.test.", data="10.0.0.2"), rec("c.test.", "TXT", '"x"')]
    assert dns.serial(found) == dns.serial(list(reversed(found))) == dns.serial(
        [found[1], found[2], found[0]])


def test_serial_changes_when_one_record_changes() -> None:
    found = [rec("a.test."), rec("b.test.", data="10.0.0.2")]
    assert dns.serial(found) != dns.serial([rec("a.test."), rec("b.test.", data="10.0.0.3")])
    assert dns.serial(found) != dns.serial(found[:1])
    assert dns.serial(found) != dns.serial([*found, rec("c.test.")])


def test_serial_fits_32_bits_and_is_never_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(200):
        assert 0 < dns.serial([rec(f"h{i}.test.", data=f"10.0.{i}.1")]) < 2**32
    assert 0 < dns.serial([]) < 2**32

    def fake(digest: bytes) -> SimpleNamespace:
        return SimpleNamespace(sha256=lambda _text: SimpleNamespace(digest=lambda: digest))

    monkeypatch.setattr(dns, "hashlib", fake(bytes(32)))
    assert dns.serial([rec("a.test.")]) == 1
    monkeypatch.setattr(dns, "hashlib", fake(b"\xff" * 32))
    assert dns.serial([rec("a.test.")]) == 2**32 - 1


def test_rr_line() -> None:
    assert dns.rr_line(rec("a.test.")) == "a.test. 5 IN A 10.0.0.1"
    txt = dns.DNSRecord("dns-version.cluster.local.", "TXT", 28800, '"1.1.0"')
    assert dns.rr_line(txt) == 'dns-version.cluster.local. 28800 IN TXT "1.1.0"'
    assert dns.rr_line(rec("_h._tcp.w.", "SRV", "0 100 80 w.")) == "_h._tcp.w. 5 IN SRV 0 100 80 w."


# -- dns.served and dns.records ----------------------------------------------------------------
def test_served_starts_with_the_apex_whose_serial_covers_the_rest() -> None:
    plan, ips = plan_and_ips()
    got = dns.served(plan, ips)
    rest = got[3:]
    assert [(r.name, r.type) for r in got[:3]] == [("cluster.local.", "SOA"),
                                                   ("cluster.local.", "NS"),
                                                   ("ns.dns.cluster.local.", "A")]
    assert got[:3] == dns.apex("cluster.local", "10.96.0.10", dns.serial(rest))
    assert got[0].data == SOA.format(z="cluster.local", s=dns.serial(rest))


def test_served_has_only_known_records_sorted_without_duplicates() -> None:
    plan, ips = plan_and_ips()
    rest = dns.served(plan, ips)[3:]
    assert all(r.data is not None and r.pod is None for r in rest)
    assert not any("<ip>" in r.name or "<IP" in str(r) for r in rest)
    assert rest == sorted(rest, key=lambda r: (r.name, r.type, r.data or ""))
    assert len(rest) == len(set(rest))
    known = {r for r in dns.records(plan, ips) if r.data is not None}
    assert set(rest) == known


def test_served_leaves_out_pods_without_an_observed_ip() -> None:
    plan, ips = plan_and_ips()
    assert not any("db-2" in str(r) for r in dns.served(plan, ips))  # db-2 has no IP
    pod_a = [r for r in dns.served(plan, ips) if ".pod." in r.name]
    assert sorted(str(r.data) for r in pod_a) == sorted(ips.values())
    nothing = dns.served(plan, {})
    assert not any(".pod." in r.name for r in nothing)
    assert not any(r.name.startswith("db.default") for r in nothing)


def test_records_are_the_same_from_the_plan_and_from_its_data() -> None:
    plan, ips = plan_and_ips()
    crossed = Plan.from_data(plan.data())  # what the roles' filters work on
    assert crossed == plan
    assert dns.served(plan, ips) == dns.served(crossed, ips)
    assert dns.records(plan, ips) == dns.records(crossed, ips)
    assert dns.records(plan) == dns.records(crossed)
    assert dns.printable(plan)["dns_records"] == [r.as_dict() for r in dns.records(plan)]
    assert "dns_records" not in plan.data()


# -- clusterdns: resolv.conf and upstreams -----------------------------------------------------
def test_resolv_nameservers_reads_only_nameserver_lines() -> None:
    text = ("# generated by systemd-resolved\nnameserver 192.168.56.1  # the router\n"
            "search example.test lab\noptions edns0 trust-ad ndots:2\n#nameserver 10.9.9.9\n"
            "\tnameserver\t8.8.8.8\nnameserver fd00::53\nnameserver\nnameserver fe80::1%eth0\n")
    assert clusterdns.resolv_nameservers(text) == ["192.168.56.1", "8.8.8.8", "fd00::53",
                                                   "fe80::1%eth0"]
    assert clusterdns.resolv_nameservers("") == []


def test_upstreams_prefer_the_setting() -> None:
    data = make_plan(variables={"podnet_dns_upstreams": ["192.168.56.1"]})
    assert clusterdns.upstreams(data, "nameserver 127.0.0.53\n") == ["192.168.56.1"]
    assert clusterdns.upstreams(data, "nameserver 8.8.8.8\n") == ["192.168.56.1"]


def test_upstreams_from_resolv_conf_keep_usable_ipv4_in_order(base: SimpleNamespace) -> None:
    text = ("nameserver 127.0.0.53\nnameserver 192.168.56.1\nnameserver fd00::53\n"
            "nameserver bogus\nnameserver 0.0.0.0\nnameserver 8.8.8.8\n")
    assert clusterdns.upstreams(base.data, text) == ["192.168.56.1", "8.8.8.8"]


@pytest.mark.parametrize(("text", "found"), [
    ("nameserver 127.0.0.1\noptions edns0\n", "found: 127.0.0.1"),
    ("nameserver ::1\nnameserver fd00::53\n", "found: ::1, fd00::53"),
    ("search lab\n", "found: none"),
    ("", "found: none"),
], ids=["loopback", "ipv6", "none", "empty"])
def test_upstreams_unusable_resolv_conf_names_the_setting(base: SimpleNamespace, text: str,
                                                         found: str) -> None:
    with pytest.raises(ValueError, match="podnet_dns_upstreams") as caught:
        clusterdns.upstreams(base.data, text)
    assert found in str(caught.value)


STUB = "# systemd-resolved's stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"


def test_systemd_resolveds_stub_forwards_to_its_real_upstreams(base: SimpleNamespace) -> None:
    """As kubeadm points the kubelet at /run/systemd/resolve/resolv.conf: the stub is the
    node's loopback, which a pod cannot reach."""
    real = "nameserver 192.168.56.100\nnameserver 127.0.0.1\nnameserver 10.96.0.10\n"
    assert clusterdns.upstreams(base.data, STUB, real) == ["192.168.56.100"]


def test_the_stub_without_resolveds_upstreams_names_the_missing_file(base: SimpleNamespace
                                                                     ) -> None:
    with pytest.raises(ValueError, match="podnet_dns_upstreams") as caught:
        clusterdns.upstreams(base.data, STUB, None)
    assert "/run/systemd/resolve/resolv.conf (its real upstreams) is missing" in \
        str(caught.value)
    with pytest.raises(ValueError, match="podnet_dns_upstreams") as caught:
        clusterdns.upstreams(base.data, STUB, "nameserver 127.0.0.1\n")
    assert "node's /run/systemd/resolve/resolv.conf names no resolver" in str(caught.value)


def test_a_resolv_conf_with_more_than_the_stub_is_read_as_it_is(base: SimpleNamespace) -> None:
    text = "nameserver 127.0.0.53\nnameserver 192.168.56.1\n"
    assert clusterdns.upstreams(base.data, text, "nameserver 8.8.8.8\n") == ["192.168.56.1"]


def test_only_a_node_with_a_dns_pod_needs_resolvers_a_pod_can_use(base: SimpleNamespace
                                                                  ) -> None:
    plan = base.data
    dns_nodes = {p.node for p in plan.pods if p.key in set(plan.dns_service.pods)}
    others = [n.name for n in plan.nodes if n.name not in dns_nodes]
    assert dns_nodes and others, "the fixture plan must have nodes with and without DNS pods"
    assert clusterdns.node_upstreams(plan, others[0], "nameserver 127.0.0.1\n") == []
    node = sorted(dns_nodes)[0]
    assert clusterdns.node_upstreams(plan, node, STUB, "nameserver 192.168.56.1\n") == \
        ["192.168.56.1"]
    with pytest.raises(ValueError, match="podnet_dns_upstreams"):
        clusterdns.node_upstreams(plan, node, "nameserver 127.0.0.1\n")


def test_upstreams_inside_the_cluster_are_skipped_and_named(base: SimpleNamespace) -> None:
    text = "nameserver 10.96.0.10\nnameserver 10.244.1.5\nnameserver 192.168.56.1\n"
    assert clusterdns.upstreams(base.data, text) == ["192.168.56.1"]
    with pytest.raises(ValueError, match="podnet_dns_upstreams") as caught:
        clusterdns.upstreams(base.data, "nameserver 10.96.0.10\n")
    assert "10.96.0.10 is inside the cluster (the DNS would forward to itself)" in \
        str(caught.value)


def test_allowed_sources(base: SimpleNamespace) -> None:
    assert clusterdns.allowed_sources(base.data) == [
        "10.244.0.0/16", "192.168.56.11/32", "192.168.56.12/32", "192.168.56.13/32",
        "127.0.0.0/8"]  # the client host is no node


# -- clusterdns: DNS pods and node config ------------------------------------------------------
def test_dns_pods_on_a_node() -> None:
    plan = make_plan(deployment("web", 3))
    data, ips = Plan.from_data(plan.data()), all_ips(plan)
    dns_keys = plan.service(DNS_SERVICE).pods
    for node in ("node1", "node2", "node3"):
        found = clusterdns.dns_pods(data, ips, node)
        mine = [k for k in dns_keys if plan.pod(k).node == node]
        assert [p["key"] for p in found] == mine
        for p in found:
            name = p["key"].split("/")[1]
            folder = f"/etc/podnet/pods/kube-system_{name}"
            assert p == {"id": f"kube-system_{name}", "key": p["key"],
                         "config": f"{folder}/unbound.conf", "control": f"{folder}/unbound.ctl",
                         "ip": ips[p["key"]],
                         "unit": f"podnet-kube-system_{name}-unbound.service", "port": 53}
    assert [p["ip"] for p in clusterdns.dns_pods(data, {}, plan.pod(dns_keys[0]).node)] == [None]


def test_default_two_dns_replicas_on_two_nodes(base: SimpleNamespace) -> None:
    assert len(base.plan.service(DNS_SERVICE).pods) == 2
    nodes = [n.name for n in base.data.nodes
             for _ in clusterdns.dns_pods(base.data, base.ips, n.name)]
    assert sorted(nodes) == sorted(base.dns_nodes) and len(set(nodes)) == 2


def test_node_config_without_dns_pods_needs_no_upstreams(base: SimpleNamespace) -> None:
    got = clusterdns.node_config(base.data, base.ips, base.other, "nameserver 127.0.0.53\n")
    assert got["pods"] == [] and got["upstreams"] == []
    assert got["records_path"] == "/etc/podnet/cluster-dns/records.conf"
    assert got["allow"] == clusterdns.allowed_sources(base.data)


def test_node_config_on_a_dns_node(base: SimpleNamespace) -> None:
    data, ips, node = base.data, base.ips, base.dns_node
    with pytest.raises(ValueError, match="podnet_dns_upstreams"):
        clusterdns.node_config(data, ips, node, "nameserver 127.0.0.53\n")
    got = clusterdns.node_config(data, ips, node, "nameserver 192.168.56.1\n")
    assert got["upstreams"] == ["192.168.56.1"] and len(got["pods"]) == 1
    assert got["zone"] == "cluster.local."
    assert got["records"] == [dns.rr_line(r) for r in dns.served(data, ips)]
    soa = got["records"][0].split()
    assert soa[3] == "SOA" and int(soa[6]) == got["serial"]


def test_node_config_serial_follows_the_records(base: SimpleNamespace) -> None:
    def serial(ips: dict[str, str]) -> int:
        return clusterdns.node_config(base.data, ips, base.dns_node, "nameserver 8.8.8.8\n")[
            "serial"]

    assert serial(base.ips) == serial(dict(reversed(base.ips.items())))
    assert serial(base.ips) != serial({k: v.replace("10.244.", "10.245.")
                                       for k, v in base.ips.items()})


def test_render_records_quotes_local_data() -> None:
    lines = ["a.test. 5 IN A 10.0.0.1", 'dns-version.cluster.local. 28800 IN TXT "1.1.0"']
    assert clusterdns.render_records(lines) == (
        "  local-data: 'a.test. 5 IN A 10.0.0.1'\n"
        "  local-data: 'dns-version.cluster.local. 28800 IN TXT \"1.1.0\"'\n")
    assert clusterdns.render_records([]) == ""
    for bad in ["a.test. 5 IN TXT \"it's\"", "it's.test. 5 IN CNAME b.test."]:
        with pytest.raises(ValueError, match="single quote"):
            clusterdns.render_records([bad])


def test_render_records_redirect_zone_before_a_cname() -> None:
    plan, ips = plan_and_ips()
    out = clusterdns.render_records([dns.rr_line(r) for r in dns.served(plan, ips)])
    rows = out.splitlines()
    cname = "  local-data: 'ext.default.svc.cluster.local. 5 IN CNAME www.example.test.'"
    at = rows.index(cname)
    assert rows[at - 1] == "  local-zone: 'ext.default.svc.cluster.local.' redirect"
    assert sum("local-zone" in r for r in rows) == 1
    assert sum("local-data" in r for r in rows) == len(dns.served(plan, ips))


# -- podnet_dns_upstreams ----------------------------------------------------------------------
def test_dns_upstreams_setting_accepted() -> None:
    plan = make_plan(variables={"podnet_dns_upstreams": ["192.168.56.1", "8.8.8.8"]})
    assert plan.settings.dns_upstreams == ("192.168.56.1", "8.8.8.8")
    assert plan.settings.as_dict()["dns_upstreams"] == ["192.168.56.1", "8.8.8.8"]
    assert plan.data()["settings"]["dns_upstreams"] == ["192.168.56.1", "8.8.8.8"]


@pytest.mark.parametrize("value", [[], None, ""], ids=["empty", "null", "blank"])
def test_dns_upstreams_unset_means_resolv_conf(value: Any) -> None:
    assert make_plan(variables={"podnet_dns_upstreams": value}).settings.as_dict()[
        "dns_upstreams"] == []


UPSTREAM_CASES = [
    ("string", "8.8.8.8", "podnet_dns_upstreams: '8.8.8.8' is not a list of addresses",
     "write a list, like [192.168.56.100]"),
    ("not-ip", ["dns.example.test"],
     "podnet_dns_upstreams[0]: 'dns.example.test' is not an IP address",
     "give the resolver's IPv4 address"),
    ("ipv6", ["fd00::53"], "podnet_dns_upstreams[0]: 'fd00::53' is IPv6",
     "give the resolver's IPv4 address"),
    ("loopback", ["127.0.0.1"],
     "podnet_dns_upstreams[0]: 127.0.0.1 is not reachable from a DNS pod",
     "give a resolver on the node network"),
    ("unspecified", ["0.0.0.0"],  # noqa: S104 (an address under test, not a bind)
     "podnet_dns_upstreams[0]: 0.0.0.0 is not reachable from a DNS pod",
     "give a resolver on the node network"),
    ("multicast", ["224.0.0.1"], "podnet_dns_upstreams[0]: 224.0.0.1 is not a unicast address",
     "give the resolver's address"),
    ("broadcast", ["255.255.255.255"],
     "podnet_dns_upstreams[0]: 255.255.255.255 is not a unicast address",
     "give the resolver's address"),
    ("in-cluster-cidr", ["10.244.1.5"],
     "podnet_dns_upstreams[0]: 10.244.1.5 is in podnet_cluster_cidr 10.244.0.0/16",
     "give the resolver the nodes use, outside the cluster"),
    ("in-service-cidr", ["192.168.56.1", "10.96.0.53"],
     "podnet_dns_upstreams[1]: 10.96.0.53 is in podnet_service_cidr 10.96.0.0/12",
     "give the resolver the nodes use, outside the cluster"),
]


@pytest.mark.parametrize(("case", "value", "message", "fix"), UPSTREAM_CASES,
                         ids=[c[0] for c in UPSTREAM_CASES])
def test_dns_upstreams_errors(case: str, value: Any, message: str, fix: str) -> None:
    found = errors_of(variables={"podnet_dns_upstreams": value})
    assert len(found) == 1, found
    assert found[0].startswith(f"inv: inventory: {message}"), found[0]
    assert f"; fix: {fix}" in found[0], found[0]


# -- readinessProbe ----------------------------------------------------------------------------
POD = """\
---
apiVersion: v1
kind: Pod
metadata: {{name: p, labels: {{app: p}}}}
spec:
  containers:
    - name: c
      image: podnet/netexec
      ports: [{{name: http, containerPort: 8080}}, {{name: echo, containerPort: 8081, \
protocol: UDP}}]
      readinessProbe: {{{probe}}}
"""


def probe_of(probe: str) -> dict[str, Any] | None:
    return make_plan(POD.format(probe=probe)).pod("default/p").containers[0].readiness


def timing(period: int = 10, timeout: int = 1, failure: int = 3,
           success: int = 1) -> dict[str, int]:
    return {"period": period, "timeout": timeout, "failure": failure, "success": success}


@pytest.mark.parametrize(("probe", "kind", "port", "path"), [
    ("httpGet: {path: /healthz, port: http}", "http", 8080, "/healthz"),
    ("httpGet: {port: 9000}", "http", 9000, "/"),
    ("tcpSocket: {port: http}", "tcp", 8080, "/"),
    ("tcpSocket: {port: 7000}", "tcp", 7000, "/"),
], ids=["http-named", "http-number", "tcp-named", "tcp-number"])
def test_probe_ports_with_default_timing(probe: str, kind: str, port: int, path: str) -> None:
    assert probe_of(probe) == {"kind": kind, "port": port, "path": path, **timing()}


def test_probe_given_timing() -> None:
    got = probe_of("httpGet: {port: http}, periodSeconds: 3, timeoutSeconds: 2, "
                   "failureThreshold: 4, successThreshold: 2")
    assert got == {"kind": "http", "port": 8080, "path": "/", **timing(3, 2, 4, 2)}


def test_probe_zero_timing_means_the_default_as_the_api_server_defaults_it() -> None:
    got = probe_of("httpGet: {port: http}, periodSeconds: 0, timeoutSeconds: 0, "
                   "failureThreshold: 0, successThreshold: 0")
    assert got == {"kind": "http", "port": 8080, "path": "/", **timing()}


def test_only_the_first_probed_container_is_run_and_the_other_is_warned_about() -> None:
    text = POD.format(probe="httpGet: {port: http}") + (
        "    - name: side\n      image: podnet/netexec\n"
        "      args: [netexec, --http-port=9000, --udp-port=0]\n"
        "      readinessProbe: {tcpSocket: {port: 9000}}\n")
    plan = make_plan(text)
    containers = plan.pod("default/p").containers
    assert containers[0].readiness is not None and containers[1].readiness is None
    texts = [str(w) for w in plan.warnings]
    assert any("spec.containers[1].readinessProbe: container c's readinessProbe is the one "
               "podnet runs" in t and "fix: give the pod one readinessProbe" in t
               for t in texts), texts


def test_probe_exec_only_is_not_run_and_warned_about() -> None:
    plan = make_plan(POD.format(probe="exec: {command: [cat, /tmp/ready]}"))
    assert plan.pod("default/p").containers[0].readiness is None
    texts = [str(w) for w in plan.warnings]
    assert texts and all(t.startswith("m.yaml:10: Pod default/p: spec.containers[0]."
                                      "readinessProbe.exec.command[") for t in texts), texts
    assert all("podnet does not act on this field; it has no effect here; fix: " in t
               for t in texts)
    assert proxier.readiness(Plan.from_data(plan.data()), {"default/p": "10.244.1.5"}) == []


PROBE_ERRORS = [
    ("undefined-port-name", "httpGet: {port: nope}",
     "m.yaml:10: Pod default/p: spec.containers[0].readinessProbe.httpGet.port: port 'nope' is "
     "not a TCP port name of this container", "name one of the container's ports"),
    ("udp-port-name", "tcpSocket: {port: echo}",
     "spec.containers[0].readinessProbe.tcpSocket.port: port 'echo' is not a TCP port name",
     "name one of the container's ports"),
    ("port-out-of-range", "httpGet: {port: 70000}",
     "spec.containers[0].readinessProbe.httpGet.port: port 70000 is out of range",
     "use a port from 1 to 65535"),
    ("quoted-number-port", "httpGet: {port: '8080'}",
     "m.yaml:10: Pod default/p: spec.containers[0].readinessProbe.httpGet.port: port '8080' is a "
     "quoted number", "write the number without quotes"),
    ("period-string", "httpGet: {port: http}, periodSeconds: '10'",
     "m.yaml:10: Pod default/p: spec.containers[0].readinessProbe.periodSeconds: '10' is not of "
     "type integer", "kubectl explain pod.spec.containers.readinessProbe.periodSeconds"),
    ("failure-negative", "httpGet: {port: http}, failureThreshold: -1",
     "readinessProbe.failureThreshold: '-1' must be a whole number of at least 1",
     "set failureThreshold to 1 or more"),
    ("relative-path", "httpGet: {port: http, path: ready}",
     "m.yaml:10: Pod default/p: spec.containers[0].readinessProbe.httpGet.path: 'ready' does not "
     "start with '/'", "give an absolute path like /ready"),
]


@pytest.mark.parametrize(("case", "probe", "message", "fix"), PROBE_ERRORS,
                         ids=[c[0] for c in PROBE_ERRORS])
def test_probe_errors(case: str, probe: str, message: str, fix: str) -> None:
    found = errors_of(POD.format(probe=probe))
    text = "\n".join(found)
    assert message in text, text
    assert fix in text, text
    assert all("; fix: " in line for line in found), text


def test_probe_in_a_deployment_template() -> None:
    text = deployment("web", 2).replace(
        "              containerPort: 8080\n",
        "              containerPort: 8080\n          readinessProbe:\n"
        "            tcpSocket: {port: nope}\n")
    found = errors_of(text)
    assert any("Deployment default/web: spec.template.spec.containers[0].readinessProbe."
               "tcpSocket.port: port 'nope'" in f for f in found), found


def test_dns_addon_health_container_probe(base: SimpleNamespace) -> None:
    for key in base.plan.service(DNS_SERVICE).pods:
        containers = {c.name: c for c in base.plan.pod(key).containers}
        assert containers["unbound"].readiness is None
        assert containers["health"].readiness == {
            "kind": "http", "port": 8080, "path": "/ready", **timing(2, 1, 3, 1)}
    assert base.plan.warnings == []


# -- proxier.readiness -------------------------------------------------------------------------
PROBED = deployment("web", 2).replace(
    "              containerPort: 8080\n",
    "              containerPort: 8080\n"
    "            - {name: echo, containerPort: 8081, protocol: UDP}\n"
    "          readinessProbe:\n            httpGet: {path: /healthz, port: http}\n")

READY_TEXT = (
    PROBED
    + service("web", ports="  ports:\n    - {name: http, port: 80, targetPort: http}\n"
              "    - {name: echo, port: 81, targetPort: 8081, protocol: UDP}\n")
    + service("web-np", selector="web", body="  type: NodePort\n",
              ports="  ports:\n    - {port: 8000, targetPort: 8080}\n")
    + service("web-h", selector="web", body="  clusterIP: None\n")
    + service("ext", body="  type: ExternalName\n  externalName: www.example.test.\n",
              ports="").replace("  selector:\n    app: ext\n", "")
    + deployment("plain", 2) + service("plain")
    + deployment("lonely", 1).replace(
        "              containerPort: 8080\n",
        "              containerPort: 8080\n          readinessProbe:\n"
        "            tcpSocket: {port: http}\n")
)


@pytest.fixture(scope="module")
def ready_plan() -> tuple[Any, dict[str, str]]:
    plan = make_plan(READY_TEXT)
    return plan, all_ips(plan)


def web_pods(plan: Any) -> list[str]:
    return [p.key for p in plan.pods if p.key.startswith("default/web-")]


def test_readiness_lists_probed_pods_with_an_ip(ready_plan: tuple[Any, dict[str, str]]) -> None:
    plan, ips = ready_plan
    got = proxier.readiness(Plan.from_data(plan.data()), ips)
    dns_keys = plan.service(DNS_SERVICE).pods
    assert sorted(e["pod"] for e in got) == sorted([*dns_keys, *web_pods(plan)])
    assert all(e["ip"] == ips[e["pod"]] for e in got)
    web = next(e for e in got if e["pod"] == web_pods(plan)[0])
    assert web["probe"] == {"kind": "http", "port": 8080, "path": "/healthz", **timing()}


def test_readiness_skips_pods_without_an_ip(ready_plan: tuple[Any, dict[str, str]]) -> None:
    plan, ips = ready_plan
    first, second = web_pods(plan)
    partial = {k: v for k, v in ips.items() if k != first}
    assert [e["pod"] for e in proxier.readiness(Plan.from_data(plan.data()), partial)
            if e["pod"].startswith("default/")] == [second]
    assert proxier.readiness(Plan.from_data(plan.data()), {}) == []


def test_readiness_endpoints_are_the_clusterip_service_endpoints(
        ready_plan: tuple[Any, dict[str, str]]) -> None:
    plan, ips = ready_plan
    got = {e["pod"]: e for e in proxier.readiness(Plan.from_data(plan.data()), ips)}
    for key in web_pods(plan):
        ip = ips[key]
        assert got[key]["endpoints"] == sorted([
            f"default/web:http -> {ip}:8080",
            f"default/web:echo -> {ip}:8081",
            f"default/web-np -> {ip}:8080",
        ])  # nothing for the headless web-h nor the ExternalName ext
        assert got[key]["udp"] == [f"{ip}:8081"]
    for key in plan.service(DNS_SERVICE).pods:
        ip = ips[key]
        assert got[key]["endpoints"] == sorted([
            f"kube-system/kube-dns:dns -> {ip}:53",
            f"kube-system/kube-dns:dns-tcp -> {ip}:53"])
        assert got[key]["udp"] == [f"{ip}:53"]


def test_readiness_endpoints_leave_the_rules_while_unready(
        ready_plan: tuple[Any, dict[str, str]]) -> None:
    # what podnet-endpoints reports (pod, ip) takes exactly the endpoints readiness() names
    # out of the rules the node renders from the role's input
    plan, ips = ready_plan
    got = proxier.node_rules(Plan.from_data(plan.data()), ips, "node1", {})
    assert got["readiness"]["pods"] == proxier.readiness(Plan.from_data(plan.data()), ips)
    chains = {entry["pod"]: [endpoint_chain(plan, name) for name in entry["endpoints"]]
              for entry in got["readiness"]["pods"]}
    every = [c for cs in chains.values() for c in cs]
    ready = proxier.rules_file(*proxier.from_input(got["input"]))
    assert every and all(f":{c} - [0:0]" in ready for c in every)
    victim = web_pods(plan)[0]
    without = proxier.rules_file(*proxier.from_input(got["input"], {(victim, ips[victim])}))
    assert chains[victim] and not any(c in without for c in chains[victim])
    assert all(f":{c} - [0:0]" in without for p, cs in chains.items() if p != victim for c in cs)


def endpoint_chain(plan: Any, name: str) -> str:
    """The KUBE-SEP chain of "ns/svc:port -> ip:port" in ``plan``."""
    service, _, address = name.partition(" -> ")
    key, _, port_name = service.partition(":")
    svc = plan.service(key)
    protocol = next(p.protocol for p in svc.ports if p.name == port_name)
    ip, _, port = address.rpartition(":")
    return kubeproxy.endpoint_chain(svc.namespace, svc.name, port_name, protocol, ip, int(port))


# -- proxier.peers: the nodes each node's podnet-endpoints watches ------------------------------
def test_each_node_watches_every_other_node_with_the_endpoints_on_it(
        ready_plan: tuple[Any, dict[str, str]]) -> None:
    plan, ips = ready_plan
    typed = Plan.from_data(plan.data())
    got = proxier.node_rules(typed, ips, "node1", {})["readiness"]
    assert got["grace"] == typed.settings.node_grace_period == 5
    assert [n["name"] for n in got["nodes"]] == [n.name for n in typed.nodes if n.name != "node1"]
    for entry in got["nodes"]:
        node = typed.node(entry["name"])
        assert (entry["address"], entry["port"], entry["path"]) == (
            str(node.address), kubeproxy.HEALTHZ_PORT, "/livez")
        # every pod on it that is an endpoint of a proxied Service, with its UDP endpoints
        want = sorted((p.key, ips[p.key]) for p in typed.pods if p.node == node.name and any(
            e.pod == p.key for s in typed.services if s.proxied for port in s.ports
            for e in port.endpoints))
        assert [(p["pod"], p["ip"]) for p in entry["pods"]] == want
        for pod in entry["pods"]:
            if pod["pod"] in plan.service(DNS_SERVICE).pods:
                assert pod["udp"] == [f"{pod['ip']}:53"]
            if pod["pod"].startswith("default/plain-"):
                assert pod["udp"] == []
    assert sum(len(n["pods"]) for n in got["nodes"]) > 0


def test_a_not_ready_nodes_pods_leave_every_service_they_back(
        ready_plan: tuple[Any, dict[str, str]]) -> None:
    """What podnet-endpoints publishes for a NotReady node (its pods) takes all of their
    endpoints out of node1's rules, and nothing else."""
    plan, ips = ready_plan
    got = proxier.node_rules(Plan.from_data(plan.data()), ips, "node1", {})
    dead = next(n for n in got["readiness"]["nodes"] if n["pods"])
    gone = {(p["pod"], p["ip"]) for p in dead["pods"]}
    services, _ = proxier.from_input(got["input"], gone)
    for svc in services:
        for e in svc.endpoints:
            assert e.ready == ((e.pod, e.ip) not in gone), (svc.name, e)
