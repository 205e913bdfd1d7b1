"""podnet/nginxconf.py: the ingress controller's nginx config, checked as text and then served
by a real nginx in a throwaway network namespace (loopback only) with small Python backends:
routing by host and path type, the default backend, 503 without ready endpoints, the headers a
backend gets, 308 to https and SNI's choice of certificate."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podnet import nginxconf

NGINX = "/usr/sbin/nginx"
needs_sandbox = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(NGINX).exists()
    or not all(shutil.which(t) for t in ("unshare", "nsenter", "openssl", "ip")),
    reason="needs root, nginx (scripts/setup.sh host), unshare, nsenter, openssl and ip")

# the backends: name -> (ip, port); each answers JSON naming itself, the path and the headers
BACKENDS = {"web": ("127.0.0.2", 8001), "web-unready": ("127.0.0.3", 8001),
            "api": ("127.0.0.4", 8002), "whoami": ("127.0.0.5", 8003),
            "echo": ("127.0.0.6", 8004), "down": ("127.0.0.7", 8005)}


def endpoint(name: str) -> dict[str, Any]:
    ip, port = BACKENDS[name]
    return {"pod": f"demo/{name}", "ip": ip, "port": port}


def loc(path: str, kind: str, upstream: str | None) -> dict[str, Any]:
    return {"path": path, "type": kind, "upstream": upstream, "ingress": "demo/test"}


def make_input(certs: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """The demo's routes (docs/ingress.md) as the podnet_ingress filter describes them."""
    return {
        "version": 1, "class": "nginx", "http_port": 80, "https_port": 443, "health_port": 10254,
        "certificates": {name: {"cert": crt, "key": key} for name, (crt, key) in certs.items()},
        "default_certificate": "ingress-nginx/default-tls",
        "servers": [
            {"host": "paths.example.test", "certificate": "demo/demo-tls", "ssl_redirect": True,
             "locations": [loc("/", "Prefix", None),
                           loc("/aaa/bbb/ccc", "Exact", "demo-echo-8080"),
                           loc("/aaa/bbb", "Prefix", "demo-whoami-80"),
                           loc("/aaa", "Prefix", "demo-api-8080"),
                           loc("/foo", "ImplementationSpecific", "demo-web-80")]},
            {"host": "plain.example.test", "certificate": None, "ssl_redirect": False,
             "locations": [loc("/", "Prefix", "demo-web-80"),
                           loc("/down", "Prefix", "demo-down-80")]},
            {"host": "web.example.test", "certificate": "demo/demo-tls", "ssl_redirect": True,
             "locations": [loc("/", "Prefix", "demo-web-80"),
                           loc("/healthz", "Exact", "demo-echo-8080"),
                           loc("/whoami", "Prefix", "demo-whoami-80")]},
            {"host": "*.apps.example.test", "certificate": "demo/wild-tls", "ssl_redirect": True,
             "locations": [loc("/", "Prefix", "demo-whoami-80")]},
            {"host": "_", "certificate": None, "ssl_redirect": False,
             "locations": [loc("/", "Prefix", None)]},
        ],
        "upstreams": {
            "demo-web-80": {"service": "demo/web", "port": 80,
                            "endpoints": [endpoint("web"), endpoint("web-unready")]},
            "demo-api-8080": {"service": "demo/api", "port": 8080,
                              "endpoints": [endpoint("api")]},
            "demo-whoami-80": {"service": "demo/whoami", "port": 80,
                               "endpoints": [endpoint("whoami")]},
            "demo-echo-8080": {"service": "demo/echo", "port": 8080,
                               "endpoints": [endpoint("echo")]},
            "demo-down-80": {"service": "demo/down", "port": 80,
                             "endpoints": [endpoint("down")]},
        },
    }


UNREADY = {("demo/web-unready", "127.0.0.3"), ("demo/down", "127.0.0.7")}


# --- the config as text -----------------------------------------------------------------------

def tiny_input() -> dict[str, Any]:
    return {"version": 1, "certificates": {}, "default_certificate": None, "servers": [],
            "upstreams": {}}


