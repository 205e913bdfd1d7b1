#!/usr/bin/python
"""Ansible module: the lab as a whole: its network namespace and underlay, or its teardown."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: podnet_lab
short_description: Create the podnet lab's underlay, or tear the whole lab down
description:
  - Creates C(/run/netns/<name>) with a bridge holding the controller's underlay address.
  - C(state=absent) removes everything of the lab, also what a dirty earlier run left
    (killed launchers, stale mounts, nodes no longer in the inventory).
  - With I(segments), also a bridge per extra segment holding the controller's address there,
    and a router between the underlay and the segments - a namespace of its own,
    C(/run/netns/<name>_rt), joined to each bridge by a veth, with ip_forward 1 - while the
    lab's namespace forwards nothing (ip_forward 0). Without I(segments), removes them.
  - Never touches the machine's own network namespace.
  - Runs on the controller (localhost) as root, with the podnet package importable.
options:
  name:
    description: Lab name; names the network namespace.
    type: str
    required: true
  bridge:
    description: Name of the underlay bridge inside the namespace.
    type: str
    default: underlay
  state_dir:
    description: The lab's state directory (removed with C(state=absent)).
    type: path
    required: true
  controller_cidr:
    description: The controller's address on the underlay, with prefix length.
    type: str
  segments:
    description:
      - Extra underlay segments, each with its I(name) (its bridge's), I(cidr), the
        I(controller_address) on it and the I(router_address) on it (lab_segments).
      - The mirror is served on each segment's controller address as well.
    type: list
    elements: dict
    default: []
  router_address:
    description: The router's address on the underlay (lab_router_address); needed with I(segments).
    type: str
  underlay_cidr:
    description: The underlay network (lab_underlay_cidr); needed with I(router_bgp_as).
    type: str
  router_bgp_as:
    description:
      - The AS number of BIRD 2 run inside the router's namespace (lab_router_bgp_as), an iBGP
        peer of I(router_bgp_neighbors) that learns their routes (the nodes' pod CIDRs) and
        installs them there. 0 runs no BIRD on the router (and stops one that runs).
      - Its files are C(<state_dir>/router-bird.{conf,ctl,pid,log}); it is started again when
        its configuration changed or it died, and stopped with C(state=absent).
    type: int
    default: 0
  router_bgp_neighbors:
    description: The addresses the router's BIRD peers with, each on the underlay or a segment.
    type: list
    elements: str
    default: []
  mirrors:
    description:
      - Package mirrors to serve to the lab's hosts, by release (release name to the mirror's
        folder, for example bookworm to C(/var/cache/podnet/mirrors/bookworm-abc)).
      - Each is served at C(http://<controller address>:<mirror_port>/<release>/) by an HTTP
        server inside the lab's network namespace, stopped with the lab.
    type: dict
    default: {}
  mirror_port:
    description: The port the mirror listens on.
    type: int
    default: 80
  state:
    description: Whether the namespace should exist.
    type: str
    choices: [present, absent]
    default: present
author: podnet
"""

EXAMPLES = r"""
- name: Create the lab's underlay
  podnet_lab:
    name: podnet
    state_dir: /var/lib/podnet/labs/podnet
    controller_cidr: 192.168.56.1/24
"""

RETURN = r"""
netns:
  description: Path of the network namespace.
  returned: always
  type: str
  sample: /run/netns/podnet
router_netns:
  description: Path of the router's network namespace (present only with segments).
  returned: always
  type: str
  sample: /run/netns/podnet_rt
"""

from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule


def _router_bird_config(lab: Any, p: dict[str, Any]) -> str | None:
    """The router's BIRD configuration the parameters ask for; None for no BIRD."""
    if not p["router_bgp_as"]:
        return None
    if not p["underlay_cidr"] or not p["router_address"]:
        raise lab.LabError("router_bgp_as needs underlay_cidr and router_address (the router)")
    config: str = lab.router_bird_config(
        p["name"], p["router_bgp_as"], p["underlay_cidr"], p["router_address"],
        lab.segments_of(p["segments"]), p["router_bgp_neighbors"])
    return config


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "bridge": {"type": "str", "default": "underlay"},
            "state_dir": {"type": "path", "required": True},
            "controller_cidr": {"type": "str"},
            "segments": {"type": "list", "elements": "dict", "default": [],
                         "options": {"name": {"type": "str", "required": True},
                                     "cidr": {"type": "str", "required": True},
                                     "controller_address": {"type": "str", "required": True},
                                     "router_address": {"type": "str", "required": True}}},
            "router_address": {"type": "str"},
            "underlay_cidr": {"type": "str"},
            "router_bgp_as": {"type": "int", "default": 0},
            "router_bgp_neighbors": {"type": "list", "elements": "str", "default": []},
            "mirrors": {"type": "dict", "default": {}},
            "mirror_port": {"type": "int", "default": 80},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
        required_if=[("state", "present", ["controller_cidr"])],
        supports_check_mode=True,
    )
    try:
        from podnet import lab
    except ImportError as exc:
        module.fail_json(
            msg=f"the podnet package is not importable here ({exc}); run "
            "'make setup' and use the venv's python for localhost"
        )
    name = module.params["name"]
    netns = str(lab.NETNS_DIR / name)
    try:
        if module.params["state"] == "absent":
            state_dir = Path(module.params["state_dir"])
            if module.check_mode:
                changed = (lab.netns_exists(name) or state_dir.exists()
                           or lab.netns_exists(lab.router_netns(name)))
            else:
                changed = lab.teardown(name, state_dir)
        elif module.check_mode:
            bird = _router_bird_config(lab, module.params)
            state_dir = Path(module.params["state_dir"])
            conf = state_dir / f"{lab.ROUTER_BIRD}.conf"
            if bird is None:  # a router BIRD would be stopped
                bird_changes = bool(lab.router_bird_processes(state_dir)) or conf.exists()
            else:  # started, or started again with a new configuration
                bird_changes = lab.router_bird_pid(state_dir) is None or not (
                    conf.is_file() and conf.read_text() == bird)
            changed = not lab.netns_exists(name) or (
                bool(module.params["segments"]) != lab.netns_exists(lab.router_netns(name))
            ) or bird_changes
        else:
            p = module.params
            state_dir = Path(p["state_dir"])
            segments = lab.segments_of(p["segments"])
            bird = _router_bird_config(lab, p)
            changed = lab.ensure_netns(name, p["bridge"], p["controller_cidr"])
            prefix = int(p["controller_cidr"].split("/")[1])
            # a router BIRD left in a router namespace that is gone holds it (and its veths)
            changed |= lab.stop_stray_router_bird(name, state_dir)
            changed |= lab.ensure_segments(name, p["bridge"], prefix, p["router_address"],
                                           segments)
            changed |= lab.ensure_router_bird(name, state_dir, bird)
            if p["mirrors"]:
                changed |= lab.ensure_mirror(
                    name, Path(p["state_dir"]), p["controller_cidr"].split("/")[0],
                    p["mirror_port"], p["mirrors"])
                for seg in segments:
                    changed |= lab.ensure_mirror(
                        name, Path(p["state_dir"]), seg.controller_address, p["mirror_port"],
                        p["mirrors"], server=f"mirror-{seg.name}")
    except lab.LabError as exc:
        module.fail_json(msg=str(exc), netns=netns)
    module.exit_json(changed=changed, netns=netns,
                     router_netns=str(lab.NETNS_DIR / lab.router_netns(name)))


if __name__ == "__main__":
    main()
