"""The kubelet sync module's decisions, on throwaway folders: which pods it removes, which
sandboxes and containers it restarts, starts and enables. systemctl's answers are given (systemd
is not PID 1 on this machine); verify/test_drift.py and the lifecycle suites prove the same on
the lab's nodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from modelkit import deployment, make_plan
from nodekit import ROOT, load, utils

from podnet import kubelet
from podnet.plan import Plan

kubelet_module = load("podnet_kubelet_module", ROOT / "plugins/modules/podnet_kubelet.py")

TEXT = deployment("web", 3) + """\
---
apiVersion: v1
kind: Pod
metadata: {name: job, namespace: default}
spec:
  nodeName: node1
  restartPolicy: Never
  containers:
    - {name: once, image: busybox, command: [/bin/true]}
"""


class Node:
    """A node's folders in tmp_path and what its systemd answers."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = tmp_path
        self.units: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, list[str]]] = []
        self.runtime = tmp_path / "podnet-cni"
        self.runtime.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/runtime.log\n")
        self.runtime.chmod(0o755)
        (tmp_path / "units").mkdir()
        monkeypatch.setattr(kubelet_module, "unit_states",
                            lambda names: {n: self.units.get(n, {"LoadState": "not-found",
                                                                 "ActiveState": "inactive"})
                                           for n in names})
        monkeypatch.setattr(kubelet_module, "systemctl", self.systemctl)
        monkeypatch.setattr(kubelet_module, "daemon_reload",
                            lambda report: self.calls.append(("daemon-reload", [])))
        monkeypatch.setattr(kubelet_module, "network_gone", lambda pod: self.gone.get(pod["id"]))
        self.gone: dict[str, str] = {}
        plan = Plan.from_data(make_plan(TEXT).data())
        self.pods = kubelet.node_pods(plan, "node1")
        for pod in self.pods:  # into tmp_path
            pod["dir"] = str(tmp_path / "pods" / pod["id"])
            for c in pod["containers"]:
                if c["config_path"]:
                    c["config_path"] = str(Path(pod["dir"]) / Path(c["config_path"]).name)

    def systemctl(self, report: Any, verb: str, units: list[str], why: str = "") -> None:
        if units:
            report.note(f"{verb} {units}")
            self.calls.append((verb, list(units)))

    def sync(self, check: bool = False) -> tuple[Any, dict[str, Any]]:
        report = utils.Report(check)
        out = kubelet_module.converge({"pods": self.pods, "pods_dir": str(self.root / "pods"),
                                       "runtime": str(self.runtime),
                                       "unit_dir": str(self.root / "units"),
                                       "admitted_dir": str(self.root / "admitted")},
                                      report, False)
        return report, out

    def running(self) -> None:
        """Every sandbox and container active and enabled, as after a good sync."""
        for pod in self.pods:
            self.units[pod["sandbox_unit"]] = {"ActiveState": "active",
                                               "UnitFileState": "enabled"}
            for c in pod["containers"]:
                self.units[c["unit"]] = {"ActiveState": "active", "UnitFileState": "enabled",
                                         "ExecMainStartTimestampMonotonic": "1"}


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    return Node(tmp_path, monkeypatch)


def test_a_first_sync_writes_every_pod_and_starts_it(node: Node) -> None:
    node.sync()
    sandboxes = [p["sandbox_unit"] for p in node.pods]
    units = [c["unit"] for p in node.pods for c in p["containers"]]
    assert ("start", sandboxes) in node.calls and ("enable", sandboxes) in node.calls
    assert ("start", units) in node.calls and ("daemon-reload", []) in node.calls
    for pod in node.pods:
        spec = json.loads((Path(pod["dir"]) / "pod.json").read_text())
        assert spec == pod["spec"]
        assert (Path(pod["dir"]) / "resolv.conf").read_text() == pod["resolv_conf"]
        for c in pod["containers"]:
            assert (node.root / "units" / c["unit"]).read_text() == c["unit_text"]


def test_a_sync_with_nothing_wrong_changes_nothing(node: Node) -> None:
    node.sync()
    node.running()
    node.calls.clear()
    report, out = node.sync()
    assert report.changes == [] and node.calls == [] and out == {"removed": [], "repaired": []}


def test_the_sync_admits_every_pod_it_places_unreported(node: Node) -> None:
    """podnet-cni's fence: a pod the converge placed here since boot starts without asking."""
    node.sync()
    node.running()
    report, _ = node.sync()
    assert sorted(p.name for p in (node.root / "admitted").iterdir()) == sorted(
        p["id"] for p in node.pods)
    assert report.changes == []


