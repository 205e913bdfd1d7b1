"""The ingress controller's nginx configuration, rendered from the ingress input (the
``podnet_ingress`` filter's JSON, written by the ingress_nginx role to every node) and the
node's unready pods, as ingress-nginx renders nginx.tmpl from its model.

Pure: ``render`` returns the config text and the files it names (certificates and keys under
``<pod dir>/tls/``, named by a digest of their content, keys 0600); writing, testing
(``nginx -t``) and reloading is podnet-ingress' job. ``fake_certificate`` makes the pod's
self-signed default certificate once (ingress-nginx's "Fake Certificate") with openssl.

Semantics (ingress-nginx's, docs/ingress.md):
- a wildcard host ``*.foo.com`` matches one extra label only: server_name ``~^[^.]+\\.foo\\.com$``;
- Exact P is ``location = P``; Prefix P (not "/") is ``location = P`` plus ``location ^~ P/``
  (element-wise: /aaa/bbb matches /aaa/bbb, /aaa/bbb/ and /aaa/bbb/ccc, not /aaa/bbbxyz); Prefix
  "/" is ``location /``; ImplementationSpecific P is ``location ^~ P`` (nginx's own string
  prefix). nginx then does the rest: ``=`` beats a prefix, the longest prefix wins;
- a location whose upstream has no ready endpoint answers 503; one with no upstream (the built-in
  default backend) 404, and a server whose "/" is the built-in default backend answers 200 on
  /healthz unless one of its rules takes /healthz;
- every server listens on the https port too, with its own certificate or the default one; a
  server with ``ssl_redirect`` answers plain http with 308 to https; the catch-all "_" is the
  default server of both ports, so unknown hosts and unknown (or no) SNI get it and the default
  certificate.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

# the controller asks nginx itself which config it runs (podnet-ingress, after a reload): a
# listener on the pod's loopback only, ingress-nginx's internal status port
STATUS_PORT = 10246
GENERATION_PATH = "/podnet-ingress-generation"
FAKE_CN = "Kubernetes Ingress Controller Fake Certificate"
_GENERATION_LINE = re.compile(r"^# generation ([0-9a-f]+)$", re.M)
# what every proxied request carries to the backend (ingress-nginx's defaults without
# use-forwarded-headers: X-Forwarded-For is replaced, not appended to)
PROXY_HEADERS = (
    ("Host", "$host"),
    ("X-Request-ID", "$request_id"),
    ("X-Real-IP", "$remote_addr"),
    ("X-Forwarded-For", "$remote_addr"),
    ("X-Forwarded-Host", "$host"),
    ("X-Forwarded-Port", "$server_port"),
    ("X-Forwarded-Proto", "$scheme"),
    ("X-Scheme", "$scheme"),
    ("Upgrade", "$http_upgrade"),
    ("Connection", "$connection_upgrade"),
)
_PRECEDENCE = {"Exact": 0, "Prefix": 1, "ImplementationSpecific": 2}


class InputError(ValueError):
    """The ingress input is not what the podnet_ingress filter writes."""


def parse_unready(text: str) -> set[tuple[str, str]]:
    """(pod, ip) pairs of the unready pods file podnet-endpoints keeps ("namespace/name ip" a
    line), as podnet/proxier.py reads it; lines of another shape are skipped."""
    out = set()
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and not line.startswith("#"):
            out.add((words[0], words[1]))
    return out


def quote(text: str) -> str:
    """A string as one nginx token: double-quoted, with quotes and backslashes escaped, so a
    path can hold no directive of its own."""
    if any(ord(c) < 0x20 for c in text):
        raise InputError(f"{text!r}: control characters cannot be in an nginx string")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_name(host: str) -> str:
    """nginx's server_name for an Ingress host: a wildcard matches exactly one more label, as
    ingress-nginx's ``~^[^.]+\\.foo\\.com$`` (nginx's own ``*.foo.com`` would match any depth)."""
    if host == "_":
        return "_"
    if host.startswith("*."):
        return "~^[^.]+" + re.escape(host[1:]).replace("\\-", "-") + "$"
    if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
        raise InputError(f"host {host!r} is not a DNS name")
    return host.lower()


def locations_of(path: str, kind: str) -> list[tuple[str, str]]:
    """(modifier, nginx path) pairs a rule path becomes ("=" exact, "^~" prefix)."""
    if not path.startswith("/"):
        raise InputError(f"path {path!r} does not start with /")
    if kind == "Exact":
        return [("=", path)]
    if kind == "Prefix":
        base = path.rstrip("/")
        if not base:
            return [("^~", "/")]
        return [("=", base), ("^~", base + "/")]  # element-wise: /p and /p/..., not /pxyz
    if kind == "ImplementationSpecific":
        return [("^~", path)]
    raise InputError(f"path {path!r}: unknown pathType {kind!r}")


def _matches(modifier: str, location: str, uri: str) -> bool:
    return uri == location if modifier == "=" else uri.startswith(location)


def digest(data: bytes | str, size: int = 16) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:size]


def generation_of(conf_text: str) -> str | None:
    """The generation a rendered config declares (its digest), None for another config."""
    match = _GENERATION_LINE.search(conf_text)
    return match.group(1) if match else None


def fake_certificate(pod_dir: str) -> tuple[str, str]:
    """The pod's self-signed default certificate and key (ingress-nginx's fake certificate),
    made once with openssl; returns their paths."""
    folder = Path(pod_dir) / "tls"
    crt, key = folder / "default-fake.crt", folder / "default-fake.key"
    if crt.exists() and key.exists():
        return str(crt), str(key)
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp_key, tmp_crt = key.with_suffix(".key.tmp"), crt.with_suffix(".crt.tmp")
    proc = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
         "-subj", f"/O=Acme Co/CN={FAKE_CN}", "-addext", "subjectAltName=DNS:ingress.local",
         "-keyout", str(tmp_key), "-out", str(tmp_crt)],
        capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise OSError(f"openssl could not make the default certificate: {proc.stderr.strip()}")
    tmp_key.chmod(0o600)
    tmp_crt.chmod(0o644)
    tmp_key.replace(key)
    tmp_crt.replace(crt)
    return str(crt), str(key)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, line: str = "") -> None:
        self.lines.append(("    " * self.depth + line) if line else "")

    def open(self, line: str) -> None:
        self(line + " {")
        self.depth += 1

    def close(self) -> None:
        self.depth -= 1
        self("}")


def _tls_files(config: Mapping[str, Any], pod_dir: str
               ) -> tuple[dict[str, tuple[str, str]], dict[str, tuple[str, int]]]:
    """Per certificate name its (cert path, key path), and the files holding them."""
    paths: dict[str, tuple[str, str]] = {}
    files: dict[str, tuple[str, int]] = {}
    for name, pair in sorted((config.get("certificates") or {}).items()):
        cert, key = pair.get("cert"), pair.get("key")
        if not isinstance(cert, str) or not isinstance(key, str) or not cert or not key:
            raise InputError(f"certificates[{name!r}]: needs a cert and a key (PEM)")
        ident = digest(cert + "\n" + key)
        crt_path, key_path = f"{pod_dir}/tls/{ident}.crt", f"{pod_dir}/tls/{ident}.key"
        files[crt_path] = (cert if cert.endswith("\n") else cert + "\n", 0o644)
        files[key_path] = (key if key.endswith("\n") else key + "\n", 0o600)
        paths[name] = (crt_path, key_path)
    return paths, files


def ready_upstreams(config: Mapping[str, Any], unready: Collection[tuple[str, str]]
                    ) -> dict[str, list[str]]:
    """Per upstream its ready endpoints ("ip:port"), the unready pods left out first (as
    kube-proxy's CategorizeEndpoints does before any rule is written); upstreams with none are
    not in the result."""
    out = {}
    for name, upstream in sorted((config.get("upstreams") or {}).items()):
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise InputError(f"upstream name {name!r}: letters, digits, '.', '_', '-' only")
        servers = sorted({f"{e['ip']}:{int(e['port'])}" for e in upstream.get("endpoints") or []
                          if (e.get("pod"), e.get("ip")) not in unready})
        if servers:
            out[name] = servers
    return out


def render(config: Mapping[str, Any], unready: Collection[tuple[str, str]], pod_dir: str,
           workers: int | str = 1, access_log: str | None = None
           ) -> tuple[str, dict[str, tuple[str, int]]]:
    """The nginx.conf of the controller pod whose folder is ``pod_dir`` and the files it
    names: {path: (content, mode)}. ``unready`` holds (pod, ip) pairs to leave out; an access
    log goes to ``access_log`` (a file) when given, else nowhere."""
    if config.get("version") != 1:
        raise InputError(f"version {config.get('version')!r}: this podnet-ingress reads version 1")
    http_port, https_port = int(config.get("http_port", 80)), int(config.get("https_port", 443))
    certs, files = _tls_files(config, pod_dir)
    default_name = config.get("default_certificate")
    if default_name:
        if default_name not in certs:
            raise InputError(f"default_certificate {default_name!r} is not in certificates")
        default_cert = certs[default_name]
    else:
        default_cert = (f"{pod_dir}/tls/default-fake.crt", f"{pod_dir}/tls/default-fake.key")
    upstreams = ready_upstreams(config, unready)
    servers = list(config.get("servers") or [])
    if not any(s.get("host") == "_" for s in servers):
        servers.append({"host": "_", "certificate": None, "ssl_redirect": False,
                        "locations": [{"path": "/", "type": "Prefix", "upstream": None}]})

    w = _Writer()
    w.open("http")
    w("access_log " + (f"{quote(access_log)};" if access_log else "off;"))
    w("server_tokens off;")
    w("sendfile on;")
    w("keepalive_timeout 75s;")
    w("client_max_body_size 1m;")
    w("default_type text/plain;")
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        w(f"{temp}_temp_path {quote(f'{pod_dir}/nginx-temp/{temp}')};")
    w("server_names_hash_bucket_size 128;")
    w("map_hash_bucket_size 128;")
    # keepalive to the upstreams needs an empty Connection header unless the client upgrades
    w.open("map $http_upgrade $connection_upgrade")
    w("default upgrade;")
    w("'' '';")
    w.close()
    w("proxy_http_version 1.1;")
    for header, value in PROXY_HEADERS:
        w(f"proxy_set_header {header} {value};")
    w("proxy_connect_timeout 5s;")
    w("proxy_read_timeout 60s;")
    w("proxy_send_timeout 60s;")
    w("proxy_buffering on;")
    w("proxy_next_upstream error timeout;")
    w("ssl_protocols TLSv1.2 TLSv1.3;")
    w("ssl_session_cache shared:podnet_ssl:10m;")
    w(f"ssl_certificate {quote(default_cert[0])};")
    w(f"ssl_certificate_key {quote(default_cert[1])};")
    for name, members in upstreams.items():
        w()
        w.open(f"upstream {name}")
        for member in members:
            w(f"server {member} max_fails=0;")
        w("keepalive 32;")
        w.close()
    seen_names: set[str] = set()
    for server in servers:
        host = str(server.get("host"))
        name = server_name(host)
        if name in seen_names:
            raise InputError(f"host {host!r} has two servers")
        seen_names.add(name)
        cert_name = server.get("certificate")
        if cert_name and cert_name not in certs:
            raise InputError(f"host {host!r}: certificate {cert_name!r} is not in certificates")
        catch_all = " default_server" if host == "_" else ""
        w()
        w(f"# {host}")
        if server.get("ssl_redirect") and cert_name:
            # plain http only redirects; the https server below serves the locations
            w.open("server")
            w(f"server_name {name};")
            w(f"listen {http_port}{catch_all};")
            w("return 308 https://$host$request_uri;")
            w.close()
            listens = [f"listen {https_port} ssl{catch_all};"]
        else:
            listens = [f"listen {http_port}{catch_all};", f"listen {https_port} ssl{catch_all};"]
        w.open("server")
        w(f"server_name {name};")
        for line in listens:
            w(line)
        if cert_name:
            w(f"ssl_certificate {quote(certs[cert_name][0])};")
            w(f"ssl_certificate_key {quote(certs[cert_name][1])};")
        _locations(w, server, upstreams, set(config.get("upstreams") or {}))
        w.close()
    # nginx tells the controller which config it runs (a reload has taken effect)
    body = "\n".join(w.lines)
    generation = digest(body + json.dumps([workers, access_log]))
    w()
    w.open("server")
    w(f"listen 127.0.0.1:{STATUS_PORT};")
    w(f"location = {GENERATION_PATH} {{ return 200 \"{generation}\\n\"; }}")
    w("location / { return 404; }")
    w.close()
    w.close()
    head = [
        "# rendered by podnet-ingress (podnet/nginxconf.py) from the ingress input and the",
        "# node's unready pods; replaced on every change: edits are lost",
        f"# generation {generation}",
        f"worker_processes {workers};",
        f"pid {quote(pod_dir + '/nginx.pid')};",
        "error_log stderr notice;",
        "events {",
        "    worker_connections 1024;",
        "}",
    ]
    return "\n".join(head + w.lines) + "\n", files


def _locations(w: _Writer, server: Mapping[str, Any], ready: Mapping[str, list[str]],
               known: set[str]) -> None:
    chosen: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    for location in server.get("locations") or []:
        kind = location.get("type")
        path = str(location.get("path"))
        for key in locations_of(path, str(kind)):
            rank = _PRECEDENCE.get(str(kind), 3)
            # Exact beats Prefix at the same path (both would be "location = P": nginx takes
            # one), otherwise the first in the input's order wins
            if key not in chosen or rank < chosen[key][0]:
                chosen[key] = (rank, dict(location))
    if ("^~", "/") not in chosen:  # every server answers every path: the default backend
        chosen[("^~", "/")] = (3, {"path": "/", "type": "Prefix", "upstream": None})
    root_default = chosen[("^~", "/")][1].get("upstream") is None
    # the built-in default backend answers 200 on /healthz, unless a rule takes /healthz
    if root_default and not any(_matches(m, p, "/healthz") for (m, p) in chosen if p != "/"):
        w('location = "/healthz" { return 200 "ok\\n"; }')
    for (modifier, path), (_, location) in sorted(chosen.items(),
                                                   key=lambda item: (item[0][1], item[0][0])):
        opening = "location /" if path == "/" else f"location {modifier} {quote(path)}"
        upstream = location.get("upstream")
        w.open(opening)
        if upstream is None:
            w("return 404 \"default backend - 404\\n\";")
        elif upstream not in known:
            raise InputError(f"location {location.get('path')!r}: upstream {upstream!r} is not "
                             "in upstreams")
        elif upstream not in ready:
            w("return 503;")  # the Service has no ready endpoint
        else:
            w(f"proxy_pass http://{upstream};")
        w.close()
