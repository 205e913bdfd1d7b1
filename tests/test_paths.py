"""One definition of each node path and name (podnet/paths.py): the node tools' defaults agree
with it, and nothing else in the roles, the package or verify spells one of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from podnet.paths import PATHS, NodePaths

ROOT = Path(__file__).resolve().parents[1]

# the node tools ship as single files and cannot import podnet: their defaults must agree
TOOL_DEFAULTS = {
    "roles/cni/files/podnet-cni": {
        "PODNET_PODS_DIR": PATHS.pods_dir,
        "PODNET_STATE_DIR": PATHS.pod_state_dir,
        "PODNET_CNI_CACHE_DIR": PATHS.cni_cache_dir,
        "PODNET_ADMITTED_DIR": PATHS.admitted_dir,
        "PODNET_IPAM_ASSIGNMENTS": PATHS.ipam_assignments,
    },
    "roles/cni/files/podnet-ipam": {
        "PODNET_IPAM_STATE_DIR": PATHS.cni_ipam_dir,
    },
}


@pytest.mark.parametrize("tool", sorted(TOOL_DEFAULTS))
def test_node_tools_default_to_the_shared_paths(tool: str) -> None:
    text = (ROOT / tool).read_text(encoding="utf-8")
    for variable, path in TOOL_DEFAULTS[tool].items():
        found = re.search(rf'os\.environ\.get\("{variable}", "([^"]+)"\)', text)
        assert found, f"{tool} reads no {variable}"
        assert found.group(1) == path, f"{tool}: {variable} defaults to {found.group(1)}"


def test_podnet_ipam_reserves_where_reset_looks_and_reads_the_model_s_assignments() -> None:
    """podnet-ipam keeps network N's reservations in STATE_DIR/N<suffix>: the folder reset
    removes (paths.stable_reservations); and it reads the assignments version kubelet writes."""
    from podnet.kubelet import IPAM_ASSIGNMENTS_VERSION

    text = (ROOT / "roles/cni/files/podnet-ipam").read_text(encoding="utf-8")
    suffix = re.search(r'^RESERVATIONS_SUFFIX = "([^"]+)"$', text, re.M)
    version = re.search(r"^ASSIGNMENTS_VERSION = (\d+)$", text, re.M)
    assert suffix and version
    assert f"{PATHS.cni_ipam_dir}/{PATHS.cni_network}{suffix.group(1)}" == \
        PATHS.stable_reservations
    assert int(version.group(1)) == IPAM_ASSIGNMENTS_VERSION


def test_podnet_cni_looks_for_plugins_and_namespaces_where_the_nodes_have_them() -> None:
    text = (ROOT / "roles/cni/files/podnet-cni").read_text(encoding="utf-8")
    cni_path = re.search(r'os\.environ\.get\("CNI_PATH", "([^"]+)"\)', text)
    assert cni_path and cni_path.group(1).split(":")[0] == PATHS.cni_plugin_dir
    assert f'NETNS_DIR = Path("{PATHS.netns_dir}")' in text


def shared_values() -> dict[str, str]:
    """Every podnet path (under /etc/podnet, /var/lib/podnet, ...) or name PATHS defines."""
    values = {name: value for name, value in PATHS.as_dict().items()
              if isinstance(value, str) and value.startswith("/")}
    return {name: value for name, value in values.items()
            if value not in ("/run/netns", "/usr/local/sbin")}  # system places, said often


def test_nothing_else_spells_a_shared_path() -> None:
    """Roles, templates, the package and verify read the paths from the plan or PATHS."""
    places = [*ROOT.glob("podnet/**/*.py"), *ROOT.glob("podnet/addons/*.yaml"),
              *ROOT.glob("verify/*.py"), *ROOT.glob("playbooks/*.yml"),
              *(p for p in ROOT.glob("roles/*/*/**/*") if p.is_file()
                and "files" not in p.parts)]
    found = []
    for path in places:
        if path.name == "paths.py":
            continue
        text = path.read_text(encoding="utf-8")
        for name, value in shared_values().items():
            if re.search(re.escape(value) + r"(?![\w.-])", text):
                found.append(f"{path.relative_to(ROOT)}: {value} ({name})")
    assert not found, "spelled outside podnet/paths.py:\n" + "\n".join(found)


def test_the_plan_carries_the_paths_and_they_come_back() -> None:
    from modelkit import make_plan

    from podnet.plan import Plan

    plan = make_plan()
    data = plan.data()
    assert data["paths"]["cni_runtime"] == f"{PATHS.bin_dir}/podnet-cni"
    assert data["paths"]["network_conf"] == f"{PATHS.cni_conf_dir}/10-podnet.conflist"
    assert data["paths"]["ingress_input"] == f"{PATHS.ingress_dir}/input.json"
    assert Plan.from_data(data).paths == PATHS


def test_paths_follow_their_folders() -> None:
    moved = NodePaths(bin_dir="/opt/podnet/bin", cni_conf_dir="/etc/cni/other",
                      pods_dir="/srv/pods", dns_dir="/srv/dns", cni_network="lab",
                      ingress_dir="/srv/ingress")
    assert moved.cni_runtime == "/opt/podnet/bin/podnet-cni"
    assert moved.netexec == "/opt/podnet/bin/podnet-netexec"
    assert moved.network_conf == "/etc/cni/other/10-podnet.conflist"
    assert moved.pod_dir("ns_p") == "/srv/pods/ns_p"
    assert moved.dns_records == "/srv/dns/records.conf"
    assert moved.ingress_input == "/srv/ingress/input.json"
    assert moved.cni_result("abc") == f"{PATHS.cni_cache_dir}/lab-abc-eth0"
    assert moved.cni_reservations == f"{PATHS.cni_ipam_dir}/lab"


def test_podnet_proxy_health_reads_the_applied_rules_where_podnet_iptables_keeps_them() -> None:
    """podnet-proxy-health compares the rendered rules with podnet-iptables' copy of its last
    apply: one folder, spelled in both single-file tools (podnet-iptables owns it)."""
    found = {}
    for tool in ("roles/pod_network/files/podnet-iptables",
                 "roles/kube_proxy/files/podnet-proxy-health"):
        match = re.search(r'^APPLIED = Path\("([^"]+)"\)', (ROOT / tool).read_text(
            encoding="utf-8"), re.MULTILINE)
        assert match, f"{tool} has no APPLIED = Path(...)"
        found[tool] = match.group(1)
    assert len(set(found.values())) == 1, found