def test_a_changed_description_restarts_the_sandbox_only(node: Node) -> None:
    node.sync()
    node.running()
    node.calls.clear()
    web = next(p for p in node.pods if p["name"].startswith("web"))
    web["spec"]["ifname"] = "eth1"
    node.sync()
    # its containers follow their sandbox (PartOf=): no restart of their own
    assert node.calls == [("restart", [web["sandbox_unit"]])]


def test_a_pod_whose_network_is_gone_is_repaired(node: Node) -> None:
    node.sync()
    node.running()
    node.calls.clear()
    web = next(p for p in node.pods if p["name"].startswith("web"))
    node.gone[web["id"]] = "network namespace is gone"
    _, out = node.sync()
    assert out["repaired"] == [web["id"]]
    assert node.calls == [("restart", [web["sandbox_unit"]])]


def test_a_changed_resolv_conf_restarts_the_pods_containers(node: Node) -> None:
    node.sync()
    node.running()
    node.calls.clear()
    web = next(p for p in node.pods if p["name"].startswith("web"))
    (Path(web["dir"]) / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    node.sync()
    assert node.calls == [("restart", [c["unit"] for c in web["containers"]])]


def test_stopped_containers_start_unless_their_pod_says_never(node: Node) -> None:
    node.sync()
    node.running()
    node.calls.clear()
    job = next(p for p in node.pods if p["name"] == "job")
    web = next(p for p in node.pods if p["name"].startswith("web"))
    for c in [*job["containers"], *web["containers"]]:
        node.units[c["unit"]] = {"ActiveState": "inactive", "UnitFileState": "enabled",
                                 "ExecMainStartTimestampMonotonic": "5"}
    node.sync()
    assert node.calls == [("start", [c["unit"] for c in web["containers"]])]


def test_pods_and_containers_no_longer_planned_are_removed(node: Node) -> None:
    node.sync()
    node.running()
    (node.root / "pods" / "default_gone").mkdir()
    stale = node.root / "units" / "podnet-default_job-old.service"
    stale.write_text("[Service]\n")
    node.calls.clear()
    _, out = node.sync()
    assert out["removed"] == ["default_gone"]
    assert (node.root / "runtime.log").read_text() == "remove default_gone\n"
    assert not stale.exists()
    assert node.calls[:3] == [("stop", [stale.name]), ("disable", [stale.name]),
                              ("daemon-reload", [])]


def test_check_mode_reports_and_changes_nothing(node: Node) -> None:
    (node.root / "pods" / "default_gone").mkdir(parents=True)
    report, out = node.sync(check=True)
    assert report.changed and out["removed"] == ["default_gone"]
    assert not (node.root / "runtime.log").exists()
    assert sorted(p.name for p in (node.root / "pods").iterdir()) == ["default_gone"]
    assert list((node.root / "units").iterdir()) == []
    assert not (node.root / "admitted").exists()


def test_a_components_config_is_kept_and_an_old_dev_null_placeholder_replaced(node: Node) -> None:
    """The kubelet writes its placeholder only where there is no config (a controller such as
    podnet-ingress writes the real one), but replaces an older podnet's nginx placeholder whose
    pid file was /dev/null (nginx deletes its pid file as it exits)."""
    plan = Plan.from_data(make_plan(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: proxy, namespace: default}\nspec:\n"
        "  nodeName: node1\n  containers:\n"
        "    - {name: web, image: nginx, ports: [{containerPort: 8080}]}\n").data())
    node.pods = kubelet.node_pods(plan, "node1")
    pod = node.pods[0]
    pod["dir"] = str(node.root / "pods" / pod["id"])
    container = pod["containers"][0]
    container["config_path"] = str(Path(pod["dir"]) / "web.conf")
    path = Path(container["config_path"])
    assert f"pid /etc/podnet/pods/{pod['id']}/web.pid;" in container["config_default"]
    path.parent.mkdir(parents=True)
    path.write_text("# written by the component\npid /dev/null;\n")
    node.sync()
    assert path.read_text() == "# written by the component\npid /dev/null;\n"
    path.write_text("# podnet default: a placeholder until a component role configures it\n"
                    "pid /dev/null;\nerror_log stderr;\n")
    node.sync()
    assert path.read_text() == container["config_default"]
