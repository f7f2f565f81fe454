"""Independent ESP reference implementation and shared helpers for the cross-check tests.

`esp_seal` / `esp_open` implement RFC 4303 ESP directly on the `cryptography` package and
the standard library's `hmac`, with none of the engine's code: the transforms are written
out from their RFCs (RFC 3602 AES-CBC, RFC 2451/2405 3DES/DES, RFC 3686 AES-CTR, RFC 4106
GCM, RFC 4543 GMAC, RFC 7634 ChaCha20-Poly1305, RFC 2403/2404/4868 HMAC) including the
extended sequence number rules (RFC 4303 2.2.1: the high 32 bits are appended to the ICV
input, never sent; RFC 4106 5 / RFC 4543 3.3.2 / RFC 7634 2.1: AAD = SPI || seq_hi || seq_lo).

The oracle exists for what scapy's IPsec layer cannot do (truncated GCM ICVs through its
AEAD path, deliberately wrong padding, TFC padding, dummy packets, ESN with per-packet
high bits inferred across the 2^32 boundary) and as a second opinion everywhere else.

Also: scapy SecurityAssociation construction for an SAConfig, the Engine run helpers, and
a tiny classic-pcap writer (raw IP, link type 101).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import struct
from typing import Optional

from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

try:    # cryptography >= 43 moved TripleDES to the "decrepit" namespace
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:     # pragma: no cover
    TripleDES = algorithms.TripleDES

from engine.algorithms import AUTHS, CIPHERS
from engine.batch import PacketBatch
from engine.drops import Drop
from engine.engine import Engine
from engine.sa import MODE_TUNNEL, PROTO_ESP, SAConfig

ip = ipaddress.ip_address

# Addresses used throughout: SA endpoints (outer) and protected hosts (inner).
OUTER = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
INNER = {4: ("10.1.0.1", "10.2.0.1"), 6: ("2001:db8:1::1", "2001:db8:2::1")}

_DIGESTS = {"hmac(md5)": hashlib.md5, "hmac(sha1)": hashlib.sha1,
            "hmac(sha256)": hashlib.sha256, "hmac(sha384)": hashlib.sha384,
            "hmac(sha512)": hashlib.sha512}


# ---------------------------------------------------------------------------------------
# SA construction
# ---------------------------------------------------------------------------------------
def key(n: int, seed: int = 1) -> bytes:
    """Deterministic, non-trivial key material of n bytes."""
    return bytes((seed * 37 + 11 * i) & 0xFF for i in range(n))


def make_sa(alg: dict, mode: int = MODE_TUNNEL, outer: int = 4, encap: bool = False,
            spi: int = 0x1001, **kw) -> SAConfig:
    """SAConfig from an algorithm dict (enc/enc_key/auth/auth_key/icv_bits or aead/...)."""
    src, dst = OUTER[outer]
    if encap:
        kw.setdefault("encap_sport", 4500)
        kw.setdefault("encap_dport", 4500)
    return SAConfig(src=ip(src), dst=ip(dst), proto=PROTO_ESP, spi=spi, mode=mode, **alg, **kw)


def alg_enc(enc: str, key_len: int, auth: Optional[str], bits: int) -> dict:
    a = dict(enc=enc, enc_key=key(key_len, 2))
    if auth is not None and auth != "digest_null":
        a.update(auth=auth, auth_key=key(AUTHS[auth].digest_len, 3), icv_bits=bits)
    return a


def alg_aead(aead: str, key_len: int, bits: int) -> dict:
    return dict(aead=aead, aead_key=key(key_len, 4), icv_bits=bits)


def alg_id(a: dict) -> str:
    if "aead" in a:
        return f"{a['aead']}-{(len(a['aead_key']) - 4) * 8}-icv{a['icv_bits']}"
    k = len(a["enc_key"]) - CIPHERS[a["enc"]].salt_len
    return f"{a['enc']}-{k * 8}+{a.get('auth', 'digest_null')}-{a.get('icv_bits', 0)}"


def icv_len(cfg: SAConfig) -> int:
    return cfg.icv_bits // 8 if (cfg.aead or cfg.auth) else 0


def iv_len(cfg: SAConfig) -> int:
    return CIPHERS[cfg.aead or cfg.enc].iv_len


# ---------------------------------------------------------------------------------------
# The oracle: ESP (header .. ICV) seal and open
# ---------------------------------------------------------------------------------------
def _aad(cfg: SAConfig, seq: int) -> bytes:
    if cfg.esn:
        return struct.pack("!III", cfg.spi, seq >> 32, seq & 0xFFFFFFFF)
    return struct.pack("!II", cfg.spi, seq & 0xFFFFFFFF)


def _split_salt(cfg: SAConfig) -> tuple[bytes, bytes]:
    k = cfg.aead_key if cfg.aead else cfg.enc_key
    salt = CIPHERS[cfg.aead or cfg.enc].salt_len
    return (k[:-salt], k[-salt:]) if salt else (k, b"")


def _block_cipher(cfg: SAConfig, iv: bytes):
    name = cfg.enc
    k, nonce = _split_salt(cfg)
    if name == "cbc(aes)":
        return _Cipher(algorithms.AES(k), modes.CBC(iv))
    if name == "cbc(des3_ede)":
        return _Cipher(TripleDES(k), modes.CBC(iv))
    if name == "cbc(des)":
        return _Cipher(TripleDES(k * 3), modes.CBC(iv))   # EDE with K1=K2=K3 is DES
    if name == "rfc3686(ctr(aes))":       # RFC 3686 4: nonce || IV || block counter 1
        return _Cipher(algorithms.AES(k), modes.CTR(nonce + iv + b"\x00\x00\x00\x01"))
    raise ValueError(name)


def _hmac_icv(cfg: SAConfig, data: bytes, seq: int) -> bytes:
    if not cfg.auth:
        return b""
    msg = data + (struct.pack("!I", seq >> 32) if cfg.esn else b"")   # RFC 4303 2.2.1
    return hmac.new(cfg.auth_key, msg, _DIGESTS[cfg.auth]).digest()[:cfg.icv_bits // 8]


def _aead_seal(cfg: SAConfig, seq: int, iv: bytes, pt: bytes) -> tuple[bytes, bytes]:
    """(ciphertext, tag) for the three AEAD transforms."""
    k, salt = _split_salt(cfg)
    nonce = salt + iv
    aad = _aad(cfg, seq)
    n = cfg.icv_bits // 8
    if cfg.aead == "rfc7539esp(chacha20,poly1305)":
        out = ChaCha20Poly1305(k).encrypt(nonce, pt, aad)
        return out[:-16], out[-16:]
    enc = _Cipher(algorithms.AES(k), modes.GCM(nonce)).encryptor()
    if cfg.aead == "rfc4543(gcm(aes))":      # RFC 4543 3.1: everything is AAD, nothing secret
        enc.authenticate_additional_data(aad + iv + pt)
        enc.finalize()
        return pt, enc.tag[:n]
    enc.authenticate_additional_data(aad)
    ct = enc.update(pt) + enc.finalize()
    return ct, enc.tag[:n]


def _aead_open(cfg: SAConfig, seq: int, iv: bytes, ct: bytes, tag: bytes) -> bytes:
    k, salt = _split_salt(cfg)
    nonce = salt + iv
    aad = _aad(cfg, seq)
    if cfg.aead == "rfc7539esp(chacha20,poly1305)":
        return ChaCha20Poly1305(k).decrypt(nonce, ct + tag, aad)
    dec = _Cipher(algorithms.AES(k), modes.GCM(nonce, tag, min_tag_length=len(tag))).decryptor()
    if cfg.aead == "rfc4543(gcm(aes))":
        dec.authenticate_additional_data(aad + iv + ct)
        dec.finalize()
        return ct
    dec.authenticate_additional_data(aad)
    return dec.update(ct) + dec.finalize()


def esp_seal(cfg: SAConfig, payload: bytes, nh: int, seq: int, iv: Optional[bytes] = None,
             pad: Optional[bytes] = None, tfc: bytes = b"") -> bytes:
    """ESP header, IV, encrypted (payload || tfc || pad || pad_len || nh), ICV.

    seq is the full (64-bit with ESN) sequence number; only its low 32 bits are sent.
    `pad` overrides the RFC 4303 2.4 default padding 1, 2, 3, ... (caller keeps alignment).
    """
    spec = CIPHERS[cfg.aead or cfg.enc]
    body = payload + tfc
    if pad is None:
        pad = bytes(range(1, (-(len(body) + 2)) % spec.block + 1))
    pt = body + pad + bytes([len(pad), nh])
    assert len(pt) % spec.block == 0, "ESP payload not aligned"
    if iv is None:
        iv = os.urandom(spec.iv_len)
    hdr = struct.pack("!II", cfg.spi, seq & 0xFFFFFFFF)
    if cfg.aead:
        ct, tag = _aead_seal(cfg, seq, iv, pt)
        return hdr + iv + ct + tag
    if cfg.enc == "ecb(cipher_null)":
        ct = pt
    else:
        e = _block_cipher(cfg, iv).encryptor()
        ct = e.update(pt) + e.finalize()
    data = hdr + iv + ct
    return data + _hmac_icv(cfg, data, seq)


class OracleAuthError(ValueError):
    pass


def esp_open(cfg: SAConfig, esp: bytes, seq: int) -> tuple[bytes, bytes, int]:
    """Verify and decrypt ESP bytes (header .. ICV) given the full sequence number.

    Returns (payload incl. any TFC padding, padding bytes, next header)."""
    spi, lo = struct.unpack("!II", esp[:8])
    assert spi == cfg.spi and lo == seq & 0xFFFFFFFF, (hex(spi), hex(lo), hex(seq))
    ivn, icvn = iv_len(cfg), icv_len(cfg)
    iv = esp[8:8 + ivn]
    ct, icv = esp[8 + ivn:len(esp) - icvn], esp[len(esp) - icvn:]
    if cfg.aead:
        try:
            pt = _aead_open(cfg, seq, iv, ct, icv)
        except Exception as err:   # InvalidTag
            raise OracleAuthError(repr(err)) from None
    else:
        if not hmac.compare_digest(_hmac_icv(cfg, esp[:len(esp) - icvn], seq), icv):
            raise OracleAuthError("bad ICV")
        if cfg.enc == "ecb(cipher_null)":
            pt = ct
        else:
            d = _block_cipher(cfg, iv).decryptor()
            pt = d.update(ct) + d.finalize()
    padlen, nh = pt[-2], pt[-1]
    return pt[:len(pt) - 2 - padlen], pt[len(pt) - 2 - padlen:-2], nh


# ---------------------------------------------------------------------------------------
# Framing (byte-level, with the scapy layers only as header builders)
# ---------------------------------------------------------------------------------------
def outer_header(cfg: SAConfig, payload_len: int, tos: int = 0, proto: int = 50):
    """Outer IPv4/IPv6 header bytes for the SA's endpoints (tunnel mode)."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    if cfg.dst.version == 4:
        return bytes(IP(src=str(cfg.src), dst=str(cfg.dst), proto=proto, tos=tos, ttl=64,
                        len=20 + payload_len))[:20]
    return bytes(IPv6(src=str(cfg.src), dst=str(cfg.dst), nh=proto, tc=tos, hlim=64,
                      plen=payload_len))[:40]


