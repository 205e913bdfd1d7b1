"""``python -m podnet plan`` and the first play of site.yml, on the lab inventory and a broken
copy of it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from podnet import addresses

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "inventory" / "lab"
ENV = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
       "ANSIBLE_FORCE_COLOR": "0", "PODNET_LAB": "podnet-plan-test"}
ENV.pop("PODNET_MANIFESTS_DIR", None)


def podnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podnet", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    copy = tmp_path / "lab"
    shutil.copytree(LAB, copy)
    web = copy / "manifests" / "web.yaml"
    web.write_text(web.read_text().replace("nodePort: 30080", "nodePort: 80"))
    return copy


def test_plan_prints_the_demo_tables() -> None:
    run = podnet("plan", "-i", str(LAB))
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for title in ("Nodes (3)", "Pods (", "Services (", "DNS names (", "Ingress routes ("):
        assert title in out
    assert "node1  192.168.56.11  10.244.0.0/24" in out
    assert "(node 30080)" in out
    # the columns widen with the longest path (demo/paths' /aaa/bbb/ccc): match the words
    assert re.search(r"web\.example\.test +/healthz +Exact", out), out
    assert "db-0.db.demo.svc.cluster.local." in out


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """The lab inventory with its allocation record in tmp_path (none yet): the plan of a lab
    never converged, whoever runs it (another user cannot read root's /var/lib/podnet)."""
    copy = tmp_path / "lab"
    shutil.copytree(LAB, copy)
    # group_vars/all files load in name order, so this one has the last word
    (copy / "group_vars" / "all" / "zz-state.yml").write_text(
        f"podnet_state_dir: {tmp_path / 'state'}\n")
    return copy


def test_plan_json_is_the_same_plan(fresh: Path) -> None:
    run = podnet("plan", "-i", str(fresh), "--json")
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert [n["name"] for n in plan["nodes"]] == ["node1", "node2", "node3"]
    web = next(s for s in plan["services"] if s["name"] == "web")
    assert web["ports"][0]["node_port"] == 30080
    assert len(web["ports"][0]["endpoints"]) == 3
    assert next(s for s in plan["services"] if s["name"] == "kube-dns")["cluster_ip"] == \
        "10.96.0.10"
    assert plan["warnings"] == []
    assert plan["allocations"]["version"] == 1
    kinds = {(s["type"], s["headless"]) for s in plan["services"]}
    assert {("NodePort", False), ("LoadBalancer", False), ("ExternalName", False),
            ("ClusterIP", True)} <= kinds


def test_plan_fails_with_the_errors(broken: Path) -> None:
    run = podnet("plan", "-i", str(broken))
    assert run.returncode == 1
    assert "web.yaml:43: Service demo/web: spec.ports[0].nodePort: 80 is outside " \
           "podnet_nodeport_range 30000-32767" in run.stderr
    as_json = podnet("plan", "-i", str(broken), "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["errors"][0]["field"] == "spec.ports[0].nodePort"


def playbook(inventory: Path, book: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory),
                           str(book), *extra], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, check=False, timeout=300)


def test_converge_stops_before_any_host_on_bad_input(broken: Path) -> None:
    run = playbook(broken, ROOT / "playbooks" / "site.yml")
    assert run.returncode != 0
    assert "80 is outside podnet_nodeport_range 30000-32767" in run.stdout
    assert "PLAY [Prepare every host]" not in run.stdout
    assert "node1" not in run.stdout.split("PLAY RECAP")[1]


def test_first_play_keeps_the_allocation_record(tmp_path: Path) -> None:
    book = tmp_path / "model.yml"
    book.write_text("- name: Model\n  hosts: localhost\n  gather_facts: false\n"
                    "  roles: [{role: cluster_model}]\n"
                    "  post_tasks:\n    - name: Show\n      ansible.builtin.debug:\n"
                    "        msg: \"{{ cluster_model_plan.nodes | map(attribute='pod_cidr') }}\"\n")
    state = tmp_path / "state"
    extra = ("-e", f"podnet_state_dir={state}", "-e", f"roles_path={ROOT / 'roles'}")
    check = playbook(LAB, book, "--check", *extra)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not (state / "allocations.json").exists()
    first = playbook(LAB, book, *extra)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "10.244.2.0/24" in first.stdout
    record = json.loads((state / "allocations.json").read_text())
    assert record["cluster_ips"]["kube-system/kube-dns"] == "10.96.0.10"
    assert record["node_ports"]["demo/web:http"] == 30080
    again = playbook(LAB, book, *extra)
    assert "changed=0" in again.stdout, again.stdout


