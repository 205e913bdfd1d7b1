"""The cluster as one SVG picture, for reports/verify.html: the hosts on the underlay with their
addresses, each node's cni0 and pod CIDR, its pods with the addresses the run observed, the
routes each node holds to the other nodes' pods, and the Services (ClusterIP, NodePort,
LoadBalancer address) with a line to every endpoint pod; the cluster DNS and the Ingress
controller's Services in their own colours.

Drawn from a verify run's state file (podnet/verifyreport.py): the plan, and what the hosts said
at the end of the run. No layout engine: boxes in rows, so it renders the same everywhere.
"""

from __future__ import annotations

import ipaddress
import re
from html import escape
from typing import Any

from podnet.plan import Plan

WIDTH = 1360
MARGIN = 20
GAP = 16
SERVICE_W, SERVICE_H = 212, 62
HOST_W, HOST_H = 260, 46
POD_H = 18
COLOURS = {"service": "#2f6fb3", "dns": "#2e8b57", "ingress": "#8a3ffc", "node": "#f4f6f8",
           "pod": "#ffffff", "host": "#fff7e6", "route": "#c05621", "line": "#9aa5b1"}


def _text(x: float, y: float, text: str, size: int = 11, weight: str = "normal",
          anchor: str = "start", fill: str = "#1f2933") -> str:
    return (f'<text x="{x:.0f}" y="{y:.0f}" font-size="{size}" font-weight="{weight}" '
            f'text-anchor="{anchor}" fill="{fill}">{escape(text)}</text>')


def _box(x: float, y: float, w: float, h: float, fill: str, stroke: str = "#52606d",
         extra: str = "") -> str:
    return (f'<rect x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" height="{h:.0f}" rx="6" '
            f'fill="{fill}" stroke="{stroke}"{extra}/>')


def pod_routes(routes: list[str], pod_cidr: str, bridge: str = "cni0") -> list[str]:
    """The lines of ``ip route`` that carry pod traffic to other nodes: routes into the cluster
    network's blocks that go via a gateway or a tunnel device (not the node's own bridge, nor
    the veth of a pod on it)."""
    try:
        cluster = ipaddress.ip_network(pod_cidr, strict=False)
    except ValueError:
        return []
    out = []
    for line in routes:
        prefix = line.split()[0] if line.split() else ""
        try:
            network = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            continue
        inside = network.version == cluster.version and \
            network.subnet_of(cluster)  # type: ignore[arg-type]
        if inside and f" dev {bridge}" not in line and "veth" not in line:
            out.append(re.sub(r"\s+(proto|scope|metric|onlink)\s+\S+", "", line).strip())
    return out


