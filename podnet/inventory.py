"""Read an Ansible inventory the way ansible-playbook does, with its variables rendered.

verify/ uses this to reach the same hosts, over the same SSH path, that the roles used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


class InventoryError(Exception):
    """The inventory cannot be read: which one, what is wrong and the fix, as one line."""

    def __init__(self, source: str | Path, message: str, fix: str) -> None:
        self.source = str(source)
        self.message = message
        self.fix = fix
        super().__init__(f"inventory {source}: {message}; fix: {fix}")


def _origin(exc: BaseException | None) -> str:
    """Where Ansible's error is (``file:line:col``): the host_group_vars plugin re-raises a
    YAML error as a bare message, so the place is on the exception it was raised from."""
    while exc is not None:
        obj = getattr(exc, "obj", None)
        if obj is not None and type(obj).__name__ == "Origin":
            return str(obj)
        exc = exc.__cause__ or exc.__context__
    return ""


@contextmanager
def _reading(source: str | Path) -> Iterator[None]:
    """Ansible's errors about the inventory (a YAML error in group_vars, a template that
    fails) as an InventoryError, one line, instead of a traceback through Ansible."""
    from ansible.errors import AnsibleError

    try:
        yield
    except AnsibleError as exc:
        where = _origin(exc)
        reason = " ".join(str(exc).split())  # Ansible's messages can span lines
        raise InventoryError(source, f"{reason}{f' (at {where})' if where else ''}",
                             "correct that file; 'ansible-inventory -i "
                             f"{source} --list' reads the inventory the same way") from exc


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

        # Ansible only warns about a source that is not there and goes on with no hosts
        if not Path(source).exists():
            raise InventoryError(source, "does not exist",
                                 "pass -i the inventory directory or hosts file, e.g. "
                                 "-i inventory/lab, from the podnet checkout")
        _init_plugins_once(init_plugin_loader)

        self.source = source
        self._loader = DataLoader()
        with _reading(source):
            self._inventory = InventoryManager(loader=self._loader, sources=[str(source)])
            self._variables = VariableManager(loader=self._loader, inventory=self._inventory)

    def group(self, name: str) -> list[str]:
        with _reading(self.source):
            return sorted(h.name for h in self._inventory.get_hosts(pattern=name))

    def render(self, hostname: str, keys: tuple[str, ...] | None = None,
               prefix: str = "") -> dict[str, Any]:
        """The host's variables, rendered; only ``keys`` (all when None) whose names start
        with ``prefix`` (a variable of another part, as the lab's, may need what only a play
        has, like hostvars: it is not rendered unless asked for)."""
        from ansible.template import Templar

        with _reading(self.source):
            host = self._inventory.get_host(hostname)
            raw = self._variables.get_vars(host=host, include_hostvars=False)
            templar = Templar(loader=self._loader, variables=raw)
            wanted = [k for k in (raw.keys() if keys is None else keys)
                      if k in raw and k.startswith(prefix)]
            return {k: templar.template(raw[k]) for k in wanted}

    def host(self, hostname: str, extra: tuple[str, ...] = ()) -> Host:
        inv_host = self._inventory.get_host(hostname)
        if inv_host is None:
            raise KeyError(f"host {hostname} is not in the inventory")
        with _reading(self.source):
            groups = tuple(sorted(g.name for g in inv_host.get_groups() if g.name != "all"))
        return Host(hostname, groups, self.render(hostname, CONNECTION_VARS + extra))
