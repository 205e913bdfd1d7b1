#!/usr/bin/python
"""Ansible module: the kubelet's sync loop - a node's whole pod set converged in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: podnet_kubelet
short_description: Converge the pods planned on a node (sandboxes through CNI, containers as units)
description:
  - Takes the node's whole desired pod set (from the podnet_kubelet_pods filter) and makes the node
    run exactly that, like the kubelet's syncPod loop - in one call however many pods there are.
  - Pods no longer planned here are removed (units stopped, CNI DEL, address released, files gone);
    container units no longer in their pod are stopped and deleted.
  - Each pod's folder, description (pod.json), resolv.conf, default server configs (written only
    when absent) and container units are written where they differ; systemd is reloaded when a
    unit changed.
  - A sandbox restarts when its description changed or its network is gone (namespace deleted,
    or eth0 without the pod's address - drift), else starts when it is not running; its
    containers restart when their unit or the pod's resolv.conf changed, else start when stopped.
    Every sandbox and container unit is enabled, so the pods come back after a reboot.
  - Check mode reports what would change and changes nothing; diff mode shows the files.
options:
  pods:
    description: The node's pods as the podnet_kubelet_pods filter renders them.
    type: list
    elements: dict
    required: true
  pods_dir:
    description: Where each pod has its folder (the podnet-cni runtime reads the same path).
    type: path
    required: true
  runtime:
    description: The CNI runtime (podnet-cni) that brings sandboxes up and removes pods.
    type: path
    required: true
  unit_dir:
    description: Where the container units are written.
    type: path
    default: /etc/systemd/system
  admitted_dir:
    description:
      - Where the converge marks each pod it places on the node (an empty file per pod id, in
        /run so a boot forgets them). podnet-cni starts a pod that keeps its address on any
        node without asking the other nodes only when it is marked (its fence). Markers are
        bookkeeping, never reported as a change; check mode writes none.
    type: path
author: podnet
"""

EXAMPLES = r"""
- name: run | Converge the node's pods
  podnet_kubelet:
    pods: "{{ __kubelet_pods }}"
    pods_dir: /etc/podnet/pods
    runtime: /usr/local/sbin/podnet-cni
"""

RETURN = r"""
changes:
  description: What was changed (or would be, in check mode), one line each.
  returned: always
  type: list
  elements: str
removed:
  description: Pods removed from the node (namespace_name).
  returned: always
  type: list
  elements: str
repaired:
  description: Pods whose sandbox was restarted because their network was gone.
  returned: always
  type: list
  elements: str
"""

import json
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.podnet_sync import (
    Report,
    daemon_reload,
    finish,
    is_active,
    is_enabled,
    must,
    remove_path,
    run,
    sync_directory,
    sync_file,
    systemctl,
    unit_states,
)


def network_gone(pod: dict[str, Any]) -> str | None:
    """Why a running pod's network is not what its sandbox made (None when it is). The pod's
    entry names its netns and podnet-cni's state file (podnet/kubelet.py, from podnet/paths.py)."""
    netns = pod["spec"]["netns"]
    if pod["spec"].get("host_network"):
        # on the node's network: its sandbox only records the node's address
        return None if Path(pod["state_file"]).exists() else "its sandbox state is gone"
    if not Path(pod["netns_path"]).exists():
        return f"network namespace {netns} is gone"
    try:
        ip = json.loads(Path(pod["state_file"]).read_text()).get("ip")
    except (OSError, ValueError):
        return "its sandbox state is gone"
    ifname = pod["spec"].get("ifname", "eth0")
    shown = run(["ip", "-n", netns, "-4", "-o", "addr", "show", "dev", ifname])
    if not ip or f" {ip}/" not in shown.stdout:
        return f"{ifname} no longer has {ip}"
    return None


def stale_placeholder(path: Path, marker: str | None) -> bool:
    """The file is podnet's own placeholder config with a line it no longer writes (nginx's
    ``pid /dev/null;``: nginx deletes its pid file as it exits, and that was /dev/null)."""
    if not marker:
        return False
    try:
        text = path.read_text()
    except OSError:
        return False
    return text.startswith("# podnet default:") and marker in text.splitlines(keepends=True)


def has_run(state: dict[str, str]) -> bool:
    """The unit's main process has started since boot (it ran, and may have ended)."""
    return state.get("ExecMainStartTimestampMonotonic", "0") not in ("", "0")


