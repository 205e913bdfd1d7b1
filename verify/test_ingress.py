"""Ingress: the controller's pods route requests from outside the cluster by the Ingress spec
(hosts, paths, default backends), terminate TLS with each host's certificate, and pass the
client's address on. Every request goes from the outside client to the controller's
LoadBalancer address (client -> LB :80/:443 -> kube-proxy -> controller pod -> backend pod);
the pod that answered tells which Service the Ingress picked (ingresschecks.py).
test_ingress_lifecycle.py changes the lab: readiness, a controller pod stopped, an Ingress added
under load, a bad configuration refused."""

from __future__ import annotations

from functools import cache

import ingresschecks as ic
import pytest
from conftest import params, plan

pytestmark = pytest.mark.principle("Ingress")

D = ic.DEFAULT_BACKEND
DEMO, PATHS, WILD, MERGE = "demo/demo", "demo/paths", "demo/wild", "demo/merge"

# (scheme, host, path, the Service whose pod answers, the Ingresses the row exercises):
# the Ingress spec's own examples on the demo's rules (inventory/lab/manifests/ingress*.yaml)
TABLE = [
    # Prefix matches by path element: /aaa/bbb matches /aaa/bbb, /aaa/bbb/ and /aaa/bbb/ccc/,
    # not /aaa/bbbxyz (that is /aaa's); Exact beats Prefix on its own path only
    ("https", "paths.example.test", "/aaa/bbb", "demo/whoami", PATHS),
    ("https", "paths.example.test", "/aaa/bbb/", "demo/whoami", PATHS),
    ("https", "paths.example.test", "/aaa/bbb/ccc/", "demo/whoami", PATHS),
    ("https", "paths.example.test", "/aaa/bbb/ccc", "demo/echo", PATHS),
    ("https", "paths.example.test", "/aaa/bbbxyz", "demo/api", PATHS),
    ("https", "paths.example.test", "/aaa", "demo/api", PATHS),
    # ImplementationSpecific is a plain string prefix here (docs/ingress.md)
    ("https", "paths.example.test", "/foo", "demo/web", PATHS),
    ("https", "paths.example.test", "/foobar", "demo/web", PATHS),
    # no rule, and this Ingress has no defaultBackend: the controller's default backend
    ("https", "paths.example.test", "/fo", D, PATHS),
    # a Service without a ready endpoint (its selector matches no pod): 503
    ("https", "paths.example.test", "/nothing", ic.NO_ENDPOINTS, PATHS),
    # a wildcard host matches one label
    ("https", "x.apps.example.test", "/", "demo/whoami", WILD),
    ("https", "x.apps.example.test", "/any/path", "demo/whoami", WILD),
    # two Ingresses add rules to one host: demo's / and /healthz (Exact), merge's /whoami
    ("https", "web.example.test", "/", "demo/web", MERGE),
    ("https", "web.example.test", "/healthz", "demo/echo", MERGE),
    ("https", "web.example.test", "/healthz/", "demo/web", MERGE),
    ("https", "web.example.test", "/whoami", "demo/whoami", MERGE),
    ("https", "api.example.test", "/v1", "demo/api", DEMO),
    ("https", "api.example.test", "/v1/x", "demo/api", DEMO),
    # demo's spec.defaultBackend answers what api.example.test's rules do not
    ("https", "api.example.test", "/v2", "demo/web", DEMO),
]

# names no Ingress of the class serves: the default server, with the default certificate
UNKNOWN = ["a.b.apps.example.test", "apps.example.test", "ignored.example.test",
           "nobody.podnet.test"]


@cache
def table_replies() -> dict[str, ic.Reply]:
    """Every row of TABLE, the plan's routes and the unknown names, in one batch."""
    requests = [ic.Request(s, h, p) for s, h, p, _, _ in TABLE]
    requests += [r for r, _ in ic.oracle()]
    requests += [ic.Request("https", h, "/", check_hostname=False) for h in UNKNOWN]
    requests += [ic.Request("http", h, "/", check_hostname=False) for h in UNKNOWN]
    unique = list(dict.fromkeys(requests))
    return {str(r): reply for r, reply in zip(unique, ic.send(unique), strict=True)}


