"""The pods that actually run, with the IPs their nodes reported (the ansible_local.podnet
facts), as the renderers take them."""

from __future__ import annotations

from collections.abc import Mapping


def observed_ips(pods: object) -> dict[str, str]:
    """``{ns/name: ip}`` from pod facts: a list of ``{namespace, name, ip}`` mappings."""
    out: dict[str, str] = {}
    if not isinstance(pods, list):
        raise ValueError("observed pods must be a list of {namespace, name, ip} mappings")
    for i, pod in enumerate(pods):
        if not isinstance(pod, Mapping) or not all(k in pod for k in ("namespace", "name")):
            raise ValueError(f"observed pod [{i}] needs namespace and name, got {pod!r}")
        if pod.get("ip"):
            out[f"{pod['namespace']}/{pod['name']}"] = str(pod["ip"])
    return out
