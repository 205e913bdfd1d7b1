"""A way into the cluster like kubectl's: a shell on a host (``python -m podnet shell HOST``,
``make shell HOST=node1``) and a command in a pod's network namespace on the node the plan
puts it on (``python -m podnet exec NS/POD -- CMD...``); and the one definition of how podnet
reaches a host, which verify/conftest.py's testinfra backend uses too.

Hosts are reached exactly as Ansible reaches them: :func:`connection` asks Ansible's own
configuration for the options of its ssh connection and sudo become plugins, with the host's
rendered inventory variables, ansible.cfg (``[ssh_connection] ssh_args``, ``[defaults]
timeout``, ``[privilege_escalation]``) and the ``ANSIBLE_*`` environment in Ansible's order of
precedence; :func:`ssh_argv` builds the ssh command line from them as Ansible's ssh plugin does,
ControlPath included, so commands share Ansible's persistent connections (and on the lab enter
the lab's own network namespace through the ProxyCommand of
inventory/lab/group_vars/lab/connection.yml; PODNET_LAB picks the lab).

Privilege: a command that needs root (``exec``'s ``ip netns exec``, every verify command) runs
through ``sudo -n -u <user>`` when the login user is not root or ``ansible_become`` is true
(``ansible_become_user``, default root), as Ansible's become does; never a password prompt.
``shell`` logs in as the login user, as ``ssh`` would.

A pod is the network namespace ``<ns>_<name>`` on its node (podnet.kubelet.pod_id); ``exec``
runs ``ip netns exec`` there, as verify/conftest.py's in_pod does. Unlike ``kubectl exec`` the
command sees the node's filesystem and resolver, not the container's (a pod here is a network
namespace plus units, with no image of its own), so Service names do not resolve in it: use the
ClusterIP, or ``dig @<kube-dns IP>``.
"""

from __future__ import annotations

import getpass
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from podnet.addresses import is_documentation
from podnet.inventory import Host, Inventory

DEFAULT_INVENTORY = "inventory/lab"
SSH_CONNECTIONS = ("ssh", "smart", "paramiko", "paramiko_ssh")
BECOME_METHOD = "sudo"  # the one privilege escalation podnet's own commands use


class AccessError(Exception):
    """What stops ``shell``/``exec``/verify before any host is reached, in one line."""


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Connection:
    """How Ansible's ssh connection reaches one host, resolved once by :func:`connection`."""

    name: str  # the inventory's name for the host
    address: str  # ansible_host (else the name)
    user: str | None  # ansible_user; None: ssh's own default, the local user
    port: int | None  # ansible_port
    private_key_file: str | None  # ansible_ssh_private_key_file
    ssh_args: str  # ansible.cfg [ssh_connection] ssh_args (ANSIBLE_SSH_ARGS, ansible_ssh_args)
    common_args: str  # ansible_ssh_common_args
    extra_args: str  # ansible_ssh_extra_args
    timeout: int  # ssh's ConnectTimeout (ansible.cfg [defaults] timeout, ANSIBLE_TIMEOUT)
    host_key_checking: bool  # False: StrictHostKeyChecking=no, as Ansible adds it
    control_path: str | None  # the ControlPath Ansible adds to ControlPersist; None: none
    become_user: str | None  # privileged commands run as this user through sudo -n; None:
    #                          the login user runs them (root, and no other user asked for)

    @property
    def login(self) -> str:
        return self.user or getpass.getuser()


def parse_pod(text: str) -> PodRef:
    """``NS/POD`` (a namespace and a pod name, as ``kubectl -n NS exec POD`` names it)."""
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name or "/" in name or text != text.strip():
        raise AccessError(f"{text!r} is not NS/POD: give the pod's namespace and name, "
                          f"e.g. demo/db-0 (python -m podnet plan lists them)")
    return PodRef(namespace, name)


_PLUGINS: list[bool] = []


def _ansible_plugins() -> None:
    """Ansible's ssh and sudo plugins loaded once, so its configuration knows their options
    (ansible.cfg, environment and variable names, defaults)."""
    if _PLUGINS:
        return
    from ansible.plugins.loader import become_loader, connection_loader, init_plugin_loader

    from podnet.inventory import _init_plugins_once

    _init_plugins_once(init_plugin_loader)
    connection_loader.get("ssh", class_only=True)
    become_loader.get(BECOME_METHOD, class_only=True)
    _PLUGINS.append(True)


