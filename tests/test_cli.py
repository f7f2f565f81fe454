"""Black-box tests of `spu encrypt` / `spu decrypt` (../shared/CONTRACT-SPU.md).

Everything goes through the real command line in a subprocess. Input captures are built
here (scapy packets, pcap/pcapng framing with struct); outputs are read with scapy's pcap
readers and checked with independent oracles: scapy's SecurityAssociation decrypts what
`spu encrypt` wrote and encrypts what `spu decrypt` reads, and the `cryptography` package
builds the ESP packets scapy cannot (dummy next header 59, bad padding, sequence 0).
"""
from __future__ import annotations

import copy
import json
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import AH, AUTH_ALGOS, ESP, SecurityAssociation
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import RawPcapNgReader, RawPcapReader

REPO = Path(__file__).resolve().parents[1]

LT_ETH, LT_RAW = 1, 101
T0 = 1_700_000_000 * 10**9          # a realistic epoch timestamp, ns
DROP_KEYS = {"no_policy", "no_sa", "auth_failed", "replay", "malformed", "policy_mismatch",
             "seq_exhausted", "keepalive", "dummy"}
PCAPNG_SHB = 0x0A0D0D0A


# -- running the command ------------------------------------------------------------------

def run_spu(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """`spu ARGS...` as a subprocess, from the repository root."""
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def check_stats(stats: dict) -> None:
    """The --stats-json shape: keys, types and packets_in = packets_out + sum(dropped)."""
    assert set(stats) == {"packets_in", "packets_out", "dropped"}, stats
    assert set(stats["dropped"]) <= DROP_KEYS, stats
    values = [stats["packets_in"], stats["packets_out"], *stats["dropped"].values()]
    assert all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)
    assert stats["packets_in"] == stats["packets_out"] + sum(stats["dropped"].values()), stats


def drops(stats: dict) -> dict:
    """The non-zero drop counters (zero keys may be present or absent)."""
    return {k: v for k, v in stats["dropped"].items() if v}


@dataclass
class Capture:
    frames: list[bytes]
    ts: list[int]            # ns
    linktype: int
    head: bytes              # the first 12 file bytes (magic / byte order)


@dataclass
class Result:
    stats: dict
    out: Capture
    out_path: Path
    stderr: str


def spu(tmp_path: Path, direction: str, sa_text: str, capture, tag: str = "run") -> Result:
    """Run `spu DIRECTION` on `capture` (file bytes, or an existing Path); expect success."""
    sa = tmp_path / f"{tag}.sa"
    sa.write_text(sa_text)
    if isinstance(capture, Path):
        inp = capture
    else:
        inp = tmp_path / f"{tag}.{direction}.in"
        inp.write_bytes(capture)
    out = tmp_path / f"{tag}.{direction}.out"
    st = tmp_path / f"{tag}.{direction}.json"
    proc = run_spu(direction, "--sa", sa, inp, out, "--stats-json", st)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(st.read_text())
    check_stats(stats)
    return Result(stats, read_capture(out), out, proc.stderr)


def assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), proc.stderr
    assert proc.stderr.strip()
    return proc.stderr


# -- captures -----------------------------------------------------------------------------

