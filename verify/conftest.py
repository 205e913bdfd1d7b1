"""Fixtures for the verify suites: the lab's hosts, reached exactly as Ansible reaches them."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TypeVar

import pytest
import testinfra

from podnet import cluster, kubelet, markers
from podnet.inventory import Host, Inventory
from podnet.plan import Plan

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = Path(os.environ.get("PODNET_INVENTORY", ROOT / "inventory" / "lab"))
INVENTORY_PATH = INVENTORY if INVENTORY.is_absolute() else ROOT / INVENTORY


@cache
def inventory() -> Inventory:
    return Inventory(INVENTORY_PATH)


@cache
def hosts(group: str = "all") -> list[Host]:
    return [inventory().host(name) for name in inventory().group(group)]


@cache
def setting(name: str) -> object:
    """A variable from the inventory (as the first host sees it)."""
    first = inventory().group("all")[0]
    return inventory().render(first, (name,))[name]


@cache
def connect(name: str) -> testinfra.host.Host:
    h = inventory().host(name)
    v = h.vars
    return testinfra.get_host(
        f"ssh://{v.get('ansible_user', 'root')}@{h.address}",
        ssh_identity_file=v.get("ansible_ssh_private_key_file"),
        ssh_extra_args=v.get("ansible_ssh_common_args", ""),
    )


@dataclass(repr=False)
class Evidence:
    """What a command on a host printed; its str() is what a failing assert shows."""

    host: str
    command: str
    rc: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"\n  on {self.host}: $ {self.command}\n  rc={self.rc}\n"
            f"  stdout: {self.stdout.strip()}\n  stderr: {self.stderr.strip()}"
        )

    __repr__ = __str__


def run(name: str, *argv: str) -> Evidence:
    command = shlex.join(argv)
    result = connect(name).run(command)
    return Evidence(name, command, result.rc, result.stdout, result.stderr)


LAST = ("test_drift.py", "test_pods_lifecycle.py", "test_services_lifecycle.py",
        "test_dns_lifecycle.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The lifecycle suites change the lab (and put it back): they run after all others."""
    items.sort(key=lambda item: LAST.index(item.path.name) + 1 if item.path.name in LAST else 0)


def pytest_itemcollected(item: pytest.Item) -> None:
    """A test's ``principle("flat network")`` marker also marks it ``flat_network`` (the slug
    of podnet.markers), so ``-m flat_network`` selects the principle's tests; a test marked
    with a principle and another one at function level (NodePort) is selected by that one.
    The suites of LAST are also marked ``changes_lab``: ``-m "flat_network and not
    changes_lab"`` leaves them out."""
    if item.path.name in LAST:
        item.add_marker(pytest.mark.changes_lab)
    principle = item.get_closest_marker("principle")
    if principle is None or not principle.args:
        return
    name = markers.slug(str(principle.args[0]))
    if name not in markers.registered(item.config.getini("markers")):
        raise pytest.UsageError(
            f"{item.nodeid}: principle {principle.args[0]!r} needs the marker {name!r}: "
            f"register it under markers in verify/pytest.ini")
    item.add_marker(getattr(pytest.mark, name))


