#!/usr/bin/python
"""Ansible module: undo podnet's changes on a host, list what is left, or record the host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: podnet_reset
short_description: Undo podnet's changes on a host, list what is left, or record the host first
description:
  - Acts on the catalogue of podnet's host changes (the podnet_host_changes lookup, from
    podnet/hostchanges.py; docs/host-changes.md explains each one). Nothing else on the host is
    touched - a foreign iptables chain, rule or route, a namespace or unit that is not podnet's,
    stays.
  - I(mode=reset) stops the units that would put podnet's rules back, removes the pods (CNI
    DEL through podnet-cni, so host-local releases their addresses), deletes the pods'
    namespaces, the bridge and its veths, the routes with podnet's protocol, podnet's iptables
    chains and the jumps into them (one iptables-restore --noflush per variant in use), the
    Services' and pods' conntrack flows, podnet's files, units and state; unmasks what podnet
    masked; puts sysctls back as the record has them; removes the record last. It leaves
    /etc/resolv.conf alone, since podnet never writes it.
    Works on a host where a converge stopped half way, and changes nothing on a host podnet
    never touched.
  - I(mode=residue) changes nothing and returns what of podnet is still there (C(left)) and
    what reset keeps on purpose (C(kept)).
  - I(mode=record) writes the record once, before podnet's first change (the sysctls' values,
    which of podnet's masked units and packages were there already); not on a host podnet has
    already changed.
options:
  mode:
    description: What to do.
    type: str
    choices: [reset, residue, record]
    default: reset
  catalogue:
    description: The host's catalogue of podnet's changes (lookup C(podnet_host_changes)).
    type: dict
    required: true
author: podnet
"""

EXAMPLES = r"""
- name: run | Undo everything podnet changed on this host
  podnet_reset:
    catalogue: "{{ __node_reset_changes.catalogue }}"
"""

RETURN = r"""
changes:
  description: What was changed (or would be, in check mode), one line each.
  returned: always
  type: list
  elements: str
kept:
  description: What reset leaves on purpose, and why (reset and residue modes).
  returned: always
  type: list
  elements: str
left:
  description: podnet's things still on the host (residue mode).
  returned: always
  type: list
  elements: str
warning:
  description: Why no record was written (record mode), else empty.
  returned: always
  type: str
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.podnet_reset import Reset, record, residue
from ansible.module_utils.podnet_sync import Report, finish


def converge(params: dict[str, Any], report: Report) -> dict[str, Any]:
    catalogue = params["catalogue"]
    if params["mode"] == "record":
        return {"kept": [], "left": [], **record(catalogue, report)}
    if params["mode"] == "residue":
        return {**residue(catalogue), "warning": ""}
    return {**Reset(catalogue, report).run(), "left": [], "warning": ""}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "mode": {"type": "str", "default": "reset", "choices": ["reset", "residue", "record"]},
            "catalogue": {"type": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    finish(module, lambda report: converge(module.params, report))


if __name__ == "__main__":
    main()
