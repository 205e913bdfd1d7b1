"""hostNetwork, hostPort, dnsPolicy and dnsConfig, the kubelet-managed /etc/hosts: checked input,
placement by free host ports, and what the kubelet role renders for them."""

from __future__ import annotations

from typing import Any

import pytest
from modelkit import errors_of, make_plan
from modelkit import pod_doc as pod

from podnet import kubelet
from podnet.plan import Plan
from podnet.schedule import EVERY_ADDRESS, Candidate, place


def server(ports: str = "", **extra: str) -> str:
    lines = "".join(f"  {k}: {v}\n" for k, v in extra.items())
    return (f"{lines}  containers:\n    - name: c\n      image: podnet/netexec\n"
            + (f"      ports:\n{ports}" if ports else ""))


HP = "        - {{containerPort: 8080, hostPort: {port}{extra}}}\n"


def hostport(port: int = 54323, extra: str = "") -> str:
    return HP.format(port=port, extra=extra)


@pytest.mark.parametrize(("text", "expected"), [
    (pod("p", server(hostport(extra=", hostIP: 1.2.3"))),
     "hostIP: '1.2.3' is not an IP address"),
    (pod("p", server("        - {containerPort: 8080, hostIP: 127.0.0.1}\n")),
     "hostIP: is set without a hostPort"),
    (pod("p", server(hostport(8081), hostNetwork="true")),
     "hostPort: 8081 differs from containerPort 8080 in a hostNetwork pod"),
    (pod("p", server(hostport(extra=", hostIP: '::1'"))), "is not IPv4"),
    (pod("p", server(hostport() + hostport().replace("8080", "9090"))),
     "0.0.0.0:54323/TCP is already taken by container c"),
    (pod("p", server(dnsPolicy="Nope")), "dnsPolicy: 'Nope' is not a DNS policy"),
    (pod("p", server(dnsPolicy="None")), "is None but dnsConfig gives no nameservers"),
    (pod("p", server(dnsPolicy="None", dnsConfig="{searches: [a.b]}")),
     "nameservers: is empty but dnsPolicy is None"),
    (pod("p", server(dnsConfig="{nameservers: [10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4]}")),
     "lists 4 nameservers"),
    (pod("p", server(dnsConfig="{nameservers: [dns.example]}")),
     "'dns.example' is not an IPv4 address"),
    (pod("p", server(dnsConfig="{searches: [Bad_Domain]}")),
     "searches[0]: 'Bad_Domain' is not a DNS-1123"),
    (pod("p", server(dnsPolicy="Default", dnsConfig="{nameservers: [10.0.0.1]}")),
     "is set with dnsPolicy Default"),
    (pod("p", server(hostNetwork="true"), "  annotations: {podnet.io/stable-ip: \"true\"}\n"),
     "on a hostNetwork pod, which has its node's address"),
])
def test_bad_pod_network_fields_name_the_field_and_the_fix(text: str, expected: str) -> None:
    problems = errors_of(text)
    assert any(expected in p for p in problems), problems


def test_colliding_host_ports_go_to_other_nodes_or_fail_pinned() -> None:
    text = "".join(pod(f"p{i}", server(hostport())) for i in range(3))
    plan = make_plan(text)
    assert sorted(p.node for p in plan.pods if p.namespace == "default") == [
        "node1", "node2", "node3"]
    problems = errors_of(text + pod("p3", server(hostport())))
    assert any("no node its nodeSelector allows has its host ports free" in p for p in problems)
    pinned = errors_of(pod("a", server(hostport(), nodeName="node1"))
                       + pod("b", server(hostport(extra=", hostIP: 192.168.56.11"),
                                         nodeName="node1")))
    assert any("node 'node1' has no free host port for it: 0.0.0.0:54323/TCP of pod "
               "default/a takes it" in p for p in pinned), pinned