def pcap(frames, linktype: int = LT_RAW, ts=None, *, big_endian: bool = False,
         nano: bool = False, snaplen: int = 262144) -> bytes:
    """A classic pcap file (written here with struct, independent of engine.pcap)."""
    frames = [raw(f) if not isinstance(f, (bytes, bytearray)) else bytes(f) for f in frames]
    if ts is None:
        ts = [T0 + i * 1_000_000 for i in range(len(frames))]
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for t, f in zip(ts, frames):
        sec, ns = divmod(t, 10**9)
        assert nano or ns % 1000 == 0
        out.append(struct.pack(e + "IIII", sec, ns if nano else ns // 1000, len(f), len(f)) + f)
    return b"".join(out)


def pcapng(frames, linktype: int = LT_RAW, ts=None, *, big_endian: bool = False,
           tsresol: int = 9) -> bytes:
    """A pcapng file: SHB, one IDB with if_tsresol 10^-tsresol, one EPB per frame."""
    frames = [raw(f) if not isinstance(f, (bytes, bytearray)) else bytes(f) for f in frames]
    if ts is None:
        ts = [T0 + i * 1_000_000 for i in range(len(frames))]
    e = ">" if big_endian else "<"
    shb = struct.pack(e + "IIIHHqI", PCAPNG_SHB, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    opts = struct.pack(e + "HHB3x", 9, 1, tsresol) + struct.pack(e + "HH", 0, 0)
    idb_len = 20 + len(opts)
    idb = struct.pack(e + "IIHHI", 1, idb_len, linktype, 0, 0) + opts + struct.pack(e + "I",
                                                                                   idb_len)
    out = [shb, idb]
    for t, f in zip(ts, frames):
        ticks, rem = divmod(t * 10**tsresol, 10**9)
        assert rem == 0
        pad = -len(f) % 4
        blen = 32 + len(f) + pad
        out.append(struct.pack(e + "IIIIIII", 6, blen, 0, ticks >> 32, ticks & 0xFFFFFFFF,
                               len(f), len(f)) + f + b"\0" * pad + struct.pack(e + "I", blen))
    return b"".join(out)


def read_capture(path: Path) -> Capture:
    """Frames and ns timestamps of a pcap or pcapng file, read by scapy."""
    with open(path, "rb") as f:
        head = f.read(12)
    frames, ts = [], []
    if struct.unpack("<I", head[:4])[0] == PCAPNG_SHB:
        reader = RawPcapNgReader(str(path))
        linktype = None
        try:
            for data, meta in reader:
                frames.append(data)
                ticks = meta.tshigh << 32 | meta.tslow
                ts.append(ticks * 10**9 // meta.tsresol)
                linktype = meta.linktype
            if linktype is None:   # no packets: the IDB still says it
                linktype = reader.interfaces[0][0] if reader.interfaces else None
        finally:
            reader.close()
    else:
        reader = RawPcapReader(str(path))
        try:
            linktype = reader.linktype
            for data, meta in reader:
                frames.append(data)
                ts.append(meta.sec * 10**9 + meta.usec * (1 if reader.nano else 1000))
        finally:
            reader.close()
    return Capture(frames, ts, linktype, head)


# -- packets ------------------------------------------------------------------------------

def udp4(src="10.1.0.1", dst="10.2.0.1", n=0, size=10, **ip) -> bytes:
    return raw(IP(src=src, dst=dst, id=n, **ip) / UDP(sport=1024 + n, dport=53)
               / Raw(bytes((n + j) & 0xFF for j in range(size))))


def tcp4(src="10.1.0.1", dst="10.2.0.1", n=0, size=100, **ip) -> bytes:
    return raw(IP(src=src, dst=dst, id=n, **ip) / TCP(sport=40000 + n, dport=443, flags="PA")
               / Raw(bytes((3 * n + j) & 0xFF for j in range(size))))


def icmp4(src="10.1.0.1", dst="10.2.0.1", n=0, size=1400) -> bytes:
    return raw(IP(src=src, dst=dst, id=n) / ICMP(id=n, seq=n)
               / Raw(bytes((5 * n + j) & 0xFF for j in range(size))))


def udp6(src="fd00:1::1", dst="fd00:2::1", n=0, size=37, **ip) -> bytes:
    return raw(IPv6(src=src, dst=dst, **ip) / UDP(sport=2000 + n, dport=4444)
               / Raw(bytes((7 * n + j) & 0xFF for j in range(size))))


def tcp6(src="fd00:1::1", dst="fd00:2::1", n=0, size=0) -> bytes:
    return raw(IPv6(src=src, dst=dst) / TCP(sport=50000 + n, dport=22, flags="S")
               / Raw(bytes(size)))


def parse_ip(pkt: bytes):
    return IPv6(pkt) if pkt[0] >> 4 == 6 else IP(pkt)


def ether(pkt: bytes, n: int = 0, etype: Optional[int] = None, trailer: bytes = b"") -> bytes:
    """An Ethernet frame with per-frame distinct MAC addresses."""
    if etype is None:
        etype = 0x86DD if pkt[0] >> 4 == 6 else 0x0800
    dst = bytes([0x02, 0xD0, 0, 0, n >> 8 & 0xFF, n & 0xFF])
    src = bytes([0x02, 0x5C, 0, 0, n >> 8 & 0xFF, n & 0xFF])
    return dst + src + struct.pack(">H", etype) + pkt + trailer


def hx(b: bytes) -> str:
    return "0x" + b.hex()


def key(n: int, seed: int = 1) -> bytes:
    return bytes((seed * 37 + i * 13 + 1) & 0xFF for i in range(n))


# -- algorithms: SA-file fragment and the scapy equivalent --------------------------------

ENC_SCAPY = {"cbc(aes)": "AES-CBC", "cbc(des3_ede)": "3DES", "cbc(des)": "DES",
             "rfc3686(ctr(aes))": "AES-CTR", "ecb(cipher_null)": "NULL"}
AEAD_SCAPY = {"rfc4106(gcm(aes))": "AES-GCM", "rfc4543(gcm(aes))": "AES-NULL-GMAC",
              "rfc7539esp(chacha20,poly1305)": "CHACHA20-POLY1305"}
AUTH_SCAPY = {"hmac(md5)": "HMAC-MD5-96", "hmac(sha1)": "HMAC-SHA1-96",
              "hmac(sha256)": "SHA2-256-128", "hmac(sha384)": "SHA2-384-192",
              "hmac(sha512)": "SHA2-512-256"}
AUTH_KEYLEN = {"hmac(md5)": 16, "hmac(sha1)": 20, "hmac(sha256)": 32, "hmac(sha384)": 48,
               "hmac(sha512)": 64}
# `auth ALG KEY` ICV lengths (the contract: Linux defaults, sha256 96)
AUTH_DEFAULT_BITS = {"hmac(md5)": 96, "hmac(sha1)": 96, "hmac(sha256)": 96,
                     "hmac(sha384)": 192, "hmac(sha512)": 256}


@dataclass(frozen=True)
class Alg:
    id: str
    xfrm: str                       # the SA line's transform keywords
    crypt: str                      # scapy crypt_algo
    crypt_key: Optional[bytes]
    crypt_icv: Optional[int]        # scapy crypt_icv_size (AEAD)
    auth: Optional[str]             # scapy auth_algo (its icv_size overridden)
    auth_key: Optional[bytes]
    auth_icv: int                   # bytes

    def scapy_sa(self, spi: int, tunnel=None, nat_t=None, **kw) -> SecurityAssociation:
        sa = SecurityAssociation(ESP, spi=spi, crypt_algo=self.crypt, crypt_key=self.crypt_key,
                                 crypt_icv_size=self.crypt_icv, auth_algo=self.auth,
                                 auth_key=self.auth_key, tunnel_header=tunnel,
                                 nat_t_header=nat_t, **kw)
        if self.auth:
            sa.auth_algo = copy.copy(AUTH_ALGOS[self.auth])
            sa.auth_algo.icv_size = self.auth_icv
        return sa


def enc_alg(enc: str, keylen: int, auth: str, bits: Optional[int] = None,
            trunc: bool = False, seed: int = 1) -> Alg:
    ekey = key(keylen, seed)
    ek = hx(ekey) if keylen else '""'
    if auth == "digest_null":
        ak = "0x" if trunc else '""'
        a = f"auth-trunc 'digest_null' {ak} 0" if trunc else f'auth digest_null {ak}'
        akey, scapy_auth, icv = None, None, 0
    else:
        akey = key(AUTH_KEYLEN[auth], seed + 1)
        icv_bits = bits if trunc else AUTH_DEFAULT_BITS[auth]
        a = f"auth-trunc '{auth}' {hx(akey)} {bits}" if trunc else f"auth '{auth}' {hx(akey)}"
        scapy_auth, icv = AUTH_SCAPY[auth], icv_bits // 8
    ident = f"{enc}-{keylen * 8}+{'auth-trunc' if trunc else 'auth'}-{auth}"
    if trunc and bits:
        ident += f"-{bits}"
    return Alg(ident, f"enc '{enc}' {ek} {a}", ENC_SCAPY[enc], ekey or None, None,
               scapy_auth, akey, icv)


def aead_alg(aead: str, keylen: int, icv_bits: int, seed: int = 1) -> Alg:
    k = key(keylen, seed)
    return Alg(f"{aead}-{(keylen - 4) * 8}-icv{icv_bits}",
               f"aead '{aead}' {hx(k)} {icv_bits}", AEAD_SCAPY[aead], k, icv_bits // 8,
               None, None, 0)


ALGS = [
    enc_alg("cbc(aes)", 16, "hmac(sha1)", 96, trunc=True),
    enc_alg("cbc(aes)", 24, "hmac(sha256)", 128, trunc=True),
    enc_alg("cbc(aes)", 32, "hmac(sha512)"),
    enc_alg("cbc(des3_ede)", 24, "hmac(md5)"),
    enc_alg("cbc(des)", 8, "hmac(sha1)"),
    enc_alg("rfc3686(ctr(aes))", 20, "hmac(sha384)", 192, trunc=True),
    enc_alg("rfc3686(ctr(aes))", 36, "hmac(sha256)"),          # `auth`: 96-bit ICV
    enc_alg("ecb(cipher_null)", 0, "hmac(sha1)", 160, trunc=True),
    enc_alg("cbc(aes)", 16, "hmac(md5)", 128, trunc=True),
    enc_alg("cbc(aes)", 32, "hmac(sha384)"),
    enc_alg("cbc(aes)", 16, "hmac(sha512)", 256, trunc=True),
    enc_alg("cbc(aes)", 16, "digest_null"),
    enc_alg("rfc3686(ctr(aes))", 28, "digest_null", trunc=True),
    aead_alg("rfc4106(gcm(aes))", 20, 64),
    aead_alg("rfc4106(gcm(aes))", 28, 96),
    aead_alg("rfc4106(gcm(aes))", 36, 128),
    aead_alg("rfc4543(gcm(aes))", 20, 128),
    aead_alg("rfc4543(gcm(aes))", 36, 128),
    aead_alg("rfc7539esp(chacha20,poly1305)", 36, 128),
]


@dataclass(frozen=True)
class Variant:
    name: str
    src: str
    dst: str
    mode: str
    encap: bool

    @property
    def v6(self) -> bool:
        return ":" in self.dst

    def sa_line(self, spi: int, alg: Alg, extra: str = "") -> str:
        encap = " encap espinudp 4500 4500 0.0.0.0" if self.encap else ""
        return (f"src {self.src} dst {self.dst} proto esp spi {spi:#x} mode {self.mode} "
                f"{alg.xfrm}{encap} {extra}").rstrip() + "\n"

    def scapy_sa(self, spi: int, alg: Alg, **kw) -> SecurityAssociation:
        tunnel = None
        if self.mode == "tunnel":
            tunnel = (IPv6 if self.v6 else IP)(src=self.src, dst=self.dst)
        nat_t = UDP(sport=4500, dport=4500) if self.encap else None
        return alg.scapy_sa(spi, tunnel, nat_t, **kw)

    def packets(self) -> list[bytes]:
        if self.mode == "transport" and self.v6:
            return [udp6(self.src, self.dst, 1, 1), tcp6(self.src, self.dst, 2, 100),
                    udp6(self.src, self.dst, 3, 1400, tc=0xB8)]
        if self.mode == "transport":
            return [udp4(self.src, self.dst, 1, 1), tcp4(self.src, self.dst, 2, 100, flags="DF"),
                    icmp4(self.src, self.dst, 3, 1400)]
        return [udp4(n=1, size=1), tcp4(n=2, tos=0xB8, flags="DF"), udp6(n=3, tc=0x29),
                icmp4(n=4), tcp6(n=5), udp4(n=6, size=200, tos=0x02),
                udp4(n=7, tos=0x4B)]                           # ECN CE


VARIANTS = [
    Variant("tunnel4", "192.0.2.1", "192.0.2.2", "tunnel", False),
    Variant("tunnel6", "2001:db8::1", "2001:db8::2", "tunnel", False),
    Variant("transport4", "192.0.2.1", "192.0.2.2", "transport", False),
    Variant("udp4", "192.0.2.1", "192.0.2.2", "tunnel", True),
    Variant("transport6", "2001:db8::1", "2001:db8::2", "transport", False),
    Variant("udp6", "2001:db8::1", "2001:db8::2", "tunnel", True),
]
ALG_CASES = [pytest.param(alg, VARIANTS[i % len(VARIANTS)],
                          id=f"{alg.id}-{VARIANTS[i % len(VARIANTS)].name}")
             for i, alg in enumerate(ALGS)]


def udp_checksum_ok(outer) -> bool:
    p = outer.copy()
    got = p[UDP].chksum
    del p[UDP].chksum
    return parse_ip(raw(p))[UDP].chksum == got


def check_esp(pkt: bytes, inner: bytes, var: Variant, sa: SecurityAssociation, spi: int,
              seq: int, **dec) -> None:
    """One `spu encrypt` output packet, checked against scapy's decryption."""
    outer = parse_ip(pkt)
    assert outer.version == (6 if var.v6 else 4)
    inner_ip = parse_ip(inner)
    if var.mode == "tunnel":
        assert (outer.src, outer.dst) == (sa.tunnel_header.src, sa.tunnel_header.dst)
        assert (outer.hlim if var.v6 else outer.ttl) == 64
        # DSCP copied; ECN copied too (RFC 6040 normal mode, CE included)
        tos = inner_ip.tc if inner_ip.version == 6 else inner_ip.tos
        assert (outer.tc if var.v6 else outer.tos) == tos
        if var.v6:
            assert outer.fl == 0
        else:   # DF when the inner IPv4 has DF, always for inner IPv6
            assert bool(outer.flags.DF) == (inner_ip.version == 6 or bool(inner_ip.flags.DF))
    else:
        assert (outer.src, outer.dst) == (inner_ip.src, inner_ip.dst)
    if var.encap:
        u = outer[UDP]
        assert (u.sport, u.dport) == (4500, 4500)
        if var.v6:
            assert u.chksum != 0 and udp_checksum_ok(outer)     # mandatory over IPv6
        else:
            assert u.chksum == 0
    assert outer[ESP].spi == spi
    assert outer[ESP].seq == seq & 0xFFFFFFFF
    assert esp_open(sa, outer, **dec) == inner


def esp_open(sa: SecurityAssociation, outer, esn_en: bool = False, esn: int = 0) -> bytes:
    """The packet scapy's SA recovers from `outer`.

    scapy opens RFC 4106 through cryptography's AESGCM, which only takes 16-byte tags, so
    truncated GCM ICVs (64, 96 bits) are opened here with the GCM mode API instead.
    """
    icv = sa.crypt_icv_size
    if sa.crypt_algo.name != "AES-GCM" or icv in (None, 16):
        return raw(sa.decrypt(outer, esn_en=esn_en, esn=esn))
    e = outer[ESP]
    iv, ct, tag = e.data[:8], e.data[8:-icv], e.data[-icv:]
    aad = (struct.pack(">III", e.spi, esn, e.seq) if esn_en
           else struct.pack(">II", e.spi, e.seq))
    dec = Cipher(algorithms.AES(sa.crypt_key),
                 modes.GCM(sa.crypt_salt + iv, tag, min_tag_length=icv)).decryptor()
    dec.authenticate_additional_data(aad)
    pt = dec.update(ct) + dec.finalize()
    padlen, nh = pt[-2], pt[-1]
    assert pt[-2 - padlen:-2] == bytes(range(1, padlen + 1))
    payload = pt[:-2 - padlen]
    if sa.tunnel_header is not None:
        assert nh in (4, 41)
        return payload
    assert sa.nat_t_header is None      # transport mode over plain ESP only, here
    ip = outer.copy()
    ip.remove_payload()
    if ip.version == 4:
        ip.proto, ip.len, ip.chksum = nh, None, None
    else:
        ip.nh, ip.plen = nh, None
    return raw(ip / Raw(payload))


# -- oracle ESP (cryptography + struct) for what scapy cannot build -----------------------

def gcm_esp(key20: bytes, spi: int, seq: int, payload: bytes, nh: int,
            pad: Optional[bytes] = None, iv: bytes = b"\x5a" * 8, icv: int = 16) -> bytes:
    """RFC 4106 ESP (no ESN): header, IV, ciphertext, ICV (the tag's first `icv` bytes)."""
    if pad is None:
        pad = bytes(range(1, (-(len(payload) + 2)) % 4 + 1))
    hdr = struct.pack(">II", spi, seq)
    pt = payload + pad + bytes([len(pad), nh])
    if icv == 16:
        return hdr + iv + AESGCM(key20[:-4]).encrypt(key20[-4:] + iv, pt, hdr)
    enc = Cipher(algorithms.AES(key20[:-4]), modes.GCM(key20[-4:] + iv)).encryptor()
    enc.authenticate_additional_data(hdr)
    ct = enc.update(pt) + enc.finalize()
    return hdr + iv + ct + enc.tag[:icv]


def esp4(esp: bytes, src="192.0.2.1", dst="192.0.2.2") -> bytes:
    return raw(IP(src=src, dst=dst, proto=50) / Raw(esp))


# =========================================================================================
# SA file syntax, end to end
# =========================================================================================

CONTRACT_EXAMPLE = r"""
src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001001 mode tunnel \
    replay-window 64 flag esn replay-oseq 0xfffffff0 \
    enc 'cbc(aes)' 0x00112233445566778899aabbccddeeff \
    auth-trunc 'hmac(sha1)' 0x0011223344556677889900112233445566778899 96 \
    encap espinudp 4500 4500 0.0.0.0 \
    sel src 10.1.0.0/16 dst 10.2.0.0/16
"""


def test_contract_example_line(tmp_path):
    pkts = [udp4("10.1.0.1", f"10.2.0.{n}", n, n) for n in range(1, 21)]
    pkts.insert(7, udp4("10.3.0.1", "10.2.0.1", 99))            # outside the selector
    res = spu(tmp_path, "encrypt", CONTRACT_EXAMPLE, pcap(pkts))
    assert res.stats["packets_in"] == 21 and res.stats["packets_out"] == 20
    assert drops(res.stats) == {"no_policy": 1}
    assert res.out.linktype == LT_RAW
    sa = SecurityAssociation(
        ESP, spi=0x1001, crypt_algo="AES-CBC",
        crypt_key=bytes.fromhex("00112233445566778899aabbccddeeff"), auth_algo="HMAC-SHA1-96",
        auth_key=bytes.fromhex("0011223344556677889900112233445566778899"),
        tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"), nat_t_header=UDP(sport=4500),
        esn_en=True)
    var = Variant("udp4", "192.0.2.1", "192.0.2.2", "tunnel", True)
    del pkts[7]
    for i, (out, inner) in enumerate(zip(res.out.frames, pkts)):
        seq = 0xFFFFFFF1 + i          # replay-oseq 0xfffffff0: the first packet sends +1
        check_esp(out, inner, var, sa, 0x1001, seq, esn_en=True, esn=seq >> 32)
    assert res.out.ts == [T0 + i * 1_000_000 for i in range(21) if i != 7]


GCM_KEY = key(20, 7)
MULTI_SA = f"""\
# several SAs: the first whose selector matches wins

src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001 mode tunnel \\
    aead rfc4106(gcm(aes)) {hx(GCM_KEY)} 128 sel src 10.1.0.0/16 dst 10.2.0.0/16
  # shadowed by the line above for 10.1.5.0/24
src 192.0.2.1 dst 192.0.2.3 proto esp spi 4098 sel dst 10.2.0.0/16 src 10.1.5.0/24 \\
    mode tunnel aead "rfc4106(gcm(aes))" {hx(key(36, 2))} 96
src 192.0.2.1 dst 192.0.2.4 proto esp spi 0x00001003 mode tunnel replay-window 32 \\
    enc "cbc(aes)" "0123456789abcdef" auth "hmac(sha1)" '0123456789ABCDEFGHIJ' \\
    sel src 10.3.0.1 dst 10.4.0.0/16 proto udp dport 53
src 2001:db8::1 dst 2001:db8::2 proto esp spi 0x1004 mode tunnel \\
    aead 'rfc7539esp(chacha20,poly1305)' {hx(key(36, 4))} 128 \\
    sel src fd00::/16 dst fd00::/16 proto tcp
"""
CATCH_ALL = f"""
src 192.0.2.1 dst 192.0.2.9 proto esp spi 0x1009 mode tunnel aead rfc4106(gcm(aes)) \\
    {hx(key(20, 9))} 64
"""
MULTI_CASES = [   # (packet, SPI with the catch-all, outer dst)
    (udp4("10.1.5.7", "10.2.0.1", 1), 0x1001, "192.0.2.2"),     # first match, not the best
    (tcp4("10.1.200.1", "10.2.3.4", 2), 0x1001, "192.0.2.2"),
    (udp4("10.3.0.1", "10.4.0.1", 3), 0x1003, "192.0.2.4"),     # udp dport 53
    (raw(IP(src="10.3.0.1", dst="10.4.9.9") / UDP(dport=54)), 0x1009, "192.0.2.9"),
    (raw(IP(src="10.3.0.2", dst="10.4.0.1") / UDP(dport=53)), 0x1009, "192.0.2.9"),  # /32
    (raw(IP(src="10.3.0.1", dst="10.4.0.1") / TCP(dport=53)), 0x1009, "192.0.2.9"),
    (tcp6("fd00::1", "fd00::2", 7), 0x1004, "2001:db8::2"),
    (udp6("fd00::1", "fd00::2", 8), 0x1009, "192.0.2.9"),       # IPv6 in an IPv4 tunnel
]


def multi_sa_oracles() -> dict:
    def sa(spi, dst, **kw):
        t = (IPv6 if ":" in dst else IP)(src="2001:db8::1" if ":" in dst else "192.0.2.1",
                                          dst=dst)
        return SecurityAssociation(ESP, spi=spi, tunnel_header=t, **kw)
    return {
        0x1001: sa(0x1001, "192.0.2.2", crypt_algo="AES-GCM", crypt_key=GCM_KEY),
        0x1003: sa(0x1003, "192.0.2.4", crypt_algo="AES-CBC", crypt_key=b"0123456789abcdef",
                   auth_algo="HMAC-SHA1-96", auth_key=b"0123456789ABCDEFGHIJ"),
        0x1004: sa(0x1004, "2001:db8::2", crypt_algo="CHACHA20-POLY1305",
                   crypt_key=key(36, 4)),
        0x1009: sa(0x1009, "192.0.2.9", crypt_algo="AES-GCM", crypt_key=key(20, 9),
                   crypt_icv_size=8),
    }


def test_several_sas_first_match_and_catch_all(tmp_path):
    pkts = [p for p, _, _ in MULTI_CASES]
    res = spu(tmp_path, "encrypt", MULTI_SA + CATCH_ALL, pcap(pkts))
    assert res.stats["packets_out"] == len(pkts) and not drops(res.stats)
    oracles = multi_sa_oracles()
    seqs: dict[int, int] = {}
    for out, (inner, spi, dst) in zip(res.out.frames, MULTI_CASES, strict=True):
        outer = parse_ip(out)
        assert outer.dst == dst and outer[ESP].spi == spi, (parse_ip(inner).summary(), spi)
        seqs[spi] = seqs.get(spi, 0) + 1
        assert outer[ESP].seq == seqs[spi]          # per-SA sequence numbers from 1
        assert esp_open(oracles[spi], outer) == inner
    # The same file decrypts (installed inbound): everything comes back, in order.
    back = spu(tmp_path, "decrypt", MULTI_SA + CATCH_ALL, res.out_path)
    assert back.out.frames == pkts and not drops(back.stats)
    assert back.out.ts == res.out.ts


def test_unmatched_packets_are_no_policy(tmp_path):
    pkts = [p for p, _, _ in MULTI_CASES]
    res = spu(tmp_path, "encrypt", MULTI_SA, pcap(pkts))
    matched = [i for i, (_, spi, _) in enumerate(MULTI_CASES) if spi != 0x1009]
    assert drops(res.stats) == {"no_policy": len(pkts) - len(matched)}
    assert res.stats["packets_out"] == len(matched)
    assert [parse_ip(f)[ESP].spi for f in res.out.frames] == [MULTI_CASES[i][1] for i in matched]
    assert res.out.ts == [T0 + i * 1_000_000 for i in matched]


# =========================================================================================
# --stats-json and exit status
# =========================================================================================

@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_everything_dropped_still_exit_0(tmp_path, direction):
    # encrypt: no selector matches (no_policy); decrypt: plain packets (no_sa).
    sa = ("src 192.0.2.1 dst 192.0.2.2 proto esp spi 7 mode tunnel "
          f"aead 'rfc4106(gcm(aes))' {hx(GCM_KEY)} 128 sel src 172.16.0.0/12 dst 172.16.0.0/12\n")
    pkts = [udp4(n=n) for n in range(5)] + [udp6(n=9)]
    res = spu(tmp_path, direction, sa, pcap(pkts))
    assert res.stats["packets_in"] == 6 and res.stats["packets_out"] == 0
    assert drops(res.stats) == {"no_policy" if direction == "encrypt" else "no_sa": 6}
    assert res.out.frames == [] and res.out.linktype == LT_RAW


def test_empty_capture(tmp_path):
    sa = f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 7 aead rfc4106(gcm(aes)) {hx(GCM_KEY)} 128"
    res = spu(tmp_path, "encrypt", sa, pcap([], LT_ETH))
    assert res.stats["packets_in"] == 0 and res.stats["packets_out"] == 0
    assert res.out.frames == [] and res.out.linktype == LT_ETH


def test_without_stats_json(tmp_path):
    sa = tmp_path / "sa"
    sa.write_text(f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 7 "
                  f"aead rfc4106(gcm(aes)) {hx(GCM_KEY)} 128\n")
    (tmp_path / "in.pcap").write_bytes(pcap([udp4()]))
    proc = run_spu("encrypt", "--sa", sa, tmp_path / "in.pcap", tmp_path / "out.pcap")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert len(read_capture(tmp_path / "out.pcap").frames) == 1


# =========================================================================================
# Errors: exit status 1 and exactly one line on stderr, no traceback
# =========================================================================================

GOOD_SA = f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 7 aead rfc4106(gcm(aes)) {hx(GCM_KEY)} 128"


FILE_ERRORS = ["missing-sa-file", "missing-input", "garbage-input", "empty-input",
               "short-pcap-header", "unknown-linktype", "unknown-linktype-pcapng",
               "output-dir-missing", "output-is-dir", "stats-dir-missing"]


@pytest.mark.parametrize("case, direction",   # both directions, alternating (one process each)
                         [(c, ("encrypt", "decrypt")[i % 2]) for i, c in enumerate(FILE_ERRORS)]
                         + [(c, "decrypt") for c in ("missing-sa-file", "output-dir-missing")]
                         + [(c, "encrypt") for c in ("garbage-input", "unknown-linktype")])
def test_file_errors(tmp_path, case, direction):
    sa = tmp_path / "sa"
    sa.write_text(GOOD_SA + "\n")
    inp, out, stats = tmp_path / "in.pcap", tmp_path / "out.pcap", tmp_path / "stats.json"
    inp.write_bytes(pcap([udp4()]))
    if case == "missing-sa-file":
        sa = tmp_path / "no-such.sa"
    elif case == "missing-input":
        inp = tmp_path / "no-such.pcap"
    elif case == "garbage-input":
        inp.write_bytes(b"this is not a capture file at all\n" * 20)
    elif case == "empty-input":
        inp.write_bytes(b"")
    elif case == "short-pcap-header":
        inp.write_bytes(pcap([])[:13])
    elif case == "unknown-linktype":
        inp.write_bytes(pcap([udp4()], linktype=105))          # 802.11
    elif case == "unknown-linktype-pcapng":
        inp.write_bytes(pcapng([udp4()], linktype=113))        # Linux cooked capture
    elif case == "output-dir-missing":
        out = tmp_path / "no" / "such" / "dir" / "out.pcap"
    elif case == "output-is-dir":
        out = tmp_path
    elif case == "stats-dir-missing":
        stats = tmp_path / "no-such-dir" / "stats.json"
    proc = run_spu(direction, "--sa", sa, inp, out, "--stats-json", stats)
    msg = assert_one_line_error(proc)
    if case == "missing-sa-file":
        assert "no-such.sa" in msg
    elif case == "missing-input":
        assert "no-such.pcap" in msg


@pytest.mark.parametrize("text, line", [
    # a bad keyword after comments and blank lines: physical line numbers count them
    (f"# SAs\n\n{GOOD_SA}\n\nsrc 192.0.2.1 dst 192.0.2.3 proto esp spi 8 bogus 1\n", 5),
    # an entry continued over several lines is reported by its first line
    (f"{GOOD_SA}\n# next\nsrc 192.0.2.1 dst 192.0.2.3 \\\n  proto esp spi 8 \\\n"
     f"  aead rfc4106(gcm(aes)) 0x0011 128\n", 3),
    # a duplicate SA (same SPI, dst, proto) names the second line
    (f"{GOOD_SA}\n\n{GOOD_SA.replace('spi 7', 'spi 0x7')}\n", 3),
    ("src 192.0.2.1 dst 192.0.2.2 proto esp spi 7 enc 'cbc(aes)' 0x00\n", 1),   # bad key size
    ("src 192.0.2.1 dst 192.0.2.2 proto esp spi 7 aead 'rfc4106(gcm(aes)) 0x00 128\n", 1),
    (f"{GOOD_SA} sel src 10.0.0.0/8 dst 10.0.0.0/8 sport 5\n", 1),   # port without tcp|udp
    (f"\n\n\n{GOOD_SA} replay-oseq 0x100000000\n", 4),                # 64-bit without esn
    ("src 192.0.2.1 dst 2001:db8::1 proto esp spi 7 enc 'cbc(aes)' 0x" + "00" * 16 + "\n", 1),
])
def test_bad_sa_line_names_line_number(tmp_path, text, line):
    sa = tmp_path / "sa"
    sa.write_text(text)
    (tmp_path / "in.pcap").write_bytes(pcap([udp4()]))
    direction = ("encrypt", "decrypt")[line % 2]
    proc = run_spu(direction, "--sa", sa, tmp_path / "in.pcap", tmp_path / "out.pcap")
    msg = assert_one_line_error(proc)
    assert f"line {line}" in msg, msg
    assert GCM_KEY.hex()[:8] not in msg        # keys never appear in messages


# =========================================================================================
# Link types, file formats, timestamps
# =========================================================================================

ETH_SA = f"""\
src 2001:db8::1 dst 2001:db8::2 proto esp spi 0x3001 mode tunnel \\
    aead 'rfc4106(gcm(aes))' {hx(GCM_KEY)} 128 sel src 10.0.0.0/8 dst 10.0.0.0/8
src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x3002 mode tunnel enc 'cbc(aes)' {hx(key(16, 3))} \\
    auth-trunc 'hmac(sha256)' {hx(key(32, 4))} 128 sel src fd00::/16 dst fd00::/16
"""


def eth_oracles() -> dict:
    return {
        0x3001: SecurityAssociation(ESP, spi=0x3001, crypt_algo="AES-GCM", crypt_key=GCM_KEY,
                                    tunnel_header=IPv6(src="2001:db8::1", dst="2001:db8::2")),
        0x3002: SecurityAssociation(ESP, spi=0x3002, crypt_algo="AES-CBC", crypt_key=key(16, 3),
                                    auth_algo="SHA2-256-128", auth_key=key(32, 4),
                                    tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2")),
    }


def test_ethernet_in_ethernet_out(tmp_path):
    arp = raw(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:aa")
              / ARP(psrc="10.1.0.1", pdst="10.1.0.2"))
    inner = [udp4(n=1, size=2), tcp6("fd00::1", "fd00::2", 2), udp4(n=3, size=300),
             udp6("fd00::1", "fd00::2", 4)]
    frames = [ether(inner[0], 0, trailer=bytes(60 - 14 - len(inner[0]))),  # minimum frame
              ether(inner[1], 1), arp,
              ether(inner[2], 3, trailer=b"TRAILER!\xde\xad\xbe\xef"),
              ether(inner[3], 4)]
    enc = spu(tmp_path, "encrypt", ETH_SA, pcap(frames, LT_ETH))
    assert enc.out.linktype == LT_ETH
    assert enc.stats["packets_in"] == 5 and drops(enc.stats) == {"malformed": 1}
    oracles = eth_oracles()
    kept = [0, 1, 3, 4]
    assert len(enc.out.frames) == 4
    for out, i, pkt in zip(enc.out.frames, kept, inner):
        assert out[:12] == frames[i][:12]                 # the input frame's MAC addresses
        # IPv4 inner -> IPv6 tunnel and back: the EtherType follows the output IP version
        v6_outer = pkt[0] >> 4 == 4
        assert out[12:14] == (b"\x86\xdd" if v6_outer else b"\x08\x00")
        outer = parse_ip(out[14:])
        assert outer.version == (6 if v6_outer else 4)
        assert esp_open(oracles[outer[ESP].spi], outer) == pkt   # the trailer is not in it
    assert enc.out.ts == [T0 + i * 1_000_000 for i in kept]

    # decrypt: the ESP frames with an ARP frame in between and a trailer on one of them
    esp_frames = list(enc.out.frames)
    esp_frames[1] = esp_frames[1] + b"\0" * 7
    dec_in = esp_frames[:2] + [arp] + esp_frames[2:]
    dec = spu(tmp_path, "decrypt", ETH_SA, pcap(dec_in, LT_ETH))
    assert dec.out.linktype == LT_ETH
    assert dec.stats["packets_in"] == 5 and drops(dec.stats) == {"malformed": 1}
    assert len(dec.out.frames) == 4
    for out, i, pkt in zip(dec.out.frames, kept, inner):
        etype = b"\x86\xdd" if pkt[0] >> 4 == 6 else b"\x08\x00"
        assert out == frames[i][:12] + etype + pkt      # short frames are not padded


def test_raw_ip_in_raw_ip_out(tmp_path):
    var, alg = VARIANTS[0], ALGS[0]
    pkts = var.packets()
    enc = spu(tmp_path, "encrypt", var.sa_line(0x10, alg), pcap(pkts, LT_RAW))
    assert enc.out.linktype == LT_RAW and len(enc.out.frames) == len(pkts)
    dec = spu(tmp_path, "decrypt", var.sa_line(0x10, alg), enc.out_path)
    assert dec.out.linktype == LT_RAW and dec.out.frames == pkts


@pytest.mark.parametrize("fmt", ["pcap-le-us", "pcap-be-us", "pcap-le-ns", "pcap-be-ns",
                                 "pcapng-le-ns", "pcapng-be-us"])
def test_file_format_and_timestamps_kept(tmp_path, fmt):
    kind, order, res = fmt.split("-")
    big, nano = order == "be", res == "ns"
    linktype = LT_ETH if big else LT_RAW
    pkts = [udp4(n=n, size=n * 3) for n in range(6)]
    pkts[2] = udp4("10.7.0.1", "10.2.0.1", 2)                 # no_policy: skipped in the output
    step = 1_000_000_007 if nano else 1_000_001_000
    ts = [T0 + i * step for i in range(6)]
    ts[4], ts[5] = ts[5], ts[4]                               # out of order: kept as is
    frames = [ether(p, i) for i, p in enumerate(pkts)] if linktype == LT_ETH else pkts
    if kind == "pcap":
        data = pcap(frames, linktype, ts, big_endian=big, nano=nano)
    else:
        data = pcapng(frames, linktype, ts, big_endian=big, tsresol=9 if nano else 6)
    sa = (f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x20 mode tunnel "
          f"aead 'rfc4106(gcm(aes))' {hx(GCM_KEY)} 128 sel src 10.1.0.0/16 dst 10.2.0.0/16\n")
    enc = spu(tmp_path, "encrypt", sa, data)
    dec = spu(tmp_path, "decrypt", sa, enc.out_path)
    kept = [0, 1, 3, 4, 5]
    for res_ in (enc, dec):
        head = res_.out.head
        if kind == "pcap":
            assert head[:4] == data[:4]                       # byte order and ts resolution
        else:
            assert head[:4] == data[:4] and head[8:12] == data[8:12]   # SHB, byte order
        assert res_.out.linktype == linktype
        assert res_.out.ts == [ts[i] for i in kept]
    assert drops(enc.stats) == {"no_policy": 1} and not drops(dec.stats)
    assert dec.out.frames == [frames[i] for i in kept]


@pytest.mark.parametrize("cut", ["pcap-in-header", "pcap-in-data", "pcapng-in-block"])
@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_truncated_last_record(tmp_path, cut, direction):
    sa = (f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x20 mode tunnel "
          f"aead 'rfc4106(gcm(aes))' {hx(GCM_KEY)} 128\n")
    pkts = [udp4(n=n, size=40) for n in range(6)]
    if direction == "decrypt":
        oracle = SecurityAssociation(ESP, spi=0x20, crypt_algo="AES-GCM", crypt_key=GCM_KEY,
                                     tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))
        frames = [raw(oracle.encrypt(IP(p))) for p in pkts]
    else:
        frames = pkts
    if cut.startswith("pcapng"):
        data = pcapng(frames)
        data = data[:-(len(frames[-1]) + 32) // 2]           # the last EPB cut in half
    else:
        data = pcap(frames)
        data = data[:-(len(frames[-1]) + 16 - 9)] if cut == "pcap-in-header" \
            else data[:-len(frames[-1]) // 2]
    res = spu(tmp_path, direction, sa, data)
    assert res.stats["packets_in"] == 6 and res.stats["packets_out"] == 5
    assert drops(res.stats) == {"malformed": 1}
    assert res.stderr.count("\n") == 1 and "warning" in res.stderr.lower(), res.stderr
    assert len(res.out.frames) == 5
    if direction == "decrypt":
        assert res.out.frames == pkts[:5]


# =========================================================================================
# decrypt drop reasons, seq_exhausted, ESN
# =========================================================================================

DEC_SA = f"""\
src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x2001 mode tunnel \\
    aead 'rfc4106(gcm(aes))' {hx(GCM_KEY)} 128 sel src 10.1.0.0/16 dst 10.2.0.0/16
src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x2002 mode tunnel \\
    aead 'rfc4106(gcm(aes))' {hx(key(20, 5))} 128 encap espinudp 4500 4500 0.0.0.0
"""


def test_decrypt_drop_reasons(tmp_path):
    sa1 = SecurityAssociation(ESP, spi=0x2001, crypt_algo="AES-GCM", crypt_key=GCM_KEY,
                              tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))
    sa2 = SecurityAssociation(ESP, spi=0x2002, crypt_algo="AES-GCM", crypt_key=key(20, 5),
                              tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"),
                              nat_t_header=UDP(sport=4500, dport=4500))
    unknown = SecurityAssociation(ESP, spi=0x9999, crypt_algo="AES-GCM", crypt_key=GCM_KEY,
                                  tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))

    def esp(seq, inner, sa=sa1):
        return raw(sa.encrypt(IP(inner), seq_num=seq))

    inner = {n: udp4("10.1.0.1", "10.2.0.1", n, size=n) for n in range(1, 20)}
    stray = udp4("10.9.0.1", "10.2.0.1", 50)                 # outside the SA's selector
    tampered = bytearray(esp(3, inner[3]))
    tampered[-20] ^= 0x01
    short = bytearray(esp(9, inner[9]))                       # shorter than its IP length
    bad_hdr = bytearray(esp(10, inner[10]))
    bad_hdr[0] = 0x44                                         # IHL 4: no IPv4 header
    case = [  # (input packet, expected outcome: an output packet or a drop reason)
        (esp(1, inner[1]), inner[1]),
        (esp(2, inner[2]), inner[2]),
        (esp(2, inner[2]), "replay"),                         # duplicate in the file
        (raw(unknown.encrypt(IP(inner[4]), seq_num=1)), "no_sa"),   # unknown SPI
        (udp4("10.1.0.1", "10.2.0.1", 5), "no_sa"),           # plain UDP, not to 4500
        (udp4("198.51.100.1", "192.0.2.2", 6), "no_sa"),
        (bytes(tampered), "auth_failed"),
        (esp(3, inner[3]), inner[3]),                         # auth failure did not use seq 3
        (esp(4, stray), "policy_mismatch"),
        (esp(4, inner[4]), "replay"),                         # ... but the mismatch did
        (esp4(gcm_esp(GCM_KEY, 0x2001, 5, b"tfc-dummy", 59)), "dummy"),
        (esp(5, inner[5]), "replay"),                         # the dummy used seq 5
        (esp4(gcm_esp(GCM_KEY, 0x2001, 6, b"", 59)), "dummy"),
        (raw(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4500, dport=4500)
             / Raw(b"\xff")), "keepalive"),
        (raw(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4500, dport=4500)
             / Raw(b"\0\0\0\0" + bytes(range(40)))), "no_sa"),   # IKE (non-ESP marker)
        (raw(sa2.encrypt(IP(inner[7]), seq_num=1)), inner[7]),   # ESP in UDP
        (esp4(struct.pack(">II", 0x2001, 7) + bytes(12)), "malformed"),   # too short
        (esp4(gcm_esp(GCM_KEY, 0x2001, 8, inner[8], 4, pad=b"\x01\x03")), "malformed"),
        (esp(8, inner[17]), "replay"),                        # the bad padding used seq 8
        (esp4(gcm_esp(GCM_KEY, 0x2001, 11, inner[11], 17)), "malformed"),  # nh 17, tunnel
        (bytes(short[:-10]), "malformed"),
        (bytes(bad_hdr), "malformed"),
        (bytes(range(0x10, 0x40)), "malformed"),              # not IP at all
        (esp4(gcm_esp(GCM_KEY, 0x2001, 0, inner[12], 4)), "replay"),    # seq 0 without ESN
        (esp(100, inner[13]), inner[13]),
        (esp(30, inner[14]), "replay"),                       # below the 64-packet window
        (esp(37, inner[15]), inner[15]),                      # the window's left edge
        (esp(36, inner[16]), "replay"),
    ]
    res = spu(tmp_path, "decrypt", DEC_SA, pcap([p for p, _ in case]))
    want_out = [o for _, o in case if isinstance(o, bytes)]
    want_drops: dict[str, int] = {}
    for _, o in case:
        if isinstance(o, str):
            want_drops[o] = want_drops.get(o, 0) + 1
    assert drops(res.stats) == want_drops
    assert res.stats["packets_in"] == len(case)
    assert res.out.frames == want_out
    assert res.out.ts == [T0 + i * 1_000_000 for i, (_, o) in enumerate(case)
                          if isinstance(o, bytes)]


def test_seq_exhausted_without_esn(tmp_path):
    sa = (f"src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x30 mode tunnel replay-oseq 0xfffffffe "
          f"aead 'rfc4106(gcm(aes))' {hx(GCM_KEY)} 128\n")
    pkts = [udp4(n=n) for n in range(5)]
    res = spu(tmp_path, "encrypt", sa, pcap(pkts))
    assert res.stats["packets_out"] == 1 and drops(res.stats) == {"seq_exhausted": 4}
    oracle = SecurityAssociation(ESP, spi=0x30, crypt_algo="AES-GCM", crypt_key=GCM_KEY,
                                 tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))
    check_esp(res.out.frames[0], pkts[0], VARIANTS[0], oracle, 0x30, 0xFFFFFFFF)


@pytest.mark.parametrize("alg", [aead_alg("rfc4106(gcm(aes))", 20, 128),
                                 enc_alg("cbc(aes)", 16, "hmac(sha256)", 128, trunc=True)],
                         ids=lambda a: a.id)
def test_esn_crosses_2_32_round_trip(tmp_path, alg):
    var = VARIANTS[0]
    sa = var.sa_line(0x40, alg, "flag esn replay-window 128 replay-oseq 0xfffffff0 "
                     "replay-seq 0xfffffff0")
    pkts = [udp4(n=n, size=n) for n in range(40)]
    enc = spu(tmp_path, "encrypt", sa, pcap(pkts))
    assert enc.stats["packets_out"] == 40 and not drops(enc.stats)
    oracle = var.scapy_sa(0x40, alg, esn_en=True)
    for i, (out, inner) in enumerate(zip(enc.out.frames, pkts, strict=True)):
        seq = 0xFFFFFFF1 + i
        check_esp(out, inner, var, oracle, 0x40, seq, esn_en=True, esn=seq >> 32)
    dec = spu(tmp_path, "decrypt", sa, enc.out_path)
    assert dec.out.frames == pkts and not drops(dec.stats)
    # With a 16-packet window: the first packet again is below the window, so it is taken
    # for the next 2^32 block and fails its ICV; the last one again is a plain replay.
    again = pcap(enc.out.frames + [enc.out.frames[0], enc.out.frames[-1]])
    dec = spu(tmp_path, "decrypt", sa.replace("replay-window 128", "replay-window 16"), again,
              tag="again")
    assert dec.out.frames == pkts
    assert drops(dec.stats) == {"auth_failed": 1, "replay": 1}


def test_ah_esn_crosses_2_32_round_trip(tmp_path):
    akey = key(20, 11)
    sa = ("src 192.0.2.1 dst 192.0.2.2 proto ah spi 0x41 mode tunnel flag esn replay-window 128 "
          f"replay-oseq 0xfffffff0 replay-seq 0xfffffff0 auth-trunc 'hmac(sha1)' {hx(akey)} 96\n")
    pkts = [udp4(n=n, size=n) for n in range(40)]
    enc = spu(tmp_path, "encrypt", sa, pcap(pkts))
    assert enc.stats["packets_out"] == 40 and not drops(enc.stats)
    for i, (out, inner) in enumerate(zip(enc.out.frames, pkts, strict=True)):
        seq = 0xFFFFFFF1 + i
        outer = IP(out)
        assert (outer.src, outer.dst, outer.proto) == ("192.0.2.1", "192.0.2.2", 51)
        assert (outer[AH].spi, outer[AH].seq) == (0x41, seq & 0xFFFFFFFF)
        oracle = SecurityAssociation(AH, spi=0x41, auth_algo="HMAC-SHA1-96", auth_key=akey,
                                     tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"),
                                     esn_en=True, esn=seq >> 32)
        assert raw(oracle.decrypt(outer)) == inner     # ICV verified, ESN high bits too
    dec = spu(tmp_path, "decrypt", sa, enc.out_path)
    assert dec.out.frames == pkts and not drops(dec.stats)
    again = pcap(enc.out.frames + [enc.out.frames[0], enc.out.frames[-1]])
    dec = spu(tmp_path, "decrypt", sa.replace("replay-window 128", "replay-window 16"), again,
              tag="again")
    assert dec.out.frames == pkts
    assert drops(dec.stats) == {"auth_failed": 1, "replay": 1}


def test_decrypt_replay_settings_tfc_and_ecn(tmp_path):
    k2 = key(16, 8)
    sa_text = f"""\
src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x61 mode tunnel replay-seq 100 \\
    aead 'rfc4106(gcm(aes))' {hx(GCM_KEY)} 128
src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x62 mode tunnel replay-window 0 \\
    aead 'rfc4106(gcm(aes))' {hx(GCM_KEY)} 128
src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x63 mode tunnel \\
    enc 'cbc(aes)' {hx(k2)} auth digest_null ""
"""
    tunnel = IP(src="192.0.2.1", dst="192.0.2.2")
    sa_a, sa_b = (SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=GCM_KEY,
                                      tunnel_header=tunnel) for spi in (0x61, 0x62))
    sa_c = SecurityAssociation(ESP, spi=0x63, crypt_algo="AES-CBC", crypt_key=k2,
                               tunnel_header=tunnel)
    p = {n: udp4(n=n, size=n) for n in range(1, 10)}
    ect0 = udp4(n=20, tos=0xB8 | 0x02)
    ce_outer = IP(raw(sa_a.encrypt(IP(ect0), seq_num=102)))
    ce_outer.tos |= 0x03                                      # CE on the way
    ce_outer.chksum = None
    ce_inner = IP(ect0)
    ce_inner.tos |= 0x03
    ce_inner.chksum = None

    def esp(sa, seq, inner):
        return raw(sa.encrypt(IP(inner), seq_num=seq))

    case = [
        (esp(sa_a, 100, p[1]), p[1]),        # replay-seq 100: right edge, nothing seen
        (esp(sa_a, 37, p[2]), p[2]),         # window of exactly 64: 37..100
        (esp(sa_a, 36, p[3]), "replay"),
        (esp(sa_a, 100, p[1]), "replay"),
        (esp4(gcm_esp(GCM_KEY, 0x61, 101, p[4] + bytes(27), 4)), p[4]),   # TFC padding
        (raw(ce_outer), raw(ce_inner)),      # RFC 6040: outer CE onto an ECT inner
        (esp(sa_b, 5, p[5]), p[5]),          # replay-window 0: no anti-replay
        (esp(sa_b, 5, p[5]), p[5]),
        (esp(sa_c, 5, p[6]), p[6]),          # no integrity: no replay checking
        (esp(sa_c, 5, p[6]), p[6]),
    ]
    res = spu(tmp_path, "decrypt", sa_text, pcap([c for c, _ in case]))
    assert drops(res.stats) == {"replay": 2}
    assert res.out.frames == [o for _, o in case if isinstance(o, bytes)]


