"""The plan as readable tables (``python -m podnet plan``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from podnet import dns, kubeproxy, loadbalancer
from podnet.plan import Plan, ServicePlan


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
        table("Ingress routes", ("ingress", "host", "path", "match", "service", "port", "tls"),
              [(r.ingress, r.host or "*", r.path, r.path_type, r.service, r.service_port,
                r.secret_name or ("yes" if r.tls else "no")) for r in plan.ingress_routes]),
    ]
    if plan.warnings:
        parts.append(f"Warnings ({len(plan.warnings)})\n" +
                     "\n".join(f"  {w}" for w in plan.warnings))
    return "\n\n".join(parts) + "\n"
