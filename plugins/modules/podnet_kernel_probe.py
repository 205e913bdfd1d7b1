#!/usr/bin/python
"""Ansible module: probe the kernel features podnet needs, without changing the host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: podnet_kernel_probe
short_description: Probe the kernel networking features Kubernetes networking needs
description:
  - Each feature is tried for real inside a throw-away network namespace
    (C(unshare --net)), so the host's own network is never changed, even outside check mode.
  - Probes bridge, veth, VXLAN, network namespaces, br_netfilter, conntrack and NAT.
  - Fails, naming each missing feature with what its probe saw and the fix, when a feature listed
    in I(required) is missing.
options:
  required:
    description: Features that must be present (names from the list above).
    type: list
    elements: str
    default: []
author: podnet
"""

EXAMPLES = r"""
- name: Probe the kernel, fail without VXLAN or NAT
  podnet_kernel_probe:
    required: [vxlan, nat]
  register: __node_base_kernel
"""

RETURN = r"""
features:
  description: One entry per feature with C(ok), C(detail) (what the probe saw) and C(hint).
  returned: always
  type: dict
missing:
  description: Names of the features that failed.
  returned: always
  type: list
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

PROBES = {
    "netns": (
        ["true"],
        "network namespaces (CONFIG_NET_NS) are needed for pod sandboxes",
    ),
    "bridge": (
        ["ip", "link", "add", "podnet-probe", "type", "bridge"],
        "load the 'bridge' module (modprobe bridge) or use a kernel with CONFIG_BRIDGE",
    ),
    "veth": (
        ["ip", "link", "add", "probe-a", "type", "veth", "peer", "name", "probe-b"],
        "load the 'veth' module (modprobe veth) or use a kernel with CONFIG_VETH",
    ),
    "vxlan": (
        ["ip", "link", "add", "probe-vx", "type", "vxlan", "id", "42", "dstport", "4789"],
        "load the 'vxlan' module (modprobe vxlan) or use a kernel with CONFIG_VXLAN",
    ),
    "nat": (
        ["iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-j", "MASQUERADE"],
        "the iptables nat table with MASQUERADE is needed (modprobe nf_nat, "
        "nft_masq / iptable_nat)",
    ),
}

FILES = {
    "br_netfilter": (
        "/proc/sys/net/bridge/bridge-nf-call-iptables",
        "load br_netfilter (modprobe br_netfilter, and list it in /etc/modules-load.d) so "
        "bridged pod traffic passes iptables",
    ),
    "nf_conntrack": (
        "/proc/sys/net/netfilter/nf_conntrack_max",
        "load nf_conntrack (modprobe nf_conntrack); Service NAT depends on connection tracking",
    ),
}


def main() -> None:
    module = AnsibleModule(
        argument_spec={"required": {"type": "list", "elements": "str", "default": []}},
        supports_check_mode=True,
    )
    known = sorted([*PROBES, *FILES])
    unknown = [name for name in module.params["required"] if name not in known]
    if unknown:
        module.fail_json(msg=f"required: unknown kernel feature(s) {', '.join(unknown)}; "
                             f"podnet probes {', '.join(known)}")
    unshare = module.get_bin_path("unshare", required=True)
    features = {}
    for name, (argv, hint) in PROBES.items():
        rc, out, err = module.run_command([unshare, "--net", "--", *argv])
        features[name] = {
            "ok": rc == 0,
            "detail": f"'{' '.join(argv)}' in a new netns: rc={rc} {(err or out).strip()}",
            "hint": hint,
        }
    for name, (path, hint) in FILES.items():
        ok = Path(path).exists()
        features[name] = {
            "ok": ok,
            "detail": f"{path} {'exists' if ok else 'is missing'}",
            "hint": hint,
        }
    missing = sorted(k for k, v in features.items() if not v["ok"])
    lacking = [name for name in module.params["required"] if not features[name]["ok"]]
    if lacking:
        module.fail_json(
            msg=" ".join(f"kernel feature '{name}' is missing - {features[name]['detail']}. "
                         f"Fix: {features[name]['hint']}." for name in lacking),
            features=features, missing=missing)
    module.exit_json(changed=False, features=features, missing=missing)


if __name__ == "__main__":
    main()