def udp_wrap(cfg: SAConfig, data: bytes) -> bytes:
    return struct.pack("!HHHH", cfg.encap_sport, cfg.encap_dport, 8 + len(data), 0) + data


def tunnel_packet(cfg: SAConfig, esp: bytes, tos: int = 0) -> bytes:
    """Outer header [+ UDP] + ESP, as the peer of a tunnel-mode SA would send it."""
    if cfg.encap_dport is not None:
        body = udp_wrap(cfg, esp)
        return outer_header(cfg, len(body), tos, 17) + body
    return outer_header(cfg, len(esp), tos, 50) + esp


def oracle_encrypt(cfg: SAConfig, pkt: bytes, seq: int, tos: Optional[int] = None,
                   **seal_kw) -> bytes:
    """A whole packet protected by the oracle: tunnel (outer header from the SA) or
    transport (the packet's own IPv4 header / IPv6 fixed header, no extension headers)."""
    ver = pkt[0] >> 4
    if cfg.mode == MODE_TUNNEL:
        esp = esp_seal(cfg, pkt, 4 if ver == 4 else 41, seq, **seal_kw)
        return tunnel_packet(cfg, esp, tos if tos is not None else 0)
    hl = (pkt[0] & 0x0F) * 4 if ver == 4 else 40
    nh = pkt[9] if ver == 4 else pkt[6]
    esp = esp_seal(cfg, pkt[hl:], nh, seq, **seal_kw)
    udp = cfg.encap_dport is not None
    body = udp_wrap(cfg, esp) if udp else esp
    hdr = bytearray(pkt[:hl])
    if ver == 4:
        hdr[9] = 17 if udp else 50
        struct.pack_into("!H", hdr, 2, hl + len(body))
        struct.pack_into("!H", hdr, 10, 0)
        struct.pack_into("!H", hdr, 10, ipv4_checksum(bytes(hdr)))
    else:
        hdr[6] = 17 if udp else 50
        struct.pack_into("!H", hdr, 4, len(body))
    return bytes(hdr) + body


