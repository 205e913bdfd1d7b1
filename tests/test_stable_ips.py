"""Pods that keep their address on any node (docs/backends.md): which pods do, the block their
addresses come from, the record that keeps them, the /32s every backend routes, and what the
cni and kubelet roles write for them."""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from pathlib import Path

import jinja2
from modelkit import deployment, errors_of, hosts, make_plan, pod_doc

from podnet import backends, kubelet
from podnet.allocate import Record
from podnet.paths import PATHS
from podnet.problems import Problems

ROOT = Path(__file__).resolve().parents[1]


def pod(name: str, ns: str = "default", annotations: str = "", node: str = "") -> str:
    meta = f"  annotations:\n{annotations}" if annotations else ""
    spec = f"  nodeName: {node}\n" if node else ""
    return pod_doc(name, spec + "  containers:\n    - name: c\n      image: podnet/netexec\n"
                   "      ports: [{name: http, containerPort: 8080}]\n", meta, ns)


STABLE_DEPLOYMENT = deployment("web", 2).replace(
    "      labels:\n        app: web",
    "      annotations:\n        podnet.io/stable-ip: \"true\"\n      labels:\n        app: web")


def test_bare_pods_keep_an_address_from_the_last_node_block_by_default() -> None:
    plan = make_plan(pod("a") + pod("b") + deployment("web", 2))
    assert plan.settings.stable_pod_cidr == IPv4Network("10.244.255.0/24")
    kept = {p.key: p.stable_ip for p in plan.pods}
    assert kept["default/a"] == "10.244.255.1" and kept["default/b"] == "10.244.255.2"
    # a Deployment's pods take their node's addresses unless annotated
    web = [ip for k, ip in kept.items() if k.startswith("default/web-")]
    assert web == [None, None], kept
    assert plan.record.pod_ips == {"default/a": "10.244.255.1", "default/b": "10.244.255.2"}


def test_annotation_opts_a_pod_out_and_a_deployment_in() -> None:
    plan = make_plan(pod("a", annotations='    podnet.io/stable-ip: "false"\n')
                     + STABLE_DEPLOYMENT)
    assert plan.pod("default/a").stable_ip is None
    web = sorted((p.name, p.stable_ip) for p in plan.pods if p.name.startswith("web-"))
    assert [ip for _, ip in web if ip] and all(ip for _, ip in web), web
    # replica i is kept by index: a template change renames the pods, not their addresses
    assert set(plan.record.pod_ips) == {"default/web/0", "default/web/1"}


def test_replica_keeps_its_address_through_a_template_change() -> None:
    first = make_plan(STABLE_DEPLOYMENT)
    changed = make_plan(STABLE_DEPLOYMENT.replace("app: web\n    spec:",
                                                  "app: web\n        tier: a\n    spec:"),
                        record=first.record)
    before = sorted(p.stable_ip or "" for p in first.pods)
    after = sorted(p.stable_ip or "" for p in changed.pods)
    assert {p.name for p in first.pods} != {p.name for p in changed.pods}
    assert before == after


def test_the_record_keeps_an_address_when_an_earlier_pod_goes() -> None:
    first = make_plan(pod("a") + pod("b"))
    second = make_plan(pod("b") + pod("c"), record=first.record)
    assert second.pod("default/b").stable_ip == "10.244.255.2"
    assert second.pod("default/c").stable_ip == "10.244.255.1"  # a's, released


def test_a_moved_pod_keeps_its_address_and_its_32_follows_it() -> None:
    first = make_plan(pod("a", node="node1") + pod("b", node="node2"))
    moved = make_plan(pod("a", node="node3") + pod("b", node="node2"), record=first.record)
    assert first.pod("default/a").stable_ip == moved.pod("default/a").stable_ip == "10.244.255.1"
    before = backends.node_routing(first, "node2")["routes"]
    after = backends.node_routing(moved, "node2")["routes"]
    assert {"dst": "10.244.255.1/32", "via": "192.168.56.11", "node": "node1"} in before
    assert {"dst": "10.244.255.1/32", "via": "192.168.56.13", "node": "node3"} in after
    # the node it runs on routes it to the pod's veth (ptp), not through another node
    assert all(r["dst"] != "10.244.255.1/32" for r in
               backends.node_routing(moved, "node3")["routes"])