def svg(state: dict[str, Any]) -> str:
    plan = Plan.from_data(state["plan"])
    pods: dict[str, dict[str, str]] = state.get("pods", {})
    nodes_state: dict[str, dict[str, Any]] = state.get("nodes", {})
    node_names = {n.name for n in plan.nodes}
    address_of = {n.address: n.name for n in plan.nodes}
    parts: list[str] = []  # drawn first; then the Service lines; then ``front`` (the pods)
    front: list[str] = []
    pod_anchor: dict[str, tuple[float, float]] = {}
    y = MARGIN

    # outside hosts
    others = [h for h in plan.hosts if h.name not in node_names]
    x: float = MARGIN
    for host in others:
        parts.append(_box(x, y, HOST_W, HOST_H, COLOURS["host"]))
        parts.append(_text(x + 10, y + 19, host.name, 13, "bold"))
        parts.append(_text(x + 10, y + 36, f"{host.address} · {', '.join(host.groups)}", 10))
        x += HOST_W + GAP
    hosts_bottom = y + HOST_H
    y += HOST_H + 34

    # Services, in rows
    dns = plan.dns_service
    ingress = plan.ingress_service if plan.ingress_routes else None
    services = [s for s in plan.services if s.cluster_ip or s.lb_ip]
    per_row = max(1, (WIDTH - 2 * MARGIN + GAP) // (SERVICE_W + GAP))
    service_anchor = {}
    for i, service in enumerate(services):
        col, row = i % per_row, i // per_row
        sx = MARGIN + col * (SERVICE_W + GAP)
        sy = y + row * (SERVICE_H + GAP)
        kind = "dns" if service is dns else "ingress" if service is ingress else "service"
        colour = COLOURS[kind]
        parts.append(_box(sx, sy, SERVICE_W, SERVICE_H, "#ffffff", colour,
                          ' stroke-width="2"'))
        parts.append(_text(sx + 8, sy + 16, f"{service.namespace}/{service.name}", 11, "bold",
                           fill=colour))
        ports = ",".join(f"{p.port}/{p.protocol.lower()}" for p in service.ports)
        parts.append(_text(sx + 8, sy + 31, f"{service.cluster_ip or 'headless'} {ports}", 10))
        node_ports = ",".join(str(p.node_port) for p in service.ports if p.node_port)
        parts.append(_text(sx + 8, sy + 45, f"NodePort {node_ports}" if node_ports
                           else service.type, 10))
        parts.append(_text(sx + 8, sy + 58, (f"LB {service.lb_ip} · " if service.lb_ip else "")
                           + f"{len(service.pods)} pod(s)", 10 if service.lb_ip else 9,
                           fill="#1f2933" if service.lb_ip else "#616e7c"))
        service_anchor[f"{service.namespace}/{service.name}"] = (sx + SERVICE_W / 2,
                                                                 sy + SERVICE_H, colour)
    rows = (len(services) + per_row - 1) // per_row
    y += rows * (SERVICE_H + GAP) + 40

    # the underlay
    underlay_y = y
    parts.append(f'<line x1="{MARGIN}" y1="{underlay_y}" x2="{WIDTH - MARGIN}" '
                 f'y2="{underlay_y}" stroke="#323f4b" stroke-width="3"/>')
    parts.append(_text(WIDTH - MARGIN, underlay_y - 6, "underlay", 11, "bold", "end"))
    for i in range(len(others)):
        hx = MARGIN + i * (HOST_W + GAP) + HOST_W / 2
        parts.append(f'<line x1="{hx:.0f}" y1="{hosts_bottom}" x2="{hx:.0f}" '
                     f'y2="{underlay_y}" stroke="#323f4b" stroke-dasharray="4 3"/>')
    y += 30

    # nodes with cni0, their pods and their routes
    count = max(1, len(plan.nodes))
    node_w = (WIDTH - 2 * MARGIN - (count - 1) * GAP) / count
    cluster_cidr = str(plan.settings.cluster_cidr)
    heights = []
    for node in plan.nodes:
        mine = [p for p in plan.pods if pods.get(p.key, {}).get("node", p.node) == node.name]
        routes = pod_routes(nodes_state.get(node.name, {}).get("routes", []), cluster_cidr,
                            plan.paths.cni_bridge)
        heights.append(96 + len(routes) * 14 + len(mine) * (POD_H + 4))
    node_h = max(heights, default=120)
    for i, node in enumerate(plan.nodes):
        nx = MARGIN + i * (node_w + GAP)
        parts.append(f'<line x1="{nx + node_w / 2:.0f}" y1="{underlay_y}" '
                     f'x2="{nx + node_w / 2:.0f}" y2="{y}" stroke="#323f4b"/>')
        parts.append(_box(nx, y, node_w, node_h, COLOURS["node"], extra=' stroke-width="2"'))
        parts.append(_text(nx + 10, y + 20, node.name, 14, "bold"))
        parts.append(_text(nx + 10, y + 36, f"underlay {node.address}", 11))
        parts.append(_box(nx + 8, y + 44, node_w - 16, 22, "#e3f2fd", "#2f6fb3"))
        parts.append(_text(nx + 14, y + 59, f"{plan.paths.cni_bridge} {node.gateway} · pod CIDR "
                           f"{node.pod_cidr}", 10))
        ry = y + 82
        for route in pod_routes(nodes_state.get(node.name, {}).get("routes", []),
                                cluster_cidr, plan.paths.cni_bridge):
            via = re.search(r"via (\S+)", route)
            name = address_of.get(via.group(1)) if via else None
            parts.append(_text(nx + 10, ry, f"→ {route}" + (f" ({name})" if name else ""), 10,
                               fill=COLOURS["route"]))
            ry += 14
        py = ry + 2
        for pod in plan.pods:
            seen = pods.get(pod.key, {})
            if seen.get("node", pod.node) != node.name:
                continue
            ip = seen.get("ip") or "not running"
            front.append(_box(nx + 8, py, node_w - 16, POD_H, COLOURS["pod"], "#9aa5b1"))
            label = pod.key if len(pod.key) < 40 else pod.key[:37] + "…"
            front.append(_text(nx + 14, py + 13, label, 10))
            front.append(_text(nx + node_w - 14, py + 13, ip, 10, "bold", "end"))
            pod_anchor[pod.key] = (nx + node_w / 2, py)
            py += POD_H + 4
    bottom = y + node_h

    # Service -> endpoint pods
    lines = []
    for service in services:
        ax, ay, colour = service_anchor[f"{service.namespace}/{service.name}"]
        for key in service.pods:
            if key in pod_anchor:
                px, top = pod_anchor[key]
                lines.append(f'<path d="M{ax:.0f},{ay:.0f} C{ax:.0f},{ay + 60:.0f} '
                             f'{px:.0f},{top - 80:.0f} {px:.0f},{top + 2:.0f}" fill="none" '
                             f'stroke="{colour}" stroke-opacity="0.45"/>')
    legend_y = bottom + 24
    legend = [
        _text(MARGIN, legend_y, "Services → their pods:", 11, "bold"),
        _box(MARGIN + 150, legend_y - 10, 12, 12, COLOURS["service"]),
        _text(MARGIN + 168, legend_y, "Service", 11),
        _box(MARGIN + 230, legend_y - 10, 12, 12, COLOURS["dns"]),
        _text(MARGIN + 248, legend_y, "cluster DNS", 11),
        _box(MARGIN + 340, legend_y - 10, 12, 12, COLOURS["ingress"]),
        _text(MARGIN + 358, legend_y, "Ingress controller", 11),
        _text(MARGIN + 500, legend_y, "→ route to another node's pods", 11,
              fill=COLOURS["route"]),
    ]
    height = legend_y + 16
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, sans-serif" '
            f'role="img" aria-label="the cluster">'
            + "".join(parts) + "".join(lines) + "".join(front) + "".join(legend) + "</svg>")
