"""X.509 credentials for IKE_AUTH (RFC 7296 2.15, 3.6, 3.7; RFC 5280 path checks).

    creds = Credentials.from_files("gw1.pem", "gw1.key", "ca.pem")   # PEM; chain allowed
    leaf = verify_chain(received_der_certs, creds.trusted, now=creds.clock())
    check_identity(leaf, identity)                                   # ID vs subject / SAN

The path check is the part of RFC 5280 6.1 an IKE gateway needs, done with the
`cryptography` package's primitives: each link's signature (verify_directly_issued_by),
each certificate's validity at the given wall-clock time, basicConstraints cA on every
issuer, keyUsage keyCertSign on issuers and digitalSignature on the leaf when the
extension is present. No revocation (CRL/OCSP) yet. Failures raise CertificateError whose
`reason` is one short word a log line and the AuthenticationFailed event carry.

The wall-clock time is the caller's: Credentials.clock (default time.time) is the only
place one is read, so tests pin it (STYLE.md 1).
"""
from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .constants import IDType
from .dn import decode_name, dn_text

#: Longest issuer chain we follow above the leaf (intermediates + the trust anchor).
MAX_CHAIN_DEPTH = 8
#: Most certificates we look at in one IKE_AUTH message (an attacker could send many).
MAX_RECEIVED_CERTS = 16

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]

#: Curve name -> key kind (as ike/config.py AUTH_METHODS names the kinds).
_CURVE_KIND = {"secp256r1": "ecdsa-256", "secp384r1": "ecdsa-384", "secp521r1": "ecdsa-521"}


class CertificateError(Exception):
    """A peer certificate (chain) that does not authenticate it. `reason` is one of
    malformed, unknown-ca, bad-signature, expired, not-yet-valid, not-a-ca, key-usage,
    too-long, identity-mismatch, unsupported-key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def peer_key(cert: x509.Certificate):
    """The certificate's public key and its kind; CertificateError if unusable."""
    try:
        key = cert.public_key()
    except _PARSE_ERRORS as err:
        raise CertificateError("malformed", f"public key does not parse: {err}") from None
    return key, key_kind(key)


def key_kind(key) -> str:
    """'rsa', 'ecdsa-256', 'ecdsa-384' or 'ecdsa-521' for a public or private key."""
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return "rsa"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) \
            and key.curve.name in _CURVE_KIND:
        return _CURVE_KIND[key.curve.name]
    raise CertificateError("unsupported-key", f"{type(key).__name__} keys are not supported")


def describe(cert: x509.Certificate) -> str:
    """The subject as strongSwan prints it (RDNs in DER order, ', ' between them)."""
    return dn_text(cert.subject)


def certreq_hash(ca: x509.Certificate) -> bytes:
    """SHA-1 of the CA's DER SubjectPublicKeyInfo: one entry of a CERTREQ payload (3.7)."""
    spki = ca.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha1(spki).digest()


def parse_certificate(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as err:
        raise CertificateError("malformed", f"certificate does not parse: {err}") from None


# --- our credentials ---------------------------------------------------------------------

@dataclass(frozen=True)
class Credentials:
    """Our certificate chain (leaf first, then intermediates), its private key, and the
    CA certificates we trust for peers. `clock` gives the wall-clock time (seconds since
    the epoch) used to check validity periods."""
    chain: tuple
    private_key: PrivateKey = field(repr=False)
    trusted: tuple
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "chain", tuple(self.chain))
        object.__setattr__(self, "trusted", tuple(self.trusted))
        if not self.chain:
            raise ValueError("no local certificate")
        if not self.trusted:
            raise ValueError("no trusted CA certificate")
        try:
            key_kind(self.private_key)
        except CertificateError as err:
            raise ValueError(err.detail) from None
        if _spki(self.private_key.public_key()) != _spki(self.chain[0].public_key()):
            raise ValueError(f"the private key does not belong to certificate "
                             f"{describe(self.chain[0])!r}")

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def kind(self) -> str:
        """'rsa' or 'ecdsa-256/384/521': what our AUTH signatures are made with."""
        return key_kind(self.private_key)

    def certreq(self) -> bytes:
        """The CERTREQ payload's Certification Authority field: our trusted CAs' hashes."""
        return b"".join(dict.fromkeys(certreq_hash(ca) for ca in self.trusted))

    def chain_der(self) -> list[bytes]:
        return [c.public_bytes(serialization.Encoding.DER) for c in self.chain]

    @classmethod
    def from_files(cls, local_certificate: str, private_key: str, trusted_ca: str,
                   clock: Callable[[], float] = time.time) -> "Credentials":
        """PEM files: our certificate (may hold the chain, leaf first), our unencrypted
        private key (PKCS#8, PKCS#1 or SEC1), one or more trusted CA certificates.
        ValueError names the file and what is wrong with it."""
        chain = _load_certs(local_certificate, "local certificate")
        trusted = _load_certs(trusted_ca, "trusted CA")
        data = _read(private_key, "private key")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as err:
            raise ValueError(f"private key {private_key}: not a usable unencrypted PEM "
                             f"private key ({err})") from None
        try:
            return cls(chain, key, trusted, clock)
        except ValueError as err:
            raise ValueError(f"{local_certificate} / {private_key}: {err}") from None


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise ValueError(f"{what} {path}: cannot read it ({err.strerror})") from None


def _load_certs(path: str, what: str) -> list:
    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as err:
        raise ValueError(f"{what} {path}: no PEM certificate in it ({err})") from None
    return certs


# --- the peer's chain (RFC 5280 6.1, reduced) ----------------------------------------------

