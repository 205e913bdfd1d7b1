"""Kubernetes name rules (k8s.io/apimachinery/pkg/util/validation), as predicates with reasons."""

from __future__ import annotations

import re

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def dns1123_label(value: str) -> str | None:
    """None when ``value`` is a valid DNS-1123 label, else the reason."""
    if len(value) > 63:
        return f"'{value}' is longer than 63 characters"
    if not _DNS1123_LABEL.match(value):
        return (
            f"'{value}' is not a DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return None


def dns1035_label(value: str) -> str | None:
    """Service names: a DNS-1035 label (must start with a letter)."""
    if len(value) > 63:
        return f"'{value}' is longer than 63 characters"
    if not _DNS1035_LABEL.match(value):
        return (
            f"'{value}' is not a DNS-1035 label (lower-case letters, digits and '-', "
            "starting with a letter and ending with a letter or digit)"
        )
    return None


def dns1123_subdomain(value: str, wildcard: bool = False) -> str | None:
    """Dot-separated DNS-1123 labels, at most 253 characters; ``*.`` first when allowed."""
    body = value[2:] if wildcard and value.startswith("*.") else value
    if not value or len(value) > 253:
        return f"'{value}' must be 1 to 253 characters"
    for label in body.split("."):
        if not label or len(label) > 63 or not _DNS1123_LABEL.match(label):
            return (
                f"'{value}' is not a DNS-1123 subdomain (dot-separated lower-case labels "
                "of letters, digits and '-')"
            )
    return None


def iana_svc_name(value: str) -> str | None:
    """Port names: at most 15 characters, a letter among them, no '--'."""
    if len(value) > 15:
        return f"port name '{value}' is longer than 15 characters"
    if not _IANA_SVC.match(value) or "--" in value:
        return (
            f"port name '{value}' may only hold lower-case letters, digits and single '-' "
            "between them"
        )
    if not re.search(r"[a-z]", value):
        return f"port name '{value}' must contain at least one letter"
    return None


def label_key(key: str) -> str | None:
    """A label key: optional DNS subdomain prefix and '/', then a name of at most 63 chars."""
    prefix, _, name = key.rpartition("/")
    if prefix and dns1123_subdomain(prefix):
        return f"label key '{key}' has an invalid prefix '{prefix}'"
    if len(name) > 63 or not _LABEL_NAME.match(name):
        return (
            f"label key '{key}' must be at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def label_value(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return (
            f"label value '{value}' must be empty or at most 63 letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit"
        )
    return None
