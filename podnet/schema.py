"""Check manifests against the real Kubernetes OpenAPI schema, and list what podnet honours.

The schemas are the strict (no unknown fields) JSON schemas of Kubernetes 1.34 that the
``kubernetes-validate`` package ships, so validation works offline. On top of the schema, each
kind has the list of fields podnet acts on (``HONOURED``); a field outside it is reported as a
warning, never silently dropped. docs/manifests.md documents the same list (a unit test keeps them
in step).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

from podnet.yamlsource import FieldPath

KUBERNETES_VERSION = "1.34"

KINDS: dict[str, str] = {
    "Namespace": "v1",
    "Pod": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "Ingress": "networking.k8s.io/v1",
    "IngressClass": "networking.k8s.io/v1",
    "Secret": "v1",
}

_META = (
    "apiVersion",
    "kind",
    "metadata.name",
    "metadata.namespace",
    "metadata.labels.*",
    "metadata.annotations.*",
)
_POD_SPEC = (
    "containers[].name",
    "containers[].image",
    "containers[].command[]",
    "containers[].args[]",
    "containers[].env[].name",
    "containers[].env[].value",
    "containers[].ports[].name",
    "containers[].ports[].containerPort",
    "containers[].ports[].protocol",
    "containers[].ports[].hostPort",
    "containers[].ports[].hostIP",
    "containers[].readinessProbe.httpGet.path",
    "containers[].readinessProbe.httpGet.port",
    "containers[].readinessProbe.tcpSocket.port",
    "containers[].readinessProbe.periodSeconds",
    "containers[].readinessProbe.timeoutSeconds",
    "containers[].readinessProbe.failureThreshold",
    "containers[].readinessProbe.successThreshold",
    "hostname",
    "subdomain",
    "nodeName",
    "nodeSelector.*",
    "restartPolicy",
    "hostNetwork",
    "dnsPolicy",
    "dnsConfig.nameservers[]",
    "dnsConfig.searches[]",
    "dnsConfig.options[].name",
    "dnsConfig.options[].value",
)

_DEPLOYMENT = (
    "spec.replicas",
    "spec.selector.matchLabels.*",
    "spec.template.metadata.labels.*",
    "spec.template.metadata.annotations.*",
)
_SERVICE = (
    "spec.type",
    "spec.selector.*",
    "spec.ports[].name",
    "spec.ports[].protocol",
    "spec.ports[].port",
    "spec.ports[].targetPort",
    "spec.ports[].nodePort",
    "spec.clusterIP",
    "spec.clusterIPs[]",
    "spec.ipFamilies[]",
    "spec.ipFamilyPolicy",
    "spec.externalName",
    "spec.sessionAffinity",
    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
    "spec.externalTrafficPolicy",
    "spec.internalTrafficPolicy",
    "spec.loadBalancerSourceRanges[]",
    "spec.loadBalancerIP",
    "spec.healthCheckNodePort",
)
_INGRESS = (
    "spec.ingressClassName",
    "spec.defaultBackend.service.name",
    "spec.defaultBackend.service.port.number",
    "spec.defaultBackend.service.port.name",
    "spec.rules[].host",
    "spec.rules[].http.paths[].path",
    "spec.rules[].http.paths[].pathType",
    "spec.rules[].http.paths[].backend.service.name",
    "spec.rules[].http.paths[].backend.service.port.number",
    "spec.rules[].http.paths[].backend.service.port.name",
    "spec.tls[].hosts[]",
    "spec.tls[].secretName",
)

_INGRESS_CLASS = ("spec.controller",)
# a Secret's keys hold dots: a [key] names one literally (docs/manifests.md spells them the same)
_SECRET = (
    "type",
    "data[tls.crt]",
    "data[tls.key]",
    "stringData[tls.crt]",
    "stringData[tls.key]",
)

HONOURED: dict[str, tuple[str, ...]] = {
    "Namespace": _META,
    "Pod": (*_META, *(f"spec.{p}" for p in _POD_SPEC)),
    "Deployment": (*_META, *_DEPLOYMENT, *(f"spec.template.spec.{p}" for p in _POD_SPEC)),
    "Service": (*_META, *_SERVICE),
    "Ingress": (*_META, *_INGRESS),
    "IngressClass": (*_META, *_INGRESS_CLASS),
    "Secret": (*_META, *_SECRET),
}


def _split(pattern: str) -> tuple[str, ...]:
    """"spec.ports[].name" -> ("spec", "ports", "[]", "name"); "data[tls.crt]" -> ("data",
    "tls.crt"): a key in brackets is taken whole, dots and all."""
    parts: list[str] = []
    for key, word in re.findall(r"\[([^\]]*)\]|([^.\[\]]+)", pattern):
        parts.append(word or key or "[]")
    return tuple(parts)


@functools.cache
def _patterns(kind: str) -> tuple[tuple[str, ...], ...]:
    return tuple(_split(p) for p in HONOURED[kind])


def _leaves(data: Any, path: FieldPath) -> Iterator[FieldPath]:
    """Paths of the values in ``data``; an empty mapping or list sets nothing."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, (*path, str(key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _leaves(value, (*path, i))
    else:
        yield path


def _matches(path: FieldPath, pattern: tuple[str, ...]) -> bool:
    if len(path) != len(pattern):
        return False
    for part, want in zip(path, pattern, strict=True):
        if want == "[]":
            if not isinstance(part, int):
                return False
        elif want != "*" and want != part:
            return False
    return True


def unhonoured_fields(kind: str, obj: dict[str, Any]) -> list[FieldPath]:
    """Fields present in ``obj`` that podnet does not act on (``status`` included)."""
    patterns = _patterns(kind)
    return [p for p in _leaves(obj, ()) if not any(_matches(p, pat) for pat in patterns)]


@functools.cache
def _validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    group = api_version.split("/")[0].split(".")[0] if "/" in api_version else ""
    version = api_version.split("/")[-1]
    stem = f"{kind.lower()}-{group}-{version}" if group else f"{kind.lower()}-{version}"
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict"
    schema = kv_utils.schema_contents(f"{folder}/{stem}.json", KUBERNETES_VERSION)
    defs = kv_utils.schema_contents(f"{folder}/_definitions.json", KUBERNETES_VERSION)
    registry: Registry = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(defs) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def schema_errors(obj: dict[str, Any]) -> list[tuple[FieldPath, str]]:
    """(field path, message) for every way ``obj`` breaks its Kubernetes schema."""
    kind, api_version = obj["kind"], obj["apiVersion"]
    validator = _validator(kind, api_version)
    found: list[tuple[FieldPath, str]] = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.path]):
        path: FieldPath = tuple(err.path)
        found.append((path, _short(err)))
    return found


def _short(err: jsonschema.ValidationError) -> str:
    schema_part = err.schema if isinstance(err.schema, dict) else {}
    instance: Any = err.instance
    if err.validator == "additionalProperties" and isinstance(instance, dict):
        extra = sorted(set(instance) - set(schema_part.get("properties", {})))
        return f"unknown field(s) {', '.join(extra)} (not in the Kubernetes schema)"
    if err.validator == "required":
        return err.message.replace("is a required property", "is required")
    if err.validator == "type":
        want = schema_part.get("type")
        want_text = "/".join(t for t in want if t != "null") if isinstance(want, list) else want
        return f"{instance!r} is not of type {want_text}"
    return err.message

