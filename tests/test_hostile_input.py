"""Hostile input stays harmless: manifests a new user might be handed (an alias bomb, a binary
file, deep nesting, a huge number, a link out of the folder, a FIFO) end ``python -m podnet
plan`` with the usual problem list and exit 1 (file:line, what is wrong, the fix), never a
traceback, a hang or gigabytes of memory.

Each case runs the plan in its own process with 1 GiB of address space and a deadline of a few
seconds, so a bound that stops working fails the test instead of the machine. Before these
bounds the nine-by-nine alias bomb (323 bytes) grew past 4 GB in 30 s.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from podnet import yamlsource

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "inventory" / "lab"
ENV = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
       "PODNET_LAB": "podnet-hostile-test", "PYTHONPATH": str(ROOT)}
ENV.pop("PODNET_MANIFESTS_DIR", None)
MEMORY = 1 << 30  # bytes of address space; the demo plan needs about 300 MB
# a bound on a runaway (the bomb ran for ever, the quadratic report for hours), not a benchmark:
# the demo plan takes about 1 s, the slowest case here about 3 s alone, several times that
# under coverage on a loaded 2-core machine
SECONDS = 60

SERVICE = """apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: demo
spec:
  selector:
    app: web
  ports:
  - port: 80
"""


def bomb(levels: int = 9, width: int = 9) -> str:
    """The classic "billion laughs": each level an anchored list of ``width`` aliases of the
    level before, so ``levels`` lines stand for width**levels strings."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        aliases = ",".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 9, width: int = 9) -> str:
    """The same through merge keys (``<<``), which PyYAML copies pair by pair."""
    lines = ["m0: &m0 {x: 1, y: 2}"]
    for level in range(1, levels):
        aliases = ",".join([f"*m{level - 1}"] * width)
        lines.append(f"m{level}: &m{level} {{<<: [{aliases}]}}")
    return "\n".join(lines) + "\n"


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def plan(inventory: Path, *, python_parser: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m podnet plan -i inventory`` under the memory limit and the deadline; with
    ``python_parser`` as on a PyYAML built without libyaml (PyYAML's own Python parser)."""
    argv = [sys.executable, "-m", "podnet", "plan", "-i", str(inventory)]
    if python_parser:
        argv = [sys.executable, "-c",
                "import runpy, sys, yaml; yaml.__with_libyaml__ = False; "
                "sys.argv = ['podnet', *sys.argv[1:]]; runpy.run_module('podnet', "
                "run_name='__main__')", "plan", "-i", str(inventory)]
    try:
        return subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True,
                              check=False, timeout=SECONDS, preexec_fn=limit_memory)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"plan ran past {SECONDS} s: {argv} (stderr: {exc.stderr!r:.500})")


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """A copy of the demo inventory whose manifests folder a test adds to."""
    copy = tmp_path / "lab"
    shutil.copytree(LAB, copy)
    return copy


def refused(run: subprocess.CompletedProcess[str], *expected: str) -> None:
    """The plan failed the way a user should see: exit 1, the problem list, no traceback."""
    shown = f"exit {run.returncode}\nstderr:\n{run.stderr[-3000:]}"
    assert run.returncode == 1, shown
    assert "Traceback" not in run.stderr, shown
    assert "problem(s) in" in run.stderr, shown
    for text in expected:
        assert text in run.stderr, f"{text!r} missing; {shown}"
    assert "fix:" in run.stderr, shown