# =========================================================================================
# Round trip with every algorithm of the contract
# =========================================================================================

@pytest.mark.parametrize("alg, var", ALG_CASES)
def test_round_trip_algorithm(tmp_path, alg, var):
    sa = var.sa_line(0x1234, alg)
    pkts = var.packets()
    ts = [T0 + i * 1_000_000 for i in range(len(pkts))]
    enc = spu(tmp_path, "encrypt", sa, pcap(pkts, ts=ts))
    assert enc.stats["packets_out"] == len(pkts) and not drops(enc.stats)
    oracle = var.scapy_sa(0x1234, alg)
    for i, (out, inner) in enumerate(zip(enc.out.frames, pkts, strict=True)):
        check_esp(out, inner, var, oracle, 0x1234, i + 1)
    dec = spu(tmp_path, "decrypt", sa, enc.out_path)
    assert not drops(dec.stats)
    assert dec.out.frames == pkts
    assert dec.out.ts == ts


def test_decrypt_of_scapy_encrypted_packets(tmp_path):
    """scapy encrypts (every algorithm it shares with us), `spu decrypt` recovers."""
    sa_text, frames, want = "", [], []
    var = VARIANTS[0]
    for i, alg in enumerate(ALGS):
        spi = 0x500 + i
        sa_text += var.sa_line(spi, alg)
        oracle = var.scapy_sa(spi, alg)
        for n, p in enumerate(var.packets()[:3]):
            if alg.crypt == "AES-GCM" and alg.crypt_icv != 16:
                # scapy writes the full 16-byte tag whatever its crypt_icv_size says
                esp = gcm_esp(alg.crypt_key, spi, n + 1, p, 41 if p[0] >> 4 == 6 else 4,
                              icv=alg.crypt_icv)
                frames.append(esp4(esp, var.src, var.dst))
            else:
                frames.append(raw(oracle.encrypt(parse_ip(p), seq_num=n + 1)))
            want.append(p)
    res = spu(tmp_path, "decrypt", sa_text, pcap(frames))
    assert not drops(res.stats)
    assert res.out.frames == want


