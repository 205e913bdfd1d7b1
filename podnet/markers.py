"""The verify suites' pytest markers: each test's ``principle("flat network")`` marker (what
reports read) also becomes a marker named by its slug (``flat_network``), which ``pytest -m``
can select; verify/conftest.py applies the rule and verify/pytest.ini registers the names.
"""

from __future__ import annotations

import re

# pytest's -m grammar: identifiers, and/or/not, parentheses, and keyword arguments
# (`-m "device(serial='123')"`); an identifier is what _pytest/mark/expression.py accepts
_IDENT = re.compile(r"(?:\w|:|\+|-|\.|\[|\]|\\|/)+")
_KEYWORD_ARGS = re.compile(r"\([^()]*=[^()]*\)")
_OPERATORS = {"and", "or", "not", "True", "False", "None"}


def slug(principle: str) -> str:
    """The marker name of a principle: lower case, runs of anything but letters and digits
    become one underscore (``"unique pod IP"`` -> ``unique_pod_ip``, ``"NodePort"`` ->
    ``nodeport``)."""
    name = re.sub(r"[^a-z0-9]+", "_", principle.lower()).strip("_")
    if not name:
        raise ValueError(f"principle {principle!r} has no letters or digits to name a marker")
    return name


def registered(lines: list[str]) -> set[str]:
    """Marker names from pytest's ``markers`` ini lines (``name(args): help`` or ``name: help``)."""
    names = set()
    for line in lines:
        match = re.match(r"\s*([\w.-]+)", line)
        if match:
            names.add(match.group(1))
    return names


def unknown(expression: str, known: set[str]) -> list[str]:
    """The names a ``-m`` expression uses that are not registered markers, in order.

    pytest itself treats an unknown name as a marker no test has: ``-m flat_netwrok`` selects
    nothing and passes quietly; verify/conftest.py turns this list into a usage error."""
    text = _KEYWORD_ARGS.sub(" ", expression)
    out: list[str] = []
    for name in _IDENT.findall(text):
        if name not in _OPERATORS and name not in known and name not in out:
            out.append(name)
    return out
