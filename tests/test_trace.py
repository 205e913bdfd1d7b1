"""podnet/trace.py: the nat walk on kube-proxy's real rules (a node's iptables-save of the demo
lab), the counters, conntrack's tuples, and what ``--from``/``--to`` accept. The live trace runs
on the lab (verify's walkthroughs, python -m podnet trace)."""

from __future__ import annotations

from pathlib import Path

import pytest

from podnet import cluster, trace
from podnet.plan import Plan

GOLDEN = Path(__file__).parent / "golden" / "trace" / "node1-nat.save"
ROOT = Path(__file__).resolve().parents[1]
NODE1 = "192.168.56.11"


@pytest.fixture(scope="module")
def tables() -> trace.Tables:
    return trace.parse_save(GOLDEN.read_text())


@pytest.fixture(scope="module")
def plan() -> Plan:
    return cluster.load(ROOT / "inventory" / "lab")


def test_parse_save_keeps_every_rule_in_order_with_its_counters(tables: trace.Tables) -> None:
    nat = tables["nat"]
    assert nat["PREROUTING"][0].target == "KUBE-SERVICES"
    assert nat["PREROUTING"][0].packets == 364
    assert nat["KUBE-MARK-MASQ"][0].spec == "-j MARK --set-xmark 0x4000/0x4000"
    assert "KUBE-PROXY-CANARY" in nat and nat["KUBE-PROXY-CANARY"] == []
    positions = [r.position for r in nat["KUBE-SERVICES"]]
    assert positions == list(range(1, len(positions) + 1))
    assert nat["KUBE-SERVICES"][-1].target == "KUBE-NODEPORTS"


def test_gained_counts_only_rules_whose_counter_rose(tables: trace.Tables) -> None:
    after = trace.parse_save(GOLDEN.read_text().replace(
        "[364:21840] -A PREROUTING", "[366:21960] -A PREROUTING"))
    assert trace.gained(tables, after) == {("nat", "PREROUTING", 1): 2}
    changed = trace.parse_save(GOLDEN.read_text().replace(
        "[364:21840] -A PREROUTING -m comment", "[999:1] -A PREROUTING -p tcp -m comment"))
    assert trace.gained(tables, changed) == {}, "a rule replaced is not a counter that rose"


def chains(walk: trace.Walk) -> list[str]:
    return [f"{h.chain}:{h.outcome.split()[0]}" for h in walk.hits]


def test_a_pod_to_a_cluster_ip_follows_the_endpoint_conntrack_names(tables: trace.Tables) -> None:
    packet = trace.Packet("10.244.0.3", "10.104.138.46", "tcp", 80)
    for endpoint in ("10.244.0.5:8080", "10.244.1.6:8080", "10.244.2.3:8080"):
        walk = trace.walk_nat(tables, packet, {NODE1}, endpoint, {}, "PREROUTING")
        assert walk.dnat == endpoint
        assert not walk.marked, "a pod's own traffic to a ClusterIP is not masqueraded"
        assert chains(walk)[:2] == ["PREROUTING:jump", "KUBE-SERVICES:jump"]
        sep = next(h for h in walk.hits if h.chain.startswith("KUBE-SEP-"))
        assert sep.outcome == f"DNAT {endpoint}"
        assert chains(walk)[-1] == "PODNET-POSTROUTING:RETURN"


def test_a_pod_sent_to_itself_through_its_service_is_masqueraded(tables: trace.Tables) -> None:
    """Hairpin: the endpoint's own SEP rule marks it, so the reply comes back through the node."""
    packet = trace.Packet("10.244.0.5", "10.104.138.46", "tcp", 80)
    walk = trace.walk_nat(tables, packet, {NODE1}, "10.244.0.5:8080", {}, "PREROUTING")
    assert walk.marked and walk.hits[-1].outcome == "MASQUERADE"


def test_without_conntrack_the_counters_pick_the_random_rule(tables: trace.Tables) -> None:
    packet = trace.Packet("10.244.0.5", "10.104.138.46", "tcp", 80)
    svc = tables["nat"]["KUBE-SVC-XRY76EGRC3BSCIIJ"]
    second = next(r for r in svc if "0.50000" in r.spec)
    walk = trace.walk_nat(tables, packet, {NODE1}, None, {second.ref: 1}, "PREROUTING")
    assert walk.dnat == "10.244.1.6:8080"


def test_a_node_port_from_outside_is_marked_and_masqueraded(tables: trace.Tables) -> None:
    packet = trace.Packet("192.168.56.100", NODE1, "tcp", 30080)
    walk = trace.walk_nat(tables, packet, {NODE1, "10.244.0.1"}, "10.244.2.3:8080", {},
                          "PREROUTING")
    names = chains(walk)
    assert "KUBE-NODEPORTS:jump" in names and "KUBE-MARK-MASQ:mark" in names
    assert walk.dnat == "10.244.2.3:8080"
    assert names[-1] == "KUBE-POSTROUTING:MASQUERADE"


