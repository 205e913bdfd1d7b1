"""A node that does not answer the converge (NotReady): where its pods go, what waits for it,
what the plan refuses, and the one-run-at-a-time lock (docs/node-failure.md)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from modelkit import deployment, errors_of, hosts, make_plan, service
from test_stable_ips import STABLE_DEPLOYMENT, pod

from podnet import convergelock, schedule
from podnet.schedule import Candidate

NODES = {"node1": {}, "node2": {}, "node3": {"zone": "b"}}


def cand(key: str, owner: str = "", node_name: str | None = None,
         selector: tuple[tuple[str, str], ...] = ()) -> Candidate:
    return Candidate(key, owner or f"Pod {key}", node_name, selector)


def test_a_deployments_pod_leaves_a_not_ready_node_and_a_bare_pod_waits() -> None:
    pods = [cand("d/web-0", "Deployment d/web"), cand("d/web-1", "Deployment d/web"),
            cand("d/bare")]
    previous = {"d/web-0": "node3", "d/web-1": "node1", "d/bare": "node3"}
    placed, failed, pending = schedule.place(pods, NODES, previous, {"node3"})
    assert failed == []
    assert placed == {"d/web-0": "node2", "d/web-1": "node1"}  # spread: node1 has web-1
    assert [(p.key, p.node) for p in pending] == [("d/bare", "node3")]
    assert "bare Pod" in pending[0].reason


def test_pinned_and_selected_pods_wait_for_their_node_new_pods_go_elsewhere() -> None:
    pods = [cand("d/pinned", node_name="node3"),
            cand("d/zoned", "Deployment d/z", selector=(("zone", "b"),)),
            cand("d/new")]
    placed, failed, pending = schedule.place(pods, NODES, {}, {"node3"})
    assert failed == [] and set(placed) == {"d/new"} and placed["d/new"] != "node3"
    reasons = {p.key: p.reason for p in pending}
    assert "nodeName" in reasons["d/pinned"] and "NotReady" in reasons["d/pinned"]
    assert "every node its nodeSelector allows (node3)" in reasons["d/zoned"]


def test_without_not_ready_nodes_nothing_moves() -> None:
    pods = [cand("d/web-0", "Deployment d/web"), cand("d/bare")]
    previous = {"d/web-0": "node3", "d/bare": "node3"}
    placed, _, pending = schedule.place(pods, NODES, previous)
    assert placed == previous and pending == []


TEXT = deployment("web", 3) + service("web") + pod("solo", node="node3")


def test_the_plan_evicts_keeps_the_record_and_drops_the_endpoints() -> None:
    first = make_plan(TEXT)
    on3 = [p.key for p in first.pods_on("node3") if p.owner == "Deployment default/web"]
    assert len(on3) == 1
    down = make_plan(TEXT, record=first.record, not_ready=("node3",))
    assert down.not_ready == ["node3"] and [n.name for n in down.ready_nodes] == ["node1",
                                                                                  "node2"]
    assert down.pods_on("node3") == []
    # web keeps 3 replicas, all on live nodes: 3 endpoints again
    web = down.service("default/web")
    assert len(web.ports[0].endpoints) == 3
    assert {e.node for e in web.ports[0].endpoints} <= {"node1", "node2"}
    # the bare Pod pinned to node3 waits, keeps its node and its address in the record
    assert [(p.pod, p.node) for p in down.pending] == [("default/solo", "node3")]
    assert down.record.pods["default/solo"] == "node3"
    assert down.record.pod_ips["default/solo"] == first.record.pod_ips["default/solo"]
    said = [str(w) for w in down.warnings]
    assert any(f"pod {on3[0]} is evicted from node3 (NotReady) to node" in w for w in said)
    assert any("pod default/solo is pending" in w and "when node3 answers" in w for w in said)
    # the node back: the evicted pod stays where it went, the pending one runs again
    back = make_plan(TEXT, record=down.record)
    assert back.pod(on3[0]).node == down.pod(on3[0]).node != "node3"
    assert back.pod("default/solo").node == "node3" and back.pending == []
    assert back.pod("default/solo").stable_ip == first.pod("default/solo").stable_ip


def test_a_pod_that_keeps_its_address_moves_with_it_and_no_address_is_given_twice() -> None:
    first = make_plan(STABLE_DEPLOYMENT + pod("solo", node="node3"))
    moving = [p for p in first.pods_on("node3") if p.owner.startswith("Deployment")]
    down = make_plan(STABLE_DEPLOYMENT + pod("solo", node="node3") + pod("late"),
                     record=first.record, not_ready=("node3",))
    for p in moving:
        assert down.pod(p.key).node != "node3" and down.pod(p.key).stable_ip == p.stable_ip
    given = [p.stable_ip for p in down.pods if p.stable_ip]
    # the pending pod's address is held for it: the new pod does not get it
    assert first.pod("default/solo").stable_ip not in given
    assert len(given) == len(set(given))


def test_the_plan_refuses_another_host_down_and_every_node_down() -> None:
    assert any("host lb" in e and "did not answer, and it is not a node" in e
               and "bring lb back" in e for e in errors_of(TEXT, not_ready=("lb",)))
    said = errors_of(TEXT, not_ready=("node1", "node2", "node3"))
    assert any("podnet_nodes_group" in e and "no node answered" in e for e in said)


def test_the_plan_data_carries_not_ready_and_pending() -> None:
    down = make_plan(TEXT, not_ready=("node3",), host_list=hosts(3))
    again = type(down).from_data(json.loads(json.dumps(down.data())))
    assert again.not_ready == ["node3"] and again.pending == down.pending


# -- one converge at a time ----------------------------------------------------------------------

def start_holder(path: Path, pid: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "podnet.convergelock", str(path), str(pid)],
                            stdout=subprocess.PIPE, text=True)


def test_the_lock_is_held_while_the_run_lives_and_refused_meanwhile(tmp_path: Path) -> None:
    run = subprocess.Popen(["sleep", "30"])
    path = tmp_path / "state" / convergelock.LOCK_FILE
    try:
        first = start_holder(path, run.pid)
        assert first.stdout is not None and first.stdout.readline().strip() == "held"
        described = json.loads(path.read_text())
        assert described["pid"] == run.pid and described["command"] == "sleep 30"
        second = start_holder(path, os.getpid())
        out, _ = second.communicate(timeout=10)
        assert second.returncode == 1 and out.startswith("busy ")
        message = convergelock.holder_message(out[len("busy "):], str(path))
        assert f"sleep 30 (PID {run.pid}, started at" in message
        assert f"holds {path}" in message and "wait for it to end" in message
    finally:
        run.kill()
        run.wait()
    first.wait(timeout=10)  # the run ended: the holder ends and the lock is free
    third = start_holder(path, run.pid)  # that PID is gone: taken and given back at once
    assert third.stdout is not None and third.stdout.readline().strip() == "held"
    assert third.wait(timeout=10) == 0


def test_the_lock_message_without_a_description_and_bad_usage() -> None:
    assert convergelock.holder_message("", "/x/converge.lock").startswith(
        "another converge of this cluster is running: another run holds /x/converge.lock")
    now = json.dumps({"pid": 7, "command": "ansible-playbook site.yml",
                      "started": time.time() - 12})
    assert "ansible-playbook site.yml (PID 7, started at" in convergelock.holder_message(
        now, "/x")
    assert convergelock.main(["only-one"]) == 2


def check_hosts(state: Path) -> subprocess.CompletedProcess[str]:
    """playbooks/check-hosts.yml (the lock and the address check) on a localhost inventory."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
         "-c", "local", "-e", json.dumps({"podnet_state_dir": str(state),
                                          "ansible_python_interpreter": sys.executable}),
         str(root / "playbooks" / "check-hosts.yml")],
        capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "ANSIBLE_CONFIG": str(root / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"})


def test_the_playbooks_first_task_takes_the_lock_or_names_who_has_it(tmp_path: Path) -> None:
    lock = tmp_path / convergelock.LOCK_FILE
    tmp_path.mkdir(exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps({"pid": 4242, "command": "ansible-playbook site.yml",
                               "started": time.time()}))
        held.flush()
        refused = check_hosts(tmp_path)
    assert refused.returncode != 0
    said = " ".join(refused.stdout.split())
    assert "another converge of this cluster is running: ansible-playbook site.yml (PID 4242" \
        in said, refused.stdout[-2000:]
    assert f"holds {lock}" in said and "Refuse placeholder addresses" not in said
    taken = check_hosts(tmp_path)
    assert taken.returncode == 0, taken.stdout[-2000:] + taken.stderr[-2000:]
    # the run has ended: so has its holder, and the lock is free again
    with lock.open() as again:
        wait_free = time.monotonic() + 10
        while True:
            try:
                fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < wait_free, "the lock outlived its run"
                time.sleep(0.1)


def test_a_pod_waiting_for_its_zone_keeps_the_node_it_ran_on() -> None:
    nodes = {"node1": {}, "node2": {"zone": "b"}, "node3": {"zone": "b"}}
    zoned = cand("d/zoned", "Deployment d/z", selector=(("zone", "b"),))
    _, _, pending = schedule.place([zoned], nodes, {"d/zoned": "node3"}, {"node2", "node3"})
    assert [(p.key, p.node) for p in pending] == [("d/zoned", "node3")]


def test_the_lock_holder_says_why_it_cannot_hold(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    assert convergelock.hold(tmp_path / "file" / convergelock.LOCK_FILE, 4242) == 2
    said = capsys.readouterr().err
    assert f"cannot open {tmp_path / 'file' / convergelock.LOCK_FILE}" in said
    assert "podnet_state_dir" in said
    assert convergelock.hold(tmp_path / convergelock.LOCK_FILE, 1) == 2
    assert "is gone" in capsys.readouterr().err
