"""Fixtures for the verify suites: the inventory's hosts, reached exactly as Ansible reaches them,
and the plan's objects that each test proves its principle on (targets.py)."""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import pytest
import targets
import testinfra.backend.base
import testinfra.host
import yaml

from podnet import access, bundle, cluster, kubelet, markers, principles, trace, verifyreport
from podnet.inventory import Host, Inventory
from podnet.plan import Plan
from podnet.problems import InvalidInput

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = Path(os.environ.get("PODNET_INVENTORY", ROOT / "inventory" / "lab"))
INVENTORY_PATH = INVENTORY if INVENTORY.is_absolute() else ROOT / INVENTORY
# Ansible's configuration as a converge from the checkout reads it (the Makefile and converge()
# below name it too), whatever directory pytest runs from; molecule names its own
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))


@cache
def inventory() -> Inventory:
    return Inventory(INVENTORY_PATH)


@cache
def hosts(group: str = "all") -> list[Host]:
    return [inventory().host(name) for name in inventory().group(group)]


@cache
def setting(name: str) -> object:
    """A variable from the inventory (as the first host sees it); KeyError when unset."""
    first = inventory().group("all")[0]
    return inventory().render(first, (name,))[name]


# -- reaching the hosts ------------------------------------------------------------------------
class AnsibleSshBackend(testinfra.backend.base.BaseBackend):
    """testinfra's backend over podnet.access, the one definition of how Ansible reaches a host:
    the same ssh command line as ``podnet shell`` and Ansible's ssh plugin (user, port, key,
    ansible.cfg's ssh_args and the inventory's, and Ansible's ControlPath, so every command
    after the first rides a persistent connection, shared with the converges), and the
    commands as root through ``sudo -n`` where Ansible would become (access.connection).

    Not testinfra's ssh backend: it builds its own command line (no ControlPath unless given,
    so one handshake per command; ``sudo`` without ``-n``, which waits for a password), and
    not its ansible backend: that reads ``ansible-inventory --list``, which does not render
    the inventory's Jinja (``{{ lab_state_dir }}`` in the key's path, say).
    """

    NAME = "podnet"

    def __init__(self, conn: access.Connection) -> None:
        super().__init__(conn.name, sudo=conn.become_user is not None,
                         sudo_user=conn.become_user)
        self.connection = conn
        self.argv = access.ssh_argv(conn)

    def get_sudo_command(self, command: str, sudo_user: str | None) -> str:
        if sudo_user is None:  # testinfra's host.sudo() without a user: root
            sudo_user = "root"
        return access.privileged_shell(replace(self.connection, become_user=sudo_user), command)

    def run(self, command: str, *args: str, **kwargs: Any) -> testinfra.backend.base.CommandResult:
        line = self.get_command(command, *args)
        done = subprocess.run([*self.argv, line], stdin=subprocess.DEVNULL, capture_output=True,
                              check=False)
        result = self.result(done.returncode, self.encode(line), done.stdout, done.stderr)
        if done.returncode == 255:  # ssh's own failure, not the command's (as testinfra's)
            raise RuntimeError(result)
        return result


@cache
def connection(name: str) -> access.Connection:
    """How Ansible reaches host ``name``; a UsageError names what podnet cannot use."""
    try:
        return access.connection(access.host(inventory(), name))
    except access.AccessError as exc:
        raise pytest.UsageError(f"{INVENTORY_PATH}: {exc}") from None


@cache
def connect(name: str) -> testinfra.host.Host:
    """A testinfra host for ``name`` (run() as root). A login user without passwordless sudo
    stops the test with what to fix, not with every command failing "a password is
    required"."""
    conn = connection(name)
    backend = AnsibleSshBackend(conn)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    if conn.become_user is not None:
        check = host.run("true")
        if check.rc != 0:
            pytest.fail(f"{name}: {conn.login} cannot run commands as {conn.become_user} "
                        f"with 'sudo -n' ({check.stderr.strip()}): give {conn.login} "
                        f"passwordless sudo on {name} (NOPASSWD in /etc/sudoers.d)",
                        pytrace=False)
    return host


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


# the commands the running test ran on hosts: its evidence in the JUnit XML and the report
RECORDED: list[verifyreport.Evidence] = []


def run(name: str, *argv: str) -> Evidence:
    command = shlex.join(argv)
    result = connect(name).run(command)
    RECORDED.append(verifyreport.Evidence(name, command, result.rc,
                                          (result.stdout + result.stderr).strip()))
    return Evidence(name, command, result.rc, result.stdout, result.stderr)


