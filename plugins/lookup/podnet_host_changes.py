"""Lookup ``podnet_host_changes``: what podnet changes on this host, a thin wrapper over
podnet.hostchanges."""

from __future__ import annotations

DOCUMENTATION = r"""
name: podnet_host_changes
short_description: The catalogue of podnet's changes on a host, for the podnet_reset module
description:
  - Reads the host's values of the role variables podnet's host changes depend on
    (C(node_base_sysctls), C(kubelet_masked_services), C(podnet_service_cidr), ...; a variable
    the inventory does not set takes its role's default) and returns the catalogue
    podnet/hostchanges.py builds from them.
  - Never fails on bad input; it returns the problems so a play can stop before any host changes.
options: {}
"""

EXAMPLES = r"""
- name: Read what podnet changes on this host
  ansible.builtin.set_fact:
    __node_reset_changes: "{{ lookup('podnet_host_changes') }}"
"""

RETURN = r"""
_raw:
  description: >-
    One mapping: C(errors) (messages naming the variable and the fix) and C(catalogue) (empty
    when there are errors).
  type: list
  elements: dict
"""

from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from podnet import hostchanges


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: dict[str, Any] | None = None,
            **kwargs: Any) -> list[dict[str, Any]]:
        if terms:
            raise AnsibleLookupError("podnet_host_changes takes no terms: "
                                     "lookup('podnet_host_changes')")
        variables = variables or {}
        names = [*(n for n, _ in hostchanges.ROLE_INPUTS), *hostchanges.SETTINGS_INPUTS,
                 hostchanges.POOL_INPUT]
        given = {n: self._templar.template(variables[n]) for n in names if n in variables}
        try:
            values = hostchanges.inputs(given)
            catalogue = hostchanges.node_catalogue(values)
        except (ValueError, OSError) as exc:
            return [{"errors": [str(exc)], "catalogue": {}}]
        return [{"errors": [], "catalogue": catalogue}]
