"""Read multi-document YAML files and remember the line each field came from.

Manifests are data a user may have from anywhere, so reading one is bounded: a file's size, how
deep it nests, how much its aliases expand to (a "billion laughs" alias bomb is 1 KB of text
that stands for billions of nodes; the Kubernetes API server has bounded alias expansion since
CVE-2019-11253), how long a number may be, and what may sit in the folder (only regular UTF-8
files, no symbolic link out of it). Each refusal is a problem naming the file and line and the
fix, never a traceback, and a run goes on to the next file so it lists them all.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from podnet.problems import Problems

FieldPath = tuple[str | int, ...]

# A manifest file holds a few objects; Kubernetes stores an object in at most about 1.5 MiB
# (etcd's request limit), and podnet's pure-Python parser reads 1 MiB in a few seconds.
MAX_FILE_BYTES = 1 << 20
# Nesting levels of one document, aliases expanded. Kubernetes objects nest about 12 deep
# (spec.template.spec.affinity...values[0]); every reader of the data recurses per level.
MAX_DEPTH = 64
# Nodes that alias uses add (an alias counts as the whole node it stands for) over one load, all
# files of a manifests folder together: shared labels or a repeated pod template add hundreds.
MAX_ALIAS_NODES = 100_000
# Characters of an integer: a 64-bit number has at most 20 digits, and longer ones cost
# quadratic time (60-based "1:2:3" integers) or fail Python's 4300-digit conversion limit.
MAX_INT_CHARS = 64

ALIAS_FIX = ("write the repeated part out, or use fewer aliases (podnet bounds alias expansion "
             "as the Kubernetes API server does since CVE-2019-11253)")
# what YAML 1.1 lets a stream hold (PyYAML's reader's own pattern)
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
NOT_A_MANIFEST_FIX = ("a binary or non-YAML file does not belong in the manifests folder: "
                      "remove it, or save it as UTF-8 YAML")


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


@dataclass
class Budget:
    """What aliases have added so far in one load; shared by the files of a folder so a bomb
    split over many files is bounded too."""

    alias_nodes: int = 0


class _Refused(Exception):
    """A bound the text crossed, at a place in it, with the message and the fix."""

    def __init__(self, mark: Any, message: str, fix: str) -> None:  # PyYAML's or libyaml's Mark
        super().__init__(message)
        self.mark = mark
        self.message = message
        self.fix = fix


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


if yaml.__with_libyaml__:
    # libyaml's parser (the one Ansible uses): the events five times faster than PyYAML's
    # Python scanner, which needs 20 s for a 1 MiB file of one-line documents
    from yaml._yaml import CParser as _Events
else:  # a PyYAML built without libyaml (tests force it): the same events, slower
    class _Events(yaml.reader.Reader, yaml.scanner.Scanner,  # type: ignore[no-redef]
                  yaml.parser.Parser):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class _Loader(yaml.composer.Composer, _Events, yaml.constructor.SafeConstructor,
              yaml.resolver.Resolver):
    """SafeLoader that measures each node while it composes: the composer shares an anchored
    node between its aliases, so the graph stays small while the data it stands for (which
    every reader after this walks in full) can grow ninefold per level of a bomb. Measuring at
    the alias, before anything walks the data, refuses a bomb in time and memory linear in the
    text, names the alias's line, and catches an alias inside the node it names (a cycle).
    The composer is PyYAML's Python one on either parser, so these checks see every node."""

    def __init__(self, text: str, budget: Budget) -> None:
        _Events.__init__(self, text)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._budget = budget
        self._depth = 0
        # id(node) -> (nodes, levels) of a node whose composing is finished, aliases expanded;
        # cleared per document because anchors are per document and ids are reused
        self._shape: dict[int, tuple[int, int]] = {}

    def compose_document(self) -> yaml.Node | None:
        self._shape = {}
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias: the base class words that error
                self._charge_alias(event, target)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(getattr(event, "start_mark", None),
                               f"nests deeper than {MAX_DEPTH} levels",
                               "flatten the document; no Kubernetes object nests that deep")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:  # always, for a node that is not an alias
            self._shape[id(node)] = self._measure(node)
        return node

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        """Nodes and levels of a just-composed node from its children's (all measured)."""
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            return 1, 1
        shapes = [self._shape[id(child)] for child in children]
        return 1 + sum(s[0] for s in shapes), 1 + max((s[1] for s in shapes), default=0)

    def _charge_alias(self, event: yaml.AliasEvent, target: yaml.Node) -> None:
        shape = self._shape.get(id(target))
        if shape is None:
            # the anchored node is still being composed: the alias sits inside it
            raise _Refused(event.start_mark,
                           f"alias *{event.anchor} stands inside the node it names (a cycle)",
                           "write that part out; a manifest is a tree, not a loop")
        nodes, levels = shape
        if self._depth + levels > MAX_DEPTH:
            # the alias sits at depth + 1, and its node's levels hang below that
            raise _Refused(event.start_mark,
                           f"alias *{event.anchor} nests the document deeper than {MAX_DEPTH} "
                           "levels once expanded", ALIAS_FIX)
        self._budget.alias_nodes += nodes
        if self._budget.alias_nodes > MAX_ALIAS_NODES:
            raise _Refused(event.start_mark,
                           f"alias *{event.anchor} stands for {nodes} nodes and brings what "
                           f"aliases add to {self._budget.alias_nodes}, over the "
                           f"{MAX_ALIAS_NODES} podnet allows for the manifests (an alias bomb?)",
                           ALIAS_FIX)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A scalar that its tag's constructor cannot read (``!!int abc``, ``2001-13-45``) is a
        problem at its line; PyYAML raises plain ValueError, KeyError or AttributeError."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, AttributeError, TypeError, OverflowError) as exc:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            value = repr(_short(node.value)) if isinstance(node.value, str) else "this value"
            raise _Refused(node.start_mark, f"{value} is not a valid {tag} ({exc})",
                           "quote it if it is meant as a string, or correct it") from exc

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(node.value)
        if len(text) > MAX_INT_CHARS:
            raise _Refused(node.start_mark,
                           f"an integer of {len(text)} characters, over {MAX_INT_CHARS}",
                           "quote it if it is meant as a string; Kubernetes numbers are 64-bit")
        return super().construct_yaml_int(node)

    # the constructor table maps tags to functions, so the override must be put in it
    yaml_constructors: ClassVar[dict[Any, Any]] = {
        **yaml.constructor.SafeConstructor.yaml_constructors,
        "tag:yaml.org,2002:int": construct_yaml_int}


