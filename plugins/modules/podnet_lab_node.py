#!/usr/bin/python
"""Ansible module: one lab host, a systemd-nspawn machine booted with systemd as PID 1."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: podnet_lab_node
short_description: Boot or remove a podnet lab host (a systemd-nspawn machine)
description:
  - Boots a host from the lab image on an overlay root, on the lab's underlay bridge,
    with systemd as PID 1; works when the controller's own PID 1 is not systemd (the
    launcher is detached and its PID kept).
  - The host is VM-shaped, as a cloud image after its first boot - a login user with
    passwordless sudo and the lab's SSH key, no root login, sshd on its own port, its
    resolver (a plain resolv.conf or systemd-resolved), apt pointed at the lab's mirror.
  - A host that is already running is left alone; one that a previous run left dead
    (killed launcher, stale mounts) is cleaned up and booted again on its own upper layer.
  - C(state=absent) powers the host off and removes its processes, mounts and files.
options:
  lab:
    description: Lab name (its network namespace).
    type: str
    required: true
  state_dir:
    description: The lab's state directory.
    type: path
    required: true
  name:
    description: Host name.
    type: str
    required: true
  address:
    description: Underlay address with prefix length, e.g. 192.168.56.11/24.
    type: str
  gateway:
    description: Optional default gateway on the host's own network.
    type: str
  routes:
    description:
      - Static routes the host gets (its networkd file), each a I(destination) network through
        a I(gateway) on the host's own network; a routed lab's hosts reach the other segments
        this way (podnet.lab.host_network).
    type: list
    elements: dict
    default: []
  bridge:
    description: The bridge inside the lab namespace the host joins (the underlay's or a segment's).
    type: str
    default: underlay
  image:
    description: Path of the lab image tarball.
    type: path
  authorized_key:
    description: Public key allowed to log in as I(user).
    type: str
  user:
    description: The login user (passwordless sudo); root cannot log in.
    type: str
  port:
    description: The port sshd listens on.
    type: int
    default: 22
  resolver:
    description: How the host resolves names.
    type: str
    choices: [resolv.conf, systemd-resolved]
    default: resolv.conf
  nameservers:
    description: The resolvers the lab's network hands the host.
    type: list
    elements: str
    default: []
  mirror_url:
    description: The lab's package mirror for the host's release (apt's only source).
    type: str
  state:
    description: Whether the host should run.
    type: str
    choices: [started, absent]
    default: started
author: podnet
"""

EXAMPLES = r"""
- name: Boot node1
  podnet_lab_node:
    lab: podnet
    state_dir: /var/lib/podnet/labs/podnet
    name: node1
    address: 192.168.56.11/24
    image: /var/cache/podnet/images/0123abcd.tar
    authorized_key: "{{ lookup('file', '/var/lib/podnet/labs/podnet/ssh/id_ed25519.pub') }}"
"""

RETURN = r"""
known_hosts_line:
  description: The host's ed25519 host key as a known_hosts line.
  returned: when state=started
  type: str
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "lab": {"type": "str", "required": True},
            "state_dir": {"type": "path", "required": True},
            "name": {"type": "str", "required": True},
            "address": {"type": "str"},
            "gateway": {"type": "str"},
            "routes": {"type": "list", "elements": "dict", "default": [],
                       "options": {"destination": {"type": "str", "required": True},
                                   "gateway": {"type": "str", "required": True}}},
            "bridge": {"type": "str", "default": "underlay"},
            "image": {"type": "path"},
            "authorized_key": {"type": "str", "no_log": False},
            "user": {"type": "str"},
            "port": {"type": "int", "default": 22},
            "resolver": {"type": "str", "choices": ["resolv.conf", "systemd-resolved"],
                         "default": "resolv.conf"},
            "nameservers": {"type": "list", "elements": "str", "default": []},
            "mirror_url": {"type": "str"},
            "state": {"type": "str", "choices": ["started", "absent"], "default": "started"},
        },
        required_if=[("state", "started", ["address", "image", "authorized_key", "user"])],
        supports_check_mode=True,
    )
    try:
        from podnet import lab
    except ImportError as exc:
        module.fail_json(
            msg=f"the podnet package is not importable here ({exc}); run "
            "'make setup' and use the venv's python for localhost"
        )
    p = module.params
    state_dir = Path(p["state_dir"])
    node_dir = state_dir / "nodes" / p["name"]
    try:
        if p["state"] == "absent":
            if module.check_mode:
                module.exit_json(changed=node_dir.exists())
            module.exit_json(changed=lab.stop_node(p["lab"], state_dir, p["name"]))
        if module.check_mode:
            module.exit_json(changed=lab.nspawn_pid(node_dir) is None)
        image = Path(p["image"])
        if not image.is_file():
            module.fail_json(
                msg=f"image {image} does not exist; run the lab role's image "
                "step (make lab-up) first"
            )
        spec = lab.NodeSpec(
            host=p["name"],
            address_cidr=p["address"],
            authorized_key=p["authorized_key"],
            user=p["user"],
            port=p["port"],
            resolver=p["resolver"],
            nameservers=tuple(p["nameservers"]),
            mirror_url=p["mirror_url"],
            routes=tuple(lab.Route(r["destination"], r["gateway"]) for r in p["routes"])
            + ((lab.Route("", p["gateway"]),) if p["gateway"] else ()),
        )
        changed, line = lab.start_node(p["lab"], state_dir, spec, p["bridge"], image)
    except lab.LabError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=changed, known_hosts_line=line)


if __name__ == "__main__":
    main()