LAST = ("test_drift.py", "test_pods_lifecycle.py", "test_pod_move.py", "test_services_lifecycle.py",
        "test_dns_lifecycle.py", "test_proxy_health.py", "test_ingress_lifecycle.py",
        "test_backends_lifecycle.py", "test_conformance.py", "test_node_failure.py",
        "test_lb_lifecycle.py", "test_lb_l2_nodes.py")


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
    if principle.args[0] not in principles.BY_NAME:
        raise pytest.UsageError(
            f"{item.nodeid}: principle {principle.args[0]!r} is not one of podnet's: "
            f"{', '.join(p.name for p in principles.TABLE)} (podnet/principles.py)")
    item.add_marker(getattr(pytest.mark, markers.slug(str(principle.args[0]))))


def pytest_configure(config: pytest.Config) -> None:
    """Every principle of podnet/principles.py is a marker (``-m kube_proxy``)."""
    for line in principles.marker_lines():
        config.addinivalue_line("markers", line)


def pytest_sessionstart(session: pytest.Session) -> None:
    """``-m`` with a name no test can carry is a typo: pytest would select nothing and pass,
    so stop with the names there are. (Here, not in pytest_configure: the built-in markers
    are registered by then.) And a host podnet cannot reach as Ansible does (a become method
    other than sudo, a password login) stops the run here, before any test changes a host."""
    config = session.config
    known = markers.registered(config.getini("markers"))
    expression = config.getoption("markexpr") or ""
    typos = markers.unknown(expression, known)
    if typos:
        ini = configparser.ConfigParser()
        ini.read(config.inipath or ROOT / "verify" / "pytest.ini")
        ours = sorted((markers.registered(ini["pytest"]["markers"].splitlines())
                       | set(principles.BY_SLUG)) - {"principle"})
        raise pytest.UsageError(f"-m {expression!r}: no marker {', '.join(typos)}; the verify "
                                f"markers are {', '.join(ours)} (verify/pytest.ini and "
                                f"podnet/principles.py)")
    for name in inventory().group("all"):
        connection(name)  # nothing connects: the inventory and ansible.cfg are read
    try:
        plan()  # the suites parametrise over it: bad input stops here, once, with every problem
    except InvalidInput as exc:
        raise pytest.UsageError(
            f"{INVENTORY_PATH} with the manifests in {manifests_dir()}: {len(exc.problems)} "
            f"problem(s), so there is no plan to verify against:\n{exc}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise over the inventory's hosts and the plan's nodes and pods.

    ``inventory_host``: every host of the inventory (group all); ``host_pair``: ordered pairs
    of them; ``node``: every node; ``pod``: every planned pod; ``server``: pods with the
    built-in test server; ``server_pair``: ordered pairs of those (a pod with itself included);
    a test marked ``quick_sample`` has the pairs of quick_pairs() marked ``quick`` (make
    verify-quick). A plan with no such pod gives one skipped test naming what to add.
    """
    fixtures = metafunc.fixturenames
    if "inventory_host" in fixtures or "host_pair" in fixtures:
        names = [h.name for h in hosts("all")]
        if "inventory_host" in fixtures:
            metafunc.parametrize("inventory_host", names)
        if "host_pair" in fixtures:
            pairs = [(a, b) for a in names for b in names if a != b]
            metafunc.parametrize("host_pair", params(pairs, "", why=(
                f"{INVENTORY_PATH} has one host: add another to test the underlay between")),
                ids=[f"{a}->{b}" for a, b in pairs] or None)
    if "node" in fixtures:
        metafunc.parametrize("node", [n.name for n in plan().nodes])
    if "pod" in fixtures:
        metafunc.parametrize("pod", params([p.key for p in plan().pods], "pod"))
    if "server" in fixtures:
        metafunc.parametrize("server", params(servers(), targets.SERVER_POD))
    if "server_pair" in fixtures:
        pairs = [(a, b) for a in servers() for b in servers()]
        sample = quick_pairs(pairs) if metafunc.definition.get_closest_marker("quick_sample") \
            else set()
        metafunc.parametrize("server_pair", [
            pytest.param(pair, id=f"{pair[0]}->{pair[1]}",
                         marks=[pytest.mark.quick] if pair in sample else [])
            for pair in pairs] or params([], targets.SERVER_POD))


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


# -- what a test proves its principle on: from the plan, by shape (targets.py) -----------------
T = TypeVar("T")


def target(select: Callable[[Plan], T]) -> T:
    """``select(plan())`` (a selector of targets.py), or a skip naming the shape to add."""
    try:
        return select(plan())
    except targets.NotInPlan as exc:
        pytest.skip(str(exc))


def params(values: Sequence[Any], shape: str, why: str | None = None) -> list[Any]:
    """``values`` for pytest.mark.parametrize, or, when there are none, one case that skips
    naming the ``shape`` to add to the manifests (or saying ``why``): an empty
    parametrisation is a collection error here (pytest.ini's empty_parameter_set_mark)."""
    if values:
        return list(values)
    reason = why or str(targets.NotInPlan(shape))
    return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="none")]


