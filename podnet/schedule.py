"""Pod placement: which node each pod runs on.

Rules, in order: ``nodeName`` pins a pod; otherwise the nodes whose labels satisfy
``nodeSelector`` are eligible. A pod placed before (in the allocation record) stays where it is
while that node is still eligible, so adding replicas or nodes moves no running pod. New pods go
to the eligible node with the fewest pods of the same owner (spreading a Deployment's replicas),
then the fewest pods overall, then a stable hash of pod and node (rendezvous) to break ties.
A node where a pod's host ports (hostPort, or every port of a hostNetwork pod) are taken by a
pod placed before it is not eligible, as the scheduler's NodePorts filter has it.

A NotReady node (one the converge could not reach) takes no pod, as the node lifecycle
controller taints it: a Deployment's pod there is evicted to another eligible node; a bare Pod
that ran there, a pod pinned to it (``nodeName``) and a pod whose only eligible nodes are
NotReady stay pending - nobody else runs them - until the node is back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from podnet.addresses import stable_hash

# a host port's hostIP when none is given: every address of the node (it collides with any)
EVERY_ADDRESS = "0.0.0.0"  # noqa: S104 - a host port's wildcard, nothing binds here


@dataclass(frozen=True)
class Candidate:
    """A pod waiting for a node."""

    key: str  # ns/name
    owner: str  # "Deployment ns/name" or the pod's own key
    node_name: str | None
    node_selector: tuple[tuple[str, str], ...]
    # (hostIP, port, protocol) it takes on its node: hostPorts, a hostNetwork pod's ports
    host_ports: tuple[tuple[str, int, str], ...] = ()


@dataclass(frozen=True)
class Pending:
    """A pod that waits for a NotReady node."""

    key: str
    node: str  # the NotReady node it waits for (where it ran, where it is pinned, or eligible)
    reason: str


@dataclass(frozen=True)
class Unplaceable:
    key: str
    reason: str
    fix: str
    field: str  # "nodeName", "nodeSelector", or "containers" (no free host port)


def port_conflict(wanted: Collection[tuple[str, int, str]],
                  taken: Mapping[tuple[str, int, str], str]) -> str | None:
    """The pod holding a host port that one of ``wanted`` collides with, as "ip:port/proto by
    pod": the same port and protocol, and the same hostIP or either one every address."""
    for ip, port, proto in wanted:
        for (other_ip, other_port, other_proto), holder in taken.items():
            if (port, proto) == (other_port, other_proto) and (
                    ip == other_ip or EVERY_ADDRESS in (ip, other_ip)):
                return f"{other_ip}:{other_port}/{other_proto} of pod {holder}"
    return None


def eligible(pod: Candidate, nodes: Mapping[str, Mapping[str, str]]) -> list[str]:
    return [name for name, labels in nodes.items()
            if all(labels.get(k) == v for k, v in pod.node_selector)]


def place(
    pods: Sequence[Candidate],
    nodes: Mapping[str, Mapping[str, str]],
    previous: Mapping[str, str],
    not_ready: Collection[str] = (),
) -> tuple[dict[str, str], list[Unplaceable], list[Pending]]:
    """Node per pod key, the pods that cannot be placed (with why) and the pods waiting for a
    NotReady node."""
    placed: dict[str, str] = {}
    failed: list[Unplaceable] = []
    pending: list[Pending] = []
    per_owner: dict[str, Counter[str]] = {}
    total: Counter[str] = Counter()
    waiting: list[tuple[Candidate, list[str]]] = []
    ports: dict[str, dict[tuple[str, int, str], str]] = {n: {} for n in nodes}

    def assign(pod: Candidate, node: str) -> None:
        placed[pod.key] = node
        per_owner.setdefault(pod.owner, Counter())[node] += 1
        total[node] += 1
        for entry in pod.host_ports:
            ports[node][entry] = pod.key

    def conflict(pod: Candidate, node: str) -> str | None:
        return port_conflict(pod.host_ports, ports[node]) if pod.host_ports else None

    # a new pod pinned to a node comes after the pods that already run there: the one that
    # runs keeps its host ports, the new one is refused (the kubelet admits by ports too)
    pinned_new: list[Candidate] = []
    for pod in pods:
        choices = eligible(pod, nodes)
        if pod.node_name is not None:
            if pod.node_name not in nodes:
                failed.append(Unplaceable(
                    pod.key, f"node '{pod.node_name}' is not a node of the inventory",
                    f"use one of {', '.join(sorted(nodes))} or remove nodeName", "nodeName"))
            elif pod.node_name not in choices:
                failed.append(Unplaceable(
                    pod.key, f"node '{pod.node_name}' does not satisfy the nodeSelector "
                    f"{dict(pod.node_selector)}",
                    "label the node (podnet_node_labels) or change nodeSelector", "nodeName"))
            elif pod.node_name in not_ready:
                pending.append(Pending(pod.key, pod.node_name,
                                       f"pinned (nodeName) to {pod.node_name}, which is NotReady"))
            elif previous.get(pod.key) == pod.node_name and not conflict(pod, pod.node_name):
                assign(pod, pod.node_name)
            else:
                pinned_new.append(pod)
            continue
        ran_on = previous.get(pod.key)
        if (ran_on is not None and ran_on in not_ready and ran_on in nodes
                and not pod.owner.startswith("Deployment ")):
            # a bare Pod belongs to its node: no controller makes it again elsewhere
            pending.append(Pending(pod.key, ran_on,
                                   f"a bare Pod on {ran_on}, which is NotReady"))
            continue
        if choices and all(n in not_ready for n in choices):
            pending.append(Pending(pod.key, ran_on if ran_on in choices else choices[0],
                                   f"every node its nodeSelector allows ({', '.join(choices)}) "
                                   "is NotReady"))
            continue
        choices = [n for n in choices if n not in not_ready]
        if not choices:
            failed.append(Unplaceable(
                pod.key, f"nodeSelector {dict(pod.node_selector)} matches no node",
                "label a node with podnet_node_labels in the inventory or change the selector",
                "nodeSelector"))
            continue
        if previous.get(pod.key) in choices and not conflict(pod, previous[pod.key]):
            assign(pod, previous[pod.key])
            continue
        waiting.append((pod, choices))

    for pod in pinned_new:
        node = str(pod.node_name)
        if held := conflict(pod, node):
            failed.append(Unplaceable(
                pod.key, f"node '{node}' has no free host port for it: {held} takes it",
                "give the pods different hostPorts, hostIPs or protocols, or pin this one to "
                "another node", "containers"))
        else:
            assign(pod, node)

    for pod, wanted in waiting:
        choices = [n for n in wanted if not conflict(pod, n)]
        down = [n for n in eligible(pod, nodes) if n in not_ready]
        if not choices and down:
            # its ports are taken on every Ready node; a NotReady one would have them free
            pending.append(Pending(pod.key, down[0], "its host ports are taken on every Ready "
                                   f"node its nodeSelector allows; {down[0]} is NotReady"))
            continue
        if not choices:
            held = "; ".join(f"{n}: {conflict(pod, n)}" for n in wanted)
            failed.append(Unplaceable(
                pod.key, f"no node its nodeSelector allows has its host ports free ({held})",
                "give the pods different hostPorts, hostIPs or protocols, or add a node",
                "containers"))
            continue
        owned = per_owner.get(pod.owner, Counter())
        best = min(choices, key=lambda n: (owned[n], total[n],
                                           stable_hash(f"{pod.key}@{n}")))
        assign(pod, best)
    return placed, failed, pending