def test_every_backend_carries_the_32s() -> None:
    text = pod("a", node="node2")
    vx = backends.node_routing(make_plan(text, {"podnet_backend": "vxlan"}), "node1")["vxlan"]
    assert vx["peers"][0]["routes"] == ["10.244.1.0/24", "10.244.255.1/32"]
    assert vx["peers"][1]["routes"] == ["10.244.2.0/24"]
    bgp = backends.node_routing(make_plan(text, {"podnet_backend": "bgp"}), "node2")["bgp"]
    assert bgp["announce"] == ["10.244.1.0/24", "10.244.255.1/32"]


def test_no_node_gets_the_stable_block_as_its_pod_cidr() -> None:
    # a /27 cluster of /29 nodes: 4 blocks, the last is the stable pods', three nodes fit
    variables = {"podnet_cluster_cidr": "10.244.0.0/27", "podnet_node_cidr_prefix": 29}
    plan = make_plan(pod("a"), variables, hosts(3))
    assert "10.244.0.24/29" not in {n.pod_cidr for n in plan.nodes}
    assert plan.pod("default/a").stable_ip == "10.244.0.25"
    errors = errors_of(pod("a"), variables, hosts(4))
    assert any("holds only 3 beside the stable pods' 10.244.0.24/29" in e for e in errors), errors


def test_a_recorded_node_cidr_in_the_stable_block_is_allocated_anew() -> None:
    record = Record(node_cidrs={"node1": "10.244.255.0/24"})
    plan = make_plan("", host_list=hosts(1), record=record)
    assert plan.nodes[0].pod_cidr == "10.244.0.0/24"
    assert any("pod CIDR changes" in str(w) for w in plan.warnings)


def test_stable_block_setting_is_checked() -> None:
    cases = {
        "10.245.0.0/24": "is not a block inside podnet_cluster_cidr 10.244.0.0/16",
        "10.244.0.0/16": "is not a block inside podnet_cluster_cidr",
        "10.244.0.0/31": "is not a block inside podnet_cluster_cidr",
        "banana": "podnet_stable_pod_cidr",
    }
    for value, message in cases.items():
        errors = errors_of(pod("a"), {"podnet_stable_pod_cidr": value})
        assert any(message in e and "podnet_stable_pod_cidr" in e for e in errors), (value,
                                                                                      errors)
    errors = errors_of("", {"podnet_cluster_cidr": "10.244.0.0/24",
                            "podnet_node_cidr_prefix": 24,
                            "podnet_stable_pod_cidr": "10.244.0.0/25"})
    assert any("overlaps every /24 block of 10.244.0.0/24" in e for e in errors), errors
    errors = errors_of("", {"podnet_cluster_cidr": "10.244.0.0/24",
                            "podnet_node_cidr_prefix": 24})
    assert any("podnet_stable_pod_cidr" in e and "would leave the nodes none" in e
               and "none (every pod takes its node's addresses)" in e for e in errors), errors


def test_none_turns_kept_addresses_off() -> None:
    """podnet_stable_pod_cidr: none - no block is set aside (a one-block cluster CIDR works
    again), bare Pods take their node's addresses, a Deployment asking for more is refused."""
    variables = {"podnet_cluster_cidr": "10.244.0.0/24", "podnet_node_cidr_prefix": 24,
                 "podnet_stable_pod_cidr": "none"}
    plan = make_plan(pod("a"), variables, hosts(1))
    assert plan.settings.stable_pod_cidr is None and plan.pod("default/a").stable_ip is None
    assert plan.nodes[0].pod_cidr == "10.244.0.0/24" and plan.record.pod_ips == {}
    assert kubelet.stable_ipam(plan)["assignments"]["pods"] == {}
    errors = errors_of(STABLE_DEPLOYMENT, variables, hosts(1))
    assert any("spec.template.metadata.annotations.podnet.io/stable-ip" in e
               and "podnet_stable_pod_cidr is none" in e for e in errors), errors