def ipv4_checksum(hdr: bytes) -> int:
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def esp_offset(pkt: bytes) -> int:
    """Offset of the ESP header in an outer packet (after IPv4/IPv6 [+ UDP])."""
    if pkt[0] >> 4 == 4:
        hl, proto = (pkt[0] & 0x0F) * 4, pkt[9]
    else:
        hl, proto = 40, pkt[6]
    return hl + 8 if proto == 17 else hl


# ---------------------------------------------------------------------------------------
# scapy SecurityAssociation for an SAConfig
# ---------------------------------------------------------------------------------------
_SCAPY_ENC = {"cbc(aes)": "AES-CBC", "cbc(des3_ede)": "3DES", "cbc(des)": "DES",
              "rfc3686(ctr(aes))": "AES-CTR", "ecb(cipher_null)": None,
              "rfc4106(gcm(aes))": "AES-GCM", "rfc4543(gcm(aes))": "AES-NULL-GMAC",
              "rfc7539esp(chacha20,poly1305)": "CHACHA20-POLY1305"}
_SCAPY_AUTH = {("hmac(md5)", 96): "HMAC-MD5-96", ("hmac(sha1)", 96): "HMAC-SHA1-96",
               ("hmac(sha256)", 128): "SHA2-256-128", ("hmac(sha384)", 192): "SHA2-384-192",
               ("hmac(sha512)", 256): "SHA2-512-256"}


