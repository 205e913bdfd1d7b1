"""podnet-dns against a real unbound in a throwaway network namespace: sync loads record
changes into the running server (names replaced, added, removed; CNAME zones; PTRs into the
zone), check mode, the dependency-free query, and the pod's /health and /ready endpoints."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parents[1] / "roles" / "cluster_dns" / "files" / "podnet-dns"

needs_sandbox = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in (
        "unshare", "unbound", "unbound-control", "dig", "curl", "ip")),
    reason="needs root, unshare, unbound, unbound-control, dig and curl")

CONF = """server:
  interface: 127.0.0.1@53
  do-ip6: no
  do-daemonize: no
  chroot: ""
  username: ""
  pidfile: ""
  use-syslog: no
  logfile: ""
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
  unblock-lan-zones: yes
  insecure-lan-zones: yes
  local-zone: "cluster.local." static
  include: "{tmp}/records.conf"
remote-control:
  control-enable: yes
  control-interface: {tmp}/u.ctl
  control-use-cert: no
"""
SOA = ("cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. "
       "{} 7200 1800 86400 5")
PTR = "  local-data: '20.0.96.10.in-addr.arpa. 5 IN PTR web.demo.svc.cluster.local.'\n"
CNAME = ("  local-zone: 'up.demo.svc.cluster.local.' redirect\n"
         "  local-data: 'up.demo.svc.cluster.local. 5 IN CNAME www.example.test.'\n")
RECORDS = ("server:\n"
           f"  local-data: '{SOA.format(100)}'\n"
           "  local-data: 'dns-version.cluster.local. 28800 IN TXT \"1.1.0\"'\n"
           "  local-data: 'web.demo.svc.cluster.local. 5 IN A 10.96.0.20'\n"
           "  local-data: 'old.demo.svc.cluster.local. 5 IN A 10.96.0.40'\n"
           + PTR + CNAME)
# the A record changes, a name comes, a name goes, the serial moves on
NEXT = (RECORDS.replace("10.96.0.20'", "10.96.0.21'").replace(" 100 ", " 101 ")
        .replace("  local-data: 'old.demo.svc.cluster.local. 5 IN A 10.96.0.40'\n",
                 "  local-data: 'api.demo.svc.cluster.local. 5 IN A 10.96.0.30'\n"))
START = """set -u
ip link set lo up
unbound -c $CONF 2>$T/unbound.log & U=$!
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT
for _ in $(seq 100); do unbound-control -c $CONF status >/dev/null 2>&1 && break; sleep 0.1; done
unbound-control -c $CONF status >/dev/null || { cat $T/unbound.log >&2; exit 1; }
use() { cp "$T/$1" $T/records.conf; }
dsync() { $DNS sync $CONF $T/records.conf "$@"; }
ask() { echo "$1=$(dig +short +time=2 +tries=1 @127.0.0.1 "$1" "${2:-A}")"; }
status() { echo "$1=$(dig +time=2 +tries=1 @127.0.0.1 "$1" "${2:-A}" | grep -o 'status: [A-Z]*')"; }
"""


def sandbox(tmp: Path, script: str, **files: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in new net/mount/pid namespaces next to an unbound serving RECORDS;
    ``files`` are written to the tmp dir for the script to swap in with ``use NAME``."""
    (tmp / "unbound.conf").write_text(CONF.format(tmp=tmp))
    (tmp / "records.conf").write_text(RECORDS)
    for name, text in files.items():
        (tmp / name).write_text(text)
    env = {**os.environ, "DNS": str(TOOL), "T": str(tmp), "CONF": str(tmp / "unbound.conf")}
    return subprocess.run(["unshare", "--net", "--mount", "--pid", "--mount-proc", "--fork",
                           "--kill-child", "bash", "-c", START + script], env=env,
                          capture_output=True, text=True, check=False, timeout=60)


