"""Read multi-document YAML files and remember the line each field came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from podnet.problems import Problems

FieldPath = tuple[str | int, ...]


def fmt_path(path: FieldPath) -> str:
    """("spec", "ports", 0, "port") -> "spec.ports[0].port"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Document:
    """One YAML document: its data, the file and line it starts on, and each field's line."""

    data: Any
    file: str
    line: int
    lines: dict[FieldPath, int] = field(default_factory=dict)
    number: int = 1  # the document's position in its file, from 1

    def where(self, path: FieldPath = ()) -> str:
        """``file:line`` of the deepest part of ``path`` that the document has."""
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                return f"{self.file}:{self.lines[path[:cut]]}"
        return f"{self.file}:{self.line}"


def _index_lines(node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int],
                 duplicates: list[tuple[FieldPath, int]]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                duplicates.append(((*path, key), key_node.start_mark.line + 1))
            seen.add(key)
            _index_lines(value_node, (*path, key), lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), lines, duplicates)


def load_text(text: str, file: str, problems: Problems) -> list[Document]:
    """Every non-empty document of ``text``; a syntax error is a problem, not an exception."""
    docs: list[Document] = []
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node() said there is one
                break
            lines: dict[FieldPath, int] = {}
            duplicates: list[tuple[FieldPath, int]] = []
            _index_lines(node, (), lines, duplicates)
            data = loader.construct_document(node)
            if data is None:
                continue
            doc = Document(data, file, node.start_mark.line + 1, lines, len(docs) + 1)
            for path, line in duplicates:
                problems.error(f"{file}:{line}", f"document {len(docs) + 1}", fmt_path(path),
                               "this key appears twice in one mapping; YAML keeps only the last",
                               "remove one of the two")
            docs.append(doc)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        what = f"{context}, {problem}" if context else problem
        problems.error(at, "YAML", "", f"malformed YAML: {what}",
                       "fix the syntax (indentation, ':' after keys, closed quotes and brackets)")
    finally:
        loader.dispose()
    return docs


def load_dir(directory: Path, problems: Problems, shown_as: str | None = None) -> list[Document]:
    """All ``*.yaml``/``*.yml`` files of ``directory`` in name order."""
    label = shown_as or str(directory)
    if not directory.is_dir():
        problems.error(label, "manifests", "", "is not a directory",
                       "create it or point podnet_manifests_dir at the folder of manifests")
        return []
    docs: list[Document] = []
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    for path in files:
        docs.extend(load_text(path.read_text(encoding="utf-8"), f"{label}/{path.name}", problems))
    return docs
