"""Comparing iptables-restore dumps the way kube-proxy's tests compare them (proxier_test.go's
sortIPTablesRules over iptablestest.ParseIPTablesDump): test code, kept out of the package."""

from __future__ import annotations

NODEPORTS_LAST = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'


def sort_dump(text: str) -> str:
    """Order a dump the way kube-proxy's tests compare them: tables by name; chains
    KUBE-NODEPORTS, KUBE-SERVICES, then the rest by name; rules grouped by chain in that
    order, KUBE-NODEPORTS and KUBE-SERVICES rules by their comment's service name with the
    nodeports rule last; other chains keep their rule order.

    A rule of a chain its table does not declare, or a line outside a table, raises
    ValueError, as kube-proxy's parser refuses such a dump: dropping them would compare two
    dumps without the rules that differ. The nodeports rule's place is not compared here
    (sorting puts it last); tests/test_proxier_golden.py asserts it on the raw render."""
    tables: dict[str, tuple[list[str], list[str]]] = {}
    current = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "COMMIT":
            current = ""
        elif line.startswith("*"):
            current = line[1:]
            tables.setdefault(current, ([], []))
        elif not current:
            raise ValueError(f"line {number}: {line!r} is outside a table (*table ... COMMIT)")
        elif line.startswith(":"):
            tables[current][0].append(line)
        else:
            tables[current][1].append(line)

    def chain_key(name: str) -> tuple[int, str]:
        return ({"KUBE-NODEPORTS": 0, "KUBE-SERVICES": 1}.get(name, 2), name)

    def service_of(rule: str) -> str:
        if NODEPORTS_LAST in rule:
            return "\uffff"
        words = rule.split("--comment ", 1)
        return words[1].lstrip('"').split()[0] if len(words) > 1 else ""

    out = []
    for table in sorted(tables):
        chains, rules = tables[table]
        names = sorted((c[1:].split()[0] for c in chains), key=chain_key)
        undeclared = [r for r in rules if len(r.split()) < 2 or r.split()[1] not in names]
        if undeclared:
            raise ValueError(f"table {table}: rule of a chain the table does not declare: "
                             f"{undeclared[0]!r}")
        out.append(f"*{table}")
        out.extend(f":{n} - [0:0]" for n in names)
        for name in names:
            mine = [r for r in rules if r.split()[1] == name]
            if name in ("KUBE-NODEPORTS", "KUBE-SERVICES"):
                mine = sorted(mine, key=service_of)
            out.extend(mine)
        out.append("COMMIT")
    return "\n".join(out) + "\n"
