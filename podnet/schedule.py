"""Pod placement: which node each pod runs on.

Rules, in order: ``nodeName`` pins a pod; otherwise the nodes whose labels satisfy
``nodeSelector`` are eligible. A pod placed before (in the allocation record) stays where it is
while that node is still eligible, so adding replicas or nodes moves no running pod. New pods go
to the eligible node with the fewest pods of the same owner (spreading a Deployment's replicas),
then the fewest pods overall, then a stable hash of pod and node (rendezvous) to break ties.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from podnet.addresses import stable_hash


@dataclass(frozen=True)
class Candidate:
    """A pod waiting for a node."""

    key: str  # ns/name
    owner: str  # "Deployment ns/name" or the pod's own key
    node_name: str | None
    node_selector: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Unplaceable:
    key: str
    reason: str
    fix: str
    field: str  # "nodeName" or "nodeSelector"


def eligible(pod: Candidate, nodes: Mapping[str, Mapping[str, str]]) -> list[str]:
    return [name for name, labels in nodes.items()
            if all(labels.get(k) == v for k, v in pod.node_selector)]


def place(
    pods: Sequence[Candidate],
    nodes: Mapping[str, Mapping[str, str]],
    previous: Mapping[str, str],
) -> tuple[dict[str, str], list[Unplaceable]]:
    """Node per pod key, and the pods that cannot be placed (with why)."""
    placed: dict[str, str] = {}
    failed: list[Unplaceable] = []
    per_owner: dict[str, Counter[str]] = {}
    total: Counter[str] = Counter()
    waiting: list[tuple[Candidate, list[str]]] = []

    def assign(pod: Candidate, node: str) -> None:
        placed[pod.key] = node
        per_owner.setdefault(pod.owner, Counter())[node] += 1
        total[node] += 1

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
            else:
                assign(pod, pod.node_name)
            continue
        if not choices:
            failed.append(Unplaceable(
                pod.key, f"nodeSelector {dict(pod.node_selector)} matches no node",
                "label a node with podnet_node_labels in the inventory or change the selector",
                "nodeSelector"))
            continue
        if previous.get(pod.key) in choices:
            assign(pod, previous[pod.key])
            continue
        waiting.append((pod, choices))

    for pod, choices in waiting:
        owned = per_owner.get(pod.owner, Counter())
        best = min(choices, key=lambda n: (owned[n], total[n],
                                           stable_hash(f"{pod.key}@{n}")))
        assign(pod, best)
    return placed, failed
