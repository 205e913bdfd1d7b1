"""Filter for the l2_announce role: one node's keepalived instances (podnet/l2announce.py)."""

from __future__ import annotations

import json
from typing import Any

from ansible.errors import AnsibleFilterError

from podnet import l2announce


def podnet_l2_announce(lb: dict[str, Any], node: str) -> dict[str, Any]:
    """What keepalived on ``node`` announces, from ``plan | podnet_load_balancer``."""
    try:
        return l2announce.node_config(lb, node)
    except ValueError as exc:
        raise AnsibleFilterError(f"l2_announce on {node}: {exc}") from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise AnsibleFilterError(f"podnet_l2_announce: {type(exc).__name__}: {exc}; give it "
                                 "the plan through podnet_load_balancer") from exc


def podnet_l2_stray(lb: dict[str, Any], ip_json: str) -> list[str]:
    """The LoadBalancer addresses on an interface, from ``ip -j -4 addr show dev <it>``."""
    try:
        return l2announce.stray_addresses(lb, json.loads(ip_json))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AnsibleFilterError(f"podnet_l2_stray: {type(exc).__name__}: {exc}; give it "
                                 "the plan through podnet_load_balancer and the output of "
                                 "ip -j -4 addr show") from exc


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"podnet_l2_announce": podnet_l2_announce, "podnet_l2_stray": podnet_l2_stray}
