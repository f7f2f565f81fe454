"""Signature AUTH payloads (RFC 7296 2.15, 3.8; RFC 4754; RFC 7427).

    sign(private_key, octets, peer_hashes)      -> (auth method, AUTH data)
    verify(method, data, public_key, octets)    -> None, or AuthError(reason)

The signed octets are those of PSK authentication (ike/crypto.py signed_octets).
- Method 1 (RSA): RSASSA-PKCS1-v1_5 with SHA-1 (RFC 7296 3.8; what strongSwan and others
  use for this method).
- Methods 9/10/11 (RFC 4754): ECDSA on P-256/SHA-256, P-384/SHA-384, P-521/SHA-512; the
  signature is r | s, each the curve's size, not DER.
- Method 14 (RFC 7427 3): AUTH data = length byte | AlgorithmIdentifier (DER) | signature,
  RSA PKCS#1 v1.5 or ECDSA (DER Ecdsa-Sig-Value). Used when the peer announced
  SIGNATURE_HASH_ALGORITHMS in IKE_SA_INIT (RFC 7427 4) and shares a hash with us.
The AlgorithmIdentifier encodings are the fixed byte strings of RFC 7427 Appendix A.
"""
from __future__ import annotations

from typing import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)

from .certs import CertificateError, key_kind
from .constants import AuthMethod


class HashAlg:
    """IANA "IKEv2 Hash Algorithms" (RFC 7427 4) carried in SIGNATURE_HASH_ALGORITHMS."""
    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4


#: What we announce: the SHA-2 hashes we sign and verify with.
OUR_HASHES = (HashAlg.SHA2_256, HashAlg.SHA2_384, HashAlg.SHA2_512)

_HASH = {HashAlg.SHA1: hashes.SHA1, HashAlg.SHA2_256: hashes.SHA256,
         HashAlg.SHA2_384: hashes.SHA384, HashAlg.SHA2_512: hashes.SHA512}

# RFC 7427 Appendix A.1 (RSA PKCS#1 v1.5) and A.3 (ECDSA): AlgorithmIdentifier DER.
_RSA_OID = bytes.fromhex("300d06092a864886f70d0101")     # ... + last OID byte + 0500
_ALG_IDS = {
    _RSA_OID + b"\x05\x05\x00": ("rsa", HashAlg.SHA1),
    _RSA_OID + b"\x0b\x05\x00": ("rsa", HashAlg.SHA2_256),
    _RSA_OID + b"\x0c\x05\x00": ("rsa", HashAlg.SHA2_384),
    _RSA_OID + b"\x0d\x05\x00": ("rsa", HashAlg.SHA2_512),
    bytes.fromhex("300906072a8648ce3d0401"): ("ecdsa", HashAlg.SHA1),
    bytes.fromhex("300a06082a8648ce3d040302"): ("ecdsa", HashAlg.SHA2_256),
    bytes.fromhex("300a06082a8648ce3d040303"): ("ecdsa", HashAlg.SHA2_384),
    bytes.fromhex("300a06082a8648ce3d040304"): ("ecdsa", HashAlg.SHA2_512),
}
_ALG_ID_OF = {v: k for k, v in _ALG_IDS.items()}

# RFC 4754: method -> (key kind, hash, bytes of r and of s)
_ECDSA_METHODS = {AuthMethod.ECDSA_256: ("ecdsa-256", HashAlg.SHA2_256, 32),
                  AuthMethod.ECDSA_384: ("ecdsa-384", HashAlg.SHA2_384, 48),
                  AuthMethod.ECDSA_521: ("ecdsa-521", HashAlg.SHA2_512, 66)}
_CLASSIC = {"rsa": AuthMethod.RSA_SIG, "ecdsa-256": AuthMethod.ECDSA_256,
            "ecdsa-384": AuthMethod.ECDSA_384, "ecdsa-521": AuthMethod.ECDSA_521}
# the hash each key kind prefers under RFC 7427 (the curve's own for ECDSA)
_PREFERRED = {"rsa": HashAlg.SHA2_256, "ecdsa-256": HashAlg.SHA2_256,
              "ecdsa-384": HashAlg.SHA2_384, "ecdsa-521": HashAlg.SHA2_512}
SIGNATURE_METHODS = (AuthMethod.RSA_SIG, AuthMethod.ECDSA_256, AuthMethod.ECDSA_384,
                     AuthMethod.ECDSA_521, AuthMethod.DIGITAL_SIGNATURE)


