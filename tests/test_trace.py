"""podnet/trace.py: the nat walk on kube-proxy's real rules (a node's iptables-save of the demo
lab), the counters, conntrack's tuples, and what ``--from``/``--to`` accept. The live trace runs
on the lab (verify's walkthroughs, python -m podnet trace)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from podnet import cluster, trace
from podnet.__main__ import main
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


@pytest.mark.parametrize(("argv", "message"), [
    (["--from", "nope/x", "--to", "demo/web"], "no pod nope/x in the plan"),
    (["--from", "client", "--to", "demo/web:8443"], "demo/web has no port 8443"),
])
def test_the_command_refuses_what_the_plan_refuses_before_any_host_is_asked(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ssh(*_: object) -> str:
        raise AssertionError("a host was asked")

    monkeypatch.setattr("podnet.__main__.ssh_runner", lambda _: no_ssh)
    assert main(["trace", "-i", str(ROOT / "inventory" / "lab"), *argv]) == 2
    assert message in capsys.readouterr().err


class FakeCluster:
    """The hosts' answers to one trace from a pod on node1 to demo/web's ClusterIP: node1
    DNATs it to 10.244.2.3:8080 (node3), as node1's real rules (GOLDEN) and conntrack say."""

    def __init__(self, plan: Plan, source: str) -> None:
        self.plan = plan
        self.source = source
        self.sport = 0
        self.after = GOLDEN.read_text().replace(
            "[364:21840] -A PREROUTING", "[365:21900] -A PREROUTING")
        self.asked: list[tuple[str, str]] = []

    def facts(self, host: str) -> str:
        web = next(p.key for p in self.plan.pods if p.node == "node3"
                   and p.key.startswith("demo/web-"))
        ips = {self.source: "10.244.0.9", web: "10.244.2.3"}
        pods = [{"namespace": p.namespace, "name": p.name, "ip": ips.get(p.key, f"10.0.0.{i}")}
                for i, p in enumerate(self.plan.pods) if p.node == host]
        return json.dumps({"pods": pods})

    def __call__(self, host: str, script: str) -> str:
        self.asked.append((host, script))
        if script.endswith(" facts"):
            return self.facts(host)
        if script == "iptables-save -c -t nat":
            return GOLDEN.read_text()
        if "python3 -c" in script:
            self.sport = int(re.search(r" tcp (\d+) ", script).group(1))  # type: ignore[union-attr]
            return f"10.104.138.46 via 10.244.0.1 dev eth0\n{trace.SECTION}\nconnected\n"
        if script.startswith("iptables-save -c -t nat; "):
            conntrack = "" if host != "node1" else (
                f"tcp 6 119 SYN_SENT src=10.244.0.9 dst=10.104.138.46 sport={self.sport} "
                f"dport=80 src=10.244.2.3 dst=10.244.0.9 sport=8080 dport={self.sport} mark=0")
            nat = self.after if host == "node1" else GOLDEN.read_text()
            return f"{nat}\n{trace.SECTION}\n{conntrack}\n{trace.SECTION}\n" \
                   f"2: host0 inet 192.168.56.11/24 brd 192.168.56.255\n"
        if script.startswith("ip route get 10.244.2.3"):
            return ("10.244.2.3 via 192.168.56.13 dev host0 src 192.168.56.11\n"
                    if host == "node1" else "10.244.2.3 dev cni0 src 10.244.2.1\n")
        raise AssertionError(f"unexpected command on {host}: {script}")


def test_a_trace_puts_the_hosts_answers_in_the_packets_order(plan: Plan) -> None:
    source = next(p.key for p in plan.pods if p.node == "node1" and not p.host_network
                  and p.stable_ip is None)
    hosts = FakeCluster(plan, source)
    result = trace.trace(plan, hosts, source, "demo/web:http")
    assert result.answered and result.endpoint == "10.244.2.3:8080"
    assert result.flow == f"tcp 10.244.0.9:{hosts.sport} -> 10.104.138.46:80"
    assert [s.host for s in result.steps] == ["node1", "node1", "node1", "node1", "node3",
                                              "node1"]
    nat = result.steps[1]
    assert nat.what.startswith("nat PREROUTING: kube-proxy's rules pick 10.244.2.3:8080")
    assert nat.detail[0].startswith("PREROUTING #1: -j KUBE-SERVICES") and \
        nat.detail[0].endswith("[counter +1]")
    assert any("DNAT 10.244.2.3:8080" in line for line in nat.detail)
    assert "via 192.168.56.13" in result.steps[3].what and "dev cni0" in result.steps[4].what
    assert "translated back to 10.104.138.46:80" in result.steps[5].what
    assert "masqueraded" not in result.steps[5].what
    assert result.outcome.startswith("connected; pod demo/web-")
    assert "10.244.2.3:8080" in result.text() and "$ iptables-save -c -t nat" in result.text()