def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def _check_validity(cert: x509.Certificate, now: datetime.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateError("not-yet-valid", f"{describe(cert)!r} is valid from "
                               f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z")
    if now > cert.not_valid_after_utc:
        raise CertificateError("expired", f"{describe(cert)!r} expired "
                               f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z")


def _ext(cert: x509.Certificate, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as err:          # a duplicated or unparsable extension
        raise CertificateError("malformed", f"{describe(cert)!r}: {err}") from None


def _check_issuer(ca: x509.Certificate) -> None:
    bc = _ext(ca, x509.BasicConstraints)
    if bc is None or not bc.ca:
        raise CertificateError("not-a-ca", f"{describe(ca)!r} issues certificates but is "
                               "not a CA (basicConstraints)")
    ku = _ext(ca, x509.KeyUsage)
    if ku is not None and not ku.key_cert_sign:
        raise CertificateError("key-usage", f"{describe(ca)!r} lacks keyCertSign")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer` signed `cert`. False if the names differ; CertificateError if the
    names match but the signature does not verify."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        raise CertificateError("bad-signature", f"signature on {describe(cert)!r} does not "
                               f"verify with the key of {describe(issuer)!r}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise CertificateError("bad-signature", f"{describe(cert)!r}: {err}") from None
    return True


#: What the `cryptography` package raises on a certificate whose fields do not parse: it
#: parses lazily, so any attribute access on a peer's certificate may raise these.
_PARSE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension,
                 x509.UnsupportedGeneralNameType)


def _malformed_is_an_answer(check):
    """Turn the parser's errors into CertificateError('malformed'): a peer's bad bytes are
    an authentication failure, not a crash."""
    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        try:
            return check(*args, **kwargs)
        except _PARSE_ERRORS as err:
            raise CertificateError("malformed", f"certificate does not parse: {err}") \
                from None
    return wrapper


@_malformed_is_an_answer
def verify_chain(received: Sequence[Union[bytes, x509.Certificate]],
                 trusted: Iterable[x509.Certificate], now: float) -> x509.Certificate:
    """Authenticate the peer's certificate `received[0]` (the others are candidate
    intermediates, in any order) up to one of `trusted` at wall-clock time `now`.
    Returns the leaf; raises CertificateError."""
    if not received:
        raise CertificateError("malformed", "the peer sent no certificate")
    certs = [c if isinstance(c, x509.Certificate) else parse_certificate(c)
             for c in list(received)[:MAX_RECEIVED_CERTS]]
    anchors = list(trusted)
    at = _utc(now)
    leaf = certs[0]
    _check_validity(leaf, at)
    ku = _ext(leaf, x509.KeyUsage)
    if ku is not None and not (ku.digital_signature or ku.content_commitment):
        raise CertificateError("key-usage", f"{describe(leaf)!r} may not sign "
                               "(keyUsage lacks digitalSignature)")
    current, pool = leaf, certs[1:]
    for _ in range(MAX_CHAIN_DEPTH):
        for ca in anchors:
            if _signed_by(current, ca):
                if current is not leaf or ca.subject != leaf.subject:
                    _check_issuer(ca)
                _check_validity(ca, at)
                return leaf
        for ca in pool:
            if ca is not current and _signed_by(current, ca):
                _check_issuer(ca)
                _check_validity(ca, at)
                pool = [c for c in pool if c is not ca]
                current = ca
                break
        else:
            raise CertificateError("unknown-ca", f"no trusted CA issued {describe(current)!r}"
                                   f" (issuer {dn_text(current.issuer)!r})")
    raise CertificateError("too-long", f"chain above {describe(leaf)!r} is longer than "
                           f"{MAX_CHAIN_DEPTH}")


# --- identities bound by a certificate (RFC 7296 2.15, 3.5; RFC 4945 3.1) ------------------

@_malformed_is_an_answer
def check_identity(cert: x509.Certificate, id_type: int, data: bytes) -> None:
    """The peer's ID payload must name the certificate: ID_DER_ASN1_DN its subject, the
    other types one of its subjectAltName entries. Raises CertificateError."""
    if id_type == IDType.DER_ASN1_DN:
        try:
            name = decode_name(data)
        except ValueError:
            raise CertificateError("identity-mismatch", "ID_DER_ASN1_DN does not parse") \
                from None
        if name == cert.subject:
            return
        raise CertificateError("identity-mismatch", f"ID {dn_text(name)!r} is not the "
                               f"subject {describe(cert)!r}")
    san = _ext(cert, x509.SubjectAlternativeName)
    names = []
    if id_type == IDType.FQDN:
        names = [n.lower().rstrip(".") for n in
                 (san.get_values_for_type(x509.DNSName) if san else [])]
        wanted = data.decode("ascii", "replace").lower().rstrip(".")
    elif id_type == IDType.RFC822_ADDR:
        names = [n.lower() for n in (san.get_values_for_type(x509.RFC822Name) if san else [])]
        wanted = data.decode("ascii", "replace").lower()
    elif id_type in (IDType.IPV4_ADDR, IDType.IPV6_ADDR):
        names = [str(n) for n in (san.get_values_for_type(x509.IPAddress) if san else [])]
        wanted = str(ipaddress.ip_address(data)) if len(data) in (4, 16) else "?"
    else:
        raise CertificateError("identity-mismatch", f"ID type {id_type} cannot be bound to "
                               "a certificate")
    if wanted not in names:
        raise CertificateError("identity-mismatch", f"ID {wanted!r} is not among the "
                               f"subjectAltNames {names} of {describe(cert)!r}")