def test_a_wildcard_host_matches_exactly_one_more_label() -> None:
    assert nginxconf.server_name("*.apps.example.test") == r"~^[^.]+\.apps\.example\.test$"
    assert nginxconf.server_name("Web.Example.Test") == "web.example.test"


def test_path_types_become_nginx_locations() -> None:
    assert nginxconf.locations_of("/v1", "Exact") == [("=", "/v1")]
    assert nginxconf.locations_of("/aaa/bbb/", "Prefix") == [("=", "/aaa/bbb"), ("^~", "/aaa/bbb/")]
    assert nginxconf.locations_of("/", "Prefix") == [("^~", "/")]
    assert nginxconf.locations_of("/foo", "ImplementationSpecific") == [("^~", "/foo")]


def test_without_servers_the_catch_all_answers_404_and_healthz() -> None:
    text, files = nginxconf.render(tiny_input(), set(), "/pod")
    assert "listen 80 default_server;" in text and "listen 443 ssl default_server;" in text
    assert 'location = "/healthz" { return 200 "ok\\n"; }' in text
    assert 'ssl_certificate "/pod/tls/default-fake.crt";' in text
    assert files == {}


def test_an_upstream_without_ready_endpoints_answers_503() -> None:
    config = tiny_input()
    config["servers"] = [{"host": "a.test", "certificate": None, "ssl_redirect": False,
                          "locations": [loc("/", "Prefix", "ns-svc-80")]}]
    config["upstreams"] = {"ns-svc-80": {"service": "ns/svc", "port": 80, "endpoints": [
        {"pod": "ns/p", "ip": "10.0.0.1", "port": 8080}]}}
    ready, _ = nginxconf.render(config, set(), "/pod")
    assert "server 10.0.0.1:8080 max_fails=0;" in ready and "proxy_pass http://ns-svc-80;" in ready
    unready, _ = nginxconf.render(config, {("ns/p", "10.0.0.1")}, "/pod")
    assert "upstream ns-svc-80" not in unready and "return 503;" in unready
    assert nginxconf.generation_of(ready) != nginxconf.generation_of(unready)


def test_exact_wins_over_prefix_at_the_same_path_and_healthz_of_a_rule_wins() -> None:
    config = tiny_input()
    config["servers"] = [{"host": "a.test", "certificate": None, "ssl_redirect": False,
                          "locations": [loc("/", "Prefix", None), loc("/x", "Prefix", None),
                                        loc("/x", "Exact", "ns-svc-80"),
                                        loc("/health", "ImplementationSpecific", None)]}]
    config["upstreams"] = {"ns-svc-80": {"service": "ns/svc", "port": 80, "endpoints": []}}
    text, _ = nginxconf.render(config, set(), "/pod")
    server = text.split("# a.test")[1].split("# _")[0]
    assert server.count('location = "/x"') == 1
    assert 'location = "/x" {\n            return 503;' in server
    assert "/healthz" not in server  # the rule's /health prefix takes it


def test_keys_are_written_0600_named_by_their_content() -> None:
    config = tiny_input()
    config["certificates"] = {"ns/a": {"cert": "CERT", "key": "KEY"}}
    config["default_certificate"] = "ns/a"
    text, files = nginxconf.render(config, set(), "/pod")
    modes = {Path(p).suffix: m for p, (_, m) in files.items()}
    assert modes == {".crt": 0o644, ".key": 0o600}
    assert all(p.startswith("/pod/tls/") and p in text for p in files)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("default_certificate", "ns/none", "default_certificate 'ns/none' is not in certificates"),
    ("version", 2, "this podnet-ingress reads version 1"),
])
def test_bad_input_is_named(field: str, value: object, message: str) -> None:
    config = tiny_input()
    config[field] = value
    with pytest.raises(nginxconf.InputError, match=message):
        nginxconf.render(config, set(), "/pod")


