"""Load the model's input from an inventory (the manifests folder and allocation record it
names) and build the plan. Used by ``python -m podnet plan`` and by verify/."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from podnet.allocate import RECORD_FILE, Record
from podnet.model import build
from podnet.plan import Plan
from podnet.problems import Problems
from podnet.yamlsource import load_dir

HOST_KEYS = ("ansible_host", "podnet_node_labels", "podnet_pod_cidr", "podnet_bgp_peers")
DEFAULT_STATE_ROOT = "/var/lib/podnet/clusters"


def manifests_dir(variables: Mapping[str, Any], inventory_dir: Path) -> Path | None:
    """``podnet_manifests_dir``, relative to the inventory's directory; None when unset."""
    value = variables.get("podnet_manifests_dir")
    if not value:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else inventory_dir / path


def state_dir(variables: Mapping[str, Any]) -> Path:
    """The cluster's folder on the controller: the allocation record, the converge lock."""
    return Path(str(variables.get("podnet_state_dir") or (
        f"{DEFAULT_STATE_ROOT}/{variables.get('podnet_cluster_name') or 'podnet'}")))


def record_path(variables: Mapping[str, Any]) -> Path:
    return state_dir(variables) / RECORD_FILE


def read_record(path: Path, problems: Problems) -> Record:
    try:
        if not path.exists():
            return Record()
        text = path.read_text(encoding="utf-8")
    except PermissionError:
        # a plan run by another user than the lab's (make plan needs no root): it can still
        # be shown, allocated afresh, and whoever converges can read and write the record
        problems.warn(str(path), "allocation record", "", "cannot be read by this user, so "
                      "this plan allocates ClusterIPs and NodePorts as if there were none and "
                      "may differ from the lab's", "run as the user who converges the lab "
                      "(root) to see the lab's own allocations")
        return Record()
    except (OSError, UnicodeDecodeError) as exc:
        problems.error(str(path), "allocation record", "", f"cannot be read: {exc}",
                       "restore the file or delete it to allocate everything anew")
        return Record()
    return Record.loads(text, str(path), problems)


def plan_from(variables: Mapping[str, Any], hosts: list[dict[str, Any]], inventory_dir: Path,
              where: str, problems: Problems | None = None,
              not_ready: Collection[str] = ()) -> Plan:
    """The plan for already-rendered inventory variables and hosts (Ansible's lookup uses this)."""
    problems = problems if problems is not None else Problems()
    folder = manifests_dir(variables, inventory_dir)
    documents = load_dir(folder, problems) if folder else []
    path = record_path(variables)
    record = read_record(path, problems)
    return build(variables, hosts, documents, record, where, str(path), problems, not_ready)


def load(source: str | Path, problems: Problems | None = None,
         manifests: Path | None = None) -> Plan:
    """The plan of an inventory directory or file, as ansible-playbook would see it;
    ``manifests`` stands for its podnet_manifests_dir, as ``-e podnet_manifests_dir=...``
    would (verify's PODNET_MANIFESTS_DIR, the lifecycle tests' edited copies)."""
    from podnet.inventory import Inventory

    inventory = Inventory(source)
    names = inventory.group("all")
    if not names:
        raise FileNotFoundError(f"inventory {source} has no hosts")
    variables = inventory.render(names[0], prefix="podnet_")
    if manifests is not None:
        variables["podnet_manifests_dir"] = str(manifests)
    hosts = []
    for name in names:
        host = inventory.host(name, HOST_KEYS)
        hosts.append({
            "name": name,
            "address": host.vars.get("ansible_host", name),
            "groups": list(host.groups),
            "labels": host.vars.get("podnet_node_labels") or {},
            "pod_cidr": host.vars.get("podnet_pod_cidr"),
            "bgp_peers": host.vars.get("podnet_bgp_peers"),
        })
    path = Path(source)
    inventory_dir = path if path.is_dir() else path.parent
    return plan_from(variables, hosts, inventory_dir, str(source), problems)
