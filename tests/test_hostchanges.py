"""podnet/hostchanges.py, the one list of podnet's host changes: it covers everything the roles,
the renderers and the node tools make (a new chain, unit, path, tool state, or a file a role
writes where reset does not look, fails here), it agrees with the names they spell, bad input is
named with its fix, and docs/host-changes.md holds its table."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelkit import deployment, make_plan
from nodekit import load

from podnet import hostchanges, kubelet, proxier
from podnet.paths import PATHS

ROOT = Path(__file__).resolve().parents[1]
reset = load("ansible.module_utils.podnet_reset", ROOT / "plugins/module_utils/podnet_reset.py")
CAT = hostchanges.node_catalogue(hostchanges.inputs({}))


def every_kind_of_service() -> list[proxier.ServicePort]:
    """Service ports that make every chain kube-proxy's layout has: cluster, local, external,
    firewall and endpoint chains, and a Service without endpoints."""
    eps = (proxier.Endpoint("10.244.0.2", 8080, "node1"), proxier.Endpoint("10.244.1.2", 8080,
                                                                           "node2"))
    return [
        proxier.ServicePort("demo", "web", "http", "TCP", "10.96.0.20", 80, eps,
                            affinity_timeout=10800),
        proxier.ServicePort("demo", "lb", "http", "TCP", "10.96.0.21", 80, eps, node_port=30080,
                            lb_ips=("192.168.56.240",), source_ranges=("192.168.56.0/24",),
                            health_check_node_port=32000, external_local=True),
        proxier.ServicePort("demo", "local", "", "UDP", "10.96.0.22", 53, eps,
                            internal_local=True, external_ips=("192.168.56.50",)),
        proxier.ServicePort("demo", "none", "", "TCP", "10.96.0.23", 80),
    ]


@pytest.mark.parametrize("localhost_nodeports", [False, True])
def test_every_chain_and_jump_of_kube_proxys_rules_is_one_reset_removes(
        localhost_nodeports: bool) -> None:
    opts = proxier.Options(node_name="node1", node_ip="192.168.56.11",
                           cluster_cidr="10.244.0.0/16", localhost_nodeports=localhost_nodeports)
    text = proxier.rules_file(every_kind_of_service(), opts)
    chains = {line[1:].split()[0] for line in text.splitlines() if line.startswith(":")}
    owned = set(CAT["iptables"]["chains"])
    prefixes = tuple(CAT["iptables"]["prefixes"])
    # every kind of chain is made here
    assert all(any(c.startswith(p) for c in chains) for p in proxier.OWNED_PREFIXES)
    assert not [c for c in chains if c not in owned and not c.startswith(prefixes)]
    targets = {line.split(" -j ")[-1] for line in proxier.jumps(opts)}
    assert targets <= owned, targets - owned


def test_pod_networks_chains_jumps_and_comments_are_podnets() -> None:
    folder = ROOT / "roles/pod_network/templates/etc/podnet/iptables"
    rules = (folder / "10-pod-network.rules.j2").read_text()
    declared = re.findall(r"^:(\S+)", rules, re.M)
    assert declared and all(c.startswith(hostchanges.PODNET_CHAIN_PREFIX) for c in declared)
    comments = re.findall(r'--comment "([^"]*)"', rules)
    assert comments and all(c.startswith(hostchanges.PODNET_COMMENT) for c in comments)
    for line in (folder / "10-pod-network.jumps.j2").read_text().splitlines()[1:]:
        assert line.split(" -j ")[-1].startswith(hostchanges.PODNET_CHAIN_PREFIX), line
        assert f'--comment "{hostchanges.PODNET_COMMENT}' in line, line


def test_the_routes_protocol_is_the_one_podnet_routes_sets() -> None:
    tool = (ROOT / "roles/pod_network/files/podnet-routes").read_text()
    assert f'PROTO = "{hostchanges.ROUTE_PROTO}"' in tool


def test_the_vxlan_prefix_is_the_one_the_backend_and_podnet_routes_use() -> None:
    from podnet import backends
    tool = (ROOT / "roles/pod_network/files/podnet-routes").read_text()
    assert f'DEVICE_PREFIX = "{hostchanges.VXLAN_PREFIX}"' in tool
    assert backends.VXLAN_DEVICE_PREFIX == hostchanges.VXLAN_PREFIX


def test_bird_routes_are_the_ones_the_bgp_removal_flushes() -> None:
    tasks = (ROOT / "roles/pod_network/tasks/bgp_remove.yml").read_text()
    assert f'proto, "{hostchanges.BIRD_PROTO}"]' in tasks


def role_tasks() -> dict[str, Any]:
    return {str(p.relative_to(ROOT)): yaml.safe_load(p.read_text())
            for p in sorted(ROOT.glob("roles/*/tasks/*.yml"))}


def sync_calls() -> list[dict[str, Any]]:
    return [task["podnet_sync"] for tasks in role_tasks().values() for task in tasks or []
            if isinstance(task, dict) and "podnet_sync" in task]


def written_paths(value: Any) -> list[str]:
    """Every ``path:`` in the roles' tasks, their vars included."""
    if isinstance(value, dict):
        own = [str(value["path"])] if "path" in value else []
        return own + [p for v in value.values() for p in written_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in written_paths(v)]
    return []


