"""What a verify run showed, by principle: the terminal table, the JUnit properties each test
carries, and reports/verify.html (templates/verify.html.j2, the cluster picture of
podnet/picture.py and the packet-path walkthroughs of podnet/trace.py).

A run leaves two files the HTML is rendered from, so ``make report`` renders it again: the JUnit
XML pytest writes (every test's outcome, time and properties) and ``<name>.state.json`` next to
it (the plan, the pods' addresses, each node's routes and the walkthroughs, taken at the end of
the run).
"""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from podnet.principles import BY_NAME, TABLE

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"  # the design card's folder
EVIDENCE_COMMANDS = 8  # the last commands of a test kept as its evidence
EVIDENCE_CHARS = 800  # of each command's output
OUTCOMES = ("passed", "failed", "skipped")
NO_PRINCIPLE = "(no principle)"


@dataclass
class Evidence:
    host: str
    command: str
    rc: int
    output: str

    def text(self) -> str:
        return f"on {self.host} (rc {self.rc}): $ {self.command}\n{self.output}".rstrip()


def trimmed(text: str, limit: int = EVIDENCE_CHARS) -> str:
    """Output cut to ``limit`` characters: its start and its end, which say the most."""
    text = text.strip()
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters left out ...]\n{text[-half:]}"


def properties(principle: str, evidence: Sequence[Evidence]) -> list[tuple[str, str]]:
    """A test case's JUnit properties: its principle, the hosts it ran commands on and its
    evidence (the last commands with their trimmed output)."""
    hosts = list(dict.fromkeys(e.host for e in evidence))
    out = [("principle", principle), ("hosts", ",".join(hosts))]
    out += [("evidence", Evidence(e.host, e.command, e.rc, trimmed(e.output)).text())
            for e in evidence[-EVIDENCE_COMMANDS:]]
    return out


@dataclass
class Case:
    name: str
    classname: str
    principle: str
    outcome: str  # passed | failed | skipped
    seconds: float
    hosts: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    message: str = ""


def read_junit(path: Path) -> list[Case]:
    """The test cases of a JUnit XML file (xunit1, with podnet's properties). A test that
    failed and then erred in its teardown is two test cases there, the first without
    properties (pytest's junitxml): they are one test here."""
    root = ET.parse(path).getroot()  # noqa: S314 - see the import
    cases: list[Case] = []
    seen: dict[tuple[str, str], Case] = {}
    for case in root.iter("testcase"):
        props = [(p.get("name", ""), p.get("value", "")) for p in case.iter("property")]
        values: dict[str, list[str]] = {}
        for name, value in props:
            values.setdefault(name, []).append(value)
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = "\n".join(x for x in (found.get("message", ""), found.text or "") if x)
                break
        hosts = [h for h in (values.get("hosts") or [""])[0].split(",") if h]
        one = Case(case.get("name", ""), case.get("classname", ""),
                   (values.get("principle") or [NO_PRINCIPLE])[0], outcome,
                   float(case.get("time", "0") or 0), hosts, values.get("evidence", []),
                   message)
        key = (one.classname, one.name)
        if key not in seen:
            seen[key] = one
            cases.append(one)
            continue
        first = seen[key]
        if first.principle == NO_PRINCIPLE:
            first.principle = one.principle
        first.outcome = "failed" if "failed" in (first.outcome, one.outcome) else first.outcome
        first.seconds += one.seconds
        first.hosts = list(dict.fromkeys(first.hosts + one.hosts))
        first.evidence += one.evidence
        first.message = "\n\n".join(m for m in (first.message, one.message) if m)
    return cases


@dataclass
class Row:
    principle: str
    source: str
    proves: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0

    @property
    def ran(self) -> bool:
        return bool(self.passed or self.failed or self.skipped)

    @property
    def status(self) -> str:
        if self.failed:
            return "failed"
        if self.passed:
            return "passed"
        return "skipped" if self.skipped else "not run"


def summary(cases: Iterable[Case]) -> list[Row]:
    """One row per principle of the table (in its order), then any other principle seen."""
    rows = {p.name: Row(p.name, p.source, p.proves) for p in TABLE}
    for case in cases:
        row = rows.setdefault(case.principle, Row(case.principle, "?", ""))
        setattr(row, case.outcome, getattr(row, case.outcome) + 1)
        row.seconds += case.seconds
    return list(rows.values())