def converge(params: dict[str, Any], report: Report, diff: bool) -> dict[str, Any]:
    pods: list[dict[str, Any]] = params["pods"]
    pods_dir, unit_dir = Path(params["pods_dir"]), Path(params["unit_dir"])
    wanted = {p["id"]: p for p in pods}
    wanted_units = {c["unit"] for p in pods for c in p["containers"]}

    # pods no longer planned here: the runtime stops their units, DELs them, removes files
    removed = []
    if pods_dir.is_dir():
        for folder in sorted(pods_dir.iterdir()):
            if folder.is_dir() and folder.name not in wanted:
                removed.append(folder.name)
                report.note(f"removed pod {folder.name}")
                if not report.check_mode:
                    must([params["runtime"], "remove", folder.name], f"removing pod {folder.name}")

    # files: what each pod needs on disk
    spec_changed, resolv_changed, unit_changed = set(), set(), set()
    sync_directory(report, pods_dir, 0o755)
    for pod in pods:
        folder = Path(pod["dir"])
        sync_directory(report, folder, 0o755)
        if sync_file(report, folder / "pod.json", json.dumps(pod["spec"], indent=4) + "\n",
                     0o644, diff=diff):
            spec_changed.add(pod["id"])
        if pod["resolv_conf"] is None:
            # the node's own resolv.conf (dnsPolicy Default): the units bind none (a changed
            # unit restarts the containers)
            remove_path(report, folder / "resolv.conf")
        elif sync_file(report, folder / "resolv.conf", pod["resolv_conf"], 0o644, diff=diff):
            resolv_changed.add(pod["id"])
        for c in pod["containers"]:
            if c.get("config_path"):
                # the default only where there is no config: the component's role or
                # controller (podnet-ingress) writes the real one and must keep it - unless the
                # file is an older podnet's placeholder whose pid file was /dev/null
                sync_file(report, Path(c["config_path"]), c["config_default"], 0o644,
                          create_only=not stale_placeholder(Path(c["config_path"]),
                                                            c.get("config_replace_marker")))
            if sync_file(report, unit_dir / c["unit"], c["unit_text"], 0o644, diff=diff):
                unit_changed.add(c["unit"])

    # container units no longer in any planned pod (a container dropped from its pod)
    stale = sorted(p.name for p in unit_dir.glob("podnet-*_*.service")
                   if p.name not in wanted_units)
    if stale:
        systemctl(report, "stop", stale, "no longer in their pod")
        systemctl(report, "disable", stale)
        for name in stale:
            report.note(f"removed {unit_dir / name}")
            if not report.check_mode:
                (unit_dir / name).unlink(missing_ok=True)
    if unit_changed or stale:
        daemon_reload(report)

    # the converge places these pods here: podnet-cni's fence need not ask the other nodes
    if params.get("admitted_dir") and not report.check_mode:
        admitted = Path(params["admitted_dir"])
        admitted.mkdir(parents=True, exist_ok=True)
        for pod in pods:
            (admitted / pod["id"]).touch()

    # sandboxes: restarted when their description changed or their network is gone
    sandboxes = [p["sandbox_unit"] for p in pods]
    states = unit_states(sandboxes)
    restart, start, repaired = [], [], []
    for pod in pods:
        state = states[pod["sandbox_unit"]]
        if not is_active(state):
            start.append(pod["sandbox_unit"])
        elif pod["id"] in spec_changed:
            restart.append(pod["sandbox_unit"])
        else:
            why = network_gone(pod)
            if why:
                repaired.append(pod["id"])
                restart.append(pod["sandbox_unit"])
                report.note(f"pod {pod['id']}: {why}")
    systemctl(report, "restart", restart, "description changed or network gone")
    systemctl(report, "start", start)
    systemctl(report, "enable", [s for s in sandboxes if not is_enabled(states[s])])

    # containers: a restarted sandbox restarts its own (PartOf=); the others restart when their
    # unit or the pod's resolv.conf changed
    restarted_pods = {p["id"] for p in pods if p["sandbox_unit"] in restart}
    containers = [(p, c) for p in pods for c in p["containers"]]
    units = [c["unit"] for _, c in containers]
    cstates = unit_states(units)
    systemctl(report, "restart", [
        c["unit"] for p, c in containers
        if p["id"] not in restarted_pods and is_active(cstates[c["unit"]])
        and (c["unit"] in unit_changed or p["id"] in resolv_changed)],
        "unit or resolv.conf changed")
    if not report.check_mode and (restart or start):
        cstates = unit_states(units)
    # a stopped container is started again, as the kubelet restarts it - unless its pod's
    # restartPolicy (Never, OnFailure) says a container that has run and ended stays ended
    systemctl(report, "start", [
        c["unit"] for _, c in containers
        if not is_active(cstates[c["unit"]])
        and (c["restart"] == "always" or not has_run(cstates[c["unit"]]))])
    systemctl(report, "enable", [u for u in units if not is_enabled(cstates[u])])
    return {"removed": removed, "repaired": repaired}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "pods": {"type": "list", "elements": "dict", "required": True},
            "pods_dir": {"type": "path", "required": True},
            "runtime": {"type": "path", "required": True},
            "unit_dir": {"type": "path", "default": "/etc/systemd/system"},
            "admitted_dir": {"type": "path"},
        },
        supports_check_mode=True,
    )
    finish(module, lambda report: converge(module.params, report, module._diff))


if __name__ == "__main__":
    main()