def connection_vars() -> tuple[str, ...]:
    """Every inventory variable Ansible's ssh connection and sudo become read (their plugins'
    own lists), and the ones its play context maps (ansible_connection, ansible_become,
    ansible_become_method): what :func:`host` renders."""
    from ansible import constants as C

    _ansible_plugins()
    names = {"ansible_connection", "ansible_become", "ansible_become_method"}
    for kind, plugin in (("connection", "ssh"), ("become", BECOME_METHOD)):
        for option in C.config.get_configuration_definitions(kind, plugin).values():
            names |= {v["name"] for v in option.get("vars", []) if v["name"].isidentifier()}
    return tuple(sorted(names - {"inventory_hostname"}))


def connection(host: Host) -> Connection:
    """``host``'s connection as Ansible resolves it: its rendered variables (``host.vars``,
    as :func:`host` gives them) over ansible.cfg and the environment, Ansible's defaults last.
    Makes the ControlPath's folder, as Ansible's ssh plugin does. Raises AccessError, naming the
    variable and the fix, for what podnet cannot do: a connection other than ssh, a password
    login, a key given as text, a become method other than sudo."""
    from ansible import constants as C
    from ansible.module_utils.parsing.convert_bool import boolean
    from ansible.plugins.connection.ssh import Connection as AnsibleSsh
    from ansible.utils.path import unfrackpath

    v = host.vars
    if is_documentation(host.address):
        raise AccessError(f"host {host.name}: {host.address} is a documentation address (RFC "
                          f"5737, the example inventory's placeholder), never a real host's: "
                          f"put in the host's address (ansible_host)")
    kind = str(v.get("ansible_connection") or "ssh")
    if kind not in SSH_CONNECTIONS:
        raise AccessError(f"host {host.name} is reached with ansible_connection={kind}; "
                          f"podnet shell/exec and verify go over ssh only")
    _ansible_plugins()
    ssh = C.config.get_plugin_options("connection", "ssh", variables=v)
    sudo = C.config.get_plugin_options("become", BECOME_METHOD, variables=v)
    if ssh.get("password"):
        raise AccessError(f"host {host.name}: ansible_password is set, but podnet's verify, "
                          f"shell and exec log in with a key only (they never answer a "
                          f"prompt): give the host's key in ansible_ssh_private_key_file")
    if ssh.get("private_key"):
        raise AccessError(f"host {host.name}: ansible_private_key gives the key as text; "
                          f"podnet's verify, shell and exec take it as a file: set "
                          f"ansible_ssh_private_key_file instead")
    args = " ".join(str(ssh.get(k) or "") for k in ("ssh_args", "ssh_common_args",
                                                     "ssh_extra_args")).lower()
    control_path = None
    if "controlpersist" in args and "controlpath" not in args:
        # as Ansible's ssh plugin: a ControlPath in control_path_dir, by default named by a
        # hash of address, port and user, so verify shares the masters a converge opened
        directory = unfrackpath(str(ssh["control_path_dir"]))
        Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
        template = ssh.get("control_path") or AnsibleSsh._create_control_path(
            host.address, ssh.get("port"), ssh.get("remote_user"))
        control_path = str(template) % {"directory": directory}
    become = boolean(v["ansible_become"]) if "ansible_become" in v else bool(C.DEFAULT_BECOME)
    user = str(ssh["remote_user"]) if ssh.get("remote_user") else None
    login = user or getpass.getuser()
    # podnet's commands need root: a login user other than root gains it, and a become user
    # asked for is honoured; the same user as the login needs no sudo (Ansible's rule too)
    target = str(sudo.get("become_user") or "root") if become else "root"
    become_user = None if target == login else target
    if become_user is not None:
        method = str(v.get("ansible_become_method") or C.DEFAULT_BECOME_METHOD)
        if method != BECOME_METHOD:
            raise AccessError(
                f"host {host.name}: ansible_become_method={method}, but podnet runs its "
                f"commands as {become_user} through 'sudo -n' only: set "
                f"ansible_become_method: sudo (or remove it) and give {login} passwordless "
                f"sudo on the host")
    port = ssh.get("port")
    return Connection(
        name=host.name, address=host.address, user=user,
        port=int(port) if port else None,
        private_key_file=str(ssh["private_key_file"]) if ssh.get("private_key_file") else None,
        ssh_args=str(ssh.get("ssh_args") or ""),
        common_args=str(ssh.get("ssh_common_args") or ""),
        extra_args=str(ssh.get("ssh_extra_args") or ""),
        timeout=int(ssh.get("timeout") or 10),
        host_key_checking=bool(ssh.get("host_key_checking", True)),
        control_path=control_path, become_user=become_user)


