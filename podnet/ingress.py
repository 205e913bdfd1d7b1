"""The Ingress controller's input: what the ingress_nginx role writes to paths.ingress_input on
every node, identical on all of them, and what podnet-ingress in each controller pod renders
nginx.conf from (INPUT JSON version 1, docs/ingress.md).

The model decided the servers and their locations (podnet/model.py, as ingress-nginx's
createServers); here each location's Service port becomes an upstream whose endpoints are the
pods the Service selects, with their observed IPs and the targetPort resolved to a number, as
ingress-nginx balances over endpoints and not over the ClusterIP. Readiness is left to the
controller: it leaves out the pods listed in paths.unready_pods at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from podnet.plan import Plan

VERSION = 1
CLASS = "nginx"
HTTP_PORT = 80
HTTPS_PORT = 443
HEALTH_PORT = 10254


def upstream_name(service: str, port: int) -> str:
    """ingress-nginx's upstream name: <namespace>-<service>-<port>."""
    namespace, _, name = service.partition("/")
    return f"{namespace}-{name}-{port}"


def upstream(plan: Plan, observed: Mapping[str, str], service: str, port: int
             ) -> dict[str, Any]:
    """A Service port's upstream: every selected pod that has an observed IP (a pod that is
    not running yet has none, and nothing could reach it)."""
    svc = plan.service(service)
    sp = next(p for p in svc.ports if p.port == port and p.protocol == "TCP")
    return {"service": service, "port": port,
            "endpoints": [{"pod": e.pod, "ip": observed[e.pod], "port": e.port}
                          for e in sp.endpoints if e.pod in observed]}


def config(plan: Plan, observed: Mapping[str, str]) -> dict[str, Any]:
    """The INPUT JSON from the plan and the pods' observed IPs (ns/name -> IP)."""
    upstreams: dict[str, dict[str, Any]] = {}
    servers = []
    for server in plan.ingress_servers:
        locations = []
        for loc in server.locations:
            name = None
            if loc.service is not None and loc.port is not None:
                name = upstream_name(loc.service, loc.port)
                if name not in upstreams:
                    upstreams[name] = upstream(plan, observed, loc.service, loc.port)
            locations.append({"path": loc.path, "type": loc.path_type, "upstream": name,
                              "ingress": loc.ingress})
        servers.append({"host": server.host, "certificate": server.certificate,
                        "ssl_redirect": server.certificate is not None,
                        "locations": locations})
    default = plan.settings.ingress_default_certificate or None
    return {
        "version": VERSION,
        "class": CLASS,
        "http_port": HTTP_PORT,
        "https_port": HTTPS_PORT,
        "health_port": HEALTH_PORT,
        "certificates": {t.ref: {"cert": t.cert, "key": t.key} for t in plan.tls_secrets},
        "default_certificate": default,
        "servers": servers,
        "upstreams": dict(sorted(upstreams.items())),
    }
