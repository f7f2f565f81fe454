"""Hostile input never crashes the engine and lands in the right drop counter.

Valid ESP and AH packets are built with the engine's own encrypt, then mutated: truncated at every
length, bit-flipped anywhere (outer IP header, UDP, ESP header, IV, ciphertext, ICV, Ethernet
trailer), extended with garbage, given bad IPv4/IPv6 headers, IPv6 extension-header chains
(loops, huge lengths, fragments) or short UDP headers, or replaced by random bytes. Each batch
mixes them with untouched packets and with pre-dropped "guard" packets, and leaves unused
canary bytes between slots. After one decrypt:

- nothing outside the slots of live packets changed (canaries and guard slots intact), and
  every packet's (off, length) stays inside its slot;
- every untouched packet comes out as the original plaintext;
- every mutated packet is dropped with a reason allowed for what was mutated, or, where the
  mutation is harmless (trailer bytes, unauthenticated outer fields), comes out as the
  plaintext the engine must then produce (RFC 6040 ECN in tunnel mode; the received outer
  header in transport mode);
- packets_in == packets_out + sum(dropped), each reason counted once, per-SA counters add up.

The encrypt direction gets garbage plaintexts, huge packets and batches without room. Every
test runs on each crypto backend (OpenSSL, and Intel multi-buffer where built). Oracles follow
CONTRACT-SPU.md ("decrypt", "Settled details") and RFC 4302 / 4303 / 3948 / 6040 / 8200.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import backends
from engine.algorithms import CIPHERS
from engine.batch import PacketBatch
from engine.drops import Drop
from engine.engine import Engine
from engine.sa import MODE_TRANSPORT, MODE_TUNNEL, PROTO_AH, PROTO_ESP, SAConfig, Selector

ip = ipaddress.ip_address
net = ipaddress.ip_network

MALFORMED, NO_SA, AUTH, REPLAY = Drop.MALFORMED, Drop.NO_SA, Drop.AUTH_FAILED, Drop.REPLAY
POLICY, KEEPALIVE, NO_POLICY = Drop.POLICY_MISMATCH, Drop.KEEPALIVE, Drop.NO_POLICY
HOPOPT, ROUTING, FRAGMENT, DSTOPTS, NONXT = 0, 43, 44, 60, 59
P_ICMP, P_TCP, P_UDP, P_ESP, P_ICMP6 = 1, 6, 17, 50, 58
ENCAP_PORT = 4500
GAP = 256            # unused canary bytes after every slot

HYPO = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------------------
# SAs under test (arbitrary keys; fields as `ip xfrm state add` keywords, see engine/sa.py)
# ---------------------------------------------------------------------------------------
def _key(n: int, seed: int) -> bytes:
    return bytes((seed * 31 + k * 7) & 0xFF for k in range(n))


@dataclass
class Spec:
    name: str
    cfg: SAConfig
    inner: tuple[int, ...] = (4, 6)     # tunnel: inner IP versions to send
    proto: int = 0                      # fixed upper protocol (selector), 0 = any

    @property
    def tunnel(self) -> bool:
        return self.cfg.mode == MODE_TUNNEL

    @property
    def encap(self) -> bool:
        return self.cfg.encap_dport is not None

    @property
    def ah(self) -> bool:
        return self.cfg.proto == PROTO_AH

    @property
    def iv(self) -> int:
        return CIPHERS[self.cfg.aead or self.cfg.enc].iv_len

    @property
    def icv(self) -> int:
        return self.cfg.icv_bits // 8


V4 = dict(src=ip("192.0.2.1"), dst=ip("192.0.2.2"))
V6 = dict(src=ip("2001:db8::1"), dst=ip("2001:db8::2"))
ENCAP = dict(encap_sport=ENCAP_PORT, encap_dport=ENCAP_PORT)
CBC_SHA1 = dict(enc="cbc(aes)", enc_key=_key(16, 1), auth="hmac(sha1)", auth_key=_key(20, 2),
                icv_bits=96)
GCM = dict(aead="rfc4106(gcm(aes))", aead_key=_key(20, 3), icv_bits=128)
CHACHA = dict(aead="rfc7539esp(chacha20,poly1305)", aead_key=_key(36, 4), icv_bits=128)


def _sa(spi: int, mode: int, addrs: dict, proto: int = PROTO_ESP, **kw) -> SAConfig:
    return SAConfig(proto=proto, spi=spi, mode=mode, **addrs, **kw)


# SPIs differ in single bits on purpose: a flipped SPI sometimes finds another SA.
SPECS = [
    Spec("cbc-sha1-tunnel-v4", _sa(0x1001, MODE_TUNNEL, V4, **CBC_SHA1)),
    Spec("gcm-tunnel-v6", _sa(0x1003, MODE_TUNNEL, V6, **GCM)),
    Spec("chacha-transport-v4", _sa(0x1005, MODE_TRANSPORT, V4, **CHACHA)),
    Spec("null-sha256-transport-v6", _sa(
        0x1007, MODE_TRANSPORT, V6, enc="ecb(cipher_null)", enc_key=b"",
        auth="hmac(sha256)", auth_key=_key(32, 5), icv_bits=128)),
    Spec("esn-cbc-sha256-tunnel-v4", _sa(
        0x1009, MODE_TUNNEL, V4, enc="cbc(aes)", enc_key=_key(32, 6), auth="hmac(sha256)",
        auth_key=_key(32, 7), icv_bits=128, esn=True, oseq=0xFFFFFFFC, seq=0xFFFFFFFC,
        replay_window=128)),   # sequence numbers cross the 2^32 boundary
    Spec("udp-gcm64-tunnel-v4", _sa(0x100B, MODE_TUNNEL, V4, **ENCAP, aead="rfc4106(gcm(aes))",
                                    aead_key=_key(36, 8), icv_bits=64)),
    Spec("udp-cbc-sha1-transport-v6", _sa(0x100D, MODE_TRANSPORT, V6, **ENCAP, **CBC_SHA1)),
    Spec("3des-md5-transport-v4-sel", _sa(
        0x100F, MODE_TRANSPORT, dict(src=ip("192.0.2.3"), dst=ip("192.0.2.2")),
        enc="cbc(des3_ede)", enc_key=_key(24, 9), auth="hmac(md5)", auth_key=_key(16, 10),
        icv_bits=96, sel=Selector(net("192.0.2.3/32"), net("192.0.2.2/32")))),
    Spec("gmac-tunnel-v4-sel", _sa(
        0x1011, MODE_TUNNEL, V4, aead="rfc4543(gcm(aes))", aead_key=_key(20, 11),
        icv_bits=128, sel=Selector(net("10.1.0.0/16"), net("10.2.0.0/16"), P_UDP)),
        inner=(4,), proto=P_UDP),
    Spec("ctr-sha512-tunnel-v6", _sa(
        0x1013, MODE_TUNNEL, V6, enc="rfc3686(ctr(aes))", enc_key=_key(20, 12),
        auth="hmac(sha512)", auth_key=_key(64, 13), icv_bits=256)),
    Spec("udp-chacha-transport-v4", _sa(0x1015, MODE_TRANSPORT, V4, **ENCAP, **CHACHA)),
    Spec("udp-null-sha1-tunnel-v6", _sa(
        0x1017, MODE_TUNNEL, V6, **ENCAP, enc="ecb(cipher_null)", enc_key=b"",
        auth="hmac(sha1)", auth_key=_key(20, 14), icv_bits=96)),
    # AH (RFC 4302): the outer header's immutable fields are authenticated too
    Spec("ah-sha1-tunnel-v4", _sa(0x1019, MODE_TUNNEL, V4, PROTO_AH, auth="hmac(sha1)",
                                  auth_key=_key(20, 15), icv_bits=96)),
    Spec("ah-sha256-transport-v6", _sa(0x101B, MODE_TRANSPORT, V6, PROTO_AH,
                                       auth="hmac(sha256)", auth_key=_key(32, 16),
                                       icv_bits=128)),
    Spec("ah-esn-md5-transport-v4", _sa(
        0x101D, MODE_TRANSPORT, V4, PROTO_AH, auth="hmac(md5)", auth_key=_key(16, 17),
        icv_bits=96, esn=True, oseq=0xFFFFFFFE, seq=0xFFFFFFFE)),
]


#: Every native crypto backend gets the same hostile input: OpenSSL alone, and "auto"
#: (Intel multi-buffer for the SAs it runs) where that library was built.
BACKENDS = ["openssl"] + (["auto"] if backends.IPSEC_MB is not None else [])


def engines(specs=SPECS, backend: str = "openssl", out_backend: str | None = None):
    """Fresh outbound and inbound engines with every spec installed: [(out, in) handle]."""
    out, inb = Engine(backend=out_backend or backend), Engine(backend=backend)
    handles = [(out.install(sp.cfg, "out"), inb.install(sp.cfg, "in")) for sp in specs]
    return out, inb, handles


# ---------------------------------------------------------------------------------------
# Packet building (plain bytes, so the oracle below sees every field)
# ---------------------------------------------------------------------------------------
def csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def fix_ipv4_csum(p: bytearray) -> None:
    hl = (p[0] & 0x0F) * 4
    hl = min(hl if hl >= 20 else 20, len(p))
    p[10:12] = b"\0\0"
    p[10:12] = struct.pack("!H", csum(bytes(p[:hl])))


def ipv4(src, dst, proto, payload, tos=0, ident=0, df=False, ttl=64, options=b"") -> bytes:
    ihl = 5 + len(options) // 4
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, ihl * 4 + len(payload), ident,
                              0x4000 if df else 0, ttl, proto, 0, src.packed, dst.packed))
    h += options
    fix_ipv4_csum(h)
    return bytes(h) + payload


def ipv6(src, dst, nh, payload, tclass=0, flow=0, hlim=64) -> bytes:
    return struct.pack("!IHBB16s16s", (6 << 28) | (tclass << 20) | flow, len(payload), nh, hlim,
                       src.packed, dst.packed) + payload


def l4(proto: int, body: bytes, sport: int, dport: int) -> bytes:
    if proto == P_UDP:
        return struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
    if proto == P_TCP:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x18, 512, 0, 0) + body
    return struct.pack("!BBHI", 8, 0, 0, sport) + body      # ICMP / ICMPv6 echo


@st.composite
def plaintexts(draw, sp: Spec) -> bytes:
    """A valid plaintext for SA `sp` (inside its selector; transport: the SA's addresses)."""
    ver = draw(st.sampled_from(sp.inner)) if sp.tunnel else sp.cfg.dst.version
    proto = sp.proto or draw(st.sampled_from([P_UDP, P_TCP, P_ICMP if ver == 4 else P_ICMP6]))
    n = draw(st.one_of(st.integers(0, 80), st.integers(0, 1500)))
    body = bytes(draw(st.binary(min_size=n, max_size=n)) if n < 64 else
                 (np.arange(n) * draw(st.integers(1, 255)) & 0xFF).astype(np.uint8).tobytes())
    payload = l4(proto, body, draw(st.integers(1, 65535)), draw(st.integers(1, 65535)))
    tos = draw(st.integers(0, 255))
    if sp.tunnel:
        host = draw(st.integers(1, 250))
        if ver == 4:
            src, dst = ip(f"10.1.0.{host}"), ip(f"10.2.3.{host}")
        else:
            src, dst = ip(f"2001:db8:1::{host:x}"), ip(f"2001:db8:2::{host:x}")
    else:
        src, dst = sp.cfg.src, sp.cfg.dst
    if ver == 4:
        opts = draw(st.sampled_from([b"", b"", b"\x01" * 4, b"\x01" * 40]))
        return ipv4(src, dst, proto, payload, tos=tos, ident=draw(st.integers(0, 65535)),
                    df=draw(st.booleans()), ttl=draw(st.integers(1, 255)), options=opts)
    return ipv6(src, dst, proto, payload, tclass=tos, flow=draw(st.integers(0, 0xFFFFF)),
                hlim=draw(st.integers(1, 255)))


# ---------------------------------------------------------------------------------------
# Batches with canaries, guards and the out-of-slot check
# ---------------------------------------------------------------------------------------
@dataclass
class Built:
    batch: PacketBatch
    before: np.ndarray
    keep: np.ndarray            # bytes that must not change: outside live slots
    guards: np.ndarray          # bool per packet: pre-dropped on entry
    guard_meta: tuple


def build(pkts: list[bytes], pre_drop: list[int], seed: int, sa: list[int] | None = None) -> Built:
    n = len(pkts)
    b = PacketBatch(max(1, n), data_bytes=sum(map(len, pkts)) + n * GAP + 64)
    b.buf[:] = np.random.default_rng(seed).integers(0, 256, b.buf.size, dtype=np.uint8)
    for k, (p, d) in enumerate(zip(pkts, pre_drop)):
        i = b.add(p)
        b.drop[i] = d
        if sa is not None:
            b.sa[i] = sa[k]
        b.used += GAP                     # a canary gap outside every slot
    guards = np.array([d != 0 for d in pre_drop], bool)
    keep = np.ones(b.buf.size, bool)
    for i in range(n):
        if not guards[i]:
            keep[b.slot_start[i]:b.slot_end[i]] = False
    meta = (b.off[:n].copy(), b.length[:n].copy(), b.drop[:n].copy())
    return Built(b, b.buf.copy(), keep, guards, meta)


def check_slots(bt: Built) -> None:
    b, n = bt.batch, bt.batch.count
    changed = np.flatnonzero((b.buf != bt.before) & bt.keep)
    assert changed.size == 0, f"bytes written outside live slots at {changed[:10]}"
    assert np.all(b.off[:n] >= b.slot_start[:n]), "off left its slot"
    assert np.all(b.off[:n] + b.length[:n] <= b.slot_end[:n]), "packet end left its slot"
    assert np.all(b.length[:n] >= 0)
    off, length, drop = bt.guard_meta
    g = bt.guards
    assert np.array_equal(b.off[:n][g], off[g]) and np.array_equal(b.length[:n][g], length[g])
    assert np.array_equal(b.drop[:n][g], drop[g]), "a pre-set drop reason was changed"


def check_counters(eng: Engine, batches: list[tuple[PacketBatch, np.ndarray]]) -> None:
    """Global and per-SA counters against the batches' drop / sa / length arrays."""
    drops = np.concatenate([b.drop[:b.count] for b, _ in batches])
    sas = np.concatenate([b.sa[:b.count] for b, _ in batches])
    lens = np.concatenate([b.length[:b.count] for b, _ in batches])
    pre = np.concatenate([g for _, g in batches])
    st_ = eng.stats()
    assert st_["packets_in"] == drops.size
    assert st_["packets_out"] == int(np.count_nonzero(drops == 0))
    assert st_["packets_in"] == st_["packets_out"] + sum(st_["dropped"].values())
    for d in Drop:
        if d is not Drop.NONE:
            assert st_["dropped"][d.name.lower()] == int(np.count_nonzero(drops == d)), d
    attributed = np.zeros(len(Drop), np.int64)
    for h in eng.handles():
        ss = eng.sa_stats(h)
        mine = (sas == h) & ~pre
        assert ss["packets"] == int(np.count_nonzero(mine & (drops == 0))), (h, ss)
        assert ss["bytes"] == int(lens[mine & (drops == 0)].sum()), (h, ss)
        for d in Drop:
            if d is not Drop.NONE:
                got = ss["dropped"][d.name.lower()]
                assert got == int(np.count_nonzero(mine & (drops == d))), (h, d, ss)
                attributed[d] += got
    for d in Drop:
        if d is not Drop.NONE:
            unattributed = int(np.count_nonzero((drops == d) & ((sas < 0) | pre)))
            assert attributed[d] + unattributed == st_["dropped"][d.name.lower()], d


def encrypt_all(out: Engine, pts: list[bytes], handles: list[int]) -> list[bytes]:
    b = PacketBatch.from_packets(pts)
    b.sa[:len(pts)] = handles
    out.encrypt(b)
    assert not b.drop[:b.count].any(), [Drop(x).name for x in b.drop[:b.count]]
    return b.packets()


# ---------------------------------------------------------------------------------------
# Oracle: what the engine may do with a mutated packet
# ---------------------------------------------------------------------------------------
@dataclass
class Case:
    pkt: bytes
    allowed: set = field(default_factory=set)     # drop reasons allowed
    expect: set = field(default_factory=set)      # outputs allowed if not dropped
    what: str = ""


@dataclass
class Layout:
    ver: int
    hl: int        # outer IP header (+ extension headers)
    esp: int       # ESP (or AH) header offset
    end: int       # IP total length
    nh_off: int    # byte naming the ESP/UDP protocol


def layout(sp: Spec, ct: bytes) -> Layout:
    ver = ct[0] >> 4
    hl = (ct[0] & 0x0F) * 4 if ver == 4 else 40
    return Layout(ver, hl, hl + (8 if sp.encap else 0), len(ct), 9 if ver == 4 else 6)


def set_lengths(p: bytearray, lay: Layout) -> bytearray:
    """Make the IP (and UDP) length fields describe len(p)."""
    if lay.ver == 4:
        p[2:4] = struct.pack("!H", len(p) & 0xFFFF)
        fix_ipv4_csum(p)
    else:
        p[4:6] = struct.pack("!H", (len(p) - 40) & 0xFFFF)
    if lay.esp > lay.hl and len(p) >= lay.hl + 6:
        p[lay.hl + 4:lay.hl + 6] = struct.pack("!H", (len(p) - lay.hl) & 0xFFFF)
    return p


def ecn_expect(orig: bytes, outer_ecn: int):
    """RFC 6040 4.2 normal-mode decapsulation of `orig`; None = must drop."""
    v4 = orig[0] >> 4 == 4
    inner = orig[1] & 3 if v4 else (orig[1] >> 4) & 3
    new = inner
    if outer_ecn == 3:
        if inner == 0:
            return None
        new = 3
    elif outer_ecn == 1 and inner == 2:
        new = 1
    if new == inner:
        return orig
    p = bytearray(orig)
    if v4:
        p[1] = (p[1] & 0xFC) | new
        fix_ipv4_csum(p)
    else:
        p[1] = (p[1] & 0xCF) | (new << 4)
    return bytes(p)


def pass_expect(sp: Spec, orig: bytes, mut: bytes, lay: Layout):
    """The output if the engine accepts `mut` whose ESP part is intact; None = must drop."""
    if sp.tunnel:
        outer_ecn = mut[1] & 3 if lay.ver == 4 else (mut[1] >> 4) & 3
        return ecn_expect(orig, outer_ecn)
    # transport: the received outer header stays, with protocol and length rewritten
    orig_hl = (orig[0] & 0x0F) * 4 if lay.ver == 4 else 40
    out = bytearray(mut[:lay.hl]) + orig[orig_hl:]
    if lay.ver == 4:
        out[9] = orig[9]
        out[2:4] = struct.pack("!H", len(out))
        fix_ipv4_csum(out)
    else:
        out[lay.nh_off] = orig[6]
        out[4:6] = struct.pack("!H", len(out) - 40)
    return bytes(out)


SPI_HIT = {NO_SA, AUTH, MALFORMED, REPLAY}      # a flipped SPI may find another SA
REINTERPRET = {NO_SA, MALFORMED, AUTH, REPLAY}  # headers read at other offsets


def ah_field_oracle(lay: Layout, pos: int, bits: int):
    """field_oracle for AH: RFC 4302 3.3.3.1, only the mutable outer fields may change."""
    if pos < lay.hl:
        if lay.ver == 4:
            if pos in (1, 8) or (pos == 6 and not bits & 0x3F):
                return set(), True               # TOS, TTL, DF / reserved flag: mutable
            if pos in (4, 5, 12, 13, 14, 15):
                return {AUTH}, False             # ID, source: immutable
            if pos >= 20:                        # options: zeroed (mutable) or covered
                return {AUTH, MALFORMED}, True
            return None
        if pos in (1, 2, 3, 7) or (pos == 0 and not bits & 0xF0):
            return set(), True                   # traffic class, flow label, hop limit
        if 8 <= pos < 24:
            return {AUTH}, False
        return None
    rel = pos - lay.esp
    if rel == 1:
        return {MALFORMED, AUTH}, False          # payload length: ICV size / position
    if 4 <= rel < 8:
        return SPI_HIT, False
    if 8 <= rel < 12:
        return {AUTH, REPLAY}, False
    return {AUTH}, False                         # next header, reserved, ICV, payload


def field_oracle(sp: Spec, lay: Layout, pos: int, bits: int, csum_fixed: bool):
    """(allowed drops, harmless?) for changing `bits` of byte `pos` of a valid packet."""
    if pos >= lay.end:
        return set(), True                       # Ethernet trailer: the IP length decides
    if sp.ah:
        got = ah_field_oracle(lay, pos, bits)
        if got is not None:
            return got
    if pos < lay.hl:
        if lay.ver == 4:
            if pos == 0:
                return REINTERPRET, False        # version / IHL
            if pos in (2, 3):
                return {MALFORMED, AUTH, NO_SA}, False   # total length: longer or truncated
            if pos == 6:
                return ({MALFORMED}, False) if bits & 0x3F else (set(), True)   # DF, reserved
            if pos == 7:
                return {MALFORMED}, False        # fragment offset
            if pos == 9:
                return REINTERPRET, False
            if pos in (10, 11):
                return {MALFORMED}, False        # only reachable without csum fix
            if 12 <= pos < 16:
                return {POLICY}, True            # source: selector may reject (transport)
            if 16 <= pos < 20:
                return {NO_SA}, False
            return set(), True                   # TOS (ECN via pass_expect), ID, TTL, options
        if pos == 0:
            return (REINTERPRET, False) if bits & 0xF0 else (set(), True)
        if pos in (4, 5):
            return {MALFORMED, AUTH, NO_SA}, False   # payload length
        if pos == 6:
            return REINTERPRET, False
        if 8 <= pos < 24:
            return {POLICY}, True
        if 24 <= pos < 40:
            return {NO_SA}, False
        return set(), True                       # traffic class, flow label, hop limit
    if pos < lay.esp:                            # UDP (RFC 3948)
        u = pos - lay.hl
        if u in (2, 3):
            return {NO_SA}, False                # not the espinudp port any more
        if u in (4, 5):
            return {MALFORMED, AUTH}, True       # UDP length: may be ignored or enforced
        if u in (6, 7):
            return {MALFORMED}, True             # UDP checksum: may be ignored or enforced
        return set(), True                       # source port
    if pos < lay.esp + 4:
        return SPI_HIT, False
    if pos < lay.esp + 8:
        return {AUTH, REPLAY}, False             # sequence number
    return {AUTH}, False                         # IV, ciphertext, padding, ICV


def flip_case(sp: Spec, orig: bytes, ct: bytes, flips: list[tuple[int, int]],
              csum_fixed: bool, what: str) -> Case:
    lay = layout(sp, ct)
    m = bytearray(ct)
    for pos, bit in flips:
        m[pos] ^= 1 << bit
    if csum_fixed and lay.ver == 4:
        fix_ipv4_csum(m)
    allowed, harmless = set(), True
    hdr_changes = 0
    for pos in range(len(m)):
        x = m[pos] ^ ct[pos]
        if not x:
            continue
        if lay.ver == 4 and pos < lay.hl and csum_fixed and pos in (10, 11):
            continue                             # the recomputed checksum itself
        if lay.ver == 4 and pos < lay.hl and not csum_fixed:
            hdr_changes += 1
        a, h = field_oracle(sp, lay, pos, x, csum_fixed)
        allowed |= a
        harmless &= h
    if lay.ver == 4 and (m[0] ^ ct[0]) & 0xF0:
        allowed, harmless = REINTERPRET, False   # no IPv4 header any more (6: IPv6)
    elif hdr_changes:
        allowed.add(MALFORMED)       # the IPv4 header checksum no longer matches ...
        if hdr_changes == 1:
            harmless = False         # ... and one changed byte can never keep it valid
            allowed = {MALFORMED} | (allowed & {MALFORMED})
    expect = set()
    if harmless:
        e = pass_expect(sp, orig, bytes(m), lay)
        if e is None:
            allowed.add(MALFORMED)   # RFC 6040: CE outer over a Not-ECT inner
        else:
            expect.add(e)
    return Case(bytes(m), allowed, expect, what)


# ---------------------------------------------------------------------------------------
# Mutations (each draws its parameters and returns the cases built from one ciphertext)
# ---------------------------------------------------------------------------------------
def m_truncate_every(draw, sp, orig, ct):
    """Every shorter capture; lengths fixed up or not."""
    lay = layout(sp, ct)
    if draw(st.booleans()):
        return [Case(ct[:k], {MALFORMED}, what=f"cut {k} (length fields say more)")
                for k in range(len(ct))]
    cases = []
    for k in range(lay.hl, len(ct)):
        allowed = {MALFORMED, AUTH} | ({NO_SA} if k < lay.esp else set())
        cases.append(Case(bytes(set_lengths(bytearray(ct[:k]), lay)), allowed,
                          what=f"cut {k}, lengths fixed"))
    return cases


def m_truncate_random(draw, sp, orig, ct):
    lay = layout(sp, ct)
    k = draw(st.integers(0, len(ct) - 1))
    if k >= lay.hl and draw(st.booleans()):
        allowed = {MALFORMED, AUTH} | ({NO_SA} if k < lay.esp else set())
        return [Case(bytes(set_lengths(bytearray(ct[:k]), lay)), allowed, what="cut, fixed")]
    return [Case(ct[:k], {MALFORMED}, what=f"cut {k}")]


def m_flip_anywhere(draw, sp, orig, ct):
    flips = draw(st.lists(st.tuples(st.integers(0, len(ct) - 1), st.integers(0, 7)),
                          min_size=1, max_size=4))
    return [flip_case(sp, orig, ct, flips, draw(st.booleans()), f"flip {flips}")]


def m_flip_region(draw, sp, orig, ct):
    """One bit in a chosen region, so every region is hit often."""
    lay = layout(sp, ct)
    if sp.ah:
        ah_end = lay.esp + (ct[lay.esp + 1] + 2) * 4
        regions = {"ip": (0, lay.hl), "ah-hdr": (lay.esp, lay.esp + 12),
                   "icv": (lay.esp + 12, ah_end), "body": (ah_end, len(ct))}
    else:
        regions = {"ip": (0, lay.hl), "esp-hdr": (lay.esp, lay.esp + 8),
                   "iv": (lay.esp + 8, lay.esp + 8 + sp.iv),
                   "body": (lay.esp + 8 + sp.iv, len(ct) - sp.icv),
                   "icv": (len(ct) - sp.icv, len(ct))}
    if sp.encap:
        regions["udp"] = (lay.hl, lay.esp)
    name = draw(st.sampled_from(sorted(k for k, (a, b) in regions.items() if b > a)))
    a, b = regions[name]
    pos, bit = draw(st.integers(a, b - 1)), draw(st.integers(0, 7))
    fixed = name == "ip" and draw(st.booleans())
    return [flip_case(sp, orig, ct, [(pos, bit)], fixed, f"flip {name} {pos}.{bit}")]


def m_trailer(draw, sp, orig, ct):
    """Bytes captured beyond the IP total length: ignored, unless the lengths claim them."""
    lay = layout(sp, ct)
    extra = draw(st.binary(min_size=1, max_size=64))
    if draw(st.booleans()):
        m = bytearray(ct + extra)
        for pos, bit in draw(st.lists(st.tuples(st.integers(len(ct), len(m) - 1),
                                                st.integers(0, 7)), max_size=3)):
            m[pos] ^= 1 << bit
        return [Case(bytes(m), set(), {pass_expect(sp, orig, ct, lay)}, "trailer")]
    return [Case(bytes(set_lengths(bytearray(ct + extra), lay)), {AUTH, MALFORMED},
                 what="garbage inside the IP length")]


def m_bad_ip_fields(draw, sp, orig, ct):
    lay = layout(sp, ct)
    m = bytearray(ct)
    if lay.ver == 4:
        kind = draw(st.sampled_from(["ihl", "tot", "csum", "ttl", "frag"]))
        if kind == "ihl":
            ihl = draw(st.integers(0, 15).filter(lambda v: v != lay.hl // 4))
            m[0] = 0x40 | ihl
            if draw(st.booleans()):
                fix_ipv4_csum(m)
            return [Case(bytes(m), REINTERPRET, what=f"ihl {ihl}")]
        if kind == "tot":
            tot = draw(st.integers(0, 65535).filter(lambda v: v != len(ct)))
            m[2:4] = struct.pack("!H", tot)
            fix_ipv4_csum(m)
            return [Case(bytes(m), {MALFORMED, AUTH, NO_SA}, what=f"total length {tot}")]
        if kind == "csum":
            good = m[10:12]
            m[10:12] = struct.pack("!H", draw(st.integers(0, 65535)))
            if m[10:12] == good:
                return [Case(bytes(m), set(), {pass_expect(sp, orig, ct, lay)}, "same csum")]
            return [Case(bytes(m), {MALFORMED}, what="bad checksum")]
        if kind == "ttl":         # harmless with the checksum fixed (transport keeps it)
            m[8] = draw(st.integers(0, 255))
            fix_ipv4_csum(m)
            return [Case(bytes(m), set(), {pass_expect(sp, orig, bytes(m), lay)}, "ttl")]
        m[6:8] = struct.pack("!H", draw(st.integers(1, 0x3FFF)))     # MF and/or offset
        fix_ipv4_csum(m)
        return [Case(bytes(m), {MALFORMED}, what="outer fragment")]
    kind = draw(st.sampled_from(["plen", "hlim"]))
    if kind == "plen":
        plen = draw(st.integers(0, 65535).filter(lambda v: v != len(ct) - 40))
        m[4:6] = struct.pack("!H", plen)
        return [Case(bytes(m), {MALFORMED, AUTH, NO_SA}, what=f"payload length {plen}")]
    m[7] = draw(st.integers(0, 255))
    return [Case(bytes(m), set(), {pass_expect(sp, orig, bytes(m), lay)}, "hop limit")]


def m_ext_headers(draw, sp, orig, ct):
    """IPv6 extension headers between the outer header and ESP/UDP (RFC 8200 4)."""
    lay = layout(sp, ct)
    if lay.ver != 6:
        return m_bad_ip_fields(draw, sp, orig, ct)
    first_nh = ct[6]
    kind = draw(st.sampled_from(["valid", "loop", "huge", "fragment", "dead-end", "unfixed"]))
    if kind == "loop":
        count = draw(st.integers(9, 40))
        types = [HOPOPT] * count
    else:
        types = draw(st.lists(st.sampled_from([HOPOPT, DSTOPTS, ROUTING]), min_size=1,
                              max_size=8))
    if kind == "fragment":
        types.insert(draw(st.integers(0, len(types))), FRAGMENT)
    chain = bytearray()
    lens = [0 if t == FRAGMENT else draw(st.integers(0, 3)) for t in types]
    if kind == "huge":
        lens[draw(st.integers(0, len(lens) - 1))] = 255
    for k, t in enumerate(types):
        if k + 1 < len(types):
            nh = types[k + 1]
        elif kind == "loop" and draw(st.booleans()):
            nh = HOPOPT                          # ... and the last one points into ESP
        else:
            nh = NONXT if kind == "dead-end" else first_nh
        body = bytes([nh, lens[k]]) + bytes(6 + 8 * lens[k])
        if kind == "huge" and lens[k] == 255:
            body = body[:8]                      # claims 2048 bytes, has 8
        chain += body
    m = bytearray(ct[:40]) + chain + ct[40:]
    m[6] = types[0]
    if kind != "unfixed":
        m[4:6] = struct.pack("!H", len(m) - 40)
    what = f"ext {kind} {types}"
    if kind == "valid" and sp.ah:
        # The ICV covers extension headers; chains over kernels_ah.AH_SAVE: MALFORMED
        return [Case(bytes(m), {AUTH, MALFORMED}, what=what)]
    if kind == "valid":
        ext = Layout(6, 40 + len(chain), 40 + len(chain) + (lay.esp - lay.hl), len(m),
                     40 + len(chain) - 8 * (lens[-1] + 1))
        return [Case(bytes(m), set(), {pass_expect(sp, orig, bytes(m), ext)}, what)]
    if kind == "unfixed":                        # payload length now cuts ESP short
        return [Case(bytes(m), {MALFORMED, AUTH, NO_SA}, what=what)]
    if kind == "dead-end":
        return [Case(bytes(m), {NO_SA}, what=what)]
    return [Case(bytes(m), {MALFORMED, NO_SA}, what=what)]


def m_short_udp(draw, sp, orig, ct):
    lay = layout(sp, ct)
    if not sp.encap:
        return m_truncate_random(draw, sp, orig, ct)
    k = draw(st.integers(lay.hl, lay.esp - 1))
    return [Case(bytes(set_lengths(bytearray(ct[:k]), lay)), {NO_SA, MALFORMED},
                 what=f"UDP header cut to {k - lay.hl}")]


MUTATIONS = [m_truncate_every, m_truncate_random, m_flip_anywhere, m_flip_region,
             m_flip_region, m_trailer, m_bad_ip_fields, m_ext_headers, m_short_udp]


def garbage_cases(draw) -> list[Case]:
    """Packets not derived from a valid one: random bytes and IP headers over random ESP."""
    kind = draw(st.sampled_from(["random", "esp", "keepalive", "ike"]))
    if kind == "random":
        return [Case(draw(st.binary(max_size=120)), {MALFORMED, NO_SA, AUTH, REPLAY, KEEPALIVE},
                     what="random bytes")]
    sp = draw(st.sampled_from(SPECS))
    body = draw(st.binary(max_size=100))
    udp = kind != "esp" or (sp.encap and draw(st.booleans()))
    if kind == "keepalive":
        body, allowed = b"\xff", {KEEPALIVE}
    elif kind == "ike":
        body, allowed = b"\0\0\0\0" + body, {NO_SA}
    else:
        if draw(st.booleans()):
            body = struct.pack("!I", sp.cfg.spi) + body
        allowed = {MALFORMED, NO_SA, AUTH, REPLAY, KEEPALIVE}
    if udp:
        payload, proto = struct.pack("!HHHH", ENCAP_PORT, ENCAP_PORT, 8 + len(body), 0) + body, \
            P_UDP
    else:
        payload, proto = body, P_ESP
    if sp.cfg.dst.version == 4:
        pkt = ipv4(sp.cfg.src, sp.cfg.dst, proto, payload)
    else:
        pkt = ipv6(sp.cfg.src, sp.cfg.dst, proto, payload)
    return [Case(pkt, allowed, what=f"crafted {kind}")]


# ---------------------------------------------------------------------------------------
# decrypt
# ---------------------------------------------------------------------------------------
def run_decrypt(inb: Engine, cases: list[Case], seed: int, guard_at: set[int]):
    """Decrypt `cases` in one batch with guard packets at the given case positions."""
    pkts, pre, which = [], [], []
    for k, c in enumerate(cases):
        if k in guard_at:
            pkts.append(bytes(((k * 37 + j) & 0xFF for j in range(k % 90))))
            pre.append(int(list(Drop)[1 + k % (len(Drop) - 1)]))
            which.append(None)
        pkts.append(c.pkt)
        pre.append(0)
        which.append(c)
    bt = build(pkts, pre, seed)
    inb.decrypt(bt.batch)
    check_slots(bt)
    b = bt.batch
    for i, c in enumerate(which):
        if c is None:
            continue
        d = Drop(int(b.drop[i]))
        if d is Drop.NONE:
            assert b.packet(i) in c.expect, \
                f"{c.what}: passed with unexpected output (expect {len(c.expect)} options)"
        else:
            assert d in c.allowed, f"{c.what}: dropped as {d.name}, allowed {c.allowed}"
    check_counters(inb, [(b, bt.guards)])
    return b


def mutation_round(data, mutations, specs, backend) -> None:
    """Encrypt a few packets on random SAs (all installed), mutate some, decrypt them all
    in one batch with the untouched ones and guard packets interleaved."""
    out, inb, handles = engines(backend=backend,
                                out_backend=data.draw(st.sampled_from(BACKENDS), label="out"))
    n = data.draw(st.integers(3, 12), label="packets")
    idx = [data.draw(st.sampled_from(specs), label="sa") for _ in range(n)]
    pts = [data.draw(plaintexts(SPECS[k]), label="plaintext") for k in idx]
    cts = encrypt_all(out, pts, [handles[k][0] for k in idx])
    mutated = [0 < k < n - 1 and data.draw(st.integers(0, 2), label="mutate") > 0
               for k in range(n)]
    if not any(mutated):
        mutated[n // 2] = True
    cases = []
    for k in range(n):     # batch order = sequence number order: valid ones never replay
        sp, pt, ct = SPECS[idx[k]], pts[k], cts[k]
        if mutated[k]:
            mutate = data.draw(st.sampled_from(mutations), label="mutation")
            for c in mutate(data.draw, sp, pt, ct):
                c.what = f"{sp.name}: {c.what}"
                cases.append(c)
            if data.draw(st.integers(0, 3), label="garbage") == 0:
                cases += garbage_cases(data.draw)
        else:
            cases.append(Case(ct, set(), {pt}, "valid"))
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    guards = set(np.flatnonzero(np.random.default_rng(seed).integers(0, 4, len(cases)) == 0))
    run_decrypt(inb, cases, seed, guards)


ALL_SPECS = list(range(len(SPECS)))
V6_SPECS = [k for k, sp in enumerate(SPECS) if sp.cfg.dst.version == 6]
ENCAP_SPECS = [k for k, sp in enumerate(SPECS) if sp.encap]


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
@settings(HYPO, max_examples=150)
def test_decrypt_mutations_mixed_with_valid(backend, data):
    mutation_round(data, MUTATIONS, ALL_SPECS, backend)


@pytest.mark.parametrize("mutation, specs", [
    (m_truncate_random, ALL_SPECS), (m_flip_anywhere, ALL_SPECS),
    (m_flip_region, ALL_SPECS), (m_trailer, ALL_SPECS), (m_bad_ip_fields, ALL_SPECS),
    (m_ext_headers, V6_SPECS), (m_short_udp, ENCAP_SPECS)],
    ids=lambda v: v.__name__ if callable(v) else None)
@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
@settings(HYPO, max_examples=40)
def test_decrypt_one_mutation(mutation, specs, backend, data):
    mutation_round(data, [mutation], specs, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
@settings(HYPO, max_examples=40)
def test_decrypt_garbage_only_and_valid(backend, data):
    """Batches of random/crafted packets around one valid packet per SA kind."""
    out, inb, handles = engines(backend=backend)
    k = data.draw(st.integers(0, len(SPECS) - 1))
    pt = data.draw(plaintexts(SPECS[k]))
    ct = encrypt_all(out, [pt], [handles[k][0]])[0]
    cases = []
    for _ in range(data.draw(st.integers(1, 12))):
        cases += garbage_cases(data.draw)
    cases.insert(data.draw(st.integers(0, len(cases))), Case(ct, set(), {pt}, "valid"))
    run_decrypt(inb, cases, data.draw(st.integers(0, 2**32 - 1)), {0})


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_truncation_every_sa(backend):
    """Each SA: every truncation (raw and with fixed lengths) of one packet, valid ones around."""
    out, inb, handles = engines(backend=backend)
    cases = []
    for k, sp in enumerate(SPECS):
        ver = sp.inner[0] if sp.tunnel else sp.cfg.dst.version
        proto = sp.proto or P_UDP
        if sp.tunnel:
            a, b = ("10.1.0.1", "10.2.0.1") if ver == 4 else ("2001:db8:1::1", "2001:db8:2::1")
            src, dst = ip(a), ip(b)
        else:
            src, dst = sp.cfg.src, sp.cfg.dst
        mk = ipv4 if ver == 4 else ipv6
        pts = [mk(src, dst, proto, l4(proto, bytes(range(j * 13 % 50)), 1000 + j, 53))
               for j in range(3)]
        cts = encrypt_all(out, pts, [handles[k][0]] * 3)
        lay = layout(sp, cts[1])
        cases.append(Case(cts[0], set(), {pts[0]}, "valid"))
        cases += [Case(cts[1][:j], {MALFORMED}, what=f"{sp.name} cut {j}")
                  for j in range(len(cts[1]))]
        cases += [Case(bytes(set_lengths(bytearray(cts[1][:j]), lay)),
                       {MALFORMED, AUTH} | ({NO_SA} if j < lay.esp else set()),
                       what=f"{sp.name} cut {j} fixed") for j in range(lay.hl, len(cts[1]))]
        cases.append(Case(cts[2], set(), {pts[2]}, "valid"))
    b = run_decrypt(inb, cases, 7, set(range(0, len(cases), 5)))
    assert b.count > 1000


def test_ipv6_extension_header_loops_never_hang():
    """64000 bytes of hop-by-hop headers, each naming the next: refused after a bounded walk."""
    out, inb, _ = engines()
    sp = SPECS[1]
    chain = bytes([HOPOPT, 0] + [1, 4, 0, 0, 0, 0]) * 8000      # 64000 bytes of HBH
    pkt = ipv6(sp.cfg.src, sp.cfg.dst, HOPOPT, chain)
    cut = ipv6(sp.cfg.src, sp.cfg.dst, HOPOPT, chain[:8 * 7] + bytes([P_ESP, 255]))
    run_decrypt(inb, [Case(pkt, {MALFORMED}, what="HBH x8000"),
                      Case(cut, {MALFORMED}, what="huge HBH")], 1, {1})


# ---------------------------------------------------------------------------------------
# pre-set drops
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_preset_drops_left_alone_and_counted_once(direction, backend):
    out, inb, handles = engines(backend=backend)
    sp = SPECS[0]
    pts = [ipv4(ip("10.1.0.1"), ip("10.2.0.1"), P_UDP, l4(P_UDP, bytes(j), 1, 2))
           for j in range(12)]
    cts = encrypt_all(out, pts, [handles[0][0]] * 12)
    src = pts if direction == "encrypt" else cts
    reasons = [d for d in Drop if d is not Drop.NONE]
    pre = [0 if j % 3 == 0 else int(reasons[j % len(reasons)]) for j in range(12)]
    eng = Engine(backend=backend)
    h = eng.install(sp.cfg, "out" if direction == "encrypt" else "in")
    bt = build(src, pre, 3)
    getattr(eng, direction)(bt.batch)
    check_slots(bt)
    b = bt.batch
    for j in range(12):
        if pre[j]:
            assert b.drop[j] == pre[j] and b.packet(j) == src[j]
        else:
            assert b.drop[j] == 0
            if direction == "decrypt":
                assert b.packet(j) == pts[j]
    check_counters(eng, [(b, bt.guards)])
    counts = eng.stats()["dropped"]
    for d in reasons:
        assert counts[d.name.lower()] == pre.count(int(d))
    assert eng.sa_stats(h)["packets"] == 4
    if direction == "encrypt":      # and the encrypted ones still decrypt
        d2 = Engine(backend=backend)
        d2.install(sp.cfg, "in")
        b2 = PacketBatch.from_packets(b.passed())
        d2.decrypt(b2)
        assert b2.packets() == [pts[j] for j in range(12) if not pre[j]]


@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_preset_drop_outside_the_enum_is_refused(direction):
    """A pre-set reason indexes the counter arrays: one that is not a Drop must not reach
    the kernels (it would be a write past the end of the counters)."""
    out, inb, _ = engines()
    eng = out if direction == "encrypt" else inb
    bt = build([b"\x45" * 20, b""], [0, 200], 9)
    with pytest.raises(ValueError):
        getattr(eng, direction)(bt.batch)
    check_slots(bt)
    assert eng.stats()["packets_in"] == 0 and not any(eng.stats()["dropped"].values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_all_dropped_batches(backend):
    out, inb, _ = engines(backend=backend)
    for eng, fn in ((out, Engine.encrypt), (inb, Engine.decrypt)):
        fn(eng, PacketBatch(4))
        bt = build([b"\x45", b""], [int(Drop.MALFORMED), int(Drop.NO_SA)], 5)
        fn(eng, bt.batch)
        check_slots(bt)
        check_counters(eng, [(bt.batch, bt.guards)])


# ---------------------------------------------------------------------------------------
# encrypt
# ---------------------------------------------------------------------------------------
@st.composite
def bad_plaintexts(draw, sp: Spec):
    """(packet, allowed drops, may pass?) for garbage plaintexts."""
    kind = draw(st.sampled_from(["random", "non-ip", "short-header", "declared-longer",
                                 "ihl", "ext", "fragment", "trailer", "empty"]))
    good = draw(plaintexts(sp))
    if kind == "random":
        return draw(st.binary(max_size=200)), {MALFORMED, NO_POLICY}, True
    if kind == "non-ip":
        v = draw(st.sampled_from([0, 1, 2, 3, 5, 7, 8, 15]))
        return bytes([v << 4 | (good[0] & 15)]) + good[1:], {MALFORMED}, False
    if kind == "empty":
        return b"", {MALFORMED}, False
    hl = (good[0] & 15) * 4 if good[0] >> 4 == 4 else 40
    if kind == "short-header":
        return good[:draw(st.integers(1, hl - 1))], {MALFORMED}, False
    if kind == "declared-longer":
        return good[:draw(st.integers(hl, len(good) - 1))] if len(good) > hl else \
            good[:hl - 1], {MALFORMED}, False
    if kind == "trailer":
        return good + draw(st.binary(min_size=1, max_size=40)), set(), True
    if kind == "fragment":
        # The engine does not fragment or reassemble; an IPv4 fragment may be refused as
        # malformed or protected as is (it is still an IP packet).
        if good[0] >> 4 == 6:
            frag = struct.pack("!BBHI", good[6], 0, draw(st.integers(0, 0xFFFF)), 1)
            m = bytearray(good[:40] + frag + good[40:])
            m[6] = FRAGMENT
            m[4:6] = struct.pack("!H", len(m) - 40)
            return bytes(m), {MALFORMED}, True
        m = bytearray(good)
        m[6:8] = struct.pack("!H", draw(st.integers(1, 0x3FFF)))
        fix_ipv4_csum(m)
        return bytes(m), {MALFORMED}, True
    if kind == "ihl":
        if good[0] >> 4 == 6:
            m = bytearray(good)
            m[4:6] = struct.pack("!H", draw(st.integers(len(good) - 39, 65535)))
            return bytes(m), {MALFORMED}, False
        m = bytearray(good)
        m[0] = 0x40 | draw(st.integers(0, 15))
        return bytes(m), {MALFORMED, NO_POLICY}, True
    # broken IPv6 extension headers (or IPv4 with a total length below its header)
    if good[0] >> 4 == 4:
        m = bytearray(good)
        m[2:4] = struct.pack("!H", draw(st.integers(0, hl - 1)))
        return bytes(m), {MALFORMED}, False
    n = draw(st.integers(9, 30))
    chain = bytes([HOPOPT, 0, 1, 4, 0, 0, 0, 0]) * (n - 1) + bytes([good[6], 0]) + bytes(6)
    if draw(st.booleans()):
        chain = bytes([DSTOPTS, 255]) + bytes(6)            # claims 2048 bytes
    m = bytearray(good[:40] + chain + good[40:])
    m[6] = HOPOPT
    m[4:6] = struct.pack("!H", len(m) - 40)
    return bytes(m), {MALFORMED}, False


def ip_total(p: bytes) -> int:
    return struct.unpack("!H", p[2:4])[0] if p[0] >> 4 == 4 else 40 + struct.unpack("!H", p[4:6])[0]


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
@settings(HYPO, max_examples=50)
def test_encrypt_garbage_plaintexts(backend, data):
    k = data.draw(st.integers(0, len(SPECS) - 1), label="sa")
    sp = SPECS[k]
    if data.draw(st.booleans(), label="no selector"):
        sp = replace(sp, cfg=replace(sp.cfg, sel=None))   # every IP packet matches
    out, inb = Engine(backend=backend), Engine(backend=data.draw(st.sampled_from(BACKENDS)))
    h = out.install(sp.cfg, "out")
    inb.install(replace(sp.cfg, sel=None), "in")
    items = [(data.draw(plaintexts(sp)), set(), True, True)]
    for _ in range(data.draw(st.integers(1, 12))):
        pkt, allowed, may_pass = data.draw(bad_plaintexts(sp))
        items.append((pkt, allowed, may_pass, False))
    items.append((data.draw(plaintexts(sp)), set(), True, True))
    pre = [int(Drop.MALFORMED) if data.draw(st.integers(0, 5)) == 0 else 0 for _ in items]
    pre[0] = pre[-1] = 0
    bt = build([p for p, *_ in items], pre, data.draw(st.integers(0, 2**32 - 1)))
    out.encrypt(bt.batch)
    check_slots(bt)
    b = bt.batch
    passed = []
    for i, (pkt, allowed, may_pass, valid) in enumerate(items):
        d = Drop(int(b.drop[i]))
        if pre[i]:
            continue
        if valid:
            assert d is Drop.NONE
        if d is Drop.NONE:
            assert may_pass, f"garbage {pkt[:48].hex()} was encrypted"
            c = b.packet(i)
            assert ip_total(c) == len(c) and b.sa[i] == h
            passed.append((pkt[:ip_total(pkt)], c))
        else:
            assert d in allowed, (d, allowed, pkt[:48].hex())
    check_counters(out, [(b, bt.guards)])
    # what was encrypted decrypts to what was sent (up to the IP length)
    if sp.tunnel:
        want = [p for p, _ in passed]
    else:   # transport: only packets to the SA's address come back; the checksum is redone
        fam = sp.cfg.dst.packed
        passed = [(p, c) for p, c in passed
                  if (p[16:20] if p[0] >> 4 == 4 else p[24:40]) == fam]
        want = []
        for p, _ in passed:
            p = bytearray(p)
            if p[0] >> 4 == 4:
                fix_ipv4_csum(p)
            want.append(bytes(p))
    b2 = PacketBatch.from_packets([c for _, c in passed])
    inb.decrypt(b2)
    assert b2.packets() == want, [Drop(x).name for x in b2.drop[:b2.count]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", range(len(SPECS)))
def test_huge_packets(k, backend):
    """9000-byte and near-64 KiB packets round-trip; those whose output cannot fit the 16-bit
    IP length (no fragmentation, no jumbograms) are dropped, never sent with a wrapped length."""
    sp = SPECS[k]
    out, inb, handles = engines([sp], backend=backend)
    ver = sp.inner[-1] if sp.tunnel else sp.cfg.dst.version
    if sp.tunnel:
        src, dst = (ip("10.1.0.1"), ip("10.2.0.1")) if ver == 4 else \
            (ip("2001:db8:1::1"), ip("2001:db8:2::1"))
    else:
        src, dst = sp.cfg.src, sp.cfg.dst
    sizes = [9000, 60000, 65535 - 140] + list(range(65535 - 128, 65536, 9)) + [65535]
    pts = []
    for size in sizes:
        hdr = 20 if ver == 4 else 40
        body = (np.arange(size - hdr - 8) % 251).astype(np.uint8).tobytes()
        pts.append((ipv4 if ver == 4 else ipv6)(src, dst, P_UDP, l4(P_UDP, body, 7, 9)))
    bt = build(pts, [0] * len(pts), 11, sa=[handles[0][0]] * len(pts))
    out.encrypt(bt.batch)
    check_slots(bt)
    b = bt.batch
    out_ver = sp.cfg.dst.version
    ok = []
    for i, size in enumerate(sizes):
        if b.drop[i]:
            assert b.drop[i] == MALFORMED and size > 65535 - 140, (size, Drop(int(b.drop[i])))
            continue
        c = b.packet(i)
        assert ip_total(c) == len(c)
        assert (len(c) if out_ver == 4 else len(c) - 40) <= 0xFFFF
        ok.append(i)
    if out_ver == 4:
        assert b.drop[len(sizes) - 1] == MALFORMED      # 65535 + ESP never fits IPv4
    check_counters(out, [(b, bt.guards)])
    bt2 = build([b.packet(i) for i in ok], [0] * len(ok), 12)
    inb.decrypt(bt2.batch)
    check_slots(bt2)
    assert bt2.batch.packets() == [pts[i] for i in ok]
    assert not bt2.batch.drop[:len(ok)].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_batches_and_no_room(backend):
    """Batches filled to their byte budget; packets whose slot has no head/tailroom (a batch
    built by hand) are dropped without a byte written outside their bytes."""
    out, inb, handles = engines(SPECS[:2], backend=backend)
    pts = [ipv4(ip("10.1.0.1"), ip("10.2.0.1"), P_UDP, l4(P_UDP, bytes(300 + j), 1, 2))
           for j in range(20)]
    b = PacketBatch(16, data_bytes=sum(map(len, pts[:16])))
    added = b.add_many(np.frombuffer(b"".join(pts), np.uint8),
                       np.cumsum([0] + [len(p) for p in pts[:-1]]), np.array(list(map(len, pts))))
    assert added == 16
    with pytest.raises(OverflowError):
        b.add(pts[16])
    b.sa[:16] = handles[0][0]
    # packets 3 and 9: slots shrunk to the packet bytes, nothing around them to use
    region = {i: (int(b.slot_start[i]), int(b.slot_end[i])) for i in (3, 9)}
    for i in (3, 9):
        b.slot_start[i], b.slot_end[i] = b.off[i], b.off[i] + b.length[i]
    before = b.buf.copy()
    out.encrypt(b)
    assert np.array_equal(b.buf[b.used:], before[b.used:])
    for i, (s, e) in region.items():
        assert b.drop[i] == MALFORMED
        assert np.array_equal(b.buf[s:e], before[s:e])     # the old head/tailroom untouched
        assert b.packet(i) == pts[i]
    assert [i for i in range(16) if b.drop[i]] == [3, 9]
    check_counters(out, [(b, np.zeros(16, bool))])
    cts = b.passed()
    b2 = PacketBatch(len(cts), data_bytes=sum(map(len, cts)))
    for c in cts:
        b2.add(c)
    assert not b2.has_room(1)
    inb.decrypt(b2)
    assert b2.packets() == [pts[i] for i in range(16) if i not in (3, 9)]
