"""The transforms the engine implements, by their Linux crypto names (as in `ip xfrm`).

Numeric IDs are shared with the Cython crypto layer (engine/_crypto.pyx) and the Numba
kernels; never renumber them. Sources: RFC 4303/4835 (ESP), RFC 3602 (AES-CBC),
RFC 3686 (AES-CTR), RFC 4106 (GCM), RFC 4543 (GMAC), RFC 7634 (ChaCha20-Poly1305),
RFC 2403/2404/4868 (HMAC), RFC 2405/2451 (DES/3DES).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Cipher(IntEnum):
    NULL = 0
    AES_CBC = 1
    DES3_CBC = 2
    DES_CBC = 3
    AES_CTR = 4          # RFC 3686: key || 4-byte nonce
    AES_GCM = 5          # RFC 4106: key || 4-byte salt (AEAD)
    AES_GMAC = 6         # RFC 4543: key || 4-byte salt (AEAD, integrity only)
    CHACHA20_POLY1305 = 7  # RFC 7634: 32-byte key || 4-byte salt (AEAD)


class Auth(IntEnum):
    NONE = 0
    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    HMAC_SHA256 = 3
    HMAC_SHA384 = 4
    HMAC_SHA512 = 5


@dataclass(frozen=True)
class CipherSpec:
    id: Cipher
    key_sizes: tuple[int, ...]   # bytes, including any salt/nonce suffix
    salt_len: int                # trailing bytes of the key material that are salt/nonce
    block: int                   # ESP payload alignment unit (RFC 4303: at least 4)
    iv_len: int                  # bytes of IV carried in each packet
    aead: bool
    icv_bits: tuple[int, ...] = ()   # allowed ICV lengths for AEAD


@dataclass(frozen=True)
class AuthSpec:
    id: Auth
    digest_len: int      # full HMAC output, bytes
    block_len: int       # hash block size, bytes (HMAC pad length)
    default_bits: int    # Linux's default truncation for `auth ALG KEY`
    rfc_bits: int        # the RFC's truncation (what `auth-trunc` normally says)


CIPHERS: dict[str, CipherSpec] = {
    "ecb(cipher_null)": CipherSpec(Cipher.NULL, (0,), 0, 4, 0, False),
    "cbc(aes)": CipherSpec(Cipher.AES_CBC, (16, 24, 32), 0, 16, 16, False),
    "cbc(des3_ede)": CipherSpec(Cipher.DES3_CBC, (24,), 0, 8, 8, False),
    "cbc(des)": CipherSpec(Cipher.DES_CBC, (8,), 0, 8, 8, False),
    "rfc3686(ctr(aes))": CipherSpec(Cipher.AES_CTR, (20, 28, 36), 4, 4, 8, False),
    "rfc4106(gcm(aes))": CipherSpec(Cipher.AES_GCM, (20, 28, 36), 4, 4, 8, True, (64, 96, 128)),
    "rfc4543(gcm(aes))": CipherSpec(Cipher.AES_GMAC, (20, 28, 36), 4, 4, 8, True, (128,)),
    "rfc7539esp(chacha20,poly1305)": CipherSpec(
        Cipher.CHACHA20_POLY1305, (36,), 4, 4, 8, True, (128,)),
}

AUTHS: dict[str, AuthSpec] = {
    "digest_null": AuthSpec(Auth.NONE, 0, 0, 0, 0),
    "hmac(md5)": AuthSpec(Auth.HMAC_MD5, 16, 64, 96, 96),
    "hmac(sha1)": AuthSpec(Auth.HMAC_SHA1, 20, 64, 96, 96),
    # Linux's `auth hmac(sha256)` default is 96 bits (pre-RFC 4868 behaviour); RFC 4868 says 128.
    "hmac(sha256)": AuthSpec(Auth.HMAC_SHA256, 32, 64, 96, 128),
    "hmac(sha384)": AuthSpec(Auth.HMAC_SHA384, 48, 128, 192, 192),
    "hmac(sha512)": AuthSpec(Auth.HMAC_SHA512, 64, 128, 256, 256),
}

#: Largest ICV any transform produces (bytes): sizes tailroom and scratch buffers.
MAX_ICV = 32
#: Largest IV carried in a packet (bytes).
MAX_IV = 16