# =========================================================================================
# 1,000,000 packets stream through in bounded memory
# =========================================================================================

def write_bulk_pcap(path: Path, n: int, size: int = 80) -> None:
    """n IPv4/UDP packets of `size` bytes (checksums valid) as one pcap, built with numpy."""
    rec = np.zeros(n, np.dtype([("sec", "<u4"), ("usec", "<u4"), ("incl", "<u4"),
                                ("orig", "<u4"), ("pkt", "u1", (size,))]))
    i = np.arange(n, dtype=np.int64)
    t = T0 // 1000 + i * 7                                    # microseconds
    rec["sec"], rec["usec"] = t // 10**6, t % 10**6
    rec["incl"] = rec["orig"] = size
    tmpl = np.frombuffer(raw(IP(src="10.1.0.0", dst="10.2.0.1", flags="DF", chksum=0)
                             / UDP(sport=1, dport=53, chksum=0) / Raw(bytes(size - 28))),
                         np.uint8)
    pkt = rec["pkt"]
    pkt[:] = tmpl
    pkt[:, 4], pkt[:, 5] = i >> 8 & 0xFF, i & 0xFF            # IP id
    pkt[:, 14], pkt[:, 15] = i >> 8 & 0xFF, i & 0xFF          # source 10.1.x.y
    pkt[:, 20], pkt[:, 21] = i >> 16 & 0xFF, i >> 8 & 0xFF    # UDP source port
    pkt[:, 28:36] = i.astype(">u8").view(np.uint8).reshape(n, 8)   # payload: the index
    words = pkt[:, 0:20:2].astype(np.uint32) << 8 | pkt[:, 1:20:2]
    s = words.sum(axis=1)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    csum = ~s & 0xFFFF
    pkt[:, 10], pkt[:, 11] = csum >> 8, csum & 0xFF
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LT_RAW))
        rec.tofile(f)