def table(rows: Sequence[Row]) -> list[str]:
    """The terminal table: a line per principle with its counts and time."""
    width = max(len(r.principle) for r in rows)
    lines = [f"{'principle':<{width}}  {'result':<8} {'passed':>6} {'failed':>6} "
             f"{'skipped':>7} {'time':>8}  -m"]
    for row in rows:
        counts = (f"{row.passed:>6} {row.failed:>6} {row.skipped:>7} {row.seconds:>7.1f}s"
                  if row.ran else f"{'-':>6} {'-':>6} {'-':>7} {'-':>8}")
        marker = BY_NAME[row.principle].slug if row.principle in BY_NAME else ""
        lines.append(f"{row.principle:<{width}}  {row.status:<8} {counts}  {marker}")
    return lines


# -- the walkthroughs: one flow per principle that has a packet path ----------------------------
def flows(plan_data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(principle, --from, --to) of the walkthroughs, chosen from the plan: a pod to a pod on
    another node, a pod to a ClusterIP with several endpoints and to the cluster DNS, an outside
    client to a NodePort, a LoadBalancer address and the Ingress controller."""
    from podnet.plan import DNS_SERVICE, INGRESS_SERVICE, Plan

    plan = Plan.from_data(plan_data)
    # workload pods with an address from their node's pod CIDR: the path the article draws
    system = {DNS_SERVICE.split("/")[0], INGRESS_SERVICE.split("/")[0]}
    pods = sorted((p for p in plan.pods if not p.host_network),
                  key=lambda p: (p.stable_ip is not None, p.namespace in system))
    client_hosts = [h.name for h in plan.hosts if "clients" in h.groups]
    out: list[tuple[str, str, str]] = []
    served = [(p, port.port) for p in pods for c in p.containers for port in c.ports
              if port.protocol == "TCP"]
    source = next((p for p in pods if any(p.node != s.node for s, _ in served)), None)
    if source is None:
        return out
    target = next((s, port) for s, port in served if s.node != source.node)
    out.append(("flat network", source.key, f"{target[0].key}:{target[1]}"))
    cluster = [s for s in plan.services if s.cluster_ip and s.ports
               and s.ports[0].protocol == "TCP" and len(s.ports[0].endpoints) > 1
               and s.type == "ClusterIP"] or [s for s in plan.services if s.cluster_ip
                                              and s.ports and s.ports[0].endpoints]
    if cluster:
        service = f"{cluster[0].namespace}/{cluster[0].name}:{cluster[0].ports[0].port}"
        out.append(("service abstraction", source.key, service))
        out.append(("kube-proxy", source.key, service))
    dns = plan.dns_service
    dns_port = next((p for p in dns.ports if p.protocol == "UDP"), None)
    if dns_port is not None:
        out.append(("service DNS", source.key, f"{dns.namespace}/{dns.name}:{dns_port.port}"))
    if client_hosts:
        client = client_hosts[0]
        nodeport = next((s for s in plan.services if s.type == "NodePort"
                         and s.ports and s.ports[0].endpoints), None)
        if nodeport is not None:
            out.append(("NodePort", client, f"{nodeport.namespace}/{nodeport.name}:"
                        f"{nodeport.ports[0].port}"))
        ingress = plan.ingress_service if plan.ingress_routes else None
        lb = next((s for s in plan.services if s.lb_ip and s.ports and s is not ingress
                   and s.ports[0].protocol == "TCP" and s.external_traffic_policy == "Cluster"),
                  None)
        if lb is not None:
            out.append(("LoadBalancer", client, f"{lb.namespace}/{lb.name}:{lb.ports[0].port}"))
        if ingress is not None and ingress.ports:
            out.append(("Ingress", client, f"{ingress.namespace}/{ingress.name}:"
                        f"{ingress.ports[0].port}"))
    return out


# -- reports/verify.html -------------------------------------------------------------------------
def load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def state_path(junit: Path) -> Path:
    return junit.with_suffix(".state.json")


def html_path(junit: Path) -> Path:
    return junit.with_suffix(".html")


def render(junit: Path, out: Path | None = None) -> Path:
    """reports/<name>.html from the run's JUnit XML and state file; returns its path."""
    from podnet import picture

    cases = read_junit(junit)
    state = load_state(state_path(junit))
    rows = summary(cases)
    by_principle: dict[str, list[Case]] = {}
    for case in cases:
        by_principle.setdefault(case.principle, []).append(case)
    svg = picture.svg(state) if state.get("plan") else ""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    page = env.get_template("verify.html.j2").render(
        rows=rows, cases=by_principle, state=state, svg=svg, source=junit.name,
        walkthroughs=state.get("walkthroughs", {}),
        totals={o: sum(getattr(r, o) for r in rows) for o in OUTCOMES},
        seconds=sum(r.seconds for r in rows), escape=html.escape)
    target = out or html_path(junit)
    target.write_text(page, encoding="utf-8")
    return target
