"""``python -m podnet shell`` and ``exec`` (podnet/access.py) without a lab: the NS/POD form,
the connection resolved from the inventory, ansible.cfg and the environment as Ansible resolves
it, the ssh command line built from it as Ansible builds it (ControlPath included), sudo where
Ansible would become, the pod's node from the plan, one-line errors, and ssh's exit status
handed back."""

from __future__ import annotations

import configparser
import getpass
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from podnet import access, lab
from podnet.__main__ import main
from podnet.inventory import Host, Inventory

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "inventory" / "lab"
LAB_NAME = "podnet-access-test"  # no such lab: the plan comes from the manifests alone
KEY = f"/var/lib/podnet/labs/{LAB_NAME}/ssh/id_ed25519"
PROXY = f"ProxyCommand=nsenter --net=/run/netns/{LAB_NAME} nc %h %p"
# what ansible.cfg gives Ansible's ssh connection (the Makefile names the file: ANSIBLE_CONFIG)
SSH_ARGS = configparser.ConfigParser(interpolation=None)
SSH_ARGS.read(ROOT / "ansible.cfg")
CFG_ARGS = shlex.split(SSH_ARGS["ssh_connection"]["ssh_args"])


@pytest.fixture(autouse=True)
def lab_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PODNET_LAB", LAB_NAME)
    monkeypatch.delenv("PODNET_MANIFESTS_DIR", raising=False)
    # the ControlPath folder Ansible (and so podnet) makes under ~/.ansible/cp: a throwaway home
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def control_path(address: str, port: int | None, user: str | None, folder: str) -> str:
    """Ansible's ControlPath for a host: the first 10 hex digits of sha1("address-port-user")
    in the control_path_dir (ansible.plugins.connection.ssh)."""
    digest = hashlib.sha1(f"{address}-{port}-{user}".encode()).hexdigest()[:10]  # noqa: S324
    return f"{os.environ['HOME']}/{folder}/{digest}"


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
    """ansible.cfg's ssh_args first (ssh keeps the first value of an option), then the key,
    Ansible's ConnectTimeout, the inventory's args, and the ControlPath Ansible adds to a
    ControlPersist: the lab's own folder, the converge's master connections."""
    host = access.host(Inventory(LAB), "node1")
    conn = access.connection(host)
    assert conn.become_user == "root"  # a VM's login user: root through sudo -n
    assert access.ssh_argv(host) == [
        "ssh", *CFG_ARGS, "-i", KEY, "-p", "2222", "-o", "ConnectTimeout=10",
        "-o", PROXY,
        "-o", f"UserKnownHostsFile=/var/lib/podnet/labs/{LAB_NAME}/known_hosts",
        "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
        "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
        "-o", "ControlPath=" + control_path("192.168.56.11", 2222, "debian",
                                            f".ansible/cp/{LAB_NAME}"),
        "debian@192.168.56.11",
    ]
    assert Path(os.environ["HOME"], ".ansible", "cp", LAB_NAME).is_dir()  # made, as Ansible


def test_a_command_is_one_quoted_string_and_a_tty_is_asked_for() -> None:
    host = Host("vm1", ("nodes",), {"ansible_host": "10.0.0.5", "ansible_port": 2222,
                                    "ansible_ssh_extra_args": "-o LogLevel=ERROR"})
    argv = access.ssh_argv(host, ["sh", "-c", "echo 'a b'; exit 3"], tty=True)
    # no ansible_user: ssh's own default user, and Ansible's ControlPath names none
    assert argv == ["ssh", "-t", *CFG_ARGS, "-p", "2222", "-o", "ConnectTimeout=10",
                    "-o", "LogLevel=ERROR",
                    "-o", "ControlPath=" + control_path("10.0.0.5", 2222, None, ".ansible/cp"),
                    "10.0.0.5", "sh -c 'echo '\"'\"'a b'\"'\"'; exit 3'"]


def conn(**given: object) -> access.Connection:
    fields: dict[str, object] = {
        "name": "vm1", "address": "10.0.0.5", "user": "debian", "port": None,
        "private_key_file": None, "ssh_args": "", "common_args": "", "extra_args": "",
        "timeout": 10, "host_key_checking": True, "control_path": None, "become_user": None}
    return access.Connection(**{**fields, **given})  # type: ignore[arg-type]


