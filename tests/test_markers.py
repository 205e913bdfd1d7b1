"""The verify suites' markers: a principle's slug (what ``pytest -m`` selects), the names
verify/pytest.ini registers, -m typos, and a quick proof for every principle (read from the
suites' source, so no lab is needed)."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

from podnet import markers, principles

VERIFY = Path(__file__).resolve().parent.parent / "verify"


@pytest.mark.parametrize(("principle", "slug"), [
    ("hosts", "hosts"),
    ("flat network", "flat_network"),
    ("unique pod IP", "unique_pod_ip"),
    ("service abstraction", "service_abstraction"),
    ("NodePort", "nodeport"),
    ("service DNS", "service_dns"),
    ("  Ingress / TLS  termination ", "ingress_tls_termination"),
    ("LoadBalancer-IP", "loadbalancer_ip"),
])
def test_slug_is_lower_case_with_underscores(principle: str, slug: str) -> None:
    assert markers.slug(principle) == slug


def test_a_principle_without_letters_has_no_slug() -> None:
    with pytest.raises(ValueError, match="no letters or digits"):
        markers.slug(" - ")


def test_registered_reads_marker_names_from_ini_lines() -> None:
    lines = ["", "principle(name): the principle", "flat_network: pods reach pods", "  quick"]
    assert markers.registered(lines) == {"principle", "flat_network", "quick"}


@pytest.mark.parametrize(("expression", "unknown"), [
    ("flat_network", []),
    ("quick and not (hosts or service_dns)", []),
    ("flat_netwrok", ["flat_netwrok"]),
    ("quick or nodeprot or nodeprot", ["nodeprot"]),
    ("quick and device(serial='123')", ["device"]),
    ("", []),
])
def test_unknown_names_the_markers_an_expression_misspells(expression: str,
                                                           unknown: list[str]) -> None:
    known = {"flat_network", "quick", "hosts", "service_dns", "nodeport"}
    assert markers.unknown(expression, known) == unknown


# -- the suites themselves ---------------------------------------------------------------------
def ini_markers() -> set[str]:
    ini = configparser.ConfigParser()
    ini.read(VERIFY / "pytest.ini")
    assert "--strict-markers" in ini["pytest"]["addopts"]
    # verify/conftest.py registers the principles' slugs from podnet/principles.py
    return markers.registered(ini["pytest"]["markers"].splitlines()) | set(principles.BY_SLUG)


def _mark(node: ast.expr) -> tuple[str, list[str]] | None:
    """``pytest.mark.NAME`` or ``pytest.mark.NAME("arg", ...)`` -> (NAME, string args)."""
    call = node if isinstance(node, ast.Call) else None
    target = call.func if call else node
    if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute)
            and target.value.attr == "mark"):
        args = [a.value for a in (call.args if call else [])
                if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        return target.attr, args
    return None


def suite_tests(path: Path) -> list[tuple[str, str, set[str]]]:
    """(test, principle, marker names) of every test function of a verify file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module_principle = ""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            found = _mark(node.value)
            if found and found[0] == "principle":
                module_principle = found[1][0]
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            marks = [m for m in map(_mark, node.decorator_list) if m]
            principle = next((args[0] for name, args in marks if name == "principle"),
                             module_principle)
            out.append((f"{path.name}::{node.name}", principle, {name for name, _ in marks}))
    return out


ALL = [t for path in sorted(VERIFY.glob("test_*.py")) for t in suite_tests(path)]


def lab_changing_suites() -> set[str]:
    """conftest.py's LAST: the suites that change the lab (marked changes_lab, run last)."""
    tree = ast.parse((VERIFY / "conftest.py").read_text(encoding="utf-8"))
    last = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "LAST" for t in node.targets))
    return set(ast.literal_eval(last))


def test_every_verify_test_has_a_principle_whose_marker_is_registered() -> None:
    registered = ini_markers()
    assert ALL
    for test, principle, _ in ALL:
        assert principle, f"{test} has no principle marker"
        assert markers.slug(principle) in registered, \
            f"{test}: add {markers.slug(principle)} to verify/pytest.ini's markers"


def test_every_principle_is_proved_by_a_suite_and_named_once() -> None:
    """A report never shows a principle no test can fill, nor one under two names: the table
    of podnet/principles.py is the only place a principle is named, pytest.ini does not
    register them again."""
    used = {principle for _, principle, _ in ALL}
    assert used <= set(principles.BY_NAME), sorted(used - set(principles.BY_NAME))
    assert set(principles.BY_NAME) <= used, sorted(set(principles.BY_NAME) - used)
    ini = configparser.ConfigParser()
    ini.read(VERIFY / "pytest.ini")
    assert not markers.registered(ini["pytest"]["markers"].splitlines()) & set(principles.BY_SLUG)
    assert len({p.slug for p in principles.TABLE}) == len(principles.TABLE)


def test_quick_has_a_proof_of_every_principle_and_none_that_changes_the_lab() -> None:
    assert {"quick", "quick_sample", "changes_lab"} <= ini_markers()
    changes_lab = lab_changing_suites()
    assert "test_pods_lifecycle.py" in changes_lab
    read_only = [(test, p, names) for test, p, names in ALL
                 if test.split("::")[0] not in changes_lab]
    # a principle only a lab-changing suite proves cannot have a quick proof
    principles = {p for _, p, _ in read_only}
    # quick_sample: only a sample of the test's pod matrix is quick (verify/conftest.py)
    quick = {p for _, p, names in read_only if names & {"quick", "quick_sample"}}
    assert quick == principles, f"no quick test for {sorted(principles - quick)}"
    changing = [test for test, _, names in ALL if names & {"quick", "quick_sample"}
                and test.split("::")[0] in changes_lab]
    assert changing == [], "these change the lab: not for make verify-quick"