def selected(select: Callable[[Plan], T]) -> T | None:
    """``select(plan())`` at collection, None when the plan has no such object (the test
    then skips through target() with the reason)."""
    try:
        return select(plan())
    except targets.NotInPlan:
        return None


# -- the inventory's shape: a lab, clients, an upstream DNS ------------------------------------
@cache
def lab() -> str | None:
    """Why the inventory has no local lab (no ``lab_name`` variable or no ``lab`` group), or
    None when it has one."""
    missing = [] if inventory().group("lab") else ["no group lab"]
    try:
        setting("lab_name")
    except KeyError:
        missing.append("no variable lab_name")
    if not missing:
        return None
    return (f"{INVENTORY_PATH} has no local lab ({', '.join(missing)}): this proves a property "
            f"of the lab podnet makes on this machine (make lab-up)")


def needs_lab() -> None:
    """Skip a test of the local lab's own properties when the inventory has none."""
    reason = lab()
    if reason:
        pytest.skip(reason)


def outside_client() -> Host:
    """The host that plays the world outside the cluster: the first of group ``clients``."""
    found = hosts("clients")
    if not found:
        pytest.fail(f"{INVENTORY_PATH}: group clients is empty, and this test needs a host "
                    f"outside the cluster to send from: add one (not a node) to group clients",
                    pytrace=False)
    return found[0]


UPSTREAM_MISSING = ("has no group upstream_dns: add a host to it (the upstream_dns role makes "
                    "it the DNS server the cluster DNS forwards other names to, serving "
                    "upstream_dns_zones) to run this test")


def upstream() -> Host:
    """The lab's outside-world DNS server (group ``upstream_dns``); a skip without one."""
    found = hosts("upstream_dns")
    if not found:
        pytest.skip(f"{INVENTORY_PATH} {UPSTREAM_MISSING}")
    return found[0]


@cache
def upstream_zones() -> dict[str, list[str]]:
    """The zones the upstream DNS serves (upstream_dns_zones, from the inventory or the role's
    defaults): {zone: [record, ...]}."""
    import yaml

    found = hosts("upstream_dns")
    zones = inventory().render(found[0].name, ("upstream_dns_zones",)).get(
        "upstream_dns_zones") if found else None
    if not zones:
        defaults = ROOT / "roles" / "upstream_dns" / "defaults" / "main.yml"
        zones = yaml.safe_load(defaults.read_text())["upstream_dns_zones"]
    return dict(zones)


@cache
def upstream_name() -> str:
    """A name the upstream DNS answers with an A record: the first of its zones', e.g.
    www.example.test."""
    zones = upstream_zones()
    for zone, records in zones.items():
        for record in records:
            name, _ttl, rtype, *_ = str(record).split()
            if rtype == "A":
                return zone if name == "@" else f"{name}.{zone}"
    raise pytest.UsageError(f"upstream_dns_zones has no A record to ask for: {zones}")


# -- the cluster plan and the pods as they run ---------------------------------------------------
@cache
def plan() -> Plan:
    """The cluster model's plan for the inventory (what must hold), with the manifests the
    cluster was converged with (manifests_dir())."""
    return plan_of(manifests_dir())


def plan_of(manifests: Path) -> Plan:
    """The plan for the inventory with another folder of manifests."""
    return cluster.load(INVENTORY_PATH, manifests=manifests)