def test_a_path_cannot_inject_a_directive() -> None:
    config = tiny_input()
    config["servers"] = [{"host": "a.test", "locations": [loc('/a"; }', "Exact", None)]}]
    text, _ = nginxconf.render(config, set(), "/pod")
    assert 'location = "/a\\"; }" {' in text


# --- a real nginx ---------------------------------------------------------------------------

BACKEND = r"""
import http.server, json, subprocess, sys, threading, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(1.5)  # a request still open while nginx reloads
        body = json.dumps({"name": self.server.name, "path": self.path,
                           "version": self.request_version,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
for name, (ip, port) in json.loads(sys.argv[1]).items():
    s = http.server.ThreadingHTTPServer((ip, port), H)
    s.name = name
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

CLIENT = r"""
import hashlib, http.client, json, socket, ssl, sys
out = []
for r in json.loads(sys.stdin.read()):
    try:
        if r["scheme"] == "https":
            ctx = ssl.create_default_context(cafile=r["ca"]) if r.get("verify") else \
                ssl._create_unverified_context()
            raw = socket.create_connection(("127.0.0.1", r.get("port", 443)), timeout=5)
            sock = ctx.wrap_socket(raw, server_hostname=r.get("sni"))
            der = sock.getpeercert(binary_form=True)
            conn = http.client.HTTPConnection("127.0.0.1", r.get("port", 443), timeout=5)
            conn.sock = sock
        else:
            der = None
            conn = http.client.HTTPConnection("127.0.0.1", r.get("port", 80), timeout=5)
        conn.request("GET", r["path"], headers={"Host": r["host"]})
        resp = conn.getresponse()
        body = resp.read().decode()
        out.append({"status": resp.status, "body": body, "location": resp.getheader("Location"),
                    "cert": hashlib.sha256(der).hexdigest() if der else None})
    except Exception as exc:
        out.append({"error": repr(exc)})
