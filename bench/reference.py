"""Baselines for `spu bench`: what a Python user would run instead of the engine.

- `PythonESP`: a straightforward per-packet ESP tunnel (RFC 4303) on the `cryptography`
  package. Key objects (AESGCM, ChaCha20Poly1305, the AES/3DES key, the keyed HMAC) are
  made once per SA; everything per packet is Python: ESP header, padding (RFC 4303 2.4),
  trailer, IV, the cipher call, the truncated HMAC, the outer IPv4 header and its checksum;
  on receive the SPI lookup, a replay window, the ICV check, the padding check and
  decapsulation. It is a baseline, not a second engine: IPv4 tunnel mode without ESN or
  UDP encapsulation (what the bench's SAs use), and it is checked against the engine
  (`check_python`) before it is timed.
- `ScapyESP`: scapy's SecurityAssociation (scapy is a test dependency, optional here),
  with IP(bytes) parsing and bytes() building included, since the bench hands both
  sides the same byte buffers.

The timing itself is the runner's (bench/runner.py).
"""
from __future__ import annotations

import hmac as _hmac
import os
import struct
from typing import Callable, Optional

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.hmac import HMAC

try:    # cryptography >= 43 keeps TripleDES in the "decrepit" namespace
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:     # pragma: no cover
    TripleDES = algorithms.TripleDES   # type: ignore[attr-defined,misc]

from engine.algorithms import CIPHERS
from engine.sa import MODE_TUNNEL, SAConfig

_HASHES = {"hmac(md5)": hashes.MD5, "hmac(sha1)": hashes.SHA1,
           "hmac(sha256)": hashes.SHA256, "hmac(sha384)": hashes.SHA384,
           "hmac(sha512)": hashes.SHA512}
_PAD = bytes(range(1, 256))      # RFC 4303 2.4 default padding 1, 2, 3, ...
P_IPV4, P_ESP = 4, 50


