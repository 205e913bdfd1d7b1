"""podnet/verifyreport.py, podnet/picture.py and podnet/bundle.py: the JUnit properties, the
table by principle, the HTML page from a real run's files (tests/golden/report: a make
verify-quick on the demo lab), looked at in headless Chromium, and the failure bundle's files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from podnet import browser, bundle, picture, principles, verifyreport
from podnet.paths import NodePaths

GOLDEN = Path(__file__).parent / "golden" / "report"


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A copy of a real run's files: the JUnit XML and the state file beside it."""
    for name in ("verify.xml", "verify.state.json"):
        shutil.copy(GOLDEN / name, tmp_path / name)
    return tmp_path / "verify.xml"


def failing(junit: Path, principle: str) -> None:
    """Make the first test of ``principle`` a failure, as pytest writes one."""
    text = junit.read_text()
    at = text.index(f'name="principle" value="{principle}"')
    end = text.index("</testcase>", at)
    text = text[:end] + '<failure message="AssertionError: rules flushed">node1: no DNAT' \
        "</failure>" + text[end:]
    junit.write_text(text)


def test_properties_carry_the_principle_the_hosts_and_the_last_commands() -> None:
    evidence = [verifyreport.Evidence(f"node{i % 2 + 1}", f"cmd {i}", 0, "x" * 2000)
                for i in range(12)]
    props = verifyreport.properties("flat network", evidence)
    assert props[0] == ("principle", "flat network")
    assert props[1] == ("hosts", "node1,node2")
    kept = [v for k, v in props if k == "evidence"]
    assert len(kept) == verifyreport.EVIDENCE_COMMANDS
    assert kept[-1].startswith("on node2 (rc 0): $ cmd 11\n")
    assert "characters left out" in kept[-1] and len(kept[-1]) < 1000


def test_trimmed_keeps_the_start_and_the_end() -> None:
    text = "start " + "-" * 5000 + " end"
    cut = verifyreport.trimmed(text, 100)
    assert cut.startswith("start ") and cut.endswith(" end") and "4910 characters left out" in cut
    assert verifyreport.trimmed("short") == "short"


def test_a_real_run_reads_back_with_principles_hosts_and_evidence(run: Path) -> None:
    cases = verifyreport.read_junit(run)
    assert len(cases) == 101
    assert {c.principle for c in cases} <= set(principles.BY_NAME)
    assert all(c.outcome == "passed" for c in cases)
    assert all(c.hosts and c.evidence for c in cases if c.principle != "Ingress"), \
        "every test that ran a command on a host carries it"


def test_a_failure_with_a_teardown_error_is_one_test_with_its_properties(tmp_path: Path) -> None:
    """pytest's junitxml writes such a test twice, its properties only on the second."""
    junit = tmp_path / "verify.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="test_x" name="test_a" time="1.5"><failure message="call">'
        "boom</failure></testcase>"
        '<testcase classname="test_x" name="test_a" time="0.5"><properties>'
        '<property name="principle" value="kube-proxy"/><property name="hosts" value="node2"/>'
        '<property name="evidence" value="on node2 (rc 1): $ iptables -S"/></properties>'
        '<error message="teardown">LabNotRestored</error></testcase>'
        "</testsuite></testsuites>")
    [case] = verifyreport.read_junit(junit)
    assert (case.principle, case.outcome, case.seconds, case.hosts) == \
        ("kube-proxy", "failed", 2.0, ["node2"])
    assert "boom" in case.message and "LabNotRestored" in case.message
    row = next(r for r in verifyreport.summary([case]) if r.principle == "kube-proxy")
    assert (row.failed, row.passed) == (1, 0)


def test_the_summary_has_every_principle_in_order_and_counts_each_test_once(run: Path) -> None:
    failing(run, "NodePort")
    cases = verifyreport.read_junit(run)
    rows = verifyreport.summary(cases)
    assert [r.principle for r in rows] == [p.name for p in principles.TABLE]
    assert sum(r.passed + r.failed + r.skipped for r in rows) == len(cases)
    nodeport = next(r for r in rows if r.principle == "NodePort")
    assert nodeport.status == "failed" and nodeport.failed == 1
    lines = verifyreport.table(rows)
    assert re.search(r"^NodePort\s+failed\s+8\s+1\s+0\s", lines[8])
    assert re.search(r"^kube-proxy\s+not run\s+-", lines[6]) and lines[6].endswith("kube_proxy")