print(json.dumps(out))
"""


def openssl(*argv: str) -> None:
    subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=30)


def make_ca(tmp: Path) -> tuple[Path, Path]:
    """A throwaway test CA (P-256, 30 days): its certificate and key files."""
    ca, ca_key = tmp / "ca.crt", tmp / "ca.key"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=podnet test CA", "-days", "30", "-keyout", str(ca_key), "-out", str(ca))
    return ca, ca_key


def issue(tmp: Path, name: str, ca: Path, ca_key: Path, sans: list[str]) -> tuple[str, str]:
    key, csr, crt = tmp / f"{name}.key", tmp / f"{name}.csr", tmp / f"{name}.crt"
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={sans[0]}", "-keyout", str(key), "-out", str(csr))
    ext = tmp / f"{name}.ext"
    ext.write_text("subjectAltName=" + ",".join(f"DNS:{s}" for s in sans) + "\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "30", "-sha256", "-extfile", str(ext), "-out", str(crt))
    return crt.read_text(), key.read_text()


def fingerprint(pem: str) -> str:
    import hashlib
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


class Sandbox:
    def __init__(self, tmp: Path,
                 backends: dict[str, tuple[str, int]] | None = None) -> None:
        self.tmp = tmp
        self.holder = subprocess.Popen(
            ["unshare", "-n", "--", sys.executable, "-c", BACKEND,
             json.dumps(BACKENDS if backends is None else backends)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.holder.stdout and self.holder.stdout.readline().strip() == "ready"
        self.nginx: subprocess.Popen[str] | None = None

    def run(self, *argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.holder.pid), "-n", *argv],
                              capture_output=True, text=True, check=False, timeout=30, **kw)

    def start_nginx(self, conf: Path) -> None:
        # nginx deletes its pid file as it exits and when a reload changes it: never the
        # host's /dev/null (an older kubelet placeholder said "pid /dev/null;")
        assert "pid /dev/" not in conf.read_text(), "a pid file under /dev would be deleted"
        self.nginx = subprocess.Popen(
            ["nsenter", "-t", str(self.holder.pid), "-n", NGINX, "-c", str(conf),
             "-g", "daemon off;"], stderr=subprocess.PIPE, text=True)

    def get(self, *requests: dict[str, Any]) -> list[dict[str, Any]]:
        proc = self.run(sys.executable, "-c", CLIENT, input=json.dumps(list(requests)))
        assert proc.returncode == 0, proc.stderr
        return list(json.loads(proc.stdout))

    def close(self) -> None:
        if self.nginx:
            self.nginx.terminate()
            self.nginx.wait(timeout=10)
        if self.holder.stdin:
            self.holder.stdin.close()
        self.holder.wait(timeout=10)


def write_files(files: dict[str, tuple[str, int]]) -> None:
    for path, (content, mode) in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(content)
        Path(path).chmod(mode)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if os.geteuid() != 0 or not Path(NGINX).exists():
        pytest.skip("needs root and nginx")
    tmp = tmp_path_factory.mktemp("ingress")
    ca, ca_key = make_ca(tmp)
    certs = {
        "demo/demo-tls": issue(tmp, "demo", ca, ca_key, ["web.example.test",
                                                         "paths.example.test"]),
        "demo/wild-tls": issue(tmp, "wild", ca, ca_key, ["*.apps.example.test"]),
        "ingress-nginx/default-tls": issue(tmp, "default", ca, ca_key, ["ingress.podnet.test"]),
    }
    pod = tmp / "pod"
    (pod / "nginx-temp").mkdir(parents=True)
    text, files = nginxconf.render(make_input(certs), UNREADY, str(pod))
    write_files(files)
    conf = pod / "nginx.conf"
    conf.write_text(text)
    box = Sandbox(tmp)
    try:
        test = box.run(NGINX, "-t", "-c", str(conf))
        assert test.returncode == 0, test.stderr
        box.start_nginx(conf)
        deadline = time.monotonic() + 10
        while box.run(sys.executable, "-c", "import urllib.request; urllib.request.urlopen("
                      f"'http://127.0.0.1:{nginxconf.STATUS_PORT}"
                      f"{nginxconf.GENERATION_PATH}', timeout=1)").returncode != 0:
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)
        yield {"box": box, "ca": str(ca), "text": text,
               "certs": {name: fingerprint(crt) for name, (crt, _) in certs.items()}}
    finally:
        box.close()


def https(host: str, path: str, sni: str | None = "", **kw: Any) -> dict[str, Any]:
    return {"scheme": "https", "host": host, "path": path,
            "sni": host if sni == "" else sni, **kw}


def backend(reply: dict[str, Any]) -> str:
    if reply.get("status") != 200 or not reply["body"].startswith("{"):
        return str(reply.get("status", reply))
    return str(json.loads(reply["body"])["name"])


ROUTES = [
    ("paths.example.test", "/aaa/bbb", "whoami"), ("paths.example.test", "/aaa/bbb/", "whoami"),
    ("paths.example.test", "/aaa/bbb/ccc/", "whoami"),
    ("paths.example.test", "/aaa/bbb/ccc", "echo"),
    ("paths.example.test", "/aaa/bbbxyz", "api"), ("paths.example.test", "/aaa", "api"),
    ("paths.example.test", "/foo", "web"), ("paths.example.test", "/foobar", "web"),
    ("paths.example.test", "/fo", "404"), ("paths.example.test", "/healthz", "200"),
    ("web.example.test", "/", "web"), ("web.example.test", "/healthz", "echo"),
    ("web.example.test", "/healthz/", "web"), ("web.example.test", "/whoami", "whoami"),
    ("x.apps.example.test", "/", "whoami"), ("a.b.apps.example.test", "/", "404"),
    ("apps.example.test", "/", "404"), ("unknown.test", "/", "404"),
    ("unknown.test", "/healthz", "200"),
]


@needs_sandbox
def test_hosts_and_paths_route_as_ingress_nginx_does(served: dict[str, Any]) -> None:
    replies = served["box"].get(*(https(host, path) for host, path, _ in ROUTES))
    got = [(host, path, backend(r)) for (host, path, _), r in zip(ROUTES, replies, strict=True)]
    assert got == ROUTES


@needs_sandbox
def test_tls_hosts_redirect_plain_http_with_308(served: dict[str, Any]) -> None:
    reply, = served["box"].get({"scheme": "http", "host": "web.example.test", "path": "/a?b=1"})
    assert (reply["status"], reply["location"]) == (308, "https://web.example.test/a?b=1")


@needs_sandbox
def test_hosts_without_tls_serve_plain_http(served: dict[str, Any]) -> None:
    replies = served["box"].get({"scheme": "http", "host": "plain.example.test", "path": "/"},
                                {"scheme": "http", "host": "nothing.test", "path": "/x"})
    assert [backend(r) for r in replies] == ["web", "404"]


@needs_sandbox
def test_unready_endpoints_get_no_request(served: dict[str, Any]) -> None:
    replies = served["box"].get(*[{"scheme": "http", "host": "plain.example.test",
                                   "path": f"/{n}"} for n in range(8)])
    assert {backend(r) for r in replies} == {"web"}


@needs_sandbox
def test_a_service_without_ready_endpoints_answers_503(served: dict[str, Any]) -> None:
    reply, = served["box"].get({"scheme": "http", "host": "plain.example.test", "path": "/down"})
    assert reply["status"] == 503


@needs_sandbox
def test_the_backend_gets_the_forwarded_headers_over_http_1_1(served: dict[str, Any]) -> None:
    reply, = served["box"].get(https("web.example.test", "/whoami/x"))
    seen = json.loads(reply["body"])
    headers = seen["headers"]
    assert seen["version"] == "HTTP/1.1"
    assert {k: headers.get(k) for k in ("host", "x-forwarded-for", "x-real-ip",
                                        "x-forwarded-proto", "x-forwarded-host",
                                        "x-forwarded-port", "x-scheme")} == {
        "host": "web.example.test", "x-forwarded-for": "127.0.0.1", "x-real-ip": "127.0.0.1",
        "x-forwarded-proto": "https", "x-forwarded-host": "web.example.test",
        "x-forwarded-port": "443", "x-scheme": "https"}
    assert len(headers["x-request-id"]) == 32


@needs_sandbox
@pytest.mark.parametrize(("sni", "cert"), [
    ("web.example.test", "demo/demo-tls"), ("x.apps.example.test", "demo/wild-tls"),
    ("a.b.apps.example.test", "ingress-nginx/default-tls"),
    ("unknown.test", "ingress-nginx/default-tls"), (None, "ingress-nginx/default-tls"),
])
def test_sni_picks_the_hosts_certificate_else_the_default(served: dict[str, Any],
                                                           sni: str | None, cert: str) -> None:
    reply, = served["box"].get(https(sni or "web.example.test", "/", sni=sni))
    assert reply.get("cert") == served["certs"][cert], reply


@needs_sandbox
@pytest.mark.parametrize("host", ["web.example.test", "x.apps.example.test"])
def test_the_hosts_certificate_verifies_against_the_ca(served: dict[str, Any], host: str) -> None:
    reply, = served["box"].get(https(host, "/", verify=True, ca=served["ca"]))
    assert reply.get("status") == 200, reply


@needs_sandbox
def test_nginx_tells_which_generation_it_runs(served: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{nginxconf.STATUS_PORT}{nginxconf.GENERATION_PATH}"
    proc = served["box"].run(sys.executable, "-c", "import urllib.request; print(urllib.request"
                             f".urlopen('{url}', timeout=2).read().decode().strip())")
    assert proc.stdout.strip() == nginxconf.generation_of(served["text"])


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
def test_the_fake_certificate_is_made_once(tmp_path: Path) -> None:
    crt, key = nginxconf.fake_certificate(str(tmp_path))
    first = Path(crt).read_text()
    assert (Path(key).stat().st_mode & 0o777) == 0o600
    assert nginxconf.fake_certificate(str(tmp_path)) == (crt, key)
    assert Path(crt).read_text() == first