def test_a_pod_that_ran_with_its_node_s_address_is_warned_once() -> None:
    """An upgrade (or the annotation newly set) renumbers a running pod once: said."""
    before = make_plan(pod("a", annotations='    podnet.io/stable-ip: "false"\n'))
    after = make_plan(pod("a"), record=before.record)
    said = [str(w) for w in after.warnings]
    assert any("pod default/a now keeps its address on any node" in w and "10.244.255.1" in w
               for w in said), said
    again = make_plan(pod("a"), record=after.record)
    assert not [w for w in again.warnings if "keeps its address" in str(w)]


def test_a_node_cidr_given_inside_the_stable_block_is_refused() -> None:
    host_list = hosts(2)
    host_list[0]["pod_cidr"] = "10.244.255.0/24"
    errors = errors_of(pod("a"), host_list=host_list)
    assert any("podnet_pod_cidr" in e and "overlaps the stable pods' block" in e
               for e in errors), errors


def test_a_smaller_stable_block_and_a_full_one() -> None:
    variables = {"podnet_stable_pod_cidr": "10.244.200.0/30"}
    plan = make_plan(pod("a") + pod("b"), variables)
    assert [p.stable_ip for p in plan.pods if p.namespace == "default"] == ["10.244.200.1",
                                                                          "10.244.200.2"]
    errors = errors_of(pod("a") + pod("b") + pod("c"), variables)
    assert any("default/c: no address left in the stable pods' block 10.244.200.0/30" in e
               and "podnet.io/stable-ip" in e for e in errors), errors


def test_a_bad_annotation_value_names_the_field_and_the_fix() -> None:
    errors = errors_of(pod("a", annotations="    podnet.io/stable-ip: \"yes\"\n"))
    assert any("metadata.annotations.podnet.io/stable-ip" in e and "'yes'" in e
               and "quote it" in e for e in errors), errors


def test_the_kubelet_wires_kept_pods_with_the_stable_conflist() -> None:
    pinned = deployment("web", 1, spec_extra="      nodeName: node1\n")
    plan = make_plan(pod("a", node="node1") + pinned)
    specs = {p["name"]: p["spec"] for p in kubelet.node_pods(plan, "node1")}
    kept = specs.pop("a")
    assert kept["network"] == PATHS.stable_network_conf
    # the address is in the description, so a new one restarts the sandbox
    assert kept["stable_ip"] == "10.244.255.1"
    assert [s["network"] for s in specs.values()] == [PATHS.network_conf]
    assert all("stable_ip" not in s for s in specs.values())


def test_the_stable_conflist_and_assignments_render() -> None:
    plan = make_plan(pod("a"), {"podnet_cluster_cidr": "10.128.0.0/12"})
    ipam = kubelet.stable_ipam(plan)
    nodes = [{"name": n.name, "address": n.address} for n in plan.nodes]
    assert [n["address"] for n in nodes] == ["192.168.56.11", "192.168.56.12", "192.168.56.13"]
    fence = {"nodes": nodes, "port": 10256, "path": "/podnet/pods"}
    assert ipam == {"assignments": {"version": 1, "pods": {"default/a": "10.143.255.1"},
                                    "fence": fence},
                    "prefix_length": 12}
    env = jinja2.Environment(  # noqa: S701 - JSON, not HTML
        loader=jinja2.FileSystemLoader(ROOT / "roles/cni/templates"),
                             undefined=jinja2.StrictUndefined)
    text = env.get_template("etc/cni/net.d/20-podnet-stable.conflist.j2").render(
        cni_version="1.0.0", __cni_paths=PATHS.as_dict(), __cni_node={"gateway": "10.128.0.1"},
        __cni_mtu=1450, __cni_stable=ipam)
    conf = json.loads(text)
    assert conf["name"] == PATHS.cni_network
    assert [p["type"] for p in conf["plugins"]] == ["ptp", "portmap"]
    assert conf["plugins"][0]["mtu"] == 1450
    assert conf["plugins"][0]["ipam"] == {
        "type": "podnet-ipam", "assignments": PATHS.ipam_assignments, "gateway": "10.128.0.1",
        "prefixLength": 12, "routes": [{"dst": "0.0.0.0/0"}]}


def test_the_record_reads_and_writes_pod_ips() -> None:
    problems = Problems()
    record = Record.loads(Record(pod_ips={"a/b": "10.244.255.1"}).dumps(), "r", problems)
    assert not problems.errors and record.pod_ips == {"a/b": "10.244.255.1"}
