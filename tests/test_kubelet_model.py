"""What the kubelet role renders per pod, from the plan as Ansible holds it."""

from __future__ import annotations

import shlex

import pytest
from modelkit import deployment, make_plan

from podnet import kubelet
from podnet.paths import PATHS
from podnet.plan import Plan

TEXT = deployment("web", 2) + """\
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: default}
spec:
  nodeName: node1
  restartPolicy: Never
  containers:
    - name: sh
      image: busybox
      command: [/bin/sh, -c, 'echo "$HOME" 100% done']
      env: [{name: GREETING, value: hello world}]
---
apiVersion: v1
kind: Pod
metadata: {name: proxy, namespace: default}
spec:
  nodeName: node1
  containers:
    - {name: web, image: nginx, ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: who, namespace: default}
spec:
  nodeName: node1
  containers:
    - name: whoami
      image: traefik/whoami:v1.10
      args: [-port, "8000", --name=who]
      env: [{name: WHOAMI_NAME, value: from-env}]
"""


@pytest.fixture(scope="module")
def pods() -> list[dict]:
    plan = Plan.from_data(make_plan(TEXT).data())
    return kubelet.node_pods(plan, "node1")


def by_name(pods: list[dict], name: str) -> dict:
    return next(p for p in pods if p["name"] == name)


def test_only_the_nodes_pods(pods: list[dict]) -> None:
    plan = make_plan(TEXT)
    assert sorted(p["name"] for p in pods) == sorted(p.name for p in plan.pods_on("node1"))


def test_pod_identity_and_files(pods: list[dict]) -> None:
    tool = by_name(pods, "tool")
    assert tool["id"] == "default_tool"
    assert tool["sandbox_unit"] == "podnet-sandbox@default_tool.service"
    assert tool["spec"]["netns"] == "default_tool" and len(tool["spec"]["container_id"]) == 64
    assert tool["spec"]["units"] == ["podnet-default_tool-sh.service"]
    assert tool["resolv_conf"] == ("nameserver 10.96.0.10\nsearch default.svc.cluster.local "
                                   "svc.cluster.local cluster.local\noptions ndots:5\n")


def test_commands_are_quoted_for_systemd(pods: list[dict]) -> None:
    sh = by_name(pods, "tool")["containers"][0]
    assert sh["exec_start"] == '/bin/sh -c "echo \\"$$HOME\\" 100%% done"'
    assert sh["restart"] == "no"
    assert '"GREETING=hello world"' in sh["environment"]
    assert "PODNET_HOSTNAME=tool" in sh["environment"]


def test_netexec_and_packaged_servers(pods: list[dict]) -> None:
    plan = Plan.from_data(make_plan(TEXT).data())
    everywhere = [p for n in ("node1", "node2", "node3") for p in kubelet.node_pods(plan, n)]
    web = next(p for p in everywhere if p["name"].startswith("web-"))["containers"][0]
    assert shlex.split(web["exec_start"]) == [PATHS.netexec, "--http-port=8080",
                                              "--udp-port=8081"]
    assert web["config_path"] is None and web["restart"] == "always"
    nginx = by_name(pods, "proxy")["containers"][0]
    assert nginx["config_path"] == "/etc/podnet/pods/default_proxy/web.conf"
    assert "listen 8080;" in nginx["config_default"]
    assert nginx["exec_start"].startswith("/usr/sbin/nginx -c /etc/podnet/pods/default_proxy/")


def test_whoami_runs_the_node_tool_with_its_own_flags(pods: list[dict]) -> None:
    who = by_name(pods, "who")["containers"][0]
    assert who["kind"] == "whoami" and who["config_path"] is None
    assert shlex.split(who["exec_start"]) == [PATHS.tool("podnet-whoami"), "-port", "8000",
                                              "--name=who"]
    # the pod's name as the hostname whoami prints, and the container's env passed on
    assert "HOSTNAME=who" in who["environment"]
    assert "WHOAMI_NAME=from-env" in who["environment"]


def test_dns_pods_run_unbound_with_a_placeholder_config() -> None:
    plan = Plan.from_data(make_plan("").data())
    dns = [c for node in ("node1", "node2", "node3") for p in kubelet.node_pods(plan, node)
           for c in p["containers"] if c["name"] == "unbound"]
    assert len(dns) == 2
    assert all(c["kind"] == "unbound" and "interface: 0.0.0.0@53" in c["config_default"]
               for c in dns)
    health = [c for node in ("node1", "node2", "node3") for p in kubelet.node_pods(plan, node)
              for c in p["containers"] if c["name"] == "health"]
    assert [c["exec_start"] for c in health] == [
        "/usr/local/sbin/podnet-dns health 8080 cluster.local /etc/podnet/cluster-dns/records.conf"
    ] * 2


def test_default_config_for_other_kinds_is_none() -> None:
    pod = Plan.from_data(make_plan(TEXT).data()).pod("default/proxy")
    assert kubelet.default_config("netexec", pod, []) is None