def observed(nodes: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """``{ns/name: pod state}`` as each node (of ``nodes``; default: every node of the plan)
    reports it (the ansible_local.podnet fact); a pod reported by two nodes fails."""
    pods: dict[str, dict[str, str]] = {}
    for node in nodes if nodes is not None else [n.name for n in plan().nodes]:
        facts = run(node, plan().paths.cni_runtime, "facts")
        assert facts.rc == 0, facts
        for pod in json.loads(facts.stdout)["pods"]:
            key = f"{pod['namespace']}/{pod['name']}"
            assert key not in pods, f"{key} runs on {pods[key]['reported_by']} and {node}"
            pods[key] = {**pod, "reported_by": node}
    return pods


@cache
def running() -> dict[str, dict[str, str]]:
    """observed(), once per session (for suites that do not change the pods)."""
    return observed()


def pod_id(key: str) -> str:
    """A pod's id on its node (its netns, folder and unit names), as the kubelet role names it."""
    namespace, name = key.split("/", 1)
    return kubelet.pod_id(namespace, name)


def container_units(key: str, within: Plan | None = None) -> list[str]:
    """The systemd units of a pod's containers, in order, as the kubelet role names them
    (``within``: another plan than the lab's own, as a suite's extra manifests make)."""
    the_plan = within or plan()
    pod = the_plan.pod(key)
    entry = next(p for p in kubelet.node_pods(the_plan, pod.node)
                 if f"{p['namespace']}/{p['name']}" == key)
    return [c["unit"] for c in entry["containers"]]


def in_pod(key: str, *argv: str, within: Plan | None = None) -> Evidence:
    """Run a command in a pod's network namespace, on its node."""
    pod = (within or plan()).pod(key)
    if pod.host_network:
        return run(pod.node, *argv)  # the node's own network is the pod's
    return run(pod.node, "ip", "netns", "exec", pod_id(key), *argv)


def in_container(key: str, *argv: str, within: Plan | None = None) -> Evidence:
    """Run a command as the pod's first container sees the world, like kubectl exec: in its
    network and mount namespaces (the pod's /etc/resolv.conf and /etc/hosts)."""
    pod = (within or plan()).pod(key)
    unit = container_units(key, within)[0]
    main = run(pod.node, "systemctl", "show", "-P", "MainPID", unit)
    assert main.rc == 0 and main.stdout.strip() not in ("", "0"), f"{unit} is not running: {main}"
    spaces = ["-m"] if pod.host_network else ["-m", "-n"]
    return run(pod.node, "nsenter", "-t", main.stdout.strip(), *spaces, "--", *argv)


def http_port(key: str) -> int | None:
    """The built-in test server's HTTP port of a pod, if it runs one."""
    return targets.http_port(plan(), key)


def servers() -> list[str]:
    """Pods running the built-in test server: the clients and targets of the matrices."""
    return targets.servers(plan())


# -- changing the lab from a test (the lifecycle suites) ----------------------------------------
@cache
def manifests_dir() -> Path:
    """The manifests the cluster was converged with: PODNET_MANIFESTS_DIR, else the
    inventory's podnet_manifests_dir (relative to the inventory), else its manifests/."""
    given = os.environ.get("PODNET_MANIFESTS_DIR")
    if given:
        return Path(given)
    try:
        variables = {"podnet_manifests_dir": setting("podnet_manifests_dir")}
    except KeyError:
        variables = {}
    inventory_dir = INVENTORY_PATH if INVENTORY_PATH.is_dir() else INVENTORY_PATH.parent
    return cluster.manifests_dir(variables, inventory_dir) or inventory_dir / "manifests"


def edited(tmp: Path, kind: str, namespace: str, name: str,
           change: Callable[[dict[str, Any]], object]) -> Path:
    """A copy of the manifests with one object changed by ``change(obj)``."""
    copy = tmp / "manifests"
    shutil.copytree(manifests_dir(), copy)
    for path in copy.glob("*.y*ml"):
        docs = list(yaml.safe_load_all(path.read_text()))
        hit = [d for d in docs if d and d.get("kind") == kind and d["metadata"]["name"] == name
               and d["metadata"].get("namespace", "default") == namespace]
        if hit:
            change(hit[0])
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            return copy
    raise AssertionError(f"{kind} {namespace}/{name} not in {manifests_dir()}")


def converge(manifests: Path, tags: str | None = None, check: bool = False,
             extra: Mapping[str, object] | None = None) -> subprocess.CompletedProcess[str]:
    """Run playbooks/site.yml on the lab with another folder of manifests; ``tags="workloads"``
    runs only what follows the manifests (pods, Services, DNS), as a user does after a manifest
    change; ``check`` makes it a dry run (--check --diff); ``extra`` are more extra variables
    (a setting changed for one run, as ``-e podnet_lb_mode=l2``)."""
    argv, env = converge_command(manifests, tags, check, extra)
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                          timeout=900)


