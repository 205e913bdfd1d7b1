"""podnet-conntrack-udp decides which UDP flows are stale like kube-proxy (--check: no changes)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

TOOL = (Path(__file__).resolve().parents[1] / "roles" / "kube_proxy" / "files"
        / "podnet-conntrack-udp")


def check(tmp: Path, want: dict, have: dict | None) -> dict:
    (tmp / "want.json").write_text(json.dumps(want))
    if have is not None:
        (tmp / "have.json").write_text(json.dumps(have))
    done = subprocess.run([str(TOOL), "sync", str(tmp / "want.json"), str(tmp / "have.json"),
                           "--check"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_unchanged_endpoints_need_no_cleanup(tmp_path: Path) -> None:
    same = {"10.96.0.5:53": ["10.244.1.2:53"]}
    assert check(tmp_path, same, same) == {"changed": False, "cleanups": 0, "flows_deleted": 0}


def test_gone_endpoint_new_service_and_removed_service(tmp_path: Path) -> None:
    want = {"10.96.0.5:53": ["10.244.1.3:53"], "10.96.0.6:53": ["10.244.1.4:53"]}
    have = {"10.96.0.5:53": ["10.244.1.2:53", "10.244.1.3:53"], "10.96.0.7:53": []}
    # .5 lost one endpoint; .6 is new (flows to it were not NATed); .7 is gone
    assert check(tmp_path, want, have)["cleanups"] == 3


def test_state_from_before_ports_were_kept(tmp_path: Path) -> None:
    got = check(tmp_path, {"10.96.0.5:53": ["10.244.1.3:53"]}, {"10.96.0.5:53": ["10.244.1.2"]})
    assert got["cleanups"] == 1


def test_first_run_flushes_every_udp_service(tmp_path: Path) -> None:
    assert check(tmp_path, {"10.96.0.5:53": ["10.244.1.3:53"]}, None)["cleanups"] == 1