def test_walkthrough_flows_are_picked_from_the_plan(run: Path) -> None:
    state = verifyreport.load_state(run.with_suffix(".state.json"))
    flows = {principle: (source, target) for principle, source, target
             in verifyreport.flows(state["plan"])}
    assert set(flows) == {"flat network", "service abstraction", "kube-proxy", "service DNS",
                          "NodePort", "LoadBalancer", "Ingress"}
    source, target = flows["flat network"]
    nodes = {p["namespace"] + "/" + p["name"]: p["node"] for p in state["plan"]["pods"]}
    assert nodes[source] != nodes[target.rsplit(":", 1)[0]], "the flat network crosses nodes"
    assert flows["NodePort"][0] == "client"


def test_the_page_is_self_contained_with_rows_picture_walkthroughs_and_evidence(
        run: Path) -> None:
    failing(run, "flat network")
    page = verifyreport.render(run).read_text()
    for p in principles.TABLE:
        assert f'data-principle="{p.name}"' in page.replace("&#43;", "+")
    assert "<svg" in page and "node1" in page and "10.244." in page
    assert "Packet path: pod " in page and "KUBE-SVC-" in page
    assert "AssertionError: rules flushed" in page
    assert not re.search(r"<(script|link|img|iframe)\b|url\(|@import", page), \
        "nothing the page would fetch"
    assert re.search(r'class="failed">failed</td>', page)


def test_the_picture_draws_nodes_pods_routes_and_services(run: Path) -> None:
    state = verifyreport.load_state(run.with_suffix(".state.json"))
    svg = picture.svg(state)
    for node in ("node1", "node2", "node3"):
        assert f">{node}<" in svg
    for pod in state["pods"].values():
        assert f">{pod['ip']}<" in svg
    assert "10.244.1.0/24 via 192.168.56.12" in svg and "(node2)" in svg
    assert svg.count("<path ") >= 10, "a line from each Service to its pods"


def test_pod_routes_are_the_routes_into_the_pod_network_off_the_node() -> None:
    routes = ["default via 192.168.56.1 dev host0", "10.244.0.0/24 dev cni0 proto kernel "
              "scope link src 10.244.0.1", "10.244.1.0/24 via 192.168.56.12 dev host0 proto 153",
              "10.244.255.1 dev veth1 scope link", "10.244.255.2 via 192.168.56.12 dev host0",
              "192.168.56.0/24 dev host0"]
    assert picture.pod_routes(routes, "10.244.0.0/16") == [
        "10.244.1.0/24 via 192.168.56.12 dev host0", "10.244.255.2 via 192.168.56.12 dev host0"]


def test_the_page_in_chromium_has_no_error_a_drawn_picture_and_every_row(
        run: Path, tmp_path: Path) -> None:
    if browser.chromium() is None:
        pytest.skip(f"no headless Chromium: {browser.INSTALL}")
    page = verifyreport.render(run)
    seen = browser.look(page, tmp_path / "shot.png")
    assert browser.problems(seen, [p.name for p in principles.TABLE]) == []
    assert seen.picture_box is not None and seen.picture_box[3] > 300
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_the_bundle_writes_a_file_per_section_and_says_which_host_was_unreachable(
        tmp_path: Path) -> None:
    paths = NodePaths()
    names = list(bundle.commands(paths))
    assert {"iptables-save", "routes", "addresses", "links", "conntrack", "cni-cache",
            "journal"} <= set(names)

    def runner(host: str, script: str) -> str:
        if host == "node3":
            raise OSError("ssh: connect to host node3 port 22: No route to host")
        assert script == bundle.script(paths)
        return "".join(f"{bundle.SECTION.format(n)}\n{n} of {host}\n" for n in names)

    where = bundle.collect(runner, ["node1", "node3"], paths, tmp_path / "b")
    assert (where / "node1" / "conntrack.txt").read_text() == "conntrack of node1\n"
    assert sorted(f.name for f in (where / "node1").iterdir()) == sorted(f"{n}.txt"
                                                                        for n in names)
    assert "No route to host" in (where / "node3" / "unreachable.txt").read_text()