@pytest.mark.quick
@pytest.mark.parametrize(("scheme", "host", "path", "service", "ingress"), TABLE,
                         ids=[f"{s}://{h}{p}" for s, h, p, _, _ in TABLE])
def test_request_reaches_the_service_the_spec_picks(scheme: str, host: str, path: str,
                                                    service: str, ingress: str) -> None:
    ic.needs(ingress)
    ic.assert_answers(table_replies()[f"{scheme}://{host}{path}"], service)


@pytest.mark.parametrize("row", params(
    [pytest.param(row, id=str(row[0])) for row in ic.oracle()],
    "Ingress (networking.k8s.io/v1) of the controller's class with a rule"))
def test_every_planned_route_answers_from_its_service(row: tuple[ic.Request, str]) -> None:
    request, service = row
    ic.assert_answers(table_replies()[str(request)], service)


@pytest.mark.parametrize("host", UNKNOWN)
def test_unknown_host_gets_the_default_certificate_and_backend(host: str) -> None:
    ic.needs(DEMO)
    default = plan().settings.ingress_default_certificate
    reply = table_replies()[f"https://{host}/"]
    assert reply.status == 404 and reply.pod is None, reply
    # the chain verified against the demo CA; the name is the default certificate's
    assert reply.sans is not None and host not in reply.sans, reply
    if default:
        assert reply.sans == ic.certificate_sans(default), reply
    assert table_replies()[f"http://{host}/"].status == 404, table_replies()[f"http://{host}/"]


def test_default_backend_answers_200_on_healthz() -> None:
    reply = ic.send([ic.Request("http", "nobody.podnet.test", "/healthz")])[0]
    assert reply.status == 200 and reply.pod is None, reply


@pytest.mark.parametrize("host", params(ic.tls_hosts(), "Ingress with spec.tls"))
def test_tls_host_presents_its_certificate_through_sni(host: str) -> None:
    """check_hostname on: the handshake itself proves the chain to the demo CA and that the
    certificate names the host."""
    reply = ic.send([ic.Request("https", ic.concrete(host), "/")])[0]
    assert reply.error is None and reply.sans, reply
    assert reply.sans == ic.certificate_sans(ic.secret_of(host)), reply


@pytest.mark.parametrize("host", params(ic.tls_hosts(), "Ingress with spec.tls"))
def test_http_on_a_tls_host_redirects_with_308(host: str) -> None:
    name = ic.concrete(host)
    reply = ic.send([ic.Request("http", name, "/some/path?q=1")])[0]
    assert reply.status == 308, reply
    assert reply.headers.get("location") == f"https://{name}/some/path?q=1", reply


def test_backend_sees_the_client_address_scheme_and_host() -> None:
    """ingress-nginx's headers: X-Forwarded-For and X-Real-IP are the client's address (the
    LoadBalancer Service keeps it: externalTrafficPolicy Local), X-Forwarded-Proto the
    scheme the client used, Host the name it asked for."""
    ic.needs(WILD)
    host = "x.apps.example.test"
    reply = ic.send([ic.Request("https", host, "/headers")])[0]
    assert reply.status == 200, reply
    seen = reply.header_lines()
    client = ic.client_address()
    assert seen.get("host") == host, seen
    assert seen.get("x-forwarded-for") == client, seen
    assert seen.get("x-real-ip") == client, seen
    assert seen.get("x-forwarded-proto") == "https", seen
    assert seen.get("x-forwarded-host") == host, seen
    assert seen.get("x-forwarded-port") == str(ic.entry()[2]), seen
    assert len(seen.get("x-request-id", "")) == 32, seen


def test_requests_are_balanced_over_the_service_endpoints() -> None:
    ic.needs(WILD)
    ic.spread("x.apps.example.test", "/", "demo/whoami")
