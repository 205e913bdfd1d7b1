#!/usr/bin/python
"""Ansible module: load the kernel modules podnet needs, then probe the kernel features it needs
without changing the host's network."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: podnet_kernel_probe
short_description: Load kernel modules, then probe the features Kubernetes networking needs
description:
  - First loads each module of I(load) that is not loaded yet (C(modprobe)), as a fresh VM
    needs, failing with the module's name and modprobe's words when one cannot be loaded.
    A module the kernel already has (listed in C(/sys/module) or C(/proc/modules), a
    filesystem in C(/proc/filesystems), or its C(/proc/sys) entries present - built in, or
    loaded by the machine that runs a container such as a lab host) is left alone.
  - Each feature is tried for real inside a throw-away network namespace
    (C(unshare --net)), so the host's own network is never changed, even outside check mode.
  - Probes bridge, veth, VXLAN, network namespaces, br_netfilter, conntrack and NAT.
  - Fails, naming each missing feature with what its probe saw and the fix, when a feature listed
    in I(required) is missing.
  - In check mode nothing is loaded; a module that would be loaded, or a probe whose tool is
    not installed yet (a fresh host in a dry run), is reported and not counted as missing.
options:
  required:
    description: Features that must be present (names from the list above).
    type: list
    elements: str
    default: []
  load:
    description: Kernel modules to load (now; C(/etc/modules-load.d) loads them at boot).
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
loaded:
  description: Modules this run loaded (in check mode, would load).
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


SYS_MODULE = Path("/sys/module")
# What shows a module's function is in the kernel when neither /sys/module nor /proc/modules
# lists it: built into the kernel, or seen from a container (which has no /sys/module)
WITNESSES = {
    "br_netfilter": "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "nf_conntrack": "/proc/sys/net/netfilter/nf_conntrack_max",
}


def module_present(name: str) -> bool:
    """Whether the kernel has the module's function now (loaded, or built in)."""
    name = name.replace("-", "_")
    if (SYS_MODULE / name).exists() or (name in WITNESSES and Path(WITNESSES[name]).exists()):
        return True
    for listing, column in (("/proc/modules", 0), ("/proc/filesystems", -1)):
        try:
            lines = Path(listing).read_text().splitlines()
        except OSError:
            continue
        if any(line.split() and line.split()[column] == name for line in lines):
            return True
    return False


def load_modules(module: AnsibleModule, names: list[str]) -> list[str]:
    """modprobe each module not loaded yet; returns those loaded (would be, in check mode)."""
    wanted = [name for name in names if not module_present(name)]
    if not wanted or module.check_mode:
        return wanted
    modprobe = module.get_bin_path("modprobe")
    if modprobe is None:
        module.fail_json(msg=f"kernel module(s) {', '.join(wanted)} are not loaded and modprobe "
                             "is missing: install kmod (node_base_packages has it)")
    failed = []
    for name in wanted:
        rc, out, err = module.run_command([modprobe, name])
        if rc != 0:
            failed.append(f"'modprobe {name}' failed: {(err or out).strip()}")
    if failed:
        module.fail_json(msg=f"kernel module(s) could not be loaded: {'; '.join(failed)}. "
                             "Fix: install the kernel's modules (Ubuntu: "
                             "linux-modules-extra-$(uname -r)) or use a kernel built with them; "
                             "in a container, load them on the machine that runs it "
                             "(node_base_kernel_modules lists them)",
                         loaded=[])
    return wanted


def main() -> None:
    module = AnsibleModule(
        argument_spec={"required": {"type": "list", "elements": "str", "default": []},
                       "load": {"type": "list", "elements": "str", "default": []}},
        supports_check_mode=True,
    )
    known = sorted([*PROBES, *FILES])
    unknown = [name for name in module.params["required"] if name not in known]
    if unknown:
        module.fail_json(msg=f"required: unknown kernel feature(s) {', '.join(unknown)}; "
                             f"podnet probes {', '.join(known)}")
    loaded = load_modules(module, module.params["load"])
    unshare = module.get_bin_path("unshare", required=True)
    features: dict[str, dict[str, bool | str | None]] = {}
    for name, (argv, hint) in PROBES.items():
        if module.check_mode and module.get_bin_path(argv[0]) is None:
            # a dry run on a fresh host: the tool's package is not installed yet
            features[name] = {"ok": None, "detail": f"{argv[0]} is not installed yet",
                              "hint": hint}
            continue
        rc, out, err = module.run_command([unshare, "--net", "--", *argv])
        features[name] = {
            "ok": rc == 0,
            "detail": f"'{' '.join(argv)}' in a new netns: rc={rc} {(err or out).strip()}",
            "hint": hint,
        }
    for name, (path, hint) in FILES.items():
        ok: bool | None = Path(path).exists()
        if not ok and module.check_mode and name in loaded:
            ok = None  # its module would be loaded first
        features[name] = {
            "ok": ok,
            "detail": f"{path} {'exists' if ok else 'is missing'}",
            "hint": hint,
        }
    missing = sorted(k for k, v in features.items() if v["ok"] is False)
    lacking = [name for name in module.params["required"] if features[name]["ok"] is False]
    if lacking:
        module.fail_json(
            msg=" ".join(f"kernel feature '{name}' is missing - {features[name]['detail']}. "
                         f"Fix: {features[name]['hint']}." for name in lacking),
            features=features, missing=missing, loaded=loaded)
    module.exit_json(changed=bool(loaded), features=features, missing=missing, loaded=loaded)


if __name__ == "__main__":
    main()
