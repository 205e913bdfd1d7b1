"""The plan as readable tables (``python -m podnet plan``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from podnet import dns, kubeproxy, loadbalancer
from podnet.plan import INGRESS_SERVICE, Plan, ServicePlan


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [f"{title} ({len(rows)})"]
    for n, row in enumerate(cells):
        padded = (c.ljust(w) for c, w in zip(row, widths, strict=True))
        lines.append(("  " + "  ".join(padded)).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ports(svc: ServicePlan) -> str:
    out = []
    for p in svc.ports:
        text = f"{p.port}/{p.protocol}->{p.target_port}"
        if p.node_port:
            text += f" (node {p.node_port})"
        out.append(f"{p.name}:{text}" if p.name else text)
    return ", ".join(out)


def _load_balancers(plan: Plan) -> str:
    lb = loadbalancer.config(plan)
    if lb["mode"] == "cloud":
        by = f"[cloud mode: {', '.join(lb['balancers']) or 'no lb host'} answers for them]"
    else:
        by = "[l2 mode: one node at a time answers for each]"
    rows = []
    for a in lb["addresses"]:
        check = f":{a['check']['port']}{a['check']['path']}"
        who = (f"nodes passing {check}" if lb["mode"] == "cloud"
               else " > ".join(a["ranking"]) + f" (passing {check}, VRRP id {a['vrid']})")
        svc = plan.service(a["service"])
        rows.append((a["service"], json.dumps(loadbalancer.ingress(svc)),
                     ", ".join(f"{p['port']}/{p['protocol']}" for p in a["ports"]),
                     a["policy"], who))
    return table(f"LoadBalancers {by}",
                 ("service", "status.loadBalancer.ingress", "ports", "policy", "taken by"), rows)


def _ingress_routes(plan: Plan) -> str:
    """Each server's locations as nginx will match them: "_" is every other host; a "/"
    without a service is the built-in default backend (404, 200 on /healthz)."""
    rows = []
    for server in plan.ingress_servers:
        tls = (f"{server.certificate} (308 from http)" if server.certificate
               else None)
        for loc in server.locations:
            rows.append((server.host, loc.path, loc.path_type,
                         f"{loc.service}:{loc.port}" if loc.service else "404 (default backend)",
                         loc.ingress or "built in", tls))
    controller = next((s for s in plan.services if s.key == INGRESS_SERVICE), None)
    where = ""
    if controller is not None:
        where = (f" (class nginx, reached at {controller.lb_ip} ports 80 and 443)"
                 if controller.lb_ip else f" (class nginx, reached at NodePorts "
                 f"{_ports(controller)})")
    return table(f"Ingress routes{where}",
                 ("host", "path", "match", "backend", "ingress", "tls"), rows)


def render(plan: Plan) -> str:
    s = plan.settings
    parts = [
        f"cluster {s.cluster_name}: pods {s.cluster_cidr} (/{s.node_cidr_prefix} per node), "
        f"services {s.service_cidr}, DNS {s.dns_service_ip} ({s.cluster_domain}), NodePorts "
        f"{s.nodeport_range[0]}-{s.nodeport_range[1]}, LB pool {s.lb_pool or '-'}, "
        f"{s.backend} routing, {s.proxy_mode} proxy",
        table("Nodes", ("node", "address", "pod CIDR", "gateway", "labels"),
              [(n.name, n.address, n.pod_cidr, n.gateway,
                ",".join(f"{k}={v}" for k, v in n.labels.items()
                         if not k.startswith("kubernetes.io/"))) for n in plan.nodes]),
        table("Pods", ("namespace", "pod", "node", "runs", "ports", "owner"),
              [(p.namespace, p.name, p.node,
                "+".join(c.workload["kind"] for c in p.containers),
                ",".join(f"{pp.name or ''}{':' if pp.name else ''}{pp.port}/{pp.protocol}"
                         for c in p.containers for pp in c.ports), p.owner)
               for p in plan.pods]),
        table("Services", ("namespace", "service", "type", "cluster IP", "LB IP", "ports",
                           "endpoints-to-be"),
              [(v.namespace, v.name, v.type + (" (headless)" if v.headless else ""),
                v.cluster_ip or v.external_name, v.lb_ip, _ports(v),
                "; ".join(f"{e.pod.split('/')[1]}@{e.node}:{e.port}"
                          for e in (v.ports[0].endpoints if v.ports else []))
                or ("none" if v.type != "ExternalName" else "-"))
               for v in plan.services]),
        table("Service options", ("service", "affinity", "external", "internal",
                                  "source ranges", "health check port", "chain (first port)"),
              [(v.key, f"ClientIP {v.session_affinity_timeout}s"
                if v.session_affinity_timeout else "None",
                v.external_traffic_policy, v.internal_traffic_policy,
                ",".join(v.load_balancer_source_ranges) or None, v.health_check_node_port,
                kubeproxy.chains(v.namespace, v.name, v.ports[0].name, v.ports[0].protocol)["svc"]
                if v.ports else None)
               for v in plan.services if v.type != "ExternalName"]),
        _load_balancers(plan),
        table("DNS names", ("name", "type", "ttl", "data"),
              [(r.name, r.type, r.ttl, r.data if r.data is not None else f"<IP of {r.pod}>")
               for r in dns.records(plan)]),
        _ingress_routes(plan),
        table("Ignored Ingresses", ("ingress", "class", "why"),
              [(i.ingress, i.class_name, i.reason) for i in plan.ignored_ingresses]),
        table("Ingress certificates", ("secret", "hosts served with it", "names", "expires",
                                       "issuer"),
              [(t.ref + (" (default)" if t.ref == plan.settings.ingress_default_certificate
                         else ""),
                ", ".join(t.hosts) or None, ", ".join(t.names) or None,
                t.not_after[:16].replace("T", " "), t.issuer) for t in plan.tls_secrets]),
    ]
    if plan.warnings:
        parts.append(f"Warnings ({len(plan.warnings)})\n" +
                     "\n".join(f"  {w}" for w in plan.warnings))
    return "\n\n".join(parts) + "\n"