# Runs one command and reports its exit status and peak RSS. It must be a fresh, small
# process: Linux carries an mm's RSS high-water mark across execve, and subprocess forks
# (vfork) from this test process, so measuring the child directly from here would report
# at least pytest's own peak (scapy, the generated capture) instead of spu's.
_LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def run_measured(*args) -> tuple[int, float, int, str]:
    """(exit status, seconds, peak RSS in MB, stderr) of one `spu` process."""
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, sys.executable, "-m", "engine.cli",
                           *map(str, args)], cwd=REPO, capture_output=True, text=True)
    elapsed = time.monotonic() - t
    assert proc.returncode == 0, proc.stderr
    rc, maxrss_kb = map(int, proc.stdout.split("\n")[-2].split())
    return rc, elapsed, maxrss_kb // 1024, proc.stderr


def same_file(a: Path, b: Path, chunk: int = 1 << 24) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


RSS_LIMIT_MB = 600


@pytest.mark.slow
def test_million_packets_bounded_memory(tmp_path):
    """1,000,000 packets through `spu encrypt` and `spu decrypt`: peak RSS stays bounded.

    Two bounds: an absolute one, and the growth over the same command on a 1,000-packet
    capture must stay below the input file's size (a tool that held the whole input, let
    alone input and output, would exceed it). Durations are printed, never asserted.
    """
    n = 1_000_000
    src, enc, dec = tmp_path / "in.pcap", tmp_path / "enc.pcap", tmp_path / "dec.pcap"
    small = tmp_path / "small.pcap"
    write_bulk_pcap(src, n)
    write_bulk_pcap(small, 1000)
    sa = tmp_path / "sa"
    sa.write_text("src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x77 mode tunnel "
                  f"replay-window 1024 flag esn aead 'rfc4106(gcm(aes))' {hx(GCM_KEY)} 128 "
                  "sel src 10.1.0.0/16 dst 10.2.0.0/16\n")
    rc, _, base_rss, err = run_measured("encrypt", "--sa", sa, small, tmp_path / "small.out")
    assert rc == 0, err
    report = [f"spu encrypt: 1000 packets, peak RSS {base_rss} MB"]
    for direction, a, b in (("encrypt", src, enc), ("decrypt", enc, dec)):
        st = tmp_path / f"{direction}.json"
        rc, secs, rss, err = run_measured(direction, "--sa", sa, a, b, "--stats-json", st)
        assert rc == 0 and "Traceback" not in err, err
        stats = json.loads(st.read_text())
        check_stats(stats)
        assert stats["packets_in"] == n and stats["packets_out"] == n, stats
        in_mb = a.stat().st_size / 2**20
        report.append(f"spu {direction}: {n} packets, input {in_mb:.0f} MB, "
                      f"output {b.stat().st_size / 2**20:.0f} MB, {secs:.1f} s, "
                      f"peak RSS {rss} MB")
        assert rss < RSS_LIMIT_MB, report
        assert rss - base_rss < in_mb, report
    print("\n" + "\n".join(report))
    assert same_file(src, dec)      # the decrypted capture is the original, byte for byte
