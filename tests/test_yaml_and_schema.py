"""YAML reading with line numbers, schema checks, and the honoured-field list vs its doc."""

from __future__ import annotations

import re
from pathlib import Path

from podnet import schema
from podnet.problems import Problems
from podnet.yamlsource import fmt_path, load_dir, load_text

ROOT = Path(__file__).resolve().parents[1]


def test_lines_of_fields() -> None:
    problems = Problems()
    docs = load_text("a: 1\n---\n\n# c\nb:\n  c: [1, 2]\n  d: x\n", "f.yaml", problems)
    assert [d.number for d in docs] == [1, 2]
    assert docs[1].line == 5
    assert docs[1].where(("b", "d")) == "f.yaml:7"
    assert docs[1].where(("b", "missing", 3)) == "f.yaml:6"
    assert docs[1].where(()) == "f.yaml:5"
    assert fmt_path(("spec", "ports", 0, "port")) == "spec.ports[0].port"


def test_empty_documents_are_skipped() -> None:
    problems = Problems()
    assert load_text("---\n---\n# nothing\n", "f.yaml", problems) == []
    assert not problems.items


def test_load_dir_reads_yaml_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("b: 1\n")
    (tmp_path / "a.yml").write_text("a: 1\n")
    (tmp_path / "notes.txt").write_text("x: 1\n")
    problems = Problems()
    docs = load_dir(tmp_path, problems, shown_as="m")
    assert [d.file for d in docs] == ["m/a.yml", "m/b.yaml"]
    load_dir(tmp_path / "absent", problems, shown_as="nowhere")
    assert "nowhere: manifests: is not a directory" in str(problems.errors[0])


def test_the_doc_lists_exactly_the_honoured_fields() -> None:
    text = (ROOT / "docs" / "manifests.md").read_text()
    for kind, patterns in schema.HONOURED.items():
        section = text.split(f"### {kind}\n", 1)[1].split("\n### ", 1)[0]
        documented = set(re.findall(r"^- `([^`]+)`", section, re.MULTILINE))
        assert documented == set(patterns), (kind, documented ^ set(patterns))


def test_demo_manifests_use_only_honoured_fields() -> None:
    problems = Problems()
    docs = load_dir(ROOT / "inventory" / "lab" / "manifests", problems)
    assert not problems.items
    for doc in docs:
        assert schema.schema_errors(doc.data) == []
        assert schema.unhonoured_fields(doc.data["kind"], doc.data) == []