def write(name: str, text: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        (folder / name).write_text(text, encoding="utf-8")
    return make


def write_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        (folder / name).write_bytes(data)
    return make


def link(name: str, target: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        (folder / name).symlink_to(target)
    return make


def directory(folder: Path) -> None:
    (folder / "more.yaml").mkdir()
    (folder / "more.yaml" / "web.yaml").write_text(SERVICE.format(name="hidden"))


def fifo(folder: Path) -> None:
    os.mkfifo(folder / "pipe.yaml")  # nobody writes to it: opening it to read would block


def link_loop(folder: Path) -> None:
    (folder / "a.yaml").symlink_to("b.yaml")
    (folder / "b.yaml").symlink_to("a.yaml")


def outside_file(folder: Path) -> None:
    # beside the inventory, not in it: Ansible would read it as an inventory source
    outside = folder.parent.parent / "secret.yaml"
    outside.write_text(SERVICE.format(name="outside"))
    (folder / "zz.yaml").symlink_to(outside)


DEEP_BLOCK = "".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "leaf\n"
ALIAS_DEEP = ("a: &a " + "[" * 40 + "]" * 40 + "\n"
              "b: " + "[" * 30 + "*a" + "]" * 30 + "\n")

CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "alias bomb": (write("zz.yaml", bomb()),
                   ("zz.yaml:6: YAML: alias *a4 stands for", "over the 100000 podnet allows",
                    "CVE-2019-11253")),
    "merge-key bomb": (write("zz.yaml", merge_bomb()),
                       ("zz.yaml:6: YAML: alias *m4 stands for", "over the 100000")),
    "alias cycle": (write("zz.yaml", "a: &a [1, *a]\n"),
                    ("zz.yaml:1: YAML: alias *a stands inside the node it names (a cycle)",)),
    "alias cycle in a mapping": (write("zz.yaml", "x: 1\ny: &y\n  z: *y\n"),
                                 ("zz.yaml:3: YAML: alias *y stands inside the node",)),
    "aliases nesting past the depth limit": (
        write("zz.yaml", ALIAS_DEEP),
        ("zz.yaml:2: YAML: alias *a nests the document deeper than 64 levels once expanded",)),
    "deep flow nesting": (write("zz.yaml", "a: " + "[" * 200 + "]" * 200 + "\n"),
                          ("zz.yaml:1: YAML: nests deeper than 64 levels",
                           "no Kubernetes object nests that deep")),
    "deep block nesting": (write("zz.yaml", DEEP_BLOCK),
                           ("zz.yaml:64: YAML: nests deeper than 64 levels",)),
    "binary file": (write_bytes("zz.yaml", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8),
                    ("zz.yaml:2: manifests: is not UTF-8 text (byte 0x80",
                     "a binary or non-YAML file does not belong in the manifests folder")),
    "Latin-1 text": (write_bytes("zz.yaml", SERVICE.format(name="caf\xe9").encode("latin-1")),
                     ("zz.yaml:4: manifests: is not UTF-8 text (byte 0xe9",)),
    "UTF-16 text": (write_bytes("zz.yaml", SERVICE.format(name="u").encode("utf-16")),
                    ("zz.yaml:1: manifests: is not UTF-8 text (byte 0xff",)),
    "NUL in UTF-8 text": (write("zz.yaml", SERVICE.format(name="n") + "# \x00\n"),
                          ("zz.yaml:11: YAML: character #x0000 is not allowed in YAML",)),
    "file over the size limit": (
        write("zz.yaml", "#" * yamlsource.MAX_FILE_BYTES + "\n"),
        (f"zz.yaml: manifests: is {yamlsource.MAX_FILE_BYTES + 1} bytes, over the "
         f"{yamlsource.MAX_FILE_BYTES} podnet reads from one file", "split it")),
    "huge scalar": (write("zz.yaml", "a: " + "x" * 50_000_000 + "\n"),
                    ("zz.yaml: manifests: is 50000004 bytes, over the 1048576",)),
    "long decimal integer": (write("zz.yaml", SERVICE.format(name="w").replace(
        "port: 80", "port: " + "1" * 100_000)),
        ("zz.yaml:10: YAML: an integer of 100000 characters, over 64",
         "quote it if it is meant as a string")),
    # a base-60 integer costs quadratic time to convert: 600,000 characters never finished
    "long base-60 integer": (write("zz.yaml", "a: 1" + ":1" * 300_000 + "\n"),
                             ("zz.yaml:1: YAML: an integer of 600001 characters",)),
    "impossible date": (write("zz.yaml", SERVICE.format(name="w").replace(
        "app: web", "app: 2001-13-45")),
        ("zz.yaml:8: YAML: '2001-13-45' is not a valid !!timestamp (month must be in 1..12)",)),
    "explicit tag on the wrong value": (write("zz.yaml", "a: !!int abc\nb: !!bool maybe\n"),
                                        ("zz.yaml:1: YAML: 'abc' is not a valid !!int",)),
    "duplicate key": (write("zz.yaml", SERVICE.format(name="w").replace(
        "  namespace: demo\n", "  namespace: demo\n  namespace: other\n")),
        ("zz.yaml:6: document 1: metadata.namespace: this key appears twice in one mapping",)),
    "symlink out of the folder": (outside_file, (
        "zz.yaml: manifests: is a symbolic link to ", "secret.yaml, outside the folder",
        "copy the file into")),
    "symlink to a device": (link("zz.yaml", "/dev/zero"),
                            ("zz.yaml: manifests: is a symbolic link to /dev/zero, outside",)),
    "dangling symlink": (link("zz.yaml", "gone.yaml"),
                         ("zz.yaml: manifests: is a symbolic link to gone.yaml, which does "
                          "not exist",)),
    "symlink loop": (link_loop, ("a.yaml: manifests: cannot be read: Too many levels of "
                                 "symbolic links", "b.yaml: manifests: cannot be read")),
    "directory named like a manifest": (directory, (
        "more.yaml: manifests: is a directory, not a file", "not its subfolders")),
    "FIFO named like a manifest": (fifo, ("pipe.yaml: manifests: is a FIFO, not a file",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_manifest_is_refused_with_its_place_and_fix(lab: Path, case: str) -> None:
    make, expected = CASES[case]
    make(lab / "manifests")
    refused(plan(lab), *expected)


# PyYAML's Python parser (a PyYAML built without libyaml) composes the same nodes, so the same
# bounds hold; the cases the two parsers could differ on
@pytest.mark.parametrize("case", ["alias bomb", "alias cycle", "deep flow nesting",
                                  "NUL in UTF-8 text", "long base-60 integer"])
def test_hostile_manifest_is_refused_by_the_python_parser_too(lab: Path, case: str) -> None:
    make, expected = CASES[case]
    make(lab / "manifests")
    refused(plan(lab, python_parser=True), *expected)


def test_every_hostile_file_is_listed_in_one_run(lab: Path) -> None:
    """One run names them all, each at its file, and reads the good files as before."""
    folder = lab / "manifests"
    for name in ("symlink out of the folder", "FIFO named like a manifest",
                 "directory named like a manifest"):
        CASES[name][0](folder)
    (folder / "deep.yaml").write_text("a: " + "[" * 200 + "]" * 200 + "\n")
    (folder / "blob.yaml").write_bytes(b"\xff\xfe\x00binary")
    run = plan(lab)
    refused(run, "deep.yaml:1: YAML: nests deeper", "blob.yaml:1: manifests: is not UTF-8",
            "pipe.yaml: manifests: is a FIFO", "more.yaml: manifests: is a directory",
            "zz.yaml: manifests: is a symbolic link to")
    assert run.stderr.startswith("5 problem(s) in"), run.stderr


def test_alias_budget_is_shared_by_the_files_of_a_folder(lab: Path) -> None:
    """A bomb split over files, each far under the limit, is refused in the file that crosses
    it: 8,289 nodes added per file, so the 13th file brings the total past 100,000."""
    part = bomb(levels=3) + "last: [" + ",".join(["*a2"] * 9) + "]\n"
    for index in range(20):
        (lab / "manifests" / f"zz{index:02d}.yaml").write_text(part)
    run = plan(lab)
    refused(run, "zz12.yaml:3: YAML: alias *a1 stands for 91 nodes and brings what aliases "
                 "add to 100013, over the 100000")
    refusing = sorted(line.split("/manifests/")[1][:4] for line in run.stderr.splitlines()
                      if "YAML: alias" in line)
    assert refusing == [f"zz{index}" for index in range(12, 20)], run.stderr


def test_aliases_within_the_bounds_still_work(lab: Path) -> None:
    """Ordinary anchors (shared labels, a repeated port list) and links inside the folder plan
    as before."""
    folder = lab / "manifests"
    (folder / "sub").mkdir()
    (folder / "sub" / "shared.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: shared\n  namespace: demo\n"
        "  labels: &labels {app: web, tier: front}\nspec:\n  selector: *labels\n"
        "  ports: &ports\n  - port: 81\n    targetPort: 8080\n"
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: shared2\n  namespace: demo\n"
        "spec:\n  selector: {app: web}\n  ports:\n  - port: 82\n    targetPort: 8080\n")
    (folder / "shared.yaml").symlink_to("sub/shared.yaml")
    (folder / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + SERVICE.format(name="bom").encode())
    run = plan(lab)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "demo/shared " in run.stdout and "demo/bom " in run.stdout, run.stdout


def test_many_one_line_documents_finish_in_time(lab: Path) -> None:
    """A file at the size limit made of 100,000 tiny documents: each is a problem, and the run
    still ends in seconds (reporting them was quadratic: hours)."""
    (lab / "manifests" / "zz.yaml").write_text("a: 1\n---\n" * 100_000)
    run = plan(lab)
    refused(run, "zz.yaml:199999: document 100000: kind: is missing")
    assert run.stderr.startswith("100000 problem(s) in"), run.stderr[:200]
