"""DNS records per the Kubernetes DNS spec 1.1.0 as CoreDNS serves them, and endpoints. The
tests of single records check from below (this record is there); the whole-zone tests compare
every record of a small cluster with equality, so a spurious record fails too."""

from __future__ import annotations

import pytest
from modelkit import DNS_TEXT, errors_of, make_plan, plan_and_ips, service

from podnet import dns, endpoints
from podnet.plan import EndpointPlan, Plan


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


# -- the whole zone of a small cluster, nothing more -------------------------------------------
# DNS_TEXT plus two Services whose one port has no name: a ClusterIP one and a headless one.
# The spec gives an SRV record only to a named port (DNS-Based Service Discovery 2.4.1, 2.5.1).
UNNAMED = DNS_TEXT + service(
    "plain", selector="web", ports="  ports:\n    - {port: 8080, targetPort: http}\n"
) + service("raw", selector="web", body="  clusterIP: None\n",
            ports="  ports:\n    - {port: 8080, targetPort: http}\n")


@pytest.fixture(scope="module")
def small() -> tuple[Plan, dict[str, str]]:
    """The UNNAMED plan and an IP for every pod but db-2 (not running: no records)."""
    plan = make_plan(UNNAMED)
    ips = {p.key: f"10.244.{i}.{i + 10}" for i, p in enumerate(plan.pods)}
    ips.pop("default/db-2")
    return plan, ips


def rev(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa."


def whole_zone(plan: Plan, ips: dict[str, str]) -> list[str]:
    """Every record the spec gives the UNNAMED cluster, written out here (not by dns.py)."""
    z = "svc.cluster.local."
    web, plain = str(plan.service("default/web").cluster_ip), str(
        plan.service("default/plain").cluster_ip)
    db0, db1 = ips["default/db-0"], ips["default/db-1"]
    w1, w2 = [ips[p.key] for p in plan.pods if p.key.startswith("default/web-")]
    d1, dw1, dw2 = (ip.replace(".", "-") for ip in (db1, w1, w2))
    return [
        'dns-version.cluster.local. 28800 IN TXT "1.1.0"',
        f"kube-dns.kube-system.{z} 5 IN A 10.96.0.10",
        f"10.0.96.10.in-addr.arpa. 5 IN PTR kube-dns.kube-system.{z}",
        f"_dns._udp.kube-dns.kube-system.{z} 5 IN SRV 0 100 53 kube-dns.kube-system.{z}",
        f"_dns-tcp._tcp.kube-dns.kube-system.{z} 5 IN SRV 0 100 53 kube-dns.kube-system.{z}",
        f"web.default.{z} 5 IN A {web}",
        f"{rev(web)} 5 IN PTR web.default.{z}",
        f"_http._tcp.web.default.{z} 5 IN SRV 0 100 80 web.default.{z}",
        f"_dns._udp.web.default.{z} 5 IN SRV 0 100 53 web.default.{z}",
        f"db.default.{z} 5 IN A {db0}",
        f"db.default.{z} 5 IN A {db1}",
        f"db-0.db.default.{z} 5 IN A {db0}",
        f"{d1}.db.default.{z} 5 IN A {db1}",
        f"{rev(db0)} 5 IN PTR db-0.db.default.{z}",
        f"{rev(db1)} 5 IN PTR {d1}.db.default.{z}",
        f"_pg._tcp.db.default.{z} 5 IN SRV 0 50 5432 db-0.db.default.{z}",
        f"_pg._tcp.db.default.{z} 5 IN SRV 0 50 5433 {d1}.db.default.{z}",
        f"ext.default.{z} 5 IN CNAME www.example.test.",
        f"plain.default.{z} 5 IN A {plain}",  # and no SRV: its port has no name
        f"{rev(plain)} 5 IN PTR plain.default.{z}",
        f"raw.default.{z} 5 IN A {w1}",  # headless, no SRV either
        f"raw.default.{z} 5 IN A {w2}",
        f"{dw1}.raw.default.{z} 5 IN A {w1}",
        f"{dw2}.raw.default.{z} 5 IN A {w2}",
        f"{rev(w1)} 5 IN PTR {dw1}.raw.default.{z}",
        f"{rev(w2)} 5 IN PTR {dw2}.raw.default.{z}",
        *(f"{ip.replace('.', '-')}.{key.split('/')[0]}.pod.cluster.local. 5 IN A {ip}"
          for key, ip in ips.items()),
    ]


def test_the_whole_zone_is_the_specs_and_nothing_more(small: tuple[Plan, dict[str, str]]
                                                      ) -> None:
    plan, ips = small
    got = sorted(str(r) for r in dns.records(plan, ips))  # a list: a duplicate fails too
    want = sorted(whole_zone(plan, ips))
    assert got == want, {"spurious": sorted(set(got) - set(want)),
                         "missing": sorted(set(want) - set(got))}


def test_what_the_dns_pods_serve_is_the_apex_and_the_whole_zone(
        small: tuple[Plan, dict[str, str]]) -> None:
    plan, ips = small
    got = [str(r) for r in dns.served(plan, ips)]
    want = sorted(whole_zone(plan, ips))
    assert sorted(got[3:]) == want and len(got) == 3 + len(want), {
        "spurious": sorted(set(got[3:]) - set(want)),
        "missing": sorted(set(want) - set(got[3:]))}
    assert [line.split()[3] for line in got[:3]] == ["SOA", "NS", "A"]


def test_a_port_without_a_name_has_no_srv_record(small: tuple[Plan, dict[str, str]]) -> None:
    """Before the pods run (``podnet plan``) as after: SRV records only for named ports."""
    plan, ips = small
    for observed in (ips, None):
        srv = {r.name for r in dns.records(plan, observed) if r.type == "SRV"}
        assert srv == {"_dns._udp.kube-dns.kube-system.svc.cluster.local.",
                       "_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local.",
                       "_http._tcp.web.default.svc.cluster.local.",
                       "_dns._udp.web.default.svc.cluster.local.",
                       "_pg._tcp.db.default.svc.cluster.local."}, (observed, srv)
        assert not any(r.type == "SRV" and (".plain." in r.name or ".raw." in r.name
                                            or "plain." in str(r.data) or ".raw." in str(r.data))
                       for r in dns.records(plan, observed))


def test_external_names_that_lead_back_to_themselves_are_refused() -> None:
    def external(name: str, target: str) -> str:
        return (f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
                f"spec: {{type: ExternalName, externalName: {target}}}\n")

    zone = "default.svc.cluster.local"
    problems = errors_of(external("a", f"b.{zone}") + external("b", f"c.{zone}.")
                         + external("c", f"a.{zone}") + external("d", f"a.{zone}"))
    assert problems == [
        f"m.yaml:5: Service default/a: spec.externalName: its CNAME leads back to itself: "
        f"a.{zone} -> b.{zone} -> c.{zone} -> a.{zone}; fix: point one of these ExternalName "
        "Services at a name outside the loop"]
    make_plan(external("a", f"b.{zone}") + external("b", "example.com"))  # a chain is fine