def scapy_sa(cfg: SAConfig, esn_hi: int = 0):
    """A scapy SecurityAssociation equivalent to cfg (tunnel header / NAT-T as configured)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.hmac import HMAC
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import ESP, AuthAlgo, CryptAlgo, SecurityAssociation

    tunnel = None
    if cfg.mode == MODE_TUNNEL:
        tunnel = (IP(src=str(cfg.src), dst=str(cfg.dst)) if cfg.dst.version == 4
                  else IPv6(src=str(cfg.src), dst=str(cfg.dst)))
    natt = (UDP(sport=cfg.encap_sport, dport=cfg.encap_dport)
            if cfg.encap_dport is not None else None)
    name = cfg.aead or cfg.enc
    kw = dict(crypt_algo=_SCAPY_ENC[name], crypt_key=cfg.aead_key if cfg.aead else cfg.enc_key)
    if cfg.aead:
        kw["crypt_icv_size"] = cfg.icv_bits // 8
    elif cfg.auth:
        # Placeholder name for SHA-256/96 (scapy has only RFC 4868's 128): replaced below.
        kw.update(auth_algo=_SCAPY_AUTH.get((cfg.auth, cfg.icv_bits), "SHA2-256-128"),
                  auth_key=cfg.auth_key)
    sa = SecurityAssociation(ESP, spi=cfg.spi, tunnel_header=tunnel, nat_t_header=natt,
                             esn_en=cfg.esn, esn=esn_hi, **kw)
    if cfg.auth == "hmac(sha256)" and cfg.icv_bits == 96:
        sa.auth_algo = AuthAlgo("SHA2-256-96", mac=HMAC, digestmod=hashes.SHA256, icv_size=12)
    if cfg.aead == "rfc4106(gcm(aes))" and cfg.icv_bits != 128:
        # scapy's 'AES-GCM' goes through cryptography's AESGCM, which always emits a 16-byte
        # tag; scapy's generic Cipher/mode path (the one it uses for non-AEAD-API ciphers)
        # truncates the tag as RFC 4106 allows, so use a CryptAlgo on that path.
        sa.crypt_algo = CryptAlgo("AES-GCM-trunc", cipher=algorithms.AES, mode=modes.GCM,
                                  key_size=(16, 24, 32), salt_size=4, block_size=1,
                                  iv_size=8, icv_size=cfg.icv_bits // 8,
                                  format_mode_iv=lambda sa, iv, **kw: sa.crypt_salt + iv)
    return sa


def scapy_open(sa, pkt_bytes: bytes):
    """(decrypted packet bytes, the _ESPPlain with padding/padlen/nh) via scapy."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import ESP
    cls = IP if pkt_bytes[0] >> 4 == 4 else IPv6
    p = cls(pkt_bytes)
    enc = p[ESP]
    sa.auth_algo.verify(enc, sa.auth_key, esn_en=sa.esn_en, esn=sa.esn)
    plain = sa.crypt_algo.decrypt(sa, enc, sa.crypt_key,
                                  sa.crypt_icv_size or sa.crypt_algo.icv_size
                                  or sa.auth_algo.icv_size, esn_en=sa.esn_en, esn=sa.esn)
    return bytes(sa.decrypt(cls(pkt_bytes))), plain


# ---------------------------------------------------------------------------------------
# Engine helpers
# ---------------------------------------------------------------------------------------
def engine_for(cfg: SAConfig, direction: str) -> Engine:
    e = Engine()
    e.install(cfg, direction)
    return e


def run(engine: Engine, pkts: list[bytes], op: str) -> tuple[list[bytes], list[Drop]]:
    """Run one batch through engine.encrypt/decrypt: (output bytes per packet, drops)."""
    b = PacketBatch.from_packets(pkts)
    getattr(engine, op)(b)
    drops = [Drop(int(d)) for d in b.drop[:b.count]]
    return [b.packet(i) if drops[i] == Drop.NONE else b"" for i in range(b.count)], drops


# ---------------------------------------------------------------------------------------
# pcap
# ---------------------------------------------------------------------------------------
LINKTYPE_RAW = 101


def write_pcap(path, packets: list[bytes], linktype: int = LINKTYPE_RAW) -> None:
    """Classic little-endian microsecond libpcap."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
        for i, p in enumerate(packets):
            f.write(struct.pack("<IIII", 1_700_000_000 + i, 0, len(p), len(p)) + p)


