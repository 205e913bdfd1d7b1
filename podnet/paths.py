"""Where podnet puts things on a node: the one definition of every path and name that more than
one part of podnet reads or writes (the roles, the renderers, the node tools, verify).

The plan carries these paths (``Plan.paths``, ``paths`` in the plan's data), so roles and verify
read them from there and never spell a path of their own. They are not inventory options: a
path that no test changes end to end is not offered as one. The node tools ship as single files
and cannot import this module; the defaults they hold are checked against it by
tests/test_paths.py, and the roles pass them the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NodePaths:
    bin_dir: str = "/usr/local/sbin"  # podnet's node tools (podnet-cni, podnet-iptables, ...)
    pods_dir: str = "/etc/podnet/pods"  # the kubelet's folder per pod: pod.json, resolv.conf
    pod_state_dir: str = "/var/lib/podnet/pods"  # podnet-cni: what each running pod was given
    netns_dir: str = "/run/netns"  # iproute2's named network namespaces (ip netns)
    cni_conf_dir: str = "/etc/cni/net.d"  # the CNI network configurations
    cni_plugin_dir: str = "/usr/lib/cni"  # Debian's containernetworking-plugins
    cni_cache_dir: str = "/var/lib/cni/results"  # libcni's cached ADD results
    cni_ipam_dir: str = "/var/lib/cni/networks"  # host-local's reservations, per network
    iptables_dir: str = "/etc/podnet/iptables"  # the rule files podnet-iptables applies
    routes_file: str = "/etc/podnet/routes.conf"  # the routes podnet-routes keeps
    dns_dir: str = "/etc/podnet/cluster-dns"  # the cluster DNS records, shared by its pods
    # l2 mode's keepalived configuration (the l2_announce role), read by podnet-keepalived
    l2_announce_dir: str = "/etc/podnet/l2-announce"
    # the Ingress controller's input (the ingress_nginx role writes it on every node; it holds
    # the TLS keys, so mode 0600), read by podnet-ingress in each controller pod
    ingress_dir: str = "/etc/podnet/ingress"
    # the bgp backend's BIRD (podnet-bird.service): its configuration and its control socket
    # (birdc -s), apart from the package's own bird.service and /etc/bird
    bgp_dir: str = "/etc/podnet/bgp"
    bird_socket: str = "/run/podnet/bird.ctl"
    kube_proxy_state_dir: str = "/var/lib/podnet/kube-proxy"  # its renderer's and prober's inputs
    # pods failing their readinessProbe, kept by podnet-endpoints; in /run, so that after a
    # reboot every pod starts ready again, as in Kubernetes
    unready_pods: str = "/run/podnet/unready-pods"
    # the other nodes this node's podnet-endpoints holds NotReady (silent for the grace period),
    # one name a line: their pods are in unready_pods too; in /run like it
    not_ready_nodes: str = "/run/podnet/not-ready-nodes"
    # the pods a converge has placed on this node since it booted (one empty file per pod id,
    # podnet_kubelet writes them): at boot, before a converge, a pod that keeps its address
    # asks the other nodes whether one of them runs its address now (podnet-cni, the fence)
    admitted_dir: str = "/run/podnet/admitted"
    # cloud mode's load balancer (podnet-cloud-lb on the lb host): its config, written by the
    # external_lb role, and the state it reports (per address the nodes passing their checks)
    cloud_lb_config: str = "/etc/podnet/cloud-lb.json"
    cloud_lb_status: str = "/run/podnet/cloud-lb.json"
    facts_dir: str = "/etc/ansible/facts.d"  # Ansible local facts (ansible_local.podnet)
    # what the host was before podnet's first change (resolv.conf, sysctls, masked units,
    # packages): node_reset's record.yml writes it once, reset puts those back, then deletes it
    host_record: str = "/var/lib/podnet/host-record.json"
    # pods that keep their address on any node: the cluster's assignments (ns/name -> IP, from
    # the plan, on every node) that podnet-ipam hands out
    ipam_assignments: str = "/etc/podnet/ipam/stable.json"
    # names the same components share
    cni_network: str = "podnet"  # the conflist's name: host-local's and libcni's cache folders
    cni_bridge: str = "cni0"  # the pods' bridge, holding each node's pod gateway

    def tool(self, name: str) -> str:
        """The installed path of a node tool."""
        return f"{self.bin_dir}/{name}"

    @property
    def cni_runtime(self) -> str:
        return self.tool("podnet-cni")

    @property
    def lib_dir(self) -> str:
        """podnet's renderer shipped to the node (podnet-kube-proxy imports it from here)."""
        return f"{self.bin_dir.rsplit('/', 1)[0]}/lib/podnet"

    @property
    def kube_proxy_rules(self) -> str:
        """The rules podnet-kube-proxy renders on the node (not written by Ansible)."""
        return f"{self.iptables_dir}/50-kube-proxy.rules"

    @property
    def kube_proxy_input(self) -> str:
        """What the node renders its rules from: its Service ports, endpoints and options."""
        return f"{self.kube_proxy_state_dir}/rules-input.json"

    @property
    def netexec(self) -> str:
        return self.tool("podnet-netexec")

    @property
    def network_conf(self) -> str:
        return f"{self.cni_conf_dir}/10-podnet.conflist"

    @property
    def stable_network_conf(self) -> str:
        """The conflist of pods that keep their address: ptp and podnet-ipam, the same network
        name (one pod network, wired two ways), so libcni's cache names every pod alike."""
        return f"{self.cni_conf_dir}/20-podnet-stable.conflist"

    @property
    def ipam_plugin(self) -> str:
        """podnet's CNI IPAM plugin, beside the distribution's plugins."""
        return f"{self.cni_plugin_dir}/podnet-ipam"

    @property
    def stable_reservations(self) -> str:
        """podnet-ipam's folder of reserved stable addresses, beside host-local's."""
        return f"{self.cni_ipam_dir}/{self.cni_network}-stable"

    @property
    def loopback_conf(self) -> str:
        return f"{self.cni_conf_dir}/99-loopback.conf"

    @property
    def dns_records(self) -> str:
        return f"{self.dns_dir}/records.conf"

    @property
    def keepalived_conf(self) -> str:
        """keepalived's configuration in l2 mode: one VRRP instance per LoadBalancer address."""
        return f"{self.l2_announce_dir}/keepalived.conf"

    @property
    def bird_conf(self) -> str:
        """BIRD's configuration in the bgp backend: the node's AS, neighbours and pod CIDR."""
        return f"{self.bgp_dir}/bird.conf"

    @property
    def lb_check(self) -> str:
        """The health check keepalived runs per LoadBalancer address (kube-proxy's health
        servers, over HTTP on 127.0.0.1)."""
        return self.tool("podnet-lb-check")

    @property
    def ingress_input(self) -> str:
        """What every Ingress controller pod renders nginx.conf from (INPUT JSON version 1)."""
        return f"{self.ingress_dir}/input.json"

    @property
    def dns_pods(self) -> str:
        return f"{self.dns_dir}/pods.json"  # the node's DNS pods, for podnet-dns converge

    def pod_dir(self, pod_id: str) -> str:
        return f"{self.pods_dir}/{pod_id}"

    def netns(self, pod_id: str) -> str:
        return f"{self.netns_dir}/{pod_id}"

    @property
    def cni_reservations(self) -> str:
        """host-local's folder of reserved addresses (one file per pod IP)."""
        return f"{self.cni_ipam_dir}/{self.cni_network}"

    def cni_result(self, container_id: str, ifname: str = "eth0") -> str:
        """libcni's cached ADD result of a pod's interface."""
        return f"{self.cni_cache_dir}/{self.cni_network}-{container_id}-{ifname}"

    def as_dict(self) -> dict[str, Any]:
        """Every path by name, the derived ones too (what roles read from the plan)."""
        derived = ("cni_runtime", "netexec", "network_conf", "loopback_conf", "dns_records",
                   "dns_pods", "cni_reservations", "lib_dir", "kube_proxy_rules",
                   "kube_proxy_input", "keepalived_conf", "lb_check", "ingress_input",
                   "bird_conf", "stable_network_conf", "stable_reservations", "ipam_plugin")
        return {**self.__dict__, **{name: getattr(self, name) for name in derived}}


PATHS = NodePaths()