def results(run: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def facts(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``key=value`` lines the script echoed (the last one wins)."""
    return {m.group(1): m.group(2) for line in run.stdout.splitlines()
            if (m := re.match(r"^(\S+?)=(.*)$", line))}


def load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("podnet_dns", str(TOOL))
    spec = importlib.util.spec_from_loader("podnet_dns", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_records_are_compared_normalised() -> None:
    dns = load()
    assert dns.normal("Web.Demo.  5 in a   10.0.0.1") == ("web.demo.", "5", "IN", "A", "10.0.0.1")
    with pytest.raises(ValueError, match="not a resource record"):
        dns.normal("web.demo. 5 IN A")


def test_only_the_zone_and_ptrs_into_it_are_ours() -> None:
    dns, zone = load(), "cluster.local."
    assert dns.ours(dns.normal("web.svc.cluster.local. 5 IN A 10.0.0.1"), zone)
    assert dns.ours(dns.normal(SOA.format(1)), zone)
    assert dns.ours(dns.normal("1.0.0.10.in-addr.arpa. 5 IN PTR web.svc.cluster.local."), zone)
    assert not dns.ours(dns.normal("1.0.0.127.in-addr.arpa. 10800 IN PTR localhost."), zone)
    assert not dns.ours(dns.normal("localhost. 10800 IN A 127.0.0.1"), zone)
    assert not dns.ours(dns.normal("xcluster.local. 5 IN A 10.0.0.1"), zone)


def test_zone_and_serial_come_from_the_files(tmp_path: Path) -> None:
    dns = load()
    (tmp_path / "records.conf").write_text(NEXT)
    assert dns.zone_of(CONF.format(tmp=tmp_path)) == "cluster.local."
    assert dns.records_serial(tmp_path / "records.conf") == "101"
    assert dns.wanted_zones(tmp_path / "records.conf") == {
        ("up.demo.svc.cluster.local.", "redirect")}


@needs_sandbox
def test_sync_changes_nothing_when_the_server_serves_the_file(tmp_path: Path) -> None:
    run = sandbox(tmp_path, "dsync\n")
    assert results(run) == [{"changed": False, "removed": [], "added": [],
                             "zones_removed": [], "zones_added": []}], run.stderr


@needs_sandbox
def test_sync_replaces_exactly_the_changed_names(tmp_path: Path) -> None:
    run = sandbox(tmp_path, """
use next.conf; dsync; dsync
ask web.demo.svc.cluster.local; ask api.demo.svc.cluster.local; ask cluster.local SOA
status old.demo.svc.cluster.local
""", **{"next.conf": NEXT})
    first, second = results(run)
    assert first["changed"] and not second["changed"], run.stdout + run.stderr
    assert first["removed"] == ["cluster.local.", "old.demo.svc.cluster.local.",
                                "web.demo.svc.cluster.local."]
    assert first["added"] == ["api.demo.svc.cluster.local. 5 IN A 10.96.0.30", SOA.format(101),
                              "web.demo.svc.cluster.local. 5 IN A 10.96.0.21"]
    got = facts(run)
    assert got["web.demo.svc.cluster.local"] == "10.96.0.21"
    assert got["api.demo.svc.cluster.local"] == "10.96.0.30"
    assert " 101 7200 " in got["cluster.local"]
    assert got["old.demo.svc.cluster.local"] == "status: NXDOMAIN"


@needs_sandbox
def test_check_mode_reports_the_change_but_leaves_the_server(tmp_path: Path) -> None:
    run = sandbox(tmp_path, """
use next.conf; dsync --check
ask web.demo.svc.cluster.local; ask old.demo.svc.cluster.local
dsync
""", **{"next.conf": NEXT})
    check, real = results(run)
    assert check == real and check["changed"], run.stdout + run.stderr
    assert facts(run) == {"web.demo.svc.cluster.local": "10.96.0.20",
                          "old.demo.svc.cluster.local": "10.96.0.40"}


@needs_sandbox
def test_a_cname_comes_and_goes_with_its_redirect_zone(tmp_path: Path) -> None:
    run = sandbox(tmp_path, """
use without.conf; dsync; status up.demo.svc.cluster.local CNAME
use records.orig; dsync; ask up.demo.svc.cluster.local CNAME
use without.conf; dsync; status up.demo.svc.cluster.local CNAME
""", **{"without.conf": RECORDS.replace(CNAME, ""), "records.orig": RECORDS})
    gone, back, again = results(run)
    assert gone["zones_removed"] == ["up.demo.svc.cluster.local."], run.stdout + run.stderr
    assert gone["removed"] == ["up.demo.svc.cluster.local."] and not gone["added"]
    assert back["zones_added"] == ["up.demo.svc.cluster.local. redirect"]
    assert back["added"] == ["up.demo.svc.cluster.local. 5 IN CNAME www.example.test."]
    assert again == gone
    assert "up.demo.svc.cluster.local=www.example.test." in run.stdout
    assert facts(run)["up.demo.svc.cluster.local"] == "status: NXDOMAIN"


@needs_sandbox
def test_ptrs_into_the_zone_are_managed_and_the_rest_left_alone(tmp_path: Path) -> None:
    moved = RECORDS.replace(PTR, PTR.replace("20.0.96.10", "21.0.96.10"))
    run = sandbox(tmp_path, """
use moved.conf; dsync
echo "ptrs=$(unbound-control -c $CONF list_local_data | grep PTR | grep -c cluster.local)"
unbound-control -c $CONF list_local_data | grep -q '^20.0.96.10' && echo "old-ptr=present"
ask 21.0.96.10.in-addr.arpa PTR; ask localhost; ask 1.0.0.127.in-addr.arpa PTR
""", **{"moved.conf": moved})
    (synced,) = results(run)
    assert synced["removed"] == ["20.0.96.10.in-addr.arpa."], run.stdout + run.stderr
    assert synced["added"] == ["21.0.96.10.in-addr.arpa. 5 IN PTR web.demo.svc.cluster.local."]
    got = facts(run)
    assert got["ptrs"] == "1" and "old-ptr" not in got
    assert got["21.0.96.10.in-addr.arpa"] == "web.demo.svc.cluster.local."
    assert got["localhost"] == "127.0.0.1"
    assert got["1.0.0.127.in-addr.arpa"] == "localhost."


@needs_sandbox
def test_query_prints_the_rcode_and_the_data(tmp_path: Path) -> None:
    run = sandbox(tmp_path, """
q() { out=$($DNS query "$1" "$2" 127.0.0.1 53); rc=$?; echo "$1/$2=$rc $out"; }
q web.demo.svc.cluster.local A; q dns-version.cluster.local TXT; q cluster.local SOA
q up.demo.svc.cluster.local CNAME; q 20.0.96.10.in-addr.arpa PTR; q nope.cluster.local A
""")
    assert facts(run) == {
        "web.demo.svc.cluster.local/A": "0 NOERROR: 10.96.0.20",
        "dns-version.cluster.local/TXT": "0 NOERROR: 1.1.0",
        "cluster.local/SOA": "0 NOERROR: 100",
        "up.demo.svc.cluster.local/CNAME": "0 NOERROR: www.example.test.",
        "20.0.96.10.in-addr.arpa/PTR": "0 NOERROR: web.demo.svc.cluster.local.",
        "nope.cluster.local/A": "1 NXDOMAIN: ",
    }, run.stdout + run.stderr


@needs_sandbox
def test_health_and_ready_follow_the_server(tmp_path: Path) -> None:
    run = sandbox(tmp_path, """
$DNS health 8053 cluster.local $T/records.conf &
get() { code=$(curl -s -o $T/body -w '%{http_code}' "http://127.0.0.1:8053$2");
        echo "$1$2=$code $(cat $T/body)"; }
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8053/ && break; sleep 0.1; done
get up /health; get up /ready; get up /other
use next.conf; get moved /ready
kill $U; wait $U
get down /health; get down /ready
""", **{"next.conf": NEXT})
    got = facts(run)
    assert got["up/health"] == "200 OK dns-version.cluster.local TXT: NOERROR 1.1.0", run.stderr
    assert got["up/ready"] == "200 OK cluster.local SOA: NOERROR 100 (records file serial 100)"
    assert got["up/other"].startswith("404 ")
    assert got["moved/ready"] == "200 OK cluster.local SOA: NOERROR 100 (records file serial 101)"
    assert got["down/health"].startswith("503 dns-version.cluster.local TXT: no answer")
    assert got["down/ready"].startswith("503 cluster.local SOA: no answer")
    assert got["down/ready"].endswith("(records file serial 101)")


PODS = ('[{"key": "kube-system/dns", "unit": "dns.service", "config": "CONF", '
        '"ip": "127.0.0.1", "port": PORT}]')


@needs_sandbox
def test_converge_syncs_waits_for_the_serial_and_restarts_only_a_changed_config(tmp_path: Path
                                                                                ) -> None:
    pods = PODS.replace("CONF", str(tmp_path / "unbound.conf"))
    run = sandbox(tmp_path, """
export PODNET_DNS_APPLIED_DIR=$T/applied
mkdir -p $T/applied && cp $CONF $T/applied/dns.service.conf
use next.conf
$DNS converge $T/pods.json $T/records.conf --timeout=5
ask web.demo.svc.cluster.local
$DNS converge $T/pods.json $T/records.conf --timeout=5
echo '# started with another config' >> $T/applied/dns.service.conf
$DNS converge $T/pods.json $T/records.conf --check
cp $CONF $T/applied/dns.service.conf
$DNS converge $T/bad-pods.json $T/records.conf --timeout=1; echo "rc=$?"
""", **{"next.conf": NEXT, "pods.json": pods.replace("PORT", "53"),
        "bad-pods.json": pods.replace("PORT", "54")})
    assert results(run) == [
        {"changed": True, "restarted": [], "synced": ["kube-system/dns"]},
        {"changed": False, "restarted": [], "synced": []},
        # check mode: the restart is reported, not done (systemd is not here to do it)
        {"changed": True, "restarted": ["kube-system/dns"], "synced": []}], run.stderr
    assert facts(run)["web.demo.svc.cluster.local"] == "10.96.0.21"
    assert facts(run)["rc"] != "0"
    assert ("kube-system/dns did not answer cluster.local. SOA with serial 101 on "
            "127.0.0.1:54 within 1 s") in run.stderr
