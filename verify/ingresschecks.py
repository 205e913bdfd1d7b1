"""The Ingress proofs' client side: requests sent from the outside client (group clients) to
the Ingress controller's Service, by host and path, over HTTP and HTTPS with SNI, verified
against the demo's CA (never without verification: a request for an unknown name checks the
chain and reads which certificate came back), and which pod answered each.

Each batch of requests is one run of CLIENT on the client host (python3's stdlib there), so a
table of fifty requests costs one ssh round trip. A pod is known by what it answers: whoami
prints ``Hostname: <pod>``, the test server (netexec) sends ``X-Podnet-Hostname``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import Any

import targets
from conftest import INVENTORY_PATH, observed, outside_client, plan, run
from targets import CHI_SQUARE_LIMIT

from podnet import kubelet
from podnet.plan import ServicePlan

CONTROLLER = "ingress-nginx/ingress-nginx-controller"
DEFAULT_BACKEND = "default backend (404)"
NO_ENDPOINTS = "no ready endpoint (503)"

# Runs on the client: argv[1] is {"address", "http", "https", "ca", "timeout", "requests":
# [{"scheme", "host", "path", "check_hostname"}]}; prints one JSON result per request.
CLIENT = r'''
import http.client, json, socket, ssl, sys, time
job = json.loads(sys.argv[1])
out = []
for r in job["requests"]:
    start = time.monotonic()
    got = {"status": None, "headers": {}, "body": "", "sans": None, "error": None}
    try:
        port = job["https"] if r["scheme"] == "https" else job["http"]
        sock = socket.create_connection((job["address"], port), timeout=job["timeout"])
        if r["scheme"] == "https":
            ctx = ssl.create_default_context(cadata=job["ca"])
            ctx.check_hostname = r["check_hostname"]
            sock = ctx.wrap_socket(sock, server_hostname=r["host"])
            cert = sock.getpeercert()
            got["sans"] = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
        conn = http.client.HTTPConnection(r["host"], port, timeout=job["timeout"])
        conn.sock = sock
        conn.request("GET", r["path"], headers={"Host": r["host"], "Connection": "close"})
        reply = conn.getresponse()
        got["status"] = reply.status
        got["headers"] = {k.lower(): v for k, v in reply.getheaders()}
        got["body"] = reply.read(8192).decode(errors="replace")
        conn.close()
    except Exception as exc:
        got["error"] = f"{type(exc).__name__}: {exc}"
    got["seconds"] = round(time.monotonic() - start, 4)
    out.append(got)
print(json.dumps(out))
'''


@dataclass(frozen=True)
class Request:
    scheme: str
    host: str
    path: str
    check_hostname: bool = True

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"


@dataclass(frozen=True)
class Reply:
    request: Request
    status: int | None
    headers: dict[str, str]
    body: str
    sans: list[str] | None
    error: str | None
    seconds: float

    @property
    def pod(self) -> str | None:
        """The hostname of the pod that answered (whoami's body, the test server's header)."""
        if "x-podnet-hostname" in self.headers:
            return self.headers["x-podnet-hostname"]
        for line in self.body.splitlines():
            if line.startswith("Hostname: "):
                return line.split(": ", 1)[1].strip()
        return None

    def header_lines(self) -> dict[str, str]:
        """The request headers whoami echoed (``Name: value`` lines after the request line)."""
        found = {}
        for line in self.body.splitlines():
            name, sep, value = line.partition(": ")
            if sep and name[:1].isupper() and " " not in name:
                found[name.lower()] = value.strip()
        return found

    def __str__(self) -> str:
        return (f"{self.request} -> status {self.status}, pod {self.pod}, sans {self.sans}, "
                f"error {self.error}, headers {self.headers}, body {self.body[:300]!r}")


@cache
def controller() -> ServicePlan:
    try:
        return plan().service(CONTROLLER)
    except KeyError:
        raise targets.NotInPlan(f"the Ingress controller's Service {CONTROLLER} (the "
                                "ingress-nginx add-on)") from None


@cache
def entry() -> tuple[str, int, int]:
    """Where the client reaches the controller: its LoadBalancer address, ports 80 and 443
    (or, without an LB pool, the first node's NodePorts)."""
    svc = controller()
    ports = {p.name: p for p in svc.ports}
    if svc.lb_ip:
        return str(svc.lb_ip), ports["http"].port, ports["https"].port
    node = plan().nodes[0]
    return str(node.address), int(ports["http"].node_port or 0), int(ports["https"].node_port or 0)


@cache
def ca_pem() -> str:
    """The demo CA that signed every certificate the demo's Secrets hold (scripts/demo-tls.py
    writes it beside the inventory)."""
    folder = INVENTORY_PATH if INVENTORY_PATH.is_dir() else INVENTORY_PATH.parent
    path = folder / "tls" / "ca.crt"
    if not path.exists():
        raise targets.NotInPlan(f"the CA of the Ingress certificates in {path} "
                                "(scripts/demo-tls.py)")
    return path.read_text()


def send(requests: list[Request], timeout: float = 3.0, via: tuple[str, str] | None = None
         ) -> list[Reply]:
    """Each request on a new connection from the client (group clients' first host) to the
    controller's Service; ``via=(host, address)``: from that host straight to that address
    (a controller pod's IP, from its node), ports 80 and 443."""
    address, http_port, https_port = entry()
    sender = outside_client().name
    if via:
        sender, address = via
        http_port, https_port = 80, 443
    job = {"address": address, "http": http_port, "https": https_port, "ca": ca_pem(),
           "timeout": timeout,
           "requests": [{"scheme": r.scheme, "host": r.host, "path": r.path,
                         "check_hostname": r.check_hostname} for r in requests]}
    done = run(sender, "python3", "-c", CLIENT, json.dumps(job))
    assert done.rc == 0, done
    return [Reply(request=r, **data) for r, data in zip(requests, json.loads(done.stdout),
                                                       strict=True)]


def client_address() -> str:
    return outside_client().address


def service_of_pod() -> dict[str, set[str]]:
    """Which Services each pod (by hostname) is an endpoint of."""
    found: dict[str, set[str]] = {}
    for svc in plan().services:
        for port in svc.ports:
            for e in port.endpoints:
                found.setdefault(plan().pod(e.pod).host_name, set()).add(svc.key)
    return found


def backends(key: str) -> set[str]:
    """The hostnames of the pods behind Service ``key``."""
    svc = plan().service(key)
    return {plan().pod(e.pod).host_name for p in svc.ports for e in p.endpoints}


def answered_by(reply: Reply) -> str:
    """The Service whose pod answered (one of them when a pod backs several), or what the
    controller answered itself."""
    if reply.error:
        return f"error {reply.error}"
    if reply.status == 404 and reply.pod is None:
        return DEFAULT_BACKEND
    if reply.status == 503 and reply.pod is None:
        return NO_ENDPOINTS
    services = service_of_pod().get(reply.pod or "", set())
    return " or ".join(sorted(services)) or f"status {reply.status}, no known pod"


def assert_answers(reply: Reply, expected: str) -> None:
    """``expected`` is a Service key (one of its pods answered, whatever it answered: the
    test server says 404 for a path it has no handler for), DEFAULT_BACKEND or NO_ENDPOINTS."""
    if expected == DEFAULT_BACKEND:
        assert reply.status == 404 and reply.pod is None, reply
        return
    if expected == NO_ENDPOINTS:
        assert reply.status == 503 and reply.pod is None, reply
        return
    assert reply.error is None and reply.status is not None and reply.status < 500, reply
    assert reply.pod in backends(expected), (
        f"{reply.request}: expected a pod of {expected} {sorted(backends(expected))}, "
        f"answered by {answered_by(reply)}: {reply}")


# -- the routes the plan holds ------------------------------------------------------------------
def tls_hosts() -> list[str]:
    """Every host the controller serves with TLS (a server with a certificate)."""
    return sorted(s.host for s in plan().ingress_servers if s.certificate and s.host != "_")


def concrete(host: str) -> str:
    """A name the server matches: a wildcard's one label filled in; ``_``: a name no rule
    names."""
    if host == "_":
        return "any-host.podnet.test"
    return "x" + host[1:] if host.startswith("*.") else host


def scheme_of(host: str) -> str:
    return "https" if host in tls_hosts() else "http"


def oracle() -> list[tuple[Request, str]]:
    """A request per location of every server the plan gives the controller, at the
    location's own path, and what must answer it: the Exact location of that path when the
    server has one (Exact beats Prefix), else the location's Service, or the default backend."""
    rows = []
    for server in plan().ingress_servers:
        for loc in server.locations:
            winner = next((o for o in server.locations
                           if o.path == loc.path and o.path_type == "Exact"), loc)
            expected = winner.service or DEFAULT_BACKEND
            if winner.service and not backends(winner.service):
                expected = NO_ENDPOINTS
            rows.append((Request(scheme_of(server.host), concrete(server.host), loc.path),
                         expected))
    return list(dict.fromkeys(rows))


def routed_ingresses() -> set[str]:
    return {loc.ingress for s in plan().ingress_servers for loc in s.locations if loc.ingress}


def needs(*ingresses: str) -> None:
    """The hand-written table rows below exercise the demo's Ingresses: skip without them."""
    missing = sorted(set(ingresses) - routed_ingresses())
    if missing:
        import pytest

        pytest.skip(f"the manifests have no Ingress {', '.join(missing)} (the demo's, "
                    "inventory/lab/manifests/ingress*.yaml)")


# -- balancing and outages ----------------------------------------------------------------------
def spread(host: str, path: str, service: str, count: int = 200, scheme: str = "https"
           ) -> Counter[str]:
    """``count`` requests on new connections; the pods that answered, all of ``service``'s."""
    replies = send([Request(scheme, host, path)] * count)
    counts = Counter(r.pod or answered_by(r) for r in replies)
    want = backends(service)
    assert set(counts) == want, (counts, want)
    expected = count / len(want)
    chi2 = sum((n - expected) ** 2 / expected for n in counts.values())
    limit = CHI_SQUARE_LIMIT[len(want) - 1]
    print(f"{count} requests to {host}{path} through the Ingress: {dict(counts)}; "
          f"chi-square {chi2:.2f} (limit {limit})")
    assert chi2 < limit, (counts, chi2)
    return counts


LOAD = r'''
import http.client, json, os, socket, ssl, sys, time
job = json.loads(sys.argv[1])
ctx = ssl.create_default_context(cadata=job["ca"])
end = time.monotonic() + job["seconds"]
out = []
while time.monotonic() < end and not os.path.exists(job["stop_file"]):
    start = time.monotonic()
    wall = time.time()
    ok = False
    try:
        sock = socket.create_connection((job["address"], job["https"]), timeout=job["timeout"])
        sock = ctx.wrap_socket(sock, server_hostname=job["host"])
        conn = http.client.HTTPConnection(job["host"], job["https"], timeout=job["timeout"])
        conn.sock = sock
        conn.request("GET", job["path"], headers={"Host": job["host"], "Connection": "close"})
        ok = conn.getresponse().status == 200
        conn.close()
    except Exception:
        pass
    out.append([round(wall, 3), ok])
    time.sleep(max(0.0, job["interval"] - (time.monotonic() - start)))
print(json.dumps(out))
'''


STOP_FILE = "/run/podnet-verify-ingress-load.stop"  # on the client, root's


def load(host: str, path: str, seconds: float, interval: float = 0.1) -> list[tuple[float, bool]]:
    """A request every ``interval`` s for ``seconds`` s, or until stop_load(), over HTTPS (a
    new connection each): [(when it was sent, the client's time.time(), succeeded)]. The lab's
    hosts share this machine's clock; real VMs keep theirs within milliseconds (NTP)."""
    address, _, https_port = entry()
    job = {"address": address, "https": https_port, "ca": ca_pem(), "host": host,
           "path": path, "seconds": seconds, "interval": interval, "timeout": 2.0,
           "stop_file": STOP_FILE}
    client = outside_client().name
    assert run(client, "rm", "-f", STOP_FILE).rc == 0
    done = run(client, "python3", "-c", LOAD, json.dumps(job))
    assert done.rc == 0, done
    return [(float(t), bool(ok)) for t, ok in json.loads(done.stdout)]


def stop_load() -> None:
    """Ends a load() running on the client after its current request."""
    assert run(outside_client().name, "touch", STOP_FILE).rc == 0


def outages(samples: list[tuple[float, bool]]) -> list[float]:
    """The lengths of the runs of failed requests (first failure to the next success)."""
    found, start = [], None
    for t, ok in samples:
        if not ok and start is None:
            start = t
        elif ok and start is not None:
            found.append(t - start)
            start = None
    if start is not None:
        found.append(samples[-1][0] - start)
    return found


def controller_pods() -> list[str]:
    return sorted(e.pod for p in controller().ports[:1] for e in p.endpoints)


def status_file(key: str) -> str:
    """Where a controller pod's podnet-ingress says what it applied (and what nginx refused)."""
    namespace, name = key.split("/", 1)
    return f"{plan().paths.pod_dir(kubelet.pod_id(namespace, name))}/ingress-status.json"


def status(node: str, path: str) -> dict[str, Any]:
    got = run(node, "cat", path)
    assert got.rc == 0, got
    return dict(json.loads(got.stdout))


def upstream_ips(key: str) -> set[str]:
    """The endpoint addresses in the nginx.conf controller pod ``key`` runs."""
    namespace, name = key.split("/", 1)
    conf = run(plan().pod(key).node, "cat",
               f"{plan().paths.pod_dir(kubelet.pod_id(namespace, name))}/nginx.conf")
    assert conf.rc == 0, conf
    return set(re.findall(r"^\s*server\s+(\d+\.\d+\.\d+\.\d+):\d+", conf.stdout, re.M))


def through_pod(key: str, host: str, path: str) -> Reply:
    """One HTTPS request from the pod's node straight to controller pod ``key``."""
    pod = plan().pod(key)
    return send([Request("https", host, path)], via=(pod.node, observed()[key]["ip"]))[0]



# -- certificates -------------------------------------------------------------------------------
def secret_of(host: str) -> str:
    """The ``namespace/name`` of the Secret the controller serves ``host`` with."""
    return next(str(s.certificate) for s in plan().ingress_servers if s.host == host)


def certificate_sans(secret: str) -> list[str]:
    """The DNS names of the certificate in kubernetes.io/tls Secret ``secret``."""
    return list(plan().tls_secret(secret).names)