def test_the_command_line_follows_the_connection() -> None:
    argv = access.ssh_argv(conn(ssh_args="-C -o ControlMaster=auto", host_key_checking=False,
                                private_key_file="~/.ssh/vm", port=2222, timeout=30,
                                common_args="-o ProxyJump=bastion", extra_args="-v",
                                control_path="/cp/abc"))
    assert argv == ["ssh", "-C", "-o", "ControlMaster=auto", "-o", "StrictHostKeyChecking=no",
                    "-i", f"{os.environ['HOME']}/.ssh/vm", "-p", "2222",
                    "-o", "ConnectTimeout=30", "-o", "ProxyJump=bastion", "-v",
                    "-o", "ControlPath=/cp/abc", "debian@10.0.0.5"]


def test_root_commands_go_through_sudo_n_as_the_become_user() -> None:
    vm = conn(become_user="root")
    assert access.ssh_argv(vm, ["ip", "netns", "exec", "demo_db-0", "ip", "addr"],
                           as_root=True)[-1] == \
        "sudo -n -u root -- ip netns exec demo_db-0 ip addr"
    # as the login user unless asked for root
    assert access.ssh_argv(vm, ["id"])[-1] == "id"
    assert access.privileged_shell(vm, "iptables-save | grep -c KUBE") == \
        "sudo -n -u root -- /bin/sh -c 'iptables-save | grep -c KUBE'"
    # a root login needs no sudo
    assert access.ssh_argv(conn(user="root"), ["ip", "netns"], as_root=True)[-1] == "ip netns"
    assert access.privileged_shell(conn(user="root"), "a | b") == "a | b"


@pytest.mark.parametrize(("given", "become_user"), [
    ({"ansible_user": "root"}, None),  # the lab's shape today
    ({"ansible_user": "debian"}, "root"),  # a login user: sudo to root without become
    ({"ansible_user": "debian", "ansible_become": True}, "root"),  # example-vms, VM-shaped labs
    ({"ansible_user": "debian", "ansible_become": "yes", "ansible_become_user": "ops"}, "ops"),
    ({"ansible_user": "root", "ansible_become": True}, None),  # root becoming root: no sudo
    ({"ansible_user": "root", "ansible_become": True, "ansible_become_user": "ops"}, "ops"),
    ({"ansible_user": "debian", "ansible_become": False, "ansible_become_user": "ops"}, "root"),
])
def test_who_runs_the_commands_is_who_ansible_would_become(given: dict[str, object],
                                                             become_user: str | None) -> None:
    host = Host("vm1", ("nodes",), {"ansible_host": "10.0.0.5", **given})
    assert access.connection(host).become_user == become_user


def test_no_user_logs_in_as_the_local_user() -> None:
    """No ansible_user: ssh's default, this process's user, decides whether sudo is needed."""
    found = access.connection(Host("vm1", (), {"ansible_host": "10.0.0.5"}))
    assert found.user is None and found.login == getpass.getuser()
    assert found.become_user == (None if getpass.getuser() == "root" else "root")


@pytest.mark.parametrize(("given", "message"), [
    ({"ansible_connection": "local"},
     "host vm1 is reached with ansible_connection=local; podnet shell/exec and verify go over "
     "ssh only"),
    ({"ansible_user": "debian", "ansible_become": True, "ansible_become_method": "su"},
     "host vm1: ansible_become_method=su, but podnet runs its commands as root through "
     "'sudo -n' only: set ansible_become_method: sudo (or remove it) and give debian "
     "passwordless sudo on the host"),
    ({"ansible_user": "debian", "ansible_become_method": "doas"},
     "host vm1: ansible_become_method=doas, but podnet runs its commands as root through "
     "'sudo -n' only"),
    ({"ansible_password": "secret"},
     "host vm1: ansible_password is set, but podnet's verify, shell and exec log in with a key "
     "only (they never answer a prompt): give the host's key in ansible_ssh_private_key_file"),
    ({"ansible_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----"},
     "host vm1: ansible_private_key gives the key as text; podnet's verify, shell and exec take "
     "it as a file: set ansible_ssh_private_key_file instead"),
])
def test_what_podnet_cannot_use_is_refused_naming_the_variable(given: dict[str, object],
                                                               message: str) -> None:
    host = Host("vm1", (), {"ansible_host": "10.0.0.5", **given})
    with pytest.raises(access.AccessError) as err:
        access.ssh_argv(host)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("address", ["192.0.2.11", "198.51.100.7", "203.0.113.200"])
