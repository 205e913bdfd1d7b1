#!/usr/bin/python
"""Ansible module: converge a set of packages, files, units and node tools in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: podnet_sync
short_description: Converge a role's packages, files, systemd units and node tools in one call
description:
  - A role's whole desired state on a node, applied in one round trip, the way a kubelet's sync
    loop works - every item is compared with what the node has and only differences change,
    so a run with nothing to do costs one module call however many files and units the role has.
  - Order - packages; every file validated (a file that fails validation changes nothing at
    all); folders, files, removals; C(systemctl daemon-reload) when a unit file changed;
    podnet's node tools (given C(--check) in check mode); then the units - restarted when a
    file they name in I(restart_on) changed, reloaded when one in I(reload_on) did, else
    started (or stopped) and enabled as asked.
  - Drift is repaired on every run - an edited or deleted file is written again, a stopped unit
    started, a disabled one enabled, and the tools repair what they own.
options:
  packages:
    description:
      - Debian packages that must be installed (one dpkg-query; apt-get only for missing ones).
    type: list
    elements: str
    default: []
  update_cache:
    description:
      - Refresh the package lists before installing missing packages.
      - Without it they are refreshed when there are none (a fresh image), when they are
        older than I(cache_valid_time), and once when apt cannot find a package or file.
    type: bool
    default: false
  cache_valid_time:
    description: Seconds the package lists count as fresh (when packages are missing).
    type: int
    default: 3600
  directories:
    description: Folders to create.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {type: path, required: true, description: The folder.}
      mode: {type: str, default: "0755", description: Its mode (octal string).}
  files:
    description: Files and their whole content.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {type: path, required: true, description: The file.}
      content: {type: str, required: true, description: What it must hold.}
      mode: {type: str, default: "0644", description: Its mode (octal string).}
      validate:
        type: str
        description: A command with C(%s) for a temporary copy; a non-zero exit refuses the file.
      create_only:
        type: bool
        default: false
        description: Write the file only when it does not exist (a default someone else replaces).
  absent:
    description: Paths that must not exist.
    type: list
    elements: path
    default: []
  sysctls:
    description:
      - Kernel parameters set now where their live value differs.
      - Persist them with a file in I(files).
    type: dict
    default: {}
  tools:
    description: podnet node tools to run after the files (their last line is JSON with C(changed)).
    type: list
    elements: dict
    default: []
    suboptions:
      argv: {type: list, elements: str, required: true, description: The command.}
      check_arg: {type: str, default: "--check", description: Added in check mode.}
  masked:
    description:
      - systemd units that must be stopped and masked (a package's service podnet replaces).
    type: list
    elements: str
    default: []
  units:
    description: systemd units and the state they must be in.
    type: list
    elements: dict
    default: []
    suboptions:
      name: {type: str, required: true, description: The unit.}
      state:
        type: str
        choices: [started, stopped, present]
        default: started
        description:
          - C(present) manages only enabled and masked, not whether it runs (a boot-time oneshot).
      enabled: {type: bool, description: Enabled at boot (leave out to keep it as it is).}
      masked: {type: bool, default: false, description: Masked (implies stopped).}
      restart_on:
        type: list
        elements: path
        default: []
        description: Files whose change restarts the unit (its own unit file always does).
      reload_on:
        type: list
        elements: path
        default: []
        description:
          - Files whose change reloads the running unit (C(systemctl reload), its ExecReload)
            instead, when nothing restarts it; a unit that is not running is started.
author: podnet
"""

EXAMPLES = r"""
- name: run | Converge the Service rules
  podnet_sync:
    files:
      - path: /etc/podnet/iptables/50-kube-proxy.rules
        content: "{{ lookup('ansible.builtin.template', 'etc/podnet/iptables/50.rules.j2') }}"
        validate: iptables-restore --test --noflush %s
    tools:
      - argv: [/usr/local/sbin/podnet-iptables, apply, /etc/podnet/iptables]
    units:
      - name: podnet-iptables-canary.service
        enabled: true
"""

RETURN = r"""
changes:
  description: What was changed (or would be, in check mode), one line each.
  returned: always
  type: list
  elements: str
tools:
  description: Each tool's JSON answer, in order.
  returned: always
  type: list
  elements: dict
restarted:
  description: Units restarted because a file they depend on changed.
  returned: always
  type: list
  elements: str
"""

from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.podnet_sync import (
    Report,
    SyncError,
    daemon_reload,
    finish,
    install_packages,
    is_active,
    is_enabled,
    is_unit_file,
    mode_of,
    read_text,
    remove_path,
    run_tool,
    sync_directory,
    sync_file,
    sync_sysctl,
    systemctl,
    unit_states,
    validate,
    write_atomic,
)


def _mode(text: str, where: str) -> int:
    try:
        return int(str(text), 8)
    except ValueError:
        raise SyncError(f"{where}: mode {text!r} is not an octal number such as '0644'") from None


