"""The TLS certificates of kubernetes.io/tls Secrets: read and checked once, at the boundary.

ingress-nginx checks a Secret's PEM before it writes it for nginx (a bad one falls back to the
default certificate at run time); podnet checks earlier, in the model, so that ``plan`` names
the Secret, the field and the fix. What a certificate covers follows RFC 6125 as browsers and
curl apply it: the subjectAltName DNS names only (a certificate with none covers nothing; the
subject's CN is not read), a ``*`` only as the whole left-most label, standing for exactly one
label.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

TLS_TYPE = "kubernetes.io/tls"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"
_KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
              ed448.Ed448PrivateKey, dsa.DSAPrivateKey)


class TLSError(ValueError):
    """A Secret's certificate or key is unusable: ``key`` names the data key (tls.crt, tls.key)
    at fault, the message says what is wrong and ``fix`` what to do."""

    def __init__(self, key: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.key = key
        self.fix = fix


@dataclass(frozen=True)
class CertInfo:
    """What podnet reads from a checked certificate chain (its first certificate)."""

    names: tuple[str, ...]  # subjectAltName DNS names, lower-case, as given
    not_before: datetime.datetime
    not_after: datetime.datetime
    subject: str
    issuer: str

    def covers(self, host: str) -> bool:
        return any(name_covers(name, host) for name in self.names)

    def expired(self, now: datetime.datetime | None = None) -> bool:
        return (now or datetime.datetime.now(datetime.UTC)) > self.not_after

    def not_yet_valid(self, now: datetime.datetime | None = None) -> bool:
        return (now or datetime.datetime.now(datetime.UTC)) < self.not_before


def name_covers(name: str, host: str) -> bool:
    """Whether certificate DNS name ``name`` covers ``host`` (RFC 6125 section 6.4.3).

    ``*.foo.com`` covers ``bar.foo.com``, not ``foo.com`` nor ``baz.bar.foo.com``; a wildcard
    host of an Ingress (``*.foo.com``) is covered only by that same wildcard name, since a
    certificate for one name under it does not serve the others."""
    name, host = name.lower().rstrip("."), host.lower().rstrip(".")
    if name == host:
        return True
    if not name.startswith("*.") or host.startswith("*."):
        return False
    first, _, rest = host.partition(".")
    return bool(first) and rest == name[2:]


def check_pair(cert_pem: bytes, key_pem: bytes) -> CertInfo:
    """The certificate's facts, or TLSError naming tls.crt or tls.key: the certificate chain
    parses, the key parses (unencrypted: nginx reads it at start without a passphrase), and the
    key is the private half of the first certificate's public key."""
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise TLSError(CERT_KEY, "holds no PEM certificate (no -----BEGIN CERTIFICATE----- "
                       "line)", "put the PEM certificate chain in it, the server's "
                       "certificate first")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise TLSError(CERT_KEY, f"is not a readable PEM certificate ({exc})",
                       "put the PEM certificate chain in it, the server's certificate "
                       "first") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TLSError(KEY_KEY, "is an encrypted private key; nginx cannot start with a "
                       "passphrase", "decrypt it (openssl pkey -in key.pem -out plain.pem)"
                       ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TLSError(KEY_KEY, f"is not a readable PEM private key ({exc})",
                       "put the certificate's unencrypted PEM private key in it") from None
    if not isinstance(key, _KEY_TYPES):
        raise TLSError(KEY_KEY, f"is a {type(key).__name__}, not a key TLS can sign with",
                       "use an RSA or EC key")
    leaf = chain[0]
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise TLSError(KEY_KEY, f"is not the private key of the certificate in {CERT_KEY} "
                       f"({leaf.subject.rfc4514_string() or 'no subject'})",
                       f"put the key the certificate was issued for, or the certificate "
                       f"of this key first in {CERT_KEY}")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(n) for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(names, leaf.not_valid_before_utc, leaf.not_valid_after_utc,
                    leaf.subject.rfc4514_string(), leaf.issuer.rfc4514_string())


def uncovered(info: CertInfo, hosts: Sequence[str]) -> list[str]:
    """The hosts of ``hosts`` the certificate does not cover."""
    return [h for h in hosts if not info.covers(h)]
