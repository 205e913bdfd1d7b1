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
    (pod("p", server(hostNetwork="true", dnsConfig="{nameservers: [10.0.0.1]}")),
     "is set with dnsPolicy ClusterFirst on the host network"),
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
    # one node: the two that collide cannot both run, the UDP one can
    wanted = (Candidate("d/a", "Pod d/a", None, (), ((EVERY_ADDRESS, 80, "TCP"),)),
              Candidate("d/b", "Pod d/b", None, (), (("127.0.0.1", 80, "TCP"),)),
              Candidate("d/c", "Pod d/c", None, (), (("127.0.0.1", 80, "UDP"),)))
    placed, failed, _ = place(wanted, {"n1": {}}, {})
    assert placed == {"d/a": "n1", "d/c": "n1"} and [f.key for f in failed] == ["d/b"]
    problems = errors_of(
        pod("h", server("        - {containerPort: 8080}\n", hostNetwork="true", nodeName="node1"))
        + pod("n", server("        - {containerPort: 8080, hostPort: 8080}\n", nodeName="node1")))
    assert any("0.0.0.0:8080/TCP of pod default/h takes it" in p for p in problems), problems
    plan = make_plan(pod("h", server("        - {containerPort: 8080}\n", hostNetwork="true")))
    assert plan.pod("default/h").stable_ip is None  # a bare Pod, yet on its node's address


def test_a_running_pod_keeps_its_host_port_against_a_new_pinned_one() -> None:
    slot = (EVERY_ADDRESS, 80, "TCP")
    new = Candidate("d/new", "Pod d/new", "n1", (), (slot,))
    running = Candidate("d/old", "Pod d/old", None, (), (slot,))
    placed, failed, _ = place([new, running], {"n1": {}, "n2": {}}, {"d/old": "n1"})
    assert placed == {"d/old": "n1"} and [f.key for f in failed] == ["d/new"]


def test_a_replica_whose_host_ports_are_taken_while_a_node_is_down_waits() -> None:
    slot = (EVERY_ADDRESS, 80, "TCP")
    replicas = [Candidate(f"d/w{i}", "Deployment d/w", None, (), (slot,)) for i in range(3)]
    placed, failed, pending = place(replicas, {"n1": {}, "n2": {}, "n3": {}},
                                    {"d/w0": "n1", "d/w1": "n2", "d/w2": "n3"}, ["n3"])
    assert placed == {"d/w0": "n1", "d/w1": "n2"} and not failed
    assert [(p.key, p.node) for p in pending] == [("d/w2", "n3")]
    assert "host ports are taken on every Ready node" in pending[0].reason


def test_host_port_zero_is_no_host_port() -> None:
    plan = make_plan(pod("p", server("        - {containerPort: 8080, hostPort: 0}\n")))
    assert plan.pod("default/p").containers[0].ports[0].host_port is None


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
    assert conf(dnsConfig="{nameservers: [10.0.0.9, 10.96.0.10, 10.0.0.9], "
                "searches: [x.local, x.local], options: [{name: ndots, value: '1'}, "
                "{name: rotate, value: ''}]}") == (
        "nameserver 10.96.0.10\nnameserver 10.0.0.9\n"
        "search default.svc.cluster.local svc.cluster.local cluster.local x.local\n"
        "options ndots:1 rotate\n")
    three = conf(dnsConfig="{nameservers: [10.0.0.9, 10.0.0.8, 10.0.0.7]}")
    assert three is not None and three.count("nameserver") == 3 and "10.0.0.7" not in three
    many = ", ".join(f"d{i}.example" for i in range(32))
    long = conf(dnsPolicy="None", dnsConfig=f"{{nameservers: [10.0.0.9], searches: [{many}]}}")
    assert long is not None and long.split("search ")[1].split() == [
        f"d{i}.example" for i in range(32)]
    cut = conf(dnsConfig=f"{{searches: [{many}]}}")  # the cluster's 3 first: 29 fit
    assert cut is not None and len(cut.split("search ")[1].split("\n")[0].split()) == 32


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