def test_a_node_port_on_an_address_the_node_does_not_hold_is_not_translated(
        tables: trace.Tables) -> None:
    packet = trace.Packet("192.168.56.100", "192.168.56.12", "tcp", 30080)
    walk = trace.walk_nat(tables, packet, {NODE1}, None, {}, "PREROUTING")
    assert walk.dnat is None


def test_a_load_balancer_address_refuses_a_source_outside_its_ranges(
        tables: trace.Tables) -> None:
    allowed = trace.Packet("192.168.56.100", "192.168.56.241", "tcp", 80)
    walk = trace.walk_nat(tables, allowed, {NODE1}, "10.244.0.5:8080", {}, "PREROUTING")
    assert "KUBE-FW-NAMSBB2UFR2Y54SS:jump" in chains(walk) and walk.dnat == "10.244.0.5:8080"
    other = trace.Packet("192.168.56.101", "192.168.56.241", "tcp", 80)
    walk = trace.walk_nat(tables, other, {NODE1}, None, {}, "PREROUTING")
    # into the firewall chain, where no rule admits it: it falls through untranslated
    assert "jump KUBE-FW-NAMSBB2UFR2Y54SS" in [h.outcome for h in walk.hits]
    assert not any(h.chain == "KUBE-FW-NAMSBB2UFR2Y54SS" for h in walk.hits)
    assert walk.dnat is None


def test_pod_to_pod_meets_no_translation(tables: trace.Tables) -> None:
    walk = trace.walk_nat(tables, trace.Packet("10.244.0.5", "10.244.2.3", "tcp", 8080),
                          {NODE1}, None, {}, "PREROUTING")
    assert walk.dnat is None and not walk.marked
    assert chains(walk)[-1] == "PODNET-POSTROUTING:RETURN"


def test_pod_to_the_outside_is_masqueraded_by_podnet(tables: trace.Tables) -> None:
    walk = trace.walk_nat(tables, trace.Packet("10.244.0.5", "192.0.2.10", "tcp", 443),
                          {NODE1}, None, {}, "PREROUTING")
    assert walk.hits[-1].outcome == "MASQUERADE"
    assert walk.hits[-1].chain == "PODNET-POSTROUTING"


def test_conntrack_lines_give_both_tuples_and_the_translations() -> None:
    text = ("tcp      6 117 TIME_WAIT src=192.168.56.100 dst=192.168.56.11 sport=46637 "
            "dport=30080 src=10.244.2.3 dst=192.168.56.11 sport=8080 dport=5542 [ASSURED] "
            "mark=0 use=1\n"
            "udp      17 29 src=10.244.0.5 dst=10.244.2.2 sport=40000 dport=53 "
            "src=10.244.2.2 dst=10.244.0.5 sport=53 dport=40000 mark=0 use=1\n"
            "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.\n")
    entries = trace.parse_conntrack(text)
    assert len(entries) == 2
    nodeport, direct = entries
    assert nodeport.state == "TIME_WAIT" and nodeport.dnat and nodeport.snat
    assert nodeport.reply == trace.Tuple("10.244.2.3", "192.168.56.11", 8080, 5542)
    assert not direct.dnat and not direct.snat and direct.proto == "udp"


def test_sources_and_targets_are_resolved_from_the_plan(plan: Plan) -> None:
    pod = plan.pods[0]
    pods = {p.key: (f"10.244.9.{i}", p.node) for i, p in enumerate(plan.pods, 1)}
    source = trace.resolve_source(plan, pod.key, pods)
    assert source.host == pod.node and source.pod == pod.key
    service = next(s for s in plan.services if s.cluster_ip and s.ports)
    target = trace.resolve_target(plan, f"{service.namespace}/{service.name}", source, pods)
    assert (target.address, target.port) == (service.cluster_ip, service.ports[0].port)
    by_dns = trace.resolve_target(plan, f"{service.name}.{service.namespace}", source, pods)
    assert by_dns == target
    client = trace.resolve_source(plan, "client", pods)
    lb = next(s for s in plan.services if s.lb_ip)
    assert trace.resolve_target(plan, f"{lb.namespace}/{lb.name}", client, pods).address \
        == lb.lb_ip


@pytest.mark.parametrize(("source", "target", "message"), [
    ("nowhere/pod", "demo/web", "no pod nowhere/pod in the plan"),
    ("nohost", "demo/web", "give NS/POD"),
    ("client", "demo/web:9999", "has no port 9999"),
    ("client", "demo/nothere", "give the port"),
    ("client", "nothere:80", "no Service, pod or host nothere"),
    ("client", "10.0.0.1:http", "is not a number"),
])
def test_what_cannot_be_traced_is_said_with_the_fix(plan: Plan, source: str, target: str,
                                                    message: str) -> None:
    pods = {p.key: ("10.244.9.9", p.node) for p in plan.pods}
    with pytest.raises(trace.TraceError, match=message):
        trace.resolve_target(plan, target, trace.resolve_source(plan, source, pods), pods)


def test_a_pod_that_is_not_running_cannot_be_a_source(plan: Plan) -> None:
    with pytest.raises(trace.TraceError, match="converge first"):
        trace.resolve_source(plan, plan.pods[0].key, {})