def converge_command(manifests: Path, tags: str | None = None, check: bool = False,
                     extra: Mapping[str, object] | None = None
                     ) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of converge() (to start one without waiting)."""
    # plain output whoever runs us (molecule forces colour), so tests can read the recap
    env = {**os.environ, "PODNET_MANIFESTS_DIR": str(manifests),
           "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_NOCOLOR": "1"}
    # the folder as an extra variable too: an inventory need not read PODNET_MANIFESTS_DIR
    # (the lab's does), and extra variables come before any inventory's
    argv = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(INVENTORY_PATH),
            "-e", json.dumps({"podnet_manifests_dir": str(manifests), **(extra or {})}),
            str(ROOT / "playbooks" / "site.yml"), *(["--tags", tags] if tags else []),
            *(["--check", "--diff"] if check else [])]
    return argv, env


# -- the lab as it was: what a lifecycle test must leave behind ---------------------------------
def iptables_rules(node: str) -> dict[str, list[str]]:
    """A node's whole ruleset (every table), as ``{"table chain": [policy, rules in order]}``.

    iptables-save without counters, comments or the order in which it lists tables and chains
    (which follows creation, not meaning); a rule's place within its chain is kept.
    """
    save = run(node, "iptables-save")
    assert save.rc == 0, save
    return parse_iptables_save(save.stdout)


def parse_iptables_save(text: str) -> dict[str, list[str]]:
    """iptables-save's text as iptables_rules() gives it."""
    chains: dict[str, list[str]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):  # ":KUBE-SERVICES - [0:0]": name, policy, counters
            name, policy = line[1:].split()[:2]
            chains[f"{table} {name}"] = [f"policy {policy}"]
        elif line.startswith("-A "):
            chains.setdefault(f"{table} {line.split()[1]}", []).append(line)
    return chains


def rule_differences(before: dict[str, list[str]], after: dict[str, list[str]]) -> list[str]:
    """Per chain, the rules only one side has (or ``order`` when only their order differs)."""
    found = []
    for chain in sorted(before.keys() | after.keys()):
        was, now = before.get(chain), after.get(chain)
        if was == now:
            continue
        if was is None or now is None:
            found.append(f"{chain}: {'gone' if now is None else 'new'}")
            continue
        gone = [r for r in was if r not in now]
        new = [r for r in now if r not in was]
        found.append(f"{chain}: gone {gone}, new {new}" if gone or new else f"{chain}: order")
    return found


SEP_DNAT = re.compile(r"--comment (\S+) .*-j DNAT --to-destination (\S+)")
PROBABILITY = re.compile(r" -m statistic --mode random --probability \S+")


def pod_neutral(rules: dict[str, list[str]], ips: dict[str, str]) -> dict[str, list[str]]:
    """``rules`` with each pod's IP written as its key, each KUBE-SEP chain named by what it
    DNATs to, and the endpoint jumps of a chain in sorted order without their probabilities.

    A pod that a test moved and put back has a new IP (host-local hands out the next free
    one): its KUBE-SEP chains get new names (a hash of the IP) and its Services' endpoint
    order, which follows the IPs, and so the probabilities, may change. What must be as before
    is which rules there are and which endpoints each Service has.
    """
    if not ips:
        return rules
    by_ip = re.compile(r"(?<![\d.])(" + "|".join(
        re.escape(ip) for ip in sorted(ips, key=len, reverse=True)) + r")(?![\d])")

    def keyed(line: str) -> str:
        return by_ip.sub(lambda m: f"<{ips[m.group(1)]}>", line)

    names = {}
    for chain, lines in rules.items():
        sep = chain.split()[1]
        if sep.startswith("KUBE-SEP-"):
            found = next((SEP_DNAT.search(keyed(line)) for line in lines
                          if SEP_DNAT.search(line)), None)
            if found:
                names[sep] = f"KUBE-SEP[{found.group(1)}>{found.group(2)}]"
    by_name = re.compile(r"\bKUBE-SEP-[A-Z0-9]+\b")

    def neutral(line: str) -> str:
        return by_name.sub(lambda m: names.get(m.group(0), m.group(0)), keyed(line))

    out: dict[str, list[str]] = {}
    for chain, lines in rules.items():
        table, name = chain.split()
        fixed = [neutral(line) for line in lines]
        jumps = sorted(PROBABILITY.sub("", line) for line in fixed if " -j KUBE-SEP[" in line)
        out[f"{table} {neutral(name)}"] = [line for line in fixed if " -j KUBE-SEP[" not in line
                                           ] + jumps
    return out