def test_the_units_roles_write_and_mask_are_in_the_catalogue() -> None:
    written = [p.rsplit("/", 1)[1] for p in written_paths(role_tasks())
               if "/systemd/system/" in p]
    for call in sync_calls():
        masked = call.get("masked", [])
        if isinstance(masked, list):  # a literal list; kubelet's is kubelet_masked_services
            assert set(masked) <= set(CAT["masked"]), masked
    assert len(written) >= 6, written  # the sandbox, routes, iptables, endpoints, canary, DNS
    assert all(n.startswith(hostchanges.UNIT_PREFIX) or n == "{{ upstream_dns_service }}"
               for n in written), written
    default = hostchanges.role_defaults("upstream_dns")["upstream_dns_service"]
    assert default.startswith(hostchanges.UNIT_PREFIX)
    assert set(hostchanges.role_defaults("kubelet")["kubelet_masked_services"]) <= set(
        CAT["masked"])


def test_the_pods_units_and_namespaces_are_named_as_reset_finds_them() -> None:
    plan = make_plan(deployment("web"))
    pods = kubelet.node_pods(plan, plan.pods[0].node)
    assert pods
    for pod in pods:
        assert pod["sandbox_unit"].startswith(CAT["units"]["sandbox"])
        assert all(c["unit"].startswith(hostchanges.UNIT_PREFIX) for c in pod["containers"])
        assert reset.POD_NETNS.match(pod["spec"]["netns"]), pod["spec"]["netns"]
        assert reset.is_podnet_container(pod["spec"]["container_id"], pod["spec"]["netns"])
        assert pod["spec"]["container_id"] == hostchanges.container_id(pod["namespace"],
                                                                       pod["name"])
    assert not reset.is_podnet_container(hostchanges.container_id("a", "b"), "a_c")
    assert not reset.POD_NETNS.match("cni-1234") and not reset.POD_NETNS.match("foreign-ns")


def test_node_bases_files_are_the_ones_reset_removes() -> None:
    configure = (ROOT / "roles/node_base/tasks/configure.yml").read_text()
    assert f"path: {hostchanges.MODULES_FILE}" in configure
    assert hostchanges.role_defaults("node_base")["node_base_sysctl_file"] in CAT["trees"]
    install = (ROOT / "roles/kubelet/tasks/install.yml").read_text()
    assert f"facts_dir }}}}/{hostchanges.FACT_FILE}" in install


def test_the_node_tools_state_lies_where_reset_removes_it() -> None:
    tools = "".join(p.read_text() for p in ROOT.glob("roles/*/files/podnet-*"))
    roots = (hostchanges.config_root(), hostchanges.state_root(), hostchanges.run_root())
    for place in hostchanges.TOOL_STATE:
        assert f'"{place}' in tools, place
        assert place.startswith(tuple(r + "/" for r in roots)), place
    # and no tool names a place of its own beyond those
    spelled = set(re.findall(r'"(/(?:var/lib|run|etc)/podnet[^"]*)"', tools))
    assert all(s.startswith(tuple(r + "/" for r in roots)) or s in roots for s in spelled), spelled