def test_affinity_and_random_rules_are_decided_by_their_counters(tables: trace.Tables) -> None:
    """demo/web-sticky (ClientIP): the rule the packet took is the one whose counter rose, the
    affinity (recent --rcheck) rule or the random one, both naming the same endpoint."""
    packet = trace.Packet("10.244.0.3", "10.96.54.61", "tcp", 80)
    svc = tables["nat"]["KUBE-SVC-QW7RIL26IWCN3NJZ"]
    endpoint = "10.244.2.3:8080"
    to_it = [r for r in svc if r.target and r.target.startswith("KUBE-SEP-")
             and trace.Walk(tables, packet, (), None, {})._sep_destination(r.target) == endpoint]
    rcheck = next(r for r in to_it if "--rcheck" in r.tokens)
    random = next(r for r in to_it if "--rcheck" not in r.tokens)
    for took in (rcheck, random):
        walk = trace.walk_nat(tables, packet, {NODE1}, endpoint, {took.ref: 1}, "PREROUTING")
        taken = [h for h in walk.hits if h.chain == "KUBE-SVC-QW7RIL26IWCN3NJZ"
                 and h.outcome.startswith("jump KUBE-SEP-")]
        assert [(h.position, h.gained) for h in taken] == [(took.position, 1)]
        assert walk.dnat == endpoint


def test_marks_are_values_and_masks(tables: trace.Tables) -> None:
    walk = trace.walk_nat(tables, trace.Packet("192.168.56.100", NODE1, "tcp", 30080),
                          {NODE1}, "10.244.2.3:8080", {}, "PREROUTING")
    marks = [h.outcome for h in walk.hits if h.outcome.startswith("mark ")]
    assert marks == ["mark 0x0 -> 0x4000 (kube-proxy's: masquerade it)",
                     "mark 0x4000 -> 0x0 (kube-proxy's bit cleared before masquerading)"]
    portmap = trace.Walk(tables, trace.Packet("10.244.0.3", "10.244.2.3", "tcp", 80), (), None,
                         {})
    portmap.mark = 0x2000  # portmap's own masquerade bit is not kube-proxy's
    assert not portmap.marked
    assert portmap.matches(tables["nat"]["KUBE-POSTROUTING"][0]), "! --mark 0x4000/0x4000"


SMALL = """*nat
:PREROUTING ACCEPT [0:0]
:X - [0:0]
[0:0] -A PREROUTING ! -i cni0 -d 10.0.0.1/32 -j X
[0:0] -A PREROUTING -p tcp -m multiport --dports 80,30000:30010 -j DNAT --to-destination 10.1.1.1:80
[0:0] -A X -m recent --name N --rcheck --seconds 10 --reap -j DNAT --to-destination 10.2.2.2:80
COMMIT
"""


def test_negation_ends_at_its_option_and_port_lists_and_ranges_match() -> None:
    tables = trace.parse_save(SMALL)
    walk = trace.walk_nat(tables, trace.Packet("10.9.9.9", "10.0.0.1", "tcp", 80), (),
                          None, {("nat", "X", 1): 1}, "PREROUTING")
    assert walk.dnat == "10.2.2.2:80", "'! -i' is not evaluated and does not negate -d"
    assert "-i" in walk.unevaluated
    for port, dnat in ((30005, "10.1.1.1:80"), (443, None)):
        walk = trace.walk_nat(tables, trace.Packet("10.9.9.9", "10.0.0.2", "tcp", port), (),
                              None, {}, "PREROUTING")
        assert walk.dnat == dnat