@dataclass(frozen=True)
class LabState:
    """What a lifecycle test must leave as it found it: the pods (node, IP), every node's
    ruleset, its podnet services that run or failed, and whether systemd says it is running."""

    pods: dict[str, tuple[str, str]]
    rules: dict[str, dict[str, list[str]]]
    units: dict[str, list[str]]
    unchecked: list[str]  # pods whose network fails CNI CHECK (interface, IP, routes)

    def by_node(self, replicas: Collection[str]) -> LabState:
        """This state with each pod of ``replicas`` (the pods of one Deployment) named by the
        node it runs on: replicas are interchangeable, so a lab where two of them came back on
        each other's nodes is the same lab."""
        names = {}
        for key in replicas:
            if key in self.pods:
                names[key] = f"replica-on-{self.pods[key][0]}"
                names[pod_id(key)] = names[key]

        def rename(text: str) -> str:
            for old, new in names.items():
                text = text.replace(old, new)
            return text

        return LabState(
            {names.get(k, k): v for k, v in self.pods.items()},
            {node: {rename(chain): _jumps_last([rename(line) for line in lines])
                    for chain, lines in rules.items()} for node, rules in self.rules.items()},
            {node: [rename(u) for u in units] for node, units in self.units.items()},
            self.unchecked)

    def differences(self, now: LabState, moved: Collection[str] = (),
                    replicas: Collection[str] = ()) -> list[str]:
        """How ``now`` differs; a pod of ``moved`` (re-created by the test) may have a new IP,
        and the pods of ``replicas`` may have come back on each other's nodes."""
        if replicas:
            return self.by_node(replicas).differences(
                now.by_node(replicas), {f"replica-on-{n}" for n in self.units} | set(moved))
        found = []
        for key in sorted(self.pods.keys() | now.pods.keys()):
            was, got = self.pods.get(key), now.pods.get(key)
            if key in moved and was and got:  # on its node again, with whichever IP
                was, got = (was[0], ""), (got[0], "")
            if was != got:
                found.append(f"pod {key}: was {was}, now {got}")
        if now.unchecked != self.unchecked:
            found.append(f"pods failing CNI CHECK: were {self.unchecked}, now {now.unchecked}")
        for node in sorted(self.rules):
            found += [f"{node} rules {d}" for d in rule_differences(
                self.rules[node], now.rules.get(node, {}))]
        for node in sorted(self.units):
            was_units, now_units = set(self.units[node]), set(now.units.get(node, []))
            if was_units != now_units:
                found.append(f"{node} units: gone {sorted(was_units - now_units)}, "
                             f"new {sorted(now_units - was_units)}")
        return found


def _jumps_last(lines: list[str]) -> list[str]:
    """A chain as pod_neutral orders it: its rules, then its endpoint jumps sorted."""
    jumps = sorted(line for line in lines if " -j KUBE-SEP[" in line)
    return [line for line in lines if " -j KUBE-SEP[" not in line] + jumps


def lab_state() -> LabState:
    """The lab as it is now (LabState)."""
    pods = observed()
    ips = {p["ip"]: key for key, p in pods.items()}
    rules, units, unchecked = {}, {}, []
    for node in plan().nodes:
        rules[node.name] = pod_neutral(iptables_rules(node.name), ips)
        mine = [pod_id(key) for key, p in pods.items() if p["node"] == node.name]
        check = run(node.name, "sh", "-c", f"for pod in {shlex.join(mine)}; do "
                    f"{plan().paths.cni_runtime} check $pod >/dev/null 2>&1 || echo $pod; done")
        unchecked += check.stdout.split()
        listed = run(node.name, "systemctl", "list-units", "--all", "--plain", "--no-legend",
                     "podnet*")
        assert listed.rc == 0, listed
        # name, load, active, sub: the services that run (containers, canary, prober) and any
        # unit that failed or is changing state; not the oneshots, which a boot runs and a
        # converge does not (podnet-iptables.service is "active exited" only after a reboot),
        # nor a removed pod's unit, which systemd may list as "not-found inactive" for a while
        rows = [line.lstrip("● ").split()[:4] for line in listed.stdout.splitlines()]
        system = run(node.name, "systemctl", "is-system-running").stdout.strip()
        units[node.name] = [f"system {system}", *sorted(
            f"{name} {active} {sub}" for name, _, active, sub in rows
            if sub == "running" or active not in ("active", "inactive"))]
    return LabState({k: (p["node"], p["ip"]) for k, p in pods.items()}, rules, units,
                    sorted(unchecked))