class AuthError(Exception):
    """The peer's AUTH does not prove it holds the certificate's key. `reason` is
    bad-signature, key-type or unsupported-method."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode_hashes(algs: Sequence[int] = OUR_HASHES) -> bytes:
    return b"".join(a.to_bytes(2, "big") for a in algs)


def decode_hashes(data: bytes) -> tuple[int, ...]:
    """SIGNATURE_HASH_ALGORITHMS notify data: 2-byte IDs; a trailing odd byte is ignored."""
    return tuple(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data) - 1, 2))


def _raw_sign(key, kind: str, alg: int, octets: bytes) -> bytes:
    h = _HASH[alg]()
    if kind == "rsa":
        return key.sign(octets, padding.PKCS1v15(), h)
    return key.sign(octets, ec.ECDSA(h))       # DER Ecdsa-Sig-Value


def sign(private_key, octets: bytes, peer_hashes: Sequence[int] = ()) -> tuple[int, bytes]:
    """(AUTH method, AUTH data) signing `octets`. RFC 7427 when the peer announced a hash
    we can use, else the key's classic method (1, 9, 10 or 11)."""
    kind = key_kind(private_key)
    usable = [a for a in (_PREFERRED[kind],) + OUR_HASHES if a in peer_hashes]
    if usable:
        family = "rsa" if kind == "rsa" else "ecdsa"
        alg_id = _ALG_ID_OF[(family, usable[0])]
        sig = _raw_sign(private_key, kind, usable[0], octets)
        return AuthMethod.DIGITAL_SIGNATURE, bytes([len(alg_id)]) + alg_id + sig
    method = _CLASSIC[kind]
    if kind == "rsa":
        return method, private_key.sign(octets, padding.PKCS1v15(), hashes.SHA1())
    _, alg, size = _ECDSA_METHODS[method]
    r, s = decode_dss_signature(_raw_sign(private_key, kind, alg, octets))
    return method, r.to_bytes(size, "big") + s.to_bytes(size, "big")


def verify(method: int, data: bytes, public_key, octets: bytes) -> None:
    """Check the peer's AUTH (method, data) over `octets` with the key of its
    certificate. Raises AuthError."""
    try:
        kind = key_kind(public_key)
    except CertificateError as err:
        raise AuthError("key-type", err.detail) from None
    if method == AuthMethod.RSA_SIG:
        if kind != "rsa":
            raise AuthError("key-type", f"AUTH method RSA but the certificate has a {kind} "
                            "key")
        _check(public_key, kind, HashAlg.SHA1, data, octets)
    elif method in _ECDSA_METHODS:
        want, alg, size = _ECDSA_METHODS[method]
        if kind != want:
            raise AuthError("key-type", f"AUTH method {AuthMethod(method).name} but the "
                            f"certificate has a {kind} key")
        if len(data) != 2 * size:
            raise AuthError("bad-signature", f"ECDSA signature of {len(data)} bytes, "
                            f"expected {2 * size}")
        der = encode_dss_signature(int.from_bytes(data[:size], "big"),
                                   int.from_bytes(data[size:], "big"))
        _check(public_key, kind, alg, der, octets)
    elif method == AuthMethod.DIGITAL_SIGNATURE:
        if not data or 1 + data[0] > len(data):
            raise AuthError("bad-signature", "RFC 7427 AUTH data is truncated")
        alg_id, sig = data[1:1 + data[0]], data[1 + data[0]:]
        if alg_id not in _ALG_IDS:
            raise AuthError("unsupported-method", f"signature algorithm {alg_id.hex()} is "
                            "not supported (RFC 7427 Appendix A PKCS#1 v1.5 / ECDSA only)")
        family, alg = _ALG_IDS[alg_id]
        if (family == "rsa") != (kind == "rsa"):
            raise AuthError("key-type", f"{family} signature but the certificate has a "
                            f"{kind} key")
        _check(public_key, kind, alg, sig, octets)
    else:
        raise AuthError("unsupported-method", f"AUTH method {method} is not a signature "
                        "method we verify")


def _check(public_key, kind: str, alg: int, sig: bytes, octets: bytes) -> None:
    try:
        if kind == "rsa":
            public_key.verify(sig, octets, padding.PKCS1v15(), _HASH[alg]())
        else:
            public_key.verify(sig, octets, ec.ECDSA(_HASH[alg]()))
    except (InvalidSignature, ValueError):
        raise AuthError("bad-signature", "the AUTH signature does not verify with the "
                        "certificate's key") from None
