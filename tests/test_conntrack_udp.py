"""podnet-conntrack-udp decides which UDP flows are stale like kube-proxy (--check: no changes).

Each case also runs the sync for real against a fake `conntrack` that holds a flow table and
deletes what the given filters match, as `conntrack -D` does: the tests name every deletion's
argv and every flow left, so a tool that deletes all of a Service's flows, or none, fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TOOL = (Path(__file__).resolve().parents[1] / "roles" / "kube_proxy" / "files"
        / "podnet-conntrack-udp")

# conntrack -D [filters]: delete the flows every filter matches, log the argv, and answer as
# conntrack-tools does (the count on stderr; status 1 when nothing matched). A filter it does
# not know is an error, so a tool that starts filtering on something else fails here loudly.
FAKE_CONNTRACK = """\
import json, os, sys
FIELDS = {"-p": "proto", "--orig-dst": "orig_dst", "--orig-port-dst": "orig_dport",
          "--reply-src": "reply_src", "--reply-port-src": "reply_sport"}
argv = sys.argv[1:]
with open(os.environ["FAKE_CONNTRACK_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\\n")
if argv[:1] != ["-D"] or len(argv) % 2 != 1 or any(a not in FIELDS for a in argv[1::2]):
    sys.exit(f"fake conntrack: cannot read {argv}")
want = {FIELDS[flag]: value for flag, value in zip(argv[1::2], argv[2::2])}
table = os.environ["FAKE_CONNTRACK_TABLE"]
with open(table) as f:
    flows = json.load(f)
kept = [f for f in flows if any(f[k] != v for k, v in want.items())]
with open(table, "w") as f:
    json.dump(kept, f)
gone = len(flows) - len(kept)
print(f"conntrack v1.4.7 (conntrack-tools): {gone} flow entries have been deleted.",
      file=sys.stderr)
sys.exit(0 if gone else 1)
"""

CLIENT = "10.244.2.9"


def flow(text: str) -> dict[str, str]:
    """``"udp 10.96.0.5:53 -> 10.244.1.2:53"``: a flow from a client to the address on the left
    (a ClusterIP, or a node's IP for a NodePort), answered from the right (the endpoint it was
    DNATed to, or the address itself when it was not NATed)."""
    proto, orig, _, reply = text.split()
    orig_dst, orig_dport = orig.rsplit(":", 1)
    reply_src, reply_sport = reply.rsplit(":", 1)
    return {"proto": proto, "orig_src": CLIENT, "orig_dst": orig_dst, "orig_dport": orig_dport,
            "reply_src": reply_src, "reply_sport": reply_sport}


def text_of(entry: dict[str, str]) -> str:
    return (f"{entry['proto']} {entry['orig_dst']}:{entry['orig_dport']} -> "
            f"{entry['reply_src']}:{entry['reply_sport']}")


def check(tmp: Path, want: dict, have: dict | None) -> dict:
    (tmp / "want.json").write_text(json.dumps(want))
    if have is not None:
        (tmp / "have.json").write_text(json.dumps(have))
    done = subprocess.run([str(TOOL), "sync", str(tmp / "want.json"), str(tmp / "have.json"),
                           "--check"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def sync(tmp: Path, want: dict, have: dict | None, flows: list[str],
         *extra: str) -> tuple[dict, list[list[str]], list[str]]:
    """Run the sync with the fake conntrack holding ``flows``: the tool's report, the argv of
    every conntrack call in order, and the flows left."""
    run = tmp / "run"
    (run / "bin").mkdir(parents=True)
    fake = run / "bin" / "conntrack"
    fake.write_text(f"#!{sys.executable}\n{FAKE_CONNTRACK}")
    fake.chmod(0o755)
    table, log = run / "flows.json", run / "calls"
    table.write_text(json.dumps([flow(f) for f in flows]))
    log.touch()
    (run / "want.json").write_text(json.dumps(want))
    if have is not None:
        (run / "have.json").write_text(json.dumps(have))
    env = {**os.environ, "PATH": f"{run / 'bin'}:{os.environ['PATH']}",
           "FAKE_CONNTRACK_TABLE": str(table), "FAKE_CONNTRACK_LOG": str(log)}
    done = subprocess.run([str(TOOL), "sync", str(run / "want.json"), str(run / "have.json"),
                           *extra], capture_output=True, text=True, check=True, env=env)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    left = [text_of(e) for e in json.loads(table.read_text())]
    return json.loads(done.stdout), calls, left


def delete(*filters: str) -> list[str]:
    return ["-D", "-p", "udp", *filters]


# flows that no sync below may touch: another protocol, another port of a Service's IP,
# another Service
BYSTANDERS = ["tcp 10.96.0.5:53 -> 10.244.1.2:53", "udp 10.96.0.5:5353 -> 10.244.1.2:5353",
              "udp 10.96.0.9:53 -> 10.244.1.2:53"]


def test_unchanged_endpoints_need_no_cleanup(tmp_path: Path) -> None:
    same = {"10.96.0.5:53": ["10.244.1.2:53"]}
    assert check(tmp_path, same, same) == {"changed": False, "cleanups": 0, "flows_deleted": 0}
    flows = ["udp 10.96.0.5:53 -> 10.244.1.2:53", *BYSTANDERS]
    report, calls, left = sync(tmp_path, same, same, flows)
    assert (report, calls, left) == ({"changed": False, "cleanups": 0, "flows_deleted": 0}, [],
                                     flows)


def test_gone_endpoint_new_service_and_removed_service(tmp_path: Path) -> None:
    want = {"10.96.0.5:53": ["10.244.1.3:53"], "10.96.0.6:53": ["10.244.1.4:53"]}
    have = {"10.96.0.5:53": ["10.244.1.2:53", "10.244.1.3:53"], "10.96.0.7:53": []}
    # .5 lost one endpoint; .6 is new (flows to it were not NATed); .7 is gone
    assert check(tmp_path, want, have)["cleanups"] == 3
    stale = ["udp 10.96.0.5:53 -> 10.244.1.2:53",  # DNATed to the endpoint that went
             "udp 10.96.0.6:53 -> 10.96.0.6:53",  # sent before .6 had endpoints: not NATed
             "udp 10.96.0.7:53 -> 10.96.0.7:53"]  # to a Service that is gone
    kept = ["udp 10.96.0.5:53 -> 10.244.1.3:53", *BYSTANDERS]  # .5's endpoint that stays
    report, calls, left = sync(tmp_path, want, have, stale + kept)
    assert calls == [
        delete("--orig-dst", "10.96.0.5", "--orig-port-dst", "53",
               "--reply-src", "10.244.1.2", "--reply-port-src", "53"),
        delete("--orig-dst", "10.96.0.6", "--orig-port-dst", "53"),
        delete("--orig-dst", "10.96.0.7", "--orig-port-dst", "53")]
    assert left == kept
    assert report == {"changed": True, "cleanups": 3, "flows_deleted": 3}
    assert json.loads((tmp_path / "run" / "have.json").read_text()) == want


def test_state_from_before_ports_were_kept(tmp_path: Path) -> None:
    got = check(tmp_path, {"10.96.0.5:53": ["10.244.1.3:53"]}, {"10.96.0.5:53": ["10.244.1.2"]})
    assert got["cleanups"] == 1
    # the old state has the endpoint's IP only: its flows go whatever port they answer from
    kept = ["udp 10.96.0.5:53 -> 10.244.1.3:53", *BYSTANDERS]
    report, calls, left = sync(tmp_path, {"10.96.0.5:53": ["10.244.1.3:53"]},
                               {"10.96.0.5:53": ["10.244.1.2"]},
                               ["udp 10.96.0.5:53 -> 10.244.1.2:53",
                                "udp 10.96.0.5:53 -> 10.244.1.2:5353", *kept])
    assert calls == [delete("--orig-dst", "10.96.0.5", "--orig-port-dst", "53",
                            "--reply-src", "10.244.1.2")]
    assert left == kept
    assert report["flows_deleted"] == 2


def test_first_run_flushes_every_udp_service(tmp_path: Path) -> None:
    assert check(tmp_path, {"10.96.0.5:53": ["10.244.1.3:53"]}, None)["cleanups"] == 1
    # without a state every flow of the Service port may be stale, NATed or not
    report, calls, left = sync(tmp_path, {"10.96.0.5:53": ["10.244.1.3:53"]}, None,
                               ["udp 10.96.0.5:53 -> 10.244.1.3:53",
                                "udp 10.96.0.5:53 -> 10.96.0.5:53", *BYSTANDERS])
    assert calls == [delete("--orig-dst", "10.96.0.5", "--orig-port-dst", "53")]
    assert left == BYSTANDERS
    assert report == {"changed": True, "cleanups": 1, "flows_deleted": 2}


def test_a_nodeport_loses_its_gone_endpoints_flows_on_every_node_address(tmp_path: Path) -> None:
    # a NodePort is matched by port alone: the flows came to any of the node's addresses
    want = {"nodeport:30053": ["10.244.1.3:53"], "10.96.0.5:53": ["10.244.1.3:53"]}
    have = {"nodeport:30053": ["10.244.1.2:53", "10.244.1.3:53"],
            "10.96.0.5:53": ["10.244.1.3:53"]}
    kept = ["udp 192.168.56.11:30053 -> 10.244.1.3:53",
            "udp 10.96.0.5:53 -> 10.244.1.3:53", *BYSTANDERS]
    report, calls, left = sync(tmp_path, want, have,
                               ["udp 192.168.56.11:30053 -> 10.244.1.2:53",
                                "udp 10.244.1.1:30053 -> 10.244.1.2:53", *kept])
    assert calls == [delete("--orig-port-dst", "30053", "--reply-src", "10.244.1.2",
                            "--reply-port-src", "53")]
    assert left == kept
    assert report == {"changed": True, "cleanups": 1, "flows_deleted": 2}


def test_a_service_left_without_endpoints_loses_only_their_flows(tmp_path: Path) -> None:
    # flows to a Service with no endpoints now are REJECTed afresh; the old ones must go
    want: dict[str, list[str]] = {"10.96.0.5:53": [], "10.96.0.6:53": []}
    have = {"10.96.0.5:53": ["10.244.1.2:53"], "10.96.0.6:53": []}
    kept = ["udp 10.96.0.6:53 -> 10.96.0.6:53", *BYSTANDERS]
    report, calls, left = sync(tmp_path, want, have,
                               ["udp 10.96.0.5:53 -> 10.244.1.2:53", *kept])
    assert calls == [delete("--orig-dst", "10.96.0.5", "--orig-port-dst", "53",
                            "--reply-src", "10.244.1.2", "--reply-port-src", "53")]
    assert left == kept
    assert report == {"changed": True, "cleanups": 1, "flows_deleted": 1}


def test_check_mode_deletes_nothing_and_keeps_the_state(tmp_path: Path) -> None:
    want = {"10.96.0.5:53": ["10.244.1.3:53"]}
    have = {"10.96.0.5:53": ["10.244.1.2:53"]}
    flows = ["udp 10.96.0.5:53 -> 10.244.1.2:53", *BYSTANDERS]
    report, calls, left = sync(tmp_path, want, have, flows, "--check")
    assert (report, calls, left) == ({"changed": True, "cleanups": 1, "flows_deleted": 0}, [],
                                     flows)
    assert json.loads((tmp_path / "run" / "have.json").read_text()) == have
