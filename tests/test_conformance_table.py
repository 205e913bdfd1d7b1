"""The conformance table: the upstream list, podnet's mirrored tests and docs/conformance.md."""

from __future__ import annotations

from pathlib import Path

from podnet import conformance

ROOT = Path(__file__).resolve().parents[1]


def test_the_upstream_list_is_41_tests_23_of_them_mirrored() -> None:
    assert len(conformance.ENTRIES) == 41
    assert all("[sig-network]" in e.codename for e in conformance.ENTRIES)
    assert sum(e.mirrored for e in conformance.ENTRIES) == 23
    keys = [e.key for e in (*conformance.ENTRIES, *conformance.EXTRA)]
    assert len(set(keys)) == len(keys)
    assert len({e.codename for e in conformance.ENTRIES}) == 41


def test_every_mirrored_entry_has_a_test_and_no_test_mirrors_an_unmirrored_one() -> None:
    tests = conformance.mirrors()
    for item in (*conformance.ENTRIES, *conformance.EXTRA):
        assert bool(tests.get(item.key)) == item.mirrored, item.key
    assert set(tests) <= {e.key for e in (*conformance.ENTRIES, *conformance.EXTRA)}


def test_the_docs_hold_the_table() -> None:
    doc = (ROOT / "docs" / "conformance.md").read_text()
    begin, end = "<!-- conformance:begin -->\n", "<!-- conformance:end -->"
    assert doc.split(begin, 1)[1].split(end, 1)[0] == conformance.markdown(), (
        "docs/conformance.md is not the table: paste python -m podnet conformance there")


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="test_conformance" name="test_dns_for_the_cluster">
  <properties><property name="upstream" value="dns-cluster"/></properties></testcase>
<testcase classname="test_conformance" name="test_same_port_two_protocols_1_both">
  <properties><property name="upstream" value="same-port-two-protocols"/></properties></testcase>
<testcase classname="test_conformance" name="test_same_port_two_protocols_2_tcp_only">
  <properties><property name="upstream" value="same-port-two-protocols"/></properties>
  <failure message="boom">boom</failure></testcase>
<testcase classname="test_conformance" name="test_dns_pods_hostname">
  <properties><property name="upstream" value="dns-pod-hostname"/></properties>
  <skipped message="no lab"/></testcase>
</testsuite></testsuites>
"""


def test_results_from_a_run_give_each_entry_its_status(tmp_path: Path) -> None:
    path = tmp_path / "conformance.xml"
    path.write_text(JUNIT)
    results = conformance.results_from_junit(path)
    assert conformance.status("dns-cluster", results) == "passed"
    assert conformance.status("same-port-two-protocols", results) == (
        "test_same_port_two_protocols_2_tcp_only failed")
    assert conformance.status("dns-pod-hostname", results) == (
        "test_dns_pods_hostname skipped")
    assert conformance.status("nodeport", results) == "not run"
    assert conformance.status("proxy", results) == "n/a"
    table = conformance.markdown(results)
    assert "| passed |" in table and "| not run |" in table


def test_the_command_prints_the_table_and_fails_when_a_mirrored_test_did_not_pass(
        tmp_path: Path, capsys: object) -> None:
    from podnet.__main__ import main

    assert main(["conformance"]) == 0
    path = tmp_path / "conformance.xml"
    path.write_text(JUNIT)
    assert main(["conformance", "--junit", str(path)]) == 1
    out = capsys.readouterr()  # type: ignore[attr-defined]
    assert "| 16 | [sig-network] DNS should provide DNS for the cluster" in out.out
    assert "not passed: intra-pod-http" in out.err