def _index_lines(node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int],
                 duplicates: list[tuple[FieldPath, int]]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            # a collection as a key is refused by the constructor; its text is not a name
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            if key in seen:
                duplicates.append(((*path, key), key_node.start_mark.line + 1))
            seen.add(key)
            _index_lines(value_node, (*path, key), lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), lines, duplicates)


def _at(file: str, mark: Any, column: bool = False) -> str:
    if mark is None:
        return file
    return f"{file}:{mark.line + 1}" + (f":{mark.column + 1}" if column else "")


def load_text(text: str, file: str, problems: Problems,
              budget: Budget | None = None) -> list[Document]:
    """Every non-empty document of ``text``; a syntax error or a crossed bound is a problem,
    not an exception, and ends the file (the documents before it are kept)."""
    docs: list[Document] = []
    bad = _NON_PRINTABLE.search(text)
    if bad:
        # checked here, the same on libyaml and PyYAML, with the line the character is on
        problems.error(f"{file}:{text.count(chr(10), 0, bad.start()) + 1}", "YAML", "",
                       f"character #x{ord(bad.group()):04x} is not allowed in YAML (only "
                       "printable characters, tab and line breaks are)", NOT_A_MANIFEST_FIX)
        return docs
    loader: _Loader | None = None
    try:
        loader = _Loader(text, budget if budget is not None else Budget())
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
    except _Refused as exc:
        problems.error(_at(file, exc.mark), "YAML", "", exc.message, exc.fix)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        what = f"{context}, {problem}" if context else problem
        problems.error(_at(file, mark, column=True), "YAML", "", f"malformed YAML: {what}",
                       "fix the syntax (indentation, ':' after keys, closed quotes and brackets)")
    finally:
        if loader is not None:
            loader.dispose()
    return docs


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _not_a_file(mode: int, shown: str, problems: Problems) -> bool:
    """True (and the problem recorded) when ``mode`` is not a regular file's."""
    if stat.S_ISREG(mode):
        return False
    kind = next((word for test, word in _KINDS if test(mode)), "not a regular file")
    fix = ("podnet reads the files of the manifests folder, not its subfolders: move the "
           "manifests out of it, or rename it so its name does not end in .yaml or .yml"
           if stat.S_ISDIR(mode) else
           "remove it: everything named *.yaml or *.yml in the folder must be a manifest file")
    problems.error(shown, "manifests", "", f"is {kind}, not a file", fix)
    return True


