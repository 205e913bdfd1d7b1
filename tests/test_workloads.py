"""How containers map to what runs in a pod."""

from __future__ import annotations

import pytest

from podnet.workloads import Workload, resolve


@pytest.mark.parametrize(("image", "command", "args", "expected"), [
    ("podnet/netexec", [], [], Workload("netexec", http_port=8080, udp_port=8081)),
    ("podnet/netexec", [], ["--http-port", "9000", "--udp-port=0"],
     Workload("netexec", http_port=9000, udp_port=None)),
    ("registry.k8s.io/e2e-test-images/agnhost:2.53", [], ["netexec", "--http-port=80"],
     Workload("netexec", http_port=80, udp_port=8081)),
    ("traefik/whoami", [], [], Workload("whoami", http_port=80)),
    ("docker.io/traefik/whoami:v1.10.1", [], ["-port", "8000", "-name=a", "-verbose"],
     Workload("whoami", command=("-port", "8000", "-name=a", "-verbose"), http_port=8000)),
    ("traefik/whoami", [], ["--port=81"], Workload("whoami", command=("--port=81",),
                                                  http_port=81)),
    ("nginx:1.25", [], [], Workload("nginx")),
    ("docker.io/library/nginx@sha256:abc", [], [], Workload("nginx")),
    ("unbound", [], [], Workload("unbound")),
    ("busybox", ["sleep"], ["3600"], Workload("command", command=("sleep", "3600"))),
    ("debian:bookworm", ["/bin/sh", "-c", "echo hi"], [],
     Workload("command", command=("/bin/sh", "-c", "echo hi"))),
])
def test_supported_images(image: str, command: list[str], args: list[str],
                          expected: Workload) -> None:
    assert resolve(image, command, args) == expected


@pytest.mark.parametrize(("image", "command", "args", "message"), [
    ("redis:7", [], [], "image 'redis:7' cannot be pulled here"),
    ("agnhost", [], ["pause"], "runs here only as 'agnhost netexec'"),
    ("podnet/netexec", ["python3"], [], "give flags in args, not a command"),
    ("podnet/netexec", [], ["--http-port=http"], "--http-port 'http' is not a port number"),
    ("podnet/netexec", [], ["--http-port=70000"], "--http-port 70000 is not a port"),
    ("podnet/netexec", [], ["--delay-shutdown=5"], "netexec flag '--delay-shutdown=5' is not"),
    ("traefik/whoami", ["/whoami"], [], "give flags in args"),
    ("traefik/whoami", [], ["-cert", "a.pem"], "whoami argument '-cert' is not supported"),
    ("traefik/whoami", [], ["8080"], "whoami argument '8080' is not supported"),
    ("traefik/whoami", [], ["-port"], "whoami flag '-port' needs a value"),
    ("traefik/whoami", [], ["-port=http"], "whoami port 'http' is not a port number"),
    ("traefik/whoami", [], ["--port", "0"], "whoami port 0 is not a port"),
    ("nginx", ["nginx", "-g"], [], "remove command"),
    ("busybox", [], [], "set command"),
    ("", [], [], "is not an image reference"),
])
def test_unsupported_containers(image: str, command: list[str], args: list[str],
                                message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(image, command, args)


def test_workload_as_data() -> None:
    assert Workload("netexec", http_port=1).as_dict() == {
        "kind": "netexec", "command": [], "http_port": 1, "udp_port": None}


def test_whoami_port_from_its_environment() -> None:
    """traefik/whoami reads WHOAMI_PORT_NUMBER when -port is not given; -port wins over it."""
    assert resolve("traefik/whoami", [], [], {"WHOAMI_PORT_NUMBER": "9000"}).http_port == 9000
    assert resolve("traefik/whoami", [], ["-port=81"],
                   {"WHOAMI_PORT_NUMBER": "9000"}).http_port == 81
