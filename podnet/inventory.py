"""Read an Ansible inventory the way ansible-playbook does, with its variables rendered.

verify/ uses this to reach the same hosts, over the same SSH path, that the roles used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONNECTION_VARS = (
    "ansible_host",
    "ansible_user",
    "ansible_port",
    "ansible_ssh_private_key_file",
    "ansible_ssh_common_args",
    "ansible_connection",
)


_PLUGINS_READY: list[bool] = []


def _init_plugins_once(init: Any) -> None:
    """Ansible's collection loader may be set up once per process (as its CLIs do)."""
    if not _PLUGINS_READY:
        init()
        _PLUGINS_READY.append(True)


@dataclass(frozen=True)
class Host:
    name: str
    groups: tuple[str, ...]
    vars: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.vars.get("ansible_host", self.name))


class Inventory:
    """Hosts, groups and rendered variables of one inventory source."""

    def __init__(self, source: str | Path) -> None:
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.plugins.loader import init_plugin_loader
        from ansible.vars.manager import VariableManager

        _init_plugins_once(init_plugin_loader)

        self._loader = DataLoader()
        self._inventory = InventoryManager(loader=self._loader, sources=[str(source)])
        self._variables = VariableManager(loader=self._loader, inventory=self._inventory)

    def group(self, name: str) -> list[str]:
        return sorted(h.name for h in self._inventory.get_hosts(pattern=name))

    def render(self, hostname: str, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The host's variables, rendered; only ``keys`` (all when None)."""
        from ansible.template import Templar

        host = self._inventory.get_host(hostname)
        raw = self._variables.get_vars(host=host, include_hostvars=False)
        templar = Templar(loader=self._loader, variables=raw)
        wanted = raw.keys() if keys is None else [k for k in keys if k in raw]
        return {k: templar.template(raw[k]) for k in wanted}

    def host(self, hostname: str, extra: tuple[str, ...] = ()) -> Host:
        inv_host = self._inventory.get_host(hostname)
        if inv_host is None:
            raise KeyError(f"host {hostname} is not in the inventory")
        groups = tuple(sorted(g.name for g in inv_host.get_groups() if g.name != "all"))
        return Host(hostname, groups, self.render(hostname, CONNECTION_VARS + extra))
