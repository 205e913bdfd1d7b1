"""Bad input: each case asserts the message names the place, the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest
from modelkit import VARS, deployment, errors_of, hosts, make_plan, service

from podnet.allocate import Record

NODE3_ZONE_B = hosts(3, node3={"zone": "b"})

POD = """\
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: {app}
spec:
{extra}  containers:
    - name: c
      image: podnet/netexec
"""


def pod(name: str = "p", app: str = "p", extra: str = "") -> str:
    return POD.format(name=name, app=app, extra=extra)


CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    # -- inventory settings ---------------------------------------------------------------------
    ("cluster-cidr-host-bits", {"variables": {"podnet_cluster_cidr": "10.244.1.0/16"}},
     ["podnet_cluster_cidr: '10.244.1.0/16' is not a network address", "host bits"]),
    ("cluster-cidr-not-cidr", {"variables": {"podnet_cluster_cidr": "10.244.0.0"}},
     ["podnet_cluster_cidr: '10.244.0.0' is not in CIDR form"]),
    ("cidr-ipv6", {"variables": {"podnet_cluster_cidr": "fd00::/64"}},
     ["podnet_cluster_cidr: 'fd00::/64' is IPv6"]),
    ("service-overlaps-cluster", {"variables": {"podnet_service_cidr": "10.240.0.0/12",
                                                "podnet_dns_service_ip": "10.240.0.10"}},
     ["podnet_service_cidr: 10.240.0.0/12 overlaps podnet_cluster_cidr 10.244.0.0/16",
      "fix: choose podnet_service_cidr and podnet_cluster_cidr so that they do not overlap"]),
    ("cluster-overlaps-underlay", {"variables": {"podnet_cluster_cidr": "192.168.0.0/16",
                                                 "podnet_lb_pool": ""}},
     ["podnet_underlay_cidr: 192.168.56.0/24 overlaps podnet_cluster_cidr 192.168.0.0/16"]),
    ("service-overlaps-underlay", {"variables": {"podnet_service_cidr": "192.168.56.0/24",
                                                 "podnet_dns_service_ip": "192.168.56.10",
                                                 "podnet_lb_pool": ""}},
     ["podnet_underlay_cidr: 192.168.56.0/24 overlaps podnet_service_cidr 192.168.56.0/24"]),
    ("lb-pool-overlaps-service", {"variables": {"podnet_lb_pool": "10.96.0.0/28"}},
     ["podnet_lb_pool: 10.96.0.0/28 overlaps podnet_service_cidr 10.96.0.0/12"]),
    ("too-many-nodes", {"variables": {"podnet_cluster_cidr": "10.244.0.0/23"}},
     ["podnet_cluster_cidr: 3 nodes need 3 /24 pod CIDRs but 10.244.0.0/23 holds only 1 "
      "beside the stable pods' 10.244.1.0/24",
      "widen podnet_cluster_cidr"]),
    ("node-prefix-too-short", {"variables": {"podnet_node_cidr_prefix": 12}},
     ["podnet_node_cidr_prefix: /12 does not fit podnet_cluster_cidr 10.244.0.0/16"]),
    ("node-prefix-not-number", {"variables": {"podnet_node_cidr_prefix": "big"}},
     ["podnet_node_cidr_prefix: 'big' is not a number"]),
    ("service-cidr-too-big", {"variables": {"podnet_service_cidr": "10.0.0.0/8",
                                            "podnet_cluster_cidr": "172.16.0.0/16"}},
     ["podnet_service_cidr: 10.0.0.0/8 must be between a /12 and a /28"]),
    ("dns-outside-service", {"variables": {"podnet_dns_service_ip": "10.112.0.10"}},
     ["podnet_dns_service_ip: 10.112.0.10 is outside podnet_service_cidr 10.96.0.0/12",
      "like 10.96.0.10"]),
    ("dns-network-address", {"variables": {"podnet_dns_service_ip": "10.96.0.0"}},
     ["podnet_dns_service_ip: 10.96.0.0 is the network or broadcast address"]),
    ("dns-not-ip", {"variables": {"podnet_dns_service_ip": "kube-dns"}},
     ["podnet_dns_service_ip: 'kube-dns' is not an IP address"]),
    ("bad-domain", {"variables": {"podnet_cluster_domain": "Cluster_Local"}},
     ["podnet_cluster_domain: 'Cluster_Local' is not a DNS-1123 subdomain"]),
    ("nodeport-range-reversed", {"variables": {"podnet_nodeport_range": "32767-30000"}},
     ["podnet_nodeport_range: '32767-30000' must satisfy 1 <= FIRST <= LAST <= 65535"]),
    ("nodeport-range-malformed", {"variables": {"podnet_nodeport_range": "30000"}},
     ["podnet_nodeport_range: '30000' is not a range FIRST-LAST"]),
    ("unknown-backend", {"variables": {"podnet_backend": "flannel"}},
     ["podnet_backend: 'flannel' is not a routing backend podnet has",
      "use one of: host-gw, vxlan, bgp"]),
    ("vni-zero", {"variables": {"podnet_vxlan_vni": 0}},
     ["podnet_vxlan_vni: '0' is outside 1-16777215", "like 1 (Flannel's)"]),
    ("vni-too-big", {"variables": {"podnet_vxlan_vni": 2**24}},
     ["podnet_vxlan_vni: '16777216' is outside 1-16777215"]),
    ("vni-not-number", {"variables": {"podnet_vxlan_vni": "one"}},
     ["podnet_vxlan_vni: 'one' is not a number"]),
    ("vxlan-port-range", {"variables": {"podnet_vxlan_port": 70000}},
     ["podnet_vxlan_port: '70000' is outside 1-65535", "like 8472"]),
    ("vxlan-port-in-nodeports", {"variables": {"podnet_vxlan_port": 30080}},
     ["podnet_vxlan_port: 30080 is inside podnet_nodeport_range 30000-32767",
      "a UDP NodePort Service given that port would take the nodes' VXLAN traffic"]),
    ("bgp-as-zero", {"variables": {"podnet_bgp_as": 0}},
     ["podnet_bgp_as: '0' is outside 1-4294967295", "like 64512"]),
    ("bgp-as-trans", {"variables": {"podnet_bgp_as": 23456}},
     ["podnet_bgp_as: AS 23456 is reserved"]),
    ("bgp-as-text", {"variables": {"podnet_bgp_as": "AS64512"}},
     ["podnet_bgp_as: 'AS64512' is not a number"]),
    ("reflectors-not-list", {"variables": {"podnet_bgp_route_reflectors": "node1"}},
     ["podnet_bgp_route_reflectors: 'node1' is not a list of node names"]),
    ("reflector-unknown", {"variables": {"podnet_bgp_route_reflectors": ["node1", "lb"]}},
     ["podnet_bgp_route_reflectors[1]: 'lb' is not a node (group 'nodes')",
      "name nodes, some of: node1, node2, node3"]),
    ("bgp-peers-not-list", {"host_list": [
        {"name": "node1", "address": "192.168.56.11", "groups": ["nodes"],
         "bgp_peers": "192.168.56.254"}]},
     ["host node1: podnet_bgp_peers: '192.168.56.254' is not a list",
      "write a list like [{address: 192.168.56.254}]"]),
    ("bgp-peer-bad-address", {"host_list": [
        {"name": "node1", "address": "192.168.56.11", "groups": ["nodes"],
         "bgp_peers": [{"address": "router"}]}]},
     ["host node1: podnet_bgp_peers[0].address: 'router'"]),
    ("bgp-peer-itself", {"host_list": [
        {"name": "node1", "address": "192.168.56.11", "groups": ["nodes"],
         "bgp_peers": [{"address": "192.168.56.11"}]}]},
     ["podnet_bgp_peers[0].address: 192.168.56.11 is the node's own address"]),
    ("bgp-peer-bad-as", {"host_list": [
        {"name": "node1", "address": "192.168.56.11", "groups": ["nodes"],
         "bgp_peers": [{"address": "192.168.56.254", "as": 23456}]}]},
     ["podnet_bgp_peers[0].as: AS '23456' is not one a router can have"]),
    ("bgp-peer-twice", {"host_list": [
        {"name": "node1", "address": "192.168.56.11", "groups": ["nodes"],
         "bgp_peers": [{"address": "192.168.56.254"}, {"address": "192.168.56.254"}]}]},
     ["podnet_bgp_peers[1].address: 192.168.56.254 is listed twice"]),
    ("bgp-peers-not-node", {"host_list": [
        {"name": "node1", "address": "192.168.56.11", "groups": ["nodes"]},
        {"name": "lb", "address": "192.168.56.200", "groups": ["lb"],
         "bgp_peers": [{"address": "192.168.56.254"}]}]},
     ["host lb: podnet_bgp_peers: is set but lb is not in group 'nodes'"]),
    ("reflector-twice", {"variables": {"podnet_bgp_route_reflectors": ["node1", "node1"]}},
     ["podnet_bgp_route_reflectors[1]: 'node1' is listed twice"]),
    ("unknown-proxy-mode", {"variables": {"podnet_proxy_mode": "ipvs"}},
     ["podnet_proxy_mode: 'ipvs' is not a proxy mode podnet has", "use one of: iptables"]),
    ("dns-replicas-zero", {"variables": {"podnet_dns_replicas": 0}},
     ["podnet_dns_replicas: '0' must be 1 or more"]),
    ("grace-too-short", {"variables": {"podnet_node_grace_period": 1}},
     ["podnet_node_grace_period: '1' must be from 2 to 600 seconds",
      "set how many seconds a silent node keeps its endpoints, from 2 to 600"]),
    ("grace-not-a-number", {"variables": {"podnet_node_grace_period": "5s"}},
     ["podnet_node_grace_period: '5s' is not a number"]),
    ("grace-bool", {"variables": {"podnet_node_grace_period": True}},
     ["podnet_node_grace_period: 'True' is not a number"]),
    ("missing-underlay", {"variables": {"podnet_underlay_cidr": None}},
     ["podnet_underlay_cidr: is not set"]),
    # -- hosts ----------------------------------------------------------------------------------
    ("duplicate-host-address", {"host_list": [
        {"name": "node1", "address": "192.168.56.11", "groups": ["nodes"]},
        {"name": "node2", "address": "192.168.56.11", "groups": ["nodes"]}]},
     ["host node2: ansible_host: 192.168.56.11 is also host node1's address"]),
    ("node-off-underlay", {"variables": {"podnet_lb_pool": ""}, "host_list": [
        {"name": "node1", "address": "10.0.0.5", "groups": ["nodes"]}]},
     ["host node1: ansible_host: 10.0.0.5 is outside podnet_underlay_cidr 192.168.56.0/24: "
      "the host-gw backend routes each pod CIDR straight to its node",
      "set podnet_backend to vxlan or bgp (they cross routers)"]),
    ("routed-node-cloud-lb", {"variables": {"podnet_backend": "vxlan"}, "host_list": [
        {"name": "node1", "address": "10.0.0.5", "groups": ["nodes"]}]},
     ["host node1: ansible_host: 10.0.0.5 is outside podnet_underlay_cidr 192.168.56.0/24: "
      "cloud mode has the lb host forward LoadBalancer traffic",
      "leave podnet_lb_pool empty"]),
    ("routed-node-l2-lb", {"variables": {"podnet_backend": "bgp", "podnet_lb_mode": "l2"},
                           "host_list": [
        {"name": "node1", "address": "10.0.0.5", "groups": ["nodes"]}]},
     ["l2 mode announces LoadBalancer addresses by ARP, which does not cross a router"]),
    ("host-in-lb-pool", {"host_list": [
        {"name": "node1", "address": "192.168.56.241", "groups": ["nodes"]}]},
     ["host node1: ansible_host: 192.168.56.241 lies inside podnet_lb_pool"]),
    ("bad-node-label", {"host_list": [
        {"name": "node1", "address": "192.168.56.11", "groups": ["nodes"],
         "labels": {"zone": "a b"}}]},
     ["host node1: podnet_node_labels.zone: label value 'a b'"]),
    ("pod-cidr-wrong-size", {"host_list": [
        {"name": "node1", "address": "192.168.56.11", "groups": ["nodes"],
         "pod_cidr": "10.244.0.0/25"}]},
     ["host node1: podnet_pod_cidr: 10.244.0.0/25 is not a /24 inside podnet_cluster_cidr"]),
    ("pod-cidr-duplicate", {"host_list": [
        {"name": "node1", "address": "192.168.56.11", "groups": ["nodes"],
         "pod_cidr": "10.244.7.0/24"},
        {"name": "node2", "address": "192.168.56.12", "groups": ["nodes"],
         "pod_cidr": "10.244.7.0/24"}]},
     ["host node2: podnet_pod_cidr: 10.244.7.0/24 is also node node1's pod CIDR"]),
    ("no-nodes", {"host_list": [
        {"name": "client", "address": "192.168.56.100", "groups": ["clients"]}]},
     ["podnet_nodes_group: group 'nodes' has no hosts"]),
    ("bad-node-name", {"host_list": [
        {"name": "Node_1", "address": "192.168.56.11", "groups": ["nodes"]}]},
     ["host Node_1: inventory_hostname: node name 'Node_1' is not a DNS-1123 label"]),
    # -- manifests: form -----------------------------------------------------------------------
    ("malformed-yaml", {"text": "kind: Service\nmetadata: {name: [x\n"},
     ["m.yaml:3:1: YAML: malformed YAML", "fix the syntax"]),
    ("duplicate-yaml-key", {"text": service("web").replace("  selector:\n",
                                                           "  type: ClusterIP\n  type: NodePort\n"
                                                           "  selector:\n")},
     ["m.yaml:9: document 1: spec.type: this key appears twice"]),
    ("not-a-mapping", {"text": "---\n- just\n- a list\n"},
     ["m.yaml:2: document 1: is not a mapping"]),
    ("unsupported-kind", {"text": "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\n"},
     ["m.yaml:2: document 1: kind: 'StatefulSet' is not a kind podnet builds"]),
    ("wrong-api-version", {"text": "apiVersion: extensions/v1beta1\nkind: Ingress\n"
                                   "metadata: {name: x}\n"},
     ["apiVersion: 'extensions/v1beta1' is not the apiVersion podnet reads for Ingress",
      "use apiVersion: networking.k8s.io/v1"]),
    ("schema-type", {"text": service("web", ports="  ports:\n    - port: eighty\n")},
     ["m.yaml:11: Service default/web: spec.ports[0].port: 'eighty' is not of type integer",
      "kubectl explain service.spec.ports.port"]),
    ("schema-unknown-field", {"text": service("web", body="  clusterIp: 10.96.0.50\n")},
     ["Service default/web: spec: unknown field(s) clusterIp (not in the Kubernetes schema)"]),
    ("schema-required", {"text": "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"
                                 "spec: {containers: [{image: nginx}]}\n"},
     ["Pod default/x: spec.containers[0]: 'name' is required"]),
    ("duplicate-object", {"text": service("web") + service("web")},
     ["Service default/web: metadata.name: is defined twice (first at m.yaml:2)"]),
    ("service-name-dns1035", {"text": service("1web", selector="web")},
     ["m.yaml:5: Service default/1web: metadata.name: '1web' is not a DNS-1035 label"]),
    ("pod-name-dns1123", {"text": pod(name="Web_Pod")},
     ["Pod default/Web_Pod: metadata.name: 'Web_Pod' is not a DNS-1123 subdomain"]),
    ("undefined-namespace", {"text": service("web", ns="shop")},
     ["Service shop/web: metadata.namespace: namespace 'shop' is not defined",
      "add a Namespace manifest named shop"]),
    ("reserved-dns-service", {"text": service("kube-dns", ns="kube-system")},
     ["Service kube-system/kube-dns: metadata.name: is defined twice "
      "(first at podnet:addons/cluster-dns.yaml"]),
    # -- manifests: Services --------------------------------------------------------------------
    ("port-out-of-range", {"text": service("web", ports="  ports:\n    - port: 70000\n")},
     ["m.yaml:11: Service default/web: spec.ports[0].port: port 70000 is out of range",
      "use a port from 1 to 65535"]),
    ("target-port-out-of-range", {"text": service(
        "web", ports="  ports:\n    - port: 80\n      targetPort: 0\n")},
     ["spec.ports[0].targetPort: targetPort 0 is out of range"]),
    ("unnamed-ports", {"text": service(
        "web", ports="  ports:\n    - port: 80\n    - port: 81\n")},
     ["spec.ports[0].name: is required when a Service has more than one port"]),
    ("sctp", {"text": service("web", ports="  ports:\n    - port: 80\n      protocol: SCTP\n")},
     ["spec.ports[0].protocol: protocol 'SCTP' is not supported (SCTP is not carried"]),
    ("nodeport-out-of-range", {"text": service("web", body="  type: NodePort\n", ports=(
        "  ports:\n    - port: 80\n      nodePort: 29999\n"))},
     ["spec.ports[0].nodePort: 29999 is outside podnet_nodeport_range 30000-32767"]),
    ("nodeport-duplicate", {"text": service("web", body="  type: NodePort\n", ports=(
        "  ports:\n    - port: 80\n      nodePort: 30080\n")) + service(
        "web2", body="  type: NodePort\n",
        ports="  ports:\n    - port: 80\n      nodePort: 30080\n")},
     ["Service default/web2: spec.ports[0].nodePort: 30080 is already the nodePort of Service "
      "default/web"]),
    ("nodeport-on-clusterip", {"text": service(
        "web", ports="  ports:\n    - port: 80\n      nodePort: 30080\n")},
     ["spec.ports[0].nodePort: is only used by NodePort and LoadBalancer, not ClusterIP"]),
    ("cluster-ip-outside", {"text": service("web", body="  clusterIP: 10.200.0.1\n")},
     ["Service default/web: spec.clusterIP: 10.200.0.1 is outside podnet_service_cidr"]),
    ("cluster-ip-taken", {"text": service("web", body="  clusterIP: 10.96.0.50\n")
                          + service("web2", body="  clusterIP: 10.96.0.50\n")},
     ["Service default/web2: spec.clusterIP: 10.96.0.50 is already taken by Service default/web"]),
    ("cluster-ip-is-dns", {"text": service("web", body="  clusterIP: 10.96.0.10\n")},
     ["spec.clusterIP: 10.96.0.10 is podnet_dns_service_ip, reserved for the kube-dns Service"]),
    ("cluster-ip-in-record", {"text": service("web", body="  clusterIP: 10.96.5.5\n")
                              + service("old"),
                              "record": Record(cluster_ips={"default/old": "10.96.5.5"})},
     ["Service default/web: spec.clusterIP: 10.96.5.5 is already allocated to Service "
      "default/old (record.json)"]),
    ("headless-nodeport", {"text": service("web", body="  type: NodePort\n  clusterIP: None\n")},
     ["spec.clusterIP: a NodePort Service cannot be headless"]),
    ("named-target-port-undefined", {"text": deployment("web") + service(
        "web", ports="  ports:\n    - name: http\n      port: 80\n      targetPort: web-http\n")},
     ["Service default/web: spec.ports[0].targetPort: no selected pod has a TCP container port "
      "named 'web-http'", "name the container port in the pods"]),
    ("target-port-name-invalid", {"text": service(
        "web", ports="  ports:\n    - port: 80\n      targetPort: very-long-port-name\n")},
     ["spec.ports[0].targetPort: port name 'very-long-port-name' is longer than 15 characters"]),
    ("lb-pool-exhausted", {"text": "".join(service(f"lb{i}", body="  type: LoadBalancer\n")
                                           for i in range(3)),
                           "variables": {"podnet_lb_pool": "192.168.56.252/31"}},
     ["Service default/lb2: spec.type: podnet_lb_pool 192.168.56.252/31 is exhausted: "
      "its 2 usable addresses are all taken", "widen podnet_lb_pool"]),
    ("lb-without-pool", {"text": service("lb", body="  type: LoadBalancer\n"),
                         "variables": {"podnet_lb_pool": ""}},
     ["Service default/lb: spec.type: podnet_lb_pool is not set"]),
    ("lb-mode-unknown", {"variables": {"podnet_lb_mode": "bgp"}},
     ["podnet_lb_mode: 'bgp' is not a LoadBalancer mode podnet has", "use one of: cloud, l2"]),
    ("lb-pool-off-underlay", {"variables": {"podnet_lb_pool": "172.16.0.0/28"}},
     ["podnet_lb_pool: 172.16.0.0/28 is not inside podnet_underlay_cidr 192.168.56.0/24"]),
    ("l2-pool-too-large", {"variables": {"podnet_lb_mode": "l2", "podnet_underlay_cidr":
                                         "192.168.0.0/16", "podnet_lb_pool": "192.168.200.0/24"}},
     ["podnet_lb_pool: 192.168.200.0/24 has 256 addresses; l2 mode gives each one a VRRP "
      "instance numbered 1-255", "(a /25 or smaller)"]),
    ("cloud-without-lb-host", {"text": service("lb", body="  type: LoadBalancer\n"),
                               "host_list": hosts()[:-1]},
     ["Service default/lb: spec.type: podnet_lb_mode is cloud but group loadbalancers has no "
      "host", "or set podnet_lb_mode: l2"]),
    ("cloud-two-lb-hosts", {"text": service("lb", body="  type: LoadBalancer\n"),
                            "host_list": [*hosts(), {"name": "lb2", "address": "192.168.56.201",
                                                     "groups": ["loadbalancers"]}]},
     ["podnet_lb_mode is cloud and group loadbalancers has 2 hosts (lb, lb2)",
      "keep one host in group loadbalancers"]),
    ("lb-ip-outside-pool", {"text": service(
        "lb", body="  type: LoadBalancer\n  loadBalancerIP: 192.168.56.7\n")},
     ["spec.loadBalancerIP: 192.168.56.7 is outside podnet_lb_pool 192.168.56.240/28"]),
    ("affinity-timeout", {"text": service("web", body=(
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n"
        "      timeoutSeconds: 90000\n"))},
     ["spec.sessionAffinityConfig.clientIP.timeoutSeconds: 90000 is out of range",
      "use 1 to 86400 seconds"]),
    ("etp-on-clusterip", {"text": service("web", body="  externalTrafficPolicy: Local\n")},
     ["spec.externalTrafficPolicy: only applies to NodePort and LoadBalancer Services"]),
    ("source-range-bad", {"text": service("web", body=(
        "  type: LoadBalancer\n  loadBalancerSourceRanges: [10.0.0.1/8]\n"))},
     ["spec.loadBalancerSourceRanges[0]: '10.0.0.1/8' is not a network address"]),
    ("external-name-missing", {"text": service("ext", body="  type: ExternalName\n", ports="")},
     ["spec.externalName: is required for type ExternalName"]),
    ("ipv6-family", {"text": service("web", body="  ipFamilies: [IPv6]\n")},
     ["spec.ipFamilies[0]: 'IPv6' is not carried by podnet"]),
    # -- manifests: pods and placement --------------------------------------------------------
    ("node-selector-unsatisfiable", {"text": deployment(
        "web", spec_extra="      nodeSelector:\n        zone: c\n"), "host_list": NODE3_ZONE_B},
     ["Deployment default/web: spec.template.spec.nodeSelector: pod default/web-",
      "nodeSelector {'zone': 'c'} matches no node", "label a node with podnet_node_labels"]),
    ("node-name-unknown", {"text": pod(extra="  nodeName: node9\n")},
     ["Pod default/p: spec.nodeName: pod default/p: node 'node9' is not a node of the inventory"]),
    ("node-name-vs-selector", {"text": pod(extra="  nodeName: node1\n  nodeSelector:\n"
                                                 "    zone: b\n"), "host_list": NODE3_ZONE_B},
     ["node 'node1' does not satisfy the nodeSelector {'zone': 'b'}"]),
    ("image-unsupported", {"text": pod().replace("podnet/netexec", "redis:7")},
     ["Pod default/p: spec.containers[0].image: image 'redis:7' cannot be pulled here",
      "see docs/workloads.md"]),
    ("agnhost-not-netexec", {"text": pod().replace(
        "podnet/netexec", "registry.k8s.io/e2e-test-images/agnhost:2.53\n      args: [pause]")},
     ["runs here only as 'agnhost netexec'"]),
    ("command-image-without-command", {"text": pod().replace("podnet/netexec", "busybox")},
     ["image 'busybox' has no server of its own here: set command"]),
    ("container-port-name-reused", {"text": pod().replace(
        "      image: podnet/netexec\n",
        "      image: podnet/netexec\n      ports:\n        - {name: http, containerPort: 80}\n"
        "        - {name: http, containerPort: 81}\n")},
     ["spec.containers[0].ports[1].name: port name 'http' is used twice in the pod"]),
    ("selector-mismatch", {"text": deployment("web").replace(
        "    matchLabels:\n      app: web", "    matchLabels:\n      app: other")},
     ["spec.selector.matchLabels: {'app': 'other'} does not match the template labels"]),
    ("hostname-invalid", {"text": pod(extra="  hostname: DB.0\n")},
     ["Pod default/p: spec.hostname: 'DB.0' is not a DNS-1123 label"]),
    ("replica-name-clash", {"text": pod(name="x") + pod(name="x").replace("kind: Pod",
                                                                            "kind: Pod")},
     ["Pod default/x: metadata.name: is defined twice"]),
    # -- manifests: Ingress ---------------------------------------------------------------------
    ("ingress-unknown-service", {"text": """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing}