def converge(params: dict[str, Any], report: Report,
             diff: bool) -> tuple[list[dict[str, Any]], list[str]]:
    # the distribution's services podnet keeps off are masked before their packages are
    # installed, so that installing never starts them (Debian starts a server on install)
    mask_units(report, params["masked"])
    install_packages(report, params["packages"], params["update_cache"],
                     params["cache_valid_time"])

    for d in params["directories"]:
        sync_directory(report, Path(d["path"]), _mode(d["mode"], d["path"]))
    # files in order, each validated just before it is written (so a config can be checked
    # against a file written before it); when one fails, the ones written before it get their
    # old content back: all or nothing. Check mode validates nothing (as Ansible's template
    # does not), since what a validation reads may not be written yet.
    changed_paths: set[str] = set()
    undo: list[tuple[Path, str | None, int | None]] = []
    try:
        for f in params["files"]:
            path = Path(f["path"])
            before = read_text(path)
            if f.get("validate") and before != f["content"] and not report.check_mode:
                validate(f["validate"], f["content"], f["path"])
            undo.append((path, before, mode_of(path)))
            if sync_file(report, path, f["content"], _mode(f["mode"], f["path"]),
                         f["create_only"], diff):
                changed_paths.add(f["path"])
    except SyncError:
        if not report.check_mode:
            for path, before, mode in reversed(undo):
                if before is None:
                    path.unlink(missing_ok=True)
                elif str(path) in changed_paths:
                    write_atomic(path, before, mode if mode is not None else 0o644)
        raise
    for path in params["absent"]:
        if remove_path(report, Path(path)):
            changed_paths.add(path)
    if any(is_unit_file(p) for p in changed_paths):
        daemon_reload(report)

    for key, value in sorted(params["sysctls"].items()):
        sync_sysctl(report, key, str(value))

    if report.check_mode and changed_paths and params["tools"]:
        # a dry run wrote none of the files the tools read: they would run on new input, and
        # asking them now would check (or fail on) the old files
        for t in params["tools"]:
            report.note(f"would run {' '.join(t['argv'])} (its input changes)")
        tools = [{"changed": True} for _ in params["tools"]]
    else:
        tools = [run_tool(report, t["argv"], t["check_arg"]) for t in params["tools"]]

    units = params["units"]
    states = unit_states([u["name"] for u in units]) if units else {}
    restarted: list[str] = []
    for u in units:
        name, state = u["name"], states.get(u["name"], {})
        if u["masked"]:
            if state.get("UnitFileState") != "masked" or is_active(state):
                systemctl(report, "stop", [name], "masked")
                systemctl(report, "mask", [name])
            continue
        if state.get("UnitFileState") == "masked":
            systemctl(report, "unmask", [name])
        own_file = any(p.endswith("/" + name) for p in changed_paths)
        triggers = own_file or bool(changed_paths & set(u["restart_on"]))
        reloads = bool(changed_paths & set(u["reload_on"]))
        if u["state"] == "started" and triggers and is_active(state):
            systemctl(report, "restart", [name], "its configuration changed")
            restarted.append(name)
        elif u["state"] == "started" and reloads and is_active(state):
            # a daemon that can take a new configuration live keeps its sessions (BIRD)
            systemctl(report, "reload", [name], "its configuration changed")
        elif u["state"] == "started" and not is_active(state):
            systemctl(report, "start", [name])
        elif u["state"] == "stopped" and is_active(state):
            systemctl(report, "stop", [name])
        if u["enabled"] is True and not is_enabled(state):
            systemctl(report, "enable", [name])
        elif u["enabled"] is False and state.get("UnitFileState") == "enabled":
            systemctl(report, "disable", [name])
    return tools, restarted


def mask_units(report: Report, names: list[str]) -> None:
    """Stop and mask each unit that is not masked yet (one that is not installed is masked too:
    its package will find it so)."""
    states = unit_states(names) if names else {}
    for name in names:
        state = states.get(name, {})
        if state.get("UnitFileState") != "masked":
            systemctl(report, "mask", [name])
        if is_active(state):
            systemctl(report, "stop", [name], "masked")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "default": []},
            "update_cache": {"type": "bool", "default": False},
            "cache_valid_time": {"type": "int", "default": 3600},
            "directories": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True},
                "mode": {"type": "str", "default": "0755"}}},
            "files": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True},
                "content": {"type": "str", "required": True},
                "mode": {"type": "str", "default": "0644"},
                "validate": {"type": "str"},
                "create_only": {"type": "bool", "default": False}}},
            "absent": {"type": "list", "elements": "path", "default": []},
            "sysctls": {"type": "dict", "default": {}},
            "tools": {"type": "list", "elements": "dict", "default": [], "options": {
                "argv": {"type": "list", "elements": "str", "required": True},
                "check_arg": {"type": "str", "default": "--check"}}},
            "masked": {"type": "list", "elements": "str", "default": []},
            "units": {"type": "list", "elements": "dict", "default": [], "options": {
                "name": {"type": "str", "required": True},
                "state": {"type": "str", "default": "started",
                          "choices": ["started", "stopped", "present"]},
                "enabled": {"type": "bool"},
                "masked": {"type": "bool", "default": False},
                "restart_on": {"type": "list", "elements": "path", "default": []},
                "reload_on": {"type": "list", "elements": "path", "default": []}}},
        },
        supports_check_mode=True,
    )
    finish(module, lambda report: dict(zip(("tools", "restarted"),
                                           converge(module.params, report, module._diff),
                                           strict=True)))


if __name__ == "__main__":
    main()
