"""What the kubelet role puts on a node for each pod planned there: names, units, commands.

Pure functions over the typed plan (the filters turn the role's ``kubelet_plan`` into one), so
the role's templates only print. Paths come from the plan's ``paths`` (podnet/paths.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from podnet import kubeproxy
from podnet.manifests import MAX_NAMESERVERS, MAX_SEARCH_CHARS, MAX_SEARCHES
from podnet.paths import NodePaths
from podnet.plan import Plan, PodPlan, PortPlan
from podnet.settings import Settings

RESTART = {"Always": "always", "OnFailure": "on-failure", "Never": "no"}
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def pod_id(namespace: str, name: str) -> str:
    """``<namespace>_<name>``: unique on a node ('_' is in neither), a valid netns and unit
    instance name."""
    return f"{namespace}_{name}"


def container_id(namespace: str, name: str) -> str:
    return hashlib.sha256(f"podnet/{namespace}/{name}".encode()).hexdigest()


def systemd_quote(argv: Sequence[str]) -> str:
    """A command line for ExecStart=: words quoted as systemd parses them, with '$' and '%'
    escaped so systemd neither expands variables nor specifiers."""
    words = []
    for word in argv:
        text = word.replace("%", "%%").replace("$", "$$")
        if _SAFE_WORD.match(text):
            words.append(text)
        else:
            escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            words.append(f'"{escaped}"')
    return " ".join(words)


def systemd_environment(name: str, value: str) -> str:
    """An ``Environment=`` assignment: systemd expands no ``$`` there, only specifiers."""
    text = f"{name}={value}".replace("%", "%%")
    if _SAFE_WORD.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def resolv_conf(namespace: str, settings: Settings, policy: str = "ClusterFirst",
                host_network: bool = False, config: Mapping[str, Any] | None = None
                ) -> str | None:
    """The pod's /etc/resolv.conf as the kubelet writes it for its dnsPolicy, with its
    dnsConfig merged in (nameservers and searches appended without repeats, options replaced
    by name); None when the pod takes its node's own (Default, and ClusterFirst on the host
    network, which the kubelet turns into Default)."""
    zone = settings.cluster_domain
    servers: list[str] = []
    searches: list[str] = []
    options: dict[str, str | None] = {}
    if policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network):
        servers = [str(settings.dns_service_ip)]
        searches = [f"{namespace}.svc.{zone}", f"svc.{zone}", zone]
        options = {"ndots": "5"}
    elif policy != "None":
        return None
    config = config or {}
    for server in config.get("nameservers") or ():
        if server not in servers:
            servers.append(server)
    for domain in config.get("searches") or ():
        if domain not in searches:
            searches.append(domain)
    # the kubelet's limits: the first nameservers and search domains that fit
    while len(searches) > MAX_SEARCHES or len(" ".join(searches)) > MAX_SEARCH_CHARS:
        searches.pop()
    for name, value in config.get("options") or ():
        options[name] = value
    lines = [f"nameserver {s}" for s in servers[:MAX_NAMESERVERS]]
    if searches:
        lines.append("search " + " ".join(searches))
    if options:
        lines.append("options " + " ".join(f"{k}:{v}" if v else k for k, v in options.items()))
    return "\n".join(lines) + "\n"


def etc_hosts(pod: PodPlan, settings: Settings) -> dict[str, str] | None:
    """What podnet-cni writes the pod's kubelet-managed /etc/hosts from, once the pod has its
    address: its hostname, and its domain when it has a subdomain (None on the host network,
    which keeps the node's /etc/hosts)."""
    if pod.host_network:
        return None
    domain = (f"{pod.subdomain}.{pod.namespace}.svc.{settings.cluster_domain}"
              if pod.subdomain else "")
    return {"hostname": pod.host_name, "domain": domain}


def port_mappings(pod: PodPlan) -> list[dict[str, Any]]:
    """The portmap plugin's runtimeConfig for the pod's hostPorts (CNI's portMappings
    capability: hostPort, containerPort, protocol in lower case, hostIP when given)."""
    out = []
    for c in pod.containers:
        for p in c.ports:
            if p.host_port is None or pod.host_network:
                continue
            entry: dict[str, Any] = {"hostPort": p.host_port, "containerPort": p.port,
                                     "protocol": p.protocol.lower()}
            if p.host_ip:
                entry["hostIP"] = p.host_ip
            out.append(entry)
    return out


# the nginx placeholder podnet wrote before its pid file moved into the pod's folder: nginx
# deletes its pid file when it exits or reloads into a config with another pid path, and the
# one it deleted was the node's /dev/null. The kubelet role replaces a placeholder that still
# reads so (only when the file is exactly this: a component's own config is never touched).
OLD_NGINX_PID = "pid /dev/null;\n"


def default_config(kind: str, pod: PodPlan, ports: Sequence[PortPlan], pid_file: str = ""
                   ) -> str | None:
    """A minimal config for a packaged server until its component role writes the real one
    (nginx keeps its pid in ``pid_file``, in the pod's folder: never a file others use)."""
    first = {p.protocol: p.port for p in reversed(ports)}
    if kind == "unbound":
        port = first.get("UDP") or first.get("TCP") or 53
        return ("# podnet default: answers nothing until the cluster_dns role configures it\n"
                "server:\n"
                f"  interface: 0.0.0.0@{port}\n"
                "  do-daemonize: no\n  use-syslog: no\n  chroot: \"\"\n  username: \"\"\n"
                "  pidfile: \"\"\n  access-control: 0.0.0.0/0 refuse\n")
    if kind == "nginx":
        port = first.get("TCP") or 80
        return ("# podnet default: a placeholder until a component role configures it\n"
                f"pid {pid_file};\nerror_log stderr;\nevents {{}}\nhttp {{\n"
                "  access_log off;\n"
                f"  server {{\n    listen {port};\n"
                f"    location / {{ return 200 \"podnet nginx {pod.name}\\n\"; }}\n"
                "  }\n}\n")
    return None


def _command(kind: str, workload: Mapping[str, Any], config: str | None, paths: NodePaths
             ) -> list[str]:
    if kind == "netexec":
        return [paths.netexec, f"--http-port={workload.get('http_port') or 0}",
                f"--udp-port={workload.get('udp_port') or 0}"]
    if kind == "whoami":
        # whoami's own flags, unchanged; the container's env (WHOAMI_*) reaches it too
        return [paths.tool("podnet-whoami"), *workload["command"]]
    if kind == "unbound":
        return ["/usr/sbin/unbound", "-d", "-p", "-c", str(config), *workload["command"]]
    if kind == "nginx":
        return ["/usr/sbin/nginx", "-c", str(config), "-g", "daemon off;", *workload["command"]]
    return list(workload["command"])


UNIT_HEADER = ("# Managed by podnet (the kubelet role writes it from the pod's spec); "
               "local changes are overwritten.\n")


def container_unit(pod: Mapping[str, Any], container: Mapping[str, Any], paths: NodePaths
                   ) -> str:
    """The systemd unit of one container: it runs in its pod's network namespace, with the
    pod's resolv.conf, bound to the pod's sandbox (stopped and restarted with it)."""
    host = bool(pod["spec"].get("host_network"))
    where = "its node's network namespace" if host else "the pod's network namespace"
    lines = [
        UNIT_HEADER.rstrip("\n"),
        f"# Container {container['name']} of pod {pod['namespace']}/{pod['name']}: "
        f"runs in {where}.",
        "[Unit]",
        f"Description=pod {pod['namespace']}/{pod['name']} container {container['name']} "
        f"({container['kind']})",
        f"BindsTo={pod['sandbox_unit']}",
        f"PartOf={pod['sandbox_unit']}",
        f"After={pod['sandbox_unit']}",
        "",
        "[Service]",
        *([] if host else [f"NetworkNamespacePath={paths.netns(pod['id'])}"]),
        *([f"BindReadOnlyPaths={pod['dir']}/resolv.conf:/etc/resolv.conf"]
          if pod["resolv_conf"] is not None else []),
        # the kubelet-managed /etc/hosts podnet-cni writes once the pod has its address
        *([f"BindReadOnlyPaths={pod['hosts_file']}:/etc/hosts"] if pod["hosts_file"] else []),
        *(f"Environment={line}" for line in container["environment"]),
        f"ExecStart={container['exec_start']}",
        f"Restart={container['restart']}",
        "RestartSec=1",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


# the kubelet-managed /etc/hosts podnet-cni writes beside the pod's state.json
HOSTS_FILE = "hosts"


# podnet-ipam's assignments file (roles/cni/files/podnet-ipam reads version 1)
IPAM_ASSIGNMENTS_VERSION = 1


def stable_ipam(plan: Plan) -> dict[str, Any]:
    """podnet-ipam's input on every node: the assignments (ns/name -> address, the same file
    everywhere, so that a pod finds its address on whichever node it lands) and the prefix length
    of its results. Debian's ptp cannot wire a /32 whose gateway lies outside it, so the pod's
    address carries the cluster CIDR's length: ptp turns that into routes via the gateway, the
    pod sends everything to its node, and the node routes the /32 to the pod."""
    return {
        "assignments": {
            "version": IPAM_ASSIGNMENTS_VERSION, "pods": plan.stable_ips(),
            # whom podnet-cni asks, at boot, before it starts such a pod: a pod evicted from a
            # dead node runs elsewhere with this address when the node comes back
            "fence": {"nodes": [{"name": n.name, "address": n.address} for n in plan.nodes],
                      "port": kubeproxy.HEALTHZ_PORT, "path": kubeproxy.PODS_PATH},
        },
        "prefix_length": plan.settings.cluster_cidr.prefixlen,
    }


def node_pods(plan: Plan, node: str) -> list[dict[str, Any]]:
    """Everything the kubelet role renders for the pods planned on ``node``."""
    paths = plan.paths
    out = []
    node_address = next(n.address for n in plan.nodes if n.name == node)
    for pod in plan.pods_on(node):
        ident = pod_id(pod.namespace, pod.name)
        folder = paths.pod_dir(ident)
        containers = []
        for c in pod.containers:
            kind = c.workload["kind"]
            config_text = default_config(kind, pod, c.ports, f"{folder}/{c.name}.pid")
            config = f"{folder}/{c.name}.conf" if config_text is not None else None
            containers.append({
                "name": c.name,
                "kind": kind,
                "unit": f"podnet-{ident}-{c.name}.service",
                "exec_start": systemd_quote(_command(kind, c.workload, config, paths)),
                "environment": [systemd_environment(k, v) for k, v in
                                {"PODNET_HOSTNAME": pod.host_name, "HOSTNAME": pod.host_name,
                                 **c.env}.items()],
                "restart": RESTART[pod.restart_policy],
                "config_path": config,
                "config_default": config_text,
                # a placeholder of an older podnet that is replaced (podnet-kubelet): nginx's
                # pid /dev/null, which nginx deleted as its pid file
                "config_replace_marker": OLD_NGINX_PID if kind == "nginx" else None,
            })
        entry: dict[str, Any] = {
            "id": ident,
            "namespace": pod.namespace,
            "name": pod.name,
            "dir": folder,
            "netns_path": paths.netns(ident),
            "state_file": f"{paths.pod_state_dir}/{ident}/state.json",  # podnet-cni's
            "hosts_file": (None if pod.host_network else
                           f"{paths.pod_state_dir}/{ident}/{HOSTS_FILE}"),
            "sandbox_unit": f"podnet-sandbox@{ident}.service",
            "resolv_conf": resolv_conf(pod.namespace, plan.settings, pod.dns_policy,
                                       pod.host_network, pod.dns_config),
            "containers": containers,
            "spec": {
                "namespace": pod.namespace, "name": pod.name, "node": node,
                "netns": ident, "container_id": container_id(pod.namespace, pod.name),
                "ifname": "eth0",
                # a pod that keeps its address on any node is wired by ptp with podnet-ipam
                "network": paths.stable_network_conf if pod.stable_ip else paths.network_conf,
                "loopback": paths.loopback_conf,
                "units": [c["unit"] for c in containers],
            },
        }
        if pod.host_network:
            # no namespace, no CNI: podnet-cni records the node's address as the pod's
            entry["spec"]["host_network"] = True
            entry["spec"]["host_ip"] = node_address
        if hosts := etc_hosts(pod, plan.settings):
            entry["spec"]["etc_hosts"] = {**hosts, "path": entry["hosts_file"]}
        if mappings := port_mappings(pod):
            entry["spec"]["port_mappings"] = mappings
        if pod.stable_ip:
            # the address it keeps, in the description: when it changes (a new
            # podnet_stable_pod_cidr, a lost record) the changed pod.json restarts the sandbox,
            # which then takes the new one; podnet-ipam reads the address from the assignments
            entry["spec"]["stable_ip"] = pod.stable_ip
        for unit in containers:
            unit["unit_text"] = container_unit(entry, unit, paths)
        out.append(entry)
    return out