class LabNotRestored(AssertionError):
    """A lifecycle test could not put the lab back: the tests after it would run on a broken
    lab and fail for the wrong reason, so the session stops (pytest_runtest_makereport)."""


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0,
             every: float = 0.5) -> float:
    """Poll ``check()`` every ``every`` s until it returns something true: the seconds that
    took; an AssertionError naming ``what`` when it does not within ``timeout`` s."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)
    return time.monotonic() - start


@cache
def record_file() -> Path:
    """The allocation record the converges keep on this controller (podnet_state_dir)."""
    variables = {}
    for name in ("podnet_state_dir", "podnet_cluster_name"):
        with contextlib.suppress(KeyError):
            variables[name] = setting(name)
    return cluster.record_path(variables)


def saved_record() -> bytes | None:
    """The allocation record as it is now (None: there is none yet), for converged_back()."""
    path = record_file()
    return path.read_bytes() if path.exists() else None


def converged_back(record: bytes | None, tags: str = "workloads") -> None:
    """Converge the lab's own manifests with the allocation record put back as saved_record()
    found it before the test changed anything. The scheduler prefers where each pod ran last:
    after a Deployment was moved away, its replicas would come back placed from the move's
    record, possibly on each other's nodes, and the plan the suites hold would no longer say
    where each pod runs. With the record put back they return where they were."""
    path = record_file()
    if record is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(record)
    converged(manifests_dir(), tags)


def converged(manifests: Path, tags: str | None = None, **extra: object) -> None:
    """A converge that must succeed (its output's tail is the failure message)."""
    done = converge(manifests, tags=tags, extra=extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


OTHER_LB_MODE = {"cloud": "l2", "l2": "cloud"}


@pytest.fixture(scope="session")
def other_lb_mode() -> Generator[str, None, None]:
    """The lab converged in the other podnet_lb_mode (tag lb: only the LoadBalancer roles
    run) for the LoadBalancer suites that prove it, and back in its own mode at the end of the
    session, checked. Session-scoped: test_lb_lifecycle.py proves the other mode from outside,
    then test_lb_l2_nodes.py (last of all) proves l2 mode on the nodes when that is the other
    one, so one switch serves both."""
    import lbchecks
    import targets

    needs_lab()
    mine = plan().settings.lb_mode
    other = OTHER_LB_MODE[mine]
    before = lab_state()
    services = {s for s, _, _ in selected(targets.lb_ports) or []}
    converged(manifests_dir(), "lb", podnet_lb_mode=other)
    try:
        # every address served in the new mode (l2: its node has passed its checks and
        # announced it) before the proofs start
        for key in services:
            lbchecks.settle(key, other)
        yield other
    finally:
        converged(manifests_dir(), "lb")
        assert_restored(before, f"switching to {other} mode and back to {mine}")
        for key in services:
            lbchecks.settle(key, mine)


def assert_restored(before: LabState, what: str, moved: Collection[str] = (),
                    timeout: float = 120.0, replicas: Collection[str] = ()) -> None:
    """Wait until the lab is as ``before`` (readiness and rules settle after a restore); raise
    LabNotRestored with what differs if it is not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        differences = before.differences(lab_state(), moved, replicas)
        if not differences:
            return
        if time.monotonic() > deadline:
            raise LabNotRestored(f"{what} did not put the lab back within {timeout:.0f} s; "
                                 "what differs:\n  " + "\n  ".join(differences))
        time.sleep(2)


def pytest_runtest_logstart() -> None:
    """A test's evidence starts before its setup (its fixtures' commands are its own)."""
    RECORDED.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test (or its fixture's teardown) that left the lab broken stops the session after it,
    as -x would: every later test would fail on the broken lab, hiding what broke it.
    Before the teardown's report (the one pytest's JUnit XML takes properties from) the test's
    principle, hosts and evidence become its properties; each phase's outcome is counted for
    the summary by principle."""
    if call.when == "teardown":
        principle = item.get_closest_marker("principle")
        name = str(principle.args[0]) if principle and principle.args else "(no principle)"
        item.user_properties.extend(verifyreport.properties(name, RECORDED))
        RECORDED.clear()
    report = yield
    RESULTS.record(item, report)
    if call.excinfo is not None and call.excinfo.errisinstance(LabNotRestored):
        item.session.shouldfail = (f"{item.nodeid} left the lab broken ({call.when}); the "
                                   "tests after it did not run")
    return report


# -- the reports: the table by principle, the state of the hosts, a bundle on failure ----------
class Results:
    """Each test's outcome (failed if any phase failed; skipped if it was skipped) and time."""

    def __init__(self) -> None:
        self.cases: dict[str, verifyreport.Case] = {}

    def record(self, item: pytest.Item, report: pytest.TestReport) -> None:
        principle = item.get_closest_marker("principle")
        case = self.cases.setdefault(item.nodeid, verifyreport.Case(
            item.name, item.nodeid, str(principle.args[0]) if principle and principle.args
            else "(no principle)", "passed", 0.0))
        case.seconds += report.duration
        if report.failed:
            case.outcome = "failed"
        elif report.skipped and case.outcome != "failed":
            case.outcome = "skipped"


RESULTS = Results()


def junit_path(config: pytest.Config) -> Path | None:
    xml = config.getoption("xmlpath", None)
    return Path(xml).expanduser().absolute() if xml else None


def _as_root(name: str, script: str) -> str:
    """A shell script as root on a host, not recorded as a test's evidence (a host that cannot
    be reached raises RuntimeError, never pytest's own outcome exceptions)."""
    try:
        return str(connect(name).run(shlex.join(["sh", "-c", script])).stdout)
    except pytest.fail.Exception as exc:
        raise RuntimeError(str(exc)) from None


def _state(rows: Sequence[verifyreport.Row]) -> dict[str, Any]:
    """What the hosts hold at the end of the run, for the picture and the walkthroughs: pods
    with their addresses, each node's routes, and one traced flow per principle that ran."""
    the_plan = plan()
    state: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                             "inventory": str(INVENTORY), "plan": the_plan.data(),
                             "pods": {}, "nodes": {}, "walkthroughs": {}}
    pods: dict[str, tuple[str, str]] = {}
    for node in the_plan.nodes:
        try:
            routes = _as_root(node.name, "ip route show").splitlines()
            pods |= trace.pod_addresses(the_plan, _as_root, [node.name])
        except Exception as exc:  # a node down is drawn without its state
            state["nodes"][node.name] = {"routes": [], "error": str(exc)}
            continue
        state["nodes"][node.name] = {"routes": routes}
    state["pods"] = {key: {"ip": ip, "node": node} for key, (ip, node) in pods.items()}
    ran = {r.principle for r in rows if r.ran}
    for principle, source, target_ in verifyreport.flows(state["plan"]):
        if principle not in ran:
            continue
        try:
            state["walkthroughs"][principle] = trace.trace(
                the_plan, _as_root, source, target_, pods).as_dict()
        except Exception as exc:  # a walkthrough that fails is shown failing
            state["walkthroughs"][principle] = {"source": source, "target": target_,
                                                "error": f"{type(exc).__name__}: {exc}"}
    return state


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """After the last test: the hosts' state for the report, and on a failure the bundle."""
    config = session.config
    if not RESULTS.cases or config.getoption("collectonly"):
        return
    junit = junit_path(config)
    rows = verifyreport.summary(RESULTS.cases.values())
    config.stash[REPORT_KEY] = {}
    failed = any(r.failed for r in rows)
    stem = junit.stem if junit else "verify"
    folder = junit.parent if junit else ROOT / "reports"
    state: dict[str, Any] = {}
    names = [h.name for h in hosts("all")]
    for name in names:
        # each connection made here, in one thread: the traces and the bundle use several
        with contextlib.suppress(pytest.fail.Exception):  # unreachable: its trace says so
            connect(name)
    # what ends the run must not change its result: a failure here is said, not raised
    try:
        state = _state(rows) if junit else {}
    except Exception as exc:  # said in the report; the run's result stands
        state = {"error": f"the hosts' state could not be read: {exc}"}
    if failed:
        try:
            where = bundle.collect(_as_root, names, plan().paths, folder / f"{stem}-bundle")
            state["bundle"] = os.path.relpath(where, ROOT)
            config.stash[REPORT_KEY]["bundle"] = str(where)
        except Exception as exc:  # said in the summary; the run's result stands
            config.stash[REPORT_KEY]["bundle_error"] = f"{type(exc).__name__}: {exc}"
    if junit:
        folder.mkdir(parents=True, exist_ok=True)
        verifyreport.state_path(junit).write_text(json.dumps(state, indent=1))