def removed(path: str) -> bool:
    """Whether reset removes ``path`` (or the folder it lies in, or empties and removes it)."""
    whole = [*CAT["trees"], *CAT["cni"]["files"], CAT["cni"]["reservations"],
             CAT["state_root"]["path"], CAT["record"], *CAT["empty_dirs"],
             CAT["cni"]["cache_dir"]]
    globs = [g.rsplit("/", 1)[0] for g in CAT["globs"]]
    return any(path == w or path.startswith(w + "/") for w in whole) or any(
        path.startswith(g + "/") for g in globs)


def test_every_node_path_podnet_writes_is_one_reset_removes() -> None:
    # system places podnet uses but does not own: iproute2's namespaces, the distribution's
    # CNI plugins, and the folder the node tools go in (reset removes the tools, by name)
    not_podnets = {"netns_dir", "cni_plugin_dir", "bin_dir"}
    paths = {k: v for k, v in PATHS.as_dict().items() if isinstance(v, str) and v.startswith("/")}
    left = [f"{k}={v}" for k, v in paths.items() if k not in not_podnets and not removed(v)]
    assert not left, left
    assert removed(PATHS.cni_runtime) and removed(PATHS.netexec)
    assert removed(PATHS.pod_dir("ns_p")) and removed(PATHS.cni_result("abc"))


# paths the node roles' tasks write that only the run knows: each pod's server config (in its
# pod folder) and the cluster DNS records' folder (PATHS.dns_dir, from the podnet_cluster_dns
# filter)
RUN_TIME_PATHS = {"{{ item.config }}", "{{ __cluster_dns.records_path | dirname }}"}
CONTROLLER_ROLES = ("lab", "cluster_model")  # they run on localhost, not on a host


def resolved(path: str) -> str | None:
    """A task's ``path:`` with the node paths and role defaults it names filled in."""
    paths = PATHS.as_dict()
    defaults = {k: v for role in ("node_base", "upstream_dns", "external_lb")
                for k, v in hostchanges.role_defaults(role).items()}
    out = re.sub(r"\{\{ __\w+_paths\.(\w+) \| dirname \}\}",
                 lambda m: str(Path(paths[m.group(1)]).parent), path)
    out = re.sub(r"\{\{ __\w+_paths\.(\w+) \}\}", lambda m: str(paths[m.group(1)]), out)
    out = re.sub(r"\{\{ (\w+) \}\}", lambda m: str(defaults.get(m.group(1), m.group(0))), out)
    return None if "{{" in out else out


def test_every_path_the_node_roles_write_is_one_reset_removes() -> None:
    tasks = {name: data for name, data in role_tasks().items()
             if name.split("/")[1] not in CONTROLLER_ROLES}
    written = set(written_paths(tasks))
    unknown = {p for p in written if resolved(p) is None}
    assert unknown == RUN_TIME_PATHS, unknown  # a new one: teach resolved() or reset about it
    unit_dir = hostchanges.UNIT_DIR + "/" + hostchanges.UNIT_PREFIX
    left = sorted(r for p in written - unknown if (r := resolved(p)) is not None
                  and not removed(r) and not r.startswith(unit_dir))
    assert not left, f"written by a role, not removed by reset: {left}"
    assert any(str(resolved(p)).startswith(unit_dir) for p in written)


def test_the_docs_hold_the_table_of_changes() -> None:
    doc = (ROOT / "docs/host-changes.md").read_text()
    begin, end = "<!-- hostchanges:begin -->\n", "<!-- hostchanges:end -->"
    assert begin in doc and end in doc
    assert doc.split(begin, 1)[1].split(end, 1)[0] == hostchanges.table(), (
        "docs/host-changes.md is not podnet/hostchanges.py's table: paste the output of "
        "python -m podnet.hostchanges between its markers")
    kinds = {c.kind for c in hostchanges.changes()}
    assert kinds >= {"unit", "netns", "cni", "link", "route", "iptables", "conntrack", "file",
                     "sysctl", "mask", "package", "record"}