def test_a_documentation_address_is_never_reached(address: str) -> None:
    """The example inventory's placeholders (RFC 5737): verify, shell and exec stop before ssh."""
    host = Host("node1", (), {"ansible_host": address, "ansible_user": "debian"})
    with pytest.raises(access.AccessError) as err:
        access.ssh_argv(host, ["true"])
    assert str(err.value) == (f"host node1: {address} is a documentation address (RFC 5737, the "
                              "example inventory's placeholder), never a real host's: put in "
                              "the host's address (ansible_host)")


def test_a_root_login_may_keep_another_become_method() -> None:
    """su as become method matters only when podnet would become: root logs in, no sudo."""
    host = Host("vm1", (), {"ansible_user": "root", "ansible_become_method": "su"})
    assert access.connection(host).become_user is None


def test_ansible_cfg_and_the_environment_count_as_for_ansible(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ANSIBLE_SSH_ARGS replaces ansible.cfg's ssh_args, ANSIBLE_TIMEOUT its timeout, and
    ANSIBLE_HOST_KEY_CHECKING=False turns checking off; the inventory's own variables still
    win over both, as in Ansible."""
    monkeypatch.setenv("ANSIBLE_SSH_ARGS", "-o ControlMaster=no")
    monkeypatch.setenv("ANSIBLE_TIMEOUT", "33")
    monkeypatch.setenv("ANSIBLE_HOST_KEY_CHECKING", "False")
    found = access.connection(Host("vm1", (), {"ansible_host": "10.0.0.5"}))
    assert (found.ssh_args, found.timeout, found.host_key_checking) == (
        "-o ControlMaster=no", 33, False)
    assert found.control_path is None  # no ControlPersist: no ControlPath either
    mine = access.connection(Host("vm1", (), {"ansible_host": "10.0.0.5",
                                             "ansible_ssh_args": "-o ControlPersist=9s",
                                             "ansible_control_path": "/run/cp-%(directory)s"}))
    assert mine.ssh_args == "-o ControlPersist=9s"
    assert mine.control_path == f"/run/cp-{os.environ['HOME']}/.ansible/cp"


def test_a_host_not_reached_over_ssh_is_refused() -> None:
    host = Host("here", (), {"ansible_connection": "local"})
    with pytest.raises(access.AccessError, match="ansible_connection=local; podnet shell"):
        access.ssh_argv(host)


def test_unknown_or_missing_host_names_the_hosts_there_are() -> None:
    inventory = Inventory(LAB)
    with pytest.raises(access.AccessError) as err:
        access.host(inventory, "node9")
    assert str(err.value) == \
        "no host node9 in the inventory; the hosts are: client, client2, lb, node1, node2, node3"
    with pytest.raises(access.AccessError,
                       match=r"^name a host; the hosts are: client, client2, lb"):
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
    assert argv[-2:] == ["debian@192.168.56.13",
                         "sudo -n -u root -- ip netns exec other_client ip -4 addr show eth0"]


def test_options_after_the_separator_belong_to_the_command(ran: list[list[str]]) -> None:
    main(["exec", "-i", str(LAB), "demo/db-0", "--", "ping", "-c", "1", "-i", "0.2", "10.0.0.1"])
    assert ran[0][-2:] == ["debian@192.168.56.11",
                           "sudo -n -u root -- ip netns exec demo_db-0 ping -c 1 -i 0.2 10.0.0.1"]


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
    assert ran[-1][-1] == "debian@192.168.56.200"
    main(["shell", "-i", str(LAB), "node2", "--", "systemctl", "is-system-running"])
    assert ran[-1][-2:] == ["debian@192.168.56.12", "systemctl is-system-running"]
    assert main(["shell", "-i", str(LAB)]) == 2
    assert ("podnet shell: name a host; the hosts are: client, client2, lb, node1"
            in capsys.readouterr().err)


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
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "PODNET_LAB": LAB_NAME,
           "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    done = subprocess.run([sys.executable, "-m", "podnet", "exec", "-i", str(LAB), "demo/db-1",
                           "--", "sh", "-c", "exit 3"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False, timeout=120)
    assert done.returncode == 3, done.stderr
    args = (tmp_path / "ssh.args").read_text().splitlines()
    assert args[-2:] == ["debian@192.168.56.13",
                         "sudo -n -u root -- ip netns exec demo_db-1 sh -c 'exit 3'"]


def vm_inventory(tmp_path: Path) -> Path:
    """A VM-shaped inventory: a login user with sudo, another ssh port, the demo's manifests."""
    inventory = tmp_path / "vms"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    shutil.copy(ROOT / "inventory" / "example-vms" / "group_vars" / "all" / "network.yml",
                inventory / "group_vars" / "all" / "network.yml")
    (inventory / "group_vars" / "all" / "workloads.yml").write_text(
        f"podnet_manifests_dir: {LAB / 'manifests'}\npodnet_state_dir: {tmp_path / 'state'}\n"
        # the example's own addresses are placeholders podnet refuses (RFC 5737)
        "podnet_underlay_cidr: 10.20.0.0/24\npodnet_lb_pool: 10.20.0.240/28\n")
    nodes = {f"node{i}": {"ansible_host": f"10.20.0.1{i}", "podnet_node_labels": {
        "topology.kubernetes.io/zone": "zone-b" if i == 3 else "zone-a"}} for i in (1, 2, 3)}
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_user": "debian", "ansible_port": 2222, "ansible_become": True},
        "children": {"nodes": {"hosts": nodes},
                     "clients": {"hosts": {"client": {"ansible_host": "10.20.0.100"}}}}}}))
    return inventory


