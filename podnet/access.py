"""A way into the cluster like kubectl's: a shell on a host (``python -m podnet shell HOST``,
``make shell HOST=node1``) and a command in a pod's network namespace on the node the plan
puts it on (``python -m podnet exec NS/POD -- CMD...``).

Hosts are reached exactly as Ansible reaches them: the ssh command line is built from the
inventory's rendered connection variables, so on the lab it enters the lab's own network
namespace through the ProxyCommand of inventory/lab/group_vars/lab/connection.yml (and
PODNET_LAB picks the lab). A pod is the network namespace ``<ns>_<name>`` on its node
(podnet.kubelet.pod_id); ``exec`` runs ``ip netns exec`` there, as verify/conftest.py's
in_pod does. Unlike ``kubectl exec`` the command sees the node's filesystem and resolver, not
the container's (a pod here is a network namespace plus units, with no image of its own), so
Service names do not resolve in it: use the ClusterIP, or ``dig @<kube-dns IP>``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from podnet.inventory import Host, Inventory

DEFAULT_INVENTORY = "inventory/lab"
SSH_CONNECTIONS = ("ssh", "smart", "paramiko", "paramiko_ssh")
EXTRA_VARS = ("ansible_ssh_extra_args",)


class AccessError(Exception):
    """What stops ``shell``/``exec`` before any host is reached, in one line."""


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_pod(text: str) -> PodRef:
    """``NS/POD`` (a namespace and a pod name, as ``kubectl -n NS exec POD`` names it)."""
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name or "/" in name or text != text.strip():
        raise AccessError(f"{text!r} is not NS/POD: give the pod's namespace and name, "
                          f"e.g. demo/db-0 (python -m podnet plan lists them)")
    return PodRef(namespace, name)


def ssh_argv(host: Host, command: Sequence[str] = (), tty: bool = False) -> list[str]:
    """The ssh command line Ansible's ssh connection would use for ``host``.

    The same variables Ansible reads: ansible_host (the address), ansible_user (when unset,
    ssh's own default user, as with Ansible), ansible_port, ansible_ssh_private_key_file,
    ansible_ssh_common_args and ansible_ssh_extra_args (split as a shell would). ``command``
    is quoted into the one string ssh hands to the remote shell; ``tty`` asks for a terminal
    (``-t``), which an interactive command needs and ssh only gives a bare login by itself.
    """
    v = host.vars
    connection = str(v.get("ansible_connection") or "ssh")
    if connection not in SSH_CONNECTIONS:
        raise AccessError(f"host {host.name} is reached with ansible_connection={connection}; "
                          f"podnet shell/exec go over ssh only")
    argv = ["ssh"]
    if tty:
        argv.append("-t")
    if v.get("ansible_ssh_private_key_file"):
        argv += ["-i", str(v["ansible_ssh_private_key_file"])]
    if v.get("ansible_port"):
        argv += ["-p", str(v["ansible_port"])]
    for name in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        argv += shlex.split(str(v.get(name) or ""))
    user = v.get("ansible_user")
    argv.append(f"{user}@{host.address}" if user else host.address)
    if command:
        argv.append(shlex.join(command))
    return argv


def load_inventory(source: str | Path) -> Inventory:
    if not Path(source).exists():
        raise AccessError(f"inventory {source} does not exist (run from the podnet checkout, "
                          f"or pass -i PATH)")
    return Inventory(source)


def host(inventory: Inventory, name: str | None) -> Host:
    """The inventory's host ``name``; an unknown (or no) name names the hosts there are."""
    names = inventory.group("all")
    if name not in names:
        what = f"no host {name} in the inventory" if name else "name a host"
        raise AccessError(f"{what}; the hosts are: {', '.join(names)}")
    return inventory.host(str(name), EXTRA_VARS)


def pod_node(pods: dict[str, str], pod: PodRef) -> str:
    """The node ``pods`` (``{ns/name: node}``, from the plan) puts the pod on."""
    if pod.key not in pods:
        raise AccessError(f"no pod {pod.key} in the plan; the pods are: "
                          f"{', '.join(sorted(pods))}")
    return pods[pod.key]


def pod_command(pod: PodRef, command: Sequence[str]) -> list[str]:
    """``command`` run in the pod's network namespace on its node."""
    from podnet.kubelet import pod_id

    if not command:
        raise AccessError(f"no command to run in {pod.key}: python -m podnet exec {pod.key} "
                          f"-- CMD...")
    return ["ip", "netns", "exec", pod_id(pod.namespace, pod.name), *command]


def interactive() -> bool:
    """A terminal on both ends: then a command gets one too (``sh`` in a pod works)."""
    return os.isatty(0) and os.isatty(1)


def replace_process(argv: list[str]) -> int:
    """Become ssh: its exit status (the remote command's, or 255) is this command's, and
    signals and the terminal go straight to it."""
    os.execvp(argv[0], argv)  # noqa: S606 - argv is ssh and its options, no shell between
