"""The Ansible plugins podnet ships, on their own: the filters' errors name the filter and what
is wrong, the lab modules answer check mode from what is there, the kernel probe names each
missing feature with its fix. (The plan lookup runs for real in test_plan_command's plays.)"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from ansible.module_utils.testing import patch_module_args
from modelkit import deployment, make_plan
from nodekit import ROOT, load

model_filters = load("podnet_model_filter", ROOT / "plugins/filter/podnet_model.py")
lab_filters = load("podnet_lab_filter", ROOT / "plugins/filter/podnet_lab.py")
kernel_probe = load("podnet_kernel_probe_module", ROOT / "plugins/modules/podnet_kernel_probe.py")
lab_module = load("podnet_lab_module", ROOT / "plugins/modules/podnet_lab.py")
lab_node_module = load("podnet_lab_node_module", ROOT / "plugins/modules/podnet_lab_node.py")


def run_module(main: Callable[[], None], args: dict[str, Any],
               capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """What the module answers Ansible (its one JSON line) for `args`."""
    with patch_module_args(args), pytest.raises(SystemExit):
        main()
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


PLAN = make_plan().data()  # the plan as the roles get it (nodes node1, node2, node3)
POD = {"namespace": "demo", "name": "web-1", "ip": "10.244.1.5"}
EMPTY: dict[str, Any] = {"ansible_local": {"podnet": {"pods": []}}}
DNS_NODE = next(p["node"] for p in PLAN["pods"] if p["namespace"] == "kube-system")


def test_cluster_pods_joins_every_nodes_fact() -> None:
    hostvars = {"node1": {"ansible_local": {"podnet": {"pods": [POD]}}},
                "node2": EMPTY, "node3": EMPTY}
    assert model_filters.podnet_cluster_pods(hostvars, PLAN) == [POD]


def test_cluster_pods_refuses_a_node_without_its_fact_unless_not_strict() -> None:
    hostvars = {"node1": {"ansible_local": {"podnet": {"pods": [POD]}}}, "node2": {},
                "node3": EMPTY}
    with pytest.raises(AnsibleFilterError, match=r"node node2 has not reported its pods .*"
                                                 r"run the node play on all nodes"):
        model_filters.podnet_cluster_pods(hostvars, PLAN)
    # a first dry run: no pod runs yet, so no node has the fact
    assert model_filters.podnet_cluster_pods(hostvars, PLAN, strict=False) == [POD]


def test_cluster_pods_asks_no_fact_of_a_not_ready_node() -> None:
    down = make_plan(deployment("web", 3), not_ready=("node3",))
    pod_fact = {"namespace": "default", "name": "x", "ip": "10.244.0.5"}
    hostvars = {"node1": {"ansible_local": {"podnet": {"pods": [pod_fact]}}},
                "node2": {"ansible_local": {"podnet": {"pods": []}}}, "node3": {}}
    assert model_filters.podnet_cluster_pods(hostvars, down.data()) == [pod_fact]


@pytest.mark.parametrize(("name", "args", "says"), [
    ("podnet_cluster_pods", ({}, {"nodes": [{"name": "n1"}]}),
     "podnet_cluster_pods: not a podnet plan: it has no 'allocations'"),
    ("podnet_cluster_pods", ({}, PLAN), "podnet_cluster_pods: 'node1'"),
    ("podnet_node_pods", ({}, "n1"), "podnet_node_pods: not a podnet plan"),
    ("podnet_kube_proxy", ({}, [], "n1"), "podnet_kube_proxy: not a podnet plan"),
    ("podnet_cluster_dns", ({}, [], "n1", ""), "podnet_cluster_dns: not a podnet plan"),
    ("podnet_kube_proxy", (PLAN, [{"name": "web-1"}], "node1"), "podnet_kube_proxy: ValueError"),
    ("podnet_kube_proxy", (PLAN, [], "n1"), "podnet_kube_proxy: StopIteration"),
    ("podnet_cluster_dns", (PLAN, [], DNS_NODE, "nameserver 127.0.0.1\n"),
     "cluster_dns: the node's /etc/resolv.conf names no resolver"),
    ("podnet_dns_upstreams", ({}, "n1", ""), "podnet_dns_upstreams: not a podnet plan"),
    ("podnet_dns_upstreams", (PLAN, DNS_NODE, "nameserver 127.0.0.53\n"),
     f"cluster_dns on {DNS_NODE}: the node's /etc/resolv.conf names only systemd-resolved's stub"),
])
def test_a_filter_given_no_plan_names_itself_and_the_problem(name: str, args: tuple[Any, ...],
                                                             says: str) -> None:
    with pytest.raises(AnsibleFilterError) as caught:
        getattr(model_filters, name)(*args)
    assert str(caught.value.message).startswith(says), caught.value.message


def test_every_filter_is_registered_under_its_own_name() -> None:
    filters = model_filters.FilterModule().filters()
    for name, function in filters.items():
        assert callable(function)
        if name.startswith("podnet_") and hasattr(model_filters, name):
            assert function is getattr(model_filters, name)
    assert set(lab_filters.FilterModule().filters()) == {"podnet_lab_errors",
                                                           "podnet_lab_host_network",
                                                           "podnet_role_packages"}


LAB = {"lab_name": "podnet-t", "lab_underlay_cidr": "192.168.56.0/24",
       "lab_controller_address": "192.168.56.1"}


def test_lab_errors_pass_a_good_lab_and_name_a_bad_address() -> None:
    hostvars = {"a": {"ansible_host": "192.168.56.11", "ansible_user": "debian"},
                "b": {"ansible_host": "10.0.0.1", "ansible_user": "debian"}}
    assert lab_filters.podnet_lab_errors(hostvars, ["a"], LAB) == []
    errors = lab_filters.podnet_lab_errors(hostvars, ["a", "b"], LAB)
    assert errors and any("10.0.0.1" in e for e in errors), errors


def test_lab_errors_read_how_each_host_is_reached_and_shaped() -> None:
    hostvars = {"a": {"ansible_host": "192.168.56.11", "ansible_user": "root",
                      "ansible_port": 70000, "lab_suite": "sid", "lab_resolver": "dnsmasq"},
                "b": {"ansible_host": "192.168.56.12"}}
    errors = lab_filters.podnet_lab_errors(hostvars, ["a", "b"],
                                           {**LAB, "lab_nameservers": ["8.8.8.8"]})
    assert [e.split(":")[0] for e in errors] == ["a", "a", "a", "a", "b", "lab_nameservers"]
    assert "a: ansible_user is root, but lab hosts are VM-shaped" in errors[0]
    assert "a: ansible_port 70000 is not a TCP port" in errors[1]
    assert "lab_suite 'sid' is not one the lab builds; use one of bookworm, trixie" in errors[2]
    assert "lab_resolver 'dnsmasq'" in errors[3]
    assert "b: ansible_user None is not a login name" in errors[4]
    assert "8.8.8.8 is outside lab_underlay_cidr" in errors[5]
    # lab_image_suite is the default release of a host without lab_suite
    good = {"c": {"ansible_host": "192.168.56.13", "ansible_user": "debian"}}
    assert lab_filters.podnet_lab_errors(good, ["c"], {**LAB, "lab_image_suite": "trixie"}) == []
    assert lab_filters.podnet_lab_errors(good, ["c"], {**LAB, "lab_image_suite": "buster"})


def test_lab_errors_refuse_a_max_hosts_that_is_not_a_number() -> None:
    with pytest.raises(AnsibleFilterError, match="lab_max_hosts: must be an integer"):
        lab_filters.podnet_lab_errors({}, [], {**LAB, "lab_max_hosts": "many"})


def test_role_packages_lists_the_roles_packages_and_names_a_bad_list(tmp_path: Path) -> None:
    assert "unbound" in lab_filters.podnet_role_packages(str(ROOT / "roles"))
    defaults = tmp_path / "web" / "defaults" / "main.yml"
    defaults.parent.mkdir(parents=True)
    defaults.write_text("web_packages: nginx\n")
    with pytest.raises(AnsibleFilterError, match="web_packages must be a list of package names"):
        lab_filters.podnet_role_packages(str(tmp_path))


def test_kernel_probe_refuses_a_feature_it_does_not_know(capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    result = run_module(kernel_probe.main, {"required": ["netns", "ipvs"]}, capsys)
    assert result["failed"]
    assert result["msg"].startswith("required: unknown kernel feature(s) ipvs; podnet probes ")


@pytest.mark.skipif(os.geteuid() != 0, reason="the netns probe runs unshare --net: needs root")
def test_kernel_probe_reports_each_feature_and_names_a_missing_one_with_its_fix(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    gone = tmp_path / "no-such-sysctl"
    monkeypatch.setitem(kernel_probe.FILES, "br_netfilter", (str(gone), "load br_netfilter"))
    found = run_module(kernel_probe.main, {"required": ["netns"]}, capsys)
    assert not found.get("failed") and not found["changed"], found
    assert set(found["features"]) == {*kernel_probe.PROBES, *kernel_probe.FILES}
    assert found["features"]["netns"]["ok"]  # `unshare --net -- true` runs here as root
    assert found["features"]["br_netfilter"] == {
        "ok": False, "detail": f"{gone} is missing", "hint": "load br_netfilter"}
    assert "br_netfilter" in found["missing"]
    assert found["missing"] == sorted(k for k, v in found["features"].items() if not v["ok"])
    lacking = run_module(kernel_probe.main, {"required": ["br_netfilter"]}, capsys)
    assert lacking["failed"]
    assert lacking["msg"] == (f"kernel feature 'br_netfilter' is missing - {gone} is missing. "
                              "Fix: load br_netfilter.")


def test_lab_module_check_mode_answers_from_what_is_there(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    name = "podnet-plugin-test-none"  # no such netns, no such state directory
    absent = run_module(lab_module.main, {"name": name, "state_dir": str(tmp_path / "none"),
                                          "state": "absent", "_ansible_check_mode": True}, capsys)
    assert absent == {**absent, "changed": False, "netns": f"/run/netns/{name}"}
    (tmp_path / "left").mkdir()
    leftover = run_module(lab_module.main, {"name": name, "state_dir": str(tmp_path / "left"),
                                            "state": "absent", "_ansible_check_mode": True},
                          capsys)
    assert leftover["changed"]  # a state directory left behind is something to remove
    present = run_module(lab_module.main, {"name": name, "state_dir": str(tmp_path),
                                           "controller_cidr": "192.168.56.1/24",
                                           "_ansible_check_mode": True}, capsys)
    assert present["changed"]
    assert not Path(f"/run/netns/{name}").exists()


def test_lab_module_needs_the_controller_address_to_build_a_lab(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = run_module(lab_module.main, {"name": "x", "state_dir": str(tmp_path)}, capsys)
    assert result["failed"]
    assert "controller_cidr" in result["msg"]


def test_lab_node_module_check_mode_and_a_missing_image(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    node = {"lab": "podnet-plugin-test", "state_dir": str(tmp_path), "name": "n1"}
    gone = run_module(lab_node_module.main,
                      {**node, "state": "absent", "_ansible_check_mode": True}, capsys)
    assert gone["changed"] is False  # no node directory: nothing to remove
    (tmp_path / "nodes" / "n1").mkdir(parents=True)
    there = run_module(lab_node_module.main,
                       {**node, "state": "absent", "_ansible_check_mode": True}, capsys)
    assert there["changed"] is True
    started = {**node, "address": "192.168.56.11", "image": str(tmp_path / "image.raw"),
               "authorized_key": "ssh-ed25519 AAAA test", "user": "debian"}
    down = run_module(lab_node_module.main, {**started, "_ansible_check_mode": True}, capsys)
    assert down["changed"] is True  # no machine runs for it: starting it is a change
    missing = run_module(lab_node_module.main, started, capsys)
    assert missing["failed"]
    assert missing["msg"] == (f"image {tmp_path / 'image.raw'} does not exist; run the lab "
                              "role's image step (make lab-up) first")


def test_the_plan_lookup_takes_the_not_ready_hosts(tmp_path: Path) -> None:
    from ansible.errors import AnsibleLookupError
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from modelkit import VARS, hosts

    plugin = load("podnet_plan_lookup", ROOT / "plugins/lookup/podnet_plan.py")
    lookup = plugin.LookupModule(loader=DataLoader(), templar=Templar(loader=DataLoader()))
    inventory = {h["name"]: {"ansible_host": h["address"], "group_names": h["groups"],
                             "inventory_dir": str(tmp_path)} for h in hosts()}
    variables = {**VARS, "podnet_state_dir": str(tmp_path), "hostvars": inventory,
                 "groups": {"all": list(inventory)}}
    (down,) = lookup.run([], variables=variables, not_ready=["node3"])
    assert down["errors"] == [] and down["plan"]["not_ready"] == ["node3"]
    (lb,) = lookup.run([], variables=variables, not_ready=["lb"])
    assert "did not answer, and it is not a node" in lb["errors"][0]
    with pytest.raises(AnsibleLookupError, match="not_ready is a list of host names"):
        lookup.run([], variables=variables, not_ready="node3")
    with pytest.raises(AnsibleLookupError, match=r"unknown option\(s\) wrong"):
        lookup.run([], variables=variables, wrong=1)
