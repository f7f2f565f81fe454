"""The `spu bench` workload: algorithm suites, SAs, packets, IMIX.

Everything is generated here, deterministically (no capture files, no randomness that
changes a run's work): one tunnel-mode SA pair per suite between 192.0.2.1 and
192.0.2.2 (IPv4 outer), protecting IPv4 UDP packets from 10.1.0.0/16 to 10.2.0.0/16.

A suite is named the way SA lines name algorithms (engine/algorithms.py), with key and
ICV sizes in bits after slashes:

    CIPHER[/KEYBITS[/ICVBITS]][+AUTH[/ICVBITS]]

    rfc4106(gcm(aes))/128               AES-128-GCM, 16-byte ICV (the AEAD's largest)
    rfc4106(gcm(aes))/256/64            AES-256-GCM with an 8-byte ICV
    cbc(aes)/128+hmac(sha1)/96          AES-128-CBC with HMAC-SHA1-96
    rfc7539esp(chacha20,poly1305)       one key size: no /KEYBITS needed
    hmac(sha256)                        ecb(cipher_null) with HMAC-SHA-256-128

Defaults: the smallest key size, an AEAD's largest ICV, an HMAC's RFC truncation
(AuthSpec.rfc_bits). `Suite.name` is the canonical spelling written to reports.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Optional, Union

from engine.algorithms import AUTHS, CIPHERS, Auth
from engine.sa import MODE_TUNNEL, PROTO_ESP, SAConfig, Selector

#: What `spu bench` measures when --suites is not given.
DEFAULT_SUITES = ("rfc4106(gcm(aes))/128", "cbc(aes)/128+hmac(sha1)/96",
                  "cbc(aes)/256+hmac(sha256)/128", "rfc7539esp(chacha20,poly1305)")

#: `--suites all`: every cipher and every integrity algorithm of engine/algorithms.py at
#: least once, in a plausible pairing.
ALL_SUITES = DEFAULT_SUITES + (
    "rfc4106(gcm(aes))/256", "rfc4543(gcm(aes))/128", "rfc3686(ctr(aes))/128+hmac(sha256)/128",
    "cbc(aes)/256+hmac(sha512)/256", "cbc(aes)/192+hmac(sha384)/192",
    "cbc(des3_ede)+hmac(sha1)/96", "cbc(des)+hmac(md5)/96",
    "ecb(cipher_null)+hmac(sha1)/96")

#: Packet sizes (IP packet bytes before encryption) when --sizes is not given.
DEFAULT_SIZES: tuple[Union[int, str], ...] = (64, 128, 256, 512, 1024, 1400, 1500, "imix")

#: Simple IMIX: 7 x 64, 4 x 576, 1 x 1500 bytes (IP packet sizes), interleaved.
IMIX = ((64, 7), (576, 4), (1500, 1))
#: One period of the IMIX pattern, spread out rather than in runs of equal sizes.
IMIX_PATTERN = (64, 576, 64, 64, 576, 64, 1500, 64, 576, 64, 64, 576)

MIN_SIZE = 28          # IPv4 + UDP headers
MAX_SIZE = 65535 - 100  # room for the outer header, ESP header, IV, padding and ICV

OUTER_SRC, OUTER_DST = "192.0.2.1", "192.0.2.2"
INNER_SRC, INNER_DST = "10.1.0.0/16", "10.2.0.0/16"
BENCH_SPI = 0x0000B001


class SuiteError(ValueError):
    """A bad suite name; str() is a one-line message."""


@dataclass(frozen=True)
class Suite:
    """One algorithm suite: what the SA lines of both ends say about the transform."""
    cipher: str                 # a key of engine.algorithms.CIPHERS
    key_bits: int               # cipher key without salt/nonce
    auth: Optional[str]         # a key of AUTHS, None for an AEAD or no integrity
    icv_bits: int

    @property
    def aead(self) -> bool:
        return CIPHERS[self.cipher].aead

    @property
    def name(self) -> str:
        spec = CIPHERS[self.cipher]
        text = self.cipher
        if len(spec.key_sizes) > 1:
            text += f"/{self.key_bits}"
        if spec.aead and self.icv_bits != max(spec.icv_bits):
            text += f"/{self.icv_bits}"
        if self.auth:
            text += f"+{self.auth}/{self.icv_bits}"
        return text

    def sa(self, spi: int = BENCH_SPI) -> SAConfig:
        """The SA both bench engines install (one "out", one "in"): tunnel, IPv4, no ESN,
        replay window 1024, a selector for the bench traffic. Keys are fixed, public bytes."""
        spec = CIPHERS[self.cipher]
        kbytes = self.key_bits // 8 + spec.salt_len
        kw: dict = {}
        if spec.aead:
            kw.update(aead=self.cipher, aead_key=_key(kbytes, 1), icv_bits=self.icv_bits)
        else:
            kw.update(enc=self.cipher, enc_key=_key(kbytes, 2))
            if self.auth:
                kw.update(auth=self.auth, auth_key=_key(AUTHS[self.auth].digest_len, 3),
                          icv_bits=self.icv_bits)
        sel = Selector(ipaddress.ip_network(INNER_SRC), ipaddress.ip_network(INNER_DST))
        return SAConfig(src=ipaddress.ip_address(OUTER_SRC), dst=ipaddress.ip_address(OUTER_DST),
                        proto=PROTO_ESP, spi=spi, mode=MODE_TUNNEL, replay_window=1024,
                        sel=sel, **kw)


def _key(n: int, seed: int) -> bytes:
    """Deterministic key bytes (public: benchmark only)."""
    return bytes((seed * 59 + 13 * i) & 0xFF for i in range(n))


def _bits(text: str, what: str) -> int:
    if not text.isdigit():
        raise SuiteError(f"bad {what} {text!r} (expected a number of bits)")
    return int(text)


def parse_suite(text: str) -> Suite:
    """A Suite from `CIPHER[/KEYBITS[/ICVBITS]][+AUTH[/ICVBITS]]` (module docstring)."""
    text = text.strip()
    # '+' never occurs inside a Linux algorithm name; '/' neither, so both split safely.
    enc_part, _, auth_part = text.partition("+")
    cname, *cnums = enc_part.split("/")
    if cname in AUTHS and not auth_part:          # `hmac(sha1)[/96]` alone: no cipher
        cname, auth_part, cnums = "ecb(cipher_null)", enc_part, []
    spec = CIPHERS.get(cname)
    if spec is None:
        raise SuiteError(f"unknown cipher {cname!r} in suite {text!r} "
                         f"(known: {', '.join(CIPHERS)}; or an auth name alone)")
    if len(cnums) > (2 if spec.aead else 1):
        raise SuiteError(f"suite {text!r}: too many /numbers after {cname!r}")
    key_sizes = [(k - spec.salt_len) * 8 for k in spec.key_sizes]
    key_bits = _bits(cnums[0], "key size") if cnums else key_sizes[0]
    if key_bits not in key_sizes:
        raise SuiteError(f"suite {text!r}: {cname} keys are {key_sizes} bits, not {key_bits}")
    if spec.aead:
        if auth_part:
            raise SuiteError(f"suite {text!r}: {cname} is an AEAD, it takes no +auth")
        icv = _bits(cnums[1], "ICV size") if len(cnums) > 1 else max(spec.icv_bits)
        if icv not in spec.icv_bits:
            raise SuiteError(f"suite {text!r}: {cname} ICVs are {list(spec.icv_bits)} bits")
        return Suite(cname, key_bits, None, icv)
    if not auth_part:
        return Suite(cname, key_bits, None, 0)
    aname, *anums = auth_part.split("/")
    aspec = AUTHS.get(aname)
    if aspec is None:
        raise SuiteError(f"unknown auth {aname!r} in suite {text!r} (known: {', '.join(AUTHS)})")
    if aspec.id == Auth.NONE:
        return Suite(cname, key_bits, None, 0)
    if len(anums) > 1:
        raise SuiteError(f"suite {text!r}: too many /numbers after {aname!r}")
    icv = _bits(anums[0], "ICV size") if anums else aspec.rfc_bits
    if icv % 8 or not 32 <= icv <= aspec.digest_len * 8:
        raise SuiteError(f"suite {text!r}: {aname} ICV must be a multiple of 8 in "
                         f"32..{aspec.digest_len * 8} bits")
    return Suite(cname, key_bits, aname, icv)


def parse_suites(text: str) -> list[Suite]:
    """`--suites`: comma-free names separated by ';' or whitespace, or 'default' / 'all'.

    Algorithm names contain commas (rfc7539esp(chacha20,poly1305)), so a comma only
    separates suites outside parentheses."""
    names: list[str] = []
    for part in _split_top(text):
        if part == "default":
            names += DEFAULT_SUITES
        elif part == "all":
            names += ALL_SUITES
        else:
            names.append(part)
    suites: list[Suite] = []
    for n in names:
        s = parse_suite(n)
        if s not in suites:
            suites.append(s)
    if not suites:
        raise SuiteError("no suite given")
    return suites


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if depth == 0 and (ch in ",;" or ch.isspace()):
            if cur:
                parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        parts.append(cur)
    return parts


def parse_sizes(text: str) -> list[Union[int, str]]:
    """`--sizes 64,1400,imix`: IP packet sizes in bytes, or 'imix'; 'default' for all."""
    out: list[Union[int, str]] = []
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        items = DEFAULT_SIZES if part == "default" else (part,)
        for item in items:
            if item == "imix":
                size: Union[int, str] = "imix"
            elif isinstance(item, int) or item.isdigit():
                size = int(item)
                if not MIN_SIZE <= size <= MAX_SIZE:
                    raise SuiteError(f"size {size} out of range {MIN_SIZE}..{MAX_SIZE}")
            else:
                raise SuiteError(f"bad size {item!r} (bytes, or 'imix')")
            if size not in out:
                out.append(size)
    if not out:
        raise SuiteError("no size given")
    return out


# ---------------------------------------------------------------------------------------
# packets
# ---------------------------------------------------------------------------------------
def ipv4_checksum(hdr: bytes) -> int:
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


_FILL = bytes(range(256)) * 257       # payload bytes: a slice at offset k & 0xFF


def udp_packet(size: int, k: int = 0) -> bytes:
    """An IPv4/UDP packet of exactly `size` bytes, flow k (addresses and ports vary with k)."""
    src = bytes([10, 1, (k >> 8) & 0xFF, k & 0xFF])
    dst = bytes([10, 2, 0, k % 250 + 1])
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, k & 0xFFFF, 0x4000, 64, 17, 0,
                               src, dst))
    struct.pack_into("!H", ip, 10, ipv4_checksum(bytes(ip)))
    udp = struct.pack("!HHHH", 1024 + k % 4096, 4791, size - 20, 0)   # checksum 0: IPv4 allows
    j = k & 0xFF
    return bytes(ip) + udp + _FILL[j:j + size - 28]


def size_list(size: Union[int, str], n: int) -> list[int]:
    """Packet sizes of a batch of n: all `size`, or the IMIX pattern repeated."""
    if size == "imix":
        return [IMIX_PATTERN[i % len(IMIX_PATTERN)] for i in range(n)]
    return [int(size)] * n


def packets(size: Union[int, str], n: int) -> list[bytes]:
    """n plaintext packets for one bench case (distinct flows, same SA)."""
    return [udp_packet(s, k) for k, s in enumerate(size_list(size, n))]


def imix_mean() -> float:
    return sum(s * w for s, w in IMIX) / sum(w for _, w in IMIX)
