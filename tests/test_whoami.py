"""podnet-whoami (the image traefik/whoami), on loopback: what it prints, /api, /health, flags,
keep-alive."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

WHOAMI = Path(__file__).resolve().parents[1] / "roles" / "kubelet" / "files" / "podnet-whoami"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(WHOAMI), "-bind", "127.0.0.1", *args],
                            env={**os.environ, "HOSTNAME": "whoami-7d9f-abcde", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "starting up on port" in line, (line, proc.stderr.read() if proc.stderr else "")
    return proc


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    number = free_port()
    proc = start(["-port", str(number)], {"WHOAMI_NAME": ""})
    yield number
    proc.terminate()
    proc.wait(timeout=5)


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()


def test_every_path_prints_host_addresses_and_the_request(port: int) -> None:
    status, headers, body = request(port, "GET", "/any/path?x=1", {
        "Host": "web.example.test", "User-Agent": "curl/8.5", "x-forwarded-for": "192.0.2.7",
        "X-Real-IP": "192.0.2.7", "Accept": "*/*"})
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain"), text
    lines = text.split("\n")
    assert lines[0] == "Hostname: whoami-7d9f-abcde", text
    ips = [line.removeprefix("IP: ") for line in lines if line.startswith("IP: ")]
    assert "127.0.0.1" in ips, text
    assert any(line.startswith("RemoteAddr: 127.0.0.1:") for line in lines), text
    # the request as Go's Request.Write prints it: canonical names, sorted, CRLF
    request_part = text[text.index("GET "):]
    assert request_part == ("GET /any/path?x=1 HTTP/1.1\r\nHost: web.example.test\r\n"
                            "User-Agent: curl/8.5\r\nAccept: */*\r\n"
                            "Accept-Encoding: identity\r\nX-Forwarded-For: 192.0.2.7\r\n"
                            "X-Real-Ip: 192.0.2.7\r\n\r\n"), repr(request_part)


@pytest.mark.skipif(not shutil.which("ip"), reason="iproute2 is not installed")
def test_addresses_are_the_namespaces(port: int) -> None:
    """Every address `ip addr` lists, as whoami prints one IP line per address."""
    shown = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True,
                           check=True).stdout
    expected = {line.split()[3].split("/")[0] for line in shown.splitlines()}
    _, _, body = request(port, "GET", "/")
    printed = {line.removeprefix("IP: ") for line in body.decode().splitlines()
               if line.startswith("IP: ")}
    assert printed == expected, shown


def test_api_answers_json(port: int) -> None:
    status, headers, body = request(port, "GET", "/api?q=1", {"Host": "api.example.test",
                                                              "X-Forwarded-Proto": "https"})
    data = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert data["hostname"] == "whoami-7d9f-abcde" and "127.0.0.1" in data["ip"]
    assert data["host"] == "api.example.test" and data["url"] == "/api?q=1"
    assert data["method"] == "GET" and data["remoteAddr"].startswith("127.0.0.1:")
    assert data["headers"]["X-Forwarded-Proto"] == ["https"] and "Host" not in data["headers"]


def test_health_answers_200_then_what_was_posted() -> None:
    number = free_port()
    proc = start([f"--port={number}"], {})
    try:
        assert request(number, "GET", "/health")[0] == 200
        assert request(number, "POST", "/health", body=b"503")[0] == 200
        assert request(number, "GET", "/health")[0] == 503
        assert request(number, "HEAD", "/health")[0] == 503
        assert request(number, "POST", "/health", body=b"nope")[0] == 400
        assert request(number, "GET", "/")[0] == 200  # only /health changed
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_keep_alive_serves_many_requests_on_one_connection(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        peers = set()
        for i in range(5):
            conn.request("GET", f"/n{i}")
            answer = conn.getresponse()
            assert answer.version == 11 and answer.status == 200
            text = answer.read().decode()
            assert f"GET /n{i} HTTP/1.1" in text
            peers.add(next(line for line in text.splitlines() if line.startswith("RemoteAddr")))
        assert len(peers) == 1, peers  # one TCP connection for all five
    finally:
        conn.close()


def test_request_bodies_are_read_whole_on_a_kept_connection(port: int) -> None:
    """A body (by length or chunked) is echoed after the headers, and the next request on the
    same connection is read from where it ends."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/a", body=b"hello")
        text = conn.getresponse().read().decode()
        assert "Content-Length: 5\r\n" in text and text.endswith("\r\n\r\nhello"), text
        conn.request("POST", "/b", body=iter([b"ab", b"cd"]), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        text = conn.getresponse().read().decode()
        assert text.endswith("\r\n\r\nabcd") and "POST /b" in text, text
        conn.request("GET", "/c")
        assert "GET /c HTTP/1.1" in conn.getresponse().read().decode()
    finally:
        conn.close()


def test_bench_and_data(port: int) -> None:
    assert request(port, "GET", "/bench")[2] == b"1"
    assert len(request(port, "GET", "/data?size=3&unit=KB")[2]) == 3072


def test_name_and_port_from_the_environment() -> None:
    """WHOAMI_PORT_NUMBER and WHOAMI_NAME, as traefik/whoami reads them."""
    number = free_port()
    proc = start([], {"WHOAMI_PORT_NUMBER": str(number), "WHOAMI_NAME": "blue"})
    try:
        body = request(number, "GET", "/")[2].decode()
        assert body.startswith("Name: blue\nHostname: whoami-7d9f-abcde\n"), body
        assert json.loads(request(number, "GET", "/api")[2])["name"] == "blue"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.mark.parametrize(("args", "message"), [
    (["-cert", "a.pem"], "not supported here: -cert"),
    (["-port", "http"], "port 'http' is not a number"),
    (["-port"], "flag needs an argument: -port"),
])
def test_bad_flags_say_what_is_wrong(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, str(WHOAMI), *args], capture_output=True, text=True,
                          timeout=10, check=False)
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                    reason="needs root, unshare and iproute2 (a network namespace of its own)")
def test_in_a_pod_namespace_it_prints_that_namespaces_addresses() -> None:
    """As in a pod: only the namespace's own addresses, by interface index (lo first)."""
    script = (
        "set -eu\n"
        "ip link set lo up\n"
        "ip link add eth0 type veth peer name peer0 && ip link set eth0 up\n"
        "ip addr add 10.244.1.7/24 dev eth0 && ip addr add 10.244.1.8/24 dev eth0\n"
        f"{sys.executable} {WHOAMI} -port 8080 >/dev/null & pid=$!\n"
        f"{sys.executable} -c 'import time, urllib.request\n"
        "for _ in range(50):\n"
        "    try:\n"
        "        print(urllib.request.urlopen(\"http://10.244.1.7:8080/\", timeout=2)"
        ".read().decode()); break\n"
        "    except OSError: time.sleep(0.1)'\n"
        "kill $pid\n")
    done = subprocess.run(["unshare", "--net", "--fork", "bash", "-c", script],
                          env={**os.environ, "HOSTNAME": "whoami-x"}, capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Hostname: whoami-x", done.stdout
    ips = [line.removeprefix("IP: ") for line in lines if line.startswith("IP: ")]
    # ::1 and eth0's link-local appear only where IPv6 is on
    assert [ip for ip in ips if ":" not in ip] == ["127.0.0.1", "10.244.1.7", "10.244.1.8"], ips
    assert any(line.startswith("RemoteAddr: 10.244.1.7:") for line in lines), done.stdout
