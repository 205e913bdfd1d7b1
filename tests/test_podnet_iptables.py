"""podnet-iptables in a throwaway network namespace: atomic apply with --noflush, stale
chains deleted, foreign rules kept, flushed rules repaired, check mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from nodekit import sandbox  # $TOOL is podnet-iptables, $DIR the rules folder

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("iptables-restore") or not shutil.which("unshare"),
    reason="needs root, unshare and iptables (make setup installs them)")

RULES = """*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAA - [0:0]
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-AAAA
-A KUBE-SVC-AAAA -p tcp -j DNAT --to-destination 10.0.0.5:80
COMMIT
"""
JUMPS = 'nat PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n'


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "50-kp.rules").write_text(RULES)
    (folder / "50-kp.jumps").write_text(JUMPS)
    (folder / "50-kp.owns").write_text("nat KUBE-SVC- KUBE-SEP-\n")
    return tmp_path


def results(run: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def test_apply_is_idempotent_and_keeps_foreign_rules(rules_dir: Path) -> None:
    run = sandbox(rules_dir, """
iptables -t nat -N FOREIGN && iptables -t nat -A FOREIGN -j RETURN
iptables -t nat -A POSTROUTING -j FOREIGN
$TOOL apply $DIR
$TOOL apply $DIR
$TOOL apply $DIR --check
iptables-save -t nat | grep -c -- '-j FOREIGN'
iptables -t nat -S KUBE-SVC-AAAA
""")
    assert run.returncode == 0, run.stderr
    first, second, check = results(run)
    assert first["changed"] and first["jumps_added"]
    assert not second["changed"] and not check["changed"]
    assert "\n1\n" in run.stdout  # the foreign jump is still there, once
    assert "-A KUBE-SVC-AAAA -p tcp -j DNAT --to-destination 10.0.0.5:80" in run.stdout


def test_stale_chains_go_in_the_same_transaction(rules_dir: Path) -> None:
    (rules_dir / "rules" / "next.rules").write_text(RULES.replace("AAAA", "BBBB"))
    run = sandbox(rules_dir, """
$TOOL apply $DIR >/dev/null
mv $DIR/next.rules $DIR/50-kp.rules
$TOOL apply $DIR --check
$TOOL apply $DIR
iptables-save -t nat | grep -c KUBE-SVC-AAAA
iptables -t nat -S KUBE-SVC-BBBB | tail -1
""")
    check, applied = results(run)
    assert check["changed"] and applied["changed"] and applied["stale_chains_deleted"] == 1
    assert "\n0\n-A KUBE-SVC-BBBB" in run.stdout, run.stdout + run.stderr


def test_repair_puts_back_flushed_rules_and_only_then(rules_dir: Path) -> None:
    run = sandbox(rules_dir, """
$TOOL apply $DIR >/dev/null
$TOOL repair $DIR; echo "quiet=$?"
iptables -t nat -F
$TOOL repair $DIR
iptables -t nat -C PREROUTING -m comment --comment "kubernetes service portals" \
  -j KUBE-SERVICES && echo JUMP
iptables -t nat -S KUBE-SERVICES | grep -c DNAT -; iptables -t nat -S KUBE-SERVICES | tail -1
""")
    assert "quiet=0" in run.stdout and len(results(run)) == 1, run.stdout + run.stderr
    assert "repairing, gone: missing: -A PREROUTING" in run.stderr
    assert "JUMP" in run.stdout and "-j KUBE-SVC-AAAA" in run.stdout


def test_a_broken_file_changes_nothing(rules_dir: Path) -> None:
    (rules_dir / "rules" / "60-bad.rules").write_text("*nat\n-A NOWHERE -j ACCEPT\nCOMMIT\n")
    run = sandbox(rules_dir, "$TOOL apply $DIR; echo rc=$?; echo kube=$(iptables-save -t nat "
                  "| grep -c KUBE)")
    assert "60-bad.rules" in run.stderr
    assert "rc=1" in run.stdout
    # every file is tested before any is applied: the good 50-kp.rules is not applied either
    assert "kube=0" in run.stdout, run.stdout + run.stderr
    assert "/60-bad.rules: iptables-restore: line" in run.stderr
    assert "(nothing was applied)" in run.stderr


def test_a_table_that_fails_puts_back_the_tables_applied_before_it(rules_dir: Path) -> None:
    # the nat table commits, then the filter table fails: nat is put back as it was
    (rules_dir / "rules" / "60-bad.rules").write_text("*filter\n-A NOWHERE -j ACCEPT\nCOMMIT\n")
    run = sandbox(rules_dir, """
iptables -t nat -N FOREIGN && iptables -t nat -A FOREIGN -j RETURN
$TOOL apply $DIR; echo rc=$?
echo kube=$(iptables-save -t nat | grep -c KUBE) foreign=$(iptables -t nat -S FOREIGN | wc -l)
""")
    assert "rc=1" in run.stdout and "/60-bad.rules:" in run.stderr, run.stdout + run.stderr
    assert "kube=0 foreign=2" in run.stdout, run.stdout + run.stderr


def test_repair_notices_a_rule_deleted_inside_a_chain(rules_dir: Path) -> None:
    run = sandbox(rules_dir, """
$TOOL apply $DIR >/dev/null
iptables -t nat -F KUBE-SVC-AAAA
$TOOL apply $DIR --check
$TOOL repair $DIR
iptables -t nat -S KUBE-SVC-AAAA | tail -1
""")
    check, repaired = results(run)
    assert check["changed"] and repaired["changed"], run.stdout + run.stderr
    assert "-j DNAT" in run.stdout.splitlines()[-1]


def test_jumps_no_longer_wanted_are_removed(rules_dir: Path) -> None:
    run = sandbox(rules_dir, """
$TOOL apply $DIR >/dev/null
J='nat OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
echo "$J" > $DIR/50-kp.jumps
$TOOL apply $DIR
iptables -t nat -S PREROUTING | grep -c KUBE-SERVICES
""")
    applied = results(run)[0]
    assert applied["jumps_removed"] and applied["jumps_added"], run.stdout + run.stderr
    assert run.stdout.strip().endswith("0")


def test_watch_repairs_a_flush_on_its_own(rules_dir: Path) -> None:
    run = sandbox(rules_dir, """
$TOOL apply $DIR >/dev/null
$TOOL watch $DIR --interval=0.2 >/dev/null & W=$!
sleep 0.5; iptables -t nat -F KUBE-SVC-AAAA
for _ in $(seq 50); do iptables -t nat -S KUBE-SVC-AAAA | grep -q DNAT && break; sleep 0.1; done
echo "CHAIN-ENDS $(iptables -t nat -S KUBE-SVC-AAAA | tail -1)"
kill $W
""")
    # the watcher's JSON lines go elsewhere (sharing stdout, its line could be cut by the echo
    # above, written between its text and its newline); its stderr says what it repaired
    ends = [line for line in run.stdout.splitlines() if line.startswith("CHAIN-ENDS ")]
    assert len(ends) == 1 and "-j DNAT" in ends[0], run.stdout + run.stderr
    assert "repairing, gone:" in run.stderr
