"""What runs in a pod: containers cannot pull images here, so each maps to a known workload.

=============================  ===========================================================
image                          runs
=============================  ===========================================================
``podnet/netexec``,            the built-in test server (agnhost ``netexec`` compatible):
``registry.k8s.io/e2e-test-    HTTP on ``--http-port`` (8080) and UDP echo on ``--udp-port``
images/agnhost:*`` with        (8081). For agnhost the first arg must be ``netexec``.
``args: [netexec, ...]``
``traefik/whoami``,            podnet's whoami (``podnet-whoami``): every path answers the
``*/whoami:*``                 pod's hostname, addresses and the request it saw; flags as
                               whoami's (``-port`` 80, ``-name``, ``-verbose``) in ``args``
``nginx``, ``*/nginx:*``       nginx from the node's Debian package
``unbound``, ``*/unbound:*``   unbound from the node's Debian package
``debian``, ``busybox``,       ``command`` + ``args`` run with the node's own programs
``ubuntu``, ``podnet/command``
=============================  ===========================================================

Anything else is rejected with the list above, because podnet cannot fetch the image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NETEXEC_HTTP_PORT = 8080
NETEXEC_UDP_PORT = 8081
WHOAMI_PORT = 80

_IMAGE = re.compile(r"^(?:(?P<repo>[^:@]*/))?(?P<name>[^/:@]+)(?::[^@]*)?(?:@.*)?$")
_NETEXEC_IMAGES = ("agnhost", "netexec")
_WHOAMI_IMAGES = ("whoami",)
_WHOAMI_FLAGS = ("port", "name", "verbose")
_SERVERS = ("nginx", "unbound")
_COMMAND_IMAGES = ("debian", "busybox", "ubuntu", "command")

SUPPORTED = (
    "podnet/netexec or agnhost with args [netexec, ...] (the built-in test server), "
    "traefik/whoami, nginx, unbound, or debian/busybox/ubuntu/podnet/command with a command"
)


@dataclass(frozen=True)
class Workload:
    kind: str  # netexec | whoami | nginx | unbound | command
    command: tuple[str, ...] = ()
    http_port: int | None = None
    udp_port: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "command": list(self.command),
            "http_port": self.http_port,
            "udp_port": self.udp_port,
        }


def _flag(args: Sequence[str], name: str, default: int | None) -> int | None:
    """Value of ``--name=N`` or ``--name N`` in args (the last one wins, as Go's flag does)."""
    value: int | None = default
    for i, arg in enumerate(args):
        text = None
        if arg.startswith(f"--{name}="):
            text = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(args):
            text = args[i + 1]
        if text is not None:
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"--{name} '{text}' is not a port number") from None
            if not 0 <= value <= 65535:  # 0 or -1 turn the server off in agnhost
                raise ValueError(f"--{name} {value} is not a port (1-65535)")
    return value or None


def _whoami(image: str, command: Sequence[str], args: Sequence[str],
            env: Mapping[str, str]) -> Workload:
    """traefik/whoami's flags, parsed as Go's flag package does (``-port 80``, ``--port=80``):
    the node tool gets them unchanged; ``http_port`` is the port it will listen on."""
    if command:
        raise ValueError(f"image '{image}' is the built-in whoami: give flags in args "
                         "(-port, -name, -verbose), not a command")
    port_text = env.get("WHOAMI_PORT_NUMBER") or str(WHOAMI_PORT)
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or flag not in _WHOAMI_FLAGS:
            raise ValueError(f"whoami argument '{arg}' is not supported here "
                             "(only -port, -name and -verbose; no TLS)")
        if flag != "verbose" and not eq:
            if i + 1 >= len(args):
                raise ValueError(f"whoami flag '{arg}' needs a value")
            i += 1
            value = args[i]
        if flag == "port":
            port_text = value
        i += 1
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"whoami port '{port_text}' is not a port number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"whoami port {port} is not a port (1-65535)")
    return Workload("whoami", command=tuple(args), http_port=port)


def resolve(image: str, command: Sequence[str], args: Sequence[str],
            env: Mapping[str, str] | None = None) -> Workload:
    """The workload for a container; ValueError says why it cannot run and what can.
    ``env`` is the container's environment (whoami reads its port from WHOAMI_PORT_NUMBER)."""
    match = _IMAGE.match(image.strip())
    if not match:
        raise ValueError(f"image '{image}' is not an image reference; use one of: {SUPPORTED}")
    name = match.group("name")
    if name in _NETEXEC_IMAGES:
        flags = list(args)
        if name == "agnhost":
            if command or not flags or flags[0] != "netexec":
                raise ValueError(
                    f"image '{image}' runs here only as 'agnhost netexec': "
                    "set args: [netexec, --http-port=8080, ...] and no command"
                )
            flags = flags[1:]
        elif command:
            raise ValueError(f"image '{image}' is the built-in server: give flags in args, "
                             "not a command")
        http = _flag(flags, "http-port", NETEXEC_HTTP_PORT)
        udp = _flag(flags, "udp-port", NETEXEC_UDP_PORT)
        known = {"http-port", "udp-port"}
        for arg in flags:
            if arg.startswith("--") and arg[2:].split("=")[0] not in known:
                raise ValueError(f"netexec flag '{arg}' is not supported here "
                                 "(only --http-port and --udp-port)")
        return Workload("netexec", http_port=http, udp_port=udp)
    if name in _WHOAMI_IMAGES:
        return _whoami(image, command, args, env or {})
    if name in _SERVERS:
        if command:
            raise ValueError(f"image '{image}' runs the packaged {name} with podnet's config; "
                             "remove command")
        return Workload(name, command=tuple(args))
    if name in _COMMAND_IMAGES:
        if not command:
            raise ValueError(f"image '{image}' has no server of its own here: set command "
                             "(and args) to what the container runs")
        return Workload("command", command=(*command, *args))
    raise ValueError(f"image '{image}' cannot be pulled here; use one of: {SUPPORTED}")