def test_host_ports_differing_in_address_or_protocol_share_a_node() -> None:
    text = (pod("a", server(hostport(extra=", hostIP: 127.0.0.1"), nodeName="node2"))
            + pod("b", server(hostport(extra=", hostIP: 192.168.56.12"), nodeName="node2"))
            + pod("c", server(hostport(extra=", hostIP: 192.168.56.12, protocol: UDP"),
                              nodeName="node2")))
    assert {p.node for p in make_plan(text).pods if p.namespace == "default"} == {"node2"}


def test_a_host_network_pods_ports_are_host_ports() -> None:
    wanted = (Candidate("d/a", "Pod d/a", None, (), ((EVERY_ADDRESS, 80, "TCP"),)),
              Candidate("d/b", "Pod d/b", None, (), (("127.0.0.1", 80, "TCP"),)),
              Candidate("d/c", "Pod d/c", None, (), (("127.0.0.1", 80, "UDP"),)))
    placed, failed, _ = place(wanted, {"n1": {}, "n2": {}}, {})
    assert not failed and placed["d/a"] != placed["d/b"]
    plan = make_plan(pod("h", server("        - {containerPort: 8080}\n", hostNetwork="true"))
                     + pod("n", server("        - {containerPort: 8080, hostPort: 8080}\n")))
    assert plan.pod("default/h").node != plan.pod("default/n").node
    assert plan.pod("default/h").stable_ip is None  # a bare Pod, yet on its node's address


def rendered(text: str, name: str) -> dict[str, Any]:
    plan = Plan.from_data(make_plan(text).data())
    node = plan.pod(f"default/{name}").node
    return next(p for p in kubelet.node_pods(plan, node) if p["name"] == name)


def test_the_host_network_pod_runs_in_its_nodes_namespace() -> None:
    entry = rendered(pod("h", server(hostNetwork="true", nodeName="node2")), "h")
    unit = entry["containers"][0]["unit_text"]
    assert "NetworkNamespacePath" not in unit and "/etc/hosts" not in unit
    assert "Environment=HOSTNAME=node2" in unit
    assert entry["spec"]["host_network"] and entry["spec"]["host_ip"] == "192.168.56.12"
    assert entry["resolv_conf"] is None and "resolv.conf" not in unit  # ClusterFirst: Default


def test_resolv_conf_for_each_dns_policy() -> None:
    def conf(**spec: str) -> str | None:
        return rendered(pod("p", server(**spec)), "p")["resolv_conf"]

    cluster = ("nameserver 10.96.0.10\n"
               "search default.svc.cluster.local svc.cluster.local cluster.local\n"
               "options ndots:5\n")
    assert conf() == cluster
    assert conf(hostNetwork="true", dnsPolicy="ClusterFirstWithHostNet") == cluster
    assert conf(dnsPolicy="Default") is None
    assert conf(dnsPolicy="None", dnsConfig="{nameservers: [10.0.0.9], searches: [x.local], "
                "options: [{name: ndots, value: '2'}, {name: edns0}]}") == (
        "nameserver 10.0.0.9\nsearch x.local\noptions ndots:2 edns0\n")
    assert conf(dnsConfig="{nameservers: [10.0.0.9, 10.96.0.10], searches: [x.local], "
                "options: [{name: ndots, value: '1'}]}") == (
        "nameserver 10.96.0.10\nnameserver 10.0.0.9\n"
        "search default.svc.cluster.local svc.cluster.local cluster.local x.local\n"
        "options ndots:1\n")


def test_etc_hosts_and_port_mappings_reach_the_runtime() -> None:
    text = pod("p", server(hostport(extra=", hostIP: 127.0.0.1, protocol: UDP"),
                           hostname="web-0", subdomain="web"))
    entry = rendered(text, "p")
    assert entry["spec"]["port_mappings"] == [
        {"hostPort": 54323, "containerPort": 8080, "protocol": "udp", "hostIP": "127.0.0.1"}]
    hosts = entry["spec"]["etc_hosts"]
    assert hosts == {"hostname": "web-0", "domain": "web.default.svc.cluster.local",
                     "path": entry["hosts_file"]}
    assert f"BindReadOnlyPaths={entry['hosts_file']}:/etc/hosts" in (
        entry["containers"][0]["unit_text"])