def test_every_input_has_a_default_in_its_role() -> None:
    for name, role in hostchanges.ROLE_INPUTS:
        assert name in hostchanges.role_defaults(role), (name, role)
    values = hostchanges.inputs({"kubelet_masked_services": ["a.service"],
                                 "podnet_service_cidr": "10.32.0.0/16"})
    assert values["kubelet_masked_services"] == ["a.service"]
    assert values["podnet_service_cidr"] == "10.32.0.0/16"
    assert values["node_base_sysctl_file"] == "/etc/sysctl.d/90-podnet.conf"  # role default
    assert values["podnet_cluster_cidr"] == "10.244.0.0/16"  # settings default
    cat = hostchanges.node_catalogue(values)
    assert cat["masked"] == ["a.service", "bird.service", "nginx.service", "unbound.service"]
    assert cat["conntrack"]["service_cidr"] == "10.32.0.0/16"
    renamed = hostchanges.node_catalogue(hostchanges.inputs(
        {"upstream_dns_service": "lab-dns.service"}))
    assert renamed["units"]["extra"] == ["lab-dns.service"]


@pytest.mark.parametrize(("given", "message"), [
    ({"podnet_service_cidr": "10.96.0.1/12"},
     "podnet_service_cidr: '10.96.0.1/12' is not a network address: 10.96.0.1/12 has host bits "
     "set; fix it in the inventory"),
    ({"podnet_cluster_cidr": "nope"},
     "podnet_cluster_cidr: 'nope' is not in CIDR form (like 10.244.0.0/16); fix it in the "
     "inventory"),
    ({"kubelet_masked_services": "nginx.service"},
     "kubelet_masked_services: 'nginx.service' is not a list of names; give a YAML list of "
     "strings in the inventory"),
    ({"node_base_sysctls": ["net.ipv4.ip_forward"]},
     "node_base_sysctls: ['net.ipv4.ip_forward'] is not a mapping of sysctl names to values; "
     "give one such as {net.ipv4.ip_forward: 1}"),
    ({"node_base_sysctl_file": "90-podnet.conf"},
     "node_base_sysctl_file: '90-podnet.conf' is not an absolute path; give one such as "
     "/etc/podnet/... in the inventory"),
    ({"upstream_dns_service": "dns"},
     "upstream_dns_service: 'dns' is not a unit name such as podnet-upstream-dns.service"),
])
def test_bad_input_is_named_with_the_fix(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        hostchanges.node_catalogue(hostchanges.inputs(given))
    assert str(caught.value) == message


def test_the_lookup_gives_the_catalogue_or_the_problems() -> None:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    plugin = load("podnet_host_changes_lookup", ROOT / "plugins/lookup/podnet_host_changes.py")
    lookup = plugin.LookupModule(loader=DataLoader(), templar=Templar(loader=DataLoader()))
    (good,) = lookup.run([], variables={"kubelet_masked_services": ["a.service"],
                                        "unrelated": "{{ undefined_variable }}"})
    assert good == {"errors": [], "catalogue": hostchanges.node_catalogue(hostchanges.inputs(
        {"kubelet_masked_services": ["a.service"]}))}
    assert good["catalogue"]["masked"] == ["a.service", "bird.service", "nginx.service",
                                           "unbound.service"]
    (bad,) = lookup.run([], variables={"podnet_service_cidr": "nope"})
    assert bad["catalogue"] == {} and bad["errors"][0].startswith("podnet_service_cidr: 'nope'")
    with pytest.raises(Exception, match="podnet_host_changes takes no terms"):
        lookup.run(["x"], variables={})


def test_reset_knows_the_portmap_chains_podnet_cni_cleans_up() -> None:
    """podnet-cni removes portmap's shared chains by name; reset and its residue check find
    them by hostchanges' prefixes: the two must name the same chains."""
    text = (ROOT / "roles/cni/files/podnet-cni").read_text()
    chains = ast.literal_eval(text.split("PORTMAP_CHAINS = ", 1)[1].split("\n", 1)[0])
    assert chains and all(c.startswith(hostchanges.PORTMAP_CHAIN_PREFIXES) for c in chains)
    assert set(hostchanges.PORTMAP_CHAIN_PREFIXES) <= set(CAT["iptables"]["prefixes"])