def _too_big(size: int, shown: str, problems: Problems) -> bool:
    if size <= MAX_FILE_BYTES:
        return False
    problems.error(shown, "manifests", "",
                   f"is {size} bytes, over the {MAX_FILE_BYTES} podnet reads from one file",
                   "split it into several files (each object may have a file of its own)")
    return True


def read_file(path: Path, shown: str, problems: Problems, folder: Path) -> str | None:
    """The text of one manifest file of ``folder`` (resolved), or None with the problem
    recorded: a link out of the folder, something that is not a regular file (a FIFO would
    block the read, a device never end), over MAX_FILE_BYTES, unreadable, or not UTF-8."""
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not target.is_relative_to(folder):
            # a link could feed any file on this machine into the plan and its error messages
            problems.error(shown, "manifests", "",
                           f"is a symbolic link to {path.readlink()}, outside the folder",
                           f"copy the file into {folder} instead of linking to it")
            return None
    try:
        # stat first: opening a device or FIFO is not harmless; fstat again after the open
        # because the name can be replaced in between
        if _not_a_file(path.stat().st_mode, shown, problems):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if _not_a_file(info.st_mode, shown, problems) or _too_big(info.st_size, shown,
                                                                        problems):
                return None
            data = handle.read(MAX_FILE_BYTES + 1)  # a file that grew meanwhile stops here
    except FileNotFoundError:
        # it was listed a moment ago, so this is a link to nothing (or it was just removed)
        what = f"is a symbolic link to {path.readlink()}, which does not exist" \
            if path.is_symlink() else "was removed while podnet read the folder"
        problems.error(shown, "manifests", "", what, "remove it, or make it a manifest file")
        return None
    except OSError as exc:
        problems.error(shown, "manifests", "", f"cannot be read: {exc.strerror}",
                       "make it readable by this user, or remove it")
        return None
    if _too_big(len(data), shown, problems):
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problems.error(f"{shown}:{line}", "manifests", "",
                       f"is not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be decoded)",
                       NOT_A_MANIFEST_FIX)
        return None


def load_dir(directory: Path, problems: Problems, shown_as: str | None = None) -> list[Document]:
    """All ``*.yaml``/``*.yml`` files of ``directory`` in name order, each read within the
    bounds above; one alias budget for them all."""
    label = shown_as or str(directory)
    if not directory.is_dir():
        problems.error(label, "manifests", "", "is not a directory",
                       "create it or point podnet_manifests_dir at the folder of manifests")
        return []
    folder = Path(os.path.realpath(directory))
    budget = Budget()
    docs: list[Document] = []
    # every entry with a manifest's name, whatever it is, so a directory or FIFO named like a
    # manifest is reported instead of silently skipped
    for path in sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml")):
        shown = f"{label}/{path.name}"
        text = read_file(path, shown, problems, folder)
        if text is not None:
            docs.extend(load_text(text, shown, problems, budget))
    return docs
