"""The built-in test workload, on loopback: agnhost netexec's endpoints and UDP echo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

NETEXEC = Path(__file__).resolve().parents[1] / "roles" / "kubelet" / "files" / "podnet-netexec"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, int]]:
    http, udp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([sys.executable, str(NETEXEC), f"--http-port={http}",
                             "--udp-port", str(udp), "--bind", "127.0.0.1"],
                            env={**os.environ, "PODNET_HOSTNAME": "pod-x"},
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert "serving" in proc.stdout.readline()
    yield http, udp
    proc.terminate()
    proc.wait(timeout=5)


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return str(answer.read().decode())


def udp(port: int, message: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(message.encode(), ("127.0.0.1", port))
        return sock.recvfrom(999)[0].decode()


def test_http_endpoints(server: tuple[int, int]) -> None:
    http, _ = server
    assert get(http, "/hostname") == "pod-x"
    assert get(http, "/echo?msg=hello%20there") == "hello there"
    assert get(http, "/clientip").startswith("127.0.0.1:")
    assert get(http, "/healthz") == "ok"
    with pytest.raises(urllib.error.HTTPError, match="404"):
        get(http, "/nope")


@pytest.mark.parametrize("path", ["/hostname", "/healthz", "/echo?msg=x", "/nope"])
def test_every_reply_names_the_pod(server: tuple[int, int], path: str) -> None:
    """X-Podnet-Hostname on every path, errors too: a client behind the Ingress reads it."""
    http, _ = server
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}{path}", timeout=5) as answer:
            headers = answer.headers
    except urllib.error.HTTPError as exc:
        headers = exc.headers
    assert headers["X-Podnet-Hostname"] == "pod-x", f"GET {path}: {dict(headers)}"


def test_udp_echo(server: tuple[int, int]) -> None:
    _, port = server
    assert udp(port, "hostname") == "pod-x"
    assert udp(port, "echo abc") == "abc"
    assert udp(port, "clientip").startswith("127.0.0.1:")


def test_dial_reports_what_the_pod_saw(server: tuple[int, int]) -> None:
    http, port = server
    answer = json.loads(get(http, f"/dial?host=127.0.0.1&port={http}&request=hostname"
                                  "&protocol=http&tries=2"))
    assert answer == {"responses": ["pod-x", "pod-x"], "errors": []}
    answer = json.loads(get(http, f"/dial?host=127.0.0.1&port={port}&request=echo%20u"
                                  "&protocol=udp"))
    assert answer == {"responses": ["u"], "errors": []}
    closed = free_port(socket.SOCK_STREAM)
    started = time.monotonic()
    answer = json.loads(get(http, f"/dial?host=127.0.0.1&port={closed}&request=hostname"))
    assert answer["responses"] == [] and "Connection refused" in answer["errors"][0]
    assert time.monotonic() - started < 3
    with pytest.raises(urllib.error.HTTPError, match="400"):
        get(http, "/dial?host=127.0.0.1&port=x")
