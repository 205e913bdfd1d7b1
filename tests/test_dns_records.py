"""DNS records per the Kubernetes DNS spec 1.1.0 as CoreDNS serves them, and endpoints."""

from __future__ import annotations

from modelkit import plan_and_ips

from podnet import dns, endpoints
from podnet.plan import EndpointPlan


def lines(found: list[dns.DNSRecord]) -> set[str]:
    return {str(r) for r in found}


def test_clusterip_service_records() -> None:
    plan, ips = plan_and_ips()
    web = plan.service("default/web")
    assert web.cluster_ip
    rev = ".".join(reversed(web.cluster_ip.split(".")))
    got = lines(dns.records(plan, ips))
    assert {
        "dns-version.cluster.local. 28800 IN TXT \"1.1.0\"",
        f"web.default.svc.cluster.local. 5 IN A {web.cluster_ip}",
        f"{rev}.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local.",
        "_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 "
        "web.default.svc.cluster.local.",
        "_dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 "
        "web.default.svc.cluster.local.",
        "ext.default.svc.cluster.local. 5 IN CNAME www.example.test.",
        "kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10",
    } <= got


def test_headless_service_records() -> None:
    plan, ips = plan_and_ips()
    ip0, ip1 = ips["default/db-0"], ips["default/db-1"]
    dashed1 = ip1.replace(".", "-")
    found = dns.records(plan, ips)
    got = lines(found)
    assert {
        f"db.default.svc.cluster.local. 5 IN A {ip0}",
        f"db.default.svc.cluster.local. 5 IN A {ip1}",
        f"db-0.db.default.svc.cluster.local. 5 IN A {ip0}",
        f"{dashed1}.db.default.svc.cluster.local. 5 IN A {ip1}",
        "_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 50 5432 "
        "db-0.db.default.svc.cluster.local.",
        f"_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 50 5433 "
        f"{dashed1}.db.default.svc.cluster.local.",
        f"{'.'.join(reversed(ip0.split('.')))}.in-addr.arpa. 5 IN PTR "
        "db-0.db.default.svc.cluster.local.",
    } <= got
    assert not any("db-2" in line for line in got)  # not ready
    assert not any(r.name.startswith("db.default") and r.type == "PTR" for r in found)


def test_pod_records_and_pending_ones() -> None:
    plan, ips = plan_and_ips()
    ip = ips["default/db-1"]
    assert f"{ip.replace('.', '-')}.default.pod.cluster.local. 5 IN A {ip}" in lines(
        dns.records(plan, ips))
    pending = [r for r in dns.records(plan) if r.data is None]
    assert {r.pod for r in pending} >= {"default/db-0", "default/db-1"}
    assert "<IP of pod default/db-0>" in str(next(r for r in pending if r.pod == "default/db-0"))


def test_every_name_is_lower_case_and_absolute() -> None:
    plan, ips = plan_and_ips()
    for record in dns.records(plan, ips):
        assert record.name == record.name.lower() and record.name.endswith(".")


def test_endpoints_resolve_named_ports_per_pod() -> None:
    plan, ips = plan_and_ips()

    def running(service: str, name: str, protocol: str) -> list[EndpointPlan]:
        port = next(p for p in plan.service(service).ports
                    if p.name == name and p.protocol == protocol)
        return [e for e in port.endpoints if ips.get(e.pod)]

    found = running("default/db", "pg", "TCP")
    assert sorted((e.pod, e.port) for e in found) == [("default/db-0", 5432),
                                                      ("default/db-1", 5433)]
    assert len(running("default/web", "http", "TCP")) == 2
    assert running("default/web", "dns", "UDP") and all(
        e.port == 53 for e in running("default/web", "dns", "UDP"))
    assert plan.service("default/ext").ports == []


def test_observed_ips_from_pod_facts() -> None:
    facts = [{"namespace": "a", "name": "p", "ip": "10.244.0.5", "node": "n1"},
             {"namespace": "a", "name": "q", "ip": ""}]
    assert endpoints.observed_ips(facts) == {"a/p": "10.244.0.5"}
    import pytest

    with pytest.raises(ValueError, match="must be a list"):
        endpoints.observed_ips({"a": 1})
    with pytest.raises(ValueError, match=r"observed pod \[0\] needs namespace and name"):
        endpoints.observed_ips([{"ip": "1.2.3.4"}])
