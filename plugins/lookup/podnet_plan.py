"""Lookup ``podnet_plan``: the validated cluster plan, a thin wrapper over podnet.cluster."""

from __future__ import annotations

DOCUMENTATION = r"""
name: podnet_plan
short_description: Validate the inventory and manifests and return podnet's cluster plan
description:
  - Reads the C(podnet_*) network settings, the inventory's hosts (address, groups,
    C(podnet_node_labels), C(podnet_pod_cidr), C(podnet_bgp_peers)), the manifests in
    C(podnet_manifests_dir) and the allocation record in C(podnet_state_dir), and builds the
    plan with the podnet package.
  - Never fails on bad input; it returns the problems so a play can stop with all of them.
options:
  not_ready:
    description:
      - The hosts this run could not reach. Nodes among them are NotReady; they take no pod
        (Deployment pods are evicted to other nodes, the rest wait as pending). Any other host
        among them, or every node, is a problem.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Build the plan
  ansible.builtin.set_fact:
    __cluster_model_result: "{{ lookup('podnet_plan') }}"

- name: Build the plan without the nodes that did not answer
  ansible.builtin.set_fact:
    __cluster_model_result: "{{ lookup('podnet_plan', not_ready=['node3']) }}"
"""

RETURN = r"""
_raw:
  description: >-
    One mapping: C(errors) and C(warnings) (lists of messages naming file, object, field and
    fix), C(plan) (the plan as data, empty when there are errors), C(record_path) and
    C(record) (the allocation record's path and its new JSON text), C(record_changed)
    (whether that text differs from the file's, which this lookup only reads).
  type: list
  elements: dict
"""

from pathlib import Path
from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from podnet import cluster
from podnet.problems import InvalidInput, Problems


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: dict[str, Any] | None = None,
            **kwargs: Any) -> list[dict[str, Any]]:
        if terms:
            raise AnsibleLookupError("podnet_plan takes no terms: lookup('podnet_plan')")
        not_ready = kwargs.pop("not_ready", None) or []
        if kwargs:
            raise AnsibleLookupError(f"podnet_plan: unknown option(s) {', '.join(kwargs)}; "
                                     "it takes not_ready (a list of host names)")
        if not isinstance(not_ready, list) or not all(isinstance(h, str) for h in not_ready):
            raise AnsibleLookupError("podnet_plan: not_ready is a list of host names, not "
                                     f"{not_ready!r}")
        variables = variables or {}
        settings = {k: self._templar.template(v) for k, v in variables.items()
                    if k.startswith("podnet_")}
        hostvars = variables["hostvars"]
        names = sorted(variables["groups"].get("all", []))
        if not names:
            raise AnsibleLookupError("the inventory has no hosts")
        hosts = []
        for name in names:
            hv = hostvars[name]
            hosts.append({
                "name": name,
                "address": hv.get("ansible_host", name),
                "groups": [g for g in hv.get("group_names", []) if g != "all"],
                "labels": hv.get("podnet_node_labels") or {},
                "pod_cidr": hv.get("podnet_pod_cidr"),
                "bgp_peers": hv.get("podnet_bgp_peers"),
            })
        inventory_dir = Path(str(hostvars[names[0]].get("inventory_dir") or "."))
        problems = Problems()
        result: dict[str, Any] = {"errors": [], "warnings": [], "plan": {},
                                  "record_path": str(cluster.record_path(settings)),
                                  "record": "", "record_changed": False}
        try:
            plan = cluster.plan_from(settings, hosts, inventory_dir, str(inventory_dir),
                                     problems, not_ready)
        except InvalidInput as exc:
            result["errors"] = [str(p) for p in exc.problems]
        else:
            result["plan"] = plan.data()
            result["record"] = plan.record.dumps()
            # read-only here: the role writes the record only when it changed
            record = Path(result["record_path"])
            result["record_changed"] = (not record.is_file()
                                        or record.read_text() != result["record"])
        result["warnings"] = [str(p) for p in problems.warnings]
        return [result]