def test_exec_on_a_vm_runs_ip_netns_exec_through_sudo(tmp_path: Path,
                                                     ran: list[list[str]]) -> None:
    inventory = vm_inventory(tmp_path)
    assert main(["exec", "-i", str(inventory), "other/client", "--", "ip", "-4", "addr"]) == 0
    [argv] = ran
    assert "-p" in argv and argv[argv.index("-p") + 1] == "2222"
    assert argv[-2:] == ["debian@10.20.0.13",
                         "sudo -n -u root -- ip netns exec other_client ip -4 addr"]
    # a shell is the login user's, as ssh gives it
    assert main(["shell", "-i", str(inventory), "node1", "--", "id"]) == 0
    assert ran[-1][-2:] == ["debian@10.20.0.11", "id"]


def test_poweroff_refuses_a_host_that_is_not_the_labs(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert main(["lab", "poweroff", "-i", str(LAB), "nodeX"]) == 2
    assert "nodeX is not a host of group lab in" in capsys.readouterr().err


def test_poweroff_of_a_node_the_lab_does_not_have_says_so(tmp_path: Path) -> None:
    with pytest.raises(lab.LabError, match="no such node"):
        lab.power_off("podnet-none", tmp_path, "node3")
    (tmp_path / "nodes" / "node3").mkdir(parents=True)
    assert lab.power_off("podnet-none", tmp_path, "node3", hard=True) is False  # not running


def test_cgroup_processes_reads_every_cgroup_below(tmp_path: Path) -> None:
    """A hard power-off kills the node by its cgroups (lab.power_off)."""
    top = tmp_path / "pn1"
    (top / "payload" / "init.scope").mkdir(parents=True)
    (top / "cgroup.procs").write_text("10\n")
    (top / "payload" / "cgroup.procs").write_text("")
    (top / "payload" / "init.scope" / "cgroup.procs").write_text("12\n11\n10\n")
    assert lab.cgroup_processes([top, tmp_path / "gone"]) == [10, 11, 12]
