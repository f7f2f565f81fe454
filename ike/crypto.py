"""IKEv2 cryptography: PRF and prf+, key derivation, SK payload protection, PSK AUTH.

References, by function:
- prf, prf_plus ........ RFC 7296 2.13 (HMAC PRFs: RFC 2104, RFC 4868)
- derive_ike_keys ...... RFC 7296 2.14 (SKEYSEED and SK_d, SK_ai, SK_ar, SK_ei, SK_er, SK_pi, SK_pr)
- derive_child_keys .... RFC 7296 2.17 (KEYMAT; the order of the four keys is fixed there)
- derive_rekeyed_ike_keys  RFC 7296 2.18 (SKEYSEED from the old SK_d when the IKE SA is rekeyed)
- CbcHmacProtector ..... RFC 7296 3.14 (SK payload with a block cipher and an HMAC ICV)
- AeadProtector ........ RFC 5282 (AES-GCM in the SK payload), RFC 7634 (ChaCha20-Poly1305)
- psk_auth ............. RFC 7296 2.15 (AUTH with a shared secret)
- nat_detection_hash ... RFC 7296 2.23

Keys are bytes held in fields with repr disabled; nothing here logs or prints them.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .constants import Encr, Integ, Prf
from .errors import IntegrityError, ParseError

try:   # cryptography >= 43 keeps 3DES in the "decrepit" namespace
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    TripleDES = algorithms.TripleDES

# --- PRF (2.13) ----------------------------------------------------------------------------

#: PRF transform -> hashlib name. The HMAC PRFs take keys of any length; their preferred
#: key length (the size of SK_d, SK_pi, SK_pr) is the output length (2.13, 2.14).
PRF_HASH = {
    Prf.HMAC_MD5: "md5",
    Prf.HMAC_SHA1: "sha1",
    Prf.HMAC_SHA2_256: "sha256",
    Prf.HMAC_SHA2_384: "sha384",
    Prf.HMAC_SHA2_512: "sha512",
}


def prf_len(prf_id: int) -> int:
    return hashlib.new(PRF_HASH[prf_id]).digest_size


def prf(prf_id: int, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, PRF_HASH[prf_id]).digest()


def prf_plus(prf_id: int, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+ (K,S) = T1 | T2 | ..., T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n)."""
    out, t, n = b"", b"", 1
    while len(out) < length:
        if n > 255:
            raise ValueError("prf+ cannot produce that much key material (2.13)")
        t = prf(prf_id, key, t + seed + bytes([n]))
        out += t
        n += 1
    return out[:length]


# --- integrity and encryption algorithms of the SK payload --------------------------------

@dataclass(frozen=True)
class IntegSpec:
    hash: str
    key_len: int      # bytes of SK_a (the HMAC's output length, RFC 4868 2.1.1)
    icv_len: int      # truncated output carried in the message


INTEG = {
    Integ.HMAC_MD5_96: IntegSpec("md5", 16, 12),
    Integ.HMAC_SHA1_96: IntegSpec("sha1", 20, 12),
    Integ.HMAC_SHA2_256_128: IntegSpec("sha256", 32, 16),
    Integ.HMAC_SHA2_384_192: IntegSpec("sha384", 48, 24),
    Integ.HMAC_SHA2_512_256: IntegSpec("sha512", 64, 32),
}


@dataclass(frozen=True)
class EncrSpec:
    """An SK cipher: `key_len` excludes the AEAD salt; SK_e is key || salt (RFC 5282 7.1)."""
    encr: int
    key_len: int
    salt_len: int = 0
    block: int = 16       # padding unit (1 for the AEADs: RFC 5282 3)
    iv_len: int = 16
    icv_len: int = 0      # AEAD tag length; 0 for ciphers paired with an INTEG transform

    @property
    def aead(self) -> bool:
        return self.icv_len > 0

    @property
    def keymat_len(self) -> int:
        return self.key_len + self.salt_len