def test_a_missing_inventory_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    run = podnet("plan", "-i", f"{missing}/")
    assert run.returncode == 1, run.stderr
    assert run.stderr == (f"podnet plan: {missing}/: inventory: does not exist; fix: pass -i the "
                          "inventory directory or hosts file, e.g. -i inventory/lab, from the "
                          "podnet checkout\n"), run.stderr
    as_json = podnet("plan", "-i", str(missing), "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["errors"][0]["message"] == "does not exist"


def test_an_inventory_without_hosts_is_one_line(tmp_path: Path) -> None:
    run = podnet("plan", "-i", str(tmp_path))
    assert run.returncode == 1
    assert "Traceback" not in run.stderr, run.stderr
    # Ansible's own warnings come first; podnet's answer is the last line
    assert run.stderr.splitlines()[-1] == (
        f"podnet plan: {tmp_path}: inventory: has no hosts; fix: add the hosts (see "
        "inventory/example-vms/hosts.yml for the groups podnet uses)"), run.stderr


@pytest.mark.parametrize("command", [("plan",), ("shell", "node1"),
                                     ("exec", "demo/db-0", "--", "true")])
def test_broken_inventory_yaml_is_one_line_naming_the_file(tmp_path: Path,
                                                           command: tuple[str, ...]) -> None:
    """A YAML error in group_vars (Ansible reads the inventory) names the file and line for
    every subcommand that reads the inventory, instead of Ansible's traceback."""
    copy = tmp_path / "lab"
    shutil.copytree(LAB, copy)
    network = copy / "group_vars" / "all" / "network.yml"
    lines = len(network.read_text().splitlines())
    network.write_text(network.read_text() + "podnet_broken: [\n")
    run = podnet(command[0], "-i", str(copy), *command[1:])
    assert run.returncode == (1 if command[0] == "plan" else 2), run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert f"(at {network}:{lines + 2}:1); fix: correct that file" in run.stderr, run.stderr
    assert run.stderr.startswith(f"podnet {command[0]}: "), run.stderr


def test_an_undecodable_allocation_record_is_a_problem_not_a_traceback(fresh: Path,
                                                                       tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "allocations.json").write_bytes(b"\xff\xfe{}")
    run = podnet("plan", "-i", str(fresh))
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert f"{tmp_path}/state/allocations.json: allocation record: cannot be read: 'utf-8' " \
           "codec can't decode byte 0xff" in run.stderr, run.stderr
    assert "fix: restore the file or delete it to allocate everything anew" in run.stderr


@pytest.mark.parametrize("book", ["site.yml", "reset.yml"])
def test_the_example_inventory_stops_before_any_host_is_reached(book: str) -> None:
    """inventory/example-vms uses documentation addresses (RFC 5737) until a user puts in
    theirs: site.yml and reset.yml name every such host and reach none of them."""
    run = playbook(ROOT / "inventory" / "example-vms", ROOT / "playbooks" / book)
    assert run.returncode != 0
    assert ("node1 (192.0.2.11), node2 (192.0.2.12), node3 (192.0.2.13), client (192.0.2.100): "
            "documentation addresses (RFC 5737, the example inventory's placeholders)") in \
        " ".join(run.stdout.split()), run.stdout[-2000:]
    recap = run.stdout.split("PLAY RECAP")[1]
    assert "node1" not in recap and "client" not in recap, recap


def test_placeholder_addresses_are_the_documentation_ranges() -> None:
    assert addresses.placeholder_hosts({"a": "192.0.2.1", "b": "10.0.0.1", "c": "node-c",
                                        "d": "2001:db8::5", "e": "203.0.113.9"}) == [
        "a (192.0.2.1)", "d (2001:db8::5)", "e (203.0.113.9)"]
