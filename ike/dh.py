"""Diffie-Hellman for IKEv2 (RFC 7296 2.14, 3.4): MODP, ECP (RFC 5903) and Curve25519 (RFC 8031).

    dh = new_dh(DHGroup.MODP_2048)
    ke_data = dh.public_bytes()                 # the KE payload's key exchange data
    g_ir = dh.shared_secret(peer_ke_data)       # ProtocolError(INVALID_SYNTAX) if invalid

Encodings on the wire:
- MODP: g^x mod p, big endian, zero-padded to the length of p (3.4); so is g^ir (2.14).
  Received values are checked 1 < y < p-1 (RFC 6989 2.1).
- ECP: x || y, each zero-padded to the field size, no point-format octet (RFC 5903 7);
  the shared secret is the x coordinate of the common point. cryptography checks that the
  peer's point is on the curve.
- Curve25519: the 32-byte u coordinate (RFC 8031 2); an all-zero shared secret (a
  low-order peer point) is refused (RFC 8031 2.3).
"""
from __future__ import annotations

import secrets
from typing import Optional

from cryptography.hazmat.primitives.asymmetric import ec, x25519

from .constants import DHGroup, Notify
from .errors import ProtocolError

#: MODP primes; generator 2 for all. Groups 1 and 2: RFC 2409 6.1/6.2; 5, 14, 15, 16:
#: RFC 3526 2-5. Each is 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) pi) + k);
#: tests/test_ike_crypto.py recomputes them from that formula.
MODP_PRIMES: dict[int, int] = {
    1: int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A63A3620FFFFFFFFFFFFFFFF", 16),
    2: int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF", 16),
    5: int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF", 16),
    14: int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF", 16),
    15: int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
        "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
        "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
        "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF", 16),
    16: int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
        "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
        "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
        "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7"
        "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8"
        "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2"
        "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
        "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF", 16),
}
MODP_GENERATOR = 2

#: Private exponent sizes (bits): at least twice the group's security strength
#: (NIST SP 800-57; strongSwan and others use similar values). Tuning, not spec.
_MODP_EXPONENT_BITS = {1: 256, 2: 256, 5: 256, 14: 256, 15: 384, 16: 512}

_ECP_CURVES = {
    DHGroup.ECP_256: (ec.SECP256R1, 32),
    DHGroup.ECP_384: (ec.SECP384R1, 48),
    DHGroup.ECP_521: (ec.SECP521R1, 66),
}

SUPPORTED_GROUPS = tuple(sorted(set(MODP_PRIMES) | set(_ECP_CURVES) | {DHGroup.CURVE25519}))


def ke_length(group: int) -> int:
    """Length of the key exchange data for `group` (bytes)."""
    if group in MODP_PRIMES:
        return (MODP_PRIMES[group].bit_length() + 7) // 8
    if group in _ECP_CURVES:
        return 2 * _ECP_CURVES[group][1]
    if group == DHGroup.CURVE25519:
        return 32
    raise ValueError(f"DH group {group} not supported")


def _invalid(what: str) -> ProtocolError:
    return ProtocolError(Notify.INVALID_SYNTAX, f"invalid key exchange data: {what}")


class ModpDH:
    def __init__(self, group: int, private: Optional[int] = None):
        self.group = group
        self._p = MODP_PRIMES[group]
        self._len = ke_length(group)
        self._x = private if private is not None else \
            secrets.randbits(_MODP_EXPONENT_BITS[group]) | 1 << (_MODP_EXPONENT_BITS[group] - 1)

    def public_bytes(self) -> bytes:
        return pow(MODP_GENERATOR, self._x, self._p).to_bytes(self._len, "big")

    def shared_secret(self, peer: bytes) -> bytes:
        if len(peer) != self._len:
            raise _invalid(f"{len(peer)} bytes for MODP group {self.group}")
        y = int.from_bytes(peer, "big")
        if not 1 < y < self._p - 1:
            raise _invalid("MODP value out of range")
        return pow(y, self._x, self._p).to_bytes(self._len, "big")


class EcpDH:
    def __init__(self, group: int, private: Optional[int] = None):
        self.group = group
        curve_cls, self._size = _ECP_CURVES[group]
        self._curve = curve_cls()
        self._key = ec.derive_private_key(private, self._curve) if private is not None \
            else ec.generate_private_key(self._curve)

    def public_bytes(self) -> bytes:
        nums = self._key.public_key().public_numbers()
        return nums.x.to_bytes(self._size, "big") + nums.y.to_bytes(self._size, "big")

    def shared_secret(self, peer: bytes) -> bytes:
        if len(peer) != 2 * self._size:
            raise _invalid(f"{len(peer)} bytes for ECP group {self.group}")
        try:
            pub = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, b"\x04" + peer)
            return self._key.exchange(ec.ECDH(), pub)
        except ValueError:
            raise _invalid("point not on the curve") from None


class Curve25519DH:
    group = DHGroup.CURVE25519

    def __init__(self, private: Optional[bytes] = None):
        self._key = x25519.X25519PrivateKey.from_private_bytes(private) \
            if private is not None else x25519.X25519PrivateKey.generate()

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    def shared_secret(self, peer: bytes) -> bytes:
        if len(peer) != 32:
            raise _invalid(f"{len(peer)} bytes for Curve25519")
        try:
            secret = self._key.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
        except ValueError:       # cryptography refuses the all-zero result itself
            raise _invalid("low-order Curve25519 point") from None
        if secret == bytes(32):
            raise _invalid("low-order Curve25519 point")
        return secret


def new_dh(group: int, private=None):
    """A fresh key pair for `group` (`private` fixes it, for known-answer tests)."""
    if group in MODP_PRIMES:
        return ModpDH(group, private)
    if group in _ECP_CURVES:
        return EcpDH(group, private)
    if group == DHGroup.CURVE25519:
        return Curve25519DH(private)
    raise ValueError(f"DH group {group} not supported")