_GCM_ICV = {Encr.AES_GCM_8: 8, Encr.AES_GCM_12: 12, Encr.AES_GCM_16: 16}


def ike_encr_spec(encr: int, key_bits: int | None) -> EncrSpec:
    """The SK cipher for an ENCR transform; ValueError for one IKE cannot use here."""
    if encr == Encr.AES_CBC and key_bits in (128, 192, 256):
        return EncrSpec(encr, key_bits // 8)
    if encr in _GCM_ICV and key_bits in (128, 192, 256):
        return EncrSpec(encr, key_bits // 8, 4, 1, 8, _GCM_ICV[encr])
    if encr == Encr.CHACHA20_POLY1305 and key_bits in (None, 256):
        return EncrSpec(encr, 32, 4, 1, 8, 16)
    if encr == Encr.DES3 and key_bits in (None, 192):
        return EncrSpec(encr, 24, 0, 8, 8)
    if encr == Encr.DES and key_bits in (None, 64):
        # ENCR_DES (RFC 2405): 8-byte key (parity bits included), 8-byte IV and blocks.
        # Junos still lists des-cbc for IKE (CONFIG.md); it is weak, offer it only on request.
        return EncrSpec(encr, 8, 0, 8, 8)
    raise ValueError(f"IKE encryption {encr} with {key_bits}-bit key not supported")


# --- key derivation (2.14, 2.17) -----------------------------------------------------------

@dataclass(frozen=True)
class IKEKeys:
    sk_d: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False)
    sk_ar: bytes = field(repr=False)
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_pi: bytes = field(repr=False)
    sk_pr: bytes = field(repr=False)


def skeyseed(prf_id: int, ni: bytes, nr: bytes, g_ir: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) (2.14; HMAC PRFs take the whole nonces as the key)."""
    return prf(prf_id, ni + nr, g_ir)


def derive_ike_keys(prf_id: int, encr: EncrSpec, integ: int | None, ni: bytes, nr: bytes,
                    g_ir: bytes, spi_i: bytes, spi_r: bytes) -> IKEKeys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
    = prf+ (SKEYSEED, Ni | Nr | SPIi | SPIr)."""
    p = prf_len(prf_id)
    a = INTEG[integ].key_len if integ else 0
    e = encr.keymat_len
    km = prf_plus(prf_id, skeyseed(prf_id, ni, nr, g_ir), ni + nr + spi_i + spi_r,
                  3 * p + 2 * a + 2 * e)
    cut = [p, a, a, e, e, p, p]
    parts, pos = [], 0
    for n in cut:
        parts.append(km[pos:pos + n])
        pos += n
    return IKEKeys(*parts)


def rekey_skeyseed(old_prf: int, old_sk_d: bytes, g_ir: bytes, ni: bytes, nr: bytes) -> bytes:
    """SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) (2.18): the old IKE SA's PRF, since
    the rekeying exchange belongs to it."""
    return prf(old_prf, old_sk_d, g_ir + ni + nr)


def derive_rekeyed_ike_keys(old_prf: int, old_sk_d: bytes, prf_id: int, encr: EncrSpec,
                            integ: int | None, ni: bytes, nr: bytes, g_ir: bytes,
                            spi_i: bytes, spi_r: bytes) -> IKEKeys:
    """The new IKE SA's keys after a CREATE_CHILD_SA rekey (2.18): the same prf+ split as
    2.14 with the new PRF, seeded by rekey_skeyseed(); Ni/Nr and SPIi/SPIr are those of the
    rekeying exchange (its initiator's first)."""
    return _split_ike_keys(prf_id, encr, integ,
                           rekey_skeyseed(old_prf, old_sk_d, g_ir, ni, nr),
                           ni + nr + spi_i + spi_r)


def _split_ike_keys(prf_id: int, encr: EncrSpec, integ: int | None, seed_key: bytes,
                    seed: bytes) -> IKEKeys:
    p = prf_len(prf_id)
    a = INTEG[integ].key_len if integ else 0
    e = encr.keymat_len
    km = prf_plus(prf_id, seed_key, seed, 3 * p + 2 * a + 2 * e)
    parts, pos = [], 0
    for n in (p, a, a, e, e, p, p):
        parts.append(km[pos:pos + n])
        pos += n
    return IKEKeys(*parts)


@dataclass(frozen=True)
class ChildKeys:
    """Child SA keys: `*_i` protect initiator -> responder traffic, `*_r` the reverse."""
    encr_i: bytes = field(repr=False)
    integ_i: bytes = field(repr=False)
    encr_r: bytes = field(repr=False)
    integ_r: bytes = field(repr=False)


def derive_child_keys(prf_id: int, sk_d: bytes, ni: bytes, nr: bytes, encr_len: int,
                      integ_len: int, g_ir_new: bytes = b"") -> ChildKeys:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (2.17). Taken in this order: encryption
    key then integrity key for initiator -> responder, then the same for the other
    direction. `encr_len` includes any salt/nonce (RFC 4106 8.1, RFC 3686, RFC 7634)."""
    km = prf_plus(prf_id, sk_d, g_ir_new + ni + nr, 2 * (encr_len + integ_len))
    e, a = encr_len, integ_len
    return ChildKeys(km[:e], km[e:e + a], km[e + a:2 * e + a], km[2 * e + a:])


# --- SK payload protection (3.14, RFC 5282) --------------------------------------------------

def _padded(plain: bytes, block: int) -> bytes:
    """Payloads | Padding | Pad Length, a whole number of cipher blocks (3.14)."""
    pad = (block - (len(plain) + 1) % block) % block
    return plain + bytes(pad) + bytes([pad])


def _unpadded(data: bytes) -> bytes:
    if not data or data[-1] + 1 > len(data):
        raise ParseError("SK payload pad length exceeds the decrypted data")
    return data[:len(data) - data[-1] - 1]


class CbcHmacProtector:
    """AES-CBC, 3DES-CBC or DES-CBC with an HMAC ICV over the whole message up to the
    ICV (3.14). Single DES runs as 3DES EDE with K1 = K2 = K3, which is DES itself
    (`cryptography` has no separate DES; OpenSSL 3 keeps it in the legacy provider)."""

    def __init__(self, encr: EncrSpec, enc_key: bytes, integ: int, integ_key: bytes):
        self._spec = encr
        if encr.encr == Encr.DES:
            enc_key = enc_key * 3
        self._algo = (lambda: TripleDES(enc_key)) if encr.encr in (Encr.DES3, Encr.DES) else \
            (lambda: algorithms.AES(enc_key))
        self._integ = INTEG[integ]
        self._integ_key = integ_key

    def sealed_len(self, plain_len: int) -> int:
        s = self._spec
        return s.iv_len + (plain_len // s.block + 1) * s.block + self._integ.icv_len

    def _icv(self, data: bytes) -> bytes:
        return hmac.new(self._integ_key, data, self._integ.hash).digest()[:self._integ.icv_len]

    def seal(self, prefix: bytes, plaintext: bytes) -> bytes:
        iv = os.urandom(self._spec.iv_len)      # unpredictable, as 3.14 requires for CBC
        enc = Cipher(self._algo(), modes.CBC(iv)).encryptor()
        body = iv + enc.update(_padded(plaintext, self._spec.block)) + enc.finalize()
        return body + self._icv(prefix + body)

    def open(self, prefix: bytes, body: bytes) -> bytes:
        s, icv = self._spec, self._integ.icv_len
        ct_len = len(body) - s.iv_len - icv
        if ct_len < s.block or ct_len % s.block:
            raise IntegrityError("SK payload length is not IV + whole blocks + ICV")
        if not hmac.compare_digest(self._icv(prefix + body[:-icv]), body[-icv:]):
            raise IntegrityError("SK payload ICV mismatch")
        dec = Cipher(self._algo(), modes.CBC(body[:s.iv_len])).decryptor()
        return _unpadded(dec.update(body[s.iv_len:-icv]) + dec.finalize())


class AeadProtector:
    """AES-GCM (RFC 5282) or ChaCha20-Poly1305 (RFC 7634) in the SK payload. The nonce is
    salt (last 4 bytes of SK_e) | 8-byte IV; the associated data is the message from the
    IKE header through the SK payload header (RFC 5282 5.1). The IV is a counter: unique
    under one key, which is all an AEAD asks (RFC 5282 3.1)."""

    def __init__(self, encr: EncrSpec, key_and_salt: bytes):
        self._spec = encr
        self._key = key_and_salt[:encr.key_len]
        self._salt = key_and_salt[encr.key_len:]
        self._counter = 0

    def sealed_len(self, plain_len: int) -> int:
        return self._spec.iv_len + plain_len + 1 + self._spec.icv_len

    def _seal(self, nonce: bytes, aad: bytes, data: bytes) -> bytes:
        if self._spec.encr == Encr.CHACHA20_POLY1305:
            return ChaCha20Poly1305(self._key).encrypt(nonce, data, aad)
        enc = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        ct = enc.update(data) + enc.finalize()
        return ct + enc.tag[:self._spec.icv_len]

    def seal(self, prefix: bytes, plaintext: bytes) -> bytes:
        self._counter += 1
        iv = struct.pack("!Q", self._counter)
        return iv + self._seal(self._salt + iv, prefix, _padded(plaintext, 1))

    def open(self, prefix: bytes, body: bytes) -> bytes:
        s = self._spec
        if len(body) < s.iv_len + 1 + s.icv_len:
            raise IntegrityError("SK payload shorter than IV + pad length + ICV")
        nonce = self._salt + body[:s.iv_len]
        ct, tag = body[s.iv_len:-s.icv_len], body[-s.icv_len:]
        try:
            if s.encr == Encr.CHACHA20_POLY1305:
                plain = ChaCha20Poly1305(self._key).decrypt(nonce, ct + tag, prefix)
            else:
                dec = Cipher(algorithms.AES(self._key),
                             modes.GCM(nonce, tag, min_tag_length=s.icv_len)).decryptor()
                dec.authenticate_additional_data(prefix)
                plain = dec.update(ct) + dec.finalize()
        except InvalidTag:
            raise IntegrityError("SK payload authentication tag mismatch") from None
        return _unpadded(plain)


def make_protector(encr: EncrSpec, integ: int | None, enc_key: bytes, integ_key: bytes):
    if encr.aead:
        return AeadProtector(encr, enc_key)
    if integ is None:
        raise ValueError("a non-AEAD SK cipher needs an integrity algorithm")
    return CbcHmacProtector(encr, enc_key, integ, integ_key)


# --- AUTH (2.15) and NAT detection (2.23) --------------------------------------------------

KEY_PAD = b"Key Pad for IKEv2"    # 17 ASCII characters, no terminating NUL (2.15)


def signed_octets(prf_id: int, real_message: bytes, peer_nonce: bytes, sk_p: bytes,
                  id_body: bytes) -> bytes:
    """InitiatorSignedOctets = RealMessage1 | NonceRData | prf(SK_pi, RestOfInitIDPayload)
    (and the responder's mirror image with RealMessage2, NonceIData, SK_pr)."""
    return real_message + peer_nonce + prf(prf_id, sk_p, id_body)


def psk_auth(prf_id: int, psk: bytes, octets: bytes) -> bytes:
    """AUTH = prf( prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)."""
    return prf(prf_id, prf(prf_id, psk, KEY_PAD), octets)


def nat_detection_hash(spi_i: bytes, spi_r: bytes, ip_packed: bytes, port: int) -> bytes:
    """SHA-1(SPIi | SPIr | IP | Port) for NAT_DETECTION_*_IP notifies (2.23)."""
    return hashlib.sha1(spi_i + spi_r + ip_packed + struct.pack("!H", port)).digest()