REPORT_KEY = pytest.StashKey[dict[str, str]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The table by principle; then reports/<run>.html, rendered now that pytest's JUnit XML
    is written, and the failure bundle if there is one."""
    if not RESULTS.cases:
        return
    rows = verifyreport.summary(RESULTS.cases.values())
    terminalreporter.section("podnet: results by principle")
    for line in verifyreport.table(rows):
        terminalreporter.write_line(line)
    junit = junit_path(config)
    extra = config.stash.get(REPORT_KEY, {})
    if junit and junit.exists():
        try:
            page = verifyreport.render(junit)
            terminalreporter.write_line(f"report: {os.path.relpath(page, Path.cwd())} (JUnit: "
                                        f"{os.path.relpath(junit, Path.cwd())}; make report "
                                        f"renders it again)")
        except Exception as exc:  # the run's result stands; say it
            terminalreporter.write_line(f"report: not written: {type(exc).__name__}: {exc}",
                                        red=True)
    if "bundle" in extra:
        where = os.path.relpath(extra["bundle"], Path.cwd())
        terminalreporter.write_line(f"failure bundle: {where}/<host>/ (rules, routes, "
                                    f"addresses, links, conntrack, CNI cache, journals)",
                                    red=True)
    if "bundle_error" in extra:
        terminalreporter.write_line(f"failure bundle: not written: {extra['bundle_error']}",
                                    red=True)