def pytest_sessionstart(session: pytest.Session) -> None:
    """``-m`` with a name no test can carry is a typo: pytest would select nothing and pass,
    so stop with the names there are. (Here, not in pytest_configure: the built-in markers
    are registered by then.)"""
    config = session.config
    known = markers.registered(config.getini("markers"))
    expression = config.getoption("markexpr") or ""
    typos = markers.unknown(expression, known)
    if typos:
        ini = configparser.ConfigParser()
        ini.read(config.inipath or ROOT / "verify" / "pytest.ini")
        ours = sorted(markers.registered(ini["pytest"]["markers"].splitlines()) - {"principle"})
        raise pytest.UsageError(f"-m {expression!r}: no marker {', '.join(typos)}; the verify "
                                f"markers are {', '.join(ours)} (verify/pytest.ini)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise over the lab's hosts and the plan's nodes and pods.

    ``lab_host``: every lab host; ``host_pair``: ordered pairs of them; ``node``: every node;
    ``pod``: every planned pod; ``server``: pods with the built-in test server;
    ``server_pair``: ordered pairs of those (a pod with itself included); a test marked
    ``quick_sample`` has the pairs of quick_pairs() marked ``quick`` (make verify-quick).
    """
    fixtures = metafunc.fixturenames
    if "lab_host" in fixtures or "host_pair" in fixtures:
        names = [h.name for h in hosts("lab")]
        if "lab_host" in fixtures:
            metafunc.parametrize("lab_host", names)
        if "host_pair" in fixtures:
            pairs = [(a, b) for a in names for b in names if a != b]
            metafunc.parametrize("host_pair", pairs, ids=[f"{a}->{b}" for a, b in pairs])
    if "node" in fixtures:
        metafunc.parametrize("node", [n.name for n in plan().nodes])
    if "pod" in fixtures:
        metafunc.parametrize("pod", [p.key for p in plan().pods])
    if "server" in fixtures:
        metafunc.parametrize("server", servers())
    if "server_pair" in fixtures:
        pairs = [(a, b) for a in servers() for b in servers()]
        sample = quick_pairs(pairs) if metafunc.definition.get_closest_marker("quick_sample") \
            else set()
        metafunc.parametrize("server_pair", [
            pytest.param(pair, id=f"{pair[0]}->{pair[1]}",
                         marks=[pytest.mark.quick] if pair in sample else [])
            for pair in pairs])


def quick_pairs(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """make verify-quick's sample of a pod matrix: from every pod, the first other pod on every
    node, so each pod proves both its same-node and its cross-node paths."""
    sample = set()
    for client in dict.fromkeys(a for a, _ in pairs):
        for node in plan().nodes:
            target = next((b for a, b in pairs if a == client and b != client
                           and plan().pod(b).node == node.name), None)
            if target:
                sample.add((client, target))
    return sample


# -- the cluster plan and the pods as they run ---------------------------------------------------
@cache
def plan() -> Plan:
    """The cluster model's plan for the inventory (what must hold)."""
    return cluster.load(INVENTORY_PATH)


def observed() -> dict[str, dict[str, str]]:
    """``{ns/name: pod state}`` as each node reports it (the ansible_local.podnet fact)."""
    pods: dict[str, dict[str, str]] = {}
    for node in plan().nodes:
        facts = run(node.name, plan().paths.cni_runtime, "facts")
        assert facts.rc == 0, facts
        for pod in json.loads(facts.stdout)["pods"]:
            key = f"{pod['namespace']}/{pod['name']}"
            assert key not in pods, f"{key} runs on {pods[key]['reported_by']} and {node.name}"
            pods[key] = {**pod, "reported_by": node.name}
    return pods


@cache
def running() -> dict[str, dict[str, str]]:
    """observed(), once per session (for suites that do not change the pods)."""
    return observed()


def pod_id(key: str) -> str:
    namespace, name = key.split("/", 1)
    return f"{namespace}_{name}"


def container_units(key: str) -> list[str]:
    """The systemd units of a pod's containers, in order, as the kubelet role names them."""
    pod = plan().pod(key)
    entry = next(p for p in kubelet.node_pods(plan(), pod.node)
                 if f"{p['namespace']}/{p['name']}" == key)
    return [c["unit"] for c in entry["containers"]]


def in_pod(key: str, *argv: str) -> Evidence:
    """Run a command in a pod's network namespace, on its node."""
    pod = plan().pod(key)
    return run(pod.node, "ip", "netns", "exec", pod_id(key), *argv)


def http_port(key: str) -> int | None:
    """The built-in test server's HTTP port of a pod, if it runs one."""
    for container in plan().pod(key).containers:
        if container.workload["kind"] == "netexec" and container.workload["http_port"]:
            return int(container.workload["http_port"])
    return None


# What the demo's manifests must give the suites to prove anything (a manifest edit that leaves
# the matrices nearly empty fails here, not as a green run over a few pairs); any other
# inventory must give at least one of each.
DEMO = INVENTORY_PATH.resolve() == (ROOT / "inventory" / "lab").resolve()
FLOORS = {"servers": 10, "service ports": 8} if DEMO else {"servers": 1, "service ports": 1}


T = TypeVar("T")


def at_least(what: str, found: list[T]) -> list[T]:
    """``found``, once it holds at least the floor of ``what``; a collection error otherwise."""
    if len(found) < FLOORS[what]:
        raise pytest.UsageError(f"{INVENTORY_PATH}: {len(found)} {what} to test, fewer than "
                                f"the {FLOORS[what]} the suites need: {found}")
    return found


def servers() -> list[str]:
    """Pods running the built-in test server: the clients and targets of the matrices."""
    return at_least("servers", [p.key for p in plan().pods if http_port(p.key)])


# -- changing the lab from a test (the lifecycle suites) ----------------------------------------
def manifests_dir() -> Path:
    """The manifests the lab was converged with."""
    return Path(os.environ.get("PODNET_MANIFESTS_DIR") or INVENTORY_PATH / "manifests")


def converge(manifests: Path, tags: str | None = None, check: bool = False
             ) -> subprocess.CompletedProcess[str]:
    """Run playbooks/site.yml on the lab with another folder of manifests; ``tags="workloads"``
    runs only what follows the manifests (pods, Services, DNS), as a user does after a manifest
    change; ``check`` makes it a dry run (--check --diff)."""
    # plain output whoever runs us (molecule forces colour), so tests can read the recap
    env = {**os.environ, "PODNET_MANIFESTS_DIR": str(manifests),
           "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_NOCOLOR": "1"}
    argv = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(INVENTORY_PATH),
            str(ROOT / "playbooks" / "site.yml"), *(["--tags", tags] if tags else []),
            *(["--check", "--diff"] if check else [])]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                          timeout=900)