def _csum(hdr: bytes) -> int:
    s = sum(struct.unpack("!10H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


class PythonESP:
    """One SA pair's worth of per-packet ESP in Python (tunnel mode, IPv4, no ESN)."""

    def __init__(self, cfg: SAConfig):
        if cfg.mode != MODE_TUNNEL or cfg.dst.version != 4 or cfg.esn \
                or cfg.encap_dport is not None:
            raise ValueError("PythonESP covers IPv4 tunnel mode without ESN or UDP encap")
        self.cfg = cfg
        name = cfg.aead or cfg.enc
        spec = CIPHERS[name]
        self.name = name
        self.block = spec.block
        self.iv_len = spec.iv_len
        self.icv_len = cfg.icv_bits // 8 if (cfg.aead or cfg.auth) else 0
        raw = cfg.aead_key if cfg.aead else cfg.enc_key
        key, self.salt = (raw[:-spec.salt_len], raw[-spec.salt_len:]) if spec.salt_len \
            else (raw, b"")
        self.spi = cfg.spi
        self.hdr_src, self.hdr_dst = cfg.src.packed, cfg.dst.packed
        self.window = cfg.replay_window
        # key objects, once
        self.aead = None
        self.block_alg = None
        if name == "rfc4106(gcm(aes))" and self.icv_len == 16:
            self.aead = AESGCM(key)
        elif name == "rfc7539esp(chacha20,poly1305)":
            self.aead = ChaCha20Poly1305(key)
        elif name in ("rfc4106(gcm(aes))", "rfc4543(gcm(aes))", "cbc(aes)",
                      "rfc3686(ctr(aes))"):
            self.block_alg = algorithms.AES(key)
        elif name == "cbc(des3_ede)":
            self.block_alg = TripleDES(key)
        elif name == "cbc(des)":
            self.block_alg = TripleDES(key * 3)     # EDE with K1 = K2 = K3 is single DES
        self.mac = HMAC(cfg.auth_key, _HASHES[cfg.auth]()) if cfg.auth else None
        self.reset()

    def reset(self) -> None:
        """Fresh sequence counter and replay window (between timed repeats)."""
        self.seq_out = 0
        self.top = 0
        self.bitmap = 0

    # -- helpers ---------------------------------------------------------------------------
    def _iv(self, seq: int) -> bytes:
        if not self.iv_len:
            return b""                               # ecb(cipher_null)
        if self.name in ("cbc(aes)", "cbc(des3_ede)", "cbc(des)"):
            return os.urandom(self.iv_len)           # RFC 4303 3.2: unpredictable
        return seq.to_bytes(8, "big")                # counter modes, AEADs: unique

    def _mode(self, iv: bytes):
        if self.name == "rfc3686(ctr(aes))":
            return modes.CTR(self.salt + iv + b"\x00\x00\x00\x01")     # RFC 3686 4
        return modes.CBC(iv)

    def _icv(self, data: bytes) -> bytes:
        h = self.mac.copy()
        h.update(data)
        return h.finalize()[:self.icv_len]

    # -- send ------------------------------------------------------------------------------
    def encrypt(self, pkt: bytes) -> bytes:
        """Inner IPv4/IPv6 packet -> outer IPv4 / ESP packet."""
        self.seq_out += 1
        seq = self.seq_out
        esp_hdr = struct.pack("!II", self.spi, seq)
        padlen = -(len(pkt) + 2) % self.block
        nh = P_IPV4 if pkt[0] >> 4 == 4 else 41
        pt = pkt + _PAD[:padlen] + bytes((padlen, nh))
        iv = self._iv(seq)
        name = self.name
        if self.aead is not None:
            body = iv + self.aead.encrypt(self.salt + iv, pt, esp_hdr)
        elif name == "rfc4106(gcm(aes))":                 # truncated ICV (RFC 4106 6)
            enc = Cipher(self.block_alg, modes.GCM(self.salt + iv)).encryptor()
            enc.authenticate_additional_data(esp_hdr)
            ct = enc.update(pt) + enc.finalize()
            body = iv + ct + enc.tag[:self.icv_len]
        elif name == "rfc4543(gcm(aes))":                 # RFC 4543 3: all AAD
            enc = Cipher(self.block_alg, modes.GCM(self.salt + iv)).encryptor()
            enc.authenticate_additional_data(esp_hdr + iv + pt)
            enc.finalize()
            body = iv + pt + enc.tag[:self.icv_len]
        else:
            if self.block_alg is None:
                ct = pt                                   # ecb(cipher_null)
            else:
                enc = Cipher(self.block_alg, self._mode(iv)).encryptor()
                ct = enc.update(pt) + enc.finalize()
            body = iv + ct
            if self.mac is not None:
                body += self._icv(esp_hdr + body)
        total = 20 + 8 + len(body)
        tos = pkt[1] if nh == P_IPV4 else ((pkt[0] & 0x0F) << 4 | pkt[1] >> 4)
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, tos, total, seq & 0xFFFF, 0x4000, 64, P_ESP, 0,
                          self.hdr_src, self.hdr_dst)
        hdr = hdr[:10] + _csum(hdr).to_bytes(2, "big") + hdr[12:]
        return hdr + esp_hdr + body

    # -- receive ---------------------------------------------------------------------------
    def decrypt(self, pkt: bytes) -> Optional[bytes]:
        """Outer IPv4 / ESP packet -> inner packet, or None (dropped)."""
        if len(pkt) < 20 or pkt[0] >> 4 != 4 or pkt[9] != P_ESP:
            return None
        ihl = (pkt[0] & 0x0F) * 4
        end = struct.unpack_from("!H", pkt, 2)[0]
        spi, seq = struct.unpack_from("!II", pkt, ihl)
        if spi != self.spi or pkt[16:20] != self.hdr_dst or seq == 0:
            return None
        # replay pre-check (RFC 4303 3.4.3), window advanced only after the ICV
        if seq <= self.top and (self.top - seq >= self.window
                                or self.bitmap >> (self.top - seq) & 1):
            return None
        esp_hdr = pkt[ihl:ihl + 8]
        iv = pkt[ihl + 8:ihl + 8 + self.iv_len]
        ct = pkt[ihl + 8 + self.iv_len:end - self.icv_len]
        icv = pkt[end - self.icv_len:end]
        name = self.name
        try:
            if self.aead is not None:
                pt = self.aead.decrypt(self.salt + iv, ct + icv, esp_hdr)
            elif name == "rfc4106(gcm(aes))":
                dec = Cipher(self.block_alg, modes.GCM(self.salt + iv, icv, min_tag_length=len(icv))
                             ).decryptor()
                dec.authenticate_additional_data(esp_hdr)
                pt = dec.update(ct) + dec.finalize()
            elif name == "rfc4543(gcm(aes))":
                dec = Cipher(self.block_alg, modes.GCM(self.salt + iv, icv, min_tag_length=len(icv))
                             ).decryptor()
                dec.authenticate_additional_data(esp_hdr + iv + ct)
                dec.finalize()
                pt = ct
            else:
                if self.mac is not None and not _hmac.compare_digest(
                        self._icv(pkt[ihl:end - self.icv_len]), icv):
                    return None
                if self.block_alg is None:
                    pt = ct
                else:
                    dec = Cipher(self.block_alg, self._mode(iv)).decryptor()
                    pt = dec.update(ct) + dec.finalize()
        except (InvalidTag, ValueError):
            return None
        if seq > self.top:
            self.bitmap = (self.bitmap << (seq - self.top) | 1) & ((1 << self.window) - 1)
            self.top = seq
        else:
            self.bitmap |= 1 << (self.top - seq)
        padlen, nh = pt[-2], pt[-1]
        if padlen + 2 > len(pt) or pt[-2 - padlen:-2] != _PAD[:padlen] \
                or nh not in (P_IPV4, 41):
            return None
        return pt[:-2 - padlen]


# ---------------------------------------------------------------------------------------
# scapy
# ---------------------------------------------------------------------------------------
_SCAPY_CIPHERS = {"cbc(aes)": "AES-CBC", "cbc(des3_ede)": "3DES", "cbc(des)": "DES",
                  "rfc3686(ctr(aes))": "AES-CTR", "ecb(cipher_null)": "NULL",
                  "rfc4106(gcm(aes))": "AES-GCM", "rfc4543(gcm(aes))": "AES-NULL-GMAC",
                  "rfc7539esp(chacha20,poly1305)": "CHACHA20-POLY1305"}
_SCAPY_AUTHS = {("hmac(md5)", 96): "HMAC-MD5-96", ("hmac(sha1)", 96): "HMAC-SHA1-96",
                ("hmac(sha256)", 128): "SHA2-256-128", ("hmac(sha384)", 192): "SHA2-384-192",
                ("hmac(sha512)", 256): "SHA2-512-256"}


def scapy_missing() -> Optional[str]:
    """None if scapy's IPsec layer imports, else why not (for the table footer)."""
    try:
        import scapy.layers.ipsec  # noqa: F401
    except ImportError as e:
        return f"scapy is not importable ({e})"
    return None


class ScapyESP:
    """scapy's SecurityAssociation for one bench SA, encrypt and decrypt over bytes."""

    def __init__(self, cfg: SAConfig):
        from scapy.layers.inet import IP
        from scapy.layers.ipsec import ESP, SecurityAssociation
        name = cfg.aead or cfg.enc
        crypt = _SCAPY_CIPHERS.get(name)
        auth = _SCAPY_AUTHS.get((cfg.auth, cfg.icv_bits)) if cfg.auth else "NULL"
        if crypt is None or auth is None or (name == "rfc4106(gcm(aes))" and cfg.icv_bits != 128):
            raise NotImplementedError(f"scapy has no {name} / {cfg.auth}-{cfg.icv_bits} "
                                      f"preset")
        kw = dict(crypt_algo=crypt, crypt_key=cfg.aead_key if cfg.aead else cfg.enc_key,
                  auth_algo=auth, auth_key=cfg.auth_key if cfg.auth else None)
        self._IP = IP
        self._new = lambda: SecurityAssociation(
            ESP, spi=cfg.spi, tunnel_header=IP(src=str(cfg.src), dst=str(cfg.dst)), **kw)
        self.out = self._new()
        self.inb = self._new()

    def reset(self) -> None:
        self.out = self._new()
        self.inb = self._new()

    def encrypt(self, pkt: bytes) -> bytes:
        return bytes(self.out.encrypt(self._IP(pkt)))

    def decrypt(self, pkt: bytes) -> bytes:
        return bytes(self.inb.decrypt(self._IP(pkt)))


# ---------------------------------------------------------------------------------------
# cross-checks against the engine (run once per suite, outside the timed loops)
# ---------------------------------------------------------------------------------------
def check_against_engine(ref, engine_encrypt: Callable[[list[bytes]], list[bytes]],
                         engine_decrypt: Callable[[list[bytes]], list[Optional[bytes]]],
                         plain: list[bytes]) -> None:
    """The baseline must do the same work as the engine: the engine opens what the
    baseline sealed, and the baseline opens what the engine sealed. Raises RuntimeError."""
    ref.reset()
    sealed = [ref.encrypt(p) for p in plain]
    opened = engine_decrypt(sealed)
    if opened != plain:
        raise RuntimeError(f"{type(ref).__name__}: the engine does not decrypt its output")
    ref.reset()
    ours = engine_encrypt(plain)
    back = [ref.decrypt(p) for p in ours]
    if back != plain:
        raise RuntimeError(f"{type(ref).__name__}: does not decrypt the engine's output")
    ref.reset()
