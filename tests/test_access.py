"""``python -m podnet shell`` and ``exec`` (podnet/access.py) without a lab: the NS/POD form,
the ssh command line built from the inventory as Ansible builds it, the pod's node from the
plan, one-line errors, and ssh's exit status handed back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from podnet import access
from podnet.__main__ import main
from podnet.inventory import Host, Inventory

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "inventory" / "lab"
LAB_NAME = "podnet-access-test"  # no such lab: the plan comes from the manifests alone
KEY = f"/var/lib/podnet/labs/{LAB_NAME}/ssh/id_ed25519"
PROXY = f"ProxyCommand=nsenter --net=/run/netns/{LAB_NAME} nc %h %p"


@pytest.fixture(autouse=True)
def lab_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODNET_LAB", LAB_NAME)
    monkeypatch.delenv("PODNET_MANIFESTS_DIR", raising=False)


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argv podnet would become (instead of becoming it)."""
    calls: list[list[str]] = []

    def fake(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    monkeypatch.setattr(access, "replace_process", fake)
    return calls


# -- NS/POD --------------------------------------------------------------------------------------
def test_pod_is_namespace_slash_name() -> None:
    pod = access.parse_pod("demo/db-0")
    assert (pod.namespace, pod.name, pod.key) == ("demo", "db-0", "demo/db-0")


@pytest.mark.parametrize("text", ["db-0", "demo/", "/db-0", "demo/db/0", " demo/db-0", ""])
def test_other_forms_are_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(access.AccessError, match="is not NS/POD: give the pod's namespace"):
        access.parse_pod(text)


def test_pod_command_runs_in_the_pods_netns() -> None:
    pod = access.parse_pod("other/client")
    assert access.pod_command(pod, ["ip", "-4", "addr"]) == [
        "ip", "netns", "exec", "other_client", "ip", "-4", "addr"]
    with pytest.raises(access.AccessError, match=r"no command to run in other/client"):
        access.pod_command(pod, [])


def test_unknown_pod_names_the_pods_there_are() -> None:
    pods = {"demo/db-0": "node1", "other/client": "node3"}
    assert access.pod_node(pods, access.parse_pod("other/client")) == "node3"
    with pytest.raises(access.AccessError) as err:
        access.pod_node(pods, access.parse_pod("demo/nope"))
    assert str(err.value) == "no pod demo/nope in the plan; the pods are: demo/db-0, other/client"


# -- the ssh command line ------------------------------------------------------------------------
def test_lab_host_is_reached_through_the_labs_namespace_as_ansible_does() -> None:
    host = access.host(Inventory(LAB), "node1")
    assert access.ssh_argv(host) == [
        "ssh", "-i", KEY,
        "-o", PROXY,
        "-o", f"UserKnownHostsFile=/var/lib/podnet/labs/{LAB_NAME}/known_hosts",
        "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
        "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
        "root@192.168.56.11",
    ]


def test_a_command_is_one_quoted_string_and_a_tty_is_asked_for() -> None:
    host = Host("vm1", ("nodes",), {"ansible_host": "10.0.0.5", "ansible_port": 2222,
                                    "ansible_ssh_extra_args": "-o LogLevel=ERROR"})
    argv = access.ssh_argv(host, ["sh", "-c", "echo 'a b'; exit 3"], tty=True)
    assert argv == ["ssh", "-t", "-p", "2222", "-o", "LogLevel=ERROR", "10.0.0.5",
                    "sh -c 'echo '\"'\"'a b'\"'\"'; exit 3'"]


def test_a_host_not_reached_over_ssh_is_refused() -> None:
    host = Host("here", (), {"ansible_connection": "local"})
    with pytest.raises(access.AccessError, match="ansible_connection=local; podnet shell"):
        access.ssh_argv(host)


def test_unknown_or_missing_host_names_the_hosts_there_are() -> None:
    inventory = Inventory(LAB)
    with pytest.raises(access.AccessError) as err:
        access.host(inventory, "node9")
    assert str(err.value) == \
        "no host node9 in the inventory; the hosts are: client, lb, node1, node2, node3"
    with pytest.raises(access.AccessError, match=r"^name a host; the hosts are: client, lb"):
        access.host(inventory, None)


def test_missing_inventory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(access.AccessError, match=r"inventory .*nowhere does not exist"):
        access.load_inventory(tmp_path / "nowhere")


# -- the command line ----------------------------------------------------------------------------
def test_exec_runs_on_the_node_the_plan_puts_the_pod_on(ran: list[list[str]]) -> None:
    assert main(["exec", "-i", str(LAB), "other/client", "--", "ip", "-4", "addr", "show",
                 "eth0"]) == 0
    [argv] = ran
    assert argv[0] == "ssh" and "-t" not in argv and PROXY in argv
    assert argv[-2:] == ["root@192.168.56.13", "ip netns exec other_client ip -4 addr show eth0"]


def test_options_after_the_separator_belong_to_the_command(ran: list[list[str]]) -> None:
    main(["exec", "-i", str(LAB), "demo/db-0", "--", "ping", "-c", "1", "-i", "0.2", "10.0.0.1"])
    assert ran[0][-2:] == ["root@192.168.56.11",
                           "ip netns exec demo_db-0 ping -c 1 -i 0.2 10.0.0.1"]


def test_an_interactive_exec_gets_a_terminal(ran: list[list[str]],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "interactive", lambda: True)
    main(["exec", "-i", str(LAB), "demo/db-0", "--", "sh"])
    assert ran[0][:2] == ["ssh", "-t"]


def test_exec_of_an_unknown_pod_is_one_line_naming_the_pods(
        ran: list[list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exec", "-i", str(LAB), "demo/nope", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ran == []
    assert err.startswith("podnet exec: no pod demo/nope in the plan; the pods are: demo/api-")
    assert "demo/db-0, demo/db-1, " in err and "other/client" in err


def test_exec_of_a_bad_form_or_no_command_is_refused(
        ran: list[list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exec", "-i", str(LAB), "db-0", "--", "true"]) == 2
    assert capsys.readouterr().err.startswith("podnet exec: 'db-0' is not NS/POD")
    assert main(["exec", "-i", str(LAB), "demo/db-0"]) == 2
    assert "no command to run in demo/db-0" in capsys.readouterr().err
    assert ran == []


def test_exec_on_an_invalid_inventory_points_at_plan(
        tmp_path: Path, ran: list[list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "lab"
    shutil.copytree(LAB, copy)
    web = copy / "manifests" / "web.yaml"
    web.write_text(web.read_text().replace("nodePort: 30080", "nodePort: 80"))
    assert main(["exec", "-i", str(copy), "demo/db-0", "--", "true"]) == 2
    assert f"1 problem(s) in {copy}; python -m podnet plan -i {copy} lists them" in \
        capsys.readouterr().err


def test_shell_logs_in_or_runs_a_command(ran: list[list[str]],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shell", "-i", str(LAB), "lb"]) == 0
    assert ran[-1][-1] == "root@192.168.56.200"
    main(["shell", "-i", str(LAB), "node2", "--", "systemctl", "is-system-running"])
    assert ran[-1][-2:] == ["root@192.168.56.12", "systemctl is-system-running"]
    assert main(["shell", "-i", str(LAB)]) == 2
    assert "podnet shell: name a host; the hosts are: client, lb, node1" in capsys.readouterr().err


def test_the_separator_is_for_shell_and_exec_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["plan", "-i", str(LAB), "--", "true"])
    assert exited.value.code == 2
    assert "'-- CMD' follows shell or exec only" in capsys.readouterr().err


def test_exec_exits_with_what_ssh_exits_with(tmp_path: Path) -> None:
    """podnet becomes ssh: here a stand-in ssh that records its arguments and exits 3."""
    fake = tmp_path / "ssh"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\nexit 3\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "PODNET_LAB": LAB_NAME}
    done = subprocess.run([sys.executable, "-m", "podnet", "exec", "-i", str(LAB), "demo/db-1",
                           "--", "sh", "-c", "exit 3"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False, timeout=120)
    assert done.returncode == 3, done.stderr
    args = (tmp_path / "ssh.args").read_text().splitlines()
    assert args[-2:] == ["root@192.168.56.13", "ip netns exec demo_db-1 sh -c 'exit 3'"]