spec:
  rules:
    - host: a.example.test
      http:
        paths:
          - path: /
            pathType: Prefix
            backend: {service: {name: nope, port: {number: 80}}}
"""}, ["Ingress default/ing: spec.rules[0].http.paths[0].backend.service.name: Service 'nope' "
       "does not exist in namespace default"]),
    ("ingress-bad-port", {"text": service("web") + """\
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing}
spec:
  defaultBackend: {service: {name: web, port: {name: https}}}
"""}, ["spec.defaultBackend.service.port: Service 'web' has no TCP port 'https'"]),
    ("ingress-relative-path", {"text": service("web") + """\
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing}
spec:
  rules:
    - http:
        paths:
          - path: api
            pathType: Exact
            backend: {service: {name: web, port: {number: 80}}}
"""}, ["spec.rules[0].http.paths[0].path: 'api' is not an absolute path"]),
    ("ingress-ip-host", {"text": service("web") + """\
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing}
spec:
  rules:
    - host: 192.168.56.240
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"""}, ["spec.rules[0].host: '192.168.56.240' is an IP address"]),
    ("ingress-class", {"text": service("web") + """\
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing}
spec:
  ingressClassName: traefik
  defaultBackend: {service: {name: web, port: {number: 80}}}
"""}, ["spec.ingressClassName: 'traefik' is not an IngressClass; fix: use one of nginx, add an "
       "IngressClass manifest named traefik, or leave it out for the default class"]),
]


@pytest.mark.parametrize(("case", "kwargs", "expected"),
                         CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_reported(case: str, kwargs: dict[str, Any], expected: list[str]) -> None:
    found = errors_of(**kwargs)
    text = "\n".join(found)
    for fragment in expected:
        assert fragment in text, f"{case}: expected {fragment!r} in:\n{text}"
    assert all("; fix: " in line for line in found), text


def test_there_are_at_least_thirty_distinct_cases() -> None:
    assert len({c[0] for c in CASES}) >= 30


def test_record_damaged() -> None:
    from podnet.problems import Problems

    problems = Problems()
    Record.loads('{"version": 1, "cluster_ips": []}', "record.json", problems)
    assert [str(p) for p in problems.errors] == [
        "record.json: allocation record: cluster_ips: must map names to str values; fix: restore "
        "the file from a backup, or delete it to allocate everything anew (which may renumber "
        "Services and move pods)"]
    problems = Problems()
    Record.loads("{not json", "record.json", problems)
    assert "record.json: allocation record: is not JSON" in str(problems.errors[0])
    problems = Problems()
    Record.loads('{"version": 7}', "record.json", problems)
    assert "is not a version 1 podnet allocation record" in str(problems.errors[0])


def test_every_error_is_reported_in_one_run() -> None:
    found = errors_of(service("web", ports="  ports:\n    - port: 70000\n")
                      + service("web2", body="  clusterIP: 10.200.0.1\n"),
                      variables={"podnet_backend": "flannel"})
    assert any("podnet_backend" in f for f in found)
    assert any("port 70000 is out of range" in f for f in found)


def test_unhonoured_fields_are_warnings_with_their_line() -> None:
    plan = make_plan(service("web", body="  publishNotReadyAddresses: true\n"))
    texts = [str(w) for w in plan.warnings]
    assert ("m.yaml:10: Service default/web: spec.publishNotReadyAddresses: podnet does not act "
            "on this field; it has no effect here; fix: remove it, or see docs/manifests.md for "
            "the fields podnet honours") in texts


def test_status_is_reported_not_ignored() -> None:
    plan = make_plan(service("web") + "status:\n  loadBalancer: {ingress: [{ip: 1.2.3.4}]}\n")
    assert [w.field for w in plan.warnings] == ["status.loadBalancer.ingress[0].ip"]
    assert make_plan(service("web") + "status: {}\n").warnings == []


def test_valid_input_has_no_warnings() -> None:
    assert make_plan(deployment("web") + service("web")).warnings == []


def test_variables_fill_from_defaults() -> None:
    minimal = {"podnet_underlay_cidr": VARS["podnet_underlay_cidr"]}
    from podnet.model import build
    from podnet.problems import Problems

    plan = build(minimal, hosts(), [], None, "inv", "record.json", Problems())
    assert str(plan.settings.service_cidr) == "10.96.0.0/12"
    assert plan.settings.lb_pool is None