def privileged(conn: Connection, command: Sequence[str]) -> list[str]:
    """``command`` as the connection's become user (``sudo -n``: a missing sudo rule fails at
    once instead of waiting for a password), or as it is when the login user runs it."""
    if conn.become_user is None:
        return list(command)
    return ["sudo", "-n", "-u", conn.become_user, "--", *command]


def privileged_shell(conn: Connection, command: str) -> str:
    """A shell command line (pipes, ``&&``, redirections) run as the become user, for the
    login shell that ssh hands it to."""
    if conn.become_user is None:
        return command
    return shlex.join(privileged(conn, ["/bin/sh", "-c", command]))


def ssh_argv(target: Host | Connection, command: Sequence[str] = (), tty: bool = False,
             as_root: bool = False) -> list[str]:
    """The ssh command line Ansible's ssh connection would use for the host.

    In Ansible's order: ansible.cfg's ssh_args (ControlMaster/ControlPersist),
    StrictHostKeyChecking=no if host key checking is off, the key, the port, ConnectTimeout,
    ansible_ssh_common_args and ansible_ssh_extra_args (split as a shell would), the
    ControlPath Ansible would add, then user@address (no user: ssh's own default, as with
    Ansible). ssh takes the first value it gets for an option, so ansible.cfg's come first
    there as here. ``command`` is quoted into the one string ssh hands to the remote shell,
    through sudo when ``as_root`` (:func:`privileged`); ``tty`` asks for a terminal (``-t``),
    which an interactive command needs and ssh only gives a bare login by itself.
    """
    conn = target if isinstance(target, Connection) else connection(target)
    argv = ["ssh"]
    if tty:
        argv.append("-t")
    argv += shlex.split(conn.ssh_args)
    if not conn.host_key_checking:
        argv += ["-o", "StrictHostKeyChecking=no"]
    if conn.private_key_file:
        argv += ["-i", str(Path(conn.private_key_file).expanduser())]
    if conn.port:
        argv += ["-p", str(conn.port)]
    argv += ["-o", f"ConnectTimeout={conn.timeout}"]
    argv += shlex.split(conn.common_args) + shlex.split(conn.extra_args)
    if conn.control_path:
        argv += ["-o", f"ControlPath={conn.control_path}"]
    argv.append(f"{conn.user}@{conn.address}" if conn.user else conn.address)
    if command:
        argv.append(shlex.join(privileged(conn, command) if as_root else command))
    return argv


def load_inventory(source: str | Path) -> Inventory:
    if not Path(source).exists():
        raise AccessError(f"inventory {source} does not exist (run from the podnet checkout, "
                          f"or pass -i PATH)")
    return Inventory(source)


def host(inventory: Inventory, name: str | None) -> Host:
    """The inventory's host ``name`` with every variable its connection reads, rendered; an
    unknown (or no) name names the hosts there are."""
    names = inventory.group("all")
    if name not in names:
        what = f"no host {name} in the inventory" if name else "name a host"
        raise AccessError(f"{what}; the hosts are: {', '.join(names)}")
    return inventory.host(str(name), connection_vars())


def pod_node(pods: dict[str, str], pod: PodRef) -> str:
    """The node ``pods`` (``{ns/name: node}``, from the plan) puts the pod on."""
    if pod.key not in pods:
        raise AccessError(f"no pod {pod.key} in the plan; the pods are: "
                          f"{', '.join(sorted(pods))}")
    return pods[pod.key]


def pod_command(pod: PodRef, command: Sequence[str], host_network: bool = False) -> list[str]:
    """``command`` run in the pod's network namespace on its node (as root: ssh_argv's
    ``as_root``); a hostNetwork pod's is its node's own."""
    from podnet.kubelet import pod_id

    if not command:
        raise AccessError(f"no command to run in {pod.key}: python -m podnet exec {pod.key} "
                          f"-- CMD...")
    if host_network:
        return list(command)
    return ["ip", "netns", "exec", pod_id(pod.namespace, pod.name), *command]


def interactive() -> bool:
    """A terminal on both ends: then a command gets one too (``sh`` in a pod works)."""
    return os.isatty(0) and os.isatty(1)


def replace_process(argv: list[str]) -> int:
    """Become ssh: its exit status (the remote command's, or 255) is this command's, and
    signals and the terminal go straight to it."""
    os.execvp(argv[0], argv)  # noqa: S606 - argv is ssh and its options, no shell between
